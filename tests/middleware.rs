//! Middleware chains end to end through the real binary, on both I/O
//! drivers, each built-in as a table of cases: `headers` (request and
//! response set/add/remove, seen by the backend and the client),
//! `request_id` (generated UUID v7 or a trusted client id, sent upstream,
//! returned, logged), `ip_filter` (allow/deny, X-Forwarded-For only from
//! trusted proxies), `strip_prefix`/`add_prefix`/`rewrite` (the target the
//! backend sees), `redirect` (status and Location), the chain order, a direct answer keeping the
//! connection alive, bodies still passing through, and a reload swapping a
//! chain without touching an open connection.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::http::*;
use support::*;

both_drivers!(
    headers_set_add_remove_both_ways,
    request_id_generated_trusted_and_logged,
    ip_filter_allow_deny_and_trusted_proxies,
    reload_swaps_chain_open_connection_keeps_working,
    path_middleware_rewrites_the_upstream_target,
    redirect_answers_with_location,
    rate_limit_is_one_limit_across_workers,
    cors_preflight_and_response_headers,
    concurrency_limit_caps_in_flight_requests,
    max_body_refuses_large_content_length,
    basic_auth_with_an_htpasswd_file,
);

/// A backend that answers `200` with the request head as its body and a few
/// response headers to edit.
fn mirror() -> Backend {
    http_backend(|req, p| {
        let body = format!("{}{}", req.raw_head, req.body_str());
        p.respond(
            "200 OK",
            "X-Powered-By: php\r\nX-Keep: 1\r\nServer: backend\r\n",
            body.as_bytes(),
        );
        true
    })
}

fn config(port: u16, backend: u16, middleware: &str, top: &str) -> String {
    format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1, {top}
  "routes": {{"{port}": {{"name": "web", "middleware": {middleware},
  "backends": [{{"name": "b0", "internal_port": {backend}}}]}}}}}}"#
    )
}

fn headers_set_add_remove_both_ways(io: &str) {
    let b = mirror();
    let port = free_port();
    let mw = r#"[{"type": "headers",
        "request": {"set": {"X-Env": "prod"}, "add": {"X-Extra": "e"}, "remove": ["X-Debug"]},
        "response": {"set": {"Server": "ringmesh"}, "add": {"X-Served-By": "ringmesh"}, "remove": ["X-Powered-By"]}}]"#;
    let _rm = Ringmesh::start(&config(port, b.port, mw, ""), io, &[port]);
    // (request header lines, header the backend must see, header it must not see)
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("", &["X-Env: prod", "X-Extra: e"], &["X-Debug"]),
        (
            "X-Debug: 1\r\nx-debug: 2\r\nX-Env: dev\r\n",
            &["X-Env: prod", "X-Extra: e"],
            &["X-Debug", "x-debug", "X-Env: dev"],
        ),
        (
            "X-Extra: client\r\n",
            &["X-Extra: client", "X-Extra: e"],
            &[],
        ),
    ];
    let mut c = Client::connect(port);
    for (extra, want, not) in cases {
        let m = c.get("/h", "a", extra);
        assert_eq!(m.status(), 200);
        let seen = m.body_str();
        for w in *want {
            assert!(seen.contains(w), "backend should see {w:?}: {seen}");
        }
        for n in *not {
            assert!(!seen.contains(n), "backend should not see {n:?}: {seen}");
        }
        assert_eq!(m.header("server"), Some("ringmesh"));
        assert_eq!(m.all("server").len(), 1);
        assert_eq!(m.header("x-served-by"), Some("ringmesh"));
        assert_eq!(m.header("x-powered-by"), None);
        assert_eq!(m.header("x-keep"), Some("1"));
    }
    // A body still passes through (spliced, framing unchanged).
    let body = vec![b'z'; 300_000];
    c.send(
        format!(
            "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body);
    let m = c.response();
    assert_eq!(m.status(), 200);
    assert!(m.body_str().ends_with(&"z".repeat(1000)));
    assert_eq!(m.header("x-served-by"), Some("ringmesh"));
}

fn is_uuid_v7(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b[14] == b'7'
        && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

fn request_id_generated_trusted_and_logged(io: &str) {
    let b = mirror();
    let (p1, p2) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("a.log");
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1,
  "access_log": {{"path": "{}"}},
  "routes": {{
   "{p1}": {{"name": "gen", "middleware": [{{"type": "request_id"}}], "backends": [{{"name": "b", "internal_port": {bp}}}]}},
   "{p2}": {{"name": "trust", "middleware": [{{"type": "request_id", "trust": true, "header": "X-Trace"}}],
            "backends": [{{"name": "b", "internal_port": {bp}}}]}}}}}}"#,
        log.display(),
        bp = b.port
    );
    let _rm = Ringmesh::start(&cfg, io, &[p1, p2]);
    // (port, header sent by the client, expected id: None = generated)
    let cases: &[(u16, &str, Option<&str>)] = &[
        (p1, "", None),
        (p1, "X-Request-Id: client-id\r\n", None),
        (p2, "X-Trace: abc-123\r\n", Some("abc-123")),
        (p2, "", None),
        // Not a printable token: replaced.
        (p2, "X-Trace: a b\r\n", None),
    ];
    let mut ids = Vec::new();
    for (port, extra, want) in cases {
        let m = Client::connect(*port).get("/id", "a", extra);
        assert_eq!(m.status(), 200);
        let name = if *port == p1 {
            "x-request-id"
        } else {
            "x-trace"
        };
        let id = m.header(name).expect("id returned").to_string();
        assert_eq!(m.all(name).len(), 1);
        match want {
            Some(w) => assert_eq!(&id, w),
            None => assert!(is_uuid_v7(&id), "{id}"),
        }
        // Sent upstream exactly once.
        let seen = m.body_str();
        let upstream: Vec<&str> = seen
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
            .collect();
        assert_eq!(upstream.len(), 1, "{seen}");
        assert!(upstream[0].ends_with(&id), "{seen}");
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
    let mut lines = Vec::new();
    wait_until(Duration::from_secs(10), || {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>();
        lines.len() >= cases.len()
    });
    let logged: Vec<String> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|v| v["request_id"].as_str().map(String::from))
        .collect();
    for id in &ids {
        assert!(logged.contains(id), "{id} not in {logged:?}");
    }
}

