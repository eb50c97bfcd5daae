//! HTTP routes end to end through the real binary, on both I/O drivers:
//! head rewriting seen at the backend, Host routing (exact, wildcard,
//! default, 404), request smuggling payloads over the wire, head limits and
//! the slowloris timeout, 50 MiB bodies both ways (Content-Length and
//! chunked, SHA-256 checked), keep-alive upstream reuse and the one safe
//! retry, pipelining, bodiless responses, Expect: 100-continue, HTTP/1.0
//! clients, upgrade to a tunnel (only after a 101), the 502/504/mid-response
//! failures, an early answer during an upload, graceful drain, and random
//! garbage that must not hurt a worker.

mod support;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::http::*;
use support::*;

both_drivers!(
    get_rewrites_hop_by_hop_and_forwarded_headers,
    routes_by_host_exact_wildcard_default_and_404,
    smuggling_payloads_get_400_and_close,
    head_of_1mib_gets_431,
    slow_head_gets_408,
    bodies_of_50mib_both_ways,
    keepalive_reuses_one_upstream_connection,
    idle_keepalive_serves_its_next_request_and_closes_at_its_timeout,
    dead_pooled_connection_is_retried_for_idempotent_requests,
    pipelined_requests_answered_in_order,
    bodiless_responses_keep_framing,
    expect_100_continue_is_relayed,
    http10_clients,
    upgrade_becomes_a_tunnel_only_after_101,
    dead_backend_gets_502,
    slow_backend_gets_504,
    backend_closing_mid_response_closes_client,
    drain_closes_idle_keepalive_and_finishes_inflight,
    early_response_while_uploading,
    garbage_never_hurts_a_worker,
    client_abort_while_waiting_closes_the_upstream,
    abuse_leaves_threads_and_fds_as_they_were,
    upstream_pool_limits_come_from_the_config,
);

/// One http route on `port` to `backend`, with extra `timeouts` fields.
fn config(port: u16, backend: u16, timeouts: &str) -> String {
    format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 2, "shutdown_grace": "5s",
  "routes": {{"{port}": {{"name": "web", "timeouts": {{{timeouts}}},
  "backends": [{{"name": "b0", "internal_port": {backend}}}]}}}}}}"#
    )
}

/// A backend that answers every request with `200` and the request's head as body.
fn mirror() -> Backend {
    http_backend(|req, p| {
        let body = format!("{}{}", req.raw_head, req.body_str());
        p.respond("200 OK", "Content-Type: text/plain\r\n", body.as_bytes());
        true
    })
}

fn start(port: u16, backend: u16, timeouts: &str, io: &str) -> Ringmesh {
    Ringmesh::start(&config(port, backend, timeouts), io, &[port])
}

fn get_rewrites_hop_by_hop_and_forwarded_headers(io: &str) {
    let seen: Arc<Mutex<Vec<Msg>>> = Arc::default();
    let s = seen.clone();
    let backend = http_backend(move |req, p| {
        s.lock().unwrap().push(req.clone());
        p.respond(
            "200 OK",
            "Keep-Alive: timeout=5\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nX-Kept: yes\r\n",
            b"hello",
        );
        true
    });
    let port = free_port();
    let _rm = start(port, backend.port, "", io);
    let mut c = Client::connect(port);
    let host = format!("Example.TEST:{port}");
    let r = c.get(
        "/path?q=1",
        &host,
        "Connection: keep-alive, X-Hop\r\nX-Hop: drop me\r\nKeep-Alive: timeout=9\r\n\
         Proxy-Connection: keep-alive\r\nTE: trailers\r\nX-Forwarded-For: 10.9.8.7\r\n\
         X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nX-Custom: 1\r\n",
    );
    assert_eq!(r.status(), 200);
    assert_eq!(r.body, b"hello");
    assert_eq!(r.header("x-kept"), Some("yes"));
    for gone in ["keep-alive", "x-secret", "connection"] {
        assert_eq!(
            r.header(gone),
            None,
            "{gone} reached the client:\n{}",
            r.raw_head
        );
    }
    let req = seen.lock().unwrap().pop().unwrap();
    assert_eq!(
        (req.first.as_str(), req.second.as_str()),
        ("GET", "/path?q=1")
    );
    assert_eq!(req.header("host"), Some(host.as_str()), "Host preserved");
    assert_eq!(req.header("x-forwarded-for"), Some("10.9.8.7, 127.0.0.1"));
    assert_eq!(req.all("x-forwarded-proto"), ["http"]);
    assert_eq!(req.all("x-forwarded-host"), [host.as_str()]);
    assert_eq!(req.header("x-custom"), Some("1"));
    for gone in [
        "connection",
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "te",
    ] {
        assert_eq!(
            req.header(gone),
            None,
            "{gone} reached the backend:\n{}",
            req.raw_head
        );
    }
    // The connection is still usable.
    let r = c.get("/again", "a", "");
    assert_eq!(r.status(), 200);
}

