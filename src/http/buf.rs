//! Per-worker pool of byte buffers for heads and the body bytes read with them.
//!
//! Why a pool: a busy worker reads and writes heads for every request; taking
//! a buffer from a free list costs a pointer pop, so the steady state allocates
//! nothing. An idle keep-alive connection gives its buffers back, so 100k idle
//! clients hold no buffers (ARCHITECTURE.md: idle connections own only sockets).

use std::cell::RefCell;

/// Capacity of a new buffer: most heads and small bodies fit in one read.
pub const BUF_SIZE: usize = 16 * 1024;

/// Buffers that grew past this (a 64 KiB head, a large read) are freed
/// rather than pooled.
const MAX_POOLED_CAPACITY: usize = 128 * 1024;

/// A free list of empty `Vec<u8>`s, owned by one worker.
#[derive(Debug)]
pub struct BufPool {
    free: RefCell<Vec<Vec<u8>>>,
    max_idle: usize,
}

impl BufPool {
    /// A pool keeping at most `max_idle` spare buffers.
    pub fn new(max_idle: usize) -> BufPool {
        BufPool {
            free: RefCell::new(Vec::new()),
            max_idle,
        }
    }

    /// An empty buffer with at least [`BUF_SIZE`] capacity.
    pub fn take(&self) -> Vec<u8> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BUF_SIZE))
    }

    /// Returns a buffer (its contents are discarded).
    pub fn put(&self, mut buf: Vec<u8>) {
        if buf.capacity() < BUF_SIZE || buf.capacity() > MAX_POOLED_CAPACITY {
            return;
        }
        buf.clear();
        let mut free = self.free.borrow_mut();
        if free.len() < self.max_idle {
            free.push(buf);
        }
    }

    /// Spare buffers held right now.
    pub fn idle(&self) -> usize {
        self.free.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_bounds() {
        let pool = BufPool::new(2);
        let mut a = pool.take();
        a.extend_from_slice(b"hello");
        let ptr = a.as_ptr();
        pool.put(a);
        let b = pool.take();
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr, "the same allocation comes back");
        pool.put(b);
        pool.put(Vec::new());
        pool.put(Vec::with_capacity(1 << 20));
        assert_eq!(pool.idle(), 1, "tiny and huge buffers are not pooled");
        pool.put(pool.take());
        pool.put(Vec::with_capacity(BUF_SIZE));
        pool.put(Vec::with_capacity(BUF_SIZE));
        assert_eq!(pool.idle(), 2);
    }
}
