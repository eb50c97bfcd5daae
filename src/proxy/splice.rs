//! Zero-copy forwarding: readiness-driven, non-blocking splice(2) through pipes.
//!
//! Why not monoio's `zero_copy` (io_uring SPLICE): the kernel punts every
//! SPLICE op on a socket to an io-wq thread that blocks in splice(), so 2,000
//! idle tunnels cost 2,000 kernel threads, and it measured 12x slower
//! (ARCHITECTURE.md). Here a direction waits for readability through the
//! runtime (a PollAdd on io_uring, epoll on the legacy driver), then calls
//! splice with SPLICE_F_NONBLOCK on non-blocking sockets; EAGAIN means "wait again".
//!
//! Small messages skip the pipe: a tunnel direction reads up to
//! [`RELAY_SMALL`] bytes with a plain recv into a pooled buffer and sends
//! them on; only a read that fills the buffer (a stream) switches it to
//! splice, until a burst moves less than a buffer again.
//!
//! Idle tunnels own no pipe and no buffer: a direction borrows one from the worker's
//! [`PipePool`] when bytes are ready and gives it back once it is empty. A pipe
//! holding bytes is never returned (it is closed instead), so data can't leak
//! from one connection into another.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use monoio::net::TcpStream;

use crate::http::buf::BufPool;
use crate::sys;
use crate::worker::timer::CoarseTimers;

/// A pipe used as a splice buffer.
#[derive(Debug)]
pub struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    /// Bytes the pipe accepts per splice (its F_GETPIPE_SZ).
    cap: usize,
}

/// Per-worker pool of empty pipes.
#[derive(Debug)]
pub struct PipePool {
    free: RefCell<Vec<Pipe>>,
    size: usize,
    max_idle: usize,
    created: Cell<u64>,
    size_warned: Cell<bool>,
}

impl PipePool {
    /// A pool whose pipes are resized to `size` bytes, keeping at most `max_idle` spares.
    pub fn new(size: usize, max_idle: usize) -> PipePool {
        PipePool {
            free: RefCell::new(Vec::new()),
            size,
            max_idle,
            created: Cell::new(0),
            size_warned: Cell::new(false),
        }
    }

    /// Borrows an empty pipe (creating one when the pool is dry).
    pub fn take(&self) -> io::Result<Lease<'_>> {
        let pipe = match self.free.borrow_mut().pop() {
            Some(p) => p,
            None => self.create()?,
        };
        Ok(Lease {
            pool: self,
            pipe: Some(pipe),
            fill: 0,
        })
    }

    fn create(&self) -> io::Result<Pipe> {
        let (r, w) = sys::pipe()?;
        let cap = match sys::set_pipe_size(&w, self.size) {
            Ok(n) => n,
            Err(e) => {
                // Over /proc/sys/fs/pipe-max-size or the per-user pipe budget:
                // keep the default size rather than fail the connection.
                if !self.size_warned.replace(true) {
                    tracing::warn!(
                        "cannot resize splice pipes to {} bytes ({e}); using the kernel default",
                        self.size
                    );
                }
                sys::pipe_size(&w)?
            }
        };
        self.created.set(self.created.get() + 1);
        Ok(Pipe { r, w, cap })
    }

    /// Idle pipes held right now.
    pub fn idle(&self) -> usize {
        self.free.borrow().len()
    }

    /// Pipes created over the pool's life.
    pub fn created(&self) -> u64 {
        self.created.get()
    }

    fn give_back(&self, pipe: Pipe) {
        let mut free = self.free.borrow_mut();
        if free.len() < self.max_idle {
            free.push(pipe);
        }
    }
}

/// A pipe borrowed from a [`PipePool`]; returns itself on drop if empty, else closes.
#[derive(Debug)]
pub struct Lease<'a> {
    pool: &'a PipePool,
    pipe: Option<Pipe>,
    /// Bytes currently inside the pipe.
    fill: usize,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.pipe.take() {
            if self.fill == 0 {
                self.pool.give_back(p);
            }
        }
    }
}

