//! HTTP/1.1 request and response head parsing on top of `httparse`.
//!
//! `httparse` is fast but lenient in ways a proxy cannot afford (bare LF line
//! endings, any transfer coding, duplicate framing headers), and those
//! leniencies are what request smuggling exploits. This module adds the
//! RFC 9112 checks and derives the facts the proxy acts on (framing,
//! keep-alive, upgrade, Host). Results are byte offsets into the caller's
//! buffer, so a parsed head owns no borrow and can live next to the pooled
//! buffer across I/O.

use core::fmt;
use core::mem::MaybeUninit;

mod checks;

use checks::{
    check_line_endings, classify_target, is_tchar, line_after, parse_content_length, request_error,
    response_error, span_of, trim_ows, valid_host,
};

/// Hard upper bound on headers per head, whatever [`Limits`] says.
///
/// Why: the `httparse` scratch array lives on the stack (32 bytes a slot), so
/// parsing allocates nothing.
pub const MAX_HEADERS_CAP: usize = 256;

/// Size limits applied while parsing a head.
///
/// Why: an unbounded head lets a client pin memory and CPU before the proxy
/// has decided anything; both limits map to 431 for requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum head length in bytes, start line and final CRLF included.
    pub max_head: usize,
    /// Maximum number of header fields (also capped by the caller's span
    /// array length and by [`MAX_HEADERS_CAP`]).
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 64 * 1024,
            max_headers: 100,
        }
    }
}

/// A byte range `start..end` into the buffer a head was parsed from.
///
/// Why: offsets instead of slices keep parsed heads free of lifetimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    /// The bytes this span covers in `buf`, or empty if out of range.
    pub fn get(self, buf: &[u8]) -> &[u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or(&[])
    }

    /// Length in bytes.
    pub fn len(self) -> usize {
        self.end.saturating_sub(self.start) as usize
    }

    /// True if the span covers no byte.
    pub fn is_empty(self) -> bool {
        self.end <= self.start
    }
}

/// Offsets of one header field: name and value (value without surrounding
/// whitespace).
///
/// Why: the caller keeps a reusable array of these next to its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeaderSpan {
    /// Field name, original spelling.
    pub name: Span,
    /// Field value, leading/trailing SP/HTAB trimmed.
    pub value: Span,
}

impl HeaderSpan {
    /// Field name bytes.
    pub fn name(self, buf: &[u8]) -> &[u8] {
        self.name.get(buf)
    }

    /// Field value bytes.
    pub fn value(self, buf: &[u8]) -> &[u8] {
        self.value.get(buf)
    }
}

/// Value of the first header named `name` (ASCII case-insensitive).
///
/// Why: routing and auth need a few headers by name without a map.
pub fn find_header<'a>(buf: &'a [u8], headers: &[HeaderSpan], name: &[u8]) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name(buf).eq_ignore_ascii_case(name))
        .map(|h| h.value(buf))
}

/// HTTP version of a message; only 1.0 and 1.1 are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

impl Version {
    /// The version as it appears on the wire.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Version::Http10 => b"HTTP/1.0",
            Version::Http11 => b"HTTP/1.1",
        }
    }
}

/// How a request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: neither Content-Length nor Transfer-Encoding.
    None,
    /// Exactly this many bytes follow the head (may be 0).
    Length(u64),
    /// Chunked body; scan it with `chunked::ChunkedScanner`.
    Chunked,
}

/// How a response body is delimited (RFC 9112 §6.3), given the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body: HEAD request, 1xx, 204 or 304.
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// Chunked body; scan it with `chunked::ChunkedScanner`.
    Chunked,
    /// Body runs until the backend closes; the client connection must close
    /// after it too.
    UntilClose,
    /// 2xx to CONNECT: the connection becomes a byte tunnel after the head.
    Tunnel,
}

/// Which of the four request-target forms (RFC 9112 §3.2) was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`
    Origin,
    /// `http://authority/path?query`
    Absolute,
    /// `host:port`, CONNECT only.
    Authority,
    /// `*`, OPTIONS only.
    Asterisk,
}

/// Tokens seen in the Connection header field(s), case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionTokens {
    /// `close`
    pub close: bool,
    /// `keep-alive`
    pub keep_alive: bool,
    /// `upgrade`
    pub upgrade: bool,
    /// Any other token: names a header that is hop-by-hop for this message.
    pub other: bool,
}

