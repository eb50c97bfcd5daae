//! A connection's start: the TLS handshake of a TLS listener, and the
//! hand-offs to the HTTP/2 server (ALPN `h2`, or the cleartext preface).

use super::*;

/// How a connection's start (the TLS handshake of a TLS listener) ended.
pub(super) enum Started {
    /// HTTP/1.1 follows (plain, or over the session in `Client::tls`).
    Http1,
    /// ALPN chose `h2`: the session (in `Client::tls`, so that this result
    /// is small: it is held in the connection's future) goes to the h2 server.
    H2,
    /// Failed (counted, answered if it was plain HTTP): close.
    Done,
}

impl Conn {
    /// The TLS handshake of a TLS listener (nothing on a plain one).
    pub(super) async fn start(&mut self, live: &Live) -> Started {
        let acc = live
            .snapshot
            .listeners
            .get(self.spec as usize)
            .and_then(|l| Some((l.tls.clone()?, l.header_timeout)));
        let Some((acc, header_timeout)) = acc else {
            return Started::Http1;
        };
        match self.tls_start(acc, header_timeout).await {
            TlsStart::Ready => Started::Http1,
            TlsStart::Done => Started::Done,
            TlsStart::H2(t) => {
                self.client.tls = Some(Box::new(RefCell::new(*t)));
                Started::H2
            }
        }
    }

    /// ALPN chose `h2` (offered only when the port's routes all have
    /// `http2` on): the h2 server takes the TLS session.
    pub(super) async fn into_h2_tls(self, live: Arc<Live>) {
        let Some((cfg, listen)) = live
            .snapshot
            .listeners
            .get(self.spec as usize)
            .and_then(|l| Some((l.http2?, l.addr)))
        else {
            return;
        };
        let Conn { client, guard, .. } = self;
        let ctx = guard.ctx().clone();
        let Some(t) = client.tls else {
            return;
        };
        let (stream, peer) = (client.stream, client.peer.get());
        crate::h2::serve_tls(ctx, live, stream, t.into_inner(), peer, listen, cfg, guard).await;
    }

    /// Hands a cleartext connection whose first bytes were the HTTP/2
    /// preface to the h2 server.
    pub(super) async fn into_h2(mut self, (cfg, live): H2Handoff) {
        let replay = self.client.buf.clone();
        self.release_buffers();
        let Some(listen) = live
            .snapshot
            .listeners
            .get(self.spec as usize)
            .map(|l| l.addr)
        else {
            return;
        };
        let Conn { client, guard, .. } = self;
        let ctx = guard.ctx().clone();
        let (stream, peer) = (client.stream, client.peer.get());
        crate::h2::serve_tcp(ctx, live, stream, peer, listen, cfg, replay, guard).await;
    }

    /// The TLS handshake of a TLS listener's connection (false: failed,
    /// answered if it was plain HTTP, and the connection is done).
    pub(super) async fn tls_start(
        &mut self,
        acc: Arc<crate::tls::Acceptor>,
        header_timeout: Duration,
    ) -> TlsStart {
        let deadline = Instant::now() + header_timeout;
        // What the edge read after a PROXY header is the start of the
        // ClientHello: rustls takes it first, then the buffer is free.
        let early = std::mem::take(&mut self.client.buf);
        let shake = crate::tls::session::handshake(
            &self.client.stream,
            acc.config.clone(),
            deadline,
            &early,
        );
        let shaken = shake.await;
        if early.capacity() > 0 {
            self.guard.ctx().bufs.put(early);
        }
        match shaken {
            Ok(t) => {
                acc.counters.handshake(t.resumed);
                if t.h2 {
                    return TlsStart::H2(Box::new(t));
                }
                self.client.tls = Some(Box::new(RefCell::new(t)));
                TlsStart::Ready
            }
            Err(e) => {
                acc.counters.failed(e.reason());
                tracing::debug!(peer = %self.client.peer, "TLS handshake failed: {e}");
                if matches!(e, crate::tls::HandshakeError::PlainHttp) {
                    self.send_canned(PLAIN_ON_TLS).await;
                    self.release_buffers();
                }
                TlsStart::Done
            }
        }
    }
}

/// How a TLS listener's handshake ended.
pub(super) enum TlsStart {
    /// HTTP/1.1 over the session in `Client::tls`.
    Ready,
    /// ALPN chose `h2`: the session goes to the h2 server.
    H2(Box<TlsConn>),
    /// Failed (counted, answered if it was plain HTTP): close.
    Done,
}
