//! URLs as they may appear in a message (an error, an event, a `Debug` form): without a password,
//! nor a lone user name (often a token).

use url::Url;

/// Input that did not parse as a URL (or that a check refused), as it may appear in a message:
/// everything between the scheme and the last `@` is taken for the userinfo (`user:pass@` becomes
/// `user:***@`, a lone user name, often a token, `***@`). A password typed with a raw `/`, `?` or
/// `#` ends the authority early for the URL parser, so its rest would show if the userinfo ended
/// there; a path with an `@` in it is masked too, which is the safe side.
pub fn redact(s: &str) -> String {
    // After the scheme and its slashes: a "://" found further on (in a port, a path) is not it.
    let scheme = s.find(':').filter(|&i| {
        let mut bytes = s[..i].bytes();
        bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    });
    let rest_at = scheme.map_or(0, |i| i + 1 + s[i + 1..].bytes().take_while(|&b| b == b'/').count());
    match s[rest_at..].rfind('@') {
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
    let mut shown = url.clone();
    match (url.username().is_empty(), url.password().is_some()) {
        (true, false) => return url.to_string(),
        (false, true) | (true, true) => {
            let _ = shown.set_password(Some("***"));
        }
        (false, false) => {
            let _ = shown.set_username("***");
        }
    }
    shown.to_string()
}

/// The characters of a URL an error message shows at most: a message names the address, it does not
/// carry it (a redirect's `Location` can be 64 KiB, copied into every attempt's error), as
/// `lib/errors.js` shows input.
const URL_SHOWN: usize = 200;

/// `url` as an error message shows it: redacted, without its query (`?token=`, `?apikey=`: a
/// credential as often as not) and fragment, shown as `?…`, and cut after `URL_SHOWN` characters.
pub fn url_in_message(url: &Url) -> String {
    let mut bare = url.clone();
    let had_query = url.query().is_some_and(|q| !q.is_empty());
    bare.set_query(None);
    bare.set_fragment(None);
    let mut shown = redact_url(&bare);
    if let Some((cut, _)) = shown.char_indices().nth(URL_SHOWN) {
        shown.truncate(cut);
        shown.push('…');
    } else if had_query {
        shown.push_str("?…");
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_userinfo() {
        assert_eq!(redact("ws://alice:pw@host:1/p?q#f"), "ws://alice:***@host:1/p?q#f");
        assert_eq!(redact("http://tok3n@proxy:8080"), "http://***@proxy:8080");
        assert_eq!(redact("ws://a@b:c@d@host/x"), "ws://a@b:***@host/x");
        assert_eq!(redact("ws://host"), "ws://host");
        assert_eq!(redact("alice:pw@host"), "alice:***@host");
        // A "://" after the host is not the scheme's (a proptest found the password shown).
        assert_eq!(redact("http::Secr3tPw@127.0.0.1:://"), "http::***@127.0.0.1:://");
        assert_eq!(redact("socks5:/u:pw@h/x://y"), "socks5:/u:***@h/x://y");
        assert_eq!(redact("://u:pw@h"), ":***@h");
        // A raw '/', '?' or '#' in a password: the parser's authority ends there, ours does not.
        assert_eq!(
            redact("http://bob:pa/ssW0RD@127.0.0.1:3128"),
            "http://bob:***@127.0.0.1:3128"
        );
        assert_eq!(redact("ws://alice:12#s?e/cret@host/"), "ws://alice:***@host/");
        let url = Url::parse("ws://alice:pw@127.0.0.1:9/p@th").unwrap();
        assert_eq!(redact_url(&url), "ws://alice:***@127.0.0.1:9/p@th");
        let url = Url::parse("ws://tok3n@127.0.0.1:9/").unwrap();
        assert_eq!(redact_url(&url), "ws://***@127.0.0.1:9/");
        let url = Url::parse("ws://:pw@127.0.0.1:9/").unwrap();
        assert_eq!(redact_url(&url), "ws://:***@127.0.0.1:9/");
        assert_eq!(
            redact_url(&Url::parse("ws://127.0.0.1:9/a@b").unwrap()),
            "ws://127.0.0.1:9/a@b"
        );
    }

    #[test]
    fn a_long_url_is_cut_in_messages() {
        let long = Url::parse(&format!("ws://u:secret@a.test/{}", "x".repeat(60_000))).unwrap();
        let shown = super::url_in_message(&long);
        assert_eq!(shown.chars().count(), super::URL_SHOWN + 1);
        assert!(shown.starts_with("ws://u:***@a.test/xxx") && shown.ends_with('…'));
        let short = Url::parse("ws://a.test/").unwrap();
        assert_eq!(super::url_in_message(&short), "ws://a.test/");
    }

    #[test]
    fn a_query_is_left_out_of_messages() {
        let shown = |u: &str| super::url_in_message(&Url::parse(u).unwrap());
        assert_eq!(
            shown("ws://u:pw@a.test:4000/socket/websocket?token=SECRET&vsn=2.0.0#f"),
            "ws://u:***@a.test:4000/socket/websocket?…"
        );
        assert_eq!(shown("ws://a.test/p?"), "ws://a.test/p");
        assert_eq!(shown("ws://a.test/p#only"), "ws://a.test/p");
    }
}
