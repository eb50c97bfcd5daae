//! `discover` backends: a backend entry that DNS expands into backends.
//!
//! ```json
//! {"discover": {"dns": "_http._tcp.api.internal", "type": "srv", "interval": "5s"}}
//! {"name": "api", "discover": {"dns": "api.internal", "type": "a", "port": 8080, "resolver": "127.0.0.1:5353"}}
//! ```
//! Parsed here with every error at its JSON path; resolved by `crate::discovery`.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Map, Value};

use super::validate::duration_value;

/// Which records name the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsType {
    /// SRV: target, port, priority, weight (targets resolved to A/AAAA).
    Srv,
    A,
    Aaaa,
}

impl DnsType {
    pub fn as_str(self) -> &'static str {
        match self {
            DnsType::Srv => "srv",
            DnsType::A => "a",
            DnsType::Aaaa => "aaaa",
        }
    }
}

/// One `discover` entry of a route's `backends`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discover {
    /// Prefix of the discovered backends' names (default: the DNS name).
    pub name: String,
    pub dns: String,
    pub rtype: DnsType,
    /// a/aaaa: the backends' port (required); srv: overrides the records' port.
    pub port: Option<u16>,
    pub interval: Duration,
    /// `ip:port` of the DNS server; default: the first nameserver of /etc/resolv.conf.
    pub resolver: Option<SocketAddr>,
}

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

const BACKEND_FIELDS: &[&str] = &["name", "discover"];
const FIELDS: &[&str] = &["dns", "type", "port", "interval", "resolver"];

