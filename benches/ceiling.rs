//! The ceiling rows of `bench/run.js` ("how close to the limit"): the same workload with no
//! JavaScript at all. Built by the runner with `cargo build --release --bench ceiling`; not a
//! libtest benchmark (`harness = false`), and not part of the addon.
//!
//! ```text
//! ceiling recv <ws[s]://127.0.0.1:port/> <count> <size> [<ca.pem>]
//! ceiling tcp-echo <port> <count> <size> <warmup>
//! ```
//!
//! `recv`: the crate's own connection attempt (`attempt::Attempt`: TCP, rustls for `wss:`,
//! the HTTP upgrade) and its own frame reader (`frame::Decoder`, UTF-8 check of text included),
//! on a current-thread tokio runtime; sends "go" as the JS peers do, then reads `count`
//! messages and drops them. The clock runs from "go" to the `count`-th message, as in
//! `bench/peers/harness.js`.
//!
//! `tcp-echo`: `count` sequential round trips of `size` bytes over plain TCP (std, blocking,
//! `TCP_NODELAY`) against a byte echo server: the floor of the echo RTT rows.
//!
//! Prints one JSON object on stdout; exits 1 with the reason on stderr.

use std::future::poll_fn;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redial_ws::attempt::{Attempt, ParamSource};
use redial_ws::connection::ConnConfig;
use redial_ws::frame::{self, Decoder, Incoming, Limits};
use redial_ws::shared::{AttemptParams, Shared};
use redial_ws::tls::TlsOptions;
use tokio::io::AsyncWriteExt;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.first().map(String::as_str) {
        Some("recv") => recv(&args[1..]),
        Some("tcp-echo") => tcp_echo(&args[1..]),
        _ => {
            Err("usage: ceiling recv <url> <count> <size> [<ca.pem>] | tcp-echo <port> <count> <size> <warmup>".into())
        }
    };
    match out {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("ceiling: {e}");
            std::process::exit(1);
        }
    }
}

fn num(args: &[String], i: usize, what: &str) -> Result<usize, String> {
    let s = args.get(i).ok_or_else(|| format!("missing {what}"))?;
    s.parse().map_err(|_| format!("{what}: not a number: {s}"))
}

fn recv(args: &[String]) -> Result<String, String> {
    let url = url::Url::parse(args.first().ok_or("missing url")?).map_err(|e| e.to_string())?;
    let count = num(args, 1, "count")?;
    let size = num(args, 2, "size")?;
    let ca = match args.get(3) {
        Some(path) => vec![std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?],
        None => Vec::new(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(recv_async(url, count, size, ca))
}

async fn recv_async(url: url::Url, count: usize, size: usize, ca: Vec<String>) -> Result<String, String> {
    // What the addon's defaults amount to once the server has declined permessage-deflate.
    let limits = Limits {
        max_payload: 64 * 1024 * 1024,
        max_text: 64 * 1024 * 1024,
        deflate: false,
        replace_invalid_utf8: false,
        max_fragments: 0,
    };
    let cfg = ConnConfig {
        max_redirects: None,
        proxy_env: None,
        dial: Default::default(),
        js_lookup: false,
        js: None,
        connect_timeout: Duration::from_secs(10),
        limits,
        ping_interval: Duration::ZERO,
        pong_timeout: Duration::from_secs(10),
        close_timeout: Duration::from_secs(1),
        auto_pong: true,
        deflate: None,
        tls: TlsOptions {
            ca,
            reject_unauthorized: true,
            servername: None,
            client_auth: None,
            check_identity: false,
            ..TlsOptions::default()
        },
        tls_config: Default::default(),
    };
    let params = AttemptParams {
        url,
        headers: Vec::new(),
        protocols: Vec::new(),
        proxy: None,
    };
    let shared = Arc::new(Shared::new(0, false));
    let opened = Attempt::start(&cfg, ParamSource::Fixed(Arc::new(params)), None, &shared)
        .await
        .map_err(|e| format!("connect: {}", e.message))?;
    let mut transport = opened.transport;
    let mut decoder = Decoder::new(opened.leftover);
    let mut go = Vec::new();
    frame::encode(frame::OPCODE_TEXT, b"go", &mut go);

    let t0 = Instant::now();
    transport.write_all(&go).await.map_err(|e| e.to_string())?;
    transport.flush().await.map_err(|e| e.to_string())?;
    let mut n = 0usize;
    let mut last = 0usize;
    while n < count {
        let frame = poll_fn(|cx| decoder.poll_next(cx, &mut transport, &limits))
            .await
            .map_err(|e| format!("after {n} messages: {e:?}"))?;
        match frame {
            Incoming::Text(t) => last = std::hint::black_box(t).len(),
            Incoming::Binary(b) => last = std::hint::black_box(b).len(),
            Incoming::Ping(_) | Incoming::Pong(_) => continue,
            other => return Err(format!("after {n} messages: unexpected {other:?}")),
        }
        n += 1;
    }
    let s = t0.elapsed().as_secs_f64();
    if last != size {
        return Err(format!("last message has {last} bytes, expected {size}"));
    }
    Ok(format!(
        "{{\"messages\":{n},\"seconds\":{s},\"msgsPerSec\":{},\"mbPerSec\":{}}}",
        n as f64 / s,
        (n * size) as f64 / s / 1e6
    ))
}

fn tcp_echo(args: &[String]) -> Result<String, String> {
    let port = num(args, 0, "port")?;
    let count = num(args, 1, "count")?;
    let size = num(args, 2, "size")?;
    let warmup = num(args, 3, "warmup")?;
    let port = u16::try_from(port).map_err(|e| e.to_string())?;
    if count == 0 {
        return Err("count must be at least 1".into());
    }
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let msg = vec![b'x'; size];
    let mut back = vec![0u8; size];
    let mut lat = Vec::with_capacity(count);
    for i in 0..warmup + count {
        let t = Instant::now();
        s.write_all(&msg).map_err(|e| e.to_string())?;
        s.read_exact(&mut back).map_err(|e| e.to_string())?;
        let us = t.elapsed().as_secs_f64() * 1e6;
        if i >= warmup {
            lat.push(us);
        }
    }
    if back != msg {
        return Err("the echo differs from what was sent".into());
    }
    lat.sort_by(f64::total_cmp);
    // The harness's percentile: the ceil(p/100 · n)-th smallest.
    let pct = |p: f64| lat[((p / 100.0 * count as f64).ceil() as usize).clamp(1, count) - 1];
    let mean = lat.iter().sum::<f64>() / count as f64;
    Ok(format!(
        "{{\"roundTrips\":{count},\"p50us\":{},\"p99us\":{},\"meanUs\":{mean}}}",
        pct(50.0),
        pct(99.0)
    ))
}
