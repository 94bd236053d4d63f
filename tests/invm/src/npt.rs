//! The guest's nested page tables (GPA -> host physical, identity), as plain entry arithmetic
//! so it is tested on the host; `x86_64::svm` installs them.
//!
//! Layout: 4-level long-mode tables (the nested walk uses the host's paging mode) built by
//! [`crate::gpt`]: the guest's RAM only, in 1 GiB pages where a whole GiB is RAM (when the CPU
//! has them), else 2 MiB and 4 KiB pages, so the host's own memory (and everything that is not
//! RAM) is a nested page fault. Every level has U=1: nested walks are user accesses.

pub use crate::gpt::Access;

pub const ENTRIES: usize = crate::gpt::ENTRIES;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const LARGE: u64 = 1 << 7;
/// No execute (honoured with the host's EFER.NXE, which `svm::enable` sets).
const NO_EXECUTE: u64 = 1 << 63;
pub const PAGE_4K: u64 = 4096;
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;

/// A 4 KiB leaf for `gpa` with `access`: not present without read (x86 has no write- or
/// execute-only page), read-only without write, NX without execute.
pub fn leaf_4k(gpa: u64, access: Access) -> u64 {
    if !access.read {
        return 0;
    }
    let mut e = (gpa & !(PAGE_4K - 1)) | PRESENT | USER;
    if access.write {
        e |= WRITABLE;
    }
    if !access.execute {
        e |= NO_EXECUTE;
    }
    e
}

/// A PML4, PDPT or PD entry pointing at the next table.
pub fn table(next_pa: u64) -> u64 {
    next_pa | PRESENT | WRITABLE | USER
}

/// The nested-paging format for [`crate::gpt`]; `gib_pages`: the CPU maps 1 GiB pages
/// (CPUID 0x80000001 EDX bit 26), else a whole GiB of RAM takes 2 MiB pages.
pub struct Npt {
    pub gib_pages: bool,
}

impl crate::gpt::Format for Npt {
    fn root_shift(&self) -> u32 {
        39
    }

    fn leaf_allowed(&self, shift: u32) -> bool {
        shift == 12 || shift == 21 || (shift == 30 && self.gib_pages)
    }

    fn leaf(&self, pa: u64, shift: u32) -> u64 {
        if shift == 12 {
            leaf_4k(pa, Access::ALL)
        } else {
            pa | PRESENT | WRITABLE | USER | LARGE
        }
    }

    fn table(&self, pa: u64) -> u64 {
        table(pa)
    }

    fn child(&self, entry: u64, shift: u32) -> Option<u64> {
        (shift > 12 && entry & PRESENT != 0 && (shift == 39 || entry & LARGE == 0))
            .then_some(entry & ADDRESS)
    }

    fn valid(&self, entry: u64) -> bool {
        entry & PRESENT != 0
    }

    fn split(&self, entry: u64, shift: u32) -> [u64; ENTRIES] {
        let size = 1u64 << (shift - 9);
        let base = entry & ADDRESS & !((1u64 << shift) - 1);
        let flags = entry & (PRESENT | WRITABLE | USER | NO_EXECUTE);
        let large = if shift - 9 == 12 { 0 } else { LARGE };
        core::array::from_fn(|i| (base + i as u64 * size) | flags | large)
    }
}

