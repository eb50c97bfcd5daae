//! What an HTTP/2 stream does around the proxying, as an HTTP/1.1 exchange
//! does: its route's middleware chain (request phases before the upstream,
//! response phase on the head sent to the client, logging phase when the
//! stream ends, whatever happened) and its access log line.
//!
//! One [`Record`] per stream task, dropped when the task ends (also when
//! the task is dropped mid-way): the drop runs the logging phase and writes
//! the line, so a `concurrency_limit` place is always given back. With no
//! access log configured and no middleware on the route, a record is a few
//! plain fields and nothing is allocated or written.
//!
//! HTTP/2 lines say `HTTP/2.0`; their `bytes_in` and `bytes_out` count the
//! request and response body (DATA payload): a stream's header blocks are
//! HPACK-compressed against the connection's shared table, so their size
//! on the wire belongs to no single stream.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use h2::server::SendResponse;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::accesslog::{Field, Pending};
use crate::filter::{forward_auth, Chain, ChainSpec, Edits, Request, Verdict};
use crate::shared::Live;

use super::proxy::ConnShared;

/// One stream's access log line and middleware state.
pub struct Record<'a> {
    conn: &'a ConnShared,
    live: Arc<Live>,
    log: RefCell<Pending>,
    /// The route's chain once its request phase ran (None: no middleware).
    chain: Option<Rc<Chain>>,
    edits: RefCell<Edits>,
}

