//! One HTTP/2 stream proxied as an HTTP/1.1 exchange: route by
//! `:authority`, take a pooled (or new) upstream connection, send the head
//! and the request body (chunked when its length is unknown) while the
//! response comes back, then stream the response body under the client's
//! flow control, with chunked trailers as HTTP/2 trailers.
//!
//! Each stream runs in its own task, so a slow backend answer holds only
//! its own stream. The upstream socket is used by readiness and
//! non-blocking syscalls ([`Io::Ready`]): upload and download share it.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use monoio::time::Instant;

use crate::balance::client_hash;
use crate::http::head::{parse_response, HeaderSpan, Limits, ResponseFraming, Status};
use crate::http::io::{Cancel, Io};
use crate::proxy::connect::{self, Upstream};
use crate::shared::{H2Counters, Live, LiveRoute, RouteSlot};
use crate::worker::{ConnGuard, WorkerCtx};

use super::answer::{discard, retry_later};
use super::body::BodyOut;
use super::head::{self as h2head, ReqBody};
use super::record::Record;
use super::server::StreamToken;
use crate::filter::Verdict;

/// Most interim (1xx) responses of one exchange passed on to the client.
pub(super) const MAX_INTERIM: usize = 8;

/// Most response bytes read from the backend per DATA frame batch.
pub(super) const READ_CHUNK: usize = 16 * 1024;

/// What every stream of a connection shares.
pub struct ConnShared {
    pub ctx: Rc<WorkerCtx>,
    pub peer: SocketAddr,
    /// The client's address as text (X-Forwarded-For), formatted once.
    pub peer_ip: Box<str>,
    pub listen: SocketAddr,
    /// `Some` on TLS connections (ALPN `h2`): the 421 rule applies.
    pub tls: Option<super::TlsInfo>,
    /// The config the connection serves, refreshed per stream after a
    /// reload, and our listener's index in it once looked up.
    pub live: RefCell<(u64, Arc<Live>, Option<usize>)>,
    /// Counted closed when the connection and its last stream are gone.
    pub guard: RefCell<ConnGuard>,
}

impl ConnShared {
    /// The current config (and our listener's index in it), picking up a reload.
    fn live(&self) -> Option<(Arc<Live>, usize)> {
        let gen = self.ctx.generation();
        let mut cur = self.live.borrow_mut();
        if cur.0 != gen {
            *cur = (gen, self.ctx.live(), None);
        }
        let i = match cur.2 {
            Some(i) => i,
            None => {
                let i = *cur.1.by_listen.get(&self.listen)?;
                cur.2 = Some(i);
                i
            }
        };
        Some((cur.1.clone(), i))
    }

    pub(super) fn counters(&self) -> &H2Counters {
        &self.ctx.shared.h2
    }
}

/// Serves one stream to its end.
pub async fn stream(
    conn: Rc<ConnShared>,
    req: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
    _token: StreamToken,
) {
    H2Counters::add(&conn.counters().streams);
    if let Some(body) = serve(&conn, req, respond).await {
        discard(body).await;
    }
}

