//! Backends from DNS: a real dnsmasq on a free loopback port, ringmesh
//! routes whose backends are `discover` entries, tagged backends on
//! 127.0.0.11-13 sharing one port (as A records would name them).
//!
//! - A records: dnsmasq re-reads its `--addn-hosts` file on SIGHUP; records
//!   added are picked up within the interval, records removed drain, and a
//!   bounded load running through the changes sees no failed connection.
//! - SRV records: dnsmasq does NOT re-read `srv-host` on SIGHUP (only hosts
//!   files), so the test restarts it by PID with a new conf file. Priority
//!   and weight are honoured; while dnsmasq is down lookups fail, the last
//!   good set keeps serving and the failure is reported (/api/discovery).
//! - TTL: with an `interval` of 60 s and records of TTL 2 s, a record added
//!   is picked up within seconds (the resolver asks again when the TTL ends).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{free_port, wait_until, Ringmesh};

/// dnsmasq on 127.0.0.1:port, no upstream, answering from `hosts` and `conf`.
struct Dnsmasq {
    port: u16,
    dir: PathBuf,
    /// `--local-ttl`: the TTL of the answers (dnsmasq's default is 0).
    ttl: u32,
    child: Option<Child>,
}

impl Dnsmasq {
    fn start(dir: &Path, hosts: &str, srv: &[&str]) -> Dnsmasq {
        Self::start_ttl(dir, hosts, srv, 0)
    }

    fn start_ttl(dir: &Path, hosts: &str, srv: &[&str], ttl: u32) -> Dnsmasq {
        let mut d = Dnsmasq {
            port: free_udp_port(),
            dir: dir.to_path_buf(),
            ttl,
            child: None,
        };
        d.write(hosts, srv);
        d.run();
        d
    }