fn ip_filter_allow_deny_and_trusted_proxies(io: &str) {
    let b = mirror();
    let (allow, deny, proxied) = (free_port(), free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1,
  "routes": {{
   "{allow}": {{"middleware": [{{"type": "ip_filter", "allow": ["127.0.0.0/8", "::1"]}}], "backends": [{{"name": "b", "internal_port": {bp}}}]}},
   "{deny}": {{"middleware": [{{"type": "ip_filter", "deny": ["127.0.0.1"]}}], "backends": [{{"name": "b", "internal_port": {bp}}}]}},
   "{proxied}": {{"middleware": [{{"type": "ip_filter", "allow": ["10.0.0.0/8", "2001:db8::/32"], "deny": ["10.9.9.9"],
                  "trusted_proxies": ["127.0.0.1/32", "192.168.0.0/16"]}}],
                 "backends": [{{"name": "b", "internal_port": {bp}}}]}}}}}}"#,
        bp = b.port
    );
    let _rm = Ringmesh::start(&cfg, io, &[allow, deny, proxied]);
    let cases: &[(u16, &str, u16)] = &[
        (allow, "", 200),
        (allow, "X-Forwarded-For: 8.8.8.8\r\n", 200),
        (deny, "", 403),
        (deny, "X-Forwarded-For: 10.1.1.1\r\n", 403),
        // The peer 127.0.0.1 is trusted: X-Forwarded-For names the client.
        (proxied, "", 403),
        (proxied, "X-Forwarded-For: 10.1.2.3\r\n", 200),
        (proxied, "X-Forwarded-For: 10.9.9.9\r\n", 403),
        (proxied, "X-Forwarded-For: 2001:db8::5\r\n", 200),
        // Read from the right, skipping trusted hops.
        (
            proxied,
            "X-Forwarded-For: 8.8.8.8, 10.1.2.3, 192.168.1.1\r\n",
            200,
        ),
        // A spoofed left part does not help: the nearest untrusted hop decides.
        (proxied, "X-Forwarded-For: 10.1.2.3, 8.8.8.8\r\n", 403),
        (
            proxied,
            "X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-For: 8.8.8.8\r\n",
            403,
        ),
        (proxied, "X-Forwarded-For: garbage\r\n", 403),
    ];
    for (i, (port, extra, want)) in cases.iter().enumerate() {
        let mut c = Client::connect(*port);
        let m = c.get("/ip", "a", extra);
        assert_eq!(m.status(), *want, "case {i}: {extra:?}");
        if *want == 403 {
            // A direct answer keeps the connection: the next request is served.
            let m2 = c.get("/ip", "a", extra);
            assert_eq!(m2.status(), 403, "case {i} again");
        }
    }
}

