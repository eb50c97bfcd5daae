//! Zero-downtime binary restart: the running process hands its listening
//! sockets to a new one (SCM_RIGHTS, as HAProxy's `-x` and Envoy's hot
//! restart do), so nothing waiting in an accept queue is dropped.
//!
//! Why not SO_REUSEPORT alone: a new process binding next to the old one gets
//! its own sockets, and the connections the kernel already queued on the old
//! sockets are reset when the old process closes them.
//!
//! The steps (`ringmesh upgrade`, `POST /api/upgrade` or SIGUSR2):
//! 1. the old process starts its own binary again (argv[0], same arguments:
//!    a new binary installed at that path, and the config file as it is now),
//!    with one end of a SOCK_SEQPACKET pair inherited as `RINGMESH_UPGRADE_FD`;
//! 2. it sends every listening socket (each worker's, with its address) and
//!    the API's, in batches, its TLS session ticket keys, then `done`;
//! 3. the new process validates its config, uses the received sockets for
//!    their addresses (binding only what is new), starts its workers, and when
//!    every worker accepts it sends `ready` with its PID;
//! 4. the old one tells systemd `MAINPID=<new>` and `READY=1`, stops
//!    accepting (the sockets stay open in the new process, so their queues
//!    survive), drains its open connections and exits.
//!
//! Both accept on the same sockets between 3 and 4. If the new process fails
//! (bad config, crash, no `ready` within [`READY_TIMEOUT`]) the old one keeps
//! serving as if nothing happened and reports why.

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::sys;
use crate::worker::LocalEvent;

use super::reload::Reloader;
use super::systemd::Notifier;

/// The environment variable naming the inherited handover socket.
pub const ENV_FD: &str = "RINGMESH_UPGRADE_FD";
/// How long the new process may take to be ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest handover message.
const MAX_MESSAGE: usize = 64 * 1024;

/// What a new process received from the one it replaces.
#[derive(Debug)]
pub struct Inherited {
    /// Listening sockets by address (one per old worker).
    pub listeners: Vec<(SocketAddr, OwnedFd)>,
    /// The old API listener.
    pub api: Option<(SocketAddr, OwnedFd)>,
    /// Where to say `ready` (see [`announce_ready`]).
    pub reply: OwnedFd,
}

impl Inherited {
    /// Receives the sockets when started by an upgrade (`RINGMESH_UPGRADE_FD`
    /// set); `Ok(None)` otherwise. Call at start, before other threads exist
    /// (it removes the variable from the environment).
    pub fn from_env() -> Result<Option<Inherited>, String> {
        let Some(v) = std::env::var_os(ENV_FD) else {
            return Ok(None);
        };
        std::env::remove_var(ENV_FD);
        let fd: RawFd = v
            .to_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{ENV_FD}={v:?} is not an fd number"))?;
        let sock = sys::adopt_passed_socket(fd).map_err(|e| format!("{ENV_FD}={fd}: {e}"))?;
        let sock = socket2::Socket::from(sock);
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| format!("handover socket: {e}"))?;
        let sock = OwnedFd::from(sock);
        let mut got = Inherited {
            listeners: Vec::new(),
            api: None,
            reply: sock,
        };
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let (n, fds) = sys::recv_with_fds(got.reply.as_raw_fd(), &mut buf, false)
                .map_err(|e| format!("receiving listeners from the old process: {e}"))?;
            if n == 0 {
                return Err("the old process closed the handover before sending everything".into());
            }
            let msg: Value = serde_json::from_slice(&buf[..n])
                .map_err(|e| format!("bad handover message: {e}"))?;
            let addrs = |v: &Value| -> Result<Vec<SocketAddr>, String> {
                v.as_array()
                    .ok_or("handover: addresses missing")?
                    .iter()
                    .map(|a| {
                        a.as_str()
                            .and_then(|s| s.parse().ok())
                            .ok_or_else(|| format!("handover: bad address {a}"))
                    })
                    .collect()
            };
            match msg["kind"].as_str() {
                Some("listeners") => {
                    let a = addrs(&msg["addrs"])?;
                    if a.len() != fds.len() {
                        return Err(format!(
                            "handover: {} addresses but {} sockets",
                            a.len(),
                            fds.len()
                        ));
                    }
                    got.listeners.extend(a.into_iter().zip(fds));
                }
                Some("api") => {
                    let a = addrs(&msg["addrs"])?;
                    if let (Some(a), Some(fd)) = (a.into_iter().next(), fds.into_iter().next()) {
                        got.api = Some((a, fd));
                    }
                }
                Some("tls_ticket_keys") => {
                    // Before any TLS config is built (the config loads after
                    // this): tickets of the old process keep resuming.
                    let adopted = msg["keys"].as_str().is_some_and(crate::tls::tickets::adopt);
                    if !adopted {
                        tracing::warn!(
                            "handover: TLS ticket keys unusable; clients do full handshakes once"
                        );
                    }
                }
                Some("done") => return Ok(Some(got)),
                other => return Err(format!("handover: unexpected message {other:?}")),
            }
        }
    }
}

