//! permessage-deflate (RFC 7692): the offer a client makes, the checks of the server's answer,
//! and the compressor and decompressor of one connection.
//!
//! Written here because no Rust WebSocket library we could build on offers it for our own
//! framing; the compression itself is flate2 with its pure-Rust zlib-rs backend (raw deflate,
//! with the negotiated window sizes: miniz_oxide would ignore them). zlib state is created on
//! the first message that needs it, not when the connection opens, and a side that negotiated
//! "no context takeover" drops it after every message: an idle connection holds none then.

use std::task::Poll;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::stats::{DeflateContexts, Gauge};

/// The name of the extension.
pub const NAME: &str = "permessage-deflate";

/// What a sync flush ends with, and what a message's compressed payload leaves out (§7.2.1).
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The client's side of the negotiation, from the `perMessageDeflate` option.
#[derive(Clone, Debug, PartialEq)]
pub struct DeflateConfig {
    /// Messages shorter than this are sent uncompressed.
    pub threshold: usize,
    /// Ask to compress each message on its own (frees our compressor between messages).
    pub client_no_context_takeover: bool,
    /// Ask the server to compress each message on its own.
    pub server_no_context_takeover: bool,
    /// `None`: not offered; `Some(None)`: offered without a value (the server may pick);
    /// `Some(Some(n))`: offered with a limit.
    pub client_max_window_bits: Option<Option<u8>>,
    /// The largest window we ask the server to use, if any.
    pub server_max_window_bits: Option<u8>,
    /// zlib level 0-9.
    pub level: u32,
}

impl DeflateConfig {
    /// The `Sec-WebSocket-Extensions` value we send.
    pub fn offer(&self) -> String {
        let mut s = String::from(NAME);
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            s.push_str(&format!("; server_max_window_bits={bits}"));
        }
        match self.client_max_window_bits {
            Some(Some(bits)) => s.push_str(&format!("; client_max_window_bits={bits}")),
            Some(None) => s.push_str("; client_max_window_bits"),
            None => {}
        }
        s
    }
}

/// What the server accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    /// The window the server compresses with (at most), 8-15.
    pub server_max_window_bits: u8,
    /// The window we may compress with, 8-15.
    pub client_max_window_bits: u8,
}

/// Splits a header value at `sep`, outside quoted strings.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// A window size as RFC 7692 §7.1.2 writes it: a decimal 8-15, no leading zero. A quoted
/// string is read after unescaping (RFC 6455 §9.1): `"1\0"` is 10.
fn window_bits(value: &str) -> Option<u8> {
    let mut digits = [0u8; 2];
    let mut len = 0;
    let mut push = |b: u8| {
        let slot = digits.get_mut(len)?;
        *slot = b;
        len += 1;
        Some(())
    };
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(quoted) => {
            let mut bytes = quoted.bytes();
            while let Some(b) = bytes.next() {
                push(if b == b'\\' { bytes.next()? } else { b })?;
            }
        }
        None => value.bytes().try_for_each(&mut push)?,
    }
    let v = &digits[..len];
    if v.first().is_none_or(|&b| b == b'0') || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let bits = v.iter().fold(0u8, |n, d| n * 10 + (d - b'0'));
    (8..=15).contains(&bits).then_some(bits)
}

/// Checks the server's `Sec-WebSocket-Extensions` answer against our offer (RFC 7692 §5, §7):
/// every response the offer allows is accepted; anything else is an error naming what is wrong.
pub fn negotiate(offer: Option<&DeflateConfig>, answer: &str) -> Result<Option<Negotiated>, String> {
    let answer = answer.trim();
    if answer.is_empty() {
        return Ok(None);
    }
    let mut result = None;
    for ext in split_unquoted(answer, ',') {
        let mut params = split_unquoted(ext, ';').into_iter().map(str::trim);
        let name = params.next().unwrap_or_default();
        let Some(offer) = offer.filter(|_| name.eq_ignore_ascii_case(NAME)) else {
            return Err(format!(
                "the server chose an extension we did not offer: {}",
                ext.trim()
            ));
        };
        if result.is_some() {
            return Err(format!("the server accepted {NAME} twice"));
        }
        let mut n = Negotiated {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        };
        let mut seen: Vec<String> = Vec::new();
        for param in params {
            let (key, value) = match param.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (param, None),
            };
            let key = key.to_ascii_lowercase();
            if !is_token(&key) {
                return Err(format!("{NAME}: malformed parameter \"{param}\""));
            }
            if seen.contains(&key) {
                return Err(format!("{NAME}: the parameter {key} appears twice"));
            }
            seen.push(key.clone());
            let invalid = || {
                Err(format!(
                    "{NAME}: invalid value for {key}: {}",
                    value.unwrap_or("(none)")
                ))
            };
            match key.as_str() {
                "server_no_context_takeover" | "client_no_context_takeover" => {
                    if value.is_some() {
                        return invalid();
                    }
                    if key == "server_no_context_takeover" {
                        n.server_no_context_takeover = true;
                    } else {
                        n.client_no_context_takeover = true;
                    }
                }
                "server_max_window_bits" => {
                    let Some(bits) = value.and_then(window_bits) else {
                        return invalid();
                    };
                    if offer.server_max_window_bits.is_some_and(|max| bits > max) {
                        return Err(format!(
                            "{NAME}: server_max_window_bits={bits} is above the {} we offered",
                            offer.server_max_window_bits.unwrap_or(15)
                        ));
                    }
                    n.server_max_window_bits = bits;
                }
                "client_max_window_bits" => {
                    let Some(offered) = offer.client_max_window_bits else {
                        return Err(format!("{NAME}: client_max_window_bits, which we did not offer"));
                    };
                    let Some(bits) = value.and_then(window_bits) else {
                        return invalid();
                    };
                    if offered.is_some_and(|max| bits > max) {
                        return Err(format!(
                            "{NAME}: client_max_window_bits={bits} is above the {} we offered",
                            offered.unwrap_or(15)
                        ));
                    }
                    n.client_max_window_bits = bits;
                }
                _ => return Err(format!("{NAME}: unknown parameter {key}")),
            }
        }
        if let Some(Some(max)) = offer.client_max_window_bits {
            // We limited our own window: we keep to it even if the server did not repeat it.
            n.client_max_window_bits = n.client_max_window_bits.min(max);
        }
        if offer.client_no_context_takeover {
            // Offered: we keep to it whatever the answer says (§7.1.1.2 lets us).
            n.client_no_context_takeover = true;
        }
        result = Some(n);
    }
    Ok(result)
}

/// Our side's compression: one raw deflate stream for the connection (context takeover) or one
/// per message.
pub struct Compressor {
    state: Option<(Box<Compress>, Gauge<DeflateContexts>)>,
    level: u32,
    window_bits: u8,
    no_context_takeover: bool,
    pub threshold: usize,
    /// A message was compressed since the last `release_if_unused`.
    used: bool,
    /// A message is compressed in steps and not whole yet: the state holds its beginning.
    mid_message: bool,
}

