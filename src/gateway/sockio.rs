//! Non-blocking socket helpers of a session: complete sends with a stall
//! bound, the lingering read after a close (split from `session.rs`), and
//! the client side as plain TCP or a TLS session ([`ClientIo`]).

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use monoio::net::TcpStream;

use crate::http::buf::BUF_SIZE;
use crate::sys;
use crate::tls::TlsConn;
use crate::worker::WorkerCtx;

/// The client side of a session: the socket, and the TLS session over it
/// for `wss://` clients (then frames are walked in the decrypted stream and
/// nothing is spliced: the record layer must see every byte).
///
/// Every wait here is a readiness wait plus the worker's coarse timers (no
/// runtime `Sleep` in the session's task), and a TLS client's record
/// buffers go back to the worker's free list before each read wait, so an
/// idle `wss://` session holds only rustls's state.
#[derive(Clone, Copy)]
pub struct ClientIo<'a> {
    pub stream: &'a TcpStream,
    pub tls: Option<&'a RefCell<TlsConn>>,
}

impl ClientIo<'_> {
    /// Whether payloads may move with splice(2) (plain TCP only).
    pub(super) fn splices(&self) -> bool {
        self.tls.is_none()
    }

    /// Sends all of `data` (encrypted for a TLS client) without waiting if
    /// the socket takes it; see [`send_all`].
    pub(super) async fn send_all(
        &self,
        ctx: &WorkerCtx,
        data: &[u8],
        stall: Duration,
    ) -> io::Result<()> {
        let mut pos = 0;
        if self.send_now(data, &mut pos)? {
            return Ok(());
        }
        Box::pin(self.send_rest(ctx, data, pos, stall)).await
    }

    fn send_now(&self, data: &[u8], pos: &mut usize) -> io::Result<bool> {
        let fd = self.stream.as_raw_fd();
        match self.tls {
            None => send_now(fd, data, pos),
            Some(t) => crate::tls::session::write_now(fd, t, data, pos),
        }
    }

    /// The socket was full: waits for room (at most `stall` each time).
    async fn send_rest(
        &self,
        ctx: &WorkerCtx,
        data: &[u8],
        mut pos: usize,
        stall: Duration,
    ) -> io::Result<()> {
        loop {
            let deadline = ctx.now_ms() + stall.as_millis() as u64;
            monoio::select! {
                r = self.stream.writable(false) => r?,
                _ = ctx.timers.sleep_until(deadline) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "client stalled"))
                }
            }
            if self.send_now(data, &mut pos)? {
                return Ok(());
            }
        }
    }

    /// Reads what the client sent (decrypted for a TLS client) into `buf`,
    /// taken from the worker's pool here and given back on EOF and errors
    /// (`WouldBlock` included: then wait for readiness). `Ok(0)` is EOF.
    pub(super) fn recv_now(&self, ctx: &WorkerCtx, buf: &mut Vec<u8>) -> io::Result<usize> {
        if buf.capacity() == 0 {
            *buf = ctx.bufs.take();
        }
        let fd = self.stream.as_raw_fd();
        let r = match self.tls {
            None => sys::recv_append(fd, buf, BUF_SIZE),
            Some(t) => crate::tls::session::read_now(fd, t, buf, BUF_SIZE),
        };
        if !matches!(r, Ok(n) if n > 0) {
            ctx.bufs.put(std::mem::take(buf));
        }
        r
    }

    /// After ringmesh's close frame: close_notify for a TLS client (best
    /// effort within `stall`), then FIN, then the lingering read.
    pub(super) async fn close(&self, ctx: &WorkerCtx, stall: Duration) {
        if let Some(t) = self.tls {
            if t.borrow_mut().queue_close() {
                let _ = self.send_all(ctx, &[], stall).await;
            }
        }
        let _ = sys::shutdown_write(self.stream.as_raw_fd());
        linger(ctx, self).await;
    }
}

pub(super) fn retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Sends `data[*pos..]` as far as the socket takes it now: true when all
/// of it went.
fn send_now(fd: RawFd, data: &[u8], pos: &mut usize) -> io::Result<bool> {
    while *pos < data.len() {
        match sys::send(fd, &data[*pos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// After our close frame and FIN: read and discard until the client closes
/// too (at most 1 s, 4 MiB), so the close frame is not lost to a RST. A TLS
/// client's bytes go through the record layer (the up direction may read the
/// same socket meanwhile: raw reads here would tear its records).
async fn linger(ctx: &WorkerCtx, c: &ClientIo<'_>) {
    let deadline = ctx.now_ms() + 1_000;
    let fd = c.stream.as_raw_fd();
    let mut buf = ctx.bufs.take();
    let mut total = 0usize;
    while total < 4 << 20 {
        buf.clear();
        let r = match c.tls {
            None => sys::recv_append(fd, &mut buf, BUF_SIZE),
            Some(t) => crate::tls::session::read_now(fd, t, &mut buf, BUF_SIZE),
        };
        match r {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if retry(&e) => {
                monoio::select! {
                    r = c.stream.readable(false) => if r.is_err() { break },
                    _ = ctx.timers.sleep_until(deadline) => break,
                }
            }
            Err(_) => break,
        }
    }
    ctx.bufs.put(buf);
}
