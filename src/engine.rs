//! The engine: binds listeners, starts the workers and the control thread, and
//! owns the shutdown order.
//!
//! Shutdown: a signal (or [`EngineHandle::shutdown`]) marks the shared state as
//! draining with a deadline; workers close their listeners on their next tick,
//! let open connections finish until the deadline, then return. A second
//! signal cuts the grace period short.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::cell::RefCell;
use std::rc::Rc;

use crate::config::Snapshot;
use crate::control::api::ApiState;
use crate::control::listeners::ListenerSet;
use crate::control::reload::{self, Reloader, Source};
use crate::control::systemd::Notifier;
use crate::control::upgrade::{Inherited, Upgrader};
use crate::shared::{epoch_ms, Live, Shared};
use crate::sys;
use crate::worker::LocalEvent;
use crate::worker::{self, Driver, WorkerSpec};

/// Which I/O driver to run the workers on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// io_uring when it can be set up, else epoll with a warning.
    #[default]
    Auto,
    /// io_uring or fail.
    Uring,
    /// epoll (monoio's legacy driver).
    Epoll,
}

/// How to run an [`Engine`].
#[derive(Debug, Default)]
pub struct EngineOptions {
    pub io: IoMode,
    /// Overrides the config's `workers` when set.
    pub workers: Option<usize>,
    /// Install SIGINT/SIGTERM/SIGHUP handlers (the binary does; embedders may not).
    pub handle_signals: bool,
    /// The config file's text, served by `GET /api/config`.
    pub config_text: String,
    /// The config file: SIGHUP and `POST /api/reload` re-read it, `PUT
    /// /api/config` writes it. None: reload from file is refused.
    pub config_path: Option<std::path::PathBuf>,
    /// Bearer token the API requires (overrides the config's `api_token`).
    pub api_token: Option<String>,
    /// Sockets handed over by the process this one replaces (binary upgrade).
    pub inherited: Option<Inherited>,
    /// Routes from etcd (from [`crate::fleet::bootstrap`]): watched and applied while running.
    pub fleet: Option<Arc<crate::fleet::FleetState>>,
}

