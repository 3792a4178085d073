//! Proxies: the `proxy` URL (or `HTTPS_PROXY`'s), and the HTTP CONNECT exchange. tungstenite has
//! no proxy support, so that exchange is written here by hand: one request, one response head, then
//! the tunnel is ours. SOCKS5's exchange is `socks`.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use url::Url;

use crate::errors::{self, ConnError};
use crate::redact::redact;

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

/// The proxies for `ws:` and `wss:` and `NO_PROXY` as JS read them from the environment
/// (`lib/proxy.js`, `proxyFor`): a redirect to another host or scheme gets the proxy they name for
/// it. `NO_PROXY` is read here for the client's first URL too (`no_proxy_names`).
pub struct ProxyEnv {
    http: String,
    https: String,
    no_proxy: String,
}

impl std::fmt::Debug for ProxyEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyEnv")
            .field("http", &redact(&self.http))
            .field("https", &redact(&self.https))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// What JS's `\s` matches (proxyFor splits `NO_PROXY` with `/[\s,]+/`): Unicode's white space
/// but U+0085, and U+FEFF.
fn js_space(c: char) -> bool {
    (c.is_whitespace() && c != '\u{85}') || c == '\u{feff}'
}

impl ProxyEnv {
    pub fn new(http: &str, https: &str, no_proxy: &str) -> Self {
        ProxyEnv {
            http: http.to_owned(),
            https: https.to_owned(),
            no_proxy: no_proxy.to_ascii_lowercase(),
        }
    }

    /// The proxy for `url`, none when `NO_PROXY` names its host (or the variable is empty).
    pub fn for_url(&self, url: &Url) -> Result<Option<Proxy>, ConnError> {
        let proxy = if url.scheme() == "wss" { &self.https } else { &self.http };
        if proxy.is_empty() || self.bypasses(url) {
            return Ok(None);
        }
        Proxy::parse(proxy)
            .map(Some)
            .map_err(|why| ConnError::new(errors::ERR_PROXY, why))
    }

    /// Entries: `*`, `host`, `.domain` or `*.domain` (the domain and its subdomains), each with a
    /// `:port` or not, IPv6 addresses bare or in brackets.
    fn bypasses(&self, url: &Url) -> bool {
        let host = url.host_str().unwrap_or("");
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let port = url.port_or_known_default().unwrap_or(0).to_string();
        self.no_proxy
            .split(|c: char| c == ',' || js_space(c))
            .filter(|e| !e.is_empty())
            .any(|entry| {
                if entry == "*" {
                    return true;
                }
                let (name, entry_port) = match entry.strip_prefix('[').and_then(|e| e.split_once(']')) {
                    Some((name, "")) => (name, None),
                    // `[address]:port` with digits; anything else after the `]` names no host.
                    Some((name, rest)) => match rest.strip_prefix(':') {
                        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (name, Some(p)),
                        _ => return false,
                    },
                    None if entry.matches(':').count() == 1 => match entry.split_once(':') {
                        Some((name, p)) => (name, Some(p)),
                        None => (entry, None),
                    },
                    None => (entry, None),
                };
                if entry_port.is_some_and(|p| p != port) {
                    return false;
                }
                // As curl (and proxyFor): `address/bits` is a range of IP addresses (a host name is
                // not resolved for it); a name matches itself and its subdomains, with or without
                // a leading `.` or `*.` (a `*` anywhere else is part of the name).
                if let Some((base, bits)) = name.split_once('/') {
                    return in_range(&host, base, bits);
                }
                let domain = name
                    .strip_prefix("*.")
                    .or_else(|| name.strip_prefix('.'))
                    .unwrap_or(name);
                host == domain || host.strip_suffix(domain).is_some_and(|sub| sub.ends_with('.'))
            })
    }
}

/// Whether `NO_PROXY` (`no_proxy`, as the environment gives it) names the host of `url` (a client's
/// normalised URL): `lib/proxy.js` asks for the first URL, as redirects are decided above.
pub fn no_proxy_names(url: &str, no_proxy: &str) -> bool {
    Url::parse(url).is_ok_and(|url| ProxyEnv::new("", "", no_proxy).bypasses(&url))
}

