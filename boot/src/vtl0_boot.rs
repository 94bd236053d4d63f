//! The VTL0 boot page: where the IGVM file carries VTL0's initial context.
//!
//! The image reserves one page-aligned NOLOAD page, the `.vtl0_boot` section
//! (`boot_vtl0_boot_start`..`boot_vtl0_boot_end`, [`PAGE_SIZE`] bytes). An IGVM file with a
//! VTL0 payload (built by `xtask/src/igvm.rs`, with the same layout,
//! `hvdef::loader_data::vtl0_boot`; both sides pin the same golden bytes) fills it as ordinary
//! page data; without a payload, and in a QEMU ELF boot, it stays zero, which reads as "no
//! payload". It lies inside the image, so the paravisor takes it from VTL0 with the rest of its
//! memory.
//!
//! | offset | field (`Vtl0BootHeader`) |
//! |---|---|
//! | 0 | magic `u64`, [`MAGIC`] (`b"PVVTL0IC"`) |
//! | 8 | version `u32`, [`VERSION`] |
//! | 12 | arch `u32`: [`ARCH_X86_64`] or [`ARCH_AARCH64`] |
//! | 16 | context size `u32`: the size of the arch's TLFS `HV_INITIAL_VP_CONTEXT` (224 / 72) |
//! | 20 | reserved `u32`, zero |
//! | [`CONTEXT_OFFSET`] (24) | the context, then zeros to the end of the page |
//!
//! Everything in it is loader input: the paravisor (`paravisor::vtl0_boot`) validates every
//! field before it uses one. This module only reads the page.
#![cfg_attr(
    target_os = "none",
    expect(
        unsafe_code,
        reason = "the VTL0 boot page is a link_section static the loader fills"
    )
)]

pub use hvdef::loader_data::vtl0_boot::{
    Vtl0BootHeader, ARCH_AARCH64, ARCH_X86_64, CONTEXT_OFFSET, MAGIC, PAGE_SIZE, VERSION,
};

/// The image's VTL0 boot page. Interior mutability because the loader writes it behind the
/// compiler's back; Rust code only reads it, with volatile copies.
#[cfg(target_os = "none")]
#[repr(C, align(4096))]
struct BootPage(core::cell::UnsafeCell<[u8; PAGE_SIZE]>);

// SAFETY: only read (by the boot VP, with volatile copies); nothing in the image writes it.
#[cfg(target_os = "none")]
unsafe impl Sync for BootPage {}

/// Placed by the linker scripts in the NOLOAD `.vtl0_boot` output section.
#[cfg(target_os = "none")]
#[used]
#[unsafe(link_section = ".vtl0_boot")]
static PAGE: BootPage = BootPage(core::cell::UnsafeCell::new([0; PAGE_SIZE]));

/// The page's address (the image is identity-mapped).
#[cfg(target_os = "none")]
pub fn page_gpa() -> u64 {
    PAGE.0.get() as u64
}

/// A copy of the VTL0 boot page as the loader left it.
#[cfg(target_os = "none")]
pub fn read_page() -> [u8; PAGE_SIZE] {
    let mut copy = [0u8; PAGE_SIZE];
    // SAFETY: the page is the image's static, only ever read through this range. The copy is
    // volatile: its initializer says zero, but the loader wrote it before we ran.
    let page = unsafe { crate::guest::GuestRange::loader_page(&PAGE.0) };
    if page.read(&mut copy).is_err() {
        unreachable!("the copy is the page's size");
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_spells_pvvtl0ic() {
        assert_eq!(MAGIC.to_le_bytes(), *b"PVVTL0IC");
        assert_eq!(MAGIC, 0x4349_304c_5456_5650);
    }
}
