//! TLS ClientHello / SNI reader (`ringmesh::edge::client_hello`).
//!
//! First byte picks the mode:
//! - raw (even): arbitrary bytes as a connection's first bytes. A complete
//!   hello never spans more than the input and reading exactly its bytes
//!   gives the same answer; every prefix answers `Incomplete` or the whole
//!   input's answer, and reading in pieces (cut points from the input)
//!   stops at that same answer; a name found is a valid host name.
//! - round trip (odd): a ClientHello built for an input-chosen host name,
//!   padding and record size (one record or many), then more stream bytes:
//!   the reader finds exactly that name and the hello's length, split anywhere.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmesh::edge::client_hello::{build, parse, Bad, Hello, MAX_HELLO, MAX_RAW};

fn splits<'a>(input: &'a [u8], cuts: &[u8]) -> Hello<'a> {
    let whole = parse(input);
    if let Hello::Done { len, sni } = &whole {
        assert!(*len <= input.len() && *len > 5);
        assert_eq!(&parse(&input[..*len]), &whole, "hello bytes alone");
        if let Some(n) = sni {
            assert!(!n.is_empty() && n.len() <= 253);
            assert!(n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'));
        }
    }
    if input.len() <= 600 {
        for cut in 0..input.len() {
            let p = parse(&input[..cut]);
            assert!(p == Hello::Incomplete || p == whole, "prefix {cut}: {p:?} vs {whole:?}");
        }
    }
    let mut end = 0usize;
    let mut c = cuts.iter().cycle();
    let got = loop {
        let p = parse(&input[..end]);
        if p != Hello::Incomplete || end == input.len() {
            break p;
        }
        let step = 1 + 4 * *c.next().unwrap_or(&255) as usize;
        end = (end + step).min(input.len());
    };
    assert_eq!(got, whole, "read in pieces");
    whole
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let (cuts, input) = rest.split_at(rest.len().min((mode >> 1) as usize & 15));
        splits(input, cuts);
        return;
    }
    // Round trip: [record size hi, lo, padding hi, lo, name len] name... rest.
    let get = |i: usize| rest.get(i).copied().unwrap_or(0) as usize;
    let record = 1 + ((get(0) << 8 | get(1)) % 16384);
    // Mostly small hellos (fast runs), sometimes up to half the 16 KiB bound.
    let padding = if get(2) & 0x80 != 0 {
        (get(2) << 8 | get(3)) % (MAX_HELLO / 2)
    } else {
        get(3) * 4
    };
    let name_len = 1 + get(4) % 80;
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789-";
    let mut name: Vec<u8> = (0..name_len)
        .map(|i| alphabet[get(5 + i) % alphabet.len()])
        .collect();
    // Dots between labels (never first, last or doubled).
    for i in (3..name.len().saturating_sub(1)).step_by(7) {
        name[i] = b'.';
    }
    let name = String::from_utf8(name).unwrap();
    let mut hello = build(Some(&name), padding, record);
    let len = hello.len();
    let tail = rest.get(5 + name_len..).unwrap_or(&[]);
    hello.extend_from_slice(tail);
    let got = splits(&hello, &rest[..rest.len().min(8)]);
    if len > MAX_RAW {
        // Tiny records: the framing alone passes the raw-bytes bound.
        assert_eq!(got, Hello::Bad(Bad::TooLarge), "{len} raw bytes");
        return;
    }
    match got {
        Hello::Done { len: l, sni } => {
            assert_eq!(l, len);
            assert_eq!(sni.as_deref(), Some(name.as_str()));
        }
        other => panic!("built hello for {name:?} (record {record}, padding {padding}): {other:?}"),
    }
});
