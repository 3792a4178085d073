//! Per-client state shared by the binding, the driver and the connection: one allocation per
//! client (`Shared`), the read bound between the socket and JS (`ReadGate`), and what one
//! connection attempt connects to (`AttemptParams`), fixed or answered by JS providers.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Context;

use futures_util::task::AtomicWaker;
use tokio::sync::oneshot;
use url::Url;

use crate::errors::ConnError;
use crate::outbox::Outbox;
use crate::proxy::Proxy;
use crate::stats::Metrics;

/// What one attempt connects to: fixed, or supplied per attempt by JS providers.
#[derive(Clone, Debug)]
pub struct AttemptParams {
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub protocols: Vec<String>,
    pub proxy: Option<Proxy>,
}

/// A pending request to JS (providers): its id and where the answer goes.
pub type ProvideSlot = Option<(u64, oneshot::Sender<Result<AttemptParams, ConnError>>)>;

/// State shared between the JS-facing client, its driver and its connection: one
/// allocation per client.
pub struct Shared {
    pub id: u64,
    pub metrics: Metrics,
    pub outbox: Mutex<Outbox>,
    pub provide: Mutex<ProvideSlot>,
    pub next_request: AtomicU64,
    /// The client's `connect()` and `reconnect()` calls its driver has taken (`Command::Connect`,
    /// `Command::Reconnect`; `Driver::new` stores the count of the call that started it, before
    /// the task runs): the driver's own, read by it only. Each `Close` and `Reconnecting` carries
    /// it, so that JS knows a call it made before it saw them (in an `error` listener, say) ended
    /// the wait they announce. Here rather than in the driver, whose task must stay within tokio's
    /// 384-byte cell (`driver::tests`).
    pub restarts: AtomicU32,
    pub read_gate: ReadGate,
    /// The client's JS thread reads its sockets when they are quiet (`reader::enabled` there).
    pub direct_read: bool,
    /// A call from JS panicked (what it said): the driver ends the client as after its own panic.
    call_panic: Mutex<Option<String>>,
    /// `call_panic` holds something: what the driver reads on every poll, without the lock.
    call_panicked: AtomicBool,
}

impl Shared {
    pub fn new(id: u64, direct_read: bool) -> Self {
        Shared {
            id,
            direct_read,
            metrics: Metrics::default(),
            outbox: Mutex::new(Outbox::default()),
            provide: Mutex::new(None),
            next_request: AtomicU64::new(1),
            restarts: AtomicU32::new(0),
            read_gate: ReadGate::default(),
            call_panic: Mutex::new(None),
            call_panicked: AtomicBool::new(false),
        }
    }

    pub fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A call from JS panicked, saying `what`: for the driver to take.
    pub fn set_call_panic(&self, what: String) {
        *self.call_panic.lock().unwrap_or_else(|p| p.into_inner()) = Some(what);
        self.call_panicked.store(true, Ordering::Release);
    }

    /// What a call from JS that panicked said, once (`set_call_panic`).
    pub fn take_call_panic(&self) -> Option<String> {
        // A load first: the driver asks on every poll, and a swap would write the line each time.
        if !self.call_panicked.load(Ordering::Acquire) || !self.call_panicked.swap(false, Ordering::Acquire) {
            return None;
        }
        self.call_panic.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The id of a new request to JS (providers, policy); ids start at 1.
    pub fn request_id(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }
}

/// Bytes (payload plus a per-message allowance) read from the socket and not yet delivered to JS.
pub const INFLIGHT_LIMIT: usize = 4 << 20;
/// What one message (or ping, or pong) counts for beyond its payload: what one costs on its own
/// while it waits for JS (its event, its allocation, its place in the queues; about 185 bytes
/// measured with 1-byte pings). Small messages that share a run cost less; counting them as
/// much keeps the bound a bound of memory whatever the peer sends.
pub const MESSAGE_OVERHEAD: usize = 192;

/// Flow control of the socket's reading. Messages read but not yet handed to JS
/// are bounded (`INFLIGHT_LIMIT` bytes): past it the driver stops reading, so a
/// slow JS thread leads to TCP backpressure, not memory growth. JS can also
/// stop the reading outright (a slow `messages()` consumer).
#[derive(Default)]
pub struct ReadGate {
    paused: AtomicBool,
    inflight: AtomicUsize,
    /// Events of the client (of every kind: messages and runs of them, opens, closes, errors)
    /// handed to JS and not dispatched yet. A reconnect waits while `EVENTS_BEHIND` of them wait
    /// (`js_behind`): attempts that fail at once, with no delay configured, cannot pile events
    /// up behind a busy JS thread, where the read bound counts only messages.
    events: AtomicUsize,
    waker: AtomicWaker,
}

/// Events of a client JS may be behind by before its next reconnect waits (about a dozen
/// attempts' worth: a reconnect's events and their JS values, an upgrade answer's head included,
/// cost up to tens of KiB).
pub const EVENTS_BEHIND: usize = 64;

impl ReadGate {
    pub fn set(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        if !paused {
            self.waker.wake();
        }
    }

