//! Scenarios: everything a test can vary about the hypervisor the paravisor boots on, as plain data.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use hvdef::{
    HvError, HvExtendedCapabilities, HvPartitionPrivilegeMask, HvRegisterName,
    HvRegisterVsmCapabilities, HvStatus, HypercallCode, Vtl, HV_PAGE_SHIFT,
};

use crate::Arch;

/// What the hypervisor looks like to the paravisor.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub arch: Arch,
    /// 1..=64; `Model::new` clamps.
    pub vp_count: u32,
    /// Virtual Secure Mode. Without it the partition has only VTL0, the paravisor runs there and
    /// the AccessVsm privilege is cleared.
    pub vsm: bool,
    /// The VTL the paravisor runs in on the boot VP.
    pub active_vtl: Vtl,
    /// Partition-wide enabled VTLs, bit n = VTL n. VTL0 is always enabled.
    pub enabled_vtls: u16,
    /// Whether the application processors start with `enabled_vtls` too. When false they have
    /// only VTL0 and the paravisor must HvCallEnableVpVtl them before starting them in its VTL.
    pub ap_vtls_enabled: bool,
    /// Runs as a nested hypervisor inside Hyper-V: x64 CPUID 0x40000004 EAX bit 12 (and the
    /// `HV_X64_MSR_NESTED_*` SynIC), arm64 HvRegisterFeaturesInfo bit 4 (TLFS
    /// feature-discovery.md); on both, `l0_calls` route by the control word's nested bit.
    pub nested: bool,
    /// Nested only: calls the L0 hypervisor owns, and the status a call gets when it lacks the
    /// control word's nested bit and so reaches the L1 hypervisor, which does not know it.
    pub l0_calls: BTreeMap<HypercallCode, HvError>,
    pub privileges: HvPartitionPrivilegeMask,
    /// HvExtCallQueryCapabilities' answer; advertised extended calls succeed (see `host_calls`).
    pub extended_capabilities: HvExtendedCapabilities,
    pub vsm_capabilities: HvRegisterVsmCapabilities,
    /// XMM fast hypercall input and output (x64; CPUID 0x40000003 EDX bits 4 and 15).
    pub xmm_fast_hypercalls: bool,
    /// x64: the hypervisor offers VTL2 the VTL register page (NON-TLFS, see `crate::regpage`):
    /// SetVpRegisters of `HvX64RegisterName::RegisterPage` from VTL2 maps it. Without it that
    /// write is INVALID_PARAMETER, what Linux's `mshv_vtl` takes for "not supported". Default:
    /// on for x64 (Hyper-V offers it to a non-isolated VTL2, and OpenHCL uses it), never on
    /// arm64 (the model has no arm64 page; see `crate::regpage`).
    pub register_page: bool,
    /// arm64: X29 (FP) and X30 (LR) are shared between the VTLs like X0-X28. The TLFS lists
    /// them as private (vsm.md "Private State"), the default. OpenHCL's Linux (`hv_vtl_return`,
    /// arch/arm64/hyperv/hv_vtl.c) loads and saves them as lower-VTL context around `hvc #3`, and
    /// OpenVMM's `try_set_reg` (openhcl/hcl/src/ioctl/aarch64.rs) treats them as context
    /// registers, as if they were shared; which is right is open, so a paravisor must be right
    /// under either reading.
    pub arm64_fp_lr_shared: bool,
    /// The "host side": calls the model does not implement itself, with the status each
    /// returns once the control word is validated (rep calls report all reps on success, none on
    /// failure). Entries override advertised extended calls. A code the model does not implement,
    /// not listed here and not an advertised extended call is `INVALID_HYPERCALL_CODE`.
    pub host_calls: BTreeMap<HypercallCode, HvStatus>,
    /// The host's SynIC port map: connection id -> the lowest VTL that may use it. PostMessage
    /// and SignalEvent to an id not in the map are INVALID_CONNECTION_ID, from a VTL below the
    /// port's minimum OPERATION_DENIED (OpenVMM `vmm_core/virt/src/synic.rs`
    /// `SynicPortMap::handle_post_message` / `handle_signal_event`).
    pub ports: BTreeMap<u32, Vtl>,
    /// Device ids the hypervisor knows for HvCallRetargetDeviceInterrupt, each with the lowest
    /// VTL it knows the id for; any other id, or a caller below that VTL, is INVALID_DEVICE_ID
    /// (OpenVMM `vmm_core/virt_whp/src/hypercalls.rs` `retarget_interrupt` keys reflection on
    /// that status). The minimum VTL is the model's way to say "a device VTL2 manages for VTL0"
    /// (OpenHCL's relayed vPCI devices): VTL0's call for it is reflected, VTL2's reaches the
    /// device. No source says how Hyper-V keys its device table.
    pub devices: BTreeMap<u64, Vtl>,
    /// What HvCallInstallIntercept does with `HvInterceptTypeHypercall` (0x08) from VTL2.
    pub hypercall_intercept: HypercallIntercept,
    /// Codes the hypervisor reflects to VTL2 whatever their input, on top of the rules of
    /// [`Model`](super::Model)'s routing. Hyper-V's trigger for several codes OpenHCL's
    /// dispatcher serves is not public (fact sheet §2.2: GetVpIndexFromApicId, SetVpRegisters,
    /// ModifyVtlProtectionMask, RestorePartitionTime); a scenario names them here to model such a
    /// host, and to reach the paravisor's defensive paths. Empty by default.
    pub reflected_codes: BTreeSet<HypercallCode>,
    /// Registers VTL0 holds on every VP when the paravisor first returns to it (its entry
    /// state: x64 Linux takes boot_params in RSI, arm64 Linux the device tree in X0). The
    /// hypervisor keeps them; a paravisor that returns with other values in the shared ones
    /// destroys them. Empty by default.
    pub vtl0_registers: Vec<(HvRegisterName, u128)>,
    /// The guest OS id VTL0's kernel set before the scripted calls (the TLFS requires one
    /// before hypercalls work; on arm64 the model enforces it).
    pub vtl0_guest_os_id: u64,
    pub faults: Vec<InjectedFault>,
    pub limits: Limits,
    /// The status of a memory-based parameter list that crosses a page boundary. Default
    /// INVALID_ALIGNMENT: TLFS hypercall-interface.md §"Common Hypercall Status Codes" lists
    /// "the specified input or output parameter lists spans pages" under it. OpenVMM's
    /// `hv1_hypercall` (support.rs `HypercallParseError::Straddle`) returns
    /// INVALID_HYPERCALL_INPUT instead.
    pub page_crossing_status: HvError,
    /// What happens when a memory-based call's input and output lists overlap.
    pub overlap: Overlap,
    /// The partition's RAM, for the calls that must tell RAM from anything else
    /// (HvCallModifyVtlProtectionMask). Empty (the default): RAM is what guest memory can read,
    /// as the QEMU glue's memory is exactly the machine's RAM.
    pub ram: Vec<core::ops::Range<u64>>,
}

