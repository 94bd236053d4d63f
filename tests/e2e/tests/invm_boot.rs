//! The paravisor's bring-up under the in-VM mock Hyper-V, with the partitions the gdbstub
//! suites `mock_boot` and `mock_smp` boot it into: VSM missing, the wrong VTL, failing register
//! reads, VsmPartitionConfig as OpenHCL writes it, every VP on its own pages, a rep call that
//! times out. No VTL0: each run ends when every VP first returns to VTL0.
#![forbid(unsafe_code)]

use e2e::kernel::{boot_paravisor, calls};
use hvdef::{HvError, HvRegisterName, HvStatus, HypercallCode, HypercallOutput, Vtl};
use mockhv::invm::InvmRun;
use mockhv::model::{
    FaultAction, HypercallRecord, InjectedFault, Outcome as ModelOutcome, Scenario,
};
use mockhv::qemu::{Arch, Outcome};
use std::collections::BTreeMap;

/// The arches whose in-VM host takes a scenario and writes its trace.
fn arches() -> Vec<Arch> {
    e2e::kernel::arches()
}

fn assert_run(run: &InvmRun, want: Outcome, needles: &[&str]) {
    assert_eq!(
        run.run.outcome,
        want,
        "{}\nconsole:\n{}",
        run.summary(),
        run.run.console
    );
    for needle in needles {
        assert!(
            run.run.console.contains(needle),
            "console lacks {needle:?}:\n{}",
            run.run.console
        );
    }
}

/// The register names of a Get/SetVpRegisters input (after the 16-byte header).
fn names(record: &HypercallRecord) -> Vec<u32> {
    let stride = if record.code == HypercallCode::SET_VP_REGISTERS {
        32
    } else {
        4
    };
    record.input[16..]
        .chunks_exact(stride)
        .map(|c| u32::from_le_bytes(c[..4].try_into().unwrap()))
        .collect()
}

#[test]
fn vsm_absent_wrong_vtl_and_failing_register_reads_fail_clearly() {
    for arch in arches() {
        let no_vsm = Scenario {
            vsm: false,
            ..Scenario::for_arch(arch)
        };
        assert_run(
            &boot_paravisor(no_vsm, None),
            Outcome::Fail,
            &["VSM is not available"],
        );
        let vtl1 = Scenario {
            active_vtl: Vtl::VTL1,
            ..Scenario::for_arch(arch)
        };
        assert_run(
            &boot_paravisor(vtl1, None),
            Outcome::Fail,
            &["running at VTL1", "not VTL2"],
        );
        let mut failing = Scenario::for_arch(arch);
        // arm64 reads HvRegisterFeaturesInfo and its privileges with GetVpRegisters first;
        // fail the VSM status read.
        let nth = if arch == Arch::Aarch64 { 3 } else { 1 };
        failing.faults.push(InjectedFault {
            code: HypercallCode::GET_VP_REGISTERS,
            nth,
            action: FaultAction::Status(HvError::ACCESS_DENIED),
            filter: Default::default(),
        });
        let run = boot_paravisor(failing, None);
        assert_run(
            &run,
            Outcome::Fail,
            &["reading HvRegisterVsmVpStatus and HvRegisterVpIndex failed: HV_STATUS_ACCESS_DENIED"],
        );
        let denied = calls(&run.events, HypercallCode::GET_VP_REGISTERS)
            .into_iter()
            .filter(|r| r.status() == Some(HvStatus::ACCESS_DENIED))
            .count();
        assert_eq!(denied, 1, "{arch:?}: the trace shows the refused read");
    }
}

/// VsmPartitionConfig after what OpenHCL writes for a hypervisor-backed VM (fact sheet §5.2):
/// EnableVtlProtection with the default mask RWX (0xF), ZeroMemoryOnReset and the intercept
/// page (0x103F); once, on the boot VP.
#[test]
fn vsm_partition_config_is_written_as_openhcl_writes_it() {
    for arch in arches() {
        let run = boot_paravisor(Scenario::for_arch(arch), None);
        assert_run(&run, Outcome::Pass, &[]);
        let name = HvRegisterName::VSM_PARTITION_CONFIG;
        let writes: Vec<&HypercallRecord> = calls(&run.events, HypercallCode::SET_VP_REGISTERS)
            .into_iter()
            .filter(|r| names(r).first() == Some(&name.0))
            .collect();
        assert_eq!(writes.len(), 1, "{arch:?}: written once");
        assert_eq!(writes[0].vp, 0);
        assert_eq!(writes[0].status(), Some(HvStatus::SUCCESS));
        let value = u64::from_le_bytes(writes[0].input[32..40].try_into().unwrap());
        assert_eq!(value, 0x103F, "{arch:?}");
    }
}

