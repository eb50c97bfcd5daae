use super::super::head::{
    parse_request, parse_response, HeaderSpan, Limits, RequestHead, ResponseHead, Status,
};
use super::*;

fn parse_req(buf: &[u8], spans: &mut [HeaderSpan]) -> RequestHead {
    match parse_request(buf, spans, &Limits::default()) {
        Ok(Status::Complete(h)) => h,
        other => panic!("{other:?}"),
    }
}

fn parse_resp(buf: &[u8], spans: &mut [HeaderSpan], method: &[u8]) -> ResponseHead {
    match parse_response(buf, spans, &Limits::default(), method) {
        Ok(Status::Complete(h)) => h,
        other => panic!("{other:?}"),
    }
}

const OPTS: RequestRewrite<'static> = RequestRewrite {
    client_ip: IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7)),
    proto: "https",
    forward_upgrade: false,
    close_upstream: false,
    client_cert: None,
};

fn rewrite_req(buf: &[u8], opts: &RequestRewrite<'_>) -> String {
    let mut spans = [HeaderSpan::default(); 32];
    let head = parse_req(buf, &mut spans);
    let mut out = Vec::new();
    write_request(&mut out, buf, &head, &spans, opts);
    // The output must itself be a valid head.
    let mut check = [HeaderSpan::default(); 32];
    parse_req(&out, &mut check);
    String::from_utf8(out).unwrap()
}

fn rewrite_resp(buf: &[u8], method: &[u8], opts: &ResponseRewrite) -> String {
    let mut spans = [HeaderSpan::default(); 32];
    let head = parse_resp(buf, &mut spans, method);
    let mut out = Vec::new();
    write_response(&mut out, buf, &head, &spans, opts);
    String::from_utf8(out).unwrap()
}

