//! The VTL0 test kernel (`tests/vtl0`) alone in plain QEMU, no hypervisor: it finds no Hyper-V
//! interface, skips every hypercall, runs the memory probes (a value written to its own scratch
//! page reads back; an access outside its page tables faults with the exact x86 vector and
//! error code or arm64 ESR) and says `done`; a malformed table is one `bad table` line and a
//! failing power-off with no entry run.
//!
//! Needs `cargo xtask image --release` (which builds `target/images/vtl0-<arch>.elf`) and
//! `PARAVISOR_IMAGE_DIR=target/images`, as the other suites; `cargo xtask test` does both.
#![forbid(unsafe_code)]

use mockhv::qemu::{Arch, Exit, Outcome, Qemu, QemuConfig, RunResult};
use std::path::PathBuf;
use std::time::Duration;
use vtl0::{parse_results, CallOutcome, Fault, Record, Results, Table, MAX_ENTRIES, TABLE_MAX};

fn proto(arch: Arch) -> vtl0::Arch {
    match arch {
        Arch::X86_64 => vtl0::Arch::X86_64,
        Arch::Aarch64 => vtl0::Arch::Aarch64,
    }
}

/// `target/images/vtl0-<arch>.elf`, next to the paravisor images.
fn vtl0_image(arch: Arch) -> PathBuf {
    let dir = std::env::var_os("PARAVISOR_IMAGE_DIR").expect(
        "PARAVISOR_IMAGE_DIR is not set: run `cargo xtask image --release` and set \
         PARAVISOR_IMAGE_DIR=target/images (or run `cargo xtask test`)",
    );
    let path = PathBuf::from(dir).join(format!("vtl0-{}.elf", arch.name()));
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask image --release`",
        path.display()
    );
    path
}

/// Boots the kernel with `table` placed at the arch's table GPA by QEMU's generic loader.
fn boot(arch: Arch, name: &str, table: &[u8]) -> RunResult {
    let file = std::env::temp_dir().join(format!(
        "vtl0-{}-{name}-{}.bin",
        arch.name(),
        std::process::id()
    ));
    std::fs::write(&file, table).expect("write the table");
    let loader = format!(
        "loader,file={},addr={:#x},force-raw=on",
        file.to_str().expect("UTF-8 temp path"),
        proto(arch).table_gpa()
    );
    let mut qemu = Qemu::spawn(&QemuConfig {
        timeout: Duration::from_secs(30),
        extra_args: vec!["-device".into(), loader],
        ..QemuConfig::new(arch, Some(vtl0_image(arch)))
    })
    .expect("QEMU starts");
    let run = qemu.wait().expect("QEMU run completes");
    let _ = std::fs::remove_file(&file);
    run
}

/// Passing power-off: x86 isa-debug-exit 0x10 (exit 33); arm64 PSCI SYSTEM_OFF (exit 0).
fn pass_outcome(arch: Arch) -> Outcome {
    match arch {
        Arch::X86_64 => Outcome::Pass,
        Arch::Aarch64 => Outcome::Unexpected(Exit::Code(0)),
    }
}

/// Failing power-off: x86 isa-debug-exit 0x11 (exit 35); arm64 PSCI SYSTEM_RESET, which
/// `-no-reboot` also turns into exit 0 (the console tells them apart: no `done` line).
fn fail_outcome(arch: Arch) -> Outcome {
    match arch {
        Arch::X86_64 => Outcome::Fail,
        Arch::Aarch64 => Outcome::Unexpected(Exit::Code(0)),
    }
}

fn results(run: &RunResult) -> Results {
    parse_results(&run.console)
        .unwrap_or_else(|e| panic!("{e}\n{}\nconsole:\n{}", run.summary(), run.console))
}

/// A not-present read (x86 #PF, error code 0) or the arm64 data abort at the same EL with a
/// level-1 translation fault (EC 0x25, IL, DFSC 0b000101), `write` adding the x86 W bit or
/// the arm64 WnR bit.
fn unmapped_fault(arch: Arch, gpa: u64, write: bool) -> Fault {
    match arch {
        Arch::X86_64 => Fault::X86 {
            vector: 14,
            code: if write { 0x2 } else { 0x0 },
            cr2: gpa,
        },
        Arch::Aarch64 => Fault::Arm64 {
            esr: (0x25 << 26) | (1 << 25) | if write { 1 << 6 } else { 0 } | 0b000101,
            far: gpa,
        },
    }
}

/// An instruction fetch from the unmapped GPA: x86 #PF (no NX, so no I/D bit: code 0);
/// arm64 instruction abort at the same EL (EC 0x21), level-1 translation fault.
fn unmapped_fetch(arch: Arch, gpa: u64) -> Fault {
    match arch {
        Arch::X86_64 => Fault::X86 {
            vector: 14,
            code: 0,
            cr2: gpa,
        },
        Arch::Aarch64 => Fault::Arm64 {
            esr: (0x21 << 26) | (1 << 25) | 0b000101,
            far: gpa,
        },
    }
}

/// A `ret` the exec probe returns through.
fn ret_opcode(arch: Arch) -> (u32, u64) {
    match arch {
        Arch::X86_64 => (1, 0xc3),
        Arch::Aarch64 => (4, 0xd65f_03c0),
    }
}

fn standalone(arch: Arch) {
    let p = proto(arch);
    let scratch = p.scratch_page();
    let unmapped = p.unmapped_gpa();
    let (ret_width, ret) = ret_opcode(arch);
    // HvCallPostMessage (memory-based) and a fast HvCallSignalEvent: no Hyper-V, skipped.
    let post = 0x005c;
    let signal_fast = 0x0001_005d;
    let table = Table::new()
        .hypercall(post, &[0x11; 24], 0)
        .write(scratch, 8, 0x1122_3344_5566_7788)
        .read(scratch, 8)
        .read(scratch + 2, 2)
        .hypercall(signal_fast, &7u64.to_le_bytes(), 0)
        .read(unmapped, 8)
        .write(unmapped + 8, 4, 1)
        .write(scratch + 0x100, ret_width, ret)
        .exec(scratch + 0x100)
        .exec(unmapped)
        .to_bytes();
    let run = boot(arch, "standalone", &table);
    assert_eq!(
        run.outcome,
        pass_outcome(arch),
        "{}\nconsole:\n{}",
        run.summary(),
        run.console
    );
    let r = results(&run);
    let want_reason = match arch {
        Arch::X86_64 => "cpuid 0x40000000 vendor \"TCGTCGTCGTCG\"",
        Arch::Aarch64 => "SMCCC vendor UID 0xffffffffffffffff 0x0 0x0 0x0",
    };
    assert_eq!(r.no_hyperv.as_deref(), Some(want_reason), "{}", run.console);
    assert_eq!(r.hyperv, None);
    assert_eq!(r.bad_table, None);
    assert_eq!(r.unexpected, None);
    let want = vec![
        Record::Hypercall {
            control: post,
            outcome: CallOutcome::Skipped,
        },
        Record::Write {
            gpa: scratch,
            width: 8,
            value: 0x1122_3344_5566_7788,
            outcome: Ok(()),
        },
        Record::Read {
            gpa: scratch,
            width: 8,
            outcome: Ok(0x1122_3344_5566_7788),
        },
        Record::Read {
            gpa: scratch + 2,
            width: 2,
            outcome: Ok(0x5566),
        },
        Record::Hypercall {
            control: signal_fast,
            outcome: CallOutcome::Skipped,
        },
        Record::Read {
            gpa: unmapped,
            width: 8,
            outcome: Err(unmapped_fault(arch, unmapped, false)),
        },
        Record::Write {
            gpa: unmapped + 8,
            width: 4,
            value: 1,
            outcome: Err(unmapped_fault(arch, unmapped + 8, true)),
        },
        Record::Write {
            gpa: scratch + 0x100,
            width: ret_width as u8,
            value: ret,
            outcome: Ok(()),
        },
        Record::Exec {
            gpa: scratch + 0x100,
            outcome: Ok(()),
        },
        Record::Exec {
            gpa: unmapped,
            outcome: Err(unmapped_fetch(arch, unmapped)),
        },
    ];
    assert_eq!(r.records().unwrap(), want, "console:\n{}", run.console);
    assert_eq!(r.done, Some(want.len() as u32), "{}", run.console);
    assert!(
        run.console.contains("vtl0: done 10 entries"),
        "{}",
        run.console
    );
}

#[test]
fn x86_64_runs_its_table_without_hyper_v() {
    standalone(Arch::X86_64);
}

#[test]
fn aarch64_runs_its_table_without_hyper_v() {
    standalone(Arch::Aarch64);
}

/// x86 only: a non-canonical address is #GP (vector 13, error code 0), not #PF.
#[test]
fn x86_64_non_canonical_read_is_a_general_protection_fault() {
    let gpa = 0x8000_0000_0000_0000;
    let run = boot(
        Arch::X86_64,
        "noncanonical",
        &Table::new().read(gpa, 4).to_bytes(),
    );
    assert_eq!(run.outcome, Outcome::Pass, "{}", run.console);
    let r = results(&run);
    assert_eq!(
        r.records().unwrap(),
        vec![Record::Read {
            gpa,
            width: 4,
            outcome: Err(Fault::X86 {
                vector: 13,
                code: 0,
                // Not a page fault: CR2 is whatever the last one left (none here).
                cr2: 0,
            }),
        }]
    );
}

/// Tables the kernel must refuse, each with the exact reason it prints.
fn malformed_tables() -> Vec<(&'static str, Vec<u8>, String)> {
    let good = Table::new().write(0, 4, 0).read(0, 4).to_bytes();
    let mut magic = good.clone();
    magic[..4].copy_from_slice(b"XTL0");
    let mut count = good.clone();
    count[8..12].copy_from_slice(&(MAX_ENTRIES + 1).to_le_bytes());
    let mut window = good.clone();
    window[12..16].copy_from_slice(&(TABLE_MAX as u32 + 8).to_le_bytes());
    let mut past_end = good.clone();
    past_end[8..12].copy_from_slice(&3u32.to_le_bytes());
    // The second entry is corrupt: the first must not run either.
    let mut kind = good.clone();
    kind[16 + 32] = 9;
    vec![
        (
            "magic",
            magic,
            format!("magic 0x304c5458, expected {:#x}", vtl0::TABLE_MAGIC),
        ),
        (
            "nothing",
            vec![0; 64],
            format!("magic 0x0, expected {:#x}", vtl0::TABLE_MAGIC),
        ),
        ("count", count, format!("count 4097 exceeds {MAX_ENTRIES}")),
        (
            "window",
            window,
            "total size 0x100008 exceeds the 0x100000-byte window".into(),
        ),
        (
            "past_end",
            past_end,
            format!(
                "entry 2 at offset {:#x} runs past the table end",
                good.len()
            ),
        ),
        ("kind", kind, "entry 1 has unknown kind 9".into()),
        (
            "repeat",
            Table::new().write(0, 4, 0).repeat(5).read(0, 4).to_bytes(),
            "repeat entry 1 is not followed by a hypercall".into(),
        ),
    ]
}

fn malformed(arch: Arch) {
    for (name, table, reason) in malformed_tables() {
        let run = boot(arch, name, &table);
        assert_eq!(
            run.outcome,
            fail_outcome(arch),
            "{name}: {}\nconsole:\n{}",
            run.summary(),
            run.console
        );
        let r = results(&run);
        assert_eq!(r.bad_table.as_deref(), Some(reason.as_str()), "{name}");
        assert!(
            r.entries.is_empty(),
            "{name}: no entry runs\n{}",
            run.console
        );
        assert_eq!(r.done, None, "{name}");
    }
}

#[test]
fn x86_64_refuses_malformed_tables() {
    malformed(Arch::X86_64);
}

#[test]
fn aarch64_refuses_malformed_tables() {
    malformed(Arch::Aarch64);
}

/// What a forced hypercall (made without Hyper-V) reports.
fn done(result: u64, out: &[u8], bad: &[&str]) -> CallOutcome {
    CallOutcome::Done {
        result,
        out: out.to_vec(),
        bad_canaries: bad.iter().map(|s| s.to_string()).collect(),
    }
}

/// The trampoline and its canaries, exercised without a hypervisor: x86 calls code that write
/// probes put in its own hypercall page (a `ret`, then code that breaks one register, then
/// `vmcall`, which is #UD under TCG); the result is RAX, the page address it was called through.
#[test]
fn x86_64_hypercall_trampoline_checks_its_canaries() {
    let p = vtl0::Arch::X86_64;
    let page = p.hypercall_page();
    let post = 0x005c;
    let fast = 0x0001_005d;
    let table = Table::new()
        .write(page, 1, 0xc3) // ret
        .forced_hypercall(post, &[0x11; 24], 8)
        .write(page, 4, 0xc3db_3148) // xor %rbx,%rbx; ret
        .forced_hypercall(post, &[], 0)
        .write(page, 8, 0xc3_c0ef_0f66) // pxor %xmm0,%xmm0; ret
        .forced_hypercall(post, &[], 0)
        .forced_hypercall(fast, &[], 0) // XMM0 is the fast pool's: no canary
        .write(page, 8, 0xc3c2_6e0f_4866) // movq %rdx,%xmm0; ret
        .forced_hypercall(fast, &[1, 2, 3, 4, 5, 6, 7, 8], 8)
        .write(page, 4, 0xc3c1_010f) // vmcall; ret
        .forced_hypercall(post, &[], 0)
        .to_bytes();
    let run = boot(Arch::X86_64, "trampoline", &table);
    assert_eq!(run.outcome, Outcome::Pass, "{}", run.console);
    let calls: Vec<(u64, CallOutcome)> = results(&run)
        .records()
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::Hypercall { control, outcome } => Some((control, outcome)),
            _ => None,
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            (post, done(page, &[0; 8], &[])),
            (post, done(page, &[], &["rbx"])),
            (post, done(page, &[], &["xmm0"])),
            (fast, done(page, &[], &[])),
            (fast, done(page, &[1, 2, 3, 4, 5, 6, 7, 8], &[])),
            (
                post,
                CallOutcome::Fault(Fault::X86 {
                    vector: 6,
                    code: 0,
                    cr2: 0
                })
            ),
        ],
        "console:\n{}",
        run.console
    );
}

/// arm64: QEMU's PSCI answers an `hvc #0` it does not know with x0 = -1 and keeps every other
/// register, so every canary (X18-X30, and X4-X17 for a memory-based call) comes back.
#[test]
fn aarch64_hypercall_trampoline_keeps_its_canaries_under_qemu_psci() {
    let table = Table::new()
        .forced_hypercall(0x005c, &[0x11; 24], 8)
        .forced_hypercall(0x0001_005d, &[7; 16], 16)
        .to_bytes();
    let run = boot(Arch::Aarch64, "trampoline", &table);
    assert_eq!(run.outcome, pass_outcome(Arch::Aarch64), "{}", run.console);
    assert_eq!(
        results(&run).records().unwrap(),
        vec![
            Record::Hypercall {
                control: 0x005c,
                outcome: done(u64::MAX, &[0; 8], &[]),
            },
            // The output is X4, X5: the pool after the 16 input bytes, zero going in.
            Record::Hypercall {
                control: 0x0001_005d,
                outcome: done(u64::MAX, &[0; 16], &[]),
            },
        ],
        "console:\n{}",
        run.console
    );
}

/// Where the kernel's recovery record for VP 0 (`vtl0_recovery`, an array of them, VP 0's first; its
/// first field the resume PC) is.
fn recovery_symbol(arch: Arch) -> u64 {
    use object::{Object, ObjectSymbol};
    let bytes = std::fs::read(vtl0_image(arch)).expect("read the image");
    let elf = object::File::parse(&*bytes).expect("an ELF");
    elf.symbols()
        .find(|s| s.name() == Ok("vtl0_recovery"))
        .expect("the image exports vtl0_recovery")
        .address()
}

/// An exception outside any probe's recovery point: code that an exec probe runs clears the
/// resume PC, then executes an undefined instruction. The kernel prints one `unexpected
/// exception` line and powers off with failure, running no further entry.
fn unexpected(arch: Arch) {
    let p = proto(arch);
    let code = p.scratch_page() + 0x200;
    let rec = recovery_symbol(arch);
    let mut bytes = Vec::new();
    match arch {
        Arch::X86_64 => {
            bytes.extend([0x48, 0xb8]); // movabs $rec, %rax
            bytes.extend(rec.to_le_bytes());
            bytes.extend([0x48, 0xc7, 0x00, 0, 0, 0, 0]); // movq $0, (%rax)
            bytes.extend([0x0f, 0x0b]); // ud2
        }
        Arch::Aarch64 => {
            for insn in [
                0x5800_0081u32, // ldr x1, 16f
                0xf900_003f,    // str xzr, [x1]
                0x0000_0000,    // udf #0
                0xd503_201f,    // nop
            ] {
                bytes.extend(insn.to_le_bytes());
            }
            bytes.extend(rec.to_le_bytes());
        }
    }
    bytes.resize(bytes.len().div_ceil(8) * 8, 0);
    let mut table = Table::new();
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let word = u64::from_le_bytes(chunk.try_into().unwrap());
        table = table.write(code + 8 * i as u64, 8, word);
    }
    let writes = table.len();
    let table = table.exec(code).read(p.scratch_page(), 8).to_bytes();
    let run = boot(arch, "unexpected", &table);
    assert_eq!(
        run.outcome,
        fail_outcome(arch),
        "{}\nconsole:\n{}",
        run.summary(),
        run.console
    );
    let r = results(&run);
    let want = match arch {
        Arch::X86_64 => format!("vector=0x6 code=0x0 rip={:#x} cr2=0x0", code + 17),
        // Synchronous at EL1h (vector slot 4), EC 0 (unknown), IL.
        Arch::Aarch64 => format!("kind=4 esr=0x2000000 elr={:#x} far=0x0", code + 8),
    };
    assert_eq!(r.unexpected, Some(want), "console:\n{}", run.console);
    assert_eq!(r.entries.len() as u32, writes, "only the writes completed");
    assert_eq!(r.done, None);
}

