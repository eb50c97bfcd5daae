//! Per-request rules at the TLS edge: 421 for a Host the connection's
//! certificate does not cover, 308 to https for `redirect_https` routes, and
//! the verified client certificate subject for mTLS listeners. Plain routes
//! without `redirect_https` pass with two field checks.

use std::io::Write as _;
use std::time::Duration;

use crate::config::ListenerSpec;
use crate::shared::LiveRoute;

use super::conn::Client;
use super::head::{BodyFraming, RequestHead, TargetForm};
use super::respond;

enum Kind {
    /// The Host is not covered by the certificate of this connection's
    /// handshake, on a port shared by several routes (domain fronting).
    Misdirected,
    /// `redirect_https`: 308 to the same host and path on https.
    Redirect,
}

/// A response the edge rules answer instead of the backend.
pub(super) struct EdgeAnswer {
    kind: Kind,
    pub keepalive: Duration,
}

/// What the edge rules say about a request routed to `route`.
pub(super) fn check(
    spec: &ListenerSpec,
    route: &LiveRoute,
    client: &Client,
    head: &RequestHead,
) -> Option<EdgeAnswer> {
    let answer = |kind| {
        Some(EdgeAnswer {
            kind,
            keepalive: route.cfg.timeouts.keepalive,
        })
    };
    let Some(t) = &client.tls else {
        return if route.cfg.redirect_https {
            answer(Kind::Redirect)
        } else {
            None
        };
    };
    let acc = spec.tls.as_ref()?;
    let t = t.borrow();
    let host = head.host(&client.buf).unwrap_or(b"");
    if acc.misdirected(spec.routes.len() >= 2, t.cert, t.sni, host) {
        answer(Kind::Misdirected)
    } else {
        None
    }
}

/// The subject for `X-Client-Cert-Subject` on mTLS listeners (`None`: none
/// is sent and the client's own is kept, which only happens without mTLS).
pub(super) fn client_subject(spec: &ListenerSpec, client: &Client) -> Option<String> {
    if !spec.tls.as_ref().is_some_and(|a| a.mtls) {
        return None;
    }
    let t = client.tls.as_ref()?.borrow();
    Some(t.client_subject.clone().unwrap_or_default())
}

impl EdgeAnswer {
    /// Writes the response to `out`; whether the connection may stay open.
    pub fn write(&self, out: &mut Vec<u8>, head: &RequestHead, buf: &[u8]) -> bool {
        match self.kind {
            Kind::Misdirected => {
                respond::write_error(
                    out,
                    421,
                    "this host is not served on this TLS connection; connect with its name (SNI)",
                );
                false
            }
            Kind::Redirect => {
                let Some(host) = head.host(buf).filter(|h| !h.is_empty()) else {
                    respond::write_error(out, 400, "a redirect to https needs a Host");
                    return false;
                };
                let host = match memchr::memrchr(b':', host) {
                    Some(i) if host.first() != Some(&b'[') || host[..i].ends_with(b"]") => {
                        &host[..i]
                    }
                    _ => host,
                };
                let path = match head.target_form {
                    TargetForm::Absolute => head.path(buf),
                    _ => head.target(buf),
                };
                let keep = head.keep_alive
                    && matches!(head.framing, BodyFraming::None | BodyFraming::Length(0));
                out.extend_from_slice(b"HTTP/1.1 308 Permanent Redirect\r\nLocation: https://");
                out.extend_from_slice(host);
                if path.first() != Some(&b'/') {
                    out.push(b'/');
                }
                out.extend_from_slice(path);
                let _ = write!(out, "\r\nContent-Length: 0\r\n");
                if !keep {
                    out.extend_from_slice(b"Connection: close\r\n");
                }
                out.extend_from_slice(b"\r\n");
                keep
            }
        }
    }
}
