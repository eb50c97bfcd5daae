//! The byte stream under the `h2` crate: replays the bytes the HTTP/1.1
//! reader already took (the preface), and watches the frame headers that
//! pass by to enforce the budget of frames that do no work.
//!
//! Why here and not in `h2`: the crate bounds what costs memory (streams,
//! resets, header lists, CONTINUATION) but answers SETTINGS and PING frames
//! and accepts PRIORITY and empty DATA frames without limit, and a stream
//! reset after we accepted it (Rapid Reset against a fast accept loop) has
//! already cost a backend request; each costs CPU
//! (and a SETTINGS ACK or PING ACK write) while doing no work. Reading the
//! 9-byte frame headers as they pass costs a few instructions per frame.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::PREFACE;

const FRAME_HEADER: usize = 9;
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const ACK: u8 = 1;
/// What one RST_STREAM costs of the frame budget.
pub const RESET_COST: u32 = 10;

/// The frame budget of one connection, shared with its driver.
#[derive(Debug)]
pub struct Budget {
    /// No-work frames allowed per `window`.
    limit: u32,
    window: Duration,
    used: Cell<u32>,
    since: Cell<Instant>,
    /// Set once the budget is spent: the driver sends GOAWAY ENHANCE_YOUR_CALM.
    spent: Cell<bool>,
}

impl Budget {
    pub fn new(limit: u32, window: Duration) -> Rc<Budget> {
        Rc::new(Budget {
            limit,
            window,
            used: Cell::new(0),
            since: Cell::new(Instant::now()),
            spent: Cell::new(false),
        })
    }

    pub fn spent(&self) -> bool {
        self.spent.get()
    }

    fn charge(&self, cost: u32) {
        let used = self.used.get().saturating_add(cost);
        if used > self.limit {
            // Over the count: only a flood if it all came within one window.
            let now = Instant::now();
            if now.duration_since(self.since.get()) >= self.window {
                self.since.set(now);
                self.used.set(cost);
                return;
            }
            self.spent.set(true);
        }
        self.used.set(used);
    }
}

/// Incremental frame-header reader.
#[derive(Debug)]
struct Frames {
    /// Preface bytes still to skip.
    preface_left: usize,
    head: [u8; FRAME_HEADER],
    head_len: usize,
    /// Payload bytes of the current frame still to skip.
    payload_left: usize,
    /// Work happened since the last PING: a request (HEADERS) or request
    /// body bytes came in, or we wrote more than the control frame ACKs owed.
    worked: bool,
    /// Bytes of SETTINGS and PING ACKs we owe the client (not work).
    acks_owed: usize,
}

impl Frames {
    fn new() -> Frames {
        Frames {
            preface_left: PREFACE.len(),
            head: [0; FRAME_HEADER],
            head_len: 0,
            payload_left: 0,
            worked: false,
            acks_owed: 0,
        }
    }

    /// Scans the next bytes of the client's stream, charging `budget`.
    fn scan(&mut self, mut bytes: &[u8], budget: &Budget) {
        let skip = self.preface_left.min(bytes.len());
        self.preface_left -= skip;
        bytes = &bytes[skip..];
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER - self.head_len).min(bytes.len());
            self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
            self.head_len += n;
            bytes = &bytes[n..];
            if self.head_len < FRAME_HEADER {
                break;
            }
            self.head_len = 0;
            let h = self.head;
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            let (kind, flags) = (h[3], h[4]);
            self.payload_left = len;
            let cost = match kind {
                DATA if len == 0 && flags & END_STREAM == 0 => 1,
                // A client reset after we accepted the stream has cost a
                // backend request (Rapid Reset against a fast accept loop;
                // `h2` counts only the resets before accept): it weighs
                // RESET_COST, so the default budget allows 100 resets per
                // window, far more than a browser's cancelled navigations.
                RST_STREAM => RESET_COST,
                PRIORITY => 1,
                // A PING after work is free: grpc-go clients send a BDP
                // ping whenever response data arrives and none is
                // outstanding (up to one per call at 1,000 calls/s), as a
                // gRPC server's ping policy allows a ping after data. Only
                // PINGs with no work between them are charged, so a ping
                // flood still spends the budget (and `h2` reads no further
                // frame until the last PING's ACK is written).
                PING if flags & ACK == 0 && self.worked => {
                    self.worked = false;
                    0
                }
                HEADERS => {
                    self.worked = true;
                    0
                }
                DATA if len > 0 => {
                    self.worked = true;
                    0
                }
                SETTINGS | PING if flags & ACK == 0 => 1,
                CONTINUATION if len == 0 => 1,
                _ => 0,
            };
            if matches!(kind, SETTINGS | PING) && flags & ACK == 0 {
                self.acks_owed += if kind == PING { PING_ACK } else { SETTINGS_ACK };
            }
            if cost > 0 {
                budget.charge(cost);
            }
        }
    }
}

