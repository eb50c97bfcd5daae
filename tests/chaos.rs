//! Chaos under load, on both I/O drivers: three real backend processes
//! (tests/fixtures/backend.py) behind one route, concurrent clients, and a
//! chaos thread that SIGKILLs a random backend by PID and restarts it at
//! random, one kill every second or two.
//!
//! What must hold:
//! - every client-visible failure belongs to a request (or tunnel) that was in
//!   flight while a backend died: a request that starts after the death never
//!   fails, so dead pooled upstream connections are retried (idempotent GETs)
//!   or probed out, and refused connects fail over to a live backend;
//! - at most one failure per client connection per kill, no hung request;
//! - the workers never crash: the process runs with the same thread count all
//!   along, and each restarted backend gets traffic again;
//! - afterwards ringmesh holds the same sockets and other fds as before any
//!   traffic (see [`Fds`] for pooled upstreams and spare splice pipes).
//!
//! The HTTP clients are Rust threads: each request is stamped with its start
//! and end, so failures can be matched to kills exactly. wrk runs beside them
//! when installed, its errors bounded per kill.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::http::read_response;
use support::procs::{python, script};
use support::*;

both_drivers!(
    http_backends_killed_under_load,
    tcp_backends_killed_under_load
);

/// Client connections (threads) of each scenario.
const CLIENTS: usize = 8;
/// Workers of the ringmesh under test.
const WORKERS: usize = 2;
/// Idle pipes a worker's splice pool keeps (`PipePool::new(.., 64)` in src/worker).
const PIPES_KEPT_PER_WORKER: usize = 64;
/// A client thread stops by itself after this, should its test fail before stopping it.
const CLIENT_LIMIT: Duration = Duration::from_secs(120);
/// Longer than this without an answer is a hang.
const HANG: Duration = Duration::from_secs(10);

/// A backend process the test starts, SIGKILLs and restarts itself (not
/// ringmesh's supervisor: the point is a backend dying under ringmesh's feet).
struct PyBackend {
    port: u16,
    mode: &'static str,
    child: Option<Child>,
}

impl PyBackend {
    fn start(mode: &'static str) -> PyBackend {
        let mut b = PyBackend {
            port: free_port(),
            mode,
            child: None,
        };
        b.spawn();
        b
    }

