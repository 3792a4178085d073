//! Where `send()` puts a message: straight into the open connection, into the
//! bounded offline queue while connecting or waiting to reconnect, or nowhere
//! (with an error) when the client is closed. Nothing is dropped silently: an
//! overflow either refuses the message or hands the dropped ones back.
//!
//! A message sent with a callback carries a ticket wherever it waits; when it is written,
//! dropped, drained or discarded, its ticket and fate go to `settled`, which JS takes.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::Arc;
use std::task::Poll;

use tungstenite::Message;

use crate::deflate::{Compressor, Deflating};
use crate::frame;
use crate::queue::Queue;
use crate::stats::{self, Metrics};
use crate::testing::{self, Probe};
use crate::writer::Writer;

/// A message on its way, with its callback's ticket (`NO_TICKET`: sent without one).
pub struct Outbound {
    pub msg: Message,
    pub ticket: u64,
    /// `false`: `send(data, { compress: false })`, framed uncompressed even with permessage-deflate.
    pub compress: bool,
}

pub const NO_TICKET: u64 = 0;

impl Outbound {
    pub fn new(msg: Message) -> Self {
        Outbound {
            msg,
            ticket: NO_TICKET,
            compress: true,
        }
    }
}

/// What became of a message sent with a callback (`clientTakeSettled`'s numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fate {
    /// The socket took its last byte.
    Written = 0,
    /// Dropped from the full queue (`overflow: 'drop-oldest'`).
    Overflow = 1,
    /// Handed back by `drainQueue()`.
    Drained = 2,
    /// Discarded by `disconnect()`.
    Discarded = 3,
}

/// A connection's outgoing messages, how many of them the socket has not wholly taken yet, and
/// how they are framed (one allocation per connection, shared by `send()` and the driver).
#[derive(Default)]
pub struct SendQueue {
    pub messages: Queue<Outbound>,
    /// Messages handed to `messages` and not yet wholly written: the fast path may only write
    /// when this is zero, so that nothing overtakes what was sent before.
    pub in_channel: AtomicUsize,
    /// With permessage-deflate: the connection's one compressor, used by both send paths (the
    /// fast path only writes when the driver has nothing in hand, so messages are compressed in
    /// the order they are sent, as context takeover needs).
    compressor: Option<Box<std::sync::Mutex<Compressor>>>,
}

impl SendQueue {
    pub fn new(compressor: Option<Compressor>) -> Self {
        SendQueue {
            compressor: compressor.map(|c| Box::new(std::sync::Mutex::new(c))),
            ..SendQueue::default()
        }
    }

    /// Releases the compressor's state if it was not used since the last call (heartbeat).
    pub fn release_unused_compressor(&self) {
        if let Some(c) = &self.compressor {
            c.lock().unwrap_or_else(|p| p.into_inner()).release_if_unused();
        }
    }

    /// Whether a message of `len` bytes would be compressed.
    fn compresses(&self, len: usize) -> bool {
        self.compressor
            .as_ref()
            .is_some_and(|c| c.lock().unwrap_or_else(|p| p.into_inner()).wants(len))
    }

    /// The payload of a data message that `encode` would compress, with its opcode.
    pub fn to_compress<'m>(&self, m: &'m Outbound) -> Option<(u8, &'m [u8])> {
        let (opcode, payload) = data_frame(&m.msg)?;
        (m.compress && self.compresses(payload.len())).then_some((opcode, payload))
    }

    /// Frames a data message `encode` would compress into `out` once compressed whole, compressing
    /// up to `budget` more bytes of it (`job`: its compression so far). As `encode`, a message zlib
    /// refuses goes uncompressed. `Ready(skip)`: framed; where `out` was empty, the message's own
    /// buffer becomes `out`, framed where it lies, and its first `skip` bytes are not part of the frame.
    pub fn encode_step(
        &self,
        opcode: u8,
        payload: &[u8],
        job: &mut Deflating,
        budget: usize,
        out: &mut Vec<u8>,
    ) -> Poll<usize> {
        job.leave_room(frame::MAX_CLIENT_HEADER);
        let compressed = match &self.compressor {
            Some(c) => c
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .compress_step(payload, job, budget),
            None => Poll::Ready(false),
        };
        match compressed {
            Poll::Ready(true) if out.is_empty() && job.room() == frame::MAX_CLIENT_HEADER => {
                *out = std::mem::take(job).into_buffer();
                return Poll::Ready(frame::frame_in_place(opcode, true, out));
            }
            Poll::Ready(true) => frame::encode_frame(opcode, true, job.output(), out),
            Poll::Ready(false) => frame::encode(opcode, payload, out),
            Poll::Pending => return Poll::Pending,
        }
        Poll::Ready(0)
    }

    /// Frames a data message as this connection sends it: compressed (RSV1) when permessage-deflate
    /// was negotiated and the message reaches the threshold. The one encoder of both send paths.
    /// `compress: false` (the message's own choice) frames it uncompressed, leaving the compressor's
    /// context as it was.
    pub fn encode(&self, opcode: u8, payload: &[u8], compress: bool, out: &mut Vec<u8>) {
        if let Some(c) = self.compressor.as_ref().filter(|_| compress) {
            let mut c = c.lock().unwrap_or_else(|p| p.into_inner());
            if c.wants(payload.len()) {
                let compressed = COMPRESSED.with(|z| {
                    let mut z = z.borrow_mut();
                    z.clear();
                    let ok = c.compress(payload, &mut z);
                    if ok {
                        frame::encode_frame(opcode, true, &z, out);
                    }
                    if z.capacity() > SCRATCH_KEEP {
                        *z = Vec::new();
                    }
                    ok
                });
                if compressed {
                    return;
                }
                // zlib refused (not expected): the message goes uncompressed, which is always allowed.
            }
        }
        frame::encode(opcode, payload, out);
    }
}

