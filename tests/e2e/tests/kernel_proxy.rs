//! The VTL0 hypercall proxy with a real VTL0: the VTL0 test kernel makes the calls under the
//! paravisor under the in-VM mock Hyper-V (`e2e::kernel`), with Hyper-V's routing — the
//! hypervisor serves VTL0's hypercalls itself and reflects to VTL2 only PostMessage /
//! SignalEvent to a connection it does not know and RetargetDeviceInterrupt for a device it
//! does not know (fact sheet §2). What VTL0 got back (status, output bytes, its registers),
//! which calls reached VTL2, and what the paravisor asked of the host (control words, exact
//! input bytes). The same cases as the former gdbstub suite `mock_proxy`'s routing test,
//! which drove a scripted VTL0.
#![forbid(unsafe_code)]

use e2e::kernel::{self, KernelRun};
use e2e::{
    get_registers_input, owned_device_scenario, post_message, retarget_input, signal_event_word,
    HOST_CONNECTION, OWNED_DEVICE, RELAY, RELAYED, RELAYED_EVENT, UNMAPPED,
};
use hvdef::{
    Control, HvInputVtl, HvInterceptType, HvRegisterName, HvRegisterVsmVpStatus, HvStatus,
    HypercallCode, HV_PARTITION_ID_SELF,
};
use mockhv::model::{Event, Scenario};
use vtl0::{CallOutcome, Record, Table};

/// One VTL0 call: control word, input bytes (the input page's, or the fast registers'),
/// output bytes to report; what VTL0 must get, and whether the hypervisor hands it to VTL2.
struct Case {
    control: Control,
    input: Vec<u8>,
    output_len: u32,
    /// The input and output GPAs the call names instead of the kernel's pages.
    gpas: Option<(u64, u64)>,
    status: HvStatus,
    reaches_vtl2: bool,
    what: &'static str,
}

fn case(
    control: Control,
    input: Vec<u8>,
    status: HvStatus,
    reaches_vtl2: bool,
    what: &'static str,
) -> Case {
    Case {
        control,
        input,
        output_len: 0,
        gpas: None,
        status,
        reaches_vtl2,
        what,
    }
}

fn code(c: HypercallCode) -> Control {
    Control::new().with_code(c)
}

/// Runs the cases as one table and checks each call's status, canaries and routing; returns
/// the run and each call's output bytes.
fn run_cases(
    arch: mockhv::qemu::Arch,
    scenario: Scenario,
    cases: &[Case],
) -> (KernelRun, Vec<Vec<u8>>) {
    let table = cases.iter().fold(Table::new(), |t, c| match c.gpas {
        None => t.hypercall(c.control.into_bits(), &c.input, c.output_len),
        Some((input, output)) => {
            t.hypercall_at(c.control.into_bits(), input, output, &c.input, c.output_len)
        }
    });
    let run = kernel::run(arch, Some(scenario), Some(RELAY), &table);
    assert_eq!(
        run.results.entries.len(),
        cases.len(),
        "{arch:?}: one record per call"
    );
    let mut outputs = Vec::new();
    for ((_, record), c) in run.results.entries.iter().zip(cases) {
        let Record::Hypercall {
            outcome:
                CallOutcome::Done {
                    result,
                    out,
                    bad_canaries,
                },
            ..
        } = record
        else {
            panic!("{arch:?} {}: {record:?}", c.what);
        };
        let status = HvStatus(*result as u16);
        assert_eq!(status, c.status, "{arch:?} {}", c.what);
        assert!(
            bad_canaries.is_empty(),
            "{arch:?} {}: {bad_canaries:?}",
            c.what
        );
        outputs.push(out.clone());
    }
    let reflected: Vec<u64> = cases
        .iter()
        .filter(|c| c.reaches_vtl2)
        .map(|c| c.control.into_bits())
        .collect();
    assert_eq!(
        run.reflected_controls(),
        reflected,
        "{arch:?}: the calls the hypervisor handed to VTL2, in order"
    );
    (run, outputs)
}

