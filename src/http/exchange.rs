//! One request/response exchange: route by Host, get an upstream (pooled or
//! new), send the rewritten head, move the bodies, decide what happens to
//! both connections afterwards.
//!
//! A request whose body is already buffered (most requests: no body) runs in
//! one direction at a time with exclusive io_uring ops ([`Io::Ring`]). A
//! request whose body is still arriving uploads it while the response is
//! read at the same time ([`Io::Ready`] on both sockets): a backend may answer
//! `100 Continue` or an early error before the body ends, and a streaming
//! backend may answer while it reads.

use std::cell::Cell;
use std::io;
use std::time::Duration;

use crate::balance::client_hash;
use crate::config::ListenerSpec;
use crate::proxy::connect::{self, Upstream};
use crate::shared::{Live, LiveRoute, RouteSlot};
use crate::worker::{ConnGuard, WorkerCtx};

use super::body::{BodyError, Pipe};
use super::chunked::{ChunkError, ChunkedScanner};
use super::conn::{client_io, client_ready, Client};
use super::head::{BodyFraming, HeaderSpan, RequestHead};
use super::io::Io;
use super::respond;
use super::response::{Down, DownEnd, DownError, Upload};
use super::rewrite::{write_request, RequestRewrite};
use super::upgrade::upgraded;
use crate::filter::{Request, Verdict};

/// Header fields kept per head (requests beyond it get 431, responses 502).
pub const MAX_HEADERS: usize = 100;

/// Longest stall writing a proxy-generated error response.
const ERROR_WRITE_STALL: Duration = Duration::from_secs(5);

/// What the connection does after an exchange.
pub(super) enum Outcome {
    /// The response is complete; wait for the next request (at most this long).
    KeepAlive(Duration),
    /// Close after lingering: a response went out, the client may still send.
    Close,
    /// Close after a complete exchange whose request was read to its end:
    /// linger only if the client already sent more (see `Conn::finish`).
    Finished,
    /// Close now (tunnel over, client gone, or mid-response failure).
    Drop,
    /// A WebSocket upgrade on a gateway route: the connection runs the
    /// session next, after this request's future is gone (see
    /// `upgrade::SessionStart`).
    Session(Box<super::upgrade::SessionStart>),
}

/// One exchange's scratch space. It lives in the (boxed) future of one
/// request: the buffers are the connection's, lent for the exchange, the
/// access log's and middleware's state is the connection's spare (see
/// `Conn::spare`) or fresh.
pub(super) struct Scratch {
    /// Bytes read from the upstream.
    pub ubuf: Vec<u8>,
    /// Heads being written (request to the backend, response to the client).
    pub out: Vec<u8>,
    /// Header spans of the head being handled: `MAX_HEADERS` long while an
    /// exchange runs, empty (no allocation) while the connection idles.
    pub spans: Vec<HeaderSpan>,
    /// The access log line of the exchange being run (when one is logged).
    pub log: crate::accesslog::Pending,
    /// The route's middleware chain and its edits for this exchange.
    pub filter: crate::filter::Exchange,
    /// A WebSocket upgrade on a gateway route, until it becomes a session.
    pub gw: Option<Box<crate::gateway::Pending>>,
    /// The exchange logged or ran middleware: the connection keeps `log`
    /// and `filter` (and their buffers) for its next request.
    pub keep_spare: bool,
}

/// Makes `spans` ready for a parse.
pub(super) fn ensure_spans(spans: &mut Vec<HeaderSpan>) {
    if spans.len() < MAX_HEADERS {
        spans.resize(MAX_HEADERS, HeaderSpan::default());
    }
}

/// Request body bytes still in the client socket after the buffered prefix.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rest {
    None,
    Length(u64),
    Chunked,
}

