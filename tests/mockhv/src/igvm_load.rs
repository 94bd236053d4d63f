//! Loading the paravisor from its IGVM file, as a VMM's IGVM loader does, for a QEMU that
//! cannot read IGVM itself: the page data, the parameter areas filled with what the loader
//! knows (the VP count, the memory map), and the VTL2 VP context, here as plain values the
//! runner hands QEMU as loader blobs (`mockhv::invm`).
//!
//! The rules follow OpenVMM's IGVM loader (`openvmm/openvmm_core/src/worker/vm_loaders/igvm.rs`)
//! for the directives this paravisor's file uses: one supported platform, VSM isolation with
//! VTL2 the highest VTL, and its compatibility mask selecting the headers; page data 4 KiB
//! pages (an empty one is a zero page), the VTL0 payload's included (the file does not say
//! which VTL a page is for; the paravisor's VTL0 boot page does); a parameter area zero-filled (or its initial data), a
//! `VpCount` parameter as a u32 and a `MemoryMap` parameter as `IGVM_VHS_MEMORY_MAP_ENTRY`
//! records (RAM as MEMORY, sorted, ended by an all-zero record), inserted at its GPA; the VP
//! context for VTL2 only (a VSM file's lower VTLs start from the paravisor). Any other
//! directive is refused by name, as a loader that does not implement it must.

use std::ops::Range;

use anyhow::{bail, Context, Result};
use igvm::registers::{AArch64Register, X86Register};
use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmPlatformHeader};
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
}

struct Area {
    index: u32,
    bytes: Vec<u8>,
}

/// Loads `bytes` for a machine of `arch` with `vp_count` VPs and this RAM.
pub fn load(bytes: &[u8], arch: Arch, vp_count: u32, ram: &[Range<u64>]) -> Result<LoadedIgvm> {
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
    let mut pages = Vec::new();
    let mut parameters = Vec::new();
    let mut areas: Vec<Area> = Vec::new();
    let mut context = None;
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
                extend(*gpa, PAGE_SIZE_4K);
                if data.iter().any(|&b| b != 0) {
                    let mut page = data.clone();
                    page.resize(PAGE_SIZE_4K as usize, 0);
                    pages.push((*gpa, page));
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
                });
            }
            IgvmDirectiveHeader::VpCount(p) => {
                let a = area(&mut areas, p.parameter_area_index)?;
                put(&mut areas[a].bytes, p.byte_offset, vp_count.as_bytes())?;
            }
            IgvmDirectiveHeader::MemoryMap(p) => {
                let a = area(&mut areas, p.parameter_area_index)?;
                let mut ram = ram.to_vec();
                ram.sort_by_key(|r| r.start);
                // OpenVMM asserts page-aligned ranges and walks them sorted and apart; an empty
                // one would end the list early (a 0-page record is its end).
                for (i, r) in ram.iter().enumerate() {
                    let aligned = r.start % PAGE_SIZE_4K == 0 && r.end % PAGE_SIZE_4K == 0;
                    let apart = ram.get(i + 1).is_none_or(|next| r.end <= next.start);
                    if r.start >= r.end || !aligned || !apart {
                        bail!("RAM range {:#x}..{:#x} is empty, not page aligned or overlaps the next: not a memory map", r.start, r.end);
                    }
                }
                let mut records = Vec::new();
                for r in &ram {
                    records.extend_from_slice(
                        IGVM_VHS_MEMORY_MAP_ENTRY {
                            starting_gpa_page_number: r.start / PAGE_SIZE_4K,
                            number_of_pages: (r.end - r.start) / PAGE_SIZE_4K,
                            entry_type: MemoryMapEntryType::MEMORY,
                            flags: 0,
                            reserved: 0,
                        }
                        .as_bytes(),
                    );
                }
                let room = areas[a].bytes.len().saturating_sub(p.byte_offset as usize);
                let record = size_of::<IGVM_VHS_MEMORY_MAP_ENTRY>();
                if records.len() + record > room {
                    bail!(
                        "the memory map ({} ranges) does not fit its parameter area",
                        ram.len()
                    );
                }
                put(&mut areas[a].bytes, p.byte_offset, &records)?;
            }
            IgvmDirectiveHeader::ParameterInsert(p) => {
                if p.compatibility_mask & mask == 0 {
                    continue;
                }
                let a = area(&mut areas, p.parameter_area_index)?;
                let bytes = areas.remove(a).bytes;
                extend(p.gpa, bytes.len() as u64);
                parameters.push((p.gpa, bytes));
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
                    bail!("a VP context for {vtl:?}: a VSM file starts only VTL2");
                }
                context = Some(x64_context(registers)?);
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
                    bail!("a VP context for {vtl:?}: a VSM file starts only VTL2");
                }
                context = Some(arm64_context(registers)?);
            }
            other => bail!("the IGVM loader does not implement {other:?}"),
        }
    }
    let context = context.context("the IGVM file has no VTL2 VP context")?;
    Ok(LoadedIgvm {
        arch,
        pages,
        parameters,
        context,
        extent: low..high,
    })
}

