//! Response head parse + rewrite on arbitrary bytes, for each request
//! method that changes framing (GET, HEAD, CONNECT).
//!
//! Invariants beyond "no panic": spans inside the head; trailing bytes and
//! segmentation do not change the verdict; the rewritten head parses again
//! with the same status, version and framing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmesh::http::head::{
    parse_response, HeaderSpan, Limits, ResponseFraming, ResponseHead, Status, Version,
    MAX_HEADERS_CAP,
};
use ringmesh::http::rewrite::{write_response, ResponseRewrite};

const SPANS: usize = 100;

fuzz_target!(|data: &[u8]| {
    let lim = Limits::default();
    for method in [&b"GET"[..], b"HEAD", b"CONNECT"] {
        let mut spans = [HeaderSpan::default(); SPANS];
        let Ok(Status::Complete(head)) = parse_response(data, &mut spans, &lim, method) else {
            continue;
        };
        assert!(head.head_len <= data.len());
        assert!(head.start < head.headers_start && head.headers_start <= head.head_len);
        assert!((100..=599).contains(&head.status));
        if head.conflicting_framing {
            assert!(!head.keep_alive);
        }
        let mut spans2 = [HeaderSpan::default(); SPANS];
        let again = parse_response(&data[..head.head_len], &mut spans2, &lim, method);
        assert_eq!(again, Ok(Status::Complete(head)));
        let step = (head.head_len / 64).max(1);
        for k in (1..head.head_len).step_by(step) {
            let r = parse_response(&data[..k], &mut spans2, &lim, method);
            assert_eq!(r, Ok(Status::Partial), "prefix {k} of {}", head.head_len);
        }

        for (client_version, close_client, forward_upgrade) in [
            (Version::Http11, false, false),
            (Version::Http10, true, true),
        ] {
            let opts = ResponseRewrite {
                client_version,
                close_client,
                forward_upgrade,
            };
            let mut out = Vec::new();
            write_response(&mut out, data, &head, &spans, &opts);
            let mut ospans = [HeaderSpan::default(); MAX_HEADERS_CAP];
            let big = Limits {
                max_head: 1 << 20,
                max_headers: MAX_HEADERS_CAP,
            };
            let re: ResponseHead = match parse_response(&out, &mut ospans, &big, method) {
                Ok(Status::Complete(h)) => h,
                other => panic!(
                    "rewritten response does not parse: {other:?}\n{:?}",
                    String::from_utf8_lossy(&out)
                ),
            };
            assert_eq!(re.head_len, out.len());
            assert_eq!(re.status, head.status);
            assert_eq!(re.version, head.version);
            assert_eq!(
                re.framing,
                head.framing,
                "{:?}",
                String::from_utf8_lossy(&out)
            );
            // Content-Length that conflicted with chunked is gone.
            assert!(!re.conflicting_framing);
            for name in [&b"te"[..], b"trailer", b"keep-alive", b"proxy-connection"] {
                let n = re
                    .headers(&ospans)
                    .iter()
                    .filter(|h| h.name(&out).eq_ignore_ascii_case(name))
                    .count();
                assert_eq!(n, 0, "{} forwarded", String::from_utf8_lossy(name));
            }
            if head.framing == ResponseFraming::UntilClose || close_client {
                assert!(!re.keep_alive || head.is_interim() || head.is_switching_protocols());
            }
        }
    }
});
