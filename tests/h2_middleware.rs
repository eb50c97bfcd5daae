//! The middleware chain on HTTP/2 streams, end to end through the real
//! binary on both I/O drivers: a table of cases over request_id, headers,
//! strip_prefix, rewrite, cors, max_body (a length, and a body that
//! streams), ip_filter (with trusted proxies), basic_auth, redirect,
//! rate_limit and concurrency_limit with h2 clients (curl, nghttp); the
//! chain and the log line of a gRPC call to an h2c backend (Python grpcio
//! both ends); `forward_auth` (denied with the service's answer, allowed
//! with its headers). The same middleware over HTTP/1.1: tests/middleware.rs.

#[allow(dead_code)]
#[path = "support/h2cli.rs"]
mod h2cli;
mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use h2cli::*;
use support::http::*;
use support::*;

both_drivers!(
    middleware_table_on_h2_streams,
    middleware_and_log_on_an_h2c_backend,
    forward_auth_on_h2_streams,
);

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
