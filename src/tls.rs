//! TLS for `wss:`: the rustls client config that a client's `tls` options make (one config
//! shared by the clients with the same settings), the certificate checks that Node's options ask
//! for, and which errors TLS reports mean what.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::sign::{CertifiedKey, Signer, SigningKey, SingleCertAndKey};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureAlgorithm, SignatureScheme,
};

use crate::errors::{self, ConnError};
use crate::interned::{InternTable, Interned};

/// TLS settings of a client: built once, used by every `wss://` attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsOptions {
    /// Trusted CAs, PEM: with `ca_only`, the only ones (Node's `ca` replaces its bundled roots),
    /// else in addition to the default roots (a PKCS#12 file's other certificates).
    pub ca: Vec<String>,
    pub ca_only: bool,
    pub reject_unauthorized: bool,
    pub servername: Option<String>,
    /// Our certificate chain (PEM, leaf first) and its private key (PKCS#8 PEM, unencrypted),
    /// for servers that ask for one. Checked by JS: both or neither, parsed, a matching pair.
    pub client_auth: Option<ClientAuth>,
    /// The client has a `tls.checkServerIdentity` function: with `reject_unauthorized`, it decides
    /// whether a verified chain is the server's, in place of the host name check.
    pub check_identity: bool,
    /// `minVersion` and `maxVersion` as TLS 1.x minor numbers (2 or 3; checked by JS, the minimum
    /// raised to 2): the versions offered. `0, 0` is rustls's default, both.
    pub versions: (u8, u8),
    /// `tls.ciphers`: IANA cipher suite numbers, in order of preference (empty: rustls's default).
    /// A version none of them is for is not offered.
    pub cipher_suites: Vec<u16>,
    /// `tls.ecdhCurve`: IANA named group numbers, in order of preference (empty: rustls's default).
    pub kx_groups: Vec<u16>,
    /// `tls.sigalgs`: IANA signature scheme numbers, in order of preference (empty: rustls's
    /// default): the signatures accepted from the server and made with our key.
    pub sig_schemes: Vec<u16>,
}

