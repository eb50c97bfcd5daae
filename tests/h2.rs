//! HTTP/2 to clients (h2c with prior knowledge) end to end through the real
//! binary, on both I/O drivers: h2spec, curl and nghttp, routing by
//! :authority, 100 concurrent streams, a slow stream beside fast ones,
//! trailers, each flood (written frame by frame by the test) closed with
//! GOAWAY ENHANCE_YOUR_CALM while other connections are served, the zero
//! window stall, drain (GOAWAY, in-flight stream finishes) and idle close;
//! gRPC (Python grpcio client and server) through an h2c backend; a reload
//! applied to the next stream of an open connection.

#[path = "support/h2raw.rs"]
mod h2raw;
mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use h2raw::*;
use support::http::*;
use support::*;

both_drivers!(
    h2spec_passes,
    curl_and_nghttp_prior_knowledge,
    routes_by_authority,
    hundred_concurrent_streams,
    slow_stream_does_not_stall_others,
    chunked_trailers_become_h2_trailers,
    floods_get_goaway_and_bounded_backend_requests,
    pings_after_requests_are_no_flood,
    zero_window_stall_resets_the_stream,
    drain_sends_goaway_and_finishes_inflight,
    idle_connection_is_closed,
    grpc_through_an_h2c_backend,
    reload_applies_to_open_connections,
);

/// One http route on `port` (hosts `a.test` and a default) with `http2` settings.
fn config(port: u16, api: &str, backend: u16, http2: &str, timeouts: &str) -> String {
    format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2, "shutdown_grace": "10s",
  "routes": {{"{port}": {{"name": "web", "http2": {http2}, "timeouts": {{{timeouts}}},
  "backends": [{{"name": "b0", "internal_port": {backend}}}]}}}}}}"#
    )
}

/// A backend that answers with the request head and body; `/slow` waits 3 s;
/// `/big` sends 1 MiB; `/trailers` answers chunked with trailers.
fn backend(count: Arc<AtomicUsize>) -> Backend {
    http_backend(move |req, p| {
        count.fetch_add(1, Ordering::SeqCst);
        let path = req.second.clone();
        match path.as_str() {
            "/slow" => {
                std::thread::sleep(Duration::from_secs(3));
                p.respond("200 OK", "", b"slow");
            }
            "/big" => p.respond("200 OK", "", &vec![b'x'; 1 << 20]),
            "/trailers" => {
                let _ = p.w.write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: grpc-status\r\n\r\n\
                      5\r\nhello\r\n6\r\n world\r\n0\r\ngrpc-status: 7\r\ngrpc-message: nope\r\n\r\n",
                );
            }
            _ => {
                let body = format!("{}{}", req.raw_head, req.body_str());
                p.respond("200 OK", "Content-Type: text/plain\r\n", body.as_bytes());
            }
        }
        true
    })
}

