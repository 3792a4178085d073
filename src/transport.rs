//! The byte stream under the WebSocket: TCP, optionally tunnelled through an HTTP CONNECT
//! (`proxy`) or SOCKS5 (`socks`) proxy, optionally wrapped in TLS (rustls with ring, configured by
//! `tls`; tokio-rustls makes the handshake, then the session moves into the connection's `Writer`);
//! or a Unix domain socket.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, Stream};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use url::Url;

use crate::ask;
use crate::errors::{self, ConnError};
use crate::plain::{self, ReadHalf, WriteHalf};
use crate::proxy::{self, Proxy, ProxyKind};
use crate::redact::url_in_message;
use crate::resolve;
use crate::socks;
use crate::tls::{self, TlsOptions};
use crate::writer::Writer;

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
    fn tls(tcp: TcpStream, session: ClientConnection) -> io::Result<Self> {
        let (read, write) = plain::split(tcp)?;
        Ok(Self::from_halves(read, write, Some(session)))
    }

    fn from_halves(read: ReadHalf, write: WriteHalf, tls: Option<ClientConnection>) -> Self {
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
        self.writer.is_tls().then(|| self.writer.clone())
    }

    /// The writer, shared with the send fast path.
    pub fn writer(&self) -> Arc<Writer> {
        self.writer.clone()
    }

    /// The writer, for the connection's own calls (it keeps no handle of its own: the task that
    /// drives it stays in tokio's smaller cell).
    pub fn write_side(&self) -> &Writer {
        &self.writer
    }
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.read.as_mut() {
            Some(read) if this.writer.is_tls() => this.writer.poll_read_tls(read, cx, buf),
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

/// How TCP connections are made: `net.connect`'s `family`, `localAddress`, `localPort` and
/// `autoSelectFamily`, as `ws` passes them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Dial {
    /// 4 or 6: only the host's addresses of that IP version; 0: any. An IP literal is used as is.
    pub family: u8,
    /// The local address to connect from.
    pub local: Option<IpAddr>,
    /// The local port to connect from; 0: chosen by the system.
    pub local_port: u16,
    /// `autoSelectFamily` (Happy Eyeballs): a host name's next address is tried when the last has
    /// not connected within this (`autoSelectFamilyAttemptTimeout`); `None`: each address until it
    /// fails, one after another.
    pub next_address_after: Option<Duration>,
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
            let found = addresses(host, port, dial, lookup).await?;
            match dial.next_address_after {
                // A fixed local port cannot be bound by two attempts at once.
                Some(stagger) if found.len() > 1 && dial.local_port == 0 => {
                    race(interleaved(found), dial, stagger).await?
                }
                _ => one_by_one(found, dial).await?,
            }
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// As tokio's own connect: each address in the resolver's order, the last error if none connects.
async fn one_by_one(found: Vec<SocketAddr>, dial: Dial) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in found {
        match connect_from(addr, dial).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(no_address))
}

fn no_address() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "the host has no address")
}

