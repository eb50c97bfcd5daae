//! Tests of `middleware.rs`: valid chains and errors with their JSON paths.
use super::*;

fn run(text: &str) -> (Vec<Middleware>, Vec<String>) {
    let v: Value = serde_json::from_str(text).unwrap();
    let mut e = Vec::new();
    let m = parse(Some(&v), "routes.\"80\".middleware", true, &mut e);
    (m, e.into_iter().map(|e| e.path).collect())
}

#[test]
fn valid_chain() {
    let (m, e) = run(r#"[{"type": "request_id", "trust": true},
            {"type": "headers", "request": {"set": {"X-Env": "prod"}, "remove": ["X-Debug"]},
             "response": {"add": {"X-Served-By": "ringmesh"}}},
            {"type": "ip_filter", "allow": ["10.0.0.0/8", "::1", "2001:db8::/32"]}]"#);
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(m.len(), 3);
    assert_eq!(m[0].kind(), "request_id");
    let Middleware::Headers { request, .. } = &m[1] else {
        panic!()
    };
    assert_eq!(request.remove, ["x-debug"]);
}

#[test]
fn errors_carry_json_paths() {
    let p = "routes.\"80\".middleware";
    let (_, e) = run(
        r#"[{"type": "nope"}, {"type": "ip_filter", "allow": ["10.0.0.0/33", 3]},
            {"type": "headers", "request": {"set": {"Bad Name": "x", "X-A": "a\nb"}}, "extra": 1},
            {"type": "request_id", "trust": "yes"}, 5, {}]"#,
    );
    assert_eq!(
        e,
        [
            format!("{p}[0].type"),
            format!("{p}[1].allow[0]"),
            format!("{p}[1].allow[1]"),
            format!("{p}[2].extra"),
            format!("{p}[2].request.set.Bad Name"),
            format!("{p}[2].request.set.X-A"),
            format!("{p}[3].trust"),
            format!("{p}[4]"),
            format!("{p}[5].type"),
        ]
    );
}

#[test]
fn tcp_routes_have_no_middleware() {
    let v: Value = serde_json::from_str(r#"[{"type": "request_id"}]"#).unwrap();
    let mut e = Vec::new();
    assert!(parse(Some(&v), "m", false, &mut e).is_empty());
    assert_eq!(e.len(), 1);
}

#[test]
fn forward_auth_fields() {
    let (m, e) = run(r#"[{"type": "forward_auth", "address": "127.0.0.1:9091"}]"#);
    assert!(e.is_empty(), "{e:?}");
    let Middleware::ForwardAuth(f) = &m[0] else {
        panic!()
    };
    assert_eq!(f.path, "{uri}");
    assert_eq!(f.request_headers, ["Authorization", "Cookie"]);
    assert_eq!(f.timeout, std::time::Duration::from_secs(5));
    let p = "routes.\"80\".middleware";
    let (_, e) = run(r#"[{"type": "forward_auth"},
            {"type": "forward_auth", "address": "no port here", "path": "x y", "timeout": "soon",
             "request_headers": ["Bad Name", "Host"], "response_headers": [1, "Content-Length"], "max_response_body": -1, "x": 1}]"#);
    assert_eq!(
        e,
        [
            format!("{p}[0].address"),
            format!("{p}[1].x"),
            format!("{p}[1].address"),
            format!("{p}[1].path"),
            format!("{p}[1].timeout"),
            format!("{p}[1].request_headers[0]"),
            format!("{p}[1].request_headers[1]"),
            format!("{p}[1].response_headers[0]"),
            format!("{p}[1].response_headers[1]"),
            format!("{p}[1].max_response_body"),
        ]
    );
}

#[test]
fn compress_fields() {
    let (m, e) = run(
        r#"[{"type": "compress"}, {"type": "compress", "encodings": ["gzip", "gzip"],
        "min_length": 0, "content_types": ["text/*", "Application/JSON"]}]"#,
    );
    assert!(e.is_empty(), "{e:?}");
    let (Middleware::Compress(a), Middleware::Compress(b)) = (&m[0], &m[1]) else {
        panic!()
    };
    assert_eq!(
        a.encodings,
        [Encoding::Zstd, Encoding::Brotli, Encoding::Gzip]
    );
    assert_eq!(a.min_length, 1024);
    assert_eq!(b.encodings, [Encoding::Gzip]);
    assert_eq!(b.content_types, ["text/*", "application/json"]);
    let p = "routes.\"80\".middleware";
    let (_, e) = run(
        r#"[{"type": "compress", "encodings": ["deflate"], "min_length": -1,
             "content_types": ["text", "*/*x"], "level": 9}]"#,
    );
    assert_eq!(
        e,
        [
            format!("{p}[0].level"),
            format!("{p}[0].encodings[0]"),
            format!("{p}[0].encodings"),
            format!("{p}[0].min_length"),
            format!("{p}[0].content_types[0]"),
            format!("{p}[0].content_types[1]"),
            format!("{p}[0].content_types"),
        ]
    );
}
