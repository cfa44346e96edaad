//! Fencing tokens enforced by your own resource: a tiny in-memory ledger implements
//! `Connect` + `Transact`, checks and records each lease's fence in `begin`, and so
//! refuses a holder whose fence is older than one it has already seen.
//!
//! Run it with `cargo run -p turnstile --example fencing`. The book's "Fencing tokens"
//! chapter includes the parts between the `ANCHOR` markers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use turnstile::lock::{MutexLease, MutexLock};
use turnstile::{
    BoxError, Capabilities, Connect, Error, Fence, FenceClaim, Key, Lease, Lock, LockName, Locked,
    Serializer, StrategyError, Transact, TransactError,
};

// ANCHOR: resource
/// The shared data: balances, the highest fence recorded per (lock backend, lock name),
/// and the resource's own write lock — one writer at a time, as SQLite's
/// `BEGIN IMMEDIATE` gives.
#[derive(Default)]
struct Store {
    balances: BTreeMap<String, i64>,
    fences: HashMap<(String, Vec<u8>), Fence>,
    writer: bool,
}

type Shared = Arc<(Mutex<Store>, Condvar)>;

/// Opens sessions on one ledger: the `Connect` half.
#[derive(Clone, Default)]
struct Ledger {
    shared: Shared,
}

/// A session: what an op works on. Writes wait in `tx` until commit.
struct Session {
    shared: Shared,
    tx: Option<Pending>,
}

#[derive(Default)]
struct Pending {
    writes: BTreeMap<String, i64>,
    fences: Vec<((String, Vec<u8>), Fence)>,
}

/// An op wrote outside a transaction.
#[derive(Debug)]
struct NoTransaction;

impl std::fmt::Display for NoTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no transaction is open")
    }
}

impl std::error::Error for NoTransaction {}

fn store(shared: &Shared) -> MutexGuard<'_, Store> {
    shared.0.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    fn balance(&self, account: &str) -> i64 {
        let pending = self.tx.as_ref().and_then(|tx| tx.writes.get(account));
        pending.copied().unwrap_or_else(|| {
            let store = store(&self.shared);
            store.balances.get(account).copied().unwrap_or(0)
        })
    }

    fn set_balance(&mut self, account: &str, value: i64) -> Result<(), NoTransaction> {
        let tx = self.tx.as_mut().ok_or(NoTransaction)?;
        tx.writes.insert(account.to_owned(), value);
        Ok(())
    }

    /// Ends the transaction: gives the write lock back.
    fn end(&mut self) {
        if self.tx.take().is_some() {
            store(&self.shared).writer = false;
            self.shared.1.notify_one();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.end(); // a discarded session must not keep the write lock
    }
}

impl Connect for Ledger {
    type Resource = Session;

    fn connect(&self) -> Result<Session, BoxError> {
        let shared = Arc::clone(&self.shared);
        Ok(Session { shared, tx: None })
    }

    fn identity(&self) -> &str {
        "ledger:example"
    }
}
// ANCHOR_END: resource

impl Transact for Ledger {
    // ANCHOR: begin
    fn begin(&self, session: &mut Session, fences: &[FenceClaim<'_>]) -> Result<(), TransactError> {
        // Take the ledger's write lock first and hold it until commit or rollback: nobody
        // can record a higher fence between this check and this transaction's commit.
        let mut store = store(&self.shared);
        let give_up = Instant::now() + Duration::from_secs(5);
        while store.writer {
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(TransactError::Busy("the ledger has another writer".into()));
            }
            let (guard, _) = self
                .shared
                .1
                .wait_timeout(store, left)
                .unwrap_or_else(|p| p.into_inner());
            store = guard;
        }
        let mut pending = Pending::default();
        for claim in fences {
            // Fences of different backends are not comparable: key by (backend, name).
            let name = (claim.backend.to_owned(), claim.name.to_vec());
            if let Some(&highest) = store.fences.get(&name)
                && highest > claim.fence
            {
                // Lower than one already recorded: a newer holder has been here. Refuse
                // before the op writes anything. (An equal fence is the same lease.)
                return Err(TransactError::StaleFence {
                    presented: claim.fence,
                    highest,
                });
            }
            // Recorded with the op's writes, at commit: a rolled-back fence never counts.
            pending.fences.push((name, claim.fence));
        }
        store.writer = true;
        session.tx = Some(pending);
        Ok(())
    }
    // ANCHOR_END: begin

