//! The in-VM mock Hyper-V on x86_64 (`tests/invm`, AMD SVM with nested paging): QEMU boots the
//! host with `-kernel` (PVH) and the real paravisor image with the generic loader; the host
//! enters the paravisor as a PVH start inside an SVM guest and answers its CPUID, hypervisor
//! MSRs and VMMCALLs with the TLFS model. With no VTL0 the paravisor's first VtlReturn (after
//! it reached its proxy loop) ends the run, and the host exits QEMU with pass. The host writes
//! its model's trace to the debugcon port (the runner's file).
//!
//! Needs `cargo xtask image --arch x86_64 --release` (which also builds
//! `target/images/invm-x86_64.elf`) and `PARAVISOR_IMAGE_DIR=target/images`, as the other
//! suites; `cargo xtask test` does both.
#![forbid(unsafe_code)]

use e2e::{assert_lines_in_order, image};
use mockhv::invm::{InvmBoot, Paravisor};
use mockhv::qemu::{Arch, Outcome, Qemu, QemuConfig, RunResult};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn invm_image() -> PathBuf {
    e2e::invm_image(Arch::X86_64)
}

/// Boots the host (q35, `-cpu max`, 256 MiB, one vCPU: the runner's x86 defaults) with `guest`
/// placed by the generic loader (`loader,file=...` plus any options), and `cpu` replacing
/// `-cpu max` when given.
fn boot_with(guest: &str, cpu: Option<&str>, append: Option<&str>) -> RunResult {
    let mut extra_args: Vec<String> = Vec::new();
    if let Some(cpu) = cpu {
        // QEMU takes the last -cpu.
        extra_args.extend(["-cpu".into(), cpu.into()]);
    }
    // The generic loader places the image and leaves the CPU alone: the host enters it.
    extra_args.extend(["-device".into(), format!("loader,file={guest}")]);
    let mut qemu = Qemu::spawn(&QemuConfig {
        append: append.map(str::to_string),
        timeout: Duration::from_secs(30),
        extra_args,
        ..QemuConfig::new(Arch::X86_64, Some(invm_image()))
    })
    .expect("QEMU starts");
    qemu.wait().expect("QEMU run completes")
}

fn paravisor() -> String {
    image(Arch::X86_64)
        .to_str()
        .expect("UTF-8 image path")
        .to_string()
}

fn boot(cpu: Option<&str>, append: Option<&str>) -> RunResult {
    boot_with(&paravisor(), cpu, append)
}

