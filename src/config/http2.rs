//! `"http2"` on an http route: HTTP/2 to clients (h2c with prior knowledge
//! today; h2 by ALPN once TLS lands) and its flood limits.
//!
//! `"http2": true` or absent = on with the defaults below, `false` = off
//! (the connection preface is then parsed as HTTP/1.1 and refused as a bad
//! request), or an object overriding some limits. The defaults are proxy
//! defaults, stricter than the `h2` crate's own (unbounded streams, 16 MiB
//! header lists).

use std::time::Duration;

use serde_json::{Map, Value};

use super::validate::ConfigError;

/// HTTP/2 limits of a route (and, merged, of a listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2 {
    /// SETTINGS_MAX_CONCURRENT_STREAMS we announce.
    pub max_concurrent_streams: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE (HPACK bombs, CONTINUATION floods).
    pub max_header_list_size: u32,
    /// Initial stream flow-control window (request bodies buffered per stream).
    pub initial_window_size: u32,
    /// Connection flow-control window.
    pub connection_window_size: u32,
    /// Streams reset by the client before we accepted them (rapid reset,
    /// CVE-2023-44487); past it GOAWAY ENHANCE_YOUR_CALM.
    pub max_pending_accept_reset_streams: u32,
    /// Streams we had to reset because the client broke the protocol on them
    /// (MadeYouReset, CVE-2025-8671); past it GOAWAY ENHANCE_YOUR_CALM.
    pub max_local_error_reset_streams: u32,
    /// Frames that do no work (SETTINGS, PING, PRIORITY, empty DATA: 1 each;
    /// RST_STREAM: 10) allowed per connection within [`FRAME_BUDGET_WINDOW`];
    /// past it GOAWAY ENHANCE_YOUR_CALM.
    pub frame_budget: u32,
    /// A connection without streams for this long is closed (GOAWAY).
    pub idle_timeout: Duration,
}

/// The window over which [`Http2::frame_budget`] is counted.
pub const FRAME_BUDGET_WINDOW: Duration = Duration::from_secs(10);

