//! `config_source`: where a node's routes come from when not from its own file.
//!
//! ```json
//! "config_source": {"etcd": {"endpoints": ["http://127.0.0.1:2379"], "prefix": "/ringmesh/"}}
//! ```
//! The local file keeps what belongs to the node (listen_host, dashboard,
//! workers, limits, api_token); the routes come from the key `<prefix>routes`
//! (see `crate::fleet`). Parsed here, with every error at its JSON path.

use std::path::PathBuf;

use serde_json::{Map, Value};

/// The `config_source` of a config: only etcd for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSource {
    pub etcd: EtcdSource,
}

/// `config_source.etcd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSource {
    /// `host:port` of each endpoint (from `http://host:port`), tried in order.
    pub endpoints: Vec<String>,
    /// Key prefix: routes at `<prefix>routes`, nodes under `<prefix>nodes/`.
    pub prefix: String,
    /// etcd user and password (etcd's own auth: a token from `/v3/auth/authenticate`).
    pub username: Option<String>,
    pub password: Option<String>,
    /// This node's name in `<prefix>nodes/`; default `<hostname>-<dashboard port or pid>`.
    pub node_id: Option<String>,
    /// Where the last applied routes are kept; default `<config file>.routes-cache.json`.
    pub cache_file: Option<PathBuf>,
}

pub const DEFAULT_PREFIX: &str = "/ringmesh/";

const SOURCE_FIELDS: &[&str] = &["etcd"];
const ETCD_FIELDS: &[&str] = &[
    "endpoints",
    "prefix",
    "username",
    "password",
    "node_id",
    "cache_file",
    "ca_file",
    "cert_file",
    "key_file",
];

/// `http://host:port` (or `host:port`) -> `host:port`.
pub fn endpoint(url: &str) -> Result<String, String> {
    let u = url.trim();
    if u.starts_with("https://") {
        return Err(format!(
            "{u:?}: https is not supported yet; reach etcd over plain HTTP on a trusted network \
             (loopback, or a local `etcd grpc-proxy`)"
        ));
    }
    let rest = u.strip_prefix("http://").unwrap_or(u).trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{u:?} is not http://host:port"))?;
    if host.is_empty() || rest.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("{u:?} is not http://host:port"));
    }
    Ok(rest.to_string())
}

/// Parses `config_source` (the value at `path`); errors go to `err(path, msg)`.
pub fn parse(v: &Value, path: &str, err: &mut dyn FnMut(String, String)) -> Option<ConfigSource> {
    let obj = |v: &Value, p: &str, err: &mut dyn FnMut(String, String)| match v {
        Value::Object(m) => Some(m.clone()),
        other => {
            err(p.to_string(), format!("expected an object, found {other}"));
            None
        }
    };
    let m = obj(v, path, err)?;
    check_fields(&m, path, SOURCE_FIELDS, err);
    let ep = format!("{path}.etcd");
    let Some(ev) = m.get("etcd") else {
        err(
            path.to_string(),
            "missing \"etcd\": the only source so far".into(),
        );
        return None;
    };
    let e = obj(ev, &ep, err)?;
    check_fields(&e, &ep, ETCD_FIELDS, err);
    let before_tls = ["ca_file", "cert_file", "key_file"];
    for k in before_tls {
        if e.contains_key(k) {
            err(
                format!("{ep}.{k}"),
                "TLS to etcd is not supported yet: use plain HTTP on loopback or a trusted \
                 network (e.g. a local `etcd grpc-proxy`), with username/password"
                    .into(),
            );
        }
    }
    let mut endpoints = Vec::new();
    match e.get("endpoints") {
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, it) in items.iter().enumerate() {
                let p = format!("{ep}.endpoints[{i}]");
                match it.as_str().map(endpoint) {
                    Some(Ok(a)) => endpoints.push(a),
                    Some(Err(msg)) => err(p, msg),
                    None => err(p, format!("expected a string, found {it}")),
                }
            }
        }
        Some(Value::String(s)) => match endpoint(s) {
            Ok(a) => endpoints.push(a),
            Err(msg) => err(format!("{ep}.endpoints"), msg),
        },
        _ => err(
            format!("{ep}.endpoints"),
            "required: a list of etcd URLs such as [\"http://127.0.0.1:2379\"]".into(),
        ),
    }
    let string = |k: &str, err: &mut dyn FnMut(String, String)| match e.get(k) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(other) => {
            err(
                format!("{ep}.{k}"),
                format!("expected a non-empty string, found {other}"),
            );
            None
        }
    };
    let prefix = string("prefix", err).unwrap_or_else(|| DEFAULT_PREFIX.to_string());
    let username = string("username", err);
    let password = string("password", err);
    if username.is_some() != password.is_some() {
        err(ep.clone(), "username and password go together".into());
    }
    let node_id = string("node_id", err);
    if let Some(n) = &node_id {
        if n.contains('/') || n.len() > 128 {
            err(
                format!("{ep}.node_id"),
                "at most 128 bytes, no '/' (it is a key under <prefix>nodes/)".into(),
            );
        }
    }
    let cache_file = string("cache_file", err).map(PathBuf::from);
    Some(ConfigSource {
        etcd: EtcdSource {
            endpoints,
            prefix,
            username,
            password,
            node_id,
            cache_file,
        },
    })
}