fn start(io: &str, http2: &str, timeouts: &str) -> (Ringmesh, Backend, Arc<AtomicUsize>, u16) {
    let count = Arc::new(AtomicUsize::new(0));
    let b = backend(count.clone());
    let port = free_port();
    let rm = Ringmesh::start(&config(port, "", b.port, http2, timeouts), io, &[port]);
    (rm, b, count, port)
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The h2spec binary: $H2SPEC, ~/go/bin, or PATH (scripts/test.sh installs it).
fn h2spec() -> String {
    if let Ok(p) = std::env::var("H2SPEC") {
        return p;
    }
    let home = std::env::var("HOME").unwrap_or_default();
    for p in [
        format!("{home}/go/bin/h2spec"),
        "/usr/local/bin/h2spec".into(),
    ] {
        if std::path::Path::new(&p).exists() {
            return p;
        }
    }
    "h2spec".into()
}

fn h2spec_passes(io: &str) {
    let (rm, _b, _c, port) = start(io, "true", "");
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("h2spec.xml");
    let out = Command::new(h2spec())
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-o", "5", "-j"])
        .arg(&report)
        .output()
        .expect("h2spec (scripts/test.sh installs it with go install)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary = text
        .lines()
        .rev()
        .find(|l| l.contains("tests,"))
        .unwrap_or("")
        .to_string();
    // The one case that cannot pass on a port that also speaks HTTP/1.1:
    // bytes that are not the preface are an HTTP/1.1 request (answered 400
    // and closed), while h2spec expects a silent close.
    let failures: Vec<&str> = text
        .split("Failures:")
        .nth(1)
        .unwrap_or("")
        .lines()
        .filter(|l| l.trim_start().starts_with('×'))
        .filter(|l| !l.contains("Sends invalid connection preface"))
        .collect();
    assert!(
        summary.contains("145 tests"),
        "h2spec did not run: {summary}\n{text}"
    );
    assert!(
        failures.is_empty(),
        "h2spec failures: {failures:#?}\n{summary}"
    );
    assert!(rm.logs().matches("panicked").count() == 0);
}

fn curl_and_nghttp_prior_knowledge(io: &str) {
    let (_rm, _b, count, port) = start(io, "true", "");
    let url = format!("http://127.0.0.1:{port}/hello?x=1");
    let (body, err) = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "Cookie: a=1",
        "-H",
        "Cookie: b=2",
        &url,
    ]);
    assert!(
        body.starts_with("GET /hello?x=1 HTTP/1.1\r\n"),
        "{body:?} {err}"
    );
    assert!(
        body.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
        "{body}"
    );
    assert!(body.contains("cookie: a=1; b=2\r\n"), "{body}");
    assert!(body.contains("x-forwarded-proto: http\r\n"), "{body}");
    // Known length and unknown length (sent chunked) request bodies.
    let (body, err) = curl(&[
        "--http2-prior-knowledge",
        "--data-binary",
        "0123456789",
        &url,
    ]);
    assert!(
        body.contains("content-length: 10\r\n") && body.ends_with("0123456789"),
        "{body:?} {err}"
    );
    let mut child = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "--http2-prior-knowledge",
            "-T",
            "-",
            &url,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"streamed body")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("transfer-encoding: chunked\r\n") && body.ends_with("streamed body"),
        "{body:?}"
    );
    // A 1 MiB response under flow control.
    let (big, _) = curl(&[
        "--http2-prior-knowledge",
        &format!("http://127.0.0.1:{port}/big"),
    ]);
    assert_eq!(big.len(), 1 << 20);
    // HTTP/1.1 still works on the same port.
    let (body, _) = curl(&["--http1.1", &url]);
    assert!(body.starts_with("GET /hello?x=1 HTTP/1.1\r\n"));
    // nghttp (Debian nghttp2-client): two requests on one connection.
    let out = Command::new("nghttp")
        .args([
            "-n",
            "-s",
            "-t",
            "20",
            &url,
            &format!("http://127.0.0.1:{port}/big"),
        ])
        .output()
        .expect("nghttp (nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches(" 200 ").count(), 2, "{text}");
    assert!(count.load(Ordering::SeqCst) >= 7);
}

fn routes_by_authority(io: &str) {
    let (ba, bb) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, d) = (backend(ba.clone()), backend(bb.clone()));
    let (port, port2) = (free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{
    "a": {{"listen": "127.0.0.1:{port}", "hosts": ["a.test"], "backends": [{{"internal_port": {}}}]}},
    "off": {{"listen": "127.0.0.1:{port}", "hosts": ["off.test"], "http2": false, "backends": [{{"internal_port": {}}}]}},
    "d": {{"listen": "127.0.0.1:{port}", "backends": [{{"internal_port": {}}}]}},
    "{port2}": {{"http2": false, "backends": [{{"internal_port": {}}}]}}}}}}"#,
        a.port, d.port, d.port, d.port
    );
    let _rm = Ringmesh::start(&cfg, io, &[port, port2]);
    // A port whose only route has http2 off reads the preface as HTTP/1.1 (and refuses it).
    let mut s = connect(port2);
    s.write_all(PREFACE).unwrap();
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut got);
    assert!(
        got.starts_with(b"HTTP/1.1 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let code = |host: &str| {
        curl(&[
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Host: {host}"),
            &format!("http://127.0.0.1:{port}/"),
        ])
        .0
    };
    assert_eq!(code("a.test"), "200");
    assert_eq!(ba.load(Ordering::SeqCst), 1);
    assert_eq!(code("other.test"), "200");
    assert_eq!(bb.load(Ordering::SeqCst), 1);
    // http2 off on that route: 421, the client may retry over HTTP/1.1.
    assert_eq!(code("off.test"), "421");
    assert_eq!(bb.load(Ordering::SeqCst), 1);
}