/// Result of parsing a possibly incomplete head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// The head is complete.
    Complete(T),
    /// More bytes are needed; parse again from the start when they arrive.
    Partial,
}

/// Why a head was rejected.
///
/// Why: each variant maps to one response status and always to closing the
/// connection, since framing can no longer be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Head longer than `max_head` or more than `max_headers` fields: 431
    /// for requests, 502 for responses.
    TooLarge,
    /// Malformed or ambiguous message: 400 for requests, 502 for responses.
    Bad(&'static str),
    /// Well-formed `HTTP/x.y` other than 1.0 or 1.1 (including 1.2): 505 for
    /// requests, 502 for responses. Garbage versions are `Bad`.
    Version,
}

impl HeadError {
    /// Status code to answer a client whose request failed this way.
    pub fn request_status(self) -> u16 {
        match self {
            HeadError::TooLarge => 431,
            HeadError::Bad(_) => 400,
            HeadError::Version => 505,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge => f.write_str("head too large"),
            HeadError::Bad(reason) => f.write_str(reason),
            HeadError::Version => f.write_str("unsupported HTTP version"),
        }
    }
}

impl std::error::Error for HeadError {}

/// A parsed, validated request head: offsets into the parse buffer plus the
/// facts the proxy needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    /// Method token (case-sensitive, e.g. `GET`).
    pub method: Span,
    /// Request-target exactly as received.
    pub target: Span,
    /// Form of the request-target.
    pub target_form: TargetForm,
    /// Path and query part of the target (origin-form: the whole target;
    /// absolute-form: after the authority, may be empty; else empty).
    pub path: Span,
    /// Protocol version.
    pub version: Version,
    /// Offset of the first header line (just past the request line's CRLF).
    pub headers_start: usize,
    /// Number of entries filled in the caller's `HeaderSpan` array.
    pub header_count: usize,
    /// Head length including the final CRLF; the body (or the next pipelined
    /// request) starts here.
    pub head_len: usize,
    /// Body framing.
    pub framing: BodyFraming,
    /// Whether the client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// HTTP/1.1 request with `Connection: upgrade` and an Upgrade header.
    pub upgrade: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expect_continue: bool,
    /// Host to route on: the authority of an absolute-form or authority-form
    /// target, else the Host header value. `None` only for HTTP/1.0 without
    /// Host.
    pub host: Option<Span>,
    /// Connection header tokens.
    pub connection: ConnectionTokens,
    /// Index of the last X-Forwarded-For header, for the rewriter.
    pub xff_last: Option<usize>,
}

impl RequestHead {
    /// Method bytes.
    pub fn method<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        self.method.get(buf)
    }

    /// Request-target bytes.
    pub fn target<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        self.target.get(buf)
    }

    /// Path-and-query bytes (see [`RequestHead::path`]).
    pub fn path<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        self.path.get(buf)
    }

    /// Host bytes (see [`RequestHead::host`]).
    pub fn host<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        self.host.map(|s| s.get(buf))
    }

    /// The header spans that belong to this head.
    pub fn headers<'h>(&self, headers: &'h [HeaderSpan]) -> &'h [HeaderSpan] {
        headers.get(..self.header_count).unwrap_or(&[])
    }
}

/// A parsed, validated response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// Protocol version.
    pub version: Version,
    /// Status code, 100..=599.
    pub status: u16,
    /// Offset of the status line (after any leading empty lines).
    pub start: usize,
    /// Offset of the first header line.
    pub headers_start: usize,
    /// Number of entries filled in the caller's `HeaderSpan` array.
    pub header_count: usize,
    /// Head length including the final CRLF.
    pub head_len: usize,
    /// Body framing, given the request method and status.
    pub framing: ResponseFraming,
    /// Whether the backend connection may be reused after this response.
    /// False for `UntilClose`, `Tunnel`, 101, conflicting framing, and per
    /// the version/Connection rules.
    pub keep_alive: bool,
    /// Both Content-Length and Transfer-Encoding were present: Content-Length
    /// was ignored and both connections must close after this response
    /// (RFC 9112 §6.3 point 3).
    pub conflicting_framing: bool,
    /// Connection header tokens.
    pub connection: ConnectionTokens,
}

