//! `cargo xtask`: the project's one entry point for building images, running them in QEMU,
//! testing and benchmarking.
#![forbid(unsafe_code)]

mod harness;
mod igvm;
mod image;
mod mutants;
mod test;
mod toolchain;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use mockhv::qemu::Arch;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Build, run and test the paravisor", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--arch` values: one architecture or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ArchArg {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
    All,
}

impl ArchArg {
    pub fn arches(self) -> Vec<Arch> {
        match self {
            ArchArg::X86_64 => vec![Arch::X86_64],
            ArchArg::Aarch64 => vec![Arch::Aarch64],
            ArchArg::All => Arch::ALL.to_vec(),
        }
    }
}

/// `--arch` values where one architecture is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SingleArch {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
}

impl SingleArch {
    pub fn arch(self) -> Arch {
        match self {
            SingleArch::X86_64 => Arch::X86_64,
            SingleArch::Aarch64 => Arch::Aarch64,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Build the firmware ELF and IGVM images.
    Image {
        #[arg(long, value_enum, default_value = "all")]
        arch: ArchArg,
        #[arg(long)]
        release: bool,
        /// VTL0 payload ELF for the IGVM files (`{arch}` in the path becomes the arch name);
        /// without it the IGVM files carry no VTL0 payload.
        #[arg(long, value_name = "FILE")]
        vtl0: Option<String>,
    },
    /// Pack an already built paravisor ELF (and a VTL0 payload ELF) as an IGVM file.
    Igvm {
        #[arg(long, value_enum)]
        arch: SingleArch,
        /// The paravisor ELF (`target/images/paravisor-<arch>.elf`).
        #[arg(long)]
        elf: PathBuf,
        /// VTL0 payload ELF.
        #[arg(long, value_name = "FILE")]
        vtl0: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Boot the image in QEMU and stream its console.
    Run {
        #[arg(long, value_enum, default_value = "all")]
        arch: ArchArg,
        #[arg(long)]
        release: bool,
        /// Number of virtual processors (1 to 96: the in-VM host's limit, one QEMU CPU each).
        #[arg(long, default_value_t = 2, value_parser = parse_vps)]
        smp: u32,
        /// Extra words for the firmware command line (e.g. `pv.log=debug`), passed as the
        /// IGVM file's command line parameter.
        #[arg(long, default_value = "")]
        append: String,
        /// Relocate VTL2 to this 2 MiB-aligned base (hex with 0x, or decimal), as a VMM's
        /// IGVM loader may.
        #[arg(long, value_parser = parse_address)]
        vtl2_base: Option<u64>,
        /// Seconds before the run is declared hung and QEMU is killed (at least 1).
        #[arg(long, default_value_t = 60, value_parser = parse_timeout)]
        timeout: u64,
        /// QEMU waits for gdb on this TCP port before the first instruction.
        #[arg(long, value_name = "PORT", num_args = 0..=1, default_missing_value = "1234")]
        gdb: Option<u16>,
    },
    /// Every check CI runs: format, lints, docs, unit tests, both arches' images, the QEMU
    /// suites and a soak.
    Test,
    /// Measure and print the project's performance and footprint figures.
    Bench {
        #[arg(long, value_enum, default_value = "all")]
        arch: ArchArg,
        /// Also measure the per-call figures of the images in DIR (another tree's
        /// `target/images`: its paravisor and VTL0 kernel ELFs, under this tree's host) and
        /// print them beside this tree's, measured in the same run.
        #[arg(long, value_name = "DIR")]
        before: Option<PathBuf>,
        /// Only the per-call figures (no throughput, boot or memory figures).
        #[arg(long)]
        per_call: bool,
    },
    /// Random VTL0 hypercalls and accesses, made by the VTL0 test kernel under the release
    /// paravisor under the in-VM mock, each checked against the proxy's invariants and an
    /// oracle; exits non-zero on any violation.
    Soak {
        #[arg(long, value_enum, default_value = "all")]
        arch: ArchArg,
        /// Calls per arch.
        #[arg(long, default_value_t = 3000)]
        calls: u32,
        /// Seed of the call generator (decimal or 0x-hex); printed by every run.
        #[arg(long, default_value_t = harness::DEFAULT_SEED, value_parser = parse_seed)]
        seed: u64,
        /// Run only this boot of the stream (the number a violation names), to replay it alone;
        /// the calls are the same as in the whole run with the same seed and calls.
        #[arg(long)]
        boot: Option<usize>,
    },
    /// Print an IGVM file's header, platforms, VP contexts and page ranges.
    IgvmDump {
        file: PathBuf,
        /// One JSON object instead of text (the same fields), so two builds can be diffed.
        #[arg(long)]
        json: bool,
    },
    /// Mutation-test the paravisor's proxy and hypercall layer (cargo-mutants, installed if
    /// missing); prints caught / missed / unviable and writes target/mutants.md.
    Mutants {
        /// Mutants built and tested at once.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
    },
}

fn main() {
    progress_clock_starts();
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::Image {
            arch,
            release,
            vtl0,
        } => image::build_all(&arch.arches(), release, vtl0.as_deref()).map(|_| ()),
        Command::Igvm {
            arch,
            elf,
            vtl0,
            out,
        } => image::pack(arch.arch(), &elf, vtl0.as_deref(), &out).and_then(|()| {
            let digest = igvm::digest(&std::fs::read(&out)?)?;
            println!("{}: VBS measurement (SHA-256) {digest}", out.display());
            Ok(())
        }),
        Command::Run {
            arch,
            release,
            smp,
            append,
            vtl2_base,
            timeout,
            gdb,
        } => harness::run(
            &arch.arches(),
            &harness::RunOptions {
                release,
                smp,
                append: &append,
                timeout,
                gdb,
                vtl2_base,
            },
        ),
        Command::Test => test::run(),
        Command::Bench {
            arch,
            before,
            per_call,
        } => harness::bench(&arch.arches(), before.as_deref(), per_call),
        Command::Soak {
            arch,
            calls,
            seed,
            boot,
        } => harness::soak(&arch.arches(), &harness::SoakOptions { calls, seed, boot }),
        Command::IgvmDump { file, json } => std::fs::read(&file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))
            .and_then(|bytes| {
                if json {
                    igvm::dump_json(&bytes).map(|j| format!("{j:#}\n"))
                } else {
                    igvm::dump(&bytes)
                }
            })
            .map(|text| print!("{text}")),
        Command::Mutants { jobs } => mutants::run(jobs),
    };
    if let Err(e) = result {
        // The harness names its own errors.
        if e.downcast_ref::<harness::Reported>().is_none() {
            eprintln!("xtask: error: {e:#}");
        }
        std::process::exit(1);
    }
}

fn parse_address(s: &str) -> Result<u64, std::num::ParseIntError> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => s.parse(),
    }
}

