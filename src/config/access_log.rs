//! `access_log`: the top-level log and a route's override.
//!
//! ```json
//! "access_log": {"path": "/var/log/ringmesh/access.log", "format": "json"}
//! "routes": {"8080": {"access_log": false}}
//! ```
//!
//! Top level: an object, or `false`/`null` for none. A route: `false` turns
//! its log off, `true` (or absent) uses the top-level one, an object gives
//! the route a log of its own.

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::accesslog::{Dest, Format};

use super::validate::ConfigError;

/// One access log: where and in which format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub dest: Dest,
    pub format: Format,
}

/// A route's `access_log` setting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RouteLog {
    /// Absent or `true`: the top-level log, if any.
    #[default]
    Inherit,
    /// `false`: no log for this route.
    Off,
    /// A log of its own.
    Own(AccessLog),
}

impl RouteLog {
    /// The log this route writes to, given the top-level one.
    pub fn resolve<'a>(&'a self, top: Option<&'a AccessLog>) -> Option<&'a AccessLog> {
        match self {
            RouteLog::Inherit => top,
            RouteLog::Off => None,
            RouteLog::Own(l) => Some(l),
        }
    }
}

const FIELDS: &[&str] = &["path", "format"];

fn err(errors: &mut Vec<ConfigError>, path: &str, message: impl Into<String>) {
    errors.push(ConfigError {
        path: path.to_string(),
        message: message.into(),
    });
}

/// Parses the top-level `access_log` (`path` is its JSON path).
pub fn top(v: Option<&Value>, path: &str, errors: &mut Vec<ConfigError>) -> Option<AccessLog> {
    match v? {
        Value::Null | Value::Bool(false) => None,
        Value::Object(m) => object(m, path, errors),
        other => {
            err(
                errors,
                path,
                format!(
                    "expected an object {{\"path\": ..., \"format\": ...}} or false, found {other}"
                ),
            );
            None
        }
    }
}

/// Parses a route's `access_log`.
pub fn route(v: Option<&Value>, path: &str, errors: &mut Vec<ConfigError>) -> RouteLog {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(true)) => RouteLog::Inherit,
        Some(Value::Bool(false)) => RouteLog::Off,
        Some(Value::Object(m)) => object(m, path, errors).map_or(RouteLog::Inherit, RouteLog::Own),
        Some(other) => {
            err(
                errors,
                path,
                format!("expected an object, true or false, found {other}"),
            );
            RouteLog::Inherit
        }
    }
}

fn object(m: &Map<String, Value>, path: &str, errors: &mut Vec<ConfigError>) -> Option<AccessLog> {
    for k in m.keys() {
        if !k.starts_with("//") && !FIELDS.contains(&k.as_str()) {
            err(
                errors,
                &format!("{path}.{k}"),
                format!("unknown field; expected one of: {}", FIELDS.join(", ")),
            );
        }
    }
    let dest = match m.get("path") {
        Some(Value::String(s)) if s.trim() == "stderr" => Some(Dest::Stderr),
        Some(Value::String(s)) if !s.trim().is_empty() && !s.contains('\0') => {
            Some(Dest::File(PathBuf::from(s.trim())))
        }
        Some(other) => {
            err(
                errors,
                &format!("{path}.path"),
                format!("{other} is not a file path or \"stderr\""),
            );
            None
        }
        None => {
            err(
                errors,
                &format!("{path}.path"),
                "missing: a file path or \"stderr\"",
            );
            None
        }
    };
    let format = match m.get("format") {
        None | Some(Value::Null) => Some(Format::Json),
        Some(Value::String(s)) if s == "json" => Some(Format::Json),
        Some(Value::String(s)) if s == "combined" => Some(Format::Combined),
        Some(other) => {
            err(
                errors,
                &format!("{path}.format"),
                format!("{other} is not a format; expected \"json\" or \"combined\""),
            );
            None
        }
    };
    Some(AccessLog {
        dest: dest?,
        format: format?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_top(text: &str) -> (Option<AccessLog>, Vec<ConfigError>) {
        let v: Value = serde_json::from_str(text).unwrap();
        let mut e = Vec::new();
        (top(Some(&v), "access_log", &mut e), e)
    }

    #[test]
    fn top_level_forms() {
        let (l, e) = parse_top(r#"{"path": "/tmp/a.log"}"#);
        assert!(e.is_empty());
        assert_eq!(
            l,
            Some(AccessLog {
                dest: Dest::File("/tmp/a.log".into()),
                format: Format::Json
            })
        );
        let (l, _) = parse_top(r#"{"path": "stderr", "format": "combined"}"#);
        assert_eq!(l.unwrap().dest, Dest::Stderr);
        assert_eq!(parse_top("false").0, None);
    }

    #[test]
    fn errors_name_the_field() {
        let (_, e) = parse_top(r#"{"path": 3, "format": "xml", "buffer": 1}"#);
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["access_log.buffer", "access_log.path", "access_log.format"]
        );
        let (_, e) = parse_top(r#"{}"#);
        assert_eq!(e[0].path, "access_log.path");
        let (_, e) = parse_top(r#""x""#);
        assert_eq!(e[0].path, "access_log");
    }

    #[test]
    fn route_override() {
        let mut e = Vec::new();
        let v = Value::Bool(false);
        assert_eq!(route(Some(&v), "r", &mut e), RouteLog::Off);
        assert_eq!(route(None, "r", &mut e), RouteLog::Inherit);
        let top = AccessLog {
            dest: Dest::Stderr,
            format: Format::Json,
        };
        assert_eq!(RouteLog::Off.resolve(Some(&top)), None);
        assert_eq!(RouteLog::Inherit.resolve(Some(&top)), Some(&top));
    }
}
