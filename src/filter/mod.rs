//! Middleware: per-route filter chains in the shape of Pingora's phases.
//!
//! A route's `middleware` list (validated in `config::middleware`) becomes
//! a [`ChainSpec`] in the published config (built once per snapshot, on the
//! control thread). Each worker builds its own [`Chain`] of `Rc<dyn Filter>`
//! from it the first time a request of that route arrives, and keeps it
//! until the snapshot goes away: filters need no `Send` or `Sync`, and no
//! request takes a lock or builds anything.
//!
//! Per exchange, in order: [`Filter::request_filter`] for each filter (any
//! may answer the request itself), [`Filter::upstream_request_filter`] for
//! each, then, on the response head, [`Filter::response_filter`] in reverse
//! order, and [`Filter::logging`] in reverse order when the exchange ends
//! (always, also after an answer or an error). Filters change heads through
//! [`Edits`]: header names to remove and header lines to add, applied to the
//! head the proxy writes anyway (one extra pass over its bytes). Bodies are
//! not touched: a route whose filters look only at heads keeps its bodies
//! spliced. A route without middleware runs none of this.
//!
//! - [`edit`]: applies [`Edits`] to a written head (pure).
//! - [`headers`], [`request_id`], [`ip_filter`], [`path`] (strip_prefix,
//!   add_prefix, rewrite, redirect), [`rate_limit`], [`cors`],
//!   [`concurrency`] (concurrency_limit), [`max_body`], [`basic_auth`]: the built-ins.
//! - [`registry`]: filters of an embedder's own code, by name.

pub mod basic_auth;
pub mod compress;
pub mod concurrency;
pub mod cors;
pub mod edit;
pub mod forward_auth;
pub mod headers;
pub mod htpasswd;
pub mod ip_filter;
pub mod max_body;
pub mod path;
pub mod rate_limit;
pub mod registry;
pub mod request_id;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crate::config::middleware::Middleware;

use crate::http::head::{find_header, HeaderSpan};
pub use registry::register;

/// What a filter sees of a request head.
pub struct Request<'a> {
    pub client: SocketAddr,
    pub method: &'a [u8],
    /// Path and query (origin-form, also for an absolute-form request).
    pub target: &'a [u8],
    buf: &'a [u8],
    headers: &'a [HeaderSpan],
}

impl<'a> Request<'a> {
    pub fn new(
        client: SocketAddr,
        method: &'a [u8],
        target: &'a [u8],
        buf: &'a [u8],
        headers: &'a [HeaderSpan],
    ) -> Request<'a> {
        Request {
            client,
            method,
            target,
            buf,
            headers,
        }
    }

    /// Value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &[u8]) -> Option<&'a [u8]> {
        find_header(self.buf, self.headers, name)
    }

    /// Values of every header named `name`, in order.
    pub fn headers(&self, name: &'a [u8]) -> impl DoubleEndedIterator<Item = &'a [u8]> + 'a {
        let buf = self.buf;
        self.headers
            .iter()
            .filter(move |h| h.name(buf).eq_ignore_ascii_case(name))
            .map(move |h| h.value(buf))
    }
}

/// Head changes and an optional direct answer, collected while filters run.
/// Kept per connection and cleared per exchange: buffers keep their capacity.
#[derive(Default)]
pub struct Edits {
    /// Lowercase header names removed from the request sent upstream.
    pub req_remove: Vec<Vec<u8>>,
    req_remove_len: usize,
    /// Header lines (`Name: value\r\n`) added to the request sent upstream.
    pub req_add: Vec<u8>,
    pub resp_remove: Vec<Vec<u8>>,
    resp_remove_len: usize,
    /// Header lines added to the response sent to the client.
    pub resp_add: Vec<u8>,
    /// The id `request_id` chose, for other filters and the access log.
    pub request_id: Vec<u8>,
    /// Extra header lines of a direct answer.
    pub answer_headers: Vec<u8>,
    /// The target sent upstream, once a filter changed it.
    target: Vec<u8>,
    target_tmp: Vec<u8>,
    target_set: bool,
    /// One bit per filter position, for filters that must know in their
    /// logging phase what their request phase did (cleared per exchange).
    pub marks: u64,
    /// The body of a direct answer, when a filter gave one (else the
    /// status's reason phrase).
    answer_body: Vec<u8>,
    answer_body_set: bool,
    /// The coding `compress` chose for the response, if the client accepts one.
    pub compress: Option<compress::Plan>,
    /// The most chunk data a chunked request body may carry (`max_body`).
    pub body_limit: Option<u64>,
    /// `forward_auth`'s subrequest and answer buffers (kept for reuse).
    pub(crate) auth_out: Vec<u8>,
    pub(crate) auth_in: Vec<u8>,
}

