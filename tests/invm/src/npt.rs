//! The guest's nested page tables (GPA -> host physical, identity), as plain entry arithmetic
//! so it is tested on the host; `x86_64::svm` installs them.
//!
//! Layout: 4-level long-mode tables (the nested walk uses the host's paging mode): PML4 entry 0
//! -> one PDPT, entry 0 -> one page directory of 2 MiB pages covering the guest's RAM only, so
//! the host's own memory (and everything else above the RAM) is a nested page fault. Every
//! level has U=1: nested walks are user accesses.

use core::ops::Range;

pub const ENTRIES: usize = 512;
pub const PAGE_2M: u64 = 2 << 20;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const LARGE: u64 = 1 << 7;
/// No execute (honoured with the host's EFER.NXE, which `svm::enable` sets).
const NO_EXECUTE: u64 = 1 << 63;
pub const PAGE_4K: u64 = 4096;

/// What a lower VTL may do with a page (VTL2's protections).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub read: bool,
    pub write: bool,
    pub execute: bool,
}

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

/// The 2 MiB page directory entry `pde` as a page table of 512 4 KiB leaves with its rights,
/// None if it is no large page.
pub fn split_2m(pde: u64) -> Option<[u64; ENTRIES]> {
    if pde & (PRESENT | LARGE) != PRESENT | LARGE {
        return None;
    }
    let base = pde & !(PAGE_2M - 1) & !NO_EXECUTE;
    let flags = pde & (PRESENT | WRITABLE | USER | NO_EXECUTE);
    let mut pt = [0; ENTRIES];
    for (i, e) in pt.iter_mut().enumerate() {
        *e = (base + i as u64 * PAGE_4K) | flags;
    }
    Some(pt)
}

/// Whether a page directory entry points at a page table (not a 2 MiB page).
pub fn is_table(pde: u64) -> bool {
    pde & PRESENT != 0 && pde & LARGE == 0
}

/// The address a table entry points at.
pub fn next_table(entry: u64) -> u64 {
    entry & 0x000f_ffff_ffff_f000
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The RAM must start and end on 2 MiB boundaries...
    Unaligned(Range<u64>),
    /// ...and lie in the first GiB (one page directory).
    BeyondFirstGib(Range<u64>),
}

/// A PML4 or PDPT entry pointing at the next table.
pub fn table(next_pa: u64) -> u64 {
    next_pa | PRESENT | WRITABLE | USER
}

/// The page directory: `ram` in 2 MiB read/write/execute pages, nothing else.
pub fn ram_directory(ram: &Range<u64>) -> Result<[u64; ENTRIES], LayoutError> {
    if !ram.start.is_multiple_of(PAGE_2M) || !ram.end.is_multiple_of(PAGE_2M) || ram.start > ram.end
    {
        return Err(LayoutError::Unaligned(ram.clone()));
    }
    if ram.end > ENTRIES as u64 * PAGE_2M {
        return Err(LayoutError::BeyondFirstGib(ram.clone()));
    }
    let mut pd = [0; ENTRIES];
    for (i, e) in pd.iter_mut().enumerate() {
        let gpa = i as u64 * PAGE_2M;
        if ram.contains(&gpa) {
            *e = gpa | PRESENT | WRITABLE | USER | LARGE;
        }
    }
    Ok(pd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_maps_exactly_the_ram() {
        let pd = ram_directory(&(0..0x0f00_0000)).expect("fits");
        assert_eq!(pd[0], 0x87);
        assert_eq!(pd[119], 0x0ee0_0000 | 0x87);
        assert!(
            pd[120..].iter().all(|&e| e == 0),
            "the host's 16 MiB and above"
        );
        assert_eq!(table(0x0f01_2000), 0x0f01_2007);
    }

    #[test]
    fn a_large_page_splits_into_the_same_rights_and_leaves_follow_the_protections() {
        let pd = ram_directory(&(0..0x0f00_0000)).expect("fits");
        let pt = split_2m(pd[3]).expect("a large page");
        assert_eq!(pt[0], 0x60_0007);
        assert_eq!(pt[511], 0x7f_f007);
        assert_eq!(split_2m(table(0x5000)), None);
        assert!(is_table(table(0x5000)) && !is_table(pd[3]));
        assert_eq!(next_table(table(0x0f01_2000)), 0x0f01_2000);
        let rwx = Access {
            read: true,
            write: true,
            execute: true,
        };
        assert_eq!(leaf_4k(0x12_3456, rwx), 0x12_3007);
        let ro = Access {
            write: false,
            ..rwx
        };
        assert_eq!(leaf_4k(0x12_3000, ro), 0x12_3005);
        let rw_nx = Access {
            execute: false,
            ..rwx
        };
        assert_eq!(leaf_4k(0x12_3000, rw_nx), 0x8000_0000_0012_3007);
        let none = Access { read: false, ..rwx };
        assert_eq!(leaf_4k(0x12_3000, none), 0, "not present");
    }

    #[test]
    fn unsupported_ram_is_refused() {
        assert!(matches!(
            ram_directory(&(0..0x0f00_1000)),
            Err(LayoutError::Unaligned(_))
        ));
        assert!(matches!(
            ram_directory(&(0..0x8000_0000)),
            Err(LayoutError::BeyondFirstGib(_))
        ));
    }
}
