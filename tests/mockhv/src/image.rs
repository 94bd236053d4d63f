//! What the mock needs from a paravisor image: the addresses of its hypervisor-facing
//! instruction sites (exported symbols, see docs/ARCHITECTURE.md "Mock contract"), and an audit
//! that no such instruction exists anywhere else, so that none can run un-intercepted.

use crate::qemu::Arch;
use anyhow::{bail, Context, Result};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SectionFlags, SectionKind};
use std::collections::BTreeMap;
use std::path::Path;

/// The synthetic CPUID leaf and MSR range: everything here is the hypervisor's.
pub const SYNTHETIC_RANGE: std::ops::RangeInclusive<u32> = 0x4000_0000..=0x4000_ffff;

/// Trap sites by role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sites {
    X86_64 {
        cpuid: u64,
        rdmsr: u64,
        wrmsr: u64,
    },
    Aarch64 {
        /// `hvc #0`: SMCCC (vendor UID, Hyper-V hypercalls with function id 0x46000001).
        smccc: u64,
        /// `hvc #3`: VTL return, when the image has one.
        vtl_return: Option<u64>,
    },
}

impl Sites {
    /// Every fixed site address (the x86 hypercall page is set up at run time).
    pub fn addresses(&self) -> Vec<u64> {
        match *self {
            Sites::X86_64 {
                cpuid,
                rdmsr,
                wrmsr,
            } => vec![cpuid, rdmsr, wrmsr],
            Sites::Aarch64 { smccc, vtl_return } => {
                std::iter::once(smccc).chain(vtl_return).collect()
            }
        }
    }
}

/// A parsed image: its arch, symbols and sites.
pub struct Image {
    pub arch: Arch,
    pub sites: Sites,
    /// `pv_halt_site`, where a VP stops for good with interrupts masked (`hlt` / `wfi`), when
    /// the image has one.
    pub halt: Option<u64>,
    pub symbols: BTreeMap<String, u64>,
    /// The pages the loadable segments occupy (lowest segment start rounded down to a page,
    /// highest segment end, memory size so BSS included, rounded up): what the image owns once
    /// loaded, read from the program headers, not from the image's own symbols.
    pub extent: std::ops::Range<u64>,
    exec: Vec<(u64, Vec<u8>)>,
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
        let sym = |name: &str| {
            symbols.get(name).copied().with_context(|| {
                format!("the image exports no `{name}`: it does not follow the mock contract")
            })
        };
        let sites = match arch {
            Arch::X86_64 => Sites::X86_64 {
                cpuid: sym("pv_cpuid_site")?,
                rdmsr: sym("pv_rdmsr_site")?,
                wrmsr: sym("pv_wrmsr_site")?,
            },
            Arch::Aarch64 => Sites::Aarch64 {
                smccc: sym("pv_hvc_smccc_site")?,
                vtl_return: symbols.get("pv_hvc_vtl_return_site").copied(),
            },
        };
        let exec = elf
            .sections()
            .filter(|s| {
                s.kind() == SectionKind::Text
                    || matches!(s.flags(), SectionFlags::Elf { sh_flags } if sh_flags & u64::from(object::elf::SHF_EXECINSTR) != 0)
            })
            .filter_map(|s| Some((s.address(), s.data().ok()?.to_vec())))
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
            sites,
            halt: symbols.get("pv_halt_site").copied(),
            symbols,
            extent,
            exec,
        })
    }

    /// The address of the first symbol whose (possibly mangled) name contains `part`.
    pub fn symbol_containing(&self, part: &str) -> Option<u64> {
        self.symbols
            .iter()
            .find(|(name, _)| name.contains(part))
            .map(|(_, &addr)| addr)
    }

    /// Every hypervisor-facing instruction outside the exported sites, as "what at where".
    /// An empty list means nothing can reach the hypervisor without passing a mock trap.
    pub fn audit(&self) -> Vec<String> {
        let sites = self.sites.addresses();
        let mut found = Vec::new();
        for (base, code) in &self.exec {
            match self.arch {
                Arch::Aarch64 => audit_aarch64(*base, code, &sites, &mut found),
                Arch::X86_64 => audit_x86(*base, code, &sites, &self.symbols, &mut found),
            }
        }
        found
    }
}