/// Whether IP address `host` is within `base`/`bits` (both of one IP version; `bits` 1 to 3 digits).
fn in_range(host: &str, base: &str, bits: &str) -> bool {
    let (Ok(host), Ok(base)) = (host.parse::<std::net::IpAddr>(), base.parse::<std::net::IpAddr>()) else {
        return false;
    };
    let digits = (1..=3).contains(&bits.len()) && bits.bytes().all(|b| b.is_ascii_digit());
    let Some(bits) = digits.then(|| bits.parse::<u32>().ok()).flatten() else {
        return false;
    };
    let (host, base, width) = match (host, base) {
        (std::net::IpAddr::V4(h), std::net::IpAddr::V4(b)) => (u128::from(u32::from(h)), u128::from(u32::from(b)), 32),
        (std::net::IpAddr::V6(h), std::net::IpAddr::V6(b)) => (u128::from(h), u128::from(b), 128),
        _ => return false,
    };
    if bits > width {
        return false;
    }
    // The top `bits` of the address's `width` bits agree.
    let shift = width - bits;
    shift >= 128 || (host >> shift) == (base >> shift)
}

impl Proxy {
    /// Its errors name the URL with the credentials masked (`redact`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let url = Url::parse(s).map_err(|e| format!("invalid proxy URL {}: {e}", redact(s)))?;
        let (kind, default_port) = match url.scheme() {
            "http" => (ProxyKind::Http, 80),
            "socks5" => (ProxyKind::Socks5 { proxy_resolves: false }, 1080),
            "socks5h" => (ProxyKind::Socks5 { proxy_resolves: true }, 1080),
            scheme => {
                return Err(format!(
                    "only http:// (CONNECT), socks5:// and socks5h:// proxies are supported, got {scheme}:"
                ))
            }
        };
        // Not echoed: without "//" (`socks5:user:pass@host`) the credentials are the URL's path.
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| {
            format!(
                "proxy URL has no host: write it as {}://[user:password@]host:port",
                url.scheme()
            )
        })?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        // A password alone is Basic `:password` for a CONNECT proxy (as curl sends it); SOCKS5's
        // user name must not be empty (RFC 1929), and lib/proxy.js checkProxy refuses it so.
        let password_only = kind == ProxyKind::Http && url.password().is_some();
        if !password_only && url.username().is_empty() && url.password().is_some() {
            return Err("a SOCKS5 proxy's credentials need a user name (RFC 1929)".to_owned());
        }
        let credentials = if !url.username().is_empty() || password_only {
            let decoded = percent_decode(url.username()).zip(percent_decode(url.password().unwrap_or("")));
            Some(decoded.ok_or("the proxy URL's user name or password has percent-escapes that are not UTF-8")?)
        } else {
            None
        };
        Ok(Proxy {
            kind,
            host,
            port: url.port().unwrap_or(default_port),
            credentials,
        })
    }
}

/// A URL's user name or password: `%XX` escapes decoded (a `%` without two hex digits kept, as
/// lib/proxy.js reads it), `None` when the bytes are not UTF-8: a lossy decoding would send
/// other credentials than the ones given.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
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

/// Asks the proxy for a tunnel to `host:port`. Nothing more is written until its answer's
/// status line is a 2xx: the upgrade request (its credentials too) goes to a tunnel only.
pub async fn http_connect(mut s: TcpStream, host: &str, port: u16, proxy: &Proxy) -> Result<TcpStream, ConnError> {
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
    // Nothing after the head may be consumed (it belongs to the tunnel): what the socket holds is
    // peeked at, and only the head's bytes are taken from it.
    let mut answer = ConnectAnswer::default();
    let mut chunk = [0u8; 2048];
    loop {
        let n = s.peek(&mut chunk).await.map_err(io_err)?;
        if n == 0 {
            return Err(ConnError::new(
                errors::ERR_PROXY,
                "the proxy closed the connection during CONNECT",
            ));
        }
        let mut used = 0;
        let mut step = Step::More;
        for &byte in &chunk[..n] {
            used += 1;
            step = answer.push(byte)?;
            if step != Step::More {
                break;
            }
        }
        if step == Step::NotHttp {
            // What it began with, as far as it came (the first byte alone tells little).
            let mut seen = std::mem::take(&mut answer.head);
            seen.extend_from_slice(&chunk[used..n]);
            return Err(not_http(&seen));
        }
        s.read_exact(&mut chunk[..used]).await.map_err(io_err)?;
        if step == Step::Open {
            return Ok(s);
        }
    }
}

