//! HTTP/2 over TLS chosen by ALPN, end to end through the real binary on
//! both I/O drivers, certificates made by the `openssl` CLI at test time:
//! curl `--http2` negotiates h2 and reaches the backend, nghttp, h2load with
//! 100 concurrent streams on one TLS connection, HTTP/1.1-only clients
//! still served, `"http2": false` offers no `h2`, the 421 rule on a shared
//! port, and h2spec (`-t -k`) against the TLS route.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use support::http::*;
use support::pki::{run, Pki};
use support::*;

both_drivers!(
    curl_and_nghttp_negotiate_h2,
    many_streams_on_one_tls_connection,
    http11_only_clients_and_http2_off,
    shared_port_421_by_authority,
    h2spec_over_tls,
);

/// A backend answering with the request head it saw; `/big` sends 1 MiB.
fn backend(count: Arc<AtomicUsize>) -> Backend {
    http_backend(move |req, p| {
        count.fetch_add(1, Ordering::SeqCst);
        if req.second == "/big" {
            p.respond("200 OK", "", &vec![b'x'; 1 << 20]);
        } else {
            let body = format!("{}{}", req.raw_head, req.body_str());
            p.respond("200 OK", "Content-Type: text/plain\r\n", body.as_bytes());
        }
        true
    })
}

/// One TLS http route on `port` with certificate `a.example.com`.
fn config(port: u16, backend: u16, tls: &str, http2: &str) -> String {
    format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 2, "shutdown_grace": "5s",
  "routes": {{"{port}": {{"name": "web", "tls": {tls}, "http2": {http2},
  "backends": [{{"name": "b0", "internal_port": {backend}}}]}}}}}}"#
    )
}

fn start(io: &str, http2: &str) -> (Pki, Ringmesh, Backend, Arc<AtomicUsize>, u16) {
    let pki = Pki::new();
    let count = Arc::new(AtomicUsize::new(0));
    let b = backend(count.clone());
    let port = free_port();
    let tls = format!(r#"{{"certificates": [{}]}}"#, pki.cert("a"));
    let rm = Ringmesh::start(&config(port, b.port, &tls, http2), io, &[port]);
    (pki, rm, b, count, port)
}

/// curl to `https://host:port/path` (resolved to 127.0.0.1, verified against
/// the test CA); returns (body, http_version, stderr).
fn curl(pki: &Pki, port: u16, host: &str, path: &str, extra: &[&str]) -> (String, String, String) {
    let resolve = format!("{host}:{port}:127.0.0.1");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert", &pki.p("ca.pem")])
        .args(["--resolve", &resolve])
        .args(extra)
        .args(["-w", "\n%{http_version} %{http_code}"])
        .arg(format!("https://{host}:{port}{path}"))
        .stdin(Stdio::null())
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        body.to_string(),
        tail.to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What `openssl s_client -alpn <offer>` says was negotiated.
fn alpn_of(port: u16, offer: &str) -> String {
    let (_, out) = run(Command::new("openssl").args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-servername",
        "a.example.com",
        "-alpn",
        offer,
    ]));
    out.lines()
        .find(|l| l.contains("ALPN"))
        .unwrap_or("no ALPN line")
        .trim()
        .to_string()
}

fn curl_and_nghttp_negotiate_h2(io: &str) {
    let (pki, rm, _b, count, port) = start(io, "true");
    let (body, ver, err) = curl(&pki, port, "a.example.com", "/hello?x=1", &["--http2"]);
    assert_eq!(ver, "2 200", "{err}\n{}", rm.logs());
    assert!(
        body.starts_with("GET /hello?x=1 HTTP/1.1\r\n"),
        "{body:?} {err}"
    );
    assert!(
        body.contains(&format!("Host: a.example.com:{port}\r\n")),
        "{body}"
    );
    assert!(body.contains("x-forwarded-proto: https\r\n"), "{body}");
    // A request body, and a 1 MiB response under flow control.
    let (body, ver, _) = curl(
        &pki,
        port,
        "a.example.com",
        "/",
        &["--http2", "--data-binary", "0123456789"],
    );
    assert_eq!(ver, "2 200");
    assert!(
        body.contains("content-length: 10\r\n") && body.ends_with("0123456789"),
        "{body:?}"
    );
    let (big, ver, _) = curl(&pki, port, "a.example.com", "/big", &["--http2"]);
    assert_eq!(ver, "2 200");
    assert_eq!(big.len(), 1 << 20);
    assert_eq!(alpn_of(port, "h2,http/1.1"), "ALPN protocol: h2");
    // nghttp over TLS: two requests on one connection.
    let out = Command::new("nghttp")
        .args(["-n", "-s", "-t", "20"])
        .arg(format!("https://127.0.0.1:{port}/a"))
        .arg(format!("https://127.0.0.1:{port}/big"))
        .output()
        .expect("nghttp (nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches(" 200 ").count(), 2, "{text}");
    assert!(count.load(Ordering::SeqCst) >= 5);
    assert_eq!(rm.logs().matches("panicked").count(), 0);
}

fn many_streams_on_one_tls_connection(io: &str) {
    let (_pki, _rm, _b, count, port) = start(io, "true");
    let out = Command::new("h2load")
        .args(["-n", "1000", "-c", "1", "-m", "100"])
        .arg(format!("https://127.0.0.1:{port}/x"))
        .output()
        .expect("h2load (nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Application protocol: h2"), "{text}");
    assert!(text.contains("1000 succeeded"), "{text}");
    assert!(text.contains("status codes: 1000 2xx"), "{text}");
    assert_eq!(count.load(Ordering::SeqCst), 1000);
}

