//! Hot reload on real sockets: a reload adds a port (served at once on every
//! worker), removes one (new connects refused) while long transfers on the
//! removed port and on an unchanged one continue byte-exact; a bad config
//! leaves the old one in place and the API lists every error with its path;
//! SIGHUP and `ringmesh reload` re-read the file.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use support::*;

/// A config with an API port and tcp routes `(listen port, backend port)`.
fn config(api: u16, routes: &[(u16, u16)]) -> String {
    let rs: Vec<String> = routes
        .iter()
        .map(|(l, b)| {
            format!(
                r#""{l}": {{"name": "r{l}", "protocol": "tcp",
                  "backends": [{{"name": "echo", "internal_host": "127.0.0.1", "internal_port": "{b}"}}]}}"#
            )
        })
        .collect();
    format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2, "shutdown_grace": "20s",
  "routes": {{{}}}}}"#,
        rs.join(",\n")
    )
}

/// An echo transfer in two halves: the second half waits for `resume`.
struct Transfer {
    resume: mpsc::Sender<()>,
    writer: JoinHandle<String>,
    reader: JoinHandle<(u64, String)>,
}

const HALF_MIB: u64 = 8;

fn start_transfer(port: u16, seed: u64) -> Transfer {
    let c = connect(port);
    let mut r = c.try_clone().unwrap();
    let mut w = c;
    let (resume, wait) = mpsc::channel::<()>();
    let reader = std::thread::spawn(move || drain_hash(&mut r).expect("echo read"));
    let writer = std::thread::spawn(move || {
        let mut s = Stream::new(seed);
        let mut h = Sha256::new();
        for i in 0..2 * HALF_MIB {
            if i == HALF_MIB {
                wait.recv_timeout(Duration::from_secs(120))
                    .expect("resume signal");
            }
            let chunk = s.chunk(i);
            h.update(chunk);
            w.write_all(chunk).expect("transfer write");
        }
        w.shutdown(std::net::Shutdown::Write).unwrap();
        hex(&h.finalize())
    });
    Transfer {
        resume,
        writer,
        reader,
    }
}

impl Transfer {
    fn finish(self) {
        self.resume.send(()).unwrap();
        let sent = self.writer.join().unwrap();
        let (n, got) = self.reader.join().unwrap();
        assert_eq!(n, (2 * HALF_MIB) << 20, "bytes echoed");
        assert_eq!(got, sent, "echoed stream differs");
    }
}

fn echo_once(port: u16) -> bool {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    // Generous: the machine is shared with other builds and benchmarks.
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    if c.write_all(b"ping\n").is_err() {
        return false;
    }
    let mut b = [0u8; 5];
    c.read_exact(&mut b).is_ok() && &b == b"ping\n"
}

fn refused(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

fn route<'a>(status: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    status["routes"]
        .as_array()?
        .iter()
        .find(|r| r["key"] == key)
}

fn reload_adds_and_removes_ports(io: &str) {
    let echo = Backend::echo();
    let (api, keep, remove, add) = (free_port(), free_port(), free_port(), free_port());
    let cfg = config(api, &[(keep, echo.port), (remove, echo.port)]);
    let rm = Ringmesh::start(&cfg, io, &[api, keep, remove]);
    let on_keep = start_transfer(keep, 1);
    let on_removed = start_transfer(remove, 2);
    assert!(wait_until(Duration::from_secs(10), || echo
        .open
        .load(std::sync::atomic::Ordering::SeqCst)
        >= 2));

    let new_cfg = config(api, &[(keep, echo.port), (add, echo.port)]);
    let r = api::put_config(api, &new_cfg);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["added"][0], format!("127.0.0.1:{add}"), "{v}");
    assert_eq!(v["removed"][0], format!("127.0.0.1:{remove}"), "{v}");
    assert_eq!(v["settled"], true, "{v}");
    // The file was written.
    assert_eq!(std::fs::read_to_string(&rm.config).unwrap(), new_cfg);

    // The added port serves on every worker: many connections, all echo.
    for _ in 0..20 {
        assert!(
            echo_once(add),
            "added port does not serve; log:\n{}",
            rm.logs()
        );
    }
    // The removed port takes no new connections.
    assert!(
        wait_until(Duration::from_secs(10), || refused(remove)),
        "removed port still accepts"
    );
    // Counters of the unchanged route carried over (its transfer is open).
    let st = api::get(api, "/api/status").json();
    let kept = route(&st, &keep.to_string()).expect("kept route");
    assert!(kept["connections_active"].as_u64().unwrap() >= 1, "{kept}");
    assert!(route(&st, &remove.to_string()).is_none());

    // Both long transfers finish byte-exact.
    on_keep.finish();
    on_removed.finish();
    assert!(echo_once(keep));
    drop(rm);
}

