//! The test servers' URLs, from the environment `scripts/services` sets up (or the local
//! defaults), and an administrator's connection to each.
#![allow(dead_code)] // Each test binary uses its own part of this.

#[cfg(feature = "mysql")]
pub(crate) fn mysql_url() -> String {
    std::env::var("TURNSTILE_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

#[cfg(feature = "mysql")]
pub(crate) fn mysql_admin() -> mysql::Conn {
    use turnstile::Connect;
    turnstile::resource::MySql::new(&mysql_url())
        .unwrap()
        .connect()
        .expect("the MySQL test server must be running (see TURNSTILE_MYSQL_URL)")
}

#[cfg(feature = "postgres")]
pub(crate) fn postgres_url() -> String {
    std::env::var("TURNSTILE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

#[cfg(feature = "postgres")]
pub(crate) fn postgres_admin() -> postgres::Client {
    use turnstile::Connect;
    turnstile::resource::Postgres::new(&postgres_url())
        .unwrap()
        .connect()
        .expect("the PostgreSQL test server must be running (see TURNSTILE_POSTGRES_URL)")
}

/// A listener that accepts connections and never answers, as a hung server does: its
/// `127.0.0.1:PORT`. It holds the sockets until the test process ends.
pub(crate) fn silent_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    addr
}
