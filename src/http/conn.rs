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
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
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
/// a request the client may already have sent (see `Conn::wait_readable`).
const DRAIN_IDLE: Duration = Duration::from_millis(500);
/// Longest stall writing an error response.
const ERROR_WRITE_STALL: Duration = Duration::from_secs(5);

/// The client side of a connection.
pub(super) struct Client {
    pub stream: TcpStream,
    pub peer: SocketAddr,
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
    let mut conn = Conn {
        gen: ctx.generation(),
        ctx,
        listen,
        spec: spec.unwrap_or(usize::MAX),
        closing: false,
        guard,
        client: Client {
            stream,
            peer,
            buf: pre.bytes,
            cancel: Cancel::default(),
            tls: None,
            dst: pre.dst.map(Box::new),
        },
        bufs: Bufs::default(),
        spare: None,
    };
    async move {
        if spec.is_none() {
            return;
        }
        let acc = live
            .snapshot
            .listeners
            .get(conn.spec)
            .and_then(|l| Some((l.tls.clone()?, l.header_timeout)));
        if let Some((acc, header_timeout)) = acc {
            // Boxed: the handshake's state and result (over a KiB) would
            // otherwise widen every connection's task for its whole life.
            match Box::pin(conn.tls_start(acc, header_timeout)).await {
                TlsStart::Ready => {}
                TlsStart::Done => return,
                TlsStart::H2(t) => {
                    // ALPN chose `h2` (offered only when the port's routes
                    // all have `http2` on): the h2 server takes the session.
                    let Some(cfg) = live.snapshot.listeners.get(conn.spec).and_then(|l| l.http2)
                    else {
                        return;
                    };
                    let Conn {
                        ctx, client, guard, ..
                    } = conn;
                    let (stream, peer) = (client.stream, client.peer);
                    let h2 = crate::h2::serve_tls(ctx, live, stream, *t, peer, listen, cfg, guard);
                    return Box::pin(h2).await;
                }
            }
        }
        if let Some((cfg, live)) = conn.run(live).await {
            // The client sent the HTTP/2 preface: the h2 server takes over, with
            // the bytes read so far.
            let replay = conn.client.buf.clone();
            conn.release_buffers();
            let Conn {
                ctx, client, guard, ..
            } = conn;
            let stream = client.stream;
            let peer = client.peer;
            // Boxed: an HTTP/2 connection's state is large, and every HTTP/1.1
            // connection's task would carry it inline.
            let h2 = crate::h2::serve_tcp(ctx, live, stream, peer, listen, cfg, replay, guard);
            return Box::pin(h2).await;
        }
        conn.release_buffers();
    }
}

/// How a TLS listener's handshake ended.
enum TlsStart {
    /// HTTP/1.1 over the session in `Client::tls`.
    Ready,
    /// ALPN chose `h2`: the session goes to the h2 server.
    H2(Box<TlsConn>),
    /// Failed (counted, answered if it was plain HTTP): close.
    Done,
}

struct Conn {
    ctx: Rc<WorkerCtx>,
    listen: SocketAddr,
    /// Generation of the config this connection serves.
    gen: u64,
    /// Index of our listener in `live.snapshot.listeners`.
    spec: usize,
    /// Our listener left the config: finish this request, then close.
    closing: bool,
    guard: ConnGuard,
    client: Client,
    bufs: Bufs,
    /// The access log's and the middleware's per-exchange state, kept
    /// between requests (with their buffers' capacity) only once a request
    /// of this connection used them: boxed, so a connection that never
    /// logs nor filters carries 8 bytes for them.
    spare: Option<Box<Spare>>,
}

