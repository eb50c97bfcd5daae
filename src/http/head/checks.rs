//! Syntax checks behind head parsing: line endings, field values, request
//! targets, and error diagnosis.
//!
//! Why: kept apart from the parse flow so each rule is small and testable.

use super::{HeadError, Span, TargetForm};

/// `s` without leading and trailing SP/HTAB (OWS).
pub(super) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// RFC 9110 `tchar`: the bytes allowed in tokens and field names.
pub(super) fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+'
        | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// Parses a Content-Length value: 1*DIGIT, or a list of identical such
/// values (RFC 9110 §8.6), without sign, inner spaces or overflow.
pub(super) fn parse_content_length(value: &[u8]) -> Result<u64, &'static str> {
    let mut result: Option<u64> = None;
    for elem in value.split(|&b| b == b',') {
        let elem = trim_ows(elem);
        if elem.is_empty() {
            return Err("invalid Content-Length");
        }
        let mut n: u64 = 0;
        for &b in elem {
            if !b.is_ascii_digit() {
                return Err("invalid Content-Length");
            }
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(b - b'0')))
                .ok_or("Content-Length overflow")?;
        }
        match result {
            Some(prev) if prev != n => return Err("conflicting Content-Length values"),
            _ => result = Some(n),
        }
    }
    result.ok_or("invalid Content-Length")
}

/// Validated request-target, offsets relative to the target.
pub(super) struct Target {
    pub(super) form: TargetForm,
    pub(super) path: (usize, usize),
    pub(super) authority: Option<(usize, usize)>,
}

/// Checks the request-target against the method (RFC 9112 §3.2).
pub(super) fn classify_target(method: &[u8], t: &[u8]) -> Result<Target, &'static str> {
    if t.is_empty() {
        return Err("empty request-target");
    }
    if t.iter().any(|&b| !(0x21..=0x7e).contains(&b) || b == b'#') {
        return Err("invalid character in request-target");
    }
    let len = t.len();
    if method == b"CONNECT" {
        return if valid_authority_form(t) {
            Ok(Target {
                form: TargetForm::Authority,
                path: (len, len),
                authority: Some((0, len)),
            })
        } else {
            Err("CONNECT requires an authority-form target")
        };
    }
    if t == b"*" {
        return if method == b"OPTIONS" {
            Ok(Target {
                form: TargetForm::Asterisk,
                path: (len, len),
                authority: None,
            })
        } else {
            Err("asterisk-form target outside OPTIONS")
        };
    }
    if t.first() == Some(&b'/') {
        return Ok(Target {
            form: TargetForm::Origin,
            path: (0, len),
            authority: None,
        });
    }
    let rest = strip_prefix_ci(t, b"http://")
        .or_else(|| strip_prefix_ci(t, b"https://"))
        .ok_or("invalid request-target")?;
    let auth_start = len - rest.len();
    let auth_len = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let authority = rest.get(..auth_len).unwrap_or(&[]);
    if authority.is_empty() || !valid_host(authority) {
        return Err("invalid authority in request-target");
    }
    Ok(Target {
        form: TargetForm::Absolute,
        path: (auth_start + auth_len, len),
        authority: Some((auth_start, auth_start + auth_len)),
    })
}

/// `s` without `prefix`, compared ASCII case-insensitively.
fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2); empty is allowed (Host may be
/// empty), userinfo, paths and whitespace are not.
pub(super) fn valid_host(v: &[u8]) -> bool {
    let (host_ok, rest) = if let Some(inner) = v.strip_prefix(b"[") {
        match inner.iter().position(|&b| b == b']') {
            Some(close) => {
                let lit = inner.get(..close).unwrap_or(&[]);
                let ok = !lit.is_empty()
                    && lit
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
                (ok, inner.get(close + 1..).unwrap_or(&[]))
            }
            None => return false,
        }
    } else {
        let end = v.iter().position(|&b| b == b':').unwrap_or(v.len());
        let name = v.get(..end).unwrap_or(&[]);
        let ok = name.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                )
        });
        (ok, v.get(end..).unwrap_or(&[]))
    };
    host_ok
        && match rest.split_first() {
            None => true,
            Some((b':', port)) => port.iter().all(u8::is_ascii_digit),
            Some(_) => false,
        }
}

/// `host ":" port` with a non-empty host and port (RFC 9112 §3.2.3).
fn valid_authority_form(t: &[u8]) -> bool {
    match t.iter().rposition(|&b| b == b':') {
        Some(colon) => {
            let port = t.get(colon + 1..).unwrap_or(&[]);
            colon > 0 && !port.is_empty() && valid_host(t)
        }
        None => false,
    }
}

