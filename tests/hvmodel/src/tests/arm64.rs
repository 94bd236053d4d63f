//! The arm64 face: `hvc` immediates, SMCCC, fast register placement, the early-register rule,
//! VTL return with shared X registers, and the arm64 start context.

use hvdef::aarch64::{
    reg as arm_reg, HvArm64HypercallInterceptMessage, HvArm64InitialVpContext,
    HvArm64InputEnableVpVtl, HV_VENDOR_HYP_UID, SMCCC_HV_FUNC_ID, SMCCC_VENDOR_HYP_UID,
};
use hvdef::{
    Control, HvInputVtl, HvMessageType, HvRegisterName, HvRegisterVsmPartitionConfig,
    HvRegisterVsmVpStatus, HvStatus, HvVpAssistPage, HvVtlEntryReason, HypercallCode,
    HypercallOutput, Vtl, HV_PARTITION_ID_SELF, HV_VP_INDEX_SELF,
};
use zerocopy::{FromBytes, IntoBytes};

use super::*;
use crate::{Arch, InitialVpContext, Vtl0Call, ARM64_GPRS};

fn arm64() -> Hv {
    Hv::new(Scenario::for_arch(Arch::Aarch64))
}

/// An `hvc` with X0..X17 = `x` and X18..X30 zero; returns X0..X17.
fn hvc(hv: &mut Hv, imm: u16, x: [u64; 18]) -> ([u64; 18], Effects) {
    let mut all = [0; ARM64_GPRS];
    all[..18].copy_from_slice(&x);
    let (all, effects) = hvc_all(hv, imm, all);
    (all[..18].try_into().unwrap(), effects)
}

fn hvc_all(hv: &mut Hv, imm: u16, mut x: [u64; ARM64_GPRS]) -> ([u64; ARM64_GPRS], Effects) {
    let effects = hv.model.hvc(0, imm, &mut x, &mut hv.mem);
    (x, effects)
}

/// A memory-based SMCCC hypercall.
fn smccc(hv: &mut Hv, control: Control, input: &[u8]) -> HypercallOutput {
    hv.mem.write(IN, input).unwrap();
    let mut x = [0; 18];
    (x[0], x[1], x[2], x[3]) = (SMCCC_HV_FUNC_ID.into(), control.into_bits(), IN, OUT);
    let (x, effects) = hvc(hv, 0, x);
    assert_eq!(effects.fault, None);
    HypercallOutput::from_bits(x[0])
}

/// The fast register block X2.. for a Get/SetVpRegisters header on "self", target `vtl`.
fn fast_header(x: &mut [u64; 18], control: Control, vtl: HvInputVtl) {
    x[0] = SMCCC_HV_FUNC_ID.into();
    x[1] = control.into_bits();
    x[2] = HV_PARTITION_ID_SELF;
    x[3] = u64::from(HV_VP_INDEX_SELF) | u64::from(vtl.into_bits()) << 32;
}

/// Linux's `hv_get_vpreg_128`: name in X4, value back in X6/X7.
fn fast_get(hv: &mut Hv, name: HvRegisterName) -> (HvStatus, u128) {
    let mut x = [0; 18];
    fast_header(
        &mut x,
        rep(HypercallCode::GET_VP_REGISTERS, 1).with_fast(true),
        HvInputVtl::CURRENT,
    );
    x[4] = name.0.into();
    let (x, _) = hvc(hv, 0, x);
    (
        HypercallOutput::from_bits(x[0]).status(),
        u128::from(x[6]) | u128::from(x[7]) << 64,
    )
}

/// The fast SetVpRegisters arm64 boot code uses for the guest OS id: X4 name, X6/X7 value.
fn fast_set(hv: &mut Hv, vtl: HvInputVtl, name: HvRegisterName, value: u128) -> HvStatus {
    let mut x = [0; 18];
    fast_header(
        &mut x,
        rep(HypercallCode::SET_VP_REGISTERS, 1).with_fast(true),
        vtl,
    );
    x[4] = name.0.into();
    (x[6], x[7]) = (value as u64, (value >> 64) as u64);
    let (x, _) = hvc(hv, 0, x);
    HypercallOutput::from_bits(x[0]).status()
}

