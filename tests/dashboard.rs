//! The dashboard at `/` on the API address: the page, its assets and their
//! security headers over plain HTTP, then the real page in headless Chromium
//! (Debian's `chromium` + `chromium-driver`, driven over WebDriver): it lists
//! the routes, shows a cold-started process's pid, kills it with the Kill
//! button, shows it stopped, and shows the new pid after the next request
//! starts it again; the log tail shows the process's output; the config
//! editor shows every validation error with its path.
//!
//! Without chromium or chromedriver the browser tests FAIL (they say what to
//! install) unless `RINGMESH_SKIP_BROWSER=1` is set. With
//! `RINGMESH_DASHBOARD_SCREENSHOT=<file.png>` the kill test saves a
//! screenshot of the page there (docs/dashboard.png is one).

mod support;
mod webdriver;

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::json;
use support::procs::*;
use support::*;
use webdriver::{Browser, Tools};

const WAIT: Duration = Duration::from_secs(30);

/// The browser tools, or `None` when `RINGMESH_SKIP_BROWSER=1` says to skip.
fn tools() -> Option<Tools> {
    match Tools::find() {
        Ok(t) => Some(t),
        Err(e) if std::env::var("RINGMESH_SKIP_BROWSER").as_deref() == Ok("1") => {
            eprintln!("RINGMESH_SKIP_BROWSER=1: skipping the browser test ({e})");
            None
        }
        Err(e) => panic!(
            "the dashboard browser tests need headless Chromium: {e}.\n\
             Install them with `apt-get install chromium chromium-driver` (scripts/test.sh does), \
             or set RINGMESH_SKIP_BROWSER=1 to skip these tests on purpose."
        ),
    }
}

/// Starts ringmesh and waits for its API only (a probe connection to a
/// route would cold-start its backend).
fn start(cfg: &str, api: u16) -> Ringmesh {
    Ringmesh::start(cfg, "uring", &[api])
}

/// A raw request to the API: status, head (lowercase names) and body.
fn raw(port: u16, method: &str, path: &str, extra: &str) -> (u16, String, String) {
    let mut c = connect(port);
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    let status = s.get(9..12).and_then(|x| x.parse().ok()).unwrap_or(0);
    let (head, body) = s.split_once("\r\n\r\n").unwrap_or((&s, ""));
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
}

