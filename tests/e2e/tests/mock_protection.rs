//! VTL2 protects its own memory from VTL0: before VTL0 first runs, every page of the image
//! (code, read-only data, page tables, stacks, per-VP hypercall / assist pages, IGVM parameter
//! pages) is made inaccessible to VTL0 with HvCallModifyVtlProtectionMask, and a VTL0 access to
//! one (a load, a store, an instruction fetch, or a hypercall naming it) is stopped by the
//! hypervisor and handed to VTL2 as a GPA intercept, which the paravisor answers with one line
//! and a fault for VTL0 (x64 #GP(0), arm64 a synchronous external abort), never a hang.
//!
//! The oracle is independent of the paravisor: VTL2's pages are the ELF's loadable segments
//! (program headers, BSS included), and the faults are the architectures' encodings.

use e2e::{call, code, layout, post_message, HOST_CONNECTION, RELAYED};
use hvdef::{
    HvInputModifyVtlProtectionMask, HvInputVtl, HvMapGpaFlags, HvStatus, HypercallCode,
    HV_PARTITION_ID_SELF,
};
use mockhv::image::Image;
use mockhv::model::{Event, Scenario, Vtl0Access, Vtl0Call};
use mockhv::qemu::Arch;
use std::collections::BTreeSet;
use zerocopy::FromBytes;

/// What a store writes: never found in VTL2's memory afterwards.
const PATTERN: [u8; 16] = [0xA5; 16];

/// The exception VTL0's kernel must take for `access` (see `e2e::memory_fault`).
fn expected_fault(arch: Arch, access: &Vtl0Access) -> u128 {
    e2e::memory_fault(arch, access, false)
}

/// The pages VTL2's successful ModifyVtlProtectionMask calls took from VTL0, checking each is
/// "no access" for the lower VTLs, owned by the calling VTL (target current), this partition,
/// at most 510 pages a call (one input page), and issued before VTL0 first ran.
fn protected_pages(report: &mockhv::session::Report) -> BTreeSet<u64> {
    let mut pages = BTreeSet::new();
    let calls = e2e::vtl2_calls(report, HypercallCode::MODIFY_VTL_PROTECTION_MASK);
    assert!(!calls.is_empty(), "the paravisor protected nothing");
    for record in &calls {
        let control = hvdef::Control::from_bits(record.control);
        assert!(control.rep_count() <= 510, "{control:?}");
        let (header, _) =
            HvInputModifyVtlProtectionMask::read_from_prefix(&record.input).expect("a header");
        assert_eq!(header.partition_id, HV_PARTITION_ID_SELF);
        assert_eq!(header.map_flags, HvMapGpaFlags::NO_ACCESS);
        assert_eq!(header.target_vtl, HvInputVtl::CURRENT);
        assert_eq!(record.status(), Some(HvStatus::SUCCESS), "{record:?}");
        pages.extend(e2e::protection_list(record));
    }
    let events = report.trace().events();
    let last_protect = events
        .iter()
        .rposition(|e| {
            matches!(e, Event::Hypercall(h)
                if h.code == HypercallCode::MODIFY_VTL_PROTECTION_MASK && h.vtl == hvdef::Vtl::VTL2)
        })
        .unwrap();
    let first_return = events
        .iter()
        .position(|e| matches!(e, Event::Hypercall(h) if h.code == HypercallCode::VTL_RETURN))
        .expect("VTL0 ran");
    assert!(
        last_protect < first_return,
        "protected before VTL0 first ran"
    );
    pages
}

