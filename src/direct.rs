//! The JS thread's side of reading plain connections (see `reader`): one socket watch per client
//! whose socket it reads, started when it takes a driver's offer and dropped when it gives the
//! socket back, when the connection ends, when the client is collected, or at teardown.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use napi::Env;

use crate::napi_raw::SocketWatch;
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
}

/// Takes client `id`'s socket on the driver's offer, if it still stands, and watches it:
/// `on_ready(env, id)` then reads it on each turn it is readable.
pub fn take_over(env: &Env, id: u64, reader: Arc<SharedReader>, offer: u32, on_ready: fn(&Env, u64)) {
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
