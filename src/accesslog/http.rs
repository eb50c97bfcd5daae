//! The HTTP exchange's side of the access log: note the request's fields
//! before the client buffer moves on, write the line when the exchange ends.

use std::net::SocketAddr;

use crate::http::head::{find_header, HeaderSpan, RequestHead, Version};
use crate::shared::Live;

use super::{Field, Pending, TlsFields, WorkerLog};

/// Starts logging the exchange of `head` (parsed from `buf`).
pub fn begin(log: &mut Pending, buf: &[u8], head: &RequestHead, spans: &[HeaderSpan]) {
    log.begin(match head.version {
        Version::Http10 => "HTTP/1.0",
        Version::Http11 => "HTTP/1.1",
    });
    log.set(Field::Method, head.method(buf));
    log.set(Field::Target, head.target(buf));
    let headers = head.headers(spans);
    if let Some(v) = find_header(buf, headers, b"user-agent") {
        log.set(Field::UserAgent, v);
    }
    if let Some(v) = find_header(buf, headers, b"referer") {
        log.set(Field::Referer, v);
    }
}

/// Writes a line for a request refused before it had a complete head
/// (400, 408, 431): its route is unknown, so to the top-level log. `tls`:
/// the connection's TLS version and SNI, when it is TLS.
pub fn rejected(
    out: &WorkerLog,
    live: &Live,
    client: SocketAddr,
    status: u16,
    bytes_in: u64,
    tls: super::TlsFields<'_>,
) {
    let Some(sink) = live.log else { return };
    out.write(
        sink,
        &super::Record {
            time_ms: super::wall_ms(),
            kind: super::Kind::Http,
            route: "-",
            client,
            method: b"-",
            target: b"-",
            protocol: "-",
            status,
            bytes_in,
            bytes_out: 0,
            duration_us: 0,
            upstream: None,
            upstream_ttfb_us: None,
            request_id: None,
            user_agent: None,
            referer: None,
            tls_version: tls.0,
            sni: tls.1,
            close_reason: None,
        },
    );
}

/// Writes the exchange's line to its route's log (the top-level log when
/// no route matched); nothing when that route has none. `tls`: the client
/// connection's TLS version and SNI name, when it is TLS.
pub fn end(
    log: &mut Pending,
    out: &WorkerLog,
    live: &Live,
    client: SocketAddr,
    tls: TlsFields<'_>,
) {
    let target = match log.route.and_then(|i| live.routes.get(i)) {
        Some(r) => r.log.map(|sink| (sink, r.cfg.name.as_str())),
        None => live.log.map(|sink| (sink, "-")),
    };
    match target {
        Some((sink, name)) => log.finish(out, sink, name, client, tls),
        None => log.on = false,
    }
}
