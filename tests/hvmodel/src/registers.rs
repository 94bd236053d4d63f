//! VP registers as HvCallGet/SetVpRegisters see them. The x64 synthetic MSRs and the arm64
//! synthetic registers are the same registers, so both paths land here.

use hvdef::aarch64::reg as arm_reg;
use hvdef::x86_64::{reg as x64_reg, HvX64HypercallMsr};
use hvdef::{
    HvError, HvPageRegister, HvRegisterName, HvRegisterVsmCodePageOffsets,
    HvRegisterVsmPartitionConfig, HvRegisterVsmPartitionStatus, HvRegisterVsmVpStatus, HvResult,
    HvSynicSint, Vtl, HV_PAGE_SHIFT, HV_PAGE_SIZE, HV_SYNIC_SINT_COUNT, HV_SYNIC_VERSION_1,
};

use super::features::words_to_u128;
use super::partition::VTL_COUNT;
use super::x86_64::{hypercall_page_content, hypercall_page_sites};
use super::{Arch, Effects, GuestMemory, HypercallPageChange, Model};

/// The registers the model knows, by behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reg {
    GuestOsId,
    /// x64 only.
    Hypercall,
    Crash(usize),
    ReferenceTsc,
    Info(Info),
    VpIndex,
    TimeRefCount,
    VpRuntime,
    AssistPage,
    /// x64 VTL2's register page (`crate::regpage`).
    RegisterPage,
    Scontrol,
    Sversion,
    Siefp,
    Simp,
    Eom,
    Sint(usize),
    VsmCodePageOffsets,
    VsmVpStatus,
    VsmPartitionStatus,
    VsmCapabilities,
    VsmPartitionConfig,
    VsmVina,
    VsmSecureConfig(usize),
    /// HvRegisterPendingEvent0/1: the event the VP takes when it next runs in that VTL. Plain
    /// per-VTL storage, as written (the layout is NON-TLFS, so the model checks none of it); a
    /// lower VTL's completed call takes it (see `Vtl0Result::pending_event`).
    PendingEvent,
    /// RAX.., X0.., RIP/PC, control and segment registers: plain storage.
    Architectural,
}

/// The feature-information registers, each "the same as" a Hyper-V CPUID leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Info {
    Version,
    Privileges,
    Features,
    Limits,
    Hardware,
    NestedVirt,
}

impl Reg {
    fn classify(arch: Arch, name: HvRegisterName) -> Option<Self> {
        type N = HvRegisterName;
        let offset = |first: N, count: usize| {
            let i = name.0.wrapping_sub(first.0) as usize;
            (i < count).then_some(i)
        };
        if let Some(i) = offset(N::GUEST_CRASH_P0, 6) {
            return Some(Self::Crash(i));
        }
        if let Some(i) = offset(N::SINT0, HV_SYNIC_SINT_COUNT) {
            return Some(Self::Sint(i));
        }
        if let Some(i) = offset(N::VSM_VP_SECURE_CONFIG_VTL0, VTL_COUNT - 1) {
            return Some(Self::VsmSecureConfig(i));
        }
        Some(match name {
            N::GUEST_OS_ID => Self::GuestOsId,
            x64_reg::HYPERCALL if arch == Arch::X86_64 => Self::Hypercall,
            N::REFERENCE_TSC => Self::ReferenceTsc,
            N::HYPERVISOR_VERSION => Self::Info(Info::Version),
            N::PRIVILEGES_AND_FEATURES_INFO => Self::Info(Info::Privileges),
            N::FEATURES_INFO => Self::Info(Info::Features),
            N::IMPLEMENTATION_LIMITS_INFO => Self::Info(Info::Limits),
            N::HARDWARE_FEATURES_INFO => Self::Info(Info::Hardware),
            N::NESTED_VIRT_FEATURES_INFO => Self::Info(Info::NestedVirt),
            N::VP_INDEX => Self::VpIndex,
            N::TIME_REF_COUNT => Self::TimeRefCount,
            N::VP_RUNTIME => Self::VpRuntime,
            N::VP_ASSIST_PAGE => Self::AssistPage,
            x64_reg::REGISTER_PAGE if arch == Arch::X86_64 => Self::RegisterPage,
            N::SCONTROL => Self::Scontrol,
            N::SVERSION => Self::Sversion,
            N::SIEFP => Self::Siefp,
            N::SIMP => Self::Simp,
            N::EOM => Self::Eom,
            // x64 only: arm64 switches VTLs with `hvc #2`/`hvc #3`.
            N::VSM_CODE_PAGE_OFFSETS if arch == Arch::X86_64 => Self::VsmCodePageOffsets,
            N::VSM_VP_STATUS => Self::VsmVpStatus,
            N::VSM_PARTITION_STATUS => Self::VsmPartitionStatus,
            N::VSM_CAPABILITIES => Self::VsmCapabilities,
            N::VSM_PARTITION_CONFIG => Self::VsmPartitionConfig,
            N::VSM_VINA => Self::VsmVina,
            N::PENDING_EVENT0 | N::PENDING_EVENT1 => Self::PendingEvent,
            _ => {
                let known = match arch {
                    Arch::X86_64 => x64_reg::name(name).is_some(),
                    Arch::Aarch64 => arm_reg::name(name).is_some(),
                };
                return known.then_some(Self::Architectural);
            }
        })
    }

