//! API endpoints for backend processes and health, hooked into `api.rs`'s
//! dispatch:
//!
//! - `GET /api/logs/<route>?since=<seq>`: captured output of the route's processes.
//! - `POST /api/processes/<route>/<backend>/kill`, `POST /api/processes/<route>/kill`:
//!   stop a process (SIGTERM, SIGKILL after the grace period); the next
//!   connection starts it again.
//! - per backend `health` and `process` objects for `GET /api/status` ([`backend_fields`]).
//!
//! `<route>` is a route's key (`8080`) or its name; path segments are
//! percent-decoded. Errors are JSON `{"error": "..."}` with 400, 404 or 405.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::control::api::ApiState;
use crate::control::supervisor::Registry;
use crate::shared::{BackendState, Live, LiveRoute};

type Reply = (u16, &'static str, String);

/// Answers the requests this module owns; `None` for every other path.
pub fn route(state: &ApiState, method: &str, target: &str) -> Option<Reply> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    if let Some(rest) = path.strip_prefix("/api/logs/") {
        if method != "GET" && method != "HEAD" {
            return Some(error(405, "use GET for /api/logs/<route>"));
        }
        return Some(logs(state, rest, query));
    }
    if let Some(rest) = path.strip_prefix("/api/processes/") {
        if method != "POST" {
            return Some(error(
                405,
                "use POST for /api/processes/<route>[/<backend>]/kill",
            ));
        }
        return Some(kill(state, rest));
    }
    None
}

fn error(status: u16, msg: &str) -> Reply {
    (status, "application/json", body(&json!({ "error": msg })))
}

fn body(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// Decodes `%XX` escapes; `None` for a bad escape or invalid UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A route by key, else by name.
fn find_route<'a>(live: &'a Live, name: &str) -> Option<&'a Arc<LiveRoute>> {
    live.routes
        .iter()
        .find(|r| r.cfg.key == name)
        .or_else(|| live.routes.iter().find(|r| r.cfg.name == name))
}

fn logs(state: &ApiState, rest: &str, query: &str) -> Reply {
    let Some(name) = percent_decode(rest).filter(|n| !n.is_empty() && !n.contains('/')) else {
        return error(400, "expected /api/logs/<route>");
    };
    let mut since = 0u64;
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        match kv.split_once('=') {
            Some(("since", v)) => match v.parse() {
                Ok(n) => since = n,
                Err(_) => return error(400, &format!("since={v:?} is not a sequence number")),
            },
            _ => {
                return error(
                    400,
                    &format!("unknown query parameter {kv:?}; expected since=<seq>"),
                )
            }
        }
    }
    let live = state.shared.live();
    let Some(r) = find_route(&live, &name) else {
        return error(404, &format!("no route {name:?}"));
    };
    let (lines, next) = state
        .procs
        .logs(&r.cfg.key)
        .map(|ring| ring.since(since))
        .unwrap_or_default();
    let lines: Vec<Value> = lines
        .into_iter()
        .map(|l| {
            json!({
                "seq": l.seq,
                "ts_ms": l.ts_ms,
                "backend": l.backend,
                "stream": l.stream.as_str(),
                "line": l.line,
            })
        })
        .collect();
    (
        200,
        "application/json",
        body(&json!({ "route": r.cfg.name, "key": r.cfg.key, "next": next, "lines": lines })),
    )
}

