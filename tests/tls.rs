//! TLS termination against real clients: curl, `openssl s_client`, Python's
//! ssl module and testssl.sh, with certificates made by the `openssl` CLI at
//! test time (an ECDSA CA; leaves with PKCS#8 ECDSA, PKCS#1 RSA and SEC1
//! ECDSA keys; a client certificate for mTLS).

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::http::http_backend;
use support::pki::{run, Pki};
use support::*;

/// A backend answering with what it saw: Host, X-Forwarded-Proto and
/// X-Client-Cert-Subject, and the request body length.
fn mirror() -> Backend {
    http_backend(|req, p| {
        if req.second.starts_with("/big") {
            p.respond("200 OK", "", &vec![b'x'; 1 << 20]);
            return true;
        }
        let body = format!(
            "host={} xfp={} subj={} len={}\n",
            req.header("host").unwrap_or("-"),
            req.header("x-forwarded-proto").unwrap_or("-"),
            req.all("x-client-cert-subject").join("|"),
            req.body.len()
        );
        p.respond("200 OK", "", body.as_bytes());
        true
    })
}

fn http_tls_config(api: u16, port: u16, backend: u16, tls: &str, extra: &str) -> String {
    format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{"{port}": {{"name": "web", "timeouts": {{"header": "2s"}}, "tls": {tls} {extra},
     "backends": [{{"name": "b", "internal_host": "127.0.0.1", "internal_port": "{backend}"}}]}}}}}}"#
    )
}

