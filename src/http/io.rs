//! Socket reads and writes for HTTP exchanges, with deadlines, two ways.
//!
//! - [`Io::Ring`]: the exchange has the socket to itself (`&mut`), so reads
//!   and writes are io_uring ops (epoll-driven on the legacy driver) into
//!   owned buffers. A deadline never drops an in-flight op: it cancels it
//!   through monoio's `Canceller` and waits for the op to finish, keeping any
//!   bytes it read (ARCHITECTURE.md, pitfall "timeouts are not free cancellation").
//! - [`Io::Ready`]: both directions of an exchange use the socket at once
//!   (a request body still uploading while the response comes back), which
//!   `&mut`-based ops cannot express. Then we wait for readiness through the
//!   runtime and call non-blocking recv/send, like the splice tunnel does;
//!   dropping such a wait loses nothing.
//! - [`Io::Tls`]: a client on a TLS listener. Its record layer
//!   ([`crate::tls::session`]) works like `Ready` (readiness, non-blocking
//!   syscalls, the connection state borrowed only between awaits), so both
//!   directions can use it at once. Bodies cannot be spliced through it
//!   (see [`Io::is_tls`]).

use std::cell::{Cell, RefCell};

use crate::tls::{session, TlsConn};
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{CancelHandle, CancelableAsyncReadRent, CancelableAsyncWriteRent, Canceller};
use monoio::net::TcpStream;
use monoio::time::Instant;

use crate::sys;

/// ECANCELED: what a cancelled monoio op returns.
const ECANCELED: i32 = 125;

/// The canceller of one connection task's io_uring ops, reused across ops.
///
/// Why one per task: a monoio `Canceller` allocates (an `Rc` and its op set)
/// when created; reused, an op only borrows it. In `Ring` mode a task has at
/// most one op in flight, so cancelling cancels exactly the op that timed
/// out. Only a cancel replaces it (rare: a deadline passed). Created on the
/// first ring op: a connection whose reads and writes all complete as plain
/// syscalls (most small keep-alive requests) never allocates one, and an
/// idle connection does not carry it: [`Cancel::release`] gives it back to
/// the worker's free list when the connection goes idle (about 180 bytes
/// per idle keep-alive connection otherwise: the `Rc` and its op set's
/// table), and the next request's first ring op takes one from there.
#[derive(Default)]
pub struct Cancel(Cell<Option<Canceller>>);

/// Most spare cancellers a worker keeps (a few hundred KiB at most).
const SPARE_CANCELLERS: usize = 1024;

thread_local! {
    /// This worker thread's spare cancellers: none has an op associated
    /// (they come from connections between requests, or closed ones).
    static SPARE: RefCell<Vec<Canceller>> = const { RefCell::new(Vec::new()) };
}

impl Cancel {
    fn handle(&self) -> CancelHandle {
        let c = self
            .0
            .take()
            .unwrap_or_else(|| SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_default());
        let h = c.handle();
        self.0.set(Some(c));
        h
    }

    /// Gives the canceller back to the worker's free list. Only between
    /// requests or at the end: no op of this connection is in flight (an op
    /// holds a handle only while it runs, so the free one is clean).
    pub fn release(&self) {
        if let Some(c) = self.0.take() {
            // `try_with`: at thread exit the list may be gone; dropping is fine.
            let _ = SPARE.try_with(|s| {
                let mut s = s.borrow_mut();
                if s.len() < SPARE_CANCELLERS {
                    s.push(c);
                }
            });
        }
    }

    fn cancel(&self) {
        if let Some(old) = self.0.take() {
            self.0.set(Some(old.cancel()));
        }
    }
}

/// One socket as an exchange direction sees it.
pub enum Io<'a> {
    /// Exclusive use: io_uring ops with cancel-on-deadline.
    Ring(&'a mut TcpStream, &'a Cancel),
    /// Shared with the other direction: readiness + non-blocking syscalls.
    Ready(&'a TcpStream),
    /// A TLS client: plaintext through the connection's record layer.
    Tls(&'a TcpStream, &'a RefCell<TlsConn>),
}

