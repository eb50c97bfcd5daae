//! HTTP/2 to backends (`"protocol": "h2c"`): a per-worker pool of
//! multiplexed upstream connections, and each client stream forwarded as a
//! stream on one of them (gRPC end to end: trailers, streaming both ways,
//! client cancellation passed on at once).
//!
//! The pool is a thread-local map (a worker is a thread; nothing is shared)
//! from backend address to its open connections. A stream goes on the first
//! live connection with fewer streams in flight than the backend's
//! SETTINGS_MAX_CONCURRENT_STREAMS; when all are full, another connection
//! is opened (at most [`MAX_CONNS_PER_BACKEND`] per worker, then streams
//! queue in `h2` on the least loaded one).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use monoio::time::Instant;

use crate::balance::client_hash;
use crate::proxy::connect;
use crate::shared::{H2Counters, LiveRoute, RouteSlot};

use super::body::send_flow;
use super::proxy::{ConnShared, MAX_INTERIM};
use super::record::Record;

/// Most multiplexed connections to one backend per worker.
pub const MAX_CONNS_PER_BACKEND: usize = 8;

struct UpConn {
    send: SendRequest<Bytes>,
    inflight: Rc<Cell<usize>>,
    dead: Rc<Cell<bool>>,
}

thread_local! {
    /// By backend address and TLS setup (0: h2c), so an h2c and an h2
    /// backend at one address never share connections.
    static POOL: RefCell<HashMap<(SocketAddr, u64), Vec<UpConn>>> = RefCell::new(HashMap::new());
}

/// One stream in flight on an upstream connection (counted while alive).
struct InFlight(Rc<Cell<usize>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// A live pooled connection to `addr` with room for a stream.
fn pooled(key: (SocketAddr, u64)) -> Option<(SendRequest<Bytes>, InFlight)> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.get_mut(&key)?;
        list.retain(|c| !c.dead.get());
        let full = list.len() >= MAX_CONNS_PER_BACKEND;
        let pick = list
            .iter()
            .filter(|c| full || c.inflight.get() < c.send.current_max_send_streams())
            .min_by_key(|c| c.inflight.get())?;
        pick.inflight.set(pick.inflight.get() + 1);
        Some((pick.send.clone(), InFlight(pick.inflight.clone())))
    })
}

/// Opens a connection to one of the route's backends and pools it.
async fn open(
    route: &LiveRoute,
    slot: &RouteSlot,
    hash: u64,
    now: impl Fn() -> u64,
) -> Result<(SendRequest<Bytes>, InFlight, SocketAddr), String> {
    let up = connect::connect(route, slot, hash, now, |_| None)
        .await
        .map_err(|e| e.to_string())?;
    let (addr, key) = route
        .backends
        .get(up.backend)
        .map(|b| (b.cfg.addr, pool_key(&b.cfg)))
        .ok_or("backend gone")?;
    let (stream, tls) = up.release_tls();
    let io = stream
        .try_into_poll_io()
        .map_err(|(e, _)| format!("poll io: {e}"))?;
    let dead = Rc::new(Cell::new(false));
    // `"protocol": "h2"`: HTTP/2 inside the TLS session ALPN agreed on.
    let send = match tls {
        None => start(io, addr, dead.clone()).await?,
        Some(t) => {
            let t = t.into_inner();
            if !t.h2 {
                return Err(format!("{addr} did not choose h2 by ALPN"));
            }
            start(
                crate::tls::stream::TlsStream::new(io, t),
                addr,
                dead.clone(),
            )
            .await?
        }
    };
    let inflight = Rc::new(Cell::new(1));
    POOL.with(|p| {
        p.borrow_mut().entry(key).or_default().push(UpConn {
            send: send.clone(),
            inflight: inflight.clone(),
            dead,
        })
    });
    Ok((send, InFlight(inflight), addr))
}

fn pool_key(b: &crate::config::Backend) -> (SocketAddr, u64) {
    (b.addr, b.tls.as_ref().map_or(0, |t| t.fingerprint))
}

/// The HTTP/2 handshake on `io`; the connection runs in its own task,
/// which sets `dead` when it ends.
async fn start<T>(
    io: T,
    addr: SocketAddr,
    dead: Rc<Cell<bool>>,
) -> Result<SendRequest<Bytes>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| format!("h2 handshake with {addr}: {e}"))?;
    monoio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%addr, "upstream h2 connection ended: {e}");
        }
        dead.set(true);
    });
    Ok(send)
}

