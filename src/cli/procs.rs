//! `ringmesh logs <route> [-f]` and `ringmesh kill <route> [backend]`: small
//! blocking HTTP/1.1 clients of the status API.
//!
//! Exit codes scripts can use: 0 done, 1 the API refused (unknown route or
//! backend, ...), 2 the API cannot be reached (not running, headless config).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

/// Where the API is: `--api http://host:port`, else the config's
/// `dashboard_host:dashboard_port`.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// Config file to read dashboard_host and dashboard_port from.
    #[arg(short, long, default_value = "config.json")]
    pub config: PathBuf,
    /// The API's address, e.g. http://127.0.0.1:9999 (overrides --config).
    #[arg(long)]
    pub api: Option<String>,
}

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
                ExitCode::from(1)
            }
            Failure::Unreachable(msg) => {
                eprintln!("cannot reach the ringmesh API: {msg}");
                ExitCode::from(2)
            }
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest API response read.
const MAX_RESPONSE: u64 = 64 << 20;

impl ApiArgs {
    /// `host:port` of the API.
    pub fn address(&self) -> Result<String, Failure> {
        if let Some(a) = &self.api {
            let a = a.trim();
            let a = a.strip_prefix("http://").unwrap_or(a);
            let a = a.trim_end_matches('/');
            if a.is_empty() || a.contains('/') || a.starts_with("https:") {
                return Err(Failure::Unreachable(format!(
                    "--api {a:?}: expected http://host:port"
                )));
            }
            return Ok(a.to_string());
        }
        from_config(&self.config)
    }
}

fn from_config(path: &Path) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::Unreachable(format!(
            "{}: {e} (pass --config or --api http://host:port)",
            path.display()
        ))
    })?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Failure::Unreachable(format!("{}: invalid JSON: {e}", path.display())))?;
    let host = match v
        .get("dashboard_host")
        .and_then(Value::as_str)
        .map(str::trim)
    {
        None | Some("") | Some("0.0.0.0") => "127.0.0.1".to_string(),
        Some("::") | Some("[::]") => "[::1]".to_string(),
        Some(h) if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        Some(h) => h.to_string(),
    };
    let port = match v.get("dashboard_port") {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    if port.is_empty() {
        return Err(Failure::Unreachable(format!(
            "{} has no dashboard_port (headless: no API); pass --api http://host:port",
            path.display()
        )));
    }
    Ok(format!("{host}:{port}"))
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

/// One request; the JSON body of a 2xx answer, else a [`Failure`].
pub fn call(addr: &str, method: &str, path: &str) -> Result<Value, Failure> {
    let unreachable = |e: std::io::Error| Failure::Unreachable(format!("{addr}: {e}"));
    let sock = addr
        .to_socket_addrs()
        .map_err(unreachable)?
        .next()
        .ok_or_else(|| Failure::Unreachable(format!("{addr} resolves to no address")))?;
    let mut s = TcpStream::connect_timeout(&sock, TIMEOUT).map_err(unreachable)?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(unreachable)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(unreachable)?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ringmesh-cli\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(unreachable)?;
    let mut buf = Vec::new();
    s.take(MAX_RESPONSE)
        .read_to_end(&mut buf)
        .map_err(unreachable)?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let body_at = match resp.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => {
            return Err(Failure::Unreachable(format!(
                "{addr} did not answer with HTTP"
            )))
        }
    };
    let status = resp.code.unwrap_or(0);
    let body = &buf[body_at..];
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if (200..300).contains(&status) {
        return json
            .ok_or_else(|| Failure::Unreachable(format!("{addr}{path}: the answer is not JSON")));
    }
    let msg = json
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    Err(Failure::Refused(status, msg))
}

/// Prints the captured lines of a route; with `follow`, keeps polling.
pub fn logs(api: &ApiArgs, route: &str, follow: bool) -> ExitCode {
    let addr = match api.address() {
        Ok(a) => a,
        Err(f) => return f.report(),
    };
    let mut since = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        let path = format!("/api/logs/{}?since={since}", encode(route));
        let v = match call(&addr, "GET", &path) {
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
pub fn kill(api: &ApiArgs, route: &str, backend: Option<&str>) -> ExitCode {
    let addr = match api.address() {
        Ok(a) => a,
        Err(f) => return f.report(),
    };
    let path = match backend {
        Some(b) => format!("/api/processes/{}/{}/kill", encode(route), encode(b)),
        None => format!("/api/processes/{}/kill", encode(route)),
    };
    let v = match call(&addr, "POST", &path) {
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

    #[test]
    fn api_address_from_flag_or_config() {
        let a = ApiArgs {
            config: "x".into(),
            api: Some("http://127.0.0.1:9/".into()),
        };
        assert_eq!(a.address().unwrap(), "127.0.0.1:9");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(
            &p,
            r#"{"dashboard_host": "0.0.0.0", "dashboard_port": 9999}"#,
        )
        .unwrap();
        let a = ApiArgs {
            config: p.clone(),
            api: None,
        };
        assert_eq!(a.address().unwrap(), "127.0.0.1:9999");
        std::fs::write(&p, r#"{"dashboard_port": ""}"#).unwrap();
        assert!(matches!(a.address(), Err(Failure::Unreachable(m)) if m.contains("headless")));
    }
}
