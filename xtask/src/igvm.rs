//! IGVM image builder and dumper: wraps the static paravisor ELF into an IGVM file whose
//! initial VP context targets VTL2, and pretty-prints IGVM files for inspection.
//!
//! Boot contract (x86_64): the loader starts the BSP in 64-bit long mode at `_start64` with
//! CR3 = `boot_pml4` (the image's static identity map of the first 4 GiB) and GDTR = `boot_gdt`
//! (null, 0x08 code64, 0x10 data). RSI = 0 and RDI is left at its architectural reset value 0:
//! IGVM cannot carry RDI, and the entry treats `rdi == 0` as "started from IGVM" (a PVH
//! start passes a non-zero start-info pointer there). RSP = 0: the entry sets its own stack.
//!
//! Boot contract (aarch64): EL1h, DAIF masked, MMU off, PC = `_start`, X0 = 0 (no device tree),
//! X1 = [`AARCH64_ENTRY_MARKER`] ("started from IGVM": X0 = 0 alone is also a QEMU ELF boot).
//!
//! Boot parameters (both arches; the reader is `boot::igvm`): the image reserves a page-aligned
//! NOLOAD `.igvm_params` section between `boot_igvm_params_start` and `boot_igvm_params_end`
//! (2 pages). The file declares parameter area #0 of that size with no initial data, a
//! `VpCount` parameter at offset [`VP_COUNT_OFFSET`] (the loader writes a u32) and a
//! `MemoryMap` parameter at [`MEMORY_MAP_OFFSET`] (the loader writes
//! `IGVM_VHS_MEMORY_MAP_ENTRY` records, a 0-page record last), and inserts the area at the
//! section's GPA. Those pages get no page data: the insert is what imports them.

use anyhow::{anyhow, bail, Context, Result};
use igvm::hv_defs::Vtl;
use igvm::registers::{AArch64Register, SegmentRegister, TableRegister, X86Register};
use igvm::{Arch, IgvmDirectiveHeader, IgvmFile, IgvmPlatformHeader, IgvmRevision};
use igvm_defs::{
    IgvmPageDataFlags, IgvmPageDataType, IgvmPlatformType, IGVM_VHS_PARAMETER,
    IGVM_VHS_PARAMETER_INSERT, IGVM_VHS_SUPPORTED_PLATFORM, IGVM_VSM_ISOLATION_PLATFORM_VERSION,
    PAGE_SIZE_4K,
};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{elf, Endianness, Object, ObjectSymbol};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::ops::Range;

const PAGE: u64 = PAGE_SIZE_4K;
/// Single platform, so a single compatibility bit shared by every header.
const COMPAT: u32 = 1;
/// A paravisor this big is a linker-script mistake; refusing it keeps a bogus p_memsz from
/// making the page map below exhaust host memory.
const MAX_IMAGE_BYTES: u64 = 1 << 30;

// x86 segment attributes in the hypervisor's packed form (access byte | flags << 12).
// Values match openvmm's x86defs X64_DEFAULT_{CODE,DATA}_SEGMENT_ATTRIBUTES and
// X64_BUSY_TSS_SEGMENT_ATTRIBUTES, which its paravisor loader hands to VTL2.
const CODE64_ATTRIBUTES: u16 = 0xA09B; // G | L | P | S | execute/read, accessed
const DATA_ATTRIBUTES: u16 = 0xC093; // G | D/B | P | S | read/write, accessed
/// Enabling VTL2 can leave TR zeroed instead of at its reset state, which VM entry rejects;
/// openvmm hands over the reset-default busy TSS for the same reason.
const BUSY_TSS_ATTRIBUTES: u16 = 0x8B;
const CR0: u64 = 0x8001_0033; // PG | WP | NE | ET | MP | PE
const CR4: u64 = 0x20; // PAE only: SSE/XSAVE depend on CPUID, so they are the entry's job
const EFER: u64 = 0xD00; // NXE | LMA | LME
const PAT: u64 = 0x0007_0406_0007_0406; // architectural reset default
const CPSR_EL1H_DAIF: u64 = 0x3C5;
/// RES1 bits only (EOS, TSCXT, EIS, SPAN, nTLSMD, LSMAOE): MMU and caches off until the entry
/// has built its own tables.
const SCTLR_EL1: u64 = 0x30D0_0800;

