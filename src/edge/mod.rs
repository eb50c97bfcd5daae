//! The edge of a connection, before its route's normal path: the PROXY
//! protocol header a balancer puts in front (`proxy_protocol`), the TLS
//! ClientHello whose SNI picks a tcp route on a shared port (`sni`,
//! passthrough: TLS is not terminated), and the PROXY header ringmesh puts in
//! front of an upstream connection (`send_proxy`).
//!
//! Only listeners with `proxy_protocol` or `sni` routes come here (one flag
//! test in the accept loop); everything else keeps the direct path. Here a
//! connection is read, without a runtime op, into a pooled buffer until the
//! header and/or the ClientHello are complete, within the listener's header
//! timeout. Then the connection limits are checked against the client address
//! the header gave, and the connection goes on to the tcp tunnel or the http
//! proxy together with the bytes read so far ([`Preamble`]): the rest of the
//! request or the ClientHello itself is never lost. A connection that fails
//! is closed and counted in [`Counters`] by reason.

pub mod client_hello;
pub mod proxy_protocol;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use monoio::net::TcpStream;

use crate::config::{ListenerSpec, Protocol, SendProxy};
use crate::proxy::{connect, tcp};
use crate::shared::{Live, LiveRoute};
use crate::sys;
use crate::worker::{limits, ConnGuard, WorkerCtx};

use proxy_protocol::Source;

/// Why the edge closed a connection (a metrics label each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `proxy_protocol`: the first bytes are no PROXY header.
    ProxyMissing,
    /// `proxy_protocol`: a malformed v1 or v2 header.
    ProxyInvalid,
    /// `proxy_protocol`: no complete header within the header timeout.
    ProxyTimeout,
    /// `proxy_protocol`: the client closed (or reset) before its header ended.
    ProxyClosed,
    /// `sni`: the first bytes are no TLS handshake.
    SniNotTls,
    /// `sni`: a ClientHello whose lengths do not add up, or a bad server name.
    SniMalformed,
    /// `sni`: a ClientHello over 16 KiB.
    SniTooLarge,
    /// `sni`: no complete ClientHello within the header timeout.
    SniTimeout,
    /// `sni`: the client closed before its ClientHello ended.
    SniClosed,
    /// `sni`: no route for the name and no default route on the port.
    SniNoRoute,
}

impl Refusal {
    pub const ALL: [Refusal; 10] = [
        Refusal::ProxyMissing,
        Refusal::ProxyInvalid,
        Refusal::ProxyTimeout,
        Refusal::ProxyClosed,
        Refusal::SniNotTls,
        Refusal::SniMalformed,
        Refusal::SniTooLarge,
        Refusal::SniTimeout,
        Refusal::SniClosed,
        Refusal::SniNoRoute,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ProxyMissing => "proxy_missing",
            Refusal::ProxyInvalid => "proxy_invalid",
            Refusal::ProxyTimeout => "proxy_timeout",
            Refusal::ProxyClosed => "proxy_closed",
            Refusal::SniNotTls => "sni_not_tls",
            Refusal::SniMalformed => "sni_malformed",
            Refusal::SniTooLarge => "sni_too_large",
            Refusal::SniTimeout => "sni_timeout",
            Refusal::SniClosed => "sni_closed",
            Refusal::SniNoRoute => "sni_no_route",
        }
    }
}

/// Connections the edge closed, by reason, for the whole process. Touched
/// only when a connection is refused (never on a served connection's path),
/// so one shared atomic per reason costs nothing that matters.
#[derive(Debug, Default)]
pub struct Counters {
    refused: [AtomicU64; Refusal::ALL.len()],
}

impl Counters {
    pub fn add(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Relaxed);
    }
    pub fn get(&self, why: Refusal) -> u64 {
        self.refused[why as usize].load(Relaxed)
    }
}

/// What the edge read before the connection's normal path takes over.
#[derive(Debug, Default)]
pub struct Preamble {
    /// Bytes read after the PROXY header (the ClientHello, the start of a
    /// request): they go to the backend first, or, on a route with `tls`,
    /// to the handshake (`crate::tls::session::handshake`). A pooled buffer.
    pub bytes: Vec<u8>,
    /// The address the client connected to, from its PROXY header.
    pub dst: Option<SocketAddr>,
}

