//! The PVH start info (`hvm_start_info`, Xen's layout, version 1) on x86: the host reads QEMU's
//! (its command line and memory map), cuts its own memory out of the map and writes one for the
//! paravisor in guest memory; and the PVH entry point, from the paravisor's `XEN_ELFNOTE_PHYS32_ENTRY`
//! note in guest memory (QEMU's generic loader places the image but enters nothing). Pure, over
//! [`GuestMemory`], so it is tested on the host.

use alloc::vec::Vec;
use core::mem::size_of;
use core::ops::Range;
use hvdef::loader_data::acpi::{
    Madt, MadtEntryHeader, MadtLocalApic, Rsdp, RsdpV1, SdtHeader, MADT_ENABLED, MADT_LOCAL_APIC,
    MADT_SIGNATURE, RSDP_SIGNATURE, RSDP_V1_LEN, XSDT_SIGNATURE,
};
use hvdef::loader_data::pvh::{HvmMemmapTableEntry, HvmStartInfo, HVM_MEMMAP_TYPE_RAM};
use hvmodel::{read_obj, GuestMemory, MemoryError};
use zerocopy::IntoBytes;

pub use hvdef::loader_data::pvh::HVM_START_MAGIC as MAGIC;
/// Memory map entry type 1: RAM.
pub const RAM: u32 = HVM_MEMMAP_TYPE_RAM;
const ENTRY_LEN: u64 = size_of::<HvmMemmapTableEntry>() as u64;
/// Where the written memory map starts, from the start info (just after it).
const MEMMAP_OFFSET: u64 = 64;
const _: () = assert!(MEMMAP_OFFSET >= size_of::<HvmStartInfo>() as u64);
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

/// What the host passes on: the command line (no NUL), the memory map and the ACPI RSDP's
/// address (0: none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartInfo {
    pub cmdline: Vec<u8>,
    pub memmap: Vec<MemoryEntry>,
    pub rsdp: u64,
}

#[cfg(test)]
fn u32_at(mem: &mut dyn GuestMemory, gpa: u64) -> Result<u32, MemoryError> {
    read_obj(mem, gpa)
}

#[cfg(test)]
fn u64_at(mem: &mut dyn GuestMemory, gpa: u64) -> Result<u64, MemoryError> {
    read_obj(mem, gpa)
}