    // ANCHOR: commit
    fn commit(&self, session: &mut Session) -> Result<(), TransactError> {
        let Some(pending) = session.tx.as_mut().map(std::mem::take) else {
            return Err(TransactError::Failed(Box::new(NoTransaction)));
        };
        {
            let mut store = store(&self.shared);
            store.balances.extend(pending.writes);
            store.fences.extend(pending.fences); // the data and the fences, together
        }
        session.end();
        Ok(())
    }

    fn rollback(&self, session: &mut Session) -> Result<(), BoxError> {
        session.end();
        Ok(())
    }

    fn in_transaction(&self, session: &Session) -> bool {
        session.tx.is_some()
    }
    // ANCHOR_END: commit

    // `Locked` needs no savepoints; the queue's group commit would.
    fn savepoint(&self, _: &mut Session, _: usize) -> Result<(), BoxError> {
        Err("the ledger has no savepoints".into())
    }

    fn release_savepoint(&self, _: &mut Session, _: usize) -> Result<(), BoxError> {
        Err("the ledger has no savepoints".into())
    }

    fn rollback_to_savepoint(&self, _: &mut Session, _: usize) -> Result<(), BoxError> {
        Err("the ledger has no savepoints".into())
    }
}

// ANCHOR: lock
/// A lock backend that issues fencing tokens: the in-process lock table plus a counter.
/// (Real ones keep the counter where every holder sees it: Redis, a database row.)
#[derive(Default)]
struct CountingLock {
    table: MutexLock,
    last: AtomicU64,
}

struct CountingLease {
    _held: MutexLease,
    fence: Fence,
}

impl Lease for CountingLease {
    fn fence(&self) -> Option<Fence> {
        Some(self.fence)
    }
}

impl Lock for CountingLock {
    type Lease = CountingLease;

    fn capabilities(&self) -> Capabilities {
        self.table.capabilities().fences(true)
    }

    fn backend_id(&self) -> &str {
        "counting-lock"
    }

    fn acquire(
        &self,
        name: &LockName,
        deadline: Option<Instant>,
    ) -> Result<CountingLease, StrategyError> {
        let held = self.table.acquire(name, deadline)?;
        let fence = Fence(self.last.fetch_add(1, Ordering::SeqCst) + 1);
        Ok(CountingLease { _held: held, fence })
    }
}
// ANCHOR_END: lock

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // ANCHOR: run
    let ledger = Ledger::default();
    let strategy = Locked::new(CountingLock::default(), ledger.clone());
    let alice = Key::new("alice")?;
    for _ in 0..3 {
        let fence = strategy.run(&alice, |db| {
            let balance = db.balance("alice");
            db.set_balance("alice", balance + 10)?;
            Ok::<_, NoTransaction>(db.fence())
        })?;
        println!(
            "deposit under fence {}",
            fence.map_or("none".into(), |f| f.to_string())
        );
    }
    // ANCHOR_END: run

    // ANCHOR: stale
    // A lock whose counter went back — a Redis restarted without persistence and without
    // turnstile's clock seeding, or a holder paused past its lease presenting its old
    // token — hands out fence #1 again. The ledger has recorded #3 for this name, so it
    // refuses the transaction before the op writes anything.
    let forgetful = Locked::new(CountingLock::default(), ledger.clone());
    let late = forgetful.run(&alice, |db| {
        db.set_balance("alice", 0)?;
        Ok::<_, NoTransaction>(())
    });
    match late {
        Err(e @ Error::StaleFence { .. }) => println!("{e}"),
        other => return Err(format!("expected a stale fence, got {other:?}").into()),
    }
    let balance = strategy.run(&alice, |db| Ok::<_, NoTransaction>(db.balance("alice")))?;
    assert_eq!(balance, 30, "the stale holder wrote nothing");
    // ANCHOR_END: stale
    println!("alice holds {balance}");
    Ok(())
}
