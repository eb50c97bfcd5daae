//! Upstream TLS (origination): a backend with `"tls"` is reached over TLS.
//!
//! ```text
//!  config (control side): "tls": true | {sni, ca, verify, cert, key, alpn}
//!      --read PEM, build-->  ClientTls { base rustls ClientConfig, server name, counters }
//!  worker: connect(2) --> handshake() on the worker's own copy of the config
//!          (its own session store: resumption without a lock shared across
//!          workers) --> TlsConn (client side) --> Io::Tls in the exchange,
//!          the keep-alive pool (TLS connections kept with their session),
//!          the tcp relay; the control thread's health checks use it too
//! ```
//!
//! The record layer is the one of client connections ([`super::session`]):
//! rustls's unbuffered API over the worker's pooled record buffers, so an
//! idle pooled TLS connection holds only rustls's state. Backends without
//! `tls` never get here: their exchange keeps `Io::Ring` and splice.
//!
//! Roots: with no `ca`, the system's trust store through
//! `rustls-native-certs` (the rustls project's crate; it reads the
//! distribution's bundle, /etc/ssl/certs here, honouring SSL_CERT_FILE and
//! SSL_CERT_DIR, so the roots an operator updates with the OS are the ones
//! used). `webpki-roots` was the alternative: a Mozilla bundle compiled into
//! the binary, current only as of the build, and blind to private roots an
//! operator installed system-wide. Loaded once per process (a few hundred
//! certificates) and shared.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use monoio::net::TcpStream;
use monoio::time::Instant;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientSessionMemoryCache, Resumption, UnbufferedClientConnection};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::record::Side;
use super::session::{self, HandshakeError, Sink, Step, TlsConn, Want};

/// Most bytes of server handshake messages held at once (a certificate
/// chain larger than one record is joined in the incoming buffer).
const MAX_HANDSHAKE_BUF: usize = 4 * super::bufs::RECORD_BUF;

/// Sessions remembered per worker and backend TLS setup (rustls's default).
const SESSIONS_PER_WORKER: usize = 256;

/// What a backend's `tls` asks for (paths already made absolute).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientSource {
    /// The name sent as SNI and checked against the certificate; `None`:
    /// the backend's `internal_host` (an IP address is then checked against
    /// the certificate's IP SANs and no SNI is sent).
    pub sni: String,
    pub ca: Option<PathBuf>,
    pub verify: bool,
    /// Client certificate chain and key (mutual TLS toward the backend).
    pub cert: Option<(PathBuf, PathBuf)>,
    pub alpn: Vec<String>,
}

/// A backend's TLS client setup, built when the config is loaded.
pub struct ClientTls {
    /// The shared base; each worker uses its own copy with its own session
    /// store ([`worker_config`]).
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
    pub verify: bool,
    /// Kept across reloads (keyed by route and backend).
    pub counters: Arc<UpstreamTlsCounters>,
    /// Settings and file contents: equal fingerprints, equal setup.
    pub fingerprint: u64,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for ClientTls {}

/// Why an upstream handshake failed (counted per backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The backend's certificate did not verify (unknown CA, wrong name, expired).
    Certificate,
    /// No complete handshake within the connect timeout.
    Timeout,
    /// The backend closed or reset mid-handshake.
    Closed,
    /// Anything else: an alert from the backend, garbage, no common version.
    Protocol,
}

impl UpstreamFailure {
    pub const ALL: [UpstreamFailure; 4] = [
        UpstreamFailure::Certificate,
        UpstreamFailure::Timeout,
        UpstreamFailure::Closed,
        UpstreamFailure::Protocol,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Certificate => "certificate",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Closed => "closed",
            UpstreamFailure::Protocol => "protocol",
        }
    }

    fn of(e: &HandshakeError) -> UpstreamFailure {
        match e {
            HandshakeError::Timeout => UpstreamFailure::Timeout,
            HandshakeError::Closed(_) => UpstreamFailure::Closed,
            HandshakeError::Tls(rustls::Error::InvalidCertificate(_)) => {
                UpstreamFailure::Certificate
            }
            _ => UpstreamFailure::Protocol,
        }
    }
}

/// One backend's upstream handshake figures (relaxed atomics: handshakes
/// are rare next to requests on pooled connections).
#[derive(Debug, Default)]
pub struct UpstreamTlsCounters {
    pub full: AtomicU64,
    pub resumed: AtomicU64,
    failures: [AtomicU64; 4],
}

impl UpstreamTlsCounters {
    pub fn failures(&self, why: UpstreamFailure) -> u64 {
        self.failures[why as usize].load(Relaxed)
    }

