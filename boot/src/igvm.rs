//! IGVM parameter pages: what an IGVM loader tells the image, and the parser for it.
//!
//! An IGVM boot has no PVH start info and no device tree. Instead the IGVM file (built by
//! `xtask/src/igvm.rs`) declares one parameter area, asks the loader to deposit a `VpCount`
//! parameter and a `MemoryMap` parameter in it, and inserts the area at the GPA of the image's
//! `.igvm_params` section (symbols `boot_igvm_params_start`/`_end`, [`PARAMS_SIZE`] bytes,
//! page aligned). The layout of that area is `hvdef::loader_data::igvm::IgvmParamArea`, which
//! the builder uses too:
//!
//! | offset | what the loader writes |
//! |---|---|
//! | [`VP_COUNT_OFFSET`] (0) | `u32`: VPs the host intends to start |
//! | [`MEMORY_MAP_OFFSET`] (0x1000) | `igvm_defs::IGVM_VHS_MEMORY_MAP_ENTRY` records, 24 bytes each, a record with 0 pages ending the list; RAM as MEMORY, VTL2's own memory as VTL2_PROTECTABLE |
//! | [`COMMAND_LINE_OFFSET`] (0x2000) | the command line, NUL-terminated (OpenVMM's `CommandLine` parameter) |
//!
//! The section is NOLOAD and outside BSS: the loader writes it before the first instruction
//! (so BSS zeroing must not clear it), and a QEMU ELF boot leaves it zero, which reads as
//! "no parameters". Everything here is loader-provided: the parser reads each field with
//! `FromBytes::read_from_prefix` from the part of the buffer that is there, never panics, and
//! reports what it dropped instead of trusting it.
#![cfg_attr(
    target_os = "none",
    expect(
        unsafe_code,
        reason = "the parameter pages are a link_section static the loader fills"
    )
)]

use crate::loader::read_at;
use crate::BootInfo;
use core::fmt;
use igvm_defs::{MemoryMapEntryType, IGVM_VHS_MEMORY_MAP_ENTRY, PAGE_SIZE_4K};

pub use hvdef::loader_data::igvm::{
    COMMAND_LINE_OFFSET, MEMORY_MAP_OFFSET, PARAMS_SIZE, VP_COUNT_OFFSET,
};
/// `IGVM_VHS_MEMORY_MAP_ENTRY`'s size: starting_gpa_page_number u64, number_of_pages u64,
/// entry_type u16, flags u16, reserved u32.
pub const MEMORY_MAP_ENTRY_SIZE: usize = size_of::<IGVM_VHS_MEMORY_MAP_ENTRY>();
/// Most memory map entries read, whatever the buffer size: loader data never sets our loop
/// bounds.
pub const MEMORY_MAP_MAX_ENTRIES: usize = 256;
/// A VP count above this is garbage, not a large VM (no partition has more than
/// [`crate::VP_LIMIT`]); plausible counts above the limit are limited to it, with
/// [`crate::AboveLimit`]'s line.
pub const VP_COUNT_PLAUSIBLE_MAX: u32 = 4096;
// arm64 entry: the IGVM VP context puts the parameter pages' offset from the image's base in
// X0, OpenHCL's convention (`load_openhcl_arm64`: "X0 to relative location of
// boot_params_base"), which relocation leaves valid. A QEMU ELF boot passes a device tree
// address or 0 there, never that small offset (RAM starts at 1 GiB on QEMU virt), so
// `X0 == params_offset()` tells the two apart without probing memory.

/// The raw VP count word (0 when the buffer is too short to hold it).
pub fn raw_vp_count(params: &[u8]) -> u32 {
    read_at(params, VP_COUNT_OFFSET).unwrap_or(0)
}

/// The VP count the loader wrote; None when it wrote none (0) or garbage.
pub fn vp_count(params: &[u8]) -> Option<u32> {
    let n = raw_vp_count(params);
    (1..=VP_COUNT_PLAUSIBLE_MAX).contains(&n).then_some(n)
}

/// One memory map record, judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapEntry {
    /// Normal RAM (`MEMORY`): `start..start + size`, both in bytes.
    Ram { start: u64, size: u64 },
    /// VTL2's own memory (`VTL2_PROTECTABLE`, as OpenVMM's `build_memory_map` marks the memory
    /// the file required): not RAM VTL0 may name.
    Vtl2 { start: u64, size: u64 },
    /// A valid record of another type (platform reserved, persistent, ...: not RAM VTL0 may
    /// name).
    Other { entry_type: MemoryMapEntryType },
    /// A record whose range does not fit the 64-bit address space.
    Malformed { index: usize },
}

