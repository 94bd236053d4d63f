//! The in-VM mock Hyper-V on both arches: the paravisor's IGVM file boots under it as a VMM's
//! IGVM loader would start it, on one VP and with every VP on its own CPU. (Each arch's own
//! host details are in `invm_arm64` and `invm_x86`.)
#![forbid(unsafe_code)]

use e2e::{assert_lines_in_order, image, invm_image};
use hvdef::{HvStatus, HypercallCode};
use mockhv::invm::{InvmBoot, Paravisor};
use mockhv::model::Event;
use mockhv::qemu::{Arch, Outcome};

/// The IGVM file itself, loaded by the runner as a VMM's IGVM loader would (page data, the
/// parameter areas with the VP count and the guest's memory map, the VTL2 context) and
/// entered by the host with the file's context: the paravisor boots from it as it would on
/// Hyper-V (the loader's parameters, not the device tree or a PVH start info) and reaches its
/// proxy loop.
#[test]
fn the_igvm_file_boots_under_the_in_vm_host() {
    for arch in Arch::ALL {
        let igvm = image(arch).with_extension("igvm");
        let mut boot = InvmBoot::new(arch, invm_image(arch), Paravisor::Igvm(igvm));
        boot.trace = true;
        let in_vm = boot.run().expect("QEMU runs");
        let run = &in_vm.run;
        assert_eq!(
            run.outcome,
            Outcome::Pass,
            "{arch:?}: {}\n{}",
            run.summary(),
            run.console
        );
        let (entry, memory, ram_end) = match arch {
            Arch::Aarch64 => (
                "invm: entering the paravisor at EL1h, pc 0x40200000",
                // The guest's RAM (240 MiB) in two MEMORY ranges either side of VTL2's own
                // memory (the loader marks it VTL2_PROTECTABLE; checked below).
                "boot: from IGVM parameters: 1 VP(s), 2 RAM range(s) totalling ",
                "..0x4f000000",
            ),
            Arch::X86_64 => (
                "invm: entering the paravisor with its IGVM VTL2 context: RIP 0x",
                "boot: from IGVM parameters: 1 VP(s)",
                "..0xf000000",
            ),
        };
        assert_lines_in_order(
            &run.console,
            &[
                entry,
                memory,
                "Hyper-V found",
                "running at VTL2",
                ram_end,
                "proxying VTL0 hypercalls",
                "invm: the paravisor returned to VTL0 with an empty VTL0 script",
            ],
        );
        assert!(!run.console.contains("FAIL"), "{arch:?}: {}", run.console);
        if arch == Arch::Aarch64 {
            // RAM and VTL2 memory together are the guest's 240 MiB, VTL2's a whole number of
            // 2 MiB pieces.
            let line = run
                .console
                .lines()
                .find(|l| l.starts_with("boot: from IGVM parameters"))
                .unwrap_or_default();
            let kib = |after: &str| -> u64 {
                line.split(after)
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("no {after:?} in {line:?}"))
            };
            let (ram, vtl2) = (
                kib("RAM range(s) totalling "),
                kib("VTL2 memory 1 range(s) totalling "),
            );
            assert_eq!(ram + vtl2, 245760, "{line}");
            assert_eq!(vtl2 % 2048, 0, "{line}");
        }
        assert!(
            in_vm
                .events
                .iter()
                .any(|e| matches!(e, Event::Hypercall(_))),
            "{arch:?}: no hypercall in the trace"
        );
    }
}