    /// `{"handshakes_full":..,"handshakes_resumed":..,"failures":{...}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut f = serde_json::Map::new();
        for why in UpstreamFailure::ALL {
            f.insert(why.as_str().into(), self.failures(why).into());
        }
        serde_json::json!({
            "handshakes_full": self.full.load(Relaxed),
            "handshakes_resumed": self.resumed.load(Relaxed),
            "failures": f,
        })
    }
}

fn counters_for(key: &str) -> Arc<UpstreamTlsCounters> {
    static R: OnceLock<Mutex<HashMap<String, Arc<UpstreamTlsCounters>>>> = OnceLock::new();
    let mut r = R
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    r.entry(key.to_string()).or_default().clone()
}

/// A problem with one field of a backend's `tls` (field name below `tls`).
pub type FieldError = (&'static str, String);

fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static R: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    R.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found
                .errors
                .first()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            return Err(format!(
                "no system root certificates found{why}; give \"ca\" or set SSL_CERT_FILE"
            ));
        }
        Ok(Arc::new(roots))
    })
    .clone()
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

/// Reads the files of `src` and builds the backend's client setup; `key`
/// (route key and backend name) names its counters.
pub fn build(src: &ClientSource, key: &str) -> Result<ClientTls, Vec<FieldError>> {
    let provider: Arc<CryptoProvider> = super::certs::provider();
    let mut errors = Vec::new();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    src.hash(&mut hasher);
    let server_name = match ServerName::try_from(src.sni.clone()) {
        Ok(n) => Some(n),
        Err(e) => {
            errors.push((
                "sni",
                format!("{:?} is not a DNS name or IP address: {e}", src.sni),
            ));
            None
        }
    };
    let roots = match &src.ca {
        Some(path) => (|| {
            let pem = read(path, "CA file")?;
            pem.hash(&mut hasher);
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no CERTIFICATE in the file", path.display()));
            }
            Ok(Arc::new(roots))
        })()
        .map_err(|e| errors.push(("ca", e)))
        .ok(),
        None if src.verify => system_roots().map_err(|e| errors.push(("ca", e))).ok(),
        None => Some(Arc::new(RootCertStore::empty())),
    };
    let client_auth = match &src.cert {
        None => None,
        Some((cert, key)) => (|| {
            let cert_pem = read(cert, "certificate").map_err(|e| ("cert", e))?;
            let key_pem = read(key, "key").map_err(|e| ("key", e))?;
            cert_pem.hash(&mut hasher);
            key_pem.hash(&mut hasher);
            let chain = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ("cert", format!("{}: bad PEM: {e}", cert.display())))?;
            if chain.is_empty() {
                return Err((
                    "cert",
                    format!("{}: no CERTIFICATE in the file", cert.display()),
                ));
            }
            let k = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                (
                    "key",
                    format!(
                        "{}: no usable private key (PKCS#8, SEC1 or PKCS#1 PEM): {e}",
                        key.display()
                    ),
                )
            })?;
            // The key must fit the certificate (checked here, not at the
            // first handshake).
            rustls::sign::CertifiedKey::from_der(chain.clone(), k.clone_key(), &provider).map_err(
                |e| {
                    (
                        "key",
                        format!("{} does not fit {}: {e}", key.display(), cert.display()),
                    )
                },
            )?;
            Ok((chain, k))
        })()
        .map_err(|e| errors.push(e))
        .ok(),
    };
    let (Some(server_name), Some(roots)) = (server_name, roots) else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let builder = match ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b,
        Err(e) => return Err(vec![("verify", e.to_string())]),
    };
    let builder = if src.verify {
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    };
    let mut config = match client_auth {
        Some((chain, key)) => match builder.with_client_auth_cert(chain, key) {
            Ok(c) => c,
            Err(e) => return Err(vec![("key", e.to_string())]),
        },
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = src.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Ok(ClientTls {
        config: Arc::new(config),
        server_name,
        verify: src.verify,
        counters: counters_for(key),
        fingerprint: hasher.finish(),
    })
}

/// `"verify": false`: any certificate is accepted (self-signed backends on
/// a trusted network), but the handshake signatures are still checked, so
/// the peer holds the key of the certificate it sent.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

thread_local! {
    /// This thread's copies of the backends' client configs, by fingerprint,
    /// each with its own session store (no lock shared with other workers;
    /// a reload with the same setup keeps the sessions).
    static WORKER: RefCell<HashMap<u64, Arc<ClientConfig>>> = RefCell::new(HashMap::new());
}

/// Most distinct setups one thread keeps configs for (reloads that change
/// files add new ones; past it the oldest are simply rebuilt).
const MAX_WORKER_CONFIGS: usize = 256;

