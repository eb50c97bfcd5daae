//! Responses the proxy generates itself: canned error responses, a builder
//! for errors that name their cause, and the `100 Continue` interim head.
//!
//! Why: errors are written on hot failure paths (overload, bad clients), so
//! the common ones are static bytes with nothing to format. Every error
//! response here carries `Connection: close`: the proxy closes after
//! sending one, because the request body may not have been read.

use std::io::Write as _;

/// Interim response that tells an `Expect: 100-continue` client to send its
/// body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

macro_rules! canned {
    ($name:ident, $status:literal, $len:literal, $body:literal) => {
        canned!($name, $status, $len, $body, "");
    };
    ($name:ident, $status:literal, $len:literal, $body:literal, $extra:literal) => {
        #[doc = concat!("Complete `", $status, "` response with `Connection: close`.")]
        pub const $name: &[u8] = concat!(
            "HTTP/1.1 ",
            $status,
            "\r\nContent-Type: text/plain\r\nContent-Length: ",
            $len,
            "\r\nConnection: close\r\n",
            $extra,
            "\r\n",
            $body
        )
        .as_bytes();
    };
}

canned!(BAD_REQUEST, "400 Bad Request", "16", "400 Bad Request\n");
canned!(
    NOT_FOUND,
    "404 Not Found",
    "33",
    "404 Not Found: no route for host\n"
);
canned!(
    REQUEST_TIMEOUT,
    "408 Request Timeout",
    "20",
    "408 Request Timeout\n"
);
canned!(
    CONTENT_TOO_LARGE,
    "413 Content Too Large",
    "22",
    "413 Content Too Large\n"
);
canned!(
    HEADERS_TOO_LARGE,
    "431 Request Header Fields Too Large",
    "36",
    "431 Request Header Fields Too Large\n"
);
canned!(
    INTERNAL_SERVER_ERROR,
    "500 Internal Server Error",
    "26",
    "500 Internal Server Error\n"
);
canned!(
    NOT_IMPLEMENTED,
    "501 Not Implemented",
    "20",
    "501 Not Implemented\n"
);
canned!(BAD_GATEWAY, "502 Bad Gateway", "16", "502 Bad Gateway\n");
canned!(
    SERVICE_UNAVAILABLE,
    "503 Service Unavailable",
    "24",
    "503 Service Unavailable\n"
);
canned!(
    SERVICE_UNAVAILABLE_RETRY,
    "503 Service Unavailable",
    "24",
    "503 Service Unavailable\n",
    "Retry-After: 1\r\n"
);
canned!(
    GATEWAY_TIMEOUT,
    "504 Gateway Timeout",
    "20",
    "504 Gateway Timeout\n"
);
canned!(
    VERSION_NOT_SUPPORTED,
    "505 HTTP Version Not Supported",
    "31",
    "505 HTTP Version Not Supported\n"
);

/// The canned response for `status`, if there is one.
pub fn canned(status: u16) -> Option<&'static [u8]> {
    Some(match status {
        400 => BAD_REQUEST,
        404 => NOT_FOUND,
        408 => REQUEST_TIMEOUT,
        413 => CONTENT_TOO_LARGE,
        431 => HEADERS_TOO_LARGE,
        500 => INTERNAL_SERVER_ERROR,
        501 => NOT_IMPLEMENTED,
        502 => BAD_GATEWAY,
        503 => SERVICE_UNAVAILABLE,
        504 => GATEWAY_TIMEOUT,
        505 => VERSION_NOT_SUPPORTED,
        _ => return None,
    })
}

/// Head part of a response (up to and including the blank line).
///
/// Why: a response to HEAD must not carry the body (RFC 9110 §9.3.2).
pub fn head_only(response: &[u8]) -> &[u8] {
    match memchr::memmem::find(response, b"\r\n\r\n") {
        Some(i) => response.get(..i + 4).unwrap_or(response),
        None => response,
    }
}

/// Reason phrase for a status code the proxy emits; `"Error"` otherwise.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// Longest `detail` kept in a generated body, in bytes.
pub const MAX_DETAIL: usize = 512;

/// Appends a complete `Connection: close` error response to `out` whose
/// one-line body is `"<status> <reason>: <detail>"`.
///
/// Why: operators need to see which route or backend failed without
/// reading logs. `detail` is cut to [`MAX_DETAIL`] bytes and any byte
/// outside printable ASCII becomes `?`, so it cannot break the line.
/// A `status` outside 100..=599 is written as 500.
pub fn write_error(out: &mut Vec<u8>, status: u16, detail: &str) {
    write_error_with(out, status, "", detail);
}

/// 503 with `Retry-After: 1` for a connection limit (`detail` names it).
pub fn write_retry_later(out: &mut Vec<u8>, detail: &str) {
    write_error_with(out, 503, "Retry-After: 1\r\n", detail);
}

