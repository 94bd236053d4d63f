//! The scripted VTL0 on x64: intercept delivery through the assist page and through SINT0 (with
//! the EOM protocol), completion through SetVpRegisters and the assist page's return fields,
//! re-execution, and the #UD rules of VTL call and return.

use hvdef::x86_64::{HvX64HypercallInterceptMessage, HvX64Msr};
use hvdef::{
    HvError, HvInputVtl, HvMessage, HvMessageType, HvRegisterName, HvRegisterVsmPartitionConfig,
    HvStatus, HvVpAssistPage, HvVtlEntryReason, HypercallCode, HypercallOutput, Vtl,
};
use zerocopy::{FromBytes, FromZeros};

use super::*;
use crate::{Delivery, Outcome, SintInterrupt, Vtl0Call};

const VTL0_RIP: u64 = 0x40_1000;
const VTL0_OUT: u64 = 0x6000;

fn vtl_return(hv: &mut Hv, fast: bool) -> (X64HypercallRegs, Effects) {
    hv.vmcall(X64HypercallRegs {
        rcx: HypercallCode::VTL_RETURN.0.into(),
        rax: fast.into(),
        ..Default::default()
    })
}

fn enable_intercept_page(hv: &mut Hv) {
    let config = HvRegisterVsmPartitionConfig::new().with_intercept_page(true);
    let name = HvRegisterName::VSM_PARTITION_CONFIG;
    let out = hv.set_regs(HvInputVtl::CURRENT, &[(name, config.into_bits().into())]);
    assert_eq!(out.status(), HvStatus::SUCCESS);
}

fn assist_page(hv: &Hv) -> HvVpAssistPage {
    HvVpAssistPage::read_from_prefix(hv.mem.slice(ASSIST, 0x1000))
        .unwrap()
        .0
}

fn payload(message: &HvMessage) -> HvX64HypercallInterceptMessage {
    HvX64HypercallInterceptMessage::read_from_prefix(message.payload_bytes())
        .unwrap()
        .0
}

fn sim_slot0(hv: &Hv) -> HvMessage {
    HvMessage::read_from_prefix(hv.mem.slice(SIMP, 256))
        .unwrap()
        .0
}

/// Writes the assist page's `vtl_control` return fields (RAX at 0x10, RCX at 0x18).
fn set_return_registers(hv: &mut Hv, rax: u64, rcx: u64) {
    hv.mem.write(ASSIST + 0x10, &rax.to_le_bytes()).unwrap();
    hv.mem.write(ASSIST + 0x18, &rcx.to_le_bytes()).unwrap();
}

fn post_message_call(rip: u64) -> Vtl0Call {
    Vtl0Call::x64(rip, simple(HypercallCode::POST_MESSAGE), 0x5000, 0)
        .with_register(x64_reg::RAX, 0xDEAD)
        .with_memory(
            0x5000,
            &super::hypercalls::post_message_input(UNKNOWN_CONNECTION),
        )
        .with_output(VTL0_OUT, 8)
}

fn booted() -> Hv {
    let mut hv = Hv::x64();
    hv.boot_x64();
    hv
}

#[test]
fn vtl_return_delivers_through_the_assist_page_and_resumes_vtl2() {
    let mut hv = booted();
    enable_intercept_page(&mut hv);
    hv.model.vtl0().push(post_message_call(VTL0_RIP));
    let (regs, effects) = vtl_return(&mut hv, false);
    assert!(effects.advance_ip, "the VtlReturn returns into VTL2");
    assert!(!effects.finished);
    assert_eq!(effects.fault, None);

    let page = assist_page(&hv);
    assert_eq!(page.vtl_control.entry_reason, HvVtlEntryReason::INTERCEPT);
    let message = page.intercept_message;
    assert_eq!(
        message.header.message_type,
        HvMessageType::HYPERCALL_INTERCEPT
    );
    assert_eq!(message.header.payload_size, 0xD0);
    let hc = payload(&message);
    assert_eq!(hc.header.vp_index, 0);
    assert_eq!(hc.header.instruction_length(), 3);
    assert_eq!(hc.header.rip, VTL0_RIP);
    assert_eq!(hc.header.cs_segment.selector, 0x8);
    let state = hc.header.execution_state;
    assert_eq!(
        (state.cpl(), state.vtl(), state.cr0_pe(), state.efer_lma()),
        (0, 0, true, true)
    );
    assert_eq!(hc.rcx, simple(HypercallCode::POST_MESSAGE).into_bits());
    assert_eq!((hc.rdx, hc.r8, hc.rax), (0x5000, 0, 0xDEAD));
    assert_eq!(
        hv.mem.slice(0x5000, 4),
        UNKNOWN_CONNECTION.to_le_bytes(),
        "VTL0's input list is in memory"
    );
    // VTL2 resumes with the GPRs it shares with VTL0.
    assert_eq!((regs.rcx, regs.rdx, regs.rax), (hc.rcx, 0x5000, 0xDEAD));
    let intercepts = hv.model.trace().intercepts();
    assert_eq!(intercepts.len(), 1);
    assert_eq!(intercepts[0].0, Delivery::AssistPage);
    assert_eq!(
        hv.model.vtl0().in_flight(0),
        Some(&post_message_call(VTL0_RIP))
    );
}