/// A memory-based call whose input and output lists share bytes. The TLFS says the lists "cannot
/// overlap or cross page boundaries" (hypercall-interface.md §"Alignment Requirements") but its
/// status table names only the crossing (§"Common Hypercall Status Codes");
/// OpenVMM's `hv1_hypercall` does not check it (support.rs `dispatch_inner` checks only page
/// straddling and alignment); real Hyper-V ran Linux's `get_vtl`, whose output overlapped its
/// input until a January 2025 fix. So the default is to tolerate it: the model copies the input
/// in before writing any output, as both implementations do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overlap {
    #[default]
    Tolerated,
    /// A stricter host: the call fails with this status before doing anything.
    Status(HvError),
}

/// HvInterceptTypeHypercall from VTL2. What Hyper-V does with it is not public (fact sheet
/// §2.1); OpenVMM's VTL2 emulation refuses it and OpenHCL never installs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HypercallIntercept {
    /// INVALID_PARAMETER, as OpenVMM's `install_intercept` ("unimplemented install intercept
    /// type").
    #[default]
    Rejected,
    /// Accepted; VTL0's PostMessage, SignalEvent and RetargetDeviceInterrupt are then all
    /// reflected to VTL2, known connection or not: the set OpenVMM's root-partition backend
    /// (`vmm_core/virt_mshv`), the one user of this intercept type, dispatches to its VMM.
    Accepted,
}

/// Replaces the outcome of one call of `code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectedFault {
    pub code: HypercallCode,
    /// 1-based: the nth call of `code` that passed validation (counted over all VPs unless `filter` narrows it; a re-issued
    /// rep call after a timeout counts again).
    pub nth: u32,
    pub action: FaultAction,
    /// Which calls of `code` count towards `nth` (default: all of them).
    pub filter: FaultFilter,
}

