//! `ringmesh logs <route> [-f]` and `ringmesh kill <route> [backend]`,
//! through the CLI's API client (address and token as for `status`).
//!
//! Exit codes scripts can use: 0 done, 1 the API refused (unknown route or
//! backend, ...), 2 the API cannot be reached (not running, headless config).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use super::{Api, REFUSED, UNREACHABLE};

/// Why a command failed, and its exit code.
#[derive(Debug)]
pub enum Failure {
    /// The API answered with an error (exit 1).
    Refused(u16, String),
    /// No API to talk to (exit 2).
    Unreachable(String),
}

impl Failure {
    pub fn report(self) -> ExitCode {
        match self {
            Failure::Refused(status, msg) => {
                eprintln!("error ({status}): {msg}");
                ExitCode::from(REFUSED)
            }
            Failure::Unreachable(msg) => {
                eprintln!("cannot reach the ringmesh API: {msg}");
                ExitCode::from(UNREACHABLE)
            }
        }
    }
}

/// Percent-encodes one path segment.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One request through the CLI's client ([`Api`], which also sends the
/// bearer token); the JSON body of a 2xx answer, else a [`Failure`].
pub fn call(api: &Api, method: &str, path: &str) -> Result<Value, Failure> {
    let reply = api
        .request(method, path, b"")
        .map_err(|e| Failure::Unreachable(e.0))?;
    let json = reply.json();
    if (200..300).contains(&reply.status) {
        return json.ok_or_else(|| {
            Failure::Unreachable(format!("{}{path}: the answer is not JSON", api.addr))
        });
    }
    let msg = json
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| reply.text().trim().to_string());
    Err(Failure::Refused(reply.status, msg))
}

/// Prints the captured lines of a route; with `follow`, keeps polling.
pub fn logs(api: &Api, route: &str, follow: bool) -> ExitCode {
    let mut since = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        let path = format!("/api/logs/{}?since={since}", encode(route));
        let v = match call(api, "GET", &path) {
            Ok(v) => v,
            Err(f) => return f.report(),
        };
        for l in v
            .get("lines")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let s = |k: &str| l.get(k).and_then(Value::as_str).unwrap_or("");
            let stream = if s("stream") == "stderr" {
                "err"
            } else {
                "out"
            };
            if writeln!(out, "{} {stream} | {}", s("backend"), s("line")).is_err() {
                return ExitCode::SUCCESS; // stdout closed (| head)
            }
        }
        let _ = out.flush();
        since = v.get("next").and_then(Value::as_u64).unwrap_or(since);
        if !follow {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Stops the processes of a route (or one backend of it).
pub fn kill(api: &Api, route: &str, backend: Option<&str>) -> ExitCode {
    let path = match backend {
        Some(b) => format!("/api/processes/{}/{}/kill", encode(route), encode(b)),
        None => format!("/api/processes/{}/kill", encode(route)),
    };
    let v = match call(api, "POST", &path) {
        Ok(v) => v,
        Err(f) => return f.report(),
    };
    let rname = v.get("route").and_then(Value::as_str).unwrap_or(route);
    let killed = v
        .get("killed")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if killed.is_empty() {
        println!("route {rname}: no backend with a cmd, nothing to stop");
    }
    for k in killed {
        let b = k.get("backend").and_then(Value::as_str).unwrap_or("?");
        match k.get("pid").and_then(Value::as_u64) {
            Some(pid) => println!("{rname}/{b}: stopping pid {pid} (SIGTERM, SIGKILL after 5s)"),
            None => println!("{rname}/{b}: not running"),
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_path_segments() {
        assert_eq!(encode("web api/1"), "web%20api%2F1");
        assert_eq!(encode("127.0.0.1:8080"), "127.0.0.1:8080");
    }
}
