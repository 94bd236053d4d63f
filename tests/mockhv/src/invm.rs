//! Booting the paravisor under the in-VM mock Hyper-V (`tests/invm`): QEMU starts the host
//! image with `-kernel`; the paravisor (its ELF, or its IGVM file loaded here the way a VMM's
//! IGVM loader does, see [`crate::igvm_load`]), a VTL0 payload and any data blobs go in with
//! QEMU's generic loader; the host's configuration page says how to enter the paravisor and
//! whether VTL0 runs for real. arm64 (semihosting trace file) and x86_64 (an ELF as a PVH start
//! the host builds, or an IGVM file's x64 VTL2 context; the trace through `-debugcon`).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use invm_abi::HostConfig;
use zerocopy::IntoBytes;

use crate::igvm_load::{self, VpContext};
use crate::model::{Event, Scenario};
use crate::qemu::{Arch, Qemu, QemuConfig, RunResult};

/// Whether the in-VM host runs VTL0 for real on `arch` ([`Vtl0::FromParavisor`],
/// [`Vtl0::Elf`]).
pub fn runs_vtl0(arch: Arch) -> bool {
    matches!(arch, Arch::Aarch64 | Arch::X86_64)
}

/// How the paravisor gets into guest memory.
#[derive(Clone, Debug)]
pub enum Paravisor {
    /// Its ELF, placed by QEMU's loader and entered at the image's entry.
    Elf(PathBuf),
    /// Its IGVM file: page data and parameter areas placed as a loader would, entered with the
    /// file's VTL2 context.
    Igvm(PathBuf),
}

/// What VTL0 is.
#[derive(Clone, Debug)]
pub enum Vtl0 {
    /// Nothing: the run ends at the paravisor's first VtlReturn (the model's empty script).
    None,
    /// VTL0 runs for real from the state the paravisor gives it (an IGVM file's VTL0 payload).
    FromParavisor,
    /// This ELF, placed by QEMU's loader; VTL0 runs for real from its entry point (VTL0's
    /// reset state, which the paravisor may still change).
    Elf(PathBuf),
}

#[derive(Clone, Debug)]
pub struct InvmBoot {
    pub arch: Arch,
    /// The host image (`invm-aarch64.elf`, `invm-x86_64.elf`).
    pub host: PathBuf,
    pub paravisor: Paravisor,
    pub vtl0: Vtl0,
    /// Raw files placed at these GPAs (e.g. a table for the VTL0 test kernel).
    pub blobs: Vec<(u64, PathBuf)>,
    pub append: Option<String>,
    pub timeout: Duration,
    pub echo: bool,
    /// Passed to QEMU after everything else.
    pub extra_args: Vec<String>,
    /// Have the host write the model's trace (see [`InvmRun::events`]).
    pub trace: bool,
    /// VPs, one QEMU CPU each (GICv3, so up to 16).
    pub vps: u32,
    /// The partition the host's model runs (its VP count and RAM are the host's: `vps` and
    /// the guest window); None: the arch's default scenario.
    pub scenario: Option<Scenario>,
    /// Count VTL2's instructions per intercept ([`InvmRun::vtl2_work`]); runs QEMU with
    /// `-icount shift=0`, so the counts are exact and the same on every run (arm64: the PMU
    /// cycle counter, EL1 only; x86: the TSC around each VMRUN of VTL2, the host's own
    /// instructions in that window taken off).
    pub count_vtl2: bool,
    /// The machine's memory (QEMU's `-m`, in MiB; at least 256: the host keeps 16 MiB of the
    /// first 256 for itself). Its RAM, as QEMU lays it out ([`Arch::ram_ranges`]), without
    /// the host's 16 MiB is the guest's: stage 2 / the nested tables map it, the model serves
    /// it, and the paravisor is told of it (device tree, PVH or IGVM memory map).
    pub memory_mb: u32,
    /// An IGVM boot: load VTL2 at this base (the file's relocation region must allow it, as
    /// OpenVMM's loader checks); None: where the file says.
    pub vtl2_base: Option<u64>,
}

