//! Options as they cross the boundary. `lib/options.js` validates what the user
//! passed (types, ranges, unknown names) and fills in defaults, so every field
//! here is present and in range; the constructor only converts units.

use napi_derive::napi;

#[napi(object)]
pub struct NativeOptions {
    pub min_delay: f64,
    pub max_delay: f64,
    pub factor: f64,
    /// `'full' | 'equal' | 'none'`
    pub jitter: String,
    /// `Infinity` for unlimited.
    pub max_retries: f64,
    pub min_uptime: f64,
    pub connect_timeout: f64,
    /// `net.connect`'s `family`: 0, 4 or 6.
    pub family: u32,
    /// `net.connect`'s `localAddress`: an IP address (checked by JS).
    pub local_address: Option<String>,
    /// `net.connect`'s `localPort`: 0 lets the system choose.
    pub local_port: u32,
    /// `net.connect`'s `autoSelectFamilyAttemptTimeout` (ms) with `autoSelectFamily`; 0 without it.
    pub next_address_after: f64,
    /// A `lookup` function exists in JS: it looks up host names (`lookupAnswer`).
    pub lookup: bool,
    /// `maxRedirects` with `followRedirects`; absent: redirects are not followed.
    pub max_redirects: Option<u32>,
    pub close_timeout: f64,
    pub max_payload: f64,
    /// The longest text message JS can turn into a string (UTF-8 bytes).
    pub max_text_payload: f64,
    /// `skipUTF8Validation`: invalid UTF-8 in text becomes U+FFFD instead of failing the connection.
    pub skip_utf8_validation: bool,
    /// `maxFragments`: 0 for no limit.
    pub max_fragments: f64,
    /// `autoPong`: pings are answered by the connection (false: by JS, with `pong()`).
    pub auto_pong: bool,
    /// 0 disables heartbeats.
    pub ping_interval: f64,
    pub pong_timeout: f64,
    /// `'capped' | 'always' | 'never'`
    pub honor_retry_after: String,
    /// A `shouldReconnect` function exists in JS: ask it on every failure.
    pub ask_policy: bool,
    /// `url`, `headers` or `protocols` is a function: JS supplies them per attempt.
    pub providers: bool,
    pub queue_enabled: bool,
    pub queue_max_messages: f64,
    pub queue_max_bytes: f64,
    pub queue_drop_oldest: bool,
    /// Static headers as `[name, value, name, value, ...]`.
    pub headers: Vec<String>,
    pub protocols: Vec<String>,
    /// Trusted CAs (PEM): with `tls_ca_only`, the only ones; else in addition to the default roots.
    pub tls_ca: Vec<String>,
    /// `tls.ca` was given: it replaces the default roots, as in Node.
    pub tls_ca_only: bool,
    pub tls_reject_unauthorized: bool,
    pub tls_servername: Option<String>,
    /// Our certificate chain (PEM) and its key (PKCS#8 PEM, decrypted by JS), or neither.
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// A `tls.checkServerIdentity` function exists in JS: it decides whether a verified
    /// certificate is the server's (`identityAnswer`).
    pub tls_check_identity: bool,
    /// `tls.minVersion` and `tls.maxVersion` as TLS 1.x minor numbers (2: TLS 1.2, 3: TLS 1.3);
    /// 0 for both: rustls's default versions (1.2 and 1.3).
    pub tls_min_version: u32,
    pub tls_max_version: u32,
    /// `tls.ciphers` as IANA cipher suite numbers in order of preference (checked by JS against
    /// what rustls has); empty: rustls's default.
    pub tls_cipher_suites: Vec<u32>,
    /// `tls.ecdhCurve` as IANA named group numbers in order of preference; empty: rustls's default.
    pub tls_kx_groups: Vec<u32>,
    /// `tls.sigalgs` as IANA signature scheme numbers in order of preference (checked by JS against
    /// what rustls has); empty: rustls's default.
    pub tls_sig_schemes: Vec<u32>,
    /// `http://[user:pass@]host:port` of a CONNECT proxy (already resolved from the environment).
    pub proxy: Option<String>,
    /// With `followRedirects` and no `proxy` option: the proxies for `ws:` and `wss:` and `NO_PROXY`
    /// as JS read them from the environment, for each redirect to decide its own proxy.
    pub proxy_env: Option<Vec<String>>,
    /// permessage-deflate to offer, or none.
    pub per_message_deflate: Option<NativeDeflate>,
}

/// The `perMessageDeflate` option, validated (RFC 7692 parameters).
#[napi(object)]
pub struct NativeDeflate {
    pub threshold: f64,
    pub client_no_context_takeover: bool,
    pub server_no_context_takeover: bool,
    /// Offer `client_max_window_bits` (with `client_max_window_bits` as its value, if any).
    pub offer_client_max_window_bits: bool,
    pub client_max_window_bits: Option<u32>,
    pub server_max_window_bits: Option<u32>,
    /// zlib level, 0-9.
    pub level: u32,
}
