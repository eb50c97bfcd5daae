//! Upstream TLS (origination): real TLS peers behind ringmesh. nginx (started
//! here with an openssl-made CA and certificate) behind an http route: GET
//! and POST with bodies, keep-alive reuse of one TLS connection (nginx's
//! `$connection` stays the same), session resumption when connections are
//! not pooled (`$ssl_session_reused`), a wrong CA answered 502 with the
//! failure counted, `verify: false` against a self-signed certificate,
//! `"protocol": "h2"` (HTTP/2 over TLS by ALPN, nginx's `$server_protocol`).
//! `openssl s_server -rev` behind a tcp route (and re-encryption from a TLS
//! tcp route), and as a cold-started backend process (the readiness probe
//! handshakes). Health checks over TLS mark the backend up and down. A client
//! certificate toward nginx `ssl_verify_client`; a certificate larger than a
//! record; gRPC (grpcio with TLS credentials) behind `"protocol": "h2"`; a
//! WebSocket upgrade to a TLS backend. Backends that reset mid-handshake,
//! answer garbage or stay silent get 502s and a counted reason; the worker
//! keeps serving.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::http::{http_backend, Client};
use support::pki::{run, Pki};
use support::procs::backend_status;
use support::*;

/// An nginx TLS server on `port` with `cert`/`key`; `/hello` answers its
/// connection serial number, whether the session was resumed and the
/// protocol; `/echo` proxies to `echo` (a plain backend echoing bodies).
fn nginx(dir: &Path, port: u16, cert: &str, key: &str, echo: u16, http2: bool) -> ChildGuard {
    nginx_with(dir, port, cert, key, echo, http2, "")
}

/// [`nginx`] with `extra` directives in its server block.
fn nginx_with(
    dir: &Path,
    port: u16,
    cert: &str,
    key: &str,
    echo: u16,
    http2: bool,
    extra: &str,
) -> ChildGuard {
    let d = dir.display();
    let h2 = if http2 { " http2" } else { "" };
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log info;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{port} ssl{h2};
    ssl_certificate {cert};
    ssl_certificate_key {key};
    {extra}
    location /hello {{
      return 200 "conn=$connection reused=$ssl_session_reused proto=$server_protocol sni=$ssl_server_name client=$ssl_client_s_dn\n";
    }}
    location /echo {{
      proxy_pass http://127.0.0.1:{echo};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      add_header X-Conn $connection always;
    }}
  }}
}}
"#
    );
    let path = dir.join(format!("nginx-{port}.conf"));
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("nginx-{port}.out"))).unwrap())
        .spawn()
        .expect("nginx (scripts/test.sh installs it)");
    let g = ChildGuard(child);
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "nginx did not listen on {port}: {}",
        std::fs::read_to_string(dir.join(format!("nginx-{port}.out"))).unwrap_or_default()
    );
    g
}

/// A plain backend echoing request bodies (nginx's `/echo` upstream).
fn echo_backend() -> Backend {
    http_backend(|req, p| {
        let body = req.body.clone();
        p.respond("200 OK", "", &body);
        true
    })
}

fn config(api: u16, port: u16, backend: u16, tls: &str, extra: &str) -> String {
    format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 1 {extra},
  "routes": {{"{port}": {{"name": "web",
     "backends": [{{"name": "ngx", "internal_host": "127.0.0.1", "internal_port": "{backend}", "tls": {tls}}}]}}}}}}"#
    )
}

/// `field=value` out of nginx's `/hello` line.
fn field<'a>(body: &'a str, name: &str) -> &'a str {
    body.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap_or("")
}

fn tls_counters(api: u16, port: u16) -> serde_json::Value {
    backend_status(api, &port.to_string(), "ngx")["tls"].clone()
}