/// The memory map records in `params`, up to the terminating 0-page record, the end of the
/// buffer or [`MEMORY_MAP_MAX_ENTRIES`], whichever comes first.
pub fn memory_map(params: &[u8]) -> MemoryMap<'_> {
    let end = params.len().min(COMMAND_LINE_OFFSET);
    MemoryMap {
        bytes: params.get(MEMORY_MAP_OFFSET..end).unwrap_or(&[]),
        index: 0,
    }
}

/// The command line the loader wrote: the bytes of its page up to the first NUL (all of the
/// page when there is none: cut short, not trusted to end).
pub fn command_line(params: &[u8]) -> &[u8] {
    let page = params.get(COMMAND_LINE_OFFSET..).unwrap_or(&[]);
    let page = &page[..page.len().min(PARAMS_SIZE - COMMAND_LINE_OFFSET)];
    match page.iter().position(|&b| b == 0) {
        Some(end) => &page[..end],
        None => page,
    }
}

/// Iterator returned by [`memory_map`].
#[derive(Clone, Debug)]
pub struct MemoryMap<'a> {
    bytes: &'a [u8],
    index: usize,
}

impl Iterator for MemoryMap<'_> {
    type Item = MapEntry;

    fn next(&mut self) -> Option<MapEntry> {
        if self.index >= MEMORY_MAP_MAX_ENTRIES {
            return None;
        }
        let record: IGVM_VHS_MEMORY_MAP_ENTRY =
            read_at(self.bytes, self.index * MEMORY_MAP_ENTRY_SIZE)?;
        let (page, pages) = (record.starting_gpa_page_number, record.number_of_pages);
        // A 0-page record ends the list (the IGVM spec's terminator); a zeroed page is an
        // empty map.
        if pages == 0 {
            self.index = MEMORY_MAP_MAX_ENTRIES;
            return None;
        }
        let index = self.index;
        self.index += 1;
        let range = (|| {
            let start = page.checked_mul(PAGE_SIZE_4K)?;
            let size = pages.checked_mul(PAGE_SIZE_4K)?;
            start.checked_add(size)?;
            Some((start, size))
        })();
        Some(match range {
            None => MapEntry::Malformed { index },
            Some((start, size)) => match record.entry_type {
                MemoryMapEntryType::MEMORY => MapEntry::Ram { start, size },
                MemoryMapEntryType::VTL2_PROTECTABLE => MapEntry::Vtl2 { start, size },
                entry_type => MapEntry::Other { entry_type },
            },
        })
    }
}

/// What [`apply`] took from the parameter pages; its `Display` is the boot console line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The VP count word as written (0 = none).
    pub raw_vp_count: u32,
    /// The VP count stored in the [`BootInfo`], if the loader's was usable.
    pub vp_count: Option<u32>,
    /// The loader asked for more VPs than a partition can have ([`crate::VP_LIMIT`]).
    pub clamped: bool,
    /// RAM ranges stored in the [`BootInfo`] and their total size.
    pub ram_ranges: usize,
    pub ram_bytes: u64,
    /// VTL2-protectable records (VTL2's own memory) and their total size.
    pub vtl2_ranges: usize,
    pub vtl2_bytes: u64,
    /// Records of other types, skipped.
    pub other_entries: usize,
    /// Records whose range overflows, ignored.
    pub malformed_entries: usize,
    /// RAM ranges the [`BootInfo`] had no room for.
    pub dropped_ranges: usize,
    /// Bytes of command line taken (0: none) and whether it was cut short.
    pub cmdline_bytes: usize,
    pub cmdline_truncated: bool,
}

impl Summary {
    /// Nothing at all was written: a QEMU ELF boot, or a loader that ignored the parameters.
    pub fn is_empty(&self) -> bool {
        self.raw_vp_count == 0
            && self.ram_ranges
                + self.vtl2_ranges
                + self.other_entries
                + self.malformed_entries
                + self.dropped_ranges
                + self.cmdline_bytes
                == 0
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(
                f,
                "IGVM parameters are empty (no VP count, no memory map); assuming 1 VP and no RAM"
            );
        }
        write!(f, "from IGVM parameters: ")?;
        match self.vp_count {
            Some(n) => write!(f, "{n} VP(s)")?,
            None => write!(
                f,
                "no usable VP count ({:#x}), assuming 1 VP",
                self.raw_vp_count
            )?,
        }
        write!(
            f,
            ", {} RAM range(s) totalling {} KiB",
            self.ram_ranges,
            self.ram_bytes >> 10
        )?;
        if self.vtl2_ranges != 0 {
            write!(
                f,
                "; VTL2 memory {} range(s) totalling {} KiB",
                self.vtl2_ranges,
                self.vtl2_bytes >> 10
            )?;
        }
        if self.cmdline_truncated {
            write!(f, "; command line cut to {} bytes", self.cmdline_bytes)?;
        }
        if self.other_entries != 0 {
            write!(f, "; {} non-RAM entries skipped", self.other_entries)?;
        }
        if self.malformed_entries != 0 {
            write!(f, "; {} malformed entries ignored", self.malformed_entries)?;
        }
        if self.dropped_ranges != 0 {
            write!(
                f,
                "; {} RAM ranges dropped (room for {})",
                self.dropped_ranges,
                crate::RAM_RANGES_MAX
            )?;
        }
        Ok(())
    }
}

