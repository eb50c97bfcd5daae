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
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use monoio::net::TcpStream;

use crate::http::buf::BufPool;
use crate::sys;
use crate::worker::timer::{CoarseTimers, Deadline};

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
///
/// One hand-written future for both directions and the idle watch, not two
/// pump futures and a watch under a `select!`: it is most of an idle
/// tunnel's task (bench/README.md, "Idle memory"), and each `async` pump
/// kept its arguments, counters and the shared references of its own. This
/// one holds the two runtime readiness waits (what an idle tunnel needs),
/// one coarse deadline and a few bytes per direction. A read and its
/// forwarding are synchronous; only bytes `dst` cannot take yet go into a
/// boxed [`flush`] (backpressure, rare for small messages).
pub fn tunnel<'a, M: Meter>(
    pool: &'a PipePool,
    meter: &'a M,
    client: &'a TcpStream,
    backend: &'a TcpStream,
    idle: Duration,
) -> impl Future<Output = Result<Moved, TunnelEnd>> + 'a {
    let last = meter.now_ms();
    let idle_ms = idle.as_millis().clamp(1, u64::MAX as u128) as u64;
    Tunnel {
        pool,
        meter,
        ends: [client, backend],
        mk: readable,
        ready: [None, None],
        flush: [None, None],
        // The client's direction tries a read before its first readiness
        // wait (a new client's first bytes usually arrive with, or right
        // behind, the handshake).
        dirs: [Dir::new(false), Dir::new(true)],
        moved: Moved::default(),
        last,
        idle_ms,
        watch: Deadline::new(last.saturating_add(idle_ms)),
    }
}

/// The runtime's readiness wait on `s` (a PollAdd on io_uring, epoll on the
/// legacy driver); a fn item, so [`Tunnel`] can make new ones.
fn readable(s: &TcpStream) -> impl Future<Output = io::Result<()>> + '_ {
    s.readable(false)
}

/// A backlog being sent (see [`flush`]).
type Flush<'a> = Pin<Box<dyn Future<Output = io::Result<()>> + 'a>>;

/// [`tunnel`]'s future. Index 0 of every pair is the client -> backend
/// direction (`up`), 1 the other one; `ends` is [client, backend].
struct Tunnel<'a, M: Meter, R, K> {
    pool: &'a PipePool,
    meter: &'a M,
    ends: [&'a TcpStream; 2],
    /// Makes a readiness wait (zero-sized: a fn item).
    mk: K,
    /// Each direction's readiness wait on its source, while it waits.
    ready: [Option<R>; 2],
    /// Each direction's backlog, while `dst` cannot take it.
    flush: [Option<Flush<'a>>; 2],
    dirs: [Dir; 2],
    moved: Moved,
    /// Last activity either way (the worker's coarse ms).
    last: u64,
    idle_ms: u64,
    /// When the idle watch looks at `last` again.
    watch: Deadline,
}

/// One direction's state between polls.
struct Dir {
    mode: Mode,
    /// Wait for readability before the next read.
    wait: bool,
    /// EOF passed on: this direction is finished.
    done: bool,
    /// Bytes moved since the last readiness wait (saturating).
    burst: u32,
}

impl Dir {
    fn new(wait: bool) -> Dir {
        Dir {
            mode: Mode::Copy,
            wait,
            done: false,
            burst: 0,
        }
    }
}

impl<M: Meter, R, K> Drop for Tunnel<'_, M, R, K> {
    fn drop(&mut self) {
        // Only the coarse deadline (see the SAFETY notes in `poll`): its
        // waiter must not stay registered after the tunnel.
        self.meter.timers().disarm(&mut self.watch);
    }
}

