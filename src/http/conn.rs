//! One client connection on an http listener: read a head, hand it to an
//! exchange, repeat while the connection stays keep-alive.
//!
//! Requests are taken one at a time from the connection's buffer, so
//! pipelined requests are answered in order. Slowloris defense: a head must
//! be complete within `timeouts.header` of the start of its wait (408, close);
//! a head over 64 KiB is 431; any parse error is its status and a close.
//! Between requests the connection owns no buffer: it waits for readability
//! (at most `timeouts.keepalive`), then takes one from the worker's pool.
//!
//! On a TLS listener the handshake comes first (bounded by the header
//! timeout), and the client's transport is [`Client::tls`]: `None` keeps the
//! plain path exactly as it was (io_uring ops, spliced bodies).
//! A new connection whose first bytes are the HTTP/2 preface (on a listener
//! with `http2` on) is handed to `crate::h2` with those bytes; a TLS
//! connection whose handshake chose ALPN `h2` is handed over right after it.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use monoio::net::TcpStream;
use monoio::time::Instant;

use crate::edge::Preamble;
use crate::shared::Live;
use crate::sys;
use crate::tls::TlsConn;
use crate::worker::{ConnGuard, WorkerCtx};

use super::exchange::{self, Outcome, Scratch};
use super::head::{parse_request, HeadError, Limits, RequestHead, Status};
use super::io::{Cancel, Io};
use super::respond;

/// How long a closing connection keeps reading (and discarding) what the
/// client still sends, so the kernel does not answer it with a RST that
/// could destroy our last response before the client reads it.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes discarded while lingering.
const LINGER_MAX: usize = 16 << 20;
/// How long a draining worker keeps an idle keep-alive connection open for
/// a request the client may already have sent (see `Conn::wait_until`).
const DRAIN_IDLE: Duration = Duration::from_millis(500);
/// Longest stall writing an error response.
const ERROR_WRITE_STALL: Duration = Duration::from_secs(5);

/// The client side of a connection.
pub(super) struct Client {
    pub stream: TcpStream,
    /// The client's address (compact: this sits in every connection's task).
    pub peer: crate::worker::peer::Peer,
    /// Bytes read and not yet consumed: the current request starts at 0.
    pub buf: Vec<u8>,
    /// Cancels this connection task's timed-out io_uring op (client or upstream).
    pub cancel: Cancel,
    /// The transport: `None` is plain TCP, `Some` a TLS session (boxed: a
    /// plain connection's task does not carry its size).
    pub tls: Option<Box<RefCell<TlsConn>>>,
    /// The address the client connected to, when a PROXY header said it
    /// (boxed: only connections behind a PROXY-protocol edge carry it).
    pub dst: Option<Box<SocketAddr>>,
}

impl Client {
    /// The client socket for one direction at a time.
    pub fn io(&mut self) -> Io<'_> {
        client_io(&mut self.stream, &self.cancel, &self.tls)
    }
}

/// [`Client::io`] from the fields, for callers that borrow `buf` meanwhile.
pub(super) fn client_io<'a>(
    stream: &'a mut TcpStream,
    cancel: &'a Cancel,
    tls: &'a Option<Box<RefCell<TlsConn>>>,
) -> Io<'a> {
    match tls {
        None => Io::Ring(stream, cancel),
        Some(t) => Io::Tls(stream, t),
    }
}

/// The client socket shared by both directions of an exchange.
pub(super) fn client_ready<'a>(stream: &'a TcpStream, tls: Option<&'a RefCell<TlsConn>>) -> Io<'a> {
    match tls {
        None => Io::Ready(stream),
        Some(t) => Io::Tls(stream, t),
    }
}

/// Answer to plain HTTP on a TLS port (as nginx does), then close.
const PLAIN_ON_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 51\r\nConnection: close\r\n\r\nThe plain HTTP request was sent to an HTTPS port.\r\n";

/// Serves one accepted connection of an http listener until it closes.
mod ending;
mod start;

