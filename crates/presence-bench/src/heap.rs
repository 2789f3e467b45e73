//! A counting global allocator: jemalloc plus a count of live heap bytes, so the
//! engine benchmark can report how much memory the engine holds per user.
//!
//! The binary installs [`CountingAlloc`] with `#[global_allocator]`; library code reads the
//! counter through [`live_bytes`]. Without the allocator installed (the criterion benches),
//! [`is_counting`] is false and memory figures are not reported. Sizes are the ones requested
//! by the program, not what the allocator rounds them up to, so the figure is a lower bound on
//! the process's resident memory for the same data.

use std::{
    alloc::{GlobalAlloc, Layout},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
};

// The allocator doing the work: jemalloc, as in the server, so the HTTP load generator's
// many small allocations do not make it the bottleneck of what it measures.
use tikv_jemallocator::Jemalloc as Inner;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// jemalloc, counting live bytes. Install it in a binary with
/// `#[global_allocator] static ALLOC: CountingAlloc = CountingAlloc;`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

impl CountingAlloc {
    #[inline]
    fn add(n: usize) {
        LIVE.fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    fn sub(n: usize) {
        LIVE.fetch_sub(n, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to jemalloc with the caller's own arguments, so jemalloc's
// guarantees are this allocator's; the bookkeeping only touches atomics and never allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which jemalloc shares.
        let p = unsafe { Inner.alloc(layout) };
        if !p.is_null() {
            Self::add(layout.size());
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { Inner.alloc_zeroed(layout) };
        if !p.is_null() {
            Self::add(layout.size());
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by this allocator, that is by jemalloc, with `layout`.
        unsafe { Inner.dealloc(ptr, layout) };
        Self::sub(layout.size());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` and `layout` come from this allocator, that is from jemalloc.
        let p = unsafe { Inner.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // On failure the old block is still live, so nothing changes.
            Self::sub(layout.size());
            Self::add(new_size);
        }
        p
    }
}

/// Marks the counter as meaningful. The binary calls it at startup, once its allocator is
/// [`CountingAlloc`]; without that call memory is reported as unknown.
pub fn activate() {
    ACTIVE.store(true, Ordering::Relaxed);
}

/// Whether [`live_bytes`] counts the process's heap (the binary installed [`CountingAlloc`]).
pub fn is_counting() -> bool {
    ACTIVE.load(Ordering::Relaxed) && LIVE.load(Ordering::Relaxed) > 0
}

/// Bytes currently allocated through [`CountingAlloc`] and not yet freed.
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}
