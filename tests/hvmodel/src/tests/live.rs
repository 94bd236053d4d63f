//! Live mode: the lower VTL is real code an in-VM host runs; its exits come in through
//! `Model::lower_exit` and are served exactly as scripted calls are.

use hvdef::aarch64::{reg as arm_reg, HvArm64HypercallInterceptMessage, SMCCC_HV_FUNC_ID};
use hvdef::{
    HvInputVtl, HvInterceptAccessType, HvMessageType, HvRegisterName, HvRegisterVsmPartitionConfig,
    HvStatus, HvVpAssistPage, HvVtlEntryReason, HypercallCode, HypercallOutput, Vtl,
};
use zerocopy::FromBytes;

use super::*;
use crate::{Arch, Event, LiveError, LowerExit, SwitchRegs, ARM64_GPRS};

/// An arm64 partition booted as the paravisor boots it (guest OS id, the intercept for unknown
/// connections, an assist page with the intercept page on), in live mode.
fn live() -> Hv {
    let mut hv = Hv::new(Scenario::for_arch(Arch::Aarch64));
    for (name, value) in [
        (HvRegisterName::GUEST_OS_ID, u128::from(GUEST_OS_ID)),
        (HvRegisterName::VP_ASSIST_PAGE, (ASSIST | 1).into()),
        (
            HvRegisterName::VSM_PARTITION_CONFIG,
            HvRegisterVsmPartitionConfig::new()
                .with_intercept_page(true)
                .with_enable_vtl_protection(true)
                .into_bits()
                .into(),
        ),
    ] {
        assert_eq!(
            set(&mut hv, HvInputVtl::CURRENT, name, value),
            HvStatus::SUCCESS
        );
    }
    let install =
        super::hypercalls::install_input(hvdef::HvInterceptType::UNKNOWN_SYNIC_CONNECTION.0);
    assert_eq!(
        call(&mut hv, simple(HypercallCode::INSTALL_INTERCEPT), &install),
        HvStatus::SUCCESS
    );
    hv.model.vtl0().set_live(true);
    hv
}

/// VTL2's `hvc #imm` with X0..X30 = `x`.
fn hvc(hv: &mut Hv, imm: u16, x: &mut [u64; ARM64_GPRS]) -> crate::Effects {
    hv.model.hvc(0, imm, x, &mut hv.mem)
}

fn call(hv: &mut Hv, control: hvdef::Control, input: &[u8]) -> HvStatus {
    hv.mem.write(IN, input).unwrap();
    let mut x = [0; ARM64_GPRS];
    (x[0], x[1], x[2], x[3]) = (SMCCC_HV_FUNC_ID.into(), control.into_bits(), IN, OUT);
    let effects = hvc(hv, 0, &mut x);
    assert_eq!(effects.fault, None);
    HypercallOutput::from_bits(x[0]).status()
}

/// VTL2's SetVpRegisters of one register, memory form.
fn set(hv: &mut Hv, vtl: HvInputVtl, name: HvRegisterName, value: u128) -> HvStatus {
    let input = set_input(hvdef::HV_VP_INDEX_SELF, vtl, &[(name, value)]);
    call(hv, rep(HypercallCode::SET_VP_REGISTERS, 1), &input)
}

/// What the glue does when VTL0 exits: VTL0's registers into the model, then the exit.
fn exit(
    hv: &mut Hv,
    x: &[u64; ARM64_GPRS],
    pc: u64,
    exit: LowerExit,
) -> (Result<crate::Effects, LiveError>, [u64; ARM64_GPRS]) {
    for (n, value) in x.iter().enumerate() {
        let name = HvRegisterName(arm_reg::X0.0 + n as u32);
        assert!(hv.model.set_vp_state(0, Vtl::VTL0, name, (*value).into()));
    }
    hv.model.set_vp_state(0, Vtl::VTL0, arm_reg::XPC, pc.into());
    let mut regs = [0; ARM64_GPRS];
    let result = hv
        .model
        .lower_exit(0, exit, SwitchRegs::Aarch64(&mut regs), &mut hv.mem);
    (result, regs)
}

