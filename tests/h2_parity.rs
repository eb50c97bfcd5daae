//! HTTP/2 streams get what HTTP/1.1 exchanges get, end to end through the
//! real binary on both I/O drivers: one access log line per stream (curl
//! `--http2` over TLS with its TLS version and SNI, curl
//! `--http2-prior-knowledge` on cleartext, an error answered by the proxy,
//! and h2load's N requests giving exactly N lines), route metrics;
//! `X-Client-Cert-Subject` on mTLS (a forged one dropped),
//! `X-Forwarded-Proto: https` and `hsts`; 103 Early Hints and 100 Continue
//! from an HTTP/1.1 backend, and 103 from an h2c backend, to h2 clients.
//! The middleware chain on h2 streams: tests/h2_middleware.rs.

#[allow(dead_code)]
#[path = "support/h2cli.rs"]
mod h2cli;
#[allow(dead_code)]
#[path = "support/h2raw.rs"]
mod h2raw;
mod support;

use std::io::{Read, Write};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use h2cli::*;
use serde_json::Value;
use support::http::*;
use support::pki::Pki;
use support::*;

both_drivers!(
    access_log_line_per_stream,
    client_cert_subject_and_forwarded_proto,
    informational_responses_reach_h2_clients,
    small_request_body_leaves_with_its_headers,
);

