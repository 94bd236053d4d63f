//! The TLFS model: a Hyper-V partition (VPs, VTLs, VSM, SynIC, VP assist page, hypercall page)
//! behind the hypervisor-facing entry points the QEMU glue calls when the paravisor hits one of
//! its hypercall, CPUID or MSR sites.
//!
//! Plain Rust with no I/O: guest memory is a trait, every answer is a value plus [`Effects`] the
//! glue carries out, and every access lands in a [`Trace`]. Guest input never panics the model;
//! it gets a TLFS status or a fault.
//!
//! `no_std` + `alloc`, so the same model can be linked into an in-VM hypervisor as well as the
//! host-side mock (`mockhv::model` re-exports it); the unit and property tests run on the host.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod aarch64;
mod arch;
mod features;
mod hypercall;
mod memory;
mod partition;
mod protection;
mod registers;
mod regpage;
mod scenario;
mod synic;
mod trace;
mod vtl;
mod wire;
mod x86_64;

#[cfg(test)]
mod tests;

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use hvdef::aarch64::HvArm64InitialVpContext;
use hvdef::x86_64::HvX64InitialVpContext;
use hvdef::{HvError, HvInputInstallIntercept, HvMessage, HvRegisterName, Vtl};

pub use aarch64::{arm64_shared, ARM64_GPRS};
pub use arch::{Arch, ParseArchError};
pub use memory::{read_obj, GuestMemory, MemoryError, TestMemory};
pub use scenario::{
    BudgetEnd, FaultAction, FaultFilter, HypercallIntercept, InjectedFault, Limits, Overlap,
    Scenario,
};
pub use trace::{Abi, Delivery, Event, HypercallRecord, Outcome, Trace};
pub use vtl::{LiveError, LowerExit, SwitchRegs, Vtl0Access, Vtl0Call, Vtl0Result, Vtl0Script};
pub use wire::{decode_all, WireError};
pub use x86_64::{
    VmcallKind, X64HypercallRegs, VTL_CALL_OFFSET, VTL_RETURN_OFFSET, X64_SHARED_GPRS,
};

use partition::{Partition, PartitionVtl, Vp, VTL_COUNT};

/// An exception the glue raises in the guest instead of completing the instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// #GP (x64 RDMSR/WRMSR).
    Gp,
    /// #UD on x64, an undefined-instruction exception on arm64.
    Ud,
}

/// The initial register state of a VP started by HvCallStartVirtualProcessor or prepared by
/// HvCallEnableVpVtl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialVpContext {
    X64(HvX64InitialVpContext),
    Aarch64(HvArm64InitialVpContext),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartVp {
    pub vp: u32,
    pub vtl: Vtl,
    pub context: InitialVpContext,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HypercallPageChange {
    /// The page now overlays `gpa` (the model has written its content); the glue breaks on
    /// `gpa + offset` for each site.
    Enabled {
        gpa: u64,
        vmcall_sites: Vec<(u64, VmcallKind)>,
    },
    /// The page at `gpa` is gone (Enable cleared or guest OS id zeroed).
    Disabled { gpa: u64 },
}

/// A SynIC message landed in a slot of an unmasked SINT: the glue may raise `vector`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SintInterrupt {
    pub vp: u32,
    pub vtl: Vtl,
    pub sint: u8,
    pub vector: u8,
}

