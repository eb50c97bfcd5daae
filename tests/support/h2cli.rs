//! Clients and helpers shared by the HTTP/2 parity tests (h2_parity.rs,
//! h2_middleware.rs): curl and nghttp runs, a mirroring backend, access
//! log reading with bounded waits.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::support::http::*;
use crate::support::*;

/// What curl saw: final status, every header block (1xx ones too), body.
pub struct Resp {
    pub status: u16,
    /// Lowercase `name: value` lines of every header block, in order.
    pub heads: String,
    pub body: String,
}

impl Resp {
    /// The value of `name` in the final header block.
    pub fn header(&self, name: &str) -> Option<String> {
        let last = self.heads.rsplit("\nhttp/").next().unwrap_or(&self.heads);
        last.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(|v| v.trim().to_string())
    }
}

/// Runs curl with `args` (an h2 mode among them), headers to a file.
pub fn curl(args: &[&str]) -> Resp {
    let dir = tempfile::tempdir().unwrap();
    let heads = dir.path().join("h");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D"])
        .arg(&heads)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Resp {
        status: code.trim().parse().unwrap_or(0),
        heads: std::fs::read_to_string(&heads)
            .unwrap_or_default()
            .to_ascii_lowercase()
            .replace('\r', "")
            + &String::from_utf8_lossy(&out.stderr),
        body: body.to_string(),
    }
}

pub fn h2c(url: &str, extra: &[&str]) -> Resp {
    let mut args = vec!["--http2-prior-knowledge"];
    args.extend_from_slice(extra);
    args.push(url);
    curl(&args)
}

/// A backend answering `200` with the request head and body it saw, and a
/// header to remove; `/slow` answers after a second.
pub fn mirror(count: Arc<AtomicUsize>) -> Backend {
    http_backend(move |req, p| {
        count.fetch_add(1, Ordering::SeqCst);
        if req.second.starts_with("/slow") {
            std::thread::sleep(Duration::from_secs(1));
        }
        let body = format!("{}{}", req.raw_head, req.body_str());
        p.respond(
            "200 OK",
            "X-Powered-By: php\r\nContent-Type: text/plain\r\n",
            body.as_bytes(),
        );
        true
    })
}

pub fn log_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits (bounded) for lines matching `f`; returns them once at least `n`.
pub fn wait_matching(path: &Path, n: usize, f: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut got = Vec::new();
    wait_until(Duration::from_secs(15), || {
        got = log_lines(path).into_iter().filter(|v| f(v)).collect();
        got.len() >= n
    });
    got
}

pub fn h2load(args: &[&str]) -> String {
    let out = Command::new("h2load")
        .args(args)
        .output()
        .expect("h2load (nghttp2-client)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The status of each stream when nghttp sends `urls` at once on one
/// connection (curl 7.88 fails to reuse a prior-knowledge connection).
pub fn nghttp_codes(urls: &[String]) -> Vec<u16> {
    let out = Command::new("nghttp")
        .args(["-n", "-s", "-t", "20"])
        .args(urls)
        .output()
        .expect("nghttp (nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    let codes: Vec<u16> = text
        .lines()
        .skip_while(|l| !l.contains("responseEnd"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(4)?.parse().ok())
        .collect();
    assert_eq!(codes.len(), urls.len(), "{text}");
    codes
}