use start::Started;

pub fn serve(
    ctx: Rc<WorkerCtx>,
    live: Arc<Live>,
    stream: TcpStream,
    peer: SocketAddr,
    listen: SocketAddr,
    guard: ConnGuard,
) -> impl std::future::Future<Output = ()> {
    serve_with(ctx, live, stream, peer, listen, guard, Preamble::default())
}

/// [`serve`] for a connection whose first bytes the edge already read (the
/// PROXY header gone, `pre.bytes` the start of the first request).
///
/// Not an `async fn`: its arguments would stay in the future (the whole task
/// of an idle keep-alive connection) after being moved into the `Conn`, a
/// second copy of the socket and addresses. The future holds the `Conn` once;
/// the TLS handshake, when the listener has one, runs on the `Conn`'s socket.
pub fn serve_with(
    ctx: Rc<WorkerCtx>,
    live: Arc<Live>,
    stream: TcpStream,
    peer: SocketAddr,
    listen: SocketAddr,
    guard: ConnGuard,
    pre: Preamble,
) -> impl std::future::Future<Output = ()> {
    let spec = live.by_listen.get(&listen).copied();
    let conn = Conn {
        gen: ctx.generation() as u32,
        spec: spec.map_or(u32::MAX, |i| u32::try_from(i).unwrap_or(u32::MAX)),
        closing: false,
        first: true,
        idle_ms: 0,
        guard,
        client: Client {
            stream,
            peer: peer.into(),
            buf: pre.bytes,
            cancel: Cancel::default(),
            tls: None,
            dst: pre.dst.map(Box::new),
        },
        spare: None,
    };
    // The future captures only the `Conn` and the config: what an idle
    // connection's task holds (see bench/README.md "Idle memory"); every
    // rarer path (TLS handshake, h2 hand-offs) runs in a boxed future.
    let mut conn = conn;
    let mut live = live;
    async move {
        if conn.spec == u32::MAX {
            return;
        }
        match crate::worker::boxed(|| conn.start(&live)).await {
            Started::Http1 => {}
            Started::Done => return,
            Started::H2 => return Box::pin(conn.into_h2_tls(live)).await,
        }
        // The request loop is written out here, not in an `async fn` of the
        // `Conn`: that future would keep its two reference arguments twice
        // (as arguments and as locals, 32 bytes) and a state of its own in
        // every idle connection's task. Its one await that is not boxed is
        // the idle wait; everything before and after it is plain code.
        // In a block: what is bound here must not stay in the future across
        // the hand-off's await (a binding's storage lasts to its scope's end).
        let h2 = {
            let handoff = loop {
                // The head's deadline (coarse ms) when a wait counted against
                // it (a new connection's first wait); 0: it starts now.
                let head_ms = match conn.before_head(&live) {
                    Before::Go => 0,
                    Before::Close => break None,
                    Before::Wait(at) => match conn.wait_until(at).await {
                        Wait::Readable(at) if conn.first => at,
                        Wait::Readable(_) => 0,
                        Wait::Timeout if conn.first => {
                            Box::pin(conn.fail(408)).await;
                            break None;
                        }
                        Wait::Timeout | Wait::Stop => break None,
                    },
                };
                let Some(deadline) = conn.head_deadline(&live, head_ms) else {
                    break None;
                };
                conn.refresh_live(&mut live);
                // Boxed: reading a head and running its exchange (socket ops,
                // timers, bodies) takes a few KiB of state; inline it would be
                // part of every idle connection's task as well. One allocation
                // per request instead, and an idle connection's task stays small.
                // Built in place: `Box::pin(f)` built the 8 KiB future on the
                // stack and copied all of it into the box on every request.
                // The h2 sniff is in the same boxed future: `deadline` then lives
                // across no await of this one (else it would take 16 bytes in
                // every state of it, the idle wait's included).
                // The closures capture by `move` (a copy of `deadline`): a local
                // a closure borrows is kept in this future across the await.
                let (this, l): (&mut Conn, &Live) = (&mut conn, &live);
                let outcome = match this.h2_sniff(l) {
                    Some(cfg) => {
                        match crate::worker::boxed(move || this.sniff_then_request(l, deadline))
                            .await
                        {
                            Some(o) => o,
                            None => break Some((cfg, live.clone())),
                        }
                    }
                    None => crate::worker::boxed(move || this.request(l, deadline)).await,
                };
                if let Outcome::KeepAlive(d) = outcome {
                    conn.first = false;
                    conn.idle_ms = u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
                    continue;
                }
                // One boxed future for every ending: each await point here is
                // a slot in this future, which is most of an idle connection.
                conn.end(outcome).await;
                break None;
            };
            match handoff {
                // The client sent the HTTP/2 preface: the h2 server takes
                // over, with the bytes read so far. Boxed: an HTTP/2
                // connection's state is large, and every HTTP/1.1
                // connection's task would carry it inline.
                Some(h) => Box::pin(conn.into_h2(h)),
                None => {
                    conn.release_buffers();
                    return;
                }
            }
        };
        h2.await
    }
}

