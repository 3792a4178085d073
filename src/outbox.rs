//! Where `send()` puts a message: straight into the open connection, into the
//! bounded offline queue while connecting or waiting to reconnect, or nowhere
//! (with an error) when the client is closed. Nothing is dropped silently: an
//! overflow either refuses the message or hands the dropped ones back.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::Arc;

use tungstenite::Message;

use crate::connection::{data_len, SendQueue};
use crate::frame;
use crate::stats::{self, Metrics};
use crate::transport::Writer;

/// The send fast path: frame the message here, on the JS thread, and cork it for one write
/// at the end of this turn, without waking the driver. `Some(first)`: corked (`first`: schedule
/// the uncork); `None`: the socket is backed up, use the driver.
fn write_now(writer: &Writer, msg: &Message, metrics: &Metrics) -> Option<bool> {
    let (opcode, payload) = match msg {
        Message::Text(t) => (frame::OPCODE_TEXT, t.as_bytes()),
        Message::Binary(b) => (frame::OPCODE_BINARY, b.as_ref()),
        _ => return None,
    };
    let mut framed = Vec::with_capacity(payload.len() + 14);
    frame::encode(opcode, payload, &mut framed);
    let first = writer.cork_frame(&framed)?;
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
    Sent,
    /// Corked by the fast path: the caller schedules `uncork()` at the end of this turn.
    SentUncorkLater,
    Queued,
    /// Queued after dropping these (oldest first).
    QueuedDropping(Vec<Message>),
    /// The client is closed (`disconnect()`, or it gave up).
    NotOpen,
    /// No connection, and `queue: false`.
    NotConnected,
    QueueFull,
}

/// Messages up to this size may be written straight from the JS thread.
const FAST_PATH_MAX: usize = 16 * 1024;

#[derive(Default)]
pub struct Outbox {
    /// The open connection's queue, with the count of messages handed to its driver and not
    /// yet written: the fast path may only write when that count is zero, so that nothing
    /// overtakes what was sent before.
    tx: Option<Arc<SendQueue>>,
    /// The open connection's shared writer (plain TCP).
    writer: Option<Arc<Writer>>,
    /// `send()` is accepted at all: between `connect()` and `disconnect()` or giving up.
    accepting: bool,
    queue: VecDeque<Message>,
    queued_bytes: usize,
}

impl Outbox {
    pub fn send(&mut self, msg: Message, cfg: &QueueConfig, metrics: &Metrics) -> SendOutcome {
        if !self.accepting {
            return SendOutcome::NotOpen;
        }
        let len = data_len(&msg).unwrap_or(0);
        if let Some(tx) = &self.tx {
            if let Some(writer) = self.writer.as_ref().filter(|_| len <= FAST_PATH_MAX) {
                if tx.in_channel.load(Acquire) == 0 {
                    match write_now(writer, &msg, metrics) {
                        Some(true) => return SendOutcome::SentUncorkLater,
                        Some(false) => return SendOutcome::Sent,
                        None => {}
                    }
                }
            }
            tx.in_channel.fetch_add(1, AcqRel);
            match tx.messages.send(msg) {
                Ok(()) => {
                    metrics.buffered.fetch_add(len as u64, Relaxed);
                    return SendOutcome::Sent;
                }
                // The connection just ended; its leftovers are being requeued: queue behind them.
                Err(msg) => {
                    tx.in_channel.fetch_sub(1, AcqRel);
                    return self.enqueue(msg, len, cfg, metrics);
                }
            }
        }
        self.enqueue(msg, len, cfg, metrics)
    }

    /// Writes what the fast path corked during this turn of the JS event loop.
    pub fn uncork(&self) {
        if let Some(w) = &self.writer {
            w.uncork();
        }
    }

    /// Control frames (pings) go only to an open connection.
    pub fn send_control(&mut self, msg: Message) -> bool {
        let Some(tx) = self.tx.as_ref().filter(|_| self.accepting) else {
            return false;
        };
        tx.in_channel.fetch_add(1, AcqRel);
        tx.messages.send(msg).is_ok()
    }

    fn enqueue(&mut self, msg: Message, len: usize, cfg: &QueueConfig, metrics: &Metrics) -> SendOutcome {
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
                match self.pop(metrics) {
                    Some(m) => dropped.push(m),
                    None => return SendOutcome::QueueFull,
                }
            }
        }
        self.queued_bytes += len;
        self.queue.push_back(msg);
        metrics.queued_messages.fetch_add(1, Relaxed);
        metrics.buffered.fetch_add(len as u64, Relaxed);
        if dropped.is_empty() {
            SendOutcome::Queued
        } else {
            SendOutcome::QueuedDropping(dropped)
        }
    }

    fn pop(&mut self, metrics: &Metrics) -> Option<Message> {
        let m = self.queue.pop_front()?;
        let len = data_len(&m).unwrap_or(0);
        self.queued_bytes -= len;
        metrics.queued_messages.fetch_sub(1, Relaxed);
        metrics.buffered.fetch_sub(len as u64, Relaxed);
        Some(m)
    }

    pub fn set_accepting(&mut self, accepting: bool) {
        self.accepting = accepting;
        if !accepting {
            // Closing the queue lets the connection drain what it has, then write the close frame.
            self.close_connection();
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
            let len = data_len(&m).unwrap_or(0);
            self.queued_bytes -= len;
            metrics.queued_messages.fetch_sub(1, Relaxed);
            let _ = tx.messages.send(m);
        }
        // A flushing disconnect keeps refusing new messages: the stream ends after the queue.
        if self.accepting {
            self.tx = Some(tx);
        } else {
            tx.messages.close();
        }
    }

    /// The connection ended: stop routing to it.
    pub fn close_connection(&mut self) {
        if let Some(q) = self.tx.take() {
            q.messages.close();
        }
        self.writer = None;
    }

    /// Messages the ended connection never wrote go back to the front, oldest first.
    pub fn requeue(&mut self, unsent: Vec<Message>, metrics: &Metrics) {
        for m in unsent.into_iter().rev() {
            self.queued_bytes += data_len(&m).unwrap_or(0);
            self.queue.push_front(m);
            metrics.queued_messages.fetch_add(1, Relaxed);
        }
    }

    /// Hands back every queued message (`drainQueue()`).
    pub fn drain(&mut self, metrics: &Metrics) -> Vec<Message> {
        let mut out = Vec::with_capacity(self.queue.len());
        while let Some(m) = self.pop(metrics) {
            out.push(m);
        }
        out
    }

    /// Discards the queue (`disconnect()` without flush); returns how many were discarded.
    pub fn discard(&mut self, metrics: &Metrics) -> usize {
        self.drain(metrics).len()
    }
}