    fn is_vsm(self) -> bool {
        matches!(
            self,
            Self::VsmCodePageOffsets
                | Self::VsmVpStatus
                | Self::VsmPartitionStatus
                | Self::VsmCapabilities
                | Self::VsmPartitionConfig
                | Self::VsmVina
                | Self::VsmSecureConfig(_)
        )
    }
}

/// Whether an architectural register is 128 bits wide: x64's XMM, segment and table registers
/// (every arm64 register the model knows is 64 bits).
fn wide(arch: Arch, name: HvRegisterName) -> bool {
    let n = name.0;
    arch == Arch::X86_64
        && ((x64_reg::XMM0.0..=x64_reg::XMM5.0).contains(&n)
            || (x64_reg::ES.0..=x64_reg::TR.0).contains(&n)
            || (x64_reg::IDTR.0..=x64_reg::GDTR.0).contains(&n))
}

/// Registers arm64 may read before the guest OS id is set (HvCallGetVpRegisters "Early Register
/// List"). HvArm64RegisterSyntheticVbarEl1/EsrEl1 are on it too, but no source gives their
/// numbers, so the model does not know them at all.
pub(crate) fn early_readable(name: HvRegisterName) -> bool {
    type N = HvRegisterName;
    matches!(
        name,
        N::GUEST_OS_ID
            | N::HYPERVISOR_VERSION
            | N::PRIVILEGES_AND_FEATURES_INFO
            | N::FEATURES_INFO
            | N::IMPLEMENTATION_LIMITS_INFO
            | N::HARDWARE_FEATURES_INFO
            | N::TIME_REF_COUNT
    ) || early_writable(name)
}

/// Registers arm64 may set before the guest OS id is set.
pub(crate) fn early_writable(name: HvRegisterName) -> bool {
    name == HvRegisterName::GUEST_OS_ID
        || (HvRegisterName::GUEST_CRASH_P0.0..=HvRegisterName::GUEST_CRASH_CTL.0).contains(&name.0)
}

/// TimeRefCount advances this much (1 ms) per read. Model's choice: the model has no clock, and
/// a counter that moves on every read lets a guest see time pass.
const TIME_REF_STEP: u64 = 10_000;

