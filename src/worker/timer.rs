//! Coarse per-worker timers for long, imprecise deadlines (idle timeouts).
//!
//! Why not the runtime's `Sleep`: it is 640 bytes, and every idle tunnel
//! would carry one inside its task for its whole life (the 4 KiB-per-idle-
//! connection budget). A [`CoarseSleep`] is 16 bytes (a [`Deadline`] 8); waiting registers a
//! waker in a per-worker bucket keyed by deadline rounded up to the worker
//! tick, and the tick wakes every bucket that is due. Resolution is one tick
//! (100 ms), which idle timeouts of seconds to minutes do not notice.
//!
//! A sleep dropped before its deadline (the common case: a keep-alive
//! connection's next request arrives) leaves its key in its bucket until that
//! bucket is due, which is the whole keep-alive timeout away: one entry per
//! request. So stale entries are compacted away once they outnumber the live
//! waiters (amortized O(1) per sleep), or memory would grow with request rate
//! x timeout. Slab keys are reused, so each waiter also records its tick: an
//! entry wakes a waiter only if filed under that waiter's tick. A spurious
//! wake-up is harmless (the waiter re-checks its deadline); a missed one is
//! impossible.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::slots::Slots;

use super::TICK;

const TICK_MS: u64 = TICK.as_millis() as u64;

/// Stale bucket entries tolerated beyond twice the live waiters before a compaction.
const COMPACT_SLACK: usize = 1024;

/// One registered sleep: its waker (taken when its bucket fires: `armed`
/// false, a no-op waker in its place) and its tick.
///
/// 24 bytes, and 24 as a `Slots` entry (the waker's non-null vtable is the
/// entry's niche): with `Option<Waker>` and a u64 tick an entry was 32, and
/// the slab holds one per idle connection (2,000 connections: 48 KiB
/// instead of 64).
struct Waiter {
    waker: Waker,
    tick: u32,
    armed: bool,
}

impl Waiter {
    /// The waker, if armed; disarms.
    fn take(&mut self) -> Option<Waker> {
        if !std::mem::replace(&mut self.armed, false) {
            return None;
        }
        Some(std::mem::replace(&mut self.waker, Waker::noop().clone()))
    }
}

/// A worker's coarse timer set; driven by [`CoarseTimers::fire`] on every tick.
#[derive(Default)]
pub struct CoarseTimers {
    /// In fixed pages (`Slots`), not a doubling `Vec`: see `worker::slots`.
    waiters: RefCell<Slots<Waiter>>,
    /// Tick number -> slab keys to wake at that tick (u32: keys stay
    /// below 2^31, see [`Deadline`]; one or two entries per idle connection).
    buckets: RefCell<BTreeMap<u64, Vec<u32>>>,
    /// Entries in `buckets`, stale ones included.
    filed: Cell<usize>,
    now: Cell<u64>,
}

impl CoarseTimers {
    pub fn new(now_ms: u64) -> CoarseTimers {
        let t = CoarseTimers::default();
        t.now.set(now_ms);
        t
    }

