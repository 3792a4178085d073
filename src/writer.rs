//! The write side of a connection, shared by the driver and the JS thread's send fast path, with
//! the TLS session of a `wss:` connection, which seals and opens records for both threads.
//!
//! tokio-rustls makes the TLS handshake (`transport`); after it the session moves in here, where
//! the JS thread's send fast path can seal frames with it too (a `TlsStream` belongs to the one
//! task that polls it). Moving records between the session and the socket is written here.

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{ready, Context, Poll};

use rustls::ClientConnection;
use tokio::io::{AsyncRead, ReadBuf};

use crate::napi_raw::{self, SharedSocket};
use crate::plain::{ReadHalf, WriteHalf};
use crate::stats::{Gauge, IoBuffers};
use crate::testing::{self, Probe};

/// The write side of a connection, shared by the driver and the JS thread's send fast path.
/// Frames never interleave: the fast path appends whole frames under the lock, and what the
/// socket does not take at once waits, to be flushed by the driver before it writes anything of
/// its own. The driver's own bytes stay in its buffer until the socket (or the TLS session) takes
/// them, and while it has a frame half written the fast path stands aside (`blocked`).
///
/// A `wss:` connection's TLS session lives here too, under the same lock: one session seals and
/// opens records for both directions, so the driver's reads take the lock to decrypt, and a
/// frame of the fast path is sealed on the JS thread and written from there.
pub struct Writer {
    inner: Mutex<WriterInner>,
    /// The driver, woken when the fast path leaves bytes unwritten.
    pub waker: futures_util::task::AtomicWaker,
    /// Whether `inner` has a TLS session (read without the lock).
    tls: bool,
}

struct WriterInner {
    half: WriteHalf,
    /// Plain: frames of the fast path not written yet (corked in this turn, or what the socket
    /// did not take). TLS: only corked frames, not sealed yet; what the socket did not take
    /// waits sealed in the session (`sealed_waiting`), ahead of `pending`.
    pending: Vec<u8>,
    /// `pending` holds frames the fast path corked in this turn of the JS event loop.
    corked: bool,
    /// The driver's last write left part of its buffer unwritten: nothing may go before the rest.
    blocked: bool,
    /// Counts `pending` (and records waiting in the session) in `ioBuffers` while it holds
    /// memory (released once written).
    held: Option<Gauge<IoBuffers>>,
    /// Whether a close frame was written or queued, and by which side.
    close: CloseBy,
    /// The turn of the JS event loop whose first message the fast path wrote at once.
    written_in_turn: Option<u64>,
    /// The TLS session of a `wss:` connection.
    tls: Option<Box<ClientConnection>>,
    /// The session failed opening a record (`read_tls`): once the plaintext of the records before
    /// it is taken, reads return its error.
    tls_failed: bool,
    /// Plaintext bytes of the fast path's frames sealed into the session whose records may not
    /// all be written yet (counted in `bufferedAmount` while records wait).
    js_sealed: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum CloseBy {
    None,
    /// `write_close`: nothing may follow it, so the driver's writes are dropped.
    Js,
    /// The driver framed one (`driver_closes`): the JS thread writes none.
    Driver,
}

impl WriterInner {
    fn hold(&mut self) {
        if self.held.is_none() {
            self.held = Some(Gauge::<IoBuffers>::new());
        }
    }

    /// Everything is written: an idle connection keeps no write buffer.
    fn release_if_written(&mut self) {
        if self.pending.is_empty() && !self.sealed_waiting() && self.held.is_some() {
            self.pending = Vec::new();
            self.held = None;
        }
    }

