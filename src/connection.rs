//! One open WebSocket connection: the full-duplex I/O of its socket (reading under the read
//! bound, inflating, writing what `send()` queued, heartbeats) and the close handshake. The
//! attempt that opens it is `attempt`, its HTTP upgrade `upgrade`.
//!
//! The open socket is driven by one hand-written poll, not by a reader task and a
//! writer task: each poll writes what `send()` queued (stopping, not blocking,
//! when the socket is full) and then reads everything that is ready, so a peer
//! that is busy writing to us can never deadlock against our own writes. (The socket is split
//! into halves, `plain.rs`, only so that the JS thread can write it and read it too.)

use std::collections::VecDeque;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::time::Sleep;
use tungstenite::Message;

use crate::ask;
use crate::deflate::{
    Compressor, Decompressor, DeflateConfig, Deflating, InflateError, Inflated, DEFLATE_STEP, INFLATE_STEP,
};
use crate::errors::{self, ConnError};
use crate::events::{BinaryRun, JsEvent, Small, TextRun};
use crate::frame::{self, Decoder, Incoming, WireError};
use crate::outbox::{data_frame, data_len, Fate, Outbound, SendQueue, NO_TICKET};
use crate::reader::{self, SharedReader};
use crate::recycle;
use crate::shared::Shared;
use crate::stats::{self, Gauge, Heartbeats, IoBuffers, OpenConnections};
use crate::testing::{self, Probe};
use crate::tls::TlsOptions;
use crate::transport::{Dial, Transport};
use crate::upgrade::Opened;
use crate::writer::Writer;

#[derive(Clone, Debug)]
pub struct ConnConfig {
    pub connect_timeout: Duration,
    /// `family` and `localAddress`.
    pub dial: Dial,
    /// The client has a `lookup` function: host names are looked up by it.
    pub js_lookup: bool,
    /// The client's JS side, for one attempt (set by `Attempt::start`): its `lookup` and
    /// `tls.checkServerIdentity` are asked through it.
    pub js: Option<ask::Asker>,
    /// `maxRedirects` when following redirects (`followRedirects`), else `None`.
    pub max_redirects: Option<u32>,
    /// The proxy came from the environment: each redirect decides its own from it.
    pub proxy_env: Option<Arc<crate::proxy::ProxyEnv>>,
    /// `maxPayload`, and the longest text that can become a JS string: longer ends with 1009.
    pub limits: frame::Limits,
    /// 0 disables heartbeats.
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub close_timeout: Duration,
    /// `autoPong`: a ping is answered here (false: JS answers it, or nobody does).
    pub auto_pong: bool,
    /// permessage-deflate as offered (`None`: not offered).
    pub deflate: Option<DeflateConfig>,
    pub tls: TlsOptions,
    /// Built on the first `wss:` attempt, then shared by every later one.
    pub tls_config: Arc<std::sync::OnceLock<Result<crate::tls::SharedClientConfig, String>>>,
}

impl ConnConfig {
    /// Whether attempts ask the client's JS functions anything (`lookup`, `checkServerIdentity`).
    pub fn asks_js(&self) -> bool {
        self.js_lookup || self.tls.asks_identity()
    }
}

/// How an open connection ended.
#[derive(Debug)]
pub struct Ended {
    pub code: u16,
    pub reason: String,
    pub was_clean: bool,
    pub error: Option<ConnError>,
    /// `error` went to JS when the connection began closing (`JsEvent::Closing`): the close
    /// reports it no more.
    pub error_reported: bool,
}

pub enum IoEvent {
    /// Messages were appended to the event buffer.
    Progress,
    Ended(Ended),
}

/// Upper bound of messages taken in one poll, so that deliveries reach JS
/// in batches and commands are not starved.
const MAX_BATCH: usize = 512;

/// Framed bytes gathered before one write to the socket.
const WRITE_BATCH: usize = 64 * 1024;

/// A message sent uncompressed from this size on is framed a piece of `WRITE_BATCH` at a time as the
/// socket takes it, not copied whole into the write buffer (the time and memory of a copy of it).
const IN_PIECES_FROM: usize = 256 * 1024;

/// What `send()` needs to reach an open connection.
pub struct Sending {
    pub tx: Arc<SendQueue>,
    pub writer: Arc<Writer>,
}

pub struct OpenConn {
    transport: Transport,
    input: Input,
    out_rx: Arc<SendQueue>,
    /// What is framed and not yet written; `None` whenever everything is written.
    out: Option<Box<Outgoing>>,
    needs_flush: bool,
    /// A message sent with a callback was written: JS is told at the end of this poll.
    callbacks_due: bool,
    /// Our close frame, queued behind everything sent before `disconnect()`.
    close_frame: Option<Box<(u16, String)>>,
    /// Our close frame is framed: nothing may follow it.
    sent_close: bool,
    /// What this poll may still compress: a large message is compressed over several polls.
    deflate_budget: u32,
    /// This poll compressed its share and gave way to other tasks.
    write_yielded: bool,
    /// The peer's close once answered, or our failing of the connection: how long its TCP close may take.
    closing: Option<Box<Closing>>,
    /// The peer's close frame or a violation, held back while JS takes the messages read before it.
    held: Option<Box<Held>>,
    /// A write failed: what the peer sent before is still read.
    broken: Option<Box<Broken>>,
    /// Boxed, like the close state: the connection lives inline in its client's task.
    heartbeat: Option<Box<Heartbeat>>,
    /// With permessage-deflate: inflates what the server compressed.
    inflater: Option<Box<Decompressor>>,
    /// The client's metrics and read gate.
    shared: Arc<Shared>,
    _gauge: Gauge<OpenConnections>,
    /// The pool of large payload buffers is kept while a connection is open.
    _recycling: recycle::Holder,
}

/// What the decoder holds of the frame or message being read (`Decoder::progress`).
fn read_progress(input: &Input) -> usize {
    match input {
        Input::Own(own) => own.decoder.progress(),
        Input::Shared(r) => r.progress(),
    }
}

/// Where the connection's frames come from.
enum Input {
    /// Its own decoder over the transport (TLS, compression, or no JS-thread reading). Boxed like
    /// the shared reader: the connection lives inline in its client's task, which then fits
    /// tokio's 384-byte task cell instead of the 512-byte one.
    Own(Box<OwnInput>),
    /// The read side it shares with the JS thread (plain TCP; see `reader`).
    Shared(Arc<SharedReader>),
}