impl Model {
    pub(crate) fn get_register(
        &mut self,
        vp: u32,
        vtl: Vtl,
        name: HvRegisterName,
    ) -> HvResult<u128> {
        let reg = self.classify(name)?;
        let v = vtl.get() as usize;
        let file = self.vps[vp as usize].file(vtl);
        let value: u64 = match reg {
            Reg::Architectural | Reg::PendingEvent => return Ok(file.reg(name)),
            Reg::Info(info) => return Ok(self.info_value(info)),
            Reg::GuestOsId => self.partition.vtls[v].guest_os_id,
            Reg::Hypercall => self.partition.vtls[v].hypercall,
            Reg::Crash(i) => self.partition.crash[i],
            Reg::ReferenceTsc => self.partition.reference_tsc,
            Reg::VpIndex => vp.into(),
            // TimeRefCount is "a per-partition reference time counter" (TLFS timers.md).
            // VpRuntime sharing its counter is the model's choice: a VP that never halts runs
            // all the time.
            Reg::TimeRefCount | Reg::VpRuntime => {
                self.partition.time_ref = self.partition.time_ref.wrapping_add(TIME_REF_STEP);
                self.partition.time_ref
            }
            Reg::AssistPage => file.assist_page,
            Reg::RegisterPage => file.register_page,
            Reg::Scontrol => file.synic.scontrol,
            Reg::Sversion => HV_SYNIC_VERSION_1.into(),
            Reg::Siefp => file.synic.siefp,
            Reg::Simp => file.synic.simp,
            // TLFS inter-partition-communication.md §"EOM Register": "Reads from the EOM
            // register always returns zeros"; OpenVMM hv1_emulator synic.rs `eom`.
            Reg::Eom => 0,
            Reg::Sint(i) => file.synic.sint[i],
            Reg::VsmCodePageOffsets => HvRegisterVsmCodePageOffsets::new()
                .with_vtl_call_offset(super::VTL_CALL_OFFSET)
                .with_vtl_return_offset(super::VTL_RETURN_OFFSET)
                .into_bits(),
            Reg::VsmVpStatus => {
                let vp = self.vp(vp);
                HvRegisterVsmVpStatus::new()
                    .with_active_vtl(vp.active_vtl.get())
                    .with_enabled_vtl_set(vp.enabled_vtls)
                    .into_bits()
            }
            // MaximumVtl is "the maximum VTL allowed" (TLFS vsm.md §"HvRegisterVsmPartitionStatus";
            // OpenHCL reports 1 before guest VSM is enabled). The model's partitions always have
            // their highest allowed VTL enabled (the VTL the firmware runs in), so it is the
            // enabled set's highest: model's choice, there being no separate "allowed" setting.
            Reg::VsmPartitionStatus => {
                let set = self.scenario.enabled_vtls;
                HvRegisterVsmPartitionStatus::new()
                    .with_enabled_vtl_set(set)
                    .with_maximum_vtl((15 - set.leading_zeros()) as u8)
                    .into_bits()
            }
            Reg::VsmCapabilities => self.scenario.vsm_capabilities.into_bits(),
            Reg::VsmPartitionConfig if vtl == Vtl::VTL0 => return Err(HvError::INVALID_PARAMETER),
            Reg::VsmPartitionConfig => self.partition.vtls[v].vsm_config,
            Reg::VsmVina => file.vina,
            // A VTL has a secure config only for VTLs below it: ACCESS_DENIED otherwise (OpenHCL
            // hardware_cvm `get_vsm_vp_secure_config_vtl`; OpenVMM virt_whp
            // `VsmVpSecureConfigVtl0` outside VTL2).
            Reg::VsmSecureConfig(n) if n >= v => return Err(HvError::ACCESS_DENIED),
            Reg::VsmSecureConfig(n) => file.secure_config[n],
        };
        Ok(value.into())
    }