#[cfg(test)]
// One RAM range is a slice of one range here, not a mistaken `start..end` list.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use crate::gpt::{build, lookup, set_page, HeapTables, MapError};

    const G: u64 = 1 << 30;
    const M: u64 = 1 << 20;

    #[test]
    fn every_page_size_maps_exactly_the_ram() {
        let mut t = HeapTables;
        let f = Npt { gib_pages: true };
        // A 6 GiB + 3 MiB q35 machine less the host's 16 MiB at 0x0f000000.
        let ram = [0..0x0f00_0000, 0x1000_0000..2 * G, 4 * G..8 * G + 3 * M];
        let root = build(&f, &mut t, &ram).unwrap();
        assert_eq!(lookup(&f, &t, root, 0), Some((0x87, 21)));
        assert_eq!(
            lookup(&f, &t, root, 0x0ee0_0000),
            Some((0x0ee0_0000 | 0x87, 21))
        );
        assert_eq!(lookup(&f, &t, root, 0x0f00_0000), None, "the host's");
        assert_eq!(
            lookup(&f, &t, root, 0x1000_0000),
            Some((0x1000_0000 | 0x87, 21))
        );
        assert_eq!(lookup(&f, &t, root, 2 * G), None, "the PCI hole");
        assert_eq!(lookup(&f, &t, root, 5 * G + 7), Some(((5 * G) | 0x87, 30)));
        assert_eq!(lookup(&f, &t, root, 8 * G), Some(((8 * G) | 0x87, 21)));
        let last = 8 * G + 3 * M - 4096;
        assert_eq!(lookup(&f, &t, root, last), Some((last | 0x7, 12)));
        assert_eq!(lookup(&f, &t, root, 8 * G + 3 * M), None);
        let small = Npt { gib_pages: false };
        let root = build(&small, &mut t, &ram).unwrap();
        assert_eq!(
            lookup(&small, &t, root, 5 * G + 7),
            Some(((5 * G) | 0x87, 21))
        );
    }

    #[test]
    fn a_protected_page_splits_its_pages_and_leaves_follow_the_protections() {
        let mut t = HeapTables;
        let f = Npt { gib_pages: true };
        let root = build(&f, &mut t, &[4 * G..6 * G]).unwrap();
        let rwx = Access::ALL;
        let ro = Access {
            write: false,
            ..rwx
        };
        set_page(
            &f,
            &mut t,
            root,
            5 * G + 0x3000,
            leaf_4k(5 * G + 0x3000, ro),
        )
        .unwrap();
        assert_eq!(
            lookup(&f, &t, root, 5 * G + 0x3000),
            Some(((5 * G + 0x3000) | 0x5, 12))
        );
        assert_eq!(lookup(&f, &t, root, 5 * G), Some(((5 * G) | 0x7, 12)));
        assert_eq!(
            lookup(&f, &t, root, 5 * G + 2 * M),
            Some(((5 * G + 2 * M) | 0x87, 21))
        );
        assert_eq!(lookup(&f, &t, root, 4 * G), Some(((4 * G) | 0x87, 30)));
        set_page(&f, &mut t, root, 5 * G + 0x3000, 0).unwrap();
        assert_eq!(lookup(&f, &t, root, 5 * G + 0x3000), None, "unmapped");
        set_page(
            &f,
            &mut t,
            root,
            5 * G + 0x3000,
            leaf_4k(5 * G + 0x3000, rwx),
        )
        .unwrap();
        assert_eq!(
            lookup(&f, &t, root, 5 * G + 0x3000),
            Some(((5 * G + 0x3000) | 0x7, 12))
        );
        assert_eq!(
            set_page(&f, &mut t, root, 7 * G, 0),
            Err(MapError::NotRam(7 * G))
        );
        assert_eq!(leaf_4k(0x12_3456, rwx), 0x12_3007);
        let rw_nx = Access {
            execute: false,
            ..rwx
        };
        assert_eq!(leaf_4k(0x12_3000, rw_nx), 0x8000_0000_0012_3007);
        let none = Access { read: false, ..rwx };
        assert_eq!(leaf_4k(0x12_3000, none), 0, "not present");
        assert_eq!(table(0x0f01_2000), 0x0f01_2007);
    }

    #[test]
    fn unsupported_ram_is_refused() {
        let mut t = HeapTables;
        let f = Npt { gib_pages: true };
        for bad in [0..0x0f00_1800, 0..(1 << 48) + 4096] {
            assert_eq!(
                build(&f, &mut t, std::slice::from_ref(&bad)).map(|_| ()),
                Err(MapError::Unsupported(bad.clone()))
            );
        }
    }
}
