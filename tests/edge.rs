//! The edge against real peers: HAProxy sending PROXY v1/v2 headers to
//! ringmesh and accepting them from it, bad and slow headers, and TLS
//! passthrough by SNI to `openssl s_server` backends with different
//! certificates, checked with `openssl s_client` and Python's ssl module
//! (a ClientHello cut into several records and segments with pauses).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::http::{http_backend, read_response};
use support::*;

/// The counter `ringmesh_edge_refused_total{reason}` from /metrics.
fn refused(api: u16, reason: &str) -> u64 {
    let text = support::api::get(api, "/metrics").body;
    let key = format!("ringmesh_edge_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in metrics:\n{text}"))
}

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

const HAPROXY_DEFAULTS: &str = "global\n  maxconn 200\ndefaults\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n";

/// One HTTP/1.1 request with `Connection: close` from source `src` to `port`;
/// returns (status, body).
fn get_from(src: [u8; 4], port: u16) -> (u16, String) {
    let mut s = connect_from(src, port);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /who HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut r = std::io::BufReader::new(s);
    let m = read_response(&mut r, false).expect("response");
    (m.status(), m.body_str())
}

/// An http backend that answers with the value of header `name` it got.
fn echo_header(name: &'static str) -> Backend {
    http_backend(move |req, p| {
        let v = req.header(name).unwrap_or("-").to_string();
        p.respond("200 OK", "", v.as_bytes());
        true
    })
}

/// HAProxy `mode tcp` with `send-proxy` / `send-proxy-v2` in front of
/// ringmesh routes with `proxy_protocol`: the backend sees the client's
/// address in X-Forwarded-For, ip_hash spreads by it, per-IP limits count it.
fn haproxy_sends_proxy_headers(io: &str) {
    let backend = echo_header("x-forwarded-for");
    let tags = [Backend::tagged("b0"), Backend::tagged("b1")];
    let (http, tcp, limited, api) = (free_port(), free_port(), free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{
    "{http}": {{"name": "web", "proxy_protocol": true,
      "backends": [{{"internal_port": "{}"}}]}},
    "{tcp}": {{"name": "hash", "protocol": "tcp", "proxy_protocol": true, "load_balance": "ip_hash",
      "backends": [{{"name": "t0", "internal_port": "{}"}}, {{"name": "t1", "internal_port": "{}"}}]}}
  }}}}"#,
        backend.port, tags[0].port, tags[1].port
    );
    let rm = Ringmesh::start(&cfg, io, &[http, tcp]);
    // A second instance with a per-IP limit of 1 behind the same balancer.
    let cfg2 = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 2, "max_connections_per_ip": 1,
  "routes": {{"{limited}": {{"name": "lim", "proxy_protocol": true, "backends": [{{"internal_port": "{}"}}]}}}}}}"#,
        backend.port
    );
    let rm2 = Ringmesh::start(&cfg2, io, &[limited]);
    let (h1, h2, h3, h4) = (free_port(), free_port(), free_port(), free_port());
    let _hp = haproxy(
        rm.dir.path(),
        &format!(
            "{HAPROXY_DEFAULTS}\
frontend v1\n  mode tcp\n  bind 127.0.0.1:{h1}\n  default_backend web1\n\
backend web1\n  mode tcp\n  server r 127.0.0.1:{http} send-proxy\n\
frontend v2\n  mode tcp\n  bind 127.0.0.1:{h2}\n  default_backend web2\n\
backend web2\n  mode tcp\n  server r 127.0.0.1:{http} send-proxy-v2\n\
frontend hash\n  mode tcp\n  bind 127.0.0.1:{h3}\n  default_backend hash\n\
backend hash\n  mode tcp\n  server r 127.0.0.1:{tcp} send-proxy-v2\n\
frontend lim\n  mode tcp\n  bind 127.0.0.1:{h4}\n  default_backend lim\n\
backend lim\n  mode tcp\n  server r 127.0.0.1:{limited} send-proxy\n"
        ),
        &[h1, h2, h3, h4],
    );

    // X-Forwarded-For is the address in the header, v1 and v2.
    assert_eq!(get_from([127, 0, 0, 7], h1), (200, "127.0.0.7".to_string()));
    assert_eq!(get_from([127, 0, 0, 8], h2), (200, "127.0.0.8".to_string()));
    // A keep-alive connection: every request carries the header's address.
    let mut c = connect_from([127, 0, 0, 9], h2);
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    for _ in 0..3 {
        c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let m = read_response(&mut r, false).unwrap();
        assert_eq!(m.body_str(), "127.0.0.9");
    }
    drop((c, r));

    // ip_hash by the header's address: sticky per address, and spread (16
    // addresses all on one of two backends: chance 2^-15).
    let mut seen = std::collections::HashMap::new();
    for round in 0..2 {
        for i in 20..36u8 {
            let mut s = connect_from([127, 0, 0, i], h3);
            let tag = read_line(&mut s);
            assert!(tag == "b0" || tag == "b1", "tag {tag:?}");
            let prev = seen.entry(i).or_insert_with(|| tag.clone());
            assert_eq!(*prev, tag, "127.0.0.{i} moved in round {round}");
        }
    }
    let distinct: std::collections::HashSet<_> = seen.values().collect();
    assert_eq!(
        distinct.len(),
        2,
        "ip_hash ignored the PROXY address: {seen:?}"
    );

    // Per-IP limit by the header's address: a second connection of
    // 127.0.0.7 is refused, 127.0.0.10 (same balancer socket address) is not.
    let mut held = connect_from([127, 0, 0, 7], h4);
    let mut held_r = std::io::BufReader::new(held.try_clone().unwrap());
    held.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut held_r, false).unwrap().body_str(),
        "127.0.0.7"
    );
    assert_eq!(get_from([127, 0, 0, 7], h4).0, 503);
    assert_eq!(
        get_from([127, 0, 0, 10], h4),
        (200, "127.0.0.10".to_string())
    );
    drop((held, held_r));
    drop(rm2);

    // Nothing was refused at the edge on the way (the start-up probes of
    // the test harness connect without a header: those are "closed").
    assert_eq!(refused(api, "proxy_missing"), 0);
    assert_eq!(refused(api, "proxy_invalid"), 0);
    drop(rm);
}