/// Narrows the calls an [`InjectedFault`] counts: `nth` is then the nth call of its code that
/// passed validation and matches every field that is set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultFilter {
    /// Only calls this VP makes (its VP index).
    pub vp: Option<u32>,
    /// Only HvCallGetVpRegisters / HvCallSetVpRegisters whose input names this register
    /// (memory-based or fast); no other code matches.
    pub register: Option<HvRegisterName>,
}

impl FaultFilter {
    /// Every call of the fault's code.
    pub const ANY: FaultFilter = FaultFilter {
        vp: None,
        register: None,
    };

    pub(crate) fn matches(&self, code: HypercallCode, vp: u32, input: &[u8]) -> bool {
        self.vp.is_none_or(|v| v == vp)
            && self
                .register
                .is_none_or(|name| register_names(code, input).any(|n| n == name))
    }
}

/// The register names of a Get/SetVpRegisters input (header, then names or name/value pairs);
/// none for any other code.
fn register_names(code: HypercallCode, input: &[u8]) -> impl Iterator<Item = HvRegisterName> + '_ {
    const HEADER: usize = 16;
    let stride = match code {
        HypercallCode::GET_VP_REGISTERS => 4,
        HypercallCode::SET_VP_REGISTERS => 32,
        _ => 0,
    };
    input
        .get(HEADER..)
        .filter(|_| stride != 0)
        .unwrap_or(&[])
        .chunks_exact(stride.max(1))
        .map(|e| HvRegisterName(u32::from_le_bytes(e[..4].try_into().unwrap())))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Fail with this status before doing anything (rep calls report no progress).
    Status(HvError),
    /// Complete `reps` more elements (none for a simple call), then report `HV_STATUS_TIMEOUT`
    /// with the absolute reps completed, leaving the IP on the call so the guest re-issues it.
    Timeout { reps: u16 },
    /// Like `Timeout`, but the host hands the TIMEOUT back to the caller with the IP advanced
    /// (the caller sees the status and re-issues from "reps completed" itself): how a host that
    /// bounds its time per call without re-executing behaves, and what callers must survive.
    ReturnedTimeout { reps: u16 },
    /// Complete `reps` more elements, then report SUCCESS with the absolute reps completed and
    /// the IP advanced, although fewer reps than asked are done. The TLFS allows it
    /// (hypercall-interface.md §"Simple and Rep hypercalls": the hypervisor "is not required to
    /// process the entire list" before returning; §"Hypercall Continuation"); Linux
    /// `hv_do_rep_hypercall` re-issues from reps completed; OpenHCL's `invoke_hvcall_ioctl`
    /// asserts it never happens. `reps: 0` breaks the TLFS's "at least one rep" guarantee: a
    /// host that never makes progress. A simple call has no reps to fall short of and runs as
    /// usual.
    ShortSuccess { reps: u16 },
}

/// How a rep call that used up [`Limits::max_reps_per_call`] reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BudgetEnd {
    /// HV_STATUS_TIMEOUT with the IP left on the call, which re-executes from reps completed
    /// (TLFS §"Hypercall Continuation"; OpenVMM `hv1_hypercall` `complete`/`retry`).
    #[default]
    Timeout,
    /// SUCCESS with fewer reps completed than asked, IP advanced: the caller continues from reps
    /// completed itself (see [`FaultAction::ShortSuccess`] for the sources).
    ShortSuccess,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// CPUID 0x40000005 EAX.
    pub max_vps: u32,
    /// CPUID 0x40000005 EBX.
    pub max_lps: u32,
    /// A rep call completes at most this many elements per invocation before it returns (the
    /// TLFS's ~50 µs budget); 0 = no limit.
    pub max_reps_per_call: u16,
    /// How a call that reaches `max_reps_per_call` ends.
    pub budget_end: BudgetEnd,
    /// Width of the GPA space: parameter lists beyond it are `HV_STATUS_INVALID_ALIGNMENT`, a
    /// hypercall page beyond it is #GP.
    pub gpa_bits: u8,
    /// How many times one scripted VTL0 hypercall is re-executed when the paravisor leaves its
    /// IP in place (a timeout it forwards) before the script moves on.
    pub vtl0_retries: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_vps: 64,
            max_lps: 64,
            max_reps_per_call: 0,
            budget_end: BudgetEnd::Timeout,
            gpa_bits: 48,
            vtl0_retries: 8,
        }
    }
}