fn access_log_line_per_stream(io: &str) {
    let pki = Pki::new();
    let count = Arc::new(AtomicUsize::new(0));
    let b = mirror(count.clone());
    let (pt, pc, pd, api) = (free_port(), free_port(), free_port(), free_port());
    let dead = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2,
  "access_log": {{"path": "{}", "format": "json"}},
  "routes": {{
    "{pt}": {{"name": "tls-web", "tls": {{"certificates": [{}]}},
              "middleware": [{{"type": "request_id"}}],
              "backends": [{{"name": "b", "internal_port": {bp}}}]}},
    "{pc}": {{"name": "plain", "backends": [{{"name": "b", "internal_port": {bp}}}]}},
    "{pd}": {{"name": "down", "backends": [{{"name": "b", "internal_port": {dead}}}]}}
  }}}}"#,
        log.display(),
        pki.cert("a"),
        bp = b.port
    );
    let rm = Ringmesh::start(&cfg, io, &[pt, pc, pd, api]);

    // curl --http2 over TLS, with a request body.
    let resolve = format!("a.example.com:{pt}:127.0.0.1");
    let url = format!("https://a.example.com:{pt}/x?y=1");
    let r = curl(&[
        "--http2",
        "--cacert",
        &pki.p("ca.pem"),
        "--resolve",
        &resolve,
        "-A",
        "ua-tls",
        "-e",
        "http://ref/",
        "--data-binary",
        "0123456789",
        &url,
    ]);
    assert_eq!(r.status, 200, "{}\n{}", r.heads, rm.logs());
    assert!(r.heads.starts_with("http/2 200"), "{}", r.heads);
    let ls = wait_matching(&log, 1, |v| v["user_agent"] == "ua-tls");
    assert_eq!(ls.len(), 1, "{ls:?}");
    let v = &ls[0];
    assert_eq!(v["kind"], "http");
    assert_eq!(v["route"], "tls-web");
    assert_eq!(v["protocol"], "HTTP/2.0");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["target"], "/x?y=1");
    assert_eq!(v["status"], 200);
    assert_eq!(v["referer"], "http://ref/");
    assert_eq!(v["bytes_in"], 10);
    assert_eq!(v["bytes_out"], r.body.len() as u64);
    assert!(v["duration_us"].is_u64());
    assert_eq!(v["upstream"], format!("127.0.0.1:{}", b.port));
    assert!(v["upstream_ttfb_us"].is_u64(), "{v}");
    assert_eq!(v["tls_version"], "TLSv1.3");
    assert_eq!(v["sni"], "a.example.com");
    assert!(v["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    // The request id the middleware chose: upstream, to the client, logged.
    let id = r.header("x-request-id").expect("x-request-id");
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(v["request_id"], id.as_str());
    assert!(
        r.body.contains(&format!("X-Request-Id: {id}")),
        "{}",
        r.body
    );

    // curl --http2-prior-knowledge on cleartext.
    let r = h2c(&format!("http://127.0.0.1:{pc}/p"), &["-A", "ua-plain"]);
    assert_eq!(r.status, 200);
    let ls = wait_matching(&log, 1, |v| v["user_agent"] == "ua-plain");
    let v = &ls[0];
    assert_eq!(
        (&v["route"], &v["protocol"], &v["target"], &v["status"]),
        (
            &Value::from("plain"),
            &Value::from("HTTP/2.0"),
            &Value::from("/p"),
            &Value::from(200)
        )
    );
    assert!(v["tls_version"].is_null() && v["sni"].is_null() && v["request_id"].is_null());
    assert_eq!(v["bytes_in"], 0);

    // An answer of the proxy's own (no backend listening): 502, logged.
    let r = h2c(&format!("http://127.0.0.1:{pd}/gone"), &["-A", "ua-down"]);
    assert_eq!(r.status, 502);
    let ls = wait_matching(&log, 1, |v| v["user_agent"] == "ua-down");
    assert_eq!(ls[0]["status"], 502);
    assert_eq!(ls[0]["route"], "down");
    assert_eq!(ls[0]["bytes_out"], r.body.len() as u64);

    // h2load: N requests, N lines (cleartext and TLS, several connections
    // with concurrent streams each).
    const N: usize = 300;
    let before = count.load(Ordering::SeqCst);
    for (url, target) in [
        (format!("http://127.0.0.1:{pc}/load-c"), "/load-c"),
        (format!("https://127.0.0.1:{pt}/load-t"), "/load-t"),
    ] {
        let out = h2load(&["-n", &N.to_string(), "-c", "3", "-m", "10", &url]);
        assert!(out.contains(&format!("{N} succeeded")), "{out}");
        let got = wait_matching(&log, N, |v| v["target"] == target);
        // Nothing more arrives after a moment.
        std::thread::sleep(Duration::from_millis(300));
        let got2 = wait_matching(&log, N, |v| v["target"] == target);
        assert_eq!((got.len(), got2.len()), (N, N), "{target}");
        assert!(got2
            .iter()
            .all(|v| v["status"] == 200 && v["protocol"] == "HTTP/2.0"));
    }
    assert_eq!(count.load(Ordering::SeqCst) - before, 2 * N);
    // The route metrics count h2 streams as HTTP/1.1 requests.
    let metric = |name: &str| -> u64 {
        support::api::get(api, "/metrics")
            .body
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        metric("ringmesh_route_requests_total{route=\"plain\"} "),
        N as u64 + 1
    );
    assert_eq!(
        metric("ringmesh_route_requests_total{route=\"tls-web\"} "),
        N as u64 + 1
    );
    assert_eq!(metric("ringmesh_route_errors_total{route=\"down\"} "), 1);
    assert!(metric("ringmesh_route_bytes_out_total{route=\"plain\"} ") > 0);
    assert_eq!(rm.logs().matches("panicked").count(), 0);
}

fn client_cert_subject_and_forwarded_proto(io: &str) {
    let pki = Pki::new();
    let count = Arc::new(AtomicUsize::new(0));
    let b = mirror(count);
    let port = free_port();
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1,
  "routes": {{"{port}": {{"name": "m", "tls": {{"certificates": [{}], "client_ca": "{}"}}, "hsts": "max-age=600",
  "backends": [{{"name": "b", "internal_port": {}}}]}}}}}}"#,
        pki.cert("a"),
        pki.p("ca.pem"),
        b.port
    );
    let _rm = Ringmesh::start(&cfg, io, &[port]);
    let resolve = format!("a.example.com:{port}:127.0.0.1");
    let r = curl(&[
        "--http2",
        "--cacert",
        &pki.p("ca.pem"),
        "--resolve",
        &resolve,
        "--cert",
        &pki.p("client.crt"),
        "--key",
        &pki.p("client.key"),
        "-H",
        "X-Client-Cert-Subject: CN=forged",
        &format!("https://a.example.com:{port}/who"),
    ]);
    assert_eq!(r.status, 200, "{}", r.heads);
    assert!(r.heads.starts_with("http/2 200"), "{}", r.heads);
    let subj: Vec<&str> = r
        .body
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("x-client-cert-subject:"))
        .collect();
    assert_eq!(
        subj,
        ["x-client-cert-subject: CN=client-one, O=ringmesh"],
        "{}",
        r.body
    );
    assert!(
        r.body.contains("x-forwarded-proto: https\r\n"),
        "{}",
        r.body
    );
    // The route's `hsts` on h2 responses, as on HTTP/1.1.
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=600")
    );
}