/// A finished run under the in-VM host.
#[derive(Debug)]
pub struct InvmRun {
    pub run: RunResult,
    /// The host model's trace, every event in order, when [`InvmBoot::trace`] asked for it:
    /// the same events the host-side suites query.
    pub events: Vec<Event>,
    /// With [`InvmBoot::count_vtl2`]: per intercept handed to VTL2, in order, the VP and the
    /// instructions VTL2 retired until its VtlReturn.
    pub vtl2_work: Vec<(u32, u64)>,
}

/// The host's `VTL2 work` lines.
fn vtl2_work(console: &str) -> Result<Vec<(u32, u64)>> {
    console
        .lines()
        .filter_map(|l| l.trim().strip_prefix(invm_abi::VTL2_WORK_LINE))
        .map(|rest| {
            let parsed = rest
                .strip_suffix(" instructions")
                .and_then(|r| r.split_once(", "))
                .and_then(|(vp, n)| Some((vp.parse().ok()?, n.parse().ok()?)));
            parsed.with_context(|| format!("a malformed VTL2 work line: {rest:?}"))
        })
        .collect()
}

impl InvmRun {
    /// The VPs the host saw halt in VTL2 (a `wfi` nothing would wake), from its lines.
    pub fn halted_vps(&self) -> std::collections::BTreeSet<u32> {
        self.run
            .console
            .lines()
            .filter_map(|l| l.trim().strip_prefix("invm: VP "))
            .filter_map(|rest| rest.split_once(" halted in VTL2 at "))
            .filter_map(|(vp, _)| vp.parse().ok())
            .collect()
    }

    /// One line for a failed assertion: how QEMU ended (the host's own `FAIL` line names the
    /// VP, the VTL, the exit and the address), then the last trace records.
    pub fn summary(&self) -> String {
        let mut s = self.run.summary();
        if let Some(fail) = self
            .run
            .console
            .lines()
            .find(|l| l.contains("invm: FAIL: "))
        {
            if !s.contains(fail.trim()) {
                s.push_str(&format!("; {}", fail.trim()));
            }
        }
        let tail = &self.events[self.events.len().saturating_sub(3)..];
        if !self.run.passed() && !tail.is_empty() {
            let tail: Vec<String> = tail.iter().map(crate::trace::brief).collect();
            s.push_str(&format!("; last trace records: {}", tail.join(" | ")));
        }
        s
    }
}

impl InvmBoot {
    pub fn new(arch: Arch, host: PathBuf, paravisor: Paravisor) -> Self {
        Self {
            arch,
            host,
            paravisor,
            vtl0: Vtl0::None,
            blobs: Vec::new(),
            append: None,
            timeout: Duration::from_secs(60),
            echo: false,
            extra_args: Vec::new(),
            trace: false,
            vps: 1,
            scenario: None,
            count_vtl2: false,
            memory_mb: crate::qemu::DEFAULT_MEMORY_MB,
            vtl2_base: None,
        }
    }