    /// Completes once the tick clock reaches `deadline_ms` (ms since the process epoch).
    pub fn sleep_until(&self, deadline_ms: u64) -> CoarseSleep<'_> {
        CoarseSleep {
            timers: self,
            at: Deadline::new(deadline_ms),
        }
    }

    /// Advances the clock to `now_ms` and wakes every waiter that is due.
    pub fn fire(&self, now_ms: u64) {
        self.now.set(now_ms);
        let due_tick = now_ms / TICK_MS;
        loop {
            let keys = {
                let mut b = self.buckets.borrow_mut();
                match b.first_key_value() {
                    Some((&t, _)) if t <= due_tick => b.pop_first(),
                    _ => None,
                }
            };
            let Some((tick, keys)) = keys else { break };
            self.filed.set(self.filed.get().saturating_sub(keys.len()));
            for k in keys {
                let w = match self.waiters.borrow_mut().get_mut(k as usize) {
                    Some(w) if u64::from(w.tick) == tick => w.take(),
                    _ => None,
                };
                if let Some(w) = w {
                    w.wake();
                }
            }
        }
    }

    /// Files waiter `k` under `tick`; compacts when stale entries pile up.
    fn file(&self, k: u32, tick: u64) {
        self.buckets.borrow_mut().entry(tick).or_default().push(k);
        self.filed.set(self.filed.get() + 1);
        if self.filed.get() > 2 * self.waiters.borrow().len() + COMPACT_SLACK {
            self.compact();
        }
    }

    /// Drops every bucket entry that no longer names an armed waiter of that tick.
    fn compact(&self) {
        let waiters = self.waiters.borrow();
        let mut filed = 0;
        self.buckets.borrow_mut().retain(|&tick, keys| {
            keys.sort_unstable();
            keys.dedup();
            keys.retain(|&k| {
                waiters
                    .get(k as usize)
                    .is_some_and(|w| u64::from(w.tick) == tick && w.armed)
            });
            filed += keys.len();
            !keys.is_empty()
        });
        self.filed.set(filed);
    }

    /// Wakes every armed waiter now (a spurious wake-up for each: it re-checks
    /// its deadline and files itself again). Used once, when the worker stops.
    pub fn wake_all(&self) {
        let wakers: Vec<Waker> = self
            .waiters
            .borrow_mut()
            .iter_mut()
            .filter_map(|(_, w)| w.take())
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Registered waiters (for tests and status).
    pub fn pending(&self) -> usize {
        self.waiters.borrow().len()
    }

    /// Entries filed in the buckets, stale ones included (for tests).
    pub fn filed(&self) -> usize {
        self.filed.get()
    }
}

/// A coarse deadline and its registration, without the timers reference:
/// for hand-written futures that keep the worker context anyway (an idle
/// http connection's wait, a tunnel), 8 bytes fewer than a [`CoarseSleep`].
/// Poll it with [`CoarseTimers::poll_deadline`]; drop it only through
/// [`CoarseTimers::disarm`] (or its waiter stays registered until the worker
/// stops; harmless, but a slot).
///
/// 8 bytes: the deadline as a tick number (u32: 13 years of ticks since the
/// process epoch; later saturates), the waiter's slab key in 31 bits and
/// the owner's flag in the top bit. It sits in every idle connection's task.
pub struct Deadline {
    /// The tick (`TICK`) at which the deadline is due: its ms rounded up.
    tick: u32,
    /// Slab key of the registered waiter ([`NO_KEY`] when none), and
    /// [`MARK`] for the owner's own use.
    key: u32,
}

/// [`Deadline::key`] of a deadline not registered (the key bits).
const NO_KEY: u32 = !MARK;
/// [`Deadline::key`]'s flag bit (see [`Deadline::mark`]).
const MARK: u32 = 1 << 31;

impl Deadline {
    pub const fn new(deadline_ms: u64) -> Deadline {
        let tick = deadline_ms.div_ceil(TICK_MS);
        Deadline {
            tick: if tick > u32::MAX as u64 {
                u32::MAX
            } else {
                tick as u32
            },
            key: NO_KEY,
        }
    }

    /// The deadline in ms (since the process epoch), rounded up to its tick.
    pub fn deadline_ms(&self) -> u64 {
        u64::from(self.tick) * TICK_MS
    }

    /// The owner's flag (an idle http wait: it is the drain's grace).
    pub fn marked(&self) -> bool {
        self.key & MARK != 0
    }

    /// Sets [`Deadline::marked`].
    pub fn mark(&mut self) {
        self.key |= MARK;
    }

    fn slot(&self) -> u32 {
        self.key & NO_KEY
    }

    fn set_slot(&mut self, k: u32) {
        self.key = (self.key & MARK) | (k & NO_KEY);
    }
}

