//! The CLI's API clients: `ringmesh status`, `ringmesh reload`, `ringmesh upgrade`
//! (here), `ringmesh logs` and `ringmesh kill` ([`procs`]).
//!
//! The API address comes from `--api URL` or from the config file's
//! `dashboard_host`/`dashboard_port` (read leniently: `reload` must work
//! when the file on disk is the broken config being reloaded). The token
//! comes from `--token`, `RINGMESH_API_TOKEN`, or the file's `api_token`.
//!
//! Exit codes scripts can use: 0 done, 1 refused by ringmesh (invalid config,
//! bind failure, auth), 2 the API cannot be reached (not running, headless).

pub mod client;
pub mod fleet;
pub mod procs;
pub mod sessions;

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

pub use client::{Api, Reply};

/// Exit code: the request was refused.
pub const REFUSED: u8 = 1;
/// Exit code: no API to talk to.
pub const UNREACHABLE: u8 = 2;

/// Finds the API from `--api` or the config file, and the token.
pub fn target(config: &Path, api: Option<&str>, token: Option<String>) -> Result<Api, String> {
    let file: Option<Value> = std::fs::read_to_string(config)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let addr = match api {
        Some(u) => {
            let rest = u.strip_prefix("http://").unwrap_or(u);
            if rest.starts_with("https://") {
                return Err("the API speaks plain HTTP; use http://".into());
            }
            rest.trim_end_matches('/').to_string()
        }
        None => {
            let Some(f) = &file else {
                return Err(format!(
                    "cannot read the API address from {} (pass --api http://host:port)",
                    config.display()
                ));
            };
            let port = match &f["dashboard_port"] {
                Value::String(s) => s.trim().to_string(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            if port.is_empty() {
                return Err(format!(
                    "{} has no dashboard_port: that ringmesh runs headless, without an API",
                    config.display()
                ));
            }
            let host = match f["dashboard_host"].as_str().map(str::trim) {
                None | Some("") | Some("0.0.0.0") => "127.0.0.1".to_string(),
                Some("::") | Some("[::]") => "[::1]".to_string(),
                Some(h) if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
                Some(h) => h.to_string(),
            };
            format!("{host}:{port}")
        }
    };
    let token = token
        .or_else(|| std::env::var("RINGMESH_API_TOKEN").ok())
        .or_else(|| file.as_ref()?["api_token"].as_str().map(str::to_string))
        .filter(|t| !t.trim().is_empty());
    Ok(Api {
        addr,
        token,
        timeout: Duration::from_secs(30),
        tls: None,
    })
}

/// Prints `msg` for a non-2xx answer; returns the exit code.
pub(crate) fn refused(what: &str, r: &Reply) -> u8 {
    let detail = r
        .json()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| r.text().trim().to_string());
    eprintln!("{what}: HTTP {}: {detail}", r.status);
    REFUSED
}

/// `ringmesh status`: a table, or the raw JSON with `json`.
pub fn status(api: &Api, json: bool) -> u8 {
    let r = match api.request("GET", "/api/status", b"") {
        Ok(r) => r,
        Err(e) => {
            eprintln!("status: {e}");
            return UNREACHABLE;
        }
    };
    if r.status != 200 {
        return refused("status", &r);
    }
    if json {
        print!("{}", r.text());
        return 0;
    }
    match r.json() {
        Some(v) => {
            print!("{}", status_table(&v));
            0
        }
        None => {
            eprintln!("status: the API answered something that is not JSON");
            REFUSED
        }
    }
}

/// Renders `/api/status` as readable tables.
pub fn status_table(v: &Value) -> String {
    let mut out = String::new();
    let up = v["uptime_seconds"].as_f64().unwrap_or(0.0);
    let _ = writeln!(
        out,
        "{} {}  pid {}  up {}  workers {} ({})  config generation {}{}",
        v["service_name"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("ringmesh"),
        v["version"].as_str().unwrap_or(""),
        v["pid"],
        duration(up),
        v["workers"],
        v["io_driver"].as_str().unwrap_or("?"),
        v["generation"],
        if v["draining"] == true {
            "  DRAINING"
        } else {
            ""
        },
    );
    let empty = Vec::new();
    let routes = v["routes"].as_array().unwrap_or(&empty);
    if routes.is_empty() {
        out.push_str("\nno routes\n");
        return out;
    }
    let mut rows = vec![[
        "ROUTE", "LISTEN", "PROTO", "ACTIVE", "TOTAL", "REQUESTS", "IN", "OUT", "ERRORS", "REFUSED",
    ]
    .map(String::from)];
    for r in routes {
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        rows.push([
            r["name"].as_str().unwrap_or("").to_string(),
            r["listen"].as_str().unwrap_or("").to_string(),
            r["protocol"].as_str().unwrap_or("").to_string(),
            n("connections_active").to_string(),
            n("connections_total").to_string(),
            n("requests").to_string(),
            bytes(n("bytes_in")),
            bytes(n("bytes_out")),
            n("errors").to_string(),
            n("refused").to_string(),
        ]);
    }
    out.push('\n');
    out.push_str(&table(&rows));
    let mut rows = vec![[
        "ROUTE", "BACKEND", "ADDRESS", "STATUS", "ACTIVE", "FAILURES",
    ]
    .map(String::from)];
    for r in routes {
        for b in r["backends"].as_array().unwrap_or(&empty) {
            rows.push([
                r["name"].as_str().unwrap_or("").to_string(),
                b["name"].as_str().unwrap_or("").to_string(),
                b["address"].as_str().unwrap_or("").to_string(),
                b["status"].as_str().unwrap_or("?").to_string(),
                b["active"].as_u64().unwrap_or(0).to_string(),
                b["connect_failures"].as_u64().unwrap_or(0).to_string(),
            ]);
        }
    }
    out.push('\n');
    out.push_str(&table(&rows));
    out
}

/// Left-aligned columns, two spaces apart.
pub(crate) fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut w = [0usize; N];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            let _ = write!(line, "{c:<width$}  ", width = w[i]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// `ringmesh reload`: asks the running process to re-read its config file,
/// or (with `file`) PUTs that file's text as the new config.
pub fn reload(api: &Api, file: Option<&Path>) -> u8 {
    let r = match file {
        None => api.request("POST", "/api/reload", b""),
        Some(p) => match std::fs::read(p) {
            Ok(body) => api.request("PUT", "/api/config", &body),
            Err(e) => {
                eprintln!("reload: cannot read {}: {e}", p.display());
                return REFUSED;
            }
        },
    };
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            eprintln!("reload: {e}");
            return UNREACHABLE;
        }
    };
    let v = r.json().unwrap_or(Value::Null);
    if r.status == 400 && v["errors"].is_array() {
        eprintln!("reload refused: invalid config; the running config stays");
        for e in v["errors"].as_array().into_iter().flatten() {
            let path = e["path"].as_str().unwrap_or("");
            let msg = e["message"].as_str().unwrap_or("");
            if path.is_empty() {
                eprintln!("  {msg}");
            } else {
                eprintln!("  {path}: {msg}");
            }
        }
        return REFUSED;
    }
    if r.status != 200 {
        return refused("reload", &r);
    }
    let list = |k: &str| -> String {
        let items: Vec<&str> = v[k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if items.is_empty() {
            "none".into()
        } else {
            items.join(", ")
        }
    };
    println!(
        "reloaded: config generation {}; listening added: {}; removed: {}",
        v["generation"],
        list("added"),
        list("removed")
    );
    for s in v["restart_required"].as_array().into_iter().flatten() {
        println!(
            "note: {} changed; takes effect at the next restart",
            s.as_str().unwrap_or("?")
        );
    }
    let bind_errors = v["bind_errors"].as_array().cloned().unwrap_or_default();
    for e in &bind_errors {
        eprintln!(
            "cannot listen on {}: {}",
            e["address"].as_str().unwrap_or("?"),
            e["error"].as_str().unwrap_or("?")
        );
    }
    if v["settled"] == false {
        eprintln!("warning: some workers had not picked up the new config yet");
    }
    if bind_errors.is_empty() {
        0
    } else {
        eprintln!("reload applied except the addresses above (the next reload retries them)");
        REFUSED
    }
}

/// `ringmesh upgrade`: the running process starts its binary again, hands
/// it the listening sockets and drains; prints both PIDs.
pub fn upgrade(api: &Api) -> u8 {
    let r = match api.request("POST", "/api/upgrade", b"") {
        Ok(r) => r,
        Err(e) => {
            eprintln!("upgrade: {e}");
            return UNREACHABLE;
        }
    };
    if r.status != 200 {
        return refused("upgrade failed; the old process keeps serving", &r);
    }
    let v = r.json().unwrap_or(Value::Null);
    println!(
        "upgraded: pid {} now serves; pid {} drains its open connections and exits",
        v["new_pid"], v["old_pid"]
    );
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_from_config_file_and_flags() {
        let dir = std::env::temp_dir().join(format!("ringmesh-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.json");
        std::fs::write(&p, r#"{"dashboard_host": "0.0.0.0", "dashboard_port": 9123, "api_token": "t0k", "routes": {"x": "broken"}}"#).unwrap();
        let a = target(&p, None, None).unwrap();
        assert_eq!(a.addr, "127.0.0.1:9123");
        if std::env::var_os("RINGMESH_API_TOKEN").is_none() {
            assert_eq!(a.token.as_deref(), Some("t0k"));
        }
        let a = target(&p, Some("http://h:1/"), Some("x".into())).unwrap();
        assert_eq!((a.addr.as_str(), a.token.as_deref()), ("h:1", Some("x")));
        std::fs::write(&p, r#"{"dashboard_port": ""}"#).unwrap();
        assert!(target(&p, None, None).unwrap_err().contains("headless"));
        assert!(target(&dir.join("missing.json"), None, None).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn status_table_lists_routes_and_backends() {
        let v: Value = serde_json::from_str(
            r#"{"service_name": "", "version": "0.1.0", "pid": 7, "uptime_seconds": 3700,
                "workers": 2, "io_driver": "io_uring", "generation": 3, "draining": false,
                "routes": [{"name": "web", "listen": "0.0.0.0:80", "protocol": "http",
                  "connections_active": 1, "connections_total": 9, "requests": 20,
                  "bytes_in": 2048, "bytes_out": 5, "errors": 0,
                  "backends": [{"name": "a", "address": "127.0.0.1:81", "status": "up", "active": 1, "connect_failures": 0}]}]}"#,
        )
        .unwrap();
        let t = status_table(&v);
        assert!(t.contains("up 1h01m"), "{t}");
        assert!(t.contains("config generation 3"), "{t}");
        let line = t.lines().find(|l| l.starts_with("web ")).unwrap();
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[..6], ["web", "0.0.0.0:80", "http", "1", "9", "20"]);
        assert!(line.contains("2.0 KiB") && line.contains("5 B"), "{line}");
        assert!(t.contains("127.0.0.1:81"), "{t}");
    }
}