fn https_backend_keepalive_and_bodies(io: &str) {
    let pki = Pki::new();
    let echo = echo_backend();
    let np = free_port();
    let _ng = nginx(
        pki.path("").as_path(),
        np,
        &pki.p("a.pem"),
        &pki.p("a.key"),
        echo.port,
        false,
    );
    let (port, api) = (free_port(), free_port());
    let tls = format!(r#"{{"sni": "a.example.com", "ca": "{}"}}"#, pki.p("ca.pem"));
    let _rm = Ringmesh::start(&config(api, port, np, &tls, ""), io, &[port, api]);

    // Three GETs on one client connection, then three on new client
    // connections: one pooled TLS connection to nginx serves them all.
    let mut c = Client::connect(port);
    let mut conns = Vec::new();
    for _ in 0..3 {
        let r = c.get("/hello", "x", "");
        assert_eq!(r.status(), 200, "{}", r.raw_head);
        let b = r.body_str();
        assert_eq!(field(&b, "sni"), "a.example.com", "{b}");
        assert_eq!(field(&b, "proto"), "HTTP/1.1", "{b}");
        conns.push(field(&b, "conn").to_string());
    }
    for _ in 0..3 {
        let r = Client::connect(port).get("/hello", "x", "");
        assert_eq!(r.status(), 200);
        conns.push(field(&r.body_str(), "conn").to_string());
    }
    assert!(
        conns.iter().all(|c| c == &conns[0] && !c.is_empty()),
        "one pooled TLS connection expected: {conns:?}"
    );

    // POST bodies both ways through the record layer: small, 1 MiB with
    // Content-Length, and chunked (uploaded while the response downloads).
    for size in [5usize, 1 << 20] {
        let body: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        c.send(
            format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n").as_bytes(),
        );
        c.send(&body);
        let r = c.response();
        assert_eq!(r.status(), 200, "{}", r.raw_head);
        assert!(
            r.body == body,
            "echoed body differs ({} bytes)",
            r.body.len()
        );
    }
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    let mut want = Vec::new();
    for i in 0..20u8 {
        let chunk = vec![b'a' + i; 3000];
        c.send(format!("{:x}\r\n", chunk.len()).as_bytes());
        c.send(&chunk);
        c.send(b"\r\n");
        want.extend_from_slice(&chunk);
    }
    c.send(b"0\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status(), 200, "{}", r.raw_head);
    assert!(
        r.body == want,
        "chunked echo differs ({} bytes)",
        r.body.len()
    );

    let t = tls_counters(api, port);
    let full = t["handshakes_full"].as_u64().unwrap_or(0);
    assert!((1..=3).contains(&full), "pooled: few handshakes: {t}");
    assert_eq!(t["failures"]["certificate"], 0, "{t}");
}

fn resumption_without_pool(io: &str) {
    let pki = Pki::new();
    let echo = echo_backend();
    let np = free_port();
    let _ng = nginx(
        pki.path("").as_path(),
        np,
        &pki.p("a.pem"),
        &pki.p("a.key"),
        echo.port,
        false,
    );
    let (port, api) = (free_port(), free_port());
    let tls = format!(r#"{{"sni": "a.example.com", "ca": "{}"}}"#, pki.p("ca.pem"));
    let extra = r#", "upstream_keepalive": {"max_idle": 0}"#;
    let _rm = Ringmesh::start(&config(api, port, np, &tls, extra), io, &[port, api]);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = Client::connect(port).get("/hello", "x", "");
        assert_eq!(r.status(), 200);
        let b = r.body_str();
        seen.push((
            field(&b, "conn").to_string(),
            field(&b, "reused").to_string(),
        ));
    }
    // No pool: a new TLS connection per request, resumed after the first.
    let distinct: std::collections::HashSet<_> = seen.iter().map(|s| &s.0).collect();
    assert_eq!(distinct.len(), 4, "{seen:?}");
    assert_eq!(seen[0].1, ".", "{seen:?}");
    assert!(
        seen[1..].iter().any(|s| s.1 == "r"),
        "no resumption: {seen:?}"
    );
    let t = tls_counters(api, port);
    assert!(t["handshakes_resumed"].as_u64().unwrap_or(0) >= 1, "{t}");
}

fn wrong_ca_and_verify_off(io: &str) {
    let pki = Pki::new();
    let other = Pki::new();
    let echo = echo_backend();
    let dir = pki.path("");
    // A self-signed certificate (no CA at all).
    let (ok, out) = run(Command::new("openssl").current_dir(&dir).args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=self",
        "-keyout",
        "self.key",
        "-out",
        "self.pem",
        "-days",
        "2",
    ]));
    assert!(ok, "{out}");
    let (np, sp) = (free_port(), free_port());
    let _ng = nginx(&dir, np, &pki.p("a.pem"), &pki.p("a.key"), echo.port, false);
    let _ns = nginx(
        &dir,
        sp,
        &pki.p("self.pem"),
        &pki.p("self.key"),
        echo.port,
        false,
    );

    // nginx's certificate chains to `pki`, ringmesh trusts `other`: 502.
    let (port, api) = (free_port(), free_port());
    let tls = format!(
        r#"{{"sni": "a.example.com", "ca": "{}"}}"#,
        other.p("ca.pem")
    );
    let rm = Ringmesh::start(&config(api, port, np, &tls, ""), io, &[port, api]);
    for _ in 0..2 {
        let r = Client::connect(port).get("/hello", "x", "");
        assert_eq!(r.status(), 502, "{}", r.raw_head);
    }
    let t = tls_counters(api, port);
    assert!(
        t["failures"]["certificate"].as_u64().unwrap_or(0) >= 1,
        "{t}"
    );
    assert_eq!(t["handshakes_full"], 0, "{t}");
    assert!(rm.logs().contains("TLS handshake failed"), "{}", rm.logs());
    drop(rm);

    // The right CA but the wrong name: 502 too.
    let (port, api) = (free_port(), free_port());
    let tls = format!(r#"{{"sni": "b.example.com", "ca": "{}"}}"#, pki.p("ca.pem"));
    let rm = Ringmesh::start(&config(api, port, np, &tls, ""), io, &[port, api]);
    assert_eq!(Client::connect(port).get("/hello", "x", "").status(), 502);
    drop(rm);

    // Self-signed: the system roots refuse it, `verify: false` takes it.
    let (port, api) = (free_port(), free_port());
    let rm = Ringmesh::start(&config(api, port, sp, "true", ""), io, &[port, api]);
    assert_eq!(Client::connect(port).get("/hello", "x", "").status(), 502);
    let t = tls_counters(api, port);
    assert!(
        t["failures"]["certificate"].as_u64().unwrap_or(0) >= 1,
        "{t}"
    );
    drop(rm);
    let (port, api) = (free_port(), free_port());
    let tls = r#"{"verify": false, "sni": "self"}"#;
    let _rm = Ringmesh::start(&config(api, port, sp, tls, ""), io, &[port, api]);
    let r = Client::connect(port).get("/hello", "x", "");
    assert_eq!(r.status(), 200, "{}", r.raw_head);
    assert_eq!(field(&r.body_str(), "sni"), "self");
}

fn h2_backend_over_tls(io: &str) {
    let pki = Pki::new();
    let echo = echo_backend();
    let np = free_port();
    let _ng = nginx(
        pki.path("").as_path(),
        np,
        &pki.p("a.pem"),
        &pki.p("a.key"),
        echo.port,
        true,
    );
    let (port, api) = (free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 1,
  "routes": {{"{port}": {{"name": "web",
     "backends": [{{"name": "ngx", "internal_port": "{np}", "protocol": "h2",
                   "tls": {{"sni": "a.example.com", "ca": "{}"}}}}]}}}}}}"#,
        pki.p("ca.pem")
    );
    let rm = Ringmesh::start(&cfg, io, &[port, api]);
    // h2c with prior knowledge from curl, HTTP/2 over TLS to nginx: three
    // requests on one curl connection, then a 100 KB POST echoed.
    let url = format!("http://127.0.0.1:{port}/hello");
    let mut conns = Vec::new();
    for _ in 0..3 {
        let (ok, out) = run(Command::new("curl").args([
            "-sS",
            "--http2-prior-knowledge",
            "--max-time",
            "20",
            &url,
        ]));
        assert!(ok, "{out}\n{}", rm.logs());
        assert_eq!(field(&out, "proto"), "HTTP/2.0", "{out}");
        assert_eq!(field(&out, "sni"), "a.example.com", "{out}");
        conns.push(field(&out, "conn").to_string());
    }
    // One multiplexed upstream connection serves every client connection.
    assert!(conns.iter().all(|c| c == &conns[0]), "{conns:?}");
    let body = pki.path("body.bin");
    std::fs::write(&body, vec![b'z'; 100_000]).unwrap();
    let data = format!("@{}", body.display());
    let url = format!("http://127.0.0.1:{port}/echo");
    let (ok, out) = run(Command::new("curl").args([
        "-sS",
        "--http2-prior-knowledge",
        "--max-time",
        "20",
        "--data-binary",
        &data,
        &url,
    ]));
    assert!(ok, "{out}");
    assert_eq!(out.len(), 100_000, "{}", &out[..out.len().min(300)]);
    assert!(out.bytes().all(|b| b == b'z'));
    let t = tls_counters(api, port);
    assert_eq!(
        t["handshakes_full"], 1,
        "one multiplexed h2 connection: {t}"
    );
}