fn vtl0_x(n: usize) -> u64 {
    0x0a0a_0000_0000_0000 | n as u64
}

fn state(hv: &Hv, name: HvRegisterName) -> u64 {
    hv.model.vp_state(0, Vtl::VTL0, name).expect("VP 0") as u64
}

#[test]
fn a_vtl_return_with_nothing_queued_runs_the_live_vtl0() {
    let mut hv = live();
    let mut x = [0x2222; ARM64_GPRS];
    let effects = hvc(&mut hv, 3, &mut x);
    assert!(effects.lower_runs && !effects.finished, "{effects:?}");
    assert_eq!(hv.model.active_vtl(0), Some(Vtl::VTL0));
    let ret = hv.model.trace().last_hypercall().expect("recorded");
    assert_eq!(
        (ret.code, ret.vtl),
        (HypercallCode::VTL_RETURN, Vtl::VTL2),
        "the caller's VTL, not the one it returned to"
    );
    assert_eq!(
        state(&hv, arm_reg::X0),
        0x2222,
        "the shared X0 went with it"
    );
}

#[test]
fn a_reflected_call_enters_vtl2_with_vtl0s_registers_and_its_answer_reaches_vtl0() {
    let mut hv = live();
    let mut x = [0; ARM64_GPRS];
    hvc(&mut hv, 3, &mut x);
    let pc = 0x4800_1000;
    let control = simple(HypercallCode::POST_MESSAGE);
    hv.mem
        .write(
            0x5000,
            &super::hypercalls::post_message_input(UNKNOWN_CONNECTION),
        )
        .unwrap();
    let mut x: [u64; ARM64_GPRS] = core::array::from_fn(vtl0_x);
    (x[0], x[1], x[2], x[3]) = (SMCCC_HV_FUNC_ID.into(), control.into_bits(), 0x5000, 0);
    let (effects, vtl2) = exit(&mut hv, &x, pc, LowerExit::Hypercall { immediate: 0 });
    let effects = effects.expect("taken");
    assert!(effects.advance_ip && !effects.lower_runs, "{effects:?}");
    assert_eq!(hv.model.active_vtl(0), Some(Vtl::VTL2));
    let page = HvVpAssistPage::read_from_prefix(hv.mem.slice(ASSIST, 0x1000))
        .unwrap()
        .0;
    assert_eq!(page.vtl_control.entry_reason, HvVtlEntryReason::INTERCEPT);
    assert_eq!(
        page.intercept_message.header.message_type,
        HvMessageType::HYPERCALL_INTERCEPT
    );
    let (hc, _) =
        HvArm64HypercallInterceptMessage::read_from_prefix(page.intercept_message.payload_bytes())
            .unwrap();
    assert_eq!(hc.header.pc, pc);
    assert_eq!(
        hc.x[..],
        x[..18],
        "the message carries VTL0's X0..X17 as they were"
    );
    assert_eq!(
        &vtl2[..18],
        &x[..18],
        "VTL2 resumes with VTL0's shared registers"
    );
    assert_eq!(vtl2[18], 0, "and its own X18 (it left 0)");

    // VTL2 answers: PC past the hvc, the status in the shared X0; back to VTL0.
    assert_eq!(
        set(&mut hv, vtl0(), arm_reg::XPC, (pc + 4).into()),
        HvStatus::SUCCESS
    );
    let mut x = vtl2;
    x[0] = HypercallOutput::new()
        .with_status(HvStatus::INVALID_CONNECTION_ID)
        .into_bits();
    let effects = hvc(&mut hv, 3, &mut x);
    assert!(effects.lower_runs, "{effects:?}");
    assert_eq!(state(&hv, arm_reg::XPC), pc + 4);
    assert_eq!(state(&hv, arm_reg::X0), x[0]);
    let result = hv.model.vtl0().take_live_result(0).expect("a result");
    assert!(result.advanced() && result.reached_vtl2);
    assert_eq!(result.status(), HvStatus::INVALID_CONNECTION_ID);
    assert!(
        hv.model.vtl0().results().is_empty(),
        "live results are not kept"
    );
    assert_eq!(hv.model.vtl0().take_live_result(0), None, "taken once");
}

