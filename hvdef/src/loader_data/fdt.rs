//! The flattened device tree's header and structure-block tokens (Devicetree Specification
//! v0.4 §5): `boot::fdt` reads the tree QEMU passes on arm64, the in-VM mock edits its memory
//! node. The format is big-endian, so the fields are zerocopy's big-endian types.

use core::mem::{offset_of, size_of};
use zerocopy::big_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `fdt_header.magic`.
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// Structure-block tokens.
pub const FDT_BEGIN_NODE: u32 = 1;
pub const FDT_END_NODE: u32 = 2;
pub const FDT_PROP: u32 = 3;
pub const FDT_NOP: u32 = 4;
pub const FDT_END: u32 = 9;

/// `fdt_header` (version 17).
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
pub struct FdtHeader {
    /// [`FDT_MAGIC`].
    pub magic: U32,
    /// The whole blob's size.
    pub totalsize: U32,
    pub off_dt_struct: U32,
    pub off_dt_strings: U32,
    pub off_mem_rsvmap: U32,
    pub version: U32,
    pub last_comp_version: U32,
    pub boot_cpuid_phys: U32,
    pub size_dt_strings: U32,
    pub size_dt_struct: U32,
}

/// What follows an `FDT_PROP` token: the value's length and its name's offset in the strings
/// block; the value follows, padded to 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
pub struct FdtProp {
    pub len: U32,
    pub nameoff: U32,
}

const _: () = {
    assert!(size_of::<FdtHeader>() == 40);
    assert!(offset_of!(FdtHeader, totalsize) == 4);
    assert!(offset_of!(FdtHeader, size_dt_struct) == 36);
    assert!(size_of::<FdtProp>() == 8);
};
