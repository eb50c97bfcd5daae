//! `routes.*.gateway`: WebSocket sessions on an http route (see `crate::gateway`).
//!
//! ```json
//! "gateway": {"heartbeat": "25s", "heartbeat_timeout": "60s", "max_message": 65536, "send_queue": "1MiB"}
//! ```
//! `true` takes every default; absent, `null` or `false` keeps the route a
//! blind upgrade tunnel.

use std::time::Duration;

use serde_json::{Map, Value};

use super::snapshot::Protocol;
use super::validate::{duration_value, ConfigError};

const FIELDS: &[&str] = &[
    "heartbeat",
    "heartbeat_timeout",
    "max_message",
    "send_queue",
];

/// Largest `max_message` and `send_queue` accepted (1 GiB).
const MAX_BYTES: u64 = 1 << 30;

/// A gateway route's session settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gateway {
    /// Silence from the client after which ringmesh sends a ping.
    pub heartbeat: Duration,
    /// No frame at all from the client for this long: close 1001.
    pub heartbeat_timeout: Duration,
    /// Largest client message after reassembly: over it, close 1009.
    pub max_message: u64,
    /// Bytes of pushed frames waiting for a slow client: over it, close 1008.
    pub send_queue: u64,
}

impl Default for Gateway {
    fn default() -> Gateway {
        Gateway {
            heartbeat: Duration::from_secs(25),
            heartbeat_timeout: Duration::from_secs(60),
            max_message: 65_536,
            send_queue: 1 << 20,
        }
    }
}

/// Validates `routes.<key>.gateway` (at `path`), pushing errors with their paths.
pub fn parse(
    v: Option<&Value>,
    path: &str,
    protocol: Protocol,
    errors: &mut Vec<ConfigError>,
) -> Option<Gateway> {
    let p = format!("{path}.gateway");
    let mut err = |at: String, message: String| errors.push(ConfigError { path: at, message });
    let m: &Map<String, Value> = match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return None,
        Some(Value::Bool(true)) => &Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            err(
                p,
                format!("expected an object (or true for the defaults), found {other}"),
            );
            return None;
        }
    };
    if protocol != Protocol::Http {
        // A tcp route's connections are sessions too, for listing and
        // closing only: the WebSocket settings have nothing to act on.
        if let Some(k) = m.keys().find(|k| !k.starts_with("//")) {
            err(
                format!("{p}.{k}"),
                "a tcp route's sessions can only be listed and closed: no gateway settings apply (use true or {})".into(),
            );
            return None;
        }
        return Some(Gateway::default());
    }
    let mut g = Gateway::default();
    for (k, v) in m {
        if k.starts_with("//") {
            continue;
        }
        let at = format!("{p}.{k}");
        match k.as_str() {
            "heartbeat" | "heartbeat_timeout" => match duration_value(v) {
                Ok(d) if k == "heartbeat" => g.heartbeat = d,
                Ok(d) => g.heartbeat_timeout = d,
                Err(msg) => err(at, msg),
            },
            "max_message" | "send_queue" => match size_value(v) {
                Ok(0) => err(at, "must be greater than zero".into()),
                Ok(n) if n > MAX_BYTES => err(at, format!("{v} is too large (at most 1GiB)")),
                Ok(n) if k == "max_message" => g.max_message = n,
                Ok(n) => g.send_queue = n,
                Err(msg) => err(at, msg),
            },
            _ => err(
                at,
                format!("unknown field; expected one of {}", FIELDS.join(", ")),
            ),
        }
    }
    if g.heartbeat >= g.heartbeat_timeout {
        err(
            format!("{p}.heartbeat"),
            format!(
                "must be shorter than heartbeat_timeout ({:?}), or clients are closed before they are pinged",
                g.heartbeat_timeout
            ),
        );
    }
    Some(g)
}

/// A byte count: a number, or a string with a unit (`"64KiB"`, `"1MiB"`, `"512B"`, `"2MB"`).
pub fn size_value(v: &Value) -> Result<u64, String> {
    let bad = || format!("{v} is not a size; write e.g. 65536, \"64KiB\" or \"1MiB\"");
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(bad),
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: u64 = num.parse().map_err(|_| bad())?;
            let mult: u64 = match unit.trim() {
                "" | "B" => 1,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                "KB" | "kB" => 1_000,
                "MB" => 1_000_000,
                "GB" => 1_000_000_000,
                _ => return Err(bad()),
            };
            n.checked_mul(mult).ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(v: Value) -> (Option<Gateway>, Vec<ConfigError>) {
        let mut errs = Vec::new();
        let g = parse(Some(&v), "routes.\"80\"", Protocol::Http, &mut errs);
        (g, errs)
    }

    #[test]
    fn fields_defaults_and_errors() {
        assert_eq!(run(Value::Bool(true)).0, Some(Gateway::default()));
        let (g, e) = run(
            serde_json::json!({"heartbeat": "1s", "heartbeat_timeout": "3s", "max_message": "64KiB", "send_queue": 4096, "//": "x"}),
        );
        assert!(e.is_empty(), "{e:?}");
        let g = g.unwrap();
        assert_eq!(g.heartbeat, Duration::from_secs(1));
        assert_eq!(g.max_message, 65_536);
        assert_eq!(g.send_queue, 4096);
        let (_, e) =
            run(serde_json::json!({"hearbeat": "1s", "max_message": "big", "send_queue": 0}));
        let paths: Vec<_> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routes.\"80\".gateway.hearbeat",
                "routes.\"80\".gateway.max_message",
                "routes.\"80\".gateway.send_queue"
            ]
        );
        let (_, e) = run(serde_json::json!({"heartbeat": "60s", "heartbeat_timeout": "60s"}));
        assert_eq!(e[0].path, "routes.\"80\".gateway.heartbeat");
        // A tcp route: sessions for list and close, no settings.
        let mut errs = Vec::new();
        let g = parse(Some(&Value::Bool(true)), "r", Protocol::Tcp, &mut errs);
        assert!(g.is_some() && errs.is_empty(), "{errs:?}");
        let g = parse(
            Some(&serde_json::json!({"heartbeat": "5s"})),
            "r",
            Protocol::Tcp,
            &mut errs,
        );
        assert!(g.is_none());
        assert_eq!(errs[0].path, "r.gateway.heartbeat");
        assert_eq!(size_value(&Value::String("1MiB".into())), Ok(1 << 20));
    }
}
