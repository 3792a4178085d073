//! The byte stream under the WebSocket: TCP, optionally tunnelled through an
//! HTTP CONNECT or SOCKS5 proxy, optionally wrapped in TLS (rustls with ring, configured by
//! `tls`); or a Unix domain socket.
//!
//! tungstenite has no proxy support, so the CONNECT exchange is written
//! here by hand: one request, one response head, then the tunnel is ours.
//!
//! tokio-rustls makes the TLS handshake; after it the session moves into the connection's `Writer`,
//! where the JS thread's send fast path can seal frames with it too (a `TlsStream` belongs to the
//! one task that polls it). Moving records between the session and the socket is written here.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use url::Url;

use crate::ask;
use crate::errors::{self, ConnError};
use crate::napi_raw::{self, RawSocket};
use crate::plain::{self, ReadHalf, WriteHalf};
use crate::resolve;
use crate::socks;
use crate::stats::{self, Gauge, IoBuffers};
use crate::tls::{self, TlsOptions};

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
                seal(tls, bytes)?;
                let mut out = SyncWriter {
                    half: &mut self.half,
                    cx: None,
                };
                let _ = write_sealed(tls, &mut out);
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

/// The send fast path's writes since the process started: first messages of a turn written at
/// once, and writes of what was corked (`disconnect()`'s close among them; tests prove which path
/// a message took).
pub static WRITTEN_AT_ONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
pub static CORKED_WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Writer {
    fn new(half: WriteHalf, tls: Option<Box<ClientConnection>>) -> Self {
        Writer {
            tls: tls.is_some(),
            inner: Mutex::new(WriterInner {
                half,
                pending: Vec::new(),
                corked: false,
                blocked: false,
                held: None,
                close: CloseBy::None,
                written_in_turn: None,
                tls,
            }),
            waker: Default::default(),
        }
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
    pub fn write_or_cork(&self, frame: &[u8], turn: Option<u64>) -> Option<bool> {
        let mut w = self.lock();
        if w.close != CloseBy::None || w.blocked || w.backed_up() {
            return None;
        }
        if turn.is_some() && !w.corked && w.written_in_turn != turn {
            // Nothing is pending (checked above): the frame goes first. A failed write is the
            // driver's to report, as for `uncork`; a session that cannot seal it leaves it to the
            // driver, whose write meets the same failure.
            let written = if w.tls.is_some() {
                w.write_now(frame).ok()?
            } else {
                w.write_now(frame).unwrap_or_default()
            };
            w.written_in_turn = turn;
            stats::inc(&WRITTEN_AT_ONCE);
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
        w.pending.extend_from_slice(frame);
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
        stats::inc(&CORKED_WRITES);
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

    /// Whether bytes of the fast path wait for the driver to write them.
    pub fn has_pending(&self) -> bool {
        let w = self.lock();
        !w.pending.is_empty() || w.sealed_waiting()
    }

    /// The driver's write: what the fast path left goes first, then as much of `buf` as the
    /// socket takes now (under TLS, up to `SEAL_MAX` of it sealed, and written as far as the
    /// socket takes it). The caller keeps the rest and calls again when woken.
    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
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
        let WriterInner { half, pending, tls, .. } = w;
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
                    seal(tls, pending)?;
                    pending.clear();
                }
                match write_sealed(tls, &mut SyncWriter { half, cx: Some(cx) }) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                    done => done?,
                }
            }
        }
        w.release_if_written();
        Poll::Ready(Ok(()))
    }

    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Self::flush_pending(&mut self.lock(), cx)
    }

    fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
    fn poll_read_tls(&self, read: &mut ReadHalf, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.read_tls(&mut SyncReader { half: read, cx }, buf)
    }

    /// As `poll_read_tls`, for the JS thread, whose socket watch reports readiness: the socket is
    /// read without waiting, and not again once a read found it empty (`drained`, as for a plain
    /// socket), nor past `RECORDS_TURN` bytes that held no plaintext. `Pending` only when the
    /// session holds no plaintext and no whole record: what is left for later is on the socket,
    /// where the watch sees it.
    pub fn read_tls_now(&self, socket: RawSocket, drained: &mut bool, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
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
            if tls.wants_write() {
                // An alert, or the answer to a key update: now if the socket takes it, else the
                // driver writes it before anything else.
                let _ = write_sealed(
                    tls,
                    &mut SyncWriter {
                        half: &mut inner.half,
                        cx: None,
                    },
                );
                if tls.wants_write() {
                    if inner.held.is_none() {
                        inner.held = Some(Gauge::<IoBuffers>::new());
                    }
                    self.waker.wake();
                }
            }
            if let Err(e) = processed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
    }
}