/// Reads a loader's start info at `gpa`: its command line (if any) and memory map (not its
/// ACPI pointer: QEMU's tables lie in the host's memory).
pub fn read(mem: &mut dyn GuestMemory, gpa: u64) -> Result<StartInfo, Error> {
    // The magic alone first: what is not a start info may also be shorter than one.
    let magic: u32 = read_obj(mem, gpa)?;
    if magic != MAGIC {
        return Err(Error::Magic(magic));
    }
    let head: HvmStartInfo = read_obj(mem, gpa)?;
    if head.version < 1 {
        return Err(Error::Version(head.version));
    }
    let mut info = StartInfo::default();
    let cmdline = head.cmdline_paddr;
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
    let (map, entries) = (head.memmap_paddr, head.memmap_entries);
    if entries > MAX_ENTRIES {
        return Err(Error::Entries(entries));
    }
    for i in 0..u64::from(entries) {
        let e: HvmMemmapTableEntry = read_obj(mem, map + i * ENTRY_LEN)?;
        info.memmap.push(MemoryEntry {
            addr: e.addr,
            size: e.size,
            kind: e.entry_type,
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
/// then the NUL-terminated command line; no modules; `rsdp_paddr` from `info.rsdp`. Returns
/// the bytes used.
pub fn write(mem: &mut dyn GuestMemory, gpa: u64, info: &StartInfo) -> Result<u64, Error> {
    if info.memmap.len() > MAX_ENTRIES as usize {
        return Err(Error::Entries(info.memmap.len() as u32));
    }
    if info.cmdline.len() > CMDLINE_MAX {
        return Err(Error::CmdlineTooLong);
    }
    let map = gpa + MEMMAP_OFFSET;
    let cmdline = map + ENTRY_LEN * info.memmap.len() as u64;
    let head = HvmStartInfo {
        magic: MAGIC,
        version: 1,
        cmdline_paddr: if info.cmdline.is_empty() { 0 } else { cmdline },
        rsdp_paddr: info.rsdp,
        memmap_paddr: map,
        memmap_entries: info.memmap.len() as u32,
        ..HvmStartInfo::default()
    };
    mem.write(gpa, head.as_bytes())?;
    for (i, e) in info.memmap.iter().enumerate() {
        let entry = HvmMemmapTableEntry {
            addr: e.addr,
            size: e.size,
            entry_type: e.kind,
            reserved: 0,
        };
        mem.write(map + i as u64 * ENTRY_LEN, entry.as_bytes())?;
    }
    mem.write(cmdline, &info.cmdline)?;
    mem.write(cmdline + info.cmdline.len() as u64, &[0])?;
    Ok(cmdline + info.cmdline.len() as u64 + 1 - gpa)
}

/// The ACPI tables a VMM gives a PVH guest so that it finds its processors (the start info's
/// `rsdp_paddr`; ACPI 6.x 5.2.5 RSDP, 5.2.8 XSDT, 5.2.12 MADT), laid out from `gpa`: an RSDP
/// (revision 2) at +0, an XSDT naming only the MADT at +64, the MADT at +128 with one enabled
/// local APIC per VP (processor UID and APIC ID the VP index: QEMU numbers its CPUs' APIC IDs
/// so, and the host starts VP n's CPU at APIC ID n). The bytes, checksums set; the RSDP's GPA is
/// `gpa`.
pub fn acpi_tables(gpa: u64, vp_count: u8) -> Vec<u8> {
    fn header(signature: [u8; 4], len: usize, revision: u8) -> SdtHeader {
        SdtHeader {
            signature,
            length: (len as u32).into(),
            revision,
            checksum: 0, // set by `seal`
            oem_id: *b"PVINVM",
            oem_table_id: *b"INVMHOST",
            oem_revision: 1.into(),
            creator_id: *b"INVM",
            creator_revision: 1.into(),
        }
    }
    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b))
    }
    /// Sets a table's checksum byte (at `at`) so that its bytes sum to 0.
    fn seal(table: &mut [u8], at: usize) {
        table[at] = sum(table).wrapping_neg();
    }
    let checksum_at = core::mem::offset_of!(SdtHeader, checksum);
    let (xsdt_at, madt_at) = (gpa + 64, gpa + 128);
    let mut rsdp = Rsdp {
        v1: RsdpV1 {
            signature: RSDP_SIGNATURE,
            checksum: 0,
            oem_id: *b"PVINVM",
            revision: 2,
            rsdt_address: 0.into(),
        },
        length: (size_of::<Rsdp>() as u32).into(),
        xsdt_address: xsdt_at.into(),
        extended_checksum: 0,
        reserved: [0; 3],
    };
    rsdp.v1.checksum = sum(&rsdp.as_bytes()[..RSDP_V1_LEN]).wrapping_neg();
    rsdp.extended_checksum = sum(rsdp.as_bytes()).wrapping_neg();
    let xsdt_len = size_of::<SdtHeader>() + size_of::<u64>();
    let mut xsdt = header(XSDT_SIGNATURE, xsdt_len, 1).as_bytes().to_vec();
    xsdt.extend_from_slice(&madt_at.to_le_bytes());
    seal(&mut xsdt, checksum_at);
    let madt_len = size_of::<Madt>() + size_of::<MadtLocalApic>() * usize::from(vp_count);
    let madt_head = Madt {
        header: header(MADT_SIGNATURE, madt_len, 3),
        local_interrupt_controller_address: 0xfee0_0000.into(),
        flags: 1.into(), // PCAT_COMPAT
    };
    let mut madt = madt_head.as_bytes().to_vec();
    for vp in 0..vp_count {
        let lapic = MadtLocalApic {
            header: MadtEntryHeader {
                entry_type: MADT_LOCAL_APIC,
                length: size_of::<MadtLocalApic>() as u8,
            },
            processor_uid: vp,
            apic_id: vp,
            flags: MADT_ENABLED.into(),
        };
        madt.extend_from_slice(lapic.as_bytes());
    }
    seal(&mut madt, checksum_at);
    let mut bytes = rsdp.as_bytes().to_vec();
    bytes.resize(64, 0);
    bytes.extend_from_slice(&xsdt);
    bytes.resize(128, 0);
    bytes.extend_from_slice(&madt);
    bytes
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
            rsdp: 0,
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
            rsdp: 0,
        };
        assert_eq!(write(&mut mem, 0, &long), Err(Error::CmdlineTooLong));
        assert!(matches!(read(&mut mem, 0xfffe), Err(Error::Memory(_))));
    }

    /// A start info whose magic is there but whose fields run past the end of memory, and a
    /// memory map cut short: memory errors, not a panic or a short read.
    #[test]
    fn truncated_start_info_and_map() {
        let mut mem = TestMemory::new(0x10000);
        let info = StartInfo {
            cmdline: Vec::new(),
            memmap: qemu_map(),
            rsdp: 0,
        };
        write(&mut mem, 0x1000, &info).expect("fits");
        let mut head = [0u8; 56];
        mem.read(0x1000, &mut head).unwrap();
        mem.write(0x10000 - 8, &head[..8]).unwrap();
        assert!(matches!(read(&mut mem, 0x10000 - 8), Err(Error::Memory(_))));
        // The map's last entry straddles the end of memory.
        let map = 0x10000 - 4 * 24 - 8;
        mem.write(0x1000 + 40, &(map as u64).to_le_bytes()).unwrap();
        assert!(matches!(read(&mut mem, 0x1000), Err(Error::Memory(_))));
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

    /// The ACPI tables: RSDP (both checksums), an XSDT with the MADT's address, a MADT with one
    /// enabled local APIC per VP, every table's bytes summing to 0; the start info points at
    /// the RSDP.
    #[test]
    fn acpi_tables_list_every_vp() {
        let sum = |b: &[u8]| b.iter().fold(0u8, |s, &x| s.wrapping_add(x));
        let t = acpi_tables(0x8000, 4);
        assert_eq!(&t[..8], b"RSD PTR ");
        assert_eq!(sum(&t[..20]), 0);
        assert_eq!(sum(&t[..36]), 0);
        assert_eq!(t[15], 2);
        assert_eq!(u64::from_le_bytes(t[24..32].try_into().unwrap()), 0x8040);
        let xsdt = &t[64..108];
        assert_eq!(&xsdt[..4], b"XSDT");
        assert_eq!(sum(xsdt), 0);
        assert_eq!(u64::from_le_bytes(xsdt[36..44].try_into().unwrap()), 0x8080);
        let madt = &t[128..];
        assert_eq!(&madt[..4], b"APIC");
        assert_eq!(u32::from_le_bytes(madt[4..8].try_into().unwrap()), 76);
        assert_eq!(madt.len(), 76);
        assert_eq!(sum(madt), 0);
        assert_eq!(&madt[44..52], &[0, 8, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&madt[68..76], &[0, 8, 3, 3, 1, 0, 0, 0]);
        let mut mem = TestMemory::new(0x1000);
        let info = StartInfo {
            rsdp: 0x8000,
            ..StartInfo::default()
        };
        write(&mut mem, 0x100, &info).unwrap();
        let mut rsdp = [0u8; 8];
        mem.read(0x100 + 32, &mut rsdp).unwrap();
        assert_eq!(u64::from_le_bytes(rsdp), 0x8000);
    }
}
