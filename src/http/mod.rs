//! HTTP/1.1 reverse proxy: per client connection, heads are parsed and
//! rewritten, each request is routed by Host to a route, forwarded over a
//! pooled keep-alive upstream connection, and both bodies stream through.
//!
//! The pure core (no sockets, no runtime): [`head`] parses and checks heads,
//! [`rewrite`] writes the forwarded heads, [`chunked`] scans chunked framing,
//! [`respond`] holds the responses the proxy generates itself.
//!
//! The data plane: [`conn`] (a client connection: head reads, limits,
//! keep-alive, lingering close), `exchange` (one request/response: route,
//! upstream, request body, errors), `response` (heads, 1xx, response body),
//! `upgrade` (101 -> tunnel), `tls_edge` (421, redirect to https, client
//! certificate subject), [`body`] (splice and chunked pass-through; copies
//! through a record buffer when the client speaks TLS),
//! [`io`] (reads/writes with deadlines on io_uring, readiness, or TLS),
//! [`upstream`] (the per-worker idle connection pool), [`buf`] (the
//! per-worker buffer pool).

pub mod body;
pub mod buf;
pub mod chunked;
mod compress;
pub mod conn;
mod exchange;
pub mod head;
pub mod io;
pub mod respond;
mod response;
pub mod rewrite;
mod tls_edge;
mod upgrade;
pub mod upstream;

pub use conn::serve;
