//! The supervisor: backend processes (`cmd`) that ringmesh starts on demand,
//! watches, restarts with backoff, stops when idle, and never leaves behind.
//!
//! Everything here runs on the control thread's runtime, one task per
//! process backend ([`run_process`]) plus one health task per backend
//! (`health.rs`). Workers never wait on it: they raise
//! `BackendState::start_wanted` and poll `BackendState::proc` (see
//! `proxy::connect::cold_start`); only this task spawns, so simultaneous
//! first connections cause one start.
//!
//! Output: a child's stdout and stderr are non-blocking pipes that its task
//! drains on every tick (10 ms) into the route's [`LogRing`]. No reader thread
//! per child: the task wakes every tick anyway to notice exits and demand, and
//! a 64 KiB pipe drained every 10 ms passes several MB/s of logs.
//!
//! Orphans: children are forked by this (long-lived) thread with
//! PR_SET_PDEATHSIG(SIGKILL), so they die even when ringmesh is SIGKILLed, and
//! each leads its own process group so a stop reaches its children too.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{HealthCheck, Protocol};
use crate::control::logs::{LineSplitter, LogRing, Stream};
use crate::shared::{BackendState, Health, Live, ProcState};
use crate::sys;

/// How often a process task looks at demand, exits, pipes and readiness.
pub const TICK: Duration = Duration::from_millis(10);
/// SIGTERM, then SIGKILL after this long.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// First restart delay after a crash; doubles per crash in a row.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A process that stayed up this long starts its crash count afresh.
pub const BACKOFF_RESET: Duration = Duration::from_secs(30);
/// One readiness probe (connect to the backend's port) may take this long.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// Bytes read from one pipe per tick.
const PUMP_MAX: usize = 64 * 1024;

/// The config of a backend as the supervisor needs it (updated on reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryCfg {
    pub route_name: String,
    pub protocol: Protocol,
    pub host: String,
    pub addr: SocketAddr,
    pub cmd: Option<String>,
    pub args: Vec<String>,
    pub ready_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub health: Option<HealthCheck>,
    /// The backend's `send_proxy`: health checks start with a LOCAL header.
    pub send_proxy: Option<crate::config::SendProxy>,
    /// The backend's `tls`: checks and the readiness probe handshake too.
    pub tls: Option<Arc<crate::tls::client::ClientTls>>,
}

/// What the API shows about a process.
#[derive(Debug, Default, Clone)]
pub struct ProcInfo {
    pub pid: Option<u32>,
    /// When the running process was started.
    pub started: Option<Instant>,
    /// Processes started so far.
    pub starts: u64,
    /// Unexpected exits.
    pub crashes: u64,
    /// How the last process ended ("exit status 1", "signal 9 (SIGKILL)", ...).
    pub last_exit: Option<String>,
    /// Why the last start failed (spawn error, ready timeout).
    pub last_error: Option<String>,
    /// How long the last start took from spawn until the port accepted.
    pub ready_after: Option<Duration>,
}

/// What the API shows about health.
#[derive(Debug, Clone)]
pub struct HealthInfo {
    /// The reported status: healthy, unhealthy, unknown, napping, stopped, starting.
    pub status: &'static str,
    pub since: Instant,
    pub latency: Option<Duration>,
    pub detail: String,
}

/// One backend of one route, as the control thread tracks it.
#[derive(Debug)]
pub struct Entry {
    pub route_key: String,
    pub backend: String,
    pub state: Arc<BackendState>,
    pub cfg: RefCell<EntryCfg>,
    pub logs: Arc<LogRing>,
    pub proc: RefCell<ProcInfo>,
    pub health: RefCell<HealthInfo>,
    /// The API asked to stop the process (cleared when one starts).
    pub kill: Cell<bool>,
    /// Gone from the config: stop the process, end the tasks.
    pub removed: Cell<bool>,
    /// Its command changed on reload: stop now, the next start uses the new one.
    pub restart: Cell<bool>,
}

impl Entry {
    pub fn managed(&self) -> bool {
        self.cfg.borrow().cmd.is_some()
    }

