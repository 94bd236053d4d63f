//! The x64 exits (AMD SVM): CPUID, RDMSR/WRMSR and VMMCALL, on the guest's registers as the
//! host saved them, answered by the model: the model's CPUID leaves and synthetic MSRs, the
//! CPU's own for the rest; a `vmmcall` at one of the hypercall page's VTL stubs moves every shared register, any
//! other one only RAX/RCX/RDX/R8.

use super::Next;
use alloc::string::String;
use alloc::vec::Vec;
use hvdef::x86_64::reg as x64_reg;
use hvdef::x86_64::{
    HvX64PendingEventType, HvX64PendingExceptionEvent, HvX64SegmentRegister, HvX64TableRegister,
};
use hvdef::{HvRegisterName, Vtl};
use hvmodel::{
    Effects, Fault, GuestMemory, HypercallPageChange, LiveError, LowerExit, Model, SwitchRegs,
    VmcallKind, X64HypercallRegs,
};
use zerocopy::{FromBytes, IntoBytes};

/// Instruction lengths. QEMU's SVM has no next-RIP save (and no decode assists), so the host
/// steps over each exiting instruction by its known length.
pub const CPUID_LEN: u64 = 2;
pub const MSR_LEN: u64 = 2;
pub const VMMCALL_LEN: u64 = hvdef::x86_64::VMCALL_LEN;

/// General-purpose register numbers in the instruction encoding's order (the order of
/// [`Vcpu::gprs`]).
pub const RAX: usize = 0;
pub const RCX: usize = 1;
pub const RDX: usize = 2;
pub const RBX: usize = 3;
pub const RSP: usize = 4;
pub const RBP: usize = 5;
pub const RSI: usize = 6;
pub const RDI: usize = 7;
pub const R8: usize = 8;

/// [`hvmodel::X64_SHARED_GPRS`] (RAX, RCX, RDX, RBX, RBP, RSI, RDI, R8..R15) as encoding numbers.
const SHARED: [usize; 15] = [
    RAX, RCX, RDX, RBX, RBP, RSI, RDI, 8, 9, 10, 11, 12, 13, 14, 15,
];
/// What an ordinary hypercall reads and writes.
const HYPERCALL_GPRS: [usize; 4] = [RAX, RCX, RDX, R8];

/// The guest's state an exit works on: the GPRs (RAX and RSP are the VMCB's, the host copies
/// them in and out), RIP and CR2, and an exception to raise at the next entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vcpu {
    pub gprs: [u64; 16],
    pub rip: u64,
    pub cr2: u64,
    /// Raised instead of completing the instruction (EVENTINJ; RIP stays on it).
    pub inject: Option<Fault>,
}

/// The host's view of the hypercall page: where its `vmmcall`s are and what each one is.
#[derive(Debug, Default)]
pub struct Glue {
    vmcall_sites: Vec<(u64, VmcallKind)>,
}

impl Glue {
    /// What a `vmmcall` at `rip` is: one of the page's VTL stubs, or an ordinary hypercall
    /// (the page's own site, or anywhere else: Hyper-V takes a CPL-0 `vmmcall` wherever it is).
    pub fn vmcall_kind(&self, rip: u64) -> VmcallKind {
        self.vmcall_sites
            .iter()
            .find(|(site, _)| *site == rip)
            .map_or(VmcallKind::Hypercall, |&(_, kind)| kind)
    }

    /// CPUID: the model's leaves, or `native` (the CPU's own).
    pub fn cpuid(
        &mut self,
        model: &mut Model,
        vp: u32,
        cpu: &mut Vcpu,
        native: impl FnOnce(u32, u32) -> [u32; 4],
    ) -> Next {
        let (leaf, subleaf) = (cpu.gprs[RAX] as u32, cpu.gprs[RCX] as u32);
        let result = model
            .cpuid(vp, leaf, subleaf)
            .unwrap_or_else(|| native(leaf, subleaf));
        for (reg, value) in [RAX, RBX, RCX, RDX].into_iter().zip(result) {
            cpu.gprs[reg] = value.into();
        }
        cpu.rip += CPUID_LEN;
        Next::Resume
    }

    /// RDMSR: a synthetic MSR is the model's (a fault it raises is injected), any other one
    /// `native`'s.
    pub fn rdmsr(
        &mut self,
        model: &mut Model,
        vp: u32,
        cpu: &mut Vcpu,
        native: impl FnOnce(u32) -> u64,
    ) -> Next {
        let msr = cpu.gprs[RCX] as u32;
        let value = match model.rdmsr(vp, msr) {
            Some(Ok(value)) => value,
            Some(Err(fault)) => {
                cpu.inject = Some(fault);
                return Next::Resume;
            }
            None => native(msr),
        };
        cpu.gprs[RAX] = value & 0xffff_ffff;
        cpu.gprs[RDX] = value >> 32;
        cpu.rip += MSR_LEN;
        Next::Resume
    }