#[test]
fn every_vp_reads_its_vsm_status_through_its_own_pages() {
    for arch in arches() {
        for vps in [1, 4] {
            let run = boot_paravisor(
                Scenario {
                    vp_count: vps,
                    ..Scenario::for_arch(arch)
                },
                None,
            );
            assert_run(
                &run,
                Outcome::Pass,
                &[&format!("all {vps} VP(s) run at VTL2")],
            );
            let mut pages: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
            for r in calls(&run.events, HypercallCode::GET_VP_REGISTERS)
                .into_iter()
                .filter(|r| names(r).first() == Some(&HvRegisterName::VSM_VP_STATUS.0))
            {
                assert_eq!(r.status(), Some(HvStatus::SUCCESS));
                assert_eq!(r.input_gpa % 4096, 0, "{arch:?} vp{} input page", r.vp);
                assert_eq!(r.output_gpa % 4096, 0, "{arch:?} vp{} output page", r.vp);
                assert_ne!(r.input_gpa, r.output_gpa);
                assert!(pages.insert(r.vp, (r.input_gpa, r.output_gpa)).is_none());
            }
            assert_eq!(
                pages.len() as u32,
                vps,
                "{arch:?}: one VsmVpStatus read per VP"
            );
            // Every page belongs to exactly one VP, in every hypercall of the boot.
            let mut owner: BTreeMap<u64, u32> = BTreeMap::new();
            for e in &run.events {
                let mockhv::model::Event::Hypercall(r) = e else {
                    continue;
                };
                let switch = [HypercallCode::VTL_CALL, HypercallCode::VTL_RETURN].contains(&r.code);
                if r.control & (1 << 16) != 0 || switch {
                    continue;
                }
                for gpa in [r.input_gpa & !0xfff, r.output_gpa & !0xfff] {
                    let vp = *owner.entry(gpa).or_insert(r.vp);
                    assert_eq!(
                        vp, r.vp,
                        "{arch:?}: page {gpa:#x} used by vp{vp} and vp{}",
                        r.vp
                    );
                }
            }
            assert_eq!(owner.len() as u32, 2 * vps, "{arch:?}: two pages per VP");
        }
    }
}

#[test]
fn a_rep_call_that_times_out_is_resumed_from_reps_completed() {
    for arch in arches() {
        let mut scenario = Scenario::for_arch(arch);
        // The boot VP's one two-register read (VSM capabilities + partition status) is its
        // second GetVpRegisters after its VSM status and VP index (one call): x86 reads the
        // nested indicator and privileges by CPUID, arm64 by GetVpRegisters first
        // (HvRegisterFeaturesInfo, then its privileges).
        let nth = if arch == Arch::X86_64 { 2 } else { 4 };
        scenario.faults.push(InjectedFault {
            code: HypercallCode::GET_VP_REGISTERS,
            nth,
            action: FaultAction::Timeout { reps: 1 },
            filter: Default::default(),
        });
        let run = boot_paravisor(scenario, None);
        assert_run(&run, Outcome::Pass, &["maximum VTL 2"]);
        let pair: Vec<&HypercallRecord> = calls(&run.events, HypercallCode::GET_VP_REGISTERS)
            .into_iter()
            .filter(|r| names(r).first() == Some(&HvRegisterName::VSM_CAPABILITIES.0))
            .collect();
        assert_eq!(pair.len(), 2, "{arch:?}: issued, then re-issued once");
        let control = |r: &HypercallRecord| hvdef::Control::from_bits(r.control);
        let first: HypercallOutput = match pair[0].outcome {
            ModelOutcome::Status(out) => out,
            ref other => panic!("{other:?}"),
        };
        assert_eq!(
            (control(pair[0]).rep_count(), control(pair[0]).rep_start()),
            (2, 0)
        );
        assert_eq!(first.status(), HvStatus::TIMEOUT);
        assert_eq!(first.reps_completed(), 1);
        assert_eq!(
            (control(pair[1]).rep_count(), control(pair[1]).rep_start()),
            (2, 1)
        );
        assert_eq!(pair[1].status(), Some(HvStatus::SUCCESS));
    }
}