/// What a byte of the proxy's answer led to.
#[derive(PartialEq)]
enum Step {
    More,
    /// It ended the head of a 2xx answer: the tunnel is open.
    Open,
    /// The answer is not HTTP.
    NotHttp,
}

/// A proxy's answer to CONNECT, read a byte at a time: interim (1xx) answers, then a 2xx.
#[derive(Default)]
struct ConnectAnswer {
    head: Vec<u8>,
    /// A 2xx status line was read: the head ends at the next empty line.
    accepted: bool,
    /// In an interim (1xx) answer, which the answer follows (RFC 9110 §15.2).
    interim: bool,
    /// The bytes of the interim answers before this one.
    skipped: usize,
}

impl ConnectAnswer {
    /// Takes the next byte of the answer.
    fn push(&mut self, byte: u8) -> Result<Step, ConnError> {
        if self.skipped + self.head.len() > 16 * 1024 {
            return Err(ConnError::new(errors::ERR_PROXY, "proxy response head too large"));
        }
        let head = &mut self.head;
        head.push(byte);
        if self.accepted || self.interim {
            // The head ends at an empty line: CRLF, or a bare LF, which a recipient may take for
            // one (RFC 9112 §2.2), as the upgrade's answer is read.
            if head.ends_with(b"\n\r\n") || head.ends_with(b"\n\n") {
                if self.accepted {
                    return Ok(Step::Open);
                }
                self.skipped += head.len();
                head.clear();
                self.interim = false;
            }
            return Ok(Step::More);
        }
        // Not HTTP from its first bytes on: fail now rather than wait for a line that may never come.
        let n = head.len().min(STATUS_PREFIX.len());
        if head[..n] != STATUS_PREFIX[..n] {
            return Ok(Step::NotHttp);
        }
        if let Some(line) = head.strip_suffix(b"\n") {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(status) = parse_status_line(line) else {
                return Ok(Step::NotHttp);
            };
            match status {
                // Switching to another protocol is no answer to CONNECT, nor an interim one.
                101 => return Err(refused(status)),
                100..200 => self.interim = true,
                200..300 => self.accepted = true,
                _ => return Err(refused(status)),
            }
        }
        Ok(Step::More)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_entries_are_read_as_proxy_for_reads_them() {
        let cases = include_str!("../__test__/fixtures/no-proxy-cases.txt");
        let mut n = 0;
        for line in cases.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let [no_proxy, url, bypassed]: [&str; 3] = line.split('\t').collect::<Vec<_>>().try_into().expect(line);
            let no_proxy = expand_escapes(no_proxy);
            let env = ProxyEnv::new("http://proxy.test:3128", "http://proxy.test:3128", &no_proxy);
            let url = Url::parse(url).expect(line);
            assert_eq!(env.bypasses(&url), bypassed == "true", "{line}");
            n += 1;
        }
        assert!(n > 20);
    }