impl Edits {
    pub fn clear(&mut self) {
        self.req_remove_len = 0;
        self.req_add.clear();
        self.resp_remove_len = 0;
        self.resp_add.clear();
        self.request_id.clear();
        self.answer_headers.clear();
        self.target_set = false;
        self.marks = 0;
        self.answer_body_set = false;
        self.body_limit = None;
        self.compress = None;
    }

    /// Gives a direct answer this body (sent with its Content-Length).
    pub fn set_answer_body(&mut self, body: &[u8]) {
        self.answer_body.clear();
        self.answer_body.extend_from_slice(body);
        self.answer_body_set = true;
    }

    /// The body a filter gave its direct answer.
    pub fn answer_body(&self) -> Option<&[u8]> {
        self.answer_body_set.then_some(self.answer_body.as_slice())
    }

    /// The target as the filters left it so far (`req_target` if unchanged).
    pub fn target<'a>(&'a self, req_target: &'a [u8]) -> &'a [u8] {
        if self.target_set {
            &self.target
        } else {
            req_target
        }
    }

    /// The changed target, if a filter changed it.
    pub fn new_target(&self) -> Option<&[u8]> {
        self.target_set.then_some(self.target.as_slice())
    }

    /// Changes the target sent upstream: `f` gets the current one and
    /// writes the new one.
    pub fn rewrite_target(&mut self, req_target: &[u8], f: impl FnOnce(&[u8], &mut Vec<u8>)) {
        let mut next = std::mem::take(&mut self.target_tmp);
        next.clear();
        f(self.target(req_target), &mut next);
        std::mem::swap(&mut self.target, &mut next);
        self.target_tmp = next;
        self.target_set = true;
    }

    fn push_name(list: &mut Vec<Vec<u8>>, len: &mut usize, name: &[u8]) {
        match list.get_mut(*len) {
            Some(slot) => {
                slot.clear();
                slot.extend(name.iter().map(u8::to_ascii_lowercase));
            }
            None => list.push(name.to_ascii_lowercase()),
        }
        *len += 1;
    }

    /// Removes every request header named `name` (before it goes upstream).
    pub fn remove_request(&mut self, name: &[u8]) {
        Self::push_name(&mut self.req_remove, &mut self.req_remove_len, name);
    }

    /// Adds a request header line.
    pub fn add_request(&mut self, name: &[u8], value: &[u8]) {
        line(&mut self.req_add, name, value);
    }

    /// Removes every response header named `name`.
    pub fn remove_response(&mut self, name: &[u8]) {
        Self::push_name(&mut self.resp_remove, &mut self.resp_remove_len, name);
    }

    /// Adds a response header line (also to a direct answer).
    pub fn add_response(&mut self, name: &[u8], value: &[u8]) {
        line(&mut self.resp_add, name, value);
    }

    pub fn request_removed(&self) -> &[Vec<u8>] {
        self.req_remove.get(..self.req_remove_len).unwrap_or(&[])
    }

    pub fn response_removed(&self) -> &[Vec<u8>] {
        self.resp_remove.get(..self.resp_remove_len).unwrap_or(&[])
    }
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// What a request filter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on with the next filter, then the upstream.
    Continue,
    /// Answer with this status now (extra headers in
    /// [`Edits::answer_headers`]); the upstream is never contacted.
    Respond(u16),
    /// Built-in `forward_auth` only: the exchange asks the auth service,
    /// then resumes the chain after this filter's position (which
    /// [`Chain::request`] fills in).
    Auth(usize),
}