    /// The status the API reports, derived from the process state and health.
    pub fn status(&self) -> &'static str {
        if self.managed() {
            match self.state.proc_state() {
                ProcState::Ready => {}
                ProcState::Napping => return "napping",
                ProcState::Starting => return "starting",
                _ => return "stopped",
            }
        }
        match self.state.health() {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Unknown => "unknown",
        }
    }

    /// Restarts the `since` clock when the reported status changed.
    pub fn refresh_status(&self) {
        let now = self.status();
        let mut h = self.health.borrow_mut();
        if h.status != now {
            h.status = now;
            h.since = Instant::now();
        }
    }

    fn set_proc(&self, s: ProcState) {
        self.state.set_proc(s);
        if s != ProcState::Ready {
            // A process that is not running is started on demand, not shunned.
            self.state.set_health(Health::Unknown);
        }
        self.refresh_status();
    }

    fn log(&self, stream: Stream, line: &[u8]) {
        self.logs.push(&self.backend, stream, line);
    }
}

/// Every backend the control thread tracks, and the route log rings.
#[derive(Debug, Default)]
pub struct Registry {
    entries: RefCell<Vec<Rc<Entry>>>,
    logs: RefCell<HashMap<String, Arc<LogRing>>>,
    shutting_down: Cell<bool>,
    /// Process tasks still running (shutdown waits for them).
    proc_tasks: Cell<usize>,
}

impl Registry {
    /// Entries of the current config.
    pub fn entries(&self) -> Vec<Rc<Entry>> {
        self.entries.borrow().clone()
    }

    /// The entry tracking this backend state.
    pub fn find(&self, state: &Arc<BackendState>) -> Option<Rc<Entry>> {
        self.entries
            .borrow()
            .iter()
            .find(|e| Arc::ptr_eq(&e.state, state))
            .cloned()
    }

    /// The log ring of a route (by key).
    pub fn logs(&self, route_key: &str) -> Option<Arc<LogRing>> {
        self.logs.borrow().get(route_key).cloned()
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// Matches the tracked backends to `live` (at start and after a reload):
    /// new backends get their tasks, removed ones are stopped, unchanged ones
    /// (same `BackendState`, which `Live::build` carries over) keep running.
    pub fn sync(self: &Rc<Self>, live: &Live) {
        let mut keep: Vec<Rc<Entry>> = Vec::new();
        let old = self.entries.take();
        let mut logs = self.logs.borrow_mut();
        let mut new_logs = HashMap::new();
        for r in &live.routes {
            let ring = logs.remove(&r.cfg.key).unwrap_or_default();
            new_logs.insert(r.cfg.key.clone(), ring.clone());
            for b in &r.backends {
                let cfg = EntryCfg {
                    route_name: r.cfg.name.clone(),
                    protocol: r.cfg.protocol,
                    host: b.cfg.host.clone(),
                    addr: b.cfg.addr,
                    cmd: b.cfg.cmd.clone(),
                    args: b.cfg.args.clone(),
                    ready_timeout: b.cfg.ready_timeout,
                    idle_timeout: r.cfg.idle_timeout,
                    health: r.cfg.health.clone(),
                    send_proxy: b.cfg.send_proxy,
                    tls: b.cfg.tls.clone(),
                };
                if let Some(e) = old.iter().find(|e| Arc::ptr_eq(&e.state, &b.state)) {
                    let mut c = e.cfg.borrow_mut();
                    if c.cmd != cfg.cmd || c.args != cfg.args {
                        e.restart.set(true);
                    }
                    *c = cfg;
                    drop(c);
                    keep.push(e.clone());
                    continue;
                }
                let managed = cfg.cmd.is_some();
                let e = Rc::new(Entry {
                    route_key: r.cfg.key.clone(),
                    backend: b.cfg.name.clone(),
                    state: b.state.clone(),
                    cfg: RefCell::new(cfg),
                    logs: ring.clone(),
                    proc: RefCell::default(),
                    health: RefCell::new(HealthInfo {
                        status: "unknown",
                        since: Instant::now(),
                        latency: None,
                        detail: String::new(),
                    }),
                    kill: Cell::new(false),
                    removed: Cell::new(false),
                    restart: Cell::new(false),
                });
                e.refresh_status();
                if managed {
                    self.proc_tasks.set(self.proc_tasks.get() + 1);
                    monoio::spawn(run_process(e.clone(), self.clone()));
                }
                monoio::spawn(crate::control::health::run(e.clone(), self.clone()));
                keep.push(e);
            }
        }
        for e in &old {
            if !keep.iter().any(|k| Rc::ptr_eq(k, e)) {
                tracing::info!(route = %e.route_key, backend = %e.backend, "backend removed from the config");
                e.removed.set(true);
            }
        }
        *logs = new_logs;
        *self.entries.borrow_mut() = keep;
    }

    /// Stops every process (SIGTERM, SIGKILL after the grace period) and
    /// waits for them, bounded.
    pub async fn shutdown(&self) {
        self.shutting_down.set(true);
        let deadline = Instant::now() + STOP_GRACE + Duration::from_secs(3);
        while self.proc_tasks.get() > 0 && Instant::now() < deadline {
            monoio::time::sleep(TICK).await;
        }
        if self.proc_tasks.get() > 0 {
            tracing::warn!(
                left = self.proc_tasks.get(),
                "backend processes did not stop in time"
            );
        }
    }
}

/// A running child and its pipes.
struct Running {
    child: Child,
    pid: u32,
    out: Option<ChildStdout>,
    err: Option<ChildStderr>,
    out_lines: LineSplitter,
    err_lines: LineSplitter,
}

impl Running {
    /// Moves what the pipes hold into the log ring.
    fn pump(&mut self, e: &Entry) {
        if let Some(p) = self.out.as_mut() {
            if !pump(p, &mut self.out_lines, e, Stream::Stdout) {
                self.out = None;
            }
        }
        if let Some(p) = self.err.as_mut() {
            if !pump(p, &mut self.err_lines, e, Stream::Stderr) {
                self.err = None;
            }
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        match self.child.try_wait() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(pid = self.pid, "waitpid failed: {e}");
                None
            }
        }
    }
}

