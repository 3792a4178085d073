//! redial-ws native core. Calls flow JS → binding → driver (which feeds the pure state
//! machine and executes its actions) → connection → writer → socket, and events come back
//! through the hub to JS; the modules import each other without a cycle (`module_graph` below
//! checks it). By responsibility, in that order:
//!
//! - `client`, `options`, this root: the N-API binding (one JS client object, its native state);
//! - `protocol`: the event tags and `send()` outcomes shared with `lib/` (`wireProtocol()`);
//! - `machine`, `backoff`, `policy`: pure reconnection logic (no I/O, time passed in) and the
//!   default retry policy;
//! - `driver`: the tokio task that runs one active client (machine, attempt, socket, timers);
//! - `shared`: per-client state shared by the binding, the driver and the connection;
//! - `outbox`: where `send()` puts a message (the open connection's send queue, or the offline
//!   queue);
//! - `attempt`, `transport`, `proxy`, `socks`, `resolve`, `tls`, `upgrade`, `redirect`, `body`: a
//!   connection attempt: the byte stream (TCP, a proxy, TLS), the HTTP upgrade, redirects;
//! - `connection`, `frame`, `deflate`: one open WebSocket connection, its framing, its
//!   compression (permessage-deflate);
//! - `writer`, `reader`, `plain`, `direct`: the socket split for the driver and the JS thread:
//!   the shared write side (with a `wss:` connection's TLS session), the shared read side, the
//!   JS thread's socket watches;
//! - `events`, `event_values`, `hub`, `delivery`, `registry`, `ask`: the events a client reports,
//!   their JS values, the queue and doorbell that carry them from the drivers, their coalesced
//!   delivery to JS, the JS thread's registry of clients (what keeps a client and the event loop
//!   alive); the questions an attempt asks the client's JS functions;
//! - `recycle`: the buffers of large received messages that JS freed, kept for the next ones;
//! - `errors`, `stats`, `queue`, `redact`, `interned`, `napi_raw`: error codes, counters, the
//!   closable queue, URLs without their credentials, values built once per key and shared, and every
//!   raw N-API call;
//! - `testing`: the hooks the tests use to reach rare paths (only with the `testing` feature).

#![deny(clippy::undocumented_unsafe_blocks)]
// Every unsafe block is in `napi_raw`, behind a safe API; the compiler holds the rest to that.
#![deny(unsafe_code)]

pub mod ask;
pub mod attempt;
pub mod backoff;
pub mod body;
pub mod client;
pub mod connection;
pub mod deflate;
pub mod delivery;
pub mod direct;
pub mod driver;
pub mod errors;
pub mod event_values;
pub mod events;
pub mod frame;
pub mod hub;
pub mod interned;
pub mod machine;
#[allow(unsafe_code)]
pub mod napi_raw;
pub mod options;
pub mod outbox;
pub mod payload;
pub mod plain;
pub mod policy;
pub mod protocol;
pub mod proxy;
pub mod queue;
pub mod reader;
pub mod recycle;
pub mod redact;
pub mod redirect;
pub mod registry;
pub mod resolve;
pub mod shared;
pub mod socks;
pub mod stats;
pub mod testing;
pub mod tls;
pub mod transport;
pub mod upgrade;
pub mod writer;

use std::sync::atomic::Ordering::Relaxed;

use napi::bindgen_prelude::*;
use napi_derive::napi;

/// Installs the JS dispatchers: `dispatch` receives coalesced event batches (and takes the next
/// with `deliveryDone` and `deliveryAck`), `dispatchNow` the messages read on the JS thread, where `directRead` says
/// that this runtime's event loop may watch sockets; `nodeLoop`: the event loop is Node's (its turns
/// bound the batches). Called by `lib/` at load time; only the first
/// call on a thread installs anything, and every call returns that first call's `wire` (the JS
/// side's dispatch state, which a second copy of `lib/` then shares).
#[napi(catch_unwind)]
pub fn init(
    env: Env,
    dispatch: Function<'_, napi_raw::DispatchArgs, ()>,
    dispatch_now: Function<'_, napi_raw::RawValue, ()>,
    direct_read: bool,
    node_loop: bool,
    wire: Object<'_>,
) -> Result<napi_raw::RawValue> {
    delivery::init(&env, dispatch, dispatch_now, direct_read, node_loop, wire)
}