fn curl(pki: &Pki, port: u16, host: &str, extra: &[&str]) -> (bool, String) {
    let url = format!("https://{host}:{port}/path?q=1");
    let resolve = format!("{host}:{port}:127.0.0.1");
    let ca = pki.p("ca.pem");
    // HTTP/1.1 explicitly: these tests exercise the HTTP/1.1 path (the
    // port offers h2 as well; tests/h2_tls.rs covers that).
    let mut args = vec![
        "-sS",
        "-v",
        "--http1.1",
        "--max-time",
        "20",
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    run(Command::new("curl").args(&args))
}

/// `openssl s_client` with `input` on stdin; returns its output.
fn s_client(port: u16, args: &[&str], input: &[u8]) -> String {
    let connect = format!("127.0.0.1:{port}");
    let mut child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(&connect)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    let guard = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut child = guard;
    loop {
        if let Ok(Some(_)) = child.0.try_wait() {
            break;
        }
        assert!(Instant::now() < deadline, "s_client did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out
}

fn served_cn(port: u16, sni: Option<&str>) -> String {
    let mut args = vec!["-showcerts"];
    match sni {
        Some(n) => args.extend(["-servername", n]),
        None => args.push("-noservername"),
    }
    let out = s_client(port, &args, b"");
    out.lines()
        .find_map(|l| l.trim().strip_prefix("0 s:"))
        .unwrap_or_else(|| panic!("no certificate in:\n{out}"))
        .to_string()
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n";

fn status(api: u16) -> serde_json::Value {
    support::api::get(api, "/api/status").json()
}

fn tls_counter(api: u16, field: &str) -> u64 {
    let s = status(api);
    let t = &s["routes"][0]["tls"];
    let v = if field.starts_with("handshakes") {
        &t[field]
    } else {
        &t["failures"][field]
    };
    v.as_u64().unwrap_or_else(|| panic!("{field} in {s}"))
}

/// SNI picks exact names, then wildcards, else the first certificate;
/// RSA (PKCS#1) and ECDSA (PKCS#8, SEC1) keys; ALPN http/1.1; TLS 1.2 and
/// 1.3; X-Forwarded-Proto; HSTS; Python's ssl module.
fn sni_and_clients(io: &str) {
    let pki = Pki::new();
    let b = mirror();
    let (api, port) = (free_port(), free_port());
    let tls = format!(
        r#"{{"certificates": [{}, {}, {}]}}"#,
        pki.cert("a"),
        pki.cert("b"),
        pki.cert("w")
    );
    let rm = Ringmesh::start(
        &http_tls_config(api, port, b.port, &tls, r#", "hsts": "max-age=600""#),
        io,
        &[port, api],
    );
    for host in ["a.example.com", "b.example.com", "x.wild.test"] {
        let (ok, out) = curl(&pki, port, host, &[]);
        assert!(ok, "curl {host}: {out}\n{}", rm.logs());
        assert!(
            out.contains(&format!("host={host}:{port} xfp=https")),
            "{out}"
        );
        assert!(out.contains("ALPN: server accepted http/1.1"), "{out}");
        assert!(
            out.to_ascii_lowercase()
                .contains("strict-transport-security: max-age=600"),
            "{out}"
        );
    }
    // Large bodies (not spliced under TLS) keep the connection's framing:
    // two 1 MiB responses on one connection.
    let big = format!("https://a.example.com:{port}/big");
    let (ok, out) = curl(
        &pki,
        port,
        "a.example.com",
        &[
            "-w",
            "size=%{size_download}\n",
            "-o",
            "/dev/null",
            &big,
            "-o",
            "/dev/null",
            &big,
            "-o",
            "/dev/null",
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(out.matches("size=1048576").count(), 2, "{out}");
    assert!(out.contains("Re-using existing connection"), "{out}");
    assert!(served_cn(port, Some("b.example.com")).contains("CN = b.example.com"));
    assert!(served_cn(port, Some("deep.x.wild.test")).contains("CN = a.example.com"));
    assert!(served_cn(port, Some("unknown.test")).contains("CN = a.example.com"));
    assert!(served_cn(port, None).contains("CN = a.example.com"));
    for v in ["-tls1_2", "-tls1_3"] {
        let out = s_client(
            port,
            &[
                v,
                "-ign_eof",
                "-servername",
                "a.example.com",
                "-alpn",
                "http/1.1",
            ],
            GET,
        );
        assert!(out.contains("HTTP/1.1 200 OK"), "{v}: {out}");
        assert!(out.contains("ALPN protocol: http/1.1"), "{v}: {out}");
        let want = if v == "-tls1_2" { "TLSv1.2" } else { "TLSv1.3" };
        assert!(out.contains(want), "{v}: {out}");
    }
    let py = format!(
        r#"
import socket, ssl
ctx = ssl.create_default_context(cafile="{ca}")
with socket.create_connection(("127.0.0.1", {port}), timeout=10) as s:
    with ctx.wrap_socket(s, server_hostname="x.wild.test") as t:
        t.sendall(b"POST /p HTTP/1.1\r\nHost: x.wild.test\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n" + b"z" * 100000)
        data = b""
        while True:
            c = t.recv(65536)
            if not c:
                break
            data += c
        print(t.version(), data.decode())
"#,
        ca = pki.p("ca.pem")
    );
    let (ok, out) = run(Command::new(support::procs::python()).args(["-c", &py]));
    assert!(ok, "python: {out}");
    assert!(
        out.contains("TLSv1.3") && out.contains("200 OK") && out.contains("len=100000"),
        "{out}"
    );
    // curl x3, s_client x2 with a request, Python; the certificate probes
    // may close before their handshake completes on our side.
    let full = tls_counter(api, "handshakes_full");
    assert!(full >= 6, "{full} full handshakes: {}", status(api));
}

/// Session resumption with 2 workers: most reconnects offering a session
/// resume it, whichever worker they land on; TLS 1.2 and 1.3.
fn resumption(io: &str) {
    let pki = Pki::new();
    let b = mirror();
    let (api, port) = (free_port(), free_port());
    let tls = format!(r#"{{"certificates": [{}]}}"#, pki.cert("a"));
    let rm = Ringmesh::start(
        &http_tls_config(api, port, b.port, &tls, ""),
        io,
        &[port, api],
    );
    for v in ["-tls1_2", "-tls1_3"] {
        let sess = pki.p(&format!("sess{v}.pem"));
        let first = s_client(
            port,
            &[
                v,
                "-servername",
                "a.example.com",
                "-ign_eof",
                "-sess_out",
                &sess,
            ],
            GET,
        );
        assert!(first.contains("HTTP/1.1 200 OK"), "{first}");
        let mut reused = 0;
        for _ in 0..10 {
            let out = s_client(
                port,
                &[
                    v,
                    "-servername",
                    "a.example.com",
                    "-ign_eof",
                    "-sess_in",
                    &sess,
                ],
                GET,
            );
            assert!(out.contains("HTTP/1.1 200 OK"), "{out}");
            if out.contains("Reused, TLS") {
                reused += 1;
            }
        }
        assert!(reused >= 8, "{v}: only {reused}/10 reconnects resumed");
    }
    assert!(tls_counter(api, "handshakes_resumed") >= 16);
    // A reload keeps the ticket keys and the session cache: sessions from
    // before it still resume.
    let generation = status(api)["generation"].as_u64().unwrap();
    rm.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || {
        status(api)["generation"].as_u64().unwrap() > generation
    }));
    for v in ["-tls1_2", "-tls1_3"] {
        let sess = pki.p(&format!("sess{v}.pem"));
        let resumed = (0..3).any(|_| {
            s_client(
                port,
                &[
                    v,
                    "-servername",
                    "a.example.com",
                    "-ign_eof",
                    "-sess_in",
                    &sess,
                ],
                GET,
            )
            .contains("Reused, TLS")
        });
        assert!(resumed, "{v}: no resumption after a reload");
    }
}

/// A shared port: the first route carries `tls` for both; a request whose
/// Host the connection's certificate does not cover gets 421; min_version
/// 1.3 refuses TLS 1.2; plain HTTP on the TLS port gets 400.
fn shared_port_421(io: &str) {
    let pki = Pki::new();
    let b = mirror();
    let (api, port) = (free_port(), free_port());
    let config = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{
    "a": {{"listen": "{port}", "hosts": ["a.example.com"],
           "tls": {{"certificates": [{}, {}], "min_version": "1.3"}},
           "backends": [{{"name": "b", "internal_host": "127.0.0.1", "internal_port": "{bp}"}}]}},
    "b": {{"listen": "{port}", "hosts": ["b.example.com"],
           "backends": [{{"name": "b", "internal_host": "127.0.0.1", "internal_port": "{bp}"}}]}}}}}}"#,
        pki.cert("a"),
        pki.cert("b"),
        bp = b.port
    );
    let rm = Ringmesh::start(&config, io, &[port, api]);
    let (ok, out) = curl(&pki, port, "b.example.com", &[]);
    assert!(
        ok && out.contains("host=b.example.com"),
        "{out}\n{}",
        rm.logs()
    );
    let (ok, out) = curl(&pki, port, "a.example.com", &["-H", "Host: b.example.com"]);
    assert!(ok && out.contains("< HTTP/1.1 421"), "{out}");
    let out = s_client(port, &["-tls1_2", "-servername", "a.example.com"], GET);
    assert!(!out.contains("HTTP/1.1 200"), "TLS 1.2 accepted: {out}");
    // Plain HTTP to the TLS port.
    let before = tls_counter(api, "plain_http");
    let mut c = connect(port);
    c.write_all(b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
    assert!(
        resp.contains("plain HTTP request was sent to an HTTPS port"),
        "{resp}"
    );
    assert_eq!(tls_counter(api, "plain_http"), before + 1);
}

/// Bad input: garbage and oversized ClientHellos get an alert and a close, a
/// stalled handshake is closed at the header timeout, clients vanishing
/// mid-handshake leak no descriptor; each is counted; the worker serves on.
fn bad_input(io: &str) {
    let pki = Pki::new();
    let b = mirror();
    let (api, port) = (free_port(), free_port());
    let tls = format!(r#"{{"certificates": [{}]}}"#, pki.cert("a"));
    let rm = Ringmesh::start(
        &http_tls_config(api, port, b.port, &tls, ""),
        io,
        &[port, api],
    );
    let read_all = |c: &mut std::net::TcpStream| {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut v = Vec::new();
        let _ = c.read_to_end(&mut v);
        v
    };
    // A handshake record whose body is not a ClientHello.
    let proto_before = tls_counter(api, "protocol");
    let mut c = connect(port);
    c.write_all(&[
        0x16, 0x03, 0x01, 0x00, 0x08, 1, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef,
    ])
    .unwrap();
    let got = read_all(&mut c);
    assert_eq!(got.first(), Some(&0x15), "expected an alert, got {got:?}");
    // A record longer than TLS allows.
    let mut c = connect(port);
    let mut big = vec![0x16, 0x03, 0x01, 0xff, 0xff];
    // A few bytes past the header only: ringmesh reads all of them before
    // it closes, so the close is a FIN that cannot destroy the alert.
    big.extend_from_slice(&[0u8; 100]);
    let _ = c.write_all(&big);
    let got = read_all(&mut c);
    assert_eq!(got.first(), Some(&0x15), "expected an alert, got {got:?}");
    assert!(wait_until(Duration::from_secs(5), || tls_counter(
        api, "protocol"
    ) >= proto_before + 2));
    // Stalled: half a record header, then nothing.
    let timeouts = tls_counter(api, "timeout");
    let mut c = connect(port);
    c.write_all(&[0x16, 0x03]).unwrap();
    let t0 = Instant::now();
    let got = read_all(&mut c);
    let took = t0.elapsed();
    assert!(got.is_empty() || got[0] == 0x15, "{got:?}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "closed after {took:?}"
    );
    assert_eq!(tls_counter(api, "timeout"), timeouts + 1);
    // Vanishing clients.
    let fds = rm.fds();
    let closed = tls_counter(api, "closed");
    for i in 0..100u32 {
        let mut c = connect(port);
        let _ = c.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..(i as usize % 6) + 1]);
        drop(c);
    }
    assert!(
        wait_until(Duration::from_secs(10), || rm.fds() <= fds),
        "fds {} > {fds}",
        rm.fds()
    );
    assert!(wait_until(Duration::from_secs(5), || tls_counter(
        api, "closed"
    ) >= closed + 90));
    // Still serving.
    let (ok, out) = curl(&pki, port, "a.example.com", &[]);
    assert!(ok, "{out}");
    let metrics = support::api::get(api, "/metrics").body;
    let timeouts = tls_counter(api, "timeout");
    assert!(
        metrics.contains(&format!(
            "ringmesh_tls_handshake_failures_total{{route=\"web\",reason=\"timeout\"}} {timeouts}"
        )) && metrics.contains("ringmesh_tls_handshakes_total{route=\"web\",kind=\"full\"}"),
        "{metrics}"
    );
}

/// Reload re-reads certificate files: new handshakes get the new
/// certificate; a key that does not match is refused with its JSON path and
/// the running certificate stays.
fn reload_certificates(io: &str) {
    let pki = Pki::new();
    let b = mirror();
    let (api, port) = (free_port(), free_port());
    let (cert, key) = (pki.p("live.pem"), pki.p("live.key"));
    std::fs::copy(pki.path("a.pem"), &cert).unwrap();
    std::fs::copy(pki.path("a.key"), &key).unwrap();
    let tls = format!(r#"{{"certificates": [{{"cert": "{cert}", "key": "{key}"}}]}}"#);
    let config = http_tls_config(api, port, b.port, &tls, "");
    let rm = Ringmesh::start(&config, io, &[port, api]);
    assert!(served_cn(port, None).contains("CN = a.example.com"));
    // An open keep-alive connection survives the reload.
    std::fs::copy(pki.path("b.pem"), &cert).unwrap();
    std::fs::copy(pki.path("b.key"), &key).unwrap();
    rm.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || served_cn(port, None)
            .contains("CN = b.example.com")),
        "certificate not reloaded:\n{}",
        rm.logs()
    );
    // A key that does not fit the certificate: refused, old one kept.
    std::fs::copy(pki.path("a.key"), &key).unwrap();
    let r = support::api::put_config(api, &config);
    assert!(r.status >= 400, "{r:?}");
    let body = r.body.clone();
    assert!(
        body.contains(&format!(r#"routes.\"{port}\".tls.certificates[0].key"#))
            || body.contains(&format!("routes.\\\"{port}\\\".tls.certificates[0].key")),
        "{body}"
    );
    assert!(served_cn(port, None).contains("CN = b.example.com"));
    // A missing file, via `ringmesh check` with a relative path.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(pki.path("a.pem"), dir.path().join("a.pem")).unwrap();
    std::fs::copy(pki.path("a.key"), dir.path().join("a.key")).unwrap();
    let cfg = dir.path().join("c.json");
    let good = r#"{"routes": {"18443": {"tls": {"certificates": [{"cert": "a.pem", "key": "a.key"}]},
        "backends": [{"name": "b", "internal_host": "127.0.0.1", "internal_port": "1"}]}}}"#;
    std::fs::write(&cfg, good).unwrap();
    let (ok, out) = run(Command::new(BIN).arg("check").arg("--config").arg(&cfg));
    assert!(ok, "{out}");
    std::fs::write(&cfg, good.replace("a.key", "missing.key")).unwrap();
    let (ok, out) = run(Command::new(BIN).arg("check").arg("--config").arg(&cfg));
    assert!(
        !ok && out.contains(r#"routes."18443".tls.certificates[0].key: cannot read key"#),
        "{out}"
    );
    // Expiring within 14 days: a warning.
    pki.leaf("soon", "soon.test", &["soon.test"], "ec8", 3);
    std::fs::copy(pki.path("soon.pem"), dir.path().join("a.pem")).unwrap();
    std::fs::copy(pki.path("soon.key"), dir.path().join("a.key")).unwrap();
    std::fs::write(&cfg, good).unwrap();
    let (ok, out) = run(Command::new(BIN).arg("check").arg("--config").arg(&cfg));
    assert!(
        ok && out.contains("warning") && out.contains("expires in"),
        "{out}"
    );
}

/// mTLS: a client certificate chaining to `client_ca` is required; its
/// subject goes upstream, a forged header does not.
fn mtls(io: &str) {
    let pki = Pki::new();
    let b = mirror();
    let (api, port) = (free_port(), free_port());
    let tls = format!(
        r#"{{"certificates": [{}], "client_ca": "{}"}}"#,
        pki.cert("a"),
        pki.p("ca.pem")
    );
    let _rm = Ringmesh::start(
        &http_tls_config(api, port, b.port, &tls, ""),
        io,
        &[port, api],
    );
    let (cert, key) = (pki.p("client.crt"), pki.p("client.key"));
    let (ok, out) = curl(
        &pki,
        port,
        "a.example.com",
        &[
            "--cert",
            &cert,
            "--key",
            &key,
            "-H",
            "X-Client-Cert-Subject: CN=forged",
        ],
    );
    assert!(ok, "{out}");
    // Exactly one value reached the backend: ours (the forged one was dropped).
    assert!(out.contains("subj=CN=client-one, O=ringmesh len="), "{out}");
    let before = tls_counter(api, "client_cert");
    let (ok, out) = curl(&pki, port, "a.example.com", &[]);
    assert!(!ok && !out.contains("subj="), "{out}");
    assert!(wait_until(Duration::from_secs(5), || tls_counter(
        api,
        "client_cert"
    ) > before));
}

/// A tcp route terminating TLS in front of a plain echo backend; a plain
/// http route redirecting to https.
fn tcp_route_and_redirect(io: &str) {
    let pki = Pki::new();
    let echo = Backend::echo();
    let (api, port, plain) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{
    "{port}": {{"protocol": "tcp", "tls": {{"certificates": [{}]}},
           "backends": [{{"name": "e", "internal_host": "127.0.0.1", "internal_port": "{ep}"}}]}},
    "{plain}": {{"redirect_https": true,
           "backends": [{{"name": "e", "internal_host": "127.0.0.1", "internal_port": "{ep}"}}]}}}}}}"#,
        pki.cert("a"),
        ep = echo.port
    );
    let _rm = Ringmesh::start(&config, io, &[port, plain, api]);
    let py = format!(
        r#"
import socket, ssl, hashlib
ctx = ssl.create_default_context(cafile="{ca}")
data = bytes(range(256)) * 4096
with socket.create_connection(("127.0.0.1", {port}), timeout=20) as s:
    with ctx.wrap_socket(s, server_hostname="a.example.com") as t:
        t.sendall(data)
        got = b""
        while len(got) < len(data):
            c = t.recv(65536)
            if not c:
                break
            got += c
        print("same" if got == data else "differ", len(got))
"#,
        ca = pki.p("ca.pem")
    );
    let (ok, out) = run(Command::new(support::procs::python()).args(["-c", &py]));
    assert!(ok && out.contains("same 1048576"), "{out}");
    let mut c = support::http::Client::connect(plain);
    let r = c.get("/x?y=1", &format!("a.example.com:{plain}"), "");
    assert_eq!(r.status(), 308);
    assert_eq!(r.header("location"), Some("https://a.example.com/x?y=1"));
}

