//! #UD with a real VTL0: the VTL0 test kernel under the paravisor under the in-VM mock. The
//! TLFS's own #UD cases are the hypervisor's and never reach VTL2: VtlReturn from VTL0, the
//! lowest VTL (x64 through the hypercall page's VTL-return stub, arm64 `hvc #3`), and — on arm64
//! — a call from EL0, where `hvc` is undefined and the CPU itself raises the exception before
//! any hypervisor sees it. A call the hypervisor does reflect but the paravisor refuses to
//! serve (x64 callers outside 64-bit mode: it serves 64-bit kernels only) reaches VTL0 as #UD
//! the way OpenHCL injects one: PendingEvent0 of VTL0 set through the paravisor's
//! SetVpRegisters. Either way VTL0 takes the architecture's undefined-instruction exception
//! with its IP on the call and its result register as the call had it. A real VTL call
//! (x64 the VTL-call stub, arm64 `hvc #2`) enters VTL2 and returns at once, VTL0's registers as
//! they were. Ordinary calls around them complete, and only they reach the host.
//! (The former gdbstub suite `mock_ud`'s
//! `ud_callers_take_the_exception_and_ordinary_calls_complete`.)
#![forbid(unsafe_code)]

use e2e::kernel::{self, KernelRun};
use e2e::{post_message, RELAY, RELAYED};
use hvdef::aarch64::SMCCC_HV_FUNC_ID;
use hvdef::{
    Control, HvInputGetVpRegisters, HvInputVtl, HvMessageType, HvRegisterAssoc, HvRegisterName,
    HvStatus, HypercallCode, Vtl,
};
use mockhv::model::{Abi, Event, Fault as HvFault, HypercallRecord, Outcome, Scenario};
use mockhv::qemu::Arch;
use vtl0::{CallOutcome, Fault, FaultSite, Mode, Record, Table, VtlEntry};
use zerocopy::FromBytes;

/// Who raises the exception, or what else becomes of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Completed with SUCCESS, relayed to the host through VTL2.
    Completes,
    /// The hypervisor answers it itself with this status; VTL2 never sees it.
    HypervisorStatus(HvStatus),
    /// The hypervisor (or on arm64 EL0 the CPU) raises the undefined-instruction exception:
    /// the call never reaches VTL2. `ip`: where VTL0's IP stays, `result` its result register.
    HypervisorUd { ip: u64, result: u64 },
    /// The paravisor, for a call the hypervisor reflected: PendingEvent0 through its
    /// SetVpRegisters.
    ParavisorUd { ip: u64, result: u64 },
    /// A VTL call: VTL2 is entered with no message and returns at once; VTL0 goes on after the
    /// call with its registers as they were (`result` its result register).
    VtlCall { result: u64 },
}

struct Call {
    mode: Mode,
    control: u64,
    input: Vec<u8>,
    expect: Expect,
    what: &'static str,
}

fn code(c: HypercallCode) -> u64 {
    Control::new().with_code(c).into_bits()
}

/// An ordinary PostMessage to the relayed connection.
fn post(what: &'static str) -> Call {
    Call {
        mode: Mode::default(),
        control: code(HypercallCode::POST_MESSAGE),
        input: post_message(RELAYED),
        expect: Expect::Completes,
        what,
    }
}

fn entry(vtl_entry: VtlEntry) -> Mode {
    Mode {
        vtl_entry,
        ..Mode::default()
    }
}

/// Where a symbol of the VTL0 kernel's ELF is (its stubs are exported by name).
fn kernel_symbol(arch: Arch, name: &str) -> u64 {
    use object::{Object, ObjectSymbol};
    let image = e2e::image(arch).with_file_name(format!("vtl0-{}.elf", arch.name()));
    let bytes = std::fs::read(&image).expect("read the VTL0 kernel");
    let elf = object::File::parse(&*bytes).expect("an ELF");
    elf.symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("the kernel exports {name}"))
        .address()
}

