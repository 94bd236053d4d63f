//! SMP bring-up under the mock hypervisor: every VP proves VTL2 through its own hypercall input
//! and output pages, and a rep call that times out half-way is resumed where it stopped.

use e2e::image;
use hvdef::{HvRegisterName, HvStatus, HypercallCode, HypercallOutput};
use mockhv::model::{FaultAction, HypercallRecord, InjectedFault, Scenario};
use mockhv::qemu::Arch;
use mockhv::session::{self, Report, SessionConfig};
use std::collections::BTreeMap;
use std::time::Duration;

fn boot(scenario: Scenario) -> Report {
    let arch = scenario.arch;
    let mut config = SessionConfig::new(image(arch), scenario);
    config.timeout = Duration::from_secs(90);
    session::run(config).expect("the mock session runs")
}

fn assert_passed(report: &Report) {
    assert!(
        report.succeeded(),
        "{}\nconsole:\n{}",
        report.summary(),
        report.run.console
    );
}

/// The register names of a Get/SetVpRegisters input (after the 16-byte header).
fn names(record: &HypercallRecord) -> Vec<u32> {
    record.input[16..]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn vsm_status_reads(report: &Report) -> Vec<&HypercallRecord> {
    report
        .trace()
        .hypercalls_with_code(HypercallCode::GET_VP_REGISTERS)
        .into_iter()
        .filter(|r| names(r).first() == Some(&HvRegisterName::VSM_VP_STATUS.0))
        .collect()
}

#[test]
fn every_vp_reads_its_vsm_status_through_its_own_pages() {
    for arch in Arch::ALL {
        for vps in [1, 4] {
            let report = boot(Scenario {
                vp_count: vps,
                ..Scenario::for_arch(arch)
            });
            assert_passed(&report);
            assert!(report
                .run
                .console
                .contains(&format!("all {vps} VP(s) run at VTL2")));
            let reads = vsm_status_reads(&report);
            let mut pages: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
            for r in &reads {
                assert_eq!(r.status(), Some(HvStatus::SUCCESS));
                assert_eq!(r.input_gpa % 4096, 0, "{arch:?} vp{} input page", r.vp);
                assert_eq!(r.output_gpa % 4096, 0, "{arch:?} vp{} output page", r.vp);
                assert_ne!(r.input_gpa, r.output_gpa);
                assert!(pages.insert(r.vp, (r.input_gpa, r.output_gpa)).is_none());
            }
            assert_eq!(
                pages.len() as u32,
                vps,
                "{arch:?}: one VsmVpStatus read per VP"
            );
            // Every page belongs to exactly one VP, in every hypercall of the boot.
            let mut owner: BTreeMap<u64, u32> = BTreeMap::new();
            for r in report.trace().hypercalls() {
                // Fast calls and VTL switches name no pages.
                let switch = [HypercallCode::VTL_CALL, HypercallCode::VTL_RETURN].contains(&r.code);
                if r.control & (1 << 16) != 0 || switch {
                    continue;
                }
                for gpa in [r.input_gpa & !0xfff, r.output_gpa & !0xfff] {
                    let vp = *owner.entry(gpa).or_insert(r.vp);
                    assert_eq!(
                        vp, r.vp,
                        "{arch:?}: page {gpa:#x} used by vp{vp} and vp{}",
                        r.vp
                    );
                }
            }
            assert_eq!(owner.len() as u32, 2 * vps, "{arch:?}: two pages per VP");
        }
    }
}

#[test]
fn a_rep_call_that_times_out_is_resumed_from_reps_completed() {
    for arch in Arch::ALL {
        let mut scenario = Scenario::for_arch(arch);
        scenario.vp_count = 1;
        // The boot VP's one two-register read (VSM capabilities + partition status) is its
        // last GetVpRegisters: x86 reads the nested indicator and privileges by CPUID, arm64
        // by GetVpRegisters first (HvRegisterFeaturesInfo, then its privileges).
        let nth = if arch == Arch::X86_64 { 2 } else { 5 };
        scenario.faults.push(InjectedFault {
            code: HypercallCode::GET_VP_REGISTERS,
            nth,
            action: FaultAction::Timeout { reps: 1 },
            filter: Default::default(),
        });
        let report = boot(scenario);
        assert_passed(&report);
        let pair: Vec<&HypercallRecord> = report
            .trace()
            .hypercalls_with_code(HypercallCode::GET_VP_REGISTERS)
            .into_iter()
            .filter(|r| names(r).first() == Some(&HvRegisterName::VSM_CAPABILITIES.0))
            .collect();
        assert_eq!(pair.len(), 2, "{arch:?}: issued, then re-issued once");
        let control = |r: &HypercallRecord| hvdef::Control::from_bits(r.control);
        let first: HypercallOutput = match pair[0].outcome {
            mockhv::model::Outcome::Status(out) => out,
            ref other => panic!("{other:?}"),
        };
        assert_eq!(
            (control(pair[0]).rep_count(), control(pair[0]).rep_start()),
            (2, 0)
        );
        assert_eq!(first.status(), HvStatus::TIMEOUT);
        assert_eq!(first.reps_completed(), 1);
        assert_eq!(
            (control(pair[1]).rep_count(), control(pair[1]).rep_start()),
            (2, 1)
        );
        assert_eq!(pair[1].status(), Some(HvStatus::SUCCESS));
        assert!(report.run.console.contains("maximum VTL 2"));
    }
}
