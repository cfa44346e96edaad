//! For test resources that wrap SQLite (a field `db: Sqlite`) to change one or two of its
//! `Transact` methods: `delegate_to_db!` writes the others, each calling `self.db`.

/// Writes the named `Transact` methods, each calling the same method of `self.db`.
macro_rules! delegate_to_db {
    ($($method:ident),* $(,)?) => { $( delegate_to_db!(@ $method); )* };
    (@begin) => {
        fn begin(
            &self,
            c: &mut turnstile::sqlite::rusqlite::Connection,
            fences: &[turnstile::FenceClaim<'_>],
        ) -> Result<(), turnstile::TransactError> {
            self.db.begin(c, fences)
        }
    };
    (@commit) => {
        fn commit(
            &self,
            c: &mut turnstile::sqlite::rusqlite::Connection,
        ) -> Result<(), turnstile::TransactError> {
            self.db.commit(c)
        }
    };
    (@rollback) => {
        fn rollback(
            &self,
            c: &mut turnstile::sqlite::rusqlite::Connection,
        ) -> Result<(), turnstile::BoxError> {
            self.db.rollback(c)
        }
    };
    (@in_transaction) => {
        fn in_transaction(&self, c: &turnstile::sqlite::rusqlite::Connection) -> bool {
            self.db.in_transaction(c)
        }
    };
    (@savepoint) => {
        fn savepoint(
            &self,
            c: &mut turnstile::sqlite::rusqlite::Connection,
            n: usize,
        ) -> Result<(), turnstile::BoxError> {
            self.db.savepoint(c, n)
        }
    };
    (@release_savepoint) => {
        fn release_savepoint(
            &self,
            c: &mut turnstile::sqlite::rusqlite::Connection,
            n: usize,
        ) -> Result<(), turnstile::BoxError> {
            self.db.release_savepoint(c, n)
        }
    };
    (@rollback_to_savepoint) => {
        fn rollback_to_savepoint(
            &self,
            c: &mut turnstile::sqlite::rusqlite::Connection,
            n: usize,
        ) -> Result<(), turnstile::BoxError> {
            self.db.rollback_to_savepoint(c, n)
        }
    };
}
