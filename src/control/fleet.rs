//! The control thread's side of `crate::fleet`: applies the routes the etcd
//! watcher hands over, through the reload path, and serves `GET /api/fleet`.
//!
//! One revision at a time; when several queued up meanwhile only the newest
//! is applied. A revision is validated against the node's own file (its
//! listen_host, dashboard port) like any reload: a refused one is logged,
//! reported in `/api/status` (`config_source.rejected`) and in the node's
//! fleet entry, and the node keeps serving the last good routes. Every
//! applied revision is written to the local cache atomically, so a node
//! restarted while etcd is down serves it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use serde_json::json;

use crate::fleet::{routes_value, unix_now, FleetState, Rejected, Update};

use super::api::{ApiState, Endpoint, Handler, Request, Response};
use super::reload::{self, ReloadError, Reloader, Source};

/// The control loop's handle on the fleet side threads.
pub struct FleetControl {
    pub state: Arc<FleetState>,
    busy: Rc<Cell<bool>>,
    registry: Option<std::thread::JoinHandle<()>>,
}

impl FleetControl {
    /// Starts the watcher and the registry. Routes that bootstrap took from
    /// etcd or the cache become the reloader's overlay, so a SIGHUP re-reads
    /// the node's file but keeps them.
    pub fn start(
        state: Arc<FleetState>,
        shared: &Arc<crate::shared::Shared>,
        reloader: &Rc<RefCell<Reloader>>,
    ) -> FleetControl {
        if state.status().origin != "local" {
            let mut rl = reloader.borrow_mut();
            rl.routes_overlay = serde_json::from_str::<serde_json::Value>(&rl.text)
                .ok()
                .map(|v| v["routes"].clone());
        }
        let registry = crate::fleet::start(state.clone(), shared.clone());
        FleetControl {
            state,
            busy: Rc::new(Cell::new(false)),
            registry,
        }
    }

    /// Stops the side threads; waits (bounded) for the registry to revoke
    /// the node's lease, so the node leaves the fleet list at once.
    pub fn stop(&mut self) {
        self.state.stop();
        if let Some(h) = self.registry.take() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while !h.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }

    /// Called on every control tick: starts applying the newest queued revision.
    pub fn tick(&self, reloader: &Rc<RefCell<Reloader>>) {
        if self.busy.get() {
            return;
        }
        let mut newest: Option<Update> = None;
        while let Ok(u) = self.state.rx.try_recv() {
            newest = Some(u);
        }
        let Some(u) = newest else { return };
        if u.revision == self.state.status().applied_revision {
            return;
        }
        self.busy.set(true);
        let (state, busy, rl) = (self.state.clone(), self.busy.clone(), reloader.clone());
        monoio::spawn(async move {
            apply(&state, &rl, u).await;
            busy.set(false);
        });
    }
}

async fn apply(state: &FleetState, rl: &Rc<RefCell<Reloader>>, u: Update) {
    let why = format!("etcd {} revision {}", state.routes_key, u.revision);
    let reject = |errors: Vec<String>| {
        for e in &errors {
            tracing::error!("{why} refused, the last good routes stay: {e}");
        }
        state.status().rejected = Some(Rejected {
            revision: u.revision,
            errors,
        });
    };
    let routes = match routes_value(&u.value) {
        Ok(r) => r,
        Err(errors) => return reject(errors),
    };
    match reload::reload(rl, Source::Routes(routes.clone()), &why).await {
        Ok(_) => {
            state.write_cache(u.revision, &routes);
            let mut s = state.status();
            s.applied_revision = u.revision;
            s.origin = "etcd";
            if s.rejected.as_ref().is_some_and(|r| r.revision < u.revision) {
                s.rejected = None;
            }
        }
        // reload() logged these already.
        Err(ReloadError::Invalid(errs)) => {
            state.status().rejected = Some(Rejected {
                revision: u.revision,
                errors: errs.0.iter().map(|e| e.to_string()).collect(),
            })
        }
        Err(ReloadError::Draining) => {}
        Err(e) => reject(vec![e.to_string()]),
    }
}

/// `GET /api/fleet`, `GET /readyz`.
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: "GET",
        path: "/api/fleet",
        handler: Handler::Sync(fleet),
    },
    Endpoint {
        method: "GET",
        path: "/readyz",
        handler: Handler::Sync(ready),
    },
];

/// `GET /readyz`: 200 once the node serves the fleet's routes (from etcd or
/// its cache; always for a node without a config source), else 503. For a
/// load balancer's or Kubernetes' readiness probe: a node that came up with
/// neither etcd nor a cache serves only its file's routes and should get no
/// traffic yet; a node asked to stop answers 503 from the stop request on
/// (during `shutdown_delay` it still accepts). `/healthz` stays the liveness probe.
fn ready(state: &ApiState, _: &Request) -> Response {
    if state.shared.draining() || state.leaving.get() {
        return Response::text(503, "stopping\n");
    }
    match &state.fleet {
        Some(f) if f.status().origin == "local" => {
            Response::text(503, "no routes from the config source yet\n")
        }
        _ => Response::text(200, "ready\n"),
    }
}

fn fleet(state: &ApiState, _: &Request) -> Response {
    let Some(f) = &state.fleet else {
        return Response::json(
            200,
            &json!({"enabled": false, "nodes": [],
                "note": "this node has no config_source: it is not part of a fleet"}),
        );
    };
    // The registry lists the fleet while someone looks (from its next beat).
    f.fleet_asked
        .store(unix_now(), std::sync::atomic::Ordering::Relaxed);
    let (nodes, at) = {
        let s = f.status();
        (s.nodes.clone(), s.nodes_at)
    };
    Response::json(
        200,
        &json!({
            "enabled": true,
            "node_id": f.node_id,
            "source": f.status_json(),
            "listed_seconds_ago": at.map(|t| unix_now().saturating_sub(t)),
            "nodes": nodes,
        }),
    )
}
