//! The VTL0 hypercall proxy under the mock hypervisor, with Hyper-V's routing: the hypervisor
//! serves VTL0's hypercalls itself and reflects to VTL2 only PostMessage / SignalEvent to a
//! connection it does not know and RetargetDeviceInterrupt for a device it does not know
//! (fact sheet §2). What VTL0 sees afterwards (status, IP, output bytes), whether the call
//! reached VTL2 at all, and what the paravisor asked of the host (control words, exact input
//! bytes) are checked against the TLFS, OpenVMM's VTL2 emulation and the relay table.

use e2e::{
    call, code, get_registers_input, layout, owned_device_scenario, post_message, retarget_input,
    signal_event_word, HOST_CONNECTION, OWNED_DEVICE, RELAYED, RELAYED_EVENT, UNMAPPED,
};
use hvdef::{
    Control, HvError, HvInputVtl, HvInterceptType, HvRegisterName, HvRegisterVsmVpStatus, HvStatus,
    HypercallCode, Vtl, HV_PARTITION_ID_SELF,
};
use mockhv::model::{
    Event, FaultAction, FaultFilter, HypercallIntercept, InjectedFault, Scenario, Vtl0Call,
    Vtl0Result,
};
use mockhv::qemu::Arch;
use mockhv::session::Report;

use e2e::{results, vtl2_calls as forwarded};

/// `post_message(id)` with the connection id replaced: what the host must receive for a relayed
/// message (everything else byte for byte as VTL0 wrote it).
fn relayed_message(vtl0_id: u32) -> (Vec<u8>, Vec<u8>) {
    let from_vtl0 = post_message(vtl0_id);
    let mut to_host = from_vtl0.clone();
    to_host[..4].copy_from_slice(&HOST_CONNECTION.to_le_bytes());
    (from_vtl0, to_host)
}

/// VTL0's memory-based HvExtCallQueryCapabilities into its output page.
fn ext_query(arch: Arch) -> Vtl0Call {
    let l = layout(arch);
    call(
        arch,
        code(HypercallCode::EXT_QUERY_CAPABILITIES),
        0,
        l.output,
    )
    .with_output(l.output, 8)
}

/// What VTL0 had in RAX before a call that times out: a TLFS continuation leaves it alone.
const RAX_BEFORE: u64 = 0x5EED_0000_0000_0078;

/// One scripted call: what VTL0 must see, and whether the hypervisor hands it to VTL2.
struct Case {
    call: Vtl0Call,
    status: HvStatus,
    reaches_vtl2: bool,
    what: &'static str,
}

fn case(call: Vtl0Call, status: HvStatus, reaches_vtl2: bool, what: &'static str) -> Case {
    Case {
        call,
        status,
        reaches_vtl2,
        what,
    }
}

fn run_cases(scenario: Scenario, cases: Vec<Case>) -> (Report, Vec<Vtl0Result>) {
    let arch = scenario.arch;
    let expected: Vec<(HvStatus, bool, &str)> = cases
        .iter()
        .map(|c| (c.status, c.reaches_vtl2, c.what))
        .collect();
    let mut report = e2e::run_vtl0(scenario, cases.into_iter().map(|c| c.call).collect());
    let results = results(&mut report);
    assert_eq!(
        results.len(),
        expected.len(),
        "{arch:?}: one result per call"
    );
    for (r, (status, reaches, what)) in results.iter().zip(expected) {
        assert_eq!(r.status(), status, "{arch:?} {what}");
        assert_eq!(r.reached_vtl2, reaches, "{arch:?} {what}: reached VTL2");
        assert!(r.advanced(), "{arch:?} {what}: the IP moved past the call");
    }
    (report, results)
}

