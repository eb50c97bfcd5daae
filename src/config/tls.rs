//! Route fields for TLS: `tls`, `redirect_https`, `hsts`.
//!
//! ```json
//! "443": {
//!   "tls": {
//!     "certificates": [{"cert": "fullchain.pem", "key": "key.pem"}],
//!     "min_version": "1.2",
//!     "client_ca": null
//!   },
//!   "hsts": "max-age=31536000"
//! }
//! ```
//!
//! Paths are relative to the config file's directory. The files are read
//! and checked here (a reload re-reads them), so every problem is a config
//! error with its JSON path and the running config stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::snapshot::{Protocol, Route};
use crate::tls::{build_acceptor, Acceptor, TlsSource};

pub const TLS_FIELDS: &[&str] = &[
    "certificates",
    "min_version",
    "client_ca",
    "session_ticket_keys",
];
const CERT_FIELDS: &[&str] = &["cert", "key"];

/// The TLS-related settings of one route.
#[derive(Debug, Default)]
pub struct RouteTls {
    pub tls: Option<Arc<Acceptor>>,
    pub redirect_https: bool,
    pub hsts: Option<String>,
}

/// An error: (JSON path, message).
pub type Problem = (String, String);

fn at(path: &str, sub: &str) -> String {
    format!("{path}.{sub}")
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Reads `tls`, `redirect_https` and `hsts` of the route at `path`.
pub fn route_tls(
    m: &Map<String, Value>,
    path: &str,
    key: &str,
    protocol: Protocol,
    base: &Path,
    errors: &mut Vec<Problem>,
) -> RouteTls {
    let mut out = RouteTls::default();
    match m.get("redirect_https") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => out.redirect_https = *b,
        Some(_) => errors.push((at(path, "redirect_https"), "expected true or false".into())),
    }
    match m.get("hsts") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() || s.bytes().any(|b| b < 0x20 || b == 0x7f) {
                errors.push((
                    at(path, "hsts"),
                    "expected a header value such as \"max-age=31536000\"".into(),
                ));
            } else {
                out.hsts = Some(s.to_string());
            }
        }
        Some(_) => errors.push((
            at(path, "hsts"),
            "expected a string such as \"max-age=31536000\"".into(),
        )),
    }
    let tpath = at(path, "tls");
    let Some(v) = m.get("tls").filter(|v| !v.is_null()) else {
        if out.hsts.is_some() {
            errors.push((
                at(path, "hsts"),
                "only a route with \"tls\" sends HSTS".into(),
            ));
        }
        return out;
    };
    if out.redirect_https {
        errors.push((
            at(path, "redirect_https"),
            "a route with \"tls\" is already https".into(),
        ));
    }
    if out.hsts.is_some() && protocol == Protocol::Tcp {
        errors.push((at(path, "hsts"), "only http routes send HSTS".into()));
    }
    let Value::Object(t) = v else {
        errors.push((tpath, "expected an object".into()));
        return out;
    };
    let before = errors.len();
    for k in t.keys() {
        if !k.starts_with("//") && !TLS_FIELDS.contains(&k.as_str()) {
            errors.push((
                at(&tpath, k),
                format!("unknown field; expected one of: {}", TLS_FIELDS.join(", ")),
            ));
        }
    }
    let mut src = TlsSource {
        certificates: Vec::new(),
        tls13_only: false,
        client_ca: None,
        alpn_http11: protocol == Protocol::Http,
        ticket_keys: Vec::new(),
    };
    match t.get("certificates") {
        Some(Value::Array(certs)) if !certs.is_empty() => {
            for (i, c) in certs.iter().enumerate() {
                let cpath = format!("{tpath}.certificates[{i}]");
                let Value::Object(c) = c else {
                    errors.push((
                        cpath,
                        "expected an object {\"cert\": ..., \"key\": ...}".into(),
                    ));
                    continue;
                };
                for k in c.keys() {
                    if !k.starts_with("//") && !CERT_FIELDS.contains(&k.as_str()) {
                        errors.push((
                            at(&cpath, k),
                            "unknown field; expected one of: cert, key".into(),
                        ));
                    }
                }
                let mut file = |f: &str| match c.get(f) {
                    Some(Value::String(s)) if !s.trim().is_empty() => Some(resolve(base, s.trim())),
                    _ => {
                        errors.push((at(&cpath, f), "expected a file path (PEM)".into()));
                        None
                    }
                };
                if let (Some(cert), Some(key)) = (file("cert"), file("key")) {
                    src.certificates.push((cert, key));
                }
            }
        }
        _ => errors.push((
            at(&tpath, "certificates"),
            "expected a non-empty list of {\"cert\": ..., \"key\": ...}".into(),
        )),
    }
    match t.get("min_version") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.trim() == "1.2" => {}
        Some(Value::String(s)) if s.trim() == "1.3" => src.tls13_only = true,
        Some(_) => errors.push((
            at(&tpath, "min_version"),
            "expected \"1.2\" or \"1.3\"".into(),
        )),
    }
    match t.get("client_ca") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if !s.trim().is_empty() => {
            src.client_ca = Some(resolve(base, s.trim()));
        }
        Some(_) => errors.push((
            at(&tpath, "client_ca"),
            "expected a file path (PEM CA certificates) or null".into(),
        )),
    }
    match t.get("session_ticket_keys") {
        None | Some(Value::Null) => {}
        Some(Value::Array(files)) if !files.is_empty() => {
            for (i, f) in files.iter().enumerate() {
                match f {
                    Value::String(s) if !s.trim().is_empty() => {
                        src.ticket_keys.push(resolve(base, s.trim()))
                    }
                    _ => errors.push((
                        format!("{tpath}.session_ticket_keys[{i}]"),
                        "expected a file path (48 or 80 random bytes)".into(),
                    )),
                }
            }
        }
        Some(_) => errors.push((
            at(&tpath, "session_ticket_keys"),
            "expected a non-empty list of key files (the first encrypts new tickets) or null"
                .into(),
        )),
    }
    if errors.len() != before {
        return out;
    }
    match build_acceptor(&src, key) {
        Ok(a) => out.tls = Some(Arc::new(a)),
        Err(es) => {
            for e in es {
                errors.push((at(&tpath, &e.path), e.message));
            }
        }
    }
    out
}