#[test]
fn page_assets_and_security_headers() {
    let (port, api) = (free_port(), free_port());
    let backend = Backend::echo();
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 1,
  "routes": {{"{port}": {{"name": "t", "protocol": "tcp", "backends": [{{"internal_port": "{}"}}]}}}}}}"#,
        backend.port
    );
    let _rm = start(&cfg, api);

    for path in ["/", "/index.html"] {
        let (s, head, body) = raw(api, "GET", path, "");
        assert_eq!(s, 200, "{path}: {head}");
        assert_eq!(
            header(&head, "content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(body.starts_with("<!doctype html>"), "{body}");
        assert!(body.contains(r#"<script src="/dashboard.js" defer></script>"#));
        assert!(body.contains(r#"<link rel="stylesheet" href="/dashboard.css">"#));
        let csp = header(&head, "content-security-policy").expect("CSP header");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&head, "x-frame-options"), Some("deny"));
    }
    let (s, head, body) = raw(api, "GET", "/dashboard.js", "");
    assert_eq!(s, 200);
    assert_eq!(
        header(&head, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(body.contains("/api/status") && !body.contains("innerHTML"));
    let (s, head, body) = raw(api, "GET", "/dashboard.css", "");
    assert_eq!(s, 200);
    assert_eq!(
        header(&head, "content-type"),
        Some("text/css; charset=utf-8")
    );
    assert!(body.contains(".route"));
    // The API's JSON carries the same headers.
    let (s, head, _) = raw(api, "GET", "/api/status", "");
    assert_eq!(s, 200);
    assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
    // The page is read-only.
    let (s, _, _) = raw(api, "POST", "/", "");
    assert_eq!(s, 405);
    let (s, _, _) = raw(api, "GET", "/dashboard.jsx", "");
    assert_eq!(s, 404);
}

fn config(api: u16, routes: &[String]) -> String {
    format!(
        r#"{{"service_name": "dash-test", "dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2, "shutdown_grace": "5s",
  "routes": {{ {} }} }}"#,
        routes.join(",\n")
    )
}

/// Selector of a backend row's cell.
fn cell(route: u16, backend: &str, class: &str) -> String {
    format!(r#"article.route[data-route="{route}"] tr[data-backend="{backend}"] td.{class}"#)
}

#[test]
fn browser_kill_and_restart() {
    let Some(tools) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let (port, bport, api, tport) = (free_port(), free_port(), free_port(), free_port());
    let echo = Backend::echo();
    let py = proc_backend("py", bport, &pidfile, &[]);
    let cfg = config(
        api,
        &[
            format!(
                r#""{port}": {{"name": "web", "protocol": "http", "health": {{"path": "/health", "interval": "1s"}}, "backends": [{py}],
                  "middleware": [{{"type": "request_id"}}, {{"type": "compress"}}]}}"#
            ),
            format!(
                r#""{tport}": {{"name": "echo", "protocol": "tcp", "load_balance": "least_conn", "backends": [{{"name": "e1", "internal_host": "127.0.0.1", "internal_port": "{}"}}]}}"#,
                echo.port
            ),
        ],
    );
    let rm = start(&cfg, api);
    let b = Browser::start(&tools, 1280, 1100);
    b.goto(&format!("http://127.0.0.1:{api}/"));

    // The routes are listed with their settings.
    let route = format!(r#"article.route[data-route="{port}"]"#);
    b.wait_text(&format!("{route} .name"), WAIT, |t| t == "web");
    assert_eq!(
        b.text(&format!("{route} .listen")).unwrap(),
        format!("127.0.0.1:{port}")
    );
    assert_eq!(b.text(&format!("{route} .proto")).unwrap(), "http");
    b.wait_text(
        &format!(r#"article.route[data-route="{tport}"] .name"#),
        WAIT,
        |t| t == "echo",
    );
    assert_eq!(
        b.text(&format!(r#"article.route[data-route="{tport}"] .lb"#))
            .unwrap(),
        "least_conn"
    );
    assert_eq!(b.text("#service").unwrap(), "dash-test");
    // Each route's middleware chain, in order; none shown for the tcp route.
    b.wait_text(&format!("{route} .chain"), WAIT, |t| t.contains("compress"));
    assert_eq!(
        b.js(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent);",
            json!([format!("{route} .chain .mw")])
        ),
        json!(["request_id", "compress"])
    );
    assert_eq!(
        b.js(
            "return document.querySelector(arguments[0]).hidden;",
            json!([format!(r#"article.route[data-route="{tport}"] .chain"#)])
        ),
        true
    );
    // Nothing started yet: the process is stopped and cannot be killed.
    b.wait_text(&cell(port, "py", "pstate"), WAIT, |t| t == "stopped");
    assert_eq!(b.text(&cell(port, "py", "pid")).unwrap(), "–");
    let kill = format!(r#"{route} tr[data-backend="py"] button.kill"#);
    assert_eq!(
        b.js(
            "return document.querySelector(arguments[0]).disabled;",
            json!([kill])
        ),
        true
    );
    assert!(pids(&pidfile).is_empty(), "started before any demand");
    // The config editor holds the running config.
    let cfg_text = b.wait("config in the editor", WAIT, |b| {
        b.js("return document.getElementById('config').value;", json!([]))
            .as_str()
            .filter(|v| v.contains("dash-test"))
            .map(str::to_string)
    });
    assert_eq!(cfg_text, cfg);

    // A request starts the process; the page shows its pid.
    let (s, body) = get(port, "/one");
    assert_eq!(s, 200, "{body}\n{}", rm.logs());
    let p1 = pid_of(&body);
    b.wait_text(&cell(port, "py", "pid"), WAIT, |t| t == p1.to_string());
    b.wait_text(&cell(port, "py", "pstate"), WAIT, |t| t == "running");
    assert_eq!(b.text(&cell(port, "py", "restarts")).unwrap(), "0");
    // Its output reaches the log tail.
    b.wait_text(&format!("{route} pre.log"), WAIT, |t| {
        t.contains(&format!("backend {p1} listening")) && t.contains("GET /one")
    });
    // Counters: a request and a connection, bytes both ways.
    b.wait_text(
        &format!(r#"{route} [data-counter="requests"] .value"#),
        WAIT,
        |t| t.parse::<u64>().is_ok_and(|n| n >= 1),
    );
    b.wait_text(
        &format!(r#"{route} [data-counter="bytes_out"] .value"#),
        WAIT,
        |t| t.ends_with('B') && t != "0 B",
    );
    // The health check runs on the started process (latency shown).
    b.wait_text(&cell(port, "py", "health"), WAIT, |t| t == "healthy");
    b.wait_text(&cell(port, "py", "latency"), WAIT, |t| t.ends_with(" ms"));
    // Some traffic on the tcp route, for the counters and the screenshot.
    for _ in 0..3 {
        let mut c = connect(tport);
        c.write_all(b"ping\n").unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
    }
    b.wait_text(
        &format!(
            r#"article.route[data-route="{tport}"] [data-counter="connections_total"] .value"#
        ),
        WAIT,
        |t| t == "3",
    );

    let png = b.screenshot();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "not a PNG of the page"
    );
    if let Ok(path) = std::env::var("RINGMESH_DASHBOARD_SCREENSHOT") {
        std::fs::write(&path, &png).unwrap();
        eprintln!("screenshot saved to {path}");
    }

    // Kill from the page: the process stops, the page says so.
    b.wait("the Kill button enabled", WAIT, |b| {
        (b.js(
            "return document.querySelector(arguments[0]).disabled;",
            json!([kill]),
        ) == false)
            .then_some(())
    });
    b.click(&kill);
    b.wait_text("#action-msg", WAIT, |t| t.contains(&format!("pid {p1}")));
    b.wait_text(&cell(port, "py", "pstate"), WAIT, |t| t == "stopped");
    assert_eq!(b.text(&cell(port, "py", "pid")).unwrap(), "–");
    assert!(
        wait_until(WAIT, || !alive(p1)),
        "process {p1} still runs after Kill"
    );

    // The next request starts it again; the page shows the new pid.
    let (s, body) = get(port, "/two");
    assert_eq!(s, 200, "{body}\n{}", rm.logs());
    let p2 = pid_of(&body);
    assert_ne!(p1, p2);
    b.wait_text(&cell(port, "py", "pid"), WAIT, |t| t == p2.to_string());
    b.wait_text(&cell(port, "py", "pstate"), WAIT, |t| t == "running");
    b.wait_text(&cell(port, "py", "restarts"), WAIT, |t| t == "1");
    b.wait_text(&format!("{route} pre.log"), WAIT, |t| {
        t.contains(&format!("backend {p2} listening"))
    });
    assert_eq!(pids(&pidfile), [p1, p2]);
    // No script error, CSP violation or failed load on the way.
    assert_eq!(b.console_errors(), Vec::<String>::new());
    drop(b);
    drop(rm);
}

/// Needs `PUT /api/config` (the ops branch): the editor shows every
/// validation error with its path and keeps the running config; a good
/// config saves and applies.
#[test]
fn browser_config_editor() {
    let Some(tools) = tools() else { return };
    let (port, api) = (free_port(), free_port());
    let echo = Backend::echo();
    let route = |name: &str| {
        format!(
            r#""{port}": {{"name": "{name}", "protocol": "tcp", "backends": [{{"internal_host": "127.0.0.1", "internal_port": "{}"}}]}}"#,
            echo.port
        )
    };
    let cfg = config(api, &[route("before")]);
    let rm = start(&cfg, api);
    let b = Browser::start(&tools, 1280, 1000);
    b.goto(&format!("http://127.0.0.1:{api}/"));
    b.wait_text(
        &format!(r#"article.route[data-route="{port}"] .name"#),
        WAIT,
        |t| t == "before",
    );
    b.wait("config in the editor", WAIT, |b| {
        b.js("return document.getElementById('config').value;", json!([]))
            .as_str()
            .filter(|v| v.contains("dash-test"))
            .map(|_| ())
    });

    // Two errors: both listed, each with its path; the running config stays.
    let bad = format!(
        r#"{{"dashboard_port": "{api}", "workers": -1, "routes": {{"{port}": {{"backends": [{{"internal_port": 0}}]}}}}}}"#
    );
    b.type_into("#config", &bad);
    b.click("#config-save");
    b.wait("two errors listed", WAIT, |b| {
        (b.count("#config-errors li") == 2).then_some(())
    });
    let paths = b.js(
        "return [...document.querySelectorAll('#config-errors li code.path')].map(e => e.textContent);",
        json!([]),
    );
    assert_eq!(
        paths,
        json!([
            "workers",
            format!(r#"routes."{port}".backends[0].internal_port"#)
        ])
    );
    let messages = b.js(
        "return [...document.querySelectorAll('#config-errors li .message')].map(e => e.textContent);",
        json!([]),
    );
    assert_eq!(
        messages,
        json!([
            "-1 is not a non-negative integer",
            "0 is out of range (1-65535)"
        ])
    );
    let msg = b.text("#config-msg").unwrap();
    assert!(
        msg.contains("400") && msg.contains("old config stays"),
        "{msg}"
    );
    let (s, running) = {
        let (s, _, body) = raw(api, "GET", "/api/config", "");
        (s, body)
    };
    assert_eq!((s, running.as_str()), (200, cfg.as_str()));

    // A good config: saved, applied, shown.
    let good = config(api, &[route("after")]);
    b.type_into("#config", &good);
    b.click("#config-save");
    b.wait_text("#config-msg", WAIT, |t| t.contains("saved and applied"));
    assert_eq!(b.count("#config-errors li"), 0);
    b.wait_text(
        &format!(r#"article.route[data-route="{port}"] .name"#),
        WAIT,
        |t| t == "after",
    );
    let (_, _, body) = raw(api, "GET", "/api/config", "");
    assert_eq!(body, good);
    drop(b);
    drop(rm);
}

/// Needs the ops branch (`api_token`, PUT /api/config, the Origin and token
/// guards) and the dashboard hooks in its api.rs (page paths public, loopback
/// aliases of the API's own origin trusted): the page, opened as
/// `http://localhost:<port>/` for an API on 127.0.0.1, asks for the token
/// once, then shows the routes and saves a config (a same-origin PUT carrying
/// `Origin: http://localhost:<port>` and the token).
#[test]
fn browser_token_and_localhost_origin() {
    let Some(tools) = tools() else { return };
    let (port, api) = (free_port(), free_port());
    let echo = Backend::echo();
    let route = |name: &str| {
        format!(
            r#""{port}": {{"name": "{name}", "protocol": "tcp", "backends": [{{"internal_host": "127.0.0.1", "internal_port": "{}"}}]}}"#,
            echo.port
        )
    };
    let with_token = |c: String| c.replacen('{', r#"{"api_token": "s3cret token", "#, 1);
    let cfg = with_token(config(api, &[route("before")]));
    let rm = start(&cfg, api);
    // Without the token the API refuses, but the page itself loads.
    let (s, _, _) = raw(api, "GET", "/api/status", "");
    assert_eq!(s, 401);
    for path in ["/", "/dashboard.js", "/dashboard.css"] {
        let (s, _, body) = raw(api, "GET", path, "");
        assert_eq!(s, 200, "{path}: {body}");
    }

    let b = Browser::start(&tools, 1280, 1000);
    b.goto(&format!("http://localhost:{api}/"));
    b.wait("the token form", WAIT, |b| {
        (b.js("return document.getElementById('auth').hidden;", json!([])) == false).then_some(())
    });
    assert_eq!(
        b.count("article.route"),
        0,
        "routes shown without the token"
    );
    b.type_into("#token", "s3cret token");
    b.click("#auth-form button");
    let name = format!(r#"article.route[data-route="{port}"] .name"#);
    b.wait_text(&name, WAIT, |t| t == "before");
    assert_eq!(
        b.js("return document.getElementById('auth').hidden;", json!([])),
        true
    );
    b.wait("config in the editor", WAIT, |b| {
        b.js("return document.getElementById('config').value;", json!([]))
            .as_str()
            .filter(|v| v.contains("dash-test"))
            .map(|_| ())
    });

    // A mutating call from the page at http://localhost:<port> goes through.
    let good = with_token(config(api, &[route("after")]));
    b.type_into("#config", &good);
    b.click("#config-save");
    b.wait_text("#config-msg", WAIT, |t| t.contains("saved and applied"));
    b.wait_text(&name, WAIT, |t| t == "after");
    // A page on another origin is still refused.
    let (s, _, body) = raw(
        api,
        "POST",
        "/api/reload",
        "Origin: http://evil.example:1\r\nAuthorization: Bearer s3cret token\r\n",
    );
    assert_eq!(s, 403, "{body}");
    drop(b);
    drop(rm);
}

/// Names from the config are shown as text, never run as markup.
#[test]
fn browser_shows_markup_as_text() {
    let Some(tools) = tools() else { return };
    let (port, api) = (free_port(), free_port());
    let echo = Backend::echo();
    let route_name = r#"<img src=x onerror="window.pwned=1">"#;
    let backend_name = r#""><script>window.pwned=2</script>"#;
    let service = "<b>svc</b>";
    let v = json!({
        "service_name": service,
        "dashboard_port": api.to_string(),
        "listen_host": "127.0.0.1",
        "workers": 1,
        "routes": {port.to_string(): {"name": route_name, "protocol": "tcp", "backends": [
            {"name": backend_name, "internal_host": "127.0.0.1", "internal_port": echo.port.to_string()}
        ]}},
    });
    let rm = start(&v.to_string(), api);
    let b = Browser::start(&tools, 1280, 900);
    b.goto(&format!("http://127.0.0.1:{api}/"));
    let route = format!(r#"article.route[data-route="{port}"]"#);
    b.wait_text(&format!("{route} .name"), WAIT, |t| t == route_name);
    assert_eq!(b.text("#service").unwrap(), service);
    let rows = b.js(
        "return [...document.querySelectorAll('tr[data-backend]')].map(r => [r.dataset.backend, r.querySelector('td.bname').textContent]);",
        json!([]),
    );
    assert_eq!(rows, json!([[backend_name, backend_name]]));
    assert_eq!(b.count("#routes img, #routes script, header b"), 0);
    // Give a planted handler every chance to run.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.js("return window.pwned === undefined;", json!([])), true);
    assert_eq!(b.console_errors(), Vec::<String>::new());
    drop(b);
    drop(rm);
}
