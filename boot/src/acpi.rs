//! A small ACPI reader for what the loader passes on x86_64 (the CPU count, from the MADT).
//! The tables are loader-controlled: every address and length is checked, checksums are
//! verified, and malformed tables are an error, never a panic or an endless walk. The layouts
//! are `hvdef::loader_data::acpi`'s structs, each read whole with a bounds-checked copy.
//!
//! Memory is reached through [`PhysRead`] rather than slices, so the firmware can read through
//! its identity map without trusting a loader-supplied length first, and tests can use a `Vec`.

use core::mem::{offset_of, size_of};
use hvdef::loader_data::acpi::{
    Madt, MadtEntryHeader, MadtLocalApic, MadtLocalX2Apic, Rsdp, RsdpV1, SdtHeader, MADT_ENABLED,
    MADT_SIGNATURE, RSDT_SIGNATURE, XSDT_SIGNATURE,
};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, IntoBytes};

pub use hvdef::loader_data::acpi::{MADT_LOCAL_APIC, MADT_LOCAL_X2APIC};

/// Reads physical memory. Returns false if any byte of the range is not readable.
pub trait PhysRead {
    fn read(&self, paddr: u64, buf: &mut [u8]) -> bool;

    /// The `T` at `paddr`, if all of its bytes are readable.
    fn read_value<T: FromBytes + IntoBytes>(&self, paddr: u64) -> Option<T> {
        let mut value = T::new_zeroed();
        self.read(paddr, value.as_mut_bytes()).then_some(value)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// A pointer or length led outside readable memory.
    Unreadable,
    /// The RSDP or a table does not carry the expected signature.
    BadSignature,
    BadChecksum,
    /// A table is shorter than its header, longer than we accept, or lists too many tables.
    BadLength,
    /// The RSDP points at neither an XSDT nor an RSDT.
    NoRootTable,
    NoMadt,
    /// A MADT entry is too short for its type or runs past the end of the table.
    BadMadtEntry,
    /// The MADT lists no enabled processor, which cannot describe the CPU we run on.
    NoProcessors,
}

const RSDP_SIGNATURE: &[u8; 8] = &hvdef::loader_data::acpi::RSDP_SIGNATURE;
/// The ACPI 2.0+ RSDP is 36 bytes; allow later growth but not an arbitrary length.
const RSDP_MAX_LEN: u32 = 4096;
const SDT_HEADER_LEN: u32 = size_of::<SdtHeader>() as u32;
/// Longest table accepted. Real MADTs are a few KiB; this still fits one listing 16 Ki x2APICs
/// while bounding the checksum and entry walks (each MADT entry is at least 2 bytes).
const MAX_TABLE_LEN: u32 = 256 * 1024;
/// Most XSDT/RSDT entries looked at; real systems have a few dozen tables.
const MAX_TABLES: u32 = 1024;
/// MADT: the interrupt controller structures follow its fixed part.
const MADT_ENTRIES_OFFSET: u32 = size_of::<Madt>() as u32;

fn read_into(mem: &impl PhysRead, base: u64, off: u64, buf: &mut [u8]) -> Result<(), AcpiError> {
    let addr = base.checked_add(off).ok_or(AcpiError::Unreadable)?;
    if mem.read(addr, buf) {
        Ok(())
    } else {
        Err(AcpiError::Unreadable)
    }
}

/// The `T` at `base + off`.
fn read<T: FromBytes + IntoBytes>(
    mem: &impl PhysRead,
    base: u64,
    off: u64,
) -> Result<T, AcpiError> {
    let addr = base.checked_add(off).ok_or(AcpiError::Unreadable)?;
    mem.read_value(addr).ok_or(AcpiError::Unreadable)
}

/// Checks that the `len` bytes at `paddr` sum to zero, reading in small chunks so a large table
/// needs no large buffer on the boot stack.
fn checksum(mem: &impl PhysRead, paddr: u64, len: u32) -> Result<(), AcpiError> {
    let mut buf = [0u8; 64];
    let mut sum = 0u8;
    let mut done = 0u32;
    while done < len {
        let n = (len - done).min(buf.len() as u32);
        let chunk = &mut buf[..n as usize];
        read_into(mem, paddr, done.into(), chunk)?;
        sum = chunk.iter().fold(sum, |s, &b| s.wrapping_add(b));
        done += n;
    }
    if sum == 0 {
        Ok(())
    } else {
        Err(AcpiError::BadChecksum)
    }
}

/// Validates the table header at `paddr` (signature, length bounds, checksum) and returns the
/// table length.
fn table(mem: &impl PhysRead, paddr: u64, signature: &[u8; 4]) -> Result<u32, AcpiError> {
    // The signature and length alone: a table shorter than its header is BadLength.
    let sig: [u8; 4] = read(mem, paddr, offset_of!(SdtHeader, signature) as u64)?;
    if &sig != signature {
        return Err(AcpiError::BadSignature);
    }
    let len = read::<U32>(mem, paddr, offset_of!(SdtHeader, length) as u64)?.get();
    if !(SDT_HEADER_LEN..=MAX_TABLE_LEN).contains(&len) {
        return Err(AcpiError::BadLength);
    }
    checksum(mem, paddr, len)?;
    Ok(len)
}

/// The root table the RSDP names: (address, signature, entry size).
fn root_table(mem: &impl PhysRead, rsdp: u64) -> Result<(u64, &'static [u8; 4], u32), AcpiError> {
    let v1: RsdpV1 = read(mem, rsdp, 0)?;
    if &v1.signature != RSDP_SIGNATURE {
        return Err(AcpiError::BadSignature);
    }
    if v1.as_bytes().iter().fold(0u8, |s, &b| s.wrapping_add(b)) != 0 {
        return Err(AcpiError::BadChecksum);
    }
    // Revision 0 (ACPI 1.0) RSDPs are only 20 bytes: the fields below may not exist.
    if v1.revision >= 2 {
        let len = read::<U32>(mem, rsdp, offset_of!(Rsdp, length) as u64)?.get();
        if !(SDT_HEADER_LEN..=RSDP_MAX_LEN).contains(&len) {
            return Err(AcpiError::BadLength);
        }
        checksum(mem, rsdp, len)?;
        // The XSDT supersedes the RSDT when present (its entries can point above 4 GiB).
        let xsdt = read::<Rsdp>(mem, rsdp, 0)?.xsdt_address.get();
        if xsdt != 0 {
            return Ok((xsdt, &XSDT_SIGNATURE, 8));
        }
    }
    match v1.rsdt_address.get() {
        0 => Err(AcpiError::NoRootTable),
        rsdt => Ok((rsdt.into(), &RSDT_SIGNATURE, 4)),
    }
}

/// Whether the processor structure at `paddr + off` (of `kind`, `entry_len` bytes long) is
/// enabled; None for other structures.
fn processor_enabled(
    mem: &impl PhysRead,
    paddr: u64,
    off: u32,
    kind: u8,
    entry_len: u32,
) -> Result<Option<bool>, AcpiError> {
    let need = |size: usize| {
        if entry_len < size as u32 {
            Err(AcpiError::BadMadtEntry)
        } else {
            Ok(())
        }
    };
    let flags = match kind {
        MADT_LOCAL_APIC => {
            need(size_of::<MadtLocalApic>())?;
            read::<MadtLocalApic>(mem, paddr, off.into())?.flags
        }
        MADT_LOCAL_X2APIC => {
            need(size_of::<MadtLocalX2Apic>())?;
            read::<MadtLocalX2Apic>(mem, paddr, off.into())?.flags
        }
        _ => return Ok(None),
    };
    Ok(Some(flags.get() & MADT_ENABLED != 0))
}

/// Counts the enabled processors the MADT at `paddr` lists.
fn madt_cpu_count(mem: &impl PhysRead, paddr: u64) -> Result<u32, AcpiError> {
    let len = table(mem, paddr, &MADT_SIGNATURE)?;
    if len < MADT_ENTRIES_OFFSET {
        return Err(AcpiError::BadLength);
    }
    let mut count = 0u32;
    let mut off = MADT_ENTRIES_OFFSET;
    while off < len {
        let left = len - off;
        if left < size_of::<MadtEntryHeader>() as u32 {
            return Err(AcpiError::BadMadtEntry);
        }
        let entry: MadtEntryHeader = read(mem, paddr, off.into())?;
        let entry_len = u32::from(entry.length);
        // A length below the header's would not advance the walk.
        if entry_len < size_of::<MadtEntryHeader>() as u32 || entry_len > left {
            return Err(AcpiError::BadMadtEntry);
        }
        if processor_enabled(mem, paddr, off, entry.entry_type, entry_len)? == Some(true) {
            // Cannot overflow: at most MAX_TABLE_LEN / 8 processor entries.
            count += 1;
        }
        off += entry_len;
    }
    Ok(count)
}

/// Number of enabled processors described by the ACPI tables the RSDP at `rsdp` leads to
/// (at least 1 on success).
pub fn cpu_count(mem: &impl PhysRead, rsdp: u64) -> Result<u32, AcpiError> {
    let (root, signature, entry_size) = root_table(mem, rsdp)?;
    let len = table(mem, root, signature)?;
    let entries = (len - SDT_HEADER_LEN) / entry_size;
    if entries > MAX_TABLES {
        return Err(AcpiError::BadLength);
    }
    for i in 0..entries {
        let off = u64::from(SDT_HEADER_LEN + i * entry_size);
        let addr = if entry_size == 8 {
            read::<U64>(mem, root, off)?.get()
        } else {
            read::<U32>(mem, root, off)?.get().into()
        };
        // Tables we cannot reach (or null entries) cannot be the MADT we can use; skip them
        // rather than fail, the MADT may come later.
        if addr == 0 {
            continue;
        }
        let Ok(sig) = read::<[u8; 4]>(mem, addr, offset_of!(SdtHeader, signature) as u64) else {
            continue;
        };
        if sig == MADT_SIGNATURE {
            return match madt_cpu_count(mem, addr)? {
                0 => Err(AcpiError::NoProcessors),
                n => Ok(n),
            };
        }
    }
    Err(AcpiError::NoMadt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvdef::loader_data::acpi::RSDP_V1_LEN;

    /// Physical memory `[base, base + bytes.len())`; everything else is unreadable.
    struct Mem {
        base: u64,
        bytes: Vec<u8>,
    }

    impl PhysRead for Mem {
        fn read(&self, paddr: u64, buf: &mut [u8]) -> bool {
            let Some(start) = paddr.checked_sub(self.base) else {
                return false;
            };
            let Ok(start) = usize::try_from(start) else {
                return false;
            };
            match self.bytes.get(start..start.saturating_add(buf.len())) {
                Some(src) if src.len() == buf.len() => {
                    buf.copy_from_slice(src);
                    true
                }
                _ => false,
            }
        }
    }

    const BASE: u64 = 0xe_0000;
    const RSDP: usize = 0x0;
    const XSDT: usize = 0x40;
    const RSDT: usize = 0x100;
    const MADT: usize = 0x200;
    const MADT2: usize = 0x400;
    const FACP: usize = 0x600;

    fn fix_checksum(bytes: &mut [u8], at: usize) {
        bytes[at] = 0;
        let sum = bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b));
        bytes[at] = sum.wrapping_neg();
    }