    /// Writes a register. Read-only registers are `INVALID_PARAMETER` (TLFS HvCallSetVpRegisters:
    /// the call "cannot be used to modify the value of a read-only register", no status; OpenVMM
    /// hv1_emulator synic.rs `write_reg` turns the SVERSION write's `InvalidAccess` into
    /// InvalidParameter), invalid values `INVALID_PARAMETER`. The MSR path turns any error into
    /// #GP (TLFS: writing SVERSION is #GP; OpenVMM hv.rs `msr_write`: VP_INDEX, TIME_REF_COUNT).
    ///
    /// Architectural registers are stored as written, checked only for their width: a 64-bit
    /// register with a non-zero high quadword is INVALID_REGISTER_VALUE (TLFS
    /// HvCallSetVpRegisters: the hypervisor validates bits beyond the register's size; OpenHCL
    /// hardware_cvm `validate_set_vp_register_value` answers INVALID_REGISTER_VALUE); x64's
    /// segment (`HV_X64_SEGMENT_REGISTER`), table (`HV_X64_TABLE_REGISTER`) and XMM registers
    /// are 128 bits wide. NOT what the TLFS says beyond that (it also validates reserved and
    /// fixed bits): the model has no per-register reserved-bit tables yet.
    pub(crate) fn set_register(
        &mut self,
        vp: u32,
        vtl: Vtl,
        name: HvRegisterName,
        value: u128,
        mem: &mut dyn GuestMemory,
        effects: &mut Effects,
    ) -> HvResult<()> {
        let reg = self.classify(name)?;
        let v = vtl.get() as usize;
        // Synthetic registers are 64 bits wide; the TLFS zero-extends them to 128.
        let value64 = value as u64;
        let synic = &mut self.vps[vp as usize].vtls[v].synic;
        match reg {
            Reg::Architectural if value >> 64 != 0 && !wide(self.scenario.arch, name) => {
                return Err(HvError::INVALID_REGISTER_VALUE)
            }
            Reg::Architectural | Reg::PendingEvent => {
                self.vp_mut(vp).file_mut(vtl).set(name, value)
            }
            Reg::GuestOsId => {
                self.partition.vtls[v].guest_os_id = value64;
                if value64 == 0 {
                    // TLFS: zeroing the guest OS id disables the hypercall page.
                    let old = HvX64HypercallMsr::from_bits(self.partition.vtls[v].hypercall);
                    let new = old.with_enable(false);
                    self.partition.vtls[v].hypercall = new.into_bits();
                    hypercall_page_change(old, new, effects);
                }
            }
            Reg::Hypercall => self.write_hypercall_msr(vtl, value64, mem, effects)?,
            Reg::Crash(i) => self.partition.crash[i] = value64,
            Reg::ReferenceTsc => self.partition.reference_tsc = value64,
            Reg::AssistPage => self.vp_mut(vp).file_mut(vtl).assist_page = value64,
            // Offered to VTL2 only, on a host that has it (`crate::regpage`); Linux takes
            // INVALID_PARAMETER for "not supported".
            Reg::RegisterPage if !self.scenario.register_page || vtl != Vtl::VTL2 => {
                return Err(HvError::INVALID_PARAMETER)
            }
            Reg::RegisterPage => {
                let old =
                    core::mem::replace(&mut self.vp_mut(vp).file_mut(vtl).register_page, value64);
                if self.overlay_in_memory(vtl, value64) {
                    overlay_enabled(old, value64, mem);
                }
            }
            Reg::Scontrol => {
                synic.scontrol = value64;
                self.scan_sints(vp, vtl, mem, effects);
            }
            Reg::Siefp => {
                let old = core::mem::replace(&mut synic.siefp, value64);
                if self.overlay_in_memory(vtl, value64) {
                    overlay_enabled(old, value64, mem);
                }
            }
            Reg::Simp => {
                let old = core::mem::replace(&mut synic.simp, value64);
                if self.overlay_in_memory(vtl, value64) {
                    overlay_enabled(old, value64, mem);
                }
                self.scan_sints(vp, vtl, mem, effects);
            }
            Reg::Eom => self.scan_sints(vp, vtl, mem, effects),
            Reg::Sint(i) => synic.sint[i] = checked_sint(value64)?,
            Reg::VsmPartitionConfig => {
                let old = self.partition.vtls[v].vsm_config;
                if vtl == Vtl::VTL0 || !self.vsm_config_write_ok(old, value64) {
                    return Err(HvError::INVALID_PARAMETER);
                }
                self.partition.vtls[v].vsm_config = value64;
            }
            Reg::VsmVina => self.vp_mut(vp).file_mut(vtl).vina = value64,
            // OpenHCL hardware_cvm `set_vsm_vp_secure_config_vtl`.
            Reg::VsmSecureConfig(n) if n >= v => return Err(HvError::ACCESS_DENIED),
            Reg::VsmSecureConfig(n) => self.vp_mut(vp).file_mut(vtl).secure_config[n] = value64,
            Reg::Info(_)
            | Reg::VpIndex
            | Reg::TimeRefCount
            | Reg::VpRuntime
            | Reg::Sversion
            | Reg::VsmCodePageOffsets
            | Reg::VsmVpStatus
            | Reg::VsmPartitionStatus
            | Reg::VsmCapabilities => return Err(HvError::INVALID_PARAMETER),
        }
        Ok(())
    }

