//! The only state both planes touch.
//!
//! - [`Live`]: an immutable snapshot plus its runtime state (per-backend atomics,
//!   per-worker counters), published by the control thread as an `Arc`.
//!   Workers pick up a new one on their tick; no lock on the request path.
//! - [`Shared`]: the publication point and the drain/stop flags.
//!
//! Counters are per worker and cache-line padded: each slot has one writer
//! (its worker), which updates it with a relaxed load + store (no locked
//! read-modify-write); readers sum the slots.

mod h2_counts;
mod ip_counts;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::balance::str_hash;
use crate::config::{Backend, Route, Snapshot};

pub use h2_counts::H2Counters;
pub use ip_counts::IpCounts;

/// Keeps a value on its own cache line(s) so workers never false-share.
#[repr(align(128))]
#[derive(Default, Debug)]
pub struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A counter with a single writer thread.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this (single writer).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One worker's counters for one route.
#[derive(Default, Debug)]
pub struct RouteSlot {
    pub opened: Counter,
    pub closed: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub errors: Counter,
    pub requests: Counter,
    /// Connections refused by a connection limit.
    pub refused: Counter,
    /// Round-robin cursor of this worker for this route.
    pub cursor: Counter,
    /// WebSocket sessions (gateway routes only).
    pub gateway: crate::gateway::session::RouteCounters,
}

/// Totals over all workers, for status and metrics.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTotals {
    pub active: u64,
    pub total: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub errors: u64,
    pub requests: u64,
    pub refused: u64,
}

/// Runtime state of one backend, shared by all workers.
///
/// The control thread writes `proc` and `health`; workers read them with one
/// relaxed/acquire load per connection and write only `start_wanted`.
#[derive(Debug, Default)]
pub struct BackendState {
    /// Open connections across all workers (least_conn reads this).
    pub active: AtomicU32,
    /// Upstream connections handed out so far (the supervisor's idle check
    /// compares it between two looks).
    pub conns: AtomicU64,
    /// Until this many ms after [`epoch`], skip the backend: its last connect failed.
    pub down_until_ms: AtomicU64,
    pub connect_failures: AtomicU64,
    /// [`ProcState`] of the backend's process as a `u8`; always `Ready` for a
    /// backend without `cmd`.
    pub proc: AtomicU8,
    /// A worker needs the process: set by workers, cleared by the supervisor
    /// when it starts one.
    pub start_wanted: AtomicBool,
    /// Start attempts the supervisor finished (ready or failed): a waiting
    /// worker that sees it move while the process is not ready gives up.
    pub start_attempts: AtomicU32,
    /// [`Health`] from active checks, as a `u8`.
    pub health: AtomicU8,
}

/// Lifecycle of a backend process (the `cmd` of a backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ProcState {
    /// Running and accepting (or not a process at all).
    Ready = 0,
    /// Never started, or stopped on request (kill, reload).
    Stopped = 1,
    /// Stopped after `idle_timeout` without traffic; starts on the next connection.
    Napping = 2,
    /// Started, its port does not accept yet.
    Starting = 3,
    /// Exited unexpectedly or failed to start; restarts on demand after a backoff.
    Crashed = 4,
    /// SIGTERM sent, waiting for the exit (SIGKILL after the grace period).
    Stopping = 5,
}

impl ProcState {
    pub fn from_u8(v: u8) -> ProcState {
        match v {
            0 => ProcState::Ready,
            1 => ProcState::Stopped,
            2 => ProcState::Napping,
            3 => ProcState::Starting,
            4 => ProcState::Crashed,
            _ => ProcState::Stopping,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ProcState::Ready => "running",
            ProcState::Stopped => "stopped",
            ProcState::Napping => "napping",
            ProcState::Starting => "starting",
            ProcState::Crashed => "crashed",
            ProcState::Stopping => "stopping",
        }
    }
}

/// What active health checks say about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Not checked yet (or checks disabled): gets traffic.
    Unknown = 0,
    Healthy = 1,
    /// Failed `fall` checks in a row: gets no new connections.
    Unhealthy = 2,
}