    /// Boots it and waits for the end (QEMU's exit, or the timeout).
    pub fn run(&self) -> Result<InvmRun> {
        let dir = scratch_dir()?;
        let result = (|| {
            let config = self.qemu_config(&dir)?;
            let mut qemu = Qemu::spawn(&config)?;
            let run = qemu.wait()?;
            let events = if self.trace {
                read_trace(&dir.join(TRACE_FILE))?
            } else {
                Vec::new()
            };
            let vtl2_work = vtl2_work(&run.console)?;
            Ok(InvmRun {
                run,
                events,
                vtl2_work,
            })
        })();
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// The QEMU configuration, with the files it loads written into `dir`.
    pub fn qemu_config(&self, dir: &Path) -> Result<QemuConfig> {
        let x86 = self.arch == Arch::X86_64;
        let machine = self.arch.ram_ranges(self.memory_mb);
        let mut host = HostConfig::new()
            .with_vp_count(self.vps)
            .with_ram(&machine)
            .with_context(|| format!("{} RAM ranges: more than the host takes", machine.len()))?;
        let default = if x86 {
            invm_abi::DEFAULT_RAM_X86_64
        } else {
            invm_abi::DEFAULT_RAM_AARCH64
        };
        // The guest's RAM as the host computes it.
        let guest_ram = host
            .machine_ram(default)
            .and_then(|ram| {
                if x86 {
                    ram.guest_x86_64()
                } else {
                    ram.guest_aarch64()
                }
            })
            .map_err(|e| anyhow::anyhow!("-m {}M: {e}", self.memory_mb))?;
        // What a VMM's IGVM memory map reports: the guest's RAM, on x86 without the legacy
        // 0xA0000..0x100000 window (VGA memory and the BIOS's shadow ROMs). Page 0 is RAM, as
        // q35 reports it (host_x86.rs `pvh_start` says the same of the PVH map); the host's AP
        // trampoline page is not.
        let igvm_ram = without_legacy_window(self.arch, guest_ram.ranges());
        if self.count_vtl2 {
            host.flags |= invm_abi::FLAG_COUNT_VTL2;
        }
        let mut loads: Vec<(Option<u64>, PathBuf)> = Vec::new();
        match &self.paravisor {
            Paravisor::Elf(elf) => loads.push((None, elf.clone())),
            Paravisor::Igvm(path) => {
                let bytes =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                // The command line goes in the file's CommandLine parameter, as OpenVMM's
                // loader passes its own.
                let options = igvm_load::LoadOptions {
                    vtl2_base: self.vtl2_base,
                    cmdline: self.append.clone().unwrap_or_default(),
                };
                let loaded = igvm_load::load_with(&bytes, self.arch, self.vps, &igvm_ram, &options)
                    .with_context(|| format!("loading {}", path.display()))?;
                match loaded.context {
                    VpContext::Aarch64 { pc, cpsr, x } if !x86 => {
                        if cpsr != 0x3c5 {
                            bail!("{}: VTL2 context CPSR {cpsr:#x}; this host enters EL1h with DAIF masked (0x3c5) only", path.display());
                        }
                        host.vtl2_pc = pc;
                        host.vtl2_x = x;
                    }
                    VpContext::X64(ctx) if x86 => {
                        let bytes: [u8; invm_abi::X64_CONTEXT_SIZE] = ctx
                            .as_bytes()
                            .try_into()
                            .context("HvX64InitialVpContext's size")?;
                        host = host.with_x64_context(&bytes);
                    }
                    _ => bail!("{}: not a VP context for {:?}", path.display(), self.arch),
                }
                let pages = loaded.pages.iter().chain(&loaded.parameters);
                for (n, (gpa, bytes)) in coalesce(pages)?.into_iter().enumerate() {
                    check_in_ram(&igvm_ram, gpa, bytes.len(), path)?;
                    let file = dir.join(format!("igvm-{n}.bin"));
                    std::fs::write(&file, &bytes)?;
                    loads.push((Some(gpa), file));
                }
            }
        }
        match &self.vtl0 {
            Vtl0::None => {}
            Vtl0::FromParavisor => host = host.with_live_vtl0(0),
            Vtl0::Elf(elf) => {
                let entry = elf_entry(elf)?;
                host = host.with_live_vtl0(entry);
                loads.push((None, elf.clone()));
            }
        }
        for (gpa, file) in &self.blobs {
            loads.push((Some(*gpa), file.clone()));
        }
        if self.trace {
            let path = dir.join(TRACE_FILE);
            let path = path.to_str().context("a non-UTF-8 path")?;
            host = host
                .with_trace_path(path.as_bytes())
                .with_context(|| format!("the trace path {path} is too long for the host"))?;
        }
        if let Some(scenario) = &self.scenario {
            if scenario.arch != self.arch {
                bail!(
                    "a {} scenario for an {} host",
                    scenario.arch.name(),
                    self.arch.name()
                );
            }
            let mut bytes = Vec::new();
            scenario.encode(&mut bytes);
            if bytes.len() as u64 > invm_abi::SCENARIO_MAX {
                bail!(
                    "the scenario is {} bytes; the host has room for {}",
                    bytes.len(),
                    invm_abi::SCENARIO_MAX
                );
            }
            host.scenario_len = bytes.len() as u64;
            let file = dir.join("scenario.bin");
            std::fs::write(&file, &bytes)?;
            let at = if x86 {
                invm_abi::SCENARIO_GPA_X86_64
            } else {
                invm_abi::SCENARIO_GPA_AARCH64
            };
            loads.push((Some(at), file));
        }
        let config_file = dir.join("host-config.bin");
        let mut page = vec![0u8; 4096];
        page[..size_of::<HostConfig>()].copy_from_slice(host.as_bytes());
        std::fs::write(&config_file, &page)?;
        let config_gpa = if x86 {
            invm_abi::CONFIG_GPA_X86_64
        } else {
            invm_abi::CONFIG_GPA_AARCH64
        };
        loads.push((Some(config_gpa), config_file));

        let mut extra_args: Vec<String> = if x86 {
            let mut args = Vec::new();
            if self.trace {
                let path = dir.join(TRACE_FILE);
                let path = path.to_str().context("a non-UTF-8 path")?;
                args.extend(["-debugcon".into(), format!("file:{path}")]);
            }
            args
        } else {
            // GICv3: QEMU virt takes more than 8 CPUs only with it (the host assumes its
            // MPIDRs).
            vec!["-machine".into(), "virtualization=on,gic-version=3".into()]
        };
        for (gpa, file) in loads {
            let file = file.to_str().context("a non-UTF-8 path")?.to_string();
            extra_args.push("-device".into());
            extra_args.push(match gpa {
                // An ELF: its segments at their physical addresses; the PC is left alone.
                None => format!("loader,file={file}"),
                Some(gpa) => format!("loader,file={file},addr={gpa:#x},force-raw=on"),
            });
        }
        if self.count_vtl2 {
            // One virtual nanosecond per instruction: arm64's PMU cycle counter and x86's TSC
            // count instructions.
            extra_args.extend(["-icount".into(), "shift=0".into()]);
        }
        extra_args.extend(self.extra_args.iter().cloned());
        let mut config = QemuConfig::new(self.arch, Some(self.host.clone()));
        config.memory_mb = self.memory_mb;
        config.smp = self.vps;
        // An IGVM boot's command line is the file's CommandLine parameter (above); an ELF
        // boot's goes through the host (PVH start info, device tree).
        if matches!(self.paravisor, Paravisor::Elf(_)) {
            config.append = self.append.clone();
        }
        config.timeout = self.timeout;
        config.echo = self.echo;
        config.extra_args = extra_args;
        Ok(config)
    }
}

const TRACE_FILE: &str = "trace.bin";

/// `ram` without x86's legacy 0xA0000..0x100000 window (unchanged on arm64).
fn without_legacy_window(arch: Arch, ram: &[Range<u64>]) -> Vec<Range<u64>> {
    const LEGACY: Range<u64> = 0xa_0000..0x10_0000;
    if arch != Arch::X86_64 {
        return ram.to_vec();
    }
    ram.iter()
        .flat_map(|r| {
            [
                r.start..r.end.min(LEGACY.start),
                r.start.max(LEGACY.end)..r.end,
            ]
        })
        .filter(|r| r.start < r.end)
        .collect()
}

/// The events the host wrote; a file cut short (the host died mid-write) is an error naming
/// the offset.
fn read_trace(path: &Path) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading the host's trace {} (did it start?)",
            path.display()
        )
    })?;
    hvmodel::decode_all(&bytes).map_err(|(offset, e)| {
        anyhow::anyhow!(
            "the host's trace {}: {e:?} at byte {offset}",
            path.display()
        )
    })
}

