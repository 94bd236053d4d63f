//! The real deliverable booted: the IGVM file, loaded as a VMM's IGVM loader does (page data,
//! the VP count and memory map in the parameter areas, the VTL2 VP context; see
//! `mockhv::igvm_load`), on both arches, with 2 VPs. The paravisor must find its parameters
//! (not PVH or a device tree), protect its pages, start the other VP and proxy VTL0's calls.

use e2e::{call, code, layout, post_message, UNMAPPED};
use hvdef::{HvStatus, HypercallCode};
use mockhv::model::{Scenario, Vtl0Access, Vtl0Call};
use mockhv::qemu::Arch;
use mockhv::session::{self, SessionConfig};
use std::collections::BTreeSet;
use std::time::Duration;

#[test]
fn the_igvm_file_boots_and_proxies() {
    for arch in Arch::ALL {
        let l = layout(arch);
        let bytes = std::fs::read(e2e::igvm(arch)).expect("the IGVM file");
        let ram = arch.ram_ranges(mockhv::qemu::DEFAULT_MEMORY_MB);
        let loaded = mockhv::igvm_load::load(&bytes, arch, 2, &ram).expect("the file loads");
        let mut config = SessionConfig::new(
            e2e::image(arch),
            Scenario {
                vp_count: 2,
                ..Scenario::for_arch(arch)
            },
        );
        config.igvm = Some(e2e::igvm(arch));
        config.timeout = Duration::from_secs(90);
        config.vtl0 = vec![
            // No relay table on an IGVM boot (no command line): an unknown connection.
            call(arch, code(HypercallCode::POST_MESSAGE), l.input, 0)
                .with_memory(l.input, &post_message(UNMAPPED)),
            Vtl0Call::access(
                arch,
                l.ip,
                Vtl0Access::Write {
                    gpa: loaded.extent.start + 0x40,
                    bytes: vec![0; 8],
                },
            )
            .on_vp(1),
        ];
        let mut report = session::run(config).expect("the mock session runs");
        let console = report.run.console.clone();
        assert!(
            report.succeeded(),
            "{arch:?}: {}\n{console}",
            report.summary()
        );
        // x86: RAM below and above the legacy VGA/BIOS window; arm64: one range from 1 GiB.
        let (ranges, kib) = match arch {
            Arch::X86_64 => (2, 256 * 1024 - 384),
            Arch::Aarch64 => (1, 256 * 1024),
        };
        let line = format!(
            "boot: from IGVM parameters: 2 VP(s), {ranges} RAM range(s) totalling {kib} KiB"
        );
        assert!(
            console.contains(&line),
            "{arch:?}: the parameters were read ({line:?})\n{console}"
        );
        let results = e2e::results(&mut report);
        assert_eq!(results.len(), 2, "{arch:?}: {results:#?}");
        assert!(results[0].reached_vtl2);
        assert_eq!(results[0].status(), HvStatus::INVALID_CONNECTION_ID);
        assert!(
            results[1].pending_event().is_some(),
            "{arch:?}: the store faulted"
        );
        // What the paravisor protected is what the file placed.
        let protected: BTreeSet<u64> =
            e2e::vtl2_calls(&report, HypercallCode::MODIFY_VTL_PROTECTION_MASK)
                .iter()
                .flat_map(e2e::protection_list)
                .collect();
        let placed: BTreeSet<u64> =
            (loaded.extent.start >> 12..loaded.extent.end.div_ceil(4096)).collect();
        assert_eq!(protected, placed, "{arch:?}");
        // The file has no VTL0 payload: the paravisor says so and sets none of VTL0's state.
        assert!(
            console.contains(NO_PAYLOAD),
            "{arch:?}: the no-payload line\n{console}"
        );
        assert_eq!(vtl0_context_calls(&report), [], "{arch:?}");
    }
}

const NO_PAYLOAD: &str = "VTL0 has no payload (the IGVM file's VTL0 boot page is empty): VTL0 \
                          runs with whatever state the host gave it";

/// The paravisor's SetVpRegisters calls that target VTL0 (header byte 12: use_target_vtl |
/// VTL0), other than the run loop's one-register completions.
fn vtl0_context_calls(report: &mockhv::session::Report) -> Vec<mockhv::model::HypercallRecord> {
    e2e::vtl2_calls(report, HypercallCode::SET_VP_REGISTERS)
        .into_iter()
        .filter(|r| r.input.get(12) == Some(&0x10) && r.input.len() > 16 + 32)
        .collect()
}

/// Where the test's VTL0 payload sits and its entry: the addresses the VTL0 kernel uses.
fn payload_at(arch: Arch) -> (u64, u64) {
    match arch {
        Arch::X86_64 => (0x0400_0000, 0x0400_0040),
        Arch::Aarch64 => (0x4800_0000, 0x4800_0040),
    }
}

