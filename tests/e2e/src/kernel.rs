//! The suites' VTL0 as real code: the VTL0 test kernel (`tests/vtl0`) under the paravisor under
//! the in-VM mock Hyper-V. A test hands the kernel a table; what VTL0 saw comes back as the
//! kernel's own records, and what the hypervisor saw as the host model's events.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use hvdef::{HypercallCode, Vtl};
use mockhv::invm::{InvmBoot, InvmRun, Paravisor, Vtl0};
use mockhv::model::{Event, HypercallRecord, Scenario};
use mockhv::qemu::Arch;
use vtl0::{parse_results, Results, Table};

/// The arches whose in-VM host runs VTL0 for real.
pub fn arches() -> Vec<Arch> {
    Arch::ALL
        .into_iter()
        .filter(|&a| mockhv::invm::runs_vtl0(a))
        .collect()
}

pub fn proto(arch: Arch) -> vtl0::Arch {
    match arch {
        Arch::X86_64 => vtl0::Arch::X86_64,
        Arch::Aarch64 => vtl0::Arch::Aarch64,
    }
}

/// `cargo xtask run`'s demo: one VTL0 call of each outcome the IGVM boot can show. A
/// PostMessage to a connection nobody owns (the hypervisor hands it to the paravisor, which refuses it), a
/// GetVpRegisters of VTL0's own VP index (the hypervisor answers it; VTL2 never sees it), and a
/// store into VTL2's memory (it faults into the hypervisor, the paravisor refuses it and VTL0
/// takes the fault).
pub fn demo_table(arch: Arch) -> Table {
    demo_table_at(crate::layout(arch).vtl2)
}

/// [`demo_table`] with the store aimed at `vtl2` (VTL2's memory where the loader put it).
pub fn demo_table_at(vtl2: u64) -> Table {
    use hvdef::{Control, HvInputVtl, HvRegisterName, HypercallCode};
    let get = Control::new()
        .with_code(HypercallCode::GET_VP_REGISTERS)
        .with_rep_count(1);
    Table::new()
        .hypercall(
            u64::from(HypercallCode::POST_MESSAGE.0),
            &crate::post_message(0x77),
            0,
        )
        .hypercall(
            get.into_bits(),
            &crate::get_registers_input(HvInputVtl::CURRENT, &[HvRegisterName::VP_INDEX]),
            16,
        )
        .write(vtl2, 8, 0x1234)
}

/// A finished run: the host's side and the kernel's.
pub struct KernelRun {
    pub run: InvmRun,
    pub results: Results,
}

impl KernelRun {
    /// The hypercalls the paravisor itself made (at VTL2) with this code.
    pub fn vtl2_calls(&self, code: HypercallCode) -> Vec<&HypercallRecord> {
        self.run
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Hypercall(r) if r.vtl == Vtl::VTL2 && r.code == code => Some(r),
                _ => None,
            })
            .collect()
    }

    /// The control words of VTL0's hypercalls the hypervisor handed to VTL2, in order.
    pub fn reflected_controls(&self) -> Vec<u64> {
        self.run
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Intercept { vtl, message, .. }
                    if *vtl == Vtl::VTL0
                        && message.header.message_type
                            == hvdef::HvMessageType::HYPERCALL_INTERCEPT =>
                {
                    Some(intercepted_control(self.run.run.arch, message))
                }
                _ => None,
            })
            .collect()
    }
}

/// The control word a hypercall intercept carries (x64 RCX; arm64 X1 under SMCCC).
fn intercepted_control(arch: Arch, message: &hvdef::HvMessage) -> u64 {
    use zerocopy::FromBytes;
    match arch {
        Arch::X86_64 => {
            hvdef::x86_64::HvX64HypercallInterceptMessage::read_from_prefix(message.payload_bytes())
                .map(|(m, _)| m.rcx)
                .unwrap_or(u64::MAX)
        }
        Arch::Aarch64 => hvdef::aarch64::HvArm64HypercallInterceptMessage::read_from_prefix(
            message.payload_bytes(),
        )
        .map(|(m, _)| m.x[1])
        .unwrap_or(u64::MAX),
    }
}

