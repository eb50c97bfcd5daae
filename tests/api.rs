//! The API's guards and the CLI clients on a real process: a mutating call
//! from an untrusted Origin is refused (403) while the API's own origin and
//! `trusted_origins` pass; the bearer token (config or RINGMESH_API_TOKEN)
//! guards everything but /healthz (401 + WWW-Authenticate); body limits;
//! `ringmesh status` and `ringmesh reload` with their exit codes.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

fn config(api: u16, port: u16, backend: u16, extra_top: &str) -> String {
    format!(
        r#"{{"dashboard_port": "{api}", "listen_host": "127.0.0.1", "workers": 2 {extra_top},
  "trusted_origins": ["https://ops.example.com"],
  "routes": {{"{port}": {{"name": "echo-route", "protocol": "tcp",
    "backends": [{{"name": "echo", "internal_host": "127.0.0.1", "internal_port": "{backend}"}}]}}}}}}"#
    )
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("RINGMESH_API_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn untrusted_origin_cannot_mutate() {
    let echo = Backend::echo();
    let (api, port) = (free_port(), free_port());
    let cfg = config(api, port, echo.port, "");
    let rm = Ringmesh::start(&cfg, "auto", &[api, port]);
    let body = cfg.replace("echo-route", "renamed");
    for origin in [
        "http://evil.example",
        "null",
        "https://ops.example.com.evil.example",
    ] {
        let r = api::call(
            api,
            "PUT",
            "/api/config",
            &format!("Origin: {origin}\r\n"),
            body.as_bytes(),
        );
        assert_eq!(r.status, 403, "{origin}: {}", r.body);
        let r = api::call(
            api,
            "POST",
            "/api/reload",
            &format!("Origin: {origin}\r\n"),
            b"",
        );
        assert_eq!(r.status, 403, "{origin}: {}", r.body);
    }
    assert_eq!(
        std::fs::read_to_string(&rm.config).unwrap(),
        cfg,
        "a refused PUT wrote the file"
    );
    // Reads are not mutating: an Origin does not matter.
    let r = api::call(
        api,
        "GET",
        "/api/status",
        "Origin: http://evil.example\r\n",
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["routes"][0]["name"], "echo-route");
    // A trusted origin (case and trailing slash do not matter), and the API's own origin.
    let r = api::call(
        api,
        "PUT",
        "/api/config",
        "Origin: HTTPS://ops.example.com/\r\n",
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api::call(
        api,
        "PUT",
        "/api/config",
        &format!("Origin: http://127.0.0.1:{api}\r\n"),
        cfg.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // No Origin at all (curl, the CLI): allowed.
    assert_eq!(api::put_config(api, &cfg).status, 200);
    drop(rm);
}

#[test]
fn bearer_token_guards_all_but_healthz() {
    let echo = Backend::echo();
    let (api, port) = (free_port(), free_port());
    let cfg = config(api, port, echo.port, r#", "api_token": "s3cret""#);
    let rm = Ringmesh::start(&cfg, "auto", &[api, port]);
    let r = api::get(api, "/api/status");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"ringmesh\"")
    );
    for auth in [
        "Bearer wrong",
        "Bearer s3cre",
        "Basic s3cret",
        "Bearer s3cret2",
    ] {
        let r = api::call(
            api,
            "GET",
            "/api/config",
            &format!("Authorization: {auth}\r\n"),
            b"",
        );
        assert_eq!(r.status, 401, "{auth}");
    }
    let r = api::call(api, "PUT", "/api/config", "", cfg.as_bytes());
    assert_eq!(r.status, 401, "PUT without a token");
    assert_eq!(api::get(api, "/healthz").status, 200);
    let r = api::call(
        api,
        "GET",
        "/api/status",
        "Authorization: Bearer s3cret\r\n",
        b"",
    );
    assert_eq!(r.status, 200);
    // The CLI: the token from the config file, from --token, or missing.
    let c = rm.config.to_str().unwrap();
    let (code, out, err) = cli(&["status", "--config", c]);
    assert_eq!(code, 0, "{out}{err}");
    let apiurl = format!("http://127.0.0.1:{api}");
    let (code, _, err) = cli(&["status", "--api", &apiurl]);
    assert_eq!(code, 1, "no token: refused; {err}");
    assert!(err.contains("401"), "{err}");
    let (code, out, _) = cli(&["status", "--api", &apiurl, "--token", "s3cret", "--json"]);
    assert_eq!(code, 0);
    serde_json::from_str::<serde_json::Value>(&out).unwrap();
    // logs and kill go through the same client: the token reaches the API.
    let (code, _, err) = cli(&["logs", "echo-route", "--api", &apiurl]);
    assert_eq!(code, 1, "logs without a token: refused; {err}");
    assert!(err.contains("401"), "{err}");
    let (code, _, err) = cli(&["logs", "echo-route", "--config", c]);
    assert_eq!(code, 0, "logs with the config's token; {err}");
    let (code, out, err) = cli(&["kill", "echo-route", "--api", &apiurl, "--token", "s3cret"]);
    assert_eq!(code, 0, "kill with --token; {err}");
    assert!(out.contains("nothing to stop"), "{out}");
    drop(rm);

    // RINGMESH_API_TOKEN guards a config without a token, and wins over one.
    let (api, port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.json");
    std::fs::write(
        &p,
        config(api, port, echo.port, r#", "api_token": "from-config""#),
    )
    .unwrap();
    let _child = ChildGuard(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&p)
            .env("RINGMESH_API_TOKEN", "from-env")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", api)).is_ok()
    }));
    let with = |t: &str| {
        api::call(
            api,
            "GET",
            "/api/status",
            &format!("Authorization: Bearer {t}\r\n"),
            b"",
        )
        .status
    };
    assert_eq!(with("from-env"), 200);
    assert_eq!(with("from-config"), 401);
}