/// Contiguous runs of the loader's pages (sorted by GPA; gaps of zero pages up to 64 KiB are
/// filled with zeros, fresh RAM's value), so QEMU gets a handful of loader devices, not one
/// per page.
fn coalesce<'a>(pages: impl Iterator<Item = &'a (u64, Vec<u8>)>) -> Result<Vec<(u64, Vec<u8>)>> {
    const GAP: u64 = 64 << 10;
    let mut sorted: Vec<&(u64, Vec<u8>)> = pages.collect();
    sorted.sort_by_key(|(gpa, _)| *gpa);
    let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
    for (gpa, bytes) in sorted {
        match runs.last_mut() {
            // Two loads of the same bytes would make QEMU refuse to start ("rom: requested
            // regions overlap"); a file that places data twice is refused here, by GPA.
            Some((start, run)) if *gpa < *start + run.len() as u64 => bail!(
                "the IGVM file places data twice at {gpa:#x} (a run already covers {:#x}..{:#x})",
                *start,
                *start + run.len() as u64
            ),
            Some((start, run)) if *gpa - (*start + run.len() as u64) <= GAP => {
                run.resize((*gpa - *start) as usize, 0);
                run.extend_from_slice(bytes);
            }
            _ => runs.push((*gpa, bytes.clone())),
        }
    }
    Ok(runs)
}