/// The routing cases: one VTL0 call of each kind Hyper-V routes one way or the other.
fn routing_cases() -> Vec<Case> {
    let relayed_in = post_message(RELAYED);
    let vp_status = get_registers_input(HvInputVtl::CURRENT, &[HvRegisterName::VSM_VP_STATUS]);
    let fast = |c: HypercallCode| code(c).with_fast(true);
    vec![
        case(
            code(HypercallCode::POST_MESSAGE),
            post_message(HOST_CONNECTION),
            HvStatus::SUCCESS,
            false,
            "PostMessage to a connection the host knows",
        ),
        case(
            code(HypercallCode::POST_MESSAGE),
            post_message(2),
            HvStatus::OPERATION_DENIED,
            false,
            "PostMessage to VTL2's port",
        ),
        case(
            code(HypercallCode::POST_MESSAGE),
            relayed_in.clone(),
            HvStatus::SUCCESS,
            true,
            "PostMessage relayed",
        ),
        case(
            fast(HypercallCode::SIGNAL_EVENT),
            signal_event_word(RELAYED_EVENT, 3).to_le_bytes().to_vec(),
            HvStatus::SUCCESS,
            true,
            "fast SignalEvent relayed",
        ),
        case(
            code(HypercallCode::POST_MESSAGE),
            post_message(UNMAPPED),
            HvStatus::INVALID_CONNECTION_ID,
            true,
            "PostMessage to an unmapped connection",
        ),
        case(
            fast(HypercallCode::SIGNAL_EVENT),
            signal_event_word(UNMAPPED, 0).to_le_bytes().to_vec(),
            HvStatus::INVALID_CONNECTION_ID,
            true,
            "SignalEvent to an unmapped connection",
        ),
        case(
            code(HypercallCode::RETARGET_DEVICE_INTERRUPT),
            retarget_input(HV_PARTITION_ID_SELF, OWNED_DEVICE),
            HvStatus::SUCCESS,
            true,
            "RetargetDeviceInterrupt relayed",
        ),
        case(
            code(HypercallCode::RETARGET_DEVICE_INTERRUPT),
            retarget_input(HV_PARTITION_ID_SELF, 0x31),
            HvStatus::INVALID_DEVICE_ID,
            true,
            "RetargetDeviceInterrupt for a device VTL0 does not own",
        ),
        // The hypervisor's own, for VTL0: never the paravisor's.
        Case {
            output_len: 16,
            ..case(
                code(HypercallCode::GET_VP_REGISTERS).with_rep_count(1),
                vp_status,
                HvStatus::SUCCESS,
                false,
                "VTL0 reads its VsmVpStatus",
            )
        },
        Case {
            output_len: 8,
            ..case(
                code(HypercallCode::EXT_QUERY_CAPABILITIES),
                Vec::new(),
                HvStatus::SUCCESS,
                false,
                "ExtQueryCapabilities",
            )
        },
        case(
            code(HypercallCode(0x0077)),
            Vec::new(),
            HvStatus::INVALID_HYPERCALL_CODE,
            false,
            "an unknown code",
        ),
        case(
            code(HypercallCode::POST_MESSAGE).with_nested(true),
            relayed_in,
            HvStatus::INVALID_HYPERCALL_INPUT,
            false,
            "VTL0's own nested bit",
        ),
    ]
}

#[test]
fn vtl0_calls_reach_vtl2_only_as_hyper_v_routes_them() {
    for arch in kernel::arches() {
        let mut relayed_out = post_message(RELAYED);
        relayed_out[..4].copy_from_slice(&HOST_CONNECTION.to_le_bytes());
        let cases = routing_cases();
        let scenario = owned_device_scenario(Scenario::for_arch(arch));
        let mask = scenario.extended_capabilities.into_bits();
        let (run, outputs) = run_cases(arch, scenario, &cases);

        let status = HvRegisterVsmVpStatus::from_bits(u64::from_le_bytes(
            outputs[8][..8].try_into().unwrap(),
        ));
        assert_eq!(status.active_vtl(), 0, "{arch:?}: VTL0 is told VTL0");
        assert_eq!(outputs[9], mask.to_le_bytes(), "{arch:?}: the host's mask");

        // Exactly what reached the host: the relayed message with the host's connection id,
        // the relayed event, the owned device. Nothing else of VTL0's was forwarded.
        let posts = run.vtl2_calls(HypercallCode::POST_MESSAGE);
        assert_eq!(posts.len(), 1, "{arch:?}");
        assert_eq!(
            posts[0].input, relayed_out,
            "{arch:?}: the bytes the host got"
        );
        assert!(!Control::from_bits(posts[0].control).nested());
        let events = run.vtl2_calls(HypercallCode::SIGNAL_EVENT);
        assert_eq!(events.len(), 1, "{arch:?}");
        assert_eq!(
            events[0].input,
            signal_event_word(HOST_CONNECTION, 3).to_le_bytes(),
            "{arch:?}: the event's connection rewritten, its flag kept"
        );
        assert!(Control::from_bits(events[0].control).fast());
        let retargets = run.vtl2_calls(HypercallCode::RETARGET_DEVICE_INTERRUPT);
        assert_eq!(retargets.len(), 1, "{arch:?}");
        assert_eq!(
            retargets[0].input,
            retarget_input(HV_PARTITION_ID_SELF, OWNED_DEVICE)
        );
        assert_eq!(
            run.vtl2_calls(HypercallCode::EXT_QUERY_CAPABILITIES).len(),
            1,
            "{arch:?}: the boot's own query only"
        );
        assert!(run.vtl2_calls(HypercallCode(0x0077)).is_empty());
        // The intercepts OpenHCL installs, never HvInterceptTypeHypercall.
        let installed: Vec<HvInterceptType> = run
            .vtl2_calls(HypercallCode::INSTALL_INTERCEPT)
            .iter()
            .filter(|r| r.status() == Some(HvStatus::SUCCESS))
            .map(|r| {
                use zerocopy::FromBytes;
                let (input, _) = hvdef::HvInputInstallIntercept::read_from_prefix(&r.input)
                    .expect("an install input");
                input.intercept_type
            })
            .collect();
        assert_eq!(
            installed,
            [
                HvInterceptType::UNKNOWN_SYNIC_CONNECTION,
                HvInterceptType::RETARGET_INTERRUPT_WITH_UNKNOWN_DEVICE_ID
            ],
            "{arch:?}"
        );
        assert!(
            run.run
                .events
                .iter()
                .all(|e| !matches!(e, Event::PartitionReset { .. })),
            "{arch:?}"
        );
    }
}

