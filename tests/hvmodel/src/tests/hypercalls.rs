//! The dispatcher's validation rules, each with the status the TLFS (or the documented choice)
//! gives, plus the host table, injected faults, timeouts and fast-call placement.

use alloc::collections::BTreeMap;

use hvdef::{
    Control, HvError, HvExtendedCapabilities, HvInputPostMessage, HvInputSignalEvent, HvInputVtl,
    HvMessageType, HvPartitionPrivilegeMask, HvRegisterName, HvStatus, HypercallCode,
    HypercallOutput, HV_MESSAGE_PAYLOAD_SIZE, HV_VP_INDEX_SELF,
};
use zerocopy::IntoBytes;

use super::*;
use crate::{BudgetEnd, FaultAction, FaultFilter, InjectedFault, Limits, Overlap};

const VSM_STATUS: u128 = 0x0005_0002; // VTL2 active, VTL0 and VTL2 enabled

fn get_status_call() -> (Control, Vec<u8>) {
    (
        rep(HypercallCode::GET_VP_REGISTERS, 1),
        get_input(
            HV_VP_INDEX_SELF,
            HvInputVtl::CURRENT,
            &[HvRegisterName::VSM_VP_STATUS],
        ),
    )
}

pub(super) fn post_message_input(connection_id: u32) -> Vec<u8> {
    HvInputPostMessage {
        connection_id,
        reserved: 0,
        message_type: HvMessageType(1),
        payload_size: 8,
        payload: [0x5A; HV_MESSAGE_PAYLOAD_SIZE],
    }
    .as_bytes()
    .to_vec()
}

/// A fast SignalEvent: the 8-byte input in RDX.
fn signal_event(hv: &mut Hv, control: Control, connection_id: u32, flag_number: u16) -> HvStatus {
    let input = HvInputSignalEvent {
        connection_id,
        flag_number,
        reserved: 0,
    };
    let (regs, effects) = hv.vmcall(X64HypercallRegs {
        rcx: control.with_fast(true).into_bits(),
        rdx: u64::from_le_bytes(input.as_bytes().try_into().unwrap()),
        ..Default::default()
    });
    assert_eq!(effects.fault, None);
    HypercallOutput::from_bits(regs.rax).status()
}

#[test]
fn valid_call_reads_vsm_status() {
    let mut hv = Hv::x64();
    let (control, input) = get_status_call();
    let out = hv.call(control, &input);
    assert_eq!(out.status(), HvStatus::SUCCESS);
    assert_eq!(out.reps_completed(), 1);
    assert_eq!(hv.values(1), [VSM_STATUS]);
}

#[test]
fn each_reserved_control_bit_is_invalid_input() {
    let (control, input) = get_status_call();
    for bit in (27..=30).chain(44..=47).chain(60..=63) {
        let mut hv = Hv::x64();
        let bad = Control::from_bits(control.into_bits() | 1 << bit);
        assert_eq!(
            hv.call(bad, &input).status(),
            HvStatus::INVALID_HYPERCALL_INPUT,
            "bit {bit}"
        );
    }
}

#[test]
fn nested_bit_without_nested_host_is_invalid_input() {
    let mut hv = Hv::x64();
    let control = simple(HypercallCode::POST_MESSAGE).with_nested(true);
    assert_eq!(
        hv.call(control, &post_message_input(1)).status(),
        HvStatus::INVALID_HYPERCALL_INPUT
    );
    assert_eq!(
        hv.call(control.with_nested(false), &post_message_input(1))
            .status(),
        HvStatus::SUCCESS
    );
}

#[test]
fn nested_host_routes_l0_calls_by_bit_31() {
    let mut hv = Hv::new(Scenario {
        nested: true,
        ..Scenario::default()
    });
    let post = simple(HypercallCode::POST_MESSAGE);
    assert_eq!(
        hv.call(post, &post_message_input(1)).status(),
        HvStatus::INVALID_CONNECTION_ID
    );
    assert_eq!(
        hv.call(post.with_nested(true), &post_message_input(1))
            .status(),
        HvStatus::SUCCESS
    );
    let signal = simple(HypercallCode::SIGNAL_EVENT);
    assert_eq!(
        signal_event(&mut hv, signal, 1, 0),
        HvStatus::INVALID_CONNECTION_ID
    );
    assert_eq!(
        signal_event(&mut hv, signal.with_nested(true), 1, 0),
        HvStatus::SUCCESS
    );

    // Bit 31 on a call L0 does not own, or on any extended call.
    let (get, input) = get_status_call();
    assert_eq!(
        hv.call(get.with_nested(true), &input).status(),
        HvStatus::INVALID_HYPERCALL_INPUT
    );
    assert_eq!(hv.call(get, &input).status(), HvStatus::SUCCESS);
    let query = simple(HypercallCode::EXT_QUERY_CAPABILITIES);
    assert_eq!(
        hv.call(query.with_nested(true), &[]).status(),
        HvStatus::INVALID_HYPERCALL_INPUT
    );
}

