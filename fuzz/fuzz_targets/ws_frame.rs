//! WebSocket frame reader (src/gateway/frame.rs).
//!
//! The first byte picks the role (client frames must be masked, server frames
//! not), the allowed RSV bits and a message limit; the next third of the
//! input gives read sizes, the rest is the byte stream. Invariants:
//! - a step never consumes more than it was given, and always makes progress
//!   on non-empty input;
//! - any split of the stream gives the same frames (heads and payload
//!   lengths) and the same verdict as reading it whole;
//! - an accepted head re-encodes (minimal form) to exactly the bytes it was
//!   read from; control frames are at most 125 bytes, FIN and RSV-free;
//!   opcodes are never reserved; masking matches the role;
//! - errors are final.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmesh::gateway::frame::{
    write_head, FrameError, FrameHead, FrameReader, Role, MAX_CONTROL,
};

#[derive(Debug, PartialEq)]
struct Walk {
    frames: Vec<(FrameHead, u64)>,
    end: Result<(), FrameError>,
    at_boundary: bool,
}

fn reader(cfg: u8) -> (FrameReader, Role, u8) {
    let role = if cfg & 1 == 0 { Role::Client } else { Role::Server };
    let rsv = (cfg >> 1) & 7;
    let max = match cfg >> 4 {
        0 => u64::MAX,
        n => u64::from(n) * 37,
    };
    (FrameReader::new(role, rsv, max), role, rsv)
}

fn walk(cfg: u8, input: &[u8], cuts: &[u8]) -> Walk {
    let (mut r, role, rsv) = reader(cfg);
    let mut frames: Vec<(FrameHead, u64)> = Vec::new();
    let mut pos = 0;
    let mut ci = 0;
    let mut head_start = 0;
    let mut end = Ok(());
    'outer: while pos < input.len() {
        let n = if cuts.is_empty() {
            input.len()
        } else {
            let c = cuts[ci % cuts.len()];
            ci += 1;
            usize::from(c % 19) + 1
        };
        let stop = (pos + n).min(input.len());
        let mut chunk = &input[pos..stop];
        while !chunk.is_empty() {
            if r.at_frame_boundary() {
                head_start = pos;
            }
            // A step is payload exactly when a frame's payload was pending;
            // otherwise it is (part of) a head.
            let payload_step = r.payload_left() > 0;
            match r.advance(chunk) {
                Ok(s) => {
                    assert!(s.consumed <= chunk.len(), "claimed more than given");
                    assert!(s.consumed > 0, "no progress");
                    if let Some(h) = s.head {
                        let mut enc = Vec::new();
                        write_head(&mut enc, &h);
                        assert_eq!(&enc[..], &input[head_start..pos + s.consumed]);
                        assert_eq!(usize::from(h.head_len), enc.len());
                        assert!(!matches!(h.opcode, 3..=7 | 0xB..=0xF));
                        if h.is_control() {
                            assert!(h.len <= MAX_CONTROL && h.fin && h.rsv == 0);
                        }
                        assert_eq!(h.mask.is_some(), role == Role::Client);
                        assert_eq!(h.rsv & !rsv, 0);
                        frames.push((h, 0));
                    } else if payload_step {
                        let last = frames.last_mut().expect("payload without a head");
                        last.1 += s.consumed as u64;
                        assert!(last.1 <= last.0.len);
                    } else {
                        assert!(!s.frame_done, "a partial head ends no frame");
                    }
                    if s.frame_done {
                        let last = frames.last().expect("frame end without a head");
                        assert_eq!(last.1, last.0.len);
                        assert!(r.at_frame_boundary());
                    }
                    pos += s.consumed;
                    chunk = &chunk[s.consumed..];
                }
                Err(e) => {
                    assert_eq!(r.advance(b"\x82\x00").unwrap_err(), e, "errors are final");
                    end = Err(e);
                    break 'outer;
                }
            }
        }
    }
    Walk {
        frames,
        end,
        at_boundary: r.at_frame_boundary(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, rest)) = data.split_first() else {
        return;
    };
    let split = rest.len() / 3;
    let (cuts, input) = rest.split_at(split);
    let whole = walk(cfg, input, &[]);
    let pieces = walk(cfg, input, cuts);
    let bytes = walk(cfg, input, &[0]);
    assert_eq!(pieces, whole, "frames depend on how the stream was split");
    assert_eq!(bytes, whole, "byte-at-a-time differs");
});