fn booted() -> Hv {
    let mut hv = arm64();
    let status = fast_set(
        &mut hv,
        HvInputVtl::CURRENT,
        HvRegisterName::GUEST_OS_ID,
        GUEST_OS_ID.into(),
    );
    assert_eq!(status, HvStatus::SUCCESS);
    let install =
        super::hypercalls::install_input(hvdef::HvInterceptType::UNKNOWN_SYNIC_CONNECTION.0);
    let out = smccc(&mut hv, simple(HypercallCode::INSTALL_INTERCEPT), &install);
    assert_eq!(out.status(), HvStatus::SUCCESS);
    hv
}

/// A VTL0 PostMessage to a connection the host does not know: reflected to VTL2.
fn reflected_post_message(pc: u64) -> Vtl0Call {
    Vtl0Call::arm64(pc, simple(HypercallCode::POST_MESSAGE), 0x5000, 0).with_memory(
        0x5000,
        &super::hypercalls::post_message_input(UNKNOWN_CONNECTION),
    )
}

#[test]
fn smccc_vendor_uid_and_unknown_functions() {
    let mut hv = arm64();
    let mut x = [0; 18];
    x[0] = SMCCC_VENDOR_HYP_UID.into();
    let (x, effects) = hvc(&mut hv, 0, x);
    assert!(effects.advance_ip);
    assert_eq!(&x[..4], HV_VENDOR_HYP_UID.map(u64::from));
    let mut x = [0; 18];
    x[0] = 0x8400_0000; // PSCI_VERSION: not the hypervisor's
    let (x, _) = hvc(&mut hv, 0, x);
    assert_eq!(x[0], u64::MAX, "SMCCC NOT_SUPPORTED");
    let (_, effects) = hvc(&mut hv, 4, [0; 18]);
    assert_eq!(effects.fault, Some(Fault::Ud));
}

#[test]
fn early_register_rule_before_guest_os_id() {
    let mut hv = arm64();
    let (status, version) = fast_get(&mut hv, HvRegisterName::HYPERVISOR_VERSION);
    assert_eq!((status, version as u32), (HvStatus::SUCCESS, 26100));
    assert_eq!(
        fast_get(&mut hv, HvRegisterName::VP_INDEX).0,
        HvStatus::ACCESS_DENIED
    );
    let name = HvRegisterName::VP_ASSIST_PAGE;
    assert_eq!(
        fast_set(&mut hv, HvInputVtl::CURRENT, name, 0x3_0001),
        HvStatus::ACCESS_DENIED
    );
    let post = super::hypercalls::post_message_input(1);
    assert_eq!(
        smccc(&mut hv, simple(HypercallCode::POST_MESSAGE), &post).status(),
        HvStatus::ACCESS_DENIED
    );
    let crash = HvRegisterName::GUEST_CRASH_P0;
    assert_eq!(
        fast_set(&mut hv, HvInputVtl::CURRENT, crash, 7),
        HvStatus::SUCCESS
    );

    let name = HvRegisterName::GUEST_OS_ID;
    assert_eq!(
        fast_set(&mut hv, HvInputVtl::CURRENT, name, GUEST_OS_ID.into()),
        HvStatus::SUCCESS
    );
    assert_eq!(
        fast_get(&mut hv, HvRegisterName::VP_INDEX),
        (HvStatus::SUCCESS, 0)
    );
    assert_eq!(
        fast_get(&mut hv, name),
        (HvStatus::SUCCESS, GUEST_OS_ID.into())
    );
    assert_eq!(
        smccc(&mut hv, simple(HypercallCode::POST_MESSAGE), &post).status(),
        HvStatus::SUCCESS
    );
}