fn reload_swaps_chain_open_connection_keeps_working(io: &str) {
    let b = mirror();
    let port = free_port();
    let v1 = r#"[{"type": "headers", "request": {"set": {"X-Version": "one"}}}]"#;
    let v2 = r#"[{"type": "headers", "request": {"set": {"X-Version": "two"}}}]"#;
    let api = free_port();
    let top = format!(r#""dashboard_port": "{api}","#);
    let cfg = |mw: &str| config(port, b.port, mw, &top).replace(r#""dashboard_port": "", "#, "");
    let rm = Ringmesh::start(&cfg(v1), io, &[port, api]);
    let mut c = Client::connect(port);
    assert!(c.get("/", "a", "").body_str().contains("X-Version: one"));
    // The status API shows the route's chain.
    let st = support::api::get(api, "/api/status").json();
    assert_eq!(
        st["routes"][0]["middleware"],
        serde_json::json!(["headers"])
    );
    std::fs::write(&rm.config, cfg(v2)).unwrap();
    rm.signal(libc::SIGHUP);
    // The open keep-alive connection picks up the new chain between requests.
    let ok = wait_until(Duration::from_secs(10), || {
        c.get("/", "a", "").body_str().contains("X-Version: two")
    });
    assert!(ok, "{}", rm.logs());
    // An invalid chain is refused and the old one stays.
    let bad = r#"[{"type": "ip_filter", "allow": ["300.0.0.0/8"]}]"#;
    std::fs::write(&rm.config, cfg(bad)).unwrap();
    rm.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || rm
        .logs()
        .contains("middleware[0].allow[0]")));
    assert!(c.get("/", "a", "").body_str().contains("X-Version: two"));
}

/// The request line the mirror backend saw.
fn seen_line(m: &Msg) -> String {
    m.body_str().lines().next().unwrap_or_default().to_string()
}

fn path_middleware_rewrites_the_upstream_target(io: &str) {
    let b = mirror();
    let (strip, add, rw, chain) = (free_port(), free_port(), free_port(), free_port());
    let route = |port: u16, mw: &str| {
        format!(
            r#""{port}": {{"middleware": {mw}, "backends": [{{"name": "b", "internal_port": {}}}]}}"#,
            b.port
        )
    };
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1, "routes": {{ {}, {}, {}, {} }}}}"#,
        route(strip, r#"[{"type": "strip_prefix", "prefix": "/api/"}]"#),
        route(add, r#"[{"type": "add_prefix", "prefix": "/v1"}]"#),
        route(
            rw,
            r#"[{"type": "rewrite", "regex": "^/users/(\\d+)/posts/(\\w+)$", "replacement": "/posts/$2?user=$1"}]"#
        ),
        route(
            chain,
            r#"[{"type": "strip_prefix", "prefix": "/api"}, {"type": "add_prefix", "prefix": "/internal"},
                          {"type": "rewrite", "regex": "^/internal/old(.*)$", "replacement": "/internal/new$1"}]"#
        ),
    );
    let _rm = Ringmesh::start(&cfg, io, &[strip, add, rw, chain]);
    let cases: &[(u16, &str, &str)] = &[
        (strip, "/api/users?x=1", "GET /users?x=1 HTTP/1.1"),
        (strip, "/api", "GET / HTTP/1.1"),
        (strip, "/apix/y", "GET /apix/y HTTP/1.1"),
        (strip, "/other", "GET /other HTTP/1.1"),
        (add, "/a/b?q", "GET /v1/a/b?q HTTP/1.1"),
        (add, "/", "GET /v1/ HTTP/1.1"),
        (
            rw,
            "/users/42/posts/hello",
            "GET /posts/hello?user=42 HTTP/1.1",
        ),
        (
            rw,
            "/users/x/posts/hello",
            "GET /users/x/posts/hello HTTP/1.1",
        ),
        (
            chain,
            "/api/old/thing?z",
            "GET /internal/new/thing?z HTTP/1.1",
        ),
        (chain, "/keep", "GET /internal/keep HTTP/1.1"),
    ];
    for (port, target, want) in cases {
        let m = Client::connect(*port).get(target, "a", "");
        assert_eq!(m.status(), 200);
        assert_eq!(seen_line(&m), *want, "{target}");
    }
    // An absolute-form target is rewritten too (origin-form upstream).
    let mut c = Client::connect(strip);
    c.send(b"GET http://a/api/abs?k HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(seen_line(&c.response()), "GET /abs?k HTTP/1.1");
}