    /// WRMSR: as RDMSR; the model's effects (the hypercall page appearing) are carried out.
    pub fn wrmsr(
        &mut self,
        model: &mut Model,
        vp: u32,
        cpu: &mut Vcpu,
        mem: &mut dyn GuestMemory,
        native: impl FnOnce(u32, u64),
    ) -> Next {
        let msr = cpu.gprs[RCX] as u32;
        let value = (cpu.gprs[RAX] & 0xffff_ffff) | (cpu.gprs[RDX] << 32);
        let vtl2 = model.active_vtl(vp) == Some(Vtl::VTL2);
        match model.wrmsr(vp, msr, value, mem) {
            Some(Ok(effects)) => {
                cpu.rip += MSR_LEN;
                if !vtl2 {
                    // VTL0's own hypercall page: its `vmmcall`s come through `lower_exit`,
                    // which reads the call from VTL0's registers; the sites are VTL2's.
                    return match effects.fault {
                        Some(fault) => {
                            cpu.inject = Some(fault);
                            Next::Resume
                        }
                        None => Next::Resume,
                    };
                }
                self.apply(effects, cpu)
            }
            Some(Err(fault)) => {
                cpu.inject = Some(fault);
                Next::Resume
            }
            None => {
                native(msr, value);
                cpu.rip += MSR_LEN;
                Next::Resume
            }
        }
    }

    /// VMMCALL at `cpu.rip`. A call the model leaves on its instruction (TIMEOUT, the rep start
    /// updated in RCX) is simply resumed there: the guest runs it again.
    pub fn vmmcall(
        &mut self,
        model: &mut Model,
        vp: u32,
        cpu: &mut Vcpu,
        mem: &mut dyn GuestMemory,
    ) -> Next {
        let all = self.vmcall_kind(cpu.rip) != VmcallKind::Hypercall;
        let moved = |n: &usize| all || HYPERCALL_GPRS.contains(&SHARED[*n]);
        // The firmware is soft-float: no XMM fast input from VTL2.
        let mut regs = X64HypercallRegs::default();
        for (n, reg) in regs.gprs_mut().into_iter().enumerate() {
            if moved(&n) {
                *reg = cpu.gprs[SHARED[n]];
            }
        }
        if all {
            // CR2 is shared between the VTLs too (TLFS vsm.md "Shared State").
            regs.cr2 = cpu.cr2;
        }
        let effects = model.vmcall(vp, &mut regs, mem);
        for (n, value) in regs.gprs().into_iter().enumerate() {
            if moved(&n) {
                cpu.gprs[SHARED[n]] = value;
            }
        }
        if all {
            cpu.cr2 = regs.cr2;
        }
        if effects.advance_ip {
            cpu.rip += VMMCALL_LEN;
        }
        self.apply(effects, cpu)
    }

    fn apply(&mut self, effects: Effects, cpu: &mut Vcpu) -> Next {
        if let Some(fault) = effects.fault {
            cpu.inject = Some(fault);
            return Next::Resume;
        }
        if let Some(start) = effects.start_vp {
            return Next::Start(alloc::boxed::Box::new(start));
        }
        match effects.hypercall_page {
            Some(HypercallPageChange::Enabled { gpa, vmcall_sites }) => {
                self.vmcall_sites = vmcall_sites
                    .into_iter()
                    .map(|(offset, kind)| (gpa + offset, kind))
                    .collect();
            }
            Some(HypercallPageChange::Disabled { gpa }) => self
                .vmcall_sites
                .retain(|(site, _)| !(gpa..gpa + hvdef::HV_PAGE_SIZE).contains(site)),
            None => {}
        }
        if effects.finished {
            return Next::Finished;
        }
        if effects.lower_runs {
            return Next::RunLower;
        }
        Next::Resume
    }
}

/// The VP the host runs a live lower VTL as.
const LOWER: Vtl = Vtl::VTL0;

/// An exception the host raises in the guest at its next entry (EVENTINJ).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct X64Exception {
    pub vector: u8,
    pub error_code: Option<u32>,
}

/// A live VTL0's whole CPU state as the host keeps it between exits (the VMCB's fields, in
/// Hyper-V's forms), with the exception to deliver at its next entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LowerRegs {
    /// GPRs, RIP and CR2 (`inject` unused: see `exception`).
    pub cpu: Vcpu,
    pub rflags: u64,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    /// As the guest sees it: never SVME, which the host adds for VMRUN.
    pub efer: u64,
    pub pat: u64,
    /// ES, CS, SS, DS, FS, GS, LDTR, TR: the order of their register names.
    pub segments: [HvX64SegmentRegister; 8],
    pub gdtr: HvX64TableRegister,
    pub idtr: HvX64TableRegister,
    /// XMM0..XMM5, shared with VTL2 (TLFS vsm.md "Shared State"): the fast hypercall input
    /// and output registers past RDX and R8.
    pub xmm: [u128; 6],
    pub exception: Option<X64Exception>,
}

