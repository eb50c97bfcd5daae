//! Hot reload: validate a new config, bind what it adds, publish it.
//!
//! Three doors lead here: SIGHUP and `POST /api/reload` (re-read the file the
//! process runs with) and `PUT /api/config` (a new text, written to the file
//! atomically once valid). The new config is validated first; on any error
//! the old one stays and every error is returned with its JSON path.
//!
//! Applying: added addresses are bound on every worker by the control thread
//! (a bind failure is reported, the rest applies), the new [`Live`] is built
//! with the counters and backend states of unchanged routes carried over,
//! and published together with the new sockets. Workers pick it up on their
//! next tick: they start accepting on added addresses and stop on removed
//! ones, whose open connections finish on the route they started with. A
//! reload completes when every worker acknowledged the new generation.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{self, ConfigErrors, Snapshot};
use crate::shared::{Live, Shared};

use super::listeners::ListenerSet;
use super::systemd::Notifier;

/// How long a reload waits for every worker to pick up the new config.
const SETTLE: Duration = Duration::from_secs(10);

/// Why a reload was refused; the old config stays.
#[derive(Debug)]
pub enum ReloadError {
    /// The file could not be read or written.
    Io(String),
    /// The new config is invalid.
    Invalid(ConfigErrors),
    /// The process is shutting down.
    Draining,
    /// Reload from file asked of an engine that has no file.
    NoFile,
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Io(e) => f.write_str(e),
            ReloadError::Invalid(errs) => write!(f, "invalid config:\n{errs}"),
            ReloadError::Draining => f.write_str("shutting down; reload refused"),
            ReloadError::NoFile => f.write_str("this engine runs without a config file"),
        }
    }
}

/// What an applied reload changed.
#[derive(Debug, Default)]
pub struct Applied {
    pub generation: u64,
    pub added: Vec<SocketAddr>,
    pub removed: Vec<SocketAddr>,
    /// Added addresses that could not be bound: `(address, error)`.
    pub bind_errors: Vec<(SocketAddr, String)>,
    /// Changed settings that only a restart applies.
    pub restart_required: Vec<&'static str>,
    /// Every worker serves the new config.
    pub settled: bool,
}

impl Applied {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ok": true,
            "generation": self.generation,
            "added": self.added.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "removed": self.removed.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "bind_errors": self.bind_errors.iter().map(|(a, e)| serde_json::json!({
                "address": a.to_string(), "error": e,
            })).collect::<Vec<_>>(),
            "restart_required": self.restart_required,
            "settled": self.settled,
        })
    }
}

/// The control thread's reload state.
pub struct Reloader {
    pub shared: Arc<Shared>,
    pub listeners: ListenerSet,
    /// The config file (None for embedders that pass a snapshot).
    pub path: Option<PathBuf>,
    /// Text of the config now applied (served by `GET /api/config`).
    pub text: String,
    pub notify: Arc<Notifier>,
    /// Routes from the config source (etcd) now applied: they replace the
    /// file's routes on every reload (see `crate::fleet`).
    pub routes_overlay: Option<serde_json::Value>,
    /// Backends found in DNS for each `discover` entry (control/discovery.rs):
    /// every config published gets them, so a reload does not drop them.
    pub discovered: std::collections::HashMap<crate::discovery::EntryKey, Vec<config::Backend>>,
}

/// Where a reload's config comes from.
pub enum Source {
    /// Re-read the config file.
    File,
    /// A new text (PUT /api/config): validated, written to the file, applied.
    Text(String),
    /// New routes from the config source (etcd): the applied config with its
    /// `routes` replaced; the file is not written.
    Routes(serde_json::Value),
}