fn redirect_answers_with_location(io: &str) {
    let b = mirror();
    let (p1, p2) = (free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1, "routes": {{
  "{p1}": {{"middleware": [{{"type": "redirect", "status": 301, "scheme": "https"}}], "backends": [{{"name": "b", "internal_port": {bp}}}]}},
  "{p2}": {{"middleware": [{{"type": "redirect", "status": 308, "host": "new.example:8443", "path": "/v2{{path}}{{query}}"}}],
          "backends": [{{"name": "b", "internal_port": {bp}}}]}}}}}}"#,
        bp = b.port
    );
    let _rm = Ringmesh::start(&cfg, io, &[p1, p2]);
    let cases: &[(u16, &str, &str, u16, &str)] = &[
        (
            p1,
            "/x/y?z=1",
            "old.example",
            301,
            "https://old.example/x/y?z=1",
        ),
        (p1, "/", "h:81", 301, "https://h:81/"),
        (p2, "/a?b", "ignored", 308, "http://new.example:8443/v2/a?b"),
    ];
    let mut c = Client::connect(p1);
    for (port, target, host, status, loc) in cases {
        if *port != p1 {
            c = Client::connect(*port);
        }
        let m = c.get(target, host, "");
        assert_eq!(m.status(), *status);
        assert_eq!(m.header("location"), Some(*loc));
    }
    assert_eq!(b.accepted(), 0, "a redirect never reaches the backend");
}

fn rate_limit_is_one_limit_across_workers(io: &str) {
    const RATE: u64 = 100;
    const SECS: u64 = 5;
    let b = mirror();
    let port = free_port();
    let mw =
        format!(r#"[{{"type": "rate_limit", "rate": {RATE}, "burst": 1, "key": "client_ip"}}]"#);
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{"{port}": {{"name": "web", "middleware": {mw},
  "backends": [{{"name": "b0", "internal_port": {}}}]}}}}}}"#,
        b.port
    );
    let _rm = Ringmesh::start(&cfg, io, &[port]);
    // One denied request shows the headers.
    let mut c = Client::connect(port);
    let mut denied = None;
    for _ in 0..50 {
        let m = c.get("/", "a", "");
        if m.status() == 429 {
            denied = Some(m);
            break;
        }
    }
    let m = denied.expect("a burst of 50 gets a 429");
    assert!(m.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(m.header("ratelimit-limit"), Some("1"));
    assert_eq!(m.header("ratelimit-remaining"), Some("0"));
    assert!(m.header("ratelimit-reset").is_some());
    drop(c);
    std::thread::sleep(Duration::from_millis(200));

    // 64 connections (SO_REUSEPORT spreads them over both workers), each
    // as fast as it can for SECS seconds.
    let start = std::time::Instant::now();
    let end = start + Duration::from_secs(SECS);
    let threads: Vec<_> = (0..64)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(port);
                let (mut ok, mut limited) = (0u64, 0u64);
                while std::time::Instant::now() < end {
                    match c.get("/", "a", "").status() {
                        200 => ok += 1,
                        429 => limited += 1,
                        s => panic!("unexpected status {s}"),
                    }
                }
                (ok, limited)
            })
        })
        .collect();
    let (mut ok, mut limited) = (0u64, 0u64);
    for t in threads {
        let (o, l) = t.join().unwrap();
        ok += o;
        limited += l;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let rate = ok as f64 / elapsed;
    eprintln!("accepted {ok}, limited {limited} in {elapsed:.2}s: {rate:.1}/s");
    assert!(limited > ok, "the clients must push well past the limit");
    assert!(
        (rate - RATE as f64).abs() <= RATE as f64 * 0.10,
        "accepted {rate:.1}/s, configured {RATE}/s"
    );
}

