//! The benchmark harness in its tiniest form (`bench/run.sh --smoke`), against
//! the debug binary, so the harness cannot rot. Needs nginx, haproxy, wrk,
//! iperf3 and python3: `scripts/test.sh` installs them.

use std::process::Command;

#[test]
fn bench_harness_smoke() {
    let out = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let res = Command::new("bash")
        .arg(format!("{root}/bench/run.sh"))
        .args([
            "--smoke",
            "--no-build",
            "--no-install",
            "--no-plot",
            "--ringmesh-bin",
        ])
        .arg(env!("CARGO_BIN_EXE_ringmesh"))
        .arg("--out-dir")
        .arg(out.path())
        .output()
        .expect("run bench/run.sh");
    let stdout = String::from_utf8_lossy(&res.stdout);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        res.status.success(),
        "bench/run.sh --smoke failed ({:?}); run scripts/test.sh to install nginx, haproxy, wrk, iperf3\nstdout:\n{stdout}\nstderr:\n{stderr}",
        res.status
    );
    let md: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "md"))
        .collect();
    assert_eq!(md.len(), 1, "one Markdown table written: {stdout}");
    let table = std::fs::read_to_string(md[0].path()).unwrap();
    assert!(
        table.contains("| ringmesh |") || table.contains("| ringmesh"),
        "{table}"
    );
    assert!(table.contains("direct"), "{table}");
}