/// The image's parameter pages; `boot::igvm` documents the layout. xtask does not depend on
/// `boot`, so the offsets are repeated here; both sides' tests pin the same golden bytes.
const PARAMS_START: &str = "boot_igvm_params_start";
const PARAMS_END: &str = "boot_igvm_params_end";
const PARAM_AREA_INDEX: u32 = 0;
/// `boot::igvm::VP_COUNT_OFFSET`.
const VP_COUNT_OFFSET: u32 = 0;
/// `boot::igvm::MEMORY_MAP_OFFSET`: the memory map has the second page to itself.
const MEMORY_MAP_OFFSET: u32 = 0x1000;
/// `boot::igvm::AARCH64_ENTRY_MARKER`: `b"IGVMPARM"` read as a little-endian u64.
const AARCH64_ENTRY_MARKER: u64 = u64::from_le_bytes(*b"IGVMPARM");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgvmArch {
    X86_64,
    Aarch64,
}

/// Builds an IGVM file from the paravisor ELF.
pub fn build(elf: &[u8], arch: IgvmArch) -> Result<Vec<u8>> {
    let file =
        ElfFile64::<Endianness>::parse(elf).context("paravisor image is not a 64-bit ELF")?;
    let header = file.elf_header();
    let machine = header.e_machine(file.endian());
    // V1 is implicitly x86-64 and is what every VSM loader accepts; AArch64 needs V2.
    let (want_machine, revision) = match arch {
        IgvmArch::X86_64 => (elf::EM_X86_64, IgvmRevision::V1),
        IgvmArch::Aarch64 => (
            elf::EM_AARCH64,
            IgvmRevision::V2 {
                arch: Arch::AArch64,
                page_size: PAGE as u32,
            },
        ),
    };
    if machine != want_machine {
        bail!("paravisor ELF has e_machine {machine}, expected {want_machine} for {arch:?}");
    }
    // Page data is placed at p_paddr verbatim: a relocatable image would need fix-ups we do not do.
    if header.e_type(file.endian()) != elf::ET_EXEC {
        bail!("paravisor ELF must be a static ET_EXEC image (no relocations)");
    }

    let params = param_region(&file)?;
    let mut directives = page_data(&file, elf, &params)?;
    directives.extend(parameters(&params));
    directives.push(vp_context(&file, arch)?);
    let platform = IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
        compatibility_mask: COMPAT,
        highest_vtl: 2,
        platform_type: IgvmPlatformType::VSM_ISOLATION,
        platform_version: IGVM_VSM_ISOLATION_PLATFORM_VERSION,
        shared_gpa_boundary: 0,
    });
    let igvm = IgvmFile::new(revision, vec![platform], vec![], directives)
        .context("assembling the IGVM file")?;
    let mut out = Vec::new();
    igvm.serialize(&mut out)
        .context("serializing the IGVM file")?;
    Ok(out)
}

/// The physical range of the image's parameter pages, checked to be whole pages and large
/// enough for both parameters.
fn param_region(file: &ElfFile64<'_, Endianness>) -> Result<Range<u64>> {
    let (start_vaddr, start) = symbol_paddr(file, PARAMS_START)?;
    // The end symbol sits one past the section, possibly at the end of its segment, so it is
    // translated through the start symbol's segment rather than looked up on its own.
    let end_vaddr = file
        .symbols()
        .find(|s| s.name() == Ok(PARAMS_END))
        .map(|s| s.address())
        .ok_or_else(|| {
            anyhow!(
                "paravisor ELF has no symbol `{PARAMS_END}` (needed for the IGVM parameter area)"
            )
        })?;
    // An end below the start reads as size 0, which the check below rejects.
    let size = end_vaddr.saturating_sub(start_vaddr);
    if start % PAGE != 0 || size % PAGE != 0 || size <= u64::from(MEMORY_MAP_OFFSET) {
        bail!(
            "IGVM parameter pages `{PARAMS_START}`..`{PARAMS_END}` ({start:#x}, {size:#x} bytes) \
             must be page aligned, whole pages and larger than {MEMORY_MAP_OFFSET:#x} bytes"
        );
    }
    Ok(start..start + size)
}

/// Parameter area #0 over `params`, the VP count and memory map in it, and its insert.
fn parameters(params: &Range<u64>) -> [IgvmDirectiveHeader; 4] {
    use IgvmDirectiveHeader as D;
    let at = |byte_offset| IGVM_VHS_PARAMETER {
        parameter_area_index: PARAM_AREA_INDEX,
        byte_offset,
    };
    [
        D::ParameterArea {
            number_of_bytes: params.end - params.start,
            parameter_area_index: PARAM_AREA_INDEX,
            // No initial data: the loader starts from zeros, so an unwritten parameter reads
            // as "none" (VP count 0, empty memory map).
            initial_data: vec![],
        },
        D::VpCount(at(VP_COUNT_OFFSET)),
        D::MemoryMap(at(MEMORY_MAP_OFFSET)),
        D::ParameterInsert(IGVM_VHS_PARAMETER_INSERT {
            gpa: params.start,
            compatibility_mask: COMPAT,
            parameter_area_index: PARAM_AREA_INDEX,
        }),
    ]
}

