//! Beyond one machine: routes from etcd, and the fleet of nodes that serve them.
//!
//! ```text
//!  main: load the local file -> bootstrap(): routes from etcd (else the local
//!        cache of the last good ones, else the file's own) -> Engine
//!  watcher thread (watch.rs):  range <prefix>routes, then watch it; each revision
//!        -> channel -> control thread: validate + apply through the reload path
//!        (control/fleet.rs), cache written atomically; etcd lost: keep serving,
//!        reconnect with backoff, resume from the last revision (re-read after
//!        compaction)
//!  registry thread (registry.rs): <prefix>nodes/<node-id> under a 10 s lease,
//!        kept alive; lists the fleet for GET /api/fleet
//! ```
//! Both threads block on a small HTTP/1.1 client ([`etcd`]), over TLS for
//! `https://` endpoints ([`tls`]: rustls, `ca_file`, client certificate);
//! neither touches a worker. The control thread only reads [`FleetState`]
//! and a channel.

pub mod etcd;
pub mod registry;
pub mod tls;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::config::source::{with_routes, EtcdSource};
use crate::config::{self, Snapshot};
use crate::shared::Shared;

/// Lease TTL of a node's key: a node that stops renewing disappears after this.
pub const NODE_TTL: u64 = 10;

/// A revision of the routes key, sent by the watcher to the control thread.
#[derive(Debug, Clone)]
pub struct Update {
    /// The key's mod_revision.
    pub revision: i64,
    /// The key's value: the JSON of a `routes` object.
    pub value: Vec<u8>,
}

/// A revision that failed validation: the node serves the previous one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub revision: i64,
    pub errors: Vec<String>,
}

/// What the API shows about the config source and the fleet.
#[derive(Debug, Clone, Default)]
pub struct SourceStatus {
    /// The watch is open.
    pub connected: bool,
    pub endpoint: Option<String>,
    /// The last connection problem (cleared when the watch is open again).
    pub last_error: Option<String>,
    /// Revision of the routes served (0: none from etcd).
    pub applied_revision: i64,
    /// Where the served routes came from: "etcd", "cache" or "local".
    pub origin: &'static str,
    /// Last store revision the watcher saw (it resumes after it).
    pub seen_revision: i64,
    /// The newest revision refused, if it is newer than the applied one.
    pub rejected: Option<Rejected>,
    /// Our node key is registered under a live lease.
    pub registered: bool,
    /// The fleet as last listed from etcd, and when (unix seconds).
    pub nodes: Vec<Value>,
    pub nodes_at: Option<u64>,
}