/// A host that reflects more than Hyper-V does (`Scenario::reflected_codes`: Hyper-V's trigger
/// for several codes is not public) gets the answer VTL0 would have had without a paravisor,
/// and nothing is forwarded: no entry, no forward. (`mock_proxy`'s case of the same name.)
#[test]
fn calls_without_an_entry_are_answered_defensively_and_never_forwarded() {
    for arch in kernel::arches() {
        let vp_status = get_registers_input(HvInputVtl::CURRENT, &[HvRegisterName::VSM_VP_STATUS]);
        // Not SetVpRegisters: the arm64 kernel sets its guest OS id with it, and a host that
        // reflected it would leave VTL0 without a hypercall interface (the paravisor refuses
        // it as it refuses the rest; the kernel then skips every call).
        let scenario = Scenario {
            reflected_codes: [
                HypercallCode::GET_VP_REGISTERS,
                HypercallCode::FLUSH_VIRTUAL_ADDRESS_SPACE,
                HypercallCode::ENABLE_PARTITION_VTL,
                HypercallCode::EXT_QUERY_CAPABILITIES,
                HypercallCode::EXT_GET_BOOT_ZEROED_MEMORY,
            ]
            .into(),
            ..Scenario::for_arch(arch)
        };
        let get = code(HypercallCode::GET_VP_REGISTERS).with_rep_count(1);
        let with_output = |len, c: Case| Case {
            output_len: len,
            ..c
        };
        let cases = vec![
            with_output(
                16,
                case(
                    get,
                    vp_status.clone(),
                    HvStatus::INVALID_HYPERCALL_CODE,
                    true,
                    "GetVpRegisters",
                ),
            ),
            case(
                code(HypercallCode::FLUSH_VIRTUAL_ADDRESS_SPACE),
                Vec::new(),
                HvStatus::INVALID_HYPERCALL_CODE,
                true,
                "FlushVirtualAddressSpace",
            ),
            case(
                code(HypercallCode::ENABLE_PARTITION_VTL),
                Vec::new(),
                HvStatus::ACCESS_DENIED,
                true,
                "EnablePartitionVtl",
            ),
            with_output(
                8,
                case(
                    code(HypercallCode::EXT_QUERY_CAPABILITIES),
                    Vec::new(),
                    HvStatus::SUCCESS,
                    true,
                    "ExtQueryCapabilities",
                ),
            ),
            case(
                code(HypercallCode::EXT_QUERY_CAPABILITIES).with_fast(true),
                Vec::new(),
                HvStatus::INVALID_PARAMETER,
                true,
                "fast ExtQueryCapabilities",
            ),
            Case {
                gpas: Some((0, e2e::layout(arch).vtl2)),
                ..case(
                    code(HypercallCode::EXT_QUERY_CAPABILITIES),
                    Vec::new(),
                    HvStatus::ACCESS_DENIED,
                    true,
                    "ExtQueryCapabilities into VTL2 memory",
                )
            },
            case(
                code(HypercallCode::EXT_GET_BOOT_ZEROED_MEMORY),
                Vec::new(),
                HvStatus::INVALID_HYPERCALL_CODE,
                true,
                "ExtGetBootZeroedMemory",
            ),
        ];
        let (run, outputs) = run_cases(arch, scenario, &cases);
        assert_eq!(
            outputs[3], [0; 8],
            "{arch:?}: no extended call is relayed, so none is offered"
        );
        // After the first intercept no GetVpRegisters with VTL0's input reaches the host.
        let events = &run.run.events;
        let first = events
            .iter()
            .position(|e| matches!(e, Event::Intercept { .. }))
            .expect("intercepts");
        let later_gets = events[first..]
            .iter()
            .filter(|e| {
                matches!(e, Event::Hypercall(h)
                    if h.vtl == hvdef::Vtl::VTL2
                        && h.code == HypercallCode::GET_VP_REGISTERS
                        && h.input == vp_status)
            })
            .count();
        assert_eq!(
            later_gets, 0,
            "{arch:?}: VTL0's GetVpRegisters was not forwarded"
        );
        for code in [
            HypercallCode::FLUSH_VIRTUAL_ADDRESS_SPACE,
            HypercallCode::ENABLE_PARTITION_VTL,
            HypercallCode::EXT_GET_BOOT_ZEROED_MEMORY,
        ] {
            assert!(run.vtl2_calls(code).is_empty(), "{arch:?} {code:?}");
        }
        // One line per call, naming VP and code.
        let lines: Vec<&str> = run
            .run
            .run
            .console
            .lines()
            .filter(|l| l.contains("reached VTL2"))
            .collect();
        assert_eq!(lines.len(), cases.len(), "{arch:?}: {lines:?}");
        assert!(
            lines[0].contains("0x0050") && lines[0].contains("on VP 0"),
            "{lines:?}"
        );
    }
}

/// A VTL0 that keeps making a call Hyper-V never reflects (here code 0x77, from a host that
/// does) gets its answer every time but costs the console 64 lines per VP, then one in 65536,
/// as memory refusals do: VTL0 chooses how often, and each line costs VTL2 about 2,500
/// instructions.
#[test]
fn unexpected_call_lines_are_bounded_per_vp() {
    for arch in kernel::arches() {
        let scenario = Scenario {
            reflected_codes: [HypercallCode(0x77)].into(),
            ..Scenario::for_arch(arch)
        };
        let table = (0..70).fold(Table::new(), |t, _| t.hypercall(0x77, &[], 0));
        let run = kernel::run(arch, Some(scenario), None, &table);
        let console = &run.run.run.console;
        let lines = console
            .lines()
            .filter(|l| l.contains("VTL0 hypercall 0x0077") && l.contains("reached VTL2"))
            .count();
        assert_eq!(lines, 64, "{arch:?}\n{console}");
        assert!(
            console.contains("(unexpected call 64 on this VP: from now on one line in 65536)"),
            "{arch:?}\n{console}"
        );
        let status = u64::from(HvStatus::INVALID_HYPERCALL_CODE.0);
        assert_eq!(run.results.entries.len(), 70);
        assert!(
            run.results.entries.iter().all(|(_, r)| matches!(r,
                Record::Hypercall { outcome: CallOutcome::Done { result, .. }, .. }
                    if *result == status)),
            "{arch:?}: {:?}",
            run.results.entries
        );
        assert_eq!(
            run.reflected_controls().len(),
            70,
            "{arch:?}: each reached VTL2"
        );
    }
}

