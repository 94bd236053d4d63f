//! The x64 face of the model: the Hyper-V CPUID leaves, the synthetic MSRs, the hypercall page
//! and the `vmcall` in it.

use alloc::vec;
use alloc::vec::Vec;
use hvdef::x86_64::{cpuid, reg as x64_reg, HvX64Msr, RET, VMMCALL};
use hvdef::{Control, HvRegisterName, HypercallCode, SyntheticRegister, Vtl, HV_PAGE_SIZE};

use super::hypercall::{FastBlock, Request};
use super::registers::{nested_synic_read, nested_synic_write};
use super::trace::{Abi, Event};
use super::vtl::SwitchRegs;
use super::{Arch, Effects, Fault, GuestMemory, Model};

// The hypercall page is OpenVMM's emulated one (vm/hv1/hv1_emulator/src/hv.rs `hypercall_page`,
// the only one whose bytes a public source gives), in its AMD flavour (`use_vmmcall`: OpenVMM,
// like Hyper-V, writes `vmmcall` on AMD processors and `vmcall` on Intel ones). The mock's x86
// machine is an AMD one for this purpose: QEMU's TCG `-cpu max` offers AMD SVM (and no VMX),
// which the in-VM mock is to run on, and under SVM `vmmcall` is the instruction that exits.
//   0x00 vmmcall; ret                                 ordinary hypercall
//   0x04 mov ecx,eax; mov eax,0x11; vmmcall; ret      32-bit VTL call
//   0x0F mov rax,rcx; mov ecx,0x11; vmmcall; ret      64-bit VTL call
//   0x1B mov ecx,eax; mov eax,0x12; vmmcall; ret      32-bit VTL return
//   0x26 mov rax,rcx; mov ecx,0x12; vmmcall; ret      64-bit VTL return
// with 64-bit offsets call 0x0F / return 0x26 published in HvRegisterVsmCodePageOffsets (OpenVMM
// `vsm_code_page_offsets`). Real Hyper-V's bytes are not public; OpenVMM's WHP backend, reading
// the real page, hard-codes call 0x0F / return 0x28 "from the current hypervisor binary"
// (vmm_core/virt_whp/src/hypercalls.rs), so only the call offset is known to match. Callers
// read the offsets from the register (TLFS vsm.md §"Hypercall Page Assist"), as the paravisor
// does.

/// Where the 64-bit VTL-call stub starts in the hypercall page (published in
/// VsmCodePageOffsets).
pub const VTL_CALL_OFFSET: u16 = 0x0F;
/// Where the 64-bit VTL-return stub starts.
pub const VTL_RETURN_OFFSET: u16 = 0x26;
/// Where the 32-bit VTL-call stub starts (the 32-bit offsets OpenVMM publishes to 32-bit
/// callers; the model only has 64-bit callers and publishes the 64-bit ones).
pub const VTL_CALL32_OFFSET: u16 = 0x04;
/// Where the 32-bit VTL-return stub starts.
pub const VTL_RETURN32_OFFSET: u16 = 0x1B;

/// `mov rax, rcx`: a 64-bit VTL stub hands the caller's RCX (the VTL control) over in RAX...
const MOV_RAX_RCX: [u8; 3] = [0x48, 0x89, 0xC8];
/// ...and loads the call code with `mov ecx, imm32`.
const MOV_ECX_IMM32: u8 = 0xB9;
/// `mov ecx, eax`: a 32-bit VTL stub moves EAX (the low control half) to ECX...
const MOV_ECX_EAX: [u8; 2] = [0x89, 0xC1];
/// ...and loads the call code into EAX (EDX:EAX is the 32-bit control word) with `mov eax, imm32`.
const MOV_EAX_IMM32: u8 = 0xB8;
/// Fills the rest of the page: a stray jump traps.
const INT3: u8 = 0xCC;

