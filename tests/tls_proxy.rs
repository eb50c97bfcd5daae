//! TLS termination behind a PROXY protocol balancer, and on a tcp route
//! chosen by SNI: the bytes the edge read before the handshake (the start
//! of the ClientHello after the PROXY header, or the whole ClientHello the
//! SNI peek routed by) go to rustls, not to the backend. HAProxy `mode tcp`
//! with `send-proxy` / `send-proxy-v2` in front, curl and Python's ssl
//! module as clients bound to their own loopback addresses; the access log's
//! JSON lines carry the client address of the header, the TLS version and
//! the SNI name.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::http::http_backend;
use support::pki::{run, Pki};
use support::*;

/// Starts HAProxy in the foreground on `cfg`; waits until `ports` accept.
fn haproxy(dir: &Path, cfg: &str, ports: &[u16]) -> ChildGuard {
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let bin = if Path::new("/usr/sbin/haproxy").exists() {
        "/usr/sbin/haproxy"
    } else {
        "haproxy"
    };
    let child = Command::new(bin)
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
        .spawn()
        .expect("haproxy (scripts/test.sh installs it)");
    let g = ChildGuard(child);
    for &p in ports {
        assert!(
            wait_until(Duration::from_secs(10), || TcpStream::connect((
                "127.0.0.1",
                p
            ))
            .is_ok()),
            "haproxy did not listen on {p}: {}",
            std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default()
        );
    }
    g
}