/// [`Conn::wait_until`]'s future: a readiness wait, a coarse deadline and
/// the worker's stop flag in one poll (the deadline's `mark`: draining).
struct IdleWait<'a, F> {
    ready: F,
    ctx: &'a WorkerCtx,
    at: crate::worker::timer::Deadline,
}

impl<F> Drop for IdleWait<'_, F> {
    fn drop(&mut self) {
        self.ctx.timers.disarm(&mut self.at);
    }
}

impl<F: Future<Output = std::io::Result<()>>> Future for IdleWait<'_, F> {
    type Output = Wait;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Wait> {
        // SAFETY: `ready` is pinned structurally: it is never moved out of
        // `self` (no method hands it out, and `Drop` only touches `at`), so
        // it stays where it was pinned until dropped in place; the other
        // fields are `Unpin` and only accessed by `&mut`.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above; `this.ready` is not moved while pinned.
        let ready = unsafe { Pin::new_unchecked(&mut this.ready) };
        if let Poll::Ready(r) = ready.poll(cx) {
            return Poll::Ready(match r {
                Ok(()) => Wait::Readable(this.at.deadline_ms()),
                Err(_) => Wait::Stop,
            });
        }
        let ctx = this.ctx;
        if !this.at.marked() && ctx.stopping.is_set() {
            ctx.timers.disarm(&mut this.at);
            this.at =
                crate::worker::timer::Deadline::new(ctx.now_ms() + DRAIN_IDLE.as_millis() as u64);
            this.at.mark();
        }
        match ctx.timers.poll_deadline(&mut this.at, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) if this.at.marked() => Poll::Ready(Wait::Stop),
            Poll::Ready(()) => Poll::Ready(Wait::Timeout),
        }
    }
}

struct Conn {
    // The worker: `guard.ctx()` (one reference, not two, per connection).
    /// Generation of the config this connection serves.
    /// (Truncated: only compared for equality, 4 bytes fewer per connection.)
    gen: u32,
    /// Index of our listener in `live.snapshot.listeners` (of the config
    /// this connection serves: its address is there, not in the `Conn`).
    /// `u32::MAX`: none (the listener is gone).
    spec: u32,
    /// Our listener left the config: finish this request, then close.
    closing: bool,
    /// No request served yet (the next wait is the first head's).
    /// With `idle_ms`, in what would be padding: as locals of the request loop they
    /// took 16 bytes of every idle connection's task.
    first: bool,
    /// The keep-alive timeout of the last response, in ms.
    idle_ms: u32,
    guard: ConnGuard,
    client: Client,
    /// The access log's and the middleware's per-exchange state, kept
    /// between requests (with their buffers' capacity) only once a request
    /// of this connection used them: boxed, so a connection that never
    /// logs nor filters carries 8 bytes for them.
    spare: Option<Box<Spare>>,
}