/// JS has dispatched an event batch: true when no other waits; false when one does, which JS
/// takes with `deliveryAck` after a turn of its event loop.
#[napi(catch_unwind)]
pub fn delivery_done() -> bool {
    delivery::done()
}

/// The batch that waited (called from a `setImmediate` after `deliveryDone`): returns it, or an
/// empty array when there is none.
#[napi(catch_unwind)]
pub fn delivery_ack(env: Env) -> Result<napi_raw::RawValue> {
    delivery::ack(&env)
}

#[napi(object)]
pub struct ClientStats {
    /// Clients not yet garbage-collected.
    pub live_clients: f64,
    /// Open WebSocket connections (handshake done, socket not yet dropped).
    pub open_connections: f64,
    /// Reconnect timers waiting to fire.
    pub pending_reconnects: f64,
    /// Clients collected while still active (`disconnect()` was forgotten).
    pub collected_without_disconnect: f64,
    /// Driver tasks running (one per active client).
    pub running_tasks: f64,
    /// Connection attempts in flight (TCP connect or handshake).
    pub pending_attempts: f64,
    /// Heartbeat timers (one per open connection when `pingInterval` > 0).
    pub heartbeats: f64,
    /// TLS configurations alive: one per distinct trust setting, shared by its clients.
    pub tls_configs: f64,
    /// Read and write buffers held by open connections: an idle connection holds none.
    pub io_buffers: f64,
    /// zlib streams (permessage-deflate) held by open connections: created by the first
    /// message that needs one, dropped with the connection (or after each message without
    /// context takeover).
    pub deflate_contexts: f64,
    /// Sockets read on the JS thread (plain connections while they are quiet, on Node): each is
    /// watched in the event loop from the moment the JS thread takes it until it gives it back
    /// or the connection ends.
    pub js_readers: f64,
    /// Bytes of large received messages' buffers, freed by JS and kept for the next large
    /// message: at most 4 MiB, and none once no connection is open.
    pub recycled_bytes: f64,
}

/// Whether `NO_PROXY` names `url`'s host (`src/proxy.rs`, which reads it for redirects too).
#[napi(catch_unwind)]
pub fn no_proxy_names(url: String, no_proxy: String) -> bool {
    proxy::no_proxy_names(&url, &no_proxy)
}

#[napi(catch_unwind)]
pub fn client_stats() -> ClientStats {
    let g = &stats::GLOBAL;
    ClientStats {
        live_clients: g.live_clients.load(Relaxed) as f64,
        open_connections: g.open_connections.load(Relaxed) as f64,
        pending_reconnects: g.pending_reconnects.load(Relaxed) as f64,
        collected_without_disconnect: g.collected_without_disconnect.load(Relaxed) as f64,
        running_tasks: g.running_drivers.load(Relaxed) as f64,
        pending_attempts: g.pending_attempts.load(Relaxed) as f64,
        heartbeats: g.heartbeats.load(Relaxed) as f64,
        tls_configs: tls::live_tls_configs() as f64,
        io_buffers: g.io_buffers.load(Relaxed) as f64,
        deflate_contexts: g.deflate_contexts.load(Relaxed) as f64,
        js_readers: g.js_readers.load(Relaxed) as f64,
        recycled_bytes: recycle::held_bytes() as f64,
    }
}

/// Messages read on the JS thread since the process started (tests prove that path is taken).
/// Not part of the API.
#[cfg(feature = "testing")]
#[napi]
pub fn testing_direct_reads() -> f64 {
    testing::probe(testing::Probe::DirectMessages) as f64
}

