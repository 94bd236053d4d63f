//! Which VTL0 hypercalls reach VTL2 (fact sheet §2): the hypervisor serves VTL0's calls itself,
//! with VTL0 as the caller, and reflects to VTL2 only PostMessage / SignalEvent to a connection
//! it does not know and RetargetDeviceInterrupt for a device it does not know, when VTL2
//! installed the matching intercept (OpenVMM `vmm_core/virt_whp/src/hypercalls.rs`); VtlCall
//! enters VTL2; VtlReturn from VTL0 and calls from CPL > 0 / EL0 are #UD (TLFS).

use hvdef::aarch64::{reg as arm_reg, SMCCC_HV_FUNC_ID, SMCCC_VENDOR_HYP_UID};
use hvdef::{
    HvInputRetargetDeviceInterrupt, HvInputSignalEvent, HvInputVtl, HvInterceptType,
    HvRegisterName, HvRegisterVsmPartitionConfig, HvRegisterVsmVpStatus, HvStatus,
    HvVtlEntryReason, HypercallCode, Vtl, HV_PARTITION_ID_SELF, HV_VP_INDEX_SELF,
};
use zerocopy::IntoBytes;

use super::hypercalls::{install_input, post_message_input};
use super::*;
use crate::{Arch, Event, HypercallIntercept, Outcome, Vtl0Call, Vtl0Result};

const VTL0_RIP: u64 = 0x40_1000;
const INPUT: u64 = 0x5000;
const OUTPUT: u64 = 0x6000;

fn booted(scenario: Scenario) -> Hv {
    let mut hv = Hv::new(scenario);
    hv.boot_x64();
    let config = HvRegisterVsmPartitionConfig::new().with_intercept_page(true);
    let name = HvRegisterName::VSM_PARTITION_CONFIG;
    let out = hv.set_regs(HvInputVtl::CURRENT, &[(name, config.into_bits().into())]);
    assert_eq!(out.status(), HvStatus::SUCCESS);
    hv
}

fn post_to(connection: u32) -> Vtl0Call {
    Vtl0Call::x64(VTL0_RIP, simple(HypercallCode::POST_MESSAGE), INPUT, 0)
        .with_memory(INPUT, &post_message_input(connection))
}

fn signal(connection: u32) -> Vtl0Call {
    let input = HvInputSignalEvent {
        connection_id: connection,
        flag_number: 3,
        reserved: 0,
    };
    let word = u64::from_le_bytes(input.as_bytes().try_into().unwrap());
    Vtl0Call::x64(
        VTL0_RIP,
        simple(HypercallCode::SIGNAL_EVENT).with_fast(true),
        word,
        0,
    )
}

/// VTL0's one-register GetVpRegisters of `name` on itself, at explicit `vtl` or "current".
fn get_register(vtl: HvInputVtl, name: HvRegisterName) -> Vtl0Call {
    Vtl0Call::x64(
        VTL0_RIP,
        rep(HypercallCode::GET_VP_REGISTERS, 1),
        INPUT,
        OUTPUT,
    )
    .with_memory(INPUT, &get_input(HV_VP_INDEX_SELF, vtl, &[name]))
    .with_output(OUTPUT, 16)
}

fn retarget(device: u64) -> Vtl0Call {
    let input = HvInputRetargetDeviceInterrupt {
        partition_id: HV_PARTITION_ID_SELF,
        device_id: device,
        interrupt_source: 1,
        reserved1: 0,
        interrupt_data: 0xFEE0_0000,
        reserved2: 0,
        vector: 0x40,
        target_flags: 0,
        vp_mask_or_format: 1,
    };
    Vtl0Call::x64(
        VTL0_RIP,
        simple(HypercallCode::RETARGET_DEVICE_INTERRUPT),
        INPUT,
        0,
    )
    .with_memory(INPUT, input.as_bytes())
}

