//! TLS to etcd: a rustls client config (aws-lc-rs provider, as the proxy's
//! own TLS) from `config_source.etcd`'s `ca_file` (the CA that signed etcd's
//! server certificate; default: the system bundle) and, for etcd's
//! `--client-cert-auth`, `cert_file` + `key_file`. Used on the etcd side
//! threads and by the CLI only ([`crate::cli::client`]); no worker sees it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the CA bundle is on Debian/Ubuntu (ca-certificates) when no `ca_file` is given.
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `config_source.etcd`'s TLS files (absolute, or relative to the working
/// directory once resolved against the config file's directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// CA certificates (PEM) that etcd's server certificate must chain to.
    pub ca_file: PathBuf,
    /// Client certificate chain and key (PEM), for `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// Which field a problem belongs to, and what it is.
pub type TlsProblem = (&'static str, String);

fn read(path: &Path, field: &'static str) -> Result<Vec<u8>, TlsProblem> {
    std::fs::read(path).map_err(|e| (field, format!("cannot read {}: {e}", path.display())))
}

/// The client config for `tls`; every file read and parsed, each problem
/// named by its field.
pub fn client_config(tls: &EtcdTls) -> Result<Arc<rustls::ClientConfig>, TlsProblem> {
    let provider = provider();
    let ca = read(&tls.ca_file, "ca_file")?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        let c = c.map_err(|e| {
            (
                "ca_file",
                format!("{}: bad PEM: {e}", tls.ca_file.display()),
            )
        })?;
        roots.add(c).map_err(|e| {
            (
                "ca_file",
                format!("{}: unusable CA certificate: {e}", tls.ca_file.display()),
            )
        })?;
    }
    if roots.is_empty() {
        return Err((
            "ca_file",
            format!("{}: no CERTIFICATE in it", tls.ca_file.display()),
        ));
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("ca_file", e.to_string()))?
        .with_root_certificates(roots);
    let cfg = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let pem = read(cert, "cert_file")?;
            let chain = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ("cert_file", format!("{}: bad PEM: {e}", cert.display())))?;
            if chain.is_empty() {
                return Err((
                    "cert_file",
                    format!("{}: no CERTIFICATE in it", cert.display()),
                ));
            }
            let kpem = read(key, "key_file")?;
            let k = PrivateKeyDer::from_pem_slice(&kpem)
                .map_err(|e| ("key_file", format!("{}: no usable key: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, k)
                .map_err(|e| ("key_file", format!("{}: {e}", key.display())))?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => return Err(("key_file", "required with cert_file".into())),
        (None, Some(_)) => return Err(("cert_file", "required with key_file".into())),
    };
    Ok(Arc::new(cfg))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static P: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// The name to verify for endpoint `host:port` (`[v6]:port` too): an IP
/// address (matched against the certificate's IP SANs) or a DNS name.
pub fn server_name(addr: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} is not a name TLS can verify: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_bad_file_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let t = |ca: &Path, cert: Option<&Path>, key: Option<&Path>| {
            client_config(&EtcdTls {
                ca_file: ca.to_path_buf(),
                cert_file: cert.map(Path::to_path_buf),
                key_file: key.map(Path::to_path_buf),
            })
            .map(drop)
            .unwrap_err()
        };
        let missing = dir.path().join("nope.pem");
        let (f, m) = t(&missing, None, None);
        assert_eq!(f, "ca_file");
        assert!(m.contains("cannot read"), "{m}");
        assert_eq!(t(&junk, None, None).0, "ca_file");
        assert_eq!(server_name("127.0.0.1:2379").unwrap().to_str(), "127.0.0.1");
        assert_eq!(server_name("[::1]:2379").unwrap().to_str(), "::1");
        assert_eq!(
            server_name("etcd.internal:2379").unwrap().to_str(),
            "etcd.internal"
        );
    }
}