fn hundred_concurrent_streams(io: &str) {
    let (_rm, _b, count, port) = start(io, "true", "");
    let out = Command::new("h2load")
        .args([
            "-n",
            "1000",
            "-c",
            "1",
            "-m",
            "100",
            &format!("http://127.0.0.1:{port}/x"),
        ])
        .output()
        .expect("h2load (nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1000 succeeded"), "{text}");
    assert!(text.contains("status codes: 1000 2xx"), "{text}");
    assert_eq!(count.load(Ordering::SeqCst), 1000);
}

fn slow_stream_does_not_stall_others(io: &str) {
    let (_rm, _b, _count, port) = start(io, "true", "");
    let mut c = Conn::open(port, &[]);
    let t0 = Instant::now();
    c.get(1, "/slow", "a.test");
    for id in [3, 5, 7] {
        c.get(id, "/fast", "a.test");
    }
    let mut done = Vec::new();
    while done.len() < 4 {
        let f = c.next(Duration::from_secs(20)).expect("frames");
        if f.flags & END_STREAM != 0 && f.stream != 0 && matches!(f.kind, DATA | HEADERS) {
            done.push((f.stream, t0.elapsed()));
        }
    }
    // The slow answer takes 3 s: the others ending first is the proof.
    assert_eq!(done[3].0, 1, "the slow stream ends last: {done:?}");
    assert!(done[3].1 >= Duration::from_secs(3));
}

