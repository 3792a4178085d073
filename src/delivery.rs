//! Event delivery from the tokio side to JavaScript.
//!
//! Drivers append events to the `hub`, whose doorbell calls this thread's dispatcher only when
//! no batch is on its way to JS. The JS thread takes a bounded batch per call, dispatches it, and
//! acknowledges it from a `setImmediate` (`ack`): the event loop gets a turn (timers, I/O, other
//! clients) between batches, and the acknowledgement both takes the next batch and tells each
//! client's read gate that its messages have been dispatched. A message counts against the read
//! bound from the moment it is read until JS has run its listeners, so what a client holds for a
//! slow JS thread is bounded end to end.
//!
//! The thread-safe function is weak: it never holds the loop by itself; the `registry` refs it
//! while at least one client is active and ref'd. It is built on a module-level dispatcher that
//! closes over no client: each event's client is found in the registry, which applies the
//! event's effect on what keeps the client reachable before JS sees it. Messages read on the JS
//! thread itself (`direct`) go to JS from `on_readable`, outside the batches.

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::Instant;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::ThreadsafeCallContext;

use crate::direct;
use crate::errors;
use crate::event_values::{event_to_js, text_run, text_value};
use crate::events::JsEvent;
use crate::frame::Incoming;
use crate::hub::{Hub, BATCH_EVENTS};
use crate::napi_raw::{self, ArrayOf, CallbackTarget, DispatchArgs, OwnerRef, RawValue, Ready, Value};
use crate::protocol::event as tag;
use crate::reader::{self, JsRead};
use crate::registry;
use crate::shared::Shared;
use crate::testing;

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
    } else if let JsEvent::Open { .. } = event {
        // Admitted by the driver as a message of no bytes (`Driver::attempt_done`).
        credit_event(credits, shared, 0, 1);
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

/// The JS thread's side of delivery.
#[derive(Default)]
struct Dispatch {
    /// The batch JS is dispatching: credited to read gates on acknowledgement.
    credits: Credits,
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
    static DISPATCH: RefCell<Dispatch> = RefCell::new(Dispatch::default());
}

/// `None` once the thread's state is gone (the environment is torn down), or while it is in use
/// further up the stack (a bug: nothing that holds it calls JS).
fn with_dispatch<R>(f: impl FnOnce(&mut Dispatch) -> R) -> Option<R> {
    DISPATCH
        .try_with(|d| d.try_borrow_mut().ok().map(|mut d| f(&mut d)))
        .ok()
        .flatten()
}

/// The credits of the batch JS has dispatched, taken to be settled.
fn take_credits() -> Credits {
    with_dispatch(|d| std::mem::take(&mut d.credits)).unwrap_or_default()
}

/// Installs the module-level dispatchers for this JS thread, once: returns the `wire` of the
/// first call (later calls install nothing). `direct_read`: the runtime's event loop may watch
/// sockets, so quiet uncompressed connections are read on this thread (see `reader`); `node_loop`:
/// the event loop is Node's, whose turns can be counted (`next_batch`).
/// Large messages may be external Buffers if this is the main thread (`napi_raw::enable_external_buffers`).
pub fn init(
    env: &Env,
    dispatch: Function<'_, DispatchArgs, ()>,
    dispatch_now: Function<'_, RawValue, ()>,
    direct_read: bool,
    node_loop: bool,
    wire: Object<'_>,
) -> Result<RawValue> {
    if with_dispatch(|d| d.wire.is_some()).unwrap_or(false) {
        return first_wire(env);
    }
    napi_raw::enable_external_buffers(env);
    with_dispatch(|d| d.counts_turns = node_loop);
    // Kept once everything below is installed: an `init` that failed is tried again by the next.
    let wire_ref = OwnerRef::new(env, &wire)?;
    if direct_read && napi_raw::SocketWatch::available() {
        let target = Rc::new(CallbackTarget::new(env, &dispatch_now)?);
        napi_raw::on_teardown(env, direct::release_all)?;
        with_dispatch(|d| d.dispatch_now = Some(target));
        reader::enable(true);
    }
    let array_of = Rc::new(ArrayOf::new(env)?);
    with_dispatch(|d| d.array_of = Some(array_of));
    let hub = Arc::new(Hub::default());
    let weak: Weak<Hub> = Arc::downgrade(&hub);
    let tsfn = dispatch
        .build_threadsafe_function::<()>()
        .weak::<true>()
        .callee_handled::<false>()
        .build_callback(move |ctx: ThreadsafeCallContext<()>| match weak.upgrade() {
            Some(hub) => dispatch_args(&ctx.env, next_batch(&ctx.env, &hub)?),
            None => dispatch_args(&ctx.env, Vec::new()),
        })?;
    hub.set_tsfn(tsfn);
    env.add_env_cleanup_hook((), |_| {
        // Nothing unwinds into Node (a panic there aborts the process); the environment is going.
        let _ = std::panic::catch_unwind(registry::tear_down);
    })?;
    wire_ref.set_strong(env, true)?;
    registry::install_hub(hub);
    with_dispatch(|d| d.wire = Some(Rc::new(wire_ref)));
    first_wire(env)
}

/// The `wire` of this thread's first `init`.
fn first_wire(env: &Env) -> Result<RawValue> {
    let first = with_dispatch(|d| d.wire.clone()).flatten();
    match first.map(|w| w.get(env)).transpose()?.flatten() {
        Some(wire) => Ok(wire.into()),
        None => Err(Error::from_reason("redial-ws: the dispatcher is not installed")),
    }
}

/// JS has dispatched a batch: credit the read gates. True when no event waits (the doorbell is
/// re-armed: the next event rings it); false when one does, which JS takes with `ack` after a turn
/// of its event loop. Usually none waits, and JS then asks for no turn.
pub fn done() -> bool {
    settle(take_credits());
    registry::hub().is_none_or(|hub| hub.rearm_if_empty())
}

/// The batch `done` found waiting, taken after a turn of the event loop: hands it back, or an
/// empty array when there is none (the doorbell is then re-armed). Credits still unsettled, if
/// any, are settled first.
pub fn ack(env: &Env) -> Result<RawValue> {
    settle(take_credits());
    let values = match registry::hub() {
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
fn next_batch<'e>(env: &'e Env, hub: &Hub) -> Result<Vec<Value<'e>>> {
    let turn = with_dispatch(|d| d.counts_turns)
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
        let mut credits = Credits::new();
        let built = std::panic::catch_unwind(AssertUnwindSafe(|| build_batch(env, events, &mut credits)));
        let what = match built {
            Ok(Ok(values)) => Ok(values),
            Ok(Err(err)) => Err(err.reason),
            Err(panic) => Err(errors::panic_text(&*panic)),
        };
        let values = match what {
            Ok(values) => values,
            Err(what) => {
                // Not taken again in this call: where JS cannot run (a worker being terminated),
                // every batch fails, the warning's too.
                settle(credits);
                lost_batch(hub, &what);
                return Ok(Vec::new());
            }
        };
        if values.is_empty() {
            // Nothing in it was for a live client (or it was lost): JS will not acknowledge it.
            settle(credits);
            continue;
        }
        with_dispatch(|d| d.credits.extend(credits));
        return Ok(values);
    }
}