fn kill(state: &ApiState, rest: &str) -> Reply {
    let parts: Vec<&str> = rest.split('/').collect();
    let (route, backend) = match parts.as_slice() {
        [r, "kill"] => (*r, None),
        [r, b, "kill"] => (*r, Some(*b)),
        _ => {
            return error(
                404,
                "expected /api/processes/<route>/kill or /api/processes/<route>/<backend>/kill",
            )
        }
    };
    let (Some(route), Some(backend)) = (
        percent_decode(route),
        backend.map(percent_decode).unwrap_or(Some(String::new())),
    ) else {
        return error(400, "bad percent-encoding in the path");
    };
    let live = state.shared.live();
    let Some(r) = find_route(&live, &route) else {
        return error(404, &format!("no route {route:?}"));
    };
    let targets: Vec<_> = r
        .backends
        .iter()
        .filter(|b| backend.is_empty() || b.cfg.name == backend)
        .collect();
    if targets.is_empty() {
        return error(
            404,
            &format!("route {:?} has no backend {backend:?}", r.cfg.name),
        );
    }
    if !backend.is_empty() && targets.iter().all(|b| b.cfg.cmd.is_none()) {
        return error(
            404,
            &format!(
                "backend {backend:?} of route {:?} has no cmd: it is an address ringmesh does not run",
                r.cfg.name
            ),
        );
    }
    let mut killed = Vec::new();
    for b in targets.iter().filter(|b| b.cfg.cmd.is_some()) {
        let Some(e) = state.procs.find(&b.state) else {
            continue;
        };
        let pid = e.proc.borrow().pid;
        if pid.is_some() {
            e.kill.set(true);
        }
        tracing::info!(route = %r.cfg.name, backend = %b.cfg.name, ?pid, "kill requested through the API");
        killed.push(json!({
            "backend": b.cfg.name,
            "pid": pid,
            "was_running": pid.is_some(),
        }));
    }
    (
        200,
        "application/json",
        body(&json!({ "route": r.cfg.name, "killed": killed })),
    )
}

/// The `health` and `process` fields of a backend in `/api/status`.
pub fn backend_fields(reg: &Registry, state: &Arc<BackendState>) -> (Value, Value) {
    let Some(e) = reg.find(state) else {
        return (Value::Null, Value::Null);
    };
    e.refresh_status();
    let h = e.health.borrow().clone();
    let health = json!({
        "status": h.status,
        "since_seconds": secs(h.since.elapsed()),
        "latency_ms": h.latency.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
        "detail": h.detail,
    });
    if !e.managed() {
        return (health, Value::Null);
    }
    let p = e.proc.borrow();
    let process = json!({
        "pid": p.pid,
        "state": e.state.proc_state().as_str(),
        "uptime_seconds": p.started.map(|t| secs(t.elapsed())),
        "starts": p.starts,
        "restarts": p.starts.saturating_sub(1),
        "crashes": p.crashes,
        "last_exit": p.last_exit,
        "last_error": p.last_error,
        "ready_ms": p.ready_after.map(|d| d.as_millis() as u64),
    });
    (health, process)
}

/// Prometheus families for health and processes, appended to `/metrics`.
pub fn metrics(reg: &Registry, live: &Live, out: &mut String) {
    use crate::control::status::escape_label;
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "# HELP ringmesh_backend_healthy 1 when a backend may get new connections (healthy, unknown, or a stopped process that starts on demand), 0 when its active checks failed.\n# TYPE ringmesh_backend_healthy gauge"
    );
    let mut procs = Vec::new();
    for r in &live.routes {
        for b in &r.backends {
            let labels = format!(
                "route=\"{}\",backend=\"{}\"",
                escape_label(&r.cfg.name),
                escape_label(&b.cfg.name)
            );
            let _ = writeln!(
                out,
                "ringmesh_backend_healthy{{{labels}}} {}",
                u8::from(b.state.health_ok())
            );
            if let Some(e) = reg.find(&b.state).filter(|e| e.managed()) {
                let p = e.proc.borrow();
                procs.push((labels, b.state.ready(), p.starts, p.crashes));
            }
        }
    }
    let families: [(&str, &str, &str); 3] = [
        (
            "ringmesh_backend_process_running",
            "gauge",
            "1 while the backend's process runs and accepts.",
        ),
        (
            "ringmesh_backend_process_starts_total",
            "counter",
            "Processes started for the backend.",
        ),
        (
            "ringmesh_backend_process_crashes_total",
            "counter",
            "Unexpected exits of the backend's process.",
        ),
    ];
    for (i, (name, kind, help)) in families.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, running, starts, crashes) in &procs {
            let v = [u64::from(*running), *starts, *crashes][i];
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

fn secs(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(
            percent_decode("127.0.0.1:80").as_deref(),
            Some("127.0.0.1:80")
        );
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
