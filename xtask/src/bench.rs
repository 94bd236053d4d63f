//! `cargo xtask bench`: the project's performance and footprint figures, measured on this
//! machine and printed as a Markdown table (also written to `target/bench.md`).
//!
//! - emulated hypercalls per second: two runs under the mock that differ only in `pv.bench=N`
//!   (N extra GetVpRegisters after bring-up); the difference in wall time over N, median of 3;
//! - hypercalls per VP during a 4-VP boot, by call code, from the mock's trace;
//! - static memory (loadable + BSS) and the per-VP share of it, from the image's symbols.

use crate::{image, workspace_root};
use anyhow::{bail, Context, Result};
use mockhv::model::{Event, Scenario};
use mockhv::qemu::Arch;
use mockhv::session::{self, Report, SessionConfig};
use object::{Object, ObjectSection, ObjectSymbol};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

const BENCH_CALLS: u32 = 2000;
const BOOT_VPS: u32 = 4;

fn boot(elf: &Path, arch: Arch, vps: u32, append: &str) -> Result<Report> {
    let scenario = Scenario {
        vp_count: vps,
        ..Scenario::for_arch(arch)
    };
    let mut config = SessionConfig::new(elf.to_path_buf(), scenario);
    config.append = Some(append.to_string());
    config.timeout = Duration::from_secs(120);
    let report = session::run(config)?;
    if !report.succeeded() {
        bail!("benchmark run failed: {}", report.summary());
    }
    Ok(report)
}

/// Emulated hypercalls per second through the mock (median of 3 paired runs).
fn hypercall_rate(elf: &Path, arch: Arch) -> Result<f64> {
    let mut rates = Vec::new();
    for _ in 0..3 {
        let base = boot(elf, arch, 1, "")?.run.elapsed;
        let with = boot(elf, arch, 1, &format!("pv.bench={BENCH_CALLS}"))?
            .run
            .elapsed;
        let extra = with.saturating_sub(base).as_secs_f64();
        rates.push(if extra > 0.0 {
            f64::from(BENCH_CALLS) / extra
        } else {
            f64::INFINITY
        });
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[1])
}

/// Hypercalls per VP during boot, by call code.
fn boot_calls(report: &Report) -> BTreeMap<u32, BTreeMap<String, u32>> {
    let mut per_vp: BTreeMap<u32, BTreeMap<String, u32>> = BTreeMap::new();
    for event in report.trace().events() {
        if let Event::Hypercall(h) = event {
            *per_vp
                .entry(h.vp)
                .or_default()
                .entry(format!("{:?}", h.code))
                .or_default() += 1;
        }
    }
    per_vp
}

/// (static bytes, per-VP bytes, per-VP breakdown) from the image.
fn memory(elf: &Path) -> Result<(u64, u64, String)> {
    let bytes = std::fs::read(elf)?;
    let file = object::File::parse(&*bytes)?;
    let total: u64 = file
        .sections()
        .filter(|s| s.address() != 0)
        .map(|s| s.size())
        .sum();
    let size_of = |needle: &str| {
        file.symbols()
            .find(|s| s.name().is_ok_and(|n| n.contains(needle)))
            .map(|s| s.size())
            .with_context(|| format!("no symbol like {needle} in {}", elf.display()))
    };
    let percpu = size_of("percpu6PERCPU")? / boot_max_vps();
    let stack = size_of("stacks6STACKS")? / boot_max_vps();
    let locals = size_of("cpu6LOCALS")? / boot_max_vps();
    Ok((
        total,
        percpu + stack + locals,
        format!("hypercall input + output + VP assist page {percpu}, boot stack {stack}, per-CPU record {locals}"),
    ))
}

fn boot_max_vps() -> u64 {
    // boot::MAX_VPS; the host tool reads it from the image's arrays, sized by it.
    64
}

pub fn run(arches: &[Arch]) -> Result<()> {
    let mut out = String::new();
    writeln!(out, "# Benchmark figures\n")?;
    writeln!(
        out,
        "Measured by `cargo xtask bench` (release images, QEMU TCG under the mock hypervisor).\n"
    )?;
    for &arch in arches {
        mockhv::qemu::ensure_qemu(arch)?;
        let image = image::build(arch, true)?;
        let rate = hypercall_rate(&image.elf, arch)?;
        let report = boot(&image.elf, arch, BOOT_VPS, "")?;
        let (total, per_vp, breakdown) = memory(&image.elf)?;
        writeln!(out, "## {}\n", arch.name())?;
        writeln!(
            out,
            "- emulated hypercalls per second (mock, gdbstub): {rate:.0}"
        )?;
        writeln!(
            out,
            "- {BOOT_VPS}-VP boot under the mock: {} trace events, {} guest stops, {:.2} s wall",
            report.trace().events().len(),
            report.stops,
            report.run.elapsed.as_secs_f64()
        )?;
        writeln!(out, "- static memory (loadable + BSS): {total} bytes")?;
        writeln!(out, "- per VP: {per_vp} bytes ({breakdown})\n")?;
        writeln!(out, "| VP | hypercalls during boot, by code |\n|---|---|")?;
        for (vp, calls) in boot_calls(&report) {
            let list: Vec<String> = calls.iter().map(|(c, n)| format!("{c} {n}")).collect();
            writeln!(out, "| {vp} | {} |", list.join(", "))?;
        }
        writeln!(out)?;
    }
    print!("{out}");
    let path = workspace_root().join("target").join("bench.md");
    std::fs::write(&path, &out)?;
    println!("(written to {})", path.display());
    Ok(())
}
