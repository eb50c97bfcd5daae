//! The record layer of one TLS client connection: rustls's unbuffered API
//! over two buffers we own (see the module doc of [`crate::tls`]).
//!
//! The synchronous core ([`TlsConn::process`]) runs rustls until it needs
//! bytes from the socket, has decrypted application data, or has encrypted
//! what it was given. The async functions around it wait for readiness and
//! call non-blocking `recv`/`send` (like `Io::Ready` on plain sockets), and
//! they take the connection as `&RefCell<TlsConn>` borrowed only between
//! awaits, so a request body can upload while the response downloads.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use monoio::net::TcpStream;
use monoio::time::Instant;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::UnbufferedStatus;

use super::bufs;
use super::counters::TlsFailure;
use super::record::{alert_step, Records, Side};
use crate::sys;

/// Plaintext encrypted per record (the TLS maximum).
const MAX_PLAINTEXT: usize = 16 * 1024;
/// Plaintext sealed per round of [`write_now`]: four records, which fill an
/// outgoing buffer ([`bufs::OUT_BUF`]) and leave in one `send`.
const SEAL_BATCH: usize = 4 * MAX_PLAINTEXT;

/// Why a handshake did not complete.
#[derive(Debug)]
pub enum HandshakeError {
    /// The client spoke plain HTTP (it gets a 400).
    PlainHttp,
    Timeout,
    /// EOF, reset or another socket error mid-handshake.
    Closed(io::Error),
    /// rustls refused the client (an alert went out when possible).
    Tls(rustls::Error),
    /// A ClientHello larger than a record buffer.
    TooLarge,
}

impl HandshakeError {
    pub fn reason(&self) -> TlsFailure {
        match self {
            HandshakeError::PlainHttp => TlsFailure::PlainHttp,
            HandshakeError::Timeout => TlsFailure::Timeout,
            HandshakeError::Closed(_) => TlsFailure::Closed,
            HandshakeError::Tls(
                rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_),
            ) => TlsFailure::ClientCert,
            HandshakeError::Tls(_) | HandshakeError::TooLarge => TlsFailure::Protocol,
        }
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::PlainHttp => f.write_str("plain HTTP on a TLS port"),
            HandshakeError::Timeout => f.write_str("handshake timed out"),
            HandshakeError::Closed(e) => write!(f, "client gone mid-handshake: {e}"),
            HandshakeError::Tls(e) => write!(f, "{e}"),
            HandshakeError::TooLarge => f.write_str("ClientHello too large"),
        }
    }
}

/// What the caller wants from [`TlsConn::process`].
#[derive(Clone, Copy)]
pub(super) enum Want<'d> {
    /// Decrypted data (or, while handshaking, progress).
    Read,
    /// Encrypt this plaintext (at most [`SEAL_BATCH`] bytes: rustls cuts it
    /// into records).
    Seal(&'d [u8]),
    /// Queue a close_notify alert.
    Close,
}

