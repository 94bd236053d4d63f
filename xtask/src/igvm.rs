//! IGVM image builder and dumper: wraps the paravisor ELF (a static PIE linked at a 2 MiB
//! aligned base, or a plain ET_EXEC) into an IGVM file whose initial VP context targets VTL2,
//! and pretty-prints IGVM files for inspection, with their VBS measurement ([`digest`]).
//!
//! Layout as OpenHCL's (`vm/loader/src/paravisor.rs`): a VTL2-protectable `RequiredMemory`
//! from the image's base to its end rounded up to 2 MiB; a relocation region (2 MiB alignment,
//! the file's base its minimum, a maximum that keeps VTL2 memory below 4 GiB, RIP and on x86
//! GDTR moved, VTL2's BSP) over the image but (x86) its boot page tables, which get a
//! page-table relocation region of their own (`boot_pagetables_start`..`_end`, the image's
//! last pages). docs/ARCHITECTURE.md "IGVM file and relocation" says why and how the image
//! relocates itself (`boot::reloc`).
//!
//! Boot contract (x86_64): the loader starts the BSP in 64-bit long mode at `_start64` with
//! CR3 = `boot_pml4` (the image's static identity map of the first 4 GiB) and GDTR = `boot_gdt`
//! (null, 0x08 code64, 0x10 data). RSI = 0 and RDI is left at its architectural reset value 0:
//! IGVM cannot carry RDI, and the entry treats `rdi == 0` as "started from IGVM" (a PVH
//! start passes a non-zero start-info pointer there). RSP = 0: the entry sets its own stack.
//!
//! Boot contract (aarch64): EL1h, DAIF masked, MMU off, PC = `_start`, X0 = the parameter
//! pages' offset from the image's base (OpenHCL's convention; `boot::igvm` compares it with its
//! own), X1..X3 = 0.
//!
//! Boot parameters (both arches; the reader is `boot::igvm`): the image reserves a page-aligned
//! NOLOAD `.igvm_params` section between `boot_igvm_params_start` and `boot_igvm_params_end`
//! (3 pages). The file declares parameter area #0 of that size with no initial data, a
//! `VpCount` parameter at offset [`VP_COUNT_OFFSET`] (the loader writes a u32), a
//! `MemoryMap` parameter at [`MEMORY_MAP_OFFSET`] (the loader writes
//! `IGVM_VHS_MEMORY_MAP_ENTRY` records, a 0-page record last) and a `CommandLine` parameter at
//! [`COMMAND_LINE_OFFSET`] (NUL-terminated), and inserts the area at the section's GPA. Those
//! pages get no page data: the insert is what imports them.
//!
//! VTL0 payload (optional, [`build`]'s `vtl0`): a static ELF (ELF32 or ELF64, ET_EXEC) whose
//! PT_LOAD segments become page data at their physical addresses. They must not overlap the
//! paravisor's image (refused, naming both ranges); on x86 they must lie below 4 GiB (VTL0
//! starts in 32-bit protected mode with paging off). Its entry state goes into the **VTL0 boot
//! page**, the image's NOLOAD `.vtl0_boot` page (`boot_vtl0_boot_start`..`_end`, inside VTL2's
//! image, so VTL0 cannot touch it once the paravisor protects its image), as ordinary page
//! data: a 24-byte header (magic `b"PVVTL0IC"`, version 1, arch 1 = x86_64 / 2 = aarch64,
//! context size, reserved 0; `boot::vtl0_boot` is the reader's side) and the TLFS
//! `HV_INITIAL_VP_CONTEXT`: x86 RIP = entry, CR0 = PE | ET, CS 0x08 flat 32-bit code, DS/ES/
//! FS/GS/SS 0x10 flat data, TR the busy TSS and LDTR at their reset values, GDTR/IDTR base 0
//! limit 0xFFFF, EFER 0, RFLAGS 2, PAT the reset default, RSP/CR3/CR4 0 (a PVH-style start:
//! the kernel loads its own GDT and stack); arm64 PC = entry, SCTLR_EL1 RES1 bits only (MMU
//! off), everything else 0 (the firmware adds CPSR = EL1h, DAIF masked). Without a payload the
//! page stays a zero page, which the firmware reads as "no payload".

mod json;
pub use json::dump_json;
#[cfg(test)]
mod test_elf;

use anyhow::{anyhow, bail, Context, Result};
use hvdef::loader_data::igvm::{COMMAND_LINE_OFFSET, MEMORY_MAP_OFFSET, VP_COUNT_OFFSET};
use hvdef::loader_data::vtl0_boot;
use igvm::hv_defs::Vtl;
use igvm::registers::{AArch64Register, SegmentRegister, TableRegister, X86Register};
use igvm::{
    Arch, IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader, IgvmRevision,
};
use igvm_defs::{
    IgvmPageDataFlags, IgvmPageDataType, IgvmPlatformType, IGVM_VHS_PARAMETER,
    IGVM_VHS_PARAMETER_INSERT, IGVM_VHS_SUPPORTED_PLATFORM, IGVM_VSM_ISOLATION_PLATFORM_VERSION,
    PAGE_SIZE_4K,
};
use object::read::elf::{ElfFile, ElfFile64, FileHeader, ProgramHeader};
use object::{elf, Endianness, Object, ObjectSymbol};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::ops::Range;
use zerocopy::IntoBytes;

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

/// The image's parameter pages; their layout is `hvdef::loader_data::igvm::IgvmParamArea`,
/// which `boot::igvm` reads with the same offsets; both sides' tests pin the same golden bytes.
const PARAMS_START: &str = "boot_igvm_params_start";
const PARAMS_END: &str = "boot_igvm_params_end";
const PARAM_AREA_INDEX: u32 = 0;
/// VTL2 memory and the relocation granule: 2 MiB, what OpenHCL's loader requires of the
/// paravisor's memory (`load_openhcl_x64`: "Paravisor memory ranges must be 2MB (large page)
/// aligned") and what OpenVMM checks of a VTL2 size.
const TWO_MB: u64 = 2 << 20;
/// The highest end a relocated image may have: the static boot page tables identity-map the
/// low 4 GiB only (x86 `boot_pml4`, arm64 `boot_l1`), and the entry runs on them.
const RELOCATION_MAX: u64 = 4 << 30;
/// The x86 boot page tables (`boot_pml4` and what it points to), at the image's end so they
/// lie outside the relocation region (the igvm crate refuses overlapping regions; OpenHCL
/// keeps its page tables out of its relocation region for the same reason).
const PAGETABLES_START: &str = "boot_pagetables_start";
const PAGETABLES_END: &str = "boot_pagetables_end";

