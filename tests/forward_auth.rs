//! `forward_auth` end to end on both drivers, against a real auth service
//! (a keep-alive HTTP/1.1 server on loopback): allowed requests reach the
//! backend with the service's chosen headers, denials (with a
//! Content-Length or a chunked body) reach the client as the service sent
//! them, the subrequest carries the original method, target and chosen
//! headers, the auth connection is reused, and an unreachable or slow
//! service gives 502/504 with counted reasons in /api/status and /metrics;
//! and the same against Python's http.server (tests/fixtures/auth_service.py).

mod support;

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::http::*;
use support::*;

both_drivers!(
    forward_auth_allows_denies_and_fails_cleanly,
    forward_auth_with_a_python_auth_service,
    forward_auth_replaces_a_pooled_connection_the_service_closed,
);

/// A backend that answers `200` with the request head as its body.
fn mirror() -> Backend {
    http_backend(|req, p| {
        p.respond("200 OK", "", req.raw_head.as_bytes());
        true
    })
}

/// The auth service: decides by the Authorization header; records each
/// subrequest's head.
fn auth_service(seen: Arc<Mutex<Vec<String>>>) -> Backend {
    http_backend(move |req, p| {
        seen.lock().unwrap().push(req.raw_head.clone());
        let auth = req.header("authorization").unwrap_or("");
        match auth {
            "Bearer good" => p.respond("200 OK", "X-User: alice\r\nX-Other: no\r\n", b""),
            "Bearer chunk" => {
                let _ = p.w.write_all(
                    b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\nX-Why: chunky\r\n\r\n4\r\nno, \r\n6\r\nnever!\r\n0\r\n\r\n",
                );
            }
            "Bearer slow" => {
                std::thread::sleep(Duration::from_secs(3));
                p.respond("200 OK", "", b"");
            }
            "Bearer huge" => p.respond("401 Unauthorized", "", &vec![b'x'; 5000]),
            _ => p.respond(
                "401 Unauthorized",
                "WWW-Authenticate: Bearer realm=\"t\"\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n",
                b"denied by auth",
            ),
        }
        true
    })
}