/// The VTL stubs: where each starts, its register moves, the code it loads, and what its
/// `vmcall` is to the glue.
///
/// The 32-bit stubs are there because the page has them, and their `vmcall`s are breakpointed
/// so a caller that lands in one meets the model, not an undefined `vmcall` under TCG. The
/// hypervisor decodes a `vmcall` by the caller's mode (TLFS hypercall-interface.md: 64-bit when
/// EFER.LMA and CS.L are set), and every caller here is 64-bit: after a 32-bit stub, RCX holds
/// the caller's EAX and RAX the VTL code, so the `vmcall` is an ordinary hypercall with control
/// RCX (a VtlCall/VtlReturn code in RCX then has RAX = 0x11/0x12 as its VTL control, which is
/// invalid → #UD). No VTL switch can come from them, hence [`VmcallKind::Hypercall`].
const VTL_STUBS: [(u16, &[u8], u8, HypercallCode, VmcallKind); 4] = [
    (
        VTL_CALL32_OFFSET,
        &MOV_ECX_EAX,
        MOV_EAX_IMM32,
        HypercallCode::VTL_CALL,
        VmcallKind::Hypercall,
    ),
    (
        VTL_CALL_OFFSET,
        &MOV_RAX_RCX,
        MOV_ECX_IMM32,
        HypercallCode::VTL_CALL,
        VmcallKind::VtlCall,
    ),
    (
        VTL_RETURN32_OFFSET,
        &MOV_ECX_EAX,
        MOV_EAX_IMM32,
        HypercallCode::VTL_RETURN,
        VmcallKind::Hypercall,
    ),
    (
        VTL_RETURN_OFFSET,
        &MOV_RAX_RCX,
        MOV_ECX_IMM32,
        HypercallCode::VTL_RETURN,
        VmcallKind::VtlReturn,
    ),
];

/// One VTL stub's bytes: the register move, `mov r32, code`, `vmcall`, `ret`.
fn vtl_stub(mov: &[u8], mov_imm32: u8, code: HypercallCode) -> Vec<u8> {
    let mut stub = mov.to_vec();
    stub.push(mov_imm32);
    stub.extend_from_slice(&u32::from(code.0).to_le_bytes());
    stub.extend_from_slice(&VMMCALL);
    stub.push(RET);
    stub
}

/// Which stub of the hypercall page a `vmcall` site belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmcallKind {
    Hypercall,
    VtlCall,
    VtlReturn,
}

/// The registers of a `vmcall`: RCX control, RDX/R8 GPAs or fast input, RAX result (the VTL
/// control in the VTL stubs), XMM0-5 the extended fast block. The model writes RAX, RCX (new rep
/// start on TIMEOUT) and fast output registers. An ordinary hypercall reads no other register; a
/// VTL switch moves every shared one (TLFS vsm.md "Shared State": every GPR but RSP, and CR2),
/// so the glue passes them all at the VTL stubs' sites.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct X64HypercallRegs {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    /// The page-fault address: shared between the VTLs like the GPRs, moved at VTL switches only.
    pub cr2: u64,
    pub xmm: [u128; 6],
}

/// The GPRs the VTLs share (all but RSP), in the order of [`X64HypercallRegs::gprs`]: the
/// register's (gdb) name and its Hyper-V name.
pub const X64_SHARED_GPRS: [(&str, HvRegisterName); 15] = [
    ("rax", x64_reg::RAX),
    ("rcx", x64_reg::RCX),
    ("rdx", x64_reg::RDX),
    ("rbx", x64_reg::RBX),
    ("rbp", x64_reg::RBP),
    ("rsi", x64_reg::RSI),
    ("rdi", x64_reg::RDI),
    ("r8", x64_reg::R8),
    ("r9", x64_reg::R9),
    ("r10", x64_reg::R10),
    ("r11", x64_reg::R11),
    ("r12", x64_reg::R12),
    ("r13", x64_reg::R13),
    ("r14", x64_reg::R14),
    ("r15", x64_reg::R15),
];

impl X64HypercallRegs {
    /// The shared GPRs, in [`X64_SHARED_GPRS`] order.
    pub fn gprs(&self) -> [u64; 15] {
        let mut copy = *self;
        copy.gprs_mut().map(|r| *r)
    }

