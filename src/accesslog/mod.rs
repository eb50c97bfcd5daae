//! Access logs: one line per HTTP exchange and per tcp connection.
//!
//! Off the request path: the exchange keeps a few plain fields while it
//! runs ([`Pending`]), then formats one line into its worker's buffer
//! ([`WorkerLog`]); a full buffer, or one older than a worker tick (100 ms),
//! goes to the writer thread ([`writer`]) with a `try_send`. A route
//! without an access log pays one branch per request.
//!
//! - [`format`]: JSON and combined lines, escaping any byte (pure).
//! - [`http`]: what an HTTP exchange notes and writes.
//! - [`writer`]: the writer thread, files, SIGUSR1 reopen, error counters.

pub mod format;
pub mod http;
pub mod writer;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use monoio::time::Instant;

pub use format::{Kind, Record};
pub use writer::{Dest, Hub, Stats};

/// A worker hands its buffer to the writer once it holds this much.
pub const BUF_FLUSH: usize = 60 * 1024;
/// Capacity of a new buffer (a line never splits across buffers).
pub const BUF_CAPACITY: usize = 64 * 1024;

/// Line format of an access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Combined,
}

/// A resolved log destination of a route: the writer's sink and the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sink {
    pub id: u16,
    pub format: Format,
}

impl Sink {
    /// Registers `dest` with the writer (starting it on first use).
    pub fn new(dest: &Dest, format: Format) -> Sink {
        Sink {
            id: writer::hub().sink(dest),
            format,
        }
    }
}

/// Closes and reopens every access log file (SIGUSR1).
pub fn reopen() {
    if let Some(h) = writer::get() {
        h.reopen();
    }
}

/// Waits until every line handed to the writer is written (shutdown).
pub fn flush(limit: Duration) -> bool {
    writer::get().is_none_or(|h| h.flush(limit))
}

/// The writer's counters, when an access log exists.
pub fn stats() -> Option<&'static Stats> {
    writer::get().map(|h| &h.stats)
}

