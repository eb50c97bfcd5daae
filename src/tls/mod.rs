//! TLS termination (certificates, SNI, the record layer on client
//! connections) and origination toward backends with `tls` ([`client`]).
//!
//! ```text
//!  config/tls.rs (control side)         tls (data plane)
//!  "tls": {...} --load PEM, check-->  Acceptor: ONE Arc<ServerConfig> per TLS port
//!                                       |  SniResolver (exact SAN, wildcard, default)
//!                                       |  tickets::TicketKeys (process-wide, rotating, handed
//!                                       |  over on upgrade; or key files) + session cache
//!  worker: accept --> handshake (deadline: header timeout) --> TlsConn in the client's
//!          Io::Tls --> HTTP/1.1 exchange (http routes) or relay (tcp routes)
//!          ALPN h2 --> stream::TlsStream (poll-io) --> crate::h2 server
//!
//!  config/upstream_tls.rs: backend "tls" --> client::ClientTls (rustls ClientConfig)
//!  worker: connect(2) --> client::handshake (per-worker session store) --> the same
//!          TlsConn (client side, record.rs) in Io::Tls, the keep-alive pool, the relay;
//!          "protocol": "h2" --> stream::TlsStream --> crate::h2 upstream pool
//! ```
//!
//! ALPN: http ports offer `h2` then `http/1.1` when every route on the
//! port has `http2` on (an ALPN answer holds for the whole connection,
//! whichever route its requests name), `http/1.1` alone otherwise; tcp
//! ports offer none. Clients choose HTTP/2 only by ALPN over TLS (the
//! cleartext preface sniffing is for h2c ports).
//!
//! Decision: the record layer drives rustls 0.23's *unbuffered* API
//! ([`rustls::server::UnbufferedServerConnection`]) over two buffers we own
//! ([`session::TlsConn`]): received ciphertext is read by `recv(2)` straight
//! into the incoming buffer and decrypted in place there; outgoing plaintext
//! is encrypted straight into the outgoing buffer, which `send(2)` writes.
//! Both come from a per-worker free list ([`bufs`]) and go back to it while a
//! keep-alive connection idles, so an idle TLS connection holds only the
//! rustls state (a few hundred bytes plus its keys).
//!
//! Why not `monoio-rustls`: it pins rustls ~0.23.4, adds its own two 16 KiB
//! staging buffers and a copy each way per connection, its fast mode is not
//! cancellation-safe, and it has been idle since 2024. Why not rustls's
//! buffered `ServerConnection` with `read_tls`/`write_tls`: it copies every
//! decrypted record into an internal plaintext queue and again out of it, and
//! its buffers cannot be lent back to a pool between requests.
//!
//! The one copy beyond the cipher: decrypted bytes are copied from the record
//! buffer to where the HTTP code wants them (the head buffer, or a pooled
//! body buffer that is then written upstream). Plain connections are
//! untouched: they keep `Io::Ring`/`Io::Ready` and splice their bodies.
//!
//! Kernel TLS later: after the handshake the connection only moves whole
//! records between the socket and the two buffers, and rustls can hand its
//! keys over (`dangerous_into_kernel_connection`), so a kTLS path can replace
//! [`session::TlsConn`]'s seal/open steps without touching the HTTP code.
//! (This kernel has CONFIG_TLS off.)

pub mod bufs;
pub mod certs;
pub mod client;
pub mod counters;
mod record;
pub mod relay;
pub mod resolver;
pub mod session;
pub mod stream;
pub mod tickets;

use std::sync::Arc;

pub use certs::{build_acceptor, CertInfo, TlsError, TlsSource};
pub use counters::{TlsCounters, TlsFailure};
pub use session::{HandshakeError, TlsConn};