fn bad_config_keeps_the_old_one(io: &str) {
    let echo = Backend::echo();
    let (api, port) = (free_port(), free_port());
    let cfg = config(api, &[(port, echo.port)]);
    let rm = Ringmesh::start(&cfg, io, &[api, port]);
    let bad = format!(
        r#"{{"dashboard_port": "{api}", "routes": {{"{port}": {{"protocol": "udp",
          "backends": [{{"internal_port": "abc"}}]}}, "x": {{"backends": []}}}}, "bogus": 1}}"#
    );
    let r = api::put_config(api, &bad);
    assert_eq!(r.status, 400, "{}", r.body);
    let v = r.json();
    assert_eq!(v["ok"], false);
    let paths: Vec<String> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    for want in [
        format!(r#"routes."{port}".protocol"#),
        format!(r#"routes."{port}".backends[0].internal_port"#),
        r#"routes."x".backends"#.to_string(),
        "bogus".to_string(),
    ] {
        assert!(paths.contains(&want), "{want} missing in {paths:?}");
    }
    // Invalid JSON: one error naming line and column.
    let r = api::put_config(api, "{\"routes\": ");
    assert_eq!(r.status, 400);
    assert!(r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("line 1"));
    // Not UTF-8.
    assert_eq!(
        api::call(api, "PUT", "/api/config", "", &[0xff, 0xfe]).status,
        400
    );
    // The old config stays: file, API and data path.
    assert_eq!(std::fs::read_to_string(&rm.config).unwrap(), cfg);
    assert_eq!(api::get(api, "/api/config").body, cfg);
    assert!(echo_once(port));
    assert!(
        rm.logs().contains("refused, old config stays"),
        "{}",
        rm.logs()
    );
    drop(rm);
}

fn sighup_rereads_the_file(io: &str) {
    let echo = Backend::echo();
    let (api, old, new) = (free_port(), free_port(), free_port());
    let rm = Ringmesh::start(&config(api, &[(old, echo.port)]), io, &[api, old]);
    let t = start_transfer(old, 3);
    // A broken file first: SIGHUP keeps the running config.
    std::fs::write(&rm.config, "{ not json").unwrap();
    rm.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || rm
        .logs()
        .contains("reload (SIGHUP) refused")));
    assert!(echo_once(old));
    std::fs::write(&rm.config, config(api, &[(new, echo.port)])).unwrap();
    rm.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || echo_once(new)),
        "SIGHUP did not add the port; log:\n{}",
        rm.logs()
    );
    assert!(wait_until(Duration::from_secs(10), || refused(old)));
    t.finish();
    drop(rm);
}

both_drivers!(
    reload_adds_and_removes_ports,
    bad_config_keeps_the_old_one,
    sighup_rereads_the_file
);

#[test]
fn post_reload_and_bind_failures_are_reported() {
    let echo = Backend::echo();
    let (api, a) = (free_port(), free_port());
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().port();
    let rm = Ringmesh::start(&config(api, &[(a, echo.port)]), "auto", &[api, a]);
    let b = free_port();
    std::fs::write(
        &rm.config,
        config(api, &[(a, echo.port), (taken, echo.port), (b, echo.port)]),
    )
    .unwrap();
    let r = api::call(api, "POST", "/api/reload", "", b"");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["bind_errors"][0]["address"], format!("127.0.0.1:{taken}"));
    assert!(v["bind_errors"][0]["error"]
        .as_str()
        .unwrap()
        .contains("in use"));
    // The rest of the reload applied.
    assert!(echo_once(b));
    assert!(echo_once(a));
    // Once the port is free, the next reload binds it.
    drop(holder);
    let r = api::call(api, "POST", "/api/reload", "", b"");
    assert_eq!(r.json()["added"][0], format!("127.0.0.1:{taken}"));
    assert!(echo_once(taken));
    drop(rm);
}

/// An http config: one route on `port` to the backend on `backend`.
fn http_config(api: u16, port: u16, backend: u16) -> String {
    format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{"{port}": {{"name": "web", "backends": [{{"name": "b", "internal_port": "{backend}"}}]}}}}}}"#
    )
}

