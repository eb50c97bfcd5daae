//! Zero-downtime binary restart on real processes: `ringmesh upgrade` (and
//! SIGUSR2) start a new process that takes the listening sockets over
//! SCM_RIGHTS; during the handover, keep-alive HTTP clients and a stream of
//! new TCP connections see no error, a long transfer on the old process
//! finishes byte-exact while it drains, and the old process exits 0. A new
//! process that cannot start (bad config) leaves the old one serving.

mod support;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::http::{http_backend, read_response};
use support::*;

/// Stops a ringmesh we did not spawn (a successor) by PID when dropped.
struct Successor(i32);

impl Drop for Successor {
    fn drop(&mut self) {
        if self.0 > 0 {
            // SAFETY-free: signal a process this test started (through ringmesh) by PID.
            unsafe { libc::kill(self.0, libc::SIGTERM) };
            wait_until(Duration::from_secs(20), || !alive(self.0));
            if alive(self.0) {
                unsafe { libc::kill(self.0, libc::SIGKILL) };
            }
        }
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(false)
}

fn config(api: u16, tcp: u16, http: u16, echo: u16, web: u16) -> String {
    format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2, "shutdown_grace": "30s",
  "routes": {{
    "{tcp}": {{"name": "echo", "protocol": "tcp", "backends": [{{"internal_port": "{echo}"}}]}},
    "{http}": {{"name": "web", "backends": [{{"internal_port": "{web}"}}]}}}}}}"#
    )
}

fn api_pid(api: u16) -> i32 {
    api::get(api, "/api/status").json()["pid"].as_i64().unwrap() as i32
}

/// Client load until `stop`: keep-alive HTTP requests (reconnecting after
/// `Connection: close`) and new TCP connections that each echo a line.
fn load(
    http: u16,
    tcp: u16,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut ts = Vec::new();
    for _ in 0..2 {
        let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
        ts.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut conn: Option<(BufReader<TcpStream>, TcpStream)> = None;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let (r, w) = conn.get_or_insert_with(|| {
                    let s = connect(http);
                    (BufReader::new(s.try_clone().unwrap()), s)
                });
                let res = w
                    .write_all(b"GET /x HTTP/1.1\r\nHost: web\r\n\r\n")
                    .and_then(|()| read_response(r, false));
                match res {
                    Ok(m) if m.status() == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        if m.header("connection")
                            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                        {
                            conn = None;
                        }
                    }
                    Ok(m) => {
                        errors
                            .lock()
                            .unwrap()
                            .push(format!("http status {}", m.status()));
                        conn = None;
                    }
                    Err(e) => {
                        errors.lock().unwrap().push(format!("http: {e}"));
                        conn = None;
                    }
                }
            }
        }));
    }
    let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
    ts.push(std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            let r = (|| -> std::io::Result<()> {
                let mut c = TcpStream::connect(("127.0.0.1", tcp))?;
                c.set_read_timeout(Some(Duration::from_secs(20)))?;
                c.write_all(b"ping\n")?;
                let mut b = [0u8; 5];
                c.read_exact(&mut b)?;
                if &b != b"ping\n" {
                    return Err(std::io::Error::other("wrong echo"));
                }
                Ok(())
            })();
            match r {
                Ok(()) => {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => errors.lock().unwrap().push(format!("tcp: {e}")),
            }
        }
    }));
    ts
}

fn upgrade_under_load(io: &str) {
    let echo = Backend::echo();
    let web = http_backend(|_, p| {
        p.respond("200 OK", "", b"hello");
        true
    });
    let (api, tcp, http) = (free_port(), free_port(), free_port());
    let mut rm = Ringmesh::start(
        &config(api, tcp, http, echo.port, web.port),
        io,
        &[api, tcp, http],
    );
    let old = rm.pid() as i32;

    // A long transfer that starts on the old process and ends after the handover.
    let mut c = connect(tcp);
    let mut r = c.try_clone().unwrap();
    let reader = std::thread::spawn(move || drain_hash(&mut r).unwrap());
    let mut s = Stream::new(9);
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for i in 0..8 {
        h.update(s.chunk(i));
        c.write_all(s.chunk(i)).unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let threads = load(http, tcp, stop.clone(), ok.clone(), errors.clone());
    assert!(wait_until(Duration::from_secs(10), || ok
        .load(Ordering::SeqCst)
        > 50));

    let out = Command::new(BIN)
        .args(["upgrade", "--config"])
        .arg(&rm.config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        rm.logs()
    );
    // The new PID from the answer (an API call right now could still be
    // answered by the old process, whose accept loop is just stopping).
    let new: i32 = stdout
        .split_whitespace()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {stdout:?}"));
    let _guard = Successor(new);
    assert_ne!(new, old);
    assert!(
        stdout.contains(&format!("pid {new} now serves")),
        "{stdout}"
    );
    assert!(wait_until(Duration::from_secs(10), || api_pid(api) == new));

    // Load keeps flowing through the new process.
    let before = ok.load(Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(10), || ok
        .load(Ordering::SeqCst)
        > before + 50));
    // The old process still serves the open transfer while it drains.
    assert!(alive(old));
    for i in 8..16 {
        h.update(s.chunk(i));
        c.write_all(s.chunk(i)).unwrap();
    }
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let (n, got) = reader.join().unwrap();
    assert_eq!(n, 16 << 20);
    assert_eq!(got, hex(&h.finalize()));
    drop(c);
    let st = rm
        .wait_exit(Duration::from_secs(30))
        .expect("old process did not exit after draining");
    assert!(st.success(), "{st:?}");

    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let errors = errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "{} requests ok, errors: {errors:?}",
        ok.load(Ordering::SeqCst)
    );
    assert!(alive(new));
    let logs = rm.logs();
    assert!(logs.contains("taking over listening sockets"), "{logs}");
}

both_drivers!(upgrade_under_load);

#[test]
fn sigusr2_upgrades_and_a_failed_upgrade_keeps_serving() {
    let echo = Backend::echo();
    let web = http_backend(|_, p| {
        p.respond("200 OK", "", b"hello");
        true
    });
    let (api, tcp, http) = (free_port(), free_port(), free_port());
    let cfg = config(api, tcp, http, echo.port, web.port);
    let mut rm = Ringmesh::start(&cfg, "auto", &[api, tcp, http]);
    let old = rm.pid() as i32;

    // The new process cannot start (its config is broken): the old one serves on.
    std::fs::write(&rm.config, "{ broken").unwrap();
    let out = Command::new(BIN)
        .args(["upgrade", "--api", &format!("http://127.0.0.1:{api}")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stopped before it was ready") || err.contains("exited before it was ready"),
        "{err}"
    );
    assert_eq!(api_pid(api), old);
    let mut c = connect(tcp);
    c.write_all(b"ping\n").unwrap();
    assert_eq!(read_line(&mut c), "ping");

    // SIGUSR2 with a good config: a new process takes over, the old one exits.
    std::fs::write(&rm.config, &cfg).unwrap();
    rm.signal(libc::SIGUSR2);
    let mut new = old;
    assert!(
        wait_until(Duration::from_secs(30), || {
            new = api_pid(api);
            new != old
        }),
        "no takeover; log:\n{}",
        rm.logs()
    );
    let _guard = Successor(new);
    drop(c);
    let st = rm
        .wait_exit(Duration::from_secs(30))
        .expect("old process did not exit");
    assert!(st.success());
    let mut c = connect(tcp);
    c.write_all(b"pong\n").unwrap();
    assert_eq!(read_line(&mut c), "pong");
}
