//! HvCallEnableVpVtl and HvCallStartVirtualProcessor: validation and the effects the glue acts on.

use hvdef::x86_64::{HvX64InitialVpContext, HvX64InputEnableVpVtl};
use hvdef::{
    HvInputVtl, HvRegisterName, HvRegisterVsmVpStatus, HvStatus, HypercallCode, HypercallOutput,
    Vtl, HV_PARTITION_ID_SELF,
};
use zerocopy::IntoBytes;

use super::*;
use crate::{InitialVpContext, StartVp};

fn context(rip: u64) -> HvX64InitialVpContext {
    HvX64InitialVpContext {
        rip,
        rsp: 0x8000,
        cr3: 0x10_0000,
        ..Default::default()
    }
}

fn input(vp_index: u32, target_vtl: u8, rip: u64) -> HvX64InputEnableVpVtl {
    HvX64InputEnableVpVtl {
        partition_id: HV_PARTITION_ID_SELF,
        vp_index,
        target_vtl,
        reserved: [0; 3],
        context: context(rip),
    }
}

fn issue(hv: &mut Hv, code: HypercallCode, input: &HvX64InputEnableVpVtl) -> (HvStatus, Effects) {
    hv.mem.write(IN, input.as_bytes()).unwrap();
    let (regs, effects) = hv.vmcall(X64HypercallRegs {
        rcx: simple(code).into_bits(),
        rdx: IN,
        ..Default::default()
    });
    (HypercallOutput::from_bits(regs.rax).status(), effects)
}

const ENABLE: HypercallCode = HypercallCode::ENABLE_VP_VTL;
const START: HypercallCode = HypercallCode::START_VIRTUAL_PROCESSOR;

#[test]
fn start_needs_the_vtl_enabled_then_starts_the_vcpu() {
    let mut hv = Hv::x64();
    let (status, effects) = issue(&mut hv, START, &input(1, 2, 0x1000));
    assert_eq!(
        status,
        HvStatus::INVALID_VP_STATE,
        "VTL2 not enabled on VP1"
    );
    assert_eq!(effects.start_vp, None);

    let (status, effects) = issue(&mut hv, ENABLE, &input(1, 2, 0x1000));
    assert_eq!(status, HvStatus::SUCCESS);
    assert_eq!(effects.start_vp, None, "enabling does not run the VP");
    let enabled = StartVp {
        vp: 1,
        vtl: Vtl::VTL2,
        context: InitialVpContext::X64(context(0x1000)),
    };
    assert_eq!(effects.vp_vtl_enabled, Some(enabled));
    let names = [HvRegisterName::VSM_VP_STATUS];
    hv.call(
        rep(HypercallCode::GET_VP_REGISTERS, 1),
        &get_input(1, HvInputVtl::CURRENT, &names),
    )
    .result()
    .unwrap();
    let status = HvRegisterVsmVpStatus::from_bits(hv.values(1)[0] as u64);
    assert_eq!(status.enabled_vtl_set(), 0b101);

    let (status, _) = issue(&mut hv, ENABLE, &input(1, 2, 0x1000));
    assert_eq!(status, HvStatus::VTL_ALREADY_ENABLED);

    assert!(!hv.model.vp_started(1));
    let (status, effects) = issue(&mut hv, START, &input(1, 2, 0x2000));
    assert_eq!(status, HvStatus::SUCCESS);
    let started = StartVp {
        vp: 1,
        vtl: Vtl::VTL2,
        context: InitialVpContext::X64(context(0x2000)),
    };
    assert_eq!(effects.start_vp, Some(started));
    assert!(effects.advance_ip);
    assert!(hv.model.vp_started(1));
    assert_eq!(hv.model.active_vtl(1), Some(Vtl::VTL2));

    let (status, effects) = issue(&mut hv, START, &input(1, 2, 0x2000));
    assert_eq!(status, HvStatus::INVALID_VP_STATE, "already running");
    assert_eq!(effects.start_vp, None);
}

#[test]
fn start_and_enable_validation() {
    let mut hv = Hv::x64();
    assert_eq!(
        issue(&mut hv, START, &input(0, 2, 0)).0,
        HvStatus::INVALID_VP_STATE,
        "the BSP runs"
    );
    assert_eq!(
        issue(&mut hv, START, &input(2, 2, 0)).0,
        HvStatus::INVALID_VP_INDEX
    );
    assert_eq!(
        issue(&mut hv, ENABLE, &input(64, 2, 0)).0,
        HvStatus::INVALID_VP_INDEX
    );
    assert_eq!(
        issue(&mut hv, ENABLE, &input(1, 1, 0)).0,
        HvStatus::INVALID_PARAMETER,
        "VTL1 not in the partition"
    );
    assert_eq!(
        issue(&mut hv, ENABLE, &input(1, 16, 0)).0,
        HvStatus::INVALID_PARAMETER
    );
    let mut bad = input(1, 2, 0);
    bad.reserved[1] = 1;
    assert_eq!(issue(&mut hv, ENABLE, &bad).0, HvStatus::INVALID_PARAMETER);
    bad = input(1, 2, 0);
    bad.partition_id = 5;
    assert_eq!(
        issue(&mut hv, START, &bad).0,
        HvStatus::INVALID_PARTITION_ID
    );

    // A VTL1 caller cannot enable or start VTL2.
    let mut vtl1 = Hv::new(Scenario {
        enabled_vtls: 0b111,
        active_vtl: Vtl::VTL1,
        ..Scenario::default()
    });
    assert_eq!(
        issue(&mut vtl1, ENABLE, &input(1, 2, 0)).0,
        HvStatus::ACCESS_DENIED
    );
    assert_eq!(
        issue(&mut vtl1, ENABLE, &input(1, 1, 0)).0,
        HvStatus::SUCCESS
    );
}

#[test]
fn start_and_enable_privileges() {
    let mut scenario = Scenario::default();
    scenario.privileges.set_start_virtual_processor(false);
    scenario.privileges.set_access_vsm(false);
    let mut hv = Hv::new(scenario);
    assert_eq!(
        issue(&mut hv, START, &input(1, 0, 0)).0,
        HvStatus::ACCESS_DENIED
    );
    assert_eq!(
        issue(&mut hv, ENABLE, &input(1, 2, 0)).0,
        HvStatus::ACCESS_DENIED
    );
    assert!(!hv.model.vp_started(1));
}

#[test]
fn aps_may_start_with_every_vtl() {
    let mut hv = Hv::new(Scenario {
        ap_vtls_enabled: true,
        vp_count: 4,
        ..Scenario::default()
    });
    assert_eq!(
        issue(&mut hv, ENABLE, &input(3, 2, 0)).0,
        HvStatus::VTL_ALREADY_ENABLED
    );
    assert_eq!(issue(&mut hv, START, &input(3, 2, 0)).0, HvStatus::SUCCESS);
}
