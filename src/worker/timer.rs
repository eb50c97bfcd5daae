//! Coarse per-worker timers for long, imprecise deadlines (idle timeouts).
//!
//! Why not the runtime's `Sleep`: it is 640 bytes, and every idle tunnel
//! would carry one inside its task for its whole life (the 4 KiB-per-idle-
//! connection budget). A [`CoarseSleep`] is 24 bytes; waiting registers a
//! waker in a per-worker bucket keyed by deadline rounded up to the worker
//! tick, and the tick wakes every bucket that is due. Resolution is one tick
//! (100 ms), which idle timeouts of seconds to minutes do not notice.
//!
//! Slab keys are reused, so a bucket may hold a stale key and wake an
//! unrelated waiter: that waiter re-checks its deadline and waits again.
//! Spurious wake-ups are harmless; missed ones are impossible.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use slab::Slab;

use super::TICK;

const TICK_MS: u64 = TICK.as_millis() as u64;

/// A worker's coarse timer set; driven by [`CoarseTimers::fire`] on every tick.
#[derive(Default)]
pub struct CoarseTimers {
    waiters: RefCell<Slab<Option<Waker>>>,
    /// Tick number -> slab keys to wake at that tick.
    buckets: RefCell<BTreeMap<u64, Vec<usize>>>,
    now: std::cell::Cell<u64>,
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
            deadline_ms,
            key: None,
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
                    Some((&t, _)) if t <= due_tick => b.pop_first().map(|(_, v)| v),
                    _ => None,
                }
            };
            let Some(keys) = keys else { break };
            for k in keys {
                let w = self.waiters.borrow_mut().get_mut(k).and_then(Option::take);
                if let Some(w) = w {
                    w.wake();
                }
            }
        }
    }

    /// Registered waiters (for tests and status).
    pub fn pending(&self) -> usize {
        self.waiters.borrow().len()
    }
}

/// Future returned by [`CoarseTimers::sleep_until`].
pub struct CoarseSleep<'a> {
    timers: &'a CoarseTimers,
    deadline_ms: u64,
    key: Option<usize>,
}

impl Future for CoarseSleep<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let t = self.timers;
        if t.now.get() >= self.deadline_ms {
            if let Some(k) = self.key.take() {
                t.waiters.borrow_mut().try_remove(k);
            }
            return Poll::Ready(());
        }
        let tick = self.deadline_ms.div_ceil(TICK_MS);
        match self.key {
            Some(k) => {
                let mut w = t.waiters.borrow_mut();
                match w.get_mut(k) {
                    // Still registered (a spurious wake, or a re-poll): refresh the
                    // waker, and re-file in case a fire already took our bucket.
                    Some(slot) => {
                        let was_armed = slot.is_some();
                        *slot = Some(cx.waker().clone());
                        drop(w);
                        if !was_armed {
                            t.buckets.borrow_mut().entry(tick).or_default().push(k);
                        }
                    }
                    None => {
                        drop(w);
                        self.key = None;
                        return self.poll(cx);
                    }
                }
            }
            None => {
                let k = t.waiters.borrow_mut().insert(Some(cx.waker().clone()));
                t.buckets.borrow_mut().entry(tick).or_default().push(k);
                self.key = Some(k);
            }
        }
        Poll::Pending
    }
}

impl Drop for CoarseSleep<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.timers.waiters.borrow_mut().try_remove(k);
        }
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
}