/// [`write_error`] with extra header lines (`headers`, each ending in CRLF).
fn write_error_with(out: &mut Vec<u8>, status: u16, headers: &str, detail: &str) {
    let status = if (100..=599).contains(&status) {
        status
    } else {
        500
    };
    let reason = reason(status);
    let detail = detail.as_bytes();
    let detail = detail.get(..MAX_DETAIL).unwrap_or(detail);
    let sep = if detail.is_empty() { 0 } else { 2 };
    // "NNN " + reason + ": " + detail + "\n"
    let body_len = 4 + reason.len() + sep + detail.len() + 1;
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\n{headers}Content-Type: text/plain\r\n\
         Content-Length: {body_len}\r\nConnection: close\r\n\r\n{status} {reason}"
    );
    if !detail.is_empty() {
        out.extend_from_slice(b": ");
        out.extend(
            detail
                .iter()
                .map(|&b| if (0x20..=0x7e).contains(&b) { b } else { b'?' }),
        );
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[(u16, &[u8])] = &[
        (400, BAD_REQUEST),
        (404, NOT_FOUND),
        (408, REQUEST_TIMEOUT),
        (413, CONTENT_TOO_LARGE),
        (431, HEADERS_TOO_LARGE),
        (500, INTERNAL_SERVER_ERROR),
        (501, NOT_IMPLEMENTED),
        (502, BAD_GATEWAY),
        (503, SERVICE_UNAVAILABLE),
        (503, SERVICE_UNAVAILABLE_RETRY),
        (504, GATEWAY_TIMEOUT),
        (505, VERSION_NOT_SUPPORTED),
    ];

    /// Parses a generated response with httparse and checks its framing.
    fn check(status: u16, resp: &[u8]) {
        let mut hs = [httparse::EMPTY_HEADER; 8];
        let mut r = httparse::Response::new(&mut hs);
        let n = match r.parse(resp) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!("{status}: {other:?}"),
        };
        assert_eq!(r.code, Some(status));
        assert_eq!(r.reason, Some(reason(status)));
        let get = |name: &str| {
            r.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        let cl: usize = std::str::from_utf8(get("content-length").unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(cl, resp.len() - n, "{status} Content-Length");
        assert_eq!(get("connection"), Some(&b"close"[..]));
        assert_eq!(get("content-type"), Some(&b"text/plain"[..]));
        let body = &resp[n..];
        assert!(body.starts_with(format!("{status} {}", reason(status)).as_bytes()));
        assert_eq!(body.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(body.ends_with(b"\n"));
        assert!(!resp[..n - 4]
            .windows(2)
            .any(|w| w[1] == b'\n' && w[0] != b'\r'));
    }

    #[test]
    fn canned_responses_are_well_formed() {
        for &(status, resp) in ALL {
            check(status, resp);
        }
        assert!(std::str::from_utf8(SERVICE_UNAVAILABLE_RETRY)
            .unwrap()
            .contains("\r\nRetry-After: 1\r\n"));
        for &(status, resp) in ALL {
            if resp != SERVICE_UNAVAILABLE_RETRY {
                assert_eq!(canned(status), Some(resp));
            }
        }
        assert_eq!(canned(200), None);
        assert_eq!(CONTINUE, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn head_only_strips_body() {
        let h = head_only(BAD_GATEWAY);
        assert!(h.ends_with(b"\r\n\r\n"));
        assert_eq!(&BAD_GATEWAY[h.len()..], b"502 Bad Gateway\n");
        assert_eq!(head_only(b"junk"), b"junk");
    }

    #[test]
    fn write_error_names_the_cause() {
        let mut out = Vec::new();
        write_error(
            &mut out,
            502,
            "route \"api\": no backend accepted the connection",
        );
        check(502, &out);
        assert!(out.ends_with(
            b"\r\n\r\n502 Bad Gateway: route \"api\": no backend accepted the connection\n"
        ));

        for status in [400, 404, 408, 413, 431, 500, 501, 503, 504, 505, 429] {
            out.clear();
            write_error(&mut out, status, "x");
            check(status, &out);
        }
        out.clear();
        write_error(&mut out, 404, "");
        check(404, &out);
        assert!(out.ends_with(b"\r\n\r\n404 Not Found\n"));

        out.clear();
        write_retry_later(&mut out, "connection limit reached");
        check(503, &out);
        assert!(out.starts_with(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"));
        assert!(out.ends_with(b"\r\n\r\n503 Service Unavailable: connection limit reached\n"));

        out.clear();
        write_error(&mut out, 502, "evil\r\nSet-Cookie: a=b\u{e9}");
        check(502, &out);
        assert!(out.ends_with(b"evil??Set-Cookie: a=b??\n"));

        out.clear();
        write_error(&mut out, 42, &"y".repeat(10_000));
        check(500, &out);
        assert!(out.len() < 700);
    }
}