/// The input one step of compressing takes. Compressing costs more per byte than inflating (level
/// 6, random hex text: about 25 ms per MiB here, so a step of about 1 ms), and a message sent
/// compressed is compressed on the runtime's worker: a larger one is compressed over several polls
/// of its connection, so that it does not hold every other client's I/O for its whole length.
pub const DEFLATE_STEP: usize = 32 << 10;

/// A message compressed over several polls: how much of it is compressed, and its output so far,
/// after `room` bytes left free in front of it (for a frame header: no copy to frame it).
#[derive(Default)]
pub struct Deflating {
    taken: usize,
    out: Vec<u8>,
    room: usize,
}

impl Deflating {
    /// How much of the message is compressed.
    pub fn taken(&self) -> usize {
        self.taken
    }

    /// Leaves `room` bytes in front of the output; for a message not started yet.
    pub fn leave_room(&mut self, room: usize) {
        if self.out.is_empty() {
            self.room = room;
        }
    }

    /// The bytes left free in front of the output.
    pub fn room(&self) -> usize {
        self.room
    }

    /// The compressed payload, once `Compressor::compress_step` returned it whole.
    pub fn output(&self) -> &[u8] {
        self.out.get(self.room..).unwrap_or_default()
    }

    /// The room and the payload after it, once whole.
    pub fn into_buffer(self) -> Vec<u8> {
        self.out
    }
}

impl Compressor {
    pub fn new(cfg: &DeflateConfig, n: &Negotiated) -> Self {
        Compressor {
            state: None,
            level: cfg.level.min(9),
            // zlib cannot make a 256-byte window, but a 512-byte one never refers further back
            // than 250 bytes (`max_dist`: the window less the 262 of look-ahead), which a server
            // with an 8-bit window reads. zlib in ws's server and client does the same.
            window_bits: n.client_max_window_bits.max(9),
            no_context_takeover: n.client_no_context_takeover,
            threshold: cfg.threshold,
            used: false,
            mid_message: false,
        }
    }

    /// Drops the zlib state if no message was compressed since the last call (the connection's
    /// heartbeat calls it). Context takeover lets us keep a context, never obliges us to: the
    /// next message then starts a fresh one, which the server's decoder reads like any other.
    /// Never in the middle of a message compressed in steps: the state holds its beginning.
    pub fn release_if_unused(&mut self) {
        if !self.used && !self.mid_message {
            self.state = None;
        }
        self.used = false;
    }

    /// Whether a message of `len` bytes is sent compressed.
    pub fn wants(&self, len: usize) -> bool {
        len >= self.threshold
    }

    /// Appends the compressed form of `data` (a sync-flushed raw deflate block, without the
    /// trailing 00 00 ff ff) to `out`, and returns true. False (zlib refused; not expected): `out`
    /// is as it was and the state is dropped, so the caller sends the message uncompressed and the
    /// next one starts a fresh context.
    #[must_use]
    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> bool {
        let start = out.len();
        if !self.deflate(data, FlushCompress::Sync, out, start) {
            return false;
        }
        self.finish(out, start);
        true
    }

    /// Compresses up to `budget` more bytes of `data`, the message `job` holds the compression of
    /// (a fresh `Deflating` for a new message; nothing else may be compressed until it is whole).
    /// `Ready(true)`: whole, in `job.output()`, as `compress` gives it; `Ready(false)`: zlib
    /// refused, as `compress`'s false; `Pending`: more to compress.
    pub fn compress_step(&mut self, data: &[u8], job: &mut Deflating, budget: usize) -> Poll<bool> {
        let end = data.len().min(job.taken.saturating_add(budget));
        let last = end == data.len();
        if end == job.taken && !last {
            // No budget left in this poll.
            return Poll::Pending;
        }
        let flush = if last { FlushCompress::Sync } else { FlushCompress::None };
        self.mid_message = !last;
        if job.out.len() < job.room {
            job.out.resize(job.room, 0);
        }
        if !self.deflate(&data[job.taken..end], flush, &mut job.out, job.room) {
            self.mid_message = false;
            job.out = Vec::new();
            return Poll::Ready(false);
        }
        job.taken = end;
        if !last {
            return Poll::Pending;
        }
        self.finish(&mut job.out, job.room);
        Poll::Ready(true)
    }

    /// Runs `data` through the stream into `out` (`out[start..]`: this message's output so far).
    /// False: zlib refused; the message's output and the state are dropped.
    fn deflate(&mut self, data: &[u8], flush: FlushCompress, out: &mut Vec<u8>, start: usize) -> bool {
        self.used = true;
        let (level, bits) = (self.level, self.window_bits);
        let (c, _) = self.state.get_or_insert_with(|| {
            (
                Box::new(Compress::new_with_window_bits(Compression::new(level), false, bits)),
                Gauge::<DeflateContexts>::new(),
            )
        });
        let in_before = c.total_in();
        let syncing = flush == FlushCompress::Sync;
        loop {
            let consumed = (c.total_in() - in_before) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve((data.len() - consumed) / 2 + 64);
            }
            let produced = out.len();
            let failed = c.compress_vec(&data[consumed..], out, flush).is_err();
            let taken = (c.total_in() - in_before) as usize;
            let progress = taken > consumed || out.len() > produced;
            if failed || (!progress && taken < data.len()) {
                out.truncate(start);
                self.state = None;
                return false;
            }
            // All input taken and, for a sync flush, the flush finished (it had room, or had
            // nothing left). Without a flush zlib may keep output back for the next part.
            if taken == data.len() && (!syncing || !progress || out.capacity() - out.len() >= 64) {
                return true;
            }
        }
    }

    /// Ends a message whose output starts at `out[start]`, compressed and sync-flushed.
    fn finish(&mut self, out: &mut Vec<u8>, start: usize) {
        if out.len() - start >= TRAILER.len() && out.ends_with(&TRAILER) {
            out.truncate(out.len() - TRAILER.len());
        }
        if out.len() == start {
            out.push(0x00);
        }
        if self.no_context_takeover {
            self.state = None;
        }
    }
}

/// The output one step of inflating may produce. A message that inflates to more (up to
/// `maxPayload`: 64 MiB from 64 KB of a deflate bomb takes about 100 ms) is inflated over several
/// polls of its connection, so that one server cannot hold the runtime's worker, and with it every
/// other client's I/O, for a whole message. A step also reads at most an eighth of that much of
/// the compressed data (`Inflating::run`): empty blocks inflate to nothing at about 30 MB/s, so a
/// payload of them, `maxPayload` long, would otherwise be a single step of seconds.
pub const INFLATE_STEP: usize = 256 << 10;

