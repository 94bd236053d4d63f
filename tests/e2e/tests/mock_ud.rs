//! #UD injection under the mock hypervisor: the VTL0 calls the TLFS answers with #UD (x64) or an
//! undefined-instruction exception (arm64) reach VTL0 as that exception, the way OpenHCL injects
//! one: PendingEvent0 of VTL0 set through the paravisor's SetVpRegisters, the IP left on the call
//! (a fault), the result register as VTL0 had it. Ordinary calls in the same script still complete.

use e2e::{call, code, layout, post_message};
use hvdef::aarch64::{
    reg as arm_reg, HvArm64PendingEventType, HvArm64PendingExceptionEvent, HVC_IMM_VTL_RETURN,
    SMCCC_HV_FUNC_ID,
};
use hvdef::x86_64::{reg as x64_reg, HvX64PendingEventType, HvX64PendingExceptionEvent};
use hvdef::{
    HvInputGetVpRegisters, HvInputVtl, HvRegisterAssoc, HvRegisterName, HvStatus, HypercallCode,
    Vtl,
};
use mockhv::model::{Scenario, Vtl0Call, Vtl0Result};
use mockhv::qemu::Arch;
use mockhv::session::Report;
use zerocopy::FromBytes;

fn run(arch: Arch, vtl0: Vec<Vtl0Call>) -> Report {
    e2e::run_vtl0(Scenario::for_arch(arch), vtl0)
}

/// What VTL0 keeps in its result register (RAX / X0) when a call faults: x64 a marker the test
/// sets, arm64 the SMCCC function id the call was made with.
const RAX_BEFORE: u64 = 0x5EED_0000_0000_00D0;

/// Checks that VTL0 holds exactly the architectural undefined-instruction event: x64 #UD
/// (exception, vector 6, no error code), arm64 an exception with ESR EC 0 ("unknown reason")
/// and IL set.
fn assert_undefined_instruction(arch: Arch, event: u128, what: &str) {
    match arch {
        Arch::X86_64 => {
            let e = HvX64PendingExceptionEvent::from_bits(event);
            assert!(e.event_pending(), "{what}");
            assert_eq!(e.event_type(), HvX64PendingEventType::EXCEPTION, "{what}");
            assert_eq!(e.vector(), 6, "{what}: #UD");
            assert!(!e.deliver_error_code(), "{what}: #UD pushes no error code");
            assert_eq!(event, 0x0006_0001, "{what}: nothing else set");
        }
        Arch::Aarch64 => {
            let e = HvArm64PendingExceptionEvent::from_bits(event);
            assert!(e.event_pending(), "{what}");
            assert_eq!(e.event_type(), HvArm64PendingEventType::EXCEPTION, "{what}");
            let esr = e.syndrome();
            assert_eq!(esr >> 26 & 0x3F, 0, "{what}: EC unknown reason");
            assert_eq!(esr >> 25 & 1, 1, "{what}: IL");
            assert_eq!(esr & 0x1FF_FFFF, 0, "{what}: no ISS");
            assert_eq!(event, 0x0200_0000 << 64 | 1, "{what}: nothing else set");
        }
    }
}

/// The fast SetVpRegisters the paravisor (VTL2) made that wrote VTL0's PendingEvent0: header
/// target VTL (byte 12) pinned to VTL0, the first element's name at byte 16.
fn pending_event_writes(report: &Report) -> usize {
    let pinned = HvInputVtl::target(Vtl::VTL0).into_bits();
    let header = size_of::<HvInputGetVpRegisters>();
    report
        .trace()
        .hypercalls_with_code(HypercallCode::SET_VP_REGISTERS)
        .into_iter()
        .filter(|r| r.vtl == Vtl::VTL2 && r.status() == Some(HvStatus::SUCCESS))
        .filter(|r| {
            let assoc = r
                .input
                .get(header..)
                .and_then(|b| HvRegisterAssoc::read_from_prefix(b).ok());
            r.input.get(12) == Some(&pinned)
                && assoc.is_some_and(|(a, _)| a.name == HvRegisterName::PENDING_EVENT0)
        })
        .count()
}