fn forward_auth_allows_denies_and_fails_cleanly(io: &str) {
    let b = mirror();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let auth = auth_service(seen.clone());
    let dead = free_port();
    let (port, port2, api) = (free_port(), free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 1,
  "routes": {{
    "{port}": {{"name": "web", "backends": [{{"name": "b0", "internal_port": {bp}}}],
      "middleware": [{{"type": "forward_auth", "address": "127.0.0.1:{ap}", "path": "/check{{uri}}",
        "timeout": "1s", "request_headers": ["Authorization", "X-Trace"], "response_headers": ["X-User"],
        "max_response_body": 1000}}]}},
    "{port2}": {{"name": "noauth", "backends": [{{"name": "b0", "internal_port": {bp}}}],
      "middleware": [{{"type": "forward_auth", "address": "127.0.0.1:{dead}"}}]}}}}}}"#,
        bp = b.port,
        ap = auth.port,
    );
    let _rm = Ringmesh::start(&cfg, io, &[port, port2, api]);

    let mut c = Client::connect(port);
    // Allowed: the backend sees X-User from the service (the client's own
    // X-User replaced), not the service's other headers.
    for _ in 0..3 {
        let m = c.get(
            "/app/x?q=1",
            "site.test",
            "Authorization: Bearer good\r\nX-User: mallory\r\nX-Trace: t1\r\nCookie: c=1\r\n",
        );
        assert_eq!(m.status(), 200, "{}", m.body_str());
        let head = m.body_str();
        assert!(head.starts_with("GET /app/x?q=1 HTTP/1.1"), "{head}");
        assert!(head.contains("X-User: alice"), "{head}");
        assert!(
            !head.contains("mallory") && !head.contains("X-Other"),
            "{head}"
        );
    }
    // The subrequest: original method and target through the template,
    // chosen headers only, X-Forwarded-*.
    {
        let s = seen.lock().unwrap();
        let sub = s.last().unwrap();
        assert!(
            sub.starts_with("GET /check/app/x?q=1 HTTP/1.1\r\n"),
            "{sub}"
        );
        for want in [
            "Authorization: Bearer good",
            "X-Trace: t1",
            "X-Forwarded-Method: GET",
            "X-Forwarded-Uri: /app/x?q=1",
            "X-Forwarded-Host: site.test",
            "X-Forwarded-Proto: http",
            "X-Forwarded-For: 127.0.0.1",
        ] {
            assert!(sub.contains(want), "{want} missing in {sub}");
        }
        assert!(!sub.contains("Cookie"), "{sub}");
    }
    // The auth connection was kept alive and reused.
    assert_eq!(auth.accepted(), 1);

    // Denied: status, headers and body as the service sent them; the
    // client connection stays open (keep-alive).
    let m = c.get("/app", "site.test", "");
    assert_eq!(m.status(), 401);
    assert_eq!(m.header("www-authenticate"), Some("Bearer realm=\"t\""));
    assert_eq!(m.header("content-type"), Some("text/plain"));
    assert_eq!(m.body_str(), "denied by auth");
    // A chunked denial body passes through.
    let m = c.get("/app", "site.test", "Authorization: Bearer chunk\r\n");
    assert_eq!(m.status(), 403);
    assert_eq!(m.header("x-why"), Some("chunky"));
    assert_eq!(m.body_str(), "no, never!");
    assert_eq!(m.header("content-length"), Some("10"));
    // An HTTP/1.0 client gets it with a Content-Length too.
    let mut c10 = Client::connect(port);
    c10.send(b"GET /app HTTP/1.0\r\nHost: site.test\r\nAuthorization: Bearer chunk\r\n\r\n");
    let m = c10.response();
    assert_eq!((m.status(), m.body_str().as_str()), (403, "no, never!"));
    // A POST is asked about with its method, its body is not sent.
    c.send(b"POST /form HTTP/1.1\r\nHost: site.test\r\nAuthorization: Bearer good\r\nContent-Length: 5\r\n\r\nhello");
    let m = c.response();
    assert_eq!(m.status(), 200);
    assert!(m.body_str().contains("POST /form"), "{}", m.body_str());
    assert!(seen
        .lock()
        .unwrap()
        .last()
        .unwrap()
        .starts_with("POST /check/form "));
    // A denial body over max_response_body: 502.
    let m = c.get("/app", "site.test", "Authorization: Bearer huge\r\n");
    assert_eq!(m.status(), 502);
    // Too slow: 504 after the 1 s timeout.
    let m = c.get("/app", "site.test", "Authorization: Bearer slow\r\n");
    assert_eq!(m.status(), 504);
    // Still serving on the same connection.
    let m = c.get("/ok", "site.test", "Authorization: Bearer good\r\n");
    assert_eq!(m.status(), 200);

    // Unreachable auth service: 502, the backend never asked.
    let mut c2 = Client::connect(port2);
    let m = c2.get("/", "a", "Authorization: Bearer good\r\n");
    assert_eq!(m.status(), 502, "{}", m.body_str());
    assert!(
        m.body_str().contains("cannot be reached"),
        "{}",
        m.body_str()
    );

    // Counted reasons, per route.
    let st = api::get(api, "/api/status").json();
    let routes = st["routes"].as_array().unwrap();
    let counters = |name: &str| {
        routes.iter().find(|r| r["name"] == name).unwrap()["middleware_counters"][0].clone()
    };
    let web = counters("web");
    assert_eq!(web["allowed"], 5, "{web}");
    assert_eq!(web["denied"], 3, "{web}");
    assert_eq!(web["bad_response"], 1, "{web}");
    assert_eq!(web["timeout"], 1, "{web}");
    assert_eq!(web["unreachable"], 0, "{web}");
    let na = counters("noauth");
    assert_eq!(na["unreachable"], 1, "{na}");
    // And in /metrics.
    let m = api::get(api, "/metrics").body;
    for line in [
        r#"ringmesh_forward_auth_total{route="web",outcome="allowed"} 5"#,
        r#"ringmesh_forward_auth_total{route="web",outcome="timeout"} 1"#,
        r#"ringmesh_forward_auth_total{route="noauth",outcome="unreachable"} 1"#,
    ] {
        assert!(m.lines().any(|l| l == line), "{line} not in {m}");
    }
}