#[test]
fn paravisor_completes_the_vtl0_call() {
    let mut hv = booted();
    enable_intercept_page(&mut hv);
    hv.model.vtl0().push(post_message_call(VTL0_RIP));
    vtl_return(&mut hv, false);

    let result = HypercallOutput::new().with_status(HvError::INSUFFICIENT_BUFFERS.status());
    set_return_registers(&mut hv, result.into_bits(), 0x77);
    assert_eq!(
        hv.set_regs(vtl0(), &[(RIP, (VTL0_RIP + 3).into())])
            .status(),
        HvStatus::SUCCESS
    );
    hv.mem.write(VTL0_OUT, b"result!!").unwrap();
    let (_, effects) = vtl_return(&mut hv, false);
    assert!(effects.finished, "the script is empty");
    assert!(!effects.advance_ip);

    let results = hv.model.vtl0().results();
    assert_eq!(results.len(), 1);
    let r = &results[0];
    assert_eq!((r.index, r.attempt, r.vtl), (0, 0, Vtl::VTL0));
    assert_eq!(r.status(), HvStatus::INSUFFICIENT_BUFFERS);
    assert_eq!((r.ip_before, r.ip_after), (VTL0_RIP, VTL0_RIP + 3));
    assert!(r.advanced());
    assert_eq!(r.register(x64_reg::RCX), 0x77);
    assert_eq!(r.output, b"result!!");
    assert!(matches!(
        hv.model.trace().last_hypercall().unwrap().outcome,
        Outcome::VtlSwitch { finished: true }
    ));
}

#[test]
fn fast_vtl_return_restores_nothing() {
    let mut hv = booted();
    enable_intercept_page(&mut hv);
    hv.model.vtl0().push(post_message_call(VTL0_RIP));
    vtl_return(&mut hv, false);
    set_return_registers(&mut hv, 0x13, 0x77);
    hv.set_regs(vtl0(), &[(RIP, (VTL0_RIP + 3).into())])
        .result()
        .unwrap();
    vtl_return(&mut hv, true);
    let r = &hv.model.vtl0().results()[0];
    assert_eq!(r.result, 0xDEAD, "RAX as VTL0 left it");
    assert_eq!(
        r.register(x64_reg::RCX),
        simple(HypercallCode::POST_MESSAGE).into_bits().into()
    );
}