#[test]
fn extended_calls_are_never_nested_even_if_listed() {
    let mut scenario = Scenario {
        nested: true,
        ..Scenario::default()
    };
    scenario.l0_calls.insert(
        HypercallCode::EXT_QUERY_CAPABILITIES,
        HvError::INVALID_CONNECTION_ID,
    );
    let mut hv = Hv::new(scenario);
    let query = simple(HypercallCode::EXT_QUERY_CAPABILITIES);
    assert_eq!(
        hv.call(query.with_nested(true), &[]).status(),
        HvStatus::INVALID_HYPERCALL_INPUT
    );
}

#[test]
fn simple_call_with_rep_fields_is_invalid_input() {
    let mut hv = Hv::x64();
    let post = simple(HypercallCode::POST_MESSAGE);
    let input = post_message_input(1);
    assert_eq!(
        hv.call(post.with_rep_count(1), &input).status(),
        HvStatus::INVALID_HYPERCALL_INPUT
    );
    assert_eq!(
        hv.call(post.with_rep_start(1), &input).status(),
        HvStatus::INVALID_HYPERCALL_INPUT
    );
    assert_eq!(hv.call(post, &input).status(), HvStatus::SUCCESS);
}

#[test]
fn rep_call_count_and_start_rules() {
    let mut hv = Hv::x64();
    let (control, input) = get_status_call();
    for (count, start) in [(0, 0), (1, 1), (1, 2), (3, 3)] {
        let bad = control.with_rep_count(count).with_rep_start(start);
        assert_eq!(
            hv.call(bad, &input).status(),
            HvStatus::INVALID_HYPERCALL_INPUT,
            "{count} {start}"
        );
    }
}

#[test]
fn unexpected_variable_header_is_invalid_input() {
    let mut hv = Hv::x64();
    let (get, input) = get_status_call();
    assert_eq!(
        hv.call(get.with_variable_header_size(1), &input).status(),
        HvStatus::INVALID_HYPERCALL_INPUT
    );
    let post = simple(HypercallCode::POST_MESSAGE).with_variable_header_size(2);
    assert_eq!(
        hv.call(post, &post_message_input(1)).status(),
        HvStatus::INVALID_HYPERCALL_INPUT
    );
}

#[test]
fn misaligned_gpas_are_invalid_alignment() {
    let mut hv = Hv::x64();
    let (control, input) = get_status_call();
    assert_eq!(
        hv.call_at(control, IN + 4, OUT, &input).status(),
        HvStatus::INVALID_ALIGNMENT
    );
    assert_eq!(
        hv.call_at(control, IN, OUT + 4, &input).status(),
        HvStatus::INVALID_ALIGNMENT
    );
    // GPAs of empty lists are ignored: QueryCapabilities has no input.
    let query = simple(HypercallCode::EXT_QUERY_CAPABILITIES);
    assert_eq!(hv.call_at(query, 3, OUT, &[]).status(), HvStatus::SUCCESS);
    assert_eq!(
        hv.call_at(query, u64::MAX, OUT, &[]).status(),
        HvStatus::SUCCESS
    );
}

/// TLFS: a list spanning pages is INVALID_ALIGNMENT (the default); OpenVMM says
/// INVALID_HYPERCALL_INPUT, a scenario option.
#[test]
fn lists_crossing_a_page_get_the_scenarios_status() {
    let openvmm = Scenario {
        page_crossing_status: HvError::INVALID_HYPERCALL_INPUT,
        ..Scenario::default()
    };
    let cases = [
        (Scenario::default(), HvStatus::INVALID_ALIGNMENT),
        (openvmm, HvStatus::INVALID_HYPERCALL_INPUT),
    ];
    for (scenario, crossing) in cases {
        let mut hv = Hv::new(scenario);
        let names = [HvRegisterName::VP_INDEX, HvRegisterName::VSM_VP_STATUS];
        let control = rep(HypercallCode::GET_VP_REGISTERS, 2);
        let input = get_input(HV_VP_INDEX_SELF, HvInputVtl::CURRENT, &names);
        // 24 input bytes starting 16 before the page end.
        assert_eq!(
            hv.call_at(control, IN + 0xFF0, OUT, &input).status(),
            crossing
        );
        // 32 output bytes starting 16 before the page end; one value (16 bytes) still fits.
        assert_eq!(
            hv.call_at(control, IN, OUT + 0xFF0, &input).status(),
            crossing
        );
        // Crossing is checked before alignment (OpenVMM's order; the TLFS gives none).
        assert_eq!(
            hv.call_at(control, IN + 0xFF4, OUT, &input).status(),
            crossing
        );
        // Misalignment alone stays INVALID_ALIGNMENT under both.
        assert_eq!(
            hv.call_at(control, IN + 4, OUT, &input).status(),
            HvStatus::INVALID_ALIGNMENT
        );
        let one = get_input(HV_VP_INDEX_SELF, HvInputVtl::CURRENT, &names[..1]);
        let control = rep(HypercallCode::GET_VP_REGISTERS, 1);
        assert_eq!(
            hv.call_at(control, IN, OUT + 0xFF0, &one).status(),
            HvStatus::SUCCESS
        );
    }
}

