//! The access log writer: one thread per process that owns the log files.
//!
//! Workers hand it full (or 100 ms old) buffers over a bounded channel with
//! `try_send`; a full channel drops the buffer and counts its lines, so a
//! slow or full disk never blocks a worker. Written buffers go back over a
//! second channel for reuse, so the steady state allocates nothing. Files
//! are opened on first use in append mode, closed and reopened on
//! [`reopen`] (SIGUSR1, after logrotate renamed them), and a file that
//! cannot be opened or written is counted and warned about (at most once
//! every 10 s per file) while serving goes on.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

/// Buffers in flight to the writer (each up to [`super::BUF_FLUSH`] bytes).
const CHANNEL: usize = 256;
/// Empty buffers kept for reuse.
const FREE: usize = 64;
/// Least time between two warnings about one file.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Where a log goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dest {
    Stderr,
    File(PathBuf),
}

impl std::fmt::Display for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dest::Stderr => f.write_str("stderr"),
            Dest::File(p) => write!(f, "{}", p.display()),
        }
    }
}

enum Msg {
    Data { sink: u16, buf: Vec<u8>, lines: u64 },
    Reopen,
    Flush(Sender<()>),
}

/// Counters of the access log, for status and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Lines written to their destination.
    pub written: AtomicU64,
    /// Lines dropped: the writer's channel was full.
    pub dropped: AtomicU64,
    /// Lines lost to a failed open or write (unwritable path, full disk).
    pub failed: AtomicU64,
    /// Failed opens and writes.
    pub errors: AtomicU64,
    /// Reopens done (SIGUSR1).
    pub reopens: AtomicU64,
}

/// The process's access log writer: destinations by sink id, the channels.
pub struct Hub {
    tx: Sender<Msg>,
    free: Receiver<Vec<u8>>,
    dests: Mutex<Vec<Dest>>,
    pub stats: Stats,
}

static HUB: OnceLock<Hub> = OnceLock::new();

/// The writer, started on first use.
pub fn hub() -> &'static Hub {
    HUB.get_or_init(|| {
        let (tx, rx) = bounded::<Msg>(CHANNEL);
        let (free_tx, free_rx) = bounded::<Vec<u8>>(FREE);
        let spawned = std::thread::Builder::new()
            .name("ringmesh-log".into())
            .spawn(move || run(rx, free_tx));
        if let Err(e) = spawned {
            tracing::error!("access log writer thread failed to start: {e}; lines are dropped");
        }
        Hub {
            tx,
            free: free_rx,
            dests: Mutex::new(Vec::new()),
            stats: Stats::default(),
        }
    })
}

/// The hub if some access log was ever configured.
pub fn get() -> Option<&'static Hub> {
    HUB.get()
}

impl Hub {
    fn dests(&self) -> std::sync::MutexGuard<'_, Vec<Dest>> {
        self.dests.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sink id of `dest` (the same id for the same destination across
    /// reloads). Called when a config is built, never per request.
    pub fn sink(&self, dest: &Dest) -> u16 {
        let mut d = self.dests();
        if let Some(i) = d.iter().position(|x| x == dest) {
            return i as u16;
        }
        d.push(dest.clone());
        (d.len() - 1).min(u16::MAX as usize) as u16
    }

    fn dest(&self, sink: u16) -> Option<Dest> {
        self.dests().get(sink as usize).cloned()
    }

    /// Hands a buffer of `lines` lines to the writer; never blocks.
    pub fn send(&self, sink: u16, buf: Vec<u8>, lines: u64) {
        match self.tx.try_send(Msg::Data { sink, buf, lines }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(lines, Relaxed);
            }
        }
    }

    /// An empty buffer (reused when one came back from the writer).
    pub fn take_buf(&self) -> Vec<u8> {
        self.free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(super::BUF_CAPACITY))
    }

    /// Closes and reopens every file (after logrotate moved them).
    pub fn reopen(&self) {
        let _ = self.tx.try_send(Msg::Reopen);
    }

    /// Waits (at most `limit`) until everything sent so far is written.
    pub fn flush(&self, limit: Duration) -> bool {
        let (tx, rx) = bounded(1);
        if self.tx.send_timeout(Msg::Flush(tx), limit).is_err() {
            return false;
        }
        rx.recv_timeout(limit).is_ok()
    }
}

struct Out {
    file: Option<File>,
    last_warn: Option<Instant>,
}

fn run(rx: Receiver<Msg>, free: Sender<Vec<u8>>) {
    let mut outs: Vec<Out> = Vec::new();
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Data {
                sink,
                mut buf,
                lines,
            } => {
                let hub = hub();
                let i = sink as usize;
                while outs.len() <= i {
                    outs.push(Out {
                        file: None,
                        last_warn: None,
                    });
                }
                let Some(dest) = hub.dest(sink) else { continue };
                let out = &mut outs[i];
                let r = match &dest {
                    Dest::Stderr => std::io::stderr().lock().write_all(&buf),
                    Dest::File(p) => open(&mut out.file, p).and_then(|f| f.write_all(&buf)),
                };
                match r {
                    Ok(()) => {
                        hub.stats.written.fetch_add(lines, Relaxed);
                    }
                    Err(e) => {
                        // A failed write may have written part of the buffer:
                        // reopen next time (a full disk may have room again).
                        out.file = None;
                        hub.stats.failed.fetch_add(lines, Relaxed);
                        hub.stats.errors.fetch_add(1, Relaxed);
                        if out.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                            out.last_warn = Some(Instant::now());
                            tracing::warn!(
                                log = %dest,
                                lost_lines = hub.stats.failed.load(Relaxed),
                                "access log not written: {e}"
                            );
                        }
                    }
                }
                buf.clear();
                if buf.capacity() <= 2 * super::BUF_CAPACITY {
                    let _ = free.try_send(buf);
                }
            }
            Msg::Reopen => {
                for o in &mut outs {
                    o.file = None;
                }
                if let Some(h) = get() {
                    h.stats.reopens.fetch_add(1, Relaxed);
                }
                tracing::info!("access logs reopened");
            }
            Msg::Flush(done) => {
                for f in outs.iter_mut().filter_map(|o| o.file.as_mut()) {
                    let _ = f.flush();
                }
                let _ = done.send(());
            }
        }
    }
}

fn open<'f>(slot: &'f mut Option<File>, path: &std::path::Path) -> std::io::Result<&'f mut File> {
    if slot.is_none() {
        *slot = Some(OpenOptions::new().create(true).append(true).open(path)?);
    }
    slot.as_mut()
        .ok_or_else(|| std::io::Error::other("no file"))
}
