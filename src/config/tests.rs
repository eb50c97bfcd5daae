//! Config validation as tables: valid configs and their snapshots, invalid
//! configs and the exact error lines an operator sees.

use std::time::Duration;

use super::*;

fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn gophermesh_config_loads_unchanged() {
    let text = include_str!("../../tests/fixtures/gophermesh.json");
    let s = parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.routes.len(), 4);
    assert_eq!(s.dashboard.port, Some(19999));
    assert_eq!(s.trusted_origins, ["*"]);
    assert_eq!(s.internal_port, Some(19998));
    let tcp = s.routes.iter().find(|r| r.key == "17081").unwrap();
    assert_eq!(tcp.protocol, Protocol::Tcp);
    assert_eq!(tcp.balance, Balance::RoundRobin);
    assert_eq!(tcp.backends[1].cmd.as_deref(), Some("./bin/echo"));
    assert_eq!(tcp.backends[1].args, ["-port", "19092", "-name", "echo-b"]);
    assert_eq!(tcp.listen.to_string(), "0.0.0.0:17081");
    let internal = s.routes.iter().find(|r| r.key == "18000").unwrap();
    assert_eq!(
        internal.backends[0].cmd, None,
        "\"internal\" is not a command"
    );
    let hello = s.routes.iter().find(|r| r.key == "18081").unwrap();
    assert_eq!(hello.balance, Balance::LeastConn);
    assert_eq!(
        hello.backends[1].host, "127.0.0.1",
        "internal_host defaults to loopback"
    );
    let sum = s.routes.iter().find(|r| r.key == "18082").unwrap();
    assert_eq!(sum.protocol, Protocol::Http, "protocol defaults to http");
    assert_eq!(
        sum.backends[0].name, "127.0.0.1:19083",
        "unnamed backend is named by address"
    );
    assert_eq!(s.listeners.len(), 4);
}

#[test]
fn defaults_and_extensions() {
    let s = parse(
        r#"{"routes": {"9000": {"backends": [{"internal_port": 9001}]}},
            "workers": 3, "backlog": 128, "shutdown_grace": "1.5s", "pipe_size": 1048576,
            "listen_host": "127.0.0.1", "//": "a comment", "busy_poll": true,
            "upstream_keepalive": {"max_idle": 8, "idle_timeout": "5s"},
            "dashboard_port": 8999}"#,
    )
    .unwrap();
    assert_eq!(s.upstream_keepalive.max_idle, 8);
    assert_eq!(s.upstream_keepalive.idle_timeout, Duration::from_secs(5));
    assert_eq!(s.workers, 3);
    assert!(s.busy_poll);
    let d = parse(r#"{"routes": {"9000": {"backends": [{"internal_port": 9001}]}}}"#).unwrap();
    assert!(!d.busy_poll, "busy_poll is off unless asked for");
    assert_eq!(d.upstream_keepalive.max_idle, 64);
    assert_eq!(d.upstream_keepalive.idle_timeout, Duration::from_secs(30));
    assert_eq!(s.backlog, 128);
    assert_eq!(s.shutdown_grace, Duration::from_millis(1500));
    assert_eq!(s.pipe_size, 1 << 20);
    assert_eq!(s.dashboard.port, Some(8999));
    let r = &s.routes[0];
    assert_eq!(r.name, "9000");
    assert_eq!(r.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(r.timeouts, Timeouts::default());
    let s = parse(
        r#"{"routes": {"127.0.0.2:9000": {"protocol": "TCP", "load_balance": " IP_HASH ",
        "timeouts": {"connect": 2, "idle": "5m"}, "backends": [{"internal_port": "9001"}]}}}"#,
    )
    .unwrap();
    let r = &s.routes[0];
    assert_eq!(r.listen.to_string(), "127.0.0.2:9000");
    assert_eq!((r.protocol, r.balance), (Protocol::Tcp, Balance::IpHash));
    assert_eq!(r.timeouts.connect, Duration::from_secs(2));
    assert_eq!(r.timeouts.idle, Duration::from_secs(300));
    assert_eq!(r.timeouts.header, Duration::from_secs(10));
    assert_eq!(r.timeouts.keepalive, Duration::from_secs(60));
    assert_eq!(r.timeouts.response, Duration::from_secs(60));
    let s = parse(
        r#"{"routes": {"9000": {"timeouts": {"header": "2s", "keepalive": "90s", "response": "250ms"},
        "backends": [{"internal_port": 9001}]}}}"#,
    )
    .unwrap();
    let t = s.routes[0].timeouts;
    assert_eq!(
        (t.header, t.keepalive, t.response),
        (
            Duration::from_secs(2),
            Duration::from_secs(90),
            Duration::from_millis(250)
        )
    );
    assert_eq!(s.listeners[0].header_timeout, Duration::from_secs(2));
}

