//! Host name lookups of connection attempts, one per host and port at a time. A fleet of clients
//! that reconnects to a named host at once (a server restart) asks the system resolver once per
//! wave, not once per client: each lookup holds a thread, and 2,000 clients connecting to
//! `localhost` together had started about 125 of them. An attempt joins the lookup running for its
//! host, also one whose attempts all went (a resolver that does not answer): a host that hangs holds
//! one thread, not one per attempt. Nothing is cached: a lookup is forgotten when it completes,
//! and the next attempt asks again.
//!
//! A client with a `lookup` option (`dns.lookup`'s shape, as `ws` passes it to `net.connect`) asks
//! that function instead (`ask_js`, a question of `crate::ask`).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use crate::ask;
use crate::testing::{self, Probe};

type Addresses = Result<Arc<[SocketAddr]>, Arc<io::Error>>;

/// The addresses of `host`, in the resolver's order: the answer of the lookup running for the same
/// host and port if there is one, else of a new one.
pub async fn resolve(host: &str, port: u16) -> io::Result<Arc<[SocketAddr]>> {
    system_lookup(host.to_owned(), port)
        .await
        .map_err(|e| lookup_error(host, &e))
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

/// Distinct hosts looked up at once (tokio's blocking pool, which ran them before, had as many
/// threads at most; Node's libuv runs 4 lookups at a time by default).
const LOOKUP_THREADS: usize = 512;

/// The system lookups running, by host and port, and who waits for each answer. A lookup whose
/// attempts all went (a resolver that does not answer) keeps its thread until `getaddrinfo`
/// returns: the next attempt for that host waits for that answer rather than start another
/// thread, so a host that hangs holds one thread, not one per attempt.
static RUNNING: Mutex<Option<HashMap<(String, u16), Waiting>>> = Mutex::new(None);

/// Who waits for a running lookup's answer.
type Waiting = Vec<tokio::sync::oneshot::Sender<Addresses>>;

/// The system resolver's addresses for `host`, asked on a lookup thread (`getaddrinfo` blocks),
/// or the answer of the lookup running for it. Not tokio's blocking pool: it panics when the
/// system refuses it a thread (a process at its thread limit, a container's `pids.max`), where
/// this is a failed lookup, which the attempt's policy retries.
async fn system_lookup(host: String, port: u16) -> Addresses {
    static THREADS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(LOOKUP_THREADS);
    let key = (host, port);
    let (tx, rx) = tokio::sync::oneshot::channel();
    // Join the lookup running for the host, or take a thread's permit and start one.
    let mut permit = None;
    let start = loop {
        {
            let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
            let map = running.get_or_insert_with(HashMap::new);
            if let Some(waiting) = map.get_mut(&key) {
                waiting.retain(|w| !w.is_closed());
                waiting.push(tx);
                // A permit taken while the lookup started meanwhile goes back at once: held
                // while this attempt waits, it would stand for no thread.
                drop(permit.take());
                break None;
            }
            if let Some(permit) = permit.take() {
                map.insert(key.clone(), vec![tx]);
                break Some(permit);
            }
        }
        // Never closed.
        permit = Some(THREADS.acquire().await.map_err(|e| Arc::new(io::Error::other(e)))?);
    };
    if let Some(permit) = start {
        start_lookup(key, permit);
    }
    rx.await
        .unwrap_or_else(|_| Err(Arc::new(io::Error::other("its thread ended without an answer"))))
}

/// Asks the resolver for `key` on a lookup thread, which holds `permit` until it has answered.
fn start_lookup(key: (String, u16), permit: tokio::sync::SemaphorePermit<'static>) {
    use std::net::ToSocketAddrs;
    let asked = key.clone();
    // Tests: a slow resolver, whose lookups then surely overlap.
    let delay = testing::lookup_delay();
    let job = Box::new(move || {
        testing::count(Probe::Lookups, 1);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        let addresses = (asked.0.as_str(), asked.1).to_socket_addrs();
        answer(
            &asked,
            addresses.map(|a| a.collect::<Vec<_>>().into()).map_err(Arc::new),
        );
        drop(permit);
    });
    if let Err(e) = run_on_lookup_thread(job) {
        let refused = io::Error::new(e.kind(), format!("no thread could be started for it: {e}"));
        answer(&key, Err(Arc::new(refused)));
    }
}

/// A lookup for a thread to run.
type Job = Box<dyn FnOnce() + Send>;

/// How long a lookup thread waits for the next lookup before it ends (as long as tokio's blocking
/// pool keeps its threads): a fleet's waves, and short connections made again and again to a
/// named host, take a waiting thread rather than make one (about 35 µs of CPU each).
const LOOKUP_THREAD_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(10);

/// Lookups waiting for a thread that waits for them, and how many threads wait.
struct Pool {
    jobs: std::collections::VecDeque<Job>,
    idle: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    jobs: std::collections::VecDeque::new(),
    idle: 0,
});
static WORK: std::sync::Condvar = std::sync::Condvar::new();

/// Runs `job` on a lookup thread that waits for one, or on a new one: the system's refusal of a
/// new thread comes back (`job` is then dropped). As many run at once as `system_lookup`'s
/// permits allow, so there are never more threads than that.
fn run_on_lookup_thread(job: Job) -> io::Result<()> {
    let refused = testing::lookup_thread_refused();
    {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        // A thread that waits and is not yet claimed by a lookup queued before this one.
        if !refused && pool.idle > pool.jobs.len() {
            pool.jobs.push_back(job);
            WORK.notify_one();
            return Ok(());
        }
    }
    let mut thread = std::thread::Builder::new().name("redial-ws-dns".into());
    if refused {
        // A stack no system grants: the spawn fails as it does at the thread limit.
        thread = thread.stack_size(usize::MAX >> 2);
    }
    thread
        .spawn(move || {
            job();
            lookup_thread();
        })
        .map(drop)
}

/// A lookup thread once it has run its first lookup: it runs those queued for it, and ends once
/// none came for `LOOKUP_THREAD_KEEP_ALIVE`.
fn lookup_thread() {
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if let Some(job) = pool.jobs.pop_front() {
            drop(pool);
            job();
            pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
            continue;
        }
        pool.idle += 1;
        let (guard, waited) = WORK
            .wait_timeout(pool, LOOKUP_THREAD_KEEP_ALIVE)
            .unwrap_or_else(|p| p.into_inner());
        pool = guard;
        pool.idle -= 1;
        if waited.timed_out() && pool.jobs.is_empty() {
            return;
        }
    }
}

/// Gives the lookup's answer to everyone waiting for it, and forgets it.
fn answer(key: &(String, u16), addresses: Addresses) {
    let waiting = RUNNING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_mut()
        .and_then(|map| map.remove(key))
        .unwrap_or_default();
    for waiter in waiting {
        let _ = waiter.send(addresses.clone());
    }
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
        let before = testing::probe(Probe::Lookups);
        let all = futures_util::future::join_all((0..50).map(|_| resolve("localhost", 9))).await;
        let started = testing::probe(Probe::Lookups) - before;
        assert!(started <= 5, "{started} lookups for 50 concurrent attempts");
        for addresses in all {
            let addresses = addresses.unwrap();
            assert!(!addresses.is_empty() && addresses.iter().all(|a| a.port() == 9));
        }
        let map = RUNNING.lock().unwrap();
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
