//! The component's global allocator (feature `allocator`, on by default): talc, with free
//! lists in front of it for small blocks.
//!
//! A request through a batch makes a dozen small, short-lived allocations in the guest: its
//! body, content type, accept and context strings, the decoded tensor and its shape, the
//! response body and content type. Each costs a general-purpose allocator about a hundred
//! instructions to allocate and as many to free. Here a block of up to [`MAX_SMALL`] bytes
//! is freed onto a list of its size class and handed out again from there, in a few
//! instructions; only a class's first blocks, and larger ones, come from talc (see
//! BENCHMARKS.md for the counts). Small blocks are never returned to talc, so a size
//! class holds as many blocks as it ever had in use at once; memory still comes from the
//! instance's linear memory, bounded by the variant's memory limit.

// Implementing an allocator is unsafe by nature; the unsafe code is confined to this module.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ptr;

/// The size classes' granularity, which is also the alignment every small block has.
const GRANULE: usize = 16;
/// Size classes: 16, 32, ... bytes.
const CLASSES: usize = 16;
/// The largest small block.
const MAX_SMALL: usize = GRANULE * CLASSES;

/// `backing`, with a free list per size class for blocks of up to [`MAX_SMALL`] bytes
/// aligned to at most [`GRANULE`].
pub(crate) struct Allocator<A> {
    backing: A,
    /// The first free block of each class; a free block holds the address of the next.
    free: [Cell<*mut u8>; CLASSES],
}

// A component instance has one thread (wasm32-wasip2 has no threads), so the free lists are
// never shared; without `Sync` the allocator could not be a `static`. Nowhere else is it
// `Sync` (a Wasm target with threads fails to compile instead).
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
unsafe impl<A: Sync> Sync for Allocator<A> {}

impl<A> Allocator<A> {
    pub(crate) const fn new(backing: A) -> Self {
        Self {
            backing,
            free: [const { Cell::new(ptr::null_mut()) }; CLASSES],
        }
    }
}

/// The size class of `layout`, if it is small.
fn class(layout: Layout) -> Option<usize> {
    (layout.size() <= MAX_SMALL && layout.align() <= GRANULE)
        .then(|| layout.size().max(1).div_ceil(GRANULE) - 1)
}

/// The layout of a block of size class `class`.
fn class_layout(class: usize) -> Layout {
    // Sizes 16..=256 with alignment 16: always a valid layout.
    Layout::from_size_align((class + 1) * GRANULE, GRANULE).expect("a size class's layout")
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for Allocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class(layout) else {
            // SAFETY: the caller's layout, passed on.
            return unsafe { self.backing.alloc(layout) };
        };
        let head = self.free[class].get();
        if head.is_null() {
            // SAFETY: a valid, non-zero-sized layout.
            return unsafe { self.backing.alloc(class_layout(class)) };
        }
        // SAFETY: `head` is a free block of this class (at least 16 bytes, aligned to 16),
        // whose first word `dealloc` set to the next free block.
        self.free[class].set(unsafe { head.cast::<*mut u8>().read() });
        head
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        match class(layout) {
            // SAFETY: `block` came from `alloc` with this layout, so it is a block of this
            // class that nothing uses any more: its first word can hold the list's link.
            Some(class) => unsafe {
                block.cast::<*mut u8>().write(self.free[class].get());
                self.free[class].set(block);
            },
            // SAFETY: a large block came from `backing` with this layout.
            None => unsafe { self.backing.dealloc(block, layout) },
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees that `new_size`, rounded up to the alignment, does
        // not overflow `isize`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new_layout)) {
            // The block has room already.
            (Some(old), Some(new)) if old == new => block,
            // SAFETY: a large block stays large: `backing` made it with this layout.
            (None, None) => unsafe { self.backing.realloc(block, layout, new_size) },
            _ => {
                // SAFETY: a fresh block for the new layout; the old one is valid for
                // `layout.size()` bytes and freed after the copy.
                unsafe {
                    let moved = self.alloc(new_layout);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::collections::HashSet;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn small_blocks_are_reused_within_their_class_and_large_ones_are_not_kept() {
        let a = Allocator::new(System);
        unsafe {
            let x = a.alloc(layout(24, 8));
            assert_eq!(x as usize % GRANULE, 0);
            x.write_bytes(0xAB, 24);
            a.dealloc(x, layout(24, 8));
            // Same class (17..=32 bytes): the same block, last freed first.
            let y = a.alloc(layout(32, 16));
            assert_eq!(y, x);
            // Another class: another block.
            let z = a.alloc(layout(8, 1));
            assert_ne!(z, y);
            a.dealloc(y, layout(32, 16));
            a.dealloc(z, layout(8, 1));
            // Too big, or aligned more than a small block is: straight to the backing
            // allocator, and nothing is kept on a list.
            for l in [layout(MAX_SMALL + 1, 8), layout(16, 64)] {
                let big = a.alloc(l);
                assert_eq!(big as usize % l.align(), 0);
                a.dealloc(big, l);
            }
            assert!(a.free.iter().filter(|h| !h.get().is_null()).count() == 2);
        }
    }

    #[test]
    fn blocks_in_use_never_overlap_and_keep_their_contents() {
        let a = Allocator::new(System);
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (seed >> 8) as usize
        };
        unsafe {
            for step in 0..20_000 {
                if live.len() > 64 || (!live.is_empty() && next() % 3 == 0) {
                    let (block, l, fill) = live.swap_remove(next() % live.len());
                    for i in 0..l.size() {
                        assert_eq!(*block.add(i), fill, "a live block was overwritten");
                    }
                    if next() % 2 == 0 {
                        a.dealloc(block, l);
                    } else {
                        // Grow or shrink, across classes and between small and large.
                        let new_size = 1 + next() % (2 * MAX_SMALL);
                        let moved = a.realloc(block, l, new_size);
                        for i in 0..l.size().min(new_size) {
                            assert_eq!(*moved.add(i), fill, "realloc lost the contents");
                        }
                        let nl = layout(new_size, l.align());
                        moved.write_bytes(fill, new_size);
                        live.push((moved, nl, fill));
                    }
                } else {
                    let l = layout(1 + next() % (MAX_SMALL + 64), [1, 4, 8, 16][next() % 4]);
                    let block = a.alloc(l);
                    assert_eq!(block as usize % l.align(), 0);
                    let fill = (step % 251) as u8;
                    block.write_bytes(fill, l.size());
                    live.push((block, l, fill));
                }
                if step % 500 == 0 {
                    let mut bytes = HashSet::new();
                    for (block, l, _) in &live {
                        for i in 0..l.size() {
                            assert!(bytes.insert(*block as usize + i), "two live blocks overlap");
                        }
                    }
                }
            }
            for (block, l, _) in live {
                a.dealloc(block, l);
            }
        }
    }
}