/// The paravisor alone under the in-VM host (no VTL0: the run ends when every VP has returned
/// to its VTL0 for the first time), with this partition, its trace written; however the run
/// ends. From its IGVM file (the loader's parameters give every arch the VP count), or with
/// `append` from its ELF (the PVH / device-tree command line path; an IGVM boot takes one too, as
/// its CommandLine parameter: `InvmBoot::append`, `invm_igvm`).
pub fn boot_paravisor(scenario: Scenario, append: Option<&str>) -> InvmRun {
    let arch = scenario.arch;
    let elf = crate::image(arch);
    let host = elf.with_file_name(format!("invm-{}.elf", arch.name()));
    let paravisor = match append {
        None => Paravisor::Igvm(crate::igvm(arch)),
        Some(_) => Paravisor::Elf(elf),
    };
    let mut boot = InvmBoot::new(arch, host, paravisor);
    boot.vps = scenario.vp_count;
    boot.append = append.map(str::to_string);
    boot.scenario = Some(scenario);
    boot.trace = true;
    boot.run().expect("QEMU runs")
}

/// The hypercalls of `code` in a trace.
pub fn calls(events: &[Event], code: HypercallCode) -> Vec<&HypercallRecord> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Hypercall(r) if r.code == code => Some(r),
            _ => None,
        })
        .collect()
}

/// [`boot`], asserting the run passed and the kernel finished its table.
pub fn run(
    arch: Arch,
    scenario: Option<Scenario>,
    append: Option<&str>,
    table: &Table,
) -> KernelRun {
    let run = boot(arch, scenario, append, table);
    assert!(
        run.run.run.passed() && run.results.done == Some(table.len()),
        "{arch:?}: {}\nconsole:\n{}",
        run.run.summary(),
        run.run.run.console
    );
    run
}

/// Boots the paravisor with the kernel running `table`, however the run ends (the kernel's
/// records are what it printed). Without `append`: from `paravisor-<arch>-vtl0.igvm`, VTL0
/// started by the paravisor from the file's VTL0 context. With it (the PVH / device-tree command line path; `invm_igvm` gives an IGVM boot one): from
/// the ELF, the kernel placed by the loader and started from the reset state the host gives
/// VTL0 (its entry point).
pub fn boot(
    arch: Arch,
    scenario: Option<Scenario>,
    append: Option<&str>,
    table: &Table,
) -> KernelRun {
    boot_with(arch, scenario, append, table, |_| {})
}

/// [`run`] on a machine with `memory_mb` of memory (QEMU's `-m`; see
/// [`InvmBoot::memory_mb`]).
pub fn run_with_memory(
    arch: Arch,
    scenario: Option<Scenario>,
    append: Option<&str>,
    table: &Table,
    memory_mb: u32,
) -> KernelRun {
    let run = boot_with(arch, scenario, append, table, |boot| {
        boot.memory_mb = memory_mb
    });
    assert!(
        run.run.run.passed() && run.results.done == Some(table.len()),
        "{arch:?}: {}\nconsole:\n{}",
        run.run.summary(),
        run.run.run.console
    );
    run
}

/// [`boot`], with `configure` changing the boot (e.g. the machine's memory) before it runs.
pub fn boot_with(
    arch: Arch,
    scenario: Option<Scenario>,
    append: Option<&str>,
    table: &Table,
    configure: impl FnOnce(&mut InvmBoot),
) -> KernelRun {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let elf = crate::image(arch);
    let dir = elf.parent().expect("image dir").to_path_buf();
    let host = dir.join(format!("invm-{}.elf", arch.name()));
    let kernel = dir.join(format!("vtl0-{}.elf", arch.name()));
    let file = std::env::temp_dir().join(format!(
        "e2e-kernel-table-{}-{}.bin",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&file, table.to_bytes()).expect("write the table");
    let mut boot = match append {
        None => {
            let igvm = dir.join(format!("paravisor-{}-vtl0.igvm", arch.name()));
            let mut boot = InvmBoot::new(arch, host, Paravisor::Igvm(igvm));
            boot.vtl0 = Vtl0::FromParavisor;
            boot
        }
        Some(append) => {
            let mut boot = InvmBoot::new(arch, host, Paravisor::Elf(elf));
            boot.append = Some(append.to_string());
            boot.vtl0 = Vtl0::Elf(kernel);
            boot
        }
    };
    boot.blobs
        .push((proto(arch).table_gpa(), PathBuf::from(&file)));
    // One QEMU CPU per VP the scenario asks for (the kernel starts the others it names).
    if let Some(s) = &scenario {
        boot.vps = s.vp_count.max(1);
    }
    boot.scenario = scenario;
    boot.trace = true;
    configure(&mut boot);
    let run = boot.run();
    let _ = std::fs::remove_file(&file);
    let run = run.expect("QEMU runs");
    let results = parse_results(&run.run.console)
        .unwrap_or_else(|e| panic!("{e}\n{}\nconsole:\n{}", run.summary(), run.run.console));
    KernelRun { run, results }
}
