//! HTTP/1.1 reverse proxy.
//!
//! The pure core (no sockets, no runtime): [`head`] parses and checks heads,
//! [`rewrite`] writes the forwarded heads, [`chunked`] scans chunked framing,
//! [`respond`] holds the responses the proxy generates itself.

pub mod chunked;
pub mod head;
pub mod respond;
pub mod rewrite;