/// A host that refuses the intercepts the paravisor asks for costs one line each, not the boot:
/// VTL0 then gets the hypervisor's own answer, and nothing reaches VTL2.
#[test]
fn a_refused_intercept_costs_a_line_and_vtl0_gets_the_hypervisors_answer() {
    use mockhv::model::{FaultAction, InjectedFault};
    for arch in kernel::arches() {
        let mut scenario = Scenario::for_arch(arch);
        for nth in [1, 2] {
            scenario.faults.push(InjectedFault {
                code: HypercallCode::INSTALL_INTERCEPT,
                nth,
                action: FaultAction::Status(hvdef::HvError::INVALID_PARAMETER),
                filter: Default::default(),
            });
        }
        let cases = vec![case(
            code(HypercallCode::POST_MESSAGE),
            post_message(RELAYED),
            HvStatus::INVALID_CONNECTION_ID,
            false,
            "PostMessage with no intercept installed",
        )];
        let (run, _) = run_cases(arch, scenario, &cases);
        let refusals = run
            .run
            .run
            .console
            .lines()
            .filter(|l| l.contains("the host refused the"))
            .count();
        assert_eq!(refusals, 2, "{arch:?}:\n{}", run.run.run.console);
    }
}

/// The relayed PostMessage under a host that times out: a host that hands TIMEOUT back leaves
/// VTL0's IP on the call (TLFS continuation), so the real VTL0 simply executes it again — the
/// hypervisor reflects it a second time and the relay is made again; a host that re-executes
/// the relay itself completes it within the first reflection. Either way VTL0 ends with
/// SUCCESS and the host got the relayed bytes each time.
#[test]
fn a_relayed_call_that_times_out() {
    use mockhv::model::{FaultAction, InjectedFault};
    for arch in kernel::arches() {
        for returned in [true, false] {
            let mut scenario = Scenario::for_arch(arch);
            // VTL0's own PostMessage is the hypervisor's first (it reflects it); the relay is
            // the second.
            scenario.faults.push(InjectedFault {
                code: HypercallCode::POST_MESSAGE,
                nth: 2,
                action: if returned {
                    FaultAction::ReturnedTimeout { reps: 0 }
                } else {
                    FaultAction::Timeout { reps: 0 }
                },
                filter: Default::default(),
            });
            let mut to_host = post_message(RELAYED);
            to_host[..4].copy_from_slice(&HOST_CONNECTION.to_le_bytes());
            let table = Table::new().hypercall(
                code(HypercallCode::POST_MESSAGE).into_bits(),
                &post_message(RELAYED),
                0,
            );
            let run = kernel::run(arch, Some(scenario), Some(RELAY), &table);
            let Record::Hypercall {
                outcome:
                    CallOutcome::Done {
                        result,
                        bad_canaries,
                        ..
                    },
                ..
            } = &run.results.entries[0].1
            else {
                panic!("{:?}", run.results.entries);
            };
            assert_eq!(
                HvStatus(*result as u16),
                HvStatus::SUCCESS,
                "{arch:?} {returned}"
            );
            assert!(bad_canaries.is_empty(), "{arch:?}: {bad_canaries:?}");
            let posts = run.vtl2_calls(HypercallCode::POST_MESSAGE);
            assert!(posts.iter().all(|p| p.input == to_host), "{arch:?}");
            assert_eq!(posts.len(), 2, "{arch:?} {returned}: relayed twice");
            let reflections = run.reflected_controls().len();
            assert_eq!(
                reflections,
                if returned { 2 } else { 1 },
                "{arch:?} {returned}: VTL0's call reached VTL2 once per execution"
            );
        }
    }
}