/// Runs one exchange for `head` (parsed from the start of `client.buf`).
/// On `KeepAlive`, `client.buf` holds exactly the bytes after the request.
///
/// With an access log configured anywhere, the request's fields are noted
/// first and one line is written when the exchange ends; without, this is
/// one branch.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    ctx: &WorkerCtx,
    live: &Live,
    spec: &ListenerSpec,
    client: &mut Client,
    s: &mut Scratch,
    head: RequestHead,
    guard: &mut ConnGuard,
    closing: bool,
) -> Outcome {
    if !live.any_log {
        let outcome = exchange(ctx, live, spec, client, s, head, guard, closing).await;
        if let Some(chain) = s.filter.chain.take() {
            chain.logging(s.log.status, &s.filter.edits);
        }
        return outcome;
    }
    s.keep_spare = true;
    crate::accesslog::http::begin(&mut s.log, &client.buf, &head, &s.spans);
    let outcome = exchange(ctx, live, spec, client, s, head, guard, closing).await;
    if let Some(chain) = s.filter.chain.take() {
        chain.logging(s.log.status, &s.filter.edits);
    }
    let tls = client.tls.as_deref().map(|t| t.borrow());
    let fields = tls.as_ref().map_or((None, None), |t| t.log_fields());
    crate::accesslog::http::end(&mut s.log, &ctx.log, live, client.peer.get(), fields);
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn exchange(
    ctx: &WorkerCtx,
    live: &Live,
    spec: &ListenerSpec,
    client: &mut Client,
    s: &mut Scratch,
    head: RequestHead,
    guard: &mut ConnGuard,
    closing: bool,
) -> Outcome {
    if s.out.capacity() == 0 {
        s.out = ctx.bufs.take();
    }
    // What the logging phase sees when this exchange sends no response.
    s.log.status = 0;
    let method = head.method(&client.buf);
    if method == b"CONNECT" {
        return error(client, s, 501, "CONNECT is not supported here").await;
    }
    let host = head.host(&client.buf);
    let found = spec.hosts.lookup(host);
    s.log.route = found;
    let Some(route_arc) = found.and_then(|i| live.routes.get(i)) else {
        let shown = String::from_utf8_lossy(host.unwrap_or(b""));
        let detail = format!("no route for host {shown:?}");
        return error(client, s, 404, &detail).await;
    };
    let route: &LiveRoute = route_arc;
    let Some(slot) = route.slots.get(ctx.id) else {
        return Outcome::Drop;
    };
    if let Some(out) = super::tls_edge::check(spec, route, client, &head) {
        return send_tls_edge(client, s, out, &head).await;
    }
    // A route sharing its port with others is only known once the Host is:
    // its `max_connections` is checked here, on the connection's first
    // request (a dedicated port checks it at accept). A refused connection
    // is never counted as one of the route's open connections.
    if !guard.attached() {
        if let Some(max) = route.cfg.limits.max_connections {
            if route.totals().active >= u64::from(max) {
                slot.refused.add(1);
                ctx.shared
                    .refused_connections
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return refuse(client, s, &route.cfg.name).await;
            }
        }
    }
    guard.attach(route_arc);
    slot.requests.add(1);
    let t = route.cfg.timeouts;
    if let Some(spec) = &route.chain {
        s.keep_spare = true;
        let chain = ctx.filters.get(spec);
        let f = &mut s.filter;
        f.edits.clear();
        let req = Request::new(
            client.peer.get(),
            method,
            head.path(&client.buf),
            &client.buf,
            head.headers(&s.spans),
        );
        let mut verdict = chain.request(&req, &mut f.edits);
        while let Verdict::Auth(i) = verdict {
            // Boxed: its state (header spans, buffers) would otherwise
            // enlarge every request's future, also on routes without it.
            let tls = client.tls.is_some();
            verdict = Box::pin(auth(ctx, spec, i, &req, tls, &mut f.edits)).await;
            if verdict == Verdict::Continue {
                verdict = chain.request_from(i + 1, &req, &mut f.edits);
            }
        }
        if s.log.on && !f.edits.request_id.is_empty() {
            s.log
                .set(crate::accesslog::Field::RequestId, &f.edits.request_id);
        }
        if let Verdict::Respond(status) = verdict {
            chain.response(status, &mut f.edits);
            f.chain = Some(chain);
            let keep = head.keep_alive
                && !closing
                && !ctx.stopping.is_set()
                && matches!(head.framing, BodyFraming::None | BodyFraming::Length(0));
            return answer(client, s, &head, status, keep, t.keepalive).await;
        }
        f.chain = Some(chain);
    }

    // The body bytes that arrived with the head go out with it.
    let after_head = client.buf.get(head.head_len..).unwrap_or(&[]);
    let mut scanner = ChunkedScanner::new();
    if let Some(max) = s
        .filter
        .edits
        .body_limit
        .filter(|_| s.filter.chain.is_some())
    {
        scanner.limit_data(max);
    }
    let (prefix, rest) = match head.framing {
        BodyFraming::None => (0, Rest::None),
        BodyFraming::Length(n) => {
            let p = n.min(after_head.len() as u64);
            let rest = if n > p {
                Rest::Length(n - p)
            } else {
                Rest::None
            };
            (p as usize, rest)
        }
        BodyFraming::Chunked => match scanner.advance(after_head) {
            Ok(p) if p.done => (p.consumed, Rest::None),
            Ok(p) => (p.consumed, Rest::Chunked),
            Err(ChunkError::TooLarge) => {
                slot.errors.add(1);
                return error(client, s, 413, "").await;
            }
            Err(e) => {
                tracing::debug!(peer = %client.peer, "bad chunked request body: {e}");
                return error(client, s, 400, "").await;
            }
        },
    };
    let has_body = !matches!(head.framing, BodyFraming::None | BodyFraming::Length(0));
    // The response parser only needs to know HEAD (no body) and CONNECT (refused above).
    let resp_method: &'static [u8] = if method == b"HEAD" { b"HEAD" } else { b"GET" };
    let idempotent = matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"PUT" | b"DELETE" | b"TRACE"
    );
    // Never upgrade a request with a body: after the 101 its bytes would be ambiguous.
    let upgrade = head.upgrade && !has_body;
    let client_keep = head.keep_alive && !closing && !ctx.stopping.is_set();

    let client_subject = super::tls_edge::client_subject(spec, client);
    s.out.clear();
    write_request(
        &mut s.out,
        &client.buf,
        &head,
        &s.spans,
        &RequestRewrite {
            client_ip: client.peer.ip(),
            proto: if client.tls.is_some() {
                "https"
            } else {
                "http"
            },
            forward_upgrade: upgrade,
            close_upstream: false,
            client_cert: client_subject.as_deref(),
        },
    );
    if s.filter.chain.is_some() {
        let e = &s.filter.edits;
        crate::filter::edit::apply(&mut s.out, 0, e.request_removed(), &e.req_add);
        if let Some(t) = e.new_target() {
            crate::filter::edit::replace_target(&mut s.out, 0, t);
        }
    }
    if upgrade {
        s.gw = crate::gateway::prepare(ctx, &mut s.out, route);
    }
    let consumed = head.head_len + prefix;
    s.log.bytes_in = consumed as u64;
    s.out
        .extend_from_slice(client.buf.get(head.head_len..consumed).unwrap_or(&[]));
    // The request head is copied out: from here on `client.buf` keeps only
    // what follows it (the next request, or bytes after an upgrade).
    client.buf.drain(..consumed.min(client.buf.len()));

    let hash = client_hash(client.peer.ip());
    let now = || ctx.now_ms();
    let retryable = idempotent && !has_body && rest == Rest::None;
    let pooled = |i: usize| {
        let b = route
            .backends
            .get(i)
            .filter(|b| crate::edge::poolable(b.cfg.send_proxy))?;
        match &b.cfg.tls {
            None => ctx
                .upstreams
                .take(b.cfg.addr, ctx.now_ms(), retryable)
                .map(|s| (s, None)),
            Some(t) => ctx
                .upstreams
                .take_tls(b.cfg.addr, t.fingerprint, ctx.now_ms(), retryable),
        }
    };
    s.log.upstream_begins();
    let mut up = match connect::connect(route, slot, hash, now, pooled).await {
        Ok(u) => u,
        Err(e) => return connect_failed(client, s, route, slot, e).await,
    };
    crate::edge::http_upstream_start(
        route,
        up.backend,
        up.reused,
        &client.stream,
        client.peer.get(),
        client.dst.as_deref().copied(),
        &mut s.out,
    );
    if s.log.on {
        s.log.upstream = route.backends.get(up.backend).map(|b| b.cfg.addr);
    }
    if s.ubuf.capacity() == 0 {
        s.ubuf = ctx.bufs.take();
    }
    s.ubuf.clear();
    let started = Cell::new(false);
    let down = Down {
        ctx,
        slot,
        method: resp_method,
        client_version: head.version,
        client_keep,
        upgrade,
        stall: t.response,
        started: &started,
        hsts: route.cfg.hsts.as_deref().filter(|_| client.tls.is_some()),
    };

    if rest != Rest::None {
        return concurrent(ctx, client, s, &down, up, rest, scanner, route).await;
    }

    // Whole request in hand: send it, then read the response, retrying once
    // on a fresh connection if a pooled one turns out dead before answering.
    let mut retried = false;
    let result = loop {
        let len = s.out.len();
        let r = match up
            .io(&client.cancel)
            .write_all(&mut s.out, 0..len, t.response)
            .await
        {
            Err(e) => Err(DownError::Early(e)),
            Ok(()) => {
                slot.bytes_in.add(len as u64);
                let (mut c, mut u) = (
                    client_io(&mut client.stream, &client.cancel, &client.tls),
                    up.io(&client.cancel),
                );
                down.run(s, &mut c, &mut u, None).await
            }
        };
        match r {
            Err(DownError::Early(e)) if up.reused && retryable && !retried && is_dead(&e) => {
                tracing::debug!(route = %route.cfg.name, "pooled upstream failed ({e}), retrying on a new connection");
                retried = true;
                s.ubuf.clear();
                up = match connect::connect(route, slot, hash, now, |_| None).await {
                    Ok(u) => u,
                    Err(e) => return connect_failed(client, s, route, slot, e).await,
                };
                crate::edge::http_upstream_start(
                    route,
                    up.backend,
                    up.reused,
                    &client.stream,
                    client.peer.get(),
                    client.dst.as_deref().copied(),
                    &mut s.out,
                );
                if s.log.on {
                    s.log.upstream = route.backends.get(up.backend).map(|b| b.cfg.addr);
                }
            }
            r => break r,
        }
    };
    match result {
        Ok(DownEnd::Upgraded) => upgraded(ctx, client, s, up, route_arc, slot).await,
        Ok(DownEnd::Done {
            upstream_ok,
            close_client,
        }) => {
            if upstream_ok {
                park(ctx, route, up);
            }
            if close_client {
                Outcome::Finished
            } else {
                Outcome::KeepAlive(t.keepalive)
            }
        }
        Err(e) => down_failed(client, s, route, slot, &started, e).await,
    }
}