#[test]
fn every_shared_gpr_moves_between_the_vtls() {
    let mut hv = booted();
    enable_intercept_page(&mut hv);
    let first = post_message_call(VTL0_RIP)
        .with_register(x64_reg::RBX, 0x1111)
        .with_register(x64_reg::RBP, 0x5555)
        .with_register(x64_reg::R9, 0x9999)
        .with_register(x64_reg::R15, 0xF0F0);
    hv.model.vtl0().push(first);
    hv.model.vtl0().push(post_message_call(VTL0_RIP + 0x10));
    // What VTL2 holds before its first VtlReturn becomes VTL0's (RAX/RCX aside), and the
    // scripted registers override it at delivery.
    let (regs, _) = hv.vmcall(X64HypercallRegs {
        rcx: HypercallCode::VTL_RETURN.0.into(),
        rsi: 0x5151,
        r12: 0x1212,
        ..Default::default()
    });
    // VTL2 resumes with VTL0's GPRs: the scripted ones and what it left in the others.
    assert_eq!(
        (regs.rbx, regs.rbp, regs.r9, regs.r15),
        (0x1111, 0x5555, 0x9999, 0xF0F0)
    );
    assert_eq!(
        (regs.rsi, regs.r12, regs.rdx, regs.rax),
        (0x5151, 0x1212, 0x5000, 0xDEAD)
    );

    // Whatever VTL2 leaves in the shared GPRs at the VtlReturn is what VTL0 resumes with,
    // except RAX/RCX (vtl_control on a non-fast return).
    set_return_registers(&mut hv, 0, 0x77);
    hv.set_regs(vtl0(), &[(RIP, (VTL0_RIP + 3).into())])
        .result()
        .unwrap();
    let mut back = regs;
    (back.rax, back.rcx) = (0, HypercallCode::VTL_RETURN.0.into());
    (back.rbx, back.rdi, back.r8, back.r13) = (0xB0B0, 0xD1D1, 0x8888, 0x1313);
    let (next, _) = hv.vmcall(back);
    let r = &hv.model.vtl0().results()[0];
    for (name, value) in [
        (x64_reg::RBX, 0xB0B0),
        (x64_reg::RDI, 0xD1D1),
        (x64_reg::R8, 0x8888),
        (x64_reg::R13, 0x1313),
        (x64_reg::RBP, 0x5555),
        (x64_reg::RSI, 0x5151),
        (x64_reg::R9, 0x9999),
        (x64_reg::RCX, 0x77),
        (x64_reg::RAX, 0),
    ] {
        assert_eq!(r.register(name), value, "{name:?}");
    }
    // The next call starts from there: its own registers, VTL0's for the rest.
    assert_eq!((next.rbx, next.r13, next.rdx), (0xB0B0, 0x1313, 0x5000));
}

/// CR2 is shared like the GPRs (TLFS vsm.md "Shared State"): VTL2 resumes with VTL0's, and VTL0
/// with what VTL2 left in it, on a fast return too.
#[test]
fn cr2_moves_between_the_vtls() {
    let mut hv = booted();
    enable_intercept_page(&mut hv);
    hv.model
        .vtl0()
        .push(post_message_call(VTL0_RIP).with_register(x64_reg::CR2, 0xC2C2));
    let (regs, _) = hv.vmcall(X64HypercallRegs {
        rcx: HypercallCode::VTL_RETURN.0.into(),
        cr2: 0x1111,
        ..Default::default()
    });
    assert_eq!(regs.cr2, 0xC2C2, "VTL2 resumes with VTL0's CR2");
    hv.set_regs(vtl0(), &[(RIP, (VTL0_RIP + 3).into())])
        .result()
        .unwrap();
    let back = X64HypercallRegs {
        rax: 1,
        rcx: HypercallCode::VTL_RETURN.0.into(),
        cr2: 0x2F2F,
        ..regs
    };
    let (_, effects) = hv.vmcall(back);
    assert!(effects.finished);
    let r = &hv.model.vtl0().results()[0];
    assert_eq!(r.register(x64_reg::CR2), 0x2F2F, "VTL0 resumes with VTL2's");
}

#[test]
fn ip_left_in_place_re_executes_the_call() {
    // A host that reflects GetVpRegisters (a code whose trigger is not public).
    let mut hv = Hv::new(Scenario {
        reflected_codes: [HypercallCode::GET_VP_REGISTERS].into(),
        ..Scenario::default()
    });
    hv.boot_x64();
    enable_intercept_page(&mut hv);
    let control = rep(HypercallCode::GET_VP_REGISTERS, 4);
    hv.model
        .vtl0()
        .push(Vtl0Call::x64(VTL0_RIP, control, 0x5000, 0x5800));
    vtl_return(&mut hv, false);
    // The host timed out after 2 reps: forward TIMEOUT and the updated control, leave RIP.
    let timeout = HypercallOutput::new()
        .with_status(HvStatus::TIMEOUT)
        .with_reps_completed(2);
    let retry = control.with_rep_start(2).into_bits();
    set_return_registers(&mut hv, timeout.into_bits(), retry);
    let (_, effects) = vtl_return(&mut hv, false);
    assert!(!effects.finished && effects.advance_ip);
    let first = &hv.model.vtl0().results()[0];
    assert!(!first.advanced());
    assert_eq!(first.status(), HvStatus::TIMEOUT);
    let redelivered = payload(&assist_page(&hv).intercept_message);
    assert_eq!((redelivered.header.rip, redelivered.rcx), (VTL0_RIP, retry));

    set_return_registers(&mut hv, 0, 0);
    hv.set_regs(vtl0(), &[(RIP, (VTL0_RIP + 3).into())])
        .result()
        .unwrap();
    let (_, effects) = vtl_return(&mut hv, false);
    assert!(effects.finished);
    let second = &hv.model.vtl0().results()[1];
    assert_eq!((second.index, second.attempt), (0, 1));
    assert!(second.advanced());
    assert_eq!(second.status(), HvStatus::SUCCESS);
}

