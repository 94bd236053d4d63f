//! The PVH start info (`hvm_start_info`, Xen's layout, version 1) on x86: the host reads QEMU's
//! (its command line and memory map), cuts its own memory out of the map and writes one for the
//! paravisor in guest memory; and the PVH entry point, from the paravisor's `XEN_ELFNOTE_PHYS32_ENTRY`
//! note in guest memory (QEMU's generic loader places the image but enters nothing). Pure, over
//! [`GuestMemory`], so it is tested on the host.

use alloc::vec::Vec;
use core::ops::Range;
use hvmodel::{GuestMemory, MemoryError};

pub const MAGIC: u32 = 0x336e_c578;
/// Memory map entry type 1: RAM.
pub const RAM: u32 = 1;
/// `hvm_start_info` up to and including the memory map fields.
const INFO_LEN: u64 = 56;
/// Memory map entry: addr u64, size u64, type u32, reserved u32.
const ENTRY_LEN: u64 = 24;
/// Where the written memory map starts, from the start info.
const MEMMAP_OFFSET: u64 = 64;
/// More entries than QEMU's map has; a larger count is refused.
pub const MAX_ENTRIES: u32 = 32;
/// Longest command line forwarded (the paravisor keeps 512 bytes).
pub const CMDLINE_MAX: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

impl MemoryEntry {
    fn range(&self) -> Range<u64> {
        self.addr..self.addr.saturating_add(self.size)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    Magic(u32),
    Version(u32),
    Entries(u32),
    CmdlineTooLong,
    Memory(MemoryError),
}

impl From<MemoryError> for Error {
    fn from(e: MemoryError) -> Self {
        Error::Memory(e)
    }
}

/// What the host passes on: the command line (no NUL) and the memory map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartInfo {
    pub cmdline: Vec<u8>,
    pub memmap: Vec<MemoryEntry>,
}