impl ResponseHead {
    /// 1xx other than 101: forward it, then parse the next head.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// 101 Switching Protocols: after the head the connection is a tunnel.
    pub fn is_switching_protocols(&self) -> bool {
        self.status == 101
    }

    /// The header spans that belong to this head.
    pub fn headers<'h>(&self, headers: &'h [HeaderSpan]) -> &'h [HeaderSpan] {
        headers.get(..self.header_count).unwrap_or(&[])
    }
}

/// Header names the parser and rewriter treat specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    Host,
    ContentLength,
    TransferEncoding,
    Expect,
    Xff,
    Xfp,
    Xfh,
    Other,
}

/// Classifies a header name without allocating (length, then ASCII
/// case-insensitive compare).
pub(super) fn classify(name: &[u8]) -> Kind {
    let is = |lit: &[u8]| name.eq_ignore_ascii_case(lit);
    match name.len() {
        2 if is(b"te") => Kind::Te,
        4 if is(b"host") => Kind::Host,
        6 if is(b"expect") => Kind::Expect,
        7 if is(b"upgrade") => Kind::Upgrade,
        7 if is(b"trailer") => Kind::Trailer,
        10 if is(b"connection") => Kind::Connection,
        10 if is(b"keep-alive") => Kind::KeepAlive,
        14 if is(b"content-length") => Kind::ContentLength,
        15 if is(b"x-forwarded-for") => Kind::Xff,
        16 if is(b"proxy-connection") => Kind::ProxyConnection,
        16 if is(b"x-forwarded-host") => Kind::Xfh,
        17 if is(b"transfer-encoding") => Kind::TransferEncoding,
        17 if is(b"x-forwarded-proto") => Kind::Xfp,
        _ => Kind::Other,
    }
}

/// Iterates the non-empty elements of a comma-separated field value, OWS
/// trimmed (RFC 9110 §5.6.1).
pub(super) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// Parses a request head from the start of `buf`.
///
/// Fills `headers[..head.header_count]` with offsets into `buf`. On
/// `Partial`, read more and call again with the grown buffer. Everything
/// after `head_len` is body or the next pipelined request. Allocates
/// nothing.
pub fn parse_request(
    buf: &[u8],
    headers: &mut [HeaderSpan],
    limits: &Limits,
) -> Result<Status<RequestHead>, HeadError> {
    let max_head = limits.max_head.min(u32::MAX as usize);
    let window = buf.get(..max_head).unwrap_or(buf);
    let max_headers = limits.max_headers.min(headers.len()).min(MAX_HEADERS_CAP);
    let mut raw: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS_CAP] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS_CAP];
    let raw = raw.get_mut(..max_headers).unwrap_or(&mut []);
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(window, raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if window.len() >= max_head {
                Err(HeadError::TooLarge)
            } else {
                Ok(Status::Partial)
            };
        }
        Err(e) => return Err(request_error(window, e)),
    };
    let head = window.get(..head_len).unwrap_or(window);
    check_line_endings(head, false).map_err(HeadError::Bad)?;

    const INTERNAL: HeadError = HeadError::Bad("unparseable request line");
    let method = req
        .method
        .and_then(|m| span_of(buf, m.as_bytes()))
        .ok_or(INTERNAL)?;
    let target = req
        .path
        .and_then(|p| span_of(buf, p.as_bytes()))
        .ok_or(INTERNAL)?;
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(HeadError::Version),
    };
    let headers_start = line_after(head, target.end as usize).ok_or(INTERNAL)?;
    let facts = collect(buf, req.headers, headers)?;

    let method_bytes = method.get(buf);
    let t = classify_target(method_bytes, target.get(buf)).map_err(HeadError::Bad)?;
    let rel = |(s, e): (usize, usize)| Span {
        start: target.start.saturating_add(s as u32),
        end: target.start.saturating_add(e as u32),
    };

    // Framing (RFC 9112 §6.1, §6.3).
    let framing = if facts.te_seen {
        if facts.cl_seen {
            return Err(HeadError::Bad("both Content-Length and Transfer-Encoding"));
        }
        if version == Version::Http10 {
            return Err(HeadError::Bad("Transfer-Encoding in HTTP/1.0 request"));
        }
        if facts.te_invalid || facts.te_count == 0 {
            return Err(HeadError::Bad("invalid Transfer-Encoding"));
        }
        if facts.te_chunked > 1 {
            return Err(HeadError::Bad("chunked applied more than once"));
        }
        if facts.te_count != facts.te_chunked {
            return Err(HeadError::Bad("unsupported transfer coding"));
        }
        BodyFraming::Chunked
    } else if facts.cl_seen {
        match facts.content_length() {
            Ok(n) => BodyFraming::Length(n),
            Err(reason) => return Err(HeadError::Bad(reason)),
        }
    } else {
        BodyFraming::None
    };

    // Host (RFC 9112 §3.2).
    if facts.host_count > 1 {
        return Err(HeadError::Bad("multiple Host headers"));
    }
    if facts.host_invalid {
        return Err(HeadError::Bad("invalid Host header"));
    }
    if facts.host_count == 0 && version == Version::Http11 {
        return Err(HeadError::Bad("missing Host header"));
    }
    let host = match t.authority {
        Some(a) => Some(rel(a)),
        None => facts.host,
    };

    let conn = facts.conn;
    let keep_alive = match version {
        Version::Http11 => !conn.close,
        Version::Http10 => conn.keep_alive && !conn.close,
    };
    let is11 = version == Version::Http11;
    Ok(Status::Complete(RequestHead {
        method,
        target,
        target_form: t.form,
        path: rel(t.path),
        version,
        headers_start,
        header_count: facts.count,
        head_len,
        framing,
        keep_alive,
        upgrade: is11 && conn.upgrade && facts.upgrade_header,
        expect_continue: is11 && facts.expect_continue,
        host,
        connection: conn,
        xff_last: facts.xff_last,
    }))
}

