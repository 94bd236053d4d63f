//! Boot under the mock hypervisor: the release image of each arch finds "Hyper-V", sets the
//! guest OS id before enabling hypercalls, proves it runs at VTL2 through the shared register
//! path, and exits with success; a missed intercept or a wrong VSM setup fails the run with a
//! clear line. Assertions are on the model's trace, not on log text, except for the error lines
//! a person would read.

use e2e::image;
use hvdef::x86_64::HvX64Msr;
use hvdef::{HvError, HvRegisterName, HypercallCode, Vtl};
use mockhv::model::{Event, FaultAction, InjectedFault, Scenario};
use mockhv::qemu::{Arch, Outcome};
use mockhv::session::{self, Report, SessionConfig, Skip};
use std::time::Duration;

fn boot(scenario: Scenario, skip: Skip) -> Report {
    let arch = scenario.arch;
    let mut config = SessionConfig::new(image(arch), scenario);
    config.timeout = Duration::from_secs(60);
    config.skip = skip;
    session::run(config).expect("the mock session runs")
}

/// `Outcome::Pass` here means the boot succeeded (every VP proxying VTL0, script done).
fn assert_run(report: &Report, want: Outcome, needles: &[&str]) {
    let got = if report.succeeded() {
        Outcome::Pass
    } else {
        report.run.outcome
    };
    assert_eq!(
        got,
        want,
        "{}\nconsole:\n{}",
        report.summary(),
        report.run.console
    );
    for needle in needles {
        assert!(
            report.run.console.contains(needle),
            "console lacks {needle:?}:\n{}",
            report.run.console
        );
    }
}

/// Index of the first trace event matching `f`.
fn position(report: &Report, f: impl Fn(&Event) -> bool) -> Option<usize> {
    report.trace().events().iter().position(f)
}

#[test]
fn x86_64_sets_the_guest_os_id_before_enabling_hypercalls() {
    let report = boot(Scenario::for_arch(Arch::X86_64), Skip::default());
    assert_run(
        &report,
        Outcome::Pass,
        &["running at VTL2", "proxying VTL0 hypercalls"],
    );
    let os_id = position(&report, |e| {
        matches!(e, Event::Wrmsr { msr, value, .. } if *msr == HvX64Msr::HV_X64_MSR_GUEST_OS_ID.0 && *value != 0)
    })
    .expect("guest OS id written");
    let enable = position(&report, |e| {
        matches!(e, Event::Wrmsr { msr, value, .. } if *msr == HvX64Msr::HV_X64_MSR_HYPERCALL.0 && value & 1 == 1)
    })
    .expect("hypercall page enabled");
    let first_call = position(&report, |e| matches!(e, Event::Hypercall(_))).expect("a hypercall");
    assert!(
        os_id < enable && enable < first_call,
        "order: os id {os_id}, enable {enable}, first call {first_call}"
    );
    let status = report
        .trace()
        .hypercalls_with_code(HypercallCode::GET_VP_REGISTERS);
    assert!(!status.is_empty());
}

#[test]
fn aarch64_sets_the_guest_os_id_first_with_a_fast_call() {
    let report = boot(Scenario::for_arch(Arch::Aarch64), Skip::default());
    assert_run(
        &report,
        Outcome::Pass,
        &["running at VTL2", "proxying VTL0 hypercalls"],
    );
    let calls: Vec<_> = report.trace().hypercalls().collect();
    let first = calls.first().expect("hypercalls were made");
    assert_eq!(first.code, HypercallCode::SET_VP_REGISTERS);
    assert_ne!(
        first.control & (1 << 16),
        0,
        "the guest OS id must be set with a fast call"
    );
    assert_eq!(first.status(), Some(hvdef::HvStatus::SUCCESS));
    assert_eq!(
        u32::from_le_bytes(first.input[16..20].try_into().unwrap()),
        HvRegisterName::GUEST_OS_ID.0
    );
}

#[test]
fn a_missed_intercept_fails_the_run() {
    for arch in Arch::ALL {
        let report = boot(Scenario::for_arch(arch), Skip { detection: true });
        assert_run(&report, Outcome::Fail, &["no Hyper-V interface found"]);
        assert_eq!(report.trace().hypercalls().count(), 0);
    }
}

#[test]
fn vsm_absent_wrong_vtl_and_failing_register_reads_fail_clearly() {
    for arch in Arch::ALL {
        let no_vsm = Scenario {
            vsm: false,
            ..Scenario::for_arch(arch)
        };
        let report = boot(no_vsm, Skip::default());
        assert_run(&report, Outcome::Fail, &["VSM is not available"]);

        let vtl1 = Scenario {
            active_vtl: Vtl::VTL1,
            ..Scenario::for_arch(arch)
        };
        let report = boot(vtl1, Skip::default());
        assert_run(&report, Outcome::Fail, &["running at VTL1", "not VTL2"]);

        let mut failing = Scenario::for_arch(arch);
        // arm64 reads HvRegisterFeaturesInfo and its privileges with GetVpRegisters first;
        // fail the VSM status read.
        let nth = if arch == Arch::Aarch64 { 3 } else { 1 };
        failing.faults.push(InjectedFault {
            code: HypercallCode::GET_VP_REGISTERS,
            nth,
            action: FaultAction::Status(HvError::ACCESS_DENIED),
            filter: Default::default(),
        });
        let report = boot(failing, Skip::default());
        assert_run(
            &report,
            Outcome::Fail,
            &["reading HvRegisterVsmVpStatus failed: HV_STATUS_ACCESS_DENIED"],
        );
    }
}

/// VsmPartitionConfig after what OpenHCL writes for a hypervisor-backed VM (fact sheet §5.2):
/// EnableVtlProtection with the default mask RWX (0xF), ZeroMemoryOnReset (the TLFS default,
/// so a partition reset cannot expose VTL2's memory) and the intercept page; once, on the boot
/// VP. Not the intercepts the paravisor has no handler for (see firmware.rs
/// `VSM_PARTITION_CONFIG`).
#[test]
fn vsm_partition_config_is_written_as_openhcl_writes_it() {
    for arch in Arch::ALL {
        let mut report = e2e::run_vtl0(Scenario::for_arch(arch), Vec::new());
        let name = HvRegisterName::VSM_PARTITION_CONFIG;
        assert_eq!(
            report.model.register(0, Vtl::VTL2, name),
            Ok(0x103F),
            "{arch:?}"
        );
        let writes = report
            .trace()
            .hypercalls_with_code(HypercallCode::SET_VP_REGISTERS)
            .into_iter()
            .filter(|r| r.input.get(16..20) == Some(&name.0.to_le_bytes()))
            .count();
        assert_eq!(writes, 1, "{arch:?}: written once");
    }
}

/// InterceptUnrecoverableException is left clear: a VTL0 triple fault resets the partition as
/// it would without a paravisor, and never reaches VTL2.
#[test]
fn a_vtl0_unrecoverable_exception_resets_the_partition() {
    for arch in Arch::ALL {
        let script =
            vec![e2e::call(arch, e2e::code(HypercallCode(0)), 0, 0).unrecoverable_exception()];
        let report = e2e::run_vtl0(Scenario::for_arch(arch), script);
        assert!(
            report
                .trace()
                .events()
                .iter()
                .any(|e| matches!(e, Event::PartitionReset { vp: 0 })),
            "{arch:?}"
        );
        assert!(report.trace().intercepts().is_empty(), "{arch:?}");
    }
}