/// The script of the old suite: ordinary calls around each #UD case and a VTL call.
fn script(arch: Arch) -> Vec<Call> {
    let p = kernel::proto(arch);
    let mut calls = vec![post("PostMessage before")];
    match arch {
        Arch::X86_64 => {
            let page = p.hypercall_page();
            // The stubs as the model's page has them (hvmodel::x86_64): `mov rax, rcx` (3
            // bytes) and `mov ecx, imm32` (5) before the `vmmcall`; RAX then holds RCX, the
            // VTL control (0).
            let stub_vmmcall = |offset: u16| page + u64::from(offset) + 3 + 5;
            calls.push(Call {
                mode: entry(VtlEntry::VtlReturn),
                control: 0,
                input: Vec::new(),
                expect: Expect::HypervisorUd {
                    ip: stub_vmmcall(hvmodel_offsets().1),
                    result: 0,
                },
                what: "VtlReturn from VTL0 (the VTL-return stub)",
            });
            calls.push(Call {
                mode: entry(VtlEntry::VtlCall),
                control: 0,
                input: Vec::new(),
                expect: Expect::VtlCall { result: 0 },
                what: "VtlCall into VTL2 (the VTL-call stub)",
            });
            calls.push(post("PostMessage between"));
            // The 32-bit convention: control EDX:EAX — the result register pair holds the
            // control word at the call, and still does at the fault.
            calls.push(Call {
                mode: Mode {
                    compat32: true,
                    ..Mode::default()
                },
                expect: Expect::ParavisorUd {
                    ip: page,
                    result: code(HypercallCode::POST_MESSAGE),
                },
                what: "PostMessage from 32-bit compatibility mode",
                ..post("")
            });
        }
        Arch::Aarch64 => {
            // arm64 switches VTLs with hvc #2/#3 only (TLFS vsm.md); 0x12 as an SMCCC call
            // code is just a code the hypervisor does not implement.
            calls.push(Call {
                mode: Mode::default(),
                control: code(HypercallCode::VTL_RETURN),
                input: Vec::new(),
                expect: Expect::HypervisorStatus(HvStatus::INVALID_HYPERCALL_CODE),
                what: "the VtlReturn code through SMCCC",
            });
            // X0 keeps the SMCCC function id the kernel loads for every immediate.
            let func = u64::from(SMCCC_HV_FUNC_ID);
            calls.push(Call {
                mode: entry(VtlEntry::VtlCall),
                expect: Expect::VtlCall { result: func },
                what: "VtlCall into VTL2 (hvc #2)",
                ..post("")
            });
            calls.push(post("PostMessage between"));
            calls.push(Call {
                mode: Mode {
                    el0: true,
                    ..Mode::default()
                },
                expect: Expect::HypervisorUd {
                    ip: kernel_symbol(arch, "vtl0_hvc_el0_0"),
                    result: func,
                },
                what: "PostMessage from EL0",
                ..post("")
            });
            calls.push(Call {
                mode: entry(VtlEntry::VtlReturn),
                control: code(HypercallCode::POST_MESSAGE),
                input: Vec::new(),
                expect: Expect::HypervisorUd {
                    ip: kernel_symbol(arch, "vtl0_hvc_el1_3"),
                    result: func,
                },
                what: "hvc #3 (VtlReturn) from VTL0",
            });
        }
    }
    // Back in a 64-bit kernel / at EL1: served as usual.
    calls.push(post("PostMessage after"));
    calls
}

/// The 64-bit VTL call and return offsets the model publishes in VsmCodePageOffsets.
fn hvmodel_offsets() -> (u16, u16) {
    (
        mockhv::model::VTL_CALL_OFFSET,
        mockhv::model::VTL_RETURN_OFFSET,
    )
}

/// The architectural undefined-instruction exception as the kernel records it: x64 #UD
/// (vector 6, no error code, CR2 untouched: 0 in this kernel), arm64 ESR EC 0 ("unknown
/// reason") with IL set and no ISS; FAR is UNKNOWN for it (Arm ARM), so not compared.
fn assert_undefined(arch: Arch, fault: &Fault, what: &str) {
    match (arch, *fault) {
        (Arch::X86_64, Fault::X86 { vector, code, cr2 }) => {
            assert_eq!((vector, code, cr2), (6, 0, 0), "{what}: #UD");
        }
        (Arch::Aarch64, Fault::Arm64 { esr, .. }) => {
            assert_eq!(esr >> 26 & 0x3F, 0, "{what}: EC unknown reason");
            assert_eq!(esr >> 25 & 1, 1, "{what}: IL");
            assert_eq!(esr & 0x1FF_FFFF, 0, "{what}: no ISS");
            assert_eq!(esr, 0x200_0000, "{what}: nothing else set");
        }
        other => panic!("{what}: {other:?}"),
    }
}

