//! The VTL0 hypercall proxy under the mock hypervisor: scripted VTL0 hypercalls reach the
//! paravisor as intercepts; what VTL0 sees afterwards (status, IP advanced or not, output bytes)
//! and what the paravisor asked of the host (the forwarded control words and pages) are checked
//! against the TLFS and the proxy's policy.

use e2e::{call, code, get_registers_input, layout, post_message};
use hvdef::{Control, HvInputVtl, HvRegisterName, HvStatus, HypercallCode, Vtl};
use mockhv::model::{FaultAction, HypercallRecord, InjectedFault, Scenario, Vtl0Call, Vtl0Result};
use mockhv::qemu::Arch;
use mockhv::session::Report;
use paravisor::proxy::policy::FORWARDED_EXT_MASK;

/// The final (last-attempt) result of each scripted call, in push order.
fn results(report: &mut Report) -> Vec<Vtl0Result> {
    let mut all = report.model.vtl0().results().to_vec();
    all.sort_by_key(|r| (r.index, r.attempt));
    all
}

/// Hypercalls the paravisor itself made (at VTL2) with this code.
fn forwarded(report: &Report, code: HypercallCode) -> Vec<HypercallRecord> {
    report
        .trace()
        .hypercalls_with_code(code)
        .into_iter()
        .filter(|r| r.vtl == Vtl::VTL2)
        .cloned()
        .collect()
}

#[test]
fn every_policy_outcome_reaches_vtl0_as_the_tlfs_says() {
    for arch in Arch::ALL {
        let l = layout(arch);
        let message = post_message(1);
        let status_names = [HvRegisterName::VP_INDEX];
        let script: Vec<(Vtl0Call, HvStatus)> = vec![
            (
                call(arch, code(HypercallCode::POST_MESSAGE), l.input, 0)
                    .with_memory(l.input, &message),
                HvStatus::SUCCESS,
            ),
            // SignalEvent, fast: connection 1, flag 0.
            (
                call(
                    arch,
                    code(HypercallCode::SIGNAL_EVENT).with_fast(true),
                    1,
                    0,
                ),
                HvStatus::SUCCESS,
            ),
            (
                call(
                    arch,
                    code(HypercallCode::EXT_QUERY_CAPABILITIES),
                    0,
                    l.output,
                )
                .with_output(l.output, 8),
                HvStatus::SUCCESS,
            ),
            (
                call(
                    arch,
                    code(HypercallCode::EXT_QUERY_CAPABILITIES).with_fast(true),
                    0,
                    0,
                ),
                HvStatus::INVALID_PARAMETER,
            ),
            (
                call(arch, code(HypercallCode(0x0077)), 0, 0),
                HvStatus::INVALID_HYPERCALL_CODE,
            ),
            (
                call(arch, code(HypercallCode(0x80ff)), 0, 0),
                HvStatus::INVALID_HYPERCALL_CODE,
            ),
            // Misaligned, page-crossing, overlapping, VTL2-pointing.
            (
                call(arch, code(HypercallCode::POST_MESSAGE), l.input + 4, 0),
                HvStatus::INVALID_ALIGNMENT,
            ),
            (
                call(
                    arch,
                    code(HypercallCode::POST_MESSAGE),
                    l.input + 4096 - 128,
                    0,
                ),
                HvStatus::INVALID_ALIGNMENT,
            ),
            (
                call(
                    arch,
                    code(HypercallCode::GET_VP_REGISTERS).with_rep_count(1),
                    l.input,
                    l.input + 8,
                )
                .with_memory(
                    l.input,
                    &get_registers_input(HvInputVtl::CURRENT, &status_names),
                ),
                HvStatus::INVALID_ALIGNMENT,
            ),
            (
                call(arch, code(HypercallCode::POST_MESSAGE), l.vtl2, 0),
                HvStatus::ACCESS_DENIED,
            ),
            (
                call(arch, code(HypercallCode::EXT_QUERY_CAPABILITIES), 0, l.vtl2),
                HvStatus::ACCESS_DENIED,
            ),
            // VTL management and VTL2's registers are the paravisor's.
            (
                call(
                    arch,
                    code(HypercallCode::GET_VP_REGISTERS).with_rep_count(1),
                    l.input,
                    l.output,
                )
                .with_memory(
                    l.input,
                    &get_registers_input(HvInputVtl::target(Vtl::VTL2), &status_names),
                ),
                HvStatus::ACCESS_DENIED,
            ),
            (
                call(arch, code(HypercallCode::ENABLE_PARTITION_VTL), l.input, 0),
                HvStatus::ACCESS_DENIED,
            ),
            // VTL0 does not choose nesting.
            (
                call(
                    arch,
                    code(HypercallCode::POST_MESSAGE).with_nested(true),
                    l.input,
                    0,
                ),
                HvStatus::INVALID_HYPERCALL_INPUT,
            ),
        ];
        let expected: Vec<HvStatus> = script.iter().map(|(_, s)| *s).collect();
        let mut report = e2e::run_vtl0(
            Scenario::for_arch(arch),
            script.into_iter().map(|(c, _)| c).collect(),
        );
        let results = results(&mut report);
        assert_eq!(
            results.len(),
            expected.len(),
            "{arch:?}: one result per call"
        );
        for (i, (r, want)) in results.iter().zip(&expected).enumerate() {
            assert_eq!(r.status(), *want, "{arch:?} call {i}");
            assert!(
                r.advanced(),
                "{arch:?} call {i}: the IP moved past the call"
            );
        }
        let mask = report.model.scenario().extended_capabilities.into_bits();
        assert_eq!(
            results[2].output,
            (mask & FORWARDED_EXT_MASK).to_le_bytes(),
            "{arch:?}: capabilities filtered to what the paravisor forwards"
        );
        // Only the two valid SynIC calls went to the host, without the nested bit.
        for code in [HypercallCode::POST_MESSAGE, HypercallCode::SIGNAL_EVENT] {
            let sent = forwarded(&report, code);
            assert_eq!(sent.len(), 1, "{arch:?} {code:?} forwarded once");
            assert_eq!(sent[0].control & (1 << 31), 0, "{arch:?}: not nested");
            assert_eq!(sent[0].status(), Some(HvStatus::SUCCESS));
        }
        assert_eq!(
            forwarded(&report, HypercallCode::ENABLE_PARTITION_VTL).len(),
            0
        );
    }
}