fn tcp_route_to_tls_backend(io: &str) {
    let pki = Pki::new();
    let sp = free_port();
    let accept = format!("127.0.0.1:{sp}");
    let child = Command::new("openssl")
        .args(["s_server", "-accept", &accept, "-rev", "-quiet"])
        .arg("-cert")
        .arg(pki.path("a.pem"))
        .arg("-key")
        .arg(pki.path("a.key"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl");
    let _s = ChildGuard(child);
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", sp)).is_ok()
    }));
    let (port, api) = (free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 1,
  "routes": {{"{port}": {{"name": "db", "protocol": "tcp",
     "health": {{"interval": "200ms", "timeout": "2s", "rise": 1, "fall": 1}},
     "backends": [{{"name": "ngx", "internal_port": "{sp}",
                   "tls": {{"sni": "a.example.com", "ca": "{}"}}}}]}}}}}}"#,
        pki.p("ca.pem")
    );
    let _rm = Ringmesh::start(&cfg, io, &[port, api]);
    // s_server serves one connection at a time: one client after another.
    for word in ["hello world", "ringmesh"] {
        let mut s = connect(port);
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(format!("{word}\n").as_bytes()).unwrap();
        let want: String = word.chars().rev().collect();
        let mut got = Vec::new();
        let mut b = [0u8; 256];
        while !String::from_utf8_lossy(&got).contains(&want) {
            match s.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&b[..n]),
            }
        }
        assert!(
            String::from_utf8_lossy(&got).contains(&want),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    }
    let t = tls_counters(api, port);
    assert!(t["handshakes_full"].as_u64().unwrap_or(0) >= 2, "{t}");

    // Re-encryption: a TLS tcp route (certificate b) to the TLS backend
    // (certificate a), a Python ssl client verifying b.
    let (port2, api2) = (free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "{api2}", "listen_host": "127.0.0.1", "workers": 1,
  "routes": {{"{port2}": {{"name": "db", "protocol": "tcp",
     "tls": {{"certificates": [{}]}},
     "backends": [{{"name": "ngx", "internal_port": "{sp}",
                   "tls": {{"sni": "a.example.com", "ca": "{}"}}}}]}}}}}}"#,
        pki.cert("b"),
        pki.p("ca.pem")
    );
    let _rm2 = Ringmesh::start(&cfg, io, &[port2, api2]);
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=20),
                    server_hostname="b.example.com")
