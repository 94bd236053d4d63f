//! VTL0 buffers wherever the machine has RAM, with a real VTL0 (the VTL0 test kernel under the
//! paravisor under the in-VM mock Hyper-V; the cases of `mock_memory`, a former gdbstub suite).
//! QEMU gets 6 GiB + 3 MiB, so RAM runs past 4 GiB (q35: 2 GiB low and the rest from 4 GiB
//! up; virt: from 1 GiB up),
//! beyond the paravisor's static boot tables' low 4 GiB: the in-VM host maps all of it for both
//! VTLs (less its own 16 MiB), serves it in the model and tells the paravisor of it (device
//! tree, PVH memory map), and the paravisor must map it and read it as VTL0 left it. The odd
//! 3 MiB make the top of RAM need every page size (1 GiB, then a 2 MiB and 4 KiB pages), on
//! both MMUs and in both the host's and the paravisor's tables. VTL0 writes each buffer itself
//! (the kernel's place entry, through its window onto any page) and names it with the call's
//! input GPA. RAM the paravisor cannot map is reported and refused (ACCESS_DENIED, nothing
//! relayed), never fatal.
#![forbid(unsafe_code)]

use e2e::kernel::{self, KernelRun};
use e2e::{post_message, HOST_CONNECTION, RELAY, RELAYED};
use hvdef::{Control, HvStatus, HypercallCode};
use mockhv::model::Vtl0Access;
use mockhv::qemu::Arch;
use std::time::Instant;
use vtl0::{CallOutcome, Fault, Record, Table};

const MEMORY_MB: u32 = 6 * 1024 + 3;
const M: u64 = 1 << 20;
const PAGE: u64 = 4096;
const G: u64 = 1 << 30;

/// The machine's RAM, written from QEMU's documented layouts rather than read back from the
/// runner or the host: q35 with more than 2.75 GiB keeps 2 GiB below the PCI hole and puts the
/// rest at 4 GiB; virt's RAM starts at 1 GiB.
fn ram(arch: Arch) -> Vec<std::ops::Range<u64>> {
    match arch {
        Arch::X86_64 => vec![0..2 * G, 4 * G..8 * G + 3 * M],
        Arch::Aarch64 => std::iter::once(G..7 * G + 3 * M).collect(),
    }
}

/// A PostMessage with a payload that differs per call, so each relayed copy is identifiable:
/// (what VTL0 writes, what the host must receive: the same bytes with the host's connection id).
fn message(tag: u8) -> (Vec<u8>, Vec<u8>) {
    let mut from_vtl0 = post_message(RELAYED);
    for (i, b) in from_vtl0[16..32].iter_mut().enumerate() {
        *b = tag.wrapping_mul(16).wrapping_add(i as u8);
    }
    let mut to_host = from_vtl0.clone();
    to_host[..4].copy_from_slice(&HOST_CONNECTION.to_le_bytes());
    (from_vtl0, to_host)
}

fn post() -> u64 {
    Control::new()
        .with_code(HypercallCode::POST_MESSAGE)
        .into_bits()
}

/// VTL0 writes `bytes` at `gpa` and makes a PostMessage naming it as its input.
fn post_from(table: Table, arch: Arch, gpa: u64, bytes: &[u8]) -> Table {
    let output = kernel::proto(arch).output_page();
    table
        .place(gpa, bytes)
        .hypercall_at(post(), gpa, output, &[], 0)
}

/// Boots the table on the 6 GiB + 3 MiB machine (the ELF boot: the relay comes on the command
/// line), printing the run's wall time.
fn run(arch: Arch, table: &Table) -> KernelRun {
    let started = Instant::now();
    let run = kernel::run_with_memory(arch, None, Some(RELAY), table, MEMORY_MB);
    eprintln!(
        "{arch:?}: {:?} for {} entries",
        started.elapsed(),
        table.len()
    );
    run
}

/// Each record in order: a place (with its GPA) is `ok`; a hypercall's status, with every
/// canary intact.
fn statuses(arch: Arch, run: &KernelRun) -> Vec<HvStatus> {
    let mut out = Vec::new();
    for (i, record) in &run.results.entries {
        match record {
            Record::Place { outcome, gpa, .. } => {
                assert_eq!(
                    *outcome,
                    Ok(()),
                    "{arch:?} entry {i}: VTL0 wrote at {gpa:#x}"
                )
            }
            Record::Hypercall {
                outcome:
                    CallOutcome::Done {
                        result,
                        bad_canaries,
                        ..
                    },
                ..
            } => {
                assert!(
                    bad_canaries.is_empty(),
                    "{arch:?} entry {i}: {bad_canaries:?}"
                );
                out.push(HvStatus(*result as u16));
            }
            other => panic!("{arch:?} entry {i}: {other:?}"),
        }
    }
    out
}