#[test]
fn http_routes_share_a_port_by_host() {
    let s = parse(
        r#"{"routes": {
            "8080": {"backends": [{"internal_port": 1}]},
            "api": {"listen": "8080", "hosts": ["API.example.com", "*.api.example.com"], "backends": [{"internal_port": 2}]},
            "web": {"listen": 8080, "hosts": ["www.example.com"], "backends": [{"internal_port": 3}]}}}"#,
    )
    .unwrap();
    assert_eq!(s.listeners.len(), 1);
    assert_eq!(s.listeners[0].routes, [0, 1, 2]);
    assert_eq!(s.routes[1].hosts, ["api.example.com", "*.api.example.com"]);
    let t = &s.listeners[0].hosts;
    assert_eq!(t.lookup(Some(b"Api.Example.com:8080")), Some(1));
    assert_eq!(t.lookup(Some(b"v2.api.example.com")), Some(1));
    assert_eq!(t.lookup(Some(b"www.example.com")), Some(2));
    assert_eq!(t.lookup(Some(b"example.com")), Some(0));
}

#[test]
fn header_timeout_is_the_strictest_of_a_port() {
    let s = parse(
        r#"{"routes": {
            "8080": {"timeouts": {"header": "7s"}, "backends": [{"internal_port": 1}]},
            "api": {"listen": "8080", "hosts": ["a.com"], "timeouts": {"header": "3s"}, "backends": [{"internal_port": 2}]}}}"#,
    )
    .unwrap();
    assert_eq!(s.listeners[0].header_timeout, Duration::from_secs(3));
}

