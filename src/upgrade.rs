//! The HTTP upgrade (RFC 6455 §4.1) over a connected transport: the request (with the offer of
//! permessage-deflate, RFC 7692), and the checks of the server's answer; a refusal's status,
//! headers and body for its error.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Response;
use tungstenite::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::body;
use crate::deflate::{self, DeflateConfig, Negotiated};
use crate::errors::{self, ConnError};
use crate::shared::AttemptParams;
use crate::tls;
use crate::transport::{self, Transport};

/// An upgraded connection, for `OpenConn`.
pub struct Opened {
    pub transport: Transport,
    /// Bytes that followed the upgrade response in the same read: the first frames.
    pub leftover: BytesMut,
    pub protocol: Option<String>,
    /// The upgrade response's head (status line and headers), for the `upgrade` event.
    pub head: Bytes,
    /// permessage-deflate as the server accepted it, and its answer as sent (`extensions`).
    pub deflate: Option<(Negotiated, String)>,
}

/// How a socket's failure during the upgrade is worded (`lib/errors.js` reads the system's error after it).
const UPGRADE_IO_FAILED: &str = "the connection failed during the upgrade: ";

/// The largest upgrade response head we read (interim responses before it included).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// The HTTP upgrade (RFC 6455 §4.1): the request is written here (`upgrade_request`, with
/// tungstenite's key), httparse parses the response, and the checks are ours because tungstenite
/// keeps them private to its own stream type.
/// `deadline`: the attempt's, which a refusal's body is read within.
pub async fn handshake(
    mut transport: Transport,
    params: &AttemptParams,
    deflate: Option<&DeflateConfig>,
    deadline: tokio::time::Instant,
) -> Result<Opened, ConnError> {
    let invalid = |e: &dyn std::fmt::Display| ConnError::new(errors::ERR_HANDSHAKE, e.to_string());
    let (request, key) = upgrade_request(params, deflate)?;
    // The connection was made: its failure now is the upgrade's, as the server's TCP close is
    // (lib/errors.js finds the system's error in these words, for `err.cause`).
    let io_err = |e: std::io::Error| {
        tls::tls_failure(e).unwrap_or_else(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                // rustls's words for a TCP close without close_notify end in a link to its manual.
                return ConnError::new(
                    errors::ERR_HANDSHAKE,
                    "the server closed the connection during the upgrade (without a TLS close_notify)",
                );
            }
            ConnError::new(errors::ERR_HANDSHAKE, format!("{UPGRADE_IO_FAILED}{e}"))
        })
    };
    transport.write_all(&request).await.map_err(io_err)?;
    transport.flush().await.map_err(io_err)?;
    let mut buf = BytesMut::with_capacity(1024);
    // Bytes of interim (1xx) responses read before the answer.
    let mut interim = 0;
    // Bytes at the start of `buf` known to hold no empty line (`parse_response`).
    let mut searched = 0;
    let (head, response) = 'answer: loop {
        if transport.read_buf(&mut buf).await.map_err(io_err)? == 0 {
            return Err(ConnError::new(
                errors::ERR_HANDSHAKE,
                "the server closed the connection during the upgrade",
            ));
        }
        loop {
            // Only the bytes the bound leaves room for are parsed: a head that came whole in a read
            // is held to it as one still coming is (and its header count with it).
            let room = MAX_RESPONSE_HEAD - interim;
            let parsed = &buf[..buf.len().min(room)];
            let Some((len, response)) = parse_response(parsed, searched).map_err(|e| invalid(&e))? else {
                if buf.len() >= room {
                    return Err(invalid(&"the upgrade response head is too large"));
                }
                searched = buf.len();
                break;
            };
            // RFC 9110 §15.2: a client reads any number of interim responses before the final one.
            if response.status().is_informational() && response.status() != StatusCode::SWITCHING_PROTOCOLS {
                let _ = buf.split_to(len);
                interim += len;
                searched = 0;
                continue;
            }
            // The rest of the read buffer keeps the first frames; the head shares its memory.
            break 'answer (buf.split_to(len).freeze(), response);
        }
    };
    if response.status().as_u16() >= 400 {
        // A refusal: its body says why (redirects, which are followed or fail on their status, are not read).
        let mut err = rejected(&response);
        let body = body::read(&mut transport, buf, body::Framing::of(response.headers()), deadline).await;
        err.body = (!body.is_empty()).then(|| Box::new(body));
        return Err(err);
    }
    let (protocol, deflate) = verify_response(&response, &key, &params.protocols, deflate).map_err(|mut e| {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            e.refused_101 = Some(Box::new(head.clone()));
        }
        e
    })?;
    Ok(Opened {
        transport,
        leftover: buf,
        protocol,
        head,
        deflate,
    })
}