#[test]
fn vtl0_can_neither_read_write_nor_execute_vtl2_memory() {
    for arch in Arch::ALL {
        let image = Image::load(&e2e::image(arch)).expect("the image parses");
        let targets = e2e::vtl2_targets(&image);
        let l = layout(arch);
        let relay = |out: Option<u64>| {
            let c = call(arch, code(HypercallCode::POST_MESSAGE), l.input, 0)
                .with_memory(l.input, &post_message(RELAYED));
            match out {
                Some(gpa) => c.with_output(gpa, 16),
                None => c,
            }
        };
        let mut script = vec![relay(Some(targets[0].1))];
        let mut attacks = Vec::new();
        for &(_, gpa) in &targets {
            attacks.push(Vtl0Access::Read { gpa, len: 16 });
            attacks.push(Vtl0Access::Write {
                gpa,
                bytes: PATTERN.to_vec(),
            });
        }
        attacks.push(Vtl0Access::Execute {
            gpa: image.extent.start + 0x40,
        });
        let code_gpa = targets[0].1;
        let first_attack = script.len();
        script.extend(
            attacks
                .iter()
                .map(|a| Vtl0Call::access(arch, l.ip, a.clone())),
        );
        // Hypercalls naming VTL2's pages: one the hypervisor serves (a VTL0 port), one it would
        // reflect (a connection only the relay knows), an output list.
        let percpu = targets[3].1 & !0xFFF;
        let stack = targets[2].1 & !0xFFF;
        let first_call = script.len();
        script.push(
            call(arch, code(HypercallCode::POST_MESSAGE), percpu, 0)
                .with_memory(l.input, &post_message(HOST_CONNECTION)),
        );
        script.push(call(arch, code(HypercallCode::POST_MESSAGE), stack, 0));
        script.push(call(
            arch,
            code(HypercallCode::EXT_QUERY_CAPABILITIES),
            0,
            percpu + 0x800,
        ));
        // VTL0 tries to lift the protection itself (the hypervisor refuses a lower VTL), then
        // reads VTL2's code again, and its own page.
        let lift = script.len();
        let mut unprotect = zerocopy::IntoBytes::as_bytes(&HvInputModifyVtlProtectionMask {
            partition_id: HV_PARTITION_ID_SELF,
            map_flags: HvMapGpaFlags::ALL_ACCESS,
            target_vtl: HvInputVtl::CURRENT,
            reserved: [0; 3],
        })
        .to_vec();
        unprotect.extend((image.extent.start >> 12).to_le_bytes());
        let protect_code = HypercallCode::MODIFY_VTL_PROTECTION_MASK;
        script.push(
            call(arch, code(protect_code).with_rep_count(1), l.input, 0)
                .with_memory(l.input, &unprotect),
        );
        let code_read = Vtl0Access::Read {
            gpa: image.extent.start + 0x40,
            len: 16,
        };
        script.push(Vtl0Call::access(arch, l.ip, code_read.clone()));
        script.push(Vtl0Call::access(
            arch,
            l.ip,
            Vtl0Access::Read {
                gpa: l.input,
                len: 16,
            },
        ));
        // VTL0 lays its SynIC message page over VTL2's code: an overlay is VTL0's view only.
        let overlay = script.len();
        let mut set_simp = e2e::get_registers_input(HvInputVtl::CURRENT, &[]);
        set_simp.extend(zerocopy::IntoBytes::as_bytes(&hvdef::HvRegisterAssoc::new(
            hvdef::HvRegisterName::SIMP,
            (image.extent.start | 1).into(),
        )));
        script.push(
            call(
                arch,
                code(HypercallCode::SET_VP_REGISTERS).with_rep_count(1),
                l.input,
                0,
            )
            .with_memory(l.input, &set_simp),
        );
        // Still serving; VTL2's bytes as they were.
        let first_after = script.len();
        script.push(relay(Some(code_gpa)));
        script.extend(targets.iter().map(|&(_, gpa)| relay(Some(gpa))));

        let mut report = e2e::run_vtl0(Scenario::for_arch(arch), script);
        let console = report.run.console.clone();
        let results = e2e::results(&mut report);
        assert!(
            results.iter().all(|r| r.attempt == 0),
            "{arch:?}: a call was delivered again (VTL0 hung on it): {results:#?}"
        );

        let extent: BTreeSet<u64> = (image.extent.start >> 12..image.extent.end >> 12).collect();
        assert_eq!(
            protected_pages(&report),
            extent,
            "{arch:?}: exactly VTL2's pages"
        );

        for (n, access) in attacks.iter().enumerate() {
            let r = &results[first_attack + n];
            assert!(r.reached_vtl2, "{arch:?} {access:?}: no intercept");
            assert_eq!(
                r.pending_event(),
                Some(expected_fault(arch, access)),
                "{arch:?} {access:?}: {r:#?}"
            );
            assert!(r.output.is_empty(), "{arch:?} {access:?}: VTL2 bytes left");
            assert_eq!(r.ip_after, r.ip_before, "{arch:?}: a fault");
            let (kind, gpa) = match access {
                Vtl0Access::Read { gpa, .. } => ("read", gpa),
                Vtl0Access::Write { gpa, .. } => ("write", gpa),
                Vtl0Access::Execute { gpa } => ("execute", gpa),
            };
            let needle = format!("VTL0 {kind} at GPA {gpa:#x} refused (VTL2 memory)");
            assert!(
                console
                    .lines()
                    .any(|l| l.contains(&needle) && l.contains("VP 0")),
                "{arch:?}: console lacks {needle:?}:\n{console}"
            );
        }
        for (n, (gpa, kind)) in [(percpu, "read"), (stack, "read"), (percpu + 0x800, "write")]
            .into_iter()
            .enumerate()
        {
            let r = &results[first_call + n];
            assert!(r.reached_vtl2, "{arch:?}: call {n}");
            assert_eq!(
                r.pending_event(),
                Some(expected_fault(
                    arch,
                    &if kind == "read" {
                        Vtl0Access::Read { gpa, len: 0 }
                    } else {
                        Vtl0Access::Write {
                            gpa,
                            bytes: Vec::new(),
                        }
                    }
                )),
                "{arch:?}: call {n}: {r:#?}"
            );
            assert!(
                console.contains(&format!("VTL0 {kind} at GPA {gpa:#x}")),
                "{arch:?}: {gpa:#x}:\n{console}"
            );
        }
        assert_eq!(
            e2e::vtl2_calls(&report, HypercallCode::POST_MESSAGE).len(),
            2 + targets.len(),
            "{arch:?}: only the well-formed relays went to the host"
        );

        let lifted = &results[lift];
        assert_eq!(lifted.status(), HvStatus::ACCESS_DENIED, "{arch:?}");
        assert!(
            !lifted.reached_vtl2,
            "{arch:?}: the hypervisor's own answer"
        );
        assert_eq!(
            results[lift + 1].pending_event(),
            Some(expected_fault(arch, &code_read)),
            "{arch:?}: still protected"
        );
        assert_eq!(
            results[lift + 2].output,
            &unprotect[..16],
            "{arch:?}: VTL0's own memory stays VTL0's"
        );
        assert!(results[lift + 2].advanced());

        assert_eq!(results[overlay].status(), HvStatus::SUCCESS, "{arch:?}");
        assert!(!results[overlay].reached_vtl2);

        assert_eq!(results[0].status(), HvStatus::SUCCESS, "{arch:?}");
        let after = &results[first_after..];
        assert!(after.iter().all(|r| r.status() == HvStatus::SUCCESS));
        assert_eq!(
            after[0].output, results[0].output,
            "{arch:?}: VTL2's code unchanged"
        );
        for (r, (what, _)) in after[1..].iter().zip(&targets) {
            assert_eq!(r.output.len(), 16);
            assert_ne!(r.output, PATTERN, "{arch:?}: VTL0's store reached {what}");
        }
    }
}