/// A host that refuses the SetVpRegisters completing a relayed call (VTL0's IP advance): the
/// VP says so in one line (VP, register, status) and halts for good, without retrying or
/// spinning (re-entering VTL0 would re-execute a call the host already took); the in-VM host
/// sees the halt (a `wfi` with interrupts masked) and the run fails. (`mock_proxy`'s
/// `a_refused_ip_advance_stops_that_vp_only`, on one VP: VTL0 runs on VP 0 only so far.)
#[test]
fn a_refused_ip_advance_halts_the_vp() {
    use hvdef::{HvError, Vtl};
    use mockhv::model::{FaultAction, FaultFilter, InjectedFault};
    for arch in kernel::arches() {
        let mut to_host = post_message(RELAYED);
        to_host[..4].copy_from_slice(&HOST_CONNECTION.to_le_bytes());
        let ip = e2e::ip_register(arch);
        // x86: a host without the register page, so that the IP advance is a SetVpRegisters
        // (with the page it costs no host call to refuse).
        let mut scenario = Scenario {
            register_page: false,
            ..Scenario::for_arch(arch)
        };
        scenario.faults.push(InjectedFault {
            code: HypercallCode::SET_VP_REGISTERS,
            nth: 1,
            action: FaultAction::Status(HvError::ACCESS_DENIED),
            filter: FaultFilter {
                vp: Some(0),
                register: Some(ip),
            },
        });
        let post = code(HypercallCode::POST_MESSAGE).into_bits();
        let table = Table::new()
            .hypercall(post, &post_message(RELAYED), 0)
            // Never made: VP 0 is halted by then.
            .hypercall(post, &post_message(RELAYED), 0);
        let run = kernel::boot(arch, Some(scenario), Some(RELAY), &table);
        let console = &run.run.run.console;
        assert_eq!(
            run.run.run.outcome,
            mockhv::qemu::Outcome::Fail,
            "{}",
            run.run.summary()
        );
        assert_eq!(run.run.halted_vps(), [0].into(), "{arch:?}\n{console}");
        assert!(
            run.results.entries.is_empty(),
            "{arch:?}: VTL0 never got an answer"
        );
        assert!(!console.contains("PANIC"), "{arch:?}: no panic\n{console}");
        let name = match arch {
            mockhv::qemu::Arch::X86_64 => "RIP",
            mockhv::qemu::Arch::Aarch64 => "XPC",
        };
        let line = format!(
            "[vp0] ERROR VP 0: SetVpRegisters of VTL0's {name} ({:#x}) refused with \
             HV_STATUS_ACCESS_DENIED",
            ip.0
        );
        assert_eq!(
            console.lines().filter(|l| l.starts_with(&line)).count(),
            1,
            "{arch:?}: one line naming the VP, the register and the status\n{console}"
        );
        let posts = run.vtl2_calls(HypercallCode::POST_MESSAGE);
        assert_eq!(posts.len(), 1, "{arch:?}");
        assert_eq!(posts[0].input, to_host);
        // No retry: one refused SetVpRegisters after the relay, and nothing more.
        let after: Vec<_> = run
            .run
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Hypercall(r) if r.vp == 0 && r.vtl == Vtl::VTL2 => Some(r),
                _ => None,
            })
            .skip_while(|r| r.code != HypercallCode::POST_MESSAGE)
            .skip(1)
            .map(|r| (r.code, r.status()))
            .collect();
        assert_eq!(
            after,
            [(
                HypercallCode::SET_VP_REGISTERS,
                Some(HvStatus::ACCESS_DENIED)
            )],
            "{arch:?}: VP 0's calls after its relay"
        );
    }
}

/// The host calls VP 0's VTL2 makes while serving VTL0 (after the first intercept), VtlReturn
/// aside, with the register each SetVpRegisters names.
fn calls_while_serving(run: &KernelRun) -> Vec<(HypercallCode, Option<u32>)> {
    let events = &run.run.events;
    let first = events
        .iter()
        .position(|e| matches!(e, Event::Intercept { .. }))
        .expect("intercepts");
    events[first..]
        .iter()
        .filter_map(|e| match e {
            Event::Hypercall(r)
                if r.vp == 0
                    && r.vtl == hvdef::Vtl::VTL2
                    && r.code != HypercallCode::VTL_RETURN =>
            {
                let name = (r.code == HypercallCode::SET_VP_REGISTERS)
                    .then(|| u32::from_le_bytes(r.input[16..20].try_into().unwrap()));
                Some((r.code, name))
            }
            _ => None,
        })
        .collect()
}

/// x86's VTL register page (the host offers it by default, `Scenario::register_page`): the
/// paravisor maps one per VP and moves VTL0's RIP through it, so a relayed call costs exactly
/// its one host call and a refused one none. Without the page (a host without it, or
/// `pv.regpage=off`) every completed call adds one SetVpRegisters of RIP, the fallback. arm64
/// has no register page: every call adds the SetVpRegisters of PC. VTL0 gets the same answers
/// every way.
#[test]
fn the_register_page_moves_vtl0s_ip_without_a_host_call() {
    let post = code(HypercallCode::POST_MESSAGE).into_bits();
    let table = Table::new()
        .hypercall(post, &post_message(RELAYED), 0)
        .hypercall(post, &post_message(UNMAPPED), 0)
        .hypercall(post, &post_message(RELAYED), 0);
    for arch in kernel::arches() {
        let ip = e2e::ip_register(arch).0;
        let x86 = arch == mockhv::qemu::Arch::X86_64;
        let off = Scenario {
            register_page: false,
            ..Scenario::for_arch(arch)
        };
        for (scenario, append, page) in [
            (Scenario::for_arch(arch), RELAY.to_string(), x86),
            (off, RELAY.to_string(), false),
            (
                Scenario::for_arch(arch),
                format!("{RELAY} pv.regpage=off"),
                false,
            ),
        ] {
            let what = format!("{arch:?} {append:?} host page {}", scenario.register_page);
            let run = kernel::run(arch, Some(scenario), Some(&append), &table);
            let statuses: Vec<u64> = run
                .results
                .entries
                .iter()
                .map(|(_, r)| match r {
                    Record::Hypercall {
                        outcome: CallOutcome::Done { result, .. },
                        ..
                    } => *result,
                    other => panic!("{what}: {other:?}"),
                })
                .collect();
            let (ok, unmapped) = (
                u64::from(HvStatus::SUCCESS.0),
                u64::from(HvStatus::INVALID_CONNECTION_ID.0),
            );
            assert_eq!(statuses, [ok, unmapped, ok], "{what}");
            let post = (HypercallCode::POST_MESSAGE, None);
            let set_ip = (HypercallCode::SET_VP_REGISTERS, Some(ip));
            let expected = if page {
                vec![post, post]
            } else {
                vec![post, set_ip, set_ip, post, set_ip]
            };
            assert_eq!(calls_while_serving(&run), expected, "{what}");
            let console = &run.run.run.console;
            if x86 {
                let line = if page {
                    "VTL register page mapped at "
                } else if append.contains("pv.regpage=off") {
                    ""
                } else {
                    "the host offers no VTL register page (HV_STATUS_INVALID_PARAMETER): VTL0's \
                     IP moves by SetVpRegisters"
                };
                assert!(console.contains(line), "{what}: {line:?}\n{console}");
            }
            if !page {
                assert!(!console.contains("VTL register page mapped"), "{what}");
            }
        }
    }
}

