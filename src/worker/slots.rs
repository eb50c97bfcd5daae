//! A slab in fixed pages: keys are reused like `slab::Slab`'s, but a full
//! slab grows by one more page instead of doubling (and copying) one `Vec`.
//!
//! Why: the coarse timers keep one slot per idle connection. A doubling
//! `Vec` leaves each outgrown half freed but still in RSS (mimalloc keeps a
//! freed large block's pages until it purges them), so at 2,000 idle
//! connections the timers held their 48 KiB of slots plus ~45 KiB of freed
//! halves: ~22 bytes per connection (bench/README.md "Idle memory", fourth
//! pass). Pages of [`PAGE`] slots are never moved nor freed.

/// Slots per page (a page of 24-byte slots is mimalloc's 6 KiB class).
const PAGE: usize = 256;

/// No free slot (the free list's end).
const NONE: u32 = u32::MAX;

pub(super) enum Slot<T> {
    /// Free: the next free slot's key, or [`NONE`].
    Vacant(u32),
    Occupied(T),
}

/// See the module doc. Keys are below `u32::MAX` (a slab past that panics,
/// as `slab::Slab` does past its `Vec`'s limit).
pub struct Slots<T> {
    /// Each of capacity [`PAGE`], filled in order; only the last one is
    /// ever not full.
    pages: Vec<Vec<Slot<T>>>,
    /// The free list's head ([`NONE`]: empty).
    free: u32,
    len: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            pages: Vec::new(),
            free: NONE,
            len: 0,
        }
    }
}

impl<T> Slots<T> {
    /// Stores `v`; returns its key (a freed one first).
    pub fn insert(&mut self, v: T) -> usize {
        self.len += 1;
        if self.free != NONE {
            let k = self.free as usize;
            let slot = &mut self.pages[k / PAGE][k % PAGE];
            match std::mem::replace(slot, Slot::Occupied(v)) {
                Slot::Vacant(next) => self.free = next,
                Slot::Occupied(_) => unreachable!("a free-list slot is vacant"),
            }
            return k;
        }
        if self.pages.last().is_none_or(|p| p.len() == PAGE) {
            self.pages.push(Vec::with_capacity(PAGE));
        }
        let n = self.pages.len() - 1;
        let page = &mut self.pages[n];
        let k = n * PAGE + page.len();
        assert!(k < NONE as usize, "coarse timer slots exhausted");
        page.push(Slot::Occupied(v));
        k
    }

    pub fn get(&self, k: usize) -> Option<&T> {
        match self.pages.get(k / PAGE)?.get(k % PAGE)? {
            Slot::Occupied(v) => Some(v),
            Slot::Vacant(_) => None,
        }
    }

    pub fn get_mut(&mut self, k: usize) -> Option<&mut T> {
        match self.pages.get_mut(k / PAGE)?.get_mut(k % PAGE)? {
            Slot::Occupied(v) => Some(v),
            Slot::Vacant(_) => None,
        }
    }

    /// Frees `k`'s slot; `None` if it was not occupied.
    pub fn try_remove(&mut self, k: usize) -> Option<T> {
        let slot = self.pages.get_mut(k / PAGE)?.get_mut(k % PAGE)?;
        if matches!(slot, Slot::Vacant(_)) {
            return None;
        }
        let Slot::Occupied(v) = std::mem::replace(slot, Slot::Vacant(self.free)) else {
            unreachable!("checked above");
        };
        // `k` fits: insert only hands out keys below `NONE`.
        self.free = k as u32;
        self.len -= 1;
        Some(v)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The occupied slots with their keys.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> {
        self.pages
            .iter_mut()
            .flatten()
            .enumerate()
            .filter_map(|(k, s)| match s {
                Slot::Occupied(v) => Some((k, v)),
                Slot::Vacant(_) => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_reused_and_pages_never_move() {
        let mut s: Slots<u64> = Slots::default();
        let keys: Vec<usize> = (0..1000u64).map(|i| s.insert(i)).collect();
        assert_eq!(keys, (0..1000).collect::<Vec<_>>());
        assert_eq!(s.len(), 1000);
        assert_eq!(s.pages.len(), 1000usize.div_ceil(PAGE));
        let first = s.pages[0].as_ptr();
        for k in (0..1000).step_by(3) {
            assert_eq!(s.try_remove(k), Some(k as u64));
            assert_eq!(s.try_remove(k), None, "twice");
            assert_eq!(s.get(k), None);
        }
        assert_eq!(s.len(), 1000 - 334);
        // Freed keys come back (last freed first), no page is added.
        let again: Vec<usize> = (0..334).map(|i| s.insert(5000 + i)).collect();
        let mut sorted = again.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).step_by(3).collect::<Vec<_>>());
        assert_eq!(s.pages.len(), 1000usize.div_ceil(PAGE));
        assert_eq!(s.len(), 1000);
        for (i, k) in again.iter().enumerate() {
            assert_eq!(s.get(*k), Some(&(5000 + i as u64)));
        }
        // Growing past the pages adds one: the first page stays where it was.
        for i in 0..2000 {
            s.insert(i);
        }
        assert_eq!(s.pages[0].as_ptr(), first);
        assert!(s.pages.iter().all(|p| p.capacity() == PAGE));
        *s.get_mut(7).unwrap() = 77;
        assert_eq!(s.get(7), Some(&77));
        assert_eq!(s.iter_mut().count(), 3000);
        assert!(s.iter_mut().any(|(k, v)| k == 7 && *v == 77));
        assert_eq!(s.get(1_000_000), None);
        assert_eq!(s.try_remove(1_000_000), None);
    }
}
