//! Get/SetVpRegisters: the header rules, target VTLs, read-only and unknown registers, VSM
//! registers with and without VSM.

use hvdef::x86_64::cpuid;
use hvdef::{
    HvInputVtl, HvPartitionPrivilegeMask, HvRegisterName, HvRegisterVsmCodePageOffsets,
    HvRegisterVsmPartitionConfig, HvRegisterVsmVpStatus, HvStatus, HypercallCode, Vtl,
    HV_VP_INDEX_SELF,
};

use super::*;
use crate::{VTL_CALL_OFFSET, VTL_RETURN_OFFSET};

#[test]
fn vsm_vp_status_reports_active_vtl_and_enabled_set() {
    let mut hv = Hv::x64();
    let status = HvRegisterVsmVpStatus::from_bits(hv.get_reg(HvRegisterName::VSM_VP_STATUS) as u64);
    assert_eq!(status.active_vtl(), 2);
    assert_eq!(status.enabled_vtl_set(), 0b101);
    let mut hv = Hv::new(Scenario {
        enabled_vtls: 0b111,
        active_vtl: Vtl::VTL1,
        ..Scenario::default()
    });
    let status = HvRegisterVsmVpStatus::from_bits(hv.get_reg(HvRegisterName::VSM_VP_STATUS) as u64);
    assert_eq!((status.active_vtl(), status.enabled_vtl_set()), (1, 0b111));
}

#[test]
fn unknown_register_is_invalid_parameter_at_its_element() {
    let mut hv = Hv::x64();
    hv.mem.write(OUT, &[0xAA; 32]).unwrap();
    let names = [HvRegisterName::SVERSION, HvRegisterName(0x0012_3456)];
    let (out, values) = hv.get_regs(HvInputVtl::CURRENT, &names);
    assert_eq!(
        (out.status(), out.reps_completed()),
        (HvStatus::INVALID_PARAMETER, 1)
    );
    assert_eq!(values[0], 1, "the first element was completed");
    let out = hv.set_regs(HvInputVtl::CURRENT, &[(HvRegisterName(0x0012_3456), 1)]);
    assert_eq!(
        (out.status(), out.reps_completed()),
        (HvStatus::INVALID_PARAMETER, 0)
    );
}

/// Read-only registers are INVALID_PARAMETER through SetVpRegisters (OpenVMM hv1_emulator
/// synic.rs `write_reg`: SVERSION's `InvalidAccess` becomes InvalidParameter).
#[test]
fn setting_read_only_registers_is_invalid_parameter() {
    let mut hv = Hv::x64();
    for name in [
        HvRegisterName::VSM_VP_STATUS,
        HvRegisterName::VP_INDEX,
        HvRegisterName::SVERSION,
        HvRegisterName::VSM_CAPABILITIES,
        HvRegisterName::VSM_CODE_PAGE_OFFSETS,
        HvRegisterName::HYPERVISOR_VERSION,
    ] {
        let out = hv.set_regs(HvInputVtl::CURRENT, &[(name, 7)]);
        assert_eq!(out.status(), HvStatus::INVALID_PARAMETER, "{name:?}");
    }
    assert_eq!(hv.get_reg(HvRegisterName::VP_INDEX), 0);
}

#[test]
fn vsm_absent_denies_vsm_registers_and_keeps_vendor_leaves() {
    let mut without = Hv::new(Scenario {
        vsm: false,
        ..Scenario::default()
    });
    let (out, _) = without.get_regs(HvInputVtl::CURRENT, &[HvRegisterName::VSM_VP_STATUS]);
    assert_eq!(out.status(), HvStatus::ACCESS_DENIED);
    let (out, _) = without.get_regs(HvInputVtl::CURRENT, &[HvRegisterName::VSM_CAPABILITIES]);
    assert_eq!(out.status(), HvStatus::ACCESS_DENIED);
    assert_eq!(
        without.get_reg(HvRegisterName::SVERSION),
        1,
        "non-VSM registers still work"
    );
    let privileges = without.model.cpuid(0, cpuid::HV_CPUID_FEATURES, 0).unwrap();
    assert!(!HvPartitionPrivilegeMask::from_halves(privileges[0], privileges[1]).access_vsm());

    let mut with = Hv::x64();
    for leaf in [
        cpuid::HV_CPUID_VENDOR_AND_MAX_FUNCTIONS,
        cpuid::HV_CPUID_INTERFACE,
    ] {
        assert_eq!(
            without.model.cpuid(0, leaf, 0),
            with.model.cpuid(0, leaf, 0)
        );
    }
    let privileges = with.model.cpuid(0, cpuid::HV_CPUID_FEATURES, 0).unwrap();
    assert!(HvPartitionPrivilegeMask::from_halves(privileges[0], privileges[1]).access_vsm());
}

