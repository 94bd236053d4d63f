//! VTL0's initial context from the VTL0 boot page (`boot::vtl0_boot` has the layout): the
//! validator of that loader input, and the register list the boot VP sets for VTL0 with one
//! SetVpRegisters before VTL0 first runs, as OpenHCL starts VTL0 from its IGVM file's VTL0
//! context.
//!
//! An all-zero page is "no payload". Anything else must be exactly the layout: the magic, the
//! version, this image's arch, the arch's context size, zero reserved and trailing bytes, zero
//! descriptor-table padding (the TLFS's `HV_X64_TABLE_REGISTER` pad), no address VTL0 is
//! started with (entry, stack, page-table root, descriptor tables, vectors) inside VTL2's own
//! image, which VTL0 can never reach, and the entry point in RAM the loader reported. A page that breaks any rule is an error naming the field;
//! the firmware then fails the boot rather than start VTL0 from a state nobody chose.
#![forbid(unsafe_code)]

use boot::vtl0_boot::{
    Vtl0BootHeader, ARCH_AARCH64, ARCH_X86_64, CONTEXT_OFFSET, MAGIC, PAGE_SIZE as BOOT_PAGE_SIZE,
    VERSION,
};
use core::fmt;
use core::ops::Range;
use hvdef::aarch64::{reg as arm_reg, HvArm64InitialVpContext};
use hvdef::x86_64::{reg as x64_reg, HvX64InitialVpContext, HvX64TableRegister};
use hvdef::{HvRegisterAssoc, HvRegisterValue};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// Which layout to expect: the arch this image runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The arch of this build.
    pub const NATIVE: Arch = if cfg!(target_arch = "aarch64") {
        Arch::Aarch64
    } else {
        Arch::X86_64
    };

    fn code(self) -> u32 {
        match self {
            Arch::X86_64 => ARCH_X86_64,
            Arch::Aarch64 => ARCH_AARCH64,
        }
    }

    fn context_size(self) -> usize {
        match self {
            Arch::X86_64 => size_of::<HvX64InitialVpContext>(),
            Arch::Aarch64 => size_of::<HvArm64InitialVpContext>(),
        }
    }
}

/// VTL0's initial context, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vtl0Context {
    X64(HvX64InitialVpContext),
    Arm64(HvArm64InitialVpContext),
}

/// What is wrong with a VTL0 boot page; its `Display` names the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadPage {
    Magic(u64),
    /// The page has no magic but is not all zero either.
    NotEmpty {
        offset: usize,
    },
    Version(u32),
    Arch(u32),
    ContextSize {
        found: u32,
        expected: usize,
    },
    Reserved(u32),
    TrailingBytes {
        offset: usize,
    },
    TablePad {
        register: &'static str,
    },
    InImage {
        field: &'static str,
        address: u64,
        image: (u64, u64),
    },
    /// The entry point is in no RAM range the loader reported.
    EntryNotInRam {
        field: &'static str,
        address: u64,
    },
}

impl fmt::Display for BadPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BadPage::Magic(m) => write!(f, "magic {m:#x} is not {MAGIC:#x} (\"PVVTL0IC\")"),
            BadPage::NotEmpty { offset } => write!(
                f,
                "magic is 0 but byte {offset:#x} is not: neither empty nor a VTL0 context"
            ),
            BadPage::Version(v) => write!(f, "version {v} is not {VERSION}"),
            BadPage::Arch(a) => write!(f, "arch {a} is not this image's ({})", Arch::NATIVE.code()),
            BadPage::ContextSize { found, expected } => {
                write!(f, "context size {found} is not {expected}")
            }
            BadPage::Reserved(r) => write!(f, "reserved word {r:#x} is not 0"),
            BadPage::TrailingBytes { offset } => {
                write!(f, "byte {offset:#x} after the context is not 0")
            }
            BadPage::TablePad { register } => write!(f, "{register} padding is not 0"),
            BadPage::InImage {
                field,
                address,
                image,
            } => write!(
                f,
                "{field} {address:#x} lies in VTL2's image {:#x}..{:#x}, which VTL0 cannot reach",
                image.0, image.1
            ),
            BadPage::EntryNotInRam { field, address } => write!(
                f,
                "{field} {address:#x} is outside the RAM the loader reported"
            ),
        }
    }
}