#[test]
fn a_call_the_hypervisor_serves_itself_never_leaves_vtl0() {
    let mut hv = live();
    hvc(&mut hv, 3, &mut [0; ARM64_GPRS]);
    let pc = 0x4800_2000;
    let mut x = [0; ARM64_GPRS];
    x[0] = hvdef::aarch64::SMCCC_VENDOR_HYP_UID.into();
    let (effects, _) = exit(&mut hv, &x, pc, LowerExit::Hypercall { immediate: 0 });
    let effects = effects.expect("taken");
    assert!(effects.lower_runs, "{effects:?}");
    assert_eq!(hv.model.active_vtl(0), Some(Vtl::VTL0));
    assert_eq!(state(&hv, arm_reg::XPC), pc + 4, "completed");
    assert_eq!(
        state(&hv, arm_reg::X0),
        u64::from(hvdef::aarch64::HV_VENDOR_HYP_UID[0])
    );
    let result = hv.model.vtl0().take_live_result(0).expect("a result");
    assert!(!result.reached_vtl2);
}

#[test]
fn a_protected_access_enters_vtl2_and_the_exception_it_leaves_is_handed_to_the_glue() {
    let mut hv = live();
    let secret: u64 = 0x8_0000;
    let mut input = vec![0u8; 16];
    input[..8].copy_from_slice(&hvdef::HV_PARTITION_ID_SELF.to_le_bytes());
    input.extend((secret >> 12).to_le_bytes());
    let protect = rep(HypercallCode::MODIFY_VTL_PROTECTION_MASK, 1);
    assert_eq!(call(&mut hv, protect, &input), HvStatus::SUCCESS);
    assert_eq!(
        hv.model
            .take_protection_changes()
            .into_iter()
            .collect::<Vec<_>>(),
        [secret >> 12]
    );
    assert!(hv.model.take_protection_changes().is_empty());
    hvc(&mut hv, 3, &mut [0; ARM64_GPRS]);

    // An access the model allows is the glue's mistake, not VTL0's.
    let pc = 0x4800_3000;
    let x = [0; ARM64_GPRS];
    let allowed = LowerExit::Access {
        gpa: secret + 0x1000,
        len: 8,
        access: HvInterceptAccessType::WRITE,
        delivering_event: false,
    };
    assert_eq!(
        exit(&mut hv, &x, pc, allowed).0,
        Err(LiveError::AccessAllowed {
            gpa: secret + 0x1000,
            access: HvInterceptAccessType::WRITE
        })
    );
    let store = LowerExit::Access {
        gpa: secret + 8,
        len: 8,
        access: HvInterceptAccessType::WRITE,
        delivering_event: false,
    };
    let effects = exit(&mut hv, &x, pc, store).0.expect("taken");
    assert!(!effects.lower_runs);
    let page = HvVpAssistPage::read_from_prefix(hv.mem.slice(ASSIST, 0x1000))
        .unwrap()
        .0;
    assert_eq!(
        page.intercept_message.header.message_type,
        HvMessageType::GPA_INTERCEPT
    );

    // VTL2 leaves VTL0 an exception and returns: the glue gets it once, the model clears it.
    let event = 0x1234_0001_u128;
    assert_eq!(
        set(&mut hv, vtl0(), HvRegisterName::PENDING_EVENT0, event),
        HvStatus::SUCCESS
    );
    let effects = hvc(&mut hv, 3, &mut [0; ARM64_GPRS]);
    assert!(effects.lower_runs);
    let result = hv.model.vtl0().take_live_result(0).expect("a result");
    assert_eq!(result.pending_event(), Some(event));
    assert_eq!(
        result.ip_after, pc,
        "not re-executed by the model: VTL0 takes the exception"
    );
    assert_eq!(state(&hv, HvRegisterName::PENDING_EVENT0), 0);
}