/// This thread's copy of `tls`'s config (made on first use).
pub fn worker_config(tls: &ClientTls) -> Arc<ClientConfig> {
    WORKER.with(|w| {
        let mut w = w.borrow_mut();
        if let Some(c) = w.get(&tls.fingerprint) {
            return c.clone();
        }
        if w.len() >= MAX_WORKER_CONFIGS {
            w.clear();
        }
        let mut c = (*tls.config).clone();
        c.resumption =
            Resumption::store(Arc::new(ClientSessionMemoryCache::new(SESSIONS_PER_WORKER)));
        let c = Arc::new(c);
        w.insert(tls.fingerprint, c.clone());
        c
    })
}

/// Runs the client side of a handshake on the connected socket `s` until it
/// completes, fails or `deadline` passes; counts the outcome. On failure the
/// alert rustls chose (if any) is sent without waiting.
pub async fn handshake(
    s: &TcpStream,
    tls: &ClientTls,
    deadline: Instant,
) -> Result<TlsConn, HandshakeError> {
    let r = run(s, tls, deadline).await;
    match &r {
        Ok(t) if t.resumed => tls.counters.resumed.fetch_add(1, Relaxed),
        Ok(_) => tls.counters.full.fetch_add(1, Relaxed),
        Err(e) => tls.counters.failures[UpstreamFailure::of(e) as usize].fetch_add(1, Relaxed),
    };
    r
}

async fn run(s: &TcpStream, tls: &ClientTls, deadline: Instant) -> Result<TlsConn, HandshakeError> {
    let conn = UnbufferedClientConnection::new(worker_config(tls), tls.server_name.clone())
        .map_err(HandshakeError::Tls)?;
    let t = RefCell::new(TlsConn::new(Side::Client(conn)));
    let fd = s.as_raw_fd();
    let closed = |e: io::Error| match e.kind() {
        io::ErrorKind::TimedOut => HandshakeError::Timeout,
        _ => HandshakeError::Closed(e),
    };
    loop {
        let step = {
            let mut c = t.borrow_mut();
            match c.process(&mut Sink::Stash, Want::Read) {
                Ok(s) => s,
                Err(e) => {
                    c.collect_alert();
                    let _ = c.flush_now(fd);
                    return Err(HandshakeError::Tls(e));
                }
            }
        };
        let done = !t.borrow().conn.common().is_handshaking();
        if step == Step::Eof {
            return Err(HandshakeError::Closed(io::ErrorKind::UnexpectedEof.into()));
        }
        session::flush(s, &t, deadline).await.map_err(closed)?;
        if done {
            let mut c = t.into_inner();
            let common = c.conn.common();
            c.resumed = common.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            c.h2 = common.alpn_protocol() == Some(b"h2");
            return Ok(c);
        }
        loop {
            let r = {
                let mut c = t.borrow_mut();
                c.grow_inc(MAX_HANDSHAKE_BUF);
                c.recv(fd)
            };
            match r {
                Ok(0) => return Err(HandshakeError::Closed(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    session::readable(s, deadline).await.map_err(closed)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return Err(HandshakeError::TooLarge)
                }
                Err(e) => return Err(HandshakeError::Closed(e)),
            }
        }
    }
}

/// Prometheus lines for the TLS backends of `routes` (appended to /metrics).
pub fn write_metrics(routes: &[crate::config::Route], out: &mut String) {
    use std::fmt::Write as _;
    let all: Vec<_> = routes
        .iter()
        .flat_map(|r| {
            r.backends
                .iter()
                .filter_map(move |b| b.tls.as_ref().map(|t| (&r.name, &b.name, &t.counters)))
        })
        .collect();
    if all.is_empty() {
        return;
    }
    let esc = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    out.push_str("# HELP ringmesh_upstream_tls_handshakes_total Completed TLS handshakes toward backends by kind.\n");
    out.push_str("# TYPE ringmesh_upstream_tls_handshakes_total counter\n");
    for (r, b, c) in &all {
        for (kind, v) in [("full", &c.full), ("resumed", &c.resumed)] {
            let _ = writeln!(
                out,
                "ringmesh_upstream_tls_handshakes_total{{route=\"{}\",backend=\"{}\",kind=\"{kind}\"}} {}",
                esc(r),
                esc(b),
                v.load(Relaxed)
            );
        }
    }
    out.push_str("# HELP ringmesh_upstream_tls_handshake_failures_total Failed TLS handshakes toward backends by reason.\n");
    out.push_str("# TYPE ringmesh_upstream_tls_handshake_failures_total counter\n");
    for (r, b, c) in &all {
        for why in UpstreamFailure::ALL {
            let _ = writeln!(
                out,
                "ringmesh_upstream_tls_handshake_failures_total{{route=\"{}\",backend=\"{}\",reason=\"{}\"}} {}",
                esc(r),
                esc(b),
                why.as_str(),
                c.failures(why)
            );
        }
    }
}
