//! The paravisor's heap: VTL2 memory right after the image, sized at boot for the VP count the
//! loader reports, handed to `linked_list_allocator` as the global allocator. Per-VP state
//! (AP boot stacks, per-CPU records, the firmware's per-VP pages) is allocated from it once, at
//! boot, for exactly that many VPs; nothing is sized by a compile-time VP maximum.
//!
//! Where the heap lies is [`heap_range`]'s one decision (called through
//! `boot::vtl2_heap_range`), always from the first page after the image:
//! - **An IGVM boot** declares VTL2's memory (RequiredMemory, VTL2-protectable; the memory map
//!   marks it): the heap is the rest of the declared range that holds the image, all of it, and
//!   must hold at least [`heap_size`] for the VP count, else the boot stops naming both. The
//!   file declares room for [`IGVM_HEAP_VPS`] VPs (`xtask/src/igvm.rs`).
//! - **An ELF boot** (QEMU's PVH / device tree) declares none: the heap is [`heap_size`] bytes,
//!   which must be RAM the loader reported. That range is assumed free: the images this project
//!   builds place nothing there (the VTL0 test kernel sits at 64 MiB on x86 and 0x4800_0000 on
//!   arm64), but nothing checks it against what a loader placed.
//!
//! The heap is VTL2's: the firmware takes it from VTL0 together with the image
//! (`boot::vtl2_memory`), so on an IGVM boot all of the declared memory is protected.
#![cfg_attr(
    target_os = "none",
    expect(unsafe_code, reason = "the global allocator hands out raw heap memory")
)]

use core::ops::Range;

/// The most VPs a partition can have: `HV_MAXIMUM_PROCESSORS` = 2048 in Microsoft's `hvgdk.h`
/// (the header the TLFS's types come from; `HV_MAX_VP_INDEX` = 2047; Linux `hvgdk_mini.h` has
/// 2048 for x64). The paravisor serves up to this many; a loader reporting more gets a line
/// naming both counts (see [`crate::VpCount::AboveLimit`]).
pub const VP_LIMIT: usize = 2048;

// The budget is shared with the IGVM builder, which sizes the file's VTL2 memory by it.
pub use hvdef::heap::{heap_size, HEAP_FIXED, HEAP_PER_VP, IGVM_HEAP_VPS};

const PAGE: u64 = 4096;

/// Why no heap could be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapError {
    /// `range` is not inside one RAM range the loader reported.
    NotInRam { range: (u64, u64) },
    /// `range` is not below the static identity map's end (the heap is used before the map is
    /// extended).
    NotMapped { range: (u64, u64) },
    /// The declared VTL2 memory holding the image leaves `room` bytes after it, fewer than the
    /// `needed` ones.
    Vtl2TooSmall {
        declared: (u64, u64),
        room: u64,
        needed: u64,
    },
    /// The loader declared VTL2 memory, but none of it holds the image's last byte `at`.
    ImageOutsideVtl2 { at: u64 },
}

impl core::fmt::Display for HeapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            HeapError::NotInRam { range: (s, e) } => {
                write!(f, "{s:#x}..{e:#x} is not inside RAM the loader reported")
            }
            HeapError::NotMapped { range: (s, e) } => write!(
                f,
                "{s:#x}..{e:#x} is not below {:#x}, the end of the boot identity map",
                crate::paging::STATIC_MAP_END
            ),
            HeapError::Vtl2TooSmall {
                declared: (s, e),
                room,
                needed,
            } => write!(
                f,
                "the declared VTL2 memory {s:#x}..{e:#x} leaves {room} bytes after the image, \
                 {needed} needed (the loader must declare more VTL2 memory, or report fewer VPs)"
            ),
            HeapError::ImageOutsideVtl2 { at } => write!(
                f,
                "the loader declared VTL2 memory, but none of it holds the image (its end, \
                 {at:#x})"
            ),
        }
    }
}

/// The heap for `vp_count` VPs, from the first page at or after `image_end`: with declared
/// VTL2 memory (`vtl2` not empty), the rest of the declared range holding the image, which must
/// leave at least [`heap_size`] bytes; without, [`heap_size`] bytes that must lie in one of the
/// `ram` ranges. Either way in the static identity map.
pub fn heap_range(
    image_end: u64,
    vp_count: u32,
    ram: &[Range<u64>],
    vtl2: &[Range<u64>],
) -> Result<Range<u64>, HeapError> {
    let start = image_end.div_ceil(PAGE) * PAGE;
    let needed = heap_size(vp_count);
    if !vtl2.is_empty() {
        let last = image_end.saturating_sub(1);
        let declared = vtl2
            .iter()
            .find(|r| r.contains(&last))
            .ok_or(HeapError::ImageOutsideVtl2 { at: image_end })?;
        let end = declared.end / PAGE * PAGE;
        let room = end.saturating_sub(start);
        if room < needed {
            return Err(HeapError::Vtl2TooSmall {
                declared: (declared.start, declared.end),
                room,
                needed,
            });
        }
        if end > crate::paging::STATIC_MAP_END {
            return Err(HeapError::NotMapped {
                range: (start, end),
            });
        }
        return Ok(start..end);
    }
    let end = start.saturating_add(needed);
    let range = (start, end);
    if end > crate::paging::STATIC_MAP_END {
        return Err(HeapError::NotMapped { range });
    }
    if !ram.iter().any(|r| r.start <= start && end <= r.end) {
        return Err(HeapError::NotInRam { range });
    }
    Ok(start..end)
}