/// Routes and proxies one stream; the request body when the proxy answered
/// the stream itself without reading it (the access log line and the
/// logging phase are done by then).
async fn serve(
    conn: &ConnShared,
    req: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> Option<RecvStream> {
    let Some((live, spec_i)) = conn.live() else {
        respond.send_reset(Reason::REFUSED_STREAM);
        return None;
    };
    let Some(spec) = live.snapshot.listeners.get(spec_i) else {
        respond.send_reset(Reason::REFUSED_STREAM);
        return None;
    };
    let (parts, body) = req.into_parts();
    // Dropped last: the logging phase and the access log line.
    let mut rec = Record::new(conn, live.clone(), &parts);
    let authority: &[u8] = match parts.uri.authority() {
        Some(a) => a.as_str().as_bytes(),
        None => parts
            .headers
            .get(http::header::HOST)
            .map_or(&b""[..], |h| h.as_bytes()),
    };
    let host = (!authority.is_empty()).then_some(authority);
    let found = spec.hosts.lookup(host);
    let Some(route) = found.and_then(|i| live.routes.get(i)) else {
        let shown = String::from_utf8_lossy(authority);
        rec.error(&mut respond, 404, &format!("no route for host {shown:?}"));
        return Some(body);
    };
    if let Some(i) = found {
        rec.route(i);
    }
    let Some(slot) = route.slots.get(conn.ctx.id) else {
        respond.send_reset(Reason::REFUSED_STREAM);
        return None;
    };
    if let (Some(t), Some(acc)) = (&conn.tls, &spec.tls) {
        if acc.misdirected(spec.routes.len() >= 2, t.cert, t.sni, authority) {
            rec.error(
                &mut respond,
                421,
                "this host is not served on this TLS connection; connect with its name (SNI)",
            );
            return Some(body);
        }
    }
    if route.cfg.http2.is_none() {
        // RFC 9110 §15.5.20: the client may retry over HTTP/1.1.
        rec.error(&mut respond, 421, "HTTP/2 is off for this route");
        return Some(body);
    }
    if parts.method == http::Method::CONNECT {
        rec.error(&mut respond, 501, "CONNECT is not supported here");
        return Some(body);
    }
    let h2c = route.backends.first().is_some_and(|b| b.cfg.h2c);
    {
        let mut guard = conn.guard.borrow_mut();
        if !guard.attached() {
            if let Some(max) = route.cfg.limits.max_connections {
                if route.totals().active >= u64::from(max) {
                    slot.refused.add(1);
                    conn.ctx
                        .shared
                        .refused_connections
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    drop(guard);
                    rec.status(503);
                    let n = retry_later(&mut respond, &route.cfg.name);
                    rec.bytes_out(n as u64);
                    return Some(body);
                }
            }
        }
        guard.attach(route);
    }
    slot.requests.add(1);
    if let Some(spec) = &route.chain {
        let chain = conn.ctx.filters.get(spec);
        if let Verdict::Respond(status) = rec.request(spec, chain, &parts, authority).await {
            rec.answer(&mut respond, status);
            return Some(body);
        }
    }
    // mTLS listeners: the verified subject (empty: no certificate), and the
    // client's own field of that name dropped.
    let client_cert = match (&conn.tls, &spec.tls) {
        (Some(t), Some(acc)) if acc.mtls => Some(t.client_subject.as_deref().unwrap_or("")),
        _ => None,
    };
    let fwd = h2head::Forwarded {
        client_ip: &conn.peer_ip,
        https: conn.tls.is_some(),
        client_cert,
    };
    if h2c {
        let up = super::upstream::Forward {
            conn,
            route,
            slot,
            authority,
            fwd,
            rec: &rec,
        };
        // Boxed: its future (5 KB) would otherwise be part of every
        // stream's task, copied whole when the task is spawned.
        Box::pin(up.run(&parts, body, respond)).await;
        return None;
    }
    let plan = match parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(n) => ReqBody::Length(n),
        None if body.is_end_stream() => ReqBody::None,
        None => ReqBody::Chunked,
    };
    // The head is written into the stream's pooled buffer (no allocation
    // per stream), which then takes the response; a retry writes it again.
    let build = |head: &mut Vec<u8>| {
        h2head::write_request(head, &parts, authority, fwd, plan);
        rec.edit_head(head);
    };
    let ex = Exchange {
        ctx: &conn.ctx,
        conn,
        route,
        slot,
        stall: route.cfg.timeouts.response,
        head_only: parts.method == http::Method::HEAD,
        rec: &rec,
        // `max_body` for a body without a length, as it streams (one with
        // a `content-length` was checked by the filter already).
        body_max: route.chain.as_ref().and_then(|c| c.max_body()),
    };
    let idempotent = matches!(
        parts.method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    ex.run(&build, body, plan, idempotent, respond).await;
    None
}

pub(super) struct Exchange<'a> {
    pub(super) ctx: &'a WorkerCtx,
    pub(super) conn: &'a ConnShared,
    pub(super) route: &'a LiveRoute,
    pub(super) slot: &'a RouteSlot,
    pub(super) stall: Duration,
    pub(super) head_only: bool,
    pub(super) rec: &'a Record<'a>,
    pub(super) body_max: Option<u64>,
}

