//! Access logs end to end through the real binary, on both I/O drivers:
//! JSON and combined lines that parse, with hostile bytes in method, target
//! and headers; a route with `"access_log": false` writes nothing; a tcp
//! connection's line at close; 100,000 requests give exactly 100,000 lines
//! across a logrotate-style rename + SIGUSR1 and a SIGTERM right after the
//! last response; an unwritable log path is reported and serving goes on.

mod support;

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::http::*;
use support::*;

both_drivers!(
    json_and_combined_lines_with_hostile_bytes,
    tcp_connection_logged_at_close,
    hundred_thousand_requests_across_rotation_and_sigterm,
    unwritable_log_is_reported_and_serving_continues,
);

/// A backend that answers every request `200` with body `ok`.
fn ok_backend() -> Backend {
    http_backend(|_, p| {
        p.respond("200 OK", "", b"ok");
        true
    })
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits (bounded) until `path` holds at least `n` lines, returns them.
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    wait_until(Duration::from_secs(10), || {
        got = lines(path);
        got.len() >= n
    });
    got
}

fn json_and_combined_lines_with_hostile_bytes(io: &str) {
    // Raw bytes in, fixed answer out: the backend must not choke on the
    // hostile header bytes the proxy forwards.
    let b = fast_backend();
    let (pj, pc, poff) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let jlog = dir.path().join("access.json");
    let clog = dir.path().join("access.clf");
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1,
  "access_log": {{"path": "{}", "format": "json"}},
  "routes": {{
    "{pj}": {{"name": "json-route", "backends": [{{"name": "b", "internal_port": {bp}}}]}},
    "{pc}": {{"name": "clf", "access_log": {{"path": "{}", "format": "combined"}},
              "backends": [{{"name": "b", "internal_port": {bp}}}]}},
    "{poff}": {{"name": "quiet", "access_log": false, "backends": [{{"name": "b", "internal_port": {bp}}}]}}
  }}}}"#,
        jlog.display(),
        clog.display(),
        bp = b.port
    );
    // One worker: lines come in request order (each worker has its own buffer).
    let _rm = Ringmesh::start(&cfg, io, &[pj, pc, poff]);

    // Hostile bytes the parser lets through: obs-text (invalid UTF-8),
    // quotes, backslashes, tabs, braces that look like JSON.
    let hostile_ua: &[u8] = b"evil\"},\"status\":999,\"x\":\"\t\\\xff\xfe\xc3";
    // Targets are strict printable ASCII (anything else is a 400), but
    // quotes, backslashes and braces pass.
    let hostile_target: &[u8] = b"/p\"},\"status\":1,{\\u0000?q=\\";
    let mut reqs: Vec<Vec<u8>> = Vec::new();
    let mut r = b"GET ".to_vec();
    r.extend_from_slice(hostile_target);
    r.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\nUser-Agent: ");
    r.extend_from_slice(hostile_ua);
    r.extend_from_slice(b"\r\nReferer: http://r/\"x\r\n\r\n");
    reqs.push(r);
    reqs.push(b"PO!ST# /plain HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc".to_vec());
    reqs.push(b"GET /old HTTP/1.0\r\nHost: a\r\n\r\n".to_vec());
    for port in [pj, pc, poff] {
        for req in &reqs {
            let mut c = Client::connect(port);
            c.send(req);
            let m = c.response();
            assert_eq!(m.status(), 200, "port {port}");
        }
    }

    let js = wait_lines(&jlog, 3);
    assert_eq!(js.len(), 3, "one JSON line per exchange: {js:?}");
    let v: Vec<Value> = js
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for x in &v {
        assert_eq!(x["route"], "json-route");
        assert_eq!(x["kind"], "http");
        assert_eq!(x["status"], 200);
        assert_eq!(x["upstream"], format!("127.0.0.1:{}", b.port));
        assert!(x["client"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(x["bytes_out"].as_u64().unwrap() > 0);
        assert!(x["duration_us"].is_u64());
        assert!(x["upstream_ttfb_us"].is_u64());
        assert!(x["tls_version"].is_null() && x["sni"].is_null());
    }
    assert_eq!(
        v[0]["target"].as_str().unwrap(),
        String::from_utf8_lossy(hostile_target)
    );
    assert_eq!(
        v[0]["user_agent"].as_str().unwrap(),
        String::from_utf8_lossy(hostile_ua)
    );
    assert_eq!(v[0]["referer"], "http://r/\"x");
    assert_eq!(v[1]["method"], "PO!ST#");
    // Head plus the 3-byte body.
    assert!(v[1]["bytes_in"].as_u64().unwrap() > 3);
    assert_eq!(v[2]["protocol"], "HTTP/1.0");

    let cs = wait_lines(&clog, 3);
    assert_eq!(cs.len(), 3, "{cs:?}");
    for l in &cs {
        parse_combined(l);
    }
    assert!(cs[0].contains("\\xFF"), "{}", cs[0]);
    assert!(cs[0].contains("/p\\x22},\\x22status"), "{}", cs[0]);
    assert!(
        cs[1].contains("\"PO!ST# /plain HTTP/1.1\" 200 "),
        "{}",
        cs[1]
    );
    // A head refused before routing (a space in the target: 400) is
    // logged to the top-level log.
    let mut c = Client::connect(pj);
    c.send(b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().status(), 400);
    let js = wait_lines(&jlog, 4);
    let v: Value = serde_json::from_str(&js[3]).unwrap();
    assert_eq!(
        (v["status"].as_u64(), v["route"].as_str()),
        (Some(400), Some("-"))
    );
    // The quiet route wrote nowhere.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(&jlog).len(), 4);
    assert_eq!(lines(&clog).len(), 3);
}

/// Checks one combined-format line: `ip - - [time] "req" status bytes "ref" "ua"`,
/// with no unescaped quote inside a quoted field.
fn parse_combined(l: &str) {
    let (ip, rest) = l.split_once(" - - [").expect(l);
    assert!(ip.parse::<std::net::IpAddr>().is_ok(), "{l}");
    let (time, rest) = rest.split_once("] \"").expect(l);
    assert_eq!(time.len(), 26, "{l}");
    let fields: Vec<&str> = rest.split('"').collect();
    // req, " status bytes ", ref, " ", ua, ""
    assert_eq!(fields.len(), 6, "{l}");
    let nums: Vec<&str> = fields[1].split_whitespace().collect();
    assert_eq!(nums.len(), 2, "{l}");
    nums[0].parse::<u16>().expect(l);
    nums[1].parse::<u64>().expect(l);
    assert!(l.bytes().all(|b| (0x20..0x7f).contains(&b)), "{l}");
}

fn tcp_connection_logged_at_close(io: &str) {
    let b = Backend::echo();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("tcp.log");
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1,
  "access_log": {{"path": "{}"}},
  "routes": {{"{port}": {{"name": "t", "protocol": "tcp", "backends": [{{"name": "b", "internal_port": {}}}]}}}}}}"#,
        log.display(),
        b.port
    );
    let _rm = Ringmesh::start(&cfg, io, &[port]);
    // The start-up probe connection logs a line too; count from there.
    let before = wait_lines(&log, 1).len();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"hello tunnel").unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    drop(s);
    let ls = wait_lines(&log, before + 1);
    let v: Value = serde_json::from_str(ls.last().unwrap()).unwrap();
    assert_eq!(v["kind"], "tcp");
    assert_eq!(v["protocol"], "tcp");
    assert_eq!(v["bytes_in"], 12);
    assert_eq!(v["bytes_out"], 12);
    assert_eq!(v["close_reason"], "closed");
    assert_eq!(v["upstream"], format!("127.0.0.1:{}", b.port));
    assert!(v.get("method").is_none());
}