fn u32_at(mem: &mut dyn GuestMemory, gpa: u64) -> Result<u32, MemoryError> {
    let mut b = [0; 4];
    mem.read(gpa, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn u64_at(mem: &mut dyn GuestMemory, gpa: u64) -> Result<u64, MemoryError> {
    let mut b = [0; 8];
    mem.read(gpa, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Reads a loader's start info at `gpa`: its command line (if any) and memory map.
pub fn read(mem: &mut dyn GuestMemory, gpa: u64) -> Result<StartInfo, Error> {
    let magic = u32_at(mem, gpa)?;
    if magic != MAGIC {
        return Err(Error::Magic(magic));
    }
    let version = u32_at(mem, gpa + 4)?;
    if version < 1 {
        return Err(Error::Version(version));
    }
    let mut info = StartInfo::default();
    let cmdline = u64_at(mem, gpa + 24)?;
    if cmdline != 0 {
        loop {
            let mut b = [0u8];
            mem.read(cmdline + info.cmdline.len() as u64, &mut b)?;
            if b[0] == 0 {
                break;
            }
            if info.cmdline.len() == CMDLINE_MAX {
                return Err(Error::CmdlineTooLong);
            }
            info.cmdline.push(b[0]);
        }
    }
    let (map, entries) = (u64_at(mem, gpa + 40)?, u32_at(mem, gpa + 48)?);
    if entries > MAX_ENTRIES {
        return Err(Error::Entries(entries));
    }
    for i in 0..u64::from(entries) {
        let at = map + i * ENTRY_LEN;
        info.memmap.push(MemoryEntry {
            addr: u64_at(mem, at)?,
            size: u64_at(mem, at + 8)?,
            kind: u32_at(mem, at + 16)?,
        });
    }
    Ok(info)
}

/// The map without `host`: every entry (of any type) that overlaps it loses the overlap, so
/// the paravisor neither counts the host's pages as RAM nor reads loader data there.
pub fn cut(memmap: &[MemoryEntry], host: &Range<u64>) -> Vec<MemoryEntry> {
    let mut out = Vec::new();
    for e in memmap {
        let r = e.range();
        for piece in [r.start..r.end.min(host.start), r.start.max(host.end)..r.end] {
            if piece.start < piece.end {
                out.push(MemoryEntry {
                    addr: piece.start,
                    size: piece.end - piece.start,
                    kind: e.kind,
                });
            }
        }
    }
    out
}

/// The map with its RAM entries cut to `ram` (the guest's, the only RAM the nested tables map:
/// an entry becomes its pieces inside each range); other entries stay as they are.
pub fn limit_ram(memmap: &[MemoryEntry], ram: &[Range<u64>]) -> Vec<MemoryEntry> {
    let mut out = Vec::new();
    for e in memmap {
        if e.kind != RAM {
            out.push(*e);
            continue;
        }
        let r = e.range();
        for g in ram {
            let (start, end) = (r.start.max(g.start), r.end.min(g.end));
            if start < end {
                out.push(MemoryEntry {
                    addr: start,
                    size: end - start,
                    kind: RAM,
                });
            }
        }
    }
    out
}

/// Writes `info` at `gpa` as a version-1 start info: the memory map right after it (at +64),
/// then the NUL-terminated command line; no modules, no ACPI pointer (the paravisor then
/// assumes one VP, which is what this host runs). Returns the bytes used.
pub fn write(mem: &mut dyn GuestMemory, gpa: u64, info: &StartInfo) -> Result<u64, Error> {
    if info.memmap.len() > MAX_ENTRIES as usize {
        return Err(Error::Entries(info.memmap.len() as u32));
    }
    if info.cmdline.len() > CMDLINE_MAX {
        return Err(Error::CmdlineTooLong);
    }
    let map = gpa + MEMMAP_OFFSET;
    let cmdline = map + ENTRY_LEN * info.memmap.len() as u64;
    let mut head = [0u8; INFO_LEN as usize];
    head[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    head[4..8].copy_from_slice(&1u32.to_le_bytes());
    if !info.cmdline.is_empty() {
        head[24..32].copy_from_slice(&cmdline.to_le_bytes());
    }
    head[40..48].copy_from_slice(&map.to_le_bytes());
    head[48..52].copy_from_slice(&(info.memmap.len() as u32).to_le_bytes());
    mem.write(gpa, &head)?;
    for (i, e) in info.memmap.iter().enumerate() {
        let mut entry = [0u8; ENTRY_LEN as usize];
        entry[0..8].copy_from_slice(&e.addr.to_le_bytes());
        entry[8..16].copy_from_slice(&e.size.to_le_bytes());
        entry[16..20].copy_from_slice(&e.kind.to_le_bytes());
        mem.write(map + i as u64 * ENTRY_LEN, &entry)?;
    }
    mem.write(cmdline, &info.cmdline)?;
    mem.write(cmdline + info.cmdline.len() as u64, &[0])?;
    Ok(cmdline + info.cmdline.len() as u64 + 1 - gpa)
}

/// The PVH note's header: namesz 4, descsz 8 (a quad, as QEMU reads it for ELFCLASS64), type 18
/// (XEN_ELFNOTE_PHYS32_ENTRY), name "Xen\0"; the entry address follows.
const NOTE_HEADER: [u8; 16] = [4, 0, 0, 0, 8, 0, 0, 0, 18, 0, 0, 0, b'X', b'e', b'n', 0];

/// The 32-bit entry of the first PVH note (4-byte aligned, as notes are) in `range`.
pub fn find_entry(mem: &mut dyn GuestMemory, range: Range<u64>) -> Result<Option<u64>, Error> {
    const CHUNK: u64 = 0x1_0000;
    const NOTE: u64 = NOTE_HEADER.len() as u64 + 8;
    let mut buf = alloc::vec![0u8; (CHUNK + NOTE) as usize];
    let mut at = range.start & !3;
    while at + NOTE <= range.end {
        let len = (CHUNK + NOTE).min(range.end - at) as usize;
        mem.read(at, &mut buf[..len])?;
        let found = (0..=len - NOTE as usize)
            .step_by(4)
            .find(|&i| buf[i..i + 16] == NOTE_HEADER);
        if let Some(i) = found {
            let quad: [u8; 8] = buf[i + 16..i + 24].try_into().expect("8 bytes");
            return Ok(Some(u64::from_le_bytes(quad)));
        }
        at += CHUNK;
    }
    Ok(None)
}

#[cfg(test)]
// One RAM range is a slice of one range here, not a mistaken `start..end` list.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use hvmodel::TestMemory;

    fn qemu_map() -> Vec<MemoryEntry> {
        [
            (0, 0x9fc00, RAM),
            (0x9fc00, 0x400, 2),
            (0xf0000, 0x10000, 2),
            (0x10_0000, 0x0ff0_0000, RAM),
            (0xb000_0000, 0x1000_0000, 2),
        ]
        .map(|(addr, size, kind)| MemoryEntry { addr, size, kind })
        .to_vec()
    }

    #[test]
    fn the_host_is_cut_out_of_every_entry() {
        let host = 0x0f00_0000..0x1000_0000;
        let pieces = cut(&qemu_map(), &host);
        let mut want = qemu_map();
        want[3].size = 0x0f00_0000 - 0x10_0000;
        assert_eq!(pieces, want);
        // An entry straddling the host keeps both ends; one inside it disappears.
        let around = [
            MemoryEntry {
                addr: 0x0e00_0000,
                size: 0x0300_0000,
                kind: RAM,
            },
            MemoryEntry {
                addr: 0x0f10_0000,
                size: 0x1000,
                kind: 2,
            },
        ];
        assert_eq!(
            cut(&around, &host),
            [
                MemoryEntry {
                    addr: 0x0e00_0000,
                    size: 0x0100_0000,
                    kind: RAM
                },
                MemoryEntry {
                    addr: 0x1000_0000,
                    size: 0x0100_0000,
                    kind: RAM
                },
            ]
        );
    }

    #[test]
    fn ram_beyond_the_guests_is_dropped_and_the_rest_kept() {
        let mut map = qemu_map();
        map.push(MemoryEntry {
            addr: 0x1_0000_0000,
            size: 0x1000_0000,
            kind: RAM,
        });
        let limited = limit_ram(&map, &[0..0x0f00_0000]);
        let mut want = qemu_map();
        want[3].size = 0x0f00_0000 - 0x10_0000;
        assert_eq!(
            limited, want,
            "the MMCONFIG entry stays, RAM above 4 GiB goes"
        );
        // RAM on both sides of the host's and above 4 GiB: every piece inside the guest's.
        let guest = [
            0..0x0f00_0000,
            0x1000_0000..0x1_0000_0000,
            0x1_0000_0000..0x1_0800_0000,
        ];
        let big = [
            MemoryEntry {
                addr: 0,
                size: 0x8000_0000,
                kind: RAM,
            },
            map[5],
        ];
        let pieces = limit_ram(&big, &guest);
        let ranges: Vec<_> = pieces.iter().map(MemoryEntry::range).collect();
        assert_eq!(
            ranges,
            [
                0..0x0f00_0000,
                0x1000_0000..0x8000_0000,
                0x1_0000_0000..0x1_0800_0000
            ]
        );
    }

    #[test]
    fn what_is_written_reads_back_and_has_the_xen_layout() {
        let mut mem = TestMemory::new(0x10000);
        let info = StartInfo {
            cmdline: b"pv.test=panic".to_vec(),
            memmap: qemu_map(),
        };
        let used = write(&mut mem, 0x7000, &info).expect("fits");
        assert_eq!(used, 64 + 5 * 24 + 14);
        assert_eq!(read(&mut mem, 0x7000), Ok(info));
        // The fields the paravisor's boot::arch reads, at their offsets.
        assert_eq!(u32_at(&mut mem, 0x7000), Ok(MAGIC));
        assert_eq!(u32_at(&mut mem, 0x7004), Ok(1));
        assert_eq!(u64_at(&mut mem, 0x7000 + 24), Ok(0x7000 + 64 + 5 * 24));
        assert_eq!(u64_at(&mut mem, 0x7000 + 32), Ok(0), "no RSDP");
        assert_eq!(u64_at(&mut mem, 0x7000 + 40), Ok(0x7040));
        assert_eq!(u32_at(&mut mem, 0x7000 + 48), Ok(5));
        assert_eq!(u64_at(&mut mem, 0x7040 + 3 * 24 + 8), Ok(0x0ff0_0000));
        // No command line: a null pointer.
        write(&mut mem, 0x8000, &StartInfo::default()).expect("fits");
        assert_eq!(u64_at(&mut mem, 0x8000 + 24), Ok(0));
        assert_eq!(read(&mut mem, 0x8000), Ok(StartInfo::default()));
    }

    #[test]
    fn refusals() {
        let mut mem = TestMemory::new(0x10000);
        assert_eq!(read(&mut mem, 0x100), Err(Error::Magic(0)));
        let long = StartInfo {
            cmdline: alloc::vec![b'a'; CMDLINE_MAX + 1],
            memmap: Vec::new(),
        };
        assert_eq!(write(&mut mem, 0, &long), Err(Error::CmdlineTooLong));
        assert!(matches!(read(&mut mem, 0xfffe), Err(Error::Memory(_))));
    }

    #[test]
    fn the_entry_is_found_in_the_note_wherever_it_lies() {
        for at in [0x1000u64, 0x1_fff4, 0x2_0000 - 16] {
            let mut mem = TestMemory::new(0x4_0000);
            mem.write(at, &NOTE_HEADER).expect("in RAM");
            mem.write(at + 16, &0x10_0000u64.to_le_bytes())
                .expect("in RAM");
            assert_eq!(
                find_entry(&mut mem, 0..0x4_0000),
                Ok(Some(0x10_0000)),
                "{at:#x}"
            );
        }
        let mut mem = TestMemory::new(0x4_0000);
        assert_eq!(find_entry(&mut mem, 0..0x4_0000), Ok(None));
        // A header off the 4-byte grid is no note.
        mem.write(0x1002, &NOTE_HEADER).expect("in RAM");
        assert_eq!(find_entry(&mut mem, 0..0x4_0000), Ok(None));
    }
}
