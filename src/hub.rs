//! The doorbell between the drivers (tokio workers) and the JS thread. Drivers append their
//! events to one shared queue and ring a single thread-safe function only when no batch is on its
//! way to JS; the JS thread takes a bounded batch per call (`take`: about `BATCH_EVENTS` events, a
//! run of small messages counting for its messages, and about `BATCH_BYTES` of payload) until none
//! is left, which re-arms the doorbell. What JS does with a batch is `delivery`'s.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use napi::threadsafe_function::ThreadsafeFunctionCallMode;

use crate::ask;
use crate::events::JsEvent;
use crate::napi_raw::Tsfn;
use crate::shared::Shared;
use crate::testing::{self, Probe};

/// About this many events go to JS in one batch (a run of small messages counts for its messages
/// and is not split, so a batch may pass it by one run: `events::Run`)...
pub const BATCH_EVENTS: usize = 4096;
/// ...and payload bytes beyond this start the next batch. A batch keeps its messages reachable
/// until its last listener has run: large messages kept past a slow listener's scavenges would be
/// promoted, and freed only by mark-compacts (docs/performance.md, "Large messages and the
/// garbage collector").
pub const BATCH_BYTES: usize = 256 * 1024;
/// Entries of room the queue keeps once it has run empty (152 bytes each): a burst (thousands of
/// clients reconnecting at once) grows it and gives the rest back once delivered; a stream stays
/// well under it, so no batch of a stream grows it anew.
const KEPT_ENTRIES: usize = 1024;

#[derive(Default)]
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

    /// The thread-safe function the doorbell calls, installed once.
    pub fn set_tsfn(&self, tsfn: Tsfn) {
        let _ = self.tsfn.set(tsfn);
    }

    pub fn tsfn(&self) -> Option<&Tsfn> {
        self.tsfn.get()
    }

    fn ring(&self) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            testing::count(Probe::Rings, 1);
            if let Some(tsfn) = self.tsfn.get() {
                // One call at a time: never `QueueFull`. After env teardown the call is refused; nothing to do then.
                let _ = tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking);
            }
        }
    }

    /// Whether nothing is queued, in which case the doorbell is re-armed: the next append rings it.
    fn rearm_if_empty_locked(&self, q: &mut VecDeque<(u64, JsEvent)>) -> bool {
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

    /// As `rearm_if_empty_locked`, taking the lock.
    pub fn rearm_if_empty(&self) -> bool {
        self.rearm_if_empty_locked(&mut self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The next batch: the oldest events, bounded in count and payload bytes (`BATCH_EVENTS`,
    /// `BATCH_BYTES`, or less: `most`). When none is left, the doorbell is re-armed (an event
    /// appended meanwhile is taken, not lost).
    pub fn take(&self, most: (usize, usize)) -> Vec<(u64, JsEvent)> {
        let (most_events, most_bytes) = (most.0.min(BATCH_EVENTS), most.1.min(BATCH_BYTES));
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if self.rearm_if_empty_locked(&mut q) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// No turn's share: the batch bounds alone.
    const ALL: (usize, usize) = (usize::MAX, usize::MAX);

    fn text(s: &str) -> JsEvent {
        JsEvent::Text(s.into())
    }

    #[test]
    fn a_batch_is_bounded_in_events() {
        let hub = Hub::default();
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
        let hub = Hub::default();
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
        let hub = Hub::default();
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
        let hub = Hub::default();
        let big = || JsEvent::Binary(vec![0; BATCH_BYTES / 2 + 1].into());
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
}
