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
//! So when the worker's open-connection count changed and then held still
//! for a tick (the burst is over), the worker asks mimalloc for a forced
//! collect of its own heap, at most once per [`MIN_GAP_MS`]. A steady load
//! (a fixed set of keep-alive connections) never triggers it; a churning
//! one at most about three times a second, at the cost of a walk over the
//! worker's heap pages and page faults when the purged memory is used
//! again (not measured on its own; the echo and broadcast benchmarks'
//! CPU, which open their connections then run, showed no change).

use std::cell::Cell;

use crate::http::buf::BufPool;

/// Least time between two collects. Short enough that a collect during a
/// pause in a burst does not hold back the one after it by much (the
/// memory is measured a second after the burst in bench/gateway.py).
pub(super) const MIN_GAP_MS: u64 = 300;

/// When to collect: see the module doc.
#[derive(Default)]
pub(super) struct Trim {
    /// The open-connection count at the previous tick.
    last_active: Cell<usize>,
    /// It changed since the last collect.
    dirty: Cell<bool>,
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
            self.dirty.set(true);
            return false;
        }
        if !self.dirty.get() || now_ms < self.last_collect_ms.get() + MIN_GAP_MS {
            return false;
        }
        self.dirty.set(false);
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
    fn collects_once_after_a_change_settles() {
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
        // A new change settles within MIN_GAP_MS of the last collect: wait.
        now += 10;
        assert!(!t.tick(501, now, &bufs));
        now += 10;
        assert!(!t.tick(501, now, &bufs), "too soon after the last collect");
        now += MIN_GAP_MS;
        assert!(t.tick(501, now, &bufs), "then it collects");
    }
}