/// Runs the `forward_auth` at chain position `i` (see `crate::filter::forward_auth`).
async fn auth(
    ctx: &WorkerCtx,
    spec: &crate::filter::ChainSpec,
    i: usize,
    req: &Request<'_>,
    tls: bool,
    e: &mut crate::filter::Edits,
) -> Verdict {
    match spec.forward_auth(i) {
        Some((cfg, counters)) => {
            let now = || ctx.now_ms();
            crate::filter::forward_auth::check(cfg, counters, &ctx.upstreams, now, req, tls, e)
                .await
        }
        // Only the built-in forward_auth may ask for a subrequest.
        None => Verdict::Respond(500),
    }
}

/// Uploads the rest of the request body while the response downloads.
#[allow(clippy::too_many_arguments)]
async fn concurrent(
    ctx: &WorkerCtx,
    client: &mut Client,
    s: &mut Scratch,
    down: &Down<'_>,
    mut up: Upstream<'_>,
    rest: Rest,
    mut scanner: ChunkedScanner,
    route: &LiveRoute,
) -> Outcome {
    let slot = down.slot;
    let len = s.out.len();
    if let Err(e) = up
        .io(&client.cancel)
        .write_all(&mut s.out, 0..len, down.stall)
        .await
    {
        return down_failed(client, s, route, slot, down.started, DownError::Early(e)).await;
    }
    slot.bytes_in.add(len as u64);
    // Everything buffered was part of this request (see `run`).
    client.buf.clear();
    let state = Cell::new(Upload::Running);
    let (result, upload) = {
        let (cs, us, utls) = (&client.stream, &up.stream, up.tls.as_deref());
        let ctls = client.tls.as_deref();
        let cbuf = &mut client.buf;
        let upload = async {
            let (mut src, mut dst) = (client_ready(cs, ctls), connect::ready_io(us, utls));
            let mut pipe = Pipe {
                pipes: &ctx.pipes,
                src: &mut src,
                dst: &mut dst,
                stall: down.stall,
            };
            match rest {
                Rest::Length(n) => pipe.length(n).await.map(|()| n),
                Rest::Chunked => pipe.chunked(&mut scanner, cbuf).await,
                Rest::None => Ok(0),
            }
        };
        let download = async {
            let (mut c, mut u) = (client_ready(cs, ctls), connect::ready_io(us, utls));
            down.run(s, &mut c, &mut u, Some(&state)).await
        };
        let (mut upload, mut download) = (std::pin::pin!(upload), std::pin::pin!(download));
        let mut upload_end: Option<Result<u64, BodyError>> = None;
        let result = loop {
            monoio::select! {
                r = &mut upload, if upload_end.is_none() => {
                    match &r {
                        Ok(n) => {
                            slot.bytes_in.add(*n);
                            state.set(Upload::Done);
                        }
                        // The backend stopped reading: it may still have answered.
                        Err(BodyError::Dst(_)) => state.set(Upload::Failed),
                        // The client failed, stalled or sent bad framing:
                        // nothing sensible can follow.
                        Err(BodyError::Src(_) | BodyError::Framing(_)) => {
                            upload_end = Some(r);
                            break None;
                        }
                    }
                    upload_end = Some(r);
                }
                r = &mut download => break Some(r),
            }
        };
        (result, upload_end)
    };
    let Some(result) = result else {
        slot.errors.add(1);
        return match upload {
            Some(Err(BodyError::Framing(ChunkError::TooLarge))) if !down.started.get() => {
                tracing::debug!(peer = %client.peer, "chunked request body over max_body");
                error(client, s, 413, "").await
            }
            Some(Err(BodyError::Framing(e))) if !down.started.get() => {
                tracing::debug!(peer = %client.peer, "bad chunked request body: {e}");
                error(client, s, 400, "").await
            }
            Some(Err(e)) => {
                tracing::debug!(peer = %client.peer, "request body: {e}");
                Outcome::Drop
            }
            _ => Outcome::Drop,
        };
    };
    if let Some(Ok(n)) = upload {
        s.log.bytes_in += n;
    }
    let upload_ok = matches!(upload, Some(Ok(_)));
    match result {
        Ok(DownEnd::Done {
            upstream_ok,
            close_client,
        }) => {
            if upstream_ok && upload_ok {
                park(ctx, route, up);
            }
            if !upload_ok {
                Outcome::Close
            } else if close_client {
                Outcome::Finished
            } else {
                Outcome::KeepAlive(route.cfg.timeouts.keepalive)
            }
        }
        // Upgrades are only forwarded for requests without a body.
        Ok(DownEnd::Upgraded) => Outcome::Drop,
        Err(e) => down_failed(client, s, route, slot, down.started, e).await,
    }
}

