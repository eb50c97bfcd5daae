//! Config of the edge features: PROXY protocol in (`proxy_protocol` on a
//! route), PROXY protocol out (`send_proxy` on a backend) and TLS passthrough
//! by SNI (`sni` on tcp routes, several of which may then share a port).
//!
//! The types live here with their validation; `validate.rs` calls in with one
//! line per place (route, backend, shared port), so other config sections can
//! grow beside this one without touching the same lines.

use serde_json::{Map, Value};

use super::snapshot::{Protocol, Route};
use super::validate::{field_path, route_path, show, valid_host_pattern};
use super::ConfigError;

/// Which PROXY protocol header a backend gets first on each upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendProxy {
    /// The text header (`PROXY TCP4 ... \r\n`, at most 107 bytes).
    V1,
    /// The binary header (16 bytes plus the addresses).
    V2,
}

impl SendProxy {
    pub fn as_str(self) -> &'static str {
        match self {
            SendProxy::V1 => "v1",
            SendProxy::V2 => "v2",
        }
    }
}

/// The edge settings of one route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteEdge {
    /// Every connection starts with a PROXY protocol v1 or v2 header, whose
    /// source address then is the client address.
    pub proxy_protocol: bool,
    /// tcp: TLS server names (exact or `*.suffix`, lowercase) this route
    /// takes by the ClientHello's SNI; empty: the port's default route.
    pub sni: Vec<String>,
}

/// The edge settings of a listening address, from its routes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerEdge {
    /// Every connection starts with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// tcp: the route is chosen by the ClientHello's SNI (some route of the
    /// port has `sni`), so the ClientHello is read before connecting.
    pub sni: bool,
}

impl ListenerEdge {
    /// Whether connections of this listener go through `crate::edge` first.
    #[inline]
    pub fn active(&self) -> bool {
        self.proxy_protocol || self.sni
    }

    /// The settings of a listener whose first route is `r`.
    pub fn of(r: &Route) -> ListenerEdge {
        ListenerEdge {
            proxy_protocol: r.edge.proxy_protocol,
            sni: r.protocol == Protocol::Tcp && !r.edge.sni.is_empty(),
        }
    }
}

fn err(errs: &mut Vec<ConfigError>, path: String, message: impl Into<String>) {
    errs.push(ConfigError {
        path,
        message: message.into(),
    });
}

/// `proxy_protocol` and `sni` of the route at `path`.
pub(super) fn route(
    m: &Map<String, Value>,
    path: &str,
    protocol: Protocol,
    errs: &mut Vec<ConfigError>,
) -> RouteEdge {
    let mut e = RouteEdge::default();
    match m.get("proxy_protocol") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => e.proxy_protocol = *b,
        Some(other) => err(
            errs,
            field_path(path, "proxy_protocol"),
            format!("expected true or false, found {}", show(other)),
        ),
    }
    let p = field_path(path, "sni");
    match m.get("sni") {
        None | Some(Value::Null) => {}
        Some(_) if protocol != Protocol::Tcp => err(
            errs,
            p,
            "SNI passthrough needs protocol \"tcp\"; an http route is chosen by \"hosts\"",
        ),
        Some(Value::Array(items)) if items.is_empty() => err(
            errs,
            p,
            "an empty list; leave \"sni\" out for the port's default route",
        ),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let norm = item.as_str().map(|s| s.trim().to_ascii_lowercase());
                match norm {
                    Some(n) if valid_host_pattern(&n) => {
                        if !e.sni.contains(&n) {
                            e.sni.push(n);
                        }
                    }
                    _ => err(
                        errs,
                        format!("{p}[{i}]"),
                        format!(
                            "{} is not a server name (letters, digits, '-', '.', optionally starting with \"*.\")",
                            show(item)
                        ),
                    ),
                }
            }
        }
        Some(other) => err(
            errs,
            p,
            format!("expected an array of server names, found {}", show(other)),
        ),
    }
    e
}

/// `send_proxy` of the backend at `path`.
pub(super) fn backend(
    m: &Map<String, Value>,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<SendProxy> {
    match m.get("send_proxy")? {
        Value::Null => None,
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "v1" | "1" => Some(SendProxy::V1),
            "v2" | "2" => Some(SendProxy::V2),
            _ => {
                err(
                    errs,
                    field_path(path, "send_proxy"),
                    format!(
                        "{} is not a PROXY protocol version; expected \"v1\" or \"v2\"",
                        show(&Value::String(s.clone()))
                    ),
                );
                None
            }
        },
        other => {
            err(
                errs,
                field_path(path, "send_proxy"),
                format!("expected \"v1\" or \"v2\", found {}", show(other)),
            );
            None
        }
    }
}

/// Why route `r` may not join the routes `others` already on its address,
/// or `None` when it may. http routes share by `hosts` (checked by the
/// caller); tcp routes share by `sni`: names must not overlap and at most
/// one route is the default (no `sni`). Every route of an address must
/// agree on `proxy_protocol`: the header is read before any route is known.
pub(super) fn share(r: &Route, others: &[&Route]) -> Option<String> {
    let first = others.first()?;
    if let Some(o) = others
        .iter()
        .find(|o| o.edge.proxy_protocol != r.edge.proxy_protocol)
    {
        return Some(format!(
            "\"proxy_protocol\" differs from {} on the same address {}; the header comes before the route is known",
            route_path(&o.key),
            r.listen
        ));
    }
    if r.protocol != first.protocol {
        return Some(format!(
            "duplicate listen address {}: already used by {} (protocol {})",
            r.listen,
            route_path(&first.key),
            first.protocol.as_str()
        ));
    }
    if r.protocol != Protocol::Tcp {
        return None;
    }
    for o in others {
        if r.edge.sni.is_empty() && o.edge.sni.is_empty() {
            return Some(format!(
                "duplicate listen address {}: {} is already the default route there; give one of them \"sni\"",
                r.listen,
                route_path(&o.key)
            ));
        }
        if let Some(n) = r.edge.sni.iter().find(|n| o.edge.sni.contains(n)) {
            return Some(format!(
                "server name \"{n}\" on {} is already served by {}",
                r.listen,
                route_path(&o.key)
            ));
        }
    }
    None
}

