//! Intercept delivery without an intercept page. Hyper-V then posts VTL0's intercepts to VTL2's
//! SINT0 and raises that SINT's interrupt in VTL2; an interrupt VTL2 does not take stays pending,
//! and a VtlReturn with an interrupt pending for VTL2 comes straight back (TLFS vsm.md
//! "Interrupt Masking and VTL Switches"), so a paravisor that polls the slot with interrupts off
//! would never run VTL0 again. The paravisor has no interrupt handling, so it refuses to run
//! without `VsmCapabilities.intercept_page_available`, with one line naming it, before it
//! returns to VTL0 even once.

use e2e::{call, code, image, layout, post_message, RELAYED};
use hvdef::{HvRegisterName, HvRegisterVsmCapabilities, HypercallCode};
use mockhv::model::Scenario;
use mockhv::qemu::{Arch, Outcome};
use mockhv::session::{self, SessionConfig};
use std::time::Duration;

#[test]
fn no_intercept_page_is_refused_with_one_clear_line() {
    for arch in Arch::ALL {
        let l = layout(arch);
        let mut scenario = Scenario::for_arch(arch);
        scenario.vsm_capabilities = HvRegisterVsmCapabilities::new();
        let mut config = SessionConfig::new(image(arch), scenario);
        config.timeout = Duration::from_secs(60);
        config.append = Some(e2e::RELAY.to_string());
        config.vtl0 = vec![call(arch, code(HypercallCode::POST_MESSAGE), l.input, 0)
            .with_memory(l.input, &post_message(RELAYED))];
        let report = session::run(config).expect("the mock session runs");
        assert_eq!(
            report.run.outcome,
            Outcome::Fail,
            "{arch:?}: {}\n{}",
            report.summary(),
            report.run.console
        );
        // A failure names the last things the paravisor asked of the hypervisor.
        let summary = report.summary();
        assert!(
            summary.contains("; last trace records: ") && summary.contains(" VTL2 "),
            "{arch:?}: {summary}"
        );
        let line = "VsmCapabilities.intercept_page_available is clear";
        assert_eq!(
            report
                .run
                .console
                .lines()
                .filter(|l| l.contains(line))
                .count(),
            1,
            "{arch:?}: console lacks {line:?}:\n{}",
            report.run.console
        );
        let returns = report
            .trace()
            .hypercalls_with_code(HypercallCode::VTL_RETURN)
            .len();
        assert_eq!(returns, 0, "{arch:?}: VTL0 never ran");
        assert!(report.trace().intercepts().is_empty());
        // Refused before any SynIC setup: no SINT0 and no message page programmed.
        // Every entry of every SetVpRegisters (16-byte header, then 32-byte name/value pairs).
        let sint0_or_simp = |name: HvRegisterName| {
            report
                .trace()
                .hypercalls_with_code(HypercallCode::SET_VP_REGISTERS)
                .iter()
                .any(|r| {
                    r.input
                        .get(16..)
                        .unwrap_or_default()
                        .chunks(32)
                        .any(|entry| entry.get(..4) == Some(&name.0.to_le_bytes()))
                })
        };
        assert!(!sint0_or_simp(HvRegisterName::SINT0), "{arch:?}");
        assert!(!sint0_or_simp(HvRegisterName::SIMP), "{arch:?}");
        if arch == Arch::X86_64 {
            let msrs = [
                hvdef::x86_64::HvX64Msr::HV_X64_MSR_SINT0,
                hvdef::x86_64::HvX64Msr::HV_X64_MSR_SIMP,
            ];
            for msr in msrs {
                assert!(report.trace().msr_writes(msr.0).is_empty(), "{msr:?}");
            }
        }
    }
}
