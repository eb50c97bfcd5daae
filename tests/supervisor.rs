//! Backend processes ringmesh starts (`cmd`): cold start on the first
//! connection (and the time it takes), one start for 50 simultaneous first
//! connections, output captured into the route's log ring and served by the
//! API and `ringmesh logs`, idle stop and restart, crash and restart, kill
//! through the API and `ringmesh kill`, no orphan after SIGKILL of ringmesh,
//! a command that cannot start failing fast, the start-up copy tuning
//! staying out of backends' environment. Real python3 child processes
//! (tests/fixtures/backend.py) on loopback.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use support::procs::*;
use support::*;

/// Starts ringmesh and waits for its API only: a probe connection to a tcp
/// route would itself cold-start the backend. Route listeners are bound
/// before the API, so they queue connections once the API answers.
fn start(cfg: &str, io: &str) -> Ringmesh {
    let api: u16 = cfg
        .split("\"dashboard_port\": \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|p| p.parse().ok())
        .expect("dashboard_port in the config");
    Ringmesh::start(cfg, io, &[api])
}

fn config(api: u16, routes: &[String]) -> String {
    format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2, "shutdown_grace": "5s",
  "routes": {{ {} }} }}"#,
        routes.join(",\n")
    )
}

fn route(port: u16, name: &str, protocol: &str, extra: &str, backends: &[String]) -> String {
    format!(
        r#""{port}": {{"name": "{name}", "protocol": "{protocol}" {extra}, "backends": [{}]}}"#,
        backends.join(", ")
    )
}

fn wait_state(api: u16, key: &str, backend: &str, state: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ok = wait_until(Duration::from_secs(15), || {
        last = backend_status(api, key, backend);
        last["process"]["state"] == state
    });
    assert!(ok, "{backend} never got to {state}: {last}");
    last
}

/// Time from connect() (the SYN) to the first byte of the response.
fn first_byte_ms(port: u16, path: &str) -> (f64, String) {
    let t0 = Instant::now();
    let mut c = connect(port);
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(c);
    let mut line = String::new();
    r.fill_buf().unwrap();
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    r.read_line(&mut line).unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut r, &mut rest);
    (ms, format!("{line}{rest}"))
}

fn cold_start_first_request(io: &str) {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let (port, bport, api) = (free_port(), free_port(), free_port());
    // backend.py with -S starts in ~40 ms here; 60 ms of sleep makes a
    // backend that takes about 100 ms from exec to listen.
    let b = proc_backend("py", bport, &pidfile, &["--delay", "0.06"]);
    let cfg = config(api, &[route(port, "web", "http", "", &[b])]);
    let rm = start(&cfg, io);
    assert!(pids(&pidfile).is_empty(), "started before any demand");
    assert_eq!(
        backend_status(api, &port.to_string(), "py")["process"]["state"],
        "stopped"
    );

    let mut samples = Vec::new();
    for round in 0..3 {
        let (ms, resp) = first_byte_ms(port, "/first");
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}\n{}", rm.logs());
        assert!(resp.contains("hello from"), "{resp}");
        let st = backend_status(api, &port.to_string(), "py");
        let ready_ms = st["process"]["ready_ms"].as_u64().unwrap();
        eprintln!(
            "cold start {io} round {round}: SYN to first response byte {ms:.1} ms (process spawn to port accepting: {ready_ms} ms)"
        );
        samples.push(ms);
        assert_eq!(pids(&pidfile).len(), round + 1);
        // A warm request goes straight through.
        let (s, body) = get(port, "/warm");
        assert_eq!(s, 200, "{body}");
        // Stop it for the next round.
        let (code, v) = api_call(api, &format!("/api/processes/{port}/py/kill"));
        assert_eq!(code, 200, "{v}");
        wait_state(api, &port.to_string(), "py", "stopped");
    }
    samples.sort_by(f64::total_cmp);
    eprintln!("cold start {io}: first byte after {samples:?} ms");
    // The bar is 300 ms on a quiet machine; tests run on a loaded one.
    assert!(samples[0] < 3000.0, "{samples:?}");
    drop(rm);
}

fn api_call(api: u16, path: &str) -> (u16, serde_json::Value) {
    support::procs::api(api, "POST", path)
}