fn valid_dns_name(n: &str) -> bool {
    let n = n.strip_suffix('.').unwrap_or(n);
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Parses a backend object that has `discover` (at `path`, e.g.
/// `routes."80".backends[1]`); errors go to `err(path, message)`.
pub fn parse(
    bm: &Map<String, Value>,
    path: &str,
    err: &mut dyn FnMut(String, String),
) -> Option<Discover> {
    for k in bm.keys() {
        if !k.starts_with("//") && !BACKEND_FIELDS.contains(&k.as_str()) {
            err(
                format!("{path}.{k}"),
                format!(
                    "not allowed beside \"discover\" (the backends come from DNS); expected one of: {}",
                    BACKEND_FIELDS.join(", ")
                ),
            );
        }
    }
    let dp = format!("{path}.discover");
    let Some(Value::Object(m)) = bm.get("discover") else {
        err(
            dp,
            "expected an object such as {\"dns\": \"_http._tcp.api.internal\"}".into(),
        );
        return None;
    };
    for k in m.keys() {
        if !k.starts_with("//") && !FIELDS.contains(&k.as_str()) {
            err(
                format!("{dp}.{k}"),
                format!("unknown field; expected one of: {}", FIELDS.join(", ")),
            );
        }
    }
    let before = std::cell::Cell::new(0usize);
    let mut fail = |p: String, msg: String| {
        before.set(before.get() + 1);
        err(p, msg)
    };
    let dns = match m.get("dns") {
        Some(Value::String(s)) if valid_dns_name(s.trim()) => s.trim().to_ascii_lowercase(),
        other => {
            fail(
                format!("{dp}.dns"),
                format!(
                    "{} is not a DNS name (required, e.g. \"_http._tcp.api.internal\")",
                    other.map_or("nothing".into(), |v| v.to_string())
                ),
            );
            String::new()
        }
    };
    let rtype = match m
        .get("type")
        .map(|v| v.as_str().map(str::to_ascii_lowercase))
    {
        None => DnsType::Srv,
        Some(Some(t)) if t == "srv" => DnsType::Srv,
        Some(Some(t)) if t == "a" => DnsType::A,
        Some(Some(t)) if t == "aaaa" => DnsType::Aaaa,
        Some(_) => {
            fail(
                format!("{dp}.type"),
                format!(
                    "{} is not a record type; expected \"srv\", \"a\" or \"aaaa\"",
                    m["type"]
                ),
            );
            DnsType::Srv
        }
    };
    let port = match m.get("port") {
        None | Some(Value::Null) => None,
        Some(v) => match v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        {
            Some(p @ 1..=65535) => Some(p as u16),
            _ => {
                fail(
                    format!("{dp}.port"),
                    format!("{v} is not a port number (1-65535)"),
                );
                None
            }
        },
    };
    if port.is_none() && rtype != DnsType::Srv && !m.contains_key("port") {
        fail(
            format!("{dp}.port"),
            format!(
                "required for type \"{}\" (A/AAAA records carry no port)",
                rtype.as_str()
            ),
        );
    }
    let interval = match m.get("interval") {
        None | Some(Value::Null) => DEFAULT_INTERVAL,
        Some(v) => match duration_value(v) {
            Ok(d) if d >= Duration::from_millis(100) => d,
            Ok(_) => {
                fail(format!("{dp}.interval"), "at least 100ms".into());
                DEFAULT_INTERVAL
            }
            Err(msg) => {
                fail(format!("{dp}.interval"), msg);
                DEFAULT_INTERVAL
            }
        },
    };
    let resolver = match m.get("resolver") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let s = s.trim();
            match s.parse::<SocketAddr>().ok().or_else(|| {
                s.parse::<std::net::IpAddr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip, 53))
            }) {
                Some(a) => Some(a),
                None => {
                    fail(
                        format!("{dp}.resolver"),
                        format!("{s:?} is not an ip or ip:port"),
                    );
                    None
                }
            }
        }
        Some(v) => {
            fail(
                format!("{dp}.resolver"),
                format!("expected \"ip:port\", found {v}"),
            );
            None
        }
    };
    let name = match bm.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => dns.clone(),
    };
    (before.get() == 0).then_some(Discover {
        name,
        dns,
        rtype,
        port,
        interval,
        resolver,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(v: Value) -> (Option<Discover>, Vec<String>) {
        let mut errs = Vec::new();
        let d = parse(v.as_object().unwrap(), "b", &mut |p, m| {
            errs.push(format!("{p}: {m}"))
        });
        (d, errs)
    }

    #[test]
    fn parses_and_reports_with_paths() {
        let (d, e) = run(serde_json::json!({"discover": {"dns": "_http._tcp.API.internal"}}));
        let d = d.unwrap();
        assert!(e.is_empty());
        assert_eq!(
            (d.dns.as_str(), d.rtype, d.port, d.interval),
            (
                "_http._tcp.api.internal",
                DnsType::Srv,
                None,
                DEFAULT_INTERVAL
            )
        );
        let (d, _) = run(
            serde_json::json!({"name": "x", "discover": {"dns": "a.b", "type": "A", "port": 80, "interval": "1s", "resolver": "127.0.0.1:5353"}}),
        );
        let d = d.unwrap();
        assert_eq!(
            (d.name.as_str(), d.rtype, d.port, d.resolver.unwrap().port()),
            ("x", DnsType::A, Some(80), 5353)
        );
        let (d, e) = run(
            serde_json::json!({"internal_port": 1, "discover": {"dns": "a..b", "type": "mx", "interval": "0s", "resolver": "x", "zz": 1}}),
        );
        assert!(d.is_none());
        let all = e.join("\n");
        for want in [
            "b.internal_port: not allowed beside",
            "b.discover.zz: unknown field",
            "b.discover.dns:",
            "b.discover.type:",
            "b.discover.interval:",
            "b.discover.resolver:",
        ] {
            assert!(all.contains(want), "{want} in {all}");
        }
        let (_, e) = run(serde_json::json!({"discover": {"dns": "a.b", "type": "a"}}));
        assert!(e[0].contains("b.discover.port: required"), "{e:?}");
        let twice = r#"{"routes": {"80": {"backends": [{"discover": {"dns": "a.b"}}, {"discover": {"dns": "A.b"}}]}}}"#;
        let e = crate::config::parse(twice).unwrap_err().to_string();
        assert!(
            e.contains(r#"routes."80".backends[1].discover.dns: "a.b" is discovered twice"#),
            "{e}"
        );
        let ok = r#"{"routes": {"80": {"backends": [{"discover": {"dns": "a.b"}}, {"internal_port": 1, "weight": 5}]}}}"#;
        let s = crate::config::parse(ok).unwrap();
        assert_eq!(
            (s.routes[0].discover.len(), s.routes[0].backends[0].weight),
            (1, 5)
        );
    }
}
