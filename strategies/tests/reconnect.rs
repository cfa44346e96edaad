//! A pooled connection the server closed while it sat idle (a restart, a killed session)
//! looks alive until it is used: an op through `Locked` that finds it broken at `BEGIN`,
//! before the op ran, gets a fresh connection instead of an error. Against the real
//! servers (`TURNSTILE_POSTGRES_URL`, `TURNSTILE_MYSQL_URL`); the tests fail, not skip,
//! when a server is absent.
#![cfg(all(feature = "postgres", feature = "mysql", feature = "mutex"))]

use mysql::prelude::Queryable;
use turnstile::lock::MutexLock;
use turnstile::resource::{MySql, Postgres};
use turnstile::{Key, Locked, Serializer};

#[path = "support/server_urls.rs"]
mod server_urls;

#[test]
fn a_postgres_session_killed_while_idle_in_the_pool_is_replaced() {
    let strategy = Locked::new(
        MutexLock::new(),
        Postgres::new(&server_urls::postgres_url()).unwrap(),
    );
    let key = Key::whole();
    let pid = |strategy: &Locked<MutexLock, Postgres>| {
        strategy
            .run(&key, |db| {
                db.query_one("SELECT pg_backend_pid()", &[])
                    .map(|row| row.get::<_, i32>(0))
            })
            .unwrap()
    };
    let first = pid(&strategy);
    let mut admin = server_urls::postgres_admin();
    let killed: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&first])
        .unwrap()
        .get(0);
    assert!(killed);
    // At once: within the pool's second without a liveness check.
    let second = pid(&strategy);
    assert_ne!(first, second, "the killed session was used again");
}

#[test]
fn a_mysql_connection_killed_while_idle_in_the_pool_is_replaced() {
    let strategy = Locked::new(
        MutexLock::new(),
        MySql::new(&server_urls::mysql_url()).unwrap(),
    );
    let key = Key::whole();
    let id = |strategy: &Locked<MutexLock, MySql>| {
        strategy
            .run(&key, |db| {
                db.query_first::<u64, _>("SELECT CONNECTION_ID()")
                    .map(Option::unwrap_or_default)
            })
            .unwrap()
    };
    let first = id(&strategy);
    let mut admin = server_urls::mysql_admin();
    // A number the server gave, not input; KILL takes no placeholder.
    admin.query_drop(format!("KILL {first}")).unwrap();
    let second = id(&strategy);
    assert_ne!(first, second, "the killed connection was used again");
}

#[test]
fn a_pg_xact_session_killed_while_idle_in_the_pool_is_replaced() {
    let strategy =
        turnstile::lock::PgXactLocked::new(Postgres::new(&server_urls::postgres_url()).unwrap());
    let key = Key::new("reconnect").unwrap();
    let pid = |strategy: &turnstile::lock::PgXactLocked| {
        strategy
            .run(&key, |db| {
                db.query_one("SELECT pg_backend_pid()", &[])
                    .map(|row| row.get::<_, i32>(0))
            })
            .unwrap()
    };
    let first = pid(&strategy);
    let killed: bool = server_urls::postgres_admin()
        .query_one("SELECT pg_terminate_backend($1)", &[&first])
        .unwrap()
        .get(0);
    assert!(killed);
    let second = pid(&strategy);
    assert_ne!(first, second, "the killed session was used again");
}