/// The rep starts of the paravisor's last two forwarded GetVpRegisters, newest first.
fn last_two_rep_starts(report: &Report) -> Vec<u16> {
    forwarded(report, HypercallCode::GET_VP_REGISTERS)
        .iter()
        .rev()
        .take(2)
        .map(|r| Control::from_bits(r.control).rep_start())
        .collect()
}

/// VTL0 reads its VP index (0) four times in one rep GetVpRegisters into an output list filled
/// with [`STALE`]; the host applies `action` to the forwarded call (the boot's own
/// GetVpRegisters are counted first, so the fault hits it).
fn rep4_with_fault(arch: Arch, action: FaultAction) -> Report {
    let l = layout(arch);
    let boot = e2e::run_vtl0(Scenario::for_arch(arch), Vec::new());
    let nth = boot
        .trace()
        .hypercalls_with_code(HypercallCode::GET_VP_REGISTERS)
        .len() as u32
        + 1;
    let names = [HvRegisterName::VP_INDEX; 4];
    let control = code(HypercallCode::GET_VP_REGISTERS).with_rep_count(4);
    let script = vec![call(arch, control, l.input, l.output)
        .with_memory(l.input, &get_registers_input(HvInputVtl::CURRENT, &names))
        .with_memory(l.output, &[STALE; 64])
        .with_output(l.output, 64)];
    let mut scenario = Scenario::for_arch(arch);
    scenario.faults.push(InjectedFault {
        code: HypercallCode::GET_VP_REGISTERS,
        nth,
        action,
    });
    e2e::run_vtl0(scenario, script)
}

/// What VTL0's output list holds before its call: bytes no register value of the call has.
const STALE: u8 = 0xAA;

/// A host that returns SUCCESS with 2 of 4 reps done (the TLFS lets it stop early; Linux
/// continues from reps completed): VTL0 gets exactly that, as it would from the host itself.
/// SUCCESS with reps completed 2 and the IP advanced, only the two completed values written,
/// and no re-issue by the paravisor (continuing is VTL0's business).
#[test]
fn a_short_success_reaches_vtl0_as_is() {
    for arch in Arch::ALL {
        let mut report = rep4_with_fault(arch, FaultAction::ShortSuccess { reps: 2 });
        let results = results(&mut report);
        assert_eq!(results.len(), 1, "{arch:?}: delivered once");
        let r = &results[0];
        let out = r.output_value();
        assert_eq!(
            (out.status(), out.reps_completed()),
            (HvStatus::SUCCESS, 2),
            "{arch:?}"
        );
        assert!(r.advanced(), "{arch:?}: IP advanced");
        let mut expect = vec![0u8; 32]; // two VP index values (VP 0)
        expect.extend([STALE; 32]);
        assert_eq!(r.output, expect, "{arch:?}: exactly the completed elements");
        let gets = forwarded(&report, HypercallCode::GET_VP_REGISTERS);
        let last = gets.last().unwrap();
        let control = Control::from_bits(last.control);
        assert_eq!(
            (control.rep_count(), control.rep_start()),
            (4, 0),
            "{arch:?}"
        );
        assert_eq!(
            last.output, [0u8; 32],
            "{arch:?}: the host wrote two values"
        );
        let issued = gets.iter().filter(|r| r.input == last.input).count();
        assert_eq!(issued, 1, "{arch:?}: not re-issued");
    }
}