#[test]
fn buffers_above_4g_and_at_the_top_of_ram_are_relayed_byte_for_byte() {
    for arch in kernel::arches() {
        assert_eq!(
            arch.ram_ranges(MEMORY_MB),
            ram(arch),
            "{arch:?}: the runner's machine layout"
        );
        let top = ram(arch).last().unwrap().end;
        let input_page = kernel::proto(arch).input_page();
        // The first page above 4 GiB (a 1 GiB page), the first of the last 3 MiB (a 2 MiB
        // page), the last page of RAM (a 4 KiB page), and the usual low input page (the
        // kernel's own, where a plain call's input goes).
        let gpas = [4 * G, top - 3 * M, top - PAGE, input_page];
        let messages: Vec<_> = (0..gpas.len()).map(|i| message(i as u8 + 1)).collect();
        let mut table = Table::new();
        for (&gpa, (from_vtl0, _)) in gpas.iter().zip(&messages) {
            table = if gpa == input_page {
                table.hypercall(post(), from_vtl0, 0)
            } else {
                post_from(table, arch, gpa, from_vtl0)
            };
        }
        let run = run(arch, &table);
        let console = &run.run.run.console;
        assert_eq!(
            statuses(arch, &run),
            [HvStatus::SUCCESS; 4],
            "{arch:?}: every buffer is relayed, {gpas:#x?}"
        );
        assert_eq!(
            run.reflected_controls(),
            [post(); 4],
            "{arch:?}: each call reached VTL2"
        );
        // Exactly the bytes VTL0 wrote at each GPA reached the host, in order.
        let relays = run.vtl2_calls(HypercallCode::POST_MESSAGE);
        assert_eq!(relays.len(), gpas.len(), "{arch:?}");
        for ((relay, (_, to_host)), gpa) in relays.iter().zip(&messages).zip(gpas) {
            assert_eq!(
                &relay.input, to_host,
                "{arch:?}: what the host received for the buffer at {gpa:#x}"
            );
        }
        // The host's map of the guest's RAM: the machine's without its own 16 MiB (and, on
        // x86, its AP trampoline's page); the paravisor's VTL0 memory reaches the top.
        let host_line = match arch {
            Arch::X86_64 => {
                "nested paging over 0x0..0x9e000, 0x9f000..0xf000000, 0x10000000..0x80000000, \
                 0x100000000..0x200300000"
            }
            Arch::Aarch64 => "stage 2 over 0x40000000..0x4f000000, 0x50000000..0x1c0300000",
        };
        assert!(
            console.contains(host_line),
            "{arch:?}: {host_line:?}:\n{console}"
        );
        let vtl0_top = format!("..{top:#x}");
        assert!(
            console
                .lines()
                .any(|l| l.contains("VTL0 memory ") && l.trim_end().ends_with(&vtl0_top)),
            "{arch:?}: no VTL0 memory range up to {top:#x}:\n{console}"
        );
        let line = "not mapped by the paravisor";
        match arch {
            // Page 0 is RAM on q35 and is the only piece left out.
            Arch::X86_64 => assert_eq!(
                console.matches(line).count(),
                1,
                "{arch:?}: one line, for page 0:\n{console}"
            ),
            Arch::Aarch64 => assert!(
                !console.contains(line),
                "{arch:?}: all RAM is mapped:\n{console}"
            ),
        }
    }
}

/// q35 reports page 0 as RAM, and it is VTL0's (the in-VM host keeps its AP trampoline in
/// another page); the paravisor never maps it (a null pointer), so a VTL0 buffer there, which
/// the hypervisor reads and hands to VTL2, is refused and the proxy keeps serving. virt has no
/// RAM the paravisor cannot map (the host tests in `boot::paging` cover the address-width,
/// capacity and Device-block cases).
#[test]
fn ram_the_paravisor_does_not_map_is_reported_and_refused_not_fatal() {
    let arch = Arch::X86_64;
    let in_page_0 = 0x800;
    let (from_vtl0, to_host) = message(7);
    let table = post_from(Table::new(), arch, in_page_0, &from_vtl0);
    let table = post_from(table, arch, 4 * G, &from_vtl0);
    let run = run(arch, &table);
    assert_eq!(
        statuses(arch, &run),
        [HvStatus::ACCESS_DENIED, HvStatus::SUCCESS],
        "page 0 refused, then still serving"
    );
    assert_eq!(
        run.reflected_controls(),
        [post(); 2],
        "both reached VTL2: the hypervisor read page 0"
    );
    let relays = run.vtl2_calls(HypercallCode::POST_MESSAGE);
    assert_eq!(relays.len(), 1, "only the mapped buffer was relayed");
    assert_eq!(relays[0].input, to_host);
    let console = &run.run.run.console;
    let line = "RAM 0x0..0x1000 is not mapped by the paravisor";
    assert_eq!(
        console.matches(line).count(),
        1,
        "console lacks {line:?} (once):\n{console}"
    );
}

