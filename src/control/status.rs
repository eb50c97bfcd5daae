//! What `GET /api/status` and `GET /metrics` render: the live snapshot's
//! routes, backends and counters as JSON and as Prometheus text (split from
//! `api.rs`, which routes and guards the requests).

use std::fmt::Write as _;

use crate::shared::epoch_ms;

use super::api::ApiState;

pub(super) fn status_json(state: &ApiState) -> String {
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
                        "tls": b.cfg.tls.as_ref().map(|t| t.counters.to_json()),
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
                "refused": t.refused,
                "max_connections": r.cfg.limits.max_connections,
                "middleware": r.cfg.middleware.iter().map(|m| m.name()).collect::<Vec<_>>(),
                "middleware_counters": r.chain.as_ref().map(|c| c.counters_json()),
                "access_log": r.log.is_some(),
                "backends": backends,
                "tls": r.cfg.tls.as_ref().map(|a| a.counters.to_json()),
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
        "generation": state.shared.generation(),
        "connections_open": state.shared.open_connections.load(std::sync::atomic::Ordering::Relaxed),
        "connections_refused": state.shared.refused_connections.load(std::sync::atomic::Ordering::Relaxed),
        "edge_refused": super::edge_metrics::status(&state.shared),
        "max_connections": live.snapshot.limits.max_connections,
        "max_connections_per_ip": live.snapshot.limits.max_connections_per_ip,
        "routes": routes,
        "config_source": state.fleet.as_ref().map(|f| f.status_json()),
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

pub(super) fn metrics(state: &ApiState) -> String {
    let live = state.shared.live();
    let mut out = String::with_capacity(2048);
    let families: [(&str, &str, &str); 7] = [
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
        (
            "ringmesh_route_refused_total",
            "counter",
            "Connections refused by a connection limit.",
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
                t.refused,
            ][i];
            let _ = writeln!(out, "{name}{{route=\"{}\"}} {v}", escape_label(&r.cfg.name));
        }
    }
    let _ = writeln!(
        out,
        "# HELP ringmesh_connections_refused_total Connections refused by any connection limit.\n# TYPE ringmesh_connections_refused_total counter\nringmesh_connections_refused_total {}",
        state.shared.refused_connections.load(std::sync::atomic::Ordering::Relaxed)
    );
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
    crate::tls::counters::write_metrics(&live.snapshot.routes, &mut out);
    crate::tls::client::write_metrics(&live.snapshot.routes, &mut out);
    super::edge_metrics::metrics(&state.shared, &mut out);
    crate::accesslog::metrics(&mut out);
    super::h2_metrics::write(&state.shared.h2, &mut out);
    super::sessions_api::metrics(&live, &mut out);
    super::middleware_metrics::write(&live, &mut out);
    out
}

pub(crate) fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
