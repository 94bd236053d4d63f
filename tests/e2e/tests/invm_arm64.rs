//! The in-VM mock Hyper-V on arm64 (`tests/invm`): QEMU boots the EL2 host with `-kernel` and
//! the real paravisor image with the generic loader; the host runs the paravisor at EL1 under
//! stage 2 and answers every `hvc` with the TLFS model. With no VTL0 the paravisor's first
//! VtlReturn (after it reached its proxy loop) ends the run, and the host exits QEMU with pass.
//! The host writes its model's trace through semihosting (the runner's file).
//!
//! Needs `cargo xtask image --arch aarch64 --release` (which also builds
//! `target/images/invm-aarch64.elf`) and `PARAVISOR_IMAGE_DIR=target/images`, as the other
//! suites; `cargo xtask test` does both.
#![forbid(unsafe_code)]

use e2e::{assert_lines_in_order, image};
use mockhv::model::{Event, Scenario};
use mockhv::qemu::{Arch, Outcome, Qemu, QemuConfig, RunResult};
use std::path::PathBuf;
use std::time::Duration;

fn invm_image() -> PathBuf {
    e2e::invm_image(Arch::Aarch64)
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

/// The runner's scenario reaches the host's model: with `intercept_page_available` clear the
/// paravisor refuses to run (one line naming it) before it ever returns to VTL0 (the former
/// gdbstub suite `mock_no_intercept_page`).
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