/// Tells the old process we serve (the new process, once every worker
/// accepts); it then drains and exits.
pub fn announce_ready(reply: OwnedFd) {
    let msg = json!({"kind": "ready", "pid": std::process::id()}).to_string();
    if let Err(e) = sys::send_with_fds(reply.as_raw_fd(), msg.as_bytes(), &[]) {
        tracing::error!("cannot tell the old process we are ready: {e}");
    }
}

/// The old process's side.
pub struct Upgrader {
    /// Our own command line, to start the new process with.
    pub argv: Vec<std::ffi::OsString>,
    /// A duplicate of the API's listening socket.
    pub api: Option<(SocketAddr, OwnedFd)>,
    pub reloader: Rc<std::cell::RefCell<Reloader>>,
    pub notify: Arc<Notifier>,
    /// Set to make the control loop drain (as SIGTERM does).
    pub stop: Arc<AtomicBool>,
    /// Stops the API's accept loop: once handed over, the new process answers.
    pub api_stop: Rc<LocalEvent>,
    busy: Cell<bool>,
    /// PID of the process we handed over to.
    handed_to: Cell<Option<u32>>,
}

impl Upgrader {
    pub fn new(
        api: Option<(SocketAddr, OwnedFd)>,
        reloader: Rc<std::cell::RefCell<Reloader>>,
        notify: Arc<Notifier>,
        stop: Arc<AtomicBool>,
        api_stop: Rc<LocalEvent>,
    ) -> Upgrader {
        Upgrader {
            argv: std::env::args_os().collect(),
            api,
            reloader,
            notify,
            stop,
            api_stop,
            busy: Cell::new(false),
            handed_to: Cell::new(None),
        }
    }

    /// The PID we handed our sockets to, once done.
    pub fn handed_to(&self) -> Option<u32> {
        self.handed_to.get()
    }

    /// Runs a whole upgrade; returns the new process's PID.
    pub async fn run(&self, why: &str) -> Result<u32, String> {
        if self.handed_to.get().is_some() {
            return Err("already handed over to a new process; this one is draining".into());
        }
        if self.busy.replace(true) {
            return Err("an upgrade is already in progress".into());
        }
        tracing::info!("upgrade ({why}): starting a new process");
        let r = self.attempt().await;
        self.busy.set(false);
        match &r {
            Ok(pid) => {
                tracing::info!(
                    new_pid = pid,
                    "upgrade ({why}): the new process serves; stopping accepting and draining"
                );
                self.handed_to.set(Some(*pid));
                self.api_stop.set();
                self.notify.send(&format!("MAINPID={pid}\nREADY=1"));
                self.stop.store(true, Ordering::SeqCst);
            }
            Err(e) => tracing::error!("upgrade ({why}) failed, still serving: {e}"),
        }
        r
    }