impl Default for Http2 {
    fn default() -> Self {
        Http2 {
            max_concurrent_streams: 128,
            max_header_list_size: 64 * 1024,
            initial_window_size: 256 * 1024,
            connection_window_size: 1024 * 1024,
            max_pending_accept_reset_streams: 100,
            max_local_error_reset_streams: 100,
            frame_budget: 1000,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl Http2 {
    /// The stricter of two routes' limits (a listener shared by several
    /// routes announces one set of SETTINGS).
    pub fn strictest(self, o: Http2) -> Http2 {
        Http2 {
            max_concurrent_streams: self.max_concurrent_streams.min(o.max_concurrent_streams),
            max_header_list_size: self.max_header_list_size.min(o.max_header_list_size),
            initial_window_size: self.initial_window_size.min(o.initial_window_size),
            connection_window_size: self.connection_window_size.min(o.connection_window_size),
            max_pending_accept_reset_streams: self
                .max_pending_accept_reset_streams
                .min(o.max_pending_accept_reset_streams),
            max_local_error_reset_streams: self
                .max_local_error_reset_streams
                .min(o.max_local_error_reset_streams),
            frame_budget: self.frame_budget.min(o.frame_budget),
            idle_timeout: self.idle_timeout.min(o.idle_timeout),
        }
    }
}

const FIELDS: &[&str] = &[
    "max_concurrent_streams",
    "max_header_list_size",
    "initial_window_size",
    "connection_window_size",
    "max_pending_accept_reset_streams",
    "max_local_error_reset_streams",
    "frame_budget",
    "idle_timeout",
];

/// Largest legal flow-control window (RFC 9113 §6.9.1).
const MAX_WINDOW: u64 = (1 << 31) - 1;

/// Parses a route's `http2` value (`path` is its JSON path). `None`: off.
pub fn parse(v: Option<&Value>, path: &str, errors: &mut Vec<ConfigError>) -> Option<Http2> {
    let mut err = |p: String, m: String| {
        errors.push(ConfigError {
            path: p,
            message: m,
        })
    };
    let m: &Map<String, Value> = match v {
        None | Some(Value::Null) | Some(Value::Bool(true)) => return Some(Http2::default()),
        Some(Value::Bool(false)) => return None,
        Some(Value::Object(m)) => m,
        Some(other) => {
            err(
                path.to_string(),
                format!("expected true, false or an object, found {other}"),
            );
            return None;
        }
    };
    let mut h = Http2::default();
    for (k, val) in m {
        if k.starts_with("//") {
            continue;
        }
        let p = format!("{path}.{k}");
        if k == "idle_timeout" {
            match super::validate::duration_value(val) {
                Ok(d) if !d.is_zero() => h.idle_timeout = d,
                Ok(_) => err(p, "must be more than 0".into()),
                Err(e) => err(p, e),
            }
            continue;
        }
        let (min, max): (u64, u64) = match k.as_str() {
            "max_concurrent_streams" => (1, 10_000),
            "max_header_list_size" => (1024, 16 << 20),
            "initial_window_size" | "connection_window_size" => (65_535, MAX_WINDOW),
            "max_pending_accept_reset_streams" | "max_local_error_reset_streams" => (1, 100_000),
            "frame_budget" => (10, 1_000_000),
            _ => {
                err(
                    p,
                    format!("unknown field; expected one of: {}", FIELDS.join(", ")),
                );
                continue;
            }
        };
        let n = match val.as_u64() {
            Some(n) if (min..=max).contains(&n) => n as u32,
            _ => {
                err(p, format!("{val} is not an integer from {min} to {max}"));
                continue;
            }
        };
        match k.as_str() {
            "max_concurrent_streams" => h.max_concurrent_streams = n,
            "max_header_list_size" => h.max_header_list_size = n,
            "initial_window_size" => h.initial_window_size = n,
            "connection_window_size" => h.connection_window_size = n,
            "max_pending_accept_reset_streams" => h.max_pending_accept_reset_streams = n,
            "max_local_error_reset_streams" => h.max_local_error_reset_streams = n,
            _ => h.frame_budget = n,
        }
    }
    Some(h)
}

/// A backend's `protocol`: `"http"` (HTTP/1.1, the default) or `"h2c"`
/// (HTTP/2 with prior knowledge: gRPC). `true` when h2c.
pub fn backend_h2c(v: Option<&Value>, path: &str, errors: &mut Vec<ConfigError>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "" | "http" | "http/1.1" => false,
            // "h2": HTTP/2 over TLS (config/upstream_tls.rs adds the TLS).
            "h2c" | "h2" => true,
            _ => {
                errors.push(ConfigError {
                    path: path.to_string(),
                    message: format!(
                        "{v:?} is not a backend protocol; expected \"http\", \"h2c\" or \"h2\"",
                        v = s
                    ),
                });
                false
            }
        },
        Some(other) => {
            errors.push(ConfigError {
                path: path.to_string(),
                message: format!("expected a string, found {other}"),
            });
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn forms_defaults_and_errors() {
        let mut e = Vec::new();
        assert_eq!(parse(None, "r.http2", &mut e), Some(Http2::default()));
        assert_eq!(parse(Some(&json!(false)), "r.http2", &mut e), None);
        let h = parse(
            Some(&json!({"max_concurrent_streams": 10, "idle_timeout": "5s", "//": "x"})),
            "r.http2",
            &mut e,
        )
        .unwrap();
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(h.max_concurrent_streams, 10);
        assert_eq!(h.idle_timeout, Duration::from_secs(5));
        parse(
            Some(&json!({"max_concurrent_streams": 0, "bogus": 1, "initial_window_size": 1})),
            "r.http2",
            &mut e,
        );
        let paths: Vec<_> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "r.http2.max_concurrent_streams",
                "r.http2.bogus",
                "r.http2.initial_window_size"
            ]
        );
        e.clear();
        parse(Some(&json!("yes")), "r.http2", &mut e);
        assert_eq!(e.len(), 1);
    }
}
