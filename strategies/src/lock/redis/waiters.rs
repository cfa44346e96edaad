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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use redis::Client;

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
    waiters: VecDeque<Arc<Condvar>>,
    /// Bumped by every release notification for this key.
    releases: u64,
}

/// A place in a key's queue; leaving it (on drop) wakes the next waiter.
pub(super) struct Place<'a> {
    waiters: &'a Waiters,
    key: Box<[u8]>,
    me: Arc<Condvar>,
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
        client: &Client,
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
            let client = client.clone();
            let channel = channel.to_vec();
            let spawned = std::thread::Builder::new()
                .name("turnstile-redis-sub".into())
                .spawn(move || subscribe_loop(&weak, &client, &channel, connect_timeout));
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

    /// Joins the tail of `key`'s queue.
    pub(super) fn join(&self, key: &[u8]) -> Place<'_> {
        let me = Arc::new(Condvar::new());
        self.state()
            .queues
            .entry(key.into())
            .or_default()
            .waiters
            .push_back(me.clone());
        Place {
            waiters: self,
            key: key.into(),
            me,
        }
    }

    /// A release of `key` happened (here or, via the subscriber, anywhere): wake the head.
    pub(super) fn notify(&self, key: &[u8]) {
        let mut state = self.state();
        if let Some(queue) = state.queues.get_mut(key) {
            queue.releases = queue.releases.wrapping_add(1);
            if let Some(head) = queue.waiters.front() {
                head.notify_one();
            }
        }
    }

    /// Wakes every head (after the subscriber reconnected: messages may have been lost).
    fn notify_all(&self) {
        let mut state = self.state();
        for queue in state.queues.values_mut() {
            queue.releases = queue.releases.wrapping_add(1);
            if let Some(head) = queue.waiters.front() {
                head.notify_one();
            }
        }
    }
}

impl Place<'_> {
    /// Waits until this place is the head of its queue, or until `deadline`. Returns the
    /// release count to compare against after an attempt, or `None` at the deadline.
    pub(super) fn wait_head(&self, deadline: Option<Instant>) -> Option<u64> {
        let mut state = self.waiters.state();
        loop {
            let queue = state.queues.get(&self.key)?;
            if queue
                .waiters
                .front()
                .is_some_and(|h| Arc::ptr_eq(h, &self.me))
            {
                return Some(queue.releases);
            }
            state = match deadline {
                None => self.me.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(at) => {
                    let now = Instant::now();
                    if now >= at {
                        return None;
                    }
                    self.me
                        .wait_timeout(state, at - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// As head, sleeps until a release notification newer than `seen`, or `until`.
    pub(super) fn wait_release(&self, seen: u64, until: Instant) {
        let mut state = self.waiters.state();
        loop {
            let Some(queue) = state.queues.get(&self.key) else {
                return;
            };
            let now = Instant::now();
            if queue.releases != seen || now >= until {
                return;
            }
            state = self
                .me
                .wait_timeout(state, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut state = self.waiters.state();
        let Some(queue) = state.queues.get_mut(&self.key) else {
            return;
        };
        queue.waiters.retain(|w| !Arc::ptr_eq(w, &self.me));
        match queue.waiters.front() {
            // The next one becomes head and tries at once.
            Some(next) => next.notify_one(),
            None => {
                state.queues.remove(&self.key);
            }
        }
    }
}

fn subscribe_loop(waiters: &Weak<Waiters>, client: &Client, channel: &[u8], connect: Duration) {
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
        let mut conn = match client.get_connection_with_timeout(connect) {
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
