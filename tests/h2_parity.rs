//! HTTP/2 streams get what HTTP/1.1 exchanges get, end to end through the
//! real binary on both I/O drivers: one access log line per stream (curl
//! `--http2` over TLS with its TLS version and SNI, curl
//! `--http2-prior-knowledge` on cleartext, an error answered by the proxy,
//! and h2load's N requests giving exactly N lines); the middleware chain on
//! h2 streams (a table of cases over request_id, headers, strip_prefix,
//! rewrite, cors, max_body, ip_filter, basic_auth, redirect, rate_limit
//! and concurrency_limit); `X-Client-Cert-Subject` on mTLS (a forged one
//! dropped), `X-Forwarded-Proto: https` and `hsts`; 103 Early Hints and
//! 100 Continue from an HTTP/1.1 backend to an h2 client; the chain and the
//! log line of a gRPC call to an h2c backend (Python grpcio both ends);
//! `forward_auth` on h2 streams (denied with the service's answer, allowed
//! with its headers).

#[allow(dead_code)]
#[path = "support/h2raw.rs"]
mod h2raw;
mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::http::*;
use support::pki::Pki;
use support::*;

both_drivers!(
    access_log_line_per_stream,
    middleware_table_on_h2_streams,
    client_cert_subject_and_forwarded_proto,
    informational_responses_reach_h2_clients,
    middleware_and_log_on_an_h2c_backend,
    forward_auth_on_h2_streams,
);

/// What curl saw: final status, every header block (1xx ones too), body.
struct Resp {
    status: u16,
    /// Lowercase `name: value` lines of every header block, in order.
    heads: String,
    body: String,
}

impl Resp {
    /// The value of `name` in the final header block.
    fn header(&self, name: &str) -> Option<String> {
        let last = self.heads.rsplit("\nhttp/").next().unwrap_or(&self.heads);
        last.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(|v| v.trim().to_string())
    }
}

/// Runs curl with `args` (an h2 mode among them), headers to a file.
fn curl(args: &[&str]) -> Resp {
    let dir = tempfile::tempdir().unwrap();
    let heads = dir.path().join("h");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D"])
        .arg(&heads)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Resp {
        status: code.trim().parse().unwrap_or(0),
        heads: std::fs::read_to_string(&heads)
            .unwrap_or_default()
            .to_ascii_lowercase()
            .replace('\r', "")
            + &String::from_utf8_lossy(&out.stderr),
        body: body.to_string(),
    }
}

fn h2c(url: &str, extra: &[&str]) -> Resp {
    let mut args = vec!["--http2-prior-knowledge"];
    args.extend_from_slice(extra);
    args.push(url);
    curl(&args)
}

/// A backend answering `200` with the request head and body it saw, and a
/// header to remove; `/slow` answers after a second.
fn mirror(count: Arc<AtomicUsize>) -> Backend {
    http_backend(move |req, p| {
        count.fetch_add(1, Ordering::SeqCst);
        if req.second.starts_with("/slow") {
            std::thread::sleep(Duration::from_secs(1));
        }
        let body = format!("{}{}", req.raw_head, req.body_str());
        p.respond(
            "200 OK",
            "X-Powered-By: php\r\nContent-Type: text/plain\r\n",
            body.as_bytes(),
        );
        true
    })
}

fn log_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits (bounded) for lines matching `f`; returns them once at least `n`.
fn wait_matching(path: &Path, n: usize, f: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut got = Vec::new();
    wait_until(Duration::from_secs(15), || {
        got = log_lines(path).into_iter().filter(|v| f(v)).collect();
        got.len() >= n
    });
    got
}

