//! VTL0 buffers wherever the loader puts RAM. QEMU gets 6 GiB + 3 MiB, so RAM runs past 4 GiB
//! (q35: 2 GiB low and the rest from 4 GiB up; virt: from 1 GiB up), beyond the static boot
//! tables' low 4 GiB: the paravisor must map it and read and write it as VTL0 left it. The odd
//! 3 MiB make the top of RAM need every page size (1 GiB, then a 2 MiB and 4 KiB pages in tables
//! from the pool), so the live tables the boot VP builds are exercised on both MMUs. RAM it
//! cannot map is reported and refused (ACCESS_DENIED, nothing read), never a fault in VTL2.

use e2e::{call, code, layout, post_message, HOST_CONNECTION, RELAYED};
use hvdef::{HvStatus, HypercallCode};
use mockhv::model::Scenario;
use mockhv::qemu::Arch;
use mockhv::session::{self, SessionConfig};
use std::time::Duration;

const MEMORY_MB: u32 = 6 * 1024 + 3;
const M: u64 = 1 << 20;
const PAGE: u64 = 4096;
const G: u64 = 1 << 30;

/// The machine's RAM, written from QEMU's documented layouts rather than read back from the
/// mock or the firmware: q35 with more than 2.75 GiB keeps 2 GiB below the PCI hole and puts
/// the rest at 4 GiB; virt's RAM starts at 1 GiB.
fn ram(arch: Arch) -> Vec<std::ops::Range<u64>> {
    match arch {
        Arch::X86_64 => vec![0..2 * G, 4 * G..8 * G + 3 * M],
        Arch::Aarch64 => std::iter::once(G..7 * G + 3 * M).collect(),
    }
}

/// A PostMessage with a payload that differs per call, so each relayed copy is identifiable:
/// (what VTL0 writes, what the host must receive: the same bytes with the host's connection id).
fn message(tag: u8) -> (Vec<u8>, Vec<u8>) {
    let mut from_vtl0 = post_message(RELAYED);
    for (i, b) in from_vtl0[16..32].iter_mut().enumerate() {
        *b = tag.wrapping_mul(16).wrapping_add(i as u8);
    }
    let mut to_host = from_vtl0.clone();
    to_host[..4].copy_from_slice(&HOST_CONNECTION.to_le_bytes());
    (from_vtl0, to_host)
}

fn config(arch: Arch, vtl0: Vec<mockhv::model::Vtl0Call>) -> SessionConfig {
    let mut config = SessionConfig::new(e2e::image(arch), Scenario::for_arch(arch));
    config.timeout = Duration::from_secs(120);
    config.memory_mb = MEMORY_MB;
    config.append = Some(e2e::RELAY.to_string());
    config.vtl0 = vtl0;
    config
}

#[test]
fn buffers_above_4g_and_at_the_top_of_ram_are_relayed_byte_for_byte() {
    for arch in Arch::ALL {
        assert_eq!(
            Arch::ram_ranges(arch, MEMORY_MB),
            ram(arch),
            "{arch:?}: the mock's machine layout"
        );
        let top = ram(arch).last().unwrap().end;
        // The first page above 4 GiB (a 1 GiB page), the first of the last 3 MiB (a 2 MiB page),
        // the last page of RAM (a 4 KiB page), and the usual low input page.
        let gpas = [4 * G, top - 3 * M, top - PAGE, layout(arch).input];
        let messages: Vec<_> = (0..gpas.len()).map(|i| message(i as u8 + 1)).collect();
        let vtl0 = gpas
            .iter()
            .zip(&messages)
            .map(|(&gpa, (from_vtl0, _))| {
                call(arch, code(HypercallCode::POST_MESSAGE), gpa, 0).with_memory(gpa, from_vtl0)
            })
            .collect();
        let mut report = session::run(config(arch, vtl0)).expect("the mock session runs");
        assert!(
            report.succeeded(),
            "{arch:?}: {}\n{}",
            report.summary(),
            report.run.console
        );
        let results = e2e::results(&mut report);
        assert_eq!(results.len(), gpas.len(), "{arch:?}");
        for (result, gpa) in results.iter().zip(gpas) {
            assert!(result.reached_vtl2, "{arch:?} {gpa:#x}: reflected");
            assert_eq!(
                result.status(),
                HvStatus::SUCCESS,
                "{arch:?}: the buffer at {gpa:#x} is relayed"
            );
        }
        // Exactly the bytes VTL0 wrote at each GPA reached the host, in order.
        let relays = e2e::vtl2_calls(&report, HypercallCode::POST_MESSAGE);
        assert_eq!(relays.len(), gpas.len(), "{arch:?}");
        for ((relay, (_, to_host)), gpa) in relays.iter().zip(&messages).zip(gpas) {
            assert_eq!(
                &relay.input, to_host,
                "{arch:?}: what the host received for the buffer at {gpa:#x}"
            );
        }
        let line = "not mapped by the paravisor";
        match arch {
            // Page 0 is RAM on q35 and is the only piece left out.
            Arch::X86_64 => assert_eq!(
                report.run.console.matches(line).count(),
                1,
                "{arch:?}: one line, for page 0:\n{}",
                report.run.console
            ),
            Arch::Aarch64 => assert!(
                !report.run.console.contains(line),
                "{arch:?}: all RAM is mapped:\n{}",
                report.run.console
            ),
        }
    }
}

/// q35 reports page 0 as RAM; the paravisor never maps it (a null pointer), so a VTL0 buffer
/// there is refused and the proxy keeps serving. virt has no RAM the paravisor cannot map (the
/// host tests in `boot::paging` cover the address-width, capacity and Device-block cases).
#[test]
fn ram_the_paravisor_does_not_map_is_reported_and_refused_not_fatal() {
    let arch = Arch::X86_64;
    let in_page_0 = 0x800;
    let (from_vtl0, to_host) = message(7);
    let vtl0 = vec![
        call(arch, code(HypercallCode::POST_MESSAGE), in_page_0, 0)
            .with_memory(in_page_0, &from_vtl0),
        call(arch, code(HypercallCode::POST_MESSAGE), 4 * G, 0).with_memory(4 * G, &from_vtl0),
    ];
    let mut report = session::run(config(arch, vtl0)).expect("the mock session runs");
    assert!(
        report.succeeded(),
        "{}\n{}",
        report.summary(),
        report.run.console
    );
    let results = e2e::results(&mut report);
    assert_eq!(results.len(), 2);
    assert!(results[0].reached_vtl2, "reflected");
    assert_eq!(results[0].status(), HvStatus::ACCESS_DENIED, "page 0");
    assert_eq!(results[1].status(), HvStatus::SUCCESS, "still serving");
    let relays = e2e::vtl2_calls(&report, HypercallCode::POST_MESSAGE);
    assert_eq!(relays.len(), 1, "only the mapped buffer was relayed");
    assert_eq!(relays[0].input, to_host);
    let line = "RAM 0x0..0x1000 is not mapped by the paravisor";
    assert!(
        report.run.console.contains(line),
        "console lacks {line:?}:\n{}",
        report.run.console
    );
}
