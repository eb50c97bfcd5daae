//! HTTP/2 to clients: h2c with prior knowledge on every http port (and,
//! through [`serve_stream`], any AsyncRead + AsyncWrite stream such as a TLS
//! session that negotiated ALPN `h2`), each stream proxied to an HTTP/1.1
//! backend over the worker's keep-alive pool (`proxy`), or, for backends
//! with `"protocol": "h2c"` (gRPC), as a stream on a pooled multiplexed
//! upstream connection (`upstream`).
//!
//! ```text
//!  conn.rs: first bytes == PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n  --> serve_tcp
//!    TcpStream -> into_poll_io (monoio poll-io) -> Wire (replay + frame budget)
//!  conn.rs: TLS handshake chose ALPN h2 --> serve_tls
//!    TcpStream -> into_poll_io -> tls::stream::TlsStream (record layer) -> Wire
//!      -> h2::server::Connection (server::drive: accept, idle, drain, floods)
//!           each stream: monoio::spawn(proxy::stream)
//!             :authority -> route -> middleware request phases (record)
//!             -> pooled upstream -> HTTP/1.1 head + body
//!             <- response head -> HEADERS, body -> DATA (flow control), trailers
//!             (h2c backend: upstream::Forward, stream to stream, trailers as is)
//!             end of the task: logging phase, access log line (record::Record's drop)
//! ```
//!
//! ## Decision: the `h2` crate on monoio's poll-io streams
//!
//! `h2` (hyperium) is the maintained implementation and carries the fixes
//! for Rapid Reset (CVE-2023-44487, `max_pending_accept_reset_streams`), the
//! CONTINUATION flood (CVE-2024-27316 and siblings: header list accounting
//! across CONTINUATION frames) and MadeYouReset (CVE-2025-8671,
//! `max_local_error_reset_streams`). The fork inside monoio-http predates
//! all three. `h2` is written against tokio's `AsyncRead`/`AsyncWrite`
//! traits only; monoio's `poll-io` feature gives a `TcpStream` those traits
//! (`into_poll_io`: readiness through the runtime's poller, on io_uring as
//! well as epoll), so no tokio runtime runs: `cargo tree` shows tokio with
//! only its `io-util` and `sync` features (the traits, `ReadBuf`, and
//! tokio-util's codec), no `rt`, `net` or `time`.
//!
//! What it costs, measured (`h2::cost`, a counting allocator on the worker
//! thread): a connection costs 39 allocations and 35 KiB (the `h2` codec's
//! buffers, HPACK tables, our driver); each stream with four request and
//! five response fields costs 10 allocations and 1.5 KiB on top, of which
//! `h2` makes most (the request's header map, HPACK strings, the response
//! frame) and the task one. The proxy path adds per stream: one copy of the
//! backend's response head into a `Bytes` that the h2 field values slice
//! (1 allocation; names outside `http`'s standard set allocate too), and per
//! response body read one copy (up to 16 KiB, `Bytes::copy_from_slice`)
//! that `h2` frames; the HTTP/1.1 request head is written into a pooled
//! buffer and the header spans live in the task (no allocation). Against the
//! HTTP/1.1 path (zero-copy splice, no allocation per request) that is
//! about a dozen small allocations and one body copy per stream: the price
//! of multiplexing. Routes without HTTP/2 clients pay nothing per request:
//! the preface check is a byte compare on a connection's first read; the
//! `poll-io` feature adds one idle poll op per io_uring worker (on the epoll
//! fd that watches poll-io sockets; it completes only when one is ready).
//!
//! ## Floods
//! `h2` bounds streams, resets, header lists and CONTINUATION runs itself;
//! it answers SETTINGS and PING and accepts PRIORITY and empty DATA frames
//! without limit, so [`wire`] counts those per connection
//! (`http2.frame_budget` per 10 s) and the driver closes a connection that
//! spends it with GOAWAY ENHANCE_YOUR_CALM. A stream whose client window
//! stays at zero is reset after `timeouts.response`.

mod answer;
mod body;
#[cfg(test)]
mod cost;
pub mod head;
mod proxy;
mod record;
pub mod server;
mod upstream;
pub mod wire;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use monoio::net::TcpStream;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Http2;
use crate::shared::{H2Counters, Live};
use crate::worker::{ConnGuard, WorkerCtx};

use proxy::ConnShared;
use server::End;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection's first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// The HTTP/2 preface.
    H2,
    /// A prefix of it: read more before deciding.
    Partial,
    /// Anything else (HTTP/1.x).
    Http1,
}