#[test]
fn fast_get_returns_in_x6_x7() {
    let mut hv = booted();
    let (status, value) = fast_get(&mut hv, HvRegisterName::VSM_VP_STATUS);
    assert_eq!(status, HvStatus::SUCCESS);
    let status = HvRegisterVsmVpStatus::from_bits(value as u64);
    assert_eq!((status.active_vtl(), status.enabled_vtl_set()), (2, 0b101));
    // Only arm64's VTL switch is `hvc`: no code page offsets.
    assert_eq!(
        fast_get(&mut hv, HvRegisterName::VSM_CODE_PAGE_OFFSETS).0,
        HvStatus::INVALID_PARAMETER
    );
}

#[test]
fn legacy_hvc1_timeout_rewrites_x0() {
    let mut hv = Hv::new(Scenario {
        limits: crate::Limits {
            max_reps_per_call: 1,
            ..Default::default()
        },
        ..Scenario::for_arch(Arch::Aarch64)
    });
    let name = HvRegisterName::GUEST_OS_ID;
    assert_eq!(
        fast_set(&mut hv, HvInputVtl::CURRENT, name, GUEST_OS_ID.into()),
        HvStatus::SUCCESS
    );
    let names = [HvRegisterName::VP_INDEX, HvRegisterName::SVERSION];
    hv.mem
        .write(
            IN,
            &get_input(HV_VP_INDEX_SELF, HvInputVtl::CURRENT, &names),
        )
        .unwrap();
    let control = rep(HypercallCode::GET_VP_REGISTERS, 2);
    let mut x = [0; 18];
    (x[0], x[1], x[2]) = (control.into_bits(), IN, OUT);
    let (x, effects) = hvc(&mut hv, 1, x);
    assert!(!effects.advance_ip);
    assert_eq!(
        x[0],
        control.with_rep_start(1).into_bits(),
        "re-executed with the new rep start"
    );
    let (x, effects) = hvc(&mut hv, 1, x);
    assert!(effects.advance_ip);
    let out = HypercallOutput::from_bits(x[0]);
    assert_eq!((out.status(), out.reps_completed()), (HvStatus::SUCCESS, 2));
    assert_eq!(hv.values(2), [0, 1]);
}

#[test]
fn smccc_timeout_keeps_the_function_id_for_re_execution() {
    let mut hv = Hv::new(Scenario {
        limits: crate::Limits {
            max_reps_per_call: 1,
            ..Default::default()
        },
        ..Scenario::for_arch(Arch::Aarch64)
    });
    assert_eq!(
        fast_set(
            &mut hv,
            HvInputVtl::CURRENT,
            HvRegisterName::GUEST_OS_ID,
            GUEST_OS_ID.into()
        ),
        HvStatus::SUCCESS
    );
    let names = [HvRegisterName::VP_INDEX, HvRegisterName::SVERSION];
    hv.mem
        .write(
            IN,
            &get_input(HV_VP_INDEX_SELF, HvInputVtl::CURRENT, &names),
        )
        .unwrap();
    let control = rep(HypercallCode::GET_VP_REGISTERS, 2);
    let mut x = [0; 18];
    (x[0], x[1], x[2], x[3]) = (SMCCC_HV_FUNC_ID.into(), control.into_bits(), IN, OUT);
    let (x, effects) = hvc(&mut hv, 0, x);
    assert!(!effects.advance_ip);
    assert_eq!(
        x[0],
        u64::from(SMCCC_HV_FUNC_ID),
        "still a hypercall when re-executed"
    );
    assert_eq!(x[1], control.with_rep_start(1).into_bits());
    // The guest re-executes the same hvc with the registers as they are.
    let (x, effects) = hvc(&mut hv, 0, x);
    assert!(effects.advance_ip);
    let out = HypercallOutput::from_bits(x[0]);
    assert_eq!((out.status(), out.reps_completed()), (HvStatus::SUCCESS, 2));
    assert_eq!(hv.values(2), [0, 1]);
}