/// Where decrypted bytes go.
pub(super) enum Sink<'a, 'b> {
    /// Into this buffer, at most this many; the rest is kept in `plain`.
    Into(&'a mut Vec<u8>, usize),
    /// Into the free space of a caller's buffer (the HTTP/2 adapter's
    /// `poll_read`); the rest is kept in `plain`.
    Read(&'a mut tokio::io::ReadBuf<'b>),
    /// Kept in `plain` (during the handshake, or while writing).
    Stash,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// This many bytes went into the sink.
    Data(usize),
    /// Nothing more without bytes from the socket.
    NeedRead,
    /// `Want::Seal` / `Want::Close` done: the records wait in `out`.
    Sealed,
    /// The peer sent close_notify.
    Eof,
}

/// One client's TLS state and record buffers.
pub struct TlsConn {
    pub(super) conn: Side,
    /// Received ciphertext not yet consumed by rustls.
    inc: Vec<u8>,
    /// Records to send live in `out[out_start..out_end]`; `out` stays
    /// initialized to its length (rustls encrypts into `&mut [u8]`).
    out: Vec<u8>,
    out_start: usize,
    out_end: usize,
    /// Decrypted bytes no reader has taken yet.
    plain: Vec<u8>,
    plain_pos: usize,
    peer_closed: bool,
    close_sent: bool,
    /// rustls returned an error (and queued its fatal alert): the session
    /// is dead, every later step fails without calling rustls again (two
    /// futures of a gateway session may both still hold it).
    failed: bool,
    /// Index of the certificate the handshake chose.
    pub cert: usize,
    /// The client sent SNI.
    pub sni: bool,
    /// The server name the client sent (SNI), as the resolver saw it.
    pub sni_name: Option<Box<str>>,
    pub resumed: bool,
    /// ALPN chose `h2`: the connection speaks HTTP/2 (see [`super::stream`]).
    pub h2: bool,
    /// Subject of the verified client certificate (mTLS).
    pub client_subject: Option<String>,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("tls: {e}"))
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out")
}

impl TlsConn {
    pub(super) fn new(conn: Side) -> TlsConn {
        TlsConn {
            conn,
            inc: Vec::new(),
            out: Vec::new(),
            out_start: 0,
            out_end: 0,
            plain: Vec::new(),
            plain_pos: 0,
            peer_closed: false,
            close_sent: false,
            failed: false,
            cert: 0,
            sni: false,
            sni_name: None,
            resumed: false,
            h2: false,
            client_subject: None,
        }
    }