impl TlsOptions {
    /// Whether the client's `checkServerIdentity` is asked after each handshake (as Node, not
    /// when certificates are not checked at all).
    pub fn asks_identity(&self) -> bool {
        self.check_identity && self.reject_unauthorized
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientAuth {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for ClientAuth {
    /// The key is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientAuth { .. }")
    }
}

/// The default roots, and the certificates `NODE_EXTRA_CA_CERTS` added to them.
type DefaultRoots = (Arc<RootCertStore>, Arc<[CertificateDer<'static>]>);

static DEFAULT_ROOTS: OnceLock<DefaultRoots> = OnceLock::new();

/// Why a client config could not be made.
#[derive(Debug)]
pub enum ConfigError {
    /// The settings cannot make one: every attempt would fail alike.
    Settings(String),
    /// The process is short of a resource (file descriptors, memory) to read the CA certificates:
    /// a later attempt may succeed, and nothing of this one is kept.
    ShortOfResources(String),
}

impl From<String> for ConfigError {
    fn from(why: String) -> Self {
        ConfigError::Settings(why)
    }
}

impl From<&str> for ConfigError {
    fn from(why: &str) -> Self {
        ConfigError::Settings(why.to_owned())
    }
}

/// Whether a file could not be read for want of a resource the process may get back (the
/// descriptor limit, memory), rather than because of the file itself.
fn short_of_resources(e: &io::Error) -> bool {
    if e.kind() == io::ErrorKind::OutOfMemory {
        return true;
    }
    let Some(code) = e.raw_os_error() else {
        return false;
    };
    if cfg!(windows) {
        // ERROR_TOO_MANY_OPEN_FILES, ERROR_NOT_ENOUGH_MEMORY, ERROR_OUTOFMEMORY.
        matches!(code, 4 | 8 | 14)
    } else {
        // EMFILE, ENFILE, ENOMEM: the same numbers on Linux, macOS and the BSDs.
        matches!(code, 24 | 23 | 12)
    }
}

/// The webpki roots, the system's CA bundle and, as in Node, the certificates of the file
/// `NODE_EXTRA_CA_CERTS` names: loaded once per process, when a config first needs them (Node reads
/// the variable at startup: a value set later in `process.env` counts here, not in Node). The
/// extra certificates come back on their own too: a server's own certificate listed there is
/// trusted as one listed in `tls.ca` is, also when it is a CA's (`openssl req -x509`). A load that
/// a shortage of file descriptors cut short is an error and is not kept (a missing or unreadable
/// file is passed over, as Node passes it over with a warning at startup).
fn default_roots() -> Result<DefaultRoots, ConfigError> {
    if let Some(roots) = DEFAULT_ROOTS.get() {
        return Ok(roots.clone());
    }
    let short = |e: &io::Error, path: &std::path::Path| {
        ConfigError::ShortOfResources(format!("cannot read the CA certificates in {}: {e}", path.display()))
    };
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        if let rustls_native_certs::ErrorKind::Io { inner, path } = &e.kind {
            if short_of_resources(inner) {
                return Err(short(inner, path));
            }
        }
    }
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    let mut extra = Vec::new();
    if let Some(path) = std::env::var_os("NODE_EXTRA_CA_CERTS") {
        match std::fs::read(&path) {
            Ok(pem) => {
                for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                    if roots.add(cert.clone()).is_ok() {
                        extra.push(cert);
                    }
                }
            }
            Err(e) if short_of_resources(&e) => return Err(short(&e, path.as_ref())),
            // Missing, or holding no certificate: passed over, as Node warned of it at startup.
            Err(_) => {}
        }
    }
    Ok(DEFAULT_ROOTS.get_or_init(|| (Arc::new(roots), extra.into())).clone())
}

/// A rustls config, shared by the clients with the same TLS settings while any of them holds it.
pub type SharedClientConfig = Arc<Interned<TlsOptions, Arc<ClientConfig>>>;

/// Configs in use, by TLS settings (the server name aside, which is not part of a config).
static SHARED_CONFIGS: InternTable<TlsOptions, Arc<ClientConfig>> = InternTable::new();

/// Clients with the same TLS settings share one rustls config while any of them uses it:
/// its root store (webpki + the system bundle) is about 100 KiB, too much to copy per client,
/// and its session cache then lets a client resume another's TLS session, as Node's agent does.
pub fn shared_client_config(opts: &TlsOptions) -> Result<SharedClientConfig, ConfigError> {
    let key = TlsOptions {
        servername: None,
        ..opts.clone()
    };
    if let Some(config) = SHARED_CONFIGS.get(&key) {
        return Ok(config);
    }
    // One built at a time, and looked for again once this one may build: drivers on several
    // workers that miss together must share the first one's, not each build and keep their own.
    static BUILDING: Mutex<()> = Mutex::new(());
    let _building = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(config) = SHARED_CONFIGS.get(&key) {
        return Ok(config);
    }
    Ok(SHARED_CONFIGS.insert(Arc::new(key), client_config(opts)?))
}

/// rustls configs alive (`clientStats().tlsConfigs`).
pub fn live_tls_configs() -> usize {
    SHARED_CONFIGS.known_keys()
}

fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, ConfigError> {
    let provider = Arc::new(crypto_provider(opts));
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = match opts.versions {
        (0, 0) => rustls::DEFAULT_VERSIONS.to_vec(),
        (min, max) => [(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
            .into_iter()
            .filter(|&(minor, _)| minor >= min.max(2) && minor <= max)
            .map(|(_, version)| version)
            .collect(),
    };
    // As Node with a cipher list that names no suite of a version: that version is not offered.
    let versions: Vec<_> = versions
        .into_iter()
        .filter(|v| provider.cipher_suites.iter().any(|s| s.version() == *v))
        .collect();
    if versions.is_empty() {
        return Err("no TLS version between `tls.minVersion` and `tls.maxVersion` that `tls.ciphers` has a suite for (rustls has TLS 1.2 and 1.3)".into());
    }
    if provider.kx_groups.is_empty() {
        return Err("`tls.ecdhCurve` names no key exchange that rustls has".into());
    }
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?;
    let verifier = server_verifier(opts, &provider)?;
    let schemes: Vec<SignatureScheme> = opts.sig_schemes.iter().map(|&n| SignatureScheme::from(n)).collect();
    let verifier = match schemes.is_empty() {
        true => verifier,
        false => Arc::new(NarrowedVerifier {
            inner: verifier,
            schemes: schemes.clone(),
        }),
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    let config = match client_auth(opts)? {
        Some((chain, key)) => certified_key(chain, key, &provider).map(|mut certified| {
            if !schemes.is_empty() {
                certified.key = Arc::new(NarrowedKey {
                    inner: certified.key,
                    schemes,
                });
            }
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
        }),
        None => Ok(builder.with_client_cert_resolver(Arc::new(NoClientCert))),
    }
    // rustls's message names the problem (an unsupported key type, say), never the key.
    .map_err(|e| format!("invalid client certificate or key: {e}"))?;
    Ok(Arc::new(config))
}

/// The client certificate and its key, refused only when the key is not the leaf's. Where webpki
/// cannot parse the leaf to compare them (an X.509 v1 certificate, as `openssl x509 -req` makes one
/// without extensions, which OpenSSL servers take), it is presented as given, as Node presents it:
/// lib/tls.js has compared them with node:crypto already.
fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, rustls::Error> {
    let certified = CertifiedKey::new(chain, provider.key_provider.load_private_key(key)?);
    match certified.keys_match() {
        Err(e @ rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(e),
        _ => Ok(certified),
    }
}

/// How the server's certificate is checked: `rejectUnauthorized`, `ca` and `checkServerIdentity`
/// as Node reads them.
fn server_verifier(
    opts: &TlsOptions,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, ConfigError> {
    let unchecked = CertCheck {
        provider: provider.clone(),
        roots: None,
        listed: Vec::new(),
        check_name: false,
    };
    if !opts.reject_unauthorized {
        return Ok(Arc::new(unchecked));
    }
    let (mut roots, mut listed) = match opts.ca_only {
        true => (RootCertStore::empty(), Vec::new()),
        false => {
            let (roots, extra) = default_roots()?;
            ((*roots).clone(), extra.to_vec())
        }
    };
    for pem in &opts.ca {
        let mut found = false;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("invalid CA certificate: {e:?}"))?;
            roots
                .add(cert.clone())
                .map_err(|e| format!("invalid CA certificate: {e}"))?;
            listed.push(cert);
            found = true;
        }
        if !found {
            return Err("a `tls.ca` entry holds no PEM certificate".into());
        }
    }
    Ok(Arc::new(CertCheck {
        roots: Some(roots),
        listed,
        check_name: !opts.check_identity,
        ..unchecked
    }))
}

/// ring's algorithms, narrowed and ordered by `tls.ciphers` and `tls.ecdhCurve`.
fn crypto_provider(opts: &TlsOptions) -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring;
    let mut provider = ring::default_provider();
    if !opts.cipher_suites.is_empty() {
        provider.cipher_suites = named(&opts.cipher_suites, ring::ALL_CIPHER_SUITES, |s| s.suite());
    }
    if !opts.kx_groups.is_empty() {
        provider.kx_groups = named(&opts.kx_groups, ring::ALL_KX_GROUPS, |g| g.name());
    }
    provider
}

/// The algorithms of `all` that `codes` name (IANA numbers), in the order named; numbers ring
/// has no algorithm for are skipped.
fn named<T: Copy, C: From<u16> + PartialEq>(codes: &[u16], all: &[T], code_of: impl Fn(&T) -> C) -> Vec<T> {
    codes
        .iter()
        .filter_map(|&n| all.iter().find(|a| code_of(a) == C::from(n)).copied())
        .collect()
}

type ClientAuthDer = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// `tls.cert` and `tls.key`, parsed. Errors name the option, never show its content.
fn client_auth(opts: &TlsOptions) -> Result<Option<ClientAuthDer>, String> {
    let Some(auth) = &opts.client_auth else {
        return Ok(None);
    };
    let chain = CertificateDer::pem_slice_iter(auth.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "`tls.cert` is not PEM certificates".to_string())?;
    if chain.is_empty() {
        return Err("`tls.cert` holds no PEM certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(auth.key.as_bytes())
        .map_err(|_| "`tls.key` is not a PEM private key".to_string())?;
    Ok(Some((chain, key)))
}

/// The server certificate checks, as Node makes them with OpenSSL (`roots` None, for
/// `rejectUnauthorized: false`: none). The handshake's signatures are checked either way.
/// - The chain, up to one of `roots`. A certificate that is one of `tls.ca`'s, byte for byte, is
///   its own chain, a CA's too (`basicConstraints` `CA:TRUE`, what `openssl req -x509` makes by
///   default): OpenSSL trusts it, webpki refuses a CA certificate as a server's
///   (`CaUsedAsEndEntity`), and that refusal alone is overruled for it. webpki checked its validity
///   period before (a unit test holds it to that order); the handshake's signature proves that
///   the server holds its key.
/// - The host name, unless `tls.checkServerIdentity` decides it once the handshake is done
///   (`check_name` false; Node calls that function instead of its own check): webpki's check of
///   the `subjectAltName`, then Node's fallback to the subject's common name for a certificate
///   that names no DNS name (`openssl req -x509 -subj /CN=localhost`).
#[derive(Debug)]
struct CertCheck {
    provider: Arc<rustls::crypto::CryptoProvider>,
    roots: Option<RootCertStore>,
    listed: Vec<CertificateDer<'static>>,
    check_name: bool,
}

impl ServerCertVerifier for CertCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        let algorithms = self.provider.signature_verification_algorithms.all;
        match rustls::client::verify_server_cert_signed_by_trust_anchor(&cert, roots, intermediates, now, algorithms) {
            Ok(()) => {}
            Err(e) if is_ca_as_server(&e) && self.listed.iter().any(|c| c.as_ref() == end_entity.as_ref()) => {}
            Err(e) => return Err(e),
        }
        if self.check_name {
            if let Err(refused) = rustls::client::verify_server_name(&cert, server_name) {
                if !(is_wrong_name(&refused) && common_name_matches(end_entity, server_name)) {
                    return Err(refused);
                }
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        match rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms) {
            Err(_) if self.roots.is_none() => tls12_signed_by(
                &key_of_unparsed(cert)?,
                message,
                dss.scheme,
                dss.signature(),
                algorithms,
            ),
            checked => checked,
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        match rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms) {
            Err(_) if self.roots.is_none() => {
                rustls::crypto::verify_tls13_signature_with_raw_key(message, &key_of_unparsed(cert)?, dss, algorithms)
            }
            checked => checked,
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The public key of a certificate webpki cannot parse: an X.509 v1 certificate (no extensions:
/// what `openssl x509 -req` without `-extfile` makes), a critical extension it does not know...
/// OpenSSL takes them. Read only when nothing is verified (`rejectUnauthorized: false`) and
/// webpki's check failed, as Node takes any certificate then: the handshake's signature is still
/// checked with its key (a server must hold the key to sign).
fn key_of_unparsed(cert: &CertificateDer<'_>) -> Result<SubjectPublicKeyInfoDer<'static>, rustls::Error> {
    public_key_info(cert)
        .map(|spki| SubjectPublicKeyInfoDer::from(spki.to_vec()))
        .ok_or(rustls::Error::InvalidCertificate(CertificateError::BadEncoding))
}

/// A TLS 1.2 handshake signature checked with `spki`, as `rustls::crypto::verify_tls12_signature`
/// checks it with a certificate's key: its scheme may name several algorithms, tried in turn (a
/// scheme of no known algorithm has none in the mapping). TLS 1.3's has rustls's
/// `verify_tls13_signature_with_raw_key`.
fn tls12_signed_by(
    spki: &SubjectPublicKeyInfoDer<'_>,
    message: &[u8],
    scheme: SignatureScheme,
    signature: &[u8],
    algorithms: &rustls::crypto::WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let bad = rustls::Error::InvalidCertificate;
    let key = webpki::RawPublicKeyEntity::try_from(spki).map_err(|_| bad(CertificateError::BadEncoding))?;
    let Some((_, candidates)) = algorithms.mapping.iter().find(|(s, _)| *s == scheme) else {
        return Err(rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into());
    };
    if candidates
        .iter()
        .any(|alg| key.verify_signature(*alg, message, signature).is_ok())
    {
        Ok(HandshakeSignatureValid::assertion())
    } else {
        Err(bad(CertificateError::BadSignature))
    }
}

/// A certificate's `subjectPublicKeyInfo`, whole (tag and length included): the seventh field of
/// its `tbsCertificate` counting the optional `[0]` version, the sixth without it (RFC 5280 §4.1).
fn public_key_info<'a>(cert: &'a CertificateDer<'_>) -> Option<&'a [u8]> {
    let (0x30, certificate) = Der(cert.as_ref()).next()? else {
        return None;
    };
    let (0x30, tbs) = Der(certificate).next()? else {
        return None;
    };
    let mut fields = Der(tbs);
    let mut rest = fields.0;
    let mut field = fields.next()?;
    if field.0 == 0xa0 {
        rest = fields.0;
        field = fields.next()?;
    }
    // After the serialNumber: signature, issuer, validity, subject, and the key.
    for _ in 0..5 {
        rest = fields.0;
        field = fields.next()?;
    }
    let key = &rest[..rest.len() - fields.0.len()];
    (field.0 == 0x30).then_some(key)
}

fn webpki_error(e: &rustls::Error) -> Option<&webpki::Error> {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => other.0.downcast_ref::<webpki::Error>(),
        _ => None,
    }
}

fn is_ca_as_server(e: &rustls::Error) -> bool {
    matches!(webpki_error(e), Some(webpki::Error::CaUsedAsEndEntity))
}

/// webpki refused an X.509 v1 certificate (it parses v3 only).
fn is_v1(e: &rustls::Error) -> bool {
    matches!(webpki_error(e), Some(webpki::Error::UnsupportedCertVersion))
}

fn is_wrong_name(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        )
    )
}

/// Node's fallback: `server_name` is a host name (an IP address is matched against the
/// `subjectAltName` alone), the certificate names no DNS name, and one of its subject's common
/// names is that host, or a pattern of it with one `*` in its first label (as in a DNS name).
fn common_name_matches(end_entity: &CertificateDer<'_>, server_name: &ServerName<'_>) -> bool {
    let ServerName::DnsName(host) = server_name else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(end_entity) else {
        return false;
    };
    if cert.valid_dns_names().next().is_some() {
        return false;
    }
    let matched = common_names(cert.subject()).any(|cn| host_matches(host.as_ref(), cn));
    matched
}

/// The common names (OID 2.5.4.3) in a certificate's subject (its DER content: a sequence of
/// sets of `{ type, value }`), as ASCII text: other encodings cannot be a host name. Written here:
/// webpki keeps its DER reader private, and this reads one field.
fn common_names(subject: &[u8]) -> impl Iterator<Item = &str> {
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    // Text types a host name may be in: UTF8String, PrintableString, IA5String.
    const TEXT: [u8; 3] = [0x0c, 0x13, 0x16];
    Der(subject)
        .filter(|&(tag, _)| tag == 0x31)
        .flat_map(|(_, set)| Der(set))
        .filter(|&(tag, _)| tag == 0x30)
        .filter_map(|(_, attribute)| {
            let mut fields = Der(attribute);
            match (fields.next(), fields.next()) {
                (Some((0x06, COMMON_NAME)), Some((tag, value))) if TEXT.contains(&tag) && value.is_ascii() => {
                    std::str::from_utf8(value).ok()
                }
                _ => None,
            }
        })
}

/// DER's tag-length-value items, one after the other; ends at the first malformed one.
struct Der<'a>(&'a [u8]);

impl<'a> Iterator for Der<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = match first {
            0..=0x7f => (usize::from(first), rest),
            // Long form: 1 to 4 length bytes (a certificate is far smaller than 4 GiB).
            0x81..=0x84 => {
                let n = usize::from(first & 0x7f);
                let bytes = rest.get(..n)?;
                (
                    bytes.iter().fold(0usize, |len, &b| (len << 8) | usize::from(b)),
                    &rest[n..],
                )
            }
            _ => return None,
        };
        let value = rest.get(..len)?;
        self.0 = &rest[len..];
        Some((tag, value))
    }
}

/// Whether `pattern` (a common name) names `host`, case aside: the same labels, or one `*` in the
/// first label standing for any characters of it (`*.example.com`, `api-*.example.com`), with at
/// least three labels (no `*.com`) and not in an IDNA label (`xn--`).
fn host_matches(host: &str, pattern: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    let (hosts, patterns): (Vec<&str>, Vec<&str>) = (host.split('.').collect(), pattern.split('.').collect());
    if hosts.len() != patterns.len()
        || patterns
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_graphic()))
    {
        return false;
    }
    if hosts[1..] != patterns[1..] {
        return false;
    }
    let (first, wanted) = (hosts[0], patterns[0]);
    match wanted.split_once('*') {
        None => first == wanted,
        Some(_) if wanted.starts_with("xn--") || patterns.len() < 3 => false,
        Some((_, suffix)) if suffix.contains('*') => false,
        Some((prefix, suffix)) => {
            first.len() >= prefix.len() + suffix.len() && first.starts_with(prefix) && first.ends_with(suffix)
        }
    }
}

/// `tls.sigalgs` for the server's signatures: only the schemes named are offered (in the
/// `signature_algorithms` extension, in their order) and accepted. The certificate chain's own
/// signatures are checked by `inner` as before: OpenSSL does not narrow those either.
#[derive(Debug)]
struct NarrowedVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    schemes: Vec<SignatureScheme>,
}