fn chunked_trailers_become_h2_trailers(io: &str) {
    let (_rm, _b, _count, port) = start(io, "true", "");
    let out = Command::new("nghttp")
        .args([
            "-v",
            "-t",
            "20",
            &format!("http://127.0.0.1:{port}/trailers"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("hello") && text.contains(" world"), "{text}");
    assert!(
        text.contains("recv DATA frame <length=5") && text.contains("recv DATA frame <length=6"),
        "{text}"
    );
    // The trailers come in a HEADERS frame that ends the stream.
    let tail = &text[text.find("grpc-status: 7").expect("trailer")..];
    assert!(tail.contains("grpc-message: nope"), "{text}");
    assert!(
        tail.contains("recv HEADERS frame") && tail.contains("END_STREAM"),
        "{text}"
    );
}

/// Sends `flood` on a fresh connection and expects GOAWAY ENHANCE_YOUR_CALM then a close.
fn expect_calm(port: u16, what: &str, settings: &[(u16, u32)], flood: impl Fn(&mut Conn)) {
    let mut c = Conn::open(port, settings);
    flood(&mut c);
    let g = c
        .until_goaway(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{what}: no GOAWAY"));
    assert_eq!(g.goaway().1, ENHANCE_YOUR_CALM, "{what}: {g:?}");
    assert!(
        c.closed_within(Duration::from_secs(10)),
        "{what}: not closed"
    );
}

/// A grpc-go client sends a BDP PING after each response it receives (one
/// per call at 1,000 calls/s): PINGs that follow a request are free, so
/// three times the frame budget of them costs nothing; PINGs with no
/// request between them still spend it.
fn pings_after_requests_are_no_flood(io: &str) {
    let (_rm, _b, count, port) = start(io, r#"{"frame_budget": 100}"#, "");
    let mut c = Conn::open(port, &[]);
    for i in 0..300u32 {
        let id = 2 * i + 1;
        assert!(c.get(id, "/x", "a.test"), "request {i}: connection closed");
        let (mut ended, mut acked) = (false, false);
        c.send(&frame(PING, 0, 0, &i.to_be_bytes().repeat(2)));
        while !(ended && acked) {
            let f = c
                .next(Duration::from_secs(20))
                .unwrap_or_else(|| panic!("request {i}: connection ended"));
            assert_ne!(f.kind, GOAWAY, "request {i}: {f:?}");
            ended |= f.stream == id && f.flags & END_STREAM != 0;
            acked |= f.kind == PING && f.flags & 1 != 0;
        }
    }
    assert_eq!(count.load(Ordering::SeqCst), 300);
    // Bare PINGs are charged: the same connection goes away.
    let f = frame(PING, 0, 0, &[7; 8]);
    for _ in 0..500 {
        if !c.send(&f) {
            break;
        }
    }
    let g = c.until_goaway(Duration::from_secs(20)).expect("GOAWAY");
    assert_eq!(g.goaway().1, ENHANCE_YOUR_CALM, "{g:?}");
}

fn floods_get_goaway_and_bounded_backend_requests(io: &str) {
    let count = Arc::new(AtomicUsize::new(0));
    let b = backend(count.clone());
    let (port, api) = (free_port(), free_port());
    let http2 = r#"{"frame_budget": 100, "max_pending_accept_reset_streams": 20, "max_local_error_reset_streams": 20}"#;
    let rm = Ringmesh::start(
        &config(port, &api.to_string(), b.port, http2, ""),
        io,
        &[port, api],
    );
    let served = || {
        curl(&[
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{port}/ok"),
        ])
        .0
    };
    let before = count.load(Ordering::SeqCst);
    let (rss0, fds0) = (rss_kib(rm.pid()), rm.fds());
    // Each flood writes its frames from another thread while we read.
    type Flood = Box<dyn Fn(&mut Conn)>;
    let floods: Vec<(&str, Flood)> = vec![
        (
            "SETTINGS",
            Box::new(|c: &mut Conn| {
                let f = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
                for _ in 0..2000 {
                    if !c.send(&f) {
                        break;
                    }
                }
            }),
        ),
        (
            "PING",
            Box::new(|c: &mut Conn| {
                let f = frame(PING, 0, 0, &[1; 8]);
                for _ in 0..2000 {
                    if !c.send(&f) {
                        break;
                    }
                }
            }),
        ),
        (
            "PRIORITY",
            Box::new(|c: &mut Conn| {
                for i in 0..2000u32 {
                    if !c.send(&frame(PRIORITY, 0, 2 * i + 1, &[0, 0, 0, 0, 16])) {
                        break;
                    }
                }
            }),
        ),
        (
            "empty DATA",
            Box::new(|c: &mut Conn| {
                let b = request_block("POST", "/upload", "a.test");
                c.send(&frame(HEADERS, END_HEADERS, 1, &b));
                for _ in 0..2000 {
                    if !c.send(&frame(DATA, 0, 1, &[])) {
                        break;
                    }
                }
            }),
        ),
        (
            "rapid reset",
            Box::new(|c: &mut Conn| {
                let b = request_block("GET", "/slow", "a.test");
                for i in 0..2000u32 {
                    let id = 2 * i + 1;
                    let mut f = frame(HEADERS, END_HEADERS | END_STREAM, id, &b);
                    f.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
                    if !c.send(&f) {
                        break;
                    }
                }
            }),
        ),
        (
            "MadeYouReset",
            Box::new(|c: &mut Conn| {
                // DATA beyond the announced content-length: the server must
                // reset that stream (a stream error it makes, PROTOCOL_ERROR).
                let b = block(&[
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", "/slow"),
                    (":authority", "a.test"),
                    ("content-length", "0"),
                ]);
                for i in 0..2000u32 {
                    let id = 2 * i + 1;
                    let mut f = frame(HEADERS, END_HEADERS, id, &b);
                    f.extend(frame(DATA, 0, id, b"x"));
                    if !c.send(&f) {
                        break;
                    }
                }
            }),
        ),
    ];
    for (what, flood) in &floods {
        expect_calm(port, what, &[], flood);
        assert_eq!(served(), "200", "after the {what} flood");
    }
    // CONTINUATION flood: one header block that never ends.
    let mut c = Conn::open(port, &[]);
    let b = request_block("GET", "/", "a.test");
    c.send(&frame(HEADERS, 0, 1, &b));
    let crumb = block(&[("x-filler", &"y".repeat(4000))]);
    let mut closed = false;
    for _ in 0..2000 {
        if !c.send(&frame(CONTINUATION, 0, 1, &crumb)) {
            closed = true;
            break;
        }
    }
    let g = c.until_goaway(Duration::from_secs(20));
    assert!(
        closed || g.is_some(),
        "CONTINUATION flood: connection neither closed nor went away"
    );
    assert!(c.closed_within(Duration::from_secs(10)));
    assert_eq!(served(), "200");
    // Each flood cost at most its limits in backend requests (the rapid and
    // MadeYouReset floods start streams; 2000 of each were sent).
    let seen = count.load(Ordering::SeqCst) - before;
    // Rapid reset: 100 / 10 per reset + h2's pending-accept limit; MadeYouReset: 20 local resets.
    assert!(seen <= 2 * (20 + 128) + 8, "backend saw {seen} requests");
    let m = support::api::get(api, "/metrics").body;
    let metric = |name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{m}"))
    };
    assert!(
        metric("ringmesh_h2_frame_flood_total") + metric("ringmesh_h2_calm_total") >= 6,
        "{m}"
    );
    // Memory and fds come back: nothing a flood sent is kept.
    assert!(
        wait_until(Duration::from_secs(10), || rm.fds() <= fds0 + 2),
        "fds {} after the floods, {fds0} before",
        rm.fds()
    );
    let rss1 = rss_kib(rm.pid());
    assert!(
        rss1 < rss0 + 32 * 1024,
        "RSS grew from {rss0} KiB to {rss1} KiB"
    );
    eprintln!("floods: backend saw {seen} requests; RSS {rss0} -> {rss1} KiB");
    assert!(rm.logs().matches("panicked").count() == 0);
}

fn zero_window_stall_resets_the_stream(io: &str) {
    let (rm, _b, _count, port) = start(io, "true", r#""response": "2s""#);
    // SETTINGS_INITIAL_WINDOW_SIZE = 0: we never let the proxy send DATA.
    let mut c = Conn::open(port, &[(4, 0)]);
    c.get(1, "/big", "a.test");
    let t0 = Instant::now();
    let rst = loop {
        let f = c.next(Duration::from_secs(20)).expect("RST_STREAM");
        if f.kind == RST_STREAM && f.stream == 1 {
            break f;
        }
    };
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(rst.payload, 8u32.to_be_bytes(), "CANCEL");
    // The connection itself still serves.
    c.send(&frame(WINDOW_UPDATE, 0, 0, &1_000_000u32.to_be_bytes()));
    drop(rm);
}

fn drain_sends_goaway_and_finishes_inflight(io: &str) {
    let (mut rm, _b, _count, port) = start(io, "true", "");
    let mut c = Conn::open(port, &[]);
    c.get(1, "/slow", "a.test");
    std::thread::sleep(Duration::from_millis(500));
    rm.signal(libc::SIGTERM);
    let mut goaway = None;
    let mut ended = false;
    while let Some(f) = c.next(Duration::from_secs(20)) {
        if f.kind == GOAWAY {
            goaway = Some(f.goaway());
        }
        if f.stream == 1 && f.flags & END_STREAM != 0 {
            ended = true;
        }
    }
    let (last, code) = goaway.expect("GOAWAY on drain");
    assert_eq!(code, 0, "NO_ERROR");
    assert!(last == 1 || last == 0x7fff_ffff, "last stream id {last}");
    assert!(ended, "the in-flight stream finished");
    assert!(rm.wait_exit(Duration::from_secs(15)).is_some());
}

fn idle_connection_is_closed(io: &str) {
    let (_rm, _b, _count, port) = start(io, r#"{"idle_timeout": "1s"}"#, "");
    let mut c = Conn::open(port, &[]);
    c.get(1, "/x", "a.test");
    let t0 = Instant::now();
    let g = c
        .until_goaway(Duration::from_secs(20))
        .expect("GOAWAY when idle");
    assert_eq!(g.goaway().1, 0);
    assert!(t0.elapsed() >= Duration::from_millis(900));
    assert!(c.closed_within(Duration::from_secs(10)));
}

fn grpc_through_an_h2c_backend(io: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/grpc_peer.py");
    let dir = tempfile::tempdir().unwrap();
    let cancel_file = dir.path().join("cancelled");
    let gport = free_port();
    let mut server = ChildGuard(
        Command::new("python3")
            .args([script, "server", &gport.to_string()])
            .arg(&cancel_file)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with grpcio (pip install grpcio)"),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(
        line.trim(),
        "ready",
        "grpc server did not start (is grpcio installed?)"
    );
    let port = free_port();
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{"{port}": {{"name": "grpc", "backends": [{{"internal_port": {gport}, "protocol": "h2c"}}]}}}}}}"#
    );
    let rm = Ringmesh::start(&cfg, io, &[port]);
    let out = Command::new("timeout")
        .args(["60", "python3", script, "client", &port.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        rm.logs()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for check in [
        "unary",
        "server-streaming",
        "client-streaming",
        "bidi-streaming",
        "4MiB",
        "error-status",
        "deadline",
        "cancel-sent",
    ] {
        assert!(text.contains(&format!("OK {check}")), "{check}: {text}");
    }
    // The client's cancel reached the backend as a stream reset at once.
    assert!(
        wait_until(Duration::from_secs(5), || cancel_file.exists()),
        "the backend never saw the cancellation"
    );
}

/// VmRSS of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    st.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits for the response of `stream` on `c` to end; true when it did.
fn stream_ends(c: &mut Conn, stream: u32) -> bool {
    while let Some(f) = c.next(Duration::from_secs(20)) {
        if f.stream == stream && f.flags & END_STREAM != 0 {
            return true;
        }
    }
    false
}

fn reload_applies_to_open_connections(io: &str) {
    let (ca, cb) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, b) = (backend(ca.clone()), backend(cb.clone()));
    let port = free_port();
    let rm = Ringmesh::start(&config(port, "", a.port, "true", ""), io, &[port]);
    let mut c = Conn::open(port, &[]);
    c.get(1, "/x", "a.test");
    assert!(stream_ends(&mut c, 1));
    assert_eq!(ca.load(Ordering::SeqCst), 1);
    std::fs::write(&rm.config, config(port, "", b.port, "true", "")).unwrap();
    rm.signal(libc::SIGHUP);
    let served_by_b = || {
        curl(&[
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{port}/"),
        ]);
        cb.load(Ordering::SeqCst) > 0
    };
    assert!(
        wait_until(Duration::from_secs(10), served_by_b),
        "reload not applied"
    );
    // The connection opened before the reload routes its next streams by the
    // new config, once its worker picked the config up (at its next tick).
    let mut id = 3;
    let moved = (0..50).any(|_| {
        let before_b = cb.load(Ordering::SeqCst);
        c.get(id, "/x", "a.test");
        assert!(stream_ends(&mut c, id));
        id += 2;
        let moved = cb.load(Ordering::SeqCst) == before_b + 1;
        if !moved {
            std::thread::sleep(Duration::from_millis(100));
        }
        moved
    });
    assert!(moved, "the open connection kept the old config");
    let (before_a, before_b) = (ca.load(Ordering::SeqCst), cb.load(Ordering::SeqCst));
    c.get(id, "/x", "a.test");
    assert!(stream_ends(&mut c, id));
    assert_eq!(cb.load(Ordering::SeqCst), before_b + 1);
    assert_eq!(ca.load(Ordering::SeqCst), before_a);
}
