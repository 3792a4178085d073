//! Event delivery from the tokio side to JavaScript, and the JS-thread registry
//! that decides what keeps a client (and the event loop) alive.
//!
//! Delivery is a "doorbell": drivers append events to one shared queue and ring
//! a single thread-safe function only when no batch is on its way to JS. The JS
//! thread takes a bounded batch per call (about `BATCH_EVENTS` events, a run of
//! small messages counting for its messages, and about `BATCH_BYTES` of payload),
//! dispatches it, and acknowledges it from a
//! `setImmediate` (`ack`): the event loop gets a turn (timers, I/O, other
//! clients) between batches, and the acknowledgement both takes the next batch
//! and tells each client's read gate that its messages have been dispatched. A
//! message counts against the read bound from the moment it is read until JS
//! has run its listeners, so what a client holds for a slow JS thread is
//! bounded end to end.
//!
//! The thread-safe function is weak: it never holds the loop by itself. The
//! registry refs it while at least one client is active and ref'd, and unrefs
//! it when the last one goes idle. It is built on a module-level dispatcher
//! that closes over no client; clients are found through per-client napi
//! references that are strong only while a connection exists.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeCallContext, ThreadsafeFunctionCallMode};

use crate::ask;
use crate::direct;
use crate::event_values::{event_to_js, text_run, text_value};
use crate::events::JsEvent;
use crate::frame::Incoming;
use crate::napi_raw::{self, ArrayOf, CallbackTarget, DispatchArgs, OwnerRef, RawValue, Ready, Tsfn, Value};
use crate::protocol::event as tag;
use crate::reader::{self, JsRead};
use crate::shared::Shared;
use crate::testing;

/// About this many events go to JS in one batch (a run of small messages counts for its messages
/// and is not split, so a batch may pass it by one run: `events::Run`)...
const BATCH_EVENTS: usize = 4096;
/// ...and payload bytes beyond this start the next batch. A batch keeps its messages reachable
/// until its last listener has run: with a listener that takes 0.5 ms per 64 KiB message, a
/// 1 MiB batch kept them long enough to outlive scavenges, and a promoted Buffer is freed only by
/// a mark-compact (the hostile tests' 64 KiB flood grew RSS by 76 MiB against 14 with this
/// bound). It also holds the event loop for about 2 ms per batch there.
const BATCH_BYTES: usize = 256 * 1024;
/// Entries of room the queue keeps once it has run empty (152 bytes each). A burst (thousands of
/// clients opening or reconnecting at once) grows it, and the room above this goes back once the
/// burst is delivered; streams do not come near it (1 to 100 clients flooding 64 B messages at JS
/// kept at most 504 entries queued), so no batch of a stream grows it anew.
const KEPT_ENTRIES: usize = 1024;

pub struct Hub {
    queue: Mutex<VecDeque<(u64, JsEvent)>>,
    /// A batch has been requested or is being dispatched: drivers only append, and the JS
    /// thread's acknowledgement takes what they appended.
    scheduled: AtomicBool,
    tsfn: OnceLock<Tsfn>,
}

/// Calls into JS asked for since the process started, every thread's (tests prove which events
/// wake the JS thread: `testingRings`).
pub static RINGS: AtomicU64 = AtomicU64::new(0);

impl Hub {
    fn new() -> Self {
        Hub {
            queue: Mutex::new(VecDeque::new()),
            scheduled: AtomicBool::new(false),
            tsfn: OnceLock::new(),
        }
    }

    /// Appends a driver's events and rings the doorbell if no batch is pending.
    pub fn push(&self, client: u64, events: &mut Vec<JsEvent>) {
        if events.is_empty() {
            return;
        }
        {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.extend(events.drain(..).map(|e| (client, e)));
        }
        self.ring();
    }