/// Fills `info` from the parameter pages: the VP count (at most [`crate::VP_LIMIT`]) when
/// usable, else `info.vp_count` is left alone; every RAM record as a RAM range; the command
/// line (its longest valid UTF-8 prefix that fits, [`BootInfo::set_cmdline`]).
pub fn apply(params: &[u8], info: &mut BootInfo) -> Summary {
    let mut s = Summary {
        raw_vp_count: raw_vp_count(params),
        ..Summary::default()
    };
    if let Some(n) = vp_count(params) {
        let max = crate::VP_LIMIT as u32;
        s.clamped = n > max;
        s.vp_count = Some(n.min(max));
        info.vp_count = n.min(max);
    }
    for entry in memory_map(params) {
        match entry {
            MapEntry::Ram { start, size } if info.add_ram(start, size) => {
                s.ram_ranges += 1;
                s.ram_bytes = s.ram_bytes.saturating_add(size);
            }
            MapEntry::Ram { .. } => s.dropped_ranges += 1,
            MapEntry::Vtl2 { start, size } => {
                s.vtl2_ranges += 1;
                s.vtl2_bytes = s.vtl2_bytes.saturating_add(size);
                info.add_vtl2(start, size);
            }
            MapEntry::Other { .. } => s.other_entries += 1,
            MapEntry::Malformed { .. } => s.malformed_entries += 1,
        }
    }
    let line = command_line(params);
    if !line.is_empty() {
        let whole = info.set_cmdline(line) && line.len() < PARAMS_SIZE - COMMAND_LINE_OFFSET;
        s.cmdline_bytes = info.cmdline().len();
        s.cmdline_truncated = !whole;
    }
    s
}

/// The parameter pages' offset from the image's base: what an IGVM start puts in arm64's X0.
#[cfg(target_os = "none")]
pub fn params_offset() -> u64 {
    (PARAMS.0.get() as u64).wrapping_sub(crate::image_range().start)
}

/// The image's parameter pages. Interior mutability because the loader writes them behind
/// the compiler's back; Rust code only reads them, with volatile copies.
#[cfg(target_os = "none")]
#[repr(C, align(4096))]
struct ParamPages(core::cell::UnsafeCell<[u8; PARAMS_SIZE]>);

// SAFETY: only read (by the boot VP, once, before any AP exists).
#[cfg(target_os = "none")]
unsafe impl Sync for ParamPages {}

/// Placed by the linker scripts in the NOLOAD `.igvm_params` output section, between
/// `boot_igvm_params_start` and `boot_igvm_params_end`, which the IGVM builder looks up.
#[cfg(target_os = "none")]
#[used]
#[unsafe(link_section = ".igvm_params")]
static PARAMS: ParamPages = ParamPages(core::cell::UnsafeCell::new([0; PARAMS_SIZE]));