/// Whether an upstream error means the connection was already dead (closed
/// or reset by the backend), as opposed to slow.
fn is_dead(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
    )
}

/// Returns a cleanly finished upstream connection to the worker's pool
/// (unless the worker is draining: then it just closes).
fn park(ctx: &WorkerCtx, route: &LiveRoute, up: Upstream<'_>) {
    if ctx.stopping.is_set() {
        return;
    }
    if let Some(b) = route
        .backends
        .get(up.backend)
        .filter(|b| crate::edge::poolable(b.cfg.send_proxy))
    {
        let addr = b.cfg.addr;
        match &b.cfg.tls {
            None => ctx.upstreams.put(addr, up.release(), ctx.now_ms()),
            Some(t) => ctx
                .upstreams
                .put_tls(addr, t.fingerprint, up.release_tls(), ctx.now_ms()),
        }
    }
}

/// No upstream: 503 when no backend could even be tried, else 502.
async fn connect_failed(
    client: &mut Client,
    s: &mut Scratch,
    route: &LiveRoute,
    slot: &RouteSlot,
    e: connect::ConnectFailed,
) -> Outcome {
    slot.errors.add(1);
    tracing::debug!(route = %route.cfg.name, peer = %client.peer, "no backend: {e}");
    let status = if e.last.is_none() { 503 } else { 502 };
    let detail = format!("route {:?}: {e}", route.cfg.name);
    error(client, s, status, &detail).await
}