    /// The negotiated protocol version as nginx's `$ssl_protocol` names it
    /// (`TLSv1.3`), and the SNI name: the access log's TLS fields.
    pub fn log_fields(&self) -> (Option<&'static str>, Option<&[u8]>) {
        let version = match self.conn.common().protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => Some("TLSv1.3"),
            Some(rustls::ProtocolVersion::TLSv1_2) => Some("TLSv1.2"),
            Some(_) => Some("TLS"),
            None => None,
        };
        (version, self.sni_name.as_deref().map(str::as_bytes))
    }

    /// Decrypted bytes are waiting for a reader.
    pub fn has_plain(&self) -> bool {
        self.plain_pos < self.plain.len()
    }

    /// Plaintext or received ciphertext is waiting: a read may make
    /// progress without the socket becoming readable.
    pub fn has_input(&self) -> bool {
        self.has_plain() || !self.inc.is_empty()
    }

    /// Nothing received, decrypted or to send is left over, and the peer has
    /// not closed: the connection can idle in a keep-alive pool.
    pub fn idle_clean(&self) -> bool {
        !self.has_plain()
            && self.inc.is_empty()
            && !self.peer_closed
            && !self.close_sent
            && self.out_start == self.out_end
    }

    /// Gives the record buffers back to the worker's free list when they
    /// hold nothing (an idle keep-alive connection keeps only rustls's state).
    pub fn release(&mut self) {
        if self.inc.is_empty() && self.inc.capacity() > 0 {
            bufs::put_in(std::mem::take(&mut self.inc));
        }
        if self.out_start == self.out_end && !self.out.is_empty() {
            self.out_start = 0;
            self.out_end = 0;
            bufs::put_out(std::mem::take(&mut self.out));
        }
        if !self.has_plain() {
            self.plain = Vec::new();
            self.plain_pos = 0;
        }
    }

    /// Moves up to `max` waiting plaintext bytes to `buf`.
    fn take_plain(&mut self, buf: &mut Vec<u8>, max: usize) -> Option<usize> {
        if !self.has_plain() {
            return None;
        }
        let avail = &self.plain[self.plain_pos..];
        let n = avail.len().min(max.max(1));
        buf.extend_from_slice(&avail[..n]);
        self.plain_pos += n;
        if self.plain_pos == self.plain.len() {
            self.plain.clear();
            self.plain_pos = 0;
        }
        Some(n)
    }

    /// Runs rustls over the buffered records until `want` is met or it
    /// needs more input. Handshake replies, tickets and alerts rustls
    /// produces are encoded into `out` on the way.
    pub(super) fn process(
        &mut self,
        sink: &mut Sink<'_, '_>,
        want: Want<'_>,
    ) -> Result<Step, rustls::Error> {
        if self.failed {
            return Err(rustls::Error::General(
                "the TLS session failed earlier".into(),
            ));
        }
        if self.out.is_empty() {
            self.out = bufs::take_out();
        }
        if self.out_start == self.out_end {
            self.out_start = 0;
            self.out_end = 0;
        }
        let mut got = 0usize;
        loop {
            let mut rec = Records {
                out: &mut self.out,
                out_end: &mut self.out_end,
                plain: &mut self.plain,
                plain_pos: &mut self.plain_pos,
                peer_closed: &mut self.peer_closed,
                got: &mut got,
            };
            let (discard, step, fail) = match &mut self.conn {
                Side::Server(c) => {
                    let UnbufferedStatus { discard, state } =
                        c.process_tls_records(&mut self.inc[..]);
                    rec.on(state, discard, sink, want)
                }
                Side::Client(c) => {
                    let UnbufferedStatus { discard, state } =
                        c.process_tls_records(&mut self.inc[..]);
                    rec.on(state, discard, sink, want)
                }
            };
            if discard > 0 {
                self.inc.drain(..discard.min(self.inc.len()));
            }
            if let Some(e) = fail {
                self.failed = true;
                return Err(e);
            }
            if let Some(s) = step {
                return Ok(s);
            }
        }
    }

    // The steps of the poll-based adapter ([`super::stream`]): the same
    // record buffers, driven by `poll_read`/`poll_write` instead of awaits.

    /// Decrypted bytes into the free space of `rb`: waiting plaintext first,
    /// then records from `inc` (`NeedRead`: none without more ciphertext).
    pub(super) fn read_buf(
        &mut self,
        rb: &mut tokio::io::ReadBuf<'_>,
    ) -> Result<Step, rustls::Error> {
        if self.has_plain() {
            let avail = &self.plain[self.plain_pos..];
            let n = avail.len().min(rb.remaining());
            rb.put_slice(&avail[..n]);
            self.plain_pos += n;
            if self.plain_pos == self.plain.len() {
                self.plain.clear();
                self.plain_pos = 0;
            }
            return Ok(Step::Data(n));
        }
        if self.peer_closed {
            return Ok(Step::Eof);
        }
        self.process(&mut Sink::Read(rb), Want::Read)
    }

    /// Encrypts `data` (at most [`SEAL_BATCH`] bytes) into `out`.
    pub(super) fn seal(&mut self, data: &[u8]) -> Result<(), rustls::Error> {
        self.process(&mut Sink::Stash, Want::Seal(data)).map(|_| ())
    }

    /// Queues close_notify once; whether it was queued now.
    pub fn queue_close(&mut self) -> bool {
        if self.close_sent {
            return false;
        }
        self.close_sent = true;
        self.process(&mut Sink::Stash, Want::Close).is_ok()
    }

    /// Records waiting to be sent.
    pub(super) fn pending(&self) -> &[u8] {
        &self.out[self.out_start..self.out_end]
    }

    /// Free space after the waiting records (0 while no buffer is held).
    pub(super) fn out_room(&self) -> usize {
        self.out.capacity().saturating_sub(self.out_end)
    }

    /// `n` bytes of [`Self::pending`] were sent.
    pub(super) fn sent(&mut self, n: usize) {
        self.out_start = (self.out_start + n).min(self.out_end);
        if self.out_start == self.out_end {
            self.out_start = 0;
            self.out_end = 0;
        }
    }

    /// The free space of the incoming record buffer, for a read from the
    /// socket (then [`Self::received`]).
    pub(super) fn inc_spare(&mut self) -> io::Result<&mut [std::mem::MaybeUninit<u8>]> {
        if self.inc.capacity() == 0 {
            self.inc = bufs::take_in();
        }
        if self.inc.capacity() == self.inc.len() {
            return Err(invalid("record larger than the record buffer"));
        }
        Ok(self.inc.spare_capacity_mut())
    }

    /// `n` bytes were read into [`Self::inc_spare`].
    ///
    /// # Safety
    /// The first `n` bytes of the slice `inc_spare` returned must have been
    /// initialized (a `ReadBuf` over it reports them as filled).
    pub(super) unsafe fn received(&mut self, n: usize) {
        let len = self.inc.len() + n;
        debug_assert!(len <= self.inc.capacity());
        // SAFETY: the caller guarantees those `n` bytes after `len` were
        // written, and they lie within the capacity (they were spare).
        unsafe { self.inc.set_len(len) };
    }

    /// After an error: encodes the alert rustls queued, if any.
    pub(super) fn collect_alert(&mut self) {
        if self.out.is_empty() {
            self.out = bufs::take_out();
        }
        for _ in 0..4 {
            let more = match &mut self.conn {
                Side::Server(c) => alert_step(
                    c.process_tls_records(&mut []).state,
                    &mut self.out,
                    &mut self.out_end,
                ),
                Side::Client(c) => alert_step(
                    c.process_tls_records(&mut []).state,
                    &mut self.out,
                    &mut self.out_end,
                ),
            };
            if !more {
                break;
            }
        }
    }

    /// Sends what `out` holds without waiting; `Ok` also when the socket is full.
    pub(super) fn flush_now(&mut self, fd: RawFd) -> io::Result<()> {
        while self.out_start < self.out_end {
            match sys::send(fd, &self.out[self.out_start..self.out_end]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_start += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out_start = 0;
        self.out_end = 0;
        Ok(())
    }

    pub(super) fn pending_out(&self) -> bool {
        self.out_start < self.out_end
    }

    /// Grows a full incoming buffer by a record's worth, up to `limit`
    /// bytes: a handshake message spanning several records stays in the
    /// buffer until complete (rustls's unbuffered API joins it there), and a
    /// backend's certificate chain may be larger than one record.
    pub(super) fn grow_inc(&mut self, limit: usize) {
        if self.inc.capacity() == 0 {
            self.inc = bufs::take_in();
        }
        if self.inc.len() == self.inc.capacity() && self.inc.capacity() < limit {
            self.inc.reserve(bufs::RECORD_BUF);
        }
    }

    /// One non-blocking recv into the incoming buffer.
    pub(super) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        if self.inc.capacity() == 0 {
            self.inc = bufs::take_in();
        }
        let room = self.inc.capacity() - self.inc.len();
        if room == 0 {
            return Err(invalid("record larger than the record buffer"));
        }
        sys::recv_append(fd, &mut self.inc, room)
    }
}

