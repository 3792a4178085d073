//! A connection's socket (TCP, or a Unix domain socket for `ws+unix:`; also under a `wss:`
//! connection's TLS session, which `writer::Writer` holds), split for two threads: the write
//! side (the driver's and the send fast path's, through `writer::Writer`) and the read side
//! (the driver's, or the JS thread's while it reads: see `reader`).
//!
//! tokio's `TcpStream` asks its reactor for both directions, edge-triggered, for as long as it
//! lives: while the JS thread reads the socket, every arriving segment would still wake the tokio
//! worker for nothing (one wake-up per message of an echo). So on Unix the socket's registration
//! changes with its reader: for both directions while the driver reads, none while the JS thread
//! does (`ReadHalf::unregister` when it takes over; the driver's next read registers it again, and
//! a driver's write that finds the socket full registers it for room to write). One descriptor,
//! one registration at most, as with tokio's own stream.
//! Elsewhere the JS thread never reads, and tokio's own halves are used.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

#[cfg(unix)]
pub use unix::{split, split_unix, ReadHalf, WriteHalf};

#[cfg(not(unix))]
pub use other::{split, ReadHalf, WriteHalf};

#[cfg(unix)]
mod unix {
    use std::io;
    use std::net::Shutdown;
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::task::{ready, Context, Poll};

    use futures_util::task::AtomicWaker;
    use tokio::io::{Interest, ReadBuf};
    use tokio::runtime::Handle;

    use crate::napi_raw::{self, RegisteredSocket, SharedSocket, StreamSocket};

    /// Splits a connected TCP socket (in a tokio runtime: it registers with its reactor).
    pub fn split(tcp: tokio::net::TcpStream) -> io::Result<(ReadHalf, WriteHalf)> {
        split_socket(Arc::new(StreamSocket::Tcp(tcp.into_std()?)))
    }

    /// As `split`, for a Unix domain socket (`ws+unix:`).
    pub fn split_unix(unix: tokio::net::UnixStream) -> io::Result<(ReadHalf, WriteHalf)> {
        split_socket(Arc::new(StreamSocket::Unix(unix.into_std()?)))
    }

    fn split_socket(stream: SharedSocket) -> io::Result<(ReadHalf, WriteHalf)> {
        let runtime = Handle::try_current().map_err(io::Error::other)?;
        let io = napi_raw::register_socket(&runtime, stream.clone(), BOTH).map_err(|(_, e)| e)?;
        let socket = Arc::new(Socket {
            held: Mutex::new(Some(Held::Watched { io, reading: true })),
            runtime,
            stream,
            writer: AtomicWaker::new(),
        });
        Ok((ReadHalf { socket: socket.clone() }, WriteHalf { socket, written: 0 }))
    }

    const BOTH: Interest = Interest::READABLE.add(Interest::WRITABLE);

    struct Socket {
        /// The socket (it owns the descriptor), with its registration while it has one. `None`
        /// only for the instant of a change, under the lock (a refused registration puts the bare
        /// socket back).
        held: Mutex<Option<Held>>,
        runtime: Handle,
        /// A share of the socket, for reads that need no registration, and for the JS thread's
        /// reader and watch (`ReadHalf::socket`).
        stream: SharedSocket,
        /// The driver, while its write waits for room (a change of registration drops the
        /// reactor's record of that wait: it is woken to wait again).
        writer: AtomicWaker,
    }

    enum Held {
        /// Registered for data too (`reading`: the driver reads), or only for room to write (the
        /// JS thread reads, and a write of the driver's found the socket full).
        Watched { io: RegisteredSocket, reading: bool },
        /// Not registered: the JS thread reads, and writes find room (an idle connection's state;
        /// a registration is a 256-byte record in the reactor).
        Bare(SharedSocket),
    }

    impl Held {
        fn stream(&self) -> &StreamSocket {
            match self {
                Held::Watched { io, .. } => io.get_ref(),
                Held::Bare(stream) => stream,
            }
        }

        /// What the reactor watches for: nothing (`None`), room to write, or data too.
        fn watch(&self) -> Option<bool> {
            match self {
                Held::Watched { reading, .. } => Some(*reading),
                Held::Bare(_) => None,
            }
        }
    }

    impl Socket {
        fn lock(&self) -> MutexGuard<'_, Option<Held>> {
            self.held.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// Has the reactor watch the socket for nothing (`None`), room to write (`Some(false)`)
        /// or data too (`Some(true)`). False if the reactor refused: the socket is then left
        /// unregistered, and the caller fails its read or write (the connection ends).
        fn set_watch(&self, slot: &mut Option<Held>, watch: Option<bool>) -> bool {
            let Some(held) = slot.take() else { return false };
            if held.watch() == watch {
                *slot = Some(held);
                return true;
            }
            let stream = match held {
                Held::Watched { io, .. } => io.into_inner(),
                Held::Bare(stream) => stream,
            };
            let ok = match watch {
                None => {
                    *slot = Some(Held::Bare(stream));
                    true
                }
                Some(reading) => {
                    let interest = if reading { BOTH } else { Interest::WRITABLE };
                    match napi_raw::register_socket(&self.runtime, stream, interest) {
                        Ok(io) => {
                            *slot = Some(Held::Watched { io, reading });
                            true
                        }
                        Err((stream, _)) => {
                            *slot = Some(Held::Bare(stream));
                            false
                        }
                    }
                }
            };
            self.writer.wake();
            ok
        }
    }

