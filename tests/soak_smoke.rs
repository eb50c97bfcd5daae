//! The soak script in its quickest form (`bench/soak.sh --smoke`: a few seconds of the mixed
//! load against the debug binary), so the script cannot rot. Needs nginx, wrk and python3:
//! `scripts/test.sh` installs them. Ports: a free block of three in 18100-18199 (bench/run.sh
//! keeps to 18000-18094 and 15200-15205).

use std::net::TcpListener;
use std::process::Command;

/// The first P in 18100..18197 with P, P+1 and P+2 free on 127.0.0.1.
fn free_port_base() -> u16 {
    (18100..18197)
        .step_by(3)
        .find(|&p| (p..p + 3).all(|q| TcpListener::bind(("127.0.0.1", q)).is_ok()))
        .expect("no three free ports in 18100-18199")
}

#[test]
fn soak_script_smoke() {
    let out = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let res = Command::new("bash")
        .arg(format!("{root}/bench/soak.sh"))
        .args(["--smoke", "--no-build", "--no-plot", "--port-base"])
        .arg(free_port_base().to_string())
        .arg("--ringmesh-bin")
        .arg(env!("CARGO_BIN_EXE_ringmesh"))
        .arg("--out-dir")
        .arg(out.path())
        .output()
        .expect("run bench/soak.sh");
    let stdout = String::from_utf8_lossy(&res.stdout);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        res.status.success(),
        "bench/soak.sh --smoke failed ({:?}); run scripts/test.sh to install nginx and wrk\n\
         stdout:\n{stdout}\nstderr:\n{stderr}",
        res.status
    );
    let file = |ext: &str| {
        std::fs::read_dir(out.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == ext))
            .unwrap_or_else(|| panic!("no .{ext} written: {stderr}"))
    };
    let csv = std::fs::read_to_string(file("csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("t_s,phase,rss_kib,fds,sockets,pipes,other_fds,threads,cpu_s")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    for phase in ["baseline", "load", "settle"] {
        assert!(
            rows.iter().any(|r| r[1] == phase),
            "no {phase} sample:\n{csv}"
        );
    }
    assert!(
        rows.iter()
            .all(|r| r[2].parse::<u64>().is_ok_and(|rss| rss > 0)),
        "{csv}"
    );
    let md = std::fs::read_to_string(file("md")).unwrap();
    assert!(md.contains("## Verdict: PASS"), "{md}");
    // Each load really ran through ringmesh.
    for load in ["wrk-keepalive", "wrk-newconn", "wrk-upload", "wrk-4m-down"] {
        let row = md
            .lines()
            .find(|l| l.starts_with(&format!("| {load} |")))
            .unwrap_or_else(|| panic!("no {load} row:\n{md}"));
        let requests: u64 = row
            .split('|')
            .nth(2)
            .unwrap()
            .trim()
            .replace(',', "")
            .parse()
            .unwrap();
        assert!(requests > 0, "{load} made no request:\n{md}");
    }
    assert!(md.contains("websocket-style echo"), "{md}");
}