impl Scenario {
    /// Every privilege the TLFS defines that a paravisor partition can hold, including
    /// EnableExtendedHypercalls and StartVirtualProcessor.
    pub fn full_privileges() -> HvPartitionPrivilegeMask {
        HvPartitionPrivilegeMask::new()
            .with_access_vp_runtime_reg(true)
            .with_access_partition_reference_counter(true)
            .with_access_synic_regs(true)
            .with_access_synthetic_timer_regs(true)
            .with_access_intr_ctrl_regs(true)
            .with_access_hypercall_msrs(true)
            .with_access_vp_index(true)
            .with_access_partition_reference_tsc(true)
            .with_access_guest_idle_reg(true)
            .with_access_frequency_regs(true)
            .with_post_messages(true)
            .with_signal_events(true)
            .with_access_vsm(true)
            .with_access_vp_registers(true)
            .with_enable_extended_hypercalls(true)
            .with_start_virtual_processor(true)
    }

    /// The default scenario for `arch`.
    pub fn for_arch(arch: Arch) -> Self {
        Self {
            arch,
            register_page: arch == Arch::X86_64,
            ..Self::default()
        }
    }

    /// The normalized form the model runs: clamped VP count and GPA width, VSM-less partitions
    /// in VTL0 without AccessVsm, VTL0 and the active VTL always enabled.
    pub(crate) fn normalized(mut self) -> Self {
        // HV_MAXIMUM_PROCESSORS (2048, Microsoft's hvgdk.h; HV_MAX_VP_INDEX 2047): no
        // partition has more VPs.
        self.vp_count = self.vp_count.clamp(1, 2048);
        // The register page is x64's.
        self.register_page &= self.arch == Arch::X86_64;
        if !self.vsm {
            self.privileges.set_access_vsm(false);
            self.enabled_vtls = 1;
            self.active_vtl = Vtl::VTL0;
        }
        self.enabled_vtls |= 1 | (1 << self.active_vtl.get());
        // A GPA space smaller than two pages or as wide as 64 bits makes no sense.
        self.limits.gpa_bits = self.limits.gpa_bits.clamp(HV_PAGE_SHIFT as u8 + 1, 63);
        self
    }
}

impl Default for Scenario {
    /// A VTL2 paravisor on x64 Hyper-V: VSM with VTL0 and VTL2 enabled (no VTL1: a paravisor
    /// partition has no secure kernel unless the guest turns on VBS), 2 VPs, not nested, full
    /// privileges, intercept page available, boot-zeroed-memory and memory-heat-hint extended
    /// calls advertised (what a current host offers a guest).
    fn default() -> Self {
        let mut l0_calls = BTreeMap::new();
        l0_calls.insert(HypercallCode::POST_MESSAGE, HvError::INVALID_CONNECTION_ID);
        l0_calls.insert(HypercallCode::SIGNAL_EVENT, HvError::INVALID_CONNECTION_ID);
        Self {
            arch: Arch::X86_64,
            vp_count: 2,
            vsm: true,
            active_vtl: Vtl::VTL2,
            enabled_vtls: 0b101,
            ap_vtls_enabled: false,
            nested: false,
            l0_calls,
            privileges: Self::full_privileges(),
            extended_capabilities: HvExtendedCapabilities::new()
                .with_get_boot_zeroed_memory(true)
                .with_memory_heat_hint(true),
            vsm_capabilities: HvRegisterVsmCapabilities::new().with_intercept_page_available(true),
            xmm_fast_hypercalls: true,
            register_page: true,
            arm64_fp_lr_shared: false,
            host_calls: BTreeMap::new(),
            // A VTL0 VMBus message connection, and a port only VTL2 may use.
            ports: BTreeMap::from([(1, Vtl::VTL0), (2, Vtl::VTL2)]),
            devices: BTreeMap::new(),
            hypercall_intercept: HypercallIntercept::Rejected,
            reflected_codes: BTreeSet::new(),
            vtl0_registers: Vec::new(),
            // Linux's id as `hv_generate_guest_id` builds it (open source, OS type Linux).
            vtl0_guest_os_id: 0x8100_0000_0000_0000,
            faults: Vec::new(),
            limits: Limits::default(),
            page_crossing_status: HvError::INVALID_ALIGNMENT,
            overlap: Overlap::Tolerated,
            ram: Vec::new(),
        }
    }
}
