//! The guests' second-level tables (GPA -> PA, identity) as plain entry arithmetic over any
//! machine's RAM, for both formats: arm64 stage 2 (`stage2`) and x86 nested paging (`npt`).
//! The RAM is mapped with the largest leaves that fit (1 GiB, then 2 MiB, then 4 KiB pages at
//! an odd edge) and nothing else; a page VTL2 protects gets its own 4 KiB leaf, the leaves
//! above it split first (same rights for the rest). Tested on the host; the hosts install the
//! tables from the heap ([`HeapTables`]).
#![expect(
    unsafe_code,
    reason = "allocates table pages and writes their entries through raw pointers"
)]

use core::ops::Range;

pub const ENTRIES: usize = 512;
pub const PAGE: u64 = 4096;

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

/// One format's descriptors. Levels are named by the shift of the address bits an entry
/// covers (39, 30, 21, 12).
pub trait Format {
    /// The shift of the root table's entries.
    fn root_shift(&self) -> u32;
    /// Whether a leaf may stand at `shift` (always at 12).
    fn leaf_allowed(&self, shift: u32) -> bool;
    /// A read/write/execute leaf for `pa` at `shift`.
    fn leaf(&self, pa: u64, shift: u32) -> u64;
    /// An entry pointing at the table at `pa`.
    fn table(&self, pa: u64) -> u64;
    /// The table an entry at `shift` points at (None: a leaf, or invalid).
    fn child(&self, entry: u64, shift: u32) -> Option<u64>;
    fn valid(&self, entry: u64) -> bool;
    /// The leaf at `shift` as the 512 leaves one level down, with its rights.
    fn split(&self, entry: u64, shift: u32) -> [u64; ENTRIES];
}

/// Where tables live: `alloc` hands out a zeroed table by its (physical = host) address.
pub trait Tables {
    fn alloc(&mut self) -> Option<u64>;
    fn read(&self, table: u64, index: usize) -> u64;
    fn write(&mut self, table: u64, index: usize, entry: u64);
}

/// Why RAM could not be mapped, or a page not set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The range is not page aligned or lies beyond the root table's reach.
    Unsupported(Range<u64>),
    /// No memory for another table (at this GPA).
    OutOfTables(u64),
    /// The GPA is not mapped (not the guest's RAM).
    NotRam(u64),
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MapError::Unsupported(r) => write!(
                f,
                "RAM {:#x}..{:#x} is not page aligned or beyond the tables' reach",
                r.start, r.end
            ),
            MapError::OutOfTables(gpa) => {
                write!(f, "no memory left for a table (at GPA {gpa:#x})")
            }
            MapError::NotRam(gpa) => write!(f, "GPA {gpa:#x} is not in the guest's RAM"),
        }
    }
}

/// A new root with every range of `ram` mapped, read/write/execute, largest leaves first.
pub fn build(
    format: &impl Format,
    tables: &mut impl Tables,
    ram: &[Range<u64>],
) -> Result<u64, MapError> {
    let reach = 1u64 << (format.root_shift() + 9);
    let root = tables.alloc().ok_or(MapError::OutOfTables(0))?;
    for r in ram {
        if !r.start.is_multiple_of(PAGE) || !r.end.is_multiple_of(PAGE) || r.end > reach {
            return Err(MapError::Unsupported(r.clone()));
        }
        map_level(format, tables, root, format.root_shift(), r.clone())?;
    }
    Ok(root)
}

fn map_level(
    format: &impl Format,
    tables: &mut impl Tables,
    table: u64,
    shift: u32,
    range: Range<u64>,
) -> Result<(), MapError> {
    let size = 1u64 << shift;
    let mut at = range.start;
    while at < range.end {
        let index = ((at >> shift) as usize) % ENTRIES;
        let slot_end = (at & !(size - 1)) + size;
        let end = range.end.min(slot_end);
        let entry = tables.read(table, index);
        if at.is_multiple_of(size) && end == slot_end && format.leaf_allowed(shift) {
            tables.write(table, index, format.leaf(at, shift));
        } else {
            let child = match format.child(entry, shift) {
                Some(child) => child,
                None => {
                    let child = tables.alloc().ok_or(MapError::OutOfTables(at))?;
                    tables.write(table, index, format.table(child));
                    child
                }
            };
            map_level(format, tables, child, shift - 9, at..end)?;
        }
        at = end;
    }
    Ok(())
}

/// Gives the 4 KiB page at `gpa` the leaf `leaf` (a 4 KiB leaf of the format, or 0 to unmap it),
/// splitting the larger leaves above it first. The page must be mapped RAM (some valid entry
/// covers it down to its table; a 4 KiB leaf that was set invalid stays settable).
pub fn set_page(
    format: &impl Format,
    tables: &mut impl Tables,
    root: u64,
    gpa: u64,
    leaf: u64,
) -> Result<(), MapError> {
    let mut table = root;
    let mut shift = format.root_shift();
    while shift > 12 {
        let index = ((gpa >> shift) as usize) % ENTRIES;
        let entry = tables.read(table, index);
        if !format.valid(entry) {
            return Err(MapError::NotRam(gpa));
        }
        table = match format.child(entry, shift) {
            Some(child) => child,
            None => {
                let child = tables.alloc().ok_or(MapError::OutOfTables(gpa))?;
                for (i, e) in format.split(entry, shift).into_iter().enumerate() {
                    tables.write(child, i, e);
                }
                tables.write(table, index, format.table(child));
                child
            }
        };
        shift -= 9;
    }
    tables.write(table, ((gpa >> 12) as usize) % ENTRIES, leaf);
    Ok(())
}

/// The leaf covering `gpa` and its shift, None if unmapped.
#[cfg(test)]
pub fn lookup(
    format: &impl Format,
    tables: &impl Tables,
    root: u64,
    gpa: u64,
) -> Option<(u64, u32)> {
    let mut table = root;
    let mut shift = format.root_shift();
    loop {
        let entry = tables.read(table, ((gpa >> shift) as usize) % ENTRIES);
        if !format.valid(entry) {
            return None;
        }
        match format.child(entry, shift) {
            Some(child) if shift > 12 => {
                table = child;
                shift -= 9;
            }
            _ => return Some((entry, shift)),
        }
    }
}

/// Tables on the host's heap, which is identity-mapped: a table's address is its pointer.
/// Never freed (the guest's tables live as long as the run).
#[derive(Default)]
pub struct HeapTables;

#[repr(C, align(4096))]
struct Table([u64; ENTRIES]);

impl Tables for HeapTables {
    fn alloc(&mut self) -> Option<u64> {
        let layout = core::alloc::Layout::new::<Table>();
        // SAFETY: a layout of non-zero size; a null result is handled.
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
        (!p.is_null()).then_some(p as u64)
    }

    fn read(&self, table: u64, index: usize) -> u64 {
        // SAFETY: `table` came from `alloc` (a live, never freed, 4 KiB table) and index < 512.
        // Volatile: the CPUs' walkers read these too.
        unsafe { core::ptr::read_volatile((table as *const u64).add(index % ENTRIES)) }
    }

    fn write(&mut self, table: u64, index: usize, entry: u64) {
        // SAFETY: as in `read`; the host writes the tables under its lock only.
        unsafe { core::ptr::write_volatile((table as *mut u64).add(index % ENTRIES), entry) }
    }
}
