//! A session's one hand-written future (split from `session.rs`).
//!
//! An idle session is most of a gateway's memory (bench/README.md,
//! "WebSocket gateway"), so while it waits it holds only what it waits
//! with: the runtime's readiness wait on each socket (a PollAdd on
//! io_uring, epoll on the legacy driver), the two frame readers' state, and
//! one coarse deadline for the heartbeat, drain and close bounds. When a
//! socket is ready or a push is queued, that direction's work runs in a
//! boxed future ([`Drive::up`], [`Drive::down`]: reads, frame walking,
//! sends, splices, flushes, the close) until the socket would block, then
//! the box is freed and the direction waits again. Before, three `async`
//! loops under a `select!` each kept their buffers' slots, send and splice
//! states and a readiness future inline for the session's whole life.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use monoio::net::TcpStream;

use crate::worker::timer::CoarseSleep;

use super::frame::{FrameReader, Parked, Role};
use super::record::{PUSH, WATCH};
use super::session::{Drive, Reason, UpEnd};

/// The runtime's readiness wait on `s`; a fn item, so [`Idle`] can make
/// new ones (its type cannot be named).
pub(super) fn readable(s: &TcpStream) -> impl Future<Output = io::Result<()>> + '_ {
    s.readable(false)
}

/// A direction's work in progress; it gives its frame reader back.
type Job<'d, T> = Pin<Box<dyn Future<Output = (FrameReader, Option<T>)> + 'd>>;

/// The session's future: see the module doc. Index 0 of `ready` is the
/// client socket (up), 1 the backend (down).
pub(super) struct Idle<'d, 'a, R, K> {
    d: &'d Drive<'a>,
    /// Makes a readiness wait (zero-sized: a fn item).
    mk: K,
    ready: [Option<R>; 2],
    /// A direction's reader while it waits, parked (16 B at a frame
    /// boundary; its job holds it otherwise).
    up_r: Option<Parked>,
    down_r: Option<Parked>,
    up_job: Option<Job<'d, UpEnd>>,
    down_job: Option<Job<'d, Reason>>,
    /// The client sent all it will (a close was requested from its side).
    up_done: bool,
    /// The next heartbeat, drain or close deadline (coarse clock).
    sleep: Option<CoarseSleep<'a>>,
    sleep_at: u64,
    /// The client activity a ping was last asked for.
    pinged_for: u64,
}

