//! A fleet in network namespaces: three ringmesh nodes, each in its own
//! namespace with its own veth address (10.231.N.2; the host side is
//! 10.231.N.1), HAProxy in the root namespace as the L4 balancer (`mode tcp`,
//! `send-proxy-v2` on its servers, health checks every 200 ms, redispatch on
//! a refused connect), a backend in the root namespace. A wrk run goes
//! through HAProxy while one node is stopped gracefully (SIGTERM) and started
//! again: no failed request, HAProxy's health checks alone take the node out
//! and back in. The nodes' routes take the PROXY protocol and write an access
//! log: every line of every node shows the client wrk ran from (127.0.0.1),
//! never HAProxy's side of the veth (10.231.N.1) the node's socket sees.
//!
//! How: the nodes run with `shutdown_delay` and HAProxy checks `GET /readyz`
//! on the dashboard port (plain HTTP, no PROXY header: HAProxy sends one on
//! checks only with `check-send-proxy`). SIGTERM makes `/readyz` answer 503
//! while the listeners still accept; HAProxy takes the node out; then the
//! listeners close and the node drains. HAProxy cannot redispatch a
//! connection a node accepted and then reset, so a balancer needs the delay
//! to cover its check interval times `fall` (here 200 ms x 1).
//!
//! Skipped, with a message, only where namespaces cannot be created (not
//! root, no CAP_SYS_ADMIN, no `ip`); HAProxy or wrk missing is a failure.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{free_port, wait_until, BIN};

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A run killed midway (its drops never ran) leaves namespaces and veths
/// whose 10.231.x addresses shadow the next run's: remove those whose test
/// process (the digits after "rmf") is gone.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("rmf") else {
            continue;
        };
        let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if pid.is_empty() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = ip(&["netns", "del", name]);
        let _ = ip(&["link", "del", &format!("{name}h")]);
    }
}

/// Namespaces and veth pairs, removed on drop.
struct Net {
    names: Vec<String>,
}

impl Net {
    fn create(tag: &str, subnets: &[u8]) -> Result<Net, String> {
        remove_stale();
        let mut net = Net { names: Vec::new() };
        for &n in subnets {
            let ns = format!("rmf{}{tag}{n}", std::process::id() % 100_000);
            ip(&["netns", "add", &ns])?;
            net.names.push(ns.clone());
            let (host, inner) = (format!("{ns}h"), format!("{ns}i"));
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["addr", "add", &format!("10.231.{n}.1/24"), "dev", &host])?;
            ip(&["link", "set", &host, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.231.{n}.2/24"),
                "dev",
                &inner,
            ])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.names {
            // Removing the namespace removes its veth end, and so the pair.
            let _ = ip(&["netns", "del", ns]);
            let _ = ip(&["link", "del", &format!("{ns}h")]);
        }
    }
}

