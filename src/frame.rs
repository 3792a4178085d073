//! WebSocket framing of an open client connection (RFC 6455 §5): reading
//! frames into messages, and encoding our masked frames.
//!
//! Written here rather than taken from tungstenite: tungstenite keeps a read
//! buffer for the whole life of a connection (4 KiB per idle connection,
//! measured) and zero-fills it before every read. This reader holds no memory while the
//! socket is idle, reads into uninitialised spare capacity, and reads a large
//! payload straight into the one allocation that JavaScript then receives
//! without a copy.

use std::future::Future;
use std::io;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tungstenite::Utf8Bytes;

use crate::errors::{self, ConnError};
use crate::payload::Payload;
use crate::recycle;

/// A message or control frame from the server.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    Text(Utf8Bytes),
    Binary(Payload),
    Ping(Bytes),
    Pong(Bytes),
    /// `None`: the close frame had no status code (1005).
    Close(Option<(u16, String)>),
    /// A message compressed with permessage-deflate (RSV1 on its first frame): the caller
    /// inflates it (`src/deflate.rs`) and, for text, checks its UTF-8.
    Compressed {
        text: bool,
        data: Bytes,
    },
}

/// A small message borrowed from the read buffer (`Decoder::take_small`).
#[derive(Clone, Copy)]
pub enum Small<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// Why reading stopped.
#[derive(Debug)]
pub enum WireError {
    /// The peer closed TCP.
    Eof,
    Io(io::Error),
    /// A framing rule was broken: we close with 1002.
    Protocol(String),
    /// A compressed message does not inflate: 1007, as `ws` closes (data that does not match the
    /// message's type), reported as `ERR_PROTOCOL`.
    Corrupt(String),
    /// A text message or close reason is not UTF-8: 1007.
    Utf8(&'static str),
    /// Over `maxPayload`: 1009.
    TooBig {
        size: u64,
        max: usize,
    },
    /// A compressed message inflates to more than `maxPayload`: 1009 (inflating stopped there).
    InflatesTooBig {
        max: usize,
    },
    /// A message in more fragments than `maxFragments`: 1008.
    TooManyFragments {
        max: usize,
    },
    /// A message's buffer could not grow to `wanted` bytes (a process under a memory limit,
    /// `ulimit -v`): 1009, where an allocation that failed would abort the process.
    NoMemory {
        wanted: u64,
    },
    /// Our own failure (a read that panicked): 1011.
    Internal(&'static str),
}

impl WireError {
    /// The error JS sees, and the close code we send and report.
    pub fn to_conn_error(&self) -> (ConnError, u16) {
        match self {
            WireError::Eof => (
                ConnError::new(errors::ERR_SOCKET, "connection closed without a closing handshake"),
                1006,
            ),
            // rustls's words for a TCP close without close_notify end in a link to its manual.
            WireError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => (
                ConnError::new(
                    errors::ERR_SOCKET,
                    "connection closed without a closing handshake (nor a TLS close_notify)",
                ),
                1006,
            ),
            WireError::Io(e) => (ConnError::new(errors::ERR_SOCKET, io_failure_words(e)), 1006),
            WireError::Protocol(m) => (ConnError::new(errors::ERR_PROTOCOL, m.clone()), 1002),
            WireError::Corrupt(m) => (ConnError::new(errors::ERR_PROTOCOL, m.clone()), 1007),
            WireError::Utf8(what) => (
                ConnError::new(errors::ERR_INVALID_UTF8, format!("{what} is not valid UTF-8")),
                1007,
            ),
            WireError::TooBig { size, max } => (
                ConnError::new(
                    errors::ERR_MESSAGE_TOO_BIG,
                    format!("a message of {size} bytes exceeds maxPayload ({max})"),
                ),
                1009,
            ),
            WireError::InflatesTooBig { max } => (
                ConnError::new(
                    errors::ERR_MESSAGE_TOO_BIG,
                    format!("a compressed message inflates to more than maxPayload ({max} bytes)"),
                ),
                1009,
            ),
            WireError::TooManyFragments { max } => (
                ConnError::new(
                    errors::ERR_TOO_MANY_FRAGMENTS,
                    format!("a message in more than maxFragments ({max}) fragments"),
                ),
                1008,
            ),
            WireError::NoMemory { wanted } => (
                ConnError::new(
                    errors::ERR_MESSAGE_TOO_BIG,
                    format!("a message needed a buffer of {wanted} bytes, more memory than the process may allocate"),
                ),
                1009,
            ),
            WireError::Internal(why) => (ConnError::new(errors::ERR_INTERNAL, *why), 1011),
        }
    }
}

fn protocol(m: impl Into<String>) -> WireError {
    WireError::Protocol(m.into())
}

const OP_CONTINUATION: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;

/// Size of one read from the socket when frames are small and data keeps coming.
const READ_CHUNK: usize = 64 * 1024;
/// The first read after an idle spell: most wake-ups carry a message or two, and a
/// connection that only ever sees a close frame should not allocate 64 KiB for it.
const FIRST_READ: usize = 2 * 1024;
/// A frame payload this large is read into its own allocation (no copy on the way to JS).
const DIRECT_FROM: usize = 16 * 1024;
/// That allocation's first size; it grows as the payload arrives.
const DIRECT_FIRST: usize = 1 << 20;
/// The longest frame header (RFC 6455 §5.2; servers do not mask).
const MAX_HEADER: usize = 10;
/// Fragments one call of `poll_next` takes at most without a frame to show for them. Their
/// payloads count against `maxPayload`, but empty ones do not: a peer may send a message in
/// empty fragments without end, and the reader (the driver's task, the JS thread's turn) must give
/// way rather than decode them for as long as they come.
const FRAGMENTS_TURN: usize = 1024;

#[derive(Clone, Copy, Debug)]
struct Header {
    fin: bool,
    /// RSV1: the message is compressed (permessage-deflate).
    rsv1: bool,
    opcode: u8,
    len: usize,
}

impl Header {
    /// What the first byte says, with no length yet (an extended length may still be on its way).
    fn from_first_byte(b0: u8) -> Self {
        Header {
            fin: b0 & 0x80 != 0,
            rsv1: b0 & 0x40 != 0,
            opcode: b0 & 0x0f,
            len: 0,
        }
    }
}

/// Parses a server frame header: `None` until `b` holds all of it. What the first two bytes
/// break fails at once, whatever follows. `first_byte_rules` runs before a length is refused:
/// the decoder checks the first byte's other rules as soon as two bytes are in, so a header
/// that breaks both fails for the same rule whether its length came with it or later.
fn parse_header(
    b: &[u8],
    first_byte_rules: impl FnOnce(u8) -> Result<(), WireError>,
) -> Result<Option<(Header, usize)>, WireError> {
    let [b0, b1, ..] = *b else { return Ok(None) };
    if b0 & 0x30 != 0 {
        return Err(protocol("RSV2 or RSV3 is set and no extension defines them"));
    }
    let opcode = b0 & 0x0f;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(protocol(format!("reserved opcode {opcode}")));
    }
    if b1 & 0x80 != 0 {
        return Err(protocol("the server sent a masked frame"));
    }
    // An extended length on a control frame is over 125 or not minimal (RFC 6455 §5.2, §5.5).
    if opcode >= OP_CLOSE && b1 & 0x7f > 125 {
        return Err(protocol("a control frame longer than 125 bytes"));
    }
    let (len, header_len) = match b1 & 0x7f {
        126 => match b.get(2..4) {
            Some(l) => (u64::from(u16::from_be_bytes([l[0], l[1]])), 4),
            None => return Ok(None),
        },
        127 => match b.get(2..10) {
            Some(l) => (u64::from_be_bytes(l.try_into().expect("8 bytes")), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len >> 63 != 0 {
        first_byte_rules(b0)?;
        return Err(protocol("frame length has its most significant bit set"));
    }
    let Ok(len) = usize::try_from(len) else {
        first_byte_rules(b0)?;
        return Err(WireError::TooBig {
            size: len,
            max: usize::MAX,
        });
    };
    let header = Header {
        len,
        ..Header::from_first_byte(b0)
    };
    Ok(Some((header, header_len)))
}

/// Close codes a peer may send (RFC 6455 §7.4, and the IANA registry up to 1014).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A fragmented message being put together.
struct Partial {
    text: bool,
    compressed: bool,
    /// Its frames so far (see `Limits::max_fragments`).
    fragments: usize,
    data: Vec<u8>,
}

/// UTF-8 validation of a text message whose bytes arrive in pieces (fragments, or one frame
/// over several reads), so that invalid text fails the connection as soon as it arrives
/// rather than when the message completes. Holds the up to 3 bytes of a character that a
/// piece cut in two.
#[derive(Default, Clone, Copy)]
struct Utf8Stream {
    carry: [u8; 4],
    carry_len: u8,
}

impl Utf8Stream {
    /// Validates the next piece; `Err` as soon as a byte sequence cannot be UTF-8.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ()> {
        // First complete the character the previous piece cut (at most 3 more bytes).
        while self.carry_len > 0 {
            let Some((&b, rest)) = bytes.split_first() else {
                return Ok(());
            };
            self.carry[self.carry_len as usize] = b;
            self.carry_len += 1;
            bytes = rest;
            match std::str::from_utf8(&self.carry[..self.carry_len as usize]) {
                Ok(_) => self.carry_len = 0,
                Err(e) if e.error_len().is_some() => return Err(()),
                Err(_) => {}
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(()),
            Err(e) => {
                let tail = &bytes[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// The message ended: no character may be left incomplete.
    fn is_complete(&self) -> bool {
        self.carry_len == 0
    }
}

/// Turns the bytes of one connection into messages.
pub struct Decoder {
    /// Read but not yet parsed. Empty and unallocated whenever the socket is idle.
    buf: BytesMut,
    /// The frame whose payload is being read.
    frame: Option<Header>,
    /// The payload of a large frame, read into its own allocation.
    direct: Option<Vec<u8>>,
    /// Boxed: rare, and the decoder lives inline in every open connection's task.
    partial: Option<Box<Partial>>,
    /// Incremental UTF-8 check of the text message in progress, once it arrives in pieces
    /// (boxed with the rest of the rare state), and how many bytes of the current frame's
    /// payload it has seen.
    utf8: Option<Box<(Utf8Stream, usize)>>,
    /// The last payload was read directly: the next one likely is too, so read only its
    /// header first (one small read instead of copying most of a payload out of `buf`).
    after_direct: bool,
    /// The last `poll_next` stopped after `FRAGMENTS_TURN` fragments, with more buffered.
    gave_way: bool,
    /// Grows from `FIRST_READ` to `READ_CHUNK` while reads fill the buffer; back to `FIRST_READ` when idle.
    /// (u32 beside the flag: the decoder lives inline in every open connection's task.)
    read_size: u32,
}

/// What a connection accepts (its configuration's; passed in, not stored: the decoder lives
/// inline in every open connection's task).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `maxPayload`: the largest message.
    pub max_payload: usize,
    /// Text messages over this cannot become a JS string (at most `max_payload`).
    pub max_text: usize,
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    pub deflate: bool,
    /// `skipUTF8Validation`: invalid UTF-8 in text (and close reasons) is decoded with U+FFFD for
    /// each invalid sequence, as `Buffer#toString` decodes it, instead of failing the connection.
    pub replace_invalid_utf8: bool,
    /// `maxFragments`: the most frames a message may come in, as `ws` counts them (0: no limit).
    pub max_fragments: usize,
}

/// A text message's bytes as text: invalid UTF-8 fails the connection (1007), or with
/// `replace_invalid_utf8` becomes U+FFFD.
pub fn text_message(data: Bytes, limits: &Limits) -> Result<Utf8Bytes, WireError> {
    if !limits.replace_invalid_utf8 {
        return Utf8Bytes::try_from(data).map_err(|_| WireError::Utf8("a text message"));
    }
    // A clone of `Bytes` is a reference count: valid text is still not copied.
    Ok(Utf8Bytes::try_from(data.clone()).unwrap_or_else(|_| String::from_utf8_lossy(&data).into_owned().into()))
}

/// An open connection's I/O failure in words that say what failed: a `wss:` connection's TLS
/// session (rustls names only what it found), or the socket (the system's words, in which
/// lib/errors.js finds the error for `err.cause`).
fn io_failure_words(e: &io::Error) -> String {
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return e.to_string();
    };
    let hint = match tls {
        rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure) => {
            " (after the handshake, a TLS 1.2 server that asked to renegotiate, which rustls refuses, ends so)"
        }
        _ => "",
    };
    format!("the TLS session failed: {tls}{hint}")
}

impl Decoder {
    /// `leftover`: what followed the upgrade response in the same read.
    pub fn new(leftover: BytesMut) -> Self {
        Decoder {
            buf: leftover,
            frame: None,
            direct: None,
            partial: None,
            utf8: None,
            after_direct: false,
            gave_way: false,
            read_size: FIRST_READ as u32,
        }
    }

    /// Bytes held of the frame or message being read: while it grows, the peer is heard from
    /// (a large message that takes longer than the heartbeat's pong timeout to arrive).
    pub fn progress(&self) -> usize {
        self.buf.len() + self.direct.as_ref().map_or(0, Vec::len) + self.partial.as_ref().map_or(0, |p| p.data.len())
    }

    /// Whether the decoder holds memory: read-ahead, a large payload or a fragmented message in progress.
    pub fn holds_buffer(&self) -> bool {
        self.buf.capacity() > 0 || self.direct.is_some() || self.partial.is_some()
    }

    /// The next frame worth reporting, reading from `io` as needed. `Pending` with `cx` woken at
    /// once after `FRAGMENTS_TURN` fragments (see `gave_way`).
    pub fn poll_next<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut R,
        limits: &Limits,
    ) -> Poll<Result<Incoming, WireError>> {
        let mut fragments = 0;
        self.gave_way = false;
        loop {
            if let Some(frame) = self.decode(limits, &mut fragments)? {
                return Poll::Ready(Ok(frame));
            }
            if fragments >= FRAGMENTS_TURN {
                self.gave_way = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.make_room()?;
            match self.poll_read(cx, io) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(WireError::Eof)),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(WireError::Io(e))),
                Poll::Pending => {
                    if self.buf.is_empty() {
                        // Idle: the buffer goes, and comes back with the next data.
                        self.buf = BytesMut::new();
                        self.read_size = FIRST_READ as u32;
                        recycle::release_stale();
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Once nothing more is parsed (a close frame went each way, or the connection failed): drops
    /// the decoder's state and reads the socket, discarding at most `budget` bytes (less what it
    /// read). `Ok(true)` at the peer's end, `Ok(false)` with the budget spent, pending while the
    /// socket is empty (holding no buffer then). A socket closed with bytes unread is reset, which
    /// can discard at the peer what we wrote last (see `connection::Closing`).
    pub fn poll_discard<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut R,
        budget: &mut usize,
    ) -> Poll<io::Result<bool>> {
        self.frame = None;
        self.direct = None;
        self.partial = None;
        self.utf8 = None;
        self.after_direct = false;
        let polled = loop {
            if *budget == 0 {
                break Poll::Ready(Ok(false));
            }
            self.buf.clear();
            self.buf.reserve(FIRST_READ);
            match read_into(cx, io, &mut self.buf, FIRST_READ.min(*budget)) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Ok(true)),
                Poll::Ready(Ok(n)) => *budget -= n,
                other => break other.map_ok(|_| false),
            }
        };
        self.buf = BytesMut::new();
        polled
    }

    /// The next message, if it is a small one whose bytes are all buffered (a whole text or
    /// binary frame, not compressed, text valid UTF-8, at most `max` bytes): `f` gets it borrowed
    /// from the read buffer, and the decoder moves past it. Returns its length. The hot path of a
    /// stream of small messages: no reference-counted payload, no `Incoming` moved through the
    /// layers above. Anything else, a frame that breaks a rule included, is left to `poll_next`.
    pub fn take_small(&mut self, limits: &Limits, max: usize, f: impl FnOnce(Small<'_>)) -> Option<usize> {
        if self.frame.is_some() || self.direct.is_some() || self.partial.is_some() || self.utf8.is_some() {
            return None;
        }
        let Ok(Some((h, header_len))) = parse_header(&self.buf, |_| Ok(())) else {
            return None;
        };
        let text = match h.opcode {
            OP_TEXT => true,
            OP_BINARY => false,
            _ => return None,
        };
        let limit = if text {
            limits.max_text.min(limits.max_payload)
        } else {
            limits.max_payload
        };
        if !h.fin || h.rsv1 || h.len > max.min(limit) {
            return None;
        }
        let end = header_len + h.len;
        let payload = self.buf.get(header_len..end)?;
        f(if text {
            Small::Text(std::str::from_utf8(payload).ok()?)
        } else {
            Small::Binary(payload)
        });
        self.buf.advance(end);
        self.after_direct = false;
        Some(h.len)
    }

    /// Room for what arrives next of a large payload: it grows with what arrives (at most
    /// doubling), never to what the header declares. An allocation the system refuses fails the
    /// connection (`NoMemory`) rather than the process.
    fn make_room(&mut self) -> Result<(), WireError> {
        if let (Some(h), Some(v)) = (&self.frame, &mut self.direct) {
            if v.len() == v.capacity() {
                let missing = h.len - v.len();
                let more = (missing + MAX_HEADER).min(v.capacity().max(DIRECT_FROM));
                v.try_reserve(more).map_err(|_| WireError::NoMemory {
                    wanted: (v.len() + more) as u64,
                })?;
            }
        }
        Ok(())
    }

    fn poll_read<R: AsyncRead + Unpin>(&mut self, cx: &mut Context<'_>, io: &mut R) -> Poll<io::Result<usize>> {
        match (&self.frame, &mut self.direct) {
            // The rest of the large payload (room made by `make_room`), and room for the next
            // frame's header: a stream of large messages then takes one read per message, not a
            // payload read and a header read.
            (Some(h), Some(v)) => {
                let (end, missing) = (h.len, h.len - v.len());
                let n = std::task::ready!(read_into(cx, io, v, missing + MAX_HEADER))?;
                if v.len() > end {
                    // What followed the payload is the next frame's: it goes to `buf`.
                    self.buf.extend_from_slice(&v[end..]);
                    v.truncate(end);
                }
                Poll::Ready(Ok(n))
            }
            _ => {
                let read_size = self.read_size as usize;
                if self.buf.capacity() - self.buf.len() < read_size / 4 {
                    self.buf.reserve(read_size);
                }
                let most = if self.after_direct && self.frame.is_none() {
                    MAX_HEADER
                } else {
                    usize::MAX
                };
                let n = std::task::ready!(read_into(cx, io, &mut self.buf, most))?;
                if n >= read_size && read_size < READ_CHUNK {
                    // The socket had more than we asked for: ask for more next time.
                    self.read_size *= 2;
                }
                Poll::Ready(Ok(n))
            }
        }
    }

    /// Whether the last `poll_next` was pending because it gave way, with fragments still buffered
    /// (rather than for want of bytes): its caller must come back without waiting for the socket.
    pub fn gave_way(&self) -> bool {
        self.gave_way
    }

    /// Parses what is buffered: the next message or control frame, or `None` when more bytes are
    /// needed or `fragments` (the fragments taken, counted here) reached `FRAGMENTS_TURN`.
    fn decode(&mut self, limits: &Limits, fragments: &mut usize) -> Result<Option<Incoming>, WireError> {
        loop {
            let h = match self.frame {
                Some(h) => h,
                None => {
                    let first_byte_rules = |b0| self.check(&Header::from_first_byte(b0), limits);
                    let Some((h, header_len)) = parse_header(&self.buf, first_byte_rules)? else {
                        // Two bytes are enough for every rule but the length's: a peer that sends
                        // a broken header and stalls before its extended length is failed now.
                        if let Some(&b0) = self.buf.first().filter(|_| self.buf.len() >= 2) {
                            self.check(&Header::from_first_byte(b0), limits)?;
                        }
                        return Ok(None);
                    };
                    self.check(&h, limits)?;
                    self.buf.advance(header_len);
                    self.frame = Some(h);
                    h
                }
            };
            let payload = if let Some(v) = &self.direct {
                if v.len() < h.len {
                    self.check_text_so_far(&h, limits)?;
                    return Ok(None);
                }
                self.after_direct = true;
                Payload::pooled(self.direct.take().expect("direct payload"))
            } else if self.buf.len() >= h.len {
                self.after_direct = false;
                if h.len >= READ_CHUNK {
                    Payload::Owned(self.buf.split_to(h.len))
                } else {
                    // Copied: a view would keep the whole read buffer (`READ_CHUNK` and what was
                    // left in it) alive while the frame waits for JS, where the read bound counts
                    // only the frame's length: a peer could make each buffer hold one 1-byte ping,
                    // or one 16 KiB message beside empty fragments. A frame a read long is most of it.
                    let payload = Payload::copy_from(&self.buf[..h.len]);
                    self.buf.advance(h.len);
                    payload
                }
            } else if h.len >= DIRECT_FROM {
                // Sized by what may arrive soon, not by what the header declares: the buffer
                // grows as bytes come (`poll_read`), so a lying length allocates nothing.
                let mut v = recycle::take(h.len.min(DIRECT_FIRST) + MAX_HEADER);
                v.extend_from_slice(&self.buf);
                self.buf.clear();
                self.direct = Some(v);
                self.check_text_so_far(&h, limits)?;
                return Ok(None);
            } else {
                self.check_text_so_far(&h, limits)?;
                return Ok(None);
            };
            self.frame = None;
            if let Some(frame) = self.complete(h, payload, limits)? {
                return Ok(Some(frame));
            }
            *fragments += 1;
            if *fragments >= FRAGMENTS_TURN {
                return Ok(None);
            }
        }
    }

    /// Whether frame `h` carries text as it is on the wire (a text frame, or a continuation of a
    /// text message): compressed text is checked once inflated.
    fn is_text(&self, h: &Header) -> bool {
        match h.opcode {
            OP_TEXT => !h.rsv1,
            OP_CONTINUATION => self.partial.as_ref().is_some_and(|p| p.text && !p.compressed),
            _ => false,
        }
    }

    /// Validates the part of a text frame's payload that has arrived so far (RFC 6455 §8.1:
    /// fail the connection as soon as invalid text is seen, not when the message completes).
    fn check_text_so_far(&mut self, h: &Header, limits: &Limits) -> Result<(), WireError> {
        if limits.replace_invalid_utf8 || !self.is_text(h) {
            return Ok(());
        }
        let arrived: &[u8] = match &self.direct {
            Some(v) => v,
            None => &self.buf[..self.buf.len().min(h.len)],
        };
        let state = self.utf8.get_or_insert_with(Box::default);
        if arrived.len() > state.1 {
            state
                .0
                .feed(&arrived[state.1..])
                .map_err(|()| WireError::Utf8("a text message"))?;
            state.1 = arrived.len();
        }
        Ok(())
    }

    /// Rules a header must meet before its payload is read.
    fn check(&self, h: &Header, limits: &Limits) -> Result<(), WireError> {
        if h.rsv1 {
            if !limits.deflate {
                return Err(protocol("RSV1 is set and no extension was negotiated"));
            }
            if h.opcode >= OP_CLOSE {
                return Err(protocol("RSV1 on a control frame"));
            }
            if h.opcode == OP_CONTINUATION {
                return Err(protocol("RSV1 on a continuation frame"));
            }
        }
        if h.opcode >= OP_CLOSE {
            if !h.fin {
                return Err(protocol("a fragmented control frame"));
            }
            if h.len > 125 {
                return Err(protocol("a control frame longer than 125 bytes"));
            }
            return Ok(());
        }
        match (h.opcode, &self.partial) {
            (OP_CONTINUATION, None) => return Err(protocol("a continuation frame with no message to continue")),
            (OP_TEXT | OP_BINARY, Some(_)) => {
                return Err(protocol("a new message began before the fragmented one ended"))
            }
            (OP_CONTINUATION, Some(p)) if limits.max_fragments > 0 && p.fragments >= limits.max_fragments => {
                return Err(WireError::TooManyFragments {
                    max: limits.max_fragments,
                })
            }
            _ => {}
        }
        let before = self.partial.as_ref().map_or(0, |p| p.data.len());
        let size = before as u64 + h.len as u64;
        let max = if self.is_text(h) {
            limits.max_text.min(limits.max_payload)
        } else {
            limits.max_payload
        };
        if size > max as u64 {
            return Err(WireError::TooBig { size, max });
        }
        Ok(())
    }

    fn complete(&mut self, h: Header, payload: Payload, limits: &Limits) -> Result<Option<Incoming>, WireError> {
        // Text that arrives in pieces is validated piece by piece; a whole unfragmented frame
        // is validated once, below, when it becomes the message.
        let validates = !limits.replace_invalid_utf8 && self.is_text(&h);
        if validates && (self.utf8.is_some() || !h.fin || h.opcode == OP_CONTINUATION) {
            let utf8 = WireError::Utf8("a text message");
            let state = self.utf8.get_or_insert_with(Box::default);
            let seen = std::mem::take(&mut state.1).min(payload.len());
            state.0.feed(&payload[seen..]).map_err(|()| utf8)?;
            if h.fin {
                let complete = state.0.is_complete();
                self.utf8 = None;
                if !complete {
                    return Err(WireError::Utf8("a text message"));
                }
            }
        }
        let message = |text: bool, compressed: bool, data: Payload| -> Result<Incoming, WireError> {
            if compressed {
                Ok(Incoming::Compressed {
                    text,
                    data: data.into_bytes(),
                })
            } else if text {
                text_message(data.into_bytes(), limits).map(Incoming::Text)
            } else {
                Ok(Incoming::Binary(data))
            }
        };
        Ok(Some(match h.opcode {
            OP_TEXT | OP_BINARY if h.fin => message(h.opcode == OP_TEXT, h.rsv1, payload)?,
            OP_TEXT | OP_BINARY => {
                self.partial = Some(Box::new(Partial {
                    text: h.opcode == OP_TEXT,
                    compressed: h.rsv1,
                    fragments: 1,
                    data: payload.into_vec(),
                }));
                return Ok(None);
            }
            OP_CONTINUATION => {
                let p = self.partial.as_mut().expect("checked: a message is in progress");
                p.fragments += 1;
                p.data.try_reserve(payload.len()).map_err(|_| WireError::NoMemory {
                    wanted: (p.data.len() + payload.len()) as u64,
                })?;
                p.data.extend_from_slice(&payload);
                if !h.fin {
                    return Ok(None);
                }
                let p = self.partial.take().expect("partial message");
                message(p.text, p.compressed, Payload::from(p.data))?
            }
            OP_PING => Incoming::Ping(payload.into_bytes()),
            OP_PONG => Incoming::Pong(payload.into_bytes()),
            _ => Incoming::Close(match payload.len() {
                0 => None,
                1 => return Err(protocol("a close frame with a 1-byte payload")),
                _ => {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    if !valid_close_code(code) {
                        return Err(protocol(format!("invalid close code {code}")));
                    }
                    let reason = match std::str::from_utf8(&payload[2..]) {
                        Ok(reason) => reason.to_owned(),
                        Err(_) if limits.replace_invalid_utf8 => String::from_utf8_lossy(&payload[2..]).into_owned(),
                        Err(_) => return Err(WireError::Utf8("a close reason")),
                    };
                    Some((code, reason))
                }
            }),
        }))
    }
}

/// A frame mask from the operating system's CSPRNG (RFC 6455 §5.3 requires a strong source of
/// entropy, so that a script cannot choose the bytes that reach an intermediary). Drawn from a
/// per-thread pool refilled 1,024 masks at a time: one `getrandom` call per 1,024 frames keeps
/// the send fast path's cost per frame at a few nanoseconds.
fn mask() -> [u8; 4] {
    const POOL: usize = 4096;
    struct Pool {
        bytes: [u8; POOL],
        pos: usize,
    }
    thread_local! {
        static MASKS: std::cell::RefCell<Pool> = const { std::cell::RefCell::new(Pool { bytes: [0; POOL], pos: POOL }) };
    }
    use ring::rand::SecureRandom;
    MASKS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.pos == POOL {
            if ring::rand::SystemRandom::new().fill(&mut pool.bytes).is_err() {
                // The OS CSPRNG is unavailable (it does not fail on supported platforms): one
                // fresh draw per frame from the standard library's randomly keyed hasher.
                return hashed_mask();
            }
            pool.pos = 0;
        }
        let at = pool.pos;
        pool.pos += 4;
        let mut m = [0; 4];
        m.copy_from_slice(&pool.bytes[at..at + 4]);
        m
    })
}

fn hashed_mask() -> [u8; 4] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    (h.finish() as u32).to_ne_bytes()
}

/// Encodes a masked client frame (RFC 6455 §5.2).
pub fn encode(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    encode_frame(opcode, false, payload, out);
}

/// Encodes a masked client frame; `rsv1` marks a compressed message (permessage-deflate).
pub fn encode_frame(opcode: u8, rsv1: bool, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(payload.len() + MAX_CLIENT_HEADER);
    let mask = mask();
    let (head, n) = header(opcode, rsv1, payload.len(), mask);
    out.extend_from_slice(&head[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// Encodes the header of a masked client frame whose payload of `len` bytes `append_masked` adds
/// after it, a piece at a time; returns the mask.
pub fn encode_header(opcode: u8, len: usize, out: &mut Vec<u8>) -> [u8; 4] {
    let mask = mask();
    let (head, n) = header(opcode, false, len, mask);
    out.extend_from_slice(&head[..n]);
    mask
}

/// Appends a piece of a payload, masked with `mask`. The piece starts a multiple of 4 bytes into
/// the payload (the mask's phase is then the same).
pub fn append_masked(piece: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(piece);
    apply_mask(&mut out[start..], mask);
}

/// The most a client frame's header takes: 2 bytes, an 8-byte length and the 4-byte mask.
pub const MAX_CLIENT_HEADER: usize = 14;

/// Frames, where it lies, a payload that follows `MAX_CLIENT_HEADER` bytes of room in `buf`: the
/// header goes at the end of that room and the payload is masked in place. Returns where the frame
/// starts. (A large compressed message is built this way, without a copy into the write buffer.)
pub fn frame_in_place(opcode: u8, rsv1: bool, buf: &mut [u8]) -> usize {
    let mask = mask();
    let (head, n) = header(opcode, rsv1, buf.len() - MAX_CLIENT_HEADER, mask);
    let start = MAX_CLIENT_HEADER - n;
    buf[start..MAX_CLIENT_HEADER].copy_from_slice(&head[..n]);
    apply_mask(&mut buf[MAX_CLIENT_HEADER..], mask);
    start
}

/// A masked client frame's header for a payload of `len` bytes, and its length.
fn header(opcode: u8, rsv1: bool, len: usize, mask: [u8; 4]) -> ([u8; MAX_CLIENT_HEADER], usize) {
    let mut head = [0u8; MAX_CLIENT_HEADER];
    head[0] = 0x80 | if rsv1 { 0x40 } else { 0 } | opcode;
    let n = if len < 126 {
        head[1] = 0x80 | len as u8;
        2
    } else if len <= 0xffff {
        head[1] = 0x80 | 126;
        head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        head[1] = 0x80 | 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    head[n..n + 4].copy_from_slice(&mask);
    (head, n + 4)
}

/// XORs `data` with the mask eight bytes at a time. A byte loop is vectorised or not depending on
/// where the compiler inlines it (masking 64 KiB messages 25 % slower where it is not); this one is
/// fast either way.
#[inline(never)]
fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The rest starts at a multiple of 8, so the mask's phase is the same.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Encodes a close frame; the reason is cut (at a character boundary) to fit 125 bytes.
pub fn encode_close(code: u16, reason: &str, out: &mut Vec<u8>) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(OP_CLOSE, &payload, out);
}

pub const OPCODE_TEXT: u8 = OP_TEXT;
pub const OPCODE_BINARY: u8 = OP_BINARY;
pub const OPCODE_PING: u8 = OP_PING;
pub const OPCODE_PONG: u8 = OP_PONG;

#[cfg(test)]
impl Limits {
    fn both(max: usize) -> Self {
        Limits {
            max_payload: max,
            max_text: max,
            deflate: false,
            replace_invalid_utf8: false,
            max_fragments: 0,
        }
    }
}

/// One read into `buf`'s spare capacity (uninitialised: nothing is zero-filled first), at most
/// `most` bytes; the buffer must have room (no room reads 0 bytes, which is end of stream).
fn read_into<R: AsyncRead + Unpin, B: BufMut>(
    cx: &mut Context<'_>,
    io: &mut R,
    buf: &mut B,
    most: usize,
) -> Poll<io::Result<usize>> {
    // A fresh future per poll holds nothing across polls: a pending read has registered the
    // waker with the socket itself.
    std::pin::pin!(io.read_buf(&mut buf.limit(most))).poll(cx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use tokio::io::ReadBuf;

    /// A reader that hands out its bytes `step` at a time, then EOF.
    struct Chunks {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl AsyncRead for Chunks {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let n = self.step.min(self.data.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.data[start..start + n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 0xffff => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    /// Every frame decoded from `data`, read `step` bytes at a time, and how it ended.
    fn decode_all(data: Vec<u8>, step: usize, max: usize) -> (Vec<Incoming>, WireError) {
        decode_within(data, step, Limits::both(max))
    }

    fn decode_within(data: Vec<u8>, step: usize, lim: Limits) -> (Vec<Incoming>, WireError) {
        let mut io = Chunks { data, pos: 0, step };
        let mut d = Decoder::new(BytesMut::new());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Vec::new();
        loop {
            match d.poll_next(&mut cx, &mut io, &lim) {
                Poll::Ready(Ok(f)) => out.push(f),
                Poll::Ready(Err(e)) => return (out, e),
                Poll::Pending => unreachable!("the test reader never blocks"),
            }
        }
    }

    #[test]
    fn messages_survive_any_read_split() {
        let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let mut data = Vec::new();
        data.extend(server_frame(true, OP_TEXT, b"hello"));
        data.extend(server_frame(false, OP_TEXT, "h\u{e9}".as_bytes()[..2].as_ref()));
        data.extend(server_frame(true, OP_PING, b"p"));
        data.extend(server_frame(false, OP_CONTINUATION, &"h\u{e9}".as_bytes()[2..]));
        data.extend(server_frame(true, OP_CONTINUATION, b"!"));
        data.extend(server_frame(true, OP_BINARY, &big));
        data.extend(server_frame(true, OP_BINARY, &big[..20_000]));
        data.extend(server_frame(true, OP_PONG, b""));
        data.extend(server_frame(true, OP_CLOSE, &[0x03, 0xe8, b'b', b'y', b'e']));
        for step in [1, 2, 3, 7, 1000, 16_384, 65_536, 1 << 20] {
            let (frames, end) = decode_all(data.clone(), step, 1 << 20);
            assert!(matches!(end, WireError::Eof), "step {step}: {end:?}");
            assert_eq!(
                frames,
                vec![
                    Incoming::Text("hello".into()),
                    Incoming::Ping(Bytes::from_static(b"p")),
                    Incoming::Text("h\u{e9}!".into()),
                    Incoming::Binary(big.clone().into()),
                    Incoming::Binary(big[..20_000].to_vec().into()),
                    Incoming::Pong(Bytes::new()),
                    Incoming::Close(Some((1000, "bye".into()))),
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn a_frame_smaller_than_a_read_keeps_no_part_of_the_read_buffer() {
        let medium: Vec<u8> = (0..2_000u32).map(|i| i as u8).collect();
        let large: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        let mut data = Vec::new();
        data.extend(server_frame(true, OP_PING, b"p"));
        data.extend(server_frame(true, OP_BINARY, &medium));
        data.extend(server_frame(true, OP_PONG, b"q"));
        data.extend(server_frame(true, OP_TEXT, &[b'x'; 3_000]));
        data.extend(server_frame(true, OP_BINARY, &large));
        // One read takes it all: every payload below is in the decoder's buffer.
        let (frames, end) = decode_all(data, 1 << 20, 1 << 20);
        assert!(matches!(end, WireError::Eof), "{end:?}");
        let frames: [Incoming; 5] = frames.try_into().expect("five frames");
        match frames {
            [Incoming::Ping(p), Incoming::Binary(m), Incoming::Pong(q), Incoming::Text(t), Incoming::Binary(l)] => {
                let (t, m) = (Bytes::from(t), m.into_bytes());
                for (what, b) in [("ping", &p), ("medium binary", &m), ("pong", &q), ("medium text", &t)] {
                    assert!(b.is_unique(), "the {what}'s payload is a view of the read buffer");
                }
                assert_eq!((m.len(), t.len(), l.len()), (2_000, 3_000, 20_000));
            }
            other => panic!("{other:?}"),
        }
    }

    fn first_error(data: Vec<u8>, max: usize) -> WireError {
        let (frames, e) = decode_all(data, 1 << 20, max);
        assert!(frames.is_empty(), "{frames:?}");
        e
    }

    #[test]
    fn protocol_violations_are_refused() {
        let proto = |data: Vec<u8>| matches!(first_error(data, 1 << 20), WireError::Protocol(_));
        assert!(proto(vec![0xc1, 0x00]), "RSV1 without an extension");
        assert!(proto(vec![0x83, 0x00]), "reserved opcode");
        assert!(proto(vec![0x81, 0x81, 1, 2, 3, 4, b'x']), "masked server frame");
        assert!(
            proto(server_frame(true, OP_CONTINUATION, b"x")),
            "continuation of nothing"
        );
        assert!(proto(server_frame(false, OP_PING, b"x")), "fragmented control frame");
        assert!(proto(server_frame(true, OP_PING, &[0; 126])), "long control frame");
        let mut two_starts = server_frame(false, OP_TEXT, b"a");
        two_starts.extend(server_frame(true, OP_TEXT, b"b"));
        assert!(proto(two_starts), "a new message inside a fragmented one");
        assert!(proto(server_frame(true, OP_CLOSE, &[3])), "1-byte close payload");
        assert!(
            proto(server_frame(true, OP_CLOSE, &1005u16.to_be_bytes())),
            "reserved close code"
        );
        assert!(
            proto(vec![0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            "64-bit length with the top bit"
        );
        assert!(matches!(
            first_error(server_frame(true, OP_TEXT, &[0xc3, 0x28]), 100),
            WireError::Utf8(_)
        ));
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.push(0xff);
        assert!(matches!(
            first_error(server_frame(true, OP_CLOSE, &bad_reason), 100),
            WireError::Utf8(_)
        ));
        // A control frame's length in 16 bits, even under 126: not minimal, as ws judges it.
        assert!(proto(vec![0x89, 126, 0, 5, 1, 2, 3, 4, 5]), "extended length on a ping");
    }

    #[test]
    fn a_header_is_judged_on_its_first_two_bytes() {
        // The stream ends before the extended length: the error is the protocol's, not the end's
        // (a peer that sends these and stalls is failed at once, not when it closes).
        let mut in_a_message = server_frame(false, OP_TEXT, b"a");
        in_a_message.extend([0x81, 126]);
        let cases: [(&str, Vec<u8>); 5] = [
            ("continuation of nothing", vec![0x80, 127]),
            ("long ping", vec![0x89, 126]),
            ("fragmented close", vec![0x08, 127]),
            ("RSV1 without an extension", vec![0xc2, 126]),
            ("a new message inside a fragmented one", in_a_message),
        ];
        for (what, data) in cases {
            let (_, e) = decode_all(data, 1 << 20, 1 << 20);
            assert!(matches!(e, WireError::Protocol(_)), "{what}: {e:?}");
        }
        // A valid start waits for the rest.
        let (frames, e) = decode_all(vec![0x82, 127, 0, 0], 1 << 20, 1 << 20);
        assert!(frames.is_empty() && !matches!(e, WireError::Protocol(_)), "{e:?}");
    }

    #[test]
    fn a_stream_of_large_messages_takes_one_read_per_message() {
        /// Counts reads; hands out as much as asked (a socket with plenty of data waiting).
        struct Counting {
            data: Vec<u8>,
            pos: usize,
            reads: usize,
        }
        impl AsyncRead for Counting {
            fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                self.reads += 1;
                let n = buf.remaining().min(self.data.len() - self.pos);
                let start = self.pos;
                buf.put_slice(&self.data[start..start + n]);
                self.pos += n;
                Poll::Ready(Ok(()))
            }
        }
        let count = 50;
        let payload: Vec<u8> = (0..65536u32).map(|i| i as u8).collect();
        let mut data = Vec::new();
        for _ in 0..count {
            data.extend(server_frame(true, OP_BINARY, &payload));
        }
        let mut io = Counting { data, pos: 0, reads: 0 };
        let lim = Limits::both(usize::MAX);
        let mut d = Decoder::new(BytesMut::new());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..count {
            match d.poll_next(&mut cx, &mut io, &lim) {
                Poll::Ready(Ok(Incoming::Binary(b))) => assert_eq!(&*b, &payload[..]),
                other => panic!("expected a binary message, got {other:?}"),
            }
        }
        // The payload's last read also takes the next header: not a payload read plus a header read.
        assert!(io.reads <= count + 2, "{} reads for {count} messages", io.reads);
    }

    #[test]
    fn max_payload_counts_whole_messages() {
        assert!(matches!(
            first_error(server_frame(true, OP_BINARY, &[0; 101]), 100),
            WireError::TooBig { size: 101, max: 100 }
        ));
        let mut fragments = server_frame(false, OP_BINARY, &[0; 60]);
        fragments.extend(server_frame(true, OP_CONTINUATION, &[0; 60]));
        assert!(matches!(
            first_error(fragments, 100),
            WireError::TooBig { size: 120, max: 100 }
        ));
        let (frames, _) = decode_all(server_frame(true, OP_BINARY, &[0; 100]), 7, 100);
        assert_eq!(frames.len(), 1);
    }

    #[test]
    fn text_messages_have_their_own_limit() {
        let decode = |frame: Vec<u8>| {
            let mut io = Chunks {
                data: frame,
                pos: 0,
                step: 1 << 20,
            };
            let lim = Limits {
                max_payload: 1000,
                max_text: 10,
                ..Limits::both(0)
            };
            let mut d = Decoder::new(BytesMut::new());
            let mut cx = Context::from_waker(std::task::Waker::noop());
            match d.poll_next(&mut cx, &mut io, &lim) {
                Poll::Ready(r) => r,
                Poll::Pending => unreachable!(),
            }
        };
        assert!(matches!(
            decode(server_frame(true, OP_TEXT, &[b'a'; 11])),
            Err(WireError::TooBig { size: 11, max: 10 })
        ));
        assert!(matches!(
            decode(server_frame(true, OP_BINARY, &[0; 11])),
            Ok(Incoming::Binary(_))
        ));
    }

    #[test]
    fn a_lying_length_allocates_only_what_arrives() {
        // A header declaring 2^53 - 1 bytes, then 300 KB and the end of the stream.
        let mut data = vec![0x82, 127];
        data.extend_from_slice(&((1u64 << 53) - 1).to_be_bytes());
        data.extend(std::iter::repeat_n(7u8, 300_000));
        let mut io = Chunks {
            data,
            pos: 0,
            step: 64 * 1024,
        };
        let lim = Limits::both(usize::MAX);
        let mut d = Decoder::new(BytesMut::new());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(
            d.poll_next(&mut cx, &mut io, &lim),
            Poll::Ready(Err(WireError::Eof))
        ));
        let held = d.direct.as_ref().map_or(0, |v| v.capacity());
        assert!((300_000..=DIRECT_FIRST + MAX_HEADER).contains(&held), "held {held}");
    }

    #[test]
    fn invalid_text_fails_as_soon_as_it_arrives() {
        // One frame, cut short after an invalid byte: the error is the text, not the missing rest.
        let mut frame = vec![0x81, 126];
        frame.extend_from_slice(&1000u16.to_be_bytes());
        frame.extend_from_slice(b"hello\xff");
        let (_, e) = decode_all(frame, 3, 1 << 20);
        assert!(matches!(e, WireError::Utf8(_)), "{e:?}");
        // A large one, read into its own allocation.
        let mut frame = vec![0x81, 127];
        frame.extend_from_slice(&100_000u64.to_be_bytes());
        frame.extend(std::iter::repeat_n(b'a', 20_000));
        frame.push(0xc0);
        let (_, e) = decode_all(frame, 4096, 1 << 20);
        assert!(matches!(e, WireError::Utf8(_)), "{e:?}");
        // Fragments: the second is invalid and the message never ends.
        let mut fragments = server_frame(false, OP_TEXT, b"hel");
        fragments.extend(server_frame(false, OP_CONTINUATION, &[0xed, 0xa0, 0x80]));
        let (frames, e) = decode_all(fragments, 1 << 20, 1 << 20);
        assert!(frames.is_empty() && matches!(e, WireError::Utf8(_)), "{e:?}");
        // A message that ends in the middle of a character.
        let mut fragments = server_frame(false, OP_TEXT, b"a");
        fragments.extend(server_frame(true, OP_CONTINUATION, &[0xe2, 0x82]));
        let (frames, e) = decode_all(fragments, 1 << 20, 1 << 20);
        assert!(frames.is_empty() && matches!(e, WireError::Utf8(_)), "{e:?}");
    }

    #[test]
    fn invalid_text_is_replaced_when_validation_is_skipped() {
        let lossy = |bytes: &[u8]| Incoming::Text(String::from_utf8_lossy(bytes).into_owned().into());
        let mut data = server_frame(true, OP_TEXT, b"hello\xff");
        // Fragments, the invalid sequence and a character cut between them.
        data.extend(server_frame(false, OP_TEXT, &[b'a', 0xed, 0xa0]));
        data.extend(server_frame(false, OP_CONTINUATION, &[0x80, 0xe2]));
        data.extend(server_frame(true, OP_CONTINUATION, &[0x82, 0xac]));
        // A large one, read into its own allocation.
        let mut large = vec![b'a'; 20_000];
        large.push(0xc0);
        data.extend(server_frame(true, OP_TEXT, &large));
        // A message that ends in the middle of a character.
        data.extend(server_frame(true, OP_TEXT, &[b'z', 0xe2, 0x82]));
        data.extend(server_frame(true, OP_CLOSE, &[0x03, 0xe8, b'b', 0xff]));
        let lim = Limits {
            replace_invalid_utf8: true,
            ..Limits::both(1 << 20)
        };
        for step in [1, 3, 4096, 1 << 20] {
            let (frames, e) = decode_within(data.clone(), step, lim);
            assert!(matches!(e, WireError::Eof), "{e:?}");
            assert_eq!(
                frames,
                vec![
                    lossy(b"hello\xff"),
                    lossy(&[b'a', 0xed, 0xa0, 0x80, 0xe2, 0x82, 0xac]),
                    lossy(&large),
                    lossy(&[b'z', 0xe2, 0x82]),
                    Incoming::Close(Some((1000, "b\u{fffd}".to_owned()))),
                ]
            );
        }
        // Valid text is the same either way.
        let (frames, _) = decode_within(server_frame(true, OP_TEXT, "h\u{e9}".as_bytes()), 1, lim);
        assert_eq!(frames, vec![Incoming::Text("h\u{e9}".into())]);
    }

    #[test]
    fn a_message_in_empty_fragments_is_taken_a_turn_at_a_time() {
        // Empty fragments add nothing to the message's size: only the turn bounds them.
        let mut data = server_frame(false, OP_TEXT, b"a");
        for _ in 0..2500 {
            data.extend(server_frame(false, OP_CONTINUATION, b""));
        }
        data.extend(server_frame(true, OP_CONTINUATION, b"b"));
        let mut io = Chunks {
            data,
            pos: 0,
            step: 1 << 20,
        };
        let mut d = Decoder::new(BytesMut::new());
        let woken = std::sync::Arc::new(Woken(std::sync::atomic::AtomicUsize::new(0)));
        let waker = std::task::Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut turns = 0;
        let message = loop {
            match d.poll_next(&mut cx, &mut io, &Limits::both(1 << 20)) {
                Poll::Ready(m) => break m,
                Poll::Pending => {
                    assert!(d.gave_way(), "pending only to give way: every byte is there");
                    turns += 1;
                }
            }
        };
        assert!(matches!(message, Ok(Incoming::Text(t)) if t.as_str() == "ab"));
        assert_eq!(turns, 2, "2,502 fragments: two turns of {FRAGMENTS_TURN} given way");
        assert_eq!(
            woken.0.load(std::sync::atomic::Ordering::Relaxed),
            2,
            "woken to come back each time"
        );
        assert!(!d.gave_way());
    }

    struct Woken(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for Woken {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn a_character_may_straddle_fragments_and_reads() {
        let mut fragments = server_frame(false, OP_TEXT, &[0xe2]);
        fragments.extend(server_frame(false, OP_CONTINUATION, &[0x82]));
        fragments.extend(server_frame(true, OP_PING, b"p"));
        fragments.extend(server_frame(true, OP_CONTINUATION, &[0xac, b'!']));
        fragments.extend(server_frame(true, OP_TEXT, "\u{1f600}\u{e9}".as_bytes()));
        for step in 1..8 {
            let (frames, e) = decode_all(fragments.clone(), step, 1 << 20);
            assert!(matches!(e, WireError::Eof), "{e:?}");
            assert_eq!(
                frames,
                vec![
                    Incoming::Ping(Bytes::from_static(b"p")),
                    Incoming::Text("\u{20ac}!".into()),
                    Incoming::Text("\u{1f600}\u{e9}".into()),
                ]
            );
        }
    }

    #[test]
    fn masking_matches_the_byte_rule_at_every_length() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(31)).collect();
            let mut masked = data.clone();
            apply_mask(&mut masked, mask);
            let want: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]).collect();
            assert_eq!(masked, want, "length {len}");
        }
    }

    /// Unmasks the one frame in `wire`: its first two bytes and its payload.
    fn unmasked(wire: &[u8]) -> ([u8; 2], Vec<u8>) {
        assert_ne!(wire[1] & 0x80, 0, "masked");
        let mut unmasked_header = wire[..wire.len().min(MAX_HEADER)].to_vec();
        unmasked_header[1] &= 0x7f;
        let (h, len_end) = parse_header(&unmasked_header, |_| Ok(())).unwrap().unwrap();
        let header_len = len_end + 4;
        assert_eq!(wire.len(), header_len + h.len, "one whole frame");
        let mask: [u8; 4] = wire[len_end..header_len].try_into().unwrap();
        let mut payload = wire[header_len..].to_vec();
        apply_mask(&mut payload, mask);
        ([wire[0], wire[1]], payload)
    }

    #[test]
    fn a_frame_made_in_pieces_is_the_frame_encode_makes() {
        for (len, piece) in [(0, 4), (5, 4), (200_000, 65_536), (200_003, 4_096), (70_000, 8)] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
            let mut encoded = Vec::new();
            encode_frame(OPCODE_TEXT, false, &payload, &mut encoded);
            let mut pieces = Vec::new();
            let mask = encode_header(OPCODE_TEXT, len, &mut pieces);
            for chunk in payload.chunks(piece) {
                append_masked(chunk, mask, &mut pieces);
            }
            assert_eq!(pieces.len(), encoded.len(), "length {len}");
            assert_eq!(unmasked(&pieces), unmasked(&encoded), "length {len}");
        }
    }

    #[test]
    fn a_frame_made_in_place_is_the_frame_encode_makes() {
        for len in [0, 1, 125, 126, 127, 0xffff, 0x10000, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut encoded = Vec::new();
            encode_frame(OPCODE_BINARY, true, &payload, &mut encoded);
            let mut buf = vec![0u8; MAX_CLIENT_HEADER];
            buf.extend_from_slice(&payload);
            let start = frame_in_place(OPCODE_BINARY, true, &mut buf);
            assert_eq!(buf.len() - start, encoded.len(), "length {len}");
            assert_eq!(unmasked(&buf[start..]), unmasked(&encoded), "length {len}");
        }
    }

    #[test]
    fn masks_are_not_repeated() {
        let masks: std::collections::HashSet<[u8; 4]> = (0..5000).map(|_| mask()).collect();
        // 5,000 draws from 2^32: a repeat is possible but a handful would mean a broken pool.
        assert!(masks.len() >= 4990, "{}", masks.len());
    }

    #[test]
    fn the_buffer_is_released_when_the_socket_goes_idle() {
        struct Once(Option<Vec<u8>>);
        impl AsyncRead for Once {
            fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                match self.0.take() {
                    Some(d) => {
                        buf.put_slice(&d);
                        Poll::Ready(Ok(()))
                    }
                    None => Poll::Pending,
                }
            }
        }
        let mut io = Once(Some(server_frame(true, OP_TEXT, b"hi")));
        let lim = Limits::both(100);
        let mut d = Decoder::new(BytesMut::new());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(
            d.poll_next(&mut cx, &mut io, &lim),
            Poll::Ready(Ok(Incoming::Text(_)))
        ));
        assert!(d.buf.capacity() > 0);
        assert!(d.poll_next(&mut cx, &mut io, &lim).is_pending());
        assert_eq!(d.buf.capacity(), 0);
    }

    #[test]
    fn encoded_frames_unmask_to_the_payload() {
        for len in [0usize, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut out = Vec::new();
            encode(OP_BINARY, &payload, &mut out);
            let header = match len {
                n if n < 126 => 2,
                n if n <= 0xffff => 4,
                _ => 10,
            };
            assert_eq!(out[0], 0x82);
            assert_eq!(out[1] & 0x80, 0x80, "client frames are masked");
            let mask = &out[header..header + 4];
            let unmasked: Vec<u8> = out[header + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i & 3])
                .collect();
            assert_eq!(unmasked, payload);
        }
        let mut out = Vec::new();
        encode_close(1000, &"\u{e9}".repeat(100), &mut out);
        assert_eq!(out[1] & 0x7f, 124, "cut to 122 bytes of whole characters + the code");
    }

    /// A reader that hands out its bytes in the given sizes (cycled), then EOF.
    struct Splits {
        data: Vec<u8>,
        pos: usize,
        sizes: Vec<usize>,
        turn: usize,
    }

    impl AsyncRead for Splits {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let step = self.sizes[self.turn % self.sizes.len()];
            self.turn += 1;
            let n = step.min(self.data.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.data[start..start + n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    /// As `decode_all`, taking small messages with `take_small` first; also returns how many
    /// it took.
    /// `step` 0: everything is buffered from the start.
    fn decode_all_small_first(data: Vec<u8>, step: usize, max: usize) -> (Vec<Incoming>, WireError, usize) {
        let (leftover, data) = if step == 0 {
            (data, Vec::new())
        } else {
            (Vec::new(), data)
        };
        let mut io = Chunks { data, pos: 0, step };
        let lim = Limits::both(max);
        let mut d = Decoder::new(BytesMut::from(&leftover[..]));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let (mut out, mut taken) = (Vec::new(), 0);
        loop {
            let small = d.take_small(&lim, 1024, |m| {
                out.push(match m {
                    Small::Text(t) => Incoming::Text(t.into()),
                    Small::Binary(b) => Incoming::Binary(Payload::copy_from(b)),
                })
            });
            if let Some(len) = small {
                assert!(
                    matches!(out.last(), Some(Incoming::Text(t)) if t.len() == len)
                        || matches!(out.last(), Some(Incoming::Binary(b)) if b.len() == len)
                );
                taken += 1;
                continue;
            }
            match d.poll_next(&mut cx, &mut io, &lim) {
                Poll::Ready(Ok(f)) => out.push(f),
                Poll::Ready(Err(e)) => return (out, e, taken),
                Poll::Pending => unreachable!("the test reader never blocks"),
            }
        }
    }

    #[test]
    fn the_small_message_path_takes_only_whole_small_valid_messages_and_decodes_the_same() {
        let mut data = Vec::new();
        for f in [
            server_frame(true, OP_TEXT, b"one"),
            server_frame(true, OP_TEXT, "twö".as_bytes()),
            server_frame(true, OP_TEXT, &[b'l'; 1025]),
            server_frame(true, OP_BINARY, b"bin"),
            server_frame(true, OP_BINARY, &[0xfe; 1025]),
            server_frame(true, OP_PING, b"p"),
            server_frame(false, OP_TEXT, b"frag"),
            server_frame(true, OP_CONTINUATION, b"ment"),
            server_frame(true, OP_TEXT, b""),
            server_frame(true, OP_TEXT, &[b'k'; 1024]),
            server_frame(true, OP_TEXT, &[b'a', 0xff]),
        ] {
            data.extend(f);
        }
        for step in [0, 1, 3, 1 << 20] {
            let (slow, slow_end) = decode_all(data.clone(), step.max(1), 1 << 20);
            let (fast, fast_end, taken) = decode_all_small_first(data.clone(), step, 1 << 20);
            assert_eq!(fast, slow, "read {step} bytes at a time");
            assert_eq!(format!("{fast_end:?}"), format!("{slow_end:?}"));
            assert!(
                matches!(fast_end, WireError::Utf8(_)),
                "invalid UTF-8 is the slow path's to report"
            );
            assert_eq!(slow.len(), 9);
            if step == 0 {
                // "one", "twö", "bin", "", and the 1,024 "k"s: not the 1,025 "l"s or 0xfe bytes,
                // the ping or the fragmented message. (A frame that arrives in pieces is the slow
                // path's.)
                assert_eq!(taken, 5);
            }
        }
        // A text over the connection's limit is not taken: the slow path reports it.
        let (_, end, taken) = decode_all_small_first(server_frame(true, OP_TEXT, b"too long"), 0, 4);
        assert_eq!(taken, 0);
        assert!(matches!(end, WireError::TooBig { size: 8, max: 4 }));
    }

    #[test]
    fn a_header_that_breaks_a_first_byte_rule_and_the_length_rule_fails_for_the_first_however_it_arrives() {
        // RSV1 without an extension, and a 64-bit length with its top bit set: the first byte's
        // rule is the one reported whether the header is read whole or a few bytes at a time (the
        // proptest below compares the two decode paths).
        let mut frame = vec![0x80 | 0x40 | OP_BINARY, 127];
        frame.extend(u64::MAX.to_be_bytes());
        for step in [1, 2, 3, 10] {
            let (got, end) = decode_all(frame.clone(), step, 1 << 16);
            assert!(got.is_empty());
            assert_eq!(
                format!("{end:?}"),
                format!("{:?}", protocol("RSV1 is set and no extension was negotiated")),
                "{step} bytes at a time"
            );
        }
        let (_, end, _) = decode_all_small_first(frame, 0, 1 << 16);
        assert_eq!(
            format!("{end:?}"),
            format!("{:?}", protocol("RSV1 is set and no extension was negotiated"))
        );
    }

    use proptest::prelude::*;

    proptest! {
        /// Any sequence of messages, cut into any fragments with pings between them and read
        /// in any pieces, decodes to the same messages, pings in place, then a clean EOF.
        #[test]
        fn any_fragmentation_and_read_split_round_trips(
            messages in prop::collection::vec(
                (any::<bool>(), prop::collection::vec(any::<u8>(), 0..40_000), prop::collection::vec(1usize..20_000, 1..4)),
                1..6,
            ),
            sizes in prop::collection::vec(1usize..100_000, 1..8),
        ) {
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for (i, (text, bytes, cuts)) in messages.iter().enumerate() {
                let payload: Vec<u8> = if *text {
                    String::from_utf8_lossy(bytes).into_owned().into_bytes()
                } else {
                    bytes.clone()
                };
                // Fragment boundaries anywhere, even inside a UTF-8 sequence.
                let mut at = 0;
                let mut first = true;
                for cut in cuts {
                    let end = (at + cut).min(payload.len());
                    let last = end == payload.len();
                    let op = if !first { OP_CONTINUATION } else if *text { OP_TEXT } else { OP_BINARY };
                    wire.extend(server_frame(last, op, &payload[at..end]));
                    if !last {
                        wire.extend(server_frame(true, OP_PING, &[i as u8]));
                        expected.push(Incoming::Ping(Bytes::from(vec![i as u8])));
                    }
                    at = end;
                    first = false;
                    if last { break; }
                }
                if at < payload.len() || first {
                    let op = if !first { OP_CONTINUATION } else if *text { OP_TEXT } else { OP_BINARY };
                    wire.extend(server_frame(true, op, &payload[at..]));
                }
                expected.push(if *text {
                    Incoming::Text(Utf8Bytes::try_from(payload).unwrap())
                } else {
                    Incoming::Binary(payload.into())
                });
            }
            let mut io = Splits { data: wire, pos: 0, sizes, turn: 0 };
            let lim = Limits::both(1 << 20);
        let mut d = Decoder::new(BytesMut::new());
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let mut got = Vec::new();
            let end = loop {
                match d.poll_next(&mut cx, &mut io, &lim) {
                    Poll::Ready(Ok(f)) => got.push(f),
                    Poll::Ready(Err(e)) => break e,
                    Poll::Pending => unreachable!(),
                }
            };
            prop_assert!(matches!(end, WireError::Eof), "{:?}", end);
            prop_assert_eq!(got, expected);
        }

        /// Whatever a peer sends (frames of any opcode, flags and length, bytes flipped in
        /// them, noise after them), read in any pieces: the decoder ends with an error or EOF,
        /// never a panic, and the small-message path decodes exactly what the general path does.
        #[test]
        fn any_bytes_decode_the_same_on_both_paths_without_panicking(
            frames in prop::collection::vec(
                (
                    any::<bool>(),
                    // Mostly data frames, so that streams get past their first frame.
                    prop_oneof![4 => Just(OP_TEXT), 4 => Just(OP_BINARY), 2 => Just(OP_CONTINUATION), 1 => Just(OP_PING), 1 => 0u8..16],
                    prop::collection::vec(any::<u8>(), 0..300),
                ),
                0..12,
            ),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            noise in prop::collection::vec(any::<u8>(), 0..64),
            step in 0usize..9,
        ) {
            let mut wire = Vec::new();
            for (fin, opcode, payload) in &frames {
                wire.extend(server_frame(*fin, *opcode, payload));
            }
            wire.extend(&noise);
            if !wire.is_empty() {
                for (at, bits) in &flips {
                    let i = at.index(wire.len());
                    wire[i] ^= bits;
                }
            }
            let (slow, slow_end) = decode_all(wire.clone(), step.max(1), 1 << 16);
            let (fast, fast_end, _) = decode_all_small_first(wire, step, 1 << 16);
            prop_assert_eq!(fast, slow);
            prop_assert_eq!(format!("{fast_end:?}"), format!("{slow_end:?}"));
        }
    }
}