/// The socket read without waiting, for the session on the JS thread (see `read_tls_now`).
struct RecvNow<'a> {
    socket: RawSocket,
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

/// The connection's byte stream: the read half (until a reader shared with the JS thread takes
/// it) and the writer shared with the send fast path, which holds the TLS session of a `wss:`
/// connection.
pub struct Transport {
    read: Option<ReadHalf>,
    writer: Arc<Writer>,
}

impl Transport {
    fn plain(tcp: TcpStream) -> io::Result<Self> {
        let (read, write) = plain::split(tcp)?;
        Ok(Self::from_halves(read, write, None))
    }

    #[cfg(unix)]
    fn unix(socket: tokio::net::UnixStream) -> io::Result<Self> {
        let (read, write) = plain::split_unix(socket)?;
        Ok(Self::from_halves(read, write, None))
    }

    /// A `wss:` connection once its handshake is done: the socket split as a plain one's, the
    /// session in the writer. Whatever the session already read stays in it.
    fn tls(tcp: TcpStream, mut session: ClientConnection) -> io::Result<Self> {
        let (read, write) = plain::split(tcp)?;
        // Bounded by its callers instead (`seal`): a limit would make it take part of a frame.
        session.set_buffer_limit(None);
        Ok(Self::from_halves(read, write, Some(Box::new(session))))
    }

    fn from_halves(read: ReadHalf, write: WriteHalf, tls: Option<Box<ClientConnection>>) -> Self {
        Transport {
            read: Some(read),
            writer: Arc::new(Writer::new(write, tls)),
        }
    }

    /// The read half, for a reader of its own (`reader::SharedReader`); reads through the
    /// transport then fail. Under TLS the reader reads it through the session (`session`).
    pub fn take_read_half(&mut self) -> Option<ReadHalf> {
        self.read.take()
    }

    /// The writer that holds the TLS session of a `wss:` connection (`None` for a plain one).
    pub fn session(&self) -> Option<Arc<Writer>> {
        self.writer.tls.then(|| self.writer.clone())
    }

    /// The writer, shared with the send fast path.
    pub fn writer(&self) -> Arc<Writer> {
        self.writer.clone()
    }
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.read.as_mut() {
            Some(read) if this.writer.tls => this.writer.poll_read_tls(read, cx, buf),
            Some(read) => Pin::new(read).poll_read(cx, buf),
            None => Poll::Ready(Err(io::Error::other("the socket is read by its shared reader"))),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.writer.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.poll_shutdown(cx)
    }
}

/// A proxy: HTTP CONNECT, or SOCKS5.
#[derive(Clone)]
pub struct Proxy {
    pub kind: ProxyKind,
    pub host: String,
    pub port: u16,
    /// User name and password: `Proxy-Authorization: Basic`, or SOCKS5's user name and password
    /// (and nowhere else: not even `Debug`).
    pub credentials: Option<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ProxyKind {
    /// `http://`: an HTTP CONNECT tunnel.
    Http,
    /// `socks5://` (host names resolved here, as for a direct connection) or `socks5h://` (by the proxy).
    Socks5 { proxy_resolves: bool },
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Proxy {
    /// Its errors name the URL with the credentials masked (`redact`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let url = Url::parse(s).map_err(|e| format!("invalid proxy URL {}: {e}", redact(s)))?;
        let (kind, default_port) = match url.scheme() {
            "http" => (ProxyKind::Http, 80),
            "socks5" => (ProxyKind::Socks5 { proxy_resolves: false }, 1080),
            "socks5h" => (ProxyKind::Socks5 { proxy_resolves: true }, 1080),
            _ => {
                return Err(format!(
                    "only http:// (CONNECT), socks5:// and socks5h:// proxies are supported, got {}",
                    redact(url.as_str())
                ))
            }
        };
        let host = url
            .host_str()
            .ok_or_else(|| format!("proxy URL has no host: {}", redact(url.as_str())))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let credentials = (!url.username().is_empty()).then(|| {
            (
                percent_decode(url.username()),
                percent_decode(url.password().unwrap_or("")),
            )
        });
        Ok(Proxy {
            kind,
            host,
            port: url.port().unwrap_or(default_port),
            credentials,
        })
    }
}

/// A URL (parsed or not) as it may appear in a message: `user:pass@` becomes `user:***@`, a
/// lone user name (often a token) `***@`. The userinfo is what precedes the last `@` of the
/// authority (which ends at `/`, `?`, `#` or `\\`), as the URL parser reads it.
pub fn redact(s: &str) -> String {
    let rest_at = s.find("://").map_or(0, |i| i + 3);
    let authority_end = s[rest_at..]
        .find(['/', '?', '#', '\\'])
        .map_or(s.len(), |i| rest_at + i);
    match s[rest_at..authority_end].rfind('@') {
        None => s.to_owned(),
        Some(at) => {
            let userinfo = &s[rest_at..rest_at + at];
            let masked = match userinfo.find(':') {
                Some(colon) => format!("{}:***", &userinfo[..colon]),
                None => "***".to_owned(),
            };
            format!("{}{masked}{}", &s[..rest_at], &s[rest_at + at..])
        }
    }
}

/// A parsed URL for a message, without its password (nor a lone user name).
pub fn redact_url(url: &Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        url.to_string()
    } else {
        redact(url.as_str())
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Host and port the URL points at (brackets stripped from IPv6 literals).
pub fn target(url: &Url) -> Result<(String, u16), ConnError> {
    let port = url.port_or_known_default().unwrap_or(80);
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(ConnError::new(errors::ERR_CONNECT, "URL has no host")),
    };
    Ok((host, port))
}

/// How TCP connections are made: `net.connect`'s `family`, `localAddress` and `localPort`, as `ws`
/// passes them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Dial {
    /// 4 or 6: only the host's addresses of that IP version; 0: any. An IP literal is used as is.
    pub family: u8,
    /// The local address to connect from.
    pub local: Option<IpAddr>,
    /// The local port to connect from; 0: chosen by the system.
    pub local_port: u16,
}

