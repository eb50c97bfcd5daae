//! Per-route ring buffers of backend process output, line by line.
//!
//! The supervisor appends (on the control thread); the API reads with a
//! sequence number so a follower (`ringmesh logs -f`) asks only for what is new.
//! A `Mutex` keeps it safe for any thread, though today both sides run on the
//! control thread, so it is never contended.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Lines kept per route.
pub const RING_LINES: usize = 1000;
/// Longest line kept, in bytes; longer lines are cut and marked with `…`.
pub const MAX_LINE: usize = 4096;

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One captured line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Position in the route's stream of lines, from 0; never reused.
    pub seq: u64,
    /// Wall clock, ms since the Unix epoch.
    pub ts_ms: u64,
    pub backend: String,
    pub stream: Stream,
    pub line: String,
}

#[derive(Debug, Default)]
struct Inner {
    lines: VecDeque<LogLine>,
    next: u64,
}

/// The last [`RING_LINES`] lines of a route's processes.
#[derive(Debug, Default)]
pub struct LogRing {
    inner: Mutex<Inner>,
}

impl LogRing {
    pub fn push(&self, backend: &str, stream: Stream, line: &[u8]) {
        let mut text = String::from_utf8_lossy(line).into_owned();
        if text.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        let ts_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let seq = g.next;
        g.next += 1;
        if g.lines.len() == RING_LINES {
            g.lines.pop_front();
        }
        g.lines.push_back(LogLine {
            seq,
            ts_ms,
            backend: backend.to_string(),
            stream,
            line: text,
        });
    }

    /// Lines with `seq >= since` still in the ring, and the `since` to ask with next.
    pub fn since(&self, since: u64) -> (Vec<LogLine>, u64) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let lines = g.lines.iter().filter(|l| l.seq >= since).cloned().collect();
        (lines, g.next)
    }
}

/// Splits a pipe's bytes into lines, bounding a line's length (a child that
/// never writes a newline cannot grow ringmesh's memory).
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    /// The current line was already cut at [`MAX_LINE`]: drop bytes up to its newline.
    skipping: bool,
}

impl LineSplitter {
    /// Feeds bytes; calls `emit` for each complete (or cut) line, without its newline.
    pub fn feed(&mut self, mut bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            match memchr::memchr(b'\n', bytes) {
                Some(i) => {
                    if !self.skipping {
                        self.partial.extend_from_slice(&bytes[..i]);
                        let line = self.partial.strip_suffix(b"\r").unwrap_or(&self.partial);
                        emit(line);
                    }
                    self.partial.clear();
                    self.skipping = false;
                    bytes = &bytes[i + 1..];
                }
                None => {
                    if !self.skipping {
                        self.partial.extend_from_slice(bytes);
                        if self.partial.len() > MAX_LINE {
                            // LogRing::push cuts it and adds the mark.
                            emit(&self.partial);
                            self.partial.clear();
                            self.skipping = true;
                        }
                    }
                    bytes = &[];
                }
            }
        }
    }

    /// At EOF: emits what is left without a newline.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.partial.is_empty() && !self.skipping {
            emit(&self.partial);
        }
        self.partial.clear();
        self.skipping = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_last_lines_with_stable_sequence_numbers() {
        let r = LogRing::default();
        for i in 0..(RING_LINES + 5) {
            r.push("b", Stream::Stdout, format!("line {i}").as_bytes());
        }
        let (all, next) = r.since(0);
        assert_eq!(all.len(), RING_LINES);
        assert_eq!(all[0].seq, 5);
        assert_eq!(all[0].line, "line 5");
        assert_eq!(next, RING_LINES as u64 + 5);
        let (tail, next2) = r.since(next - 2);
        assert_eq!(tail.len(), 2);
        assert_eq!(next2, next);
        assert!(r.since(next).0.is_empty());
    }

    #[test]
    fn splitter_handles_partial_long_and_crlf_lines() {
        let mut s = LineSplitter::default();
        let mut out: Vec<Vec<u8>> = Vec::new();
        s.feed(b"hel", |l| out.push(l.to_vec()));
        s.feed(b"lo\r\nwor", |l| out.push(l.to_vec()));
        s.feed(b"ld\n\n", |l| out.push(l.to_vec()));
        assert_eq!(out, [&b"hello"[..], b"world", b""]);
        out.clear();
        let long = vec![b'x'; MAX_LINE + 10];
        s.feed(&long, |l| out.push(l.to_vec()));
        s.feed(b"yyy\nnext", |l| out.push(l.to_vec()));
        s.finish(|l| out.push(l.to_vec()));
        // The rest of a cut line ("yyy") is dropped; the next line is whole.
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), MAX_LINE + 10);
        assert_eq!(out[1], b"next".to_vec());
        let r = LogRing::default();
        r.push("b", Stream::Stderr, &out[0]);
        let l = &r.since(0).0[0];
        assert!(l.line.ends_with('…') && l.line.len() <= MAX_LINE + 3);
    }
}
