//! Tells the paravisor the guest's RAM through the device tree: QEMU describes the whole
//! machine, but the host keeps 16 MiB of it for itself (outside stage 2), so the paravisor must
//! not count them as memory it can hand to VTL0. The first top-level `memory` node's `reg` (one
//! 2+2-cell entry, as QEMU virt writes it for one NUMA node) is replaced by one entry per guest
//! RAM range; the blob grows in place when there are more (the rest of it moves up). Anything
//! malformed is an error, never a panic.

use core::mem::{offset_of, size_of};
use core::ops::Range;
use hvdef::loader_data::fdt::{
    FdtHeader, FdtProp, FDT_BEGIN_NODE as BEGIN_NODE, FDT_END as END, FDT_END_NODE as END_NODE,
    FDT_MAGIC as MAGIC, FDT_NOP as NOP, FDT_PROP as PROP,
};
use zerocopy::big_endian::U32;
use zerocopy::{FromBytes, IntoBytes};

/// Why the device tree was left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    BadHeader,
    Truncated,
    NoMemoryNode,
    /// The memory node's `reg` is not one (address, size) pair of 2+2 cells.
    UnsupportedReg,
    /// The guest's RAM is not all inside the node's range (or there is none).
    Unchanged,
    /// No room for the larger blob.
    NoRoom,
}

fn be32(b: &[u8], at: usize) -> Result<u32, FdtError> {
    let bytes = b.get(at..at + 4).ok_or(FdtError::Truncated)?;
    Ok(u32::from_be_bytes(bytes.try_into().expect("4 bytes")))
}

fn be64(b: &[u8], at: usize) -> Result<u64, FdtError> {
    let bytes = b.get(at..at + 8).ok_or(FdtError::Truncated)?;
    Ok(u64::from_be_bytes(bytes.try_into().expect("8 bytes")))
}

/// The NUL-terminated string at `at`.
fn cstr(b: &[u8], at: usize) -> Result<&[u8], FdtError> {
    let rest = b.get(at..).ok_or(FdtError::Truncated)?;
    let len = rest
        .iter()
        .position(|&c| c == 0)
        .ok_or(FdtError::Truncated)?;
    Ok(&rest[..len])
}

/// The total size the header claims (to bound the blob before `limit_ram` sees it).
pub fn total_size(header: &[u8]) -> Result<usize, FdtError> {
    if be32(header, offset_of!(FdtHeader, magic))? != MAGIC {
        return Err(FdtError::BadHeader);
    }
    Ok(be32(header, offset_of!(FdtHeader, totalsize))? as usize)
}