fn simultaneous_first_connections_start_one_process(io: &str) {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let (port, bport, api) = (free_port(), free_port(), free_port());
    let b = proc_backend("py", bport, &pidfile, &["--mode", "tcp", "--delay", "0.3"]);
    let cfg = config(api, &[route(port, "tcp", "tcp", "", &[b])]);
    let rm = start(&cfg, io);
    assert!(pids(&pidfile).is_empty(), "started before any demand");
    let n = 50;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut c = connect(port);
                read_line(&mut c)
            })
        })
        .collect();
    let lines: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let started = pids(&pidfile);
    assert_eq!(started.len(), 1, "starts: {started:?}\n{}", rm.logs());
    let want = format!("pid {}", started[0]);
    assert!(lines.iter().all(|l| *l == want), "{lines:?}");
    let st = backend_status(api, &port.to_string(), "py");
    assert_eq!(st["process"]["starts"], 1, "{st}");
}

both_drivers!(
    cold_start_first_request,
    simultaneous_first_connections_start_one_process
);

fn ringmesh_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn output_is_captured_and_served_by_the_api_and_cli() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let (port, bport, api) = (free_port(), free_port(), free_port());
    let b = proc_backend("py", bport, &pidfile, &[]);
    let cfg = config(api, &[route(port, "web", "http", "", &[b])]);
    let rm = start(&cfg, "auto");
    for p in ["/a", "/b", "/c"] {
        assert_eq!(get(port, p).0, 200);
    }
    let mut v = serde_json::Value::Null;
    let got = wait_until(Duration::from_secs(5), || {
        v = support::procs::api(api, "GET", &format!("/api/logs/{port}")).1;
        let text = v.to_string();
        text.contains("request GET /c HTTP/1.1") && text.contains("connection on")
    });
    assert!(got, "{v}\n{}", rm.logs());
    assert_eq!(v["route"], "web");
    let lines = v["lines"].as_array().unwrap();
    let a = lines
        .iter()
        .find(|l| l["line"] == "request GET /a HTTP/1.1")
        .unwrap();
    assert_eq!(a["stream"], "stdout");
    assert_eq!(a["backend"], "py");
    assert!(a["ts_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(lines.iter().any(
        |l| l["stream"] == "stderr" && l["line"].as_str().unwrap().starts_with("connection on")
    ));
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    // since=next: nothing new; by name works like by key.
    let next = v["next"].as_u64().unwrap();
    let (s, v2) = support::procs::api(api, "GET", &format!("/api/logs/web?since={next}"));
    assert_eq!(s, 200);
    assert_eq!(v2["lines"].as_array().unwrap().len(), 0, "{v2}");
    assert_eq!(v2["next"], next);
    let (s, _) = support::procs::api(api, "GET", "/api/logs/nope");
    assert_eq!(s, 404);
    let (s, _) = support::procs::api(api, "GET", &format!("/api/logs/{port}?since=x"));
    assert_eq!(s, 400);

    // The CLI, by --api and by --config.
    let url = format!("http://127.0.0.1:{api}");
    let (code, out, err) = ringmesh_cli(&["logs", "web", "--api", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("py out | request GET /b HTTP/1.1"), "{out}");
    assert!(out.contains("py err | connection on"), "{out}");
    let cfgpath = rm.config.display().to_string();
    let (code, out, _) = ringmesh_cli(&["logs", &port.to_string(), "--config", &cfgpath]);
    assert_eq!(code, 0);
    assert!(out.contains("request GET /c"), "{out}");
    let (code, _, err) = ringmesh_cli(&["logs", "nope", "--api", &url]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no route \"nope\""), "{err}");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = ringmesh_cli(&["logs", "web", "--api", &dead]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot reach"), "{err}");

    // -f follows: a new request shows up in a running follower.
    let mut f = Command::new(BIN)
        .args(["logs", "web", "-f", "--api", &url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = f.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let done = line.contains("GET /followed");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(get(port, "/followed").0, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = f.kill();
    let _ = f.wait();
    let seen = reader.join().unwrap();
    assert!(seen.iter().any(|l| l.contains("GET /followed")), "{seen:?}");
}

#[test]
fn idle_backend_naps_and_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let (port, bport, api) = (free_port(), free_port(), free_port());
    let b = proc_backend("py", bport, &pidfile, &["--mode", "tcp"]);
    let cfg = config(
        api,
        &[route(port, "t", "tcp", r#", "idle_timeout": "1s""#, &[b])],
    );
    let _rm = start(&cfg, "auto");
    let key = port.to_string();
    // An open tunnel keeps it awake well past the idle timeout, even silent.
    let mut held = connect(port);
    let pid1: u32 = read_line(&mut held)[4..].parse().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(alive(pid1), "stopped while a connection was open");
    assert_eq!(
        backend_status(api, &key, "py")["process"]["state"],
        "running"
    );
    drop(held);
    let st = wait_state(api, &key, "py", "napping");
    assert_eq!(st["health"]["status"], "napping", "{st}");
    assert!(st["process"]["pid"].is_null());
    assert!(wait_until(Duration::from_secs(5), || !alive(pid1)));
    // The next connection starts it again.
    let mut c = connect(port);
    let pid2: u32 = read_line(&mut c)[4..].parse().unwrap();
    assert_ne!(pid1, pid2);
    assert_eq!(pids(&pidfile), [pid1, pid2]);
    let st = backend_status(api, &key, "py");
    assert_eq!(st["process"]["restarts"], 1, "{st}");
    assert_eq!(st["process"]["crashes"], 0, "{st}");
}

#[test]
fn crashed_backend_is_restarted_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let (port, bport, api) = (free_port(), free_port(), free_port());
    let b = proc_backend("py", bport, &pidfile, &[]);
    let cfg = config(api, &[route(port, "web", "http", "", &[b])]);
    let _rm = start(&cfg, "auto");
    let key = port.to_string();
    let (_, body) = get(port, "/");
    let pid1 = pid_of(&body);
    // SAFETY-free: SIGKILL to the child ringmesh started for this test.
    assert_eq!(unsafe { libc::kill(pid1 as i32, libc::SIGKILL) }, 0);
    let st = wait_state(api, &key, "py", "crashed");
    assert_eq!(st["process"]["last_exit"], "signal 9 (SIGKILL)", "{st}");
    assert_eq!(st["process"]["crashes"], 1);
    assert_eq!(st["health"]["status"], "stopped", "not unhealthy: {st}");
    let (s, body) = get(port, "/again");
    assert_eq!(s, 200, "{body}");
    let pid2 = pid_of(&body);
    assert_ne!(pid1, pid2);
    let st = wait_state(api, &key, "py", "running");
    assert_eq!(st["process"]["pid"], pid2);
    assert_eq!(st["process"]["starts"], 2);
    let mut c = connect(api);
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut m = String::new();
    std::io::Read::read_to_string(&mut c, &mut m).unwrap();
    for line in [
        "ringmesh_backend_process_crashes_total{route=\"web\",backend=\"py\"} 1",
        "ringmesh_backend_process_starts_total{route=\"web\",backend=\"py\"} 2",
        "ringmesh_backend_process_running{route=\"web\",backend=\"py\"} 1",
        "ringmesh_backend_healthy{route=\"web\",backend=\"py\"} 1",
    ] {
        assert!(m.contains(line), "{line} not in\n{m}");
    }
}

#[test]
fn crash_loop_backs_off_and_reports_exits() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let (port, bport, api) = (free_port(), free_port(), free_port());
    // Exits with status 3 right after it starts listening.
    let b = proc_backend(
        "py",
        bport,
        &pidfile,
        &["--mode", "tcp", "--exit-after", "0.2"],
    );
    let cfg = config(api, &[route(port, "t", "tcp", "", &[b])]);
    let _rm = start(&cfg, "auto");
    let key = port.to_string();
    let t0 = Instant::now();
    for _ in 0..4 {
        let mut c = connect(port);
        let _ = read_line(&mut c);
        wait_state(api, &key, "py", "crashed");
    }
    let st = backend_status(api, &key, "py");
    assert_eq!(st["process"]["last_exit"], "exit status 3", "{st}");
    assert_eq!(pids(&pidfile).len(), 4);
    // Backoff 100 + 200 + 400 ms between the starts, plus 4 x 0.2 s of life.
    assert!(
        t0.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn kill_through_the_api_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a"), dir.path().join("b"));
    let (port, api) = (free_port(), free_port());
    let (ba, bb) = (free_port(), free_port());
    let addr_only = free_port();
    let backends = [
        proc_backend("a", ba, &pa, &["--mode", "tcp"]),
        proc_backend("b", bb, &pb, &["--mode", "tcp"]),
        format!(r#"{{"name": "plain", "internal_port": {addr_only}}}"#),
    ];
    let cfg = config(
        api,
        &[route(port, "t", "tcp", r#", "health": false"#, &backends)],
    );
    let rm = start(&cfg, "auto");
    let key = port.to_string();
    // Round robin: two connections reach a and b (the plain one is refused
    // and fails over).
    let mut conns = Vec::new();
    for _ in 0..4 {
        let mut c = connect(port);
        let l = read_line(&mut c);
        conns.push((c, l));
    }
    assert!(wait_until(Duration::from_secs(5), || pids(&pa).len() == 1
        && pids(&pb).len() == 1));
    let (pid_a, pid_b) = (pids(&pa)[0], pids(&pb)[0]);
    drop(conns);

    let (s, v) = api_call(api, &format!("/api/processes/{key}/a/kill"));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["killed"][0]["pid"], pid_a);
    assert!(wait_until(Duration::from_secs(10), || !alive(pid_a)));
    let st = wait_state(api, &key, "a", "stopped");
    assert_eq!(st["process"]["last_exit"], "signal 15 (SIGTERM)", "{st}");
    assert!(alive(pid_b), "b was not asked to stop");

    for (path, want) in [
        (format!("/api/processes/{key}/nope/kill"), 404),
        (format!("/api/processes/{key}/plain/kill"), 404),
        ("/api/processes/none/kill".to_string(), 404),
        (format!("/api/processes/{key}/a"), 404),
    ] {
        let (s, v) = api_call(api, &path);
        assert_eq!(s, want, "{path}: {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    let (s, _) = support::procs::api(api, "GET", &format!("/api/processes/{key}/kill"));
    assert_eq!(s, 405);

    // The CLI: unknown backend -> 1; the whole route -> 0 and b stops.
    let cfgpath = rm.config.display().to_string();
    let (code, _, err) = ringmesh_cli(&["kill", &key, "nope", "--config", &cfgpath]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no backend \"nope\""), "{err}");
    let (code, out, err) = ringmesh_cli(&["kill", "t", "--config", &cfgpath]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("t/b: stopping pid {pid_b}")), "{out}");
    assert!(out.contains("t/a: not running"), "{out}");
    assert!(wait_until(Duration::from_secs(10), || !alive(pid_b)));
    wait_state(api, &key, "b", "stopped");
    let (code, _, err) = ringmesh_cli(&[
        "kill",
        "t",
        "--api",
        &format!("http://127.0.0.1:{}", free_port()),
    ]);
    assert_eq!(code, 2, "{err}");

    // The next connection starts a killed backend again.
    let mut c = connect(port);
    assert!(read_line(&mut c).starts_with("pid "));
    assert!(wait_until(Duration::from_secs(10), || pids(&pa).len()
        + pids(&pb).len()
        == 3));
}

#[test]
fn no_orphan_after_sigkill_of_ringmesh() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let (port, bport, api) = (free_port(), free_port(), free_port());
    let b = proc_backend("py", bport, &pidfile, &["--mode", "tcp"]);
    let cfg = config(api, &[route(port, "t", "tcp", "", &[b])]);
    let mut rm = start(&cfg, "auto");
    let mut c = connect(port);
    let line = read_line(&mut c);
    let pid = pids(&pidfile)[0];
    assert_eq!(line, format!("pid {pid}"));
    assert!(alive(pid));
    rm.signal(libc::SIGKILL);
    assert!(rm.wait_exit(Duration::from_secs(5)).is_some());
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)),
        "backend {pid} outlived ringmesh"
    );
}

/// `ringmesh run` on an AMD CPU executes itself again, once, with glibc's
/// `rep movsb` threshold raised (src/tune.rs): the process the test started
/// is the one serving, its start-up environment carries the tunable, and
/// the backend it starts gets the environment the operator gave ringmesh
/// (here: no `GLIBC_TUNABLES`, no marker).
#[test]
fn copy_tuning_stays_inside_ringmesh() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let (port, bport, api) = (free_port(), free_port(), free_port());
    let b = proc_backend("py", bport, &pidfile, &["--mode", "tcp"]);
    let cfg = config(api, &[route(port, "t", "tcp", "", &[b])]);
    let rm = start(&cfg, "auto");
    let environ = |pid: u32| std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let has = |env: &[u8], var: &str| {
        env.split(|&b| b == 0)
            .any(|kv| kv.starts_with(var.as_bytes()))
    };
    let amd = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("vendor_id") && l.contains("AuthenticAMD"));
    let own = environ(rm.pid());
    assert_eq!(
        has(&own, "GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold="),
        amd && cfg!(target_arch = "x86_64"),
        "ringmesh's start-up environment (AMD CPU: {amd})"
    );
    let mut c = connect(port);
    let line = read_line(&mut c);
    let child = pids(&pidfile)[0];
    assert_eq!(line, format!("pid {child}"));
    let env = environ(child);
    assert!(
        !has(&env, "GLIBC_TUNABLES="),
        "the backend inherited the tunable"
    );
    assert!(
        !has(&env, "RINGMESH_GLIBC_TUNABLES_WAS="),
        "the backend inherited the marker"
    );
    assert!(
        has(&env, "PATH="),
        "the backend lost the operator's environment"
    );
}