/// The buffers an exchange borrows from its connection (pooled; released
/// while the connection idles).
#[derive(Default)]
struct Bufs {
    ubuf: Vec<u8>,
    out: Vec<u8>,
    spans: Vec<super::head::HeaderSpan>,
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

enum Wait {
    Readable,
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
    /// The TLS handshake of a TLS listener's connection (false: failed,
    /// answered if it was plain HTTP, and the connection is done).
    async fn tls_start(
        &mut self,
        acc: Arc<crate::tls::Acceptor>,
        header_timeout: Duration,
    ) -> TlsStart {
        let deadline = Instant::now() + header_timeout;
        // What the edge read after a PROXY header is the start of the
        // ClientHello: rustls takes it first, then the buffer is free.
        let early = std::mem::take(&mut self.client.buf);
        let shake = crate::tls::session::handshake(
            &self.client.stream,
            acc.config.clone(),
            deadline,
            &early,
        );
        let shaken = shake.await;
        if early.capacity() > 0 {
            self.ctx.bufs.put(early);
        }
        match shaken {
            Ok(t) => {
                acc.counters.handshake(t.resumed);
                if t.h2 {
                    return TlsStart::H2(Box::new(t));
                }
                self.client.tls = Some(Box::new(RefCell::new(t)));
                TlsStart::Ready
            }
            Err(e) => {
                acc.counters.failed(e.reason());
                tracing::debug!(peer = %self.client.peer, listen = %self.listen, "TLS handshake failed: {e}");
                if matches!(e, crate::tls::HandshakeError::PlainHttp) {
                    self.send_canned(PLAIN_ON_TLS).await;
                    self.release_buffers();
                }
                TlsStart::Done
            }
        }
    }

    /// `live` is the config this connection serves, refreshed between requests.
    /// Returns the hand-off when the first bytes were the HTTP/2 preface.
    async fn run(&mut self, mut live: Arc<Live>) -> Option<H2Handoff> {
        let mut keepalive: Option<Duration> = None;
        loop {
            let header_timeout = match live.snapshot.listeners.get(self.spec) {
                Some(spec) => spec.header_timeout,
                None => return None,
            };
            let mut deadline = Instant::now() + header_timeout;
            if self.client.buf.is_empty() {
                // Nothing buffered: wait without holding buffers, so idle and
                // not-yet-talking connections own nothing but their socket.
                self.release_buffers();
                let tls = self.client.tls.as_ref().map(|t| t.borrow().has_plain());
                match keepalive {
                    // Decrypted bytes wait in the TLS session already.
                    _ if tls == Some(true) => {}
                    None if tls.is_some() => match self.wait_readable(deadline).await {
                        Wait::Readable => {}
                        Wait::Timeout => {
                            Box::pin(self.fail(408)).await;
                            return None;
                        }
                        Wait::Stop => return None,
                    },
                    Some(idle) => match self.wait_readable(Instant::now() + idle).await {
                        Wait::Readable => deadline = Instant::now() + header_timeout,
                        Wait::Timeout | Wait::Stop => return None,
                    },
                    // A new connection: its request usually arrives right
                    // behind the handshake, so try a plain read first and
                    // wait (the head deadline already runs) only when it
                    // is not there yet.
                    None => match self.read_now() {
                        Some(true) => {}
                        Some(false) => return None,
                        None => match self.wait_readable(deadline).await {
                            Wait::Readable => {}
                            Wait::Timeout => {
                                Box::pin(self.fail(408)).await;
                                return None;
                            }
                            Wait::Stop => return None,
                        },
                    },
                }
            }
            self.refresh_live(&mut live);
            if keepalive.is_none() {
                // Prior knowledge is cleartext only: over TLS, HTTP/2 is chosen by
                // ALPN `h2` (above), so a TLS client's preface is a bad HTTP/1.1 head.
                let h2 = live
                    .snapshot
                    .listeners
                    .get(self.spec)
                    .and_then(|s| s.http2)
                    .filter(|_| self.client.tls.is_none());
                if let Some(cfg) = h2 {
                    if Box::pin(self.sniff_h2(deadline)).await {
                        return Some((cfg, live));
                    }
                }
            }
            // Boxed: reading a head and running its exchange (socket ops,
            // timers, bodies) takes a few KiB of state; inline it would be
            // part of every idle connection's task as well. One allocation
            // per request instead, and an idle connection's task stays small.
            let outcome = Box::pin(self.request(&live, deadline)).await;
            match outcome {
                Outcome::KeepAlive(idle) => {
                    keepalive = Some(idle);
                    continue;
                }
                Outcome::Close => Box::pin(self.linger()).await,
                Outcome::Finished => Box::pin(self.finish()).await,
                Outcome::Drop => {}
            }
            return None;
        }
    }

