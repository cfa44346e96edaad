//! Connections of `Locked` and `pg-xact` to a database server: a pooled one the server
//! closed while it sat idle (a restart, a killed session) looks alive until it is used,
//! and an op that finds it broken at `BEGIN`, before the op ran, gets a fresh connection
//! instead of an error; a new one is opened within the caller's timeout (`retry`'s and `optimistic`'s too). Against the
//! real servers (`TURNSTILE_POSTGRES_URL`, `TURNSTILE_MYSQL_URL`); the tests fail, not
//! skip, when a server is absent.
#![cfg(all(
    feature = "postgres",
    feature = "mysql",
    feature = "mutex",
    feature = "retry"
))]

use std::fmt::Debug;

use mysql::prelude::Queryable;
use turnstile::lock::{MutexLock, PgXactLocked};
use turnstile::optimistic::Optimistic;
use turnstile::resource::{MySql, Postgres};
use turnstile::retry::Retry;
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

/// A caller's timeout bounds opening a new connection too: against a server that accepts
/// and never answers the login, an op with a 500 ms timeout ends as `Error::Timeout` in
/// about that, not after the 10 s connect timeout (with the lock held meanwhile).
#[test]
fn a_login_that_never_answers_is_bounded_by_the_callers_timeout() {
    use std::time::{Duration, Instant};
    use turnstile::{Error, Wait};
    fn bounded<S: Serializer>(what: &str, strategy: &S) {
        let started = Instant::now();
        let result = strategy.run_with(
            &[Key::whole()],
            Wait::Timeout(Duration::from_millis(500)),
            |_| Ok::<_, std::io::Error>(()),
        );
        let took = started.elapsed();
        assert!(
            matches!(result, Err(Error::Timeout { .. })),
            "{what}: {result:?}"
        );
        assert!(took < Duration::from_secs(5), "{what}: took {took:?}");
    }
    let pg = Postgres::new(&format!(
        "postgres://postgres@{}/test",
        server_urls::silent_server()
    ))
    .unwrap();
    bounded("postgres", &Locked::new(MutexLock::new(), pg.clone()));
    bounded("pg-xact", &PgXactLocked::new(pg.clone()));
    bounded("retry over postgres", &Retry::new(pg.clone()));
    bounded("optimistic over postgres", &Optimistic::new(pg));
    let my = MySql::new(&format!(
        "mysql://root@{}/test",
        server_urls::silent_server()
    ))
    .unwrap();
    bounded("mysql", &Locked::new(MutexLock::new(), my.clone()));
    bounded("retry over mysql", &Retry::new(my.clone()));
    bounded("optimistic over mysql", &Optimistic::new(my));
}

/// A healthy server's login can take longer than a caller's short timeout: a login cut to
/// that timeout was abandoned, still running, and once eight were pending every new one
/// was refused as if the server were down (`Error::Unavailable`: "8 logins are still
/// waiting"). A login gets at least 250 ms: sixteen callers with 1 ms timeouts, all
/// opening connections at once, never read the server as unavailable.
#[test]
fn short_timeouts_on_a_healthy_server_never_read_as_an_outage() {
    use std::time::Duration;
    use turnstile::Wait;
    fn burst<S: Serializer + Sync>(what: &str, strategy: &S) {
        let results: Vec<_> = std::thread::scope(|scope| {
            let calls: Vec<_> = (0..16)
                .map(|_| {
                    scope.spawn(|| {
                        strategy
                            .run_with(
                                &[Key::whole()],
                                Wait::Timeout(Duration::from_millis(1)),
                                |_| Ok::<_, std::io::Error>(()),
                            )
                            .map_err(|e| e.to_string())
                    })
                })
                .collect();
            calls.into_iter().map(|c| c.join().unwrap()).collect()
        });
        for result in &results {
            assert!(
                !matches!(result, Err(e) if e.contains("unavailable")),
                "{what}: {results:?}"
            );
        }
    }
    let pg = Postgres::new(&server_urls::postgres_url()).unwrap();
    burst("retry over postgres", &Retry::new(pg.clone()));
    burst("optimistic over postgres", &Optimistic::new(pg));
    let my = MySql::new(&server_urls::mysql_url()).unwrap();
    burst("retry over mysql", &Retry::new(my.clone()));
    burst("optimistic over mysql", &Optimistic::new(my));
}