/// The segment registers' names, in [`LowerRegs::segments`] order.
pub const SEGMENTS: [HvRegisterName; 8] = [
    x64_reg::ES,
    x64_reg::CS,
    x64_reg::SS,
    x64_reg::DS,
    x64_reg::FS,
    x64_reg::GS,
    x64_reg::LDTR,
    x64_reg::TR,
];

fn xmm_name(n: usize) -> HvRegisterName {
    HvRegisterName(x64_reg::XMM0.0 + n as u32)
}

fn gpr_name(n: usize) -> HvRegisterName {
    HvRegisterName(x64_reg::RAX.0 + n as u32)
}

fn u128_of(bytes: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(bytes);
    u128::from_le_bytes(b)
}

impl LowerRegs {
    /// The plain 64-bit registers besides the GPRs, with their names.
    fn named(&mut self) -> [(HvRegisterName, &mut u64); 9] {
        [
            (x64_reg::RIP, &mut self.cpu.rip),
            (x64_reg::RFLAGS, &mut self.rflags),
            (x64_reg::CR0, &mut self.cr0),
            (x64_reg::CR2, &mut self.cpu.cr2),
            (x64_reg::CR3, &mut self.cr3),
            (x64_reg::CR4, &mut self.cr4),
            (x64_reg::EFER, &mut self.efer),
            (x64_reg::PAT, &mut self.pat),
            (x64_reg::RSP, &mut self.cpu.gprs[RSP]),
        ]
    }

    /// Everything the model names for the VP's VTL0 (GPRs, RIP, RFLAGS, control registers,
    /// EFER, PAT, segments, descriptor tables), as the model holds it.
    pub fn load(model: &Model, vp: u32) -> LowerRegs {
        let state = |name| model.vp_state(vp, LOWER, name).unwrap_or(0);
        let mut regs = LowerRegs::default();
        for n in 0..16 {
            regs.cpu.gprs[n] = state(gpr_name(n)) as u64;
        }
        for (name, value) in regs.named() {
            *value = state(name) as u64;
        }
        for (seg, name) in regs.segments.iter_mut().zip(SEGMENTS) {
            *seg = HvX64SegmentRegister::read_from_bytes(&state(name).to_le_bytes())
                .expect("16 bytes");
        }
        regs.gdtr = HvX64TableRegister::read_from_bytes(&state(x64_reg::GDTR).to_le_bytes())
            .expect("16 bytes");
        regs.idtr = HvX64TableRegister::read_from_bytes(&state(x64_reg::IDTR).to_le_bytes())
            .expect("16 bytes");
        for (n, xmm) in regs.xmm.iter_mut().enumerate() {
            *xmm = state(xmm_name(n));
        }
        regs
    }

    /// Writes it all into the model (the glue's side of [`LowerRegs::load`]).
    pub fn store(&mut self, model: &mut Model, vp: u32) {
        for n in 0..16 {
            model.set_vp_state(vp, LOWER, gpr_name(n), self.cpu.gprs[n].into());
        }
        let mut named: Vec<(HvRegisterName, u64)> =
            self.named().into_iter().map(|(n, v)| (n, *v)).collect();
        for (name, value) in named.drain(..) {
            model.set_vp_state(vp, LOWER, name, value.into());
        }
        for (seg, name) in self.segments.iter().zip(SEGMENTS) {
            model.set_vp_state(vp, LOWER, name, u128_of(seg.as_bytes()));
        }
        model.set_vp_state(vp, LOWER, x64_reg::GDTR, u128_of(self.gdtr.as_bytes()));
        model.set_vp_state(vp, LOWER, x64_reg::IDTR, u128_of(self.idtr.as_bytes()));
        for (n, xmm) in self.xmm.iter().enumerate() {
            model.set_vp_state(vp, LOWER, xmm_name(n), *xmm);
        }
    }
}

/// VTL0 runs (again) from the state the model holds, first taking the exception the paravisor
/// or the hypervisor left it, if any. Unsupported: a pending event that is not an exception.
pub fn enter_lower(model: &mut Model, vp: u32) -> Result<LowerRegs, &'static str> {
    let mut regs = LowerRegs::load(model, vp);
    let Some(result) = model.vtl0().take_live_result(vp) else {
        return Ok(regs);
    };
    if let Some(fault) = result.hypervisor_fault {
        regs.exception = Some(match fault {
            Fault::Ud => X64Exception {
                vector: 6,
                error_code: None,
            },
            Fault::Gp => X64Exception {
                vector: 13,
                error_code: Some(0),
            },
        });
    } else if let Some(event) = result.pending_event() {
        let event = HvX64PendingExceptionEvent::from_bits(event);
        if event.event_type() != HvX64PendingEventType::EXCEPTION {
            return Err("a pending event other than an exception (not delivered yet)");
        }
        if event.vector() == 14 {
            regs.cpu.cr2 = event.exception_parameter();
        }
        regs.exception = Some(X64Exception {
            vector: event.vector() as u8,
            error_code: event.deliver_error_code().then_some(event.error_code()),
        });
    }
    Ok(regs)
}

