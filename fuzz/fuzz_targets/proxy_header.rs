//! PROXY protocol v1/v2 header reader (`ringmesh::edge::proxy_protocol`).
//!
//! First byte picks the mode:
//! - raw (even): arbitrary bytes as a connection's first bytes. A header
//!   never spans more than the input; parsing exactly its bytes gives the
//!   same answer; every prefix answers `Incomplete` or the whole input's
//!   answer, and feeding the input in pieces (cut points from the input)
//!   stops at the first answer, which is the whole input's: how the bytes
//!   arrive never changes the verdict.
//! - round trip (odd): addresses, command and TLVs from the input, built
//!   into a header by ppp's own v2 builder (or a v1 line), followed by
//!   stream bytes: the reader returns exactly the header's length and the
//!   same addresses (LOCAL: none), split anywhere.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use ppp::v2;
use ringmesh::edge::proxy_protocol::{parse, Parsed, Source};

/// Checks the split invariants of `input` and returns its verdict.
fn splits(input: &[u8], cuts: &[u8]) -> Parsed {
    let whole = parse(input);
    if let Parsed::Header { len, .. } = whole {
        assert!(len <= input.len() && len > 0);
        assert_eq!(parse(&input[..len]), whole, "header bytes alone");
    }
    // Every prefix, for short inputs.
    if input.len() <= 300 {
        for cut in 0..input.len() {
            let p = parse(&input[..cut]);
            assert!(p == Parsed::Incomplete || p == whole, "prefix {cut}: {p:?} vs {whole:?}");
        }
    }
    // Reads of sizes taken from `cuts`, as the accept path does.
    let mut end = 0usize;
    let mut c = cuts.iter().cycle();
    let got = loop {
        let p = parse(&input[..end]);
        if p != Parsed::Incomplete || end == input.len() {
            break p;
        }
        let step = 1 + *c.next().unwrap_or(&200) as usize;
        end = (end + step).min(input.len());
    };
    assert_eq!(got, whole, "read in pieces");
    whole
}

struct Bytes<'a>(&'a [u8], usize);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.0.get(self.1).copied().unwrap_or(0);
        self.1 += 1;
        b
    }
    fn take<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.u8())
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take())
    }
}

fn round_trip(data: &[u8]) {
    let mut b = Bytes(data, 0);
    let flags = b.u8();
    let (src, dst): (SocketAddr, SocketAddr) = if flags & 1 == 0 {
        (
            (Ipv4Addr::from(b.take::<4>()), b.u16()).into(),
            (Ipv4Addr::from(b.take::<4>()), b.u16()).into(),
        )
    } else {
        (
            (Ipv6Addr::from(b.take::<16>()), b.u16()).into(),
            (Ipv6Addr::from(b.take::<16>()), b.u16()).into(),
        )
    };
    let local = flags & 2 != 0;
    let mut header = if flags & 4 == 0 {
        // v1 text line.
        if local {
            b"PROXY UNKNOWN\r\n".to_vec()
        } else {
            ppp::v1::Addresses::from((src, dst)).to_string().into_bytes()
        }
    } else {
        let cmd = if local { v2::Command::Local } else { v2::Command::Proxy };
        let mut builder =
            v2::Builder::with_addresses(v2::Version::Two | cmd, v2::Protocol::Stream, (src, dst));
        // Up to 4 TLVs of input-chosen types and lengths.
        for _ in 0..(flags >> 4) & 3 {
            let kind = b.u8();
            let n = b.u8() as usize;
            let value: Vec<u8> = (0..n).map(|_| b.u8()).collect();
            builder = builder.write_tlv(kind, value.as_slice()).expect("tlv");
        }
        builder.build().expect("build")
    };
    let len = header.len();
    let rest_start = b.1.min(data.len());
    header.extend_from_slice(&data[rest_start..]);
    let want = if local {
        Source::Local
    } else {
        Source::Proxied { src, dst }
    };
    let cuts = &data[..rest_start.min(16)];
    assert_eq!(splits(&header, cuts), Parsed::Header { len, source: want });
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let (cuts, input) = rest.split_at(rest.len().min((mode >> 1) as usize & 15));
        splits(input, cuts);
    } else {
        round_trip(rest);
    }
});