s.sendall(b"reencrypted\n")
got = b""
while b"detpyrcneer" not in got:
    d = s.recv(4096)
    if not d:
        break
    got += d
print(s.getpeercert()["subject"], got)
"#;
    let (ok, out) = run(Command::new("python3")
        .args(["-c", script])
        .arg(pki.path("ca.pem"))
        .arg(port2.to_string()));
    assert!(ok && out.contains("detpyrcneer"), "{out}");
    assert!(out.contains("b.example.com"), "{out}");
}

fn health_over_tls(io: &str) {
    let pki = Pki::new();
    let echo = echo_backend();
    let np = free_port();
    let dir = pki.path("");
    let ng = nginx(&dir, np, &pki.p("a.pem"), &pki.p("a.key"), echo.port, false);
    let (port, api) = (free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 1,
  "routes": {{"{port}": {{"name": "web",
     "health": {{"path": "/hello", "interval": "100ms", "timeout": "2s", "rise": 1, "fall": 1}},
     "backends": [{{"name": "ngx", "internal_port": "{np}",
                   "tls": {{"sni": "a.example.com", "ca": "{}"}}}}]}}}}}}"#,
        pki.p("ca.pem")
    );
    let _rm = Ringmesh::start(&cfg, io, &[port, api]);
    let key = port.to_string();
    let status = || backend_status(api, &key, "ngx");
    let mut last = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(15), || {
            last = status();
            last["health"]["status"] == "healthy"
        }),
        "{last}"
    );
    // nginx gone: the check (connect + handshake + GET over TLS) fails.
    drop(ng);
    assert!(
        wait_until(Duration::from_secs(15), || {
            last = status();
            last["health"]["status"] == "unhealthy"
        }),
        "{last}"
    );
    assert_eq!(Client::connect(port).get("/hello", "x", "").status(), 503);
    // A plain listener on that port now (no TLS): still unhealthy, the
    // handshake fails.
    let l = TcpListener::bind(("127.0.0.1", np)).unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().take(200).flatten() {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    std::thread::sleep(Duration::from_millis(600));
    let st = status();
    assert_eq!(st["health"]["status"], "unhealthy", "{st}");
    assert!(
        st["health"]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("TLS handshake"),
        "{st}"
    );
}