    /// Appends a driver's events without ringing: they go with the next batch (anyone's). Only
    /// for events JS can take late, and only where more events of the same client will follow.
    pub fn push_quiet(&self, client: u64, events: &mut Vec<JsEvent>) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.extend(events.drain(..).map(|e| (client, e)));
    }

    pub fn push_one(&self, client: u64, event: JsEvent) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((client, event));
        self.ring();
    }

    fn ring(&self) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            RINGS.fetch_add(1, Ordering::Relaxed);
            if let Some(tsfn) = self.tsfn.get() {
                // One call at a time: never `QueueFull`. After env teardown the call is refused; nothing to do then.
                let _ = tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking);
            }
        }
    }

    /// Whether nothing is queued, in which case the doorbell is re-armed: the next append rings it.
    fn rearm_if_empty(&self, q: &mut VecDeque<(u64, JsEvent)>) -> bool {
        if !q.is_empty() {
            return false;
        }
        if q.capacity() > KEPT_ENTRIES {
            q.shrink_to(KEPT_ENTRIES);
        }
        // Under the lock: a driver appends under it too, then finds the flag clear and rings.
        self.scheduled.store(false, Ordering::Release);
        true
    }

    /// As `rearm_if_empty`, taking the lock.
    fn rearm_if_idle(&self) -> bool {
        self.rearm_if_empty(&mut self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The next batch: the oldest events, bounded in count and payload bytes (`BATCH_EVENTS`,
    /// `BATCH_BYTES`, or less: `most`). When none is left, the doorbell is re-armed (an event
    /// appended meanwhile is taken, not lost).
    fn take(&self, most: (usize, usize)) -> Vec<(u64, JsEvent)> {
        let (most_events, most_bytes) = (most.0.min(BATCH_EVENTS), most.1.min(BATCH_BYTES));
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if self.rearm_if_empty(&mut q) {
            return Vec::new();
        }
        // A run counts for its messages; it is not split, so a batch holds at most a run's
        // messages more than the bound.
        let (mut bytes, mut weight, mut n) = (0, 0, 0);
        for (_, e) in q.iter() {
            if weight >= most_events || bytes >= most_bytes {
                break;
            }
            bytes += e.payload_len();
            weight += e.messages().max(1);
            n += 1;
        }
        q.drain(..n).collect()
    }
}

/// What the batch JS is dispatching for each client: what it read (bytes, messages) and its
/// events of every kind, credited to the clients' read gates when JS acknowledges the batch.
type Credits = Vec<Credit>;

struct Credit {
    shared: Arc<Shared>,
    bytes: usize,
    messages: usize,
    events: usize,
}

fn credit(credits: &mut Credits, shared: &Arc<Shared>, event: &JsEvent) {
    if event.is_read() {
        credit_event(credits, shared, event.payload_len(), event.messages());
    } else {
        credit_event(credits, shared, 0, 0);
    }
}

/// As `credit`, for an event that read `bytes` in `messages`.
fn credit_event(credits: &mut Credits, shared: &Arc<Shared>, bytes: usize, messages: usize) {
    match credits.last_mut() {
        Some(c) if Arc::ptr_eq(&c.shared, shared) => {
            c.bytes += bytes;
            c.messages += messages;
            c.events += 1;
        }
        _ => credits.push(Credit {
            shared: shared.clone(),
            bytes,
            messages,
            events: 1,
        }),
    }
}

fn settle(credits: Credits) {
    for c in credits {
        if c.messages > 0 {
            c.shared.read_gate.delivered(c.bytes, c.messages);
        }
        c.shared.read_gate.events_dispatched(c.events);
    }
}

/// JS-thread bookkeeping of one client.
struct Entry {
    /// Reference to the JS `ReconnectingWebSocket`; refcount 1 while a connection exists, else 0 (weak).
    owner: OwnerRef,
    /// The reference is currently strong.
    strong: bool,
    /// A connection exists: the client must stay reachable.
    conn: bool,
    /// A `disconnect()` has not settled yet: the client must stay reachable.
    disconnecting: bool,
    /// The number of the last `disconnect()` call (1, 2, ...): `disconnecting` ends when a
    /// `DisconnectDone` or `Idle` settles it.
    disconnects: u32,
    /// JS-side waits that keep a running client alive without a connection (a pending `messages()`
    /// read or `opened()`).
    holds: u32,
    /// `disconnect()` calls the driver of generation `.0` never took (it was exiting, its command
    /// queue closed), up to call `.1`, which discarded `.2` queued messages: its `Idle` settles them.
    undelivered: Option<(u32, u32, u32)>,
    /// Its read gate is told when messages reach JS (the in-flight bound of the socket's reading).
    shared: Arc<Shared>,
    /// A driver is running (connecting, open, closing or waiting to reconnect).
    active: bool,
    refd: bool,
    gen: u32,
    /// The latest driver's task: aborted when this thread's environment is torn down.
    driver: Option<tokio::task::AbortHandle>,
}

#[derive(Default)]
struct Registry {
    hub: Option<Arc<Hub>>,
    /// The batch JS is dispatching: credited to read gates on acknowledgement.
    credits: Credits,
    clients: HashMap<u64, Entry>,
    /// Number of clients that are active and ref'd, and of warnings that such a client left when
    /// it was collected and JS has not taken yet: the loop is held while > 0.
    holding: usize,
    /// Those warnings (each releases its hold when JS takes it).
    warning_holds: usize,
    /// The environment is being torn down: finalizers are process exit, not garbage collection.
    shutting_down: bool,
    /// The JS function that receives the messages read on the JS thread (`on_readable`).
    dispatch_now: Option<Rc<CallbackTarget>>,
    /// Makes each batch's array in one call.
    array_of: Option<Rc<ArrayOf>>,
    /// The runtime's event loop is Node's libuv, whose turns the batches are counted in
    /// (`next_batch`); Bun's emulation of libuv aborts on the call that counts them.
    counts_turns: bool,
    /// The JS side's dispatch state of the first `init` on this thread (a strong reference, for
    /// the environment's life): a second copy of `lib/` (a cleared module cache, a test runner's
    /// registry per file) shares it rather than taking delivery from the first one's clients.
    wire: Option<Rc<OwnerRef>>,
}

thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
}

/// `None` once the thread's registry is gone (the environment is torn down), or while it is in
/// use further up the stack: nothing that holds it calls JS (`build_batch`), so that is a bug, and
/// better reported as the registry's absence than as a panic, which would abort the process.
fn with_registry<R>(f: impl FnOnce(&mut Registry) -> R) -> Option<R> {
    REGISTRY
        .try_with(|r| r.try_borrow_mut().ok().map(|mut r| f(&mut r)))
        .ok()
        .flatten()
}

/// Installs the module-level dispatchers for this JS thread, once: returns the `wire` of the
/// first call (later calls install nothing). `direct_read`: the runtime's event loop may watch
/// sockets, so quiet uncompressed connections are read on this thread (see `reader`); `node_loop`:
/// the event loop is Node's, whose turns can be counted (`next_batch`).
/// `main_thread`: this JS thread's environment lasts as long as the process, so large messages
/// may be external Buffers (`napi_raw::allow_external_buffers`).
pub fn init(
    env: &Env,
    dispatch: Function<'_, DispatchArgs, ()>,
    dispatch_now: Function<'_, RawValue, ()>,
    direct_read: bool,
    node_loop: bool,
    main_thread: bool,
    wire: Object<'_>,
) -> Result<RawValue> {
    if with_registry(|r| r.wire.is_some()).unwrap_or(false) {
        return first_wire(env);
    }
    napi_raw::allow_external_buffers(main_thread);
    with_registry(|r| r.counts_turns = node_loop);
    // Kept once everything below is installed: an `init` that failed is tried again by the next.
    let wire_ref = OwnerRef::new(env, &wire)?;
    if direct_read && napi_raw::SocketWatch::available() {
        let target = Rc::new(CallbackTarget::new(env, &dispatch_now)?);
        napi_raw::on_teardown(env, direct::release_all)?;
        with_registry(|r| r.dispatch_now = Some(target));
        reader::enable(true);
    }
    let array_of = Rc::new(ArrayOf::new(env)?);
    with_registry(|r| r.array_of = Some(array_of));
    let hub = Arc::new(Hub::new());
    let weak: Weak<Hub> = Arc::downgrade(&hub);
    let tsfn = dispatch
        .build_threadsafe_function::<()>()
        .weak::<true>()
        .callee_handled::<false>()
        .build_callback(move |ctx: ThreadsafeCallContext<()>| match weak.upgrade() {
            Some(hub) => dispatch_args(&ctx.env, next_batch(&ctx.env, &hub)?),
            None => dispatch_args(&ctx.env, Vec::new()),
        })?;
    let _ = hub.tsfn.set(tsfn);
    // At the environment's teardown (a worker's end, the process's exit) every driver of this
    // thread is stopped here: Node also runs the finalizers then, whose `Drop` does the same, but
    // not every runtime does (Deno runs a worker's cleanup hooks and not its finalizers).
    env.add_env_cleanup_hook((), |_| {
        with_registry(|r| {
            r.shutting_down = true;
            for entry in r.clients.values_mut() {
                if let Some(driver) = entry.driver.take() {
                    driver.abort();
                }
                // The send path's half of the socket, which the client's state would keep.
                entry.shared.outbox().close_connection();
            }
        });
    })?;
    wire_ref.set_strong(env, true)?;
    with_registry(|r| {
        r.hub = Some(hub);
        r.wire = Some(Rc::new(wire_ref));
    });
    first_wire(env)
}

/// The `wire` of this thread's first `init`.
fn first_wire(env: &Env) -> Result<RawValue> {
    let first = with_registry(|r| r.wire.clone()).flatten();
    match first.map(|w| w.get(env)).transpose()?.flatten() {
        Some(wire) => Ok(wire.into()),
        None => Err(Error::from_reason("redial-ws: the dispatcher is not installed")),
    }
}

/// How a client's attempts ask its JS functions (`lookup`, `checkServerIdentity`): an event to its JS side.
pub fn js_asker(hub: Arc<Hub>, shared: Arc<Shared>) -> ask::Asker {
    ask::Asker(Arc::new(move |request, question| {
        let event = match question {
            ask::Question::Lookup { host, family } => JsEvent::Lookup { request, host, family },
            ask::Question::Identity { host, chain } => JsEvent::Identity { request, host, chain },
        };
        shared.read_gate.events_queued(1);
        hub.push_one(shared.id, event);
    }))
}

pub fn shutting_down() -> bool {
    with_registry(|r| r.shutting_down).unwrap_or(true)
}

pub fn hub() -> Option<Arc<Hub>> {
    with_registry(|r| r.hub.clone()).flatten()
}

pub fn register(env: &Env, id: u64, owner: &Object<'_>, shared: Arc<Shared>) -> Result<()> {
    let reference = OwnerRef::new(env, owner)?;
    with_registry(|r| {
        r.clients.insert(
            id,
            Entry {
                owner: reference,
                strong: false,
                conn: false,
                disconnecting: false,
                disconnects: 0,
                holds: 0,
                undelivered: None,
                shared,
                active: false,
                refd: true,
                gen: 0,
                driver: None,
            },
        );
    });
    Ok(())
}

/// The task of the client's latest driver, for the environment's teardown.
pub fn set_driver(id: u64, driver: tokio::task::AbortHandle) {
    with_registry(|r| {
        if let Some(e) = r.clients.get_mut(&id) {
            e.driver = Some(driver);
        }
    });
}

/// Removes a finalized client. One that was still active (collected without `disconnect()`)
/// leaves `warning()` for JS, unless the environment is being torn down; the loop stays held
/// until JS takes it if the client held it (else a process with nothing more to do would end
/// without it). Returns whether the client was still active.
pub fn unregister(env: &Env, id: u64, warning: impl FnOnce() -> JsEvent) -> bool {
    with_registry(|r| {
        let Some(mut e) = r.clients.remove(&id) else {
            return false;
        };
        let was_active = e.active;
        let refd = e.refd;
        direct::release(id);
        let hub = r.hub.clone().filter(|_| was_active && !r.shutting_down);
        if hub.is_some() && refd {
            // The client's hold passes to its warning.
            r.warning_holds += 1;
        } else {
            set_holding(r, env, &mut e, false, refd);
        }
        // A failure leaves a reference to a finalized object: nothing to undo.
        let _ = e.owner.delete(env);
        if let Some(hub) = hub {
            hub.push_one(0, warning());
        }
        was_active
    })
    .unwrap_or(false)
}

/// Marks a client active with a new driver generation (on `connect()`), and
/// takes the strong reference a starting connection implies.
pub fn activate(env: &Env, id: u64) -> u32 {
    with_registry(|r| {
        let Some(mut e) = r.clients.remove(&id) else { return 0 };
        e.gen = e.gen.wrapping_add(1);
        let gen = e.gen;
        let refd = e.refd;
        set_holding(r, env, &mut e, true, refd);
        set_conn(env, &mut e, true);
        r.clients.insert(id, e);
        gen
    })
    .unwrap_or(0)
}

/// Makes the client's reference strong: a connection is starting on an already
/// active client (`connect()` during backoff, `reconnect()`).
pub fn hold_strong(env: &Env, id: u64) {
    with_registry(|r| {
        if let Some(e) = r.clients.get_mut(&id) {
            set_conn(env, e, true);
        }
    });
}

/// A `disconnect()` is pending: the client stays reachable until it settles
/// (`DisconnectDone` or the driver's `Idle`), so that its promise resolves. Returns the call's
/// number, which its command carries.
pub fn hold_until_disconnected(env: &Env, id: u64) -> u32 {
    with_registry(|r| {
        let e = r.clients.get_mut(&id)?;
        e.disconnecting = true;
        // Never 0, which JS reads as "nothing to disconnect".
        e.disconnects = e.disconnects.wrapping_add(1).max(1);
        set_conn(env, e, e.conn);
        Some(e.disconnects)
    })
    .flatten()
    .unwrap_or(1)
}

/// Disconnect call `seq` reached a driver that was exiting (its command queue was closed): that
/// driver's exit report settles it, whatever started since (a `connect()` that followed). The
/// queue it discarded (`discarded` messages) is counted there.
pub fn disconnect_undelivered(id: u64, seq: u32, discarded: u32) {
    with_registry(|r| {
        if let Some(e) = r.clients.get_mut(&id) {
            let before = e.undelivered.filter(|u| u.0 == e.gen).map_or(0, |u| u.2);
            e.undelivered = Some((e.gen, seq, before + discarded));
        }
    });
}

pub fn is_active(id: u64) -> bool {
    with_registry(|r| r.clients.get(&id).is_some_and(|e| e.active)).unwrap_or(false)
}

pub fn generation(id: u64) -> u32 {
    with_registry(|r| r.clients.get(&id).map_or(0, |e| e.gen)).unwrap_or(0)
}

pub fn set_ref(env: &Env, id: u64, refd: bool) {
    with_registry(|r| {
        if let Some(mut e) = r.clients.remove(&id) {
            let active = e.active;
            set_holding(r, env, &mut e, active, refd);
            r.clients.insert(id, e);
        }
    });
}

fn set_conn(env: &Env, e: &mut Entry, conn: bool) {
    e.conn = conn;
    set_strong(env, e, reachable(e));
}

/// Whether the client must stay reachable: a connection exists, a `disconnect()` is to settle, or
/// JS waits on a running client (a pending `messages()` read or `opened()`; one that is not running,
/// never connected or ended, is kept by the application's references only).
fn reachable(e: &Entry) -> bool {
    e.conn || e.disconnecting || (e.holds > 0 && e.active)
}

/// A JS-side use of the client (`messages()` waiting for a message) starts or ends.
pub fn hold(env: &Env, id: u64, on: bool) {
    with_registry(|r| {
        if let Some(e) = r.clients.get_mut(&id) {
            e.holds = if on { e.holds + 1 } else { e.holds.saturating_sub(1) };
            set_strong(env, e, reachable(e));
        }
    });
}

fn set_strong(env: &Env, e: &mut Entry, strong: bool) {
    if e.strong == strong {
        return;
    }
    // On failure the reference keeps its strength, and `strong` says so.
    if e.owner.set_strong(env, strong).is_ok() {
        e.strong = strong;
    }
}

/// Updates `active`/`refd` and refs or unrefs the thread-safe function when the
/// number of clients holding the loop crosses zero.
fn set_holding(r: &mut Registry, env: &Env, e: &mut Entry, active: bool, refd: bool) {
    let before = e.active && e.refd;
    e.active = active;
    e.refd = refd;
    set_strong(env, e, reachable(e));
    let after = active && refd;
    if before != after {
        add_hold(r, env, after);
    }
}

/// Takes (`on`) or releases one hold of the loop; the function is ref'd while any is taken.
fn add_hold(r: &mut Registry, env: &Env, on: bool) {
    let hub = r.hub.clone();
    let tsfn = hub.as_ref().and_then(|h| h.tsfn.get());
    if on {
        r.holding += 1;
    } else {
        r.holding -= 1;
    }
    if r.holding == usize::from(on) && !r.shutting_down {
        if let Some(t) = tsfn {
            // Fails only for a function Node released, whose hold no longer matters.
            let _ = napi_raw::set_tsfn_ref(env, t, on);
        }
    }
}

/// JS has dispatched a batch: credit the read gates. True when no event waits (the doorbell is
/// re-armed: the next event rings it); false when one does, which JS takes with `ack` after a turn
/// of its event loop. Usually none waits, and JS then asks for no turn.
pub fn done() -> bool {
    let credits = with_registry(|r| std::mem::take(&mut r.credits)).unwrap_or_default();
    settle(credits);
    hub().is_none_or(|hub| hub.rearm_if_idle())
}

/// The batch `done` found waiting, taken after a turn of the event loop: hands it back, or an
/// empty array when there is none (the doorbell is then re-armed). Credits still unsettled, if
/// any, are settled first.
pub fn ack(env: &Env) -> Result<RawValue> {
    let credits = with_registry(|r| std::mem::take(&mut r.credits)).unwrap_or_default();
    settle(credits);
    let values = match hub() {
        Some(hub) => next_batch(env, &hub)?,
        None => Vec::new(),
    };
    batch_array(env, &values).map(RawValue::from)
}

/// The dispatcher's arguments for `values`: a lone event's three values as they are (making an
/// array for them is a call into JS of its own; a connect/disconnect cycle delivers three lone
/// events), or the batch's array.
fn dispatch_args(env: &Env, values: Vec<Value>) -> Result<DispatchArgs> {
    Ok(FnArgs::from(match *values.as_slice() {
        [client, tag, payload] => (client.into(), tag.into(), payload.into()),
        _ => {
            let none = napi_raw::undefined(env)?;
            (batch_array(env, &values)?.into(), none.into(), none.into())
        }
    }))
}

/// The values of the next non-empty batch for JS, or none: the doorbell is then re-armed, unless
/// this turn of the event loop has had its batch (`direct::batch_allowance`): the events wait for
/// JS to ask again (`deliveryDone` says they do) in a later turn, so that timers and I/O run
/// between two batches. (Runtimes without libuv's loop count are not held to turns.)
fn next_batch(env: &Env, hub: &Hub) -> Result<Vec<Value>> {
    let turn = with_registry(|r| r.counts_turns)
        .unwrap_or(false)
        .then(|| napi_raw::current_turn(env))
        .flatten();
    let most = match turn {
        Some(turn) => match direct::batch_allowance(turn) {
            Some(most) => most,
            None => return Ok(Vec::new()),
        },
        None => (usize::MAX, usize::MAX),
    };
    loop {
        let events = hub.take(most);
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let values = build_batch(env, events)?;
        if !values.is_empty() {
            return Ok(values);
        }
        // Nothing in it was for a live client: JS will not acknowledge it.
        let credits = with_registry(|r| std::mem::take(&mut r.credits)).unwrap_or_default();
        settle(credits);
    }
}

/// Client `id` is disconnecting: its driver reads the close handshake itself, woken by the
/// command that starts it. Left to the JS thread, the peer's close would wake the worker once more
/// (the hand-back) before the connection could end.
pub fn read_close_on_driver(id: u64) {
    direct::give_back(id);
}

/// The JS thread's watch found client `id`'s socket readable: read what it holds (one batch at
/// most), run its listeners now, and give the socket back to the driver when the read says so.
fn on_readable(env: &Env, id: u64, ready: Ready) {
    if !ready.failed && testing::read_panics(id) {
        panic!("testing: a read on the JS thread panics");
    }
    if ready.panicked {
        direct::fail(id);
        return;
    }
    if ready.failed {
        // A reset: the watch is stopped, and a read here could stop at data the reset follows
        // (a short read ends the JS thread's turn) and leave the error unread. The driver reads
        // the rest, then the error, and ends the connection.
        direct::give_back(id);
        return;
    }
    let turn = ready.turn;
    if !direct::may_read(turn) {
        direct::wait_for_next_turn(env, id, on_readable);
        return;
    }
    let started = Instant::now();
    let Some(reader) = direct::reader(id) else { return };
    let Some((shared, target)) =
        with_registry(|r| Some((r.clients.get(&id)?.shared.clone(), r.dispatch_now.clone()?))).flatten()
    else {
        direct::release(id);
        reader.give_back();
        return;
    };
    let mut read = Vec::new();
    let outcome = reader.read_for_js(&shared, reader::TURN_MESSAGES, reader::TURN_BYTES, |m| match m {
        Incoming::Text(t) => JsEvent::push_text(&mut read, t),
        Incoming::Binary(b) => JsEvent::push_binary(&mut read, b),
        _ => {}
    });
    let messages = read.iter().map(JsEvent::messages).sum();
    let bytes = read.iter().map(JsEvent::payload_len).sum();
    let events: Vec<(u64, JsEvent)> = read.into_iter().map(|e| (id, e)).collect();
    if !events.is_empty() {
        // These never counted against the read gate (they are delivered before the read returns),
        // so the credits the batch makes are not the acknowledgement's to settle.
        let pending = with_registry(|r| std::mem::take(&mut r.credits)).unwrap_or_default();
        let values = build_batch(env, events);
        with_registry(|r| r.credits = pending);
        // A failure here is the environment going away: nobody is left to deliver to.
        let _ = values.and_then(|values| match values.as_slice() {
            // A lone event (a quiet connection's message: the echo's round trip) goes as the
            // call's three arguments; making an array for it is a second call into JS.
            [_, _, _] => target.call(env, &values),
            [] => Ok(()),
            _ => target.call(env, &[batch_array(env, &values)?]),
        });
    }
    match outcome {
        JsRead::Continue => {}
        JsRead::GiveBack => {
            direct::release(id);
            reader.give_back();
        }
        JsRead::Ended => direct::release(id),
    }
    direct::spent(messages, bytes, started.elapsed());
}

/// An event (or a run of one client's texts) whose effects on the registry are applied, and
/// whose JS values are still to be made.
enum Staged {
    Texts(Vec<JsEvent>),
    Event(JsEvent),
}

/// Turns queued events into the values of the flat JS batch (`client, tag, payload` for each),
/// applying each event's effect on the registry (strong reference, loop hold) before JS sees it.
/// The values are made once the registry is released: making them can run JS (a replaced
/// `Array.of`, a setter some code put on `Object.prototype`), and that JS may call the addon.
fn build_batch(env: &Env, batch: Vec<(u64, JsEvent)>) -> Result<Vec<Value>> {
    let mut staged: Vec<(Value, Staged)> = Vec::with_capacity(batch.len().min(BATCH_EVENTS));
    let array_of = with_registry(|r| -> Result<Option<Rc<ArrayOf>>> {
        let mut events = batch.into_iter().peekable();
        while let Some((id, mut event)) = events.next() {
            // The hot path: a run of text messages of one client travels as one array of strings.
            if let JsEvent::Text(_) | JsEvent::Texts(_) = event {
                let mut texts = Vec::new();
                take_text_run(id, event, &mut events, &mut texts);
                let Some(e) = r.clients.get_mut(&id) else { continue };
                for t in &texts {
                    credit(&mut r.credits, &e.shared, t);
                }
                let Some(owner) = e.owner.get(env)? else { continue };
                staged.push((owner, Staged::Texts(texts)));
                continue;
            }
            if let JsEvent::ReadIdle { reader, offer } = event {
                let Some(e) = r.clients.get(&id) else { continue };
                // Counted by the read gate as a message of no bytes (`OpenConn::poll_read`).
                credit_event(&mut r.credits, &e.shared, 0, 1);
                // A disconnecting client's driver reads the close (`read_close_on_driver`).
                if !e.disconnecting {
                    direct::take_over(env, id, reader, offer, on_readable);
                }
                continue;
            }
            let owner = if let JsEvent::Warning { .. } = event {
                if r.warning_holds > 0 {
                    r.warning_holds -= 1;
                    add_hold(r, env, false);
                }
                napi_raw::undefined(env)?
            } else {
                let Some(mut e) = r.clients.remove(&id) else { continue };
                credit(&mut r.credits, &e.shared, &event);
                let owner = match e.owner.get(env) {
                    Ok(owner) => owner,
                    Err(err) => {
                        r.clients.insert(id, e);
                        return Err(err);
                    }
                };
                if let JsEvent::Idle { gen, discarded, upto } = &mut event {
                    if let Some((_, seq, dropped)) = e.undelivered.take_if(|u| u.0 == *gen) {
                        *upto = (*upto).max(seq);
                        *discarded += dropped;
                    }
                }
                if owner.is_some() {
                    match &event {
                        JsEvent::Connecting { .. } => set_conn(env, &mut e, true),
                        // The connection is gone; a pending disconnect() still holds the client until it settles.
                        JsEvent::Close { .. } => {
                            direct::release(id);
                            set_conn(env, &mut e, false);
                        }
                        // A later disconnect() still pending keeps the client reachable. The driver
                        // goes on (a connect() came): a connection it started since holds the client.
                        JsEvent::DisconnectDone { upto, .. } if *upto == e.disconnects => {
                            e.disconnecting = false;
                            let conn = e.conn;
                            set_conn(env, &mut e, conn);
                        }
                        JsEvent::Idle { gen, .. } if *gen == e.gen => {
                            e.disconnecting = false;
                            set_conn(env, &mut e, false);
                            let refd = e.refd;
                            set_holding(r, env, &mut e, false, refd);
                        }
                        // A driver that was replaced reports its exit late: it settles the calls it
                        // received (or that came as it exited); the latest one ends the hold.
                        JsEvent::Idle { upto, .. } if *upto == e.disconnects => {
                            e.disconnecting = false;
                            let conn = e.conn;
                            set_conn(env, &mut e, conn);
                        }
                        _ => {}
                    }
                }
                r.clients.insert(id, e);
                let Some(owner) = owner else { continue };
                owner
            };
            staged.push((owner, Staged::Event(event)));
        }
        Ok(r.array_of.clone())
    })
    .unwrap_or(Ok(None))?;
    let mut out = Vec::with_capacity(staged.len() * 3);
    for (owner, staged) in staged {
        out.push(owner);
        match staged {
            Staged::Texts(texts) => {
                if let [JsEvent::Text(one)] = texts.as_slice() {
                    out.push(napi_raw::to_js(env, tag::TEXT)?);
                    out.push(text_value(env, one.as_str())?);
                } else {
                    out.push(napi_raw::to_js(env, tag::TEXT_BATCH)?);
                    out.push(text_run(env, array_of.as_deref(), &texts)?);
                }
            }
            Staged::Event(event) => {
                let (tag, payload) = event_to_js(env, event)?;
                out.push(napi_raw::to_js(env, tag)?);
                out.push(payload);
            }
        }
    }
    Ok(out)
}

/// The batch's values as one JS array.
fn batch_array(env: &Env, values: &[Value]) -> Result<Value> {
    match with_registry(|r| r.array_of.clone()).flatten() {
        Some(of) => of.array(env, values),
        None => napi_raw::array(env, values),
    }
}

/// Puts `first` and the text events (`Text`, `Texts`) of client `id` that directly follow it in `texts`.
fn take_text_run<I: Iterator<Item = (u64, JsEvent)>>(
    id: u64,
    first: JsEvent,
    events: &mut std::iter::Peekable<I>,
    texts: &mut Vec<JsEvent>,
) {
    texts.clear();
    texts.push(first);
    while let Some((_, JsEvent::Text(_) | JsEvent::Texts(_))) = events.peek().filter(|(next, _)| *next == id) {
        if let Some((_, t)) = events.next() {
            texts.push(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::Bytes;

    /// No turn's share: the batch bounds alone.
    const ALL: (usize, usize) = (usize::MAX, usize::MAX);

    fn text(s: &str) -> JsEvent {
        JsEvent::Text(s.into())
    }

    #[test]
    fn a_text_run_is_the_texts_of_one_client_that_follow_each_other() {
        let strings = |texts: &[JsEvent]| -> Vec<String> {
            let mut out = Vec::new();
            for t in texts {
                match t {
                    JsEvent::Text(one) => out.push(one.to_string()),
                    JsEvent::Texts(run) => out.extend(run.iter().map(String::from)),
                    _ => panic!("not a text event"),
                }
            }
            out
        };
        let mut run = Vec::new();
        JsEvent::push_text(&mut run, "c".into());
        JsEvent::push_text(&mut run, "d".into());
        let run = run.pop().expect("a run");
        let queued = vec![(1, text("b")), (1, run), (2, text("x")), (1, text("e"))];
        let mut events = queued.into_iter().peekable();
        let mut texts = vec![text("stale")];
        take_text_run(1, text("a"), &mut events, &mut texts);
        assert_eq!(strings(&texts), ["a", "b", "c", "d"]);
        assert!(matches!(events.next(), Some((2, JsEvent::Text(_)))));

        let queued = vec![(1, JsEvent::Binary(Bytes::new())), (1, text("b"))];
        let mut events = queued.into_iter().peekable();
        take_text_run(1, text("a"), &mut events, &mut texts);
        assert_eq!(strings(&texts), ["a"], "another kind of event ends the run");
        assert!(matches!(events.next(), Some((1, JsEvent::Binary(_)))));
    }

    #[test]
    fn a_batch_is_bounded_in_events() {
        let hub = Hub::new();
        let mut events: Vec<JsEvent> = (0..BATCH_EVENTS + 10).map(|_| text("m")).collect();
        hub.push(1, &mut events);
        assert!(events.is_empty(), "the driver's buffer is drained");
        assert!(hub.scheduled.load(Ordering::Acquire), "the doorbell rang");
        assert_eq!(hub.take(ALL).len(), BATCH_EVENTS);
        assert_eq!(hub.take(ALL).len(), 10);
        assert!(hub.scheduled.load(Ordering::Acquire), "still dispatching");
        assert!(hub.take(ALL).is_empty());
        assert!(!hub.scheduled.load(Ordering::Acquire), "re-armed once nothing is left");
    }

    /// The room of a burst goes back once it is delivered, down to what a stream uses; a queue
    /// that never held more keeps its room.
    #[test]
    fn a_burst_gives_its_room_back_once_delivered() {
        let hub = Hub::new();
        let capacity = |hub: &Hub| hub.queue.lock().unwrap().capacity();
        let mut events: Vec<JsEvent> = (0..20_000).map(|_| JsEvent::Connecting { attempt: 1 }).collect();
        hub.push(1, &mut events);
        assert!(capacity(&hub) >= 20_000);
        while !hub.take(ALL).is_empty() {}
        assert!(capacity(&hub) <= KEPT_ENTRIES, "{} entries kept", capacity(&hub));
        let mut stream: Vec<JsEvent> = (0..300).map(|_| text("m")).collect();
        hub.push(1, &mut stream);
        let room = capacity(&hub);
        while !hub.take(ALL).is_empty() {}
        assert_eq!(capacity(&hub), room, "a stream's room stays");
    }

    #[test]
    fn a_run_of_texts_counts_for_its_messages_in_the_batch_bound() {
        let hub = Hub::new();
        let mut events = Vec::new();
        for _ in 0..BATCH_EVENTS + 10 {
            JsEvent::push_text(&mut events, "m".into());
        }
        let runs = events.len();
        assert!(runs < BATCH_EVENTS / 100, "small texts travel in runs ({runs} events)");
        hub.push(1, &mut events);
        let messages = |batch: &[(u64, JsEvent)]| batch.iter().map(|(_, e)| e.messages()).sum::<usize>();
        let first = hub.take(ALL);
        assert_eq!(
            messages(&first),
            BATCH_EVENTS,
            "runs are whole and fill the bound exactly here"
        );
        assert_eq!(messages(&hub.take(ALL)), 10);
        assert!(hub.take(ALL).is_empty());
    }

    #[test]
    fn a_batch_is_bounded_in_payload_bytes_and_keeps_the_order() {
        let hub = Hub::new();
        let big = || JsEvent::Binary(Bytes::from(vec![0; BATCH_BYTES / 2 + 1]));
        let mut events = vec![big(), JsEvent::Connecting { attempt: 1 }, big(), big(), text("t")];
        hub.push(7, &mut events);
        hub.push_one(
            8,
            JsEvent::Idle {
                gen: 1,
                discarded: 0,
                upto: 0,
            },
        );
        // Events are taken while the payload so far is under the bound: the one that crosses it
        // is the last of its batch.
        let first = hub.take(ALL);
        assert_eq!(first.len(), 3);
        assert!(matches!(first[1], (7, JsEvent::Connecting { attempt: 1 })));
        let second = hub.take(ALL);
        assert_eq!(second.len(), 3);
        assert!(matches!(second[1], (7, JsEvent::Text(_))));
        assert!(matches!(second[2], (8, JsEvent::Idle { gen: 1, .. })));
        assert!(hub.take(ALL).is_empty());
    }

    #[test]
    fn credits_add_up_per_client_run_and_count_only_what_was_read() {
        let (a, b) = (Arc::new(Shared::new(1, false)), Arc::new(Shared::new(2, false)));
        a.read_gate.events_queued(5);
        b.read_gate.events_queued(1);
        let mut credits = Credits::new();
        credit(&mut credits, &a, &text("abc"));
        credit(&mut credits, &a, &JsEvent::Ping(Bytes::from_static(b"p")));
        credit(&mut credits, &a, &JsEvent::Connecting { attempt: 1 });
        credit(&mut credits, &b, &JsEvent::Binary(Bytes::from_static(b"xy")));
        credit(&mut credits, &a, &JsEvent::Pong(Bytes::new()));
        let mut run = Vec::new();
        for t in ["xy", "z"] {
            JsEvent::push_text(&mut run, t.into());
        }
        credit(&mut credits, &a, &run[0]);
        let got: Vec<(u64, usize, usize, usize)> = credits
            .iter()
            .map(|c| (c.shared.id, c.bytes, c.messages, c.events))
            .collect();
        assert_eq!(got, [(1, 4, 2, 3), (2, 2, 1, 1), (1, 3, 3, 2)]);
        // What the connections admitted when they read those events, given back on settling.
        for (shared, len) in [(&a, 3), (&a, 1), (&b, 2), (&a, 0), (&a, 2), (&a, 1)] {
            shared.read_gate.admit(len);
        }
        settle(credits);
        assert!(!a.read_gate.has_inflight() && !b.read_gate.has_inflight());
    }
}