/// 20 certificate reloads (the certificate changes each time) during an
/// HTTPS wrk run, half of it on new connections: no error, no failed request.
fn reloads_under_load(io: &str) {
    let pki = Pki::new();
    let b = mirror();
    let (api, port) = (free_port(), free_port());
    let (cert, key) = (pki.p("live.pem"), pki.p("live.key"));
    std::fs::copy(pki.path("a.pem"), &cert).unwrap();
    std::fs::copy(pki.path("a.key"), &key).unwrap();
    let tls = format!(r#"{{"certificates": [{{"cert": "{cert}", "key": "{key}"}}]}}"#);
    let rm = Ringmesh::start(
        &http_tls_config(api, port, b.port, &tls, ""),
        io,
        &[port, api],
    );
    let url = format!("https://127.0.0.1:{port}/");
    let wrk = |extra: &'static [&'static str]| {
        let url = url.clone();
        std::thread::spawn(move || {
            let mut args = vec!["-t1", "-c8", "-d8s", "--timeout", "5s"];
            args.extend_from_slice(extra);
            args.push(&url);
            run(Command::new("wrk").args(&args))
        })
    };
    let keepalive = wrk(&[]);
    let fresh = wrk(&["-H", "Connection: close"]);
    std::thread::sleep(Duration::from_millis(500));
    let g0 = status(api)["generation"].as_u64().unwrap();
    for i in 0..20 {
        let name = if i % 2 == 0 { "b" } else { "a" };
        std::fs::copy(pki.path(&format!("{name}.pem")), &cert).unwrap();
        std::fs::copy(pki.path(&format!("{name}.key")), &key).unwrap();
        rm.signal(libc::SIGHUP);
        let want = g0 + i + 1;
        assert!(wait_until(Duration::from_secs(10), || {
            status(api)["generation"].as_u64().unwrap() >= want
        }));
        std::thread::sleep(Duration::from_millis(150));
    }
    for (what, h) in [("keep-alive", keepalive), ("new connections", fresh)] {
        let (ok, out) = h.join().unwrap();
        assert!(ok, "wrk {what}: {out}");
        assert!(
            !out.contains("Socket errors") && !out.contains("Non-2xx"),
            "wrk {what}: {out}\n{}",
            rm.logs()
        );
        let n: u64 = out
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(n > 20, "wrk {what}: {out}");
    }
    // The last reload installed certificate a.
    assert!(served_cn(port, None).contains("CN = a.example.com"));
}