/// Compressed payloads are built here before they are framed (one buffer per thread, not one
/// allocation per message); a buffer grown past this by a large message is not kept.
const SCRATCH_KEEP: usize = 64 * 1024;

thread_local! {
    static COMPRESSED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A data message's opcode and payload.
pub fn data_frame(msg: &Message) -> Option<(u8, &[u8])> {
    match msg {
        Message::Text(t) => Some((frame::OPCODE_TEXT, t.as_bytes())),
        Message::Binary(b) => Some((frame::OPCODE_BINARY, b.as_ref())),
        _ => None,
    }
}

/// Bytes `send()` accounts in `bufferedAmount`: the payload of data messages.
pub fn data_len(msg: &Message) -> Option<usize> {
    data_frame(msg).map(|(_, payload)| payload.len())
}

/// The send fast path: frame the message here, on the JS thread, and write it without waking
/// the driver, at once or corked until the end of this turn (`Writer::write_or_cork`).
/// `Some(true)`: corked first, the caller schedules the uncork; `Some(false)`: written, or corked
/// behind another; `None`: the socket is backed up, use the driver.
fn write_now(writer: &Writer, tx: &SendQueue, out: &Outbound, turn: Option<u64>, metrics: &Metrics) -> Option<bool> {
    let (opcode, payload) = data_frame(&out.msg)?;
    if payload.len() > COMPRESS_FAST_PATH_MAX && out.compress && tx.compresses(payload.len()) {
        // Compressing a larger message would hold the JS thread: the driver does it.
        return None;
    }
    let first = writer.write_or_cork(turn, |framed| {
        framed.reserve(payload.len() + 14);
        tx.encode(opcode, payload, out.compress, framed);
    })?;
    stats::inc(&metrics.messages_sent);
    stats::add(&metrics.bytes_sent, payload.len() as u64);
    Some(first)
}

#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// `queue: false` turns the queue off: `send()` while not open fails.
    pub enabled: bool,
    pub max_messages: usize,
    pub max_bytes: usize,
    /// Overflow policy: drop the oldest queued messages (`true`) or refuse the new one.
    pub drop_oldest: bool,
}

pub enum SendOutcome {
    /// Written by the fast path, or corked behind a message whose uncork is scheduled.
    Sent,
    /// Corked by the fast path: the caller schedules `uncork()` at the end of this turn.
    SentUncorkLater,
    Queued,
    /// Handed to the open connection's driver (the fast path could not write it).
    Handed,
    /// Queued after dropping these (oldest first).
    QueuedDropping(Vec<Message>),
    /// The client is closed (`disconnect()`, or it gave up).
    NotOpen,
    /// No connection, and `queue: false`.
    NotConnected,
    QueueFull,
}

/// Messages up to this size may be written straight from the JS thread...
const FAST_PATH_MAX: usize = 16 * 1024;
/// ...and compressed there up to this size: compressing costs more per byte than framing, so
/// larger messages are compressed on the driver's thread.
const COMPRESS_FAST_PATH_MAX: usize = 4 * 1024;

#[derive(Default)]
pub struct Outbox {
    /// The open connection's queue, with the count of messages handed to its driver and not
    /// yet written: the fast path may only write when that count is zero, so that nothing
    /// overtakes what was sent before.
    tx: Option<Arc<SendQueue>>,
    /// The open connection's shared writer.
    writer: Option<Arc<Writer>>,
    /// `send()` is accepted at all: between `connect()` and `disconnect()` or giving up.
    accepting: bool,
    /// The number (`seq`) of the last `disconnect()` call that discards the queue when it completes
    /// and has not completed yet, or 0. Calls that keep it (rws mode's `close()`, as
    /// reconnecting-websocket keeps its queue) are not counted: a completion discards if a call
    /// it settles discards (what was queued before that call: `sent_since_stop`).
    discard_upto: u32,
    queue: VecDeque<Outbound>,
    queued_bytes: usize,
    /// How many of the queue's last messages were sent after the last `stop_accepting`: a
    /// `connect()` after a `disconnect()` accepts messages again, for the next connection, and the
    /// disconnect's discard leaves them queued.
    sent_since_stop: usize,
    /// Tickets of messages sent with a callback whose fate is known, for JS to take.
    settled: Vec<(u64, Fate)>,
}