/// State shared by the watcher, the registry and the control thread.
#[derive(Debug)]
pub struct FleetState {
    pub cfg: EtcdSource,
    pub node_id: String,
    /// `<prefix>routes`
    pub routes_key: String,
    /// `<prefix>nodes/`
    pub nodes_prefix: String,
    pub cache_path: PathBuf,
    /// listen_host and the API address, advertised in the node key.
    pub address: String,
    pub api: Option<String>,
    pub started_unix: u64,
    pub status: Mutex<SourceStatus>,
    /// Unix seconds of the last `GET /api/fleet` (the registry lists the
    /// fleet only while someone looks).
    pub fleet_asked: std::sync::atomic::AtomicU64,
    stop: AtomicBool,
    tx: crossbeam_channel::Sender<Update>,
    pub rx: crossbeam_channel::Receiver<Update>,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl FleetState {
    pub fn status(&self) -> std::sync::MutexGuard<'_, SourceStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Someone asked for the fleet list within `window`.
    pub fn fleet_wanted(&self, window: Duration) -> bool {
        let at = self.fleet_asked.load(Ordering::Relaxed);
        at != 0 && unix_now().saturating_sub(at) <= window.as_secs()
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Ends the side threads (they notice within a poll period; the registry
    /// revokes the node's lease so it leaves the fleet at once).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Writes the applied routes to the cache file (atomically).
    pub fn write_cache(&self, revision: i64, routes: &Value) {
        let body = json!({"revision": revision, "key": self.routes_key, "routes": routes});
        let text = serde_json::to_string_pretty(&body).unwrap_or_default();
        if let Err(e) = config::write_atomic(&self.cache_path, text.as_bytes()) {
            tracing::warn!(
                "cannot write the routes cache {}: {e}",
                self.cache_path.display()
            );
        }
    }

    /// `/api/status`'s `config_source` and `/api/fleet`'s `source`.
    pub fn status_json(&self) -> Value {
        let s = self.status();
        json!({
            "type": "etcd",
            "endpoints": self.cfg.endpoints,
            "key": self.routes_key,
            "node_id": self.node_id,
            "connected": s.connected,
            "endpoint": s.endpoint,
            "last_error": s.last_error,
            "origin": s.origin,
            "revision": s.applied_revision,
            "seen_revision": s.seen_revision,
            "rejected": s.rejected.as_ref().map(|r| json!({
                "revision": r.revision, "errors": r.errors,
            })),
            "registered": s.registered,
            "cache_file": self.cache_path.display().to_string(),
        })
    }
}

/// `<config>.routes-cache.json` beside the config file.
fn default_cache(config_path: &Path) -> PathBuf {
    let mut name = config_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "config.json".into());
    name.push(".routes-cache.json");
    config_path.with_file_name(name)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node".into())
}

/// Validates routes (a `routes` value) over the local config text (relative
/// paths, e.g. certificate files, start at `base`: the local file's directory).
pub fn merge(local: &str, routes: &Value, base: &Path) -> Result<(Snapshot, String), Vec<String>> {
    let text = with_routes(local, routes).map_err(|e| vec![e])?;
    match config::parse_in(&text, base) {
        Ok(s) => Ok((s, text)),
        Err(errs) => Err(errs.0.iter().map(|e| e.to_string()).collect()),
    }
}

/// Parses a routes value read from etcd or the cache.
pub fn routes_value(bytes: &[u8]) -> Result<Value, Vec<String>> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(other) => Err(vec![format!(
            "routes: expected an object of routes, found {}",
            other.to_string().chars().take(60).collect::<String>()
        )]),
        Err(e) => Err(vec![format!("routes: invalid JSON: {e}")]),
    }
}

