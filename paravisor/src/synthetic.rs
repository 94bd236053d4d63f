//! This VP's hypervisor interface, composed from the arch layer's ISA facts and, where the ISA
//! reaches a register only by hypercall (arm64's synthetic registers), the shared hypercall path
//! through per-CPU state: detection, enabling hypercalls, the nested indicator and privileges,
//! synthetic register writes, and the set-up of the VTL switch and the register page.
#![expect(
    unsafe_code,
    reason = "builds the VTL switch and the register page from this VP's own pages (their constructors' contracts)"
)]

use crate::hypercall::{self, Result, VpTarget};
use crate::{arch, detect, percpu};
use hvdef::{HvError, HvPartitionPrivilegeMask, HvRegisterVsmCodePageOffsets, SyntheticRegister};
use spin::Once;

/// Finds Hyper-V: x86 through its CPUID leaves, arm64 through the SMCCC vendor-hypervisor UID.
pub fn detect() -> core::result::Result<(), detect::NoHyperV> {
    #[cfg(target_arch = "x86_64")]
    return detect::detect_x86(&mut |leaf, subleaf| arch::cpuid(leaf, subleaf)).map(|_| ());
    #[cfg(target_arch = "aarch64")]
    detect::check_uid(arch::vendor_hyp_uid())
}

/// Writes a synthetic register: on x86 every one is an MSR, on arm64 a VP register.
pub fn write(reg: SyntheticRegister, value: u64) -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    {
        arch::wrmsr(reg.msr().ok_or(HvError::INVALID_PARAMETER)?, value);
        Ok(())
    }
    #[cfg(target_arch = "aarch64")]
    {
        let name = reg.vp_register().ok_or(HvError::INVALID_PARAMETER)?;
        percpu::hypercall().set_vp_register(VpTarget::SELF, name, value.into())
    }
}

/// Sets the guest OS id, then enables what else the ISA needs for hypercalls (x86: the
/// hypercall page); the TLFS requires that order. On arm64 the id goes through the shared
/// register path in a fast call, the only form the TLFS accepts before the id is set.
pub fn enable_hypercalls(guest_os_id: u64) -> core::result::Result<(), &'static str> {
    write(SyntheticRegister::GuestOsId, guest_os_id)
        .map_err(|_| "the hypervisor refused the guest OS id (SetVpRegisters GuestOsId)")?;
    arch::enable_hypercall_page()
}

/// Whether the host runs us nested (`arch::NESTED_INDICATOR`), read once: x86 CPUID 0x40000004
/// EAX bit 12; arm64 bit 4 of HvRegisterFeaturesInfo through the shared register path. The
/// register is on the TLFS's early list (HvCallGetVpRegisters), but the boot VP reads it after
/// setting the guest OS id, as Linux's `hyperv_init` does.
pub fn nested_host() -> Result<bool> {
    #[cfg(target_arch = "x86_64")]
    return Ok(detect::nested_x86(&mut |leaf, subleaf| {
        arch::cpuid(leaf, subleaf)
    }));
    #[cfg(target_arch = "aarch64")]
    {
        let value = percpu::hypercall()
            .get_vp_register(VpTarget::SELF, hvdef::HvRegisterName::FEATURES_INFO)?;
        Ok(detect::nested_arm64(value))
    }
}

/// The partition's privileges: x86 CPUID 0x40000003 EAX/EBX, arm64
/// HvRegisterPrivilegesAndFeaturesInfo.
pub fn privileges() -> Result<HvPartitionPrivilegeMask> {
    #[cfg(target_arch = "x86_64")]
    {
        let [low, high, _, _] = arch::cpuid(hvdef::x86_64::cpuid::HV_CPUID_FEATURES, 0);
        Ok(HvPartitionPrivilegeMask::from_halves(low, high))
    }
    #[cfg(target_arch = "aarch64")]
    {
        let value = percpu::hypercall().get_vp_register(
            VpTarget::SELF,
            hvdef::HvRegisterName::PRIVILEGES_AND_FEATURES_INFO,
        )?;
        Ok(HvPartitionPrivilegeMask::from_bits(value.as_u64()))
    }
}

/// Where the hypercall page's VTL-return code is (x64), read once by the boot VP.
static CODE_PAGE_OFFSETS: Once<HvRegisterVsmCodePageOffsets> = Once::new();

/// Reads what the VTL switch needs of the hypervisor (HvRegisterVsmCodePageOffsets where the
/// switch is in the hypercall page); once, before any VP's first return to VTL0.
pub fn init_vtl_switch() -> Result<()> {
    let offsets = if arch::VTL_RETURN_IN_HYPERCALL_PAGE {
        let value = percpu::hypercall()
            .get_vp_register(VpTarget::SELF, hvdef::HvRegisterName::VSM_CODE_PAGE_OFFSETS)?;
        HvRegisterVsmCodePageOffsets::from_bits(value.as_u64())
    } else {
        HvRegisterVsmCodePageOffsets::new()
    };
    CODE_PAGE_OFFSETS.call_once(|| offsets);
    Ok(())
}

/// This VP's VTL switch, for its run loop.
pub fn vtl_switch(assist: &percpu::AssistPage) -> arch::VtlSwitch {
    let offsets = *CODE_PAGE_OFFSETS.get().expect("init_vtl_switch ran");
    // SAFETY: `assist` is this VP's assist page (percpu: 'static, identity-mapped, enabled in
    // the VP's bring-up), and the switch is built and used by this VP's run loop only.
    unsafe { arch::VtlSwitch::new(assist.as_ptr(), offsets) }
}

/// Maps this VP's VTL register page (x64): SetVpRegisters of `HvX64RegisterName::RegisterPage`
/// on itself. `Err` with the status of a host that has none (INVALID_PARAMETER: a hypervisor
/// that predates it; ACCESS_DENIED: not offered; always on arm64, which has none): the IP then
/// moves by SetVpRegisters.
pub fn map_register_page() -> core::result::Result<arch::RegisterPage, hypercall::Error> {
    #[cfg(target_arch = "x86_64")]
    {
        let frame = percpu::register_page_frame();
        let (name, value) = arch::RegisterPage::mapping(frame as u64);
        percpu::hypercall().set_vp_register(VpTarget::SELF, name, value)?;
        // SAFETY: the frame is this VP's own (percpu: 'static, identity-mapped), the hypervisor
        // just took it as this VP's register page, and the run loop keeps it on this VP.
        Ok(unsafe { arch::RegisterPage::mapped(frame.cast()) })
    }
    #[cfg(target_arch = "aarch64")]
    Err(hypercall::Error::Hv(HvError::INVALID_PARAMETER))
}