impl Lease<'_> {
    fn pipe(&self) -> &Pipe {
        // The Option is only emptied in Drop.
        self.pipe
            .as_ref()
            .expect("lease holds a pipe until dropped")
    }
}

/// Why a tunnel ended early.
#[derive(Debug)]
pub enum TunnelEnd {
    /// No bytes either way for the idle timeout.
    Idle,
    /// A socket error on the client side (reading from or writing to it).
    Client(io::Error),
    /// A socket error on the backend side.
    Backend(io::Error),
}

/// Byte counts of a finished tunnel.
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    /// Client -> backend.
    pub up: u64,
    /// Backend -> client.
    pub down: u64,
}

/// Where a pump reports progress: last activity (coarse ms) and byte counting.
pub trait Meter {
    fn now_ms(&self) -> u64;
    fn moved(&self, up: bool, n: u64);
    /// The worker's coarse timers, for the idle watch.
    fn timers(&self) -> &CoarseTimers;
    /// The worker's buffer pool, for small reads.
    fn bufs(&self) -> &BufPool;
}

/// Forwards both directions between `client` and `backend` until both have
/// reached EOF (each EOF is passed on as a half-close), an error, or `idle`
/// passes without a byte either way.
pub async fn tunnel<M: Meter>(
    pool: &PipePool,
    meter: &M,
    client: &TcpStream,
    backend: &TcpStream,
    idle: Duration,
) -> Result<Moved, TunnelEnd> {
    // What both directions and the idle watch share, behind one reference
    // each: these futures live in every open tunnel's task.
    let link = Link {
        pool,
        meter,
        last: Cell::new(meter.now_ms()),
    };
    let up = pump(&link, client, backend, true);
    let down = pump(&link, backend, client, false);
    let watch = idle_watch(&link, idle.as_millis().max(1) as u64);
    let (mut up, mut down, mut watch) = (
        std::pin::pin!(up),
        std::pin::pin!(down),
        std::pin::pin!(watch),
    );
    // Which directions finished (bit 0 up, bit 1 down) and their counts.
    let (mut done, mut moved) = (0u8, Moved::default());
    loop {
        monoio::select! {
            r = &mut up, if done & 1 == 0 => match r {
                Ok(n) => (done, moved.up) = (done | 1, n),
                Err(e) => return Err(e),
            },
            r = &mut down, if done & 2 == 0 => match r {
                Ok(n) => (done, moved.down) = (done | 2, n),
                Err(e) => return Err(e),
            },
            _ = &mut watch => return Err(TunnelEnd::Idle),
        }
        if done == 3 {
            return Ok(moved);
        }
    }
}

/// Returns once `idle` passed since `last`. Uses the worker's coarse timers,
/// not a runtime `Sleep` (640 bytes in every idle tunnel's task; see timer.rs).
async fn idle_watch<M: Meter>(link: &Link<'_, M>, idle_ms: u64) {
    loop {
        let deadline = link.last.get().saturating_add(idle_ms);
        if link.meter.now_ms() >= deadline {
            return;
        }
        link.meter.timers().sleep_until(deadline).await;
    }
}

/// A tunnel's shared state: the pipe pool, the meter, and the last activity
/// (coarse ms) both directions update and the idle watch reads.
struct Link<'a, M> {
    pool: &'a PipePool,
    meter: &'a M,
    last: Cell<u64>,
}

/// Errors reading `src` belong to src's side; errors writing `dst` to dst's.
fn side_of(e: Side, up: bool) -> TunnelEnd {
    match (e, up) {
        (Side::Src(e), true) | (Side::Dst(e), false) => TunnelEnd::Client(e),
        (Side::Src(e), false) | (Side::Dst(e), true) => TunnelEnd::Backend(e),
    }
}