/// Runs `calls` from VTL0: the paravisor's first VtlReturn, then (for each call that reaches
/// VTL2) a VtlReturn that completes it with SUCCESS and the IP advanced. Returns the results
/// and how many times VTL2 was entered.
fn run(hv: &mut Hv, calls: Vec<Vtl0Call>) -> (Vec<Vtl0Result>, usize) {
    for call in calls {
        hv.model.vtl0().push(call);
    }
    let mut entries = 0;
    let (_, mut effects) = hv.vmcall(X64HypercallRegs {
        rcx: HypercallCode::VTL_RETURN.0.into(),
        ..Default::default()
    });
    while !effects.finished {
        entries += 1;
        let ip = hv.model.register(0, Vtl::VTL0, RIP).unwrap() as u64;
        if hv
            .model
            .vtl0()
            .in_flight(0)
            .is_some_and(|c| c.registers[0].1 as u64 == ip)
        {
            hv.set_regs(vtl0(), &[(RIP, (ip + 3).into())])
                .result()
                .unwrap();
        }
        hv.mem.write(ASSIST + 0x10, &0u64.to_le_bytes()).unwrap();
        effects = hv
            .vmcall(X64HypercallRegs {
                rcx: HypercallCode::VTL_RETURN.0.into(),
                rdx: INPUT,
                ..Default::default()
            })
            .1;
    }
    (hv.model.vtl0().results().to_vec(), entries)
}

fn vtl0_statuses(hv: &Hv, code: HypercallCode) -> Vec<Option<HvStatus>> {
    hv.model
        .trace()
        .hypercalls_with_code(code)
        .into_iter()
        .filter(|h| h.vtl == Vtl::VTL0)
        .map(|h| match h.outcome {
            Outcome::Reflected => None,
            _ => h.status(),
        })
        .collect()
}

#[test]
fn known_connections_are_served_for_vtl0_and_never_reach_vtl2() {
    let mut hv = booted(Scenario::default());
    let (results, entries) = run(&mut hv, vec![post_to(1), signal(1), post_to(2), signal(2)]);
    assert_eq!(entries, 0, "VTL2 was never entered");
    assert!(hv.model.trace().intercepts().is_empty());
    let statuses: Vec<HvStatus> = results.iter().map(Vtl0Result::status).collect();
    // Port 2 is VTL2's: VTL0 is below its minimum VTL (OpenVMM SynicPortMap).
    assert_eq!(
        statuses,
        [
            HvStatus::SUCCESS,
            HvStatus::SUCCESS,
            HvStatus::OPERATION_DENIED,
            HvStatus::OPERATION_DENIED
        ]
    );
    assert!(results.iter().all(|r| r.advanced() && !r.reached_vtl2));
    assert_eq!(
        vtl0_statuses(&hv, HypercallCode::POST_MESSAGE),
        [Some(HvStatus::SUCCESS), Some(HvStatus::OPERATION_DENIED)]
    );
}

#[test]
fn unknown_connections_reach_vtl2_only_with_the_intercept() {
    // Without VTL2's UnknownSynicConnection intercept the hypervisor answers VTL0 itself.
    let mut hv = Hv::new(Scenario::default());
    hv.wrmsr(hvdef::x86_64::HvX64Msr::HV_X64_MSR_GUEST_OS_ID, GUEST_OS_ID)
        .unwrap();
    let (results, entries) = run(&mut hv, vec![post_to(UNKNOWN_CONNECTION)]);
    assert_eq!(
        (entries, results[0].status()),
        (0, HvStatus::INVALID_CONNECTION_ID)
    );

    let mut hv = booted(Scenario::default());
    let (results, entries) = run(
        &mut hv,
        vec![post_to(UNKNOWN_CONNECTION), signal(UNKNOWN_CONNECTION)],
    );
    assert_eq!(entries, 2);
    assert!(results.iter().all(|r| r.reached_vtl2 && r.advanced()));
    assert_eq!(hv.model.trace().intercepts().len(), 2);
    assert_eq!(vtl0_statuses(&hv, HypercallCode::POST_MESSAGE), [None]);
    // Invalid input is the hypervisor's to refuse before the port map is consulted.
    let mut bad = post_message_input(UNKNOWN_CONNECTION);
    bad[12..16].copy_from_slice(&241u32.to_le_bytes());
    let call = Vtl0Call::x64(VTL0_RIP, simple(HypercallCode::POST_MESSAGE), INPUT, 0)
        .with_memory(INPUT, &bad);
    let (results, entries) = run(&mut hv, vec![call]);
    assert_eq!(
        (entries, results.last().unwrap().status()),
        (0, HvStatus::INVALID_PARAMETER)
    );
}