/// A filter: Pingora's phases, without `Send` (each worker has its own).
/// Every method has a default that does nothing.
pub trait Filter {
    /// Looks at the request head; may answer the request directly.
    fn request_filter(&self, _req: &Request<'_>, _e: &mut Edits) -> Verdict {
        Verdict::Continue
    }
    /// Changes the head sent upstream (after every request filter passed).
    fn upstream_request_filter(&self, _req: &Request<'_>, _e: &mut Edits) {}
    /// Changes the response head sent to the client (also a direct answer's).
    fn response_filter(&self, _status: u16, _e: &mut Edits) {}
    /// Runs when the exchange ends, whatever happened (status 0: no response).
    fn logging(&self, _status: u16, _e: &Edits) {}
}

/// A route's chain as published: the validated list plus the state all
/// workers share (built with the snapshot, on the control thread).
#[derive(Debug)]
pub struct ChainSpec {
    /// Unique per build: identifies the spec in the workers' caches.
    id: u64,
    pub middleware: Vec<Middleware>,
    /// State shared by all workers, by position in `middleware`
    /// (rate limit tables).
    tables: Vec<Option<Arc<rate_limit::Table>>>,
    /// In-flight counters of `concurrency_limit`, by position.
    in_flight: Vec<Arc<std::sync::atomic::AtomicU64>>,
    /// Outcome counters of `forward_auth`, by position.
    auth: Vec<Option<forward_auth::Counters>>,
}

impl ChainSpec {
    /// `None` for an empty list: the route keeps the plain fast path.
    pub fn build(middleware: &[Middleware]) -> Option<Arc<ChainSpec>> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        if middleware.is_empty() {
            return None;
        }
        let tables = middleware
            .iter()
            .map(|m| match m {
                Middleware::RateLimit {
                    rate,
                    burst,
                    max_keys,
                    ..
                } => Some(Arc::new(rate_limit::Table::new(*rate, *burst, *max_keys))),
                _ => None,
            })
            .collect();
        let in_flight = middleware.iter().map(|_| Arc::default()).collect();
        let auth = middleware
            .iter()
            .map(|m| matches!(m, Middleware::ForwardAuth(_)).then(Default::default))
            .collect();
        Some(Arc::new(ChainSpec {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            middleware: middleware.to_vec(),
            tables,
            in_flight,
            auth,
        }))
    }

    /// The `forward_auth` at position `i`, with its counters.
    pub fn forward_auth(
        &self,
        i: usize,
    ) -> Option<(
        &crate::config::middleware::ForwardAuth,
        &forward_auth::Counters,
    )> {
        match (self.middleware.get(i), self.auth.get(i)) {
            (Some(Middleware::ForwardAuth(cfg)), Some(Some(c))) => Some((cfg, c)),
            _ => None,
        }
    }

    /// Each middleware's counters, by position (`null` for those without).
    pub fn counters_json(&self) -> Vec<serde_json::Value> {
        self.auth
            .iter()
            .map(|c| c.as_ref().map_or(serde_json::Value::Null, |c| c.to_json()))
            .collect()
    }
}

/// A filter that does nothing (never built from a valid spec).
struct Nothing;
impl Filter for Nothing {}

/// One worker's filters of one route.
pub struct Chain {
    filters: Vec<Box<dyn Filter>>,
}