/// Packs the release paravisor ELF with a tiny VTL0 payload (two pages of recognisable bytes,
/// entry 0x40 in) through `cargo xtask igvm --vtl0`, the builder the `image` command uses;
/// `tag` keeps the files of tests running at once apart.
fn igvm_with_payload(arch: Arch, tag: &str) -> std::path::PathBuf {
    let (at, entry) = payload_at(arch);
    let machine = match arch {
        Arch::X86_64 => 62,   // EM_X86_64
        Arch::Aarch64 => 183, // EM_AARCH64
    };
    let code: Vec<u8> = (0..0x1800u32).map(|i| (i % 251) as u8 | 1).collect();
    let dir = std::env::temp_dir().join(format!("igvm-boot-vtl0-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let payload = dir.join(format!("vtl0-{}.elf", arch.name()));
    std::fs::write(&payload, e2e::minimal_elf(false, machine, at, entry, &code)).unwrap();
    let out = dir.join(format!("paravisor-{}-vtl0.igvm", arch.name()));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .current_dir(root)
        .args([
            "run",
            "--quiet",
            "--package",
            "xtask",
            "--",
            "igvm",
            "--arch",
        ])
        .arg(arch.name())
        .arg("--elf")
        .arg(e2e::image(arch))
        .arg("--vtl0")
        .arg(&payload)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo xtask igvm --vtl0 failed");
    out
}

/// VTL0's registers as the host must receive them: the entry state the IGVM builder documents
/// (x86: 32-bit protected mode, paging off, flat segments; arm64: EL1h, MMU off, DAIF masked),
/// written here from that contract, in `HV_INITIAL_VP_CONTEXT` order.
fn expected_vtl0_registers(arch: Arch) -> Vec<(hvdef::HvRegisterName, u128)> {
    let (_, entry) = payload_at(arch);
    let entry = u128::from(entry);
    match arch {
        Arch::X86_64 => {
            use hvdef::x86_64::reg::*;
            // HV_X64_SEGMENT_REGISTER: base u64, limit u32, selector u16, attributes u16.
            let seg = |limit: u128, selector: u128, attributes: u128| {
                limit << 64 | selector << 96 | attributes << 112
            };
            let data = seg(0xFFFF_FFFF, 0x10, 0xC093);
            // HV_X64_TABLE_REGISTER: pad u16[3], limit u16, base u64.
            let table = 0xFFFFu128 << 48;
            vec![
                (RIP, entry),
                (RSP, 0),
                (RFLAGS, 2),
                (CS, seg(0xFFFF_FFFF, 0x08, 0xC09B)),
                (DS, data),
                (ES, data),
                (FS, data),
                (GS, data),
                (SS, data),
                (TR, seg(0xFFFF, 0, 0x8B)),
                (LDTR, seg(0xFFFF, 0, 0x82)),
                (IDTR, table),
                (GDTR, table),
                (EFER, 0),
                (CR0, 0x11),
                (CR3, 0),
                (CR4, 0),
                (PAT, 0x0007_0406_0007_0406),
            ]
        }
        Arch::Aarch64 => {
            use hvdef::aarch64::reg::*;
            vec![
                (XPC, entry),
                (XSP_ELX, 0),
                (SCTLR_EL1, 0x30D0_0800),
                (MAIR_EL1, 0),
                (TCR_EL1, 0),
                (VBAR_EL1, 0),
                (TTBR0_EL1, 0),
                (TTBR1_EL1, 0),
                (X18, 0),
                (CPSR, 0x3C5),
            ]
        }
    }
}

/// An IGVM file with a VTL0 payload: the paravisor sets VTL0's initial registers from the
/// file's VTL0 context with one SetVpRegisters (target VTL0, every register of the context)
/// before VTL0 first runs, the model's VTL0 register file holds them, and the boot line names
/// the entry point.
#[test]
fn the_igvm_files_vtl0_context_starts_vtl0() {
    for arch in Arch::ALL {
        let igvm = igvm_with_payload(arch, "good");
        let mut config = SessionConfig::new(
            e2e::image(arch),
            Scenario {
                vp_count: 1,
                ..Scenario::for_arch(arch)
            },
        );
        config.igvm = Some(igvm);
        config.timeout = Duration::from_secs(90);
        let mut report = session::run(config).expect("the mock session runs");
        let console = report.run.console.clone();
        assert!(
            report.succeeded(),
            "{arch:?}: {}\n{console}",
            report.summary()
        );
        let (_, entry) = payload_at(arch);
        let line = format!("VTL0 starts at {entry:#x} from the IGVM's VTL0 context");
        assert!(console.contains(&line), "{arch:?}: {line:?}\n{console}");
        assert!(!console.contains(NO_PAYLOAD), "{arch:?}\n{console}");

        // The exact bytes the host received: header (partition self, VP self, target VTL0,
        // RsvdZ), then one 32-byte HvRegisterAssoc per register (name, RsvdZ, 128-bit value).
        let registers = expected_vtl0_registers(arch);
        let mut input = Vec::new();
        input.extend(u64::MAX.to_le_bytes());
        input.extend(0xFFFF_FFFEu32.to_le_bytes());
        input.extend([0x10, 0, 0, 0]);
        for (name, value) in &registers {
            input.extend(name.0.to_le_bytes());
            input.extend([0; 12]);
            input.extend(value.to_le_bytes());
        }
        let calls = vtl0_context_calls(&report);
        assert_eq!(calls.len(), 1, "{arch:?}: one batched call: {calls:#?}");
        let call = &calls[0];
        assert_eq!(call.vp, 0);
        assert_eq!(
            call.control,
            0x51 | (registers.len() as u64) << 32,
            "{arch:?}: memory-based rep call of every register"
        );
        assert_eq!(call.input, input, "{arch:?}: SetVpRegisters input bytes");
        assert_eq!(call.status(), Some(HvStatus::SUCCESS));
        // Before VTL0 first runs: no VtlReturn precedes it.
        let order: Vec<_> = report
            .trace()
            .hypercalls()
            .filter(|r| r.vtl == hvdef::Vtl::VTL2)
            .map(|r| (r.code, r.input.clone()))
            .collect();
        let set_at = order
            .iter()
            .position(|(_, i)| *i == input)
            .expect("the call is in the trace");
        assert!(
            !order[..set_at]
                .iter()
                .any(|(c, _)| *c == HypercallCode::VTL_RETURN),
            "{arch:?}: VTL0's context was set after VTL0 ran"
        );
        for (name, value) in registers {
            assert_eq!(
                report.model.register(0, hvdef::Vtl::VTL0, name),
                Ok(value),
                "{arch:?}: VTL0's {name:?}"
            );
        }
    }
}

/// `igvm_with_payload`'s file with its VTL0 boot page's bytes `at..` replaced by `bytes`: a
/// loader input the paravisor must refuse.
fn igvm_with_spoiled_boot_page(arch: Arch, at: usize, bytes: &[u8]) -> (std::path::PathBuf, u64) {
    let path = igvm_with_payload(arch, &format!("spoiled-{at}"));
    let spoiled_path = path.with_extension("spoiled.igvm");
    let gpa = e2e::spoil_vtl0_boot_page(arch, &path, at, bytes, &spoiled_path);
    (spoiled_path, gpa)
}

/// A VTL0 boot page that breaks the layout is untrusted input refused: one ERROR line naming
/// the field and the page's GPA, a failure exit, and none of VTL0's state set (VTL0 never
/// runs).
#[test]
fn a_malformed_vtl0_boot_page_fails_the_boot() {
    for arch in Arch::ALL {
        for (at, bytes, what) in [
            (8, &[2u8][..], "version 2 is not 1"),
            // RIP / PC (the context's first field) far above the machine's RAM.
            (
                24,
                &0x7000_0000_0000u64.to_le_bytes()[..],
                "0x700000000000 is outside the RAM the loader reported",
            ),
        ] {
            let (igvm, gpa) = igvm_with_spoiled_boot_page(arch, at, bytes);
            let mut config = SessionConfig::new(
                e2e::image(arch),
                Scenario {
                    vp_count: 1,
                    ..Scenario::for_arch(arch)
                },
            );
            config.igvm = Some(igvm);
            config.timeout = Duration::from_secs(90);
            let report = session::run(config).expect("the mock session runs");
            let console = &report.run.console;
            assert_eq!(
                report.run.outcome,
                mockhv::qemu::Outcome::Fail,
                "{arch:?} {what}: {}\n{console}",
                report.summary()
            );
            let line = format!("ERROR the VTL0 boot page at {gpa:#x} is malformed: ");
            let found = console
                .lines()
                .find(|l| l.contains(&line))
                .unwrap_or_else(|| panic!("{arch:?}: {line:?}\n{console}"));
            assert!(found.contains(what), "{arch:?}: {found}");
            assert!(found.ends_with("; not starting VTL0"), "{arch:?}: {found}");
            assert_eq!(vtl0_context_calls(&report), [], "{arch:?}");
            assert!(
                e2e::vtl2_calls(&report, HypercallCode::VTL_RETURN).is_empty(),
                "{arch:?}: VTL0 ran"
            );
        }
    }
}