/// A response head at the start of `buf`, with its length; `None`: not all of it yet. Up to 32
/// headers are parsed without allocating; more (Node takes up to 2,000) with room for as many as
/// the head has lines, which `MAX_RESPONSE_HEAD` bounds. `searched`: the bytes of `buf` already
/// known to hold no empty line.
fn parse_response(buf: &[u8], searched: usize) -> Result<Option<(usize, Response)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    match parse_response_with(buf, &mut headers) {
        // Only a whole head is parsed again (a head that comes a byte at a time is not re-parsed
        // with an allocation at each read): its end is an empty line, looked for in what is new
        // (and the two bytes before it, where one may have begun), or a head dripped a byte at a
        // time costs its length squared.
        Err(httparse::Error::TooManyHeaders)
            if !{
                let new = &buf[searched.saturating_sub(2).min(buf.len())..];
                new.windows(2).any(|w| w == b"\n\n") || new.windows(3).any(|w| w == b"\n\r\n")
            } =>
        {
            Ok(None)
        }
        Err(httparse::Error::TooManyHeaders) => {
            let lines = buf.iter().filter(|&&b| b == b'\n').count();
            parse_response_with(buf, &mut vec![httparse::EMPTY_HEADER; lines])
        }
        parsed => parsed,
    }
    .map_err(|e| format!("invalid upgrade response: {e}"))
}

fn parse_response_with<'b>(
    buf: &'b [u8],
    headers: &mut [httparse::Header<'b>],
) -> Result<Option<(usize, Response)>, httparse::Error> {
    let mut parsed = httparse::Response::new(headers);
    let len = match parsed.parse(buf)? {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) => len,
    };
    // HTTP/1.0 too, as Node's parser (and so `ws`) reads it: a refusal keeps its status (a server
    // such as Python's `http.server` answers 1.0), and a 1.0 101 is judged by its headers.
    if !matches!(parsed.version, Some(0 | 1)) {
        return Err(httparse::Error::Version);
    }
    let status = parsed.code.and_then(|c| StatusCode::from_u16(c).ok());
    // The fallible forms: `HeaderMap` panics past its size limit (24,576 headers); the head's bound
    // keeps a head under it, and a head over it would fail here rather than end the client.
    let mut map = HeaderMap::try_with_capacity(parsed.headers.len()).map_err(|_| httparse::Error::TooManyHeaders)?;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| httparse::Error::HeaderName)?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| httparse::Error::HeaderValue)?;
        map.try_append(name, value)
            .map_err(|_| httparse::Error::TooManyHeaders)?;
    }
    let mut response = Response::new(None);
    *response.status_mut() = status.ok_or(httparse::Error::Status)?;
    *response.headers_mut() = map;
    Ok(Some((len, response)))
}

/// What the server chose: a subprotocol, and permessage-deflate with its answer.
type Chosen = (Option<String>, Option<(Negotiated, String)>);