/// The PendingEvent0 values the paravisor (VTL2) wrote into VTL0 with SetVpRegisters (header
/// target VTL at byte 12 pinned to VTL0, the first element's name at byte 16, its value at 32),
/// each with the VP whose VTL2 wrote it.
fn pending_event_writes(run: &KernelRun) -> Vec<(u32, u128)> {
    let pinned = HvInputVtl::target(Vtl::VTL0).into_bits();
    let header = size_of::<HvInputGetVpRegisters>();
    run.vtl2_calls(HypercallCode::SET_VP_REGISTERS)
        .into_iter()
        .filter(|r| r.status() == Some(HvStatus::SUCCESS) && r.input.get(12) == Some(&pinned))
        .filter_map(|r| {
            let (assoc, _) = HvRegisterAssoc::read_from_prefix(r.input.get(header..)?).ok()?;
            (assoc.name == HvRegisterName::PENDING_EVENT0).then_some((
                r.vp,
                u128::from(assoc.value.high) << 64 | u128::from(assoc.value.low),
            ))
        })
        .collect()
}

/// The architectural #UD as the paravisor's PendingEvent0 (x64 an exception, vector 6, no
/// error code; arm64 an exception with ESR EC 0 and IL).
fn paravisor_ud(arch: Arch) -> u128 {
    match arch {
        Arch::X86_64 => 0x0006_0001,
        Arch::Aarch64 => 0x0200_0000u128 << 64 | 1,
    }
}

/// VTL0's own hypercall records (what the hypervisor saw VTL0 call, and made of it).
fn vtl0_records(run: &KernelRun) -> Vec<&HypercallRecord> {
    run.run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Hypercall(r) if r.vtl == Vtl::VTL0 => Some(r),
            _ => None,
        })
        .collect()
}

/// Checks one call's record (and its fault-site line, `site`) against what the call expects;
/// whether the paravisor faulted it.
fn check_call(
    arch: Arch,
    c: &Call,
    record: &Record,
    site: Option<&FaultSite>,
    console: &str,
) -> bool {
    let what = format!("{arch:?} {}", c.what);
    let Record::Hypercall { control, outcome } = record else {
        panic!("{what}: {record:?}");
    };
    assert_eq!(*control, c.control, "{what}");
    match (c.expect, outcome) {
        (
            Expect::Completes,
            CallOutcome::Done {
                result,
                bad_canaries,
                ..
            },
        ) => {
            assert_eq!(*result, 0, "{what}: SUCCESS, no reps");
            assert!(bad_canaries.is_empty(), "{what}: {bad_canaries:?}");
        }
        (
            Expect::HypervisorStatus(status),
            CallOutcome::Done {
                result,
                bad_canaries,
                ..
            },
        ) => {
            assert_eq!(HvStatus(*result as u16), status, "{what}");
            assert!(bad_canaries.is_empty(), "{what}: {bad_canaries:?}");
        }
        (
            Expect::VtlCall { result: want },
            CallOutcome::Done {
                result,
                bad_canaries,
                ..
            },
        ) => {
            assert_eq!(*result, want, "{what}: the result register untouched");
            assert!(bad_canaries.is_empty(), "{what}: {bad_canaries:?}");
        }
        (
            Expect::HypervisorUd { ip, result } | Expect::ParavisorUd { ip, result },
            CallOutcome::Fault(fault),
        ) => {
            assert_undefined(arch, fault, &what);
            assert_eq!(
                site,
                Some(&FaultSite { ip, result }),
                "{what}: IP left on the call, the result register untouched"
            );
        }
        (_, outcome) => panic!("{what}: {outcome:?}\n{console}"),
    }
    if !matches!(outcome, CallOutcome::Fault(_)) {
        assert_eq!(site, None, "{what}: a fault site only for a fault");
    }
    matches!(c.expect, Expect::ParavisorUd { .. })
}