/// The place entry itself, on the default machine: its bytes land at the GPA it names (read
/// back through the kernel's identity map), and a place into VTL2's memory is a store the
/// paravisor refuses by that GPA (not the kernel's window address): VTL0 takes the fault the
/// paravisor injects and goes on.
#[test]
fn a_place_lands_at_its_gpa_and_one_into_vtl2_memory_faults() {
    for arch in kernel::arches() {
        let scratch = kernel::proto(arch).scratch_page() + 0x10;
        let vtl2 = e2e::layout(arch).vtl2 + 0x8;
        let bytes = 0x0123_4567_89ab_cdefu64.to_le_bytes();
        let table = Table::new()
            .place(scratch + 1, &bytes[..7])
            .place(scratch + 8, &bytes[7..])
            .read(scratch, 8)
            .read(scratch + 8, 1)
            .place(vtl2, &[0xa5; 16])
            .read(scratch + 1, 1);
        let run = kernel::run(arch, None, None, &table);
        let records: Vec<&Record> = run.results.entries.iter().map(|(_, r)| r).collect();
        let value = |r: &Record| match r {
            Record::Read { outcome, .. } => *outcome,
            other => panic!("{arch:?}: {other:?}"),
        };
        assert_eq!(
            value(records[2]),
            Ok(0x2345_6789_abcd_ef00),
            "{arch:?}: the first seven bytes (one store each: unaligned) after byte 0, still zero"
        );
        assert_eq!(value(records[3]), Ok(0x01), "{arch:?}: the eighth byte");
        let Record::Place { gpa, len, outcome } = records[4] else {
            panic!("{arch:?}: {:?}", records[4])
        };
        assert_eq!((*gpa, *len), (vtl2, 16));
        let event = e2e::memory_fault(
            arch,
            &Vtl0Access::Write {
                gpa: vtl2,
                bytes: vec![0xa5; 8],
            },
            false,
        );
        let want = match arch {
            Arch::X86_64 => Fault::X86 {
                vector: (event >> 16) as u8,
                code: 0,
                cr2: 0,
            },
            Arch::Aarch64 => Fault::Arm64 {
                esr: (event >> 64) as u64,
                far: 0,
            },
        };
        assert_eq!(*outcome, Err(want), "{arch:?}: the paravisor's fault");
        let needle = format!("VTL0 write at GPA {vtl2:#x} refused (VTL2 memory)");
        let console = &run.run.run.console;
        assert!(
            console.contains(&needle),
            "{arch:?}: {needle:?}:\n{console}"
        );
        assert_eq!(value(records[5]), Ok(0xef), "{arch:?}: the kernel went on");
    }
}

/// The IGVM boot on the same machine: the memory map the runner fills as a VMM's loader does
/// tells the paravisor of all the RAM (its VTL0 memory reaches the top), and VTL0, started from
/// the file's VTL0 context, uses the last page of RAM (a PostMessage to a connection the host
/// knows, which the hypervisor serves itself, reading it there).
#[test]
fn the_igvm_memory_map_tells_the_paravisor_of_all_the_ram() {
    for arch in kernel::arches() {
        let top = ram(arch).last().unwrap().end;
        let (mut input, _) = message(9);
        input[..4].copy_from_slice(&HOST_CONNECTION.to_le_bytes());
        let table = post_from(Table::new(), arch, top - PAGE, &input);
        let started = Instant::now();
        let run = kernel::boot_with(arch, None, None, &table, |boot| boot.memory_mb = MEMORY_MB);
        eprintln!("{arch:?} (IGVM): {:?}", started.elapsed());
        let console = &run.run.run.console;
        assert!(
            run.run.run.passed() && run.results.done == Some(table.len()),
            "{arch:?}: {}\n{console}",
            run.run.summary()
        );
        assert_eq!(statuses(arch, &run), [HvStatus::SUCCESS], "{arch:?}");
        assert!(
            run.reflected_controls().is_empty(),
            "{arch:?}: the host's own"
        );
        let vtl0_top = format!("..{top:#x}");
        assert!(
            console
                .lines()
                .any(|l| l.contains("VTL0 memory ") && l.trim_end().ends_with(&vtl0_top)),
            "{arch:?}: no VTL0 memory range up to {top:#x}:\n{console}"
        );
    }
}