/// Validates the VTL0 boot page: `Ok(None)` when it is all zero (no payload). `in_ram` says
/// whether an address lies in the RAM the loader reported (the entry point must).
pub fn parse(
    page: &[u8; BOOT_PAGE_SIZE],
    arch: Arch,
    image: Range<u64>,
    in_ram: impl Fn(u64) -> bool,
) -> Result<Option<Vtl0Context>, BadPage> {
    let (header, _) = Vtl0BootHeader::read_from_prefix(page).expect("a page holds the header");
    let magic = header.magic;
    if magic == 0 {
        return match page.iter().position(|&b| b != 0) {
            None => Ok(None),
            Some(offset) => Err(BadPage::NotEmpty { offset }),
        };
    }
    if magic != MAGIC {
        return Err(BadPage::Magic(magic));
    }
    if header.version != VERSION {
        return Err(BadPage::Version(header.version));
    }
    if header.arch != arch.code() {
        return Err(BadPage::Arch(header.arch));
    }
    let size = header.context_size;
    if size as usize != arch.context_size() {
        return Err(BadPage::ContextSize {
            found: size,
            expected: arch.context_size(),
        });
    }
    if header.reserved != 0 {
        return Err(BadPage::Reserved(header.reserved));
    }
    let end = CONTEXT_OFFSET + arch.context_size();
    if let Some(i) = page[end..].iter().position(|&b| b != 0) {
        return Err(BadPage::TrailingBytes { offset: end + i });
    }
    let bytes = &page[CONTEXT_OFFSET..end];
    let outside = |field: &'static str, address: u64| {
        if image.contains(&address) {
            Err(BadPage::InImage {
                field,
                address,
                image: (image.start, image.end),
            })
        } else {
            Ok(())
        }
    };
    let context = match arch {
        Arch::X86_64 => {
            let c = HvX64InitialVpContext::read_from_bytes(bytes).expect("sized above");
            for (register, t) in [("IDTR", c.idtr), ("GDTR", c.gdtr)] {
                if t.pad != [0; 3] {
                    return Err(BadPage::TablePad { register });
                }
            }
            outside("RIP", c.rip)?;
            outside("RSP", c.rsp)?;
            // CR3's low 12 bits are flags (PWT, PCD) or the PCID: the root is the page above.
            outside("CR3", c.cr3 & !0xFFF)?;
            outside("IDTR base", c.idtr.base)?;
            outside("GDTR base", c.gdtr.base)?;
            Vtl0Context::X64(c)
        }
        Arch::Aarch64 => {
            let c = HvArm64InitialVpContext::read_from_bytes(bytes).expect("sized above");
            // TTBRn_EL1.BADDR is bits 47:1; the ASID above and CnP (bit 0) are not address.
            const BADDR: u64 = 0x0000_FFFF_FFFF_FFFE;
            outside("PC", c.pc)?;
            outside("SP_EL1", c.sp_elh)?;
            outside("VBAR_EL1", c.vbar_el1)?;
            outside("TTBR0_EL1", c.ttbr0_el1 & BADDR)?;
            outside("TTBR1_EL1", c.ttbr1_el1 & BADDR)?;
            Vtl0Context::Arm64(c)
        }
    };
    let (field, entry) = match &context {
        Vtl0Context::X64(c) => ("RIP", c.rip),
        Vtl0Context::Arm64(c) => ("PC", c.pc),
    };
    if !in_ram(entry) {
        return Err(BadPage::EntryNotInRam {
            field,
            address: entry,
        });
    }
    Ok(Some(context))
}

/// EL1h with D, A, I and F masked: the state VTL0 is entered in (the same as VTL2's IGVM
/// context; the TLFS arm64 initial context has no CPSR, so it is set on its own).
pub const ARM64_CPSR_EL1H_DAIF: u64 = 0x3C5;

