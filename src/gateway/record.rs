//! A session's record: what the worker's registry and the API see of one
//! session, and the wake-ups its futures wait on (split from `session.rs`).
//! Pushes land here from the worker's hub task; see [`Session::push`].

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::shared::LiveRoute;
use crate::sys;
use crate::worker::peer::Peer;
use crate::worker::WorkerCtx;

use super::channels::Channels;
use super::frame;
use super::session::unix_ms;
use super::stats::{Reason, RouteCounters};
/// The session task's wake-ups: flag bits ([`PUSH`], [`WATCH`]) and one
/// waker for both (single-threaded `Cell`s: 24 B in every session record,
/// where two one-flag wake-ups took 48 B). Both are awaited by the same
/// task, the session's [`super::idle::Idle`] future.
#[derive(Default)]
pub(super) struct Wake {
    set: Cell<u8>,
    waker: Cell<Option<Waker>>,
}

/// A push was queued, a ping or a close is wanted: the down direction.
pub(super) const PUSH: u8 = 1;
/// A deadline moved (drain, close): the watch.
pub(super) const WATCH: u8 = 2;

impl Wake {
    pub(super) fn notify(&self, bits: u8) {
        self.set.set(self.set.get() | bits);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
    pub(super) fn notified(&self, bit: u8) -> Notified<'_> {
        Notified(self, bit)
    }
}

pub(super) struct Notified<'a>(&'a Wake, u8);

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let set = self.0.set.get();
        if set & self.1 != 0 {
            self.0.set.set(set & !self.1);
            return Poll::Ready(());
        }
        self.0.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

/// Counters of one session.
#[derive(Default, Debug, Clone, Copy)]
pub struct Stats {
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub pushed: u64,
    pub pings: u64,
    /// Coarse worker clock (ms since the process epoch).
    pub last_activity_ms: u64,
}

/// Pushed frames waiting for the down direction, and their bytes.
#[derive(Default)]
pub(super) struct Queue {
    frames: VecDeque<Bytes>,
    bytes: u64,
}

/// A close ringmesh asked for: code, reason text, why (for the counters),
/// and when (ms since the process epoch: the bound on sending it starts
/// there).
pub(super) type Close = (u16, String, Reason, u64);

/// A session as the worker's registry and the API see it. Its id is not
/// stored: it is the hub's id for this worker and `n` (`Hub::id`).
pub struct Session {
    pub n: u64,
    pub route: Arc<LiveRoute>,
    /// 16 B (a `SocketAddr` is 32).
    pub client: Peer,
    /// Unix time in ms.
    pub connected_at: u64,
    pub user: RefCell<Box<str>>,
    pub channels: RefCell<Channels>,
    /// Boxed only when there are some (16 B instead of 32 in every record).
    pub settings: RefCell<Option<Box<BTreeMap<String, String>>>>,
    pub stats: Cell<Stats>,
    /// Pushed frames waiting for the down direction; boxed only while
    /// there are some (16 B instead of 40 in every record).
    queue: RefCell<Option<Box<Queue>>>,
    pub(super) ping_wanted: Cell<bool>,
    /// Boxed: requested once, at the end; inline it would be 24 B more in
    /// every record.
    pub(super) close: RefCell<Option<Box<Close>>>,
    /// Close 1001 at this coarse time (0: never): the route left the config.
    pub(super) drain_at_ms: Cell<u64>,
    pub(super) wake: Wake,
    /// A WebSocket session's client socket while a push may be written to
    /// it directly (-1: not now); see [`Session::push`]. A tcp route's
    /// session (list and close only, never pushed to) keeps its client
    /// socket here for good, and its upstream socket in `tcp_upstream`:
    /// both are shut down by a close (nothing is framed, nothing is pushed).
    /// Two fds, not an `Option<(RawFd, RawFd)>` beside this cell: 8 B less,
    /// which with the `Rc` keeps the record in the 256 B class.
    pub(super) direct: Cell<RawFd>,
    /// A tcp route's session: its upstream socket (-1: a WebSocket session).
    tcp_upstream: RawFd,
}

impl Session {
    /// A registry record; `tcp`: the sockets of a tcp route's connection.
    pub(super) fn new(
        ctx: &WorkerCtx,
        n: u64,
        route: &Arc<LiveRoute>,
        client: SocketAddr,
        tcp: Option<(RawFd, RawFd)>,
    ) -> Session {
        Session {
            n,
            route: route.clone(),
            client: client.into(),
            connected_at: unix_ms(),
            user: RefCell::default(),
            channels: RefCell::default(),
            settings: RefCell::default(),
            stats: Cell::new(Stats {
                last_activity_ms: ctx.now_ms(),
                ..Stats::default()
            }),
            queue: RefCell::new(None),
            ping_wanted: Cell::new(false),
            close: RefCell::new(None),
            drain_at_ms: Cell::new(0),
            wake: Wake::default(),
            direct: Cell::new(tcp.map_or(-1, |t| t.0)),
            tcp_upstream: tcp.map_or(-1, |t| t.1),
        }
    }

    /// When a close was requested (0: none was).
    pub(super) fn close_at_ms(&self) -> u64 {
        self.close.borrow().as_ref().map_or(0, |c| c.3)
    }

