//! The allocator of a plugin component: bump allocation from a fixed arena,
//! then std's allocator once the arena is used up.
//!
//! Every invocation runs in a fresh instance that lives for one event, so
//! most of what a plugin allocates (the lowered event, config values,
//! formatted text, the decision) is never worth freeing: profiled, the
//! general-purpose allocator (dlmalloc) was over half of a rule's own
//! instructions. Here an allocation is a pointer bump, freeing the newest
//! block (and growing it in place) gives it back, and anything else freed
//! in the arena stays used until the instance is dropped. So a plugin uses
//! at most [`ARENA`] bytes more memory than with std's allocator; past the
//! arena, allocation is std's, and the manifest's memory limit applies as
//! before.
//!
//! The arena lives in the module's zero-initialised data, so a fresh
//! instance starts with it empty. Plugins that install their own
//! `#[global_allocator]` turn this one off with the SDK's
//! `system-allocator` feature.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, UnsafeCell};

/// Bytes served by bumping before std's allocator takes over.
pub const ARENA: usize = 512 * 1024;

/// See the module documentation.
pub struct Arena {
    bytes: UnsafeCell<[u8; ARENA]>,
    /// Offset of the first free byte.
    top: Cell<usize>,
}

// SAFETY: a component instance is single-threaded (this is compiled only
// for wasm without the `atomics` feature, where no second thread exists),
// so the cells are never touched concurrently.
unsafe impl Sync for Arena {}

impl Arena {
    /// An empty arena.
    pub const fn new() -> Arena {
        Arena {
            bytes: UnsafeCell::new([0; ARENA]),
            top: Cell::new(0),
        }
    }

    fn base(&self) -> usize {
        self.bytes.get() as usize
    }

    fn owns(&self, ptr: *mut u8) -> bool {
        (self.base()..self.base() + ARENA).contains(&(ptr as usize))
    }

    /// Whether `ptr..ptr+size` is the newest block.
    fn is_top(&self, ptr: *mut u8, size: usize) -> bool {
        ptr as usize + size == self.base() + self.top.get()
    }
}

impl Default for Arena {
    fn default() -> Arena {
        Arena::new()
    }
}

// SAFETY: blocks handed out never overlap (each starts at or above `top`,
// which then moves past it), are aligned as `layout` asks, and lie inside
// `bytes`; blocks not in the arena come from and go back to `System`.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = self.base();
        let start = (base + self.top.get()).next_multiple_of(layout.align());
        match start.checked_add(layout.size()) {
            Some(end) if end <= base + ARENA => {
                self.top.set(end - base);
                // Derived from the arena's own pointer, so it keeps its
                // provenance.
                self.bytes.get().cast::<u8>().wrapping_add(start - base)
            }
            // SAFETY: `layout` is the caller's, valid as `alloc` requires.
            _ => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.owns(ptr) {
            if self.is_top(ptr, layout.size()) {
                self.top.set(ptr as usize - self.base());
            }
            return;
        }
        // SAFETY: not ours, so it came from `System.alloc` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.owns(ptr) {
            // SAFETY: not ours, so it came from `System` with `layout`.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let start = ptr as usize - self.base();
        if self.is_top(ptr, layout.size()) && start + new_size <= ARENA {
            self.top.set(start + new_size);
            return ptr;
        }
        // SAFETY: `realloc`'s contract makes `new_size` with the old
        // alignment a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as in `alloc`.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long.
            unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            // SAFETY: `ptr` is ours and still live with `layout`.
            unsafe { self.dealloc(ptr, layout) };
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn bumps_reuses_the_top_block_and_falls_back_past_the_arena() {
        let arena = Box::new(Arena::new());
        unsafe {
            let a = arena.alloc(layout(10, 1));
            let b = arena.alloc(layout(8, 8));
            assert!(arena.owns(a) && arena.owns(b));
            assert_eq!(b as usize % 8, 0);
            assert!(b as usize >= a as usize + 10);
            // The newest block grows in place and is given back on free.
            assert_eq!(arena.realloc(b, layout(8, 8), 64), b);
            arena.dealloc(b, layout(64, 8));
            assert_eq!(arena.alloc(layout(8, 8)), b);
            // An older block moves when it grows, keeping its bytes.
            a.write_bytes(7, 10);
            let moved = arena.realloc(a, layout(10, 1), 20);
            assert_ne!(moved, a);
            assert_eq!(std::slice::from_raw_parts(moved, 10), &[7; 10]);
            // Larger than what is left: std's allocator, freed back to it.
            let big = arena.alloc(layout(ARENA, 1));
            assert!(!big.is_null() && !arena.owns(big));
            big.write_bytes(1, ARENA);
            let big = arena.realloc(big, layout(ARENA, 1), ARENA * 2);
            assert_eq!(*big.add(ARENA - 1), 1);
            arena.dealloc(big, layout(ARENA * 2, 1));
        }
    }
}
