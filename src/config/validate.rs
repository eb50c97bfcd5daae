//! Config text -> [`Snapshot`], collecting every error with its JSON path.
//!
//! Why a walk over `serde_json::Value` rather than `#[derive(Deserialize)]` with
//! `deny_unknown_fields`: serde stops at the first problem, and operators fixing a
//! config want the whole list at once (`nginx -t` style), each error naming the
//! exact place: `routes."8080".backends[1].internal_port: "abc" is not a port number`.
//!
//! Keys starting with `//` are comments and ignored at every level, so a config
//! file (JSON has no comments) can document itself.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::route::HostTable;

use super::snapshot::{
    Backend, Balance, Dashboard, HealthCheck, Limits, ListenerSpec, Protocol, Route, Snapshot,
    Timeouts, UpstreamKeepalive, DEFAULT_READY_TIMEOUT,
};

// Sections of the walk, split by what they validate.
mod backends;
mod listeners;
mod values;
pub use values::duration_value;
pub(super) use values::valid_host_pattern;
use values::*;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// JSON path of the offending value, e.g. `routes."8080".backends[0].internal_port`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a config file, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

pub const DEFAULT_BACKLOG: u32 = 4096;
pub const DEFAULT_PIPE_SIZE: usize = 256 * 1024;
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

const TOP_FIELDS: &[&str] = &[
    "dashboard_host",
    "dashboard_port",
    "trusted_origins",
    "service_name",
    "internal_port",
    "routes",
    "workers",
    "listen_host",
    "backlog",
    "shutdown_grace",
    "shutdown_delay",
    "pipe_size",
    "api_token",
    "max_connections",
    "max_connections_per_ip",
    "upstream_keepalive",
    "access_log",
    "config_source",
    "busy_poll",
];
const UPSTREAM_KEEPALIVE_FIELDS: &[&str] = &["max_idle", "idle_timeout"];
const ROUTE_FIELDS: &[&str] = &[
    "name",
    "protocol",
    "load_balance",
    "backends",
    "listen",
    "hosts",
    "proxy_protocol",
    "sni",
    "timeouts",
    "max_connections",
    "ready_timeout",
    "idle_timeout",
    "health",
    "tls",
    "redirect_https",
    "hsts",
    "access_log",
    "middleware",
    "http2",
    "gateway",
];
const BACKEND_FIELDS: &[&str] = &[
    "name",
    "cmd",
    "args",
    "internal_host",
    "internal_port",
    "ready_timeout",
    "send_proxy",
    "tls",
    "weight",
    "discover",
    "protocol",
];
const HEALTH_FIELDS: &[&str] = &[
    "path",
    "expect_status",
    "interval",
    "timeout",
    "rise",
    "fall",
];
const TIMEOUT_FIELDS: &[&str] = &["connect", "idle", "header", "keepalive", "response"];

/// Parses and validates config text.
pub fn parse(text: &str) -> Result<Snapshot, ConfigErrors> {
    parse_in(text, std::path::Path::new("."))
}

/// Like [`parse`]; relative file paths (TLS certificates) start at `base`.
pub fn parse_in(text: &str, base: &std::path::Path) -> Result<Snapshot, ConfigErrors> {
    let root: Value = serde_json::from_str(text).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: format!(
                "invalid JSON at line {} column {}: {}",
                e.line(),
                e.column(),
                json_error_reason(&e)
            ),
        }])
    })?;
    let mut v = Validator {
        base: base.to_path_buf(),
        ..Validator::default()
    };
    let snap = v.snapshot(&root);
    if v.errors.is_empty() {
        Ok(snap)
    } else {
        Err(ConfigErrors(v.errors))
    }
}