/// Readable sockets the JS thread left for a later turn, its budget for the turn spent, since the
/// process started. Not part of the API.
#[cfg(feature = "testing")]
#[napi]
pub fn testing_direct_waits() -> f64 {
    testing::probe(testing::Probe::DirectWaits) as f64
}

/// Sockets a JS thread took over (and watched) since the process started. Not part of the API.
#[cfg(feature = "testing")]
#[napi]
pub fn testing_direct_take_overs() -> f64 {
    testing::probe(testing::Probe::TakeOvers) as f64
}

/// Close frames written on the JS thread by `disconnect()` since the process started (tests prove
/// which side wrote it). Not part of the API.
#[cfg(feature = "testing")]
#[napi]
pub fn testing_closes_from_js() -> f64 {
    testing::probe(testing::Probe::ClosesFromJs) as f64
}

/// The send fast path's writes since the process started: `[first messages of a turn written at
/// once, writes of corked messages]` (tests prove which path a message took). Not part of the API.
#[cfg(feature = "testing")]
#[napi]
pub fn testing_fast_path_writes() -> Vec<f64> {
    [testing::Probe::WrittenAtOnce, testing::Probe::CorkedWrites]
        .map(|p| testing::probe(p) as f64)
        .to_vec()
}

/// Calls into JS the addon asked for since the process started, each a wake-up of a JS thread
/// (tests prove which events need one of their own). Not part of the API.
#[cfg(feature = "testing")]
#[napi]
pub fn testing_rings() -> f64 {
    testing::probe(testing::Probe::Rings) as f64
}

/// Host name lookups started since the process started (tests prove that concurrent attempts
/// share one). Not part of the API.
#[cfg(feature = "testing")]
#[napi]
pub fn testing_lookups() -> f64 {
    testing::probe(testing::Probe::Lookups) as f64
}

/// Writes that failed while a connection was open since the process started (tests wait for one
/// before they let the client read). Not part of the API.
#[cfg(feature = "testing")]
#[napi]
pub fn testing_failed_writes() -> f64 {
    testing::probe(testing::Probe::FailedWrites) as f64
}

/// Questions to clients' `lookup` and `checkServerIdentity` functions not yet answered nor
/// abandoned. Not part of the API.
#[cfg(feature = "testing")]
#[napi]
pub fn testing_js_questions_waiting() -> f64 {
    ask::questions_waiting() as f64
}

/// Makes every later host name lookup wait `ms` first (0: no more): a slow resolver for tests.
/// Not part of the API.
#[cfg(feature = "testing")]
#[napi]
pub fn testing_slow_lookups(ms: u32) {
    testing::set_lookup_delay(ms);
}

/// Makes the system refuse the threads of the next `count` host name lookups, as it does at its
/// thread limit. Not part of the API.
#[cfg(feature = "testing")]
#[napi]
pub fn testing_refuse_lookup_threads(count: u32) {
    testing::refuse_lookup_threads(count);
}

