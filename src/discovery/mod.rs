//! Backends from DNS: `discover` entries resolved on a side thread, never on
//! a worker (monoio's `connect("host:port")` would block the worker's whole
//! runtime in getaddrinfo).
//!
//! ```text
//!  resolver thread: every `interval` per entry (sooner when the records'
//!      TTL ends first, at most every 1 s) -> dns::resolve_ttl -> channel
//!  control thread (control/discovery.rs): a changed set -> the route's
//!      backends = static ones + one per record -> internal publish through
//!      the reload machinery (no listener change, no file read)
//! ```
//! Records that appear become backends that balancing, health checks and
//! metrics treat like static ones; records that vanish stop getting new
//! connections while open ones finish on the snapshot they started with. A
//! failed lookup keeps the last good set and is reported (`/api/discovery`).

pub mod dns;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::discover::Discover;
use crate::shared::Shared;

pub use dns::Target;

/// Which entry a result belongs to: (route key, DNS name).
pub type EntryKey = (String, String);

/// One lookup's outcome, sent to the control thread.
#[derive(Debug)]
pub struct Resolved {
    pub key: EntryKey,
    pub spec: Discover,
    pub result: Result<Vec<Target>, String>,
}

/// What the API shows about one entry.
#[derive(Debug, Clone, Default)]
pub struct EntryStatus {
    pub resolver: Option<SocketAddr>,
    pub rtype: &'static str,
    /// Backends in the set now served.
    pub targets: Vec<String>,
    pub lookups: u64,
    pub failures: u64,
    /// The last failure, cleared by the next success.
    pub last_error: Option<String>,
    /// Unix seconds of the last successful lookup.
    pub last_ok: Option<u64>,
}

/// Shared by the resolver thread and the control thread.
#[derive(Debug)]
pub struct DiscoveryState {
    pub status: Mutex<HashMap<EntryKey, EntryStatus>>,
    stop: AtomicBool,
    tx: crossbeam_channel::Sender<Resolved>,
    pub rx: crossbeam_channel::Receiver<Resolved>,
}

impl Default for DiscoveryState {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        DiscoveryState {
            status: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
            tx,
            rx,
        }
    }
}

impl DiscoveryState {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
    pub fn status(&self) -> std::sync::MutexGuard<'_, HashMap<EntryKey, EntryStatus>> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every `discover` entry of a config.
pub fn entries(shared: &Shared) -> Vec<(EntryKey, Discover)> {
    shared
        .live()
        .snapshot
        .routes
        .iter()
        .flat_map(|r| {
            r.discover
                .iter()
                .map(move |d| ((r.key.clone(), d.dns.clone()), d.clone()))
        })
        .collect()
}

/// The resolver thread: looks up each entry on its interval, follows config changes.
pub fn run(state: Arc<DiscoveryState>, shared: Arc<Shared>) {
    let system = dns::system_resolver();
    let mut generation = 0;
    let mut due: HashMap<EntryKey, Instant> = HashMap::new();
    let mut specs: Vec<(EntryKey, Discover)> = Vec::new();
    while !state.stopping() && !shared.draining() {
        if shared.generation() != generation {
            generation = shared.generation();
            specs = entries(&shared);
            due.retain(|k, _| specs.iter().any(|(s, _)| s == k));
        }
        let now = Instant::now();
        for (key, d) in &specs {
            if due.get(key).is_some_and(|t| *t > now) {
                continue;
            }
            due.insert(key.clone(), now + d.interval);
            let result = match d.resolver.or(system) {
                None => Err(
                    "no resolver: set discover.resolver (no nameserver in /etc/resolv.conf)".into(),
                ),
                // Bounded: a dead server must not stall the other entries long.
                Some(server) => dns::resolve_ttl(d, server, d.interval.min(Duration::from_secs(2)))
                    .map(|(targets, ttl)| {
                        due.insert(key.clone(), now + dns::next_lookup(d.interval, ttl));
                        targets
                    }),
            };
            let _ = state.tx.send(Resolved {
                key: key.clone(),
                spec: d.clone(),
                result,
            });
        }
        let next = due.values().min().map_or(Duration::from_millis(100), |t| {
            t.saturating_duration_since(Instant::now())
        });
        std::thread::sleep(next.clamp(Duration::from_millis(5), Duration::from_millis(100)));
    }
}

/// Starts the resolver thread.
pub fn start(state: Arc<DiscoveryState>, shared: Arc<Shared>) {
    if let Err(e) = std::thread::Builder::new()
        .name("ringmesh-dns".into())
        .spawn(move || run(state, shared))
    {
        tracing::error!("cannot start the DNS discovery thread: {e}");
    }
}
