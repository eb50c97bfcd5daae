//! Process-wide HTTP/2 counters (workers add, the metrics endpoint reads).
//!
//! Relaxed atomics shared by all workers: each is touched once per h2
//! connection or stream event (not per byte), so contention is negligible.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One counter per HTTP/2 event worth alerting on.
#[derive(Default, Debug)]
pub struct H2Counters {
    /// HTTP/2 client connections accepted (prior-knowledge preface seen).
    pub connections: AtomicU64,
    /// Streams (requests) accepted.
    pub streams: AtomicU64,
    /// Connections the `h2` crate closed with ENHANCE_YOUR_CALM (rapid
    /// reset, MadeYouReset, CONTINUATION flood, header list too large).
    pub calm: AtomicU64,
    /// Connections closed for spending their frame budget (SETTINGS, PING,
    /// PRIORITY, empty DATA floods).
    pub frame_flood: AtomicU64,
    /// Connections closed for another protocol error (bad frames, HPACK...).
    pub protocol_errors: AtomicU64,
    /// Streams the client reset before their response ended.
    pub client_resets: AtomicU64,
    /// Streams reset because the client's window stayed at zero for `timeouts.response`.
    pub stalled: AtomicU64,
    /// Connections closed for idleness (no stream for `http2.idle_timeout`).
    pub idle_closed: AtomicU64,
}

impl H2Counters {
    pub fn add(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// `(metric suffix, help, value)` for each counter.
    pub fn rows(&self) -> [(&'static str, &'static str, u64); 8] {
        [
            ("connections_total", "HTTP/2 client connections.", self.connections.load(Relaxed)),
            ("streams_total", "HTTP/2 streams (requests).", self.streams.load(Relaxed)),
            ("calm_total", "HTTP/2 connections closed by the h2 flood limits (rapid reset, MadeYouReset, CONTINUATION, header list size).", self.calm.load(Relaxed)),
            ("frame_flood_total", "HTTP/2 connections closed for spending their no-work frame budget (SETTINGS, PING, PRIORITY, empty DATA).", self.frame_flood.load(Relaxed)),
            ("protocol_errors_total", "HTTP/2 connections closed for other protocol errors.", self.protocol_errors.load(Relaxed)),
            ("client_resets_total", "HTTP/2 streams reset by the client before their response ended.", self.client_resets.load(Relaxed)),
            ("stalled_total", "HTTP/2 streams reset after a zero flow-control window for timeouts.response.", self.stalled.load(Relaxed)),
            ("idle_closed_total", "HTTP/2 connections closed for idleness.", self.idle_closed.load(Relaxed)),
        ]
    }
}
