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
//! So when a burst is over the worker asks mimalloc for a forced collect
//! of its own heap (and frees the buffer pool's spares first), at most once
//! per [`MIN_GAP_MS`]:
//! - a burst: the open-connection count, sampled each tick, moved by at
//!   least [`BURST`] in all since the last collect (opened or closed);
//! - over: the count held still from one tick to the next;
//! - and once within [`FOLLOW_MS`] after a burst's collect, any movement
//!   followed by a still tick collects again: a pause inside a burst (a collect at
//!   9,800 of 9,900 sessions) must not leave the rest of the burst's pages,
//!   and the spares the pool took back meanwhile, resident (measured: 260
//!   to 600 B per idle session at 9,900 when that happened).
//!
//! A steady load does not trigger it: a fixed set of connections never
//! moves the count; a connection per request moves it by a few around its
//! level, a burst's worth only every several seconds (the collect walks the
//! worker's heap pages, and purged memory costs page faults when used
//! again: not a thing to do several times a second under load). Measured
//! at 9,900 idle gateway sessions (debug log "trim: heap collected"):
//! 85-575 us per collect, 1,030 us with 64 spare buffers to free first.

use std::cell::Cell;

use crate::http::buf::BufPool;

/// Least time between two collects. Short enough that a collect during a
/// pause in a burst does not hold back the one after it by much (the
/// memory is measured a second after the burst in bench/gateway.py).
pub(super) const MIN_GAP_MS: u64 = 300;

/// How far the open-connection count must move (in all) to be a burst.
pub(super) const BURST: usize = 256;

/// After a burst's collect, how long any movement of the count arms the
/// next one (the burst may not be over yet).
pub(super) const FOLLOW_MS: u64 = 2_000;

/// When to collect: see the module doc.
#[derive(Default)]
pub(super) struct Trim {
    /// The open-connection count at the previous tick.
    last_active: Cell<usize>,
    /// How far it moved in all since the last collect.
    moved: Cell<usize>,
    /// Until when any movement arms a collect (after a burst's collect).
    follow_until_ms: Cell<u64>,
    last_collect_ms: Cell<u64>,
}

impl Trim {
    /// Called every tick; true when it collected. `bufs`' spare buffers
    /// are freed first: the burst's 16 KiB buffers share mimalloc pages
    /// with them, and a page with one live block is never purged (measured:
    /// the pool's 63 spare buffers kept 2.6 MiB of such pages resident after
    /// 9,900 sessions opened 200 at a time). The pool refills on demand.
    pub(super) fn tick(&self, active: usize, now_ms: u64, bufs: &BufPool) -> bool {
        let prev = self.last_active.replace(active);
        if prev != active {
            self.moved
                .set(self.moved.get().saturating_add(prev.abs_diff(active)));
            return false;
        }
        let moved = self.moved.get();
        let burst = moved >= BURST;
        let follow = moved > 0 && now_ms < self.follow_until_ms.get();
        if !(burst || follow) || now_ms < self.last_collect_ms.get() + MIN_GAP_MS {
            return false;
        }
        // One follow-up per burst: under churn a window re-opened by every
        // collect would collect every MIN_GAP_MS.
        self.follow_until_ms
            .set(if burst { now_ms + FOLLOW_MS } else { 0 });
        self.moved.set(0);
        self.last_collect_ms.set(now_ms);
        let started = std::time::Instant::now();
        let spares = bufs.idle();
        while bufs.idle() > 0 {
            drop(bufs.take());
        }
        // SAFETY: mi_collect only walks and frees this thread's own mimalloc
        // heap and segments; it takes no pointers. Harmless when mimalloc is
        // not the global allocator (tests): its heap is then empty.
        unsafe { libmimalloc_sys::mi_collect(true) };
        tracing::debug!(
            active,
            spares,
            us = started.elapsed().as_micros() as u64,
            "trim: heap collected after a burst"
        );
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
        // The burst goes on after a pause: its tail is collected too,
        // however small, once MIN_GAP_MS has passed.
        now += 100;
        assert!(!t.tick(540, now, &bufs));
        now += 100;
        assert!(!t.tick(540, now, &bufs), "too soon after the last collect");
        now += MIN_GAP_MS;
        assert!(t.tick(540, now, &bufs), "the burst's tail");
        // Past FOLLOW_MS, churn around a level is no burst.
        now += FOLLOW_MS;
        for active in [538, 541, 541, 543, 543, 537, 537, 540, 540] {
            now += 100;
            assert!(!t.tick(active, now, &bufs), "churn at {active}");
        }
        // The connections close: a burst the other way.
        now += 100;
        assert!(!t.tick(0, now, &bufs));
        now += 100;
        assert!(t.tick(0, now, &bufs), "closed and settled: collect");
        // Churn a few connections at a time collects only once it has
        // added up to a burst (here after 256 / 8 = 32 moves of 8), plus
        // that burst's one follow-up.
        now += FOLLOW_MS;
        let mut collects = 0;
        for i in 0..200 {
            now += 100;
            let active = if i % 2 == 0 { 8 } else { 0 };
            t.tick(active, now, &bufs);
            collects += usize::from(t.tick(active, now + 50, &bufs));
            now += 50;
        }
        assert!(
            collects <= 2 * (200 * 8 / BURST + 1),
            "{collects} collects under churn"
        );
    }
}
