//! `cargo xtask mutants`: mutation testing (the cargo-mutants crate) over the paravisor's
//! host-testable proxy and hypercall layer, the code that handles what VTL0 and the host send.
//! Reports caught / missed / unviable and every missed mutant; writes `target/mutants.md`.
//! Slow (minutes), so not part of `cargo xtask test`; the figures go in docs/BENCHMARKS.md.

use crate::workspace_root;
use anyhow::{bail, Context, Result};
use std::process::Command;
use std::time::Instant;

/// The modules mutated: everything VTL0 input and host answers flow through on the host-tested
/// side (`arch/`, `runloop`, `firmware` are bare-metal only and covered by the QEMU suites).
const FILES: [&str; 2] = ["paravisor/src/proxy/*.rs", "paravisor/src/hypercall/*.rs"];

fn ensure_cargo_mutants() -> Result<()> {
    let found = Command::new("cargo")
        .args(["mutants", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Ok(());
    }
    println!("xtask: cargo-mutants is missing; running `cargo install cargo-mutants --locked`");
    let status = Command::new("cargo")
        .args(["install", "cargo-mutants", "--locked"])
        .status()
        .context("running cargo install")?;
    if !status.success() {
        bail!("`cargo install cargo-mutants --locked` failed; run it by hand and retry");
    }
    Ok(())
}

pub fn run(jobs: usize) -> Result<()> {
    ensure_cargo_mutants()?;
    let root = workspace_root();
    let out_dir = root.join("target");
    let started = Instant::now();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&root)
        .args(["mutants", "-p", "paravisor", "--timeout", "120"]);
    cmd.arg("-j").arg(jobs.to_string());
    cmd.arg("--output").arg(&out_dir);
    for file in FILES {
        cmd.args(["--file", file]);
    }
    println!(
        "xtask: mutating {} ({} job(s)); this takes minutes",
        FILES.join(", "),
        jobs
    );
    let output = cmd.output().context("running cargo mutants")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // cargo-mutants exits 2 when mutants were missed, 0 when none; other codes are failures
    // of the run itself (e.g. the unmutated tree does not pass its tests).
    if !matches!(output.status.code(), Some(0 | 2)) {
        bail!(
            "cargo mutants failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let summary = stdout
        .lines()
        .rfind(|l| l.contains("mutants tested"))
        .unwrap_or("no summary line from cargo mutants")
        .to_string();
    let missed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("MISSED")).collect();
    let mut report = format!(
        "# Mutation testing\n\n`cargo xtask mutants` over {} ({:.0} s):\n\n- {summary}\n",
        FILES.join(", "),
        started.elapsed().as_secs_f64()
    );
    for line in &missed {
        report.push_str(&format!("  - {line}\n"));
    }
    print!("{report}");
    let path = out_dir.join("mutants.md");
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    println!("(written to {})", path.display());
    Ok(())
}