/// Why a response download failed.
pub(super) enum Fail {
    /// Before any response byte: safe to retry on a fresh connection.
    Early(io::Error),
    Timeout,
    Bad(String),
    /// After the response head went to the client: only a reset is left.
    Late,
    /// The client reset the stream or went away.
    Client,
    /// The request body outgrew the route's `max_body` as it streamed.
    TooLarge,
}

/// Why an upload ended early.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UpErr {
    Failed,
    TooLarge,
}

/// How the upload side ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Up {
    Running,
    Done,
    Failed,
}

impl Exchange<'_> {
    async fn run(
        &self,
        build: &dyn Fn(&mut Vec<u8>),
        mut body: RecvStream,
        plan: ReqBody,
        idempotent: bool,
        mut respond: SendResponse<Bytes>,
    ) {
        let hash = client_hash(self.conn.peer.ip());
        let retryable = idempotent && plan == ReqBody::None;
        let ctx = self.ctx;
        let route = self.route;
        let pooled = |i: usize| {
            let b = route.backends.get(i)?;
            match &b.cfg.tls {
                None => ctx
                    .upstreams
                    .take(b.cfg.addr, ctx.now_ms(), retryable)
                    .map(|s| (s, None)),
                Some(t) => {
                    ctx.upstreams
                        .take_tls(b.cfg.addr, t.fingerprint, ctx.now_ms(), retryable)
                }
            }
        };
        let now = || ctx.now_ms();
        self.rec.upstream_begins();
        let mut up = match connect::connect(route, self.slot, hash, now, pooled).await {
            Ok(u) => u,
            Err(e) => {
                self.slot.errors.add(1);
                let status = if e.last.is_none() { 503 } else { 502 };
                let detail = format!("route {:?}: {e}", route.cfg.name);
                return self.rec.error(&mut respond, status, &detail);
            }
        };
        let noted = |up: &Upstream<'_>| {
            if let Some(b) = route.backends.get(up.backend) {
                self.rec.upstream(b.cfg.addr);
            }
        };
        noted(&up);
        let mut ubuf = ctx.bufs.take();
        let mut retried = false;
        let result = loop {
            ubuf.clear();
            build(&mut ubuf);
            let r = self
                .exchange(&mut up, &mut body, plan, &mut respond, &mut ubuf)
                .await;
            match r {
                Err(Fail::Early(e)) if up.reused && retryable && !retried => {
                    tracing::debug!(route = %route.cfg.name, "pooled upstream failed ({e}), retrying on a new connection");
                    retried = true;
                    up = match connect::connect(route, self.slot, hash, now, |_| None).await {
                        Ok(u) => u,
                        Err(e) => break Err(Fail::Early(io::Error::other(e.to_string()))),
                    };
                    noted(&up);
                }
                r => break r,
            }
        };
        ctx.bufs.put(ubuf);
        match result {
            Ok(reusable) => {
                if reusable && !ctx.stopping.is_set() {
                    if let Some(b) = route.backends.get(up.backend) {
                        let addr = b.cfg.addr;
                        match &b.cfg.tls {
                            None => ctx.upstreams.put(addr, up.release(), ctx.now_ms()),
                            Some(t) => ctx.upstreams.put_tls(
                                addr,
                                t.fingerprint,
                                up.release_tls(),
                                ctx.now_ms(),
                            ),
                        }
                    }
                }
            }
            Err(Fail::TooLarge) => {
                self.failed(Fail::TooLarge, &mut respond);
                // The client may still be sending: its stream then ends
                // normally.
                drop(respond);
                discard(body).await;
            }
            Err(f) => self.failed(f, &mut respond),
        }
    }

    fn failed(&self, f: Fail, respond: &mut SendResponse<Bytes>) {
        let name = &self.route.cfg.name;
        match f {
            Fail::Client => {
                H2Counters::add(&self.conn.counters().client_resets);
                respond.send_reset(Reason::CANCEL);
            }
            Fail::Late => {
                self.slot.errors.add(1);
                respond.send_reset(Reason::INTERNAL_ERROR);
            }
            Fail::Timeout => {
                self.slot.errors.add(1);
                let d = format!("route {name:?}: backend sent no response in time");
                self.rec.error(respond, 504, &d);
            }
            Fail::Early(e) => {
                self.slot.errors.add(1);
                let d = format!("route {name:?}: backend closed the connection ({e})");
                self.rec.error(respond, 502, &d);
            }
            Fail::Bad(e) => {
                self.slot.errors.add(1);
                let d = format!("route {name:?}: invalid response from backend ({e})");
                self.rec.error(respond, 502, &d);
            }
            Fail::TooLarge if self.rec.answered() => respond.send_reset(Reason::CANCEL),
            Fail::TooLarge => {
                self.rec
                    .error(respond, 413, "request body larger than max_body");
            }
        }
    }

    /// Sends the request head (in `buf`) and forwards the response (read
    /// into `buf`). `Ok(true)`: the upstream connection may be reused.
    async fn exchange(
        &self,
        up: &mut Upstream<'_>,
        body: &mut RecvStream,
        plan: ReqBody,
        respond: &mut SendResponse<Bytes>,
        buf: &mut Vec<u8>,
    ) -> Result<bool, Fail> {
        if plan != ReqBody::None {
            // Boxed: uploads are the rarer case, and their future would
            // otherwise be part of every stream's task.
            return Box::pin(self.exchange_body(up, body, plan, respond, buf)).await;
        }
        let len = buf.len();
        // Nothing to upload: the stream has the socket to itself, so its
        // reads are io_uring ops (no readiness wait, no EAGAIN first).
        let cancel = Cancel::default();
        let r = async {
            let mut io = up.io(&cancel);
            io.write_all(buf, 0..len, self.stall)
                .await
                .map_err(Fail::Early)?;
            self.slot.bytes_in.add(len as u64);
            buf.clear();
            let done = std::cell::Cell::new(Up::Done);
            self.download(&mut io, respond, buf, &done).await
        }
        .await;
        // No op is in flight now (each was awaited, or dropped and so
        // dissociated): the canceller goes back to the worker's free list
        // for the next stream, instead of two allocations per stream.
        cancel.release();
        r
    }

    /// [`Self::exchange`] for a request with a body: upload and download
    /// run side by side on the socket's readiness.
    async fn exchange_body(
        &self,
        up: &mut Upstream<'_>,
        body: &mut RecvStream,
        plan: ReqBody,
        respond: &mut SendResponse<Bytes>,
        buf: &mut Vec<u8>,
    ) -> Result<bool, Fail> {
        let len = buf.len();
        up.ready()
            .write_all(buf, 0..len, self.stall)
            .await
            .map_err(Fail::Early)?;
        self.slot.bytes_in.add(len as u64);
        buf.clear();
        let state = std::cell::Cell::new(Up::Running);
        let upload = async {
            let r = self.upload(up.ready(), body, plan).await;
            state.set(if r.is_ok() { Up::Done } else { Up::Failed });
            if r == Err(UpErr::TooLarge) {
                // Ends the exchange: the backend got a cut body.
                return;
            }
            std::future::pending::<()>().await
        };
        let mut io = up.ready();
        let download = self.download(&mut io, respond, buf, &state);
        monoio::select! {
            _ = upload => Err(Fail::TooLarge),
            r = download => r.map(|reuse| reuse && state.get() == Up::Done),
        }
    }

    /// Forwards the request body; `Err` when the client or backend failed.
    async fn upload(
        &self,
        mut us: Io<'_>,
        body: &mut RecvStream,
        plan: ReqBody,
    ) -> Result<(), UpErr> {
        let chunked = plan == ReqBody::Chunked;
        let mut out = Vec::new();
        let mut total = 0u64;
        loop {
            let next = monoio::select! {
                d = body.data() => d,
                _ = monoio::time::sleep(self.stall) => return Err(UpErr::Failed),
            };
            let Some(data) = next else { break };
            let data = data.map_err(|_| UpErr::Failed)?;
            let n = data.len();
            if n == 0 {
                continue;
            }
            total += n as u64;
            if chunked && self.body_max.is_some_and(|max| total > max) {
                return Err(UpErr::TooLarge);
            }
            out.clear();
            if chunked {
                out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            }
            out.extend_from_slice(&data);
            if chunked {
                out.extend_from_slice(b"\r\n");
            }
            let len = out.len();
            us.write_all(&mut out, 0..len, self.stall)
                .await
                .map_err(|_| UpErr::Failed)?;
            self.slot.bytes_in.add(n as u64);
            self.rec.bytes_in(n as u64);
            // The window reopens only once the backend took the bytes.
            let _ = body.flow_control().release_capacity(n);
        }
        if chunked {
            out.clear();
            out.extend_from_slice(b"0\r\n");
            if let Ok(Some(t)) = body.trailers().await {
                for (k, v) in &t {
                    out.extend_from_slice(k.as_str().as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(v.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
            }
            out.extend_from_slice(b"\r\n");
            let len = out.len();
            us.write_all(&mut out, 0..len, self.stall)
                .await
                .map_err(|_| UpErr::Failed)?;
        }
        Ok(())
    }

    /// Reads the response head (passing interim 1xx on) and forwards the response.
    async fn download(
        &self,
        us: &mut Io<'_>,
        respond: &mut SendResponse<Bytes>,
        ubuf: &mut Vec<u8>,
        upload: &std::cell::Cell<Up>,
    ) -> Result<bool, Fail> {
        let limits = Limits::default();
        let method: &[u8] = if self.head_only { b"HEAD" } else { b"GET" };
        let mut seen = false;
        let mut interim = 0;
        let (head, mut resp, raw) = loop {
            if !ubuf.is_empty() {
                seen = true;
                // The spans are the worker's scratch (parsed and converted
                // with no await between): a stream's task does not carry
                // 1.6 KB of them, copied whole when it is spawned.
                let parsed = with_spans(|spans| {
                    match parse_response(ubuf, spans, &limits, method) {
                        Ok(Status::Complete(h)) => {
                            // One copy of the head and the body bytes read
                            // with it: field values and the first DATA
                            // frame are slices of it.
                            let raw = Bytes::copy_from_slice(ubuf);
                            let r = h2head::response_from(&raw, &h, spans);
                            Ok(Some((h, r, raw)))
                        }
                        Ok(Status::Partial) => Ok(None),
                        Err(e) => Err(Fail::Bad(e.to_string())),
                    }
                })?;
                match parsed {
                    Some((h, info, _)) if h.is_interim() => {
                        // 100 Continue and 103 Early Hints go on to the
                        // client as informational HEADERS (a backend that
                        // sends more than a few gets the rest dropped).
                        if interim < MAX_INTERIM {
                            interim += 1;
                            let _ = respond.send_informational(info);
                        }
                        ubuf.drain(..h.head_len.min(ubuf.len()));
                        continue;
                    }
                    Some(done) => break done,
                    None => {}
                }
            }
            let room = limits.max_head.saturating_sub(ubuf.len());
            if room == 0 {
                return Err(Fail::Bad("response head too large".into()));
            }
            let deadline = Instant::now() + self.stall;
            let read = us.read(ubuf, room, deadline);
            let reset = std::future::poll_fn(|cx| respond.poll_reset(cx));
            let got = monoio::select! {
                r = read => r,
                _ = reset => return Err(Fail::Client),
            };
            match got {
                Ok(0) if !seen => return Err(Fail::Early(io::ErrorKind::UnexpectedEof.into())),
                Ok(0) => return Err(Fail::Bad("closed inside the response head".into())),
                Ok(_) => self.rec.first_byte(),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    if upload.get() == Up::Running {
                        continue;
                    }
                    return Err(Fail::Timeout);
                }
                Err(e) if !seen => return Err(Fail::Early(e)),
                Err(e) => return Err(Fail::Bad(e.to_string())),
            }
        };
        if head.is_switching_protocols() || head.framing == ResponseFraming::Tunnel {
            return Err(Fail::Bad("protocol switch over HTTP/2".into()));
        }
        let hsts = self.route.cfg.hsts.as_deref();
        self.rec
            .response(&mut resp, hsts.filter(|_| self.conn.tls.is_some()));
        let no_body =
            head.framing == ResponseFraming::None || head.framing == ResponseFraming::Length(0);
        let mut tx = respond
            .send_response(resp, no_body)
            .map_err(|_| Fail::Client)?;
        let rest = raw.slice(head.head_len.min(raw.len())..);
        drop(raw);
        ubuf.clear();
        if no_body {
            return Ok(head.keep_alive && rest.is_empty());
        }
        let mut body = BodyOut {
            ex: self,
            us,
            tx: &mut tx,
        };
        // Chunked and read-until-close bodies are boxed: their futures
        // would otherwise be part of every stream's task.
        let reusable = match head.framing {
            ResponseFraming::Length(n) => body.length(rest, ubuf, n).await?,
            ResponseFraming::Chunked => {
                ubuf.extend_from_slice(&rest);
                Box::pin(body.chunked(ubuf)).await?
            }
            _ => {
                ubuf.extend_from_slice(&rest);
                Box::pin(body.until_close(ubuf)).await?;
                false
            }
        };
        Ok(reusable && head.keep_alive)
    }
}

thread_local! {
    /// Response header spans, the worker's scratch for [`with_spans`].
    static SPANS: std::cell::RefCell<[HeaderSpan; 100]> =
        std::cell::RefCell::new([HeaderSpan::default(); 100]);
}

/// Runs `f` with the worker's response header span scratch (no await in `f`).
fn with_spans<R>(f: impl FnOnce(&mut [HeaderSpan]) -> R) -> R {
    SPANS.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s[..]),
        // Not reachable (nothing re-enters), but never a panic.
        Err(_) => f(&mut [HeaderSpan::default(); 100]),
    })
}