/// The TLFS forbids overlap without naming a status, OpenVMM does not check it and real
/// Hyper-V ran Linux's overlapping get_vtl: tolerated by default, the input read before any
/// output is written.
#[test]
fn overlapping_lists_are_tolerated_by_default() {
    let mut hv = Hv::x64();
    let (control, input) = get_status_call(); // 20 input bytes, 16 output bytes
    let out = hv.call_at(control, IN, IN + 8, &input);
    assert_eq!((out.status(), out.reps_completed()), (HvStatus::SUCCESS, 1));
    // The value landed over the input's VP index, target VTL and first register name.
    assert_eq!(
        hv.mem.slice(IN, 8),
        u64::MAX.to_le_bytes(),
        "partition id kept"
    );
    assert_eq!(hv.mem.slice(IN + 8, 16), VSM_STATUS.to_le_bytes());
    let out = hv.call_at(control, IN + 8, IN, &input);
    assert_eq!(out.status(), HvStatus::SUCCESS);
    assert_eq!(hv.mem.slice(IN, 16), VSM_STATUS.to_le_bytes());
}

#[test]
fn overlapping_lists_get_a_stricter_hosts_status() {
    let mut hv = Hv::new(Scenario {
        overlap: Overlap::Status(HvError::INVALID_ALIGNMENT),
        ..Scenario::default()
    });
    let (control, input) = get_status_call();
    for (in_gpa, out_gpa) in [(IN, IN + 8), (IN + 8, IN), (IN, IN + 16)] {
        hv.mem.write(OUT, &[0xAA; 16]).unwrap();
        assert_eq!(
            hv.call_at(control, in_gpa, out_gpa, &input).status(),
            HvStatus::INVALID_ALIGNMENT,
            "{in_gpa:#x}/{out_gpa:#x}"
        );
    }
    // Adjacent is not overlapping.
    assert_eq!(
        hv.call_at(control, IN, IN + 24, &input).status(),
        HvStatus::SUCCESS
    );
    // Empty lists overlap nothing: QueryCapabilities has no input.
    let query = simple(HypercallCode::EXT_QUERY_CAPABILITIES);
    assert_eq!(hv.call_at(query, OUT, OUT, &[]).status(), HvStatus::SUCCESS);
}

#[test]
fn gpas_outside_the_gpa_space_are_invalid_alignment_and_unbacked_ones_invalid_input() {
    let mut hv = Hv::x64();
    let (control, input) = get_status_call();
    let beyond_space = 1u64 << Limits::default().gpa_bits;
    let (regs, _) = hv.vmcall(X64HypercallRegs {
        rcx: control.into_bits(),
        rdx: beyond_space,
        r8: OUT,
        ..Default::default()
    });
    assert_eq!(
        HypercallOutput::from_bits(regs.rax).status(),
        HvStatus::INVALID_ALIGNMENT
    );
    // Inside the GPA space but not backed by the test memory: OpenVMM's
    // INVALID_HYPERCALL_INPUT (the TLFS's memory intercept goes to a host the model lacks).
    hv.mem.write(IN, &input).unwrap();
    let unbacked = MEM_SIZE as u64 + 0x1000;
    let (regs, _) = hv.vmcall(X64HypercallRegs {
        rcx: control.into_bits(),
        rdx: IN,
        r8: unbacked,
        ..Default::default()
    });
    assert_eq!(
        HypercallOutput::from_bits(regs.rax).status(),
        HvStatus::INVALID_HYPERCALL_INPUT
    );
    let (regs, _) = hv.vmcall(X64HypercallRegs {
        rcx: control.into_bits(),
        rdx: unbacked,
        r8: OUT,
        ..Default::default()
    });
    assert_eq!(
        HypercallOutput::from_bits(regs.rax).status(),
        HvStatus::INVALID_HYPERCALL_INPUT
    );
    assert_eq!(hv.call(control, &input).status(), HvStatus::SUCCESS);
}

#[test]
fn missing_privileges_are_access_denied() {
    type Clear = fn(&mut HvPartitionPrivilegeMask);
    let get = get_status_call();
    let cases: [(Clear, Control, Vec<u8>); 4] = [
        (|p| p.set_access_vp_registers(false), get.0, get.1.clone()),
        (
            |p| p.set_post_messages(false),
            simple(HypercallCode::POST_MESSAGE),
            post_message_input(1),
        ),
        (
            |p| p.set_enable_extended_hypercalls(false),
            simple(HypercallCode::EXT_QUERY_CAPABILITIES),
            vec![],
        ),
        (
            |p| p.set_access_vsm(false),
            simple(HypercallCode::INSTALL_INTERCEPT),
            install_input(0x0D),
        ),
    ];
    for (clear, control, input) in cases {
        let mut hv = Hv::x64();
        assert_eq!(
            hv.call(control, &input).status(),
            HvStatus::SUCCESS,
            "{control:?}"
        );
        let mut scenario = Scenario::default();
        clear(&mut scenario.privileges);
        let mut hv = Hv::new(scenario);
        assert_eq!(
            hv.call(control, &input).status(),
            HvStatus::ACCESS_DENIED,
            "{control:?}"
        );
        // ACCESS_DENIED wins over a malformed control word.
        let bad = Control::from_bits(control.into_bits() | 1 << 63);
        assert_eq!(
            hv.call(bad, &input).status(),
            HvStatus::ACCESS_DENIED,
            "{control:?}"
        );
    }
    let mut scenario = Scenario::default();
    scenario.privileges.set_signal_events(false);
    let mut hv = Hv::new(scenario);
    assert_eq!(
        signal_event(&mut hv, simple(HypercallCode::SIGNAL_EVENT), 1, 0),
        HvStatus::ACCESS_DENIED
    );
}