impl Dial {
    /// Whether sockets are bound before they connect (as Node binds for `localAddress` or `localPort`).
    fn binds(&self) -> bool {
        self.local.is_some() || self.local_port != 0
    }
}

/// `lookup`: the client's `lookup` function, which then looks up host names instead of the system.
async fn tcp(host: &str, port: u16, dial: Dial, lookup: Option<&ask::Asker>) -> io::Result<TcpStream> {
    let stream = match host.parse::<IpAddr>() {
        Ok(ip) if !dial.binds() => TcpStream::connect((ip, port)).await?,
        Ok(ip) => connect_from(SocketAddr::new(ip, port), dial).await?,
        Err(_) => {
            // As tokio's own connect: each address in the resolver's order, the last error if none
            // connects.
            let mut last = None;
            for addr in addresses(host, port, dial, lookup).await? {
                match connect_from(addr, dial).await {
                    Ok(stream) => {
                        last = Some(Ok(stream));
                        break;
                    }
                    Err(e) => last = Some(Err(e)),
                }
            }
            last.unwrap_or_else(|| {
                Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{host} has no address"),
                ))
            })?
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The addresses of host name `host`, in the resolver's (or `lookup`'s) order: only those of the
/// asked IP version (or of the local address's); an error if there is none.
async fn addresses(host: &str, port: u16, dial: Dial, lookup: Option<&ask::Asker>) -> io::Result<Vec<SocketAddr>> {
    let wanted = match (dial.family, dial.local) {
        (4, _) | (0, Some(IpAddr::V4(_))) => Some(true),
        (6, _) | (0, Some(IpAddr::V6(_))) => Some(false),
        _ => None,
    };
    let all: Vec<SocketAddr> = match lookup {
        Some(ask) => resolve::ask_js(ask, host, dial.family)
            .await?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect(),
        None => resolve::resolve(host, port).await?.to_vec(),
    };
    let found: Vec<SocketAddr> = all
        .into_iter()
        .filter(|addr| wanted.is_none_or(|v4| addr.is_ipv4() == v4))
        .collect();
    if found.is_empty() {
        let what = match wanted {
            Some(true) => "IPv4 address",
            Some(false) => "IPv6 address",
            None => "address",
        };
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("{host} has no {what}")));
    }
    Ok(found)
}

/// One TCP connection to `addr`, bound first to `dial`'s local address and port if it has either
/// (the address defaults to the unspecified one of `addr`'s IP version, the port to the system's
/// choice). Like Node (libuv), a bound socket has `SO_REUSEADDR`, so a fixed `localPort` can be
/// bound again while the last connection from it is in TIME_WAIT.
async fn connect_from(addr: SocketAddr, dial: Dial) -> io::Result<TcpStream> {
    if !dial.binds() {
        return TcpStream::connect(addr).await;
    }
    let local = dial.local.unwrap_or(match addr {
        SocketAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    });
    let socket = if local.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if dial.local_port != 0 {
        socket.set_reuseaddr(true)?;
    }
    socket.bind(SocketAddr::new(local, dial.local_port))?;
    socket.connect(addr).await
}

