//! The SOCKS5 client handshake (RFC 1928, with RFC 1929's user name and password) that opens a
//! tunnel through a SOCKS proxy (`proxy: 'socks5://…'` or `'socks5h://…'`). Written here as the
//! HTTP CONNECT exchange is: a few dozen bytes each way, every length bounded by the protocol, and
//! nothing read past the proxy's reply (what follows it is the tunnel's).

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::errors::{self, ConnError};

/// Where the tunnel goes.
pub enum Target<'a> {
    /// An address (`socks5:`, where the client resolves names, or an IP literal).
    Address(SocketAddr),
    /// A host name the proxy resolves (`socks5h:`).
    Name(&'a str, u16),
}

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const USER_PASS: u8 = 2;
const NO_ACCEPTABLE: u8 = 0xff;
const CONNECT: u8 = 1;
const IPV4: u8 = 1;
const NAME: u8 = 3;
const IPV6: u8 = 4;

fn failed(why: impl std::fmt::Display) -> ConnError {
    ConnError::new(errors::ERR_PROXY, format!("SOCKS proxy: {why}"))
}

fn auth_failed(why: &str) -> ConnError {
    ConnError::new(errors::ERR_PROXY_AUTH, format!("SOCKS proxy: {why}"))
}

/// Asks the proxy on `s` for a tunnel to `target`, authenticating with `credentials` (user name,
/// password) if the proxy asks for them. On success `s` is the tunnel.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    target: Target<'_>,
    credentials: Option<(&str, &str)>,
) -> Result<(), ConnError> {
    let io = |e: std::io::Error| failed(format_args!("{e}"));
    // The methods offered: user name and password only when we have them.
    let greeting: &[u8] = match credentials {
        Some(_) => &[VERSION, 2, NO_AUTH, USER_PASS],
        None => &[VERSION, 1, NO_AUTH],
    };
    s.write_all(greeting).await.map_err(io)?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await.map_err(io)?;
    if choice[0] != VERSION {
        return Err(failed("the proxy does not speak SOCKS5"));
    }
    match (choice[1], credentials) {
        (NO_AUTH, _) => {}
        (USER_PASS, Some((user, pass))) => authenticate(s, user, pass).await?,
        (NO_ACCEPTABLE, None) => return Err(auth_failed("the proxy requires credentials")),
        (NO_ACCEPTABLE, Some(_)) => return Err(auth_failed("the proxy accepts none of our methods")),
        (other, _) => return Err(failed(format_args!("the proxy chose a method not offered ({other})"))),
    }
    let mut request = vec![VERSION, CONNECT, 0];
    let port = match target {
        Target::Address(addr) => {
            match addr.ip() {
                IpAddr::V4(ip) => {
                    request.push(IPV4);
                    request.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    request.push(IPV6);
                    request.extend_from_slice(&ip.octets());
                }
            }
            addr.port()
        }
        Target::Name(name, port) => {
            let len = u8::try_from(name.len()).map_err(|_| failed("the host name is longer than 255 bytes"))?;
            request.extend_from_slice(&[NAME, len]);
            request.extend_from_slice(name.as_bytes());
            port
        }
    };
    request.extend_from_slice(&port.to_be_bytes());
    s.write_all(&request).await.map_err(io)?;
    // The reply: version, status, reserved, then the bound address (its length by its type) and port.
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.map_err(io)?;
    if head[0] != VERSION {
        return Err(failed("the proxy does not speak SOCKS5"));
    }
    if head[1] != 0 {
        return Err(failed(format_args!("it could not connect: {}", reply_text(head[1]))));
    }
    let rest = match head[3] {
        IPV4 => 4 + 2,
        IPV6 => 16 + 2,
        NAME => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await.map_err(io)?;
            usize::from(len[0]) + 2
        }
        other => return Err(failed(format_args!("an invalid address type in its reply ({other})"))),
    };
    let mut bound = [0u8; 255 + 2];
    s.read_exact(&mut bound[..rest]).await.map_err(io)?;
    Ok(())
}

