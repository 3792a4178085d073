//! Event delivery from the tokio side to JavaScript, and the JS-thread registry
//! that decides what keeps a client (and the event loop) alive.
//!
//! Delivery is a "doorbell": drivers append events to one shared queue and ring
//! a single thread-safe function only when no batch is on its way to JS. The JS
//! thread takes a bounded batch per call (at most `BATCH_EVENTS` events and
//! about `BATCH_BYTES` of payload), dispatches it, and acknowledges it from a
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use napi::bindgen_prelude::*;

use crate::napi_raw::{self, Obj, OwnerRef, RawValue, Tsfn, Value};
use napi::threadsafe_function::{ThreadsafeCallContext, ThreadsafeFunctionCallMode};
use tungstenite::{Bytes, Utf8Bytes};

use crate::driver::Shared;
use crate::errors::ConnError;

/// An event for one client, in the order the driver produced it.
pub enum JsEvent {
    Connecting {
        attempt: u32,
    },
    Open {
        protocol: Option<String>,
    },
    Text(Utf8Bytes),
    Binary(Bytes),
    Error(ConnError),
    Close {
        code: u16,
        reason: String,
        was_clean: bool,
        will_reconnect: bool,
    },
    Reconnecting {
        attempt: u32,
        delay_ms: u64,
    },
    GiveUp {
        attempts: u32,
        reason: &'static str,
        last_error: Option<ConnError>,
    },
    Ping(Bytes),
    Pong(Bytes),
    /// Run the user's url/headers/protocols providers for this attempt; answer with `provide(id, ...)`.
    Provide {
        id: u64,
        attempt: u32,
    },
    /// Ask the user's `shouldReconnect`; answer with `decide(id, verdict)`.
    Decide {
        id: u64,
        attempt: u32,
        info: PolicyInfo,
        default: bool,
    },
    /// A `disconnect()` completed; `discarded` queued messages were dropped (reported, not silent).
    DisconnectDone {
        discarded: u32,
    },
    /// The driver of generation `gen` has exited; a disconnect that finished it discarded `discarded` queued messages.
    Idle {
        gen: u32,
        discarded: u32,
    },
    /// A process warning not tied to a live client.
    Warning {
        code: &'static str,
        message: String,
    },
}

/// What `shouldReconnect(info)` receives.
pub enum PolicyInfo {
    Close {
        code: u16,
        reason: String,
    },
    Handshake {
        status: u16,
        headers: Vec<(String, String)>,
    },
    Error {
        code: &'static str,
    },
}

impl PolicyInfo {
    pub fn from_error(e: &ConnError) -> Self {
        match e.status {
            Some(status) => PolicyInfo::Handshake {
                status,
                headers: e.headers.clone(),
            },
            None => PolicyInfo::Error { code: e.code },
        }
    }
}

// Type tags of the flat batch `[client, tag, payload, client, tag, payload, ...]`;
// mirrored in `lib/client.js` (1 was the single text message, now always a run).
const T_OPEN: u32 = 0;
const T_BINARY: u32 = 2;
const T_ERROR: u32 = 3;
const T_CLOSE: u32 = 4;
const T_RECONNECTING: u32 = 5;
const T_GIVEUP: u32 = 6;
const T_IDLE: u32 = 7;
const T_CONNECTING: u32 = 8;
const T_DISCONNECTED: u32 = 9;
const T_WARNING: u32 = 10;
const T_PING: u32 = 11;
const T_PONG: u32 = 12;
const T_PROVIDE: u32 = 13;
const T_DECIDE: u32 = 14;
const T_TEXT_BATCH: u32 = 15;

/// At most this many events go to JS in one batch...
const BATCH_EVENTS: usize = 4096;
/// ...and payload bytes beyond this start the next batch: a listener that takes 0.5 ms per
/// 64 KiB message then holds the event loop for about 8 ms per batch.
const BATCH_BYTES: usize = 1 << 20;

pub struct Hub {
    queue: Mutex<VecDeque<(u64, JsEvent)>>,
    /// A batch has been requested or is being dispatched: drivers only append, and the JS
    /// thread's acknowledgement takes what they appended.
    scheduled: AtomicBool,
    tsfn: OnceLock<Tsfn>,
}

