//! The x64 exits (AMD SVM): CPUID, RDMSR/WRMSR and VMMCALL, on the guest's registers as the
//! host saved them, answered by the model exactly as the gdbstub mock's sites are
//! (`mockhv::session`): the model's CPUID leaves and synthetic MSRs, the CPU's own for the
//! rest; a `vmmcall` at one of the hypercall page's VTL stubs moves every shared register, any
//! other one only RAX/RCX/RDX/R8.

use super::{Next, VP};
use alloc::vec::Vec;
use hvmodel::{
    Effects, Fault, GuestMemory, HypercallPageChange, Model, VmcallKind, X64HypercallRegs,
};

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

    /// CPUID: the model's leaves, or `native` (the CPU's own, as the gdbstub mock steps over
    /// them natively).
    pub fn cpuid(
        &mut self,
        model: &mut Model,
        cpu: &mut Vcpu,
        native: impl FnOnce(u32, u32) -> [u32; 4],
    ) -> Next {
        let (leaf, subleaf) = (cpu.gprs[RAX] as u32, cpu.gprs[RCX] as u32);
        let result = model
            .cpuid(VP, leaf, subleaf)
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
        cpu: &mut Vcpu,
        native: impl FnOnce(u32) -> u64,
    ) -> Next {
        let msr = cpu.gprs[RCX] as u32;
        let value = match model.rdmsr(VP, msr) {
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
        cpu: &mut Vcpu,
        mem: &mut dyn GuestMemory,
        native: impl FnOnce(u32, u64),
    ) -> Next {
        let msr = cpu.gprs[RCX] as u32;
        let value = (cpu.gprs[RAX] & 0xffff_ffff) | (cpu.gprs[RDX] << 32);
        match model.wrmsr(VP, msr, value, mem) {
            Some(Ok(effects)) => {
                cpu.rip += MSR_LEN;
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
        cpu: &mut Vcpu,
        mem: &mut dyn GuestMemory,
    ) -> Next {
        let all = self.vmcall_kind(cpu.rip) != VmcallKind::Hypercall;
        let moved = |n: &usize| all || HYPERCALL_GPRS.contains(&SHARED[*n]);
        // The firmware is soft-float: no XMM fast input, as in the gdbstub mock.
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
        let effects = model.vmcall(VP, &mut regs, mem);
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
        if effects.start_vp.is_some() {
            return Next::Unsupported("HvCallStartVirtualProcessor: this host runs one VP");
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
        Next::Resume
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hv::partition;
    use hvdef::x86_64::{cpuid, HvX64Msr, VMMCALL};
    use hvmodel::{
        Arch, Event, Outcome, TestMemory, VTL_CALL_OFFSET, VTL_RETURN_OFFSET, X64_SHARED_GPRS,
    };

    const PAGE: u64 = 0x3000;

    fn model() -> Model {
        partition(Arch::X86_64, 0..0x10000, 1)
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
            let next = glue.wrmsr(model, &mut cpu, mem, |m, _| panic!("{m:#x} went native"));
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
            glue.cpuid(&mut model, &mut cpu, no_native_cpuid),
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
        glue.cpuid(&mut model, &mut cpu, |leaf, sub| [leaf, sub, 0xc, 0xd]);
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
        glue.rdmsr(&mut model, &mut cpu, |m| panic!("{m:#x} went native"));
        assert_eq!((cpu.gprs[RAX], cpu.gprs[RDX], cpu.rip), (0, 0, MSR_LEN));

        // An MSR of the hypervisor's range the model does not implement: #GP, RIP stays.
        cpu.gprs[RCX] = 0x4000_0fff;
        glue.rdmsr(&mut model, &mut cpu, |m| panic!("{m:#x} went native"));
        assert_eq!((cpu.inject, cpu.rip), (Some(Fault::Gp), MSR_LEN));
        cpu.inject = None;
        glue.wrmsr(&mut model, &mut cpu, &mut mem, |m, _| {
            panic!("{m:#x} native")
        });
        assert_eq!((cpu.inject, cpu.rip), (Some(Fault::Gp), MSR_LEN));

        cpu.gprs[RCX] = 0xc000_0103;
        glue.rdmsr(&mut model, &mut cpu, |_| 0x1234_5678_9abc_def0);
        assert_eq!(
            (cpu.gprs[RAX], cpu.gprs[RDX], cpu.rip),
            (0x9abc_def0, 0x1234_5678, 2 * MSR_LEN)
        );
        let mut written = None;
        cpu.gprs[RAX] = 0x1_0000_0002;
        cpu.gprs[RDX] = 3;
        glue.wrmsr(&mut model, &mut cpu, &mut mem, |m, v| {
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
        assert_eq!(glue.vmmcall(&mut model, &mut cpu, &mut mem), Next::Resume);
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
        assert_eq!(glue.vmmcall(&mut model, &mut cpu, &mut mem), Next::Finished);
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
        assert_eq!(glue.vmmcall(&mut model, &mut cpu, &mut mem), Next::Resume);
        assert_eq!(cpu.inject, Some(Fault::Ud));
        assert_eq!(cpu.rip, PAGE + u64::from(VTL_RETURN_OFFSET) + 8);
    }
}