fn keepalive_picks_the_new_backend_and_inflight_finishes(io: &str) {
    use support::http::{http_backend, Client};
    let tag = |t: &'static str| {
        http_backend(move |req, p| {
            if req.second == "/slow" {
                std::thread::sleep(Duration::from_millis(1500));
            }
            p.respond("200 OK", "", t.as_bytes());
            true
        })
    };
    let (a, b) = (tag("a"), tag("b"));
    let (api, port) = (free_port(), free_port());
    let rm = Ringmesh::start(&http_config(api, port, a.port), io, &[api, port]);
    let mut ka = Client::connect(port);
    assert_eq!(ka.get("/", "x", "").body_str(), "a");
    // A slow request in flight while the backend changes.
    let mut slow = Client::connect(port);
    slow.send(b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    std::thread::sleep(Duration::from_millis(200));
    let r = api::put_config(api, &http_config(api, port, b.port));
    assert_eq!(r.status, 200, "{}", r.body);
    // The in-flight request finishes on the old backend, its connection stays usable.
    let s = slow.response();
    assert_eq!((s.status(), s.body_str().as_str()), (200, "a"));
    assert_ne!(s.header("connection"), Some("close"));
    // The same keep-alive connections use the new route table from their next request.
    assert_eq!(ka.get("/", "x", "").body_str(), "b");
    assert_eq!(slow.get("/", "x", "").body_str(), "b");
    assert_eq!(Client::connect(port).get("/", "x", "").body_str(), "b");
    drop(rm);
}

both_drivers!(keepalive_picks_the_new_backend_and_inflight_finishes);

#[test]
fn ringmesh_reload_rereads_the_file() {
    let echo = Backend::echo();
    let (api, old, new) = (free_port(), free_port(), free_port());
    let rm = Ringmesh::start(&config(api, &[(old, echo.port)]), "auto", &[api, old]);
    let t = start_transfer(old, 4);
    std::fs::write(&rm.config, config(api, &[(new, echo.port)])).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["reload", "--config"])
        .arg(&rm.config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("added: 127.0.0.1:{new}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("removed: 127.0.0.1:{old}")),
        "{stdout}"
    );
    // The reload answered once every worker applied it: no polling needed.
    assert!(echo_once(new));
    assert!(refused(old));
    t.finish();
    drop(rm);
}

/// 40 reloads (a port added and removed in turn) while keep-alive HTTP
/// clients and a stream of new TCP connections use the unchanged routes:
/// not one request or connection fails.
#[test]
fn reload_storm_costs_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use support::http::{http_backend, read_response};
    let echo = Backend::echo();
    let web = http_backend(|_, p| {
        p.respond("200 OK", "", b"ok");
        true
    });
    let (api, tcp, http, extra) = (free_port(), free_port(), free_port(), free_port());
    let cfg = |with_extra: bool| {
        let extra_route = if with_extra {
            format!(
                r#", "{extra}": {{"protocol": "tcp", "backends": [{{"internal_port": "{}"}}]}}"#,
                echo.port
            )
        } else {
            String::new()
        };
        format!(
            r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2,
  "routes": {{"{tcp}": {{"protocol": "tcp", "backends": [{{"internal_port": "{}"}}]}},
    "{http}": {{"backends": [{{"internal_port": "{}"}}]}}{extra_route}}}}}"#,
            echo.port, web.port
        )
    };
    let rm = Ringmesh::start(&cfg(false), "auto", &[api, tcp, http]);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
        threads.push(std::thread::spawn(move || {
            let c = connect(http);
            let mut r = std::io::BufReader::new(c.try_clone().unwrap());
            let mut w = c;
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                let res = w
                    .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    .and_then(|()| read_response(&mut r, false));
                match res {
                    Ok(m) if m.status() == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(m) => errors
                        .lock()
                        .unwrap()
                        .push(format!("status {}", m.status())),
                    Err(e) => {
                        errors.lock().unwrap().push(format!("http: {e}"));
                        return;
                    }
                }
            }
        }));
    }
    {
        let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
        threads.push(std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                if echo_once(tcp) {
                    ok.fetch_add(1, Ordering::SeqCst);
                } else {
                    errors.lock().unwrap().push("tcp echo failed".into());
                }
            }
        }));
    }
    for i in 0..40 {
        let r = api::put_config(api, &cfg(i % 2 == 0));
        assert_eq!(r.status, 200, "reload {i}: {}", r.body);
        assert_eq!(r.json()["settled"], true);
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let errors = errors.lock().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(ok.load(Ordering::SeqCst) > 40, "load did not run");
    drop(rm);
}