/// Why the engine could not run.
#[derive(Debug)]
pub enum EngineError {
    /// A listener could not be bound (address in use, permission, ...).
    Bind(SocketAddr, std::io::Error),
    /// io_uring was required but is not available.
    Uring(std::io::Error),
    /// Threads or signals could not be set up.
    Setup(String),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Bind(a, e) if e.kind() == std::io::ErrorKind::AddrInUse => write!(
                f,
                "cannot listen on {a}: address already in use (another ringmesh or server holds it)"
            ),
            EngineError::Bind(a, e) => write!(f, "cannot listen on {a}: {e}"),
            EngineError::Uring(e) => write!(f, "io_uring is not available: {e} (try --io epoll)"),
            EngineError::Setup(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for EngineError {}

/// Stops a running engine from any thread.
#[derive(Clone, Debug)]
pub struct EngineHandle {
    stop: Arc<AtomicBool>,
}

impl EngineHandle {
    /// Begins a graceful shutdown (as SIGTERM does).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The embeddable proxy: `Engine::new(snapshot, opts).run()` blocks until shutdown.
pub struct Engine {
    snapshot: Snapshot,
    opts: EngineOptions,
    stop: Arc<AtomicBool>,
}

impl Engine {
    pub fn new(snapshot: Snapshot, opts: EngineOptions) -> Engine {
        Engine {
            snapshot,
            opts,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Registers a filter of the embedder's own code under `name`, for
    /// routes' `middleware` lists (`{"type": name, ...}`); see
    /// [`crate::filter::registry`]. Register before parsing the config
    /// that uses it (a config validated earlier did not know the name).
    pub fn filter(
        name: &str,
        factory: impl Fn(&serde_json::Value) -> Result<Box<dyn crate::filter::Filter>, String>
            + Send
            + Sync
            + 'static,
    ) {
        crate::filter::register(name, factory);
    }

    /// A handle that can stop the engine once it runs.
    pub fn handle(&self) -> EngineHandle {
        EngineHandle {
            stop: self.stop.clone(),
        }
    }

    /// Same as `handle().shutdown()`.
    pub fn shutdown(&self) {
        self.handle().shutdown();
    }

    /// Binds every listener, runs until shutdown completes, then returns.
    pub fn run(mut self) -> Result<(), EngineError> {
        sys::ignore_sigpipe();
        match sys::raise_nofile_limit() {
            Ok(n) => tracing::debug!("open-file limit {n}"),
            Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
        }
        let cpus = sys::allowed_cpus();
        let workers = match self.opts.workers.unwrap_or(self.snapshot.workers) {
            0 => cpus.len().max(1),
            n => n,
        };
        let driver = match self.opts.io {
            IoMode::Epoll => Driver::Epoll,
            IoMode::Uring => {
                worker::probe_uring().map_err(EngineError::Uring)?;
                Driver::Uring
            }
            IoMode::Auto => match worker::probe_uring() {
                Ok(()) => Driver::Uring,
                Err(e) => {
                    tracing::warn!("io_uring unavailable ({e}); workers use epoll");
                    Driver::Epoll
                }
            },
        };

        // Bind everything before starting anything: a bad address fails the
        // start cleanly instead of leaving half the workers serving.
        let (inherited, inherited_api, upgrade_reply) = match self.opts.inherited.take() {
            Some(i) => {
                tracing::info!(
                    sockets = i.listeners.len(),
                    "taking over listening sockets from the previous process"
                );
                (i.listeners, i.api, Some(i.reply))
            }
            None => (Vec::new(), None, None),
        };
        let mut listeners = ListenerSet::new(workers);
        let per_worker = listeners
            .bind_initial(&self.snapshot, inherited)
            .map_err(|(a, e)| EngineError::Bind(a, e))?;

        let api = match self.snapshot.dashboard.port {
            None => None,
            Some(port) => {
                let addr = (self.snapshot.dashboard.host.as_str(), port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        EngineError::Setup(format!(
                            "dashboard_host {:?} does not resolve",
                            self.snapshot.dashboard.host
                        ))
                    })?;
                let l = match inherited_api {
                    Some((a, fd)) if a == addr => std::net::TcpListener::from(fd),
                    _ => {
                        std::net::TcpListener::bind(addr).map_err(|e| EngineError::Bind(addr, e))?
                    }
                };
                l.set_nonblocking(true)
                    .map_err(|e| EngineError::Bind(addr, e))?;
                Some((addr, l))
            }
        };
        let pipe_size = self.snapshot.pipe_size;
        let addrs: Vec<String> = self
            .snapshot
            .listeners
            .iter()
            .map(|l| format!("{} ({})", l.addr, l.protocol.as_str()))
            .collect();
        let shared = Arc::new(Shared::new(
            Live::build(self.snapshot, workers, None),
            workers,
        ));

        let signals = if self.opts.handle_signals {
            Some(Signals::install().map_err(|e| EngineError::Setup(format!("signals: {e}")))?)
        } else {
            None
        };

        let (ready_tx, ready_rx) = crossbeam_channel::bounded::<(usize, Driver)>(workers);
        let mut handles = Vec::with_capacity(workers);
        for (id, listeners) in per_worker.into_iter().enumerate() {
            let spec = WorkerSpec {
                id,
                cpu: (!cpus.is_empty()).then(|| cpus[id % cpus.len()]),
                driver,
                listeners,
                pipe_size,
            };
            let tx = ready_tx.clone();
            let h = worker::spawn(spec, shared.clone(), move |id, d| {
                let _ = tx.send((id, d));
            });
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    shared.force_stop();
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(EngineError::Setup(format!(
                        "cannot start worker thread: {e}"
                    )));
                }
            }
        }
        drop(ready_tx);

        let notify = Arc::new(Notifier::from_env());
        let ctl = Control {
            reloader: Reloader {
                shared: shared.clone(),
                listeners,
                path: self.opts.config_path,
                text: self.opts.config_text,
                notify: notify.clone(),
                routes_overlay: None,
                discovered: Default::default(),
            },
            shared,
            handles,
            ready_rx,
            signals,
            stop: self.stop.clone(),
            addrs,
            api,
            api_token: self.opts.api_token,
            driver,
            notify,
            upgrade_reply,
            fleet: self.opts.fleet,
        };
        let control = std::thread::Builder::new()
            .name("ringmesh-ctl".into())
            .spawn(move || ctl.run())
            .map_err(|e| EngineError::Setup(format!("cannot start control thread: {e}")))?;
        control
            .join()
            .map_err(|_| EngineError::Setup("control thread panicked".into()))
    }
}

/// Signal flags, set by handlers and read by the control loop.
struct Signals {
    term: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
    /// SIGUSR2: binary upgrade.
    usr2: Arc<AtomicBool>,
    /// SIGUSR1: reopen the access logs (after logrotate moved them).
    usr1: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        let term = Arc::new(AtomicBool::new(false));
        let hup = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(sig, term.clone())?;
        }
        signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())?;
        let usr2 = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGUSR2, usr2.clone())?;
        let usr1 = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, usr1.clone())?;
        Ok(Signals {
            term,
            hup,
            usr2,
            usr1,
        })
    }
}