/// A ringmesh node running inside namespace `ns`.
struct Node {
    ns: String,
    addr: String,
    dir: PathBuf,
    io: String,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
            .unwrap();
        let child = Command::new("ip")
            .args([
                "netns", "exec", &self.ns, BIN, "run", "--io", &self.io, "--config",
            ])
            .arg(self.dir.join("config.json"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let up = wait_until(Duration::from_secs(15), || {
            TcpStream::connect_timeout(
                &format!("{}:8080", self.addr).parse().unwrap(),
                Duration::from_millis(200),
            )
            .is_ok()
        });
        assert!(
            up,
            "node in {} did not listen: {}",
            self.ns,
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    /// SIGTERM by PID (`ip netns exec` execs ringmesh: same PID), wait for the exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(15);
            while c.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn requests(&self) -> u64 {
        let r = std::panic::catch_unwind(|| {
            let mut s = TcpStream::connect(format!("{}:9999", self.addr)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(
                s,
                "GET /api/status HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.addr
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["routes"][0]["requests"].as_u64().unwrap()
        });
        r.unwrap_or(0)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An HTTP/1.1 backend in the root namespace answering `ok` on every request.
fn backend() -> u16 {
    let l = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
                let mut w = c.try_clone().unwrap();
                let mut r = BufReader::new(c);
                loop {
                    let mut line = String::new();
                    let mut head = 0;
                    loop {
                        line.clear();
                        match r.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => head += 1,
                        }
                    }
                    if head == 0
                        || w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn fleet_in_namespaces(io: &str) {
    for t in ["haproxy", "wrk"] {
        assert!(
            Command::new(t).arg("-v").output().is_ok(),
            "{t} is not installed (scripts/test.sh installs it)"
        );
    }
    let (tag, subnets): (&str, [u8; 3]) = if io == "uring" {
        ("u", [11, 12, 13])
    } else {
        ("e", [21, 22, 23])
    };
    let net = match Net::create(tag, &subnets) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("SKIP fleet_in_namespaces: cannot create network namespaces ({e}); needs root or CAP_SYS_ADMIN");
            return;
        }
    };
    let bport = backend();
    let root = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = subnets
        .iter()
        .zip(&net.names)
        .map(|(&n, ns)| {
            let dir = root.path().join(ns);
            std::fs::create_dir_all(&dir).unwrap();
            let addr = format!("10.231.{n}.2");
            let mut cfg = json!({"listen_host": addr, "dashboard_host": addr, "dashboard_port": 9999,
                "workers": 1, "shutdown_grace": "5s",
                "access_log": {"path": dir.join("access.log"), "format": "json"},
                "routes": {"8080": {"name": "web", "proxy_protocol": true, "backends": [
                    {"internal_host": format!("10.231.{n}.1"), "internal_port": bport}]}}});
            if let Some(d) = shutdown_delay() {
                cfg["shutdown_delay"] = d.into();
            }
            std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
            let mut node = Node {
                ns: ns.clone(),
                addr,
                dir,
                io: io.into(),
                child: None,
            };
            node.start();
            node
        })
        .collect();

    let fport = free_port();
    let servers: String = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("  server n{i} {}:8080 check send-proxy-v2\n", n.addr))
        .collect();
    let hcfg = root.path().join("haproxy.cfg");
    std::fs::write(
        &hcfg,
        format!(
            "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n  \
             retries 3\n  option redispatch\nfrontend f\n  bind 127.0.0.1:{fport}\n  default_backend nodes\n\
             backend nodes\n  balance roundrobin\n  option httpchk GET /readyz\n  default-server inter 200ms fall 1 rise 2 port 9999\n{servers}"
        ),
    )
    .unwrap();
    let mut haproxy = support::ChildGuard(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&hcfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.path().join("haproxy.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let served = wait_until(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", fport))
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                Ok(out.starts_with("HTTP/1.1 200"))
            })
            .unwrap_or(false)
    });
    assert!(served, "nothing served through HAProxy");
    std::thread::sleep(Duration::from_millis(600)); // every server checked up

    // wrk through HAProxy: a new connection per request, so a node's drain
    // never races a keep-alive request. Node 2 stops at ~2 s, is back at ~5 s.
    let url = format!("http://127.0.0.1:{fport}/");
    let wrk = Command::new("wrk")
        .args([
            "-t",
            "2",
            "-c",
            "16",
            "-d",
            "10s",
            "-H",
            "Connection: close",
            &url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    nodes[1].stop();
    std::thread::sleep(Duration::from_secs(2));
    nodes[1].start();
    let out = wrk.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{report}");
    assert!(out.status.success(), "{report}");
    assert!(
        !report.contains("Socket errors"),
        "failed connections:\n{report}"
    );
    assert!(!report.contains("Non-2xx"), "failed requests:\n{report}");
    let total: u64 = report
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    assert!(total > 500, "only {total} requests went through:\n{report}");
    // HAProxy sends the restarted node traffic again.
    assert!(wait_until(Duration::from_secs(5), || {
        let _ = TcpStream::connect(("127.0.0.1", fport)).map(|mut s| {
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let _ = s.read_to_end(&mut Vec::new());
        });
        nodes[1].requests() > 0
    }));
    drop(haproxy.0.kill());
    for n in &mut nodes {
        n.stop(); // flushes its access log
    }
    // Every node logged requests, each from the client wrk ran on, never
    // from HAProxy's address on the node's veth.
    let mut lines = 0u64;
    for (n, sub) in nodes.iter().zip(subnets) {
        let log = std::fs::read_to_string(n.dir.join("access.log")).unwrap_or_default();
        let mut count = 0u64;
        for line in log.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: bad access log line {line:?}: {e}", n.ns));
            let client = v["client"].as_str().unwrap_or("");
            assert!(
                client.starts_with("127.0.0.1:"),
                "{}: access log shows {client:?}, not the real client 127.0.0.1 \
                 (10.231.{sub}.1 is HAProxy's side): {line}",
                n.ns
            );
            count += 1;
        }
        assert!(count > 0, "{}: empty access log", n.ns);
        lines += count;
    }
    eprintln!("access log lines on the 3 nodes: {lines} (wrk counted {total})");
    assert!(
        lines >= total,
        "fewer access log lines ({lines}) than requests wrk completed ({total})"
    );
    drop(nodes);
    drop(net);
}

/// `RINGMESH_FLEET_SHUTDOWN_DELAY` overrides the nodes' `shutdown_delay`
/// (default 1 s): `off` leaves it out, to see what a balancer meets without it.
fn shutdown_delay() -> Option<String> {
    match std::env::var("RINGMESH_FLEET_SHUTDOWN_DELAY") {
        Ok(v) if v == "off" => None,
        Ok(v) => Some(v),
        Err(_) => Some("1s".into()),
    }
}

both_drivers!(fleet_in_namespaces);
