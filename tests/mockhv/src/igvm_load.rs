//! Loading the paravisor from its IGVM file, as a VMM's IGVM loader does, for a QEMU that
//! cannot read IGVM itself: the page data, the parameter areas filled with what the loader
//! knows (the VP count, the memory map, the command line), and the VTL2 VP context, here as
//! plain values the runner hands QEMU as loader blobs (`mockhv::invm`).
//!
//! The rules follow OpenVMM's IGVM loader (`openvmm/openvmm_core/src/worker/vm_loaders/igvm.rs`:
//! `vtl2_memory_info`, `vtl2_memory_layout_request`, `load_igvm_x86`) for the directives this
//! paravisor's file uses: one supported platform, VSM isolation with VTL2 the highest VTL, and
//! its compatibility mask selecting the headers; VTL2 memory declared by a `RequiredMemory`
//! with `vtl2_protectable` (`Vtl2MemorySource` without one), its base and size 2 MiB aligned
//! (OpenHCL's `load_openhcl_x64` `MemoryUnaligned`, OpenVMM's `Vtl2MemoryAligned`), every
//! required range inside the guest's RAM (`MissingRequiredMemory`); page data 4 KiB pages (an
//! empty one is a zero page), the VTL0 payload's included (the file does not say which VTL a
//! page is for; the paravisor's VTL0 boot page does); a parameter area zero-filled (or its
//! initial data), a `VpCount` parameter as a u32, a `CommandLine` parameter as the command line
//! and a NUL (`CommandLineContainsNul`, `ParameterTooLarge`), a `MemoryMap` parameter as
//! `IGVM_VHS_MEMORY_MAP_ENTRY` records (`build_memory_map`: RAM as MEMORY, the VTL2-protectable
//! required memory as VTL2_PROTECTABLE, sorted, ended by an all-zero record), inserted at its
//! GPA; the VP context of the highest VTL only (`LowerVtlContext`: a VSM file's lower VTLs
//! start from the paravisor). Any other directive is refused by name, as a loader that does not
//! implement it must.
//!
//! Relocation ([`LoadOptions::vtl2_base`], OpenVMM's `Vtl2BaseAddressType::Absolute`): the
//! file must carry exactly one relocation region (`MultipleIgvmRelocationHeaders`,
//! `RelocationNotSupported`), for VTL2 and the BSP (`RelocationVtl`, `RelocationVpIndex`), with
//! a power-of-two alignment of at least 4 KiB (`Vtl2RelocationAlignment`), a base the region
//! allows (`relocation_base_valid`: aligned, within its minimum and maximum;
//! `RelocationBaseInvalid`) and not below the file's (OpenVMM only relocates upwards); on x86 a
//! page-table relocation region too (`NoPageTableRelocationHeader`). Page data and parameter
//! inserts in the region move by the offset, the x86 page tables are rebuilt with the `igvm`
//! crate's `PageTableRelocationBuilder` (what OpenVMM calls) from the VP context's CR3 and CR4,
//! CR3 moves, RIP (arm64: PC) and GDTR move when the region says so. arm64 has no page-table
//! region: OpenVMM has no arm64 IGVM loader, and this paravisor enters with the MMU off.

use std::ops::Range;

use anyhow::{bail, Context, Result};
use igvm::page_table::{CpuPagingState, PageTableRelocationBuilder};
use igvm::registers::{AArch64Register, X86Register};
use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmPlatformHeader, IgvmRelocatableRegion};
use igvm_defs::{IgvmPlatformType, MemoryMapEntryType, IGVM_VHS_MEMORY_MAP_ENTRY, PAGE_SIZE_4K};
use zerocopy::IntoBytes;

use crate::qemu::Arch;

/// The boot VP's VTL2 context from the file, for the registers the paravisor's entry needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VpContext {
    /// The registers the paravisor's entry needs (RIP, RSP, CR0, CR3, CR4, EFER, GDTR, CS),
    /// in the TLFS's initial-context form; the rest zero.
    X64(hvdef::x86_64::HvX64InitialVpContext),
    Aarch64 {
        pc: u64,
        cpsr: u64,
        /// X0..X3.
        x: [u64; 4],
    },
}

/// What the loader puts in guest memory and the boot VP's registers.
#[derive(Clone, Debug)]
pub struct LoadedIgvm {
    pub arch: Arch,
    /// (GPA, 4 KiB of data), zero pages left out (a fresh machine's RAM is zero).
    pub pages: Vec<(u64, Vec<u8>)>,
    /// Filled parameter areas at the GPAs they were inserted at.
    pub parameters: Vec<(u64, Vec<u8>)>,
    pub context: VpContext,
    /// Every page the file places (page data, zero pages included, and parameter pages).
    pub extent: Range<u64>,
    /// The VTL2-protectable required memory, where it was loaded.
    pub vtl2_memory: Range<u64>,
    /// How far the loader moved VTL2 (0: loaded where the file says).
    pub relocation_offset: u64,
}

/// What the VMM decides, not the file.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Load VTL2 at this base (the file must be relocatable); None: where the file says.
    pub vtl2_base: Option<u64>,
    /// The text of the file's `CommandLine` parameter.
    pub cmdline: String,
}

struct Area {
    index: u32,
    bytes: Vec<u8>,
    max: usize,
}

const TWO_MB: u64 = 2 << 20;