fn routes_by_host_exact_wildcard_default_and_404(io: &str) {
    let tag = |t: &'static str| {
        http_backend(move |_, p| {
            p.respond("200 OK", "", t.as_bytes());
            true
        })
    };
    let (a, b, c) = (tag("A"), tag("B"), tag("C"));
    let (port, port2) = (free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{
    "{port}": {{"name": "default", "backends": [{{"internal_port": {}}}]}},
    "api": {{"listen": "{port}", "hosts": ["api.example.com"], "backends": [{{"internal_port": {}}}]}},
    "wild": {{"listen": "{port}", "hosts": ["*.example.com"], "backends": [{{"internal_port": {}}}]}},
    "only": {{"listen": "{port2}", "hosts": ["only.example.com"], "backends": [{{"internal_port": {}}}]}}
  }}}}"#,
        a.port, b.port, c.port, b.port
    );
    let _rm = Ringmesh::start(&cfg, io, &[port, port2]);
    let mut cl = Client::connect(port);
    for (host, want) in [
        ("api.example.com", "B"),
        ("API.Example.COM:8080", "B"),
        ("shop.example.com", "C"),
        ("a.b.example.com", "C"),
        ("example.com", "A"),
        ("other.org", "A"),
        ("127.0.0.1", "A"),
    ] {
        let r = cl.get("/", host, "");
        assert_eq!((r.status(), r.body_str().as_str()), (200, want), "{host}");
    }
    // Absolute-form target: its authority routes.
    cl.send(b"GET http://api.example.com/x HTTP/1.1\r\nHost: ignored.org\r\n\r\n");
    assert_eq!(cl.response().body_str(), "B");

    let mut cl = Client::connect(port2);
    assert_eq!(cl.get("/", "only.example.com", "").body_str(), "B");
    let r = cl.get("/", "nope.example.com", "");
    assert_eq!(r.status(), 404);
    assert!(
        r.body_str().contains("no route for host"),
        "{}",
        r.body_str()
    );
    assert!(cl.closed_within(Duration::from_secs(5)));
}

/// Request-smuggling and malformed-head payloads (RFC 9112 §6, §11): each
/// must get a 400 and a close, and never reach the backend.
const SMUGGLING: &[&[u8]] = &[
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,2\r\n\r\nh",
    b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\n",
];

fn smuggling_payloads_get_400_and_close(io: &str) {
    let backend = mirror();
    let port = free_port();
    let _rm = start(port, backend.port, "", io);
    let payloads = SMUGGLING;
    for p in payloads {
        let shown = String::from_utf8_lossy(p);
        let mut c = Client::connect(port);
        c.send(p);
        let r = read_response(&mut c.r, false).unwrap_or_else(|e| panic!("{shown:?}: {e}"));
        assert_eq!(r.status(), 400, "{shown:?}");
        assert_eq!(r.header("connection"), Some("close"), "{shown:?}");
        assert!(
            c.closed_within(Duration::from_secs(5)),
            "{shown:?} left open"
        );
    }
    assert_eq!(backend.accepted(), 0, "a bad request reached the backend");
    let mut c = Client::connect(port);
    let r = c.get("/fine", "a", "");
    assert_eq!(r.status(), 200);
    // Bad framing that arrives after the head went upstream: still a 400 and
    // a close, and the backend connection is dropped, not reused.
    let mut c = Client::connect(port);
    c.send(b"POST /late HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    std::thread::sleep(Duration::from_millis(100));
    c.send(b"5\r\nhello\r\nzz\r\n");
    let r = c.response();
    assert_eq!(r.status(), 400);
    assert!(c.closed_within(Duration::from_secs(5)));
    // 505 for a well-formed but unsupported version.
    let mut c = Client::connect(port);
    c.send(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().status(), 505);
}

fn head_of_1mib_gets_431(io: &str) {
    let backend = mirror();
    let port = free_port();
    let _rm = start(port, backend.port, "", io);
    let mut c = Client::connect(port);
    let mut w = c.w.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "x".repeat(1 << 20)
        );
        // The proxy may close before taking it all.
        let _ = w.write_all(big.as_bytes());
    });
    let r = c.response();
    assert_eq!(r.status(), 431);
    assert!(c.closed_within(Duration::from_secs(5)));
    writer.join().unwrap();
    assert_eq!(backend.accepted(), 0);
}

