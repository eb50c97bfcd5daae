//! One access log line from a [`Record`]: JSON or the combined format.
//!
//! Pure: bytes in, bytes appended to a caller's buffer, nothing allocated.
//! Every field a client controls (method, target, headers, SNI) is escaped
//! so that no byte it sends can end a line or a string early: JSON escapes
//! `"`, `\` and every control character, and replaces invalid UTF-8 with
//! U+FFFD (the output is always valid UTF-8, hence valid JSON); the
//! combined format escapes `"`, `\`, control bytes and every byte >= 0x7f
//! as `\xHH`, as nginx does.

use std::io::Write as _;
use std::net::SocketAddr;

/// What kind of connection a line describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One HTTP request and its response.
    Http,
    /// One tcp connection (written when it closes).
    Tcp,
}

/// Everything one line says. Client-controlled fields are raw bytes.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Wall-clock time of the end of the exchange, in ms since the Unix epoch.
    pub time_ms: u64,
    pub kind: Kind,
    /// The route's name (`-` when no route matched).
    pub route: &'a str,
    pub client: SocketAddr,
    pub method: &'a [u8],
    pub target: &'a [u8],
    /// `HTTP/1.1`, `HTTP/1.0`, or `tcp`.
    pub protocol: &'a str,
    /// 0 when no response was sent (a tcp connection, a client that left).
    pub status: u16,
    /// Bytes received from the client (head and body).
    pub bytes_in: u64,
    /// Bytes sent to the client (head and body).
    pub bytes_out: u64,
    pub duration_us: u64,
    pub upstream: Option<SocketAddr>,
    /// From the start of the upstream connect to the first response byte.
    pub upstream_ttfb_us: Option<u64>,
    pub request_id: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub referer: Option<&'a [u8]>,
    /// Hook for the TLS layer: protocol version of the client connection.
    pub tls_version: Option<&'a str>,
    /// Hook for the TLS layer: server name the client asked for.
    pub sni: Option<&'a [u8]>,
    /// Why a tunnel (tcp connection or upgraded exchange) ended.
    pub close_reason: Option<&'a str>,
}

/// Appends one JSON object and a newline to `out`.
pub fn json(out: &mut Vec<u8>, r: &Record<'_>) {
    out.extend_from_slice(b"{\"time\":\"");
    rfc3339(out, r.time_ms);
    out.extend_from_slice(b"\",\"kind\":\"");
    out.extend_from_slice(match r.kind {
        Kind::Http => b"http",
        Kind::Tcp => b"tcp",
    });
    out.extend_from_slice(b"\",\"route\":");
    json_str(out, r.route.as_bytes());
    let _ = write!(out, ",\"client\":\"{}\"", r.client);
    if r.kind == Kind::Http {
        out.extend_from_slice(b",\"method\":");
        json_str(out, r.method);
        out.extend_from_slice(b",\"target\":");
        json_str(out, r.target);
    }
    out.extend_from_slice(b",\"protocol\":");
    json_str(out, r.protocol.as_bytes());
    let _ = write!(
        out,
        ",\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"duration_us\":{}",
        r.status, r.bytes_in, r.bytes_out, r.duration_us
    );
    match r.upstream {
        Some(a) => {
            let _ = write!(out, ",\"upstream\":\"{a}\"");
        }
        None => out.extend_from_slice(b",\"upstream\":null"),
    }
    match r.upstream_ttfb_us {
        Some(t) => {
            let _ = write!(out, ",\"upstream_ttfb_us\":{t}");
        }
        None => out.extend_from_slice(b",\"upstream_ttfb_us\":null"),
    }
    opt_field(out, b"request_id", r.request_id);
    if r.kind == Kind::Http {
        opt_field(out, b"user_agent", r.user_agent);
        opt_field(out, b"referer", r.referer);
    }
    opt_field(out, b"tls_version", r.tls_version.map(str::as_bytes));
    opt_field(out, b"sni", r.sni);
    opt_field(out, b"close_reason", r.close_reason.map(str::as_bytes));
    out.extend_from_slice(b"}\n");
}