/// Why the I/O thread could not be started as the addon loaded: `lib/native.js` throws it from
/// `require()` (`ERR_NATIVE_BINDING`).
static RUNTIME_FAILURE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Why the addon cannot run clients in this process (the system refused the I/O thread, or the
/// descriptors of its event loop, as it loaded), or nothing.
#[napi(catch_unwind)]
pub fn runtime_failure() -> Option<String> {
    RUNTIME_FAILURE.get().cloned()
}

/// One tokio worker: every client's driver is I/O-bound and cheap, and on small
/// machines a second worker competes with the JS thread for the cores, which
/// shows up as latency. `REDIAL_WS_WORKERS` overrides it. napi-rs takes this
/// runtime once: when every environment that loaded the addon has ended (worker
/// threads only) and a new one loads it, napi-rs builds its default runtime, a
/// worker per CPU. Nothing depends on there being one worker (a new driver waits
/// for its predecessor's exit: `Command::Follow`).
///
/// Built as the module registers (napi-rs calls this before it starts its runtime), not in the
/// library's constructor: a runtime that fails half-built (the system refused its second worker)
/// waits for its first worker's exit, which needs the loader's lock that `dlopen` holds. A process
/// at its limit of threads or open files cannot have the runtime (tokio panics when the system
/// refuses a worker; its event loop needs descriptors): the failure is kept for `require()` to
/// throw. napi-rs, given no runtime, would build its own and abort the process when that fails
/// too, so it gets one that needs neither, and nothing runs on it.
#[napi(module_exports, catch_unwind)]
pub fn init_runtime(_exports: Object<'_>) -> Result<()> {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let workers = std::env::var("REDIAL_WS_WORKERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1usize)
            .max(1);
        // Quiet while it builds: what a panic says goes into the error `require()` throws. (The
        // first registration: no thread of this addon exists yet to panic meanwhile.)
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let built = threads_granted(workers).map(|()| {
            std::panic::catch_unwind(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .thread_name("redial-ws")
                    .enable_all()
                    .build()
            })
        });
        std::panic::set_hook(hook);
        let failure = match built {
            Ok(Ok(Ok(rt))) => return napi::bindgen_prelude::create_custom_tokio_runtime(rt),
            Ok(Ok(Err(e))) => e.to_string(),
            Ok(Err(panic)) => errors::panic_text(&*panic),
            Err(e) => e,
        };
        let _ = RUNTIME_FAILURE.set(failure);
        if let Ok(idle) = tokio::runtime::Builder::new_current_thread().build() {
            napi::bindgen_prelude::create_custom_tokio_runtime(idle);
        }
    });
    Ok(())
}

/// Whether the system grants `n` threads at once, asked with threads that end at once: a tokio
/// runtime refused its second worker waits forever for its first to stop, which nothing tells to.
fn threads_granted(n: usize) -> std::result::Result<(), String> {
    if n < 2 {
        return Ok(());
    }
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let wait = std::sync::Arc::new(std::sync::Mutex::new(wait));
    let mut threads = Vec::with_capacity(n);
    let mut refused = None;
    for _ in 0..n {
        let wait = wait.clone();
        match std::thread::Builder::new().spawn(move || {
            let _ = wait.lock().map(|w| w.recv());
        }) {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                refused = Some(format!("the system refused a thread: {e}"));
                break;
            }
        }
    }
    drop(release);
    for thread in threads {
        let _ = thread.join();
    }
    refused.map_or(Ok(()), Err)
}

/// The modules under `src/` must import each other without a cycle, so that data flows one way
/// (binding → state machine → driver → connection → transport → socket). A source-level check:
/// it reads every `src/*.rs` but the crate root, and collects its `crate::<module>` paths outside
/// comments, string literals and `#[cfg(test)]` items.
#[cfg(test)]
mod module_graph {
    use std::collections::{BTreeMap, BTreeSet};