fn slow_head_gets_408(io: &str) {
    let backend = mirror();
    let port = free_port();
    let _rm = start(port, backend.port, r#""header": "1s""#, io);
    // A byte every 100 ms keeps the connection busy but never completes the
    // head: the deadline covers the whole head, not each read.
    let mut c = Client::connect(port);
    let mut w = c.w.try_clone().unwrap();
    let t0 = Instant::now();
    let dripper = std::thread::spawn(move || {
        for b in b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: "
            .iter()
            .chain([b'x'; 100].iter())
        {
            if w.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let r = c.response();
    let took = t0.elapsed();
    assert_eq!(r.status(), 408);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(c.closed_within(Duration::from_secs(5)));
    dripper.join().unwrap();
    // A client that connects and says nothing gets the same answer.
    let mut c = Client::connect(port);
    let t0 = Instant::now();
    assert_eq!(c.response().status(), 408);
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    // The listener still serves well-behaved clients.
    let mut c = Client::connect(port);
    assert_eq!(c.get("/", "a", "").status(), 200);
}

fn bodies_of_50mib_both_ways(io: &str) {
    const MIB: u64 = 50;
    let backend = http_backend(|req, p| {
        match req.second.as_str() {
            "/upload" => {
                use sha2::{Digest, Sha256};
                let h = hex(&Sha256::digest(&req.body));
                p.respond("200 OK", "", format!("{} {h}", req.body.len()).as_bytes());
            }
            "/cl" => {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", MIB << 20);
                let _ = p.w.write_all(head.as_bytes());
                let _ = send_stream(&mut p.w, 7, MIB);
            }
            "/chunked" => {
                let _ =
                    p.w.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                let mut s = Stream::new(8);
                for i in 0..MIB {
                    let block = s.chunk(i);
                    // Uneven chunk sizes: framing lands everywhere in reads.
                    for part in [&block[..1000], &block[1000..70_000], &block[70_000..]] {
                        let _ = p.w.write_all(format!("{:x}\r\n", part.len()).as_bytes());
                        let _ = p.w.write_all(part);
                        let _ = p.w.write_all(b"\r\n");
                    }
                }
                let _ = p.w.write_all(b"0\r\nX-Trailer: t\r\n\r\n");
            }
            _ => p.respond("404 Not Found", "", b""),
        }
        true
    });
    let port = free_port();
    let _rm = start(port, backend.port, "", io);
    let mut c = Client::connect(port);
    let t0 = Instant::now();

    // Up, Content-Length.
    c.send(
        format!(
            "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            MIB << 20
        )
        .as_bytes(),
    );
    let sent = send_stream(&mut c.w, 1, MIB).unwrap();
    let r = c.response();
    assert_eq!(
        r.body_str(),
        format!("{} {sent}", MIB << 20),
        "upload (Content-Length)"
    );

    // Up, chunked.
    c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    let mut s = Stream::new(2);
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    for i in 0..MIB {
        let block = s.chunk(i).to_vec();
        sha2::Digest::update(&mut h, &block);
        for part in [
            &block[..300_000],
            &block[300_000..300_010],
            &block[300_010..],
        ] {
            c.send(format!("{:x};ext=1\r\n", part.len()).as_bytes());
            c.send(part);
            c.send(b"\r\n");
        }
    }
    c.send(b"0\r\n\r\n");
    let sent = hex(&sha2::Digest::finalize(h));
    let r = c.response();
    assert_eq!(
        r.body_str(),
        format!("{} {sent}", MIB << 20),
        "upload (chunked)"
    );

    // Down, both framings, on the same connection.
    for (path, seed) in [("/cl", 7), ("/chunked", 8)] {
        let r = c.get(path, "a", "");
        assert_eq!(r.status(), 200);
        assert_eq!(r.body.len() as u64, MIB << 20, "{path}");
        let mut want = <sha2::Sha256 as sha2::Digest>::new();
        let mut s = Stream::new(seed);
        for i in 0..MIB {
            sha2::Digest::update(&mut want, s.chunk(i));
        }
        let got = hex(&<sha2::Sha256 as sha2::Digest>::digest(&r.body));
        assert_eq!(got, hex(&sha2::Digest::finalize(want)), "{path}");
    }
    eprintln!("{io}: 4 x {MIB} MiB in {:?}", t0.elapsed());
    assert_eq!(
        backend.accepted(),
        1,
        "one upstream connection for all four"
    );
}

fn keepalive_reuses_one_upstream_connection(io: &str) {
    let backend = mirror();
    let port = free_port();
    let _rm = start(port, backend.port, "", io);
    let mut c = Client::connect(port);
    for i in 0..100 {
        let r = c.get(&format!("/n/{i}"), "a", "");
        assert_eq!(r.status(), 200);
        assert!(r
            .body_str()
            .starts_with(&format!("GET /n/{i} HTTP/1.1\r\n")));
    }
    assert_eq!(backend.accepted(), 1, "upstream connection was not reused");
}

/// An idle keep-alive connection (its task mimalloc's 384 B class: the
/// `Conn` and one wait, its flags in the `Conn`, its deadline in coarse
/// ticks; bench/README.md "Idle memory") serves its next request after
/// idle pauses, the first of them a new connection's head wait, and is
/// closed without a word once idle for `timeouts.keepalive`.
fn idle_keepalive_serves_its_next_request_and_closes_at_its_timeout(io: &str) {
    let backend = mirror();
    let port = free_port();
    let _rm = start(
        port,
        backend.port,
        r#""keepalive": "2s", "header": "5s""#,
        io,
    );
    let mut c = Client::connect(port);
    // Idle before its first request (the head's wait, not a keep-alive one).
    std::thread::sleep(Duration::from_millis(700));
    for i in 0..3 {
        let r = c.get(&format!("/idle/{i}"), "a", "");
        assert_eq!(r.status(), 200);
        assert!(r
            .body_str()
            .starts_with(&format!("GET /idle/{i} HTTP/1.1\r\n")));
        // Idle well under the keep-alive timeout: the next one is served.
        std::thread::sleep(Duration::from_millis(700));
    }
    let t0 = Instant::now();
    assert!(
        c.closed_within(Duration::from_secs(15)),
        "an idle keep-alive connection outlived its timeout (2 s) by 15 s"
    );
    let idle = t0.elapsed() + Duration::from_millis(700);
    assert!(
        idle >= Duration::from_millis(1800),
        "closed after {idle:?} idle, keep-alive timeout 2 s"
    );
    assert_eq!(backend.accepted(), 1, "one upstream connection throughout");
}

fn dead_pooled_connection_is_retried_for_idempotent_requests(io: &str) {
    // Each backend connection answers one request, then swallows the next
    // one and closes without answering: what a backend closing an idle
    // connection at the wrong moment looks like to the proxy.
    let backend = http_backend(|req, p| {
        let served = req.header("x-n").unwrap_or("?").to_string();
        p.respond("200 OK", "", served.as_bytes());
        if let Ok(Some(_)) = read_request(&mut p.r) {
            return false;
        }
        false
    });
    let port = free_port();
    let _rm = start(port, backend.port, "", io);
    let mut c = Client::connect(port);
    assert_eq!(c.get("/", "a", "X-N: 1\r\n").body_str(), "1");
    // Reuses the pooled connection, which dies: retried on a new one.
    assert_eq!(c.get("/", "a", "X-N: 2\r\n").body_str(), "2");
    assert_eq!(backend.accepted(), 2);
    // A POST is not retried: the client learns the backend failed.
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nX-N: 3\r\nContent-Length: 2\r\n\r\nhi");
    let r = c.response();
    assert_eq!(r.status(), 502, "{}", r.body_str());
    assert!(r.body_str().contains("route \"web\""), "{}", r.body_str());
}

fn pipelined_requests_answered_in_order(io: &str) {
    let backend = http_backend(|req, p| {
        // Answer slowly for even paths so order cannot come from timing.
        if req.second.ends_with('0') || req.second.ends_with('2') {
            std::thread::sleep(Duration::from_millis(20));
        }
        let body = format!("{} {}", req.second, req.body_str());
        p.respond("200 OK", "", body.as_bytes());
        true
    });
    let port = free_port();
    let _rm = start(port, backend.port, "", io);
    let mut c = Client::connect(port);
    let mut all = Vec::new();
    for i in 0..10 {
        if i == 4 {
            all.extend_from_slice(b"POST /4 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody");
        } else if i == 6 {
            all.extend_from_slice(
                b"POST /6 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nch\r\n0\r\n\r\n",
            );
        } else {
            all.extend_from_slice(format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        }
    }
    c.send(&all);
    for i in 0..10 {
        let r = c.response();
        let want = match i {
            4 => "/4 body".to_string(),
            6 => "/6 ch".to_string(),
            _ => format!("/{i} "),
        };
        assert_eq!(r.body_str(), want);
    }
}

fn bodiless_responses_keep_framing(io: &str) {
    let backend = http_backend(|req, p| {
        let w = &mut p.w;
        let _ = match req.second.as_str() {
            // A HEAD answer carries the GET's Content-Length but no body.
            "/head" => w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
            "/204" => w.write_all(b"HTTP/1.1 204 No Content\r\n\r\n"),
            "/304" => w.write_all(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"),
            _ => w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        };
        true
    });
    let port = free_port();
    let _rm = start(port, backend.port, "", io);
    let mut c = Client::connect(port);
    c.send(b"HEAD /head HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response_to_head();
    assert_eq!(
        (r.status(), r.header("content-length")),
        (200, Some("1000"))
    );
    assert_eq!(c.get("/204", "a", "").status(), 204);
    let r = c.get("/304", "a", "");
    assert_eq!((r.status(), r.header("etag")), (304, Some("\"x\"")));
    let r = c.get("/after", "a", "");
    assert_eq!((r.status(), r.body_str().as_str()), (200, "ok"));
    assert_eq!(backend.accepted(), 1);
}

fn expect_100_continue_is_relayed(io: &str) {
    let backend = http_backend(|req, p| {
        p.respond("200 OK", "", format!("got {}", req.body_str()).as_bytes());
        true
    });
    let port = free_port();
    let _rm = start(port, backend.port, "", io);
    let mut c = Client::connect(port);
    c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n");
    // The client waits for the backend's go-ahead before sending the body.
    let interim = c.response();
    assert_eq!(interim.status(), 100);
    c.send(b"hello world");
    let r = c.response();
    assert_eq!(
        (r.status(), r.body_str().as_str()),
        (200, "got hello world")
    );
    // Chunked body too, and the connection stays usable.
    c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(c.response().status(), 100);
    c.send(b"5\r\nhello\r\n0\r\n\r\n");
    assert_eq!(c.response().body_str(), "got hello");
    assert_eq!(c.get("/", "a", "").status(), 200);
}

fn http10_clients(io: &str) {
    let seen: Arc<Mutex<Vec<Msg>>> = Arc::default();
    let s = seen.clone();
    let backend = http_backend(move |req, p| {
        s.lock().unwrap().push(req.clone());
        p.respond("200 OK", "", b"old");
        true
    });
    let port = free_port();
    let _rm = start(port, backend.port, "", io);
    // No Host, no keep-alive: answered on the default route, then closed.
    let mut c = Client::connect(port);
    c.send(b"GET /a HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status(), r.body_str().as_str()), (200, "old"));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(5)));
    let req = seen.lock().unwrap().pop().unwrap();
    assert_eq!(req.third, "HTTP/1.0");
    // Keep-alive asked for: kept, and said so.
    let mut c = Client::connect(port);
    for _ in 0..3 {
        c.send(b"GET /b HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n");
        let r = c.response();
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert_eq!(r.body_str(), "old");
    }
}

fn upgrade_becomes_a_tunnel_only_after_101(io: &str) {
    let seen: Arc<Mutex<Vec<Msg>>> = Arc::default();
    let s = seen.clone();
    let backend = http_backend(move |req, p| {
        s.lock().unwrap().push(req.clone());
        if req.second != "/ws" {
            p.respond("200 OK", "", b"no upgrade");
            return true;
        }
        let _ = p.w.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nwelcome",
        );
        // Echo until the client closes, then close our side.
        let mut buf = [0u8; 65536];
        loop {
            match p.r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if p.w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = p.w.shutdown(Shutdown::Write);
        false
    });
    let port = free_port();
    let _rm = start(port, backend.port, "", io);
    let upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n";

    // A refused upgrade stays plain HTTP on the same connection.
    let mut c = Client::connect(port);
    let r = c.get("/refuse", "a", upgrade);
    assert_eq!((r.status(), r.body_str().as_str()), (200, "no upgrade"));
    assert_eq!(c.get("/plain", "a", "").status(), 200);

    c.send(format!("GET /ws HTTP/1.1\r\nHost: a\r\n{upgrade}\r\nearly").as_bytes());
    let r = read_head(&mut c.r).unwrap().unwrap();
    assert_eq!(r.status(), 101);
    assert_eq!(r.header("upgrade"), Some("websocket"));
    assert!(r
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")));
    let mut got = vec![0u8; "welcomeearly".len()];
    c.r.read_exact(&mut got).unwrap();
    assert_eq!(got, b"welcomeearly", "bytes on both sides of the 101 pass");
    for i in 0..20 {
        let msg = format!("frame {i} {}", "x".repeat(i * 1000));
        c.send(msg.as_bytes());
        let mut back = vec![0u8; msg.len()];
        c.r.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    c.w.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.r.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    // A 101 nobody asked for is not forwarded, and opens no tunnel.
    let mut c = Client::connect(port);
    let r = c.get("/ws", "a", "");
    assert_eq!(r.status(), 502, "{}", r.body_str());
    assert!(c.closed_within(Duration::from_secs(5)));
    let reqs = seen.lock().unwrap();
    let ws = reqs.iter().find(|r| r.second == "/ws").unwrap();
    assert_eq!(ws.header("upgrade"), Some("websocket"));
    assert_eq!(ws.header("connection"), Some("upgrade"));
    assert_eq!(ws.header("sec-websocket-version"), Some("13"));
}

fn dead_backend_gets_502(io: &str) {
    let dead = free_port();
    let port = free_port();
    let _rm = start(port, dead, r#""connect": "2s""#, io);
    let mut c = Client::connect(port);
    let t0 = Instant::now();
    let r = c.get("/", "a", "");
    assert_eq!(r.status(), 502);
    let body = r.body_str();
    assert!(body.starts_with("502 Bad Gateway: route \"web\""), "{body}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(c.closed_within(Duration::from_secs(5)));
}

fn slow_backend_gets_504(io: &str) {
    let backend = http_backend(|_, p| {
        std::thread::sleep(Duration::from_secs(3));
        p.respond("200 OK", "", b"late");
        true
    });
    let port = free_port();
    let _rm = start(port, backend.port, r#""response": "1s""#, io);
    let mut c = Client::connect(port);
    let t0 = Instant::now();
    let r = c.get("/", "a", "");
    let took = t0.elapsed();
    assert_eq!(r.status(), 504, "{}", r.body_str());
    assert!(r.body_str().contains("route \"web\""));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
}

fn backend_closing_mid_response_closes_client(io: &str) {
    let served = Arc::new(AtomicUsize::new(0));
    let s = served.clone();
    let backend = http_backend(move |req, p| {
        s.fetch_add(1, Ordering::SeqCst);
        if req.second == "/chunked" {
            let _ = p.w.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n10\r\nshort",
            );
        } else {
            let _ =
                p.w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nonly ten b");
        }
        false
    });
    let port = free_port();
    let _rm = start(port, backend.port, "", io);
    for path in ["/cl", "/chunked"] {
        let mut c = Client::connect(port);
        // Pipeline a second request: it must never get an answer on this connection.
        c.send(
            format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n")
                .as_bytes(),
        );
        let head = read_head(&mut c.r).unwrap().unwrap();
        assert_eq!(head.status(), 200);
        let t0 = Instant::now();
        let mut rest = Vec::new();
        let _ = c.r.read_to_end(&mut rest);
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{path}: client not closed"
        );
        assert!(
            !String::from_utf8_lossy(&rest).contains("HTTP/1.1"),
            "{path}: a response followed a broken one"
        );
    }
    assert_eq!(served.load(Ordering::SeqCst), 2);
}

fn drain_closes_idle_keepalive_and_finishes_inflight(io: &str) {
    let backend = http_backend(|req, p| {
        if req.second == "/slow" {
            std::thread::sleep(Duration::from_millis(800));
        }
        p.respond("200 OK", "", b"done");
        true
    });
    let port = free_port();
    let mut rm = start(port, backend.port, "", io);
    let mut idle = Client::connect(port);
    assert_eq!(idle.get("/", "a", "").status(), 200);
    let mut busy = Client::connect(port);
    busy.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
    std::thread::sleep(Duration::from_millis(200));
    rm.signal(libc::SIGTERM);
    let t0 = Instant::now();
    assert!(
        idle.closed_within(Duration::from_secs(3)),
        "idle keep-alive connection kept open"
    );
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    let r = busy.response();
    assert_eq!((r.status(), r.body_str().as_str()), (200, "done"));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(busy.closed_within(Duration::from_secs(5)));
    let st = rm
        .wait_exit(Duration::from_secs(10))
        .expect("ringmesh did not exit after the drain");
    assert!(st.success(), "exit status {st:?}; log:\n{}", rm.logs());
}

fn early_response_while_uploading(io: &str) {
    // Refuses the upload after reading its head, then reads and discards the
    // body until the proxy closes (as a polite server does).
    let backend = Backend::spawn(|c| {
        let mut r = std::io::BufReader::new(c.try_clone().unwrap());
        let mut w = c;
        if read_head(&mut r).ok().flatten().is_none() {
            return;
        }
        let _ = w.write_all(
            b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 8\r\n\r\ntoo big\n",
        );
        let _ = w.shutdown(Shutdown::Write);
        let mut sink = [0u8; 65536];
        while matches!(r.read(&mut sink), Ok(n) if n > 0) {}
    });
    let port = free_port();
    let _rm = start(port, backend.port, "", io);
    let mut c = Client::connect(port);
    c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 67108864\r\n\r\n");
    let mut w = c.w.try_clone().unwrap();
    let uploader = std::thread::spawn(move || {
        let chunk = vec![b'u'; 1 << 20];
        for _ in 0..64 {
            if w.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let r = c.response();
    assert_eq!((r.status(), r.body_str().as_str()), (413, "too big\n"));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(5)));
    uploader.join().unwrap();
}

fn garbage_never_hurts_a_worker(io: &str) {
    let backend = mirror();
    let port = free_port();
    let rm = start(port, backend.port, "", io);
    let valid: &[u8] =
        b"POST /x?y=1 HTTP/1.1\r\nHost: a.example:80\r\nTransfer-Encoding: chunked\r\n\
        Connection: keep-alive, x-y\r\nExpect: 100-continue\r\nUpgrade: h2c\r\n\r\n\
        5;e=1\r\nhello\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.0\r\n\r\n";
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..300 {
        let payload: Vec<u8> = if i % 3 == 0 {
            (0..rand() % 300).map(|_| rand() as u8).collect()
        } else {
            let mut p = valid.to_vec();
            for _ in 0..1 + rand() % 4 {
                let at = (rand() as usize) % p.len();
                match rand() % 3 {
                    0 => p[at] = rand() as u8,
                    1 => {
                        p.remove(at);
                    }
                    _ => p.insert(at, b"\r\n:; \x00\t"[(rand() % 7) as usize]),
                }
            }
            p
        };
        let mut c = connect(port);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(&payload);
        let _ = c.shutdown(Shutdown::Write);
        let mut sink = Vec::new();
        let _ = c.read_to_end(&mut sink);
    }
    assert!(std::fs::metadata(format!("/proc/{}", rm.pid())).is_ok());
    assert!(!rm.logs().contains("panicked"), "{}", rm.logs());
    // The workers still answer.
    for _ in 0..4 {
        assert_eq!(Client::connect(port).get("/", "a", "").status(), 200);
    }
}

/// A client that gives up while the backend is still thinking: the proxy
/// notices (it watches the client once the backend is slow) and closes the
/// upstream connection long before the response timeout.
fn client_abort_while_waiting_closes_the_upstream(io: &str) {
    let seen: Arc<Mutex<Option<Duration>>> = Arc::new(Mutex::new(None));
    let s = seen.clone();
    let backend = http_backend(move |_, p| {
        let t0 = Instant::now();
        let mut b = [0u8; 1];
        // The request is in; never answer, just wait for the proxy to hang up.
        let r = p.r.read(&mut b);
        if matches!(r, Ok(0)) {
            *s.lock().unwrap() = Some(t0.elapsed());
        }
        false
    });
    let port = free_port();
    let _rm = start(port, backend.port, r#""response": "30s""#, io);
    let mut c = Client::connect(port);
    c.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
    std::thread::sleep(Duration::from_millis(100));
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = seen
        .lock()
        .unwrap()
        .expect("the upstream was not closed after the client left");
    assert!(
        took < Duration::from_secs(5),
        "upstream closed only after {took:?}"
    );
}

fn proc_count(pid: u32, what: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/{what}"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits up to 10 s for `pid`'s fd count to come back to `want`; returns the last count.
fn settle_fds(pid: u32, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = proc_count(pid, "fd");
        if n <= want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 4's abuse bar: a 1 MiB head, 10,000 rapid connect/close cycles
/// (half closed gracefully, half reset, some after a partial request) and
/// the smuggling table leave the process serving, with the same threads and
/// no leaked fd (counted in /proc/PID/fd before and after).
fn abuse_leaves_threads_and_fds_as_they_were(io: &str) {
    let backend = mirror();
    let port = free_port();
    let rm = start(port, backend.port, "", io);
    let pid = rm.pid();
    // Warm up: one exchange parks an upstream connection, like any later one.
    let mut c = Client::connect(port);
    assert_eq!(c.get("/warm", "a", "").status(), 200);
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    let (fds0, threads0) = (proc_count(pid, "fd"), proc_count(pid, "task"));

    let mut c = Client::connect(port);
    let mut w = c.w.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "x".repeat(1 << 20)
        );
        let _ = w.write_all(big.as_bytes());
    });
    assert_eq!(c.response().status(), 431);
    drop(c);
    writer.join().unwrap();

    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for i in 0..10_000u32 {
        let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        if i % 3 == 0 {
            let _ = (&s).write_all(b"GET /half HTTP/1.1\r\nHo");
        }
        if i % 2 == 0 {
            // An abortive close (RST), and no TIME_WAIT left on our side.
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        }
        drop(s);
    }

    for p in SMUGGLING {
        let mut c = Client::connect(port);
        c.send(p);
        let r = read_response(&mut c.r, false).unwrap();
        assert_eq!(r.status(), 400);
    }

    // Counted before the next exchange: that one may land on the other
    // worker and park a second upstream connection there.
    let fds1 = settle_fds(pid, fds0);
    let threads1 = proc_count(pid, "task");
    assert_eq!(threads1, threads0, "thread count changed");
    assert!(fds1 <= fds0, "fd leak: {fds0} fds before, {fds1} after");
    eprintln!("abuse: fds {fds0} -> {fds1}, threads {threads0} -> {threads1}");
    let mut c = Client::connect(port);
    assert_eq!(c.get("/after", "a", "").status(), 200, "still serving");
}

/// `upstream_keepalive`: `max_idle: 0` turns pooling off (a new upstream
/// connection per request); a short `idle_timeout` retires a pooled
/// connection that waited longer than that.
fn upstream_pool_limits_come_from_the_config(io: &str) {
    let with_pool = |port: u16, backend: u16, pool: &str| {
        format!(
            r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1, "shutdown_grace": "5s",
  "upstream_keepalive": {pool},
  "routes": {{"{port}": {{"name": "web", "backends": [{{"name": "b0", "internal_port": {backend}}}]}}}}}}"#
        )
    };
    let backend = mirror();
    let port = free_port();
    let rm = Ringmesh::start(
        &with_pool(port, backend.port, r#"{"max_idle": 0}"#),
        io,
        &[port],
    );
    let before = backend.accepted();
    let mut c = Client::connect(port);
    for i in 0..5 {
        assert_eq!(c.get(&format!("/{i}"), "a", "").status(), 200);
    }
    assert_eq!(backend.accepted() - before, 5, "max_idle 0 still pooled");
    drop(c);
    drop(rm);

    let backend = mirror();
    let port = free_port();
    let _rm = Ringmesh::start(
        &with_pool(
            port,
            backend.port,
            r#"{"max_idle": 4, "idle_timeout": "1s"}"#,
        ),
        io,
        &[port],
    );
    let before = backend.accepted();
    let mut c = Client::connect(port);
    assert_eq!(c.get("/a", "a", "").status(), 200);
    assert_eq!(c.get("/b", "a", "").status(), 200);
    assert_eq!(backend.accepted() - before, 1, "not pooled");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(c.get("/c", "a", "").status(), 200);
    assert_eq!(
        backend.accepted() - before,
        2,
        "an expired connection was reused"
    );
}
