//! VTL0 buffers outside what the paravisor maps. Its page tables identity-map the low 4 GiB
//! only (what it uses: x86 0x1000..4 GiB; arm64 1..4 GiB as Normal memory), while the loader reports all of RAM;
//! a relayed call naming a buffer above that must be refused (ACCESS_DENIED, nothing read),
//! never a fault in VTL2 that stops the paravisor. QEMU gets 6 GiB, so RAM runs past 4 GiB.

use e2e::{call, code, layout, post_message, RELAYED};
use hvdef::{HvStatus, HypercallCode};
use mockhv::model::Scenario;
use mockhv::qemu::Arch;
use mockhv::session::{self, SessionConfig};
use std::time::Duration;

/// VTL0 RAM just above 4 GiB on both machines (q35 puts RAM above the PCI hole at 4 GiB; virt's
/// RAM runs from 1 GiB up).
const ABOVE_4G: u64 = 0x1_0000_1000;

#[test]
fn a_buffer_the_paravisor_does_not_map_is_refused_not_fatal() {
    for arch in Arch::ALL {
        let l = layout(arch);
        let message = post_message(RELAYED);
        let mut config = SessionConfig::new(e2e::image(arch), Scenario::for_arch(arch));
        config.timeout = Duration::from_secs(90);
        config.memory_mb = 6 * 1024;
        config.append = Some(e2e::RELAY.to_string());
        config.vtl0 = vec![
            call(arch, code(HypercallCode::POST_MESSAGE), ABOVE_4G, 0)
                .with_memory(ABOVE_4G, &message),
            call(arch, code(HypercallCode::POST_MESSAGE), l.input, 0)
                .with_memory(l.input, &message),
        ];
        let mut report = session::run(config).expect("the mock session runs");
        assert!(
            report.succeeded(),
            "{arch:?}: {}\n{}",
            report.summary(),
            report.run.console
        );
        let results = e2e::results(&mut report);
        assert_eq!(results.len(), 2, "{arch:?}");
        assert!(results[0].reached_vtl2, "{arch:?}: reflected");
        assert_eq!(results[0].status(), HvStatus::ACCESS_DENIED, "{arch:?}");
        assert_eq!(
            results[1].status(),
            HvStatus::SUCCESS,
            "{arch:?}: still serving"
        );
        let relays = e2e::vtl2_calls(&report, HypercallCode::POST_MESSAGE);
        assert_eq!(
            relays.len(),
            1,
            "{arch:?}: only the mapped buffer was relayed"
        );
        let line = "not mapped by the paravisor";
        assert!(
            report.run.console.contains(line),
            "{arch:?}: console lacks {line:?}:\n{}",
            report.run.console
        );
    }
}