impl<'a> Record<'a> {
    /// Starts a stream's record; its line is written if some access log is
    /// configured.
    pub fn new(conn: &'a ConnShared, live: Arc<Live>, parts: &http::request::Parts) -> Record<'a> {
        let mut log = Pending::default();
        if live.any_log {
            log.begin("HTTP/2.0");
            log.set(Field::Method, parts.method.as_str().as_bytes());
            log.set(Field::Target, target(parts).as_bytes());
            if let Some(v) = parts.headers.get(http::header::USER_AGENT) {
                log.set(Field::UserAgent, v.as_bytes());
            }
            if let Some(v) = parts.headers.get(http::header::REFERER) {
                log.set(Field::Referer, v.as_bytes());
            }
        }
        Record {
            conn,
            live,
            log: RefCell::new(log),
            chain: None,
            edits: RefCell::new(Edits::default()),
        }
    }

    /// The index of the route the stream matched.
    pub fn route(&self, i: usize) {
        self.log.borrow_mut().route = Some(i);
    }

    /// The status sent to the client.
    pub fn status(&self, s: u16) {
        self.log.borrow_mut().status = s;
    }

    /// A response head went to the client.
    pub fn answered(&self) -> bool {
        self.log.borrow().status != 0
    }

    pub fn bytes_in(&self, n: u64) {
        let mut l = self.log.borrow_mut();
        if l.on {
            l.bytes_in += n;
        }
    }

    pub fn bytes_out(&self, n: u64) {
        let mut l = self.log.borrow_mut();
        if l.on {
            l.bytes_out += n;
        }
    }

    /// The upstream connect (or pool take) begins.
    pub fn upstream_begins(&self) {
        self.log.borrow_mut().upstream_begins();
    }

    /// The upstream chosen.
    pub fn upstream(&self, addr: SocketAddr) {
        let mut l = self.log.borrow_mut();
        if l.on {
            l.upstream = Some(addr);
        }
    }

    /// The first response byte from the upstream arrived.
    pub fn first_byte(&self) {
        self.log.borrow_mut().first_byte();
    }

    /// Runs the request phases of `chain` (the route's middleware, built
    /// from `spec`), asking a `forward_auth` service where the chain says so.
    pub async fn request(
        &mut self,
        spec: &ChainSpec,
        chain: Rc<Chain>,
        parts: &http::request::Parts,
        authority: &[u8],
    ) -> Verdict {
        let req = Request::h2(
            self.conn.peer,
            parts.method.as_str().as_bytes(),
            target(parts).as_bytes(),
            &parts.headers,
            authority,
        );
        let e = self.edits.get_mut();
        e.clear();
        let mut verdict = chain.request(&req, e);
        while let Verdict::Auth(i) = verdict {
            let ctx = &self.conn.ctx;
            verdict = match spec.forward_auth(i) {
                // Boxed: its state would otherwise enlarge every stream's task.
                Some((cfg, counters)) => {
                    let now = || ctx.now_ms();
                    let https = self.conn.tls.is_some();
                    let pool = &ctx.upstreams;
                    Box::pin(forward_auth::check(
                        cfg, counters, pool, now, &req, https, e,
                    ))
                    .await
                }
                // Only the built-in forward_auth may ask for a subrequest.
                None => Verdict::Respond(500),
            };
            if verdict == Verdict::Continue {
                verdict = chain.request_from(i + 1, &req, e);
            }
        }
        if !e.request_id.is_empty() {
            let l = self.log.get_mut();
            if l.on {
                l.set(Field::RequestId, &e.request_id);
            }
        }
        if let Verdict::Respond(status) = verdict {
            chain.response(status, e);
        }
        self.chain = Some(chain);
        verdict
    }

    /// Applies the request edits to an HTTP/1.1 head written at `head[0..]`.
    pub fn edit_head(&self, head: &mut Vec<u8>) {
        if self.chain.is_none() {
            return;
        }
        let e = self.edits.borrow();
        crate::filter::edit::apply(head, 0, e.request_removed(), &e.req_add);
        if let Some(t) = e.new_target() {
            crate::filter::edit::replace_target(head, 0, t);
        }
    }

    /// Applies the request edits to an upstream HTTP/2 request.
    pub fn edit_request(&self, req: &mut http::Request<()>) {
        if self.chain.is_none() {
            return;
        }
        let e = self.edits.borrow();
        if let Some(t) = e.new_target() {
            let mut p = req.uri().clone().into_parts();
            if let Ok(pq) = http::uri::PathAndQuery::from_maybe_shared(Bytes::copy_from_slice(t)) {
                p.path_and_query = Some(pq);
                if let Ok(u) = http::Uri::from_parts(p) {
                    *req.uri_mut() = u;
                }
            }
        }
        edit_map(req.headers_mut(), e.request_removed(), &e.req_add, false);
    }

    /// The response phase on the head going to the client: notes the
    /// status, adds `hsts` (TLS routes with `hsts`: Strict-Transport-Security,
    /// as on HTTP/1.1) and applies the response edits.
    pub fn response<T>(&self, resp: &mut http::Response<T>, hsts: Option<&str>) {
        let status = resp.status().as_u16();
        self.status(status);
        if let Some(v) = hsts.and_then(|v| HeaderValue::from_str(v).ok()) {
            resp.headers_mut()
                .append(http::header::STRICT_TRANSPORT_SECURITY, v);
        }
        let Some(chain) = &self.chain else { return };
        let mut e = self.edits.borrow_mut();
        chain.response(status, &mut e);
        edit_map(resp.headers_mut(), e.response_removed(), &e.resp_add, true);
    }

    /// Answers the stream with a middleware's direct answer (`status`,
    /// the answer's and the response phase's headers, the body a filter
    /// gave it or a short text one).
    pub fn answer(&self, respond: &mut SendResponse<Bytes>, status: u16) {
        self.status(status);
        let reason = crate::http::respond::reason(status);
        let mut resp = http::Response::new(());
        *resp.status_mut() =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        {
            let e = self.edits.borrow();
            let h = resp.headers_mut();
            edit_map(h, &[], &e.answer_headers, true);
            edit_map(h, &[], &e.resp_add, true);
        }
        // 204 (a CORS preflight's answer) and 304 (a forward_auth denial)
        // have no body.
        let body = match self.edits.borrow().answer_body() {
            _ if matches!(status, 204 | 304) => None,
            Some(b) => Some(Bytes::copy_from_slice(b)),
            None => {
                let h = resp.headers_mut();
                h.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain"),
                );
                Some(Bytes::from(format!("{reason}\n")))
            }
        };
        if let Some(b) = &body {
            resp.headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(b.len()));
        }
        match body {
            None => {
                let _ = respond.send_response(resp, true);
            }
            Some(b) => {
                if let Ok(mut tx) = respond.send_response(resp, false) {
                    self.bytes_out(b.len() as u64);
                    let _ = tx.send_data(b, true);
                }
            }
        }
    }

    /// A short text response generated by the proxy (errors).
    pub fn error(&self, respond: &mut SendResponse<Bytes>, status: u16, detail: &str) {
        self.status(status);
        let n = super::answer::error(respond, status, detail);
        self.bytes_out(n as u64);
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        let log = self.log.get_mut();
        if let Some(chain) = self.chain.take() {
            chain.logging(log.status, self.edits.get_mut());
        }
        if !log.on {
            return;
        }
        let tls = self.conn.tls.as_ref();
        let fields = (
            tls.and_then(|t| t.version),
            tls.and_then(|t| t.sni_name.as_deref()).map(str::as_bytes),
        );
        crate::accesslog::http::end(log, &self.conn.ctx.log, &self.live, self.conn.peer, fields);
    }
}

/// The request's path and query (`/` when empty).
fn target(parts: &http::request::Parts) -> &str {
    parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/")
}

/// Applies a filter's edits to a field map: drops the names in `remove`,
/// appends the `Name: value\r\n` lines of `add`. Fields HTTP/2 forbids
/// (connection-specific ones) are left out of responses; lines that are
/// not valid fields are skipped.
fn edit_map(map: &mut HeaderMap, remove: &[Vec<u8>], add: &[u8], response: bool) {
    for n in remove {
        if let Ok(name) = HeaderName::from_bytes(n) {
            map.remove(name);
        }
    }
    for line in add.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if response && super::head::connection_specific(name) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(n, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_on_a_field_map() {
        let mut m = HeaderMap::new();
        m.insert("x-debug", HeaderValue::from_static("1"));
        m.insert("keep", HeaderValue::from_static("k"));
        edit_map(
            &mut m,
            &[b"x-debug".to_vec()],
            b"X-Env: prod\r\nConnection: close\r\nbad line\r\nX-Env: two\r\n",
            true,
        );
        assert!(m.get("x-debug").is_none());
        assert_eq!(m.get("keep").unwrap(), "k");
        let env: Vec<_> = m.get_all("x-env").iter().collect();
        assert_eq!(env, ["prod", "two"]);
        assert!(m.get("connection").is_none());
    }
}