    /// Reads one request head (answering a bad one) and runs its exchange.
    async fn request(&mut self, live: &Live, deadline: Instant) -> Outcome {
        let Some(spec) = live.snapshot.listeners.get(self.spec) else {
            return Outcome::Drop;
        };
        if self.client.buf.capacity() == 0 {
            self.client.buf = self.ctx.bufs.take();
        }
        let head = match self.read_head(deadline).await {
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
        // The exchange's scratch lives in this (boxed, per request) future:
        // the connection keeps only the pooled buffers, and the access log's
        // and middleware's state in `spare` once a request used them.
        let mut spare = self.spare.take();
        let Spare { log, filter } = spare.as_deref_mut().map(std::mem::take).unwrap_or_default();
        let mut s = Scratch {
            ubuf: std::mem::take(&mut self.bufs.ubuf),
            out: std::mem::take(&mut self.bufs.out),
            spans: std::mem::take(&mut self.bufs.spans),
            log,
            filter,
            gw: None,
            keep_spare: false,
        };
        let outcome = exchange::run(
            &self.ctx,
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
            spans,
            log,
            filter,
            keep_spare,
            ..
        } = s;
        self.bufs = Bufs { ubuf, out, spans };
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
                self.client.buf = self.ctx.bufs.take();
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
        let gen = self.ctx.generation();
        if gen == self.gen {
            return;
        }
        self.gen = gen;
        let new = self.ctx.live();
        match new.by_listen.get(&self.listen) {
            Some(&i) => {
                *live = new;
                self.spec = i;
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
    async fn wait_readable(&self, deadline: Instant) -> Wait {
        let left = deadline.saturating_duration_since(Instant::now());
        let deadline_ms = self.ctx.now_ms() + left.as_millis() as u64;
        monoio::select! {
            r = self.client.stream.readable(false) => match r {
                Ok(()) => Wait::Readable,
                Err(_) => Wait::Stop,
            },
            _ = self.ctx.timers.sleep_until(deadline_ms) => Wait::Timeout,
            _ = async {
                self.ctx.stopping.wait().await;
                let drain_ms = self.ctx.now_ms() + DRAIN_IDLE.as_millis() as u64;
                self.ctx.timers.sleep_until(drain_ms).await;
            } => Wait::Stop,
        }
    }

    /// One non-blocking read into a pooled buffer, without a runtime op:
    /// `Some(true)` bytes arrived, `Some(false)` EOF or error, `None` nothing
    /// yet (the buffer goes back to the pool).
    fn read_now(&mut self) -> Option<bool> {
        let mut buf = self.ctx.bufs.take();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.client.stream);
        let room = buf.capacity();
        match sys::recv_append(fd, &mut buf, room) {
            Ok(0) => {
                self.ctx.bufs.put(buf);
                Some(false)
            }
            Ok(_) => {
                self.client.buf = buf;
                Some(true)
            }
            Err(e) => {
                self.ctx.bufs.put(buf);
                match e.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => None,
                    _ => Some(false),
                }
            }
        }
    }

    /// Reads until `client.buf` starts with a complete head.
    async fn read_head(&mut self, deadline: Instant) -> Result<RequestHead, HeadFail> {
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
                super::exchange::ensure_spans(&mut self.bufs.spans);
                match parse_request(buf, &mut self.bufs.spans, &limits) {
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

    /// The access-log line of a request refused before its head was whole
    /// (cold: only on 400, 408 and 431).
    #[cold]
    fn log_rejected(&self, live: &Live, status: u16) {
        let got = self.client.buf.len() as u64;
        let tls = self.client.tls.as_deref().map(|t| t.borrow());
        let fields = tls.as_ref().map_or((None, None), |t| t.log_fields());
        crate::accesslog::http::rejected(
            &self.ctx.log,
            live,
            self.client.peer,
            status,
            got,
            fields,
        );
    }

    /// Answers with a canned error response, then closes.
    async fn fail(&mut self, status: u16) {
        let out = &mut self.bufs.out;
        if out.capacity() == 0 {
            *out = self.ctx.bufs.take();
        }
        out.clear();
        match respond::canned(status) {
            Some(bytes) => out.extend_from_slice(bytes),
            None => respond::write_error(out, status, ""),
        }
        let len = out.len();
        if client_io(
            &mut self.client.stream,
            &self.client.cancel,
            &self.client.tls,
        )
        .write_all(out, 0..len, ERROR_WRITE_STALL)
        .await
        .is_ok()
        {
            self.linger().await;
        }
    }

    /// Writes `bytes` on the plain socket, then closes with a linger.
    async fn send_canned(&mut self, bytes: &[u8]) {
        let out = &mut self.bufs.out;
        if out.capacity() == 0 {
            *out = self.ctx.bufs.take();
        }
        out.clear();
        out.extend_from_slice(bytes);
        let len = out.len();
        if Io::Ring(&mut self.client.stream, &self.client.cancel)
            .write_all(out, 0..len, ERROR_WRITE_STALL)
            .await
            .is_ok()
        {
            self.linger().await;
        }
    }

    /// Closes after a complete exchange. Lingering costs a read op, a timer
    /// and the client's FIN round trip per connection; it is only needed when
    /// the client sent more than we answered (pipelined requests we will not
    /// serve), so, like nginx's `lingering_close on`, only then.
    async fn finish(&mut self) {
        if let Some(t) = &self.client.tls {
            if t.borrow().has_plain() {
                return self.linger().await;
            }
            crate::tls::session::close(&self.client.stream, t, ERROR_WRITE_STALL).await;
        }
        if !self.client.buf.is_empty() {
            return self.linger().await;
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.client.stream);
        let mut probe = [0u8; 1];
        match sys::recv_peek(fd, &mut probe) {
            // Nothing pending (or the client already closed): a plain close
            // sends FIN, never RST.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok(0) => {}
            _ => self.linger().await,
        }
    }

    /// Half-closes, then reads and discards until the client closes too (or
    /// [`LINGER`] passes), so our last response is not lost to a RST.
    async fn linger(&mut self) {
        if let Some(t) = &self.client.tls {
            crate::tls::session::close(&self.client.stream, t, ERROR_WRITE_STALL).await;
        }
        let _ = sys::shutdown_write(std::os::fd::AsRawFd::as_raw_fd(&self.client.stream));
        let deadline = Instant::now() + LINGER;
        let buf = &mut self.client.buf;
        if buf.capacity() == 0 {
            *buf = self.ctx.bufs.take();
        }
        let mut total = 0usize;
        while total < LINGER_MAX {
            buf.clear();
            let room = buf.capacity();
            match Io::Ring(&mut self.client.stream, &self.client.cancel)
                .read(buf, room, deadline)
                .await
            {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    }

    fn release_buffers(&mut self) {
        self.bufs.spans = Vec::new();
        if let Some(t) = &self.client.tls {
            t.borrow_mut().release();
        }
        let bufs = &self.ctx.bufs;
        for b in [
            &mut self.client.buf,
            &mut self.bufs.ubuf,
            &mut self.bufs.out,
        ] {
            if b.capacity() > 0 {
                bufs.put(std::mem::take(b));
            }
        }
    }
}

/// Whether `buf` holds a line end followed by an empty line (CRLF CRLF, or
/// a bare-LF variant the parser will reject) past `from - 3`.
fn has_blank_line(buf: &[u8], from: usize) -> bool {
    let tail = buf.get(from.saturating_sub(3)..).unwrap_or(&[]);
    memchr::memmem::find(tail, b"\n\r\n").is_some() || memchr::memmem::find(tail, b"\n\n").is_some()
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