/// Page data for every loaded page except the parameter pages, which the parameter insert
/// imports (a page imported twice is a loader error).
fn page_data(
    file: &ElfFile64<'_, Endianness>,
    data: &[u8],
    params: &Range<u64>,
) -> Result<Vec<IgvmDirectiveHeader>> {
    let endian = file.endian();
    // Keyed by GPA so pages shared by adjacent segments merge; an empty Vec is a zero page.
    let mut pages: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut total = 0u64;
    for (i, ph) in file.elf_program_headers().iter().enumerate() {
        let (paddr, filesz, memsz) = (ph.p_paddr(endian), ph.p_filesz(endian), ph.p_memsz(endian));
        if ph.p_type(endian) != elf::PT_LOAD || memsz == 0 {
            continue;
        }
        if filesz > memsz {
            bail!("PT_LOAD #{i}: p_filesz {filesz:#x} exceeds p_memsz {memsz:#x}");
        }
        let bytes = ph
            .data(endian, data)
            .map_err(|()| anyhow!("PT_LOAD #{i}: file range lies outside the ELF"))?;
        let start = paddr & !(PAGE - 1);
        let end = paddr
            .checked_add(memsz)
            .and_then(|e| e.checked_add(PAGE - 1))
            .ok_or_else(|| anyhow!("PT_LOAD #{i}: {paddr:#x} + {memsz:#x} overflows"))?
            & !(PAGE - 1);
        total += end - start;
        if total > MAX_IMAGE_BYTES {
            bail!("loadable segments exceed {MAX_IMAGE_BYTES:#x} bytes (PT_LOAD #{i})");
        }
        let file_end = paddr + filesz;
        for gpa in (start..end).step_by(PAGE as usize) {
            let page = pages.entry(gpa).or_default();
            let (lo, hi) = (gpa.max(paddr), (gpa + PAGE).min(file_end));
            if lo < hi {
                page.resize(PAGE as usize, 0);
                page[(lo - gpa) as usize..(hi - gpa) as usize]
                    .copy_from_slice(&bytes[(lo - paddr) as usize..(hi - paddr) as usize]);
            }
        }
    }
    if pages.is_empty() {
        bail!("paravisor ELF has no non-empty PT_LOAD segment");
    }
    for gpa in params.clone().step_by(PAGE as usize) {
        match pages.remove(&gpa) {
            // Reserving the pages in a loaded segment keeps the linker from putting anything
            // else there; file data would be silently lost to the insert.
            None => bail!("IGVM parameter page {gpa:#x} is outside every PT_LOAD segment"),
            Some(page) if page.iter().any(|&b| b != 0) => {
                bail!("IGVM parameter page {gpa:#x} has file data; it must be NOLOAD")
            }
            Some(_) => {}
        }
    }
    Ok(pages
        .into_iter()
        .map(|(gpa, mut data)| {
            // The crate encodes "no file data" as a zero page, which keeps bss out of the file.
            if data.iter().all(|&b| b == 0) {
                data.clear();
            }
            IgvmDirectiveHeader::PageData {
                gpa,
                compatibility_mask: COMPAT,
                flags: IgvmPageDataFlags::new(),
                data_type: IgvmPageDataType::NORMAL,
                data,
            }
        })
        .collect())
}

/// Returns the symbol's physical address, which also proves it lies in a loaded segment.
fn symbol_paddr(file: &ElfFile64<'_, Endianness>, name: &str) -> Result<(u64, u64)> {
    let vaddr = file
        .symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| s.address())
        .ok_or_else(|| {
            anyhow!("paravisor ELF has no symbol `{name}` (needed for the IGVM VP context)")
        })?;
    let endian = file.endian();
    file.elf_program_headers()
        .iter()
        .filter(|ph| ph.p_type(endian) == elf::PT_LOAD)
        .find_map(|ph| {
            let off = vaddr.checked_sub(ph.p_vaddr(endian))?;
            (off < ph.p_memsz(endian)).then(|| ph.p_paddr(endian) + off)
        })
        .map(|paddr| (vaddr, paddr))
        .ok_or_else(|| anyhow!("symbol `{name}` ({vaddr:#x}) is outside every PT_LOAD segment"))
}

