//! Open connections per client IP address, for `max_connections_per_ip`:
//! a count-min sketch (two hashed tables of atomic counters) that workers
//! update without a lock. The smaller of an address's two counters is never
//! below its true count, so an address is never let past its limit; two busy
//! addresses would have to share both counters to be refused early.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

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