both_drivers!(
    reloads_under_load,
    sni_and_clients,
    resumption,
    shared_port_421,
    bad_input,
    reload_certificates,
    mtls,
    tcp_route_and_redirect
);

/// testssl.sh against a TLS route: no finding of severity HIGH or CRITICAL.
/// Protocols, ciphers, vulnerabilities and server defaults only (`--fast`
/// skips the slow per-cipher loops); one driver: the TLS setup, not the I/O
/// driver, is under test.
#[test]
fn testssl_finds_nothing_high() {
    let pki = Pki::new();
    let b = mirror();
    let (api, port) = (free_port(), free_port());
    let tls = format!(r#"{{"certificates": [{}]}}"#, pki.cert("a"));
    let _rm = Ringmesh::start(
        &http_tls_config(api, port, b.port, &tls, ""),
        "uring",
        &[port, api],
    );
    let json = pki.path("testssl.json");
    let target = format!("127.0.0.1:{port}");
    let (_, out) = run(Command::new("testssl").args([
        "--quiet",
        "--fast",
        "--warnings",
        "batch",
        "--color",
        "0",
        "--ip",
        "one",
        "-p",
        "-s",
        "-U",
        "--jsonfile",
        &json.display().to_string(),
        &target,
    ]));
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("no JSON ({e}): {out}"));
    let findings: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert!(findings.len() > 10, "{text}");
    let bad: Vec<_> = findings
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("HIGH" | "CRITICAL")))
        .collect();
    assert!(bad.is_empty(), "testssl findings: {bad:#?}");
}

