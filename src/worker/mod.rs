//! Workers: one OS thread per CPU, each with its own monoio runtime.
//!
//! A worker owns its listeners (one SO_REUSEPORT socket per address), its pipe
//! pool and its view of the live config. It talks to the control thread only
//! through `crate::shared`: a tick every [`TICK`] refreshes the coarse clock,
//! picks up a newly published config (with the listening sockets the control
//! thread bound for it: accept loops start for added addresses and stop for
//! removed ones), acknowledges its generation, and notices a drain. Nothing on
//! the per-connection path takes a lock or waits for another thread.
//!
//! Why a tick rather than a cross-thread waker (monoio's `sync` feature): ten
//! wake-ups a second cost nothing measurable, keep the runtime free of the
//! eventfd and thread-pool machinery, and bound reload and drain latency at 100 ms.

mod busy;
pub mod limits;
pub mod listener;
pub mod peer;
mod slots;
pub mod timer;
mod trim;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::http::buf::BufPool;
use crate::http::upstream::UpstreamPool;
use crate::proxy::splice::PipePool;
use crate::shared::{epoch_ms, Handover, Live, LiveRoute, Shared};
use crate::sys;

/// How often a worker looks at the shared state.
pub const TICK: Duration = Duration::from_millis(100);

/// How long accept waits after EMFILE before it tries again (nothing is lost
/// by trying: a failed accept takes no connection off the queue).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);
/// How long accepting pauses after an upstream connect ran out of fds, unless
/// a connection of the worker closes first (each retry would cost a client).
pub const UPSTREAM_SHORTAGE_PAUSE: Duration = Duration::from_secs(1);

/// Which I/O driver a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Uring,
    Epoll,
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Uring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// Checks that an io_uring instance can be created here (kernel support,
/// seccomp, `kernel.io_uring_disabled`, RLIMIT_MEMLOCK).
pub fn probe_uring() -> io::Result<()> {
    io_uring::IoUring::new(8).map(|_| ())
}

/// A single-threaded event: `set` wakes every `wait`er, now and later.
///
/// A waiter that is dropped unfired (it lost a `select!`, e.g. a keep-alive
/// wait that saw its client's next request) removes its waker, so many
/// short waits do not pile up wakers (each holds its task alive) until `set`.
#[derive(Default)]
pub struct LocalEvent {
    set: Cell<bool>,
    waiters: RefCell<slab::Slab<Waker>>,
}

impl LocalEvent {
    pub fn set(&self) {
        self.set.set(true);
        let wakers: Vec<Waker> = self.waiters.borrow_mut().drain().collect();
        for w in wakers {
            w.wake();
        }
    }
    pub fn is_set(&self) -> bool {
        self.set.get()
    }
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        EventWait {
            ev: self,
            key: None,
        }
    }
    /// Wakers registered right now.
    pub fn waiters(&self) -> usize {
        self.waiters.borrow().len()
    }
}

struct EventWait<'a> {
    ev: &'a LocalEvent,
    /// Our slot in `ev.waiters`, once registered.
    key: Option<usize>,
}

impl Future for EventWait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.ev.set.get() {
            self.key = None;
            return Poll::Ready(());
        }
        let mut w = self.ev.waiters.borrow_mut();
        match self.key.and_then(|k| w.get_mut(k)) {
            Some(slot) => {
                if !slot.will_wake(cx.waker()) {
                    slot.clone_from(cx.waker());
                }
            }
            None => {
                let k = w.insert(cx.waker().clone());
                drop(w);
                self.key = Some(k);
            }
        }
        Poll::Pending
    }
}

impl Drop for EventWait<'_> {
    fn drop(&mut self) {
        // After `set` the slab was drained and no waiter registers again, so
        // a stale key can never name another waiter's slot.
        if let Some(k) = self.key {
            if !self.ev.set.get() {
                self.ev.waiters.borrow_mut().try_remove(k);
            }
        }
    }
}

/// Per-worker state shared by its tasks (never by other threads).
pub struct WorkerCtx {
    pub id: usize,
    pub shared: Arc<Shared>,
    live: RefCell<Arc<Live>>,
    generation: Cell<u64>,
    pub pipes: PipePool,
    pub timers: timer::CoarseTimers,
    /// Buffers for HTTP heads (and the body bytes read with them).
    pub bufs: BufPool,
    /// Idle keep-alive connections to backends (HTTP routes).
    pub upstreams: UpstreamPool,
    /// Set when the worker starts draining: keep-alive connections finish
    /// their current request and close.
    pub stopping: LocalEvent,
    /// This worker's access log buffers.
    pub log: crate::accesslog::WorkerLog,
    /// This worker's middleware chains, built on first use per snapshot.
    pub filters: crate::filter::WorkerChains,
    /// This worker's WebSocket sessions.
    pub sessions: crate::gateway::hub::Sessions,
    now: Cell<u64>,
    active: Cell<usize>,
    pressure_logged_ms: Cell<u64>,
    accept_paused_until: Cell<u64>,
    trim: trim::Trim,
    busy: busy::Busy,
}