impl Outbox {
    /// `ticket`: the callback's, or `NO_TICKET`. Only a message without one may take the fast
    /// path; one queued or handed over carries its ticket.
    #[cfg(test)]
    pub fn send(&mut self, msg: Message, ticket: u64, cfg: &QueueConfig, metrics: &Metrics) -> SendOutcome {
        let compress = true;
        self.send_outbound(Outbound { msg, ticket, compress }, None, cfg, metrics)
    }

    /// As `send`, with the message's own compression choice; `turn`: the JS event loop's current
    /// turn, where the runtime numbers them (see `Writer::write_or_cork`).
    pub fn send_outbound(
        &mut self,
        out: Outbound,
        turn: Option<u64>,
        cfg: &QueueConfig,
        metrics: &Metrics,
    ) -> SendOutcome {
        if !self.accepting {
            return SendOutcome::NotOpen;
        }
        let len = data_len(&out.msg).unwrap_or(0);
        if let Some(tx) = &self.tx {
            // A message with a callback is the driver's to write: what the fast path does not
            // write at once waits as bytes, which a lost connection takes with it, and its
            // callback must wait until the socket has taken all of it.
            let fast = len <= FAST_PATH_MAX && out.ticket == NO_TICKET;
            if let Some(writer) = self.writer.as_ref().filter(|_| fast) {
                if tx.in_channel.load(Acquire) == 0 {
                    match write_now(writer, tx, &out, turn, metrics) {
                        Some(true) => return SendOutcome::SentUncorkLater,
                        Some(false) => return SendOutcome::Sent,
                        None => {}
                    }
                }
            }
            tx.in_channel.fetch_add(1, AcqRel);
            match tx.messages.send(out) {
                Ok(()) => {
                    metrics.buffered.fetch_add(len as u64, Relaxed);
                    return SendOutcome::Handed;
                }
                // The connection just ended; its leftovers are being requeued: queue behind them.
                Err(out) => {
                    tx.in_channel.fetch_sub(1, AcqRel);
                    return self.enqueue(out, len, cfg, metrics);
                }
            }
        }
        self.enqueue(out, len, cfg, metrics)
    }

    /// Bytes the fast path framed that the open connection's socket has not taken yet.
    pub fn unsent_bytes(&self) -> usize {
        self.writer.as_ref().map_or(0, |w| w.unsent())
    }

    /// Writes what the fast path corked during this turn of the JS event loop.
    pub fn uncork(&self) {
        if let Some(w) = &self.writer {
            w.uncork();
        }
    }

    /// `disconnect()`: `send()` is refused from now on, and the open connection's stream ends
    /// (it drains, then the driver closes). With `close`, the close frame goes from the JS thread
    /// at once when nothing is left with the driver, so that the peer's answer is on its way while
    /// the driver wakes up; otherwise the driver writes it after the rest.
    ///
    /// The caller wakes the driver, if one runs (`NativeClient::disconnect` queues a command in the same
    /// step), so the connection's queue is closed without waking it: the driver would wake up into
    /// the caller's locks, go back to sleep, and be woken again.
    pub fn stop_accepting(&mut self, close: Option<(u16, &str)>) {
        self.stop(close);
        self.sent_since_stop = 0;
    }

    /// `stop_accepting` for a `disconnect()` that keeps the queue (rws mode's `close()`): what was
    /// sent since an earlier call that discards stays counted as sent after it (that call's
    /// completion may still be to come, and discards only what came before it).
    pub fn stop_accepting_keeping(&mut self, close: Option<(u16, &str)>) {
        self.stop(close);
    }

    fn stop(&mut self, close: Option<(u16, &str)>) {
        match close {
            Some((code, reason)) => {
                self.write_close_now(code, reason);
            }
            // `terminate()`: what the fast path corked in this turn goes first, as far as the
            // socket takes it, as `ws`'s writes would have before its `terminate()`.
            None => self.uncork(),
        }
        self.accepting = false;
        self.end_connection(false);
    }

    /// The close fast path, while no `send()` can come between (the caller holds the outbox and
    /// stops accepting next). False: no open connection, messages still with the driver,
    /// or the socket backed up.
    fn write_close_now(&self, code: u16, reason: &str) -> bool {
        let (Some(tx), Some(writer)) = (&self.tx, &self.writer) else {
            return false;
        };
        if tx.in_channel.load(Acquire) != 0 {
            return false;
        }
        let mut framed = Vec::with_capacity(8 + reason.len().min(123));
        frame::encode_close(code, reason, &mut framed);
        let written = writer.write_close(&framed);
        if written {
            testing::count(Probe::ClosesFromJs, 1);
        }
        written
    }

