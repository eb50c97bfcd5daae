//! `forward_auth`: asks an auth service about each request, as Traefik's
//! ForwardAuth and nginx's `auth_request` do.
//!
//! The subrequest carries the original method and target (through the
//! `path` template), the configured request headers and
//! `X-Forwarded-{Method,Proto,Host,Uri,For}`, never the body. A 2xx answer
//! lets the request go on, with the answer's `response_headers` copied to
//! the upstream request (replacing any the client sent); any other answer
//! (status, headers, a body of at most `max_response_body` bytes, a chunked
//! one decoded and sent with a Content-Length) goes to the client instead. An auth service that cannot be reached, or that
//! sends an invalid or oversized answer, gives `502`; one that does not
//! answer within `timeout` gives `504`. Each outcome is counted
//! ([`Counters`], in `/api/status` under the route's `forward_auth`).
//!
//! The subrequest runs on the worker, in the request's task, with
//! readiness I/O (dropping it loses nothing on either driver) over the
//! worker's upstream keep-alive pool: a connection whose answer was read
//! to its end goes back to the pool, keyed by the auth service's address.
//! A pooled connection found dead before answering is replaced once.
//!
//! The filter itself only says [`Verdict::Auth`]: the exchange runs
//! [`check`] (it is async) and resumes the chain after it.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use monoio::net::TcpStream;
use monoio::time::Instant;

use super::{Edits, Filter, Request, Verdict};
use crate::config::middleware::ForwardAuth;
use crate::http::chunked::ChunkedScanner;
use crate::http::head::{
    parse_response, HeaderSpan, Limits, ResponseFraming, ResponseHead, Status,
};
use crate::http::io::Io;
use crate::http::upstream::UpstreamPool;

/// Header fields read from an auth service's answer.
const MAX_AUTH_HEADERS: usize = 64;
/// Longest answer head from an auth service.
const MAX_AUTH_HEAD: usize = 16 * 1024;

/// Outcomes of one route's `forward_auth`, over all workers.
#[derive(Debug, Default)]
pub struct Counters {
    /// 2xx: the request went on.
    pub allowed: AtomicU64,
    /// Another status: its answer went to the client.
    pub denied: AtomicU64,
    /// Connect or send failed, or the service closed without answering (502).
    pub unreachable: AtomicU64,
    /// No complete answer within `timeout` (504).
    pub timeout: AtomicU64,
    /// An invalid answer, or a denial body over `max_response_body` (502).
    pub bad_response: AtomicU64,
}

impl Counters {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "allowed": self.allowed.load(Relaxed),
            "denied": self.denied.load(Relaxed),
            "unreachable": self.unreachable.load(Relaxed),
            "timeout": self.timeout.load(Relaxed),
            "bad_response": self.bad_response.load(Relaxed),
        })
    }
}

/// The chain's view of `forward_auth`: stop and let the exchange ask.
pub struct ForwardAuthFilter;

impl Filter for ForwardAuthFilter {
    fn request_filter(&self, _req: &Request<'_>, _e: &mut Edits) -> Verdict {
        Verdict::Auth(0)
    }
}

/// Why no usable answer came.
#[derive(Debug)]
enum Failure {
    Unreachable(io::Error),
    Timeout,
    Bad(&'static str),
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Unreachable(e) => format!("unreachable: {e}"),
            Failure::Timeout => "timed out".into(),
            Failure::Bad(why) => format!("bad answer: {why}"),
        }
    }
}

/// A parsed answer: the head (parsed from the start of the response
/// buffer), where its body lies in that buffer, and whether it is chunked.
struct Answer {
    head: ResponseHead,
    body: std::ops::Range<usize>,
    chunked: bool,
}

/// Hop-by-hop and framing fields never copied from a denial to the client.
const DROPPED: &[&[u8]] = &[
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"content-length",
    b"te",
    b"trailer",
    b"upgrade",
];

