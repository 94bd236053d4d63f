//! The IGVM builder's tests' VTL0 payloads: minimal ELF files written by hand.

/// A minimal static ELF (ET_EXEC, one RWX PT_LOAD of `bytes` at physical and virtual `paddr`,
/// entry `entry`, no sections): a stand-in VTL0 payload, so the tests do not depend on the real
/// VTL0 kernel. ELF64 unless `elf32`.
pub fn minimal_elf(elf32: bool, machine: u16, paddr: u64, entry: u64, bytes: &[u8]) -> Vec<u8> {
    let (ehsize, phentsize): (u16, u16) = if elf32 { (52, 32) } else { (64, 56) };
    let offset = 0x1000u64; // the segment's file offset, page aligned like a linker's
    let mut e = vec![0x7f, b'E', b'L', b'F', if elf32 { 1 } else { 2 }, 1, 1];
    e.resize(16, 0);
    e.extend(2u16.to_le_bytes()); // ET_EXEC
    e.extend(machine.to_le_bytes());
    e.extend(1u32.to_le_bytes());
    let word = |e: &mut Vec<u8>, v: u64| {
        if elf32 {
            e.extend((v as u32).to_le_bytes())
        } else {
            e.extend(v.to_le_bytes())
        }
    };
    word(&mut e, entry);
    word(&mut e, u64::from(ehsize)); // e_phoff: right after the header
    word(&mut e, 0); // e_shoff: no sections
    e.extend(0u32.to_le_bytes()); // e_flags
    for v in [ehsize, phentsize, 1, 0, 0, 0] {
        e.extend(v.to_le_bytes());
    }
    let len = bytes.len() as u64;
    e.extend(1u32.to_le_bytes()); // PT_LOAD
    if elf32 {
        for v in [offset, paddr, paddr, len, len, 7, 0x1000] {
            e.extend((v as u32).to_le_bytes());
        }
    } else {
        e.extend(7u32.to_le_bytes()); // RWX
        for v in [offset, paddr, paddr, len, len, 0x1000] {
            e.extend(v.to_le_bytes());
        }
    }
    e.resize(offset as usize, 0);
    e.extend(bytes);
    e
}
