//! The x64 face: CPUID leaves, synthetic MSRs, the hypercall page.

use hvdef::x86_64::{cpuid, HvX64Msr, RET, VMMCALL};
use hvdef::{HvPartitionPrivilegeMask, HypercallCode};

use super::*;
use crate::{Arch, Event, HypercallPageChange, VmcallKind, VTL_CALL_OFFSET, VTL_RETURN_OFFSET};

#[test]
fn cpuid_hypervisor_leaves() {
    let mut hv = Hv::x64();
    let vendor = hv
        .model
        .cpuid(0, cpuid::HV_CPUID_VENDOR_AND_MAX_FUNCTIONS, 0)
        .unwrap();
    assert_eq!(vendor, [0x4000_000A, 0x7263_694D, 0x666F_736F, 0x7648_2074]);
    assert_eq!(
        hv.model.cpuid(0, cpuid::HV_CPUID_INTERFACE, 0).unwrap()[0],
        0x3123_7648
    );
    let features = hv.model.cpuid(0, cpuid::HV_CPUID_FEATURES, 0).unwrap();
    let privileges = HvPartitionPrivilegeMask::from_halves(features[0], features[1]);
    assert_eq!(privileges, Scenario::full_privileges());
    assert_ne!(
        features[1] & (1 << 20),
        0,
        "EnableExtendedHypercalls is EBX bit 20"
    );
    assert_ne!(features[3] & cpuid::HV_FEATURES_EDX_XMM_FAST_INPUT, 0);
    assert_eq!(
        hv.model
            .cpuid(0, cpuid::HV_CPUID_ENLIGHTENMENT_INFO, 0)
            .unwrap()[0]
            & (1 << 12),
        0
    );
    assert_eq!(
        hv.model
            .cpuid(1, cpuid::HV_CPUID_IMPLEMENTATION_LIMITS, 0)
            .unwrap()[0],
        64
    );
    assert_eq!(hv.model.cpuid(0, 0x4000_0100, 0), Some([0; 4]));
    assert_eq!(hv.model.cpuid(0, 1, 0), None, "native leaves are the CPU's");
    assert_eq!(hv.model.cpuid(0, 0x4001_0000, 0), None);
    assert_eq!(hv.model.trace().cpuid_leaves().len(), 6);

    let mut nested = Hv::new(Scenario {
        nested: true,
        ..Scenario::default()
    });
    let info = nested
        .model
        .cpuid(0, cpuid::HV_CPUID_ENLIGHTENMENT_INFO, 0)
        .unwrap();
    assert_eq!(
        info[0] & cpuid::HV_ENLIGHTENMENT_EAX_NESTED,
        cpuid::HV_ENLIGHTENMENT_EAX_NESTED
    );
    assert_ne!(
        nested
            .model
            .cpuid(0, cpuid::HV_CPUID_NESTED_FEATURES, 0)
            .unwrap()[0],
        0
    );
}

#[test]
fn hypercall_msr_is_ignored_while_guest_os_id_is_zero() {
    let mut hv = Hv::x64();
    let effects = hv
        .wrmsr(HvX64Msr::HV_X64_MSR_HYPERCALL, HYPERCALL_PAGE | 1)
        .unwrap();
    assert_eq!(effects.hypercall_page, None);
    assert_eq!(
        hv.rdmsr(HvX64Msr::HV_X64_MSR_HYPERCALL).unwrap() & 1,
        0,
        "Enable stays 0"
    );
    assert_eq!(hv.mem.slice(HYPERCALL_PAGE, 4), [0; 4], "no page written");
}

/// The page as OpenVMM's emulator writes it for an AMD processor (vm/hv1/hv1_emulator/src/hv.rs
/// `hypercall_page(use_vmmcall: true)`), byte for byte; the oracle is written out here, not
/// built by the model's code.
const OPENVMM_HYPERCALL_PAGE: [u8; 50] = [
    0x0F, 0x01, 0xD9, 0xC3, // 0x00 vmmcall; ret
    0x89, 0xC1, 0xB8, 0x11, 0x00, 0x00, 0x00, 0x0F, 0x01, 0xD9, 0xC3, // 0x04 32-bit VTL call
    0x48, 0x89, 0xC8, 0xB9, 0x11, 0x00, 0x00, 0x00, 0x0F, 0x01, 0xD9, 0xC3, // 0x0F 64-bit
    0x89, 0xC1, 0xB8, 0x12, 0x00, 0x00, 0x00, 0x0F, 0x01, 0xD9,
    0xC3, // 0x1B 32-bit VTL return
    0x48, 0x89, 0xC8, 0xB9, 0x12, 0x00, 0x00, 0x00, 0x0F, 0x01, 0xD9, 0xC3, // 0x26 64-bit
];