#[test]
fn set_vp_registers_on_vtl0_changes_vtl0_state() {
    let mut hv = Hv::x64();
    let out = hv.set_regs(vtl0(), &[(RIP, 0x40_1003), (x64_reg::RAX, 0x13)]);
    assert_eq!((out.status(), out.reps_completed()), (HvStatus::SUCCESS, 2));
    assert_eq!(hv.model.register(0, Vtl::VTL0, RIP), Ok(0x40_1003));
    assert_eq!(hv.model.register(0, Vtl::VTL0, x64_reg::RAX), Ok(0x13));
    assert_eq!(
        hv.model.register(0, Vtl::VTL2, RIP),
        Ok(0),
        "VTL2's own RIP untouched"
    );
    let (out, values) = hv.get_regs(vtl0(), &[RIP]);
    assert_eq!((out.status(), values[0]), (HvStatus::SUCCESS, 0x40_1003));
}

#[test]
fn target_vtl_rules() {
    let mut hv = Hv::x64();
    let higher = HvInputVtl::target(Vtl::new(3).unwrap());
    assert_eq!(
        hv.set_regs(higher, &[(RIP, 1)]).status(),
        HvStatus::ACCESS_DENIED
    );
    // OpenHCL: a VTL whose state the VP does not have is INVALID_VTL_STATE.
    let disabled = HvInputVtl::target(Vtl::VTL1);
    assert_eq!(
        hv.set_regs(disabled, &[(RIP, 1)]).status(),
        HvStatus::INVALID_VTL_STATE
    );
    let reserved = HvInputVtl::from_bits(0x30);
    assert_eq!(
        hv.get_regs(reserved, &[RIP]).0.status(),
        HvStatus::INVALID_PARAMETER
    );
}

#[test]
fn header_rules() {
    let mut hv = Hv::x64();
    let get = rep(HypercallCode::GET_VP_REGISTERS, 1);
    let names = [HvRegisterName::VP_INDEX];
    let mut input = get_input(HV_VP_INDEX_SELF, HvInputVtl::CURRENT, &names);
    input[0] = 0; // partition id no longer "self"
    assert_eq!(
        hv.call(get, &input).status(),
        HvStatus::INVALID_PARTITION_ID
    );
    let input = get_input(7, HvInputVtl::CURRENT, &names);
    assert_eq!(hv.call(get, &input).status(), HvStatus::INVALID_VP_INDEX);
    // VP 1 has only VTL0 until the paravisor enables VTL2 on it.
    let input = get_input(1, HvInputVtl::CURRENT, &names);
    assert_eq!(hv.call(get, &input).status(), HvStatus::INVALID_VTL_STATE);
    let input = get_input(1, vtl0(), &names);
    assert_eq!(hv.call(get, &input).status(), HvStatus::SUCCESS);
    assert_eq!(hv.values(1), [1]);
    let mut input = get_input(HV_VP_INDEX_SELF, HvInputVtl::CURRENT, &names);
    input[14] = 1; // header RsvdZ
    assert_eq!(hv.call(get, &input).status(), HvStatus::INVALID_PARAMETER);
    let mut input = set_input(HV_VP_INDEX_SELF, vtl0(), &[(RIP, 5)]);
    input[16 + 4] = 1; // HvRegisterAssoc RsvdZ
    let out = hv.call(rep(HypercallCode::SET_VP_REGISTERS, 1), &input);
    assert_eq!(out.status(), HvStatus::INVALID_PARAMETER);
    assert_eq!(hv.model.register(0, Vtl::VTL0, RIP), Ok(0));
}

#[test]
fn code_page_offsets_name_the_stubs() {
    let mut hv = Hv::x64();
    let offsets = HvRegisterVsmCodePageOffsets::from_bits(
        hv.get_reg(HvRegisterName::VSM_CODE_PAGE_OFFSETS) as u64,
    );
    // OpenVMM's 64-bit offsets (hv1_emulator `vsm_code_page_offsets`), as the page test pins
    // the bytes at them; bits 63:24 are reserved.
    assert_eq!(offsets.vtl_call_offset(), 0x0F);
    assert_eq!(offsets.vtl_return_offset(), 0x26);
    assert_eq!(offsets.into_bits(), 0x26 << 12 | 0x0F);
    assert_eq!(
        (offsets.vtl_call_offset(), offsets.vtl_return_offset()),
        (VTL_CALL_OFFSET, VTL_RETURN_OFFSET)
    );
}

