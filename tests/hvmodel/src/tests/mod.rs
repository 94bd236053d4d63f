//! Unit tests of the TLFS model, one module per area, sharing a small harness: a model, 2 MiB of
//! guest memory and helpers that issue calls the way the paravisor's instructions would.

mod arm64;
mod hypercalls;
mod live;
mod properties;
mod protection;
mod registers;
mod regpage;
mod routing;
mod vp_start;
mod vtl0;
mod x86;

use hvdef::x86_64::{reg as x64_reg, HvX64Msr};
use hvdef::{
    Control, HvInputGetVpRegisters, HvInputVtl, HvInterceptType, HvRegisterAssoc, HvRegisterName,
    HvStatus, HypercallCode, HypercallOutput, Vtl, HV_PARTITION_ID_SELF, HV_VP_INDEX_SELF,
};
use zerocopy::IntoBytes;

use super::{Effects, Fault, GuestMemory, Model, Scenario, TestMemory, X64HypercallRegs};

pub(super) const MEM_SIZE: usize = 0x20_0000;
/// Input and output pages for memory-based calls.
pub(super) const IN: u64 = 0x1_0000;
pub(super) const OUT: u64 = 0x1_1000;
pub(super) const HYPERCALL_PAGE: u64 = 0x2_0000;
pub(super) const ASSIST: u64 = 0x3_0000;
pub(super) const SIMP: u64 = 0x3_1000;
/// An open-source (bit 63) Linux (type 1) guest OS id.
pub(super) const GUEST_OS_ID: u64 = 0x8100_0000_0000_0001;

pub(super) struct Hv {
    pub model: Model,
    pub mem: TestMemory,
}

impl Hv {
    pub fn new(scenario: Scenario) -> Self {
        Self {
            model: Model::new(scenario),
            mem: TestMemory::new(MEM_SIZE),
        }
    }

    pub fn x64() -> Self {
        Self::new(Scenario::default())
    }

    pub fn vmcall(&mut self, regs: X64HypercallRegs) -> (X64HypercallRegs, Effects) {
        self.vmcall_on(0, regs)
    }

    pub fn vmcall_on(
        &mut self,
        vp: u32,
        mut regs: X64HypercallRegs,
    ) -> (X64HypercallRegs, Effects) {
        let effects = self.model.vmcall(vp, &mut regs, &mut self.mem);
        (regs, effects)
    }

    /// A memory-based x64 call with `input` at `IN` and the output list at `OUT`.
    pub fn call(&mut self, control: Control, input: &[u8]) -> HypercallOutput {
        self.call_at(control, IN, OUT, input)
    }

    pub fn call_at(
        &mut self,
        control: Control,
        in_gpa: u64,
        out_gpa: u64,
        input: &[u8],
    ) -> HypercallOutput {
        if !input.is_empty() {
            self.mem.write(in_gpa, input).unwrap();
        }
        let (regs, effects) = self.vmcall(X64HypercallRegs {
            rcx: control.into_bits(),
            rdx: in_gpa,
            r8: out_gpa,
            ..Default::default()
        });
        assert_eq!(effects.fault, None, "{control:?}");
        HypercallOutput::from_bits(regs.rax)
    }

    /// Memory-based GetVpRegisters on VP 0; returns the status and the values read.
    pub fn get_regs(
        &mut self,
        vtl: HvInputVtl,
        names: &[HvRegisterName],
    ) -> (HypercallOutput, Vec<u128>) {
        let out = self.call(
            rep(HypercallCode::GET_VP_REGISTERS, names.len()),
            &get_input(HV_VP_INDEX_SELF, vtl, names),
        );
        (out, self.values(names.len()))
    }

    pub fn get_reg(&mut self, name: HvRegisterName) -> u128 {
        let (out, values) = self.get_regs(HvInputVtl::CURRENT, &[name]);
        assert_eq!(out.status(), HvStatus::SUCCESS, "{name:?}");
        values[0]
    }

