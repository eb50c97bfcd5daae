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
                format!(
                    "unknown field; expected one of: {}",
                    BACKEND_TLS_FIELDS.join(", ")
                ),
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
            push(
                errors,
                at(&tpath, "key"),
                "a client \"cert\" needs its \"key\"",
            );
            None
        }
        (None, Some(_)) => {
            push(
                errors,
                at(&tpath, "cert"),
                "a client \"key\" needs its \"cert\"",
            );
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

#[cfg(test)]
mod tests {
    use crate::config::{parse, parse_in};

    fn cfg(backend: &str) -> String {
        format!(
            r#"{{"listen_host": "127.0.0.1", "routes": {{"8080": {{"backends": [{{"internal_port": "9001", {backend}}}]}}}}}}"#
        )
    }

    fn errors(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn has(errs: &[String], path: &str, text: &str) -> bool {
        errs.iter().any(|e| e.starts_with(path) && e.contains(text))
    }

    const B: &str = "routes.\"8080\".backends[0]";

    #[test]
    fn forms() {
        let s = parse(&cfg(r#""tls": {"verify": false, "sni": "api.internal"}"#))
            .unwrap_or_else(|e| panic!("{e}"));
        let b = &s.routes[0].backends[0];
        let t = b.tls.as_ref().unwrap();
        assert!(!t.verify && !b.h2c);
        assert_eq!(t.config.alpn_protocols, [b"http/1.1".to_vec()]);
        assert_eq!(format!("{:?}", t.server_name), "DnsName(\"api.internal\")");
        let s = parse(&cfg(r#""tls": false"#)).unwrap();
        assert!(s.routes[0].backends[0].tls.is_none());
        let s = parse(&cfg(r#""protocol": "h2", "tls": {"verify": false}"#)).unwrap();
        let b = &s.routes[0].backends[0];
        assert!(b.h2c);
        assert_eq!(
            b.tls.as_ref().unwrap().config.alpn_protocols,
            [b"h2".to_vec()]
        );
        // Same settings, same fingerprint (a reload keeps pools and sessions).
        let a = parse(&cfg(r#""tls": {"verify": false}"#)).unwrap();
        let b = parse(&cfg(r#""tls": {"verify": false}"#)).unwrap();
        assert_eq!(a.routes[0].backends[0], b.routes[0].backends[0]);
    }

    #[test]
    fn system_roots_when_no_ca() {
        // Debian's ca-certificates bundle (scripts/test.sh installs it).
        let s = parse(&cfg(r#""tls": true"#)).unwrap_or_else(|e| panic!("{e}"));
        let t = s.routes[0].backends[0].tls.as_ref().unwrap();
        assert!(t.verify);
        assert_eq!(
            format!("{:?}", t.server_name),
            "IpAddress(V4(Ipv4Addr([127, 0, 0, 1])))"
        );
    }

    #[test]
    fn every_field_checked_with_its_path() {
        let e = errors(&cfg(r#""tls": 5"#));
        assert!(
            has(&e, &format!("{B}.tls"), "expected true, false or an object"),
            "{e:?}"
        );
        let e = errors(&cfg(r#""tls": {"verfy": true}"#));
        assert!(has(&e, &format!("{B}.tls.verfy"), "unknown field"), "{e:?}");
        let e = errors(&cfg(r#""tls": {"verify": "yes"}"#));
        assert!(
            has(&e, &format!("{B}.tls.verify"), "true or false"),
            "{e:?}"
        );
        let e = errors(&cfg(r#""tls": {"sni": 3}"#));
        assert!(
            has(&e, &format!("{B}.tls.sni"), "non-empty string"),
            "{e:?}"
        );
        let e = errors(&cfg(r#""tls": {"sni": "bad name!", "verify": false}"#));
        assert!(has(&e, &format!("{B}.tls.sni"), "not a DNS name"), "{e:?}");
        let e = errors(&cfg(r#""tls": {"cert": "c.pem"}"#));
        assert!(
            has(&e, &format!("{B}.tls.key"), "needs its \"key\""),
            "{e:?}"
        );
        let e = errors(&cfg(r#""tls": {"key": "k.pem"}"#));
        assert!(
            has(&e, &format!("{B}.tls.cert"), "needs its \"cert\""),
            "{e:?}"
        );
        let e = errors(&cfg(r#""tls": {"verify": false, "ca": "ca.pem"}"#));
        assert!(
            has(&e, &format!("{B}.tls.ca"), "\"verify\" is false"),
            "{e:?}"
        );
        let e = errors(&cfg(r#""tls": {"alpn": ["h2"]}"#));
        assert!(
            has(&e, &format!("{B}.tls.alpn"), "\"protocol\": \"h2\""),
            "{e:?}"
        );
        let e = errors(&cfg(r#""tls": {"alpn": [""]}"#));
        assert!(
            has(&e, &format!("{B}.tls.alpn[0]"), "protocol name"),
            "{e:?}"
        );
        let e = errors(&cfg(r#""tls": {"alpn": "h2"}"#));
        assert!(
            has(&e, &format!("{B}.tls.alpn"), "non-empty array"),
            "{e:?}"
        );
        let e = errors(&cfg(r#""protocol": "h2", "tls": {"alpn": ["http/1.1"]}"#));
        assert!(has(&e, &format!("{B}.tls.alpn"), "needs \"h2\""), "{e:?}");
        let e = errors(&cfg(r#""protocol": "h2", "tls": false"#));
        assert!(has(&e, &format!("{B}.tls"), "use \"h2c\""), "{e:?}");
        let e = errors(&cfg(r#""send_proxy": "v2", "tls": true"#));
        assert!(has(&e, &format!("{B}.tls"), "send_proxy"), "{e:?}");
        let e = errors(&cfg(r#""protocol": "h3""#));
        assert!(has(&e, &format!("{B}.protocol"), "\"h2\""), "{e:?}");
    }

    #[test]
    fn files_relative_to_the_config_and_checked() {
        let dir = std::env::temp_dir().join(format!("ringmesh-uptls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("junk.pem"), "not a certificate\n").unwrap();
        let e = match parse_in(&cfg(r#""tls": {"ca": "missing.pem"}"#), &dir) {
            Ok(_) => panic!("a missing CA file must fail"),
            Err(e) => e.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
        };
        let missing = dir.join("missing.pem").display().to_string();
        assert!(has(&e, &format!("{B}.tls.ca"), &missing), "{e:?}");
        let e = match parse_in(&cfg(r#""tls": {"ca": "junk.pem"}"#), &dir) {
            Ok(_) => panic!("a CA file without certificates must fail"),
            Err(e) => e.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
        };
        assert!(has(&e, &format!("{B}.tls.ca"), "no CERTIFICATE"), "{e:?}");
        let e = match parse_in(
            &cfg(r#""tls": {"verify": false, "cert": "c.pem", "key": "k.pem"}"#),
            &dir,
        ) {
            Ok(_) => panic!("missing client certificate files must fail"),
            Err(e) => e.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
        };
        assert!(has(&e, &format!("{B}.tls.cert"), "cannot read"), "{e:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
