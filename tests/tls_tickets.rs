//! TLS session ticket keys we own (src/tls/tickets.rs): sessions resume on
//! the new process after `ringmesh upgrade`, and across processes that share
//! operator key files (`tls.session_ticket_keys`), checked with
//! `openssl s_client -sess_out/-sess_in`. A process with other keys does not
//! resume them (the check can fail).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::http::http_backend;
use support::pki::{run, Pki};
use support::*;

fn backend() -> Backend {
    http_backend(|_req, p| {
        p.respond("200 OK", "", b"hello\n");
        true
    })
}

fn config(api: u16, port: u16, backend: u16, tls: &str) -> String {
    format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{"{port}": {{"name": "web", "tls": {tls},
     "backends": [{{"name": "b", "internal_host": "127.0.0.1", "internal_port": "{backend}"}}]}}}}}}"#
    )
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n";

/// One s_client run with a request; its whole output.
fn s_client(port: u16, args: &[&str]) -> String {
    let connect = format!("127.0.0.1:{port}");
    let mut child = Command::new("timeout")
        .args(["20", "openssl", "s_client", "-connect", &connect])
        .args(["-servername", "a.example.com", "-ign_eof"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(GET).unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Saves a fresh session from `port` into `file`.
fn new_session(port: u16, version: &str, file: &str) {
    let out = s_client(port, &[version, "-sess_out", file]);
    assert!(out.contains("HTTP/1.1 200 OK"), "{out}");
}

/// Whether any of 3 reconnects offering `file` to `port` resumed.
fn resumes(port: u16, version: &str, file: &str) -> bool {
    (0..3).any(|_| {
        let out = s_client(port, &[version, "-sess_in", file]);
        assert!(out.contains("HTTP/1.1 200 OK"), "{out}");
        out.contains("Reused, TLS")
    })
}

/// The successor process of an upgrade, stopped by PID at the end.
struct Successor(i32);

impl Drop for Successor {
    fn drop(&mut self) {
        if self.0 > 0 {
            // SAFETY: kill(2) on a PID this test's ringmesh started; no memory involved.
            unsafe { libc::kill(self.0, libc::SIGTERM) };
            wait_until(Duration::from_secs(20), || {
                !support::procs::alive(self.0 as u32)
            });
            if support::procs::alive(self.0 as u32) {
                // SAFETY: as above.
                unsafe { libc::kill(self.0, libc::SIGKILL) };
            }
        }
    }
}

fn pid(api: u16) -> i32 {
    support::api::get(api, "/api/status").json()["pid"]
        .as_i64()
        .unwrap() as i32
}

/// Sessions from before `ringmesh upgrade` resume on the new process: the
/// old one hands its ticket keys over with the sockets.
#[test]
fn sessions_resume_after_upgrade() {
    let pki = Pki::new();
    let b = backend();
    let (api, port) = (free_port(), free_port());
    let tls = format!(r#"{{"certificates": [{}]}}"#, pki.cert("a"));
    let mut rm = Ringmesh::start(&config(api, port, b.port, &tls), "auto", &[port, api]);
    let versions = ["-tls1_3", "-tls1_2"];
    for v in versions {
        new_session(port, v, &pki.p(&format!("s{v}.pem")));
    }
    let old = pid(api);
    let (good, out) =
        run(Command::new(BIN).args(["upgrade", "--api", &format!("http://127.0.0.1:{api}")]));
    assert!(good, "upgrade: {out}\n{}", rm.logs());
    let mut new = old;
    assert!(wait_until(Duration::from_secs(30), || {
        new = pid(api);
        new != old
    }));
    let _guard = Successor(new);
    assert!(
        rm.wait_exit(Duration::from_secs(30)).is_some(),
        "old process did not exit"
    );
    for v in versions {
        assert!(
            resumes(port, v, &pki.p(&format!("s{v}.pem"))),
            "{v}: a session from before the upgrade did not resume"
        );
    }
}

/// Two processes with the same `session_ticket_keys` file resume each
/// other's sessions (a fleet behind an L4 balancer); a third with its own
/// keys does not; a key file of the wrong size is a config error with its
/// JSON path.
#[test]
fn shared_key_files_resume_across_processes() {
    let pki = Pki::new();
    let b = backend();
    let key = pki.path("ticket.key");
    let (ok, out) = run(Command::new("openssl").args(["rand", "-out", &pki.p("ticket.key"), "80"]));
    assert!(ok && key.exists(), "{out}");
    let shared = format!(
        r#"{{"certificates": [{}], "session_ticket_keys": ["{}"]}}"#,
        pki.cert("a"),
        key.display()
    );
    let own = format!(r#"{{"certificates": [{}]}}"#, pki.cert("a"));
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let _a = Ringmesh::start(
        &config(ports[0].0, ports[0].1, b.port, &shared),
        "uring",
        &[ports[0].1],
    );
    let _b = Ringmesh::start(
        &config(ports[1].0, ports[1].1, b.port, &shared),
        "epoll",
        &[ports[1].1],
    );
    let _c = Ringmesh::start(
        &config(ports[2].0, ports[2].1, b.port, &own),
        "auto",
        &[ports[2].1],
    );
    for v in ["-tls1_3", "-tls1_2"] {
        let sess = pki.p(&format!("a{v}.pem"));
        new_session(ports[0].1, v, &sess);
        assert!(
            resumes(ports[1].1, v, &sess),
            "{v}: B did not resume A's session"
        );
        assert!(
            !resumes(ports[2].1, v, &sess),
            "{v}: C resumed with other keys"
        );
    }

    // A 10-byte key file: `ringmesh check` names the field and the size.
    std::fs::write(pki.path("short.key"), [7u8; 10]).unwrap();
    let bad = format!(
        r#"{{"certificates": [{}], "session_ticket_keys": ["{}"]}}"#,
        pki.cert("a"),
        pki.p("short.key")
    );
    let cfg = pki.path("bad.json");
    std::fs::write(&cfg, config(free_port(), free_port(), b.port, &bad)).unwrap();
    let t0 = Instant::now();
    let (ok, out) = run(Command::new(BIN).arg("check").arg("--config").arg(&cfg));
    assert!(!ok, "{out}");
    assert!(
        out.contains("tls.session_ticket_keys[0]") && out.contains("10 bytes"),
        "{out}"
    );
    assert!(t0.elapsed() < Duration::from_secs(30));
}
