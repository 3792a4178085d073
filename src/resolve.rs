//! Host name lookups of connection attempts, one per host and port in flight. A fleet of clients
//! that reconnects to a named host at once (a server restart) asks the system resolver once per
//! wave, not once per client: each lookup holds a thread, and 2,000 clients connecting to
//! `localhost` together had started about 125 of them. Nothing is cached:
//! a lookup is forgotten when it completes, and the next attempt asks again.
//!
//! A client with a `lookup` option (`dns.lookup`'s shape, as `ws` passes it to `net.connect`) asks
//! that function instead (`ask_js`, a question of `crate::ask`).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::{FutureExt, Shared, WeakShared};

use crate::ask;
use crate::testing;

type Addresses = Result<Arc<[SocketAddr]>, Arc<io::Error>>;
type LookupFuture = Pin<Box<dyn Future<Output = Addresses> + Send>>;
type Lookup = Shared<LookupFuture>;
/// Weak: a lookup whose every waiter gave up (their attempts ended) is dropped, not kept here.
type InFlight = HashMap<(String, u16), WeakShared<LookupFuture>>;

static IN_FLIGHT: Mutex<Option<InFlight>> = Mutex::new(None);

/// Lookups started since the process began (tests prove that concurrent attempts share one).
pub static STARTED: AtomicU64 = AtomicU64::new(0);

/// The addresses of `host`, in the resolver's order: the lookup in flight for the same host and
/// port if there is one, else a new one.
pub async fn resolve(host: &str, port: u16) -> io::Result<Arc<[SocketAddr]>> {
    let key = (host.to_owned(), port);
    let lookup = join_or_start(&key);
    let result = lookup.clone().await;
    {
        let mut in_flight = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        let map = in_flight.get_or_insert_with(HashMap::new);
        // Forget it, unless a newer lookup took its place.
        if map
            .get(&key)
            .and_then(WeakShared::upgrade)
            .is_none_or(|l| l.ptr_eq(&lookup))
        {
            map.remove(&key);
        }
    }
    result.map_err(|e| lookup_error(host, &e))
}

/// A failed lookup as Node words it (`getaddrinfo ENOTFOUND example.com`), so that JS gives the
/// error the same system `cause` as `ws`'s own error; the resolver's text when its code is not known.
/// The standard library hands `getaddrinfo`'s code only as its `gai_strerror` text (on Windows, as
/// a Winsock number), so the code is read back from the texts of glibc, musl and macOS.
fn lookup_error(host: &str, e: &io::Error) -> io::Error {
    match gai_code(e) {
        Some(code) => io::Error::new(e.kind(), format!("lookup failed: getaddrinfo {code} {host}")),
        None => io::Error::new(e.kind(), format!("lookup failed: {e}")),
    }
}

/// Node's name for a failed `getaddrinfo` (EAI_NONAME and EAI_NODATA are both `ENOTFOUND`).
fn gai_code(e: &io::Error) -> Option<&'static str> {
    if cfg!(windows) {
        // WSAHOST_NOT_FOUND, WSATRY_AGAIN, WSANO_RECOVERY, WSANO_DATA.
        return match e.raw_os_error() {
            Some(11001 | 11004) => Some("ENOTFOUND"),
            Some(11002) => Some("EAI_AGAIN"),
            Some(11003) => Some("EAI_FAIL"),
            _ => None,
        };
    }
    const TEXTS: [(&str, &str); 8] = [
        ("Name or service not known", "ENOTFOUND"),
        ("No address associated with hostname", "ENOTFOUND"),
        ("nodename nor servname provided", "ENOTFOUND"),
        ("No address associated with nodename", "ENOTFOUND"),
        ("Name does not resolve", "ENOTFOUND"),
        ("Name has no usable address", "ENOTFOUND"),
        ("Temporary failure in name resolution", "EAI_AGAIN"),
        ("Non-recoverable failure in name resolution", "EAI_FAIL"),
    ];
    let text = e.to_string();
    TEXTS.iter().find(|(t, _)| text.contains(t)).map(|&(_, code)| code)
}