/// What the glue must do after a call into the model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Step past the hypercall instruction (`vmcall`: 3 bytes, `hvc`: 4). False when the
    /// instruction must run again: a TIMEOUT with the rep start index updated, or a fault.
    pub advance_ip: bool,
    /// Raise this instead of completing the instruction.
    pub fault: Option<Fault>,
    /// HvCallStartVirtualProcessor succeeded on a VP that was not running: really start this
    /// vCPU with this context. (A lower VTL started on a VP whose higher VTL runs is not this:
    /// its context is in the model's registers, see [`Model::take_lower_starts`].)
    pub start_vp: Option<StartVp>,
    /// HvCallEnableVpVtl succeeded. Informational: the TLFS does not run the VP until it is
    /// started, so the glue starts nothing.
    pub vp_vtl_enabled: Option<StartVp>,
    pub hypercall_page: Option<HypercallPageChange>,
    pub interrupts: Vec<SintInterrupt>,
    /// A VtlReturn found the lower-VTL script empty: the scripted run is over.
    pub finished: bool,
    /// Live mode ([`Vtl0Script::set_live`]): the VP now runs its lower VTL for real; the glue
    /// loads that VTL's registers from the model and resumes it.
    pub lower_runs: bool,
    /// A lower VTL's hypercall is handed to VTL2 as an `HvMessageTypeHypercallIntercept`
    /// instead of being completed: nothing is written back and the IP stays on the call, as
    /// OpenVMM's `reflect_to_vtl2` does (it returns `HvError::Timeout` for that reason).
    pub reflect: bool,
    /// A lower VTL's call touched a page VTL2 protected (GPA, access): VTL2 gets a GPA
    /// intercept instead of the call being carried out.
    pub memory_intercept: Option<(u64, hvdef::HvInterceptAccessType)>,
}

impl Effects {
    fn fault(fault: Fault) -> Self {
        Self {
            fault: Some(fault),
            ..Self::default()
        }
    }

    fn advance() -> Self {
        Self {
            advance_ip: true,
            ..Self::default()
        }
    }
}

/// The mock hypervisor's view of one partition.
pub struct Model {
    scenario: Scenario,
    partition: Partition,
    vps: Vec<Vp>,
    trace: Trace,
    vtl0: Vtl0Script,
    /// Per injected fault (same index): the calls that passed validation and matched its code
    /// and filter so far.
    fault_counts: Vec<u32>,
    /// The fault being applied is a `ReturnedTimeout`: complete the call instead of leaving
    /// the IP on it.
    timeout_returned: bool,
    /// VPs whose lower VTL HvCallStartVirtualProcessor started while a higher VTL runs on
    /// them, since the glue last asked ([`Model::take_lower_starts`]).
    lower_starts: Vec<u32>,
}

impl Model {
    pub fn new(scenario: Scenario) -> Model {
        let scenario = scenario.normalized();
        let ap_vtls = if scenario.ap_vtls_enabled {
            scenario.enabled_vtls
        } else {
            1
        };
        let vps = (0..scenario.vp_count)
            .map(|vp| {
                let (enabled, started) = if vp == 0 {
                    (scenario.enabled_vtls, true)
                } else {
                    (ap_vtls, false)
                };
                let mut vp = Vp::new(scenario.arch, scenario.active_vtl, enabled, started);
                if scenario.active_vtl > Vtl::VTL0 {
                    for &(name, value) in &scenario.vtl0_registers {
                        vp.file_mut(Vtl::VTL0).set(name, value);
                    }
                }
                vp
            })
            .collect();
        let mut vtls = vec![PartitionVtl::default(); VTL_COUNT];
        for vtl in vtls.iter_mut().skip(1) {
            // TLFS: ZeroMemoryOnReset is on by default.
            vtl.vsm_config = hvdef::HvRegisterVsmPartitionConfig::new()
                .with_zero_memory_on_reset(true)
                .into_bits();
        }
        if scenario.active_vtl > Vtl::VTL0 {
            vtls[0].guest_os_id = scenario.vtl0_guest_os_id;
        }
        Model {
            partition: Partition {
                vtls,
                crash: [0; 6],
                reference_tsc: 0,
                time_ref: 0,
                intercepts: Vec::new(),
                protections: BTreeMap::new(),
                protection_changes: Default::default(),
            },
            vps,
            trace: Trace::default(),
            vtl0: Vtl0Script::default(),
            fault_counts: vec![0; scenario.faults.len()],
            timeout_returned: false,
            lower_starts: Vec::new(),
            scenario,
        }
    }

    /// The scenario as the model runs it (normalized: see [`Scenario`]).
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// Hands over the trace so far and starts an empty one (a glue that streams it out).
    pub fn take_trace(&mut self) -> Trace {
        let mut fresh = Trace::default();
        fresh.enabled = self.trace.enabled;
        fresh.hypercalls_seen = self.trace.hypercalls_seen;
        core::mem::replace(&mut self.trace, fresh)
    }

