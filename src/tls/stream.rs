//! A TLS session as a poll-based byte stream (tokio's `AsyncRead` and
//! `AsyncWrite` traits, no tokio runtime), for `h2` once ALPN chose `h2`:
//! the server on client connections, the client toward `"protocol": "h2"`
//! backends (the same adapter over a client-side [`TlsConn`]).
//!
//! ```text
//!  h2 codec (BytesMut) <--poll_read-- TlsStream --poll_read--> TcpStreamPoll (monoio poll-io)
//!                                     |  ciphertext: recv(2) straight into TlsConn's record buffer
//!                                     |  plaintext: decrypted in place, copied once into h2's buffer
//!  h2 frames (&[u8])  --poll_write--> seal into TlsConn's out buffer --poll_write--> socket
//! ```
//!
//! Decision: the adapter drives the same [`TlsConn`] record layer as the
//! HTTP/1.1 path ([`super::session`]), over monoio's poll-io socket
//! ([`TcpStreamPoll`]) whose `poll_read`/`poll_write` do the non-blocking
//! syscalls and register readiness with the runtime (io_uring and epoll
//! drivers alike). No staging copy beyond what rustls needs: received
//! ciphertext lands in the record buffer (`ReadBuf` over its spare
//! capacity), rustls decrypts it in place, and the plaintext is copied once,
//! straight into the free space of the `ReadBuf` `h2` reads into (records
//! larger than that space keep their rest in the session's plaintext
//! stash). Outgoing frames are encrypted from `h2`'s slice straight into
//! the outgoing record buffer, one record per `poll_write` of up to 16 KiB;
//! records queue there until the flush (or a buffer that cannot take another
//! record) writes them together. Whenever the socket has nothing to read, and
//! after each flush, the session's record buffers go back to the worker's
//! free list if they hold nothing ([`TlsConn::release`]): an idle HTTP/2
//! connection keeps no record buffer (an incoming and an outgoing one are 85 KiB). Why not `tokio-rustls` or `monoio-rustls`: both
//! use rustls's buffered connection (a plaintext queue and a copy in and out
//! of it) and a second set of buffers beside ours.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use monoio::net::tcp::stream_poll::TcpStreamPoll;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::session::{Step, TlsConn};

/// Plaintext sealed per `poll_write` (one TLS record).
const MAX_RECORD_PLAIN: usize = 16 * 1024;
/// A TLS 1.3 record's header, content type and AEAD tag, with room to spare.
const RECORD_OVERHEAD: usize = 64;

/// A TLS session on a poll-io socket, readable and writable as plaintext.
pub struct TlsStream {
    io: TcpStreamPoll,
    tls: TlsConn,
    /// The peer closed (close_notify or TCP EOF): reads return EOF.
    eof: bool,
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("tls: {e}"))
}

impl TlsStream {
    pub fn new(io: TcpStreamPoll, tls: TlsConn) -> TlsStream {
        TlsStream {
            io,
            tls,
            eof: false,
        }
    }

    /// The session (which certificate the handshake chose, SNI, ...).
    pub fn session(&self) -> &TlsConn {
        &self.tls
    }

    /// Writes the records waiting in the session's outgoing buffer.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.tls.pending().is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, self.tls.pending()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.tls.sent(n);
        }
        Poll::Ready(Ok(()))
    }

    /// After a rustls error: the alert goes out if the socket takes it now.
    fn fail(&mut self, cx: &mut Context<'_>, e: rustls::Error) -> io::Error {
        self.tls.collect_alert();
        let _ = self.poll_send(cx);
        invalid(e)
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.eof || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            match this.tls.read_buf(buf) {
                Ok(Step::Data(_)) => {
                    // Tickets or a KeyUpdate answer rustls produced go out
                    // when the socket takes them; writes flush the rest.
                    if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                        return Poll::Ready(Err(e));
                    }
                    return Poll::Ready(Ok(()));
                }
                Ok(Step::Eof) => {
                    this.eof = true;
                    return Poll::Ready(Ok(()));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(this.fail(cx, e))),
            }
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            let spare = this.tls.inc_spare()?;
            let mut rb = ReadBuf::uninit(spare);
            if Pin::new(&mut this.io).poll_read(cx, &mut rb)?.is_pending() {
                // Nothing to read: the record buffers go back to the
                // worker's free list while they hold nothing (an idle
                // connection keeps only the rustls state, as on HTTP/1.1).
                this.tls.release();
                return Poll::Pending;
            }
            let n = rb.filled().len();
            if n == 0 {
                // A bare TCP close: EOF (h2 tells a truncated frame apart).
                this.eof = true;
                return Poll::Ready(Ok(()));
            }
            // SAFETY: `rb` was built over `inc_spare()`'s slice and reports
            // its first `n` bytes filled (initialized by the read).
            unsafe { this.tls.received(n) };
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = data.len().min(MAX_RECORD_PLAIN);
        // Records queue behind earlier ones while the record buffer holds
        // them; `h2` flushes after each batch of frames, and the flush sends
        // them in one write. (h2 writes a DATA frame's head and payload as
        // two chunks, and many streams' frames in a row: one send per record
        // made HTTP/2 over TLS cost 2.7x its cleartext CPU per request.)
        if !this.tls.pending().is_empty() && this.tls.out_room() < n + RECORD_OVERHEAD {
            ready!(this.poll_send(cx))?;
        }
        if let Err(e) = this.tls.seal(&data[..n]) {
            return Poll::Ready(Err(this.fail(cx, e)));
        }
        // A buffer that cannot take another full record goes out now if the
        // socket takes it (bulk data keeps flowing between flushes, four
        // records per write); the plaintext is accepted either way.
        if this.tls.out_room() < MAX_RECORD_PLAIN + RECORD_OVERHEAD {
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        // Everything written: `h2` flushes after its writes, then waits
        // for the client; the empty buffers go back until the next record.
        this.tls.release();
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.tls.queue_close();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