struct OwnInput {
    decoder: Decoder,
    /// Counts the decoder's memory, and a message's being inflated, in `ioBuffers` while there is any.
    read_buffer: Option<Gauge<IoBuffers>>,
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        if let Input::Shared(r) = &self.input {
            r.end();
        }
    }
}

/// A close frame went each way, or ours after a violation: the peer closes the TCP connection
/// first (RFC 6455 §7.1.1), within `close_timeout`. Nothing it sends meanwhile is parsed (nothing
/// may follow a close frame, §5.5.1): it is read and dropped, `unread` bytes more at most, a turn
/// at a time. Dropping the socket at once would leave the peer's bytes unread, so the kernel would
/// reset the connection, and a reset can discard at the peer what we wrote last before it reads
/// it: the echo of a message that came before the violation, our close frame itself. A peer that
/// sends more than `CLOSING_UNREAD` after the close is not reading, or floods: either way it is
/// not waited for.
struct Closing {
    /// The code reported: the peer's (1005 without one), or the one we failed the connection with.
    code: u16,
    how: HowClosing,
    deadline: Pin<Box<Sleep>>,
    /// What is still read and dropped at most before the connection ends without the peer's TCP close.
    unread: usize,
    /// Our side of the connection was ended (`end_once`).
    ended_ours: bool,
    /// The peer ended its side (TCP FIN): only our writes are waited for now, a half-closed socket
    /// still takes them (the rest of a message before our close frame, RFC 6455 §5.5.1).
    peer_ended: bool,
    /// The socket took our close frame (`end_once`): what may still wait behind it is a `wss:`
    /// close_notify, which the close's being clean does not depend on.
    ours_written: bool,
    /// JS was told the connection is closing (`JsEvent::Closing`, with the error we failed it with).
    reported: bool,
}

enum HowClosing {
    /// The peer's close frame, answered (its reason).
    Peer(String),
    /// We failed the connection (RFC 6455 §7.1.7).
    Failed(ConnError),
}

/// What a closing connection reads and drops at most while it waits for the peer's TCP close: what
/// a peer had on its way before it read our close frame (a socket's buffers, about).
const CLOSING_UNREAD: usize = 1 << 20;
/// What it reads in one poll at most, before other tasks have a turn.
const CLOSING_UNREAD_TURN: usize = 64 * 1024;

impl Closing {
    fn new(code: u16, how: HowClosing, close_timeout: Duration) -> Box<Closing> {
        Box::new(Closing {
            code,
            how,
            deadline: Box::pin(tokio::time::sleep(close_timeout)),
            unread: CLOSING_UNREAD,
            ended_ours: false,
            peer_ended: false,
            ours_written: false,
            reported: false,
        })
    }

    /// `ours_written`: the socket took our close frame. The close is clean only then, with the
    /// peer's received (as `ws` and the WHATWG API count it): cut off before it went, it is not.
    fn end(self, ours_written: bool) -> Ended {
        match self.how {
            HowClosing::Peer(reason) => Ended {
                code: self.code,
                reason,
                was_clean: ours_written,
                error: None,
                error_reported: false,
            },
            // The failure's code only if our close frame carried it: else 1006, as `unsent_failure`.
            HowClosing::Failed(error) => Ended {
                code: if ours_written { self.code } else { 1006 },
                reason: String::new(),
                was_clean: false,
                error: Some(error),
                error_reported: self.reported,
            },
        }
    }

    /// The event that tells JS the connection is closing, once.
    fn report(&mut self) -> Option<JsEvent> {
        if std::mem::replace(&mut self.reported, true) {
            return None;
        }
        Some(JsEvent::Closing(match &self.how {
            HowClosing::Peer(_) => None,
            HowClosing::Failed(error) => Some(error.clone()),
        }))
    }
}

/// What ends a connection, once JS has taken every message that came before it: what JS sends in
/// reply to those messages is written first (an echo precedes our close), within `close_timeout`.
struct Held {
    end: HeldEnd,
    deadline: Pin<Box<Sleep>>,
    close_timeout: Duration,
}

/// A write failed while the connection was open (the peer reset it, typically while a pong or a
/// reply was on its way): nothing more is written, and what the peer sent before the failure is
/// still read and delivered, as `ws` parses everything it had read. A close frame or a violation
/// among it is how the connection ended (`ended_by`); else the write's failure is. Reading stops
/// at the socket's end (after a reset it comes after the data) or `close_timeout` after the
/// failure (a paused client, a busy thread, a socket that failed to write and stays open).
struct Broken {
    error: std::io::Error,
    deadline: Pin<Box<Sleep>>,
}

enum HeldEnd {
    /// The peer's close frame (`None`: without a status code).
    Close(Option<(u16, String)>),
    /// A violation of the protocol (1002, 1007, 1009).
    Failed(WireError),
}

/// Framed bytes on their way to the socket. Boxed, and dropped as soon as everything is
/// written: an idle connection keeps no write buffer, and its task stays small.
struct Outgoing {
    /// Whole frames; `wbuf[..pos]` is already written.
    wbuf: Vec<u8>,
    pos: usize,
    /// The `out_rx` messages framed into `wbuf`, with the offset where each frame ends. A message
    /// counts as sent once the socket took its last byte; the others are given back if the
    /// connection drops first (a half-written frame is sent again, whole, on the next connection).
    in_wbuf: VecDeque<(Outbound, usize)>,
    /// The payload of the latest ping, when it arrived with the socket backed up: only the
    /// most recent ping is answered then (RFC 6455 §5.5.3), so a ping flood to a peer that does
    /// not read cannot grow this buffer.
    pong: Option<Bytes>,
    /// The message being compressed, between steps: it comes before anything queued after it.
    deflating: Option<(Outbound, Deflating)>,
    /// A large message framed in pieces: its header is in `wbuf`, and this much of its payload
    /// (masked with this mask). Nothing else goes into `wbuf` before the rest of it.
    in_pieces: Option<(Outbound, usize, [u8; 4])>,
    /// Our answer to the peer's close when it came in the middle of that message: it follows the
    /// message's last piece (the rest of the message is not framed all at once to make room for it).
    after_pieces: Vec<u8>,
    _gauge: Gauge<IoBuffers>,
}

impl Default for Outgoing {
    fn default() -> Self {
        Outgoing {
            wbuf: Vec::new(),
            pos: 0,
            in_wbuf: VecDeque::new(),
            pong: None,
            deflating: None,
            in_pieces: None,
            after_pieces: Vec::new(),
            _gauge: Gauge::<IoBuffers>::new(),
        }
    }
}