#[test]
fn vsm_partition_config_rules() {
    let mut hv = Hv::x64();
    let config = HvRegisterVsmPartitionConfig::new().with_intercept_page(true);
    let name = HvRegisterName::VSM_PARTITION_CONFIG;
    assert_eq!(
        hv.set_regs(HvInputVtl::CURRENT, &[(name, config.into_bits().into())])
            .status(),
        HvStatus::SUCCESS
    );
    assert_eq!(hv.get_reg(name), config.into_bits().into());
    assert_eq!(
        hv.set_regs(HvInputVtl::CURRENT, &[(name, 1 << 20)])
            .status(),
        HvStatus::INVALID_PARAMETER
    );
    assert_eq!(
        hv.set_regs(vtl0(), &[(name, 0)]).status(),
        HvStatus::INVALID_PARAMETER,
        "no VTL0 instance"
    );
    assert_eq!(hv.get_reg(name), config.into_bits().into());
}

#[test]
fn synic_registers_through_hypercalls() {
    let mut hv = Hv::x64();
    let sint2 = HvRegisterName::sint(2).unwrap();
    assert_eq!(hv.get_reg(sint2), 0x1_0000, "reset: masked");
    assert_eq!(
        hv.set_regs(HvInputVtl::CURRENT, &[(sint2, 0x0F)]).status(),
        HvStatus::INVALID_PARAMETER
    );
    assert_eq!(
        hv.set_regs(HvInputVtl::CURRENT, &[(sint2, 0x31)]).status(),
        HvStatus::SUCCESS
    );
    assert_eq!(hv.get_reg(sint2), 0x31);
    assert_eq!(hv.get_reg(HvRegisterName::EOM), 0, "write-only");
}

/// TLFS vsm.md: EnableVtlProtection is write-once and DefaultVtlProtectionMask cannot change
/// once protection is on; rewriting the same protection fields (Linux, then OpenHCL) is fine;
/// bits 12-15 need their capability; ZeroMemoryOnReset starts set.
#[test]
fn vsm_partition_config_write_rules() {
    let config = HvRegisterName::VSM_PARTITION_CONFIG;
    let mut hv = Hv::x64();
    let initial = HvRegisterVsmPartitionConfig::from_bits(hv.get_reg(config) as u64);
    assert!(initial.zero_memory_on_reset() && !initial.enable_vtl_protection());
    let set = |hv: &mut Hv, value: HvRegisterVsmPartitionConfig| {
        hv.set_regs(HvInputVtl::CURRENT, &[(config, value.into_bits().into())])
            .status()
    };
    let openhcl = HvRegisterVsmPartitionConfig::new()
        .with_enable_vtl_protection(true)
        .with_default_vtl_protection_mask(0xF)
        .with_zero_memory_on_reset(true)
        .with_intercept_unrecoverable_exception(true)
        .with_intercept_page(true);
    assert_eq!(set(&mut hv, openhcl), HvStatus::SUCCESS);
    assert_eq!(hv.get_reg(config) as u64, 0x183F);
    assert_eq!(set(&mut hv, openhcl), HvStatus::SUCCESS, "the same again");
    for broken in [
        openhcl.with_enable_vtl_protection(false),
        openhcl.with_default_vtl_protection_mask(0x3),
        // Not offered by the default scenario's VsmCapabilities.
        openhcl.with_intercept_not_present(true),
        openhcl.with_intercept_system_reset(true),
        HvRegisterVsmPartitionConfig::from_bits(openhcl.into_bits() | 1 << 16),
    ] {
        assert_eq!(
            set(&mut hv, broken),
            HvStatus::INVALID_PARAMETER,
            "{broken:?}"
        );
    }
    assert_eq!(hv.get_reg(config) as u64, 0x183F, "unchanged");
    let mut hv = Hv::new(Scenario {
        vsm_capabilities: hvdef::HvRegisterVsmCapabilities::new(),
        ..Scenario::default()
    });
    let page = HvRegisterVsmPartitionConfig::new().with_intercept_page(true);
    assert_eq!(
        set(&mut hv, page),
        HvStatus::INVALID_PARAMETER,
        "no intercept page"
    );
}

