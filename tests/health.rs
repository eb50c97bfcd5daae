//! Active health checks: an HTTP check (`GET /health` must answer 200) moves
//! a backend to unhealthy and back (fall/rise) while its port still accepts,
//! and unhealthy backends get no new connections; a tcp route's connect
//! check notices a backend that stopped listening; when every backend is
//! unhealthy an http client gets a fast 503 naming the route and a tcp
//! client is closed at once. Status, since, latency and detail in /api/status.

mod support;

use std::io::Read;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::http::{http_backend, Client};
use support::procs::{backend_status, get};
use support::*;

/// An HTTP backend answering `tag` on every path but /health, which
/// answers the status in `health`.
fn tagged_http(tag: &'static str, health: Arc<AtomicU16>) -> Backend {
    http_backend(move |req, p| {
        if req.second == "/health" {
            let code = health.load(Ordering::SeqCst);
            p.respond(&format!("{code} X"), "", b"h\n");
        } else {
            p.respond("200 OK", "", tag.as_bytes());
        }
        true
    })
}

fn wait_health(api: u16, key: &str, name: &str, want: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ok = wait_until(Duration::from_secs(15), || {
        last = backend_status(api, key, name);
        last["health"]["status"] == want
    });
    assert!(ok, "{name} never became {want}: {last}");
    last
}

fn http_health_moves_traffic(io: &str) {
    let (ha, hb) = (Arc::new(AtomicU16::new(200)), Arc::new(AtomicU16::new(200)));
    let a = tagged_http("A", ha.clone());
    let b = tagged_http("B", hb.clone());
    let (port, api) = (free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{"{port}": {{"name": "web",
     "health": {{"path": "/health", "interval": "100ms", "timeout": "1s", "rise": 2, "fall": 2}},
     "backends": [{{"name": "a", "internal_port": {}}}, {{"name": "b", "internal_port": {}}}]}}}}}}"#,
        a.port, b.port
    );
    let _rm = Ringmesh::start(&cfg, io, &[port, api]);
    let key = port.to_string();
    let st = wait_health(api, &key, "a", "healthy");
    assert!(st["health"]["latency_ms"].as_f64().unwrap() >= 0.0, "{st}");
    assert!(st["process"].is_null(), "an address has no process: {st}");
    wait_health(api, &key, "b", "healthy");

    let tags = |n: usize| -> Vec<String> {
        let mut c = Client::connect(port);
        (0..n).map(|_| c.get("/", "x", "").body_str()).collect()
    };
    let mixed = tags(10);
    assert!(
        mixed.contains(&"A".into()) && mixed.contains(&"B".into()),
        "{mixed:?}"
    );

    // a fails its check but still accepts connections: only the active
    // check can tell, and it must keep traffic away from a.
    ha.store(500, Ordering::SeqCst);
    let st = wait_health(api, &key, "a", "unhealthy");
    let detail = st["health"]["detail"].as_str().unwrap();
    assert!(detail.contains("answered 500, expected 200"), "{st}");
    let only_b = tags(20);
    assert!(only_b.iter().all(|t| t == "B"), "{only_b:?}");

    // Back after `rise` good checks.
    ha.store(200, Ordering::SeqCst);
    let st = wait_health(api, &key, "a", "healthy");
    assert!(st["health"]["since_seconds"].as_f64().unwrap() < 10.0);
    assert!(tags(10).contains(&"A".into()));

    // Everything down: a fast 503 that names the route.
    ha.store(503, Ordering::SeqCst);
    hb.store(500, Ordering::SeqCst);
    wait_health(api, &key, "a", "unhealthy");
    wait_health(api, &key, "b", "unhealthy");
    let t0 = Instant::now();
    let (s, body) = get(port, "/");
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("route \"web\""), "{body}");
    assert!(body.contains("no healthy backend"), "{body}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
}

fn tcp_connect_check_and_fast_close(io: &str) {
    let a = Backend::tagged("A");
    let b = Backend::tagged("B");
    let (port, api) = (free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{"{port}": {{"name": "t", "protocol": "tcp",
     "health": {{"interval": "100ms", "timeout": "500ms", "rise": 1, "fall": 2}},
     "backends": [{{"name": "a", "internal_port": {}}}, {{"name": "b", "internal_port": {}}}]}}}}}}"#,
        a.port, b.port
    );
    let _rm = Ringmesh::start(&cfg, io, &[port, api]);
    let key = port.to_string();
    wait_health(api, &key, "a", "healthy");
    wait_health(api, &key, "b", "healthy");

    // a stops listening: unhealthy, and every new connection goes to b.
    drop(a);
    let st = wait_health(api, &key, "a", "unhealthy");
    assert!(
        st["health"]["detail"].as_str().unwrap().contains("connect"),
        "{st}"
    );
    let failures_before = st["connect_failures"].as_u64().unwrap();
    for _ in 0..10 {
        let mut c = connect(port);
        assert_eq!(read_line(&mut c), "B");
    }
    let st = backend_status(api, &key, "a");
    assert_eq!(
        st["connect_failures"].as_u64().unwrap(),
        failures_before,
        "an unhealthy backend was still tried: {st}"
    );

    // Both gone: a client is closed at once, no connect attempt, no hang.
    drop(b);
    wait_health(api, &key, "b", "unhealthy");
    let t0 = Instant::now();
    let mut c = connect(port);
    let mut buf = [0u8; 16];
    let n = c.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
}

both_drivers!(http_health_moves_traffic, tcp_connect_check_and_fast_close);

#[test]
fn disabled_checks_leave_status_unknown() {
    let a = Backend::tagged("A");
    let (port, api) = (free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 1,
  "routes": {{"{port}": {{"protocol": "tcp", "health": false,
     "backends": [{{"name": "a", "internal_port": {}}}]}}}}}}"#,
        a.port
    );
    let _rm = Ringmesh::start(&cfg, "auto", &[port, api]);
    std::thread::sleep(Duration::from_millis(500));
    let st = backend_status(api, &port.to_string(), "a");
    assert_eq!(st["health"]["status"], "unknown", "{st}");
    assert!(st["health"]["latency_ms"].is_null(), "{st}");
    let mut c = connect(port);
    assert_eq!(read_line(&mut c), "A");
}