fn join_or_start(key: &(String, u16)) -> Lookup {
    let mut in_flight = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
    let map = in_flight.get_or_insert_with(HashMap::new);
    if let Some(lookup) = map.get(key).and_then(WeakShared::upgrade) {
        return lookup;
    }
    STARTED.fetch_add(1, Ordering::Relaxed);
    let (host, port) = key.clone();
    // Tests: a slow resolver, whose lookups then surely overlap.
    let delay = testing::lookup_delay();
    let future: LookupFuture = Box::pin(async move {
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        match system_lookup(host, port).await {
            Ok(addresses) => Ok(addresses.into()),
            Err(e) => Err(Arc::new(e)),
        }
    });
    let lookup = future.shared();
    if map.len() >= 64 {
        // Lookups all of whose attempts gave up: nothing completes them to forget them.
        map.retain(|_, l| l.upgrade().is_some());
    }
    if let Some(weak) = lookup.downgrade() {
        map.insert(key.clone(), weak);
    }
    lookup
}

/// The system resolver's addresses for `host`, asked on a thread of its own (`getaddrinfo`
/// blocks), `LOOKUP_THREADS` at most at a time. Not tokio's blocking pool: it panics when the
/// system refuses it a thread (a process at its thread limit, a container's `pids.max`), where
/// this is a failed lookup, which the attempt's policy retries.
async fn system_lookup(host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    // Lookups of distinct hosts in flight at once (Node's libuv runs 4 on its pool by default).
    const LOOKUP_THREADS: usize = 64;
    static THREADS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(LOOKUP_THREADS);
    // Never closed. Held by the thread: one whose waiters went still counts until it ends.
    let permit = THREADS.acquire().await.map_err(io::Error::other)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut thread = std::thread::Builder::new().name("redial-ws-lookup".into());
    if testing::lookup_thread_refused() {
        // A stack no system grants: the spawn fails as it does at the thread limit.
        thread = thread.stack_size(1 << 50);
    }
    thread
        .spawn(move || {
            let _ = tx.send((host.as_str(), port).to_socket_addrs().map(Iterator::collect));
            drop(permit);
        })
        .map_err(|e| io::Error::new(e.kind(), format!("no thread could be started for it: {e}")))?;
    rx.await
        .unwrap_or_else(|_| Err(io::Error::other("its thread ended without an answer")))
}

/// The addresses a client's `lookup` function gives for `host` (`family`: 0, 4 or 6, as asked).
pub async fn ask_js(asker: &ask::Asker, host: &str, family: u8) -> io::Result<Vec<IpAddr>> {
    let question = ask::Question::Lookup {
        host: host.to_owned(),
        family,
    };
    match ask::ask(asker, question).await {
        ask::Answer::Addresses(addresses) => Ok(addresses),
        ask::Answer::Failed(why) => Err(io::Error::other(format!("lookup failed: {why}"))),
        ask::Answer::Accepted => Err(io::Error::other("lookup failed: it gave no address")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_lookups_of_a_host_share_one_and_none_is_kept() {
        let before = STARTED.load(Ordering::Relaxed);
        let all = futures_util::future::join_all((0..50).map(|_| resolve("localhost", 9))).await;
        let started = STARTED.load(Ordering::Relaxed) - before;
        assert!(started <= 5, "{started} lookups for 50 concurrent attempts");
        for addresses in all {
            let addresses = addresses.unwrap();
            assert!(!addresses.is_empty() && addresses.iter().all(|a| a.port() == 9));
        }
        let map = IN_FLIGHT.lock().unwrap();
        assert!(map
            .as_ref()
            .is_none_or(|m| !m.contains_key(&("localhost".to_owned(), 9))));
    }

    #[test]
    fn a_lookup_error_is_worded_as_node_words_it() {
        let resolver = |text: &str| io::Error::other(format!("failed to lookup address information: {text}"));
        let worded = |e: io::Error| lookup_error("example.test", &e).to_string();
        if !cfg!(windows) {
            assert_eq!(
                worded(resolver("Name or service not known")),
                "lookup failed: getaddrinfo ENOTFOUND example.test"
            );
            assert_eq!(
                worded(resolver("Temporary failure in name resolution")),
                "lookup failed: getaddrinfo EAI_AGAIN example.test"
            );
        }
        assert_eq!(
            worded(resolver("something else")),
            "lookup failed: failed to lookup address information: something else"
        );
    }

    #[tokio::test]
    async fn a_failed_lookup_is_an_error_for_every_waiter() {
        // A name the resolver refuses before any query leaves the machine (it holds a NUL).
        let (a, b) = tokio::join!(resolve("bad\0name", 80), resolve("bad\0name", 80));
        assert!(a.is_err() && b.is_err());
    }
}