impl WorkerCtx {
    /// The coarse clock: ms since the process epoch, refreshed every tick.
    #[inline]
    pub fn now_ms(&self) -> u64 {
        self.now.get()
    }

    /// The config this worker currently serves.
    #[inline]
    pub fn live(&self) -> Arc<Live> {
        self.live.borrow().clone()
    }

    /// Bumped each time this worker picks up a newly published config.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Open client connections on this worker.
    pub fn active(&self) -> usize {
        self.active.get()
    }

    /// Counts a new connection; the guard counts it closed when dropped.
    pub fn conn_opened(self: &Rc<Self>, route: &Arc<LiveRoute>) -> ConnGuard {
        self.active.set(self.active.get() + 1);
        if let Some(s) = route.slots.get(self.id) {
            s.opened.add(1);
        }
        ConnGuard {
            ctx: self.clone(),
            route: Some(route.clone()),
            admission: None,
        }
    }

    /// Counts a new connection whose route is not known yet (an http
    /// listener routes each request by Host); see [`ConnGuard::attach`].
    pub fn conn_opened_unrouted(self: &Rc<Self>) -> ConnGuard {
        self.active.set(self.active.get() + 1);
        ConnGuard {
            ctx: self.clone(),
            route: None,
            admission: None,
        }
    }

    /// Until when (ms since the epoch) accept loops wait: set when an
    /// upstream connect found the process out of fds.
    pub fn accept_paused_until(&self) -> u64 {
        self.accept_paused_until.get()
    }

    /// Pauses accepting for `pause` or until [`WorkerCtx::resume_accepting`]
    /// (a tunnel closed and freed its fds), whichever comes first: queued
    /// connections wait in the kernel instead of being accepted only to be closed.
    pub fn pause_accepting(&self, why: &impl std::fmt::Display, pause: Duration) {
        self.accept_paused_until
            .set(epoch_ms() + pause.as_millis() as u64);
        self.note_accept_pressure(why);
    }

    /// Ends a pause: an established connection closed, so fds are free.
    #[inline]
    pub fn resume_accepting(&self) {
        if self.accept_paused_until.get() != 0 {
            self.accept_paused_until.set(0);
        }
    }

    fn note_accept_pressure(&self, e: &impl std::fmt::Display) {
        let now = epoch_ms();
        // 0: never logged (the epoch clock starts at 0 too, so compare explicitly).
        let last = self.pressure_logged_ms.get();
        if last == 0 || now.saturating_sub(last) > 5_000 {
            self.pressure_logged_ms.set(now.max(1));
            tracing::warn!(
                worker = self.id,
                "accept paused: {e} (raise LimitNOFILE / ulimit -n)"
            );
        }
    }

    /// Refreshes the clock, fires timers, and picks up a newly published
    /// config; returns the listening sockets handed over with it.
    fn tick(&self) -> Option<Handover> {
        let now = epoch_ms();
        self.now.set(now);
        self.timers.fire(now);
        self.upstreams.sweep(now);
        self.trim.tick(self.active(), now, &self.bufs);
        // Lines at most one tick old reach the writer.
        self.log.flush();
        let (g, live, socks) = self.shared.pick_up(self.id, self.generation.get())?;
        self.generation.set(g);
        *self.live.borrow_mut() = live;
        self.apply_pool_limits();
        Some(socks)
    }

    /// The config's `upstream_keepalive` into this worker's pool.
    fn apply_pool_limits(&self) {
        let k = self.live.borrow().snapshot.upstream_keepalive;
        self.upstreams.set_limits(k.max_idle, k.idle_timeout);
    }
}

/// One accept loop of this worker.
struct Accepting {
    addr: SocketAddr,
    stop: Rc<LocalEvent>,
    task: monoio::task::JoinHandle<()>,
}

/// The listeners of one worker: started from sockets the control thread
/// binds, stopped (one by one) when their address leaves the config.
#[derive(Default)]
struct Listeners {
    running: Vec<Accepting>,
}