fn audit_aarch64(base: u64, code: &[u8], sites: &[u64], found: &mut Vec<String>) {
    for (i, word) in code.chunks_exact(4).enumerate() {
        let insn = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        // HVC #imm16 is 0xd4000002 | imm16 << 5; SMC is ...3.
        let kind = match insn & 0xffe0_001f {
            0xd400_0002 => "hvc",
            0xd400_0003 => "smc",
            _ => continue,
        };
        let addr = base + 4 * i as u64;
        if !sites.contains(&addr) {
            found.push(format!("{kind} #{} at {addr:#x}", (insn >> 5) & 0xffff));
        }
    }
}

fn audit_x86(
    base: u64,
    code: &[u8],
    sites: &[u64],
    symbols: &BTreeMap<String, u64>,
    found: &mut Vec<String>,
) {
    use iced_x86::{Code, Decoder, DecoderOptions, Mnemonic, OpKind, Register};
    // The hypercall page is filled by the hypervisor; whatever it holds in the file is not code.
    let page = symbols.get("pv_hypercall_page").copied();
    let mut decoder = Decoder::with_ip(64, code, base, DecoderOptions::NONE);
    // The last constant loaded into ECX, for rdmsr/wrmsr of architectural MSRs (EFER, GS base).
    let mut ecx: Option<(u64, u32)> = None;
    while decoder.can_decode() {
        let insn = decoder.decode();
        let ip = insn.ip();
        if page.is_some_and(|p| (p..p + 4096).contains(&ip)) {
            continue;
        }
        if insn.code() == Code::INVALID {
            ecx = None;
            continue;
        }
        let what = match insn.mnemonic() {
            Mnemonic::Vmcall | Mnemonic::Vmmcall => Some("vmcall"),
            Mnemonic::Cpuid => Some("cpuid"),
            Mnemonic::Rdmsr | Mnemonic::Wrmsr => {
                // Allowed outside a site only when ECX was just set to a non-synthetic MSR.
                match ecx {
                    Some((at, msr)) if ip - at <= 24 && !SYNTHETIC_RANGE.contains(&msr) => None,
                    _ => Some(if insn.mnemonic() == Mnemonic::Rdmsr {
                        "rdmsr"
                    } else {
                        "wrmsr"
                    }),
                }
            }
            _ => None,
        };
        if insn.mnemonic() == Mnemonic::Mov
            && matches!(insn.op0_register(), Register::ECX | Register::RCX)
            && matches!(
                insn.op1_kind(),
                OpKind::Immediate32 | OpKind::Immediate32to64 | OpKind::Immediate64
            )
        {
            ecx = Some((ip, insn.immediate(1) as u32));
        }
        if let Some(what) = what {
            if !sites.contains(&ip) {
                found.push(format!("{what} at {ip:#x}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aarch64_audit_flags_stray_hvc() {
        let hvc0 = 0xd400_0002u32.to_le_bytes();
        let hvc3 = (0xd400_0002u32 | (3 << 5)).to_le_bytes();
        let nop = 0xd503_201fu32.to_le_bytes();
        let code: Vec<u8> = [nop, hvc0, nop, hvc3].concat();
        let mut found = Vec::new();
        audit_aarch64(0x1000, &code, &[0x1004], &mut found);
        assert_eq!(found, vec!["hvc #3 at 0x100c".to_string()]);
    }

    #[test]
    fn x86_audit_allows_architectural_msrs_only() {
        // mov ecx, 0xc0000080; rdmsr  (EFER: fine)
        // mov ecx, 0x40000001; wrmsr  (HV_X64_MSR_HYPERCALL outside a site: flagged)
        // cpuid at a site (fine); vmcall (flagged)
        let code = [
            0xb9, 0x80, 0x00, 0x00, 0xc0, 0x0f, 0x32, // 0x1000
            0xb9, 0x01, 0x00, 0x00, 0x40, 0x0f, 0x30, // 0x1007
            0x0f, 0xa2, // 0x100e
            0x0f, 0x01, 0xc1, // 0x1010
        ];
        let mut found = Vec::new();
        audit_x86(0x1000, &code, &[0x100e], &BTreeMap::new(), &mut found);
        assert_eq!(found, vec!["wrmsr at 0x100c", "vmcall at 0x1010"]);
    }
}