impl Drop for TlsConn {
    /// A closing connection's record buffers go back to the worker's free
    /// lists (a new connection per request would otherwise allocate, and
    /// zero, an outgoing buffer for every handshake).
    fn drop(&mut self) {
        if self.inc.capacity() > 0 {
            bufs::put_in(std::mem::take(&mut self.inc));
        }
        if !self.out.is_empty() {
            bufs::put_out(std::mem::take(&mut self.out));
        }
    }
}

/// Waits until `fd` is writable or `deadline` passes.
pub(super) async fn writable(s: &TcpStream, deadline: Instant) -> io::Result<()> {
    monoio::select! {
        r = s.writable(false) => r,
        _ = monoio::time::sleep_until(deadline) => Err(timed_out()),
    }
}

pub(super) async fn readable(s: &TcpStream, deadline: Instant) -> io::Result<()> {
    monoio::select! {
        r = s.readable(false) => r,
        _ = monoio::time::sleep_until(deadline) => Err(timed_out()),
    }
}

/// Sends everything `t.out` holds; the peer may stall at most until `deadline`.
pub(super) async fn flush(
    s: &TcpStream,
    t: &RefCell<TlsConn>,
    deadline: Instant,
) -> io::Result<()> {
    let fd = s.as_raw_fd();
    loop {
        {
            let mut c = t.borrow_mut();
            c.flush_now(fd)?;
            if !c.pending_out() {
                return Ok(());
            }
        }
        writable(s, deadline).await?;
    }
}

