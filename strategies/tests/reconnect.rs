//! A pooled connection the server closed while it sat idle (a restart, a killed session)
//! looks alive until it is used: an op through `Locked` or `pg-xact` that finds it broken
//! at `BEGIN`, before the op ran, gets a fresh connection instead of an error. Against the
//! real servers (`TURNSTILE_POSTGRES_URL`, `TURNSTILE_MYSQL_URL`); the tests fail, not
//! skip, when a server is absent.
#![cfg(all(feature = "postgres", feature = "mysql", feature = "mutex"))]

use std::fmt::Debug;

use mysql::prelude::Queryable;
use turnstile::lock::{MutexLock, PgXactLocked};
use turnstile::resource::{MySql, Postgres};
use turnstile::{Key, Locked, Serializer};

#[path = "support/server_urls.rs"]
mod server_urls;

/// Asks `strategy` for the server's id of the connection its op runs on (`who`), kills
/// that connection on the server (`kill`), and asks again at once (within the pool's
/// second without a liveness check): the op must run, on another connection.
fn a_killed_connection_is_replaced<S: Serializer, I: PartialEq + Debug>(
    strategy: &S,
    who: impl Fn(&S) -> I,
    kill: impl FnOnce(&I),
) {
    let first = who(strategy);
    kill(&first);
    let second = who(strategy);
    assert_ne!(first, second, "the killed connection was used again");
}

fn postgres_pid<S: Serializer<Resource = postgres::Client>>(strategy: &S) -> i32 {
    strategy
        .run(&Key::new("reconnect").unwrap(), |db| {
            db.query_one("SELECT pg_backend_pid()", &[])
                .map(|row| row.get::<_, i32>(0))
        })
        .unwrap()
}

fn terminate_backend(pid: &i32) {
    let killed: bool = server_urls::postgres_admin()
        .query_one("SELECT pg_terminate_backend($1)", &[pid])
        .unwrap()
        .get(0);
    assert!(killed);
}

#[test]
fn a_postgres_session_killed_while_idle_in_the_pool_is_replaced() {
    let db = Postgres::new(&server_urls::postgres_url()).unwrap();
    a_killed_connection_is_replaced(
        &Locked::new(MutexLock::new(), db),
        postgres_pid,
        terminate_backend,
    );
}

#[test]
fn a_pg_xact_session_killed_while_idle_in_the_pool_is_replaced() {
    let db = Postgres::new(&server_urls::postgres_url()).unwrap();
    a_killed_connection_is_replaced(&PgXactLocked::new(db), postgres_pid, terminate_backend);
}

#[test]
fn a_mysql_connection_killed_while_idle_in_the_pool_is_replaced() {
    let db = MySql::new(&server_urls::mysql_url()).unwrap();
    a_killed_connection_is_replaced(
        &Locked::new(MutexLock::new(), db),
        |strategy| {
            strategy
                .run(&Key::whole(), |db| {
                    db.query_first::<u64, _>("SELECT CONNECTION_ID()")
                        .map(Option::unwrap_or_default)
                })
                .unwrap()
        },
        // A number the server gave, not input; KILL takes no placeholder.
        |id| {
            server_urls::mysql_admin()
                .query_drop(format!("KILL {id}"))
                .unwrap()
        },
    );
}
