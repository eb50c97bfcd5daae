//! Chunked framing scanner.
//!
//! Two modes, chosen by the first input byte:
//! - raw (even): the rest is fed as a chunked body, cut into pieces whose
//!   lengths come from the input, some chunk data skipped with
//!   `consume_data` as the splice path does. The verdict (end offset or the
//!   error) must be the same as when feeding all bytes at once, consumption
//!   never exceeds the input, and errors and completion are final.
//! - round trip (odd): the rest describes a body (data bytes, chunk sizes,
//!   extensions, trailers) that is encoded as valid chunked framing, followed
//!   by bytes of the next message. The scanner must accept it split anywhere,
//!   stop exactly at its end, and the data bytes it hands out (data_remaining
//!   / consume_data) must be the original data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmesh::http::chunked::{ChunkError, ChunkedScanner};

/// Reads bytes of the fuzz input as a stream of small numbers.
struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
}

/// Whole-input verdict: `Ok(end)` or the error.
fn whole(input: &[u8]) -> Result<Option<usize>, ChunkError> {
    let mut s = ChunkedScanner::with_limits(64, 256);
    let p = s.advance(input)?;
    assert!(p.consumed <= input.len());
    if p.done {
        Ok(Some(p.consumed))
    } else {
        assert_eq!(p.consumed, input.len());
        Ok(None)
    }
}

fn raw(cuts: &[u8], input: &[u8]) {
    let expect = whole(input);
    let mut s = ChunkedScanner::with_limits(64, 256);
    let mut pos = 0;
    let mut c = Bytes { data: cuts, pos: 0 };
    let got = loop {
        if pos >= input.len() {
            break Ok(if s.is_done() { Some(pos) } else { None });
        }
        // Skip some chunk data without scanning it, as splice does.
        let skip_want = u64::from(c.next() % 4);
        if s.data_remaining() > 0 && skip_want > 0 {
            let avail = (input.len() - pos) as u64;
            let take = s.consume_data(skip_want.min(avail));
            assert!(take <= skip_want.min(avail));
            pos += take as usize;
            continue;
        }
        let len = (usize::from(c.next()) % 17).max(1);
        let end = (pos + len).min(input.len());
        let piece = end - pos;
        match s.advance(&input[pos..end]) {
            Ok(p) => {
                assert!(p.consumed <= piece);
                pos += p.consumed;
                if p.done {
                    assert!(s.is_done());
                    assert_eq!(
                        s.advance(b"0\r\n\r\n").unwrap().consumed,
                        0,
                        "done is final"
                    );
                    break Ok(Some(pos));
                }
                assert_eq!(p.consumed, piece, "partial consume without done");
            }
            Err(e) => {
                assert_eq!(s.advance(b"0\r\n\r\n"), Err(e), "errors are final");
                break Err(e);
            }
        }
    };
    assert_eq!(got, expect, "verdict depends on how the body was split");
}

fn hex(n: usize, upper: bool, zeros: usize) -> Vec<u8> {
    let mut s = "0".repeat(zeros);
    if upper {
        s.push_str(&format!("{n:X}"));
    } else {
        s.push_str(&format!("{n:x}"));
    }
    s.into_bytes()
}

fn round_trip(spec: &[u8]) {
    let mut b = Bytes { data: spec, pos: 0 };
    let data_len = usize::from(b.next()) * 4 + usize::from(b.next() % 4);
    let data: Vec<u8> = (0..data_len)
        .map(|i| spec.get(i % spec.len().max(1)).copied().unwrap_or(0) ^ (i as u8))
        .collect();
    let mut enc = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let n = (usize::from(b.next()) % 40 + 1).min(data.len() - off);
        let flags = b.next();
        enc.extend(hex(n, flags & 1 != 0, usize::from(flags >> 5)));
        if flags & 2 != 0 {
            enc.extend_from_slice(b" \t");
        }
        if flags & 6 != 0 {
            enc.extend_from_slice(b";name=\"v a\";x");
        }
        enc.extend_from_slice(b"\r\n");
        enc.extend_from_slice(&data[off..off + n]);
        enc.extend_from_slice(b"\r\n");
        off += n;
    }
    enc.extend_from_slice(b"0");
    if b.next() & 1 != 0 {
        enc.extend_from_slice(b";last");
    }
    enc.extend_from_slice(b"\r\n");
    for i in 0..(b.next() % 3) {
        enc.extend_from_slice(format!("X-T{i}: v{i}\r\n").as_bytes());
    }
    enc.extend_from_slice(b"\r\n");
    let body_len = enc.len();
    enc.extend_from_slice(b"GET /next HTTP/1.1\r\n");

    assert_eq!(
        whole(&enc),
        Ok(Some(body_len)),
        "{:?}",
        String::from_utf8_lossy(&enc)
    );

    // Decode: framing bytes through `advance` in pieces, data bytes taken
    // out through data_remaining/consume_data.
    let mut s = ChunkedScanner::with_limits(64, 256);
    let mut out = Vec::new();
    let mut pos = 0;
    while !s.is_done() {
        assert!(pos < enc.len(), "scanner wants more than the body");
        let r = s.data_remaining();
        if r > 0 {
            let n = (usize::from(b.next()) % 23 + 1)
                .min(r as usize)
                .min(enc.len() - pos);
            assert_eq!(s.consume_data(n as u64), n as u64);
            out.extend_from_slice(&enc[pos..pos + n]);
            pos += n;
        } else {
            let p = s
                .advance(&enc[pos..pos + 1])
                .expect("valid framing rejected");
            pos += p.consumed;
        }
    }
    assert_eq!(pos, body_len, "body end");
    assert_eq!(out, data, "decoded data differs");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // Cut lengths from the first third, the body from the rest.
        let split = rest.len() / 3;
        let (cuts, input) = rest.split_at(split);
        raw(cuts, input);
    } else {
        round_trip(rest);
    }
});
