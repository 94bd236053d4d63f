//! The IGVM builder's and dumpers' tests: the files it writes, loaded by the mock's loader
//! rules, and the dumps of them.

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
    let Some(IgvmDirectiveHeader::X64VbsVpContext { vtl, registers, .. }) = f.directives().last()
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
    let bytes = build_plain(&test_elf(elf::EM_AARCH64, &syms), IgvmArch::Aarch64).expect("build");
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
        let err =
            build_plain(&x86_elf_with_params(start, end), IgvmArch::X86_64).expect_err("must fail");
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
                b'P', b'V', b'V', b'T', b'L', b'0', b'I', b'C', 1, 0, 0, 0, 1, 0, 0, 0, 224, 0, 0,
                0, 0, 0, 0, 0
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
