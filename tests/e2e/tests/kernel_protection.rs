//! VTL2's memory against a real VTL0: the VTL0 test kernel loads from, stores to and jumps into
//! every kind of VTL2 page under the paravisor under the in-VM mock, whose VTL0 stage 2 follows
//! the protections VTL2 set. Each access faults into the mock (a GPA intercept), the paravisor
//! says so in one line, and VTL0 takes the architecture's fault; VTL0's attempt to lift the
//! protection is refused by the hypervisor, and its own memory stays its own. The oracle is
//! independent of the paravisor: VTL2's pages are the ELF's loadable segments, and the faults
//! the architectures' encodings (`e2e::memory_fault`). (The former gdbstub suite
//! `mock_protection`'s `vtl0_can_neither_read_write_nor_execute_vtl2_memory`, its probe and lift
//! cases; its hypercalls naming VTL2's pages are `vtl0_cannot_name_vtl2_memory_in_a_hypercall`.)
#![forbid(unsafe_code)]

use e2e::kernel;
use hvdef::{
    HvInputModifyVtlProtectionMask, HvInputVtl, HvInterceptAccessType, HvMapGpaFlags,
    HvMessageType, HvStatus, HypercallCode, Vtl, HV_PARTITION_ID_SELF,
};
use mockhv::image::Image;
use mockhv::model::{Event, Vtl0Access};
use mockhv::qemu::Arch;
use std::collections::BTreeSet;
use vtl0::{CallOutcome, Fault, Record, Table};
use zerocopy::IntoBytes;

/// The fault VTL0 takes for `access`, as the kernel records it: x86 the vector and error code
/// (#GP(0)), arm64 the ESR with FAR 0 (the paravisor reports no address: FnV).
fn kernel_fault(arch: Arch, access: &Vtl0Access) -> Fault {
    let event = e2e::memory_fault(arch, access, false);
    match arch {
        Arch::X86_64 => Fault::X86 {
            vector: (event >> 16) as u8,
            code: 0,
            cr2: 0,
        },
        Arch::Aarch64 => Fault::Arm64 {
            esr: (event >> 64) as u64,
            far: 0,
        },
    }
}

