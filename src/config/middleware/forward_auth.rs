//! Validation of `forward_auth` (a subrequest to an auth service).
//!
//! ```json
//! {"type": "forward_auth", "address": "127.0.0.1:9091", "path": "/verify?u={uri}",
//!  "timeout": "2s", "request_headers": ["Authorization", "Cookie"],
//!  "response_headers": ["X-User"], "max_response_body": 65536}
//! ```
//!
//! The address is resolved here, on the control thread (at load and at
//! every reload): workers never resolve a name.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde_json::{Map, Value};

use super::{Middleware, V};

/// A `forward_auth` middleware, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuth {
    /// The auth service's address (resolved at load).
    pub addr: SocketAddr,
    /// `address` as written, sent as the subrequest's Host.
    pub host: String,
    /// Target template of the subrequest: `{uri}` is the original
    /// path and query (default `{uri}`).
    pub path: String,
    /// Whole subrequest (connect, send, answer) at most this long.
    pub timeout: Duration,
    /// Request headers copied to the subrequest.
    pub request_headers: Vec<String>,
    /// Headers of a 2xx answer copied to the upstream request.
    pub response_headers: Vec<String>,
    /// Largest body of a denial passed to the client (larger: 502).
    pub max_response_body: u64,
}

/// Default `max_response_body`.
pub const DEFAULT_MAX_RESPONSE_BODY: u64 = 64 * 1024;
/// Upper bound of `max_response_body`.
pub const MAX_RESPONSE_BODY: u64 = 1024 * 1024;

const FIELDS: &[&str] = &[
    "address",
    "path",
    "timeout",
    "request_headers",
    "response_headers",
    "max_response_body",
];

/// Fields that frame or route a message: never copied either way.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// A header name that may be copied (a token, not a framing field).
fn token(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && !RESERVED.iter().any(|r| h.eq_ignore_ascii_case(r))
}

impl V<'_> {
    pub(super) fn forward_auth(
        &mut self,
        m: &Map<String, Value>,
        path: &str,
    ) -> Option<Middleware> {
        self.fields(m, path, FIELDS);
        let ap = format!("{path}.address");
        let addr = match self.string(m, path, "address") {
            None => {
                self.err(ap, "missing: the auth service as \"host:port\"");
                None
            }
            Some(a) => {
                let resolved = a
                    .parse::<SocketAddr>()
                    .ok()
                    .or_else(|| a.to_socket_addrs().ok().and_then(|mut it| it.next()));
                match resolved {
                    Some(s) => Some((s, a)),
                    None => {
                        self.err(ap, format!("{a:?} is not a host:port that resolves"));
                        None
                    }
                }
            }
        };
        let template = self
            .string(m, path, "path")
            .unwrap_or_else(|| "{uri}".into());
        if !(template.starts_with('/') || template.starts_with("{uri}"))
            || template
                .bytes()
                .any(|b| !(0x21..0x7f).contains(&b) || b == b'#')
        {
            self.err(
                format!("{path}.path"),
                format!(
                    "{template:?} is not a path template (like \"/verify\" or \"/auth{{uri}}\")"
                ),
            );
        }
        let timeout = match m.get("timeout") {
            None | Some(Value::Null) => Duration::from_secs(5),
            Some(v) => match crate::config::validate::duration_value(v) {
                Ok(d) if d <= Duration::from_secs(300) => d,
                Ok(_) => {
                    self.err(format!("{path}.timeout"), "at most 300 s");
                    Duration::from_secs(5)
                }
                Err(e) => {
                    self.err(format!("{path}.timeout"), e);
                    Duration::from_secs(5)
                }
            },
        };
        let mut request_headers = self.names(m, path, "request_headers", token);
        if !m.contains_key("request_headers") {
            request_headers = vec!["Authorization".into(), "Cookie".into()];
        }
        let response_headers = self.names(m, path, "response_headers", token);
        if request_headers.len() > 32 || response_headers.len() > 32 {
            self.err(
                path.to_string(),
                "at most 32 request_headers and 32 response_headers",
            );
        }
        let max_response_body = match m.get("max_response_body") {
            None | Some(Value::Null) => DEFAULT_MAX_RESPONSE_BODY,
            Some(v) => match v.as_u64() {
                Some(n) if n <= MAX_RESPONSE_BODY => n,
                _ => {
                    self.err(
                        format!("{path}.max_response_body"),
                        format!("{v} is not a byte count from 0 to {MAX_RESPONSE_BODY}"),
                    );
                    DEFAULT_MAX_RESPONSE_BODY
                }
            },
        };
        let (addr, host) = addr?;
        Some(Middleware::ForwardAuth(Box::new(ForwardAuth {
            addr,
            host,
            path: template,
            timeout,
            request_headers,
            response_headers,
            max_response_body,
        })))
    }
}
