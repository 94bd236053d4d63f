//! Boot suite, plain QEMU (no mock hypervisor): the release image of each arch boots, prints its
//! banner and, finding no Hyper-V, says what it found instead and fails; deliberate failures
//! (panic, CPU exception, bad option) are reported as failures. Successful boots are in the
//! mock-hypervisor suites.
#![forbid(unsafe_code)]

use e2e::image;
use mockhv::qemu::{Arch, Outcome, Qemu, QemuConfig, RunResult};
use std::time::Duration;

fn boot(arch: Arch, append: &str, extra_args: &[&str]) -> RunResult {
    let mut qemu = Qemu::spawn(&QemuConfig {
        append: Some(append.to_string()),
        timeout: Duration::from_secs(30),
        extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        ..QemuConfig::new(arch, Some(image(arch)))
    })
    .expect("QEMU starts");
    qemu.wait().expect("QEMU run completes")
}

fn assert_outcome(run: &RunResult, want: Outcome, needles: &[&str]) {
    assert_eq!(
        run.outcome,
        want,
        "{}\nconsole:\n{}",
        run.summary(),
        run.console
    );
    for needle in needles {
        assert!(
            run.console.contains(needle),
            "console lacks {needle:?}:\n{}",
            run.console
        );
    }
}

#[test]
fn x86_64_boots_through_pvh_and_finds_no_hyperv_in_plain_qemu() {
    let run = boot(Arch::X86_64, "", &[]);
    assert_outcome(
        &run,
        Outcome::Fail,
        &[
            "paravisor 0.1.0 (x86_64, long mode, CPL0 (entered through PVH))",
            "no Hyper-V interface found: CPUID 0x40000000 vendor \"TCGTCGTCGTCG\", max leaf 0x40000001",
            "exiting: failure",
        ],
    );
}

#[test]
fn aarch64_boots_at_el1_and_finds_no_hyperv_in_plain_qemu() {
    let run = boot(Arch::Aarch64, "", &[]);
    assert_outcome(
        &run,
        Outcome::Fail,
        &[
            "paravisor 0.1.0 (aarch64, EL1 (entered at EL1))",
            // QEMU's PSCI answers the unknown SMCCC call with -1 in x0.
            "no Hyper-V interface found: SMCCC vendor UID 0xffffffff 0x0 0x0 0x0",
            "exiting: failure",
        ],
    );
}

#[test]
fn aarch64_entered_at_el2_drops_to_el1() {
    let run = boot(Arch::Aarch64, "", &["-machine", "virt,virtualization=on"]);
    assert_outcome(
        &run,
        Outcome::Fail,
        &[
            "(aarch64, EL1 (entered at EL2, dropped to EL1))",
            "no Hyper-V interface found",
        ],
    );
}

#[test]
fn panic_is_reported_as_failure() {
    for arch in Arch::ALL {
        let run = boot(arch, "pv.test=panic", &[]);
        assert_outcome(
            &run,
            Outcome::Fail,
            &["PANIC on cpu 0: pv.test=panic asked for a panic at paravisor/src/"],
        );
    }
}

#[test]
fn cpu_exception_is_reported_as_failure() {
    let run = boot(Arch::X86_64, "pv.test=fault", &[]);
    assert_outcome(
        &run,
        Outcome::Fail,
        &[
            "FATAL: cpu 0 exception 14 (#PF page fault)",
            "cr2 0x0000001000000000",
        ],
    );
    let run = boot(Arch::Aarch64, "pv.test=fault", &[]);
    assert_outcome(
        &run,
        Outcome::Fail,
        &[
            "FATAL: cpu 0 synchronous exception from EL1 SP_EL1",
            "FAR 0x0000001000000000",
        ],
    );
}

#[test]
fn bad_option_is_refused_with_a_clear_line() {
    for arch in Arch::ALL {
        let run = boot(arch, "pv.test=explode", &[]);
        assert_outcome(
            &run,
            Outcome::Fail,
            &["bad option pv.test=\"explode\": expected panic or fault"],
        );
    }
}

/// A misspelt `pv.*` key is refused, not ignored: one line naming it and the valid keys.
#[test]
fn unknown_option_is_refused_with_the_valid_ones() {
    for arch in Arch::ALL {
        let run = boot(arch, "pv.logs=debug", &[]);
        assert_outcome(
            &run,
            Outcome::Fail,
            &[
                "ERROR unknown option pv.logs: expected one of the options pv.log, pv.relay, \
               pv.devices, pv.test, pv.bench, pv.regpage",
            ],
        );
    }
}

/// BSS (4 MiB of stacks) must stay out of the image file: a file-backed section placed after it
/// in its segment (as `.got` once was) would make every loader copy megabytes of zeroes. No
/// loadable segment's file bytes may cover BSS (x86's boot page tables follow BSS in a segment
/// of their own: the IGVM page-table relocation region).
#[test]
fn images_keep_bss_out_of_the_file() {
    use object::read::elf::{ElfFile64, ProgramHeader};
    use object::{elf, Endianness, Object, ObjectSection};
    for arch in Arch::ALL {
        let path = image(arch);
        let bytes = std::fs::read(&path).unwrap();
        let file = ElfFile64::<Endianness>::parse(&*bytes).unwrap();
        let bss = file.section_by_name(".bss").expect(".bss exists");
        let bss = bss.address()..bss.address() + bss.size();
        let e = file.endian();
        for ph in file.elf_program_headers() {
            if ph.p_type(e) != elf::PT_LOAD {
                continue;
            }
            let file_bytes = ph.p_vaddr(e)..ph.p_vaddr(e) + ph.p_filesz(e);
            assert!(
                file_bytes.end <= bss.start || file_bytes.start >= bss.end,
                "{}: a segment's file bytes {file_bytes:#x?} cover .bss {bss:#x?}",
                arch.name()
            );
        }
        assert!(
            bytes.len() < (1 << 20),
            "{} is {} bytes",
            path.display(),
            bytes.len()
        );
    }
}