    /// `src` without comments; string and character literals emptied (their contents could hold
    /// anything, braces included).
    fn strip(src: &str) -> String {
        let c: Vec<char> = src.chars().collect();
        let mut out = String::with_capacity(src.len());
        let mut i = 0;
        while i < c.len() {
            match c[i] {
                '/' if c.get(i + 1) == Some(&'/') => {
                    while i < c.len() && c[i] != '\n' {
                        i += 1;
                    }
                }
                '/' if c.get(i + 1) == Some(&'*') => {
                    let mut depth = 0;
                    while i < c.len() {
                        if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                            depth += 1;
                            i += 2;
                        } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        } else {
                            i += 1;
                        }
                    }
                    out.push(' ');
                }
                'r' if matches!(c.get(i + 1), Some('"' | '#')) && (i == 0 || !is_ident(c[i - 1])) => {
                    // A raw string: r"..." or r#"..."#.
                    let mut j = i + 1;
                    let mut hashes = 0;
                    while c.get(j) == Some(&'#') {
                        hashes += 1;
                        j += 1;
                    }
                    if c.get(j) != Some(&'"') {
                        out.push(c[i]);
                        i += 1;
                        continue;
                    }
                    j += 1;
                    while j < c.len() && !(c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#'))) {
                        j += 1;
                    }
                    i = j + 1 + hashes;
                    out.push_str("\"\"");
                }
                '"' => {
                    i += 1;
                    while i < c.len() && c[i] != '"' {
                        i += if c[i] == '\\' { 2 } else { 1 };
                    }
                    i += 1;
                    out.push_str("\"\"");
                }
                // A character literal ('x', '\n', '\u{..}'), not a lifetime ('a).
                '\'' if c.get(i + 1) == Some(&'\\') => {
                    i += 2;
                    while i < c.len() && c[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                    out.push_str("' '");
                }
                '\'' if c.get(i + 2) == Some(&'\'') => {
                    i += 3;
                    out.push_str("' '");
                }
                ch => {
                    out.push(ch);
                    i += 1;
                }
            }
        }
        out
    }

    fn is_ident(ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_'
    }

    /// `code` without the items marked `#[cfg(test)]` (each up to its `;` or its closing brace).
    fn without_test_items(code: &str) -> String {
        const MARK: &str = "#[cfg(test)]";
        let mut out = String::with_capacity(code.len());
        let mut rest = code;
        while let Some(at) = rest.find(MARK) {
            out.push_str(&rest[..at]);
            let item = &rest[at + MARK.len()..];
            let mut depth = 0i32;
            let mut end = item.len();
            for (k, ch) in item.char_indices() {
                match ch {
                    '{' | '(' | '[' => depth += 1,
                    '}' | ')' | ']' => {
                        depth -= 1;
                        if depth == 0 && ch == '}' {
                            end = k + 1;
                            break;
                        }
                    }
                    ';' if depth == 0 => {
                        end = k + 1;
                        break;
                    }
                    _ => {}
                }
            }
            rest = &item[end..];
        }
        out.push_str(rest);
        out
    }

    /// The first segment of every `crate::` path in `code`, `crate::{a, b::c}` included.
    fn crate_refs(code: &str) -> BTreeSet<String> {
        let mut refs = BTreeSet::new();
        let ident = |s: &str| s.chars().take_while(|&ch| is_ident(ch)).collect::<String>();
        for (at, _) in code.match_indices("crate::") {
            if code[..at].chars().next_back().is_some_and(is_ident) {
                continue;
            }
            let after = code[at + "crate::".len()..].trim_start();
            if let Some(group) = after.strip_prefix('{') {
                let (mut depth, mut start) = (0, 0);
                for (k, ch) in group.char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            refs.insert(ident(group[start..k].trim_start()));
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            refs.insert(ident(group[start..k].trim_start()));
                            start = k + 1;
                        }
                        _ => {}
                    }
                }
            } else {
                refs.insert(ident(after));
            }
        }
        refs.remove("");
        refs
    }

    /// Every cycle closed by a back edge of a depth-first search, as module paths.
    fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
        fn visit<'a>(
            m: &'a str,
            graph: &'a BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
            found: &mut Vec<Vec<String>>,
        ) {
            path.push(m);
            for next in &graph[m] {
                if let Some(pos) = path.iter().position(|p| p == next) {
                    let mut cycle: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
                    cycle.push(next.clone());
                    found.push(cycle);
                } else if !done.contains(next.as_str()) {
                    visit(next, graph, path, done, found);
                }
            }
            path.pop();
            done.insert(m);
        }
        let (mut done, mut found) = (BTreeSet::new(), Vec::new());
        for m in graph.keys() {
            if !done.contains(m.as_str()) {
                visit(m, graph, &mut Vec::new(), &mut done, &mut found);
            }
        }
        found
    }

    /// The import graph of `src/` (the crate root excluded): module → the modules it names.
    fn graph() -> BTreeMap<String, BTreeSet<String>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut sources = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).expect("src/") {
            let path = entry.expect("src/ entry").path();
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().is_some_and(|e| e == "rs") && name != "lib" {
                let text = std::fs::read_to_string(&path).expect("a source file");
                sources.insert(name.to_owned(), without_test_items(&strip(&text)));
            }
        }
        sources
            .iter()
            .map(|(name, code)| {
                let mut uses = crate_refs(code);
                uses.retain(|m| m != name && sources.contains_key(m));
                (name.clone(), uses)
            })
            .collect()
    }

    #[test]
    fn the_modules_import_each_other_without_a_cycle() {
        let graph = graph();
        assert!(graph.len() > 5, "src/ was not read: {graph:?}");
        let found = cycles(&graph);
        let shown: Vec<String> = found.iter().map(|c| c.join(" → ")).collect();
        assert!(found.is_empty(), "module import cycles:\n  {}", shown.join("\n  "));
    }

    #[test]
    fn the_scanner_sees_paths_and_skips_comments_strings_and_tests() {
        let src = r##"
            use crate::a::X; // crate::b
            /* crate::c /* nested */ crate::d */
            /// crate::e
            fn f() { let _ = "crate::g {"; let _ = '{'; crate::h::go(); g::<'static>(); }
            use crate::{i, j::{K, L}, k};
            #[cfg(test)]
            mod tests { use crate::m; fn x() { if y { crate::n(); } } }
            #[cfg(test)]
            use crate::o;
            fn after() { crate::p::q() }
        "##;
        let refs = crate_refs(&without_test_items(&strip(src)));
        let want: BTreeSet<String> = ["a", "h", "i", "j", "k", "p"].iter().map(|s| s.to_string()).collect();
        assert_eq!(refs, want);
        let g: BTreeMap<String, BTreeSet<String>> = [("x", vec!["y"]), ("y", vec!["z"]), ("z", vec!["x"])]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
            .collect();
        assert_eq!(cycles(&g), vec![vec!["x", "y", "z", "x"]]);
    }
}