pub(super) fn install_input(intercept_type: u32) -> Vec<u8> {
    hvdef::HvInputInstallIntercept {
        partition_id: hvdef::HV_PARTITION_ID_SELF,
        access_type: hvdef::HvInterceptAccessMask::new().with_execute(true),
        intercept_type: hvdef::HvInterceptType(intercept_type),
        intercept_parameter: 0,
    }
    .as_bytes()
    .to_vec()
}

#[test]
fn query_capabilities_writes_the_mask() {
    let mut hv = Hv::new(Scenario {
        extended_capabilities: HvExtendedCapabilities::from_bits(0x1F),
        ..Scenario::default()
    });
    hv.mem.write(OUT, &[0xAA; 8]).unwrap();
    let out = hv.call(simple(HypercallCode::EXT_QUERY_CAPABILITIES), &[]);
    assert_eq!(out.status(), HvStatus::SUCCESS);
    assert_eq!(hv.mem.read_u64(OUT), 0x1F);
    let mut hv = Hv::x64();
    hv.call(simple(HypercallCode::EXT_QUERY_CAPABILITIES), &[])
        .result()
        .unwrap();
    assert_eq!(
        hv.mem.read_u64(OUT),
        0x3,
        "default: boot-zeroed memory + heat hint"
    );
}

#[test]
fn fast_extended_call_is_invalid_parameter() {
    let mut hv = Hv::x64();
    let fast = simple(HypercallCode::EXT_QUERY_CAPABILITIES).with_fast(true);
    assert_eq!(hv.call(fast, &[]).status(), HvStatus::INVALID_PARAMETER);
    let mut scenario = Scenario::default();
    scenario.privileges.set_enable_extended_hypercalls(false);
    let mut hv = Hv::new(scenario);
    assert_eq!(hv.call(fast, &[]).status(), HvStatus::ACCESS_DENIED);
}

#[test]
fn unknown_codes_and_the_host_table() {
    let mut scenario = Scenario::default();
    scenario.host_calls.insert(
        HypercallCode::FLUSH_VIRTUAL_ADDRESS_SPACE,
        HvStatus::SUCCESS,
    );
    scenario
        .host_calls
        .insert(HypercallCode::FLUSH_VIRTUAL_ADDRESS_LIST, HvStatus::SUCCESS);
    scenario.host_calls.insert(
        HypercallCode::SEND_SYNTHETIC_CLUSTER_IPI,
        HvStatus::INVALID_VP_INDEX,
    );
    let mut hv = Hv::new(scenario);
    assert_eq!(
        hv.call(simple(HypercallCode(0xBEEF)), &[]).status(),
        HvStatus::INVALID_HYPERCALL_CODE
    );
    // Not implemented, not on the table: the default host has nothing.
    assert_eq!(
        hv.call(simple(HypercallCode::ENABLE_PARTITION_VTL), &[])
            .status(),
        HvStatus::INVALID_HYPERCALL_CODE
    );
    // Extended calls exist when advertised (default mask 0x3).
    assert_eq!(
        hv.call(simple(HypercallCode::EXT_GET_BOOT_ZEROED_MEMORY), &[])
            .status(),
        HvStatus::SUCCESS
    );
    assert_eq!(
        hv.call(simple(HypercallCode::EXT_EPF_SETUP), &[]).status(),
        HvStatus::INVALID_HYPERCALL_CODE
    );
    assert_eq!(
        hv.call(simple(HypercallCode::FLUSH_VIRTUAL_ADDRESS_SPACE), &[])
            .status(),
        HvStatus::SUCCESS
    );
    let out = hv.call(rep(HypercallCode::FLUSH_VIRTUAL_ADDRESS_LIST, 3), &[]);
    assert_eq!((out.status(), out.reps_completed()), (HvStatus::SUCCESS, 3));
    assert_eq!(
        hv.call(simple(HypercallCode::SEND_SYNTHETIC_CLUSTER_IPI), &[])
            .status(),
        HvStatus::INVALID_VP_INDEX
    );
    // The control word is still validated for host calls.
    let bad = simple(HypercallCode::FLUSH_VIRTUAL_ADDRESS_SPACE).with_rep_count(2);
    assert_eq!(
        hv.call(bad, &[]).status(),
        HvStatus::INVALID_HYPERCALL_INPUT
    );
}

