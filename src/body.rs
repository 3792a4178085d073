//! The body of the answer a server gave the upgrade instead of 101 (a 401's JSON reason, an HTML
//! error page), for the attempt's error: what `ws` users read from `unexpected-response`'s
//! response. Bounded in size and time so that a server cannot hold the attempt or fill memory
//! with it: at most [`MAX_BODY`] bytes, read for at most [`BODY_WAIT`], and never past the attempt's
//! own deadline (`connectTimeout`), so that the refusal is not lost to it. `Content-Length`, chunked or up to the end of the connection, as HTTP/1.1
//! frames it; a truncated body is given as far as it came.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// The most of a body kept.
pub const MAX_BODY: usize = 64 * 1024;
/// How long the body may take to arrive.
pub const BODY_WAIT: Duration = Duration::from_secs(1);

/// How the response frames its body.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Framing {
    Length(u64),
    Chunked,
    /// Up to the end of the connection.
    UntilClose,
}

impl Framing {
    /// From the response's `Transfer-Encoding` and `Content-Length` (RFC 9112 §6.3).
    pub fn of(headers: &tungstenite::http::HeaderMap) -> Framing {
        let chunked = headers
            .get_all(tungstenite::http::header::TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .last()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        if chunked {
            return Framing::Chunked;
        }
        match headers
            .get(tungstenite::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    }
}

/// The body, from `read` (what followed the head in the same reads) and then `io`, as far as
/// the bounds allow; `deadline`: the attempt's.
pub async fn read<R: AsyncRead + Unpin>(io: &mut R, read: BytesMut, framing: Framing, deadline: Instant) -> Bytes {
    let mut raw = read;
    // Chunked framing adds a few bytes per chunk: room for them beyond the body's own bound.
    let raw_limit = MAX_BODY + MAX_BODY / 4;
    let collect = async {
        loop {
            if let Some(body) = complete(&raw, framing) {
                return body;
            }
            if raw.len() >= raw_limit {
                break;
            }
            raw.reserve(4096.min(raw_limit - raw.len()));
            match io.read_buf(&mut raw).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        partial(&raw, framing)
    };
    match tokio::time::timeout_at((Instant::now() + BODY_WAIT).min(deadline), collect).await {
        Ok(body) => body,
        Err(_) => partial(&raw, framing),
    }
}

/// The whole body when `raw` holds all of it (or `MAX_BODY` of it).
fn complete(raw: &[u8], framing: Framing) -> Option<Bytes> {
    match framing {
        Framing::Length(n) => {
            let want = usize::try_from(n).unwrap_or(usize::MAX).min(MAX_BODY);
            (raw.len() >= want).then(|| Bytes::copy_from_slice(&raw[..want]))
        }
        Framing::Chunked => match dechunk(raw) {
            (body, true) => Some(body),
            (body, false) if body.len() >= MAX_BODY => Some(body),
            _ => None,
        },
        Framing::UntilClose => (raw.len() >= MAX_BODY).then(|| Bytes::copy_from_slice(&raw[..MAX_BODY])),
    }
}

/// What arrived of the body when no more will be read.
fn partial(raw: &[u8], framing: Framing) -> Bytes {
    match framing {
        Framing::Chunked => dechunk(raw).0,
        Framing::Length(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            Bytes::copy_from_slice(&raw[..raw.len().min(n).min(MAX_BODY)])
        }
        Framing::UntilClose => Bytes::copy_from_slice(&raw[..raw.len().min(MAX_BODY)]),
    }
}

/// The data of chunked `raw` as far as it goes (at most `MAX_BODY`), and whether the last chunk
/// (size 0) was seen. Chunk extensions and trailers are skipped.
fn dechunk(raw: &[u8]) -> (Bytes, bool) {
    let mut body = Vec::new();
    let mut at = 0;
    while let Some(line_end) = raw[at..].windows(2).position(|w| w == b"\r\n").map(|i| at + i) {
        let line = std::str::from_utf8(&raw[at..line_end]).unwrap_or("");
        let size_text = line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            break;
        };
        if size == 0 {
            return (Bytes::from(body), true);
        }
        let start = line_end + 2;
        let end = start.saturating_add(size).min(raw.len());
        body.extend_from_slice(&raw[start..end]);
        if body.len() >= MAX_BODY {
            body.truncate(MAX_BODY);
            break;
        }
        if end < start.saturating_add(size) || raw.len() < end + 2 {
            break;
        }
        at = end + 2;
    }
    (Bytes::from(body), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(framing: Framing, first: &[u8], rest: &[u8]) -> Bytes {
        let mut io = rest;
        read(&mut io, BytesMut::from(first), framing, Instant::now() + BODY_WAIT).await
    }

    #[tokio::test]
    async fn each_framing_gives_the_body_and_no_more() {
        assert_eq!(body(Framing::Length(5), b"hel", b"lo, and more").await, "hello");
        assert_eq!(body(Framing::UntilClose, b"until ", b"the end").await, "until the end");
        let chunked = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\nnext";
        for split in 0..chunked.len() {
            assert_eq!(
                body(Framing::Chunked, &chunked[..split], &chunked[split..]).await,
                "Wikipedia"
            );
        }
        // Cut short: what came.
        assert_eq!(body(Framing::Chunked, b"4\r\nWi", b"").await, "Wi");
        assert_eq!(body(Framing::Length(100), b"short", b"").await, "short");
    }

    #[tokio::test]
    async fn a_large_body_is_cut_at_the_bound() {
        let big = vec![b'x'; 3 * MAX_BODY];
        assert_eq!(body(Framing::UntilClose, b"", &big).await.len(), MAX_BODY);
        assert_eq!(body(Framing::Length(u64::MAX), b"", &big).await.len(), MAX_BODY);
        let chunk = format!("{:x}\r\n", 2 * MAX_BODY);
        let chunked = [chunk.as_bytes(), &big[..2 * MAX_BODY]].concat();
        assert_eq!(body(Framing::Chunked, b"", &chunked).await.len(), MAX_BODY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_stalls_holds_the_attempt_one_second_at_most() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut server, b"partial")
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let got = read(
            &mut client,
            BytesMut::new(),
            Framing::Length(1000),
            started + 10 * BODY_WAIT,
        )
        .await;
        assert_eq!(got, "partial");
        assert_eq!(started.elapsed(), BODY_WAIT);
        // An attempt's deadline before that ends the read, with what came.
        let started = tokio::time::Instant::now();
        let soon = started + BODY_WAIT / 4;
        assert_eq!(
            read(&mut client, BytesMut::from(&b"more"[..]), Framing::Length(1000), soon).await,
            "more"
        );
        assert_eq!(started.elapsed(), BODY_WAIT / 4);
        drop(server);
    }

    #[test]
    fn framing_follows_the_headers() {
        let mut h = tungstenite::http::HeaderMap::new();
        assert_eq!(Framing::of(&h), Framing::UntilClose);
        h.insert("content-length", "12".parse().unwrap());
        assert_eq!(Framing::of(&h), Framing::Length(12));
        h.insert("transfer-encoding", "gzip, chunked".parse().unwrap());
        assert_eq!(Framing::of(&h), Framing::Chunked);
    }
}