/// The TLS alert `record_overflow` (fatal), for input rustls never sees.
const ALERT_RECORD_OVERFLOW: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 22];

/// Runs the server side of a handshake on `s` until it completes, fails or
/// `deadline` passes. On failure the alert rustls chose (if any) is sent
/// without waiting.
///
/// `early`: bytes of the client's first records already read from `s` (by
/// the edge, after a PROXY header or while peeking at the SNI); rustls takes
/// them before anything from the socket. They are copied once, into the
/// record buffer rustls reads; the caller keeps (and recycles) its buffer.
pub async fn handshake(
    s: &TcpStream,
    config: Arc<rustls::ServerConfig>,
    deadline: Instant,
    early: &[u8],
) -> Result<TlsConn, HandshakeError> {
    let conn = UnbufferedServerConnection::new(config).map_err(HandshakeError::Tls)?;
    let t = RefCell::new(TlsConn::new(Side::Server(conn)));
    let fd = s.as_raw_fd();
    let mut seen_bytes = false;
    if let Some(&first) = early.first() {
        seen_bytes = true;
        // As below: a letter first is an HTTP method, not a handshake record.
        if first.is_ascii_uppercase() {
            return Err(HandshakeError::PlainHttp);
        }
        let mut c = t.borrow_mut();
        c.inc = bufs::take_in();
        if early.len() > c.inc.capacity() {
            let _ = sys::send(fd, &ALERT_RECORD_OVERFLOW);
            return Err(HandshakeError::TooLarge);
        }
        c.inc.extend_from_slice(early);
    }
    super::resolver::take_chosen();
    loop {
        let step = {
            let mut c = t.borrow_mut();
            let r = c.process(&mut Sink::Stash, Want::Read);
            if let Some((cert, sni)) = super::resolver::take_chosen() {
                c.cert = cert;
                c.sni = sni.is_some();
                c.sni_name = sni;
            }
            match r {
                Ok(s) => s,
                Err(e) => {
                    c.collect_alert();
                    let _ = c.flush_now(fd);
                    return Err(HandshakeError::Tls(e));
                }
            }
        };
        let done = !t.borrow().conn.common().is_handshaking();
        if step == Step::Eof {
            return Err(HandshakeError::Closed(io::ErrorKind::UnexpectedEof.into()));
        }
        flush(s, &t, deadline).await.map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut => HandshakeError::Timeout,
            _ => HandshakeError::Closed(e),
        })?;
        if done {
            let mut c = t.into_inner();
            c.resumed = c.conn.common().handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            c.h2 = c.conn.common().alpn_protocol() == Some(b"h2");
            c.client_subject = c
                .conn
                .common()
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(super::certs::subject_of);
            return Ok(c);
        }
        loop {
            let r = t.borrow_mut().recv(fd);
            match r {
                Ok(0) => return Err(HandshakeError::Closed(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {
                    if !seen_bytes {
                        seen_bytes = true;
                        // A TLS connection starts with a handshake record
                        // (0x16); a letter is an HTTP method.
                        let first = t.borrow().inc.first().copied().unwrap_or(0x16);
                        if first.is_ascii_uppercase() {
                            return Err(HandshakeError::PlainHttp);
                        }
                    }
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    readable(s, deadline).await.map_err(|e| match e.kind() {
                        io::ErrorKind::TimedOut => HandshakeError::Timeout,
                        _ => HandshakeError::Closed(e),
                    })?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    let _ = sys::send(fd, &ALERT_RECORD_OVERFLOW);
                    return Err(HandshakeError::TooLarge);
                }
                Err(e) => return Err(HandshakeError::Closed(e)),
            }
        }
    }
}

