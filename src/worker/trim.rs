//! Gives memory back to the kernel once a burst of connections is over.
//!
//! mimalloc (v3 here) frees the pages of a burst (handshakes, request
//! futures, head buffers) and purges them after a delay, but only from its
//! own calls on that thread: a worker that goes quiet after the burst
//! (10,000 WebSocket sessions opened, then idle) kept them resident.
//! Measured (bench/gateway.py, idle case, one worker): about 4.5 MiB after
//! 1,000 or 9,900 sessions, 450 B per session at 9,900 (bench/README.md,
//! "WebSocket gateway").
//!
//! So when the worker's open-connection count moved by a burst's worth
//! since the last collect (at least [`BURST`] connections, either way) and
//! then held still for a tick (the burst is over), the worker asks mimalloc for a forced collect of its own heap, at
//! most once per [`MIN_GAP_MS`]. A steady load never triggers it: neither a
//! fixed set of keep-alive connections nor a connection per request, whose
//! count moves by a few around its level (the collect is a walk over the
//! worker's heap pages, and purged memory costs page faults when used
//! again: not a thing to do three times a second under load).

use std::cell::Cell;

use crate::http::buf::BufPool;

/// Least time between two collects. Short enough that a collect during a
/// pause in a burst does not hold back the one after it by much (the
/// memory is measured a second after the burst in bench/gateway.py).
pub(super) const MIN_GAP_MS: u64 = 300;

/// The least change of the open-connection count that counts as a burst.
pub(super) const BURST: usize = 256;

/// When to collect: see the module doc.
#[derive(Default)]
pub(super) struct Trim {
    /// The open-connection count at the previous tick.
    last_active: Cell<usize>,
    /// The count at the last collect (0 at start).
    at_collect: Cell<usize>,
    last_collect_ms: Cell<u64>,
}

impl Trim {
    /// Called every tick; true when it collected. `bufs`' spare buffers
    /// are freed first: the burst's 16 KiB buffers share mimalloc pages
    /// with them, and a page with one live block is never purged (measured:
    /// the pool's 63 spare buffers kept 2.6 MiB of such pages resident after
    /// 9,900 sessions opened 200 at a time). The pool refills on demand.
    pub(super) fn tick(&self, active: usize, now_ms: u64, bufs: &BufPool) -> bool {
        if self.last_active.replace(active) != active {
            return false;
        }
        let before = self.at_collect.get();
        if active.abs_diff(before) < BURST || now_ms < self.last_collect_ms.get() + MIN_GAP_MS {
            return false;
        }
        self.at_collect.set(active);
        self.last_collect_ms.set(now_ms);
        while bufs.idle() > 0 {
            drop(bufs.take());
        }
        // SAFETY: mi_collect only walks and frees this thread's own mimalloc
        // heap and segments; it takes no pointers. Harmless when mimalloc is
        // not the global allocator (tests): its heap is then empty.
        unsafe { libmimalloc_sys::mi_collect(true) };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_once_after_a_burst_settles() {
        let t = Trim::default();
        let bufs = BufPool::new(4);
        bufs.put(Vec::with_capacity(crate::http::buf::BUF_SIZE));
        let mut now = 10_000;
        assert!(!t.tick(0, now, &bufs), "nothing changed");
        for active in [5, 50, 500] {
            now += 100;
            assert!(!t.tick(active, now, &bufs), "still changing");
        }
        now += 100;
        assert_eq!(bufs.idle(), 1);
        assert!(t.tick(500, now, &bufs), "settled: collect");
        assert_eq!(bufs.idle(), 0, "spare buffers freed");
        now += 10;
        assert!(!t.tick(500, now, &bufs), "once per settling");
        // Churn around a level is no burst, however long it lasts.
        for active in [498, 501, 501, 503, 503, 497, 497, 500, 500] {
            now += 100;
            assert!(!t.tick(active, now, &bufs), "churn at {active}");
        }
        // The burst closes: collect once it settles, not within MIN_GAP_MS.
        now += 100;
        assert!(!t.tick(0, now, &bufs));
        now += 100;
        assert!(t.tick(0, now, &bufs), "closed and settled: collect");
        now += 10;
        assert!(!t.tick(300, now, &bufs));
        now += 10;
        assert!(!t.tick(300, now, &bufs), "too soon after the last collect");
        now += MIN_GAP_MS;
        assert!(t.tick(300, now, &bufs), "then it collects");
        // Churn at a high level is no burst either.
        for active in [4_000, 4_000] {
            now += MIN_GAP_MS;
            t.tick(active, now, &bufs);
        }
        for active in [4_100, 4_100, 3_900, 3_900, 4_200, 4_200] {
            now += MIN_GAP_MS;
            assert!(!t.tick(active, now, &bufs), "churn at {active}");
        }
    }
}
