//! `cargo xtask run`: boots each arch's paravisor in QEMU under the in-VM mock hypervisor (VSM,
//! VTL2) with the console streamed to the terminal, then prints a summary of the hypercall
//! trace: from its IGVM file with the VTL0 test kernel as its payload (`--append` its command
//! line parameter, `--vtl2-base` where the loader relocates VTL2 to), VTL0 running a short demo
//! table.

use crate::image;
use anyhow::{bail, Result};
use mockhv::invm::{InvmBoot, Paravisor, Vtl0};
use mockhv::qemu::{ensure_qemu, Arch};
use std::time::Duration;

/// How `run` boots.
pub struct Options<'a> {
    pub release: bool,
    pub smp: u32,
    pub append: &'a str,
    pub timeout: u64,
    /// QEMU waits for a debugger on this TCP port.
    pub gdb: Option<u16>,
    /// Load VTL2 at this base (the IGVM file's relocation region must allow it).
    pub vtl2_base: Option<u64>,
}

/// The paravisor under the in-VM mock with VTL0 running the demo table; true if it passed.
fn run_invm(arch: Arch, options: &Options<'_>) -> Result<bool> {
    let images = image::build_all(&[arch], options.release, None)?;
    let image = &images[0];
    let host = image.elf.with_file_name(format!(
        "invm-{}{}.elf",
        arch.name(),
        if options.release { "" } else { "-debug" }
    ));
    let kernel = image::vtl0_path(arch, options.release);
    let mut boot = InvmBoot::new(
        arch,
        host,
        Paravisor::Igvm(image::test_igvm_path(arch, options.release)),
    );
    boot.vtl0 = Vtl0::FromParavisor;
    boot.append = (!options.append.is_empty()).then(|| options.append.to_string());
    boot.vtl2_base = options.vtl2_base;
    let table = std::env::temp_dir().join(format!("xtask-run-table-{}.bin", std::process::id()));
    // The store into VTL2's memory aims at where the loader puts it.
    let demo = match options.vtl2_base {
        Some(base) => e2e::kernel::demo_table_at(base),
        None => e2e::kernel::demo_table(arch),
    };
    std::fs::write(&table, demo.to_bytes())?;
    boot.blobs
        .push((e2e::kernel::proto(arch).table_gpa(), table.clone()));
    boot.vps = options.smp;
    boot.timeout = Duration::from_secs(options.timeout);
    boot.echo = true;
    boot.trace = true;
    if let Some(port) = options.gdb {
        boot.extra_args = vec!["-gdb".into(), format!("tcp::{port}"), "-S".into()];
        boot.timeout = Duration::from_secs(24 * 3600);
        println!(
            "== QEMU waits for gdb on port {port} (Debian: apt-get install gdb-multiarch): gdb-multiarch {} -ex 'target remote :{port}' -ex \
             'add-symbol-file {}'",
            image.elf.display(),
            kernel.display()
        );
    }
    println!(
        "== {} under the in-VM mock hypervisor (VSM, VTL2, {} VPs), VTL0 running the demo table",
        arch.name(),
        options.smp
    );
    let run = boot.run();
    let _ = std::fs::remove_file(&table);
    let run = run?;
    print!("{}", mockhv::trace::trace_summary(&run.events));
    let passed = run.run.passed();
    println!("== {}: {}", arch.name(), run.summary());
    Ok(passed)
}

pub fn run(arches: &[Arch], options: &Options<'_>) -> Result<()> {
    let mut failed = Vec::new();
    for &arch in arches {
        ensure_qemu(arch)?;
        if !run_invm(arch, options)? {
            failed.push(arch.name());
        }
    }
    if !failed.is_empty() {
        bail!("run failed on {}", failed.join(", "));
    }
    Ok(())
}