    fn sdt(signature: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend(signature);
        t.extend((SDT_HEADER_LEN + body.len() as u32).to_le_bytes());
        t.push(1); // revision
        t.push(0); // checksum
        t.extend(b"TESTOE"); // OEM ID
        t.extend(b"TESTTABL"); // OEM table ID
        t.extend(1u32.to_le_bytes());
        t.extend(b"TEST");
        t.extend(1u32.to_le_bytes());
        t.extend(body);
        fix_checksum(&mut t, 9);
        t
    }

    fn lapic(id: u8, flags: u32) -> Vec<u8> {
        let mut e = vec![MADT_LOCAL_APIC, 8, id, id];
        e.extend(flags.to_le_bytes());
        e
    }

    fn x2apic(id: u32, flags: u32) -> Vec<u8> {
        let mut e = vec![MADT_LOCAL_X2APIC, 16, 0, 0];
        e.extend(id.to_le_bytes());
        e.extend(flags.to_le_bytes());
        e.extend(id.to_le_bytes()); // ACPI processor UID
        e
    }

    fn madt(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(0xfee0_0000u32.to_le_bytes());
        // PCAT_COMPAT, then an I/O APIC entry, which must be skipped.
        body.extend(1u32.to_le_bytes());
        body.extend([1, 12, 0, 0]);
        body.extend(0xfec0_0000u32.to_le_bytes());
        body.extend(0u32.to_le_bytes());
        for e in entries {
            body.extend(e);
        }
        sdt(b"APIC", &body)
    }