    fn gone() -> io::Error {
        io::Error::other("the socket lost its registration with the reactor")
    }

    pub struct ReadHalf {
        socket: Arc<Socket>,
    }

    impl ReadHalf {
        /// A share of the socket: it stays open while the share is held.
        pub fn socket(&self) -> SharedSocket {
            self.socket.stream.clone()
        }

        /// The driver stops reading (the JS thread does): the socket leaves the reactor, so that
        /// arriving messages do not wake the tokio worker (a write that finds it full registers
        /// it for room again). False if that failed (the driver then keeps reading).
        pub fn unregister(&mut self) -> bool {
            let mut slot = self.socket.lock();
            self.socket.set_watch(&mut slot, None)
        }

        pub(super) fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let mut slot = self.socket.lock();
            if slot.as_ref().is_some_and(|h| h.watch() != Some(true)) {
                // The driver reads again: a new registration reports data already there only on
                // the reactor's next turn, so look now.
                if !self.socket.set_watch(&mut slot, Some(true)) {
                    return Poll::Ready(Err(gone()));
                }
                match napi_raw::recv_now(&self.socket.stream, buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    done => return Poll::Ready(done.map(|_| ())),
                }
            }
            let Some(Held::Watched { io, .. }) = slot.as_ref() else {
                return Poll::Ready(Err(gone()));
            };
            loop {
                let mut ready = ready!(io.poll_read_ready(cx))?;
                if let Ok(done) = ready.try_io(|_| napi_raw::recv_now(&self.socket.stream, buf)) {
                    return Poll::Ready(done.map(|_| ()));
                }
            }
        }
    }

    pub struct WriteHalf {
        socket: Arc<Socket>,
        written: u64,
    }

    impl WriteHalf {
        /// The bytes the socket has taken from this half.
        pub fn written(&self) -> u64 {
            self.written
        }

        /// Writes what the socket takes now, without waiting.
        pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = match self.socket.lock().as_ref() {
                Some(held) => held.stream().write(buf)?,
                None => return Err(gone()),
            };
            self.written += n as u64;
            Ok(n)
        }

        pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let n = ready!(self.poll_write_inner(cx, buf))?;
            self.written += n as u64;
            Poll::Ready(Ok(n))
        }

        fn poll_write_inner(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let mut slot = self.socket.lock();
            let Some(held) = slot.as_ref() else {
                return Poll::Ready(Err(gone()));
            };
            // Writable unless the last write filled the socket: no need to ask the reactor first.
            match held.stream().write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
            // Full: wait for room, registering the socket for it if nothing watches it.
            if held.watch().is_none() && !self.socket.set_watch(&mut slot, Some(false)) {
                return Poll::Ready(Err(gone()));
            }
            self.socket.writer.register(cx.waker());
            let Some(Held::Watched { io, .. }) = slot.as_ref() else {
                return Poll::Ready(Err(gone()));
            };
            loop {
                let mut ready = ready!(io.poll_write_ready(cx))?;
                if let Ok(done) = ready.try_io(|s| s.get_ref().write(buf)) {
                    return Poll::Ready(done);
                }
            }
        }

        pub fn poll_shutdown(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            let slot = self.socket.lock();
            let Some(held) = slot.as_ref() else {
                return Poll::Ready(Err(gone()));
            };
            Poll::Ready(match held.stream().shutdown(Shutdown::Write) {
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
                done => done,
            })
        }
    }
}

#[cfg(not(unix))]
mod other {
    use std::io;
    use std::pin::Pin;
    use std::task::{ready, Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

    use crate::napi_raw::SharedSocket;

    pub fn split(tcp: tokio::net::TcpStream) -> io::Result<(ReadHalf, WriteHalf)> {
        let (read, write) = tcp.into_split();
        Ok((ReadHalf(read), WriteHalf(write, 0)))
    }

    pub struct ReadHalf(OwnedReadHalf);

    impl ReadHalf {
        /// Never read or watched from the JS thread here (`SocketWatch::available` is false).
        pub fn socket(&self) -> SharedSocket {
            SharedSocket
        }

        pub fn unregister(&mut self) -> bool {
            true
        }

        pub(super) fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    /// The half and the bytes the socket has taken from it.
    pub struct WriteHalf(OwnedWriteHalf, u64);

    impl WriteHalf {
        pub fn written(&self) -> u64 {
            self.1
        }

        pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = self.0.try_write(buf)?;
            self.1 += n as u64;
            Ok(n)
        }

        pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let n = ready!(Pin::new(&mut self.0).poll_write(cx, buf))?;
            self.1 += n as u64;
            Poll::Ready(Ok(n))
        }

        pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_read(cx, buf)
    }
}
