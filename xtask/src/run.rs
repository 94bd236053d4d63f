//! `cargo xtask run`: boots each image in QEMU with the console streamed to the terminal.

use crate::image;
use anyhow::{bail, Result};
use mockhv::qemu::{ensure_qemu, Arch, Outcome, Qemu, QemuConfig};
use std::time::Duration;

pub fn run(arches: &[Arch], release: bool, smp: u32, append: &str, timeout: u64) -> Result<()> {
    let mut failed = Vec::new();
    for &arch in arches {
        ensure_qemu(arch)?;
        let image = image::build(arch, release)?;
        println!("== {} ({} VPs): {}", arch.name(), smp, image.elf.display());
        let mut qemu = Qemu::spawn(&QemuConfig {
            smp,
            append: (!append.is_empty()).then(|| append.to_string()),
            timeout: Duration::from_secs(timeout),
            echo: true,
            ..QemuConfig::new(arch, Some(image.elf))
        })?;
        let result = qemu.wait()?;
        match result.outcome {
            Outcome::Pass => println!("== {}: firmware exited with success", arch.name()),
            _ => {
                println!("== {}: {}", arch.name(), result.summary());
                failed.push(arch.name());
            }
        }
    }
    if !failed.is_empty() {
        bail!("run failed on {}", failed.join(", "));
    }
    Ok(())
}
