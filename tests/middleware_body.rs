//! Middleware that looks at bodies, end to end on both drivers: `max_body`
//! on chunked request bodies, counted as they stream (refused before
//! anything goes upstream, or the upstream exchange aborted mid-body), next
//! to the Content-Length case; `compress` (zstd, br, gzip) decoded in the
//! test and by curl --compressed, with the cases it must leave alone.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::http::*;
use support::*;

both_drivers!(
    max_body_counts_chunked_bodies_as_they_stream,
    compress_text_responses_the_client_accepts,
);

/// No upstream pooling: each request's upstream connection is a new one
/// the backend counts.
fn config(port: u16, backend: u16, middleware: &str) -> String {
    format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1,
  "upstream_keepalive": {{"max_idle": 0}},
  "routes": {{"{port}": {{"name": "web", "middleware": {middleware},
  "backends": [{{"name": "b0", "internal_port": {backend}}}]}}}}}}"#
    )
}

fn chunk(n: usize) -> Vec<u8> {
    let mut v = format!("{n:x}\r\n").into_bytes();
    v.resize(v.len() + n, b'x');
    v.extend_from_slice(b"\r\n");
    v
}

fn max_body_counts_chunked_bodies_as_they_stream(io: &str) {
    // The backend answers with the body length it received; it counts the
    // requests it saw completely.
    let served = Arc::new(AtomicUsize::new(0));
    let sv = served.clone();
    let b = http_backend(move |req, p| {
        sv.fetch_add(1, Ordering::SeqCst);
        p.respond("200 OK", "", req.body.len().to_string().as_bytes());
        true
    });
    let port = free_port();
    let mw = r#"[{"type": "max_body", "max": 1000}]"#;
    let _rm = Ringmesh::start(&config(port, b.port, mw), io, &[port]);
    let head = b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";

    // Within the limit (exactly 1000 bytes of data, in three chunks): passes,
    // the connection stays open.
    let mut c = Client::connect(port);
    let mut req = head.to_vec();
    for n in [400, 500, 100] {
        req.extend(chunk(n));
    }
    req.extend_from_slice(b"0\r\n\r\n");
    c.send(&req);
    let m = c.response();
    assert_eq!((m.status(), m.body_str().as_str()), (200, "1000"));
    assert_eq!(c.get("/", "a", "").status(), 200);
    assert_eq!(served.load(Ordering::SeqCst), 2);

    // Over the limit in the bytes that came with the head: 413 before
    // anything goes upstream, then a close.
    let mut c = Client::connect(port);
    let mut req = head.to_vec();
    req.extend(chunk(1001));
    c.send(&req);
    let m = c.response();
    assert_eq!(m.status(), 413);
    assert!(c.closed_within(Duration::from_secs(5)));

    // Over the limit while streaming: the first 600 bytes went upstream,
    // the chunk that crosses the limit aborts the upstream exchange; the
    // client gets 413 and a close, the backend never sees a whole request.
    let accepted = b.accepted();
    let mut c = Client::connect(port);
    let mut req = head.to_vec();
    req.extend(chunk(600));
    c.send(&req);
    assert!(
        wait_until(Duration::from_secs(10), || b.accepted() > accepted),
        "the body's start went upstream"
    );
    std::thread::sleep(Duration::from_millis(100));
    c.send(&chunk(300));
    c.send(&chunk(200));
    let m = c.response();
    assert_eq!(m.status(), 413);
    assert!(c.closed_within(Duration::from_secs(5)));
    assert_eq!(served.load(Ordering::SeqCst), 2);

    // Content-Length stays as it was: over the limit, 413 and a close.
    let mut c = Client::connect(port);
    c.send(b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n");
    assert_eq!(c.response().status(), 413);
    assert!(c.closed_within(Duration::from_secs(5)));
    // Still serving.
    assert_eq!(Client::connect(port).get("/", "a", "").status(), 200);
}

/// The text the compress backend serves (compressible, 20 KB).
fn text() -> String {
    (0..400)
        .map(|i| format!("line {i}: the quick brown fox\n"))
        .collect()
}

fn decode(encoding: Option<&str>, body: &[u8]) -> Vec<u8> {
    use std::io::Read as _;
    match encoding {
        None => body.to_vec(),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        Some("zstd") => zstd::stream::decode_all(body).unwrap(),
        Some("br") => {
            let mut out = Vec::new();
            brotli::BrotliDecompress(&mut &body[..], &mut out).unwrap();
            out
        }
        Some(other) => panic!("unexpected coding {other}"),
    }
}

fn compress_text_responses_the_client_accepts(io: &str) {
    use std::io::Write as _;
    let b = http_backend(|req, p| {
        let t = text();
        match req.second.as_str() {
            "/text" => p.respond(
                "200 OK",
                "Content-Type: text/html; charset=utf-8\r\nETag: \"v1\"\r\nAccept-Ranges: bytes\r\n",
                t.as_bytes(),
            ),
            "/json" => p.respond("200 OK", "Content-Type: application/json\r\n", t.as_bytes()),
            "/small" => p.respond(
                "200 OK",
                "Content-Type: text/plain\r\n",
                &t.as_bytes()[..500],
            ),
            "/png" => p.respond("200 OK", "Content-Type: image/png\r\n", t.as_bytes()),
            "/encoded" => p.respond(
                "200 OK",
                "Content-Type: text/plain\r\nContent-Encoding: identity\r\n",
                t.as_bytes(),
            ),
            "/no-transform" => p.respond(
                "200 OK",
                "Content-Type: text/plain\r\nCache-Control: public, no-transform\r\n",
                t.as_bytes(),
            ),
            "/none" => p.respond("204 No Content", "Content-Type: text/plain\r\n", b""),
            "/chunked" => {
                let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                for part in t.as_bytes().chunks(7000) {
                    out.extend(format!("{:x};ext=1\r\n", part.len()).as_bytes());
                    out.extend_from_slice(part);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
                let _ = p.w.write_all(&out);
            }
            _ => p.respond("404 Not Found", "", b""),
        }
        true
    });
    let port = free_port();
    let mw = r#"[{"type": "compress"}]"#;
    let _rm = Ringmesh::start(&config(port, b.port, mw), io, &[port]);
    let t = text();
    let mut c = Client::connect(port);
    // (path, Accept-Encoding, expected Content-Encoding)
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("/text", "gzip", Some("gzip")),
        ("/text", "gzip, deflate, br, zstd", Some("zstd")),
        ("/text", "br;q=1, gzip;q=0.5", Some("br")),
        ("/text", "zstd;q=0, gzip", Some("gzip")),
        ("/text", "", None),
        ("/text", "identity", None),
        ("/json", "gzip", Some("gzip")),
        ("/chunked", "gzip", Some("gzip")),
        ("/chunked", "br", Some("br")),
        ("/chunked", "", None),
        ("/small", "gzip", None),
        ("/png", "gzip", None),
        ("/encoded", "gzip", None),
        ("/no-transform", "gzip", None),
    ];
    for (path, ae, want) in cases {
        let hdr = if ae.is_empty() {
            String::new()
        } else {
            format!("Accept-Encoding: {ae}\r\n")
        };
        let m = c.get(path, "a", &hdr);
        assert_eq!(m.status(), 200, "{path} {ae}");
        let ce = m.header("content-encoding").filter(|v| *v != "identity");
        assert_eq!(ce, *want, "{path} {ae}: {:?}", m.headers);
        let body = decode(ce, &m.body);
        let full = if *path == "/small" {
            &t[..500]
        } else {
            t.as_str()
        };
        assert_eq!(String::from_utf8_lossy(&body), full, "{path} {ae}");
        if want.is_some() {
            assert!(m.body.len() < t.len() / 4, "{path}: {} bytes", m.body.len());
            assert_eq!(m.header("vary"), Some("Accept-Encoding"));
            assert_eq!(m.header("transfer-encoding"), Some("chunked"));
            assert_eq!(m.header("content-length"), None);
            if *path == "/text" {
                assert_eq!(m.header("etag"), Some("W/\"v1\""));
                assert_eq!(m.header("accept-ranges"), None);
            }
        }
    }
    // HEAD and 204 are never compressed.
    c.send(b"HEAD /text HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n");
    let m = c.response_to_head();
    assert_eq!((m.status(), m.header("content-encoding")), (200, None));
    let m = c.get("/none", "a", "Accept-Encoding: gzip\r\n");
    assert_eq!((m.status(), m.header("content-encoding")), (204, None));
    // An HTTP/1.0 client gets the body as it is (no chunked coding for it).
    let mut c10 = Client::connect(port);
    c10.send(b"GET /text HTTP/1.0\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n");
    let m = c10.response();
    assert_eq!((m.status(), m.header("content-encoding")), (200, None));
    assert_eq!(m.body_str(), t);
    // curl decodes each coding itself.
    for ae in ["gzip", "br", "zstd"] {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "--compressed",
                "-H",
                &format!("Accept-Encoding: {ae}"),
            ])
            .args(["-D", "-", &format!("http://127.0.0.1:{port}/chunked")])
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text_out = String::from_utf8_lossy(&out.stdout);
        let (head, body) = text_out.split_once("\r\n\r\n").unwrap();
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("content-encoding: {ae}")),
            "{head}"
        );
        assert_eq!(body, t, "curl {ae}");
    }
}
