//! Following the server's redirects within an attempt (`followRedirects`), as `ws` does: a 3xx
//! answer with a `Location` is another upgrade at that address (resolved against the one that
//! answered; `http:` becomes `ws:`, `https:` `wss:`), up to `maxRedirects` per attempt, all under
//! the attempt's one deadline. Each hop is built from the client's own parameters. A hop to
//! another host, or from `wss:` to `ws:`, goes without `Authorization` and `Cookie` (curl's rule,
//! which `ws` follows); the user name and password of a `Location` are never used.

use url::Url;

use crate::errors::{self, ConnError};
use crate::proxy::ProxyEnv;
use crate::redact::url_in_message;
use crate::shared::AttemptParams;

/// The longest name DNS resolves (RFC 1035 §2.3.4, less the root's dot).
const MAX_HOST_NAME: usize = 253;

/// Where a refused upgrade (`err`, from the upgrade at `from`) redirects: `None` when it is not a
/// redirect (no 3xx status, or no `Location` or an empty one, as `ws` takes them), an error when its
/// `Location` is not a WebSocket address.
pub fn target(err: &ConnError, from: &Url) -> Option<Result<Url, ConnError>> {
    if err.code != errors::ERR_HANDSHAKE {
        return None;
    }
    let status = err.status.filter(|s| (300..400).contains(s))?;
    // The first, as Node keeps it.
    let location = err
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("location"))
        .filter(|(_, value)| !value.trim().is_empty())?;
    let invalid = |why: &str| {
        let mut e = err.clone();
        e.message = format!("the server redirected (HTTP {status}) to {why}");
        e
    };
    if from.scheme() == "ws+unix" && Url::parse(location.1.trim()) == Err(url::ParseError::RelativeUrlWithoutBase) {
        // It would join onto the socket's path: not an address the server gave.
        return Some(Err(invalid(
            "a relative address, which a ws+unix: connection does not follow",
        )));
    }
    let Ok(mut url) = from.join(location.1.trim()) else {
        return Some(Err(invalid("an address that is not a URL")));
    };
    let scheme = match url.scheme() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        _ => return Some(Err(invalid(&format!("a {}: URL, not ws: or wss:", url.scheme())))),
    };
    // Between these special schemes the change cannot fail.
    let _ = url.set_scheme(scheme);
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_fragment(None);
    if url.host_str().is_none_or(str::is_empty) {
        return Some(Err(invalid("an address without a host")));
    }
    if matches!(url.host(), Some(url::Host::Domain(name)) if name.strip_suffix('.').unwrap_or(name).len() > MAX_HOST_NAME)
    {
        // Named, not copied: its lookup's error would carry it whole, on every retry.
        return Some(Err(invalid(&format!(
            "a host name longer than {MAX_HOST_NAME} bytes (DNS's limit)"
        ))));
    }
    Some(Ok(url))
}

/// The parameters of the hop to `to`: the client's, less its credentials where a hop must not
/// carry them (another host, which includes another port, or `wss:` to `ws:`).
/// `proxy_env`: the proxy came from the environment, and `to` gets the one it names for it.
pub fn hop(client: &AttemptParams, to: Url, proxy_env: Option<&ProxyEnv>) -> Result<AttemptParams, ConnError> {
    let same_host = to.host_str() == client.url.host_str() && to.port() == client.url.port();
    let downgrade = client.url.scheme() == "wss" && to.scheme() == "ws";
    let keeps = |name: &str| {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        match (is("authorization") || is("cookie"), is("host")) {
            (true, _) => same_host && !downgrade,
            (_, true) => same_host,
            _ => true,
        }
    };
    let proxy = match proxy_env {
        Some(env) => env.for_url(&to)?,
        None => client.proxy.clone(),
    };
    Ok(AttemptParams {
        headers: client.headers.iter().filter(|(name, _)| keeps(name)).cloned().collect(),
        protocols: client.protocols.clone(),
        proxy,
        url: to,
    })
}