#[test]
fn unknown_devices_reach_vtl2_only_with_the_intercept() {
    let scenario = Scenario {
        devices: [(0x10, Vtl::VTL0), (0x20, Vtl::VTL2)].into(),
        ..Scenario::default()
    };
    let mut hv = booted(scenario.clone());
    let with = |device: u64, at: usize, value: u32| {
        let mut call = retarget(device);
        call.memory[0].1[at..at + 4].copy_from_slice(&value.to_le_bytes());
        call
    };
    let calls = vec![
        retarget(0x10),
        retarget(0x20),
        with(0x10, 16, 3), // interrupt source neither MSI nor I/O APIC
        with(0x10, 44, 4), // an unknown target flag
        with(0x10, 20, 1), // reserved1
    ];
    let (results, entries) = run(&mut hv, calls);
    assert_eq!(entries, 0);
    let statuses: Vec<HvStatus> = results.iter().map(Vtl0Result::status).collect();
    assert_eq!(
        statuses,
        [
            HvStatus::SUCCESS,
            HvStatus::INVALID_DEVICE_ID,
            HvStatus::INVALID_PARAMETER,
            HvStatus::INVALID_PARAMETER,
            HvStatus::INVALID_PARAMETER
        ]
    );

    let mut hv = booted(scenario);
    let install = install_input(HvInterceptType::RETARGET_INTERRUPT_WITH_UNKNOWN_DEVICE_ID.0);
    let out = hv.call(simple(HypercallCode::INSTALL_INTERCEPT), &install);
    assert_eq!(out.status(), HvStatus::SUCCESS);
    let (results, entries) = run(&mut hv, vec![retarget(0x10), retarget(0x20)]);
    assert_eq!(entries, 1);
    assert_eq!(
        (results[0].reached_vtl2, results[1].reached_vtl2),
        (false, true)
    );
}

#[test]
fn an_accepted_hypercall_intercept_reflects_every_vmm_bound_call() {
    let mut hv = booted(Scenario {
        hypercall_intercept: HypercallIntercept::Accepted,
        devices: [(0x10, Vtl::VTL0)].into(),
        ..Scenario::default()
    });
    let out = hv.call(
        simple(HypercallCode::INSTALL_INTERCEPT),
        &install_input(0x08),
    );
    assert_eq!(out.status(), HvStatus::SUCCESS);
    let get = get_register(HvInputVtl::CURRENT, HvRegisterName::VP_INDEX);
    let (results, entries) = run(&mut hv, vec![post_to(1), signal(1), retarget(0x10), get]);
    assert_eq!(
        entries, 3,
        "PostMessage, SignalEvent, RetargetDeviceInterrupt"
    );
    assert_eq!(
        results.iter().map(|r| r.reached_vtl2).collect::<Vec<_>>(),
        [true, true, true, false]
    );
}

#[test]
fn vtl0_reads_its_own_vsm_view() {
    let mut hv = booted(Scenario::default());
    let get = get_register(HvInputVtl::CURRENT, HvRegisterName::VSM_VP_STATUS);
    let enable = get_register(HvInputVtl::target(Vtl::VTL2), HvRegisterName::VSM_VP_STATUS);
    let (results, entries) = run(&mut hv, vec![get, enable]);
    assert_eq!(entries, 0);
    assert_eq!(results[0].status(), HvStatus::SUCCESS);
    let status = HvRegisterVsmVpStatus::from_bits(u64::from_le_bytes(
        results[0].output[..8].try_into().unwrap(),
    ));
    assert_eq!(status.active_vtl(), 0, "VTL0 sees itself active");
    assert_eq!(
        results[1].status(),
        HvStatus::ACCESS_DENIED,
        "no VTL2 state for VTL0"
    );
    assert_eq!(hv.model.active_vtl(0), Some(Vtl::VTL2), "VTL2 resumes");
}

#[test]
fn reflected_codes_model_a_host_with_unknown_triggers() {
    let mut hv = booted(Scenario {
        reflected_codes: [HypercallCode(0x0077)].into(),
        ..Scenario::default()
    });
    let odd = Vtl0Call::x64(VTL0_RIP, simple(HypercallCode(0x0077)), 0, 0);
    let other = Vtl0Call::x64(VTL0_RIP, simple(HypercallCode(0x0078)), 0, 0);
    let (results, entries) = run(&mut hv, vec![odd, other]);
    assert_eq!(entries, 1);
    assert!(results[0].reached_vtl2);
    assert_eq!(results[1].status(), HvStatus::INVALID_HYPERCALL_CODE);
}

