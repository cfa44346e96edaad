//! Waiting for a held name without hammering Redis: one subscriber connection per process
//! and server (all lock objects on the same URL and key prefix share it) feeds an
//! in-process, per-key FIFO queue of waiters.
//!
//! Only the head of a key's queue talks to Redis; the others sleep until they become head,
//! so a process sends one `SET NX` per release however many of its threads wait. The head
//! retries when the release script's `PUBLISH` arrives, when a lease of this process is
//! released, when the current holder's TTL runs out (the holder may have died), and at
//! least every poll interval (the fallback for a lost message or a subscriber that is
//! reconnecting).
//!
//! A holder whose lock object has the head of the queue hands its lease on instead of
//! releasing it (see `RedisLease::release_inner`): the hand-off script gives the key a new
//! token and a new fence in one round trip, and the new lease is left here as the
//! queue's *grant* for the head to take.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::RedisLease;
use super::node::Connector;

/// How long the subscriber blocks in one read before checking whether it should stop.
const SUBSCRIBER_TICK: Duration = Duration::from_millis(250);

/// The waiting side shared by the lock objects of one server, their subscriber thread and
/// their leases.
pub(super) struct Waiters {
    state: Mutex<State>,
    /// Set when the subscriber's `SUBSCRIBE` is confirmed; cleared when its connection
    /// drops. Only for diagnostics: correctness rests on the poll.
    live: AtomicBool,
    /// Set once the subscriber's first attempt to subscribe has finished, well or not:
    /// waiters stop waiting for it then (a server that forbids `SUBSCRIBE` must not cost
    /// every contended acquire a connect timeout).
    tried: AtomicBool,
}

/// The process's waiter sets, by (server URL, channel). The subscriber thread holds only
/// a weak reference and exits once every lock object using its set is gone.
type Registry = HashMap<(String, Vec<u8>), Weak<Waiters>>;
static SHARED: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(HashMap::new()));

#[derive(Default)]
struct State {
    queues: HashMap<Box<[u8]>, Queue>,
    subscriber_started: bool,
}

#[derive(Default)]
struct Queue {
    waiters: VecDeque<Waiter>,
    /// Bumped by every release notification for this key.
    releases: u64,
    /// A lease handed on by its holder, for the head to take (only ever for a head of
    /// the lock object that made it).
    grant: Option<RedisLease>,
    /// A waiter of this process left the queue holding the lock, and no release of it
    /// was seen since: the next head need not ask Redis at once, the release will be
    /// local.
    held_here: bool,
}

struct Waiter {
    wake: Arc<Condvar>,
    /// The lock object the waiter acquires through (see [`owner_of`]).
    owner: usize,
}

/// The identity of a lock object for grants: a lease made by one object (its TTL, its
/// fencing, its watchdog) is only handed to waiters of the same object.
pub(super) fn owner_of<T>(inner: &Arc<T>) -> usize {
    Arc::as_ptr(inner) as usize
}

/// A place in a key's queue; leaving it (on drop) wakes the next waiter.
pub(super) struct Place<'a> {
    waiters: &'a Waiters,
    key: Box<[u8]>,
    me: Arc<Condvar>,
    owner: usize,
    /// Left holding the lock (see [`Place::leave_holding`]).
    holding: bool,
}

/// What a waiter woke to.
pub(super) enum Turn {
    /// The previous holder handed its lease on to us.
    Granted(RedisLease),
    /// We are the head: try Redis. `seen` is the release count to compare after the
    /// attempt; `held_here`: the lock was just taken by a waiter of this process, so its
    /// release will come locally (no need to ask Redis at once).
    Head { seen: u64, held_here: bool },
    /// The deadline passed.
    TimedOut,
}

impl Waiters {
    /// The waiter set of this process for the server at `url` (the full URL, password
    /// included, kept in memory only) and `channel`.
    pub(super) fn shared(url: &str, channel: &[u8]) -> Arc<Self> {
        let mut all = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|_, w| w.strong_count() > 0);
        let key = (url.to_owned(), channel.to_vec());
        if let Some(w) = all.get(&key).and_then(Weak::upgrade) {
            return w;
        }
        let w = Arc::new(Waiters {
            state: Mutex::new(State::default()),
            live: AtomicBool::new(false),
            tried: AtomicBool::new(false),
        });
        all.insert(key, Arc::downgrade(&w));
        w
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // No user code runs under this mutex.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this process has threads queued for `key` (a newcomer then queues behind
    /// them instead of barging in).
    pub(super) fn has_queue(&self, key: &[u8]) -> bool {
        self.state().queues.contains_key(key)
    }