/// The file's first VTL2-protectable `RequiredMemory` (OpenVMM's `vtl2_memory_info`), checked
/// to be 2 MiB aligned in base and size.
fn vtl2_memory(file: &IgvmFile, mask: u32) -> Result<Range<u64>> {
    let range = file
        .directives()
        .iter()
        .find_map(|d| match *d {
            IgvmDirectiveHeader::RequiredMemory {
                gpa,
                compatibility_mask,
                number_of_bytes,
                vtl2_protectable: true,
            } if compatibility_mask & mask == mask => Some(gpa..gpa + u64::from(number_of_bytes)),
            _ => None,
        })
        .context(
            "the IGVM file declares no VTL2 memory (no RequiredMemory with vtl2_protectable); \
             OpenVMM's loader refuses it (Vtl2MemorySource)",
        )?;
    if range.start % TWO_MB != 0 || (range.end - range.start) % TWO_MB != 0 {
        bail!(
            "the IGVM file's VTL2 memory {:#x}..{:#x} is not 2 MiB aligned in base and size",
            range.start,
            range.end
        );
    }
    Ok(range)
}

/// The relocation region to apply for `base`, with the page-table region, by OpenVMM's rules.
fn relocation(
    file: &IgvmFile,
    mask: u32,
    arch: Arch,
    base: u64,
) -> Result<(IgvmRelocatableRegion, Option<PageTableRelocationBuilder>)> {
    let (regions, page_tables) = file.relocations(mask);
    let regions = regions.context(
        "a VTL2 base was requested but the IGVM file has no relocation region \
         (RelocationNotSupported)",
    )?;
    let [region] = &regions[..] else {
        bail!(
            "the IGVM file has {} relocation regions; the loader takes exactly one \
             (MultipleIgvmRelocationHeaders)",
            regions.len()
        );
    };
    if !region.is_vtl2 || region.vtl != igvm::hv_defs::Vtl::Vtl2 {
        bail!("the relocation region is not VTL2's (RelocationVtl): {region:x?}");
    }
    if region.vp_index != 0 {
        bail!(
            "the relocation region is for VP {}, not the BSP (RelocationVpIndex)",
            region.vp_index
        );
    }
    let alignment = region.relocation_alignment;
    if alignment < PAGE_SIZE_4K || !alignment.is_power_of_two() {
        bail!("invalid VTL2 relocation alignment {alignment:#x} (Vtl2RelocationAlignment)");
    }
    if !region.relocation_base_valid(base) {
        bail!(
            "VTL2 base {base:#x} is not one the relocation region allows (RelocationBaseInvalid): \
             {alignment:#x} aligned, {:#x}..{:#x} (region {:#x} bytes)",
            region.minimum_relocation_gpa,
            region.maximum_relocation_gpa,
            region.size
        );
    }
    if base < region.base_gpa {
        bail!(
            "VTL2 base {base:#x} is below the file's {:#x}: OpenVMM relocates upwards only",
            region.base_gpa
        );
    }
    match &page_tables {
        Some(pt) if pt.vp_index != 0 => bail!(
            "the page-table relocation region is for VP {}, not the BSP (RelocationVpIndex)",
            pt.vp_index
        ),
        Some(pt) if pt.vtl != igvm::hv_defs::Vtl::Vtl2 => {
            bail!("the page-table relocation region is not VTL2's (RelocationVtl)")
        }
        None if arch == Arch::X86_64 => bail!(
            "the IGVM file has a relocation region but no page-table relocation region \
             (NoPageTableRelocationHeader)"
        ),
        _ => {}
    }
    Ok((region.clone(), page_tables))
}

/// The memory map records for `ram` with `vtl2` marked (OpenVMM's `build_memory_map`): RAM
/// outside VTL2 memory as MEMORY, inside as VTL2_PROTECTABLE, sorted by address.
fn memory_map(ram: &[Range<u64>], vtl2: &Range<u64>) -> Vec<IGVM_VHS_MEMORY_MAP_ENTRY> {
    let record = |r: &Range<u64>, entry_type| IGVM_VHS_MEMORY_MAP_ENTRY {
        starting_gpa_page_number: r.start / PAGE_SIZE_4K,
        number_of_pages: (r.end - r.start) / PAGE_SIZE_4K,
        entry_type,
        flags: 0,
        reserved: 0,
    };
    let mut out = Vec::new();
    for r in ram {
        let pieces = [
            (r.start..r.end.min(vtl2.start), MemoryMapEntryType::MEMORY),
            (
                r.start.max(vtl2.start)..r.end.min(vtl2.end),
                MemoryMapEntryType::VTL2_PROTECTABLE,
            ),
            (r.start.max(vtl2.end)..r.end, MemoryMapEntryType::MEMORY),
        ];
        for (piece, ty) in pieces {
            if piece.start < piece.end {
                out.push(record(&piece, ty));
            }
        }
    }
    out
}

/// Loads `bytes` for a machine of `arch` with `vp_count` VPs and this RAM, where the file
/// says and with an empty command line.
pub fn load(bytes: &[u8], arch: Arch, vp_count: u32, ram: &[Range<u64>]) -> Result<LoadedIgvm> {
    load_with(bytes, arch, vp_count, ram, &LoadOptions::default())
}