/// See [`Conn::spare`].
#[derive(Default)]
struct Spare {
    log: crate::accesslog::Pending,
    filter: crate::filter::Exchange,
}

/// The HTTP/2 settings and config a connection hands over with when its
/// first bytes are the preface.
type H2Handoff = (crate::config::Http2, Arc<Live>);

/// See [`Conn::before_head`].
enum Before {
    /// Bytes are there (buffered, in the TLS session, or just read).
    Go,
    /// Wait for bytes until this coarse deadline (ms).
    Wait(u64),
    Close,
}

/// The header timeout of listener `spec` of `live`.
fn header_timeout(live: &Live, spec: u32) -> Option<Duration> {
    live.snapshot
        .listeners
        .get(spec as usize)
        .map(|s| s.header_timeout)
}

enum Wait {
    /// With the wait's deadline (ms): a head's deadline is read from here
    /// after the wait, not kept in the connection's future across it.
    Readable(u64),
    Timeout,
    /// Draining, or the socket failed: close without a word.
    Stop,
}

enum HeadFail {
    /// EOF or a socket error: nobody to answer.
    Gone,
    /// No complete head before the deadline.
    Timeout,
    Bad(HeadError),
}

impl Conn {
    /// What to do before reading the next head (no await: this runs in
    /// the connection's future, whose every slot an idle connection holds).
    /// A wait counts against the head's deadline when it is the first (a
    /// new connection's first request), else it is the keep-alive wait.
    fn before_head(&mut self, live: &Live) -> Before {
        if !self.client.buf.is_empty() {
            return Before::Go;
        }
        // Nothing buffered: wait without holding buffers, so idle and
        // not-yet-talking connections own nothing but their socket.
        self.release_buffers();
        let head_at = |c: &Conn| match header_timeout(live, c.spec) {
            Some(t) => Before::Wait(c.guard.ctx().now_ms().saturating_add(t.as_millis() as u64)),
            None => Before::Close,
        };
        match self.client.tls.as_ref().map(|t| t.borrow().has_plain()) {
            // Decrypted bytes wait in the TLS session already.
            Some(true) => Before::Go,
            Some(false) if self.first => head_at(self),
            _ if !self.first => Before::Wait(self.guard.ctx().now_ms() + u64::from(self.idle_ms)),
            // A new plain connection: its request usually arrives right
            // behind the handshake, so try a plain read first and wait (the
            // head deadline already runs) only when it is not there yet.
            _ => match self.read_now() {
                Some(true) => Before::Go,
                Some(false) => Before::Close,
                None => head_at(self),
            },
        }
    }

    /// The head's deadline: `head_ms` (coarse ms) when a wait counted
    /// against it, else (0) the header timeout from now.
    fn head_deadline(&self, live: &Live, head_ms: u64) -> Option<Instant> {
        Some(match head_ms {
            0 => Instant::now() + header_timeout(live, self.spec)?,
            // What is left of it, to the coarse clock's tick (100 ms).
            at => {
                Instant::now() + Duration::from_millis(at.saturating_sub(self.guard.ctx().now_ms()))
            }
        })
    }

    /// The listener's HTTP/2 settings when the next request may be the
    /// HTTP/2 preface (a new plain connection on a listener with `http2`).
    /// Prior knowledge is cleartext only: over TLS, HTTP/2 is chosen by
    /// ALPN `h2` (`start`), so a TLS client's preface is a bad HTTP/1.1 head.
    fn h2_sniff(&self, live: &Live) -> Option<crate::config::Http2> {
        live.snapshot
            .listeners
            .get(self.spec as usize)
            .and_then(|s| s.http2)
            .filter(|_| self.first && self.client.tls.is_none())
    }