#[test]
fn vtl0_calls_reach_vtl2_only_as_hyper_v_routes_them() {
    for arch in Arch::ALL {
        let l = layout(arch);
        let (relayed_in, relayed_out) = relayed_message(RELAYED);
        let vp_status = get_registers_input(HvInputVtl::CURRENT, &[HvRegisterName::VSM_VP_STATUS]);
        let cases = vec![
            case(
                call(arch, code(HypercallCode::POST_MESSAGE), l.input, 0)
                    .with_memory(l.input, &post_message(HOST_CONNECTION)),
                HvStatus::SUCCESS,
                false,
                "PostMessage to a connection the host knows",
            ),
            case(
                call(arch, code(HypercallCode::POST_MESSAGE), l.input, 0)
                    .with_memory(l.input, &post_message(2)),
                HvStatus::OPERATION_DENIED,
                false,
                "PostMessage to VTL2's port",
            ),
            case(
                call(arch, code(HypercallCode::POST_MESSAGE), l.input, 0)
                    .with_memory(l.input, &relayed_in),
                HvStatus::SUCCESS,
                true,
                "PostMessage relayed",
            ),
            case(
                call(
                    arch,
                    code(HypercallCode::SIGNAL_EVENT).with_fast(true),
                    signal_event_word(RELAYED_EVENT, 3),
                    0,
                ),
                HvStatus::SUCCESS,
                true,
                "fast SignalEvent relayed",
            ),
            case(
                call(arch, code(HypercallCode::POST_MESSAGE), l.input, 0)
                    .with_memory(l.input, &post_message(UNMAPPED)),
                HvStatus::INVALID_CONNECTION_ID,
                true,
                "PostMessage to an unmapped connection",
            ),
            case(
                call(
                    arch,
                    code(HypercallCode::SIGNAL_EVENT).with_fast(true),
                    signal_event_word(UNMAPPED, 0),
                    0,
                ),
                HvStatus::INVALID_CONNECTION_ID,
                true,
                "SignalEvent to an unmapped connection",
            ),
            case(
                call(
                    arch,
                    code(HypercallCode::RETARGET_DEVICE_INTERRUPT),
                    l.input,
                    0,
                )
                .with_memory(l.input, &retarget_input(HV_PARTITION_ID_SELF, OWNED_DEVICE)),
                HvStatus::SUCCESS,
                true,
                "RetargetDeviceInterrupt relayed",
            ),
            case(
                call(
                    arch,
                    code(HypercallCode::RETARGET_DEVICE_INTERRUPT),
                    l.input,
                    0,
                )
                .with_memory(l.input, &retarget_input(HV_PARTITION_ID_SELF, 0x31)),
                HvStatus::INVALID_DEVICE_ID,
                true,
                "RetargetDeviceInterrupt for a device VTL0 does not own",
            ),
            // The hypervisor's own, for VTL0: never the paravisor's.
            case(
                call(
                    arch,
                    code(HypercallCode::GET_VP_REGISTERS).with_rep_count(1),
                    l.input,
                    l.output,
                )
                .with_memory(l.input, &vp_status)
                .with_output(l.output, 16),
                HvStatus::SUCCESS,
                false,
                "VTL0 reads its VsmVpStatus",
            ),
            case(
                ext_query(arch),
                HvStatus::SUCCESS,
                false,
                "ExtQueryCapabilities",
            ),
            case(
                call(arch, code(HypercallCode(0x0077)), 0, 0),
                HvStatus::INVALID_HYPERCALL_CODE,
                false,
                "an unknown code",
            ),
            case(
                call(
                    arch,
                    code(HypercallCode::POST_MESSAGE).with_nested(true),
                    l.input,
                    0,
                )
                .with_memory(l.input, &relayed_in),
                HvStatus::INVALID_HYPERCALL_INPUT,
                false,
                "VTL0's own nested bit",
            ),
        ];
        let scenario = owned_device_scenario(Scenario::for_arch(arch));
        let (report, results) = run_cases(scenario, cases);

        let status = HvRegisterVsmVpStatus::from_bits(u64::from_le_bytes(
            results[8].output[..8].try_into().unwrap(),
        ));
        assert_eq!(status.active_vtl(), 0, "{arch:?}: VTL0 is told VTL0");
        let mask = report.model.scenario().extended_capabilities.into_bits();
        assert_eq!(
            results[9].output,
            mask.to_le_bytes(),
            "{arch:?}: the host's"
        );

        // Exactly what reached the host: the relayed message with the host's connection id,
        // the relayed event, the owned device. Nothing else of VTL0's was forwarded.
        let posts = forwarded(&report, HypercallCode::POST_MESSAGE);
        assert_eq!(posts.len(), 1, "{arch:?}");
        assert_eq!(
            posts[0].input, relayed_out,
            "{arch:?}: the bytes the host got"
        );
        assert!(!Control::from_bits(posts[0].control).nested());
        let events = forwarded(&report, HypercallCode::SIGNAL_EVENT);
        assert_eq!(events.len(), 1, "{arch:?}");
        assert_eq!(
            events[0].input,
            signal_event_word(HOST_CONNECTION, 3).to_le_bytes(),
            "{arch:?}: the event's connection rewritten, its flag kept"
        );
        assert!(Control::from_bits(events[0].control).fast());
        let retargets = forwarded(&report, HypercallCode::RETARGET_DEVICE_INTERRUPT);
        assert_eq!(retargets.len(), 1, "{arch:?}");
        assert_eq!(
            retargets[0].input,
            retarget_input(HV_PARTITION_ID_SELF, OWNED_DEVICE)
        );
        assert_eq!(
            forwarded(&report, HypercallCode::EXT_QUERY_CAPABILITIES).len(),
            1,
            "{arch:?}: the boot's own query only"
        );
        assert!(forwarded(&report, HypercallCode(0x0077)).is_empty());
        // The intercepts OpenHCL installs, never HvInterceptTypeHypercall.
        let installed: Vec<HvInterceptType> = report
            .model
            .installed_intercepts()
            .iter()
            .map(|i| i.intercept_type)
            .collect();
        assert_eq!(
            installed,
            [
                HvInterceptType::UNKNOWN_SYNIC_CONNECTION,
                HvInterceptType::RETARGET_INTERRUPT_WITH_UNKNOWN_DEVICE_ID
            ],
            "{arch:?}"
        );
    }
}