/// Loads `bytes` for a machine of `arch` with `vp_count` VPs and this RAM, as `options` say.
pub fn load_with(
    bytes: &[u8],
    arch: Arch,
    vp_count: u32,
    ram: &[Range<u64>],
    options: &LoadOptions,
) -> Result<LoadedIgvm> {
    let file = IgvmFile::new_from_binary(bytes, None)
        .map_err(|e| anyhow::anyhow!("parsing the IGVM file: {e}"))?;
    let [IgvmPlatformHeader::SupportedPlatform(platform)] = file.platforms() else {
        bail!(
            "the IGVM file declares {} platforms; this loader takes exactly one",
            file.platforms().len()
        );
    };
    if platform.platform_type != IgvmPlatformType::VSM_ISOLATION || platform.highest_vtl != 2 {
        bail!(
            "the IGVM platform is {:?} with highest VTL {}; a paravisor needs VSM isolation with \
             VTL2",
            platform.platform_type,
            platform.highest_vtl
        );
    }
    let mask = platform.compatibility_mask;
    if let Some(at) = options.cmdline.bytes().position(|b| b == 0) {
        bail!("the command line has a NUL at byte {at} (CommandLineContainsNul)");
    }
    let mut ram = ram.to_vec();
    ram.sort_by_key(|r| r.start);
    // OpenVMM asserts page-aligned ranges and walks them sorted and apart; an empty one would
    // end the list early (a 0-page record is its end).
    for (i, r) in ram.iter().enumerate() {
        let aligned = r.start % PAGE_SIZE_4K == 0 && r.end % PAGE_SIZE_4K == 0;
        let apart = ram.get(i + 1).is_none_or(|next| r.end <= next.start);
        if r.start >= r.end || !aligned || !apart {
            bail!(
                "RAM range {:#x}..{:#x} is empty, not page aligned or overlaps the next: not a \
                 memory map",
                r.start,
                r.end
            );
        }
    }
    let file_vtl2 = vtl2_memory(&file, mask)?;
    let (region, mut page_tables, offset) = match options.vtl2_base {
        None => (None, None, 0),
        Some(base) => {
            let (region, pt) = relocation(&file, mask, arch, base)?;
            let offset = base - region.base_gpa;
            (Some(region), pt, offset)
        }
    };
    let relocate = |gpa: u64| match &region {
        Some(r) if r.contains(gpa) => gpa + offset,
        _ => gpa,
    };
    let in_page_tables = |pt: &Option<PageTableRelocationBuilder>, gpa: u64| {
        pt.as_ref().is_some_and(|pt| pt.contains(gpa))
    };
    let vtl2 =
        relocate(file_vtl2.start)..relocate(file_vtl2.start) + (file_vtl2.end - file_vtl2.start);
    let mut pages = Vec::new();
    let mut parameters = Vec::new();
    let mut areas: Vec<Area> = Vec::new();
    let mut context = None;
    let mut paging = None;
    let mut low = u64::MAX;
    let mut high = 0;
    let mut extend = |gpa: u64, len: u64| {
        low = low.min(gpa);
        high = high.max(gpa + len);
    };
    let area = |areas: &mut Vec<Area>, index: u32| -> Result<usize> {
        areas
            .iter()
            .position(|a| a.index == index)
            .with_context(|| format!("parameter area {index} is used before it is declared"))
    };
    for directive in file.directives() {
        match directive {
            IgvmDirectiveHeader::PageData {
                gpa,
                compatibility_mask,
                data,
                ..
            } => {
                if compatibility_mask & mask == 0 {
                    continue;
                }
                if gpa % PAGE_SIZE_4K != 0 || data.len() as u64 > PAGE_SIZE_4K {
                    bail!("page data at {gpa:#x} is not one 4 KiB page");
                }
                // Page tables are rebuilt at the end, moved (OpenVMM: `set_page_data`).
                if offset != 0 && in_page_tables(&page_tables, *gpa) {
                    if let Some(pt) = page_tables.as_mut() {
                        pt.set_page_data(*gpa, data)
                            .map_err(|e| anyhow::anyhow!("page-table page {gpa:#x}: {e}"))?;
                    }
                    continue;
                }
                let gpa = relocate(*gpa);
                extend(gpa, PAGE_SIZE_4K);
                if data.iter().any(|&b| b != 0) {
                    let mut page = data.clone();
                    page.resize(PAGE_SIZE_4K as usize, 0);
                    pages.push((gpa, page));
                }
            }
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes,
                parameter_area_index,
                initial_data,
            } => {
                if areas.iter().any(|a| a.index == *parameter_area_index) {
                    bail!("parameter area {parameter_area_index} is declared twice");
                }
                let mut bytes = initial_data.clone();
                bytes.resize(*number_of_bytes as usize, 0);
                areas.push(Area {
                    index: *parameter_area_index,
                    bytes,
                    max: *number_of_bytes as usize,
                });
            }
            IgvmDirectiveHeader::VpCount(p) => {
                let a = area(&mut areas, p.parameter_area_index)?;
                put(&mut areas[a], p.byte_offset, vp_count.as_bytes())?;
            }
            IgvmDirectiveHeader::CommandLine(p) => {
                let a = area(&mut areas, p.parameter_area_index)?;
                let mut bytes = options.cmdline.as_bytes().to_vec();
                bytes.push(0);
                put(&mut areas[a], p.byte_offset, &bytes).context(
                    "the command line does not fit its parameter area (ParameterTooLarge)",
                )?;
            }
            IgvmDirectiveHeader::MemoryMap(p) => {
                let a = area(&mut areas, p.parameter_area_index)?;
                let records = memory_map(&ram, &vtl2);
                let mut bytes = records.as_bytes().to_vec();
                // The all-zero record that ends the list must fit too.
                bytes.resize(bytes.len() + size_of::<IGVM_VHS_MEMORY_MAP_ENTRY>(), 0);
                put(&mut areas[a], p.byte_offset, &bytes).with_context(|| {
                    format!(
                        "the memory map ({} records) does not fit its parameter area",
                        records.len()
                    )
                })?;
            }
            IgvmDirectiveHeader::RequiredMemory {
                gpa,
                compatibility_mask,
                number_of_bytes,
                ..
            } => {
                if compatibility_mask & mask == 0 {
                    continue;
                }
                let start = relocate(*gpa);
                let end = start + u64::from(*number_of_bytes);
                if !ram.iter().any(|r| r.start <= start && end <= r.end) {
                    bail!(
                        "required memory {start:#x}..{end:#x} is not in the guest's RAM \
                         (MissingRequiredMemory)"
                    );
                }
            }
            IgvmDirectiveHeader::ParameterInsert(p) => {
                if p.compatibility_mask & mask == 0 {
                    continue;
                }
                let a = area(&mut areas, p.parameter_area_index)?;
                let bytes = areas.remove(a).bytes;
                let gpa = relocate(p.gpa);
                extend(gpa, bytes.len() as u64);
                parameters.push((gpa, bytes));
            }
            IgvmDirectiveHeader::X64VbsVpContext {
                vtl,
                registers,
                compatibility_mask,
            } if arch == Arch::X86_64 => {
                if compatibility_mask & mask == 0 {
                    continue;
                }
                if *vtl != igvm::hv_defs::Vtl::Vtl2 {
                    bail!(
                        "a VP context for {vtl:?}: only the highest VTL's (VTL2) is loaded \
                         (LowerVtlContext)"
                    );
                }
                let (ctx, cr3, cr4) = x64_context(registers, region.as_ref(), offset)?;
                paging = Some(CpuPagingState { cr3, cr4 });
                context = Some(ctx);
            }
            IgvmDirectiveHeader::AArch64VbsVpContext {
                vtl,
                registers,
                compatibility_mask,
            } if arch == Arch::Aarch64 => {
                if compatibility_mask & mask == 0 {
                    continue;
                }
                if *vtl != igvm::hv_defs::Vtl::Vtl2 {
                    bail!(
                        "a VP context for {vtl:?}: only the highest VTL's (VTL2) is loaded \
                         (LowerVtlContext)"
                    );
                }
                context = Some(arm64_context(registers, region.as_ref(), offset)?);
            }
            other => bail!("the IGVM loader does not implement {other:?}"),
        }
    }
    let context = context.context("the IGVM file has no VTL2 VP context")?;
    if let (Some(pt), Some(region)) = (page_tables.take(), &region) {
        if offset != 0 {
            let paging = paging.context("the page tables need the VP context's CR3 and CR4")?;
            if !pt.contains(paging.cr3) {
                bail!(
                    "CR3 {:#x} is outside the page-table relocation region {:#x}..{:#x}",
                    paging.cr3,
                    pt.gpa,
                    pt.gpa + pt.size
                );
            }
            let at = pt.gpa + offset;
            let mut offsets = range_map_vec::RangeMap::new();
            offsets.insert(
                region.base_gpa..=region.base_gpa + region.size - 1,
                offset as i64,
            );
            let tables = pt
                .build(offset as i64, offsets, paging)
                .map_err(|e| anyhow::anyhow!("rebuilding the page tables: {e}"))?;
            extend(at, tables.len() as u64);
            for (i, page) in tables.chunks(PAGE_SIZE_4K as usize).enumerate() {
                pages.push((at + i as u64 * PAGE_SIZE_4K, page.to_vec()));
            }
        }
    }
    Ok(LoadedIgvm {
        arch,
        pages,
        parameters,
        context,
        extent: low..high,
        vtl2_memory: vtl2,
        relocation_offset: offset,
    })
}