impl Listeners {
    fn start(&mut self, ctx: &Rc<WorkerCtx>, socks: Handover) {
        for (addr, l) in socks {
            match monoio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    let stop = Rc::new(LocalEvent::default());
                    let task =
                        monoio::spawn(listener::accept_loop(ctx.clone(), l, addr, stop.clone()));
                    tracing::debug!(worker = ctx.id, %addr, "accepting");
                    self.running.push(Accepting { addr, stop, task });
                }
                Err(e) => tracing::error!(worker = ctx.id, %addr, "cannot register listener: {e}"),
            }
        }
    }

    /// Stops accepting on addresses the live config no longer has; their
    /// open connections carry on (they hold their route).
    async fn retire_removed(&mut self, live: &Live) {
        let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|a| live.by_listen.contains_key(&a.addr));
        self.running = keep;
        for a in gone {
            a.stop.set();
            a.task.await;
            tracing::debug!(addr = %a.addr, "listener removed by reload; open connections drain");
        }
    }

    async fn stop_all(&mut self) {
        for a in std::mem::take(&mut self.running) {
            a.stop.set();
            a.task.await;
        }
        // On io_uring a dropped listener is not closed yet: its cancelled
        // readiness poll holds the socket until the cancellation's
        // completion is reaped, and only then is the close queued (and
        // submitted at the next park). A worker with no connections left
        // would return right away and drop its ring with the close never
        // submitted: the socket stayed in LISTEN, queueing clients nobody
        // accepts, until the process exited. A few short parks reap the
        // cancellations and submit the closes (measured: one or two).
        for _ in 0..3 {
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Keeps a connection counted as open.
pub struct ConnGuard {
    ctx: Rc<WorkerCtx>,
    route: Option<Arc<LiveRoute>>,
    /// The connection's share of the limit counts, given back with it.
    admission: Option<limits::Admission>,
}

impl ConnGuard {
    /// The worker the connection belongs to (an http connection reaches
    /// it through its guard: one reference fewer in every connection).
    pub fn ctx(&self) -> &Rc<WorkerCtx> {
        &self.ctx
    }

    /// Keeps `a` until the connection closes.
    pub fn hold(&mut self, a: limits::Admission) {
        self.admission = Some(a);
    }

    /// Attributes an unrouted connection to the route of its first request
    /// (counted opened now, closed on drop); later calls do nothing.
    pub fn attach(&mut self, route: &Arc<LiveRoute>) {
        if self.route.is_some() {
            return;
        }
        if let Some(s) = route.slots.get(self.ctx.id) {
            s.opened.add(1);
        }
        self.route = Some(route.clone());
    }

    /// Whether the connection is attributed to a route yet.
    pub fn attached(&self) -> bool {
        self.route.is_some()
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.ctx.active.set(self.ctx.active.get().saturating_sub(1));
        if let Some(s) = self.route.as_ref().and_then(|r| r.slots.get(self.ctx.id)) {
            s.closed.add(1);
        }
    }
}

/// What a worker thread starts with.
pub struct WorkerSpec {
    pub id: usize,
    pub cpu: Option<usize>,
    pub driver: Driver,
    /// Pre-bound listeners (bound by the engine, so bind errors surface before start).
    pub listeners: Handover,
    pub pipe_size: usize,
}

/// Starts a worker thread. `ready` is called once its listeners are registered.
pub fn spawn(
    spec: WorkerSpec,
    shared: Arc<Shared>,
    ready: impl FnOnce(usize, Driver) + Send + 'static,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("ringmesh-w{}", spec.id))
        .spawn(move || thread_main(spec, shared, ready))
}

fn thread_main(spec: WorkerSpec, shared: Arc<Shared>, ready: impl FnOnce(usize, Driver)) {
    if let Some(cpu) = spec.cpu {
        if let Err(e) = sys::pin_to_cpu(cpu) {
            tracing::warn!(worker = spec.id, cpu, "cannot pin worker to CPU: {e}");
        }
    }
    let id = spec.id;
    let mut driver = spec.driver;
    if driver == Driver::Uring {
        match uring_runtime() {
            Ok(mut rt) => {
                rt.block_on(run(spec, shared, driver, ready));
                return;
            }
            Err(e) => {
                tracing::warn!(
                    worker = id,
                    "io_uring runtime failed ({e}); this worker falls back to epoll"
                );
                driver = Driver::Epoll;
            }
        }
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => rt.block_on(run(spec, shared, driver, ready)),
        Err(e) => tracing::error!(worker = id, "cannot start an epoll runtime: {e}"),
    }
}

/// The worker's io_uring runtime. One thread submits and reaps (SINGLE_ISSUER),
/// so completions' task work can wait until the worker asks for events
/// (DEFER_TASKRUN) instead of interrupting it with an IPI mid-syscall: under
/// load, fewer interrupts and context switches per request. Kernels before
/// 6.1 refuse the flags; then the ring is built without them.
fn uring_runtime(
) -> std::io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>> {
    let mut urb = io_uring::IoUring::builder();
    urb.setup_single_issuer().setup_defer_taskrun();
    let tuned = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(1024)
        .uring_builder(urb)
        .enable_timer()
        .build();
    match tuned {
        Ok(rt) => Ok(rt),
        Err(e) => {
            tracing::debug!("io_uring DEFER_TASKRUN unavailable ({e}); plain ring");
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(1024)
                .enable_timer()
                .build()
        }
    }
}

async fn run(
    spec: WorkerSpec,
    shared: Arc<Shared>,
    driver: Driver,
    ready: impl FnOnce(usize, Driver),
) {
    let ctx = Rc::new(WorkerCtx {
        id: spec.id,
        live: RefCell::new(shared.live()),
        generation: Cell::new(shared.generation()),
        shared: shared.clone(),
        pipes: PipePool::new(spec.pipe_size, 64),
        timers: timer::CoarseTimers::new(epoch_ms()),
        bufs: BufPool::new(64),
        upstreams: UpstreamPool::default(),
        stopping: LocalEvent::default(),
        log: crate::accesslog::WorkerLog::default(),
        filters: crate::filter::WorkerChains::default(),
        sessions: crate::gateway::hub::Sessions::default(),
        now: Cell::new(epoch_ms()),
        active: Cell::new(0),
        pressure_logged_ms: Cell::new(0),
        accept_paused_until: Cell::new(0),
        trim: Default::default(),
        busy: Default::default(),
    });
    ctx.apply_pool_limits();
    let mut listeners = Listeners::default();
    listeners.start(&ctx, spec.listeners);
    monoio::spawn(crate::gateway::hub::serve(ctx.clone()));
    busy::follow(&ctx, driver);
    ready(ctx.id, driver);

    while !shared.draining() {
        monoio::time::sleep(TICK).await;
        if let Some(socks) = ctx.tick() {
            // Removed first: an address removed and re-added by one reload
            // must not have two accept loops for a moment.
            listeners.retire_removed(&ctx.live()).await;
            ctx.sessions.retire_removed(&ctx.live(), ctx.now_ms());
            busy::follow(&ctx, driver);
            if !shared.draining() {
                listeners.start(&ctx, socks);
            }
            shared.ack(ctx.id, ctx.generation());
        }
    }
    listeners.stop_all().await;
    ctx.stopping.set();
    // Idle keep-alive connections watch the stop flag from their coarse
    // timer's poll instead of waiting on `stopping` (a registration each).
    ctx.timers.wake_all();
    ctx.upstreams.clear();
    // Listeners are closed; let open connections finish until the deadline.
    while ctx.active() > 0 && epoch_ms() < shared.drain_deadline_ms() {
        monoio::time::sleep(TICK).await;
        // Sockets handed over now are dropped: we no longer accept.
        let _ = ctx.tick();
    }
    if ctx.active() > 0 {
        tracing::warn!(
            worker = ctx.id,
            open = ctx.active(),
            "grace period over, closing open connections"
        );
    }
    ctx.log.flush();
}

/// `Box::pin(make())` without the move: the box is allocated first and the
/// future written straight into it. rustc moves a future by its full size
/// (every state it can be in), so `Box::pin` of a fresh one built the whole
/// future on the stack and copied it into the box: 8 KiB per HTTP request.
#[inline(always)]
pub fn boxed<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_event_wakes_waiters_and_forgets_dropped_ones() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let ev = Rc::new(LocalEvent::default());
            // Waits that lose a race leave nothing behind (keep-alive waits).
            for _ in 0..100 {
                monoio::select! {
                    _ = ev.wait() => unreachable!(),
                    _ = monoio::time::sleep(Duration::from_millis(1)) => {}
                }
            }
            assert_eq!(ev.waiters(), 0);
            let e2 = ev.clone();
            let task = monoio::spawn(async move {
                e2.wait().await;
                7
            });
            monoio::time::sleep(Duration::from_millis(5)).await;
            assert_eq!(ev.waiters(), 1);
            ev.set();
            assert_eq!(task.await, 7);
            assert_eq!(ev.waiters(), 0);
            // Set stays set.
            ev.wait().await;
        });
    }
}
