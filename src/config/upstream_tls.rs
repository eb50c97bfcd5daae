//! Backend field `tls`: upstream TLS (origination) toward one backend.
//!
//! ```json
//! "backends": [
//!   {"internal_host": "10.0.0.5", "internal_port": 443, "tls": true},
//!   {"internal_port": 8443, "tls": {"sni": "api.internal", "ca": "ca.pem",
//!     "verify": true, "cert": "client.pem", "key": "client.key", "alpn": ["http/1.1"]}},
//!   {"internal_port": 9443, "protocol": "h2"}
//! ]
//! ```
//!
//! `true` is `{}`: verify against the system roots, SNI (and the name
//! checked) is `internal_host`. Paths are relative to the config file; the
//! files are read here, so a missing or bad file is a config error with its
//! JSON path (a reload re-reads them). `"protocol": "h2"` is HTTP/2 over
//! TLS: `tls` defaults to `true` and ALPN to `["h2"]`.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::validate::ConfigError;
use crate::tls::client::{build, ClientSource, ClientTls};

pub const BACKEND_TLS_FIELDS: &[&str] = &["sni", "ca", "verify", "cert", "key", "alpn"];

fn at(path: &str, sub: &str) -> String {
    format!("{path}.{sub}")
}

fn push(errors: &mut Vec<ConfigError>, path: String, message: impl Into<String>) {
    errors.push(ConfigError {
        path,
        message: message.into(),
    });
}

/// Whether the backend's `protocol` asks for HTTP/2 over TLS.
pub fn wants_h2(bm: &Map<String, Value>) -> bool {
    matches!(bm.get("protocol"), Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("h2"))
}

/// Reads `tls` of the backend at `path` (`bm` its object). `host` is its
/// `internal_host` (the default SNI), `key` names its counters.
pub fn backend_tls(
    bm: &Map<String, Value>,
    path: &str,
    host: &str,
    base: &Path,
    key: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<ClientTls>> {
    let tpath = at(path, "tls");
    let h2 = wants_h2(bm);
    let empty = Map::new();
    let t = match bm.get("tls") {
        None | Some(Value::Null) if h2 => &empty,
        None | Some(Value::Null) | Some(Value::Bool(false)) => {
            if h2 {
                push(
                    errors,
                    tpath,
                    "\"protocol\": \"h2\" is HTTP/2 over TLS; use \"h2c\" for cleartext HTTP/2",
                );
            }
            return None;
        }
        Some(Value::Bool(true)) => &empty,
        Some(Value::Object(t)) => t,
        Some(other) => {
            push(
                errors,
                tpath,
                format!("expected true, false or an object {{\"sni\", \"ca\", \"verify\", ...}}, found {other}"),
            );
            return None;
        }
    };
    let before = errors.len();
    if !matches!(bm.get("send_proxy"), None | Some(Value::Null)) {
        push(
            errors,
            tpath.clone(),
            "\"send_proxy\" and \"tls\" on one backend are not supported together",
        );
    }
    for k in t.keys() {
        if !k.starts_with("//") && !BACKEND_TLS_FIELDS.contains(&k.as_str()) {
            push(
                errors,
                at(&tpath, k),
                format!("unknown field; expected one of: {}", BACKEND_TLS_FIELDS.join(", ")),
            );
        }
    }
    let mut string = |name: &str| -> Option<String> {
        match t.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Some(other) => {
                push(
                    errors,
                    at(&tpath, name),
                    format!("expected a non-empty string, found {other}"),
                );
                None
            }
        }
    };
    let sni = string("sni");
    let ca = string("ca");
    let cert = string("cert");
    let key_file = string("key");
    let verify = match t.get("verify") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            push(
                errors,
                at(&tpath, "verify"),
                format!("expected true or false, found {other}"),
            );
            true
        }
    };
    if !verify && ca.is_some() {
        push(
            errors,
            at(&tpath, "ca"),
            "a CA is given but \"verify\" is false; drop one of them",
        );
    }
    let cert = match (cert, key_file) {
        (Some(c), Some(k)) => Some((resolve(base, &c), resolve(base, &k))),
        (None, None) => None,
        (Some(_), None) => {
            push(errors, at(&tpath, "key"), "a client \"cert\" needs its \"key\"");
            None
        }
        (None, Some(_)) => {
            push(errors, at(&tpath, "cert"), "a client \"key\" needs its \"cert\"");
            None
        }
    };
    let mut alpn = Vec::new();
    match t.get("alpn") {
        None | Some(Value::Null) => alpn.push(if h2 { "h2" } else { "http/1.1" }.to_string()),
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                match v {
                    Value::String(s) if !s.is_empty() && s.len() <= 255 && s.is_ascii() => {
                        alpn.push(s.clone())
                    }
                    other => push(
                        errors,
                        format!("{tpath}.alpn[{i}]"),
                        format!("expected a protocol name such as \"http/1.1\", found {other}"),
                    ),
                }
            }
            let has_h2 = alpn.iter().any(|a| a == "h2");
            if h2 && !has_h2 {
                push(
                    errors,
                    at(&tpath, "alpn"),
                    "\"protocol\": \"h2\" needs \"h2\" in alpn",
                );
            } else if !h2 && has_h2 {
                push(
                    errors,
                    at(&tpath, "alpn"),
                    "this backend speaks HTTP/1.1; set \"protocol\": \"h2\" for HTTP/2",
                );
            }
        }
        Some(other) => push(
            errors,
            at(&tpath, "alpn"),
            format!("expected a non-empty array of protocol names, found {other}"),
        ),
    }
    if errors.len() > before {
        return None;
    }
    let src = ClientSource {
        sni: sni.unwrap_or_else(|| host.to_string()),
        ca: ca.map(|c| resolve(base, &c)),
        verify,
        cert,
        alpn,
    };
    match build(&src, key) {
        Ok(c) => Some(Arc::new(c)),
        Err(list) => {
            for (field, msg) in list {
                push(errors, at(&tpath, field), msg);
            }
            None
        }
    }
}

fn resolve(base: &Path, p: &str) -> std::path::PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