/// Everything the control thread owns.
struct Control {
    shared: Arc<Shared>,
    reloader: Reloader,
    handles: Vec<std::thread::JoinHandle<()>>,
    ready_rx: crossbeam_channel::Receiver<(usize, Driver)>,
    signals: Option<Signals>,
    stop: Arc<AtomicBool>,
    addrs: Vec<String>,
    api: Option<(SocketAddr, std::net::TcpListener)>,
    api_token: Option<String>,
    driver: Driver,
    notify: Arc<Notifier>,
    /// Started by an upgrade: where to tell the old process we are ready.
    upgrade_reply: Option<std::os::fd::OwnedFd>,
    fleet: Option<Arc<crate::fleet::FleetState>>,
}

impl Control {
    /// Runs the control loop on its own epoll runtime, then joins the workers.
    fn run(self) {
        let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build();
        let handles = match rt {
            Ok(mut rt) => rt.block_on(self.main()),
            Err(e) => {
                tracing::error!("control runtime failed to start: {e}; stopping");
                self.shared.force_stop();
                self.handles
            }
        };
        for h in handles {
            if h.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
        // Workers handed over their last access log lines as they stopped.
        if !crate::accesslog::flush(Duration::from_secs(10)) {
            tracing::warn!("access log writer did not finish in time; lines may be lost");
        }
        tracing::info!("stopped");
    }

    async fn main(self) -> Vec<std::thread::JoinHandle<()>> {
        let Control {
            shared,
            reloader,
            handles,
            ready_rx,
            signals,
            stop,
            addrs,
            api,
            api_token,
            driver,
            notify,
            mut upgrade_reply,
            fleet,
        } = self;
        let procs = std::rc::Rc::new(crate::control::supervisor::Registry::default());
        let mut generation = shared.generation();
        procs.sync(&shared.live());
        let reloader = Rc::new(RefCell::new(reloader));
        let api_dup = api.as_ref().and_then(|(a, l)| match l.try_clone() {
            Ok(d) => Some((*a, std::os::fd::OwnedFd::from(d))),
            Err(e) => {
                tracing::warn!("cannot keep the API socket for upgrades: {e}");
                None
            }
        });
        let api_stop = Rc::new(LocalEvent::default());
        let discovery_state = Arc::new(crate::discovery::DiscoveryState::default());
        let leaving = Rc::new(std::cell::Cell::new(false));
        let upgrader = Rc::new(Upgrader::new(
            api_dup,
            reloader.clone(),
            notify.clone(),
            stop.clone(),
            api_stop.clone(),
        ));
        if let Some((addr, l)) = api {
            match monoio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    let state = Rc::new(ApiState {
                        shared: shared.clone(),
                        started: std::time::Instant::now(),
                        reloader: reloader.clone(),
                        upgrader: upgrader.clone(),
                        driver: driver.as_str(),
                        procs: procs.clone(),
                        api_addr: addr,
                        api_token,
                        fleet: fleet.clone(),
                        discovery: discovery_state.clone(),
                        leaving: leaving.clone(),
                    });
                    monoio::spawn(crate::control::api::serve(l, state, api_stop.clone()));
                    tracing::info!("status API on http://{addr}/api/status");
                }
                Err(e) => tracing::error!(%addr, "status API disabled: {e}"),
            }
        }
        let mut fleet =
            fleet.map(|f| crate::control::fleet::FleetControl::start(f, &shared, &reloader));
        let mut discovery = crate::control::discovery::DiscoveryControl::new(discovery_state);
        let mut leave_at: Option<std::time::Instant> = None;
        let workers = handles.len();
        let mut ready = 0usize;
        let mut drivers = Vec::new();
        let mut draining = false;
        let watchdog = notify.watchdog_interval();
        let mut last_watchdog = std::time::Instant::now();
        if watchdog.is_some() {
            notify.watchdog();
        }
        loop {
            monoio::time::sleep(Duration::from_millis(50)).await;
            while let Ok((_, d)) = ready_rx.try_recv() {
                ready += 1;
                drivers.push(d);
                if ready == workers {
                    let uring = drivers.iter().filter(|&&d| d == Driver::Uring).count();
                    tracing::info!(
                        workers,
                        io_uring = uring,
                        epoll = workers - uring,
                        "ready; listening on {}",
                        addrs.join(", ")
                    );
                    // Every worker registered every listener. Started by an
                    // upgrade, we are not systemd's main process yet: the old
                    // one says READY for us along with MAINPID.
                    match upgrade_reply.take() {
                        Some(reply) => crate::control::upgrade::announce_ready(reply),
                        None => notify.ready(),
                    }
                }
            }
            // Once handed over, the new main process pings (ours would be refused).
            if let Some(every) = watchdog.filter(|_| upgrader.handed_to().is_none()) {
                if last_watchdog.elapsed() >= every {
                    last_watchdog = std::time::Instant::now();
                    notify.watchdog();
                }
            }
            let term = signals
                .as_ref()
                .is_some_and(|s| s.term.swap(false, Ordering::SeqCst));
            let requested = stop.swap(false, Ordering::SeqCst);
            let mut stop_now = term || requested;
            // shutdown_delay: first stop being ready (/readyz 503) while the
            // listeners keep accepting, so a balancer's health checks take
            // the node out before it closes them; then drain as usual.
            if stop_now && !draining && leave_at.is_none() && upgrader.handed_to().is_none() {
                let delay = shared.live().snapshot.shutdown_delay;
                if !delay.is_zero() {
                    leave_at = Some(std::time::Instant::now() + delay);
                    leaving.set(true);
                    notify.stopping();
                    tracing::info!(
                        delay_s = delay.as_secs_f64(),
                        "stopping: /readyz answers 503, listeners keep accepting for shutdown_delay, then drain"
                    );
                    stop_now = false;
                }
            }
            if !draining && leave_at.is_some_and(|t| std::time::Instant::now() >= t) {
                stop_now = true;
            }
            if stop_now {
                if draining {
                    tracing::warn!("second stop request: closing open connections now");
                    shared.force_stop();
                } else {
                    draining = true;
                    let grace = shared.live().snapshot.shutdown_grace;
                    match upgrader.handed_to() {
                        // The new process owns the sockets (and the API) now.
                        Some(pid) => {
                            tracing::info!(
                                new_pid = pid,
                                grace_s = grace.as_secs_f64(),
                                "handed over: no longer accepting, draining connections"
                            );
                        }
                        None => {
                            notify.stopping();
                            tracing::info!(
                                grace_s = grace.as_secs_f64(),
                                "shutting down: listeners closed, draining connections"
                            );
                        }
                    }
                    shared.drain(epoch_ms() + grace.as_millis() as u64);
                    if let Some(f) = &fleet {
                        f.state.stop(); // the registry revokes the node's lease
                    }
                    // Our copies of the listening sockets: the workers close theirs.
                    reloader.borrow_mut().listeners.clear();
                }
            }
            if signals
                .as_ref()
                .is_some_and(|s| s.hup.swap(false, Ordering::SeqCst))
                && !draining
            {
                let rl = reloader.clone();
                monoio::spawn(async move {
                    let _ = reload::reload(&rl, Source::File, "SIGHUP").await;
                });
            }
            if signals
                .as_ref()
                .is_some_and(|s| s.usr2.swap(false, Ordering::SeqCst))
                && !draining
            {
                let up = upgrader.clone();
                monoio::spawn(async move {
                    let _ = up.run("SIGUSR2").await;
                });
            }
            if signals
                .as_ref()
                .is_some_and(|s| s.usr1.swap(false, Ordering::SeqCst))
            {
                crate::accesslog::reopen();
            }
            if let Some(f) = fleet.as_ref().filter(|_| !draining) {
                f.tick(&reloader);
            }
            if !draining {
                discovery.tick(&shared, &reloader);
            }
            let g = shared.generation();
            if g != generation {
                // A new config: start tracking new backends, stop removed ones.
                generation = g;
                procs.sync(&shared.live());
            }
            if handles.iter().all(|h| h.is_finished()) {
                break;
            }
        }
        // Connections are closed: now the backend processes may go.
        if let Some(f) = fleet.as_mut() {
            f.stop();
        }
        discovery.stop();
        procs.shutdown().await;
        handles
    }
}