/// Without the intercept page the intercept lands in VTL2's SINT0 slot and raises SINT0's
/// interrupt. Nothing takes that interrupt (VTL2 runs with interrupts off and the mock cannot
/// inject one), so it stays pending, and TLFS vsm.md says a VtlReturn with an interrupt pending
/// for the higher VTL comes straight back: VTL0 does not run again.
#[test]
fn a_sint0_intercept_leaves_an_interrupt_that_calls_vtl2_straight_back() {
    let mut hv = booted(); // no intercept page: intercepts go to SINT0
    hv.model.vtl0().push(post_message_call(VTL0_RIP));
    hv.model.vtl0().push(post_message_call(VTL0_RIP + 0x100));
    let (_, effects) = vtl_return(&mut hv, false);
    let interrupt = SintInterrupt {
        vp: 0,
        vtl: Vtl::VTL2,
        sint: 0,
        vector: 0x20,
    };
    assert_eq!(effects.interrupts, [interrupt]);
    let slot = sim_slot0(&hv);
    assert_eq!(slot.header.message_type, HvMessageType::HYPERCALL_INTERCEPT);
    assert_eq!(payload(&slot).header.rip, VTL0_RIP);
    assert_eq!(
        assist_page(&hv).vtl_control.entry_reason,
        HvVtlEntryReason::INTERRUPT
    );

    // Even with the slot emptied and EOM written, the interrupt is still pending.
    hv.mem.write(SIMP, &0u32.to_le_bytes()).unwrap();
    hv.wrmsr(HvX64Msr::HV_X64_MSR_EOM, 0).unwrap();
    hv.set_regs(vtl0(), &[(RIP, (VTL0_RIP + 3).into())])
        .result()
        .unwrap();
    for _ in 0..3 {
        let (_, effects) = vtl_return(&mut hv, false);
        assert!(effects.advance_ip && !effects.finished);
    }
    assert!(hv.model.vtl0().results().is_empty(), "VTL0 never ran again");
    let reentries = hv
        .model
        .trace()
        .events()
        .iter()
        .filter(|e| matches!(e, crate::Event::PendingInterrupt { vector: 0x20, .. }))
        .count();
    assert_eq!(reentries, 3);
    assert_eq!(hv.model.trace().intercepts().len(), 1);
}

/// TLFS inter-partition-communication.md: a message goes into a slot only when it is empty; an
/// occupied slot gets MessagePending, and an EOM after the guest empties it delivers the next.
#[test]
fn sint_messages_follow_the_eom_protocol() {
    let mut hv = booted();
    let mut message = HvMessage::new_zeroed();
    message.header.message_type = HvMessageType(0x42);
    let effects = hv.model.send_message(0, 0, message, &mut hv.mem);
    assert_eq!(effects.interrupts.len(), 1);
    message.header.message_type = HvMessageType(0x43);
    let effects = hv.model.send_message(0, 0, message, &mut hv.mem);
    assert!(effects.interrupts.is_empty(), "queued behind the first");
    let slot = sim_slot0(&hv);
    assert_eq!(slot.header.message_type, HvMessageType(0x42));
    assert!(slot.header.message_flags.message_pending());
    hv.mem.write(SIMP, &0u32.to_le_bytes()).unwrap();
    let effects = hv.wrmsr(HvX64Msr::HV_X64_MSR_EOM, 0).unwrap();
    assert_eq!(effects.interrupts.len(), 1);
    let slot = sim_slot0(&hv);
    assert_eq!(slot.header.message_type, HvMessageType(0x43));
    assert!(!slot.header.message_flags.message_pending());
}

