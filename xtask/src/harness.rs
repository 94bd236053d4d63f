//! `cargo xtask run`, `bench` and `soak`: xtask builds the images they boot and the test
//! harness (`tests/harness`) as artifacts, then runs the harness's engine on them with the
//! options a person gave here (checked by xtask's command line). So xtask links neither the
//! paravisor nor a test crate; the engines, which need the proxy's tables and the suites'
//! helpers, live with the suites.

use crate::{image, workspace_root};
use anyhow::{bail, Context, Result};
use mockhv::qemu::{ensure_qemu, Arch};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// The soak's seed when none is given.
pub const DEFAULT_SEED: u64 = 0x50a6_2025;

/// The harness's exit status for a `run` that booted but did not pass (its `RUN_FAILED`).
const RUN_FAILED: i32 = 2;

/// A failure the harness already reported on the console (its own `xtask: error:` line).
#[derive(Debug)]
pub struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the test harness failed (its error is above)")
    }
}

impl std::error::Error for Reported {}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Builds the harness (the host's dev profile, as xtask itself) and gives its path.
fn build() -> Result<PathBuf> {
    let status = cargo()
        .args(["build", "--package", "harness", "--bin", "harness"])
        .status()
        .context("cannot start cargo")?;
    if !status.success() {
        bail!("building the test harness failed (see the compiler output above)");
    }
    Ok(workspace_root().join("target/debug/harness"))
}

/// Runs the harness at `bin` with `args`, on the images in [`image::image_dir`], its progress
/// lines stamped on xtask's clock and its errors named as xtask's.
fn run_harness(bin: &Path, args: &[String]) -> Result<ExitStatus> {
    use std::os::unix::process::CommandExt;
    Command::new(bin)
        .arg0("xtask")
        .args(args)
        .env("PARAVISOR_IMAGE_DIR", image::image_dir())
        .env(
            mockhv::progress::STARTED_ENV,
            mockhv::progress::started_env_value(),
        )
        .status()
        .with_context(|| format!("cannot start {}", bin.display()))
}

/// Ok if the harness succeeded, else [`Reported`].
fn succeeded(status: ExitStatus) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        Err(Reported.into())
    }
}

fn arch_args(arches: &[Arch]) -> Vec<String> {
    arches
        .iter()
        .flat_map(|a| ["--arch".to_string(), a.name().to_string()])
        .collect()
}

/// How `run` boots.
pub struct RunOptions<'a> {
    pub release: bool,
    pub smp: u32,
    pub append: &'a str,
    pub timeout: u64,
    /// QEMU waits for a debugger on this TCP port.
    pub gdb: Option<u16>,
    /// Load VTL2 at this base (the IGVM file's relocation region must allow it).
    pub vtl2_base: Option<u64>,
}

/// `cargo xtask run`: per arch, its images built, then the harness's boot of them; the arches
/// whose run did not pass are named at the end.
pub fn run(arches: &[Arch], options: &RunOptions<'_>) -> Result<()> {
    let bin = build()?;
    let mut failed = Vec::new();
    for &arch in arches {
        ensure_qemu(arch)?;
        crate::progress(format_args!(
            "run {}: building the images (paravisor, in-VM mock host, VTL0 test kernel; a first \
             build takes a few minutes)",
            arch.name()
        ));
        image::build_all(&[arch], options.release, None)?;
        let mut args: Vec<String> = vec!["run".into(), "--arch".into(), arch.name().into()];
        if options.release {
            args.push("--release".into());
        }
        args.push(format!("--smp={}", options.smp));
        args.push(format!("--append={}", options.append));
        args.push(format!("--timeout={}", options.timeout));
        if let Some(base) = options.vtl2_base {
            args.push(format!("--vtl2-base={base}"));
        }
        if let Some(port) = options.gdb {
            args.push(format!("--gdb={port}"));
        }
        let status = run_harness(&bin, &args)?;
        match status.code() {
            Some(0) => {}
            Some(RUN_FAILED) => failed.push(arch.name()),
            _ => return Err(Reported.into()),
        }
    }
    if !failed.is_empty() {
        bail!("run failed on {}", failed.join(", "));
    }
    Ok(())
}

/// `cargo xtask bench`: the release images of every arch built, then the harness's bench.
pub fn bench(arches: &[Arch], before: Option<&Path>, per_call: bool) -> Result<()> {
    let bin = build()?;
    for &arch in arches {
        ensure_qemu(arch)?;
        crate::progress(format_args!(
            "bench {}: building the release images",
            arch.name()
        ));
        image::build_live(arch)?;
    }
    let mut args = vec!["bench".to_string()];
    args.extend(arch_args(arches));
    if let Some(dir) = before {
        args.push("--before".into());
        args.push(dir.display().to_string());
    }
    if per_call {
        args.push("--per-call".into());
    }
    succeeded(run_harness(&bin, &args)?)
}

/// What `soak` runs.
pub struct SoakOptions {
    pub calls: u32,
    pub seed: u64,
    /// Only this boot of each arch's stream (`--boot`).
    pub boot: Option<usize>,
}

/// `cargo xtask soak`: the release images of every arch built, then the harness's soak.
pub fn soak(arches: &[Arch], opts: &SoakOptions) -> Result<()> {
    let bin = build()?;
    for &arch in arches {
        ensure_qemu(arch)?;
        crate::progress(format_args!(
            "soak {}: building the release images",
            arch.name()
        ));
        image::build_live(arch)?;
    }
    let mut args = vec!["soak".to_string()];
    args.extend(arch_args(arches));
    args.push(format!("--calls={}", opts.calls));
    args.push(format!("--seed={}", opts.seed));
    if let Some(boot) = opts.boot {
        args.push(format!("--boot={boot}"));
    }
    succeeded(run_harness(&bin, &args)?)
}