#[test]
fn exits_the_model_cannot_take_are_named() {
    let mut hv = Hv::new(Scenario::for_arch(Arch::Aarch64));
    let x = [0; ARM64_GPRS];
    let hypercall = LowerExit::Hypercall { immediate: 0 };
    assert_eq!(exit(&mut hv, &x, 0, hypercall).0, Err(LiveError::NotLive));
    hv.model.vtl0().set_live(true);
    assert_eq!(
        exit(&mut hv, &x, 0, hypercall).0,
        Err(LiveError::NotInLowerVtl(Vtl::VTL2)),
        "VP 0 runs VTL2 until its first VtlReturn"
    );
    let mut regs = [0; ARM64_GPRS];
    assert_eq!(
        hv.model
            .lower_exit(9, hypercall, SwitchRegs::Aarch64(&mut regs), &mut hv.mem),
        Err(LiveError::NoSuchVp(9))
    );
}

/// x64, live: VTL0 is real code too, so its own hypercall page (VTL-private, TLFS vsm.md) is
/// written into its memory when it enables it, as VTL2's is: it calls into it. Scripted, VTL0
/// has no code and the page stays out of memory.
#[test]
fn a_live_x64_vtl0_gets_its_hypercall_page_in_memory() {
    use hvdef::x86_64::HvX64Msr;
    const VTL0_PAGE: u64 = 0x5_0000;
    for live in [false, true] {
        let mut hv = Hv::x64();
        hv.boot_x64();
        hv.model.vtl0().set_live(live);
        if !live {
            // Scripted: an empty script, so VTL0 would never run; put it in VTL0 by hand.
            hv.model.vtl0().set_live(true);
        }
        let mut regs = crate::X64HypercallRegs {
            rcx: u64::from(HypercallCode::VTL_RETURN.0),
            ..Default::default()
        };
        let effects = hv.model.vmcall(0, &mut regs, &mut hv.mem);
        assert!(effects.lower_runs, "VTL0 runs after the first VtlReturn");
        hv.model.vtl0().set_live(live);
        assert_eq!(hv.model.active_vtl(0), Some(Vtl::VTL0));
        hv.wrmsr(HvX64Msr::HV_X64_MSR_GUEST_OS_ID, GUEST_OS_ID)
            .unwrap();
        let effects = hv
            .wrmsr(HvX64Msr::HV_X64_MSR_HYPERCALL, VTL0_PAGE | 1)
            .unwrap();
        assert_eq!(
            hv.rdmsr(HvX64Msr::HV_X64_MSR_HYPERCALL),
            Ok(VTL0_PAGE | 1),
            "VTL0's own MSR"
        );
        let page = hv.mem.slice(VTL0_PAGE, 4);
        if live {
            assert_eq!(page, [0x0F, 0x01, 0xD9, 0xC3], "vmmcall; ret");
            assert!(matches!(
                effects.hypercall_page,
                Some(crate::HypercallPageChange::Enabled { gpa: VTL0_PAGE, .. })
            ));
        } else {
            assert_eq!(page, [0; 4], "scripted: not in memory");
            assert_eq!(effects.hypercall_page, None);
        }
        assert_eq!(
            hv.mem.slice(HYPERCALL_PAGE, 4),
            [0x0F, 0x01, 0xD9, 0xC3],
            "VTL2's page stays"
        );
    }
}