/// The VTL0 boot page; `hvdef::loader_data::vtl0_boot` has the layout, which
/// `boot::vtl0_boot` documents.
const VTL0_BOOT_START: &str = "boot_vtl0_boot_start";
const VTL0_BOOT_END: &str = "boot_vtl0_boot_end";
pub(crate) use hvdef::loader_data::vtl0_boot::{
    CONTEXT_OFFSET as VTL0_CONTEXT_OFFSET, MAGIC as VTL0_BOOT_MAGIC,
};
// VTL0's x86 entry state: 32-bit protected mode, paging off, flat segments (a PVH start).
const VTL0_CODE32_ATTRIBUTES: u16 = 0xC09B; // G | D/B | P | S | execute/read, accessed
const VTL0_CR0: u64 = 0x11; // ET | PE
/// LDTR's reset state: present, type LDT.
const LDTR_ATTRIBUTES: u16 = 0x82;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgvmArch {
    X86_64,
    Aarch64,
}

impl IgvmArch {
    /// `Vtl0BootHeader::arch`.
    fn boot_page_code(self) -> u32 {
        match self {
            IgvmArch::X86_64 => vtl0_boot::ARCH_X86_64,
            IgvmArch::Aarch64 => vtl0_boot::ARCH_AARCH64,
        }
    }
}

/// Builds an IGVM file from the paravisor ELF, with `vtl0` (an ELF) as VTL0's payload if given.
pub fn build(elf: &[u8], arch: IgvmArch, vtl0: Option<&[u8]>) -> Result<Vec<u8>> {
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
    // Page data is placed at p_paddr verbatim (the link base); the image relocates itself at
    // entry (boot::reloc), so a static PIE may carry base-relative relocations only.
    match header.e_type(file.endian()) {
        elf::ET_EXEC => {}
        elf::ET_DYN => check_relocations(&file, arch)?,
        other => bail!("paravisor ELF has e_type {other}: not an executable"),
    }

    let params = param_region(&file)?;
    let mut pages = paravisor_pages(&file, elf, &params)?;
    let image = image_span(&pages, &params)?;
    let layout = vtl2_layout(&file, arch, &image)?;
    if let Some(payload) = vtl0 {
        add_vtl0_payload(&file, &mut pages, &params, payload, arch).context("the VTL0 payload")?;
    }
    let mut directives = vec![IgvmDirectiveHeader::RequiredMemory {
        gpa: layout.memory.start,
        compatibility_mask: COMPAT,
        number_of_bytes: u32::try_from(layout.memory.end - layout.memory.start)
            .context("VTL2 memory above 4 GiB in size")?,
        vtl2_protectable: true,
    }];
    directives.extend(page_directives(pages));
    directives.extend(parameters(&params));
    directives.push(vp_context(&file, arch, &layout)?);
    let platform = IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
        compatibility_mask: COMPAT,
        highest_vtl: 2,
        platform_type: IgvmPlatformType::VSM_ISOLATION,
        platform_version: IGVM_VSM_ISOLATION_PLATFORM_VERSION,
        shared_gpa_boundary: 0,
    });
    let initializations = relocation_headers(arch, &layout);
    let igvm = IgvmFile::new(revision, vec![platform], initializations, directives)
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
    if start % PAGE != 0 || size % PAGE != 0 || size <= COMMAND_LINE_OFFSET as u64 {
        bail!(
            "IGVM parameter pages `{PARAMS_START}`..`{PARAMS_END}` ({start:#x}, {size:#x} bytes) \
             must be page aligned, whole pages and larger than {COMMAND_LINE_OFFSET:#x} bytes"
        );
    }
    Ok(start..start + size)
}

/// Parameter area #0 over `params`, the VP count, memory map and command line in it, and its
/// insert.
fn parameters(params: &Range<u64>) -> [IgvmDirectiveHeader; 5] {
    use IgvmDirectiveHeader as D;
    // The offsets are those of a 3-page struct: they fit a u32.
    let at = |byte_offset: usize| IGVM_VHS_PARAMETER {
        parameter_area_index: PARAM_AREA_INDEX,
        byte_offset: byte_offset as u32,
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
        D::CommandLine(at(COMMAND_LINE_OFFSET)),
        D::ParameterInsert(IGVM_VHS_PARAMETER_INSERT {
            gpa: params.start,
            compatibility_mask: COMPAT,
            parameter_area_index: PARAM_AREA_INDEX,
        }),
    ]
}

/// One PT_LOAD segment: physical address, memory size, file bytes.
struct Segment<'a> {
    index: usize,
    paddr: u64,
    vaddr: u64,
    memsz: u64,
    bytes: &'a [u8],
}

/// The non-empty PT_LOAD segments of an ELF of either class.
fn segments<'a, H: FileHeader<Endian = Endianness>>(
    file: &ElfFile<'a, H>,
    data: &'a [u8],
) -> Result<Vec<Segment<'a>>> {
    let endian = file.endian();
    let mut out = Vec::new();
    for (index, ph) in file.elf_program_headers().iter().enumerate() {
        let (filesz, memsz): (u64, u64) = (ph.p_filesz(endian).into(), ph.p_memsz(endian).into());
        if ph.p_type(endian) != elf::PT_LOAD || memsz == 0 {
            continue;
        }
        if filesz > memsz {
            bail!("PT_LOAD #{index}: p_filesz {filesz:#x} exceeds p_memsz {memsz:#x}");
        }
        let bytes = ph
            .data(endian, data)
            .map_err(|()| anyhow!("PT_LOAD #{index}: file range lies outside the ELF"))?;
        out.push(Segment {
            index,
            paddr: ph.p_paddr(endian).into(),
            vaddr: ph.p_vaddr(endian).into(),
            memsz,
            bytes,
        });
    }
    Ok(out)
}

/// The page-aligned range a segment covers.
fn page_span(seg: &Segment<'_>) -> Result<Range<u64>> {
    let end = seg
        .paddr
        .checked_add(seg.memsz)
        .and_then(|e| e.checked_add(PAGE - 1))
        .ok_or_else(|| {
            anyhow!(
                "PT_LOAD #{}: {:#x} + {:#x} overflows",
                seg.index,
                seg.paddr,
                seg.memsz
            )
        })?
        & !(PAGE - 1);
    Ok(seg.paddr & !(PAGE - 1)..end)
}

/// Keyed by GPA so pages shared by adjacent segments merge; an empty Vec is a zero page.
type Pages = BTreeMap<u64, Vec<u8>>;