fn check_fields(
    m: &Map<String, Value>,
    path: &str,
    allowed: &[&str],
    err: &mut dyn FnMut(String, String),
) {
    for k in m.keys() {
        if !k.starts_with("//") && !allowed.contains(&k.as_str()) {
            err(
                format!("{path}.{k}"),
                format!("unknown field; expected one of: {}", allowed.join(", ")),
            );
        }
    }
}

/// Replaces the `routes` of config text `base` with `routes`: the config a
/// node runs when its routes come from a config source.
pub fn with_routes(base: &str, routes: &Value) -> Result<String, String> {
    let mut v: Value =
        serde_json::from_str(base).map_err(|e| format!("the local config is not JSON: {e}"))?;
    let Some(m) = v.as_object_mut() else {
        return Err("the local config is not a JSON object".into());
    };
    m.insert("routes".into(), routes.clone());
    let mut s = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?;
    s.push('\n');
    Ok(s)
}

/// `text` with the `config_source` of the running config `running` (if it
/// has one): a reload keeps the source the node started with (changing it
/// takes a restart), also when it came from `run --etcd` flags.
pub fn keep_source(text: &str, running: &str) -> Result<String, String> {
    let Some(src) = serde_json::from_str::<Value>(running)
        .ok()
        .and_then(|v| v.get("config_source").cloned())
    else {
        return Ok(text.to_string());
    };
    let mut v: Value =
        serde_json::from_str(text).map_err(|e| format!("the config is not JSON: {e}"))?;
    let Some(m) = v.as_object_mut() else {
        return Ok(text.to_string()); // the validator says what is wrong
    };
    m.insert("config_source".into(), src);
    serde_json::to_string_pretty(&v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(v: Value) -> (Option<ConfigSource>, Vec<String>) {
        let mut errs = Vec::new();
        let s = parse(&v, "config_source", &mut |p, m| {
            errs.push(format!("{p}: {m}"))
        });
        (s, errs)
    }

    #[test]
    fn parses_etcd_source_and_reports_paths() {
        let (s, errs) =
            run(serde_json::json!({"etcd": {"endpoints": ["http://127.0.0.1:2379", "h:1"]}}));
        assert!(errs.is_empty(), "{errs:?}");
        let e = s.unwrap().etcd;
        assert_eq!(e.endpoints, ["127.0.0.1:2379", "h:1"]);
        assert_eq!(e.prefix, DEFAULT_PREFIX);
        let (_, errs) = run(
            serde_json::json!({"etcd": {"endpoints": ["https://x:1", "nope"],
            "username": "u", "ca_file": "/x", "bogus": 1}, "consul": {}}),
        );
        let all = errs.join("\n");
        for want in [
            "config_source.consul: unknown field",
            "config_source.etcd.bogus: unknown field",
            "config_source.etcd.endpoints[0]: \"https://x:1\": https is not supported",
            "config_source.etcd.endpoints[1]: \"nope\" is not http://host:port",
            "config_source.etcd: username and password go together",
            "config_source.etcd.ca_file: TLS to etcd is not supported yet",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        let (_, errs) = run(serde_json::json!({"etcd": {}}));
        assert!(
            errs[0].starts_with("config_source.etcd.endpoints: required"),
            "{errs:?}"
        );
    }

    #[test]
    fn with_routes_replaces_only_routes() {
        let t = with_routes(
            r#"{"listen_host": "127.0.0.2", "routes": {"1": {}}}"#,
            &serde_json::json!({"80": {"backends": []}}),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["listen_host"], "127.0.0.2");
        assert!(v["routes"]["80"].is_object() && v["routes"].get("1").is_none());
        assert!(with_routes("[]", &Value::Null).is_err());
        let kept = keep_source(
            r#"{"workers": 2}"#,
            r#"{"config_source": {"etcd": {"endpoints": ["h:1"]}}}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_str(&kept).unwrap();
        assert_eq!(
            (
                v["workers"].as_u64(),
                v["config_source"]["etcd"]["endpoints"][0].as_str()
            ),
            (Some(2), Some("h:1"))
        );
        assert_eq!(keep_source("{}", "{}").unwrap(), "{}");
    }
}
