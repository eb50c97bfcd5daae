use super::*;

fn frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_head(
        &mut out,
        &FrameHead {
            fin,
            rsv,
            opcode,
            mask,
            len: payload.len() as u64,
            head_len: 0,
        },
    );
    out.extend_from_slice(payload);
    out
}

/// Walks `input` cut into `piece`-byte reads; returns heads and frame ends.
fn walk(
    r: &mut FrameReader,
    input: &[u8],
    piece: usize,
) -> Result<Vec<(FrameHead, u64)>, FrameError> {
    let mut out = Vec::new();
    let mut payload = 0u64;
    let mut pos = 0;
    while pos < input.len() {
        let end = (pos + piece).min(input.len());
        let mut chunk = &input[pos..end];
        while !chunk.is_empty() {
            let s = r.advance(chunk)?;
            assert!(s.consumed <= chunk.len());
            assert!(s.consumed > 0, "no progress");
            if s.head.is_none() && r.current().is_none() && !s.frame_done {
                // partial head
            }
            if let Some(h) = s.head {
                out.push((h, 0));
                payload = 0;
            } else {
                payload += s.consumed as u64;
            }
            if s.frame_done {
                if let Some(last) = out.last_mut() {
                    last.1 = payload;
                }
            }
            chunk = &chunk[s.consumed..];
        }
        pos = end;
    }
    Ok(out)
}

const M: Option<[u8; 4]> = Some([1, 2, 3, 4]);

#[test]
fn any_split_gives_the_same_frames() {
    let mut input = frame(true, 0, OP_TEXT, M, b"hello");
    input.extend(frame(false, 0, OP_BINARY, M, &[7u8; 300]));
    input.extend(frame(true, 0, OP_PING, M, b"p"));
    input.extend(frame(true, 0, OP_CONT, M, &[9u8; 70_000]));
    input.extend(frame(true, 0, OP_CLOSE, M, &close_payload(1000, "bye")));
    let whole = walk(
        &mut FrameReader::new(Role::Client, 0, 1 << 20),
        &input,
        input.len(),
    )
    .unwrap();
    assert_eq!(whole.len(), 5);
    assert_eq!(whole[3].0.len, 70_000);
    assert_eq!(whole[3].1, 70_000);
    for piece in [1, 2, 3, 7, 13, 100, 4096] {
        let got = walk(
            &mut FrameReader::new(Role::Client, 0, 1 << 20),
            &input,
            piece,
        )
        .unwrap();
        assert_eq!(got, whole, "piece {piece}");
    }
}

#[test]
fn boundaries() {
    let mut r = FrameReader::new(Role::Server, 0, u64::MAX);
    assert!(r.at_message_boundary());
    let f = frame(false, 0, OP_TEXT, None, b"ab");
    let s = r.advance(&f[..1]).unwrap();
    assert_eq!(s.consumed, 1);
    assert!(!r.at_frame_boundary());
    let s = r.advance(&f[1..]).unwrap();
    assert_eq!(s.consumed, 1);
    assert!(s.head.is_some());
    assert!(!r.at_frame_boundary());
    assert_eq!(r.payload_left(), 2);
    let s = r.advance(&f[2..]).unwrap();
    assert!(s.frame_done);
    assert!(r.at_frame_boundary());
    assert!(!r.at_message_boundary(), "inside a fragmented message");
    let f = frame(true, 0, OP_CONT, None, b"cd");
    r.advance(&f).unwrap();
    assert_eq!(r.skip_payload(5), (2, true));
    assert!(r.at_message_boundary());
}

#[test]
fn errors() {
    let client = || FrameReader::new(Role::Client, 0, 100);
    let cases: Vec<(Vec<u8>, FrameError)> = vec![
        (frame(true, 0, 0x3, M, b""), FrameError::ReservedOpcode(3)),
        (frame(true, 0, 0xB, M, b""), FrameError::ReservedOpcode(0xB)),
        (frame(true, 4, OP_TEXT, M, b""), FrameError::Rsv(4)),
        (
            frame(true, 0, OP_PING, M, &[0; 126]),
            FrameError::ControlTooLong(126),
        ),
        (
            frame(false, 0, OP_PING, M, b""),
            FrameError::FragmentedControl,
        ),
        (
            frame(true, 0, OP_CONT, M, b""),
            FrameError::UnexpectedContinuation,
        ),
        (frame(true, 0, OP_TEXT, None, b""), FrameError::Masking),
        (
            frame(true, 0, OP_TEXT, M, &[0; 101]),
            FrameError::TooBig(101),
        ),
        (
            vec![0x81, 0x80 | 126, 0, 5, 1, 2, 3, 4],
            FrameError::BadLength,
        ),
        (
            vec![0x81, 0x80 | 127, 0x80, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4],
            FrameError::BadLength,
        ),
    ];
    for (bytes, want) in cases {
        let mut r = client();
        let got = walk(&mut r, &bytes, 1).unwrap_err();
        assert_eq!(got, want, "{bytes:?}");
        assert_eq!(r.advance(b"\x81").unwrap_err(), want, "errors are final");
    }
    // Fragments add up: 60 + 60 > 100.
    let mut two = frame(false, 0, OP_TEXT, M, &[0; 60]);
    two.extend(frame(true, 0, OP_CONT, M, &[0; 60]));
    assert_eq!(
        walk(&mut client(), &two, 5).unwrap_err(),
        FrameError::TooBig(120)
    );
    // A new message inside a fragmented one.
    let mut two = frame(false, 0, OP_TEXT, M, b"a");
    two.extend(frame(true, 0, OP_TEXT, M, b"b"));
    assert_eq!(
        walk(&mut client(), &two, 5).unwrap_err(),
        FrameError::ExpectedContinuation
    );
    // Servers must not mask; RSV1 is fine with permessage-deflate, not on control frames.
    let mut s = FrameReader::new(Role::Server, 0b100, u64::MAX);
    assert_eq!(
        walk(&mut s, &frame(true, 0, OP_TEXT, M, b""), 9).unwrap_err(),
        FrameError::Masking
    );
    let mut s = FrameReader::new(Role::Server, 0b100, u64::MAX);
    walk(&mut s, &frame(true, 4, OP_TEXT, None, b"z"), 9).unwrap();
    assert_eq!(
        walk(&mut s, &frame(true, 4, OP_PING, None, b""), 9).unwrap_err(),
        FrameError::Rsv(4)
    );
}