#[test]
fn ud_callers_take_the_exception_and_ordinary_calls_complete() {
    for arch in kernel::arches() {
        let calls = script(arch);
        let table = calls.iter().fold(Table::new(), |t, c| {
            t.hypercall_in(c.mode, c.control, &c.input, 0)
        });
        let run = kernel::run(arch, Some(Scenario::for_arch(arch)), Some(RELAY), &table);
        let console = &run.run.run.console;
        let records = run
            .results
            .records()
            .expect("one record per entry, in order");
        assert_eq!(records.len(), calls.len(), "{arch:?}: {console}");
        let sites: std::collections::BTreeMap<u32, FaultSite> =
            run.results.fault_sites.iter().copied().collect();
        let mut faulted = 0;
        for (i, (record, c)) in records.iter().zip(&calls).enumerate() {
            if check_call(arch, c, record, sites.get(&(i as u32)), console) {
                faulted += 1;
            }
        }

        // Who raised each exception. The paravisor: one PendingEvent0 write into VTL0 per call
        // it faults, each the architectural #UD (x64 exception, vector 6, no error code; arm64
        // an exception with ESR EC 0 and IL), nothing else set.
        let events = pending_event_writes(&run);
        assert_eq!(events.len(), faulted, "{arch:?}: {events:x?}");
        for (_, event) in events {
            assert_eq!(event, paravisor_ud(arch), "{arch:?}: the paravisor's #UD");
        }
        // The hypervisor: VTL0's VtlReturn is its #UD (the model's trace, never an intercept).
        let ours = vtl0_records(&run);
        let vtl_returns: Vec<&&HypercallRecord> = ours
            .iter()
            .filter(|r| r.code == HypercallCode::VTL_RETURN && r.abi != Abi::Smccc)
            .collect();
        assert_eq!(vtl_returns.len(), 1, "{arch:?}: {vtl_returns:?}");
        assert_eq!(vtl_returns[0].outcome, Outcome::Fault(HvFault::Ud));
        // What reached VTL2: intercepts of VTL0's calls — the ordinary PostMessages and, on
        // x64, the 32-bit one (reflected, then refused by the paravisor) — and the VTL call.
        let intercepts: Vec<&hvdef::HvMessage> = run
            .run
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Intercept { vtl, message, .. }
                    if *vtl == Vtl::VTL0
                        && message.header.message_type == HvMessageType::HYPERCALL_INTERCEPT =>
                {
                    Some(message)
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            intercepts.len(),
            3 + faulted,
            "{arch:?}: only the PostMessages (and the 32-bit one) reached VTL2"
        );
        let vtl_calls = run
            .run
            .events
            .iter()
            .filter(|e| matches!(e, Event::LowerVtlCall { vtl: Vtl::VTL0, .. }))
            .count();
        assert_eq!(vtl_calls, 1, "{arch:?}: the VTL call entered VTL2 once");
        if arch == Arch::Aarch64 {
            // EL0's `hvc` never reached the hypervisor at all: VTL0's PostMessages there are
            // the ordinary three.
            let posts = ours
                .iter()
                .filter(|r| r.code == HypercallCode::POST_MESSAGE)
                .count();
            assert_eq!(posts, 3, "{arch:?}: the EL0 call never exited");
        }
        // Only the ordinary calls reached the host; no VtlCall was made on VTL0's behalf.
        let posts = run.vtl2_calls(HypercallCode::POST_MESSAGE).len();
        assert_eq!(posts, 3, "{arch:?}: only the kernel's PostMessages relayed");
        assert_eq!(
            run.vtl2_calls(HypercallCode::VTL_CALL).len(),
            0,
            "{arch:?}: no VtlCall made on VTL0's behalf"
        );
    }
}