#[test]
fn injected_status_hits_the_nth_valid_call() {
    let mut hv = Hv::new(Scenario {
        faults: vec![InjectedFault {
            code: HypercallCode::POST_MESSAGE,
            nth: 2,
            action: FaultAction::Status(HvError::INSUFFICIENT_BUFFERS),
            filter: Default::default(),
        }],
        ..Scenario::default()
    });
    let post = simple(HypercallCode::POST_MESSAGE);
    let input = post_message_input(1);
    assert_eq!(hv.call(post, &input).status(), HvStatus::SUCCESS);
    // Invalid calls do not count.
    assert_eq!(
        hv.call(post.with_rep_count(1), &input).status(),
        HvStatus::INVALID_HYPERCALL_INPUT
    );
    assert_eq!(
        hv.call(post, &input).status(),
        HvStatus::INSUFFICIENT_BUFFERS
    );
    assert_eq!(hv.call(post, &input).status(), HvStatus::SUCCESS);
    let statuses = hv.model.trace().statuses(HypercallCode::POST_MESSAGE);
    assert_eq!(
        statuses,
        [
            Some(HvStatus::SUCCESS),
            Some(HvStatus::INVALID_HYPERCALL_INPUT),
            Some(HvStatus::INSUFFICIENT_BUFFERS),
            Some(HvStatus::SUCCESS)
        ]
    );
}

/// A filtered fault counts only the calls it matches: here VP 0's SetVpRegisters naming RIP
/// (a register named among others counts; other registers, other VPs and GetVpRegisters
/// naming RIP do not).
#[test]
fn a_filtered_fault_counts_only_matching_calls() {
    let rip_on_vp = |vp| FaultFilter {
        vp: Some(vp),
        register: Some(RIP),
    };
    let mut hv = Hv::new(Scenario {
        faults: vec![
            InjectedFault {
                code: HypercallCode::SET_VP_REGISTERS,
                nth: 1,
                action: FaultAction::Status(HvError::INVALID_PARAMETER),
                filter: rip_on_vp(1),
            },
            InjectedFault {
                code: HypercallCode::SET_VP_REGISTERS,
                nth: 2,
                action: FaultAction::Status(HvError::ACCESS_DENIED),
                filter: rip_on_vp(0),
            },
        ],
        ..Scenario::default()
    });
    let rax = x64_reg::RAX;
    let set = |hv: &mut Hv, regs: &[(HvRegisterName, u128)]| hv.set_regs(vtl0(), regs).status();
    assert_eq!(set(&mut hv, &[(rax, 1)]), HvStatus::SUCCESS);
    assert_eq!(hv.get_regs(vtl0(), &[RIP]).0.status(), HvStatus::SUCCESS);
    assert_eq!(set(&mut hv, &[(RIP, 0x1000)]), HvStatus::SUCCESS);
    assert_eq!(set(&mut hv, &[(rax, 2)]), HvStatus::SUCCESS);
    assert_eq!(
        set(&mut hv, &[(rax, 3), (RIP, 0x2000)]),
        HvStatus::ACCESS_DENIED
    );
    assert_eq!(hv.model.register(0, Vtl::VTL0, RIP), Ok(0x1000));
    assert_eq!(set(&mut hv, &[(RIP, 0x3000)]), HvStatus::SUCCESS);
    assert_eq!(hv.model.register(0, Vtl::VTL0, RIP), Ok(0x3000));
}

const FIVE: [HvRegisterName; 5] = [
    HvRegisterName::VP_INDEX,
    HvRegisterName::VSM_VP_STATUS,
    HvRegisterName::GUEST_OS_ID,
    HvRegisterName::SCONTROL,
    HvRegisterName::SVERSION,
];

#[test]
fn timeout_completes_k_reps_then_resumes_from_rep_start() {
    let mut hv = Hv::new(Scenario {
        faults: vec![InjectedFault {
            code: HypercallCode::GET_VP_REGISTERS,
            nth: 1,
            action: FaultAction::Timeout { reps: 2 },
            filter: Default::default(),
        }],
        ..Scenario::default()
    });
    hv.mem.write(OUT, &[0xAA; 80]).unwrap();
    hv.mem
        .write(IN, &get_input(HV_VP_INDEX_SELF, HvInputVtl::CURRENT, &FIVE))
        .unwrap();
    let control = rep(HypercallCode::GET_VP_REGISTERS, 5);
    let regs = X64HypercallRegs {
        rcx: control.into_bits(),
        rdx: IN,
        r8: OUT,
        ..Default::default()
    };
    let (regs, effects) = hv.vmcall(regs);
    let out = HypercallOutput::from_bits(regs.rax);
    assert_eq!((out.status(), out.reps_completed()), (HvStatus::TIMEOUT, 2));
    assert!(!effects.advance_ip, "the guest must re-execute the vmcall");
    assert_eq!(regs.rcx, control.with_rep_start(2).into_bits());
    let unwritten = u128::from_le_bytes([0xAA; 16]);
    assert_eq!(
        hv.values(5),
        [0, VSM_STATUS, unwritten, unwritten, unwritten]
    );

    let (regs, effects) = hv.vmcall(regs);
    let out = HypercallOutput::from_bits(regs.rax);
    assert_eq!(
        (out.status(), out.reps_completed()),
        (HvStatus::SUCCESS, 5),
        "absolute count"
    );
    assert!(effects.advance_ip);
    assert_eq!(hv.values(5), [0, VSM_STATUS, 0, 0, 1]);
    let calls = hv
        .model
        .trace()
        .hypercalls_with_code(HypercallCode::GET_VP_REGISTERS);
    assert_eq!(
        calls[1].output.len(),
        3 * 16,
        "only elements 2..5 written by the re-issue"
    );
}