/// A nested host (x86 CPUID 0x40000004 EAX bit 12, arm64 HvRegisterFeaturesInfo bit 4): the
/// relayed PostMessage and SignalEvent, the calls its L0 owns, go out with HV_HYPERCALL_NESTED
/// (bit 31); the paravisor's own GetVpRegisters never. (`mock_nested`'s case of the same name.)
#[test]
fn a_nested_host_gets_the_l0_calls_with_bit_31() {
    for arch in kernel::arches() {
        let get = code(HypercallCode::GET_VP_REGISTERS).with_rep_count(1);
        let cases = vec![
            case(
                code(HypercallCode::POST_MESSAGE),
                post_message(RELAYED),
                HvStatus::SUCCESS,
                true,
                "PostMessage relayed",
            ),
            case(
                code(HypercallCode::SIGNAL_EVENT).with_fast(true),
                signal_event_word(RELAYED_EVENT, 0).to_le_bytes().to_vec(),
                HvStatus::SUCCESS,
                true,
                "fast SignalEvent relayed",
            ),
            Case {
                output_len: 16,
                ..case(
                    get,
                    get_registers_input(HvInputVtl::CURRENT, &[HvRegisterName::VP_INDEX]),
                    HvStatus::SUCCESS,
                    false,
                    "VTL0's GetVpRegisters, the hypervisor's own",
                )
            },
        ];
        let scenario = Scenario {
            nested: true,
            ..Scenario::for_arch(arch)
        };
        let (run, _) = run_cases(arch, scenario, &cases);
        for code in [HypercallCode::POST_MESSAGE, HypercallCode::SIGNAL_EVENT] {
            let sent = run.vtl2_calls(code);
            assert_eq!(sent.len(), 1, "{arch:?} {code:?} forwarded once");
            assert_ne!(
                sent[0].control & (1 << 31),
                0,
                "{arch:?} {code:?} carries HV_HYPERCALL_NESTED"
            );
        }
        let gets = run.vtl2_calls(HypercallCode::GET_VP_REGISTERS);
        assert!(!gets.is_empty());
        assert!(
            gets.iter().all(|r| r.control & (1 << 31) == 0),
            "{arch:?}: GetVpRegisters is never nested"
        );
    }
}

/// HvExtCallQueryCapabilities needs the EnableExtendedHypercalls privilege (TLFS; KVM's
/// hyperv_features selftest expects ACCESS_DENIED without it, before any other check, fast form
/// included). VTL0 holds the partition's privileges and no more: a host that reflects the query
/// gets the same answer from the paravisor as VTL0 gets from the hypervisor.
/// (`mock_proxy`'s case of the same name.)
#[test]
fn extended_query_obeys_the_partition_privilege() {
    for arch in kernel::arches() {
        let mut scenario = Scenario::for_arch(arch);
        scenario.privileges.set_enable_extended_hypercalls(false);
        let query = code(HypercallCode::EXT_QUERY_CAPABILITIES);
        let cases = |reflected: bool| {
            vec![
                Case {
                    output_len: 8,
                    ..case(
                        query,
                        Vec::new(),
                        HvStatus::ACCESS_DENIED,
                        reflected,
                        "memory form",
                    )
                },
                case(
                    query.with_fast(true),
                    Vec::new(),
                    HvStatus::ACCESS_DENIED,
                    reflected,
                    "fast",
                ),
            ]
        };
        run_cases(arch, scenario.clone(), &cases(false));
        scenario.reflected_codes = [HypercallCode::EXT_QUERY_CAPABILITIES].into();
        run_cases(arch, scenario, &cases(true));
    }
}

/// Every outcome leaves VTL0's registers as the ABI says (the kernel's canaries: X18-X30 always,
/// X4-X17 on memory-form calls), under either reading of arm64 X29/X30 (private as the TLFS
/// lists them, or shared as Linux and OpenHCL treat them: `Scenario::arm64_fp_lr_shared`).
/// (`mock_registers`' `*_keeps_every_shared_register_after_every_outcome` and
/// `arm64_vtl0_keeps_x29_x30_when_they_are_shared`.)
#[test]
fn vtl0_keeps_its_registers_after_every_outcome() {
    for arch in kernel::arches() {
        for fp_lr_shared in [false, true] {
            let scenario = Scenario {
                arm64_fp_lr_shared: fp_lr_shared,
                ..owned_device_scenario(Scenario::for_arch(arch))
            };
            // run_cases checks every call's canaries.
            run_cases(arch, scenario, &routing_cases());
        }
    }
}

