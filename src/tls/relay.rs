//! Two connections joined both ways when at least one side speaks TLS: the
//! tunnel of tcp routes on TLS listeners or to TLS backends (termination,
//! origination, or both: re-encryption), and of upgraded (WebSocket)
//! connections with TLS on either side. Splice cannot move TLS records'
//! plaintext, so bytes go through one record-sized buffer per direction,
//! taken from the worker's free list while bytes move (not while the
//! tunnel idles). Two plain
//! sockets never come here: they keep the splice tunnel.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use monoio::net::TcpStream;
use monoio::time::Instant;

use super::bufs;
use super::session::{self, TlsConn};
use crate::proxy::splice::Meter;
use crate::sys;

/// How a relay ended (besides both sides closing).
#[derive(Debug)]
pub enum RelayEnd {
    Idle,
    Client(io::Error),
    Backend(io::Error),
}

/// One side of a relay.
#[derive(Clone, Copy)]
pub enum End<'a> {
    Plain(&'a TcpStream),
    Tls(&'a TcpStream, &'a RefCell<TlsConn>),
}

impl<'a> End<'a> {
    /// `tls` given: the socket's bytes are that session's records.
    pub fn new(s: &'a TcpStream, tls: Option<&'a RefCell<TlsConn>>) -> End<'a> {
        match tls {
            Some(t) => End::Tls(s, t),
            None => End::Plain(s),
        }
    }

    /// Appends what is there (plaintext) to `buf`, up to its capacity,
    /// without waiting: `Ok(0)` at EOF, `WouldBlock` when nothing is.
    fn read_now(self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let room = buf.capacity() - buf.len();
        match self {
            End::Tls(s, t) => session::read_now(s.as_raw_fd(), t, buf, room),
            End::Plain(s) => sys::recv_append(s.as_raw_fd(), buf, room),
        }
    }

    /// Waits until the socket is readable; `TimedOut` at `deadline`.
    async fn readable(self, deadline: Instant) -> io::Result<()> {
        match self {
            End::Tls(s, _) | End::Plain(s) => session::readable(s, deadline).await,
        }
    }

    /// Gives a TLS session's empty record buffers back to the worker.
    fn release(self) {
        if let End::Tls(_, t) = self {
            t.borrow_mut().release();
        }
    }

    async fn write_all(self, data: &[u8], stall: Duration) -> io::Result<()> {
        match self {
            End::Tls(s, t) => session::write_all(s, t, data, stall).await,
            End::Plain(s) => send_all(s, data, stall).await,
        }
    }

    /// Passes an EOF on: close_notify over TLS, a half-close on TCP.
    async fn close(self) {
        match self {
            End::Tls(s, t) => session::close(s, t, Duration::from_secs(5)).await,
            End::Plain(s) => {
                let _ = sys::shutdown_write(s.as_raw_fd());
            }
        }
    }
}

/// Forwards both ways until both sides closed (each close is passed on),
/// an error, or `idle` without a byte either way.
pub async fn relay<M: Meter>(
    meter: &M,
    client: End<'_>,
    up: End<'_>,
    idle: Duration,
) -> Result<(), RelayEnd> {
    let last = Cell::new(Instant::now());
    let upward = pump(meter, client, up, true, &last, idle);
    let downward = pump(meter, up, client, false, &last, idle);
    let (mut upward, mut downward) = (std::pin::pin!(upward), std::pin::pin!(downward));
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        monoio::select! {
            r = &mut upward, if !up_done => { r?; up_done = true; }
            r = &mut downward, if !down_done => { r?; down_done = true; }
        }
    }
    Ok(())
}

/// One direction: reads from `src`, writes to `dst`, passes the EOF on.
async fn pump<M: Meter>(
    meter: &M,
    src: End<'_>,
    dst: End<'_>,
    upward: bool,
    last: &Cell<Instant>,
    idle: Duration,
) -> Result<(), RelayEnd> {
    let deadline = || last.get() + idle;
    type Side = fn(io::Error) -> RelayEnd;
    let (src_err, dst_err): (Side, Side) = if upward {
        (RelayEnd::Client, RelayEnd::Backend)
    } else {
        (RelayEnd::Backend, RelayEnd::Client)
    };
    // A direction waits holding no buffer: an idle tunnel keeps its
    // sockets and TLS state only (each buffer is 18.5 KiB, and a TLS
    // session's outgoing one 66 KiB); the buffer comes back from the
    // worker's free list when bytes arrive.
    let mut buf = Vec::new();
    let r = async {
        loop {
            if buf.capacity() == 0 {
                buf = bufs::take_in();
            }
            buf.clear();
            let n = match src.read_now(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    bufs::put_in(std::mem::take(&mut buf));
                    src.release();
                    dst.release();
                    match src.readable(deadline()).await {
                        Ok(()) => continue,
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                            if Instant::now() >= deadline() {
                                break Err(RelayEnd::Idle);
                            }
                            continue;
                        }
                        Err(e) => break Err(src_err(e)),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(src_err(e)),
            };
            last.set(Instant::now());
            dst.write_all(&buf[..n], idle).await.map_err(dst_err)?;
            meter.moved(upward, n as u64);
        }
    }
    .await;
    if buf.capacity() > 0 {
        bufs::put_in(buf);
    }
    if r.is_ok() {
        dst.close().await;
    }
    r
}

async fn send_all(s: &TcpStream, data: &[u8], stall: Duration) -> io::Result<()> {
    let fd = s.as_raw_fd();
    let mut pos = 0;
    while pos < data.len() {
        match sys::send(fd, &data[pos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                monoio::select! {
                    r = s.writable(false) => r?,
                    _ = monoio::time::sleep(stall) => return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