impl Outgoing {
    fn unwritten(&self) -> usize {
        self.wbuf.len() - self.pos
    }

    /// Drops the written prefix once it is at least as long as the rest (amortised: each byte
    /// moves at most once on average), so that appending does not grow the buffer forever. Only
    /// when something may be appended (less than `WRITE_BATCH` unwritten): the rest of a large
    /// frame is not moved again and again while the socket takes it.
    fn compact(&mut self) {
        if self.pos > 0 && self.pos >= self.unwritten() && self.unwritten() < WRITE_BATCH {
            self.wbuf.drain(..self.pos);
            for (_, end) in self.in_wbuf.iter_mut() {
                *end -= self.pos;
            }
            self.pos = 0;
        }
    }

    /// Appends up to `most` more bytes (a multiple of 4) of the message framed in pieces; once it is
    /// whole, it counts among the messages in `wbuf`.
    fn append_piece(&mut self, most: usize) {
        let Some((m, done, mask)) = self.in_pieces.as_mut() else {
            return;
        };
        let payload = data_frame(&m.msg).map_or(&[][..], |(_, p)| p);
        let end = payload.len().min(done.saturating_add(most));
        frame::append_masked(&payload[*done..end], *mask, &mut self.wbuf);
        *done = end;
        if end == payload.len() {
            let (m, ..) = self.in_pieces.take().expect("in pieces");
            self.in_wbuf.push_back((m, self.wbuf.len()));
            self.wbuf.append(&mut self.after_pieces);
        }
    }

    /// The socket took `n` more bytes: account for every message now wholly written. Returns
    /// whether one of them was sent with a callback (its ticket is settled in the outbox).
    fn written(&mut self, n: usize, in_channel: &AtomicUsize, shared: &Shared) -> bool {
        self.pos += n;
        let metrics = &shared.metrics;
        let (mut count, mut data, mut bytes, mut ticketed) = (0usize, 0u64, 0u64, false);
        while let Some((m, _)) = self.in_wbuf.front().filter(|(_, end)| *end <= self.pos) {
            if let Some(len) = data_len(&m.msg) {
                data += 1;
                bytes += len as u64;
            }
            if m.ticket != NO_TICKET {
                shared.outbox().settle(m.ticket, Fate::Written);
                ticketed = true;
            }
            count += 1;
            self.in_wbuf.pop_front();
        }
        if self.pos == self.wbuf.len() {
            self.wbuf.clear();
            self.pos = 0;
        }
        if count == 0 {
            return false;
        }
        // Only when none is left may the fast path go again: its frames must follow these.
        in_channel.fetch_sub(count, Ordering::AcqRel);
        stats::add(&metrics.messages_sent, data);
        stats::add(&metrics.bytes_sent, bytes);
        metrics.buffered.fetch_sub(bytes, Ordering::Relaxed);
        ticketed
    }
}

/// What the heartbeat's pings carry, so that their pongs, which a peer echoes (RFC 6455 §5.5.3), are
/// told from the answers to the application's pings and not reported to it.
const HEARTBEAT_PAYLOAD: &[u8] = b"redial-ws";

/// The connection's own ping timer and pong deadline: it lives and dies with the connection.
struct Heartbeat {
    interval: Duration,
    pong_timeout: Duration,
    next_ping: Pin<Box<Sleep>>,
    pong_deadline: Option<Pin<Box<Sleep>>>,
    /// What the socket had taken of ours when the pong deadline was armed.
    took_at_arm: u64,
    /// What the decoder held of a message in progress then (`read_progress`).
    read_at_arm: usize,
    ping_due: bool,
    /// The ping that armed the pong deadline is not out yet: it waits behind our writes.
    ping_behind: bool,
    _gauge: Gauge<Heartbeats>,
}

/// A violation the client could not tell the peer about in a close frame (its own close frame
/// went before, for another reason; a message is being framed in pieces; the socket failed): the
/// connection ends abnormally, 1006 (RFC 6455 §7.1.5: no close frame received), as `ws` reports
/// it, not with the code no frame carried.
fn unsent_failure(e: WireError) -> Poll<IoEvent> {
    let (error, _) = e.to_conn_error();
    ended(1006, String::new(), false, Some(error))
}

fn ended(code: u16, reason: String, was_clean: bool, error: Option<ConnError>) -> Poll<IoEvent> {
    Poll::Ready(IoEvent::Ended(Ended {
        code,
        reason,
        was_clean,
        error,
        error_reported: false,
    }))
}

impl OpenConn {
    pub fn new(opened: Opened, shared: Arc<Shared>, cfg: &ConnConfig) -> (Self, Sending) {
        let negotiated = opened.deflate.as_ref().map(|(n, _)| *n);
        let compressor = negotiated
            .zip(cfg.deflate.as_ref())
            .map(|(n, d)| Compressor::new(d, &n));
        let out_rx = Arc::new(SendQueue::new(compressor));
        let tx = out_rx.clone();
        let heartbeat = (!cfg.ping_interval.is_zero()).then(|| {
            Box::new(Heartbeat {
                interval: cfg.ping_interval,
                pong_timeout: cfg.pong_timeout,
                next_ping: Box::pin(tokio::time::sleep(cfg.ping_interval)),
                pong_deadline: None,
                took_at_arm: 0,
                read_at_arm: 0,
                ping_due: false,
                ping_behind: false,
                _gauge: Gauge::<Heartbeats>::new(),
            })
        });
        let mut transport = opened.transport;
        let sending = Sending {
            tx,
            writer: transport.writer(),
        };
        // The JS thread may read an uncompressed connection (through its TLS session for `wss:`);
        // a compressed one is always inflated here.
        let read_half = (negotiated.is_none() && shared.direct_read)
            .then(|| transport.take_read_half())
            .flatten();
        let input = match read_half {
            Some(half) => Input::Shared(Arc::new(SharedReader::new(
                half,
                transport.session(),
                opened.leftover,
                cfg.limits,
            ))),
            None => Input::Own(Box::new(OwnInput {
                decoder: Decoder::new(opened.leftover),
                read_buffer: None,
            })),
        };
        let conn = OpenConn {
            transport,
            input,
            out_rx,
            out: None,
            needs_flush: false,
            callbacks_due: false,
            close_frame: None,
            sent_close: false,
            deflate_budget: 0,
            write_yielded: false,
            closing: None,
            held: None,
            broken: None,
            heartbeat,
            inflater: negotiated.map(|n| Box::new(Decompressor::new(&n))),
            shared,
            _gauge: Gauge::<OpenConnections>::new(),
            _recycling: recycle::Holder::new(),
        };
        (conn, sending)
    }