/// arm64: an access from VTL0's user mode (EL0) takes the abort "from a lower exception level"
/// (ESR EC 0x24 data, 0x20 instruction), which the paravisor reads from the intercepted CPSR.
#[test]
fn an_el0_access_takes_the_abort_from_a_lower_el() {
    let arch = Arch::Aarch64;
    let image = Image::load(&e2e::image(arch)).expect("the image parses");
    let l = layout(arch);
    let code_gpa = image.extent.start + 0x40;
    let read = Vtl0Access::Read {
        gpa: code_gpa,
        len: 8,
    };
    let fetch = Vtl0Access::Execute { gpa: code_gpa };
    let script = vec![
        Vtl0Call::access(arch, l.ip, read.clone()).at_el0(),
        Vtl0Call::access(arch, l.ip, fetch.clone()).at_el0(),
    ];
    let mut report = e2e::run_vtl0(Scenario::for_arch(arch), script);
    let results = e2e::results(&mut report);
    assert_eq!(results.len(), 2, "{results:#?}");
    assert_eq!(
        results[0].pending_event(),
        Some(e2e::memory_fault(arch, &read, true))
    );
    assert_eq!(
        results[1].pending_event(),
        Some(e2e::memory_fault(arch, &fetch, true))
    );
}

/// A host that refuses the protection: the paravisor stops with one line naming the range and
/// the GPA, and never runs VTL0 with its memory open.
#[test]
fn a_refused_protection_stops_the_paravisor_before_vtl0_runs() {
    for arch in Arch::ALL {
        let image = Image::load(&e2e::image(arch)).expect("the image parses");
        let mut scenario = Scenario::for_arch(arch);
        scenario.faults.push(mockhv::model::InjectedFault {
            code: HypercallCode::MODIFY_VTL_PROTECTION_MASK,
            nth: 1,
            action: mockhv::model::FaultAction::Status(hvdef::HvError::INVALID_PARAMETER),
            filter: Default::default(),
        });
        let l = layout(arch);
        let mut config = mockhv::session::SessionConfig::new(e2e::image(arch), scenario);
        config.timeout = std::time::Duration::from_secs(60);
        config.vtl0 = vec![call(arch, code(HypercallCode::POST_MESSAGE), l.input, 0)
            .with_memory(l.input, &post_message(RELAYED))];
        let report = mockhv::session::run(config).expect("the mock session runs");
        assert_eq!(
            report.run.outcome,
            mockhv::qemu::Outcome::Fail,
            "{arch:?}: {}\n{}",
            report.summary(),
            report.run.console
        );
        let line = format!("protecting VTL2's memory {:#x}..", image.extent.start);
        let gpa = format!("failed at GPA {:#x}: ", image.extent.start);
        assert!(
            report
                .run
                .console
                .lines()
                .any(|c| c.contains(&line) && c.contains(&gpa)),
            "{arch:?}: console lacks {line:?} / {gpa:?}:\n{}",
            report.run.console
        );
        assert!(
            report
                .trace()
                .hypercalls_with_code(HypercallCode::VTL_RETURN)
                .is_empty(),
            "{arch:?}: VTL0 never ran"
        );
    }
}