/// A TLS listener's server side: the shared rustls config and what the data
/// path needs to know about its certificates.
pub struct Acceptor {
    /// One config for every worker: one ticketer and session cache, so a
    /// client resumes on whichever worker its reconnect lands.
    pub config: Arc<rustls::ServerConfig>,
    pub resolver: Arc<resolver::SniResolver>,
    /// One entry per configured certificate, in config order.
    pub certs: Vec<CertInfo>,
    /// Client certificates are required (`client_ca`).
    pub mtls: bool,
    /// Survives reloads (keyed by route key).
    pub counters: Arc<TlsCounters>,
    /// What was loaded (settings and file contents): equal fingerprints mean
    /// an equal TLS setup, so snapshots stay comparable.
    pub fingerprint: u64,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("certs", &self.certs)
            .field("mtls", &self.mtls)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Acceptor {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for Acceptor {}

impl Acceptor {
    /// Whether `host` (a Host header value, port allowed) is one of the
    /// names of certificate `cert` (exact, or under one of its wildcards).
    pub fn covers(&self, cert: usize, host: &[u8]) -> bool {
        let Some(info) = self.certs.get(cert) else {
            return false;
        };
        let host = strip_port(host);
        let host = host.strip_suffix(b".").unwrap_or(host);
        info.names.iter().any(|n| name_matches(n.as_bytes(), host))
    }
}

impl Acceptor {
    /// The same listener offering ALPN `h2` before `http/1.1` (one config
    /// per port, built at load time; the resolver, certificates, counters
    /// and the shared ticketer and session cache are kept).
    pub fn offering_h2(&self) -> Acceptor {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Acceptor {
            config: Arc::new(config),
            resolver: self.resolver.clone(),
            certs: self.certs.clone(),
            mtls: self.mtls,
            counters: self.counters.clone(),
            fingerprint: self.fingerprint ^ 0x6832_6832_6832_6832,
        }
    }

    /// The 421 rule (RFC 9110 §15.5.20, domain fronting) for a request
    /// naming `host` on a connection whose handshake chose certificate
    /// `cert`: on a port shared by several routes, a client that sent SNI
    /// must name a host its certificate covers. A client without SNI got
    /// the default certificate for any name (as nginx, only a client that
    /// named a server is held to it).
    pub fn misdirected(&self, shared_port: bool, cert: usize, sni: bool, host: &[u8]) -> bool {
        shared_port && sni && !self.covers(cert, host)
    }
}

/// `host` without a trailing `:port` (IPv6 literals keep their brackets).
fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match memchr::memchr(b']', host) {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match memchr::memrchr(b':', host) {
        Some(i) => &host[..i],
        None => host,
    }
}

/// Whether a certificate name (lowercase; `*.example.com` allowed) matches
/// `host` (any case). A wildcard covers exactly one label.
pub fn name_matches(pattern: &[u8], host: &[u8]) -> bool {
    if let Some(suffix) = pattern.strip_prefix(b"*.") {
        match memchr::memchr(b'.', host) {
            Some(i) if i > 0 => host[i + 1..].eq_ignore_ascii_case(suffix),
            _ => false,
        }
    } else {
        pattern.eq_ignore_ascii_case(host)
    }
}

/// `ringmesh check` warns about certificates expiring within this.
pub const EXPIRY_WARNING: std::time::Duration = std::time::Duration::from_secs(14 * 86_400);

/// Warnings for certificates of `snap` that expire within `within`
/// (`ringmesh check`), as `routes."443".tls.certificates[0].cert: ...`.
pub fn expiry_warnings(snap: &crate::config::Snapshot, within: std::time::Duration) -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let limit = now + within.as_secs() as i64;
    let mut out = Vec::new();
    for r in &snap.routes {
        let Some(tls) = &r.tls else { continue };
        for (i, c) in tls.certs.iter().enumerate() {
            if c.not_after <= limit {
                let days = (c.not_after - now) / 86_400;
                let when = if c.not_after <= now {
                    "has expired".to_string()
                } else {
                    format!("expires in {days} day(s)")
                };
                out.push(format!(
                    "{}.tls.certificates[{i}].cert: certificate {} ({})",
                    crate::config::validate::route_path(&r.key),
                    when,
                    c.names.join(", ")
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_wildcards() {
        assert!(name_matches(b"a.example.com", b"A.Example.com"));
        assert!(name_matches(b"*.example.com", b"x.example.com"));
        assert!(!name_matches(b"*.example.com", b"example.com"));
        assert!(!name_matches(b"*.example.com", b"a.b.example.com"));
        assert!(!name_matches(b"*.example.com", b".example.com"));
        assert_eq!(strip_port(b"a.example.com:8443"), b"a.example.com");
        assert_eq!(strip_port(b"[::1]:8443"), b"[::1]");
        assert_eq!(strip_port(b"a"), b"a");
    }
}
