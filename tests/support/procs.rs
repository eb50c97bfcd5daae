//! Helpers for tests with backend processes: the python test backend, the
//! status API as JSON, pid files, liveness of a pid.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::connect;

/// The real python3 interpreter (not a pyenv shim: a shim adds ~50 ms to
/// every start and would distort cold-start timings).
pub fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is needed by the supervisor tests");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

/// tests/fixtures/backend.py
pub fn script() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/backend.py").to_string()
}

/// A backend entry that runs the python test backend on `port`, appending
/// its pid to `pidfile`; `extra` are more backend.py arguments.
pub fn proc_backend(name: &str, port: u16, pidfile: &Path, extra: &[&str]) -> String {
    let mut args: Vec<String> = vec![
        "-S".into(),
        "-u".into(),
        script(),
        port.to_string(),
        "--pidfile".into(),
        pidfile.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    serde_json::json!({
        "name": name,
        "cmd": python(),
        "args": args,
        "internal_host": "127.0.0.1",
        "internal_port": port.to_string(),
    })
    .to_string()
}

/// Pids appended to a pid file so far.
pub fn pids(file: &Path) -> Vec<u32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whether `pid` runs (a zombie waiting for a reaper counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(s) => {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
    }
}

/// One request to the API (`Connection: close`): status and JSON body (Null if not JSON).
pub fn api(port: u16, method: &str, path: &str) -> (u16, Value) {
    let mut c = connect(port);
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    let status = s.get(9..12).and_then(|x| x.parse().ok()).unwrap_or(0);
    let body = s.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The `/api/status` entry of backend `name` of route `key`.
pub fn backend_status(port: u16, key: &str, name: &str) -> Value {
    let (_, v) = api(port, "GET", "/api/status");
    v["routes"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["key"] == key))
        .and_then(|r| r["backends"].as_array())
        .and_then(|bs| bs.iter().find(|b| b["name"] == name))
        .cloned()
        .unwrap_or(Value::Null)
}

/// `GET path` on its own connection: status and body.
pub fn get(port: u16, path: &str) -> (u16, String) {
    let mut c = connect(port);
    c.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut s = String::new();
    let _ = c.read_to_string(&mut s);
    let status = s.get(9..12).and_then(|x| x.parse().ok()).unwrap_or(0);
    let body = s
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// The pid in a backend.py answer ("hello from <pid> <path>").
pub fn pid_of(body: &str) -> u32 {
    body.split_whitespace()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {body:?}"))
}
