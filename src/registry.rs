//! The JS thread's registry of its clients: what keeps a client reachable and the event loop
//! alive. A client's JS object is held by a napi reference that is strong only while a
//! connection exists, a `disconnect()` is to settle, or JS waits on a running client; the
//! delivery's thread-safe function (weak by itself) is ref'd while at least one client is active
//! and ref'd. Delivery applies each event's effect here before JS sees it (`Registry::deliver`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use napi::bindgen_prelude::*;

use crate::direct;
use crate::events::JsEvent;
use crate::hub::Hub;
use crate::napi_raw::{self, OwnerRef, Value};
use crate::shared::Shared;

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
pub struct Registry {
    hub: Option<Arc<Hub>>,
    clients: HashMap<u64, Entry>,
    /// Number of clients that hold the loop (`holds_loop`), and of warnings that such a client left
    /// when it was collected and JS has not taken yet: the loop is held while > 0.
    holding: usize,
    /// Those warnings (each releases its hold when JS takes it).
    warning_holds: usize,
    /// The environment is being torn down: finalizers are process exit, not garbage collection.
    shutting_down: bool,
}

thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
}

/// `None` once the thread's registry is gone (the environment is torn down), or while it is in
/// use further up the stack: nothing that holds it calls JS (`delivery::build_batch` makes its
/// values after), so that is a bug, and better reported as the registry's absence than as a
/// panic, which would abort the process.
pub fn with_registry<R>(f: impl FnOnce(&mut Registry) -> R) -> Option<R> {
    REGISTRY
        .try_with(|r| r.try_borrow_mut().ok().map(|mut r| f(&mut r)))
        .ok()
        .flatten()
}

/// The hub of this thread's delivery, once installed (`delivery::init`).
pub fn install_hub(hub: Arc<Hub>) {
    with_registry(|r| r.hub = Some(hub));
}

/// At the environment's teardown (a worker's end, the process's exit) every driver of this
/// thread is stopped: Node also runs the finalizers then, whose `Drop` does the same, but not
/// every runtime does (Deno runs a worker's cleanup hooks and not its finalizers).
/// The code of the warning a client collected while active leaves (`unregister`).
pub const COLLECTED_WARNING: &str = "REDIAL_WS_NOT_DISCONNECTED";

pub fn tear_down() {
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
            change_hold(r, env, &mut e, |e| {
                e.active = false;
                e.disconnecting = false;
            });
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
        let mut e = r.clients.remove(&id)?;
        change_hold(r, env, &mut e, |e| {
            e.disconnecting = true;
            // Never 0, which JS reads as "nothing to disconnect".
            e.disconnects = e.disconnects.wrapping_add(1).max(1);
        });
        let seq = e.disconnects;
        r.clients.insert(id, e);
        Some(seq)
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

/// Whether the client holds the event loop: while it is active and ref'd, and while a
/// `disconnect()` of it is to settle, ref'd or not (an awaited call resumes, as a pending
/// `fs.promises` call keeps the process; `closeTimeout` bounds it).
fn holds_loop(e: &Entry) -> bool {
    (e.active && e.refd) || e.disconnecting
}

/// Updates `active`/`refd` (see `change_hold`).
fn set_holding(r: &mut Registry, env: &Env, e: &mut Entry, active: bool, refd: bool) {
    change_hold(r, env, e, |e| {
        e.active = active;
        e.refd = refd;
    });
}

/// Applies `change` to the entry, then its reference's strength and its hold of the loop: the
/// thread-safe function is ref'd or unref'd when the number of clients holding the loop crosses zero.
fn change_hold(r: &mut Registry, env: &Env, e: &mut Entry, change: impl FnOnce(&mut Entry)) {
    let before = holds_loop(e);
    change(e);
    set_strong(env, e, reachable(e));
    let after = holds_loop(e);
    if before != after {
        add_hold(r, env, after);
    }
}

/// Takes (`on`) or releases one hold of the loop; the function is ref'd while any is taken.
fn add_hold(r: &mut Registry, env: &Env, on: bool) {
    let hub = r.hub.clone();
    let tsfn = hub.as_ref().and_then(|h| h.tsfn());
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

/// What a delivery batch reads and changes, under one borrow of the registry.
impl Registry {
    /// Client `id`'s shared state, while it is registered.
    pub fn shared(&self, id: u64) -> Option<&Arc<Shared>> {
        self.clients.get(&id).map(|e| &e.shared)
    }

    /// Client `id`'s JS object: `None` if it is not registered or was collected.
    /// Client `id`'s JS object; `None` if it is not registered, was collected, or cannot be had
    /// (a thread where JS can no longer run): its event is then for nobody.
    pub fn owner<'e>(&self, env: &'e Env, id: u64) -> Option<Value<'e>> {
        self.clients.get(&id).and_then(|e| e.owner.get(env).ok().flatten())
    }

    /// A `disconnect()` of client `id` is to settle.
    pub fn is_disconnecting(&self, id: u64) -> bool {
        self.clients.get(&id).is_some_and(|e| e.disconnecting)
    }

    /// JS takes the warning a collected client left (`COLLECTED_WARNING`): the hold of the loop it kept ends.
    pub fn warning_taken(&mut self, env: &Env) {
        if self.warning_holds > 0 {
            self.warning_holds -= 1;
            add_hold(self, env, false);
        }
    }

    /// Applies `event`'s effect on client `id` (strong reference, loop hold, the disconnects it
    /// settles) before JS sees it, after `read` is shown the event with the client's shared state.
    /// Returns the client's JS object, `None` if it is not registered, was collected or cannot be
    /// had (its event is then for nobody; its effects are applied all the same).
    pub fn deliver<'e>(
        &mut self,
        env: &'e Env,
        id: u64,
        event: &mut JsEvent,
        read: impl FnOnce(&Arc<Shared>, &JsEvent),
    ) -> Option<Value<'e>> {
        let mut e = self.clients.remove(&id)?;
        read(&e.shared, event);
        let owner = e.owner.get(env).ok().flatten();
        if let JsEvent::Idle { gen, discarded, upto } = event {
            if let Some((_, seq, dropped)) = e.undelivered.take_if(|u| u.0 == *gen) {
                *upto = (*upto).max(seq);
                *discarded += dropped;
            }
        }
        // Applied also for an object collected and not yet finalized (an earlier batch had the
        // client's close): its finalizer must find it inactive once its driver has exited, or
        // it would warn of a client collected while active and hold the loop for that warning.
        match &*event {
            JsEvent::Connecting { .. } if owner.is_some() => set_conn(env, &mut e, true),
            // The connection is gone; a pending disconnect() still holds the client until it settles.
            JsEvent::Close { .. } => {
                direct::release(id);
                set_conn(env, &mut e, false);
            }
            // A later disconnect() still pending keeps the client reachable. The driver
            // goes on (a connect() came): a connection it started since holds the client.
            JsEvent::DisconnectDone { upto, .. } if *upto == e.disconnects => {
                change_hold(self, env, &mut e, |e| e.disconnecting = false);
            }
            JsEvent::Idle { gen, .. } if *gen == e.gen => {
                change_hold(self, env, &mut e, |e| {
                    e.disconnecting = false;
                    e.conn = false;
                    e.active = false;
                });
            }
            // A driver that was replaced reports its exit late: it settles the calls it
            // received (or that came as it exited); the latest one ends the hold.
            JsEvent::Idle { upto, .. } if *upto == e.disconnects => {
                change_hold(self, env, &mut e, |e| e.disconnecting = false);
            }
            _ => {}
        }
        self.clients.insert(id, e);
        owner
    }
}