fn check_in_ram(ram: &[Range<u64>], gpa: u64, len: usize, file: &Path) -> Result<()> {
    let end = gpa + len as u64;
    if !ram.iter().any(|r| r.start <= gpa && end <= r.end) {
        bail!(
            "{}: data at {gpa:#x}..{:#x} lies outside the guest's RAM {ram:#x?}",
            file.display(),
            gpa + len as u64
        );
    }
    Ok(())
}

fn elf_entry(path: &Path) -> Result<u64> {
    use object::Object;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file =
        object::File::parse(&*bytes).with_context(|| format!("parsing {}", path.display()))?;
    Ok(file.entry())
}

fn scratch_dir() -> Result<PathBuf> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "invm-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
// One RAM range is a slice of one range here, not a mistaken `start..end` list.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn vtl2_work_lines_parse_or_fail() {
        let console =
            "x\ninvm: VTL2 work: vp 0, 812 instructions\r\ninvm: VTL2 work: vp 3, 7 instructions\n";
        assert_eq!(vtl2_work(console).unwrap(), [(0, 812), (3, 7)]);
        assert!(vtl2_work("invm: VTL2 work: vp x, 1 instructions").is_err());
        assert!(vtl2_work("invm: VTL2 work: vp 1, 1").is_err());
    }

    #[test]
    fn runs_join_across_small_gaps_only() {
        let page = |gpa: u64, b: u8| (gpa, vec![b; 4096]);
        let pages = [
            page(0x4020_2000, 2),
            page(0x4020_0000, 1),
            page(0x4030_0000, 3),
        ];
        let runs = coalesce(pages.iter()).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].0, 0x4020_0000);
        assert_eq!(runs[0].1.len(), 0x3000);
        assert_eq!(
            &runs[0].1[0x1000..0x2000],
            &[0; 4096][..],
            "the gap is zero"
        );
        assert_eq!(runs[0].1[0x2000], 2);
        assert_eq!(runs[1], page(0x4030_0000, 3));
        let twice = [page(0x4020_0000, 1), page(0x4020_0800, 2)];
        let err = coalesce(twice.iter()).unwrap_err().to_string();
        assert!(err.contains("places data twice at 0x40200800"), "{err}");
    }

    #[test]
    fn the_configuration_page_says_how_to_enter_and_what_vtl0_is() {
        let dir = scratch_dir().unwrap();
        let mut boot = InvmBoot::new(
            Arch::Aarch64,
            "host.elf".into(),
            Paravisor::Elf("pv.elf".into()),
        );
        boot.blobs.push((0x4900_0000, dir.join("table.bin")));
        let config = boot.qemu_config(&dir).unwrap();
        let args = config.extra_args.join(" ");
        assert!(
            args.starts_with(
                "-machine virtualization=on,gic-version=3 -device loader,file=pv.elf -device \
                 loader,file="
            ),
            "{args}"
        );
        assert!(
            args.contains("table.bin,addr=0x49000000,force-raw=on"),
            "{args}"
        );
        assert!(
            args.contains("host-config.bin,addr=0x4ffff000,force-raw=on"),
            "{args}"
        );
        let page = std::fs::read(dir.join("host-config.bin")).unwrap();
        assert_eq!(page.len(), 4096);
        assert_eq!(
            HostConfig::parse(&page),
            HostConfig::new()
                .with_vp_count(1)
                .with_ram(&[0x4000_0000..0x5000_0000]),
            "one VP, no VTL0, the ELF's entry, the 256 MiB machine's RAM"
        );
        boot.memory_mb = 6 * 1024 + 3;
        let config = boot.qemu_config(&dir).unwrap();
        assert_eq!(config.memory_mb, 6 * 1024 + 3);
        let page = std::fs::read(dir.join("host-config.bin")).unwrap();
        let host = HostConfig::parse(&page).unwrap();
        assert_eq!(host.ram_count, 1);
        assert_eq!(host.ram[0], [1 << 30, (7 << 30) + (3 << 20)]);
        boot.memory_mb = 128;
        let err = format!("{:#}", boot.qemu_config(&dir).unwrap_err());
        assert!(err.contains("-m 128M: the host's own memory"), "{err}");
        boot.memory_mb = crate::qemu::DEFAULT_MEMORY_MB;
        boot.paravisor = Paravisor::Igvm(dir.join("missing.igvm"));
        boot.append = Some("pv.log=debug".into());
        let err = format!("{:#}", boot.qemu_config(&dir).unwrap_err());
        assert!(
            err.contains("reading") && err.contains("missing.igvm"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn x86_loads_its_page_at_its_gpa_and_traces_through_debugcon() {
        let dir = scratch_dir().unwrap();
        let mut boot = InvmBoot::new(
            Arch::X86_64,
            "host.elf".into(),
            Paravisor::Elf("pv.elf".into()),
        );
        boot.trace = true;
        let config = boot.qemu_config(&dir).unwrap();
        let args = config.extra_args.join(" ");
        let trace = dir.join(TRACE_FILE);
        assert!(
            args.starts_with(&format!(
                "-debugcon file:{} -device loader,file=pv.elf -device loader,file=",
                trace.display()
            )),
            "{args}"
        );
        assert!(
            args.contains("host-config.bin,addr=0xfeff000,force-raw=on"),
            "{args}"
        );
        assert!(!args.contains("virtualization=on"), "{args}");
        let page = std::fs::read(dir.join("host-config.bin")).unwrap();
        let host = HostConfig::parse(&page).unwrap();
        assert_eq!(host.x64_context(), None, "a PVH start");
        assert!(host.trace_path().is_some());
        assert_eq!(host.ram_count, 1);
        assert_eq!(host.ram[0], [0, 0x1000_0000]);
        assert_eq!(
            without_legacy_window(Arch::X86_64, &[0..0x0f00_0000, 0x1000_0000..0x8000_0000]),
            [
                0..0xa_0000,
                0x10_0000..0x0f00_0000,
                0x1000_0000..0x8000_0000
            ],
            "page 0 is RAM in the IGVM memory map, the legacy window is not"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