impl NarrowedVerifier {
    fn offered(&self, dss: &DigitallySignedStruct) -> Result<(), rustls::Error> {
        match self.schemes.contains(&dss.scheme) {
            true => Ok(()),
            false => Err(rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into()),
        }
    }
}

impl ServerCertVerifier for NarrowedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.offered(dss)?;
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.offered(dss)?;
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// `tls.sigalgs` for our own signature (mutual TLS): the key signs only with a scheme named, of
/// those the server offers. None left: rustls sends no certificate, and the server decides.
#[derive(Debug)]
struct NarrowedKey {
    inner: Arc<dyn SigningKey>,
    schemes: Vec<SignatureScheme>,
}

impl SigningKey for NarrowedKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let both: Vec<SignatureScheme> = offered.iter().copied().filter(|s| self.schemes.contains(s)).collect();
        self.inner.choose_scheme(&both)
    }

    fn public_key(&self) -> Option<rustls::pki_types::SubjectPublicKeyInfoDer<'_>> {
        self.inner.public_key()
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.inner.algorithm()
    }
}

thread_local! {
    /// Set by `NoClientCert` when a server asks for our certificate within the handshake step this
    /// thread is running (`NotingRequest` reads it around each step).
    static ASKED_FOR_CERTIFICATE: Cell<bool> = const { Cell::new(false) };
}

