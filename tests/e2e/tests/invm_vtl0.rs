//! A real VTL0 under the paravisor, under the in-VM mock Hyper-V: the paravisor boots from its
//! IGVM file with the VTL0 test kernel (`tests/vtl0`) as the file's VTL0 payload, starts VTL0
//! from the file's VTL0 context at its first VtlReturn, and the kernel runs a test table:
//! hypercalls the paravisor proxies, accesses to VTL2's memory that fault into the mock.

use e2e::image;
use mockhv::invm::{InvmBoot, InvmRun, Paravisor, Vtl0};
use mockhv::qemu::{Arch, Outcome};
use std::path::PathBuf;
use vtl0::{parse_results, Results, Table};

fn proto(arch: Arch) -> vtl0::Arch {
    match arch {
        Arch::X86_64 => vtl0::Arch::X86_64,
        Arch::Aarch64 => vtl0::Arch::Aarch64,
    }
}

/// Boots `paravisor-<arch>-vtl0.igvm` under the in-VM host with `table` for the kernel.
fn run(arch: Arch, table: &Table) -> (InvmRun, Results) {
    let dir = image(arch).parent().expect("image dir").to_path_buf();
    let host = dir.join(format!("invm-{}.elf", arch.name()));
    let igvm = dir.join(format!("paravisor-{}-vtl0.igvm", arch.name()));
    // One file per run: the tests of this binary run at once.
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!("invm-vtl0-table-{}-{n}.bin", std::process::id()));
    std::fs::write(&file, table.to_bytes()).expect("write the table");
    let mut boot = InvmBoot::new(arch, host, Paravisor::Igvm(igvm));
    boot.vtl0 = Vtl0::FromParavisor;
    boot.blobs
        .push((proto(arch).table_gpa(), PathBuf::from(&file)));
    boot.trace = true;
    let run = boot.run().expect("QEMU runs");
    let _ = std::fs::remove_file(&file);
    let results = parse_results(&run.run.console)
        .unwrap_or_else(|e| panic!("{e}\nconsole:\n{}", run.run.console));
    (run, results)
}

/// The ESR the paravisor gives VTL0 for an access to VTL2's memory (the suites' one oracle).
fn abort_esr(access: &mockhv::model::Vtl0Access) -> u64 {
    (e2e::memory_fault(Arch::Aarch64, access, false) >> 64) as u64
}

/// The kernel's own record of each entry, and what the hypervisor saw of them: a PostMessage to
/// a connection nobody knows reaches VTL2 as a hypercall intercept and VTL0 gets
/// INVALID_CONNECTION_ID with every canary intact; a store and a load on VTL2's first page are
/// stopped by VTL0's stage 2, reach the paravisor as GPA intercepts, and VTL0 takes the
/// synchronous external abort the paravisor leaves it; the kernel's own page reads back what it
/// wrote. Nothing of VTL0's reaches the host as a PostMessage of VTL2's.
#[test]
fn vtl0_runs_its_table_under_the_paravisor_on_arm64() {
    use hvdef::{HvInterceptAccessType, HvMessageType, HvStatus, HypercallCode, Vtl};
    use mockhv::model::{Event, Vtl0Access};
    use vtl0::{CallOutcome, Fault, Record};
    let arch = Arch::Aarch64;
    let vtl2 = e2e::layout(arch).vtl2;
    let scratch = proto(arch).scratch_page();
    let table = Table::new()
        .hypercall(
            u64::from(HypercallCode::POST_MESSAGE.0),
            &e2e::post_message(0x77),
            0,
        )
        .write(vtl2, 8, 0x1234)
        .read(vtl2 + 8, 8)
        .write(scratch, 8, 0x5566_7788)
        .read(scratch, 8);
    let (run, results) = run(arch, &table);
    assert_eq!(
        run.run.outcome,
        Outcome::Pass,
        "{}\n{}",
        run.run.summary(),
        run.run.console
    );
    assert!(
        run.run
            .console
            .contains("VTL0 starts at 0x48000000 from the IGVM's VTL0 context"),
        "{}",
        run.run.console
    );
    assert_eq!(
        results.hyperv,
        Some(vtl0::GUEST_OS_ID),
        "VTL0 found Hyper-V"
    );
    assert_eq!(results.done, Some(5), "{}", run.run.console);
    let store = Vtl0Access::Write {
        gpa: vtl2,
        bytes: vec![0; 8],
    };
    let load = Vtl0Access::Read {
        gpa: vtl2 + 8,
        len: 8,
    };
    let records: Vec<Record> = results.entries.iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(
        records,
        [
            Record::Hypercall {
                control: u64::from(HypercallCode::POST_MESSAGE.0),
                outcome: CallOutcome::Done {
                    result: u64::from(HvStatus::INVALID_CONNECTION_ID.0),
                    out: vec![],
                    bad_canaries: vec![],
                },
            },
            Record::Write {
                gpa: vtl2,
                width: 8,
                value: 0x1234,
                // FnV: the paravisor does not hand VTL0 an address (FAR 0).
                outcome: Err(Fault::Arm64 {
                    esr: abort_esr(&store),
                    far: 0
                }),
            },
            Record::Read {
                gpa: vtl2 + 8,
                width: 8,
                outcome: Err(Fault::Arm64 {
                    esr: abort_esr(&load),
                    far: 0
                }),
            },
            Record::Write {
                gpa: scratch,
                width: 8,
                value: 0x5566_7788,
                outcome: Ok(())
            },
            Record::Read {
                gpa: scratch,
                width: 8,
                outcome: Ok(0x5566_7788)
            },
        ]
    );

    // The hypervisor's side: the intercepts the paravisor was handed, in order.
    let intercepts: Vec<(Vtl, HvMessageType)> = run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Intercept { vtl, message, .. } => Some((*vtl, message.header.message_type)),
            _ => None,
        })
        .collect();
    assert_eq!(
        intercepts,
        [
            (Vtl::VTL0, HvMessageType::HYPERCALL_INTERCEPT),
            (Vtl::VTL0, HvMessageType::GPA_INTERCEPT),
            (Vtl::VTL0, HvMessageType::GPA_INTERCEPT),
        ]
    );
    let stopped: Vec<(u64, HvInterceptAccessType)> = run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Vtl0Access {
                gpa,
                access,
                allowed: false,
                ..
            } => Some((*gpa, *access)),
            _ => None,
        })
        .collect();
    assert_eq!(
        stopped,
        [
            (vtl2, HvInterceptAccessType::WRITE),
            (vtl2 + 8, HvInterceptAccessType::READ)
        ]
    );
    let relayed = run.events.iter().any(|e| {
        matches!(e, Event::Hypercall(r) if r.vtl == Vtl::VTL2 && r.code == HypercallCode::POST_MESSAGE)
    });
    assert!(
        !relayed,
        "the paravisor relayed a PostMessage for an unknown connection"
    );
}