impl Health {
    pub fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Healthy,
            2 => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }
}

/// How long a backend whose connect failed is skipped.
pub const COOLDOWN: Duration = Duration::from_secs(10);

impl BackendState {
    /// The state of a backend whose process ringmesh starts: not running yet.
    pub fn managed() -> BackendState {
        let s = BackendState::default();
        s.proc.store(ProcState::Stopped as u8, Relaxed);
        s
    }
    pub fn available(&self, now_ms: u64) -> bool {
        self.down_until_ms.load(Relaxed) <= now_ms
    }
    /// Marks a failed connect; returns true when the backend just went down.
    pub fn mark_failed(&self, now_ms: u64) -> bool {
        self.connect_failures.fetch_add(1, Relaxed);
        let until = now_ms + COOLDOWN.as_millis() as u64;
        self.down_until_ms.swap(until, Relaxed) <= now_ms
    }
    pub fn mark_ok(&self) {
        if self.down_until_ms.load(Relaxed) != 0 {
            self.down_until_ms.store(0, Relaxed);
        }
    }
    /// Whether the backend's process accepts connections (always true
    /// without `cmd`): the cold-start fast path, one atomic load.
    #[inline]
    pub fn ready(&self) -> bool {
        self.proc.load(std::sync::atomic::Ordering::Acquire) == ProcState::Ready as u8
    }
    pub fn proc_state(&self) -> ProcState {
        ProcState::from_u8(self.proc.load(std::sync::atomic::Ordering::Acquire))
    }
    pub fn set_proc(&self, s: ProcState) {
        self.proc
            .store(s as u8, std::sync::atomic::Ordering::Release);
    }
    /// Whether active checks allow new connections (unknown does).
    #[inline]
    pub fn health_ok(&self) -> bool {
        self.health.load(Relaxed) != Health::Unhealthy as u8
    }
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Relaxed))
    }
    pub fn set_health(&self, h: Health) {
        self.health.store(h as u8, Relaxed);
    }
}

/// A backend of a live route: its config and its shared state.
#[derive(Debug)]
pub struct LiveBackend {
    pub cfg: Backend,
    pub state: Arc<BackendState>,
    /// Stable identity hash for ip_hash.
    pub seed: u64,
}

/// A route of a live config.
#[derive(Debug)]
pub struct LiveRoute {
    pub cfg: Route,
    pub backends: Vec<LiveBackend>,
    /// One slot per worker.
    pub slots: Box<[Padded<RouteSlot>]>,
    /// Where this route's access log lines go (None: no log).
    pub log: Option<crate::accesslog::Sink>,
    /// The route's middleware (None: none, the plain fast path).
    pub chain: Option<Arc<crate::filter::ChainSpec>>,
    /// Backends differ in weight or priority: balancing takes
    /// `balance::pick_weighted` (equal ones keep the plain, cheaper pick).
    pub weighted: bool,
}

impl LiveRoute {
    pub fn totals(&self) -> RouteTotals {
        let mut t = RouteTotals::default();
        for s in self.slots.iter() {
            let (o, c) = (s.opened.get(), s.closed.get());
            t.total += o;
            t.active += o.saturating_sub(c);
            t.bytes_in += s.bytes_in.get();
            t.bytes_out += s.bytes_out.get();
            t.errors += s.errors.get();
            t.requests += s.requests.get();
            t.refused += s.refused.get();
        }
        t
    }
}

/// A published config with its runtime state.
#[derive(Debug)]
pub struct Live {
    pub snapshot: Snapshot,
    pub routes: Vec<Arc<LiveRoute>>,
    /// Listener address -> index into `snapshot.listeners`.
    pub by_listen: HashMap<SocketAddr, usize>,
    /// The top-level access log (requests no route matched go there).
    pub log: Option<crate::accesslog::Sink>,
    /// Some route, or the top level, has an access log.
    pub any_log: bool,
}