/// Backends that are not TLS servers: one resets the connection after
/// reading the ClientHello, one answers garbage, one accepts and says
/// nothing. Each request gets a 502 (the silent one at the connect
/// timeout), each failure is counted, and the worker keeps serving.
fn bad_backends(io: &str) {
    let reset = TcpListener::bind("127.0.0.1:0").unwrap();
    let garbage = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let (rp, gp, sp) = (
        reset.local_addr().unwrap().port(),
        garbage.local_addr().unwrap().port(),
        silent.local_addr().unwrap().port(),
    );
    std::thread::spawn(move || {
        for s in reset.incoming().take(50) {
            let Ok(mut s) = s else { continue };
            let mut b = [0u8; 64];
            let _ = s.read(&mut b);
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        }
    });
    std::thread::spawn(move || {
        for s in garbage.incoming().take(50) {
            let Ok(mut s) = s else { continue };
            let mut b = [0u8; 64];
            let _ = s.read(&mut b);
            // A plain HTTP server where TLS was expected.
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for s in silent.incoming().take(50) {
            let Ok(s) = s else { continue };
            h.lock().unwrap().push(s);
        }
    });
    let good = echo_backend();
    let (p1, p2, p3, p4, api) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let route = |p: u16, name: &str, b: u16, tls: &str| {
        format!(
            r#""{p}": {{"name": "{name}", "timeouts": {{"connect": "1s"}},
               "backends": [{{"name": "ngx", "internal_port": "{b}", "tls": {tls}}}]}}"#
        )
    };
    let plain = format!(
        r#""{p4}": {{"name": "plain", "backends": [{{"internal_port": "{}"}}]}}"#,
        good.port
    );
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 1,
  "routes": {{{}, {}, {}, {plain}}}}}"#,
        route(p1, "reset", rp, "true"),
        route(p2, "garbage", gp, "true"),
        route(p3, "silent", sp, "true"),
    );
    let rm = Ringmesh::start(&cfg, io, &[p1, p2, p3, p4, api]);
    for _ in 0..3 {
        for p in [p1, p2, p3] {
            let r = Client::connect(p).get("/", "x", "");
            assert_eq!(r.status(), 502, "port {p}: {}", r.raw_head);
        }
        // The plain route on the same worker still answers.
        let mut c = Client::connect(p4);
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok");
        let r = c.response();
        assert_eq!(r.status(), 200);
        assert_eq!(r.body, b"ok");
    }
    let f = |p: u16, why: &str| {
        backend_status(api, &p.to_string(), "ngx")["tls"]["failures"][why]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(
        f(p1, "closed") >= 1,
        "{}",
        backend_status(api, &p1.to_string(), "ngx")
    );
    assert!(
        f(p2, "protocol") >= 1,
        "{}",
        backend_status(api, &p2.to_string(), "ngx")
    );
    assert!(
        f(p3, "timeout") >= 1,
        "{}",
        backend_status(api, &p3.to_string(), "ngx")
    );
    assert!(!rm.logs().contains("panicked"), "{}", rm.logs());
}