    /// Hypercalls the model has served since it started, whether the trace kept them or not.
    pub fn hypercalls_seen(&self) -> u64 {
        self.trace.hypercalls_seen
    }

    /// Whether the model records its trace (on by default). A glue whose runner wants no trace
    /// turns it off: the model's answers are the same, only nothing is kept.
    pub fn set_tracing(&mut self, on: bool) {
        self.trace.set_enabled(on);
    }

    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// The lower-VTL script: queue hypercalls, read their results.
    pub fn vtl0(&mut self) -> &mut Vtl0Script {
        &mut self.vtl0
    }

    /// Reads a register as HvCallGetVpRegisters would, minus the call's privilege and arm64
    /// early-register gates (VSM registers still need AccessVsm): tests look at VTL0 state
    /// with it.
    pub fn register(&mut self, vp: u32, vtl: Vtl, name: HvRegisterName) -> Result<u128, HvError> {
        if vp >= self.scenario.vp_count {
            return Err(HvError::INVALID_VP_INDEX);
        }
        self.get_register(vp, vtl, name)
    }

    /// The hypervisor's own copy of a VP register (no TLFS access rule; 0 if never set): what
    /// a glue that runs the VTL for real loads into the CPU. None for a VP that does not exist.
    pub fn vp_state(&self, vp: u32, vtl: Vtl, name: HvRegisterName) -> Option<u128> {
        self.vps.get(vp as usize).map(|v| v.file(vtl).reg(name))
    }

    /// Stores what the CPU holds for a VP register when the VTL leaves it (the glue's side of
    /// [`Model::vp_state`]). False for a VP that does not exist.
    pub fn set_vp_state(&mut self, vp: u32, vtl: Vtl, name: HvRegisterName, value: u128) -> bool {
        match self.vps.get_mut(vp as usize) {
            Some(v) => {
                v.file_mut(vtl).set(name, value);
                true
            }
            None => false,
        }
    }

    pub fn vp_started(&self, vp: u32) -> bool {
        self.vps.get(vp as usize).is_some_and(|v| v.started)
    }

    /// Whether `vtl` has been started on `vp` (the boot VP's enabled VTLs, or a
    /// StartVirtualProcessor of that VTL).
    pub fn vtl_started(&self, vp: u32, vtl: Vtl) -> bool {
        self.vps
            .get(vp as usize)
            .is_some_and(|v| v.started_vtls & (1 << vtl.get()) != 0)
    }

    /// The VPs whose lower VTL was started (HvCallStartVirtualProcessor) while a higher VTL
    /// runs on them, since the last call: its context is in the model's registers for it, and
    /// it runs once the higher VTL returns to it. A glue that parked such a VP's CPU waiting
    /// for its lower VTL wakes it.
    pub fn take_lower_starts(&mut self) -> Vec<u32> {
        core::mem::take(&mut self.lower_starts)
    }

    pub fn active_vtl(&self, vp: u32) -> Option<Vtl> {
        self.vps.get(vp as usize).map(|v| v.active_vtl)
    }

    /// Intercepts the paravisor installed with HvCallInstallIntercept.
    pub fn installed_intercepts(&self) -> &[HvInputInstallIntercept] {
        &self.partition.intercepts
    }

    /// Queues a host message for SINT `sint` of `vp`'s active VTL and delivers it if the slot is
    /// free (the SynIC protocol of TLFS 5).
    pub fn send_message(
        &mut self,
        vp: u32,
        sint: u8,
        message: HvMessage,
        mem: &mut dyn GuestMemory,
    ) -> Effects {
        let mut effects = Effects::default();
        if let Some(v) = self.vps.get(vp as usize) {
            let vtl = v.active_vtl;
            self.queue_message(vp, vtl, sint, message, mem, &mut effects);
        }
        effects
    }

    fn vp(&self, vp: u32) -> &Vp {
        &self.vps[vp as usize]
    }

    fn vp_mut(&mut self, vp: u32) -> &mut Vp {
        &mut self.vps[vp as usize]
    }

    fn valid_vp(&self, vp: u32) -> bool {
        vp < self.scenario.vp_count
    }

    fn nested(&self) -> bool {
        self.scenario.nested
    }
}