/// Replaces the memory node's range by `ram` (inside it, ascending); `blob` is the room the
/// tree may grow into, its first bytes the tree. Returns the node's old (base, size).
pub fn set_ram(blob: &mut [u8], ram: &[Range<u64>]) -> Result<(u64, u64), FdtError> {
    let total = total_size(blob)?;
    if total > blob.len() {
        return Err(FdtError::Truncated);
    }
    let (header, _) = FdtHeader::read_from_prefix(blob).map_err(|_| FdtError::Truncated)?;
    let structs = header.off_dt_struct.get() as usize;
    let strings = header.off_dt_strings.get() as usize;
    let mut at = structs;
    let mut depth = 0u32;
    let mut in_memory = false;
    let (len_at, value) = loop {
        let token = be32(blob, at)?;
        at += 4;
        match token {
            BEGIN_NODE => {
                let name = cstr(blob, at)?;
                depth += 1;
                in_memory = depth == 2 && (name == b"memory" || name.starts_with(b"memory@"));
                at = (at + name.len() + 1).next_multiple_of(4);
            }
            END_NODE => {
                depth = depth.checked_sub(1).ok_or(FdtError::Truncated)?;
                in_memory = false;
            }
            PROP => {
                let (prop, _) = blob
                    .get(at..)
                    .and_then(|b| FdtProp::read_from_prefix(b).ok())
                    .ok_or(FdtError::Truncated)?;
                let len = prop.len.get() as usize;
                let name = cstr(blob, strings + prop.nameoff.get() as usize)?;
                let value = at + size_of::<FdtProp>();
                if in_memory && name == b"reg" {
                    if len != 16 {
                        return Err(FdtError::UnsupportedReg);
                    }
                    break (at, value);
                }
                at = (value + len).next_multiple_of(4);
            }
            NOP => {}
            END => return Err(FdtError::NoMemoryNode),
            _ => return Err(FdtError::Truncated),
        }
    };
    let base = be64(blob, value)?;
    let size = be64(blob, value + 8)?;
    let node = base..base.saturating_add(size);
    if ram.is_empty()
        || !ram
            .iter()
            .all(|r| node.start <= r.start && r.start < r.end && r.end <= node.end)
    {
        return Err(FdtError::Unchanged);
    }
    // Everything after the old value moves up by `grow` bytes: the rest of the structure
    // block, the strings (and whatever the header places after the value).
    let grow = 16 * (ram.len() - 1);
    let after = value + 16;
    if total + grow > blob.len() {
        return Err(FdtError::NoRoom);
    }
    blob.copy_within(after..total, after + grow);
    // The header: the sizes grow, and the offsets of the blocks after the value move. The
    // fields are the loader's (only totalsize is checked): wrap, as a u32 field would.
    let mut h = header;
    let grow32 = grow as u32;
    let moved = |v: U32| match v.get() {
        v if v as usize >= after => v.wrapping_add(grow32),
        v => v,
    };
    h.totalsize = h.totalsize.get().wrapping_add(grow32).into();
    h.size_dt_struct = h.size_dt_struct.get().wrapping_add(grow32).into();
    h.off_dt_struct = moved(h.off_dt_struct).into();
    h.off_dt_strings = moved(h.off_dt_strings).into();
    h.off_mem_rsvmap = moved(h.off_mem_rsvmap).into();
    blob[..size_of::<FdtHeader>()].copy_from_slice(h.as_bytes());
    blob[len_at..len_at + 4].copy_from_slice(&((16 * ram.len()) as u32).to_be_bytes());
    for (i, r) in ram.iter().enumerate() {
        let at = value + 16 * i;
        blob[at..at + 8].copy_from_slice(&r.start.to_be_bytes());
        blob[at + 8..at + 16].copy_from_slice(&(r.end - r.start).to_be_bytes());
    }
    Ok((base, size))
}