impl CoarseTimers {
    /// Ready once the tick clock reaches `d`'s tick; else registers (or
    /// refreshes) the waker.
    pub fn poll_deadline(&self, d: &mut Deadline, cx: &mut Context<'_>) -> Poll<()> {
        if self.now.get() >= d.deadline_ms() {
            self.disarm(d);
            return Poll::Ready(());
        }
        let tick = u64::from(d.tick);
        if d.slot() != NO_KEY {
            let k = d.slot();
            let mut w = self.waiters.borrow_mut();
            match w.get_mut(k as usize) {
                // Still registered (a spurious wake, or a re-poll): refresh the
                // waker, and re-file in case a fire already took our bucket.
                Some(slot) => {
                    let was_armed = slot.armed && slot.tick == d.tick;
                    slot.waker.clone_from(cx.waker());
                    slot.tick = d.tick;
                    slot.armed = true;
                    drop(w);
                    if !was_armed {
                        self.file(k, tick);
                    }
                    return Poll::Pending;
                }
                None => d.set_slot(NO_KEY),
            }
        }
        let k = self.waiters.borrow_mut().insert(Waiter {
            waker: cx.waker().clone(),
            tick: d.tick,
            armed: true,
        });
        // Slab keys are reused and bounded by the open waiters (connections):
        // far below 2^31. Past it, the waiter is dropped again and the
        // deadline is checked on every wake-up instead (never reached).
        match u32::try_from(k) {
            Ok(key) if key < NO_KEY => {
                d.set_slot(key);
                self.file(key, tick);
            }
            _ => {
                self.waiters.borrow_mut().try_remove(k);
            }
        }
        Poll::Pending
    }

    /// Unregisters `d`'s waiter, if any (it stays a valid, unarmed deadline).
    pub fn disarm(&self, d: &mut Deadline) {
        if d.slot() != NO_KEY {
            self.waiters.borrow_mut().try_remove(d.slot() as usize);
            d.set_slot(NO_KEY);
        }
    }
}

/// Future returned by [`CoarseTimers::sleep_until`].
pub struct CoarseSleep<'a> {
    timers: &'a CoarseTimers,
    at: Deadline,
}

impl Future for CoarseSleep<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.timers.poll_deadline(&mut this.at, cx)
    }
}

