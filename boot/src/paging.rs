//! The identity map of VTL0's RAM: which RAM the paravisor maps as ordinary memory, and the
//! table builder that extends the static boot page tables to RAM above 4 GiB.
//!
//! The image's static tables map the low 4 GiB (what entry needs; an IGVM VP context points at
//! them). Once the memory map is known, [`map_ram`] adds identity mappings, Normal write-back,
//! for the RAM ranges above 4 GiB only (never a hole between them), with the largest pages that
//! fit inside each range, taking intermediate tables from a fixed pool. RAM it cannot map
//! (above the address width, beyond the pool, sub-page edges, page 0 / arm64's Device block 0)
//! is returned as [`Unmapped`] with the reason. Plain logic over [`Tables`]: the arch code
//! supplies the static tables and the pool, and flushes the TLB afterwards.

use crate::RAM_RANGES_MAX;
use core::ops::Range;

/// The end of the static boot tables' identity map (both arches map the low 4 GiB at entry).
/// Loader data (PVH start info, ACPI, device tree) is read before the map is extended, so it
/// must lie below this.
pub const STATIC_MAP_END: u64 = 4 << 30;

const PAGE_SHIFT: u32 = 12;
const PAGE: u64 = 1 << PAGE_SHIFT;
/// Entries per table (4 KiB tables of 8-byte entries; the arm64 tables use the 4K granule).
pub const ENTRIES: usize = 512;

/// The page-table format of one architecture, with what the CPU supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// x86_64 4-level paging (root PML4). 1 GiB pages only when CPUID 0x80000001 EDX bit 26
    /// (Page1GB) says so; otherwise 2 MiB pages.
    X86_64 { one_gib_pages: bool },
    /// aarch64 VMSAv8-64, 4K granule, TCR_EL1.T0SZ = 25: the walk starts at level 1, so the
    /// root is the static level-1 table (512 × 1 GiB = 512 GiB of address space).
    Aarch64,
}

/// x86 entry bits: present, writable, and PS (a large page at the PDPT and PD levels). Cache
/// attributes stay at PAT entry 0 (write-back), as in the static tables.
const X86_PRESENT: u64 = 1 << 0;
const X86_WRITABLE: u64 = 1 << 1;
const X86_PS: u64 = 1 << 7;
/// arm64 descriptor bits: valid, table (levels 0-2) or page (level 3), AttrIndx 1 (MAIR attr1,
/// Normal write-back, as the entry code programs MAIR_EL1), inner shareable, access flag, and
/// never executable at EL0 or EL1 (VTL0's memory is data to the paravisor).
const ARM_VALID: u64 = 1 << 0;
const ARM_TABLE_OR_PAGE: u64 = 1 << 1;
const ARM_ATTR_NORMAL: u64 = 1 << 2;
const ARM_INNER_SHAREABLE: u64 = 3 << 8;
const ARM_AF: u64 = 1 << 10;
const ARM_PXN: u64 = 1 << 53;
const ARM_UXN: u64 = 1 << 54;
/// Output address bits of a descriptor (bits 47:12; the 4K granule without FEAT_LPA2).
const ADDRESS_MASK: u64 = 0x0000_ffff_ffff_f000;

impl Format {
    /// The shift of the root table's entries: PML4 entries span 512 GiB, arm64 level-1 1 GiB.
    pub const fn root_shift(self) -> u32 {
        match self {
            Format::X86_64 { .. } => 39,
            Format::Aarch64 => 30,
        }
    }

    /// How far an identity map can reach, in address bits: x86 4-level paging translates the
    /// canonical lower half (47 bits); arm64 with T0SZ 25 translates 39 bits.
    pub const fn reach_bits(self) -> u32 {
        match self {
            Format::X86_64 { .. } => 47,
            Format::Aarch64 => 39,
        }
    }