/// Reads a pipe until it would block; false at EOF or error.
fn pump(p: &mut impl Read, lines: &mut LineSplitter, e: &Entry, stream: Stream) -> bool {
    let mut buf = [0u8; 8192];
    let mut total = 0;
    while total < PUMP_MAX {
        match p.read(&mut buf) {
            Ok(0) => {
                lines.finish(|l| e.log(stream, l));
                return false;
            }
            Ok(n) => {
                total += n;
                lines.feed(&buf[..n], |l| e.log(stream, l));
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return true,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

fn spawn(e: &Entry) -> io::Result<Running> {
    let cfg = e.cfg.borrow();
    let program = cfg.cmd.as_deref().unwrap_or_default();
    let mut cmd = Command::new(program);
    cmd.args(&cfg.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RINGMESH_ROUTE", &e.route_key)
        .env("RINGMESH_BACKEND", &e.backend)
        .env("PORT", cfg.addr.port().to_string())
        // systemd's notify socket and watchdog are ringmesh's, not the
        // backend's: a child that speaks sd_notify must not report for us.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .process_group(0);
    sys::die_with_parent(&mut cmd);
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let out = child.stdout.take();
    let err = child.stderr.take();
    for fd in [
        out.as_ref().map(|p| p.as_raw_fd()),
        err.as_ref().map(|p| p.as_raw_fd()),
    ]
    .into_iter()
    .flatten()
    {
        if let Err(err) = sys::set_nonblocking(fd) {
            let _ = sys::kill_group(pid, libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            return Err(err);
        }
    }
    Ok(Running {
        child,
        pid,
        out,
        err,
        out_lines: LineSplitter::default(),
        err_lines: LineSplitter::default(),
    })
}

/// "exit status 3", "signal 9 (SIGKILL)".
pub fn describe_exit(s: ExitStatus) -> String {
    if let Some(code) = s.code() {
        return format!("exit status {code}");
    }
    match s.signal() {
        Some(sig) => {
            let name = match sig {
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGABRT => " (SIGABRT)",
                _ => "",
            };
            format!("signal {sig}{name}")
        }
        None => "unknown exit".into(),
    }
}

/// Delay before restart number `crashes` (1 = first crash in a row).
pub fn backoff(crashes: u32) -> Duration {
    let shift = crashes.saturating_sub(1).min(16);
    BACKOFF_MIN.saturating_mul(1 << shift).min(BACKOFF_MAX)
}

/// Why a running process is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopWhy {
    Kill,
    Idle,
    Removed,
    Restart,
    Shutdown,
}

/// The lifecycle of one backend process, until the backend leaves the config
/// or ringmesh shuts down.
async fn run_process(e: Rc<Entry>, reg: Rc<Registry>) {
    process_loop(&e, &reg).await;
    e.proc.borrow_mut().pid = None;
    // Connections still on an older config may wait for this backend: no
    // task will start it any more, so let them fail now.
    e.state.start_attempts.fetch_add(1, Release);
    reg.proc_tasks.set(reg.proc_tasks.get().saturating_sub(1));
}

async fn process_loop(e: &Rc<Entry>, reg: &Rc<Registry>) {
    let st = &e.state;
    // Crashes in a row, and the earliest time of the next start.
    let mut crashes = 0u32;
    let mut not_before = Instant::now();
    loop {
        // Down: wait for demand (and the backoff).
        loop {
            if e.removed.get() || reg.shutting_down() {
                e.set_proc(ProcState::Stopped);
                return;
            }
            e.restart.set(false);
            if st.start_wanted.load(Acquire) && Instant::now() >= not_before {
                break;
            }
            monoio::time::sleep(TICK).await;
        }
        st.start_wanted.store(false, Release);
        e.kill.set(false);
        e.set_proc(ProcState::Starting);
        let t0 = Instant::now();
        let mut run = match spawn(e) {
            Ok(r) => r,
            Err(err) => {
                let cmd = e.cfg.borrow().cmd.clone().unwrap_or_default();
                let msg = format!("cannot start {cmd:?}: {err}");
                tracing::error!(route = %e.route_key, backend = %e.backend, "{msg}");
                crashes += 1;
                not_before = Instant::now() + backoff(crashes);
                e.proc.borrow_mut().last_error = Some(msg);
                e.set_proc(ProcState::Crashed);
                st.start_attempts.fetch_add(1, Release);
                continue;
            }
        };
        {
            let mut p = e.proc.borrow_mut();
            p.pid = Some(run.pid);
            p.started = Some(t0);
            p.starts += 1;
            p.last_error = None;
        }
        tracing::info!(route = %e.route_key, backend = %e.backend, pid = run.pid, "backend process started");

        // Starting: wait until its port accepts.
        let (addr, ready_timeout, tls) = {
            let c = e.cfg.borrow();
            (c.addr, c.ready_timeout, c.tls.clone())
        };
        let outcome: Result<(), Option<StopWhy>> = loop {
            run.pump(e);
            if let Some(why) = stop_request(e, reg) {
                break Err(Some(why));
            }
            if run.exited_peek() {
                break Err(None);
            }
            if super::health::probe(addr, tls.as_deref(), PROBE_TIMEOUT).await {
                break Ok(());
            }
            if t0.elapsed() >= ready_timeout {
                let msg = format!("port {addr} did not accept within {ready_timeout:?}");
                tracing::error!(route = %e.route_key, backend = %e.backend, pid = run.pid, "{msg}; stopping it");
                e.proc.borrow_mut().last_error = Some(msg);
                break Err(Some(StopWhy::Kill));
            }
            monoio::time::sleep(TICK).await;
        };
        match outcome {
            Ok(()) => {
                tracing::info!(
                    route = %e.route_key, backend = %e.backend, pid = run.pid,
                    ready_ms = t0.elapsed().as_millis() as u64,
                    "backend process ready"
                );
                e.proc.borrow_mut().ready_after = Some(t0.elapsed());
                st.mark_ok();
                st.set_health(Health::Healthy);
                e.set_proc(ProcState::Ready);
                st.start_attempts.fetch_add(1, Release);
            }
            Err(Some(why)) => {
                stop(e, &mut run).await;
                st.start_attempts.fetch_add(1, Release);
                if why == StopWhy::Kill && e.proc.borrow().last_error.is_some() {
                    // Ready timeout: counts as a failed start.
                    crashes += 1;
                    not_before = Instant::now() + backoff(crashes);
                    e.set_proc(ProcState::Crashed);
                } else {
                    e.set_proc(ProcState::Stopped);
                }
                continue;
            }
            Err(None) => {
                let status = run.exited().map(describe_exit);
                run.pump(e);
                crashes += 1;
                not_before = Instant::now() + backoff(crashes);
                let msg = status.unwrap_or_else(|| "exited".into());
                tracing::error!(route = %e.route_key, backend = %e.backend, pid = run.pid, "backend process exited while starting: {msg}");
                {
                    let mut p = e.proc.borrow_mut();
                    p.pid = None;
                    p.crashes += 1;
                    p.last_exit = Some(msg.clone());
                    p.last_error = Some(format!("exited before its port accepted: {msg}"));
                }
                e.set_proc(ProcState::Crashed);
                st.start_attempts.fetch_add(1, Release);
                continue;
            }
        }

        // Running: watch for exit, stop requests and idleness.
        let mut seen_conns = st.conns.load(Relaxed);
        let mut last_busy = Instant::now();
        let why = loop {
            monoio::time::sleep(TICK).await;
            // Demand while running is stale (a waiter raised it just before
            // the process became ready): drop it, or the next nap would
            // end at once.
            if st.start_wanted.load(Relaxed) {
                st.start_wanted.store(false, Relaxed);
            }
            run.pump(e);
            if let Some(status) = run.exited() {
                run.pump(e);
                let up = t0.elapsed();
                if up >= BACKOFF_RESET {
                    crashes = 0;
                }
                crashes += 1;
                not_before = Instant::now() + backoff(crashes);
                let msg = describe_exit(status);
                tracing::warn!(
                    route = %e.route_key, backend = %e.backend, pid = run.pid,
                    up_s = up.as_secs_f64(),
                    "backend process exited unexpectedly ({msg}); restarts on demand in {:?}",
                    backoff(crashes)
                );
                let mut p = e.proc.borrow_mut();
                p.pid = None;
                p.started = None;
                p.crashes += 1;
                p.last_exit = Some(msg);
                break None;
            }
            if let Some(why) = stop_request(e, reg) {
                break Some(why);
            }
            let conns = st.conns.load(Relaxed);
            if conns != seen_conns || st.active.load(Relaxed) > 0 {
                seen_conns = conns;
                last_busy = Instant::now();
            } else if let Some(idle) = e.cfg.borrow().idle_timeout {
                if last_busy.elapsed() >= idle {
                    // Close the door first, then make sure nobody slipped in.
                    st.set_proc(ProcState::Stopping);
                    if st.conns.load(Relaxed) == seen_conns && st.active.load(Relaxed) == 0 {
                        break Some(StopWhy::Idle);
                    }
                    st.set_proc(ProcState::Ready);
                }
            }
        };
        match why {
            None => {
                e.set_proc(ProcState::Crashed);
            }
            Some(why) => {
                if why == StopWhy::Idle {
                    tracing::info!(route = %e.route_key, backend = %e.backend, pid = run.pid, "no traffic: stopping the backend process (napping)");
                } else {
                    tracing::info!(route = %e.route_key, backend = %e.backend, pid = run.pid, "stopping the backend process ({why:?})");
                }
                stop(e, &mut run).await;
                crashes = 0;
                e.set_proc(if why == StopWhy::Idle {
                    ProcState::Napping
                } else {
                    ProcState::Stopped
                });
            }
        }
    }
}

impl Running {
    /// Whether the child has exited, without reaping it.
    fn exited_peek(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)) | Err(_))
    }
}

fn stop_request(e: &Entry, reg: &Registry) -> Option<StopWhy> {
    if reg.shutting_down() {
        Some(StopWhy::Shutdown)
    } else if e.removed.get() {
        Some(StopWhy::Removed)
    } else if e.kill.get() {
        Some(StopWhy::Kill)
    } else if e.restart.get() {
        Some(StopWhy::Restart)
    } else {
        None
    }
}

/// SIGTERM to the process group, SIGKILL after [`STOP_GRACE`], then reap.
async fn stop(e: &Entry, run: &mut Running) {
    e.state.set_proc(ProcState::Stopping);
    e.refresh_status();
    let pid = run.pid;
    let status = match run.child.try_wait() {
        Ok(Some(s)) => Some(s),
        _ => {
            if let Err(err) = sys::kill_group(pid, libc::SIGTERM) {
                tracing::debug!(pid, "SIGTERM to the process group: {err}");
                let _ = run.child.kill();
            }
            let deadline = Instant::now() + STOP_GRACE;
            let mut killed = false;
            let kill_deadline = deadline + Duration::from_secs(2);
            loop {
                run.pump(e);
                if let Some(s) = run.exited() {
                    break Some(s);
                }
                let now = Instant::now();
                if !killed && now >= deadline {
                    tracing::warn!(pid, "no exit {STOP_GRACE:?} after SIGTERM: SIGKILL");
                    let _ = sys::kill_group(pid, libc::SIGKILL);
                    let _ = run.child.kill();
                    killed = true;
                }
                if now >= kill_deadline {
                    tracing::error!(pid, "process did not exit after SIGKILL");
                    break None;
                }
                monoio::time::sleep(TICK).await;
            }
        }
    };
    run.pump(e);
    let msg = status
        .map(describe_exit)
        .unwrap_or_else(|| "not reaped".into());
    tracing::info!(route = %e.route_key, backend = %e.backend, pid, "backend process stopped: {msg}");
    let mut p = e.proc.borrow_mut();
    p.pid = None;
    p.started = None;
    p.last_exit = Some(msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(8), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    fn live(text: &str, prev: Option<&Live>) -> Live {
        Live::build(crate::config::parse(text).unwrap(), 1, prev)
    }

    async fn wait(mut f: impl FnMut() -> bool) -> bool {
        for _ in 0..1000 {
            if f() {
                return true;
            }
            monoio::time::sleep(TICK).await;
        }
        f()
    }

    /// Reload: a removed backend's process is stopped, an unchanged one keeps
    /// its process, a changed command restarts on the next demand.
    #[test]
    fn sync_stops_removed_backends_and_keeps_unchanged_ones() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            // Processes that never listen: they stay "starting" (ready_timeout 30 s).
            let both = r#"{"routes": {"9001": {"health": false, "backends": [
                {"name": "keep", "cmd": "/bin/sh", "args": ["-c", "exec sleep 30"], "internal_port": 1},
                {"name": "drop", "cmd": "/bin/sh", "args": ["-c", "exec sleep 30"], "internal_port": 2}]}}}"#;
            let one = r#"{"routes": {"9001": {"health": false, "backends": [
                {"name": "keep", "cmd": "/bin/sh", "args": ["-c", "exec sleep 30"], "internal_port": 1}]}}}"#;
            let reg = Rc::new(Registry::default());
            let l1 = live(both, None);
            reg.sync(&l1);
            let entries = reg.entries();
            assert_eq!(entries.len(), 2);
            for e in &entries {
                assert_eq!(e.state.proc_state(), ProcState::Stopped);
                e.state.start_wanted.store(true, Release);
            }
            assert!(wait(|| entries.iter().all(|e| e.proc.borrow().pid.is_some())).await);
            let pids: Vec<u32> = entries.iter().map(|e| e.proc.borrow().pid.unwrap()).collect();
            let alive = |pid: u32| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
                    .unwrap_or(false)
            };
            let l2 = live(one, Some(&l1));
            reg.sync(&l2);
            assert_eq!(reg.entries().len(), 1);
            assert!(Rc::ptr_eq(&reg.entries()[0], &entries[0]), "same entry kept");
            assert!(entries[1].removed.get());
            assert!(wait(|| !alive(pids[1])).await, "removed backend's process stopped");
            assert!(wait(|| reg.proc_tasks.get() == 1).await);
            assert_eq!(entries[0].proc.borrow().pid, Some(pids[0]), "unchanged keeps running");
            assert!(alive(pids[0]));

            // A changed command: the old process stops now.
            let changed = one.replace("exec sleep 30", "exec sleep 31");
            let l3 = live(&changed, Some(&l2));
            reg.sync(&l3);
            assert!(wait(|| !alive(pids[0])).await);
            assert!(wait(|| entries[0].state.proc_state() == ProcState::Stopped).await);
            assert_eq!(entries[0].cfg.borrow().args[1], "exec sleep 31");

            reg.shutdown().await;
            assert_eq!(reg.proc_tasks.get(), 0);
        });
    }

    #[test]
    fn exits_are_described() {
        assert_eq!(describe_exit(ExitStatus::from_raw(3 << 8)), "exit status 3");
        assert_eq!(describe_exit(ExitStatus::from_raw(9)), "signal 9 (SIGKILL)");
    }
}