/// The nested indicator is read once at boot (x86 CPUID 0x40000004 EAX bit 12; arm64
/// HvRegisterFeaturesInfo bit 4, TLFS feature-discovery.md), right after the guest OS id, and
/// the boot line says what it found and how many call codes get the nested bit.
/// (`mock_nested`'s `the_table_follows_the_arch_s_nested_indicator_read_once_at_boot`, boot
/// part; kernel_proxy checks the bit on relayed calls.)
#[test]
fn the_nested_indicator_is_read_once_at_boot() {
    use hvdef::x86_64::cpuid;
    use mockhv::model::Event;
    for arch in arches() {
        for nested in [false, true] {
            let case = format!("{arch:?}, nested host {nested}");
            let scenario = Scenario {
                nested,
                vp_count: 1,
                ..Scenario::for_arch(arch)
            };
            let run = boot_paravisor(scenario, None);
            assert_run(&run, Outcome::Pass, &[]);
            let vtl2: Vec<&HypercallRecord> = run
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::Hypercall(h) if h.vtl == Vtl::VTL2 => Some(h),
                    _ => None,
                })
                .collect();
            let reads: Vec<&&HypercallRecord> = vtl2
                .iter()
                .filter(|r| {
                    r.code == HypercallCode::GET_VP_REGISTERS
                        && names(r).first() == Some(&HvRegisterName::FEATURES_INFO.0)
                })
                .collect();
            let leaf4 = run
                .events
                .iter()
                .filter(|e| {
                    matches!(e, Event::Cpuid { leaf, .. } if *leaf == cpuid::HV_CPUID_ENLIGHTENMENT_INFO)
                })
                .count();
            match arch {
                Arch::X86_64 => {
                    assert_eq!(leaf4, 1, "{case}: CPUID 0x40000004 read once");
                    assert!(reads.is_empty(), "{case}: x86 reads no register for it");
                }
                Arch::Aarch64 => {
                    assert_eq!(leaf4, 0, "{case}: no CPUID on arm64");
                    assert_eq!(reads.len(), 1, "{case}: HvRegisterFeaturesInfo read once");
                    let read = reads[0];
                    assert_eq!(read.control, 0x0000_0001_0000_0050, "{case}: one-rep read");
                    assert_eq!(read.status(), Some(HvStatus::SUCCESS), "{case}");
                    // Bit 4 nested, bits 63:32 the spinlock retries (all ones: never notify).
                    let value: u128 = 0xFFFF_FFFF_0000_0000 | if nested { 1 << 4 } else { 0 };
                    assert_eq!(read.output, value.to_le_bytes(), "{case}");
                    assert_eq!(vtl2[0].code, HypercallCode::SET_VP_REGISTERS, "{case}");
                    assert_eq!(vtl2[1], *read, "{case}: read right after the guest OS id");
                }
            }
            let indicator = match arch {
                Arch::X86_64 => "CPUID 0x40000004 EAX bit 12",
                Arch::Aarch64 => "HvRegisterFeaturesInfo bit 4",
            };
            let codes = if nested { 2 } else { 0 };
            let want = format!(
                "nested host: {nested} ({indicator}; {codes} call codes get the nested bit)"
            );
            assert_run(&run, Outcome::Pass, &[&want]);
        }
    }
}

/// OpenVMM refuses HvInterceptTypeHypercall; a host that accepted it would reflect every
/// VMM-bound call, but the paravisor never asks for it. (`mock_proxy`'s
/// `intercept_installation_follows_openhcl_and_survives_a_refusal`, first part.)
#[test]
fn the_paravisor_never_asks_for_every_hypercall() {
    use hvdef::HvInterceptType;
    use mockhv::model::HypercallIntercept;
    use zerocopy::FromBytes;
    for arch in arches() {
        let scenario = Scenario {
            hypercall_intercept: HypercallIntercept::Accepted,
            ..Scenario::for_arch(arch)
        };
        let run = boot_paravisor(scenario, None);
        assert_run(&run, Outcome::Pass, &[]);
        let installs = calls(&run.events, HypercallCode::INSTALL_INTERCEPT);
        assert_eq!(installs.len(), 2, "{arch:?}");
        for r in installs {
            let (input, _) = hvdef::HvInputInstallIntercept::read_from_prefix(&r.input).unwrap();
            assert_ne!(input.intercept_type, HvInterceptType::HYPERCALL, "{arch:?}");
        }
    }
}

