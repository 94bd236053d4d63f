//! The test harness's engines behind `cargo xtask run`, `bench` and `soak`: each boots the
//! images xtask built (in `PARAVISOR_IMAGE_DIR`, as for the end-to-end suites) under the in-VM
//! mock Hyper-V with the VTL0 test kernel, and checks or measures what VTL0 and the host saw.
//!
//! xtask builds the firmware and this binary as artifacts and runs it with the options a person
//! gave xtask, already checked there (the user's interface, with its help and limits, is
//! xtask's): so xtask links neither the paravisor nor a test crate, while the soak and bench,
//! which need the proxy's tables and the suites' helpers, live with the suites.
#![forbid(unsafe_code)]

mod bench;
mod live;
mod run;
mod soak;

use anyhow::Result;
use clap::{Parser, Subcommand};
use mockhv::qemu::Arch;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    about = "The live-VTL0 run, bench and soak; run them through `cargo xtask run|bench|soak`, \
                   which build the images first"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// `cargo xtask run` for one arch, whose images xtask built; exits with status 2
    /// (`RUN_FAILED`) if the run did not pass.
    Run {
        #[arg(long, value_parser = parse_arch)]
        arch: Arch,
        #[arg(long)]
        release: bool,
        #[arg(long)]
        smp: u32,
        #[arg(long, default_value = "")]
        append: String,
        #[arg(long)]
        vtl2_base: Option<u64>,
        #[arg(long)]
        timeout: u64,
        #[arg(long)]
        gdb: Option<u16>,
    },
    /// `cargo xtask bench` on the release images of these arches.
    Bench {
        #[arg(long = "arch", value_parser = parse_arch, required = true)]
        arches: Vec<Arch>,
        #[arg(long)]
        before: Option<PathBuf>,
        #[arg(long)]
        per_call: bool,
    },
    /// `cargo xtask soak` on the release images of these arches.
    Soak {
        #[arg(long = "arch", value_parser = parse_arch, required = true)]
        arches: Vec<Arch>,
        #[arg(long)]
        calls: u32,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        boot: Option<usize>,
    },
}

/// The exit status of a `run` that booted but did not pass (xtask names the arch and goes on to
/// the next one; any other failure is an error, which stops it).
const RUN_FAILED: i32 = 2;

fn main() {
    progress_clock_starts();
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::Run {
            arch,
            release,
            smp,
            append,
            vtl2_base,
            timeout,
            gdb,
        } => run::run_invm(
            arch,
            &run::Options {
                release,
                smp,
                append: &append,
                timeout,
                gdb,
                vtl2_base,
            },
        )
        .map(|passed| {
            if !passed {
                std::process::exit(RUN_FAILED);
            }
        }),
        Command::Bench {
            arches,
            before,
            per_call,
        } => bench::run(&arches, before.as_deref(), per_call),
        Command::Soak {
            arches,
            calls,
            seed,
            boot,
        } => soak::run(&arches, &soak::Options { calls, seed, boot }),
    };
    if let Err(e) = result {
        // xtask runs this binary as `xtask` (its argv[0]): the error reads as it always did.
        let argv0 = std::env::args_os().next().map(PathBuf::from);
        let name = argv0
            .as_deref()
            .and_then(|p| p.file_name())
            .map_or("harness".into(), |n| n.to_string_lossy().into_owned());
        eprintln!("{name}: error: {e:#}");
        std::process::exit(1);
    }
}

fn parse_arch(s: &str) -> Result<Arch, String> {
    Arch::ALL
        .into_iter()
        .find(|a| a.name() == s)
        .ok_or_else(|| format!("{s:?} is not an arch (x86_64 or aarch64)"))
}

pub use mockhv::progress::{clock_starts as progress_clock_starts, progress};

/// The workspace root (this crate lives two levels below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/harness is inside the workspace")
        .to_path_buf()
}