    /// Control frames (pings) go only to an open connection.
    pub fn send_control(&mut self, msg: Message) -> bool {
        let Some(tx) = self.tx.as_ref().filter(|_| self.accepting) else {
            return false;
        };
        tx.in_channel.fetch_add(1, AcqRel);
        let sent = tx.messages.send(Outbound::new(msg)).is_ok();
        if !sent {
            // Not in the channel after all: a count left behind would keep the fast path off.
            tx.in_channel.fetch_sub(1, AcqRel);
        }
        sent
    }

    fn enqueue(&mut self, out: Outbound, len: usize, cfg: &QueueConfig, metrics: &Metrics) -> SendOutcome {
        if !cfg.enabled {
            return SendOutcome::NotConnected;
        }
        if len > cfg.max_bytes {
            return SendOutcome::QueueFull;
        }
        let fits = |q: &Self| q.queue.len() < cfg.max_messages && q.queued_bytes + len <= cfg.max_bytes;
        let mut dropped = Vec::new();
        if !fits(self) {
            if !cfg.drop_oldest {
                return SendOutcome::QueueFull;
            }
            while !fits(self) {
                match self.pop(metrics, Fate::Overflow) {
                    Some(m) => dropped.push(m),
                    None => return SendOutcome::QueueFull,
                }
            }
        }
        self.queued_bytes += len;
        self.queue.push_back(out);
        self.sent_since_stop += 1;
        metrics.queued_messages.fetch_add(1, Relaxed);
        metrics.buffered.fetch_add(len as u64, Relaxed);
        if dropped.is_empty() {
            SendOutcome::Queued
        } else {
            SendOutcome::QueuedDropping(dropped)
        }
    }

    /// Takes the oldest queued message out for good: its ticket, if any, settles as `fate`.
    fn pop(&mut self, metrics: &Metrics, fate: Fate) -> Option<Message> {
        let Outbound { msg, ticket, .. } = self.queue.pop_front()?;
        self.sent_since_stop = self.sent_since_stop.min(self.queue.len());
        let len = data_len(&msg).unwrap_or(0);
        self.queued_bytes -= len;
        metrics.queued_messages.fetch_sub(1, Relaxed);
        metrics.buffered.fetch_sub(len as u64, Relaxed);
        self.settle(ticket, fate);
        Some(msg)
    }

    /// Records what became of a message sent with a callback (nothing for one sent without).
    pub fn settle(&mut self, ticket: u64, fate: Fate) {
        if ticket != NO_TICKET {
            self.settled.push((ticket, fate));
        }
    }

    /// The settled tickets since the last call, in the order they settled.
    pub fn take_settled(&mut self) -> Vec<(u64, Fate)> {
        std::mem::take(&mut self.settled)
    }

    pub fn set_accepting(&mut self, accepting: bool) {
        self.accepting = accepting;
        if !accepting {
            // Closing the queue lets the connection drain what it has, then write the close frame.
            self.close_connection();
        }
    }

    /// `disconnect()` call `seq` discards the queue when it completes (`discards_upto`).
    pub fn discard_at(&mut self, seq: u32) {
        self.discard_upto = seq;
    }

    /// At the completion of the `disconnect()` calls up to `upto`: whether one of them discards.
    fn discards_upto(&mut self, upto: u32) -> bool {
        let discards = self.discard_upto != 0 && self.discard_upto <= upto;
        if discards {
            self.discard_upto = 0;
        }
        discards
    }

    /// At the completion of the `disconnect()` calls up to `upto`: discards the queue if one of
    /// them discards it (`discards_upto`, `discard`). Returns how many were discarded.
    pub fn discard_at_completion(&mut self, upto: u32, metrics: &Metrics) -> u32 {
        match self.discards_upto(upto) {
            true => u32::try_from(self.discard(metrics)).unwrap_or(u32::MAX),
            false => 0,
        }
    }

    pub fn is_queue_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// A connection opened: the queue goes first, in order, then later sends.
    pub fn open(&mut self, tx: Arc<SendQueue>, writer: Option<Arc<Writer>>, metrics: &Metrics) {
        self.writer = writer;
        while let Some(m) = self.queue.pop_front() {
            tx.in_channel.fetch_add(1, AcqRel);
            // Still counted in `buffered` until written; no longer queued.
            let len = data_len(&m.msg).unwrap_or(0);
            self.queued_bytes -= len;
            metrics.queued_messages.fetch_sub(1, Relaxed);
            let _ = tx.messages.send(m);
        }
        self.sent_since_stop = 0;
        // A flushing disconnect keeps refusing new messages: the stream ends after the queue.
        if self.accepting {
            self.tx = Some(tx);
        } else {
            tx.messages.close();
        }
    }

    /// `reconnect()`: the open connection takes nothing more (what it was handed goes out, then the
    /// driver writes the close); messages sent from now on are queued for the next one, and a ping
    /// is refused. What the fast path corked in this turn goes first. As `stop_accepting`, the
    /// connection's queue is closed without waking it: the caller queues a command in the same step.
    pub fn leave_connection(&mut self) {
        self.uncork();
        self.end_connection(false);
    }