/// VTL0's CPU touching VTL2's page while it delivers an exception (its IDT or vector table
/// there): a fault would be delivered the same way and fault again for ever, so that VP stops
/// as for a triple fault (one line, halted), and the other VP keeps serving.
#[test]
fn a_fault_during_event_delivery_stops_that_vp_only() {
    for arch in Arch::ALL {
        let image = Image::load(&e2e::image(arch)).expect("the image parses");
        let l = layout(arch);
        let idt = Vtl0Access::Read {
            gpa: image.extent.start + 0x1000,
            len: 16,
        };
        let script = vec![
            Vtl0Call::access(arch, l.ip, idt).delivering_event(),
            // Never delivered: VP 0 is halted by then.
            Vtl0Call::access(
                arch,
                l.ip,
                Vtl0Access::Read {
                    gpa: l.input,
                    len: 8,
                },
            ),
            call(arch, code(HypercallCode::POST_MESSAGE), l.input + 0x100, 0)
                .with_memory(l.input + 0x100, &post_message(RELAYED))
                .on_vp(1),
        ];
        let scenario = Scenario {
            vp_count: 2,
            ..Scenario::for_arch(arch)
        };
        let mut report = e2e::session(scenario, script, e2e::RELAY);
        let console = report.run.console.clone();
        assert_eq!(report.halted_vps, [0].into(), "{arch:?}\n{console}");
        assert!(!console.contains("PANIC"), "{arch:?}\n{console}");
        let line = format!(
            "VP 0: VTL0 read at GPA {:#x} refused (VTL2 memory) while VTL0 was taking an \
             exception or interrupt",
            image.extent.start + 0x1000
        );
        assert_eq!(
            console.lines().filter(|c| c.contains(&line)).count(),
            1,
            "{arch:?}: {line:?}\n{console}"
        );
        let results = e2e::results(&mut report);
        assert!(
            results.iter().all(|r| r.vp == 1),
            "{arch:?}: nothing was injected on VP 0: {results:#?}"
        );
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].status(), HvStatus::SUCCESS);
        assert_eq!(
            report
                .model
                .register(0, hvdef::Vtl::VTL0, hvdef::HvRegisterName::PENDING_EVENT0),
            Ok(0),
            "{arch:?}: no fault left pending for VTL0 on VP 0"
        );
    }
}

/// VTL0 decides how often it touches VTL2's memory, so the refusal lines are bounded: each of
/// the first 64 on a VP gets one, the 64th says so; every access still gets its fault.
#[test]
fn refusal_lines_are_bounded_per_vp() {
    let arch = Arch::X86_64;
    let image = Image::load(&e2e::image(arch)).expect("the image parses");
    let l = layout(arch);
    let script: Vec<Vtl0Call> = (0..70)
        .map(|i| {
            Vtl0Call::access(
                arch,
                l.ip,
                Vtl0Access::Read {
                    gpa: image.extent.start + 8 * i,
                    len: 8,
                },
            )
        })
        .collect();
    let mut report = e2e::run_vtl0(Scenario::for_arch(arch), script);
    let console = report.run.console.clone();
    let lines = console
        .lines()
        .filter(|c| c.contains("VP 0: VTL0 read at GPA"))
        .count();
    assert_eq!(lines, 64, "{console}");
    assert!(console.contains("(refusal 64 on this VP: from now on one line in 65536)"));
    let results = e2e::results(&mut report);
    assert_eq!(results.len(), 70);
    assert!(results.iter().all(|r| r.pending_event()
        == Some(e2e::memory_fault(
            arch,
            &Vtl0Access::Read { gpa: 0, len: 8 },
            false
        ))));
}
