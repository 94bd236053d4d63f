//! The guest's stage-2 translation (IPA -> PA, identity): plain descriptor arithmetic, so it is
//! tested on the host; `aarch64::stage2` installs it.
//!
//! Layout (VTCR_EL2 T0SZ 25, a 512 GiB IPA space; 4K granule; the walk starts at level 1):
//! level-1 entry 0 is a 1 GiB Device-nGnRE block (the UART and the rest of QEMU virt's devices,
//! never executable); the guest's RAM is Normal write-back, in 1 GiB blocks where a whole GiB is
//! RAM, else 2 MiB blocks and 4 KiB pages in tables ([`crate::gpt`]); everything else, the
//! host's own 16 MiB among it, is a stage-2 fault.
//!
//! VTL0 gets its own copy of that layout, where a block holding a page VTL2 protected is split
//! down to 4 KiB pages, each with the access the model leaves VTL0 ([`page`]): a VTL0 access
//! VTL2 forbade is then a stage-2 permission fault, i.e. an exit.

pub use crate::gpt::Access;

pub const ENTRIES: usize = crate::gpt::ENTRIES;

/// VTCR_EL2.T0SZ: a 39-bit IPA space (512 GiB, one level-1 table).
const T0SZ: u64 = 25;
/// VTCR_EL2.SL0 for a level-1 start with the 4K granule (T0SZ 25..=33 start at level 1).
const SL0_LEVEL1: u64 = 1;