    /// The connection ended: stop routing to it.
    pub fn close_connection(&mut self) {
        self.end_connection(true);
    }

    /// The connection's stream ends (`wake`: its consumer is woken to see it).
    fn end_connection(&mut self, wake: bool) {
        if let Some(q) = self.tx.take() {
            if wake {
                q.messages.close();
            } else {
                q.messages.close_quietly();
            }
        }
        self.writer = None;
    }

    /// Messages the ended connection never wrote go back to the front, oldest first.
    pub fn requeue(&mut self, unsent: Vec<Outbound>, metrics: &Metrics) {
        for m in unsent.into_iter().rev() {
            self.queued_bytes += data_len(&m.msg).unwrap_or(0);
            self.queue.push_front(m);
            metrics.queued_messages.fetch_add(1, Relaxed);
        }
    }

    /// Hands back every queued message (`drainQueue()`).
    pub fn drain(&mut self, metrics: &Metrics) -> Vec<Message> {
        let mut out = Vec::with_capacity(self.queue.len());
        while let Some(m) = self.pop(metrics, Fate::Drained) {
            out.push(m);
        }
        out
    }

    /// Discards what was queued before the last `disconnect()` (which runs without flush): what a
    /// `connect()` since has accepted stays, for the next connection. Returns how many were discarded.
    pub fn discard(&mut self, metrics: &Metrics) -> usize {
        let mut n = 0;
        while self.queue.len() > self.sent_since_stop && self.pop(metrics, Fate::Discarded).is_some() {
            n += 1;
        }
        n
    }

    /// Discards the queued messages sent with these tickets, wherever they wait in the queue (a
    /// stream that failed its writes after a giveup: they must not go out on a later `connect()`,
    /// while the application's own messages stay).
    pub fn discard_tickets(&mut self, tickets: &[u64], metrics: &Metrics) -> usize {
        let recent_from = self.queue.len().saturating_sub(self.sent_since_stop);
        let mut kept = VecDeque::with_capacity(self.queue.len());
        let mut discarded = 0;
        for (i, out) in std::mem::take(&mut self.queue).into_iter().enumerate() {
            if out.ticket == NO_TICKET || !tickets.contains(&out.ticket) {
                kept.push_back(out);
                continue;
            }
            let len = data_len(&out.msg).unwrap_or(0);
            self.queued_bytes -= len;
            metrics.queued_messages.fetch_sub(1, Relaxed);
            metrics.buffered.fetch_sub(len as u64, Relaxed);
            self.settle(out.ticket, Fate::Discarded);
            if i >= recent_from {
                self.sent_since_stop = self.sent_since_stop.saturating_sub(1);
            }
            discarded += 1;
        }
        self.queue = kept;
        discarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_messages: usize, max_bytes: usize, drop_oldest: bool) -> QueueConfig {
        QueueConfig {
            enabled: true,
            max_messages,
            max_bytes,
            drop_oldest,
        }
    }

    fn text(s: &str) -> Message {
        Message::Text(s.into())
    }

    fn accepting() -> Outbox {
        let mut outbox = Outbox::default();
        outbox.set_accepting(true);
        outbox
    }

    fn texts(messages: &[Message]) -> Vec<String> {
        messages.iter().map(|m| m.to_text().unwrap().to_owned()).collect()
    }

    /// (queued messages, `bufferedAmount`)
    fn counts(m: &Metrics) -> (u64, u64) {
        (m.queued_messages.load(Relaxed), m.buffered.load(Relaxed))
    }

    fn is(outcome: SendOutcome, want: &str) {
        let got = match outcome {
            SendOutcome::Sent => "sent",
            SendOutcome::SentUncorkLater => "corked",
            SendOutcome::Queued => "queued",
            SendOutcome::Handed => "handed",
            SendOutcome::QueuedDropping(_) => "dropping",
            SendOutcome::NotOpen => "not open",
            SendOutcome::NotConnected => "not connected",
            SendOutcome::QueueFull => "queue full",
        };
        assert_eq!(got, want);
    }

    #[test]
    fn a_completion_discards_when_a_call_it_settles_discards() {
        let mut outbox = Outbox::default();
        assert!(!outbox.discards_upto(1), "a close() alone keeps");
        outbox.discard_at(2);
        assert!(!outbox.discards_upto(1), "call 1 kept; call 2 has not completed");
        assert!(outbox.discards_upto(2));
        assert!(!outbox.discards_upto(3), "taken once");
        outbox.discard_at(4);
        assert!(
            outbox.discards_upto(5),
            "call 4 discards, call 5 (kept) completed with it"
        );
    }