/// A VTL's VsmVpSecureConfigVtlN exists only for VTLs below it: ACCESS_DENIED otherwise (OpenHCL
/// hardware_cvm `get_vsm_vp_secure_config_vtl` / `set_vsm_vp_secure_config_vtl`).
#[test]
fn secure_config_for_own_or_higher_vtl_is_access_denied() {
    let mut hv = Hv::x64();
    let own = HvRegisterName::VSM_VP_SECURE_CONFIG_VTL0.0 + 2;
    for name in [
        HvRegisterName(own),
        HvRegisterName::VSM_VP_SECURE_CONFIG_VTL0,
    ] {
        let target = if name == HvRegisterName::VSM_VP_SECURE_CONFIG_VTL0 {
            vtl0()
        } else {
            HvInputVtl::CURRENT
        };
        let (out, _) = hv.get_regs(target, &[name]);
        assert_eq!(out.status(), HvStatus::ACCESS_DENIED, "get {name:?}");
        let out = hv.set_regs(target, &[(name, 0)]);
        assert_eq!(out.status(), HvStatus::ACCESS_DENIED, "set {name:?}");
    }
    // VTL2's config for VTL0 is there.
    let out = hv.set_regs(
        HvInputVtl::CURRENT,
        &[(HvRegisterName::VSM_VP_SECURE_CONFIG_VTL0, 1)],
    );
    assert_eq!(out.status(), HvStatus::SUCCESS);
}

/// The paravisor starts VTL0 from its IGVM file's VTL0 context with one SetVpRegisters, target
/// VTL0: every register of `HV_INITIAL_VP_CONTEXT` lands in VTL0's register file, segment and
/// table registers as their whole 128-bit TLFS values, and VTL2's own stay as they were.
#[test]
fn vtl2_sets_vtl0_initial_context_in_one_call() {
    use hvdef::x86_64::reg::*;
    let mut hv = Hv::x64();
    let seg = |selector: u128, attributes: u128| {
        0xFFFF_FFFFu128 << 64 | selector << 96 | attributes << 112
    };
    let regs = [
        (RIP, 0x0400_0040),
        (RSP, 0x0400_8000),
        (RFLAGS, 0x2),
        (CS, seg(0x08, 0xC09B)),
        (DS, seg(0x10, 0xC093)),
        (ES, seg(0x10, 0xC093)),
        (FS, seg(0x10, 0xC093)),
        (GS, seg(0x10, 0xC093)),
        (SS, seg(0x10, 0xC093)),
        (TR, 0x8B_0000_0000_FFFF << 64),
        (LDTR, 0x82_0000_0000_FFFF << 64),
        // HV_X64_TABLE_REGISTER: pad[3], limit @6, base @8.
        (IDTR, 0x1234_5000 << 64 | 0xFFF << 48),
        (GDTR, 0x0400_1000 << 64 | 0x17 << 48),
        (EFER, 0),
        (CR0, 0x11),
        (CR3, 0x0400_2000),
        (CR4, 0),
        (PAT, 0x0007_0406_0007_0406),
    ];
    let vtl2_cr0 = hv.model.register(0, Vtl::VTL2, CR0).unwrap();
    let out = hv.set_regs(vtl0(), &regs);
    assert_eq!(
        (out.status(), out.reps_completed()),
        (HvStatus::SUCCESS, 18)
    );
    for (name, value) in regs {
        assert_eq!(hv.model.register(0, Vtl::VTL0, name), Ok(value), "{name:?}");
    }
    assert_eq!(hv.model.register(0, Vtl::VTL2, CR0), Ok(vtl2_cr0));
    // A name the model does not know is still refused, at its element.
    let out = hv.set_regs(vtl0(), &[(RIP, 1), (HvRegisterName(0x0006_0008), 1)]);
    assert_eq!(
        (out.status(), out.reps_completed()),
        (HvStatus::INVALID_PARAMETER, 1)
    );
}

/// A 64-bit register's value is zero-extended to 128 bits (TLFS HvCallSetVpRegisters: bits
/// beyond the register's size are validated); OpenHCL answers INVALID_REGISTER_VALUE
/// (hardware_cvm `validate_set_vp_register_value`). Segment, table and XMM registers are
/// 128 bits wide and take any high quadword.
#[test]
fn a_64_bit_register_with_a_high_quadword_is_refused() {
    use hvdef::x86_64::reg::*;
    let mut hv = Hv::x64();
    for name in [RIP, CR0, EFER, PAT, RFLAGS] {
        let out = hv.set_regs(vtl0(), &[(name, 1u128 << 64 | 5)]);
        assert_eq!(
            (out.status(), out.reps_completed()),
            (HvStatus::INVALID_REGISTER_VALUE, 0),
            "{name:?}"
        );
        assert_eq!(
            hv.model.register(0, Vtl::VTL0, name).map(|v| v >> 64),
            Ok(0)
        );
    }
    for name in [CS, TR, GDTR, XMM0] {
        let out = hv.set_regs(vtl0(), &[(name, 7u128 << 64 | 5)]);
        assert_eq!(out.status(), HvStatus::SUCCESS, "{name:?}");
        assert_eq!(hv.model.register(0, Vtl::VTL0, name), Ok(7u128 << 64 | 5));
    }
}