/// A tcp backend that expects a PROXY v1 line first, answers `got <line>`
/// and then echoes what follows until the client closes.
fn proxy_line_echo() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().take(64) {
            let Ok(s) = s else { continue };
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(30))).ok();
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    return;
                }
                let _ = w.write_all(format!("got {}\n", line.trim_end()).as_bytes());
                let mut b = [0u8; 4096];
                while let Ok(n) = r.read(&mut b) {
                    if n == 0 || w.write_all(&b[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// curl from `src` to `https://a.example.com:{port}/who`, twice on one
/// connection; returns the bodies (or curl's error).
fn curl_from(pki: &Pki, src: &str, port: u16, extra: &[&str]) -> String {
    let url = format!("https://a.example.com:{port}/who");
    let (ok, out) = run(Command::new("curl")
        // HTTP/1.1: this test is about the PROXY header and the TLS fields of
        // HTTP/1.1 lines (HTTP/2 streams write no access log line yet).
        .args(["-sS", "--http1.1", "--max-time", "20", "--interface", src])
        .arg("--cacert")
        .arg(pki.p("ca.pem"))
        .arg("--resolve")
        .arg(format!("a.example.com:{port}:127.0.0.1"))
        .args(extra)
        .arg(&url)
        .arg(&url));
    assert!(ok, "curl from {src}: {out}");
    out
}

/// Python's ssl client from `src` to `port` (SNI a.example.com): sends
/// "ping\n", prints everything it gets back until "ping\n" arrived.
fn python_tls_from(pki: &Pki, src: &str, port: u16) -> String {
    let py = format!(
        r#"
import socket, ssl
ctx = ssl.create_default_context(cafile="{ca}")
with socket.create_connection(("127.0.0.1", {port}), timeout=20, source_address=("{src}", 0)) as s:
    with ctx.wrap_socket(s, server_hostname="a.example.com") as t:
        t.sendall(b"ping\n")
        got = b""
        while not got.endswith(b"ping\n"):
            c = t.recv(4096)
            if not c:
                break
            got += c
        print(t.version(), got.decode())
"#,
        ca = pki.p("ca.pem")
    );
    let (ok, out) = run(Command::new(support::procs::python()).args(["-c", &py]));
    assert!(ok, "python from {src}: {out}");
    out
}

/// A PROXY v1 header naming `src` and the ClientHello in one write (so the
/// edge reads both at once), then the handshake and `msg` over TLS (Python's
/// ssl module on memory BIOs); prints the decrypted answer up to `until`.
fn proxy_and_hello_in_one_write(pki: &Pki, port: u16, src: &str, msg: &str, until: &str) -> String {
    let py = format!(
        r#"
import socket, ssl
ctx = ssl.create_default_context(cafile="{ca}")
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
t = ctx.wrap_bio(inc, out, server_hostname="a.example.com")
s = socket.create_connection(("127.0.0.1", {port}), timeout=20)
try:
    t.do_handshake()
except ssl.SSLWantReadError:
    pass
s.sendall(b"PROXY TCP4 {src} 127.0.0.1 5555 {port}\r\n" + out.read())
while True:
    try:
        t.do_handshake()
        break
    except ssl.SSLWantReadError:
        if out.pending:
            s.sendall(out.read())
        d = s.recv(65536)
        if not d:
            raise SystemExit("closed during the handshake")
        inc.write(d)
t.write({msg:?}.encode())
s.sendall(out.read())
got = b""
while {until:?}.encode() not in got:
    try:
        got += t.read(65536)
        continue
    except ssl.SSLWantReadError:
        pass
    except ssl.SSLZeroReturnError:
        break
    d = s.recv(65536)
    if not d:
        break
    inc.write(d)
print(got.decode())
"#,
        ca = pki.p("ca.pem")
    );
    let (ok, out) = run(Command::new(support::procs::python()).args(["-c", &py]));
    assert!(ok, "python PROXY+hello to {port}: {out}");
    out
}

/// The access log's JSON lines.
fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The first line whose route and client address match.
fn line_of(lines: &[serde_json::Value], route: &str, ip: &str) -> Option<serde_json::Value> {
    lines
        .iter()
        .find(|l| {
            l["route"] == route
                && l["client"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(&format!("{ip}:")))
        })
        .cloned()
}

/// A TLS counter of route `name` from /api/status: `handshakes_*`, else a
/// failure reason.
fn tls_failures(api: u16, name: &str, field: &str) -> u64 {
    let s = support::api::get(api, "/api/status").json();
    let routes = s["routes"].as_array().cloned().unwrap_or_default();
    let r = routes.iter().find(|r| r["name"] == name);
    r.and_then(|r| {
        if field.starts_with("handshakes") {
            r["tls"][field].as_u64()
        } else {
            r["tls"]["failures"][field].as_u64()
        }
    })
    .unwrap_or_else(|| panic!("{name} {field} in {s}"))
}

/// Every TLS counter of route `name`: (handshakes, failures by reason).
fn tls_counts(api: u16, name: &str) -> (u64, [u64; 5]) {
    let c = |f| tls_failures(api, name, f);
    (
        c("handshakes_full") + c("handshakes_resumed"),
        ["plain_http", "timeout", "closed", "client_cert", "protocol"].map(c),
    )
}

/// http and tcp routes with `proxy_protocol` and `tls` behind HAProxy
/// (`send-proxy-v2` and `send-proxy`), and a tcp route with `sni` and
/// `tls`: the handshake takes the bytes the edge read; the backend and the
/// access log see the client address of the PROXY header; the log lines
/// carry the TLS version and SNI name; a plain-text client on a TLS route
/// behind the balancer is answered (http: 400) or closed (tcp), counted
/// and logged with its close reason.
fn tls_behind_proxy_protocol(io: &str) {
    let pki = Pki::new();
    let access = pki.path("access.log");
    let web = http_backend(|req, p| {
        let body = format!(
            "xff={} xfp={}\n",
            req.header("x-forwarded-for").unwrap_or("-"),
            req.header("x-forwarded-proto").unwrap_or("-")
        );
        p.respond("200 OK", "", body.as_bytes());
        true
    });
    let proxied = proxy_line_echo();
    let echo = Backend::echo();
    let (api, http, tcp, sni) = (free_port(), free_port(), free_port(), free_port());
    let tls = format!(r#"{{"certificates": [{}]}}"#, pki.cert("a"));
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2,
  "access_log": {{"path": "{log}", "format": "json"}},
  "routes": {{
    "{http}": {{"name": "web", "proxy_protocol": true, "tls": {tls}, "timeouts": {{"header": "5s"}},
      "backends": [{{"internal_port": "{wp}"}}]}},
    "{tcp}": {{"name": "tun", "protocol": "tcp", "proxy_protocol": true, "tls": {tls},
      "timeouts": {{"header": "5s"}},
      "backends": [{{"internal_port": "{proxied}", "send_proxy": "v1"}}]}},
    "{sni}": {{"name": "sni", "protocol": "tcp", "sni": ["a.example.com"], "tls": {tls},
      "timeouts": {{"header": "5s"}},
      "backends": [{{"internal_port": "{ep}"}}]}}
  }}}}"#,
        log = access.display(),
        wp = web.port,
        ep = echo.port,
    );
    // The start-up probes connect without a PROXY header or a ClientHello:
    // refused at the edge, before TLS and the access log.
    let rm = Ringmesh::start(&cfg, io, &[api, http, tcp, sni]);
    let (f_v2, f_v1, f_tcp) = (free_port(), free_port(), free_port());
    let _hp = haproxy(
        rm.dir.path(),
        &format!(
            "global\n  maxconn 200\ndefaults\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
frontend v2\n  mode tcp\n  bind 127.0.0.1:{f_v2}\n  default_backend web2\n\
backend web2\n  mode tcp\n  server r 127.0.0.1:{http} send-proxy-v2\n\
frontend v1\n  mode tcp\n  bind 127.0.0.1:{f_v1}\n  default_backend web1\n\
backend web1\n  mode tcp\n  server r 127.0.0.1:{http} send-proxy\n\
frontend tun\n  mode tcp\n  bind 127.0.0.1:{f_tcp}\n  default_backend tun\n\
backend tun\n  mode tcp\n  server r 127.0.0.1:{tcp} send-proxy-v2\n"
        ),
        &[f_v2, f_v1, f_tcp],
    );

    // http route, PROXY v2 then TLS 1.3; two requests on one connection.
    let out = curl_from(&pki, "127.0.0.7", f_v2, &[]);
    assert_eq!(
        out.matches("xff=127.0.0.7 xfp=https").count(),
        2,
        "{out}\n{}",
        rm.logs()
    );
    // PROXY v1 then TLS 1.2.
    let out = curl_from(&pki, "127.0.0.8", f_v1, &["--tls-max", "1.2"]);
    assert_eq!(out.matches("xff=127.0.0.8 xfp=https").count(), 2, "{out}");

    // tcp route, PROXY v2 then TLS: the backend's PROXY header (send_proxy)
    // names the client, then the decrypted bytes follow.
    let out = python_tls_from(&pki, "127.0.0.9", f_tcp);
    assert!(
        out.starts_with("TLSv1.3 got PROXY TCP4 127.0.0.9 "),
        "{out}"
    );
    assert!(out.trim_end().ends_with("ping"), "{out}");

    // tcp route chosen by SNI and terminated: the ClientHello the edge
    // peeked at goes to the handshake, the backend gets plaintext only.
    let out = python_tls_from(&pki, "127.0.0.1", sni);
    assert_eq!(out.trim_end(), "TLSv1.3 ping", "{}", rm.logs());

    // The PROXY header and the ClientHello in one segment: the edge reads
    // the start of the ClientHello with the header; the handshake gets it.
    let out = proxy_and_hello_in_one_write(
        &pki,
        http,
        "127.0.0.12",
        "GET /who HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n",
        "xfp=https",
    );
    assert!(out.contains("xff=127.0.0.12 xfp=https"), "{out}");
    let out = proxy_and_hello_in_one_write(&pki, tcp, "127.0.0.12", "ping\n", "ping\n");
    assert!(out.starts_with("got PROXY TCP4 127.0.0.12 "), "{out}");
    // A bad head over TLS: 400, and its line (no route) still carries the
    // TLS version and SNI.
    let out =
        proxy_and_hello_in_one_write(&pki, http, "127.0.0.13", "NOT HTTP\r\n\r\n", "\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");

    // Plain HTTP after the PROXY header: 400 on the http route, closed on
    // the tcp route; both counted as plain_http failures.
    let mut s = connect_from([127, 0, 0, 11], f_v2);
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        got.starts_with(b"HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let mut s = connect_from([127, 0, 0, 10], f_tcp);
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    // Exact counts: ringmesh's start-up probes were refused at the edge (no
    // PROXY header) and never reached a handshake; HAProxy's start-up probes
    // may have (a header, then a close): `closed`, at most one per frontend.
    // web: 2 curl connections and 2 Python ones; tun: 2 Python connections.
    let want = |api, name, n, probes| {
        let ok = wait_until(Duration::from_secs(5), || {
            let (hs, [plain, timeout, closed, cert, proto]) = tls_counts(api, name);
            (hs, plain, timeout, cert, proto) == (n, 1, 0, 0, 0) && closed <= probes
        });
        assert!(ok, "{name}: {:?}", tls_counts(api, name));
    };
    want(api, "web", 4, 2);
    want(api, "tun", 2, 1);

    // The access log: client address from the PROXY header, TLS version
    // and SNI on http exchanges and tcp connections.
    let mut lines = Vec::new();
    let complete = wait_until(Duration::from_secs(10), || {
        lines = log_lines(&access);
        line_of(&lines, "web", "127.0.0.7").is_some()
            && line_of(&lines, "web", "127.0.0.8").is_some()
            && line_of(&lines, "tun", "127.0.0.9").is_some()
            && line_of(&lines, "tun", "127.0.0.10").is_some()
            && line_of(&lines, "sni", "127.0.0.1").is_some()
            // A tunnel's line is written when it closes: on a loaded
            // machine that can trail the client's own close.
            && line_of(&lines, "tun", "127.0.0.12").is_some()
            && line_of(&lines, "-", "127.0.0.13").is_some()
    });
    assert!(complete, "{lines:#?}");
    let l = line_of(&lines, "-", "127.0.0.13").unwrap();
    assert_eq!(
        (&l["status"], &l["tls_version"], &l["sni"]),
        (&400.into(), &"TLSv1.3".into(), &"a.example.com".into()),
        "{l}"
    );
    let l = line_of(&lines, "web", "127.0.0.7").unwrap();
    assert_eq!(
        (&l["kind"], &l["status"], &l["tls_version"], &l["sni"]),
        (
            &"http".into(),
            &200.into(),
            &"TLSv1.3".into(),
            &"a.example.com".into()
        ),
        "{l}"
    );
    let l = line_of(&lines, "web", "127.0.0.8").unwrap();
    assert_eq!(l["tls_version"], "TLSv1.2", "{l}");
    assert_eq!(l["sni"], "a.example.com", "{l}");
    let l = line_of(&lines, "tun", "127.0.0.9").unwrap();
    assert_eq!(
        (&l["kind"], &l["tls_version"], &l["sni"]),
        (&"tcp".into(), &"TLSv1.3".into(), &"a.example.com".into()),
        "{l}"
    );
    assert!(l["close_reason"].is_string(), "{l}");
    // "ping\n" each way, plus the PROXY reply line from the backend.
    assert_eq!(l["bytes_in"], 5, "{l}");
    let l = line_of(&lines, "sni", "127.0.0.1").unwrap();
    assert_eq!(l["tls_version"], "TLSv1.3", "{l}");
    assert_eq!(l["sni"], "a.example.com", "{l}");
    assert_eq!((&l["bytes_in"], &l["bytes_out"]), (&5.into(), &5.into()));
    let l = line_of(&lines, "tun", "127.0.0.10").unwrap();
    assert_eq!(l["close_reason"], "tls_handshake_failed", "{l}");
    // One line per tcp connection, one per failed handshake: as many as the
    // route's failure counters say (HAProxy's probe, if it got through,
    // from 127.0.0.1).
    let counted = wait_until(Duration::from_secs(5), || {
        lines = log_lines(&access);
        let (_, f) = tls_counts(api, "tun");
        let failed = lines
            .iter()
            .filter(|l| l["route"] == "tun" && l["close_reason"] == "tls_handshake_failed")
            .count() as u64;
        failed == f.iter().sum::<u64>()
    });
    assert!(counted, "{:?} {lines:#?}", tls_counts(api, "tun"));
    for ip in ["127.0.0.9", "127.0.0.10", "127.0.0.12"] {
        let from = |l: &&serde_json::Value| {
            l["route"] == "tun"
                && l["client"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(&format!("{ip}:")))
        };
        assert_eq!(lines.iter().filter(from).count(), 1, "{ip}: {lines:#?}");
    }
    assert_eq!(l["tls_version"], serde_json::Value::Null, "{l}");
    assert_eq!(l["upstream"], serde_json::Value::Null, "{l}");
    drop(rm);
}

both_drivers!(tls_behind_proxy_protocol);