/// VTCR_EL2 for this layout: T0SZ 25, SL0 level 1, IRGN0/ORGN0 write-back write-allocate, SH0
/// inner shareable, TG0 4K, PS = `parange` (ID_AA64MMFR0_EL1.PARange, at most 48 bits), RES1
/// bit 31. The IPA space must not exceed PS (QEMU faults every access otherwise:
/// `check_s2_mmu_setup`); [`ipa_fits`] says whether it does.
pub fn vtcr(parange: u64) -> u64 {
    T0SZ | (SL0_LEVEL1 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (parange.min(5) << 16) | (1 << 31)
}

/// Whether the 39-bit IPA space fits the CPU's physical address size (PARange 1, 36 bits, does
/// not).
pub fn ipa_fits(parange: u64) -> bool {
    (2..=6).contains(&parange)
}

const VALID: u64 = 1;
const TABLE: u64 = 1 << 1;
/// Stage-2 `MemAttr[5:2]`: 0b0001 Device-nGnRE, 0b1111 Normal outer/inner write-back.
const MEMATTR_DEVICE: u64 = 0b0001 << 2;
const MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;
/// `S2AP[7:6]` = 0b11: read and write.
const S2AP_RW: u64 = 0b11 << 6;
const SH_INNER: u64 = 0b11 << 8;
const AF: u64 = 1 << 10;
/// `XN[54:53]` = 0b10: not executable at EL1 or EL0.
const XN: u64 = 0b10 << 53;
/// `S2AP[6]` read, `S2AP[7]` write.
const S2AP_R: u64 = 1 << 6;
const S2AP_W: u64 = 1 << 7;
/// Bits 1:0 of a valid level-3 page descriptor.
const PAGE: u64 = 0b11;
/// Output address bits `[47:12]` of a descriptor.
const ADDRESS: u64 = 0x0000_ffff_ffff_f000;

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

/// The stage-2 format for [`crate::gpt`].
pub struct Stage2;

impl crate::gpt::Format for Stage2 {
    fn root_shift(&self) -> u32 {
        30
    }

    fn leaf_allowed(&self, shift: u32) -> bool {
        matches!(shift, 12 | 21 | 30)
    }

    fn leaf(&self, pa: u64, shift: u32) -> u64 {
        if shift == 12 {
            page(pa, Access::ALL)
        } else {
            normal_block(pa)
        }
    }

    fn table(&self, pa: u64) -> u64 {
        table(pa)
    }

    fn child(&self, entry: u64, shift: u32) -> Option<u64> {
        (shift > 12 && entry & 0b11 == VALID | TABLE).then_some(entry & ADDRESS)
    }

    fn valid(&self, entry: u64) -> bool {
        entry & VALID != 0
    }

    fn split(&self, entry: u64, shift: u32) -> [u64; ENTRIES] {
        let size = 1u64 << (shift - 9);
        let base = entry & ADDRESS & !((1u64 << shift) - 1);
        let attrs = entry & !ADDRESS;
        // A block one level down keeps bits 1:0 = 0b01; a level-3 page has 0b11.
        let kind = if shift - 9 == 12 { PAGE } else { VALID };
        core::array::from_fn(|i| (base + i as u64 * size) | (attrs & !0b11) | kind)
    }
}

/// A new root for `ram`: the device block at IPA 0 and the RAM ([`crate::gpt::build`]).
pub fn root(
    tables: &mut impl crate::gpt::Tables,
    ram: &[core::ops::Range<u64>],
) -> Result<u64, crate::gpt::MapError> {
    if let Some(r) = ram.iter().find(|r| r.start < 1 << 30) {
        // Block 0 is the devices'; virt's RAM starts at 1 GiB.
        return Err(crate::gpt::MapError::Unsupported(r.clone()));
    }
    let root = crate::gpt::build(&Stage2, tables, ram)?;
    tables.write(root, 0, device_block());
    Ok(root)
}

#[cfg(test)]
// One RAM range is a slice of one range here, not a mistaken `start..end` list.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use crate::gpt::{lookup, set_page, HeapTables, MapError, Tables};

    const G: u64 = 1 << 30;
    const M: u64 = 1 << 20;

    #[test]
    fn every_page_size_maps_exactly_the_ram() {
        let mut t = HeapTables;
        // A 6 GiB + 3 MiB virt machine less the host's 16 MiB at 0x4f000000.
        let ram = [G..0x4f00_0000, 0x5000_0000..7 * G + 3 * M];
        let root = root(&mut t, &ram).unwrap();
        assert_eq!(t.read(root, 0), 0x0040_0000_0000_04c5, "the device block");
        assert_eq!(
            lookup(&Stage2, &t, root, 0x900_0000),
            Some((0x0040_0000_0000_04c5, 30))
        );
        assert_eq!(lookup(&Stage2, &t, root, G), Some((G | 0x7fd, 21)));
        assert_eq!(
            lookup(&Stage2, &t, root, 0x4ee0_0000),
            Some((0x4ee0_0000 | 0x7fd, 21))
        );
        assert_eq!(lookup(&Stage2, &t, root, 0x4f00_0000), None, "the host's");
        assert_eq!(lookup(&Stage2, &t, root, 0x4fff_f000), None, "the host's");
        assert_eq!(
            lookup(&Stage2, &t, root, 0x5000_0000),
            Some((0x5000_0000 | 0x7fd, 21))
        );
        assert_eq!(
            lookup(&Stage2, &t, root, 4 * G + 5),
            Some(((4 * G) | 0x7fd, 30))
        );
        assert_eq!(
            lookup(&Stage2, &t, root, 7 * G),
            Some(((7 * G) | 0x7fd, 21))
        );
        let last = 7 * G + 3 * M - 4096;
        assert_eq!(lookup(&Stage2, &t, root, last), Some((last | 0x7ff, 12)));
        assert_eq!(lookup(&Stage2, &t, root, 7 * G + 3 * M), None);
        assert_eq!(lookup(&Stage2, &t, root, 8 * G), None);
        assert_eq!(t.read(root, 8), 0);
    }

    #[test]
    fn a_protected_page_splits_its_blocks_and_keeps_the_rest() {
        let mut t = HeapTables;
        let root = root(&mut t, &[G..8 * G]).unwrap();
        let none = Access {
            read: false,
            write: false,
            execute: false,
        };
        set_page(
            &Stage2,
            &mut t,
            root,
            3 * G + 0x1000,
            page(3 * G + 0x1000, none),
        )
        .unwrap();
        assert_eq!(
            lookup(&Stage2, &t, root, 3 * G + 0x1000),
            Some(((3 * G + 0x1000) | 0x73f | XN, 12))
        );
        assert_eq!(
            lookup(&Stage2, &t, root, 3 * G),
            Some(((3 * G) | 0x7ff, 12))
        );
        assert_eq!(
            lookup(&Stage2, &t, root, 3 * G + 0x1f_f000),
            Some(((3 * G + 0x1f_f000) | 0x7ff, 12))
        );
        assert_eq!(
            lookup(&Stage2, &t, root, 3 * G + 2 * M),
            Some(((3 * G + 2 * M) | 0x7fd, 21)),
            "the next 2 MiB stays a block"
        );
        assert_eq!(
            lookup(&Stage2, &t, root, 4 * G),
            Some(((4 * G) | 0x7fd, 30))
        );
        assert_eq!(
            set_page(&Stage2, &mut t, root, 9 * G, 0),
            Err(MapError::NotRam(9 * G))
        );
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
    }

    #[test]
    fn vtcr_starts_at_level1_for_a_39_bit_ipa_space() {
        assert_eq!(vtcr(2), 0x8002_3559);
        assert_eq!(vtcr(6) >> 16 & 7, 5, "52-bit PARange is clamped to 48 bits");
        assert!(ipa_fits(2) && ipa_fits(5) && !ipa_fits(1) && !ipa_fits(0));
    }

    #[test]
    fn unsupported_ram_is_refused() {
        let mut t = HeapTables;
        for bad in [
            0x3fe0_0000..0x4020_0000,
            0x4000_1800..0x4f00_0000,
            G..(1 << 39) + G,
        ] {
            assert_eq!(
                root(&mut t, std::slice::from_ref(&bad)).map(|_| ()),
                Err(MapError::Unsupported(bad.clone()))
            );
        }
    }
}