/// Asks the auth service about `req`. `Continue`: allowed (the configured
/// response headers are in `e`'s request edits). `Respond(status)`: the
/// answer for the client is in `e` (`answer_headers`, the answer body).
pub async fn check(
    cfg: &ForwardAuth,
    counters: &Counters,
    pool: &UpstreamPool,
    now_ms: impl Fn() -> u64,
    req: &Request<'_>,
    tls: bool,
    e: &mut Edits,
) -> Verdict {
    let mut out = std::mem::take(&mut e.auth_out);
    let mut rbuf = std::mem::take(&mut e.auth_in);
    write_subrequest(cfg, req, tls, &mut out);
    let mut spans = [HeaderSpan::default(); MAX_AUTH_HEADERS];
    let deadline = Instant::now() + cfg.timeout;
    let r = ask(
        cfg, pool, &now_ms, req.method, &mut out, &mut rbuf, &mut spans, deadline,
    )
    .await;
    let verdict = match r {
        Ok(a) if (200..300).contains(&a.head.status) => {
            counters.allowed.fetch_add(1, Relaxed);
            for name in &cfg.response_headers {
                let name = name.as_bytes();
                e.remove_request(name);
                for h in a.head.headers(&spans) {
                    if h.name(&rbuf).eq_ignore_ascii_case(name) {
                        e.add_request(name, h.value(&rbuf));
                    }
                }
            }
            Verdict::Continue
        }
        Ok(a) => {
            counters.denied.fetch_add(1, Relaxed);
            for h in a.head.headers(&spans) {
                let n = h.name(&rbuf);
                if !DROPPED.iter().any(|d| n.eq_ignore_ascii_case(d)) {
                    super::line(&mut e.answer_headers, n, h.value(&rbuf));
                }
            }
            let raw = rbuf.get(a.body).unwrap_or(&[]);
            if a.chunked {
                // Framing checked while reading; the client gets a Content-Length.
                // (`out`, the subrequest's buffer, is free again.)
                dechunk(raw, &mut out);
                e.set_answer_body(&out);
            } else {
                e.set_answer_body(raw);
            }
            Verdict::Respond(a.head.status)
        }
        Err(f) => {
            let (counter, status, text): (&AtomicU64, u16, &str) = match &f {
                Failure::Unreachable(_) => (
                    &counters.unreachable,
                    502,
                    "forward_auth: the auth service cannot be reached\n",
                ),
                Failure::Timeout => (
                    &counters.timeout,
                    504,
                    "forward_auth: the auth service did not answer in time\n",
                ),
                Failure::Bad(_) => (
                    &counters.bad_response,
                    502,
                    "forward_auth: invalid answer from the auth service\n",
                ),
            };
            counter.fetch_add(1, Relaxed);
            tracing::debug!(auth = %cfg.addr, "forward_auth failed: {}", f.describe());
            e.answer_headers
                .extend_from_slice(b"Content-Type: text/plain\r\n");
            e.set_answer_body(text.as_bytes());
            Verdict::Respond(status)
        }
    };
    e.auth_out = out;
    e.auth_in = rbuf;
    verdict
}

/// The chunk data of `raw`, a complete chunked body already checked by a
/// scanner, into `out` (trailers dropped).
fn dechunk(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut scanner = ChunkedScanner::new();
    let mut i = 0;
    while i < raw.len() && !scanner.is_done() {
        let r = scanner.data_remaining();
        if r > 0 {
            let n = r.min((raw.len() - i) as u64) as usize;
            out.extend_from_slice(&raw[i..i + n]);
            scanner.consume_data(n as u64);
            i += n;
        } else if scanner.advance(&raw[i..i + 1]).is_err() {
            return;
        } else {
            i += 1;
        }
    }
}

/// The subrequest's head: original method, the templated target, Host of
/// the auth service, the chosen request headers, `X-Forwarded-*`.
fn write_subrequest(cfg: &ForwardAuth, req: &Request<'_>, tls: bool, out: &mut Vec<u8>) {
    use std::io::Write as _;
    out.clear();
    out.extend_from_slice(req.method);
    out.push(b' ');
    let mut rest = cfg.path.as_bytes();
    while let Some(at) = memchr::memmem::find(rest, b"{uri}") {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(req.target);
        rest = &rest[at + 5..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(cfg.host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for name in &cfg.request_headers {
        for v in req.headers(name.as_bytes()) {
            super::line(out, name.as_bytes(), v);
        }
    }
    super::line(out, b"X-Forwarded-Method", req.method);
    super::line(
        out,
        b"X-Forwarded-Proto",
        if tls { b"https" } else { b"http" },
    );
    if let Some(h) = req.header(b"host") {
        super::line(out, b"X-Forwarded-Host", h);
    }
    super::line(out, b"X-Forwarded-Uri", req.target);
    let _ = write!(out, "X-Forwarded-For: {}\r\n\r\n", req.client.ip());
}

/// Sends the subrequest (on a pooled connection if one is idle, retried
/// once on a new one if that was dead) and reads the whole answer.
#[allow(clippy::too_many_arguments)]
async fn ask(
    cfg: &ForwardAuth,
    pool: &UpstreamPool,
    now_ms: &impl Fn() -> u64,
    method: &[u8],
    out: &mut Vec<u8>,
    rbuf: &mut Vec<u8>,
    spans: &mut [HeaderSpan],
    deadline: Instant,
) -> Result<Answer, Failure> {
    let method: &[u8] = if method == b"HEAD" { b"HEAD" } else { b"GET" };
    for attempt in 0..2 {
        let pooled = if attempt == 0 {
            pool.take(cfg.addr, now_ms(), true)
        } else {
            None
        };
        let reused = pooled.is_some();
        let stream = match pooled {
            Some(s) => s,
            None => connect(cfg.addr, deadline).await?,
        };
        rbuf.clear();
        match exchange(
            &stream,
            &mut *out,
            rbuf,
            spans,
            method,
            cfg.max_response_body,
            deadline,
        )
        .await
        {
            Ok((a, reusable)) => {
                if reusable {
                    pool.put(cfg.addr, stream, now_ms());
                }
                return Ok(a);
            }
            Err(Some(Failure::Unreachable(e))) if reused && rbuf.is_empty() => {
                tracing::debug!(auth = %cfg.addr, "pooled auth connection dead ({e}); retrying");
            }
            Err(Some(f)) => return Err(f),
            Err(None) => return Err(Failure::Timeout),
        }
    }
    Err(Failure::Unreachable(io::Error::other("retry failed")))
}

async fn connect(addr: SocketAddr, deadline: Instant) -> Result<TcpStream, Failure> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Failure::Timeout);
    }
    match crate::proxy::connect::connect_timeout(addr, left).await {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(Failure::Timeout),
        Err(e) => Err(Failure::Unreachable(e)),
    }
}