/// ringmesh `send_proxy` v1 (tcp route) and v2 (http route) to HAProxy
/// frontends with `accept-proxy`, which put the source they accepted into
/// `X-Src` for an echoing backend.
fn ringmesh_sends_proxy_headers(io: &str) {
    let echo = echo_header("x-src");
    let (ha1, ha2) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let _hp = haproxy(
        dir.path(),
        &format!(
            "{HAPROXY_DEFAULTS}\
frontend pv1\n  mode http\n  bind 127.0.0.1:{ha1} accept-proxy\n  http-request set-header X-Src %[src]\n  default_backend echo\n\
frontend pv2\n  mode http\n  bind 127.0.0.1:{ha2} accept-proxy\n  http-request set-header X-Src %[src]\n  default_backend echo\n\
backend echo\n  mode http\n  server e 127.0.0.1:{}\n",
            echo.port
        ),
        &[ha1, ha2],
    );
    let (tcp, http, api) = (free_port(), free_port(), free_port());
    // HTTP health checks too: HAProxy's accept-proxy refuses a connection
    // without a header, so they pass only with the LOCAL header first.
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{
    "{tcp}": {{"name": "t", "protocol": "tcp", "backends": [{{"internal_port": "{ha1}", "send_proxy": "v1"}}]}},
    "{http}": {{"name": "h", "health": {{"path": "/", "interval": "200ms", "rise": 1}},
      "backends": [{{"name": "hp", "internal_port": "{ha2}", "send_proxy": "v2"}}]}}
  }}}}"#
    );
    let _rm = Ringmesh::start(&cfg, io, &[tcp, http]);
    let mut last = serde_json::Value::Null;
    let healthy = wait_until(Duration::from_secs(15), || {
        let st = support::api::get(api, "/api/status").json();
        last = st["routes"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["name"] == "h"))
            .map(|r| r["backends"][0]["health"].clone())
            .unwrap_or_default();
        last["status"] == "healthy"
    });
    assert!(healthy, "health check through accept-proxy: {last}");
    assert_eq!(
        get_from([127, 0, 0, 7], tcp),
        (200, "127.0.0.7".to_string())
    );
    // http: one client after another, each must be named in its own header
    // (a pooled upstream connection would carry the first client's).
    for i in [11u8, 12, 13, 11] {
        assert_eq!(
            get_from([127, 0, 0, i], http),
            (200, format!("127.0.0.{i}"))
        );
    }
    // A keep-alive client: each request on a new upstream, all with its address.
    let mut c = connect_from([127, 0, 0, 14], http);
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    for _ in 0..3 {
        c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(
            read_response(&mut r, false).unwrap().body_str(),
            "127.0.0.14"
        );
    }
}