    /// The 16-byte values at `OUT`.
    pub fn values(&self, count: usize) -> Vec<u128> {
        (0..count)
            .map(|i| {
                u128::from_le_bytes(self.mem.slice(OUT + 16 * i as u64, 16).try_into().unwrap())
            })
            .collect()
    }

    pub fn set_regs(
        &mut self,
        vtl: HvInputVtl,
        regs: &[(HvRegisterName, u128)],
    ) -> HypercallOutput {
        self.call(
            rep(HypercallCode::SET_VP_REGISTERS, regs.len()),
            &set_input(HV_VP_INDEX_SELF, vtl, regs),
        )
    }

    pub fn rdmsr(&mut self, msr: HvX64Msr) -> Result<u64, Fault> {
        self.model.rdmsr(0, msr.0).expect("synthetic MSR")
    }

    pub fn wrmsr(&mut self, msr: HvX64Msr, value: u64) -> Result<Effects, Fault> {
        self.model
            .wrmsr(0, msr.0, value, &mut self.mem)
            .expect("synthetic MSR")
    }

    /// Guest OS id, hypercall page, VP assist page and an enabled SynIC with SINT0 on vector
    /// 0x20: the state a booted x64 paravisor is in.
    pub fn boot_x64(&mut self) {
        self.wrmsr(HvX64Msr::HV_X64_MSR_GUEST_OS_ID, GUEST_OS_ID)
            .unwrap();
        self.wrmsr(HvX64Msr::HV_X64_MSR_HYPERCALL, HYPERCALL_PAGE | 1)
            .unwrap();
        self.wrmsr(HvX64Msr::HV_X64_MSR_VP_ASSIST_PAGE, ASSIST | 1)
            .unwrap();
        self.wrmsr(HvX64Msr::HV_X64_MSR_SCONTROL, 1).unwrap();
        self.wrmsr(HvX64Msr::HV_X64_MSR_SIMP, SIMP | 1).unwrap();
        self.wrmsr(HvX64Msr::HV_X64_MSR_SINT0, 0x20).unwrap();
        let out = self.call(
            simple(HypercallCode::INSTALL_INTERCEPT),
            &hypercalls::install_input(HvInterceptType::UNKNOWN_SYNIC_CONNECTION.0),
        );
        assert_eq!(out.status(), HvStatus::SUCCESS);
    }
}

/// A connection id the host's port map does not have (default scenario): VTL0's calls to it
/// reach VTL2 once VTL2 installed the UnknownSynicConnection intercept.
pub(super) const UNKNOWN_CONNECTION: u32 = 0x77;

pub(super) fn rep(code: HypercallCode, count: usize) -> Control {
    Control::new().with_code(code).with_rep_count(count as u16)
}

pub(super) fn simple(code: HypercallCode) -> Control {
    Control::new().with_code(code)
}

pub(super) fn header(vp_index: u32, vtl: HvInputVtl) -> HvInputGetVpRegisters {
    HvInputGetVpRegisters {
        partition_id: HV_PARTITION_ID_SELF,
        vp_index,
        target_vtl: vtl,
        reserved: [0; 3],
    }
}

pub(super) fn get_input(vp_index: u32, vtl: HvInputVtl, names: &[HvRegisterName]) -> Vec<u8> {
    let mut input = header(vp_index, vtl).as_bytes().to_vec();
    for name in names {
        input.extend_from_slice(name.as_bytes());
    }
    input
}

pub(super) fn set_input(
    vp_index: u32,
    vtl: HvInputVtl,
    regs: &[(HvRegisterName, u128)],
) -> Vec<u8> {
    let mut input = header(vp_index, vtl).as_bytes().to_vec();
    for &(name, value) in regs {
        let assoc = HvRegisterAssoc {
            name,
            reserved: [0; 3],
            value: value.into(),
        };
        input.extend_from_slice(assoc.as_bytes());
    }
    input
}

pub(super) fn vtl0() -> HvInputVtl {
    HvInputVtl::target(Vtl::VTL0)
}

/// The VTL0 RIP register, for brevity.
pub(super) const RIP: HvRegisterName = x64_reg::RIP;