/// The VtlCall code through the ordinary entry is no VTL call. x64: the page's `vmmcall` at
/// offset 0 with RCX the code and RAX the page's address (the kernel's trampoline calls through
/// RAX), an invalid VTL control: the hypervisor's #UD (traced, VTL2 never entered). arm64: the
/// code through SMCCC `hvc #0`, a code the hypervisor does not implement (VTL switches are
/// `hvc #2`/`#3` only). Either way VTL2 is not entered and nothing reaches the host.
#[test]
fn the_vtl_call_code_through_the_ordinary_entry_is_no_vtl_call() {
    for arch in kernel::arches() {
        let table = Table::new().hypercall(code(HypercallCode::VTL_CALL), &[], 0);
        let run = kernel::run(arch, Some(Scenario::for_arch(arch)), Some(RELAY), &table);
        let console = &run.run.run.console;
        let records = run.results.records().expect("in order");
        let Record::Hypercall { outcome, .. } = &records[0] else {
            panic!("{arch:?}: {records:?}");
        };
        let record = vtl0_records(&run)
            .into_iter()
            .rfind(|r| r.code == HypercallCode::VTL_CALL)
            .unwrap_or_else(|| panic!("{arch:?}: VTL0's VtlCall traced\n{console}"))
            .clone();
        match arch {
            Arch::X86_64 => {
                let CallOutcome::Fault(fault) = outcome else {
                    panic!("{arch:?}: {outcome:?}\n{console}");
                };
                assert_undefined(arch, fault, "x64 VtlCall with a VTL control");
                assert_eq!(record.outcome, Outcome::Fault(HvFault::Ud));
                assert_eq!(record.control, kernel::proto(arch).hypercall_page());
            }
            Arch::Aarch64 => {
                let CallOutcome::Done {
                    result,
                    bad_canaries,
                    ..
                } = outcome
                else {
                    panic!("{arch:?}: {outcome:?}\n{console}");
                };
                assert_eq!(
                    HvStatus(*result as u16),
                    HvStatus::INVALID_HYPERCALL_CODE,
                    "{console}"
                );
                assert!(bad_canaries.is_empty(), "{bad_canaries:?}");
                assert_eq!(record.abi, Abi::Smccc);
                assert_eq!(record.status(), Some(HvStatus::INVALID_HYPERCALL_CODE));
            }
        }
        assert!(
            !run.run
                .events
                .iter()
                .any(|e| matches!(e, Event::LowerVtlCall { .. })),
            "{arch:?}: VTL2 never entered by a VTL call"
        );
        assert!(run.reflected_controls().is_empty(), "{arch:?}");
        assert!(run.vtl2_calls(HypercallCode::POST_MESSAGE).is_empty());
    }
}

