//! A connection attempt: its parameters (fixed, or from the client's providers), then TCP, proxy,
//! TLS and the HTTP upgrade, again for each redirect followed, all under one deadline
//! (`connectTimeout`).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use crate::ask;
use crate::connection::ConnConfig;
use crate::errors::{self, ConnError};
use crate::redact::redact_url;
use crate::redirect;
use crate::shared::{AttemptParams, Shared};
use crate::stats::{Gauge, PendingAttempts};
use crate::transport;
use crate::upgrade::{self, Opened};

/// Where an attempt gets its parameters.
pub enum ParamSource {
    Fixed(Arc<AttemptParams>),
    /// Sent by JS after running the user's providers; bounded by the connect timeout.
    Provided(tokio::sync::oneshot::Receiver<Result<AttemptParams, ConnError>>),
}

/// A connection attempt in flight. Dropping it drops whatever part of the
/// attempt exists (socket, half-done handshake): nothing is left running.
pub struct Attempt {
    fut: Pin<Box<dyn Future<Output = Result<Opened, ConnError>> + Send>>,
    /// With `followRedirects`: the addresses redirects led to, until the driver reports them.
    redirects: Option<Arc<Mutex<Vec<String>>>>,
    _gauge: Gauge<PendingAttempts>,
}

impl Attempt {
    /// `js`: the client's JS side, when it has functions to ask (`ConnConfig::asks_js`).
    pub fn start(cfg: &ConnConfig, params: ParamSource, js: Option<ask::Asker>, shared: &Arc<Shared>) -> Self {
        let mut cfg = cfg.clone();
        cfg.js = js;
        let redirects = cfg.max_redirects.map(|_| Arc::new(Mutex::new(Vec::new())));
        let followed = redirects.clone();
        let shared = shared.clone();
        let fut = async move {
            let deadline = tokio::time::Instant::now() + cfg.connect_timeout;
            let attempt = async {
                let params = match params {
                    ParamSource::Fixed(p) => p,
                    ParamSource::Provided(rx) => Arc::new(rx.await.unwrap_or_else(|_| {
                        Err(ConnError::new(errors::ERR_PROVIDER, "the providers were abandoned"))
                    })?),
                };
                connect(&cfg, &params, followed.as_deref(), &shared, deadline).await
            };
            // A refusal's body is read within the deadline (`body::read`), on a timer of the same
            // instant as this one, which is polled after the attempt: the refusal is not lost to it.
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(r) => r,
                Err(_) => Err(ConnError::new(
                    errors::ERR_CONNECT_TIMEOUT,
                    format!("no connection within {} ms", cfg.connect_timeout.as_millis()),
                )),
            }
        };
        Attempt {
            fut: Box::pin(fut),
            redirects,
            _gauge: Gauge::<PendingAttempts>::new(),
        }
    }

    /// Where redirects led since the last call (redacted), for the `redirect` event.
    pub fn take_redirects(&self) -> Vec<String> {
        self.redirects
            .as_ref()
            .map(|r| std::mem::take(&mut *r.lock().unwrap_or_else(|p| p.into_inner())))
            .unwrap_or_default()
    }
}

impl Future for Attempt {
    type Output = Result<Opened, ConnError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.fut.as_mut().poll(cx)
    }
}

/// The attempt: one upgrade, then one per redirect followed (`redirect`), each noted in `followed`.
async fn connect(
    cfg: &ConnConfig,
    params: &AttemptParams,
    followed: Option<&Mutex<Vec<String>>>,
    shared: &Shared,
    deadline: tokio::time::Instant,
) -> Result<Opened, ConnError> {
    let mut result = dial_and_upgrade(cfg, params, deadline).await;
    let Some(max) = cfg.max_redirects else { return result };
    let mut hop: Option<AttemptParams> = None;
    let mut hops = 0;
    loop {
        let refused = match result {
            Ok(opened) => return Ok(opened),
            Err(e) => e,
        };
        let at = hop.as_ref().map_or(&params.url, |h| &h.url);
        let to = match redirect::target(&refused, at) {
            None => return Err(refused),
            Some(to) => to?,
        };
        if hops == max {
            return Err(redirect::too_many(refused, &to, max));
        }
        hops += 1;
        let next = redirect::hop(params, to, cfg.proxy_env.as_deref())?;
        if let Some(f) = followed {
            f.lock().unwrap_or_else(|p| p.into_inner()).push(redact_url(&next.url));
        }
        // Each hop is an event for JS (`redirect`): while JS is behind on the client's events, the
        // next hop waits (within the deadline), as a reconnect does, so that a server redirecting
        // without end cannot pile its addresses up behind a busy JS thread.
        std::future::poll_fn(|cx| match shared.read_gate.js_behind(cx) {
            true => Poll::Pending,
            false => Poll::Ready(()),
        })
        .await;
        result = dial_and_upgrade(cfg, &next, deadline).await;
        hop = Some(next);
    }
}

/// One hop: the byte stream to `params.url` (TCP, a proxy, TLS), then the upgrade over it.
async fn dial_and_upgrade(
    cfg: &ConnConfig,
    params: &AttemptParams,
    deadline: tokio::time::Instant,
) -> Result<Opened, ConnError> {
    let transport = transport::open(
        &params.url,
        params.proxy.as_ref(),
        cfg.dial,
        cfg.js.as_ref().filter(|_| cfg.js_lookup),
        cfg.js.as_ref(),
        &cfg.tls_config,
        &cfg.tls,
    )
    .await?;
    upgrade::handshake(transport, params, cfg.deflate.as_ref(), deadline).await
}