fn http11_only_clients_and_http2_off(io: &str) {
    // http2 on: a client offering only http/1.1 gets HTTP/1.1.
    let (pki, _rm, _b, count, port) = start(io, "true");
    let (body, ver, err) = curl(&pki, port, "a.example.com", "/one", &["--http1.1"]);
    assert_eq!(ver, "1.1 200", "{err}");
    assert!(body.starts_with("GET /one HTTP/1.1\r\n"), "{body:?}");
    assert_eq!(alpn_of(port, "http/1.1"), "ALPN protocol: http/1.1");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // http2 off: no h2 offered; curl --http2 falls back to HTTP/1.1.
    let (pki, _rm, _b, count, port) = start(io, "false");
    let (body, ver, err) = curl(&pki, port, "a.example.com", "/two", &["--http2"]);
    assert_eq!(ver, "1.1 200", "{err}");
    assert!(body.starts_with("GET /two HTTP/1.1\r\n"), "{body:?}");
    assert_eq!(alpn_of(port, "h2"), "No ALPN negotiated");
    assert_eq!(alpn_of(port, "h2,http/1.1"), "ALPN protocol: http/1.1");
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

/// A port shared by routes for a.example.com and b.example.com (the first
/// carries both certificates): over h2, an :authority the connection's
/// certificate does not cover gets 421; a port where one route has
/// `http2: false` offers no h2 at all.
fn shared_port_421_by_authority(io: &str) {
    let pki = Pki::new();
    let (ca, cb) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, b) = (backend(ca.clone()), backend(cb.clone()));
    let (port, port2) = (free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{
    "a": {{"listen": "127.0.0.1:{port}", "hosts": ["a.example.com"],
           "tls": {{"certificates": [{certa}, {certb}]}},
           "backends": [{{"internal_port": {ap}}}]}},
    "b": {{"listen": "127.0.0.1:{port}", "hosts": ["b.example.com"],
           "backends": [{{"internal_port": {bp}}}]}},
    "a2": {{"listen": "127.0.0.1:{port2}", "hosts": ["a.example.com"],
           "tls": {{"certificates": [{certa}, {certb}]}},
           "backends": [{{"internal_port": {ap}}}]}},
    "b2": {{"listen": "127.0.0.1:{port2}", "hosts": ["b.example.com"], "http2": false,
           "backends": [{{"internal_port": {bp}}}]}}}}}}"#,
        certa = pki.cert("a"),
        certb = pki.cert("b"),
        ap = a.port,
        bp = b.port,
    );
    let rm = Ringmesh::start(&cfg, io, &[port, port2]);
    let (_, ver, err) = curl(&pki, port, "b.example.com", "/", &["--http2"]);
    assert_eq!(ver, "2 200", "{err}\n{}", rm.logs());
    assert_eq!(cb.load(Ordering::SeqCst), 1);
    let (_, ver, _) = curl(&pki, port, "a.example.com", "/", &["--http2"]);
    assert_eq!(ver, "2 200");
    assert_eq!(ca.load(Ordering::SeqCst), 1);
    // SNI a.example.com, :authority b.example.com: not this certificate's.
    let (body, ver, _) = curl(
        &pki,
        port,
        "a.example.com",
        "/",
        &["--http2", "-H", "Host: b.example.com"],
    );
    assert_eq!(ver, "2 421", "{body}");
    assert_eq!(cb.load(Ordering::SeqCst), 1);
    // One route of port2 has http2 off: the port offers http/1.1 only.
    let (_, ver, err) = curl(&pki, port2, "a.example.com", "/", &["--http2"]);
    assert_eq!(ver, "1.1 200", "{err}");
    assert_eq!(alpn_of(port2, "h2"), "No ALPN negotiated");
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

fn h2spec_over_tls(io: &str) {
    let (_pki, rm, _b, _c, port) = start(io, "true");
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("h2spec.xml");
    let out = Command::new(h2spec())
        .args(["-t", "-k", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-o", "5", "-j"])
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
    let failures: Vec<&str> = text
        .split("Failures:")
        .nth(1)
        .unwrap_or("")
        .lines()
        .filter(|l| l.trim_start().starts_with('×'))
        .collect();
    assert!(
        summary.contains("145 tests"),
        "h2spec did not run: {summary}\n{text}"
    );
    assert!(
        failures.is_empty(),
        "h2spec failures: {failures:#?}\n{summary}"
    );
    assert_eq!(rm.logs().matches("panicked").count(), 0);
}