/// An http port offers ALPN `h2` when every route on it has `http2` on
/// (`routes` of the port; see [`crate::tls`]). Called once per listener.
pub fn offer_h2(tls: &mut Option<Arc<Acceptor>>, protocol: Protocol, routes: &[&Route]) {
    if protocol != Protocol::Http || !routes.iter().all(|r| r.http2.is_some()) {
        return;
    }
    if let Some(acc) = tls {
        *acc = Arc::new(acc.offering_h2());
    }
}

/// Checks a shared port: only its first route carries `tls`.
pub fn check_shared(first: &Route, other: &Route, other_path: &str) -> Option<Problem> {
    if other.tls.is_some() && first.tls.is_none() {
        return Some((
            at(other_path, "tls"),
            "only the first route of a shared port carries \"tls\"; move it there".into(),
        ));
    }
    if other.tls.is_some() {
        return Some((
            at(other_path, "tls"),
            "the port's first route already carries \"tls\" for every route on it; remove this one"
                .into(),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    fn errors(text: &str) -> Vec<String> {
        match crate::config::parse(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn tls_fields_are_checked_with_their_paths() {
        let b = r#""backends": [{"name": "b", "internal_port": "1"}]"#;
        let got = errors(&format!(
            r#"{{"routes": {{"8443": {{"tls": {{"certificates": [], "min_version": "1.1", "bogus": 1}}, "redirect_https": true, {b}}}}}}}"#
        ));
        assert_eq!(
            got,
            [
                r#"routes."8443".redirect_https: a route with "tls" is already https"#,
                r#"routes."8443".tls.bogus: unknown field; expected one of: certificates, min_version, client_ca, session_ticket_keys"#,
                r#"routes."8443".tls.certificates: expected a non-empty list of {"cert": ..., "key": ...}"#,
                r#"routes."8443".tls.min_version: expected "1.2" or "1.3""#,
            ]
        );
        let got = errors(&format!(
            r#"{{"routes": {{"8443": {{"tls": {{"certificates": [{{"cert": "/nonexistent/c.pem", "key": "k.pem", "x": 1}}]}}, {b}}},
                "8080": {{"hsts": "max-age=1", "redirect_https": 1, {b}}}}}}}"#
        ));
        assert_eq!(
            got,
            [
                r#"routes."8443".tls.certificates[0].x: unknown field; expected one of: cert, key"#,
                r#"routes."8080".redirect_https: expected true or false"#,
                r#"routes."8080".hsts: only a route with "tls" sends HSTS"#,
            ]
        );
        let got = errors(&format!(
            r#"{{"routes": {{"8443": {{"tls": {{"certificates": [{{"cert": "/nonexistent/c.pem", "key": "k.pem"}}]}}, {b}}}}}}}"#
        ));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(r#"routes."8443".tls.certificates[0].cert: cannot read certificate /nonexistent/c.pem"#),
            "{got:?}"
        );
        // A chain that does not parse, a key file with no key: each names its field.
        let dir = tempfile::tempdir().unwrap();
        let bad = "-----BEGIN CERTIFICATE-----\nMIIBnotDER==\n-----END CERTIFICATE-----\n";
        std::fs::write(dir.path().join("c.pem"), bad).unwrap();
        std::fs::write(dir.path().join("k.pem"), "not a key\n").unwrap();
        let text = format!(
            r#"{{"routes": {{"8443": {{"tls": {{"certificates": [{{"cert": "c.pem", "key": "k.pem"}}]}}, {b}}}}}}}"#
        );
        let got = match crate::config::parse_in(&text, dir.path()) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        };
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(r#"routes."8443".tls.certificates[0].cert: "#),
            "{got:?}"
        );
    }
}