/// Appends up to `max` decrypted bytes to `buf` (growing it if full).
/// `Ok(0)` is EOF (close_notify, or a bare TCP close); `TimedOut` when
/// nothing arrived before `deadline`.
pub async fn read(
    s: &TcpStream,
    t: &RefCell<TlsConn>,
    buf: &mut Vec<u8>,
    max: usize,
    deadline: Instant,
) -> io::Result<usize> {
    let fd = s.as_raw_fd();
    loop {
        match read_now(fd, t, buf, max) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => readable(s, deadline).await?,
            r => return r,
        }
    }
}

/// [`read`] without the wait: `WouldBlock` when nothing can be decrypted
/// before the socket has more to read (callers that keep their own timers,
/// like gateway sessions, wait for readiness themselves).
pub fn read_now(
    fd: RawFd,
    t: &RefCell<TlsConn>,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    let max = max.max(1);
    let mut c = t.borrow_mut();
    loop {
        if let Some(n) = c.take_plain(buf, max) {
            return Ok(n);
        }
        if c.peer_closed {
            return Ok(0);
        }
        match c.process(&mut Sink::Into(buf, max), Want::Read) {
            Ok(Step::Data(n)) => {
                c.flush_now(fd)?;
                return Ok(n);
            }
            Ok(Step::Eof) => return Ok(0),
            Ok(_) => {}
            Err(e) => {
                c.collect_alert();
                let _ = c.flush_now(fd);
                return Err(invalid(e));
            }
        }
        // Tickets or a KeyUpdate answer rustls produced: best effort now,
        // the next write takes the rest.
        c.flush_now(fd)?;
        match c.recv(fd) {
            Ok(0) => return Ok(0),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Encrypts and sends all of `data`; `TimedOut` when the peer accepts no
/// byte for `stall`.
pub async fn write_all(
    s: &TcpStream,
    t: &RefCell<TlsConn>,
    data: &[u8],
    stall: Duration,
) -> io::Result<()> {
    let fd = s.as_raw_fd();
    let mut pos = 0;
    while !write_now(fd, t, data, &mut pos)? {
        writable(s, Instant::now() + stall).await?;
    }
    Ok(())
}

/// [`write_all`] without the wait: seals `data[*pos..]` up to four records
/// at a time and sends what the socket takes (one `send` per batch). `Ok(true)`: all sent; `Ok(false)`: the
/// socket must become writable first (call again with the same `pos`).
/// With empty `data` it flushes the records already waiting.
pub fn write_now(
    fd: RawFd,
    t: &RefCell<TlsConn>,
    data: &[u8],
    pos: &mut usize,
) -> io::Result<bool> {
    let mut c = t.borrow_mut();
    loop {
        c.flush_now(fd)?;
        if c.pending_out() {
            return Ok(false);
        }
        if *pos >= data.len() {
            return Ok(true);
        }
        let end = data.len().min(*pos + SEAL_BATCH);
        c.process(&mut Sink::Stash, Want::Seal(&data[*pos..end]))
            .map_err(invalid)?;
        *pos = end;
    }
}

/// Sends close_notify (best effort, bounded by `stall`).
pub async fn close(s: &TcpStream, t: &RefCell<TlsConn>, stall: Duration) {
    let queued = {
        let mut c = t.borrow_mut();
        if c.close_sent {
            return;
        }
        c.close_sent = true;
        c.process(&mut Sink::Stash, Want::Close).is_ok()
    };
    if queued {
        let _ = flush(s, t, Instant::now() + stall).await;
    }
}