/// The repeat entry under the whole stack: 1,000 PostMessages to an unknown connection in a row,
/// one line for all of them. Every call came back INVALID_CONNECTION_ID with its canaries
/// intact, the last one's own line says the same, and the host handed VTL2 exactly 1,000
/// hypercall intercepts and got no PostMessage from VTL2 (nothing relayed).
#[test]
fn vtl0_repeats_a_refused_call_under_the_paravisor_on_arm64() {
    use hvdef::{HvMessageType, HvStatus, HypercallCode, Vtl};
    use mockhv::model::Event;
    use vtl0::{CallOutcome, Record, RepeatStats};
    let arch = Arch::Aarch64;
    let post = u64::from(HypercallCode::POST_MESSAGE.0);
    let table = Table::new()
        .repeat(1000)
        .hypercall(post, &e2e::post_message(0x77), 0);
    let (run, results) = run(arch, &table);
    assert_eq!(
        run.run.outcome,
        Outcome::Pass,
        "{}\n{}",
        run.run.summary(),
        run.run.console
    );
    assert_eq!(results.done, Some(2), "{}", run.run.console);
    let records = results.records().unwrap();
    let refused = u64::from(HvStatus::INVALID_CONNECTION_ID.0);
    let Record::Repeat(stats) = records[0] else {
        panic!("{:?}", records[0]);
    };
    assert!(stats.ticks > 0 && stats.hz > 0, "{stats:?}");
    assert_eq!(
        stats,
        RepeatStats {
            count: 1000,
            calls: 1000,
            first: refused,
            last: refused,
            differed: 0,
            canaries_bad: 0,
            ..stats
        }
    );
    assert_eq!(
        records[1],
        Record::Hypercall {
            control: post,
            outcome: CallOutcome::Done {
                result: refused,
                out: vec![],
                bad_canaries: vec![],
            },
        }
    );
    let intercepts = run
        .events
        .iter()
        .filter(|e| {
            matches!(e, Event::Intercept { vtl: Vtl::VTL0, message, .. }
                if message.header.message_type == HvMessageType::HYPERCALL_INTERCEPT)
        })
        .count();
    assert_eq!(intercepts, 1000, "one intercept per call");
    assert!(!run.events.iter().any(|e| {
        matches!(e, Event::Hypercall(r) if r.vtl == Vtl::VTL2 && r.code == HypercallCode::POST_MESSAGE)
    }));
}
