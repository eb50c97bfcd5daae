//! Handshake counters per TLS route, kept across reloads.
//!
//! Handshakes are rare next to requests, so one set of relaxed atomics per
//! route, shared by the workers, is cheap enough (the per-request counters
//! stay per worker). The registry is keyed by route key: a reload that keeps
//! the route keeps its counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

/// Why a handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// Plain HTTP sent to a TLS port (answered 400).
    PlainHttp,
    /// No complete handshake before the header timeout.
    Timeout,
    /// The client closed or reset mid-handshake.
    Closed,
    /// The client presented no or a bad certificate (mTLS).
    ClientCert,
    /// Anything else rustls refused: bad ClientHello, no common version,
    /// cipher or ALPN, an alert from the client, an oversized record.
    Protocol,
}

impl TlsFailure {
    pub const ALL: [TlsFailure; 5] = [
        TlsFailure::PlainHttp,
        TlsFailure::Timeout,
        TlsFailure::Closed,
        TlsFailure::ClientCert,
        TlsFailure::Protocol,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TlsFailure::PlainHttp => "plain_http",
            TlsFailure::Timeout => "timeout",
            TlsFailure::Closed => "closed",
            TlsFailure::ClientCert => "client_cert",
            TlsFailure::Protocol => "protocol",
        }
    }
}

/// One route's handshake figures.
#[derive(Debug, Default)]
pub struct TlsCounters {
    pub full: AtomicU64,
    pub resumed: AtomicU64,
    failures: [AtomicU64; 5],
}

impl TlsCounters {
    pub fn handshake(&self, resumed: bool) {
        if resumed {
            self.resumed.fetch_add(1, Relaxed);
        } else {
            self.full.fetch_add(1, Relaxed);
        }
    }

    pub fn failed(&self, why: TlsFailure) {
        if let Some(c) = self.failures.get(why as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn failures(&self, why: TlsFailure) -> u64 {
        self.failures
            .get(why as usize)
            .map_or(0, |c| c.load(Relaxed))
    }

    /// `{"full":..,"resumed":..,"failures":{"timeout":..,...}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut f = serde_json::Map::new();
        for why in TlsFailure::ALL {
            f.insert(why.as_str().into(), self.failures(why).into());
        }
        serde_json::json!({
            "handshakes_full": self.full.load(Relaxed),
            "handshakes_resumed": self.resumed.load(Relaxed),
            "failures": f,
        })
    }
}

fn registry() -> &'static Mutex<HashMap<String, Arc<TlsCounters>>> {
    static R: OnceLock<Mutex<HashMap<String, Arc<TlsCounters>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// The counters of route `key` (created on first use).
pub fn for_route(key: &str) -> Arc<TlsCounters> {
    let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
    r.entry(key.to_string()).or_default().clone()
}

/// Prometheus lines for the TLS routes of `routes` (appended to /metrics).
pub fn write_metrics(routes: &[crate::config::Route], out: &mut String) {
    use std::fmt::Write as _;
    let tls: Vec<_> = routes
        .iter()
        .filter_map(|r| r.tls.as_ref().map(|a| (esc(&r.name), &a.counters)))
        .collect();
    if tls.is_empty() {
        return;
    }
    out.push_str("# HELP ringmesh_tls_handshakes_total Completed TLS handshakes by kind.\n");
    out.push_str("# TYPE ringmesh_tls_handshakes_total counter\n");
    for (name, c) in &tls {
        for (kind, v) in [("full", &c.full), ("resumed", &c.resumed)] {
            let _ = writeln!(
                out,
                "ringmesh_tls_handshakes_total{{route=\"{name}\",kind=\"{kind}\"}} {}",
                v.load(Relaxed)
            );
        }
    }
    out.push_str("# HELP ringmesh_tls_handshake_failures_total Failed TLS handshakes by reason.\n");
    out.push_str("# TYPE ringmesh_tls_handshake_failures_total counter\n");
    for (name, c) in &tls {
        for why in TlsFailure::ALL {
            let _ = writeln!(
                out,
                "ringmesh_tls_handshake_failures_total{{route=\"{name}\",reason=\"{}\"}} {}",
                why.as_str(),
                c.failures(why)
            );
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