impl Drop for CoarseSleep<'_> {
    fn drop(&mut self) {
        self.timers.disarm(&mut self.at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// What every idle connection holds of the timers: its `Deadline` (in
    /// its task) and a waiter slot (in the slab, whose entry is a `Waiter`
    /// with a niche for the vacant case, as `Option<Waiter>` shows).
    #[test]
    fn a_deadline_and_a_waiter_slot_stay_small() {
        assert_eq!(std::mem::size_of::<Deadline>(), 8);
        assert_eq!(std::mem::size_of::<CoarseSleep<'static>>(), 16);
        assert_eq!(std::mem::size_of::<Waiter>(), 24);
        assert_eq!(std::mem::size_of::<super::super::slots::Slot<Waiter>>(), 24);
        // The mark bit and the key bits do not disturb each other.
        let t = CoarseTimers::new(0);
        let c = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(c.clone());
        let mut cx = Context::from_waker(&waker);
        let mut d = Deadline::new(1_001);
        assert_eq!(d.deadline_ms(), 1_100, "rounded up to its tick");
        d.mark();
        assert!(t.poll_deadline(&mut d, &mut cx).is_pending());
        assert!(d.marked() && d.slot() != NO_KEY);
        t.disarm(&mut d);
        assert!(d.marked() && d.slot() == NO_KEY);
        assert_eq!(t.pending(), 0);
        assert_eq!(
            Deadline::new(u64::MAX).deadline_ms(),
            u64::from(u32::MAX) * TICK_MS
        );
    }

    #[test]
    fn wakes_at_the_deadline_tick_and_cleans_up() {
        let t = CoarseTimers::new(0);
        let c = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(c.clone());
        let mut cx = Context::from_waker(&waker);
        let mut s = Box::pin(t.sleep_until(1_050));
        assert!(s.as_mut().poll(&mut cx).is_pending());
        assert_eq!(t.pending(), 1);
        t.fire(1_000);
        assert_eq!(c.0.load(Ordering::SeqCst), 0, "not due yet");
        assert!(s.as_mut().poll(&mut cx).is_pending());
        t.fire(1_100);
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
        assert!(s.as_mut().poll(&mut cx).is_ready());
        assert_eq!(t.pending(), 0);
        // Dropping a pending sleep unregisters it.
        let mut s2 = Box::pin(t.sleep_until(5_000));
        assert!(s2.as_mut().poll(&mut cx).is_pending());
        drop(s2);
        assert_eq!(t.pending(), 0);
        t.fire(6_000);
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
    }

    /// A worker's stop wakes every idle keep-alive connection through its
    /// timer (they hold no stop-event registration): each is woken once,
    /// stays pending until its own deadline, and its deadline still fires.
    #[test]
    fn a_deadline_registers_once_fires_and_disarms() {
        let t = CoarseTimers::new(0);
        let c = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(c.clone());
        let mut cx = Context::from_waker(&waker);
        let mut d = Deadline::new(2_000);
        assert!(t.poll_deadline(&mut d, &mut cx).is_pending());
        assert!(t.poll_deadline(&mut d, &mut cx).is_pending(), "re-poll");
        assert_eq!(t.pending(), 1, "one waiter, however often polled");
        t.fire(1_900);
        assert_eq!(c.0.load(Ordering::SeqCst), 0, "not due yet");
        t.fire(2_000);
        assert_eq!(c.0.load(Ordering::SeqCst), 1, "woken at its tick");
        assert!(t.poll_deadline(&mut d, &mut cx).is_ready());
        assert_eq!(t.pending(), 0, "ready removes the waiter");
        // Re-armed later, then given up (a connection's next request came).
        let mut d = Deadline::new(9_000);
        assert!(t.poll_deadline(&mut d, &mut cx).is_pending());
        assert_eq!(t.pending(), 1);
        t.disarm(&mut d);
        t.disarm(&mut d);
        assert_eq!(t.pending(), 0, "disarm frees the waiter, twice is harmless");
        t.fire(10_000);
        assert_eq!(
            c.0.load(Ordering::SeqCst),
            1,
            "a disarmed deadline is not woken"
        );
    }

    #[test]
    fn wake_all_wakes_every_waiter_once_and_keeps_deadlines() {
        let t = CoarseTimers::new(0);
        let c = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(c.clone());
        let mut cx = Context::from_waker(&waker);
        let mut sleeps: Vec<_> = (0..3).map(|_| Box::pin(t.sleep_until(60_000))).collect();
        for s in &mut sleeps {
            assert!(s.as_mut().poll(&mut cx).is_pending());
        }
        t.wake_all();
        assert_eq!(c.0.load(Ordering::SeqCst), 3);
        t.wake_all();
        assert_eq!(c.0.load(Ordering::SeqCst), 3, "a woken waiter is not armed");
        // Re-polled (the task checks its stop flag, then sleeps on): armed again.
        for s in &mut sleeps {
            assert!(s.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(t.pending(), 3);
        t.fire(60_000);
        assert_eq!(c.0.load(Ordering::SeqCst), 6);
        for s in &mut sleeps {
            assert!(s.as_mut().poll(&mut cx).is_ready());
        }
        assert_eq!(t.pending(), 0);
    }

    /// The soak's finding: a keep-alive connection drops its idle sleep at
    /// every request; the stale entries must not pile up until the far deadline.
    #[test]
    fn dropped_sleeps_do_not_pile_up() {
        let t = CoarseTimers::new(0);
        let c = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(c.clone());
        let mut cx = Context::from_waker(&waker);
        // 100 idle connections stay armed for 20 minutes.
        let mut idle: Vec<_> = (0..100)
            .map(|_| Box::pin(t.sleep_until(1_200_000)))
            .collect();
        for s in &mut idle {
            assert!(s.as_mut().poll(&mut cx).is_pending());
        }
        // 200,000 requests, each arming and dropping a sleep of the same length.
        for i in 0..200_000u64 {
            let now = i / 10; // ms: 20 s of requests
            t.fire(now);
            let mut s = Box::pin(t.sleep_until(now + 1_200_000));
            assert!(s.as_mut().poll(&mut cx).is_pending());
            drop(s);
            assert!(
                t.filed() <= 2 * (t.pending() + 1) + COMPACT_SLACK,
                "{} entries filed for {} waiters",
                t.filed(),
                t.pending()
            );
        }
        assert_eq!(t.pending(), 100);
        // The live ones still wake, once each, at their deadline.
        t.fire(1_199_000);
        assert_eq!(c.0.load(Ordering::SeqCst), 0);
        t.fire(1_200_000);
        assert_eq!(c.0.load(Ordering::SeqCst), 100);
        for s in &mut idle {
            assert!(s.as_mut().poll(&mut cx).is_ready());
        }
        assert_eq!(t.pending(), 0);
        t.fire(2_000_000);
        assert_eq!(t.filed(), 0);
    }
}