/// `grpc-timeout` (RFC-less gRPC wire spec: digits and a unit letter).
fn grpc_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// One client stream to an h2c backend.
pub struct Forward<'a> {
    pub conn: &'a ConnShared,
    pub route: &'a LiveRoute,
    pub slot: &'a RouteSlot,
    pub authority: &'a [u8],
    pub fwd: super::head::Forwarded<'a>,
    pub rec: &'a Record<'a>,
}

impl Forward<'_> {
    pub async fn run(
        &self,
        parts: &http::request::Parts,
        mut body: RecvStream,
        mut respond: SendResponse<Bytes>,
    ) {
        let route = self.route;
        let t = route.cfg.timeouts;
        let ctx = &self.conn.ctx;
        let hash = client_hash(self.conn.peer.ip());
        let deadline = parts
            .headers
            .get("grpc-timeout")
            .and_then(|v| grpc_timeout(v.as_bytes()));
        // Round robin over the route's backends that have a pooled connection.
        let n = route.backends.len().max(1);
        let start = self.slot.cursor.get() as usize;
        self.slot.cursor.add(1);
        let now_ms = ctx.now_ms();
        let got = (0..n).find_map(|k| {
            let b = route.backends.get((start + k) % n)?;
            if !(b.state.available(now_ms) && b.state.health_ok()) {
                return None;
            }
            pooled(pool_key(&b.cfg)).map(|(s, f)| (s, f, b.cfg.addr))
        });
        self.rec.upstream_begins();
        let (send, _inflight, addr) = match got {
            Some(c) => c,
            None => match open(route, self.slot, hash, || ctx.now_ms()).await {
                Ok(c) => c,
                Err(e) => {
                    self.slot.errors.add(1);
                    let d = format!("route {:?}: {e}", route.cfg.name);
                    return self.rec.error(&mut respond, 502, &d);
                }
            },
        };
        self.rec.upstream(addr);
        let mut req = match self.request(parts) {
            Some(r) => r,
            None => return self.rec.error(&mut respond, 400, "bad request target"),
        };
        self.rec.edit_request(&mut req);
        let mut send = match send.ready().await {
            Ok(s) => s,
            Err(e) => {
                self.slot.errors.add(1);
                let d = format!(
                    "route {:?}: backend connection failed ({e})",
                    route.cfg.name
                );
                return self.rec.error(&mut respond, 502, &d);
            }
        };
        let end = body.is_end_stream();
        let (resp, up_tx) = match send.send_request(req, end) {
            Ok(r) => r,
            Err(e) => {
                self.slot.errors.add(1);
                let d = format!(
                    "route {:?}: backend refused the stream ({e})",
                    route.cfg.name
                );
                return self.rec.error(&mut respond, 502, &d);
            }
        };
        // `max_body` for a body without a length, as it streams.
        let max = match parts.headers.contains_key(http::header::CONTENT_LENGTH) {
            true => None,
            false => route.chain.as_ref().and_then(|c| c.max_body()),
        };
        let upload = async {
            if end {
                return std::future::pending::<()>().await;
            }
            let mut up_tx: SendStream<Bytes> = up_tx;
            let r = upload(&mut body, &mut up_tx, t.response, ctx, self.rec, max).await;
            if r.is_err() {
                up_tx.send_reset(Reason::CANCEL);
            }
            if r == Err(UpErr::TooLarge) {
                return;
            }
            std::future::pending::<()>().await
        };
        let head_wait = deadline.map_or(t.response, |d| d.min(t.response));
        let download = self.download(resp, &mut respond, head_wait, t.response);
        let too_large = monoio::select! {
            _ = upload => true,
            r = download => { if let Err(f) = r {
                match f {
                    DownFail::Client => {
                        H2Counters::add(&self.conn.counters().client_resets);
                    }
                    DownFail::Deadline => {
                        // Trailers-only DEADLINE_EXCEEDED, as a gRPC server would.
                        let resp = http::Response::builder()
                            .status(200)
                            .header("content-type", "application/grpc")
                            .header("grpc-status", "4")
                            .header("grpc-message", "deadline exceeded at the proxy")
                            .body(())
                            .unwrap_or_default();
                        self.rec.status(200);
                        let _ = respond.send_response(resp, true);
                    }
                    DownFail::Timeout => {
                        self.slot.errors.add(1);
                        let d = format!("route {:?}: backend sent no response in time", route.cfg.name);
                        self.rec.error(&mut respond, 504, &d);
                    }
                    DownFail::Backend(e) => {
                        self.slot.errors.add(1);
                        let d = format!("route {:?}: backend failed ({e})", route.cfg.name);
                        self.rec.error(&mut respond, 502, &d);
                    }
                    DownFail::Late => {
                        self.slot.errors.add(1);
                        respond.send_reset(Reason::INTERNAL_ERROR);
                    }
                }
            } false },
        };
        if too_large {
            if self.rec.answered() {
                respond.send_reset(Reason::CANCEL);
            } else {
                self.rec
                    .error(&mut respond, 413, "request body larger than max_body");
            }
            drop(respond);
            super::answer::discard(body).await;
        }
        // Dropping the upstream handles here resets an unfinished upstream
        // stream (RST_STREAM CANCEL): a client that went away cancels at once.
    }

    /// The upstream request: the client's fields (h2 already refused the
    /// connection-specific ones) plus the X-Forwarded-* fields.
    fn request(&self, parts: &http::request::Parts) -> Option<http::Request<()>> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = std::str::from_utf8(self.authority).ok()?;
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(if authority.is_empty() {
                "localhost"
            } else {
                authority
            })
            .path_and_query(path)
            .build()
            .ok()?;
        let mut req = http::Request::new(());
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        for (k, v) in &parts.headers {
            match k.as_str() {
                "host" | "x-forwarded-proto" | "x-forwarded-host" | "x-forwarded-for" => {}
                "x-client-cert-subject" if self.fwd.client_cert.is_some() => {}
                _ => {
                    h.append(k.clone(), v.clone());
                }
            }
        }
        let mut xff = String::new();
        for v in parts.headers.get_all("x-forwarded-for") {
            if let Ok(s) = v.to_str() {
                xff.push_str(s);
                xff.push_str(", ");
            }
        }
        xff.push_str(&self.conn.peer_ip);
        if let Ok(v) = http::HeaderValue::from_str(&xff) {
            h.insert("x-forwarded-for", v);
        }
        let proto = if self.fwd.https { "https" } else { "http" };
        if let Some(subject) = self.fwd.client_cert.filter(|s| !s.is_empty()) {
            if let Ok(v) = http::HeaderValue::from_str(subject) {
                h.insert("x-client-cert-subject", v);
            }
        }
        h.insert("x-forwarded-proto", http::HeaderValue::from_static(proto));
        if let Ok(v) = http::HeaderValue::from_bytes(self.authority) {
            if !self.authority.is_empty() {
                h.insert("x-forwarded-host", v);
            }
        }
        Some(req)
    }

    async fn download(
        &self,
        resp: h2::client::ResponseFuture,
        respond: &mut SendResponse<Bytes>,
        head_wait: Duration,
        stall: Duration,
    ) -> Result<(), DownFail> {
        let deadline = Instant::now() + head_wait;
        let mut resp = resp;
        let (mut interim, mut interim_done) = (0usize, false);
        // Interim (1xx) responses go on to the client as they come, then
        // the final one.
        enum Head {
            Interim(Result<http::Response<()>, h2::Error>),
            Final(Result<http::Response<RecvStream>, h2::Error>),
        }
        let resp = loop {
            let next = std::future::poll_fn(|cx| {
                if !interim_done {
                    match resp.poll_informational(cx) {
                        Poll::Ready(Some(i)) => return Poll::Ready(Head::Interim(i)),
                        Poll::Ready(None) => interim_done = true,
                        Poll::Pending => {}
                    }
                }
                Pin::new(&mut resp).poll(cx).map(Head::Final)
            });
            let reset = std::future::poll_fn(|cx| respond.poll_reset(cx));
            let head = monoio::select! {
                h = next => h,
                _ = reset => return Err(DownFail::Client),
                _ = monoio::time::sleep_until(deadline) => {
                    return Err(if head_wait < stall { DownFail::Deadline } else { DownFail::Timeout })
                }
            };
            match head {
                Head::Interim(Ok(info)) => {
                    if interim < MAX_INTERIM {
                        interim += 1;
                        let _ = respond.send_informational(info);
                    }
                }
                Head::Interim(Err(e)) | Head::Final(Err(e)) => {
                    return Err(DownFail::Backend(e.to_string()))
                }
                Head::Final(Ok(r)) => break r,
            }
        };
        self.rec.first_byte();
        let (parts, mut rbody) = resp.into_parts();
        let end = rbody.is_end_stream();
        let mut head = http::Response::from_parts(parts, ());
        let hsts = self.route.cfg.hsts.as_deref();
        self.rec
            .response(&mut head, hsts.filter(|_| self.conn.tls.is_some()));
        let mut tx = respond
            .send_response(head, end)
            .map_err(|_| DownFail::Client)?;
        if end {
            return Ok(());
        }
        let ctx = &self.conn.ctx;
        loop {
            let next = {
                let reset = std::future::poll_fn(|cx| tx.poll_reset(cx));
                let deadline = Instant::now() + stall;
                monoio::select! {
                    d = rbody.data() => d,
                    _ = reset => return Err(DownFail::Client),
                    _ = monoio::time::sleep_until(deadline) => return Err(DownFail::Late),
                }
            };
            let Some(data) = next else { break };
            let data = data.map_err(|_| DownFail::Late)?;
            let n = data.len();
            self.slot.bytes_out.add(n as u64);
            self.rec.bytes_out(n as u64);
            send_flow(&mut tx, data, false, stall, ctx)
                .await
                .map_err(|()| DownFail::Client)?;
            // The backend may send more only once the client took these.
            let _ = rbody.flow_control().release_capacity(n);
        }
        match rbody.trailers().await {
            Ok(Some(t)) => tx.send_trailers(t).map_err(|_| DownFail::Client),
            Ok(None) => tx
                .send_data(Bytes::new(), true)
                .map_err(|_| DownFail::Client),
            Err(_) => Err(DownFail::Late),
        }
    }
}