    /// Whether the subscriber is connected and subscribed right now.
    pub(super) fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Starts the subscriber (once) and waits up to `wait` for its subscription, so that a
    /// release published after our next `SET NX` attempt reaches us.
    pub(super) fn ensure_subscriber(
        self: &Arc<Self>,
        connector: &Connector,
        channel: &[u8],
        connect_timeout: Duration,
        wait: Duration,
    ) {
        let start = {
            let mut state = self.state();
            !std::mem::replace(&mut state.subscriber_started, true)
        };
        if start {
            let weak = Arc::downgrade(self);
            let connector = connector.clone();
            let channel = channel.to_vec();
            let spawned = std::thread::Builder::new()
                .name("turnstile-redis-sub".into())
                .spawn(move || subscribe_loop(&weak, &connector, &channel, connect_timeout));
            if spawned.is_err() {
                // Without a subscriber the poll still wakes waiters; try again next time.
                self.state().subscriber_started = false;
                return;
            }
        }
        let until = Instant::now() + wait;
        while !self.is_live() && !self.tried.load(Ordering::Acquire) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Joins the tail of `key`'s queue, as a waiter of the lock object `owner`.
    pub(super) fn join(&self, key: &[u8], owner: usize) -> Place<'_> {
        let me = Arc::new(Condvar::new());
        self.state()
            .queues
            .entry(key.into())
            .or_default()
            .waiters
            .push_back(Waiter {
                wake: me.clone(),
                owner,
            });
        Place {
            waiters: self,
            key: key.into(),
            me,
            owner,
            holding: false,
        }
    }

    /// Whether the head of `key`'s queue waits through the lock object `owner` with no
    /// grant pending: a holder of that object may then hand its lease on.
    pub(super) fn can_grant(&self, key: &[u8], owner: usize) -> bool {
        self.state().queues.get(key).is_some_and(|q| {
            q.grant.is_none() && q.waiters.front().is_some_and(|h| h.owner == owner)
        })
    }

    /// Leaves `lease` for the head of `key`'s queue and wakes it; gives it back when no
    /// waiter of `owner` is at the head any more (or another grant is pending).
    pub(super) fn grant(
        &self,
        key: &[u8],
        owner: usize,
        lease: RedisLease,
    ) -> Result<(), RedisLease> {
        let mut state = self.state();
        let Some(queue) = state.queues.get_mut(key) else {
            return Err(lease);
        };
        match queue.waiters.front() {
            Some(head) if head.owner == owner && queue.grant.is_none() => {
                let head = head.wake.clone();
                queue.grant = Some(lease);
                drop(state);
                // Woken after the unlock, the head does not wait for our mutex.
                head.notify_one();
                Ok(())
            }
            _ => Err(lease),
        }
    }

    /// A release of `key` happened (here or, via the subscriber, anywhere): wake the head.
    pub(super) fn notify(&self, key: &[u8]) {
        let mut state = self.state();
        let head = state.queues.get_mut(key).and_then(Queue::released);
        drop(state);
        if let Some(head) = head {
            head.notify_one();
        }
    }

    /// Wakes every head (after the subscriber reconnected: messages may have been lost).
    fn notify_all(&self) {
        let mut state = self.state();
        let heads: Vec<_> = state
            .queues
            .values_mut()
            .filter_map(Queue::released)
            .collect();
        drop(state);
        for head in heads {
            head.notify_one();
        }
    }
}

impl Queue {
    /// Counts a release; answers the head to wake (after the caller's unlock).
    fn released(&mut self) -> Option<Arc<Condvar>> {
        self.releases = self.releases.wrapping_add(1);
        self.held_here = false;
        self.waiters.front().map(|h| h.wake.clone())
    }

    fn is_head(&self, me: &Arc<Condvar>) -> bool {
        self.waiters
            .front()
            .is_some_and(|h| Arc::ptr_eq(&h.wake, me))
    }
}

