//! #UD under the mock hypervisor. The TLFS's #UD cases (VtlReturn from VTL0, calls from EL0) are
//! the hypervisor's own and never reach VTL2; a reflected call the paravisor refuses to serve
//! (x64 callers outside 64-bit mode) reaches VTL0 as #UD the way OpenHCL injects one:
//! PendingEvent0 of VTL0 set through the paravisor's SetVpRegisters, the IP left on the call (a
//! fault), the result register as VTL0 had it. A real VTL call enters VTL2 and returns at once.
//! Ordinary calls in the same script still complete.

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
use mockhv::model::{Fault, Scenario, Vtl0Call, Vtl0Result};
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

/// Who raises the exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Completed with SUCCESS (relayed).
    Completes,
    /// The hypervisor itself: the call never reaches VTL2 (TLFS: VtlReturn from the lowest VTL,
    /// hypercalls from EL0).
    HypervisorUd,
    /// The paravisor, for a call the hypervisor did reflect: PendingEvent0 through its
    /// SetVpRegisters (x64 callers outside 64-bit mode: it serves 64-bit kernels only).
    ParavisorUd,
    /// The hypervisor answers it itself with this status.
    HypervisorStatus(HvStatus),
    /// A VTL call: VTL2 is entered without a message and returns at once; VTL0 goes on after
    /// the call with its registers as they were.
    VtlCall,
}

#[test]
fn ud_callers_take_the_exception_and_ordinary_calls_complete() {
    for arch in Arch::ALL {
        let l = layout(arch);
        let message = post_message(e2e::RELAYED);
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
        let vtl_call = match arch {
            // A valid VTL call: RCX the code alone, RAX (the VTL call control) 0.
            Arch::X86_64 => {
                call(arch, code(HypercallCode::VTL_CALL), 0, 0).with_register(x64_reg::RAX, 0)
            }
            Arch::Aarch64 => post().with_immediate(hvdef::aarch64::HVC_IMM_VTL_CALL),
        };
        let mut script: Vec<(Vtl0Call, Expect, &str)> = vec![
            (post(), Expect::Completes, "PostMessage before"),
            (
                marked(call(arch, code(HypercallCode::VTL_RETURN), 0, 0)),
                match arch {
                    Arch::X86_64 => Expect::HypervisorUd,
                    // arm64 switches VTLs with hvc #2/#3 only (TLFS vsm.md); 0x12 as an SMCCC
                    // call code is just a code the hypervisor does not implement.
                    Arch::Aarch64 => Expect::HypervisorStatus(HvStatus::INVALID_HYPERCALL_CODE),
                },
                "VtlReturn from VTL0",
            ),
            (vtl_call, Expect::VtlCall, "VtlCall into VTL2"),
            (post(), Expect::Completes, "PostMessage between"),
        ];
        match arch {
            Arch::X86_64 => {
                // 32-bit convention: control EDX:EAX, input GPA EBX:ECX.
                let control = code(HypercallCode::POST_MESSAGE).into_bits();
                let call32 = post()
                    .in_32bit_mode()
                    .with_register(x64_reg::RAX, control.into())
                    .with_register(x64_reg::RDX, 0)
                    .with_register(x64_reg::RBX, 0)
                    .with_register(x64_reg::RCX, l.input.into());
                script.push((
                    call32,
                    Expect::ParavisorUd,
                    "PostMessage from 32-bit protected mode",
                ));
            }
            Arch::Aarch64 => {
                script.push((
                    post().at_el0(),
                    Expect::HypervisorUd,
                    "PostMessage from EL0",
                ));
                script.push((
                    call(arch, code(HypercallCode::POST_MESSAGE), 0, 0)
                        .with_immediate(HVC_IMM_VTL_RETURN),
                    Expect::HypervisorUd,
                    "hvc #3 (VtlReturn) from VTL0",
                ));
            }
        }
        // Back in a 64-bit kernel / at EL1: served as usual.
        script.push((post(), Expect::Completes, "PostMessage after"));

        let mut report = run(arch, script.iter().map(|(c, ..)| c.clone()).collect());
        let mut results: Vec<Vtl0Result> = report.model.vtl0().results().to_vec();
        results.sort_by_key(|r| (r.index, r.attempt));
        assert_eq!(
            results.len(),
            script.len(),
            "{arch:?}: one delivery per call: no faulted call is re-delivered"
        );
        for (r, (c, expect, what)) in results.iter().zip(&script) {
            let what = format!("{arch:?} {what}");
            assert_eq!(r.attempt, 0, "{what}");
            let before = c
                .registers
                .iter()
                .rev()
                .find(|(n, _)| *n == result_reg)
                .map_or(u128::from(SMCCC_HV_FUNC_ID), |r| r.1);
            match expect {
                Expect::ParavisorUd => {
                    let event = r
                        .pending_event()
                        .unwrap_or_else(|| panic!("{what}: no event"));
                    assert_undefined_instruction(arch, event, &what);
                    assert!(r.reached_vtl2, "{what}");
                    assert_eq!(r.ip_after, r.ip_before, "{what}: IP left on the call");
                    assert_eq!(r.register(result_reg), before, "{what}: untouched");
                }
                Expect::HypervisorUd => {
                    assert_eq!(r.hypervisor_fault, Some(Fault::Ud), "{what}");
                    assert!(!r.reached_vtl2, "{what}: never reached VTL2");
                    assert_eq!(r.pending_event(), None, "{what}");
                    assert_eq!(r.ip_after, r.ip_before, "{what}: IP left on the call");
                    assert_eq!(r.register(result_reg), before, "{what}: untouched");
                }
                Expect::HypervisorStatus(status) => {
                    assert_eq!(r.status(), *status, "{what}");
                    assert!(!r.reached_vtl2 && r.advanced(), "{what}");
                }
                Expect::VtlCall => {
                    assert!(r.reached_vtl2 && r.advanced(), "{what}");
                    assert_eq!(r.pending_event(), None, "{what}");
                    assert_eq!(r.register(result_reg), before, "{what}: untouched");
                }
                Expect::Completes => {
                    assert_eq!(r.pending_event(), None, "{what}");
                    assert_eq!(r.status(), HvStatus::SUCCESS, "{what}");
                    assert!(r.advanced() && r.reached_vtl2, "{what}: relayed");
                }
            }
        }
        let faulted = script
            .iter()
            .filter(|(_, e, _)| *e == Expect::ParavisorUd)
            .count();
        assert_eq!(
            pending_event_writes(&report),
            faulted,
            "{arch:?}: one PendingEvent0 write to VTL0 per call the paravisor faults"
        );
        // Only the ordinary calls reached the host.
        let posts = report
            .trace()
            .hypercalls_with_code(HypercallCode::POST_MESSAGE)
            .into_iter()
            .filter(|r| r.vtl == Vtl::VTL2)
            .count();
        assert_eq!(posts, 3, "{arch:?}: only the kernel's PostMessages relayed");
        let vtl2_vtl_calls = report
            .trace()
            .hypercalls_with_code(HypercallCode::VTL_CALL)
            .into_iter()
            .filter(|r| r.vtl == Vtl::VTL2)
            .count();
        assert_eq!(
            vtl2_vtl_calls, 0,
            "{arch:?}: no VtlCall made on VTL0's behalf"
        );
    }
}