#[test]
fn request_limits_and_methods() {
    let echo = Backend::echo();
    let (api, port) = (free_port(), free_port());
    let cfg = config(api, port, echo.port, "");
    let rm = Ringmesh::start(&cfg, "auto", &[api, port]);
    // Too large: refused before reading the body.
    let mut c = connect(api);
    use std::io::{Read, Write};
    c.write_all(b"PUT /api/config HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2000000\r\n\r\n{")
        .unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    assert!(s.starts_with("HTTP/1.1 413"), "{s}");
    let r = api::call(
        api,
        "PUT",
        "/api/config",
        "Transfer-Encoding: chunked\r\n",
        b"",
    );
    assert_eq!(r.status, 411);
    let r = api::call(api, "DELETE", "/api/config", "", b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, PUT"));
    assert_eq!(api::get(api, "/nope").status, 404);
    // Expect: 100-continue gets its interim answer, then the real one.
    let mut c = connect(api);
    c.write_all(
        format!(
            "PUT /api/config HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            cfg.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let mut interim = [0u8; 25];
    c.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.write_all(cfg.as_bytes()).unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    assert!(s.starts_with("HTTP/1.1 200"), "{s}");
    assert_eq!(api::get(api, "/healthz").status, 200);
    drop(rm);
}

#[test]
fn cli_status_and_reload() {
    let echo = Backend::echo();
    let (api, port) = (free_port(), free_port());
    let cfg = config(api, port, echo.port, "");
    let rm = Ringmesh::start(&cfg, "auto", &[api, port]);
    let c = rm.config.to_str().unwrap().to_string();
    let (code, out, err) = cli(&["status", "--config", &c]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("echo-route") && out.contains(&format!("127.0.0.1:{port}")),
        "{out}"
    );
    assert!(out.contains(&format!("127.0.0.1:{}", echo.port)), "{out}");

    // A bad file: exit 1, every error with its path, the old config stays.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"routes": {"1": {"protocol": "udp", "backends": [{"internal_port": "x"}]}}}"#,
    )
    .unwrap();
    let (code, _, err) = cli(&["reload", "--config", &c, "--file", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(r#"routes."1".protocol: "udp" is not a protocol"#),
        "{err}"
    );
    assert!(
        err.contains(r#"routes."1".backends[0].internal_port"#),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&rm.config).unwrap(), cfg);

    // Re-read the file: a new port.
    let add = free_port();
    let new_cfg = cfg.replace(
        r#""routes": {"#,
        &format!(
            r#""routes": {{"{add}": {{"protocol": "tcp", "backends": [{{"internal_port": "{}"}}]}},"#,
            echo.port
        ),
    );
    std::fs::write(&rm.config, &new_cfg).unwrap();
    let (code, out, err) = cli(&["reload", "--config", &c]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("added: 127.0.0.1:{add}")), "{out}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", add)).is_ok());
    // A broken file on disk: the CLI still finds the API? No: it reads the
    // address from that file. --api works regardless.
    std::fs::write(&rm.config, "{ broken").unwrap();
    let (code, _, err) = cli(&["reload", "--api", &format!("http://127.0.0.1:{api}")]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid JSON at line 1"), "{err}");
    drop(rm);

    // Nothing listening: exit 2.
    let (code, _, err) = cli(&["status", "--api", &format!("http://127.0.0.1:{api}")]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = cli(&["reload", "--api", &format!("http://127.0.0.1:{api}")]);
    assert_eq!(code, 2);
    // A headless config: exit 2 with a reason.
    let h = dir.path().join("headless.json");
    std::fs::write(&h, tcp_config(port, &[1], "round_robin", "")).unwrap();
    let (code, _, err) = cli(&["status", "--config", h.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("headless"), "{err}");
}

/// DNS-rebinding guard: a request whose Host is not an IP address,
/// `localhost`, `dashboard_host` or a trusted origin's host is refused (403),
/// reads included; /healthz answers whatever the Host.
#[test]
fn unknown_host_is_refused() {
    use std::io::{Read, Write};
    let echo = Backend::echo();
    let (api, port) = (free_port(), free_port());
    let _rm = Ringmesh::start(&config(api, port, echo.port, ""), "auto", &[api, port]);
    let status_with_host = |path: &str, host: &str| -> u16 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", api)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    };
    for host in [format!("evil.example:{api}"), "rebind.test".to_string()] {
        assert_eq!(status_with_host("/api/status", &host), 403, "{host}");
        assert_eq!(status_with_host("/api/config", &host), 403, "{host}");
        assert_eq!(status_with_host("/", &host), 403, "{host}");
        assert_eq!(status_with_host("/healthz", &host), 200, "{host}");
    }
    for host in [
        format!("127.0.0.1:{api}"),
        format!("localhost:{api}"),
        format!("[::1]:{api}"),
        "ops.example.com".to_string(),
    ] {
        assert_eq!(status_with_host("/api/status", &host), 200, "{host}");
    }
}
