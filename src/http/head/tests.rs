use super::super::chunked::{ChunkError, ChunkedScanner};
use super::*;

fn req(buf: &[u8]) -> Result<Status<RequestHead>, HeadError> {
    let mut spans = [HeaderSpan::default(); 100];
    parse_request(buf, &mut spans, &Limits::default())
}

fn complete(buf: &[u8]) -> RequestHead {
    match req(buf) {
        Ok(Status::Complete(h)) => h,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

#[derive(Debug, PartialEq)]
enum Want {
    Ok(BodyFraming),
    Bad,
    TooLarge,
    Version,
    Body(ChunkError),
}

/// Request smuggling and malformed-head table: each payload with the
/// outcome a strict proxy must produce.
#[test]
fn smuggling_table() {
    use BodyFraming::*;
    use Want::*;
    let long = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    let cases: &[(&str, &[u8], Want)] = &[
        ("CL+TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", Bad),
        ("TE+CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", Bad),
        ("TE chunked, identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", Bad),
        ("TE identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", Bad),
        ("TE xchunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", Bad),
        ("TE gzip, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Bad),
        ("TE chunked;x=1", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n", Bad),
        ("TE empty", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", Bad),
        ("TE vertical tab", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n", Bad),
        ("TE + TE identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", Bad),
        ("space before colon", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", Bad),
        ("tab before colon", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length\t: 5\r\n\r\n", Bad),
        ("CL 1,2", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,2\r\n\r\n", Bad),
        ("CL +5", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", Bad),
        ("CL -1", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", Bad),
        ("CL 0x10", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", Bad),
        ("CL inner space", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 0\r\n\r\n", Bad),
        ("CL empty", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", Bad),
        ("CL 5,", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\n", Bad),
        ("CL dup differing", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", Bad),
        ("CL overflow", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", Bad),
        ("bare CR in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", Bad),
        ("bare CR line end", b"GET / HTTP/1.1\rHost: a\r\n\r\n", Bad),
        ("bare LF everywhere", b"GET / HTTP/1.1\nHost: a\n\n", Bad),
        ("bare LF one line", b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", Bad),
        ("bare LF final line", b"GET / HTTP/1.1\r\nHost: a\r\n\n", Bad),
        ("bare LF leading", b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Bad),
        ("NUL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", Bad),
        ("DEL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", Bad),
        ("NUL in target", b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n", Bad),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", Bad),
        ("obs-fold tab", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", Bad),
        ("space before first header", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", Bad),
        ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Bad),
        ("double chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", Bad),
        ("double chunked lines", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", Bad),
        ("missing Host", b"GET / HTTP/1.1\r\nX: a\r\n\r\n", Bad),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Bad),
        ("two Hosts same", b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", Bad),
        ("Host with path", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", Bad),
        ("Host with userinfo", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", Bad),
        ("Host with bad port", b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", Bad),
        ("bad method", b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", Bad),
        ("target with space", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", Bad),
        ("double space", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Bad),
        ("trailing space", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", Bad),
        ("fragment", b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", Bad),
        ("non-ASCII target", b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", Bad),
        ("relative target", b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", Bad),
        ("ftp absolute", b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", Bad),
        ("absolute userinfo", b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", Bad),
        ("absolute empty host", b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", Bad),
        ("asterisk with GET", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", Bad),
        ("CONNECT origin-form", b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", Bad),
        ("CONNECT no port", b"CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n", Bad),
        ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", Version),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", Version),
        ("HTTP/0.9 line", b"GET /\r\n\r\n", Bad),
        ("lowercase version", b"GET / http/1.1\r\nHost: a\r\n\r\n", Bad),
        ("HTTP/1.10", b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", Bad),
        ("name non-token", b"GET / HTTP/1.1\r\nHost: a\r\nX(y): z\r\n\r\n", Bad),
        ("name empty", b"GET / HTTP/1.1\r\nHost: a\r\n: z\r\n\r\n", Bad),
        ("no colon", b"GET / HTTP/1.1\r\nHost: a\r\nXyz\r\n\r\n", Bad),
        ("header over limit", long.as_bytes(), TooLarge),
        ("too many headers", many.as_bytes(), TooLarge),
        ("chunk size -1", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n", Body(ChunkError::BadSize)),
        ("chunk size 0x5", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", Body(ChunkError::BadSize)),
        ("chunk size overflow", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\n", Body(ChunkError::SizeOverflow)),
        ("chunk data no CRLF", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n", Body(ChunkError::MissingDataCrlf)),
        ("chunk LF only", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", Body(ChunkError::BadLineEnding)),
        // Accepted: what the strict rules must still let through.
        ("TE Chunked case", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n", Ok(Chunked)),
        ("CL 5, 5", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", Ok(Length(5))),
        ("CL dup same", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello", Ok(Length(5))),
        ("CL leading zeros", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n", Ok(Length(7))),
        ("CL u64 max", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n", Ok(Length(u64::MAX))),
        ("CL in HTTP/1.0", b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi", Ok(Length(2))),
        ("no body", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(None)),
        ("leading CRLF", b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(None)),
        ("obs-text value", b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n", Ok(None)),
        ("OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", Ok(None)),
        ("CONNECT", b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", Ok(None)),
        ("IPv6 Host", b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", Ok(None)),
        ("empty Host", b"GET / HTTP/1.1\r\nHost:\r\n\r\n", Ok(None)),
    ];
    assert!(cases.len() >= 25);
    for (name, payload, want) in cases {
        let got = match req(payload) {
            Result::Ok(Status::Complete(h)) => match h.framing {
                Chunked => {
                    let mut s = ChunkedScanner::new();
                    match s.advance(&payload[h.head_len..]) {
                        Result::Ok(_) => Ok(Chunked),
                        Err(e) => Body(e),
                    }
                }
                f => Ok(f),
            },
            Result::Ok(Status::Partial) => panic!("{name}: partial"),
            Err(HeadError::Bad(reason)) => {
                assert!(!reason.is_empty());
                Bad
            }
            Err(HeadError::TooLarge) => TooLarge,
            Err(HeadError::Version) => Version,
        };
        assert_eq!(&got, want, "{name}: {:?}", req(payload));
    }
}

#[test]
fn rejection_reasons_are_specific() {
    let reason = |b: &[u8]| match req(b) {
        Err(HeadError::Bad(r)) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(reason(b"GET / HTTP/1.1\nHost: a\n\n"), "bare LF in head");
    assert_eq!(
        reason(b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"),
        "bare CR in head"
    );
    assert_eq!(
        reason(b"GET / HTTP/1.1\r\nHost: a\r\nX: \x00\r\n\r\n"),
        "NUL in head"
    );
    assert_eq!(
        reason(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"),
        "obs-fold (line folding) in header"
    );
    assert_eq!(
        reason(b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n"),
        "whitespace between header name and colon"
    );
    assert_eq!(reason(b"G@T / HTTP/1.1\r\n\r\n"), "invalid method");
    assert_eq!(reason(b"GET  / HTTP/1.1\r\n\r\n"), "invalid request-target");
    assert_eq!(
        reason(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        "both Content-Length and Transfer-Encoding"
    );
    assert_eq!(reason(b"GET / HTTP/1.1\r\n\r\n"), "missing Host header");
    assert_eq!(HeadError::Bad("x").request_status(), 400);
    assert_eq!(HeadError::TooLarge.request_status(), 431);
    assert_eq!(HeadError::Version.request_status(), 505);
}

#[test]
fn partial_heads_and_size_limit() {
    let full = b"POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\n";
    for n in 0..full.len() {
        assert_eq!(req(&full[..n]), Result::Ok(Status::Partial), "prefix {n}");
    }
    assert!(matches!(req(full), Result::Ok(Status::Complete(_))));

    let limits = Limits {
        max_head: full.len(),
        max_headers: 100,
    };
    let mut spans = [HeaderSpan::default(); 8];
    assert!(matches!(
        parse_request(full, &mut spans, &limits),
        Result::Ok(Status::Complete(_))
    ));
    let mut with_body = full.to_vec();
    with_body.extend_from_slice(b"abc");
    assert!(matches!(
        parse_request(&with_body, &mut spans, &limits),
        Result::Ok(Status::Complete(_))
    ));
    let small = Limits {
        max_head: full.len() - 1,
        max_headers: 100,
    };
    assert_eq!(
        parse_request(full, &mut spans, &small),
        Err(HeadError::TooLarge)
    );
    assert_eq!(
        parse_request(&full[..full.len() - 2], &mut spans, &small),
        Result::Ok(Status::Partial)
    );

    let endless = vec![b'a'; 70_000];
    let mut open = b"GET /".to_vec();
    open.extend_from_slice(&endless);
    assert_eq!(req(&open), Err(HeadError::TooLarge));
    let mut hdr = b"GET / HTTP/1.1\r\nX: ".to_vec();
    hdr.extend_from_slice(&endless);
    assert_eq!(req(&hdr), Err(HeadError::TooLarge));

    // Header count limit: from Limits and from the caller's array.
    let two = b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\r\n";
    let one = Limits {
        max_head: 1024,
        max_headers: 1,
    };
    assert_eq!(
        parse_request(two, &mut spans, &one),
        Err(HeadError::TooLarge)
    );
    let mut tiny = [HeaderSpan::default(); 1];
    assert_eq!(
        parse_request(two, &mut tiny, &Limits::default()),
        Err(HeadError::TooLarge)
    );
    let mut exact = [HeaderSpan::default(); 2];
    assert!(matches!(
        parse_request(two, &mut exact, &Limits::default()),
        Result::Ok(Status::Complete(_))
    ));
}

#[test]
fn keep_alive_defaults() {
    let cases: &[(&[u8], bool)] = &[
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            false,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n",
            false,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo\r\nConnection: close\r\n\r\n",
            false,
        ),
        (b"GET / HTTP/1.0\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        (
            b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
            false,
        ),
    ];
    for (buf, want) in cases {
        assert_eq!(
            complete(buf).keep_alive,
            *want,
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }
}

#[test]
fn request_facts() {
    let buf = b"POST /p?q=1 HTTP/1.1\r\nhOsT: Example.COM:8080\r\nX-Long:   spaced  \r\n\
        Connection: Upgrade, X-Trace\r\nUpgrade: websocket\r\nExpect: 100-Continue\r\n\
        X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\nContent-Length: 0\r\n\r\n";
    let mut spans = [HeaderSpan::default(); 16];
    let Result::Ok(Status::Complete(h)) = parse_request(buf, &mut spans, &Limits::default()) else {
        panic!()
    };
    assert_eq!(h.method(buf), b"POST");
    assert_eq!(h.target(buf), b"/p?q=1");
    assert_eq!(h.path(buf), b"/p?q=1");
    assert_eq!(h.target_form, TargetForm::Origin);
    assert_eq!(h.version, Version::Http11);
    assert_eq!(h.host(buf), Some(&b"Example.COM:8080"[..]));
    assert_eq!(h.header_count, 8);
    assert_eq!(h.head_len, buf.len());
    assert_eq!(h.headers_start, 22);
    assert!(h.upgrade && h.expect_continue && h.keep_alive);
    assert_eq!(h.framing, BodyFraming::Length(0));
    assert_eq!(
        h.connection,
        ConnectionTokens {
            close: false,
            keep_alive: false,
            upgrade: true,
            other: true
        }
    );
    assert_eq!(h.xff_last, Some(6));
    let hs = h.headers(&spans);
    assert_eq!(hs[1].name(buf), b"X-Long");
    assert_eq!(hs[1].value(buf), b"spaced");
    assert_eq!(find_header(buf, hs, b"upgrade"), Some(&b"websocket"[..]));
    assert_eq!(
        find_header(buf, hs, b"x-forwarded-for"),
        Some(&b"1.1.1.1"[..])
    );
    assert_eq!(find_header(buf, hs, b"missing"), None);

    // Upgrade needs both the token and the header, and HTTP/1.1.
    assert!(!complete(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n").upgrade);
    assert!(!complete(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n").upgrade);
    assert!(!complete(b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n").upgrade);
    // 100-continue is ignored for HTTP/1.0 (RFC 9110 §10.1.1).
    assert!(
        !complete(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
            .expect_continue
    );
    // HTTP/1.0 without Host is allowed; host is then unknown.
    assert_eq!(complete(b"GET / HTTP/1.0\r\n\r\n").host, None);
}

#[test]
fn absolute_and_other_target_forms() {
    let buf = b"GET http://api.example:8080/v1/x?y HTTP/1.1\r\nHost: other\r\n\r\n";
    let h = complete(buf);
    assert_eq!(h.target_form, TargetForm::Absolute);
    assert_eq!(h.host(buf), Some(&b"api.example:8080"[..]));
    assert_eq!(h.path(buf), b"/v1/x?y");

    let buf = b"GET HTTPS://api.example?x HTTP/1.0\r\n\r\n";
    let h = complete(buf);
    assert_eq!(h.host(buf), Some(&b"api.example"[..]));
    assert_eq!(h.path(buf), b"?x");

    let buf = b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n";
    let h = complete(buf);
    assert_eq!(h.target_form, TargetForm::Authority);
    assert_eq!(h.host(buf), Some(&b"db.internal:5432"[..]));
    assert_eq!(h.path(buf), b"");

    let h = complete(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.target_form, TargetForm::Asterisk);
}

#[test]
fn pipelined_requests() {
    let buf = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\n\r\nhiGET /c HTTP/1.1\r\nHost: c\r\n\r\nGET /d HT";
    let mut at = 0;
    let mut paths = Vec::new();
    while let Status::Complete(h) = req(&buf[at..]).unwrap() {
        let rest = &buf[at..];
        paths.push(h.target(rest).to_vec());
        at += h.head_len;
        if let BodyFraming::Length(n) = h.framing {
            at += n as usize;
        }
    }
    assert_eq!(paths, [b"/a".to_vec(), b"/b".to_vec(), b"/c".to_vec()]);
    assert_eq!(&buf[at..], b"GET /d HT");
}

fn resp(method: &[u8], buf: &[u8]) -> Result<Status<ResponseHead>, HeadError> {
    let mut spans = [HeaderSpan::default(); 32];
    parse_response(buf, &mut spans, &Limits::default(), method)
}

#[test]
fn response_framing_table() {
    use ResponseFraming::*;
    // (method, response, framing, keep_alive, conflicting)
    type Case<'a> = (&'a [u8], &'a [u8], ResponseFraming, bool, bool);
    let cases: &[Case<'_>] = &[
        (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Length(5), true, false),
        (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", Length(5), true, false),
        (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", None, true, false),
        (b"HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", None, true, false),
        (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n", None, true, false),
        (b"GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", None, true, false),
        (b"GET", b"HTTP/1.1 100 Continue\r\n\r\n", None, true, false),
        (b"GET", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", None, true, false),
        (b"GET", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", None, false, false),
        (b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Chunked, true, false),
        (b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Chunked, true, false),
        (b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", UntilClose, false, false),
        (b"GET", b"HTTP/1.1 200 OK\r\n\r\n", UntilClose, false, false),
        (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", Chunked, false, true),
        (b"CONNECT", b"HTTP/1.1 200 Connection Established\r\n\r\n", Tunnel, false, false),
        (b"CONNECT", b"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 0\r\n\r\n", Length(0), true, false),
        (b"GET", b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", Length(5), false, false),
        (b"GET", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\n", Length(5), true, false),
        (b"GET", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\n", Length(5), false, false),
        (b"GET", b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n", Length(1), true, false),
    ];
    for (method, buf, framing, keep_alive, conflicting) in cases {
        let h = match resp(method, buf) {
            Result::Ok(Status::Complete(h)) => h,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        };
        let ctx = String::from_utf8_lossy(buf);
        assert_eq!(h.framing, *framing, "{ctx}");
        assert_eq!(h.keep_alive, *keep_alive, "{ctx}");
        assert_eq!(h.conflicting_framing, *conflicting, "{ctx}");
        assert_eq!(h.head_len, buf.len());
    }
    let h = match resp(b"GET", b"HTTP/1.1 101 Switching Protocols\r\n\r\n") {
        Result::Ok(Status::Complete(h)) => h,
        other => panic!("{other:?}"),
    };
    assert!(h.is_switching_protocols() && !h.is_interim());
    let h = match resp(b"GET", b"\r\nHTTP/1.1 100 Continue\r\n\r\n") {
        Result::Ok(Status::Complete(h)) => h,
        other => panic!("{other:?}"),
    };
    assert!(h.is_interim() && h.start == 2 && h.headers_start == 25);
}

#[test]
fn response_rejections() {
    let bad: &[(&[u8], HeadError)] = &[
        (
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            HeadError::Bad(""),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1,2\r\n\r\n",
            HeadError::Bad(""),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            HeadError::Bad(""),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
            HeadError::Bad(""),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            HeadError::Bad(""),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: ,\r\n\r\n",
            HeadError::Bad(""),
        ),
        (b"HTTP/1.1 099 Low\r\n\r\n", HeadError::Bad("")),
        (b"HTTP/1.1 600 High\r\n\r\n", HeadError::Bad("")),
        (b"HTTP/1.1 20 OK\r\n\r\n", HeadError::Bad("")),
        (b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", HeadError::Bad("")),
        (b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n", HeadError::Bad("")),
        (
            b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
            HeadError::Bad(""),
        ),
        (b"HTTP/1.1 200 OK\r\nX: a\x00\r\n\r\n", HeadError::Bad("")),
        (b"HTTP/2.0 200 OK\r\n\r\n", HeadError::Version),
    ];
    for (buf, want) in bad {
        let got = resp(b"GET", buf);
        let ok = match (got, want) {
            (Err(HeadError::Bad(_)), HeadError::Bad(_)) => true,
            (Err(e), w) => e == *w,
            _ => false,
        };
        assert!(ok, "{:?}: {got:?}", String::from_utf8_lossy(buf));
    }
    let mut big = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
    big.extend_from_slice(&vec![b'a'; 70_000]);
    assert_eq!(resp(b"GET", &big), Err(HeadError::TooLarge));
    assert_eq!(
        resp(b"GET", b"HTTP/1.1 200 OK\r\nX: a\r\n"),
        Result::Ok(Status::Partial)
    );
}

/// Deterministic mutation fuzz: parsing arbitrary bytes never panics and
/// any complete head has consistent offsets.
#[test]
fn mutated_inputs_never_panic() {
    let seeds: &[&[u8]] = &[
        b"POST http://a.example:80/x?y HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: x, close\r\n\r\nhello",
        b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let alphabet = b"\r\n\0 \t:,;/?#@[]-\x7f\xffHTTP/1.019chunkedContent-Length";
    let mut spans = [HeaderSpan::default(); 8];
    for _ in 0..20_000 {
        let seed = seeds[(next() % seeds.len() as u64) as usize];
        let mut m = seed.to_vec();
        for _ in 0..(next() % 4 + 1) {
            let pos = (next() % (m.len() as u64 + 1)) as usize;
            let b = alphabet[(next() % alphabet.len() as u64) as usize];
            match next() % 3 {
                0 if pos < m.len() => m[pos] = b,
                1 => m.insert(pos, b),
                _ => m.truncate(pos),
            }
        }
        let limits = Limits {
            max_head: (next() % 200) as usize + 1,
            max_headers: 8,
        };
        for l in [&limits, &Limits::default()] {
            if let Result::Ok(Status::Complete(h)) = parse_request(&m, &mut spans, l) {
                assert!(h.head_len <= m.len() && h.headers_start <= h.head_len);
                assert!(m[..h.head_len].ends_with(b"\r\n\r\n"));
            }
            for method in [&b"GET"[..], b"HEAD", b"CONNECT"] {
                if let Result::Ok(Status::Complete(h)) = parse_response(&m, &mut spans, l, method) {
                    assert!(h.start <= h.headers_start && h.headers_start <= h.head_len);
                }
            }
        }
    }
}
