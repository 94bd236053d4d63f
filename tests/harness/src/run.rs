//! `cargo xtask run`: boots each arch's paravisor in QEMU under the in-VM mock hypervisor (VSM,
//! VTL2) with the console streamed to the terminal, from its IGVM file with the VTL0 test kernel
//! as its payload (`--append` goes in its command line parameter after the demo's relay,
//! `--vtl2-base` is where the loader relocates VTL2 to), VTL0 running the demo table: calls the
//! paravisor relays to the host, refuses, or never sees, and a store it refuses. Then one line
//! per VTL0 call (what the paravisor did, what the host said, what VTL0 got) and a summary of
//! the hypercall trace. xtask builds the images first, and runs this once per arch.

use anyhow::Result;
use mockhv::invm::{InvmBoot, Paravisor, Vtl0};
use mockhv::qemu::Arch;
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

/// The firmware command line: the demo's relay, then the person's words (a later `pv.relay`
/// would not replace the first: the paravisor reads the first of each key).
pub fn command_line(append: &str) -> String {
    let mut line = e2e::kernel::DEMO_APPEND.to_string();
    if !append.trim().is_empty() {
        line.push(' ');
        line.push_str(append.trim());
    }
    line
}

/// The paravisor under the in-VM mock with VTL0 running the demo table; true if it passed.
pub fn run_invm(arch: Arch, options: &Options<'_>) -> Result<bool> {
    let image = crate::live::built(arch, options.release)?;
    let kernel = &image.vtl0_elf;
    let mut boot = InvmBoot::new(
        arch,
        image.host.clone(),
        Paravisor::Igvm(image.vtl0_igvm.clone()),
    );
    boot.vtl0 = Vtl0::FromParavisor;
    // The IGVM file's command line parameter carries the demo's relay and the person's words.
    boot.append = Some(command_line(options.append));
    boot.vtl2_base = options.vtl2_base;
    // The files QEMU loads stay here, so the printed command line can be run again.
    let dir = crate::workspace_root().join("target/run").join(arch.name());
    let table = dir.join("demo-table.bin");
    std::fs::create_dir_all(&dir)?;
    // The store into VTL2's memory aims at where the loader puts it.
    let demo = match options.vtl2_base {
        Some(base) => e2e::kernel::demo_table_at(base),
        None => e2e::kernel::demo_table(arch),
    };
    std::fs::write(&table, demo.to_bytes())?;
    boot.blobs
        .push((e2e::kernel::proto(arch).table_gpa(), table));
    boot.dir = Some(dir);
    boot.vps = options.smp;
    boot.timeout = Duration::from_secs(options.timeout);
    boot.echo = true;
    boot.show_command = true;
    boot.trace = true;
    if let Some(port) = options.gdb {
        boot.extra_args = vec!["-gdb".into(), format!("tcp::{port}"), "-S".into()];
        boot.timeout = Duration::from_secs(24 * 3600);
        println!(
            "== QEMU waits for gdb on port {port} (Debian: apt-get install gdb-multiarch; see \
             README.md, Debugging): gdb-multiarch {} -ex 'target remote :{port}' -ex \
             'add-symbol-file {}'",
            image.elf.display(),
            kernel.display()
        );
    }
    println!(
        "== {} under the in-VM mock hypervisor (VSM, VTL2, {} VP{}), VTL0 running the demo table",
        arch.name(),
        options.smp,
        if options.smp == 1 { "" } else { "s" }
    );
    let run = boot.run()?;
    let console = &run.run.console;
    match vtl0::parse_results(console) {
        Ok(results) => {
            let kernel_run = e2e::kernel::KernelRun { run, results };
            let lines = e2e::kernel::describe_calls(&kernel_run);
            if lines.is_empty() {
                println!("== {}: VTL0 made no calls", arch.name());
            } else {
                println!(
                    "== {}: what became of VTL0's calls (VP, entry, the call; what the paravisor \
                     did; what the host said; what VTL0 got):",
                    arch.name()
                );
            }
            for line in lines {
                println!("  {line}");
            }
            finish(arch, &kernel_run.run)
        }
        Err(e) => {
            println!("== {}: VTL0's records do not parse: {e}", arch.name());
            finish(arch, &run)
        }
    }
}

fn finish(arch: Arch, run: &mockhv::invm::InvmRun) -> Result<bool> {
    print!("{}", mockhv::trace::trace_summary(&run.events));
    println!("== {}: {}", arch.name(), run.summary());
    Ok(run.run.passed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_command_line_keeps_the_relay_first() {
        assert_eq!(command_line(""), e2e::kernel::DEMO_APPEND);
        assert_eq!(
            command_line(" pv.log=debug "),
            format!("{} pv.log=debug", e2e::kernel::DEMO_APPEND)
        );
    }
}
