//! Connection limits on real sockets: per-route `max_connections` and
//! `max_connections_per_ip` close refused tcp connections, a process-wide
//! `max_connections` answers http with 503 + Retry-After, refusals are
//! counted in status and metrics, and capacity comes back when connections
//! close. Out of fds (RLIMIT_NOFILE set low with prlimit), accept neither
//! spins nor stops: queued connections are served once fds are free.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::http::Client;
use support::*;

/// True when the proxy closed `c` without a byte (refused), within 5 s.
fn refused(c: &mut TcpStream) -> bool {
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 16];
    match c.read(&mut b) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

fn tagged_from(src: [u8; 4], port: u16) -> Option<TcpStream> {
    let mut c = connect_from(src, port);
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let line = read_line(&mut c);
    (line == "tag").then_some(c)
}

fn route_and_ip_limits(io: &str) {
    let backend = Backend::tagged("tag");
    let (api, port) = (free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2, "max_connections_per_ip": 2,
  "routes": {{"{port}": {{"name": "capped", "protocol": "tcp", "max_connections": 3,
    "backends": [{{"internal_port": "{}"}}]}}}}}}"#,
        backend.port
    );
    let rm = Ringmesh::start(&cfg, io, &[api]);
    let a1 = tagged_from([127, 0, 0, 2], port).expect("first from .2");
    let _a2 = tagged_from([127, 0, 0, 2], port).expect("second from .2");
    // A third from the same address: past max_connections_per_ip.
    let mut a3 = connect_from([127, 0, 0, 2], port);
    assert!(refused(&mut a3), "third connection from one IP was served");
    let _b1 = tagged_from([127, 0, 0, 3], port).expect("first from .3");
    // The route now has 3 open: past its max_connections, whatever the IP.
    let mut c1 = connect_from([127, 0, 0, 4], port);
    assert!(
        refused(&mut c1),
        "fourth connection to the route was served"
    );
    // Capacity comes back when a connection closes.
    drop(a1);
    assert!(
        wait_until(Duration::from_secs(10), || tagged_from(
            [127, 0, 0, 4],
            port
        )
        .is_some()),
        "no capacity after a close"
    );
    let st = api::get(api, "/api/status").json();
    assert!(st["connections_refused"].as_u64().unwrap() >= 2, "{st}");
    assert!(st["routes"][0]["refused"].as_u64().unwrap() >= 2, "{st}");
    let m = api::get(api, "/metrics").body;
    assert!(
        m.contains("ringmesh_route_refused_total{route=\"capped\"}"),
        "{m}"
    );
    drop(rm);
}

fn global_limit_answers_http_503(io: &str) {
    let web = support::http::http_backend(|_, p| {
        p.respond("200 OK", "", b"ok");
        true
    });
    let (api, port) = (free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2, "max_connections": 2,
  "routes": {{"{port}": {{"name": "web", "backends": [{{"internal_port": "{}"}}]}}}}}}"#,
        web.port
    );
    let rm = Ringmesh::start(&cfg, io, &[api]);
    let mut k1 = Client::connect(port);
    assert_eq!(k1.get("/", "x", "").status(), 200);
    let mut k2 = Client::connect(port);
    assert_eq!(k2.get("/", "x", "").status(), 200);
    let mut over = Client::connect(port);
    let r = over.get("/", "x", "");
    assert_eq!(r.status(), 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(over.closed_within(Duration::from_secs(5)));
    // The two admitted keep-alive connections still work.
    assert_eq!(k1.get("/", "x", "").status(), 200);
    drop(k2);
    assert!(wait_until(Duration::from_secs(10), || {
        let mut c = Client::connect(port);
        c.get("/", "x", "").status() == 200
    }));
    assert!(
        api::get(api, "/api/status").json()["connections_refused"]
            .as_u64()
            .unwrap()
            >= 1
    );
    drop(rm);
}

both_drivers!(
    route_and_ip_limits,
    global_limit_answers_http_503,
    route_limit_on_a_shared_http_port,
);

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn echo_ping(c: &mut TcpStream) -> bool {
    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut b = [0u8; 5];
    c.write_all(b"ping\n").is_ok() && c.read_exact(&mut b).is_ok() && &b == b"ping\n"
}

/// Run at two fd limits: with an odd count of fds free, the last accept
/// succeeds and the upstream socket is what fails (EMFILE), which must not
/// put the backend in cooldown.
#[test]
fn out_of_fds_accept_backs_off_and_recovers() {
    out_of_fds(64);
}