#[test]
fn hypercall_page_is_written_and_published() {
    let mut hv = Hv::x64();
    hv.wrmsr(HvX64Msr::HV_X64_MSR_GUEST_OS_ID, GUEST_OS_ID)
        .unwrap();
    let effects = hv
        .wrmsr(HvX64Msr::HV_X64_MSR_HYPERCALL, HYPERCALL_PAGE | 1)
        .unwrap();
    // Every vmcall, in page order; the 32-bit stubs' are ordinary hypercalls to a 64-bit caller.
    let sites = vec![
        (0x00, VmcallKind::Hypercall),
        (0x0B, VmcallKind::Hypercall),
        (0x17, VmcallKind::VtlCall),
        (0x22, VmcallKind::Hypercall),
        (0x2E, VmcallKind::VtlReturn),
    ];
    assert_eq!(
        effects.hypercall_page,
        Some(HypercallPageChange::Enabled {
            gpa: HYPERCALL_PAGE,
            vmcall_sites: sites.clone()
        })
    );
    assert_eq!(
        hv.rdmsr(HvX64Msr::HV_X64_MSR_HYPERCALL),
        Ok(HYPERCALL_PAGE | 1)
    );
    assert_eq!(hv.mem.slice(HYPERCALL_PAGE, 50), OPENVMM_HYPERCALL_PAGE);
    let rest = hv.mem.slice(HYPERCALL_PAGE + 50, 4096 - 50);
    assert!(rest.iter().all(|&b| b == 0xCC), "int3 after the stubs");
    for (offset, _) in &sites {
        assert_eq!(
            hv.mem.slice(HYPERCALL_PAGE + offset, 3),
            VMMCALL,
            "vmmcall at {offset:#x}"
        );
        assert_eq!(hv.mem.slice(HYPERCALL_PAGE + offset + 3, 1), [RET]);
    }
    // The published 64-bit offsets name the stubs that load the VTL codes from RCX.
    assert_eq!((VTL_CALL_OFFSET, VTL_RETURN_OFFSET), (0x0F, 0x26));
    for (offset, code) in [
        (VTL_CALL_OFFSET, HypercallCode::VTL_CALL),
        (VTL_RETURN_OFFSET, HypercallCode::VTL_RETURN),
    ] {
        let stub = hv.mem.slice(HYPERCALL_PAGE + u64::from(offset), 5);
        assert_eq!(stub, [0x48, 0x89, 0xC8, 0xB9, code.0 as u8]);
    }
    assert_eq!(
        hv.model
            .trace()
            .msr_writes(HvX64Msr::HV_X64_MSR_HYPERCALL.0),
        [HYPERCALL_PAGE | 1]
    );

    // Zeroing the guest OS id disables the page.
    let effects = hv.wrmsr(HvX64Msr::HV_X64_MSR_GUEST_OS_ID, 0).unwrap();
    assert_eq!(
        effects.hypercall_page,
        Some(HypercallPageChange::Disabled {
            gpa: HYPERCALL_PAGE
        })
    );
    assert_eq!(hv.rdmsr(HvX64Msr::HV_X64_MSR_HYPERCALL).unwrap() & 1, 0);
}

#[test]
fn locked_hypercall_msr_is_immutable_and_gpa_space_is_checked() {
    let mut hv = Hv::x64();
    hv.wrmsr(HvX64Msr::HV_X64_MSR_GUEST_OS_ID, GUEST_OS_ID)
        .unwrap();
    assert_eq!(
        hv.wrmsr(HvX64Msr::HV_X64_MSR_HYPERCALL, (1 << 48) | 1),
        Err(Fault::Gp)
    );
    // RsvdP bits 11:2 non-zero: #GP, nothing stored (OpenVMM hv.rs `msr_write_hypercall_page`).
    assert_eq!(
        hv.wrmsr(
            HvX64Msr::HV_X64_MSR_HYPERCALL,
            HYPERCALL_PAGE | (1 << 2) | 1
        ),
        Err(Fault::Gp)
    );
    assert_eq!(hv.rdmsr(HvX64Msr::HV_X64_MSR_HYPERCALL), Ok(0));
    hv.wrmsr(HvX64Msr::HV_X64_MSR_HYPERCALL, HYPERCALL_PAGE | 0b11)
        .unwrap();
    // Locked: every write is #GP (OpenVMM), the value stays.
    assert_eq!(
        hv.wrmsr(HvX64Msr::HV_X64_MSR_HYPERCALL, 0x5_0000 | 1),
        Err(Fault::Gp)
    );
    assert_eq!(
        hv.wrmsr(HvX64Msr::HV_X64_MSR_HYPERCALL, HYPERCALL_PAGE | 0b11),
        Err(Fault::Gp)
    );
    assert_eq!(
        hv.rdmsr(HvX64Msr::HV_X64_MSR_HYPERCALL),
        Ok(HYPERCALL_PAGE | 0b11)
    );
}

