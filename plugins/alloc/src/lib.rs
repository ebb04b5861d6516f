//! The default plugins' allocator. A batch brings hundreds of small strings and lists into a
//! plugin (the host allocates each through `cabi_realloc`) and the plugin frees them all when
//! the call ends, then the next batch brings the same sizes again. Free lists per size class
//! serve that pattern with a pop and a push; blocks larger than [`MAX_SMALL`] or more aligned
//! than [`ALIGN`] go to the allocator behind (talc on Wasm).
//!
//! Memory freed into a size class stays in that class: a plugin's small blocks never return to
//! the allocator behind. Steady batches reuse the same blocks, so that is bounded by the peak of
//! one call; the plugin's memory limit still applies to every page.
//!
//! Single-threaded only (Wasm components run one call at a time): the state is not locked.

#![no_std]

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;

/// The alignment every small block has.
pub const ALIGN: usize = 16;
/// The largest block served from the size classes.
pub const MAX_SMALL: usize = 1024;
const CLASSES: usize = MAX_SMALL / ALIGN;
/// Small blocks are cut from chunks of this size taken from the allocator behind.
const CHUNK: usize = 64 * 1024;

struct State {
    /// Head of each class's free list; a free block holds the address of the next one.
    free: [*mut u8; CLASSES],
    /// The unused rest of the current chunk.
    next: *mut u8,
    end: *mut u8,
}

/// Free lists per 16-byte size class up to [`MAX_SMALL`] bytes, in front of `A`.
pub struct SizeClasses<A> {
    behind: A,
    state: UnsafeCell<State>,
}

// SAFETY: only for single-threaded targets (the plugins' `wasm32-wasip2` has no threads); the
// global allocator must be `Sync`, and nothing here is ever reached from two threads at once.
unsafe impl<A: Sync> Sync for SizeClasses<A> {}

impl<A> SizeClasses<A> {
    pub const fn new(behind: A) -> Self {
        SizeClasses {
            behind,
            state: UnsafeCell::new(State {
                free: [ptr::null_mut(); CLASSES],
                next: ptr::null_mut(),
                end: ptr::null_mut(),
            }),
        }
    }
}

/// The size class of a layout, or `None` for a block the allocator behind serves.
fn class(layout: Layout) -> Option<usize> {
    if layout.size() > MAX_SMALL || layout.align() > ALIGN {
        return None;
    }
    Some(layout.size().max(1).div_ceil(ALIGN) - 1)
}