/// Largest read a tunnel direction copies through a buffer. A read that fills
/// it means more bytes are queued (the peer is streaming): the direction
/// switches to splice, and back to buffered reads once a splice moves less
/// than this (HAProxy's `splice-auto` idea). Small messages (requests,
/// database and WebSocket frames) thus cost one recv and one send, with no
/// pipe round trip; bulk transfers stay zero-copy. Measured in bench/README.md
/// ("Small messages on tcp routes"): 16 KiB, one pooled HTTP buffer.
pub const RELAY_SMALL: usize = crate::http::buf::BUF_SIZE;

/// How a direction moves its next bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// recv into a pooled buffer, send from it.
    Copy,
    /// splice through a pooled pipe (the last read filled the buffer).
    Splice,
}

/// One direction: `src` -> `dst`, until EOF on `src` (then half-close `dst`).
/// Holds no buffer and no pipe while waiting for `src`. The client's
/// direction (`up`) tries a read before its first readiness wait (a new
/// client's first bytes usually arrive with, or right behind, the handshake).
///
/// Size matters here: this future lives inside every open tunnel's task for
/// the tunnel's whole life, so it keeps only a readiness wait across its
/// common await. A read and its forwarding are synchronous; only bytes that
/// `dst` cannot take yet go into a boxed [`flush`] (backpressure, rare for
/// small messages).
async fn pump<M: Meter>(
    link: &Link<'_, M>,
    src: &TcpStream,
    dst: &TcpStream,
    up: bool,
) -> Result<u64, TunnelEnd> {
    let side = move |e: Side| side_of(e, up);
    let mut total = 0u64;
    let mut mode = Mode::Copy;
    let mut wait = !up;
    // Bytes moved since the last readiness wait.
    let mut burst = 0usize;
    loop {
        if wait {
            src.readable(false)
                .await
                .map_err(|e| side_of(Side::Src(e), up))?;
            burst = 0;
        }
        let (sfd, dfd) = (src.as_raw_fd(), dst.as_raw_fd());
        let (step, backlog) = match mode {
            Mode::Copy => copy_now(link.meter.bufs(), sfd, dfd),
            Mode::Splice => splice_now(link.pool, sfd, dfd),
        }
        .map_err(side)?;
        if let Some(b) = backlog {
            Box::pin(flush(b, dst, link.meter.bufs()))
                .await
                .map_err(|e| side(Side::Dst(e)))?;
        }
        let n = match step {
            Step::Eof => {
                // ENOTCONN: the peer already went away; nothing to tell it.
                let _ = sys::shutdown_write(dfd);
                return Ok(total);
            }
            Step::Drained(n) | Step::More(n) => n,
        };
        if n > 0 {
            total += n as u64;
            burst += n;
            link.meter.moved(up, n as u64);
            link.last.set(link.meter.now_ms());
        }
        wait = !matches!(step, Step::More(_));
        mode = match (mode, step) {
            // A full buffer: more is queued, splice it without waiting.
            (Mode::Copy, Step::More(_)) => Mode::Splice,
            // The socket drained after a burst smaller than a buffer: the
            // stream calmed down, copy small messages again.
            (Mode::Splice, Step::Drained(_)) if burst < RELAY_SMALL => Mode::Copy,
            (m, _) => m,
        };
    }
}

/// What one read (and its forwarding) did.
#[derive(Clone, Copy)]
enum Step {
    /// `src` reached EOF (nothing was read).
    Eof,
    /// Forwarded this many bytes; `src` is probably drained (wait for it).
    Drained(usize),
    /// Forwarded a full buffer or pipe; more is probably queued.
    More(usize),
}

/// A failure of one side of a relay step.
enum Side {
    Src(io::Error),
    Dst(io::Error),
}

/// Bytes read from `src` that `dst` could not take yet.
enum Backlog<'p> {
    /// A pooled buffer and the range still to send.
    Buf(Vec<u8>, usize, usize),
    /// A pipe with `fill` bytes in it.
    Pipe(Lease<'p>),
}

