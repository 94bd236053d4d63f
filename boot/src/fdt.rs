//! A small flattened-device-tree reader for what the loader passes on aarch64 (command line,
//! CPU count). The blob is loader-controlled: the header and each property's header are read
//! as `hvdef::loader_data::fdt` structs from bounds-checked slices, every offset is checked,
//! and a malformed blob is an error, never a panic.

use crate::loader::read_at;
use core::mem::offset_of;
use hvdef::loader_data::fdt::{FdtHeader, FdtProp};
use hvdef::loader_data::fdt::{
    FDT_BEGIN_NODE as BEGIN_NODE, FDT_END_NODE as END_NODE, FDT_MAGIC as MAGIC, FDT_NOP as NOP,
    FDT_PROP as PROP,
};
use zerocopy::big_endian::U32;

/// Deepest node nesting followed; real trees are a handful of levels deep.
const MAX_DEPTH: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    TooSmall,
    BadMagic,
    BadLayout,
    BadToken,
}

/// A validated device tree blob.
#[derive(Clone, Copy)]
pub struct Fdt<'a> {
    structs: &'a [u8],
    strings: &'a [u8],
}

/// One structure-block item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    Begin(&'a [u8]),
    End,
    Prop(&'a [u8], &'a [u8]),
}

fn be32(bytes: &[u8], off: usize) -> Option<u32> {
    read_at::<U32>(bytes, off).map(U32::get)
}

/// The header's magic, then the whole header: a blob too short for either is TooSmall.
fn header(blob: &[u8]) -> Result<FdtHeader, FdtError> {
    if be32(blob, offset_of!(FdtHeader, magic)).ok_or(FdtError::TooSmall)? != MAGIC {
        return Err(FdtError::BadMagic);
    }
    read_at(blob, 0).ok_or(FdtError::TooSmall)
}

fn cstr(bytes: &[u8], off: usize) -> Option<&[u8]> {
    let rest = bytes.get(off..)?;
    let len = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..len])
}

impl<'a> Fdt<'a> {
    /// Validates the header of `blob` (which may be longer than the tree).
    pub fn new(blob: &'a [u8]) -> Result<Self, FdtError> {
        let h = header(blob)?;
        let total = h.totalsize.get() as usize;
        let (off_struct, off_strings) = (
            h.off_dt_struct.get() as usize,
            h.off_dt_strings.get() as usize,
        );
        let (size_strings, size_struct) = (
            h.size_dt_strings.get() as usize,
            h.size_dt_struct.get() as usize,
        );
        let blob = blob.get(..total).ok_or(FdtError::BadLayout)?;
        let slice = |off: usize, len: usize| {
            blob.get(off..off.checked_add(len)?)
                .ok_or(FdtError::BadLayout)
                .ok()
        };
        Ok(Fdt {
            structs: slice(off_struct, size_struct).ok_or(FdtError::BadLayout)?,
            strings: slice(off_strings, size_strings).ok_or(FdtError::BadLayout)?,
        })
    }

    /// The total size the header claims, to map or copy the blob before parsing it.
    pub fn total_size(header: &[u8]) -> Result<usize, FdtError> {
        if be32(header, offset_of!(FdtHeader, magic)).ok_or(FdtError::TooSmall)? != MAGIC {
            return Err(FdtError::BadMagic);
        }
        // Only the size: the caller maps or copies that much before the whole header is read.
        let total = be32(header, offset_of!(FdtHeader, totalsize)).ok_or(FdtError::TooSmall)?;
        Ok(total as usize)
    }

    fn token(&self, off: usize) -> Result<(Token<'a>, usize), FdtError> {
        let mut off = off;
        loop {
            let tag = be32(self.structs, off).ok_or(FdtError::BadToken)?;
            off += 4;
            let align = |n: usize| (n + 3) & !3;
            return match tag {
                NOP => continue,
                BEGIN_NODE => {
                    let name = cstr(self.structs, off).ok_or(FdtError::BadToken)?;
                    Ok((Token::Begin(name), align(off + name.len() + 1)))
                }
                END_NODE => Ok((Token::End, off)),
                PROP => {
                    let prop: FdtProp = read_at(self.structs, off).ok_or(FdtError::BadToken)?;
                    let len = prop.len.get() as usize;
                    let name = cstr(self.strings, prop.nameoff.get() as usize)
                        .ok_or(FdtError::BadToken)?;
                    let start = off + size_of::<FdtProp>();
                    let value = self
                        .structs
                        .get(start..start.checked_add(len).ok_or(FdtError::BadToken)?)
                        .ok_or(FdtError::BadToken)?;
                    Ok((Token::Prop(name, value), align(start + len)))
                }
                // FDT_END (9) before the root node closed, or an unknown tag.
                _ => Err(FdtError::BadToken),
            };
        }
    }