fn informational_responses_reach_h2_clients(io: &str) {
    // 103 Early Hints before the final response; a 100 Continue for a
    // request that expects it (then the body is read and echoed).
    let b = Backend::spawn(|c| {
        let mut r = std::io::BufReader::new(c.try_clone().unwrap());
        let mut w = c;
        while let Ok(Some(req)) = read_head(&mut r) {
            if req.header("expect").is_some() {
                let _ = w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            let len = req.header("content-length").and_then(|v| v.parse().ok());
            let mut body = vec![0; len.unwrap_or(0usize)];
            if r.read_exact(&mut body).is_err() {
                return;
            }
            let mut out = Vec::new();
            if req.second == "/hints" {
                out.extend_from_slice(
                    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
                );
            }
            let msg = format!("got {}", String::from_utf8_lossy(&body));
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{msg}",
                    msg.len()
                )
                .as_bytes(),
            );
            if w.write_all(&out).is_err() {
                return;
            }
        }
    });
    let port = free_port();
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1,
  "routes": {{"{port}": {{"name": "w", "backends": [{{"name": "b", "internal_port": {}}}]}}}}}}"#,
        b.port
    );
    let _rm = Ringmesh::start(&cfg, io, &[port]);
    let out = Command::new("nghttp")
        .args(["-v", "-t", "20"])
        .arg(format!("http://127.0.0.1:{port}/hints"))
        .output()
        .expect("nghttp (nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    let hints = text.find(":status: 103").expect(&text);
    let link = text.find("link: </style.css>; rel=preload").expect(&text);
    let fin = text.find(":status: 200").expect(&text);
    assert!(hints < link && link < fin, "{text}");
    assert!(text.contains("got "), "{text}");
    // 100-continue: the backend's 100 reaches curl, which then sends the body.
    let r = h2c(
        &format!("http://127.0.0.1:{port}/upload"),
        &["-H", "Expect: 100-continue", "--data-binary", "payload"],
    );
    assert_eq!(r.status, 200, "{}", r.heads);
    assert_eq!(r.body, "got payload");
    assert!(r.heads.starts_with("http/2 100"), "{}", r.heads);

    // An h2c backend (frames written by hand) sending 103 then 200.
    let (h2port, _server) = h2c_early_hints_backend();
    let port = free_port();
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1,
  "routes": {{"{port}": {{"name": "w", "backends": [{{"internal_port": {h2port}, "protocol": "h2c"}}]}}}}}}"#
    );
    let _rm2 = Ringmesh::start(&cfg, io, &[port]);
    let out = Command::new("nghttp")
        .args(["-v", "-t", "20"])
        .arg(format!("http://127.0.0.1:{port}/hints"))
        .output()
        .expect("nghttp (nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    let hints = text.find(":status: 103").expect(&text);
    let link = text.find("link: </h2.css>; rel=preload").expect(&text);
    let fin = text.find(":status: 200").expect(&text);
    assert!(hints < link && link < fin, "{text}");
}

