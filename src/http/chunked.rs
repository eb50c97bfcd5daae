//! Incremental scanner for chunked bodies (RFC 9112 §7.1) in pass-through.
//!
//! The proxy forwards chunked bytes unchanged, so this does not decode: it
//! finds where the body ends and rejects framing a backend or client could
//! read differently (bad hex, overflow, bare LF, missing CRLF). It keeps a
//! few words of state, accepts input split at any byte, and lets the caller
//! splice chunk data without looking at it.

use core::fmt;

/// Default bound on one chunk-size line's extension bytes.
///
/// Why: extensions are otherwise unbounded input the proxy must scan.
pub const MAX_CHUNK_EXT: usize = 4 * 1024;

/// Default bound on the trailer section (all field lines plus final CRLF).
pub const MAX_TRAILERS: usize = 64 * 1024;

/// Maximum hex digits in a chunk size (u64).
const MAX_SIZE_DIGITS: u8 = 16;

/// Why a chunked body was rejected; the connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// Chunk size empty or not hex (`-1`, `0x5`, ...).
    BadSize,
    /// Chunk size longer than 16 hex digits.
    SizeOverflow,
    /// Invalid byte in a chunk extension.
    BadExtension,
    /// Chunk extension longer than the limit.
    ExtensionTooLong,
    /// Chunk data not followed by CRLF.
    MissingDataCrlf,
    /// LF without CR, or CR without LF.
    BadLineEnding,
    /// Malformed trailer field line (including obs-fold).
    BadTrailer,
    /// Trailer section longer than the limit.
    TrailerTooLarge,
    /// Chunk data over the body limit set with [`ChunkedScanner::limit_data`]
    /// (found at the chunk-size line, before the chunk's data).
    TooLarge,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkError::BadSize => "invalid chunk size",
            ChunkError::SizeOverflow => "chunk size overflow",
            ChunkError::BadExtension => "invalid chunk extension",
            ChunkError::ExtensionTooLong => "chunk extension too long",
            ChunkError::MissingDataCrlf => "missing CRLF after chunk data",
            ChunkError::BadLineEnding => "bare CR or LF in chunked framing",
            ChunkError::BadTrailer => "invalid trailer field",
            ChunkError::TrailerTooLarge => "trailer section too large",
            ChunkError::TooLarge => "body over the size limit",
        })
    }
}

impl std::error::Error for ChunkError {}

/// What one [`ChunkedScanner::advance`] call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Leading input bytes that belong to the body (forward exactly these).
    /// Less than the input length only when `done`.
    pub consumed: usize,
    /// The body ended with the final CRLF; later bytes are the next message.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading chunk-size hex digits.
    Size { digits: u8, value: u64 },
    /// BWS after the size; only `;` (an extension) may follow.
    SizeWs { value: u64, len: usize },
    /// Inside chunk extensions, up to CR.
    Ext { value: u64, len: usize },
    /// CR of the chunk-size line seen.
    SizeLf { value: u64 },
    /// Inside chunk data.
    Data { remaining: u64 },
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// Start of a trailer line or of the final CRLF.
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value.
    TrailerValue,
    /// CR ending a trailer field line seen.
    TrailerLf,
    /// CR of the final empty line seen.
    EndLf,
    /// Body complete.
    Done,
    /// Rejected; stays rejected.
    Failed(ChunkError),
}