fn json_error_reason(e: &serde_json::Error) -> String {
    // serde_json appends " at line X column Y"; we already print both.
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Short JSON rendering of a value for error messages.
pub(super) fn show(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 60 {
        let mut cut = 57;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

pub(super) fn field_path(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

/// A key as a path segment: as is when it is a plain identifier, else
/// JSON-quoted, so an empty key or one with dots or spaces still shows
/// where it is (`"": unknown field`, not `: unknown field`).
fn key_segment(key: &str) -> String {
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        key.to_string()
    } else {
        Value::String(key.to_string()).to_string()
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<ConfigError>,
    /// Where relative file paths start (the config file's directory).
    base: std::path::PathBuf,
}

impl Validator {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn object<'a>(&mut self, v: &'a Value, path: &str) -> Option<&'a Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            other => {
                self.err(path, format!("expected an object, found {}", show(other)));
                None
            }
        }
    }

    fn check_fields(&mut self, m: &Map<String, Value>, path: &str, allowed: &[&str]) {
        for k in m.keys() {
            if k.starts_with("//") || allowed.contains(&k.as_str()) {
                continue;
            }
            self.err(
                field_path(path, &key_segment(k)),
                format!("unknown field; expected one of: {}", allowed.join(", ")),
            );
        }
    }

    fn string(&mut self, m: &Map<String, Value>, path: &str, key: &str) -> Option<String> {
        match m.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => {
                self.err(
                    field_path(path, key),
                    format!("expected a string, found {}", show(other)),
                );
                None
            }
        }
    }

    fn strings(&mut self, m: &Map<String, Value>, path: &str, key: &str) -> Vec<String> {
        let p = field_path(path, key);
        match m.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => {
                            self.err(
                                format!("{p}[{i}]"),
                                format!("expected a string, found {}", show(other)),
                            );
                        }
                    }
                }
                out
            }
            Some(other) => {
                self.err(
                    p,
                    format!("expected an array of strings, found {}", show(other)),
                );
                Vec::new()
            }
        }
    }

    /// A port given as a string (GopherMesh style) or a number. `Ok(None)` for
    /// absent, null or empty string.
    fn port(&mut self, m: &Map<String, Value>, path: &str, key: &str) -> Result<Option<u16>, ()> {
        let p = field_path(path, key);
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match port_value(v) {
                Ok(p) => Ok(p),
                Err(msg) => {
                    self.err(p, msg);
                    Err(())
                }
            },
        }
    }

    fn uint(&mut self, m: &Map<String, Value>, path: &str, key: &str, max: u64) -> Option<u64> {
        let v = m.get(key)?;
        let p = field_path(path, key);
        match v.as_u64() {
            Some(n) if n <= max => Some(n),
            Some(_) => {
                self.err(p, format!("{} is too large (at most {max})", show(v)));
                None
            }
            None if v.is_null() => None,
            None => {
                self.err(p, format!("{} is not a non-negative integer", show(v)));
                None
            }
        }
    }

    fn duration(&mut self, m: &Map<String, Value>, path: &str, key: &str) -> Option<Duration> {
        let v = m.get(key)?;
        if v.is_null() {
            return None;
        }
        match duration_value(v) {
            Ok(d) => Some(d),
            Err(msg) => {
                self.err(field_path(path, key), msg);
                None
            }
        }
    }

    fn snapshot(&mut self, root: &Value) -> Snapshot {
        let mut snap = Snapshot {
            service_name: String::new(),
            dashboard: Dashboard {
                host: "127.0.0.1".into(),
                port: None,
            },
            trusted_origins: Vec::new(),
            api_token: None,
            internal_port: None,
            workers: 0,
            backlog: DEFAULT_BACKLOG,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            shutdown_delay: Duration::ZERO,
            pipe_size: DEFAULT_PIPE_SIZE,
            busy_poll: false,
            limits: Limits::default(),
            upstream_keepalive: UpstreamKeepalive::default(),
            access_log: None,
            config_source: None,
            routes: Vec::new(),
            listeners: Vec::new(),
        };
        let Some(top) = self.object(root, "") else {
            return snap;
        };
        self.check_fields(top, "", TOP_FIELDS);

        if let Some(h) = self.string(top, "", "dashboard_host") {
            let h = h.trim();
            if !h.is_empty() {
                snap.dashboard.host = h.to_string();
            }
        }
        snap.dashboard.port = self.port(top, "", "dashboard_port").unwrap_or(None);
        snap.trusted_origins = self.strings(top, "", "trusted_origins");
        snap.api_token = self
            .string(top, "", "api_token")
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        snap.service_name = self.string(top, "", "service_name").unwrap_or_default();
        snap.internal_port = self.port(top, "", "internal_port").unwrap_or(None);
        if let Some(w) = self.uint(top, "", "workers", 1024) {
            snap.workers = w as usize;
        }
        if let Some(b) = self.uint(top, "", "backlog", 65535) {
            if b == 0 {
                self.err("backlog", "must be at least 1");
            } else {
                snap.backlog = b as u32;
            }
        }
        if let Some(d) = self.duration(top, "", "shutdown_grace") {
            snap.shutdown_grace = d;
        }
        if let Some(d) = self.duration(top, "", "shutdown_delay") {
            snap.shutdown_delay = d;
        }
        if let Some(p) = self.uint(top, "", "pipe_size", 64 << 20) {
            if p < 4096 {
                self.err(
                    "pipe_size",
                    format!("{p} is too small (at least 4096 bytes)"),
                );
            } else {
                snap.pipe_size = p as usize;
            }
        }
        match top.get("busy_poll") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => snap.busy_poll = *b,
            Some(other) => self.err(
                "busy_poll",
                format!("expected true or false, found {other}"),
            ),
        }
        if let Some(v) = top.get("upstream_keepalive") {
            if let Some(m) = self.object(v, "upstream_keepalive") {
                self.check_fields(m, "upstream_keepalive", UPSTREAM_KEEPALIVE_FIELDS);
                if let Some(n) = self.uint(m, "upstream_keepalive", "max_idle", 65_536) {
                    snap.upstream_keepalive.max_idle = n as usize;
                }
                if let Some(d) = self.duration(m, "upstream_keepalive", "idle_timeout") {
                    snap.upstream_keepalive.idle_timeout = d;
                }
            }
        }
        if let Some(v) = top.get("config_source").filter(|v| !v.is_null()) {
            let base = self.base.clone();
            snap.config_source =
                super::source::parse(v, "config_source", &base, &mut |p, m| self.err(p, m));
        }
        snap.limits = Limits {
            max_connections: self.limit(top, "", "max_connections"),
            max_connections_per_ip: self.limit(top, "", "max_connections_per_ip"),
        };
        snap.access_log =
            super::access_log::top(top.get("access_log"), "access_log", &mut self.errors);
        let listen_host: IpAddr = match self.string(top, "", "listen_host") {
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(s) => match s.trim().parse() {
                Ok(ip) => ip,
                Err(_) => {
                    self.err(
                        "listen_host",
                        format!("{} is not an IP address", show(&Value::String(s))),
                    );
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                }
            },
        };

        match top.get("routes") {
            None | Some(Value::Null) => {}
            Some(v) => {
                if let Some(routes) = self.object(v, "routes") {
                    for (key, rv) in routes {
                        if key.starts_with("//") {
                            continue;
                        }
                        if let Some(r) = self.route(key, rv, listen_host, snap.dashboard.port) {
                            snap.routes.push(r);
                        }
                    }
                }
            }
        }
        snap.listeners = self.listeners(&snap.routes);
        if let Some(dport) = snap.dashboard.port {
            let dhost: Option<IpAddr> = snap.dashboard.host.parse().ok();
            for r in &snap.routes {
                if r.listen.port() == dport && overlaps(dhost, r.listen.ip()) {
                    self.err(
                        "dashboard_port",
                        format!("{dport} is also the listen port of {}", route_path(&r.key)),
                    );
                }
            }
        }
        snap
    }

    fn route(
        &mut self,
        key: &str,
        v: &Value,
        listen_host: IpAddr,
        dashboard_port: Option<u16>,
    ) -> Option<Route> {
        let path = route_path(key);
        let m = self.object(v, &path)?;
        self.check_fields(m, &path, ROUTE_FIELDS);
        let before = self.errors.len();

        let name = self
            .string(m, &path, "name")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| key.trim().to_string());

        let protocol = match self.string(m, &path, "protocol") {
            None => Protocol::Http,
            Some(s) => match s.trim().to_ascii_lowercase().as_str() {
                "" | "http" => Protocol::Http,
                "tcp" => Protocol::Tcp,
                _ => {
                    self.err(
                        field_path(&path, "protocol"),
                        format!(
                            "{} is not a protocol; expected \"http\" or \"tcp\"",
                            show(&Value::String(s))
                        ),
                    );
                    Protocol::Http
                }
            },
        };
        let balance = match self.string(m, &path, "load_balance") {
            None => Balance::RoundRobin,
            Some(s) => match s.trim().to_ascii_lowercase().as_str() {
                "" | "round_robin" => Balance::RoundRobin,
                "least_conn" => Balance::LeastConn,
                "ip_hash" => Balance::IpHash,
                _ => {
                    self.err(
                        field_path(&path, "load_balance"),
                        format!(
                            "{} is not a load balancer; expected \"round_robin\", \"least_conn\" or \"ip_hash\"",
                            show(&Value::String(s))
                        ),
                    );
                    Balance::RoundRobin
                }
            },
        };

        // Where to listen: the `listen` field, else the key itself.
        let listen = match m.get("listen") {
            Some(lv) if !lv.is_null() => match listen_value(lv, listen_host) {
                Ok(a) => Some(a),
                Err(msg) => {
                    self.err(field_path(&path, "listen"), msg);
                    None
                }
            },
            _ => match listen_value(&Value::String(key.to_string()), listen_host) {
                Ok(a) => Some(a),
                Err(_) => {
                    self.err(
                        path.clone(),
                        "route key is not a port or host:port; an alias route needs a \"listen\" field",
                    );
                    None
                }
            },
        };

        let hosts = self.hosts(m, &path, protocol);
        let timeouts = self.timeouts(m, &path);
        let ready_timeout = self
            .duration(m, &path, "ready_timeout")
            .unwrap_or(DEFAULT_READY_TIMEOUT);
        let idle_timeout = self.duration(m, &path, "idle_timeout");
        let health = self.health(m, &path, protocol);
        let limits = Limits {
            max_connections: self.limit(m, &path, "max_connections"),
            max_connections_per_ip: None,
        };
        let mut problems = Vec::new();
        let tls = super::tls::route_tls(m, &path, key, protocol, &self.base, &mut problems);
        for (p, msg) in problems {
            self.err(p, msg);
        }
        let edge = super::edge::route(m, &path, protocol, &mut self.errors);
        let access_log = super::access_log::route(
            m.get("access_log"),
            &field_path(&path, "access_log"),
            &mut self.errors,
        );
        let middleware = super::middleware::parse(
            m.get("middleware"),
            &field_path(&path, "middleware"),
            protocol == Protocol::Http,
            &mut self.errors,
        );
        let mut discover = Vec::new();
        let backends = self.backends(m, &path, dashboard_port, ready_timeout, &mut discover);
        let http2 = super::http2::parse(
            m.get("http2"),
            &field_path(&path, "http2"),
            &mut self.errors,
        )
        .filter(|_| protocol == Protocol::Http);
        if protocol == Protocol::Tcp && backends.iter().any(|b| b.h2c) {
            self.err(
                field_path(&path, "backends"),
                "\"protocol\": \"h2c\" or \"h2\" needs an http route",
            );
        }
        let gateway = super::gateway::parse(m.get("gateway"), &path, protocol, &mut self.errors);

        if self.errors.len() != before {
            return None;
        }
        Some(Route {
            key: key.to_string(),
            name,
            protocol,
            balance,
            listen: listen?,
            hosts,
            backends,
            timeouts,
            idle_timeout,
            health,
            limits,
            tls: tls.tls,
            redirect_https: tls.redirect_https,
            hsts: tls.hsts,
            edge,
            access_log,
            middleware,
            discover,
            http2,
            gateway,
        })
    }

    /// A connection limit: a positive integer; 0 or absent means unlimited.
    fn limit(&mut self, m: &Map<String, Value>, path: &str, key: &str) -> Option<u32> {
        self.uint(m, path, key, u32::MAX as u64)
            .filter(|&n| n > 0)
            .map(|n| n as u32)
    }

    fn hosts(&mut self, m: &Map<String, Value>, path: &str, protocol: Protocol) -> Vec<String> {
        let raw = self.strings(m, path, "hosts");
        if !raw.is_empty() && protocol == Protocol::Tcp {
            self.err(
                field_path(path, "hosts"),
                "host names need protocol \"http\"; a tcp route owns its whole port",
            );
            return Vec::new();
        }
        let mut out = Vec::with_capacity(raw.len());
        for (i, h) in raw.iter().enumerate() {
            let norm = h.trim().to_ascii_lowercase();
            if valid_host_pattern(&norm) {
                out.push(norm);
            } else {
                self.err(
                    format!("{}[{i}]", field_path(path, "hosts")),
                    format!(
                        "{} is not a host name (letters, digits, '-', '.', optionally starting with \"*.\")",
                        show(&Value::String(h.clone()))
                    ),
                );
            }
        }
        out
    }

    fn timeouts(&mut self, m: &Map<String, Value>, path: &str) -> Timeouts {
        let mut t = Timeouts::default();
        let Some(v) = m.get("timeouts") else {
            return t;
        };
        let p = field_path(path, "timeouts");
        let Some(tm) = self.object(v, &p) else {
            return t;
        };
        self.check_fields(tm, &p, TIMEOUT_FIELDS);
        if let Some(d) = self.duration(tm, &p, "connect") {
            t.connect = d;
        }
        if let Some(d) = self.duration(tm, &p, "idle") {
            t.idle = d;
        }
        if let Some(d) = self.duration(tm, &p, "header") {
            t.header = d;
        }
        if let Some(d) = self.duration(tm, &p, "keepalive") {
            t.keepalive = d;
        }
        if let Some(d) = self.duration(tm, &p, "response") {
            t.response = d;
        }
        t
    }
}

/// `routes."8080"`: the JSON path of a route.
pub fn route_path(key: &str) -> String {
    format!("routes.{}", Value::String(key.to_string()))
}