    /// Starts the process and waits until it accepts. A port taken meanwhile
    /// (the process exits on a failed bind) is retried for a while.
    fn spawn(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = Command::new(python())
                .args([
                    "-S",
                    "-u",
                    &script(),
                    &self.port.to_string(),
                    "--mode",
                    self.mode,
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn python3 tests/fixtures/backend.py");
            let up = wait_until(Duration::from_secs(10), || {
                TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                    || !matches!(child.try_wait(), Ok(None))
            });
            if up && matches!(child.try_wait(), Ok(None)) {
                self.child = Some(child);
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                Instant::now() < deadline,
                "backend on port {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL by PID, then reap: once this returns, every socket of the
    /// process is closed.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PyBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The three backends, shared by a test and its chaos thread.
struct Fleet {
    backends: Mutex<Vec<PyBackend>>,
    /// Set when the test ends (or fails): the chaos thread starts nothing more.
    over: AtomicBool,
}

impl Fleet {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PyBackend>> {
        self.backends.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The test's handle on its [`Fleet`]. Dropping it, also while a failed
/// assertion unwinds, ends the chaos and kills every backend process, so
/// none outlives the test binary.
struct FleetHandle(Arc<Fleet>);

impl FleetHandle {
    fn start(mode: &'static str) -> FleetHandle {
        let backends = (0..3).map(|_| PyBackend::start(mode)).collect();
        FleetHandle(Arc::new(Fleet {
            backends: Mutex::new(backends),
            over: AtomicBool::new(false),
        }))
    }
    fn ports(&self) -> Vec<u16> {
        self.0.lock().iter().map(|b| b.port).collect()
    }
    fn pids(&self) -> Vec<u32> {
        self.0.lock().iter().map(PyBackend::pid).collect()
    }
}

impl Drop for FleetHandle {
    fn drop(&mut self) {
        self.0.over.store(true, Ordering::SeqCst);
        self.0.lock().iter_mut().for_each(PyBackend::kill);
    }
}

/// One kill: when SIGKILL was sent and when the process was reaped.
#[derive(Debug, Clone)]
struct Kill {
    backend: usize,
    pid: u32,
    sent: Instant,
    dead: Instant,
}

/// A client-visible failure: the request's (or tunnel's) span and what went wrong.
#[derive(Debug, Clone)]
struct Failure {
    client: usize,
    start: Instant,
    end: Instant,
    /// The backend pid the tunnel was connected to, when known (tcp).
    pid: Option<u32>,
    what: String,
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    ok: u64,
    failures: Vec<Failure>,
    /// Fatal: a wrong body, a hang, a refused connect to ringmesh.
    fatal: Vec<String>,
    pids: std::collections::HashSet<u32>,
}

/// ringmesh's fds by kind. Two kinds may legitimately stay above the
/// pre-traffic baseline and are handled apart: idle upstream connections in
/// the HTTP keep-alive pools (sockets; drained before counting, see
/// [`drain_upstream_pools`]) and spare splice pipes (at most
/// [`PIPES_KEPT_PER_WORKER`] pairs per worker, kept on purpose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fds {
    sockets: usize,
    pipes: usize,
    other: usize,
}

impl Fds {
    fn of(pid: u32) -> Fds {
        let mut f = Fds {
            sockets: 0,
            pipes: 0,
            other: 0,
        };
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return f;
        };
        for e in dir.flatten() {
            // An fd closed between readdir and readlink is simply not counted.
            let Ok(target) = std::fs::read_link(e.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if t.starts_with("socket:") {
                f.sockets += 1;
            } else if t.starts_with("pipe:") {
                f.pipes += 1;
            } else {
                f.other += 1;
            }
        }
        f
    }

    /// Waits until two looks 300 ms apart agree (the start-up probe
    /// connections are closing); returns the last look.
    fn settled(pid: u32) -> Fds {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = Fds::of(pid);
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = Fds::of(pid);
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }
}

fn proc_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A tiny xorshift generator; the seed is printed so a run can be replayed
/// with CHAOS_SEED.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("chaos seed {seed} (CHAOS_SEED={seed} replays the schedule)");
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }
}

/// Kills a random backend, restarts it after a random pause, pauses again;
/// until `length` has passed or the test is over. One backend is down at a time.
fn chaos(fleet: &Fleet, length: Duration) -> Vec<Kill> {
    let mut rng = Rng::new();
    let end = Instant::now() + length;
    let mut kills = Vec::new();
    // Let the load settle first: failures before the first kill are bugs.
    std::thread::sleep(Duration::from_millis(700));
    while Instant::now() < end {
        let i = rng.below(3) as usize;
        let mut bs = fleet.lock();
        if fleet.over.load(Ordering::SeqCst) {
            break;
        }
        let pid = bs[i].pid();
        let sent = Instant::now();
        bs[i].kill();
        let dead = Instant::now();
        drop(bs);
        kills.push(Kill {
            backend: i,
            pid,
            sent,
            dead,
        });
        std::thread::sleep(rng.millis(100, 1000));
        let mut bs = fleet.lock();
        if fleet.over.load(Ordering::SeqCst) {
            break;
        }
        bs[i].spawn();
        drop(bs);
        std::thread::sleep(rng.millis(300, 1200));
    }
    kills
}

/// Checks every failure against the kills: it must overlap the interval in
/// which some backend was dying (SIGKILL sent .. process reaped), and, when
/// the backend pid is known, that backend's. Returns failures per kill.
fn attribute(failures: &[Failure], kills: &[Kill]) -> Vec<usize> {
    let mut per_kill = vec![0usize; kills.len()];
    let mut orphans = Vec::new();
    for f in failures {
        let k = kills
            .iter()
            .position(|k| f.start <= k.dead && f.end >= k.sent && f.pid.is_none_or(|p| p == k.pid));
        match k {
            Some(k) => per_kill[k] += 1,
            None => orphans.push(f),
        }
    }
    assert!(
        orphans.is_empty(),
        "{} failure(s) of requests that were not in flight while a backend died \
         (a request started after a death must not fail): {orphans:#?}\nkills: {kills:#?}",
        orphans.len()
    );
    per_kill
}

/// Prints the schedule: which backend died when, and what it cost.
fn report_kills(kills: &[Kill], per_kill: &[usize]) {
    let t0 = kills.first().map(|k| k.sent);
    for (k, n) in kills.iter().zip(per_kill) {
        let at = t0.map_or(0.0, |t| k.sent.duration_since(t).as_secs_f64());
        eprintln!(
            "  +{at:6.2}s killed b{} (pid {}), dead after {:?}: {n} client failure(s)",
            k.backend,
            k.pid,
            k.dead.duration_since(k.sent)
        );
    }
}

/// Clears its flag when dropped: the chaos thread's "done", even if it panics.
struct Done(Arc<AtomicBool>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Samples ringmesh while `running` (at most two minutes): it must stay alive
/// with the same threads.
fn watch(rm: &mut Ringmesh, threads0: usize, running: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while running.load(Ordering::SeqCst) && Instant::now() < deadline {
        if let Some(st) = rm.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("ringmesh exited under chaos: {st:?}; log:\n{}", rm.logs());
        }
        let t = proc_threads(rm.pid());
        assert_eq!(t, threads0, "ringmesh's thread count changed under chaos");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn open(port: u16) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), HANG)?;
    s.set_read_timeout(Some(HANG))?;
    s.set_write_timeout(Some(HANG))?;
    Ok(s)
}

fn is_hang(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn http_config(port: u16, backends: &[u16]) -> String {
    let bs: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, p)| format!(r#"{{"name": "b{i}", "internal_port": {p}}}"#))
        .collect();
    format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": {WORKERS}, "shutdown_grace": "5s",
  "routes": {{"{port}": {{"name": "web", "backends": [{}]}}}}}}"#,
        bs.join(", ")
    )
}

/// wrk beside the Rust clients, when installed (`scripts/test.sh` installs
/// it): more keep-alive load from an independent client. Its errors cannot be
/// matched to kills one by one, so they are only bounded: at most one per
/// wrk connection per kill, and no timeout.
struct Wrk {
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Wrk {
    const CONNS: usize = 4;

    fn start(port: u16, secs: u64) -> Option<Wrk> {
        if Command::new("wrk").arg("-v").output().is_err() {
            eprintln!("wrk is not installed (scripts/test.sh installs it): Rust clients only");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("pace.lua");
        // 1 ms between a connection's requests: load, not saturation.
        std::fs::write(&script, "function delay() return 1 end\n").unwrap();
        let child = Command::new("wrk")
            .args(["-t", "1", "-c", &Self::CONNS.to_string()])
            .args(["-d", &format!("{secs}s"), "--timeout", "10s", "-s"])
            .arg(&script)
            .arg(format!("http://127.0.0.1:{port}/wrk"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn wrk");
        Some(Wrk {
            child: Some(child),
            _dir: dir,
        })
    }

    /// Waits for wrk's end: (requests, socket errors + non-2xx, timeouts).
    fn finish(mut self) -> (u64, usize, usize) {
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let number_before = |tag: &str| -> Option<u64> {
            let at = text.find(tag)?;
            text[..at].split_whitespace().last()?.parse().ok()
        };
        // "Socket errors: connect 0, read 12, write 0, timeout 0" (only when there were some).
        let sockets = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Socket errors:"))
            .unwrap_or("");
        let count = |line: &str, tag: &str| -> usize {
            line.split(',')
                .find_map(|part| part.trim().strip_prefix(tag))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0)
        };
        let non2xx = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let requests = number_before(" requests in").unwrap_or(0);
        let errors =
            count(sockets, "connect") + count(sockets, "read") + count(sockets, "write") + non2xx;
        (requests, errors, count(sockets, "timeout"))
    }
}

impl Drop for Wrk {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One keep-alive client: GET /c<client>/<n> in a loop; a failure drops the
/// connection and the next request opens a new one.
fn http_client(port: u16, client: usize, stop: &AtomicBool, seen: &Mutex<Seen>) {
    let mut conn: Option<(BufReader<TcpStream>, TcpStream)> = None;
    let mut n = 0u64;
    let deadline = Instant::now() + CLIENT_LIMIT;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        n += 1;
        let path = format!("/c{client}/{n}");
        let start = Instant::now();
        if conn.is_none() {
            match open(port) {
                Ok(s) => conn = Some((BufReader::new(s.try_clone().unwrap()), s)),
                Err(e) => {
                    let msg = format!("client {client}: connect to ringmesh: {e}");
                    seen.lock().unwrap().fatal.push(msg);
                    return;
                }
            }
        }
        let (r, w) = conn.as_mut().unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: chaos\r\n\r\n");
        let res = w
            .write_all(req.as_bytes())
            .and_then(|()| read_response(r, false));
        let end = Instant::now();
        let mut seen = seen.lock().unwrap();
        let failure = match res {
            Ok(m) if m.status() == 200 => {
                // "hello from <pid> <path>\n": the answer to this very request.
                let body = m.body_str();
                let mut words = body.split_whitespace().skip(2);
                let pid = words.next().and_then(|p| p.parse().ok());
                match (pid, words.next()) {
                    (Some(pid), Some(p)) if p == path => {
                        seen.ok += 1;
                        seen.pids.insert(pid);
                        None
                    }
                    _ => {
                        seen.fatal.push(format!("{path}: wrong body {body:?}"));
                        return;
                    }
                }
            }
            Ok(m) => Some(format!("status {} {}", m.status(), m.body_str().trim())),
            Err(e) if is_hang(&e) => {
                seen.fatal
                    .push(format!("{path}: no answer within {HANG:?}"));
                return;
            }
            Err(e) => Some(format!("{e}")),
        };
        if let Some(what) = failure {
            seen.failures.push(Failure {
                client,
                start,
                end,
                pid: None,
                what,
            });
            conn = None;
        }
        drop(seen);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Empties the workers' keep-alive pools: with every backend dead, a request
/// takes each pooled connection of its worker, finds it closed and drops it
/// (then gets a 502). New connections until both workers were reached.
fn drain_upstream_pools(port: u16, pid: u32, sockets0: usize) -> Fds {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = Fds::settled(pid);
        if now.sockets <= sockets0 || Instant::now() > deadline {
            return now;
        }
        for _ in 0..4 {
            let mut c = http::Client::connect(port);
            c.send(b"GET /drain HTTP/1.1\r\nHost: chaos\r\nConnection: close\r\n\r\n");
            let r = c.response();
            assert!(
                matches!(r.status(), 502 | 503),
                "every backend is down: {}",
                r.raw_head
            );
        }
    }
}

fn http_backends_killed_under_load(io: &str) {
    let fleet = FleetHandle::start("http");
    let ports = fleet.ports();
    let port = free_port();
    let mut rm = Ringmesh::start(&http_config(port, &ports), io, &[port]);
    let pid = rm.pid();
    let fds0 = Fds::settled(pid);
    let threads0 = proc_threads(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || http_client(port, i, &stop, &seen))
        })
        .collect();
    let wrk = Wrk::start(port, 20);
    let running = Arc::new(AtomicBool::new(true));
    let chaos_thread = {
        let (f, r) = (fleet.0.clone(), running.clone());
        std::thread::spawn(move || {
            let _done = Done(r);
            chaos(&f, Duration::from_secs(20))
        })
    };
    watch(&mut rm, threads0, &running);
    let kills = chaos_thread.join().unwrap();
    // Every backend is up again: the load runs on a little, then stops.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.fatal.is_empty(), "fatal: {:#?}", seen.fatal);
    assert!(kills.len() >= 5, "only {} kills", kills.len());
    assert!(seen.ok > 1_000, "only {} requests answered", seen.ok);
    let per_kill = attribute(&seen.failures, &kills);
    report_kills(&kills, &per_kill);
    let worst = per_kill.iter().copied().max().unwrap_or(0);
    assert!(
        worst <= CLIENTS,
        "a kill cost {worst} failures, more than the {CLIENTS} client connections: {:#?}",
        seen.failures
    );
    for f in &seen.failures {
        assert!(
            f.what.starts_with("status 502") || !f.what.starts_with("status"),
            "client {} got {} (only 502 or a close may follow a backend's death)",
            f.client,
            f.what
        );
    }
    if let Some(wrk) = wrk {
        let (requests, errors, timeouts) = wrk.finish();
        eprintln!("chaos http ({io}): wrk alongside: {requests} requests, {errors} errors");
        assert_eq!(timeouts, 0, "wrk saw requests hang");
        assert!(requests > 0, "wrk made no request");
        assert!(
            errors <= kills.len() * Wrk::CONNS,
            "wrk saw {errors} errors in {} kills with {} connections",
            kills.len(),
            Wrk::CONNS
        );
    }
    let logs = rm.logs();
    let retries = logs.matches("retrying on a new connection").count();
    assert!(
        retries >= 1,
        "no request met a dead pooled connection in {} kills: the retry path was not exercised",
        kills.len()
    );
    eprintln!(
        "chaos http ({io}): {} kills, {} requests ok, {} failed (per kill {per_kill:?}), \
         {retries} retried on a new connection, {} backend pids served",
        kills.len(),
        seen.ok,
        seen.failures.len(),
        seen.pids.len()
    );

    // Each backend, restarted or not, gets traffic again (a restarted one
    // may first sit out its connect-failure cooldown).
    let current = fleet.pids();
    let mut served = std::collections::HashSet::new();
    let all_served = wait_until(Duration::from_secs(30), || {
        let mut c = http::Client::connect(port);
        let r = c.get("/after", "chaos", "Connection: close\r\n");
        assert_eq!(r.status(), 200, "after chaos: {}", r.raw_head);
        if let Some(p) = r.body_str().split_whitespace().nth(2) {
            served.insert(p.parse::<u32>().unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(40));
        current.iter().all(|p| served.contains(p))
    });
    assert!(
        all_served,
        "backends {current:?} not all back in rotation: served {served:?}"
    );

    // Back to the baseline: no client socket left, the pools emptied, the
    // same threads and the same other fds.
    fleet.0.lock().iter_mut().for_each(PyBackend::kill);
    std::thread::sleep(Duration::from_millis(1_100)); // pooled ones get probed now
    let fds1 = drain_upstream_pools(port, pid, fds0.sockets);
    let threads1 = proc_threads(pid);
    eprintln!("chaos http ({io}): fds {fds0:?} -> {fds1:?}, threads {threads0} -> {threads1}");
    assert_eq!(threads1, threads0, "thread count");
    assert_eq!(fds1.sockets, fds0.sockets, "sockets left open");
    assert_eq!(fds1.other, fds0.other, "non-socket, non-pipe fds");
    assert!(
        fds1.pipes <= fds0.pipes + 2 * PIPES_KEPT_PER_WORKER * WORKERS,
        "pipes beyond the splice pools' bound: {fds1:?}"
    );
    assert!(rm.child.as_mut().unwrap().try_wait().unwrap().is_none());
}

/// One tcp client: tunnels of a random number of echo round trips, back to back.
fn tcp_client(port: u16, client: usize, stop: &AtomicBool, seen: &Mutex<Seen>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((client as u64 + 1) * 0x1000_0001));
    let deadline = Instant::now() + CLIENT_LIMIT;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let start = Instant::now();
        let s = match open(port) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("client {client}: connect to ringmesh: {e}");
                seen.lock().unwrap().fatal.push(msg);
                return;
            }
        };
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        let mut pid = None;
        let rounds = 5 + rng.below(40);
        let mut line = String::new();
        // Why the tunnel ended before its last round trip, and whether it hung.
        let mut ended: Option<(bool, String)> = None;
        let cut = |what: String, e: Option<std::io::Error>| match e {
            Some(e) => (is_hang(&e), format!("{what}: {e}")),
            None => (false, what),
        };
        // The backend greets with "pid <pid>", then echoes.
        match r.read_line(&mut line) {
            Ok(_) if line.starts_with("pid ") => pid = line[4..].trim().parse().ok(),
            Ok(_) => ended = Some(cut(format!("closed before the greeting ({line:?})"), None)),
            Err(e) => ended = Some(cut("greeting".into(), Some(e))),
        }
        let mut i = 0;
        while ended.is_none() && i < rounds {
            i += 1;
            let msg = format!("ping {client} {i}\n");
            line.clear();
            match w
                .write_all(msg.as_bytes())
                .and_then(|()| r.read_line(&mut line))
            {
                Ok(_) if line == msg => {}
                Ok(0) => ended = Some(cut(format!("closed after {} round trips", i - 1), None)),
                Ok(_) => {
                    let m = format!("client {client}: echo {msg:?} came back as {line:?}");
                    seen.lock().unwrap().fatal.push(m);
                    return;
                }
                Err(e) => ended = Some(cut(format!("round trip {i}"), Some(e))),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let end = Instant::now();
        let mut seen = seen.lock().unwrap();
        match ended {
            None => {
                seen.ok += 1;
                seen.pids.extend(pid);
            }
            Some((true, what)) => {
                seen.fatal
                    .push(format!("client {client}: tunnel to {pid:?} hung: {what}"));
                return;
            }
            Some((false, what)) => seen.failures.push(Failure {
                client,
                start,
                end,
                pid,
                what,
            }),
        }
    }
}

fn tcp_backends_killed_under_load(io: &str) {
    let fleet = FleetHandle::start("tcp");
    let ports = fleet.ports();
    let port = free_port();
    let mut rm = Ringmesh::start(&tcp_config(port, &ports, "round_robin", ""), io, &[port]);
    let pid = rm.pid();
    let fds0 = Fds::settled(pid);
    let threads0 = proc_threads(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || tcp_client(port, i, &stop, &seen))
        })
        .collect();
    let running = Arc::new(AtomicBool::new(true));
    let chaos_thread = {
        let (f, r) = (fleet.0.clone(), running.clone());
        std::thread::spawn(move || {
            let _done = Done(r);
            chaos(&f, Duration::from_secs(12))
        })
    };
    watch(&mut rm, threads0, &running);
    let kills = chaos_thread.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.fatal.is_empty(), "fatal: {:#?}", seen.fatal);
    assert!(kills.len() >= 3, "only {} kills", kills.len());
    assert!(seen.ok > 50, "only {} tunnels completed", seen.ok);
    let per_kill = attribute(&seen.failures, &kills);
    report_kills(&kills, &per_kill);
    let worst = per_kill.iter().copied().max().unwrap_or(0);
    assert!(
        worst <= CLIENTS,
        "a kill cost {worst} tunnels, more than the {CLIENTS} clients: {:#?}",
        seen.failures
    );
    // A tunnel to a killed backend is closed promptly, not left hanging.
    let slowest = seen
        .failures
        .iter()
        .filter_map(|f| {
            let k = kills.iter().find(|k| Some(k.pid) == f.pid)?;
            Some(f.end.saturating_duration_since(k.dead))
        })
        .max()
        .unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(5),
        "a tunnel took {slowest:?} to close after its backend died"
    );
    eprintln!(
        "chaos tcp ({io}): {} kills, {} tunnels ok, {} cut (per kill {per_kill:?}), \
         slowest close after a death {slowest:?}",
        kills.len(),
        seen.ok,
        seen.failures.len(),
    );

    // No pools for tunnels: every socket goes; spare splice pipes may stay.
    let settled = wait_until(Duration::from_secs(10), || {
        Fds::of(pid).sockets <= fds0.sockets
    });
    let fds1 = Fds::settled(pid);
    let threads1 = proc_threads(pid);
    eprintln!("chaos tcp ({io}): fds {fds0:?} -> {fds1:?}, threads {threads0} -> {threads1}");
    assert!(settled, "sockets left open: {fds0:?} -> {fds1:?}");
    assert_eq!(threads1, threads0, "thread count");
    assert_eq!(fds1.sockets, fds0.sockets, "sockets left open");
    assert_eq!(fds1.other, fds0.other, "non-socket, non-pipe fds");
    assert!(
        fds1.pipes <= fds0.pipes + 2 * PIPES_KEPT_PER_WORKER * WORKERS,
        "pipes beyond the splice pools' bound: {fds1:?}"
    );
    // Still serving.
    let mut s = open(port).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("pid "), "after chaos: {line:?}");
    s.write_all(b"bye\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "bye\n");
}