/// RFC 6455 §4.1's checks of the server's answer, and RFC 7692's of its extensions.
fn verify_response(
    response: &Response,
    key: &str,
    protocols: &[String],
    deflate: Option<&DeflateConfig>,
) -> Result<Chosen, ConnError> {
    if response.status() != 101 {
        return Err(rejected(response));
    }
    let fail = |m: String| Err(ConnError::new(errors::ERR_HANDSHAKE, m));
    let headers = response.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // `Upgrade` is "websocket" alone, once (RFC 6455 §4.1, as `ws` checks it); `Connection` is a
    // list of options that includes "upgrade".
    let mut upgrades = headers.get_all("upgrade").iter();
    let upgrade = upgrades.next().and_then(|v| v.to_str().ok());
    if upgrades.next().is_some() || !upgrade.is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket")) {
        return fail("the upgrade response's Upgrade header is not `websocket`".into());
    }
    // Its lines are one list (RFC 9110 §5.3), as Node joins them: `Connection: keep-alive` and
    // `Connection: Upgrade` on two lines are an upgrade.
    let has_token = |name: &str, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("connection", "upgrade") {
        return fail("the upgrade response has no `Connection: upgrade`".into());
    }
    // Each at most once (RFC 6455 §11.3.3, §11.3.4): a second value could say anything.
    for (name, shown) in [
        ("sec-websocket-accept", "Sec-WebSocket-Accept"),
        ("sec-websocket-protocol", "Sec-WebSocket-Protocol"),
    ] {
        if headers.get_all(name).iter().nth(1).is_some() {
            return fail(format!("the upgrade response has more than one {shown} header"));
        }
    }
    if header("sec-websocket-accept") != Some(tungstenite::handshake::derive_accept_key(key.as_bytes()).as_str()) {
        return fail("the server's Sec-WebSocket-Accept does not match our key".into());
    }
    let mut extensions = Vec::new();
    for value in headers.get_all("sec-websocket-extensions") {
        match value.to_str() {
            Ok(v) if !v.trim().is_empty() => extensions.push(v.trim()),
            Ok(_) => {}
            Err(_) => return fail("the server's Sec-WebSocket-Extensions is not text".into()),
        }
    }
    let answer = extensions.join(", ");
    let negotiated = match deflate::negotiate(deflate, &answer) {
        Ok(n) => n.map(|n| (n, answer)),
        Err(why) => return fail(why),
    };
    let protocol = match headers.get("sec-websocket-protocol").map(|v| v.to_str()) {
        None => None,
        Some(Ok(p)) => Some(p.to_owned()),
        // Not a token of ours whatever it says (they are ASCII), nor no answer.
        Some(Err(_)) => return fail("the server's Sec-WebSocket-Protocol is not text".into()),
    };
    match (&protocol, protocols.is_empty()) {
        (None, false) => fail("the server chose none of our subprotocols".into()),
        (Some(p), true) => fail(format!("the server chose a subprotocol we did not offer: {p}")),
        (Some(p), false) if !protocols.contains(p) => {
            fail(format!("the server chose a subprotocol we did not offer: {p}"))
        }
        _ => Ok((protocol, negotiated)),
    }
}

/// The upgrade request, written as Node's `http` writes `ws`'s: the application's header names as
/// it spelled them (the last spelling of each: `lib/options.js`), which tungstenite's request would
/// send in lower case (a server may match them case-sensitively). tungstenite derives the target
/// and `Host` from the URL and makes the key. Returns the request's bytes and the key.
fn upgrade_request(params: &AttemptParams, deflate: Option<&DeflateConfig>) -> Result<(Vec<u8>, String), ConnError> {
    use tungstenite::http::header::{
        CONNECTION, HOST, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION,
        UPGRADE,
    };
    let invalid = |e: &dyn std::fmt::Display| ConnError::new(errors::ERR_HANDSHAKE, e.to_string());
    // A `ws+unix:` request goes to its path, with `Host: localhost` (as Node's `http` sends it).
    let from_url = match transport::unix_target(&params.url) {
        Some((_, path)) => format!("ws://localhost{path}").into_client_request(),
        None => params.url.as_str().into_client_request(),
    }
    .map_err(|e| invalid(&e))?;
    let target = from_url.uri().path_and_query().map_or("/", |p| p.as_str());
    // Its name as the application spelled it, if it gave one.
    let mut host = (
        "Host",
        from_url
            .headers()
            .get(HOST)
            .map_or(&[][..], HeaderValue::as_bytes)
            .to_vec(),
    );
    let mut theirs = Vec::with_capacity(params.headers.len());
    for (name, value) in &params.headers {
        let checked = HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(&e))?;
        let value = latin1(value).ok_or_else(|| invalid(&"a header value beyond Latin-1"))?;
        HeaderValue::from_bytes(&value).map_err(|e| invalid(&e))?;
        if checked == HOST {
            // The application's Host replaces the URL's, as in `ws` (Node's `http`).
            host = (name.as_str(), value);
        } else if [CONNECTION, UPGRADE, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION].contains(&checked)
            || (checked == SEC_WEBSOCKET_PROTOCOL && !params.protocols.is_empty())
            || (checked == SEC_WEBSOCKET_EXTENSIONS && deflate.is_some())
        {
            // These stay ours, as `ws` keeps them: the application's would make a second line.
        } else {
            theirs.push((name.as_str(), value));
        }
    }
    let key = tungstenite::handshake::client::generate_key();
    let mut head = Vec::with_capacity(256 + theirs.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>());
    let mut line = |name: &str, value: &[u8]| {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    };
    line(host.0, &host.1);
    line("Connection", b"Upgrade");
    line("Upgrade", b"websocket");
    line("Sec-WebSocket-Version", b"13");
    line("Sec-WebSocket-Key", key.as_bytes());
    if !params.protocols.is_empty() {
        let value = params.protocols.join(",");
        HeaderValue::from_str(&value).map_err(|e| invalid(&e))?;
        line("Sec-WebSocket-Protocol", value.as_bytes());
    }
    if let Some(d) = deflate {
        line("Sec-WebSocket-Extensions", d.offer().as_bytes());
    }
    for (name, value) in &theirs {
        line(name, value);
    }
    let mut request = format!("GET {target} HTTP/1.1\r\n").into_bytes();
    request.append(&mut head);
    request.extend_from_slice(b"\r\n");
    Ok((request, key))
}

