//! QEMU's PVH start info (`hvm_start_info`, Xen's layout): command line, ACPI tables (for the VP
//! count) and the memory map. Everything is loader-provided: read through bounds-checked
//! volatile copies, and anything odd is reported on the console and ignored.

use crate::acpi::{self, PhysRead};
use crate::BootInfo;

const MAGIC: u32 = 0x336e_c578;
/// The start info is read before the identity map is extended to RAM above 4 GiB: loader
/// pointers beyond the static map (the first 4 GiB) are refused.
const IDENTITY_MAPPED: u64 = crate::paging::STATIC_MAP_END;
/// Memory map entry: addr u64, size u64, type u32, reserved u32.
const MEMMAP_ENTRY: usize = 24;
const MEMMAP_RAM: u32 = 1;
/// More entries than any real map has; a larger count is treated as corrupt.
const MEMMAP_MAX: u32 = 128;

/// Loader memory read through the identity map of the first 4 GiB.
struct IdentityMap;

impl PhysRead for IdentityMap {
    fn read(&self, paddr: u64, buf: &mut [u8]) -> bool {
        // Ranges reaching past the identity map are not mapped; 0 is a null pointer.
        match paddr.checked_add(buf.len() as u64) {
            Some(end) if paddr != 0 && end <= IDENTITY_MAPPED => {}
            _ => return false,
        }
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: the whole range is non-null and below 4 GiB (identity mapped); the loader
            // owns the bytes and nothing writes them while we boot. Volatile: not our memory.
            *b = unsafe { core::ptr::read_volatile((paddr + i as u64) as *const u8) };
        }
        true
    }
}

fn read_u32(paddr: u64) -> Option<u32> {
    let mut b = [0; 4];
    IdentityMap
        .read(paddr, &mut b)
        .then(|| u32::from_le_bytes(b))
}

fn read_u64(paddr: u64) -> Option<u64> {
    let mut b = [0; 8];
    IdentityMap
        .read(paddr, &mut b)
        .then(|| u64::from_le_bytes(b))
}

pub(super) fn read_start_info(start_info: u64, info: &mut BootInfo) {
    if read_u32(start_info) != Some(MAGIC) {
        crate::println!("boot: no PVH start info at {start_info:#x}; ignoring it");
        return;
    }
    let version = read_u32(start_info + 4).unwrap_or(0);
    read_cmdline(read_u64(start_info + 24).unwrap_or(0), info);
    // rsdp_paddr (offset 32) is in every version (only the memory map needs version 1).
    read_vp_count(read_u64(start_info + 32).unwrap_or(0), info);
    if version >= 1 {
        let map = read_u64(start_info + 40).unwrap_or(0);
        let entries = read_u32(start_info + 48).unwrap_or(0);
        read_memmap(map, entries, info);
    } else {
        crate::println!("boot: PVH start info version 0 has no memory map");
    }
}

fn read_cmdline(paddr: u64, info: &mut BootInfo) {
    if paddr == 0 {
        return;
    }
    let mut buf = [0u8; crate::CMDLINE_MAX + 1];
    let mut len = 0;
    while len < buf.len() {
        let mut b = [0u8];
        if !IdentityMap.read(paddr + len as u64, &mut b) || b[0] == 0 {
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
fn read_vp_count(rsdp: u64, info: &mut BootInfo) {
    if rsdp == 0 {
        crate::println!("boot: no ACPI tables in the PVH start info; assuming 1 VP");
        return;
    }
    match acpi::cpu_count(&IdentityMap, rsdp).map(|n| info.set_vp_count(n as usize)) {
        Ok(crate::VpCount::Used | crate::VpCount::Ignored) => {}
        Ok(crate::VpCount::Clamped { listed }) => crate::println!(
            "boot: ACPI lists {listed} VPs; using the first {}",
            crate::MAX_VPS
        ),
        Err(e) => {
            crate::println!("boot: cannot read ACPI tables at {rsdp:#x} ({e:?}); assuming 1 VP")
        }
    }
}

fn read_memmap(map: u64, entries: u32, info: &mut BootInfo) {
    if map == 0 || entries == 0 || entries > MEMMAP_MAX {
        crate::println!("boot: PVH memory map at {map:#x} with {entries} entries is unusable");
        return;
    }
    for i in 0..u64::from(entries) {
        let entry = map + i * MEMMAP_ENTRY as u64;
        let (Some(addr), Some(size), Some(kind)) =
            (read_u64(entry), read_u64(entry + 8), read_u32(entry + 16))
        else {
            crate::println!("boot: PVH memory map entry {i} is unreadable");
            return;
        };
        if kind == MEMMAP_RAM && !info.add_ram(addr, size) && size != 0 {
            crate::println!("boot: RAM range {addr:#x}+{size:#x} dropped");
        }
    }
}
