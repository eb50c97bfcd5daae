//! Micro-benchmarks of ringmesh's per-request hot paths (divan).
//!
//! `cargo bench --bench micro` runs all; `cargo bench --bench micro -- head`
//! (or `route`, `balance`) runs one group. Numbers and how to read them:
//! bench/README.md, section "Micro-benchmarks".
//!
//! Every input is built once, outside the timed closure; the closures return
//! their result through divan so the optimizer cannot drop the work.

use std::net::{IpAddr, Ipv4Addr};

fn main() {
    divan::main();
}

/// HTTP head parse + rewrite, as the data plane does per exchange.
mod head {
    use super::*;
    use ringmesh::http::head::Version;
    use ringmesh::http::head::{parse_request, parse_response, HeaderSpan, Limits, Status};
    use ringmesh::http::rewrite::{write_request, write_response, RequestRewrite, ResponseRewrite};

    /// The span array the data plane uses (`exchange::MAX_HEADERS`).
    const SPANS: usize = 100;

    /// A typical browser navigation: 8 header fields, 365 bytes.
    pub const SMALL_REQUEST: &[u8] = b"GET /index.html?lang=en HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Connection: keep-alive\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Cache-Control: max-age=0\r\n\
\r\n";

    /// An API call through a CDN: 21 header fields (cookies, tracing,
    /// forwarding chain), 1,075 bytes. `large_nominated` is the same with
    /// `Connection: keep-alive, X-Debug` (a field the proxy must drop).
    pub const LARGE_REQUEST: &[u8] = b"POST /api/v2/orders/12345/items?expand=product,price&trace=1 HTTP/1.1\r\n\
Host: api.example.com\r\n\
User-Agent: Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15\r\n\
Accept: application/json, text/plain, */*\r\n\
Accept-Language: en-GB,en;q=0.9,de;q=0.8\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Content-Type: application/json; charset=utf-8\r\n\
Content-Length: 512\r\n\
Origin: https://shop.example.com\r\n\
Referer: https://shop.example.com/checkout/cart?step=2\r\n\
Cookie: session=9f8e7d6c5b4a39281706f5e4d3c2b1a0; csrftoken=AbCdEfGhIjKlMnOpQrStUvWxYz012345; _ga=GA1.2.1234567890.1700000000; theme=dark\r\n\
Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl\r\n\
X-Request-Id: 3f2b8c1e-7d4a-4e9b-9c0d-1a2b3c4d5e6f\r\n\
Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
X-Forwarded-For: 203.0.113.9, 198.51.100.23\r\n\
X-Forwarded-Proto: https\r\n\
Sec-Fetch-Dest: empty\r\n\
Sec-Fetch-Mode: cors\r\n\
Sec-Fetch-Site: same-site\r\n\
Cache-Control: no-cache\r\n\
Connection: keep-alive\r\n\
X-Debug: 1\r\n\
\r\n";

    /// A typical backend response head: 9 fields, 293 bytes.
    pub const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Server: nginx/1.24.0\r\n\
Date: Sat, 21 Nov 2026 07:00:00 GMT\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Content-Length: 13452\r\n\
Last-Modified: Fri, 20 Nov 2026 12:00:00 GMT\r\n\
Connection: keep-alive\r\n\
ETag: \"6740e1a0-348c\"\r\n\
Cache-Control: public, max-age=3600\r\n\
Accept-Ranges: bytes\r\n\
\r\n";

    const OPTS: RequestRewrite<'static> = RequestRewrite {
        client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        proto: "http",
        forward_upgrade: false,
        close_upstream: false,
        client_cert: None,
    };

    const RESP_OPTS: ResponseRewrite = ResponseRewrite {
        client_version: Version::Http11,
        close_client: false,
        forward_upgrade: false,
    };

    fn parse_req(buf: &[u8], spans: &mut [HeaderSpan]) -> ringmesh::http::head::RequestHead {
        match parse_request(buf, spans, &Limits::default()) {
            Ok(Status::Complete(h)) => h,
            other => panic!("benchmark input does not parse: {other:?}"),
        }
    }

    fn parse_resp(buf: &[u8], spans: &mut [HeaderSpan]) -> ringmesh::http::head::ResponseHead {
        match parse_response(buf, spans, &Limits::default(), b"GET") {
            Ok(Status::Complete(h)) => h,
            other => panic!("benchmark input does not parse: {other:?}"),
        }
    }

    fn input(name: &str) -> Vec<u8> {
        match name {
            "small" => SMALL_REQUEST.to_vec(),
            "large" => LARGE_REQUEST.to_vec(),
            "large_nominated" => {
                let s = std::str::from_utf8(LARGE_REQUEST).expect("ASCII");
                s.replace(
                    "Connection: keep-alive\r\n",
                    "Connection: keep-alive, X-Debug\r\n",
                )
                .into_bytes()
            }
            _ => unreachable!("unknown input {name}"),
        }
    }

    const INPUTS: [&str; 3] = ["small", "large", "large_nominated"];

    /// `parse_request` alone.
    #[divan::bench(args = INPUTS)]
    fn parse_req_only(bencher: divan::Bencher, name: &str) {
        let buf = &input(name)[..];
        let mut spans = [HeaderSpan::default(); SPANS];
        bencher
            .counter(divan::counter::BytesCount::of_slice(buf))
            .bench_local(|| parse_req(divan::black_box(buf), &mut spans));
    }

    /// `parse_request` then `write_request` into a reused buffer: the
    /// request-side head work of one proxied exchange.
    #[divan::bench(args = INPUTS)]
    fn parse_rewrite_req(bencher: divan::Bencher, name: &str) {
        let buf = &input(name)[..];
        let mut spans = [HeaderSpan::default(); SPANS];
        let mut out = Vec::with_capacity(4096);
        bencher
            .counter(divan::counter::BytesCount::of_slice(buf))
            .bench_local(|| {
                out.clear();
                let head = parse_req(divan::black_box(buf), &mut spans);
                write_request(&mut out, buf, &head, &spans, &OPTS);
                out.len()
            });
    }

    /// `parse_response` then `write_response`: the response-side head work.
    #[divan::bench]
    fn parse_rewrite_resp(bencher: divan::Bencher) {
        let mut spans = [HeaderSpan::default(); SPANS];
        let mut out = Vec::with_capacity(4096);
        bencher
            .counter(divan::counter::BytesCount::of_slice(RESPONSE))
            .bench_local(|| {
                out.clear();
                let head = parse_resp(divan::black_box(RESPONSE), &mut spans);
                write_response(&mut out, RESPONSE, &head, &spans, &RESP_OPTS);
                out.len()
            });
    }
}