/// arm64 sets the guest OS id first, with a fast SetVpRegisters (the TLFS's early-register
/// rule: no memory-based call works before it). (`mock_boot`'s case of the same name.)
#[test]
fn aarch64_sets_the_guest_os_id_first_with_a_fast_call() {
    if !arches().contains(&Arch::Aarch64) {
        return;
    }
    let run = boot_paravisor(Scenario::for_arch(Arch::Aarch64), None);
    assert_run(
        &run,
        Outcome::Pass,
        &["running at VTL2", "proxying VTL0 hypercalls"],
    );
    let first = run
        .events
        .iter()
        .find_map(|e| match e {
            mockhv::model::Event::Hypercall(h) => Some(h),
            _ => None,
        })
        .expect("hypercalls were made");
    assert_eq!(first.code, HypercallCode::SET_VP_REGISTERS);
    assert_ne!(
        first.control & (1 << 16),
        0,
        "the guest OS id must be set with a fast call"
    );
    assert_eq!(first.status(), Some(HvStatus::SUCCESS));
    assert_eq!(names(first), [HvRegisterName::GUEST_OS_ID.0]);
}

/// A host that refuses HvCallModifyVtlProtectionMask stops the paravisor before VTL0 ever
/// runs, with one line naming the range and the GPA it failed at. (`mock_protection`'s
/// `a_refused_protection_stops_the_paravisor_before_vtl0_runs`.)
#[test]
fn a_refused_protection_stops_the_paravisor_before_vtl0_runs() {
    for arch in arches() {
        let image = mockhv::image::Image::load(&e2e::image(arch)).expect("the image parses");
        let mut scenario = Scenario::for_arch(arch);
        scenario.faults.push(InjectedFault {
            code: HypercallCode::MODIFY_VTL_PROTECTION_MASK,
            nth: 1,
            action: FaultAction::Status(HvError::INVALID_PARAMETER),
            filter: Default::default(),
        });
        let run = boot_paravisor(scenario, None);
        let line = format!("protecting VTL2's memory {:#x}..", image.extent.start);
        let gpa = format!("failed at GPA {:#x}: ", image.extent.start);
        assert_run(&run, Outcome::Fail, &[&line, &gpa]);
        assert!(
            calls(&run.events, HypercallCode::VTL_RETURN).is_empty(),
            "{arch:?}: VTL0 never ran"
        );
        assert_eq!(
            calls(&run.events, HypercallCode::MODIFY_VTL_PROTECTION_MASK).len(),
            1,
            "{arch:?}: no retry"
        );
    }
}

/// x86 writes the guest OS id before enabling the hypercall page, and makes its first hypercall
/// only after both. (`mock_boot`'s case of the same name.)
#[test]
fn x86_64_sets_the_guest_os_id_before_enabling_hypercalls() {
    use hvdef::x86_64::HvX64Msr;
    use mockhv::model::Event;
    if !arches().contains(&Arch::X86_64) {
        return;
    }
    let run = boot_paravisor(Scenario::for_arch(Arch::X86_64), None);
    assert_run(
        &run,
        Outcome::Pass,
        &["running at VTL2", "proxying VTL0 hypercalls"],
    );
    let position = |f: &dyn Fn(&Event) -> bool| run.events.iter().position(f);
    let os_id = position(&|e| {
        matches!(e, Event::Wrmsr { msr, value, .. } if *msr == HvX64Msr::HV_X64_MSR_GUEST_OS_ID.0 && *value != 0)
    })
    .expect("guest OS id written");
    let enable = position(&|e| {
        matches!(e, Event::Wrmsr { msr, value, .. } if *msr == HvX64Msr::HV_X64_MSR_HYPERCALL.0 && value & 1 == 1)
    })
    .expect("hypercall page enabled");
    let first_call = position(&|e| matches!(e, Event::Hypercall(_))).expect("a hypercall");
    assert!(
        os_id < enable && enable < first_call,
        "order: os id {os_id}, enable {enable}, first call {first_call}"
    );
}