    /// Calls `f(path_components, property_name, value)` for every property, where
    /// `path_components` are the node names from the root (root's empty name excluded).
    fn walk(&self, mut f: impl FnMut(&[&[u8]], &[u8], &'a [u8])) -> Result<(), FdtError> {
        let mut path: [&[u8]; MAX_DEPTH] = [&[]; MAX_DEPTH];
        let mut depth = 0usize;
        let mut off = 0;
        loop {
            let (token, next) = self.token(off)?;
            off = next;
            match token {
                Token::Begin(name) => {
                    if depth >= MAX_DEPTH {
                        return Err(FdtError::BadLayout);
                    }
                    path[depth] = name;
                    depth += 1;
                }
                Token::End => {
                    depth = depth.checked_sub(1).ok_or(FdtError::BadToken)?;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                Token::Prop(prop, value) => {
                    if depth == 0 {
                        return Err(FdtError::BadToken);
                    }
                    f(&path[1..depth], prop, value)
                }
            }
        }
    }

    /// A property of the node at `path` (like "/chosen"); unit addresses must be spelled out.
    pub fn property(&self, path: &str, name: &str) -> Result<Option<&'a [u8]>, FdtError> {
        let want: &str = path.trim_start_matches('/');
        let mut found: Option<&'a [u8]> = None;
        self.walk(|comps, prop, value| {
            if found.is_none() && prop == name.as_bytes() && path_matches(comps, want) {
                found = Some(value);
            }
        })?;
        Ok(found)
    }

    /// The `reg` ranges of the root's `memory*` nodes (RAM), as (address, size), decoded with the
    /// root's `#address-cells` / `#size-cells` (1 or 2 each). Calls `f` per range.
    pub fn memory(&self, mut f: impl FnMut(u64, u64)) -> Result<(), FdtError> {
        let cells = |name: &str, default: u32| -> Result<usize, FdtError> {
            match self.property("/", name)? {
                None => Ok(default as usize),
                Some(v) if v.len() == 4 => match be32(v, 0) {
                    Some(n @ 1..=2) => Ok(n as usize),
                    _ => Err(FdtError::BadLayout),
                },
                Some(_) => Err(FdtError::BadLayout),
            }
        };
        let (acells, scells) = (cells("#address-cells", 2)?, cells("#size-cells", 1)?);
        let read = |v: &[u8], off: usize, n: usize| -> Option<u64> {
            (0..n).try_fold(0u64, |acc, i| {
                Some((acc << 32) | u64::from(be32(v, off + 4 * i)?))
            })
        };
        let entry = 4 * (acells + scells);
        self.walk(|comps, prop, value| {
            if comps.len() == 1 && comps[0].starts_with(b"memory") && prop == b"reg" {
                for chunk in value.chunks_exact(entry) {
                    if let (Some(addr), Some(size)) =
                        (read(chunk, 0, acells), read(chunk, 4 * acells, scells))
                    {
                        f(addr, size);
                    }
                }
            }
        })
    }

    /// Number of direct children of `/cpus` whose `device_type` is "cpu".
    pub fn cpu_count(&self) -> Result<usize, FdtError> {
        let mut count = 0;
        self.walk(|comps, prop, value| {
            if comps.len() == 2
                && comps[0] == b"cpus"
                && prop == b"device_type"
                && value == b"cpu\0"
            {
                count += 1;
            }
        })?;
        Ok(count)
    }
}

fn path_matches(comps: &[&[u8]], want: &str) -> bool {
    let mut parts = want.split('/').filter(|p| !p.is_empty());
    comps
        .iter()
        .all(|c| parts.next().map(str::as_bytes) == Some(*c))
        && parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    const END: u32 = 9;

    /// Builds a blob: nodes are (depth-first) begin/prop/end items.
    enum Item<'a> {
        Begin(&'a str),
        Prop(&'a str, &'a [u8]),
        End,
    }

    fn build(items: &[Item]) -> Vec<u8> {
        let mut structs = Vec::new();
        let mut strings: Vec<u8> = Vec::new();
        let pad = |v: &mut Vec<u8>| v.resize((v.len() + 3) & !3, 0);
        for item in items {
            match item {
                Item::Begin(name) => {
                    structs.extend(BEGIN_NODE.to_be_bytes());
                    structs.extend(name.as_bytes());
                    structs.push(0);
                    pad(&mut structs);
                }
                Item::Prop(name, value) => {
                    let off = strings.len() as u32;
                    strings.extend(name.as_bytes());
                    strings.push(0);
                    structs.extend(PROP.to_be_bytes());
                    structs.extend((value.len() as u32).to_be_bytes());
                    structs.extend(off.to_be_bytes());
                    structs.extend(*value);
                    pad(&mut structs);
                }
                Item::End => structs.extend(END_NODE.to_be_bytes()),
            }
        }
        structs.extend(END.to_be_bytes());
        let header = 40;
        let total = header + structs.len() + strings.len();
        let mut blob = Vec::new();
        for v in [
            MAGIC,
            total as u32,
            header as u32,
            (header + structs.len()) as u32,
            header as u32,
            17,
            16,
            0,
            strings.len() as u32,
            structs.len() as u32,
        ] {
            blob.extend(v.to_be_bytes());
        }
        blob.extend(structs);
        blob.extend(strings);
        blob
    }

    fn sample(cpus: usize) -> Vec<u8> {
        use Item::*;
        let mut items = vec![
            Begin(""),
            Prop("compatible", b"linux,dummy-virt\0"),
            Prop("#address-cells", &[0, 0, 0, 2]),
            Prop("#size-cells", &[0, 0, 0, 2]),
            Begin("chosen"),
            Prop("bootargs", b"pv.test=panic\0"),
            End,
            Begin("cpus"),
            Prop("#address-cells", &[0, 0, 0, 1]),
        ];
        let names: Vec<String> = (0..cpus).map(|i| format!("cpu@{i}")).collect();
        for name in &names {
            items.push(Begin(name));
            items.push(Prop("device_type", b"cpu\0"));
            items.push(End);
        }
        items.extend([
            End,
            Begin("memory@40000000"),
            Prop("device_type", b"memory\0"),
            Prop(
                "reg",
                &[0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0],
            ),
            End,
            End,
        ]);
        build(&items)
    }

    #[test]
    fn reads_bootargs_and_cpus() {
        let blob = sample(4);
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(
            fdt.property("/chosen", "bootargs").unwrap(),
            Some(&b"pv.test=panic\0"[..])
        );
        assert_eq!(fdt.property("/chosen", "nothing").unwrap(), None);
        assert_eq!(fdt.property("/cpus/cpu@0", "bootargs").unwrap(), None);
        assert_eq!(fdt.cpu_count().unwrap(), 4);
        assert_eq!(Fdt::total_size(&blob).unwrap(), blob.len());
        let mut ram = Vec::new();
        fdt.memory(|a, s| ram.push((a, s))).unwrap();
        assert_eq!(ram, vec![(0x4000_0000, 0x1000_0000)]);
    }

    /// A header cut anywhere before its last field is TooSmall (magic and size alone are not
    /// a header); a property whose length/name-offset pair runs off the structure block, or
    /// whose value does, is BadToken.
    #[test]
    fn truncated_header_and_property() {
        let blob = sample(1);
        for len in 4..40 {
            assert_eq!(
                Fdt::new(&blob[..len]).err(),
                Some(FdtError::TooSmall),
                "{len}"
            );
        }
        assert_eq!(Fdt::total_size(&blob[..7]), Err(FdtError::TooSmall));
        assert_eq!(Fdt::total_size(&blob[..8]), Ok(blob.len()));
        use Item::*;
        let items = [Begin(""), Prop("compatible", b"x\0"), End];
        let whole = build(&items);
        let fdt = Fdt::new(&whole).unwrap();
        assert_eq!(fdt.property("/", "compatible").unwrap(), Some(&b"x\0"[..]));
        // Cut the structure block after the PROP token (8 bytes into it: BEGIN "" pads to 8),
        // then inside the value.
        for size_struct in [12u32, 16, 19, 21] {
            let mut bad = whole.clone();
            bad[36..40].copy_from_slice(&size_struct.to_be_bytes());
            let fdt = Fdt::new(&bad).unwrap();
            assert_eq!(fdt.property("/", "compatible"), Err(FdtError::BadToken));
        }
    }

    #[test]
    fn rejects_malformed_blobs() {
        assert_eq!(Fdt::new(&[0; 8]).err(), Some(FdtError::BadMagic));
        assert_eq!(
            Fdt::new(&MAGIC.to_be_bytes()).err(),
            Some(FdtError::TooSmall)
        );
        let blob = sample(1);
        assert_eq!(
            Fdt::new(&blob[..blob.len() - 1]).err(),
            Some(FdtError::BadLayout)
        );
        // Every truncation of the structure block and every corrupted byte must be an error or
        // a clean answer, never a panic.
        for i in 40..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0xff;
            if let Ok(fdt) = Fdt::new(&bad) {
                let _ = fdt.property("/chosen", "bootargs");
                let _ = fdt.cpu_count();
            }
        }
    }
}