/// Most registers [`Vtl0Context::registers`] returns (x64).
pub const MAX_REGISTERS: usize = 18;

fn seg(v: hvdef::x86_64::HvX64SegmentRegister) -> HvRegisterValue {
    HvRegisterValue::read_from_bytes(v.as_bytes()).expect("16 bytes")
}

fn table(v: HvX64TableRegister) -> HvRegisterValue {
    HvRegisterValue::read_from_bytes(v.as_bytes()).expect("16 bytes")
}

impl Vtl0Context {
    /// The entry point, for the boot line.
    pub fn entry(&self) -> u64 {
        match self {
            Vtl0Context::X64(c) => c.rip,
            Vtl0Context::Arm64(c) => c.pc,
        }
    }

    /// VTL0's registers as one SetVpRegisters list, in `HV_INITIAL_VP_CONTEXT` order (arm64:
    /// then CPSR); segment and table registers as their 128-bit TLFS values. The list and the
    /// 16-byte header fit one input page (127 elements).
    pub fn registers(&self) -> ([HvRegisterAssoc; MAX_REGISTERS], usize) {
        let mut out = [HvRegisterAssoc::new_zeroed(); MAX_REGISTERS];
        let mut n = 0;
        let mut put = |name, value: HvRegisterValue| {
            out[n] = HvRegisterAssoc::new(name, value);
            n += 1;
        };
        match self {
            Vtl0Context::X64(c) => {
                put(x64_reg::RIP, c.rip.into());
                put(x64_reg::RSP, c.rsp.into());
                put(x64_reg::RFLAGS, c.rflags.into());
                put(x64_reg::CS, seg(c.cs));
                put(x64_reg::DS, seg(c.ds));
                put(x64_reg::ES, seg(c.es));
                put(x64_reg::FS, seg(c.fs));
                put(x64_reg::GS, seg(c.gs));
                put(x64_reg::SS, seg(c.ss));
                put(x64_reg::TR, seg(c.tr));
                put(x64_reg::LDTR, seg(c.ldtr));
                put(x64_reg::IDTR, table(c.idtr));
                put(x64_reg::GDTR, table(c.gdtr));
                put(x64_reg::EFER, c.efer.into());
                put(x64_reg::CR0, c.cr0.into());
                put(x64_reg::CR3, c.cr3.into());
                put(x64_reg::CR4, c.cr4.into());
                put(x64_reg::PAT, c.msr_cr_pat.into());
            }
            Vtl0Context::Arm64(c) => {
                put(arm_reg::XPC, c.pc.into());
                put(arm_reg::XSP_ELX, c.sp_elh.into());
                put(arm_reg::SCTLR_EL1, c.sctlr_el1.into());
                put(arm_reg::MAIR_EL1, c.mair_el1.into());
                put(arm_reg::TCR_EL1, c.tcr_el1.into());
                put(arm_reg::VBAR_EL1, c.vbar_el1.into());
                put(arm_reg::TTBR0_EL1, c.ttbr0_el1.into());
                put(arm_reg::TTBR1_EL1, c.ttbr1_el1.into());
                put(arm_reg::X18, c.x18.into());
                put(arm_reg::CPSR, ARM64_CPSR_EL1H_DAIF.into());
            }
        }
        (out, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvdef::x86_64::HvX64SegmentRegister;

    const IMAGE: Range<u64> = 0x10_0000..0x62_0000;

    /// Everything is RAM unless a test says otherwise.
    fn ram(_: u64) -> bool {
        true
    }

    fn x64() -> HvX64InitialVpContext {
        let data = HvX64SegmentRegister {
            base: 0,
            limit: 0xFFFF_FFFF,
            selector: 0x10,
            attributes: 0xC093,
        };
        HvX64InitialVpContext {
            rip: 0x0400_0000,
            rflags: 2,
            cs: HvX64SegmentRegister {
                selector: 0x08,
                attributes: 0xC09B,
                ..data
            },
            ds: data,
            es: data,
            fs: data,
            gs: data,
            ss: data,
            tr: HvX64SegmentRegister {
                base: 0,
                limit: 0xFFFF,
                selector: 0,
                attributes: 0x8B,
            },
            cr0: 0x11,
            msr_cr_pat: 0x0007_0406_0007_0406,
            ..Default::default()
        }
    }

    fn page(arch: u32, context: &[u8]) -> [u8; BOOT_PAGE_SIZE] {
        let mut p = [0u8; BOOT_PAGE_SIZE];
        p[..8].copy_from_slice(b"PVVTL0IC");
        p[8..12].copy_from_slice(&1u32.to_le_bytes());
        p[12..16].copy_from_slice(&arch.to_le_bytes());
        p[16..20].copy_from_slice(&(context.len() as u32).to_le_bytes());
        p[24..24 + context.len()].copy_from_slice(context);
        p
    }

    #[test]
    fn empty_page_is_no_payload() {
        let p = [0u8; BOOT_PAGE_SIZE];
        assert_eq!(parse(&p, Arch::X86_64, IMAGE, ram), Ok(None));
        let mut p = p;
        p[0x800] = 1;
        assert_eq!(
            parse(&p, Arch::X86_64, IMAGE, ram),
            Err(BadPage::NotEmpty { offset: 0x800 })
        );
    }

    /// Fixed bytes (not built by `page`): the layout xtask's builder writes, pinned.
    #[test]
    fn golden_arm64_page() {
        let mut p = [0u8; BOOT_PAGE_SIZE];
        p[..24].copy_from_slice(&[
            0x50, 0x56, 0x56, 0x54, 0x4c, 0x30, 0x49, 0x43, // "PVVTL0IC"
            1, 0, 0, 0, // version
            2, 0, 0, 0, // aarch64
            72, 0, 0, 0, // context size
            0, 0, 0, 0, // reserved
        ]);
        p[24..32].copy_from_slice(&0x4800_0000u64.to_le_bytes()); // pc
        p[40..48].copy_from_slice(&0x30D0_0800u64.to_le_bytes()); // sctlr_el1
        let Ok(Some(Vtl0Context::Arm64(c))) = parse(&p, Arch::Aarch64, IMAGE, ram) else {
            panic!("{:?}", parse(&p, Arch::Aarch64, IMAGE, ram))
        };
        assert_eq!((c.pc, c.sctlr_el1, c.sp_elh), (0x4800_0000, 0x30D0_0800, 0));
        let (regs, n) = Vtl0Context::Arm64(c).registers();
        assert_eq!(n, 10);
        assert_eq!(regs[0].name, arm_reg::XPC);
        assert_eq!(regs[0].value.as_u64(), 0x4800_0000);
        assert_eq!(regs[2].name, arm_reg::SCTLR_EL1);
        assert_eq!(regs[2].value.as_u64(), 0x30D0_0800);
        assert_eq!(regs[9].name, arm_reg::CPSR);
        assert_eq!(regs[9].value.as_u64(), 0x3C5);
    }

    #[test]
    fn x64_page_gives_the_register_list() {
        let c = x64();
        let p = page(ARCH_X86_64, c.as_bytes());
        let parsed = parse(&p, Arch::X86_64, IMAGE, ram)
            .expect("valid")
            .expect("present");
        assert_eq!(parsed, Vtl0Context::X64(c));
        assert_eq!(parsed.entry(), 0x0400_0000);
        let (regs, n) = parsed.registers();
        assert_eq!(n, MAX_REGISTERS);
        let names: Vec<_> = regs[..n].iter().map(|r| r.name).collect();
        use x64_reg::*;
        assert_eq!(
            names,
            [
                RIP, RSP, RFLAGS, CS, DS, ES, FS, GS, SS, TR, LDTR, IDTR, GDTR, EFER, CR0, CR3,
                CR4, PAT
            ]
        );
        // CS as the TLFS's 128-bit segment value: base, limit, selector, attributes.
        assert_eq!(regs[3].value.as_u128(), 0xC09B_0008_FFFF_FFFF_u128 << 64);
        assert_eq!(regs[14].value.as_u64(), 0x11);
        assert!(regs[..n].iter().all(|r| r.reserved == [0; 3]));
    }

    #[test]
    fn bad_pages_name_the_field() {
        let good = page(ARCH_X86_64, x64().as_bytes());
        type Spoil = fn(&mut [u8; BOOT_PAGE_SIZE]);
        let cases: [(Spoil, &str); 7] = [
            (|p| p[0] = b'X', "magic"),
            (|p| p[8] = 2, "version 2"),
            (|p| p[12] = 2, "arch 2"),
            (|p| p[16] = 72, "context size 72"),
            (|p| p[20] = 1, "reserved word 0x1"),
            (|p| p[24 + 224] = 1, "byte 0xf8 after the context"),
            // GDTR.pad[0] (context offset 168).
            (|p| p[24 + 168] = 1, "GDTR padding"),
        ];
        for (spoil, needle) in cases {
            let mut p = good;
            spoil(&mut p);
            let err = parse(&p, Arch::X86_64, IMAGE, ram).expect_err(needle);
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
        // An x86 page on arm64.
        assert_eq!(
            parse(&good, Arch::Aarch64, IMAGE, ram),
            Err(BadPage::Arch(ARCH_X86_64))
        );
    }

    #[test]
    fn addresses_in_vtl2_image_are_refused() {
        let mut c = x64();
        c.rip = 0x10_0040;
        let err = parse(&page(ARCH_X86_64, c.as_bytes()), Arch::X86_64, IMAGE, ram).unwrap_err();
        assert_eq!(
            err.to_string(),
            "RIP 0x100040 lies in VTL2's image 0x100000..0x620000, which VTL0 cannot reach"
        );
        let mut c = x64();
        c.cr3 = 0x61_F018; // PWT | PCD bits over a root inside the image
        let err = parse(&page(ARCH_X86_64, c.as_bytes()), Arch::X86_64, IMAGE, ram).unwrap_err();
        assert!(err.to_string().starts_with("CR3 0x61f000"), "{err}");
        let arm = HvArm64InitialVpContext {
            pc: 0x4800_0000,
            ttbr1_el1: 0x0001_0000_0010_1001, // ASID 1, CnP, BADDR in the image
            ..Default::default()
        };
        let err = parse(
            &page(ARCH_AARCH64, arm.as_bytes()),
            Arch::Aarch64,
            IMAGE,
            ram,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("TTBR1_EL1 0x101000"), "{err}");
        // Just past the image is VTL0's.
        let mut c = x64();
        c.rip = IMAGE.end;
        assert!(parse(&page(ARCH_X86_64, c.as_bytes()), Arch::X86_64, IMAGE, ram).is_ok());
    }

    #[test]
    fn an_entry_outside_ram_is_refused() {
        let c = x64();
        let low_ram = |a: u64| a < 0x0400_0000;
        let err = parse(
            &page(ARCH_X86_64, c.as_bytes()),
            Arch::X86_64,
            IMAGE,
            low_ram,
        );
        assert_eq!(
            err.unwrap_err().to_string(),
            "RIP 0x4000000 is outside the RAM the loader reported"
        );
        let arm = HvArm64InitialVpContext {
            pc: 0x4800_0000,
            ..Default::default()
        };
        let p = page(ARCH_AARCH64, arm.as_bytes());
        assert!(parse(&p, Arch::Aarch64, IMAGE, |a| a >= 0x4000_0000).is_ok());
        let err = parse(&p, Arch::Aarch64, IMAGE, |_| false).unwrap_err();
        assert!(
            err.to_string().starts_with("PC 0x48000000 is outside"),
            "{err}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..300 {
            let mut p = page(if i % 2 == 0 { 1 } else { 2 }, &[0; 224]);
            for b in p[(i % 24)..(i % 24) + 300].iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            for arch in [Arch::X86_64, Arch::Aarch64] {
                let _ = parse(&p, arch, IMAGE, ram).map_err(|e| e.to_string());
            }
        }
    }
}
