//! The command line as operators meet it: `check` exit codes and messages,
//! `run` writing a default config, refusing a port another process holds,
//! the status API, `--version` and `--help`, and threads per worker.

mod support;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use support::*;

fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.json");
    std::fs::write(&p, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_example_and_gophermesh_configs() {
    for f in [
        concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.json"),
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gophermesh.json"
        ),
    ] {
        let (code, out, err) = check(&std::fs::read_to_string(f).unwrap());
        assert_eq!(code, 0, "{f}: {out}{err}");
        assert!(out.contains(": ok ("), "{out}");
    }
}

#[test]
fn check_lists_every_error_and_exits_1() {
    let (code, _, err) = check(
        r#"{"routes": {"8080": {"protocol": "udp", "backends": [{"internal_port": "abc"}]}}}"#,
    );
    assert_eq!(code, 1);
    assert!(err.contains("invalid config"), "{err}");
    assert!(
        err.contains(r#"routes."8080".protocol: "udp" is not a protocol"#),
        "{err}"
    );
    assert!(
        err.contains(r#"routes."8080".backends[0].internal_port: "abc" is not a port number"#),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["check", "--config", "/nonexistent/x.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such file"));
}

#[test]
fn run_with_bad_config_exits_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.json");
    std::fs::write(&p, r#"{"routes": {"x": {}}}"#).unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains(r#"routes."x""#));
}

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ringmesh "));
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("run") && help.contains("check"), "{help}");
}

#[test]
fn run_writes_a_default_config_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("new.json");
    let mut child = Command::new(BIN)
        .args(["run", "--workers", "1", "--config"])
        .arg(&p)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let written = wait_until(Duration::from_secs(5), || p.exists());
    // SAFETY-free: signal our own child by PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert!(written, "no default config written");
    let text = std::fs::read_to_string(&p).unwrap();
    ringmesh::config::parse(&text).expect("the default config is valid");
}

#[test]
fn refuses_a_port_another_process_listens_on() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.json");
    std::fs::write(&p, tcp_config(port, &[1], "round_robin", "")).unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(70));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("address already in use"), "{err}");
}

#[test]
fn second_ringmesh_on_the_same_ports_is_refused() {
    let port = free_port();
    let cfg = tcp_config(port, &[1], "round_robin", "");
    let _first = Ringmesh::start(&cfg, "auto", &[port]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.json");
    std::fs::write(&p, &cfg).unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(70),
        "a second instance silently shared the port"
    );
}

fn http_get(port: u16, path: &str) -> String {
    let mut c = connect(port);
    write!(c, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn status_api_reports_routes_and_counters() {
    let backend = Backend::echo();
    let (port, api) = (free_port(), free_port());
    let cfg = tcp_config(port, &[backend.port], "round_robin", "").replace(
        r#""dashboard_port": """#,
        &format!(r#""dashboard_port": "{api}""#),
    );
    let rm = Ringmesh::start(&cfg, "auto", &[port, api]);
    let mut c = connect(port);
    c.write_all(&[1u8; 1000]).unwrap();
    let mut b = [0u8; 1000];
    c.read_exact(&mut b).unwrap();
    assert_eq!(http_get(api, "/healthz").lines().last(), Some("ok"));
    let status = http_get(api, "/api/status");
    let body = status.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let r = &v["routes"][0];
    assert_eq!(r["protocol"], "tcp");
    assert!(r["connections_active"].as_u64().unwrap() >= 1);
    assert!(r["bytes_in"].as_u64().unwrap() >= 1000, "{r}");
    assert_eq!(
        r["backends"][0]["address"],
        format!("127.0.0.1:{}", backend.port)
    );
    let metrics = http_get(api, "/metrics");
    assert!(
        metrics.contains("ringmesh_route_bytes_in_total{route=\"t\"}"),
        "{metrics}"
    );
    assert!(http_get(api, "/nope").starts_with("HTTP/1.1 404"));
    let mut c2 = connect(api);
    c2.write_all(b"POST /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let mut s = String::new();
    c2.read_to_string(&mut s).unwrap();
    assert!(s.starts_with("HTTP/1.1 405"), "{s}");
    // Garbage on the API port gets a 400 and nothing breaks.
    let mut g = connect(api);
    g.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
    let mut s = String::new();
    g.read_to_string(&mut s).unwrap();
    assert!(s.starts_with("HTTP/1.1 400"), "{s}");
    assert_eq!(http_get(api, "/healthz").lines().last(), Some("ok"));
    drop(rm);
}

#[test]
fn threads_are_workers_plus_control_plus_main() {
    let backend = Backend::echo();
    let port = free_port();
    let cfg = tcp_config(port, &[backend.port], "round_robin", "");
    let rm = Ringmesh::start(&cfg, "uring", &[port]);
    // 100 idle tunnels must not add threads (no io-wq workers for splice).
    let conns: Vec<_> = (0..100).map(|_| connect(port)).collect();
    assert!(wait_until(Duration::from_secs(5), || backend
        .open
        .load(std::sync::atomic::Ordering::SeqCst)
        >= 100));
    assert_eq!(rm.threads(), 2 + 1 + 1, "workers(2) + control + main");
    drop(conns);
}