both_drivers!(
    https_backend_keepalive_and_bodies,
    resumption_without_pool,
    wrong_ca_and_verify_off,
    h2_backend_over_tls,
    tcp_route_to_tls_backend,
    health_over_tls,
    bad_backends,
);

/// gRPC (grpcio client over h2c to ringmesh) to a grpcio server with TLS
/// credentials behind `"protocol": "h2"`: every call type, trailers,
/// deadlines and cancellation through HTTP/2 over TLS.
fn grpc_to_h2_tls_backend(io: &str) {
    let pki = Pki::new();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/grpc_peer.py");
    let cancel_file = pki.path("cancelled");
    let gport = free_port();
    let mut server = ChildGuard(
        Command::new("python3")
            .args([script, "server", &gport.to_string()])
            .arg(&cancel_file)
            .arg(pki.path("a.pem"))
            .arg(pki.path("a.key"))
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
    let (port, api) = (free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{"{port}": {{"name": "grpc",
     "backends": [{{"name": "ngx", "internal_port": {gport}, "protocol": "h2",
                   "tls": {{"sni": "a.example.com", "ca": "{}"}}}}]}}}}}}"#,
        pki.p("ca.pem")
    );
    let rm = Ringmesh::start(&cfg, io, &[port, api]);
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
    assert!(
        wait_until(Duration::from_secs(5), || cancel_file.exists()),
        "the backend never saw the cancellation"
    );
    let t = tls_counters(api, port);
    assert!(t["handshakes_full"].as_u64().unwrap_or(0) >= 1, "{t}");
}

both_drivers!(grpc_to_h2_tls_backend);