/// Every VP on its own CPU: the paravisor (booted from its IGVM file, whose parameters give the
/// VP count) starts its APs with HvCallStartVirtualProcessor; the host starts a CPU for each
/// (arm64 PSCI CPU_ON; x86 INIT-SIPI-SIPI into its real-mode trampoline) at the context the
/// model accepted, and the run ends when every VP has returned to its (empty) VTL0. VP 0 enables
/// VTL2 on each AP and starts it, once each, and every call succeeds; every AP makes the same
/// calls (its own, addressed to itself) and ends with its VtlReturn.
#[test]
fn every_vp_runs_on_its_own_cpu() {
    // (code, status) of `vp`'s hypercalls, in order.
    let calls = |events: &[Event], vp: u32| -> Vec<(HypercallCode, Option<HvStatus>)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Hypercall(r) if r.vp == vp => Some((r.code, r.status())),
                _ => None,
            })
            .collect()
    };
    for arch in Arch::ALL {
        let igvm = image(arch).with_extension("igvm");
        for vps in [4, 16] {
            let mut boot = InvmBoot::new(arch, invm_image(arch), Paravisor::Igvm(igvm.clone()));
            boot.trace = true;
            boot.vps = vps;
            let in_vm = boot.run().expect("QEMU runs");
            assert_eq!(
                in_vm.run.outcome,
                Outcome::Pass,
                "{arch:?}: {}",
                in_vm.summary()
            );
            assert_lines_in_order(
                &in_vm.run.console,
                &[
                    &format!("boot: from IGVM parameters: {vps} VP(s)"),
                    &format!("all {vps} VP(s) run at VTL2"),
                    "invm: the paravisor returned to VTL0 with an empty VTL0 script: done after",
                ],
            );
            eprintln!("{arch:?} {vps} VPs in-VM: {:.2?}", in_vm.run.elapsed);
            let bsp = calls(&in_vm.events, 0);
            for code in [
                HypercallCode::ENABLE_VP_VTL,
                HypercallCode::START_VIRTUAL_PROCESSOR,
            ] {
                let made: Vec<_> = bsp.iter().filter(|c| c.0 == code).collect();
                assert_eq!(made.len(), vps as usize - 1, "{arch:?} {vps} VPs: {code:?}");
                assert!(
                    made.iter().all(|c| c.1 == Some(HvStatus::SUCCESS)),
                    "{arch:?}: {made:?}"
                );
            }
            let first_ap = calls(&in_vm.events, 1);
            assert_eq!(
                first_ap.last().map(|c| c.0),
                Some(HypercallCode::VTL_RETURN),
                "{arch:?}: {first_ap:?}"
            );
            for vp in 1..vps {
                let ap = calls(&in_vm.events, vp);
                assert_eq!(ap, first_ap, "{arch:?} {vps} VPs: VP {vp} against VP 1");
                assert!(
                    ap.iter()
                        .all(|c| c.0 == HypercallCode::VTL_RETURN || c.1 == Some(HvStatus::SUCCESS)),
                    "{arch:?} VP {vp}: {ap:?}"
                );
            }
        }
    }
}