/// A header value as Node's `http` writes one: a byte per character (`lib/` lets through none
/// beyond U+00FF).
fn latin1(value: &str) -> Option<Vec<u8>> {
    value.chars().map(|c| u8::try_from(c).ok()).collect()
}

/// A non-101 answer: its status, headers and `Retry-After` go to the policy.
fn rejected(resp: &Response) -> ConnError {
    let status = resp.status().as_u16();
    let mut err = ConnError::new(
        errors::ERR_HANDSHAKE,
        format!("server answered the upgrade with HTTP {status}"),
    );
    err.status = Some(status);
    // A byte per character, as Node reads HTTP (and as the `upgrade` event's head is read).
    err.headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.as_bytes().iter().map(|&b| char::from(b)).collect(),
            )
        })
        .collect();
    if status == 429 || status == 503 {
        err.retry_after_ms = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
    }
    err
}

/// `Retry-After`: delay-seconds or an HTTP date, as milliseconds from now.
fn parse_retry_after(value: &str) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More seconds than a u64 holds is as long a wait as any (`maxDelay` caps it).
        return Some(value.parse::<u64>().map_or(u64::MAX, |secs| secs.saturating_mul(1000)));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .map_or(0, |d| d.as_millis() as u64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_sends_the_applications_names_as_spelled_and_keeps_its_own_headers() {
        let header = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        let params = AttemptParams {
            url: url::Url::parse("ws://example.com:8080/chat?room=1").unwrap(),
            headers: vec![
                header("X-Api-Key", "k"),
                header("connection", "close"),
                header("Sec-WebSocket-Key", "forged"),
                header("X-Multi", "1"),
                header("X-Multi", "2"),
                header("hOsT", "other.example"),
                header("X-Text", "caf\u{e9}"),
            ],
            protocols: vec!["a".into(), "b".into()],
            proxy: None,
        };
        let (request, key) = upgrade_request(&params, None).unwrap();
        let text: String = request.iter().map(|&b| char::from(b)).collect();
        let expected = format!(
            "GET /chat?room=1 HTTP/1.1\r\nhOsT: other.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: a,b\r\n\
             X-Api-Key: k\r\nX-Multi: 1\r\nX-Multi: 2\r\nX-Text: caf\u{e9}\r\n\r\n"
        );
        assert_eq!(text, expected);
        assert_eq!(key.len(), 24);
        // The URL's host and port when the application gives no Host; the default port left out.
        let plain = AttemptParams {
            url: url::Url::parse("ws://[::1]:80/").unwrap(),
            headers: Vec::new(),
            protocols: Vec::new(),
            proxy: None,
        };
        let (request, _) = upgrade_request(&plain, None).unwrap();
        assert!(
            request.starts_with(b"GET / HTTP/1.1\r\nHost: [::1]\r\n"),
            "{}",
            String::from_utf8_lossy(&request)
        );
    }

    #[test]
    fn a_head_with_hundreds_of_headers_is_read_once_whole() {
        let many: String = (0..200).map(|i| format!("X-H{i}: {i}\r\n")).collect();
        let head = format!("HTTP/1.1 401 Unauthorized\r\n{many}\r\nbody");
        let whole = head.len() - 4;
        for cut in [20, 200, 2000, whole - 1] {
            assert!(
                parse_response(&head.as_bytes()[..cut], 0).unwrap().is_none(),
                "cut at {cut}"
            );
        }
        let (len, response) = parse_response(head.as_bytes(), 0).unwrap().unwrap();
        assert_eq!((len, response.status().as_u16()), (whole, 401));
        // A byte at a time, each read searching what is new: the end is found where it is, also
        // a CRLF CRLF or LF LF whose first bytes came in the reads before (bare LFs too).
        for head in [head.clone(), head.replace("\r\n", "\n")] {
            let whole = head.len() - 4;
            let mut searched = 0;
            for cut in 1..whole {
                assert!(
                    parse_response(&head.as_bytes()[..cut], searched).unwrap().is_none(),
                    "cut at {cut}"
                );
                searched = cut;
            }
            let (len, _) = parse_response(&head.as_bytes()[..whole], searched).unwrap().unwrap();
            assert_eq!(len, whole);
        }
        assert_eq!(response.headers().len(), 200);
        assert_eq!(response.headers()["x-h199"], "199");
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n", 0).is_err());
        assert!(parse_response(b"HTTP/2 101 Switching Protocols\r\n\r\n", 0).is_err());
        let (_, response) = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\n", 0).unwrap().unwrap();
        assert_eq!(response.status().as_u16(), 404, "a 1.0 refusal keeps its status");
    }

    #[test]
    fn the_answer_is_judged_as_ws_judges_it() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let answer = |extra: &[u8]| {
            let mut head =
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ".to_vec();
            head.extend_from_slice(accept.as_bytes());
            head.extend_from_slice(b"\r\n");
            head.extend_from_slice(extra);
            head.extend_from_slice(b"\r\n");
            let (_, response) = parse_response(&head, 0).unwrap().unwrap();
            verify_response(&response, key, &[], None).map(|(protocol, _)| protocol)
        };
        assert_eq!(answer(b"Upgrade: websocket\r\n").unwrap(), None);
        assert_eq!(answer(b"Upgrade:  WebSocket \r\n").unwrap(), None);
        for refused in [
            &b"Upgrade: websocket, foo\r\n"[..],
            b"Upgrade: foo, websocket\r\n",
            b"Upgrade: websocket\r\nUpgrade: websocket\r\n",
            b"",
            // Not text: no subprotocol of ours (nor none).
            b"Upgrade: websocket\r\nSec-WebSocket-Protocol: \xe9\r\n",
        ] {
            let e = answer(refused).unwrap_err();
            assert_eq!(e.code, errors::ERR_HANDSHAKE, "{}", String::from_utf8_lossy(refused));
        }
    }

    #[test]
    fn connection_lines_are_one_list() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let answer = |connection: &str| {
            let head = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n{connection}Sec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            let (_, response) = parse_response(head.as_bytes(), 0).unwrap().unwrap();
            verify_response(&response, key, &[], None).is_ok()
        };
        assert!(answer("Connection: keep-alive\r\nConnection: Upgrade\r\n"));
        assert!(answer("Connection: keep-alive, upgrade\r\n"));
        assert!(!answer("Connection: keep-alive\r\nConnection: close\r\n"));
        assert!(!answer(""));
    }

    #[test]
    fn retry_after_past_what_a_u64_holds_is_the_longest_wait() {
        assert_eq!(parse_retry_after(" 120 "), Some(120_000));
        assert_eq!(parse_retry_after("99999999999999999999"), Some(u64::MAX));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after(""), None);
    }

    #[test]
    fn header_values_go_out_as_latin1_as_node_writes_them() {
        assert_eq!(latin1("caf\u{e9} \t\u{ff}").unwrap(), b"caf\xe9 \t\xff");
        assert_eq!(latin1("\u{20ac}"), None);
        assert_eq!(latin1("\u{100}"), None);
    }
}