    /// Queues our close frame behind everything already sent. The caller has
    /// closed `out_rx`, so it ends once drained.
    pub fn begin_close(&mut self, code: u16, reason: String) {
        if self.transport.write_side().closed_by_js() {
            // Written on the JS thread already (`Outbox::write_close_now`).
            self.sent_close = true;
        } else {
            self.close_frame = Some(Box::new((code, reason)));
        }
    }

    /// Whether the driver writes a close frame now: not if one went from the JS thread (the writer
    /// then knows that one is on its way, and the JS thread writes none). Either way, ours is sent.
    fn claim_close(&mut self) -> bool {
        self.sent_close = true;
        self.transport.write_side().driver_closes()
    }

    /// `terminate()`: what `send()` handed this connection goes out as far as the socket takes it
    /// now, without waiting, as `ws`'s writes made before its `terminate()` do; the rest is
    /// discarded with the connection, which the caller drops next: nothing needs waking for it,
    /// so a no-op waker takes the place of the task's. No close frame: none is due yet.
    pub fn write_what_fits(&mut self) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // A write that fails changes nothing: the connection is dropped either way.
        let _ = self.poll_write(&mut cx);
    }

    /// Data messages accepted for this connection but never handed to the socket, oldest first.
    /// The caller has already stopped new sends from reaching `out_rx`.
    pub fn take_unsent(&mut self) -> Vec<Outbound> {
        let mut unsent: Vec<Outbound> = self
            .out
            .take()
            .map(|o| {
                let o = *o;
                let in_pieces = o.in_pieces.map(|(m, ..)| m);
                let deflating = o.deflating.map(|(m, _)| m);
                o.in_wbuf
                    .into_iter()
                    .map(|(m, _)| m)
                    .chain(in_pieces)
                    .chain(deflating)
                    .collect()
            })
            .unwrap_or_default();
        while let Some(m) = self.out_rx.messages.try_recv() {
            unsent.push(m);
        }
        unsent.retain(|m| data_len(&m.msg).is_some());
        unsent
    }

    /// The most a compressed message may inflate to: `maxPayload`, and for text the longest JS string.
    fn inflate_limit(text: bool, limits: &frame::Limits) -> usize {
        if text {
            limits.max_text.min(limits.max_payload)
        } else {
            limits.max_payload
        }
    }

    /// Goes on with the compressed message being inflated, `INFLATE_STEP` bytes of output at
    /// most: the message once whole, within its limit and, for text, checked as UTF-8.
    fn inflate_step(&mut self, limits: &frame::Limits) -> Poll<Result<Incoming, WireError>> {
        let Some(inflater) = self.inflater.as_mut() else {
            return Poll::Pending;
        };
        let inflated = ready!(inflater.step(INFLATE_STEP)).map_err(|e| match e {
            InflateError::TooBig => WireError::InflatesTooBig {
                max: inflater.max_output(),
            },
            InflateError::Corrupt(why) => WireError::Corrupt(format!("invalid compressed data ({why})")),
            InflateError::NotUtf8 => WireError::Utf8("a text message"),
            InflateError::NoMemory(wanted) => WireError::NoMemory { wanted: wanted as u64 },
        });
        Poll::Ready(inflated.and_then(|inflated| match inflated {
            Inflated::Binary(bytes) => Ok(Incoming::Binary(bytes.into())),
            Inflated::Text(text) => Ok(Incoming::Text(text.into())),
            Inflated::UncheckedText(bytes) => frame::text_message(Bytes::from(bytes), limits).map(Incoming::Text),
        }))
    }

    /// Framed bytes waiting for the socket, created on first use, to append a frame to; while a
    /// message is framed in pieces, what follows its last piece (a frame cannot go inside it).
    fn wbuf(&mut self) -> &mut Vec<u8> {
        let out = self.out.get_or_insert_with(Box::default);
        match out.in_pieces {
            Some(_) => &mut out.after_pieces,
            None => &mut out.wbuf,
        }
    }

    /// `cfg`: the configuration the connection was opened with.
    pub fn poll_io(&mut self, cx: &mut Context<'_>, cfg: &ConnConfig, events: &mut Vec<JsEvent>) -> Poll<IoEvent> {
        self.deflate_budget = DEFLATE_STEP as u32;
        self.write_yielded = false;
        let mut io = self.poll_io_inner(cx, cfg, events);
        // The close handshake began (the peer's close answered, or the connection failed): JS
        // reads it closing from now on, as `ws` does, and hears at once why it failed; its `close`
        // comes when the TCP connection ends. Sends stop going to it: queued for the next
        // connection, or refused (a ping too).
        if let Some(report) = self.closing.as_deref_mut().and_then(Closing::report) {
            self.shared.outbox().close_connection();
            events.push(report);
        }
        if self.write_yielded && matches!(io, Poll::Ready(IoEvent::Progress)) {
            // The task is woken once other tasks had their turn: not polled again at once.
            io = Poll::Pending;
        }
        if std::mem::take(&mut self.callbacks_due) {
            events.push(JsEvent::Sent);
        }
        if let Input::Own(own) = &mut self.input {
            // A message inflated over several polls holds its output between them.
            let holds = own.decoder.holds_buffer() || self.inflater.as_ref().is_some_and(|i| i.inflating());
            if holds != own.read_buffer.is_some() {
                own.read_buffer = holds.then(Gauge::<IoBuffers>::new);
            }
        }
        io
    }

    fn poll_io_inner(&mut self, cx: &mut Context<'_>, cfg: &ConnConfig, events: &mut Vec<JsEvent>) -> Poll<IoEvent> {
        if self.held.is_some() {
            if let Some(end) = self.release_held(cx) {
                return end;
            }
            if self.held.is_some() {
                return Poll::Pending;
            }
        }
        if self.closing.is_some() {
            return self.poll_closing(cx);
        }
        if self.broken.is_none() {
            self.heartbeat_tick(cx);
            if let Err(e) = self.poll_write(cx) {
                self.break_off(e, cfg.close_timeout);
            } else {
                self.note_ping_out(cx);
            }
        }
        if let Some(b) = self.broken.as_mut() {
            if b.deadline.as_mut().poll(cx).is_ready() {
                return self.ended_by(WireError::Eof);
            }
        }
        let mut n = 0;
        // A large compressed message is inflated over several polls: this one gave way to other tasks.
        let mut yielded = false;
        // Data messages and their bytes this poll read: a stream of larger messages stays here.
        let (mut read_messages, mut read_bytes) = (0, 0);
        let shared_reader = match &self.input {
            Input::Shared(r) => Some(r.clone()),
            Input::Own(_) => None,
        };
        let mut shared_state = shared_reader.as_ref().map(|r| r.lock());
        let shared = self.shared.clone();
        let mut read = shared.read_gate.batch(&shared.metrics);
        loop {
            if read.is_closed(cx) {
                // JS is behind: leave the data in the socket. Unread pongs are not a dead peer.
                if let Some(hb) = self.heartbeat.as_mut() {
                    hb.pong_deadline = None;
                }
                return if n > 0 {
                    Poll::Ready(IoEvent::Progress)
                } else {
                    Poll::Pending
                };
            }
            let limits = frame::Limits {
                deflate: self.inflater.is_some(),
                ..cfg.limits
            };
            // A message being inflated comes before anything read after it.
            let inflating = self.inflater.as_ref().is_some_and(|i| i.inflating());
            if !inflating {
                let small = |m: Small<'_>| JsEvent::push_small(events, m);
                let max = TextRun::MAX_MESSAGE.min(BinaryRun::MAX_MESSAGE);
                let taken = match (&mut self.input, shared_reader.as_ref(), shared_state.as_mut()) {
                    (Input::Own(own), ..) => own.decoder.take_small(&limits, max, small),
                    (Input::Shared(_), Some(r), Some(st)) => r.take_small(st, max, small),
                    (Input::Shared(_), ..) => None,
                };
                if let Some(len) = taken {
                    // As a message from `poll_frame` below, without the moves of its `Incoming`.
                    if let Some(hb) = self.heartbeat.as_mut() {
                        hb.pong_deadline = None;
                    }
                    read.message(len);
                    read_messages += 1;
                    read_bytes += len;
                    n += 1;
                    if n >= MAX_BATCH {
                        cx.waker().wake_by_ref();
                        break;
                    }
                    continue;
                }
            }
            let polled = if inflating {
                match self.inflate_step(&limits) {
                    Poll::Ready(inflated) => Poll::Ready(inflated),
                    Poll::Pending => {
                        // More to inflate: let the runtime's other tasks and its I/O have a turn first.
                        let _ = pin!(tokio::task::yield_now()).poll(cx);
                        yielded = true;
                        break;
                    }
                }
            } else {
                match (&mut self.input, shared_reader.as_ref(), shared_state.as_mut()) {
                    (Input::Own(own), ..) => own.decoder.poll_next(cx, &mut self.transport, &limits),
                    (Input::Shared(_), Some(r), Some(st)) => r.poll_frame(st, cx),
                    (Input::Shared(_), ..) => Poll::Pending,
                }
            };
            match polled {
                Poll::Ready(Ok(frame)) => {
                    // Any frame proves the peer alive.
                    if let Some(hb) = self.heartbeat.as_mut() {
                        hb.pong_deadline = None;
                    }
                    let frame = match frame {
                        Incoming::Compressed { text, data } => {
                            let max = Self::inflate_limit(text, &limits);
                            let Some(inflater) = self.inflater.as_mut() else {
                                // The decoder takes RSV1 only where deflate was negotiated.
                                read.flush();
                                let e = WireError::Protocol("RSV1 set without permessage-deflate".into());
                                self.hold(HeldEnd::Failed(e), cfg);
                                break;
                            };
                            // Inflated from the next turn of this loop on, a step at a time.
                            inflater.start(text, !limits.replace_invalid_utf8, data, max);
                            continue;
                        }
                        frame => frame,
                    };
                    let gate = &self.shared.read_gate;
                    match frame {
                        Incoming::Text(t) => {
                            read.message(t.len());
                            read_messages += 1;
                            read_bytes += t.len();
                            JsEvent::push_text(events, t);
                        }
                        Incoming::Binary(b) => {
                            read.message(b.len());
                            read_messages += 1;
                            read_bytes += b.len();
                            JsEvent::push_binary(events, b);
                        }
                        Incoming::Ping(p) => {
                            if cfg.auto_pong && !self.sent_close {
                                let out = self.out.get_or_insert_with(Box::default);
                                if out.unwritten() < WRITE_BATCH && out.in_pieces.is_none() {
                                    frame::encode(frame::OPCODE_PONG, &p, &mut out.wbuf);
                                } else {
                                    out.pong = Some(p.clone());
                                }
                            }
                            // Control frames count against the same bound as messages: a ping
                            // flood cannot outrun JS either.
                            gate.admit(p.len());
                            events.push(JsEvent::Ping(p));
                        }
                        // The heartbeat's own pongs are the connection's business, not the
                        // application's: as with `ws`, `pong` reports answers to its pings only.
                        Incoming::Pong(p) if p.as_ref() == HEARTBEAT_PAYLOAD => {}
                        Incoming::Pong(p) => {
                            gate.admit(p.len());
                            events.push(JsEvent::Pong(p));
                        }
                        Incoming::Close(close) => {
                            read.flush();
                            self.hold(HeldEnd::Close(close), cfg);
                            // Nothing is parsed after a close frame (RFC 6455 §5.5.1): the next
                            // poll waits for the peer's TCP close (`poll_closing`).
                            n += 1;
                            break;
                        }
                        // Started inflating above.
                        Incoming::Compressed { .. } => {}
                    }
                    n += 1;
                    if n >= MAX_BATCH {
                        cx.waker().wake_by_ref();
                        break;
                    }
                }
                Poll::Ready(Err(e @ (WireError::Eof | WireError::Io(_)))) => return self.ended_by(e),
                Poll::Ready(Err(e)) => {
                    // Acted on by the next poll, once JS has what came before it.
                    read.flush();
                    self.hold(HeldEnd::Failed(e), cfg);
                    break;
                }
                Poll::Pending => {
                    // The socket is empty: offer it to the JS thread, unless closing or streaming.
                    let closing = self.held.is_some()
                        || self.closing.is_some()
                        || self.sent_close
                        || self.close_frame.is_some()
                        || self.broken.is_some();
                    let quiet = !reader::is_stream(read_messages, read_bytes);
                    if let (Some(r), Some(st), false, true) =
                        (shared_reader.as_ref(), shared_state.as_mut(), closing, quiet)
                    {
                        if let Some(offer) = r.offer(st) {
                            // Held for JS like a message: a peer that trickles frames makes an offer
                            // after each read.
                            shared.read_gate.admit(0);
                            events.push(JsEvent::ReadIdle {
                                reader: r.clone(),
                                offer,
                            });
                        }
                    }
                    break;
                }
            }
        }
        drop(shared_state);
        drop(read);
        if self.out.is_some() && self.broken.is_none() {
            // Pongs and the close reply.
            match self.poll_write(cx) {
                Err(e) if self.held.is_some() => return self.ended_by(WireError::Io(e)),
                Err(e) => {
                    self.break_off(e, cfg.close_timeout);
                    // What is left to read is read on the next poll.
                    cx.waker().wake_by_ref();
                }
                Ok(()) => self.note_ping_out(cx),
            }
        }
        if (n > 0 || self.held.is_some()) && !yielded {
            return Poll::Ready(IoEvent::Progress);
        }
        // While a message is inflated, nothing after it is read: its pong may be among that.
        if !yielded && self.broken.is_none() {
            if let Some(end) = self.pong_verdict(cx) {
                return end;
            }
        }
        Poll::Pending
    }

    /// The heartbeat's interval passed: a ping is due, and the pong deadline armed unless one runs.
    fn heartbeat_tick(&mut self, cx: &mut Context<'_>) {
        let Some(hb) = self.heartbeat.as_mut() else {
            return;
        };
        if hb.next_ping.as_mut().poll(cx).is_pending() {
            return;
        }
        let now = tokio::time::Instant::now();
        hb.next_ping.as_mut().reset(now + hb.interval);
        let _ = hb.next_ping.as_mut().poll(cx);
        hb.ping_due = true;
        if hb.pong_deadline.is_none() {
            hb.pong_deadline = Some(Box::pin(tokio::time::sleep(hb.pong_timeout)));
            hb.took_at_arm = self.transport.write_side().socket_took();
            hb.read_at_arm = read_progress(&self.input);
            hb.ping_behind = true;
            if let Input::Shared(r) = &self.input {
                // Only what the JS thread reads from now on answers this ping.
                r.take_alive();
            }
        }
        // A compressor no message used for a whole interval gives its memory back, and so do the
        // buffers kept for large messages that stopped coming.
        self.out_rx.release_unused_compressor();
        recycle::release_stale();
    }

    /// Past the pong deadline: the connection ends unless the peer shows it is alive (it takes
    /// our bytes, sends more of a message, or the JS thread read from it). `Some`: it ended.
    fn pong_verdict(&mut self, cx: &mut Context<'_>) -> Option<Poll<IoEvent>> {
        let hb = self.heartbeat.as_mut()?;
        let deadline = hb.pong_deadline.as_mut()?;
        if deadline.as_mut().poll(cx).is_pending() {
            return None;
        }
        // Still writing, and the socket took more of it since the deadline was armed: the peer is
        // reading (a dead one stops taking bytes once the socket's buffer is full). Its pong is
        // behind what it reads, or our ping behind what we write.
        let writing = hb.ping_due || self.out.is_some() || self.transport.write_side().has_pending();
        let took = self.transport.write_side().socket_took();
        let read = read_progress(&self.input);
        if writing && took != hb.took_at_arm {
            hb.took_at_arm = took;
        } else if read != hb.read_at_arm {
            // More of a message arrived since: the peer is sending, and its pong, which cannot go
            // inside a frame, comes after the one it is in.
            hb.read_at_arm = read;
        } else if matches!(&self.input, Input::Shared(r) if r.take_alive() || r.has_unread()) {
            // The JS thread read frames since the ping: the peer is alive. Or it has not read what
            // the socket holds (it is busy): as when JS is behind, unread pongs are not a dead
            // peer, and the next ping asks again.
            hb.pong_deadline = None;
            return None;
        } else {
            let ms = hb.pong_timeout.as_millis();
            let error = ConnError::new(errors::ERR_PONG_TIMEOUT, format!("no pong within {ms} ms of a ping"));
            return Some(ended(1006, String::new(), false, Some(error)));
        }
        deadline.as_mut().reset(tokio::time::Instant::now() + hb.pong_timeout);
        let _ = deadline.as_mut().poll(cx);
        None
    }

    /// The peer's time to answer a ping runs from when the socket took it: a ping that waited
    /// behind the rest of a large message has everything the sockets' buffers hold before it.
    fn note_ping_out(&mut self, cx: &mut Context<'_>) {
        let Some(hb) = self.heartbeat.as_mut().filter(|h| h.ping_behind && !h.ping_due) else {
            return;
        };
        if self.out.is_some() || (hb.pong_deadline.is_some() && self.transport.write_side().has_pending()) {
            return;
        }
        hb.ping_behind = false;
        if let Some(deadline) = hb.pong_deadline.as_mut() {
            deadline.as_mut().reset(tokio::time::Instant::now() + hb.pong_timeout);
            let _ = deadline.as_mut().poll(cx);
        }
    }

    /// Holds back the end of the connection while messages read before it are on their way to
    /// JS; a close with nothing pending is answered at once. Either way the caller reads no more.
    fn hold(&mut self, end: HeldEnd, cfg: &ConnConfig) {
        match end {
            HeldEnd::Close(close) if !self.shared.read_gate.has_inflight() => {
                self.answer_close(close, cfg.close_timeout);
            }
            end => {
                self.held = Some(Box::new(Held {
                    end,
                    deadline: Box::pin(tokio::time::sleep(cfg.close_timeout)),
                    close_timeout: cfg.close_timeout,
                }));
            }
        }
    }

    /// Acts on what `hold` kept once JS has taken the messages before it (or the wait timed
    /// out). `Some`: the connection ended; `None`: go on (still waiting while `held` is set).
    fn release_held(&mut self, cx: &mut Context<'_>) -> Option<Poll<IoEvent>> {
        let held = self.held.as_mut()?;
        let waiting = self.shared.read_gate.has_inflight_waking(cx) && held.deadline.as_mut().poll(cx).is_pending();
        // What JS sends in reply to those messages goes out first.
        if let Err(e) = self.poll_write(cx) {
            return Some(self.ended_by(WireError::Io(e)));
        }
        if waiting {
            return None;
        }
        let held = self.held.take().expect("held");
        match held.end {
            HeldEnd::Failed(e) => Some(self.fail(e, held.close_timeout)),
            HeldEnd::Close(close) => {
                self.answer_close(close, held.close_timeout);
                match self.poll_write(cx) {
                    Ok(()) => None,
                    Err(e) => Some(self.ended_by(WireError::Io(e))),
                }
            }
        }
    }

    /// Echoes the peer's close code and reason, as `ws` does (under `skipUTF8Validation`, the
    /// reason as it was decoded, where `ws` echoes its bytes; what is still queued goes back to the
    /// offline queue) and waits `close_timeout` at most for the peer's TCP close.
    fn answer_close(&mut self, close: Option<(u16, String)>, close_timeout: Duration) {
        if !self.sent_close && self.claim_close() {
            let wbuf = self.wbuf();
            match &close {
                Some((code, reason)) => frame::encode_close(*code, reason, wbuf),
                None => frame::encode(8, &[], wbuf),
            }
        }
        let (code, reason) = close.unwrap_or((1005, String::new()));
        self.closing = Some(Closing::new(code, HowClosing::Peer(reason), close_timeout));
    }

    /// Whether our close frame, and everything before it, was taken by the socket.
    fn close_written(&self) -> bool {
        self.closing.as_ref().is_some_and(|c| c.ours_written) || (self.sent_close && self.all_written())
    }

    /// Whether the socket took every byte framed. A message still being compressed once our close
    /// frame went does not count: it never follows the close (`write_out`).
    fn all_written(&self) -> bool {
        let framed = self
            .out
            .as_ref()
            .is_none_or(|o| o.unwritten() == 0 && o.in_pieces.is_none());
        framed && !self.transport.write_side().has_pending()
    }

    /// Once both close frames are exchanged, or we failed the connection, and ours is written, our
    /// side ends as `ws`'s `socket.end()` ends it (`Writer::end_now`: a `wss:` close_notify, the
    /// TCP half-close): a peer that waits for the client to close then closes, and an OpenSSL peer
    /// takes the TCP close for an end, not a truncation.
    fn end_once(&mut self) {
        let written = self.all_written();
        let sent_close = self.sent_close;
        if let Some(c) = self.closing.as_deref_mut() {
            // Noted before `end_now` queues a close_notify, which `has_pending` then counts.
            c.ours_written |= written && sent_close;
            if written && !c.ended_ours {
                // Under TLS, a close_notify the socket did not take all of is flushed by
                // `poll_write`, and the FIN follows on the next poll.
                c.ended_ours = self.transport.write_side().end_now();
            }
        }
    }

    /// `terminate()` while the close handshake is under way on this side (see `Closing`): the
    /// connection ends as if the peer had closed TCP now.
    pub fn end_closing(&mut self) -> Option<Ended> {
        let ours_written = self.close_written();
        Some(self.closing.take()?.end(ours_written))
    }

    /// A write failed with `error`: see `Broken`.
    fn break_off(&mut self, error: std::io::Error, close_timeout: Duration) {
        testing::count(Probe::FailedWrites, 1);
        self.broken = Some(Box::new(Broken {
            error,
            deadline: Box::pin(tokio::time::sleep(close_timeout)),
        }));
    }

    /// The socket failed or the peer went away (`Eof`, `Io`). After a failed write (`Broken`), that
    /// failure is the cause: the socket's end read after it is its echo.
    fn ended_by(&mut self, e: WireError) -> Poll<IoEvent> {
        let e = match self.broken.take() {
            Some(b) => WireError::Io(b.error),
            None => e,
        };
        if let Some(c) = self.closing.take() {
            // The peer closed (or we failed the connection) and the socket failed: with our close
            // frame taken by the socket before, the close was clean.
            let ours_written = self.close_written();
            return Poll::Ready(IoEvent::Ended(c.end(ours_written)));
        }
        if let Some(held) = self.held.take() {
            // The socket failed (a write of a pong or of a reply, the peer having reset the
            // connection after its close) while the peer's close or a violation waited for JS to
            // take what came before it: that is how the connection ended, as `ws` reports it (the
            // peer's code, which the default policy may stop on; the violation), not the socket's
            // failure after it.
            return match held.end {
                HeldEnd::Close(close) => {
                    let (code, reason) = close.unwrap_or((1005, String::new()));
                    ended(code, reason, false, None)
                }
                HeldEnd::Failed(e) => unsent_failure(e),
            };
        }
        let (error, code) = e.to_conn_error();
        ended(code, String::new(), false, Some(error))
    }

    /// The peer broke the protocol (1002, 1007, 1009): we tell it why in our close frame and wait
    /// `close_timeout` at most for its TCP close (see `Closing`).
    fn fail(&mut self, e: WireError, close_timeout: Duration) -> Poll<IoEvent> {
        let (error, code) = e.to_conn_error();
        // Not behind the rest of a large message framed in pieces: that could take long.
        let mid_frame = self.out.as_ref().is_some_and(|o| o.in_pieces.is_some());
        if self.closing.is_some() {
            return self.ended_by(e);
        }
        if self.sent_close || mid_frame || !self.claim_close() {
            return unsent_failure(e);
        }
        frame::encode_close(code, &error.message, self.wbuf());
        self.closing = Some(Closing::new(code, HowClosing::Failed(error), close_timeout));
        Poll::Ready(IoEvent::Progress)
    }

    /// A closing connection (see `Closing`): writes our close frame, and drops what the peer sends
    /// until its TCP close, the deadline or `CLOSING_UNREAD` bytes; after its TCP close, waits for
    /// the socket to take what we still write (a message cut off mid-frame, our close frame never
    /// sent, would make a clean close a broken one). The deadline comes first: a peer that keeps
    /// the socket readable, or stops reading, must not keep it open.
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Poll<IoEvent> {
        // Past the deadline, or with a socket that fails to take our close, there is nothing to wait for.
        let timed_out = self
            .closing
            .as_mut()
            .is_some_and(|c| c.deadline.as_mut().poll(cx).is_ready());
        if !timed_out && self.poll_write(cx).is_ok() {
            self.end_once();
            let peer_ended = self.closing.as_ref().is_some_and(|c| c.peer_ended);
            if !peer_ended {
                let unread = match self.closing.as_deref_mut() {
                    Some(c) => &mut c.unread,
                    None => &mut 0,
                };
                let turn = CLOSING_UNREAD_TURN.min(*unread);
                let mut budget = turn;
                let discarded = match &mut self.input {
                    Input::Own(own) => own.decoder.poll_discard(cx, &mut self.transport, &mut budget),
                    Input::Shared(r) => r.poll_discard(&mut r.lock(), cx, &mut budget),
                };
                *unread -= turn - budget;
                match discarded {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(false)) if *unread > 0 => {
                        // More may be waiting: the runtime's other tasks have a turn first.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    // The peer's TCP close: what we write may still go (a half-closed socket).
                    Poll::Ready(Ok(true)) if !self.close_written() => {
                        if let Some(c) = self.closing.as_deref_mut() {
                            c.peer_ended = true;
                        }
                        return Poll::Pending;
                    }
                    // The peer's TCP close after ours went, a broken socket, or a peer that goes on sending.
                    Poll::Ready(_) => {}
                }
            } else if !self.close_written() {
                // `poll_write` is woken when the socket takes more, the deadline when it passes.
                return Poll::Pending;
            }
        }
        let ours_written = self.close_written();
        Poll::Ready(IoEvent::Ended(self.closing.take().expect("closing").end(ours_written)))
    }

    /// Frames what is due (heartbeat ping, queued messages, then our close frame) and writes it.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        if self.broken.is_some() {
            // A write failed before: nothing more goes (the failure is kept in `broken`).
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        // The fast path (or a read, under TLS) may have left bytes the socket did not take: flush
        // them when writable.
        self.transport.write_side().waker.register(cx.waker());
        if self.transport.write_side().has_pending() {
            self.needs_flush = true;
        }
        let written = self.write_out(cx);
        // Everything is written: release the buffers (an idle connection keeps none).
        if self
            .out
            .as_ref()
            .is_some_and(|o| o.unwritten() == 0 && o.deflating.is_none() && o.in_pieces.is_none())
        {
            debug_assert!(self.out.as_ref().is_some_and(|o| o.in_wbuf.is_empty()));
            self.out = None;
        }
        written?;
        if self.needs_flush {
            match Pin::new(&mut self.transport).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(())
    }

    /// Frames queued messages in batches of up to `WRITE_BATCH` bytes and writes them until
    /// the socket or the queue runs out.
    fn write_out(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        loop {
            if let Some(out) = self.out.as_mut() {
                out.compact();
            }
            while self.out.as_ref().map_or(0, |o| o.unwritten()) < WRITE_BATCH {
                if let Some(out) = self.out.as_mut().filter(|o| o.in_pieces.is_some()) {
                    // The rest of a large message comes before any other frame, our close included.
                    out.append_piece(WRITE_BATCH);
                    continue;
                }
                if self.sent_close {
                    break;
                }
                if let Some(pong) = self.out.as_mut().and_then(|o| o.pong.take()) {
                    frame::encode(frame::OPCODE_PONG, &pong, self.wbuf());
                    continue;
                }
                if let Some(hb) = self.heartbeat.as_mut().filter(|h| h.ping_due) {
                    hb.ping_due = false;
                    frame::encode(frame::OPCODE_PING, HEARTBEAT_PAYLOAD, self.wbuf());
                    continue;
                }
                // A message being compressed comes before the rest of the queue.
                let resumed = self.out.as_mut().and_then(|o| o.deflating.take());
                let next = match resumed {
                    Some(job) => Poll::Ready(Some(job)),
                    None => self
                        .out_rx
                        .messages
                        .poll_recv(cx)
                        .map(|m| m.map(|m| (m, Deflating::default()))),
                };
                match next {
                    Poll::Ready(Some((m, mut job))) => {
                        let out = self.out.get_or_insert_with(Box::default);
                        // A message within this poll's budget is compressed at once, others in steps.
                        let budget = self.deflate_budget as usize;
                        let compressing = self.out_rx.to_compress(&m);
                        let compressed_len = compressing.map_or(0, |(_, p)| p.len());
                        if let Some((opcode, payload)) =
                            compressing.filter(|(_, p)| p.len() > budget || job.taken() > 0)
                        {
                            let step = budget.min(payload.len() - job.taken());
                            self.deflate_budget -= step as u32;
                            match self.out_rx.encode_step(opcode, payload, &mut job, step, &mut out.wbuf) {
                                // Framed in its own buffer, now `wbuf`: what is in front of the frame counts as written.
                                Poll::Ready(skip) => out.pos += skip,
                                Poll::Pending => {
                                    // More to compress: other tasks and the I/O driver have a turn first.
                                    out.deflating = Some((m, job));
                                    if !self.write_yielded {
                                        self.write_yielded = true;
                                        let _ = pin!(tokio::task::yield_now()).poll(cx);
                                    }
                                    break;
                                }
                            }
                        } else if let Some((opcode, len)) = data_frame(&m.msg)
                            .filter(|(_, p)| compressing.is_none() && p.len() >= IN_PIECES_FROM)
                            .map(|(opcode, p)| (opcode, p.len()))
                        {
                            let mask = frame::encode_header(opcode, len, &mut out.wbuf);
                            out.in_pieces = Some((m, 0, mask));
                            continue;
                        } else {
                            self.deflate_budget -= compressed_len as u32;
                            match &m.msg {
                                Message::Text(t) => {
                                    self.out_rx
                                        .encode(frame::OPCODE_TEXT, t.as_bytes(), m.compress, &mut out.wbuf)
                                }
                                Message::Binary(b) => {
                                    self.out_rx.encode(frame::OPCODE_BINARY, b, m.compress, &mut out.wbuf)
                                }
                                Message::Ping(p) => frame::encode(frame::OPCODE_PING, p, &mut out.wbuf),
                                Message::Pong(p) => frame::encode(frame::OPCODE_PONG, p, &mut out.wbuf),
                                Message::Close(_) | Message::Frame(_) => {}
                            }
                        }
                        let end = out.wbuf.len();
                        out.in_wbuf.push_back((m, end));
                    }
                    Poll::Ready(None) => {
                        if let Some((code, reason)) = self.close_frame.take().map(|c| *c) {
                            if self.claim_close() {
                                frame::encode_close(code, &reason, self.wbuf());
                            }
                        }
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            let Some(out) = self.out.as_mut().filter(|o| o.unwritten() > 0) else {
                return Ok(());
            };
            match Pin::new(&mut self.transport).poll_write(cx, &out.wbuf[out.pos..]) {
                Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.needs_flush = true;
                    if out.written(n, &self.out_rx.in_channel, &self.shared) {
                        self.callbacks_due = true;
                    }
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(()),
            }
        }
    }
}
