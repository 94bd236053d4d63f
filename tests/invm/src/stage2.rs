//! The guest's stage-2 translation (IPA -> PA, identity): plain descriptor arithmetic, so it is
//! tested on the host; `aarch64::stage2` installs it.
//!
//! Layout (VTCR_EL2 T0SZ 32, a 4 GiB IPA space; 4K granule; the walk starts at level 1):
//! level-1 entry 0 is a 1 GiB Device-nGnRE block (the UART and the rest of QEMU virt's devices,
//! never executable), entry 1 a table of 2 MiB Normal write-back blocks covering the guest's RAM
//! only (so the host's own 16 MiB at the end of RAM is a stage-2 fault), entries 2-3 invalid.
//!
//! VTL0 gets its own copy of that layout, where a 2 MiB block holding a page VTL2 protected is
//! split into a level-3 table of 4 KiB pages, each with the access the model leaves VTL0
//! ([`page`]): a VTL0 access VTL2 forbade is then a stage-2 permission fault, i.e. an exit.

use core::ops::Range;

pub const GIB: u64 = 1 << 30;
pub const BLOCK_2M: u64 = 2 << 20;
pub const ENTRIES: usize = 512;

/// VTCR_EL2.T0SZ: a 32-bit IPA space.
const T0SZ: u64 = 32;
/// VTCR_EL2.SL0 for a level-1 start with the 4K granule (T0SZ 32 must start at level 1).
const SL0_LEVEL1: u64 = 1;

/// VTCR_EL2 for this layout: T0SZ 32, SL0 level 1, IRGN0/ORGN0 write-back write-allocate, SH0
/// inner shareable, TG0 4K, PS = `parange` (ID_AA64MMFR0_EL1.PARange, at most 48 bits), RES1
/// bit 31.
pub fn vtcr(parange: u64) -> u64 {
    T0SZ | (SL0_LEVEL1 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (parange.min(5) << 16) | (1 << 31)
}

const VALID: u64 = 1;
const TABLE: u64 = 1 << 1;
/// Stage-2 MemAttr[5:2]: 0b0001 Device-nGnRE, 0b1111 Normal outer/inner write-back.
const MEMATTR_DEVICE: u64 = 0b0001 << 2;
const MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;
/// S2AP[7:6] = 0b11: read and write.
const S2AP_RW: u64 = 0b11 << 6;
const SH_INNER: u64 = 0b11 << 8;
const AF: u64 = 1 << 10;
/// XN[54:53] = 0b10: not executable at EL1 or EL0.
const XN: u64 = 0b10 << 53;
/// S2AP[6] read, S2AP[7] write.
const S2AP_R: u64 = 1 << 6;
const S2AP_W: u64 = 1 << 7;
/// Bits 1:0 of a valid level-3 page descriptor.
const PAGE: u64 = 0b11;
pub const PAGE_SIZE: u64 = 4096;

/// What a lower VTL may do with a page (the model's `HvMapGpaFlags` permission bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub read: bool,
    pub write: bool,
    pub execute: bool,
}

impl Access {
    pub const ALL: Access = Access {
        read: true,
        write: true,
        execute: true,
    };
}

/// A Normal write-back level-3 page at `pa` with `access`. A page with no access at all stays a
/// valid descriptor with S2AP 0b00 and XN, so touching it is a permission fault (DFSC 0x0F, the
/// syndrome the model's GPA intercept reports), not a translation fault.
pub fn page(pa: u64, access: Access) -> u64 {
    let mut d = pa | PAGE | MEMATTR_NORMAL_WB | SH_INNER | AF;
    if access.read {
        d |= S2AP_R;
    }
    if access.write {
        d |= S2AP_W;
    }
    if !access.execute {
        d |= XN;
    }
    d
}

/// The level-3 table that replaces the 2 MiB block at `block_pa`: every page with full access
/// (as the block had), for the caller to restrict page by page.
pub fn level3(block_pa: u64) -> [u64; ENTRIES] {
    core::array::from_fn(|i| page(block_pa + i as u64 * PAGE_SIZE, Access::ALL))
}

/// Where the page at `gpa` sits in this layout: (level-2 index, level-3 index), for RAM in IPA
/// 1..2 GiB only.
pub fn indices(gpa: u64) -> Option<(usize, usize)> {
    if !(GIB..2 * GIB).contains(&gpa) {
        return None;
    }
    let off = gpa - GIB;
    Some((
        (off / BLOCK_2M) as usize,
        ((off % BLOCK_2M) / PAGE_SIZE) as usize,
    ))
}

