//! Connection limits, checked when a connection is accepted: process-wide
//! `max_connections`, per-route `max_connections`, and `max_connections_per_ip`.
//!
//! Past a limit the connection is refused cleanly: an http listener answers
//! `503` with `Retry-After: 1` and closes (reading what the client sent for a
//! moment, so the answer is not lost to a RST); a tcp listener closes. Every
//! refusal is counted (status and metrics).
//!
//! No lock: the process-wide count is one atomic (add, then check the value
//! before: exact); per-IP counts are a lock-free sketch (`shared::IpCounts`,
//! allocated once a per-IP limit is set); a route's count is the sum of its
//! per-worker slots, read then acted on, so concurrent workers can overshoot a
//! route's limit by at most one connection each.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use monoio::net::TcpStream;

use crate::config::Limits;
use crate::shared::{IpCounts, LiveRoute, Shared};
use crate::sys;

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Global,
    Route,
    PerIp,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Global => "max_connections",
            Refusal::Route => "route max_connections",
            Refusal::PerIp => "max_connections_per_ip",
        }
    }
}

/// An admitted connection's share of the counts, given back on drop.
#[derive(Debug)]
pub struct Admission {
    shared: Arc<Shared>,
    /// The per-IP count slots, [`NO_SLOTS`] when per-IP limits are off
    /// (u32 and no `Option`: table indices are small, and this sits in every
    /// connection's task: 16 bytes with the `Arc`, not 24).
    ip_slots: [u32; 2],
}

/// [`Admission::ip_slots`] of a connection not counted per IP.
const NO_SLOTS: [u32; 2] = [u32::MAX; 2];

impl Drop for Admission {
    fn drop(&mut self) {
        self.shared.open_connections.fetch_sub(1, Relaxed);
        if let (true, Some(ips)) = (self.ip_slots != NO_SLOTS, self.shared.ip_counts.get()) {
            ips.release(self.ip_slots.map(|s| s as usize));
        }
    }
}

/// Admits a connection from `peer` (to `route`, when the listener has one
/// route) under `limits`, or says which limit refuses it.
pub fn admit(
    shared: &Arc<Shared>,
    limits: &Limits,
    route: Option<&LiveRoute>,
    peer: IpAddr,
) -> Result<Admission, Refusal> {
    if let (Some(r), Some(max)) = (route, route.and_then(|r| r.cfg.limits.max_connections)) {
        if r.totals().active >= max as u64 {
            return Err(Refusal::Route);
        }
    }
    let before = shared.open_connections.fetch_add(1, Relaxed);
    let mut adm = Admission {
        shared: shared.clone(),
        ip_slots: NO_SLOTS,
    };
    if limits
        .max_connections
        .is_some_and(|max| before >= max as u64)
    {
        return Err(Refusal::Global);
    }
    if let Some(max) = limits.max_connections_per_ip {
        let ips = shared.ip_counts.get_or_init(IpCounts::default);
        let slots = ips.acquire(peer, max).ok_or(Refusal::PerIp)?;
        // Indices are below the table size (2^16): never NO_SLOTS.
        adm.ip_slots = slots.map(|s| s as u32);
    }
    Ok(adm)
}

/// How long a refused http client gets to finish sending before we close.
const REFUSE_LINGER: Duration = Duration::from_secs(1);

/// Answers 503 with `Retry-After`, half-closes, then reads and discards what
/// the client sends for a moment (so the answer is not lost to a RST).
pub async fn refuse_http(stream: TcpStream, why: Refusal) {
    let mut resp = Vec::with_capacity(256);
    let detail = format!("connection limit reached ({}); retry later", why.as_str());
    crate::http::respond::write_retry_later(&mut resp, &detail);
    let fd = stream.as_raw_fd();
    // A fresh socket's send buffer has room for this: no need to wait.
    if sys::send(fd, &resp).is_err() {
        return;
    }
    let _ = sys::shutdown_write(fd);
    let deadline = monoio::time::Instant::now() + REFUSE_LINGER;
    let mut buf = Vec::with_capacity(4096);
    let mut total = 0usize;
    while total < 1 << 20 {
        monoio::select! {
            r = stream.readable(false) => if r.is_err() { return },
            _ = monoio::time::sleep_until(deadline) => return,
        }
        buf.clear();
        match sys::recv_append(fd, &mut buf, 4096) {
            Ok(0) => return,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}
