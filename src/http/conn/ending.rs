//! How a client connection ends: the boxed last act after a request that
//! does not keep it alive (a gateway session, or a close), canned error
//! answers, and the two ways of closing (a plain finish, or a linger that
//! keeps our last response from being lost to a RST).

use super::*;

impl Conn {
    /// The connection's last act after a request that does not keep it
    /// alive, built in its box. A gateway session gets a box of its own
    /// size: in one future with the close paths (`finish`, `linger`) it
    /// took theirs, 1 KiB more in every idle session.
    pub(super) fn end(&mut self, outcome: Outcome) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        match outcome {
            // The start's box is freed before the session runs (moved out
            // of, it would live as long as the session).
            Outcome::Session(st) => crate::worker::boxed(|| {
                let st = st;
                crate::http::upgrade::session(self.guard.ctx(), &self.client, *st)
            }),
            outcome => crate::worker::boxed(|| self.close(outcome)),
        }
    }

    pub(super) async fn close(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::KeepAlive(_) | Outcome::Drop | Outcome::Session(_) => {}
            Outcome::Close => self.linger().await,
            Outcome::Finished => self.finish().await,
        }
    }

    /// The access-log line of a request refused before its head was whole
    /// (cold: only on 400, 408 and 431).
    #[cold]
    pub(super) fn log_rejected(&self, live: &Live, status: u16) {
        let got = self.client.buf.len() as u64;
        let tls = self.client.tls.as_deref().map(|t| t.borrow());
        let fields = tls.as_ref().map_or((None, None), |t| t.log_fields());
        crate::accesslog::http::rejected(
            &self.guard.ctx().log,
            live,
            self.client.peer.get(),
            status,
            got,
            fields,
        );
    }

    /// Answers with a canned error response, then closes.
    pub(super) async fn fail(&mut self, status: u16) {
        let mut out = self.guard.ctx().bufs.take();
        out.clear();
        match respond::canned(status) {
            Some(bytes) => out.extend_from_slice(bytes),
            None => respond::write_error(&mut out, status, ""),
        }
        let len = out.len();
        let sent = client_io(
            &mut self.client.stream,
            &self.client.cancel,
            &self.client.tls,
        )
        .write_all(&mut out, 0..len, ERROR_WRITE_STALL)
        .await;
        self.guard.ctx().bufs.put(out);
        if sent.is_ok() {
            self.linger().await;
        }
    }

    /// Writes `bytes` on the plain socket, then closes with a linger.
    pub(super) async fn send_canned(&mut self, bytes: &[u8]) {
        let mut out = self.guard.ctx().bufs.take();
        out.clear();
        out.extend_from_slice(bytes);
        let len = out.len();
        let sent = Io::Ring(&mut self.client.stream, &self.client.cancel)
            .write_all(&mut out, 0..len, ERROR_WRITE_STALL)
            .await;
        self.guard.ctx().bufs.put(out);
        if sent.is_ok() {
            self.linger().await;
        }
    }

    /// Closes after a complete exchange. Lingering costs a read op, a timer
    /// and the client's FIN round trip per connection; it is only needed when
    /// the client sent more than we answered (pipelined requests we will not
    /// serve), so, like nginx's `lingering_close on`, only then.
    pub(super) async fn finish(&mut self) {
        if let Some(t) = &self.client.tls {
            if t.borrow().has_plain() {
                return self.linger().await;
            }
            crate::tls::session::close(&self.client.stream, t, ERROR_WRITE_STALL).await;
        }
        if !self.client.buf.is_empty() {
            return self.linger().await;
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.client.stream);
        let mut probe = [0u8; 1];
        match sys::recv_peek(fd, &mut probe) {
            // Nothing pending (or the client already closed): a plain close
            // sends FIN, never RST.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok(0) => {}
            _ => self.linger().await,
        }
    }

    /// Half-closes, then reads and discards until the client closes too (or
    /// [`LINGER`] passes), so our last response is not lost to a RST.
    pub(super) async fn linger(&mut self) {
        if let Some(t) = &self.client.tls {
            crate::tls::session::close(&self.client.stream, t, ERROR_WRITE_STALL).await;
        }
        let _ = sys::shutdown_write(std::os::fd::AsRawFd::as_raw_fd(&self.client.stream));
        let deadline = Instant::now() + LINGER;
        let buf = &mut self.client.buf;
        if buf.capacity() == 0 {
            *buf = self.guard.ctx().bufs.take();
        }
        let mut total = 0usize;
        while total < LINGER_MAX {
            buf.clear();
            let room = buf.capacity();
            match Io::Ring(&mut self.client.stream, &self.client.cancel)
                .read(buf, room, deadline)
                .await
            {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    }
}
