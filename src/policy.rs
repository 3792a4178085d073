//! The default retry policy: which failures are worth another attempt. Pure, like the state
//! machine it feeds; the user's `shouldReconnect` sees its verdict as `default`.

use crate::errors::{self, ConnError};
use crate::machine::Retry;

/// Attempt errors the default policy does not retry (a bad certificate does not fix itself).
pub const NON_RETRYABLE: &[&str] = &[errors::ERR_TLS_CERT, errors::ERR_PROXY_AUTH];

/// A failed attempt: retry network errors, timeouts, and upgrade answers other than 4xx, of
/// which 408, 425 and 429 are retried too, and a 426 that names no protocol: `ws` answers that
/// to an upgrade that reaches its server while it closes (the upgrade listener is gone, the HTTP
/// server still reads), so a restart would end the clients it caught. A 426 that names one asks
/// for another protocol (`Upgrade`, RFC 9110 §15.5.22) or WebSocket version
/// (`Sec-WebSocket-Version`, RFC 6455 §4.4): asking again would not change the answer.
/// A `Retry-After` the server sent goes along.
pub fn on_error(e: &ConnError) -> Retry {
    let default = match e.status {
        Some(426) => !e.headers.iter().any(|(name, _)| {
            name.eq_ignore_ascii_case("upgrade") || name.eq_ignore_ascii_case("sec-websocket-version")
        }),
        Some(s) => matches!(s, 408 | 425 | 429) || s >= 500 || !(400..500).contains(&s),
        None => !NON_RETRYABLE.contains(&e.code),
    };
    Retry {
        default,
        after_ms: e.retry_after_ms,
    }
}

/// A connection that was open ended: retry every close except 1002, 1003, 1007 and 1008
/// (the peer found us broken or unwelcome: trying again would not change its answer).
pub fn on_close(code: u16) -> Retry {
    Retry {
        default: !matches!(code, 1002 | 1003 | 1007 | 1008),
        after_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(status: u16) -> ConnError {
        let mut e = ConnError::new(errors::ERR_HANDSHAKE, format!("HTTP {status}"));
        e.status = Some(status);
        e
    }

    #[test]
    fn network_errors_and_timeouts_are_retried() {
        for code in [
            errors::ERR_CONNECT,
            errors::ERR_CONNECT_TIMEOUT,
            errors::ERR_HANDSHAKE,
            errors::ERR_SOCKET,
            errors::ERR_PROTOCOL,
            errors::ERR_INVALID_UTF8,
            errors::ERR_MESSAGE_TOO_BIG,
            errors::ERR_PONG_TIMEOUT,
            errors::ERR_PROVIDER,
            errors::ERR_TLS,
            errors::ERR_PROXY,
        ] {
            assert_eq!(on_error(&ConnError::new(code, "x")), Retry::YES, "{code}");
        }
    }

    #[test]
    fn a_bad_certificate_and_proxy_authentication_are_not_retried() {
        assert_eq!(NON_RETRYABLE, [errors::ERR_TLS_CERT, errors::ERR_PROXY_AUTH]);
        for code in NON_RETRYABLE {
            assert!(!on_error(&ConnError::new(code, "x")).default, "{code}");
        }
    }

    #[test]
    fn handshake_statuses_408_425_429_and_5xx_are_retried_other_4xx_not() {
        for status in [408, 425, 426, 429, 500, 502, 503, 504, 599, 600, 999] {
            assert!(on_error(&handshake(status)).default, "{status}");
        }
        for status in (400..500).filter(|s| ![408, 425, 426, 429].contains(s)) {
            assert!(!on_error(&handshake(status)).default, "{status}");
        }
    }

    #[test]
    fn a_426_naming_a_protocol_or_version_is_not_retried() {
        let mut e = handshake(426);
        e.headers = vec![("Sec-WebSocket-Version".into(), "8".into())];
        assert!(!on_error(&e).default);
        e.headers = vec![("upgrade".into(), "TLS/1.2, HTTP/1.1".into())];
        assert!(!on_error(&e).default);
        e.headers = vec![("content-type".into(), "text/plain".into())];
        assert!(on_error(&e).default);
    }

    #[test]
    fn an_upgrade_answered_with_a_non_error_status_is_retried() {
        for status in [100, 200, 204, 301, 302, 307, 399] {
            assert!(on_error(&handshake(status)).default, "{status}");
        }
    }

    #[test]
    fn the_status_decides_over_the_code() {
        let mut e = handshake(401);
        e.code = errors::ERR_CONNECT;
        assert!(!on_error(&e).default);
        let mut e = handshake(503);
        e.code = errors::ERR_TLS_CERT;
        assert!(on_error(&e).default);
    }

    #[test]
    fn retry_after_is_passed_on_whatever_the_verdict() {
        let mut e = handshake(503);
        e.retry_after_ms = Some(1500);
        assert_eq!(
            on_error(&e),
            Retry {
                default: true,
                after_ms: Some(1500)
            }
        );
        let mut e = handshake(403);
        e.retry_after_ms = Some(10);
        assert_eq!(on_error(&e).after_ms, Some(10));
        assert_eq!(on_error(&ConnError::new(errors::ERR_CONNECT, "x")).after_ms, None);
    }

    #[test]
    fn closes_1002_1003_1007_1008_are_not_retried_others_are() {
        for code in [1002, 1003, 1007, 1008] {
            assert_eq!(
                on_close(code),
                Retry {
                    default: false,
                    after_ms: None
                },
                "{code}"
            );
        }
        for code in [
            1000, 1001, 1005, 1006, 1009, 1010, 1011, 1012, 1013, 1014, 1015, 3000, 4000, 4999,
        ] {
            assert_eq!(on_close(code), Retry::YES, "{code}");
        }
    }
}