#[test]
fn vtl0_can_neither_read_write_nor_execute_vtl2_memory() {
    for arch in kernel::arches() {
        let image = Image::load(&e2e::image(arch)).expect("the image parses");
        let targets = e2e::vtl2_targets(&image);
        let scratch = kernel::proto(arch).scratch_page();
        let mut table = Table::new();
        let mut attacks = Vec::new();
        for &(_, gpa) in &targets {
            table = table.read(gpa, 8).write(gpa, 8, 0xA5A5_A5A5_A5A5_A5A5);
            attacks.push(Vtl0Access::Read { gpa, len: 8 });
            attacks.push(Vtl0Access::Write {
                gpa,
                bytes: vec![0xA5; 8],
            });
        }
        table = table.exec(image.extent.start + 0x40);
        attacks.push(Vtl0Access::Execute {
            gpa: image.extent.start + 0x40,
        });
        // VTL0 tries to lift the protection itself (the hypervisor refuses a lower VTL), then
        // reads VTL2's code again, and its own page.
        let mut unprotect = HvInputModifyVtlProtectionMask {
            partition_id: HV_PARTITION_ID_SELF,
            map_flags: HvMapGpaFlags::ALL_ACCESS,
            target_vtl: HvInputVtl::CURRENT,
            reserved: [0; 3],
        }
        .as_bytes()
        .to_vec();
        unprotect.extend((image.extent.start >> 12).to_le_bytes());
        let lift = hvdef::Control::new()
            .with_code(HypercallCode::MODIFY_VTL_PROTECTION_MASK)
            .with_rep_count(1);
        table = table
            .hypercall(lift.into_bits(), &unprotect, 0)
            .read(image.extent.start + 0x40, 8)
            .write(scratch, 8, 0x1122_3344)
            .read(scratch, 8);
        let run = kernel::run(arch, None, None, &table);
        let console = &run.run.run.console;
        let records: Vec<&Record> = run.results.entries.iter().map(|(_, r)| r).collect();

        // Exactly VTL2's pages were protected, before VTL0 first ran: the image's and the
        // heap's after it, which the paravisor names where the layout says.
        let mut pages = BTreeSet::new();
        for r in run.vtl2_calls(HypercallCode::MODIFY_VTL_PROTECTION_MASK) {
            assert_eq!(r.status(), Some(HvStatus::SUCCESS), "{r:?}");
            pages.extend(e2e::protection_list(r));
        }
        // An IGVM boot: the heap is all of the declared VTL2 memory after the image.
        let heap = e2e::igvm_vtl2_heap(&image);
        let heap_line = format!(
            "boot: VTL2 heap {:#x}..{:#x} ({} bytes for 1 VP(s))",
            heap.start,
            heap.end,
            heap.end - heap.start
        );
        assert!(
            console.lines().any(|l| l.trim() == heap_line),
            "{arch:?}: console lacks {heap_line:?}:\n{console}"
        );
        let vtl2: BTreeSet<u64> = (image.extent.start >> 12..image.extent.end.div_ceil(0x1000))
            .chain(heap.start >> 12..heap.end >> 12)
            .collect();
        assert_eq!(
            pages, vtl2,
            "{arch:?}: exactly VTL2's pages, image and heap"
        );
        // VP 0's hypercall pages are the heap's.
        let pages_line = console
            .lines()
            .find_map(|l| {
                l.split_once("[vp0] INFO  hypercall pages: input ")?
                    .1
                    .split_once(", output ")
            })
            .unwrap_or_else(|| panic!("{arch:?}: no hypercall pages line:\n{console}"));
        for gpa in [pages_line.0, pages_line.1] {
            let gpa = u64::from_str_radix(gpa.trim().trim_start_matches("0x"), 16).unwrap();
            assert!(
                heap.contains(&gpa),
                "{arch:?}: VP 0's page {gpa:#x} in {heap:#x?}"
            );
        }

        for (n, access) in attacks.iter().enumerate() {
            let want = Err(kernel_fault(arch, access));
            let got = match records[n] {
                Record::Read { outcome, .. } => outcome.map(|_| ()),
                Record::Write { outcome, .. } | Record::Exec { outcome, .. } => *outcome,
                other => panic!("{arch:?}: {other:?}"),
            };
            assert_eq!(got, want, "{arch:?} {access:?}");
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
        // The hypervisor stopped every one (none was carried out) and VTL2 got each as a GPA
        // intercept.
        let stopped: Vec<(u64, HvInterceptAccessType)> = run
            .run
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
        let mut want: Vec<(u64, HvInterceptAccessType)> = attacks
            .iter()
            .map(|a| match a {
                Vtl0Access::Read { gpa, .. } => (*gpa, HvInterceptAccessType::READ),
                Vtl0Access::Write { gpa, .. } => (*gpa, HvInterceptAccessType::WRITE),
                Vtl0Access::Execute { gpa } => (*gpa, HvInterceptAccessType::EXECUTE),
            })
            .collect();
        want.push((image.extent.start + 0x40, HvInterceptAccessType::READ));
        assert_eq!(stopped, want, "{arch:?}: the accesses stage 2 stopped");
        assert!(
            run.run
                .events
                .iter()
                .all(|e| !matches!(e, Event::Vtl0Access { allowed: true, .. })),
            "{arch:?}: no VTL0 access was carried out by the hypervisor"
        );
        let gpa_intercepts = run
            .run
            .events
            .iter()
            .filter(|e| {
                matches!(e, Event::Intercept { vtl, message, .. }
                    if *vtl == Vtl::VTL0 && message.header.message_type == HvMessageType::GPA_INTERCEPT)
            })
            .count();
        assert_eq!(gpa_intercepts, want.len(), "{arch:?}");

        let n = attacks.len();
        let Record::Hypercall {
            outcome: CallOutcome::Done { result, .. },
            ..
        } = records[n]
        else {
            panic!("{arch:?}: {:?}", records[n]);
        };
        assert_eq!(
            HvStatus(*result as u16),
            HvStatus::ACCESS_DENIED,
            "{arch:?}: not VTL0's to lift"
        );
        assert!(
            run.reflected_controls().is_empty(),
            "{arch:?}: the hypervisor's own answer"
        );
        let code_read = Vtl0Access::Read {
            gpa: image.extent.start + 0x40,
            len: 8,
        };
        assert_eq!(
            records[n + 1],
            &Record::Read {
                gpa: image.extent.start + 0x40,
                width: 8,
                outcome: Err(kernel_fault(arch, &code_read)),
            },
            "{arch:?}: still protected"
        );
        assert_eq!(
            records[n + 3],
            &Record::Read {
                gpa: scratch,
                width: 8,
                outcome: Ok(0x1122_3344)
            },
            "{arch:?}: VTL0's own memory stays VTL0's"
        );
    }
}

/// A VTL0 that keeps touching VTL2's memory gets its faults but costs the console 64 lines per
/// VP, then one in 65536. (`mock_protection`'s case of the same name, there on x86 only.)
#[test]
fn refusal_lines_are_bounded_per_vp() {
    for arch in kernel::arches() {
        let image = Image::load(&e2e::image(arch)).expect("the image parses");
        let table = (0..70).fold(Table::new(), |t, i| t.read(image.extent.start + 8 * i, 8));
        let run = kernel::run(arch, None, None, &table);
        let console = &run.run.run.console;
        let lines = console
            .lines()
            .filter(|c| c.contains("VP 0: VTL0 read at GPA"))
            .count();
        assert_eq!(lines, 64, "{arch:?}\n{console}");
        assert!(
            console.contains("(refusal 64 on this VP: from now on one line in 65536)"),
            "{arch:?}\n{console}"
        );
        let fault = kernel_fault(arch, &Vtl0Access::Read { gpa: 0, len: 8 });
        assert_eq!(run.results.entries.len(), 70);
        assert!(
            run.results
                .entries
                .iter()
                .all(|(_, r)| matches!(r, Record::Read { outcome: Err(f), .. } if *f == fault)),
            "{arch:?}: {:?}",
            run.results.entries
        );
    }
}

/// Hypercalls naming VTL2's pages as their parameter lists: the hypervisor's read of the input
/// (a PostMessage it would serve itself: to a VTL0 port; one it would reflect: to a connection
/// it does not know) or its write of the output (ExtQueryCapabilities) hits a page VTL2
/// protected, so VTL2 gets a GPA intercept, says so, and VTL0 takes the architecture's fault at
/// the call. Nothing reaches the host. (`mock_protection`'s hypercall cases, with explicit GPAs
/// in the kernel's table.)
#[test]
fn vtl0_cannot_name_vtl2_memory_in_a_hypercall() {
    use e2e::{post_message, HOST_CONNECTION};
    use vtl0::CallOutcome;
    for arch in kernel::arches() {
        let image = Image::load(&e2e::image(arch)).expect("the image parses");
        let targets = e2e::vtl2_targets(&image);
        let percpu = targets[3].1 & !0xFFF;
        let stack = targets[2].1 & !0xFFF;
        let post = u64::from(HypercallCode::POST_MESSAGE.0);
        let query = u64::from(HypercallCode::EXT_QUERY_CAPABILITIES.0);
        let table = Table::new()
            .hypercall_at(post, percpu, 0, &post_message(HOST_CONNECTION), 0)
            .hypercall_at(post, stack, 0, &post_message(0x77), 0)
            .hypercall_at(query, 0, percpu + 0x800, &[], 0);
        let run = kernel::run(arch, None, None, &table);
        let console = &run.run.run.console;
        let cases = [
            (
                percpu,
                Vtl0Access::Read {
                    gpa: percpu,
                    len: 0,
                },
                "read",
            ),
            (stack, Vtl0Access::Read { gpa: stack, len: 0 }, "read"),
            (
                percpu + 0x800,
                Vtl0Access::Write {
                    gpa: percpu + 0x800,
                    bytes: Vec::new(),
                },
                "write",
            ),
        ];
        for (n, (gpa, access, kind)) in cases.iter().enumerate() {
            let (_, record) = &run.results.entries[n];
            assert_eq!(
                record,
                &Record::Hypercall {
                    control: [post, post, query][n],
                    outcome: CallOutcome::Fault(kernel_fault(arch, access)),
                },
                "{arch:?}: call {n}"
            );
            assert!(
                console.contains(&format!("VTL0 {kind} at GPA {gpa:#x}")),
                "{arch:?}: {gpa:#x}:\n{console}"
            );
        }
        let gpa_intercepts = run
            .run
            .events
            .iter()
            .filter(|e| {
                matches!(e, Event::Intercept { vtl, message, .. }
                    if *vtl == Vtl::VTL0 && message.header.message_type == HvMessageType::GPA_INTERCEPT)
            })
            .count();
        assert_eq!(gpa_intercepts, 3, "{arch:?}");
        for code in [
            HypercallCode::POST_MESSAGE,
            HypercallCode::EXT_QUERY_CAPABILITIES,
        ] {
            let from_vtl2 = run.vtl2_calls(code).len();
            let boot = usize::from(code == HypercallCode::EXT_QUERY_CAPABILITIES);
            assert_eq!(
                from_vtl2, boot,
                "{arch:?} {code:?}: nothing of VTL0's reached the host"
            );
        }
    }
}

/// VTL0's CPU touching VTL2's page while it delivers an exception: the kernel points its IDT at
/// VTL2's second page and raises #UD, so the CPU's read of the #UD gate (IDT + 6 × 16) is
/// stopped by VTL0's nested tables with EXITINTINFO valid (the #UD being delivered). The host
/// hands the model the access as made during event delivery, the GPA intercept the paravisor
/// gets says `interruption_pending`, and the paravisor, instead of injecting a fault that would
/// be delivered through the same page and fault again, says so in one line and halts that VP.
/// Observable here: that line, once; the VP halted in VTL2 (the host's line; with every VP
/// halted the run fails); the kernel's IDT line and nothing after it; exactly one stopped
/// access, the gate's read, and one intercept, marked; and after it no VtlReturn and no write of
/// VTL0's pending event (nothing injected, nothing left pending). Not observable: that the
/// other VPs go on serving (the in-VM host runs VTL0 on VP 0 only; `mock_protection` had VP 1
/// serve a call meanwhile). x86 only: the arm64 intercept header has `interruption_pending`
/// too (OpenHCL's arm64 processor hands it to its emulator, and the paravisor reads it on both
/// arches), but arm64 exception entry reads no memory (the vector is VBAR_EL1 plus an offset),
/// so the only access tied to a delivery is the fetch of the vector's first instruction, an
/// ordinary instruction abort that ESR_EL2 does not tell apart from any other; the in-VM host
/// has nothing to set the bit from, and the TLFS does not say when Hyper-V sets it on arm64.
/// (An arm64 VTL0 with VBAR_EL1 on VTL2's page would take the paravisor's abort at the same
/// vector again and again: bounded lines, no end.) (`mock_protection`'s
/// `a_fault_during_event_delivery_stops_that_vp_only`.)
#[test]
fn a_fault_during_event_delivery_stops_that_vp_only() {
    use hvdef::x86_64::HvX64MemoryInterceptMessage;
    use zerocopy::FromBytes;
    let arch = Arch::X86_64;
    if !kernel::arches().contains(&arch) {
        return;
    }
    let image = Image::load(&e2e::image(arch)).expect("the image parses");
    let idt = image.extent.start + 0x1000;
    let gate = idt + 6 * 16;
    let table = Table::new().idt(idt, 0xfff);
    let run = kernel::boot(arch, None, None, &table);
    let console = &run.run.run.console;
    assert_eq!(
        run.run.run.outcome,
        mockhv::qemu::Outcome::Fail,
        "{}\n{console}",
        run.run.summary()
    );
    assert_eq!(
        run.results.entries,
        [(
            0,
            Record::Idt {
                base: idt,
                limit: 0xfff
            }
        )],
        "{console}"
    );
    assert_eq!(
        (run.results.done, &run.results.unexpected),
        (None, &None),
        "{console}"
    );
    let line = format!(
        "VP 0: VTL0 read at GPA {gate:#x} refused (VTL2 memory) while VTL0 was taking an \
         exception or interrupt"
    );
    assert_eq!(
        console.lines().filter(|c| c.contains(&line)).count(),
        1,
        "{line:?}\n{console}"
    );
    assert!(!console.contains("PANIC"), "{console}");
    e2e::assert_lines_in_order(
        console,
        &[
            &line,
            "VP 0 halted in VTL2 at ",
            "every VP is parked and VPs 0x1 (bit per VP) halted in VTL2",
        ],
    );
    let events = &run.run.events;
    let stopped: Vec<(u64, HvInterceptAccessType)> = events
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
    assert_eq!(stopped, [(gate, HvInterceptAccessType::READ)]);
    let intercepts: Vec<(usize, &hvdef::HvMessage)> = events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Event::Intercept { vtl, message, .. } if *vtl == Vtl::VTL0 => Some((i, message)),
            _ => None,
        })
        .collect();
    assert_eq!(intercepts.len(), 1, "{intercepts:?}");
    let (at, message) = intercepts[0];
    assert_eq!(message.header.message_type, HvMessageType::GPA_INTERCEPT);
    let (gpa_intercept, _) =
        HvX64MemoryInterceptMessage::read_from_prefix(message.payload_bytes()).unwrap();
    assert!(gpa_intercept.header.execution_state.interruption_pending());
    assert_eq!(gpa_intercept.guest_physical_address, gate);
    let after: Vec<&Event> = events[at + 1..]
        .iter()
        .filter(|e| {
            matches!(e, Event::Hypercall(r) if r.code == HypercallCode::VTL_RETURN
                || (r.code == HypercallCode::SET_VP_REGISTERS
                    && r.input.get(16..20)
                        == Some(&hvdef::HvRegisterName::PENDING_EVENT0.0.to_le_bytes())))
        })
        .collect();
    assert!(
        after.is_empty(),
        "VTL0 was returned to or given an event: {after:?}"
    );
}