/// One non-blocking recv of at most [`RELAY_SMALL`] bytes into a pooled
/// buffer, sent on to `dfd` at once; what `dfd` cannot take yet comes back
/// as a backlog (with the buffer).
fn copy_now(bufs: &BufPool, sfd: RawFd, dfd: RawFd) -> Result<(Step, Option<Backlog<'_>>), Side> {
    let mut buf = bufs.take();
    let r = loop {
        match sys::recv_append(sfd, &mut buf, RELAY_SMALL) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => break r,
        }
    };
    let n = match r {
        Ok(0) => {
            bufs.put(buf);
            return Ok((Step::Eof, None));
        }
        Ok(n) => n,
        Err(e) => {
            bufs.put(buf);
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok((Step::Drained(0), None)),
                _ => Err(Side::Src(e)),
            };
        }
    };
    let step = if n >= RELAY_SMALL {
        Step::More(n)
    } else {
        Step::Drained(n)
    };
    let mut pos = 0;
    while pos < n {
        match sys::send(dfd, &buf[pos..n]) {
            Ok(0) => {
                bufs.put(buf);
                return Err(Side::Dst(io::ErrorKind::WriteZero.into()));
            }
            Ok(m) => pos += m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok((step, Some(Backlog::Buf(buf, pos, n))));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                bufs.put(buf);
                return Err(Side::Dst(e));
            }
        }
    }
    bufs.put(buf);
    Ok((step, None))
}

/// One splice from `sfd` into a pooled pipe and on to `dfd`; what `dfd`
/// cannot take yet stays in the pipe, returned as a backlog.
fn splice_now(
    pool: &PipePool,
    sfd: RawFd,
    dfd: RawFd,
) -> Result<(Step, Option<Backlog<'_>>), Side> {
    let mut lease = pool.take().map_err(Side::Src)?;
    let cap = lease.pipe().cap;
    let n = loop {
        match sys::splice(sfd, lease.pipe().w.as_raw_fd(), cap) {
            Ok(0) => return Ok((Step::Eof, None)),
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((Step::Drained(0), None)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Side::Src(e)),
        }
    };
    lease.fill = n;
    // A short read drained the socket's queue: the next splice would almost
    // surely be EAGAIN, so wait for readiness next.
    let step = if n < cap {
        Step::Drained(n)
    } else {
        Step::More(n)
    };
    while lease.fill > 0 {
        match sys::splice(lease.pipe().r.as_raw_fd(), dfd, lease.fill) {
            Ok(m) => lease.fill -= m.min(lease.fill),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok((step, Some(Backlog::Pipe(lease))))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Side::Dst(e)),
        }
    }
    Ok((step, None))
}

