//! Runs under the in-VM mock Hyper-V with a real VTL0 (`run`, `bench` and `soak` share them):
//! the paravisor's test IGVM file, the VTL0 test kernel as its VTL0 payload, a table for the
//! kernel. The files are the ones xtask built (`cargo xtask image`), found by name.

use anyhow::{bail, Context, Result};
use mockhv::invm::{InvmBoot, InvmRun, Paravisor, Vtl0};
use mockhv::qemu::Arch;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vtl0::{Results, Table};

/// The files a live-VTL0 run boots.
pub struct Images {
    pub arch: Arch,
    /// The in-VM host (`invm-<arch>.elf`).
    pub host: PathBuf,
    /// The paravisor alone (`paravisor-<arch>.igvm`): boots to the proxy loop, no VTL0.
    pub igvm: PathBuf,
    /// The paravisor with the VTL0 test kernel (`paravisor-<arch>-vtl0.igvm`).
    pub vtl0_igvm: PathBuf,
    /// The paravisor's ELF and the VTL0 kernel's, for an ELF boot (which has a command line).
    pub elf: PathBuf,
    pub vtl0_elf: PathBuf,
}

/// The VTL0 kernel's view of `arch`.
pub fn proto(arch: Arch) -> vtl0::Arch {
    match arch {
        Arch::X86_64 => vtl0::Arch::X86_64,
        Arch::Aarch64 => vtl0::Arch::Aarch64,
    }
}

/// The images xtask built for `arch` (release or debug), in the directory `PARAVISOR_IMAGE_DIR`
/// names (as for the end-to-end suites: xtask sets it to `target/images`), this tree's in-VM
/// host among them.
pub fn built(arch: Arch, release: bool) -> Result<Images> {
    let dir = std::env::var_os("PARAVISOR_IMAGE_DIR")
        .map(PathBuf::from)
        .context(
        "PARAVISOR_IMAGE_DIR is not set: run this through `cargo xtask`, which builds the images",
    )?;
    let suffix = if release { "" } else { "-debug" };
    let host_name = format!("invm-{}{suffix}.elf", arch.name());
    let host = dir.join(&host_name);
    if !host.is_file() {
        bail!("{} has no {host_name}", dir.display());
    }
    in_dir(arch, &dir, suffix, &host)
}

/// Another tree's images in `dir` (its `target/images`) under `host`, this tree's host: the
/// paravisor's and the VTL0 kernel's ELFs and IGVM files as that tree built them.
pub fn from_dir(arch: Arch, dir: &Path, host: &Path) -> Result<Images> {
    in_dir(arch, dir, "", host)
}

/// The images in `dir` named as `cargo xtask image` names them (`suffix`: `-debug` for a
/// debug build), booted by `host`.
fn in_dir(arch: Arch, dir: &Path, suffix: &str, host: &Path) -> Result<Images> {
    let file = |name: String| {
        let path = dir.join(&name);
        if path.is_file() {
            Ok(path)
        } else {
            bail!("{} has no {name}", dir.display())
        }
    };
    let arch_name = arch.name();
    Ok(Images {
        arch,
        host: host.to_path_buf(),
        igvm: file(format!("paravisor-{arch_name}{suffix}.igvm"))?,
        vtl0_igvm: file(format!("paravisor-{arch_name}{suffix}-vtl0.igvm"))?,
        elf: file(format!("paravisor-{arch_name}{suffix}.elf"))?,
        vtl0_elf: file(format!("vtl0-{arch_name}{suffix}.elf"))?,
    })
}

impl Images {
    fn boot(&self, igvm: &Path) -> InvmBoot {
        InvmBoot::new(
            self.arch,
            self.host.clone(),
            Paravisor::Igvm(igvm.to_path_buf()),
        )
    }

    /// Why the in-VM host cannot run this arch with a live VTL0, if it cannot (its own
    /// refusal, found by building the QEMU configuration without starting QEMU).
    pub fn refusal(&self) -> Option<String> {
        let mut boot = self.boot(&self.vtl0_igvm);
        boot.vtl0 = Vtl0::FromParavisor;
        let dir = std::env::temp_dir().join(format!("xtask-live-probe-{}", std::process::id()));
        let made = std::fs::create_dir_all(&dir);
        let r = made
            .map_err(anyhow::Error::from)
            .and_then(|()| boot.qemu_config(&dir));
        let _ = std::fs::remove_dir_all(&dir);
        r.err().map(|e| format!("{e:#}"))
    }