    async fn attempt(&self) -> Result<u32, String> {
        if self.reloader.borrow().shared.draining() {
            return Err("shutting down".into());
        }
        let bin = self.argv.first().ok_or("no argv[0] to start")?;
        let (ours, theirs) = sys::seqpacket_pair().map_err(|e| format!("socketpair: {e}"))?;
        let mut cmd = Command::new(bin);
        cmd.args(&self.argv[1..])
            .env(ENV_FD, theirs.as_raw_fd().to_string())
            // systemd's WATCHDOG_PID names us; the new process pings once it
            // is the main process, so it must not think the watchdog is ours.
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null());
        sys::inherit_fd(&mut cmd, theirs.as_raw_fd());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.to_string_lossy()))?;
        drop(theirs);
        let pid = child.id();
        if let Err(e) = self.send_sockets(&ours) {
            stop_child(&mut child);
            return Err(format!("handing sockets to pid {pid}: {e}"));
        }
        match wait_ready(&ours, &mut child).await {
            Ok(p) if p == pid => Ok(pid),
            Ok(p) => {
                stop_child(&mut child);
                Err(format!("pid {pid} answered as pid {p}"))
            }
            Err(e) => {
                stop_child(&mut child);
                Err(e)
            }
        }
    }

    fn send_sockets(&self, sock: &OwnedFd) -> std::io::Result<()> {
        let rl = self.reloader.borrow();
        let all: Vec<(SocketAddr, RawFd)> = rl
            .listeners
            .sockets()
            .map(|(a, fd)| (a, fd.as_raw_fd()))
            .collect();
        for batch in all.chunks(sys::MAX_FDS_PER_MESSAGE) {
            let addrs: Vec<String> = batch.iter().map(|(a, _)| a.to_string()).collect();
            let fds: Vec<RawFd> = batch.iter().map(|(_, f)| *f).collect();
            let msg = json!({"kind": "listeners", "addrs": addrs}).to_string();
            sys::send_with_fds(sock.as_raw_fd(), msg.as_bytes(), &fds)?;
        }
        if let Some((a, fd)) = &self.api {
            let msg = json!({"kind": "api", "addrs": [a.to_string()]}).to_string();
            sys::send_with_fds(sock.as_raw_fd(), msg.as_bytes(), &[fd.as_raw_fd()])?;
        }
        // The ticket keys, so sessions from before the upgrade resume on the
        // new process (a private socket pair: the keys go nowhere else).
        if let Some(keys) = crate::tls::tickets::export_process_keys() {
            let msg = json!({"kind": "tls_ticket_keys", "keys": keys}).to_string();
            sys::send_with_fds(sock.as_raw_fd(), msg.as_bytes(), &[])?;
        }
        sys::send_with_fds(sock.as_raw_fd(), br#"{"kind":"done"}"#, &[])
    }
}

/// Waits (polling, without blocking the control thread) for `ready`.
async fn wait_ready(sock: &OwnedFd, child: &mut Child) -> Result<u32, String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut buf = vec![0u8; 4096];
    loop {
        match sys::recv_with_fds(sock.as_raw_fd(), &mut buf, true) {
            Ok((0, _)) => {
                // The new process closed its end: it exited or gave up.
                let status = wait_exit(child, Duration::from_secs(2)).await;
                return Err(format!(
                    "the new process (pid {}) stopped before it was ready{}",
                    child.id(),
                    status.map(|s| format!(": {s}")).unwrap_or_default()
                ));
            }
            Ok((n, _)) => {
                let v: Value = serde_json::from_slice(&buf[..n]).unwrap_or(Value::Null);
                if v["kind"] == "ready" {
                    return v["pid"]
                        .as_u64()
                        .map(|p| p as u32)
                        .ok_or_else(|| "ready without a pid".to_string());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("handover socket: {e}")),
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("the new process exited before it was ready: {st}"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the new process was not ready within {READY_TIMEOUT:?}"
            ));
        }
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops a new process that failed (our own child, by its PID) and reaps it.
fn stop_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}
