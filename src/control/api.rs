//! The status API on `dashboard_host:dashboard_port`, served by the control
//! thread (never on the data path): `/healthz`, `/api/status`, `/api/config`,
//! `/metrics` (Prometheus text exposition).
//!
//! Read-only for now; the mutating calls (kill, PUT config) and the dashboard
//! page arrive with the control-plane work. Each request is parsed with
//! httparse, bounded in size and time, and answered with `Connection: close`.

use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

use crate::shared::{epoch_ms, Shared};

/// Largest request head the API accepts.
const MAX_HEAD: usize = 16 * 1024;
/// Time a client gets to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// What the API reports about the process.
pub struct ApiState {
    pub shared: Arc<Shared>,
    pub started: Instant,
    pub config_text: String,
    pub driver: &'static str,
    /// Backend processes and health (control thread only).
    pub procs: Rc<crate::control::supervisor::Registry>,
}

/// Serves the API until the listener fails (the control runtime is dropped at exit).
pub async fn serve(listener: TcpListener, state: Rc<ApiState>) {
    loop {
        match listener.accept().await {
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

async fn handle(mut stream: TcpStream, state: Rc<ApiState>) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    // The control thread may take its time: a timed-out read here drops the
    // connection, and losing bytes of an unanswered request is fine.
    let read = monoio::time::timeout(HEAD_TIMEOUT, async {
        loop {
            if buf.len() >= MAX_HEAD {
                return Err(431u16);
            }
            let chunk = Vec::with_capacity(4096);
            let (r, chunk) = stream.read(chunk).await;
            match r {
                Ok(0) | Err(_) => return Err(0),
                Ok(_) => buf.extend_from_slice(&chunk),
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(_)) => {
                    return Ok((
                        req.method.unwrap_or("").to_string(),
                        req.path.unwrap_or("").to_string(),
                    ))
                }
                Ok(httparse::Status::Partial) => continue,
                Err(_) => return Err(400),
            }
        }
    })
    .await;
    let (status, ctype, body) = match read {
        Err(_) => (408, "text/plain", "request timeout\n".to_string()),
        Ok(Err(0)) => return,
        Ok(Err(code)) => (code, "text/plain", "bad request\n".to_string()),
        Ok(Ok((method, path))) => route(&state, &method, &path),
    };
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n{}\r\n",
        reason(status),
        body.len(),
        super::dashboard::SECURITY_HEADERS
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    let _ = monoio::time::timeout(HEAD_TIMEOUT, stream.write_all(out)).await;
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

fn route(state: &ApiState, method: &str, path: &str) -> (u16, &'static str, String) {
    if let Some(reply) = super::procs_api::route(state, method, path) {
        return reply;
    }
    if let Some(reply) = super::dashboard::route(method, path) {
        return reply;
    }
    let path = path.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return (405, "text/plain", "read-only API: use GET\n".into());
    }
    match path {
        "/healthz" => (200, "text/plain", "ok\n".into()),
        "/api/status" => (200, "application/json", status_json(state)),
        "/api/config" => (200, "application/json", state.config_text.clone()),
        "/metrics" => (200, "text/plain; version=0.0.4", metrics(state)),
        _ => (404, "text/plain", format!("no such endpoint: {path}\n")),
    }
}

fn status_json(state: &ApiState) -> String {
    let live = state.shared.live();
    let now = epoch_ms();
    let routes: Vec<serde_json::Value> = live
        .routes
        .iter()
        .map(|r| {
            let t = r.totals();
            let backends: Vec<serde_json::Value> = r
                .backends
                .iter()
                .map(|b| {
                    let (health, process) =
                        super::procs_api::backend_fields(&state.procs, &b.state);
                    serde_json::json!({
                        "health": health,
                        "process": process,
                        "name": b.cfg.name,
                        "address": b.cfg.addr.to_string(),
                        "cmd": b.cfg.cmd,
                        "active": b.state.active.load(std::sync::atomic::Ordering::Relaxed),
                        "connect_failures": b.state.connect_failures.load(std::sync::atomic::Ordering::Relaxed),
                        "status": if b.state.available(now) { "up" } else { "cooldown" },
                    })
                })
                .collect();
            serde_json::json!({
                "key": r.cfg.key,
                "name": r.cfg.name,
                "protocol": r.cfg.protocol.as_str(),
                "listen": r.cfg.listen.to_string(),
                "load_balance": r.cfg.balance.as_str(),
                "hosts": r.cfg.hosts,
                "connections_active": t.active,
                "connections_total": t.total,
                "requests": t.requests,
                "bytes_in": t.bytes_in,
                "bytes_out": t.bytes_out,
                "errors": t.errors,
                "backends": backends,
            })
        })
        .collect();
    let v = serde_json::json!({
        "service_name": live.snapshot.service_name,
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
        "workers": state.shared.workers,
        "io_driver": state.driver,
        "draining": state.shared.draining(),
        "routes": routes,
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

fn metrics(state: &ApiState) -> String {
    let live = state.shared.live();
    let mut out = String::with_capacity(2048);
    let families: [(&str, &str, &str); 6] = [
        (
            "ringmesh_route_connections_active",
            "gauge",
            "Open client connections.",
        ),
        (
            "ringmesh_route_connections_total",
            "counter",
            "Client connections accepted.",
        ),
        (
            "ringmesh_route_requests_total",
            "counter",
            "HTTP requests forwarded.",
        ),
        (
            "ringmesh_route_bytes_in_total",
            "counter",
            "Bytes from clients to backends.",
        ),
        (
            "ringmesh_route_bytes_out_total",
            "counter",
            "Bytes from backends to clients.",
        ),
        (
            "ringmesh_route_errors_total",
            "counter",
            "Connections that failed on the backend side.",
        ),
    ];
    let totals: Vec<_> = live.routes.iter().map(|r| (r, r.totals())).collect();
    for (i, (name, kind, help)) in families.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (r, t) in &totals {
            let v = [
                t.active,
                t.total,
                t.requests,
                t.bytes_in,
                t.bytes_out,
                t.errors,
            ][i];
            let _ = writeln!(out, "{name}{{route=\"{}\"}} {v}", escape_label(&r.cfg.name));
        }
    }
    let _ = writeln!(
        out,
        "# HELP ringmesh_backend_connections_active Open upstream connections.\n# TYPE ringmesh_backend_connections_active gauge"
    );
    for r in &live.routes {
        for b in &r.backends {
            let _ = writeln!(
                out,
                "ringmesh_backend_connections_active{{route=\"{}\",backend=\"{}\"}} {}",
                escape_label(&r.cfg.name),
                escape_label(&b.cfg.name),
                b.state.active.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    }
    super::procs_api::metrics(&state.procs, &live, &mut out);
    out
}

pub(crate) fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
