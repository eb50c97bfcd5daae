//! `ringmesh fleet` and `ringmesh routes get|push`: talk to etcd directly
//! (the same client the nodes use), not to a node's API.
//!
//! `routes push FILE` validates a routes object (or a whole config.json,
//! taking its `routes`) and writes `<prefix>routes` with a compare-and-swap
//! on the key's mod_revision: the revision it read just before, or the one
//! given with `--expect-revision` (from `routes get`), so two operators
//! cannot overwrite each other silently. Exit codes: 0 done, 1 refused
//! (invalid routes, CAS conflict, etcd said no), 2 etcd unreachable.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use super::{REFUSED, UNREACHABLE};
use crate::config::source::{self, EtcdSource, DEFAULT_PREFIX};
use crate::fleet::etcd::{Cas, Etcd, EtcdError};

/// Exit code: a compare-and-swap found a newer revision.
pub const CONFLICT: u8 = REFUSED;

/// TLS files from `--etcd-ca`, `--etcd-cert`, `--etcd-key` (relative to the
/// working directory).
#[derive(Debug, Default, Clone)]
pub struct TlsFlags {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

impl TlsFlags {
    fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

/// Where etcd is: `--etcd` URLs (comma-separated) or the config file's
/// `config_source` (its relative TLS paths start at the file's directory;
/// `--etcd-ca`/`-cert`/`-key` replace its TLS files).
pub fn etcd_source(
    urls: Option<&str>,
    prefix: Option<&str>,
    user: Option<String>,
    password: Option<String>,
    tls: &TlsFlags,
    config: &Path,
) -> Result<EtcdSource, String> {
    let mut src = match urls {
        Some(list) => {
            let parsed = list
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(source::endpoint_url)
                .collect::<Result<Vec<_>, _>>()?;
            if parsed.is_empty() {
                return Err("--etcd: no endpoint".into());
            }
            let https = parsed[0].1;
            if parsed.iter().any(|p| p.1 != https) {
                return Err("--etcd: mixes http:// and https://".into());
            }
            EtcdSource {
                endpoints: parsed.into_iter().map(|p| p.0).collect(),
                prefix: DEFAULT_PREFIX.into(),
                username: None,
                password: None,
                node_id: None,
                cache_file: None,
                tls: None,
            }
        }
        None => {
            let text = std::fs::read_to_string(config).map_err(|e| {
                format!("no --etcd given and cannot read {}: {e}", config.display())
            })?;
            let v: Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", config.display()))?;
            let cs = v.get("config_source").ok_or_else(|| {
                format!(
                    "no --etcd given and {} has no config_source",
                    config.display()
                )
            })?;
            let mut errs = Vec::new();
            let s = source::parse(
                cs,
                "config_source",
                crate::config::config_dir(config),
                &mut |p, m| errs.push(format!("{}: {p}: {m}", config.display())),
            );
            match s {
                Some(s) if errs.is_empty() => s.etcd,
                _ => return Err(errs.join("\n")),
            }
        }
    };
    // With --etcd URLs or any TLS flag, the flags say which files (all of
    // them: they replace the file's, missing ones are not taken from it).
    if urls.is_some() || tls.any() {
        let https = match urls {
            Some(list) => list.trim_start().starts_with("https://"),
            None => src.tls.is_some(),
        };
        src.tls = source::etcd_tls(
            https,
            tls.ca.as_deref(),
            tls.cert.as_deref(),
            tls.key.as_deref(),
            Path::new("."),
        )
        .map_err(|(field, e)| format!("--etcd-{}: {e}", field.trim_end_matches("_file")))?;
    }
    if let Some(p) = prefix {
        src.prefix = p.to_string();
    }
    if user.is_some() {
        src.username = user;
        src.password = password.or_else(|| std::env::var("RINGMESH_ETCD_PASSWORD").ok());
    }
    Ok(src)
}

fn code(e: &EtcdError) -> u8 {
    match e {
        EtcdError::Unreachable(_) => UNREACHABLE,
        EtcdError::Refused(_) => REFUSED,
    }
}

/// `ringmesh fleet`: the nodes registered under `<prefix>nodes/`.
pub fn fleet(src: &EtcdSource, as_json: bool) -> u8 {
    let etcd = Etcd::new(src);
    let prefix = format!("{}nodes/", src.prefix);
    let (rev, kvs) = match etcd.list(&prefix) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("fleet: {e}");
            return code(&e);
        }
    };
    let nodes: Vec<Value> = kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect();
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"revision": rev, "nodes": nodes}))
                .unwrap_or_default()
        );
        return 0;
    }
    print!("{}", fleet_table(&nodes));
    0
}