#[test]
fn reps_completed_is_absolute() {
    let mut hv = Hv::x64();
    let input = get_input(HV_VP_INDEX_SELF, HvInputVtl::CURRENT, &FIVE);
    let out = hv.call(
        rep(HypercallCode::GET_VP_REGISTERS, 5).with_rep_start(3),
        &input,
    );
    assert_eq!((out.status(), out.reps_completed()), (HvStatus::SUCCESS, 5));
    // An element error reports the absolute index of the failing element.
    let mut names = FIVE;
    names[3] = HvRegisterName(0x1234_5678);
    let input = get_input(HV_VP_INDEX_SELF, HvInputVtl::CURRENT, &names);
    let out = hv.call(
        rep(HypercallCode::GET_VP_REGISTERS, 5).with_rep_start(1),
        &input,
    );
    assert_eq!(
        (out.status(), out.reps_completed()),
        (HvStatus::INVALID_PARAMETER, 3)
    );
}

#[test]
fn rep_budget_times_out_until_done() {
    let mut hv = Hv::new(Scenario {
        limits: Limits {
            max_reps_per_call: 2,
            ..Limits::default()
        },
        ..Scenario::default()
    });
    hv.mem
        .write(IN, &get_input(HV_VP_INDEX_SELF, HvInputVtl::CURRENT, &FIVE))
        .unwrap();
    let mut regs = X64HypercallRegs {
        rcx: rep(HypercallCode::GET_VP_REGISTERS, 5).into_bits(),
        rdx: IN,
        r8: OUT,
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let (next, effects) = hv.vmcall(regs);
        let out = HypercallOutput::from_bits(next.rax);
        seen.push((out.status(), out.reps_completed()));
        regs = next;
        if effects.advance_ip {
            break;
        }
    }
    assert_eq!(
        seen,
        [
            (HvStatus::TIMEOUT, 2),
            (HvStatus::TIMEOUT, 4),
            (HvStatus::SUCCESS, 5)
        ]
    );
    assert_eq!(hv.values(5), [0, VSM_STATUS, 0, 0, 1]);
}

/// TLFS §"Simple and Rep hypercalls": the host need not process the whole list; a short
/// SUCCESS advances the IP and the caller continues from reps completed.
#[test]
fn short_success_completes_k_reps_and_advances() {
    let mut hv = Hv::new(Scenario {
        faults: vec![InjectedFault {
            code: HypercallCode::GET_VP_REGISTERS,
            nth: 1,
            action: FaultAction::ShortSuccess { reps: 2 },
            filter: Default::default(),
        }],
        ..Scenario::default()
    });
    hv.mem.write(OUT, &[0xAA; 80]).unwrap();
    let input = get_input(HV_VP_INDEX_SELF, HvInputVtl::CURRENT, &FIVE);
    let control = rep(HypercallCode::GET_VP_REGISTERS, 5);
    hv.mem.write(IN, &input).unwrap();
    let (regs, effects) = hv.vmcall(X64HypercallRegs {
        rcx: control.into_bits(),
        rdx: IN,
        r8: OUT,
        ..Default::default()
    });
    let out = HypercallOutput::from_bits(regs.rax);
    assert_eq!((out.status(), out.reps_completed()), (HvStatus::SUCCESS, 2));
    assert!(effects.advance_ip, "a short SUCCESS is not re-executed");
    let unwritten = u128::from_le_bytes([0xAA; 16]);
    assert_eq!(
        hv.values(5),
        [0, VSM_STATUS, unwritten, unwritten, unwritten]
    );
    // The caller continues from reps completed.
    let out = hv.call(control.with_rep_start(2), &input);
    assert_eq!((out.status(), out.reps_completed()), (HvStatus::SUCCESS, 5));
    assert_eq!(hv.values(5), [0, VSM_STATUS, 0, 0, 1]);
    let calls = hv
        .model
        .trace()
        .hypercalls_with_code(HypercallCode::GET_VP_REGISTERS);
    assert_eq!(
        calls.iter().map(|r| r.output.len()).collect::<Vec<_>>(),
        [2 * 16, 3 * 16]
    );
}

#[test]
fn short_success_with_no_reps_is_a_host_without_progress() {
    let mut scenario = Scenario {
        faults: vec![
            InjectedFault {
                code: HypercallCode::SET_VP_REGISTERS,
                nth: 1,
                action: FaultAction::ShortSuccess { reps: 0 },
                filter: Default::default(),
            },
            // On a simple call there is nothing to fall short of.
            InjectedFault {
                code: HypercallCode::POST_MESSAGE,
                nth: 1,
                action: FaultAction::ShortSuccess { reps: 0 },
                filter: Default::default(),
            },
            InjectedFault {
                code: HypercallCode::FLUSH_VIRTUAL_ADDRESS_LIST,
                nth: 1,
                action: FaultAction::ShortSuccess { reps: 1 },
                filter: Default::default(),
            },
        ],
        ..Scenario::default()
    };
    scenario
        .host_calls
        .insert(HypercallCode::FLUSH_VIRTUAL_ADDRESS_LIST, HvStatus::SUCCESS);
    let mut hv = Hv::new(scenario);
    let control = rep(HypercallCode::SET_VP_REGISTERS, 2).with_rep_start(1);
    let input = set_input(
        HV_VP_INDEX_SELF,
        vtl0(),
        &[(RIP, 0x1000), (x64_reg::RAX, 7)],
    );
    let out = hv.call(control, &input);
    assert_eq!((out.status(), out.reps_completed()), (HvStatus::SUCCESS, 1));
    assert_eq!(
        hv.model.register(0, Vtl::VTL0, x64_reg::RAX),
        Ok(0),
        "not set"
    );

    let out = hv.call(simple(HypercallCode::POST_MESSAGE), &post_message_input(1));
    assert_eq!((out.status(), out.reps_completed()), (HvStatus::SUCCESS, 0));

    // The host table's rep calls fall short the same way.
    let flush = rep(HypercallCode::FLUSH_VIRTUAL_ADDRESS_LIST, 3).with_rep_start(1);
    let out = hv.call(flush, &[]);
    assert_eq!((out.status(), out.reps_completed()), (HvStatus::SUCCESS, 2));
}

