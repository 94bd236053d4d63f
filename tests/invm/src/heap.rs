//! The model's heap (it keeps its partition, VPs and trace in `alloc` collections): the linker
//! script's `.heap`, behind a lock. Both hosts'.
#![expect(
    unsafe_code,
    reason = "the global allocator over the linker script's .heap"
)]

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use linked_list_allocator::Heap;

struct Allocator(spin::Mutex<Heap>);

// SAFETY: every block comes from the heap the linker script reserves, under the lock, and is
// returned to it with the layout it was allocated with.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0
            .lock()
            .allocate_first_fit(layout)
            .map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(ptr) = NonNull::new(ptr) {
            // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with this `layout`.
            unsafe { self.0.lock().deallocate(ptr, layout) }
        }
    }
}

#[global_allocator]
static HEAP: Allocator = Allocator(spin::Mutex::new(Heap::empty()));

unsafe extern "C" {
    static mut __heap_start: u8;
    static __heap_end: u8;
}

/// Hands the linker script's heap to the allocator, once, before any allocation.
pub fn init() {
    static DONE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    assert!(
        !DONE.swap(true, core::sync::atomic::Ordering::Relaxed),
        "heap initialized twice"
    );
    // SAFETY: the linker script reserves __heap_start..__heap_end for the heap alone, and
    // this is its only hand-out (DONE).
    unsafe {
        let start = &raw mut __heap_start;
        let size = &raw const __heap_end as usize - start as usize;
        HEAP.0.lock().init(start, size);
    }
}