/// Sizes of the stream task's parts (tests: `h2::cost::stream_task_size`).
#[cfg(test)]
pub(super) fn debug_sizes() -> Vec<(&'static str, usize)> {
    fn f1<A, F: std::future::Future>(_: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn f2<A, B, F: std::future::Future>(_: impl FnOnce(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn f3<A, B, C, F: std::future::Future>(_: impl FnOnce(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn f4<A, B, C, D, F: std::future::Future>(_: impl FnOnce(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn f5<A, B, C, D, E, F: std::future::Future>(_: impl FnOnce(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn f6<A, B, C, D, E, G, F: std::future::Future>(
        _: impl FnOnce(A, B, C, D, E, G) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }
    vec![
        ("serve", f3(serve)),
        ("Exchange::run", f6(Exchange::run)),
        ("Exchange::exchange", f6(Exchange::exchange)),
        ("Exchange::upload", f4(Exchange::upload)),
        ("Exchange::download", f5(Exchange::download)),
        ("BodyOut::chunked", f2(BodyOut::chunked)),
        ("Forward::run", f4(super::upstream::Forward::run)),
        ("Record::request", f5(Record::request)),
        ("discard", f1(discard)),
        ("Io::read", f4(crate::http::io::Io::read)),
        ("Io::write_all", f4(crate::http::io::Io::write_all)),
        ("send_flow", f5(super::body::send_flow)),
        ("Sleep", std::mem::size_of::<monoio::time::Sleep>()),
        ("BodyOut::length", f4(BodyOut::length)),
        ("BodyOut::send", f3(BodyOut::send)),
    ]
}