#[test]
fn x86_64_unexpected_exception_fails_the_run() {
    unexpected(Arch::X86_64);
}

#[test]
fn aarch64_unexpected_exception_fails_the_run() {
    unexpected(Arch::Aarch64);
}

/// The repeat line of `count` forced calls that all completed with `result` and intact
/// canaries, with the run's own counter readings (which no test can predict) taken from `got`.
fn all_same(count: u32, result: u64, got: &Record) -> Record {
    let Record::Repeat(g) = got else {
        panic!("not a repeat line: {got:?}");
    };
    assert!(g.ticks > 0, "{g:?}: the calls took no counter ticks");
    Record::Repeat(vtl0::RepeatStats {
        count,
        calls: count,
        first: result,
        last: result,
        differed: 0,
        canaries_bad: 0,
        ticks: g.ticks,
        hz: g.hz,
    })
}

/// A repeat entry without a hypervisor (x86): the `ret` in the hypercall page is called 5,000
/// times with one line for all of them, then the entry's own line for the last call; code that
/// breaks RBX breaks it on every call; `rdtsc; ret` returns a new RAX each time; `vmcall` (#UD
/// under TCG) ends the repeat at its first call. The TSC's frequency is unknown (0).
#[test]
fn x86_64_repeats_a_forced_hypercall() {
    let p = vtl0::Arch::X86_64;
    let page = p.hypercall_page();
    let post = 0x005c;
    let table = Table::new()
        .write(page, 1, 0xc3) // ret
        .repeat(5000)
        .forced_hypercall(post, &[0x11; 24], 8)
        .write(page, 4, 0xc3db_3148) // xor %rbx,%rbx; ret
        .repeat(300)
        .forced_hypercall(post, &[], 0)
        .write(page, 4, 0x00c3_310f) // rdtsc; ret
        .repeat(50)
        .forced_hypercall(post, &[], 0)
        .write(page, 4, 0xc3c1_010f) // vmcall; ret
        .repeat(7)
        .forced_hypercall(post, &[], 0)
        .to_bytes();
    let run = boot(Arch::X86_64, "repeat", &table);
    assert_eq!(run.outcome, Outcome::Pass, "{}", run.console);
    let r = results(&run);
    assert_eq!(r.done, Some(12), "{}", run.console);
    let records = r.records().unwrap();
    assert_eq!(records.len(), 12, "one line per entry, not per call");
    assert_eq!(records[1], all_same(5000, page, &records[1]));
    assert_eq!(
        records[2],
        Record::Hypercall {
            control: post,
            outcome: done(page, &[0; 8], &[]),
        }
    );
    let Record::Repeat(broken) = &records[4] else {
        panic!("{:?}", records[4]);
    };
    assert_eq!(
        (
            broken.calls,
            broken.first,
            broken.differed,
            broken.canaries_bad
        ),
        (300, page, 0, 300)
    );
    assert_eq!(
        records[5],
        Record::Hypercall {
            control: post,
            outcome: done(page, &[], &["rbx"]),
        }
    );
    let Record::Repeat(tsc) = &records[7] else {
        panic!("{:?}", records[7]);
    };
    assert_eq!((tsc.calls, tsc.differed, tsc.canaries_bad), (50, 49, 0));
    assert!(tsc.last != tsc.first, "{tsc:?}");
    let Record::Hypercall {
        outcome: CallOutcome::Done { result, .. },
        ..
    } = &records[8]
    else {
        panic!("{:?}", records[8]);
    };
    assert_eq!(*result, tsc.last, "the entry's line is the last call's");
    let Record::Repeat(ud) = &records[10] else {
        panic!("{:?}", records[10]);
    };
    assert_eq!(
        (
            ud.count,
            ud.calls,
            ud.first,
            ud.last,
            ud.differed,
            ud.canaries_bad,
            ud.hz
        ),
        (7, 1, 0, 0, 0, 0, 0),
        "the fault ends the repeat at its first call"
    );
    assert_eq!(
        records[11],
        Record::Hypercall {
            control: post,
            outcome: CallOutcome::Fault(Fault::X86 {
                vector: 6,
                code: 0,
                cr2: 0
            }),
        }
    );
}