impl Chain {
    fn build(spec: &ChainSpec) -> Chain {
        let filters = spec
            .middleware
            .iter()
            .zip(spec.tables.iter())
            .zip(spec.in_flight.iter())
            .enumerate()
            .map(|(i, ((m, table), in_flight))| -> Box<dyn Filter> {
                match m {
                    Middleware::Custom { name, config } => {
                        let built = registry::lookup(name).and_then(|f| {
                            let v = serde_json::from_str(config).ok()?;
                            f(&v).ok()
                        });
                        match built {
                            Some(f) => f,
                            None => {
                                tracing::error!(name = %name, "registered filter could not be built; it does nothing");
                                Box::new(Nothing)
                            }
                        }
                    }
                    Middleware::BasicAuth { users, realm } => {
                        Box::new(basic_auth::BasicAuth::new(users, realm))
                    }
                    Middleware::MaxBody { max } => Box::new(max_body::MaxBody::new(*max)),
                    Middleware::ForwardAuth(_) => Box::new(forward_auth::ForwardAuthFilter),
                    Middleware::Compress(c) => Box::new(compress::CompressFilter::new(c)),
                    Middleware::ConcurrencyLimit { max } => Box::new(
                        concurrency::ConcurrencyLimit::new(in_flight.clone(), *max, i),
                    ),
                    Middleware::RateLimit { burst, key, .. } => match table {
                        Some(t) => Box::new(rate_limit::RateLimit::new(t.clone(), key, *burst)),
                        None => Box::new(Nothing),
                    },
                    Middleware::Headers { request, response } => {
                        Box::new(headers::Headers::new(request, response))
                    }
                    Middleware::RequestId { header, trust } => {
                        Box::new(request_id::RequestId::new(header, *trust))
                    }
                    Middleware::IpFilter {
                        allow,
                        deny,
                        trusted_proxies,
                    } => Box::new(ip_filter::IpFilter::new(allow, deny, trusted_proxies)),
                    Middleware::Cors {
                        origins,
                        methods,
                        headers,
                        expose,
                        credentials,
                        max_age,
                    } => Box::new(cors::Cors::new(
                        origins,
                        methods,
                        headers,
                        expose,
                        *credentials,
                        *max_age,
                    )),
                    Middleware::StripPrefix { prefix } => Box::new(path::StripPrefix::new(prefix)),
                    Middleware::AddPrefix { prefix } => Box::new(path::AddPrefix::new(prefix)),
                    Middleware::Rewrite { regex, replacement } => {
                        Box::new(path::Rewrite::new(regex, replacement))
                    }
                    Middleware::Redirect {
                        status,
                        scheme,
                        host,
                        path,
                    } => Box::new(path::Redirect::new(
                        *status,
                        scheme.as_deref(),
                        host.as_deref(),
                        path,
                    )),
                }
            })
            .collect();
        Chain { filters }
    }

    /// Request and upstream-request phases; stops at the first answer
    /// (or at a `forward_auth`, whose position it returns).
    pub fn request(&self, req: &Request<'_>, e: &mut Edits) -> Verdict {
        self.request_from(0, req, e)
    }

    /// [`Chain::request`] from filter position `start` on (after a
    /// `forward_auth` at `start - 1` allowed the request).
    pub fn request_from(&self, start: usize, req: &Request<'_>, e: &mut Edits) -> Verdict {
        for (i, f) in self.filters.iter().enumerate().skip(start) {
            match f.request_filter(req, e) {
                Verdict::Continue => {}
                Verdict::Respond(s) => return Verdict::Respond(s),
                Verdict::Auth(_) => return Verdict::Auth(i),
            }
        }
        for f in &self.filters {
            f.upstream_request_filter(req, e);
        }
        Verdict::Continue
    }

    /// Response phase, in reverse order.
    pub fn response(&self, status: u16, e: &mut Edits) {
        for f in self.filters.iter().rev() {
            f.response_filter(status, e);
        }
    }

    /// Logging phase, in reverse order.
    pub fn logging(&self, status: u16, e: &Edits) {
        for f in self.filters.iter().rev() {
            f.logging(status, e);
        }
    }
}

/// A built chain: the spec's id, the spec (to notice when it is gone), the chain.
type Built = (u64, Weak<ChainSpec>, Rc<Chain>);

/// A worker's chains, built on first use per published spec.
#[derive(Default)]
pub struct WorkerChains {
    built: RefCell<Vec<Built>>,
}

impl WorkerChains {
    /// This worker's chain for `spec` (built the first time).
    pub fn get(&self, spec: &Arc<ChainSpec>) -> Rc<Chain> {
        let mut built = self.built.borrow_mut();
        if let Some((_, _, c)) = built.iter().find(|(id, _, _)| *id == spec.id) {
            return c.clone();
        }
        // A new snapshot: forget the chains of snapshots no longer in use.
        built.retain(|(_, w, _)| w.strong_count() > 0);
        let c = Rc::new(Chain::build(spec));
        built.push((spec.id, Arc::downgrade(spec), c.clone()));
        c
    }
}

/// The filter state of one connection's current exchange.
#[derive(Default)]
pub struct Exchange {
    /// The route's chain (None: the route has no middleware).
    pub chain: Option<Rc<Chain>>,
    pub edits: Edits,
}