/// Host -> route lookup on an http listener (`route::HostTable`).
mod route {
    use ringmesh::route::HostTable;

    /// A table of `n` routes: route 0 is the default (no hosts); route i
    /// has `svc{i}.example.com`, every 4th route also `*.app{i}.example.net`.
    fn table(n: usize) -> HostTable {
        let hosts: Vec<Vec<String>> = (0..n)
            .map(|i| match i {
                0 => Vec::new(),
                i if i % 4 == 0 => vec![
                    format!("svc{i}.example.com"),
                    format!("*.app{i}.example.net"),
                ],
                i => vec![format!("svc{i}.example.com")],
            })
            .collect();
        HostTable::build(hosts.iter().enumerate().map(|(i, h)| (i, h.as_slice())))
    }

    const SIZES: [usize; 2] = [10, 10_000];

    fn bench_lookup(bencher: divan::Bencher, n: usize, host: &[u8], want: usize) {
        let t = table(n);
        assert_eq!(
            t.lookup(Some(host)),
            Some(want),
            "{}",
            String::from_utf8_lossy(host)
        );
        bencher.bench_local(|| t.lookup(divan::black_box(Some(host))));
    }

    /// Exact name with a port, mixed case: `Svc7.Example.com:8080`.
    #[divan::bench(consts = SIZES)]
    fn exact_hit<const N: usize>(bencher: divan::Bencher) {
        bench_lookup(bencher, N, b"Svc7.Example.com:8080", 7);
    }

    /// Wildcard: `api.v2.app8.example.net` matches `*.app8.example.net`
    /// after two exact/suffix misses.
    #[divan::bench(consts = SIZES)]
    fn wildcard_hit<const N: usize>(bencher: divan::Bencher) {
        bench_lookup(bencher, N, b"api.v2.app8.example.net", 8);
    }

    /// Unknown name: every suffix probed, then the default route.
    #[divan::bench(consts = SIZES)]
    fn miss_to_default<const N: usize>(bencher: divan::Bencher) {
        bench_lookup(bencher, N, b"www.unknown-site.example.org", 0);
    }
}

/// Backend choice (`balance::pick`) with the data plane's closures: atomics
/// for availability and active counts, precomputed seeds.
mod balance {
    use super::*;
    use ringmesh::balance::{client_hash, pick, str_hash};
    use ringmesh::config::Balance;
    use ringmesh::shared::BackendState;
    use std::sync::atomic::Ordering::Relaxed;

    const SIZES: [usize; 2] = [2, 64];

    struct Backends {
        state: Vec<BackendState>,
        seed: Vec<u64>,
    }

    /// `n` backends, all up, with uneven active counts (least_conn must scan).
    fn backends(n: usize) -> Backends {
        let state: Vec<BackendState> = (0..n).map(|_| BackendState::default()).collect();
        for (i, s) in state.iter().enumerate() {
            s.active.store(((i * 7919) % 13) as u32 + 1, Relaxed);
        }
        let seed = (0..n).map(|i| str_hash(&format!("backend-{i}"))).collect();
        Backends { state, seed }
    }

    fn bench_pick(bencher: divan::Bencher, policy: Balance, n: usize) {
        let b = backends(n);
        let client = client_hash(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)));
        let now = 1_000_000u64;
        let mut cursor = 0u64;
        bencher.bench_local(|| {
            cursor = cursor.wrapping_add(1);
            pick(
                policy,
                divan::black_box(n),
                cursor,
                divan::black_box(client),
                &[],
                |i| b.state[i].available(now),
                |i| b.state[i].active.load(Relaxed),
                |i| b.seed[i],
            )
        });
    }

    #[divan::bench(consts = SIZES)]
    fn round_robin<const N: usize>(bencher: divan::Bencher) {
        bench_pick(bencher, Balance::RoundRobin, N);
    }

    #[divan::bench(consts = SIZES)]
    fn least_conn<const N: usize>(bencher: divan::Bencher) {
        bench_pick(bencher, Balance::LeastConn, N);
    }

    #[divan::bench(consts = SIZES)]
    fn ip_hash<const N: usize>(bencher: divan::Bencher) {
        bench_pick(bencher, Balance::IpHash, N);
    }
}