    /// TLS records sealed but not yet taken by the socket.
    fn sealed_waiting(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Bytes the socket did not take wait for the driver: the fast path must not go ahead of them.
    fn backed_up(&self) -> bool {
        (!self.pending.is_empty() && !self.corked) || self.sealed_waiting()
    }

    /// Writes `bytes` without waiting and returns how many of them are done with: written, or
    /// under TLS sealed (all of them, or an error and none). Sealed records the socket does not
    /// take, or fails to, wait in the session: the driver's flush writes them or meets the error.
    fn write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self.tls.as_deref_mut() {
            None => self.half.try_write(bytes),
            Some(tls) => {
                let waiting = if tls.wants_write() { self.js_sealed } else { 0 };
                seal(tls, bytes)?;
                let mut out = SyncWriter {
                    half: &mut self.half,
                    cx: None,
                };
                let _ = write_sealed(tls, &mut out);
                self.js_sealed = if tls.wants_write() { waiting + bytes.len() } else { 0 };
                Ok(bytes.len())
            }
        }
    }
}

/// Seals `bytes` into TLS records, which wait in the session until written. The session has no
/// buffer limit: what it holds is bounded by its callers, who seal only once what it held before
/// is written (the driver), or when nothing waits (the fast path: a frame, or a turn's corked ones).
fn seal(tls: &mut ClientConnection, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let taken = tls.writer().write(bytes)?;
    if taken < bytes.len() {
        return Err(io::Error::other("the TLS session took only part of a write"));
    }
    Ok(())
}

/// Writes the session's sealed records until the socket is full (`WouldBlock`) or they are all out.
fn write_sealed(tls: &mut ClientConnection, out: &mut SyncWriter<'_, '_>) -> io::Result<()> {
    while tls.wants_write() {
        if tls.write_tls(out)? == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
    Ok(())
}

/// `io::Write` over the write half, for the session: without a context it writes what the socket
/// takes now; with one, a full socket registers the driver for room to write. Either way a full
/// socket is `WouldBlock`.
struct SyncWriter<'a, 'b> {
    half: &'a mut WriteHalf,
    cx: Option<&'a mut Context<'b>>,
}

impl io::Write for SyncWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.cx.as_deref_mut() {
            None => self.half.try_write(buf),
            Some(cx) => match self.half.poll_write(cx, buf) {
                Poll::Ready(done) => done,
                Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
            },
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where a session reads its records from: the socket, read by the driver or by the JS thread.
trait RecordSource: io::Read {
    /// The session read `RECORDS_TURN` bytes and opened no plaintext: the reader stops there, and
    /// comes back after other work had a turn.
    fn give_way(&mut self);
}

/// What one read of a session takes from the socket at most when none of it is plaintext (records
/// of the handshake protocol, such as session tickets, which a server may send without end): the
/// driver's task or the JS thread's turn must end, and not only when the socket runs dry.
const RECORDS_TURN: usize = 16 * 1024;

/// `io::Read` over the read half, for the session: no data yet is `WouldBlock`, with the driver
/// registered to be woken when some comes.
struct SyncReader<'a, 'b> {
    half: &'a mut ReadHalf,
    cx: &'a mut Context<'b>,
}

impl io::Read for SyncReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut *self.half).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl RecordSource for SyncReader<'_, '_> {
    /// The driver's task is polled again once the runtime's other tasks had their turn.
    fn give_way(&mut self) {
        self.cx.waker().wake_by_ref();
    }
}

/// The most of a driver's write sealed at once under TLS: what waits in the session stays
/// within about this much plus a turn's corked frames.
const SEAL_MAX: usize = 64 * 1024;

/// Corked bytes past which the fast path writes without waiting for the end of the turn.
const CORK_LIMIT: usize = 64 * 1024;

impl Writer {
    /// `tls`: the session of a `wss:` connection whose handshake is done; whatever it already
    /// read stays in it.
    pub fn new(half: WriteHalf, tls: Option<ClientConnection>) -> Self {
        let tls = tls.map(|mut session| {
            // Bounded by its callers instead (`seal`): a limit would make it take part of a frame.
            session.set_buffer_limit(None);
            Box::new(session)
        });
        Writer {
            tls: tls.is_some(),
            inner: Mutex::new(WriterInner {
                half,
                pending: Vec::new(),
                corked: false,
                blocked: false,
                tls_failed: false,
                held: None,
                close: CloseBy::None,
                written_in_turn: None,
                tls,
                js_sealed: 0,
            }),
            waker: Default::default(),
        }
    }

    /// Whether this writer holds a TLS session.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WriterInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `frame` for the send fast path. The first frame of a turn of the JS event loop
    /// (`turn`, where the runtime numbers them) is written at once, as `ws` writes: the round
    /// trip of a request starts now rather than after the listener and the microtasks. Later
    /// ones are corked: appended to what the JS thread has written in this turn, for `uncork()`
    /// (a microtask later) to write them all with one system call. Returns whether the caller
    /// must schedule that `uncork()`. `None`: the socket is backed up (bytes the driver must
    /// flush first), or the TLS session failed: use the driver.
    ///
    /// `encode` appends the frame to the buffer it is given. It runs under the writer's lock, once
    /// the frame is sure to be taken: a compressed frame changes the compressor's context, so one
    /// refused here, and compressed again by the driver, would leave the peer's context behind ours.
    /// (The one exception, a TLS session that fails to seal it, has failed the connection: nothing
    /// more reaches the peer.)
    pub fn write_or_cork(&self, turn: Option<u64>, encode: impl FnOnce(&mut Vec<u8>)) -> Option<bool> {
        let mut w = self.lock();
        if w.close != CloseBy::None || w.blocked || w.backed_up() {
            return None;
        }
        if turn.is_some() && !w.corked && w.written_in_turn != turn {
            let mut frame = Vec::new();
            encode(&mut frame);
            let frame = frame.as_slice();
            // Nothing is pending (checked above): the frame goes first. A failed write is the
            // driver's to report, as for `uncork`; a session that cannot seal it leaves it to the
            // driver, whose write meets the same failure.
            let written = if w.tls.is_some() {
                w.write_now(frame).ok()?
            } else {
                w.write_now(frame).unwrap_or_default()
            };
            w.written_in_turn = turn;
            testing::count(Probe::WrittenAtOnce, 1);
            if written < frame.len() {
                w.pending.extend_from_slice(&frame[written..]);
            }
            if w.backed_up() {
                w.hold();
                self.waker.wake();
            }
            return Some(false);
        }
        let first = !w.corked;
        w.corked = true;
        w.hold();
        encode(&mut w.pending);
        if w.pending.len() >= CORK_LIMIT {
            // Enough for one write: do not wait for the end of the turn.
            Self::uncork_locked(&mut w, &self.waker);
        }
        Some(first)
    }

    /// Writes our close frame now, behind what the fast path corked in this turn, so that the
    /// peer's answer is on its way while the driver wakes up to read it. False (nothing written):
    /// the socket is backed up (the driver writes the close after the rest), or a close frame
    /// already went or is on its way (an answer to the peer's close).
    pub fn write_close(&self, frame: &[u8]) -> bool {
        let mut w = self.lock();
        if w.close != CloseBy::None || w.blocked || w.backed_up() {
            return false;
        }
        w.close = CloseBy::Js;
        w.corked = true;
        w.hold();
        w.pending.extend_from_slice(frame);
        Self::uncork_locked(&mut w, &self.waker);
        true
    }

    /// Our close frame went from the JS thread: the driver writes no other.
    pub fn closed_by_js(&self) -> bool {
        self.lock().close == CloseBy::Js
    }

    /// The driver is about to write a close frame: the JS thread must not write one too. Returns
    /// false when the JS thread already has (the driver's would be dropped anyway).
    pub fn driver_closes(&self) -> bool {
        let mut w = self.lock();
        if w.close == CloseBy::Js {
            return false;
        }
        w.close = CloseBy::Driver;
        true
    }

    /// Writes what the fast path corked; what the socket does not take is left to the driver.
    pub fn uncork(&self) {
        Self::uncork_locked(&mut self.lock(), &self.waker);
    }

    fn uncork_locked(w: &mut WriterInner, waker: &futures_util::task::AtomicWaker) {
        if !w.corked {
            return;
        }
        w.corked = false;
        testing::count(Probe::CorkedWrites, 1);
        let pending = std::mem::take(&mut w.pending);
        // A failed write is the driver's to report; here nothing was written (and under TLS,
        // nothing sealed: the driver's flush meets the session's failure).
        let written = w.write_now(&pending).unwrap_or_default();
        w.pending = pending;
        w.pending.drain(..written);
        if w.backed_up() || !w.pending.is_empty() {
            waker.wake();
        } else {
            w.release_if_written();
        }
    }

    /// Bytes of the fast path's frames the socket has not taken yet: corked in this turn, left
    /// over by a write, or sealed and waiting in the TLS session (`bufferedAmount` counts them).
    pub fn unsent(&self) -> usize {
        let w = self.lock();
        w.pending.len() + if w.sealed_waiting() { w.js_sealed } else { 0 }
    }

    /// The bytes the socket has taken, from both paths (a connection whose writes go on is read
    /// by its peer: the heartbeat counts that).
    pub fn socket_took(&self) -> u64 {
        self.lock().half.written()
    }

    /// Whether bytes of the fast path wait for the driver to write them.
    pub fn has_pending(&self) -> bool {
        let w = self.lock();
        !w.pending.is_empty() || w.sealed_waiting()
    }

    /// The driver's write: what the fast path left goes first, then as much of `buf` as the
    /// socket takes now (under TLS, up to `SEAL_MAX` of it sealed, and written as far as the
    /// socket takes it). The caller keeps the rest and calls again when woken.
    pub fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut w = self.lock();
        w.blocked = true;
        ready!(Self::flush_pending(&mut w, cx))?;
        if w.close == CloseBy::Js {
            // Our close went from the JS thread after every message (`write_close`): what the
            // driver still has is a pong or a ping, which must not follow a close. Dropped.
            w.blocked = false;
            return Poll::Ready(Ok(buf.len()));
        }
        let inner = &mut *w;
        let n = match inner.tls.as_deref_mut() {
            None => ready!(inner.half.poll_write(cx, buf))?,
            Some(tls) => {
                let n = buf.len().min(SEAL_MAX);
                seal(tls, &buf[..n])?;
                // What the socket does not take now waits sealed, with the driver registered to
                // be woken when there is room: its flush writes it before anything else.
                match write_sealed(
                    tls,
                    &mut SyncWriter {
                        half: &mut inner.half,
                        cx: Some(cx),
                    },
                ) {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Poll::Ready(Err(e)),
                    _ => {}
                }
                if inner.sealed_waiting() {
                    inner.hold();
                }
                n
            }
        };
        w.blocked = n < buf.len();
        Poll::Ready(Ok(n))
    }

    fn flush_pending(w: &mut WriterInner, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The driver writing first is fine: corked frames are in order, and nothing is behind them.
        w.corked = false;
        let WriterInner {
            half,
            pending,
            tls,
            js_sealed,
            ..
        } = w;
        match tls.as_deref_mut() {
            None => {
                while !pending.is_empty() {
                    let n = ready!(half.poll_write(cx, pending.as_slice()))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    pending.drain(..n);
                }
            }
            Some(tls) => {
                if !pending.is_empty() {
                    // Records of earlier frames may have been written since by another path
                    // (a read's alert, `end_now`): count from what still waits.
                    let waiting = if tls.wants_write() { *js_sealed } else { 0 };
                    seal(tls, pending)?;
                    *js_sealed = waiting + pending.len();
                    pending.clear();
                }
                match write_sealed(tls, &mut SyncWriter { half, cx: Some(cx) }) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                    done => done?,
                }
                *js_sealed = 0;
            }
        }
        w.release_if_written();
        Poll::Ready(Ok(()))
    }

    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Self::flush_pending(&mut self.lock(), cx)
    }

    /// A connection whose close handshake is done ends its side as `ws`'s `socket.end()` does: a
    /// `wss:` one with its close_notify (RFC 8446 §6.1), so that the peer does not take the TCP
    /// close for a truncation, then the TCP half-close (FIN), so that a peer waiting for it closes.
    /// Written if the socket takes it now, never waited for (the peer's close ends the wait anyway).
    /// False when the socket did not take all of the close_notify: the rest waits sealed, for the
    /// driver's flush, and the caller calls again once it is written (the alert is sealed once).
    pub fn end_now(&self) -> bool {
        let mut w = self.lock();
        let inner = &mut *w;
        if let Some(tls) = inner.tls.as_deref_mut() {
            tls.send_close_notify();
            if !write_sealed_now(tls, &mut inner.half) {
                // A FIN now would cut it short.
                inner.hold();
                self.waker.wake();
                return false;
            }
        }
        // Immediate on every platform (a `shutdown(2)`): no waker is kept.
        let _ = inner
            .half
            .poll_shutdown(&mut Context::from_waker(std::task::Waker::noop()));
        true
    }

    pub fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut w = self.lock();
        if let Some(tls) = w.tls.as_deref_mut() {
            // Once only: the session sends no alert after its first.
            tls.send_close_notify();
        }
        ready!(Self::flush_pending(&mut w, cx))?;
        w.half.poll_shutdown(cx)
    }

    /// The driver's read of a `wss:` connection: plaintext the session holds, else what the
    /// socket has, decrypted (`Pending` with the driver registered to be woken by more, or woken
    /// at once after `RECORDS_TURN` bytes that held no plaintext).
    pub fn poll_read_tls(
        &self,
        read: &mut ReadHalf,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.read_tls(&mut SyncReader { half: read, cx }, buf)
    }

    /// As `poll_read_tls`, for the JS thread, whose socket watch reports readiness: the socket is
    /// read without waiting, and not again once a read found it empty (`drained`, as for a plain
    /// socket), nor past `RECORDS_TURN` bytes that held no plaintext. `Pending` only when the
    /// session holds no plaintext and no whole record: what is left for later is on the socket,
    /// where the watch sees it.
    pub fn read_tls_now(
        &self,
        socket: &SharedSocket,
        drained: &mut bool,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.read_tls(&mut RecvNow { socket, drained }, buf)
    }

    /// Plaintext the session holds, else what `source` has, decrypted. Under the lock, as the
    /// session seals the JS thread's frames too.
    fn read_tls(&self, source: &mut dyn RecordSource, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        use std::io::BufRead;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut w = self.lock();
        let inner = &mut *w;
        let Some(tls) = inner.tls.as_deref_mut() else {
            return Poll::Ready(Err(io::Error::other("not a TLS connection")));
        };
        let mut taken = 0;
        loop {
            // Copied from the session's first chunk into the caller's buffer as it is (`ReadBuf`'s
            // unfilled part is not initialized first). Empty once the peer's close_notify came;
            // `UnexpectedEof` for a TCP close without it.
            match tls.reader().into_first_chunk() {
                Ok(chunk) => {
                    let n = chunk.len().min(buf.remaining());
                    buf.put_slice(&chunk[..n]);
                    tls.reader().consume(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if inner.tls_failed {
                // rustls gives the same error again, doing no new work.
                let e = tls
                    .process_new_packets()
                    .err()
                    .unwrap_or(rustls::Error::General("the TLS session failed".into()));
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
            if taken >= RECORDS_TURN {
                // Nothing whole is left in the session: the rest is on the socket.
                source.give_way();
                return Poll::Pending;
            }
            match tls.read_tls(source) {
                Ok(n) => taken += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
            // Every whole record read so far is opened here: none waits in the session unseen.
            let processed = tls.process_new_packets();
            // An alert, or the answer to a key update: now if the socket takes it, else the
            // driver writes it before anything else.
            if tls.wants_write() && !write_sealed_now(tls, &mut inner.half) {
                if inner.held.is_none() {
                    inner.held = Some(Gauge::<IoBuffers>::new());
                }
                self.waker.wake();
            }
            if processed.is_err() {
                // The records opened before the one that failed (a bad MAC, the peer's fatal
                // alert) may hold plaintext: a message, the peer's close frame. It is read first,
                // as OpenSSL gives it, and the error once it is taken (above).
                inner.tls_failed = true;
            }
        }
    }
}

/// What the session has sealed, written as far as the socket takes it now (no waiting): whether
/// it took it all.
fn write_sealed_now(tls: &mut ClientConnection, half: &mut WriteHalf) -> bool {
    let _ = write_sealed(tls, &mut SyncWriter { half, cx: None });
    !tls.wants_write()
}

/// The socket read without waiting, for the session on the JS thread (see `read_tls_now`).
struct RecvNow<'a> {
    socket: &'a SharedSocket,
    drained: &'a mut bool,
}

impl RecordSource for RecvNow<'_> {
    /// The JS thread's turn ends; its watch fires again for what is left on the socket.
    fn give_way(&mut self) {}
}

impl io::Read for RecvNow<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if *self.drained {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let room = buf.len();
        let n = napi_raw::recv_now(self.socket, &mut ReadBuf::new(buf))?;
        *self.drained = n > 0 && n < room;
        Ok(n)
    }
}

/// A `wss:` connection's reads for a reader of its own (`reader::SharedReader`, the driver's
/// side): through the session in `writer`.
pub struct SessionRead<'a> {
    pub writer: &'a Writer,
    pub half: &'a mut ReadHalf,
}