/// The names a listener routes by: `hosts` for http routes, `sni` for tcp.
pub(super) fn names(r: &Route) -> &[String] {
    match r.protocol {
        Protocol::Http => &r.hosts,
        Protocol::Tcp => &r.edge.sni,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, SendProxy};

    fn errors(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn cfg(routes: &str) -> String {
        format!(r#"{{"listen_host": "127.0.0.1", "routes": {{{routes}}}}}"#)
    }

    const B: &str = r#""backends": [{"internal_port": "9001"}]"#;

    #[test]
    fn sni_routes_share_a_tcp_port() {
        let text = cfg(&format!(
            r#""db": {{"listen": 8443, "protocol": "tcp", "sni": ["DB.example.com", "*.example.net"], {B}}},
               "web": {{"listen": 8443, "protocol": "tcp", "sni": ["www.example.com"], {B}}},
               "rest": {{"listen": 8443, "protocol": "tcp", {B}}}"#
        ));
        let s = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.listeners.len(), 1);
        let l = &s.listeners[0];
        assert_eq!(l.routes, [0, 1, 2]);
        assert!(l.edge.sni && !l.edge.proxy_protocol);
        assert_eq!(s.routes[0].edge.sni, ["db.example.com", "*.example.net"]);
        assert_eq!(l.hosts.lookup(Some(b"db.example.com")), Some(0));
        assert_eq!(l.hosts.lookup(Some(b"a.example.net")), Some(0));
        assert_eq!(l.hosts.lookup(Some(b"www.example.com")), Some(1));
        assert_eq!(l.hosts.lookup(Some(b"other.org")), Some(2));
        assert_eq!(l.hosts.lookup(None), Some(2));
    }

    #[test]
    fn proxy_protocol_and_send_proxy() {
        let text = cfg(r#""8080": {"proxy_protocol": true, "backends": [
                 {"name": "a", "internal_port": "9001", "send_proxy": "v1"},
                 {"name": "b", "internal_port": "9002", "send_proxy": "V2"},
                 {"name": "c", "internal_port": "9003"}]}"#);
        let s = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert!(s.routes[0].edge.proxy_protocol);
        assert!(s.listeners[0].edge.proxy_protocol && !s.listeners[0].edge.sni);
        let sp: Vec<_> = s.routes[0].backends.iter().map(|b| b.send_proxy).collect();
        assert_eq!(sp, [Some(SendProxy::V1), Some(SendProxy::V2), None]);
    }

    #[test]
    fn edge_errors_name_their_path() {
        let text = cfg(&format!(
            r#""a": {{"listen": 8443, "protocol": "tcp", "sni": ["ok.com", "bad name", 7], {B}}},
               "b": {{"listen": 8443, "protocol": "tcp", "sni": ["ok.com"], {B}}},
               "c": {{"listen": 8444, "protocol": "tcp", {B}}},
               "d": {{"listen": 8444, "protocol": "tcp", {B}}},
               "e": {{"listen": 8445, "protocol": "tcp", "sni": "x.com", {B}}},
               "f": {{"listen": 8446, "sni": ["x.com"], {B}}},
               "g": {{"listen": 8447, "proxy_protocol": "yes", {B}}},
               "h": {{"listen": 8448, "protocol": "tcp", "sni": ["h.com"], "proxy_protocol": true, {B}}},
               "i": {{"listen": 8448, "protocol": "tcp", {B}}},
               "j": {{"listen": 8449, "protocol": "tcp", "sni": [], "backends": [{{"internal_port": "9001", "send_proxy": "v3"}}]}},
               "k": {{"listen": 8450, "protocol": "tcp", "sni": ["k.com"], {B}}},
               "l": {{"listen": 8450, {B}}}"#
        ));
        let got = errors(&text);
        let want = [
            r#"routes."a".sni[1]: "bad name" is not a server name (letters, digits, '-', '.', optionally starting with "*.")"#,
            r#"routes."a".sni[2]: 7 is not a server name (letters, digits, '-', '.', optionally starting with "*.")"#,
            r#"routes."e".sni: expected an array of server names, found "x.com""#,
            r#"routes."f".sni: SNI passthrough needs protocol "tcp"; an http route is chosen by "hosts""#,
            r#"routes."g".proxy_protocol: expected true or false, found "yes""#,
            r#"routes."j".sni: an empty list; leave "sni" out for the port's default route"#,
            r#"routes."j".backends[0].send_proxy: "v3" is not a PROXY protocol version; expected "v1" or "v2""#,
            r#"routes."d": duplicate listen address 127.0.0.1:8444: routes."c" is already the default route there; give one of them "sni""#,
            r#"routes."i": "proxy_protocol" differs from routes."h" on the same address 127.0.0.1:8448; the header comes before the route is known"#,
            r#"routes."l": duplicate listen address 127.0.0.1:8450: already used by routes."k" (protocol tcp)"#,
        ];
        for w in want {
            assert!(got.iter().any(|g| g == w), "missing {w}\n got: {got:#?}");
        }
        // "a" has errors of its own, so "b" is alone on 8443: no clash reported.
        assert_eq!(got.len(), want.len(), "{got:#?}");
    }
}