/// A repeat entry without a hypervisor (arm64): QEMU's PSCI answers each of 20,000 `hvc #0`s
/// with x0 = -1 and every canary kept, one line for all of them, then the entry's own line; the
/// counter's frequency is CNTFRQ_EL0's. An unforced repeated call is skipped: no call is made.
#[test]
fn aarch64_repeats_a_forced_hypercall() {
    let table = Table::new()
        .repeat(20_000)
        .forced_hypercall(0x005c, &[0x11; 24], 8)
        .repeat(1000)
        .forced_hypercall(0x0001_005d, &[7; 16], 16)
        .repeat(3)
        .hypercall(0x005c, &[], 0)
        .to_bytes();
    let run = boot(Arch::Aarch64, "repeat", &table);
    assert_eq!(run.outcome, pass_outcome(Arch::Aarch64), "{}", run.console);
    let r = results(&run);
    assert_eq!(r.done, Some(6), "{}", run.console);
    let records = r.records().unwrap();
    assert_eq!(records[0], all_same(20_000, u64::MAX, &records[0]));
    let Record::Repeat(first) = &records[0] else {
        unreachable!()
    };
    assert!(first.hz > 0, "CNTFRQ_EL0 is set: {first:?}");
    assert_eq!(
        records[1..4],
        [
            Record::Hypercall {
                control: 0x005c,
                outcome: done(u64::MAX, &[0; 8], &[]),
            },
            all_same(1000, u64::MAX, &records[2]),
            Record::Hypercall {
                control: 0x0001_005d,
                outcome: done(u64::MAX, &[0; 16], &[]),
            },
        ]
    );
    assert_eq!(
        records[4..],
        [
            Record::Repeat(vtl0::RepeatStats {
                count: 3,
                hz: first.hz,
                ..Default::default()
            }),
            Record::Hypercall {
                control: 0x005c,
                outcome: CallOutcome::Skipped,
            },
        ]
    );
}