#[test]
fn bad_configs_report_every_error_with_its_path() {
    let table: &[(&str, &[&str])] = &[
        (
            r#"{"routes": {"8080": {"backends": [{"internal_port": "9000"}, {"internal_port": "abc"}]}}}"#,
            &[r#"routes."8080".backends[1].internal_port: "abc" is not a port number"#],
        ),
        (
            r#"{"routes": {"8080": {"protocol": "udp", "load_balance": "random", "backends": []}}}"#,
            &[
                r#"routes."8080".protocol: "udp" is not a protocol; expected "http" or "tcp""#,
                r#"routes."8080".load_balance: "random" is not a load balancer; expected "round_robin", "least_conn" or "ip_hash""#,
                r#"routes."8080".backends: a route needs at least one backend"#,
            ],
        ),
        (
            r#"{"upstream_keepalive": {"max_idle": -1, "idle_timeout": "later", "max": 1}, "routes": {"8080": {"backends": [{"internal_port": 1}]}}}"#,
            &[
                "upstream_keepalive.max: unknown field; expected one of: max_idle, idle_timeout",
                "upstream_keepalive.max_idle: -1 is not a non-negative integer",
                r#"upstream_keepalive.idle_timeout: "later" is not a duration; write e.g. "500ms", "30s", "5m" or a number of seconds"#,
            ],
        ),
        (
            r#"{"routes": {"8080": {"name": "x"}}}"#,
            &[r#"routes."8080".backends: a route needs at least one backend"#],
        ),
        (
            r#"{"dashbord_port": "1", "routes": {"8080": {"backend": [], "backends": [{"internal_port": 1, "port": 2}]}}}"#,
            &[
                "dashbord_port: unknown field; expected one of: dashboard_host, dashboard_port, trusted_origins, service_name, internal_port, routes, workers, listen_host, backlog, shutdown_grace, shutdown_delay, pipe_size, api_token, max_connections, max_connections_per_ip, upstream_keepalive, access_log, config_source, busy_poll",
                r#"routes."8080".backend: unknown field; expected one of: name, protocol, load_balance, backends, listen, hosts, proxy_protocol, sni, timeouts, max_connections, ready_timeout, idle_timeout, health, tls, redirect_https, hsts, access_log, middleware, http2, gateway"#,
                r#"routes."8080".backends[0].port: unknown field; expected one of: name, cmd, args, internal_host, internal_port, ready_timeout, send_proxy, tls, weight, discover, protocol"#,
            ],
        ),
        (
            r#"{"routes": {"8080": {"protocol": "tcp", "backends": [{"internal_port": 1}]},
                           "08080": {"protocol": "tcp", "backends": [{"internal_port": 2}]}}}"#,
            &[r#"routes."08080": duplicate listen address 0.0.0.0:8080: routes."8080" is already the default route there; give one of them "sni""#],
        ),
        (
            r#"{"routes": {"8080": {"backends": [{"internal_port": 1}]},
                           "web": {"listen": "8080", "backends": [{"internal_port": 2}]}}}"#,
            &[r#"routes."web": duplicate listen address 0.0.0.0:8080: routes."8080" is already the default route there; give one of them "hosts""#],
        ),
        (
            r#"{"routes": {"a": {"listen": "8080", "hosts": ["x.com"], "backends": [{"internal_port": 1}]},
                           "b": {"listen": "8080", "hosts": ["X.com"], "backends": [{"internal_port": 2}]}}}"#,
            &[r#"routes."b": host "x.com" on 0.0.0.0:8080 is already served by routes."a""#],
        ),
        (
            r#"{"routes": {"0.0.0.0:8080": {"backends": [{"internal_port": 1}]},
                           "127.0.0.1:8080": {"backends": [{"internal_port": 2}]}}}"#,
            &[r#"routes."127.0.0.1:8080": listen address 127.0.0.1:8080 overlaps 0.0.0.0:8080 of routes."0.0.0.0:8080""#],
        ),
        (
            r#"{"routes": {"web": {"backends": [{"internal_port": 1}]}}}"#,
            &[r#"routes."web": route key is not a port or host:port; an alias route needs a "listen" field"#],
        ),
        (
            r#"{"routes": {"70000": {"backends": [{"internal_port": 0}]}}}"#,
            &[
                r#"routes."70000": route key is not a port or host:port; an alias route needs a "listen" field"#,
                r#"routes."70000".backends[0].internal_port: 0 is out of range (1-65535)"#,
            ],
        ),
        (
            r#"{"workers": -1, "backlog": "many", "shutdown_grace": "soon", "pipe_size": 10, "listen_host": "localhost", "busy_poll": "yes",
                "routes": {"8080": {"timeouts": {"connect": 0, "read": "1s"}, "backends": [{"cmd": "x"}]}}}"#,
            &[
                "workers: -1 is not a non-negative integer",
                r#"backlog: "many" is not a non-negative integer"#,
                r#"shutdown_grace: "soon" is not a duration; write e.g. "500ms", "30s", "5m" or a number of seconds"#,
                "pipe_size: 10 is too small (at least 4096 bytes)",
                r#"busy_poll: expected true or false, found "yes""#,
                r#"listen_host: "localhost" is not an IP address"#,
                r#"routes."8080".timeouts.read: unknown field; expected one of: connect, idle, header, keepalive, response"#,
                "routes.\"8080\".timeouts.connect: 0 must be greater than zero",
                r#"routes."8080".backends[0].internal_port: missing; the backend's port is required"#,
            ],
        ),
        (
            r#"{"routes": {"8080": {"protocol": "tcp", "hosts": ["a.com"], "backends": [{"name": "a", "internal_port": 1}, {"name": "a", "internal_port": 2}]}}}"#,
            &[
                r#"routes."8080".hosts: host names need protocol "http"; a tcp route owns its whole port"#,
                r#"routes."8080".backends[1].name: "a" is used by another backend of this route"#,
            ],
        ),
        (
            r#"{"routes": {"8080": {"hosts": ["bad host", "*."], "backends": [{"internal_port": 1, "args": ["-x"]}]}}}"#,
            &[
                r#"routes."8080".hosts[0]: "bad host" is not a host name (letters, digits, '-', '.', optionally starting with "*.")"#,
                r#"routes."8080".hosts[1]: "*." is not a host name (letters, digits, '-', '.', optionally starting with "*.")"#,
                r#"routes."8080".backends[0].args: args given without a cmd to run"#,
            ],
        ),
        (
            r#"{"dashboard_port": "9000", "routes": {"9000": {"backends": [{"internal_port": 1}]}}}"#,
            &[r#"dashboard_port: 9000 is also the listen port of routes."9000""#],
        ),
        (
            r#"{"routes": {"8080": {"timeouts": {"header": "soon", "keepalive": 0, "response": "-1s"}, "backends": [{"internal_port": 1}]}}}"#,
            &[
                r#"routes."8080".timeouts.header: "soon" is not a duration; write e.g. "500ms", "30s", "5m" or a number of seconds"#,
                "routes.\"8080\".timeouts.keepalive: 0 must be greater than zero",
                r#"routes."8080".timeouts.response: "-1s" is not a duration; write e.g. "500ms", "30s", "5m" or a number of seconds"#,
            ],
        ),
        (r#"[1, 2]"#, &["expected an object, found [1,2]"]),
        (r#"{"routes": []}"#, &["routes: expected an object, found []"]),
        (
            r#"{"routes": {"8080": {"backends": [7]}}, "trusted_origins": "*"}"#,
            &[
                r#"trusted_origins: expected an array of strings, found "*""#,
                r#"routes."8080".backends[0]: expected an object, found 7"#,
            ],
        ),
        ("{\"routes\": {\n  \"8080\": }", &["invalid JSON at line 2 column 11: expected value"]),
    ];
    for (text, want) in table {
        let got = errors(text);
        assert_eq!(&got, want, "config: {text}");
    }
}

#[test]
fn process_and_health_fields() {
    let s = parse(r#"{"routes": {"9000": {"backends": [{"internal_port": 9001}]}}}"#).unwrap();
    let r = &s.routes[0];
    assert_eq!(r.idle_timeout, None);
    assert_eq!(r.health, None, "active checks are opt-in");
    assert_eq!(r.backends[0].ready_timeout, DEFAULT_READY_TIMEOUT);
    assert_eq!(r.backends[0].cmd, None);

    let s = parse(
        r#"{"routes": {"9000": {"ready_timeout": "2s", "idle_timeout": "90s",
            "health": {"path": "/healthz", "expect_status": 204, "interval": "250ms",
                       "timeout": 1, "rise": 1, "fall": 5},
            "backends": [{"name": "a", "cmd": "python3", "args": ["-u", "app.py"], "internal_port": 9001},
                         {"name": "b", "cmd": "./b", "ready_timeout": "500ms", "internal_port": 9002},
                         {"name": "c", "cmd": " Internal ", "internal_port": 9003}]}}}"#,
    )
    .unwrap();
    let r = &s.routes[0];
    assert_eq!(r.idle_timeout, Some(Duration::from_secs(90)));
    assert_eq!(
        r.health,
        Some(HealthCheck {
            path: Some("/healthz".into()),
            expect_status: 204,
            interval: Duration::from_millis(250),
            timeout: Duration::from_secs(1),
            rise: 1,
            fall: 5,
        })
    );
    let b = &r.backends;
    assert_eq!(b[0].cmd.as_deref(), Some("python3"));
    assert_eq!(b[0].args, ["-u", "app.py"]);
    assert_eq!(b[0].ready_timeout, Duration::from_secs(2), "the route's");
    assert_eq!(b[1].ready_timeout, Duration::from_millis(500), "its own");
    assert_eq!(
        b[2].cmd, None,
        "\"internal\" in any case is an address only"
    );

    for (health, want) in [
        ("false", None),
        ("null", None),
        ("true", Some(HealthCheck::default())),
        ("{}", Some(HealthCheck::default())),
    ] {
        let s = parse(&format!(
            r#"{{"routes": {{"9000": {{"protocol": "tcp", "health": {health}, "backends": [{{"internal_port": 1}}]}}}}}}"#
        ))
        .unwrap();
        assert_eq!(s.routes[0].health, want, "health: {health}");
    }
}