/// arm64: an access from VTL0's user mode (EL0) takes the abort "from a lower exception level"
/// (ESR EC 0x24 data, 0x20 instruction; the same ISS as from EL1), which the paravisor reads
/// from the intercepted CPSR: the GPA intercept's execution state says CPL 0 for these, 1 for
/// the same read from EL1 after them (EC 0x25). An EL0 store and load of VTL0's own scratch
/// page go through, so the faults are stage 2's (VTL2's protection), not the kernel's own
/// tables'. (`mock_protection`'s `an_el0_access_takes_the_abort_from_a_lower_el`, with a store
/// added.)
#[test]
fn an_el0_access_takes_the_abort_from_a_lower_el() {
    use hvdef::aarch64::HvArm64MemoryInterceptMessage;
    use zerocopy::FromBytes;
    let arch = Arch::Aarch64;
    if !kernel::arches().contains(&arch) {
        return;
    }
    let image = Image::load(&e2e::image(arch)).expect("the image parses");
    let scratch = kernel::proto(arch).scratch_page();
    let code_gpa = image.extent.start + 0x40;
    let read = Vtl0Access::Read {
        gpa: code_gpa,
        len: 8,
    };
    let write = Vtl0Access::Write {
        gpa: code_gpa,
        bytes: vec![0xA5; 8],
    };
    let fetch = Vtl0Access::Execute { gpa: code_gpa };
    let table = Table::new()
        .read_el0(code_gpa, 8)
        .write_el0(code_gpa, 8, 0xA5A5_A5A5_A5A5_A5A5)
        .exec_el0(code_gpa)
        .write_el0(scratch, 8, 0x5566_7788)
        .read_el0(scratch, 8)
        .read(code_gpa, 8);
    let run = kernel::run(arch, None, None, &table);
    let console = &run.run.run.console;
    let records = run.results.records().expect("in order");
    let from_el0 = |access: &Vtl0Access| Fault::Arm64 {
        esr: (e2e::memory_fault(arch, access, true) >> 64) as u64,
        far: 0,
    };
    assert_eq!(
        records,
        [
            Record::Read {
                gpa: code_gpa,
                width: 8,
                outcome: Err(from_el0(&read)),
            },
            Record::Write {
                gpa: code_gpa,
                width: 8,
                value: 0xA5A5_A5A5_A5A5_A5A5,
                outcome: Err(from_el0(&write)),
            },
            Record::Exec {
                gpa: code_gpa,
                outcome: Err(from_el0(&fetch)),
            },
            Record::Write {
                gpa: scratch,
                width: 8,
                value: 0x5566_7788,
                outcome: Ok(()),
            },
            Record::Read {
                gpa: scratch,
                width: 8,
                outcome: Ok(0x5566_7788),
            },
            Record::Read {
                gpa: code_gpa,
                width: 8,
                outcome: Err(kernel_fault(arch, &read)),
            },
        ],
        "{console}"
    );
    // The exact classes, not only e2e::memory_fault's arithmetic.
    let classes: Vec<u64> = records[..3]
        .iter()
        .chain(&records[5..])
        .map(|r| match r {
            Record::Read {
                outcome: Err(f), ..
            }
            | Record::Write {
                outcome: Err(f), ..
            }
            | Record::Exec {
                outcome: Err(f), ..
            } => f.class(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(classes, [0x24, 0x24, 0x20, 0x25]);
    // What the paravisor read the level from: each GPA intercept's execution state.
    let intercepts: Vec<(u64, HvInterceptAccessType, u8)> = run
        .run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Intercept { vtl, message, .. }
                if *vtl == Vtl::VTL0
                    && message.header.message_type == HvMessageType::GPA_INTERCEPT =>
            {
                let (m, _) =
                    HvArm64MemoryInterceptMessage::read_from_prefix(message.payload_bytes())
                        .expect("a memory intercept");
                Some((
                    m.guest_physical_address,
                    m.header.intercept_access_type,
                    m.header.execution_state.cpl(),
                ))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        intercepts,
        [
            (code_gpa, HvInterceptAccessType::READ, 0),
            (code_gpa, HvInterceptAccessType::WRITE, 0),
            (code_gpa, HvInterceptAccessType::EXECUTE, 0),
            (code_gpa, HvInterceptAccessType::READ, 1),
        ],
        "{console}"
    );
    for kind in ["read", "write", "execute"] {
        let needle = format!("VTL0 {kind} at GPA {code_gpa:#x} refused (VTL2 memory)");
        assert!(console.contains(&needle), "{needle:?}:\n{console}");
    }
}