fn forward_auth_with_a_python_auth_service(io: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("port");
    let child = std::process::Command::new(support::procs::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/auth_service.py"
        ))
        .arg(&port_file)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    let _guard = ChildGuard(child);
    let mut auth_port = 0u16;
    assert!(
        wait_until(Duration::from_secs(20), || {
            auth_port = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            auth_port != 0
        }),
        "python auth service did not start"
    );
    let b = mirror();
    let port = free_port();
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1,
  "routes": {{"{port}": {{"name": "web", "backends": [{{"name": "b0", "internal_port": {bp}}}],
      "middleware": [{{"type": "forward_auth", "address": "127.0.0.1:{auth_port}",
        "response_headers": ["X-User", "X-Seen-Uri"]}}]}}}}}}"#,
        bp = b.port,
    );
    let _rm = Ringmesh::start(&cfg, io, &[port]);
    let mut c = Client::connect(port);
    for i in 0..3 {
        let m = c.get(&format!("/p/{i}"), "a", "Authorization: Bearer py\r\n");
        assert_eq!(m.status(), 200);
        let head = m.body_str();
        assert!(head.contains("X-User: py-user"), "{head}");
        assert!(head.contains(&format!("X-Seen-Uri: /p/{i}")), "{head}");
        let m = c.get("/p", "a", "Authorization: Bearer other\r\n");
        assert_eq!(m.status(), 401);
        assert_eq!(m.header("www-authenticate"), Some(r#"Bearer realm="py""#));
        assert_eq!(m.body_str(), "python says no");
    }
    // HEAD is asked about as HEAD: the denial has no body.
    c.send(b"HEAD /p HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response_to_head().status(), 401);
    assert_eq!(
        c.get("/p", "a", "Authorization: Bearer py\r\n").status(),
        200
    );
}

/// An auth service that closes each connection right after answering,
/// without saying so: the pooled connection is dead when the next request
/// takes it, and the subrequest is sent again on a new one.
fn forward_auth_replaces_a_pooled_connection_the_service_closed(io: &str) {
    let auth = http_backend(|_req, p| {
        p.respond("204 No Content", "X-User: u\r\n", b"");
        false
    });
    let b = mirror();
    let (port, api) = (free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 1,
  "routes": {{"{port}": {{"name": "web", "backends": [{{"name": "b0", "internal_port": {bp}}}],
      "middleware": [{{"type": "forward_auth", "address": "127.0.0.1:{ap}", "response_headers": ["X-User"]}}]}}}}}}"#,
        bp = b.port,
        ap = auth.port,
    );
    let _rm = Ringmesh::start(&cfg, io, &[port, api]);
    let mut c = Client::connect(port);
    for i in 0..5 {
        let m = c.get("/", "a", "");
        assert_eq!(m.status(), 200, "request {i}: {}", m.body_str());
        assert!(m.body_str().contains("X-User: u"));
        // Let the service's close arrive before the next request.
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(auth.accepted(), 5);
    let st = api::get(api, "/api/status").json();
    let web = &st["routes"][0]["middleware_counters"][0];
    assert_eq!(
        (web["allowed"].as_u64(), web["unreachable"].as_u64()),
        (Some(5), Some(0)),
        "{web}"
    );
}