#[test]
fn rep_budget_can_end_in_short_success() {
    let mut scenario = Scenario {
        limits: Limits {
            max_reps_per_call: 2,
            budget_end: BudgetEnd::ShortSuccess,
            ..Limits::default()
        },
        // A fault that stops earlier than the budget decides how the call ends.
        faults: vec![InjectedFault {
            code: HypercallCode::GET_VP_REGISTERS,
            nth: 2,
            action: FaultAction::Timeout { reps: 1 },
            filter: Default::default(),
        }],
        ..Scenario::default()
    };
    scenario
        .host_calls
        .insert(HypercallCode::FLUSH_VIRTUAL_ADDRESS_LIST, HvStatus::SUCCESS);
    let mut hv = Hv::new(scenario);
    let input = get_input(HV_VP_INDEX_SELF, HvInputVtl::CURRENT, &FIVE);
    let control = rep(HypercallCode::GET_VP_REGISTERS, 5);
    let mut seen = Vec::new();
    let mut start = 0;
    while start < 5 {
        hv.mem.write(IN, &input).unwrap();
        let (regs, effects) = hv.vmcall(X64HypercallRegs {
            rcx: control.with_rep_start(start).into_bits(),
            rdx: IN,
            r8: OUT,
            ..Default::default()
        });
        let out = HypercallOutput::from_bits(regs.rax);
        seen.push((
            start,
            out.status(),
            out.reps_completed(),
            effects.advance_ip,
        ));
        start = out.reps_completed();
    }
    assert_eq!(
        seen,
        [
            (0, HvStatus::SUCCESS, 2, true),
            (2, HvStatus::TIMEOUT, 3, false),
            (3, HvStatus::SUCCESS, 5, true)
        ]
    );
    assert_eq!(hv.values(5), [0, VSM_STATUS, 0, 0, 1]);
    let out = hv.call(rep(HypercallCode::FLUSH_VIRTUAL_ADDRESS_LIST, 3), &[]);
    assert_eq!((out.status(), out.reps_completed()), (HvStatus::SUCCESS, 2));
}

#[test]
fn x64_fast_output_lands_after_the_input_pairs() {
    let mut hv = Hv::x64();
    let input = get_input(
        HV_VP_INDEX_SELF,
        HvInputVtl::CURRENT,
        &[HvRegisterName::VSM_VP_STATUS],
    );
    let mut block = [0u8; 32];
    block[..input.len()].copy_from_slice(&input);
    let word = |i: usize| u64::from_le_bytes(block[i * 8..i * 8 + 8].try_into().unwrap());
    let mut regs = X64HypercallRegs {
        rcx: rep(HypercallCode::GET_VP_REGISTERS, 1)
            .with_fast(true)
            .into_bits(),
        rdx: word(0),
        r8: word(1),
        ..Default::default()
    };
    regs.xmm[0] = u128::from(word(2)) | u128::from(word(3)) << 64;
    let (out, effects) = hv.vmcall(regs);
    assert_eq!(
        HypercallOutput::from_bits(out.rax).status(),
        HvStatus::SUCCESS
    );
    assert!(effects.advance_ip);
    // 20 input bytes = 2 pairs (RDX/R8, XMM0): the value is in XMM1.
    assert_eq!(out.xmm[1], VSM_STATUS);
    assert_eq!(
        (out.rdx, out.r8, out.xmm[0]),
        (regs.rdx, regs.r8, regs.xmm[0]),
        "input untouched"
    );
}

#[test]
fn x64_fast_beyond_rdx_r8_without_xmm_is_ud() {
    let mut hv = Hv::new(Scenario {
        xmm_fast_hypercalls: false,
        ..Scenario::default()
    });
    let (_, effects) = hv.vmcall(X64HypercallRegs {
        rcx: rep(HypercallCode::GET_VP_REGISTERS, 1)
            .with_fast(true)
            .into_bits(),
        ..Default::default()
    });
    assert_eq!(effects.fault, Some(crate::Fault::Ud));
    // An 8-byte input still works.
    assert_eq!(
        signal_event(&mut hv, simple(HypercallCode::SIGNAL_EVENT), 1, 0),
        HvStatus::SUCCESS
    );
}

