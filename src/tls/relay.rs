//! A TLS client joined to a plain upstream, both directions at once: the
//! tunnel of tcp routes on TLS listeners, and of upgraded (WebSocket)
//! connections whose client speaks TLS. Splice cannot move TLS records'
//! plaintext, so bytes go through one record-sized buffer per direction,
//! taken from the worker's free list while the tunnel lives.

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

/// Forwards both ways until both sides closed (each close is passed on:
/// close_notify to the client, a half-close to the upstream), an error, or
/// `idle` without a byte either way.
pub async fn relay<M: Meter>(
    meter: &M,
    client: &TcpStream,
    tls: &RefCell<TlsConn>,
    up: &TcpStream,
    idle: Duration,
) -> Result<(), RelayEnd> {
    let last = Cell::new(Instant::now());
    let deadline = || last.get() + idle;
    // Client -> upstream: decrypt, send.
    let upward = async {
        let mut buf = bufs::take_in();
        let r = async {
            loop {
                buf.clear();
                let room = buf.capacity();
                let n = match session::read(client, tls, &mut buf, room, deadline()).await {
                    Ok(0) => break Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        if Instant::now() >= deadline() {
                            break Err(RelayEnd::Idle);
                        }
                        continue;
                    }
                    Err(e) => break Err(RelayEnd::Client(e)),
                };
                last.set(Instant::now());
                send_all(up, &buf[..n], idle)
                    .await
                    .map_err(RelayEnd::Backend)?;
                meter.moved(true, n as u64);
            }
        }
        .await;
        bufs::put_in(buf);
        if r.is_ok() {
            let _ = sys::shutdown_write(up.as_raw_fd());
        }
        r
    };
    // Upstream -> client: recv, encrypt.
    let downward = async {
        let mut buf = bufs::take_in();
        let fd = up.as_raw_fd();
        let r = async {
            loop {
                buf.clear();
                let room = buf.capacity();
                let n = match sys::recv_append(fd, &mut buf, room) {
                    Ok(0) => break Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        monoio::select! {
                            r = up.readable(false) => r.map_err(RelayEnd::Backend)?,
                            _ = monoio::time::sleep_until(deadline()) => {
                                if Instant::now() >= deadline() {
                                    break Err(RelayEnd::Idle);
                                }
                            }
                        }
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => break Err(RelayEnd::Backend(e)),
                };
                last.set(Instant::now());
                session::write_all(client, tls, &buf[..n], idle)
                    .await
                    .map_err(RelayEnd::Client)?;
                meter.moved(false, n as u64);
            }
        }
        .await;
        bufs::put_in(buf);
        if r.is_ok() {
            session::close(client, tls, Duration::from_secs(5)).await;
        }
        r
    };
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