    /// Why a close was requested, if one was.
    pub(super) fn requested_close(&self) -> Option<Reason> {
        self.close.borrow().as_ref().map(|c| c.2)
    }

    /// The route's `send_queue` (the record's route is the one the session
    /// opened with: a reload does not change it).
    fn limit(&self) -> u64 {
        self.route.cfg.gateway.map_or(0, |g| g.send_queue)
    }

    /// Whether pushed frames wait in the queue.
    pub(super) fn has_queued(&self) -> bool {
        self.queue.borrow().is_some()
    }

    /// The next queued frame; the queue's box is freed with its last one.
    pub(super) fn next_queued(&self) -> Option<Bytes> {
        let mut q = self.queue.borrow_mut();
        let queue = q.as_mut()?;
        let f = queue.frames.pop_front();
        if let Some(f) = &f {
            queue.bytes = queue.bytes.saturating_sub(f.len() as u64);
        }
        if queue.frames.is_empty() {
            *q = None;
        }
        f
    }

    /// Bytes waiting in the queue.
    fn queued(&self) -> u64 {
        self.queue.borrow().as_ref().map_or(0, |q| q.bytes)
    }

    /// Whether this is a tcp route's session (list and close only).
    pub fn is_tcp(&self) -> bool {
        self.tcp_upstream >= 0
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut Stats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Whether a close was requested (then pushes are refused).
    pub fn closing(&self) -> bool {
        self.close.borrow().is_some()
    }

    /// Sends a whole frame to the client, or queues it; false when refused
    /// (the session is closing, or the queue would pass `send_queue`: then
    /// the session closes with 1008 as a slow consumer).
    ///
    /// While the session's down direction is parked between two messages of
    /// the backend with nothing queued and nothing half-sent (it sets
    /// [`Session::direct`]), the frame goes straight to the client socket
    /// with one non-blocking send: a broadcast then costs one syscall per
    /// session and wakes no session task. What the socket does not take
    /// (EAGAIN, a partial write) is queued, and the down direction sends it
    /// before anything else when it wakes, so order holds and no frame
    /// goes inside a backend message.
    pub fn push(&self, frame: &Bytes, c: &RouteCounters) -> bool {
        if !self.admit(frame, c) {
            return false;
        }
        self.deliver(frame, c);
        true
    }

    /// The first half of [`Session::push`]: whether the frame is taken
    /// (counted dropped, or a slow consumer's close requested, when not).
    /// An admitted frame must be [`Session::deliver`]ed before the worker
    /// yields; a broadcast admits every target, answers the API, then
    /// delivers.
    pub fn admit(&self, frame: &Bytes, c: &RouteCounters) -> bool {
        if self.closing() || self.is_tcp() {
            c.dropped.add(1);
            return false;
        }
        // Checked first: the rest of a partly sent frame must be queued.
        if self.queued() + frame.len() as u64 > self.limit() {
            c.dropped.add(1);
            self.request_close(frame::CLOSE_POLICY, "send queue full", Reason::SlowConsumer);
            return false;
        }
        true
    }

    /// The second half of [`Session::push`]: sends or queues an admitted
    /// frame.
    pub fn deliver(&self, frame: &Bytes, c: &RouteCounters) {
        let mut frame = std::borrow::Cow::Borrowed(frame);
        let fd = self.direct.get();
        if fd >= 0 && !self.has_queued() {
            match sys::send(fd, &frame) {
                Ok(n) if n == frame.len() => {
                    self.update(|s| {
                        s.pushed += 1;
                        s.bytes_out += n as u64;
                    });
                    c.pushed.add(1);
                    return;
                }
                Ok(n) => {
                    // The rest must reach the client before anything else.
                    self.direct.set(-1);
                    self.update(|s| s.bytes_out += n as u64);
                    frame = std::borrow::Cow::Owned(frame.slice(n..));
                }
                // EAGAIN, or an error the down direction will meet too.
                Err(_) => self.direct.set(-1),
            }
        }
        {
            let mut q = self.queue.borrow_mut();
            let q = q.get_or_insert_with(Box::default);
            q.bytes += frame.len() as u64;
            q.frames.push_back((*frame).clone());
        }
        self.update(|s| s.pushed += 1);
        c.pushed.add(1);
        self.wake.notify(PUSH);
    }

    /// Schedules a 1001 at `at_ms` (coarse clock): the session's route was
    /// removed by a reload.
    pub fn drain_at(&self, at_ms: u64) {
        if self.drain_at_ms.get() == 0 {
            self.drain_at_ms.set(at_ms.max(1));
            self.wake.notify(WATCH);
        }
    }

    /// Asks for a close frame to the client (the first request wins).
    pub fn request_close(&self, code: u16, reason: &str, why: Reason) {
        let mut c = self.close.borrow_mut();
        if c.is_some() {
            return;
        }
        let at = crate::shared::epoch_ms();
        *c = Some(Box::new((code, reason.to_string(), why, at)));
        drop(c);
        if self.is_tcp() {
            let (client, upstream) = (self.direct.get(), self.tcp_upstream);
            // A tcp tunnel has no frame to say it with: both sockets are
            // shut down, the tunnel sees the ends and finishes as usual.
            let _ = sys::shutdown_both(client);
            let _ = sys::shutdown_both(upstream);
            return;
        }
        self.wake.notify(PUSH | WATCH);
    }
}