#[cfg(target_os = "none")]
mod global {
    use core::alloc::{GlobalAlloc, Layout};
    use core::ptr::NonNull;
    use linked_list_allocator::Heap;

    /// `linked_list_allocator`'s heap behind a spin lock: its `LockedHeap` needs the crate's
    /// `use_spin` feature (the `spinning_top` crate); `spin::Mutex` is the same thing with
    /// the lock this workspace already has.
    struct Allocator(spin::Mutex<Heap>);

    // SAFETY: every block comes from the heap `init` hands over, under the lock, and is
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

    /// Hands `range` to the allocator, once, on the boot VP before any allocation.
    ///
    /// # Safety
    /// `range` is identity-mapped RAM that nothing else uses, for ever.
    pub(crate) unsafe fn init(range: core::ops::Range<u64>) {
        static DONE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
        assert!(
            !DONE.swap(true, core::sync::atomic::Ordering::Relaxed),
            "heap initialized twice"
        );
        // SAFETY: the caller's contract; DONE makes this the only hand-out.
        unsafe {
            HEAP.0
                .lock()
                .init(range.start as *mut u8, (range.end - range.start) as usize)
        };
    }

    /// (used, free) bytes of the heap.
    pub fn usage() -> (usize, usize) {
        let heap = HEAP.0.lock();
        (heap.used(), heap.free())
    }
}

#[cfg(target_os = "none")]
pub(crate) use global::init;
#[cfg(target_os = "none")]
pub use global::usage;

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn the_heap_follows_the_image_and_scales_with_the_vps() {
        let ram = [0..0xa_0000, 0x10_0000..0x0f00_0000];
        assert_eq!(
            heap_range(0x18_0800, 4, &ram, &[]),
            Ok(0x18_1000..0x18_1000 + 64 * 1024 + 4 * 32 * 1024)
        );
        assert_eq!(heap_size(1), 96 * 1024);
        assert_eq!(heap_size(VP_LIMIT as u32), 64 * 1024 + 64 * 1024 * 1024);
        // 2048 VPs need 64 MiB and some: past this RAM's end.
        let small = [0x10_0000..0x0200_0000];
        assert_eq!(
            heap_range(0x18_0000, VP_LIMIT as u32, &small, &[]),
            Err(HeapError::NotInRam {
                range: (0x18_0000, 0x18_0000 + heap_size(VP_LIMIT as u32))
            })
        );
        assert_eq!(
            heap_range(0xffff_0000, 1, &[0..u64::MAX], &[]),
            Err(HeapError::NotMapped {
                range: (0xffff_0000, 0xffff_0000 + 96 * 1024)
            })
        );
        // Straddling two RAM ranges is not inside one.
        let split = [0x10_0000..0x20_0000, 0x20_0000..0x40_0000];
        assert!(heap_range(0x1f_0000, 1, &split, &[]).is_err());
    }

    #[test]
    fn with_declared_vtl2_memory_the_heap_is_the_rest_of_it() {
        // RAM is what the memory map calls RAM: the declared VTL2 memory is not in it.
        let ram = [0..0x20_0000, 0x80_0000..0x1000_0000];
        let vtl2 = [0x20_0000..0x80_0000];
        assert_eq!(
            heap_range(0x28_b000, 4, &ram, &vtl2),
            Ok(0x28_b000..0x80_0000)
        );
        // Room for (0x80_0000 - 0x28_b000 - 64 KiB) / 32 KiB = 172 VPs, not 173.
        assert!(heap_range(0x28_b000, 172, &ram, &vtl2).is_ok());
        assert_eq!(
            heap_range(0x28_b000, 173, &ram, &vtl2),
            Err(HeapError::Vtl2TooSmall {
                declared: (0x20_0000, 0x80_0000),
                room: 0x80_0000 - 0x28_b000,
                needed: heap_size(173),
            })
        );
        // Declared memory elsewhere: the image is not in it.
        assert_eq!(
            heap_range(0x28_b000, 1, &ram, &[0x100_0000..0x120_0000]),
            Err(HeapError::ImageOutsideVtl2 { at: 0x28_b000 })
        );
    }
}