/// The server's side: inflates the messages it compressed, one at a time.
pub struct Decompressor {
    state: Option<(Box<Decompress>, Gauge<DeflateContexts>)>,
    window_bits: u8,
    no_context_takeover: bool,
    /// The message being inflated, between steps.
    job: Option<Inflating>,
    /// The most the last message started may inflate to.
    max: usize,
}

/// A compressed message being inflated: how far its input and output have come.
struct Inflating {
    text: bool,
    /// Text whose UTF-8 is to be checked: once it takes more than one step, it is checked a step
    /// at a time into `checked`, so that no one check covers more than a step's output.
    checks_utf8: bool,
    checked: Option<String>,
    data: Bytes,
    consumed: usize,
    /// `data` is read: feeding the trailer the sender left out (RFC 7692 §7.2.2).
    trailer: bool,
    /// The output's length at the message's first final block (BFINAL): what follows may only
    /// complete it with empty blocks (as RFC 7692 §7.2.3.4's example does).
    final_at: Option<usize>,
    /// Output not moved into `checked` (all of it, for binary and for a text of one step).
    out: Vec<u8>,
    max: usize,
}

/// Why a compressed message could not be taken.
#[derive(Debug, PartialEq)]
pub enum InflateError {
    /// It inflates to more than the limit (it was stopped there).
    TooBig,
    Corrupt(String),
    /// Text that is not UTF-8, found while checking it a step at a time.
    NotUtf8,
    /// The output's buffer could not grow to the given size.
    NoMemory(usize),
}

/// What a message inflated to.
#[derive(Debug, PartialEq)]
pub enum Inflated {
    Binary(Vec<u8>),
    /// Text already checked as UTF-8, a step at a time.
    Text(String),
    /// Text inflated in one step, or not to be checked: the caller checks (or repairs) it whole.
    UncheckedText(Vec<u8>),
}

impl Decompressor {
    pub fn new(n: &Negotiated) -> Self {
        Decompressor {
            state: None,
            // flate2 takes 9-15; a larger window than the server's reads its stream all the same.
            window_bits: n.server_max_window_bits.max(9),
            no_context_takeover: n.server_no_context_takeover,
            job: None,
            max: 0,
        }
    }

    /// The most the last message started may inflate to (what `TooBig` exceeded).
    pub fn max_output(&self) -> usize {
        self.max
    }

    /// Whether a message is started and not yet whole (`step` goes on with it).
    pub fn inflating(&self) -> bool {
        self.job.is_some()
    }

    /// Starts a message, replacing any unfinished one. Its output never exceeds `max + 1` bytes.
    /// `check_utf8`: a text message's UTF-8 is checked here once it takes more than one step.
    pub fn start(&mut self, text: bool, check_utf8: bool, data: Bytes, max: usize) {
        let limit = max.saturating_add(1);
        // A first guess of the size, within the limit (which may be below 64: `maxPayload` is the user's).
        let capacity = data.len().saturating_mul(3).max(64).min(limit.min(1 << 20));
        self.max = max;
        self.job = Some(Inflating {
            text,
            checks_utf8: text && check_utf8,
            checked: None,
            data,
            consumed: 0,
            trailer: false,
            final_at: None,
            out: Vec::with_capacity(capacity),
            max,
        });
    }

    /// Inflates more of the started message, at most `budget` bytes of output: `Ready` once it is
    /// whole or has failed, `Pending` while more remains (and when none is started).
    pub fn step(&mut self, budget: usize) -> Poll<Result<Inflated, InflateError>> {
        let Some(mut job) = self.job.take() else {
            return Poll::Pending;
        };
        let bits = self.window_bits;
        let (d, _) = self.state.get_or_insert_with(|| {
            (
                Box::new(Decompress::new_with_window_bits(false, bits)),
                Gauge::<DeflateContexts>::new(),
            )
        });
        let result = match job.run(d, budget) {
            Poll::Pending => match job.check_utf8(false) {
                Ok(()) => {
                    self.job = Some(job);
                    return Poll::Pending;
                }
                Err(e) => Err(e),
            },
            Poll::Ready(result) => result.and_then(|()| job.check_utf8(true)),
        };
        if result.is_err() || self.no_context_takeover {
            self.state = None;
        }
        Poll::Ready(result.map(|()| match (job.text, job.checked) {
            (false, _) => Inflated::Binary(fitted(job.out)),
            (true, Some(text)) => Inflated::Text(fitted_text(text)),
            (true, None) => Inflated::UncheckedText(fitted(job.out)),
        }))
    }

    /// Inflates one message's payload at once; never holds more than `max + 1` bytes of output.
    #[cfg(test)]
    pub fn inflate(&mut self, data: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
        self.start(false, false, Bytes::copy_from_slice(data), max);
        match self.step(usize::MAX) {
            Poll::Ready(Ok(Inflated::Binary(bytes))) => Ok(bytes),
            Poll::Ready(Ok(other)) => unreachable!("binary in, {other:?} out"),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => unreachable!("an unlimited step finishes"),
        }
    }
}

/// `out` with no more room than it needs. Its room was a guess from the compressed size, or grown
/// by steps (the last one's share zero-filled), and a message keeps its buffer while it waits for
/// JS, where the read bound counts only its length: a server could make a 1-byte message hold
/// 256 KiB. A short output is copied (shrunk in place, a mapped buffer keeps a page), a long one
/// shrunk; either moves at most what inflating just wrote.
fn fitted(mut out: Vec<u8>) -> Vec<u8> {
    match fitting(out.capacity(), out.len()) {
        Fit::Keep => out,
        Fit::Copy => out.as_slice().to_vec(),
        Fit::Shrink => {
            out.shrink_to_fit();
            out
        }
    }
}

/// As `fitted`, for text checked as it was inflated.
fn fitted_text(mut text: String) -> String {
    match fitting(text.capacity(), text.len()) {
        Fit::Keep => text,
        Fit::Copy => text.as_str().to_owned(),
        Fit::Shrink => {
            text.shrink_to_fit();
            text
        }
    }
}

enum Fit {
    Keep,
    Copy,
    Shrink,
}

fn fitting(capacity: usize, len: usize) -> Fit {
    if capacity - len <= len / 8 {
        Fit::Keep
    } else if len < 64 * 1024 {
        Fit::Copy
    } else {
        Fit::Shrink
    }
}

impl Inflating {
    /// Bytes of output so far.
    fn total(&self) -> usize {
        self.checked.as_ref().map_or(0, String::len) + self.out.len()
    }