/// The successor process of an upgrade, stopped by PID at the end.
struct Successor(i32);

impl Drop for Successor {
    fn drop(&mut self) {
        if self.0 > 0 {
            // SAFETY-free: signal the process this test started (through ringmesh) by PID.
            unsafe { libc::kill(self.0, libc::SIGTERM) };
            wait_until(Duration::from_secs(20), || {
                !support::procs::alive(self.0 as u32)
            });
            if support::procs::alive(self.0 as u32) {
                unsafe { libc::kill(self.0, libc::SIGKILL) };
            }
        }
    }
}

/// `ringmesh upgrade` keeps serving TLS: HTTPS requests on new connections
/// before, during and after the takeover all succeed.
#[test]
fn upgrade_keeps_serving_tls() {
    let pki = Pki::new();
    let b = mirror();
    let (api, port) = (free_port(), free_port());
    let tls = format!(r#"{{"certificates": [{}]}}"#, pki.cert("a"));
    let mut rm = Ringmesh::start(
        &http_tls_config(api, port, b.port, &tls, ""),
        "auto",
        &[port, api],
    );
    let pid = |api| {
        support::api::get(api, "/api/status").json()["pid"]
            .as_i64()
            .unwrap() as i32
    };
    let old = pid(api);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let ca = pki.p("ca.pem");
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            let resolve = format!("a.example.com:{port}:127.0.0.1");
            let url = format!("https://a.example.com:{port}/");
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                let (good, out) = run(Command::new("curl").args([
                    "-sS",
                    "--max-time",
                    "10",
                    "--cacert",
                    &ca,
                    "--resolve",
                    &resolve,
                    &url,
                ]));
                if good && out.contains("xfp=https") {
                    ok += 1;
                } else {
                    failed.push(out);
                }
            }
            (ok, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let (good, out) =
        run(Command::new(BIN).args(["upgrade", "--api", &format!("http://127.0.0.1:{api}")]));
    assert!(good, "upgrade: {out}\n{}", rm.logs());
    let mut new = old;
    assert!(wait_until(Duration::from_secs(30), || {
        new = pid(api);
        new != old
    }));
    let _guard = Successor(new);
    assert!(
        rm.wait_exit(Duration::from_secs(30)).is_some(),
        "old process did not exit"
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = load.join().unwrap();
    assert!(ok >= 5, "only {ok} requests");
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
}