    #[test]
    fn a_close_that_keeps_leaves_what_was_sent_after_a_disconnect_to_the_next_connection() {
        let (c, m) = (cfg(10, 1000, false), Metrics::default());
        let mut outbox = accepting();
        outbox.send(text("a"), NO_TICKET, &c, &m);
        // disconnect(), connect(), send('b'), close() in one turn: the disconnect completes after.
        outbox.stop_accepting(None);
        outbox.discard_at(1);
        outbox.set_accepting(true);
        outbox.send(text("b"), NO_TICKET, &c, &m);
        outbox.stop_accepting_keeping(None);
        assert!(outbox.discards_upto(1));
        assert_eq!(outbox.discard(&m), 1, "a");
        assert!(!outbox.discards_upto(2));
        assert_eq!(texts(&outbox.drain(&m)), ["b"]);
    }

    #[test]
    fn data_len_counts_the_payload_of_data_messages_only() {
        assert_eq!(data_len(&text("héllo")), Some(6));
        assert_eq!(data_len(&Message::Binary(vec![0; 3].into())), Some(3));
        assert_eq!(data_len(&Message::Ping(vec![0; 3].into())), None);
    }

    #[test]
    fn a_closed_client_refuses_and_queue_false_means_not_connected() {
        let m = Metrics::default();
        let mut outbox = Outbox::default();
        is(outbox.send(text("a"), NO_TICKET, &cfg(10, 100, false), &m), "not open");
        outbox.set_accepting(true);
        let off = QueueConfig {
            enabled: false,
            ..cfg(10, 100, false)
        };
        is(outbox.send(text("a"), NO_TICKET, &off, &m), "not connected");
        assert!(outbox.is_queue_empty());
        assert_eq!(counts(&m), (0, 0));
        assert!(
            !outbox.send_control(Message::Ping(Default::default())),
            "pings need a connection"
        );
    }

    #[test]
    fn reject_overflow_refuses_the_new_message_by_count_and_by_bytes() {
        let m = Metrics::default();
        let mut outbox = accepting();
        let c = cfg(2, 100, false);
        is(outbox.send(text("aa"), NO_TICKET, &c, &m), "queued");
        is(outbox.send(text("bbb"), NO_TICKET, &c, &m), "queued");
        is(outbox.send(text("c"), NO_TICKET, &c, &m), "queue full");
        assert_eq!(counts(&m), (2, 5));

        let m = Metrics::default();
        let mut outbox = accepting();
        let c = cfg(10, 10, false);
        is(outbox.send(text("666666"), NO_TICKET, &c, &m), "queued");
        is(outbox.send(text("55555"), NO_TICKET, &c, &m), "queue full");
        is(outbox.send(text("4444"), NO_TICKET, &c, &m), "queued");
        assert_eq!(counts(&m), (2, 10), "exactly full");
        assert_eq!(texts(&outbox.drain(&m)), ["666666", "4444"]);
    }

    #[test]
    fn drop_oldest_drops_as_many_as_needed_oldest_first() {
        let m = Metrics::default();
        let mut outbox = accepting();
        let c = cfg(2, 100, true);
        is(outbox.send(text("a"), NO_TICKET, &c, &m), "queued");
        is(outbox.send(text("b"), NO_TICKET, &c, &m), "queued");
        match outbox.send(text("c"), NO_TICKET, &c, &m) {
            SendOutcome::QueuedDropping(dropped) => assert_eq!(texts(&dropped), ["a"]),
            _ => panic!("expected a drop"),
        }
        assert_eq!(counts(&m), (2, 2));

        let m = Metrics::default();
        let mut outbox = accepting();
        let c = cfg(10, 10, true);
        for s in ["111", "222", "333"] {
            is(outbox.send(text(s), NO_TICKET, &c, &m), "queued");
        }
        match outbox.send(text("88888888"), NO_TICKET, &c, &m) {
            SendOutcome::QueuedDropping(dropped) => assert_eq!(texts(&dropped), ["111", "222", "333"]),
            _ => panic!("expected a drop"),
        }
        assert_eq!(counts(&m), (1, 8));
    }

    #[test]
    fn a_message_larger_than_the_queue_is_refused_without_dropping_anything() {
        let m = Metrics::default();
        let mut outbox = accepting();
        let c = cfg(10, 4, true);
        is(outbox.send(text("abc"), NO_TICKET, &c, &m), "queued");
        is(outbox.send(text("abcde"), NO_TICKET, &c, &m), "queue full");
        assert_eq!(counts(&m), (1, 3));
        let c = cfg(0, 100, true);
        is(outbox.send(text("x"), NO_TICKET, &c, &m), "queue full");
    }

    #[test]
    fn drain_and_discard_empty_the_queue_and_its_accounting() {
        let m = Metrics::default();
        let mut outbox = accepting();
        let c = cfg(10, 100, false);
        for s in ["a", "bb", "ccc"] {
            outbox.send(text(s), NO_TICKET, &c, &m);
        }
        assert_eq!(counts(&m), (3, 6));
        assert_eq!(texts(&outbox.drain(&m)), ["a", "bb", "ccc"]);
        assert_eq!(counts(&m), (0, 0));
        assert!(outbox.is_queue_empty());
        outbox.send(text("d"), NO_TICKET, &c, &m);
        outbox.send(text("e"), NO_TICKET, &c, &m);
        outbox.stop_accepting(None);
        assert_eq!(outbox.discard(&m), 2);
        assert_eq!(counts(&m), (0, 0));
        assert_eq!(outbox.discard(&m), 0);
    }