impl AsyncRead for SessionRead<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.writer.poll_read_tls(this.half, cx, buf)
    }
}

#[cfg(test)]
impl Writer {
    fn write_or_cork_bytes(&self, frame: &[u8], turn: Option<u64>) -> Option<bool> {
        self.write_or_cork(turn, |out| out.extend_from_slice(frame))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;

    use super::*;
    use crate::plain;
    use crate::tls::{self, TlsOptions};

    /// A writer over the write half of `tcp`, with the read half (kept open beside it).
    fn split(tcp: TcpStream, tls: Option<ClientConnection>) -> (ReadHalf, Writer) {
        let (read, write) = plain::split(tcp).unwrap();
        (read, Writer::new(write, tls))
    }

    #[tokio::test]
    async fn the_fast_path_writes_a_turns_first_frame_at_once_and_corks_the_others() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        peer.set_nonblocking(true).unwrap();
        // On loopback a write is in the peer's receive queue when the call returns.
        let mut arrived = || {
            let mut buf = [0u8; 64];
            match peer.read(&mut buf) {
                Ok(n) => buf[..n].to_vec(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Vec::new(),
                Err(e) => panic!("{e}"),
            }
        };
        let (_read, writer) = split(tcp, None);
        assert_eq!(
            writer.write_or_cork_bytes(b"one", Some(7)),
            Some(false),
            "written: nothing to uncork"
        );
        assert_eq!(arrived(), b"one");
        assert_eq!(
            writer.write_or_cork_bytes(b"two", Some(7)),
            Some(true),
            "corked: the caller uncorks"
        );
        assert_eq!(
            writer.write_or_cork_bytes(b"three", Some(7)),
            Some(false),
            "corked behind it"
        );
        assert_eq!(arrived(), b"");
        writer.uncork();
        assert_eq!(arrived(), b"twothree", "one write");
        assert_eq!(writer.write_or_cork_bytes(b"four", Some(8)), Some(false), "a new turn");
        assert_eq!(arrived(), b"four");
        // A runtime whose turns are not numbered corks everything.
        assert_eq!(writer.write_or_cork_bytes(b"five", None), Some(true));
        assert_eq!(writer.write_or_cork_bytes(b"six", None), Some(false));
        assert_eq!(arrived(), b"");
        writer.uncork();
        assert_eq!(arrived(), b"fivesix");
        assert!(!writer.has_pending());
    }

    #[tokio::test]
    async fn a_first_frame_the_socket_does_not_take_whole_is_left_to_the_driver_and_released_once_written() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        let (_read, writer) = split(tcp, None);
        // More than loopback's socket buffers take while the peer reads nothing.
        let frame = vec![7u8; 64 << 20];
        assert_eq!(
            writer.write_or_cork_bytes(&frame, Some(1)),
            Some(false),
            "written as far as it goes"
        );
        assert!(writer.has_pending(), "the rest waits in the writer");
        assert!(writer.lock().held.is_some(), "counted in ioBuffers while held");
        assert_eq!(
            writer.write_or_cork_bytes(b"next", Some(1)),
            None,
            "the turn's next message goes behind it"
        );
        assert_eq!(
            writer.write_or_cork_bytes(b"next", Some(2)),
            None,
            "so does the next turn's first"
        );
        let len = frame.len();
        let reader = std::thread::spawn(move || {
            let (mut got, mut buf) = (0, vec![0u8; 1 << 20]);
            while got < len {
                let n = peer.read(&mut buf).unwrap();
                assert!(
                    n > 0 && buf[..n].iter().all(|&b| b == 7),
                    "the frame's bytes, nothing else"
                );
                got += n;
            }
            got
        });
        // The driver's flush writes the rest as the peer reads it.
        let flushed = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            std::future::poll_fn(|cx| writer.poll_flush(cx)),
        );
        flushed.await.expect("flushed in time").unwrap();
        assert_eq!(reader.join().unwrap(), len);
        assert!(!writer.has_pending());
        assert!(writer.lock().held.is_none(), "released once written");
    }

    /// A `wss:` connection's read half and writer, to a rustls server on loopback (a throwaway
    /// certificate made with openssl; the client does not check it), with the server's side as a
    /// blocking stream.
    /// `name`: the certificate's scratch directory (distinct per test: they run in parallel).
    async fn tls_pair(
        name: &str,
    ) -> (
        ReadHalf,
        Writer,
        rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>,
    ) {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (cert, key) = tls::self_signed_for_localhost(name);
        let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let mut conn = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
            let mut tcp = tcp;
            while conn.is_handshaking() {
                conn.complete_io(&mut tcp).unwrap();
            }
            rustls::StreamOwned::new(conn, tcp)
        });
        let options = TlsOptions {
            reject_unauthorized: false,
            ..Default::default()
        };
        let config = tls::shared_client_config(&options).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::<rustls::ClientConfig>::clone(&config))
            .connect(name, tcp)
            .await
            .unwrap();
        let (tcp, session) = stream.into_inner();
        let (read, writer) = split(tcp, Some(session));
        (read, writer, server.join().unwrap())
    }

    #[tokio::test]
    async fn under_tls_a_close_notify_the_socket_cannot_take_is_flushed_before_the_fin() {
        use std::io::Read;
        let (_half, writer, mut server) = tls_pair("writer-close-notify").await;
        // More than loopback's socket buffers take while the server reads nothing: the rest of
        // the frame waits sealed in the session, and the close_notify behind it.
        let frame = vec![7u8; 16 << 20];
        assert_eq!(writer.write_or_cork_bytes(&frame, Some(1)), Some(false));
        assert!(writer.has_pending());
        assert!(!writer.end_now(), "the close_notify waits: no FIN before it");
        server
            .sock
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let reader = std::thread::spawn(move || {
            let (mut got, mut buf) = (0, vec![0u8; 1 << 20]);
            loop {
                // 0: the close_notify (a TCP close without it is an error).
                let n = server.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                assert!(buf[..n].iter().all(|&b| b == 7), "the frame's bytes, nothing else");
                got += n;
            }
            // Then the FIN (a timeout if it never comes).
            assert_eq!(server.sock.read(&mut buf).unwrap(), 0, "the TCP half-close");
            got
        });
        let flushed = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            std::future::poll_fn(|cx| writer.poll_flush(cx)),
        );
        flushed.await.expect("flushed in time").unwrap();
        assert!(writer.end_now(), "written: the FIN follows");
        assert_eq!(reader.join().unwrap(), frame.len());
        assert!(writer.lock().held.is_none(), "nothing held");
    }

    #[tokio::test]
    async fn under_tls_the_fast_path_seals_and_writes_and_a_key_update_is_answered_in_order() {
        use std::io::{Read, Write};
        let (mut half, writer, mut server) = tls_pair("writer-key-update").await;
        let mut session = SessionRead {
            writer: &writer,
            half: &mut half,
        };
        let mut got = [0u8; 64];
        // Written from the calling thread at once: the server reads it without the driver.
        assert_eq!(writer.write_or_cork_bytes(b"one", Some(1)), Some(false));
        let n = server.read(&mut got).unwrap();
        assert_eq!(&got[..n], b"one");
        assert!(!writer.has_pending());
        // The server renews its keys and asks us to renew ours: the driver's read decrypts with
        // the new keys, and our answer goes before anything sealed after it.
        server.conn.refresh_traffic_keys().unwrap();
        server.write_all(b"two").unwrap();
        let mut buf = vec![0u8; 64];
        let n = session.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"two");
        assert_eq!(writer.write_or_cork_bytes(b"three", Some(2)), Some(false));
        assert_eq!(writer.write_or_cork_bytes(b"four", Some(2)), Some(true), "corked");
        writer.uncork();
        let mut seen = Vec::new();
        while seen.len() < 9 {
            let n = server.read(&mut got).unwrap();
            assert!(n > 0, "the server's stream ended");
            seen.extend_from_slice(&got[..n]);
        }
        assert_eq!(seen, b"threefour");
        // The driver's shutdown: close_notify, then the TCP close; the server sees a clean end.
        std::future::poll_fn(|cx| writer.poll_shutdown(cx)).await.unwrap();
        assert_eq!(server.read(&mut got).unwrap(), 0);
        // And the server's close_notify is a clean end for our reads.
        server.conn.send_close_notify();
        server.flush().unwrap();
        assert_eq!(session.read(&mut buf).await.unwrap(), 0);
        assert!(writer.lock().held.is_none(), "nothing held");
    }
}