/// Happy Eyeballs (RFC 8305), as Node's `autoSelectFamily`: the addresses in turn, a new one each
/// time `stagger` passes without a connection, or at once when an attempt fails; the first to
/// connect is the connection, and the others are dropped (closed). Unlike Node, which closes an
/// attempt when it starts the next, earlier attempts go on: a slow address is not given up for one
/// that never answers. The error, if none connects, is the last one's.
async fn race(found: Vec<SocketAddr>, dial: Dial, stagger: Duration) -> io::Result<TcpStream> {
    let mut waiting = found.into_iter();
    let mut running = FuturesUnordered::new();
    let mut next_due = Box::pin(tokio::time::sleep(stagger));
    let mut start_now = true;
    let mut last = None;
    std::future::poll_fn(move |cx| loop {
        if waiting.len() > 0 && (start_now || next_due.as_mut().poll(cx).is_ready()) {
            if let Some(addr) = waiting.next() {
                running.push(connect_from(addr, dial));
            }
            start_now = false;
            next_due.as_mut().reset(tokio::time::Instant::now() + stagger);
            continue;
        }
        match Pin::new(&mut running).poll_next(cx) {
            Poll::Ready(Some(Ok(stream))) => return Poll::Ready(Ok(stream)),
            Poll::Ready(Some(Err(e))) => {
                last = Some(e);
                start_now = true;
            }
            Poll::Ready(None) if waiting.len() == 0 => return Poll::Ready(Err(last.take().unwrap_or_else(no_address))),
            Poll::Ready(None) => start_now = true,
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}

/// The addresses with their IP versions alternating, starting with the first address's, each
/// version in the resolver's order, each address once (as Node orders them for `autoSelectFamily`).
fn interleaved(found: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let first_v4 = found.first().is_some_and(SocketAddr::is_ipv4);
    // A set: a `lookup` function may answer with any number of addresses.
    let mut seen = std::collections::HashSet::with_capacity(found.len());
    let (first, second): (Vec<_>, Vec<_>) = found
        .into_iter()
        .filter(|a| seen.insert(*a))
        .partition(|a| a.is_ipv4() == first_v4);
    let mut out = Vec::with_capacity(first.len() + second.len());
    let (mut a, mut b) = (first.into_iter(), second.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
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
        // As getaddrinfo reports a name without an address of the asked family (ws's ENOTFOUND).
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("lookup failed: getaddrinfo ENOTFOUND {host} (it has no {what})"),
        ));
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
    let fail =
        |e: &dyn std::fmt::Display| ConnError::new(errors::ERR_CONNECT, format!("{e} ({})", url_in_message(url)));
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
    tls: &OnceLock<Result<tls::SharedClientConfig, String>>,
    tls_options: &TlsOptions,
) -> Result<Transport, ConnError> {
    if url.scheme() == UNIX_SCHEME {
        return unix(url).await;
    }
    let (host, port) = target(url)?;
    let stream = match proxy {
        None => tcp(&host, port, dial, lookup)
            .await
            .map_err(|e| ConnError::new(errors::ERR_CONNECT, format!("{e} ({})", url_in_message(url))))?,
        Some(p) => {
            let s = tcp(&p.host, p.port, dial, lookup).await.map_err(|e| {
                ConnError::new(
                    errors::ERR_PROXY,
                    format!("cannot reach the proxy {}:{}: {e}", p.host, p.port),
                )
            })?;
            match p.kind {
                ProxyKind::Http => proxy::http_connect(s, &host, port, p).await?,
                ProxyKind::Socks5 { proxy_resolves } => {
                    socks5(s, &host, port, proxy_resolves, p, dial, lookup, url).await?
                }
            }
        }
    };
    if url.scheme() != "wss" {
        return Transport::plain(stream)
            .map_err(|e| ConnError::new(errors::ERR_CONNECT, format!("{e} ({})", url_in_message(url))));
    }
    let config = match tls.get() {
        Some(made) => made,
        None => match tls::shared_client_config(tls_options) {
            // Not kept: the next attempt tries again (ERR_TLS is retried).
            Err(tls::ConfigError::ShortOfResources(why)) => {
                return Err(ConnError::new(
                    errors::ERR_TLS,
                    format!("TLS could not be set up: {why}"),
                ))
            }
            made => tls.get_or_init(|| {
                made.map_err(|e| match e {
                    tls::ConfigError::Settings(why) | tls::ConfigError::ShortOfResources(why) => why,
                })
            }),
        },
    }
    .as_ref()
    .map_err(|e| ConnError::new(errors::ERR_TLS, e.clone()))
    .map(|shared| Arc::<ClientConfig>::clone(shared))?;
    let name = tls_options.servername.clone().unwrap_or(host);
    let server_name = ServerName::try_from(name.clone())
        .map_err(|e| ConnError::new(errors::ERR_TLS, format!("invalid server name {name}: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let (handshake, asked_for_certificate) = tls::NotingRequest::new(connector.connect(server_name, stream)).await;
    let tls = handshake.map_err(|e| tls::handshake_error(e, asked_for_certificate))?;
    if let Some(asker) = identity.filter(|_| tls_options.asks_identity()) {
        let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
        check_identity(asker, name, chain.iter().map(|c| c.to_vec()).collect()).await?;
    }
    let (tcp, session) = tls.into_inner();
    Transport::tls(tcp, session)
        .map_err(|e| ConnError::new(errors::ERR_CONNECT, format!("{e} ({})", url_in_message(url))))
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
            let unreachable = |e: &dyn std::fmt::Display| {
                ConnError::new(errors::ERR_CONNECT, format!("{e} ({})", url_in_message(url)))
            };
            let found = addresses(host, port, dial, lookup).await.map_err(|e| unreachable(&e))?;
            let first = found.into_iter().next().ok_or_else(|| unreachable(&"no address"))?;
            socks::Target::Address(first)
        }
    };
    let credentials = p.credentials.as_ref().map(|(u, pw)| (u.as_str(), pw.as_str()));
    socks::connect(&mut s, target, credentials).await?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_alternate_ip_versions_from_the_first_ones_each_once() {
        let found = [
            "[::1]:80",
            "[::2]:80",
            "[::1]:80",
            "10.0.0.1:80",
            "[::3]:80",
            "10.0.0.2:80",
        ];
        let order: Vec<String> = interleaved(found.iter().map(|a| addr(a)).collect())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            order,
            ["[::1]:80", "10.0.0.1:80", "[::2]:80", "10.0.0.2:80", "[::3]:80"]
        );
        let order = interleaved(vec![addr("10.0.0.1:80"), addr("[::1]:80"), addr("10.0.0.2:80")]);
        assert_eq!(order, [addr("10.0.0.1:80"), addr("[::1]:80"), addr("10.0.0.2:80")]);
        assert!(interleaved(Vec::new()).is_empty());
    }

    /// A listener on `ip` whose accept queue is full, so that the SYNs of further connections to it
    /// are dropped (Linux): an address that does not answer, on loopback. The queued connections
    /// are returned; accepting them frees the queue.
    async fn unanswering(ip: &str) -> (tokio::net::TcpListener, SocketAddr, Vec<TcpStream>) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(addr(&format!("{ip}:0"))).unwrap();
        let listener = socket.listen(0).unwrap();
        let at = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        // A backlog of 0 holds one connection; a second fills the SYN side on some kernels.
        for _ in 0..2 {
            match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(at)).await {
                Ok(Ok(s)) => queued.push(s),
                _ => break,
            }
        }
        (listener, at, queued)
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn happy_eyeballs_tries_the_next_address_when_one_does_not_answer() {
        let (_silent, silent, _queued) = unanswering("127.0.0.2").await;
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = live.local_addr().unwrap();
        let dial = Dial::default();
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            race(vec![silent, at], dial, Duration::from_millis(50)),
        )
        .await
        .expect("the second address connects long before the first's SYN is retried for good")
        .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), at);
        // One by one, the first address holds the attempt (until the caller's connectTimeout).
        let waited = tokio::time::timeout(Duration::from_millis(500), one_by_one(vec![silent, at], dial)).await;
        assert!(
            waited.is_err(),
            "one by one, the unanswered first address blocks the second"
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn happy_eyeballs_keeps_earlier_attempts_going_and_fails_with_the_last_error() {
        // The first address answers late: its queue is freed after the second attempt started,
        // and the client's retried SYN (about 1 s later) is taken. The second never answers.
        let (slow_listener, slow, queued) = unanswering("127.0.0.2").await;
        let (_silent, silent, _q) = unanswering("127.0.0.3").await;
        let free_later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut taken = Vec::new();
            for _ in 0..queued.len() {
                taken.push(slow_listener.accept().await.unwrap());
            }
            drop(queued);
            // Keep accepting so that the client's connection is taken off the queue.
            let late = slow_listener.accept().await.unwrap();
            (taken, late, slow_listener)
        });
        let stream = tokio::time::timeout(
            Duration::from_secs(8),
            race(vec![slow, silent], Dial::default(), Duration::from_millis(50)),
        )
        .await
        .expect("the first address's late answer is taken, though a later attempt started")
        .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), slow);
        free_later.abort();

        // Every address refused: the error is an attempt's, not "no address".
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let err = race(
            vec![refused, addr(&format!("127.0.0.4:{}", refused.port()))],
            Dial::default(),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }
}