/// Parses a response head from the start of `buf`.
///
/// `request_method` is the method of the request this answers; it decides
/// framing for HEAD and CONNECT. Errors should become a 502 to the client and
/// a closed backend connection.
pub fn parse_response(
    buf: &[u8],
    headers: &mut [HeaderSpan],
    limits: &Limits,
    request_method: &[u8],
) -> Result<Status<ResponseHead>, HeadError> {
    let max_head = limits.max_head.min(u32::MAX as usize);
    let window = buf.get(..max_head).unwrap_or(buf);
    let max_headers = limits.max_headers.min(headers.len()).min(MAX_HEADERS_CAP);
    let mut raw: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS_CAP] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS_CAP];
    let raw = raw.get_mut(..max_headers).unwrap_or(&mut []);
    let mut resp = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let head_len = match config.parse_response_with_uninit_headers(&mut resp, window, raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if window.len() >= max_head {
                Err(HeadError::TooLarge)
            } else {
                Ok(Status::Partial)
            };
        }
        Err(e) => return Err(response_error(window, e)),
    };
    let head = window.get(..head_len).unwrap_or(window);
    check_line_endings(head, false).map_err(HeadError::Bad)?;

    let version = match resp.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(HeadError::Version),
    };
    let status = resp.code.unwrap_or(0);
    if !(100..=599).contains(&status) {
        return Err(HeadError::Bad("invalid status code"));
    }
    let start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(0);
    let headers_start = line_after(head, start).ok_or(HeadError::Bad("invalid status line"))?;
    let facts = collect(buf, resp.headers, headers)?;

    let mut conflicting_framing = false;
    let bodiless = request_method == b"HEAD" || status < 200 || status == 204 || status == 304;
    let framing = if bodiless {
        ResponseFraming::None
    } else if request_method == b"CONNECT" && (200..300).contains(&status) {
        ResponseFraming::Tunnel
    } else if facts.te_seen {
        if version == Version::Http10 {
            return Err(HeadError::Bad("Transfer-Encoding in HTTP/1.0 response"));
        }
        if facts.te_invalid || facts.te_count == 0 {
            return Err(HeadError::Bad("invalid Transfer-Encoding"));
        }
        if facts.te_chunked > 1 {
            return Err(HeadError::Bad("chunked applied more than once"));
        }
        conflicting_framing = facts.cl_seen;
        if facts.te_last_chunked {
            ResponseFraming::Chunked
        } else {
            ResponseFraming::UntilClose
        }
    } else if facts.cl_seen {
        match facts.content_length() {
            Ok(n) => ResponseFraming::Length(n),
            Err(reason) => return Err(HeadError::Bad(reason)),
        }
    } else {
        ResponseFraming::UntilClose
    };

    let conn = facts.conn;
    let version_keep = match version {
        Version::Http11 => !conn.close,
        Version::Http10 => conn.keep_alive && !conn.close,
    };
    let keep_alive = version_keep
        && !conflicting_framing
        && status != 101
        && !matches!(
            framing,
            ResponseFraming::UntilClose | ResponseFraming::Tunnel
        );
    Ok(Status::Complete(ResponseHead {
        version,
        status,
        start,
        headers_start,
        header_count: facts.count,
        head_len,
        framing,
        keep_alive,
        conflicting_framing,
        connection: conn,
    }))
}