#[test]
fn close_payload_fits_a_control_frame() {
    let p = close_payload(4000, &"é".repeat(100));
    assert!(p.len() <= 125);
    assert_eq!(&p[..2], &4000u16.to_be_bytes());
    assert!(std::str::from_utf8(&p[2..]).is_ok());
    assert!(sendable_close_code(4000) && !sendable_close_code(1005) && !sendable_close_code(999));
}

/// [`walk`], with the reader parked and unparked between reads.
fn walk_parked(
    fresh: impl Fn() -> FrameReader,
    input: &[u8],
    piece: usize,
) -> Result<Vec<(FrameHead, u64)>, FrameError> {
    let mut out = Vec::new();
    let mut payload = 0u64;
    let mut parked = fresh().park();
    for mut chunk in input.chunks(piece) {
        let mut r = parked.unpark(fresh());
        while !chunk.is_empty() {
            let s = r.advance(chunk)?;
            assert!(s.consumed > 0, "no progress");
            if let Some(h) = s.head {
                out.push((h, 0));
                payload = 0;
            } else {
                payload += s.consumed as u64;
            }
            if s.frame_done {
                if let Some(last) = out.last_mut() {
                    last.1 = payload;
                }
            }
            chunk = &chunk[s.consumed..];
        }
        parked = r.park();
    }
    Ok(out)
}

/// A reader parked and unparked between every read (as an idle session's
/// directions do) walks any split of a stream like one that never was:
/// the same frames, the same fragmentation and size checks.
#[test]
fn parking_between_reads_changes_nothing() {
    let mut input = frame(false, 0, OP_TEXT, M, b"hel");
    input.extend(frame(true, 0, OP_PING, M, b"p"));
    input.extend(frame(false, 0, OP_CONT, M, &[1u8; 200]));
    input.extend(frame(true, 0, OP_CONT, M, b"lo"));
    input.extend(frame(true, 0, OP_BINARY, M, &[2u8; 700]));
    let valid = input.clone();
    // Over the limit only when the fragments' lengths are added up.
    input.extend(frame(false, 0, OP_TEXT, M, &[3u8; 600]));
    input.extend(frame(true, 0, OP_CONT, M, &[4u8; 600]));
    let fresh = || FrameReader::new(Role::Client, 0, 1000);
    let want = walk(&mut fresh(), &valid, valid.len()).unwrap();
    assert_eq!(want.len(), 5);
    assert_eq!(
        walk(&mut fresh(), &input, input.len()),
        Err(FrameError::TooBig(1200))
    );
    for piece in [1, 2, 5, 13, 200, 4096] {
        assert_eq!(
            walk_parked(fresh, &valid, piece),
            Ok(want.clone()),
            "piece {piece}"
        );
        assert_eq!(
            walk_parked(fresh, &input, piece),
            Err(FrameError::TooBig(1200)),
            "piece {piece}"
        );
    }
    // At a boundary the parked state is small; inside a frame it is the
    // whole reader.
    let mut r = fresh();
    r.advance(&frame(false, 0, OP_TEXT, M, b"x")).unwrap();
    r.advance(b"x").unwrap();
    assert!(matches!(
        r.park(),
        Parked::Boundary {
            fragmented: Some(OP_TEXT),
            msg_len: 1
        }
    ));
    let mut r = fresh();
    r.advance(&frame(true, 0, OP_TEXT, M, b"xy")[..3]).unwrap();
    assert!(matches!(r.park(), Parked::Inside(_)));
    assert_eq!(std::mem::size_of::<Parked>(), 16);
    assert_eq!(std::mem::size_of::<Option<Parked>>(), 16);
}
