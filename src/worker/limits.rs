//! Connection limits, checked when a connection is accepted: process-wide
//! `max_connections`, per-route `max_connections`, and `max_connections_per_ip`.
//!
//! Past a limit the connection is refused cleanly: an http listener answers
//! `503` with `Retry-After: 1` and closes (reading what the client sent for a
//! moment, so the answer is not lost to a RST); a tcp listener closes. Every
//! refusal is counted (status and metrics).
//!
//! No lock: the process-wide count is one atomic; a route's count is the sum
//! of its per-worker slots; per-IP counts live in a fixed count-min sketch
//! (two hashed tables of atomics, 2 x 64 Ki counters, allocated on first use):
//! the smaller of an address's two counters is never below its true count, so
//! an address is never let past its limit; two busy addresses sharing both
//! counters could be refused early, which 64 Ki x 64 Ki buckets make unlikely.
//! Workers check and add without a lock, so a limit can be overshot by at most
//! one connection per worker at the same instant.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use monoio::net::TcpStream;

use crate::config::Limits;
use crate::shared::{LiveRoute, Shared};
use crate::sys;

const BUCKETS: usize = 1 << 16;

/// Open connections per client IP address, approximately from above.
#[derive(Debug)]
pub struct IpCounts {
    tables: [Box<[AtomicU32]>; 2],
    seeds: [std::collections::hash_map::RandomState; 2],
}

impl Default for IpCounts {
    fn default() -> Self {
        let table = || (0..BUCKETS).map(|_| AtomicU32::new(0)).collect();
        IpCounts {
            tables: [table(), table()],
            seeds: Default::default(),
        }
    }
}

impl IpCounts {
    fn slots(&self, ip: IpAddr) -> [usize; 2] {
        // An IPv4-mapped IPv6 address counts as the IPv4 one.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.seeds
            .each_ref()
            .map(|s| s.hash_one(ip) as usize % BUCKETS)
    }

    /// Counts a connection from `ip` unless that would pass `limit`.
    pub fn acquire(&self, ip: IpAddr, limit: u32) -> Option<[usize; 2]> {
        let slots = self.slots(ip);
        let before = [0, 1].map(|t| self.tables[t][slots[t]].fetch_add(1, Relaxed));
        if before[0].min(before[1]) >= limit {
            self.release(slots);
            return None;
        }
        Some(slots)
    }

    pub fn release(&self, slots: [usize; 2]) {
        for (t, s) in slots.into_iter().enumerate() {
            self.tables[t][s].fetch_sub(1, Relaxed);
        }
    }

    /// The (over-)estimated open connections of `ip`.
    pub fn estimate(&self, ip: IpAddr) -> u32 {
        let s = self.slots(ip);
        self.tables[0][s[0]]
            .load(Relaxed)
            .min(self.tables[1][s[1]].load(Relaxed))
    }
}

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
    ip_slots: Option<[usize; 2]>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.shared.open_connections.fetch_sub(1, Relaxed);
        if let (Some(slots), Some(ips)) = (self.ip_slots, self.shared.ip_counts.get()) {
            ips.release(slots);
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
        ip_slots: None,
    };
    if limits
        .max_connections
        .is_some_and(|max| before >= max as u64)
    {
        return Err(Refusal::Global);
    }
    if let Some(max) = limits.max_connections_per_ip {
        let ips = shared.ip_counts.get_or_init(IpCounts::default);
        adm.ip_slots = Some(ips.acquire(peer, max).ok_or(Refusal::PerIp)?);
    }
    Ok(adm)
}

/// How long a refused http client gets to finish sending before we close.
const REFUSE_LINGER: Duration = Duration::from_secs(1);

/// Answers 503 with `Retry-After`, half-closes, then reads and discards what
/// the client sends for a moment (so the answer is not lost to a RST).
pub async fn refuse_http(stream: TcpStream, why: Refusal) {
    let body = format!("connection limit reached ({}); retry later\n", why.as_str());
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let fd = stream.as_raw_fd();
    // A fresh socket's send buffer has room for this: no need to wait.
    if sys::send(fd, resp.as_bytes()).is_err() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_counts_admit_up_to_the_limit_and_release() {
        let c = IpCounts::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| c.acquire(a, 3).unwrap()).collect();
        assert!(c.acquire(a, 3).is_none());
        assert!(c.acquire(mapped, 3).is_none(), "v4-mapped counts as v4");
        assert_eq!(c.estimate(a), 3);
        // Other addresses are unaffected (barring a double collision).
        for i in 2..200u8 {
            let b = IpAddr::from([10, 0, 1, i]);
            let s = c.acquire(b, 1).expect("another address");
            c.release(s);
        }
        c.release(held[0]);
        assert!(c.acquire(a, 3).is_some());
        assert_eq!(c.estimate(a), 3);
    }
}