    /// What the static boot tables map as Normal, cacheable memory, minus page 0 (a null
    /// pointer in Rust, whatever the hardware maps there): x86 0x1000..4 GiB (2 MiB pages);
    /// arm64 1..4 GiB (1 GiB blocks; block 0 is Device memory, where unaligned or exclusive
    /// accesses fault, so RAM below 1 GiB on an arm64 layout stays unmapped).
    pub const fn static_normal(self) -> Range<u64> {
        match self {
            Format::X86_64 { .. } => PAGE..STATIC_MAP_END,
            Format::Aarch64 => 1 << 30..STATIC_MAP_END,
        }
    }

    /// Whether an entry at this level may map memory directly (a page or block).
    fn leaf_allowed(self, shift: u32) -> bool {
        match (self, shift) {
            (_, 12 | 21) => true,
            (Format::X86_64 { one_gib_pages }, 30) => one_gib_pages,
            (Format::Aarch64, 30) => true,
            _ => false,
        }
    }

    fn table(self, pa: u64) -> u64 {
        match self {
            Format::X86_64 { .. } => pa | X86_PRESENT | X86_WRITABLE,
            Format::Aarch64 => pa | ARM_VALID | ARM_TABLE_OR_PAGE,
        }
    }

    fn leaf(self, pa: u64, shift: u32) -> u64 {
        match self {
            Format::X86_64 { .. } if shift == PAGE_SHIFT => pa | X86_PRESENT | X86_WRITABLE,
            Format::X86_64 { .. } => pa | X86_PRESENT | X86_WRITABLE | X86_PS,
            Format::Aarch64 => {
                // Level 3 pages have bit 1 set, blocks at levels 1-2 clear.
                let page = if shift == PAGE_SHIFT {
                    ARM_TABLE_OR_PAGE
                } else {
                    0
                };
                pa | ARM_VALID
                    | page
                    | ARM_ATTR_NORMAL
                    | ARM_INNER_SHAREABLE
                    | ARM_AF
                    | ARM_PXN
                    | ARM_UXN
            }
        }
    }

    fn valid(self, entry: u64) -> bool {
        entry & 1 != 0
    }

    /// The next-level table a valid entry points to, or None for a page or block.
    fn child(self, entry: u64, shift: u32) -> Option<u64> {
        let table = match self {
            Format::X86_64 { .. } => shift > PAGE_SHIFT && entry & X86_PS == 0,
            Format::Aarch64 => shift > PAGE_SHIFT && entry & ARM_TABLE_OR_PAGE != 0,
        };
        table.then_some(entry & ADDRESS_MASK)
    }
}

/// The tables the builder edits, by physical address (identity-mapped on the target).
pub trait Tables {
    fn read(&self, table: u64, index: usize) -> u64;
    fn write(&mut self, table: u64, index: usize, entry: u64);
    /// A zeroed table page, or None when the pool is used up.
    fn alloc(&mut self) -> Option<u64>;
}

/// Why reported RAM is not mapped. The paravisor refuses VTL0 buffers there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmapped {
    /// x86 page 0: a null pointer in Rust, so never VTL0 memory the paravisor touches.
    PageZero,
    /// arm64: the first GiB, the static map's Device-nGnRnE block 0 (devices, the UART), where
    /// unaligned or exclusive accesses fault.
    DeviceBlock,
    /// Above what the CPU's physical address width (or the identity map's reach) allows.
    AboveAddressWidth,
    /// The statically reserved table pages ran out.
    TableCapacity,
    /// Part of a page at the edge of a range that is not page aligned.
    PartialPage,
}

impl core::fmt::Display for Unmapped {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Unmapped::PageZero => "page 0",
            Unmapped::DeviceBlock => "the boot map's Device block 0",
            Unmapped::AboveAddressWidth => "above the physical address width",
            Unmapped::TableCapacity => "beyond the page-table capacity",
            Unmapped::PartialPage => "not a whole page",
        })
    }
}

/// Most unmapped pieces kept: each RAM range has at most five (below the static Normal memory,
/// a partial head page, the capacity rest, a partial tail page, above the address width).
pub const UNMAPPED_MAX: usize = 5 * RAM_RANGES_MAX;

