//! The JS thread's side of reading plain connections (see `reader`): one socket watch per client
//! whose socket it reads, started when it takes a driver's offer and dropped when it gives the
//! socket back, when the connection ends, when the client is collected, or at teardown.
//!
//! Reading is bounded per turn of the event loop over all sockets. A socket found readable once
//! the turn's budget is spent is not left watched (libuv would report it again and again in the
//! same poll phase, up to 48 rounds of 1,024 events, and on every turn after): its watch is
//! paused and it joins a queue that later turns read first, in order, each within its budget.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use napi::Env;

use crate::napi_raw::{OnReady, Ready, SocketWatch, TurnHook};
use crate::reader::SharedReader;
use crate::stats::{Gauge, JsReaders};
use crate::testing::{self, Probe};

struct Watched {
    /// Holds a share of the socket: it stays open while libuv may poll it.
    watch: SocketWatch,
    reader: Arc<SharedReader>,
    /// Paused in the queue of sockets waiting for a turn with budget left.
    paused: bool,
    _gauge: Gauge<JsReaders>,
}

/// What this thread's reads may still take in the current turn of the event loop.
#[derive(Clone, Copy)]
struct Budget {
    turn: u64,
    reads: usize,
    bytes: usize,
    /// Time the reads of this turn took, listeners included.
    spent: Duration,
    /// A batch from the I/O thread went to JS in this turn (`batch_allowance`).
    batch: bool,
    /// The turn in which a batch was refused, until one goes: in a later turn it goes first, and
    /// the JS thread's reads wait for the turn after.
    deferred: Option<u64>,
}

/// Readable sockets whose watch is paused, waiting for a turn with budget left, and the hook
/// that reads them at the start of each turn while there are any.
#[derive(Default)]
struct Waiting {
    hook: Option<TurnHook>,
    ids: VecDeque<u64>,
    /// What reads a socket (the watches' `on_ready`).
    read: Option<OnReady>,
}

thread_local! {
    static WATCHES: RefCell<HashMap<u64, Watched>> = RefCell::new(HashMap::new());
    static BUDGET: Cell<Budget> = const {
        Cell::new(Budget { turn: u64::MAX, reads: 0, bytes: 0, spent: Duration::ZERO, batch: false, deferred: None })
    };
    static WAITING: RefCell<Waiting> = RefCell::new(Waiting::default());
}

/// The JS thread reads at most this much in one turn of the event loop, over all its sockets (each
/// read counts for one message at least, and the time includes the listeners it runs): a burst
/// over many connections at once (a server that drops ten thousand of them) is spread over turns,
/// as one socket's backlog is.
const LOOP_TURN_READS: usize = 4096;
const LOOP_TURN_BYTES: usize = 1 << 20;
const LOOP_TURN_TIME: Duration = Duration::from_millis(4);

/// The number of the JS event loop's current turn, where this thread reads sockets (Node's event
/// loop; not Bun's or Deno's emulation of libuv, whose numbering is not relied on).
pub fn current_turn(env: &Env) -> Option<u64> {
    if crate::reader::enabled() {
        crate::napi_raw::current_turn(env)
    } else {
        None
    }
}

/// Whether a read may start in turn `turn` (a new turn starts with a full budget).
pub fn may_read(turn: u64) -> bool {
    BUDGET
        .try_with(|b| {
            let budget = fresh(b.get(), turn);
            b.set(budget);
            budget.reads > 0 && budget.bytes > 0 && budget.spent < LOOP_TURN_TIME && !batch_waits(&budget, turn)
        })
        .unwrap_or(false)
}

/// The budget as of `turn`: a new turn's is whole (a batch refused before still waits).
fn fresh(budget: Budget, turn: u64) -> Budget {
    if budget.turn == turn {
        return budget;
    }
    Budget {
        turn,
        reads: LOOP_TURN_READS,
        bytes: LOOP_TURN_BYTES,
        spent: Duration::ZERO,
        batch: false,
        deferred: budget.deferred,
    }
}

/// A batch refused in an earlier turn waits: it goes before the JS thread reads again.
fn batch_waits(budget: &Budget, turn: u64) -> bool {
    budget.deferred.is_some_and(|refused| refused != turn)
}

/// Whether a batch of events from the I/O thread may go to JS in `turn`, and the most it may
/// carry (`(messages, bytes)`). The batches and the JS thread's reads share a turn's budget, and
/// a batch ends the turn for both: one batch per turn at most, and none after reads that spent
/// the budget. A refused batch waits for a later turn, where it goes before any read (so that
/// reads on many sockets cannot keep it waiting).
pub fn batch_allowance(turn: u64) -> Option<(usize, usize)> {
    BUDGET
        .try_with(|b| {
            let mut budget = fresh(b.get(), turn);
            let allowance = if budget.batch {
                None
            } else if batch_waits(&budget, turn) {
                Some((LOOP_TURN_READS, LOOP_TURN_BYTES))
            } else if budget.reads > 0 && budget.bytes > 0 && budget.spent < LOOP_TURN_TIME {
                Some((budget.reads, budget.bytes))
            } else {
                None
            };
            match allowance {
                Some(_) => {
                    budget.batch = true;
                    budget.deferred = None;
                    budget.reads = 0;
                    budget.bytes = 0;
                }
                None => budget.deferred = budget.deferred.or(Some(turn)),
            }
            b.set(budget);
            allowance
        })
        .ok()
        .flatten()
}

/// A read in the current turn took `messages` messages (at least one read), `bytes` of payload
/// and, with the listeners it ran, `time`.
pub fn spent(messages: usize, bytes: usize, time: Duration) {
    let _ = BUDGET.try_with(|b| {
        let mut budget = b.get();
        budget.reads = budget.reads.saturating_sub(messages.max(1));
        budget.bytes = budget.bytes.saturating_sub(bytes);
        budget.spent += time;
        b.set(budget);
    });
}