/// A batch whose JS values could not be made (a bug: its events were checked as they were read;
/// or a thread where JS can no longer run, a worker being terminated) is lost, and a process
/// warning says so; its events were credited and their effects applied all the same
/// (`build_batch`), and delivery goes on with the next batch. Its error would otherwise become a
/// fatal exception with the doorbell never re-armed (nothing delivered again), and a panic would
/// abort the process (it cannot unwind into Node).
fn lost_batch(hub: &Hub, what: &str) {
    let mut warning = vec![JsEvent::Warning {
        code: errors::ERR_INTERNAL,
        message: format!("internal error ({what}): a batch of events for JS was lost"),
        detail: String::from(
            "Clients whose events it held may miss an event (an open, a close, a message). Please report it.",
        ),
    }];
    hub.push_quiet(0, &mut warning);
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
    let shared = registry::with_registry(|r| r.shared(id).cloned()).flatten();
    let target = with_dispatch(|d| d.dispatch_now.clone()).flatten();
    let (Some(shared), Some(target)) = (shared, target) else {
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
        // so the credits the batch makes are not to be settled.
        let values = build_batch(env, events, &mut Credits::new());
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
/// applying each event's effect on the registry (strong reference, loop hold) before JS sees it,
/// and adding what each client read to `credits`. The values are made once the registry is
/// released: making them can run JS (a replaced `Array.of`, a setter some code put on
/// `Object.prototype`), and that JS may call the addon.
fn build_batch<'e>(env: &'e Env, batch: Vec<(u64, JsEvent)>, credits: &mut Credits) -> Result<Vec<Value<'e>>> {
    let mut staged: Vec<(u64, Value, Staged)> = Vec::with_capacity(batch.len().min(BATCH_EVENTS));
    // Every event is credited and has its effects applied, whatever becomes of its JS values: a
    // client whose event JS never gets is not left behind its read bound or holding the loop.
    registry::with_registry(|r| {
        let mut events = batch.into_iter().peekable();
        while let Some((id, mut event)) = events.next() {
            // The hot path: a run of text messages of one client travels as one array of strings.
            if let JsEvent::Text(_) | JsEvent::Texts(_) = event {
                let mut texts = Vec::new();
                take_text_run(id, event, &mut events, &mut texts);
                let Some(shared) = r.shared(id) else { continue };
                for t in &texts {
                    credit(credits, shared, t);
                }
                let Some(owner) = r.owner(env, id) else { continue };
                staged.push((id, owner, Staged::Texts(texts)));
                continue;
            }
            if let JsEvent::ReadIdle { reader, offer } = event {
                let Some(shared) = r.shared(id) else { continue };
                // Counted by the read gate as a message of no bytes (`OpenConn::poll_read`).
                credit_event(credits, shared, 0, 1);
                // A disconnecting client's driver reads the close (`read_close_on_driver`).
                if !r.is_disconnecting(id) {
                    direct::take_over(env, id, reader, offer, on_readable);
                }
                continue;
            }
            let owner = if let JsEvent::Warning { code, .. } = &event {
                if *code == registry::COLLECTED_WARNING {
                    r.warning_taken(env);
                }
                let Ok(none) = napi_raw::undefined(env) else { continue };
                none
            } else {
                let read = |shared: &Arc<Shared>, event: &JsEvent| credit(credits, shared, event);
                let Some(owner) = r.deliver(env, id, &mut event, read) else {
                    continue;
                };
                owner
            };
            staged.push((id, owner, Staged::Event(event)));
        }
    });
    let array_of = with_dispatch(|d| d.array_of.clone()).flatten();
    let mut out = Vec::with_capacity(staged.len() * 3);
    for (id, owner, staged) in staged {
        if testing::delivery_panics(id) {
            panic!("testing: a batch for JS panics");
        }
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
fn batch_array<'e>(env: &'e Env, values: &[Value<'_>]) -> Result<Value<'e>> {
    match with_dispatch(|d| d.array_of.clone()).flatten() {
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
    use crate::payload::Payload;
    use tungstenite::Bytes;

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

        let queued = vec![(1, JsEvent::Binary(Vec::new().into())), (1, text("b"))];
        let mut events = queued.into_iter().peekable();
        take_text_run(1, text("a"), &mut events, &mut texts);
        assert_eq!(strings(&texts), ["a"], "another kind of event ends the run");
        assert!(matches!(events.next(), Some((1, JsEvent::Binary(_)))));
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
        credit(&mut credits, &b, &JsEvent::Binary(Payload::copy_from(b"xy")));
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

    /// The driver admits an open to the read gate (a close read after it waits for JS to have
    /// run the open listeners): its dispatch gives it back.
    #[test]
    fn an_open_is_credited_as_the_driver_admitted_it() {
        let a = Arc::new(Shared::new(1, false));
        a.read_gate.events_queued(1);
        a.read_gate.admit(0);
        assert!(a.read_gate.has_inflight());
        let mut credits = Vec::new();
        let open = JsEvent::Open {
            protocol: None,
            extensions: None,
        };
        credit(&mut credits, &a, &open);
        settle(credits);
        assert!(!a.read_gate.has_inflight());
    }
}