#[test]
fn fast_input_too_big_for_the_block_is_invalid_input() {
    let mut hv = Hv::x64();
    let (regs, effects) = hv.vmcall(X64HypercallRegs {
        rcx: simple(HypercallCode::POST_MESSAGE)
            .with_fast(true)
            .into_bits(),
        ..Default::default()
    });
    assert_eq!(effects.fault, None);
    assert_eq!(
        HypercallOutput::from_bits(regs.rax).status(),
        HvStatus::INVALID_HYPERCALL_INPUT
    );
}

#[test]
fn post_message_and_signal_event_input_rules() {
    let mut hv = Hv::new(Scenario {
        ports: BTreeMap::from([(5, Vtl::VTL0)]),
        ..Scenario::default()
    });
    let post = simple(HypercallCode::POST_MESSAGE);
    assert_eq!(
        hv.call(post, &post_message_input(5)).status(),
        HvStatus::SUCCESS
    );
    assert_eq!(
        hv.call(post, &post_message_input(6)).status(),
        HvStatus::INVALID_CONNECTION_ID
    );
    let mut input = post_message_input(5);
    input[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(
        hv.call(post, &input).status(),
        HvStatus::INVALID_PARAMETER,
        "type 0"
    );
    input[8..12].copy_from_slice(&0x8000_0001u32.to_le_bytes());
    assert_eq!(
        hv.call(post, &input).status(),
        HvStatus::INVALID_PARAMETER,
        "hypervisor type"
    );
    let mut input = post_message_input(5);
    input[12..16].copy_from_slice(&241u32.to_le_bytes());
    assert_eq!(
        hv.call(post, &input).status(),
        HvStatus::INVALID_PARAMETER,
        "payload 241"
    );

    let signal = simple(HypercallCode::SIGNAL_EVENT);
    assert_eq!(signal_event(&mut hv, signal, 5, 2047), HvStatus::SUCCESS);
    assert_eq!(
        signal_event(&mut hv, signal, 5, 2048),
        HvStatus::INVALID_PARAMETER
    );
    assert_eq!(
        signal_event(&mut hv, signal, 7, 0),
        HvStatus::INVALID_CONNECTION_ID
    );
    // TLFS: the flag is checked against the port's flag count, so an unknown connection wins
    // over a bad flag.
    assert_eq!(
        signal_event(&mut hv, signal, 7, 2048),
        HvStatus::INVALID_CONNECTION_ID
    );
    // The trace keeps what the paravisor sent.
    let posted = hv
        .model
        .trace()
        .hypercalls_with_code(HypercallCode::POST_MESSAGE);
    assert_eq!(posted[0].input, post_message_input(5));
    assert_eq!(
        (posted[0].input_gpa, posted[0].vp, posted[0].vtl),
        (IN, 0, hvdef::Vtl::VTL2)
    );
}

#[test]
fn install_intercept_records_valid_requests() {
    let mut hv = Hv::x64();
    let install = simple(HypercallCode::INSTALL_INTERCEPT);
    assert_eq!(
        hv.call(install, &install_input(0x0D)).status(),
        HvStatus::SUCCESS
    );
    let mut bad = install_input(0x0D);
    bad[8] = 0x08; // access bit 3 is reserved
    assert_eq!(hv.call(install, &bad).status(), HvStatus::INVALID_PARAMETER);
    // OpenHCL hardware_cvm `install_intercept`: not "self" is ACCESS_DENIED.
    let mut other = install_input(0x0D);
    other[0] = 0;
    assert_eq!(hv.call(install, &other).status(), HvStatus::ACCESS_DENIED);
    let installed = hv.model.installed_intercepts();
    assert_eq!(installed.len(), 1);
    assert_eq!(
        installed[0].intercept_type,
        hvdef::HvInterceptType::UNKNOWN_SYNIC_CONNECTION
    );
}

/// OpenVMM's VTL2 emulation implements intercept types 0x00, 0x01, 0x03, 0x0D, 0x0E, 0x0F and
/// 0x11 and refuses the rest, HvInterceptTypeHypercall (0x08) included (fact sheet §2.1); the
/// x64 types do not exist on arm64. Accepting 0x08 is a scenario choice.
#[test]
fn install_intercept_accepts_the_types_openvmm_implements() {
    let install = simple(HypercallCode::INSTALL_INTERCEPT);
    let mut hv = Hv::x64();
    for kind in [0x00, 0x01, 0x03, 0x0D, 0x0E, 0x0F, 0x11] {
        assert_eq!(
            hv.call(install, &install_input(kind)).status(),
            HvStatus::SUCCESS,
            "type {kind:#x}"
        );
    }
    for kind in [0x02, 0x06, 0x07, 0x08, 0x09, 0x0B, 0x10, 0x12, 0x13, 0x99] {
        assert_eq!(
            hv.call(install, &install_input(kind)).status(),
            HvStatus::INVALID_PARAMETER,
            "type {kind:#x}"
        );
    }
    let mut hv = Hv::new(Scenario {
        hypercall_intercept: crate::HypercallIntercept::Accepted,
        ..Scenario::default()
    });
    assert_eq!(
        hv.call(install, &install_input(0x08)).status(),
        HvStatus::SUCCESS
    );
}
