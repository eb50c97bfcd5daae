//! The HTTP exchange's side of the access log: note the request's fields
//! before the client buffer moves on, write the line when the exchange ends.

use std::net::SocketAddr;

use crate::http::head::{find_header, HeaderSpan, RequestHead, Version};
use crate::shared::Live;

use super::{Field, Pending, WorkerLog};

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

/// Writes the exchange's line to its route's log (the top-level log when
/// no route matched); nothing when that route has none.
pub fn end(log: &mut Pending, out: &WorkerLog, live: &Live, client: SocketAddr) {
    let target = match log.route.and_then(|i| live.routes.get(i)) {
        Some(r) => r.log.map(|sink| (sink, r.cfg.name.as_str())),
        None => live.log.map(|sink| (sink, "-")),
    };
    match target {
        Some((sink, name)) => log.finish(out, sink, name, client),
        None => log.on = false,
    }
}