#[test]
fn paravisor_reaches_its_proxy_loop_under_the_in_vm_host() {
    let run = boot(None, None);
    assert_eq!(
        run.outcome,
        Outcome::Pass,
        "{}\nconsole:\n{}",
        run.summary(),
        run.console
    );
    assert_lines_in_order(
        &run.console,
        &[
            "invm: in-VM mock Hyper-V (x86_64, AMD SVM), PVH start info",
            // The host keeps 0xf000000..0x10000000 and the page of its AP trampoline; the
            // paravisor must not see them as RAM: what is left is 0..0x9e000 and
            // 0x9f000..0x9fc00 below 1 MiB plus 1 MiB..240 MiB.
            "cut to 0xef9ec00 (0xf000000..0x10000000 and the AP trampoline's 0x9e000..0x9f000 \
             are the host's)",
            "invm: entering the paravisor in 32-bit protected mode at 0x200000, EBX 0x7000, \
             nested paging over 0x0..0x9e000, 0x9f000..0xf000000",
            "paravisor 0.1.0 (x86_64, long mode, CPL0 (entered through PVH))",
            "command line \"\", 1 VP(s)",
            "Hyper-V found",
            "running at VTL2",
            "all 1 VP(s) run at VTL2",
            "intercept installed: UnknownSynicConnection",
            "intercept installed: RetargetInterruptWithUnknownDeviceId",
            "protected from VTL0",
            "proxying VTL0 hypercalls",
            "invm: the paravisor returned to VTL0 with an empty VTL0 script",
        ],
    );
    // The host's start info points at ACPI tables whose MADT lists the one VP.
    assert!(!run.console.contains("assuming 1 VP"), "{}", run.console);
    // VTL0's memory starts where VTL2's protected image ends and stops at the host's.
    let vtl2_end = run
        .console
        .lines()
        .find_map(|l| l.split("VTL2 memory 0x200000..").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no VTL2 memory line:\n{}", run.console));
    assert!(
        run.console
            .contains(&format!("VTL0 memory {vtl2_end}..0xf000000")),
        "{}",
        run.console
    );
    assert!(
        !run.console
            .lines()
            .any(|l| l.contains("VTL0 memory") && l.contains("..0x10000000")),
        "the paravisor counts the host's memory as VTL0's:\n{}",
        run.console
    );
    assert!(
        !run.console.contains("FAIL"),
        "a failure line in a passing run:\n{}",
        run.console
    );
    eprintln!("in-VM boot: {:.2?}", run.elapsed);
}

/// `-append` reaches the host's start info; the host hands it on in the paravisor's.
#[test]
fn the_paravisor_reads_its_command_line_from_the_host_and_its_failure_is_a_failure() {
    let run = boot(None, Some("pv.test=panic"));
    assert_eq!(run.outcome, Outcome::Fail, "{}", run.summary());
    assert_lines_in_order(
        &run.console,
        &[
            "command line \"pv.test=panic\", 1 VP(s)",
            "PANIC on cpu 0: pv.test=panic",
        ],
    );
    assert!(!run.console.contains("proxying VTL0 hypercalls"));
}

#[test]
fn the_host_refuses_to_run_without_svm() {
    let run = boot(Some("max,-svm"), None);
    assert_eq!(run.outcome, Outcome::Fail, "{}", run.summary());
    assert_lines_in_order(
        &run.console,
        &["invm: FAIL: no SVM (CPUID 0x80000001 ECX bit 2): run QEMU with -cpu max"],
    );
    assert!(
        !run.console.contains("paravisor 0.1.0"),
        "the paravisor must not run without the host:\n{}",
        run.console
    );
}

/// A raw guest at 1 MiB: 32-bit `code` at 0x100000 and, at 0x100040, the PVH entry note the
/// host looks for, naming 0x100000. Written next to the test's other temporary files.
fn raw_guest(name: &str, code: &[u8]) -> PathBuf {
    let mut blob = code.to_vec();
    assert!(blob.len() <= 0x40);
    blob.resize(0x40, 0xcc);
    blob.extend([4, 0, 0, 0, 8, 0, 0, 0, 18, 0, 0, 0, b'X', b'e', b'n', 0]);
    blob.extend(0x10_0000u64.to_le_bytes());
    let path = std::env::temp_dir().join(format!("invm-x86-{}-{name}.bin", std::process::id()));
    std::fs::write(&path, blob).expect("temporary file");
    path
}

fn boot_raw(path: &Path) -> RunResult {
    let guest = format!(
        "{},addr=0x100000,force-raw=on",
        path.to_str().expect("UTF-8 path")
    );
    let run = boot_with(&guest, None, None);
    let _ = std::fs::remove_file(path);
    run
}

/// The host's memory is outside the guest's nested tables: a guest load from 0xf000000 (the
/// host's first page) is a nested page fault, which this slice does not serve: one FAIL line
/// naming the exit, the RIP and the GPA, and a failing exit.
#[test]
fn a_guest_load_from_the_hosts_memory_is_a_nested_page_fault_and_fails_the_run() {
    // mov eax, [0x0f000000]; hlt
    let run = boot_raw(&raw_guest("npf", &[0xa1, 0x00, 0x00, 0x00, 0x0f, 0xf4]));
    assert_eq!(run.outcome, Outcome::Fail, "{}", run.summary());
    assert_lines_in_order(
        &run.console,
        &[
            "invm: entering the paravisor in 32-bit protected mode at 0x100000",
            "invm: FAIL: VP 0 VTL2: unexpected exit 0x400 (nested page fault: EXITINFO2 is the \
             GPA) at RIP 0x100000: EXITINFO1 0x",
            "EXITINFO2 0xf000000,",
        ],
    );
}

/// SVM's own MSRs are the host's: a guest write of VM_HSAVE_PA (which would move the host's
/// save area) exits and fails the run instead of reaching the CPU.
#[test]
fn a_guest_write_of_svms_msrs_fails_the_run() {
    // mov ecx, 0xc0010117; wrmsr; hlt
    let code = [0xb9, 0x17, 0x01, 0x01, 0xc0, 0x0f, 0x30, 0xf4];
    let run = boot_raw(&raw_guest("hsave", &code));
    assert_eq!(run.outcome, Outcome::Fail, "{}", run.summary());
    assert_lines_in_order(
        &run.console,
        &["invm: FAIL: VP 0 VTL2: the guest wrote SVM's MSR 0xc0010117 at 0x100005"],
    );
}

/// The trace port is the host's: a guest `out` to 0xe9 exits (the I/O permission map) and
/// fails the run, so nothing but the host's events reaches the trace file.
#[test]
fn a_guest_write_to_the_trace_port_fails_the_run() {
    // mov al, 0x41; out 0xe9, al; hlt
    let run = boot_raw(&raw_guest("e9", &[0xb0, 0x41, 0xe6, 0xe9, 0xf4]));
    assert_eq!(run.outcome, Outcome::Fail, "{}", run.summary());
    assert_lines_in_order(
        &run.console,
        &[
            "invm: FAIL: VP 0 VTL2: the guest accessed I/O port 0xe9 (the host's trace port) at \
           RIP 0x100002",
        ],
    );
}

/// A guest `hlt` exits (Hyper-V intercepts HLT) and nothing here will wake it: the VP parks
/// as halted, naming its RIP, and the run fails once every VP is parked.
#[test]
fn a_guest_hlt_fails_the_run_naming_its_rip() {
    // nop; hlt
    let run = boot_raw(&raw_guest("hlt", &[0x90, 0xf4]));
    assert_eq!(run.outcome, Outcome::Fail, "{}", run.summary());
    assert_lines_in_order(
        &run.console,
        &[
            "invm: VP 0 halted in VTL2 at 0x100001 (hlt, interrupts masked)",
            "invm: FAIL: every VP is parked and VPs 0x1 (bit per VP) halted in VTL2",
        ],
    );
}

/// A raw guest with a flat GDT, a stack and an IDT whose #UD and #GP gates point at `hlt`s
/// (0x100060 and 0x100070), running `body` after setting them up.
fn raw_guest_with_idt(name: &str, body: &[u8]) -> PathBuf {
    let mut code = vec![
        0x0f, 0x01, 0x15, 0x80, 0x00, 0x10, 0x00, // lgdt [0x100080]
        0x0f, 0x01, 0x1d, 0x88, 0x00, 0x10, 0x00, // lidt [0x100088]
        0xbc, 0x00, 0x10, 0x10, 0x00, // mov esp, 0x101000
    ];
    code.extend(body);
    let path = raw_guest(name, &code);
    let mut blob = std::fs::read(&path).expect("just written");
    blob.resize(0x200, 0xcc);
    blob[0x60] = 0xf4; // the #UD handler: hlt
    blob[0x70] = 0xf4; // the #GP handler: hlt
                       // GDTR and IDTR (limit, 32-bit base).
    blob[0x80..0x86].copy_from_slice(&[0x17, 0, 0xa0, 0, 0x10, 0]);
    blob[0x88..0x8e].copy_from_slice(&[14 * 8 - 1, 0, 0xc0, 0, 0x10, 0]);
    // Null, 0x08 flat 32-bit code, 0x10 flat data.
    blob[0xa8..0xb0].copy_from_slice(&0x00cf_9b00_0000_ffffu64.to_le_bytes());
    blob[0xb0..0xb8].copy_from_slice(&0x00cf_9300_0000_ffffu64.to_le_bytes());
    // 32-bit interrupt gates, selector 0x08.
    for (vector, handler) in [(6usize, 0x10_0060u32), (13, 0x10_0070)] {
        let at = 0xc0 + vector * 8;
        blob[at..at + 2].copy_from_slice(&(handler as u16).to_le_bytes());
        blob[at + 2..at + 4].copy_from_slice(&8u16.to_le_bytes());
        blob[at + 4..at + 6].copy_from_slice(&[0, 0x8e]);
        blob[at + 6..at + 8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
    }
    std::fs::write(&path, blob).expect("temporary file");
    path
}

/// RDMSR of an MSR in the hypervisor's range that the model does not implement: the model's
/// #GP, injected by the host (EVENTINJ) and taken by the guest's own IDT, whose handler halts.
#[test]
fn a_fault_the_model_raises_is_injected_into_the_guest() {
    // mov ecx, 0x40000fff; rdmsr; hlt
    let body = [0xb9, 0xff, 0x0f, 0x00, 0x40, 0x0f, 0x32, 0xf4];
    let run = boot_raw(&raw_guest_with_idt("gp", &body));
    assert_eq!(run.outcome, Outcome::Fail, "{}", run.summary());
    assert_lines_in_order(
        &run.console,
        &[
            "invm: VP 0 halted in VTL2 at 0x100070 (hlt, interrupts masked)",
            "invm: FAIL: every VP is parked and VPs 0x1 (bit per VP) halted in VTL2",
        ],
    );
}

/// A VTL call with a non-zero VTL control (RAX) is invalid: the model's #UD, injected.
#[test]
fn an_invalid_vtl_call_gets_the_models_ud() {
    // mov ecx, 0x11; mov eax, 1; vmmcall; hlt
    let body = [
        0xb9, 0x11, 0, 0, 0, 0xb8, 0x01, 0, 0, 0, 0x0f, 0x01, 0xd9, 0xf4,
    ];
    let run = boot_raw(&raw_guest_with_idt("ud", &body));
    assert_eq!(run.outcome, Outcome::Fail, "{}", run.summary());
    assert_lines_in_order(
        &run.console,
        &[
            "invm: VP 0 halted in VTL2 at 0x100060 (hlt, interrupts masked)",
            "invm: FAIL: every VP is parked and VPs 0x1 (bit per VP) halted in VTL2",
        ],
    );
}

/// A VP without a CPU (fewer QEMU CPUs than the VP count the IGVM parameters give): its start
/// fails the run naming it, instead of hanging.
#[test]
fn a_vp_without_a_cpu_fails_the_run_by_name() {
    let igvm = image(Arch::X86_64).with_extension("igvm");
    let mut boot = InvmBoot::new(Arch::X86_64, invm_image(), Paravisor::Igvm(igvm));
    boot.vps = 4;
    // QEMU takes the last -smp.
    boot.extra_args = vec!["-smp".into(), "2".into()];
    let run = boot.run().expect("QEMU runs").run;
    assert_eq!(
        run.outcome,
        Outcome::Fail,
        "{}\n{}",
        run.summary(),
        run.console
    );
    // Not "starting VP 2": VP 1's paravisor writes COM1 at the same moment (the host's line and
    // its can interleave); the failure comes a second later, when VP 1 is quiet.
    assert_lines_in_order(
        &run.console,
        &[
            "invm: starting VP 1 at RIP 0x",
            "invm: FAIL: VP 2's CPU did not start (INIT-SIPI-SIPI to APIC ID 2: is QEMU's -smp at \
             least the VP count?)",
        ],
    );
}

/// The ELF boot on 4 VPs: the host's PVH start info points at ACPI tables whose MADT lists one
/// enabled local APIC per VP (as a VMM gives a PVH guest its processors), so the paravisor
/// counts 4 VPs and starts every one at VTL2.
#[test]
fn an_elf_boot_finds_every_vp_in_the_hosts_acpi_tables() {
    let mut boot = InvmBoot::new(
        Arch::X86_64,
        invm_image(),
        Paravisor::Elf(image(Arch::X86_64)),
    );
    boot.vps = 4;
    let run = boot.run().expect("QEMU runs").run;
    assert_eq!(
        run.outcome,
        Outcome::Pass,
        "{}\n{}",
        run.summary(),
        run.console
    );
    assert!(!run.console.contains("assuming 1 VP"), "{}", run.console);
    assert_lines_in_order(
        &run.console,
        &["command line \"\", 4 VP(s)", "all 4 VP(s) run at VTL2"],
    );
}