    fn write(&self, hosts: &str, srv: &[&str]) {
        std::fs::write(self.dir.join("hosts"), hosts).unwrap();
        let conf: String = srv.iter().map(|s| format!("srv-host={s}\n")).collect();
        std::fs::write(self.dir.join("dnsmasq.conf"), conf).unwrap();
    }

    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dnsmasq.log"))
            .unwrap();
        let child = Command::new("dnsmasq")
            .arg("--no-daemon")
            .arg(format!("--conf-file={}", self.dir.join("dnsmasq.conf").display()))
            .args(["--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1"])
            .arg(format!("--port={}", self.port))
            .arg(format!("--local-ttl={}", self.ttl))
            .arg(format!("--addn-hosts={}", self.dir.join("hosts").display()))
            .args(["--user=root", "--pid-file="])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dnsmasq is not installed (Debian package dnsmasq-base; scripts/test.sh installs it)");
        self.child = Some(child);
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // Any answer (even NXDOMAIN) means it serves.
        let q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01x\x00\x00\x01\x00\x01";
        let up = wait_until(Duration::from_secs(10), || {
            let _ = sock.send_to(q, ("127.0.0.1", self.port));
            let mut b = [0u8; 512];
            sock.recv(&mut b).is_ok()
        });
        assert!(
            up,
            "dnsmasq did not answer: {}",
            std::fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default()
        );
    }

    fn hup(&self) {
        let pid = self.child.as_ref().unwrap().id();
        unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_udp_port() -> u16 {
    loop {
        let p = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// A backend on `ip:port` that writes `tag\n` on every connection.
struct Tagged {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Tagged {
    fn start(ip: [u8; 4], port: u16, tag: &'static str) -> Tagged {
        let l = TcpListener::bind(SocketAddr::from((ip, port))).unwrap();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.write_all(format!("{tag}\n").as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Tagged {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Tagged {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tag(port: u16) -> Option<String> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let t = out.trim().to_string();
    (!t.is_empty()).then_some(t)
}

/// A bounded load: one client connecting in a loop, counting tags and failures.
struct Load {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, f, v) = (stop.clone(), failures.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(60);
            for _ in 0..100_000 {
                if s.load(Ordering::SeqCst) || Instant::now() > end {
                    break;
                }
                match tag(port) {
                    Some(t) => v.lock().unwrap().push(t),
                    None => {
                        f.fetch_add(1, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Load {
            stop,
            failures,
            seen,
            thread: Some(thread),
        }
    }

    /// Waits until the last `n` answers all satisfy `f`.
    fn settle(&self, limit: Duration, n: usize, f: impl Fn(&str) -> bool) -> bool {
        let from = self.seen.lock().unwrap().len();
        wait_until(limit, || {
            let v = self.seen.lock().unwrap();
            v.len() >= from + n && v[v.len() - n..].iter().all(|t| f(t))
        })
    }

    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        let n = self.seen.lock().unwrap().len();
        (n, self.failures.load(Ordering::SeqCst))
    }
}

fn config(route_port: u16, dashboard: u16, discover: Value, balance: &str) -> String {
    json!({
        "listen_host": "127.0.0.1", "dashboard_port": dashboard, "workers": 1,
        "routes": {route_port.to_string(): {"name": "api", "protocol": "tcp", "load_balance": balance,
            "backends": [{"name": "api", "discover": discover}]}}
    })
    .to_string()
}

fn dns_a_records(io: &str) {
    let dir = tempfile::tempdir().unwrap();
    let bport = free_port();
    let (_b11, _b12) = (
        Tagged::start([127, 0, 0, 11], bport, "b11"),
        Tagged::start([127, 0, 0, 12], bport, "b12"),
    );
    let mut b11 = Some(_b11);
    let dns = Dnsmasq::start(dir.path(), "127.0.0.11 api.internal\n", &[]);
    let (port, dash) = (free_port(), free_port());
    let cfg = config(
        port,
        dash,
        json!({"dns": "api.internal", "type": "a", "port": bport,
        "interval": "500ms", "resolver": format!("127.0.0.1:{}", dns.port)}),
        "round_robin",
    );
    let rm = Ringmesh::start(&cfg, io, &[port]);
    assert!(
        wait_until(Duration::from_secs(5), || tag(port).as_deref()
            == Some("b11")),
        "{}",
        rm.logs()
    );
    let load = Load::start(port);

    // A record added: picked up within the interval (+ slack for a loaded machine).
    dns.write("127.0.0.11 api.internal\n127.0.0.12 api.internal\n", &[]);
    dns.hup();
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || load
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|t| t == "b12")),
        "the added record was not picked up; log:\n{}",
        rm.logs()
    );
    eprintln!(
        "A record added -> first connection to it after {:?}",
        t0.elapsed()
    );
    let s = support::api::get(dash, "/api/status").json();
    let addrs = s["routes"][0]["backends"].to_string();
    assert!(
        addrs.contains("127.0.0.11") && addrs.contains("127.0.0.12"),
        "{addrs}"
    );
    // A user reload keeps the discovered backends (the load sees no gap).
    assert_eq!(support::api::put_config(dash, &cfg).status, 200);
    let s = support::api::get(dash, "/api/status").json();
    assert_eq!(
        s["routes"][0]["backends"].as_array().map(Vec::len),
        Some(2),
        "{s}"
    );

    // A record removed: it drains (no new connections), then it may stop.
    dns.write("127.0.0.12 api.internal\n", &[]);
    dns.hup();
    assert!(
        load.settle(Duration::from_secs(10), 20, |t| t == "b12"),
        "b11 still gets connections"
    );
    drop(b11.take());
    assert!(load.settle(Duration::from_secs(5), 20, |t| t == "b12"));
    let (n, failed) = load.finish();
    assert!(n > 50, "the load ran only {n} connections");
    assert_eq!(
        failed, 0,
        "{failed} of {n} connections failed during the changes"
    );
    let d = support::api::get(dash, "/api/discovery").json();
    assert_eq!(
        d["entries"][0]["backends"],
        json!([format!("127.0.0.12:{bport}")]),
        "{d}"
    );
    assert!(rm.logs().contains("discovered backends changed"));
}

fn dns_srv_priority_weight_and_failure(io: &str) {
    let dir = tempfile::tempdir().unwrap();
    let bport = free_port();
    let _bs = [
        Tagged::start([127, 0, 0, 11], bport, "b11"),
        Tagged::start([127, 0, 0, 12], bport, "b12"),
        Tagged::start([127, 0, 0, 13], bport, "b13"),
    ];
    let hosts = "127.0.0.11 t1.internal\n127.0.0.12 t2.internal\n127.0.0.13 t3.internal\n";
    let srv = format!("_http._tcp.api.internal,t1.internal,{bport},1,30");
    let srv2 = format!("_http._tcp.api.internal,t2.internal,{bport},1,10");
    let srv3 = format!("_http._tcp.api.internal,t3.internal,{bport},2,10");
    let mut dns = Dnsmasq::start(dir.path(), hosts, &[&srv, &srv2, &srv3]);
    let (port, dash) = (free_port(), free_port());
    let cfg = config(
        port,
        dash,
        json!({"dns": "_http._tcp.api.internal", "interval": "300ms",
        "resolver": format!("127.0.0.1:{}", dns.port)}),
        "round_robin",
    );
    let rm = Ringmesh::start(&cfg, io, &[port]);
    assert!(
        wait_until(Duration::from_secs(5), || {
            support::api::get(dash, "/api/status").json()["routes"][0]["backends"]
                .as_array()
                .is_some_and(|a| a.len() == 3)
        }),
        "{}",
        rm.logs()
    );
    // Workers pick up the published backends on their next tick.
    assert!(wait_until(Duration::from_secs(5), || tag(port).is_some()));
    // Priority 1 only (t1, t2), weighted 3:1; priority 2 (t3) never.
    let mut counts = std::collections::HashMap::new();
    for _ in 0..40 {
        let t = tag(port).unwrap_or_else(|| {
            panic!(
                "{}\n{}",
                support::api::get(dash, "/api/status").body,
                rm.logs()
            )
        });
        *counts.entry(t).or_insert(0) += 1;
    }
    assert_eq!(counts.get("b13"), None, "{counts:?}");
    assert_eq!((counts["b11"], counts["b12"]), (30, 10), "{counts:?}");

    // dnsmasq down: lookups fail, reported; the last good set serves on.
    dns.kill();
    assert!(wait_until(Duration::from_secs(10), || {
        let d = support::api::get(dash, "/api/discovery").json();
        d["entries"][0]["last_error"].is_string()
    }));
    for _ in 0..10 {
        assert!(matches!(tag(port).as_deref(), Some("b11" | "b12")));
    }
    assert!(
        rm.logs().contains("keeping the last good 3 backend(s)"),
        "{}",
        rm.logs()
    );

    // Restarted (by PID) with new SRV records: t3 alone at priority 1.
    let srv3 = format!("_http._tcp.api.internal,t3.internal,{bport},1,10");
    dns.write(hosts, &[&srv3]);
    dns.run();
    assert!(
        wait_until(Duration::from_secs(10), || {
            (0..5).all(|_| tag(port).as_deref() == Some("b13"))
        }),
        "{}",
        rm.logs()
    );
    let d = support::api::get(dash, "/api/discovery").json();
    assert!(d["entries"][0]["last_error"].is_null(), "{d}");
}

both_drivers!(dns_a_records, dns_srv_priority_weight_and_failure);

fn dns_ttl_shorter_than_interval(io: &str) {
    let dir = tempfile::tempdir().unwrap();
    let bport = free_port();
    let _b = (
        Tagged::start([127, 0, 0, 11], bport, "b11"),
        Tagged::start([127, 0, 0, 12], bport, "b12"),
    );
    let dns = Dnsmasq::start_ttl(dir.path(), "127.0.0.11 api.internal\n", &[], 2);
    let (port, dash) = (free_port(), free_port());
    let cfg = config(
        port,
        dash,
        json!({"dns": "api.internal", "type": "a", "port": bport,
        "interval": "60s", "resolver": format!("127.0.0.1:{}", dns.port)}),
        "round_robin",
    );
    let rm = Ringmesh::start(&cfg, io, &[port]);
    assert!(
        wait_until(Duration::from_secs(5), || tag(port).as_deref()
            == Some("b11")),
        "{}",
        rm.logs()
    );
    dns.write("127.0.0.11 api.internal\n127.0.0.12 api.internal\n", &[]);
    dns.hup();
    let t0 = Instant::now();
    // Far below the 60 s interval: the 2 s TTL governs (slack for a loaded machine).
    assert!(
        wait_until(Duration::from_secs(10), || tag(port).as_deref()
            == Some("b12")),
        "the added record was not picked up when its TTL ended; log:\n{}",
        rm.logs()
    );
    eprintln!(
        "TTL 2 s, interval 60 s: record added -> served after {:?}",
        t0.elapsed()
    );
}

both_drivers!(dns_ttl_shorter_than_interval);

/// `weight` on static backends: round_robin gives each its share.
fn static_weights(io: &str) {
    let bport = free_port();
    let _a = Tagged::start([127, 0, 0, 11], bport, "a");
    let _b = Tagged::start([127, 0, 0, 12], bport, "b");
    let port = free_port();
    let cfg = json!({"listen_host": "127.0.0.1", "workers": 1, "routes": {port.to_string(): {
        "protocol": "tcp", "backends": [
            {"name": "a", "internal_host": "127.0.0.11", "internal_port": bport, "weight": 3},
            {"name": "b", "internal_host": "127.0.0.12", "internal_port": bport}]}}});
    let _rm = Ringmesh::start(&cfg.to_string(), io, &[port]);
    let mut counts = std::collections::HashMap::new();
    for _ in 0..40 {
        *counts.entry(tag(port).unwrap()).or_insert(0) += 1;
    }
    assert_eq!((counts["a"], counts["b"]), (30, 10), "{counts:?}");
}

both_drivers!(static_weights);