#[test]
fn bad_process_and_health_fields_report_their_paths() {
    let table: &[(&str, &[&str])] = &[
        (
            r#"{"routes": {"8080": {"ready_timeout": "soon", "idle_timeout": 0,
                "backends": [{"internal_port": 1, "ready_timeout": "1s"}, {"cmd": "x", "internal_port": 2, "ready_timeout": -1}]}}}"#,
            &[
                r#"routes."8080".ready_timeout: "soon" is not a duration; write e.g. "500ms", "30s", "5m" or a number of seconds"#,
                "routes.\"8080\".idle_timeout: 0 must be greater than zero",
                r#"routes."8080".backends[0].ready_timeout: ready_timeout given without a cmd to run"#,
                r#"routes."8080".backends[1].ready_timeout: -1 is not a duration; write e.g. "500ms", "30s", "5m" or a number of seconds"#,
            ],
        ),
        (
            r#"{"routes": {"8080": {"health": {"path": "health", "expect_status": 99, "interval": "x",
                "timeout": 0, "rise": 0, "fall": 101, "method": "HEAD"}, "backends": [{"internal_port": 1}]}}}"#,
            &[
                r#"routes."8080".health.method: unknown field; expected one of: path, expect_status, interval, timeout, rise, fall"#,
                r#"routes."8080".health.path: "health" is not a request path (starts with '/', no spaces or control characters, at most 1024 bytes)"#,
                r#"routes."8080".health.expect_status: 99 is not an HTTP status (100-599)"#,
                r#"routes."8080".health.interval: "x" is not a duration; write e.g. "500ms", "30s", "5m" or a number of seconds"#,
                "routes.\"8080\".health.timeout: 0 must be greater than zero",
                r#"routes."8080".health.rise: must be at least 1"#,
                r#"routes."8080".health.fall: 101 is too large (at most 100)"#,
            ],
        ),
        (
            r#"{"routes": {"8080": {"protocol": "tcp", "health": {"path": "/h", "expect_status": "200"},
                "backends": [{"internal_port": 1}]}}}"#,
            &[
                r#"routes."8080".health.path: an HTTP check needs protocol "http"; a tcp route is checked by connecting"#,
                r#"routes."8080".health.expect_status: "200" is not a non-negative integer"#,
            ],
        ),
        (
            r#"{"routes": {"8080": {"health": "on", "backends": [{"internal_port": 1}]},
                           "8081": {"health": {"path": "/a b"}, "backends": [{"internal_port": 1}]}}}"#,
            &[
                r#"routes."8080".health: expected an object (or false to disable checks), found "on""#,
                r#"routes."8081".health.path: "/a b" is not a request path (starts with '/', no spaces or control characters, at most 1024 bytes)"#,
            ],
        ),
    ];
    for (text, want) in table {
        let got = errors(text);
        assert_eq!(&got, want, "config: {text}");
    }
}

