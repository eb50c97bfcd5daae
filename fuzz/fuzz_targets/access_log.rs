//! Access log lines: any bytes in the client-controlled fields (method,
//! target, user agent, referer, request id, SNI) and in the route name give
//! exactly one line that serde_json parses as an object whose string fields
//! are the inputs (invalid UTF-8 as U+FFFD), and one combined-format line
//! of printable ASCII with exactly the 6 quote-delimited parts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmesh::accesslog::format::{combined, json, Kind, Record};

fuzz_target!(|data: &[u8]| {
    // Seven fields separated by NUL bytes (the last one takes the rest).
    let mut parts = data.splitn(7, |&b| b == 0x00).collect::<Vec<_>>();
    while parts.len() < 7 {
        parts.push(b"");
    }
    let route = String::from_utf8_lossy(parts[6]);
    let r = Record {
        time_ms: u64::from_le_bytes(
            data.get(..8)
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 8]),
        ) % (400 * 365 * 86_400_000),
        kind: if data.first().is_some_and(|b| b & 1 == 1) {
            Kind::Tcp
        } else {
            Kind::Http
        },
        route: &route,
        client: "[::1]:1".parse().unwrap(),
        method: parts[0],
        target: parts[1],
        protocol: "HTTP/1.1",
        status: 200,
        bytes_in: data.len() as u64,
        bytes_out: u64::MAX,
        duration_us: 0,
        upstream: None,
        upstream_ttfb_us: Some(1),
        request_id: Some(parts[4]),
        user_agent: Some(parts[2]),
        referer: Some(parts[3]),
        tls_version: Some("TLSv1.3"),
        sni: Some(parts[5]),
        close_reason: None,
    };
    let mut out = Vec::new();
    json(&mut out, &r);
    assert_eq!(out.last(), Some(&b'\n'));
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
    let obj = v.as_object().expect("an object");
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if r.kind == Kind::Http {
        assert_eq!(obj["method"], lossy(parts[0]));
        assert_eq!(obj["target"], lossy(parts[1]));
        assert_eq!(obj["user_agent"], lossy(parts[2]));
        assert_eq!(obj["referer"], lossy(parts[3]));
    }
    assert_eq!(obj["request_id"], lossy(parts[4]));
    assert_eq!(obj["sni"], lossy(parts[5]));
    assert_eq!(obj["route"], route.as_ref());
    assert_eq!(obj["bytes_out"], u64::MAX);

    out.clear();
    combined(&mut out, &r);
    assert_eq!(out.last(), Some(&b'\n'));
    let line = &out[..out.len() - 1];
    assert!(line.iter().all(|b| (0x20..0x7f).contains(b)));
    assert_eq!(line.iter().filter(|&&b| b == b'"').count(), 6);
});