impl Hub {
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

    pub fn push_one(&self, client: u64, event: JsEvent) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((client, event));
        self.ring();
    }

    fn ring(&self) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            if let Some(tsfn) = self.tsfn.get() {
                // One call at a time: never `QueueFull`. After env teardown the call is refused; nothing to do then.
                let _ = tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking);
            }
        }
    }

    /// The next batch: the oldest events, bounded in count and payload bytes. When none is
    /// left, the doorbell is re-armed (an event appended meanwhile is taken, not lost).
    fn take(&self) -> Vec<(u64, JsEvent)> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.is_empty() {
            // Under the lock: a driver appends under it too, then finds the flag clear and rings.
            self.scheduled.store(false, Ordering::Release);
            return Vec::new();
        }
        let mut bytes = 0;
        let mut n = 0;
        for (_, e) in q.iter() {
            if n == BATCH_EVENTS || bytes >= BATCH_BYTES {
                break;
            }
            bytes += e.payload_len();
            n += 1;
        }
        q.drain(..n).collect()
    }
}

impl JsEvent {
    /// Bytes this event counts for in the read bound (see `ReadGate`), if it counts.
    fn payload_len(&self) -> usize {
        match self {
            JsEvent::Text(t) => t.len(),
            JsEvent::Binary(b) | JsEvent::Ping(b) | JsEvent::Pong(b) => b.len(),
            _ => 0,
        }
    }

    fn is_read(&self) -> bool {
        matches!(
            self,
            JsEvent::Text(_) | JsEvent::Binary(_) | JsEvent::Ping(_) | JsEvent::Pong(_)
        )
    }
}

/// What the batch JS is dispatching read from each client (bytes, messages): credited to the
/// clients' read gates when JS acknowledges the batch.
type Credits = Vec<(Arc<Shared>, usize, usize)>;

fn credit(credits: &mut Credits, shared: &Arc<Shared>, event: &JsEvent) {
    if !event.is_read() {
        return;
    }
    let len = event.payload_len();
    match credits.last_mut() {
        Some((s, bytes, count)) if Arc::ptr_eq(s, shared) => {
            *bytes += len;
            *count += 1;
        }
        _ => credits.push((shared.clone(), len, 1)),
    }
}

fn settle(credits: Credits) {
    for (shared, bytes, count) in credits {
        shared.read_gate.delivered(bytes, count);
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
    /// JS-side uses that keep the client alive without a connection (a pending `messages()` read).
    holds: u32,
    /// Its read gate is told when messages reach JS (the in-flight bound of the socket's reading).
    shared: Arc<Shared>,
    /// A driver is running (connecting, open, closing or waiting to reconnect).
    active: bool,
    refd: bool,
    gen: u32,
}

#[derive(Default)]
struct Registry {
    hub: Option<Arc<Hub>>,
    /// The batch JS is dispatching: credited to read gates on acknowledgement.
    credits: Credits,
    clients: HashMap<u64, Entry>,
    /// Number of clients that are active and ref'd: the loop is held while > 0.
    holding: usize,
    /// The environment is being torn down: finalizers are process exit, not garbage collection.
    shutting_down: bool,
}

thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
}

fn with_registry<R>(f: impl FnOnce(&mut Registry) -> R) -> Option<R> {
    REGISTRY.try_with(|r| f(&mut r.borrow_mut())).ok()
}

/// Installs the module-level dispatcher for this JS thread.
pub fn init(env: &Env, dispatch: Function<'_, RawValue, ()>) -> Result<()> {
    let hub = Arc::new(Hub {
        queue: Mutex::new(VecDeque::new()),
        scheduled: AtomicBool::new(false),
        tsfn: OnceLock::new(),
    });
    let weak: Weak<Hub> = Arc::downgrade(&hub);
    let tsfn = dispatch
        .build_threadsafe_function::<()>()
        .weak::<true>()
        .callee_handled::<false>()
        .build_callback(move |ctx: ThreadsafeCallContext<()>| match weak.upgrade() {
            Some(hub) => next_batch(&ctx.env, &hub),
            None => empty_array(&ctx.env),
        })?;
    let _ = hub.tsfn.set(tsfn);
    env.add_env_cleanup_hook((), |_| {
        with_registry(|r| r.shutting_down = true);
    })?;
    with_registry(|r| -> Result<()> {
        if let Some(old) = r.hub.replace(hub) {
            // Re-initialised (module loaded twice): keep the loop state of the new one consistent.
            if r.holding > 0 {
                if let Some(t) = old.tsfn.get() {
                    napi_raw::set_tsfn_ref(env, t, false)?;
                }
                if let Some(t) = r.hub.as_ref().and_then(|h| h.tsfn.get()) {
                    napi_raw::set_tsfn_ref(env, t, true)?;
                }
            }
        }
        Ok(())
    })
    .unwrap_or(Ok(()))
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
                holds: 0,
                shared,
                active: false,
                refd: true,
                gen: 0,
            },
        );
    });
    Ok(())
}

