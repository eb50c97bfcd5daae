//! One WebSocket session: the client and upstream connections of an upgraded
//! gateway route, driven by one hand-written future ([`Idle`], in
//! `idle.rs`) that waits on both sockets, the record's push wake-up and
//! one coarse deadline, and runs a direction's work in a box only while
//! there is some:
//!
//! - **up** (client -> backend): frames are walked ([`FrameReader`], client
//!   role: masked, at most `max_message` per reassembled message) and the
//!   bytes forwarded unchanged; every frame head counts as client activity.
//! - **down** (backend -> client): frames are walked and forwarded
//!   unchanged; ringmesh's own frames (queued pushes, the heartbeat ping,
//!   a close) go in only where the reader says it is allowed: data between
//!   messages, control frames between frames. While it waits between two
//!   messages with nothing queued, a push is written to the client socket
//!   by the worker's hub task directly ([`Session::push`]).
//! - **watch** ([`Drive::watch_next`]): heartbeat (ping after `heartbeat`
//!   of client silence, close 1001 after `heartbeat_timeout`), drain (1001
//!   just before the grace ends), and the bound on how long a requested
//!   close may take.
//!
//! A close ringmesh decides (API, slow consumer, timeout, bad frame) is
//! requested on the [`Session`]; the down direction sends it at the next frame
//! boundary. Payload bytes beyond [`SPLICE_MIN`] whose length is known
//! from the frame head move with splice(2), the rest through pooled buffers.
//! A TLS client (`wss://`) gets the same session over the record layer
//! ([`ClientIo`]): frames are walked in the decrypted stream, nothing is
//! spliced on its side.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::net::TcpStream;

use crate::config::gateway::Gateway;
use crate::http::buf::BUF_SIZE;
use crate::proxy::splice::{splice_exact, SpliceError};
use crate::shared::LiveRoute;
use crate::sys;
use crate::worker::WorkerCtx;

use super::frame::{self, FrameReader, Role};
use super::handshake::Pending;
use super::idle::{readable, Idle};
use super::sockio::{retry, ClientIo};

/// Frame payload left in the socket at or above this size is spliced;
/// below it, read and sent with what follows it.
///
/// Measured (bench/splice_threshold.py, loopback, shared machine: noisy):
/// splice through a pipe costs about what recv+send costs up to 4 KiB, 8-13%
/// less CPU at 16-32 KiB, 18% at 64 KiB, 30-50% at 128-256 KiB. A payload
/// under one read buffer (16 KiB) mostly arrives with its head anyway, and a
/// read takes the frames behind it in the same syscall, where a splice must
/// stop at the frame's end: so the threshold is one read buffer.
pub const SPLICE_MIN: u64 = BUF_SIZE as u64;
/// How long a requested close may take before the connections are dropped.
const CLOSE_GRACE_MS: u64 = 2_000;
/// A client close frame the backend never answers ends the session after this.
const CLOSE_HANDSHAKE_MS: u64 = 5_000;
/// How long before the drain deadline sessions get their 1001.
const DRAIN_MARGIN_MS: u64 = 1_000;
/// Payload of ringmesh's heartbeat pings.
const PING_PAYLOAD: &[u8] = b"ringmesh";

pub use super::record::{Session, Stats};
pub use super::stats::{Reason, RouteCounters, REASONS};

/// What the worker needs to run a session.
pub struct Conn<'a> {
    pub ctx: &'a WorkerCtx,
    /// Plain TCP, or a TLS session (`wss://`).
    pub client: ClientIo<'a>,
    pub peer: SocketAddr,
    pub backend: &'a TcpStream,
    pub route: &'a Arc<LiveRoute>,
}