fn put(area: &mut Area, offset: u32, bytes: &[u8]) -> Result<()> {
    let at = offset as usize;
    if at + bytes.len() > area.max {
        bail!(
            "a {}-byte parameter at offset {offset:#x} lies outside its {:#x}-byte area \
             (ParameterTooLarge)",
            bytes.len(),
            area.max
        );
    }
    area.bytes[at..at + bytes.len()].copy_from_slice(bytes);
    Ok(())
}

/// The x64 VTL2 context, relocated as OpenVMM's `load_igvm_x86` does (CR3 by the offset, RIP
/// and GDTR when the region says so), and the CR3 and CR4 the file gave (the page tables are
/// rebuilt from those).
fn x64_context(
    registers: &[X86Register],
    region: Option<&IgvmRelocatableRegion>,
    offset: u64,
) -> Result<(VpContext, u64, u64)> {
    use hvdef::x86_64::{HvX64SegmentRegister, HvX64TableRegister};
    let seg = |s: &igvm::registers::SegmentRegister| HvX64SegmentRegister {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        attributes: s.attributes,
    };
    let table = |t: &igvm::registers::TableRegister| HvX64TableRegister {
        pad: [0; 3],
        limit: t.limit,
        base: t.base,
    };
    let mut ctx = hvdef::x86_64::HvX64InitialVpContext::default();
    let mut rip = None;
    let (mut cr3, mut cr4) = (0, 0);
    for r in registers {
        match r {
            X86Register::Rip(v) => {
                rip = Some(match region {
                    Some(r) if r.apply_rip_offset && r.contains(*v) => v + offset,
                    _ => *v,
                })
            }
            X86Register::Rsp(v) => ctx.rsp = *v,
            X86Register::Rflags(v) => ctx.rflags = *v,
            X86Register::Cr0(v) => ctx.cr0 = *v,
            X86Register::Cr3(v) => {
                cr3 = *v;
                ctx.cr3 = v + offset;
            }
            X86Register::Cr4(v) => {
                cr4 = *v;
                ctx.cr4 = *v;
            }
            X86Register::Efer(v) => ctx.efer = *v,
            X86Register::Pat(v) => ctx.msr_cr_pat = *v,
            X86Register::Gdtr(t) => {
                ctx.gdtr = table(t);
                if region.is_some_and(|r| r.apply_gdtr_offset && r.contains(t.base)) {
                    ctx.gdtr.base += offset;
                }
            }
            X86Register::Idtr(t) => ctx.idtr = table(t),
            X86Register::Cs(s) => ctx.cs = seg(s),
            X86Register::Ds(s) => ctx.ds = seg(s),
            X86Register::Es(s) => ctx.es = seg(s),
            X86Register::Fs(s) => ctx.fs = seg(s),
            X86Register::Gs(s) => ctx.gs = seg(s),
            X86Register::Ss(s) => ctx.ss = seg(s),
            X86Register::Tr(s) => ctx.tr = seg(s),
            // The rest (RSI and the other GPRs, MTRRs) are zero or the CPU's reset values in
            // the paravisor's file: what a VMM's entry leaves anyway.
            _ => {}
        }
    }
    ctx.rip = rip.context("the x64 VP context has no RIP")?;
    Ok((VpContext::X64(ctx), cr3, cr4))
}

