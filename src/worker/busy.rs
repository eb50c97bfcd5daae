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
//! How, without a fork of monoio's loop: a task waits for readiness on a
//! socket that always has a byte to read (one end of a socketpair, never
//! drained). Its PollAdd completes the moment it is submitted, so whenever
//! the runtime runs out of tasks and parks, the park returns at once, having
//! reaped every completion and fired every due timer as a normal wake-up
//! would. io_uring only: the epoll driver answers a ready socket without
//! parking, so such a task would never let the runtime poll at all.

use std::cell::Cell;
use std::io::Write;
use std::rc::Rc;

use super::{Driver, WorkerCtx};

/// Whether this worker's spinning task runs.
#[derive(Default)]
pub struct Busy {
    running: Cell<bool>,
    warned: Cell<bool>,
}

/// Starts the spinning task when the live config asks for it (at start and
/// after each reload); the task stops by itself when a reload turns it off.
pub fn follow(ctx: &Rc<WorkerCtx>, driver: Driver) {
    if !ctx.live.borrow().snapshot.busy_poll || ctx.busy.running.get() {
        return;
    }
    if driver != Driver::Uring {
        if !ctx.busy.warned.replace(true) {
            tracing::warn!(
                worker = ctx.id,
                "busy_poll needs the io_uring driver; this worker runs on epoll and sleeps as usual"
            );
        }
        return;
    }
    ctx.busy.running.set(true);
    monoio::spawn(spin(ctx.clone()));
}

async fn spin(ctx: Rc<WorkerCtx>) {
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

/// A socketpair whose first end always has one unread byte.
fn always_readable() -> std::io::Result<(monoio::net::UnixStream, std::os::unix::net::UnixStream)> {
    let (r, mut w) = std::os::unix::net::UnixStream::pair()?;
    w.write_all(b"!")?;
    r.set_nonblocking(true)?;
    Ok((monoio::net::UnixStream::from_std(r)?, w))
}