#[test]
fn hostile_input_never_panics() {
    let samples = [
        "", "null", "\"x\"", "{\"routes\": null}", "{\"routes\": {\"\": {}}}",
        "{\"routes\": {\"1\": {\"backends\": [{\"internal_port\": 1e300}]}}}",
        "{\"routes\": {\"1\": {\"backends\": [{\"internal_host\": \"\u{0}\", \"internal_port\": 1}]}}}",
        "{\"shutdown_grace\": 1e308}", "{\"shutdown_grace\": \"99999999999999h\"}",
        "{\"routes\": {\"1\": {\"listen\": {}, \"backends\": {}}}}",
    ];
    for s in samples {
        let _ = parse(s);
    }
    let deep = "[".repeat(10_000);
    assert!(parse(&deep).is_err());
}

/// Fuzzer finding (fuzz target `config_json`): an unknown empty key gave an
/// error with an empty path (`: unknown field ...`), and keys with dots or
/// spaces gave paths that read as nesting. Such keys are now quoted.
#[test]
fn unknown_odd_keys_are_quoted_in_paths() {
    let errs = parse(r#"{"": 1, "a.b": 2, "routes": {"8080": {"": 3, "backends": [{"internal_port": 1, " x": 4}]}}}"#)
        .unwrap_err();
    let paths: Vec<&str> = errs.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            r##""""##,
            r#""a.b""#,
            "routes.\"8080\".\"\"",
            r#"routes."8080".backends[0]." x""#,
        ]
    );
}
