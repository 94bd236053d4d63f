//! Intercept delivery without an intercept page: when VsmCapabilities does not offer one, the
//! paravisor turns on its SynIC and takes VTL0's hypercall intercepts from the SINT0 slot of its
//! message page, and VTL0 sees the same results as with the intercept page.

use e2e::image;
use hvdef::{Control, HvRegisterVsmCapabilities, HvStatus, HypercallCode};
use mockhv::model::{Delivery, Event, Scenario, Vtl0Call};
use mockhv::qemu::Arch;
use mockhv::session::{self, SessionConfig};
use std::time::Duration;

#[test]
fn intercepts_arrive_in_sint0_without_an_intercept_page() {
    for arch in Arch::ALL {
        let (ip, output) = match arch {
            Arch::X86_64 => (0x3_0000, 0x2_1000),
            Arch::Aarch64 => (0x4810_0000, 0x4800_1000),
        };
        let vtl0 = |control: Control, a, b| match arch {
            Arch::X86_64 => Vtl0Call::x64(ip, control, a, b),
            Arch::Aarch64 => Vtl0Call::arm64(ip, control, a, b),
        };
        let query = Control::new().with_code(HypercallCode::EXT_QUERY_CAPABILITIES);
        let unknown = Control::new().with_code(HypercallCode(0x0077));
        let mut scenario = Scenario::for_arch(arch);
        scenario.vsm_capabilities = HvRegisterVsmCapabilities::new();
        scenario.vp_count = 2;
        let mut config = SessionConfig::new(image(arch), scenario);
        config.timeout = Duration::from_secs(60);
        config.vtl0 = vec![
            vtl0(query, 0, output).with_output(output, 8),
            vtl0(unknown, 0, 0).on_vp(1),
            vtl0(query, 0, output + 0x100).with_output(output + 0x100, 8),
        ];
        let mut report = session::run(config).expect("the mock session runs");
        assert!(
            report.succeeded(),
            "{arch:?}: {}\n{}",
            report.summary(),
            report.run.console
        );
        assert!(report.run.console.contains("intercepts arrive in SINT0"));
        let deliveries: Vec<Delivery> = report
            .trace()
            .events()
            .iter()
            .filter_map(|e| match e {
                Event::Intercept { delivery, .. } => Some(*delivery),
                _ => None,
            })
            .collect();
        assert_eq!(deliveries, vec![Delivery::Sint0; 3], "{arch:?}");
        let mut results = report.model.vtl0().results().to_vec();
        results.sort_by_key(|r| r.index);
        let statuses: Vec<HvStatus> = results.iter().map(|r| r.status()).collect();
        assert_eq!(
            statuses,
            vec![
                HvStatus::SUCCESS,
                HvStatus::INVALID_HYPERCALL_CODE,
                HvStatus::SUCCESS
            ],
            "{arch:?}"
        );
        assert!(results.iter().all(|r| r.advanced()));
    }
}