/// Incremental chunked-body framing scanner.
///
/// Why: pass-through needs the body's end without decoding or copying it.
#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    state: State,
    trailer_len: usize,
    max_ext: usize,
    max_trailers: usize,
    /// Chunk-data bytes announced so far, and the most allowed.
    data_len: u64,
    max_data: u64,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedScanner {
    /// A scanner at the start of a body, with the default limits.
    pub fn new() -> Self {
        Self::with_limits(MAX_CHUNK_EXT, MAX_TRAILERS)
    }

    /// A scanner with explicit extension and trailer limits (bytes).
    pub fn with_limits(max_ext: usize, max_trailers: usize) -> Self {
        ChunkedScanner {
            state: State::Size {
                digits: 0,
                value: 0,
            },
            trailer_len: 0,
            max_ext,
            max_trailers,
            data_len: 0,
            max_data: u64::MAX,
        }
    }

    /// Fails the body with [`ChunkError::TooLarge`] at the size line of the
    /// chunk that takes its data past `max` bytes (`max_body`).
    pub fn limit_data(&mut self, max: u64) {
        self.max_data = max;
    }

    /// Reuses the scanner for a new body, keeping its limits.
    pub fn reset(&mut self) {
        *self = Self::with_limits(self.max_ext, self.max_trailers);
    }

    /// True once the final CRLF was seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// True inside the trailer section (after the last chunk's size line,
    /// before the end): the bytes `advance` takes now are trailer fields.
    pub fn in_trailers(&self) -> bool {
        matches!(
            self.state,
            State::TrailerStart
                | State::TrailerName
                | State::TrailerValue
                | State::TrailerLf
                | State::EndLf
        )
    }

    /// Chunk-data bytes left in the current chunk; 0 outside chunk data.
    ///
    /// Why: while positive, the caller may move up to this many bytes
    /// (e.g. splice) without scanning, then report them to `consume_data`.
    pub fn data_remaining(&self) -> u64 {
        match self.state {
            State::Data { remaining } => remaining,
            _ => 0,
        }
    }

    /// Accounts for `n` chunk-data bytes forwarded without `advance`;
    /// returns how many were accepted (at most `data_remaining()`).
    pub fn consume_data(&mut self, n: u64) -> u64 {
        let State::Data { remaining } = self.state else {
            return 0;
        };
        let take = n.min(remaining);
        self.state = if take == remaining {
            State::DataCr
        } else {
            State::Data {
                remaining: remaining - take,
            }
        };
        take
    }

    /// Scans `input`, the next bytes of the body.
    ///
    /// Returns how many leading bytes belong to the body and whether it
    /// ended. After `done`, further calls consume nothing. After an error,
    /// every call returns the same error.
    pub fn advance(&mut self, input: &[u8]) -> Result<Progress, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::Failed(e) => return Err(e),
                State::Data { remaining } => {
                    let avail = (input.len() - i) as u64;
                    let take = remaining.min(avail);
                    // take <= avail, which came from a usize.
                    i += take as usize;
                    self.state = if take == remaining {
                        State::DataCr
                    } else {
                        State::Data {
                            remaining: remaining - take,
                        }
                    };
                }
                _ => {
                    let Some(&b) = input.get(i) else { break };
                    i += 1;
                    if let Err(e) = self.step(b) {
                        self.state = State::Failed(e);
                        return Err(e);
                    }
                }
            }
        }
        if let State::Failed(e) = self.state {
            return Err(e);
        }
        Ok(Progress {
            consumed: i,
            done: self.state == State::Done,
        })
    }

    /// Advances the framing state machine by one byte outside chunk data.
    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        self.state = match self.state {
            State::Size { digits, value } => match hex_value(b) {
                Some(d) => {
                    if digits >= MAX_SIZE_DIGITS {
                        return Err(ChunkError::SizeOverflow);
                    }
                    State::Size {
                        digits: digits + 1,
                        value: (value << 4) | u64::from(d),
                    }
                }
                None if digits == 0 => return Err(ChunkError::BadSize),
                None => match b {
                    b'\r' => State::SizeLf { value },
                    b';' => State::Ext { value, len: 1 },
                    b' ' | b'\t' => State::SizeWs { value, len: 1 },
                    b'\n' => return Err(ChunkError::BadLineEnding),
                    _ => return Err(ChunkError::BadSize),
                },
            },
            State::SizeWs { value, len } => {
                let len = self.ext_len(len)?;
                match b {
                    b' ' | b'\t' => State::SizeWs { value, len },
                    b';' => State::Ext { value, len },
                    b'\n' => return Err(ChunkError::BadLineEnding),
                    _ => return Err(ChunkError::BadSize),
                }
            }
            State::Ext { value, len } => match b {
                b'\r' => State::SizeLf { value },
                b'\n' => return Err(ChunkError::BadLineEnding),
                b'\t' | 0x20..=0x7e | 0x80..=0xff => State::Ext {
                    value,
                    len: self.ext_len(len)?,
                },
                _ => return Err(ChunkError::BadExtension),
            },
            State::SizeLf { value } => match (b, value) {
                (b'\n', 0) => State::TrailerStart,
                (b'\n', remaining) => {
                    self.data_len = self.data_len.saturating_add(remaining);
                    if self.data_len > self.max_data {
                        return Err(ChunkError::TooLarge);
                    }
                    State::Data { remaining }
                }
                _ => return Err(ChunkError::BadLineEnding),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(ChunkError::MissingDataCrlf),
            },
            State::DataLf => match b {
                b'\n' => State::Size {
                    digits: 0,
                    value: 0,
                },
                _ => return Err(ChunkError::MissingDataCrlf),
            },
            State::TrailerStart => {
                self.trailer_byte()?;
                match b {
                    b'\r' => State::EndLf,
                    b'\n' => return Err(ChunkError::BadLineEnding),
                    _ if is_tchar(b) => State::TrailerName,
                    _ => return Err(ChunkError::BadTrailer),
                }
            }
            State::TrailerName => {
                self.trailer_byte()?;
                match b {
                    b':' => State::TrailerValue,
                    _ if is_tchar(b) => State::TrailerName,
                    _ => return Err(ChunkError::BadTrailer),
                }
            }
            State::TrailerValue => {
                self.trailer_byte()?;
                match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(ChunkError::BadLineEnding),
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => State::TrailerValue,
                    _ => return Err(ChunkError::BadTrailer),
                }
            }
            State::TrailerLf => {
                self.trailer_byte()?;
                match b {
                    b'\n' => State::TrailerStart,
                    _ => return Err(ChunkError::BadLineEnding),
                }
            }
            State::EndLf => {
                self.trailer_byte()?;
                match b {
                    b'\n' => State::Done,
                    _ => return Err(ChunkError::BadLineEnding),
                }
            }
            // Not reached: `advance` handles these before calling `step`.
            s @ (State::Data { .. } | State::Done | State::Failed(_)) => s,
        };
        Ok(())
    }

    fn ext_len(&self, len: usize) -> Result<usize, ChunkError> {
        let len = len.saturating_add(1);
        if len > self.max_ext {
            Err(ChunkError::ExtensionTooLong)
        } else {
            Ok(len)
        }
    }

    fn trailer_byte(&mut self) -> Result<(), ChunkError> {
        self.trailer_len = self.trailer_len.saturating_add(1);
        if self.trailer_len > self.max_trailers {
            Err(ChunkError::TrailerTooLarge)
        } else {
            Ok(())
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+'
        | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces cut at `cuts`; returns (consumed, done).
    fn feed(
        s: &mut ChunkedScanner,
        input: &[u8],
        cuts: &[usize],
    ) -> Result<(usize, bool), ChunkError> {
        let mut pos = 0;
        let mut bounds: Vec<usize> = cuts.to_vec();
        bounds.push(input.len());
        for end in bounds {
            let p = s.advance(&input[pos..end])?;
            if p.done {
                return Ok((pos + p.consumed, true));
            }
            assert_eq!(p.consumed, end - pos, "must consume all input unless done");
            pos = end;
        }
        Ok((pos, s.is_done()))
    }

    const VALID: &[&[u8]] = &[
        b"0\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"A\r\n0123456789\r\n0\r\n\r\n",
        b"a;name=value\r\n0123456789\r\n0;last\r\n\r\n",
        b"3 ;ext=\"q s\"\r\nabc\r\n0\r\n\r\n",
        b"000003\r\nabc\r\n0000\r\n\r\n",
        b"3\r\nabc\r\n0\r\nExpires: never\r\nX-Sum: abc\r\n\r\n",
        b"2\r\n\r\n\r\n0\r\nEmpty:\r\n\r\n",
        b"1\r\n\x00\r\n0\r\n\r\n",
        b"000000000000000F\r\n0123456789abcde\r\n0\r\n\r\n",
    ];

    #[test]
    fn valid_bodies_whole_and_with_trailing_bytes() {
        for body in VALID {
            let mut s = ChunkedScanner::new();
            assert_eq!(feed(&mut s, body, &[]), Ok((body.len(), true)), "{body:?}");
            let mut with_next = body.to_vec();
            with_next.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let mut s = ChunkedScanner::new();
            let p = s.advance(&with_next).unwrap();
            assert_eq!(
                p,
                Progress {
                    consumed: body.len(),
                    done: true
                },
                "{body:?}"
            );
            assert_eq!(
                s.advance(b"more").unwrap(),
                Progress {
                    consumed: 0,
                    done: true
                }
            );
        }
    }

    #[test]
    fn valid_bodies_every_split_and_byte_at_a_time() {
        for body in VALID {
            for cut in 0..=body.len() {
                let mut s = ChunkedScanner::new();
                assert_eq!(
                    feed(&mut s, body, &[cut]),
                    Ok((body.len(), true)),
                    "{body:?} @{cut}"
                );
            }
            for a in 0..=body.len() {
                for b in a..=body.len() {
                    let mut s = ChunkedScanner::new();
                    assert_eq!(feed(&mut s, body, &[a, b]), Ok((body.len(), true)));
                }
            }
            let mut s = ChunkedScanner::new();
            let mut total = 0;
            for (i, byte) in body.iter().enumerate() {
                let p = s.advance(std::slice::from_ref(byte)).unwrap();
                assert_eq!(p.consumed, 1);
                assert_eq!(p.done, i + 1 == body.len());
                total += p.consumed;
            }
            assert_eq!(total, body.len());
        }
    }

    #[test]
    fn invalid_bodies() {
        use ChunkError::*;
        let cases: &[(&[u8], ChunkError)] = &[
            (b"-1\r\n", BadSize),
            (b"0x5\r\nhello\r\n0\r\n\r\n", BadSize),
            (b"fffffffffffffffff1\r\n", SizeOverflow),
            (b"00000000000000000\r\n", SizeOverflow),
            (b"\r\n", BadSize),
            (b";ext\r\n", BadSize),
            (b"g\r\n", BadSize),
            (b"5\r\nhelloX\r\n0\r\n\r\n", MissingDataCrlf),
            (b"5\r\nhello\rX", MissingDataCrlf),
            (b"5\r\nhello0\r\n\r\n", MissingDataCrlf),
            (b"5\nhello\r\n0\r\n\r\n", BadLineEnding),
            (b"5\rhello", BadLineEnding),
            (b"5\r\nhello\n0\r\n\r\n", MissingDataCrlf),
            (b"0\r\n\n", BadLineEnding),
            (b"0\n\r\n", BadLineEnding),
            (b"5 \r\nhello\r\n", BadSize),
            (b"5 x\r\n", BadSize),
            (b"5;a\nb\r\n", BadLineEnding),
            (b"5;a\x01\r\n", BadExtension),
            (b"0\r\nX: a\nY: b\r\n\r\n", BadLineEnding),
            (b"0\r\nX: a\r\n folded\r\n\r\n", BadTrailer),
            (b"0\r\nX a\r\n\r\n", BadTrailer),
            (b"0\r\n: a\r\n\r\n", BadTrailer),
            (b"0\r\nX: a\x00\r\n\r\n", BadTrailer),
            (b"0\r\n\r\r", BadLineEnding),
        ];
        for (body, want) in cases {
            let mut s = ChunkedScanner::new();
            assert_eq!(s.advance(body), Err(*want), "{body:?}");
            assert_eq!(s.advance(b"0\r\n\r\n"), Err(*want), "stays failed");
            let mut s = ChunkedScanner::new();
            let got = body
                .iter()
                .try_for_each(|b| s.advance(std::slice::from_ref(b)).map(|_| ()));
            assert_eq!(got, Err(*want), "byte-wise {body:?}");
        }
    }

    #[test]
    fn limits() {
        let mut s = ChunkedScanner::with_limits(8, 16);
        assert_eq!(
            s.advance(b"1;12345678\r\n"),
            Err(ChunkError::ExtensionTooLong)
        );
        let mut s = ChunkedScanner::with_limits(8, 16);
        assert!(s.advance(b"1;1234567\r\nx\r\n").is_ok());
        let mut s = ChunkedScanner::with_limits(8, 16);
        assert_eq!(
            s.advance(b"0\r\nX: 0123456789ab\r\n\r\n"),
            Err(ChunkError::TrailerTooLarge)
        );
        let mut s = ChunkedScanner::new();
        let mut big = b"0\r\n".to_vec();
        for _ in 0..MAX_TRAILERS / 8 {
            big.extend_from_slice(b"X: abc\r\n");
        }
        big.extend_from_slice(b"\r\n");
        assert_eq!(s.advance(&big), Err(ChunkError::TrailerTooLarge));
    }

    #[test]
    fn splice_accounting() {
        let mut s = ChunkedScanner::new();
        assert_eq!(s.data_remaining(), 0);
        assert_eq!(s.consume_data(5), 0);
        let p = s.advance(b"10000000\r\n").unwrap();
        assert_eq!(
            p,
            Progress {
                consumed: 10,
                done: false
            }
        );
        assert_eq!(s.data_remaining(), 0x1000_0000);
        assert_eq!(s.consume_data(0x0fff_ffff), 0x0fff_ffff);
        assert_eq!(s.data_remaining(), 1);
        let p = s.advance(b"x\r").unwrap();
        assert_eq!(
            p,
            Progress {
                consumed: 2,
                done: false
            }
        );
        assert_eq!(s.data_remaining(), 0);
        let p = s.advance(b"\n3\r\n").unwrap();
        assert_eq!(p.consumed, 4);
        assert_eq!(s.consume_data(10), 3, "clamped to the chunk");
        let p = s.advance(b"\r\n0\r\n\r\nNEXT").unwrap();
        assert_eq!(
            p,
            Progress {
                consumed: 7,
                done: true
            }
        );
        s.reset();
        assert!(!s.is_done());
        assert!(s.advance(b"0\r\n\r\n").unwrap().done);
    }

    #[test]
    fn max_size_does_not_overflow() {
        let mut s = ChunkedScanner::new();
        s.advance(b"ffffffffffffffff\r\n").unwrap();
        assert_eq!(s.data_remaining(), u64::MAX);
        let p = s.advance(&[0u8; 4096]).unwrap();
        assert_eq!(p.consumed, 4096);
        assert_eq!(s.data_remaining(), u64::MAX - 4096);
    }

    /// Random bytes never panic, consumption stays within the input, and an
    /// error or completion is final.
    #[test]
    fn random_input_never_panics() {
        let mut x: u64 = 0x853c_49e6_748f_ea9b;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"0123456789abcdefABCDEFxX-;= \t\r\n:\x00\x7fz";
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let mut s = ChunkedScanner::with_limits(8, 32);
            let mut pos = 0;
            while pos < input.len() {
                let end = (pos + 1 + (next() % 8) as usize).min(input.len());
                match s.advance(&input[pos..end]) {
                    Ok(p) => {
                        assert!(p.consumed <= end - pos);
                        pos += p.consumed;
                        if p.done {
                            assert!(s.is_done());
                            break;
                        }
                        let _ = s.consume_data(next() % 3);
                    }
                    Err(e) => {
                        assert_eq!(s.advance(b"0\r\n\r\n"), Err(e));
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn data_limit_fails_at_the_size_line() {
        let mut s = ChunkedScanner::new();
        s.limit_data(10);
        assert_eq!(s.advance(b"6\r\nabcdef\r\n").unwrap().consumed, 11);
        assert_eq!(s.advance(b"4\r\nabcd\r\n").unwrap().consumed, 9);
        assert_eq!(s.advance(b"1\r\n"), Err(ChunkError::TooLarge));
        let mut s = ChunkedScanner::new();
        s.limit_data(10);
        assert!(s.advance(b"a\r\n0123456789\r\n0\r\n\r\n").unwrap().done);
    }
}
