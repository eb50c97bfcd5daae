//! Test support: start the real `ringmesh` binary on loopback, real backends on
//! threads, bounded waits. Processes are stopped by PID in `Drop`.
#![allow(dead_code)]

/// Runs each scenario once per driver: `name::uring` and `name::epoll`.
#[macro_export]
macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn uring() { super::$name("uring") }
            #[test]
            fn epoll() { super::$name("epoll") }
        }
    )*};
}

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod api;
pub mod etcd;
pub mod http;
pub mod pki;
pub mod procs;

pub const BIN: &str = env!("CARGO_BIN_EXE_ringmesh");

/// A port that was free a moment ago, for a server the test starts later.
///
/// Taken from 12000-31999, below the kernel's ephemeral range (32768-60999):
/// a port the kernel hands out for `bind(:0)` is also what it gives the
/// source side of outgoing connections, so between this call and the
/// server's bind a test's own client connection could take it ("address
/// already in use", seen under load). Ports are dealt from a per-process
/// cursor (never the same port twice in a test binary) starting at an offset
/// drawn from the PID and clock, and each is checked by binding it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 12_000;
    const SPAN: u32 = 20_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        let seed = std::process::id().wrapping_mul(2_654_435_761)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
        let _ = NEXT.compare_exchange(u32::MAX, seed % SPAN, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}-{}", LOW + SPAN - 1)
}

/// A loopback listener on a free port with a deep accept queue: std's
/// `TcpListener::bind` uses a backlog of 128, and 200 simultaneous connects
/// to a busy test backend then lose SYNs and stall for seconds.
pub fn listen_loopback() -> TcpListener {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(1024).unwrap();
    s.into()
}

/// A running ringmesh process.
pub struct Ringmesh {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Ringmesh {
    /// Writes `config` and runs `ringmesh run --config` with `--io io` and extra args,
    /// then waits until every port in `ports` accepts connections.
    pub fn start(config: &str, io: &str, ports: &[u16]) -> Ringmesh {
        Self::start_args(config, &["--io", io], ports)
    }

    pub fn start_args(config: &str, args: &[&str], ports: &[u16]) -> Ringmesh {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.json");
        std::fs::write(&cfg, config).unwrap();
        let log = dir.path().join("ringmesh.log");
        let child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .arg("--log")
            .arg("debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn ringmesh");
        let rm = Ringmesh {
            child: Some(child),
            dir,
            config: cfg,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for &p in ports {
            loop {
                if TcpStream::connect(("127.0.0.1", p)).is_ok() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "ringmesh did not listen on {p}; log:\n{}",
                    rm.logs()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // The probe connections above went through to backends; give their
        // tunnels a moment to close so tests start from a quiet state.
        std::thread::sleep(Duration::from_millis(100));
        rm
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY-free: libc::kill on the PID of our own child.
        let r = unsafe { libc::kill(self.pid() as i32, sig) };
        assert_eq!(r, 0, "kill({sig})");
    }

    /// Waits up to `limit` for exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .unwrap()
            .count()
    }

    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }
}

impl Drop for Ringmesh {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A backend on a thread: accepts connections and runs `handler` on each.
pub struct Backend {
    pub port: u16,
    pub accepted: Arc<AtomicUsize>,
    pub open: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn spawn<F>(handler: F) -> Backend
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        let l = listen_loopback();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let (s, a, o) = (stop.clone(), accepted.clone(), open.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        a.fetch_add(1, Ordering::SeqCst);
                        o.fetch_add(1, Ordering::SeqCst);
                        let h = handler.clone();
                        let o = o.clone();
                        std::thread::spawn(move || {
                            h(c);
                            o.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Backend {
            port,
            accepted,
            open,
            stop,
            thread: Some(thread),
        }
    }

    /// Echoes everything back; half-closes after the client's EOF.
    pub fn echo() -> Backend {
        Backend::spawn(|mut c| {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if c.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = c.shutdown(std::net::Shutdown::Write);
        })
    }

    /// Writes `tag` and a newline, then waits for the client to close.
    pub fn tagged(tag: &'static str) -> Backend {
        Backend::spawn(move |mut c| {
            let _ = c.write_all(format!("{tag}\n").as_bytes());
            let mut buf = [0u8; 1024];
            while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
        })
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A deterministic pseudo-random stream: a 1 MiB random block repeated, each
/// copy stamped with its index so reordering or loss changes the hash.
pub struct Stream {
    block: Vec<u8>,
}

impl Stream {
    pub fn new(seed: u64) -> Stream {
        let mut x = seed | 1;
        let block = (0..(1 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Stream { block }
    }

    /// Block `i` of the stream.
    pub fn chunk(&mut self, i: u64) -> &[u8] {
        self.block[..8].copy_from_slice(&i.to_le_bytes());
        &self.block
    }
}

/// Reads until EOF, returning (bytes, sha256 hex).
pub fn drain_hash(r: &mut impl Read) -> std::io::Result<(u64, String)> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex(&h.finalize())))
}

/// Writes `mib` MiB of `Stream::new(seed)`, returning its sha256 hex.
pub fn send_stream(w: &mut impl Write, seed: u64, mib: u64) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut s = Stream::new(seed);
    let mut h = Sha256::new();
    for i in 0..mib {
        let c = s.chunk(i);
        h.update(c);
        w.write_all(c)?;
    }
    Ok(hex(&h.finalize()))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Polls `f` until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// Connects to 127.0.0.1:port with timeouts set.
pub fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    )
    .expect("connect to ringmesh");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Connects from a given loopback source address (for ip_hash).
pub fn connect_from(src: [u8; 4], port: u16) -> TcpStream {
    let sock = socket_from(src);
    sock.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn socket_from(src: [u8; 4]) -> socket2::Socket {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((src, 0)).into()).unwrap();
    s
}

/// Reads one line.
pub fn read_line(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap_or(0) == 1 {
        if b[0] == b'\n' {
            break;
        }
        out.push(b[0]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A config with one tcp route on `port` to the given backend ports.
pub fn tcp_config(port: u16, backends: &[u16], balance: &str, extra_route: &str) -> String {
    let bs: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(r#"{{"name": "b{i}", "internal_host": "127.0.0.1", "internal_port": "{p}"}}"#)
        })
        .collect();
    format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 2, "shutdown_grace": "20s",
  "routes": {{"{port}": {{"name": "t", "protocol": "tcp", "load_balance": "{balance}" {extra_route},
  "backends": [{}]}}}}}}"#,
        bs.join(", ")
    )
}

pub type Shared<T> = Arc<Mutex<T>>;

/// A child process killed (by PID) and reaped when dropped, even on a panic.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