/// Runs a session until it ends; `early_up` are client bytes that came
/// behind the upgrade request.
///
/// Not an `async fn`: its arguments (the pending binding, a few hundred
/// bytes) would stay in the future for the session's whole life. The record
/// is built here, synchronously; the future keeps only what it drives with.
// Boxed on purpose: taken by value, the caller's box would live as long as
// the caller's future (see `http::upgrade::session`).
#[allow(clippy::boxed_local)]
pub fn run<'a>(c: Conn<'a>, p: Box<Pending>, early_up: Vec<u8>) -> impl Future<Output = ()> + 'a {
    // The box is freed here (moved out of, it would live as long as the
    // future that holds it).
    let opened = open(&c, *p).map(|(s, cfg, rsv, early_down)| {
        let now = c.ctx.now_ms();
        let early = if early_up.is_empty() && early_down.is_empty() {
            None
        } else {
            Some(Box::new([early_up, early_down]))
        };
        Drive {
            c: Link {
                ctx: c.ctx,
                client: c.client,
                backend: c.backend,
                route: c.route,
            },
            s,
            heartbeat_ms: ms32(cfg.heartbeat),
            timeout_ms: ms32(cfg.heartbeat_timeout),
            max_message: cfg.max_message,
            rsv,
            early: Cell::new(early),
            last_frame: Cell::new(now),
            client_closed_ms: Cell::new(0),
            up_boundary: Cell::new(true),
            server_closed: Cell::new(false),
        }
    });
    async move {
        // Used in place: moved out, it would take its size twice.
        let Some(d) = &opened else {
            return;
        };
        let reason = d.drive().await;
        closed(d, reason);
    }
}

/// The session's record, registered; its settings, RSV bits and the backend
/// bytes that came behind the 101.
fn open(c: &Conn<'_>, p: Pending) -> Option<(Rc<Session>, Gateway, u8, Vec<u8>)> {
    let ctx = c.ctx;
    let slot = c.route.slots.get(ctx.id)?;
    let cfg = c.route.cfg.gateway.unwrap_or_default();
    let mut s = Session::new(ctx, p.n, c.route, c.peer, None);
    s.user = RefCell::new(p.user.into_boxed_str());
    s.channels = RefCell::new(p.channels.into_iter().collect());
    s.settings = RefCell::new((!p.settings.is_empty()).then(|| Box::new(p.settings)));
    let s = Rc::new(s);
    ctx.sessions.insert(s.clone());
    slot.gateway.opened.add(1);
    tracing::debug!(n = s.n, route = %c.route.cfg.name, peer = %c.peer, "session opened");
    Some((s, cfg, p.rsv_allowed, p.early))
}

/// Unregisters a session that ended and counts how.
fn closed(d: &Drive<'_>, reason: Reason) {
    let (ctx, s) = (d.c.ctx, &d.s);
    ctx.sessions.remove(s.n);
    let Some(slot) = d.c.route.slots.get(ctx.id) else {
        return;
    };
    if let Some(c) = slot.gateway.closed.get(reason as usize) {
        c.add(1);
    }
    if reason == Reason::HeartbeatTimeout {
        slot.gateway.heartbeat_timeouts.add(1);
    }
    let st = s.stats.get();
    slot.bytes_in.add(st.bytes_in);
    slot.bytes_out.add(st.bytes_out);
    tracing::debug!(n = s.n, reason = REASONS[reason as usize], "session closed");
}

/// `d` in ms, at most `u32::MAX` (49 days).
fn ms32(d: Duration) -> u32 {
    d.as_millis().min(u32::MAX.into()) as u32
}

/// Wall-clock ms since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How the client -> backend direction ended.
pub(super) enum UpEnd {
    /// The session is over (client gone).
    Over(Reason),
    /// A close must be sent first.
    Close(u16, String, Reason),
}

/// What a session's directions share with its [`Idle`] future: the parts
/// of [`Conn`] it drives with (not the peer address: that is in the
/// record), the route's settings it needs, a few cells.
pub(super) struct Link<'a> {
    pub(super) ctx: &'a WorkerCtx,
    pub(super) client: ClientIo<'a>,
    pub(super) backend: &'a TcpStream,
    route: &'a Arc<LiveRoute>,
}

/// What a session's directions share; [`Idle`] drives it.
pub(super) struct Drive<'a> {
    pub(super) c: Link<'a>,
    pub(super) s: Rc<Session>,
    /// `heartbeat` and `heartbeat_timeout` in ms (u32: 8 B less in every
    /// idle session, whose box is then the 768 B class, not 896 B).
    heartbeat_ms: u32,
    timeout_ms: u32,
    max_message: u64,
    rsv: u8,
    /// Bytes that came behind the handshake (client's, backend's), if any.
    early: Cell<Option<Box<[Vec<u8>; 2]>>>,
    last_frame: Cell<u64>,
    /// When the client's close frame went up (0: not yet).
    client_closed_ms: Cell<u64>,
    /// What went to the backend ends at a frame boundary.
    up_boundary: Cell<bool>,
    /// The backend sent its close frame: nothing more may go to the client.
    pub(super) server_closed: Cell<bool>,
}