    #[test]
    fn a_discard_leaves_what_a_connect_accepted_since_the_disconnect() {
        let m = Metrics::default();
        let mut outbox = accepting();
        let c = cfg(3, 100, true);
        outbox.send(text("a"), 1, &c, &m);
        outbox.send(text("b"), 2, &c, &m);
        // A connection opens with them, and takes one more.
        let tx = Arc::new(SendQueue::default());
        outbox.open(tx.clone(), None, &m);
        is(outbox.send(text("z"), 7, &c, &m), "handed");
        // disconnect(), then connect(): a message sent now is for the next connection.
        outbox.stop_accepting(None);
        outbox.set_accepting(true);
        outbox.send(text("c"), 3, &c, &m);
        // The connection ends, handing back what it never wrote, to the front: older than "c".
        outbox.requeue(std::iter::from_fn(|| tx.messages.try_recv()).collect(), &m);
        assert_eq!(outbox.discard(&m), 3, "a, b and z");
        let discarded = [(1, Fate::Discarded), (2, Fate::Discarded), (7, Fate::Discarded)];
        assert_eq!(outbox.take_settled(), discarded);
        assert_eq!(counts(&m), (1, 1));
        // An overflow drops the oldest: the later sends are then all that is queued.
        outbox.send(text("d"), 4, &c, &m);
        outbox.send(text("e"), 5, &c, &m);
        outbox.send(text("f"), 6, &c, &m);
        assert_eq!(outbox.take_settled(), [(3, Fate::Overflow)]);
        assert_eq!(outbox.discard(&m), 0);
        // A second disconnect() discards them.
        outbox.stop_accepting(None);
        assert_eq!(outbox.discard(&m), 3);
        assert_eq!(counts(&m), (0, 0));
        // Queued with no disconnect() since (a giveup keeps them): a discard by ticket takes only those.
        outbox.take_settled();
        outbox.set_accepting(true);
        outbox.send(text("g"), 8, &c, &m);
        outbox.send(text("h"), NO_TICKET, &c, &m);
        outbox.send(text("i"), 9, &c, &m);
        assert_eq!(outbox.discard(&m), 0);
        assert_eq!(outbox.discard_tickets(&[9, 8], &m), 2);
        assert_eq!(outbox.take_settled(), [(8, Fate::Discarded), (9, Fate::Discarded)]);
        assert_eq!(counts(&m), (1, 1));
        // What stays is still what a disconnect() after a connect() keeps, then discards.
        assert_eq!(outbox.discard(&m), 0);
        outbox.stop_accepting(None);
        assert_eq!(outbox.discard(&m), 1);
        assert_eq!(counts(&m), (0, 0));
    }

    #[test]
    fn opening_hands_the_queue_over_in_order_then_later_sends_follow() {
        let m = Metrics::default();
        let mut outbox = accepting();
        let c = cfg(10, 100, false);
        outbox.send(text("a"), NO_TICKET, &c, &m);
        outbox.send(text("bb"), NO_TICKET, &c, &m);
        let tx = Arc::new(SendQueue::default());
        outbox.open(tx.clone(), None, &m);
        assert!(outbox.is_queue_empty());
        assert_eq!(counts(&m), (0, 3), "no longer queued, still buffered until written");
        is(outbox.send(text("ccc"), NO_TICKET, &c, &m), "handed");
        assert!(outbox.send_control(Message::Ping(Default::default())));
        assert_eq!(tx.in_channel.load(Acquire), 4);
        assert_eq!(counts(&m), (0, 6), "pings are not buffered data");
        let got: Vec<Message> = std::iter::from_fn(|| tx.messages.try_recv().map(|o| o.msg)).collect();
        assert_eq!(got.len(), 4);
        assert_eq!(texts(&got[..3]), ["a", "bb", "ccc"]);
        assert!(got[3].is_ping());
    }

    #[test]
    fn a_flushing_disconnect_hands_over_the_queue_and_ends_the_stream() {
        let m = Metrics::default();
        let mut outbox = accepting();
        let c = cfg(10, 100, false);
        outbox.send(text("a"), NO_TICKET, &c, &m);
        outbox.set_accepting(false);
        let tx = Arc::new(SendQueue::default());
        outbox.open(tx.clone(), None, &m);
        assert_eq!(tx.messages.try_recv().map(|m| data_len(&m.msg)), Some(Some(1)));
        assert!(
            tx.messages.send(Outbound::new(text("late"))).is_err(),
            "closed behind the queue"
        );
        is(outbox.send(text("b"), NO_TICKET, &c, &m), "not open");
    }

