//! The API on `dashboard_host:dashboard_port`, served by the control thread
//! (never on the data path): `/healthz`, `/api/status`, `/api/config` (GET and
//! PUT), `/api/reload`, `/metrics` (Prometheus text exposition).
//!
//! Each request is parsed with httparse, bounded in size and time, and
//! answered with `Connection: close`. Before dispatch:
//! - a mutating call (any method but GET/HEAD) carrying an `Origin` that is
//!   neither in `trusted_origins` nor the API's own origin is refused with 403
//!   (GopherMesh's CSRF rule: a page elsewhere cannot drive the API through
//!   the operator's browser);
//! - when a token is set (`api_token` in the config, or `RINGMESH_API_TOKEN`),
//!   every call but `/healthz` needs `Authorization: Bearer <token>`, else 401.
//!
//! Endpoints are rows of a table ([`CORE`]); other modules add their own
//! table to [`TABLES`].

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

use crate::shared::Shared;
use crate::worker::LocalEvent;

use super::reload::{self, ReloadError, Reloader, Source};

/// Largest request head the API accepts.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body (a config file).
pub const MAX_BODY: usize = 1 << 20;
/// Time a client gets to send its request head and body.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time we give a client to take our answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the API handlers can reach.
pub struct ApiState {
    pub shared: Arc<Shared>,
    pub started: Instant,
    pub reloader: Rc<std::cell::RefCell<Reloader>>,
    pub upgrader: Rc<super::upgrade::Upgrader>,
    pub driver: &'static str,
    /// Where the API listens (its own origin is always trusted).
    pub api_addr: SocketAddr,
    /// Token from the environment; overrides the config's `api_token`.
    pub api_token: Option<String>,
    /// Backend processes and health (control thread only).
    pub procs: Rc<crate::control::supervisor::Registry>,
    /// Routes from etcd and the node registry (see `fleet.rs`), if configured.
    pub fleet: Option<Arc<crate::fleet::FleetState>>,
    /// DNS-discovered backends (see `discovery.rs`).
    pub discovery: Arc<crate::discovery::DiscoveryState>,
    /// A stop was requested and `shutdown_delay` runs: `/readyz` answers 503.
    pub leaving: Rc<std::cell::Cell<bool>>,
}

impl ApiState {
    /// The bearer token the API requires now, if any.
    fn token(&self) -> Option<String> {
        self.api_token
            .clone()
            .or_else(|| self.shared.live().snapshot.api_token.clone())
    }
}

/// A parsed API request.
#[derive(Debug, Default)]
pub struct Request {
    pub method: String,
    /// The path without its query.
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path after `prefix` (for `/api/thing/*` endpoints).
    pub fn tail(&self, prefix: &str) -> &str {
        self.path.strip_prefix(prefix).unwrap_or("")
    }
}