/// Removes a finalized client. Returns whether it was still active.
pub fn unregister(env: &Env, id: u64) -> bool {
    with_registry(|r| {
        let Some(mut e) = r.clients.remove(&id) else {
            return false;
        };
        let was_active = e.active;
        let refd = e.refd;
        set_holding(r, env, &mut e, false, refd);
        // A failure leaves a reference to a finalized object: nothing to undo.
        let _ = e.owner.delete(env);
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
/// (`DisconnectDone` or the driver's `Idle`), so that its promise resolves.
pub fn hold_until_disconnected(env: &Env, id: u64) {
    with_registry(|r| {
        if let Some(e) = r.clients.get_mut(&id) {
            e.disconnecting = true;
            set_conn(env, e, e.conn);
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
    set_strong(env, e, e.conn || e.disconnecting || e.holds > 0);
}

/// A JS-side use of the client (`messages()` waiting for a message) starts or ends.
pub fn hold(env: &Env, id: u64, on: bool) {
    with_registry(|r| {
        if let Some(e) = r.clients.get_mut(&id) {
            e.holds = if on { e.holds + 1 } else { e.holds.saturating_sub(1) };
            set_strong(env, e, e.conn || e.disconnecting || e.holds > 0);
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
    let after = active && refd;
    if before == after {
        return;
    }
    let hub = r.hub.clone();
    let tsfn = hub.as_ref().and_then(|h| h.tsfn.get());
    if after {
        r.holding += 1;
    } else {
        r.holding -= 1;
    }
    if r.holding == usize::from(after) {
        if let Some(t) = tsfn {
            // Fails only for a released function (environment teardown), whose hold no longer matters.
            let _ = napi_raw::set_tsfn_ref(env, t, after);
        }
    }
}

/// JS has dispatched the last batch (called from a `setImmediate` after it): credit the read
/// gates, and hand back the next batch, or an empty array when there is none.
pub fn ack(env: &Env) -> Result<RawValue> {
    let credits = with_registry(|r| std::mem::take(&mut r.credits)).unwrap_or_default();
    settle(credits);
    match hub() {
        Some(hub) => next_batch(env, &hub),
        None => empty_array(env),
    }
}

/// The next non-empty batch for JS, or an empty array (the doorbell is then re-armed).
fn next_batch(env: &Env, hub: &Hub) -> Result<RawValue> {
    loop {
        let events = hub.take();
        if events.is_empty() {
            return empty_array(env);
        }
        let batch = build_batch(env, events)?;
        if napi_raw::array_len(env, batch)? > 0 {
            return Ok(batch.into());
        }
        // Nothing in it was for a live client: JS will not acknowledge it.
        let credits = with_registry(|r| std::mem::take(&mut r.credits)).unwrap_or_default();
        settle(credits);
    }
}

fn empty_array(env: &Env) -> Result<RawValue> {
    napi_raw::array(env, Vec::new()).map(RawValue::from)
}

/// Turns queued events into the flat JS batch, applying each event's effect on
/// the registry (strong reference, loop hold) before JS sees it.
fn build_batch(env: &Env, batch: Vec<(u64, JsEvent)>) -> Result<Value> {
    let mut out = Vec::with_capacity(batch.len().min(4096) * 3);
    let mut texts: Vec<Utf8Bytes> = Vec::new();
    with_registry(|r| -> Result<()> {
        let mut events = batch.into_iter().peekable();
        while let Some((id, event)) = events.next() {
            // The hot path: a run of text messages of one client travels as one external buffer.
            if let JsEvent::Text(first) = event {
                texts.clear();
                texts.push(first);
                while let Some((_, JsEvent::Text(_))) = events.peek().filter(|(next, _)| *next == id) {
                    if let Some((_, JsEvent::Text(t))) = events.next() {
                        texts.push(t);
                    }
                }
                let Some(e) = r.clients.get_mut(&id) else { continue };
                let bytes: usize = texts.iter().map(|t| t.len()).sum();
                match r.credits.last_mut() {
                    Some((s, b, c)) if Arc::ptr_eq(s, &e.shared) => {
                        *b += bytes;
                        *c += texts.len();
                    }
                    _ => r.credits.push((e.shared.clone(), bytes, texts.len())),
                }
                let Some(owner) = e.owner.get(env)? else { continue };
                out.push(owner);
                out.push(napi_raw::to_js(env, T_TEXT_BATCH)?);
                out.push(text_batch(env, &texts)?);
                continue;
            }
            let owner = if let JsEvent::Warning { .. } = event {
                None
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
                let keep = owner.is_some()
                    && match &event {
                        JsEvent::Connecting { .. } => {
                            set_conn(env, &mut e, true);
                            true
                        }
                        // The connection is gone; a pending disconnect() still holds the client until it settles.
                        JsEvent::Close { .. } => {
                            set_conn(env, &mut e, false);
                            true
                        }
                        JsEvent::DisconnectDone { .. } => {
                            e.disconnecting = false;
                            set_conn(env, &mut e, false);
                            true
                        }
                        JsEvent::Idle { gen, .. } if *gen == e.gen => {
                            e.disconnecting = false;
                            set_conn(env, &mut e, false);
                            let refd = e.refd;
                            set_holding(r, env, &mut e, false, refd);
                            true
                        }
                        // A driver that was replaced reports its exit late: JS only settles a pending disconnect with it.
                        JsEvent::Idle { .. } => true,
                        _ => true,
                    };
                r.clients.insert(id, e);
                if !keep {
                    continue;
                }
                owner
            };
            let (tag, payload) = event_to_js(env, event)?;
            out.push(match owner {
                Some(owner) => owner,
                None => napi_raw::undefined(env)?,
            });
            out.push(napi_raw::to_js(env, tag)?);
            out.push(payload);
        }
        Ok(())
    })
    .unwrap_or(Ok(()))?;
    napi_raw::array(env, out)
}

/// Binary messages from this size on are handed to JS without a copy.
const ZERO_COPY_FROM: usize = 16 * 1024;

/// A run of text messages as one external buffer: `[count: u32][end offset: u32; count][utf-8 bytes]`.
/// JS makes each string straight from it: the strings are the one copy into JS memory. A batch
/// holds about `BATCH_BYTES` and a text message is at most V8's string length, so offsets fit.
fn text_batch(env: &Env, texts: &[Utf8Bytes]) -> Result<Value> {
    let head = 4 * (texts.len() + 1);
    let total = head + texts.iter().map(|t| t.len()).sum::<usize>();
    let offset = |n: usize| u32::try_from(n).map_err(|_| Error::new(Status::GenericFailure, "text batch over 4 GiB"));
    let mut buf = Vec::with_capacity(total);
    buf.extend_from_slice(&offset(texts.len())?.to_le_bytes());
    let mut end = head;
    for t in texts {
        end += t.len();
        buf.extend_from_slice(&offset(end)?.to_le_bytes());
    }
    for t in texts {
        buf.extend_from_slice(t.as_bytes());
    }
    napi_raw::external_buffer(env, buf)
}

fn error_obj(env: &Env, e: &ConnError) -> Result<Value> {
    let mut o = Obj::new(env)?;
    o.set(c"code", e.code)?;
    o.set(c"message", e.message.as_str())?;
    if let Some(status) = e.status {
        o.set(c"status", u32::from(status))?;
    }
    Ok(o.value)
}

fn event_to_js(env: &Env, event: JsEvent) -> Result<(u32, Value)> {
    let raw = env;
    Ok(match event {
        // `build_batch` sends text runs itself; a lone one takes the same path.
        JsEvent::Text(t) => (T_TEXT_BATCH, text_batch(raw, &[t])?),
        JsEvent::Binary(b) if b.len() >= ZERO_COPY_FROM => (T_BINARY, napi_raw::external_buffer(raw, b)?),
        JsEvent::Binary(b) => (T_BINARY, napi_raw::buffer_copy(raw, &b)?),
        JsEvent::Connecting { attempt } => (T_CONNECTING, napi_raw::to_js(raw, attempt)?),
        // Payloads of the events every connection has are plain values where one will do: a
        // fleet connecting or churning makes no garbage object per event.
        JsEvent::Open { protocol } => (T_OPEN, napi_raw::to_js(raw, protocol.unwrap_or_default())?),
        JsEvent::Error(e) => (T_ERROR, error_obj(raw, &e)?),
        JsEvent::Close {
            code,
            reason,
            was_clean,
            will_reconnect,
        } => {
            let mut o = Obj::new(raw)?;
            o.set(c"code", u32::from(code))?;
            o.set(c"reason", reason)?;
            o.set(c"wasClean", was_clean)?;
            o.set(c"willReconnect", will_reconnect)?;
            (T_CLOSE, o.value)
        }
        JsEvent::Reconnecting { attempt, delay_ms } => {
            let mut o = Obj::new(raw)?;
            o.set(c"attempt", attempt)?;
            o.set(c"delay", delay_ms as f64)?;
            (T_RECONNECTING, o.value)
        }
        JsEvent::GiveUp {
            attempts,
            reason,
            last_error,
        } => {
            let mut o = Obj::new(raw)?;
            o.set(c"reason", reason)?;
            o.set(c"attempts", attempts)?;
            let last = match last_error {
                Some(e) => error_obj(raw, &e)?,
                None => napi_raw::undefined(raw)?,
            };
            o.set_value(c"lastError", last)?;
            (T_GIVEUP, o.value)
        }
        JsEvent::DisconnectDone { discarded } => (T_DISCONNECTED, napi_raw::to_js(raw, discarded)?),
        JsEvent::Ping(p) => (T_PING, napi_raw::buffer_copy(raw, &p)?),
        JsEvent::Pong(p) => (T_PONG, napi_raw::buffer_copy(raw, &p)?),
        JsEvent::Provide { id, attempt } => {
            let mut o = Obj::new(raw)?;
            o.set(c"id", id as f64)?;
            o.set(c"attempt", attempt)?;
            (T_PROVIDE, o.value)
        }
        JsEvent::Decide {
            id,
            attempt,
            info,
            default,
        } => {
            let mut o = Obj::new(raw)?;
            o.set(c"id", id as f64)?;
            o.set(c"default", default)?;
            let mut i = Obj::new(raw)?;
            match info {
                PolicyInfo::Close { code, reason } => {
                    i.set(c"kind", "close")?;
                    i.set(c"code", u32::from(code))?;
                    i.set(c"reason", reason)?;
                }
                PolicyInfo::Handshake { status, headers } => {
                    i.set(c"kind", "handshake")?;
                    i.set(c"status", u32::from(status))?;
                    let mut h = Obj::new(raw)?;
                    for (k, v) in headers {
                        let key = std::ffi::CString::new(k).unwrap_or_default();
                        h.set(&key, v)?;
                    }
                    i.set_value(c"headers", h.value)?;
                }
                PolicyInfo::Error { code } => {
                    i.set(c"kind", "error")?;
                    i.set(c"code", code)?;
                }
            }
            i.set(c"attempt", attempt)?;
            o.set_value(c"info", i.value)?;
            (T_DECIDE, o.value)
        }
        // The generation alone when nothing was discarded (the usual case).
        JsEvent::Idle { gen, discarded: 0 } => (T_IDLE, napi_raw::to_js(raw, gen)?),
        JsEvent::Idle { gen, discarded } => {
            let mut o = Obj::new(raw)?;
            o.set(c"gen", gen)?;
            o.set(c"discarded", discarded)?;
            (T_IDLE, o.value)
        }
        JsEvent::Warning { code, message } => {
            let mut o = Obj::new(raw)?;
            o.set(c"code", code)?;
            o.set(c"message", message)?;
            (T_WARNING, o.value)
        }
    })
}