/// The fleet as a table.
pub fn fleet_table(nodes: &[Value]) -> String {
    if nodes.is_empty() {
        return "no nodes registered\n".into();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<16} {:<22} {:<8} {:>9} {:>8} {:>6}",
        "NODE", "ADDRESS", "API", "VERSION", "REVISION", "UPTIME", "CONNS"
    );
    for n in nodes {
        let rev = match (&n["config_revision"], &n["config_rejected_revision"]) {
            (r, Value::Number(bad)) => format!("{r} (!{bad})"),
            (r, _) => r.to_string(),
        };
        let _ = writeln!(
            out,
            "{:<24} {:<16} {:<22} {:<8} {:>9} {:>7}s {:>6}",
            n["node_id"].as_str().unwrap_or("?"),
            n["address"].as_str().unwrap_or("?"),
            n["api"].as_str().unwrap_or("-"),
            n["version"].as_str().unwrap_or("?"),
            rev,
            // Written every few seconds at most: count from the start time.
            n["started_at"]
                .as_u64()
                .map(|t| crate::fleet::unix_now().saturating_sub(t))
                .unwrap_or_else(|| n["uptime_seconds"].as_u64().unwrap_or(0)),
            n["connections_open"].as_u64().unwrap_or(0),
        );
    }
    out
}

/// `ringmesh routes get`: the routes JSON on stdout, its revision on stderr.
pub fn routes_get(src: &EtcdSource) -> u8 {
    let etcd = Etcd::new(src);
    let key = format!("{}routes", src.prefix);
    match etcd.get(&key) {
        Ok((_, Some(kv))) => {
            eprintln!("{key}: revision {}", kv.mod_revision);
            println!("{}", String::from_utf8_lossy(&kv.value));
            0
        }
        Ok((_, None)) => {
            eprintln!("{key}: no routes pushed yet (revision 0)");
            REFUSED
        }
        Err(e) => {
            eprintln!("routes get: {e}");
            code(&e)
        }
    }
}

/// The routes of a file: a routes object, or a whole config's `routes`,
/// validated as a config of those routes alone would be.
pub fn routes_of_file(text: &str) -> Result<Value, Vec<String>> {
    let v: Value = serde_json::from_str(text).map_err(|e| vec![format!("invalid JSON: {e}")])?;
    let routes = match v.get("routes") {
        Some(r) if v.is_object() => r.clone(),
        _ => v,
    };
    if !routes.is_object() {
        return Err(vec![
            "expected a routes object (or a config with \"routes\")".into(),
        ]);
    }
    let check = json!({"routes": routes}).to_string();
    crate::config::parse(&check)
        .map_err(|errs| errs.0.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
    Ok(routes)
}

/// `ringmesh routes push FILE`.
pub fn routes_push(src: &EtcdSource, file: &Path, expect: Option<i64>) -> u8 {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("routes push: cannot read {}: {e}", file.display());
            return REFUSED;
        }
    };
    let routes = match routes_of_file(&text) {
        Ok(r) => r,
        Err(errs) => {
            eprintln!(
                "routes push: {} is invalid; nothing written",
                file.display()
            );
            for e in errs {
                eprintln!("  {e}");
            }
            return REFUSED;
        }
    };
    let etcd = Etcd::new(src);
    let key = format!("{}routes", src.prefix);
    let expect = match expect {
        Some(r) => r,
        None => match etcd.get(&key) {
            Ok((_, kv)) => kv.map_or(0, |kv| kv.mod_revision),
            Err(e) => {
                eprintln!("routes push: {e}");
                return code(&e);
            }
        },
    };
    let mut body = serde_json::to_string_pretty(&routes).unwrap_or_default();
    body.push('\n');
    match etcd.cas(&key, body.as_bytes(), expect) {
        Ok(Cas::Written(rev)) => {
            println!(
                "pushed {} route(s) to {key}: revision {rev}",
                routes.as_object().map_or(0, |m| m.len())
            );
            0
        }
        Ok(Cas::Conflict(now)) => {
            eprintln!(
                "routes push: conflict: {key} is at revision {now}, not {expect}: someone else \
                 pushed meanwhile; nothing written (review `ringmesh routes get`, then push again)"
            );
            CONFLICT
        }
        Err(e) => {
            eprintln!("routes push: {e}");
            code(&e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_of_file_takes_routes_of_a_config_and_validates() {
        let r = routes_of_file(r#"{"listen_host": "1.2.3.4", "routes": {"8080": {"backends": [{"internal_port": 1}]}}}"#).unwrap();
        assert!(r["8080"].is_object() && r.get("listen_host").is_none());
        let r = routes_of_file(r#"{"8080": {"backends": [{"internal_port": 1}]}}"#).unwrap();
        assert!(r["8080"].is_object());
        let e = routes_of_file(r#"{"8080": {"backends": []}}"#).unwrap_err();
        assert!(e[0].contains("routes.\"8080\".backends"), "{e:?}");
        assert!(routes_of_file("[1]").is_err() && routes_of_file("{").is_err());
    }

    #[test]
    fn fleet_table_marks_rejected_revisions() {
        let t = fleet_table(&[
            json!({"node_id": "a", "address": "127.0.0.2", "version": "0.1.0",
            "config_revision": 5, "config_rejected_revision": 6, "uptime_seconds": 9, "connections_open": 2}),
        ]);
        assert!(t.contains("5 (!6)") && t.contains("127.0.0.2"), "{t}");
        assert_eq!(fleet_table(&[]), "no nodes registered\n");
    }
}
