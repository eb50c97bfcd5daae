//! sd_notify as systemd sees it: the test binds a unix datagram socket, runs
//! ringmesh with NOTIFY_SOCKET pointing at it (a path, then an abstract
//! `@name`), and reads READY=1 (once every listener accepts), WATCHDOG=1 at
//! half of WATCHDOG_USEC, RELOADING=1 + MONOTONIC_USEC then READY=1 around a
//! SIGHUP reload, MAINPID=<new> + READY=1 from a SIGUSR2 binary upgrade (and
//! the new process feeding the watchdog), and STOPPING=1 at SIGTERM, in order.

mod support;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Receives messages until one contains `want` (bounded); returns all seen.
fn until(sock: &UnixDatagram, want: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = m.lines().any(|l| l == want);
            seen.push(m);
            if hit {
                return seen;
            }
        }
    }
    panic!("no {want:?} within {limit:?}; got {seen:?}");
}

fn scenario(notify_socket: &str, sock: &UnixDatagram) {
    let echo = Backend::echo();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.json");
    std::fs::write(&cfg, tcp_config(port, &[echo.port], "round_robin", "")).unwrap();
    let mut child = ChildGuard(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&cfg)
            .env("NOTIFY_SOCKET", notify_socket)
            .env("WATCHDOG_USEC", "400000")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id() as i32;

    let seen = until(sock, "READY=1", Duration::from_secs(15));
    // Ready means every worker has its listener: the port accepts now.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(
        !seen
            .iter()
            .any(|m| m.contains("STOPPING") || m.contains("RELOADING")),
        "{seen:?}"
    );
    // The watchdog pings at half the interval: several within 1.5 s.
    let t0 = Instant::now();
    for _ in 0..3 {
        until(sock, "WATCHDOG=1", Duration::from_secs(5));
    }
    assert!(t0.elapsed() < Duration::from_secs(4));

    // SIGHUP: RELOADING=1 with a monotonic timestamp, then READY=1.
    // SAFETY-free: signal our own child by PID.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let seen = until(sock, "RELOADING=1", Duration::from_secs(10));
    let msg = seen.last().unwrap();
    let usec: u64 = msg
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {msg:?}"))
        .parse()
        .unwrap();
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY-free in effect: clock_gettime fills a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
    assert!(usec <= now && now - usec < 10_000_000, "{usec} vs {now}");
    let seen = until(sock, "READY=1", Duration::from_secs(10));
    assert!(!seen.iter().any(|m| m.contains("STOPPING")), "{seen:?}");

    // SIGUSR2: a binary upgrade; the old process hands systemd the new main
    // PID (with READY=1), drains and exits; the new one keeps the watchdog fed.
    unsafe { libc::kill(pid, libc::SIGUSR2) };
    let seen = until_prefix(sock, "MAINPID=", Duration::from_secs(30));
    let msg = seen.last().unwrap();
    let new: i32 = msg
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(new, pid);
    let new_guard = PidGuard(new);
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    assert!(!seen.iter().any(|m| m.contains("STOPPING")), "{seen:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            assert!(st.success(), "{st:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old process did not exit after the upgrade"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Only the new process is left: its pings arrive.
    until(sock, "WATCHDOG=1", Duration::from_secs(5));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    // SIGTERM: STOPPING=1, then the process exits.
    unsafe { libc::kill(new, libc::SIGTERM) };
    until(sock, "STOPPING=1", Duration::from_secs(10));
    let gone = wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(format!("/proc/{new}/status"))
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z'))
            })
            .unwrap_or(true)
    });
    assert!(gone, "new process did not exit after SIGTERM");
    drop(new_guard);
}

/// Kills a process we did not spawn ourselves (an upgrade's successor) by PID
/// when dropped, unless it is gone already.
struct PidGuard(i32);

impl Drop for PidGuard {
    fn drop(&mut self) {
        let running = std::fs::read_to_string(format!("/proc/{}/status", self.0))
            .map(|s| {
                !s.lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z'))
            })
            .unwrap_or(false);
        if running {
            // SAFETY-free: signal, by PID, a process this test started through ringmesh.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// Like [`until`], for a line starting with `prefix`.
fn until_prefix(sock: &UnixDatagram, prefix: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = m.lines().any(|l| l.starts_with(prefix));
            seen.push(m);
            if hit {
                return seen;
            }
        }
    }
    panic!("no {prefix:?} within {limit:?}; got {seen:?}");
}

#[test]
fn notify_socket_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    scenario(path.to_str().unwrap(), &sock);
}

#[test]
fn notify_socket_abstract() {
    let name = format!("ringmesh-test-notify-{}", std::process::id());
    let sock =
        UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    scenario(&format!("@{name}"), &sock);
}

#[test]
fn without_notify_socket_nothing_breaks() {
    // The other test files run without NOTIFY_SOCKET; here: a bogus value.
    let echo = Backend::echo();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.json");
    std::fs::write(&cfg, tcp_config(port, &[echo.port], "round_robin", "")).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", "relative/not-allowed")
        .env("WATCHDOG_USEC", "garbage")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let st = child.0.wait().unwrap();
    assert!(st.success());
}