/// The address of a symbol of the kernel's image.
fn symbol(arch: Arch, name: &str) -> u64 {
    use object::{Object, ObjectSymbol};
    let bytes = std::fs::read(vtl0_image(arch)).expect("read the image");
    let elf = object::File::parse(&*bytes).expect("an ELF");
    elf.symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("the image has no {name}"))
        .address()
}

/// The IDT entry on its own: with the kernel's own IDT (`vtl0_idt`, 32 gates) the #UD reaches
/// the kernel's vector 6 handler, an unexpected exception (no probe runs); with an empty IDT
/// (limit 0) it escalates to a triple fault, which `-no-reboot` turns into QEMU's exit 0, the
/// IDT line the last the kernel printed. Either way no further entry runs.
#[test]
fn x86_64_idt_entry_raises_ud_through_the_idt_it_loads() {
    let arch = Arch::X86_64;
    let own = symbol(arch, "vtl0_idt");
    let read = proto(arch).scratch_page();
    let run = boot(
        arch,
        "idt-own",
        &Table::new().idt(own, 32 * 16 - 1).read(read, 8).to_bytes(),
    );
    assert_eq!(
        run.outcome,
        Outcome::Fail,
        "{}\n{}",
        run.summary(),
        run.console
    );
    let r = results(&run);
    assert_eq!(
        r.entries,
        [(
            0,
            Record::Idt {
                base: own,
                limit: 0x1ff
            }
        )],
        "{}",
        run.console
    );
    let unexpected = r.unexpected.expect("an unexpected exception");
    assert!(
        unexpected.starts_with("vector=0x6 code=0x0 rip=0x"),
        "{unexpected}"
    );
    assert_eq!(r.done, None);

    let run = boot(
        arch,
        "idt-empty",
        &Table::new().idt(0, 0).read(read, 8).to_bytes(),
    );
    assert_eq!(
        run.outcome,
        Outcome::Unexpected(Exit::Code(0)),
        "a triple fault: {}\n{}",
        run.summary(),
        run.console
    );
    let r = results(&run);
    assert_eq!(
        r.entries,
        [(0, Record::Idt { base: 0, limit: 0 })],
        "{}",
        run.console
    );
    assert_eq!((r.unexpected, r.done), (None, None), "{}", run.console);
    let last = run.console.lines().rfind(|l| l.starts_with("vtl0: "));
    assert_eq!(
        last,
        Some("vtl0: 0 idt base=0x0 limit=0x0 raising #UD"),
        "{}",
        run.console
    );
}

