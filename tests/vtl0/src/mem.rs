//! The one place that touches memory by guest-physical address: the test table window and the
//! kernel's own hypercall pages (physical = virtual in the kernel's identity map). Always
//! volatile copies, never references, since the hypervisor (or a write probe) may change them.
#![expect(
    unsafe_code,
    reason = "the one place memory is touched by guest-physical address"
)]

use vtl0::{Arch, PAGE_SIZE, TABLE_MAX};

/// The ranges this module may touch: the table window and every VP's input/output pages.
fn allowed(arch: Arch, gpa: u64, len: usize) -> bool {
    let end = gpa.checked_add(len as u64);
    let within = |start: u64, size: u64| end.is_some_and(|e| gpa >= start && e <= start + size);
    let others = arch.vp_input_page(1);
    within(arch.table_gpa(), TABLE_MAX as u64)
        || within(arch.input_page(), 2 * PAGE_SIZE as u64)
        || within(others, arch.end_gpa() - others)
}

/// Copies `dst.len()` bytes from `gpa`; false (nothing copied) outside the allowed ranges.
pub fn read(arch: Arch, gpa: u64, dst: &mut [u8]) -> bool {
    if !allowed(arch, gpa, dst.len()) {
        return false;
    }
    for (i, b) in dst.iter_mut().enumerate() {
        // SAFETY: `allowed` checked the byte is in the table window or the kernel's own
        // hypercall pages: RAM identity mapped by the kernel's page tables, with no Rust
        // reference to it anywhere (only these volatile copies touch it).
        *b = unsafe { core::ptr::read_volatile((gpa as usize + i) as *const u8) };
    }
    true
}

/// Copies `src` to `gpa` and zeroes `zero_after` more bytes; false outside the allowed ranges.
pub fn write(arch: Arch, gpa: u64, src: &[u8], zero_after: usize) -> bool {
    if !allowed(arch, gpa, src.len() + zero_after) {
        return false;
    }
    let bytes = src
        .iter()
        .copied()
        .chain(core::iter::repeat_n(0, zero_after));
    for (i, b) in bytes.enumerate() {
        // SAFETY: as in `read`: inside the kernel's own hypercall pages (or the table window),
        // identity mapped RAM nothing else references.
        unsafe { core::ptr::write_volatile((gpa as usize + i) as *mut u8, b) };
    }
    true
}
