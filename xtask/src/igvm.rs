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

mod dump;
mod json;
pub use dump::dump;
use dump::{low_u64, variant_name, vtl0_arch_name, vtl0_boot, Vtl0Boot};
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

#[cfg(test)]
mod tests;