#[test]
fn with_tracing_off_the_answers_are_the_same_and_nothing_is_kept() {
    let mut traced = live();
    let mut quiet = live();
    quiet.model.set_tracing(false);
    let quiet_before = quiet.model.trace().events().len();
    for hv in [&mut traced, &mut quiet] {
        let mut x = [0; ARM64_GPRS];
        assert!(hvc(hv, 3, &mut x).lower_runs);
        let mut x = [0; ARM64_GPRS];
        x[0] = hvdef::aarch64::SMCCC_VENDOR_HYP_UID.into();
        let (effects, _) = exit(hv, &x, 0x4800_2000, LowerExit::Hypercall { immediate: 0 });
        assert!(effects.unwrap().lower_runs);
    }
    assert_eq!(state(&traced, arm_reg::X0), state(&quiet, arm_reg::X0));
    assert_eq!(state(&traced, arm_reg::XPC), state(&quiet, arm_reg::XPC));
    assert!(traced.model.trace().events().len() > quiet_before);
    assert_eq!(
        quiet.model.trace().events().len(),
        quiet_before,
        "nothing kept"
    );
    assert_eq!(quiet.model.take_trace().events().len(), quiet_before);
    quiet.model.vtl0().take_live_result(0);
    let mut x = [0; ARM64_GPRS];
    x[0] = hvdef::aarch64::SMCCC_VENDOR_HYP_UID.into();
    exit(
        &mut quiet,
        &x,
        0x4800_2004,
        LowerExit::Hypercall { immediate: 0 },
    )
    .0
    .unwrap();
    assert!(
        quiet.model.trace().events().is_empty(),
        "still off after take_trace"
    );
}

/// The protected page `secret` and VTL0 running on VP 0.
fn protect_and_run(hv: &mut Hv, secret: u64) {
    let mut input = vec![0u8; 16];
    input[..8].copy_from_slice(&hvdef::HV_PARTITION_ID_SELF.to_le_bytes());
    input.extend((secret >> 12).to_le_bytes());
    let protect = rep(HypercallCode::MODIFY_VTL_PROTECTION_MASK, 1);
    assert_eq!(call(hv, protect, &input), HvStatus::SUCCESS);
    hvc(hv, 3, &mut [0; ARM64_GPRS]);
}

/// The execution state of the GPA intercept in the assist page.
fn intercepted_state(hv: &Hv) -> hvdef::aarch64::HvArm64VpExecutionState {
    let page = HvVpAssistPage::read_from_prefix(hv.mem.slice(ASSIST, 0x1000))
        .unwrap()
        .0;
    assert_eq!(
        page.intercept_message.header.message_type,
        HvMessageType::GPA_INTERCEPT
    );
    hvdef::aarch64::HvArm64MemoryInterceptMessage::read_from_prefix(
        page.intercept_message.payload_bytes(),
    )
    .unwrap()
    .0
    .header
    .execution_state
}

/// A live access the CPU made while it delivered an exception (the glue reads it off the exit:
/// x64 EXITINTINFO valid on the nested page fault) reaches VTL2 with `interruption_pending`
/// set, as a scripted `Vtl0Call::delivering_event` does; an ordinary one with it clear.
#[test]
fn a_live_access_made_while_delivering_an_event_says_so_in_its_intercept() {
    let secret: u64 = 0x8_0000;
    for delivering_event in [false, true] {
        let mut hv = live();
        protect_and_run(&mut hv, secret);
        let read = LowerExit::Access {
            gpa: secret + 0x60,
            len: 1,
            access: HvInterceptAccessType::READ,
            delivering_event,
        };
        let effects = exit(&mut hv, &[0; ARM64_GPRS], 0x4800_3000, read)
            .0
            .expect("taken");
        assert!(effects.advance_ip && !effects.lower_runs, "{effects:?}");
        let state = intercepted_state(&hv);
        assert_eq!(state.interruption_pending(), delivering_event);
        assert_eq!(state.vtl(), 0);
    }
}