/// No client certificate, as rustls's own resolver, but it notes that the server asked for one:
/// a TLS 1.2 server refuses its absence with a bare `handshake_failure` alert, which then means
/// "the server requires a client certificate" (TLS 1.3 says `certificate_required`).
#[derive(Debug)]
struct NoClientCert;

impl ResolvesClientCert for NoClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        ASKED_FOR_CERTIFICATE.with(|asked| asked.set(true));
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// A TLS handshake, and whether the server asked it for a client certificate it did not have:
/// each step runs on one thread, inside this poll, so the thread's flag is this handshake's.
pub struct NotingRequest<F> {
    handshake: Pin<Box<F>>,
    asked: bool,
}

impl<F: Future> NotingRequest<F> {
    pub fn new(handshake: F) -> Self {
        NotingRequest {
            handshake: Box::pin(handshake),
            asked: false,
        }
    }
}

impl<F: Future> Future for NotingRequest<F> {
    type Output = (F::Output, bool);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        ASKED_FOR_CERTIFICATE.with(|asked| asked.set(false));
        let polled = self.handshake.as_mut().poll(cx);
        self.asked |= ASKED_FOR_CERTIFICATE.with(|asked| asked.replace(false));
        polled.map(|out| (out, self.asked))
    }
}

/// A handshake's error: as `tls_error`, but a bare `handshake_failure` after the server asked for
/// the client certificate we do not have says so.
pub fn handshake_error(e: io::Error, asked_for_certificate: bool) -> ConnError {
    let failed = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|tls| {
            matches!(
                tls,
                rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure)
            )
        });
    if failed && asked_for_certificate {
        return requires_certificate();
    }
    tls_error(e)
}

