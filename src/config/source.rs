//! `config_source`: where a node's routes come from when not from its own file.
//!
//! ```json
//! "config_source": {"etcd": {"endpoints": ["http://127.0.0.1:2379"], "prefix": "/ringmesh/"}}
//! "config_source": {"etcd": {"endpoints": ["https://10.0.0.5:2379"], "ca_file": "etcd-ca.pem",
//!                            "cert_file": "node.pem", "key_file": "node-key.pem"}}
//! ```
//! The local file keeps what belongs to the node (listen_host, dashboard,
//! workers, limits, api_token); the routes come from the key `<prefix>routes`
//! (see `crate::fleet`). Parsed here, with every error at its JSON path.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use crate::fleet::tls::EtcdTls;

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
    /// `Some` when the endpoints are `https://` (all of them, or none).
    pub tls: Option<EtcdTls>,
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

/// `http://host:port`, `https://host:port` or `host:port` -> (`host:port`, https).
pub fn endpoint_url(url: &str) -> Result<(String, bool), String> {
    let u = url.trim();
    let (rest, https) = match u.strip_prefix("https://") {
        Some(r) => (r, true),
        None => (u.strip_prefix("http://").unwrap_or(u), false),
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{u:?} is not http(s)://host:port"))?;
    if host.is_empty() || rest.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("{u:?} is not http(s)://host:port"));
    }
    Ok((rest.to_string(), https))
}

/// The TLS files of an etcd source whose endpoints are `https` (`https`
/// false: none may be given). Relative paths start at `base`. The files are
/// read and parsed here, so a bad one is a config error at its path.
pub fn etcd_tls(
    https: bool,
    ca: Option<&str>,
    cert: Option<&str>,
    key: Option<&str>,
    base: &Path,
) -> Result<Option<EtcdTls>, (&'static str, String)> {
    if !https {
        for (f, v) in [("ca_file", ca), ("cert_file", cert), ("key_file", key)] {
            if v.is_some() {
                return Err((f, "needs https:// endpoints".into()));
            }
        }
        return Ok(None);
    }
    let at = |p: &str| base.join(p);
    let tls = EtcdTls {
        ca_file: ca.map_or_else(|| PathBuf::from(crate::fleet::tls::SYSTEM_CA), at),
        cert_file: cert.map(at),
        key_file: key.map(at),
    };
    crate::fleet::tls::client_config(&tls)?;
    Ok(Some(tls))
}

/// Parses `config_source` (the value at `path`); errors go to `err(path, msg)`.
/// Relative TLS file paths start at `base` (the config file's directory).
pub fn parse(
    v: &Value,
    path: &str,
    base: &Path,
    err: &mut dyn FnMut(String, String),
) -> Option<ConfigSource> {
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
    let mut endpoints = Vec::new();
    let mut schemes = Vec::new();
    match e.get("endpoints") {
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, it) in items.iter().enumerate() {
                let p = format!("{ep}.endpoints[{i}]");
                match it.as_str().map(endpoint_url) {
                    Some(Ok((a, https))) => {
                        endpoints.push(a);
                        schemes.push(https);
                    }
                    Some(Err(msg)) => err(p, msg),
                    None => err(p, format!("expected a string, found {it}")),
                }
            }
        }
        Some(Value::String(s)) => match endpoint_url(s) {
            Ok((a, https)) => {
                endpoints.push(a);
                schemes.push(https);
            }
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
    let https = schemes.first().copied().unwrap_or(false);
    if schemes.iter().any(|&h| h != https) {
        err(
            format!("{ep}.endpoints"),
            "mixes http:// and https://: one cluster speaks one of them".into(),
        );
    }
    let files = ["ca_file", "cert_file", "key_file"].map(|k| string(k, err));
    let tls = match etcd_tls(
        https,
        files[0].as_deref(),
        files[1].as_deref(),
        files[2].as_deref(),
        base,
    ) {
        Ok(t) => t,
        Err((field, msg)) => {
            err(format!("{ep}.{field}"), msg);
            None
        }
    };
    Some(ConfigSource {
        etcd: EtcdSource {
            endpoints,
            prefix,
            username,
            password,
            node_id,
            cache_file,
            tls,
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
        let s = parse(&v, "config_source", Path::new("."), &mut |p, m| {
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
            serde_json::json!({"etcd": {"endpoints": ["https://x:1", "nope", "http://y:2"],
            "username": "u", "ca_file": "/x", "bogus": 1}, "consul": {}}),
        );
        let all = errs.join("\n");
        for want in [
            "config_source.consul: unknown field",
            "config_source.etcd.bogus: unknown field",
            "config_source.etcd.endpoints: mixes http:// and https://",
            "config_source.etcd.endpoints[1]: \"nope\" is not http(s)://host:port",
            "config_source.etcd: username and password go together",
            "config_source.etcd.ca_file: cannot read /x",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        let (_, errs) =
            run(serde_json::json!({"etcd": {"endpoints": "http://a:1", "key_file": "k"}}));
        assert_eq!(
            errs,
            ["config_source.etcd.key_file: needs https:// endpoints"]
        );
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
