//! The in-VM mock Hyper-V on arm64 (`tests/invm`): QEMU boots the EL2 host with `-kernel` and
//! the real paravisor image with the generic loader; the host runs the paravisor at EL1 under
//! stage 2 and answers every `hvc` with the TLFS model, no gdbstub involved. With an empty
//! VTL0 script the paravisor's first VtlReturn (after it reached its proxy loop) ends the run,
//! and the host exits QEMU with pass. The host prints its model's trace as one line, which must
//! equal the gdbstub mock's trace of the same boot, call for call and byte for byte.
//!
//! Needs `cargo xtask image --arch aarch64 --release` (which also builds
//! `target/images/invm-aarch64.elf`) and `PARAVISOR_IMAGE_DIR=target/images`, as the other
//! suites; `cargo xtask test` does both.

use e2e::image;
use mockhv::model::{Event, Scenario};
use mockhv::qemu::{Arch, Outcome, Qemu, QemuConfig, RunResult};
use mockhv::session::{self, SessionConfig};
use std::path::PathBuf;
use std::time::Duration;

/// The EL2 host next to the paravisor images.
fn invm_image() -> PathBuf {
    let paravisor = image(Arch::Aarch64);
    let path = paravisor.with_file_name("invm-aarch64.elf");
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask image --arch aarch64 --release`",
        path.display()
    );
    path
}

/// Boots the host at EL2 (unless `el2` is false) with the paravisor loaded at 0x40200000.
fn boot(el2: bool, append: Option<&str>) -> RunResult {
    let mut extra_args: Vec<String> = Vec::new();
    if el2 {
        // Merged with the runner's `-machine virt`.
        extra_args.extend(["-machine".into(), "virtualization=on".into()]);
    }
    // The generic loader places the ELF's segments and leaves the PC alone: the host enters
    // the paravisor itself.
    extra_args.push("-device".into());
    extra_args.push(format!(
        "loader,file={}",
        image(Arch::Aarch64).to_str().expect("UTF-8 image path")
    ));
    let mut qemu = Qemu::spawn(&QemuConfig {
        append: append.map(str::to_string),
        timeout: Duration::from_secs(30),
        extra_args,
        ..QemuConfig::new(Arch::Aarch64, Some(invm_image()))
    })
    .expect("QEMU starts");
    qemu.wait().expect("QEMU run completes")
}

fn assert_lines_in_order(console: &str, needles: &[&str]) {
    let mut rest = console;
    for needle in needles {
        match rest.find(needle) {
            Some(at) => rest = &rest[at + needle.len()..],
            None => panic!("console lacks {needle:?} (in this order):\n{console}"),
        }
    }
}

#[test]
fn paravisor_reaches_its_proxy_loop_under_the_in_vm_host() {
    let run = boot(true, None);
    assert_eq!(
        run.outcome,
        Outcome::Pass,
        "{}\nconsole:\n{}",
        run.summary(),
        run.console
    );
    assert_lines_in_order(
        &run.console,
        &[
            "invm: in-VM mock Hyper-V (aarch64), at EL2",
            // The host keeps the last 16 MiB; the paravisor must not see them as RAM.
            "invm: device tree: memory 0x40000000+0x10000000 cut to 0x40000000+0xf000000",
            "invm: entering the paravisor at EL1h, pc 0x40200000",
            // Entered at EL1 by the host, not dropped from EL2 by itself.
            "paravisor 0.1.0 (aarch64, EL1 (entered at EL1))",
            "Hyper-V found",
            "running at VTL2",
            "all 1 VP(s) run at VTL2",
            "intercept installed: UnknownSynicConnection",
            "intercept installed: RetargetInterruptWithUnknownDeviceId",
            "protected from VTL0",
            "proxying VTL0 hypercalls",
            "invm: the paravisor returned to VTL0 with an empty VTL0 script",
        ],
    );
    assert!(
        run.console.contains("..0x4f000000") && !run.console.contains("..0x50000000"),
        "the paravisor counts the host's memory as VTL0's:\n{}",
        run.console
    );
    assert!(
        !run.console.contains("FAIL"),
        "a failure line in a passing run:\n{}",
        run.console
    );
    eprintln!("in-VM boot: {:.2?}", run.elapsed);
}

#[test]
fn the_paravisor_reads_its_command_line_from_the_device_tree_and_its_failure_is_a_failure() {
    let run = boot(true, Some("pv.test=panic"));
    assert_eq!(run.outcome, Outcome::Fail, "{}", run.summary());
    assert_lines_in_order(
        &run.console,
        &[
            "command line \"pv.test=panic\", 1 VP(s)",
            "PANIC on cpu 0: pv.test=panic",
        ],
    );
    assert!(!run.console.contains("proxying VTL0 hypercalls"));
}

#[test]
fn the_host_refuses_to_run_without_el2() {
    let run = boot(false, None);
    assert_eq!(run.outcome, Outcome::Fail, "{}", run.summary());
    assert_lines_in_order(
        &run.console,
        &["invm: FAIL: entered at EL1, not EL2: run QEMU with -machine virt,virtualization=on"],
    );
    assert!(
        !run.console.contains("paravisor 0.1.0"),
        "the paravisor must not run without the host:\n{}",
        run.console
    );
}

/// The same image, one VP, under both mocks: the in-VM host's model sees exactly the events
/// (every call's code, control word, GPAs, input and output bytes and outcome; every SMCCC
/// call) the gdbstub mock's model sees. The host writes its trace through semihosting.
#[test]
fn the_in_vm_trace_equals_the_gdbstub_mock_trace() {
    use mockhv::invm::{InvmBoot, Paravisor};
    let mut boot = InvmBoot::new(
        Arch::Aarch64,
        invm_image(),
        Paravisor::Elf(image(Arch::Aarch64)),
    );
    boot.trace = true;
    let in_vm = boot.run().expect("QEMU runs");
    assert_eq!(in_vm.run.outcome, Outcome::Pass, "{}", in_vm.run.summary());

    let mut scenario = Scenario::for_arch(Arch::Aarch64);
    scenario.vp_count = 1;
    let mut config = SessionConfig::new(image(Arch::Aarch64), scenario);
    config.timeout = Duration::from_secs(60);
    let report = session::run(config).expect("the gdbstub session runs");
    assert!(report.succeeded(), "{}", report.summary());
    let gdbstub = report.trace().events();
    let calls = in_vm
        .events
        .iter()
        .filter(|e| matches!(e, Event::Hypercall(_)))
        .count();
    assert!(
        calls > 10,
        "too short a trace to mean anything: {:?}",
        in_vm.events
    );
    assert!(
        in_vm.run.console.contains(&format!("({calls} hypercalls)")),
        "the host's count and its trace differ:\n{}",
        in_vm.run.console
    );
    eprintln!(
        "same boot: in-VM {:.2?}, gdbstub mock {:.2?}",
        in_vm.run.elapsed, report.run.elapsed
    );
    assert_eq!(
        in_vm.events, gdbstub,
        "in-VM trace (left) differs from the gdbstub mock's (right)"
    );
}

/// The IGVM file itself, loaded by the runner as a VMM's IGVM loader would (page data, the
/// parameter areas with the VP count and the guest's memory map, the VTL2 context) and
/// entered by the host with the file's context: the paravisor boots from it as it would on
/// Hyper-V and reaches its proxy loop.
#[test]
fn the_igvm_file_boots_under_the_in_vm_host() {
    use mockhv::invm::{InvmBoot, Paravisor};
    let igvm = image(Arch::Aarch64).with_extension("igvm");
    let run = InvmBoot::new(Arch::Aarch64, invm_image(), Paravisor::Igvm(igvm))
        .run()
        .expect("QEMU runs")
        .run;
    assert_eq!(
        run.outcome,
        Outcome::Pass,
        "{}\nconsole:\n{}",
        run.summary(),
        run.console
    );
    assert_lines_in_order(
        &run.console,
        &[
            "invm: entering the paravisor at EL1h, pc 0x40200000",
            // The loader's parameters, not the device tree: 240 MiB is the guest's RAM alone.
            "boot: from IGVM parameters: 1 VP(s), 1 RAM range(s) totalling 245760 KiB",
            "paravisor 0.1.0 (aarch64, EL1 (entered at EL1))",
            "Hyper-V found",
            "VTL0 memory 0x40000000..0x40200000",
            "..0x4f000000",
            "proxying VTL0 hypercalls",
            "invm: the paravisor returned to VTL0 with an empty VTL0 script",
        ],
    );
    assert!(!run.console.contains("FAIL"), "{}", run.console);
}

/// Every VP on its own CPU: the paravisor starts its APs with HvCallStartVirtualProcessor, the
/// host starts a CPU for each (PSCI CPU_ON) at the context the model accepted, and the run ends
/// when every VP has returned to its (empty) VTL0. Each VP's own sequence of events is the one
/// the gdbstub mock's model sees for that VP (the VPs interleave differently).
#[test]
fn every_vp_runs_on_its_own_cpu_with_the_calls_the_gdbstub_mock_sees() {
    use mockhv::invm::{InvmBoot, Paravisor};
    let per_vp = |events: &[Event], vp: u32| -> Vec<Event> {
        events
            .iter()
            .filter(|e| match e {
                Event::Hypercall(r) => r.vp == vp,
                Event::Smccc { vp: v, .. } => *v == vp,
                _ => false,
            })
            .cloned()
            .collect()
    };
    for vps in [4, 16] {
        let mut boot = InvmBoot::new(
            Arch::Aarch64,
            invm_image(),
            Paravisor::Elf(image(Arch::Aarch64)),
        );
        boot.trace = true;
        boot.vps = vps;
        let in_vm = boot.run().expect("QEMU runs");
        assert_eq!(
            in_vm.run.outcome,
            Outcome::Pass,
            "{}\n{}",
            in_vm.run.summary(),
            in_vm.run.console
        );
        assert_lines_in_order(
            &in_vm.run.console,
            &[
                &format!("command line \"\", {vps} VP(s)"),
                &format!("all {vps} VP(s) run at VTL2"),
                "invm: the paravisor returned to VTL0 with an empty VTL0 script: done after",
            ],
        );
        eprintln!("{vps} VPs in-VM: {:.2?}", in_vm.run.elapsed);
        if vps > 4 {
            continue;
        }
        let mut scenario = Scenario::for_arch(Arch::Aarch64);
        scenario.vp_count = vps;
        let mut config = SessionConfig::new(image(Arch::Aarch64), scenario);
        config.timeout = Duration::from_secs(90);
        let report = session::run(config).expect("the gdbstub session runs");
        assert!(report.succeeded(), "{}", report.summary());
        eprintln!("{vps} VPs gdbstub: {:.2?}", report.run.elapsed);
        for vp in 0..vps {
            let ours = per_vp(&in_vm.events, vp);
            assert!(!ours.is_empty(), "VP {vp} made no calls");
            assert_eq!(
                ours,
                per_vp(report.trace().events(), vp),
                "VP {vp}: in-VM (left) and gdbstub (right) differ"
            );
        }
    }
}

/// The runner's scenario reaches the host's model: with `intercept_page_available` clear the
/// paravisor refuses to run (one line naming it) before it ever returns to VTL0, as under the
/// gdbstub mock (`mock_no_intercept_page`).
#[test]
fn the_runners_scenario_is_the_partition_the_paravisor_meets() {
    use hvdef::{HvRegisterVsmCapabilities, HypercallCode};
    use mockhv::invm::{InvmBoot, Paravisor};
    let mut scenario = Scenario::for_arch(Arch::Aarch64);
    scenario.vsm_capabilities = HvRegisterVsmCapabilities::new();
    let mut boot = InvmBoot::new(
        Arch::Aarch64,
        invm_image(),
        Paravisor::Elf(image(Arch::Aarch64)),
    );
    boot.scenario = Some(scenario);
    boot.trace = true;
    let run = boot.run().expect("QEMU runs");
    assert_eq!(run.run.outcome, Outcome::Fail, "{}", run.run.summary());
    assert!(run.run.console.contains("invm: the runner's scenario ("));
    let line = "VsmCapabilities.intercept_page_available is clear";
    assert_eq!(
        run.run.console.lines().filter(|l| l.contains(line)).count(),
        1,
        "{}",
        run.run.console
    );
    let returns = run
        .events
        .iter()
        .filter(|e| matches!(e, Event::Hypercall(r) if r.code == HypercallCode::VTL_RETURN))
        .count();
    assert_eq!(returns, 0, "VTL0 never ran");
    assert!(
        run.events
            .iter()
            .any(|e| matches!(e, Event::Hypercall(r) if r.code == HypercallCode::GET_VP_REGISTERS)),
        "the trace holds the boot's calls up to the refusal: {:?}",
        run.events
    );
}