/// Calls in a mode of their own on every VP: with 3 VPs each runs the whole script above on
/// itself (VP 0 starts the others). x64: the VTL-return and VTL-call stubs and a call from
/// 32-bit compatibility mode on every VP (on the VP's own stack, its fault caught in the VP's
/// own recovery record); arm64: `hvc #2`/`#3` and an EL0 call, then an EL0 store and load of a
/// slot of its own in the scratch page (one 2 MiB block that every VP's EL0 probes open). Each
/// record is as on one VP and printed by its VP, each fault-site line too (under the VP's
/// `vp N: ` prefix); each VP's #UDs, VTL call and relayed PostMessages are its own.
#[test]
fn every_vp_makes_calls_in_modes_of_its_own() {
    const VPS: u32 = 3;
    for arch in kernel::arches() {
        let calls = script(arch);
        let p = kernel::proto(arch);
        let slot = |vp: u32| p.scratch_page() + 0x100 + 8 * u64::from(vp);
        let value = |vp: u32| 0x5EED_0000_0000_0000 | u64::from(vp) << 8 | 0xA5;
        let el0_probes = if arch == Arch::Aarch64 { 2 } else { 0 };
        let per_vp = calls.len() + el0_probes;
        let table = (0..VPS).fold(Table::new(), |t, vp| {
            let t = calls.iter().fold(t, |t, c| {
                t.hypercall_in(c.mode, c.control, &c.input, 0).on_vp(vp)
            });
            if arch == Arch::Aarch64 {
                t.write_el0(slot(vp), 8, value(vp))
                    .on_vp(vp)
                    .read_el0(slot(vp), 8)
                    .on_vp(vp)
            } else {
                t
            }
        });
        let scenario = Scenario {
            vp_count: VPS,
            ..Scenario::for_arch(arch)
        };
        let run = kernel::run(arch, Some(scenario), Some(RELAY), &table);
        let console = &run.run.run.console;
        assert_eq!(run.results.started, vec![1, 2], "{arch:?}\n{console}");
        let records = run
            .results
            .by_index()
            .unwrap_or_else(|e| panic!("{arch:?}: {e}\n{console}"));
        assert_eq!(records.len(), VPS as usize * per_vp, "{arch:?}\n{console}");
        let sites: std::collections::BTreeMap<u32, FaultSite> =
            run.results.fault_sites.iter().copied().collect();
        let mut faulted = vec![0usize; VPS as usize];
        for (i, (vp, record)) in records.iter().enumerate() {
            let (want_vp, k) = ((i / per_vp) as u32, i % per_vp);
            assert_eq!(*vp, want_vp, "{arch:?}: entry {i} printed by its VP");
            let site = sites.get(&(i as u32));
            if let Some(c) = calls.get(k) {
                if check_call(arch, c, record, site, console) {
                    faulted[*vp as usize] += 1;
                }
                if site.is_some() && *vp != 0 {
                    let line = format!("vtl0: vp {vp}: {i} fault-site ");
                    assert!(
                        console.lines().any(|l| l.starts_with(&line)),
                        "{arch:?}: entry {i}'s fault site under its VP's prefix\n{console}"
                    );
                }
                continue;
            }
            assert_eq!(site, None, "{arch:?}: entry {i}");
            let want = if k == calls.len() {
                Record::Write {
                    gpa: slot(*vp),
                    width: 8,
                    value: value(*vp),
                    outcome: Ok(()),
                }
            } else {
                Record::Read {
                    gpa: slot(*vp),
                    width: 8,
                    outcome: Ok(value(*vp)),
                }
            };
            assert_eq!(*record, want, "{arch:?}: VP {vp}'s EL0 probe\n{console}");
        }
        let per_vp_faulted = faulted[0];
        assert!(
            faulted.iter().all(|&f| f == per_vp_faulted),
            "{arch:?}: {faulted:?}"
        );

        // Each VP's own: the paravisor's #UDs, the hypervisor's for VtlReturn, the VTL call,
        // the intercepts of its calls and the PostMessages relayed for it.
        let each =
            |n: usize| -> Vec<u32> { (0..VPS).flat_map(|vp| std::iter::repeat_n(vp, n)).collect() };
        let sorted = |mut v: Vec<u32>| {
            v.sort();
            v
        };
        let events = pending_event_writes(&run);
        assert!(
            events.iter().all(|&(_, e)| e == paravisor_ud(arch)),
            "{arch:?}: {events:x?}"
        );
        assert_eq!(
            sorted(events.iter().map(|e| e.0).collect()),
            each(per_vp_faulted),
            "{arch:?}: the paravisor's #UDs, each VP's own"
        );
        let ours = vtl0_records(&run);
        let vtl_returns: Vec<&&HypercallRecord> = ours
            .iter()
            .filter(|r| r.code == HypercallCode::VTL_RETURN && r.abi != Abi::Smccc)
            .collect();
        assert!(
            vtl_returns
                .iter()
                .all(|r| r.outcome == Outcome::Fault(HvFault::Ud)),
            "{arch:?}: {vtl_returns:?}"
        );
        assert_eq!(
            sorted(vtl_returns.iter().map(|r| r.vp).collect()),
            each(1),
            "{arch:?}: one VtlReturn #UD per VP"
        );
        let vtl_calls: Vec<u32> = run
            .run
            .events
            .iter()
            .filter_map(|e| match e {
                Event::LowerVtlCall { vp, vtl: Vtl::VTL0 } => Some(*vp),
                _ => None,
            })
            .collect();
        assert_eq!(sorted(vtl_calls), each(1), "{arch:?}: one VTL call per VP");
        let intercepts: Vec<u32> = run
            .run
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Intercept {
                    vp, vtl, message, ..
                } if *vtl == Vtl::VTL0
                    && message.header.message_type == HvMessageType::HYPERCALL_INTERCEPT =>
                {
                    Some(*vp)
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            sorted(intercepts),
            each(3 + per_vp_faulted),
            "{arch:?}: each VP's PostMessages (and 32-bit call) reached its VTL2"
        );
        if arch == Arch::Aarch64 {
            let posts: Vec<u32> = ours
                .iter()
                .filter(|r| r.code == HypercallCode::POST_MESSAGE)
                .map(|r| r.vp)
                .collect();
            assert_eq!(sorted(posts), each(3), "{arch:?}: no EL0 call ever exited");
        }
        let relayed: Vec<u32> = run
            .vtl2_calls(HypercallCode::POST_MESSAGE)
            .iter()
            .map(|r| r.vp)
            .collect();
        assert_eq!(
            sorted(relayed),
            each(3),
            "{arch:?}: each VP's PostMessages relayed"
        );
        assert_eq!(
            run.vtl2_calls(HypercallCode::VTL_CALL).len(),
            0,
            "{arch:?}: no VtlCall made on VTL0's behalf"
        );
    }
}