    /// Reads one request head (answering a bad one) and runs its exchange.
    async fn request(&mut self, live: &Live, deadline: Instant) -> Outcome {
        let Some(spec) = live.snapshot.listeners.get(self.spec as usize) else {
            return Outcome::Drop;
        };
        if self.client.buf.capacity() == 0 {
            self.client.buf = self.guard.ctx().bufs.take();
        }
        // The head's spans, and the exchange's buffers below, belong to this
        // (boxed, per request) future: the connection holds none while idle.
        let mut spans = Vec::new();
        let head = match self.read_head(&mut spans, deadline).await {
            Ok(h) => h,
            Err(HeadFail::Gone) => return Outcome::Drop,
            Err(HeadFail::Timeout) => {
                tracing::debug!(peer = %self.client.peer, "request head timeout");
                self.log_rejected(live, 408);
                self.fail(408).await;
                return Outcome::Drop;
            }
            Err(HeadFail::Bad(e)) => {
                tracing::debug!(peer = %self.client.peer, "bad request head: {e}");
                let status = e.request_status();
                self.log_rejected(live, status);
                self.fail(status).await;
                return Outcome::Drop;
            }
        };
        // The exchange's scratch lives in this future too: the connection
        // keeps only the access log's and middleware's state, in `spare`,
        // once a request used them.
        let mut spare = self.spare.take();
        let Spare { log, filter } = spare.as_deref_mut().map(std::mem::take).unwrap_or_default();
        let mut s = Scratch {
            ubuf: Vec::new(),
            out: Vec::new(),
            spans,
            log,
            filter,
            gw: None,
            keep_spare: false,
        };
        // A reference of its own: the guard is lent to the exchange.
        let ctx = self.guard.ctx().clone();
        let outcome = exchange::run(
            &ctx,
            live,
            spec,
            &mut self.client,
            &mut s,
            head,
            &mut self.guard,
            self.closing,
        )
        .await;
        let Scratch {
            ubuf,
            out,
            log,
            filter,
            keep_spare,
            ..
        } = s;
        for b in [ubuf, out] {
            if b.capacity() > 0 {
                self.guard.ctx().bufs.put(b);
            }
        }
        if keep_spare {
            let kept = Spare { log, filter };
            match spare {
                Some(mut b) => {
                    *b = kept;
                    self.spare = Some(b);
                }
                None => self.spare = Some(Box::new(kept)),
            }
        }
        outcome
    }

    /// A new connection on a listener with `http2`: `None` when its first
    /// bytes are the HTTP/2 preface, else its first request's outcome.
    async fn sniff_then_request(&mut self, live: &Live, deadline: Instant) -> Option<Outcome> {
        if self.sniff_h2(deadline).await {
            return None;
        }
        Some(self.request(live, deadline).await)
    }

    /// Reads until the connection's first bytes are known to be the HTTP/2
    /// preface (true) or not; a failed read leaves the verdict to `read_head`.
    async fn sniff_h2(&mut self, deadline: Instant) -> bool {
        loop {
            match crate::h2::sniff(&self.client.buf) {
                crate::h2::Sniff::H2 => return true,
                crate::h2::Sniff::Http1 => return false,
                crate::h2::Sniff::Partial => {}
            }
            if self.client.buf.capacity() == 0 {
                self.client.buf = self.guard.ctx().bufs.take();
            }
            let room = crate::h2::PREFACE
                .len()
                .saturating_sub(self.client.buf.len());
            match Io::Ring(&mut self.client.stream, &self.client.cancel)
                .read(&mut self.client.buf, room, deadline)
                .await
            {
                Ok(n) if n > 0 => {}
                _ => return false,
            }
        }
    }

    /// Picks up a newly published config, unless it dropped our listener
    /// (then we keep the old one for this last request and close after it).
    fn refresh_live(&mut self, live: &mut Arc<Live>) {
        let gen = self.guard.ctx().generation();
        let gen = gen as u32;
        if gen == self.gen {
            return;
        }
        self.gen = gen;
        let Some(listen) = live
            .snapshot
            .listeners
            .get(self.spec as usize)
            .map(|l| l.addr)
        else {
            self.closing = true;
            return;
        };
        let new = self.guard.ctx().live();
        match new.by_listen.get(&listen) {
            Some(&i) => {
                *live = new;
                self.spec = u32::try_from(i).unwrap_or(u32::MAX);
            }
            None => self.closing = true,
        }
    }

