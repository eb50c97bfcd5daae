//! Writes the head the proxy forwards: request heads to the backend, response
//! heads to the client.
//!
//! Everything kept is copied byte-exact from the received head (runs of kept
//! lines are copied with one `extend_from_slice`), hop-by-hop fields are
//! dropped (RFC 9110 §7.6.1), and the proxy's own fields are appended. One
//! pass over the header spans; the only allocation is the output `Vec`
//! growing the first time it is used.

use std::io::Write as _;
use std::net::IpAddr;

use super::head::{
    classify, list_elements, HeaderSpan, Kind, RequestHead, ResponseHead, TargetForm, Version,
};

/// Per-request choices for [`write_request`].
#[derive(Debug, Clone, Copy)]
pub struct RequestRewrite<'a> {
    /// Client address appended to X-Forwarded-For.
    pub client_ip: IpAddr,
    /// X-Forwarded-Proto value, `http` or `https` (written as is).
    pub proto: &'a str,
    /// Forward an upgrade request (keep Upgrade, send `Connection: upgrade`).
    /// Only has effect when `RequestHead::upgrade` is true.
    pub forward_upgrade: bool,
    /// Ask the backend to close after this response (`Connection: close`).
    pub close_upstream: bool,
    /// mTLS listeners: the verified client certificate subject, sent as
    /// `X-Client-Cert-Subject` (a client's own field of that name is
    /// dropped first, so it cannot be forged; an empty value sends none).
    pub client_cert: Option<&'a str>,
}

/// Per-response choices for [`write_response`].
#[derive(Debug, Clone, Copy)]
pub struct ResponseRewrite {
    /// Version of the client's request.
    pub client_version: Version,
    /// The proxy closes the client connection after this response.
    pub close_client: bool,
    /// Forward a 101 (keep Upgrade, send `Connection: upgrade`).
    pub forward_upgrade: bool,
}

/// What happens to one received header line.
enum Action<'b> {
    Keep,
    Drop,
    /// Replace the line with `Host: <authority>` (absolute-form target).
    Host(&'b [u8]),
    /// Keep the line with `, <client ip>` appended to its value.
    AppendXff(IpAddr),
}