impl<'a, M, R, K> Future for Tunnel<'a, M, R, K>
where
    M: Meter,
    R: Future<Output = io::Result<()>>,
    K: Fn(&'a TcpStream) -> R,
{
    type Output = Result<Moved, TunnelEnd>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: only the readiness waits in `ready` are pinned
        // (structurally): they are never moved out, only dropped in place
        // (`= None`) or written into an empty slot, and `Drop` does not touch
        // them. Every other field is `Unpin` and only accessed by `&mut`.
        let this = unsafe { self.get_unchecked_mut() };
        for i in 0..2 {
            if let Err(e) = this.drive(i, cx) {
                this.meter.timers().disarm(&mut this.watch);
                return Poll::Ready(Err(e));
            }
        }
        if this.dirs[0].done && this.dirs[1].done {
            this.meter.timers().disarm(&mut this.watch);
            return Poll::Ready(Ok(this.moved));
        }
        // The idle watch: when its deadline passes, look at the last
        // activity; quiet for `idle` ends the tunnel, else wait again.
        let timers = this.meter.timers();
        while timers.poll_deadline(&mut this.watch, cx).is_ready() {
            let deadline = this.last.saturating_add(this.idle_ms);
            if this.meter.now_ms() >= deadline {
                return Poll::Ready(Err(TunnelEnd::Idle));
            }
            this.watch = Deadline::new(deadline);
        }
        Poll::Pending
    }
}

impl<'a, M, R, K> Tunnel<'a, M, R, K>
where
    M: Meter,
    R: Future<Output = io::Result<()>>,
    K: Fn(&'a TcpStream) -> R,
{
    /// Moves direction `i`'s bytes until it must wait (readiness or a
    /// backlog) or reaches EOF. `Ok` also when waiting.
    fn drive(&mut self, i: usize, cx: &mut Context<'_>) -> Result<(), TunnelEnd> {
        let up = i == 0;
        let (src, dst) = (self.ends[i], self.ends[1 - i]);
        let side = move |e: Side| side_of(e, up);
        let bufs = self.meter.bufs();
        loop {
            let d = &mut self.dirs[i];
            if d.done {
                return Ok(());
            }
            if let Some(f) = &mut self.flush[i] {
                let r = match f.as_mut().poll(cx) {
                    Poll::Pending => return Ok(()),
                    Poll::Ready(r) => r,
                };
                self.flush[i] = None;
                r.map_err(|e| side(Side::Dst(e)))?;
            }
            if d.wait {
                let slot = &mut self.ready[i];
                if slot.is_none() {
                    *slot = Some((self.mk)(src));
                }
                let Some(fut) = slot.as_mut() else {
                    return Ok(());
                };
                // SAFETY: `fut` lives in `self.ready[i]`, pinned with `self`
                // (see `poll`): it is not moved until dropped in place below.
                let r = match unsafe { Pin::new_unchecked(fut) }.poll(cx) {
                    Poll::Pending => return Ok(()),
                    Poll::Ready(r) => r,
                };
                *slot = None;
                r.map_err(|e| side(Side::Src(e)))?;
                d.burst = 0;
            }
            let (sfd, dfd) = (src.as_raw_fd(), dst.as_raw_fd());
            let (step, backlog) = match d.mode {
                Mode::Copy => copy_now(bufs, sfd, dfd),
                Mode::Splice => splice_now(self.pool, sfd, dfd),
            }
            .map_err(side)?;
            let n = match step {
                Step::Eof => {
                    // ENOTCONN: the peer already went away; nothing to tell it.
                    let _ = sys::shutdown_write(dfd);
                    d.done = true;
                    return Ok(());
                }
                Step::Drained(n) | Step::More(n) => n,
            };
            if n > 0 {
                let total = if up {
                    &mut self.moved.up
                } else {
                    &mut self.moved.down
                };
                *total += n as u64;
                d.burst = d.burst.saturating_add(n.min(u32::MAX as usize) as u32);
                self.meter.moved(up, n as u64);
                self.last = self.meter.now_ms();
            }
            d.wait = !matches!(step, Step::More(_));
            d.mode = match (d.mode, step) {
                // A full buffer: more is queued, splice it without waiting.
                (Mode::Copy, Step::More(_)) => Mode::Splice,
                // The socket drained after a burst smaller than a buffer: the
                // stream calmed down, copy small messages again.
                (Mode::Splice, Step::Drained(_)) if (d.burst as usize) < RELAY_SMALL => Mode::Copy,
                (m, _) => m,
            };
            if let Some(b) = backlog {
                self.flush[i] = Some(Box::pin(flush(b, dst, bufs)));
            }
        }
    }
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
    fn s5<A, B, C, D, E, F: std::future::Future>(_: impl FnOnce(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn s1<A, F: std::future::Future>(_: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    vec![
        ("tunnel", s5(tunnel::<ConnMeter>)),
        ("readable", s1(readable)),
        ("Deadline", std::mem::size_of::<Deadline>()),
    ]
}