/// A fast SMCCC SignalEvent: connection id and flag number in X2.
fn signal_event(hv: &mut Hv, control: Control, connection_id: u32, flag_number: u16) -> HvStatus {
    let mut x = [0; 18];
    x[0] = SMCCC_HV_FUNC_ID.into();
    x[1] = control.with_fast(true).into_bits();
    x[2] = u64::from(connection_id) | u64::from(flag_number) << 32;
    let (x, effects) = hvc(hv, 0, x);
    assert_eq!(effects.fault, None);
    HypercallOutput::from_bits(x[0]).status()
}

/// TLFS feature-discovery.md, "Implementation Recommendations - HvRegisterFeaturesInfo": bit 4
/// says the hypervisor is nested in a Hyper-V partition; bits 63:32 are the spinlock retries
/// (the model never asks for notification). A nested host then routes PostMessage and
/// SignalEvent by bit 31 exactly as on x64.
#[test]
fn a_nested_arm64_host_reports_bit_4_and_routes_l0_calls_by_bit_31() {
    for nested in [false, true] {
        let mut hv = Hv::new(Scenario {
            nested,
            ..Scenario::for_arch(Arch::Aarch64)
        });
        assert_eq!(hv.model.scenario().nested, nested);
        // On the early register list: readable before the guest OS id is set.
        let features = if nested {
            0xFFFF_FFFF_0000_0010
        } else {
            0xFFFF_FFFF_0000_0000
        };
        assert_eq!(
            fast_get(&mut hv, HvRegisterName::FEATURES_INFO),
            (HvStatus::SUCCESS, features),
            "nested {nested}"
        );
        let status = fast_set(
            &mut hv,
            HvInputVtl::CURRENT,
            HvRegisterName::GUEST_OS_ID,
            GUEST_OS_ID.into(),
        );
        assert_eq!(status, HvStatus::SUCCESS);
        assert_eq!(
            fast_get(&mut hv, HvRegisterName::FEATURES_INFO),
            (HvStatus::SUCCESS, features)
        );

        // Without the bit: L1 does not know the L0 connection. With it: L0 takes the call, or,
        // on a flat host, the bit is invalid input.
        let (plain, with_bit) = if nested {
            (HvStatus::INVALID_CONNECTION_ID, HvStatus::SUCCESS)
        } else {
            (HvStatus::SUCCESS, HvStatus::INVALID_HYPERCALL_INPUT)
        };
        let post = super::hypercalls::post_message_input(1);
        let control = simple(HypercallCode::POST_MESSAGE);
        assert_eq!(smccc(&mut hv, control, &post).status(), plain, "{nested}");
        let control = control.with_nested(true);
        assert_eq!(
            smccc(&mut hv, control, &post).status(),
            with_bit,
            "{nested}"
        );
        let control = simple(HypercallCode::SIGNAL_EVENT);
        assert_eq!(signal_event(&mut hv, control, 1, 0), plain, "{nested}");
        let control = control.with_nested(true);
        assert_eq!(signal_event(&mut hv, control, 1, 0), with_bit, "{nested}");

        // Bit 31 on a call L0 does not own, or on an extended call, is invalid either way.
        let input = get_input(
            HV_VP_INDEX_SELF,
            HvInputVtl::CURRENT,
            &[HvRegisterName::VP_INDEX],
        );
        let get = rep(HypercallCode::GET_VP_REGISTERS, 1);
        assert_eq!(smccc(&mut hv, get, &input).status(), HvStatus::SUCCESS);
        assert_eq!(
            smccc(&mut hv, get.with_nested(true), &input).status(),
            HvStatus::INVALID_HYPERCALL_INPUT
        );
        let query = simple(HypercallCode::EXT_QUERY_CAPABILITIES).with_nested(true);
        assert_eq!(
            smccc(&mut hv, query, &[]).status(),
            HvStatus::INVALID_HYPERCALL_INPUT
        );
    }
}