    /// HvRegisterVsmPartitionConfig's write rules (TLFS vsm.md "Partition Configuration", "VTL
    /// Enablement"): EnableVtlProtection is write-once, and DefaultVtlProtectionMask cannot
    /// change once protection is on (Linux and OpenHCL each write the same protection fields
    /// twice, which these rules allow); bits 12-15 only when VsmCapabilities offers them
    /// (12 intercept_page, 14 intercept_not_present, 15 intercept_system_reset; 13
    /// intercept_restore_partition_time, an x64 CPUID enlightenment, on x64) — Linux and OpenHCL
    /// set each only when offered; bits 16-63 are reserved. The TLFS names no status for a
    /// broken rule; INVALID_PARAMETER is its status for a bad register value.
    fn vsm_config_write_ok(&self, old: u64, new: u64) -> bool {
        let (old, new) = (
            HvRegisterVsmPartitionConfig::from_bits(old),
            HvRegisterVsmPartitionConfig::from_bits(new),
        );
        let caps = self.scenario.vsm_capabilities;
        let offered = [
            (new.intercept_page(), caps.intercept_page_available()),
            (
                new.intercept_restore_partition_time(),
                self.scenario.arch == Arch::X86_64,
            ),
            (
                new.intercept_not_present(),
                caps.intercept_not_present_available(),
            ),
            (
                new.intercept_system_reset(),
                caps.intercept_system_reset_available(),
            ),
        ];
        let reserved = new.into_bits() >> 16 != 0;
        let protection_kept = !old.enable_vtl_protection()
            || (new.enable_vtl_protection()
                && new.default_vtl_protection_mask() == old.default_vtl_protection_mask());
        !reserved && protection_kept && offered.iter().all(|&(set, ok)| !set || ok)
    }

    /// Unknown names are `INVALID_PARAMETER` (TLFS v6.0b PDF, Get/SetVpRegisters; OpenVMM
    /// virt_whp `get_vp_register`/`set_vp_register`: "unknown register name"); VSM
    /// registers without AccessVsm (always so without VSM) are `ACCESS_DENIED` (OpenHCL
    /// hardware_cvm `validate_register_access`: VsmPartitionConfig/Status, VsmVpStatus,
    /// VsmCapabilities without the AccessVsm privilege).
    fn classify(&self, name: HvRegisterName) -> HvResult<Reg> {
        let reg = Reg::classify(self.scenario.arch, name).ok_or(HvError::INVALID_PARAMETER)?;
        if reg.is_vsm() && !self.scenario.privileges.access_vsm() {
            return Err(HvError::ACCESS_DENIED);
        }
        Ok(reg)
    }

