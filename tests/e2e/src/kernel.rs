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

/// The firmware command line of `cargo xtask run`'s demo: the relay its relayed calls use
/// (VTL0 connections 0x20 and 0x21 to the host's connection 1, device 0x30 VTL0's).
pub const DEMO_APPEND: &str = crate::RELAY;

/// `cargo xtask run`'s demo (with [`DEMO_APPEND`]): VTL0 calls of each outcome, in order. A
/// PostMessage and a fast SignalEvent to connections the relay maps (the hypervisor hands them
/// to the paravisor, which relays them to the host and hands back what the host said); a
/// PostMessage to a connection nobody owns (handed to the paravisor, which refuses it:
/// INVALID_CONNECTION_ID); a PostMessage to a connection the host knows and a GetVpRegisters of
/// VTL0's own VP index (the hypervisor answers them; VTL2 never sees them); a store into VTL2's
/// memory (it faults into the hypervisor, the paravisor refuses it and VTL0 takes the fault).
pub fn demo_table(arch: Arch) -> Table {
    demo_table_at(crate::layout(arch).vtl2)
}

/// [`demo_table`] with the store aimed at `vtl2` (VTL2's memory where the loader put it).
pub fn demo_table_at(vtl2: u64) -> Table {
    use hvdef::{Control, HvInputVtl, HvRegisterName, HypercallCode};
    let get = Control::new()
        .with_code(HypercallCode::GET_VP_REGISTERS)
        .with_rep_count(1);
    let post = u64::from(HypercallCode::POST_MESSAGE.0);
    let signal = Control::new()
        .with_code(HypercallCode::SIGNAL_EVENT)
        .with_fast(true);
    Table::new()
        .hypercall(post, &crate::post_message(crate::RELAYED), 0)
        .hypercall(
            signal.into_bits(),
            &crate::signal_event_word(crate::RELAYED_EVENT, 3).to_le_bytes(),
            0,
        )
        .hypercall(post, &crate::post_message(crate::UNMAPPED), 0)
        .hypercall(post, &crate::post_message(crate::HOST_CONNECTION), 0)
        .hypercall(
            get.into_bits(),
            &crate::get_registers_input(HvInputVtl::CURRENT, &[HvRegisterName::VP_INDEX]),
            16,
        )
        .write(vtl2, 8, 0x1234)
}

