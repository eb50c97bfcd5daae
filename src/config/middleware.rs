//! `middleware`: a route's filter chain, validated into plain data.
//!
//! ```json
//! "middleware": [
//!   {"type": "request_id"},
//!   {"type": "headers", "request": {"set": {"X-Env": "prod"}, "remove": ["X-Debug"]},
//!                       "response": {"add": {"X-Served-By": "ringmesh"}}},
//!   {"type": "ip_filter", "allow": ["10.0.0.0/8"], "deny": ["10.0.0.7/32"]}
//! ]
//! ```
//!
//! The data plane builds each worker's filters from this once per config
//! snapshot (`crate::filter`); nothing here runs per request.

use ipnet::IpNet;
use serde_json::{Map, Value};

use super::validate::ConfigError;

/// Most header names one chain removes in one direction.
pub const MAX_REMOVED: usize = 32;

/// One middleware of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Middleware {
    Headers {
        request: HeaderOps,
        response: HeaderOps,
    },
    RequestId {
        /// The header carrying the id (`X-Request-Id`).
        header: String,
        /// Keep an id the client sent (else always generate one).
        trust: bool,
    },
    /// Removes a leading path prefix (at a segment boundary).
    StripPrefix { prefix: String },
    /// Prepends a path prefix.
    AddPrefix { prefix: String },
    /// Rewrites the path (not the query) matching `regex` to `replacement`
    /// (`$1`..`$9`, `$0` for the whole match).
    Rewrite { regex: String, replacement: String },
    /// Answers with a redirect to `scheme://host` + `path` (a template
    /// with `{path}` and `{query}`); `None`: the request's own host and
    /// `http`.
    Redirect {
        status: u16,
        scheme: Option<String>,
        host: Option<String>,
        path: String,
    },
    /// GCRA: `rate` requests per second per key, `burst` at once.
    RateLimit {
        rate: u64,
        burst: u64,
        key: RateKey,
        /// Size of the key table (oldest keys are evicted past it).
        max_keys: usize,
    },
    /// CORS: preflights answered here, response headers added.
    Cors {
        /// Exact origins, `https://*.example.com` wildcards, or `*`.
        origins: Vec<String>,
        methods: Vec<String>,
        /// Allowed request headers (empty: whatever a preflight asks for).
        headers: Vec<String>,
        /// Response headers exposed to scripts.
        expose: Vec<String>,
        credentials: bool,
        /// Seconds a browser may cache a preflight.
        max_age: u64,
    },
    /// A filter registered by an embedder (`crate::filter::register`),
    /// with its JSON object as text.
    Custom { name: String, config: String },
    /// Basic authentication against an htpasswd file's users (read at load).
    BasicAuth {
        /// (user, hash) pairs of the file.
        users: Vec<(String, String)>,
        realm: String,
    },
    /// 413 for a request body over `max` bytes (Content-Length).
    MaxBody { max: u64 },
    /// At most `max` requests in flight on the route (all workers).
    ConcurrencyLimit { max: u64 },
    /// A subrequest to an auth service decides (`crate::filter::forward_auth`).
    ForwardAuth(Box<ForwardAuth>),
    /// Response bodies compressed for clients that accept it (`crate::filter::compress`).
    Compress(Box<Compress>),
    IpFilter {
        /// Empty: every address not denied.
        allow: Vec<IpNet>,
        deny: Vec<IpNet>,
        /// Peers whose X-Forwarded-For names the client.
        trusted_proxies: Vec<IpNet>,
    },
}

impl Middleware {
    /// The `type` as written in the config (a registered filter's name).
    pub fn name(&self) -> &str {
        match self {
            Middleware::Custom { name, .. } => name,
            other => other.kind(),
        }
    }