#[test]
fn request_table() {
    let up = RequestRewrite {
        forward_upgrade: true,
        ..OPTS
    };
    let close = RequestRewrite {
        close_upstream: true,
        ..OPTS
    };
    let v6 = RequestRewrite {
        client_ip: "2001:db8::1".parse().unwrap(),
        proto: "http",
        ..OPTS
    };
    let cases: &[(&str, &[u8], &RequestRewrite<'_>, &str)] = &[
        (
            "plain: Host kept, proxy fields appended",
            b"GET /x?y HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\n\r\n",
            &OPTS,
            "GET /x?y HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.7\r\n\
             X-Forwarded-Proto: https\r\nX-Forwarded-Host: a.example\r\n\r\n",
        ),
        (
            "hop-by-hop removed, spelling and spacing kept",
            b"POST /p HTTP/1.1\r\nhost:a\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\n\
              x-secret: s\r\nTE: trailers\r\nTrailer: X-Sum\r\nProxy-Connection: keep-alive\r\n\
              Upgrade: h2c\r\nx-CUSTOM:   spaced  \t\r\ncontent-LENGTH: 2\r\n\r\n",
            &OPTS,
            "POST /p HTTP/1.1\r\nhost:a\r\nx-CUSTOM:   spaced  \t\r\ncontent-LENGTH: 2\r\n\
             X-Forwarded-For: 10.0.0.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: a\r\n\r\n",
        ),
        (
            "Connection cannot strip framing or Host",
            b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length, Host, Transfer-Encoding\r\n\
              Content-Length: 1\r\n\r\n",
            &OPTS,
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nX-Forwarded-For: 10.0.0.7\r\n\
             X-Forwarded-Proto: https\r\nX-Forwarded-Host: a\r\n\r\n",
        ),
        (
            "XFF appended to the last one; incoming proto/host replaced",
            b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nHost: a\r\nx-forwarded-for: 2.2.2.2 \r\n\
              X-Forwarded-Proto: http\r\nX-Forwarded-Host: evil\r\nZ: z\r\n\r\n",
            &OPTS,
            "GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nHost: a\r\nx-forwarded-for: 2.2.2.2, 10.0.0.7\r\n\
             Z: z\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: a\r\n\r\n",
        ),
        (
            "empty XFF replaced",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For:\r\n\r\n",
            &OPTS,
            "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.7\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: a\r\n\r\n",
        ),
        (
            "XFF named in Connection is dropped and re-added",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-forwarded-for\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
            &OPTS,
            "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.7\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: a\r\n\r\n",
        ),
        (
            "absolute-form becomes origin-form, Host from target",
            b"GET http://api.example:8080/v1?x HTTP/1.1\r\nHost: wrong\r\nA: b\r\n\r\n",
            &OPTS,
            "GET /v1?x HTTP/1.1\r\nHost: api.example:8080\r\nA: b\r\nX-Forwarded-For: 10.0.0.7\r\n\
             X-Forwarded-Proto: https\r\nX-Forwarded-Host: api.example:8080\r\n\r\n",
        ),
        (
            "absolute-form with empty path, HTTP/1.0 without Host",
            b"GET http://api.example?x HTTP/1.0\r\n\r\n",
            &OPTS,
            "GET /?x HTTP/1.0\r\nHost: api.example\r\nX-Forwarded-For: 10.0.0.7\r\n\
             X-Forwarded-Proto: https\r\nX-Forwarded-Host: api.example\r\nConnection: keep-alive\r\n\r\n",
        ),
        (
            "OPTIONS absolute-form with empty path becomes *",
            b"OPTIONS http://api.example HTTP/1.1\r\nHost: api.example\r\n\r\n",
            &OPTS,
            "OPTIONS * HTTP/1.1\r\nHost: api.example\r\nX-Forwarded-For: 10.0.0.7\r\n\
             X-Forwarded-Proto: https\r\nX-Forwarded-Host: api.example\r\n\r\n",
        ),
        (
            "upgrade forwarded",
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Key: k\r\n\r\n",
            &up,
            "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\
             X-Forwarded-For: 10.0.0.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: a\r\n\
             Connection: upgrade\r\n\r\n",
        ),
        (
            "upgrade not forwarded",
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            &OPTS,
            "GET /ws HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.7\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: a\r\n\r\n",
        ),
        (
            "close upstream, IPv6 client, no Host (HTTP/1.0)",
            b"GET / HTTP/1.0\r\n\r\n",
            &RequestRewrite { close_upstream: true, ..v6 },
            "GET / HTTP/1.0\r\nX-Forwarded-For: 2001:db8::1\r\nX-Forwarded-Proto: http\r\n\
             Connection: close\r\n\r\n",
        ),
        (
            "close upstream, no headers at all after rewrite",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            &close,
            "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.7\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: a\r\nConnection: close\r\n\r\n",
        ),
        (
            "CONNECT keeps authority-form",
            b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n",
            &OPTS,
            "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\nX-Forwarded-For: 10.0.0.7\r\n\
             X-Forwarded-Proto: https\r\nX-Forwarded-Host: db:5432\r\n\r\n",
        ),
    ];
    for (name, input, opts, want) in cases {
        assert_eq!(rewrite_req(input, opts), *want, "{name}");
    }
}

#[test]
fn response_table() {
    let keep11 = ResponseRewrite {
        client_version: Version::Http11,
        close_client: false,
        forward_upgrade: false,
    };
    let keep10 = ResponseRewrite {
        client_version: Version::Http10,
        ..keep11
    };
    let close = ResponseRewrite {
        close_client: true,
        ..keep11
    };
    let up = ResponseRewrite {
        forward_upgrade: true,
        ..keep11
    };
    type Case<'a> = (&'a str, &'a [u8], &'a [u8], &'a ResponseRewrite, &'a str);
    let cases: &[Case<'_>] = &[
        (
            "hop-by-hop removed, framing kept",
            b"GET",
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal\r\nKeep-Alive: timeout=5\r\n\
              X-Internal: 1\r\nTransfer-Encoding: chunked\r\nset-cookie: a=b\r\n\r\n",
            &keep11,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nset-cookie: a=b\r\n\r\n",
        ),
        (
            "close client",
            b"GET",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            &close,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ),
        (
            "HTTP/1.0 client kept alive",
            b"GET",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            &keep10,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n",
        ),
        (
            "CL+TE response: Content-Length removed",
            b"GET",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: Content-Length\r\n\r\n",
            &close,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        ),
        (
            "101 forwarded",
            b"GET",
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Accept: x\r\n\r\n",
            &up,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\
             Connection: upgrade\r\n\r\n",
        ),
        (
            "Upgrade dropped outside 101",
            b"GET",
            b"HTTP/1.1 200 OK\r\nUpgrade: h2\r\nContent-Length: 0\r\n\r\n",
            &up,
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ),
        (
            "interim response gets no Connection",
            b"GET",
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
            &close,
            "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
        ),
        (
            "no headers left",
            b"HEAD",
            b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n",
            &close,
            "HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n",
        ),
    ];
    for (name, method, input, opts, want) in cases {
        assert_eq!(rewrite_resp(input, method, opts), *want, "{name}");
    }
}

/// After the first use, rewriting into a cleared `Vec` does not reallocate.
#[test]
fn output_buffer_is_reused() {
    let buf = b"GET http://a.example/x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\n\
                Connection: x-y\r\nX-Y: 1\r\n\r\n";
    let mut spans = [HeaderSpan::default(); 16];
    let head = parse_req(buf, &mut spans);
    let mut out = Vec::with_capacity(1024);
    write_request(&mut out, buf, &head, &spans, &OPTS);
    let (ptr, cap, first) = (out.as_ptr(), out.capacity(), out.clone());
    for _ in 0..3 {
        out.clear();
        let head = parse_req(buf, &mut spans);
        write_request(&mut out, buf, &head, &spans, &OPTS);
        assert_eq!((out.as_ptr(), out.capacity()), (ptr, cap));
        assert_eq!(out, first);
    }
}

/// Requests that survive parsing rewrite into heads that parse again with
/// the same framing.
#[test]
fn rewrite_preserves_framing() {
    let inputs: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n\r\n",
        b"POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
    ];
    for input in inputs {
        let mut spans = [HeaderSpan::default(); 16];
        let head = parse_req(input, &mut spans);
        let mut out = Vec::new();
        write_request(&mut out, input, &head, &spans, &OPTS);
        let mut spans2 = [HeaderSpan::default(); 16];
        let again = parse_req(&out, &mut spans2);
        assert_eq!(again.framing, head.framing);
        assert!(again.keep_alive);
    }
}