/// Takes client `id`'s socket on the driver's offer, if it still stands, and watches it:
/// `on_ready(env, id, ready)` then reads it on each turn it is readable.
pub fn take_over(env: &Env, id: u64, reader: Arc<SharedReader>, offer: u32, on_ready: OnReady) {
    if !reader.take_over(offer) {
        return;
    }
    match SocketWatch::start(env, reader.socket(), id, on_ready) {
        Ok(Some(watch)) => {
            testing::count(Probe::TakeOvers, 1);
            let watched = Watched {
                watch,
                reader,
                paused: false,
                _gauge: Gauge::<JsReaders>::new(),
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

/// This turn's budget is spent: client `id`'s socket, readable, waits for a later turn with its
/// watch paused. If that cannot be arranged, its driver reads it.
pub fn wait_for_next_turn(env: &Env, id: u64, read: OnReady) {
    let armed = WAITING
        .try_with(|w| {
            let mut w = w.borrow_mut();
            if w.hook.is_none() {
                w.hook = TurnHook::new(env, read_waiting).ok().flatten();
            }
            w.read = Some(read);
            w.hook.as_ref().is_some_and(TurnHook::arm)
        })
        .unwrap_or(false);
    let paused = armed
        && WATCHES
            .try_with(|w| {
                let mut w = w.borrow_mut();
                let Some(watched) = w.get_mut(&id) else { return false };
                if !watched.paused {
                    watched.watch.pause();
                    watched.paused = true;
                    let _ = WAITING.try_with(|q| q.borrow_mut().ids.push_back(id));
                    testing::count(Probe::DirectWaits, 1);
                }
                true
            })
            .unwrap_or(false);
    if !paused {
        give_back(id);
    }
}

/// The start of a turn while sockets wait: read them, oldest first, while the turn's budget
/// lasts; each read watches its socket again. The hook disarms once none waits.
fn read_waiting(env: &Env, turn: u64) {
    while may_read(turn) {
        let Some((id, read)) = WAITING
            .try_with(|w| {
                let mut w = w.borrow_mut();
                let read = w.read?;
                Some((w.ids.pop_front()?, read))
            })
            .ok()
            .flatten()
        else {
            break;
        };
        // A socket released since it was queued is gone from the table.
        let resumed = WATCHES
            .try_with(|w| {
                let mut w = w.borrow_mut();
                let watched = w.get_mut(&id).filter(|x| x.paused)?;
                watched.paused = false;
                Some(watched.watch.resume())
            })
            .ok()
            .flatten();
        match resumed {
            Some(true) => {
                let ready = Ready {
                    turn,
                    failed: false,
                    panicked: false,
                };
                // One read that panics ends its connection; the others still read.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(env, id, ready))).is_err() {
                    fail(id);
                }
            }
            Some(false) => give_back(id),
            None => {}
        }
    }
    let _ = WAITING.try_with(|w| {
        let w = w.borrow();
        if w.ids.is_empty() {
            if let Some(hook) = &w.hook {
                hook.disarm();
            }
        }
    });
}

/// A read of client `id`'s socket panicked: what it read may be lost, and its decoder is in an
/// unknown state. Its driver takes the socket back and ends the connection with `ERR_INTERNAL`.
pub fn fail(id: u64) {
    if let Some(reader) = reader(id) {
        release(id);
        reader.fail("a read on the JS thread failed: messages may be lost");
    }
}

/// Stops watching client `id`'s socket and lets its driver read it.
pub fn give_back(id: u64) {
    if let Some(reader) = reader(id) {
        release(id);
        reader.give_back();
    }
}

/// Stops watching client `id`'s socket.
pub fn release(id: u64) {
    // Dropped outside the borrow: dropping may close the socket.
    let gone = WATCHES.try_with(|w| w.borrow_mut().remove(&id)).ok().flatten();
    drop(gone);
}

/// Stops every watch of this thread, and the turn hook (environment teardown).
pub fn release_all() {
    let all = WATCHES
        .try_with(|w| std::mem::take(&mut *w.borrow_mut()))
        .unwrap_or_default();
    drop(all);
    let waiting = WAITING.try_with(|w| std::mem::take(&mut *w.borrow_mut())).ok();
    drop(waiting);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_batch_per_turn_and_none_after_reads_that_spent_it() {
        // A turn's first batch goes, with the whole budget; a second waits for a later turn.
        assert_eq!(batch_allowance(10), Some((LOOP_TURN_READS, LOOP_TURN_BYTES)));
        assert!(!may_read(10), "a batch ends the turn for the reads too");
        assert_eq!(batch_allowance(10), None);
        assert_eq!(batch_allowance(11), Some((LOOP_TURN_READS, LOOP_TURN_BYTES)));
        // Reads that spent a turn's budget make its batch wait; in the next turn it goes before
        // the reads, which wait for the turn after.
        assert!(may_read(20));
        spent(LOOP_TURN_READS, 100, Duration::ZERO);
        assert!(!may_read(20));
        assert_eq!(batch_allowance(20), None);
        assert_eq!(batch_allowance(20), None, "not in the turn it was refused in");
        assert!(!may_read(21), "the waiting batch goes first");
        assert_eq!(batch_allowance(21), Some((LOOP_TURN_READS, LOOP_TURN_BYTES)));
        assert!(may_read(22));
        // Reads that left some of the budget: the batch carries what is left.
        spent(96, 1000, Duration::ZERO);
        assert_eq!(
            batch_allowance(22),
            Some((LOOP_TURN_READS - 96, LOOP_TURN_BYTES - 1000))
        );
    }
}
