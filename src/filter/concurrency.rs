//! `concurrency_limit`: at most `max` requests of the route in flight at
//! once, across all workers (one shared atomic); past it, 503 with
//! `Retry-After: 1`. A request holds its place from its request phase to
//! its logging phase (which always runs), whatever happens in between.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::{Edits, Filter, Request, Verdict};

pub struct ConcurrencyLimit {
    in_flight: Arc<AtomicU64>,
    max: u64,
    /// This filter's bit in [`Edits::marks`]: set while it holds a place.
    bit: u64,
}

impl ConcurrencyLimit {
    /// `position`: the filter's index in its chain.
    pub fn new(in_flight: Arc<AtomicU64>, max: u64, position: usize) -> ConcurrencyLimit {
        ConcurrencyLimit {
            in_flight,
            max,
            bit: 1u64 << (position % 64),
        }
    }
}

impl Filter for ConcurrencyLimit {
    fn request_filter(&self, _req: &Request<'_>, e: &mut Edits) -> Verdict {
        if self.in_flight.fetch_add(1, Relaxed) >= self.max {
            self.in_flight.fetch_sub(1, Relaxed);
            e.answer_headers.extend_from_slice(b"Retry-After: 1\r\n");
            return Verdict::Respond(503);
        }
        e.marks |= self.bit;
        Verdict::Continue
    }

    fn logging(&self, _status: u16, e: &Edits) {
        if e.marks & self.bit != 0 {
            self.in_flight.fetch_sub(1, Relaxed);
        }
    }
}