/// The most VPs the in-VM host runs (`tests/invm`: one QEMU CPU each; it refuses more with
/// its own FAIL line, which names its limit, should this fall behind).
pub const MAX_VPS: u32 = 96;

/// `--smp`: 1 to [`MAX_VPS`] (`tests/invm`: x86 `svm::MAX_VPS`, arm64 `MAX_CPUS`), refused in
/// one line naming the limit (0 VPs would boot nothing; more than the host runs would boot,
/// then fail).
fn parse_vps(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a VP count: pass a number from 1 to {MAX_VPS}"))?;
    match n {
        0 => Err(format!(
            "0 VPs: a partition needs at least one; pass a number from 1 to {MAX_VPS}"
        )),
        n if n > MAX_VPS => Err(format!(
            "{n} VPs: the in-VM mock host runs at most {MAX_VPS} (one QEMU CPU each; arm64 \
             uses GICv3, so more than 8 is fine); pass a number from 1 to {MAX_VPS}"
        )),
        n => Ok(n),
    }
}

/// `--timeout`: at least one second (0 would kill QEMU before the machine starts).
fn parse_timeout(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err(
            "0 s: QEMU would be killed before the machine starts; pass at least 1 \
                      (seconds; the default is 60)"
                .to_string(),
        ),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a number of seconds")),
    }
}

fn parse_seed(s: &str) -> Result<u64, std::num::ParseIntError> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
}

pub use mockhv::progress::{clock_starts as progress_clock_starts, progress};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one line a person gets for a bad `run` argument.
    fn run_error(args: &[&str]) -> String {
        let mut argv = vec!["xtask", "run"];
        argv.extend(args);
        match Cli::try_parse_from(argv) {
            Ok(_) => panic!("{args:?} accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_run_arguments_get_one_line_naming_the_limit() {
        let e = run_error(&["--smp", "0"]);
        assert!(
            e.contains(
                "'--smp <SMP>': 0 VPs: a partition needs at least one; pass a number from 1 to 96"
            ),
            "{e}"
        );
        let e = run_error(&["--smp", "97"]);
        assert!(
            e.contains(
                "97 VPs: the in-VM mock host runs at most 96 (one QEMU CPU each; arm64 uses GICv3"
            ),
            "{e}"
        );
        assert!(
            run_error(&["--smp", "1000"]).contains("1000 VPs: the in-VM mock host runs at most 96")
        );
        assert!(run_error(&["--smp", "two"]).contains("\"two\" is not a VP count"));
        let e = run_error(&["--timeout", "0"]);
        assert!(
            e.contains("0 s: QEMU would be killed before the machine starts; pass at least 1"),
            "{e}"
        );
        for good in [
            &["--smp", "1"][..],
            &["--smp", "96"],
            &["--timeout", "1"],
            &[],
        ] {
            let mut argv = vec!["xtask", "run"];
            argv.extend(good);
            assert!(Cli::try_parse_from(argv).is_ok(), "{good:?}");
        }
    }
}