    #[test]
    fn disconnecting_ends_the_stream_without_waking_the_driver_early() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, AcqRel);
            }
        }
        let m = Metrics::default();
        let mut outbox = accepting();
        let tx = Arc::new(SendQueue::default());
        outbox.open(tx.clone(), None, &m);
        let wakes = Arc::new(Count(Default::default()));
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(tx.messages.poll_recv(&mut cx).is_pending());
        outbox.stop_accepting(None);
        // The command queued in the same step wakes it (`NativeClient::disconnect`).
        assert_eq!(wakes.0.load(Acquire), 0, "not woken into the caller's locks");
        assert!(
            matches!(tx.messages.poll_recv(&mut cx), std::task::Poll::Ready(None)),
            "the stream ended"
        );
        is(outbox.send(text("a"), NO_TICKET, &cfg(10, 100, false), &m), "not open");
    }

    #[test]
    fn sends_after_the_connection_ends_are_queued_behind_the_unsent_ones() {
        let m = Metrics::default();
        let mut outbox = accepting();
        let c = cfg(10, 100, false);
        let tx = Arc::new(SendQueue::default());
        outbox.open(tx.clone(), None, &m);
        is(outbox.send(text("a"), NO_TICKET, &c, &m), "handed");
        is(outbox.send(text("b"), NO_TICKET, &c, &m), "handed");
        // The connection's queue closed under the outbox: the send falls back to the queue.
        tx.messages.close();
        is(outbox.send(text("c"), NO_TICKET, &c, &m), "queued");
        assert_eq!(tx.in_channel.load(Acquire), 2, "the refused message is not counted");
        outbox.close_connection();
        is(outbox.send(text("d"), NO_TICKET, &c, &m), "queued");
        let unsent: Vec<Outbound> = std::iter::from_fn(|| tx.messages.try_recv()).collect();
        outbox.requeue(unsent, &m);
        assert_eq!(counts(&m), (4, 4));
        assert_eq!(texts(&outbox.drain(&m)), ["a", "b", "c", "d"]);
        assert_eq!(counts(&m), (0, 0));
    }

    #[test]
    fn leaving_the_connection_queues_later_sends_for_the_next_and_refuses_pings() {
        let m = Metrics::default();
        let mut outbox = accepting();
        let c = cfg(10, 100, false);
        let tx = Arc::new(SendQueue::default());
        outbox.open(tx.clone(), None, &m);
        is(outbox.send(text("before"), NO_TICKET, &c, &m), "handed");
        outbox.leave_connection();
        is(outbox.send(text("after"), NO_TICKET, &c, &m), "queued");
        assert!(
            !outbox.send_control(Message::Ping(Default::default())),
            "no connection to ping"
        );
        let handed: Vec<Message> = std::iter::from_fn(|| tx.messages.try_recv().map(|o| o.msg)).collect();
        assert_eq!(
            texts(&handed),
            ["before"],
            "the old connection keeps what it was handed, and only that"
        );
        assert!(
            tx.messages.send(Outbound::new(text("late"))).is_err(),
            "its stream has ended"
        );
        let next = Arc::new(SendQueue::default());
        outbox.open(next.clone(), None, &m);
        let got: Vec<Message> = std::iter::from_fn(|| next.messages.try_recv().map(|o| o.msg)).collect();
        assert_eq!(texts(&got), ["after"]);
    }

    #[test]
    fn tickets_follow_their_messages_and_settle_once_with_their_fate() {
        let m = Metrics::default();
        let mut outbox = accepting();
        let c = cfg(2, 100, true);
        is(outbox.send(text("a"), 1, &c, &m), "queued");
        is(outbox.send(text("b"), NO_TICKET, &c, &m), "queued");
        is(outbox.send(text("c"), 3, &c, &m), "dropping");
        assert_eq!(outbox.take_settled(), [(1, Fate::Overflow)], "only tickets settle");
        assert!(outbox.take_settled().is_empty(), "taken once");

        // Handed to a connection, back to the queue when it ends: the ticket travels along.
        let tx = Arc::new(SendQueue::default());
        outbox.open(tx.clone(), None, &m);
        is(outbox.send(text("d"), 4, &c, &m), "handed");
        outbox.close_connection();
        let unsent: Vec<Outbound> = std::iter::from_fn(|| tx.messages.try_recv()).collect();
        assert_eq!(unsent.iter().map(|o| o.ticket).collect::<Vec<_>>(), [NO_TICKET, 3, 4]);
        outbox.requeue(unsent, &m);
        assert!(outbox.take_settled().is_empty(), "requeued, not settled");
        assert_eq!(texts(&outbox.drain(&m)[..1]), ["b"]);
        assert_eq!(outbox.take_settled(), [(3, Fate::Drained), (4, Fate::Drained)]);

        is(outbox.send(text("e"), 5, &c, &m), "queued");
        outbox.stop_accepting(None);
        assert_eq!(outbox.discard(&m), 1);
        outbox.settle(6, Fate::Written);
        outbox.settle(NO_TICKET, Fate::Written);
        assert_eq!(outbox.take_settled(), [(5, Fate::Discarded), (6, Fate::Written)]);
    }
}