/// A host that reflects more than Hyper-V does (`Scenario::reflected_codes`: Hyper-V's trigger
/// for several codes is not public) gets the answer VTL0 would have had without a paravisor,
/// and nothing is forwarded: no entry, no forward.
#[test]
fn calls_without_an_entry_are_answered_defensively_and_never_forwarded() {
    for arch in Arch::ALL {
        let l = layout(arch);
        let vp_status = get_registers_input(HvInputVtl::CURRENT, &[HvRegisterName::VSM_VP_STATUS]);
        let scenario = Scenario {
            reflected_codes: [
                HypercallCode::GET_VP_REGISTERS,
                HypercallCode::SET_VP_REGISTERS,
                HypercallCode::FLUSH_VIRTUAL_ADDRESS_SPACE,
                HypercallCode::ENABLE_PARTITION_VTL,
                HypercallCode::EXT_QUERY_CAPABILITIES,
                HypercallCode::EXT_GET_BOOT_ZEROED_MEMORY,
            ]
            .into(),
            ..Scenario::for_arch(arch)
        };
        let get = code(HypercallCode::GET_VP_REGISTERS).with_rep_count(1);
        let cases = vec![
            case(
                call(arch, get, l.input, l.output).with_memory(l.input, &vp_status),
                HvStatus::INVALID_HYPERCALL_CODE,
                true,
                "GetVpRegisters",
            ),
            case(
                call(
                    arch,
                    code(HypercallCode::FLUSH_VIRTUAL_ADDRESS_SPACE),
                    l.input,
                    0,
                ),
                HvStatus::INVALID_HYPERCALL_CODE,
                true,
                "FlushVirtualAddressSpace",
            ),
            case(
                call(arch, code(HypercallCode::ENABLE_PARTITION_VTL), l.input, 0),
                HvStatus::ACCESS_DENIED,
                true,
                "EnablePartitionVtl",
            ),
            case(
                ext_query(arch),
                HvStatus::SUCCESS,
                true,
                "ExtQueryCapabilities",
            ),
            case(
                call(
                    arch,
                    code(HypercallCode::EXT_QUERY_CAPABILITIES).with_fast(true),
                    0,
                    0,
                ),
                HvStatus::INVALID_PARAMETER,
                true,
                "fast ExtQueryCapabilities",
            ),
            case(
                call(arch, code(HypercallCode::EXT_QUERY_CAPABILITIES), 0, l.vtl2),
                HvStatus::ACCESS_DENIED,
                true,
                "ExtQueryCapabilities into VTL2 memory",
            ),
            case(
                call(
                    arch,
                    code(HypercallCode::EXT_GET_BOOT_ZEROED_MEMORY),
                    0,
                    l.output,
                ),
                HvStatus::INVALID_HYPERCALL_CODE,
                true,
                "ExtGetBootZeroedMemory",
            ),
        ];
        let (report, results) = run_cases(scenario, cases);
        assert_eq!(
            results[3].output, [0; 8],
            "{arch:?}: no extended call is relayed, so none is offered"
        );
        // After the first intercept no GetVpRegisters with VTL0's input reaches the host (the
        // paravisor's own reads, like each VP's entry-register read, name other registers).
        let events = report.trace().events();
        let first = events
            .iter()
            .position(|e| matches!(e, Event::Intercept { .. }))
            .expect("intercepts");
        let later_gets = events[first..]
            .iter()
            .filter(|e| {
                matches!(e, Event::Hypercall(h)
                    if h.vtl == Vtl::VTL2
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
            assert!(forwarded(&report, code).is_empty(), "{arch:?} {code:?}");
        }
        // One line per call, naming VP and code.
        let lines: Vec<&str> = report
            .run
            .console
            .lines()
            .filter(|l| l.contains("reached VTL2"))
            .collect();
        assert_eq!(lines.len(), 7, "{arch:?}: {lines:?}");
        assert!(
            lines[0].contains("0x0050") && lines[0].contains("on VP 0"),
            "{lines:?}"
        );
    }
}

/// OpenVMM refuses HvInterceptTypeHypercall; a host that accepted it would reflect every
/// VMM-bound call, but the paravisor never asks for it. And a host that refuses the intercepts
/// the paravisor does ask for costs one line each, not the boot: VTL0 then gets the hypervisor's
/// own answer.
#[test]
fn intercept_installation_follows_openhcl_and_survives_a_refusal() {
    for arch in Arch::ALL {
        let scenario = Scenario {
            hypercall_intercept: HypercallIntercept::Accepted,
            ..Scenario::for_arch(arch)
        };
        let report = e2e::run_vtl0(scenario, Vec::new());
        let installed = report.model.installed_intercepts();
        assert!(
            installed
                .iter()
                .all(|i| i.intercept_type != HvInterceptType::HYPERCALL),
            "{arch:?}"
        );

        let mut scenario = Scenario::for_arch(arch);
        for nth in [1, 2] {
            scenario.faults.push(InjectedFault {
                code: HypercallCode::INSTALL_INTERCEPT,
                nth,
                action: FaultAction::Status(hvdef::HvError::INVALID_PARAMETER),
                filter: Default::default(),
            });
        }
        let l = layout(arch);
        let (message, _) = relayed_message(RELAYED);
        let cases = vec![case(
            call(arch, code(HypercallCode::POST_MESSAGE), l.input, 0)
                .with_memory(l.input, &message),
            HvStatus::INVALID_CONNECTION_ID,
            false,
            "PostMessage with no intercept installed",
        )];
        let (report, _) = run_cases(scenario, cases);
        assert!(report.model.installed_intercepts().is_empty());
        let refusals = report
            .run
            .console
            .lines()
            .filter(|l| l.contains("the host refused the"))
            .count();
        assert_eq!(refusals, 2, "{arch:?}:\n{}", report.run.console);
    }
}

/// The relayed PostMessage under a host that times out: a host that hands TIMEOUT back makes
/// VTL0 see it with its IP left on the call (TLFS continuation), and VTL0's re-issue is relayed
/// again; a host that re-executes completes it without VTL0 ever seeing the timeout.
#[test]
fn a_relayed_call_that_times_out() {
    for arch in Arch::ALL {
        for returned in [true, false] {
            let l = layout(arch);
            let (message, to_host) = relayed_message(RELAYED);
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
            let mut posted = call(arch, code(HypercallCode::POST_MESSAGE), l.input, 0)
                .with_memory(l.input, &message);
            if arch == Arch::X86_64 {
                posted = posted.with_register(hvdef::x86_64::reg::RAX, RAX_BEFORE.into());
            }
            let script = vec![posted];
            let mut report = e2e::run_vtl0(scenario, script);
            let results = results(&mut report);
            let posts = forwarded(&report, HypercallCode::POST_MESSAGE);
            assert!(posts.iter().all(|p| p.input == to_host), "{arch:?}");
            let last = results.last().unwrap();
            assert_eq!(last.status(), HvStatus::SUCCESS, "{arch:?} {returned}");
            assert!(last.advanced());
            if returned {
                assert_eq!(results.len(), 2, "{arch:?}: seen, then re-executed");
                assert!(!results[0].advanced(), "{arch:?}: IP left on the call");
                // Only the control register changes (TLFS continuation): the result register
                // keeps VTL0's value (x64 the marker, arm64 SMCCC the function id, so the
                // re-executed hvc is a hypercall).
                let kept = match arch {
                    Arch::X86_64 => RAX_BEFORE,
                    Arch::Aarch64 => u64::from(hvdef::aarch64::SMCCC_HV_FUNC_ID),
                };
                assert_eq!(results[0].result, kept, "{arch:?}");
                assert_eq!(posts.len(), 2, "{arch:?}: relayed twice");
            } else {
                assert_eq!(results.len(), 1, "{arch:?}: VTL0 never saw it");
                assert_eq!(posts.len(), 2, "{arch:?}: the host re-executed the relay");
            }
        }
    }
}

#[test]
fn four_vps_relay_at_once_each_on_its_own_pages() {
    for arch in Arch::ALL {
        let l = layout(arch);
        let (message, _) = relayed_message(RELAYED);
        let mut script = Vec::new();
        for vp in 0..4u32 {
            let input = l.input + 0x100 * u64::from(vp);
            script.push(
                call(arch, code(HypercallCode::POST_MESSAGE), input, 0)
                    .with_memory(input, &message)
                    .on_vp(vp),
            );
            script.push(
                call(
                    arch,
                    code(HypercallCode::SIGNAL_EVENT).with_fast(true),
                    signal_event_word(RELAYED_EVENT, vp as u16),
                    0,
                )
                .on_vp(vp),
            );
        }
        let mut report = e2e::run_vtl0(
            Scenario {
                vp_count: 4,
                ..Scenario::for_arch(arch)
            },
            script,
        );
        let results = results(&mut report);
        assert_eq!(results.len(), 8);
        assert!(results
            .iter()
            .all(|r| r.status() == HvStatus::SUCCESS && r.advanced() && r.reached_vtl2));
        let posts = forwarded(&report, HypercallCode::POST_MESSAGE);
        assert_eq!(posts.len(), 4);
        let mut pages: Vec<(u32, u64)> = posts.iter().map(|r| (r.vp, r.input_gpa)).collect();
        pages.sort();
        pages.dedup_by_key(|p| p.1);
        assert_eq!(
            pages.len(),
            4,
            "{arch:?}: each VP relays from its own input page"
        );
        assert_eq!(
            pages.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
    }
}

/// An x64 XMM-fast relayed call (RetargetDeviceInterrupt: 56 bytes over RDX, R8, XMM0-2) goes
/// to the host memory-based (the paravisor is soft-float); when the host hands TIMEOUT back,
/// VTL0 must get its own control word back, fast bit included, so that its re-execution is the
/// same call.
#[test]
fn a_timed_out_xmm_fast_relay_keeps_vtl0_s_control_word() {
    let arch = Arch::X86_64;
    let input = retarget_input(HV_PARTITION_ID_SELF, OWNED_DEVICE);
    let words: Vec<u64> = input
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let xmm = |n: usize| {
        let lo = u128::from(words[2 + 2 * n]);
        let hi = words.get(3 + 2 * n).map_or(0, |&w| u128::from(w));
        lo | hi << 64
    };
    let control = code(HypercallCode::RETARGET_DEVICE_INTERRUPT).with_fast(true);
    let mut c = call(arch, control, words[0], words[1])
        .with_register(hvdef::x86_64::reg::RAX, RAX_BEFORE.into());
    for n in 0..3 {
        c = c.with_register(
            HvRegisterName(hvdef::x86_64::reg::XMM0.0 + n as u32),
            xmm(n),
        );
    }
    let mut scenario = owned_device_scenario(Scenario::for_arch(arch));
    // VTL0's own call is the hypervisor's first; the relay is the second.
    scenario.faults.push(InjectedFault {
        code: HypercallCode::RETARGET_DEVICE_INTERRUPT,
        nth: 2,
        action: FaultAction::ReturnedTimeout { reps: 0 },
        filter: Default::default(),
    });
    let mut report = e2e::run_vtl0(scenario, vec![c]);
    let results = results(&mut report);
    assert_eq!(results.len(), 2, "timed out, then re-executed");
    assert_eq!(results[0].result, RAX_BEFORE, "RAX as VTL0 had it");
    assert_eq!(
        results[0].register(hvdef::x86_64::reg::RCX),
        u128::from(control.into_bits()),
        "VTL0's control word, fast bit and all"
    );
    assert_eq!(results[1].status(), HvStatus::SUCCESS);
    let relays = forwarded(&report, HypercallCode::RETARGET_DEVICE_INTERRUPT);
    assert_eq!(relays.len(), 2);
    assert!(relays
        .iter()
        .all(|r| r.input == input && !Control::from_bits(r.control).fast()));
}

/// HvExtCallQueryCapabilities needs the EnableExtendedHypercalls privilege (TLFS; KVM's
/// hyperv_features selftest expects ACCESS_DENIED without it, before any other check, fast form
/// included). VTL0 holds the partition's privileges and no more: a host that reflects the query
/// gets the same answer from the paravisor as VTL0 gets from the hypervisor.
#[test]
fn extended_query_obeys_the_partition_privilege() {
    for arch in Arch::ALL {
        let mut scenario = Scenario::for_arch(arch);
        scenario.privileges.set_enable_extended_hypercalls(false);
        let query = code(HypercallCode::EXT_QUERY_CAPABILITIES);
        let served = vec![
            case(
                ext_query(arch),
                HvStatus::ACCESS_DENIED,
                false,
                "the hypervisor's own answer",
            ),
            case(
                call(arch, query.with_fast(true), 0, 0),
                HvStatus::ACCESS_DENIED,
                false,
                "fast, the hypervisor's own answer",
            ),
        ];
        run_cases(scenario.clone(), served);
        scenario.reflected_codes = [HypercallCode::EXT_QUERY_CAPABILITIES].into();
        let reflected = vec![
            case(ext_query(arch), HvStatus::ACCESS_DENIED, true, "reflected"),
            case(
                call(arch, query.with_fast(true), 0, 0),
                HvStatus::ACCESS_DENIED,
                true,
                "reflected, fast",
            ),
        ];
        run_cases(scenario, reflected);
    }
}

/// A host that refuses the SetVpRegisters completing a relayed call (VTL0's IP advance) on VP 0:
/// VP 0 says so in one line (VP, register, status) and halts for good, without retrying or
/// spinning (re-entering VTL0 would re-execute a call the host already took); VP 1 keeps
/// serving. The refusal is the first IP advance VP 0 makes.
#[test]
fn a_refused_ip_advance_stops_that_vp_only() {
    for arch in Arch::ALL {
        let (message, to_host) = relayed_message(RELAYED);
        let l = layout(arch);
        let relayed_post = |vp: u32| {
            let input = l.input + 0x100 * u64::from(vp);
            call(arch, code(HypercallCode::POST_MESSAGE), input, 0)
                .with_memory(input, &message)
                .on_vp(vp)
        };
        let script = vec![
            relayed_post(0),
            // Never delivered: VP 0 is halted by then.
            relayed_post(0),
            relayed_post(1),
            call(
                arch,
                code(HypercallCode::SIGNAL_EVENT).with_fast(true),
                signal_event_word(RELAYED_EVENT, 1),
                0,
            )
            .on_vp(1),
        ];
        let mut scenario = Scenario {
            vp_count: 2,
            ..Scenario::for_arch(arch)
        };
        let ip = e2e::ip_register(arch);
        scenario.faults.push(InjectedFault {
            code: HypercallCode::SET_VP_REGISTERS,
            nth: 1,
            action: FaultAction::Status(HvError::ACCESS_DENIED),
            filter: FaultFilter {
                vp: Some(0),
                register: Some(ip),
            },
        });
        let mut report = e2e::session(scenario, script, e2e::RELAY);
        let console = report.run.console.clone();
        assert!(
            report.unhandled_fault.is_none() && report.run.outcome != mockhv::qemu::Outcome::Fail,
            "{arch:?}: {}\n{console}",
            report.summary()
        );
        assert_eq!(
            report.halted_vps,
            [0].into(),
            "{arch:?}: VP 0 halted, VP 1 did not\n{console}"
        );
        assert!(
            !report.script_finished,
            "{arch:?}: VP 0's second call is left"
        );
        assert!(!console.contains("PANIC"), "{arch:?}: no panic\n{console}");
        let name = match arch {
            Arch::X86_64 => "RIP",
            Arch::Aarch64 => "XPC",
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
        // VP 1 served both of its calls.
        let results = results(&mut report);
        let vp1: Vec<&Vtl0Result> = results.iter().filter(|r| r.vp == 1).collect();
        assert_eq!(vp1.len(), 2, "{arch:?}");
        assert!(vp1
            .iter()
            .all(|r| r.status() == HvStatus::SUCCESS && r.advanced() && r.reached_vtl2));
        // VP 0's call went to the host once and was never completed into VTL0.
        assert!(results.iter().all(|r| r.vp != 0), "{arch:?}");
        let posts = forwarded(&report, HypercallCode::POST_MESSAGE);
        assert_eq!(posts.len(), 2, "{arch:?}");
        assert!(posts.iter().all(|r| r.input == to_host));
        assert_eq!(posts.iter().filter(|r| r.vp == 0).count(), 1, "{arch:?}");
        // No retry: one refused SetVpRegisters on VP 0 after its relay, and nothing more.
        let after: Vec<_> = report
            .trace()
            .hypercalls()
            .filter(|r| r.vp == 0 && r.vtl == Vtl::VTL2)
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

/// A call whose instruction ends exactly at the top of the address space completes with the IP
/// wrapped to 0 (ip + len computed modulo 2^64, never saturated or refused): the hypervisor, not
/// the paravisor, decides what executing from there means.
#[test]
fn an_ip_advance_at_the_top_of_the_address_space_wraps() {
    for arch in Arch::ALL {
        let l = layout(arch);
        let (message, to_host) = relayed_message(RELAYED);
        let control = code(HypercallCode::POST_MESSAGE);
        let vtl0 = match arch {
            // vmcall: 3 bytes.
            Arch::X86_64 => Vtl0Call::x64(u64::MAX - 2, control, l.input, 0),
            // hvc #0: 4 bytes.
            Arch::Aarch64 => Vtl0Call::arm64(u64::MAX - 3, control, l.input, 0),
        }
        .with_memory(l.input, &message);
        let mut report = e2e::run_vtl0(Scenario::for_arch(arch), vec![vtl0]);
        let results = results(&mut report);
        assert_eq!(results.len(), 1, "{arch:?}");
        let r = &results[0];
        assert_eq!(r.status(), HvStatus::SUCCESS, "{arch:?}");
        assert!(r.reached_vtl2, "{arch:?}");
        assert_eq!(r.ip_after, 0, "{arch:?}: the IP wrapped");
        let posts = forwarded(&report, HypercallCode::POST_MESSAGE);
        assert_eq!(posts.len(), 1, "{arch:?}");
        assert_eq!(posts[0].input, to_host, "{arch:?}");
    }
}