fn requires_certificate() -> ConnError {
    ConnError::new(
        errors::ERR_TLS_CERT,
        "TLS handshake failed: the server requires a client certificate (tls.cert and tls.key)",
    )
}

/// What a TLS error of the handshake means for the client: a certificate refused either way is
/// `ERR_TLS_CERT`, which the default policy does not retry.
pub fn tls_error(e: io::Error) -> ConnError {
    classified(e, "TLS handshake failed")
}

/// As `tls_error`, other errors worded `failed` (the handshake's, or what came after it).
fn classified(e: io::Error, failed: &str) -> ConnError {
    use rustls::AlertDescription as Alert;
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return ConnError::new(errors::ERR_TLS, format!("{failed}: {e}"));
    };
    match tls {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => ConnError::new(
            errors::ERR_TLS_CERT,
            format!("TLS handshake failed: {e}{}", untrusted_hint(tls)),
        ),
        // Only a server that asks for our certificate sends these (in TLS 1.3 after our side of
        // the handshake, while the upgrade request is on its way). A certificate refused either
        // way is ERR_TLS_CERT, which the default policy does not retry.
        rustls::Error::AlertReceived(Alert::CertificateRequired) => requires_certificate(),
        rustls::Error::AlertReceived(
            alert @ (Alert::BadCertificate
            | Alert::UnsupportedCertificate
            | Alert::CertificateRevoked
            | Alert::CertificateExpired
            | Alert::CertificateUnknown
            | Alert::UnknownCA),
        ) => ConnError::new(
            errors::ERR_TLS_CERT,
            format!("TLS handshake failed: the server refused our client certificate ({alert:?})"),
        ),
        _ => ConnError::new(errors::ERR_TLS, format!("{failed}: {e}")),
    }
}

/// What a developer whose server has a self-signed or private CA's certificate can do: the first
/// error most meet, which rustls names by its checker's terms.
fn untrusted_hint(e: &rustls::Error) -> &'static str {
    if is_ca_as_server(e) {
        " (the server's certificate is a CA's, as a self-signed one made by `openssl req -x509` is: give it in tls.ca to trust it)"
    } else if is_v1(e) {
        " (the server's certificate is X.509 v1, and only v3 certificates can be verified: reissue it with an extension, as `openssl x509 -req` makes one with `-extfile` naming its subjectAltName; tls.rejectUnauthorized false takes it unverified)"
    } else if matches!(e, rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) {
        " (no trusted CA issued the server's certificate: a self-signed one or a private CA's is trusted when given in tls.ca or NODE_EXTRA_CA_CERTS)"
    } else {
        ""
    }
}