/// A backend as fast as a test thread can be: reads pipelined GETs, answers
/// each with a fixed response.
fn fast_backend() -> Backend {
    Backend::spawn(|mut c| {
        let mut buf = vec![0u8; 64 * 1024];
        let mut carry = 0usize;
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let mut out = Vec::new();
        loop {
            let n = match c.read(&mut buf[carry..]) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let end = carry + n;
            let mut start = 0;
            out.clear();
            while let Some(i) = find(&buf[start..end], b"\r\n\r\n") {
                start += i + 4;
                out.extend_from_slice(resp);
            }
            buf.copy_within(start..end, 0);
            carry = end - start;
            if !out.is_empty() && c.write_all(&out).is_err() {
                return;
            }
        }
    })
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Sends `count` pipelined GETs (batches of `batch`) on one connection and
/// reads every response; returns how many `200` responses arrived.
fn pipelined(port: u16, count: usize, batch: usize) -> usize {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = b"GET /load HTTP/1.1\r\nHost: a\r\nUser-Agent: load\r\n\r\n";
    let marker = b"HTTP/1.1 200 OK\r\n";
    let mut got = 0usize;
    let mut sent = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let mut tail: Vec<u8> = Vec::new();
    while got < count {
        if sent == got {
            let k = batch.min(count - sent);
            let mut out = Vec::with_capacity(req.len() * k);
            for _ in 0..k {
                out.extend_from_slice(req);
            }
            s.write_all(&out).unwrap();
            sent += k;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "proxy closed after {got} responses");
        tail.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(i) = find(&tail[start..], marker) {
            got += 1;
            start += i + marker.len();
        }
        tail.drain(..start);
    }
    got
}

fn hundred_thousand_requests_across_rotation_and_sigterm(io: &str) {
    const TOTAL: usize = 100_000;
    const CONNS: usize = 8;
    let b = fast_backend();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let cfg = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 2, "shutdown_grace": "10s",
  "access_log": {{"path": "{}", "format": "json"}},
  "routes": {{"{port}": {{"name": "load", "backends": [{{"name": "b", "internal_port": {}}}]}}}}}}"#,
        log.display(),
        b.port
    );
    let mut rm = Ringmesh::start(&cfg, io, &[port]);
    let t0 = Instant::now();
    let half = |port| {
        let hs: Vec<_> = (0..CONNS)
            .map(|_| std::thread::spawn(move || pipelined(port, TOTAL / 2 / CONNS, 50)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
    };
    let first = half(port);
    assert_eq!(first, TOTAL / 2);
    // logrotate: rename, then SIGUSR1; lines keep going to the renamed file
    // until the writer reopens, then to a new file at the old path.
    std::fs::rename(&log, &rotated).unwrap();
    rm.signal(libc::SIGUSR1);
    let second = half(port);
    assert_eq!(second, TOTAL / 2);
    // SIGTERM right after the last response: the lines still in worker
    // buffers must reach the file before the process exits.
    rm.signal(libc::SIGTERM);
    let st = rm
        .wait_exit(Duration::from_secs(30))
        .expect("exits on SIGTERM");
    assert!(st.success(), "{st:?}");
    let elapsed = t0.elapsed();

    let mut total = 0usize;
    let mut per_file = Vec::new();
    for p in [&rotated, &log] {
        let f = std::fs::File::open(p).unwrap();
        let mut n = 0usize;
        for l in std::io::BufReader::new(f).lines() {
            let l = l.unwrap();
            // The probe connection of Ringmesh::start sent no request.
            let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(v["status"], 200);
            n += 1;
        }
        per_file.push(n);
        total += n;
    }
    eprintln!("{TOTAL} requests in {elapsed:?}; lines per file {per_file:?}");
    assert_eq!(total, TOTAL, "lines per file {per_file:?}");
    assert!(per_file[1] > 0, "nothing reached the reopened file");
    assert!(rm.logs().contains("access logs reopened"), "{}", rm.logs());
}

fn unwritable_log_is_reported_and_serving_continues(io: &str) {
    let b = ok_backend();
    let (port, api) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    // A directory cannot be opened for writing, not even by root.
    let cfg = format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 1,
  "access_log": {{"path": "{}"}},
  "routes": {{"{port}": {{"name": "web", "backends": [{{"name": "b", "internal_port": {}}}]}}}}}}"#,
        dir.path().display(),
        b.port
    );
    let rm = Ringmesh::start(&cfg, io, &[port, api]);
    let mut c = Client::connect(port);
    for _ in 0..20 {
        assert_eq!(c.get("/", "a", "").status(), 200);
    }
    assert!(
        wait_until(Duration::from_secs(10), || rm
            .logs()
            .contains("access log not written")),
        "{}",
        rm.logs()
    );
    // Still serving, on the same connection and on new ones.
    assert_eq!(c.get("/", "a", "").status(), 200);
    assert_eq!(Client::connect(port).get("/", "a", "").status(), 200);
    // Counted in /metrics.
    let failed = |m: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix("ringmesh_access_log_lines_failed_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(10), || failed(
            &support::api::get(api, "/metrics").body
        ) >= 20),
        "{}",
        support::api::get(api, "/metrics").body
    );
}
