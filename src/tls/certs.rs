//! Loading certificates and keys, and building a port's [`Acceptor`].
//!
//! Runs on the control side (config validation and reload): files are read
//! and checked here, so a reload with a missing file, a key that does not
//! match its certificate or a chain that does not parse is refused with the
//! JSON path of the culprit, and the running config stays.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use super::resolver::SniResolver;
use super::{counters, Acceptor};

/// Server-side session cache entries (TLS 1.2 session IDs; TLS 1.3 uses
/// tickets). rustls's default is 256; HAProxy's `tune.ssl.cachesize` default
/// is 20,000, about 10 MB at most here.
pub const SESSION_CACHE_ENTRIES: usize = 20_000;

/// What a route's `tls` section asks for (paths already made absolute).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsSource {
    /// (certificate chain PEM, private key PEM), the first is the default.
    pub certificates: Vec<(PathBuf, PathBuf)>,
    /// `min_version: "1.3"`: TLS 1.2 is refused.
    pub tls13_only: bool,
    /// `client_ca`: clients must present a certificate chaining to it.
    pub client_ca: Option<PathBuf>,
    /// Offer ALPN `http/1.1` (http routes).
    pub alpn_http11: bool,
    /// `session_ticket_keys`: operator key files (the first encrypts); empty:
    /// the process's own rotating keys.
    pub ticket_keys: Vec<PathBuf>,
}

/// A problem loading one part of a `tls` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    /// Path below the `tls` object, e.g. `certificates[0].key`.
    pub path: String,
    pub message: String,
}

/// What the data path and `ringmesh check` know about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names (SANs, else the subject CN), lowercase; `*.` wildcards kept.
    pub names: Vec<String>,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

/// The session cache every TLS port shares, for the life of the process:
/// reloads keep it (and the ticket keys, see [`super::tickets`]), so a
/// client resumes after a reload too.
fn session_cache() -> Arc<ServerSessionMemoryCache> {
    static S: OnceLock<Arc<ServerSessionMemoryCache>> = OnceLock::new();
    S.get_or_init(|| ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES))
        .clone()
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

fn err(path: impl Into<String>, message: impl Into<String>) -> TlsError {
    TlsError {
        path: path.into(),
        message: message.into(),
    }
}

fn read(path: &std::path::Path, at: &str, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| err(at, format!("cannot read {what} {}: {e}", path.display())))
}

/// Loads every file of `src` and builds the port's acceptor. `route_key`
/// names the counters.
pub fn build_acceptor(src: &TlsSource, route_key: &str) -> Result<Acceptor, Vec<TlsError>> {
    let provider = provider();
    let mut errors = Vec::new();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    src.hash(&mut hasher);
    let mut keys = Vec::new();
    let mut infos = Vec::new();
    for (i, (cert_path, key_path)) in src.certificates.iter().enumerate() {
        let at_cert = format!("certificates[{i}].cert");
        let at_key = format!("certificates[{i}].key");
        let loaded = (|| {
            let cert_pem = read(cert_path, &at_cert, "certificate")?;
            let key_pem = read(key_path, &at_key, "key")?;
            cert_pem.hash(&mut hasher);
            key_pem.hash(&mut hasher);
            let chain = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(&at_cert, format!("{}: bad PEM: {e}", cert_path.display())))?;
            if chain.is_empty() {
                return Err(err(
                    &at_cert,
                    format!("{}: no CERTIFICATE in the file", cert_path.display()),
                ));
            }
            let info = cert_info(&chain[0])
                .map_err(|e| err(&at_cert, format!("{}: {e}", cert_path.display())))?;
            for (n, c) in chain.iter().enumerate().skip(1) {
                x509_parser::parse_x509_certificate(c).map_err(|e| {
                    err(
                        &at_cert,
                        format!(
                            "{}: certificate {} of the chain does not parse: {e}",
                            cert_path.display(),
                            n + 1
                        ),
                    )
                })?;
            }
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                err(
                    &at_key,
                    format!(
                        "{}: no usable private key (PKCS#8, SEC1 or PKCS#1 PEM): {e}",
                        key_path.display()
                    ),
                )
            })?;
            let ck = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
                let at = if matches!(e, rustls::Error::InconsistentKeys(_)) {
                    &at_key
                } else {
                    &at_cert
                };
                err(
                    at,
                    format!(
                        "{} does not fit {}: {e}",
                        key_path.display(),
                        cert_path.display()
                    ),
                )
            })?;
            Ok((Arc::new(ck), info))
        })();
        match loaded {
            Ok((ck, info)) => {
                keys.push((ck, info.names.clone()));
                infos.push(info);
            }
            Err(e) => errors.push(e),
        }
    }
    let ticketer: Option<Arc<dyn ProducesTickets>> = if src.ticket_keys.is_empty() {
        super::tickets::process_keys().map(|k| k as Arc<dyn ProducesTickets>)
    } else {
        for p in &src.ticket_keys {
            // A reload that changes a key file must rebuild the acceptor.
            std::fs::read(p).unwrap_or_default().hash(&mut hasher);
        }
        match super::tickets::TicketKeys::from_files(&src.ticket_keys) {
            Ok(k) => Some(Arc::new(k)),
            Err((i, m)) => {
                errors.push(err(format!("session_ticket_keys[{i}]"), m));
                None
            }
        }
    };
    let verifier = match &src.client_ca {
        None => None,
        Some(path) => match load_client_verifier(path, &provider) {
            Ok(v) => Some(v),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let resolver = Arc::new(SniResolver::new(keys));
    let versions: &[&'static rustls::SupportedProtocolVersion] = if src.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| vec![err("min_version", e.to_string())])?;
    let mtls = verifier.is_some();
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    if src.alpn_http11 {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    config.ignore_client_order = true;
    if let Some(t) = ticketer {
        config.ticketer = t;
    }
    config.session_storage = session_cache();
    Ok(Acceptor {
        config: Arc::new(config),
        resolver,
        certs: infos,
        mtls,
        counters: counters::for_route(route_key),
        fingerprint: hasher.finish(),
    })
}

fn load_client_verifier(
    path: &std::path::Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let pem = read(path, "client_ca", "client CA")?;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| err("client_ca", format!("{}: bad PEM: {e}", path.display())))?;
        roots
            .add(c)
            .map_err(|e| err("client_ca", format!("{}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(err(
            "client_ca",
            format!("{}: no CERTIFICATE in the file", path.display()),
        ));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| err("client_ca", format!("{}: {e}", path.display())))
}

/// Names and notAfter of an end-entity certificate.
fn cert_info(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("certificate does not parse: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        if let Some(cn) = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
        {
            names.push(cn.to_ascii_lowercase());
        }
    }
    Ok(CertInfo {
        names,
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// The subject of a verified client certificate, RFC 4514 style
/// (`CN=client,O=Example`), for `X-Client-Cert-Subject`.
pub fn subject_of(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let s = cert.subject().to_string();
    // A header value: no control characters.
    Some(s.chars().filter(|c| !c.is_control()).collect())
}