#[test]
fn start_vp_carries_the_arm64_context() {
    let mut hv = booted();
    let context = HvArm64InitialVpContext {
        pc: 0x4008_0000,
        sp_elh: 0x4100_0000,
        ..Default::default()
    };
    let input = HvArm64InputEnableVpVtl {
        partition_id: HV_PARTITION_ID_SELF,
        vp_index: 1,
        target_vtl: 0,
        reserved: [0; 3],
        context,
    };
    hv.mem.write(IN, input.as_bytes()).unwrap();
    let mut x = [0; 18];
    (x[0], x[1], x[2]) = (
        SMCCC_HV_FUNC_ID.into(),
        simple(HypercallCode::START_VIRTUAL_PROCESSOR).into_bits(),
        IN,
    );
    let (x, effects) = hvc(&mut hv, 0, x);
    assert_eq!(HypercallOutput::from_bits(x[0]).status(), HvStatus::SUCCESS);
    let start = effects.start_vp.unwrap();
    assert_eq!((start.vp, start.vtl), (1, Vtl::VTL0));
    assert_eq!(start.context, InitialVpContext::Aarch64(context));
}

#[test]
fn vtl_return_shares_x_registers_with_vtl0() {
    let mut hv = booted();
    let vtl = HvInputVtl::CURRENT;
    assert_eq!(
        fast_set(
            &mut hv,
            vtl,
            HvRegisterName::VP_ASSIST_PAGE,
            (ASSIST | 1).into()
        ),
        HvStatus::SUCCESS
    );
    let config = HvRegisterVsmPartitionConfig::new()
        .with_intercept_page(true)
        .into_bits();
    assert_eq!(
        fast_set(
            &mut hv,
            vtl,
            HvRegisterName::VSM_PARTITION_CONFIG,
            config.into()
        ),
        HvStatus::SUCCESS
    );
    let control = simple(HypercallCode::POST_MESSAGE);
    let pc = 0x8000_1000;
    hv.model.vtl0().push(reflected_post_message(pc));

    let mut x = [0; 18];
    x[0] = 0x77;
    let (x, effects) = hvc(&mut hv, 3, x);
    assert!(effects.advance_ip && !effects.finished);
    let page = HvVpAssistPage::read_from_prefix(hv.mem.slice(ASSIST, 0x1000))
        .unwrap()
        .0;
    assert_eq!(page.vtl_control.entry_reason, HvVtlEntryReason::INTERCEPT);
    assert_eq!(
        page.intercept_message.header.message_type,
        HvMessageType::HYPERCALL_INTERCEPT
    );
    assert_eq!(page.intercept_message.header.payload_size, 0xB0);
    let (hc, _) =
        HvArm64HypercallInterceptMessage::read_from_prefix(page.intercept_message.payload_bytes())
            .unwrap();
    assert_eq!(
        (hc.header.pc, hc.header.instruction_length, hc.immediate),
        (pc, 4, 0)
    );
    assert_eq!(
        (
            hc.header.execution_state.cpl(),
            hc.header.execution_state.vtl()
        ),
        (1, 0)
    );
    assert_eq!(
        &hc.x[..4],
        [u64::from(SMCCC_HV_FUNC_ID), control.into_bits(), 0x5000, 0]
    );
    assert_eq!(
        &x[..4],
        &hc.x[..4],
        "VTL2 resumes with VTL0's shared registers"
    );

    // Complete it: PC past the hvc, the status in the shared X0.
    assert_eq!(
        fast_set(&mut hv, vtl0(), arm_reg::XPC, (pc + 4).into()),
        HvStatus::SUCCESS
    );
    let mut x = [0; 18];
    x[0] = HypercallOutput::new()
        .with_status(HvStatus::INVALID_CONNECTION_ID)
        .into_bits();
    let (_, effects) = hvc(&mut hv, 3, x);
    assert!(effects.finished);
    let r = &hv.model.vtl0().results()[0];
    assert_eq!(r.status(), HvStatus::INVALID_CONNECTION_ID);
    assert!(r.advanced());
    assert_eq!(r.register(arm_reg::X1), 0, "X1..X17 are shared too");
}