/// An API answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub ctype: &'static str,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            ctype: "text/plain; charset=utf-8",
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        let mut body = serde_json::to_string_pretty(v).unwrap_or_default();
        body.push('\n');
        Response {
            status,
            ctype: "application/json",
            body,
            headers: Vec::new(),
        }
    }

    /// `{"ok": false, "error": msg}` with `status`.
    pub fn error(status: u16, msg: impl Into<String>) -> Response {
        Response::json(
            status,
            &serde_json::json!({"ok": false, "error": msg.into()}),
        )
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// A handler's future (handlers that wait, e.g. for workers to pick up a reload).
pub type Reply = Pin<Box<dyn Future<Output = Response>>>;

/// How an endpoint answers.
#[derive(Clone, Copy)]
pub enum Handler {
    Sync(fn(&ApiState, &Request) -> Response),
    Async(fn(Rc<ApiState>, Request) -> Reply),
}

/// One row of the dispatch table.
pub struct Endpoint {
    /// `GET` also answers `HEAD`.
    pub method: &'static str,
    /// An exact path, or a prefix ending in `/*` (any non-empty rest).
    pub path: &'static str,
    pub handler: Handler,
}

impl Endpoint {
    fn matches_path(&self, path: &str) -> bool {
        match self.path.strip_suffix('*') {
            Some(prefix) => path.len() > prefix.len() && path.starts_with(prefix),
            None => self.path == path,
        }
    }
}

/// The endpoints of this module.
pub const CORE: &[Endpoint] = &[
    Endpoint {
        method: "GET",
        path: "/healthz",
        handler: Handler::Sync(|_, _| Response::text(200, "ok\n")),
    },
    Endpoint {
        method: "GET",
        path: "/api/status",
        handler: Handler::Sync(|s, _| Response {
            status: 200,
            ctype: "application/json",
            body: super::status::status_json(s),
            headers: Vec::new(),
        }),
    },
    Endpoint {
        method: "GET",
        path: "/api/config",
        handler: Handler::Sync(|s, _| Response {
            status: 200,
            ctype: "application/json",
            body: s.reloader.borrow().text.clone(),
            headers: Vec::new(),
        }),
    },
    Endpoint {
        method: "PUT",
        path: "/api/config",
        handler: Handler::Async(put_config),
    },
    Endpoint {
        method: "POST",
        path: "/api/reload",
        handler: Handler::Async(reload_from_file),
    },
    Endpoint {
        method: "POST",
        path: "/api/upgrade",
        handler: Handler::Async(upgrade),
    },
    Endpoint {
        method: "GET",
        path: "/metrics",
        handler: Handler::Sync(|s, _| Response {
            status: 200,
            ctype: "text/plain; version=0.0.4",
            body: super::status::metrics(s),
            headers: Vec::new(),
        }),
    },
];

/// Every endpoint table, searched in order.
pub const TABLES: &[&[Endpoint]] = &[
    CORE,
    PROCS,
    DASHBOARD,
    super::fleet::ENDPOINTS,
    super::discovery::ENDPOINTS,
    super::sessions_api::ENDPOINTS,
];

/// Backend processes (see `procs_api.rs`): logs and kill.
const PROCS: &[Endpoint] = &[
    Endpoint {
        method: "GET",
        path: "/api/logs/*",
        handler: Handler::Sync(procs_endpoint),
    },
    Endpoint {
        method: "POST",
        path: "/api/processes/*",
        handler: Handler::Sync(procs_endpoint),
    },
];

fn procs_endpoint(state: &ApiState, req: &Request) -> Response {
    let target = if req.query.is_empty() {
        req.path.clone()
    } else {
        format!("{}?{}", req.path, req.query)
    };
    match super::procs_api::route(state, &req.method, &target) {
        Some((status, ctype, body)) => Response {
            status,
            ctype,
            body,
            headers: Vec::new(),
        },
        None => Response::text(404, format!("no such endpoint: {}\n", req.path)),
    }
}

/// The dashboard's page and assets (see `dashboard.rs`).
const DASHBOARD: &[Endpoint] = &[
    Endpoint {
        method: "GET",
        path: "/",
        handler: Handler::Sync(dashboard_asset),
    },
    Endpoint {
        method: "GET",
        path: "/index.html",
        handler: Handler::Sync(dashboard_asset),
    },
    Endpoint {
        method: "GET",
        path: "/dashboard.js",
        handler: Handler::Sync(dashboard_asset),
    },
    Endpoint {
        method: "GET",
        path: "/dashboard.css",
        handler: Handler::Sync(dashboard_asset),
    },
];

fn dashboard_asset(_: &ApiState, req: &Request) -> Response {
    match super::dashboard::asset(&req.path) {
        Some(a) => Response {
            status: 200,
            ctype: a.ctype,
            body: a.body.to_string(),
            headers: Vec::new(),
        },
        None => Response::text(404, format!("no such endpoint: {}\n", req.path)),
    }
}

/// Serves the API until `stop` (after a handover to a new process) or exit.
pub async fn serve(listener: TcpListener, state: Rc<ApiState>, stop: Rc<LocalEvent>) {
    loop {
        // The control runtime is epoll-based: dropping a pending accept loses
        // nothing. Biased: once stopped, queued connections are left to the
        // new process, which holds the same socket.
        let accepted = monoio::select! {
            biased;
            _ = stop.wait() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                monoio::spawn(handle(stream, state.clone()));
            }
            Err(e) => {
                tracing::warn!("status API accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request: its head, then a Content-Length body (at most [`MAX_BODY`]).
/// `Err(0)` means the client went away; other errors are statuses to answer.
async fn read_request(stream: &mut TcpStream) -> Result<Request, (u16, &'static str)> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let (mut req, head_len) = loop {
        if buf.len() >= MAX_HEAD {
            return Err((431, "request head too large"));
        }
        let chunk = Vec::with_capacity(4096);
        let (r, chunk) = stream.read(chunk).await;
        match r {
            Ok(0) | Err(_) => return Err((0, "")),
            Ok(_) => buf.extend_from_slice(&chunk),
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut p = httparse::Request::new(&mut headers);
        match p.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let target = p.path.unwrap_or("");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                let req = Request {
                    method: p.method.unwrap_or("").to_string(),
                    path: path.to_string(),
                    query: query.to_string(),
                    headers: p
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                    body: Vec::new(),
                };
                break (req, n);
            }
            Ok(httparse::Status::Partial) => continue,
            Err(_) => return Err((400, "malformed request")),
        }
    };
    if req.header("transfer-encoding").is_some() {
        return Err((411, "send the body with a Content-Length"));
    }
    let len = match req.header("content-length") {
        None => 0,
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map_err(|_| (400, "bad Content-Length"))?,
    };
    if len > MAX_BODY {
        return Err((413, "body too large (limit 1 MiB)"));
    }
    buf.drain(..head_len);
    if buf.len() < len
        && req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        let (r, _) = stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
            .await;
        r.map_err(|_| (0, ""))?;
    }
    while buf.len() < len {
        let chunk = Vec::with_capacity((len - buf.len()).min(64 * 1024));
        let (r, chunk) = stream.read(chunk).await;
        match r {
            Ok(0) | Err(_) => return Err((0, "")),
            Ok(_) => buf.extend_from_slice(&chunk),
        }
    }
    buf.truncate(len);
    req.body = buf;
    Ok(req)
}

async fn handle(mut stream: TcpStream, state: Rc<ApiState>) {
    // The control thread may take its time: a timed-out read here drops the
    // connection, and losing bytes of an unanswered request is fine.
    let read = monoio::time::timeout(READ_TIMEOUT, read_request(&mut stream)).await;
    let (head_only, resp) = match read {
        Err(_) => (false, Response::text(408, "request timeout\n")),
        Ok(Err((0, _))) => return,
        Ok(Err((code, msg))) => (false, Response::text(code, format!("{msg}\n"))),
        Ok(Ok(req)) => (req.method == "HEAD", dispatch(&state, req).await),
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        resp.status,
        reason(resp.status),
        resp.ctype,
        resp.body.len()
    );
    for (k, v) in &resp.headers {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    out.push_str(super::dashboard::SECURITY_HEADERS);
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !head_only {
        out.extend_from_slice(resp.body.as_bytes());
    }
    let _ = monoio::time::timeout(WRITE_TIMEOUT, stream.write_all(out)).await;
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Security checks, then the first table row that matches.
pub async fn dispatch(state: &Rc<ApiState>, req: Request) -> Response {
    if let Some(denied) = check_access(state, &req) {
        return denied;
    }
    let method = if req.method == "HEAD" {
        "GET"
    } else {
        req.method.as_str()
    };
    let mut allowed: Vec<&str> = Vec::new();
    for ep in TABLES.iter().flat_map(|t| t.iter()) {
        if !ep.matches_path(&req.path) {
            continue;
        }
        if ep.method != method {
            allowed.push(ep.method);
            continue;
        }
        return match ep.handler {
            Handler::Sync(f) => f(state, &req),
            Handler::Async(f) => f(state.clone(), req).await,
        };
    }
    if allowed.is_empty() {
        Response::text(404, format!("no such endpoint: {}\n", req.path))
    } else {
        Response::text(
            405,
            format!("{} {}: use {}\n", req.method, req.path, allowed.join(", ")),
        )
        .with_header("Allow", allowed.join(", "))
    }
}

/// 403 for a mutating call from an untrusted Origin, 401 without the token.
fn check_access(state: &ApiState, req: &Request) -> Option<Response> {
    if req.path == "/healthz" {
        return None;
    }
    if let Some(host) = req.header("host") {
        if !host_allowed(state, host) {
            tracing::warn!(%host, "API: {} {} refused: unknown Host", req.method, req.path);
            return Some(Response::error(
                403,
                format!(
                    "host {host:?} is not this API's name (DNS-rebinding guard): use an IP address, \
                     localhost or dashboard_host, or list the origin in trusted_origins"
                ),
            ));
        }
    }
    if super::dashboard::is_public(&req.path) {
        return None;
    }
    let mutating = !matches!(req.method.as_str(), "GET" | "HEAD");
    if mutating {
        if let Some(origin) = req.header("origin") {
            if !origin_trusted(state, origin) {
                tracing::warn!(%origin, "API: {} {} refused: untrusted Origin", req.method, req.path);
                return Some(Response::error(
                    403,
                    format!("origin {origin:?} is not in trusted_origins"),
                ));
            }
        }
    }
    if let Some(token) = state.token() {
        let given = req
            .header("authorization")
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        if !given.is_some_and(|g| ct_eq(g.as_bytes(), token.as_bytes())) {
            return Some(
                Response::error(
                    401,
                    "a bearer token is required (Authorization: Bearer <token>)",
                )
                .with_header("WWW-Authenticate", "Bearer realm=\"ringmesh\""),
            );
        }
    }
    None
}

/// Whether `host` (a Host header) names this API: an IP address, `localhost`,
/// `dashboard_host`, or the host of a `trusted_origins` entry.
///
/// Why: a page on `http://evil.example` whose name is re-pointed at
/// 127.0.0.1 (DNS rebinding) is same-origin with itself, so the Origin check
/// does not see it, and could read `/api/status` or `/api/config`; its
/// requests still carry `Host: evil.example`, which this refuses.
fn host_allowed(state: &ApiState, host: &str) -> bool {
    let name = host_name(host);
    if name.parse::<std::net::IpAddr>().is_ok() || name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let live = state.shared.live();
    if name.eq_ignore_ascii_case(live.snapshot.dashboard.host.trim()) {
        return true;
    }
    live.snapshot.trusted_origins.iter().any(|o| {
        let rest = o.trim().split_once("://").map_or(o.as_str(), |(_, r)| r);
        host_name(rest.split('/').next().unwrap_or("")).eq_ignore_ascii_case(name)
    })
}

/// The host part of `host[:port]` or `[v6][:port]`.
fn host_name(hostport: &str) -> &str {
    let hostport = hostport.trim();
    match hostport.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => hostport.rsplit_once(':').map_or(hostport, |(h, _)| h),
    }
}

/// Whether a browser page at `origin` may make mutating calls.
fn origin_trusted(state: &ApiState, origin: &str) -> bool {
    let norm = |s: &str| s.trim().trim_end_matches('/').to_ascii_lowercase();
    let o = norm(origin);
    let live = state.shared.live();
    let d = &live.snapshot.dashboard;
    let own = [
        d.port.map(|p| format!("http://{}:{p}", d.host)),
        Some(format!("http://{}", state.api_addr)),
    ];
    own.iter().flatten().any(|s| norm(s) == o)
        || live.snapshot.trusted_origins.iter().any(|t| norm(t) == o)
        || super::dashboard::own_origin(origin, state.api_addr)
}

/// Compares without an early exit (the token must not leak through timing).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn reload_reply(r: Result<reload::Applied, ReloadError>) -> Response {
    match r {
        Ok(a) => Response::json(200, &a.to_json()),
        Err(ReloadError::Invalid(errs)) => Response::json(
            400,
            &serde_json::json!({
                "ok": false,
                "error": "invalid config; the old config stays",
                "errors": errs.0.iter().map(|e| serde_json::json!({
                    "path": e.path, "message": e.message,
                })).collect::<Vec<_>>(),
            }),
        ),
        Err(e @ ReloadError::Io(_)) => Response::error(500, e.to_string()),
        Err(e @ ReloadError::NoFile) => Response::error(409, e.to_string()),
        Err(e @ ReloadError::Draining) => Response::error(503, e.to_string()),
    }
}

/// `PUT /api/config`: validate, write the file atomically, apply.
fn put_config(state: Rc<ApiState>, req: Request) -> Reply {
    Box::pin(async move {
        let text = match String::from_utf8(req.body) {
            Ok(t) => t,
            Err(_) => return Response::error(400, "the config must be UTF-8 text"),
        };
        reload_reply(reload::reload(&state.reloader, Source::Text(text), "PUT /api/config").await)
    })
}

/// `POST /api/upgrade`: hand the listeners to a freshly started process
/// (see `upgrade.rs`); answers once it serves, or why it failed.
fn upgrade(state: Rc<ApiState>, _req: Request) -> Reply {
    Box::pin(async move {
        match state.upgrader.run("API").await {
            Ok(pid) => Response::json(
                200,
                &serde_json::json!({"ok": true, "old_pid": std::process::id(), "new_pid": pid}),
            ),
            Err(e) => Response::error(500, e),
        }
    })
}

/// `POST /api/reload`: re-read the config file.
fn reload_from_file(state: Rc<ApiState>, _req: Request) -> Reply {
    Box::pin(
        async move { reload_reply(reload::reload(&state.reloader, Source::File, "API").await) },
    )
}