/// An I/O error of a `wss:` connection after its handshake (during the upgrade) that TLS
/// reported (an alert, a bad record), as the handshake's errors are (TLS 1.3's client
/// authentication ends there); any other comes back.
pub fn tls_failure(e: io::Error) -> Result<ConnError, io::Error> {
    if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
        Ok(classified(e, "TLS failed after the handshake"))
    } else {
        Err(e)
    }
}

/// For tests: a self-signed certificate for `localhost` and its key (PEM), made with openssl as a
/// developer makes one (a CA's, as `openssl req -x509` makes it by default).
#[cfg(test)]
pub fn self_signed_for_localhost(tag: &str) -> (String, String) {
    let dir = std::env::temp_dir().join(format!("redial-ws-tls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let pems = (
        std::fs::read_to_string(&cert).unwrap(),
        std::fs::read_to_string(&key).unwrap(),
    );
    std::fs::remove_dir_all(&dir).unwrap();
    pems
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As OpenSSL: a server certificate listed in `tls.ca` is trusted as its own chain, a CA's
    /// included, within its validity period and for its names only.
    #[test]
    fn a_self_signed_ca_certificate_listed_in_ca_is_the_servers() {
        let (listed, other) = (
            self_signed_for_localhost("listed").0,
            self_signed_for_localhost("other").0,
        );
        let der = CertificateDer::from_pem_slice(listed.as_bytes()).unwrap();
        let provider = Arc::new(crypto_provider(&TlsOptions::default()));
        let name = |n: &str| ServerName::try_from(n.to_string()).unwrap();
        let check = |ca: &str, identity: bool, host: &str, now: UnixTime| {
            let opts = TlsOptions {
                ca: vec![ca.to_string()],
                ca_only: true,
                reject_unauthorized: true,
                check_identity: identity,
                ..TlsOptions::default()
            };
            server_verifier(&opts, &provider)
                .unwrap()
                .verify_server_cert(&der, &[], &name(host), &[], now)
        };
        let now = UnixTime::now();
        assert!(check(&listed, false, "localhost", now).is_ok());
        assert!(check(&listed, false, "example.com", now).is_err(), "its names only");
        assert!(
            check(&listed, true, "example.com", now).is_ok(),
            "checkServerIdentity decides the name"
        );
        assert!(
            check(&other, false, "localhost", now).is_err(),
            "another CA's certificate"
        );
        let in_2100 = UnixTime::since_unix_epoch(std::time::Duration::from_secs(4_102_444_800));
        assert!(check(&listed, false, "localhost", in_2100).is_err(), "expired");
        assert!(check(&listed, true, "localhost", in_2100).is_err(), "expired");
        // What is overruled: webpki's refusal of a CA as a server, and nothing else.
        let roots = RootCertStore {
            roots: vec![webpki::anchor_from_trusted_cert(&der).unwrap().to_owned()],
        };
        let cert = rustls::server::ParsedCertificate::try_from(&der).unwrap();
        let algorithms = provider.signature_verification_algorithms.all;
        let chain =
            |now| rustls::client::verify_server_cert_signed_by_trust_anchor(&cert, &roots, &[], now, algorithms);
        let refusal = chain(now).unwrap_err();
        assert!(is_ca_as_server(&refusal), "{refusal:?}");
        let expired = chain(in_2100).unwrap_err();
        assert!(!is_ca_as_server(&expired), "{expired:?}");
    }

    /// A directory of this process's own for a test's files (the test removes it).
    fn scratch_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("redial-ws-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Runs the openssl command line, which must succeed.
    fn openssl(args: &[&str]) {
        let made = std::process::Command::new("openssl").args(args).output().unwrap();
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    }

    /// An X.509 v1 certificate (webpki refuses it): its key is read by hand, and a TLS 1.2
    /// signature is checked with it as rustls checks one with a parsed certificate's.
    #[test]
    fn an_x509_v1_certificates_key_checks_the_handshakes_signature() {
        let dir = scratch_dir("v1");
        let f = |name: &str| dir.join(name).to_str().unwrap().to_string();
        let new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        let der = |name: &str| CertificateDer::from_pem_slice(std::fs::read(f(name)).unwrap().as_slice()).unwrap();
        for k in ["a", "b"] {
            let (key, csr, v1) = (
                f(&format!("{k}.key")),
                f(&format!("{k}.csr")),
                f(&format!("{k}-v1.pem")),
            );
            openssl(
                &[
                    &["req", "-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"][..],
                    &new_key,
                ]
                .concat(),
            );
            openssl(&["x509", "-req", "-in", &csr, "-signkey", &key, "-days", "1", "-out", &v1]);
        }
        let (key_a, message) = (f("a.key"), f("message"));
        openssl(&[
            "req",
            "-x509",
            "-key",
            &key_a,
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-out",
            &f("a-v3.pem"),
        ]);
        std::fs::write(&message, b"the handshake's transcript").unwrap();
        openssl(&["dgst", "-sha256", "-sign", &key_a, "-out", &f("signature"), &message]);
        let signature = std::fs::read(f("signature")).unwrap();
        let (v1_a, v1_b, v3_a) = (der("a-v1.pem"), der("b-v1.pem"), der("a-v3.pem"));
        std::fs::remove_dir_all(&dir).unwrap();

        let refused = rustls::server::ParsedCertificate::try_from(&v1_a)
            .err()
            .expect("webpki parses v3 only");
        assert!(is_v1(&refused), "{refused:?}");
        let parsed_v3 = rustls::server::ParsedCertificate::try_from(&v3_a).unwrap();
        assert_eq!(
            key_of_unparsed(&v1_a).unwrap(),
            parsed_v3.subject_public_key_info(),
            "the key read by hand is the key webpki reads from the same key's v3 certificate"
        );

        let provider = crypto_provider(&TlsOptions::default());
        let algorithms = &provider.signature_verification_algorithms;
        let check = |cert: &CertificateDer<'_>, message: &[u8], scheme| {
            tls12_signed_by(&key_of_unparsed(cert).unwrap(), message, scheme, &signature, algorithms)
        };
        let transcript = b"the handshake's transcript";
        assert!(check(&v1_a, transcript, SignatureScheme::ECDSA_NISTP256_SHA256).is_ok());
        assert!(
            check(&v1_b, transcript, SignatureScheme::ECDSA_NISTP256_SHA256).is_err(),
            "another key"
        );
        assert!(check(&v1_a, b"another transcript", SignatureScheme::ECDSA_NISTP256_SHA256).is_err());
        assert!(
            check(&v1_a, transcript, SignatureScheme::ED25519).is_err(),
            "another scheme"
        );
        assert!(key_of_unparsed(&CertificateDer::from(vec![0x30, 0x03, 0x30, 0x01, 0x00])).is_err());
    }

    /// Node's host name fallback to the common name, for a certificate with no DNS name: as
    /// OpenSSL and Node accept them, and no further.
    #[test]
    fn a_certificate_with_no_dns_name_is_matched_by_its_common_name() {
        let dir = scratch_dir("cn");
        let f = |name: &str| dir.join(name).to_str().unwrap().to_string();
        let new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        for ca in ["ca", "other"] {
            let (key, pem, subj) = (
                f(&format!("{ca}.key")),
                f(&format!("{ca}.pem")),
                format!("/CN=test {ca}"),
            );
            let args = [
                "req", "-x509", "-days", "1", "-keyout", &key, "-out", &pem, "-subj", &subj,
            ];
            openssl(&[&args[..], &new_key, &["-addext", "basicConstraints=critical,CA:TRUE"]].concat());
        }
        // Leaves: (name, subject, extensions, signing CA).
        let leaves = [
            ("cn", "/O=redial-ws/CN=localhost", "basicConstraints=CA:FALSE", "ca"),
            ("wild", "/CN=*.example.com", "basicConstraints=CA:FALSE", "ca"),
            ("san", "/CN=localhost", "subjectAltName=DNS:other.example", "ca"),
            ("ip", "/CN=127.0.0.1", "basicConstraints=CA:FALSE", "ca"),
            ("unknown", "/CN=localhost", "basicConstraints=CA:FALSE", "other"),
        ];
        for (name, subj, ext, ca) in leaves {
            let (key, csr, pem, cnf) = (
                f(&format!("{name}.key")),
                f(&format!("{name}.csr")),
                f(&format!("{name}.pem")),
                f(&format!("{name}.cnf")),
            );
            std::fs::write(&cnf, ext).unwrap();
            openssl(&[&["req", "-keyout", &key, "-out", &csr, "-subj", subj][..], &new_key].concat());
            let (ca_pem, ca_key) = (f(&format!("{ca}.pem")), f(&format!("{ca}.key")));
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                &pem,
                "-extfile",
                &cnf,
            ]);
        }
        let read = |name: &str| std::fs::read_to_string(f(&format!("{name}.pem"))).unwrap();
        let ca = read("ca");
        let leaves: std::collections::HashMap<&str, CertificateDer<'static>> = leaves
            .iter()
            .map(|&(name, ..)| (name, CertificateDer::from_pem_slice(read(name).as_bytes()).unwrap()))
            .collect();
        let leaf = |name: &str| leaves[name].clone();
        std::fs::remove_dir_all(&dir).unwrap();
        let provider = Arc::new(crypto_provider(&TlsOptions::default()));
        let opts = TlsOptions {
            ca: vec![ca],
            ca_only: true,
            reject_unauthorized: true,
            ..TlsOptions::default()
        };
        let verifier = server_verifier(&opts, &provider).unwrap();
        let now = UnixTime::now();
        let verify = |cert: &str, host: &str| {
            let host = ServerName::try_from(host.to_string()).unwrap();
            verifier
                .verify_server_cert(&leaf(cert), &[], &host, &[], now)
                .map(|_| ())
        };
        assert!(verify("cn", "localhost").is_ok());
        assert!(verify("cn", "LOCALHOST.").is_ok());
        assert!(verify("cn", "example.com").is_err());
        assert!(verify("wild", "api.example.com").is_ok());
        assert!(verify("wild", "a.b.example.com").is_err());
        assert!(
            verify("san", "localhost").is_err(),
            "a DNS name in subjectAltName: no fallback"
        );
        assert!(verify("ip", "127.0.0.1").is_err(), "an IP address: subjectAltName only");
        let unknown = verify("unknown", "localhost").unwrap_err();
        assert!(
            matches!(
                unknown,
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            ),
            "{unknown:?}"
        );
        assert_eq!(
            common_names(webpki::EndEntityCert::try_from(&leaf("cn")).unwrap().subject()).collect::<Vec<_>>(),
            ["localhost"]
        );
    }

    #[test]
    fn host_names_match_common_names_as_node_matches_them() {
        let cases = [
            ("localhost", "localhost", true),
            ("a.example.com", "A.Example.COM.", true),
            ("a.example.com", "*.example.com", true),
            ("api-1.example.com", "api-*.example.com", true),
            ("api.example.com", "api-*.example.com", false),
            ("example.com", "*.example.com", false),
            ("a.b.example.com", "*.example.com", false),
            ("example.com", "*.com", false),
            ("a.example.com", "*.*.com", false),
            ("a.example.com", "**.example.com", false),
            ("xn--a.example.com", "xn--*.example.com", false),
            ("a.example.com", "a..com", false),
            ("a.example.com", "a.exam ple.com", false),
            ("localhost", "", false),
        ];
        for (host, pattern, expected) in cases {
            assert_eq!(host_matches(host, pattern), expected, "{host} against {pattern}");
        }
    }

    proptest::proptest! {
        /// A subject is the server's bytes: reading it never panics, whatever they are.
        #[test]
        fn reading_any_subject_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = common_names(&bytes).count();
            let _ = Der(&bytes).count();
        }
    }

    #[test]
    fn ciphers_and_curves_narrow_and_order_what_is_offered() {
        let opts = TlsOptions {
            cipher_suites: vec![0x1303, 0xc02b],
            kx_groups: vec![0x0018, 0x001d],
            ..TlsOptions::default()
        };
        let provider = crypto_provider(&opts);
        let suites: Vec<u16> = provider.cipher_suites.iter().map(|s| s.suite().into()).collect();
        assert_eq!(suites, [0x1303, 0xc02b]);
        let groups: Vec<u16> = provider.kx_groups.iter().map(|g| g.name().into()).collect();
        assert_eq!(groups, [0x0018, 0x001d]);
        // TLS 1.3 suites alone: TLS 1.2 is not offered, so a TLS 1.2 maximum leaves nothing.
        let only13 = TlsOptions {
            cipher_suites: vec![0x1302],
            ..TlsOptions::default()
        };
        assert!(client_config(&only13).is_ok());
        assert!(client_config(&TlsOptions {
            versions: (2, 2),
            ..only13
        })
        .is_err());
        // Empty: ring's defaults, all of them.
        let default = crypto_provider(&TlsOptions::default());
        assert_eq!(
            default.cipher_suites.len(),
            rustls::crypto::ring::ALL_CIPHER_SUITES.len()
        );
    }

    /// `tls.sigalgs`: the schemes offered are the ones named, in order; our key signs only with a
    /// scheme named.
    #[test]
    fn sigalgs_narrow_the_signatures_offered_and_made() {
        use ring::signature::Ed25519KeyPair;
        let provider = Arc::new(crypto_provider(&TlsOptions::default()));
        let schemes = vec![SignatureScheme::RSA_PSS_SHA384, SignatureScheme::ED25519];
        let verifier = NarrowedVerifier {
            inner: Arc::new(CertCheck {
                provider: provider.clone(),
                roots: None,
                listed: Vec::new(),
                check_name: false,
            }),
            schemes: schemes.clone(),
        };
        assert_eq!(verifier.supported_verify_schemes(), schemes);
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let der = PrivateKeyDer::Pkcs8(pkcs8.as_ref().to_vec().into());
        let key = provider.key_provider.load_private_key(der).unwrap();
        let narrowed = |schemes: Vec<SignatureScheme>| NarrowedKey {
            inner: key.clone(),
            schemes,
        };
        let offered = [SignatureScheme::ECDSA_NISTP256_SHA256, SignatureScheme::ED25519];
        assert!(key.choose_scheme(&offered).is_some());
        let signer = narrowed(vec![SignatureScheme::ED25519]).choose_scheme(&offered);
        assert_eq!(signer.map(|s| s.scheme()), Some(SignatureScheme::ED25519));
        assert!(narrowed(vec![SignatureScheme::RSA_PSS_SHA256])
            .choose_scheme(&offered)
            .is_none());
    }

    /// What the server's alerts say of our certificate, and TLS errors that come after the
    /// handshake (TLS 1.3 client authentication), reach JS as TLS errors; other I/O errors do not.
    #[test]
    fn alerts_about_our_certificate_are_certificate_errors() {
        use rustls::AlertDescription as Alert;
        let tls = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let e = tls_failure(tls(rustls::Error::AlertReceived(Alert::CertificateRequired))).unwrap();
        assert_eq!(e.code, errors::ERR_TLS_CERT);
        assert!(e.message.contains("requires a client certificate"), "{}", e.message);
        for alert in [Alert::BadCertificate, Alert::UnknownCA, Alert::CertificateExpired] {
            let e = tls_failure(tls(rustls::Error::AlertReceived(alert))).unwrap();
            assert_eq!(e.code, errors::ERR_TLS_CERT);
            assert!(e.message.contains("refused our client certificate"), "{}", e.message);
        }
        let e = tls_failure(tls(rustls::Error::AlertReceived(Alert::HandshakeFailure))).unwrap();
        assert_eq!(e.code, errors::ERR_TLS);
        assert!(
            e.message.starts_with("TLS failed after the handshake: "),
            "{}",
            e.message
        );
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(tls_failure(reset).unwrap_err().kind(), io::ErrorKind::ConnectionReset);
    }

    /// The key is a secret: a config's debug form never holds it.
    #[test]
    fn tls_options_debug_holds_no_key() {
        let opts = TlsOptions {
            client_auth: Some(ClientAuth {
                cert: "CERT".into(),
                key: "-----BEGIN PRIVATE KEY-----\nSECRET\n-----END PRIVATE KEY-----".into(),
            }),
            ..TlsOptions::default()
        };
        assert!(!format!("{opts:?}").contains("SECRET"));
    }
}