    fn info_value(&self, info: Info) -> u128 {
        let words = match info {
            Info::Version => self.version_words(),
            Info::Privileges => self.privilege_words(),
            // Not the CPUID words on arm64: its bit layout differs.
            Info::Features => return self.features_info(),
            Info::Limits => self.limit_words(),
            // TLFS: "Equivalent to x64 CPUID leaf 0x40000006" (feature-discovery.md) and "Matches
            // CPUID 0x4000000A" (hv_register_name.md); the model's CPUID has both as zero.
            Info::Hardware | Info::NestedVirt => [0; 4],
        };
        words_to_u128(words)
    }

    /// `HV_X64_MSR_HYPERCALL`: Enable only sticks once the guest OS id is non-zero and the page
    /// must lie in the GPA space (TLFS hypercall-interface.md §"Establishing the Hypercall
    /// Interface"). A locked MSR is immutable until reset (TLFS), and a write to it fails, as
    /// does one with a non-zero RsvdP bit 11:2 (OpenVMM hv1_emulator hv.rs
    /// `msr_write_hypercall_page`: `InvalidAccess`, #GP).
    fn write_hypercall_msr(
        &mut self,
        vtl: Vtl,
        value: u64,
        mem: &mut dyn GuestMemory,
        effects: &mut Effects,
    ) -> HvResult<()> {
        let pv = &self.partition.vtls[vtl.get() as usize];
        let old = HvX64HypercallMsr::from_bits(pv.hypercall);
        if old.locked() {
            return Err(HvError::ACCESS_DENIED);
        }
        let mut new = HvX64HypercallMsr::from_bits(value);
        if new.reserved() != 0 {
            return Err(HvError::INVALID_PARAMETER);
        }
        if pv.guest_os_id == 0 {
            new.set_enable(false);
        }
        let gpa_pages = 1u64 << (self.scenario.limits.gpa_bits - HV_PAGE_SHIFT as u8);
        if new.enable() && new.gpn() >= gpa_pages {
            return Err(HvError::INVALID_PARAMETER);
        }
        // Only a VTL whose code runs executes its hypercall page here: the one the guest boots
        // in, and a live lower VTL (real code, see `Vtl0Script::set_live`); a scripted lower
        // VTL has none. An overlay over a page VTL2 protected is the lower VTL's view only:
        // neither is put in guest memory, nor breakpointed.
        let runs_code = vtl == self.scenario.active_vtl || self.vtl0.live();
        let in_memory = runs_code && self.overlay_in_memory(vtl, new.gpn() << HV_PAGE_SHIFT | 1);
        if in_memory && new.enable() && (!old.enable() || old.gpn() != new.gpn()) {
            mem.write(new.gpn() << HV_PAGE_SHIFT, &hypercall_page_content())
                .map_err(|_| HvError::INVALID_PARAMETER)?;
        }
        self.partition.vtls[vtl.get() as usize].hypercall = new.into_bits();
        if in_memory {
            hypercall_page_change(old, new, effects);
        }
        Ok(())
    }
}

fn hypercall_page_change(old: HvX64HypercallMsr, new: HvX64HypercallMsr, effects: &mut Effects) {
    let gpa = |m: HvX64HypercallMsr| m.gpn() << HV_PAGE_SHIFT;
    if new.enable() && (!old.enable() || old.gpn() != new.gpn()) {
        effects.hypercall_page = Some(HypercallPageChange::Enabled {
            gpa: gpa(new),
            vmcall_sites: hypercall_page_sites(),
        });
    } else if old.enable() && !new.enable() {
        effects.hypercall_page = Some(HypercallPageChange::Disabled { gpa: gpa(old) });
    }
}