/// A host that hands a TIMEOUT back (IP advanced, reps completed 2 of 4): VTL0 must see the TLFS
/// timeout (IP left on its call, rep start moved on) and re-issue; the re-issued call is
/// forwarded from rep 2.
#[test]
fn a_host_timeout_reaches_vtl0_as_a_tlfs_timeout() {
    for arch in Arch::ALL {
        let mut report = rep4_with_fault(arch, FaultAction::ReturnedTimeout { reps: 2 });
        let results = results(&mut report);
        assert_eq!(
            results.len(),
            2,
            "{arch:?}: delivered, then re-executed once"
        );
        let (first, second) = (&results[0], &results[1]);
        match arch {
            Arch::X86_64 => {
                assert_eq!(first.status(), HvStatus::TIMEOUT);
                assert_eq!(first.output_value().reps_completed(), 2);
            }
            // SMCCC: X0 keeps the function id, so the re-executed hvc is a hypercall again.
            Arch::Aarch64 => assert_eq!(first.result, u64::from(hvdef::aarch64::SMCCC_HV_FUNC_ID)),
        }
        assert!(!first.advanced(), "{arch:?}: IP left on the call");
        assert_eq!(second.status(), HvStatus::SUCCESS, "{arch:?}");
        assert!(second.advanced());
        // The re-executed call started at rep 2: the forwarded controls say so.
        assert_eq!(last_two_rep_starts(&report), vec![2, 0], "{arch:?}");
        assert_eq!(second.output.len(), 64);
        // VTL0's RCX (x64) / X1 (arm64 SMCCC) carries the new rep start for the re-issue.
        let control_reg = match arch {
            Arch::X86_64 => hvdef::x86_64::reg::RCX,
            Arch::Aarch64 => hvdef::aarch64::reg::X1,
        };
        let moved_on = Control::from_bits(first.register(control_reg) as u64);
        assert_eq!(
            (moved_on.rep_count(), moved_on.rep_start()),
            (4, 2),
            "{arch:?}"
        );
    }
}

/// A host that re-executes a timed-out call (TLFS: IP left on the instruction) never shows
/// VTL0 the timeout: the paravisor's own call is resumed transparently and VTL0 gets SUCCESS.
#[test]
fn a_host_that_re_executes_completes_the_call_for_vtl0() {
    let mut report = rep4_with_fault(Arch::X86_64, FaultAction::Timeout { reps: 2 });
    let results = results(&mut report);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].status(), HvStatus::SUCCESS);
    assert!(results[0].advanced());
    assert_eq!(
        last_two_rep_starts(&report),
        vec![2, 0],
        "the host re-executed from rep 2"
    );
}

#[test]
fn four_vps_proxy_at_once_each_on_its_own_pages() {
    for arch in Arch::ALL {
        let l = layout(arch);
        let mut script = Vec::new();
        for vp in 0..4u32 {
            let input = l.input + 0x100 * u64::from(vp);
            let output = l.output + 0x100 * u64::from(vp);
            script.push(
                call(arch, code(HypercallCode::POST_MESSAGE), input, 0)
                    .with_memory(input, &post_message(1))
                    .on_vp(vp),
            );
            script.push(
                call(arch, code(HypercallCode::EXT_QUERY_CAPABILITIES), 0, output)
                    .with_output(output, 8)
                    .on_vp(vp),
            );
        }
        let mut report = e2e::run_vtl0(
            Scenario {
                vp_count: 4,
                ..Scenario::for_arch(arch)
            },
            script,
        );
        let results = results(&mut report);
        assert_eq!(results.len(), 8);
        assert!(results
            .iter()
            .all(|r| r.status() == HvStatus::SUCCESS && r.advanced()));
        let posts = forwarded(&report, HypercallCode::POST_MESSAGE);
        assert_eq!(posts.len(), 4);
        let mut pages: Vec<(u32, u64)> = posts.iter().map(|r| (r.vp, r.input_gpa)).collect();
        pages.sort();
        pages.dedup_by_key(|p| p.1);
        assert_eq!(
            pages.len(),
            4,
            "{arch:?}: each VP forwards from its own input page"
        );
        assert_eq!(
            pages.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
    }
}