impl Live {
    /// Builds the runtime view of `snapshot` for `workers` workers, carrying
    /// backend state over from `prev` where route key, backend name and address
    /// match and both have a `cmd` or both have none (a running process keeps
    /// running across a reload; the supervisor matches it by this state).
    pub fn build(snapshot: Snapshot, workers: usize, prev: Option<&Live>) -> Live {
        let routes: Vec<Arc<LiveRoute>> = snapshot
            .routes
            .iter()
            .map(|r| {
                let old = prev.and_then(|p| p.routes.iter().find(|o| o.cfg.key == r.key));
                let backends = r
                    .backends
                    .iter()
                    .map(|b| {
                        let state = old
                            .and_then(|o| {
                                o.backends.iter().find(|ob| {
                                    ob.cfg.name == b.name
                                        && ob.cfg.addr == b.addr
                                        && ob.cfg.cmd.is_some() == b.cmd.is_some()
                                })
                            })
                            .map(|ob| ob.state.clone())
                            .unwrap_or_else(|| {
                                Arc::new(if b.cmd.is_some() {
                                    BackendState::managed()
                                } else {
                                    BackendState::default()
                                })
                            });
                        LiveBackend {
                            seed: str_hash(&b.name),
                            cfg: b.clone(),
                            state,
                        }
                    })
                    .collect();
                let slots = match old {
                    Some(o) if o.slots.len() == workers => {
                        // Keep counting where the old route left off.
                        let s: Vec<Padded<RouteSlot>> =
                            (0..workers).map(|_| Padded::default()).collect();
                        for (n, o) in s.iter().zip(o.slots.iter()) {
                            n.opened.add(o.opened.get());
                            n.closed.add(o.closed.get());
                            n.bytes_in.add(o.bytes_in.get());
                            n.bytes_out.add(o.bytes_out.get());
                            n.errors.add(o.errors.get());
                            n.requests.add(o.requests.get());
                            n.refused.add(o.refused.get());
                            n.gateway.carry(&o.gateway);
                        }
                        s.into_boxed_slice()
                    }
                    _ => (0..workers).map(|_| Padded::default()).collect(),
                };
                let log = r
                    .access_log
                    .resolve(snapshot.access_log.as_ref())
                    .map(|l| crate::accesslog::Sink::new(&l.dest, l.format));
                let weighted = r.backends.iter().any(|b| {
                    b.weight != r.backends[0].weight || b.priority != r.backends[0].priority
                });
                Arc::new(LiveRoute {
                    cfg: r.clone(),
                    backends,
                    slots,
                    log,
                    chain: crate::filter::ChainSpec::build(&r.middleware),
                    weighted,
                })
            })
            .collect();
        let by_listen = snapshot
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (l.addr, i))
            .collect();
        let log = snapshot
            .access_log
            .as_ref()
            .map(|l| crate::accesslog::Sink::new(&l.dest, l.format));
        let any_log = log.is_some() || routes.iter().any(|r: &Arc<LiveRoute>| r.log.is_some());
        Live {
            snapshot,
            routes,
            by_listen,
            log,
            any_log,
        }
    }
}

/// Milliseconds since the process's epoch: the coarse clock of the data plane.
pub fn epoch_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Listening sockets for one worker, handed over with a published config.
pub type Handover = Vec<(SocketAddr, std::net::TcpListener)>;

/// What the control thread publishes: the live config and, per worker, the
/// listening sockets it must start accepting on (added by a reload).
#[derive(Debug)]
struct Published {
    live: Arc<Live>,
    /// One slot per worker; a worker takes its slot when it picks up `live`.
    inbox: Vec<Handover>,
}

