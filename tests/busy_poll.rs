//! `"busy_poll": true` (HAProxy's `busy-polling`): on either driver the
//! worker never sleeps while it waits (it takes its CPU even when idle),
//! still serves, still fires its timers (a keep-alive connection closes at
//! its timeout) and stops spinning when a reload turns the setting off.

mod support;

use std::time::{Duration, Instant};

use support::http::*;
use support::*;

both_drivers!(busy_poll_spins_serves_keeps_timers_and_reloads_off);

fn config(port: u16, backend: u16, busy: bool) -> String {
    format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1, "busy_poll": {busy},
  "routes": {{"{port}": {{"name": "web", "timeouts": {{"keepalive": "2s"}},
  "backends": [{{"name": "b0", "internal_port": {backend}}}]}}}}}}"#
    )
}

/// CPU time (ms) of the process's worker threads (`ringmesh-w*`) so far.
fn worker_cpu_ms(pid: u32) -> u64 {
    // SAFETY: sysconf reads a constant of the system; no pointers involved.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let tick = 1000 / hz;
    let mut ms = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with("ringmesh-w") {
            continue;
        }
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        let (u, s): (u64, u64) = (f[11].parse().unwrap(), f[12].parse().unwrap());
        ms += (u + s) * tick;
    }
    ms
}

/// Worker CPU (ms) over `window` of no traffic.
fn idle_cpu_ms(pid: u32, window: Duration) -> u64 {
    let c0 = worker_cpu_ms(pid);
    std::thread::sleep(window);
    worker_cpu_ms(pid) - c0
}

fn busy_poll_spins_serves_keeps_timers_and_reloads_off(io: &str) {
    let backend = http_backend(|req, p| {
        p.respond("200 OK", "", req.second.as_bytes());
        true
    });
    let port = free_port();
    let rm = Ringmesh::start(&config(port, backend.port, true), io, &[port]);
    let mut c = Client::connect(port);
    let r = c.get("/busy", "a", "");
    assert_eq!((r.status(), r.body_str().as_str()), (200, "/busy"));

    // The keep-alive timeout still fires: timers run while the worker spins.
    let t0 = Instant::now();
    assert!(
        c.closed_within(Duration::from_secs(15)),
        "a keep-alive connection outlived its 2 s timeout by 15 s; log:\n{}",
        rm.logs()
    );
    assert!(t0.elapsed() >= Duration::from_millis(1800));

    // A spinning worker takes its CPU with no traffic at all (a lenient
    // bound: the suite's other tests share the two CPUs).
    let spent = idle_cpu_ms(rm.pid(), Duration::from_secs(1));
    assert!(
        spent >= 250,
        "busy_poll ({io}): the idle worker used only {spent} ms of CPU in 1 s; log:\n{}",
        rm.logs()
    );
    assert!(rm.logs().contains("busy polling on"), "{}", rm.logs());

    // A reload turns it off: the worker sleeps again, and still serves.
    std::fs::write(&rm.config, config(port, backend.port, false)).unwrap();
    rm.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || idle_cpu_ms(
            rm.pid(),
            Duration::from_millis(500)
        ) <= 75),
        "the worker kept spinning after a reload turned busy_poll off; log:\n{}",
        rm.logs()
    );
    assert!(rm.logs().contains("busy polling off"), "{}", rm.logs());
    let mut c = Client::connect(port);
    assert_eq!(c.get("/after", "a", "").body_str(), "/after");
}
