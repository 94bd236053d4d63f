//! `cargo xtask igvm-dump`'s text form: the file header, platforms, VP contexts register by
//! register, coalesced page ranges, parameter areas, the VTL0 payload and the measurement.

use super::*;

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

pub(super) fn variant_name(v: &impl std::fmt::Debug) -> String {
    let s = format!("{v:?}");
    s.split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_string()
}

pub(super) fn low_u64(raw: &[u8; 16]) -> u64 {
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
