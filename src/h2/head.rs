//! HTTP/2 <-> HTTP/1.1 heads (pure): an h2 request becomes an HTTP/1.1
//! request head for a backend; a backend's HTTP/1.1 response head (parsed by
//! `http::head`) becomes an h2 response; chunked trailers become h2 trailers.

use std::io::Write;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::http::head::{HeaderSpan, ResponseHead};

/// How the request body goes to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqBody {
    /// No body (END_STREAM on the HEADERS frame, no content-length).
    None,
    /// The client's content-length (h2 checks the DATA frames add up to it).
    Length(u64),
    /// Unknown length: sent chunked.
    Chunked,
}

/// Connection-specific fields (RFC 9113 §8.2.2) and the ones we set ourselves.
fn dropped_request_field(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "host"
            | "content-length"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-forwarded-for"
            | "cookie"
            | "http2-settings"
    )
}

/// The request fields of an h2 request as sent upstream: `client_cert`
/// (mTLS listeners) is the verified subject for `X-Client-Cert-Subject`
/// (empty: the client sent no certificate); a client's own field of that
/// name is dropped first, so it cannot be forged.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    /// The client's address as text.
    pub client_ip: &'a str,
    pub https: bool,
    pub client_cert: Option<&'a str>,
}

/// Writes the HTTP/1.1 request head for an h2 request to `out` (appended).
/// `authority` is `:authority` (or the Host field); cookie crumbs are
/// joined with "; " (RFC 9113 §8.2.3); X-Forwarded-For gets the client.
pub fn write_request(
    out: &mut Vec<u8>,
    parts: &http::request::Parts,
    authority: &[u8],
    fwd: Forwarded<'_>,
    body: ReqBody,
) {
    let Forwarded {
        client_ip,
        https,
        client_cert,
    } = fwd;
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(authority);
    out.extend_from_slice(b"\r\n");
    let h = &parts.headers;
    for (name, value) in h {
        if dropped_request_field(name.as_str())
            || (client_cert.is_some() && name == "x-client-cert-subject")
        {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let mut cookies = h.get_all(http::header::COOKIE).iter();
    if let Some(first) = cookies.next() {
        out.extend_from_slice(b"cookie: ");
        out.extend_from_slice(first.as_bytes());
        for c in cookies {
            out.extend_from_slice(b"; ");
            out.extend_from_slice(c.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    let xff = h.get_all("x-forwarded-for").iter();
    for v in xff {
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(if https {
        b"x-forwarded-proto: https\r\n"
    } else {
        b"x-forwarded-proto: http\r\n"
    });
    if !authority.is_empty() {
        field(out, b"x-forwarded-host", authority);
    }
    if let Some(subject) = client_cert.filter(|s| !s.is_empty()) {
        field(out, b"x-client-cert-subject", subject.as_bytes());
    }
    match body {
        ReqBody::None => {}
        ReqBody::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        ReqBody::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Hop-by-hop response fields HTTP/2 forbids (RFC 9113 §8.2.2).
fn dropped_response_field(name: &[u8]) -> bool {
    const HOP: [&[u8]; 7] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"trailer",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Whether `name` is a connection-specific field (HTTP/2 forbids them).
pub fn connection_specific(name: &[u8]) -> bool {
    dropped_response_field(name)
}

/// Whether `name` is listed in the response's Connection field.
fn nominated(buf: &[u8], headers: &[HeaderSpan], name: &[u8]) -> bool {
    headers
        .iter()
        .filter(|h| h.name(buf).eq_ignore_ascii_case(b"connection"))
        .flat_map(|h| h.value(buf).split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(name))
}

/// The h2 response for a backend's final response head (fields that cannot
/// be represented are dropped: HTTP/1.1 allows bytes `http` does not).
/// The head is copied once; field values are slices of that copy (no
/// allocation per field; names outside `http`'s standard set allocate).
pub fn response(buf: &[u8], head: &ResponseHead, spans: &[HeaderSpan]) -> http::Response<()> {
    let raw = bytes::Bytes::copy_from_slice(buf.get(..head.head_len).unwrap_or(buf));
    response_from(&raw, head, spans)
}

/// [`response`] from bytes already copied (the head, and whatever followed
/// it: the proxy copies a small response once, head and body together).
pub fn response_from(
    raw: &bytes::Bytes,
    head: &ResponseHead,
    spans: &[HeaderSpan],
) -> http::Response<()> {
    let buf = &raw[..];
    let mut resp = http::Response::new(());
    *resp.status_mut() =
        http::StatusCode::from_u16(head.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let spans = head.headers(spans);
    // Sized once: growing from empty rehashes as the fields go in.
    *resp.headers_mut() = HeaderMap::with_capacity(spans.len());
    let other = head.connection.other;
    let h = resp.headers_mut();
    for s in spans {
        let name = s.name(buf);
        if dropped_response_field(name) || (other && nominated(buf, spans, name)) {
            continue;
        }
        let (start, end) = (s.value.start as usize, s.value.end as usize);
        if end > raw.len() || start > end {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_maybe_shared(raw.slice(start..end)),
        ) {
            h.append(n, v);
        }
    }
    resp
}

/// The fields of a chunked trailer section (`name: value\r\n`... `\r\n`).
pub fn trailers(section: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    let mut raw = [httparse::EMPTY_HEADER; 64];
    if let Ok(httparse::Status::Complete((_, fields))) = httparse::parse_headers(section, &mut raw)
    {
        for f in fields {
            let lower = f.name.to_ascii_lowercase();
            if dropped_response_field(lower.as_bytes())
                || matches!(lower.as_str(), "content-length" | "host")
            {
                continue;
            }
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(lower.as_bytes()),
                HeaderValue::from_bytes(f.value),
            ) {
                map.append(n, v);
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{parse_response, Limits, Status};

    #[test]
    fn request_head_from_h2() {
        let req = http::Request::builder()
            .method("POST")
            .uri("http://api.example.com/v1/x?q=1")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("user-agent", "t")
            .header("x-forwarded-for", "10.0.0.1")
            .header("host", "ignored.example")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let mut out = Vec::new();
        write_request(
            &mut out,
            &parts,
            b"api.example.com",
            Forwarded {
                client_ip: "127.0.0.9",
                https: false,
                client_cert: None,
            },
            ReqBody::Chunked,
        );
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            "POST /v1/x?q=1 HTTP/1.1\r\nHost: api.example.com\r\nuser-agent: t\r\n\
             cookie: a=1; b=2\r\nx-forwarded-for: 10.0.0.1, 127.0.0.9\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: api.example.com\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn client_cert_subject_cannot_be_forged() {
        let req = http::Request::builder()
            .uri("https://a.test/")
            .header("x-client-cert-subject", "CN=admin")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let head = |cert| {
            let mut out = Vec::new();
            let fwd = Forwarded {
                client_ip: "127.0.0.1",
                https: true,
                client_cert: cert,
            };
            write_request(&mut out, &parts, b"a.test", fwd, ReqBody::None);
            String::from_utf8(out).unwrap()
        };
        let s = head(Some("CN=alice"));
        assert!(s.contains("x-client-cert-subject: CN=alice\r\n"), "{s}");
        assert!(!s.contains("CN=admin"), "{s}");
        assert!(s.contains("x-forwarded-proto: https\r\n"), "{s}");
        // mTLS listener, no client certificate: no field at all.
        let s = head(Some(""));
        assert!(!s.contains("x-client-cert-subject"), "{s}");
        // No mTLS: the field is the client's own business (as on HTTP/1.1).
        assert!(head(None).contains("CN=admin"));
    }

    #[test]
    fn response_drops_hop_by_hop_and_nominated() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
                    Transfer-Encoding: chunked\r\nTrailer: grpc-status\r\nContent-Type: text/plain\r\nSet-Cookie: a\r\nSet-Cookie: b\r\n\r\n";
        let mut spans = vec![HeaderSpan::default(); 100];
        let Ok(Status::Complete(head)) =
            parse_response(raw, &mut spans, &Limits::default(), b"GET")
        else {
            panic!("parse")
        };
        let r = response(raw, &head, &spans);
        assert_eq!(r.status(), 200);
        let names: Vec<_> = r.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "set-cookie"]);
        assert_eq!(r.headers().get_all("set-cookie").iter().count(), 2);
    }

    #[test]
    fn trailer_section() {
        let t = trailers(b"grpc-status: 0\r\nGrpc-Message: ok\r\nTransfer-Encoding: x\r\n\r\n");
        assert_eq!(t.get("grpc-status").unwrap(), "0");
        assert_eq!(t.get("grpc-message").unwrap(), "ok");
        assert_eq!(t.len(), 2);
    }
}