/// The error of an attempt whose server redirected once more than `max` allows: the last answer's
/// status and headers (what `shouldReconnect` sees), and where it pointed.
pub fn too_many(mut last: ConnError, to: &Url, max: u32) -> ConnError {
    let status = last.status.unwrap_or(300);
    last.message = format!(
        "the server redirected more than {max} time{} (maxRedirects); the last answer was HTTP {status} to {}",
        if max == 1 { "" } else { "s" },
        url_in_message(to),
    );
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, location: Option<&str>) -> ConnError {
        let mut e = ConnError::new(
            errors::ERR_HANDSHAKE,
            format!("server answered the upgrade with HTTP {status}"),
        );
        e.status = Some(status);
        e.headers = location
            .map(|l| ("location".to_owned(), l.to_owned()))
            .into_iter()
            .collect();
        e
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn only_a_3xx_with_a_location_redirects() {
        let from = url("ws://a.test/x/y");
        assert!(target(&refused(404, Some("/z")), &from).is_none());
        assert!(target(&refused(302, None), &from).is_none());
        assert!(
            target(&refused(302, Some(" ")), &from).is_none(),
            "an empty Location, as ws reads it"
        );
        assert!(target(&ConnError::new(errors::ERR_CONNECT, "refused"), &from).is_none());
        let mut proxy = refused(302, Some("/z"));
        proxy.code = errors::ERR_PROXY;
        assert!(
            target(&proxy, &from).is_none(),
            "only the target's own answer redirects"
        );
        for status in [300, 301, 302, 303, 307, 308, 399] {
            assert_eq!(
                target(&refused(status, Some("/z")), &from).unwrap().unwrap(),
                url("ws://a.test/z")
            );
        }
    }

    #[test]
    fn locations_resolve_against_the_answering_url_and_become_websocket_urls() {
        let from = url("wss://a.test:8443/x/y?q=1");
        let to = |l: &str| target(&refused(302, Some(l)), &from).unwrap().map(|u| u.to_string());
        assert_eq!(to("z").unwrap(), "wss://a.test:8443/x/z");
        assert_eq!(to("//b.test/p").unwrap(), "wss://b.test/p");
        assert_eq!(to("http://b.test:81/p#frag").unwrap(), "ws://b.test:81/p");
        assert_eq!(to("https://b.test/p").unwrap(), "wss://b.test/p");
        assert_eq!(to("ws://user:secret@b.test/").unwrap(), "ws://b.test/");
        let bad = to("ftp://b.test/").unwrap_err();
        assert_eq!((bad.code, bad.status), (errors::ERR_HANDSHAKE, Some(302)));
        assert!(bad.message.contains("ftp: URL"), "{}", bad.message);
        assert!(to("http://[::1").is_err());
        let long = format!("{}.test", "a".repeat(250));
        let refused_long = to(&format!("ws://{long}/")).unwrap_err();
        assert!(
            refused_long.message.contains("longer than 253 bytes"),
            "{}",
            refused_long.message
        );
        assert!(!refused_long.message.contains(&long), "named, not copied");
        assert!(to(&format!("ws://{}.test/", "a".repeat(248))).is_ok(), "253 bytes");
        assert!(
            to(&format!("ws://{}.test./", "a".repeat(248))).is_ok(),
            "and the root's dot"
        );
        let unix = url("ws+unix:/tmp/s.sock:/v1");
        let relative = target(&refused(302, Some("/v2")), &unix).unwrap().unwrap_err();
        assert!(
            relative.message.contains("ws+unix: connection does not follow"),
            "{}",
            relative.message
        );
        assert_eq!(
            target(&refused(302, Some("ws://b.test/")), &unix).unwrap().unwrap(),
            url("ws://b.test/"),
            "an absolute address is followed"
        );
    }

    fn names(p: &AttemptParams) -> Vec<&str> {
        p.headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn credentials_stay_with_the_host_they_were_meant_for() {
        let client = AttemptParams {
            url: url("wss://a.test/"),
            headers: vec![
                ("Authorization".into(), "Bearer t".into()),
                ("cookie".into(), "s=1".into()),
                ("Host".into(), "a.test".into()),
                ("x-other".into(), "kept".into()),
            ],
            protocols: vec!["chat".into()],
            proxy: None,
        };
        let same = hop(&client, url("wss://a.test/elsewhere"), None).unwrap();
        assert_eq!(names(&same), ["Authorization", "cookie", "Host", "x-other"]);
        assert_eq!(same.protocols, ["chat"]);
        assert_eq!(
            names(&hop(&client, url("ws://a.test/"), None).unwrap()),
            ["Host", "x-other"],
            "wss: to ws:"
        );
        assert_eq!(
            names(&hop(&client, url("wss://b.test/"), None).unwrap()),
            ["x-other"],
            "another host"
        );
        assert_eq!(
            names(&hop(&client, url("wss://a.test:444/"), None).unwrap()),
            ["x-other"],
            "another port"
        );
        let plain = AttemptParams {
            url: url("ws://a.test/"),
            ..client
        };
        assert_eq!(
            names(&hop(&plain, url("wss://a.test/"), None).unwrap()),
            ["Authorization", "cookie", "Host", "x-other"],
            "ws: to wss:"
        );
    }

    #[test]
    fn a_proxy_from_the_environment_is_decided_again_for_each_hop() {
        let env = ProxyEnv::new(
            "http://proxy.test:3128",
            "http://secure-proxy.test:3128",
            "a.test, [::1]",
        );
        let client = AttemptParams {
            url: url("ws://a.test/"),
            headers: Vec::new(),
            protocols: Vec::new(),
            proxy: None,
        };
        let via = |to: &str| hop(&client, url(to), Some(&env)).unwrap().proxy.map(|p| p.host);
        assert_eq!(via("ws://a.test/again"), None, "NO_PROXY");
        assert_eq!(via("ws://b.test/"), Some("proxy.test".to_owned()), "HTTP_PROXY");
        assert_eq!(
            via("wss://b.test/"),
            Some("secure-proxy.test".to_owned()),
            "HTTPS_PROXY"
        );
        assert_eq!(via("ws://[::1]:9/"), None, "NO_PROXY, IPv6");
        let starred = ProxyEnv::new("http://proxy.test:3128", "", "*.a.test, *b.test");
        let via = |to: &str| hop(&client, url(to), Some(&starred)).unwrap().proxy.map(|p| p.host);
        assert_eq!(via("ws://x.a.test/"), None, "*.domain: its subdomains");
        assert_eq!(via("ws://a.test/"), None, "*.domain: the domain");
        assert_eq!(
            via("ws://b.test/"),
            Some("proxy.test".to_owned()),
            "a * elsewhere is no wildcard"
        );
        // Without the environment's settings (a `proxy` option, or none), the client's stays.
        assert!(hop(&client, url("ws://b.test/"), None).unwrap().proxy.is_none());
    }

    #[test]
    fn too_many_keeps_the_last_answer_and_shows_no_password() {
        let e = too_many(refused(307, Some("/again")), &url("ws://u:pw@a.test/again"), 2);
        assert_eq!((e.code, e.status), (errors::ERR_HANDSHAKE, Some(307)));
        assert_eq!(e.headers, [("location".to_owned(), "/again".to_owned())]);
        assert!(e.message.contains("more than 2 times"), "{}", e.message);
        assert!(!e.message.contains("pw"), "{}", e.message);
    }
}
