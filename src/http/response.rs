//! The response side of an exchange: read response heads from the upstream
//! (forwarding interim 1xx), forward the final head rewritten for the client,
//! then its body by its framing; or forward a 101 and hand over to a tunnel.

use std::cell::Cell;
use std::time::Duration;

use monoio::time::Instant;

use crate::shared::RouteSlot;
use crate::sys;
use crate::worker::WorkerCtx;

use super::body::{BodyError, Pipe};
use super::chunked::ChunkedScanner;
use super::exchange::Scratch;
use super::head::{
    parse_response, HeadError, Limits, ResponseFraming, ResponseHead, Status, Version,
};
use super::io::Io;
use super::rewrite::{write_response, ResponseRewrite};

/// Response bodies at most this long that did not arrive with their head
/// are read into the head buffer instead of spliced (see `final_response`).
const SMALL_BODY_READ: u64 = 8 * 1024;

/// A backend slower than this to start its response gets the client watched
/// for an abort meanwhile (only then: the watch costs a readiness wait).
const WATCH_CLIENT_AFTER: Duration = Duration::from_millis(250);

/// Reads response bytes from `up`; with `watch`, gives up (`None`) when the
/// client closes before they come, like nginx's `proxy_ignore_client_abort off`.
/// The upstream read in flight is then dropped with the exchange (the
/// runtime keeps its buffer until the kernel is done with it) and the
/// upstream connection is closed, never pooled.
async fn read_watching(
    client: &Io<'_>,
    up: &mut Io<'_>,
    buf: &mut Vec<u8>,
    room: usize,
    deadline: Instant,
    watch: bool,
) -> Option<std::io::Result<usize>> {
    let read = up.read(buf, room, deadline);
    let mut read = std::pin::pin!(read);
    if !watch {
        return Some(read.await);
    }
    monoio::select! {
        r = &mut read => return Some(r),
        _ = monoio::time::sleep(WATCH_CLIENT_AFTER) => {}
    }
    monoio::select! {
        r = &mut read => Some(r),
        _ = client_gone(client.stream()) => None,
    }
}

/// Resolves when the client closes or resets its connection. Bytes it sends
/// meanwhile (a pipelined request) are left queued, and the watch ends
/// without resolving: the client is evidently still there.
async fn client_gone(s: &monoio::net::TcpStream) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(s);
    let mut probe = [0u8; 1];
    loop {
        if s.readable(false).await.is_err() {
            return;
        }
        match sys::recv_peek(fd, &mut probe) {
            Ok(0) => return,
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
    std::future::pending::<()>().await
}

/// Where the upload of a request body stands (the download decides with it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Upload {
    Running,
    Done,
    Failed,
}

/// How a response download ended well.
pub(super) enum DownEnd {
    Done {
        /// The upstream connection may carry another request.
        upstream_ok: bool,
        /// The response told the client we close.
        close_client: bool,
    },
    /// A 101 was forwarded: the connections become a tunnel.
    Upgraded,
}

/// Why a response download failed.
#[derive(Debug)]
pub(super) enum DownError {
    /// The upstream failed before sending a byte: safe to retry an idempotent
    /// request on a fresh connection when this one came from the pool.
    Early(std::io::Error),
    /// No response head within `timeouts.response`.
    Timeout,
    /// The response head is malformed.
    Bad(HeadError),
    /// The upstream failed after its response began.
    Backend(BodyError),
    /// Writing to the client failed.
    Client(std::io::Error),
}

/// Response side of an exchange: what it needs to know about the request.
pub(super) struct Down<'a> {
    pub ctx: &'a WorkerCtx,
    pub slot: &'a RouteSlot,
    pub method: &'static [u8],
    pub client_version: Version,
    /// The client may keep the connection after this response.
    pub client_keep: bool,
    /// An upgrade was forwarded: a 101 may come back.
    pub upgrade: bool,
    /// timeouts.response: wait for the head, and longest stall in the body.
    pub stall: Duration,
    /// Set once the final (or 101) response head went to the client.
    pub started: &'a Cell<bool>,
    /// TLS routes with `hsts`: the Strict-Transport-Security value to add.
    pub hsts: Option<&'a str>,
}

/// Response body bytes still in the upstream socket after the buffered prefix.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyRest {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

