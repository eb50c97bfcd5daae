//! The connection driver: runs the `h2` server state machine over any
//! AsyncRead + AsyncWrite stream (cleartext today, TLS with ALPN `h2`
//! later), hands each accepted stream to a callback, and ends the connection
//! with the right GOAWAY: NO_ERROR on drain or idleness (graceful: in-flight
//! streams finish), ENHANCE_YOUR_CALM on a flood.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use h2::server::{Builder, SendResponse};
use h2::{Reason, RecvStream};
use monoio::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::http2::FRAME_BUDGET_WINDOW;
use crate::config::Http2;

use super::wire::{Budget, Wire};

/// Longest wait for the handshake (our SETTINGS out, the client's preface in).
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Longest wait for a GOAWAY to flush when closing abruptly.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);
/// After the GOAWAY of an idle close, how long the client has to answer
/// our PING and close (h2's graceful shutdown waits for that PING ACK).
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How an HTTP/2 connection ended.
#[derive(Debug)]
pub enum End {
    /// The client closed, or a graceful shutdown (drain) completed.
    Closed,
    /// No stream for `idle_timeout`: GOAWAY NO_ERROR sent.
    Idle,
    /// The `h2` crate's flood limits fired (GOAWAY ENHANCE_YOUR_CALM sent).
    Calm,
    /// The frame budget was spent (GOAWAY ENHANCE_YOUR_CALM sent).
    FrameFlood,
    /// Another connection error (protocol error: GOAWAY sent; or I/O).
    Error(h2::Error),
    /// No handshake in time.
    HandshakeTimeout,
}

/// Open streams of one connection, and since when it has none.
#[derive(Debug)]
pub struct Streams {
    active: Cell<usize>,
    idle_since: Cell<Instant>,
}

/// One open stream; dropped when its task ends.
pub struct StreamToken(Rc<Streams>);

impl Drop for StreamToken {
    fn drop(&mut self) {
        let n = self.0.active.get().saturating_sub(1);
        self.0.active.set(n);
        if n == 0 {
            self.0.idle_since.set(Instant::now());
        }
    }
}

/// The `h2` server settings for `cfg`.
pub fn builder(cfg: &Http2) -> Builder {
    let mut b = Builder::new();
    b.max_concurrent_streams(cfg.max_concurrent_streams)
        .max_header_list_size(cfg.max_header_list_size)
        .initial_window_size(cfg.initial_window_size)
        .initial_connection_window_size(cfg.connection_window_size)
        .max_pending_accept_reset_streams(cfg.max_pending_accept_reset_streams as usize)
        .max_local_error_reset_streams(Some(cfg.max_local_error_reset_streams as usize))
        // What one stream may queue for a slow client before its producer
        // waits for window (bounds memory per stream).
        .max_send_buffer_size(64 * 1024);
    b
}

/// Serves one HTTP/2 connection on `io` (whose first bytes, already read,
/// are `replay`) until it ends. `on_stream` is called for each request; it
/// should spawn a task holding the token. `stop` resolves when the worker
/// drains: GOAWAY goes out and in-flight streams finish.
pub async fn drive<S, F>(
    io: S,
    replay: Vec<u8>,
    cfg: &Http2,
    stop: impl Future<Output = ()>,
    mut on_stream: F,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(http::Request<RecvStream>, SendResponse<Bytes>, StreamToken),
{
    let budget = Budget::new(cfg.frame_budget, FRAME_BUDGET_WINDOW);
    let wire = Wire::new(io, replay, budget.clone());
    let handshake = builder(cfg).handshake::<_, Bytes>(wire);
    let mut conn = monoio::select! {
        r = handshake => match r {
            Ok(c) => c,
            Err(e) => return End::Error(e),
        },
        _ = monoio::time::sleep(HANDSHAKE) => return End::HandshakeTimeout,
    };
    let streams = Rc::new(Streams {
        active: Cell::new(0),
        idle_since: Cell::new(Instant::now()),
    });
    let mut stop = std::pin::pin!(stop);
    let mut stopping = false;
    let mut idled = false;
    type Accepted = Option<Result<(http::Request<RecvStream>, SendResponse<Bytes>), h2::Error>>;
    // Not boxed: an accepted stream (264 bytes) is the common event.
    #[allow(clippy::large_enum_variant)]
    enum Ev {
        Accept(Accepted),
        Flood,
        Tick,
        Stop,
    }
    // When the connection may next be idle (or, closing for idleness, when
    // a client that ignores the GOAWAY's PING is dropped).
    let idle_at = |idled: bool| {
        if idled {
            streams.idle_since.get() + cfg.idle_timeout + IDLE_CLOSE_GRACE
        } else if streams.active.get() == 0 {
            streams.idle_since.get() + cfg.idle_timeout
        } else {
            Instant::now() + cfg.idle_timeout
        }
    };
    // One timer for the connection's life, moved only to an earlier
    // deadline; when it fires, the deadline is computed again (and the
    // timer moved on if it came early). Not a new timer per stream
    // accepted: arming and dropping one per stream was a per-stream cost.
    let mut idle_timer = std::pin::pin!(monoio::time::sleep_until(idle_at(false)));
    loop {
        let due = idle_at(idled);
        if due < idle_timer.deadline() {
            idle_timer.as_mut().reset(due);
        }
        let ev = monoio::select! {
            ev = std::future::poll_fn(|cx| {
                let r = conn.poll_accept(cx);
                if budget.spent() {
                    return Poll::Ready(Ev::Flood);
                }
                r.map(Ev::Accept)
            }) => ev,
            _ = &mut idle_timer, if !stopping || idled => Ev::Tick,
            _ = &mut stop, if !stopping => Ev::Stop,
        };
        match ev {
            Ev::Accept(Some(Ok((req, respond)))) => {
                streams.active.set(streams.active.get() + 1);
                on_stream(req, respond, StreamToken(streams.clone()));
            }
            Ev::Accept(Some(Err(e))) => {
                if e.reason() == Some(Reason::ENHANCE_YOUR_CALM) {
                    return End::Calm;
                }
                return End::Error(e);
            }
            Ev::Accept(None) => return if idled { End::Idle } else { End::Closed },
            Ev::Flood => {
                conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                monoio::select! {
                    _ = std::future::poll_fn(|cx| conn.poll_closed(cx)) => {},
                    _ = monoio::time::sleep(CLOSE_FLUSH) => {},
                }
                return End::FrameFlood;
            }
            Ev::Tick if Instant::now() < idle_at(idled) => {
                // Early (the deadline moved on since the timer was set).
                idle_timer.as_mut().reset(idle_at(idled));
            }
            Ev::Tick if idled => return End::Idle,
            Ev::Tick => {
                if streams.active.get() == 0 {
                    idled = true;
                    stopping = true;
                    conn.graceful_shutdown();
                }
            }
            Ev::Stop => {
                stopping = true;
                conn.graceful_shutdown();
            }
        }
    }
}
