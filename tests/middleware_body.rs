//! Middleware that looks at bodies, end to end on both drivers: `max_body`
//! on chunked request bodies, counted as they stream (refused before
//! anything goes upstream, or the upstream exchange aborted mid-body), next
//! to the Content-Length case.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::http::*;
use support::*;

both_drivers!(max_body_counts_chunked_bodies_as_they_stream);

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
    v.extend(std::iter::repeat_n(b'x', n));
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