#[test]
fn ud_callers_take_the_exception_and_ordinary_calls_complete() {
    for arch in Arch::ALL {
        let l = layout(arch);
        let message = post_message(1);
        let post = || {
            call(arch, code(HypercallCode::POST_MESSAGE), l.input, 0).with_memory(l.input, &message)
        };
        let result_reg = match arch {
            Arch::X86_64 => x64_reg::RAX,
            Arch::Aarch64 => arm_reg::X0,
        };
        let marked = |c: Vtl0Call| match arch {
            Arch::X86_64 => c.with_register(x64_reg::RAX, RAX_BEFORE.into()),
            Arch::Aarch64 => c,
        };
        let result_before = match arch {
            Arch::X86_64 => RAX_BEFORE,
            Arch::Aarch64 => u64::from(SMCCC_HV_FUNC_ID),
        };
        // (call, faults?, what)
        let mut script: Vec<(Vtl0Call, bool, &str)> = vec![
            (post(), false, "PostMessage before"),
            (
                marked(call(arch, code(HypercallCode::VTL_RETURN), 0, 0)),
                true,
                "VtlReturn from VTL0",
            ),
            (
                marked(call(arch, code(HypercallCode::VTL_CALL), 0, 0)),
                true,
                "VtlCall with no VTL to enter",
            ),
            (post(), false, "PostMessage between"),
        ];
        match arch {
            Arch::X86_64 => script.push((
                marked(post().in_32bit_mode()),
                true,
                "PostMessage from 32-bit protected mode",
            )),
            Arch::Aarch64 => {
                script.push((post().at_el0(), true, "PostMessage from EL0"));
                script.push((
                    call(arch, code(HypercallCode::POST_MESSAGE), 0, 0)
                        .with_immediate(HVC_IMM_VTL_RETURN),
                    true,
                    "hvc #3 (VtlReturn) from VTL0",
                ));
            }
        }
        // Back in a 64-bit kernel / at EL1: served as usual.
        script.push((post(), false, "PostMessage after"));

        let mut report = run(arch, script.iter().map(|(c, ..)| c.clone()).collect());
        let mut results: Vec<Vtl0Result> = report.model.vtl0().results().to_vec();
        results.sort_by_key(|r| (r.index, r.attempt));
        assert_eq!(
            results.len(),
            script.len(),
            "{arch:?}: one delivery per call: no faulted call is re-delivered"
        );
        for (r, (_, faults, what)) in results.iter().zip(&script) {
            let what = format!("{arch:?} {what}");
            assert_eq!(r.attempt, 0, "{what}");
            if *faults {
                let event = r
                    .pending_event()
                    .unwrap_or_else(|| panic!("{what}: no event"));
                assert_undefined_instruction(arch, event, &what);
                assert_eq!(r.ip_after, r.ip_before, "{what}: IP left on the call");
                assert!(!r.advanced(), "{what}");
                assert_eq!(r.result, result_before, "{what}: result register untouched");
                assert_eq!(r.register(result_reg), u128::from(result_before), "{what}");
            } else {
                assert_eq!(r.pending_event(), None, "{what}");
                assert_eq!(r.status(), HvStatus::SUCCESS, "{what}");
                assert!(r.advanced(), "{what}: IP past the call");
            }
        }
        let faulted = script.iter().filter(|(_, faults, _)| *faults).count();
        assert_eq!(
            pending_event_writes(&report),
            faulted,
            "{arch:?}: one PendingEvent0 write to VTL0 per faulted call"
        );
        // Only the ordinary calls reached the host.
        let posts = report
            .trace()
            .hypercalls_with_code(HypercallCode::POST_MESSAGE)
            .into_iter()
            .filter(|r| r.vtl == Vtl::VTL2)
            .count();
        assert_eq!(
            posts, 3,
            "{arch:?}: only the kernel's PostMessages forwarded"
        );
        assert!(
            report
                .trace()
                .hypercalls_with_code(HypercallCode::VTL_CALL)
                .is_empty(),
            "{arch:?}: no VtlCall made on VTL0's behalf"
        );
    }
}