/// An exception VTL0 cannot deliver (x64: the shutdown exit of a triple fault) with VTL2's
/// InterceptUnrecoverableException clear resets the partition: a PartitionReset, the run is
/// finished, VTL2 never hears of it. With the bit set VTL2 gets an
/// `HvMessageTypeUnrecoverableException` with the common intercept header only.
#[test]
fn a_live_unrecoverable_exception_resets_the_partition_unless_vtl2_intercepts_it() {
    let mut hv = live();
    hvc(&mut hv, 3, &mut [0; ARM64_GPRS]);
    let effects = exit(
        &mut hv,
        &[0; ARM64_GPRS],
        0x4800_3000,
        LowerExit::Unrecoverable,
    )
    .0
    .expect("taken");
    assert!(effects.finished && !effects.lower_runs, "{effects:?}");
    let events = hv.model.trace().events();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::PartitionReset { vp: 0 })));
    assert!(
        !events.iter().any(|e| matches!(e, Event::Intercept { .. })),
        "{events:?}"
    );
    assert!(hv.model.vtl0().live(), "still a live VTL0's partition");

    let mut hv = live();
    let config = HvRegisterVsmPartitionConfig::new()
        .with_intercept_page(true)
        .with_enable_vtl_protection(true)
        .with_intercept_unrecoverable_exception(true);
    assert_eq!(
        set(
            &mut hv,
            HvInputVtl::CURRENT,
            HvRegisterName::VSM_PARTITION_CONFIG,
            config.into_bits().into()
        ),
        HvStatus::SUCCESS
    );
    hvc(&mut hv, 3, &mut [0; ARM64_GPRS]);
    let effects = exit(
        &mut hv,
        &[0; ARM64_GPRS],
        0x4800_3000,
        LowerExit::Unrecoverable,
    )
    .0
    .expect("taken");
    assert!(effects.advance_ip && !effects.finished, "{effects:?}");
    let page = HvVpAssistPage::read_from_prefix(hv.mem.slice(ASSIST, 0x1000))
        .unwrap()
        .0;
    assert_eq!(
        page.intercept_message.header.message_type,
        HvMessageType::UNRECOVERABLE_EXCEPTION
    );
    assert_eq!(
        usize::from(page.intercept_message.header.payload_size),
        size_of::<hvdef::aarch64::HvArm64InterceptMessageHeader>()
    );
    assert!(!hv
        .model
        .trace()
        .events()
        .iter()
        .any(|e| matches!(e, Event::PartitionReset { .. })));
}