fn opt_field(out: &mut Vec<u8>, name: &[u8], v: Option<&[u8]>) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name);
    out.extend_from_slice(b"\":");
    match v {
        Some(v) => json_str(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends `v` as a JSON string (quotes included).
pub fn json_str(out: &mut Vec<u8>, v: &[u8]) {
    out.push(b'"');
    for chunk in v.utf8_chunks() {
        json_escape_valid(out, chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice(b"\\ufffd");
        }
    }
    out.push(b'"');
}

/// Escapes valid UTF-8: runs of plain bytes are copied at once.
fn json_escape_valid(out: &mut Vec<u8>, v: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut run = 0;
    for (i, &b) in v.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(v.get(run..i).unwrap_or(&[]));
        run = i + 1;
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
    }
    out.extend_from_slice(v.get(run..).unwrap_or(&[]));
}

/// Appends one line in the combined format (nginx's and Apache's `combined`):
/// `client - - [time] "method target protocol" status bytes "referer" "user-agent"`,
/// where bytes is the response size sent to the client. A tcp connection
/// writes `"TCP"` as its request.
pub fn combined(out: &mut Vec<u8>, r: &Record<'_>) {
    let _ = write!(out, "{} - - [", r.client.ip());
    clf_time(out, r.time_ms);
    out.extend_from_slice(b"] \"");
    match r.kind {
        Kind::Http => {
            clf_escape(out, r.method);
            out.push(b' ');
            clf_escape(out, r.target);
            out.push(b' ');
            clf_escape(out, r.protocol.as_bytes());
        }
        Kind::Tcp => out.extend_from_slice(b"TCP"),
    }
    let _ = write!(out, "\" {} {} \"", r.status, r.bytes_out);
    clf_escape(out, r.referer.unwrap_or(b"-"));
    out.extend_from_slice(b"\" \"");
    clf_escape(out, r.user_agent.unwrap_or(b"-"));
    out.extend_from_slice(b"\"\n");
}

/// nginx's escaping for the combined format: `"`, `\`, and bytes outside
/// printable ASCII become `\xHH`.
fn clf_escape(out: &mut Vec<u8>, v: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut run = 0;
    for (i, &b) in v.iter().enumerate() {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            continue;
        }
        out.extend_from_slice(v.get(run..i).unwrap_or(&[]));
        run = i + 1;
        out.extend_from_slice(b"\\x");
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 0xf) as usize]);
    }
    out.extend_from_slice(v.get(run..).unwrap_or(&[]));
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

struct Parts {
    y: i64,
    mo: u32,
    d: u32,
    h: u64,
    mi: u64,
    s: u64,
    ms: u64,
}

fn parts(ms: u64) -> Parts {
    let secs = ms / 1000;
    let (y, mo, d) = civil((secs / 86_400) as i64);
    let sod = secs % 86_400;
    Parts {
        y,
        mo,
        d,
        h: sod / 3600,
        mi: sod % 3600 / 60,
        s: sod % 60,
        ms: ms % 1000,
    }
}

/// `2026-12-01T15:30:00.123Z`
fn rfc3339(out: &mut Vec<u8>, ms: u64) {
    let p = parts(ms);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        p.y, p.mo, p.d, p.h, p.mi, p.s, p.ms
    );
}

/// `01/Dec/2026:15:30:00 +0000`
fn clf_time(out: &mut Vec<u8>, ms: u64) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let p = parts(ms);
    let mon = MONTHS
        .get(p.mo.saturating_sub(1) as usize)
        .unwrap_or(&"Jan");
    let _ = write!(
        out,
        "{:02}/{mon}/{:04}:{:02}:{:02}:{:02} +0000",
        p.d, p.y, p.h, p.mi, p.s
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec<'a>(method: &'a [u8], target: &'a [u8]) -> Record<'a> {
        Record {
            time_ms: 1_764_603_000_123,
            kind: Kind::Http,
            route: "web",
            client: "127.0.0.1:5555".parse().unwrap(),
            method,
            target,
            protocol: "HTTP/1.1",
            status: 200,
            bytes_in: 10,
            bytes_out: 20,
            duration_us: 1234,
            upstream: Some("127.0.0.1:8080".parse().unwrap()),
            upstream_ttfb_us: Some(99),
            request_id: None,
            user_agent: Some(b"curl/8"),
            referer: None,
            tls_version: None,
            sni: None,
            close_reason: None,
        }
    }

    #[test]
    fn time_formats() {
        let mut o = Vec::new();
        rfc3339(&mut o, 1_764_603_000_123);
        assert_eq!(o, b"2025-12-01T15:30:00.123Z");
        o.clear();
        clf_time(&mut o, 951_782_400_000); // 2000-02-29 00:00:00
        assert_eq!(o, b"29/Feb/2000:00:00:00 +0000");
        o.clear();
        rfc3339(&mut o, 0);
        assert_eq!(o, b"1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn json_escapes_every_hostile_byte() {
        let mut o = Vec::new();
        json_str(&mut o, b"a\"b\\c\n\r\t\x00\x1f\x7f\xff\xc3\xa9\xe2\x82");
        assert_eq!(
            std::str::from_utf8(&o).unwrap(),
            "\"a\\\"b\\\\c\\n\\r\\t\\u0000\\u001f\\u007f\\ufffd\u{e9}\\ufffd\""
        );
    }

    #[test]
    fn json_line_is_one_valid_object() {
        let mut o = Vec::new();
        json(&mut o, &rec(b"G\"ET\n", b"/\xff\",\"status\":1"));
        assert_eq!(o.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["method"], "G\"ET\n");
        assert_eq!(v["target"], "/\u{fffd}\",\"status\":1");
        assert_eq!(v["upstream"], "127.0.0.1:8080");
        assert_eq!(v["request_id"], serde_json::Value::Null);
        assert_eq!(v["time"], "2025-12-01T15:30:00.123Z");
    }

    #[test]
    fn combined_line_escapes_quotes_and_controls() {
        let mut o = Vec::new();
        combined(&mut o, &rec(b"GET", b"/a\"b\n\xff"));
        assert_eq!(
            std::str::from_utf8(&o).unwrap(),
            "127.0.0.1 - - [01/Dec/2025:15:30:00 +0000] \"GET /a\\x22b\\x0A\\xFF HTTP/1.1\" 200 20 \"-\" \"curl/8\"\n"
        );
    }
}