/// Missing, garbage, invalid and slow headers are closed and counted; a
/// LOCAL header keeps the socket address; bytes sent with the header, or
/// a header sent a byte at a time, are not lost.
fn bad_and_odd_proxy_headers(io: &str) {
    let backend = echo_header("x-forwarded-for");
    let tag = Backend::echo();
    let (http, tcp, api) = (free_port(), free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{
    "{http}": {{"proxy_protocol": true, "timeouts": {{"header": "1s"}}, "backends": [{{"internal_port": "{}"}}]}},
    "{tcp}": {{"protocol": "tcp", "proxy_protocol": true, "timeouts": {{"header": "1s"}}, "backends": [{{"internal_port": "{}"}}]}}
  }}}}"#,
        backend.port, tag.port
    );
    let _rm = Ringmesh::start(&cfg, io, &[http, tcp]);
    let base = |r: &str| refused(api, r);
    let (missing, invalid, timeout) = (
        base("proxy_missing"),
        base("proxy_invalid"),
        base("proxy_timeout"),
    );

    let closed = |mut s: TcpStream, limit: Duration| -> bool {
        s.set_read_timeout(Some(limit)).unwrap();
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(n) => panic!("got {:?}", String::from_utf8_lossy(&b[..n])),
        }
    };
    // No header: a plain request.
    let mut s = connect(http);
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert!(closed(s, Duration::from_secs(5)));
    // Invalid v1 and v2.
    let mut s = connect(tcp);
    s.write_all(b"PROXY TCP4 1.2.3.999 1.2.3.4 1 2\r\nhello")
        .unwrap();
    assert!(closed(s, Duration::from_secs(5)));
    let mut s = connect(tcp);
    s.write_all(b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c")
        .unwrap();
    assert!(closed(s, Duration::from_secs(5)));
    // Slow: half a header, then silence until the 1 s header timeout.
    let started = Instant::now();
    let mut s = connect(http);
    s.write_all(b"PROXY TCP4 192.0.2.1").unwrap();
    assert!(closed(s, Duration::from_secs(10)));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(800), "closed after {took:?}");
    // Silent.
    assert!(closed(connect(tcp), Duration::from_secs(10)));
    assert!(wait_until(Duration::from_secs(5), || {
        base("proxy_missing") > missing
            && base("proxy_invalid") >= invalid + 2
            && base("proxy_timeout") >= timeout + 2
    }));

    // Header and request in one write: nothing lost.
    let mut s = connect(http);
    s.write_all(b"PROXY TCP4 192.0.2.44 198.51.100.1 4000 80\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut r = std::io::BufReader::new(s);
    assert_eq!(
        read_response(&mut r, false).unwrap().body_str(),
        "192.0.2.44"
    );
    // A byte at a time (v2, IPv6), then the request.
    let mut s = connect(http);
    s.set_nodelay(true).unwrap();
    let mut hdr = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    hdr.extend_from_slice(
        &"2001:db8::5"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    hdr.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    hdr.extend_from_slice(&[0x10, 0x00, 0x00, 0x50]);
    for b in &hdr {
        s.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut r = std::io::BufReader::new(s);
    assert_eq!(
        read_response(&mut r, false).unwrap().body_str(),
        "2001:db8::5"
    );
    // LOCAL (a balancer's health check): the socket's address stands.
    let mut s = connect(http);
    s.write_all(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut r = std::io::BufReader::new(s);
    assert_eq!(
        read_response(&mut r, false).unwrap().body_str(),
        "127.0.0.1"
    );
    // tcp: the bytes after the header reach the backend first.
    let mut s = connect(tcp);
    s.write_all(b"PROXY UNKNOWN\r\nping").unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");
}

/// A self-signed ECDSA certificate for `cn` in `dir`: (cert, key) paths.
fn cert(dir: &Path, cn: &str) -> (String, String) {
    let c = dir.join(format!("{cn}.pem"));
    let k = dir.join(format!("{cn}.key"));
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={cn}")])
        .arg("-keyout")
        .arg(&k)
        .arg("-out")
        .arg(&c)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success());
    (c.display().to_string(), k.display().to_string())
}

/// `openssl s_server -www` with the certificate of `cn`, on a free port.
fn tls_server(dir: &Path, cn: &str) -> (ChildGuard, u16) {
    let (c, k) = cert(dir, cn);
    let port = free_port();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-cert", &c, "-key", &k])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let g = ChildGuard(child);
    assert!(wait_until(Duration::from_secs(10), || TcpStream::connect(
        ("127.0.0.1", port)
    )
    .is_ok()));
    (g, port)
}

/// The subject CN `openssl s_client` sees through `port` with `servername`
/// (`None`: no SNI at all); `None` when the handshake fails.
fn s_client(port: u16, servername: Option<&str>) -> Option<String> {
    let mut cmd = Command::new("timeout");
    cmd.args(["20", "openssl", "s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"));
    match servername {
        Some(n) => cmd.args(["-servername", n]),
        None => cmd.arg("-noservername"),
    };
    let out = cmd.stdin(Stdio::null()).output().expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("subject=CN = "))
        .or_else(|| text.lines().find_map(|l| l.strip_prefix("subject=CN=")))
        .map(|s| s.trim().to_string())
}

/// Python's ssl module over a socket: the ClientHello for `sni` re-framed
/// into records of `record` bytes, sent in `pieces` segments with pauses,
/// then the handshake completes; prints the server certificate's PEM.
const SPLIT_HELLO: &str = r#"
import socket, ssl, sys, time
port, sni, record, pieces = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out, server_hostname=sni)
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = out.read()
assert hello[0] == 0x16
msg, ver = hello[5:], hello[1:3]
framed = b"".join(bytes([0x16]) + ver + len(msg[i:i+record]).to_bytes(2, "big") + msg[i:i+record]
                  for i in range(0, len(msg), record))