#[test]
fn vtl_switches_and_user_mode_callers() {
    let mut hv = booted(Scenario::default());
    let ret = Vtl0Call::x64(VTL0_RIP, simple(HypercallCode::VTL_RETURN), 0, 0);
    let call = Vtl0Call::x64(VTL0_RIP, simple(HypercallCode::VTL_CALL), 0, 0)
        .with_register(x64_reg::RAX, 0);
    // CPL 3: the CS selector's RPL.
    let mut user = post_to(UNKNOWN_CONNECTION);
    let cs = user
        .registers
        .iter()
        .find(|(n, _)| *n == x64_reg::CS)
        .unwrap()
        .1;
    user = user.with_register(x64_reg::CS, cs | 3 << 96); // the selector is bits 111:96
    for c in [ret, call, user] {
        hv.model.vtl0().push(c);
    }
    let (_, effects) = hv.vmcall(X64HypercallRegs {
        rcx: HypercallCode::VTL_RETURN.0.into(),
        ..Default::default()
    });
    // VtlReturn from VTL0 is #UD (TLFS: no lower VTL); the VtlCall enters VTL2.
    assert!(effects.advance_ip && !effects.finished);
    let page = hv.mem.slice(ASSIST + 8, 4);
    assert_eq!(page, HvVtlEntryReason::VTL_CALL.0.to_le_bytes());
    let entered = |e: &Event| {
        matches!(
            e,
            Event::LowerVtlCall {
                vp: 0,
                vtl: Vtl::VTL0
            }
        )
    };
    assert!(hv.model.trace().events().iter().any(entered));
    let (_, effects) = hv.vmcall(X64HypercallRegs {
        rcx: HypercallCode::VTL_RETURN.0.into(),
        ..Default::default()
    });
    assert!(
        effects.finished,
        "the CPL3 call faults without reaching VTL2"
    );
    let results = hv.model.vtl0().results();
    assert_eq!(results[0].hypervisor_fault, Some(Fault::Ud));
    assert!(!results[0].reached_vtl2 && !results[0].advanced());
    assert!(
        results[1].reached_vtl2 && results[1].advanced(),
        "VtlCall returns past it"
    );
    assert_eq!(results[2].hypervisor_fault, Some(Fault::Ud));
    assert!(hv.model.trace().intercepts().is_empty());
}

#[test]
fn arm64_vtl0_is_served_too() {
    let mut hv = Hv::new(Scenario::for_arch(Arch::Aarch64));
    let pc = 0x8000_1000;
    let post = Vtl0Call::arm64(pc, simple(HypercallCode::POST_MESSAGE), INPUT, 0)
        .with_memory(INPUT, &post_message_input(1));
    let uid = Vtl0Call::arm64(pc, simple(HypercallCode(0)), 0, 0)
        .with_register(arm_reg::X0, SMCCC_VENDOR_HYP_UID.into());
    let el0 = Vtl0Call::arm64(pc, simple(HypercallCode::POST_MESSAGE), INPUT, 0).at_el0();
    let vtl_return = Vtl0Call::arm64(pc, simple(HypercallCode(0)), 0, 0).with_immediate(3);
    for c in [post, uid, el0, vtl_return] {
        hv.model.vtl0().push(c);
    }
    let effects = hv.model.hvc(0, 3, &mut [0; 31], &mut hv.mem);
    assert!(effects.finished, "nothing reached VTL2");
    let r = hv.model.vtl0().results();
    assert_eq!(r[0].status(), HvStatus::SUCCESS);
    assert_eq!(r[0].register(arm_reg::X0), 0);
    assert_eq!(r[1].register(arm_reg::X0), 0x4d32_ba58, "vendor UID word 0");
    assert_eq!(r[2].hypervisor_fault, Some(Fault::Ud), "EL0");
    assert_eq!(
        r[3].hypervisor_fault,
        Some(Fault::Ud),
        "VtlReturn from VTL0"
    );
    assert_eq!(r[0].registers[&arm_reg::X0], 0);
    let _ = SMCCC_HV_FUNC_ID;
}