    /// Waits until the client sends something (or closes), at most until
    /// `deadline`; when the worker drains, at most [`DRAIN_IDLE`] more.
    ///
    /// Why not close an idle connection at once when draining: a keep-alive
    /// client may have sent its next request already, and a close under it
    /// fails that request (HTTP/1.1 has no way to say "not processed"). A
    /// request that arrives is served with `Connection: close` instead
    /// (HAProxy's `idle-close-on-response`); under a steady load (wrk) every
    /// connection ends that way, so a drain or restart costs no request.
    ///
    /// The deadlines are kept by the worker's coarse timers (one tick, 100 ms,
    /// of resolution): the runtime's `Sleep` is 512 bytes with 128-byte
    /// alignment, and it would sit in every idle connection's task.
    ///
    /// One hand-written poll instead of a `select!` over a readiness wait,
    /// a timer and the worker's stop event: this future is most of an idle
    /// connection's task. The stop is noticed without a registration of its
    /// own: stopping wakes every coarse timer (`WorkerCtx::stop`), and the
    /// poll checks the flag.
    fn wait_until(
        &self,
        deadline_ms: u64,
    ) -> IdleWait<'_, impl Future<Output = std::io::Result<()>> + '_> {
        IdleWait {
            ready: self.client.stream.readable(false),
            ctx: self.guard.ctx(),
            at: crate::worker::timer::Deadline::new(deadline_ms),
        }
    }

    /// One non-blocking read into a pooled buffer, without a runtime op:
    /// `Some(true)` bytes arrived, `Some(false)` EOF or error, `None` nothing
    /// yet (the buffer goes back to the pool).
    fn read_now(&mut self) -> Option<bool> {
        let mut buf = self.guard.ctx().bufs.take();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.client.stream);
        let room = buf.capacity();
        match sys::recv_append(fd, &mut buf, room) {
            Ok(0) => {
                self.guard.ctx().bufs.put(buf);
                Some(false)
            }
            Ok(_) => {
                self.client.buf = buf;
                Some(true)
            }
            Err(e) => {
                self.guard.ctx().bufs.put(buf);
                match e.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => None,
                    _ => Some(false),
                }
            }
        }
    }

    /// Reads until `client.buf` starts with a complete head.
    async fn read_head(
        &mut self,
        spans: &mut Vec<super::head::HeaderSpan>,
        deadline: Instant,
    ) -> Result<RequestHead, HeadFail> {
        let limits = Limits::default();
        let plain = self.client.tls.is_none();
        let buf = &mut self.client.buf;
        // Bytes already searched for the blank line that ends a head: a head
        // arriving a byte at a time is scanned once, not parsed once per byte.
        let mut scanned = 0usize;
        loop {
            if !buf.is_empty()
                && (scanned == 0 || buf.len() >= limits.max_head || has_blank_line(buf, scanned))
            {
                super::exchange::ensure_spans(spans);
                match parse_request(buf, spans, &limits) {
                    Ok(Status::Complete(h)) => return Ok(h),
                    Ok(Status::Partial) => {}
                    Err(e) => return Err(HeadFail::Bad(e)),
                }
            }
            if buf.len() >= limits.max_head {
                return Err(HeadFail::Bad(HeadError::TooLarge));
            }
            scanned = buf.len();
            let room = limits.max_head - buf.len();
            // After a readiness wait the bytes are there: a plain recv gets
            // them without the submit/complete round trip of a runtime op.
            let now = if buf.is_empty() && plain {
                if buf.capacity() == 0 {
                    buf.reserve(super::buf::BUF_SIZE);
                }
                let fd = std::os::fd::AsRawFd::as_raw_fd(&self.client.stream);
                match sys::recv_append(fd, buf, room) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                    r => Some(r),
                }
            } else {
                None
            };
            let got = match now {
                Some(r) => r,
                None => {
                    client_io(
                        &mut self.client.stream,
                        &self.client.cancel,
                        &self.client.tls,
                    )
                    .read(buf, room, deadline)
                    .await
                }
            };
            match got {
                Ok(0) => return Err(HeadFail::Gone),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(HeadFail::Timeout)
                }
                Err(_) => return Err(HeadFail::Gone),
            }
        }
    }

    fn release_buffers(&mut self) {
        self.client.cancel.release();
        if let Some(t) = &self.client.tls {
            t.borrow_mut().release();
        }
        let bufs = &self.guard.ctx().bufs;
        if self.client.buf.capacity() > 0 {
            bufs.put(std::mem::take(&mut self.client.buf));
        }
    }
}