    /// The shared GPRs, in [`X64_SHARED_GPRS`] order.
    pub fn gprs_mut(&mut self) -> [&mut u64; 15] {
        let Self {
            rax,
            rcx,
            rdx,
            rbx,
            rbp,
            rsi,
            rdi,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
            cr2: _,
            xmm: _,
        } = self;
        [
            rax, rcx, rdx, rbx, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
        ]
    }
}

/// The page the model overlays at the hypercall MSR's GPFN: `vmmcall; ret` at 0, then the VTL
/// stubs of [`VTL_STUBS`], back to back, the rest `int3`.
pub(crate) fn hypercall_page_content() -> Vec<u8> {
    let mut page = vec![INT3; HV_PAGE_SIZE as usize];
    page[..3].copy_from_slice(&VMMCALL);
    page[3] = RET;
    for (offset, mov, mov_imm32, code, _) in VTL_STUBS {
        let stub = vtl_stub(mov, mov_imm32, code);
        let at = usize::from(offset);
        page[at..at + stub.len()].copy_from_slice(&stub);
    }
    page
}

/// Offsets of the `vmcall` instructions in the hypercall page, in page order.
pub(crate) fn hypercall_page_sites() -> Vec<(u64, VmcallKind)> {
    let stubs = VTL_STUBS.iter().map(|&(offset, mov, _, _, kind)| {
        // The `vmcall` follows the register move and the 5-byte `mov r32, imm32`.
        (u64::from(offset) + mov.len() as u64 + 5, kind)
    });
    [(0, VmcallKind::Hypercall)]
        .into_iter()
        .chain(stubs)
        .collect()
}

/// Where a synthetic MSR lives.
enum MsrTarget {
    Register(HvRegisterName),
    /// The L0 SynIC, through an `HV_X64_MSR_NESTED_*` MSR.
    Nested(HvRegisterName),
}

impl Model {
    /// CPUID at the image's cpuid site: `Some` for the hypervisor leaves 0x40000000..=0x4000FFFF
    /// (zeros for those the model does not define), `None` for the CPU's own leaves.
    pub fn cpuid(&mut self, vp: u32, leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
        let hypervisor_leaves =
            cpuid::HV_CPUID_VENDOR_AND_MAX_FUNCTIONS..=cpuid::HV_CPUID_MAX_MAX_FUNCTION;
        if self.scenario.arch != Arch::X86_64 || !hypervisor_leaves.contains(&leaf) {
            return None;
        }
        let result = match leaf {
            cpuid::HV_CPUID_VENDOR_AND_MAX_FUNCTIONS => [
                cpuid::HV_CPUID_NESTED_VIRT_FEATURES,
                cpuid::HV_CPUID_VENDOR_EBX,
                cpuid::HV_CPUID_VENDOR_ECX,
                cpuid::HV_CPUID_VENDOR_EDX,
            ],
            cpuid::HV_CPUID_INTERFACE => [cpuid::HV_CPUID_INTERFACE_HV1, 0, 0, 0],
            cpuid::HV_CPUID_VERSION => self.version_words(),
            cpuid::HV_CPUID_FEATURES => self.privilege_words(),
            cpuid::HV_CPUID_ENLIGHTENMENT_INFO => self.recommendation_words(),
            cpuid::HV_CPUID_IMPLEMENTATION_LIMITS => self.limit_words(),
            cpuid::HV_CPUID_NESTED_FEATURES => self.nested_feature_words(),
            _ => [0; 4],
        };
        self.trace.push(Event::Cpuid {
            vp,
            leaf,
            subleaf,
            result,
        });
        Some(result)
    }