    /// Moves the output checked as UTF-8 into `checked` (started by the first step that does not
    /// finish the text). Short of `whole`, a character cut off at the end waits for the next step.
    fn check_utf8(&mut self, whole: bool) -> Result<(), InflateError> {
        if !self.checks_utf8 || (whole && self.checked.is_none()) {
            return Ok(());
        }
        let cut = if whole {
            self.out.len()
        } else {
            complete_chars(&self.out)
        };
        let text = std::str::from_utf8(&self.out[..cut]).map_err(|_| InflateError::NotUtf8)?;
        let checked = self.checked.get_or_insert_with(String::new);
        checked
            .try_reserve(text.len())
            .map_err(|_| InflateError::NoMemory(checked.len() + text.len()))?;
        checked.push_str(text);
        self.out.drain(..cut);
        Ok(())
    }

    /// Feeds `d` until the message is whole, fails, or `budget` bytes of output were produced or
    /// `budget / 8` of input taken.
    fn run(&mut self, d: &mut Decompress, budget: usize) -> Poll<Result<(), InflateError>> {
        let limit = self.max.saturating_add(1);
        let start = self.out.len();
        let mut input_left = (budget / 8).max(1);
        loop {
            let produced = self.out.len();
            let room = budget.saturating_sub(produced - start);
            if room == 0 || input_left == 0 {
                return Poll::Pending;
            }
            if produced == self.out.capacity() {
                let total = self.total();
                if total >= limit {
                    return Poll::Ready(Err(InflateError::TooBig));
                }
                let grow = self.out.capacity().max(4096).min(limit - total);
                if self.out.try_reserve_exact(grow).is_err() {
                    return Poll::Ready(Err(InflateError::NoMemory(total + grow)));
                }
            }
            let rest: &[u8] = if self.trailer { &TRAILER } else { &self.data };
            let rest = &rest[self.consumed..];
            let input = &rest[..rest.len().min(input_left)];
            let (in_before, out_before) = (d.total_in(), d.total_out());
            let offered = (self.out.capacity() - produced).min(room);
            let status = if offered == self.out.capacity() - produced {
                d.decompress_vec(input, &mut self.out, FlushDecompress::Sync)
            } else {
                // More room than this step may fill: zlib gets exactly the step's share of it (a
                // slice, zeroed first: writing into spare capacity of a `Vec` would need `unsafe`).
                self.out.resize(produced + offered, 0);
                let status = d.decompress(input, &mut self.out[produced..], FlushDecompress::Sync);
                self.out.truncate(produced + (d.total_out() - out_before) as usize);
                status
            };
            let status = match status {
                Ok(status) => status,
                Err(e) => return Poll::Ready(Err(InflateError::Corrupt(e.to_string()))),
            };
            let taken = (d.total_in() - in_before) as usize;
            let written = self.out.len() - produced;
            self.consumed += taken;
            input_left -= taken;
            // zlib filled what it was offered: it may hold more output for the same input.
            let filled = written == offered;
            if taken == 0 && written == 0 && !input.is_empty() && status != Status::StreamEnd {
                // Input left, room for output, and zlib took nothing: it cannot go on.
                return Poll::Ready(Err(InflateError::Corrupt(
                    "compressed data that cannot be inflated".into(),
                )));
            }
            if self.total() > self.max {
                return Poll::Ready(Err(InflateError::TooBig));
            }
            if self.final_at.is_some_and(|at| self.total() > at) {
                // Data after a final block: a sender that does not follow RFC 7692 (zlib would
                // drop it, and read a sync marker left in the payload as 3 bytes of data here).
                return Poll::Ready(Err(InflateError::Corrupt(
                    "data after the final block of a compressed message".into(),
                )));
            }
            let done = taken == rest.len();
            if status == Status::StreamEnd {
                // A final block (RFC 7692 §7.2.3.4 allows one): what follows, if anything, starts
                // a new stream, which may hold only empty blocks. Ending the data, it ends the
                // message: the trailer would start a new, malformed stream.
                self.final_at.get_or_insert(self.total());
                d.reset(false);
                if done {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if done && !filled {
                if self.trailer {
                    return Poll::Ready(Ok(()));
                }
                self.trailer = true;
                self.consumed = 0;
                continue;
            }
            if status == Status::BufError && !filled && input.len() == rest.len() {
                return Poll::Ready(Err(InflateError::Corrupt("truncated compressed data".into())));
            }
        }
    }
}

/// How much of `bytes` ends with a whole character: all of it, or up to where the last
/// character starts when its sequence is cut off (one the UTF-8 check will then judge).
fn complete_chars(bytes: &[u8]) -> usize {
    let len = bytes.len();
    // The last byte that is not a continuation byte (10xxxxxx), among the last four.
    let Some(start) = (len.saturating_sub(4)..len).rev().find(|&i| bytes[i] & 0xc0 != 0x80) else {
        return len;
    };
    let needs = match bytes[start] {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    };
    if len - start < needs {
        start
    } else {
        len
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn window_bits_as_the_rfc_writes_them() {
        for (value, bits) in [
            ("8", Some(8)),
            ("15", Some(15)),
            ("\"10\"", Some(10)),
            ("\"1\\0\"", Some(10)),
            ("\"\\9\"", Some(9)),
            ("7", None),
            ("16", None),
            ("010", None),
            ("09", None),
            ("", None),
            ("\"\"", None),
            ("+9", None),
            ("1\\0", None),
            ("\"10", None),
            ("\"1\\\"", None),
            ("255", None),
            ("٩", None),
        ] {
            assert_eq!(super::window_bits(value), bits, "{value:?}");
        }
    }

    use super::*;

    fn config() -> DeflateConfig {
        DeflateConfig {
            threshold: 0,
            client_no_context_takeover: false,
            server_no_context_takeover: false,
            client_max_window_bits: Some(None),
            server_max_window_bits: None,
            level: 6,
        }
    }

    fn n(answer: &str) -> Result<Option<Negotiated>, String> {
        negotiate(Some(&config()), answer)
    }

    #[test]
    fn offers_what_is_configured() {
        assert_eq!(config().offer(), "permessage-deflate; client_max_window_bits");
        let c = DeflateConfig {
            client_no_context_takeover: true,
            server_no_context_takeover: true,
            server_max_window_bits: Some(10),
            client_max_window_bits: Some(Some(12)),
            ..config()
        };
        assert_eq!(
            c.offer(),
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"
        );
    }

    #[test]
    fn accepts_every_answer_the_offer_allows() {
        assert_eq!(n("").unwrap(), None);
        let plain = n("permessage-deflate").unwrap().unwrap();
        assert_eq!((plain.server_max_window_bits, plain.client_max_window_bits), (15, 15));
        for bits in 8..=15 {
            let a = n(&format!("permessage-deflate; server_max_window_bits={bits}"))
                .unwrap()
                .unwrap();
            assert_eq!(a.server_max_window_bits, bits);
            let a = n(&format!("permessage-deflate; client_max_window_bits=\"{bits}\""))
                .unwrap()
                .unwrap();
            assert_eq!(a.client_max_window_bits, bits);
        }
        let a = n("Permessage-Deflate; server_no_context_takeover; CLIENT_NO_CONTEXT_TAKEOVER")
            .unwrap()
            .unwrap();
        assert!(a.server_no_context_takeover && a.client_no_context_takeover);
    }

    #[test]
    fn refuses_what_the_offer_does_not_allow() {
        for (answer, why) in [
            ("x-webkit-deflate-frame", "did not offer"),
            ("permessage-deflate, permessage-deflate", "twice"),
            ("permessage-deflate; foo", "unknown parameter foo"),
            (
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                "twice",
            ),
            ("permessage-deflate; server_no_context_takeover=1", "invalid value"),
            ("permessage-deflate; server_max_window_bits", "invalid value"),
            ("permessage-deflate; server_max_window_bits=7", "invalid value"),
            ("permessage-deflate; server_max_window_bits=16", "invalid value"),
            ("permessage-deflate; server_max_window_bits=010", "invalid value"),
            ("permessage-deflate; client_max_window_bits", "invalid value"),
            ("permessage-deflate; client_max_window_bits=abc", "invalid value"),
        ] {
            let err = n(answer).unwrap_err();
            assert!(err.contains(why), "{answer}: {err}");
        }
        let no_bits = DeflateConfig {
            client_max_window_bits: None,
            server_max_window_bits: Some(10),
            ..config()
        };
        assert!(
            negotiate(Some(&no_bits), "permessage-deflate; client_max_window_bits=15")
                .unwrap_err()
                .contains("did not offer")
        );
        assert!(
            negotiate(Some(&no_bits), "permessage-deflate; server_max_window_bits=11")
                .unwrap_err()
                .contains("above")
        );
        assert!(negotiate(None, "permessage-deflate")
            .unwrap_err()
            .contains("did not offer"));
    }

    fn pair(n: &Negotiated) -> (Compressor, Decompressor) {
        (Compressor::new(&config(), n), Decompressor::new(n))
    }

    /// Compresses `data` a step of `budget` bytes at a time: the payload (`None`: zlib refused)
    /// and how many steps were unfinished.
    fn deflated_in_steps(c: &mut Compressor, data: &[u8], budget: usize) -> (Option<Vec<u8>>, usize) {
        let mut job = Deflating::default();
        let mut unfinished = 0;
        loop {
            let before = job.taken();
            match c.compress_step(data, &mut job, budget) {
                Poll::Ready(true) => return (Some(job.output().to_vec()), unfinished),
                Poll::Ready(false) => return (None, unfinished),
                Poll::Pending => {
                    assert_eq!(
                        job.taken() - before,
                        budget,
                        "an unfinished step takes its whole budget"
                    );
                    unfinished += 1;
                }
            }
        }
    }

    /// Inflates `data` a step of `budget` bytes at a time: what it inflated to, and the output
    /// each unfinished step added.
    fn stepped(
        d: &mut Decompressor,
        data: &[u8],
        text: bool,
        max: usize,
        budget: usize,
    ) -> (Result<Inflated, InflateError>, Vec<usize>) {
        d.start(text, true, Bytes::copy_from_slice(data), max);
        let mut steps = Vec::new();
        loop {
            let before = d.job.as_ref().map_or(0, Inflating::total);
            match d.step(budget) {
                Poll::Pending => steps.push(d.job.as_ref().expect("still inflating").total() - before),
                Poll::Ready(result) => {
                    assert!(!d.inflating());
                    return (result, steps);
                }
            }
        }
    }

    /// As `stepped`, for a binary message: its bytes.
    fn in_steps(
        d: &mut Decompressor,
        data: &[u8],
        max: usize,
        budget: usize,
    ) -> (Result<Vec<u8>, InflateError>, Vec<usize>) {
        let (result, steps) = stepped(d, data, false, max, budget);
        let bytes = result.map(|inflated| match inflated {
            Inflated::Binary(bytes) => bytes,
            other => panic!("binary in, {other:?} out"),
        });
        (bytes, steps)
    }

    fn both_ways(n: Negotiated) {
        let (mut c, mut d) = pair(&n);
        let msgs: Vec<Vec<u8>> = vec![
            vec![],
            b"a".to_vec(),
            br#"{"type":"tick","price":101.5,"symbol":"ABC"}"#.repeat(40),
            (0..70_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
            br#"{"type":"tick","price":101.5,"symbol":"ABC"}"#.repeat(40),
        ];
        for m in &msgs {
            let mut out = Vec::new();
            assert!(c.compress(m, &mut out));
            assert_eq!(&d.inflate(&out, usize::MAX).unwrap(), m);
        }
    }

    #[test]
    fn round_trips_with_and_without_context_takeover_and_small_windows() {
        let base = n("permessage-deflate").unwrap().unwrap();
        both_ways(base);
        both_ways(Negotiated {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..base
        });
        for bits in 9..=15 {
            both_ways(Negotiated {
                server_max_window_bits: bits,
                client_max_window_bits: bits,
                ..base
            });
        }
    }

    #[test]
    fn context_takeover_shrinks_repeats_and_no_takeover_frees_the_state() {
        let base = n("permessage-deflate").unwrap().unwrap();
        let msg = br#"{"type":"tick","price":101.5,"symbol":"ABC","seq":12345}"#;
        let (mut c, _) = pair(&base);
        let (mut first, mut second) = (Vec::new(), Vec::new());
        assert!(c.compress(msg, &mut first));
        assert!(c.compress(msg, &mut second));
        assert!(second.len() < first.len() / 2, "{} vs {}", second.len(), first.len());
        assert!(c.state.is_some());
        let mut free = Compressor::new(
            &config(),
            &Negotiated {
                client_no_context_takeover: true,
                ..base
            },
        );
        assert!(free.compress(msg, &mut Vec::new()));
        assert!(free.state.is_none());
    }

    #[test]
    fn an_empty_message_is_one_zero_byte_even_when_nothing_is_pending() {
        let base = n("permessage-deflate").unwrap().unwrap();
        let (mut c, mut d) = pair(&base);
        for m in [&b""[..], b"a", b"hello", b"", b"x"] {
            let mut out = Vec::new();
            assert!(c.compress(m, &mut out));
            assert!(!out.is_empty());
            assert_eq!(d.inflate(&out, 100).unwrap(), m);
        }
    }

    #[test]
    fn after_a_final_block_only_empty_blocks_may_follow() {
        let base = n("permessage-deflate").unwrap().unwrap();
        // RFC 7692 §7.2.3.4: "Hello" in a block with BFINAL set, then the header of an empty stored block.
        let hello = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let mut d = Decompressor::new(&base);
        let rfc = [&hello[..], &[0x00]].concat();
        assert_eq!(in_steps(&mut d, &rfc, usize::MAX, INFLATE_STEP).0.unwrap(), b"Hello");
        // The sync marker left in the payload (it read as a stored block and gave 3 bytes), and a
        // second stream with data: refused, not delivered as something the sender did not mean.
        let world = [0x00, 0x05, 0x00, 0xfa, 0xff, b'w', b'o', b'r', b'l', b'd', 0x00];
        for after in [&[0x00, 0x00, 0xff, 0xff][..], &world[..]] {
            let mut d = Decompressor::new(&base);
            let wire = [&hello[..], after].concat();
            let (result, _) = in_steps(&mut d, &wire, usize::MAX, INFLATE_STEP);
            assert!(
                matches!(result, Err(InflateError::Corrupt(_))),
                "{after:02x?}: {result:?}"
            );
        }
    }

    #[test]
    fn an_inflated_message_keeps_no_more_room_than_it_needs() {
        let base = n("permessage-deflate").unwrap().unwrap();
        let mut d = Decompressor::new(&base);
        // 100 KB of empty stored blocks, then a stored block of `tail`: the output buffer is
        // guessed from the compressed size (300 KB) and stepped through, for a few bytes of output.
        let padded = |tail: &[u8]| {
            let mut wire = [0x00, 0x00, 0x00, 0xff, 0xff].repeat(20_000);
            let len = tail.len() as u16;
            wire.push(0x00);
            wire.extend_from_slice(&len.to_le_bytes());
            wire.extend_from_slice(&(!len).to_le_bytes());
            wire.extend_from_slice(tail);
            // The header of the empty stored block whose rest is the trailer the sender left off.
            wire.push(0x00);
            wire
        };
        for tail in [&b"x"[..], &[b'y'; 16 * 1024][..]] {
            let wire = padded(tail);
            let (binary, _) = in_steps(&mut d, &wire, usize::MAX, INFLATE_STEP);
            let binary = binary.unwrap();
            assert_eq!(binary, tail);
            assert!(
                binary.capacity() <= tail.len() + tail.len() / 8,
                "{} bytes of room",
                binary.capacity()
            );
            for check_utf8 in [false, true] {
                d.start(true, check_utf8, Bytes::from(wire.clone()), usize::MAX);
                let text = loop {
                    if let Poll::Ready(result) = d.step(INFLATE_STEP) {
                        break result.unwrap();
                    }
                };
                let capacity = match text {
                    Inflated::Text(t) => t.capacity(),
                    Inflated::UncheckedText(t) => t.capacity(),
                    other => panic!("text in, {other:?} out"),
                };
                assert!(capacity <= tail.len() + tail.len() / 8, "{capacity} bytes of room");
            }
        }
    }

    #[test]
    fn a_final_block_ends_the_message_with_or_without_the_trailing_empty_block() {
        let base = n("permessage-deflate").unwrap().unwrap();
        let mut d = Decompressor::new(&base);
        let finished = |m: &[u8]| {
            let mut c = Compress::new_with_window_bits(Compression::new(6), false, 15);
            let mut out = Vec::with_capacity(m.len() + 64);
            c.compress_vec(m, &mut out, FlushCompress::Finish).unwrap();
            out
        };
        let mut rfc_form = finished(b"Hello");
        rfc_form.push(0x00);
        assert_eq!(d.inflate(&rfc_form, 100).unwrap(), b"Hello");
        assert_eq!(d.inflate(&finished(b"again"), 100).unwrap(), b"again");
        assert_eq!(d.inflate(&rfc_form, 100).unwrap(), b"Hello");
    }

    #[test]
    fn an_unused_compressor_is_released_and_the_stream_stays_readable() {
        let base = n("permessage-deflate").unwrap().unwrap();
        let (mut c, mut d) = pair(&base);
        let msg = br#"{"type":"tick","price":101.5,"symbol":"ABC","seq":12345}"#;
        let mut out = Vec::new();
        assert!(c.compress(msg, &mut out));
        c.release_if_unused();
        assert!(c.state.is_some(), "used since the last tick: kept");
        c.release_if_unused();
        assert!(c.state.is_none(), "unused for a whole tick: released");
        let mut again = Vec::new();
        assert!(c.compress(msg, &mut again));
        // The server's decoder keeps its window; our fresh context is read all the same.
        assert_eq!(d.inflate(&out, 1000).unwrap(), msg);
        assert_eq!(d.inflate(&again, 1000).unwrap(), msg);
    }

    use proptest::prelude::*;
    use proptest::sample::Index;

    proptest! {
        /// Any answer a server sends in Sec-WebSocket-Extensions is accepted or refused with a
        /// reason, never a panic, and what is accepted stays within what RFC 7692 allows.
        #[test]
        fn any_extension_answer_is_accepted_or_refused(
            params in prop::collection::vec(
                (
                    prop_oneof![
                        Just("permessage-deflate"), Just("client_max_window_bits"), Just("server_max_window_bits"),
                        Just("client_no_context_takeover"), Just("server_no_context_takeover"), Just("x-webkit"), Just(""),
                    ],
                    prop::option::of(prop_oneof![Just("15".to_string()), Just("8".to_string()), Just("\"10\"".to_string()), "[ -~]{0,4}"]),
                    prop_oneof![Just(";"), Just(","), Just("; "), Just(" ;"), Just(";;")],
                ),
                0..6,
            ),
        ) {
            let mut answer = String::new();
            for (name, value, sep) in &params {
                answer.push_str(name);
                if let Some(v) = value {
                    answer.push('=');
                    answer.push_str(v);
                }
                answer.push_str(sep);
            }
            if let Ok(Some(n)) = negotiate(Some(&config()), &answer) {
                prop_assert!((8..=15).contains(&n.server_max_window_bits));
                prop_assert!((8..=15).contains(&n.client_max_window_bits));
            }
        }

        /// A message compressed in steps of any size, between messages compressed whole, reads as
        /// itself, with and without context takeover; a heartbeat between two steps keeps the
        /// state the message needs.
        #[test]
        fn a_message_compressed_in_steps_reads_as_itself(
            messages in prop::collection::vec(prop::collection::vec(0u8..6, 0..5000), 1..4),
            budget in 1usize..3_000,
            no_takeover in any::<bool>(),
            room in 0usize..20,
        ) {
            let answer = if no_takeover { "permessage-deflate; client_no_context_takeover" } else { "permessage-deflate" };
            let base = n(answer).unwrap().unwrap();
            let (mut c, mut d) = pair(&base);
            for m in &messages {
                let mut job = Deflating::default();
                job.leave_room(room);
                let wire = loop {
                    match c.compress_step(m, &mut job, budget) {
                        Poll::Ready(done) => {
                            prop_assert!(done);
                            break job.output().to_vec();
                        }
                        Poll::Pending => {
                            c.release_if_unused();
                            c.release_if_unused();
                            prop_assert!(c.state.is_some(), "released in the middle of a message");
                        }
                    }
                };
                prop_assert_eq!(&d.inflate(&wire, usize::MAX).unwrap(), m);
                prop_assert_eq!(job.into_buffer().len(), room + wire.len());
                let mut whole = Vec::new();
                prop_assert!(c.compress(m, &mut whole));
                prop_assert_eq!(&d.inflate(&whole, usize::MAX).unwrap(), m);
            }
        }

        /// A text inflated in steps of any size is given back checked (or left to the caller when
        /// it took one step) exactly when it is UTF-8, whatever cuts its characters.
        #[test]
        fn a_text_in_steps_is_utf8_exactly_when_it_was(
            text in "[a\u{e9}\u{20ac}\u{1d11e}]{0,300}",
            corrupt in prop::option::of((any::<Index>(), any::<u8>())),
            budget in 1usize..40,
        ) {
            let base = n("permessage-deflate").unwrap().unwrap();
            let (mut c, mut d) = pair(&base);
            let mut bytes = text.into_bytes();
            if let Some((at, byte)) = corrupt {
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
            }
            let mut wire = Vec::new();
            prop_assert!(c.compress(&bytes, &mut wire));
            let (result, _) = stepped(&mut d, &wire, true, 10_000, budget);
            let text = match result {
                Ok(Inflated::Text(t)) => Some(t.into_bytes()),
                Ok(Inflated::UncheckedText(b)) => String::from_utf8(b).ok().map(String::into_bytes),
                Err(InflateError::NotUtf8) => None,
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            };
            prop_assert_eq!(text, String::from_utf8(bytes).ok().map(String::into_bytes));
        }

        /// Whatever a peer sends as a compressed message (a real one with bytes flipped, cut
        /// short or followed by noise, with or without context takeover), inflating ends: with
        /// the message, `TooBig` or `Corrupt`, never past the limit, never a panic. An untouched
        /// message inflates to itself, and a failed one leaves the next message readable.
        #[test]
        fn any_compressed_payload_inflates_or_fails_within_the_limit(
            message in prop::collection::vec(0u8..4, 0..6000),
            flips in prop::collection::vec((any::<Index>(), any::<u8>()), 0..4),
            cut in prop::option::of(any::<Index>()),
            noise in prop::collection::vec(any::<u8>(), 0..64),
            max in 1usize..12_000,
            no_takeover in any::<bool>(),
            budget in 1usize..3_000,
        ) {
            let answer = if no_takeover { "permessage-deflate; server_no_context_takeover" } else { "permessage-deflate" };
            let base = n(answer).unwrap().unwrap();
            let (mut c, mut d) = pair(&base);
            let mut wire = Vec::new();
            prop_assert!(c.compress(&message, &mut wire));
            let touched = !flips.is_empty() || cut.is_some() || !noise.is_empty();
            for (at, bits) in &flips {
                if !wire.is_empty() {
                    let i = at.index(wire.len());
                    wire[i] ^= bits;
                }
            }
            if let Some(at) = cut {
                wire.truncate(at.index(wire.len() + 1));
            }
            wire.extend(&noise);
            let inflated = d.inflate(&wire, max);
            // Inflated a few bytes at a time by a fresh decompressor (as `d` was), it gives the same
            // message or fails too (which limit or flaw it meets first may differ).
            let (stepped, steps) = in_steps(&mut Decompressor::new(&base), &wire, max, budget);
            // A step ends with `budget` bytes of output or `budget / 8` of input (the data and its
            // trailer) taken.
            prop_assert!(steps.iter().all(|&s| s <= budget), "{:?}", steps);
            let short = steps.iter().filter(|&&s| s < budget).count();
            prop_assert!(short <= (wire.len() + TRAILER.len()) / (budget / 8).max(1), "{:?}", steps);
            prop_assert_eq!(stepped.as_ref().ok(), inflated.as_ref().ok());
            match inflated {
                Ok(out) => {
                    prop_assert!(out.len() <= max);
                    if !touched {
                        prop_assert_eq!(&out, &message);
                    }
                }
                Err(InflateError::TooBig) => prop_assert!(touched || message.len() > max),
                Err(InflateError::Corrupt(_)) => prop_assert!(touched),
                Err(InflateError::NotUtf8) => prop_assert!(false, "binary is not checked"),
                Err(InflateError::NoMemory(size)) => prop_assert!(false, "{size} bytes of memory refused"),
            }
            if !touched && message.len() <= max {
                // In step with the server: its next message reads too.
                let mut next = Vec::new();
                prop_assert!(c.compress(b"next", &mut next));
                prop_assert_eq!(d.inflate(&next, max.max(4)).unwrap(), b"next".to_vec());
            }
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let base = n("permessage-deflate").unwrap().unwrap();
        let (mut c, mut d) = pair(&base);
        let mut bomb = Vec::new();
        assert!(c.compress(&vec![0u8; 10 << 20], &mut bomb));
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        assert_eq!(d.inflate(&bomb, 1 << 20), Err(InflateError::TooBig));
        // The failed message took the state with it: the next one starts afresh.
        assert!(d.state.is_none());
        let mut out = Vec::new();
        let (mut c2, _) = pair(&base);
        assert!(c2.compress(b"after", &mut out));
        assert_eq!(d.inflate(&out, 100).unwrap(), b"after");
        assert!(matches!(
            d.inflate(&[0xff, 0xff, 0xff], 100),
            Err(InflateError::Corrupt(_))
        ));
    }

    #[test]
    fn a_text_is_checked_a_step_at_a_time() {
        let base = n("permessage-deflate").unwrap().unwrap();
        // Characters of 1 to 4 bytes, so that steps of 256 KiB cut some of them in two.
        let text = "a\u{e9}\u{20ac}\u{1d11e}".repeat(300_000);
        let (mut c, mut d) = pair(&base);
        let mut wire = Vec::new();
        assert!(c.compress(text.as_bytes(), &mut wire));
        let (result, steps) = stepped(&mut d, &wire, true, 16 << 20, INFLATE_STEP);
        assert_eq!(result, Ok(Inflated::Text(text.clone())));
        assert_eq!(steps.len(), text.len() / INFLATE_STEP);
        // A text of one step is left to the caller, which checks it whole.
        let mut short = Vec::new();
        assert!(c.compress("\u{e9}t\u{e9}".as_bytes(), &mut short));
        let (result, steps) = stepped(&mut d, &short, true, 100, INFLATE_STEP);
        assert_eq!(
            (result, steps.len()),
            (Ok(Inflated::UncheckedText("\u{e9}t\u{e9}".into())), 0)
        );
        // Not UTF-8 in the middle: found in the step that holds it.
        let mut bad = text.clone().into_bytes();
        bad[2 << 20] = 0xff;
        let (mut c, mut d) = pair(&base);
        let mut wire = Vec::new();
        assert!(c.compress(&bad, &mut wire));
        let (result, steps) = stepped(&mut d, &wire, true, 16 << 20, INFLATE_STEP);
        assert_eq!(result, Err(InflateError::NotUtf8));
        assert_eq!(steps.len(), (2 << 20) / INFLATE_STEP);
        assert!(d.state.is_none());
        // Cut off in its last character.
        let cut = &text.as_bytes()[..text.len() - 1];
        let (mut c, mut d) = pair(&base);
        let mut wire = Vec::new();
        assert!(c.compress(cut, &mut wire));
        assert_eq!(
            stepped(&mut d, &wire, true, 16 << 20, INFLATE_STEP).0,
            Err(InflateError::NotUtf8)
        );
    }

    #[test]
    fn complete_chars_stops_before_a_character_cut_off() {
        let euro = "\u{20ac}".as_bytes();
        assert_eq!(complete_chars(b""), 0);
        assert_eq!(complete_chars(b"abc"), 3);
        assert_eq!(complete_chars(euro), 3);
        assert_eq!(complete_chars(&euro[..2]), 0);
        assert_eq!(complete_chars(&[b"ab", &euro[..1]].concat()), 2);
        let clef = "\u{1d11e}".as_bytes();
        assert_eq!(complete_chars(&[b"x", &clef[..3]].concat()), 1);
        assert_eq!(complete_chars(&[b"x", clef].concat()), 5);
        // Not UTF-8 at all: all of it, for the check to refuse.
        assert_eq!(complete_chars(&[0xff]), 1);
        assert_eq!(complete_chars(&[0x80, 0x80, 0x80, 0x80]), 4);
    }

    #[test]
    fn a_large_message_is_inflated_a_step_at_a_time() {
        let base = n("permessage-deflate").unwrap().unwrap();
        let (mut c, mut d) = pair(&base);
        let mut bomb = Vec::new();
        assert!(c.compress(&vec![7u8; 10 << 20], &mut bomb));
        let (result, steps) = in_steps(&mut d, &bomb, 16 << 20, INFLATE_STEP);
        assert_eq!(result.unwrap(), vec![7u8; 10 << 20]);
        // Steps of exactly INFLATE_STEP each, then one that finds the message whole.
        assert_eq!(steps.len(), (10 << 20) / INFLATE_STEP, "{steps:?}");
        assert!(steps.iter().all(|&s| s == INFLATE_STEP), "{steps:?}");
        // The context goes on: the next message reads, in one step.
        let mut next = Vec::new();
        assert!(c.compress(b"next", &mut next));
        let (result, steps) = in_steps(&mut d, &next, 100, INFLATE_STEP);
        assert_eq!((result.unwrap(), steps.len()), (b"next".to_vec(), 0));
        // Past the limit, the message fails in the step that crosses it.
        let (result, steps) = in_steps(&mut d, &bomb, 1 << 20, INFLATE_STEP);
        assert_eq!(result, Err(InflateError::TooBig));
        assert_eq!(steps.len(), (1 << 20) / INFLATE_STEP);
        assert!(d.state.is_none());
    }

    #[test]
    fn compressed_data_that_inflates_to_nothing_is_read_a_step_at_a_time() {
        // Four empty fixed-Huffman blocks in five bytes: a payload of them inflates to nothing,
        // so only the input can bound a step.
        let mut empty_blocks = [0x02, 0x08, 0x20, 0x80, 0x00].repeat(1 << 18);
        // The header of the empty stored block that the trailer (00 00 ff ff) completes.
        empty_blocks.push(0x00);
        let base = n("permessage-deflate").unwrap().unwrap();
        let (mut c, mut d) = pair(&base);
        let (result, steps) = in_steps(&mut d, &empty_blocks, 1 << 20, INFLATE_STEP);
        assert_eq!(result.unwrap(), Vec::<u8>::new());
        // Steps of INFLATE_STEP / 8 bytes of input each: the last one takes the rest.
        assert_eq!(
            steps.len(),
            empty_blocks.len() / (INFLATE_STEP / 8),
            "{} steps",
            steps.len()
        );
        // The context goes on: the next message reads, in one step.
        let mut next = Vec::new();
        assert!(c.compress(b"next", &mut next));
        let (result, steps) = in_steps(&mut d, &next, 100, INFLATE_STEP);
        assert_eq!((result.unwrap(), steps.len()), (b"next".to_vec(), 0));
        // Data cut short across steps is still found truncated.
        let mut long = Vec::new();
        assert!(c.compress(
            &(0..200_000u32).flat_map(u32::to_le_bytes).collect::<Vec<u8>>(),
            &mut long
        ));
        assert!(long.len() > INFLATE_STEP / 4, "{}", long.len());
        let (result, _) = in_steps(&mut d, &long[..long.len() / 2], 16 << 20, INFLATE_STEP);
        assert!(matches!(result, Err(InflateError::Corrupt(_))), "{result:?}");
    }

    #[test]
    fn a_large_message_is_compressed_a_step_at_a_time() {
        let base = n("permessage-deflate").unwrap().unwrap();
        let (mut c, mut d) = pair(&base);
        let text: Vec<u8> = (0..(3u32 << 20) / 4)
            .flat_map(|i| (i.wrapping_mul(2_654_435_761) >> 8).to_le_bytes())
            .collect();
        let (wire, unfinished) = deflated_in_steps(&mut c, &text, DEFLATE_STEP);
        assert_eq!(unfinished, text.len() / DEFLATE_STEP - 1);
        assert_eq!(d.inflate(&wire.unwrap(), usize::MAX).unwrap(), text);
        assert!(!c.mid_message);
        // The context goes on into the next message, compressed whole.
        let mut next = Vec::new();
        assert!(c.compress(b"next", &mut next));
        assert_eq!(d.inflate(&next, 100).unwrap(), b"next");
        // A step with no budget compresses nothing, and an empty message is one zero byte, as whole.
        let mut job = Deflating::default();
        assert!(c.compress_step(b"abc", &mut job, 0).is_pending());
        assert_eq!((job.taken(), job.out.len()), (0, 0));
        let (empty, unfinished) = deflated_in_steps(&mut c, b"", DEFLATE_STEP);
        assert_eq!((empty.unwrap(), unfinished), (vec![0x00], 0));
        // Without context takeover, the state goes once the message is whole, not before.
        let mut free = Compressor::new(
            &config(),
            &Negotiated {
                client_no_context_takeover: true,
                ..base
            },
        );
        let mut job = Deflating::default();
        assert!(free.compress_step(&text, &mut job, DEFLATE_STEP).is_pending());
        free.release_if_unused();
        free.release_if_unused();
        assert!(free.state.is_some(), "kept in the middle of a message");
        while free.compress_step(&text, &mut job, DEFLATE_STEP).is_pending() {}
        assert!(free.state.is_none());
        assert_eq!(
            Decompressor::new(&base).inflate(job.output(), usize::MAX).unwrap(),
            text
        );
    }
}
