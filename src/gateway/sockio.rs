//! Non-blocking socket helpers of a session: complete sends with a stall
//! bound, the lingering read after a close (split from `session.rs`).

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use monoio::net::TcpStream;

use crate::http::buf::BUF_SIZE;
use crate::sys;
use crate::worker::WorkerCtx;

pub(super) fn retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Writes `data` completely with non-blocking sends; `TimedOut` when the
/// peer takes nothing for `stall`.
///
/// The stall is kept by the worker's coarse timers, not a runtime `Sleep`
/// (512 bytes that would sit in every idle session's task).
pub(super) async fn send_all(
    ctx: &WorkerCtx,
    s: &TcpStream,
    data: &[u8],
    stall: Duration,
) -> io::Result<()> {
    let fd = s.as_raw_fd();
    let mut pos = 0;
    while pos < data.len() {
        match sys::send(fd, &data[pos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let deadline = ctx.now_ms() + stall.as_millis() as u64;
                monoio::select! {
                    r = s.writable(false) => r?,
                    _ = ctx.timers.sleep_until(deadline) => {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "client stalled"))
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// After our close frame and FIN: read and discard until the client closes
/// too (at most 1 s, 4 MiB), so the close frame is not lost to a RST.
pub(super) async fn linger(ctx: &WorkerCtx, s: &TcpStream) {
    let deadline = ctx.now_ms() + 1_000;
    let mut buf = ctx.bufs.take();
    let mut total = 0usize;
    while total < 4 << 20 {
        buf.clear();
        match sys::recv_append(s.as_raw_fd(), &mut buf, BUF_SIZE) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if retry(&e) => {
                monoio::select! {
                    r = s.readable(false) => if r.is_err() { break },
                    _ = ctx.timers.sleep_until(deadline) => break,
                }
            }
            Err(_) => break,
        }
    }
    ctx.bufs.put(buf);
}