/// What [`map_ram`] did: the reported RAM that is now identity-mapped as Normal memory, and
/// the rest with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedRam {
    mapped: [Range<u64>; RAM_RANGES_MAX],
    mapped_count: usize,
    unmapped: [(Range<u64>, Unmapped); UNMAPPED_MAX],
    unmapped_count: usize,
    /// Pool pages taken for new tables.
    pub tables_used: usize,
    /// The end of what may be mapped: 2^min(PA width, the format's reach).
    pub limit: u64,
}

impl MappedRam {
    const fn empty(limit: u64) -> MappedRam {
        MappedRam {
            mapped: [const { 0..0 }; RAM_RANGES_MAX],
            mapped_count: 0,
            unmapped: [const { (0..0, Unmapped::PageZero) }; UNMAPPED_MAX],
            unmapped_count: 0,
            tables_used: 0,
            limit,
        }
    }

    /// RAM identity-mapped as Normal, cacheable memory: what VTL0 may name (minus the image).
    pub fn mapped(&self) -> &[Range<u64>] {
        &self.mapped[..self.mapped_count]
    }

    /// Reported RAM left unmapped, with why.
    pub fn unmapped(&self) -> &[(Range<u64>, Unmapped)] {
        &self.unmapped[..self.unmapped_count]
    }

    fn push_mapped(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        if let Some(last) = self.mapped[..self.mapped_count].last_mut() {
            if last.end == r.start {
                last.end = r.end;
                return;
            }
        }
        // One contiguous piece per RAM range, so this never fills up.
        if self.mapped_count < RAM_RANGES_MAX {
            self.mapped[self.mapped_count] = r;
            self.mapped_count += 1;
        }
    }

    fn push_unmapped(&mut self, r: Range<u64>, why: Unmapped) {
        if r.start < r.end && self.unmapped_count < UNMAPPED_MAX {
            self.unmapped[self.unmapped_count] = (r, why);
            self.unmapped_count += 1;
        }
    }
}

/// The address-width limit for `format` on a CPU with `pa_bits` physical address bits.
pub fn limit(format: Format, pa_bits: u32) -> u64 {
    1 << pa_bits.min(format.reach_bits())
}

/// The physical address width ID_AA64MMFR0_EL1.PARange (bits 3:0) encodes; reserved values
/// read as the smallest, 32 bits.
pub fn aarch64_pa_bits(id_aa64mmfr0: u64) -> u32 {
    match id_aa64mmfr0 & 0xf {
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        6 => 52,
        _ => 32,
    }
}

/// Identity-maps every RAM range above [`STATIC_MAP_END`] and below `limit` into the tables
/// rooted at `root` (existing entries are kept: a valid leaf already maps its range), and says
/// which of `ram` is mapped: the static map's Normal part below 4 GiB, and what was added.
/// Ranges are processed in the loader's order; a range that exhausts the pool is mapped up to
/// where the pool ran out.
pub fn map_ram(
    ram: &[Range<u64>],
    format: Format,
    limit: u64,
    tables: &mut impl Tables,
    root: u64,
) -> MappedRam {
    let mut out = MappedRam::empty(limit);
    let normal = format.static_normal();
    let below_normal = match format {
        Format::X86_64 { .. } => Unmapped::PageZero,
        Format::Aarch64 => Unmapped::DeviceBlock,
    };
    for r in ram {
        out.push_unmapped(r.start..r.end.min(normal.start), below_normal);
        out.push_mapped(r.start.max(normal.start)..r.end.min(normal.end));
        let high = r.start.max(STATIC_MAP_END)..r.end;
        if high.start >= high.end {
            continue;
        }
        let reachable = high.start..high.end.min(limit);
        if reachable.start < reachable.end {
            let start = reachable.start.next_multiple_of(PAGE).min(reachable.end);
            let end = (reachable.end & !(PAGE - 1)).max(start);
            out.push_unmapped(reachable.start..start, Unmapped::PartialPage);
            let reached = match map(tables, format, root, start..end, &mut out.tables_used) {
                Ok(()) => end,
                Err(at) => at,
            };
            out.push_mapped(start..reached);
            out.push_unmapped(reached..end, Unmapped::TableCapacity);
            out.push_unmapped(end..reachable.end, Unmapped::PartialPage);
        }
        out.push_unmapped(high.start.max(limit)..high.end, Unmapped::AboveAddressWidth);
    }
    out
}

