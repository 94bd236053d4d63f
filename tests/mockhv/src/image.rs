//! What the tests read from a paravisor image: its arch, its symbols (`__image_start`, the
//! per-CPU arrays, ...) and the pages its loadable segments occupy.

use crate::qemu::Arch;
use anyhow::{bail, Context, Result};
use object::{Object, ObjectSegment, ObjectSymbol};
use std::collections::BTreeMap;
use std::path::Path;

/// A parsed image: its arch and symbols, and the pages it occupies.
pub struct Image {
    pub arch: Arch,
    pub symbols: BTreeMap<String, u64>,
    /// The pages the loadable segments occupy (lowest segment start rounded down to a page,
    /// highest segment end, memory size so BSS included, rounded up): what the image owns once
    /// loaded, read from the program headers, not from the image's own symbols.
    pub extent: std::ops::Range<u64>,
}

impl Image {
    pub fn load(path: &Path) -> Result<Image> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Image::parse(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn parse(bytes: &[u8]) -> Result<Image> {
        let elf = object::File::parse(bytes)?;
        let arch = match elf.architecture() {
            object::Architecture::X86_64 => Arch::X86_64,
            object::Architecture::Aarch64 => Arch::Aarch64,
            other => bail!("unsupported image architecture {other:?}"),
        };
        let symbols: BTreeMap<String, u64> = elf
            .symbols()
            .filter_map(|s| Some((s.name().ok()?.to_string(), s.address())))
            .collect();
        let page = 0xFFF;
        let start = elf.segments().map(|s| s.address()).min().unwrap_or(0) & !page;
        let end = elf
            .segments()
            .map(|s| s.address() + s.size())
            .max()
            .unwrap_or(0);
        let extent = start..(end + page) & !page;
        Ok(Image {
            arch,
            symbols,
            extent,
        })
    }

    /// The address of the first symbol whose (possibly mangled) name contains `part`.
    pub fn symbol_containing(&self, part: &str) -> Option<u64> {
        self.symbols
            .iter()
            .find(|(name, _)| name.contains(part))
            .map(|(_, &addr)| addr)
    }
}