/// Boot VP, IGVM entry: copies the parameter pages, fills `info` and prints what it took.
#[cfg(target_os = "none")]
pub(crate) fn read_params(info: &mut BootInfo) {
    let mut copy = [0u8; PARAMS_SIZE];
    // SAFETY: the pages are the image's static, only ever read through this range. The copy
    // is volatile: its initializer says zero, but the loader wrote it before we ran.
    let pages = unsafe { crate::guest::GuestRange::loader_page(&PARAMS.0) };
    if pages.read(&mut copy).is_err() {
        unreachable!("the copy is the pages' size");
    }
    let summary = apply(&copy, info);
    if crate::reloc::offset() != 0 {
        crate::println!(
            "boot: relocated from {:#x} to {:#x}",
            crate::reloc::link_base(),
            crate::image_range().start
        );
    }
    if summary.clamped {
        crate::println!(
            "{}",
            crate::AboveLimit {
                source: "the IGVM VpCount parameter",
                listed: u64::from(summary.raw_vp_count)
            }
        );
    }
    crate::println!("boot: {summary}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EntryMode, RAM_RANGES_MAX, VP_LIMIT as MAX_VPS};

    /// What a loader deposits: the VP count word and `IGVM_VHS_MEMORY_MAP_ENTRY` records
    /// (page, pages, type, flags, reserved), then the 0-page terminator it leaves as zeros.
    fn pages(vps: u32, map: &[(u64, u64, u16)]) -> Vec<u8> {
        let mut p = vec![0u8; PARAMS_SIZE];
        p[..4].copy_from_slice(&vps.to_le_bytes());
        for (i, &(page, n, ty)) in map.iter().enumerate() {
            let mut rec = Vec::new();
            rec.extend(page.to_le_bytes());
            rec.extend(n.to_le_bytes());
            rec.extend(ty.to_le_bytes());
            rec.extend(0x5a5au16.to_le_bytes()); // flags: ignored
            rec.extend(0u32.to_le_bytes());
            let at = MEMORY_MAP_OFFSET + i * MEMORY_MAP_ENTRY_SIZE;
            p[at..at + MEMORY_MAP_ENTRY_SIZE].copy_from_slice(&rec);
        }
        p
    }

    fn info() -> BootInfo {
        BootInfo::new(EntryMode::LongMode)
    }

    #[test]
    fn golden_bytes() {
        // Fixed bytes, not built by `pages`, so the layout itself is pinned.
        let mut p = vec![0u8; PARAMS_SIZE];
        p[..4].copy_from_slice(&[2, 0, 0, 0]);
        p[0x1000..0x1018].copy_from_slice(&[
            0x00, 0x01, 0, 0, 0, 0, 0, 0, // page 0x100 = 1 MiB
            0x00, 0x3f, 0, 0, 0, 0, 0, 0, // 0x3f00 pages
            0, 0, // MEMORY
            1, 0, // flags
            0, 0, 0, 0,
        ]);
        assert_eq!(vp_count(&p), Some(2));
        let entries: Vec<_> = memory_map(&p).collect();
        assert_eq!(
            entries,
            [MapEntry::Ram {
                start: 0x10_0000,
                size: 0x3f0_0000
            }]
        );
    }

    #[test]
    fn loader_write_fills_boot_info() {
        // What openvmm-style loaders write for a 4-VP guest: RAM below the MMIO gap, a
        // reserved hole, RAM above 4 GiB.
        let p = pages(
            4,
            &[(0, 0xc0000, 0), (0xc0000, 0x100, 1), (0x100000, 0x40000, 0)],
        );
        let mut i = info();
        let s = apply(&p, &mut i);
        assert_eq!(i.vp_count, 4);
        assert_eq!(i.ram(), [0..0xc000_0000, 0x1_0000_0000..0x1_4000_0000]);
        assert_eq!(
            (s.ram_ranges, s.other_entries, s.malformed_entries),
            (2, 1, 0)
        );
        assert_eq!(
            s.to_string(),
            "from IGVM parameters: 4 VP(s), 2 RAM range(s) totalling 4194304 KiB; \
             1 non-RAM entries skipped"
        );
    }

    #[test]
    fn zero_pages_are_empty_and_change_nothing() {
        let mut i = info();
        let s = apply(&[0u8; PARAMS_SIZE], &mut i);
        assert!(s.is_empty());
        assert_eq!((i.vp_count, i.ram().len()), (1, 0));
        assert!(s.to_string().starts_with("IGVM parameters are empty"));
    }

    #[test]
    fn vp_count_zero_absurd_and_clamped() {
        assert_eq!(vp_count(&pages(0, &[])), None);
        assert_eq!(vp_count(&pages(u32::MAX, &[])), None);
        assert_eq!(vp_count(&pages(VP_COUNT_PLAUSIBLE_MAX + 1, &[])), None);
        assert_eq!(vp_count(&pages(1, &[])), Some(1));

        let mut i = info();
        let s = apply(&pages(u32::MAX, &[(0x100, 1, 0)]), &mut i);
        assert_eq!(i.vp_count, 1);
        assert!(s.to_string().contains("no usable VP count (0xffffffff)"));

        let mut i = info();
        let s = apply(&pages(MAX_VPS as u32 + 36, &[]), &mut i);
        assert!(s.clamped);
        assert_eq!(i.vp_count, MAX_VPS as u32);
        assert_eq!(s.vp_count, Some(MAX_VPS as u32));
    }

    #[test]
    fn overflowing_records_are_malformed() {
        let p = pages(
            1,
            &[
                (u64::MAX >> 11, 1, 0),              // start overflows
                (0, u64::MAX >> 11, 0),              // size overflows
                (u64::MAX >> 12, u64::MAX >> 12, 0), // start + size overflows
                (0x200, 2, 0),
            ],
        );
        let mut i = info();
        let s = apply(&p, &mut i);
        assert_eq!(s.malformed_entries, 3);
        assert_eq!(i.ram().len(), 1);
        assert_eq!(i.ram()[0], 0x20_0000..0x20_2000);
        assert!(s.to_string().contains("3 malformed entries ignored"));
    }

    #[test]
    fn terminator_stops_and_count_is_bounded() {
        // Records after the 0-page terminator are not read.
        let mut p = pages(1, &[(1, 1, 0), (0, 0, 0)]);
        let late = MEMORY_MAP_OFFSET + 2 * MEMORY_MAP_ENTRY_SIZE;
        p[late + 8] = 1;
        assert_eq!(memory_map(&p).count(), 1);

        // A full page of records: all 170 read, BootInfo keeps RAM_RANGES_MAX.
        let full: Vec<_> = (0..170u64).map(|n| (n * 2, 1, 0)).collect();
        let mut i = info();
        let s = apply(&pages(1, &full), &mut i);
        assert_eq!(s.ram_ranges, RAM_RANGES_MAX);
        assert_eq!(s.dropped_ranges, 170 - RAM_RANGES_MAX);
        assert!(s.to_string().contains("RAM ranges dropped"));

        // A huge buffer of non-zero records is still cut at its page (the command line
        // follows it).
        let big = vec![0x11u8; MEMORY_MAP_OFFSET + 1000 * MEMORY_MAP_ENTRY_SIZE];
        assert_eq!(
            memory_map(&big).count(),
            (COMMAND_LINE_OFFSET - MEMORY_MAP_OFFSET) / MEMORY_MAP_ENTRY_SIZE
        );
    }

    #[test]
    fn truncated_and_garbage_input_never_panics() {
        let good = pages(3, &[(0x100, 0x10, 0), (0x400, 0x10, 0)]);
        for len in 0..=good.len() {
            let mut i = info();
            let s = apply(&good[..len], &mut i);
            // A record is used only if all 24 bytes are present.
            let whole = len.saturating_sub(MEMORY_MAP_OFFSET) / MEMORY_MAP_ENTRY_SIZE;
            assert_eq!(s.ram_ranges, whole.min(2), "len {len}");
            assert_eq!(s.vp_count, (len >= 4).then_some(3), "len {len}");
        }
        // Pseudo-random garbage: any answer is fine, a panic is not.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200 {
            let junk: Vec<u8> = (0..PARAMS_SIZE)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let mut i = info();
            let s = apply(&junk, &mut i);
            let _ = s.to_string();
            assert!(i.vp_count >= 1 && i.vp_count <= MAX_VPS as u32);
            assert!(i.ram().len() <= RAM_RANGES_MAX);
        }
    }

    /// The command line page: up to its NUL, taken as the boot's command line; VTL2 memory
    /// records counted apart from RAM.
    #[test]
    fn command_line_and_vtl2_memory() {
        let mut p = pages(
            1,
            &[(0x100, 0x100, 0), (0x200, 0x600, 3), (0x800, 0x100, 0)],
        );
        p[COMMAND_LINE_OFFSET..COMMAND_LINE_OFFSET + 14].copy_from_slice(b"pv.log=debug\0x");
        let mut i = info();
        let s = apply(&p, &mut i);
        assert_eq!(i.cmdline(), "pv.log=debug");
        assert_eq!(i.ram(), [0x10_0000..0x20_0000, 0x80_0000..0x90_0000]);
        assert_eq!(
            (i.vtl2().len(), i.vtl2()[0].clone()),
            (1, 0x20_0000..0x80_0000)
        );
        assert_eq!(
            s.to_string(),
            "from IGVM parameters: 1 VP(s), 2 RAM range(s) totalling 2048 KiB; VTL2 memory 1 \
             range(s) totalling 6144 KiB"
        );
        // No NUL in the page: all of it, said to be cut short.
        p[COMMAND_LINE_OFFSET..].fill(b'a');
        let mut i = info();
        let s = apply(&p, &mut i);
        assert_eq!(i.cmdline().len(), crate::CMDLINE_MAX);
        assert!(
            s.to_string().contains("command line cut to 512 bytes"),
            "{s}"
        );
        assert_eq!(command_line(&p[..COMMAND_LINE_OFFSET + 3]), b"aaa");
    }
}
