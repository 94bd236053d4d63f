//! `cargo xtask run`: boots each image in QEMU under the mock hypervisor (VSM, VTL2) with the
//! console streamed to the terminal, then prints a summary of the hypercall trace.

use crate::image;
use anyhow::{bail, Result};
use mockhv::model::Scenario;
use mockhv::qemu::{ensure_qemu, Arch};
use mockhv::session::{self, SessionConfig};
use std::time::Duration;

pub fn run(
    arches: &[Arch],
    release: bool,
    smp: u32,
    append: &str,
    timeout: u64,
    igvm: bool,
) -> Result<()> {
    let mut failed = Vec::new();
    for &arch in arches {
        ensure_qemu(arch)?;
        let image = image::build(arch, release)?;
        let scenario = Scenario {
            vp_count: smp,
            ..Scenario::for_arch(arch)
        };
        let booted = if igvm { &image.igvm } else { &image.elf };
        println!(
            "== {} under the mock hypervisor (VSM, VTL2, {smp} VPs): {}",
            arch.name(),
            booted.display()
        );
        let mut config = SessionConfig::new(image.elf.clone(), scenario);
        config.igvm = igvm.then(|| image.igvm.clone());
        config.append = (!append.is_empty()).then(|| append.to_string());
        config.timeout = Duration::from_secs(timeout);
        config.echo = true;
        let report = session::run(config)?;
        print!("{}", report.trace_summary());
        if report.succeeded() {
            println!("== {}: {}", arch.name(), report.summary());
        } else {
            println!("== {}: {}", arch.name(), report.summary());
            failed.push(arch.name());
        }
    }
    if !failed.is_empty() {
        bail!("run failed on {}", failed.join(", "));
    }
    Ok(())
}
