//! A compressed response (`compress` middleware): the head rewritten for
//! the new coding, the body read from the backend by its framing (chunked
//! framing decoded), run through the encoder and written to the client in
//! chunks. Unlike every other body, it passes through the worker: it
//! cannot be spliced.

use std::io;

use monoio::time::Instant;

use crate::filter::compress::{self, Encoder, Plan};

use super::body::BodyError;
use super::chunked::ChunkedScanner;
use super::exchange::Scratch;
use super::head::{ResponseFraming, ResponseHead};
use super::io::Io;
use super::response::{Down, DownEnd, DownError, Upload};
use super::rewrite::{write_response, ResponseRewrite};

/// Compressed output collected before it goes out as one chunk.
const FLUSH_AT: usize = 16 * 1024;

fn src_err(e: io::Error) -> DownError {
    DownError::Backend(BodyError::Src(e))
}

fn eof() -> DownError {
    src_err(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "closed inside the response body",
    ))
}

impl Down<'_> {
    /// Forwards the final response `head` (parsed from `s.ubuf`) with its
    /// body compressed under `plan`.
    pub(super) async fn compressed<'s>(
        &self,
        s: &mut Scratch,
        client: &mut Io<'s>,
        up: &mut Io<'s>,
        head: &ResponseHead,
        upload: Option<&std::cell::Cell<Upload>>,
        plan: Plan,
    ) -> Result<DownEnd, DownError> {
        let upload_ok = upload.is_none_or(|u| u.get() == Upload::Done);
        let until_close = head.framing == ResponseFraming::UntilClose;
        let close_client = !self.client_keep
            || self.ctx.stopping.is_set()
            || head.conflicting_framing
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
        let mut lines = Vec::with_capacity(96);
        compress::head_lines(&plan, head, &s.ubuf, &s.spans, &mut lines);
        crate::filter::edit::apply(&mut s.out, 0, &compress::head_removed(), &lines);
        s.log.status = head.status;
        self.send(client, &mut s.out, true).await?;
        s.log.bytes_out += s.out.len() as u64;

        let mut enc =
            Encoder::new(plan.encoding).map_err(|e| DownError::Backend(BodyError::Src(e)))?;
        let mut zout: Vec<u8> = Vec::with_capacity(FLUSH_AT);
        // The body bytes after the head, then reads.
        s.ubuf.drain(..head.head_len.min(s.ubuf.len()));
        let mut left = match head.framing {
            ResponseFraming::Length(n) => n,
            _ => u64::MAX,
        };
        let mut scanner = ChunkedScanner::new();
        let chunked = head.framing == ResponseFraming::Chunked;
        let mut leftover = 0usize;
        let mut data = Vec::new();
        loop {
            // Take the body's bytes out of `s.ubuf` into `data`.
            data.clear();
            let mut used = 0;
            if chunked {
                let input = s.ubuf.as_slice();
                while used < input.len() && !scanner.is_done() {
                    let r = scanner.data_remaining();
                    if r > 0 {
                        let n = (r.min((input.len() - used) as u64)) as usize;
                        data.extend_from_slice(&input[used..used + n]);
                        scanner.consume_data(n as u64);
                        used += n;
                    } else {
                        scanner
                            .advance(&input[used..used + 1])
                            .map_err(|e| DownError::Backend(BodyError::Framing(e)))?;
                        used += 1;
                    }
                }
            } else {
                let n = (s.ubuf.len() as u64).min(left) as usize;
                data.extend_from_slice(&s.ubuf[..n]);
                used = n;
                if left != u64::MAX {
                    left -= n as u64;
                }
            }
            s.ubuf.drain(..used);
            enc.push(&data, &mut zout).map_err(src_err)?;
            let done = if chunked {
                scanner.is_done()
            } else {
                left == 0
            };
            if done {
                leftover = s.ubuf.len();
                break;
            }
            if zout.len() >= FLUSH_AT {
                self.chunk(client, s, &mut zout).await?;
            }
            let deadline = Instant::now() + self.stall;
            match up.read(&mut s.ubuf, 32 * 1024, deadline).await {
                Ok(0) if until_close => break,
                Ok(0) => return Err(eof()),
                Ok(_) => {}
                Err(e) => return Err(src_err(e)),
            }
        }
        enc.finish(&mut zout).map_err(src_err)?;
        self.chunk(client, s, &mut zout).await?;
        s.out.clear();
        s.out.extend_from_slice(b"0\r\n\r\n");
        self.send(client, &mut s.out, false).await?;
        s.log.bytes_out += 5;
        s.ubuf.clear();
        Ok(DownEnd::Done {
            upstream_ok: head.keep_alive && leftover == 0 && !until_close,
            close_client,
        })
    }

    /// Writes `z` (compressed bytes) as one chunk and empties it.
    async fn chunk(
        &self,
        client: &mut Io<'_>,
        s: &mut Scratch,
        z: &mut Vec<u8>,
    ) -> Result<(), DownError> {
        if z.is_empty() {
            return Ok(());
        }
        use std::io::Write as _;
        s.out.clear();
        let _ = write!(s.out, "{:x}\r\n", z.len());
        s.out.extend_from_slice(z);
        s.out.extend_from_slice(b"\r\n");
        z.clear();
        self.send(client, &mut s.out, false).await?;
        s.log.bytes_out += s.out.len() as u64;
        Ok(())
    }
}
