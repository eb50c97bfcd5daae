//! The worker's free lists of TLS buffers.
//!
//! - Incoming record buffers hold one full TLS record plus change (TLS 1.2
//!   allows 16 KiB of plaintext plus 2 KiB of expansion), a little more than
//!   the HTTP buffers' 16 KiB: plain `Vec`s that `recv` appends to.
//! - Outgoing buffers hold four full records, so a 64 KiB body is sealed and
//!   sent in one write (one `send`, one loopback packet, one wake-up of the
//!   client) instead of one write per 16 KiB record. They stay initialized
//!   (`len == capacity`: rustls encrypts into a `&mut [u8]`), so taking one
//!   costs no memset; the pages of a fresh one are touched only as records
//!   fill them.
//! - Body buffers (64 KiB of plaintext) carry a body between a plain socket
//!   and a TLS one, read in one call and sealed in one go.
//!
//! A connection holds these only while bytes wait in them: idle connections
//! give them back ([`super::TlsConn::release`]). One list per worker thread
//! (a thread-local: the record layer runs on its worker's thread only).

use std::cell::RefCell;

/// Capacity of a record buffer: the largest TLS 1.2 record (16 KiB + 2 KiB
/// expansion + 5 header bytes), rounded up.
pub const RECORD_BUF: usize = 18 * 1024 + 512;

/// Capacity of an outgoing buffer: four full TLS 1.3 records (16 KiB of
/// plaintext, content type, tag and header each) and room to spare.
pub const OUT_BUF: usize = 4 * (16 * 1024 + 256) + 1024;

/// Capacity of a body buffer (plaintext on its way into or out of TLS).
pub const BODY_BUF: usize = 64 * 1024;

/// Spare incoming buffers kept per worker.
const MAX_IDLE: usize = 256;
/// Spare outgoing and body buffers kept per worker (each about 64 KiB).
const MAX_IDLE_LARGE: usize = 64;

thread_local! {
    static FREE_IN: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static FREE_OUT: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static FREE_BODY: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with at least [`RECORD_BUF`] capacity (for received records).
pub fn take_in() -> Vec<u8> {
    FREE_IN
        .with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(RECORD_BUF))
}

/// A zeroed-once buffer of at least [`OUT_BUF`] bytes (for records to send).
pub fn take_out() -> Vec<u8> {
    FREE_OUT
        .with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| vec![0; OUT_BUF])
}

/// An empty buffer with at least [`BODY_BUF`] capacity.
pub fn take_body() -> Vec<u8> {
    FREE_BODY
        .with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(BODY_BUF))
}

pub fn put_body(mut b: Vec<u8>) {
    if b.capacity() < BODY_BUF || b.capacity() > 4 * BODY_BUF {
        return;
    }
    b.clear();
    let _ = FREE_BODY.try_with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < MAX_IDLE_LARGE {
            f.push(b);
        }
    });
}

pub fn put_in(mut b: Vec<u8>) {
    if b.capacity() < RECORD_BUF || b.capacity() > 4 * RECORD_BUF {
        return;
    }
    b.clear();
    // `try_with`: a connection dropped while its worker thread exits finds
    // the list gone; the buffer is then simply freed.
    let _ = FREE_IN.try_with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < MAX_IDLE {
            f.push(b);
        }
    });
}

pub fn put_out(b: Vec<u8>) {
    if b.len() < OUT_BUF || b.len() > 4 * OUT_BUF {
        return;
    }
    let _ = FREE_OUT.try_with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < MAX_IDLE_LARGE {
            f.push(b);
        }
    });
}
