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