#[test]
fn host_messages_wait_for_the_synic() {
    let mut hv = Hv::x64();
    let mut message = HvMessage::new_zeroed();
    message.header.message_type = HvMessageType(0x42);
    let effects = hv.model.send_message(0, 3, message, &mut hv.mem);
    assert!(effects.interrupts.is_empty(), "SynIC not enabled yet");
    hv.wrmsr(HvX64Msr::HV_X64_MSR_SCONTROL, 1).unwrap();
    hv.wrmsr(HvX64Msr::HV_X64_MSR_SINT3, 0x33).unwrap();
    let effects = hv.wrmsr(HvX64Msr::HV_X64_MSR_SIMP, SIMP | 1).unwrap();
    assert_eq!(effects.interrupts.len(), 1);
    assert_eq!(effects.interrupts[0].vector, 0x33);
    assert_eq!(hv.mem.slice(SIMP + 3 * 256, 4), 0x42u32.to_le_bytes());
}

#[test]
fn vtl_switch_ud_rules() {
    let mut hv = booted();
    let ud = |hv: &mut Hv, rcx: u64, rax: u64| {
        let (_, effects) = hv.vmcall(X64HypercallRegs {
            rcx,
            rax,
            ..Default::default()
        });
        effects.fault
    };
    let ret = u64::from(HypercallCode::VTL_RETURN.0);
    let call = u64::from(HypercallCode::VTL_CALL.0);
    assert_eq!(
        ud(&mut hv, ret, 2),
        Some(Fault::Ud),
        "VTL return control bit 1 is reserved"
    );
    assert_eq!(
        ud(&mut hv, ret | 1 << 16, 0),
        Some(Fault::Ud),
        "other control bits"
    );
    assert_eq!(ud(&mut hv, call, 0), Some(Fault::Ud), "no VTL above VTL2");
    assert_eq!(
        ud(&mut hv, ret, 0),
        None,
        "a valid return with an empty script"
    );
    let faults = hv
        .model
        .trace()
        .hypercalls()
        .filter(|h| h.outcome == Outcome::Fault(Fault::Ud))
        .count();
    assert_eq!(faults, 3);

    let mut flat = Hv::new(Scenario {
        vsm: false,
        ..Scenario::default()
    });
    assert_eq!(ud(&mut flat, ret, 0), Some(Fault::Ud), "no VTL below VTL0");

    let mut vtl1 = Hv::new(Scenario {
        enabled_vtls: 0b111,
        active_vtl: Vtl::VTL1,
        ..Scenario::default()
    });
    assert_eq!(ud(&mut vtl1, call, 0), None, "VTL1 may call VTL2");
    assert_eq!(
        ud(&mut vtl1, call, 1),
        Some(Fault::Ud),
        "VTL call control is all reserved"
    );
}

/// #UD as the x64 paravisor raises it: HvX64PendingExceptionEvent, vector 6, no error code.
const UD_EVENT: u128 = 0x0006_0001;

/// A paravisor that injects an exception leaves the IP on the call (a fault) and sets VTL0's
/// PendingEvent0: VTL0 takes the exception, so the call is recorded once, not re-delivered
/// (though its IP did not move), and the script goes on with the next call.
#[test]
fn a_pending_exception_is_taken_instead_of_re_executing() {
    let mut hv = booted();
    enable_intercept_page(&mut hv);
    hv.model.vtl0().push(post_message_call(VTL0_RIP));
    hv.model.vtl0().push(post_message_call(VTL0_RIP + 0x100));
    vtl_return(&mut hv, false);

    let event = HvRegisterName::PENDING_EVENT0;
    assert_eq!(
        hv.set_regs(vtl0(), &[(event, UD_EVENT)]).status(),
        HvStatus::SUCCESS
    );
    assert_eq!(hv.model.register(0, Vtl::VTL0, event), Ok(UD_EVENT));
    assert_eq!(
        hv.model.register(0, Vtl::VTL2, event),
        Ok(0),
        "per VTL: VTL2's own is untouched"
    );
    // Returns with VTL0's RAX/RCX as it left them: no result written.
    let rcx = simple(HypercallCode::POST_MESSAGE).into_bits();
    set_return_registers(&mut hv, 0xDEAD, rcx);
    let (_, effects) = vtl_return(&mut hv, false);
    assert!(!effects.finished && effects.advance_ip);

    let r = hv.model.vtl0().results()[0].clone();
    assert_eq!((r.index, r.attempt), (0, 0));
    assert_eq!(r.pending_event(), Some(UD_EVENT));
    assert_eq!(r.register(event), UD_EVENT);
    assert_eq!(r.ip_after, r.ip_before, "a fault: the IP stays on the call");
    assert!(!r.advanced());
    assert_eq!((r.result, r.register(x64_reg::RCX)), (0xDEAD, rcx.into()));
    assert_eq!(
        hv.model.register(0, Vtl::VTL0, event),
        Ok(0),
        "VTL0 took the event"
    );
    let next = payload(&assist_page(&hv).intercept_message);
    assert_eq!(
        next.header.rip,
        VTL0_RIP + 0x100,
        "the next call, not a retry"
    );

    // The next call completes as usual and carries no event.
    set_return_registers(&mut hv, 0, 0);
    hv.set_regs(vtl0(), &[(RIP, (VTL0_RIP + 0x103).into())])
        .result()
        .unwrap();
    let (_, effects) = vtl_return(&mut hv, false);
    assert!(effects.finished);
    let results = hv.model.vtl0().results();
    assert_eq!(results.len(), 2);
    assert_eq!((results[1].index, results[1].attempt), (1, 0));
    assert_eq!(results[1].pending_event(), None);
    assert!(results[1].advanced());
}