/// Every page of `segs`, with their file bytes.
fn load_pages(segs: &[Segment<'_>]) -> Result<Pages> {
    let mut pages = Pages::new();
    let mut total = 0u64;
    for seg in segs {
        let span = page_span(seg)?;
        total += span.end - span.start;
        if total > MAX_IMAGE_BYTES {
            bail!(
                "loadable segments exceed {MAX_IMAGE_BYTES:#x} bytes (PT_LOAD #{})",
                seg.index
            );
        }
        let (paddr, file_end) = (seg.paddr, seg.paddr + seg.bytes.len() as u64);
        for gpa in span.step_by(PAGE as usize) {
            let page = pages.entry(gpa).or_default();
            let (lo, hi) = (gpa.max(paddr), (gpa + PAGE).min(file_end));
            if lo < hi {
                page.resize(PAGE as usize, 0);
                page[(lo - gpa) as usize..(hi - gpa) as usize]
                    .copy_from_slice(&seg.bytes[(lo - paddr) as usize..(hi - paddr) as usize]);
            }
        }
    }
    Ok(pages)
}

/// Every loaded page of the paravisor except the parameter pages, which the parameter insert
/// imports (a page imported twice is a loader error).
fn paravisor_pages(
    file: &ElfFile64<'_, Endianness>,
    data: &[u8],
    params: &Range<u64>,
) -> Result<Pages> {
    let mut pages = load_pages(&segments(file, data)?)?;
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
    Ok(pages)
}

/// Refuses a PIE whose dynamic relocations are not all base-relative (R_X86_64_RELATIVE,
/// R_AARCH64_RELATIVE), the only kind `boot::reloc` applies, or that relocates a word of the
/// x86 boot page tables (the loader's page-table fix-up moves those; both would move them twice).
fn check_relocations(file: &ElfFile64<'_, Endianness>, arch: IgvmArch) -> Result<()> {
    let relative = match arch {
        IgvmArch::X86_64 => elf::R_X86_64_RELATIVE,
        IgvmArch::Aarch64 => elf::R_AARCH64_RELATIVE,
    };
    let tables = match arch {
        IgvmArch::X86_64 => Some(symbol_range(file, PAGETABLES_START, PAGETABLES_END)?),
        IgvmArch::Aarch64 => None,
    };
    let relocations = file
        .dynamic_relocations()
        .ok_or_else(|| anyhow!("paravisor ELF is ET_DYN but has no dynamic relocation table"))?;
    for (offset, r) in relocations {
        let object::RelocationFlags::Elf { r_type } = r.flags() else {
            bail!("relocation at {offset:#x} is not an ELF relocation");
        };
        if r_type != relative {
            bail!(
                "paravisor ELF has a type-{r_type} relocation at {offset:#x}; the entry applies \
                 base-relative ones only (link it as a static PIE)"
            );
        }
        if let Some(t) = tables.as_ref().filter(|t| t.contains(&offset)) {
            bail!(
                "a relocation at {offset:#x} lies in the boot page tables {:#x}..{:#x}: their \
                 entries must name absolute symbols (the loader relocates them)",
                t.start,
                t.end
            );
        }
    }
    Ok(())
}

/// The physical range between two symbols (the end translated through the start's segment).
fn symbol_range(file: &ElfFile64<'_, Endianness>, start: &str, end: &str) -> Result<Range<u64>> {
    let (start_vaddr, start_paddr) = symbol_paddr(file, start)?;
    let end_vaddr = file
        .symbols()
        .find(|s| s.name() == Ok(end))
        .map(|s| s.address())
        .ok_or_else(|| anyhow!("paravisor ELF has no symbol `{end}`"))?;
    let size = end_vaddr.saturating_sub(start_vaddr);
    Ok(start_paddr..start_paddr + size)
}

/// Every page the paravisor's image places (its segments and parameter pages), checked to start
/// 2 MiB aligned: the base of its VTL2 memory.
fn image_span(pages: &Pages, params: &Range<u64>) -> Result<Range<u64>> {
    let first = pages.keys().next().copied().unwrap_or(0).min(params.start);
    let last = pages
        .keys()
        .next_back()
        .map_or(0, |g| g + PAGE)
        .max(params.end);
    if first % TWO_MB != 0 {
        bail!(
            "the paravisor's image starts at {first:#x}, not 2 MiB aligned: its VTL2 memory \
             must be (OpenHCL's and OpenVMM's loaders refuse it)"
        );
    }
    Ok(first..last)
}

/// Where VTL2's memory, its relocation region and (x86) its page tables are.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Vtl2Layout {
    /// The RequiredMemory: the image and its heap (room for `hvdef::heap::IGVM_HEAP_VPS` VPs),
    /// rounded up to 2 MiB.
    memory: Range<u64>,
    /// What the loader moves by the relocation offset: x86 everything but the page tables,
    /// arm64 all of VTL2's memory.
    region: Range<u64>,
    page_tables: Option<Range<u64>>,
    /// The parameter pages' offset from the base (arm64 X0).
    params_offset: u64,
}

fn vtl2_layout(
    file: &ElfFile64<'_, Endianness>,
    arch: IgvmArch,
    image: &Range<u64>,
) -> Result<Vtl2Layout> {
    let (_, params) = symbol_paddr(file, PARAMS_START)?;
    // The image and the heap after it, room for hvdef::heap::IGVM_HEAP_VPS VPs: on an IGVM
    // boot the paravisor's heap is the rest of this range (boot::heap::heap_range).
    let heap = hvdef::heap::heap_size(hvdef::heap::IGVM_HEAP_VPS);
    let memory = image.start..(image.end.div_ceil(PAGE) * PAGE + heap).div_ceil(TWO_MB) * TWO_MB;
    let (region, page_tables) = match arch {
        IgvmArch::Aarch64 => (memory.clone(), None),
        IgvmArch::X86_64 => {
            let t = symbol_range(file, PAGETABLES_START, PAGETABLES_END)?;
            let (_, pml4) = symbol_paddr(file, "boot_pml4")?;
            if t.start % PAGE != 0 || t.end % PAGE != 0 || t.start == t.end || t.end != image.end {
                bail!(
                    "the boot page tables `{PAGETABLES_START}`..`{PAGETABLES_END}` ({:#x}..{:#x}) \
                     must be whole pages at the image's end ({:#x}), outside the relocation region",
                    t.start,
                    t.end,
                    image.end
                );
            }
            if !t.contains(&pml4) {
                bail!("`boot_pml4` ({pml4:#x}) is outside the boot page tables");
            }
            (image.start..t.start, Some(t))
        }
    };
    Ok(Vtl2Layout {
        memory,
        region,
        page_tables,
        params_offset: params - image.start,
    })
}

/// The relocation region (and, x86, the page-table relocation region) as OpenHCL's
/// `load_openhcl_x64` declares them: 2 MiB alignment, the file's base the lowest (OpenVMM
/// relocates upwards only), RIP and (x86) GDTR moved with the image, the BSP's VTL2.
fn relocation_headers(arch: IgvmArch, layout: &Vtl2Layout) -> Vec<IgvmInitializationHeader> {
    let x86 = arch == IgvmArch::X86_64;
    // The whole VTL2 memory (size S) must end by RELOCATION_MAX, not just the region (size R):
    // bases are 2 MiB aligned and the loader checks base + R <= maximum, so a 2 MiB-aligned
    // maximum of RELOCATION_MAX - S + align_up(R) allows exactly base <= RELOCATION_MAX - S.
    let size = layout.memory.end - layout.memory.start;
    let region = layout.region.end - layout.region.start;
    let maximum = RELOCATION_MAX - size + region.div_ceil(TWO_MB) * TWO_MB;
    let mut out = vec![IgvmInitializationHeader::RelocatableRegion {
        compatibility_mask: COMPAT,
        relocation_alignment: TWO_MB,
        relocation_region_gpa: layout.region.start,
        relocation_region_size: layout.region.end - layout.region.start,
        minimum_relocation_gpa: layout.region.start,
        maximum_relocation_gpa: maximum,
        is_vtl2: true,
        apply_rip_offset: true,
        apply_gdtr_offset: x86,
        vp_index: 0,
        vtl: Vtl::Vtl2,
    }];
    if let Some(t) = &layout.page_tables {
        out.push(IgvmInitializationHeader::PageTableRelocationRegion {
            compatibility_mask: COMPAT,
            gpa: t.start,
            size: t.end - t.start,
            used_size: t.end - t.start,
            vp_index: 0,
            vtl: Vtl::Vtl2,
        });
    }
    out
}