/// How a read of the edge's bytes ended when it did not succeed.
enum Fail<B> {
    Bad(B),
    Timeout,
    Closed,
    /// The limit of bytes was reached without an answer.
    Full,
}

/// Takes over an accepted connection of a listener whose `edge` is active.
pub fn accept(
    ctx: &Rc<WorkerCtx>,
    live: Arc<Live>,
    sock: OwnedFd,
    peer: SocketAddr,
    addr: SocketAddr,
) {
    let stream = match connect::adopt(sock) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%addr, "cannot register accepted socket: {e}");
            return;
        }
    };
    // Counted open from now on (a drain waits for it), attributed to a
    // route once one is chosen.
    let guard = ctx.conn_opened_unrouted();
    monoio::spawn(serve(ctx.clone(), live, stream, peer, addr, guard));
}

async fn serve(
    ctx: Rc<WorkerCtx>,
    live: Arc<Live>,
    stream: TcpStream,
    mut peer: SocketAddr,
    addr: SocketAddr,
    guard: ConnGuard,
) {
    let Some(spec) = live
        .by_listen
        .get(&addr)
        .and_then(|&i| live.snapshot.listeners.get(i))
    else {
        return;
    };
    // One deadline for the PROXY header and the ClientHello together.
    let deadline = ctx.now_ms() + spec.header_timeout.as_millis() as u64;
    // No buffer until bytes arrive: a silent connection owns only its socket.
    let mut pre = Preamble::default();
    if spec.edge.proxy_protocol {
        match read_proxy(&ctx, &stream, &mut pre, deadline).await {
            Ok(Some(src)) => peer = src,
            Ok(None) => {}
            Err(why) => return refuse(&ctx, why, peer, addr, pre),
        }
    }
    let route = match spec.protocol {
        // Each request picks its route by Host.
        Protocol::Http => None,
        Protocol::Tcp if spec.edge.sni => {
            match sni_route(&ctx, &live, spec, &stream, &mut pre, deadline).await {
                Ok(r) => Some(r),
                Err(why) => return refuse(&ctx, why, peer, addr, pre),
            }
        }
        Protocol::Tcp => match spec.routes.first().and_then(|&i| live.routes.get(i)) {
            Some(r) => Some(r.clone()),
            None => return,
        },
    };
    // The route whose max_connections applies now: known for tcp, and for
    // an http listener with a single route.
    let limit_route = match (&route, spec.routes.as_slice()) {
        (Some(r), _) => Some(r.clone()),
        (None, [only]) => live.routes.get(*only).cloned(),
        _ => None,
    };
    let conn = Admit {
        stream,
        peer,
        addr,
        guard,
        pre,
    };
    admit(ctx, live.clone(), conn, route, limit_route).await;
}

/// Reads the PROXY header into `pre` (the bytes after it stay there);
/// returns the client address it names (`None`: LOCAL, keep the socket's).
async fn read_proxy(
    ctx: &WorkerCtx,
    stream: &TcpStream,
    pre: &mut Preamble,
    deadline: u64,
) -> Result<Option<SocketAddr>, Refusal> {
    let got = fill(
        ctx,
        stream,
        &mut pre.bytes,
        proxy_protocol::V2_MAX,
        deadline,
        |b| match proxy_protocol::parse(b) {
            proxy_protocol::Parsed::Header { len, source } => Some(Ok((len, source))),
            proxy_protocol::Parsed::Incomplete => None,
            proxy_protocol::Parsed::Bad(why) => Some(Err(why)),
        },
    )
    .await;
    match got {
        Ok((len, source)) => {
            pre.bytes.drain(..len);
            Ok(match source {
                Source::Proxied { src, dst } => {
                    pre.dst = Some(dst);
                    Some(src)
                }
                Source::Local => None,
            })
        }
        Err(Fail::Bad(proxy_protocol::Bad::Missing)) => Err(Refusal::ProxyMissing),
        Err(Fail::Bad(_) | Fail::Full) => Err(Refusal::ProxyInvalid),
        Err(Fail::Timeout) => Err(Refusal::ProxyTimeout),
        Err(Fail::Closed) => Err(Refusal::ProxyClosed),
    }
}

