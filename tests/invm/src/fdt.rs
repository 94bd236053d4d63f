//! Shrinks the device tree's RAM to what the guest really has: QEMU describes the whole
//! machine, but the host keeps its last 16 MiB for itself (outside stage 2), so the paravisor
//! must not count them as memory it can hand to VTL0. Only the first top-level `memory` node's
//! first `reg` entry is rewritten, in place; anything malformed is an error, never a panic.

/// Why the device tree was left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    BadHeader,
    Truncated,
    NoMemoryNode,
    /// The memory node's `reg` is not one (address, size) pair of 2+2 cells.
    UnsupportedReg,
    /// The RAM does not reach `end` (nothing to shrink) or starts above it.
    Unchanged,
}

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;

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
    if be32(header, 0)? != MAGIC {
        return Err(FdtError::BadHeader);
    }
    Ok(be32(header, 4)? as usize)
}

/// Makes the memory node end at `end` at most; returns the (base, old size, new size).
pub fn limit_ram(blob: &mut [u8], end: u64) -> Result<(u64, u64, u64), FdtError> {
    if total_size(blob)? > blob.len() {
        return Err(FdtError::Truncated);
    }
    let structs = be32(blob, 8)? as usize;
    let strings = be32(blob, 12)? as usize;
    let mut at = structs;
    let mut depth = 0u32;
    let mut in_memory = false;
    loop {
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
                let len = be32(blob, at)? as usize;
                let name = cstr(blob, strings + be32(blob, at + 4)? as usize)?;
                let value = at + 8;
                if in_memory && name == b"reg" {
                    if len != 16 {
                        return Err(FdtError::UnsupportedReg);
                    }
                    let base = be64(blob, value)?;
                    let size = be64(blob, value + 8)?;
                    if base >= end || base.saturating_add(size) <= end {
                        return Err(FdtError::Unchanged);
                    }
                    let new = end - base;
                    blob[value + 8..value + 16].copy_from_slice(&new.to_be_bytes());
                    return Ok((base, size, new));
                }
                at = (value + len).next_multiple_of(4);
            }
            NOP => {}
            END => return Err(FdtError::NoMemoryNode),
            _ => return Err(FdtError::Truncated),
        }
    }
}

#[cfg(test)]
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

    #[test]
    fn the_memory_node_is_cut_at_the_host() {
        let mut b = blob(&reg(0x4000_0000, 0x1000_0000));
        let before = b.clone();
        assert_eq!(
            limit_ram(&mut b, 0x4f00_0000),
            Ok((0x4000_0000, 0x1000_0000, 0x0f00_0000))
        );
        let changed: Vec<usize> = (0..b.len()).filter(|&i| b[i] != before[i]).collect();
        assert_eq!(changed.len(), 1, "only the size's second byte changes");
        assert_eq!(b[changed[0]], 0x0f);
    }

    #[test]
    fn refusals() {
        let mut small = blob(&reg(0x4000_0000, 0x0800_0000));
        assert_eq!(limit_ram(&mut small, 0x4f00_0000), Err(FdtError::Unchanged));
        let mut cells = blob(&reg(0x4000_0000, 0x1000_0000)[4..]);
        assert_eq!(
            limit_ram(&mut cells, 0x4f00_0000),
            Err(FdtError::UnsupportedReg)
        );
        let mut bad = blob(&reg(0x4000_0000, 0x1000_0000));
        bad[0] = 0;
        assert_eq!(limit_ram(&mut bad, 0x4f00_0000), Err(FdtError::BadHeader));
        let good = blob(&reg(0x4000_0000, 0x1000_0000));
        for cut in [8, 41, good.len() - 1] {
            let mut short = good[..cut].to_vec();
            assert!(limit_ram(&mut short, 0x4f00_0000).is_err());
        }
    }
}