/// Mutated requests that parse always rewrite into heads that parse again
/// with the same framing and host.
#[test]
fn mutated_requests_round_trip() {
    let seeds: &[&[u8]] = &[
        b"POST http://a.example:80/x?y HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: x, close\r\nX: 1\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: b\r\nConnection: upgrade\r\nUpgrade: websocket\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        b"PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For:\r\n\r\n",
    ];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let alphabet = b"\r\n \t:,;/?@[]-*HTTP/1.0 chunkedcloseupgradeHostx-forwarded-for";
    let (mut spans, mut spans2) = ([HeaderSpan::default(); 16], [HeaderSpan::default(); 16]);
    let mut out = Vec::new();
    let mut parsed = 0;
    for _ in 0..20_000 {
        let mut m = seeds[(next() % seeds.len() as u64) as usize].to_vec();
        for _ in 0..(next() % 3 + 1) {
            let pos = (next() % m.len() as u64) as usize;
            let b = alphabet[(next() % alphabet.len() as u64) as usize];
            if next() % 2 == 0 {
                m[pos] = b;
            } else {
                m.insert(pos, b);
            }
        }
        let Ok(Status::Complete(head)) = parse_request(&m, &mut spans, &Limits::default()) else {
            continue;
        };
        parsed += 1;
        let opts = RequestRewrite {
            forward_upgrade: next() % 2 == 0,
            close_upstream: next() % 2 == 0,
            ..OPTS
        };
        out.clear();
        write_request(&mut out, &m, &head, &spans, &opts);
        let again = match parse_request(&out, &mut spans2, &Limits::default()) {
            Ok(Status::Complete(h)) => h,
            other => panic!(
                "{:?} -> {:?}: {other:?}",
                String::from_utf8_lossy(&m),
                String::from_utf8_lossy(&out)
            ),
        };
        assert_eq!(again.framing, head.framing);
        assert_eq!(again.head_len, out.len());
        assert_eq!(again.host(&out), head.host(&m));
        assert_eq!(again.upgrade, head.upgrade && opts.forward_upgrade);
    }
    assert!(parsed > 1000, "only {parsed} mutants parsed");
}

/// Fuzzer finding (fuzz target `http_request`): a forwarded upgrade whose
/// Connection header also names another field lost its Upgrade header (it
/// was dropped as a Connection-nominated field), so the backend saw
/// `Connection: upgrade` without `Upgrade`. Same for a forwarded 101.
#[test]
fn forwarded_upgrade_keeps_upgrade_when_connection_names_other_fields() {
    let up = RequestRewrite {
        forward_upgrade: true,
        ..OPTS
    };
    let got = rewrite_req(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, X-Hop\r\nUpgrade: websocket\r\nX-Hop: 1\r\n\r\n",
        &up,
    );
    assert_eq!(
        got,
        "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nX-Forwarded-For: 10.0.0.7\r\n\
         X-Forwarded-Proto: https\r\nX-Forwarded-Host: a\r\nConnection: upgrade\r\n\r\n"
    );
    let resp_up = ResponseRewrite {
        client_version: Version::Http11,
        close_client: false,
        forward_upgrade: true,
    };
    let got = rewrite_resp(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade, X-Hop\r\nUpgrade: h2c\r\nX-Hop: 1\r\n\r\n",
        b"GET",
        &resp_up,
    );
    assert_eq!(
        got,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n"
    );
}

/// More Connection tokens than the collected list holds (split over two
/// Connection fields): every nominated field is still dropped, and the
/// others kept, in requests and responses.
#[test]
fn many_nominated_fields_are_all_dropped() {
    let names: Vec<String> = (0..20).map(|i| format!("X-N{i}")).collect();
    let (first, second) = names.split_at(12);
    let mut req = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: {}\r\nConnection: {}\r\n",
        first.join(", "),
        second.join(", ")
    );
    for n in &names {
        req.push_str(&format!("{n}: v\r\n"));
    }
    req.push_str("X-Kept: yes\r\n\r\n");
    let out = rewrite_req(req.as_bytes(), &OPTS);
    for n in &names {
        assert!(!out.contains(&format!("{n}:")), "{n} kept:\n{out}");
    }
    assert!(out.contains("X-Kept: yes"), "{out}");

    let resp = req
        .replacen("GET / HTTP/1.1\r\nHost: a\r\n", "HTTP/1.1 200 OK\r\n", 1)
        .replace("\r\n\r\n", "\r\nContent-Length: 0\r\n\r\n");
    let out = rewrite_resp(
        resp.as_bytes(),
        b"GET",
        &ResponseRewrite {
            client_version: Version::Http11,
            close_client: false,
            forward_upgrade: false,
        },
    );
    for n in &names {
        assert!(!out.contains(&format!("{n}:")), "{n} kept:\n{out}");
    }
    assert!(out.contains("X-Kept: yes"), "{out}");
}