impl<'a> Drive<'a> {
    /// A new frame reader for what `role` sends: the client's messages are
    /// bounded by `max_message`, the backend's are not.
    pub(super) fn reader(&self, role: Role) -> FrameReader {
        let max = if role == Role::Client {
            self.max_message
        } else {
            u64::MAX
        };
        FrameReader::new(role, self.rsv, max)
    }

    fn stall(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.into())
    }

    /// The session's future: the record's [`Idle`] driver (not an `async
    /// fn`: its arguments would stay in every idle session).
    fn drive(&self) -> impl Future<Output = Reason> + use<'_, 'a> {
        let readers = (self.reader(Role::Client), self.reader(Role::Server));
        let [early_up, early_down] = self.early.take().map_or_else(Default::default, |b| *b);
        Idle::new(self, readable, readers, early_up, early_down)
    }

    /// What ends every session, whichever side noticed first.
    pub(super) fn finish(&self, reason: Reason) -> Reason {
        // The sockets close after this: no push may write to them any more.
        self.s.direct.set(-1);
        // A requested close names the end, whichever side noticed it last.
        let close = self.s.close.borrow().clone();
        match close.map(|c| *c) {
            Some((code, msg, why, _)) => {
                self.tell_backend(code, &msg, why);
                why
            }
            None => reason,
        }
    }

    /// Passes a close ringmesh decided on to the backend (one non-blocking
    /// send, when the stream to it is between frames and the client did not
    /// already send its own close), so the backend sees a close code rather
    /// than a dropped connection.
    fn tell_backend(&self, code: u16, msg: &str, why: Reason) {
        if matches!(why, Reason::Backend | Reason::BackendFailed)
            || !self.up_boundary.get()
            || self.client_closed_ms.get() != 0
        {
            return;
        }
        let mut out = Vec::new();
        let key = (self.s.n as u32 ^ crate::shared::epoch_ms() as u32).to_be_bytes();
        frame::write_masked(
            &mut out,
            frame::OP_CLOSE,
            &frame::close_payload(code, msg),
            key,
        );
        let _ = sys::send(self.c.backend.as_raw_fd(), &out);
    }

    /// Client -> backend: forwards `buf`, then (`read`) what the client
    /// socket has now, until it would block; gives the reader back.
    pub(super) async fn up(
        &self,
        mut r: FrameReader,
        buf: Vec<u8>,
        read: bool,
    ) -> (FrameReader, Option<UpEnd>) {
        let end = self.up_burst(&mut r, buf, read).await;
        (r, end)
    }

    async fn up_burst(
        &self,
        r: &mut FrameReader,
        mut buf: Vec<u8>,
        mut read: bool,
    ) -> Option<UpEnd> {
        let ctx = self.c.ctx;
        let (client, backend) = (self.c.client, self.c.backend);
        let backend_io = ClientIo {
            stream: backend,
            tls: None,
        };
        loop {
            if !buf.is_empty() {
                let mut pos = 0;
                while pos < buf.len() {
                    match r.advance(&buf[pos..]) {
                        Ok(step) => {
                            if let Some(h) = step.head {
                                self.last_frame.set(ctx.now_ms());
                                let now = ctx.now_ms();
                                self.s.update(|st| {
                                    st.last_activity_ms = now;
                                    if matches!(h.opcode, frame::OP_TEXT | frame::OP_BINARY) {
                                        st.messages_in += 1;
                                    }
                                });
                                if h.opcode == frame::OP_CLOSE && self.client_closed_ms.get() == 0 {
                                    self.client_closed_ms.set(now.max(1));
                                    self.s.wake.notify(super::record::WATCH);
                                }
                            }
                            pos += step.consumed;
                        }
                        Err(e) => {
                            ctx.bufs.put(buf);
                            let why = if matches!(e, frame::FrameError::TooBig(_)) {
                                Reason::TooBig
                            } else {
                                Reason::Protocol
                            };
                            tracing::debug!(n = self.s.n, "client frame: {e}");
                            return Some(UpEnd::Close(e.close_code(), e.to_string(), why));
                        }
                    }
                }
                self.up_boundary.set(false);
                if let Err(e) = backend_io.send_all(self.c.ctx, &buf, self.stall()).await {
                    ctx.bufs.put(buf);
                    return Some(self.backend_failed(&e));
                }
                self.up_boundary.set(r.at_frame_boundary());
                let n = buf.len() as u64;
                self.s.update(|st| st.bytes_in += n);
                buf.clear();
            }
            let left = r.payload_left();
            if left >= SPLICE_MIN && client.splices() {
                self.up_boundary.set(false);
                // Boxed: its stall timer is a runtime `Sleep` that would otherwise
                // sit in every idle session's task; one allocation per large frame.
                match Box::pin(splice_exact(
                    &ctx.pipes,
                    client.stream,
                    backend,
                    left,
                    self.stall(),
                ))
                .await
                {
                    Ok(()) => {
                        r.skip_payload(left);
                        self.up_boundary.set(r.at_frame_boundary());
                        self.s.update(|st| st.bytes_in += left);
                    }
                    Err(SpliceError::Src(_)) => return Some(UpEnd::Over(Reason::Client)),
                    Err(SpliceError::Dst(e)) => return Some(self.backend_failed(&e)),
                }
            }
            if buf.capacity() > 0 {
                ctx.bufs.put(std::mem::take(&mut buf));
            }
            if !read && !client.tls.is_some_and(|t| t.borrow().has_input()) {
                // Waits for the client outside, holding nothing.
                if let Some(t) = client.tls {
                    t.borrow_mut().release();
                }
                return None;
            }
            match client.recv_now(ctx, &mut buf) {
                // A short read drained the socket: wait before the next one.
                Ok(n) if n > 0 => read = n >= BUF_SIZE,
                Err(e) if retry(&e) => read = false,
                _ => return Some(UpEnd::Over(Reason::Client)),
            }
        }
    }

    fn backend_failed(&self, e: &io::Error) -> UpEnd {
        tracing::debug!(n = self.s.n, "backend write: {e}");
        UpEnd::Close(
            frame::CLOSE_INTERNAL,
            "backend failed".into(),
            Reason::BackendFailed,
        )
    }

    /// Backend -> client, with ringmesh's frames in between: sends `buf`
    /// and what is due (queued pushes, a ping, the close), then (`read`)
    /// what the backend socket has now, until it would block; gives the
    /// reader back.
    pub(super) async fn down(
        &self,
        mut r: FrameReader,
        buf: Vec<u8>,
        read: bool,
    ) -> (FrameReader, Option<Reason>) {
        let end = self.down_burst(&mut r, buf, read).await;
        (r, end)
    }

    async fn down_burst(
        &self,
        r: &mut FrameReader,
        mut buf: Vec<u8>,
        mut read: bool,
    ) -> Option<Reason> {
        let ctx = self.c.ctx;
        let (client, backend) = (self.c.client, self.c.backend);
        let mut server_closed = self.server_closed.get();
        loop {
            if !buf.is_empty() {
                let mut start = 0;
                let mut pos = 0;
                while pos < buf.len() {
                    match r.advance(&buf[pos..]) {
                        Ok(step) => {
                            if let Some(h) = step.head {
                                if h.opcode == frame::OP_CLOSE {
                                    server_closed = true;
                                    self.server_closed.set(true);
                                }
                                if matches!(h.opcode, frame::OP_TEXT | frame::OP_BINARY) {
                                    self.s.update(|st| st.messages_out += 1);
                                }
                            }
                            pos += step.consumed;
                        }
                        Err(e) => {
                            tracing::debug!(n = self.s.n, "backend frame: {e}");
                            // What went out ends at a frame boundary (see below).
                            let _ = client
                                .send_all(self.c.ctx, &buf[start..pos], self.stall())
                                .await;
                            ctx.bufs.put(buf);
                            self.s.request_close(
                                frame::CLOSE_INTERNAL,
                                "backend sent an invalid frame",
                                Reason::BackendFailed,
                            );
                            return Some(Box::pin(self.finish_close(r, server_closed)).await);
                        }
                    }
                    if r.at_frame_boundary() && self.has_work(r, server_closed) {
                        if client
                            .send_all(self.c.ctx, &buf[start..pos], self.stall())
                            .await
                            .is_err()
                        {
                            ctx.bufs.put(buf);
                            return Some(Reason::Client);
                        }
                        start = pos;
                        if let Some(reason) = self.flush(r, server_closed).await {
                            ctx.bufs.put(buf);
                            return Some(reason);
                        }
                    }
                }
                if client
                    .send_all(self.c.ctx, &buf[start..], self.stall())
                    .await
                    .is_err()
                {
                    ctx.bufs.put(buf);
                    return Some(Reason::Client);
                }
                let n = buf.len() as u64;
                self.s.update(|st| st.bytes_out += n);
                buf.clear();
            }
            let left = r.payload_left();
            if left >= SPLICE_MIN && client.splices() {
                // Boxed for the same reason as in `up`.
                match Box::pin(splice_exact(
                    &ctx.pipes,
                    backend,
                    client.stream,
                    left,
                    self.stall(),
                ))
                .await
                {
                    Ok(()) => {
                        r.skip_payload(left);
                        self.s.update(|st| st.bytes_out += left);
                    }
                    Err(SpliceError::Src(_)) => {
                        // Mid-frame: nothing more can be said to the client.
                        return Some(Reason::BackendFailed);
                    }
                    Err(SpliceError::Dst(_)) => return Some(Reason::Client),
                }
            }
            if r.at_frame_boundary() && self.has_work(r, server_closed) {
                if let Some(reason) = self.flush(r, server_closed).await {
                    if buf.capacity() > 0 {
                        ctx.bufs.put(buf);
                    }
                    return Some(reason);
                }
            }
            if buf.capacity() > 0 {
                ctx.bufs.put(std::mem::take(&mut buf));
            }
            if !read {
                return None;
            }
            buf = ctx.bufs.take();
            match sys::recv_append(backend.as_raw_fd(), &mut buf, BUF_SIZE) {
                Ok(0) => {
                    ctx.bufs.put(std::mem::take(&mut buf));
                    return Some(Box::pin(self.backend_gone(r, server_closed)).await);
                }
                // A short read drained the socket: wait before the next one.
                Ok(n) => read = n >= BUF_SIZE,
                Err(e) if retry(&e) => {
                    ctx.bufs.put(std::mem::take(&mut buf));
                    return None;
                }
                Err(_) => {
                    ctx.bufs.put(std::mem::take(&mut buf));
                    return Some(Box::pin(self.backend_gone(r, server_closed)).await);
                }
            }
        }
    }

    /// The backend closed its connection (or failed).
    async fn backend_gone(&self, r: &FrameReader, server_closed: bool) -> Reason {
        if server_closed {
            // A clean close handshake: who started it decides the label.
            return if self.client_closed_ms.get() != 0 {
                Reason::Client
            } else {
                Reason::Backend
            };
        }
        self.s.request_close(
            frame::CLOSE_INTERNAL,
            "backend closed the connection",
            Reason::BackendFailed,
        );
        self.finish_close(r, server_closed).await
    }

    /// Sends the requested close if the client stream allows a frame now.
    async fn finish_close(&self, r: &FrameReader, server_closed: bool) -> Reason {
        if r.at_frame_boundary() {
            if let Some(reason) = self.flush(r, server_closed).await {
                return reason;
            }
        }
        self.close_reason()
    }

    fn close_reason(&self) -> Reason {
        self.s
            .close
            .borrow()
            .as_ref()
            .map_or(Reason::BackendFailed, |c| c.2)
    }

    /// Whether ringmesh has a frame to send at this frame boundary.
    fn has_work(&self, r: &FrameReader, server_closed: bool) -> bool {
        if server_closed {
            return false;
        }
        self.s.closing()
            || self.s.ping_wanted.get()
            || (r.at_message_boundary() && self.s.has_queued())
    }

    /// Sends ringmesh's frames allowed here (the stream to the client is at
    /// a frame boundary). Returns the reason when a close went out (or the
    /// client failed): the session is over.
    async fn flush(&self, r: &FrameReader, server_closed: bool) -> Option<Reason> {
        if server_closed {
            // Nothing may follow the backend's close frame.
            return None;
        }
        let client = self.c.client;
        let mut out = Vec::new();
        if self.s.ping_wanted.replace(false) {
            frame::write_frame(&mut out, frame::OP_PING, PING_PAYLOAD);
            self.s.update(|st| st.pings += 1);
        }
        if r.at_message_boundary() {
            loop {
                let Some(f) = self.s.next_queued() else {
                    break;
                };
                if !out.is_empty() {
                    if client
                        .send_all(self.c.ctx, &out, self.stall())
                        .await
                        .is_err()
                    {
                        return Some(Reason::Client);
                    }
                    out.clear();
                }
                if client.send_all(self.c.ctx, &f, self.stall()).await.is_err() {
                    return Some(Reason::Client);
                }
                let n = f.len() as u64;
                self.s.update(|st| st.bytes_out += n);
                // A slow consumer's close must not wait behind its queue.
                if self
                    .s
                    .close
                    .borrow()
                    .as_ref()
                    .is_some_and(|c| c.2 == Reason::SlowConsumer)
                {
                    break;
                }
            }
        }
        let close = self.s.close.borrow().clone();
        if let Some((code, msg, why, _)) = close.map(|c| *c) {
            frame::write_frame(&mut out, frame::OP_CLOSE, &frame::close_payload(code, &msg));
            let stall = Duration::from_millis(CLOSE_GRACE_MS);
            // Boxed: the close (close_notify, the lingering read) happens
            // once; inline it would be part of every idle session's task.
            Box::pin(async {
                let _ = client.send_all(self.c.ctx, &out, stall).await;
                client.close(self.c.ctx, stall).await;
            })
            .await;
            return Some(why);
        }
        if !out.is_empty()
            && client
                .send_all(self.c.ctx, &out, self.stall())
                .await
                .is_err()
        {
            return Some(Reason::Client);
        }
        None
    }

    /// Heartbeat, drain and close deadlines: asks for a ping or a close
    /// when one is due and returns when to look again (always later than
    /// now), or the reason to cut a session whose close could not be sent
    /// in time. `pinged_for`: the client activity a ping was asked for.
    pub(super) fn watch_next(&self, pinged_for: &mut u64) -> Result<u64, Reason> {
        let ctx = self.c.ctx;
        let (hb, timeout) = (u64::from(self.heartbeat_ms), u64::from(self.timeout_ms));
        loop {
            let now = ctx.now_ms();
            if self.s.closing() {
                let at = self.s.close_at_ms() + CLOSE_GRACE_MS;
                if now >= at {
                    return Err(self.close_reason());
                }
                return Ok(at);
            }
            let last = self.last_frame.get();
            if now >= last + timeout {
                self.s.request_close(
                    frame::CLOSE_GOING_AWAY,
                    "heartbeat timeout",
                    Reason::HeartbeatTimeout,
                );
                continue;
            }
            if now >= last + hb && *pinged_for != last {
                *pinged_for = last;
                self.s.ping_wanted.set(true);
                self.s.wake.notify(super::record::PUSH);
            }
            let cc = self.client_closed_ms.get();
            if cc != 0 && now >= cc + CLOSE_HANDSHAKE_MS {
                return Err(Reason::Client);
            }
            let mut next = if *pinged_for == last {
                last + timeout
            } else {
                last + hb
            };
            if cc != 0 {
                next = next.min(cc + CLOSE_HANDSHAKE_MS);
            }
            let removed_at = self.s.drain_at_ms.get();
            if ctx.stopping.is_set() || removed_at != 0 {
                let mut at = u64::MAX;
                if ctx.stopping.is_set() {
                    at = ctx
                        .shared
                        .drain_deadline_ms()
                        .saturating_sub(DRAIN_MARGIN_MS);
                }
                if removed_at != 0 {
                    at = at.min(removed_at);
                }
                if now >= at {
                    self.s
                        .request_close(frame::CLOSE_GOING_AWAY, "going away", Reason::Drain);
                    continue;
                }
                next = next.min(at);
            }
            return Ok(next);
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