impl Io<'_> {
    /// The socket, for readiness waits and splice.
    pub fn stream(&self) -> &TcpStream {
        match self {
            Io::Ring(s, _) => s,
            Io::Ready(s) => s,
            Io::Tls(s, _) => s,
        }
    }

    /// Whether bytes pass through TLS here (then they cannot be spliced).
    pub fn is_tls(&self) -> bool {
        matches!(self, Io::Tls(..))
    }

    /// Appends up to `max` bytes to `buf` (growing it if it is full).
    /// `Ok(0)` is EOF; `TimedOut` when nothing arrived before `deadline`.
    pub async fn read(
        &mut self,
        buf: &mut Vec<u8>,
        max: usize,
        deadline: Instant,
    ) -> io::Result<usize> {
        let max = max.max(1);
        if buf.capacity() == buf.len() {
            buf.reserve(max.min(super::buf::BUF_SIZE));
        }
        match self {
            Io::Ring(s, c) => ring_read(s, c, buf, max, deadline).await,
            Io::Ready(s) => ready_read(s, buf, max, deadline).await,
            Io::Tls(s, t) => session::read(s, t, buf, max, deadline).await,
        }
    }

    /// Writes `buf[range]` completely. `TimedOut` when the peer accepts no
    /// byte for `stall`.
    pub async fn write_all(
        &mut self,
        buf: &mut Vec<u8>,
        range: Range<usize>,
        stall: Duration,
    ) -> io::Result<()> {
        let end = range.end.min(buf.len());
        if range.start >= end {
            return Ok(());
        }
        match self {
            Io::Ring(s, c) => ring_write_all(s, c, buf, range.start, end, stall).await,
            Io::Ready(s) => ready_write_all(s, buf, range.start, end, stall).await,
            Io::Tls(s, t) => session::write_all(s, t, &buf[range.start..end], stall).await,
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out")
}

async fn ring_read(
    s: &mut TcpStream,
    canceller: &Cancel,
    buf: &mut Vec<u8>,
    max: usize,
    deadline: Instant,
) -> io::Result<usize> {
    // The op owns the buffer while in flight; it comes back in every case
    // because the op is always awaited to completion.
    let v = std::mem::take(buf);
    let start = v.len();
    let end = v.capacity().min(start.saturating_add(max));
    let read = s.cancelable_read(v.slice_mut(start..end), canceller.handle());
    let mut read = std::pin::pin!(read);
    let first = monoio::select! {
        r = &mut read => Some(r),
        _ = monoio::time::sleep_until(deadline) => None,
    };
    let (r, slice) = match first {
        Some(done) => done,
        None => {
            canceller.cancel();
            let (r, slice) = read.await;
            (cancelled_as_timeout(r), slice)
        }
    };
    *buf = slice.into_inner();
    r
}

async fn ring_write_all(
    s: &mut TcpStream,
    canceller: &Cancel,
    buf: &mut Vec<u8>,
    mut pos: usize,
    end: usize,
    stall: Duration,
) -> io::Result<()> {
    // Heads and small bodies nearly always fit the socket's send buffer: a
    // plain non-blocking send finishes them without a runtime op (no submit,
    // no completion, no task wake-up). Only what it leaves goes through the
    // ring. The task owns the socket (`Ring` mode), so no op of ours is in
    // flight on it.
    match sys::send(s.as_raw_fd(), buf.get(pos..end).unwrap_or(&[])) {
        Ok(n) => pos += n,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) => {}
        Err(e) => return Err(e),
    }
    while pos < end {
        let v = std::mem::take(buf);
        let write = s.cancelable_write(v.slice(pos..end), canceller.handle());
        let mut write = std::pin::pin!(write);
        let first = monoio::select! {
            r = &mut write => Some(r),
            _ = monoio::time::sleep(stall) => None,
        };
        let (r, slice) = match first {
            Some(done) => done,
            None => {
                canceller.cancel();
                let (r, slice) = write.await;
                (cancelled_as_timeout(r), slice)
            }
        };
        *buf = slice.into_inner();
        match r {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => pos += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn cancelled_as_timeout(r: io::Result<usize>) -> io::Result<usize> {
    match r {
        Err(e) if e.raw_os_error() == Some(ECANCELED) => Err(timed_out()),
        other => other,
    }
}

async fn ready_read(
    s: &TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
    deadline: Instant,
) -> io::Result<usize> {
    let fd = s.as_raw_fd();
    loop {
        match sys::recv_append(fd, buf, max) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                monoio::select! {
                    r = s.readable(false) => r?,
                    _ = monoio::time::sleep_until(deadline) => return Err(timed_out()),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

async fn ready_write_all(
    s: &TcpStream,
    buf: &[u8],
    mut pos: usize,
    end: usize,
    stall: Duration,
) -> io::Result<()> {
    let fd = s.as_raw_fd();
    while pos < end {
        match sys::send(fd, buf.get(pos..end).unwrap_or(&[])) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                monoio::select! {
                    r = s.writable(false) => r?,
                    _ = monoio::time::sleep(stall) => return Err(timed_out()),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