/// A backend process (`cmd`) serving TLS: the first client starts it, the
/// readiness probe handshakes with it (counted), then the tunnel runs.
fn cold_start_over_tls(io: &str) {
    let pki = Pki::new();
    let sp = free_port();
    let (port, api) = (free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 1,
  "routes": {{"{port}": {{"name": "db", "protocol": "tcp",
     "backends": [{{"name": "ngx", "internal_port": "{sp}", "cmd": "openssl",
                   "args": ["s_server", "-accept", "127.0.0.1:{sp}", "-rev", "-quiet",
                            "-cert", "{}", "-key", "{}"],
                   "tls": {{"sni": "a.example.com", "ca": "{}"}}}}]}}}}}}"#,
        pki.p("a.pem"),
        pki.p("a.key"),
        pki.p("ca.pem")
    );
    // Only the API is probed: a connection to the route would start the process.
    let _rm = Ringmesh::start(&cfg, io, &[api]);
    let mut s = connect(port);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"coldstart\n").unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 256];
    while !String::from_utf8_lossy(&got).contains("tratsdloc") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
    assert!(
        String::from_utf8_lossy(&got).contains("tratsdloc"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let st = backend_status(api, &port.to_string(), "ngx");
    assert_eq!(st["process"]["state"], "running", "{st}");
    // The readiness probe's handshake and the tunnel's.
    assert!(
        st["tls"]["handshakes_full"].as_u64().unwrap_or(0) >= 2,
        "{st}"
    );
}

both_drivers!(cold_start_over_tls);

/// A backend that requires a client certificate (nginx `ssl_verify_client`):
/// ringmesh presents `cert`/`key`; without them the handshake fails (502).
fn client_certificate(io: &str) {
    let pki = Pki::new();
    let echo = echo_backend();
    let np = free_port();
    let extra = format!(
        "ssl_verify_client on; ssl_client_certificate {};",
        pki.p("ca.pem")
    );
    let _ng = nginx_with(
        pki.path("").as_path(),
        np,
        &pki.p("a.pem"),
        &pki.p("a.key"),
        echo.port,
        false,
        &extra,
    );
    let (port, api) = (free_port(), free_port());
    let tls = format!(
        r#"{{"sni": "a.example.com", "ca": "{}", "cert": "{}", "key": "{}"}}"#,
        pki.p("ca.pem"),
        pki.p("client.pem"),
        pki.p("client.key")
    );
    let rm = Ringmesh::start(&config(api, port, np, &tls, ""), io, &[port, api]);
    let r = Client::connect(port).get("/hello", "x", "");
    assert_eq!(r.status(), 200, "{}", r.raw_head);
    assert!(r.body_str().contains("CN=client-one"), "{}", r.body_str());
    drop(rm);
    let (port, api) = (free_port(), free_port());
    let tls = format!(r#"{{"sni": "a.example.com", "ca": "{}"}}"#, pki.p("ca.pem"));
    let _rm = Ringmesh::start(&config(api, port, np, &tls, ""), io, &[port, api]);
    // nginx completes the handshake and answers 400 itself (its
    // `ssl_verify_client on` behaviour), which ringmesh passes on.
    let r = Client::connect(port).get("/hello", "x", "");
    assert_eq!(r.status(), 400, "{}", r.raw_head);
    assert!(
        r.body_str().contains("No required SSL certificate"),
        "{}",
        r.body_str()
    );
}

both_drivers!(client_certificate);

/// A backend whose certificate is larger than one TLS record (1,500 SANs,
/// about 30 KB): the handshake message spans several records and is joined
/// in a grown incoming buffer.
fn large_certificate(io: &str) {
    let pki = Pki::new();
    let sans: Vec<String> = (0..1500)
        .map(|i| format!("host-{i:05}.big.example.com"))
        .collect();
    let mut names: Vec<&str> = vec!["a.example.com"];
    names.extend(sans.iter().map(String::as_str));
    pki.leaf("big", "big", &names, "ec8", 2);
    assert!(std::fs::metadata(pki.path("big.crt")).unwrap().len() > 20_000);
    let echo = echo_backend();
    let np = free_port();
    let _ng = nginx(
        pki.path("").as_path(),
        np,
        &pki.p("big.pem"),
        &pki.p("big.key"),
        echo.port,
        false,
    );
    let (port, api) = (free_port(), free_port());
    let tls = format!(r#"{{"sni": "a.example.com", "ca": "{}"}}"#, pki.p("ca.pem"));
    let _rm = Ringmesh::start(&config(api, port, np, &tls, ""), io, &[port, api]);
    let r = Client::connect(port).get("/hello", "x", "");
    assert_eq!(r.status(), 200, "{} {}", r.raw_head, r.body_str());
}

both_drivers!(large_certificate);

/// A WebSocket upgrade on an http route whose backend speaks TLS (Python
/// websockets server with an ssl context): after the 101 the tunnel relays
/// frames through the backend's record layer, both ways.
fn websocket_to_tls_backend(io: &str) {
    let pki = Pki::new();
    let wp = free_port();
    let server = r#"
import asyncio, ssl, sys
import websockets
async def echo(ws):
    async for m in ws:
        await ws.send("echo:" + m)
async def main():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    async with websockets.serve(echo, "127.0.0.1", int(sys.argv[1]), ssl=ctx):
        print("ready", flush=True)
        await asyncio.Future()
asyncio.run(main())
"#;
    let mut child = ChildGuard(
        Command::new("python3")
            .args(["-c", server, &wp.to_string()])
            .arg(pki.path("a.pem"))
            .arg(pki.path("a.key"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with websockets"),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let (port, api) = (free_port(), free_port());
    let tls = format!(r#"{{"sni": "a.example.com", "ca": "{}"}}"#, pki.p("ca.pem"));
    let rm = Ringmesh::start(&config(api, port, wp, &tls, ""), io, &[port, api]);
    let client = r#"
import asyncio, sys
import websockets
async def main():
    async with websockets.connect("ws://127.0.0.1:%s/" % sys.argv[1]) as ws:
        for m in ["one", "two", "x" * 100000]:
            await ws.send(m)
            r = await asyncio.wait_for(ws.recv(), 20)
            assert r == "echo:" + m, r[:50]
        print("OK", flush=True)
asyncio.run(main())
"#;
    let (ok, out) =
        run(Command::new("timeout").args(["60", "python3", "-c", client, &port.to_string()]));
    assert!(ok && out.contains("OK"), "{out}\n{}", rm.logs());
    let t = tls_counters(api, port);
    assert!(t["handshakes_full"].as_u64().unwrap_or(0) >= 1, "{t}");
}

both_drivers!(websocket_to_tls_backend);