/// A client stream as `h2` reads and writes it.
pub struct Wire<S> {
    inner: S,
    /// Bytes read before the hand-off, replayed first.
    replay: Vec<u8>,
    replayed: usize,
    frames: Frames,
    budget: Rc<Budget>,
}

impl<S> Wire<S> {
    pub fn new(inner: S, replay: Vec<u8>, budget: Rc<Budget>) -> Wire<S> {
        Wire {
            inner,
            replay,
            replayed: 0,
            frames: Frames::new(),
            budget,
        }
    }
}

/// A SETTINGS ACK and a PING ACK on the wire.
const SETTINGS_ACK: usize = FRAME_HEADER;
const PING_ACK: usize = FRAME_HEADER + 8;

impl<S> Wire<S> {
    /// Notes a write to the client: more than the ACKs owed is work
    /// (response HEADERS or DATA), however many ACKs one write batches.
    fn wrote(&mut self, r: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = r {
            let f = &mut self.frames;
            if *n > f.acks_owed {
                f.worked = true;
            }
            f.acks_owed = f.acks_owed.saturating_sub(*n);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Wire<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.budget.spent() {
            // Nothing more is read from a flooding client; the driver, polled
            // right after, answers GOAWAY and closes.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        if this.replayed < this.replay.len() {
            let n = (this.replay.len() - this.replayed).min(buf.remaining());
            buf.put_slice(&this.replay[this.replayed..this.replayed + n]);
            this.replayed += n;
            if this.replayed == this.replay.len() {
                this.replay = Vec::new();
                this.replayed = 0;
            }
        } else {
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        this.frames.scan(&buf.filled()[before..], &this.budget);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Wire<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(&r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, len: usize) -> Vec<u8> {
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.resize(FRAME_HEADER + len, 0);
        f
    }

    #[test]
    fn counts_only_no_work_frames_across_splits() {
        let budget = Budget::new(3, Duration::from_secs(60));
        let mut fr = Frames::new();
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(SETTINGS, 0, 6)); // 1
        wire.extend(frame(SETTINGS, ACK, 0));
        wire.extend(frame(1, 4, 20)); // HEADERS: work
        wire.extend(frame(DATA, 0, 100));
        wire.extend(frame(DATA, END_STREAM, 0));
        wire.extend(frame(PING, 0, 8)); // free: a request came before it
        wire.extend(frame(PING, ACK, 8));
        wire.extend(frame(PING, 0, 8)); // 2: no request since the last
        wire.extend(frame(PRIORITY, 0, 5)); // 3
        wire.extend(frame(8, 0, 4)); // WINDOW_UPDATE: free
                                     // Fed a byte at a time: headers split anywhere.
        for b in &wire {
            fr.scan(std::slice::from_ref(b), &budget);
        }
        assert!(!budget.spent());
        fr.scan(&frame(DATA, 0, 0), &budget); // 4 > 3
        assert!(budget.spent());
        // A reset weighs RESET_COST.
        let budget = Budget::new(RESET_COST, Duration::from_secs(60));
        let mut fr = Frames::new();
        fr.scan(PREFACE, &budget);
        fr.scan(&frame(RST_STREAM, 0, 4), &budget);
        assert!(!budget.spent());
        fr.scan(&frame(RST_STREAM, 0, 4), &budget);
        assert!(budget.spent());
    }

    #[test]
    fn a_ping_after_work_is_free() {
        let budget = Budget::new(3, Duration::from_secs(60));
        let mut fr = Frames::new();
        fr.scan(PREFACE, &budget);
        // A grpc-go client: a request, then a BDP ping, 100 times.
        for _ in 0..100 {
            fr.scan(&frame(1, 5, 20), &budget);
            fr.scan(&frame(PING, 0, 8), &budget);
        }
        assert!(!budget.spent());
        // PINGs with no work between them are charged.
        for _ in 0..4 {
            fr.scan(&frame(PING, 0, 8), &budget);
        }
        assert!(budget.spent());
    }

    #[test]
    fn budget_refills_after_its_window() {
        let budget = Budget::new(2, Duration::from_millis(1));
        let mut fr = Frames::new();
        fr.scan(PREFACE, &budget);
        for _ in 0..2 {
            fr.scan(&frame(PING, 0, 8), &budget);
        }
        std::thread::sleep(Duration::from_millis(5));
        fr.scan(&frame(PING, 0, 8), &budget);
        assert!(!budget.spent());
    }
}