fn vp_context(file: &ElfFile64<'_, Endianness>, arch: IgvmArch) -> Result<IgvmDirectiveHeader> {
    use AArch64Register as A;
    use X86Register as X;
    let (vtl, compatibility_mask) = (Vtl::Vtl2, COMPAT);
    if arch == IgvmArch::Aarch64 {
        // The MMU is off at entry, so PC must be the physical address.
        let (_, pc) = symbol_paddr(file, "_start")?;
        let registers = vec![
            A::Pc(pc),
            A::X0(0),
            A::X1(AARCH64_ENTRY_MARKER),
            A::X2(0),
            A::X3(0),
            A::Cpsr(CPSR_EL1H_DAIF),
            A::SctlrEl1(SCTLR_EL1),
            // Architecturally UNKNOWN at reset; pin them so boots are reproducible.
            A::TcrEl1(0),
            A::MairEl1(0),
            A::Ttbr0El1(0),
            A::Ttbr1El1(0),
            A::VbarEl1(0),
        ];
        return Ok(IgvmDirectiveHeader::AArch64VbsVpContext {
            vtl,
            registers,
            compatibility_mask,
        });
    }
    let (rip, _) = symbol_paddr(file, "_start64")?;
    let (_, cr3) = symbol_paddr(file, "boot_pml4")?;
    let (gdt, _) = symbol_paddr(file, "boot_gdt")?;
    if cr3 % PAGE != 0 {
        bail!("`boot_pml4` ({cr3:#x}) is not 4 KiB aligned");
    }
    let seg = |selector, limit, attributes| SegmentRegister {
        base: 0,
        limit,
        selector,
        attributes,
    };
    let data = seg(0x10, 0xFFFF_FFFF, DATA_ATTRIBUTES);
    // Same order as openvmm's paravisor loader: descriptors before control registers.
    let registers = vec![
        X::Gdtr(TableRegister {
            base: gdt,
            limit: 8 * 3 - 1,
        }),
        X::Ds(data),
        X::Es(data),
        X::Fs(data),
        X::Gs(data),
        X::Ss(data),
        X::Cs(seg(0x08, 0xFFFF_FFFF, CODE64_ATTRIBUTES)),
        X::Tr(seg(0, 0xFFFF, BUSY_TSS_ATTRIBUTES)),
        X::Cr0(CR0),
        X::Cr3(cr3),
        X::Cr4(CR4),
        X::Efer(EFER),
        X::Pat(PAT),
        X::Rflags(0x2),
        X::Rsp(0),
        X::Rsi(0),
        X::Rip(rip),
    ];
    Ok(IgvmDirectiveHeader::X64VbsVpContext {
        vtl,
        registers,
        compatibility_mask,
    })
}

/// Human-readable dump: file header (revision/arch), platforms, VP contexts (each register),
/// page ranges (coalesced contiguous GPA ranges with page counts and data type/flags/
/// compatibility mask), parameter areas, other directives.
pub fn dump(igvm: &[u8]) -> Result<String> {
    use IgvmDirectiveHeader as D;
    let word = |at: usize| Some(u32::from_le_bytes(igvm.get(at..at + 4)?.try_into().ok()?));
    if word(0) != Some(u32::from_le_bytes(*b"IGVM")) {
        bail!("not an IGVM file (bad magic)");
    }
    let version = word(4).ok_or_else(|| anyhow!("truncated IGVM fixed header"))?;
    let arch = match (version, word(24)) {
        (1, _) => "x86_64 (implied by v1)".to_string(),
        (_, Some(0)) => "x86_64".to_string(),
        (_, Some(1)) => "aarch64".to_string(),
        (_, a) => format!("unknown ({a:?})"),
    };
    let file = IgvmFile::new_from_binary(igvm, None).context("parsing the IGVM file")?;

    let mut out = String::new();
    let len = igvm.len();
    writeln!(
        out,
        "IGVM file: {len} bytes, format revision {version}, architecture {arch}"
    )?;
    writeln!(out, "platforms:")?;
    for IgvmPlatformHeader::SupportedPlatform(p) in file.platforms() {
        let (ty, vtl, mask) = (p.platform_type, p.highest_vtl, p.compatibility_mask);
        let (ver, shared) = (p.platform_version, p.shared_gpa_boundary);
        writeln!(
            out,
            "  {ty:?}: highest VTL{vtl}, compatibility mask {mask:#x}, version {ver}, \
             shared GPA boundary {shared:#x}"
        )?;
    }
    for init in file.initializations() {
        writeln!(out, "initialization: {init:x?}")?;
    }

    // A run of pages [start, end) whose (zero?, type, flags, mask) key is identical.
    type Key = (bool, IgvmPageDataType, u32, u32);
    let flush = |out: &mut String, run: &mut Option<(u64, u64, Key)>| -> std::fmt::Result {
        let Some((start, end, (zero, ty, flags, mask))) = run.take() else {
            return Ok(());
        };
        let (n, kind) = ((end - start) / PAGE, if zero { "zero" } else { "data" });
        writeln!(
            out,
            "  pages {start:#x}..{end:#x} ({n} pages) {ty:?} {kind}, flags {flags:#x}, \
             compatibility mask {mask:#x}"
        )
    };
    let mut run = None;
    writeln!(out, "directives:")?;
    for d in file.directives() {
        if let D::PageData {
            gpa,
            compatibility_mask,
            flags,
            data_type,
            data,
        } = d
        {
            let key = (
                data.is_empty(),
                *data_type,
                flags.into_bits(),
                *compatibility_mask,
            );
            match &mut run {
                Some((_, end, k)) if *end == *gpa && *k == key => *end += PAGE,
                _ => {
                    flush(&mut out, &mut run)?;
                    run = Some((*gpa, gpa + PAGE, key));
                }
            }
            continue;
        }
        flush(&mut out, &mut run)?;
        match d {
            D::X64VbsVpContext {
                vtl,
                registers,
                compatibility_mask: mask,
            } => {
                writeln!(
                    out,
                    "  VP context VTL{} (x86_64, compatibility mask {mask:#x}):",
                    *vtl as u8
                )?;
                for r in registers {
                    writeln!(out, "    {}", x86_register(r, *vtl))?;
                }
            }
            D::AArch64VbsVpContext {
                vtl,
                registers,
                compatibility_mask: mask,
            } => {
                writeln!(
                    out,
                    "  VP context VTL{} (aarch64, compatibility mask {mask:#x}):",
                    *vtl as u8
                )?;
                for r in registers {
                    let raw = r.into_vbs_vp_context_reg(*vtl).register_value;
                    writeln!(out, "    {:<10} {:#x}", variant_name(r), low_u64(&raw))?;
                }
            }
            D::ParameterArea {
                number_of_bytes: n,
                parameter_area_index: i,
                initial_data,
            } => {
                let init = initial_data.len();
                writeln!(
                    out,
                    "  parameter area #{i}: {n:#x} bytes, {init} bytes initial data"
                )?;
            }
            D::VpCount(p) | D::MemoryMap(p) => {
                let what = if matches!(d, D::VpCount(_)) {
                    "VP count"
                } else {
                    "memory map"
                };
                let (i, off) = (p.parameter_area_index, p.byte_offset);
                writeln!(out, "  {what} parameter: area #{i} offset {off:#x}")?;
            }
            D::ParameterInsert(p) => {
                let (i, gpa, mask) = (p.parameter_area_index, p.gpa, p.compatibility_mask);
                writeln!(
                    out,
                    "  parameter insert: area #{i} at GPA {gpa:#x}, compatibility mask {mask:#x}"
                )?;
            }
            // Everything this builder never emits.
            other => writeln!(out, "  {other:x?}")?,
        }
    }
    flush(&mut out, &mut run)?;
    Ok(out)
}