    /// The `type` this middleware is configured with.
    pub fn kind(&self) -> &'static str {
        match self {
            Middleware::Headers { .. } => "headers",
            Middleware::RequestId { .. } => "request_id",
            Middleware::IpFilter { .. } => "ip_filter",
            Middleware::StripPrefix { .. } => "strip_prefix",
            Middleware::AddPrefix { .. } => "add_prefix",
            Middleware::Rewrite { .. } => "rewrite",
            Middleware::Redirect { .. } => "redirect",
            Middleware::RateLimit { .. } => "rate_limit",
            Middleware::Cors { .. } => "cors",
            Middleware::ConcurrencyLimit { .. } => "concurrency_limit",
            Middleware::MaxBody { .. } => "max_body",
            Middleware::BasicAuth { .. } => "basic_auth",
            Middleware::ForwardAuth(_) => "forward_auth",
            Middleware::Compress(_) => "compress",
            Middleware::Custom { .. } => "custom",
        }
    }
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// The peer's IP address.
    ClientIp,
    /// One limit for the whole route.
    Route,
    /// The value of a request header (requests without it share one key).
    Header(String),
}

/// `set`, `add` and `remove` of one direction of `headers`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderOps {
    /// Replaces every field of that name.
    pub set: Vec<(String, String)>,
    /// Appends a field, keeping existing ones.
    pub add: Vec<(String, String)>,
    /// Field names removed (lowercase).
    pub remove: Vec<String>,
}

/// Built-in types, for error messages.
pub const TYPES: &[&str] = &[
    "headers",
    "request_id",
    "ip_filter",
    "strip_prefix",
    "add_prefix",
    "rewrite",
    "redirect",
    "rate_limit",
    "cors",
    "concurrency_limit",
    "max_body",
    "basic_auth",
    "forward_auth",
    "compress",
];

struct V<'e> {
    errors: &'e mut Vec<ConfigError>,
}