#[test]
fn an_unrecoverable_exception_reaches_vtl2_only_when_intercepted() {
    // booted() sets only intercept_page: no interception, the partition resets.
    let mut hv = booted(Scenario::default());
    hv.model
        .vtl0()
        .push(Vtl0Call::x64(VTL0_RIP, simple(HypercallCode(0)), 0, 0).unrecoverable_exception());
    let (_, effects) = hv.vmcall(X64HypercallRegs {
        rcx: HypercallCode::VTL_RETURN.0.into(),
        ..Default::default()
    });
    assert!(effects.finished);
    assert!(hv
        .model
        .trace()
        .events()
        .iter()
        .any(|e| matches!(e, Event::PartitionReset { vp: 0 })));

    let mut hv = booted(Scenario::default());
    let config = HvRegisterVsmPartitionConfig::new()
        .with_intercept_page(true)
        .with_intercept_unrecoverable_exception(true);
    let name = HvRegisterName::VSM_PARTITION_CONFIG;
    let out = hv.set_regs(HvInputVtl::CURRENT, &[(name, config.into_bits().into())]);
    assert_eq!(out.status(), HvStatus::SUCCESS);
    hv.model
        .vtl0()
        .push(Vtl0Call::x64(VTL0_RIP, simple(HypercallCode(0)), 0, 0).unrecoverable_exception());
    let (_, effects) = hv.vmcall(X64HypercallRegs {
        rcx: HypercallCode::VTL_RETURN.0.into(),
        ..Default::default()
    });
    assert!(effects.advance_ip && !effects.finished);
    let intercepts = hv.model.trace().intercepts();
    assert_eq!(intercepts.len(), 1);
    let message = intercepts[0].1;
    assert_eq!(
        message.header.message_type,
        hvdef::HvMessageType::UNRECOVERABLE_EXCEPTION
    );
    assert_eq!(message.header.payload_size, 0x28);
    assert_eq!(
        u64::from_le_bytes(message.payload_bytes()[0x18..0x20].try_into().unwrap()),
        VTL0_RIP,
        "the header's RIP"
    );
}

/// VTL0's StartVirtualProcessor is the hypervisor's, per target VTL: a higher target is
/// ACCESS_DENIED (the TLFS lets a VTL start VPs only in its own or a lower VTL); on a VP the
/// paravisor started at VTL2 it starts VTL0 once (its context in VTL0's registers, VTL2 still
/// the VP's active VTL, the VP named by `take_lower_starts`), a second time INVALID_VP_STATE;
/// a VP not yet started starts in VTL0. None of it reaches VTL2.
#[test]
fn vtl0_start_virtual_processor_is_served_per_target_vtl() {
    let mut hv = booted(Scenario {
        vp_count: 3,
        ..Scenario::default()
    });
    // The paravisor has started VP 1 at VTL2 (enable, then start).
    for code in [
        HypercallCode::ENABLE_VP_VTL,
        HypercallCode::START_VIRTUAL_PROCESSOR,
    ] {
        let input = hvdef::x86_64::HvX64InputEnableVpVtl {
            partition_id: HV_PARTITION_ID_SELF,
            vp_index: 1,
            target_vtl: 2,
            reserved: [0; 3],
            context: zerocopy::FromZeros::new_zeroed(),
        };
        assert_eq!(
            hv.call(simple(code), input.as_bytes()).status(),
            HvStatus::SUCCESS
        );
    }
    let start = |vp_index: u32, target_vtl: u8| {
        let mut input = hvdef::x86_64::HvX64InputStartVirtualProcessor {
            partition_id: HV_PARTITION_ID_SELF,
            vp_index,
            target_vtl,
            reserved: [0; 3],
            context: zerocopy::FromZeros::new_zeroed(),
        };
        input.context.rip = 0x1000 * u64::from(vp_index) + 0x123;
        input.context.cr3 = 0x5000;
        Vtl0Call::x64(
            VTL0_RIP,
            simple(HypercallCode::START_VIRTUAL_PROCESSOR),
            INPUT,
            0,
        )
        .with_memory(INPUT, input.as_bytes())
    };
    assert!(!hv.model.vtl_started(1, Vtl::VTL0));
    let (results, entries) = run(
        &mut hv,
        vec![start(2, 2), start(1, 0), start(1, 0), start(2, 0)],
    );
    assert_eq!(entries, 0);
    let statuses: Vec<HvStatus> = results.iter().map(Vtl0Result::status).collect();
    assert_eq!(
        statuses,
        [
            HvStatus::ACCESS_DENIED,
            HvStatus::SUCCESS,
            HvStatus::INVALID_VP_STATE,
            HvStatus::SUCCESS
        ]
    );
    assert!(hv.model.vtl_started(1, Vtl::VTL0));
    assert_eq!(hv.model.active_vtl(1), Some(Vtl::VTL2), "VTL2 runs on");
    let rip = hv.model.vp_state(1, Vtl::VTL0, hvdef::x86_64::reg::RIP);
    assert_eq!(rip, Some(0x1123), "VTL0's context");
    let cr3 = hv.model.vp_state(1, Vtl::VTL0, hvdef::x86_64::reg::CR3);
    assert_eq!(cr3, Some(0x5000));
    assert_eq!(hv.model.take_lower_starts(), vec![1]);
    assert_eq!(hv.model.take_lower_starts(), Vec::<u32>::new());
    assert!(hv.model.vp_started(2));
    assert_eq!(hv.model.active_vtl(2), Some(Vtl::VTL0));
}