/// Maps the page-aligned `range` with the largest leaves that fit; Err(address) is where the
/// pool ran out (everything below it is mapped).
fn map(
    tables: &mut impl Tables,
    format: Format,
    root: u64,
    range: Range<u64>,
    used: &mut usize,
) -> Result<(), u64> {
    map_level(tables, format, root, format.root_shift(), range, used)
}

fn map_level(
    tables: &mut impl Tables,
    format: Format,
    table: u64,
    shift: u32,
    range: Range<u64>,
    used: &mut usize,
) -> Result<(), u64> {
    let size = 1u64 << shift;
    let mut at = range.start;
    while at < range.end {
        let index = ((at >> shift) as usize) % ENTRIES;
        let slot_end = (at & !(size - 1)) + size;
        let end = range.end.min(slot_end);
        let entry = tables.read(table, index);
        if !format.valid(entry) {
            if at.is_multiple_of(size) && end == slot_end && format.leaf_allowed(shift) {
                tables.write(table, index, format.leaf(at, shift));
            } else {
                // Never at level 3: pages are whole, and a page is always a leaf.
                let child = tables.alloc().ok_or(at)?;
                *used += 1;
                tables.write(table, index, format.table(child));
                map_level(tables, format, child, shift - 9, at..end, used)?;
            }
        } else if let Some(child) = format.child(entry, shift) {
            map_level(tables, format, child, shift - 9, at..end, used)?;
        }
        at = end;
    }
    Ok(())
}

