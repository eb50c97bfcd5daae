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
/// A one-waiter wake-up flag (single-threaded; a `Cell`, not a `RefCell`:
/// 24 B in every session record).
#[derive(Default)]
pub(super) struct Notify {
    set: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Notify {
    pub(super) fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
    pub(super) fn notified(&self) -> Notified<'_> {
        Notified(self)
    }
}

pub(super) struct Notified<'a>(&'a Notify);

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.set.replace(false) {
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

/// A close ringmesh asked for: code, reason text, and why (for the
/// counters).
pub(super) type Close = (u16, String, Reason);

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
    pub settings: RefCell<BTreeMap<String, String>>,
    pub stats: Cell<Stats>,
    /// Pushed frames waiting for the down direction; boxed only while
    /// there are some (16 B instead of 40 in every record).
    queue: RefCell<Option<Box<VecDeque<Bytes>>>>,
    pub(super) queued: Cell<u64>,
    pub(super) ping_wanted: Cell<bool>,
    /// Boxed: requested once, at the end; inline it would be 24 B more in
    /// every record.
    pub(super) close: RefCell<Option<Box<Close>>>,
    pub(super) close_at_ms: Cell<u64>,
    /// Close 1001 at this coarse time (0: never): the route left the config.
    pub(super) drain_at_ms: Cell<u64>,
    pub(super) notify: Notify,
    pub(super) watch: Notify,
    /// A tcp route's session (list and close only): its client and upstream
    /// sockets, shut down by a close (nothing is framed, nothing is pushed).
    pub(super) tcp: Option<(RawFd, RawFd)>,
    /// The client socket while a push may be written to it directly (-1:
    /// not now); see [`Session::push`].
    pub(super) direct: Cell<RawFd>,
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
            queued: Cell::new(0),
            ping_wanted: Cell::new(false),
            close: RefCell::new(None),
            close_at_ms: Cell::new(0),
            drain_at_ms: Cell::new(0),
            notify: Notify::default(),
            watch: Notify::default(),
            tcp,
            direct: Cell::new(-1),
        }
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
        let f = q.as_mut()?.pop_front();
        if q.as_ref().is_some_and(|q| q.is_empty()) {
            *q = None;
        }
        f
    }

    /// Whether this is a tcp route's session (list and close only).
    pub fn is_tcp(&self) -> bool {
        self.tcp.is_some()
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
        if self.queued.get() + frame.len() as u64 > self.limit() {
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
        let frame = &*frame;
        let len = frame.len() as u64;
        self.queued.set(self.queued.get() + len);
        self.queue
            .borrow_mut()
            .get_or_insert_with(Box::default)
            .push_back(frame.clone());
        self.update(|s| s.pushed += 1);
        c.pushed.add(1);
        self.notify.notify();
    }

    /// Schedules a 1001 at `at_ms` (coarse clock): the session's route was
    /// removed by a reload.
    pub fn drain_at(&self, at_ms: u64) {
        if self.drain_at_ms.get() == 0 {
            self.drain_at_ms.set(at_ms.max(1));
            self.watch.notify();
        }
    }

    /// Asks for a close frame to the client (the first request wins).
    pub fn request_close(&self, code: u16, reason: &str, why: Reason) {
        let mut c = self.close.borrow_mut();
        if c.is_some() {
            return;
        }
        *c = Some(Box::new((code, reason.to_string(), why)));
        drop(c);
        if let Some((client, upstream)) = self.tcp {
            // A tcp tunnel has no frame to say it with: both sockets are
            // shut down, the tunnel sees the ends and finishes as usual.
            let _ = sys::shutdown_both(client);
            let _ = sys::shutdown_both(upstream);
            return;
        }
        self.close_at_ms.set(crate::shared::epoch_ms());
        self.notify.notify();
        self.watch.notify();
    }
}