fn variant_name(v: &impl std::fmt::Debug) -> String {
    let s = format!("{v:?}");
    s.split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_string()
}

fn low_u64(raw: &[u8; 16]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&raw[..8]);
    u64::from_ne_bytes(b)
}

fn x86_register(r: &X86Register, vtl: Vtl) -> String {
    use X86Register as X;
    let name = variant_name(r);
    match r {
        X::Gdtr(t) | X::Idtr(t) => format!("{name:<10} base {:#x} limit {:#x}", t.base, t.limit),
        X::Cs(s) | X::Ds(s) | X::Es(s) | X::Fs(s) | X::Gs(s) | X::Ss(s) | X::Tr(s) => format!(
            "{name:<10} selector {:#x} base {:#x} limit {:#x} attributes {:#x}",
            s.selector, s.base, s.limit, s.attributes
        ),
        _ => {
            let raw = r.into_vbs_vp_context_reg(vtl).register_value;
            format!("{name:<10} {:#x}", low_u64(&raw))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG1: u64 = 0x10_0000;
    const SEG2: u64 = 0x20_0010; // unaligned bss-only segment: pages 0x200000..0x203000
    /// The parameter pages: the last two pages of SEG2, as the linker scripts place them.
    const PARAMS: u64 = 0x20_1000;
    const PARAM_SYMS: [(&str, u64); 2] = [(PARAMS_START, PARAMS), (PARAMS_END, PARAMS + 0x2000)];

    /// Minimal static ELF64: two PT_LOADs (data+bss at SEG1, pure bss at SEG2) and a symtab
    /// whose string table doubles as the section-name table.
    fn test_elf(machine: u16, syms: &[(&str, u64)]) -> Vec<u8> {
        let (filesz, memsz1, memsz2) = (0x1800u64, 0x2800u64, 0x2000u64);
        let (data_off, sym_off) = (0x1000u64, 0x1000 + filesz);
        let mut strtab = vec![0u8];
        let mut symtab = vec![0u8; 24];
        for (name, value) in syms {
            symtab.extend((strtab.len() as u32).to_le_bytes());
            symtab.extend([0x12, 0]); // STB_GLOBAL | STT_FUNC
            symtab.extend(0xFFF1u16.to_le_bytes()); // SHN_ABS
            symtab.extend(value.to_le_bytes());
            symtab.extend(0u64.to_le_bytes());
            strtab.extend(name.as_bytes());
            strtab.push(0);
        }
        let str_off = sym_off + symtab.len() as u64;
        let sh_off = (str_off + strtab.len() as u64 + 7) & !7;

        let mut e = b"\x7fELF\x02\x01\x01".to_vec();
        e.resize(16, 0);
        e.extend(2u16.to_le_bytes()); // ET_EXEC
        e.extend(machine.to_le_bytes());
        e.extend(1u32.to_le_bytes());
        e.extend(SEG1.to_le_bytes()); // e_entry
        e.extend(64u64.to_le_bytes()); // e_phoff
        e.extend(sh_off.to_le_bytes());
        e.extend(0u32.to_le_bytes());
        for v in [64u16, 56, 2, 64, 3, 2] {
            e.extend(v.to_le_bytes());
        }
        for (paddr, off, fsz, msz) in [(SEG1, data_off, filesz, memsz1), (SEG2, 0, 0, memsz2)] {
            e.extend(1u32.to_le_bytes()); // PT_LOAD
            e.extend(7u32.to_le_bytes());
            for v in [off, paddr, paddr, fsz, msz, 0x1000] {
                e.extend(v.to_le_bytes());
            }
        }
        e.resize(data_off as usize, 0);
        e.extend((0..filesz).map(|i| (i % 251) as u8 | 1));
        e.extend(&symtab);
        e.extend(&strtab);
        e.resize(sh_off as usize, 0);
        e.extend([0u8; 64]);
        // (type, offset, size, link, info, entsize): SHT_SYMTAB then SHT_STRTAB.
        for (ty, off, size, link, info, ent) in [
            (2u32, sym_off, symtab.len() as u64, 2u32, 1u32, 24u64),
            (3, str_off, strtab.len() as u64, 0, 0, 0),
        ] {
            e.extend([0u8; 4]);
            e.extend(ty.to_le_bytes());
            for v in [0u64, 0, off, size] {
                e.extend(v.to_le_bytes());
            }
            e.extend(link.to_le_bytes());
            e.extend(info.to_le_bytes());
            e.extend([1u64, ent].iter().flat_map(|v| v.to_le_bytes()));
        }
        e
    }

    fn x86_syms() -> Vec<(&'static str, u64)> {
        let mut syms = vec![
            ("_start64", SEG1),
            ("boot_pml4", SEG1 + 0x1000),
            ("boot_gdt", SEG1 + 0x800),
        ];
        syms.extend(PARAM_SYMS);
        syms
    }

    fn x86_elf() -> Vec<u8> {
        test_elf(elf::EM_X86_64, &x86_syms())
    }

    /// An x86 ELF whose parameter symbols are `start`..`end` (None: symbol absent).
    fn x86_elf_with_params(start: Option<u64>, end: Option<u64>) -> Vec<u8> {
        let mut syms: Vec<_> = x86_syms()
            .into_iter()
            .filter(|(n, _)| !n.starts_with("boot_igvm_params"))
            .collect();
        syms.extend(start.map(|v| (PARAMS_START, v)));
        syms.extend(end.map(|v| (PARAMS_END, v)));
        test_elf(elf::EM_X86_64, &syms)
    }

    fn parse(bytes: &[u8]) -> IgvmFile {
        IgvmFile::new_from_binary(bytes, None).expect("round-trip parse")
    }

    /// GPAs of the page-data directives and whether each is a zero page.
    fn page_gpas(f: &IgvmFile) -> Vec<(u64, bool)> {
        let pages = f.directives().iter().filter_map(|d| match d {
            IgvmDirectiveHeader::PageData {
                gpa,
                data,
                compatibility_mask: 1,
                ..
            } => Some((*gpa, data.is_empty())),
            _ => None,
        });
        pages.collect()
    }

    /// SEG1: two data pages then its bss tail; SEG2: three bss pages after rounding, of which
    /// the last two are the parameter pages and get no page data.
    fn expected_pages() -> Vec<(u64, bool)> {
        let data = [0x100000, 0x101000].map(|g| (g, false));
        let zero = [0x102000, 0x200000].map(|g| (g, true));
        data.into_iter().chain(zero).collect()
    }

    #[test]
    fn x86_roundtrip() {
        let f = parse(&build(&x86_elf(), IgvmArch::X86_64).expect("build"));
        let [IgvmPlatformHeader::SupportedPlatform(p)] = f.platforms() else {
            panic!("one platform")
        };
        assert_eq!(
            (p.platform_type, p.highest_vtl, p.compatibility_mask),
            (IgvmPlatformType::VSM_ISOLATION, 2, 1)
        );
        assert_eq!(page_gpas(&f), expected_pages());
        let Some(IgvmDirectiveHeader::PageData { data, .. }) = f.directives().first() else {
            panic!()
        };
        assert_eq!(data[..4], [1, 1, 3, 3]); // (i % 251) | 1
        let Some(IgvmDirectiveHeader::X64VbsVpContext { vtl, registers, .. }) =
            f.directives().last()
        else {
            panic!("x86 VP context last")
        };
        assert_eq!(*vtl, Vtl::Vtl2);
        assert!(registers.contains(&X86Register::Rip(SEG1)));
        assert!(registers.contains(&X86Register::Cr3(SEG1 + 0x1000)));
        let gdtr = TableRegister {
            base: SEG1 + 0x800,
            limit: 23,
        };
        assert!(registers.contains(&X86Register::Gdtr(gdtr)));
        assert!(registers.contains(&X86Register::Efer(0xD00)));
        let cs = |r: &X86Register| matches!(r, X86Register::Cs(s) if s.attributes == 0xA09B);
        assert!(registers.iter().any(cs));
    }

    #[test]
    fn aarch64_roundtrip() {
        let syms = [&[("_start", SEG1)][..], &PARAM_SYMS].concat();
        let bytes = build(&test_elf(elf::EM_AARCH64, &syms), IgvmArch::Aarch64).expect("build");
        assert_eq!(bytes[4..8], 2u32.to_le_bytes()); // revision 2
        let f = parse(&bytes);
        assert_eq!(page_gpas(&f), expected_pages());
        let Some(IgvmDirectiveHeader::AArch64VbsVpContext { vtl, registers, .. }) =
            f.directives().last()
        else {
            panic!("aarch64 VP context last")
        };
        assert_eq!(*vtl, Vtl::Vtl2);
        assert!(registers.contains(&AArch64Register::Pc(SEG1)));
        assert!(registers.contains(&AArch64Register::Cpsr(0x3C5)));
        assert!(registers.contains(&AArch64Register::X0(0)));
        // b"IGVMPARM": what boot::igvm::AARCH64_ENTRY_MARKER expects in X1.
        assert!(registers.contains(&AArch64Register::X1(0x4d52_4150_4d56_4749)));
    }

    #[test]
    fn missing_symbol_is_named() {
        let syms = [&[("_start64", SEG1), ("boot_gdt", SEG1)][..], &PARAM_SYMS].concat();
        let elf = test_elf(elf::EM_X86_64, &syms);
        let err = build(&elf, IgvmArch::X86_64).expect_err("must fail");
        assert!(err.to_string().contains("boot_pml4"), "{err:#}");
        for (start, end, name) in [
            (None, Some(PARAMS + 0x2000), PARAMS_START),
            (Some(PARAMS), None, PARAMS_END),
        ] {
            let err =
                build(&x86_elf_with_params(start, end), IgvmArch::X86_64).expect_err("must fail");
            assert!(err.to_string().contains(name), "{err:#}");
        }
    }

    /// The parameter area, both parameters and the insert, in the order the crate and loaders
    /// require (area, usages, insert) and before the VP context.
    #[test]
    fn parameters_declared_and_inserted() {
        use IgvmDirectiveHeader as D;
        let f = parse(&build(&x86_elf(), IgvmArch::X86_64).expect("build"));
        let params: Vec<_> = f
            .directives()
            .iter()
            .filter(|d| !matches!(d, D::PageData { .. }))
            .collect();
        let at = |byte_offset| IGVM_VHS_PARAMETER {
            parameter_area_index: 0,
            byte_offset,
        };
        let insert = IGVM_VHS_PARAMETER_INSERT {
            gpa: PARAMS,
            compatibility_mask: 1,
            parameter_area_index: 0,
        };
        assert_eq!(
            params[..4],
            [
                &D::ParameterArea {
                    number_of_bytes: 0x2000,
                    parameter_area_index: 0,
                    initial_data: vec![],
                },
                &D::VpCount(at(0)),
                &D::MemoryMap(at(0x1000)),
                &D::ParameterInsert(insert),
            ]
        );
        assert!(matches!(params[4], D::X64VbsVpContext { .. }));
        assert_eq!(params.len(), 5);
    }

    #[test]
    fn no_page_data_overlaps_the_parameter_pages() {
        for (elf, arch) in [
            (x86_elf(), IgvmArch::X86_64),
            (
                test_elf(
                    elf::EM_AARCH64,
                    &[&[("_start", SEG1)][..], &PARAM_SYMS].concat(),
                ),
                IgvmArch::Aarch64,
            ),
        ] {
            let f = parse(&build(&elf, arch).expect("build"));
            let overlap = page_gpas(&f)
                .into_iter()
                .filter(|(gpa, _)| (PARAMS..PARAMS + 0x2000).contains(gpa))
                .collect::<Vec<_>>();
            assert_eq!(overlap, [], "{arch:?}");
        }
    }

    #[test]
    fn bad_parameter_regions_are_errors() {
        for (start, end, needle) in [
            // Unaligned, one page only, inverted.
            (PARAMS + 0x10, PARAMS + 0x2010, "page aligned"),
            (PARAMS, PARAMS + 0x1000, "page aligned"),
            (PARAMS + 0x1000, PARAMS, "page aligned"),
            // Over SEG1's data pages: the insert would silently replace file data.
            (SEG1, SEG1 + 0x2000, "has file data"),
            // Running past SEG2: not reserved by the image.
            (0x20_2000, 0x20_4000, "outside every PT_LOAD"),
            // Not in any segment at all.
            (0x30_0000, 0x30_2000, "outside every PT_LOAD"),
        ] {
            let elf = x86_elf_with_params(Some(start), Some(end));
            let err = build(&elf, IgvmArch::X86_64).expect_err("must fail");
            assert!(err.to_string().contains(needle), "{start:#x}: {err:#}");
        }
    }

    /// Plays the loader for the parameter area: zeroed, then the VP count and
    /// `IGVM_VHS_MEMORY_MAP_ENTRY` records (laid out by igvm_defs' own struct) at the offsets
    /// the file names. The result must be byte for byte what `boot::igvm`'s golden test reads
    /// as "2 VPs, RAM 1 MiB + 0x3f00 pages".
    #[test]
    fn simulated_loader_writes_what_boot_reads() {
        use igvm_defs::{MemoryMapEntryType, IGVM_VHS_MEMORY_MAP_ENTRY as E};
        use std::mem::{offset_of, size_of};
        let f = parse(&build(&x86_elf(), IgvmArch::X86_64).expect("build"));
        let mut area = Vec::new();
        let (mut vp_at, mut map_at, mut gpa) = (None, None, None);
        for d in f.directives() {
            match d {
                IgvmDirectiveHeader::ParameterArea {
                    number_of_bytes, ..
                } => area = vec![0u8; *number_of_bytes as usize],
                IgvmDirectiveHeader::VpCount(p) => vp_at = Some(p.byte_offset as usize),
                IgvmDirectiveHeader::MemoryMap(p) => map_at = Some(p.byte_offset as usize),
                IgvmDirectiveHeader::ParameterInsert(p) => gpa = Some(p.gpa),
                _ => {}
            }
        }
        let (vp_at, map_at) = (vp_at.expect("VpCount"), map_at.expect("MemoryMap"));
        assert_eq!(gpa, Some(PARAMS));
        area[vp_at..vp_at + 4].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(size_of::<E>(), 24);
        let mut put = |field: usize, bytes: &[u8]| {
            area[map_at + field..map_at + field + bytes.len()].copy_from_slice(bytes)
        };
        put(
            offset_of!(E, starting_gpa_page_number),
            &0x100u64.to_le_bytes(),
        );
        put(offset_of!(E, number_of_pages), &0x3f00u64.to_le_bytes());
        put(
            offset_of!(E, entry_type),
            &MemoryMapEntryType::MEMORY.0.to_le_bytes(),
        );
        put(offset_of!(E, flags), &1u16.to_le_bytes());

        let mut golden = vec![0u8; 0x2000];
        golden[..4].copy_from_slice(&[2, 0, 0, 0]);
        golden[0x1000..0x1018].copy_from_slice(&[
            0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x00, 0x3f, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0,
        ]);
        assert_eq!(area, golden);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(build(&x86_elf(), IgvmArch::Aarch64).is_err());
        assert!(build(b"not an elf", IgvmArch::X86_64).is_err());
        assert!(dump(b"IGVMjunk").is_err());
        assert!(dump(&[]).is_err());
    }

    #[test]
    fn dump_mentions_platform_vtl_and_ranges() {
        let text = dump(&build(&x86_elf(), IgvmArch::X86_64).expect("build")).expect("dump");
        for needle in [
            "format revision 1",
            "VSM_ISOLATION: highest VTL2",
            "VP context VTL2",
            "pages 0x100000..0x102000 (2 pages) NORMAL data",
            "pages 0x102000..0x103000 (1 pages) NORMAL zero",
            "pages 0x200000..0x201000 (1 pages) NORMAL zero",
            "Rip        0x100000",
            "Cs         selector 0x8 base 0x0 limit 0xffffffff attributes 0xa09b",
            "parameter area #0: 0x2000 bytes, 0 bytes initial data",
            "VP count parameter: area #0 offset 0x0",
            "memory map parameter: area #0 offset 0x1000",
            "parameter insert: area #0 at GPA 0x201000, compatibility mask 0x1",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }
}
