//! The JS thread's side of reading plain connections (see `reader`): one socket watch per client
//! whose socket it reads, started when it takes a driver's offer and dropped when it gives the
//! socket back, when the connection ends, when the client is collected, or at teardown.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use napi::Env;

use crate::napi_raw::{OnReady, SocketWatch};
use crate::reader::SharedReader;
use crate::stats::{Gauge, GLOBAL};

struct Watched {
    /// Dropped first: the watch stops before the reader (which may close the socket) goes.
    _watch: SocketWatch,
    reader: Arc<SharedReader>,
    _gauge: Gauge,
}

thread_local! {
    static WATCHES: RefCell<HashMap<u64, Watched>> = RefCell::new(HashMap::new());
    /// What this thread's reads may still take in the current turn of the event loop: the turn,
    /// reads left, payload bytes left.
    static BUDGET: std::cell::Cell<(u64, usize, usize)> = const { std::cell::Cell::new((u64::MAX, 0, 0)) };
}

/// The JS thread reads at most this much in one turn of the event loop, over all its sockets (each
/// read counts for one message at least): a burst over many connections at once (a server that
/// drops ten thousand of them) is spread over turns, as one socket's backlog is.
const TURN_READS: usize = 4096;
const TURN_BYTES: usize = 1 << 20;

/// Whether a read may start in turn `turn` (a new turn starts with a full budget).
pub fn may_read(turn: u64) -> bool {
    BUDGET
        .try_with(|b| {
            let (t, reads, bytes) = b.get();
            if t != turn {
                b.set((turn, TURN_READS, TURN_BYTES));
                return true;
            }
            reads > 0 && bytes > 0
        })
        .unwrap_or(false)
}

/// A read in the current turn took `messages` messages (at least one read) and `bytes` of payload.
pub fn spent(messages: usize, bytes: usize) {
    let _ = BUDGET.try_with(|b| {
        let (t, reads, left) = b.get();
        b.set((t, reads.saturating_sub(messages.max(1)), left.saturating_sub(bytes)));
    });
}

/// Takes client `id`'s socket on the driver's offer, if it still stands, and watches it:
/// `on_ready(env, id, turn)` then reads it on each turn it is readable.
pub fn take_over(env: &Env, id: u64, reader: Arc<SharedReader>, offer: u32, on_ready: OnReady) {
    if !reader.take_over(offer) {
        return;
    }
    match SocketWatch::start(env, reader.socket(), id, on_ready) {
        Ok(Some(watch)) => {
            let watched = Watched {
                _watch: watch,
                reader,
                _gauge: Gauge::new(&GLOBAL.js_readers),
            };
            let old = WATCHES.with(|w| w.borrow_mut().insert(id, watched));
            drop(old);
        }
        // The driver reads, as before.
        _ => reader.give_back(),
    }
}

/// The reader of client `id`'s socket, while the JS thread watches it.
pub fn reader(id: u64) -> Option<Arc<SharedReader>> {
    WATCHES
        .try_with(|w| w.borrow().get(&id).map(|x| x.reader.clone()))
        .ok()
        .flatten()
}

/// Stops watching client `id`'s socket.
pub fn release(id: u64) {
    // Dropped outside the borrow: dropping may close the socket.
    let gone = WATCHES.try_with(|w| w.borrow_mut().remove(&id)).ok().flatten();
    drop(gone);
}

/// Stops every watch of this thread (environment teardown).
pub fn release_all() {
    let all = WATCHES
        .try_with(|w| std::mem::take(&mut *w.borrow_mut()))
        .unwrap_or_default();
    drop(all);
}