/// The publication point between the control thread and the workers.
#[derive(Debug)]
pub struct Shared {
    current: Mutex<Published>,
    /// Bumped on every publish; workers compare it on their tick.
    generation: AtomicU64,
    /// The generation each worker serves (control side waits on it after a reload).
    applied: Box<[Padded<AtomicU64>]>,
    /// Stop accepting and let connections finish.
    draining: AtomicBool,
    /// Deadline for open connections, in [`epoch_ms`] (valid once draining).
    drain_deadline_ms: AtomicU64,
    pub workers: usize,
    /// Open client connections of the whole process (connection limits).
    pub open_connections: AtomicU64,
    /// Connections refused by a limit.
    pub refused_connections: AtomicU64,
    /// Open connections per client IP (allocated once a per-IP limit is set).
    pub ip_counts: std::sync::OnceLock<IpCounts>,
    /// Connections closed at the edge (PROXY header, ClientHello), by reason.
    pub edge: crate::edge::Counters,
    /// HTTP/2 events.
    pub h2: H2Counters,
    /// Command queues to the workers' WebSocket sessions.
    pub gateway: crate::gateway::hub::Hub,
}

impl Shared {
    pub fn new(live: Live, workers: usize) -> Shared {
        Shared {
            current: Mutex::new(Published {
                live: Arc::new(live),
                inbox: (0..workers).map(|_| Vec::new()).collect(),
            }),
            generation: AtomicU64::new(1),
            applied: (0..workers).map(|_| Padded(AtomicU64::new(1))).collect(),
            draining: AtomicBool::new(false),
            drain_deadline_ms: AtomicU64::new(u64::MAX),
            workers,
            open_connections: AtomicU64::new(0),
            refused_connections: AtomicU64::new(0),
            ip_counts: std::sync::OnceLock::new(),
            edge: Default::default(),
            h2: H2Counters::default(),
            gateway: crate::gateway::hub::Hub::new(workers),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current live config (takes a lock: control side and worker ticks only).
    pub fn live(&self) -> Arc<Live> {
        self.lock().live.clone()
    }

    /// Publishes a new config; returns its generation.
    pub fn publish(&self, live: Arc<Live>) -> u64 {
        self.publish_with(live, Vec::new())
    }

    /// Publishes a new config together with listening sockets for each worker
    /// (`handover[i]` goes to worker `i`); returns the new generation. A
    /// worker picks up both at once, so it never accepts on an address its
    /// config does not know yet.
    pub fn publish_with(&self, live: Arc<Live>, handover: Vec<Handover>) -> u64 {
        let mut cur = self.lock();
        cur.live = live;
        for (slot, socks) in cur.inbox.iter_mut().zip(handover) {
            slot.extend(socks);
        }
        // Bumped under the lock: a worker that sees the new generation
        // finds the sockets that came with it.
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Worker side: when a config newer than `seen` is published, returns it
    /// with its generation and the sockets handed to worker `id`. The worker
    /// calls [`Shared::ack`] once its listeners match it.
    pub fn pick_up(&self, id: usize, seen: u64) -> Option<(u64, Arc<Live>, Handover)> {
        if self.generation() == seen {
            return None;
        }
        let mut cur = self.lock();
        let g = self.generation();
        let socks = cur
            .inbox
            .get_mut(id)
            .map(std::mem::take)
            .unwrap_or_default();
        let live = cur.live.clone();
        drop(cur);
        Some((g, live, socks))
    }

    /// Worker side: worker `id` now serves generation `g` (its listeners included).
    pub fn ack(&self, id: usize, g: u64) {
        if let Some(a) = self.applied.get(id) {
            a.store(g, std::sync::atomic::Ordering::Release);
        }
    }

    /// True once every worker serves generation `g` or a newer one.
    pub fn all_applied(&self, g: u64) -> bool {
        self.applied
            .iter()
            .all(|a| a.load(std::sync::atomic::Ordering::Acquire) >= g)
    }

    /// Starts draining: listeners close, open connections get until `deadline_ms`.
    pub fn drain(&self, deadline_ms: u64) {
        self.drain_deadline_ms.store(deadline_ms, Relaxed);
        self.draining
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Cuts the drain short: workers close what is left now.
    pub fn force_stop(&self) {
        self.drain(0);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn drain_deadline_ms(&self) -> u64 {
        self.drain_deadline_ms.load(Relaxed)
    }
}