#[cfg(test)]
// One RAM range is a slice of one range here, not a mistaken `start..end` list.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const G: u64 = 1 << 30;
    const M2: u64 = 2 << 20;

    /// Tables in a map by address, with a pool of `capacity` pages from 0x1000_0000 up.
    struct FakeTables {
        pages: BTreeMap<u64, [u64; ENTRIES]>,
        next: u64,
        capacity: usize,
    }

    impl FakeTables {
        fn new(capacity: usize) -> Self {
            FakeTables {
                pages: BTreeMap::new(),
                next: 0x1000_0000,
                capacity,
            }
        }
        fn page(&mut self, pa: u64) -> &mut [u64; ENTRIES] {
            self.pages.entry(pa).or_insert([0; ENTRIES])
        }
    }

    impl Tables for FakeTables {
        fn read(&self, table: u64, index: usize) -> u64 {
            self.pages.get(&table).map_or(0, |t| t[index])
        }
        fn write(&mut self, table: u64, index: usize, entry: u64) {
            assert!(
                self.pages.contains_key(&table),
                "write to a table that is not one"
            );
            self.page(table)[index] = entry;
        }
        fn alloc(&mut self) -> Option<u64> {
            if self.capacity == 0 {
                return None;
            }
            self.capacity -= 1;
            let pa = self.next;
            self.next += PAGE;
            self.page(pa);
            Some(pa)
        }
    }

    const X86_ROOT: u64 = 0x10_0000;
    const X86_PDPT: u64 = 0x10_1000;
    const ARM_ROOT: u64 = 0x20_0000;

    fn root(format: Format) -> u64 {
        match format {
            Format::X86_64 { .. } => X86_ROOT,
            Format::Aarch64 => ARM_ROOT,
        }
    }

    /// The x86 static tables as entry.rs assembles them: PML4[0] -> PDPT, PDPT[0..4] -> four PDs
    /// of 2 MiB pages.
    fn x86_static(capacity: usize) -> FakeTables {
        let mut t = FakeTables::new(capacity);
        t.page(X86_ROOT)[0] = X86_PDPT | 0x3;
        for i in 0..4u64 {
            let pd = 0x10_2000 + i * PAGE;
            t.page(X86_PDPT)[i as usize] = pd | 0x3;
            for j in 0..ENTRIES as u64 {
                t.page(pd)[j as usize] = ((i * 512 + j) << 21) | 0x83;
            }
        }
        t
    }

    /// The arm64 static level-1 table: block 0 Device, blocks 1-3 Normal.
    fn arm_static(capacity: usize) -> FakeTables {
        let mut t = FakeTables::new(capacity);
        let l1 = t.page(ARM_ROOT);
        l1[0] = 0x401 | (3 << 53);
        for i in 1..4u64 {
            l1[i as usize] = (i << 30) | 0x705;
        }
        t
    }

    /// An independent walker (the hardware's rules, not the builder's helpers): the physical
    /// address and leaf entry `va` translates to, or None.
    fn walk(t: &FakeTables, format: Format, va: u64) -> Option<(u64, u64)> {
        let mut table = root(format);
        let mut shift = format.root_shift();
        loop {
            let entry = t.read(table, ((va >> shift) & 511) as usize);
            if entry & 1 == 0 {
                return None;
            }
            let leaf = match format {
                Format::X86_64 { .. } => shift == 12 || entry & 0x80 != 0,
                Format::Aarch64 => shift == 12 || entry & 2 == 0,
            };
            let address = entry & 0x0000_ffff_ffff_f000;
            if leaf {
                let offset = va & ((1 << shift) - 1);
                assert_eq!(address & ((1 << shift) - 1), 0, "leaf address aligned");
                return Some((address + offset, entry));
            }
            table = address;
            shift -= 9;
        }
    }

    fn assert_identity(t: &FakeTables, format: Format, range: Range<u64>) {
        for va in [
            range.start,
            range.start + 8,
            range.end - PAGE,
            range.end - 1,
        ] {
            let (pa, entry) = walk(t, format, va).unwrap_or_else(|| panic!("{va:#x} unmapped"));
            assert_eq!(pa, va, "{va:#x} identity");
            match format {
                Format::X86_64 { .. } => {
                    assert_eq!(entry & 0x18, 0, "{va:#x}: PAT 0 write-back (PWT/PCD clear)");
                    assert_eq!(entry & 0x2, 0x2, "{va:#x}: writable");
                }
                Format::Aarch64 => {
                    assert_eq!((entry >> 2) & 7, 1, "{va:#x}: AttrIndx 1 (Normal WB)");
                    assert_eq!(entry & 0x700, 0x700, "{va:#x}: inner shareable, AF");
                }
            }
        }
    }

    fn assert_unmapped(t: &FakeTables, format: Format, va: u64) {
        assert_eq!(walk(t, format, va), None, "{va:#x} must not be mapped");
    }

    #[test]
    fn x86_q35_6g_maps_the_high_ram_with_1g_pages_and_no_new_tables() {
        let format = Format::X86_64 {
            one_gib_pages: true,
        };
        let mut t = x86_static(8);
        let ram = [0..0x9_fc00, 0x10_0000..2 * G, 4 * G..8 * G];
        let m = map_ram(&ram, format, limit(format, 40), &mut t, X86_ROOT);
        assert_eq!(
            m.mapped(),
            [0x1000..0x9_fc00, 0x10_0000..2 * G, 4 * G..8 * G]
        );
        assert_eq!(m.unmapped(), [(0..0x1000, Unmapped::PageZero)]);
        assert_eq!(
            m.tables_used, 0,
            "the static PDPT holds 1 GiB pages up to 512 GiB"
        );
        for i in 4..8 {
            assert_eq!(t.read(X86_PDPT, i), ((i as u64) << 30) | 0x83);
        }
        assert_identity(&t, format, 4 * G..8 * G);
        assert_unmapped(&t, format, 8 * G);
        assert_unmapped(&t, format, 512 * G);
    }

    #[test]
    fn x86_without_1g_pages_uses_2m_pages() {
        let format = Format::X86_64 {
            one_gib_pages: false,
        };
        let mut t = x86_static(8);
        let m = map_ram(&[4 * G..6 * G], format, limit(format, 40), &mut t, X86_ROOT);
        assert_eq!(m.mapped(), [4 * G..6 * G]);
        assert_eq!(m.tables_used, 2, "one PD per GiB");
        assert_identity(&t, format, 4 * G..6 * G);
        let (_, entry) = walk(&t, format, 5 * G + 3 * M2).unwrap();
        assert_eq!(entry, (5 * G + 3 * M2) | 0x83, "a 2 MiB page");
        assert_unmapped(&t, format, 6 * G);
    }

    #[test]
    fn unaligned_edges_get_smaller_pages_and_nothing_outside_ram_is_mapped() {
        for format in [
            Format::X86_64 {
                one_gib_pages: true,
            },
            Format::Aarch64,
        ] {
            let mut t = match format {
                Format::X86_64 { .. } => x86_static(8),
                Format::Aarch64 => arm_static(8),
            };
            let range = 4 * G + 0x3000..6 * G + M2 + 0x5000;
            let m = map_ram(
                core::slice::from_ref(&range),
                format,
                limit(format, 40),
                &mut t,
                root(format),
            );
            assert_eq!(m.mapped(), core::slice::from_ref(&range), "{format:?}");
            assert!(m.unmapped().is_empty(), "{format:?}");
            assert_identity(&t, format, range.clone());
            assert_identity(&t, format, 5 * G..5 * G + PAGE);
            assert_unmapped(&t, format, 4 * G + 0x2000);
            assert_unmapped(&t, format, range.end);
            // Head: one 2 MiB-level table and one 4 KiB-level table; tail the same.
            assert_eq!(m.tables_used, 4, "{format:?}");
        }
    }

    #[test]
    fn arm64_maps_1g_blocks_in_the_static_l1_and_never_executable() {
        let mut t = arm_static(4);
        let ram = [G..7 * G];
        let m = map_ram(
            &ram,
            Format::Aarch64,
            limit(Format::Aarch64, 48),
            &mut t,
            ARM_ROOT,
        );
        assert_eq!(m.mapped(), [G..7 * G]);
        assert!(m.unmapped().is_empty());
        assert_eq!(m.tables_used, 0);
        for i in 4..7u64 {
            let entry = t.read(ARM_ROOT, i as usize);
            assert_eq!(
                entry,
                (i << 30) | 0x705 | (3 << 53),
                "block {i}: Normal, XN"
            );
        }
        assert_eq!(
            t.read(ARM_ROOT, 1),
            G | 0x705,
            "the static entries are kept"
        );
        assert_identity(&t, Format::Aarch64, 4 * G..7 * G);
        assert_unmapped(&t, Format::Aarch64, 7 * G);
    }

    #[test]
    fn arm64_ram_from_0_keeps_the_device_block_out() {
        let mut t = arm_static(4);
        let m = map_ram(&[0..8 * G], Format::Aarch64, 1 << 39, &mut t, ARM_ROOT);
        assert_eq!(m.mapped(), [G..8 * G]);
        assert_eq!(m.unmapped(), [(0..G, Unmapped::DeviceBlock)]);
        assert_eq!(
            t.read(ARM_ROOT, 0),
            0x401 | (3 << 53),
            "block 0 stays Device"
        );
    }

    #[test]
    fn ram_above_the_address_width_is_refused() {
        // 36-bit PA: RAM 60..68 GiB is mapped up to 64 GiB.
        let format = Format::X86_64 {
            one_gib_pages: true,
        };
        let mut t = x86_static(8);
        let m = map_ram(
            &[60 * G..68 * G],
            format,
            limit(format, 36),
            &mut t,
            X86_ROOT,
        );
        assert_eq!(m.mapped(), [60 * G..64 * G]);
        assert_eq!(
            m.unmapped(),
            [(64 * G..68 * G, Unmapped::AboveAddressWidth)]
        );
        assert_unmapped(&t, format, 64 * G);
        // arm64 reaches 39 bits whatever PARange says.
        assert_eq!(limit(Format::Aarch64, 48), 1 << 39);
        let mut a = arm_static(4);
        let m = map_ram(
            &[500 * G..600 * G],
            Format::Aarch64,
            1 << 39,
            &mut a,
            ARM_ROOT,
        );
        assert_eq!(m.mapped(), [500 * G..512 * G]);
        assert_eq!(
            m.unmapped(),
            [(512 * G..600 * G, Unmapped::AboveAddressWidth)]
        );
        // Entirely above.
        let m = map_ram(
            &[1 << 40..(1 << 40) + G],
            Format::Aarch64,
            1 << 39,
            &mut a,
            ARM_ROOT,
        );
        assert!(m.mapped().is_empty());
        assert_eq!(m.unmapped().len(), 1);
    }

    #[test]
    fn an_exhausted_pool_maps_up_to_where_it_ran_out() {
        let format = Format::X86_64 {
            one_gib_pages: false,
        };
        let mut t = x86_static(2);
        let ram = [4 * G..8 * G, 600 * G..601 * G];
        let m = map_ram(&ram, format, limit(format, 46), &mut t, X86_ROOT);
        assert_eq!(m.mapped(), [4 * G..6 * G]);
        assert_eq!(
            m.unmapped(),
            [
                (6 * G..8 * G, Unmapped::TableCapacity),
                (600 * G..601 * G, Unmapped::TableCapacity)
            ]
        );
        assert_eq!(m.tables_used, 2);
        assert_identity(&t, format, 4 * G..6 * G);
        assert_unmapped(&t, format, 6 * G);
        assert_unmapped(&t, format, 600 * G);
        // Above 512 GiB x86 needs a new PDPT even with 1 GiB pages.
        let format = Format::X86_64 {
            one_gib_pages: true,
        };
        let mut t = x86_static(1);
        let m = map_ram(
            &[600 * G..602 * G],
            format,
            limit(format, 46),
            &mut t,
            X86_ROOT,
        );
        assert_eq!(m.mapped(), [600 * G..602 * G]);
        assert_eq!(m.tables_used, 1);
        assert_identity(&t, format, 600 * G..602 * G);
    }

    #[test]
    fn partial_pages_and_mixed_ranges_are_reported_each() {
        let format = Format::X86_64 {
            one_gib_pages: true,
        };
        let mut t = x86_static(8);
        // Sub-page edges, RAM straddling 4 GiB (one mapped piece), an empty and a reversed range
        // (BootInfo never stores either; the builder must still not map them).
        #[allow(clippy::reversed_empty_ranges)]
        let ram = [
            3 * G..5 * G,
            8 * G + 0x10..9 * G + 0x20,
            10 * G..10 * G,
            12 * G..11 * G,
        ];
        let m = map_ram(&ram, format, limit(format, 40), &mut t, X86_ROOT);
        assert_eq!(m.mapped(), [3 * G..5 * G, 8 * G + PAGE..9 * G]);
        assert_eq!(
            m.unmapped(),
            [
                (8 * G + 0x10..8 * G + PAGE, Unmapped::PartialPage),
                (9 * G..9 * G + 0x20, Unmapped::PartialPage)
            ]
        );
        assert_unmapped(&t, format, 8 * G);
        assert_identity(&t, format, 8 * G + PAGE..9 * G);
    }

    #[test]
    fn overlapping_ranges_are_mapped_once() {
        let format = Format::Aarch64;
        let mut t = arm_static(8);
        let ram = [4 * G..5 * G + M2, 5 * G..5 * G + 2 * M2];
        let m = map_ram(&ram, format, 1 << 39, &mut t, ARM_ROOT);
        assert_eq!(
            m.tables_used, 1,
            "the second range reuses the level-2 table"
        );
        assert_identity(&t, format, 4 * G..5 * G + 2 * M2);
        assert_unmapped(&t, format, 5 * G + 2 * M2);
    }

    #[test]
    fn parange_decodes() {
        assert_eq!(aarch64_pa_bits(0), 32);
        assert_eq!(aarch64_pa_bits(0x1), 36);
        assert_eq!(aarch64_pa_bits(0x5), 48);
        assert_eq!(aarch64_pa_bits(0xfff0_0006), 52);
        assert_eq!(aarch64_pa_bits(0xf), 32, "reserved");
    }
}