/// Every relayed call code in each form it can take, on a flat or a nested host: PostMessage
/// (memory; 272 bytes never fit a fast block), SignalEvent fast and memory-based,
/// RetargetDeviceInterrupt memory-based and fast with a 3-qword sparse VP set as its variable
/// header (x64 XMM fast input goes to the host memory-based: the paravisor is soft-float). The
/// host gets each byte for byte with exactly the control word the TLFS and the relay table say
/// (HV_HYPERCALL_NESTED on the L0's SynIC calls under a nested host), and VTL0 gets SUCCESS
/// with no reps (the whole result word 0). (`mock_nested`'s
/// `every_relayed_form_reaches_the_host_byte_for_byte`; VTL0's input memory and registers are
/// the kernel's canaries here.)
#[test]
fn every_relayed_form_reaches_the_host_byte_for_byte() {
    use mockhv::qemu::Arch;
    for arch in kernel::arches() {
        for nested in [false, true] {
            let what = format!("{arch:?}, nested host {nested}");
            let payload: Vec<u8> = (0..240u32).map(|i| (i * 7 + 3) as u8).collect();
            let message = e2e::post_message_with(RELAYED, &payload);
            let mut message_at_host = message.clone();
            message_at_host[..4].copy_from_slice(&HOST_CONNECTION.to_le_bytes());
            let event = |flag| e2e::signal_event_input(RELAYED_EVENT, flag);
            let event_at_host = |flag| e2e::signal_event_input(HOST_CONNECTION, flag);
            let retarget = e2e::retarget_sparse_input(OWNED_DEVICE);
            let post = code(HypercallCode::POST_MESSAGE);
            let signal = code(HypercallCode::SIGNAL_EVENT);
            let retarget_code =
                code(HypercallCode::RETARGET_DEVICE_INTERRUPT).with_variable_header_size(3);
            // (VTL0's control, its input, the control and input the host must get)
            let forms: Vec<(Control, Vec<u8>, Control, Vec<u8>)> = vec![
                (post, message, post.with_nested(nested), message_at_host),
                (
                    signal.with_fast(true),
                    event(3),
                    signal.with_fast(true).with_nested(nested),
                    event_at_host(3),
                ),
                (
                    signal,
                    event(5),
                    signal.with_nested(nested),
                    event_at_host(5),
                ),
                (
                    retarget_code,
                    retarget.clone(),
                    retarget_code,
                    retarget.clone(),
                ),
                (
                    retarget_code.with_fast(true),
                    retarget.clone(),
                    retarget_code.with_fast(arch == Arch::Aarch64),
                    retarget,
                ),
            ];
            let table = forms
                .iter()
                .fold(Table::new(), |t, (control, input, _, _)| {
                    t.hypercall(control.into_bits(), input, 0)
                });
            let scenario = owned_device_scenario(Scenario {
                nested,
                ..Scenario::for_arch(arch)
            });
            let run = kernel::run(arch, Some(scenario), Some(RELAY), &table);
            if std::env::var_os("DBG").is_some() {
                eprintln!("{:#?}", run.results.entries);
            }
            // The host: exactly one call per form, in order per code.
            let mut seen: std::collections::BTreeMap<HypercallCode, usize> = Default::default();
            for (_, _, control, input) in &forms {
                let c = control.code();
                let n = seen.entry(c).or_default();
                let sent = run.vtl2_calls(c);
                let r = sent
                    .get(*n)
                    .unwrap_or_else(|| panic!("{what} {c:?} #{n}: not relayed"));
                *n += 1;
                assert_eq!(
                    Control::from_bits(r.control),
                    *control,
                    "{what} {c:?}: the control word"
                );
                assert_eq!(&r.input, input, "{what} {c:?}: the input at the host");
            }
            for (c, n) in seen {
                assert_eq!(run.vtl2_calls(c).len(), n, "{what} {c:?}: nothing else");
            }
            assert_eq!(run.reflected_controls().len(), forms.len(), "{what}");
            for ((_, record), (control, ..)) in run.results.entries.iter().zip(&forms) {
                let Record::Hypercall {
                    outcome:
                        CallOutcome::Done {
                            result,
                            bad_canaries,
                            ..
                        },
                    ..
                } = record
                else {
                    panic!("{what}: {record:?}");
                };
                assert_eq!(*result, 0, "{what} {control:?}: the whole result word");
                assert!(
                    bad_canaries.is_empty(),
                    "{what} {control:?}: {bad_canaries:?}"
                );
            }
        }
    }
}