fn h2load(args: &[&str]) -> String {
    let out = Command::new("h2load")
        .args(args)
        .output()
        .expect("h2load (nghttp2-client)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The status of each stream when nghttp sends `urls` at once on one
/// connection (curl 7.88 fails to reuse a prior-knowledge connection).
fn nghttp_codes(urls: &[String]) -> Vec<u16> {
    let out = Command::new("nghttp")
        .args(["-n", "-s", "-t", "20"])
        .args(urls)
        .output()
        .expect("nghttp (nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    let codes: Vec<u16> = text
        .lines()
        .skip_while(|l| !l.contains("responseEnd"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(4)?.parse().ok())
        .collect();
    assert_eq!(codes.len(), urls.len(), "{text}");
    codes
}

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

fn middleware_table_on_h2_streams(io: &str) {
    let count = Arc::new(AtomicUsize::new(0));
    let b = mirror(count.clone());
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("users.htpasswd");
    let st = Command::new("htpasswd")
        .args(["-cbB", "-C", "5", pw.to_str().unwrap(), "alice", "s3cret"])
        .status()
        .expect("htpasswd (apache2-utils)");
    assert!(st.success());
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let (chain, auth, redir, limit, conc, rewrite) =
        (ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]);
    let route = |name: &str, mw: &str| {
        format!(
            r#""name": "{name}", "middleware": {mw}, "backends": [{{"name": "b", "internal_port": {}}}]"#,
            b.port
        )
    };
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 2, "routes": {{
  "{chain}": {{{}}},
  "{auth}": {{{}}},
  "{redir}": {{{}}},
  "{limit}": {{{}}},
  "{conc}": {{{}}},
  "{rewrite}": {{{}}}
  }}}}"#,
        route(
            "chain",
            r#"[{"type": "request_id"},
                {"type": "headers", "request": {"set": {"X-Env": "prod"}, "remove": ["X-Debug"]},
                 "response": {"add": {"X-Served-By": "ringmesh"}, "remove": ["X-Powered-By"]}},
                {"type": "ip_filter", "deny": ["127.0.0.3/32", "10.9.9.9/32"], "trusted_proxies": ["127.0.0.1/32"]},
                {"type": "cors", "origins": ["https://app.test"], "methods": ["GET", "POST"]},
                {"type": "max_body", "max": 100},
                {"type": "strip_prefix", "prefix": "/api"}]"#
        ),
        route(
            "auth",
            &format!(
                r#"[{{"type": "basic_auth", "htpasswd": "{}", "realm": "ops"}}]"#,
                pw.display()
            )
        ),
        route(
            "redir",
            r#"[{"type": "redirect", "status": 308, "host": "new.example:8443", "path": "/v2{path}{query}"}]"#
        ),
        route(
            "limit",
            r#"[{"type": "rate_limit", "rate": 1, "burst": 2, "key": "client_ip"}]"#
        ),
        route("conc", r#"[{"type": "concurrency_limit", "max": 1}]"#),
        route(
            "rewrite",
            r#"[{"type": "rewrite", "regex": "^/old/(.*)$", "replacement": "/new/$1"}]"#
        ),
    );
    let rm = Ringmesh::start(&cfg, io, &ports);
    let url = |port: u16, path: &str| format!("http://127.0.0.1:{port}{path}");

    // headers, request_id, strip_prefix (and cors, max_body, ip_filter pass).
    let r = h2c(
        &url(chain, "/api/v1?q=1"),
        &["-H", "X-Debug: 1", "-H", "X-Request-Id: client-id"],
    );
    assert_eq!(r.status, 200, "{}", rm.logs());
    assert!(r.body.starts_with("GET /v1?q=1 HTTP/1.1\r\n"), "{}", r.body);
    assert!(r.body.contains("X-Env: prod\r\n"), "{}", r.body);
    assert!(
        !r.body.to_ascii_lowercase().contains("x-debug"),
        "{}",
        r.body
    );
    assert!(
        !r.body.contains("client-id"),
        "untrusted id kept: {}",
        r.body
    );
    let id = r.header("x-request-id").expect("x-request-id");
    assert!(
        r.body.contains(&format!("X-Request-Id: {id}\r\n")),
        "{}",
        r.body
    );
    assert_eq!(r.header("x-served-by").as_deref(), Some("ringmesh"));
    assert_eq!(r.header("x-powered-by"), None);

    // The table: (port, curl args, path, status, header that must be there).
    let before = count.load(Ordering::SeqCst);
    let big = "x".repeat(200);
    type Case<'a> = (u16, Vec<&'a str>, &'a str, u16, Option<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        // cors: a preflight answered by the proxy, 204.
        (
            chain,
            vec![
                "-X",
                "OPTIONS",
                "-H",
                "Origin: https://app.test",
                "-H",
                "Access-Control-Request-Method: POST",
            ],
            "/api/x",
            204,
            Some(("access-control-allow-origin", "https://app.test")),
        ),
        (
            chain,
            vec![
                "-X",
                "OPTIONS",
                "-H",
                "Origin: https://evil.test",
                "-H",
                "Access-Control-Request-Method: POST",
            ],
            "/api/x",
            403,
            None,
        ),
        // max_body: a Content-Length over the limit.
        (chain, vec!["--data-binary", &big], "/api/x", 413, None),
        // ip_filter: a denied client address; a denied client named by
        // X-Forwarded-For from a trusted proxy (read from the right, across
        // fields, skipping trusted hops).
        (chain, vec!["--interface", "127.0.0.3"], "/api/x", 403, None),
        (
            chain,
            vec!["-H", "X-Forwarded-For: 10.9.9.9"],
            "/api/x",
            403,
            None,
        ),
        (
            chain,
            vec![
                "-H",
                "X-Forwarded-For: 10.9.9.9",
                "-H",
                "X-Forwarded-For: 127.0.0.1",
            ],
            "/api/x",
            403,
            None,
        ),
        // basic_auth against an htpasswd file from apache2-utils.
        (
            auth,
            vec![],
            "/",
            401,
            Some(("www-authenticate", r#"basic realm="ops", charset="utf-8""#)),
        ),
        (auth, vec!["-u", "alice:wrong"], "/", 401, None),
        // redirect: the proxy answers.
        (
            redir,
            vec![],
            "/a?b",
            308,
            Some(("location", "http://new.example:8443/v2/a?b")),
        ),
    ];
    for (port, args, path, status, header) in &cases {
        let r = h2c(&url(*port, path), args);
        assert_eq!(r.status, *status, "{port} {args:?} {path}: {}", r.heads);
        if let Some((name, value)) = header {
            assert_eq!(r.header(name).as_deref(), Some(*value), "{}", r.heads);
        }
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        before,
        "a refused or answered stream never reaches the backend"
    );
    // ...and those that pass do.
    let r = h2c(&url(auth, "/in"), &["-u", "alice:s3cret"]);
    assert_eq!(r.status, 200);
    let r = h2c(&url(chain, "/api/z"), &["-H", "X-Forwarded-For: 10.1.1.1"]);
    assert_eq!(r.status, 200);
    let r = h2c(
        &url(chain, "/api/y"),
        &["-H", "Origin: https://app.test", "--data-binary", "small"],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.test")
    );
    assert!(r.body.starts_with("POST /y HTTP/1.1\r\n") && r.body.ends_with("small"));
    // max_body on a body sent without a length (it streams): 413 once past
    // the limit; a small one goes through (chunked to the backend).
    let upload = |data: Vec<u8>| -> (String, String) {
        let mut c = Command::new("curl")
            .args([
                "--http2-prior-knowledge",
                "-sS",
                "--max-time",
                "20",
                "-X",
                "POST",
            ])
            .args(["-T", "-", "-w", "\n%{http_code}"])
            .arg(url(chain, "/api/up"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = c.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = c.wait_with_output().unwrap();
        writer.join().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (
            code.to_string(),
            format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (code, text) = upload(vec![b'y'; 50]);
    assert_eq!(code, "200", "{text}");
    assert!(
        text.contains("Transfer-Encoding: chunked") || text.contains("transfer-encoding: chunked"),
        "{text}"
    );
    assert!(text.ends_with(&"y".repeat(50)), "{text}");
    let (code, text) = upload(vec![b'z'; 64 * 1024]);
    assert_eq!(code, "413", "{text}");
    let r = h2c(&url(rewrite, "/old/x?k=v"), &[]);
    assert!(
        r.body.starts_with("GET /new/x?k=v HTTP/1.1\r\n"),
        "{}",
        r.body
    );

    // rate_limit: 10 streams on one connection at 1/s, burst 2.
    let urls: Vec<String> = (0..10).map(|i| url(limit, &format!("/r{i}"))).collect();
    let codes = nghttp_codes(&urls);
    let limited = codes.iter().filter(|c| **c == 429).count();
    let ok = codes.iter().filter(|c| **c == 200).count();
    assert_eq!(limited + ok, 10, "{codes:?}");
    assert!((1..=4).contains(&ok) && limited >= 6, "{codes:?}");

    // concurrency_limit: two streams at once on one connection, one refused;
    // its place is given back when a stream ends.
    let mut codes = nghttp_codes(&[url(conc, "/slow1"), url(conc, "/slow2")]);
    codes.sort();
    assert_eq!(codes, [200, 503]);
    for _ in 0..3 {
        assert_eq!(h2c(&url(conc, "/after"), &[]).status, 200);
    }
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

fn middleware_and_log_on_an_h2c_backend(io: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/grpc_peer.py");
    let dir = tempfile::tempdir().unwrap();
    let gport = free_port();
    let mut server = ChildGuard(
        Command::new("python3")
            .args([script, "server", &gport.to_string()])
            .arg(dir.path().join("cancelled"))
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
    assert_eq!(line.trim(), "ready", "grpc server did not start");
    let port = free_port();
    let log = dir.path().join("access.log");
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1,
  "access_log": {{"path": "{}"}},
  "routes": {{"{port}": {{"name": "grpc",
    "middleware": [{{"type": "request_id"}},
                   {{"type": "headers", "request": {{"set": {{"x-env": "prod"}}, "remove": ["x-debug"]}},
                    "response": {{"add": {{"x-served-by": "ringmesh"}}}}}},
                   {{"type": "ip_filter", "deny": ["127.0.0.3/32"]}},
                   {{"type": "max_body", "max": 1000}}],
    "backends": [{{"internal_port": {gport}, "protocol": "h2c"}}]}}}}}}"#,
        log.display()
    );
    let rm = Ringmesh::start(&cfg, io, &[port]);
    // A unary call with metadata; prints the server's view, the initial
    // metadata the client got, and a call from a denied address.
    let py = format!(
        r#"
import grpc
ch = grpc.insecure_channel("127.0.0.1:{port}")
call = ch.unary_unary("/t.T/Meta", request_serializer=lambda b: b, response_deserializer=lambda b: b)
body, c = call.with_call(b"x", metadata=[("x-debug", "1"), ("x-app", "a")], timeout=20)
print(body.decode(), end="")
print("initial:" + ",".join(f"{{k}}={{v}}" for k, v in c.initial_metadata()))
try:
    call(b"x" * 5000, timeout=20)
    print("big: ok")
except grpc.RpcError as e:
    print("big:", e.code())
"#
    );
    let out = Command::new("timeout")
        .args(["60", "python3", "-c", &py])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        rm.logs()
    );
    assert!(text.contains("x-env=prod\n"), "{text}");
    assert!(text.contains("x-app=a\n"), "{text}");
    assert!(!text.contains("x-debug"), "{text}");
    assert!(text.contains("x-forwarded-proto=http\n"), "{text}");
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id="))
        .expect("x-request-id upstream")
        .to_string();
    assert_eq!(id.len(), 36, "{id}");
    let initial = text.lines().find(|l| l.starts_with("initial:")).unwrap();
    assert!(initial.contains("x-served-by=ringmesh"), "{initial}");
    assert!(initial.contains(&format!("x-request-id={id}")), "{initial}");
    // max_body on a streamed body (gRPC sends no content-length): the
    // proxy answers 413, which grpcio reports as an error status.
    let big = text.lines().find(|l| l.starts_with("big:")).unwrap_or("");
    assert!(big.starts_with("big: StatusCode."), "{text}");
    let ls = wait_matching(&log, 2, |v| v["target"] == "/t.T/Meta");
    assert_eq!(ls[1]["status"], 413, "{:?}", ls[1]);
    // The first call's access log line.
    let v = &ls[0];
    assert_eq!(v["protocol"], "HTTP/2.0");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["status"], 200);
    assert_eq!(v["request_id"], id.as_str());
    assert_eq!(v["upstream"], format!("127.0.0.1:{gport}"));
    assert!(v["upstream_ttfb_us"].is_u64(), "{v}");
    // gRPC frames: a 5-byte prefix and the message each way.
    assert_eq!(v["bytes_in"], 6);
    assert!(v["bytes_out"].as_u64().unwrap() > 5, "{v}");
    // A denied client: 403 from the proxy, the backend never sees it.
    let r = h2c(
        &format!("http://127.0.0.1:{port}/t.T/Meta"),
        &[
            "--interface",
            "127.0.0.3",
            "-H",
            "content-type: application/grpc",
        ],
    );
    assert_eq!(r.status, 403, "{}", r.heads);
}

fn forward_auth_on_h2_streams(io: &str) {
    // The auth service: 2xx with X-User for "Authorization: ok", else 403
    // with a body of its own.
    let auth = http_backend(|req, p| {
        if req.header("authorization") == Some("ok") {
            p.respond("204 No Content", "X-User: alice\r\n", b"");
        } else {
            p.respond(
                "403 Forbidden",
                "Content-Type: text/plain\r\n",
                b"denied by auth\n",
            );
        }
        true
    });
    let count = Arc::new(AtomicUsize::new(0));
    let b = mirror(count.clone());
    let port = free_port();
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1,
  "routes": {{"{port}": {{"name": "fa",
    "middleware": [{{"type": "forward_auth", "address": "127.0.0.1:{}", "response_headers": ["X-User"]}}],
    "backends": [{{"name": "b", "internal_port": {}}}]}}}}}}"#,
        auth.port, b.port
    );
    let _rm = Ringmesh::start(&cfg, io, &[port]);
    let url = format!("http://127.0.0.1:{port}/private");
    // Denied: the service's answer, and the backend never sees the request.
    let r = h2c(&url, &["-H", "X-User: mallory"]);
    assert_eq!(r.status, 403, "{}", r.heads);
    assert_eq!(r.body, "denied by auth\n");
    assert_eq!(count.load(Ordering::SeqCst), 0);
    // Allowed: the request goes upstream with the service's X-User (the
    // client's own replaced).
    let r = h2c(&url, &["-H", "Authorization: ok", "-H", "X-User: mallory"]);
    assert_eq!(r.status, 200, "{}", r.heads);
    assert!(r.body.contains("X-User: alice\r\n"), "{}", r.body);
    assert!(!r.body.contains("mallory"), "{}", r.body);
    assert_eq!(count.load(Ordering::SeqCst), 1);
}