/// Maps a failed download to what the client sees: an error response when
/// nothing of the response went out yet, else a close.
async fn down_failed(
    client: &mut Client,
    s: &mut Scratch,
    route: &LiveRoute,
    slot: &RouteSlot,
    started: &Cell<bool>,
    e: DownError,
) -> Outcome {
    let name = &route.cfg.name;
    if let DownError::Client(e) = &e {
        tracing::debug!(route = %name, peer = %client.peer, "client went away: {e}");
        return Outcome::Drop;
    }
    slot.errors.add(1);
    tracing::debug!(route = %name, peer = %client.peer, "exchange failed: {e:?}");
    if started.get() {
        return Outcome::Drop;
    }
    match e {
        DownError::Client(_) => Outcome::Drop,
        DownError::Timeout => {
            let detail = format!("route {name:?}: backend sent no response in time");
            error(client, s, 504, &detail).await
        }
        DownError::Early(e) => {
            let detail = format!("route {name:?}: backend closed the connection ({e})");
            error(client, s, 502, &detail).await
        }
        DownError::Bad(e) => {
            let detail = format!("route {name:?}: invalid response from backend ({e})");
            error(client, s, 502, &detail).await
        }
        DownError::Backend(e) => {
            let detail = format!("route {name:?}: backend failed ({e})");
            error(client, s, 502, &detail).await
        }
    }
}