/// The scheme of a Unix domain socket's URL (as `ws` names it).
pub const UNIX_SCHEME: &str = "ws+unix";

/// The socket path and the request target of a `ws+unix:` URL, `ws`'s form:
/// `ws+unix:/path/to/socket:/request/path?query` (the request path `/` when there is no `:`).
pub fn unix_target(url: &Url) -> Option<(&str, String)> {
    if url.scheme() != UNIX_SCHEME {
        return None;
    }
    let (socket, path) = url.path().split_once(':').unwrap_or((url.path(), "/"));
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    Some((
        socket,
        match url.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        },
    ))
}

/// The Unix domain socket of a `ws+unix:` URL.
async fn unix(url: &Url) -> Result<Transport, ConnError> {
    let fail = |e: &dyn std::fmt::Display| ConnError::new(errors::ERR_CONNECT, format!("{e} ({})", redact_url(url)));
    let (socket, _) = unix_target(url).ok_or_else(|| fail(&"not a ws+unix: URL"))?;
    #[cfg(unix)]
    {
        let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| fail(&e))?;
        Transport::unix(stream).map_err(|e| fail(&e))
    }
    #[cfg(not(unix))]
    {
        let _ = socket;
        Err(fail(&"ws+unix: URLs need a Unix system"))
    }
}