/// More VPs than the paravisor once had static room for (64): 72, each on its own CPU, booted
/// from the IGVM file. The heap is sized for all of them (64 KiB and 32 KiB per VP, right after
/// the image), every VP comes up at VTL2, and each AP reads everything it needs about itself
/// and VTL0 in one GetVpRegisters with target VTL0 (HvRegisterVsmVpStatus, HvRegisterVpIndex,
/// then VTL0's entry registers), then (arm64) enables its VP assist page with one
/// SetVpRegisters (x86: its MSR) and returns to VTL0: 2 hypercalls per AP on x86, 3 on arm64.
#[test]
fn seventy_two_vps_boot_and_each_ap_reads_itself_in_one_call() {
    const VPS: u32 = 72;
    for arch in Arch::ALL {
        let igvm = image(arch).with_extension("igvm");
        let mut boot = InvmBoot::new(arch, invm_image(arch), Paravisor::Igvm(igvm));
        boot.trace = true;
        boot.vps = VPS;
        boot.timeout = std::time::Duration::from_secs(600);
        let in_vm = boot.run().expect("QEMU runs");
        assert_eq!(
            in_vm.run.outcome,
            Outcome::Pass,
            "{arch:?}: {}\n{}",
            in_vm.summary(),
            in_vm.run.console
        );
        let elf = mockhv::image::Image::load(&image(arch)).expect("the image parses");
        let heap = e2e::igvm_vtl2_heap(&elf);
        assert_lines_in_order(
            &in_vm.run.console,
            &[
                &format!("boot: from IGVM parameters: {VPS} VP(s)"),
                &format!(
                    "boot: VTL2 heap {:#x}..{:#x} ({} bytes for {VPS} VP(s))",
                    heap.start,
                    heap.end,
                    heap.end - heap.start
                ),
                &format!("all {VPS} VP(s) run at VTL2"),
                &format!("VTL2 memory {:#x}..{:#x}", elf.extent.start, heap.end),
            ],
        );
        eprintln!("{arch:?} {VPS} VPs in-VM: {:.2?}", in_vm.run.elapsed);
        let vp_index_and_status = [
            hvdef::HvRegisterName::VSM_VP_STATUS.0.to_le_bytes(),
            hvdef::HvRegisterName::VP_INDEX.0.to_le_bytes(),
        ]
        .concat();
        let want: &[HypercallCode] = match arch {
            // x86: the SetVpRegisters maps the VP's VTL register page (the host offers it);
            // arm64: it enables the VP assist page (x86 writes its MSR).
            Arch::X86_64 => &[
                HypercallCode::GET_VP_REGISTERS,
                HypercallCode::SET_VP_REGISTERS,
                HypercallCode::VTL_RETURN,
            ],
            Arch::Aarch64 => &[
                HypercallCode::GET_VP_REGISTERS,
                HypercallCode::SET_VP_REGISTERS,
                HypercallCode::VTL_RETURN,
            ],
        };
        for vp in 1..VPS {
            let calls: Vec<_> = in_vm
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::Hypercall(r) if r.vp == vp => Some(r),
                    _ => None,
                })
                .collect();
            let codes: Vec<HypercallCode> = calls.iter().map(|r| r.code).collect();
            assert_eq!(codes, want, "{arch:?} VP {vp}");
            let get = calls[0];
            assert_eq!(get.status(), Some(HvStatus::SUCCESS), "{arch:?} VP {vp}");
            // The header (partition, VP index, target VTL) is 16 bytes; the names follow.
            assert_eq!(
                get.input.get(16..24),
                Some(&vp_index_and_status[..]),
                "{arch:?} VP {vp}: the status and the index first, in one call"
            );
            assert_eq!(
                get.input.get(12),
                Some(&0x10),
                "{arch:?} VP {vp}: target VTL0"
            );
        }
    }
}

/// A loader that lists more VPs than any partition can have (HV_MAXIMUM_PROCESSORS, 2048):
/// the paravisor says so in one line naming the count and the limit and takes 2048. The file
/// declares VTL2 memory with heap room for `boot::heap::IGVM_HEAP_VPS` (1,024) VPs and this
/// loader declares no more, so the boot stops with a line naming the declared range, the room
/// and what 2048 VPs need, before any VP is touched.
#[test]
fn a_vp_count_above_the_tlfs_limit_gets_a_line_naming_both() {
    for arch in Arch::ALL {
        let igvm = image(arch).with_extension("igvm");
        let mut boot = InvmBoot::new(arch, invm_image(arch), Paravisor::Igvm(igvm));
        boot.listed_vps = Some(3000);
        boot.timeout = std::time::Duration::from_secs(300);
        let in_vm = boot.run().expect("QEMU runs");
        assert_eq!(
            in_vm.run.outcome,
            Outcome::Fail,
            "{arch:?}: {}",
            in_vm.summary()
        );
        let elf = mockhv::image::Image::load(&image(arch)).expect("the image parses");
        let heap = e2e::igvm_vtl2_heap(&elf);
        let declared_start = elf.extent.start;
        let needed = 64 * 1024 + 2048 * 32 * 1024;
        assert_lines_in_order(
            &in_vm.run.console,
            &[
                "boot: the IGVM VpCount parameter lists 3000 VPs, more than the TLFS limit of \
                 2048 (HV_MAXIMUM_PROCESSORS); the paravisor serves VPs 0..2047 and starts no \
                 others",
                "boot: from IGVM parameters: 2048 VP(s)",
                &format!(
                    "FATAL: no room for the VTL2 heap of {needed} bytes for 2048 VP(s): the \
                     declared VTL2 memory {declared_start:#x}..{:#x} leaves {} bytes after the \
                     image, {needed} needed (the loader must declare more VTL2 memory, or report \
                     fewer VPs)",
                    heap.end,
                    heap.end - heap.start
                ),
            ],
        );
        assert!(
            !in_vm.run.console.contains("paravisor 0.1.0"),
            "{arch:?}: the firmware ran without its heap:\n{}",
            in_vm.run.console
        );
    }
}
