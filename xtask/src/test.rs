//! `cargo xtask test`: every check CI runs, in order, each with its wall time.

use crate::{harness, image, workspace_root};
use anyhow::{bail, Result};
use mockhv::qemu::{ensure_qemu, Arch};
use std::process::Command;
use std::time::Instant;

/// The crates that build for the bare-metal targets (`hvmodel`, the mock's TLFS model, so it
/// stays no_std for the in-VM hypervisor; `vtl0`, the VTL0 test kernel).
const FIRMWARE_CRATES: [&str; 5] = ["hvdef", "boot", "paravisor", "hvmodel", "vtl0"];

fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root()).args(args);
    cmd
}

/// `cargo SUBCOMMAND` for `arch`'s bare-metal target over the firmware crates.
fn firmware_cargo(subcommand: &str, arch: Arch) -> Command {
    let mut cmd = cargo(&[subcommand, "--target", arch.target_triple()]);
    for krate in FIRMWARE_CRATES {
        cmd.args(["--package", krate]);
    }
    // The in-VM mock hypervisor's host (EL2 on arm64, SVM on x86_64).
    cmd.args(["--package", "invm"]);
    cmd
}

fn firmware_clippy(arch: Arch) -> Command {
    let mut cmd = firmware_cargo("clippy", arch);
    cmd.args(["--", "-D", "warnings"]);
    cmd
}

/// One step of the suite: Ok(false) is a failure the step already explained on the console.
type Step = Box<dyn Fn() -> Result<bool>>;

pub fn run() -> Result<()> {
    let started = Instant::now();
    for arch in Arch::ALL {
        ensure_qemu(arch)?;
    }
    crate::toolchain::ensure_targets(&Arch::ALL)?;
    let images = image::image_dir();
    let mut e2e = cargo(&["test", "--package", "e2e"]);
    e2e.env("PARAVISOR_IMAGE_DIR", &images);
    // Broken intra-doc links are errors, so the docs cannot rot silently: private items too,
    // and the firmware-only modules (arch, per-CPU state, run loop), which only the bare-metal
    // targets build.
    let mut docs = vec![cargo(&["doc", "--workspace"])];
    docs.extend(Arch::ALL.map(|arch| firmware_cargo("doc", arch)));
    for cmd in &mut docs {
        cmd.args(["--no-deps", "--document-private-items"]);
        cmd.env("RUSTDOCFLAGS", "-D warnings");
    }
    let steps: Vec<(&str, Step)> = vec![
        ("format", run_cmd(cargo(&["fmt", "--all", "--", "--check"]))),
        (
            "clippy (host)",
            run_cmd(cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])),
        ),
        ("docs (rustdoc, warnings denied)", run_all(docs)),
        (
            "clippy (x86_64 firmware)",
            run_cmd(firmware_clippy(Arch::X86_64)),
        ),
        (
            "clippy (aarch64 firmware)",
            run_cmd(firmware_clippy(Arch::Aarch64)),
        ),
        (
            "unit tests (host)",
            run_cmd(cargo(&["test", "--workspace", "--exclude", "e2e"])),
        ),
        (
            "images (release, both arches)",
            Box::new(|| image::build_all(&Arch::ALL, true, None).map(|_| true)),
        ),
        ("end-to-end tests (QEMU)", run_cmd(e2e)),
        (
            "soak through the real VTL0 (QEMU, in-VM host, 20,000 entries per arch)",
            Box::new(|| {
                let opts = harness::SoakOptions {
                    calls: 20_000,
                    seed: harness::DEFAULT_SEED,
                    boot: None,
                };
                harness::soak(&Arch::ALL, &opts).map(|()| true)
            }),
        ),
    ];
    let (mut passed, mut failed) = (0, Vec::new());
    for (name, step) in &steps {
        println!("\n== xtask test: {name}");
        let t = Instant::now();
        let ok = step().unwrap_or_else(|e| {
            eprintln!("xtask: {name}: {e:#}");
            false
        });
        println!(
            "== {name}: {} in {:.1}s",
            if ok { "ok" } else { "FAILED" },
            t.elapsed().as_secs_f64()
        );
        if ok {
            passed += 1;
        } else {
            failed.push(*name);
        }
    }
    println!(
        "\nxtask test finished in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    println!("steps: {passed} passed, {} failed", failed.len());
    if !failed.is_empty() {
        bail!("failed steps: {}", failed.join(", "));
    }
    Ok(())
}

/// Runs every command, in order, even after one fails, so a step shows all its failures.
fn run_all(cmds: Vec<Command>) -> Step {
    let cmds = std::cell::RefCell::new(cmds);
    Box::new(move || {
        let mut ok = true;
        for cmd in cmds.borrow_mut().iter_mut() {
            ok &= cmd.status()?.success();
        }
        Ok(ok)
    })
}

fn run_cmd(cmd: Command) -> Step {
    let cmd = std::cell::RefCell::new(cmd);
    Box::new(move || Ok(cmd.borrow_mut().status()?.success()))
}
