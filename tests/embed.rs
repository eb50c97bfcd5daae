//! The embedding API: `examples/embed_filter.rs` registers a filter of its
//! own code, a route's `middleware` list refers to it by name, and it runs
//! in the request, response and logging phases of real requests; a config
//! naming an unregistered filter is refused with the entry's JSON path.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::http::*;
use support::*;

/// The example binary: `cargo test` builds examples next to the test
/// binaries; `cargo test --test embed` does not, so then it is built here.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("examples").join(name);
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "--example", name, "--manifest-path"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .status()
            .unwrap();
        assert!(st.success(), "cargo build --example {name}");
    }
    bin
}

#[test]
fn example_embeds_a_custom_filter() {
    let b = http_backend(|_, p| {
        p.respond("200 OK", "", b"from backend");
        true
    });
    let port = free_port();
    let bin = example("embed_filter");
    assert!(bin.exists(), "{} not built", bin.display());
    let child = Command::new(&bin)
        .arg(port.to_string())
        .arg(b.port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(child);
    let mut line = String::new();
    BufReader::new(guard.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    let mut c = Client::connect(port);
    let m = c.get("/hello", "a", "");
    assert_eq!(m.status(), 200);
    assert_eq!(m.body_str(), "from backend");
    assert_eq!(m.header("x-tag"), Some("embedded"));
    let m = c.get("/forbidden/x", "a", "");
    assert_eq!(m.status(), 403);
    assert_eq!(m.header("x-tag"), Some("embedded"));
    assert_eq!(b.accepted(), 1, "the 403 never reached the backend");
    // Closing stdin shuts it down cleanly.
    drop(guard.0.stdin.take());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = guard.0.try_wait().unwrap() {
            break st;
        }
        assert!(std::time::Instant::now() < deadline, "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
}

#[test]
fn unregistered_filter_is_a_config_error() {
    let err = ringmesh::config::parse(
        r#"{"routes": {"8080": {"middleware": [{"type": "tag"}],
            "backends": [{"name": "b", "internal_port": 9}]}}}"#,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("routes.\"8080\".middleware[0].type"),
        "{err}"
    );
}