/// 503 with `Retry-After` for a route at its `max_connections`, then a
/// lingering close (the connection is counted as refused, not as an error).
async fn refuse(client: &mut Client, s: &mut Scratch, route: &str) -> Outcome {
    s.log.status = 503;
    s.out.clear();
    let detail =
        format!("route {route:?}: connection limit reached (max_connections); retry later");
    respond::write_retry_later(&mut s.out, &detail);
    send_and_close(client, &mut s.out, &mut s.log).await
}

/// Writes a middleware's direct answer (`status`, its headers, a short
/// text body). The connection stays open when `keep` (the request had no
/// body), else closes after lingering.
async fn answer(
    client: &mut Client,
    s: &mut Scratch,
    head: &RequestHead,
    status: u16,
    keep: bool,
    keepalive: Duration,
) -> Outcome {
    use std::io::Write as _;
    s.log.status = status;
    let reason = respond::reason(status);
    // 204 (a CORS preflight's answer) and 304 (a forward_auth denial) have no body.
    let body = !matches!(status, 204 | 304);
    let out = &mut s.out;
    out.clear();
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n");
    let own = s.filter.edits.answer_body();
    match own {
        _ if !body => {}
        Some(b) => {
            let _ = write!(out, "Content-Length: {}\r\n", b.len());
        }
        None => {
            let _ = write!(
                out,
                "Content-Type: text/plain\r\nContent-Length: {}\r\n",
                reason.len() + 1
            );
        }
    }
    out.extend_from_slice(&s.filter.edits.answer_headers);
    out.extend_from_slice(&s.filter.edits.resp_add);
    if !keep {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    match own {
        _ if !body => {}
        Some(b) => out.extend_from_slice(b),
        None => {
            out.extend_from_slice(reason.as_bytes());
            out.push(b'\n');
        }
    }
    if !keep {
        client.buf.clear();
        return send_and_close(client, out, &mut s.log).await;
    }
    client.buf.drain(..head.head_len.min(client.buf.len()));
    let len = out.len();
    match Io::Ring(&mut client.stream, &client.cancel)
        .write_all(out, 0..len, ERROR_WRITE_STALL)
        .await
    {
        Ok(()) => {
            s.log.bytes_out += len as u64;
            Outcome::KeepAlive(keepalive)
        }
        Err(_) => Outcome::Drop,
    }
}

/// Writes an error response (`detail` empty: the canned one) and asks for a
/// lingering close.
async fn error(client: &mut Client, s: &mut Scratch, status: u16, detail: &str) -> Outcome {
    s.log.status = status;
    let out = &mut s.out;
    out.clear();
    match respond::canned(status) {
        Some(bytes) if detail.is_empty() => out.extend_from_slice(bytes),
        _ => respond::write_error(out, status, detail),
    }
    send_and_close(client, out, &mut s.log).await
}

/// Writes a proxy-generated response in `out`; a lingering close follows.
async fn send_and_close(
    client: &mut Client,
    out: &mut Vec<u8>,
    log: &mut crate::accesslog::Pending,
) -> Outcome {
    let len = out.len();
    match client.io().write_all(out, 0..len, ERROR_WRITE_STALL).await {
        Ok(()) => {
            log.bytes_out += len as u64;
            Outcome::Close
        }
        Err(_) => Outcome::Drop,
    }
}

/// Answers a request the TLS edge rules decided (421, or a redirect to
/// https). A redirect keeps the connection when the request has no body.
async fn send_tls_edge(
    client: &mut Client,
    s: &mut Scratch,
    out: super::tls_edge::EdgeAnswer,
    head: &RequestHead,
) -> Outcome {
    s.out.clear();
    let keep = out.write(&mut s.out, head, &client.buf);
    let out_keepalive = out.keepalive;
    if !keep {
        return send_and_close(client, &mut s.out, &mut s.log).await;
    }
    client.buf.drain(..head.head_len.min(client.buf.len()));
    let len = s.out.len();
    match client
        .io()
        .write_all(&mut s.out, 0..len, ERROR_WRITE_STALL)
        .await
    {
        Ok(()) => Outcome::KeepAlive(out_keepalive),
        Err(_) => Outcome::Drop,
    }
}