/// Reads the ClientHello into `pre` (kept whole: it goes to the backend)
/// and picks the tcp route of `spec` for its server name.
async fn sni_route(
    ctx: &WorkerCtx,
    live: &Live,
    spec: &ListenerSpec,
    stream: &TcpStream,
    pre: &mut Preamble,
    deadline: u64,
) -> Result<Arc<LiveRoute>, Refusal> {
    let hosts = &spec.hosts;
    let got = fill(
        ctx,
        stream,
        &mut pre.bytes,
        client_hello::MAX_RAW,
        deadline,
        |b| {
            match client_hello::parse(b) {
                // Exact name, then the longest wildcard, then the port's default.
                client_hello::Hello::Done { sni, .. } => {
                    Some(Ok(hosts.lookup(sni.as_deref().map(str::as_bytes))))
                }
                client_hello::Hello::Incomplete => None,
                client_hello::Hello::Bad(why) => Some(Err(why)),
            }
        },
    )
    .await;
    match got {
        Ok(i) => i
            .and_then(|i| live.routes.get(i))
            .cloned()
            .ok_or(Refusal::SniNoRoute),
        Err(Fail::Bad(client_hello::Bad::NotTls)) => Err(Refusal::SniNotTls),
        Err(Fail::Bad(client_hello::Bad::TooLarge) | Fail::Full) => Err(Refusal::SniTooLarge),
        Err(Fail::Bad(_)) => Err(Refusal::SniMalformed),
        Err(Fail::Timeout) => Err(Refusal::SniTimeout),
        Err(Fail::Closed) => Err(Refusal::SniClosed),
    }
}

/// Counts and logs a refused connection; it closes when dropped.
fn refuse(ctx: &WorkerCtx, why: Refusal, peer: SocketAddr, addr: SocketAddr, pre: Preamble) {
    ctx.shared.edge.add(why);
    tracing::debug!(%peer, %addr, reason = why.as_str(), "connection closed at the edge");
    ctx.bufs.put(pre.bytes);
}

/// A connection past the edge, on its way to its route.
struct Admit {
    stream: TcpStream,
    peer: SocketAddr,
    addr: SocketAddr,
    guard: ConnGuard,
    pre: Preamble,
}

/// The connection limits for the client address the edge found, then the
/// route's normal path (`route`: a tcp route; `None`: an http listener).
async fn admit(
    ctx: Rc<WorkerCtx>,
    live: Arc<Live>,
    conn: Admit,
    route: Option<Arc<LiveRoute>>,
    limit_route: Option<Arc<LiveRoute>>,
) {
    let Admit {
        stream,
        peer,
        addr,
        mut guard,
        pre,
    } = conn;
    match limits::admit(
        &ctx.shared,
        &live.snapshot.limits,
        limit_route.as_deref(),
        peer.ip(),
    ) {
        Ok(a) => guard.hold(a),
        Err(why) => {
            ctx.shared.refused_connections.fetch_add(1, Relaxed);
            if let Some(s) = limit_route.as_ref().and_then(|r| r.slots.get(ctx.id)) {
                s.refused.add(1);
            }
            tracing::debug!(%peer, %addr, "refused: {} reached", why.as_str());
            ctx.bufs.put(pre.bytes);
            if route.is_none() {
                limits::refuse_http(stream, why).await;
            }
            return;
        }
    }
    match route {
        Some(route) => {
            guard.attach(&route);
            tcp::serve_with(ctx, stream, peer, route, pre, guard).await;
        }
        None => crate::http::conn::serve_with(ctx, live, stream, peer, addr, guard, pre).await,
    }
}

