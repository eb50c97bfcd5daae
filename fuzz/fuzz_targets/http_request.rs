//! Request head parse + rewrite on arbitrary bytes.
//!
//! Invariants beyond "no panic":
//! - a complete head's spans lie inside it, and parsing only its first
//!   `head_len` bytes gives the same head (what follows is the body);
//! - every shorter prefix of a complete head is `Partial`: how the bytes
//!   were split into reads never changes the verdict;
//! - the rewritten head parses again, completely, with the same method,
//!   version, body framing and Host, and without Transfer-Encoding or
//!   Content-Length appearing or vanishing (no smuggling through the rewrite).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use ringmesh::http::chunked::ChunkedScanner;
use ringmesh::http::head::{
    parse_request, BodyFraming, HeaderSpan, Limits, RequestHead, Status, TargetForm,
    MAX_HEADERS_CAP,
};
use ringmesh::http::rewrite::{write_request, RequestRewrite};

const SPANS: usize = 100;

fn parse(buf: &[u8], spans: &mut [HeaderSpan], limits: &Limits) -> Option<RequestHead> {
    match parse_request(buf, spans, limits) {
        Ok(Status::Complete(h)) => Some(h),
        Ok(Status::Partial) | Err(_) => None,
    }
}

/// Without leading/trailing SP and HTAB (RFC 9110 OWS).
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn count(buf: &[u8], head: &RequestHead, spans: &[HeaderSpan], name: &[u8]) -> usize {
    head.headers(spans)
        .iter()
        .filter(|h| h.name(buf).eq_ignore_ascii_case(name))
        .count()
}