fn put(area: &mut [u8], offset: u32, bytes: &[u8]) -> Result<()> {
    let at = offset as usize;
    let slot = area
        .get_mut(at..at + bytes.len())
        .with_context(|| format!("a parameter at offset {offset:#x} lies outside its area"))?;
    slot.copy_from_slice(bytes);
    Ok(())
}

fn x64_context(registers: &[X86Register]) -> Result<VpContext> {
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
    for r in registers {
        match r {
            X86Register::Rip(v) => rip = Some(*v),
            X86Register::Rsp(v) => ctx.rsp = *v,
            X86Register::Rflags(v) => ctx.rflags = *v,
            X86Register::Cr0(v) => ctx.cr0 = *v,
            X86Register::Cr3(v) => ctx.cr3 = *v,
            X86Register::Cr4(v) => ctx.cr4 = *v,
            X86Register::Efer(v) => ctx.efer = *v,
            X86Register::Pat(v) => ctx.msr_cr_pat = *v,
            X86Register::Gdtr(t) => ctx.gdtr = table(t),
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
    Ok(VpContext::X64(ctx))
}

fn arm64_context(registers: &[AArch64Register]) -> Result<VpContext> {
    let (mut pc, mut cpsr, mut x) = (None, None, [0; 4]);
    for r in registers {
        match *r {
            AArch64Register::Pc(v) => pc = Some(v),
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
    use igvm::{IgvmDirectiveHeader as D, IgvmRevision};
    use igvm_defs::{
        IgvmPageDataFlags, IgvmPageDataType, IGVM_VHS_PARAMETER, IGVM_VHS_PARAMETER_INSERT,
        IGVM_VHS_SUPPORTED_PLATFORM, IGVM_VSM_ISOLATION_PLATFORM_VERSION,
    };

    const MASK: u32 = 1;

    fn file(platform_type: IgvmPlatformType, directives: Vec<D>) -> Vec<u8> {
        let platform = IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
            compatibility_mask: MASK,
            highest_vtl: 2,
            platform_type,
            platform_version: IGVM_VSM_ISOLATION_PLATFORM_VERSION,
            shared_gpa_boundary: 0,
        });
        let f = IgvmFile::new(IgvmRevision::V1, vec![platform], vec![], directives).unwrap();
        let mut out = Vec::new();
        f.serialize(&mut out).unwrap();
        out
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

    fn context(vtl: igvm::hv_defs::Vtl) -> D {
        D::X64VbsVpContext {
            vtl,
            registers: vec![
                X86Register::Rip(0x10_0040),
                X86Register::Cr3(0x11_1000),
                X86Register::Cr0(0x8001_0033),
                X86Register::Gdtr(igvm::registers::TableRegister {
                    base: 0x10_2000,
                    limit: 23,
                }),
            ],
            compatibility_mask: MASK,
        }
    }

    fn parameters(at: u64) -> Vec<D> {
        let p = |byte_offset| IGVM_VHS_PARAMETER {
            parameter_area_index: 0,
            byte_offset,
        };
        vec![
            D::ParameterArea {
                number_of_bytes: 0x2000,
                parameter_area_index: 0,
                initial_data: vec![],
            },
            D::VpCount(p(0)),
            D::MemoryMap(p(0x1000)),
            D::ParameterInsert(IGVM_VHS_PARAMETER_INSERT {
                gpa: at,
                compatibility_mask: MASK,
                parameter_area_index: 0,
            }),
        ]
    }

    /// Page data placed (zero pages left to the machine's zeroed RAM), the parameters filled as
    /// the paravisor's `boot::igvm` reads them (a u32 VP count; memory map records, RAM as
    /// MEMORY, sorted, then an all-zero record), the VTL2 context's registers.
    #[test]
    fn pages_parameters_and_context() {
        let mut directives = vec![page(0x10_0000, b"code".to_vec()), page(0x10_1000, vec![])];
        directives.extend(parameters(0x10_2000));
        directives.push(context(igvm::hv_defs::Vtl::Vtl2));
        let ram = [0x1_0000_0000..0x1_4000_0000, 0..0x8000_0000];
        let l = load(
            &file(IgvmPlatformType::VSM_ISOLATION, directives),
            Arch::X86_64,
            3,
            &ram,
        )
        .unwrap();
        assert_eq!(l.pages.len(), 1);
        assert_eq!(
            (l.pages[0].0, &l.pages[0].1[..4]),
            (0x10_0000, &b"code"[..])
        );
        assert_eq!(l.pages[0].1.len(), 4096);
        assert_eq!(l.extent, 0x10_0000..0x10_4000);
        let [(gpa, area)] = &l.parameters[..] else {
            panic!("{:?}", l.parameters.len())
        };
        assert_eq!(*gpa, 0x10_2000);
        assert_eq!(area[..4], 3u32.to_le_bytes());
        let record = |n: usize| &area[0x1000 + 24 * n..0x1000 + 24 * (n + 1)];
        assert_eq!(
            record(0)[..16],
            [0u64.to_le_bytes(), 0x8_0000u64.to_le_bytes()].concat()
        );
        assert_eq!(
            record(1)[..16],
            [0x10_0000u64.to_le_bytes(), 0x4_0000u64.to_le_bytes()].concat()
        );
        assert_eq!(
            record(1)[16..18],
            MemoryMapEntryType::MEMORY.0.to_le_bytes()
        );
        assert_eq!(record(2), &[0; 24], "the list ends");
        let VpContext::X64(ctx) = l.context else {
            panic!()
        };
        assert_eq!(
            (ctx.rip, ctx.cr3, ctx.gdtr.base, ctx.gdtr.limit),
            (0x10_0040, 0x11_1000, 0x10_2000, 23)
        );
    }

    /// A memory map the loader cannot write faithfully is refused, not floored or cut short.
    #[test]
    fn broken_ram_ranges_are_refused() {
        let mut directives = vec![page(0x10_0000, b"x".to_vec())];
        directives.extend(parameters(0x10_2000));
        directives.push(context(igvm::hv_defs::Vtl::Vtl2));
        let bytes = file(IgvmPlatformType::VSM_ISOLATION, directives);
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
        let ram = vec![0..0x4000_0000, 0x4000_0000..0x8000_0000];
        let err =
            |bytes: Vec<u8>| format!("{:#}", load(&bytes, Arch::X86_64, 1, &ram).unwrap_err());
        let mut no_context = vec![page(0x10_0000, b"x".to_vec())];
        no_context.extend(parameters(0x10_2000));
        assert!(
            err(file(IgvmPlatformType::VSM_ISOLATION, no_context.clone()))
                .contains("no VTL2 VP context")
        );
        let mut vtl0 = no_context.clone();
        vtl0.push(context(igvm::hv_defs::Vtl::Vtl0));
        assert!(err(file(IgvmPlatformType::VSM_ISOLATION, vtl0)).contains("starts only VTL2"));
        let mut ok = no_context;
        ok.push(context(igvm::hv_defs::Vtl::Vtl2));
        let mut snp = ok.clone();
        snp.retain(|d| !matches!(d, D::X64VbsVpContext { .. }));
        let snp = err(file(IgvmPlatformType::SEV_SNP, snp));
        assert!(snp.contains("VSM isolation"), "{snp}");
        let mut unknown = ok;
        unknown.insert(
            0,
            D::RequiredMemory {
                gpa: 0x20_0000,
                compatibility_mask: MASK,
                number_of_bytes: 0x20_0000,
                vtl2_protectable: true,
            },
        );
        assert!(err(file(IgvmPlatformType::VSM_ISOLATION, unknown))
            .contains("does not implement RequiredMemory"));
    }
}
