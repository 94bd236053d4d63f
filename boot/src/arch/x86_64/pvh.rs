//! QEMU's PVH start info (`hvm_start_info`, Xen's layout: `hvdef::loader_data::pvh`): command
//! line, ACPI tables (for the VP count) and the memory map. Everything is loader-provided: read
//! through bounds-checked volatile copies of whole structs, and anything odd is reported on the
//! console and ignored.
#![expect(
    unsafe_code,
    reason = "reads the loader's PVH start info from raw addresses"
)]

use crate::acpi::{self, PhysRead};
use crate::loader::{self, Readable};
use crate::BootInfo;
use core::mem::{offset_of, size_of};
use core::ops::Range;
use hvdef::loader_data::pvh::{
    HvmMemmapTableEntry, HvmStartInfo, HVM_MEMMAP_TYPE_RAM, HVM_START_MAGIC,
};

/// More entries than any real map has; a larger count is treated as corrupt.
const MEMMAP_MAX: u32 = 128;

/// Loader memory read through the identity map of the first 4 GiB, where [`Readable`] allows
/// it (never device memory; once the memory map is read, only ranges it lists).
struct IdentityMap<'a>(Readable<'a>);

impl PhysRead for IdentityMap<'_> {
    fn read(&self, paddr: u64, buf: &mut [u8]) -> bool {
        if self.0.check(paddr, buf.len() as u64).is_err() {
            return false;
        }
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: the whole range is non-null, inside the identity map of the low 4 GiB and
            // outside device memory (checked above); the loader owns the bytes and nothing
            // writes them while we boot. Volatile: not our memory.
            *b = unsafe { core::ptr::read_volatile((paddr + i as u64) as *const u8) };
        }
        true
    }
}

impl IdentityMap<'_> {
    /// A pointer field of the start info at `start_info`, read on its own (0 when unreadable).
    fn pointer(&self, start_info: u64, offset: usize) -> u64 {
        self.read_value(start_info + offset as u64).unwrap_or(0)
    }
}

pub(super) fn read_start_info(start_info: u64, info: &mut BootInfo) {
    let early = IdentityMap(loader::X86_64);
    if let Err(why) = loader::X86_64.check(start_info, size_of::<HvmStartInfo>() as u64) {
        crate::println!("boot: PVH start info at {start_info:#x} is {why}; ignoring it");
        return;
    }
    let head = early.read_value::<HvmStartInfo>(start_info);
    let Some(head) = head.filter(|h| h.magic == HVM_START_MAGIC) else {
        crate::println!("boot: no PVH start info at {start_info:#x}; ignoring it");
        return;
    };
    // The memory map first: the other pointers must then lie in memory it lists.
    let mut listed = [const { 0..0 }; MEMMAP_MAX as usize];
    let mut count = 0;
    if head.version >= 1 {
        let (map, entries) = (head.memmap_paddr, head.memmap_entries);
        count = read_memmap(&early, map, entries, info, &mut listed);
    } else {
        crate::println!("boot: PVH start info version 0 has no memory map");
    }
    let mem = if count == 0 {
        early
    } else {
        IdentityMap(loader::X86_64.with_reported(&listed[..count]))
    };
    // Read again, field by field, where the memory map allows (the start info itself need
    // not lie in memory the map lists).
    let cmdline = mem.pointer(start_info, offset_of!(HvmStartInfo, cmdline_paddr));
    read_cmdline(&mem, cmdline, info);
    // rsdp_paddr is in every version (only the memory map needs version 1).
    let rsdp = mem.pointer(start_info, offset_of!(HvmStartInfo, rsdp_paddr));
    read_vp_count(&mem, rsdp, info);
}

fn read_cmdline(mem: &IdentityMap<'_>, paddr: u64, info: &mut BootInfo) {
    if paddr == 0 {
        return;
    }
    if let Err(why) = mem.0.check(paddr, 1) {
        crate::println!("boot: PVH command line at {paddr:#x} is {why}; ignoring it");
        return;
    }
    let mut buf = [0u8; crate::CMDLINE_MAX + 1];
    let mut len = 0;
    while len < buf.len() {
        let mut b = [0u8];
        if !mem.read(paddr + len as u64, &mut b) || b[0] == 0 {
            break;
        }
        buf[len] = b[0];
        len += 1;
    }
    if !info.set_cmdline(&buf[..len]) {
        crate::println!(
            "boot: command line truncated to {} bytes",
            info.cmdline().len()
        );
    }
}

/// The VP count comes from the ACPI MADT the loader built.
fn read_vp_count(mem: &IdentityMap<'_>, rsdp: u64, info: &mut BootInfo) {
    if rsdp == 0 {
        crate::println!("boot: no ACPI tables in the PVH start info; assuming 1 VP");
        return;
    }
    if let Err(why) = mem
        .0
        .check(rsdp, hvdef::loader_data::acpi::RSDP_V1_LEN as u64)
    {
        crate::println!("boot: ACPI RSDP at {rsdp:#x} is {why}; ignoring it, assuming 1 VP");
        return;
    }
    match acpi::cpu_count(mem, rsdp).map(|n| info.set_vp_count(n as usize)) {
        Ok(crate::VpCount::Used | crate::VpCount::Ignored) => {}
        Ok(crate::VpCount::AboveLimit { listed }) => crate::println!(
            "{}",
            crate::AboveLimit {
                source: "the ACPI MADT",
                listed: listed as u64
            }
        ),
        Err(e) => {
            crate::println!("boot: cannot read ACPI tables at {rsdp:#x} ({e:?}); assuming 1 VP")
        }
    }
}

/// Reads the memory map: RAM entries into `info`, every entry (any type) into `listed`;
/// returns how many of `listed` it filled (0: no usable map).
fn read_memmap(
    mem: &IdentityMap<'_>,
    map: u64,
    entries: u32,
    info: &mut BootInfo,
    listed: &mut [Range<u64>; MEMMAP_MAX as usize],
) -> usize {
    if map == 0 || entries == 0 || entries > MEMMAP_MAX {
        crate::println!("boot: PVH memory map at {map:#x} with {entries} entries is unusable");
        return 0;
    }
    let entry_size = size_of::<HvmMemmapTableEntry>() as u64;
    if let Err(why) = mem.0.check(map, u64::from(entries) * entry_size) {
        crate::println!("boot: PVH memory map at {map:#x} is {why}; ignoring it");
        return 0;
    }
    let mut count = 0;
    for i in 0..u64::from(entries) {
        let Some(entry) = mem.read_value::<HvmMemmapTableEntry>(map + i * entry_size) else {
            crate::println!("boot: PVH memory map entry {i} is unreadable");
            return count;
        };
        let (addr, size) = (entry.addr, entry.size);
        if let Some(end) = addr.checked_add(size).filter(|_| size != 0) {
            listed[count] = addr..end;
            count += 1;
        }
        if entry.entry_type == HVM_MEMMAP_TYPE_RAM && !info.add_ram(addr, size) && size != 0 {
            crate::println!("boot: RAM range {addr:#x}+{size:#x} dropped");
        }
    }
    count
}