/// The config a node starts with when its file names a `config_source`:
/// the routes at `<prefix>routes` if etcd answers (within a few seconds),
/// else the last good routes cached on disk, else the file's own routes
/// while the watcher keeps trying. Returns the state the engine's side
/// threads share; `None` when the file names no source.
pub fn bootstrap(
    snap: Snapshot,
    text: String,
    config_path: &Path,
) -> (Snapshot, String, Option<Arc<FleetState>>) {
    let Some(src) = snap.config_source.clone() else {
        return (snap, text, None);
    };
    let cfg = src.etcd;
    let (tx, rx) = crossbeam_channel::unbounded();
    let address = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["listen_host"].as_str().map(str::to_string))
        .filter(|h| !h.is_empty() && h != "0.0.0.0" && h != "::")
        .unwrap_or_else(hostname);
    let api = snap
        .dashboard
        .port
        .map(|p| format!("{}:{p}", snap.dashboard.host));
    let node_id = cfg
        .node_id
        .clone()
        .unwrap_or_else(|| match snap.dashboard.port {
            Some(p) => format!("{}-{p}", hostname()),
            None => format!("{}-{}", hostname(), std::process::id()),
        });
    let state = Arc::new(FleetState {
        routes_key: format!("{}routes", cfg.prefix),
        nodes_prefix: format!("{}nodes/", cfg.prefix),
        cache_path: cfg
            .cache_file
            .clone()
            .unwrap_or_else(|| default_cache(config_path)),
        node_id,
        address,
        api,
        started_unix: unix_now(),
        status: Mutex::new(SourceStatus {
            origin: "local",
            ..Default::default()
        }),
        fleet_asked: std::sync::atomic::AtomicU64::new(0),
        stop: AtomicBool::new(false),
        tx,
        rx,
        cfg,
    });
    let client = etcd::Etcd::new(&state.cfg);
    match client.get(&state.routes_key) {
        Ok((rev, kv)) => {
            {
                let mut s = state.status();
                s.seen_revision = rev;
                s.endpoint = Some(client.endpoint().to_string());
            }
            match kv {
                None => {
                    // etcd is the truth: no key means no fleet routes yet.
                    tracing::warn!(
                        key = %state.routes_key,
                        "etcd has no routes yet; serving the local file's {} route(s) until a push",
                        snap.routes.len()
                    );
                    return (snap, text, Some(state));
                }
                Some(kv) => {
                    let merged = routes_value(&kv.value).and_then(|r| {
                        merge(&text, &r, config::config_dir(config_path)).map(|m| (m, r))
                    });
                    match merged {
                        Ok(((s2, t2), routes)) => {
                            tracing::info!(
                                revision = kv.mod_revision,
                                routes = s2.routes.len(),
                                "routes from etcd {}",
                                state.routes_key
                            );
                            state.write_cache(kv.mod_revision, &routes);
                            let mut s = state.status();
                            s.applied_revision = kv.mod_revision;
                            s.origin = "etcd";
                            drop(s);
                            return (s2, t2, Some(state));
                        }
                        Err(errors) => {
                            for e in &errors {
                                tracing::error!(
                                    revision = kv.mod_revision,
                                    "routes from etcd refused: {e}"
                                );
                            }
                            state.status().rejected = Some(Rejected {
                                revision: kv.mod_revision,
                                errors,
                            });
                        }
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(
                "{e}; trying the routes cache {}",
                state.cache_path.display()
            );
            state.status().last_error = Some(e.to_string());
        }
    }
    // etcd did not give us valid routes: the last good ones from disk.
    match read_cache(&state.cache_path).and_then(|(rev, routes)| {
        merge(&text, &routes, config::config_dir(config_path))
            .map(|m| (rev, m))
            .map_err(|e| e.join("; "))
    }) {
        Ok((rev, (s2, t2))) => {
            tracing::warn!(
                revision = rev,
                routes = s2.routes.len(),
                "serving the cached routes from {} until etcd answers",
                state.cache_path.display()
            );
            let mut s = state.status();
            s.applied_revision = rev;
            s.origin = "cache";
            drop(s);
            (s2, t2, Some(state))
        }
        Err(why) => {
            tracing::warn!(
                "no usable routes cache ({why}); serving the local file's {} route(s); \
                 the watcher retries etcd with backoff",
                snap.routes.len()
            );
            (snap, text, Some(state))
        }
    }
}

fn read_cache(path: &Path) -> Result<(i64, Value), String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let rev = v["revision"].as_i64().unwrap_or(0);
    match v.get("routes") {
        Some(r @ Value::Object(_)) => Ok((rev, r.clone())),
        _ => Err(format!("{}: no routes object", path.display())),
    }
}

/// Starts the watcher and registry threads (from the control thread, once
/// the engine's shared state exists); returns the registry's handle.
pub fn start(state: Arc<FleetState>, shared: Arc<Shared>) -> Option<std::thread::JoinHandle<()>> {
    let w = state.clone();
    if let Err(e) = std::thread::Builder::new()
        .name("ringmesh-etcd-watch".into())
        .spawn(move || watch::run(w))
    {
        tracing::error!("cannot start the etcd watcher: {e}");
    }
    std::thread::Builder::new()
        .name("ringmesh-etcd-node".into())
        .spawn(move || registry::run(state, shared))
        .inspect_err(|e| tracing::error!("cannot start the etcd node registry: {e}"))
        .ok()
}

/// Sleeps `d` in short steps; false when the state was stopped meanwhile.
pub(crate) fn nap(state: &FleetState, d: Duration) -> bool {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end {
        if state.stopping() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100).min(end - std::time::Instant::now()));
    }
    !state.stopping()
}