/// VTL2's X0..X30 at a VtlReturn: a marker per register.
fn vtl2_x(n: usize) -> u64 {
    0x2222_0000_0000_0000 | n as u64
}

/// VTL0's scripted X4..X30 (its call sets X0..X3).
fn vtl0_x(n: usize) -> u64 {
    (n as u64) << 8 | 0xA0
}

fn xn(n: usize) -> HvRegisterName {
    HvRegisterName(arm_reg::X0.0 + n as u32)
}

/// X0-X17 and X19-X28 are shared (TLFS vsm.md "Shared State"): VTL0 resumes with what VTL2 left
/// in them, and VTL2 comes back with VTL0's. X18, X29 and X30 are private ("Private State"):
/// each VTL keeps its own, so VTL2 gets its own back and VTL0's are untouched; under the other
/// reading of X29/X30 (`arm64_fp_lr_shared`) they move like the rest.
#[test]
fn vtl_return_moves_exactly_the_shared_x_registers() {
    for fp_lr_shared in [false, true] {
        let mut hv = Hv::new(Scenario {
            arm64_fp_lr_shared: fp_lr_shared,
            // Reflected whatever its connection: this test is about the switch, not routing.
            reflected_codes: [HypercallCode::POST_MESSAGE].into(),
            ..Scenario::for_arch(Arch::Aarch64)
        });
        let status = fast_set(
            &mut hv,
            HvInputVtl::CURRENT,
            HvRegisterName::GUEST_OS_ID,
            GUEST_OS_ID.into(),
        );
        assert_eq!(status, HvStatus::SUCCESS);
        let pc = 0x8000_1000;
        let mut call = Vtl0Call::arm64(pc, simple(HypercallCode::POST_MESSAGE), 0x5000, 0);
        for n in 4..ARM64_GPRS {
            call = call.with_register(xn(n), vtl0_x(n).into());
        }
        hv.model.vtl0().push(call.clone());
        hv.model.vtl0().push(call);
        let shared = |n: usize| n != 18 && (n < 29 || fp_lr_shared);
        let what = |n: usize| format!("X{n} (X29/X30 shared: {fp_lr_shared})");

        // The first return delivers the first call: VTL2 resumes with VTL0's shared registers
        // and its own private ones.
        let (x, effects) = hvc_all(&mut hv, 3, core::array::from_fn(vtl2_x));
        assert!(effects.advance_ip && !effects.finished);
        for (n, &value) in x.iter().enumerate().skip(4) {
            let expected = if shared(n) { vtl0_x(n) } else { vtl2_x(n) };
            assert_eq!(value, expected, "{}", what(n));
        }

        // The second return completes it: VTL0 has what VTL2 left in the shared registers and
        // its own private ones.
        assert_eq!(
            fast_set(&mut hv, vtl0(), arm_reg::XPC, (pc + 4).into()),
            HvStatus::SUCCESS
        );
        let back: [u64; ARM64_GPRS] = core::array::from_fn(|n| vtl2_x(n) | 0x100);
        let (x, _) = hvc_all(&mut hv, 3, back);
        let r = &hv.model.vtl0().results()[0];
        for (n, &left) in back.iter().enumerate() {
            let expected = if shared(n) { left } else { vtl0_x(n) };
            assert_eq!(r.register(xn(n)), u128::from(expected), "{}", what(n));
        }
        // And VTL2 its own private registers as it left them at this return.
        for n in [18, 29, 30] {
            let expected = if shared(n) { vtl0_x(n) } else { back[n] };
            assert_eq!(x[n], expected, "{}", what(n));
        }
    }
}