    fn rsdp(revision: u8, rsdt: u32, xsdt: u64) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend(RSDP_SIGNATURE);
        r.push(0);
        r.extend(b"TESTOE");
        r.push(revision);
        r.extend(rsdt.to_le_bytes());
        if revision >= 2 {
            r.extend(36u32.to_le_bytes());
            r.extend(xsdt.to_le_bytes());
            r.extend([0; 4]);
            fix_checksum(&mut r[..20], 8);
            fix_checksum(&mut r, 32);
        } else {
            fix_checksum(&mut r, 8);
        }
        r
    }

    fn place(mem: &mut Vec<u8>, at: usize, bytes: &[u8]) {
        if mem.len() < at + bytes.len() {
            mem.resize(at + bytes.len(), 0);
        }
        mem[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn addr(off: usize) -> u64 {
        BASE + off as u64
    }

    /// RSDP rev 2 -> XSDT -> [FACP, MADT with 4 enabled + 1 disabled + 1 online-capable LAPIC];
    /// also an RSDT -> MADT2 with 2 CPUs, which must be ignored in favour of the XSDT.
    fn image() -> Mem {
        let mut m = Vec::new();
        place(&mut m, RSDP, &rsdp(2, addr(RSDT) as u32, addr(XSDT)));
        let mut xsdt_body = Vec::new();
        xsdt_body.extend(addr(FACP).to_le_bytes());
        xsdt_body.extend(addr(MADT).to_le_bytes());
        place(&mut m, XSDT, &sdt(b"XSDT", &xsdt_body));
        place(
            &mut m,
            RSDT,
            &sdt(b"RSDT", &(addr(MADT2) as u32).to_le_bytes()),
        );
        let cpus: Vec<Vec<u8>> = vec![
            lapic(0, 1),
            lapic(1, 1),
            lapic(2, 0),
            lapic(3, 1),
            lapic(4, 3),
            lapic(5, 2),
        ];
        place(&mut m, MADT, &madt(&cpus));
        place(&mut m, MADT2, &madt(&[lapic(0, 1), x2apic(300, 1)]));
        place(&mut m, FACP, &sdt(b"FACP", &[0; 8]));
        Mem {
            base: BASE,
            bytes: m,
        }
    }

    #[test]
    fn counts_enabled_cpus_through_xsdt() {
        assert_eq!(cpu_count(&image(), addr(RSDP)), Ok(4));
    }

    #[test]
    fn rsdt_only_revision_0() {
        let mut mem = image();
        // A 20-byte ACPI 1.0 RSDP at the very end of memory: nothing past it may be read.
        let end = mem.bytes.len();
        place(&mut mem.bytes, end, &rsdp(0, addr(RSDT) as u32, 0));
        assert_eq!(cpu_count(&mem, addr(end)), Ok(2));
        // Revision 2 without an XSDT falls back to the RSDT too.
        place(&mut mem.bytes, RSDP, &rsdp(2, addr(RSDT) as u32, 0));
        assert_eq!(cpu_count(&mem, addr(RSDP)), Ok(2));
        place(&mut mem.bytes, RSDP, &rsdp(2, 0, 0));
        assert_eq!(cpu_count(&mem, addr(RSDP)), Err(AcpiError::NoRootTable));
    }

    #[test]
    fn counts_x2apic_entries() {
        let mut mem = image();
        let cpus = [lapic(0, 1), x2apic(256, 1), x2apic(257, 0), x2apic(258, 1)];
        place(&mut mem.bytes, MADT, &madt(&cpus));
        assert_eq!(cpu_count(&mem, addr(RSDP)), Ok(3));
    }

    #[test]
    fn rejects_bad_checksums_and_signatures() {
        let mem = image();
        for (at, err) in [
            (RSDP + 8, AcpiError::BadChecksum),  // RSDP checksum
            (RSDP + 32, AcpiError::BadChecksum), // extended checksum
            (RSDP, AcpiError::BadSignature),
            (XSDT + 9, AcpiError::BadChecksum),
            (XSDT, AcpiError::BadSignature),
            (MADT + 9, AcpiError::BadChecksum),
        ] {
            let mut bad = Mem {
                base: BASE,
                bytes: mem.bytes.clone(),
            };
            bad.bytes[at] ^= 0x55;
            assert_eq!(cpu_count(&bad, addr(RSDP)), Err(err), "byte {at:#x}");
        }
        assert_eq!(
            cpu_count(&mem, addr(RSDP) + 1),
            Err(AcpiError::BadSignature)
        );
        assert_eq!(cpu_count(&mem, 0), Err(AcpiError::Unreadable));
        assert_eq!(cpu_count(&mem, u64::MAX - 3), Err(AcpiError::Unreadable));
    }

    #[test]
    fn rejects_malformed_madt_entries() {
        let zero_len = vec![MADT_LOCAL_APIC, 0, 0, 0, 1, 0, 0, 0];
        let one_len = vec![0x7f, 1];
        let short_lapic = vec![MADT_LOCAL_APIC, 6, 0, 0, 1, 0];
        let short_x2apic = vec![MADT_LOCAL_X2APIC, 12, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
        let past_end = vec![MADT_LOCAL_APIC, 9, 0, 0, 1, 0, 0, 0];
        let lone_byte = vec![MADT_LOCAL_APIC];
        for entry in [
            zero_len,
            one_len,
            short_lapic,
            short_x2apic,
            past_end,
            lone_byte,
        ] {
            let mut mem = image();
            place(&mut mem.bytes, MADT, &madt(&[lapic(0, 1), entry.clone()]));
            assert_eq!(
                cpu_count(&mem, addr(RSDP)),
                Err(AcpiError::BadMadtEntry),
                "{entry:?}"
            );
        }
        let mut mem = image();
        place(&mut mem.bytes, MADT, &madt(&[lapic(0, 0)]));
        assert_eq!(cpu_count(&mem, addr(RSDP)), Err(AcpiError::NoProcessors));
    }

    /// An RSDP whose ACPI 1.0 part is whole but whose 2.0 fields are cut off by the end of
    /// memory, or that claims to be shorter than its own fields: never read past what is
    /// there.
    #[test]
    fn rsdp_cut_short_or_too_short() {
        let mut mem = image();
        let end = mem.bytes.len();
        let r = rsdp(2, addr(RSDT) as u32, addr(XSDT));
        for keep in [RSDP_V1_LEN, RSDP_V1_LEN + 2, RSDP_V1_LEN + 4, 35] {
            let mut cut = Mem {
                base: BASE,
                bytes: mem.bytes.clone(),
            };
            place(&mut cut.bytes, end, &r[..keep]);
            assert_eq!(
                cpu_count(&cut, addr(end)),
                Err(AcpiError::Unreadable),
                "{keep} bytes"
            );
        }
        // A length below the 36 bytes its own fields take.
        let mut short = r.clone();
        short[20..24].copy_from_slice(&24u32.to_le_bytes());
        fix_checksum(&mut short[..20], 8);
        fix_checksum(&mut short, 32);
        place(&mut mem.bytes, end, &short);
        assert_eq!(cpu_count(&mem, addr(end)), Err(AcpiError::BadLength));
    }

    #[test]
    fn rejects_bad_lengths() {
        // MADT claiming to run past the end of memory.
        let mut mem = image();
        let mut t = madt(&[lapic(0, 1)]);
        t[4..8].copy_from_slice(&0x10_0000u32.to_le_bytes());
        place(&mut mem.bytes, MADT, &t);
        assert_eq!(cpu_count(&mem, addr(RSDP)), Err(AcpiError::BadLength));
        t[4..8].copy_from_slice(&0x1_0000u32.to_le_bytes());
        place(&mut mem.bytes, MADT, &t);
        assert_eq!(cpu_count(&mem, addr(RSDP)), Err(AcpiError::Unreadable));
        // Shorter than a header, and a MADT without room for its fixed fields.
        t[4..8].copy_from_slice(&8u32.to_le_bytes());
        place(&mut mem.bytes, MADT, &t);
        assert_eq!(cpu_count(&mem, addr(RSDP)), Err(AcpiError::BadLength));
        place(&mut mem.bytes, MADT, &sdt(b"APIC", &[0; 4]));
        assert_eq!(cpu_count(&mem, addr(RSDP)), Err(AcpiError::BadLength));
    }

    #[test]
    fn root_table_loops_and_holes_end_the_walk() {
        let mut mem = image();
        // XSDT entries: itself, null, an unreadable address, the RSDP; none is a MADT.
        let mut body = Vec::new();
        for a in [addr(XSDT), 0, u64::MAX, addr(RSDP)] {
            body.extend(a.to_le_bytes());
        }
        place(&mut mem.bytes, XSDT, &sdt(b"XSDT", &body));
        assert_eq!(cpu_count(&mem, addr(RSDP)), Err(AcpiError::NoMadt));
        // Too many entries to look at.
        let big = vec![0u8; (MAX_TABLES as usize + 1) * 8];
        let end = mem.bytes.len();
        place(&mut mem.bytes, end, &sdt(b"XSDT", &big));
        place(&mut mem.bytes, RSDP, &rsdp(2, 0, addr(end)));
        assert_eq!(cpu_count(&mem, addr(RSDP)), Err(AcpiError::BadLength));
    }

    #[test]
    fn corrupted_images_never_panic() {
        let good = image();
        let check = |bytes: Vec<u8>| {
            let mem = Mem { base: BASE, bytes };
            if let Ok(n) = cpu_count(&mem, addr(RSDP)) {
                assert!(n >= 1);
            }
        };
        for i in 0..good.bytes.len() {
            for pattern in [0x01, 0x80, 0xff] {
                let mut bad = good.bytes.clone();
                bad[i] ^= pattern;
                check(bad);
            }
            for value in [0x00, 0x01, 0x02, 0xff] {
                let mut bad = good.bytes.clone();
                bad[i] = value;
                check(bad);
            }
        }
        // Random multi-byte corruption (xorshift, fixed seed for reproducibility).
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let mut bad = good.bytes.clone();
            for _ in 0..(next() % 8 + 1) {
                let i = (next() % bad.len() as u64) as usize;
                bad[i] = next() as u8;
            }
            check(bad);
        }
        // Every truncation of memory.
        for len in 0..good.bytes.len() {
            check(good.bytes[..len].to_vec());
        }
    }
}
