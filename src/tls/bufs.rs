//! The worker's free list of TLS record buffers.
//!
//! Record buffers hold one full TLS record plus change (TLS 1.2 allows
//! 16 KiB of plaintext plus 2 KiB of expansion), a little more than the HTTP
//! buffers' 16 KiB, so they have their own list. Outgoing buffers stay
//! initialized (`len == capacity`: rustls encrypts into a `&mut [u8]`), so
//! taking one costs no memset; incoming ones are plain `Vec`s that `recv`
//! appends to. One list per worker thread (a thread-local: the record layer
//! runs on its worker's thread only).

use std::cell::RefCell;

/// Capacity of a record buffer: the largest TLS 1.2 record (16 KiB + 2 KiB
/// expansion + 5 header bytes), rounded up.
pub const RECORD_BUF: usize = 18 * 1024 + 512;

/// Spare buffers kept per worker and direction.
const MAX_IDLE: usize = 256;

thread_local! {
    static FREE_IN: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static FREE_OUT: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with at least [`RECORD_BUF`] capacity (for received records).
pub fn take_in() -> Vec<u8> {
    FREE_IN
        .with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(RECORD_BUF))
}

/// A zeroed-once buffer of at least [`RECORD_BUF`] bytes (for records to send).
pub fn take_out() -> Vec<u8> {
    FREE_OUT
        .with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| vec![0; RECORD_BUF])
}

pub fn put_in(mut b: Vec<u8>) {
    if b.capacity() < RECORD_BUF || b.capacity() > 4 * RECORD_BUF {
        return;
    }
    b.clear();
    FREE_IN.with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < MAX_IDLE {
            f.push(b);
        }
    });
}

pub fn put_out(b: Vec<u8>) {
    if b.len() < RECORD_BUF || b.len() > 4 * RECORD_BUF {
        return;
    }
    FREE_OUT.with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < MAX_IDLE {
            f.push(b);
        }
    });
}
