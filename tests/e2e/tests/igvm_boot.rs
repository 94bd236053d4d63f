//! The real deliverable booted: the IGVM file, loaded as a VMM's IGVM loader does (page data,
//! the VP count and memory map in the parameter areas, the VTL2 VP context; see
//! `mockhv::igvm_load`), on both arches, with 2 VPs. The paravisor must find its parameters
//! (not PVH or a device tree), protect its pages, start the other VP and proxy VTL0's calls.

use e2e::{call, code, layout, post_message, UNMAPPED};
use hvdef::{HvStatus, HypercallCode};
use mockhv::model::{Scenario, Vtl0Access, Vtl0Call};
use mockhv::qemu::Arch;
use mockhv::session::{self, SessionConfig};
use std::collections::BTreeSet;
use std::time::Duration;

#[test]
fn the_igvm_file_boots_and_proxies() {
    for arch in Arch::ALL {
        let l = layout(arch);
        let bytes = std::fs::read(e2e::igvm(arch)).expect("the IGVM file");
        let ram = arch.ram_ranges(mockhv::qemu::DEFAULT_MEMORY_MB);
        let loaded = mockhv::igvm_load::load(&bytes, arch, 2, &ram).expect("the file loads");
        let mut config = SessionConfig::new(
            e2e::image(arch),
            Scenario {
                vp_count: 2,
                ..Scenario::for_arch(arch)
            },
        );
        config.igvm = Some(e2e::igvm(arch));
        config.timeout = Duration::from_secs(90);
        config.vtl0 = vec![
            // No relay table on an IGVM boot (no command line): an unknown connection.
            call(arch, code(HypercallCode::POST_MESSAGE), l.input, 0)
                .with_memory(l.input, &post_message(UNMAPPED)),
            Vtl0Call::access(
                arch,
                l.ip,
                Vtl0Access::Write {
                    gpa: loaded.extent.start + 0x40,
                    bytes: vec![0; 8],
                },
            )
            .on_vp(1),
        ];
        let mut report = session::run(config).expect("the mock session runs");
        let console = report.run.console.clone();
        assert!(
            report.succeeded(),
            "{arch:?}: {}\n{console}",
            report.summary()
        );
        // x86: RAM below and above the legacy VGA/BIOS window; arm64: one range from 1 GiB.
        let (ranges, kib) = match arch {
            Arch::X86_64 => (2, 256 * 1024 - 384),
            Arch::Aarch64 => (1, 256 * 1024),
        };
        let line = format!(
            "boot: from IGVM parameters: 2 VP(s), {ranges} RAM range(s) totalling {kib} KiB"
        );
        assert!(
            console.contains(&line),
            "{arch:?}: the parameters were read ({line:?})\n{console}"
        );
        let results = e2e::results(&mut report);
        assert_eq!(results.len(), 2, "{arch:?}: {results:#?}");
        assert!(results[0].reached_vtl2);
        assert_eq!(results[0].status(), HvStatus::INVALID_CONNECTION_ID);
        assert!(
            results[1].pending_event().is_some(),
            "{arch:?}: the store faulted"
        );
        // What the paravisor protected is what the file placed.
        let protected: BTreeSet<u64> =
            e2e::vtl2_calls(&report, HypercallCode::MODIFY_VTL_PROTECTION_MASK)
                .iter()
                .flat_map(e2e::protection_list)
                .collect();
        let placed: BTreeSet<u64> =
            (loaded.extent.start >> 12..loaded.extent.end.div_ceil(4096)).collect();
        assert_eq!(protected, placed, "{arch:?}");
    }
}