enum DownFail {
    Client,
    Deadline,
    Timeout,
    Backend(String),
    Late,
}

/// Forwards the client's request body (and trailers) to the upstream stream.
async fn upload(
    body: &mut RecvStream,
    up: &mut SendStream<Bytes>,
    stall: Duration,
    ctx: &crate::worker::WorkerCtx,
    rec: &Record<'_>,
    max: Option<u64>,
) -> Result<(), UpErr> {
    let failed = |_| UpErr::Failed;
    let mut total = 0u64;
    let mut first = true;
    loop {
        let next = monoio::select! {
            d = body.data() => d,
            _ = monoio::time::sleep(stall) => return Err(UpErr::Failed),
        };
        let Some(data) = next else { break };
        let data = data.map_err(|_| UpErr::Failed)?;
        let n = data.len();
        total += n as u64;
        if max.is_some_and(|m| total > m) {
            return Err(UpErr::TooLarge);
        }
        rec.bytes_in(n as u64);
        if std::mem::take(&mut first) && n <= FIRST_DIRECT {
            // The stream is still waiting to open, so `h2` gives it no
            // capacity and `send_flow` would wait for the connection task
            // to send HEADERS alone and wake us: two writes and two wake-ups
            // of the backend. Queued now, the first DATA leaves in the same
            // write as HEADERS (a gRPC unary request is one DATA frame).
            let last = body.is_end_stream();
            up.send_data(data, last).map_err(|_| UpErr::Failed)?;
            let _ = body.flow_control().release_capacity(n);
            if last {
                return Ok(());
            }
            continue;
        }
        send_flow(up, data, false, stall, ctx)
            .await
            .map_err(failed)?;
        let _ = body.flow_control().release_capacity(n);
    }
    match body.trailers().await {
        Ok(Some(t)) => up.send_trailers(t).map_err(|_| UpErr::Failed),
        Ok(None) => up.send_data(Bytes::new(), true).map_err(|_| UpErr::Failed),
        Err(_) => Err(UpErr::Failed),
    }
}

/// The largest first chunk of a request body queued behind its HEADERS
/// without waiting for capacity: one frame at the default SETTINGS. Larger
/// bodies wait for the window as before, so a stalled backend is detected.
const FIRST_DIRECT: usize = 16 * 1024;

/// Why an upload ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpErr {
    Failed,
    /// The body outgrew the route's `max_body` as it streamed.
    TooLarge,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(grpc_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout(b"m"), None);
        assert_eq!(grpc_timeout(b"123456789S"), None);
        assert_eq!(grpc_timeout(b"10x"), None);
    }
}