/// Whether `buf` (a new connection's first bytes) starts with the preface.
pub fn sniff(buf: &[u8]) -> Sniff {
    let n = buf.len().min(PREFACE.len());
    if buf[..n] != PREFACE[..n] {
        Sniff::Http1
    } else if n < PREFACE.len() {
        Sniff::Partial
    } else {
        Sniff::H2
    }
}

/// What the streams of a TLS connection need to know about its handshake.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// Index of the certificate the handshake chose.
    pub cert: usize,
    /// The client sent SNI.
    pub sni: bool,
    /// Access log fields: the protocol version and the SNI name.
    pub version: Option<&'static str>,
    pub sni_name: Option<Box<str>>,
    /// Subject of the verified client certificate (mTLS).
    pub client_subject: Option<String>,
}

/// Serves an HTTP/2 connection over TLS whose handshake chose ALPN `h2`
/// (`tls` holds the session; the client's preface is still to come, or
/// already decrypted in the session's stash).
#[allow(clippy::too_many_arguments)]
pub async fn serve_tls(
    ctx: Rc<WorkerCtx>,
    live: Arc<Live>,
    stream: TcpStream,
    tls: crate::tls::TlsConn,
    peer: SocketAddr,
    listen: SocketAddr,
    cfg: Http2,
    guard: ConnGuard,
) {
    let info = TlsInfo {
        cert: tls.cert,
        sni: tls.sni,
        version: tls.log_fields().0,
        sni_name: tls.sni_name.clone(),
        client_subject: tls.client_subject.clone(),
    };
    match stream.try_into_poll_io() {
        Ok(io) => {
            let io = crate::tls::stream::TlsStream::new(io, tls);
            let replay = Vec::new();
            serve_stream(ctx, live, io, peer, listen, cfg, replay, Some(info), guard).await
        }
        Err((e, _)) => tracing::debug!(%peer, "cannot switch to poll io: {e}"),
    }
}

/// Serves a cleartext HTTP/2 connection whose first bytes (`replay`, the
/// preface and whatever followed) were already read by the HTTP/1.1 reader.
#[allow(clippy::too_many_arguments)]
pub async fn serve_tcp(
    ctx: Rc<WorkerCtx>,
    live: Arc<Live>,
    stream: TcpStream,
    peer: SocketAddr,
    listen: SocketAddr,
    cfg: Http2,
    replay: Vec<u8>,
    guard: ConnGuard,
) {
    match stream.try_into_poll_io() {
        Ok(io) => serve_stream(ctx, live, io, peer, listen, cfg, replay, None, guard).await,
        Err((e, _)) => tracing::debug!(%peer, "cannot switch to poll io: {e}"),
    }
}

/// Serves an HTTP/2 connection on any stream (cleartext, or TLS after ALPN
/// chose `h2`; then `replay` is empty and `tls` says what the handshake chose).
#[allow(clippy::too_many_arguments)]
pub async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: Rc<WorkerCtx>,
    live: Arc<Live>,
    io: S,
    peer: SocketAddr,
    listen: SocketAddr,
    cfg: Http2,
    replay: Vec<u8>,
    tls: Option<TlsInfo>,
    guard: ConnGuard,
) {
    let counters = &ctx.shared.h2;
    H2Counters::add(&counters.connections);
    let shared = Rc::new(ConnShared {
        ctx: ctx.clone(),
        peer,
        peer_ip: peer.ip().to_string().into(),
        listen,
        tls,
        live: RefCell::new((ctx.generation(), live, None)),
        guard: RefCell::new(guard),
    });
    let stop = ctx.stopping.wait();
    let end = server::drive(io, replay, &cfg, stop, |req, respond, token| {
        monoio::spawn(proxy::stream(shared.clone(), req, respond, token));
    })
    .await;
    match &end {
        End::Closed | End::HandshakeTimeout => {}
        End::Idle => H2Counters::add(&counters.idle_closed),
        End::Calm => H2Counters::add(&counters.calm),
        End::FrameFlood => H2Counters::add(&counters.frame_flood),
        End::Error(e) if e.is_io() => {}
        End::Error(e) => {
            if e.is_go_away() || e.is_reset() || e.reason().is_some() {
                H2Counters::add(&counters.protocol_errors);
            }
        }
    }
    tracing::debug!(%peer, "h2 connection ended: {end:?}");
}