impl Reloader {
    /// Validates and applies a new config (synchronously: the caller then
    /// waits for the workers with [`settle`]).
    fn apply(&mut self, source: Source) -> Result<Applied, ReloadError> {
        if self.shared.draining() {
            return Err(ReloadError::Draining);
        }
        // The running config_source stays (a change takes a restart); its
        // routes replace the file's.
        let overlay = |text: String| {
            let text = config::source::keep_source(&text, &self.text).map_err(|message| {
                ReloadError::Invalid(ConfigErrors(vec![config::ConfigError {
                    path: String::new(),
                    message,
                }]))
            })?;
            match &self.routes_overlay {
                None => Ok(text),
                Some(r) => with_routes(&text, r),
            }
        };
        let mut new_overlay = None;
        let (snap, text) = match source {
            Source::Routes(routes) => {
                let text = with_routes(&self.text, &routes)?;
                let base = self
                    .path
                    .as_deref()
                    .map_or(std::path::Path::new("."), config::config_dir);
                let snap = config::parse_in(&text, base).map_err(ReloadError::Invalid)?;
                new_overlay = Some(routes);
                (snap, text)
            }
            Source::File => {
                let path = self.path.as_ref().ok_or(ReloadError::NoFile)?;
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ReloadError::Io(format!("{}: {e}", path.display())))?;
                let text = overlay(text)?;
                let snap = config::parse_in(&text, config::config_dir(path))
                    .map_err(ReloadError::Invalid)?;
                (snap, text)
            }
            Source::Text(local) => {
                let base = self
                    .path
                    .as_deref()
                    .map_or(std::path::Path::new("."), config::config_dir);
                let text = overlay(local.clone())?;
                let snap = config::parse_in(&text, base).map_err(ReloadError::Invalid)?;
                if let Some(path) = &self.path {
                    config::write_atomic(path, local.as_bytes()).map_err(|e| {
                        ReloadError::Io(format!("cannot write {}: {e}", path.display()))
                    })?;
                }
                (snap, text)
            }
        };
        let mut snap = snap;
        expand(&mut snap, &self.discovered);
        let old = self.shared.live();
        let restart_required = restart_required(&old.snapshot, &snap);
        let change = self.listeners.update(&snap);
        let live = Live::build(snap, self.shared.workers, Some(&old));
        let generation = self.shared.publish_with(Arc::new(live), change.handover);
        self.text = text;
        if new_overlay.is_some() {
            self.routes_overlay = new_overlay;
        }
        Ok(Applied {
            generation,
            added: change.added,
            removed: change.removed,
            bind_errors: change
                .failed
                .into_iter()
                .map(|(a, e)| (a, e.to_string()))
                .collect(),
            restart_required,
            settled: false,
        })
    }
}

impl Reloader {
    /// Publishes the running config again with the current DNS-discovered
    /// backends (no file read, no listener change); returns the generation.
    /// Open connections keep the snapshot they started with.
    pub fn republish(&mut self) -> u64 {
        let old = self.shared.live();
        let mut snap = old.snapshot.clone();
        expand(&mut snap, &self.discovered);
        let live = Live::build(snap, self.shared.workers, Some(&old));
        self.shared.publish(Arc::new(live))
    }
}

/// Replaces each route's discovered backends with the current sets.
fn expand(
    snap: &mut Snapshot,
    discovered: &std::collections::HashMap<crate::discovery::EntryKey, Vec<config::Backend>>,
) {
    for r in &mut snap.routes {
        if r.discover.is_empty() {
            continue;
        }
        r.backends.retain(|b| !b.discovered);
        for d in &r.discover {
            if let Some(bs) = discovered.get(&(r.key.clone(), d.dns.clone())) {
                for b in bs {
                    if !r.backends.iter().any(|o| o.name == b.name) {
                        r.backends.push(b.clone());
                    }
                }
            }
        }
    }
}

/// `text` with its routes replaced (config source); an error names no path.
fn with_routes(text: &str, routes: &serde_json::Value) -> Result<String, ReloadError> {
    config::source::with_routes(text, routes).map_err(|message| {
        ReloadError::Invalid(ConfigErrors(vec![config::ConfigError {
            path: String::new(),
            message,
        }]))
    })
}

/// Settings a running process cannot change.
fn restart_required(old: &Snapshot, new: &Snapshot) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.workers != new.workers {
        out.push("workers");
    }
    if old.dashboard != new.dashboard {
        out.push("dashboard_host/dashboard_port");
    }
    if old.pipe_size != new.pipe_size {
        out.push("pipe_size");
    }
    out
}

/// Waits until every worker serves generation `g` (bounded).
pub async fn settle(shared: &Shared, g: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !shared.all_applied(g) {
        if Instant::now() > deadline || shared.draining() {
            return shared.all_applied(g);
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// A whole reload: tell systemd, apply, wait for the workers, tell systemd
/// again, log the outcome.
pub async fn reload(
    rl: &Rc<RefCell<Reloader>>,
    source: Source,
    why: &str,
) -> Result<Applied, ReloadError> {
    let (notify, shared) = {
        let r = rl.borrow();
        (r.notify.clone(), r.shared.clone())
    };
    notify.reloading();
    let res = rl.borrow_mut().apply(source);
    match res {
        Ok(mut a) => {
            a.settled = settle(&shared, a.generation, SETTLE).await;
            notify.ready();
            for (addr, e) in &a.bind_errors {
                tracing::error!(%addr, "reload ({why}): cannot listen: {e}");
            }
            for s in &a.restart_required {
                tracing::warn!("reload ({why}): {s} changed; takes effect at the next restart");
            }
            if !a.settled {
                tracing::warn!("reload ({why}): some workers did not pick up the config in time");
            }
            tracing::info!(
                generation = a.generation,
                added = ?a.added,
                removed = ?a.removed,
                "config reloaded ({why})"
            );
            Ok(a)
        }
        Err(e) => {
            notify.ready();
            tracing::error!("reload ({why}) refused, old config stays: {e}");
            Err(e)
        }
    }
}