/// The forwarded head carries no hop-by-hop field of the client's, exactly
/// one X-Forwarded-Proto (ours) and one X-Forwarded-For ending in the
/// client address, and at most the one Connection field the proxy writes.
#[allow(clippy::too_many_arguments)]
fn check_hop_by_hop(
    buf: &[u8],
    head: &RequestHead,
    spans: &[HeaderSpan],
    out: &[u8],
    re: &RequestHead,
    ospans: &[HeaderSpan],
    o: &RequestRewrite<'_>,
    upgrade: bool,
) {
    for name in [&b"te"[..], b"trailer", b"keep-alive", b"proxy-connection"] {
        assert_eq!(
            count(out, re, ospans, name),
            0,
            "{} forwarded",
            String::from_utf8_lossy(name)
        );
    }
    assert!(count(out, re, ospans, b"connection") <= 1);
    if !upgrade {
        assert_eq!(count(out, re, ospans, b"upgrade"), 0);
    }
    assert_eq!(count(out, re, ospans, b"x-forwarded-proto"), 1);
    assert!(count(out, re, ospans, b"x-forwarded-host") <= 1);
    let ip = o.client_ip.to_string();
    let last_xff = re
        .headers(ospans)
        .iter()
        .rev()
        .find(|h| h.name(out).eq_ignore_ascii_case(b"x-forwarded-for"))
        .map(|h| h.value(out))
        .expect("X-Forwarded-For written");
    assert!(
        last_xff.ends_with(ip.as_bytes()),
        "XFF {:?}",
        String::from_utf8_lossy(last_xff)
    );
    // Fields the client's Connection header nominates are not forwarded
    // (framing fields and the ones the proxy writes itself excepted).
    const KEEP: &[&[u8]] = &[
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"upgrade",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
    ];
    for h in head.headers(spans) {
        if !h.name(buf).eq_ignore_ascii_case(b"connection") {
            continue;
        }
        for tok in h.value(buf).split(|&b| b == b',') {
            let tok = trim_ows(tok);
            if tok.is_empty() || KEEP.iter().any(|k| tok.eq_ignore_ascii_case(k)) {
                continue;
            }
            assert_eq!(
                count(out, re, ospans, tok),
                0,
                "nominated {:?} forwarded",
                String::from_utf8_lossy(tok)
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Small limits too, so the TooLarge paths are reached with short inputs.
    let limits = [
        Limits::default(),
        Limits {
            max_head: 128,
            max_headers: 4,
        },
    ];
    for lim in &limits {
        let mut spans = [HeaderSpan::default(); SPANS];
        let res = parse_request(data, &mut spans, lim);
        let Ok(Status::Complete(head)) = res else {
            continue;
        };
        assert!(head.head_len <= data.len() && head.head_len <= lim.max_head);
        assert!(head.header_count <= lim.max_headers);
        assert!(data[..head.head_len].ends_with(b"\r\n\r\n"));
        for s in [head.method, head.target, head.path] {
            assert!(s.start <= s.end && (s.end as usize) <= head.head_len);
        }
        if let Some(h) = head.host {
            assert!((h.end as usize) <= head.head_len);
        }
        for h in head.headers(&spans) {
            assert!((h.value.end as usize) <= head.head_len);
        }

        // A chunked body after the head goes through the scanner as the
        // data plane would feed it (smuggling payloads put framing there).
        if head.framing == BodyFraming::Chunked {
            let body = &data[head.head_len..];
            let mut sc = ChunkedScanner::new();
            if let Ok(p) = sc.advance(body) {
                assert!(p.consumed <= body.len());
                assert!(p.done || p.consumed == body.len());
            }
        }

        // Trailing bytes do not change the head.
        let mut spans2 = [HeaderSpan::default(); SPANS];
        let again = parse(&data[..head.head_len], &mut spans2, lim);
        assert_eq!(again, Some(head), "head depends on the bytes after it");

        // Segmentation independence: every shorter prefix is Partial.
        let lens: Vec<usize> = if head.head_len <= 512 {
            (1..head.head_len).collect()
        } else {
            (1..head.head_len).step_by(head.head_len / 64).collect()
        };
        for k in lens {
            let r = parse_request(&data[..k], &mut spans2, lim);
            assert_eq!(
                r,
                Ok(Status::Partial),
                "prefix of {k} bytes of a complete {}-byte head",
                head.head_len
            );
        }

        // Rewrite with two option sets; the output must re-parse.
        let opts = [
            RequestRewrite {
                client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                proto: "http",
                forward_upgrade: false,
                close_upstream: false,
                client_cert: None,
            },
            RequestRewrite {
                client_ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
                proto: "https",
                forward_upgrade: true,
                close_upstream: true,
                client_cert: Some("CN=fuzz, O=ringmesh"),
            },
        ];
        for o in &opts {
            let mut out = Vec::new();
            write_request(&mut out, data, &head, &spans, o);
            let mut ospans = [HeaderSpan::default(); MAX_HEADERS_CAP];
            // The rewrite adds up to 4 fields and may grow the head: a head with
            // the maximum number of fields has more than that once rewritten.
            let big = Limits {
                max_head: 1 << 20,
                max_headers: MAX_HEADERS_CAP,
            };
            let re = match parse_request(&out, &mut ospans, &big) {
                Ok(Status::Complete(h)) => h,
                other => panic!(
                    "rewritten head does not parse: {other:?}\n{:?}",
                    String::from_utf8_lossy(&out)
                ),
            };
            assert_eq!(re.head_len, out.len(), "rewritten head has trailing bytes");
            assert_eq!(re.method(&out), head.method(data));
            assert_eq!(re.version, head.version);
            assert_eq!(
                re.framing,
                head.framing,
                "{:?}",
                String::from_utf8_lossy(&out)
            );
            assert_eq!(re.host(&out), head.host(data), "Host changed");
            if head.target_form != TargetForm::Absolute {
                assert_eq!(re.target(&out), head.target(data));
            }
            for name in [&b"content-length"[..], b"transfer-encoding"] {
                assert_eq!(
                    count(&out, &re, &ospans, name),
                    count(data, &head, &spans, name),
                    "framing header count changed"
                );
            }
            let upgrade = head.upgrade && o.forward_upgrade;
            assert_eq!(re.upgrade, upgrade);
            // The backend is asked to close exactly when the proxy says so.
            assert_eq!(re.keep_alive, !o.close_upstream || upgrade);
            check_hop_by_hop(data, &head, &spans, &out, &re, &ospans, o, upgrade);
        }
    }
});