    /// A message was read and queued for JS.
    pub fn admit(&self, len: usize) {
        self.inflight.fetch_add(len + MESSAGE_OVERHEAD, Ordering::AcqRel);
    }

    /// JS has dispatched messages of `len` bytes in all (`count` messages): reopen the gate when
    /// it falls under the limit, and tell a connection waiting for JS to catch up (see `has_inflight_waking`).
    pub fn delivered(&self, len: usize, count: usize) {
        let n = len + count * MESSAGE_OVERHEAD;
        let before = self.inflight.fetch_sub(n, Ordering::AcqRel);
        if (before >= INFLIGHT_LIMIT && before - n < INFLIGHT_LIMIT) || before == n {
            self.waker.wake();
        }
    }

    /// `n` events of the client go to JS.
    pub fn events_queued(&self, n: usize) {
        self.events.fetch_add(n, Ordering::AcqRel);
    }

    /// JS has dispatched `n` events of the client: wake a reconnect waiting for it (`js_behind`).
    pub fn events_dispatched(&self, n: usize) {
        let before = self.events.fetch_sub(n, Ordering::AcqRel);
        if before >= EVENTS_BEHIND && before - n < EVENTS_BEHIND {
            self.waker.wake();
        }
    }

    /// Whether JS is `EVENTS_BEHIND` events or more behind; registers `cx` to be woken when it
    /// catches up.
    pub fn js_behind(&self, cx: &Context<'_>) -> bool {
        if self.events.load(Ordering::Acquire) < EVENTS_BEHIND {
            return false;
        }
        self.waker.register(cx.waker());
        self.events.load(Ordering::Acquire) >= EVENTS_BEHIND
    }

    /// Messages were read that JS has not dispatched yet.
    pub fn has_inflight(&self) -> bool {
        self.inflight.load(Ordering::Acquire) > 0
    }

    /// As `has_inflight`, registering `cx` to be woken when JS has dispatched them all.
    pub fn has_inflight_waking(&self, cx: &Context<'_>) -> bool {
        if !self.has_inflight() {
            return false;
        }
        self.waker.register(cx.waker());
        self.has_inflight()
    }

    /// Messages read by one poll of the driver, admitted together (see `ReadBatch`).
    pub fn batch<'a>(&'a self, metrics: &'a Metrics) -> ReadBatch<'a> {
        ReadBatch {
            gate: self,
            metrics,
            bytes: 0,
            messages: 0,
        }
    }

    /// Whether reading may go on (not paused, under the limit).
    pub fn open(&self) -> bool {
        !self.paused.load(Ordering::Acquire) && self.inflight.load(Ordering::Acquire) < INFLIGHT_LIMIT
    }

    /// Whether reading must wait; registers `cx` to be woken when it may go on.
    pub fn is_closed(&self, cx: &Context<'_>) -> bool {
        if self.open() {
            return false;
        }
        self.waker.register(cx.waker());
        !self.open()
    }
}

/// The data messages one poll of the driver reads, admitted to the gate and counted in the
/// client's metrics once, when the batch is flushed or dropped: one atomic update of each per poll
/// rather than three per message, on counters the JS thread updates too. Every exit of the poll
/// admits what it read before its events can reach JS.
pub struct ReadBatch<'a> {
    gate: &'a ReadGate,
    metrics: &'a Metrics,
    bytes: usize,
    messages: usize,
}