impl Model {
    /// Whether `vtl`'s overlay page (an `HvPageRegister` value) lives in guest memory. An
    /// overlay is mapped over the GPA in that VTL's view only (TLFS vsm.md: overlay pages are
    /// per VTL), so on Hyper-V a lower VTL's overlay never changes the memory under it, which a
    /// higher VTL may own. The mock keeps no per-VTL views: a lower VTL's overlay over a page
    /// VTL2 protected from it is kept nowhere (its content is neither written nor delivered
    /// into), rather than written over VTL2's memory.
    pub(crate) fn overlay_in_memory(&self, vtl: Vtl, page_register: u64) -> bool {
        let gpa = HvPageRegister::from_bits(page_register).gpa_page_number() << HV_PAGE_SHIFT;
        self.denied(vtl, gpa, HV_PAGE_SIZE, hvdef::HvInterceptAccessType::WRITE)
            .is_none()
    }
}

/// The SIM and SIEF pages are overlays that start out zeroed (TLFS inter-partition-
/// communication.md: "Upon virtual processor creation and reset, the SIM page is cleared to
/// zero", likewise the SIEF page): an empty message slot reads as HvMessageTypeNone whatever the
/// RAM underneath held. Zeroing on every enable or move, rather than carrying the overlay's
/// contents along as OpenVMM hv1_emulator pages.rs `OverlayPage::remap` does, is the model's
/// choice: it keeps no copy of an overlay apart from guest RAM.
fn overlay_enabled(old: u64, new: u64, mem: &mut dyn GuestMemory) {
    let (old, new) = (
        HvPageRegister::from_bits(old),
        HvPageRegister::from_bits(new),
    );
    if new.enable() && (!old.enable() || old.gpa_page_number() != new.gpa_page_number()) {
        // An unbacked page stays unbacked; delivery into it fails later and messages stay queued.
        let _ = mem.write(
            new.gpa_page_number() << HV_PAGE_SHIFT,
            &[0; HV_PAGE_SIZE as usize],
        );
    }
}

/// TLFS: a SINT vector must be 16..=255, otherwise #GP. The TLFS makes no exception for masked
/// SINTs (KVM does), so neither does the model: it is the stricter host.
fn checked_sint(value: u64) -> HvResult<u64> {
    if HvSynicSint::from_bits(value).vector() < 16 {
        return Err(HvError::INVALID_PARAMETER);
    }
    Ok(value)
}

/// Reads one of the L0 SynIC's registers (the `HV_X64_MSR_NESTED_*` MSRs of a nested host).
pub(crate) fn nested_synic_read(
    synic: &super::partition::Synic,
    vp: u32,
    name: HvRegisterName,
) -> HvResult<u64> {
    match Reg::classify(Arch::X86_64, name) {
        Some(Reg::VpIndex) => Ok(vp.into()),
        Some(Reg::Scontrol) => Ok(synic.scontrol),
        Some(Reg::Sversion) => Ok(HV_SYNIC_VERSION_1.into()),
        Some(Reg::Siefp) => Ok(synic.siefp),
        Some(Reg::Simp) => Ok(synic.simp),
        Some(Reg::Eom) => Ok(0),
        Some(Reg::Sint(i)) => Ok(synic.sint[i]),
        _ => Err(HvError::INVALID_PARAMETER),
    }
}

/// Writes one of the L0 SynIC's registers. The model delivers nothing through it, so this is
/// storage with the same checks as the model's own SynIC.
pub(crate) fn nested_synic_write(
    synic: &mut super::partition::Synic,
    name: HvRegisterName,
    value: u64,
) -> HvResult<()> {
    match Reg::classify(Arch::X86_64, name) {
        Some(Reg::Scontrol) => synic.scontrol = value,
        Some(Reg::Siefp) => synic.siefp = value,
        Some(Reg::Simp) => synic.simp = value,
        Some(Reg::Eom) => {}
        Some(Reg::Sint(i)) => synic.sint[i] = checked_sint(value)?,
        Some(Reg::VpIndex | Reg::Sversion) => return Err(HvError::ACCESS_DENIED),
        _ => return Err(HvError::INVALID_PARAMETER),
    }
    Ok(())
}