/// What the host does after a live VTL0 exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LowerNext {
    /// VTL0 runs on with these registers.
    Resume(alloc::boxed::Box<LowerRegs>),
    /// VTL2 runs: its shared GPRs and CR2 are in its `Vcpu` now, its RIP past the VtlReturn
    /// it left by.
    Vtl2,
    /// The partition is done (a reset: the model ended the run).
    Finished,
    /// Something this host cannot carry out; the run fails with this reason.
    Unsupported(String),
}

/// VTL0 exited (`regs` as it left them, RIP at the instruction that exited): its state goes
/// into the model, which serves the exit; VTL2 resuming gets the shared registers the model
/// hands it in `vtl2` (whose RIP is still on its VtlReturn `vmmcall`).
pub fn lower_exit(
    model: &mut Model,
    vp: u32,
    exit: LowerExit,
    regs: &mut LowerRegs,
    vtl2: &mut Vcpu,
    mem: &mut dyn GuestMemory,
) -> LowerNext {
    regs.store(model, vp);
    let mut switch = X64HypercallRegs::default();
    let effects = match model.lower_exit(vp, exit, SwitchRegs::X64(&mut switch), mem) {
        Ok(effects) => effects,
        Err(e) => {
            return LowerNext::Unsupported(alloc::format!(
                "VTL0 exit at RIP {:#x}: {}",
                regs.cpu.rip,
                live_error(e)
            ))
        }
    };
    if effects.finished {
        return LowerNext::Finished;
    }
    if effects.lower_runs {
        return match enter_lower(model, vp) {
            Ok(regs) => LowerNext::Resume(alloc::boxed::Box::new(regs)),
            Err(why) => LowerNext::Unsupported(why.into()),
        };
    }
    if effects.start_vp.is_some() || effects.fault.is_some() {
        return LowerNext::Unsupported(
            "VTL0's exit asked for a VP start or a fault in VTL2".into(),
        );
    }
    for (n, value) in switch.gprs().into_iter().enumerate() {
        vtl2.gprs[SHARED[n]] = value;
    }
    vtl2.cr2 = switch.cr2;
    if effects.advance_ip {
        vtl2.rip += VMMCALL_LEN;
    }
    LowerNext::Vtl2
}

fn live_error(e: LiveError) -> String {
    match e {
        LiveError::AccessAllowed { gpa, access } => alloc::format!(
            "the nested tables stopped a {access:?} of GPA {gpa:#x} that the model allows (not \
             RAM the model knows, or the tables and the model disagree)"
        ),
        other => alloc::format!("{other:?}"),
    }
}

/// The EFER a guest's `wrmsr` leaves, or None for #GP (AMD APM vol. 2, 3.1.7: reserved bits
/// set, or LME changed while paging is on). SVME counts as reserved: the host offers the
/// guest no SVM. LMA is the processor's: a write keeps the old value.
pub fn efer_write(old: u64, new: u64, cr0: u64) -> Option<u64> {
    const SCE: u64 = 1 << 0;
    const LME: u64 = 1 << 8;
    const LMA: u64 = 1 << 10;
    const NXE: u64 = 1 << 11;
    const LMSLE: u64 = 1 << 13;
    const FFXSR: u64 = 1 << 14;
    const TCE: u64 = 1 << 15;
    const WRITABLE: u64 = SCE | LME | NXE | LMSLE | FFXSR | TCE;
    const PG: u64 = 1 << 31;
    if new & !(WRITABLE | LMA) != 0 {
        return None;
    }
    if cr0 & PG != 0 && (old ^ new) & LME != 0 {
        return None;
    }
    Some((new & WRITABLE) | (old & LMA))
}