    /// RDMSR of a synthetic MSR: `None` outside the hypervisor's range (the CPU answers), #GP for
    /// MSRs the model does not implement, lacks the privilege for, or that are write-only.
    pub fn rdmsr(&mut self, vp: u32, msr: u32) -> Option<Result<u64, Fault>> {
        if self.scenario.arch != Arch::X86_64 || !HvX64Msr::is_synthetic(msr) {
            return None;
        }
        if !self.valid_vp(vp) {
            return Some(Err(Fault::Gp));
        }
        let vtl = self.vp(vp).active_vtl;
        let result = self.resolve_msr(HvX64Msr(msr)).and_then(|target| {
            match target {
                MsrTarget::Register(name) => self.get_register(vp, vtl, name).map(|v| v as u64),
                MsrTarget::Nested(name) => nested_synic_read(&self.vp(vp).nested_synic, vp, name),
            }
            .map_err(|_| Fault::Gp)
        });
        self.trace.push(Event::Rdmsr {
            vp,
            vtl,
            msr,
            result,
        });
        Some(result)
    }

    /// WRMSR of a synthetic MSR; read-only MSRs and invalid values are #GP.
    pub fn wrmsr(
        &mut self,
        vp: u32,
        msr: u32,
        value: u64,
        mem: &mut dyn GuestMemory,
    ) -> Option<Result<Effects, Fault>> {
        if self.scenario.arch != Arch::X86_64 || !HvX64Msr::is_synthetic(msr) {
            return None;
        }
        if !self.valid_vp(vp) {
            return Some(Err(Fault::Gp));
        }
        let vtl = self.vp(vp).active_vtl;
        let mut effects = Effects::advance();
        let result = self.resolve_msr(HvX64Msr(msr)).and_then(|target| {
            match target {
                MsrTarget::Register(name) => {
                    self.set_register(vp, vtl, name, value.into(), mem, &mut effects)
                }
                MsrTarget::Nested(name) => {
                    nested_synic_write(&mut self.vp_mut(vp).nested_synic, name, value)
                }
            }
            .map_err(|_| Fault::Gp)
        });
        self.trace.push(Event::Wrmsr {
            vp,
            vtl,
            msr,
            value,
            result,
        });
        Some(result.map(|()| effects))
    }

    fn resolve_msr(&self, msr: HvX64Msr) -> Result<MsrTarget, Fault> {
        let twin = msr
            .0
            .checked_sub(HvX64Msr::NESTED_OFFSET)
            .map(HvX64Msr)
            .filter(|base| base.nested() == Some(msr));
        let (base, nested) = match twin {
            Some(_) if !self.nested() => return Err(Fault::Gp),
            Some(base) => (base, true),
            None => (msr, false),
        };
        let reg = SyntheticRegister::from_msr(base).ok_or(Fault::Gp)?;
        if !self.msr_privilege(reg) {
            return Err(Fault::Gp);
        }
        // Only the hypercall page has no VP-register twin (arm64 has no hypercall page).
        let name = reg.vp_register().unwrap_or(x64_reg::HYPERCALL);
        Ok(if nested {
            MsrTarget::Nested(name)
        } else {
            MsrTarget::Register(name)
        })
    }

    /// The privilege that makes each synthetic MSR available (TLFS feature discovery).
    fn msr_privilege(&self, reg: SyntheticRegister) -> bool {
        let p = self.scenario.privileges;
        match reg {
            SyntheticRegister::GuestOsId | SyntheticRegister::Hypercall => {
                p.access_hypercall_msrs()
            }
            SyntheticRegister::VpIndex => p.access_vp_index(),
            SyntheticRegister::VpRuntime => p.access_vp_runtime_reg(),
            SyntheticRegister::TimeRefCount => p.access_partition_reference_counter(),
            SyntheticRegister::ReferenceTsc => p.access_partition_reference_tsc(),
            SyntheticRegister::VpAssistPage => p.access_intr_ctrl_regs(),
            SyntheticRegister::Scontrol
            | SyntheticRegister::Sversion
            | SyntheticRegister::Siefp
            | SyntheticRegister::Simp
            | SyntheticRegister::Eom
            | SyntheticRegister::Sint(_) => p.access_synic_regs(),
        }
    }