    /// The table's `\uXXXX`, as proxy.spec.ts expands it.
    fn expand_escapes(s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(at) = rest.find("\\u") {
            out.push_str(&rest[..at]);
            let code = u32::from_str_radix(&rest[at + 2..at + 6], 16).expect(s);
            out.push(char::from_u32(code).expect(s));
            rest = &rest[at + 6..];
        }
        out + rest
    }

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
        // A password alone (a token) is Basic `:token` for CONNECT; SOCKS5 needs a user name.
        let p = Proxy::parse("http://:t0ken@127.0.0.1:3128").unwrap();
        assert_eq!(p.credentials, Some((String::new(), "t0ken".to_owned())));
        assert!(Proxy::parse("socks5://:t0ken@127.0.0.1").is_err());
        // Escapes decoded to UTF-8 (a '%' without two hex digits kept); bytes that are not UTF-8 refused.
        let p = Proxy::parse("http://u%C3%A9:p%zz+%2@127.0.0.1").unwrap();
        assert_eq!(p.credentials, Some(("u\u{e9}".to_owned(), "p%zz+%2".to_owned())));
        assert!(Proxy::parse("http://u:p%E9ss@127.0.0.1").is_err());
        assert!(Proxy::parse("socks5://u%FF:p@127.0.0.1").is_err());
    }

    proptest::proptest! {
        /// Any proxy URL is parsed or refused, never a panic, and neither the refusal nor the
        /// parsed proxy's debug form shows its password.
        #[test]
        fn any_proxy_url_is_parsed_or_refused_without_showing_its_password(
            scheme in "(http|https|socks5|[a-z]{0,5})",
            // Without "//" a URL that is not http's has no host: its credentials are its path.
            separator in "(://|:|:/)",
            user in "[a-zA-Z0-9%@:]{0,8}",
            host in "(127\\.0\\.0\\.1|\\[::1\\]|[a-z0-9.:\\[\\]%-]{0,12})",
            port in proptest::option::of("[0-9a-z]{0,7}"),
            rest in "[ -~]{0,8}",
        ) {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let url = format!("{scheme}{separator}{user}:Secr3tPw@{host}{port}{rest}");
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
        for bad in ["http://bob:hunter2@127.0.0.1:99999", "http://bob:hunter2@"] {
            let e = Proxy::parse(bad).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("bob:***@"), "{e}");
        }
        // Neither a scheme nor a URL without a host is echoed (`socks5:` without "//": a path).
        for (bad, says) in [
            ("socks4://bob:hunter2@127.0.0.1:1080", "got socks4:"),
            ("socks5:bob:hunter2@127.0.0.1:1080", "no host: write it as socks5://"),
        ] {
            let e = Proxy::parse(bad).unwrap_err();
            assert!(!e.contains("hunter2") && e.contains(says), "{e}");
        }
        let p = Proxy::parse("http://bob:hunter2@127.0.0.1:3128").unwrap();
        let debug = format!("{p:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("bob"), "{debug}");
        let env = ProxyEnv::new(
            "http://bob:hunter2@127.0.0.1:3128",
            "socks5://bob:hunter2@127.0.0.1",
            "",
        );
        let debug = format!("{env:?}");
        assert!(
            !debug.contains("hunter2") && debug.contains("127.0.0.1:3128"),
            "{debug}"
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
    async fn a_peer_that_is_not_http_gets_no_tunnel() {
        let (result, after) = connect_via(b"SSH-2.0 200 ok\r\n\r\n").await;
        let e = result.unwrap_err();
        assert_eq!((e.code, e.status), (errors::ERR_PROXY, None));
        assert!(e.message.contains("HTTP/1.x status line"), "{}", e.message);
        assert!(
            e.message.contains("(it began \"SSH-2.0 200 ok"),
            "as far as it came: {}",
            e.message
        );
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

    #[tokio::test]
    async fn bare_lf_line_ends_are_read_as_crlf_and_a_101_is_refused() {
        let (result, after) = connect_via(b"HTTP/1.1 200 OK\nVia: x\n\nhello").await;
        assert_eq!(result.unwrap(), b"hello");
        assert_eq!(after, b"GET");
        let (result, after) = connect_via(b"HTTP/1.1 200 OK\n\nhi").await;
        assert_eq!(result.unwrap(), b"hi");
        assert_eq!(after, b"GET");
        let (result, after) = connect_via(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n").await;
        let e = result.unwrap_err();
        assert_eq!(e.code, errors::ERR_PROXY);
        assert!(e.message.ends_with(" (HTTP 101)"), "{}", e.message);
        assert!(after.is_empty());
    }

    #[tokio::test]
    async fn interim_answers_before_the_2xx_are_skipped() {
        let answer =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n\r\nhi";
        let (result, after) = connect_via(answer).await;
        assert_eq!(result.unwrap(), b"hi");
        assert_eq!(after, b"GET");
        // Interim answers count in the head's bound: an endless series of them is refused.
        let endless: &'static [u8] = "HTTP/1.1 100 Continue\r\n\r\n".repeat(1000).leak().as_bytes();
        let (result, _) = connect_via(endless).await;
        assert!(result.unwrap_err().message.contains("too large"));
    }
}