/// Reads into `buf` (at most `max` bytes in all) until `parse` answers,
/// waiting for readiness at most until `deadline_ms` (the worker's coarse
/// clock). Plain non-blocking recv: nothing in flight to cancel at a timeout.
/// `buf` may start without capacity: a pooled buffer is taken once the
/// socket is readable.
async fn fill<T, B>(
    ctx: &WorkerCtx,
    stream: &TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
    deadline_ms: u64,
    mut parse: impl FnMut(&[u8]) -> Option<Result<T, B>>,
) -> Result<T, Fail<B>> {
    let fd = stream.as_raw_fd();
    loop {
        if let Some(r) = parse(buf) {
            return r.map_err(Fail::Bad);
        }
        if buf.len() >= max {
            return Err(Fail::Full);
        }
        if buf.capacity() == 0 {
            monoio::select! {
                r = stream.readable(false) => if r.is_err() { return Err(Fail::Closed) },
                _ = ctx.timers.sleep_until(deadline_ms) => return Err(Fail::Timeout),
            }
            *buf = ctx.bufs.take();
        } else if buf.len() == buf.capacity() {
            buf.reserve(crate::http::buf::BUF_SIZE.min(max - buf.len()));
        }
        match sys::recv_append(fd, buf, max - buf.len()) {
            Ok(0) => return Err(Fail::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                monoio::select! {
                    r = stream.readable(false) => if r.is_err() { return Err(Fail::Closed) },
                    _ = ctx.timers.sleep_until(deadline_ms) => return Err(Fail::Timeout),
                }
            }
            Err(_) => return Err(Fail::Closed),
        }
    }
}

/// Writes all of `data` to `stream`, waiting for writability at most until
/// `deadline_ms`.
async fn write_all(
    ctx: &WorkerCtx,
    stream: &TcpStream,
    mut data: &[u8],
    deadline_ms: u64,
) -> std::io::Result<()> {
    let fd = stream.as_raw_fd();
    while !data.is_empty() {
        match sys::send(fd, data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                monoio::select! {
                    r = stream.writable(false) => r?,
                    _ = ctx.timers.sleep_until(deadline_ms) => {
                        return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream accepts no bytes"));
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether a new upstream connection of a tcp route gets bytes before its
/// tunnel starts (a PROXY header, or what the edge read from the client).
#[inline]
pub fn tcp_upstream_needed(route: &LiveRoute, backend: usize, pre: &Preamble) -> bool {
    !pre.bytes.is_empty()
        || route
            .backends
            .get(backend)
            .is_some_and(|b| b.cfg.send_proxy.is_some())
}

/// The PROXY header (if backend `send_proxy` is set) and then the preamble's
/// bytes, written to a new upstream connection of a tcp route before its
/// tunnel starts. `dst` defaults to the client socket's local address.
pub async fn tcp_upstream_start(
    ctx: &WorkerCtx,
    route: &LiveRoute,
    backend: usize,
    client: &TcpStream,
    upstream: &TcpStream,
    peer: SocketAddr,
    pre: Preamble,
) -> std::io::Result<()> {
    let send_proxy = route.backends.get(backend).and_then(|b| b.cfg.send_proxy);
    if send_proxy.is_none() && pre.bytes.is_empty() {
        ctx.bufs.put(pre.bytes);
        return Ok(());
    }
    let mut out = ctx.bufs.take();
    if let Some(v) = send_proxy {
        let dst = match pre.dst {
            Some(d) => d,
            None => client.local_addr()?,
        };
        proxy_protocol::write(v, peer, dst, &mut out);
    }
    out.extend_from_slice(&pre.bytes);
    ctx.bufs.put(pre.bytes);
    let deadline = ctx.now_ms() + route.cfg.timeouts.idle.as_millis() as u64;
    let r = write_all(ctx, upstream, &out, deadline).await;
    ctx.bufs.put(out);
    r
}

/// For an http request about to go to `backend` on a new connection: puts
/// the PROXY header in front of the request bytes in `out` when the backend
/// has `send_proxy`. Such connections are never pooled (see
/// `http::exchange`), so every connection carries exactly one client.
pub fn http_upstream_start(
    route: &LiveRoute,
    backend: usize,
    reused: bool,
    client: &TcpStream,
    peer: SocketAddr,
    dst: Option<SocketAddr>,
    out: &mut Vec<u8>,
) {
    let Some(v) = route.backends.get(backend).and_then(|b| b.cfg.send_proxy) else {
        return;
    };
    if reused {
        return;
    }
    let Some(dst) = dst.or_else(|| client.local_addr().ok()) else {
        return;
    };
    let mut h = Vec::with_capacity(64);
    proxy_protocol::write(v, peer, dst, &mut h);
    out.splice(0..0, h);
}

/// Whether connections to this backend may be pooled: not when each one
/// carries a PROXY header naming one client.
#[inline]
pub fn poolable(send_proxy: Option<SendProxy>) -> bool {
    send_proxy.is_none()
}
