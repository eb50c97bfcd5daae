//! The process's global allocator: mimalloc, called so that a block is the
//! size class of the bytes asked for.
//!
//! Why not `mimalloc::MiMalloc` as it is: it hands every request to
//! `mi_malloc_aligned(size, align)`, even for the word alignment every
//! mimalloc block already has. In mimalloc v3 that call takes a block of
//! `size`'s class only when the class's current page has a free block at
//! hand; otherwise (the page is full: every time a page fills up) it falls
//! back to over-allocating `size + align - 1` bytes. For a size within
//! `align - 1` bytes of the top of its class (a Rust type is a multiple of
//! 8 bytes, so every size that *is* a class's top: 64, 384, 448, 512...)
//! that is the next class up, and since the fallback never gives the exact
//! class a page, every later request of that size falls back too. An idle
//! http connection's task (448 B) took 512 B blocks: 64 of its 670 bytes
//! (bench/README.md "Idle memory", fourth pass).
//!
//! So: alignments up to a word (every mimalloc block is word-aligned) go to
//! the plain `mi_malloc` family; larger ones to the aligned calls.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has (a machine word).
const WORD: usize = std::mem::align_of::<usize>();

/// mimalloc as the global allocator; see the module doc.
pub struct Mimalloc;

// SAFETY: every method forwards to mimalloc's allocation functions, which
// meet `GlobalAlloc`'s contract: blocks from `mi_malloc` / `mi_zalloc` /
// `mi_realloc` are aligned to at least a word (mimalloc's guarantee for
// every block), so they satisfy any layout whose alignment is at most a
// word; larger alignments go to the `_aligned` variants. `mi_free` frees a
// block of either family, and `mi_realloc` keeps a block's word alignment.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: see the impl's comment.
            unsafe { mi::mi_malloc(layout.size()) as *mut u8 }
        } else {
            // SAFETY: see the impl's comment.
            unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: see the impl's comment.
            unsafe { mi::mi_zalloc(layout.size()) as *mut u8 }
        } else {
            // SAFETY: see the impl's comment.
            unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract).
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: `ptr` came from this allocator with `layout`; see the impl's comment.
            unsafe { mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8 }
        } else {
            // SAFETY: as above.
            unsafe {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The usable size of `n` blocks of `layout`, allocated on a fresh
    /// thread (its own mimalloc heap: no page of any class is at hand, as for
    /// a worker's first connections), then freed.
    fn usable_sizes(layout: Layout, n: usize) -> Vec<usize> {
        std::thread::spawn(move || {
            let a = Mimalloc;
            let blocks: Vec<*mut u8> = (0..n)
                .map(|_| {
                    // SAFETY: a non-zero-sized layout; freed below.
                    let p = unsafe { a.alloc(layout) };
                    assert!(!p.is_null());
                    assert_eq!(p as usize % layout.align(), 0, "{layout:?} misaligned");
                    p
                })
                .collect();
            let sizes = blocks
                .iter()
                // SAFETY: a live mimalloc block.
                .map(|&p| unsafe { mi::mi_usable_size(p as *const c_void) })
                .collect();
            for p in blocks {
                // SAFETY: allocated above with `layout`, freed once.
                unsafe { a.dealloc(p, layout) };
            }
            sizes
        })
        .join()
        .unwrap()
    }

    /// A size at the top of a class gets that class, page after page (with
    /// `mimalloc::MiMalloc` these took the next class once the first page of
    /// the class was full, or from the start on a fresh heap: 448 -> 512,
    /// 64 -> 80, measured).
    #[test]
    fn class_top_sizes_get_their_own_class() {
        for (size, class) in [(448, 448), (64, 64), (384, 384), (512, 512), (400, 448)] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            // 1,000 blocks: several pages of each class.
            let sizes = usable_sizes(layout, 1000);
            assert!(
                sizes.iter().all(|&s| s == class),
                "{size} B blocks: usable sizes {:?}",
                sizes
                    .iter()
                    .fold(std::collections::BTreeMap::new(), |mut m, s| {
                        *m.entry(*s).or_insert(0) += 1;
                        m
                    })
            );
        }
    }

    /// Alignments above a word still hold (the aligned calls), as do
    /// zeroed allocations and reallocations that grow or shrink a block.
    #[test]
    fn alignment_zeroing_and_realloc_hold() {
        for align in [1, 2, 4, 8, 16, 64, 128, 4096] {
            for size in [1, 7, 8, 24, 448, 5000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                let a = Mimalloc;
                // SAFETY: non-zero size; each block freed once below.
                unsafe {
                    let p = a.alloc_zeroed(layout);
                    assert_eq!(p as usize % align, 0, "{layout:?}");
                    assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
                    p.write_bytes(0xab, size);
                    let q = a.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "{layout:?} grown");
                    assert!(std::slice::from_raw_parts(q, size)
                        .iter()
                        .all(|&b| b == 0xab));
                    let grown = Layout::from_size_align(size * 3, align).unwrap();
                    let r = a.realloc(q, grown, size);
                    assert_eq!(r as usize % align, 0, "{layout:?} shrunk");
                    assert!(std::slice::from_raw_parts(r, size)
                        .iter()
                        .all(|&b| b == 0xab));
                    a.dealloc(r, layout);
                }
            }
        }
    }
}
