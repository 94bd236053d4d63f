//! The in-VM mock Hyper-V against the gdbstub mock, on both arches: the same image booted
//! under each gives the host's model exactly the events the gdbstub mock's model sees, from the
//! ELF and from the IGVM file, on one VP and with every VP on its own CPU. (Each arch's own
//! host details are in `invm_arm64` and `invm_x86`.)

use e2e::{assert_lines_in_order, image, invm_image};
use mockhv::invm::{InvmBoot, Paravisor};
use mockhv::model::{Event, Scenario};
use mockhv::qemu::{Arch, Outcome};
use mockhv::session::{self, SessionConfig};
use std::time::Duration;

/// The gdbstub mock's model on the same image and VP count (from the IGVM file if given).
fn gdbstub(arch: Arch, vps: u32, igvm: Option<std::path::PathBuf>) -> mockhv::session::Report {
    let mut scenario = Scenario::for_arch(arch);
    scenario.vp_count = vps;
    let mut config = SessionConfig::new(image(arch), scenario);
    config.igvm = igvm;
    config.timeout = Duration::from_secs(90);
    let report = session::run(config).expect("the gdbstub session runs");
    assert!(report.succeeded(), "{arch:?}: {}", report.summary());
    report
}

/// The same image, one VP, under both mocks: the in-VM host's model sees exactly the events
/// (every call's code, control word, GPAs, input and output bytes and outcome; every SMCCC
/// call; every CPUID leaf and MSR access with its result) the gdbstub mock's model sees. The
/// host writes its trace through semihosting (arm64) or the debugcon port (x86).
#[test]
fn the_in_vm_trace_equals_the_gdbstub_mock_trace() {
    for arch in Arch::ALL {
        let mut boot = InvmBoot::new(arch, invm_image(arch), Paravisor::Elf(image(arch)));
        boot.trace = true;
        let in_vm = boot.run().expect("QEMU runs");
        assert_eq!(
            in_vm.run.outcome,
            Outcome::Pass,
            "{arch:?}: {}",
            in_vm.summary()
        );
        let report = gdbstub(arch, 1, None);
        let calls = in_vm
            .events
            .iter()
            .filter(|e| matches!(e, Event::Hypercall(_)))
            .count();
        assert!(
            calls > 10,
            "{arch:?}: too short a trace to mean anything: {:?}",
            in_vm.events
        );
        if arch == Arch::X86_64 {
            for (kind, seen) in [
                (
                    "CPUID",
                    in_vm
                        .events
                        .iter()
                        .any(|e| matches!(e, Event::Cpuid { .. })),
                ),
                (
                    "RDMSR",
                    in_vm
                        .events
                        .iter()
                        .any(|e| matches!(e, Event::Rdmsr { .. })),
                ),
                (
                    "WRMSR",
                    in_vm
                        .events
                        .iter()
                        .any(|e| matches!(e, Event::Wrmsr { .. })),
                ),
            ] {
                assert!(
                    seen,
                    "no {kind} event in the in-VM trace: {:?}",
                    in_vm.events
                );
            }
        }
        assert!(
            in_vm.run.console.contains(&format!("({calls} hypercalls)")),
            "{arch:?}: the host's count and its trace differ:\n{}",
            in_vm.run.console
        );
        eprintln!(
            "{arch:?} same boot: in-VM {:.2?}, gdbstub mock {:.2?}",
            in_vm.run.elapsed, report.run.elapsed
        );
        assert_eq!(
            in_vm.events,
            report.trace().events(),
            "{arch:?}: in-VM trace (left) differs from the gdbstub mock's (right)"
        );
    }
}

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
                // 240 MiB: the guest's RAM alone.
                "boot: from IGVM parameters: 1 VP(s), 1 RAM range(s) totalling 245760 KiB",
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
/// model accepted, and the run ends when every VP has returned to its (empty) VTL0. Each VP's
/// own sequence of events is the one the gdbstub mock's model sees for that VP booting the same
/// file (the VPs interleave differently).
#[test]
fn every_vp_runs_on_its_own_cpu_with_the_calls_the_gdbstub_mock_sees() {
    let per_vp = |events: &[Event], vp: u32| -> Vec<Event> {
        events
            .iter()
            .filter(|e| match e {
                Event::Hypercall(r) => r.vp == vp,
                Event::Smccc { vp: v, .. }
                | Event::Cpuid { vp: v, .. }
                | Event::Rdmsr { vp: v, .. }
                | Event::Wrmsr { vp: v, .. } => *v == vp,
                _ => false,
            })
            .cloned()
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
            if vps > 4 {
                continue;
            }
            let report = gdbstub(arch, vps, Some(igvm.clone()));
            for vp in 0..vps {
                let ours = per_vp(&in_vm.events, vp);
                let theirs = per_vp(report.trace().events(), vp);
                assert!(!ours.is_empty(), "{arch:?}: VP {vp} made no calls");
                if let Some(at) =
                    (0..ours.len().max(theirs.len())).find(|&i| ours.get(i) != theirs.get(i))
                {
                    panic!(
                        "{arch:?} VP {vp}: event {at} of {}/{} differs: in-VM {:?}, gdbstub {:?}",
                        ours.len(),
                        theirs.len(),
                        ours.get(at),
                        theirs.get(at)
                    );
                }
            }
        }
    }
}