    /// Boots the paravisor (no VTL0) at `vps` VPs to its first VtlReturn, with the trace.
    pub fn boot_to_proxy_loop(&self, vps: u32) -> Result<InvmRun> {
        let mut boot = self.boot(&self.igvm);
        boot.vps = vps;
        boot.trace = true;
        boot.timeout = Duration::from_secs(300);
        let run = boot.run()?;
        if !run.run.passed() {
            bail!(
                "{}-VP boot under the in-VM host failed: {}\n{}",
                vps,
                run.run.summary(),
                run.run.console
            );
        }
        Ok(run)
    }

    /// Boots the paravisor with the VTL0 kernel running `table` (1 VP); `trace` asks for the
    /// host's trace. The run must pass and the kernel must say `done`.
    pub fn run_table(
        &self,
        table: &Table,
        trace: bool,
        timeout: Duration,
    ) -> Result<(InvmRun, Results)> {
        let mut boot = self.boot(&self.vtl0_igvm);
        boot.vtl0 = Vtl0::FromParavisor;
        self.run(boot, table, trace, timeout)
    }

    /// As [`Images::run_table`], but the paravisor boots from its ELF with `append` as its
    /// command line and the kernel from its reset state (its ELF's entry).
    pub fn run_table_elf(
        &self,
        table: &Table,
        append: &str,
        trace: bool,
        timeout: Duration,
    ) -> Result<(InvmRun, Results)> {
        let boot = self.elf_boot(append);
        self.run(boot, table, trace, timeout)
    }

    /// As [`Images::run_table_elf`], with this partition for the host's model and VTL2's
    /// instructions counted per intercept ([`InvmRun::vtl2_work`]), the trace written.
    pub fn run_table_counted(
        &self,
        table: &Table,
        append: &str,
        scenario: mockhv::model::Scenario,
        timeout: Duration,
    ) -> Result<(InvmRun, Results)> {
        self.run_table_elf_in(table, append, scenario, true, 0, timeout)
    }

    /// As [`Images::run_table_elf`] with the trace, with this partition for the host's model;
    /// `count` counts VTL2's instructions per intercept ([`InvmRun::vtl2_work`]); `memory_mb`
    /// sizes the machine (0: the runner's default).
    pub fn run_table_elf_in(
        &self,
        table: &Table,
        append: &str,
        scenario: mockhv::model::Scenario,
        count: bool,
        memory_mb: u32,
        timeout: Duration,
    ) -> Result<(InvmRun, Results)> {
        let mut boot = self.elf_boot(append);
        boot.scenario = Some(scenario);
        boot.count_vtl2 = count;
        if memory_mb != 0 {
            boot.memory_mb = memory_mb;
        }
        self.run(boot, table, true, timeout)
    }

    /// As [`Images::run_table_elf_in`] (trace on, nothing counted) on `vps` VPs, one CPU each:
    /// the kernel's entries name the VP that makes them.
    pub fn run_table_on_vps(
        &self,
        table: &Table,
        append: &str,
        scenario: mockhv::model::Scenario,
        vps: u32,
        timeout: Duration,
    ) -> Result<(InvmRun, Results)> {
        let mut boot = self.elf_boot(append);
        boot.scenario = Some(mockhv::model::Scenario {
            vp_count: vps,
            ..scenario
        });
        boot.vps = vps;
        self.run(boot, table, true, timeout)
    }

    /// The paravisor booted from its ELF with `append` as its command line, the kernel from its
    /// reset state (its ELF's entry).
    fn elf_boot(&self, append: &str) -> InvmBoot {
        let mut boot = InvmBoot::new(
            self.arch,
            self.host.clone(),
            Paravisor::Elf(self.elf.clone()),
        );
        boot.vtl0 = Vtl0::Elf(self.vtl0_elf.clone());
        boot.append = Some(append.to_string());
        boot
    }

    fn run(
        &self,
        mut boot: InvmBoot,
        table: &Table,
        trace: bool,
        timeout: Duration,
    ) -> Result<(InvmRun, Results)> {
        let file = std::env::temp_dir().join(format!(
            "xtask-live-table-{}-{}.bin",
            self.arch.name(),
            std::process::id()
        ));
        std::fs::write(&file, table.to_bytes()).context("writing the table")?;
        boot.blobs
            .push((proto(self.arch).table_gpa(), file.clone()));
        boot.trace = trace;
        boot.timeout = timeout;
        let run = boot.run();
        let _ = std::fs::remove_file(&file);
        let run = run?;
        let results = vtl0::parse_results(&run.run.console)
            .with_context(|| format!("the kernel's lines:\n{}", run.run.console))?;
        if !run.run.passed() || results.done != Some(table.len()) {
            bail!(
                "the live VTL0 run did not finish its {} entries: {}\n{}",
                table.len(),
                run.run.summary(),
                tail(&run.run.console, 40)
            );
        }
        Ok((run, results))
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