impl Down<'_> {
    /// Reads response heads (forwarding interim 1xx) until the final one,
    /// forwards it and its body. `upload` is the concurrent upload's state,
    /// `None` when the request was sent completely before.
    pub(super) async fn run<'s>(
        &self,
        s: &mut Scratch,
        client: &mut Io<'s>,
        up: &mut Io<'s>,
        upload: Option<&Cell<Upload>>,
    ) -> Result<DownEnd, DownError> {
        let limits = Limits::default();
        let mut seen = !s.ubuf.is_empty();
        loop {
            let head = loop {
                if !s.ubuf.is_empty() {
                    seen = true;
                    super::exchange::ensure_spans(&mut s.spans);
                    match parse_response(&s.ubuf, &mut s.spans, &limits, self.method) {
                        Ok(Status::Complete(h)) => break h,
                        Ok(Status::Partial) => {}
                        Err(e) => return Err(DownError::Bad(e)),
                    }
                }
                let room = limits.max_head.saturating_sub(s.ubuf.len());
                if room == 0 {
                    return Err(DownError::Bad(HeadError::TooLarge));
                }
                let deadline = Instant::now() + self.stall;
                let fail = |e: std::io::Error| {
                    if seen {
                        DownError::Backend(BodyError::Src(e))
                    } else {
                        DownError::Early(e)
                    }
                };
                // Waiting for a slow backend, watch the client too (unless a
                // concurrent upload is reading it): a client that gives up
                // ends the exchange now, not at `timeouts.response`.
                let watch = upload.is_none() && !seen;
                let got = match read_watching(client, up, &mut s.ubuf, room, deadline, watch).await
                {
                    Some(r) => r,
                    None => {
                        return Err(DownError::Client(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "client closed while waiting for the response",
                        )))
                    }
                };
                match got {
                    Ok(0) => {
                        return Err(fail(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "closed before a complete response head",
                        )))
                    }
                    Ok(_) => s.log.first_byte(),
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        // The response clock starts once the request is sent.
                        if upload.is_some_and(|u| u.get() == Upload::Running) {
                            continue;
                        }
                        return Err(DownError::Timeout);
                    }
                    Err(e) => return Err(fail(e)),
                }
            };
            let hl = head.head_len;
            if head.is_interim() {
                // 1xx is not for HTTP/1.0 clients (RFC 9110 §15.2).
                if self.client_version == Version::Http11 {
                    s.out.clear();
                    write_response(
                        &mut s.out,
                        &s.ubuf,
                        &head,
                        &s.spans,
                        &ResponseRewrite {
                            client_version: self.client_version,
                            close_client: false,
                            forward_upgrade: false,
                        },
                    );
                    self.send(client, &mut s.out, false).await?;
                }
                s.ubuf.drain(..hl.min(s.ubuf.len()));
                continue;
            }
            if head.is_switching_protocols() {
                if !self.upgrade {
                    return Err(DownError::Bad(HeadError::Bad(
                        "101 to a request without upgrade",
                    )));
                }
                s.out.clear();
                write_response(
                    &mut s.out,
                    &s.ubuf,
                    &head,
                    &s.spans,
                    &ResponseRewrite {
                        client_version: self.client_version,
                        close_client: false,
                        forward_upgrade: true,
                    },
                );
                // Bytes after the 101 already belong to the upgraded protocol
                // (a gateway session walks them as frames first).
                let after = s.ubuf.get(hl..).unwrap_or(&[]);
                match s.gw.as_deref_mut() {
                    Some(p) => {
                        crate::gateway::handshake::take_binding(&mut s.out, p);
                        p.early.extend_from_slice(after);
                    }
                    None => s.out.extend_from_slice(after),
                }
                s.ubuf.clear();
                s.log.status = 101;
                self.send(client, &mut s.out, true).await?;
                s.log.bytes_out += s.out.len() as u64;
                return Ok(DownEnd::Upgraded);
            }
            return self.final_response(s, client, up, &head, upload).await;
        }
    }

    /// Forwards a final (non-1xx) response head and its body.
    async fn final_response<'s>(
        &self,
        s: &mut Scratch,
        client: &mut Io<'s>,
        up: &mut Io<'s>,
        head: &ResponseHead,
        upload: Option<&Cell<Upload>>,
    ) -> Result<DownEnd, DownError> {
        if let Some(plan) = s.filter.edits.compress.take() {
            let http11 = self.client_version == Version::Http11;
            if s.filter.chain.is_some()
                && crate::filter::compress::applies(&plan, head, &s.ubuf, &s.spans, http11)
            {
                // Boxed: the encoder's state stays out of every response's future.
                return Box::pin(self.compressed(s, client, up, head, upload, plan)).await;
            }
        }
        let hl = head.head_len;
        let avail = s.ubuf.len().saturating_sub(hl);
        let mut scanner = ChunkedScanner::new();
        // Check buffered chunk framing before anything reaches the client.
        let (prefix, rest) = match head.framing {
            ResponseFraming::None => (0, BodyRest::None),
            ResponseFraming::Length(n) => {
                let p = n.min(avail as u64);
                let rest = if n > p {
                    BodyRest::Length(n - p)
                } else {
                    BodyRest::None
                };
                (p as usize, rest)
            }
            ResponseFraming::Chunked => match scanner.advance(s.ubuf.get(hl..).unwrap_or(&[])) {
                Ok(p) if p.done => (p.consumed, BodyRest::None),
                Ok(p) => (p.consumed, BodyRest::Chunked),
                Err(e) => return Err(DownError::Backend(BodyError::Framing(e))),
            },
            ResponseFraming::UntilClose => (avail, BodyRest::UntilClose),
            // Only a 2xx to CONNECT, which is refused before it gets here.
            ResponseFraming::Tunnel => {
                return Err(DownError::Bad(HeadError::Bad("tunnel response")))
            }
        };
        // A short body that trails its head (nginx writes the head, then
        // sendfile()s the body: two segments) is read into the buffer so
        // head and body leave in one write: two splices, a readiness wait
        // and a TCP segment to the client fewer per small response.
        let (prefix, rest) = match rest {
            BodyRest::Length(n) if n <= SMALL_BODY_READ => {
                let want = hl + prefix + n as usize;
                while s.ubuf.len() < want {
                    let deadline = Instant::now() + self.stall;
                    let room = want - s.ubuf.len();
                    match up.read(&mut s.ubuf, room, deadline).await {
                        Ok(0) => {
                            return Err(DownError::Backend(BodyError::Src(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "closed inside the response body",
                            ))))
                        }
                        Ok(_) => {}
                        Err(e) => return Err(DownError::Backend(BodyError::Src(e))),
                    }
                }
                (prefix + n as usize, BodyRest::None)
            }
            other => (prefix, other),
        };
        let avail = s.ubuf.len().saturating_sub(hl);
        let upload_ok = upload.is_none_or(|u| u.get() == Upload::Done);
        let close_client = !self.client_keep
            || self.ctx.stopping.is_set()
            || head.conflicting_framing
            || rest == BodyRest::UntilClose
            || !upload_ok;
        s.out.clear();
        write_response(
            &mut s.out,
            &s.ubuf,
            head,
            &s.spans,
            &ResponseRewrite {
                client_version: self.client_version,
                close_client,
                forward_upgrade: false,
            },
        );
        if let Some(v) = self.hsts {
            // Before the blank line that ends the head.
            s.out.truncate(s.out.len().saturating_sub(2));
            s.out.extend_from_slice(b"Strict-Transport-Security: ");
            s.out.extend_from_slice(v.as_bytes());
            s.out.extend_from_slice(b"\r\n\r\n");
        }
        if let Some(chain) = &s.filter.chain {
            let e = &mut s.filter.edits;
            chain.response(head.status, e);
            crate::filter::edit::apply(&mut s.out, 0, e.response_removed(), &e.resp_add);
        }
        s.out
            .extend_from_slice(s.ubuf.get(hl..hl + prefix).unwrap_or(&[]));
        let mut leftover = avail - prefix;
        s.log.status = head.status;
        self.send(client, &mut s.out, true).await?;
        s.log.bytes_out += s.out.len() as u64;

        let mut pipe = Pipe {
            pipes: &self.ctx.pipes,
            src: up,
            dst: client,
            stall: self.stall,
        };
        let moved = match rest {
            BodyRest::None => Ok(0),
            BodyRest::Length(n) => pipe.length(n).await.map(|()| n),
            BodyRest::Chunked => {
                let r = pipe.chunked(&mut scanner, &mut s.ubuf).await;
                leftover = s.ubuf.len();
                r
            }
            BodyRest::UntilClose => pipe.until_close().await,
        };
        match moved {
            Ok(n) => {
                self.slot.bytes_out.add(n);
                s.log.bytes_out += n;
            }
            Err(BodyError::Dst(e)) => return Err(DownError::Client(e)),
            Err(e) => return Err(DownError::Backend(e)),
        }
        s.ubuf.clear();
        Ok(DownEnd::Done {
            // Stray bytes after the body: the backend's framing is off.
            upstream_ok: head.keep_alive && leftover == 0 && rest != BodyRest::UntilClose,
            close_client,
        })
    }

    /// Writes `out` to the client. A final (or 101) head marks the response
    /// as started: after it, a failure can only close the connection; after
    /// an interim 1xx a proxy error response can still follow.
    pub(super) async fn send(
        &self,
        client: &mut Io<'_>,
        out: &mut Vec<u8>,
        final_head: bool,
    ) -> Result<(), DownError> {
        if final_head {
            self.started.set(true);
        }
        let len = out.len();
        client
            .write_all(out, 0..len, self.stall)
            .await
            .map_err(DownError::Client)?;
        self.slot.bytes_out.add(len as u64);
        Ok(())
    }
}