/// On a nested host the L1 hypervisor runs this partition's VSM: VTL0's PostMessage without the
/// nested bit names a connection L1 does not know, so it is reflected like any unknown
/// connection, after the same input validation.
#[test]
fn a_nested_hosts_unmarked_l0_call_from_vtl0_is_reflected_after_validation() {
    let mut hv = booted(Scenario {
        nested: true,
        ..Scenario::default()
    });
    let mut bad = post_message_input(1);
    bad[8..12].fill(0); // message type 0
    let invalid = Vtl0Call::x64(VTL0_RIP, simple(HypercallCode::POST_MESSAGE), INPUT, 0)
        .with_memory(INPUT, &bad);
    let (results, entries) = run(&mut hv, vec![post_to(1), invalid]);
    assert_eq!(entries, 1);
    assert!(results[0].reached_vtl2);
    assert_eq!(
        (results[1].reached_vtl2, results[1].status()),
        (false, HvStatus::INVALID_PARAMETER)
    );
}

/// A VTL call is the VTL call entry alone: x64 a `vmcall` whose RCX is exactly the VtlCall
/// code with RAX (the VTL control) 0 — any other bit in either is #UD (TLFS vsm.md
/// "HvCallVtlCall": the call's control must be valid), raised by the hypervisor before VTL2
/// sees anything, as for VTL2's own calls (`Model::vmcall`); arm64 `hvc #2` only — the
/// VtlCall code through SMCCC is a code the hypervisor does not implement, as the VtlReturn
/// code is (TLFS vsm.md: arm64 switches VTLs with `hvc #2`/`#3`).
#[test]
fn a_vtl_call_code_with_a_bad_control_or_through_smccc_is_no_vtl_call() {
    let mut hv = booted(Scenario::default());
    let bad_rax = Vtl0Call::x64(VTL0_RIP, simple(HypercallCode::VTL_CALL), 0, 0)
        .with_register(x64_reg::RAX, 1);
    let fast = Vtl0Call::x64(
        VTL0_RIP,
        simple(HypercallCode::VTL_CALL).with_fast(true),
        0,
        0,
    )
    .with_register(x64_reg::RAX, 0);
    let (results, entries) = run(&mut hv, vec![bad_rax, fast]);
    assert_eq!(entries, 0, "nothing entered VTL2");
    for r in &results {
        assert_eq!(r.hypervisor_fault, Some(Fault::Ud), "{r:?}");
        assert!(!r.reached_vtl2 && !r.advanced(), "{r:?}");
    }
    assert!(!hv
        .model
        .trace()
        .events()
        .iter()
        .any(|e| matches!(e, Event::LowerVtlCall { .. })));

    let mut hv = Hv::new(Scenario::for_arch(Arch::Aarch64));
    let pc = 0x8000_1000;
    for code in [HypercallCode::VTL_CALL, HypercallCode::VTL_RETURN] {
        hv.model
            .vtl0()
            .push(Vtl0Call::arm64(pc, simple(code), 0, 0));
    }
    let effects = hv.model.hvc(0, 3, &mut [0; 31], &mut hv.mem);
    assert!(effects.finished, "nothing reached VTL2");
    for r in hv.model.vtl0().results() {
        assert_eq!(r.status(), HvStatus::INVALID_HYPERCALL_CODE, "{r:?}");
        assert!(!r.reached_vtl2 && r.advanced(), "{r:?}");
    }
}
