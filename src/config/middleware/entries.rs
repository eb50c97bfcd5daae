//! Validation of the larger middleware entries (`cors`, `basic_auth`).

use serde_json::{Map, Value};

use super::{Middleware, V};

impl V<'_> {
    pub(super) fn cors(&mut self, m: &Map<String, Value>, path: &str) -> Option<Middleware> {
        self.fields(
            m,
            path,
            &[
                "origins",
                "methods",
                "headers",
                "expose",
                "credentials",
                "max_age",
            ],
        );
        let origins = self.names(m, path, "origins", |o| {
            o == "*"
                || (o.starts_with("http://") || o.starts_with("https://"))
                    && o.matches('*').count() <= 1
                    && o.bytes().all(|b| (0x21..0x7f).contains(&b))
        });
        if origins.is_empty() {
            self.err(format!("{path}.origins"), "at least one origin (or \"*\")");
        }
        let mut methods = self.names(m, path, "methods", |x| {
            !x.is_empty() && x.bytes().all(|b| b.is_ascii_uppercase())
        });
        if methods.is_empty() {
            methods = ["GET", "HEAD", "POST"].map(String::from).to_vec();
        }
        let headers = self.names(m, path, "headers", |h| {
            !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        let expose = self.names(m, path, "expose", |h| {
            !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        let credentials = self.bool(m, path, "credentials", false);
        let max_age = match m.get("max_age") {
            None | Some(Value::Null) => 600,
            Some(v) => v.as_u64().filter(|&n| n <= 86_400 * 7).unwrap_or_else(|| {
                self.err(
                    format!("{path}.max_age"),
                    format!("{v} is not seconds (0 to 604800)"),
                );
                600
            }),
        };
        Some(Middleware::Cors {
            origins,
            methods,
            headers,
            expose,
            credentials,
            max_age,
        })
    }

    pub(super) fn basic_auth(&mut self, m: &Map<String, Value>, path: &str) -> Option<Middleware> {
        self.fields(m, path, &["htpasswd", "realm"]);
        let realm = self
            .string(m, path, "realm")
            .unwrap_or_else(|| "ringmesh".into());
        if realm
            .bytes()
            .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
        {
            self.err(
                format!("{path}.realm"),
                "printable ASCII without quotes or backslashes",
            );
        }
        let Some(file) = self.string(m, path, "htpasswd") else {
            self.err(
                format!("{path}.htpasswd"),
                "missing: the path of an htpasswd file",
            );
            return None;
        };
        let p = format!("{path}.htpasswd");
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                self.err(p, format!("cannot read {file:?}: {e}"));
                return None;
            }
        };
        let mut users = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some((u, h)) if crate::filter::basic_auth::supported(h) => {
                    users.push((u.to_string(), h.to_string()))
                }
                Some((u, _)) => self.err(
                    p.clone(),
                    format!("{file}:{}: user {u:?}: unknown hash scheme (supported: what htpasswd writes: $2y$ bcrypt, $apr1$ MD5, $5$/$6$ SHA-crypt, crypt, {{SHA}}, plain)", n + 1),
                ),
                None => self.err(p.clone(), format!("{file}:{}: not a user:hash line", n + 1)),
            }
        }
        if users.is_empty() {
            self.err(p, format!("{file:?} has no users"));
            return None;
        }
        Some(Middleware::BasicAuth { users, realm })
    }
}