/// TCP (through the proxy if any), then TLS for `wss:`; or the socket of a `ws+unix:` URL.
/// `lookup`: the client's `lookup` function; `identity`: its `tls.checkServerIdentity`.
pub async fn open(
    url: &Url,
    proxy: Option<&Proxy>,
    dial: Dial,
    lookup: Option<&ask::Asker>,
    identity: Option<&ask::Asker>,
    tls: &OnceLock<Result<Arc<ClientConfig>, String>>,
    tls_options: &TlsOptions,
) -> Result<Transport, ConnError> {
    if url.scheme() == UNIX_SCHEME {
        return unix(url).await;
    }
    let (host, port) = target(url)?;
    let stream = match proxy {
        None => tcp(&host, port, dial, lookup)
            .await
            .map_err(|e| ConnError::new(errors::ERR_CONNECT, format!("{e} ({})", redact_url(url))))?,
        Some(p) => {
            let s = tcp(&p.host, p.port, dial, lookup).await.map_err(|e| {
                ConnError::new(
                    errors::ERR_PROXY,
                    format!("cannot reach the proxy {}:{}: {e}", p.host, p.port),
                )
            })?;
            match p.kind {
                ProxyKind::Http => http_connect(s, &host, port, p).await?,
                ProxyKind::Socks5 { proxy_resolves } => {
                    socks5(s, &host, port, proxy_resolves, p, dial, lookup, url).await?
                }
            }
        }
    };
    if url.scheme() != "wss" {
        return Transport::plain(stream)
            .map_err(|e| ConnError::new(errors::ERR_CONNECT, format!("{e} ({})", redact_url(url))));
    }
    let config = tls
        .get_or_init(|| tls::shared_client_config(tls_options))
        .as_ref()
        .map_err(|e| ConnError::new(errors::ERR_TLS, e.clone()))?
        .clone();
    let name = tls_options.servername.clone().unwrap_or(host);
    let server_name = ServerName::try_from(name.clone())
        .map_err(|e| ConnError::new(errors::ERR_TLS, format!("invalid server name {name}: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let tls = connector.connect(server_name, stream).await.map_err(tls::tls_error)?;
    if let Some(asker) = identity.filter(|_| tls_options.asks_identity()) {
        let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
        check_identity(asker, name, chain.iter().map(|c| c.to_vec()).collect()).await?;
    }
    let (tcp, session) = tls.into_inner();
    Transport::tls(tcp, session).map_err(|e| ConnError::new(errors::ERR_CONNECT, format!("{e} ({})", redact_url(url))))
}

/// Asks the client's `checkServerIdentity` whether `chain` (verified) is `host`'s.
async fn check_identity(asker: &ask::Asker, host: String, chain: Vec<Vec<u8>>) -> Result<(), ConnError> {
    let refused = |host: &str, why: &str| {
        ConnError::new(
            errors::ERR_TLS_CERT,
            format!("TLS handshake failed: checkServerIdentity refused the certificate of {host}: {why}"),
        )
    };
    match ask::ask(
        asker,
        ask::Question::Identity {
            host: host.clone(),
            chain,
        },
    )
    .await
    {
        ask::Answer::Accepted => Ok(()),
        ask::Answer::Failed(why) => Err(refused(&host, &why)),
        ask::Answer::Addresses(_) => Err(refused(&host, "an answer that is not one")),
    }
}

/// The start of every status line a CONNECT answer may have.
const STATUS_PREFIX: &[u8] = b"HTTP/1.";

/// The status of an HTTP/1.x status line (without its CRLF): `HTTP/1.0` or `HTTP/1.1`, SP,
/// three digits, then SP and a reason phrase (or nothing: the reason is often left out).
/// `None` for anything else: a peer that does not speak HTTP is not a proxy.
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "))?;
    let (code, reason) = rest.split_at_checked(3)?;
    if !code.iter().all(u8::is_ascii_digit) || reason.first().is_some_and(|&b| b != b' ') {
        return None;
    }
    // reason-phrase = *( HTAB / SP / VCHAR / obs-text )
    if reason.iter().any(|&b| b != b'\t' && (b < 0x20 || b == 0x7f)) {
        return None;
    }
    Some(code.iter().fold(0, |n, &d| n * 10 + u16::from(d - b'0')))
}

/// The proxy's answer is not HTTP: `head` is what it sent so far (its first line at most).
fn not_http(head: &[u8]) -> ConnError {
    let start = String::from_utf8_lossy(&head[..head.len().min(32)]);
    ConnError::new(
        errors::ERR_PROXY,
        format!("the proxy did not answer CONNECT with an HTTP/1.x status line (it began {start:?})"),
    )
}

/// A refusal by the proxy (non-2xx). `status` stays `None`: that field is the target server's
/// answer to the upgrade (`shouldReconnect` sees it as `kind: 'handshake'`), and a proxy's
/// refusal is `kind: 'error'`. The status ends the message, `(HTTP <status>)`, from which
/// lib/errors.js `fromNative` sets `err.proxyStatus`.
fn refused(status: u16) -> ConnError {
    if status == 407 {
        ConnError::new(errors::ERR_PROXY_AUTH, "the proxy requires authentication (HTTP 407)")
    } else {
        ConnError::new(
            errors::ERR_PROXY,
            format!("the proxy refused the tunnel (HTTP {status})"),
        )
    }
}

/// A tunnel through SOCKS5 proxy `p` to `host:port`; a host name resolved here first (as for a
/// direct connection: `lookup` and `family` apply) unless the proxy resolves it.
#[allow(clippy::too_many_arguments)]
async fn socks5(
    mut s: TcpStream,
    host: &str,
    port: u16,
    proxy_resolves: bool,
    p: &Proxy,
    dial: Dial,
    lookup: Option<&ask::Asker>,
    url: &Url,
) -> Result<TcpStream, ConnError> {
    let target = match host.parse::<IpAddr>() {
        Ok(ip) => socks::Target::Address(SocketAddr::new(ip, port)),
        Err(_) if proxy_resolves => socks::Target::Name(host, port),
        Err(_) => {
            let unreachable =
                |e: &dyn std::fmt::Display| ConnError::new(errors::ERR_CONNECT, format!("{e} ({})", redact_url(url)));
            let found = addresses(host, port, dial, lookup).await.map_err(|e| unreachable(&e))?;
            let first = found.into_iter().next().ok_or_else(|| unreachable(&"no address"))?;
            socks::Target::Address(first)
        }
    };
    let credentials = p.credentials.as_ref().map(|(u, pw)| (u.as_str(), pw.as_str()));
    socks::connect(&mut s, target, credentials).await?;
    Ok(s)
}

/// Asks the proxy for a tunnel to `host:port`. Nothing more is written until its answer's
/// status line is a 2xx: the upgrade request (its credentials too) goes to a tunnel only.
async fn http_connect(mut s: TcpStream, host: &str, port: u16, proxy: &Proxy) -> Result<TcpStream, ConnError> {
    use base64::Engine;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some((user, pass)) = &proxy.credentials {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    let io_err = |e: io::Error| ConnError::new(errors::ERR_PROXY, format!("proxy tunnel failed: {e}"));
    s.write_all(request.as_bytes()).await.map_err(io_err)?;
    // Read the response head byte by byte: nothing after it may be consumed (it belongs to the tunnel).
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    let mut accepted = false;
    loop {
        if head.len() > 16 * 1024 {
            return Err(ConnError::new(errors::ERR_PROXY, "proxy response head too large"));
        }
        if s.read(&mut byte).await.map_err(io_err)? == 0 {
            return Err(ConnError::new(
                errors::ERR_PROXY,
                "the proxy closed the connection during CONNECT",
            ));
        }
        head.push(byte[0]);
        if accepted {
            if head.ends_with(b"\r\n\r\n") {
                return Ok(s);
            }
            continue;
        }
        // Not HTTP from its first bytes on: fail now rather than wait for a line that may never come.
        let n = head.len().min(STATUS_PREFIX.len());
        if head[..n] != STATUS_PREFIX[..n] {
            return Err(not_http(&head));
        }
        if head.ends_with(b"\r\n") {
            let status = parse_status_line(&head[..head.len() - 2]).ok_or_else(|| not_http(&head))?;
            if !(200..300).contains(&status) {
                return Err(refused(status));
            }
            accepted = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proxy_urls() {
        let p = Proxy::parse("http://us%40er:p%3Ass@127.0.0.1:3128").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("127.0.0.1", 3128));
        assert_eq!(p.credentials, Some(("us@er".to_owned(), "p:ss".to_owned())));
        assert_eq!(p.kind, ProxyKind::Http);
        let p = Proxy::parse("socks5h://u:p@127.0.0.1").unwrap();
        assert_eq!((p.kind, p.port), (ProxyKind::Socks5 { proxy_resolves: true }, 1080));
        assert_eq!(
            Proxy::parse("socks5://[::1]:9050").unwrap().kind,
            ProxyKind::Socks5 { proxy_resolves: false }
        );
        assert!(Proxy::parse("socks4://127.0.0.1").is_err());
        let p = Proxy::parse("http://[::1]:8080").unwrap();
        assert_eq!(p.host, "::1");
        assert!(p.credentials.is_none());
    }

    #[test]
    fn a_ws_unix_url_is_a_socket_path_then_the_request_target() {
        let parts = |s: &str| {
            let url = Url::parse(s).unwrap();
            unix_target(&url).map(|(socket, path)| (socket.to_owned(), path))
        };
        let both = |socket: &str, path: &str| Some((socket.to_owned(), path.to_owned()));
        assert_eq!(
            parts("ws+unix:/run/app.sock:/chat?room=1"),
            both("/run/app.sock", "/chat?room=1")
        );
        assert_eq!(parts("ws+unix:///run/app.sock"), both("/run/app.sock", "/"));
        assert_eq!(parts("ws+unix:/run/app.sock:chat"), both("/run/app.sock", "/chat"));
        assert_eq!(parts("ws://run/app.sock:/chat"), None);
    }

    proptest::proptest! {
        /// Any proxy URL is parsed or refused, never a panic, and neither the refusal nor the
        /// parsed proxy's debug form shows its password.
        #[test]
        fn any_proxy_url_is_parsed_or_refused_without_showing_its_password(
            scheme in "(http|https|socks5|[a-z]{0,5})",
            user in "[a-zA-Z0-9%@:]{0,8}",
            host in "(127\\.0\\.0\\.1|\\[::1\\]|[a-z0-9.:\\[\\]%-]{0,12})",
            port in proptest::option::of("[0-9a-z]{0,7}"),
            rest in "[ -~]{0,8}",
        ) {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let url = format!("{scheme}://{user}:Secr3tPw@{host}{port}{rest}");
            match Proxy::parse(&url) {
                Ok(proxy) => {
                    let debug = format!("{proxy:?}");
                    proptest::prop_assert!(!debug.contains("Secr3tPw"), "{}", debug);
                }
                Err(e) => proptest::prop_assert!(!e.contains("Secr3tPw"), "{}", e),
            }
        }
    }

    #[test]
    fn proxy_errors_and_debug_hold_no_password() {
        for bad in [
            "http://bob:hunter2@127.0.0.1:99999",
            "socks4://bob:hunter2@127.0.0.1:1080",
            "http://bob:hunter2@",
        ] {
            let e = Proxy::parse(bad).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("bob:***@"), "{e}");
        }
        let p = Proxy::parse("http://bob:hunter2@127.0.0.1:3128").unwrap();
        let debug = format!("{p:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("bob"), "{debug}");
    }

    #[test]
    fn redacts_userinfo() {
        assert_eq!(redact("ws://alice:pw@host:1/p?q#f"), "ws://alice:***@host:1/p?q#f");
        assert_eq!(redact("http://tok3n@proxy:8080"), "http://***@proxy:8080");
        assert_eq!(redact("ws://a@b:c@d@host/x@y"), "ws://a@b:***@host/x@y");
        assert_eq!(redact("ws://host/path@x"), "ws://host/path@x");
        assert_eq!(redact("ws://host"), "ws://host");
        assert_eq!(redact("alice:pw@host"), "alice:***@host");
        let url = Url::parse("ws://alice:pw@127.0.0.1:9/").unwrap();
        assert_eq!(redact_url(&url), "ws://alice:***@127.0.0.1:9/");
        assert_eq!(
            redact_url(&Url::parse("ws://127.0.0.1:9/").unwrap()),
            "ws://127.0.0.1:9/"
        );
    }

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 Connection established"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 200 OK"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.1 204 "), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.1 200"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.1 403 Forbidden"), Some(403));
        assert_eq!(
            parse_status_line(b"HTTP/1.1 407 Proxy Authentication Required"),
            Some(407)
        );
        assert_eq!(parse_status_line(b"HTTP/1.1 502 Bad\tGateway \xe9"), Some(502));
        for bad in [
            &b"SSH-2.0 200 ok"[..],
            b"SSH-2.0-OpenSSH_9.6",
            b"HTTP/2 200 OK",
            b"HTTP/2.0 200 OK",
            b"HTTP/1.2 200 OK",
            b"http/1.1 200 OK",
            b"HTTP/1.1  200 OK",
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1 200OK",
            b"HTTP/1.1 2x0 OK",
            b"HTTP/1.1 +20 OK",
            b"HTTP/1.1 200 OK\n",
            b"HTTP/1.1 200 O\0K",
            b"HTTP/1.1",
            b"HTTP/1.1 ",
            b" HTTP/1.1 200 OK",
            b"",
        ] {
            assert_eq!(parse_status_line(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// A one-shot "proxy" on 127.0.0.1 that answers `answer` to the CONNECT head. Returns the
    /// result of `http_connect` (for a tunnel: the client writes `GET`, closes its side and
    /// reads what the proxy sent after its answer's head) and what the proxy received after
    /// the CONNECT head.
    async fn connect_via(answer: &'static [u8]) -> (Result<Vec<u8>, ConnError>, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before the end of its CONNECT head");
                got.extend_from_slice(&buf[..n]);
            }
            let head_len = got.len();
            s.write_all(answer).await.unwrap();
            // Whatever the client sends next, until it closes.
            while let Ok(n @ 1..) = s.read(&mut buf).await {
                got.extend_from_slice(&buf[..n]);
            }
            got.split_off(head_len)
        });
        let proxy = Proxy::parse(&format!("http://bob:hunter2@127.0.0.1:{port}")).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let result = match http_connect(tcp, "example.com", 80, &proxy).await {
            Ok(mut tunnel) => {
                tunnel.write_all(b"GET").await.unwrap();
                tunnel.shutdown().await.unwrap();
                let mut rest = Vec::new();
                tunnel.read_to_end(&mut rest).await.unwrap();
                Ok(rest)
            }
            Err(e) => Err(e),
        };
        (result, server.await.unwrap())
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
        let transport = Transport::plain(tcp).unwrap();
        let writer = transport.writer();
        assert_eq!(
            writer.write_or_cork(b"one", Some(7)),
            Some(false),
            "written: nothing to uncork"
        );
        assert_eq!(arrived(), b"one");
        assert_eq!(
            writer.write_or_cork(b"two", Some(7)),
            Some(true),
            "corked: the caller uncorks"
        );
        assert_eq!(writer.write_or_cork(b"three", Some(7)), Some(false), "corked behind it");
        assert_eq!(arrived(), b"");
        writer.uncork();
        assert_eq!(arrived(), b"twothree", "one write");
        assert_eq!(writer.write_or_cork(b"four", Some(8)), Some(false), "a new turn");
        assert_eq!(arrived(), b"four");
        // A runtime whose turns are not numbered corks everything.
        assert_eq!(writer.write_or_cork(b"five", None), Some(true));
        assert_eq!(writer.write_or_cork(b"six", None), Some(false));
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
        let transport = Transport::plain(tcp).unwrap();
        let writer = transport.writer();
        // More than loopback's socket buffers take while the peer reads nothing.
        let frame = vec![7u8; 64 << 20];
        assert_eq!(
            writer.write_or_cork(&frame, Some(1)),
            Some(false),
            "written as far as it goes"
        );
        assert!(writer.has_pending(), "the rest waits in the writer");
        assert!(writer.lock().held.is_some(), "counted in ioBuffers while held");
        assert_eq!(
            writer.write_or_cork(b"next", Some(1)),
            None,
            "the turn's next message goes behind it"
        );
        assert_eq!(
            writer.write_or_cork(b"next", Some(2)),
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

    /// A `wss:` transport to a rustls server on loopback (a throwaway certificate made with
    /// openssl; the client does not check it), with the server's side as a blocking stream.
    async fn tls_pair() -> (
        Transport,
        rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>,
    ) {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let dir = std::env::temp_dir().join(format!("redial-ws-transport-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
        let made = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .args(["-days", "1", "-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let chain = vec![CertificateDer::from_pem_file(&cert).unwrap()];
        let key = PrivateKeyDer::from_pem_file(&key).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
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
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap();
        let (tcp, session) = stream.into_inner();
        (Transport::tls(tcp, session).unwrap(), server.join().unwrap())
    }

    #[tokio::test]
    async fn under_tls_the_fast_path_seals_and_writes_and_a_key_update_is_answered_in_order() {
        use std::io::{Read, Write};
        let (mut transport, mut server) = tls_pair().await;
        let writer = transport.writer();
        let mut got = [0u8; 64];
        // Written from the calling thread at once: the server reads it without the driver.
        assert_eq!(writer.write_or_cork(b"one", Some(1)), Some(false));
        let n = server.read(&mut got).unwrap();
        assert_eq!(&got[..n], b"one");
        assert!(!writer.has_pending());
        // The server renews its keys and asks us to renew ours: the driver's read decrypts with
        // the new keys, and our answer goes before anything sealed after it.
        server.conn.refresh_traffic_keys().unwrap();
        server.write_all(b"two").unwrap();
        let mut buf = vec![0u8; 64];
        let n = transport.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"two");
        assert_eq!(writer.write_or_cork(b"three", Some(2)), Some(false));
        assert_eq!(writer.write_or_cork(b"four", Some(2)), Some(true), "corked");
        writer.uncork();
        let mut seen = Vec::new();
        while seen.len() < 9 {
            let n = server.read(&mut got).unwrap();
            assert!(n > 0, "the server's stream ended");
            seen.extend_from_slice(&got[..n]);
        }
        assert_eq!(seen, b"threefour");
        // The driver's shutdown: close_notify, then the TCP close; the server sees a clean end.
        transport.shutdown().await.unwrap();
        assert_eq!(server.read(&mut got).unwrap(), 0);
        // And the server's close_notify is a clean end for our reads.
        server.conn.send_close_notify();
        server.flush().unwrap();
        assert_eq!(transport.read(&mut buf).await.unwrap(), 0);
        assert!(writer.lock().held.is_none(), "nothing held");
    }

    #[tokio::test]
    async fn a_peer_that_is_not_http_gets_no_tunnel() {
        let (result, after) = connect_via(b"SSH-2.0 200 ok\r\n\r\n").await;
        let e = result.unwrap_err();
        assert_eq!((e.code, e.status), (errors::ERR_PROXY, None));
        assert!(e.message.contains("HTTP/1.x status line"), "{}", e.message);
        assert!(after.is_empty(), "written after the CONNECT head: {after:?}");
    }

    #[tokio::test]
    async fn a_refusal_is_err_proxy_with_its_status_in_the_message() {
        let (result, after) = connect_via(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n").await;
        let e = result.unwrap_err();
        assert_eq!((e.code, e.status), (errors::ERR_PROXY, None));
        assert!(e.message.ends_with(" (HTTP 403)"), "{}", e.message);
        assert!(!e.message.contains("hunter2"));
        assert!(after.is_empty());
        let (result, _) = connect_via(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").await;
        let e = result.unwrap_err();
        assert_eq!((e.code, e.status), (errors::ERR_PROXY_AUTH, None));
        assert!(e.message.ends_with(" (HTTP 407)"), "{}", e.message);
    }

    #[tokio::test]
    async fn a_2xx_is_a_tunnel_and_the_head_is_consumed_exactly() {
        let (result, after) = connect_via(b"HTTP/1.0 200 Connection established\r\nVia: x\r\n\r\nhello").await;
        assert_eq!(result.unwrap(), b"hello");
        assert_eq!(after, b"GET");
    }
}