/// The arm64 VTL2 context, PC relocated when the region says so (`apply_rip_offset`).
fn arm64_context(
    registers: &[AArch64Register],
    region: Option<&IgvmRelocatableRegion>,
    offset: u64,
) -> Result<VpContext> {
    let (mut pc, mut cpsr, mut x) = (None, None, [0; 4]);
    for r in registers {
        match *r {
            AArch64Register::Pc(v) => {
                pc = Some(match region {
                    Some(r) if r.apply_rip_offset && r.contains(v) => v + offset,
                    _ => v,
                })
            }
            AArch64Register::Cpsr(v) => cpsr = Some(v),
            AArch64Register::X0(v) => x[0] = v,
            AArch64Register::X1(v) => x[1] = v,
            AArch64Register::X2(v) => x[2] = v,
            AArch64Register::X3(v) => x[3] = v,
            // SCTLR (MMU off), TCR, MAIR, TTBRs and VBAR at their reset-like values: the
            // paravisor's entry sets them before it relies on them.
            _ => {}
        }
    }
    Ok(VpContext::Aarch64 {
        pc: pc.context("the arm64 VP context has no PC")?,
        cpsr: cpsr.context("the arm64 VP context has no CPSR")?,
        x,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use igvm::{IgvmDirectiveHeader as D, IgvmInitializationHeader as I, IgvmRevision};
    use igvm_defs::{
        IgvmPageDataFlags, IgvmPageDataType, IGVM_VHS_PARAMETER, IGVM_VHS_PARAMETER_INSERT,
        IGVM_VHS_SUPPORTED_PLATFORM, IGVM_VSM_ISOLATION_PLATFORM_VERSION,
    };

    const MASK: u32 = 1;
    /// The test file's VTL2 memory: 2 MiB at 2 MiB, its code page first, its parameters at
    /// 0x20_2000 and its page tables (PML4, PDPT, PD) at 0x30_0000.
    const BASE: u64 = 0x20_0000;
    const PARAMS: u64 = 0x20_2000;
    const TABLES: u64 = 0x30_0000;

    fn file_with(
        platform_type: IgvmPlatformType,
        initializations: Vec<I>,
        directives: Vec<D>,
    ) -> Vec<u8> {
        let platform = IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
            compatibility_mask: MASK,
            highest_vtl: 2,
            platform_type,
            platform_version: IGVM_VSM_ISOLATION_PLATFORM_VERSION,
            shared_gpa_boundary: 0,
        });
        let f = IgvmFile::new(
            IgvmRevision::V1,
            vec![platform],
            initializations,
            directives,
        )
        .unwrap();
        let mut out = Vec::new();
        f.serialize(&mut out).unwrap();
        out
    }

    fn file(platform_type: IgvmPlatformType, directives: Vec<D>) -> Vec<u8> {
        file_with(platform_type, vec![], directives)
    }

    fn page(gpa: u64, data: Vec<u8>) -> D {
        D::PageData {
            gpa,
            compatibility_mask: MASK,
            flags: IgvmPageDataFlags::new(),
            data_type: IgvmPageDataType::NORMAL,
            data,
        }
    }

    fn required(gpa: u64, size: u32) -> D {
        D::RequiredMemory {
            gpa,
            compatibility_mask: MASK,
            number_of_bytes: size,
            vtl2_protectable: true,
        }
    }

    fn context(vtl: igvm::hv_defs::Vtl) -> D {
        D::X64VbsVpContext {
            vtl,
            registers: vec![
                X86Register::Rip(BASE + 0x40),
                X86Register::Cr3(TABLES),
                X86Register::Cr0(0x8001_0033),
                X86Register::Cr4(0x20),
                X86Register::Gdtr(igvm::registers::TableRegister {
                    base: BASE + 0x1000,
                    limit: 23,
                }),
            ],
            compatibility_mask: MASK,
        }
    }

    /// The parameter area xtask declares (`hvdef::loader_data::igvm`'s layout).
    fn parameters(at: u64) -> Vec<D> {
        use hvdef::loader_data::igvm::{
            COMMAND_LINE_OFFSET, MEMORY_MAP_OFFSET, PARAMS_SIZE, VP_COUNT_OFFSET,
        };
        let p = |byte_offset: usize| IGVM_VHS_PARAMETER {
            parameter_area_index: 0,
            byte_offset: byte_offset as u32,
        };
        vec![
            D::ParameterArea {
                number_of_bytes: PARAMS_SIZE as u64,
                parameter_area_index: 0,
                initial_data: vec![],
            },
            D::VpCount(p(VP_COUNT_OFFSET)),
            D::MemoryMap(p(MEMORY_MAP_OFFSET)),
            D::CommandLine(p(COMMAND_LINE_OFFSET)),
            D::ParameterInsert(IGVM_VHS_PARAMETER_INSERT {
                gpa: at,
                compatibility_mask: MASK,
                parameter_area_index: 0,
            }),
        ]
    }

    /// A 4 GiB identity map with 2 MiB pages at [`TABLES`], as the paravisor's x86 image has:
    /// PML4 -> PDPT -> four PDs.
    fn page_tables() -> Vec<D> {
        let mut pml4 = vec![0u8; 4096];
        pml4[..8].copy_from_slice(&(TABLES + 0x1000 + 3).to_le_bytes());
        let mut pdpt = vec![0u8; 4096];
        for i in 0..4u64 {
            pdpt[8 * i as usize..8 * i as usize + 8]
                .copy_from_slice(&(TABLES + 0x2000 + 0x1000 * i + 3).to_le_bytes());
        }
        let mut out = vec![page(TABLES, pml4), page(TABLES + 0x1000, pdpt)];
        for d in 0..4u64 {
            let mut pd = vec![0u8; 4096];
            for i in 0..512u64 {
                let entry = ((d * 512 + i) << 21) | 0x83;
                pd[8 * i as usize..8 * i as usize + 8].copy_from_slice(&entry.to_le_bytes());
            }
            out.push(page(TABLES + 0x2000 + 0x1000 * d, pd));
        }
        out
    }

    /// The directives of a whole, relocatable VTL2 image.
    fn image() -> Vec<D> {
        let mut d = vec![
            required(BASE, 0x20_0000),
            page(BASE, b"code".to_vec()),
            page(BASE + 0x1000, vec![]),
        ];
        d.extend(parameters(PARAMS));
        d.extend(page_tables());
        d.push(context(igvm::hv_defs::Vtl::Vtl2));
        d
    }

    fn region(alignment: u64, min: u64, max: u64) -> I {
        I::RelocatableRegion {
            compatibility_mask: MASK,
            relocation_alignment: alignment,
            relocation_region_gpa: BASE,
            relocation_region_size: TABLES - BASE,
            minimum_relocation_gpa: min,
            maximum_relocation_gpa: max,
            is_vtl2: true,
            apply_rip_offset: true,
            apply_gdtr_offset: true,
            vp_index: 0,
            vtl: igvm::hv_defs::Vtl::Vtl2,
        }
    }

    fn table_region() -> I {
        I::PageTableRelocationRegion {
            compatibility_mask: MASK,
            gpa: TABLES,
            size: 0x6000,
            used_size: 0x6000,
            vp_index: 0,
            vtl: igvm::hv_defs::Vtl::Vtl2,
        }
    }

    fn relocatable() -> Vec<u8> {
        file_with(
            IgvmPlatformType::VSM_ISOLATION,
            vec![region(TWO_MB, BASE, 1 << 32), table_region()],
            image(),
        )
    }

    const RAM: [Range<u64>; 2] = [0x1_0000_0000..0x1_4000_0000, 0..0x8000_0000];

    fn record(area: &[u8], n: usize) -> (u64, u64, u16) {
        let r = &area[0x1000 + 24 * n..0x1000 + 24 * (n + 1)];
        (
            u64::from_le_bytes(r[..8].try_into().unwrap()),
            u64::from_le_bytes(r[8..16].try_into().unwrap()),
            u16::from_le_bytes(r[16..18].try_into().unwrap()),
        )
    }

    /// Page data placed (zero pages left to the machine's zeroed RAM), the parameters filled as
    /// the paravisor's `boot::igvm` reads them (a u32 VP count; memory map records, RAM as
    /// MEMORY and VTL2 memory as VTL2_PROTECTABLE, sorted, then an all-zero record; the command
    /// line and a NUL), the VTL2 context's registers.
    #[test]
    fn pages_parameters_and_context() {
        let options = LoadOptions {
            vtl2_base: None,
            cmdline: "pv.x=1".into(),
        };
        let l = load_with(
            &file(IgvmPlatformType::VSM_ISOLATION, image()),
            Arch::X86_64,
            3,
            &RAM,
            &options,
        )
        .unwrap();
        assert_eq!((l.pages[0].0, &l.pages[0].1[..4]), (BASE, &b"code"[..]));
        assert_eq!(l.pages[0].1.len(), 4096);
        assert_eq!(l.pages.len(), 1 + 6, "the code page and the page tables");
        assert_eq!(l.extent, BASE..TABLES + 0x6000);
        assert_eq!(
            (l.vtl2_memory.clone(), l.relocation_offset),
            (BASE..0x40_0000, 0)
        );
        let [(gpa, area)] = &l.parameters[..] else {
            panic!("{:?}", l.parameters.len())
        };
        assert_eq!(*gpa, PARAMS);
        assert_eq!(area[..4], 3u32.to_le_bytes());
        assert_eq!(record(area, 0), (0, 0x200, 0), "RAM below VTL2");
        assert_eq!(
            record(area, 1),
            (0x200, 0x200, 3),
            "VTL2 memory, VTL2_PROTECTABLE"
        );
        assert_eq!(record(area, 2), (0x400, 0x8_0000 - 0x400, 0));
        assert_eq!(record(area, 3), (0x10_0000, 0x4_0000, 0));
        assert_eq!(
            &area[0x1000 + 24 * 4..0x1000 + 24 * 5],
            &[0; 24],
            "the list ends"
        );
        assert_eq!(&area[0x2000..0x2007], b"pv.x=1\0");
        let VpContext::X64(ctx) = l.context else {
            panic!()
        };
        assert_eq!(
            (ctx.rip, ctx.cr3, ctx.gdtr.base, ctx.gdtr.limit),
            (BASE + 0x40, TABLES, BASE + 0x1000, 23)
        );
    }

    /// Relocated as OpenVMM does: the region's pages, the parameters, RIP, GDTR and CR3 move by
    /// the offset; the page tables are rebuilt there, their table pointers moved and the
    /// identity map of the region's old place moved with it (its 2 MiB page now maps the new
    /// place; the new place's own entry already did).
    #[test]
    fn relocated_load_moves_everything_in_the_region() {
        let new = 0x4000_0000;
        let off = new - BASE;
        let options = LoadOptions {
            vtl2_base: Some(new),
            cmdline: String::new(),
        };
        let l = load_with(&relocatable(), Arch::X86_64, 1, &RAM, &options).unwrap();
        assert_eq!(l.relocation_offset, off);
        assert_eq!(l.vtl2_memory, new..new + 0x20_0000);
        assert_eq!((l.pages[0].0, &l.pages[0].1[..4]), (new, &b"code"[..]));
        assert_eq!(l.parameters[0].0, PARAMS + off);
        let VpContext::X64(ctx) = l.context else {
            panic!()
        };
        assert_eq!(
            (ctx.rip, ctx.cr3, ctx.gdtr.base),
            (new + 0x40, TABLES + off, new + 0x1000)
        );
        let page = |gpa: u64| &l.pages.iter().find(|(g, _)| *g == gpa).unwrap().1;
        let entry = |gpa: u64, i: usize| {
            u64::from_le_bytes(page(gpa)[8 * i..8 * i + 8].try_into().unwrap())
        };
        let tables = TABLES + off;
        assert_eq!(
            entry(tables, 0),
            tables + 0x1000 + 3,
            "PML4 -> the moved PDPT"
        );
        assert_eq!(
            entry(tables + 0x1000, 1),
            tables + 0x3000 + 3,
            "PDPT[1] -> the moved PD 1"
        );
        // The old place's 2 MiB page (PD 0 entry 1) is cleared: its entry moved to the new
        // place, which already held the identical identity entry.
        assert_eq!(entry(tables + 0x2000, 1), 0);
        assert_eq!(entry(tables + 0x3000, 0), new | 0x83);
        // Nothing left at the file's place.
        assert!(l
            .pages
            .iter()
            .all(|(g, _)| !(BASE..TABLES + 0x6000).contains(g)));
        let map = &l.parameters[0].1;
        assert_eq!(
            record(map, 1),
            (new >> 12, 0x200, 3),
            "VTL2 memory where it was loaded"
        );
    }

    /// A memory map the loader cannot write faithfully is refused, not floored or cut short.
    #[test]
    fn broken_ram_ranges_are_refused() {
        let bytes = file(IgvmPlatformType::VSM_ISOLATION, image());
        for ram in [
            vec![0..0x8000_0000, 0x9000_0000..0x9000_0000],
            vec![0x1800..0x3000, 0x4000..0x5000],
            vec![0..0x8000_0000, 0x4000_0000..0x9000_0000],
        ] {
            let e = format!("{:#}", load(&bytes, Arch::X86_64, 1, &ram).unwrap_err());
            assert!(e.contains("not a memory map"), "{ram:?}: {e}");
        }
    }

    /// What a loader for this paravisor must refuse, each with a line that says what.
    #[test]
    fn refusals_name_the_problem() {
        let err =
            |bytes: Vec<u8>| format!("{:#}", load(&bytes, Arch::X86_64, 1, &RAM).unwrap_err());
        let vsm = |d| file(IgvmPlatformType::VSM_ISOLATION, d);
        let mut no_context = image();
        no_context.retain(|d| !matches!(d, D::X64VbsVpContext { .. }));
        assert!(err(vsm(no_context.clone())).contains("no VTL2 VP context"));
        let mut vtl0 = no_context.clone();
        vtl0.push(context(igvm::hv_defs::Vtl::Vtl0));
        assert!(err(vsm(vtl0)).contains("(LowerVtlContext)"));
        let snp = err(file(IgvmPlatformType::SEV_SNP, no_context));
        assert!(snp.contains("VSM isolation"), "{snp}");
        // VTL2 memory: declared, protectable, 2 MiB aligned, in RAM.
        let with_required = |r: Vec<D>| {
            let mut d = image();
            d.retain(|d| !matches!(d, D::RequiredMemory { .. }));
            d.splice(0..0, r);
            err(vsm(d))
        };
        assert!(with_required(vec![]).contains("(Vtl2MemorySource)"));
        let unprotectable = D::RequiredMemory {
            gpa: BASE,
            compatibility_mask: MASK,
            number_of_bytes: 0x20_0000,
            vtl2_protectable: false,
        };
        assert!(with_required(vec![unprotectable]).contains("(Vtl2MemorySource)"));
        for bad in [
            required(BASE + 0x1000, 0x20_0000),
            required(BASE, 0x10_0000),
        ] {
            assert!(with_required(vec![bad]).contains("not 2 MiB aligned"));
        }
        let e = with_required(vec![required(0x7fe0_0000, 0x40_0000)]);
        assert!(
            e.contains("required memory 0x7fe00000..0x80200000 is not in the guest's RAM (MissingRequiredMemory)"),
            "{e}"
        );
        let nul = LoadOptions {
            cmdline: "a\0b".into(),
            ..Default::default()
        };
        let e = load_with(&vsm(image()), Arch::X86_64, 1, &RAM, &nul).unwrap_err();
        assert!(format!("{e:#}").contains("NUL at byte 1 (CommandLineContainsNul)"));
        let long = LoadOptions {
            cmdline: "x".repeat(0x1000),
            ..Default::default()
        };
        let e = load_with(&vsm(image()), Arch::X86_64, 1, &RAM, &long).unwrap_err();
        assert!(format!("{e:#}").contains("(ParameterTooLarge)"), "{e:#}");
    }

    /// OpenVMM's relocation rules, each refusal naming its error.
    #[test]
    fn relocation_rules() {
        let at = |bytes: &[u8], base: u64| {
            let options = LoadOptions {
                vtl2_base: Some(base),
                cmdline: String::new(),
            };
            load_with(bytes, Arch::X86_64, 1, &RAM, &options)
                .map(|l| l.relocation_offset)
                .map_err(|e| format!("{e:#}"))
        };
        let ok = relocatable();
        assert_eq!(at(&ok, 0x60_0000), Ok(0x40_0000));
        // The file's own base is a valid base too (offset 0, nothing moves).
        assert_eq!(at(&ok, BASE), Ok(0));
        for (base, needle) in [
            (0x50_1000, "(RelocationBaseInvalid)"),
            (0x1_0000_0000, "(RelocationBaseInvalid)"),
        ] {
            let e = at(&ok, base).unwrap_err();
            assert!(e.contains(needle), "{base:#x}: {e}");
        }
        let file = |inits: Vec<I>| file_with(IgvmPlatformType::VSM_ISOLATION, inits, image());
        let e = at(&file(vec![]), 0x60_0000).unwrap_err();
        assert!(e.contains("(RelocationNotSupported)"), "{e}");
        let e = at(&file(vec![region(TWO_MB, BASE, 1 << 32)]), 0x60_0000).unwrap_err();
        assert!(e.contains("(NoPageTableRelocationHeader)"), "{e}");
        // An alignment below 4 KiB (Vtl2RelocationAlignment) the igvm crate already refuses
        // when it parses the file.
        let e = at(&file(vec![region(TWO_MB, 0, 1 << 32), table_region()]), 0).unwrap_err();
        assert!(e.contains("relocates upwards only"), "{e}");
        // A region for another VP than the BSP (RelocationVpIndex) the igvm crate refuses
        // unless that VP has a context, which a VSM paravisor's file never has.
        // Where the relocated VTL2 memory is not RAM.
        let e = at(&ok, 0x8000_0000 - 0x20_0000 + TWO_MB).unwrap_err();
        assert!(e.contains("(MissingRequiredMemory)"), "{e}");
    }

    /// arm64: relocation without a page-table region (the MMU is off at entry), PC moved with
    /// the region, X0 (an offset from the base, OpenHCL's convention) left alone.
    #[test]
    fn arm64_relocates_pc_and_needs_no_page_tables() {
        let platform = IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
            compatibility_mask: MASK,
            highest_vtl: 2,
            platform_type: IgvmPlatformType::VSM_ISOLATION,
            platform_version: IGVM_VSM_ISOLATION_PLATFORM_VERSION,
            shared_gpa_boundary: 0,
        });
        let base = 0x4020_0000;
        let mut directives = vec![required(base, 0x20_0000), page(base, b"code".to_vec())];
        directives.extend(parameters(base + 0x2000));
        directives.push(D::AArch64VbsVpContext {
            vtl: igvm::hv_defs::Vtl::Vtl2,
            registers: vec![
                AArch64Register::Pc(base),
                AArch64Register::X0(0x2000),
                AArch64Register::Cpsr(0x3c5),
            ],
            compatibility_mask: MASK,
        });
        let mut region = region(TWO_MB, base, 1 << 32);
        if let I::RelocatableRegion {
            relocation_region_gpa,
            relocation_region_size,
            apply_gdtr_offset,
            ..
        } = &mut region
        {
            (*relocation_region_gpa, *relocation_region_size) = (base, 0x20_0000);
            *apply_gdtr_offset = false;
        }
        let revision = IgvmRevision::V2 {
            arch: igvm::Arch::AArch64,
            page_size: 4096,
        };
        let f = IgvmFile::new(revision, vec![platform], vec![region], directives).unwrap();
        let mut bytes = Vec::new();
        f.serialize(&mut bytes).unwrap();
        let options = LoadOptions {
            vtl2_base: Some(0x4a00_0000),
            cmdline: String::new(),
        };
        let ram = [0x4000_0000..0x5000_0000, 0x8000_0000..0x8010_0000];
        let l = load_with(&bytes, Arch::Aarch64, 1, &ram, &options).unwrap();
        assert_eq!(
            l.context,
            VpContext::Aarch64 {
                pc: 0x4a00_0000,
                cpsr: 0x3c5,
                x: [0x2000, 0, 0, 0]
            }
        );
        assert_eq!(l.pages[0].0, 0x4a00_0000);
        assert_eq!(l.parameters[0].0, 0x4a00_2000);
        assert_eq!(l.vtl2_memory, 0x4a00_0000..0x4a20_0000);
    }
}