/// Appends the writer's counters in the Prometheus text format (nothing
/// when no access log was ever configured).
pub fn metrics(out: &mut String) {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;
    let Some(s) = stats() else { return };
    for (name, help, v) in [
        ("written", "Access log lines written.", &s.written),
        (
            "dropped",
            "Access log lines dropped because the writer fell behind.",
            &s.dropped,
        ),
        (
            "failed",
            "Access log lines lost to an unwritable file or a full disk.",
            &s.failed,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP ringmesh_access_log_lines_{name}_total {help}\n# TYPE ringmesh_access_log_lines_{name}_total counter\nringmesh_access_log_lines_{name}_total {}",
            v.load(Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP ringmesh_access_log_errors_total Failed opens and writes of access log files.\n# TYPE ringmesh_access_log_errors_total counter\nringmesh_access_log_errors_total {}",
        s.errors.load(Relaxed)
    );
}

/// One worker's buffers, one per sink.
#[derive(Default)]
pub struct WorkerLog {
    bufs: RefCell<Vec<(Vec<u8>, u64)>>,
}

impl WorkerLog {
    /// Formats `r` into the buffer of `sink`; hands the buffer over when full.
    pub fn write(&self, sink: Sink, r: &Record<'_>) {
        let mut bufs = self.bufs.borrow_mut();
        let i = sink.id as usize;
        while bufs.len() <= i {
            bufs.push((Vec::new(), 0));
        }
        let Some((buf, lines)) = bufs.get_mut(i) else {
            return;
        };
        if buf.capacity() == 0 {
            *buf = writer::hub().take_buf();
        }
        match sink.format {
            Format::Json => format::json(buf, r),
            Format::Combined => format::combined(buf, r),
        }
        *lines += 1;
        if buf.len() >= BUF_FLUSH {
            let full = std::mem::take(buf);
            writer::hub().send(sink.id, full, std::mem::take(lines));
        }
    }

    /// Hands every non-empty buffer to the writer (each worker tick, and
    /// when the worker stops).
    pub fn flush(&self) {
        let mut bufs = self.bufs.borrow_mut();
        for (i, (buf, lines)) in bufs.iter_mut().enumerate() {
            if !buf.is_empty() {
                let full = std::mem::take(buf);
                writer::hub().send(i as u16, full, std::mem::take(lines));
            }
        }
    }
}

/// Field limits of the request-side copy: longer values are cut (a head
/// may be 64 KiB; a log line should not).
const MAX_TARGET: usize = 4096;
const MAX_FIELD: usize = 512;

/// An exchange being logged: filled while it runs, written when it ends.
/// Lives in an exchange's scratch space; a connection whose requests are
/// logged keeps it (boxed) for the next one, with its buffer.
#[derive(Default)]
pub struct Pending {
    /// This exchange is logged (some access log is configured).
    pub on: bool,
    pub start: Option<Instant>,
    /// When the upstream connect began (for the time to first byte).
    pub up_start: Option<Instant>,
    pub ttfb_us: Option<u64>,
    /// Status sent to the client (0: none).
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub upstream: Option<SocketAddr>,
    /// Index of the route in `live.routes` (None: no route matched).
    pub route: Option<usize>,
    pub protocol: &'static str,
    pub close_reason: Option<&'static str>,
    /// Method, target, user agent, referer, request id, copied from the head
    /// (the client buffer moves on before the exchange ends).
    req: Vec<u8>,
    /// Where each field above sits in `req`; `None` for an absent header.
    spans: [Option<(u32, u32)>; 5],
}

/// Index of a field in `Pending::req`.
#[derive(Clone, Copy)]
pub enum Field {
    Method = 0,
    Target = 1,
    UserAgent = 2,
    Referer = 3,
    RequestId = 4,
}

impl Pending {
    /// Starts logging an exchange.
    pub fn begin(&mut self, protocol: &'static str) {
        self.on = true;
        self.start = Some(Instant::now());
        self.up_start = None;
        self.ttfb_us = None;
        self.status = 0;
        self.bytes_in = 0;
        self.bytes_out = 0;
        self.upstream = None;
        self.route = None;
        self.protocol = protocol;
        self.close_reason = None;
        self.req.clear();
        self.spans = [None; 5];
    }

    /// Records a request field (cut to a sane length).
    pub fn set(&mut self, f: Field, v: &[u8]) {
        let max = if matches!(f, Field::Target) {
            MAX_TARGET
        } else {
            MAX_FIELD
        };
        let v = v.get(..max.min(v.len())).unwrap_or(v);
        let start = self.req.len() as u32;
        self.req.extend_from_slice(v);
        if let Some(e) = self.spans.get_mut(f as usize) {
            *e = Some((start, self.req.len() as u32));
        }
    }

    fn get(&self, f: Field) -> Option<&[u8]> {
        let (start, end) = (*self.spans.get(f as usize)?)?;
        self.req.get(start as usize..end as usize)
    }

    /// Marks the first response byte from the upstream.
    #[inline]
    pub fn first_byte(&mut self) {
        if self.on && self.ttfb_us.is_none() {
            if let Some(t) = self.up_start {
                self.ttfb_us = Some(t.elapsed().as_micros() as u64);
            }
        }
    }

    /// Marks the start of the upstream connect.
    #[inline]
    pub fn upstream_begins(&mut self) {
        if self.on {
            self.up_start = Some(Instant::now());
        }
    }

    /// Writes the line to `log` and ends this exchange's logging.
    pub fn finish(
        &mut self,
        log: &WorkerLog,
        sink: Sink,
        route: &str,
        client: SocketAddr,
        tls: TlsFields<'_>,
    ) {
        self.on = false;
        let duration_us = self.start.map_or(0, |t| t.elapsed().as_micros() as u64);
        let rec = Record {
            time_ms: wall_ms(),
            kind: Kind::Http,
            route,
            client,
            method: self.get(Field::Method).unwrap_or(b"-"),
            target: self.get(Field::Target).unwrap_or(b"-"),
            protocol: self.protocol,
            status: self.status,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            duration_us,
            upstream: self.upstream,
            upstream_ttfb_us: self.ttfb_us,
            request_id: self.get(Field::RequestId),
            user_agent: self.get(Field::UserAgent),
            referer: self.get(Field::Referer),
            tls_version: tls.0,
            sni: tls.1,
            close_reason: self.close_reason,
        };
        log.write(sink, &rec);
    }
}

/// A TLS connection's protocol version and SNI name, for its lines.
pub type TlsFields<'a> = (Option<&'a str>, Option<&'a [u8]>);

/// Wall-clock ms since the Unix epoch.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
