//! The control thread's side of `crate::discovery`: turns DNS answers into
//! backends and publishes them; serves `GET /api/discovery`.
//!
//! The resolver thread starts with the first config that has a `discover`
//! entry (a config without one pays nothing). A changed set is published at
//! once through [`Reloader::republish`]; an unchanged one costs a comparison.
//! A failed lookup changes nothing but the entry's status (and one warning
//! per run of failures): the last good set stays.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use serde_json::json;

use crate::config::{Backend, DEFAULT_READY_TIMEOUT};
use crate::discovery::{self, DiscoveryState, Resolved, Target};
use crate::fleet::unix_now;
use crate::shared::Shared;

use super::api::{ApiState, Endpoint, Handler, Request, Response};
use super::reload::Reloader;

pub struct DiscoveryControl {
    state: Arc<DiscoveryState>,
    started: bool,
    generation: u64,
}

/// The backend a DNS record names.
pub fn backend(name: &str, t: &Target) -> Backend {
    Backend {
        name: format!("{name}[{}]", t.addr),
        cmd: None,
        args: Vec::new(),
        host: t.host.clone(),
        port: t.addr.port(),
        addr: t.addr,
        ready_timeout: DEFAULT_READY_TIMEOUT,
        weight: t.weight,
        priority: t.priority,
        discovered: true,
        send_proxy: None,
        h2c: false,
        tls: None,
    }
}

impl DiscoveryControl {
    pub fn new(state: Arc<DiscoveryState>) -> DiscoveryControl {
        DiscoveryControl {
            state,
            started: false,
            generation: 0,
        }
    }

    pub fn stop(&self) {
        self.state.stop();
    }

    /// Called on every control tick.
    pub fn tick(&mut self, shared: &Arc<Shared>, reloader: &Rc<RefCell<Reloader>>) {
        let g = shared.generation();
        if g != self.generation {
            self.generation = g;
            let entries = discovery::entries(shared);
            self.state
                .status()
                .retain(|k, _| entries.iter().any(|(e, _)| e == k));
            reloader
                .borrow_mut()
                .discovered
                .retain(|k, _| entries.iter().any(|(e, _)| e == k));
            if !self.started && !entries.is_empty() {
                self.started = true;
                discovery::start(self.state.clone(), shared.clone());
            }
        }
        let mut changed = false;
        while let Ok(r) = self.state.rx.try_recv() {
            changed |= self.take(r, reloader);
        }
        if changed {
            let g = reloader.borrow_mut().republish();
            self.generation = g;
        }
    }

    /// Records one lookup; true when the route's backends change.
    fn take(&self, r: Resolved, reloader: &Rc<RefCell<Reloader>>) -> bool {
        let Resolved { key, spec, result } = r;
        let mut st = self.state.status();
        let e = st.entry(key.clone()).or_default();
        e.lookups += 1;
        e.rtype = spec.rtype.as_str();
        e.resolver = spec.resolver.or_else(discovery::dns::system_resolver);
        match result {
            Err(msg) => {
                e.failures += 1;
                if e.last_error.is_none() {
                    tracing::warn!(
                        route = %key.0, dns = %key.1,
                        "DNS lookup failed, keeping the last good {} backend(s): {msg}",
                        e.targets.len()
                    );
                }
                e.last_error = Some(msg);
                false
            }
            Ok(targets) => {
                if e.last_error.take().is_some() {
                    tracing::info!(route = %key.0, dns = %key.1, "DNS lookups succeed again");
                }
                e.last_ok = Some(unix_now());
                let new: Vec<Backend> = targets.iter().map(|t| backend(&spec.name, t)).collect();
                let mut rl = reloader.borrow_mut();
                let old = rl.discovered.get(&key);
                if old == Some(&new) {
                    return false;
                }
                let names = |v: Option<&Vec<Backend>>| -> Vec<String> {
                    v.map(|v| v.iter().map(|b| b.addr.to_string()).collect())
                        .unwrap_or_default()
                };
                let (before, after) = (names(old), names(Some(&new)));
                let added: Vec<&String> = after.iter().filter(|a| !before.contains(a)).collect();
                let removed: Vec<&String> = before.iter().filter(|a| !after.contains(a)).collect();
                if new.is_empty() {
                    tracing::warn!(route = %key.0, dns = %key.1, "DNS lists no backend now");
                }
                tracing::info!(
                    route = %key.0, dns = %key.1, ?added, ?removed,
                    "discovered backends changed ({} now)", new.len()
                );
                e.targets = after;
                rl.discovered.insert(key, new);
                true
            }
        }
    }
}

/// `GET /api/discovery`.
pub const ENDPOINTS: &[Endpoint] = &[Endpoint {
    method: "GET",
    path: "/api/discovery",
    handler: Handler::Sync(list),
}];

fn list(state: &ApiState, _: &Request) -> Response {
    let now = unix_now();
    let st = state.discovery.status();
    let mut entries: Vec<_> = st
        .iter()
        .map(|((route, dns), e)| {
            json!({
                "route": route,
                "dns": dns,
                "type": e.rtype,
                "resolver": e.resolver.map(|r| r.to_string()),
                "backends": e.targets,
                "lookups": e.lookups,
                "failures": e.failures,
                "last_error": e.last_error,
                "last_ok_seconds_ago": e.last_ok.map(|t| now.saturating_sub(t)),
            })
        })
        .collect();
    entries.sort_by_key(|v| (v["route"].to_string(), v["dns"].to_string()));
    Response::json(200, &json!({ "entries": entries }))
}