/// The VBS launch measurement of an IGVM file (the igvm crate's
/// `generate_vbs_measurement`, SHA-256 over the measured pages and the VP context), as hex.
pub fn digest(igvm: &[u8]) -> Result<String> {
    let file = IgvmFile::new_from_binary(igvm, None).context("parsing the IGVM file")?;
    let digest = igvm::measurement::generate_vbs_measurement(file.directives(), COMPAT)
        .map_err(|e| anyhow!("measuring the IGVM file: {e}"))?;
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

fn page_directives(pages: Pages) -> Vec<IgvmDirectiveHeader> {
    pages
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
        .collect()
}

/// A payload ELF of either class: its segments and its entry point's physical address.
struct Payload {
    pages: Pages,
    spans: Vec<(usize, Range<u64>)>,
    entry: u64,
}

fn payload_of<H: FileHeader<Endian = Endianness>>(data: &[u8], arch: IgvmArch) -> Result<Payload> {
    let file = ElfFile::<H>::parse(data).context("not an ELF")?;
    let header = file.elf_header();
    let endian = file.endian();
    let machine = header.e_machine(endian);
    let ok = match arch {
        IgvmArch::X86_64 => [elf::EM_X86_64, elf::EM_386].contains(&machine),
        IgvmArch::Aarch64 => machine == elf::EM_AARCH64,
    };
    if !ok {
        bail!("e_machine {machine} is not an {arch:?} machine");
    }
    if header.e_type(endian) != elf::ET_EXEC {
        bail!("it must be a static ET_EXEC image (no relocations)");
    }
    let segs = segments(&file, data)?;
    if segs.is_empty() {
        bail!("it has no non-empty PT_LOAD segment");
    }
    let entry_vaddr: u64 = header.e_entry(endian).into();
    let entry = segs
        .iter()
        .find_map(|s| {
            let off = entry_vaddr.checked_sub(s.vaddr)?;
            (off < s.memsz).then_some(s.paddr + off)
        })
        .ok_or_else(|| anyhow!("entry point {entry_vaddr:#x} is outside every PT_LOAD segment"))?;
    let spans = segs
        .iter()
        .map(|s| Ok((s.index, page_span(s)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Payload {
        pages: load_pages(&segs)?,
        spans,
        entry,
    })
}

/// Adds the payload's pages to `pages` and writes VTL0's initial context into the boot page.
fn add_vtl0_payload(
    file: &ElfFile64<'_, Endianness>,
    pages: &mut Pages,
    params: &Range<u64>,
    payload: &[u8],
    arch: IgvmArch,
) -> Result<()> {
    let payload = match payload.get(4) /* EI_CLASS */ {
        Some(&elf::ELFCLASS32) => payload_of::<elf::FileHeader32<Endianness>>(payload, arch)?,
        Some(&elf::ELFCLASS64) => payload_of::<elf::FileHeader64<Endianness>>(payload, arch)?,
        _ => bail!("not an ELF (no ELF32 or ELF64 class byte)"),
    };
    // The paravisor's image: every page it places, the parameter pages included.
    let first = pages.keys().next().copied().unwrap_or(0).min(params.start);
    let last = pages
        .keys()
        .next_back()
        .map_or(0, |g| g + PAGE)
        .max(params.end);
    for (index, span) in &payload.spans {
        if span.start < last && first < span.end {
            bail!(
                "PT_LOAD #{index} {:#x}..{:#x} overlaps the paravisor's image {first:#x}..{last:#x}",
                span.start,
                span.end
            );
        }
        if arch == IgvmArch::X86_64 && span.end > 1 << 32 {
            bail!(
                "PT_LOAD #{index} {:#x}..{:#x} ends above 4 GiB: VTL0 starts in 32-bit                  protected mode with paging off",
                span.start,
                span.end
            );
        }
    }
    let boot_page = vtl0_boot_page(file)?;
    match pages.get(&boot_page) {
        None => bail!("VTL0 boot page {boot_page:#x} is outside every PT_LOAD segment"),
        Some(page) if page.iter().any(|&b| b != 0) => {
            bail!("VTL0 boot page {boot_page:#x} has file data; it must be NOLOAD")
        }
        Some(_) => {}
    }
    pages.insert(boot_page, vtl0_boot_page_bytes(arch, payload.entry));
    pages.extend(payload.pages);
    Ok(())
}

/// The GPA of the image's VTL0 boot page, checked to be one aligned page.
fn vtl0_boot_page(file: &ElfFile64<'_, Endianness>) -> Result<u64> {
    let range = symbol_range(file, VTL0_BOOT_START, VTL0_BOOT_END)?;
    let start = range.start;
    if start % PAGE != 0 || range.end - range.start != PAGE {
        bail!(
            "VTL0 boot page `{VTL0_BOOT_START}`..`{VTL0_BOOT_END}` ({start:#x}) must be one \
             aligned 4 KiB page"
        );
    }
    Ok(start)
}

/// VTL0's initial context (see the module doc) as TLFS `HV_INITIAL_VP_CONTEXT` bytes.
fn vtl0_context(arch: IgvmArch, entry: u64) -> Vec<u8> {
    use hvdef::aarch64::HvArm64InitialVpContext;
    use hvdef::x86_64::{HvX64InitialVpContext, HvX64SegmentRegister, HvX64TableRegister};
    match arch {
        IgvmArch::X86_64 => {
            let seg = |selector, limit, attributes| HvX64SegmentRegister {
                base: 0,
                limit,
                selector,
                attributes,
            };
            let data = seg(0x10, 0xFFFF_FFFF, DATA_ATTRIBUTES);
            let table = HvX64TableRegister {
                pad: [0; 3],
                limit: 0xFFFF,
                base: 0,
            };
            HvX64InitialVpContext {
                rip: entry,
                rsp: 0,
                rflags: 0x2,
                cs: seg(0x08, 0xFFFF_FFFF, VTL0_CODE32_ATTRIBUTES),
                ds: data,
                es: data,
                fs: data,
                gs: data,
                ss: data,
                tr: seg(0, 0xFFFF, BUSY_TSS_ATTRIBUTES),
                ldtr: seg(0, 0xFFFF, LDTR_ATTRIBUTES),
                idtr: table,
                gdtr: table,
                efer: 0,
                cr0: VTL0_CR0,
                cr3: 0,
                cr4: 0,
                msr_cr_pat: PAT,
            }
            .as_bytes()
            .to_vec()
        }
        IgvmArch::Aarch64 => HvArm64InitialVpContext {
            pc: entry,
            sctlr_el1: SCTLR_EL1,
            ..Default::default()
        }
        .as_bytes()
        .to_vec(),
    }
}

/// The VTL0 boot page: header, then the context, then zeros.
fn vtl0_boot_page_bytes(arch: IgvmArch, entry: u64) -> Vec<u8> {
    let context = vtl0_context(arch, entry);
    let header = vtl0_boot::Vtl0BootHeader {
        magic: vtl0_boot::MAGIC,
        version: vtl0_boot::VERSION,
        arch: arch.boot_page_code(),
        context_size: context.len() as u32,
        reserved: 0,
    };
    let mut page = Vec::with_capacity(PAGE as usize);
    page.extend(header.as_bytes());
    page.extend(context);
    page.resize(PAGE as usize, 0);
    page
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

fn vp_context(
    file: &ElfFile64<'_, Endianness>,
    arch: IgvmArch,
    layout: &Vtl2Layout,
) -> Result<IgvmDirectiveHeader> {
    use AArch64Register as A;
    use X86Register as X;
    let (vtl, compatibility_mask) = (Vtl::Vtl2, COMPAT);
    if arch == IgvmArch::Aarch64 {
        // The MMU is off at entry, so PC must be the physical address.
        let (_, pc) = symbol_paddr(file, "_start")?;
        let registers = vec![
            A::Pc(pc),
            // OpenHCL's convention (`load_openhcl_arm64`): X0 is the parameters' offset from the
            // image's base, which relocation leaves alone.
            A::X0(layout.params_offset),
            A::X1(0),
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
    writeln!(
        out,
        "VBS measurement (SHA-256): {}",
        digest(igvm).context("the measurement")?
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
            D::VpCount(p) | D::MemoryMap(p) | D::CommandLine(p) => {
                let what = match d {
                    D::VpCount(_) => "VP count",
                    D::MemoryMap(_) => "memory map",
                    _ => "command line",
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
            D::RequiredMemory {
                gpa,
                number_of_bytes,
                vtl2_protectable,
                compatibility_mask: mask,
            } => {
                let end = gpa + u64::from(*number_of_bytes);
                let protectable = if *vtl2_protectable {
                    ", VTL2 protectable"
                } else {
                    ""
                };
                writeln!(
                    out,
                    "  required memory {gpa:#x}..{end:#x}{protectable}, compatibility mask \
                     {mask:#x}"
                )?;
            }
            // Everything this builder never emits.
            other => writeln!(out, "  {other:x?}")?,
        }
    }
    flush(&mut out, &mut run)?;
    dump_vtl0(&mut out, &file)?;
    Ok(out)
}

/// The VTL0 boot page of an IGVM file (found by its magic) and the payload's page regions:
/// the contiguous regions of placed pages (page data and parameter areas) other than the one
/// holding the boot page (the paravisor's image). Shared by the text and JSON dumps.
pub(crate) struct Vtl0Boot {
    pub at: u64,
    pub page: Vec<u8>,
    pub payload: Vec<Range<u64>>,
}

impl Vtl0Boot {
    /// The page's header; a page cut short (page data may be shorter than a page) reads as
    /// zeros where it ends.
    pub fn header(&self) -> vtl0_boot::Vtl0BootHeader {
        let mut header = vtl0_boot::Vtl0BootHeader::default();
        let n = self.page.len().min(size_of::<vtl0_boot::Vtl0BootHeader>());
        header.as_mut_bytes()[..n].copy_from_slice(&self.page[..n]);
        header
    }
}

/// The name of a `Vtl0BootHeader::arch` value.
pub(crate) fn vtl0_arch_name(arch: u32) -> &'static str {
    match arch {
        vtl0_boot::ARCH_X86_64 => "x86_64",
        vtl0_boot::ARCH_AARCH64 => "aarch64",
        _ => "unknown",
    }
}

/// See [`Vtl0Boot`]; `None` when the file carries no VTL0 payload.
pub(crate) fn vtl0_boot(file: &IgvmFile) -> Option<Vtl0Boot> {
    use IgvmDirectiveHeader as D;
    let mut placed = std::collections::BTreeSet::new();
    let mut boot = None;
    for d in file.directives() {
        match d {
            D::PageData { gpa, data, .. } => {
                placed.insert(*gpa);
                if data.get(..8) == Some(&VTL0_BOOT_MAGIC.to_le_bytes()[..]) {
                    boot = Some((*gpa, data.clone()));
                }
            }
            D::ParameterInsert(p) => {
                let size = file.directives().iter().find_map(|a| match a {
                    D::ParameterArea {
                        number_of_bytes,
                        parameter_area_index,
                        ..
                    } if *parameter_area_index == p.parameter_area_index => Some(*number_of_bytes),
                    _ => None,
                });
                placed.extend((p.gpa..p.gpa + size.unwrap_or(0)).step_by(PAGE as usize));
            }
            _ => {}
        }
    }
    let (at, page) = boot?;
    let mut regions: Vec<Range<u64>> = Vec::new();
    for gpa in placed {
        match regions.last_mut() {
            Some(r) if r.end == gpa => r.end += PAGE,
            _ => regions.push(gpa..gpa + PAGE),
        }
    }
    regions.retain(|r| !r.contains(&at));
    Some(Vtl0Boot {
        at,
        page,
        payload: regions,
    })
}

/// The VTL0 part of the dump: the boot page (found by its magic), its context, and the page
/// regions outside the one holding the boot page (the paravisor's image), which are the
/// payload's.
fn dump_vtl0(out: &mut String, file: &IgvmFile) -> Result<()> {
    use hvdef::aarch64::HvArm64InitialVpContext;
    use hvdef::x86_64::HvX64InitialVpContext;
    use zerocopy::FromBytes;
    let Some(boot) = vtl0_boot(file) else {
        writeln!(
            out,
            "VTL0: no payload (no page holds a VTL0 boot page header)"
        )?;
        return Ok(());
    };
    let header = boot.header();
    let Vtl0Boot { at, page, payload } = boot;
    let (version, arch, size) = (header.version, header.arch, header.context_size as usize);
    let arch_name = vtl0_arch_name(arch);
    writeln!(out, "VTL0:")?;
    writeln!(
        out,
        "  VTL0 boot page at {at:#x}: version {version}, arch {arch_name}, context {size} bytes"
    )?;
    for r in &payload {
        let n = (r.end - r.start) / PAGE;
        writeln!(
            out,
            "  VTL0 payload: pages {:#x}..{:#x} ({n} pages)",
            r.start, r.end
        )?;
    }
    let context = page.get(VTL0_CONTEXT_OFFSET..VTL0_CONTEXT_OFFSET + size);
    let mut line = |name: &str, value: String| writeln!(out, "    VTL0 {name:<10} {value}");
    match (arch, context) {
        (vtl0_boot::ARCH_X86_64, Some(bytes)) if size == size_of::<HvX64InitialVpContext>() => {
            let c = HvX64InitialVpContext::read_from_bytes(bytes).expect("sized");
            for (name, v) in [("rip", c.rip), ("rsp", c.rsp), ("rflags", c.rflags)] {
                line(name, format!("{v:#x}"))?;
            }
            for (name, g) in [
                ("cs", c.cs),
                ("ds", c.ds),
                ("es", c.es),
                ("fs", c.fs),
                ("gs", c.gs),
                ("ss", c.ss),
                ("tr", c.tr),
                ("ldtr", c.ldtr),
            ] {
                line(
                    name,
                    format!(
                        "selector {:#x} base {:#x} limit {:#x} attributes {:#x}",
                        g.selector, g.base, g.limit, g.attributes
                    ),
                )?;
            }
            for (name, t) in [("idtr", c.idtr), ("gdtr", c.gdtr)] {
                line(name, format!("base {:#x} limit {:#x}", t.base, t.limit))?;
            }
            for (name, v) in [
                ("efer", c.efer),
                ("cr0", c.cr0),
                ("cr3", c.cr3),
                ("cr4", c.cr4),
                ("pat", c.msr_cr_pat),
            ] {
                line(name, format!("{v:#x}"))?;
            }
        }
        (vtl0_boot::ARCH_AARCH64, Some(bytes)) if size == size_of::<HvArm64InitialVpContext>() => {
            let c = HvArm64InitialVpContext::read_from_bytes(bytes).expect("sized");
            for (name, v) in [
                ("pc", c.pc),
                ("sp_el1", c.sp_elh),
                ("sctlr_el1", c.sctlr_el1),
                ("mair_el1", c.mair_el1),
                ("tcr_el1", c.tcr_el1),
                ("vbar_el1", c.vbar_el1),
                ("ttbr0_el1", c.ttbr0_el1),
                ("ttbr1_el1", c.ttbr1_el1),
                ("x18", c.x18),
            ] {
                line(name, format!("{v:#x}"))?;
            }
        }
        _ => writeln!(out, "    (context not decoded: unknown arch or size)")?,
    }
    Ok(())
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

    /// The dumps' header decoder: a boot page shorter than the header (page data may be
    /// short) reads as zeros past its end instead of panicking; a whole one field by field.
    #[test]
    fn vtl0_boot_header_of_short_and_whole_pages() {
        let boot = |page: Vec<u8>| Vtl0Boot {
            at: 0,
            page,
            payload: vec![],
        };
        let short = boot(VTL0_BOOT_MAGIC.to_le_bytes()[..].to_vec());
        let h = short.header();
        assert_eq!(
            (h.magic, h.version, h.arch, h.context_size),
            (VTL0_BOOT_MAGIC, 0, 0, 0)
        );
        let whole = boot(vtl0_boot_page_bytes(IgvmArch::Aarch64, 0x1000));
        let h = whole.header();
        assert_eq!(
            (h.version, h.arch, h.context_size, h.reserved),
            (1, 2, 72, 0)
        );
        assert_eq!(vtl0_arch_name(h.arch), "aarch64");
    }

    fn build_plain(elf: &[u8], arch: IgvmArch) -> Result<Vec<u8>> {
        build(elf, arch, None)
    }

    /// 2 MiB aligned, as VTL2 memory must be.
    const SEG1: u64 = 0x20_0000;
    const SEG2: u64 = 0x30_0010; // unaligned bss-only segment: pages 0x300000..0x305000
    /// The parameter pages: three pages of SEG2 after its first, as the linker scripts place
    /// them; then (x86) the page tables, last.
    const PARAMS: u64 = 0x30_1000;
    const PARAM_SYMS: [(&str, u64); 2] = [(PARAMS_START, PARAMS), (PARAMS_END, PARAMS + 0x3000)];
    /// SEG2's size: through the page after the parameters.
    const MEMSZ2: u64 = 0x4ff0;

    /// Minimal static ELF64: two PT_LOADs (data+bss at SEG1, pure bss at SEG2) and a symtab
    /// whose string table doubles as the section-name table.
    fn test_elf(machine: u16, syms: &[(&str, u64)]) -> Vec<u8> {
        test_elf_sized(machine, syms, MEMSZ2)
    }

    /// [`test_elf`] with SEG2 `memsz2` bytes long.
    fn test_elf_sized(machine: u16, syms: &[(&str, u64)], memsz2: u64) -> Vec<u8> {
        let (filesz, memsz1) = (0x1800u64, 0x2800u64);
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
        x86_syms_sized(MEMSZ2)
    }

    /// The x86 symbols for a SEG2 of `memsz2` bytes: the page tables its last page.
    fn x86_syms_sized(memsz2: u64) -> Vec<(&'static str, u64)> {
        let tables = (SEG2 + memsz2).div_ceil(0x1000) * 0x1000 - 0x1000;
        let mut syms = vec![
            ("_start64", SEG1),
            ("boot_pml4", tables),
            ("boot_gdt", SEG1 + 0x800),
            (PAGETABLES_START, tables),
            (PAGETABLES_END, tables + 0x1000),
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
        let data = [0x200000, 0x201000].map(|g| (g, false));
        let zero = [0x202000, 0x300000, 0x304000].map(|g| (g, true));
        data.into_iter().chain(zero).collect()
    }

    #[test]
    fn x86_roundtrip() {
        let f = parse(&build_plain(&x86_elf(), IgvmArch::X86_64).expect("build"));
        let [IgvmPlatformHeader::SupportedPlatform(p)] = f.platforms() else {
            panic!("one platform")
        };
        assert_eq!(
            (p.platform_type, p.highest_vtl, p.compatibility_mask),
            (IgvmPlatformType::VSM_ISOLATION, 2, 1)
        );
        assert_eq!(page_gpas(&f), expected_pages());
        // VTL2 memory first, VTL2-protectable: the image (to 0x305000) and heap room for 1,024
        // VPs (64 KiB + 1,024 x 32 KiB = 0x201_0000), 0x231_5000 rounded up to 2 MiB.
        assert_eq!(
            f.directives().first(),
            Some(&IgvmDirectiveHeader::RequiredMemory {
                gpa: SEG1,
                compatibility_mask: 1,
                number_of_bytes: 0x220_0000,
                vtl2_protectable: true,
            })
        );
        let Some(IgvmDirectiveHeader::PageData { data, .. }) = f.directives().get(1) else {
            panic!()
        };
        assert_eq!(data[..4], [1, 1, 3, 3]); // (i % 251) | 1
                                             // Relocatable as OpenHCL's file: the region is the image but its page tables, the
                                             // page tables their own region.
        assert_eq!(
            f.initializations(),
            [
                IgvmInitializationHeader::RelocatableRegion {
                    compatibility_mask: 1,
                    relocation_alignment: 0x20_0000,
                    relocation_region_gpa: SEG1,
                    relocation_region_size: 0x30_4000 - SEG1,
                    minimum_relocation_gpa: SEG1,
                    // All 34 MiB of VTL2 memory below 4 GiB: 4 GiB - 34 MiB + the region's
                    // 2 MiB (the loader checks base + region size against the maximum).
                    maximum_relocation_gpa: (4 << 30) - 0x220_0000 + 0x20_0000,
                    is_vtl2: true,
                    apply_rip_offset: true,
                    apply_gdtr_offset: true,
                    vp_index: 0,
                    vtl: Vtl::Vtl2,
                },
                IgvmInitializationHeader::PageTableRelocationRegion {
                    compatibility_mask: 1,
                    gpa: 0x30_4000,
                    size: 0x1000,
                    used_size: 0x1000,
                    vp_index: 0,
                    vtl: Vtl::Vtl2,
                },
            ]
        );
        let Some(IgvmDirectiveHeader::X64VbsVpContext { vtl, registers, .. }) =
            f.directives().last()
        else {
            panic!("x86 VP context last")
        };
        assert_eq!(*vtl, Vtl::Vtl2);
        assert!(registers.contains(&X86Register::Rip(SEG1)));
        assert!(registers.contains(&X86Register::Cr3(0x30_4000)));
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
        let bytes =
            build_plain(&test_elf(elf::EM_AARCH64, &syms), IgvmArch::Aarch64).expect("build");
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
        // OpenHCL's convention: X0 the parameters' offset from the base (boot::igvm).
        assert!(registers.contains(&AArch64Register::X0(PARAMS - SEG1)));
        assert!(registers.contains(&AArch64Register::X1(0)));
    }

    #[test]
    fn missing_symbol_is_named() {
        let syms: Vec<_> = x86_syms()
            .into_iter()
            .filter(|(n, _)| *n != "boot_pml4")
            .collect();
        let elf = test_elf(elf::EM_X86_64, &syms);
        let err = build_plain(&elf, IgvmArch::X86_64).expect_err("must fail");
        assert!(err.to_string().contains("boot_pml4"), "{err:#}");
        for (start, end, name) in [
            (None, Some(PARAMS + 0x3000), PARAMS_START),
            (Some(PARAMS), None, PARAMS_END),
        ] {
            let err = build_plain(&x86_elf_with_params(start, end), IgvmArch::X86_64)
                .expect_err("must fail");
            assert!(err.to_string().contains(name), "{err:#}");
        }
    }

    /// The parameter area, both parameters and the insert, in the order the crate and loaders
    /// require (area, usages, insert) and before the VP context.
    #[test]
    fn parameters_declared_and_inserted() {
        use IgvmDirectiveHeader as D;
        let f = parse(&build_plain(&x86_elf(), IgvmArch::X86_64).expect("build"));
        let params: Vec<_> = f
            .directives()
            .iter()
            .filter(|d| !matches!(d, D::PageData { .. } | D::RequiredMemory { .. }))
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
            params[..5],
            [
                &D::ParameterArea {
                    number_of_bytes: 0x3000,
                    parameter_area_index: 0,
                    initial_data: vec![],
                },
                &D::VpCount(at(0)),
                &D::MemoryMap(at(0x1000)),
                &D::CommandLine(at(0x2000)),
                &D::ParameterInsert(insert),
            ]
        );
        assert!(matches!(params[5], D::X64VbsVpContext { .. }));
        assert_eq!(params.len(), 6);
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
            let f = parse(&build_plain(&elf, arch).expect("build"));
            let overlap = page_gpas(&f)
                .into_iter()
                .filter(|(gpa, _)| (PARAMS..PARAMS + 0x3000).contains(gpa))
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
            (SEG1, SEG1 + 0x3000, "has file data"),
            // Running past SEG2: not reserved by the image.
            (0x30_3000, 0x30_6000, "outside every PT_LOAD"),
            // Not in any segment at all.
            (0x30_0000, 0x30_2000, "outside every PT_LOAD"),
        ] {
            let elf = x86_elf_with_params(Some(start), Some(end));
            let err = build_plain(&elf, IgvmArch::X86_64).expect_err("must fail");
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
        let f = parse(&build_plain(&x86_elf(), IgvmArch::X86_64).expect("build"));
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

        let mut golden = vec![0u8; 0x3000];
        golden[..4].copy_from_slice(&[2, 0, 0, 0]);
        golden[0x1000..0x1018].copy_from_slice(&[
            0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x00, 0x3f, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0,
        ]);
        assert_eq!(area, golden);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(build_plain(&x86_elf(), IgvmArch::Aarch64).is_err());
        assert!(build_plain(b"not an elf", IgvmArch::X86_64).is_err());
        assert!(dump(b"IGVMjunk").is_err());
        assert!(dump(&[]).is_err());
    }

    #[test]
    fn dump_mentions_platform_vtl_and_ranges() {
        let text = dump(&build_plain(&x86_elf(), IgvmArch::X86_64).expect("build")).expect("dump");
        for needle in [
            "format revision 1",
            "VSM_ISOLATION: highest VTL2",
            "VP context VTL2",
            "pages 0x200000..0x202000 (2 pages) NORMAL data",
            "pages 0x202000..0x203000 (1 pages) NORMAL zero",
            "pages 0x300000..0x301000 (1 pages) NORMAL zero",
            "Rip        0x200000",
            "Cs         selector 0x8 base 0x0 limit 0xffffffff attributes 0xa09b",
            "parameter area #0: 0x3000 bytes, 0 bytes initial data",
            "VP count parameter: area #0 offset 0x0",
            "memory map parameter: area #0 offset 0x1000",
            "parameter insert: area #0 at GPA 0x301000, compatibility mask 0x1",
            "command line parameter: area #0 offset 0x2000",
            "required memory 0x200000..0x2400000, VTL2 protectable, compatibility mask 0x1",
            "VBS measurement (SHA-256): ",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }
    /// The VTL0 boot page: one page after the parameter pages, SEG2 grown to hold it.
    const BOOT_PAGE: u64 = PARAMS + 0x3000;
    const VTL0_AT: u64 = 0x0400_0000;

    fn elf_with_boot_page(arch: IgvmArch) -> Vec<u8> {
        let boot = [
            (VTL0_BOOT_START, BOOT_PAGE),
            (VTL0_BOOT_END, BOOT_PAGE + 0x1000),
        ];
        // One page more than test_elf's SEG2: the boot page, then (x86) the page tables.
        let memsz2 = MEMSZ2 + 0x1000;
        let (machine, mut syms) = match arch {
            IgvmArch::X86_64 => (elf::EM_X86_64, x86_syms_sized(memsz2)),
            IgvmArch::Aarch64 => (
                elf::EM_AARCH64,
                [&[("_start", SEG1)][..], &PARAM_SYMS].concat(),
            ),
        };
        syms.extend(boot);
        test_elf_sized(machine, &syms, memsz2)
    }

    /// A payload: 0x1800 bytes at `at`, entry 0x40 into it.
    fn payload(elf32: bool, machine: u16, at: u64) -> Vec<u8> {
        let code: Vec<u8> = (0..0x1800u32).map(|i| (i % 253) as u8 | 0x80).collect();
        test_elf::minimal_elf(elf32, machine, at, at + 0x40, &code)
    }

    fn page_at(f: &IgvmFile, at: u64) -> Option<Vec<u8>> {
        f.directives().iter().find_map(|d| match d {
            IgvmDirectiveHeader::PageData { gpa, data, .. } if *gpa == at => Some(data.clone()),
            _ => None,
        })
    }

    #[test]
    fn vtl0_payload_round_trip_and_boot_page() {
        use hvdef::x86_64::HvX64InitialVpContext;
        use zerocopy::FromBytes;
        for elf32 in [false, true] {
            let machine = if elf32 { elf::EM_386 } else { elf::EM_X86_64 };
            let vtl0 = payload(elf32, machine, VTL0_AT);
            let bytes = build(
                &elf_with_boot_page(IgvmArch::X86_64),
                IgvmArch::X86_64,
                Some(&vtl0),
            )
            .expect("build");
            let f = parse(&bytes);
            // The payload's two pages, with its bytes, after the paravisor's.
            let gpas = page_gpas(&f);
            assert_eq!(
                gpas[gpas.len() - 2..],
                [(VTL0_AT, false), (VTL0_AT + 0x1000, false)]
            );
            let first = page_at(&f, VTL0_AT).expect("payload page");
            assert_eq!(first[..2], [0x80, 0x81]);
            let second = page_at(&f, VTL0_AT + 0x1000).expect("payload page");
            assert_eq!(second[0x7ff], (0x17ff % 253) as u8 | 0x80);
            assert_eq!(second[0x800..], [0; 0x800]);
            // The boot page: header, then the TLFS context.
            let page = page_at(&f, BOOT_PAGE).expect("boot page data");
            assert_eq!(page.len(), 0x1000);
            assert_eq!(
                page[..24],
                [
                    b'P', b'V', b'V', b'T', b'L', b'0', b'I', b'C', 1, 0, 0, 0, 1, 0, 0, 0, 224, 0,
                    0, 0, 0, 0, 0, 0
                ]
            );
            let c = HvX64InitialVpContext::read_from_bytes(&page[24..24 + 224]).unwrap();
            assert_eq!((c.rip, c.rsp, c.rflags), (VTL0_AT + 0x40, 0, 2));
            assert_eq!((c.cr0, c.cr3, c.cr4, c.efer), (0x11, 0, 0, 0));
            assert_eq!(
                (c.cs.selector, c.cs.attributes, c.cs.limit),
                (0x08, 0xC09B, !0)
            );
            for d in [c.ds, c.es, c.fs, c.gs, c.ss] {
                assert_eq!(
                    (d.selector, d.attributes, d.limit, d.base),
                    (0x10, 0xC093, !0, 0)
                );
            }
            assert_eq!((c.tr.attributes, c.tr.limit), (0x8B, 0xFFFF));
            assert_eq!(c.msr_cr_pat, 0x0007_0406_0007_0406);
            assert!(page[24 + 224..].iter().all(|&b| b == 0));
        }
        // arm64.
        let vtl0 = payload(false, elf::EM_AARCH64, 0x4800_0000);
        let f = parse(
            &build(
                &elf_with_boot_page(IgvmArch::Aarch64),
                IgvmArch::Aarch64,
                Some(&vtl0),
            )
            .expect("build"),
        );
        let page = page_at(&f, BOOT_PAGE).expect("boot page data");
        assert_eq!(page[12..20], [2, 0, 0, 0, 72, 0, 0, 0]);
        let c = hvdef::aarch64::HvArm64InitialVpContext::read_from_bytes(&page[24..96]).unwrap();
        assert_eq!(
            c,
            hvdef::aarch64::HvArm64InitialVpContext {
                pc: 0x4800_0040,
                sctlr_el1: 0x30D0_0800,
                ..Default::default()
            }
        );
    }

    #[test]
    fn no_payload_leaves_the_boot_page_zero() {
        let f = parse(
            &build(
                &elf_with_boot_page(IgvmArch::X86_64),
                IgvmArch::X86_64,
                None,
            )
            .unwrap(),
        );
        assert_eq!(page_at(&f, BOOT_PAGE), Some(vec![]));
        assert!(page_gpas(&f).iter().all(|&(g, _)| g < VTL0_AT));
    }

    #[test]
    fn vtl0_payload_overlapping_vtl2_is_refused() {
        // Over SEG2's last page: the paravisor's image is 0x200000..0x306000.
        let vtl0 = payload(false, elf::EM_X86_64, 0x30_5000);
        let err = build(
            &elf_with_boot_page(IgvmArch::X86_64),
            IgvmArch::X86_64,
            Some(&vtl0),
        )
        .expect_err("overlap");
        let text = format!("{err:#}");
        assert!(
            text.contains(
                "PT_LOAD #0 0x305000..0x307000 overlaps the paravisor's image 0x200000..0x306000"
            ),
            "{text}"
        );
        for (vtl0, needle) in [
            (payload(false, elf::EM_AARCH64, VTL0_AT), "e_machine 183"),
            (payload(false, elf::EM_X86_64, 0x1_0000_0000), "above 4 GiB"),
            (b"\x7fELF junk".to_vec(), "ELF"),
            (
                test_elf::minimal_elf(false, elf::EM_X86_64, VTL0_AT, 0x10, &[0x90; 16]),
                "entry point 0x10",
            ),
        ] {
            let err = build(
                &elf_with_boot_page(IgvmArch::X86_64),
                IgvmArch::X86_64,
                Some(&vtl0),
            )
            .expect_err(needle);
            assert!(format!("{err:#}").contains(needle), "{needle}: {err:#}");
        }
        // An ELF without the boot page cannot carry a payload.
        let vtl0 = payload(false, elf::EM_X86_64, VTL0_AT);
        let err = build(&x86_elf(), IgvmArch::X86_64, Some(&vtl0)).expect_err("no boot page");
        assert!(format!("{err:#}").contains(VTL0_BOOT_START), "{err:#}");
    }

    #[test]
    fn dump_shows_the_vtl0_payload_and_context() {
        let vtl0 = payload(false, elf::EM_X86_64, VTL0_AT);
        let bytes = build(
            &elf_with_boot_page(IgvmArch::X86_64),
            IgvmArch::X86_64,
            Some(&vtl0),
        )
        .unwrap();
        let text = dump(&bytes).expect("dump");
        for needle in [
            "VTL0 boot page at 0x304000: version 1, arch x86_64, context 224 bytes",
            "VTL0 payload: pages 0x4000000..0x4002000 (2 pages)",
            "VTL0 rip        0x4000040",
            "VTL0 cs         selector 0x8 base 0x0 limit 0xffffffff attributes 0xc09b",
            "VTL0 cr0        0x11",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        let plain = dump(
            &build(
                &elf_with_boot_page(IgvmArch::X86_64),
                IgvmArch::X86_64,
                None,
            )
            .unwrap(),
        )
        .unwrap();
        assert!(
            plain.contains("VTL0: no payload (no page holds a VTL0 boot page header)"),
            "{plain}"
        );
    }
}