fn io_failure(e: io::Error) -> Option<Failure> {
    if e.kind() == io::ErrorKind::TimedOut {
        None
    } else {
        Some(Failure::Unreachable(e))
    }
}

/// One request/answer on `stream`. `Err(None)`: timed out. The answer's
/// `bool`: the connection may be pooled.
async fn exchange(
    stream: &TcpStream,
    out: &mut Vec<u8>,
    rbuf: &mut Vec<u8>,
    spans: &mut [HeaderSpan],
    method: &'static [u8],
    max_body: u64,
    deadline: Instant,
) -> Result<(Answer, bool), Option<Failure>> {
    let mut io = Io::Ready(stream);
    let left = deadline.saturating_duration_since(Instant::now());
    let len = out.len();
    io.write_all(out, 0..len, left.max(Duration::from_millis(1)))
        .await
        .map_err(io_failure)?;
    let limits = Limits {
        max_head: MAX_AUTH_HEAD,
        max_headers: MAX_AUTH_HEADERS,
    };
    let head = loop {
        if !rbuf.is_empty() {
            match parse_response(rbuf, spans, &limits, method) {
                Ok(Status::Complete(h)) if h.is_interim() => {
                    rbuf.drain(..h.head_len);
                    continue;
                }
                Ok(Status::Complete(h)) => break h,
                Ok(Status::Partial) => {}
                Err(_) => return Err(Some(Failure::Bad("invalid answer head"))),
            }
        }
        let seen = !rbuf.is_empty();
        match io.read(rbuf, MAX_AUTH_HEAD, deadline).await {
            Ok(0) if seen => return Err(Some(Failure::Bad("closed inside the answer head"))),
            Ok(0) => {
                return Err(Some(Failure::Unreachable(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed without answering",
                ))))
            }
            Ok(_) => {}
            Err(e) => return Err(io_failure(e)),
        }
    };
    let ok = (200..300).contains(&head.status);
    let start = head.head_len;
    let over = |len: usize| (len - start) as u64 > max_body;
    let (end, chunked, complete) = match head.framing {
        ResponseFraming::None => (start, false, true),
        ResponseFraming::Length(n) if n > max_body => {
            if !ok {
                return Err(Some(Failure::Bad("denial body over max_response_body")));
            }
            (start, false, false)
        }
        ResponseFraming::Length(n) => {
            let end = start + n as usize;
            while rbuf.len() < end {
                match io.read(rbuf, end - rbuf.len(), deadline).await {
                    Ok(0) => return Err(Some(Failure::Bad("closed inside the answer body"))),
                    Ok(_) => {}
                    Err(e) => return Err(io_failure(e)),
                }
            }
            (end, false, rbuf.len() == end)
        }
        ResponseFraming::Chunked => {
            let mut scanner = ChunkedScanner::new();
            let mut scanned = start;
            loop {
                let p = scanner
                    .advance(rbuf.get(scanned..).unwrap_or(&[]))
                    .map_err(|_| Some(Failure::Bad("invalid chunked answer body")))?;
                scanned += p.consumed;
                if p.done {
                    break (scanned, true, rbuf.len() == scanned);
                }
                if over(rbuf.len()) {
                    if !ok {
                        return Err(Some(Failure::Bad("denial body over max_response_body")));
                    }
                    break (start, false, false);
                }
                match io.read(rbuf, 16 * 1024, deadline).await {
                    Ok(0) => return Err(Some(Failure::Bad("closed inside the answer body"))),
                    Ok(_) => {}
                    Err(e) => return Err(io_failure(e)),
                }
            }
        }
        ResponseFraming::UntilClose => loop {
            if over(rbuf.len()) {
                if !ok {
                    return Err(Some(Failure::Bad("denial body over max_response_body")));
                }
                break (start, false, false);
            }
            match io.read(rbuf, 16 * 1024, deadline).await {
                Ok(0) => break (rbuf.len(), false, false),
                Ok(_) => {}
                Err(e) => return Err(io_failure(e)),
            }
        },
        ResponseFraming::Tunnel => return Err(Some(Failure::Bad("unexpected tunnel answer"))),
    };
    if head.is_switching_protocols() {
        return Err(Some(Failure::Bad("unexpected 101 answer")));
    }
    let reusable = complete && head.keep_alive && !head.conflicting_framing;
    Ok((
        Answer {
            head,
            body: start..end,
            chunked,
        },
        reusable,
    ))
}