/// The device block at IPA 0.
pub fn device_block() -> u64 {
    VALID | MEMATTR_DEVICE | S2AP_RW | AF | XN
}

/// A Normal write-back block at `pa` (level 1 or 2; the level is where it is stored).
pub fn normal_block(pa: u64) -> u64 {
    pa | VALID | MEMATTR_NORMAL_WB | S2AP_RW | SH_INNER | AF
}

pub fn table(pa: u64) -> u64 {
    pa | VALID | TABLE
}

/// Why a RAM window cannot be mapped by this layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The window is not inside IPA 1..2 GiB or not 2 MiB aligned.
    Unsupported(Range<u64>),
}

/// The level-2 table for IPA 1..2 GiB: 2 MiB blocks for `ram`, invalid elsewhere.
pub fn ram_level2(ram: &Range<u64>) -> Result<[u64; ENTRIES], LayoutError> {
    if ram.start < GIB
        || ram.end > 2 * GIB
        || ram.start >= ram.end
        || !ram.start.is_multiple_of(BLOCK_2M)
        || !ram.end.is_multiple_of(BLOCK_2M)
    {
        return Err(LayoutError::Unsupported(ram.clone()));
    }
    let mut l2 = [0; ENTRIES];
    let mut pa = ram.start;
    while pa < ram.end {
        l2[((pa - GIB) / BLOCK_2M) as usize] = normal_block(pa);
        pa += BLOCK_2M;
    }
    Ok(l2)
}

/// The level-1 root: the device block and the RAM table at `l2_pa`.
pub fn level1(l2_pa: u64) -> [u64; ENTRIES] {
    let mut l1 = [0; ENTRIES];
    l1[0] = device_block();
    l1[1] = table(l2_pa);
    l1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_blocks_cover_exactly_the_window() {
        let l2 = ram_level2(&(0x4000_0000..0x4f00_0000)).unwrap();
        assert_eq!(l2[0], 0x4000_0000 | 0x7fd);
        assert_eq!(l2[119], 0x4ee0_0000 | 0x7fd);
        assert!(
            l2[120..].iter().all(|&d| d == 0),
            "the host's blocks stay unmapped"
        );
        assert_eq!(l2.iter().filter(|&&d| d != 0).count(), 120);
    }

    #[test]
    fn pages_carry_exactly_the_access_given() {
        let none = Access {
            read: false,
            write: false,
            execute: false,
        };
        // Valid page, Normal WB, inner shareable, AF; S2AP and XN by access.
        assert_eq!(page(0x4020_0000, Access::ALL), 0x4020_0000 | 0x7ff);
        assert_eq!(page(0x4020_1000, none), 0x4020_1000 | 0x73f | XN);
        let read_only = Access { read: true, ..none };
        assert_eq!(page(0x4020_2000, read_only), 0x4020_2000 | 0x77f | XN);
        let l3 = level3(0x4020_0000);
        assert_eq!(l3[0], page(0x4020_0000, Access::ALL));
        assert_eq!(l3[511], page(0x403f_f000, Access::ALL));
    }

    #[test]
    fn indices_name_the_block_and_the_page() {
        assert_eq!(indices(0x4000_0000), Some((0, 0)));
        assert_eq!(indices(0x4020_1fff), Some((1, 1)));
        assert_eq!(indices(0x7fff_f000), Some((511, 511)));
        assert_eq!(indices(0x3fff_f000), None);
        assert_eq!(indices(0x8000_0000), None);
    }

    #[test]
    fn root_maps_devices_and_ram_table() {
        let l1 = level1(0x4f01_0000);
        assert_eq!(l1[0], 0x0040_0000_0000_04c5);
        assert_eq!(l1[1], 0x4f01_0003);
        assert!(l1[2..].iter().all(|&d| d == 0));
    }

    #[test]
    fn vtcr_starts_at_level1_for_a_32_bit_ipa_space() {
        assert_eq!(vtcr(2), 0x8002_3560);
        assert_eq!(vtcr(6) >> 16 & 7, 5, "52-bit PARange is clamped to 48 bits");
    }

    #[test]
    fn unsupported_windows_are_refused() {
        for bad in [
            0x3fe0_0000..0x4020_0000,
            0x4000_0000..0x8020_0000,
            0x4000_1000..0x4f00_0000,
            0x4f00_0000..0x4f00_0000,
        ] {
            assert_eq!(ram_level2(&bad), Err(LayoutError::Unsupported(bad.clone())));
        }
    }
}