#[test]
fn vp_index_sversion_eom_and_sints() {
    let mut hv = Hv::x64();
    assert_eq!(
        hv.model.rdmsr(1, HvX64Msr::HV_X64_MSR_VP_INDEX.0),
        Some(Ok(1))
    );
    assert_eq!(hv.wrmsr(HvX64Msr::HV_X64_MSR_VP_INDEX, 3), Err(Fault::Gp));
    assert_eq!(hv.rdmsr(HvX64Msr::HV_X64_MSR_SVERSION), Ok(1));
    assert_eq!(hv.wrmsr(HvX64Msr::HV_X64_MSR_SVERSION, 2), Err(Fault::Gp));
    assert!(hv.wrmsr(HvX64Msr::HV_X64_MSR_EOM, 0).is_ok());
    assert_eq!(hv.rdmsr(HvX64Msr::HV_X64_MSR_EOM), Ok(0));
    assert_eq!(hv.rdmsr(HvX64Msr::HV_X64_MSR_SINT5), Ok(0x1_0000));
    assert_eq!(hv.wrmsr(HvX64Msr::HV_X64_MSR_SINT5, 0x0F), Err(Fault::Gp));
    assert_eq!(
        hv.wrmsr(HvX64Msr::HV_X64_MSR_SINT5, 0x1_000F),
        Err(Fault::Gp),
        "masked too (TLFS)"
    );
    assert!(hv.wrmsr(HvX64Msr::HV_X64_MSR_SINT5, 0x10).is_ok());
    assert_eq!(hv.rdmsr(HvX64Msr::HV_X64_MSR_SINT5), Ok(0x10));
    assert_eq!(
        hv.model.rdmsr(0, 0x4000_0200),
        Some(Err(Fault::Gp)),
        "unimplemented synthetic MSR"
    );
    assert_eq!(hv.model.rdmsr(0, 0xC000_0080), None, "EFER is the CPU's");
    assert_eq!(hv.model.wrmsr(0, 0xC000_0080, 0, &mut hv.mem), None);
    assert!(matches!(
        hv.model.trace().events().last(),
        Some(Event::Rdmsr {
            msr: 0x4000_0200,
            result: Err(Fault::Gp),
            ..
        })
    ));
}

#[test]
fn msr_privileges() {
    let mut scenario = Scenario::default();
    scenario.privileges.set_access_synic_regs(false);
    scenario.privileges.set_access_hypercall_msrs(false);
    let mut hv = Hv::new(scenario);
    assert_eq!(hv.rdmsr(HvX64Msr::HV_X64_MSR_SIMP), Err(Fault::Gp));
    assert_eq!(
        hv.wrmsr(HvX64Msr::HV_X64_MSR_GUEST_OS_ID, GUEST_OS_ID),
        Err(Fault::Gp)
    );
    assert_eq!(hv.rdmsr(HvX64Msr::HV_X64_MSR_VP_INDEX), Ok(0));
}

#[test]
fn nested_msrs_only_when_nested() {
    let mut hv = Hv::x64();
    assert_eq!(hv.rdmsr(HvX64Msr::HV_X64_MSR_NESTED_SINT0), Err(Fault::Gp));
    let mut hv = Hv::new(Scenario {
        nested: true,
        ..Scenario::default()
    });
    assert!(hv.wrmsr(HvX64Msr::HV_X64_MSR_NESTED_SINT0, 0x40).is_ok());
    assert_eq!(hv.rdmsr(HvX64Msr::HV_X64_MSR_NESTED_SINT0), Ok(0x40));
    assert_eq!(
        hv.rdmsr(HvX64Msr::HV_X64_MSR_SINT0),
        Ok(0x1_0000),
        "a separate SynIC"
    );
    assert_eq!(
        hv.model.rdmsr(1, HvX64Msr::HV_X64_MSR_NESTED_VP_INDEX.0),
        Some(Ok(1))
    );
    assert_eq!(
        hv.wrmsr(HvX64Msr::HV_X64_MSR_NESTED_SVERSION, 1),
        Err(Fault::Gp)
    );
}

#[test]
fn arm64_model_has_no_x86_face() {
    let mut hv = Hv::new(Scenario::for_arch(Arch::Aarch64));
    assert_eq!(
        hv.model
            .cpuid(0, cpuid::HV_CPUID_VENDOR_AND_MAX_FUNCTIONS, 0),
        None
    );
    assert_eq!(hv.model.rdmsr(0, HvX64Msr::HV_X64_MSR_GUEST_OS_ID.0), None);
    let (_, effects) = hv.vmcall(X64HypercallRegs::default());
    assert_eq!(effects.fault, Some(Fault::Ud));
}