    /// A `vmcall` from 32-bit protected mode on behalf of lower VTL `vtl`'s register file (the
    /// TLFS x86 convention, hypercall-interface.md §"Hypercall Register Conventions"): control
    /// EDX:EAX, input GPA EBX:ECX, output GPA EDI:ESI, result EDX:EAX; fast input EBX:ECX and
    /// EDI:ESI (XMM input and output are not modelled in this mode: needing them is #UD). A
    /// TIMEOUT left for re-execution puts the new control word in EDX:EAX.
    pub(crate) fn vmcall32(&mut self, vp: u32, vtl: Vtl, mem: &mut dyn GuestMemory) -> Effects {
        let file = self.vp(vp).file(vtl);
        let pair = |hi: HvRegisterName, lo: HvRegisterName| {
            (file.reg64(hi) & 0xFFFF_FFFF) << 32 | (file.reg64(lo) & 0xFFFF_FFFF)
        };
        let control = pair(x64_reg::RDX, x64_reg::RAX);
        let input = pair(x64_reg::RBX, x64_reg::RCX);
        let output = pair(x64_reg::RDI, x64_reg::RSI);
        let mut req = Request {
            abi: Abi::X64,
            control,
            input_gpa: input,
            output_gpa: output,
            fast: FastBlock {
                words: vec![input, output],
                xmm_ud: true,
            },
        };
        match self.hypercall(vp, &mut req, mem) {
            Err(fault) => Effects::fault(fault),
            Ok(reply) if reply.effects.reflect || reply.effects.memory_intercept.is_some() => {
                reply.effects
            }
            Ok(reply) => {
                let value = reply.retry.unwrap_or(reply.output.into_bits());
                let file = self.vp_mut(vp).file_mut(vtl);
                file.set(x64_reg::RAX, (value & 0xFFFF_FFFF).into());
                file.set(x64_reg::RDX, (value >> 32).into());
                reply.effects
            }
        }
    }

    /// A `vmcall` in the hypercall page. The VTL stubs reach it with RCX = the VTL call code and
    /// RAX = the VTL control; every other code is an ordinary hypercall.
    pub fn vmcall(
        &mut self,
        vp: u32,
        regs: &mut X64HypercallRegs,
        mem: &mut dyn GuestMemory,
    ) -> Effects {
        if self.scenario.arch != Arch::X86_64 || !self.valid_vp(vp) {
            return Effects::fault(Fault::Ud);
        }
        let control = Control::from_bits(regs.rcx);
        // A VTL control word is exactly the code: any other bit is invalid, and so is any VTL
        // call control bit or a VTL return control bit past bit 0 (Fast) → #UD.
        let exact = regs.rcx == u64::from(control.code().0);
        match control.code() {
            HypercallCode::VTL_CALL => {
                return self.vtl_call(vp, Abi::X64, regs.rax, exact && regs.rax == 0);
            }
            HypercallCode::VTL_RETURN => {
                let (control, fast) = (regs.rax, regs.rax & 1 != 0);
                let valid = exact && control >> 1 == 0;
                return self.vtl_return(
                    vp,
                    Abi::X64,
                    control,
                    valid,
                    fast,
                    SwitchRegs::X64(regs),
                    mem,
                );
            }
            _ => {}
        }
        let mut words = vec![regs.rdx, regs.r8];
        words.extend(regs.xmm.iter().flat_map(|x| [*x as u64, (x >> 64) as u64]));
        let mut req = Request {
            abi: Abi::X64,
            control: regs.rcx,
            input_gpa: regs.rdx,
            output_gpa: regs.r8,
            fast: FastBlock {
                words,
                xmm_ud: !self.scenario.xmm_fast_hypercalls,
            },
        };
        match self.hypercall(vp, &mut req, mem) {
            Err(fault) => Effects::fault(fault),
            Ok(reply) => {
                regs.rax = reply.output.into_bits();
                if let Some(control) = reply.retry {
                    regs.rcx = control;
                }
                if control.fast() {
                    let w = &req.fast.words;
                    (regs.rdx, regs.r8) = (w[0], w[1]);
                    for (n, xmm) in regs.xmm.iter_mut().enumerate() {
                        *xmm = u128::from(w[2 + 2 * n]) | (u128::from(w[3 + 2 * n]) << 64);
                    }
                }
                reply.effects
            }
        }
    }
}
