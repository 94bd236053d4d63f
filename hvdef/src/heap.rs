//! The paravisor's heap budget (not the TLFS's: the firmware's own), shared by the firmware's
//! heap placement (`boot::heap`) and the IGVM builder (`xtask/src/igvm.rs`), which declares
//! VTL2 memory with room for [`IGVM_HEAP_VPS`] VPs: one definition for both sides.

/// The VPs the IGVM file's declared VTL2 memory has heap room for (the image and
/// `heap_size(IGVM_HEAP_VPS)`, rounded up to 2 MiB): the "at least 1,024". A loader
/// reporting more stops the boot with a line naming the count and the room.
pub const IGVM_HEAP_VPS: u32 = 1024;

/// Heap bytes reserved per VP: the budget for everything a VP owns (its boot stack, its
/// per-CPU record, the firmware's input, output and VP assist pages, allocator headers).
pub const HEAP_PER_VP: u64 = 32 * 1024;
/// Heap bytes reserved beyond the per-VP share: the per-VP tables' own slices and what the
/// firmware allocates once.
pub const HEAP_FIXED: u64 = 64 * 1024;

/// The heap's size for `vp_count` VPs.
pub const fn heap_size(vp_count: u32) -> u64 {
    HEAP_FIXED + vp_count as u64 * HEAP_PER_VP
}