/// The IDT entry is x86's: aarch64 refuses the table before any entry runs.
#[test]
fn aarch64_refuses_an_idt_entry() {
    let arch = Arch::Aarch64;
    let run = boot(
        arch,
        "idt",
        &Table::new()
            .read(proto(arch).scratch_page(), 8)
            .idt(0, 0)
            .to_bytes(),
    );
    assert_eq!(run.outcome, fail_outcome(arch), "{}", run.summary());
    let r = results(&run);
    assert_eq!(
        r.bad_table.as_deref(),
        Some("entry 1 has kind 6, which this arch does not run")
    );
    assert!(r.entries.is_empty(), "{}", run.console);
}

/// The entry line comes second, after the start line, and names every register of the arch in
/// order (QEMU's own entry state: not asserted beyond the names).
#[test]
fn the_entry_line_names_every_entry_register() {
    for arch in Arch::ALL {
        let run = boot(arch, "entry", &Table::new().to_bytes());
        // The start line may follow firmware output on its line (SeaBIOS prints no newline).
        let lines: Vec<&str> = run.console.lines().collect();
        let start = lines
            .iter()
            .position(|l| l.contains("vtl0: start "))
            .unwrap_or_else(|| panic!("{arch:?}: no start line\n{}", run.console));
        assert!(
            lines
                .get(start + 1)
                .is_some_and(|l| l.starts_with("vtl0: entry ")),
            "{arch:?}: the entry line is not the second\n{}",
            run.console
        );
        let names: Vec<String> = results(&run)
            .entry_registers
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, proto(arch).entry_registers(), "{arch:?}");
    }
}
