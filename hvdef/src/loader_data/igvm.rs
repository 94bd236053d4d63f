//! The image's IGVM parameter area: what the IGVM builder (`xtask/src/igvm.rs`) asks the loader
//! to deposit, and where, and what `boot::igvm` reads back.
//!
//! One area of [`PARAMS_SIZE`] bytes, inserted at the image's `.igvm_params` section, one page
//! per parameter ([`IgvmParamArea`]): the `VpCount` parameter (a `u32`), the `MemoryMap`
//! parameter (`igvm_defs::IGVM_VHS_MEMORY_MAP_ENTRY` records, a 0-page record ending the list)
//! and the `CommandLine` parameter (NUL-terminated, OpenVMM's convention).

use core::mem::{offset_of, size_of};
use igvm_defs::IGVM_VHS_MEMORY_MAP_ENTRY;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

const PAGE: usize = 0x1000;

/// Memory map records that fit the memory map's page.
pub const MEMORY_MAP_ENTRIES: usize = PAGE / size_of::<IGVM_VHS_MEMORY_MAP_ENTRY>();

/// The parameter area, page by page. The builder names each parameter by its field's offset;
/// the reader takes each from the same offset, a field at a time (a loader may write any
/// subset, and the reader accepts a short buffer).
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IgvmParamArea {
    /// `VpCount`: the VPs the host intends to start.
    pub vp_count: u32,
    pub vp_count_rest: [u8; PAGE - size_of::<u32>()],
    /// `MemoryMap`: RAM as `MEMORY`, VTL2's own memory as `VTL2_PROTECTABLE`.
    pub memory_map: [IGVM_VHS_MEMORY_MAP_ENTRY; MEMORY_MAP_ENTRIES],
    pub memory_map_rest: [u8; PAGE - MEMORY_MAP_ENTRIES * size_of::<IGVM_VHS_MEMORY_MAP_ENTRY>()],
    /// `CommandLine`: the command line, NUL-terminated.
    pub command_line: [u8; PAGE],
}

/// Size of the parameter area (and of the image's `.igvm_params` section).
pub const PARAMS_SIZE: usize = size_of::<IgvmParamArea>();
/// Where the loader writes the `u32` VP count.
pub const VP_COUNT_OFFSET: usize = offset_of!(IgvmParamArea, vp_count);
/// Where the loader writes the memory map: its own page (170 records of room).
pub const MEMORY_MAP_OFFSET: usize = offset_of!(IgvmParamArea, memory_map);
/// Where the loader writes the command line: its own page, NUL-terminated.
pub const COMMAND_LINE_OFFSET: usize = offset_of!(IgvmParamArea, command_line);

const _: () = {
    assert!(size_of::<IGVM_VHS_MEMORY_MAP_ENTRY>() == 24);
    assert!(MEMORY_MAP_ENTRIES == 170);
    assert!(PARAMS_SIZE == 3 * PAGE);
    assert!(VP_COUNT_OFFSET == 0);
    assert!(MEMORY_MAP_OFFSET == PAGE);
    assert!(COMMAND_LINE_OFFSET == 2 * PAGE);
};
