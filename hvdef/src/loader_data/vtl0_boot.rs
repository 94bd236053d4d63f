//! The VTL0 boot page's header: how the IGVM file (written by `xtask/src/igvm.rs`) carries
//! VTL0's initial context to the paravisor (`boot::vtl0_boot` places the page,
//! `paravisor::vtl0_boot` validates it). The arch's TLFS `HV_INITIAL_VP_CONTEXT` follows at
//! [`CONTEXT_OFFSET`], then zeros to the end of the page.

use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of the page (the image's `.vtl0_boot` section).
pub const PAGE_SIZE: usize = 0x1000;
/// `b"PVVTL0IC"` ("paravisor VTL0 initial context") read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"PVVTL0IC");
/// The only layout there is.
pub const VERSION: u32 = 1;
/// [`Vtl0BootHeader::arch`] values.
pub const ARCH_X86_64: u32 = 1;
pub const ARCH_AARCH64: u32 = 2;

/// The page's first bytes.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Vtl0BootHeader {
    /// [`MAGIC`]; 0 in a page without a payload.
    pub magic: u64,
    /// [`VERSION`].
    pub version: u32,
    /// [`ARCH_X86_64`] or [`ARCH_AARCH64`].
    pub arch: u32,
    /// The size of the arch's TLFS `HV_INITIAL_VP_CONTEXT` (224 / 72).
    pub context_size: u32,
    /// Zero.
    pub reserved: u32,
}

/// Where the context starts: right after the header.
pub const CONTEXT_OFFSET: usize = size_of::<Vtl0BootHeader>();

const _: () = {
    assert!(CONTEXT_OFFSET == 24);
    assert!(offset_of!(Vtl0BootHeader, version) == 8);
    assert!(offset_of!(Vtl0BootHeader, arch) == 12);
    assert!(offset_of!(Vtl0BootHeader, context_size) == 16);
    assert!(offset_of!(Vtl0BootHeader, reserved) == 20);
};