/// `ringmesh run --etcd URL[,URL] [--etcd-prefix P]`: the config text with
/// its `config_source.etcd` endpoints (and prefix) set from the flags.
pub fn with_etcd_flags(text: &str, urls: &str, prefix: Option<&str>) -> Result<String, String> {
    let mut v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let top = v.as_object_mut().ok_or("the config is not a JSON object")?;
    let cs = top
        .entry("config_source")
        .or_insert_with(|| json!({"etcd": {}}));
    if !cs["etcd"].is_object() {
        cs["etcd"] = json!({});
    }
    let endpoints: Vec<Value> = urls
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Value::String(s.to_string()))
        .collect();
    cs["etcd"]["endpoints"] = Value::Array(endpoints);
    if let Some(p) = prefix {
        cs["etcd"]["prefix"] = Value::String(p.to_string());
    }
    serde_json::to_string_pretty(&v).map_err(|e| e.to_string())
}

/// `run --etcd-ca/--etcd-cert/--etcd-key`: sets `config_source.etcd`'s
/// `ca_file`, `cert_file`, `key_file` (absolute: a flag's relative path is
/// relative to the working directory, not to the config file). Call after
/// [`with_etcd_flags`].
pub fn with_etcd_tls_flags(text: &str, files: [Option<&Path>; 3]) -> Result<String, String> {
    if files.iter().all(Option::is_none) {
        return Ok(text.to_string());
    }
    let mut v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let cwd = std::env::current_dir().map_err(|e| format!("working directory: {e}"))?;
    for (field, f) in ["ca_file", "cert_file", "key_file"].iter().zip(files) {
        if let Some(p) = f {
            v["config_source"]["etcd"][*field] = Value::String(cwd.join(p).display().to_string());
        }
    }
    serde_json::to_string_pretty(&v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_tls_flags_set_absolute_files() {
        let t = with_etcd_flags("{}", "https://a:1", None).unwrap();
        let t = with_etcd_tls_flags(&t, [Some(Path::new("ca.pem")), None, None]).unwrap();
        let v: Value = serde_json::from_str(&t).unwrap();
        let ca = v["config_source"]["etcd"]["ca_file"].as_str().unwrap();
        assert!(
            Path::new(ca).is_absolute() && ca.ends_with("/ca.pem"),
            "{ca}"
        );
        assert!(v["config_source"]["etcd"].get("cert_file").is_none());
        assert_eq!(with_etcd_tls_flags("{}", [None; 3]).unwrap(), "{}");
    }

    #[test]
    fn etcd_flags_set_the_source() {
        let t = with_etcd_flags(r#"{"workers": 1}"#, "http://a:1,http://b:2", Some("/x/")).unwrap();
        let s = config::parse(&t).unwrap().config_source.unwrap().etcd;
        assert_eq!(
            (s.endpoints, s.prefix.as_str()),
            (vec!["a:1".into(), "b:2".into()], "/x/")
        );
    }

    #[test]
    fn merge_validates_routes_over_the_local_file() {
        let local = r#"{"listen_host": "127.0.0.3", "dashboard_port": 9000, "routes": {}}"#;
        let (s, _) = merge(
            local,
            &json!({"8080": {"backends": [{"internal_port": 1}]}}),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(s.routes[0].listen.to_string(), "127.0.0.3:8080");
        let e = merge(
            local,
            &json!({"8080": {"backends": [{"internal_port": "x"}]}}),
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            e[0].contains("routes.\"8080\".backends[0].internal_port"),
            "{e:?}"
        );
        assert!(routes_value(b"[1]").is_err() && routes_value(b"{").is_err());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            default_cache(&dir.path().join("n.json")),
            dir.path().join("n.json.routes-cache.json")
        );
    }
}