s = socket.create_connection(("127.0.0.1", port), timeout=20)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
step = -(-len(framed) // pieces)
for i in range(0, len(framed), step):
    s.sendall(framed[i:i+step])
    time.sleep(0.2)
while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        data = out.read()
        if data:
            s.sendall(data)
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("closed during the handshake")
        inc.write(chunk)
print(ssl.DER_cert_to_PEM_cert(tls.getpeercert(True)))
"#;

fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

/// Two TLS backends (different certificates) and a default behind one tcp
/// port by SNI; a port without a default closes unknown names; split and
/// stalled ClientHellos; plain text on a passthrough port.
fn sni_passthrough(io: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (_a, pa) = tls_server(dir.path(), "a.test");
    let (_b, pb) = tls_server(dir.path(), "b.test");
    let (_d, pd) = tls_server(dir.path(), "default.test");
    let (port, strict, pp, api) = (free_port(), free_port(), free_port(), free_port());
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{
    "a": {{"listen": {port}, "protocol": "tcp", "sni": ["a.test"], "timeouts": {{"header": "1s"}},
      "backends": [{{"internal_port": "{pa}"}}]}},
    "b": {{"listen": {port}, "protocol": "tcp", "sni": ["*.b.test", "b.test"],
      "backends": [{{"internal_port": "{pb}"}}]}},
    "rest": {{"listen": {port}, "protocol": "tcp", "backends": [{{"internal_port": "{pd}"}}]}},
    "strict": {{"listen": {strict}, "protocol": "tcp", "sni": ["a.test"], "timeouts": {{"header": "1s"}},
      "backends": [{{"internal_port": "{pa}"}}]}},
    "pp-a": {{"listen": {pp}, "protocol": "tcp", "sni": ["a.test"], "proxy_protocol": true,
      "backends": [{{"internal_port": "{pa}"}}]}},
    "pp-b": {{"listen": {pp}, "protocol": "tcp", "sni": ["b.test"], "proxy_protocol": true,
      "backends": [{{"internal_port": "{pb}"}}]}}
  }}}}"#
    );
    let _rm = Ringmesh::start(&cfg, io, &[port, strict, pp]);
    let base = |r: &str| refused(api, r);
    let (no_route, stalled, not_tls) = (
        base("sni_no_route"),
        base("sni_timeout"),
        base("sni_not_tls"),
    );

    assert_eq!(s_client(port, Some("a.test")).as_deref(), Some("a.test"));
    assert_eq!(s_client(port, Some("A.TEST")).as_deref(), Some("a.test"));
    assert_eq!(s_client(port, Some("x.b.test")).as_deref(), Some("b.test"));
    assert_eq!(s_client(port, Some("b.test")).as_deref(), Some("b.test"));
    assert_eq!(
        s_client(port, Some("other.test")).as_deref(),
        Some("default.test")
    );
    assert_eq!(s_client(port, None).as_deref(), Some("default.test"));
    assert_eq!(s_client(strict, Some("a.test")).as_deref(), Some("a.test"));
    assert_eq!(s_client(strict, Some("other.test")), None);
    assert_eq!(s_client(strict, None), None);

    // curl --resolve: the right certificate for the name, and the request
    // goes through to the backend untouched (s_server -www answers it).
    let out = Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{ssl_verify_result}",
        ])
        .arg("--resolve")
        .arg(format!("x.b.test:{port}:127.0.0.1"))
        .arg(format!("https://x.b.test:{port}/"))
        .output()
        .expect("curl");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("200"),
        "{out:?}"
    );

    // PROXY header first (curl --haproxy-protocol), then the ClientHello:
    // routed by SNI; the certificate is checked against the CA (self-signed).
    let curl_pp = |name: &str| {
        let out = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "20",
                "--haproxy-protocol",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg("--cacert")
            .arg(dir.path().join(format!("{name}.pem")))
            .arg("--resolve")
            .arg(format!("{name}:{pp}:127.0.0.1"))
            .arg(format!("https://{name}:{pp}/"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl_pp("a.test"), "200");
    assert_eq!(curl_pp("b.test"), "200");

    // A ClientHello in 7 records of 64 bytes, sent in 5 segments 200 ms apart.
    let pem_a = pem_body(&std::fs::read_to_string(dir.path().join("a.test.pem")).unwrap());
    let pem_b = pem_body(&std::fs::read_to_string(dir.path().join("b.test.pem")).unwrap());
    for (sni, record, pieces, want) in [("a.test", 64, 5, &pem_a), ("y.b.test", 16384, 4, &pem_b)] {
        let out = Command::new("python3")
            .args(["-c", SPLIT_HELLO])
            .arg(port.to_string())
            .arg(sni)
            .arg(record.to_string())
            .arg(pieces.to_string())
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            &pem_body(&String::from_utf8_lossy(&out.stdout)),
            want,
            "{sni}"
        );
    }

    // Stalled: half a record header, then nothing: closed at the 1 s header timeout.
    let started = Instant::now();
    let mut s = connect(strict);
    s.write_all(b"\x16\x03\x01\x02").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 8];
    assert!(matches!(s.read(&mut b), Ok(0) | Err(_)));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(9),
        "{took:?}"
    );
    // Plain HTTP on a passthrough port.
    let mut s = connect(port);
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert!(matches!(s.read(&mut b), Ok(0) | Err(_)));
    let st = support::api::get(api, "/api/status").json();
    assert!(
        st["edge_refused"]["sni_no_route"].as_u64() >= Some(no_route),
        "{st}"
    );
    assert!(wait_until(Duration::from_secs(5), || {
        base("sni_no_route") >= no_route + 2
            && base("sni_timeout") > stalled
            && base("sni_not_tls") > not_tls
    }));
}

both_drivers!(
    haproxy_sends_proxy_headers,
    ringmesh_sends_proxy_headers,
    bad_and_odd_proxy_headers,
    sni_passthrough,
);