#[test]
fn vtl_call_from_vtl2_is_undefined() {
    let mut hv = booted();
    let (_, effects) = hvc(&mut hv, 2, [0; 18]);
    assert_eq!(effects.fault, Some(Fault::Ud));
}

/// The arm64 paravisor's undefined-instruction exception: pending, type exception, syndrome
/// (high quadword) EC 0 with IL set.
const UNDEF_EVENT: u128 = 0x0200_0000 << 64 | 1;

/// PendingEvent0 on VTL0 is stored per VTL; the call it is left on is recorded as faulted (PC
/// not advanced, X0 as VTL0 had it) and not re-delivered.
#[test]
fn a_pending_undefined_instruction_is_taken_not_re_executed() {
    let mut hv = booted();
    let pc = 0x8000_1000;
    hv.model.vtl0().push(reflected_post_message(pc));
    let (x, _) = hvc(&mut hv, 3, [0; 18]);
    let event = HvRegisterName::PENDING_EVENT0;
    assert_eq!(
        fast_set(&mut hv, vtl0(), event, UNDEF_EVENT),
        HvStatus::SUCCESS
    );
    assert_eq!(hv.model.register(0, Vtl::VTL0, event), Ok(UNDEF_EVENT));
    assert_eq!(
        fast_get(&mut hv, event),
        (HvStatus::SUCCESS, 0),
        "VTL2's own"
    );

    // Back to VTL0 with the X registers it had.
    let (_, effects) = hvc(&mut hv, 3, x);
    assert!(
        effects.finished,
        "taken, not re-delivered: the script is empty"
    );
    let results = hv.model.vtl0().results();
    assert_eq!(results.len(), 1);
    let r = &results[0];
    assert_eq!(r.pending_event(), Some(UNDEF_EVENT));
    assert_eq!((r.ip_before, r.ip_after), (pc, pc));
    assert!(!r.advanced());
    assert_eq!(r.result, u64::from(SMCCC_HV_FUNC_ID), "X0 untouched");
    assert_eq!(hv.model.register(0, Vtl::VTL0, event), Ok(0));
}