impl V<'_> {
    fn err(&mut self, path: String, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path,
            message: message.into(),
        });
    }

    fn fields(&mut self, m: &Map<String, Value>, path: &str, allowed: &[&str]) {
        for k in m.keys() {
            if k != "type" && !k.starts_with("//") && !allowed.contains(&k.as_str()) {
                self.err(
                    format!("{path}.{k}"),
                    format!(
                        "unknown field; expected one of: type, {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    fn bool(&mut self, m: &Map<String, Value>, path: &str, key: &str, default: bool) -> bool {
        match m.get(key) {
            None | Some(Value::Null) => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.err(
                    format!("{path}.{key}"),
                    format!("expected true or false, found {other}"),
                );
                default
            }
        }
    }

    fn header_name(&mut self, path: String, name: &str) -> bool {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !ok {
            self.err(path, format!("{name:?} is not a valid header name"));
        }
        ok
    }

    fn header_map(&mut self, v: Option<&Value>, path: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match v {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, val) in m {
                    let p = format!("{path}.{k}");
                    let Value::String(s) = val else {
                        self.err(p, format!("expected a string value, found {val}"));
                        continue;
                    };
                    if !self.header_name(p.clone(), k) {
                        continue;
                    }
                    if s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                        self.err(p, "a header value cannot contain CR, LF or NUL");
                        continue;
                    }
                    out.push((k.clone(), s.trim().to_string()));
                }
            }
            Some(other) => self.err(
                path.to_string(),
                format!("expected an object of header names to values, found {other}"),
            ),
        }
        out
    }

    fn header_ops(&mut self, v: Option<&Value>, path: &str) -> HeaderOps {
        let mut ops = HeaderOps::default();
        let m = match v {
            None | Some(Value::Null) => return ops,
            Some(Value::Object(m)) => m,
            Some(other) => {
                self.err(
                    path.to_string(),
                    format!("expected an object with set, add, remove; found {other}"),
                );
                return ops;
            }
        };
        for k in m.keys() {
            if !["set", "add", "remove"].contains(&k.as_str()) && !k.starts_with("//") {
                self.err(
                    format!("{path}.{k}"),
                    "unknown field; expected one of: set, add, remove",
                );
            }
        }
        ops.set = self.header_map(m.get("set"), &format!("{path}.set"));
        ops.add = self.header_map(m.get("add"), &format!("{path}.add"));
        match m.get("remove") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, it) in items.iter().enumerate() {
                    let p = format!("{path}.remove[{i}]");
                    match it {
                        Value::String(s) if self.header_name(p.clone(), s) => {
                            ops.remove.push(s.to_ascii_lowercase())
                        }
                        Value::String(_) => {}
                        other => self.err(p, format!("expected a header name, found {other}")),
                    }
                }
            }
            Some(other) => self.err(
                format!("{path}.remove"),
                format!("expected an array of header names, found {other}"),
            ),
        }
        if ops.remove.len() + ops.set.len() > MAX_REMOVED {
            self.err(
                path.to_string(),
                format!("at most {MAX_REMOVED} header names removed or set"),
            );
        }
        ops
    }

    fn cidrs(&mut self, m: &Map<String, Value>, path: &str, key: &str) -> Vec<IpNet> {
        let p = format!("{path}.{key}");
        let mut out = Vec::new();
        match m.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, it) in items.iter().enumerate() {
                    let Value::String(s) = it else {
                        self.err(format!("{p}[{i}]"), format!("expected a CIDR, found {it}"));
                        continue;
                    };
                    let s = s.trim();
                    // A bare address is a /32 (or /128).
                    let net = s
                        .parse::<IpNet>()
                        .ok()
                        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from));
                    match net {
                        Some(n) => out.push(n.trunc()),
                        None => self.err(
                            format!("{p}[{i}]"),
                            format!("{s:?} is not a CIDR (like 10.0.0.0/8 or 2001:db8::/32) or an IP address"),
                        ),
                    }
                }
            }
            Some(other) => self.err(p, format!("expected an array of CIDRs, found {other}")),
        }
        out
    }

    fn string(&mut self, m: &Map<String, Value>, path: &str, key: &str) -> Option<String> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.err(
                    format!("{path}.{key}"),
                    format!("expected a string, found {other}"),
                );
                None
            }
        }
    }

    /// A path prefix: starts with `/`, printable ASCII, no `?` or `#`.
    fn prefix(&mut self, m: &Map<String, Value>, path: &str) -> Option<String> {
        let p = self.string(m, path, "prefix");
        match p {
            Some(p)
                if p.starts_with('/')
                    && p.len() > 1
                    && p.bytes()
                        .all(|b| (0x21..0x7f).contains(&b) && b != b'?' && b != b'#') =>
            {
                Some(p.trim_end_matches('/').to_string()).filter(|p| !p.is_empty())
            }
            Some(p) => {
                self.err(
                    format!("{path}.prefix"),
                    format!("{p:?} is not a path prefix like \"/api\""),
                );
                None
            }
            None => {
                self.err(format!("{path}.prefix"), "missing");
                None
            }
        }
    }

    /// An array of strings, each checked by `ok`.
    fn names(
        &mut self,
        m: &Map<String, Value>,
        path: &str,
        key: &str,
        ok: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let mut out = Vec::new();
        match m.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, it) in items.iter().enumerate() {
                    match it {
                        Value::String(s) if ok(s) => out.push(s.clone()),
                        other => self.err(
                            format!("{path}.{key}[{i}]"),
                            format!("{other} is not valid here"),
                        ),
                    }
                }
            }
            Some(other) => self.err(
                format!("{path}.{key}"),
                format!("expected an array, found {other}"),
            ),
        }
        out
    }

    fn one(&mut self, v: &Value, path: &str) -> Option<Middleware> {
        let Value::Object(m) = v else {
            self.err(
                path.to_string(),
                format!("expected an object with a \"type\", found {v}"),
            );
            return None;
        };
        let kind = match m.get("type") {
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                self.err(
                    format!("{path}.type"),
                    format!("expected a string, found {other}"),
                );
                return None;
            }
            None => {
                self.err(
                    format!("{path}.type"),
                    format!("missing; one of: {}", TYPES.join(", ")),
                );
                return None;
            }
        };
        match kind {
            "headers" => {
                self.fields(m, path, &["request", "response"]);
                Some(Middleware::Headers {
                    request: self.header_ops(m.get("request"), &format!("{path}.request")),
                    response: self.header_ops(m.get("response"), &format!("{path}.response")),
                })
            }
            "request_id" => {
                self.fields(m, path, &["header", "trust"]);
                let header = match m.get("header") {
                    None | Some(Value::Null) => "X-Request-Id".to_string(),
                    Some(Value::String(s)) => {
                        self.header_name(format!("{path}.header"), s);
                        s.clone()
                    }
                    Some(other) => {
                        self.err(
                            format!("{path}.header"),
                            format!("expected a header name, found {other}"),
                        );
                        String::new()
                    }
                };
                let trust = self.bool(m, path, "trust", false);
                Some(Middleware::RequestId { header, trust })
            }
            "ip_filter" => {
                self.fields(m, path, &["allow", "deny", "trusted_proxies"]);
                let allow = self.cidrs(m, path, "allow");
                let deny = self.cidrs(m, path, "deny");
                let trusted_proxies = self.cidrs(m, path, "trusted_proxies");
                if !m.contains_key("allow") && !m.contains_key("deny") {
                    self.err(path.to_string(), "ip_filter needs \"allow\" or \"deny\"");
                }
                Some(Middleware::IpFilter {
                    allow,
                    deny,
                    trusted_proxies,
                })
            }
            "rate_limit" => {
                self.fields(m, path, &["rate", "burst", "key", "max_keys"]);
                let num = |vd: &mut Self, key: &str, min: u64, max: u64| -> Option<u64> {
                    let v = m.get(key)?;
                    match v.as_u64() {
                        Some(n) if (min..=max).contains(&n) => Some(n),
                        _ => {
                            vd.err(
                                format!("{path}.{key}"),
                                format!("{v} is not an integer from {min} to {max}"),
                            );
                            None
                        }
                    }
                };
                let rate = num(self, "rate", 1, 10_000_000);
                if !m.contains_key("rate") {
                    self.err(
                        format!("{path}.rate"),
                        "missing: requests per second (at least 1)",
                    );
                }
                let burst = num(self, "burst", 1, 10_000_000).unwrap_or(1);
                let max_keys = num(self, "max_keys", 16, 1 << 24).unwrap_or(65_536) as usize;
                let key = match self.string(m, path, "key").as_deref() {
                    None | Some("client_ip") => RateKey::ClientIp,
                    Some("route") => RateKey::Route,
                    Some(k) if k.starts_with("header:") => {
                        let name = k["header:".len()..].to_string();
                        self.header_name(format!("{path}.key"), &name);
                        RateKey::Header(name)
                    }
                    Some(k) => {
                        self.err(
                            format!("{path}.key"),
                            format!("{k:?} is not a key; expected \"client_ip\", \"route\" or \"header:<name>\""),
                        );
                        RateKey::ClientIp
                    }
                };
                Some(Middleware::RateLimit {
                    rate: rate?,
                    burst,
                    key,
                    max_keys,
                })
            }
            "basic_auth" => self.basic_auth(m, path),
            "forward_auth" => self.forward_auth(m, path),
            "compress" => self.compress(m, path),
            "concurrency_limit" | "max_body" => {
                self.fields(m, path, &["max"]);
                match m.get("max").and_then(Value::as_u64) {
                    Some(max) if max >= 1 && kind == "max_body" => {
                        Some(Middleware::MaxBody { max })
                    }
                    Some(max) if max >= 1 => Some(Middleware::ConcurrencyLimit { max }),
                    _ => {
                        self.err(format!("{path}.max"), "missing or not an integer >= 1");
                        None
                    }
                }
            }
            "cors" => self.cors(m, path),
            "strip_prefix" | "add_prefix" => {
                self.fields(m, path, &["prefix"]);
                let prefix = self.prefix(m, path)?;
                Some(if kind == "strip_prefix" {
                    Middleware::StripPrefix { prefix }
                } else {
                    Middleware::AddPrefix { prefix }
                })
            }
            "rewrite" => {
                self.fields(m, path, &["regex", "replacement"]);
                let regex = self.string(m, path, "regex");
                let replacement = self.string(m, path, "replacement");
                let regex = match regex {
                    None => {
                        self.err(format!("{path}.regex"), "missing");
                        None
                    }
                    Some(r) => match regex::bytes::Regex::new(&r) {
                        Ok(_) => Some(r),
                        Err(e) => {
                            self.err(format!("{path}.regex"), format!("invalid regex: {e}"));
                            None
                        }
                    },
                };
                let replacement = match replacement {
                    Some(r)
                        if r.starts_with('/')
                            && r.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'#') =>
                    {
                        Some(r)
                    }
                    Some(r) => {
                        self.err(
                            format!("{path}.replacement"),
                            format!("{r:?} is not a path (starts with /, printable ASCII)"),
                        );
                        None
                    }
                    None => {
                        self.err(format!("{path}.replacement"), "missing");
                        None
                    }
                };
                Some(Middleware::Rewrite {
                    regex: regex?,
                    replacement: replacement?,
                })
            }
            "redirect" => {
                self.fields(m, path, &["status", "scheme", "host", "path"]);
                let status = match m.get("status") {
                    None | Some(Value::Null) => 302,
                    Some(v) => match v.as_u64() {
                        Some(s @ (301 | 302 | 303 | 307 | 308)) => s as u16,
                        _ => {
                            self.err(
                                format!("{path}.status"),
                                format!("{v} is not a redirect status (301, 302, 303, 307, 308)"),
                            );
                            302
                        }
                    },
                };
                let scheme = self.string(m, path, "scheme");
                if let Some(s) = &scheme {
                    if s != "http" && s != "https" {
                        self.err(
                            format!("{path}.scheme"),
                            format!("{s:?} is not \"http\" or \"https\""),
                        );
                    }
                }
                let host = self.string(m, path, "host");
                if let Some(h) = &host {
                    if h.is_empty()
                        || !h
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
                    {
                        self.err(
                            format!("{path}.host"),
                            format!("{h:?} is not a host[:port]"),
                        );
                    }
                }
                let template = self
                    .string(m, path, "path")
                    .unwrap_or_else(|| "{path}{query}".into());
                if !template.starts_with('/') && !template.starts_with("{path}")
                    || template.bytes().any(|b| !(0x21..0x7f).contains(&b))
                {
                    self.err(
                        format!("{path}.path"),
                        format!(
                            "{template:?} is not a path template (like \"/new{{path}}{{query}}\")"
                        ),
                    );
                }
                Some(Middleware::Redirect {
                    status,
                    scheme,
                    host,
                    path: template,
                })
            }
            other if crate::filter::registry::lookup(other).is_some() => {
                let factory = crate::filter::registry::lookup(other)?;
                // Built once here to validate it; workers build their own.
                match factory(v) {
                    Ok(_) => Some(Middleware::Custom {
                        name: other.to_string(),
                        config: v.to_string(),
                    }),
                    Err(e) => {
                        self.err(path.to_string(), e);
                        None
                    }
                }
            }
            other => {
                self.err(
                    format!("{path}.type"),
                    format!(
                        "{other:?} is not a middleware type; expected one of: {}",
                        TYPES.join(", ")
                    ),
                );
                None
            }
        }
    }
}

/// Parses a route's `middleware` list (`path` is its JSON path). Only http
/// routes may have one (`is_http`).
pub fn parse(
    v: Option<&Value>,
    path: &str,
    is_http: bool,
    errors: &mut Vec<ConfigError>,
) -> Vec<Middleware> {
    let mut vd = V { errors };
    let items = match v {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => {
            vd.err(
                path.to_string(),
                format!("expected an array of middleware objects, found {other}"),
            );
            return Vec::new();
        }
    };
    if items.len() > 64 {
        vd.err(path.to_string(), "at most 64 middlewares per route");
        return Vec::new();
    }
    if !is_http && !items.is_empty() {
        vd.err(path.to_string(), "middleware needs an http route");
        return Vec::new();
    }
    items
        .iter()
        .enumerate()
        .filter_map(|(i, it)| vd.one(it, &format!("{path}[{i}]")))
        .collect()
}

mod compress;
mod entries;
mod forward_auth;
pub use compress::{Compress, Encoding};
pub use forward_auth::ForwardAuth;

#[cfg(test)]
mod tests;
