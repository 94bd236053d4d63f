//! Xen's PVH boot ABI as QEMU implements it (`xen/include/public/arch-x86/hvm/start_info.h`):
//! `hvm_start_info` and its memory map entries. The in-VM mock reads QEMU's and writes one
//! for the paravisor; `boot`'s x86_64 PVH entry reads it.

use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `XEN_HVM_START_MAGIC_VALUE`.
pub const HVM_START_MAGIC: u32 = 0x336e_c578;
/// `XEN_HVM_MEMMAP_TYPE_RAM`: the one memory map type that is RAM.
pub const HVM_MEMMAP_TYPE_RAM: u32 = 1;

/// `hvm_start_info`, version 1 (version 0 ends before `memmap_paddr`, but the struct is
/// always 56 bytes long).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HvmStartInfo {
    /// [`HVM_START_MAGIC`].
    pub magic: u32,
    pub version: u32,
    pub flags: u32,
    pub nr_modules: u32,
    pub modlist_paddr: u64,
    /// A NUL-terminated command line, or 0.
    pub cmdline_paddr: u64,
    /// The ACPI RSDP, or 0 (every version).
    pub rsdp_paddr: u64,
    /// Version 1: [`HvmMemmapTableEntry`] records, `memmap_entries` of them.
    pub memmap_paddr: u64,
    pub memmap_entries: u32,
    pub reserved: u32,
}

/// `hvm_memmap_table_entry`.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HvmMemmapTableEntry {
    pub addr: u64,
    pub size: u64,
    /// [`HVM_MEMMAP_TYPE_RAM`] or another E820-style type.
    pub entry_type: u32,
    pub reserved: u32,
}

const _: () = {
    assert!(size_of::<HvmStartInfo>() == 56);
    assert!(offset_of!(HvmStartInfo, version) == 4);
    assert!(offset_of!(HvmStartInfo, cmdline_paddr) == 24);
    assert!(offset_of!(HvmStartInfo, rsdp_paddr) == 32);
    assert!(offset_of!(HvmStartInfo, memmap_paddr) == 40);
    assert!(offset_of!(HvmStartInfo, memmap_entries) == 48);
    assert!(size_of::<HvmMemmapTableEntry>() == 24);
    assert!(offset_of!(HvmMemmapTableEntry, entry_type) == 16);
};