impl ReadBatch<'_> {
    pub fn message(&mut self, len: usize) {
        self.bytes += len;
        self.messages += 1;
    }

    /// As `ReadGate::is_closed`, counting the messages not admitted yet (admitted first when
    /// they close it).
    pub fn is_closed(&mut self, cx: &Context<'_>) -> bool {
        let pending = self.bytes + self.messages * MESSAGE_OVERHEAD;
        if !self.gate.paused.load(Ordering::Acquire)
            && self.gate.inflight.load(Ordering::Acquire) + pending < INFLIGHT_LIMIT
        {
            return false;
        }
        self.flush();
        self.gate.is_closed(cx)
    }

    pub fn flush(&mut self) {
        if self.messages == 0 {
            return;
        }
        let (bytes, messages) = (std::mem::take(&mut self.bytes), std::mem::take(&mut self.messages));
        self.gate
            .inflight
            .fetch_add(bytes + messages * MESSAGE_OVERHEAD, Ordering::AcqRel);
        self.metrics.bytes_received.fetch_add(bytes as u64, Ordering::Relaxed);
        self.metrics
            .messages_received
            .fetch_add(messages as u64, Ordering::Relaxed);
    }
}

impl Drop for ReadBatch<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn the_read_gate_closes_at_the_limit_and_reopens_below_it() {
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let cx = Context::from_waker(&waker);
        let gate = ReadGate::default();
        assert!(!gate.is_closed(&cx) && !gate.has_inflight());
        let len = INFLIGHT_LIMIT / 2 - MESSAGE_OVERHEAD;
        gate.admit(len);
        assert!(!gate.is_closed(&cx) && gate.has_inflight());
        gate.admit(len);
        assert!(gate.is_closed(&cx), "at the limit");
        gate.delivered(len, 1);
        assert_eq!(
            wakes.0.load(Ordering::Relaxed),
            1,
            "woken when it falls under the limit"
        );
        assert!(!gate.is_closed(&cx));
        assert!(gate.has_inflight_waking(&cx));
        gate.delivered(len, 1);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 2, "woken when everything is delivered");
        assert!(!gate.has_inflight_waking(&cx));
    }

    #[test]
    fn a_reconnect_waits_while_js_is_behind_and_is_woken_when_it_catches_up() {
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let cx = Context::from_waker(&waker);
        let gate = ReadGate::default();
        gate.events_queued(EVENTS_BEHIND - 1);
        assert!(!gate.js_behind(&cx));
        gate.events_queued(5);
        assert!(gate.js_behind(&cx), "behind at the bound");
        gate.events_dispatched(3);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 0, "still behind");
        assert!(gate.js_behind(&cx));
        gate.events_dispatched(EVENTS_BEHIND + 1);
        assert_eq!(
            wakes.0.load(Ordering::Relaxed),
            1,
            "woken when it falls under the bound"
        );
        assert!(!gate.js_behind(&cx));
        assert_eq!(gate.events.load(Ordering::Relaxed), 0, "every event given back");
    }

    #[test]
    fn pausing_closes_the_gate_and_resuming_wakes_the_reader() {
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let cx = Context::from_waker(&waker);
        let gate = ReadGate::default();
        gate.set(true);
        assert!(gate.is_closed(&cx));
        gate.set(false);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
        assert!(!gate.is_closed(&cx));
    }

    #[test]
    fn a_read_batch_admits_its_messages_once_and_closes_the_gate_at_the_limit() {
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let cx = Context::from_waker(&waker);
        let shared = Shared::new(1, false);
        let gate = &shared.read_gate;
        let len = INFLIGHT_LIMIT / 2 - MESSAGE_OVERHEAD;
        {
            let mut read = gate.batch(&shared.metrics);
            read.message(10);
            read.message(20);
            assert!(!gate.has_inflight(), "not admitted before the batch ends");
            assert!(!read.is_closed(&cx));
            read.message(len);
            read.message(len);
            assert!(read.is_closed(&cx), "what it has not admitted yet counts");
            assert!(gate.has_inflight(), "admitted when it closes the gate");
            read.message(5);
        }
        let total = 10 + 20 + 2 * len + 5;
        assert!(gate.is_closed(&cx));
        gate.delivered(total, 5);
        assert!(!gate.has_inflight(), "every message admitted exactly once");
        let m = &shared.metrics;
        assert_eq!(m.messages_received.load(Ordering::Relaxed), 5);
        assert_eq!(m.bytes_received.load(Ordering::Relaxed), total as u64);
    }

    #[test]
    fn request_ids_start_at_one_and_increase() {
        let shared = Shared::new(7, false);
        assert_eq!((shared.request_id(), shared.request_id()), (1, 2));
    }
}