/// The cases the former gdbstub suite `mock_ud` stated, as a live VTL0 brings them: the VTL
/// entry is the `hvc` immediate the glue passes, the mode the CPSR it wrote. `hvc #3` from VTL0
/// (the lowest VTL)
/// is the hypervisor's #UD, the IP left on it and VTL2 never entered; `hvc #2` enters VTL2 with
/// entry reason VTL_CALL and VTL0 resumes past it; the VtlCall code through SMCCC is an
/// unimplemented code; a call from EL0 (which a CPU never lets exit: `hvc` is undefined there)
/// is #UD too, and a protected access from EL0 reaches VTL2 with CPL 0 in its intercept.
#[test]
fn a_live_vtl0s_vtl_entries_and_el0_are_decided_as_the_tlfs_says() {
    use crate::{Event, Fault, Outcome};
    let mut hv = live();
    let secret: u64 = 0x8_0000;
    let mut input = vec![0u8; 16];
    input[..8].copy_from_slice(&hvdef::HV_PARTITION_ID_SELF.to_le_bytes());
    input.extend((secret >> 12).to_le_bytes());
    let protect = rep(HypercallCode::MODIFY_VTL_PROTECTION_MASK, 1);
    assert_eq!(call(&mut hv, protect, &input), HvStatus::SUCCESS);
    hvc(&mut hv, 3, &mut [0; ARM64_GPRS]);
    let pc = 0x4800_4000;
    let mut x = [0; ARM64_GPRS];
    x[0] = SMCCC_HV_FUNC_ID.into();

    let (effects, _) = exit(&mut hv, &x, pc, LowerExit::Hypercall { immediate: 3 });
    assert!(effects.expect("taken").lower_runs);
    let r = hv.model.vtl0().take_live_result(0).expect("a result");
    assert_eq!(r.hypervisor_fault, Some(Fault::Ud));
    assert!(!r.reached_vtl2);
    assert_eq!(state(&hv, arm_reg::XPC), pc, "the IP left on the hvc");
    assert_eq!(state(&hv, arm_reg::X0), u64::from(SMCCC_HV_FUNC_ID));
    let last = hv.model.trace().last_hypercall().expect("traced");
    assert_eq!(
        (last.vtl, last.code, last.outcome),
        (
            Vtl::VTL0,
            HypercallCode::VTL_RETURN,
            Outcome::Fault(Fault::Ud)
        )
    );

    let (effects, _) = exit(&mut hv, &x, pc, LowerExit::Hypercall { immediate: 2 });
    assert!(!effects.expect("taken").lower_runs, "VTL2 runs");
    assert_eq!(hv.model.active_vtl(0), Some(Vtl::VTL2));
    assert!(matches!(
        hv.model.trace().events().last(),
        Some(Event::LowerVtlCall { vtl: Vtl::VTL0, .. })
    ));
    let page = HvVpAssistPage::read_from_prefix(hv.mem.slice(ASSIST, 0x1000))
        .unwrap()
        .0;
    assert_eq!(page.vtl_control.entry_reason, HvVtlEntryReason::VTL_CALL);
    assert!(hvc(&mut hv, 3, &mut x).lower_runs);
    assert_eq!(state(&hv, arm_reg::XPC), pc + 4, "back past the hvc #2");

    let mut code_0x11 = x;
    code_0x11[1] = HypercallCode::VTL_CALL.0.into();
    let (effects, _) = exit(
        &mut hv,
        &code_0x11,
        pc,
        LowerExit::Hypercall { immediate: 0 },
    );
    assert!(effects.expect("taken").lower_runs, "never VTL2's");
    assert_eq!(
        HypercallOutput::from_bits(state(&hv, arm_reg::X0)).status(),
        HvStatus::INVALID_HYPERCALL_CODE
    );

    hv.model.set_vp_state(
        0,
        Vtl::VTL0,
        arm_reg::CPSR,
        crate::partition::ARM64_CPSR_EL0T.into(),
    );
    let mut post = x;
    post[1] = simple(HypercallCode::POST_MESSAGE).into_bits();
    let (effects, _) = exit(&mut hv, &post, pc, LowerExit::Hypercall { immediate: 0 });
    assert!(effects.expect("taken").lower_runs);
    let r = hv.model.vtl0().take_live_result(0).expect("a result");
    assert_eq!(r.hypervisor_fault, Some(Fault::Ud), "EL0");
    assert!(!r.reached_vtl2);

    let load = LowerExit::Access {
        gpa: secret,
        len: 8,
        access: HvInterceptAccessType::READ,
        delivering_event: false,
    };
    let effects = exit(&mut hv, &x, pc, load).0.expect("taken");
    assert!(!effects.lower_runs);
    let page = HvVpAssistPage::read_from_prefix(hv.mem.slice(ASSIST, 0x1000))
        .unwrap()
        .0;
    let m = hvdef::aarch64::HvArm64MemoryInterceptMessage::read_from_prefix(
        page.intercept_message.payload_bytes(),
    )
    .unwrap()
    .0;
    assert_eq!(m.header.execution_state.cpl(), 0, "from EL0");
    assert_eq!(m.header.cpsr, crate::partition::ARM64_CPSR_EL0T);
}