/// Offset just past the first LF at or after `from`.
pub(super) fn line_after(head: &[u8], from: usize) -> Option<usize> {
    let rest = head.get(from..)?;
    memchr::memchr(b'\n', rest).map(|i| from + i + 1)
}

/// Span of `part` inside `buf`, by pointer arithmetic (no unsafe needed).
pub(super) fn span_of(buf: &[u8], part: &[u8]) -> Option<Span> {
    let start = (part.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    if end > buf.len() {
        return None;
    }
    Some(Span {
        start: u32::try_from(start).ok()?,
        end: u32::try_from(end).ok()?,
    })
}

/// Rejects NUL, CR not followed by LF, and LF not preceded by CR.
///
/// Why: `httparse` accepts bare LF as a line ending, which lets a proxy and
/// a backend disagree on where a header ends. `allow_trailing_cr` tolerates
/// a final CR whose LF has not arrived yet.
pub(super) fn check_line_endings(head: &[u8], allow_trailing_cr: bool) -> Result<(), &'static str> {
    for i in memchr::memchr3_iter(b'\r', b'\n', 0, head) {
        match head.get(i) {
            Some(b'\r') => match head.get(i + 1) {
                Some(b'\n') => {}
                None if allow_trailing_cr => {}
                _ => return Err("bare CR in head"),
            },
            Some(b'\n') => {
                if i == 0 || head.get(i - 1) != Some(&b'\r') {
                    return Err("bare LF in head");
                }
            }
            _ => return Err("NUL in head"),
        }
    }
    Ok(())
}

/// Explains an `httparse` error on a request with a specific reason.
pub(super) fn request_error(buf: &[u8], e: httparse::Error) -> HeadError {
    if let Err(reason) = check_line_endings(head_prefix(buf), true) {
        return HeadError::Bad(reason);
    }
    let line = first_line(buf);
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        httparse::Error::Version | httparse::Error::NewLine => {
            let version = line.rsplit(|&b| b == b' ').next().unwrap_or(&[]);
            match version {
                b"HTTP/1.0" | b"HTTP/1.1" => HeadError::Bad("malformed request line"),
                [b'H', b'T', b'T', b'P', b'/', d, rest @ ..]
                    if d.is_ascii_digit() && matches!(rest, [] | [b'.'] | [b'.', b'0'..=b'9']) =>
                {
                    HeadError::Version
                }
                _ if e == httparse::Error::NewLine => HeadError::Bad("malformed request line"),
                _ => HeadError::Bad("invalid HTTP version"),
            }
        }
        httparse::Error::Token => {
            let method = line.split(|&b| b == b' ').next().unwrap_or(&[]);
            if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
                HeadError::Bad("invalid method")
            } else {
                HeadError::Bad("invalid request-target")
            }
        }
        httparse::Error::HeaderName => HeadError::Bad(diagnose_header_name(buf)),
        httparse::Error::HeaderValue => HeadError::Bad("invalid character in header value"),
        httparse::Error::Status => HeadError::Bad("malformed request line"),
    }
}

/// Explains an `httparse` error on a response.
pub(super) fn response_error(buf: &[u8], e: httparse::Error) -> HeadError {
    if let Err(reason) = check_line_endings(head_prefix(buf), true) {
        return HeadError::Bad(reason);
    }
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        httparse::Error::Version => HeadError::Version,
        httparse::Error::HeaderName => HeadError::Bad(diagnose_header_name(buf)),
        httparse::Error::HeaderValue => HeadError::Bad("invalid character in header value"),
        _ => HeadError::Bad("malformed status line"),
    }
}

/// `buf` up to and including the first CRLFCRLF, or all of it.
fn head_prefix(buf: &[u8]) -> &[u8] {
    match memchr::memmem::find(buf, b"\r\n\r\n") {
        Some(i) => buf.get(..i + 4).unwrap_or(buf),
        None => buf,
    }
}

/// First non-empty line of `buf`, without its line ending.
fn first_line(buf: &[u8]) -> &[u8] {
    buf.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .find(|l| !l.is_empty())
        .unwrap_or(&[])
}

/// Finds which header line broke `httparse`'s name rules.
fn diagnose_header_name(buf: &[u8]) -> &'static str {
    let mut lines = buf
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .skip_while(|l| l.is_empty());
    lines.next(); // start line
    for line in lines {
        if line.is_empty() {
            break;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return "obs-fold (line folding) in header";
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue; // possibly a partial last line
        };
        let name = line.get(..colon).unwrap_or(&[]);
        if name.is_empty() {
            return "empty header name";
        }
        if matches!(name.last(), Some(b' ' | b'\t')) {
            return "whitespace between header name and colon";
        }
        if !name.iter().all(|&b| is_tchar(b)) {
            return "invalid character in header name";
        }
    }
    "invalid header name"
}