/// A lower VTL's access to a page VTL2 protected, on arm64: the GPA intercept carries the
/// stage-2 abort's syndrome (Arm ARM ESR_EL2: EC 0x24 data abort / 0x20 instruction abort from a
/// lower EL, IL, WnR for a store, DFSC/IFSC 0x0F permission fault level 3) and the exception
/// level the access came from.
#[test]
fn a_protected_access_reports_the_stage2_syndrome() {
    use crate::{Event, Vtl0Access};
    use hvdef::aarch64::HvArm64MemoryInterceptMessage;
    use zerocopy::FromBytes;
    let mut hv = booted();
    let config = hvdef::HvRegisterVsmPartitionConfig::new().with_enable_vtl_protection(true);
    let name = HvRegisterName::VSM_PARTITION_CONFIG;
    let status = fast_set(
        &mut hv,
        HvInputVtl::CURRENT,
        name,
        config.into_bits().into(),
    );
    assert_eq!(status, HvStatus::SUCCESS);
    let secret: u64 = 0x8_0000;
    let mut input = vec![0u8; 16];
    input[..8].copy_from_slice(&hvdef::HV_PARTITION_ID_SELF.to_le_bytes());
    input.extend((secret >> 12).to_le_bytes());
    let protect = rep(HypercallCode::MODIFY_VTL_PROTECTION_MASK, 1);
    assert_eq!(smccc(&mut hv, protect, &input).status(), HvStatus::SUCCESS);

    let arch = crate::Arch::Aarch64;
    let pc = 0x8000_1000;
    let store = Vtl0Access::Write {
        gpa: secret + 8,
        bytes: vec![1; 8],
    };
    let cases = [
        (
            Vtl0Call::access(arch, pc, store.clone()),
            0x24 << 26 | 1 << 25 | 1 << 6 | 0x0F,
            1,
        ),
        (
            Vtl0Call::access(arch, pc, store).at_el0(),
            0x24 << 26 | 1 << 25 | 1 << 6 | 0x0F,
            0,
        ),
        (
            Vtl0Call::access(
                arch,
                pc,
                Vtl0Access::Read {
                    gpa: secret,
                    len: 8,
                },
            ),
            0x24 << 26 | 1 << 25 | 0x0F,
            1,
        ),
        (
            Vtl0Call::access(arch, 0, Vtl0Access::Execute { gpa: secret }),
            0x20 << 26 | 1 << 25 | 0x0F,
            1,
        ),
    ];
    for (call, syndrome, el) in cases {
        hv.model.vtl0().push(call);
        hvc(&mut hv, 3, [0; 18]);
        let Some(Event::Intercept { message, .. }) = hv
            .model
            .trace()
            .events()
            .iter()
            .rev()
            .find(|e| matches!(e, Event::Intercept { .. }))
        else {
            panic!("no intercept")
        };
        assert_eq!(
            message.header.message_type,
            hvdef::HvMessageType::GPA_INTERCEPT
        );
        let (m, _) =
            HvArm64MemoryInterceptMessage::read_from_prefix(message.payload_bytes()).unwrap();
        assert_eq!(m.syndrome, syndrome, "{m:?}");
        assert_eq!(m.header.execution_state.cpl(), el);
        assert_eq!((m.header.cpsr >> 2) & 3, u64::from(el));
        // The paravisor's answer: an exception for VTL0, so the next call runs.
        fast_set(&mut hv, vtl0(), HvRegisterName::PENDING_EVENT0, UNDEF_EVENT)
            .result()
            .unwrap();
    }
    assert!(hv.mem.slice(secret, 16).iter().all(|&b| b == 0));
}

/// arm64's VTL0 initial context (PC, SP_EL1, the EL1 system registers, X18, CPSR) set by VTL2
/// in one memory-based SetVpRegisters, target VTL0: each lands in VTL0's register file only.
#[test]
fn vtl2_sets_vtl0_initial_context_in_one_call() {
    use hvdef::aarch64::reg::*;
    let mut hv = booted();
    let regs = [
        (XPC, 0x4800_0040),
        (XSP_ELX, 0x4801_0000),
        (SCTLR_EL1, 0x30D0_0800),
        (MAIR_EL1, 0xFF),
        (TCR_EL1, 0x19),
        (VBAR_EL1, 0x4800_0800),
        (TTBR0_EL1, 0x4802_0000),
        (TTBR1_EL1, 0x1_0000_4803_0000),
        (X18, 0x18),
        (CPSR, 0x3C5),
    ];
    let vtl2_sctlr = hv.model.register(0, Vtl::VTL2, SCTLR_EL1).unwrap();
    let input = set_input(HV_VP_INDEX_SELF, vtl0(), &regs);
    let out = smccc(
        &mut hv,
        rep(HypercallCode::SET_VP_REGISTERS, regs.len()),
        &input,
    );
    assert_eq!(
        (out.status(), out.reps_completed()),
        (HvStatus::SUCCESS, 10)
    );
    for (name, value) in regs {
        assert_eq!(hv.model.register(0, Vtl::VTL0, name), Ok(value), "{name:?}");
    }
    assert_eq!(hv.model.register(0, Vtl::VTL2, SCTLR_EL1), Ok(vtl2_sctlr));
    // Every arm64 register is 64 bits wide.
    let input = set_input(HV_VP_INDEX_SELF, vtl0(), &[(XPC, 1u128 << 64)]);
    let out = smccc(&mut hv, rep(HypercallCode::SET_VP_REGISTERS, 1), &input);
    assert_eq!(out.status(), HvStatus::INVALID_REGISTER_VALUE);
}