/// One line per entry the kernel ran, for a person: the VP, the call, what the paravisor did
/// with it, what the host (or the hypervisor) said, and what VTL0 got. From the kernel's own
/// records (what VTL0 got) and the host model's trace (who saw the call, what the paravisor
/// asked of the host): VTL0's call as the hypervisor recorded it, then, if it was handed to
/// VTL2, the paravisor's calls on that VP up to its VtlReturn, of which any but the
/// Get/SetVpRegisters that complete the call is the relay.
pub fn describe_calls(run: &KernelRun) -> Vec<String> {
    use mockhv::model::Outcome;
    use vtl0::{CallOutcome, Record};
    let events = &run.run.events;
    let mut cursors = std::collections::BTreeMap::<u32, usize>::new();
    let mut lines = Vec::new();
    for ((index, record), &vp) in run.results.entries.iter().zip(&run.results.vps) {
        let at = cursors.entry(vp).or_insert(0);
        let (call, did, said, got) = match record {
            Record::Hypercall { control, outcome } => {
                let code = HypercallCode(*control as u16);
                let fast = *control & (1 << 16) != 0;
                let seen = events[*at..].iter().enumerate().find_map(|(i, e)| match e {
                    Event::Hypercall(r) if r.vp == vp && r.vtl == Vtl::VTL0 && r.code == code => {
                        Some((*at + i, r))
                    }
                    _ => None,
                });
                let mut call = format!(
                    "{}{}({:#x})",
                    if fast { "fast " } else { "" },
                    code_name(code),
                    code.0
                );
                if let Some(conn) = seen.and_then(|(_, r)| connection(r)) {
                    call.push_str(&format!(" conn {conn:#x}"));
                }
                let (did, said) = match seen {
                    None => ("-".to_string(), "hypervisor: no such call".to_string()),
                    Some((i, r)) => {
                        *at = i + 1;
                        match r.outcome {
                            Outcome::Status(out) => (
                                "never saw it".to_string(),
                                format!("hypervisor: {:?}", out.status()),
                            ),
                            Outcome::Reflected => match relay_after(events, i, vp) {
                                Some(h) => (
                                    match connection(h) {
                                        Some(c) => format!("relayed to host conn {c:#x}"),
                                        None => format!("relayed as {}", code_name(h.code)),
                                    },
                                    match h.status() {
                                        Some(s) => format!("host: {s:?}"),
                                        None => "host: no status".to_string(),
                                    },
                                ),
                                None => ("refused".to_string(), "host: not asked".to_string()),
                            },
                            ref other => ("-".to_string(), format!("hypervisor: {other:?}")),
                        }
                    }
                };
                let got = match outcome {
                    CallOutcome::Skipped => "nothing (not made)".to_string(),
                    CallOutcome::Fault(f) => fault_name(f),
                    CallOutcome::Done { result, out, .. } => {
                        let mut got = format!("{:?}", hvdef::HvStatus(*result as u16));
                        let reps = (*result >> 32) & 0xfff;
                        if reps != 0 {
                            got.push_str(&format!(", {reps} rep(s)"));
                        }
                        if let Some(first) = out.get(..8) {
                            let value = u64::from_le_bytes(first.try_into().expect("8 bytes"));
                            got.push_str(&format!(", value {value:#x}"));
                        }
                        got
                    }
                };
                (call, did, said, got)
            }
            Record::Write {
                gpa,
                width,
                outcome,
                ..
            } => {
                let call = format!("store of {width} bytes at {gpa:#x}");
                match outcome {
                    Ok(()) => (
                        call,
                        "never saw it".to_string(),
                        "hypervisor: VTL0's memory".to_string(),
                        "the store done".to_string(),
                    ),
                    Err(f) => {
                        let handed = events[*at..].iter().position(|e| {
                            matches!(e, Event::Intercept { vp: v, vtl, .. }
                                if *v == vp && *vtl == Vtl::VTL0)
                        });
                        if let Some(i) = handed {
                            *at += i + 1;
                        }
                        (
                            call,
                            if handed.is_some() {
                                "refused (VTL2's memory)".to_string()
                            } else {
                                "never saw it".to_string()
                            },
                            "hypervisor: fault to VTL2".to_string(),
                            fault_name(f),
                        )
                    }
                }
            }
            other => (format!("{other:?}"), "-".into(), "-".into(), "-".into()),
        };
        lines.push(format!(
            "VP {vp} #{index}  {call:<34} paravisor: {did:<25} {said:<25}  VTL0 got: {got}"
        ));
    }
    lines
}

/// The paravisor's relay of the call VTL0 made at `events[at]`: its first call on `vp` after
/// it, before its VtlReturn, that is not a Get/SetVpRegisters (which complete the call).
fn relay_after(events: &[Event], at: usize, vp: u32) -> Option<&HypercallRecord> {
    for e in &events[at + 1..] {
        if let Event::Hypercall(h) = e {
            if h.vp != vp || h.vtl != Vtl::VTL2 {
                continue;
            }
            match h.code {
                HypercallCode::VTL_RETURN => return None,
                HypercallCode::GET_VP_REGISTERS | HypercallCode::SET_VP_REGISTERS => {}
                _ => return Some(h),
            }
        }
    }
    None
}

/// The SynIC connection a PostMessage or SignalEvent names (its input's first 4 bytes).
fn connection(r: &HypercallRecord) -> Option<u32> {
    match r.code {
        HypercallCode::POST_MESSAGE | HypercallCode::SIGNAL_EVENT => r
            .input
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes"))),
        _ => None,
    }
}

fn code_name(code: HypercallCode) -> String {
    match code.name() {
        Some(name) => name.to_string(),
        None => "call".to_string(),
    }
}

/// A VTL0 fault as a person reads it: x86 `#GP(code)` / `#PF`, arm64 the ESR class.
fn fault_name(f: &vtl0::Fault) -> String {
    match *f {
        vtl0::Fault::X86 { vector, code, cr2 } => match vector {
            13 => format!("#GP({code:#x})"),
            14 => format!("#PF({code:#x}) at {cr2:#x}"),
            v => format!("exception vector {v} (code {code:#x})"),
        },
        vtl0::Fault::Arm64 { esr, far } => match esr >> 26 {
            0x24 | 0x25 => format!("a data abort, ESR {esr:#x}"),
            ec => format!("exception class {ec:#x} (ESR {esr:#x}) at {far:#x}"),
        },
    }
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