/// What one pass over the header fields found.
#[derive(Default)]
struct Facts {
    count: usize,
    cl_seen: bool,
    cl_value: Option<u64>,
    cl_error: Option<&'static str>,
    te_seen: bool,
    te_count: usize,
    te_chunked: usize,
    te_last_chunked: bool,
    te_invalid: bool,
    host_count: usize,
    host: Option<Span>,
    host_invalid: bool,
    conn: ConnectionTokens,
    upgrade_header: bool,
    expect_continue: bool,
    xff_last: Option<usize>,
}

impl Facts {
    fn content_length(&self) -> Result<u64, &'static str> {
        match (self.cl_error, self.cl_value) {
            (Some(e), _) => Err(e),
            (None, Some(n)) => Ok(n),
            (None, None) => Err("invalid Content-Length"),
        }
    }
}

/// Records header offsets into `out` and gathers framing/connection facts.
fn collect(
    buf: &[u8],
    parsed: &[httparse::Header<'_>],
    out: &mut [HeaderSpan],
) -> Result<Facts, HeadError> {
    let mut f = Facts::default();
    if parsed.len() > out.len() {
        return Err(HeadError::TooLarge);
    }
    for (i, (h, slot)) in parsed.iter().zip(out.iter_mut()).enumerate() {
        let name = h.name.as_bytes();
        let value = h.value;
        let (Some(name_span), Some(value_span)) = (span_of(buf, name), span_of(buf, value)) else {
            return Err(HeadError::Bad("unparseable header"));
        };
        *slot = HeaderSpan {
            name: name_span,
            value: value_span,
        };
        f.count = i + 1;
        match classify(name) {
            Kind::ContentLength => {
                f.cl_seen = true;
                match parse_content_length(value) {
                    Ok(n) => match f.cl_value {
                        Some(prev) if prev != n => {
                            f.cl_error = Some("conflicting Content-Length values");
                        }
                        _ => f.cl_value = Some(n),
                    },
                    Err(e) => f.cl_error = Some(e),
                }
            }
            Kind::TransferEncoding => {
                f.te_seen = true;
                for elem in list_elements(value) {
                    let mut parts = elem.splitn(2, |&b| b == b';');
                    let coding = trim_ows(parts.next().unwrap_or(&[]));
                    let has_params = parts.next().is_some();
                    if coding.is_empty() || !coding.iter().all(|&b| is_tchar(b)) {
                        f.te_invalid = true;
                    }
                    f.te_count += 1;
                    if coding.eq_ignore_ascii_case(b"chunked") {
                        f.te_chunked += 1;
                        f.te_last_chunked = true;
                        f.te_invalid |= has_params;
                    } else {
                        f.te_last_chunked = false;
                    }
                }
            }
            Kind::Host => {
                f.host_count += 1;
                f.host = Some(value_span);
                f.host_invalid |= !valid_host(value);
            }
            Kind::Connection => {
                for tok in list_elements(value) {
                    if tok.eq_ignore_ascii_case(b"close") {
                        f.conn.close = true;
                    } else if tok.eq_ignore_ascii_case(b"keep-alive") {
                        f.conn.keep_alive = true;
                    } else if tok.eq_ignore_ascii_case(b"upgrade") {
                        f.conn.upgrade = true;
                    } else {
                        f.conn.other = true;
                    }
                }
            }
            Kind::Upgrade => f.upgrade_header = true,
            Kind::Expect => f.expect_continue |= value.eq_ignore_ascii_case(b"100-continue"),
            Kind::Xff => f.xff_last = Some(i),
            _ => {}
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests;
