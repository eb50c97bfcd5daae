//! Busy polling (`"busy_poll": true`): a worker that never sleeps in the
//! kernel while it waits.
//!
//! On a virtual machine, a worker that blocks in `io_uring_enter` lets its
//! vCPU halt, and the next packet for it has to wake that vCPU through the
//! host: tens of microseconds at the median and milliseconds in the tail
//! here (`bench/wake_rtt.c`), once per hop. HAProxy's `busy-polling`
//! answers the same problem the same way: the worker keeps polling with a
//! zero timeout and gives up a whole CPU for it. Off by default; a reload
//! turns it on or off.
//!
//! How, without a fork of monoio's loop, which parks (waits in the kernel)
//! whenever it runs out of tasks:
//!
//! - **io_uring**: a task waits for readiness on a socket that always has a
//!   byte to read (one end of a socketpair, never drained). Its PollAdd
//!   completes the moment it is submitted, so every park returns at once,
//!   having reaped every completion and fired every due timer as a normal
//!   wake-up would.
//! - **epoll**: the same socket would be answered without a park at all
//!   (the legacy driver polls a ready fd itself), so two tasks pass a
//!   baton ([`Baton`]): with a task always queued, the runtime's loop polls
//!   epoll with a zero timeout instead of parking. That poll does not fire
//!   timers, so every [`TIMER_EVERY`] passes the spinner sleeps until a
//!   moment already past, which parks the runtime with a zero timeout and
//!   fires what is due.

use std::cell::Cell;
use std::future::Future;
use std::io::Write;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::{Driver, WorkerCtx};

/// Whether this worker's spinning task runs.
#[derive(Default)]
pub struct Busy {
    running: Cell<bool>,
}

/// Starts the spinning task when the live config asks for it (at start and
/// after each reload); the task stops by itself when a reload turns it off.
pub fn follow(ctx: &Rc<WorkerCtx>, driver: Driver) {
    if !ctx.live.borrow().snapshot.busy_poll || ctx.busy.running.get() {
        return;
    }
    ctx.busy.running.set(true);
    match driver {
        Driver::Uring => monoio::spawn(spin_uring(ctx.clone())),
        Driver::Epoll => monoio::spawn(spin_epoll(ctx.clone())),
    };
}

async fn spin_uring(ctx: Rc<WorkerCtx>) {
    let r = always_readable();
    let (r, _w) = match r {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(worker = ctx.id, "busy polling off: {e}");
            ctx.busy.running.set(false);
            return;
        }
    };
    tracing::debug!(worker = ctx.id, "busy polling on");
    // `_w` lives as long as the loop: its byte keeps `r` readable.
    while ctx.live.borrow().snapshot.busy_poll {
        if let Err(e) = r.readable(false).await {
            tracing::warn!(worker = ctx.id, "busy polling stopped: {e}");
            break;
        }
    }
    tracing::debug!(worker = ctx.id, "busy polling off");
    ctx.busy.running.set(false);
}

/// Baton passes between timer rounds on the epoll driver: each is one
/// zero-timeout `epoll_wait` and a pass over the ready tasks (1-2 us idle),
/// so timers fire within about half a millisecond of being due, well inside
/// the timer wheel's own 1 ms resolution.
const TIMER_EVERY: u32 = 256;

async fn spin_epoll(ctx: Rc<WorkerCtx>) {
    tracing::debug!(worker = ctx.id, "busy polling on");
    let baton = Rc::new(Baton::default());
    monoio::spawn(partner(baton.clone()));
    let mut n = 0u32;
    while ctx.live.borrow().snapshot.busy_poll {
        baton.pass(1);
        baton.wait(0).await;
        n = n.wrapping_add(1);
        if n.is_multiple_of(TIMER_EVERY) {
            // Already due: the runtime parks with a zero timeout (or the
            // timer fires on registration when the clock's last tick is
            // newer than it), and timers due by now fire.
            let past = Instant::now()
                .checked_sub(Duration::from_millis(2))
                .unwrap_or_else(Instant::now);
            monoio::time::sleep_until(past.into()).await;
        }
    }
    baton.stop.set(true);
    baton.pass(1);
    tracing::debug!(worker = ctx.id, "busy polling off");
    ctx.busy.running.set(false);
}

/// The other half of the epoll spinner: hands the baton straight back.
async fn partner(baton: Rc<Baton>) {
    loop {
        baton.wait(1).await;
        if baton.stop.get() {
            return;
        }
        baton.pass(0);
    }
}

/// Two tasks that wake each other in turn keep one of them always queued,
/// so the runtime polls epoll with a zero timeout instead of parking.
///
/// Why two: monoio queues a task that wakes itself while it runs at the
/// front of the run queue (its `yield_now`), so one self-waking task would
/// run again before the tasks it woke through epoll, and they would wait
/// for its timer round (measured: 3.4 ms per request). A task woken by
/// another one goes to the back, behind everything already ready.
#[derive(Default)]
struct Baton {
    holder: Cell<usize>,
    waiting: [Cell<Option<Waker>>; 2],
    stop: Cell<bool>,
}

impl Baton {
    fn pass(&self, to: usize) {
        self.holder.set(to);
        if let Some(w) = self.waiting[to].take() {
            w.wake();
        }
    }

    fn wait(&self, me: usize) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx: &mut Context<'_>| {
            if self.holder.get() == me {
                return Poll::Ready(());
            }
            self.waiting[me].set(Some(cx.waker().clone()));
            Poll::Pending
        })
    }
}

/// A socketpair whose first end always has one unread byte.
fn always_readable() -> std::io::Result<(monoio::net::UnixStream, std::os::unix::net::UnixStream)> {
    let (r, mut w) = std::os::unix::net::UnixStream::pair()?;
    w.write_all(b"!")?;
    r.set_nonblocking(true)?;
    Ok((monoio::net::UnixStream::from_std(r)?, w))
}