fn cors_preflight_and_response_headers(io: &str) {
    let b = http_backend(|_, p| {
        p.respond(
            "200 OK",
            "Access-Control-Allow-Origin: https://evil.example\r\n",
            b"ok",
        );
        true
    });
    let port = free_port();
    let mw = r#"[{"type": "cors", "origins": ["https://app.example.com", "https://*.example.org"],
                 "methods": ["GET", "POST"], "expose": ["X-Total"], "credentials": true, "max_age": 60}]"#;
    let _rm = Ringmesh::start(&config(port, b.port, mw, ""), io, &[port]);
    let pre = "OPTIONS /x HTTP/1.1\r\nHost: a\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n";
    // (request, origin, status, Access-Control-Allow-Origin)
    let cases: &[(&str, &str, u16, Option<&str>)] = &[
        (
            pre,
            "https://app.example.com",
            204,
            Some("https://app.example.com"),
        ),
        (
            pre,
            "https://a.b.example.org",
            204,
            Some("https://a.b.example.org"),
        ),
        (pre, "https://example.org", 403, None),
        (pre, "https://app.example.com.evil", 403, None),
        (
            "GET /x HTTP/1.1\r\nHost: a\r\n",
            "https://app.example.com",
            200,
            Some("https://app.example.com"),
        ),
        (
            "GET /x HTTP/1.1\r\nHost: a\r\n",
            "https://other.com",
            200,
            Some("https://evil.example"),
        ),
    ];
    let mut c = Client::connect(port);
    for (req, origin, status, acao) in cases {
        c.send(format!("{req}Origin: {origin}\r\n\r\n").as_bytes());
        let m = c.response();
        assert_eq!(m.status(), *status, "{origin}");
        assert_eq!(m.header("access-control-allow-origin"), *acao, "{origin}");
        assert!(m.all("access-control-allow-origin").len() <= 1);
        if *status == 204 {
            assert_eq!(m.header("access-control-allow-methods"), Some("GET, POST"));
            assert_eq!(
                m.header("access-control-allow-headers"),
                Some("content-type")
            );
            assert_eq!(m.header("access-control-max-age"), Some("60"));
            assert_eq!(m.header("access-control-allow-credentials"), Some("true"));
            assert_eq!(m.header("content-length"), None);
        }
        if *status == 200 && origin.contains("app.") {
            assert_eq!(m.header("access-control-expose-headers"), Some("X-Total"));
            assert_eq!(m.header("vary"), Some("Origin"));
        }
    }
    // No Origin: not a CORS request, the backend's answer as is.
    let m = c.get("/x", "a", "");
    assert_eq!(
        m.header("access-control-allow-origin"),
        Some("https://evil.example")
    );
}

fn concurrency_limit_caps_in_flight_requests(io: &str) {
    let b = http_backend(|_, p| {
        std::thread::sleep(Duration::from_millis(1500));
        p.respond("200 OK", "", b"slow");
        true
    });
    let port = free_port();
    let mw = r#"[{"type": "request_id"}, {"type": "concurrency_limit", "max": 2}]"#;
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{"{port}": {{"name": "web", "middleware": {mw},
  "backends": [{{"name": "b0", "internal_port": {}}}]}}}}}}"#,
        b.port
    );
    let _rm = Ringmesh::start(&cfg, io, &[port]);
    for round in 0..2 {
        let threads: Vec<_> = (0..5)
            .map(|_| {
                std::thread::spawn(move || {
                    let m = Client::connect(port).get("/", "a", "");
                    (m.status(), m.header("retry-after").map(String::from))
                })
            })
            .collect();
        let mut got: Vec<(u16, Option<String>)> =
            threads.into_iter().map(|t| t.join().unwrap()).collect();
        got.sort();
        let ok = got.iter().filter(|(s, _)| *s == 200).count();
        let refused = got
            .iter()
            .filter(|(s, r)| *s == 503 && r.as_deref() == Some("1"))
            .count();
        assert_eq!((ok, refused), (2, 3), "round {round}: {got:?}");
    }
    // Every place was given back: sequential requests all pass.
    let mut c = Client::connect(port);
    for _ in 0..3 {
        assert_eq!(c.get("/", "a", "").status(), 200);
    }
}

