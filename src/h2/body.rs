//! A response body on its way to an HTTP/2 client: read from the HTTP/1.1
//! upstream (by length, chunked with trailers, or until close) and sent as
//! DATA frames under the client's flow control ([`send_flow`], shared with
//! the h2c forwarding of `upstream`).

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use h2::{Reason, SendStream};
use monoio::time::Instant;

use crate::http::chunked::ChunkedScanner;
use crate::http::io::Io;
use crate::shared::H2Counters;
use crate::worker::WorkerCtx;

use super::head as h2head;
use super::proxy::{Exchange, Fail, READ_CHUNK};

/// The response body on its way to the client.
pub(super) struct BodyOut<'a, 'x, 's> {
    pub(super) ex: &'a Exchange<'x>,
    pub(super) us: &'a mut Io<'s>,
    pub(super) tx: &'a mut SendStream<Bytes>,
}

impl BodyOut<'_, '_, '_> {
    /// Reads more body bytes into `buf`; EOF is an error unless `eof_ok`.
    pub(super) async fn read(
        &mut self,
        buf: &mut Vec<u8>,
        max: usize,
        eof_ok: bool,
    ) -> Result<usize, Fail> {
        let deadline = Instant::now() + self.ex.stall;
        match self.us.read(buf, max, deadline).await {
            Ok(0) if !eof_ok => Err(Fail::Late),
            Ok(n) => Ok(n),
            Err(_) => Err(Fail::Late),
        }
    }

    /// Sends `data` as DATA frames as the client's window allows. A window
    /// stuck at zero for `timeouts.response` resets the stream.
    pub(super) async fn send(&mut self, data: Bytes, end: bool) -> Result<(), Fail> {
        self.ex.slot.bytes_out.add(data.len() as u64);
        self.ex.rec.bytes_out(data.len() as u64);
        send_flow(self.tx, data, end, self.ex.stall, self.ex.ctx)
            .await
            .map_err(|()| Fail::Client)
    }

    pub(super) async fn finish(&mut self, trailers: Option<http::HeaderMap>) -> Result<(), Fail> {
        match trailers {
            Some(t) if !t.is_empty() => self.tx.send_trailers(t).map_err(|_| Fail::Client),
            _ => self
                .tx
                .send_data(Bytes::new(), true)
                .map_err(|_| Fail::Client),
        }
    }

    /// A body of `n` bytes, `first` of which came with the head.
    pub(super) async fn length(
        &mut self,
        first: Bytes,
        buf: &mut Vec<u8>,
        n: u64,
    ) -> Result<bool, Fail> {
        let mut left = n;
        if !first.is_empty() {
            let take = (first.len() as u64).min(left) as usize;
            left -= take as u64;
            let stray = first.len() > take;
            self.send(first.slice(..take), left == 0).await?;
            if left == 0 {
                return Ok(!stray);
            }
        }
        loop {
            if !buf.is_empty() {
                let take = (buf.len() as u64).min(left) as usize;
                left -= take as u64;
                let chunk = Bytes::copy_from_slice(&buf[..take]);
                let stray = buf.len() > take;
                buf.clear();
                self.send(chunk, left == 0).await?;
                if left == 0 {
                    return Ok(!stray);
                }
            }
            let max = (left as usize).min(READ_CHUNK);
            self.read(buf, max, false).await?;
        }
    }

    pub(super) async fn until_close(&mut self, buf: &mut Vec<u8>) -> Result<(), Fail> {
        loop {
            if !buf.is_empty() {
                let chunk = Bytes::copy_from_slice(buf);
                buf.clear();
                self.send(chunk, false).await?;
            }
            if self.read(buf, READ_CHUNK, true).await? == 0 {
                return self.finish(None).await;
            }
        }
    }

    /// Decodes a chunked body: chunk data goes out as DATA, the trailer
    /// section as HTTP/2 trailers. The scanner checks the framing.
    pub(super) async fn chunked(&mut self, buf: &mut Vec<u8>) -> Result<bool, Fail> {
        let mut scanner = ChunkedScanner::new();
        let mut trailer = Vec::new();
        let mut pos = 0usize;
        loop {
            if scanner.is_done() {
                let stray = pos < buf.len();
                buf.clear();
                let t = (!trailer.is_empty()).then(|| h2head::trailers(&trailer));
                self.finish(t).await?;
                return Ok(!stray);
            }
            let rem = scanner.data_remaining();
            if rem > 0 && pos < buf.len() {
                let n = (rem.min((buf.len() - pos) as u64)) as usize;
                let chunk = Bytes::copy_from_slice(&buf[pos..pos + n]);
                scanner.consume_data(n as u64);
                pos += n;
                self.send(chunk, false).await?;
                continue;
            }
            if rem == 0 && pos < buf.len() {
                let in_trailers = scanner.in_trailers();
                scanner
                    .advance(&buf[pos..pos + 1])
                    .map_err(|_| Fail::Late)?;
                if in_trailers {
                    trailer.push(buf[pos]);
                }
                pos += 1;
                continue;
            }
            buf.clear();
            pos = 0;
            let want = if rem > 0 {
                (rem as usize).min(READ_CHUNK)
            } else {
                READ_CHUNK
            };
            self.read(buf, want, false).await?;
        }
    }
}

/// Sends `data` on `tx` as DATA frames as the peer's window allows. A
/// window stuck at zero for `stall` resets the stream (counted in the h2
/// `stalled` counter). The stall is watched by the worker's coarse timers
/// (a 24-byte sleep, armed only when the window is shut, 100 ms resolution
/// on a timeout of seconds): the runtime's `Sleep` is 640 bytes, and polled
/// first by a `select!` it would be armed for every DATA frame.
pub(super) async fn send_flow(
    tx: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
    stall: Duration,
    ctx: &WorkerCtx,
) -> Result<(), ()> {
    if data.is_empty() {
        return if end {
            tx.send_data(data, true).map_err(|_| ())
        } else {
            Ok(())
        };
    }
    while !data.is_empty() {
        tx.reserve_capacity(data.len());
        let deadline = ctx.now_ms().saturating_add(stall.as_millis() as u64);
        let mut sleep = ctx.timers.sleep_until(deadline);
        let cap = std::future::poll_fn(|cx| {
            match tx.poll_capacity(cx) {
                Poll::Ready(Some(Ok(0))) | Poll::Pending => {}
                Poll::Ready(other) => return Poll::Ready(Some(other)),
            }
            std::pin::Pin::new(&mut sleep).poll(cx).map(|()| None)
        })
        .await;
        let cap = match cap {
            Some(Some(Ok(c))) => c,
            Some(_) => return Err(()),
            None => {
                H2Counters::add(&ctx.shared.h2.stalled);
                tx.send_reset(Reason::CANCEL);
                return Err(());
            }
        };
        let part = data.split_to(cap.min(data.len()));
        let last = end && data.is_empty();
        tx.send_data(part, last).map_err(|_| ())?;
    }
    Ok(())
}