/// VTL0's reset state for a kernel the loader placed and the host starts at `rip`: 32-bit
/// protected mode, paging off, flat 4 GiB code (selector 0x08) and data (0x10) segments, EFER
/// 0, RFLAGS 2 — the PVH ABI's entry state, the one the IGVM file's VTL0 context carries
/// (xtask's builder), as the model's register values.
pub fn protected_mode_entry(rip: u64) -> [(hvdef::HvRegisterName, u128); 16] {
    use hvdef::x86_64::{reg, HvX64SegmentRegister, HvX64TableRegister};
    use zerocopy::IntoBytes;
    let seg = |selector: u16, limit: u32, attributes: u16| {
        let s = HvX64SegmentRegister {
            base: 0,
            limit,
            selector,
            attributes,
        };
        u128::from_le_bytes(s.as_bytes().try_into().expect("16 bytes"))
    };
    let table = u128::from_le_bytes(
        HvX64TableRegister {
            pad: [0; 3],
            limit: 0xFFFF,
            base: 0,
        }
        .as_bytes()
        .try_into()
        .expect("16 bytes"),
    );
    // G | D/B | P | S | execute/read or read/write, accessed; a busy TSS; an LDT.
    let data = seg(0x10, 0xFFFF_FFFF, 0xC093);
    [
        (reg::RIP, rip.into()),
        (reg::RFLAGS, 0x2),
        (reg::CR0, 0x11),
        (reg::CR3, 0),
        (reg::CR4, 0),
        (reg::EFER, 0),
        (reg::CS, seg(0x08, 0xFFFF_FFFF, 0xC09B)),
        (reg::DS, data),
        (reg::ES, data),
        (reg::FS, data),
        (reg::GS, data),
        (reg::SS, data),
        (reg::TR, seg(0, 0xFFFF, 0x8B)),
        (reg::LDTR, seg(0, 0xFFFF, 0x82)),
        (reg::GDTR, table),
        (reg::IDTR, table),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_efer_write_keeps_to_the_architecture() {
        let long = 0xd00; // NXE | LMA | LME
        assert_eq!(efer_write(long, 0xd01, 0x8000_0011), Some(0xd01), "SCE on");
        assert_eq!(
            efer_write(long, 0x901, 0x8000_0011),
            Some(0xd01),
            "LMA is kept"
        );
        assert_eq!(
            efer_write(long, 0xc01, 0x8000_0011),
            None,
            "LME off under paging"
        );
        assert_eq!(
            efer_write(0, 0x100, 0x11),
            Some(0x100),
            "LME on before paging"
        );
        assert_eq!(efer_write(long, long | 1 << 12, 0x8000_0011), None, "SVME");
        assert_eq!(
            efer_write(long, long | 1 << 20, 0x8000_0011),
            None,
            "reserved"
        );
        assert_eq!(
            efer_write(long, long | 1 << 63, 0x8000_0011),
            None,
            "reserved"
        );
    }

    /// The reset state is 32-bit protected mode as the model reads a mode: a 32-bit code
    /// segment (D, not L), EFER.LMA clear, CR0.PE set, paging off.
    #[test]
    fn the_reset_state_is_flat_protected_mode() {
        use hvdef::x86_64::{reg, HvX64SegmentRegister};
        use zerocopy::FromBytes;
        let state = protected_mode_entry(0x0400_0000);
        let get = |name| {
            state
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .unwrap()
        };
        assert_eq!(get(reg::RIP), 0x0400_0000);
        let cs = HvX64SegmentRegister::read_from_bytes(&get(reg::CS).to_le_bytes()).unwrap();
        assert_eq!((cs.selector, cs.limit, cs.base), (0x08, 0xFFFF_FFFF, 0));
        assert_eq!(cs.attributes & (1 << 13), 0, "not a 64-bit segment");
        assert_ne!(cs.attributes & (1 << 14), 0, "32-bit");
        assert_eq!(get(reg::CR0) & 0x8000_0001, 1, "PE, no PG");
        assert_eq!(get(reg::EFER), 0);
    }
    use crate::hv::{partition, VP};
    use hvdef::x86_64::{cpuid, HvX64Msr, VMMCALL};
    use hvmodel::{
        Arch, Event, Outcome, TestMemory, VTL_CALL_OFFSET, VTL_RETURN_OFFSET, X64_SHARED_GPRS,
    };

    const PAGE: u64 = 0x3000;

    fn model() -> Model {
        partition(Arch::X86_64, core::slice::from_ref(&(0..0x10000)), 1)
    }

    fn no_native_cpuid(_: u32, _: u32) -> [u32; 4] {
        panic!("a hypervisor leaf went to the CPU")
    }

    /// Guest OS id, then the hypercall page at `PAGE`, through the glue.
    fn enable_page(glue: &mut Glue, model: &mut Model, mem: &mut TestMemory) {
        for (msr, value) in [
            (HvX64Msr::HV_X64_MSR_GUEST_OS_ID, 0x8100_0000_0000_0000),
            (HvX64Msr::HV_X64_MSR_HYPERCALL, PAGE | 1),
        ] {
            let mut cpu = Vcpu::default();
            cpu.gprs[RCX] = msr.0.into();
            cpu.gprs[RAX] = value & 0xffff_ffff;
            cpu.gprs[RDX] = value >> 32;
            let next = glue.wrmsr(model, VP, &mut cpu, mem, |m, _| {
                panic!("{m:#x} went native")
            });
            assert_eq!((next, cpu.rip, cpu.inject), (Next::Resume, MSR_LEN, None));
        }
    }

    #[test]
    fn shared_register_order_is_the_models() {
        const NAMES: [&str; 16] = [
            "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11",
            "r12", "r13", "r14", "r15",
        ];
        for (&n, (name, _)) in SHARED.iter().zip(X64_SHARED_GPRS) {
            assert_eq!(NAMES[n], name);
        }
    }

    #[test]
    fn cpuid_hypervisor_leaves_are_the_models_and_the_rest_the_cpus() {
        let (mut glue, mut model) = (Glue::default(), model());
        let mut cpu = Vcpu {
            rip: 0x10_0000,
            ..Vcpu::default()
        };
        cpu.gprs[RAX] = 0xffff_ffff_0000_0000 | u64::from(cpuid::HV_CPUID_VENDOR_AND_MAX_FUNCTIONS);
        cpu.gprs[RBX] = u64::MAX;
        assert_eq!(
            glue.cpuid(&mut model, VP, &mut cpu, no_native_cpuid),
            Next::Resume
        );
        let want = [
            (RAX, cpuid::HV_CPUID_NESTED_VIRT_FEATURES),
            (RBX, cpuid::HV_CPUID_VENDOR_EBX),
            (RCX, cpuid::HV_CPUID_VENDOR_ECX),
            (RDX, cpuid::HV_CPUID_VENDOR_EDX),
        ];
        for (reg, value) in want {
            assert_eq!(cpu.gprs[reg], u64::from(value), "register {reg}");
        }
        assert_eq!(cpu.rip, 0x10_0000 + CPUID_LEN);

        cpu.gprs[RAX] = 1;
        cpu.gprs[RCX] = 7;
        glue.cpuid(&mut model, VP, &mut cpu, |leaf, sub| [leaf, sub, 0xc, 0xd]);
        assert_eq!(cpu.gprs[..4], [1, 0xc, 0xd, 7]);
        assert_eq!(model.trace().cpuid_leaves(), [0x4000_0000]);
    }

    #[test]
    fn synthetic_msrs_are_the_models_faults_are_injected_and_the_rest_native() {
        let (mut glue, mut model) = (Glue::default(), model());
        let mut mem = TestMemory::new(0x10000);
        let mut cpu = Vcpu::default();
        cpu.gprs[RCX] = HvX64Msr::HV_X64_MSR_VP_INDEX.0.into();
        cpu.gprs[RAX] = u64::MAX;
        glue.rdmsr(&mut model, VP, &mut cpu, |m| panic!("{m:#x} went native"));
        assert_eq!((cpu.gprs[RAX], cpu.gprs[RDX], cpu.rip), (0, 0, MSR_LEN));

        // An MSR of the hypervisor's range the model does not implement: #GP, RIP stays.
        cpu.gprs[RCX] = 0x4000_0fff;
        glue.rdmsr(&mut model, VP, &mut cpu, |m| panic!("{m:#x} went native"));
        assert_eq!((cpu.inject, cpu.rip), (Some(Fault::Gp), MSR_LEN));
        cpu.inject = None;
        glue.wrmsr(&mut model, VP, &mut cpu, &mut mem, |m, _| {
            panic!("{m:#x} native")
        });
        assert_eq!((cpu.inject, cpu.rip), (Some(Fault::Gp), MSR_LEN));

        cpu.gprs[RCX] = 0xc000_0103;
        glue.rdmsr(&mut model, VP, &mut cpu, |_| 0x1234_5678_9abc_def0);
        assert_eq!(
            (cpu.gprs[RAX], cpu.gprs[RDX], cpu.rip),
            (0x9abc_def0, 0x1234_5678, 2 * MSR_LEN)
        );
        let mut written = None;
        cpu.gprs[RAX] = 0x1_0000_0002;
        cpu.gprs[RDX] = 3;
        glue.wrmsr(&mut model, VP, &mut cpu, &mut mem, |m, v| {
            written = Some((m, v))
        });
        assert_eq!(written, Some((0xc000_0103, 0x3_0000_0002)));
        assert_eq!(cpu.rip, 3 * MSR_LEN);
    }

    #[test]
    fn the_hypercall_page_names_its_vtl_sites() {
        let (mut glue, mut model) = (Glue::default(), model());
        let mut mem = TestMemory::new(0x10000);
        enable_page(&mut glue, &mut model, &mut mem);
        let mut page = [0u8; 3];
        hvmodel::GuestMemory::read(&mut mem, PAGE, &mut page).expect("in RAM");
        assert_eq!(page, VMMCALL, "the model wrote the page");
        // The VTL stubs' `vmmcall`s follow `mov rax, rcx; mov ecx, imm32` (8 bytes).
        let call = PAGE + u64::from(VTL_CALL_OFFSET) + 8;
        let ret = PAGE + u64::from(VTL_RETURN_OFFSET) + 8;
        assert_eq!(glue.vmcall_kind(call), VmcallKind::VtlCall);
        assert_eq!(glue.vmcall_kind(ret), VmcallKind::VtlReturn);
        assert_eq!(glue.vmcall_kind(PAGE), VmcallKind::Hypercall);
        assert_eq!(glue.vmcall_kind(0x12_3456), VmcallKind::Hypercall);
    }

    /// An ordinary hypercall reads and writes RAX/RCX/RDX/R8 only; the other registers, CR2
    /// and the RIP past the `vmmcall` are left as they were.
    #[test]
    fn an_ordinary_hypercall_moves_its_four_registers_only() {
        let (mut glue, mut model) = (Glue::default(), model());
        let mut mem = TestMemory::new(0x10000);
        enable_page(&mut glue, &mut model, &mut mem);
        let mut cpu = Vcpu {
            rip: PAGE,
            cr2: 0xc2,
            ..Vcpu::default()
        };
        for (i, r) in cpu.gprs.iter_mut().enumerate() {
            *r = 0x1000 + i as u64;
        }
        // Code 0xffff is no hypercall: HV_STATUS_INVALID_HYPERCALL_CODE (2) in RAX.
        cpu.gprs[RCX] = 0xffff;
        let before = cpu;
        assert_eq!(
            glue.vmmcall(&mut model, VP, &mut cpu, &mut mem),
            Next::Resume
        );
        assert_eq!(cpu.gprs[RAX], 2);
        assert_eq!(cpu.rip, PAGE + VMMCALL_LEN);
        for n in (0..16).filter(|n| *n != RAX) {
            assert_eq!(cpu.gprs[n], before.gprs[n], "register {n}");
        }
        assert_eq!((cpu.cr2, cpu.inject), (0xc2, None));
    }

    #[test]
    fn the_first_vtl_return_with_an_empty_script_finishes_and_is_traced() {
        let (mut glue, mut model) = (Glue::default(), model());
        let mut mem = TestMemory::new(0x10000);
        enable_page(&mut glue, &mut model, &mut mem);
        let mut cpu = Vcpu {
            rip: PAGE + u64::from(VTL_RETURN_OFFSET) + 8,
            ..Vcpu::default()
        };
        cpu.gprs[RCX] = 0x12;
        cpu.gprs[RSP] = 0x5555;
        assert_eq!(
            glue.vmmcall(&mut model, VP, &mut cpu, &mut mem),
            Next::Finished
        );
        assert_eq!(cpu.gprs[RSP], 0x5555, "RSP is no shared register");
        let events = model.trace().events();
        assert!(
            matches!(
                events,
                [
                    Event::Wrmsr { msr: 0x4000_0000, value: 0x8100_0000_0000_0000, result: Ok(_), .. },
                    Event::Wrmsr { msr: 0x4000_0001, value: 0x3001, result: Ok(_), .. },
                    Event::Hypercall(r),
                ] if r.code.0 == 0x12 && matches!(r.outcome, Outcome::VtlSwitch { .. })
            ),
            "{events:?}"
        );
        // What the host writes to its trace port, event after event, decodes to the same.
        let mut bytes = Vec::new();
        for event in events {
            event.encode(&mut bytes);
        }
        assert_eq!(hvmodel::decode_all(&bytes).as_deref(), Ok(events));
    }

    /// The same `vmmcall` with a VTL-return code outside the VTL stub is an ordinary call with
    /// a VTL control (RAX) that is no code: the model's #UD, which the host injects.
    #[test]
    fn a_fault_the_model_raises_is_injected_with_rip_on_the_instruction() {
        let (mut glue, mut model) = (Glue::default(), model());
        let mut mem = TestMemory::new(0x10000);
        enable_page(&mut glue, &mut model, &mut mem);
        let mut cpu = Vcpu {
            rip: PAGE + u64::from(VTL_RETURN_OFFSET) + 8,
            ..Vcpu::default()
        };
        cpu.gprs[RCX] = 0x12;
        cpu.gprs[RAX] = 0x4;
        assert_eq!(
            glue.vmmcall(&mut model, VP, &mut cpu, &mut mem),
            Next::Resume
        );
        assert_eq!(cpu.inject, Some(Fault::Ud));
        assert_eq!(cpu.rip, PAGE + u64::from(VTL_RETURN_OFFSET) + 8);
    }

    fn live_at_vtl0() -> (Glue, Model, TestMemory) {
        let (mut glue, mut model) = (Glue::default(), model());
        let mut mem = TestMemory::new(0x10000);
        enable_page(&mut glue, &mut model, &mut mem);
        model.vtl0().set_live(true);
        let mut cpu = Vcpu {
            rip: PAGE + u64::from(VTL_RETURN_OFFSET) + 8,
            ..Vcpu::default()
        };
        cpu.gprs[RCX] = 0x12;
        assert_eq!(
            glue.vmmcall(&mut model, VP, &mut cpu, &mut mem),
            Next::RunLower
        );
        assert_eq!(
            cpu.rip,
            PAGE + u64::from(VTL_RETURN_OFFSET) + 8,
            "VTL2 resumes on its VtlReturn, later"
        );
        assert_eq!(model.active_vtl(VP), Some(Vtl::VTL0));
        (glue, model, mem)
    }

    /// Everything the host keeps of VTL0 goes into the model and comes back unchanged.
    #[test]
    fn vtl0s_state_round_trips_through_the_model() {
        let (_, mut model, _) = live_at_vtl0();
        let mut regs = LowerRegs::default();
        for (i, r) in regs.cpu.gprs.iter_mut().enumerate() {
            *r = 0x100 + i as u64;
        }
        (regs.cpu.rip, regs.cpu.cr2, regs.rflags) = (0x400_0000, 0xc2, 0x246);
        (regs.cr0, regs.cr3, regs.cr4, regs.efer, regs.pat) = (0x11, 0x3000, 0x620, 0x500, 7);
        for (i, seg) in regs.segments.iter_mut().enumerate() {
            *seg = HvX64SegmentRegister {
                base: i as u64,
                limit: 0xffff_ffff,
                selector: 8 * i as u16,
                attributes: 0xc093,
            };
        }
        regs.gdtr.limit = 0x17;
        regs.idtr.base = 0x5000;
        regs.clone().store(&mut model, VP);
        assert_eq!(LowerRegs::load(&model, VP), regs);
        let cs = model.vp_state(VP, Vtl::VTL0, x64_reg::CS).unwrap();
        assert_eq!(cs as u64, 1, "base, then limit, selector and attributes");
        assert_eq!((cs >> 64) as u64, 0xc093_0008_ffff_ffff);
    }

    /// A live VTL0's `vmmcall` the hypervisor serves itself: VTL0 resumes past it with the
    /// result in RAX; VTL2 never runs.
    #[test]
    fn a_vtl0_hypercall_the_hypervisor_serves_resumes_vtl0() {
        let (_, mut model, mut mem) = live_at_vtl0();
        let mut regs = LowerRegs::load(&model, VP);
        regs.cpu.rip = 0x4000;
        regs.cpu.gprs[RCX] = 0xffff;
        let mut vtl2 = Vcpu::default();
        let exit = LowerExit::Hypercall { immediate: 0 };
        let next = lower_exit(&mut model, VP, exit, &mut regs, &mut vtl2, &mut mem);
        let LowerNext::Resume(regs) = next else {
            panic!("{next:?}")
        };
        assert_eq!(regs.cpu.gprs[RAX], 2, "HV_STATUS_INVALID_HYPERCALL_CODE");
        assert_eq!(regs.cpu.rip, 0x4000 + VMMCALL_LEN);
        assert_eq!((regs.exception, vtl2), (None, Vcpu::default()));
    }

    /// An access the nested tables stopped that the model allows is the glue's bug, named.
    #[test]
    fn an_allowed_access_is_refused_by_name() {
        let (_, mut model, mut mem) = live_at_vtl0();
        let mut regs = LowerRegs::load(&model, VP);
        let exit = LowerExit::Access {
            gpa: 0x8000,
            len: 1,
            access: hvdef::HvInterceptAccessType::WRITE,
            delivering_event: false,
        };
        let next = lower_exit(
            &mut model,
            VP,
            exit,
            &mut regs,
            &mut Vcpu::default(),
            &mut mem,
        );
        let LowerNext::Unsupported(why) = next else {
            panic!("{next:?}")
        };
        assert!(
            why.contains("WRITE of GPA 0x8000 that the model allows"),
            "{why}"
        );
    }

    /// HvCallStartVirtualProcessor through the glue: the host is told to start the VP's CPU
    /// at the context the model accepted (after HvCallEnableVpVtl), VTL2 resumes past its call.
    #[test]
    fn start_virtual_processor_asks_the_host_to_start_the_cpu() {
        use hvdef::x86_64::{HvX64InitialVpContext, HvX64InputEnableVpVtl};
        use hvdef::{Control, HypercallCode, HV_PARTITION_ID_SELF};
        use zerocopy::IntoBytes;
        let (mut glue, mut model) = (
            Glue::default(),
            partition(Arch::X86_64, core::slice::from_ref(&(0..0x10000)), 2),
        );
        let mut mem = TestMemory::new(0x10000);
        enable_page(&mut glue, &mut model, &mut mem);
        let input = HvX64InputEnableVpVtl {
            partition_id: HV_PARTITION_ID_SELF,
            vp_index: 1,
            target_vtl: 2,
            reserved: [0; 3],
            context: HvX64InitialVpContext {
                rip: 0x10_00a6,
                rsp: 0x8000,
                ..Default::default()
            },
        };
        hvmodel::GuestMemory::write(&mut mem, 0x5000, input.as_bytes()).expect("in RAM");
        let mut next = Next::Resume;
        for code in [
            HypercallCode::ENABLE_VP_VTL,
            HypercallCode::START_VIRTUAL_PROCESSOR,
        ] {
            let mut cpu = Vcpu {
                rip: 0x2000,
                ..Vcpu::default()
            };
            cpu.gprs[RCX] = Control::new().with_code(code).into_bits();
            cpu.gprs[RDX] = 0x5000;
            next = glue.vmmcall(&mut model, VP, &mut cpu, &mut mem);
            assert_eq!(
                (cpu.gprs[RAX], cpu.rip),
                (0, 0x2000 + VMMCALL_LEN),
                "{code:?}"
            );
        }
        let Next::Start(start) = next else {
            panic!("{next:?}")
        };
        assert_eq!((start.vp, start.vtl), (1, Vtl::VTL2));
        assert_eq!(start.context, hvmodel::InitialVpContext::X64(input.context));
    }
}