impl<A: GlobalAlloc> SizeClasses<A> {
    /// A new block of `class` cut from the current chunk (taking a new chunk when it is spent).
    #[cold]
    unsafe fn carve(&self, state: &mut State, class: usize) -> *mut u8 {
        let size = (class + 1) * ALIGN;
        if (state.end as usize) - (state.next as usize) < size {
            // The rest of the old chunk is too small for this class; hand it to the free
            // lists in the largest blocks it holds, so nothing is stranded.
            while (state.end as usize) - (state.next as usize) >= ALIGN {
                let rest = (state.end as usize) - (state.next as usize);
                let c = rest.min(MAX_SMALL) / ALIGN - 1;
                let block = state.next;
                state.next = block.add((c + 1) * ALIGN);
                *(block as *mut *mut u8) = state.free[c];
                state.free[c] = block;
            }
            // SAFETY: CHUNK and ALIGN make a valid, non-zero layout.
            let chunk = self
                .behind
                .alloc(Layout::from_size_align_unchecked(CHUNK, ALIGN));
            if chunk.is_null() {
                return chunk;
            }
            state.next = chunk;
            state.end = chunk.add(CHUNK);
        }
        let block = state.next;
        state.next = block.add(size);
        block
    }
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for SizeClasses<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class(layout) else {
            return self.behind.alloc(layout);
        };
        // SAFETY: single-threaded, and no reference to the state outlives this call.
        let state = &mut *self.state.get();
        let head = state.free[c];
        if head.is_null() {
            return self.carve(state, c);
        }
        state.free[c] = *(head as *const *mut u8);
        head
    }

    #[inline]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(c) = class(layout) else {
            return self.behind.dealloc(block, layout);
        };
        let state = &mut *self.state.get();
        *(block as *mut *mut u8) = state.free[c];
        state.free[c] = block;
    }

    #[inline]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded to the alignment, fits an isize.
        let new = Layout::from_size_align_unchecked(new_size, layout.align());
        match (class(layout), class(new)) {
            // Same class: the block already has room.
            (Some(a), Some(b)) if a == b => block,
            (None, None) => self.behind.realloc(block, layout, new_size),
            _ => {
                let moved = self.alloc(new);
                if !moved.is_null() {
                    ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                    self.dealloc(block, layout);
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::alloc::System;
    use std::vec::Vec;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn classes_round_up_to_sixteen_bytes() {
        assert_eq!(class(layout(1, 1)), Some(0));
        assert_eq!(class(layout(16, 8)), Some(0));
        assert_eq!(class(layout(17, 1)), Some(1));
        assert_eq!(class(layout(MAX_SMALL, 16)), Some(CLASSES - 1));
        assert_eq!(class(layout(MAX_SMALL + 1, 1)), None);
        assert_eq!(class(layout(8, 32)), None);
    }

    #[test]
    fn a_freed_block_is_reused_for_its_class() {
        let a = SizeClasses::new(System);
        unsafe {
            let x = a.alloc(layout(20, 4));
            let y = a.alloc(layout(30, 8));
            assert_ne!(x, y);
            a.dealloc(x, layout(20, 4));
            assert_eq!(a.alloc(layout(32, 1)), x, "same class (17..=32 bytes)");
            assert_ne!(a.alloc(layout(20, 4)), x, "x is in use again");
        }
    }

    #[test]
    fn blocks_are_aligned_and_do_not_overlap() {
        let a = SizeClasses::new(System);
        let mut blocks: Vec<(usize, usize)> = Vec::new();
        unsafe {
            // Enough to spend several chunks, in sizes of every class.
            for i in 0..20_000usize {
                let size = 1 + (i * 37) % MAX_SMALL;
                let p = a.alloc(layout(size, 1 << (i % 5)));
                assert!(!p.is_null());
                assert_eq!(p as usize % ALIGN, 0);
                ptr::write_bytes(p, (i % 251) as u8, size);
                blocks.push((p as usize, size));
            }
        }
        blocks.sort();
        for w in blocks.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "overlap: {w:?}");
        }
    }

    #[test]
    fn realloc_keeps_the_contents() {
        let a = SizeClasses::new(System);
        unsafe {
            let p = a.alloc(layout(10, 1));
            ptr::copy_nonoverlapping(b"0123456789".as_ptr(), p, 10);
            let same = a.realloc(p, layout(10, 1), 16);
            assert_eq!(same, p, "10 and 16 bytes share a class");
            let grown = a.realloc(same, layout(16, 1), 5000);
            assert_eq!(std::slice::from_raw_parts(grown, 10), b"0123456789");
            let shrunk = a.realloc(grown, layout(5000, 1), 40);
            assert_eq!(std::slice::from_raw_parts(shrunk, 10), b"0123456789");
            a.dealloc(shrunk, layout(40, 1));
        }
    }

    #[test]
    fn large_and_over_aligned_blocks_go_behind() {
        let a = SizeClasses::new(System);
        unsafe {
            let big = a.alloc(layout(MAX_SMALL + 1, 8));
            let aligned = a.alloc(layout(64, 64));
            assert_eq!(aligned as usize % 64, 0);
            assert!((*a.state.get()).next.is_null(), "no chunk was taken");
            a.dealloc(big, layout(MAX_SMALL + 1, 8));
            a.dealloc(aligned, layout(64, 64));
        }
    }
}