#[cfg(test)]
// One RAM range is a slice of one range here, not a mistaken `start..end` list.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// A device tree with a root, a `chosen` node and `memory@40000000` (2+2 cells).
    fn blob(reg: &[u8]) -> Vec<u8> {
        let strings = b"bootargs\0reg\0";
        let mut s: Vec<u8> = Vec::new();
        let tok = |s: &mut Vec<u8>, t: u32| s.extend_from_slice(&t.to_be_bytes());
        let name = |s: &mut Vec<u8>, n: &[u8]| {
            s.extend_from_slice(n);
            s.push(0);
            while !s.len().is_multiple_of(4) {
                s.push(0);
            }
        };
        tok(&mut s, BEGIN_NODE);
        name(&mut s, b"");
        tok(&mut s, BEGIN_NODE);
        name(&mut s, b"chosen");
        tok(&mut s, PROP);
        tok(&mut s, 3);
        tok(&mut s, 0);
        name(&mut s, b"ab");
        tok(&mut s, END_NODE);
        tok(&mut s, NOP);
        tok(&mut s, BEGIN_NODE);
        name(&mut s, b"memory@40000000");
        tok(&mut s, PROP);
        tok(&mut s, reg.len() as u32);
        tok(&mut s, 9);
        s.extend_from_slice(reg);
        while !s.len().is_multiple_of(4) {
            s.push(0);
        }
        tok(&mut s, END_NODE);
        tok(&mut s, END_NODE);
        tok(&mut s, END);
        let structs = 40;
        let strings_at = structs + s.len();
        let total = strings_at + strings.len();
        let mut out = Vec::new();
        for word in [MAGIC, total as u32, structs as u32, strings_at as u32] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.resize(structs, 0);
        out.extend_from_slice(&s);
        out.extend_from_slice(strings);
        out
    }

    fn reg(base: u64, size: u64) -> Vec<u8> {
        [base.to_be_bytes(), size.to_be_bytes()].concat()
    }

    /// The `reg` ranges as the paravisor reads them (`boot::fdt`, 2+2 cells).
    fn memory(b: &[u8]) -> Vec<(u64, u64)> {
        let fdt = boot_like_read(b);
        fdt.chunks_exact(16)
            .map(|c| {
                (
                    u64::from_be_bytes(c[..8].try_into().unwrap()),
                    u64::from_be_bytes(c[8..].try_into().unwrap()),
                )
            })
            .collect()
    }

    /// The memory node's `reg` value, found by walking the tree afresh from its header (so
    /// the moved offsets are what is checked).
    fn boot_like_read(b: &[u8]) -> Vec<u8> {
        let structs = be32(b, 8).unwrap() as usize;
        let strings = be32(b, 12).unwrap() as usize;
        assert!(be32(b, 4).unwrap() as usize <= b.len());
        let mut at = structs;
        loop {
            let token = be32(b, at).unwrap();
            at += 4;
            match token {
                BEGIN_NODE => {
                    let name = cstr(b, at).unwrap();
                    at = (at + name.len() + 1).next_multiple_of(4);
                }
                PROP => {
                    let len = be32(b, at).unwrap() as usize;
                    let name = cstr(b, strings + be32(b, at + 4).unwrap() as usize).unwrap();
                    if name == b"reg" {
                        return b[at + 8..at + 8 + len].to_vec();
                    }
                    at = (at + 8 + len).next_multiple_of(4);
                }
                END_NODE | NOP => {}
                _ => panic!("no reg"),
            }
        }
    }

    #[test]
    fn the_memory_node_is_cut_at_the_host() {
        let mut b = blob(&reg(0x4000_0000, 0x1000_0000));
        let before = b.clone();
        assert_eq!(
            set_ram(&mut b, &[0x4000_0000..0x4f00_0000]),
            Ok((0x4000_0000, 0x1000_0000))
        );
        let changed: Vec<usize> = (0..b.len()).filter(|&i| b[i] != before[i]).collect();
        assert_eq!(changed.len(), 1, "only the size's second byte changes");
        assert_eq!(b[changed[0]], 0x0f);
    }

    #[test]
    fn ram_on_both_sides_of_the_host_grows_the_tree() {
        const G: u64 = 1 << 30;
        let tree = blob(&reg(G, 6 * G + (3 << 20)));
        let mut b = tree.clone();
        b.resize(tree.len() + 64, 0xee);
        let ram = [G..0x4f00_0000, 0x5000_0000..7 * G + (3 << 20)];
        assert_eq!(set_ram(&mut b, &ram), Ok((G, 6 * G + (3 << 20))));
        assert_eq!(total_size(&b), Ok(tree.len() + 16));
        assert_eq!(
            memory(&b),
            [
                (G, 0x0f00_0000),
                (0x5000_0000, 6 * G + (3 << 20) - 0x1000_0000)
            ]
        );
        assert_eq!(be32(&b, 36).unwrap(), be32(&tree, 36).unwrap() + 16);
        let strings = be32(&b, 12).unwrap() as usize;
        assert_eq!(
            &b[strings..strings + 13],
            b"bootargs\0reg\0",
            "the strings moved"
        );
        assert_eq!(b[tree.len() + 16], 0xee, "nothing written past the new end");
        let mut tight = tree.clone();
        assert_eq!(set_ram(&mut tight, &ram), Err(FdtError::NoRoom));
        assert_eq!(tight, tree, "left alone");
    }

    #[test]
    fn refusals() {
        let mut small = blob(&reg(0x4000_0000, 0x0800_0000));
        assert_eq!(
            set_ram(&mut small, &[0x4000_0000..0x4f00_0000]),
            Err(FdtError::Unchanged)
        );
        assert_eq!(set_ram(&mut small, &[]), Err(FdtError::Unchanged));
        let mut cells = blob(&reg(0x4000_0000, 0x1000_0000)[4..]);
        assert_eq!(
            set_ram(&mut cells, &[0x4000_0000..0x4f00_0000]),
            Err(FdtError::UnsupportedReg)
        );
        let mut bad = blob(&reg(0x4000_0000, 0x1000_0000));
        bad[0] = 0;
        assert_eq!(
            set_ram(&mut bad, &[0x4000_0000..0x4f00_0000]),
            Err(FdtError::BadHeader)
        );
        let good = blob(&reg(0x4000_0000, 0x1000_0000));
        for cut in [8, 41, good.len() - 1] {
            let mut short = good[..cut].to_vec();
            assert!(set_ram(&mut short, &[0x4000_0000..0x4f00_0000]).is_err());
        }
    }
}