/// An event written without its pending bit is no exception: the call is re-delivered as any
/// call whose IP did not move.
#[test]
fn an_event_that_is_not_pending_does_not_stop_re_execution() {
    let mut hv = booted();
    enable_intercept_page(&mut hv);
    hv.model.vtl0().push(post_message_call(VTL0_RIP));
    vtl_return(&mut hv, false);
    let not_pending = UD_EVENT & !1;
    hv.set_regs(vtl0(), &[(HvRegisterName::PENDING_EVENT1, 0x55)])
        .result()
        .unwrap();
    hv.set_regs(vtl0(), &[(HvRegisterName::PENDING_EVENT0, not_pending)])
        .result()
        .unwrap();
    // VTL0's RAX/RCX/RDX as it had them, so the re-executed call is the same PostMessage.
    let rcx = simple(HypercallCode::POST_MESSAGE).into_bits();
    set_return_registers(&mut hv, 0xDEAD, rcx);
    hv.vmcall(X64HypercallRegs {
        rcx: HypercallCode::VTL_RETURN.0.into(),
        rdx: 0x5000,
        ..Default::default()
    });
    let first = &hv.model.vtl0().results()[0];
    assert_eq!(first.pending_event(), None);
    assert_eq!(first.register(HvRegisterName::PENDING_EVENT1), 0x55);
    assert_eq!(
        hv.model.vtl0().in_flight(0),
        Some(&post_message_call(VTL0_RIP))
    );
    let redelivered = payload(&assist_page(&hv).intercept_message);
    assert_eq!(redelivered.header.rip, VTL0_RIP);
}

/// `Vtl0Call::in_32bit_mode` puts VTL0 in 32-bit protected mode for that call only: the intercept
/// reports it, and the next `Vtl0Call::x64` is a 64-bit caller again.
#[test]
fn a_32bit_caller_and_back() {
    let mut hv = booted();
    enable_intercept_page(&mut hv);
    // 32-bit convention: control EDX:EAX, input GPA EBX:ECX.
    let call32 = post_message_call(VTL0_RIP)
        .in_32bit_mode()
        .with_register(
            x64_reg::RAX,
            simple(HypercallCode::POST_MESSAGE).into_bits().into(),
        )
        .with_register(x64_reg::RDX, 0)
        .with_register(x64_reg::RBX, 0)
        .with_register(x64_reg::RCX, 0x5000);
    hv.model.vtl0().push(call32);
    hv.model.vtl0().push(post_message_call(VTL0_RIP + 0x100));
    vtl_return(&mut hv, false);
    let hc = payload(&assist_page(&hv).intercept_message);
    let state = hc.header.execution_state;
    assert_eq!(
        (state.cpl(), state.cr0_pe(), state.efer_lma()),
        (0, true, false)
    );
    assert_eq!(hc.header.cs_segment.attributes, 0xC09B, "D = 1, L = 0");

    hv.set_regs(vtl0(), &[(HvRegisterName::PENDING_EVENT0, UD_EVENT)])
        .result()
        .unwrap();
    vtl_return(&mut hv, false);
    let hc = payload(&assist_page(&hv).intercept_message);
    assert_eq!(hc.header.rip, VTL0_RIP + 0x100);
    assert!(hc.header.execution_state.efer_lma());
    assert_eq!(hc.header.cs_segment.attributes, 0xA09B, "L = 1");
}