/// Whether `buf` holds a line end followed by an empty line (CRLF CRLF, or
/// a bare-LF variant the parser will reject) past `from - 3`.
fn has_blank_line(buf: &[u8], from: usize) -> bool {
    let tail = buf.get(from.saturating_sub(3)..).unwrap_or(&[]);
    memchr::memmem::find(tail, b"\n\r\n").is_some() || memchr::memmem::find(tail, b"\n\n").is_some()
}

/// Sizes of a connection's parts, for `connection_task_sizes` (bytes).
#[cfg(test)]
pub(crate) fn debug_sizes() -> Vec<(&'static str, usize)> {
    use std::mem::size_of;
    vec![
        ("Conn", size_of::<Conn>()),
        ("Client", size_of::<Client>()),
        ("ConnGuard", size_of::<ConnGuard>()),
        ("Cancel", size_of::<Cancel>()),
        ("SocketAddr", size_of::<SocketAddr>()),
        ("Instant", size_of::<Instant>()),
        ("wait_until", fut2(Conn::wait_until)),
        ("Peer", size_of::<crate::worker::peer::Peer>()),
        ("readable", fut1(TcpStream::readable)),
        (
            "CoarseSleep",
            size_of::<crate::worker::timer::CoarseSleep<'static>>(),
        ),
        ("close", fut2m(Conn::close)),
        ("finish", fut1m(Conn::finish)),
        ("linger", fut1m(Conn::linger)),
        ("session", fut3(super::upgrade::session)),
    ]
}

#[cfg(test)]
fn fut2<'a, A, F>(_: impl FnOnce(&'a Conn, A) -> F) -> usize {
    std::mem::size_of::<F>()
}
#[cfg(test)]
fn fut2m<'a, A, F>(_: impl FnOnce(&'a mut Conn, A) -> F) -> usize {
    std::mem::size_of::<F>()
}
#[cfg(test)]
fn fut1m<'a, F>(_: impl FnOnce(&'a mut Conn) -> F) -> usize {
    std::mem::size_of::<F>()
}
#[cfg(test)]
fn fut3<A, B, C, F>(_: impl FnOnce(A, B, C) -> F) -> usize {
    std::mem::size_of::<F>()
}
#[cfg(test)]
fn fut1<'a, A, F>(_: impl FnOnce(&'a TcpStream, A) -> F) -> usize {
    std::mem::size_of::<F>()
}

#[cfg(test)]
mod tests {
    use super::has_blank_line;

    #[test]
    fn blank_line_search_covers_the_seam() {
        assert!(has_blank_line(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0));
        let b = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        // The previous read ended right after "\r\n" of the last header.
        assert!(has_blank_line(b, b.len() - 2));
        assert!(has_blank_line(b, b.len() - 1));
        assert!(!has_blank_line(b"GET / HTTP/1.1\r\nHost: a\r\n", 0));
        assert!(has_blank_line(b"GET / HTTP/1.1\nHost: a\n\n", 10));
    }
}
