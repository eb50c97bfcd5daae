//! `rate_limit`: GCRA (the generic cell rate algorithm) per key, with the
//! state of a key in one atomic shared by every worker, so N workers
//! enforce one limit (as nginx's shared zone; per-worker buckets would let
//! N times the rate through).
//!
//! A key's state is its theoretical arrival time (TAT, ns on a process
//! clock): a request at `now` is allowed when `max(TAT, now) - now <= tau`
//! (`tau` = (burst - 1) x interval), and moves TAT on by one interval (one
//! compare-and-swap). The table is bounded: open addressing over a fixed
//! number of slots; a key finds its slot within a few probes, takes over a
//! slot whose TAT has passed (an idle key's state is the same as none), or
//! evicts the probed slot with the oldest TAT.

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

use crate::config::middleware::RateKey;

use super::{Edits, Filter, Request, Verdict};

/// Slots probed per key.
const PROBES: usize = 8;

struct Slot {
    /// Hash of the key (0: empty).
    key: AtomicU64,
    /// Theoretical arrival time, ns on [`clock_ns`].
    tat: AtomicU64,
}

/// The shared state of one `rate_limit` middleware (all workers).
pub struct Table {
    slots: Box<[Slot]>,
    mask: usize,
    interval_ns: u64,
    tau_ns: u64,
    hasher: std::hash::RandomState,
    /// Keys evicted while their limit was still in effect.
    pub evictions: AtomicU64,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("slots", &self.slots.len())
            .finish()
    }
}

/// Nanoseconds since the first call (monotonic).
fn clock_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// What the table decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied; the next request would be allowed after this many ns.
    Deny(u64),
}

impl Table {
    pub fn new(rate: u64, burst: u64, max_keys: usize) -> Table {
        let n = max_keys.next_power_of_two().max(16);
        let interval_ns = 1_000_000_000 / rate.max(1);
        Table {
            slots: (0..n)
                .map(|_| Slot {
                    key: AtomicU64::new(0),
                    tat: AtomicU64::new(0),
                })
                .collect(),
            mask: n - 1,
            interval_ns,
            tau_ns: interval_ns.saturating_mul(burst.max(1) - 1),
            hasher: std::hash::RandomState::new(),
            evictions: AtomicU64::new(0),
        }
    }

    fn hash(&self, key: impl Hash) -> u64 {
        self.hasher.hash_one(key) | 1
    }

    fn slot(&self, h: u64, now: u64) -> &Slot {
        let start = h as usize;
        let mut oldest: Option<&Slot> = None;
        for i in 0..PROBES {
            let Some(s) = self.slots.get((start.wrapping_add(i)) & self.mask) else {
                continue;
            };
            let k = s.key.load(Relaxed);
            if k == h {
                return s;
            }
            let free = k == 0 || s.tat.load(Relaxed) <= now;
            if free && s.key.compare_exchange(k, h, Relaxed, Relaxed).is_ok() {
                s.tat.store(0, Relaxed);
                return s;
            }
            if oldest.is_none_or(|o| s.tat.load(Relaxed) < o.tat.load(Relaxed)) {
                oldest = Some(s);
            }
        }
        let s = oldest.unwrap_or(&self.slots[start & self.mask]);
        self.evictions.fetch_add(1, Relaxed);
        s.key.store(h, Relaxed);
        s.tat.store(0, Relaxed);
        s
    }

    /// One request of `key` at `now` (ns).
    pub fn check_at(&self, key: impl Hash, now: u64) -> Decision {
        let slot = self.slot(self.hash(key), now);
        let mut cur = slot.tat.load(Relaxed);
        loop {
            let tat = cur.max(now);
            if tat - now > self.tau_ns {
                return Decision::Deny(tat - now - self.tau_ns);
            }
            match slot
                .tat
                .compare_exchange_weak(cur, tat + self.interval_ns, Relaxed, Relaxed)
            {
                Ok(_) => return Decision::Allow,
                Err(actual) => cur = actual,
            }
        }
    }

    pub fn check(&self, key: impl Hash) -> Decision {
        // Never 0: a TAT of 0 means "no state".
        self.check_at(key, clock_ns() + 1)
    }
}

pub struct RateLimit {
    table: std::sync::Arc<Table>,
    key: RateKey,
    burst: u64,
}

impl RateLimit {
    pub fn new(table: std::sync::Arc<Table>, key: &RateKey, burst: u64) -> RateLimit {
        RateLimit {
            table,
            key: key.clone(),
            burst,
        }
    }
}

impl Filter for RateLimit {
    fn request_filter(&self, req: &Request<'_>, e: &mut Edits) -> Verdict {
        let d = match &self.key {
            RateKey::ClientIp => self.table.check(match req.client.ip() {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                v4 => v4,
            }),
            RateKey::Route => self.table.check(0u8),
            RateKey::Header(name) => self.table.check(req.header(name.as_bytes()).unwrap_or(b"")),
        };
        match d {
            Decision::Allow => Verdict::Continue,
            Decision::Deny(ns) => {
                use std::io::Write as _;
                let secs = ns.div_ceil(1_000_000_000).max(1);
                let _ = write!(
                    e.answer_headers,
                    "Retry-After: {secs}\r\nRateLimit-Limit: {}\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: {secs}\r\n",
                    self.burst
                );
                Verdict::Respond(429)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_burst_then_the_rate() {
        let t = Table::new(10, 3, 64); // 100 ms interval, 3 at once
        let s = 1_000_000_000u64;
        for _ in 0..3 {
            assert_eq!(t.check_at("k", s), Decision::Allow);
        }
        assert!(matches!(t.check_at("k", s), Decision::Deny(_)));
        // Another key has its own budget.
        assert_eq!(t.check_at("other", s), Decision::Allow);
        // One interval later, one more.
        assert_eq!(t.check_at("k", s + 100_000_000), Decision::Allow);
        assert!(matches!(
            t.check_at("k", s + 100_000_000),
            Decision::Deny(_)
        ));
        // Over 10 s at a steady pace: 10 per second.
        let mut ok = 0;
        for i in 0..10_000u64 {
            if t.check_at("steady", 2 * s + i * 1_000_000) == Decision::Allow {
                ok += 1;
            }
        }
        assert!((100..=103).contains(&ok), "{ok}");
    }

    #[test]
    fn table_is_bounded_and_evicts() {
        let t = Table::new(1, 1, 16);
        for i in 0..10_000u32 {
            t.check_at(i, 1_000);
        }
        assert_eq!(t.slots.len(), 16);
        assert!(t.evictions.load(Relaxed) > 0);
    }
}