/// Appends the head to send to the backend for `head` (parsed from `buf`)
/// to `out`.
///
/// The request line is copied as received, except that an absolute-form
/// target becomes origin-form (RFC 9112 §3.2.1) and Host is then set from
/// it (§3.2.2). Dropped: Connection, Keep-Alive, Proxy-Connection, TE,
/// Trailer, Upgrade (unless forwarded), incoming X-Forwarded-Proto/-Host,
/// and every field named in Connection (never Host, Content-Length or
/// Transfer-Encoding: dropping those would change framing). Added:
/// X-Forwarded-For (appended to the last existing one), X-Forwarded-Proto,
/// X-Forwarded-Host, and Connection as needed (`upgrade`, `close`, or
/// `keep-alive` for an HTTP/1.0 request so the backend connection can be
/// reused). `out` is appended to, not cleared.
pub fn write_request(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    headers: &[HeaderSpan],
    opts: &RequestRewrite<'_>,
) {
    let headers = head.headers(headers);
    let upgrade = head.upgrade && opts.forward_upgrade;
    let absolute = head.target_form == TargetForm::Absolute;
    let authority = head.host.map(|h| h.get(buf)).unwrap_or(&[]);

    if absolute {
        let path = head.path(buf);
        out.extend_from_slice(head.method(buf));
        out.push(b' ');
        if path.is_empty() && head.method(buf) == b"OPTIONS" {
            out.push(b'*');
        } else {
            if path.first() != Some(&b'/') {
                out.push(b'/');
            }
            out.extend_from_slice(path);
        }
        out.push(b' ');
        out.extend_from_slice(head.version.as_bytes());
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(bytes(buf, head.method.start as usize, head.headers_start));
    }

    let mut host_written = false;
    let mut xff_written = false;
    let end = head.head_len.saturating_sub(2);
    let noms = Nominated::collect(buf, head.connection.other, headers);
    copy_headers(out, buf, headers, end, |i, h, name| match classify(name) {
        Kind::Connection | Kind::KeepAlive | Kind::ProxyConnection | Kind::Te | Kind::Trailer => {
            Action::Drop
        }
        Kind::Upgrade if !upgrade => Action::Drop,
        // A forwarded upgrade keeps Upgrade even when Connection also names
        // other fields (`Connection: Upgrade, HTTP2-Settings`).
        Kind::Upgrade => Action::Keep,
        Kind::Xfp | Kind::Xfh => Action::Drop,
        Kind::Host if absolute => {
            host_written = true;
            Action::Host(authority)
        }
        Kind::Host | Kind::ContentLength | Kind::TransferEncoding => Action::Keep,
        _ if noms.contains(buf, headers, name) => Action::Drop,
        _ if opts.client_cert.is_some() && name.eq_ignore_ascii_case(b"x-client-cert-subject") => {
            Action::Drop
        }
        // An empty last X-Forwarded-For is dropped and a fresh one added.
        Kind::Xff if head.xff_last == Some(i) && !h.value.is_empty() => {
            xff_written = true;
            Action::AppendXff(opts.client_ip)
        }
        Kind::Xff if head.xff_last == Some(i) => Action::Drop,
        _ => Action::Keep,
    });

    if absolute && !host_written {
        header(out, b"Host", authority);
    }
    if !xff_written {
        out.extend_from_slice(b"X-Forwarded-For: ");
        let _ = write!(out, "{}", opts.client_ip);
        out.extend_from_slice(b"\r\n");
    }
    header(out, b"X-Forwarded-Proto", opts.proto.as_bytes());
    if let Some(subject) = opts.client_cert.filter(|s| !s.is_empty()) {
        header(out, b"X-Client-Cert-Subject", subject.as_bytes());
    }
    if !authority.is_empty() {
        header(out, b"X-Forwarded-Host", authority);
    }
    if upgrade {
        header(out, b"Connection", b"upgrade");
    } else if opts.close_upstream {
        header(out, b"Connection", b"close");
    } else if head.version == Version::Http10 {
        header(out, b"Connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the head to send to the client for `head` (parsed from `buf`)
/// to `out`.
///
/// The status line and every kept field are copied as received;
/// Content-Length and Transfer-Encoding are kept (the body is forwarded
/// with its framing), except that Content-Length is dropped when it
/// conflicts with Transfer-Encoding (RFC 9112 §6.3 point 3). Dropped: the hop-by-hop fields, Upgrade
/// unless a 101 is being forwarded, and fields named in Connection. Added:
/// `Connection: upgrade` for a forwarded 101, `Connection: close` when the
/// proxy closes the client connection, `Connection: keep-alive` for an
/// HTTP/1.0 client kept open; nothing for other 1xx. `out` is appended to.
pub fn write_response(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &ResponseHead,
    headers: &[HeaderSpan],
    opts: &ResponseRewrite,
) {
    let headers = head.headers(headers);
    let upgrade = head.is_switching_protocols() && opts.forward_upgrade;
    out.extend_from_slice(bytes(buf, head.start, head.headers_start));
    let end = head.head_len.saturating_sub(2);
    let noms = Nominated::collect(buf, head.connection.other, headers);
    copy_headers(out, buf, headers, end, |_, _, name| match classify(name) {
        Kind::Connection | Kind::KeepAlive | Kind::ProxyConnection | Kind::Te | Kind::Trailer => {
            Action::Drop
        }
        Kind::Upgrade if !upgrade => Action::Drop,
        Kind::Upgrade => Action::Keep,
        Kind::ContentLength if head.conflicting_framing => Action::Drop,
        Kind::ContentLength | Kind::TransferEncoding => Action::Keep,
        _ if noms.contains(buf, headers, name) => Action::Drop,
        _ => Action::Keep,
    });
    if upgrade {
        header(out, b"Connection", b"upgrade");
    } else if head.is_interim() {
        // Interim responses carry no connection management.
    } else if opts.close_client {
        header(out, b"Connection", b"close");
    } else if opts.client_version == Version::Http10 {
        header(out, b"Connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
}

/// Copies header lines, coalescing runs of kept lines into single copies.
///
/// `end` is where the header section ends (before the final CRLF). Line `i`
/// runs from its name to the next line's name (or `end`), CRLF included.
fn copy_headers<'b>(
    out: &mut Vec<u8>,
    buf: &'b [u8],
    headers: &[HeaderSpan],
    end: usize,
    mut decide: impl FnMut(usize, &HeaderSpan, &'b [u8]) -> Action<'b>,
) {
    let mut run: Option<usize> = None;
    for (i, h) in headers.iter().enumerate() {
        let start = h.name.start as usize;
        match decide(i, h, h.name.get(buf)) {
            Action::Keep => {
                run.get_or_insert(start);
            }
            action => {
                if let Some(r) = run.take() {
                    out.extend_from_slice(bytes(buf, r, start));
                }
                match action {
                    Action::Host(authority) => header(out, b"Host", authority),
                    Action::AppendXff(client_ip) => {
                        out.extend_from_slice(bytes(buf, start, h.value.end as usize));
                        let _ = write!(out, ", {client_ip}");
                        out.extend_from_slice(b"\r\n");
                    }
                    Action::Keep | Action::Drop => {}
                }
            }
        }
    }
    if let Some(r) = run {
        out.extend_from_slice(bytes(buf, r, end));
    }
}

/// Most Connection tokens remembered; a head with more falls back to
/// scanning its Connection fields for each header line.
const MAX_NOMINATED: usize = 16;

/// The field names listed in a head's Connection fields (hop-by-hop for
/// this message), collected once per head.
///
/// Why: checking every header line against every Connection field costs
/// headers x fields, which a client controls; collected once, each line
/// costs one pass over a short token list (the micro-benchmark of a 21-field
/// head with a nominated field went from 2.6 us to about the plain rewrite).
struct Nominated<'b> {
    tokens: [&'b [u8]; MAX_NOMINATED],
    len: usize,
    /// More tokens than fit: scan the fields instead.
    overflow: bool,
}

impl<'b> Nominated<'b> {
    /// `any_other`: the head's Connection fields name something beyond
    /// close/keep-alive/upgrade (else nothing is collected).
    fn collect(buf: &'b [u8], any_other: bool, headers: &[HeaderSpan]) -> Nominated<'b> {
        let mut n = Nominated {
            tokens: [&[]; MAX_NOMINATED],
            len: 0,
            overflow: false,
        };
        if !any_other {
            return n;
        }
        for h in headers {
            if classify(h.name(buf)) != Kind::Connection {
                continue;
            }
            for t in list_elements(h.value(buf)) {
                match n.tokens.get_mut(n.len) {
                    Some(slot) => {
                        *slot = t;
                        n.len += 1;
                    }
                    None => n.overflow = true,
                }
            }
        }
        n
    }

    /// True if `name` is listed in a Connection field.
    fn contains(&self, buf: &[u8], headers: &[HeaderSpan], name: &[u8]) -> bool {
        if self.overflow {
            return headers
                .iter()
                .filter(|h| classify(h.name(buf)) == Kind::Connection)
                .any(|h| list_elements(h.value(buf)).any(|t| t.eq_ignore_ascii_case(name)));
        }
        self.tokens
            .get(..self.len)
            .unwrap_or(&[])
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name))
    }
}

fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn bytes(buf: &[u8], start: usize, end: usize) -> &[u8] {
    buf.get(start..end).unwrap_or(&[])
}

#[cfg(test)]
mod tests;