/// No panic unwinds into the JS engine (it would abort the process): every export either reaches
/// its client through `client::with_client`, which catches one, or is compiled with napi-rs's
/// `catch_unwind`. A source-level check of `src/lib.rs` and `src/client.rs`, where the exports are
/// (the test hooks, which panic on purpose or only read counters, aside).
#[cfg(test)]
mod exports_catch_panics {
    #[test]
    fn every_export_catches_a_panic() {
        let mut checked = 0;
        for (file, src) in [
            ("lib.rs", include_str!("lib.rs")),
            ("client.rs", include_str!("client.rs")),
        ] {
            let lines: Vec<&str> = src.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if !line.starts_with("#[napi")
                    || line.starts_with("#[napi(object)]")
                    || line.starts_with("#[napi_derive")
                {
                    continue;
                }
                let Some(sig) = lines[i + 1..].iter().find(|l| l.starts_with("pub fn ")) else {
                    continue;
                };
                let name = sig["pub fn ".len()..].split('(').next().unwrap_or_default();
                if name.starts_with("testing_") {
                    continue;
                }
                let start = lines.iter().position(|l| l == sig).unwrap_or(i);
                let end = lines[start..]
                    .iter()
                    .position(|l| *l == "}")
                    .map_or(lines.len(), |n| start + n);
                let body = lines[start..end].join("\n");
                assert!(
                    line.contains("catch_unwind") || body.contains("with_client("),
                    "{file}: `{name}` neither goes through with_client nor has #[napi(catch_unwind)]"
                );
                checked += 1;
            }
        }
        assert!(checked > 20, "only {checked} exports found");
    }
}