impl<'d, 'a: 'd, R, K> Idle<'d, 'a, R, K>
where
    R: Future<Output = io::Result<()>>,
    K: Fn(&'a TcpStream) -> R,
{
    /// Starts both directions with the bytes that came behind the
    /// handshake (each job reads no further before its first wait).
    pub(super) fn new(
        d: &'d Drive<'a>,
        mk: K,
        readers: (FrameReader, FrameReader),
        early_up: Vec<u8>,
        early_down: Vec<u8>,
    ) -> Self {
        Idle {
            d,
            mk,
            ready: [None, None],
            up_r: None,
            down_r: None,
            up_job: Some(Box::pin(d.up(readers.0, early_up, false))),
            down_job: Some(Box::pin(d.down(readers.1, early_down, false))),
            up_done: false,
            sleep: None,
            sleep_at: 0,
            pinged_for: u64::MAX,
        }
    }

    /// Polls readiness wait `i`, making it first if there is none; true
    /// once it completed (with a result: errors show in the next read).
    fn poll_ready(&mut self, i: usize, cx: &mut Context<'_>) -> Option<io::Result<()>> {
        let slot = &mut self.ready[i];
        if slot.is_none() {
            let s = if i == 0 {
                self.d.c.client.stream
            } else {
                self.d.c.backend
            };
            *slot = Some((self.mk)(s));
        }
        let fut = slot.as_mut()?;
        // SAFETY: `fut` lives in `self.ready[i]`, pinned with `self` (see
        // `poll`): it is not moved until dropped in place below.
        match unsafe { Pin::new_unchecked(fut) }.poll(cx) {
            Poll::Pending => None,
            Poll::Ready(r) => {
                *slot = None;
                Some(r)
            }
        }
    }

    /// Client -> backend; `Some` when that direction ended.
    fn drive_up(&mut self, cx: &mut Context<'_>) -> Option<UpEnd> {
        loop {
            if let Some(job) = &mut self.up_job {
                let (r, end) = match job.as_mut().poll(cx) {
                    Poll::Pending => return None,
                    Poll::Ready(x) => x,
                };
                self.up_job = None;
                self.up_r = Some(r.park());
                if end.is_some() {
                    return end;
                }
            }
            match self.poll_ready(0, cx)? {
                Ok(()) => {}
                Err(_) => return Some(UpEnd::Over(Reason::Client)),
            }
            let r = self.up_r.take()?.unpark(self.d.reader(Role::Client));
            self.up_job = Some(Box::pin(self.d.up(r, Vec::new(), true)));
        }
    }

    /// Backend -> client and pushes; `Some` when the session is over.
    fn drive_down(&mut self, cx: &mut Context<'_>) -> Option<Reason> {
        let s = &self.d.s;
        loop {
            if let Some(job) = &mut self.down_job {
                let (r, end) = match job.as_mut().poll(cx) {
                    Poll::Pending => return None,
                    Poll::Ready(x) => x,
                };
                self.down_job = None;
                self.down_r = Some(r.park());
                if end.is_some() {
                    return end;
                }
            }
            let pushed = Pin::new(&mut s.wake.notified(PUSH)).poll(cx).is_ready();
            // The readiness wait is kept across pushes: on io_uring a push
            // must not cancel and re-submit the PollAdd.
            let readable = self.poll_ready(1, cx).is_some();
            if !pushed && !readable {
                // Parked between two backend messages with everything sent:
                // a push may go straight to the client (plain TCP clients
                // only: a TLS client's records are written by the session).
                let client = self.d.c.client;
                if client.splices()
                    && !self.d.server_closed.get()
                    && self
                        .down_r
                        .as_ref()
                        .is_some_and(|r| r.at_message_boundary())
                {
                    s.direct.set(client.stream.as_raw_fd());
                }
                return None;
            }
            s.direct.set(-1);
            let r = self.down_r.take()?.unpark(self.d.reader(Role::Server));
            self.down_job = Some(Box::pin(self.d.down(r, Vec::new(), readable)));
        }
    }

    /// Heartbeat, drain and close deadlines; `Some` to cut a session whose
    /// close could not be sent in time.
    fn watch(&mut self, cx: &mut Context<'_>) -> Option<Reason> {
        loop {
            // Registers the waker; whatever it says, the deadlines are
            // looked at again below.
            let _ = Pin::new(&mut self.d.s.wake.notified(WATCH)).poll(cx);
            let next = match self.d.watch_next(&mut self.pinged_for) {
                Ok(next) => next,
                Err(reason) => return Some(reason),
            };
            if self.sleep.is_none() || self.sleep_at != next {
                // A worker's stop wakes every coarse sleep (`wake_all`).
                self.sleep = Some(self.d.c.ctx.timers.sleep_until(next));
                self.sleep_at = next;
            }
            match Pin::new(self.sleep.as_mut()?).poll(cx) {
                Poll::Pending => return None,
                Poll::Ready(()) => self.sleep = None,
            }
        }
    }
}

impl<'d, 'a: 'd, R, K> Future for Idle<'d, 'a, R, K>
where
    R: Future<Output = io::Result<()>>,
    K: Fn(&'a TcpStream) -> R,
{
    /// Why the session ended ([`Drive::finish`] done).
    type Output = Reason;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reason> {
        // SAFETY: only the readiness waits in `ready` are pinned
        // (structurally): they are never moved out, only dropped in place
        // (`= None`) or written into an empty slot, and there is no `Drop`
        // impl. Every other field is `Unpin` and only accessed by `&mut`.
        let this = unsafe { self.get_unchecked_mut() };
        if !this.up_done {
            match this.drive_up(cx) {
                None => {}
                Some(UpEnd::Over(reason)) => return Poll::Ready(this.d.finish(reason)),
                Some(UpEnd::Close(code, msg, why)) => {
                    // The down direction sends it at the next frame boundary.
                    this.up_done = true;
                    this.ready[0] = None;
                    this.d.s.request_close(code, &msg, why);
                }
            }
        }
        if let Some(reason) = this.drive_down(cx).or_else(|| this.watch(cx)) {
            return Poll::Ready(this.d.finish(reason));
        }
        Poll::Pending
    }
}