/// RFC 1929: the user name and password, each at most 255 bytes.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, user: &str, pass: &str) -> Result<(), ConnError> {
    let too_long = || auth_failed("a user name or password longer than 255 bytes");
    let (ulen, plen) = (
        u8::try_from(user.len()).map_err(|_| too_long())?,
        u8::try_from(pass.len()).map_err(|_| too_long())?,
    );
    let mut message = Vec::with_capacity(3 + user.len() + pass.len());
    message.extend_from_slice(&[1, ulen]);
    message.extend_from_slice(user.as_bytes());
    message.push(plen);
    message.extend_from_slice(pass.as_bytes());
    let io = |e: std::io::Error| failed(format_args!("{e}"));
    s.write_all(&message).await.map_err(io)?;
    let mut status = [0u8; 2];
    s.read_exact(&mut status).await.map_err(io)?;
    if status[0] != 1 {
        return Err(failed(format_args!(
            "it answered our user name and password with version {} (RFC 1929's is 1)",
            status[0]
        )));
    }
    if status[1] != 0 {
        return Err(auth_failed("the proxy refused our user name and password"));
    }
    Ok(())
}

/// RFC 1928's reply codes.
fn reply_text(code: u8) -> String {
    match code {
        1 => "general failure".into(),
        2 => "not allowed by its rules".into(),
        3 => "network unreachable".into(),
        4 => "host unreachable".into(),
        5 => "connection refused".into(),
        6 => "TTL expired".into(),
        7 => "command not supported".into(),
        8 => "address type not supported".into(),
        other => format!("reply {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxy's side of the exchange as bytes: what it answers, and what it must have read.
    async fn exchange(
        answer: &[u8],
        target: Target<'_>,
        credentials: Option<(&str, &str)>,
    ) -> (Result<(), ConnError>, Vec<u8>) {
        let (mut client, mut proxy) = tokio::io::duplex(1024);
        proxy.write_all(answer).await.unwrap();
        proxy.shutdown().await.unwrap();
        let result = connect(&mut client, target, credentials).await;
        drop(client);
        let mut read = Vec::new();
        proxy.read_to_end(&mut read).await.unwrap();
        (result, read)
    }

    #[tokio::test]
    async fn a_tunnel_by_name_with_credentials() {
        let answer = [&[5, 2][..], &[1, 0], &[5, 0, 0, 3, 4], b"host", &[0, 80], b"tunnel"].concat();
        let (result, read) = exchange(&answer, Target::Name("example.com", 443), Some(("u", "pw"))).await;
        assert!(result.is_ok());
        let expected = [
            &[5, 2, 0, 2][..],
            &[1, 1],
            b"u",
            &[2],
            b"pw",
            &[5, 1, 0, 3, 11],
            b"example.com",
            &[1, 187],
        ]
        .concat();
        assert_eq!(read, expected);
    }

    #[tokio::test]
    async fn a_tunnel_to_an_address_without_credentials_leaves_the_tunnel_unread() {
        let answer = [&[5, 0][..], &[5, 0, 0, 4], &[0; 16], &[0, 1], b"tunnel"].concat();
        let target = Target::Address("[::1]:8080".parse().unwrap());
        let (mut client, mut proxy) = tokio::io::duplex(1024);
        proxy.write_all(&answer).await.unwrap();
        connect(&mut client, target, None).await.unwrap();
        let mut rest = [0u8; 6];
        client.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"tunnel");
    }

    #[tokio::test]
    async fn refusals_are_coded() {
        let target = || Target::Address("127.0.0.1:1".parse().unwrap());
        let (r, _) = exchange(&[5, 0xff], target(), None).await;
        assert_eq!(r.unwrap_err().code, errors::ERR_PROXY_AUTH);
        // RFC 1929's answer is version 1: another is no SOCKS5 authentication, even with status 0.
        let (r, _) = exchange(
            &[5, 2, 9, 0, 5, 0, 0, 1, 127, 0, 0, 1, 0, 1],
            target(),
            Some(("u", "secret")),
        )
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.code, errors::ERR_PROXY);
        assert!(!e.message.contains("secret"));
        let (r, _) = exchange(&[5, 2, 1, 1], target(), Some(("u", "secret"))).await;
        let e = r.unwrap_err();
        assert_eq!(e.code, errors::ERR_PROXY_AUTH);
        assert!(!e.message.contains("secret"));
        let (r, _) = exchange(&[5, 0, 5, 5, 0, 1], target(), None).await;
        let e = r.unwrap_err();
        assert_eq!(e.code, errors::ERR_PROXY);
        assert!(e.message.contains("connection refused"), "{}", e.message);
        let (r, _) = exchange(b"HTTP/1.1 400 Bad Request\r\n\r\n", target(), None).await;
        assert_eq!(r.unwrap_err().code, errors::ERR_PROXY);
        // The proxy hangs up mid-reply.
        let (r, _) = exchange(&[5, 0, 5, 0, 0, 1, 127], target(), None).await;
        assert_eq!(r.unwrap_err().code, errors::ERR_PROXY);
    }
}