/// Sends a backlog to `dst`, waiting for writability as needed.
async fn flush(b: Backlog<'_>, dst: &TcpStream, bufs: &BufPool) -> io::Result<()> {
    let fd = dst.as_raw_fd();
    match b {
        Backlog::Buf(buf, mut pos, end) => {
            let r = loop {
                if pos >= end {
                    break Ok(());
                }
                match sys::send(fd, &buf[pos..end]) {
                    Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                    Ok(m) => pos += m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if let Err(e) = dst.writable(false).await {
                            break Err(e);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            bufs.put(buf);
            r
        }
        Backlog::Pipe(mut lease) => {
            while lease.fill > 0 {
                match sys::splice(lease.pipe().r.as_raw_fd(), fd, lease.fill) {
                    Ok(m) => lease.fill -= m.min(lease.fill),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable(false).await?,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
    }
}

/// Why a one-way splice ([`splice_exact`], [`splice_to_eof`]) stopped early.
#[derive(Debug)]
pub enum SpliceError {
    /// Reading `src` failed, it closed before the count, or stalled (`TimedOut`).
    Src(io::Error),
    /// Writing `dst` failed or stalled (`TimedOut`).
    Dst(io::Error),
}

impl std::fmt::Display for SpliceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpliceError::Src(e) => write!(f, "source: {e}"),
            SpliceError::Dst(e) => write!(f, "destination: {e}"),
        }
    }
}

/// Moves exactly `n` bytes from `src` to `dst` through a pooled pipe, never
/// reading past them (the next message stays in the socket). EOF first is
/// `Src(UnexpectedEof)`; waiting longer than `stall` for either side is that
/// side's `TimedOut`.
pub async fn splice_exact(
    pool: &PipePool,
    src: &TcpStream,
    dst: &TcpStream,
    n: u64,
    stall: Duration,
) -> Result<(), SpliceError> {
    splice_some(pool, src, dst, Some(n), stall)
        .await
        .map(|_| ())
}

/// Moves bytes from `src` to `dst` until EOF on `src`; returns how many.
/// Does not half-close `dst`. Stalls as in [`splice_exact`].
pub async fn splice_to_eof(
    pool: &PipePool,
    src: &TcpStream,
    dst: &TcpStream,
    stall: Duration,
) -> Result<u64, SpliceError> {
    splice_some(pool, src, dst, None, stall).await
}

async fn splice_some(
    pool: &PipePool,
    src: &TcpStream,
    dst: &TcpStream,
    limit: Option<u64>,
    stall: Duration,
) -> Result<u64, SpliceError> {
    let (sfd, dfd) = (src.as_raw_fd(), dst.as_raw_fd());
    let mut total = 0u64;
    loop {
        let want = match limit {
            Some(n) if total >= n => return Ok(total),
            Some(n) => n - total,
            None => u64::MAX,
        };
        // Try before waiting: right after a head, body bytes are usually queued.
        let mut lease = pool.take().map_err(SpliceError::Src)?;
        let len = (lease.pipe().cap as u64).min(want) as usize;
        match sys::splice(sfd, lease.pipe().w.as_raw_fd(), len) {
            Ok(0) => {
                return match limit {
                    Some(_) => Err(SpliceError::Src(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed before the end of the body",
                    ))),
                    None => Ok(total),
                };
            }
            Ok(k) => {
                lease.fill = k;
                while lease.fill > 0 {
                    match sys::splice(lease.pipe().r.as_raw_fd(), dfd, lease.fill) {
                        Ok(m) => lease.fill -= m.min(lease.fill),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            within(stall, dst.writable(false))
                                .await
                                .map_err(SpliceError::Dst)?;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(SpliceError::Dst(e)),
                    }
                }
                total += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Give the (empty) pipe back while we wait.
                drop(lease);
                within(stall, src.readable(false))
                    .await
                    .map_err(SpliceError::Src)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SpliceError::Src(e)),
        }
    }
}

/// Waits for a readiness future, at most `stall`.
async fn within(
    stall: Duration,
    ready: impl std::future::Future<Output = io::Result<()>>,
) -> io::Result<()> {
    monoio::select! {
        r = ready => r,
        _ = monoio::time::sleep(stall) => Err(io::Error::new(io::ErrorKind::TimedOut, "stalled")),
    }
}

/// Sizes of the tunnel's futures, for the idle-memory test in worker/listener.rs.
#[cfg(test)]
pub(crate) fn debug_sizes() -> Vec<(&'static str, usize)> {
    use crate::proxy::tcp::ConnMeter;
    fn s4<A, B, C, D, F: std::future::Future>(_: impl FnOnce(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn s5<A, B, C, D, E, F: std::future::Future>(_: impl FnOnce(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn s2<A, B, F: std::future::Future>(_: impl FnOnce(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    vec![
        ("pump", s4(pump::<ConnMeter>)),
        ("tunnel", s5(tunnel::<ConnMeter>)),
        ("idle_watch", s2(idle_watch::<ConnMeter>)),
    ]
}