impl Place<'_> {
    /// Waits until this place is the head of its queue, or until `deadline`. A grant
    /// waiting for the head is taken even at the deadline: the lock is ours then. Looks
    /// again at least every `recheck`: a head that left holding the lock does not wake
    /// its successor (the release will), and this bounds the wait should that not come.
    pub(super) fn wait_head(&self, deadline: Option<Instant>, recheck: Duration) -> Turn {
        let mut state = self.waiters.state();
        loop {
            let Some(queue) = state.queues.get_mut(&self.key) else {
                return Turn::TimedOut;
            };
            if queue.is_head(&self.me) {
                if let Some(lease) = queue.grant.take() {
                    return Turn::Granted(lease);
                }
                return Turn::Head {
                    seen: queue.releases,
                    held_here: queue.held_here,
                };
            }
            let now = Instant::now();
            if deadline.is_some_and(|at| now >= at) {
                return Turn::TimedOut;
            }
            let wait = deadline.map_or(recheck, |at| recheck.min(at - now));
            state = self
                .me
                .wait_timeout(state, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// As head, sleeps until a release notification newer than `seen`, a grant, or
    /// `until`. Takes the grant if one came.
    pub(super) fn wait_release(&self, seen: u64, until: Instant) -> Option<RedisLease> {
        let mut state = self.waiters.state();
        loop {
            let queue = state.queues.get_mut(&self.key)?;
            if let Some(lease) = queue.grant.take() {
                return Some(lease);
            }
            let now = Instant::now();
            if queue.releases != seen || now >= until {
                return None;
            }
            state = self
                .me
                .wait_timeout(state, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Leaves the queue holding the lock. The next head is not woken: the release (or
    /// hand-off) of this lease will wake it, and until then it would only find the name
    /// held. A head woken otherwise learns that the release will come from this process.
    pub(super) fn leave_holding(mut self) {
        self.holding = true;
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut state = self.waiters.state();
        let Some(queue) = state.queues.get_mut(&self.key) else {
            return;
        };
        queue.waiters.retain(|w| !Arc::ptr_eq(&w.wake, &self.me));
        // A grant stays only for a head of the lock object that made it.
        let mut unclaimed = None;
        let mut next_head = None;
        match queue.waiters.front() {
            Some(next) => {
                if next.owner != self.owner {
                    unclaimed = queue.grant.take();
                }
                if self.holding {
                    queue.held_here = true;
                } else {
                    // The next one becomes head and tries at once (or takes the grant).
                    next_head = Some(next.wake.clone());
                }
            }
            None => {
                unclaimed = queue.grant.take();
                state.queues.remove(&self.key);
            }
        }
        drop(state);
        if let Some(next) = next_head {
            next.notify_one();
        }
        // Dropping an unclaimed lease releases it (outside our mutex: that may wake
        // waiters of other lock objects, through this same set).
        drop(unclaimed);
    }
}

fn subscribe_loop(
    waiters: &Weak<Waiters>,
    connector: &Connector,
    channel: &[u8],
    connect: Duration,
) {
    let mut backoff = Duration::from_millis(10);
    let tried = || {
        if let Some(w) = waiters.upgrade() {
            w.tried.store(true, Ordering::Release);
        }
    };
    loop {
        if waiters.strong_count() == 0 {
            return;
        }
        let mut conn = match connector.connect(connect) {
            Ok(conn) => conn,
            Err(_) => {
                tried();
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let mut pubsub = conn.as_pubsub();
        if pubsub.set_read_timeout(Some(SUBSCRIBER_TICK)).is_err()
            || pubsub.subscribe(channel).is_err()
        {
            tried();
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(1));
            continue;
        }
        backoff = Duration::from_millis(10);
        if let Some(w) = waiters.upgrade() {
            w.live.store(true, Ordering::Release);
            w.tried.store(true, Ordering::Release);
            // Releases while we were not subscribed went unheard.
            w.notify_all();
        }
        loop {
            let message = pubsub.get_message();
            let Some(w) = waiters.upgrade() else { return };
            match message {
                Ok(msg) => w.notify(msg.get_payload_bytes()),
                Err(e) if e.is_timeout() => {}
                Err(_) => {
                    w.live.store(false, Ordering::Release);
                    w.notify_all();
                    break;
                }
            }
        }
    }
}