/// The paravisor's hypercall pages are per VP: with 4 VPs, VTL0 on each (VP 0 starts the
/// others with HvCallStartVirtualProcessor, which the hypervisor serves itself) makes a
/// PostMessage to a relayed connection and a fast SignalEvent with its own flag. All 8 succeed
/// with every canary intact, each was handed to VTL2 on its own VP exactly once (a call whose
/// IP did not move would be made, and reflected, again), and the host receives exactly 4
/// PostMessages and 4 SignalEvents from VTL2, one per VP 0..3: the messages each from a
/// different VTL2 input page, the events each with its VP's flag. The gdbstub suite's
/// `mock_proxy` case of the same name scripts this.
#[test]
fn four_vps_relay_at_once_each_on_its_own_pages() {
    const VPS: u32 = 4;
    for arch in kernel::arches() {
        let post = code(HypercallCode::POST_MESSAGE);
        let signal = code(HypercallCode::SIGNAL_EVENT).with_fast(true);
        let table = (0..VPS).fold(Table::new(), |t, vp| {
            t.hypercall(post.into_bits(), &post_message(RELAYED), 0)
                .on_vp(vp)
                .hypercall(
                    signal.into_bits(),
                    &signal_event_word(RELAYED_EVENT, vp as u16).to_le_bytes(),
                    0,
                )
                .on_vp(vp)
        });
        let scenario = Scenario {
            vp_count: VPS,
            ..Scenario::for_arch(arch)
        };
        let run = kernel::run(arch, Some(scenario), Some(RELAY), &table);
        let console = &run.run.run.console;
        assert_eq!(run.results.started, vec![1, 2, 3], "{arch:?}\n{console}");
        let records = run
            .results
            .by_index()
            .unwrap_or_else(|e| panic!("{arch:?}: {e}\n{console}"));
        assert_eq!(records.len(), 8, "{arch:?}");
        for (i, (vp, record)) in records.iter().enumerate() {
            let control = if i % 2 == 0 { post } else { signal };
            let want = Record::Hypercall {
                control: control.into_bits(),
                outcome: CallOutcome::Done {
                    result: 0,
                    out: Vec::new(),
                    bad_canaries: Vec::new(),
                },
            };
            assert_eq!(*vp, i as u32 / 2, "{arch:?}: entry {i} printed by its VP");
            assert_eq!(*record, want, "{arch:?}: entry {i}");
        }

        // VTL0's starts were the hypervisor's: three calls, all SUCCESS, none reflected.
        let starts: Vec<_> = kernel::calls(&run.run.events, HypercallCode::START_VIRTUAL_PROCESSOR)
            .into_iter()
            .filter(|r| r.vtl == hvdef::Vtl::VTL0)
            .collect();
        assert_eq!(starts.len(), 3, "{arch:?}");
        for (n, r) in starts.iter().enumerate() {
            assert_eq!((r.vp, r.status()), (0, Some(HvStatus::SUCCESS)), "{arch:?}");
            assert_eq!(
                r.input[8..13],
                [n as u8 + 1, 0, 0, 0, 0],
                "{arch:?}: VP, VTL0"
            );
        }

        // Each VP's two calls reached VTL2 on that VP, once each.
        let mut reflected: Vec<(u32, u64)> = run
            .run
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Intercept {
                    vp, vtl, message, ..
                } if *vtl == hvdef::Vtl::VTL0
                    && message.header.message_type == hvdef::HvMessageType::HYPERCALL_INTERCEPT =>
                {
                    Some(*vp)
                }
                _ => None,
            })
            .zip(run.reflected_controls())
            .collect();
        reflected.sort();
        let want: Vec<(u32, u64)> = (0..VPS)
            .flat_map(|vp| [(vp, post.into_bits()), (vp, signal.into_bits())])
            .collect();
        assert_eq!(reflected, want, "{arch:?}: reflected per VP, once each");

        // What the host got from VTL2: one relayed message and one event per VP, the messages
        // from four different input pages.
        let mut relayed_out = post_message(RELAYED);
        relayed_out[..4].copy_from_slice(&HOST_CONNECTION.to_le_bytes());
        let posts = run.vtl2_calls(HypercallCode::POST_MESSAGE);
        assert_eq!(posts.len(), 4, "{arch:?}");
        assert!(posts.iter().all(|r| r.input == relayed_out), "{arch:?}");
        let mut pages: Vec<(u32, u64)> = posts.iter().map(|r| (r.vp, r.input_gpa)).collect();
        pages.sort();
        assert_eq!(
            pages.iter().map(|p| p.0).collect::<Vec<_>>(),
            [0, 1, 2, 3],
            "{arch:?}: one message from each VP"
        );
        let mut gpas: Vec<u64> = pages.iter().map(|p| p.1).collect();
        gpas.sort();
        gpas.dedup();
        assert_eq!(
            gpas.len(),
            4,
            "{arch:?}: each VP relays from its own input page {pages:x?}"
        );
        let mut events: Vec<(u32, Vec<u8>)> = run
            .vtl2_calls(HypercallCode::SIGNAL_EVENT)
            .iter()
            .map(|r| (r.vp, r.input.clone()))
            .collect();
        events.sort();
        let want: Vec<(u32, Vec<u8>)> = (0..VPS)
            .map(|vp| {
                let word = signal_event_word(HOST_CONNECTION, vp as u16);
                (vp, word.to_le_bytes().to_vec())
            })
            .collect();
        assert_eq!(events, want, "{arch:?}: each VP's event with its own flag");
    }
}

/// A VP the partition does not have: VP 0's HvCallStartVirtualProcessor of it is the
/// hypervisor's INVALID_VP_INDEX (TLFS), the kernel says so naming the VP and fails the run
/// before any entry runs.
#[test]
fn starting_a_vp_the_partition_lacks_fails_by_name() {
    for arch in kernel::arches() {
        let table = Table::new()
            .hypercall(
                code(HypercallCode::POST_MESSAGE).into_bits(),
                &post_message(RELAYED),
                0,
            )
            .on_vp(2);
        let scenario = Scenario {
            vp_count: 2,
            ..Scenario::for_arch(arch)
        };
        let run = kernel::boot(arch, Some(scenario), Some(RELAY), &table);
        let console = &run.run.run.console;
        assert!(!run.run.run.passed(), "{arch:?}\n{console}");
        assert!(
            console.contains("vtl0: starting vp 2 failed: result=0xe\n"),
            "{arch:?}\n{console}"
        );
        assert_eq!(run.results.done, None, "{arch:?}");
        assert!(run.results.entries.is_empty(), "{arch:?}: no entry ran");
        let starts = kernel::calls(&run.run.events, HypercallCode::START_VIRTUAL_PROCESSOR);
        let vtl0: Vec<_> = starts
            .iter()
            .filter(|r| r.vtl == hvdef::Vtl::VTL0)
            .collect();
        assert_eq!(vtl0.len(), 1, "{arch:?}");
        assert_eq!(
            vtl0[0].status(),
            Some(HvStatus::INVALID_VP_INDEX),
            "{arch:?}"
        );
    }
}
