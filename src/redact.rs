//! URLs as they may appear in a message (an error, an event, a `Debug` form): without a password,
//! nor a lone user name (often a token).

use url::Url;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