/// A raw h2c server on a thread: answers every request stream with a 103
/// (a Link field), then `200` with body `ok`.
fn h2c_early_hints_backend() -> (u16, std::thread::JoinHandle<()>) {
    use h2raw::*;
    let l = listen_loopback();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    let h = std::thread::spawn(move || {
        // Bounded: 16 connections or 60 s, whichever comes first.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut served = 0;
        while served < 16 && std::time::Instant::now() < deadline {
            let mut c = match l.accept() {
                Ok((c, _)) => c,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            };
            served += 1;
            let _ = c.set_nonblocking(false);
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
                let mut pre = [0u8; 24];
                if c.read_exact(&mut pre).is_err() || pre != PREFACE {
                    return;
                }
                let _ = c.write_all(&frame(SETTINGS, 0, 0, &[]));
                loop {
                    let mut h = [0u8; 9];
                    if c.read_exact(&mut h).is_err() {
                        return;
                    }
                    let n =
                        (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                    let mut p = vec![0u8; n];
                    if c.read_exact(&mut p).is_err() {
                        return;
                    }
                    let (kind, flags) = (h[3], h[4]);
                    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    let mut out = Vec::new();
                    if kind == SETTINGS && flags & 1 == 0 {
                        out.extend(frame(SETTINGS, 1, 0, &[]));
                    }
                    if kind == HEADERS && flags & END_STREAM != 0 {
                        let hints =
                            block(&[(":status", "103"), ("link", "</h2.css>; rel=preload")]);
                        out.extend(frame(HEADERS, END_HEADERS, stream, &hints));
                        let fin = block(&[(":status", "200"), ("content-length", "2")]);
                        out.extend(frame(HEADERS, END_HEADERS, stream, &fin));
                        out.extend(frame(DATA, END_STREAM, stream, b"ok"));
                    }
                    if !out.is_empty() && c.write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, h)
}

/// A request whose small body came with its head (a gRPC unary call) goes
/// to an h2c backend as HEADERS and DATA in one write: `h2` gives a stream
/// no window until its HEADERS leave, and waiting for it cost a second
/// write and a second wake-up of the backend per call. The backend reads
/// without blocking, in a bounded spin, so it sees each write on its own.
fn small_request_body_leaves_with_its_headers(io: &str) {
    use h2raw::*;
    use std::sync::mpsc;
    let l = listen_loopback();
    let h2port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let Ok((mut c, _)) = l.accept() else { return };
        c.set_nonblocking(true).unwrap();
        // Every read as it came, and where each frame of stream 1 began.
        let (mut bytes, mut reads) = (Vec::new(), 0usize);
        let (mut at, mut heads_read, mut data_read) = (24usize, None, None);
        let mut b = [0u8; 65536];
        let mut done = false;
        while !done && Instant::now() < deadline {
            match c.read(&mut b) {
                Ok(0) => return,
                Ok(n) => {
                    bytes.extend_from_slice(&b[..n]);
                    reads += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::hint::spin_loop();
                    continue;
                }
                Err(_) => return,
            }
            while bytes.len() >= at + 9 {
                let h = &bytes[at..at + 9];
                let n = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                if bytes.len() < at + 9 + n {
                    break;
                }
                let (kind, flags) = (h[3], h[4]);
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                at += 9 + n;
                let mut out = Vec::new();
                if kind == SETTINGS && flags & 1 == 0 {
                    out.extend(frame(SETTINGS, 0, 0, &[]));
                    out.extend(frame(SETTINGS, 1, 0, &[]));
                }
                if kind == HEADERS && stream == 1 {
                    heads_read = Some(reads);
                }
                if kind == DATA && stream == 1 && data_read.is_none() {
                    data_read = Some(reads);
                }
                if stream == 1 && flags & END_STREAM != 0 {
                    let fin = block(&[(":status", "200"), ("content-length", "2")]);
                    out.extend(frame(HEADERS, END_HEADERS, 1, &fin));
                    out.extend(frame(DATA, END_STREAM, 1, b"ok"));
                    let _ = tx.send((heads_read, data_read));
                    done = true;
                }
                if !out.is_empty() {
                    let _ = c.set_nonblocking(false);
                    let _ = c.write_all(&out);
                    let _ = c.set_nonblocking(true);
                }
            }
        }
        // Answered: wait (blocking, bounded) for ringmesh to let go.
        let _ = c.set_nonblocking(false);
        let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
        while matches!(c.read(&mut b), Ok(n) if n > 0) {}
    });
    let port = free_port();
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1,
  "routes": {{"{port}": {{"name": "g", "backends": [{{"internal_port": {h2port}, "protocol": "h2c"}}]}}}}}}"#
    );
    let rm = Ringmesh::start(&cfg, io, &[port]);
    let mut c = Conn::open(port, &[]);
    let mut out = frame(
        HEADERS,
        END_HEADERS,
        1,
        &request_block("POST", "/t.T/Unary", "g.test"),
    );
    out.extend(frame(DATA, END_STREAM, 1, b"\0\0\0\0\x05hello"));
    assert!(c.send(&out));
    let (mut body, mut answered) = (Vec::new(), false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Some(f) = c.next(deadline.saturating_duration_since(Instant::now())) {
        if f.stream == 1 && f.kind == DATA {
            body.extend_from_slice(&f.payload);
        }
        if f.stream == 1 && f.flags & END_STREAM != 0 {
            answered = body == b"ok";
            break;
        }
    }
    assert!(answered, "no answer through the h2c backend\n{}", rm.logs());
    let (heads, data) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the backend saw the whole request");
    assert!(
        heads.is_some() && heads == data,
        "HEADERS in read {heads:?}, DATA in read {data:?}: not one write"
    );
    drop(c);
    drop(rm);
    let _ = server.join();
}