#[test]
fn out_of_fds_other_parity() {
    out_of_fds(65);
}

fn out_of_fds(nofile: u32) {
    let echo = Backend::echo();
    let (port, api) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.json");
    let text = tcp_config(port, &[echo.port], "round_robin", "").replace(
        r#""dashboard_port": """#,
        &format!(r#""dashboard_port": "{api}""#),
    );
    std::fs::write(&cfg, text).unwrap();
    let log = dir.path().join("log");
    // 1 worker, and a low hard limit: the engine cannot raise it.
    let child = Command::new("prlimit")
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg(BIN)
        .args([
            "run",
            "--workers",
            "1",
            "--io",
            "auto",
            "--log",
            "debug",
            "--config",
        ])
        .arg(&cfg)
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .expect("prlimit (util-linux)");
    let mut child = ChildGuard(child);
    let pid = child.0.id();
    assert!(wait_until(Duration::from_secs(10), || TcpStream::connect(
        ("127.0.0.1", port)
    )
    .is_ok()));
    std::thread::sleep(Duration::from_millis(300));

    // Fill the fd table with idle tunnels (2 fds each).
    let mut idle = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = connect(port);
        if !echo_ping(&mut c) {
            idle.push(c);
            break;
        }
        idle.push(c);
        assert!(
            Instant::now() < deadline && idle.len() < 100,
            "fd table never filled"
        );
    }
    // Queue a few more: at most one can slip in, the rest wait in the queue.
    let mut queued: Vec<TcpStream> = (0..5).map(|_| connect(port)).collect();
    for q in &mut queued {
        let _ = q.write_all(b"ping\n");
    }
    assert!(fds(pid) as u32 >= nofile - 4, "fds {}", fds(pid));
    // Under pressure the listener stays readable: accept must back off, not spin.
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - t0;
    assert!(
        used < 40,
        "{used} ticks of CPU in 2 s while out of fds: spinning"
    );
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("accept paused"), "{logs}");

    // Free fds: the queued connections get served.
    idle.truncate(idle.len().saturating_sub(12));
    let served = wait_until(Duration::from_secs(10), || {
        queued.iter_mut().any(|q| {
            q.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut b = [0u8; 5];
            q.read_exact(&mut b).is_ok() && &b == b"ping\n"
        })
    });
    assert!(
        served,
        "queued connections never served after fds were freed; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let mut fresh = connect(port);
    assert!(
        echo_ping(&mut fresh),
        "new connections not served after recovery"
    );
    // Running out of fds is our shortage: the backend was not blamed for it.
    let st = api::get(api, "/api/status").json();
    let b = &st["routes"][0]["backends"][0];
    assert_eq!(b["connect_failures"], 0, "{b}");
    assert_eq!(b["status"], "up", "{b}");
    drop(queued);
    drop(idle);
    // SAFETY-free: signal our own child by PID.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.0.wait();
}

/// Two http routes on one port (by Host): the capped route's
/// `max_connections` is enforced at its first request on a connection (503
/// with Retry-After), while the other route on the same port keeps serving.
fn route_limit_on_a_shared_http_port(io: &str) {
    let tag = |t: &'static str| {
        support::http::http_backend(move |_, p| {
            p.respond("200 OK", "", t.as_bytes());
            true
        })
    };
    let (a, b) = (tag("A"), tag("B"));
    let port = free_port();
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{
    "{port}": {{"name": "open", "backends": [{{"internal_port": {}}}]}},
    "capped": {{"listen": "{port}", "hosts": ["capped.test"], "max_connections": 1,
      "backends": [{{"internal_port": {}}}]}}
  }}}}"#,
        a.port, b.port
    );
    let _rm = Ringmesh::start(&cfg, io, &[port]);
    let mut first = Client::connect(port);
    let r = first.get("/", "capped.test", "");
    assert_eq!((r.status(), r.body_str().as_str()), (200, "B"));
    // The capped route holds one open connection: a second is refused.
    let mut second = Client::connect(port);
    let r = second.get("/", "capped.test", "");
    assert_eq!(r.status(), 503, "{}", r.body_str());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.body_str().contains("\"capped\""), "{}", r.body_str());
    // The other route on the same port is not affected.
    let mut other = Client::connect(port);
    let r = other.get("/", "anything.test", "");
    assert_eq!((r.status(), r.body_str().as_str()), (200, "A"));
    // Capacity comes back when the first connection closes.
    drop(first);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let mut c = Client::connect(port);
            c.get("/", "capped.test", "").status() == 200
        }),
        "no capacity after a close"
    );
}