fn max_body_refuses_large_content_length(io: &str) {
    let b = mirror();
    let port = free_port();
    let mw = r#"[{"type": "max_body", "max": 1000}]"#;
    let _rm = Ringmesh::start(&config(port, b.port, mw, ""), io, &[port]);
    // (body length, expected status)
    for (len, want) in [(0usize, 200u16), (1000, 200), (1001, 413), (5_000_000, 413)] {
        let mut c = Client::connect(port);
        c.send(format!("POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n").as_bytes());
        if want == 200 {
            c.send(&vec![b'x'; len]);
        }
        let m = c.response();
        assert_eq!(m.status(), want, "{len}");
        if want == 413 {
            // The body is never read: the connection closes.
            assert!(c.closed_within(Duration::from_secs(5)));
        }
    }
    // GET without a body passes.
    assert_eq!(Client::connect(port).get("/", "a", "").status(), 200);
}

fn basic_auth_with_an_htpasswd_file(io: &str) {
    use base64::Engine as _;
    let b = mirror();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.htpasswd");
    // Debian's apache2-utils writes the file, one user per format it
    // knows: bcrypt (-B, cost 5), SHA-1 (-s), MD5 $apr1$ (-m, the
    // default), SHA-256 and SHA-512 crypt (-2, -5), DES crypt (-d), plain (-p).
    let f = file.to_str().unwrap();
    for args in [
        vec!["-cbB", "-C", "5", f, "alice", "s3cret"],
        vec!["-bs", f, "bob", "pa:ss"],
        vec!["-b", f, "md5", "pw-md5"],
        vec!["-b2", f, "sha256", "pw-sha256"],
        vec!["-b5", f, "sha512", "pw-sha512"],
        vec!["-bd", f, "des", "pw-des"],
        vec!["-bp", f, "plain", "pw-plain"],
    ] {
        let st = std::process::Command::new("htpasswd")
            .args(&args)
            .status()
            .expect("htpasswd (apache2-utils)");
        assert!(st.success());
    }
    let port = free_port();
    let mw = format!(
        r#"[{{"type": "basic_auth", "htpasswd": "{}", "realm": "ops"}}]"#,
        file.display()
    );
    let _rm = Ringmesh::start(&config(port, b.port, &mw, ""), io, &[port]);
    let basic = |cred: &str| {
        format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(cred)
        )
    };
    let cases: Vec<(String, u16)> = vec![
        (String::new(), 401),
        (basic("alice:s3cret"), 200),
        (basic("alice:s3cret"), 200), // the cached second time
        (basic("alice:wrong"), 401),
        (basic("bob:pa:ss"), 200),
        (basic("bob:pa"), 401),
        (basic("carol:x"), 401),
        (basic("md5:pw-md5"), 200),
        (basic("md5:pw-md5"), 200),
        (basic("md5:pw-md"), 401),
        (basic("sha256:pw-sha256"), 200),
        (basic("sha256:pw-sha512"), 401),
        (basic("sha512:pw-sha512"), 200),
        (basic("des:pw-des"), 200),
        // DES crypt reads 8 characters at most: "pw-des" + anything
        // beyond 8 would pass; a different short password does not.
        (basic("des:pw-dex"), 401),
        (basic("plain:pw-plain"), 200),
        (basic("plain:pw-plaiN"), 401),
        (basic("plain:"), 401),
        ("Authorization: Basic !!!notbase64\r\n".into(), 401),
        ("Authorization: Bearer abc\r\n".into(), 401),
    ];
    let mut c = Client::connect(port);
    for (hdr, want) in &cases {
        let m = c.get("/", "a", hdr);
        assert_eq!(m.status(), *want, "{hdr:?}");
        if *want == 401 {
            assert_eq!(
                m.header("www-authenticate"),
                Some(r#"Basic realm="ops", charset="UTF-8""#)
            );
        }
    }
    // A missing file, or a user of a scheme htpasswd never writes, is a
    // config error with its path.
    let other = dir.path().join("other.htpasswd");
    std::fs::write(&other, "carol:{SSHA}c2FsdGVkaGFzaA==\n").unwrap();
    for f in [dir.path().join("missing"), other] {
        let mw = format!(
            r#"[{{"type": "basic_auth", "htpasswd": "{}"}}]"#,
            f.display()
        );
        let err = ringmesh::config::parse(&config(port, b.port, &mw, "")).unwrap_err();
        assert!(err.to_string().contains("middleware[0].htpasswd"), "{err}");
    }
}