#[test]
fn shutdown_stops_backend_processes() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let (port, bport, api) = (free_port(), free_port(), free_port());
    let b = proc_backend("py", bport, &pidfile, &["--mode", "tcp"]);
    let cfg = config(api, &[route(port, "t", "tcp", "", &[b])]);
    let mut rm = start(&cfg, "auto");
    let mut c = connect(port);
    let _ = read_line(&mut c);
    drop(c);
    let pid = pids(&pidfile)[0];
    rm.signal(libc::SIGTERM);
    let st = rm
        .wait_exit(Duration::from_secs(15))
        .expect("ringmesh exits");
    assert!(st.success(), "{st:?}\n{}", rm.logs());
    assert!(!alive(pid), "backend {pid} still runs after shutdown");
    assert!(
        rm.logs().contains("backend process stopped"),
        "{}",
        rm.logs()
    );
}

#[test]
fn a_command_that_cannot_start_fails_fast() {
    let (port, api) = (free_port(), free_port());
    let b = format!(
        r#"{{"name": "bad", "cmd": "/nonexistent/backend", "internal_port": {}}}"#,
        free_port()
    );
    let cfg = config(api, &[route(port, "web", "http", "", &[b])]);
    let _rm = start(&cfg, "auto");
    let t0 = Instant::now();
    let (s, body) = get(port, "/");
    assert_eq!(s, 502, "{body}");
    assert!(body.contains("failed to start"), "{body}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let st = backend_status(api, &port.to_string(), "bad");
    assert!(
        st["process"]["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot start \"/nonexistent/backend\""),
        "{st}"
    );
}

#[test]
fn a_process_that_never_listens_hits_its_ready_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let (port, bport, api) = (free_port(), free_port(), free_port());
    // Sleeps 30 s before listening; the route allows 500 ms.
    let b = proc_backend("slow", bport, &pidfile, &["--delay", "30"]);
    let cfg = config(
        api,
        &[route(
            port,
            "web",
            "http",
            r#", "ready_timeout": "500ms""#,
            &[b],
        )],
    );
    let _rm = start(&cfg, "auto");
    let t0 = Instant::now();
    let (s, body) = get(port, "/");
    assert_eq!(s, 502, "{body}");
    // The waiting connection's own deadline, or the supervisor giving up
    // first on a loaded machine.
    assert!(
        body.contains("not ready within 500ms") || body.contains("failed to start"),
        "{body}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let st = wait_state(api, &port.to_string(), "slow", "crashed");
    assert!(
        st["process"]["last_error"]
            .as_str()
            .unwrap()
            .contains("did not accept within 500ms"),
        "{st}"
    );
    let pid = pids(&pidfile)[0];
    assert!(
        wait_until(Duration::from_secs(10), || !alive(pid)),
        "the process that missed its deadline was not stopped"
    );
}
