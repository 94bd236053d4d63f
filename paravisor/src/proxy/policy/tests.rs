//! The policy table's tests: each entry, the relay screens, the layouts, and properties of
//! `classify` over decoded messages.

use super::*;
use crate::proxy::decode::{decode_arm64, decode_x64};
use crate::proxy::{Decoded, Relay, FAST_WORDS_MAX};
use hvdef::aarch64::HvArm64HypercallInterceptMessage;
use hvdef::x86_64::HvX64HypercallInterceptMessage;
use hvdef::x86_64::FAST_XMM_WORDS;
use hvdef::HV_PAGE_SIZE;
use proptest::prelude::*;
use zerocopy::{FromBytes, IntoBytes};

const IN: u64 = 0x1000;
const OUT: u64 = 0x2000;
const VTL2: core::ops::Range<u64> = 0x10_0000..0x20_0000;
/// VTL0 connection 0x20 goes to host connection 1; VTL0 owns device 0x30.
fn relay() -> RelayTable {
    RelayTable::EMPTY
        .with_connections("0x20:1")
        .unwrap()
        .with_devices("0x30")
        .unwrap()
}

/// A partition with every privilege, EnableExtendedHypercalls included.
fn all() -> HvPartitionPrivilegeMask {
    HvPartitionPrivilegeMask::from_bits(u64::MAX)
}

fn vtl0() -> Vtl0Memory {
    Vtl0Memory::new(core::slice::from_ref(&(0..0x40_0000)), VTL2)
}

/// The validated list `[gpa, gpa + len)` of [`vtl0`].
fn list(gpa: u64, len: usize) -> crate::proxy::GuestRange {
    vtl0().range(gpa, len as u64).unwrap()
}

/// VTL0's register block in these requests: zeros, as long as the ABI's (x64 with XMM fast
/// input, arm64 SMCCC); tests that need contents point `fast` at their own.
static BLOCK: [u64; FAST_WORDS_MAX] = [0; FAST_WORDS_MAX];

fn req(isa: Isa, control: Control) -> Request<'static> {
    Request {
        isa,
        control,
        control_register: match isa {
            Isa::X64 => crate::proxy::ControlRegister::Rcx,
            Isa::Arm64 => crate::proxy::ControlRegister::X1,
        },
        input_gpa: if control.fast() { 0 } else { IN },
        output_gpa: if control.fast() { 0 } else { OUT },
        fast: match isa {
            Isa::X64 => &BLOCK[..FAST_XMM_WORDS],
            Isa::Arm64 => &BLOCK[..hvdef::aarch64::SMCCC_FAST_WORDS],
        },
        ip: 0,
        instruction_len: 3,
    }
}

/// The smallest valid control word for `code`: one rep, one variable-header word.
fn valid(code: C) -> Control {
    Control::new()
        .with_code(code)
        .with_rep_count(u16::from(code.is_rep()))
        .with_variable_header_size(u16::from(code.takes_variable_header()))
}

/// The statuses a refusal may carry: the TLFS's common ones plus the per-call ones the relay
/// uses. Never SUCCESS.
fn allowed(status: HvStatus) -> bool {
    [
        HvStatus::INVALID_HYPERCALL_CODE,
        HvStatus::INVALID_HYPERCALL_INPUT,
        HvStatus::INVALID_ALIGNMENT,
        HvStatus::INVALID_PARAMETER,
        HvStatus::ACCESS_DENIED,
        HvStatus::INVALID_CONNECTION_ID,
        HvStatus::INVALID_DEVICE_ID,
    ]
    .contains(&status)
}

#[derive(Debug, PartialEq)]
enum Expect {
    Relay,
    Answer,
    Refuse(HvStatus),
    Fault,
}

/// The table as the design states it, checked against [`TABLE`] entry by entry.
const EXPECTED: [(C, Expect); 14] = [
    (C::POST_MESSAGE, Expect::Relay),
    (C::SIGNAL_EVENT, Expect::Relay),
    (C::RETARGET_DEVICE_INTERRUPT, Expect::Relay),
    (C::EXT_QUERY_CAPABILITIES, Expect::Answer),
    (
        C::ENABLE_PARTITION_VTL,
        Expect::Refuse(HvStatus::ACCESS_DENIED),
    ),
    (
        C::DISABLE_PARTITION_VTL,
        Expect::Refuse(HvStatus::ACCESS_DENIED),
    ),
    (C::ENABLE_VP_VTL, Expect::Refuse(HvStatus::ACCESS_DENIED)),
    (C::DISABLE_VP_VTL, Expect::Refuse(HvStatus::ACCESS_DENIED)),
    (
        C::MODIFY_VTL_PROTECTION_MASK,
        Expect::Refuse(HvStatus::ACCESS_DENIED),
    ),
    (
        C::INSTALL_INTERCEPT,
        Expect::Refuse(HvStatus::ACCESS_DENIED),
    ),
    (
        C::INSTALL_INTERCEPT_EX,
        Expect::Refuse(HvStatus::ACCESS_DENIED),
    ),
    (
        C::TRANSLATE_VIRTUAL_ADDRESS,
        Expect::Refuse(HvStatus::ACCESS_DENIED),
    ),
    (C::VTL_CALL, Expect::Fault),
    (C::VTL_RETURN, Expect::Fault),
];

/// `policy`'s jump finds every entry, and nothing for every other code.
#[test]
fn the_lookup_is_the_table() {
    for code in 0..=u16::MAX {
        let code = C(code);
        assert_eq!(
            policy(code).map(|p| p as *const Policy),
            TABLE
                .iter()
                .find(|p| p.code == code)
                .map(|p| p as *const Policy),
            "{code:?}"
        );
    }
}

#[test]
fn each_table_entry_acts_as_designed() {
    assert_eq!(TABLE.len(), EXPECTED.len());
    for (code, expect) in EXPECTED {
        assert!(policy(code).is_some(), "{code:?} missing");
        for isa in [Isa::X64, Isa::Arm64] {
            let control = valid(code);
            let got = classify(&req(isa, control), &vtl0(), all());
            // hvdef's input structs (plus the one variable-header word of `valid`).
            let input_len = match code {
                C::POST_MESSAGE => 256,
                C::SIGNAL_EVENT => 8,
                _ => 56 + 8,
            };
            let want = match expect {
                Expect::Relay => Action::Relay(Relay {
                    policy: policy(code).unwrap(),
                    control,
                    input_len,
                    fast_as_memory: false,
                    input: Some(list(IN, input_len)),
                }),
                Expect::Answer => Action::AnswerExtCapabilities {
                    output: list(OUT, 8),
                },
                Expect::Refuse(status) => Action::Refuse(status),
                Expect::Fault => Action::Fault,
            };
            assert_eq!(got, want, "{code:?} on {isa:?}");
        }
    }
}

#[test]
fn sizes_from_hvdef_and_linux() {
    let size = |c| policy(c).unwrap().layout.fixed_input;
    assert_eq!(size(C::POST_MESSAGE), 256);
    assert_eq!(size(C::SIGNAL_EVENT), 8);
    assert_eq!(size(C::RETARGET_DEVICE_INTERRUPT), 56);
    // A sparse processor set: valid-bank mask and 2 banks in the variable header.
    let control = valid(C::RETARGET_DEVICE_INTERRUPT).with_variable_header_size(3);
    let layout = policy(C::RETARGET_DEVICE_INTERRUPT).unwrap().layout;
    assert_eq!(layout.input_len(control), 56 + 24);
    assert_eq!(
        policy(C::EXT_QUERY_CAPABILITIES)
            .unwrap()
            .layout
            .output_fixed,
        8
    );
    for p in TABLE.iter().filter(|p| relayed(p.code)) {
        assert!(
            !p.code.is_rep(),
            "{:?}: no relayed call is a rep call",
            p.code
        );
    }
    for p in &TABLE {
        assert_eq!(
            p.layout.output_fixed != 0,
            p.rule == Rule::AnswerExtCapabilities
        );
    }
}

#[test]
fn every_code_classifies_and_unknown_codes_are_unhandled() {
    let mem = vtl0();
    for code in 0..=u16::MAX {
        let code = C(code);
        let known = policy(code).is_some();
        let controls = [
            Control::new().with_code(code),
            Control::new().with_code(code).with_fast(true),
            valid(code),
            Control::from_bits(valid(code).into_bits() | 1 << 31),
        ];
        for isa in [Isa::X64, Isa::Arm64] {
            for control in controls {
                let action = classify(&req(isa, control), &mem, all());
                assert_eq!(action == Action::Unhandled, !known, "{code:?}");
                match action {
                    Action::Refuse(status) => assert!(allowed(status), "{code:?}: {status:?}"),
                    Action::Fault => assert!(vtl_switch(code), "{code:?}"),
                    Action::Relay(_) => assert!(relayed(code), "{code:?}"),
                    Action::AnswerExtCapabilities { .. } => {
                        assert_eq!(code, C::EXT_QUERY_CAPABILITIES)
                    }
                    Action::Unhandled => {}
                }
            }
        }
    }
}

#[test]
fn connections_are_relayed_only_through_the_table() {
    let p = policy(C::POST_MESSAGE).unwrap();
    let mut message = <hvdef::HvInputPostMessage as zerocopy::FromZeros>::new_zeroed();
    message.connection_id = 0x20;
    let mut bytes = message.as_bytes().to_vec();
    assert_eq!(p.screen(&mut bytes, &relay()), Ok(()));
    assert_eq!(bytes[..4], 1u32.to_le_bytes(), "rewritten to the host id");
    assert_eq!(bytes[4..], message.as_bytes()[4..], "nothing else changes");
    // The host id itself, or any other id, is not VTL0's to name.
    for id in [1u32, 2, 0x21, u32::MAX] {
        let mut bytes = message.as_bytes().to_vec();
        bytes[..4].copy_from_slice(&id.to_le_bytes());
        assert_eq!(
            p.screen(&mut bytes, &relay()),
            Err(HvStatus::INVALID_CONNECTION_ID),
            "{id:#x}"
        );
        assert_eq!(
            p.screen(&mut bytes, &RelayTable::EMPTY),
            Err(HvStatus::INVALID_CONNECTION_ID)
        );
    }
    assert_eq!(
        p.screen(&mut [0; 3], &relay()),
        Err(HvStatus::INVALID_HYPERCALL_INPUT)
    );
}

#[test]
fn fast_signal_event_is_classified_then_screened_on_its_block() {
    for isa in [Isa::X64, Isa::Arm64] {
        let mut r = req(isa, valid(C::SIGNAL_EVENT).with_fast(true));
        let mut block = [0; 16];
        block[0] = 0x20 | 5 << 32; // connection 0x20, flag 5
        r.fast = &block[..if isa == Isa::X64 { 2 } else { 16 }];
        assert_eq!(
            classify(&r, &vtl0(), all()),
            Action::Relay(Relay {
                policy: policy(C::SIGNAL_EVENT).unwrap(),
                control: valid(C::SIGNAL_EVENT).with_fast(true),
                input_len: 8,
                fast_as_memory: false,
                input: None,
            })
        );
        let mut screened = block;
        policy(C::SIGNAL_EVENT)
            .unwrap()
            .screen_fast(&mut screened, &relay())
            .unwrap();
        assert_eq!(screened[0], 1 | 5 << 32);
        let mut unmapped = [0x21u64];
        assert_eq!(
            policy(C::SIGNAL_EVENT)
                .unwrap()
                .screen_fast(&mut unmapped, &relay()),
            Err(HvStatus::INVALID_CONNECTION_ID)
        );
        assert_eq!(unmapped, [0x21], "a refused block is not rewritten");
    }
    // x64 XMM fast input carrying a PostMessage goes memory-based.
    let mut r = req(Isa::X64, valid(C::POST_MESSAGE).with_fast(true));
    let mut block = [0; FAST_XMM_WORDS];
    block[0] = 0x20;
    r.fast = &block;
    assert_eq!(
        classify(&r, &vtl0(), all()),
        Action::Refuse(HvStatus::INVALID_HYPERCALL_INPUT),
        "256 bytes never fit a fast block"
    );
}

#[test]
fn layout_sizes_count_header_variable_header_and_elements() {
    let layout = Layout {
        fixed_input: 16,
        input_element: 8,
        output_fixed: 4,
        output_element: 16,
    };
    let control = Control::new()
        .with_rep_count(3)
        .with_variable_header_size(2);
    assert_eq!(layout.input_len(control), 16 + 2 * 8 + 3 * 8);
    assert_eq!(layout.output_len(control), 4 + 3 * 16);
}

#[test]
fn screen_relays_through_the_table() {
    let p = policy(C::POST_MESSAGE).unwrap();
    let mut message = post_message_bytes(0x20);
    assert_eq!(p.screen(&mut message, &relay()), Ok(()));
    assert_eq!(message[..4], 1u32.to_le_bytes());
    let mut unmapped = post_message_bytes(0x21);
    assert_eq!(
        p.screen(&mut unmapped, &relay()),
        Err(HvStatus::INVALID_CONNECTION_ID)
    );
    assert_eq!(
        unmapped,
        post_message_bytes(0x21),
        "a refused input is not rewritten"
    );
}

fn post_message_bytes(connection: u32) -> Vec<u8> {
    let mut m = <hvdef::HvInputPostMessage as zerocopy::FromZeros>::new_zeroed();
    m.connection_id = connection;
    m.as_bytes().to_vec()
}

/// arm64 carries a RetargetDeviceInterrupt (56 bytes, plus its VP-set banks) in the fast
/// block and the paravisor's own SMCCC call carries all 128 bytes of it; x64 XMM fast input
/// is relayed memory-based. The device id is screened in the block.
#[test]
fn fast_retarget_rides_the_block_it_fits() {
    let input = <HvInputRetargetDeviceInterrupt as zerocopy::FromZeros>::new_zeroed();
    let fast_req = |isa, var: u16, device: u64| {
        let mut i = input;
        (i.partition_id, i.device_id) = (HV_PARTITION_ID_SELF, device);
        let mut r = req(
            isa,
            valid(C::RETARGET_DEVICE_INTERRUPT)
                .with_fast(true)
                .with_variable_header_size(var),
        );
        let mut block = [0; FAST_WORDS_MAX];
        for (word, chunk) in block.iter_mut().zip(i.as_bytes().chunks(8)) {
            *word = u64::from_le_bytes(chunk.try_into().unwrap());
        }
        r.fast = &block[..r.fast.len()];
        classify(&r, &vtl0(), all())
    };
    let forward = |var: u16, len, fast_as_memory: bool| {
        Action::Relay(Relay {
            policy: policy(C::RETARGET_DEVICE_INTERRUPT).unwrap(),
            control: valid(C::RETARGET_DEVICE_INTERRUPT)
                .with_variable_header_size(var)
                .with_fast(!fast_as_memory),
            input_len: len,
            fast_as_memory,
            input: None,
        })
    };
    assert_eq!(fast_req(Isa::Arm64, 0, 0x30), forward(0, 56, false));
    assert_eq!(
        fast_req(Isa::Arm64, 9, 0x30),
        forward(9, 128, false),
        "exactly full"
    );
    assert_eq!(
        fast_req(Isa::Arm64, 10, 0x30),
        Action::Refuse(HvStatus::INVALID_HYPERCALL_INPUT),
        "beyond VTL0's block"
    );
    assert_eq!(fast_req(Isa::X64, 0, 0x30), forward(0, 56, true));
    // The device is the run loop's to screen, on the block it sends: all 7 words of it
    // (the device id is bytes 8..16).
    assert_eq!(fast_req(Isa::Arm64, 0, 0x31), forward(0, 56, false));
    let p = policy(C::RETARGET_DEVICE_INTERRUPT).unwrap();
    let block_of = |device: u64| {
        let mut i = input;
        (i.partition_id, i.device_id) = (HV_PARTITION_ID_SELF, device);
        let mut words = [0u64; 7];
        for (word, chunk) in words.iter_mut().zip(i.as_bytes().chunks(8)) {
            *word = u64::from_le_bytes(chunk.try_into().unwrap());
        }
        words
    };
    let mut owned = block_of(0x30);
    assert_eq!(p.screen_fast(&mut owned, &relay()), Ok(()));
    assert_eq!(owned, block_of(0x30), "relayed unchanged");
    assert_eq!(
        p.screen_fast(&mut block_of(0x31), &relay()),
        Err(HvStatus::INVALID_DEVICE_ID)
    );
}

#[test]
fn devices_are_relayed_only_if_vtl0_owns_them() {
    let p = policy(C::RETARGET_DEVICE_INTERRUPT).unwrap();
    let input = |partition: u64, device: u64| {
        let mut r = <HvInputRetargetDeviceInterrupt as zerocopy::FromZeros>::new_zeroed();
        (r.partition_id, r.device_id) = (partition, device);
        r.as_bytes().to_vec()
    };
    let mut ok = input(HV_PARTITION_ID_SELF, 0x30);
    assert_eq!(p.screen(&mut ok, &relay()), Ok(()));
    assert_eq!(ok, input(HV_PARTITION_ID_SELF, 0x30), "unchanged");
    assert_eq!(
        p.screen(&mut input(HV_PARTITION_ID_SELF, 0x31), &relay()),
        Err(HvStatus::INVALID_DEVICE_ID)
    );
    assert_eq!(
        p.screen(&mut input(7, 0x30), &relay()),
        Err(HvStatus::ACCESS_DENIED)
    );
}

#[test]
fn extended_query_is_answered_and_fast_is_invalid_parameter() {
    let query = Control::new().with_code(C::EXT_QUERY_CAPABILITIES);
    let mut r = req(Isa::X64, query);
    assert_eq!(
        classify(&r, &vtl0(), all()),
        Action::AnswerExtCapabilities {
            output: list(OUT, 8)
        }
    );
    r.output_gpa = VTL2.start;
    assert_eq!(
        classify(&r, &vtl0(), all()),
        Action::Refuse(HvStatus::ACCESS_DENIED)
    );
    for isa in [Isa::X64, Isa::Arm64] {
        assert_eq!(
            classify(&req(isa, query.with_fast(true)), &vtl0(), all()),
            Action::Refuse(HvStatus::INVALID_PARAMETER)
        );
    }
    // Extended calls the table does not name are unhandled, never forwarded.
    for code in 0x8002..=u16::MAX {
        assert_eq!(
            classify(&req(Isa::X64, valid(C(code))), &vtl0(), all()),
            Action::Unhandled
        );
    }
}

#[test]
fn extended_calls_need_the_partition_privilege_first() {
    let none = HvPartitionPrivilegeMask::new();
    for control in [
        valid(C::EXT_QUERY_CAPABILITIES),
        valid(C::EXT_QUERY_CAPABILITIES).with_fast(true),
        Control::from_bits(u64::MAX).with_code(C::EXT_QUERY_CAPABILITIES),
        valid(C(0x8002)),
    ] {
        for isa in [Isa::X64, Isa::Arm64] {
            assert_eq!(
                classify(&req(isa, control), &vtl0(), none),
                Action::Refuse(HvStatus::ACCESS_DENIED),
                "{control:?}"
            );
        }
    }
    assert_eq!(
        classify(&req(Isa::X64, valid(C::POST_MESSAGE)), &vtl0(), none),
        classify(&req(Isa::X64, valid(C::POST_MESSAGE)), &vtl0(), all()),
        "the privilege only gates extended calls"
    );
}

#[test]
fn refusals_come_before_validation() {
    let garbage = Control::from_bits(u64::MAX).with_code(C::ENABLE_PARTITION_VTL);
    assert_eq!(
        classify(&req(Isa::X64, garbage), &vtl0(), all()),
        Action::Refuse(HvStatus::ACCESS_DENIED)
    );
    let mut r = req(Isa::Arm64, valid(C::ENABLE_PARTITION_VTL));
    r.input_gpa = VTL2.start + 1;
    assert_eq!(
        classify(&r, &vtl0(), all()),
        Action::Refuse(HvStatus::ACCESS_DENIED)
    );
}

/// VtlReturn from VTL0 is #UD however it is made; so is VtlCall made as a hypercall: the
/// fault comes before validation, on both ISAs.
#[test]
fn vtl_call_and_return_fault_whatever_the_control() {
    for code in [C::VTL_CALL, C::VTL_RETURN] {
        let controls = [
            Control::new().with_code(code),
            Control::new().with_code(code).with_fast(true),
            Control::from_bits(u64::MAX).with_code(code),
            Control::new().with_code(code).with_nested(true),
            Control::new().with_code(code).with_rep_count(3),
        ];
        for isa in [Isa::X64, Isa::Arm64] {
            for control in controls {
                let mut r = req(isa, control);
                r.input_gpa = VTL2.start + 1;
                assert_eq!(classify(&r, &vtl0(), all()), Action::Fault, "{control:?}");
            }
        }
    }
}

#[test]
fn nested_bit_is_refused_and_never_forwarded() {
    let control = valid(C::POST_MESSAGE).with_nested(true);
    assert_eq!(
        classify(&req(Isa::X64, control), &vtl0(), all()),
        Action::Refuse(HvStatus::INVALID_HYPERCALL_INPUT)
    );
}

// Property tests: whatever VTL0 puts in its registers and memory map, decode + classify never
// panic, refuse only with a TLFS status, and forward only VTL0 memory.

fn control_strategy() -> impl Strategy<Value = u64> {
    let codes: Vec<u16> = TABLE.iter().map(|p| p.code.0).collect();
    let code = prop_oneof![4 => proptest::sample::select(codes), 1 => any::<u16>()];
    let structured = (
        code,
        any::<bool>(),
        prop_oneof![3 => Just(0u64), 1 => 0u64..3],
        prop_oneof![4 => 0u64..4, 1 => 0u64..0x1000],
        prop_oneof![3 => Just(0u64), 1 => 0u64..3],
        prop_oneof![9 => Just(0u64), 1 => any::<u64>()],
    )
        .prop_map(|(code, fast, var, count, start, noise)| {
            u64::from(code)
                | u64::from(fast) << 16
                | var << 17
                | count << 32
                | start << 48
                | noise & !0xFFFF
        });
    prop_oneof![6 => structured, 1 => any::<u64>()]
}

/// GPAs mostly near the small memory maps [`memory_strategy`] builds.
fn gpa_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (0u64..0x60).prop_map(|page| page * HV_PAGE_SIZE),
        4 => (0u64..0xC000).prop_map(|qword| qword * 8),
        1 => 0u64..0x6_0000,
        1 => (0u64..0x1000).prop_map(|off| u64::MAX - off),
        1 => any::<u64>(),
    ]
}

fn memory_strategy() -> impl Strategy<Value = Vtl0Memory> {
    let range = (0u64..0x50_000, 0u64..0x20_000).prop_map(|(start, len)| start..start + len);
    (proptest::collection::vec(range.clone(), 0..24), range)
        .prop_map(|(ram, vtl2)| Vtl0Memory::new(&ram, vtl2))
}

/// The codes VTL0 cannot use as hypercalls at all: the only ones that may fault.
fn vtl_switch(code: C) -> bool {
    code == C::VTL_CALL || code == C::VTL_RETURN
}

fn relayed(code: C) -> bool {
    policy(code).is_some_and(|p| matches!(p.rule, Rule::RelayConnection | Rule::RelayDevice))
}

fn check_action(req: &Request, vtl0: &Vtl0Memory, action: Action) {
    let fast = req.control.fast();
    match action {
        Action::Refuse(status) => assert!(allowed(status), "{status:?}"),
        Action::Fault => assert!(vtl_switch(req.control.code())),
        Action::Unhandled => assert!(policy(req.control.code()).is_none()),
        Action::AnswerExtCapabilities { output } => {
            assert_eq!(req.control.code(), C::EXT_QUERY_CAPABILITIES);
            assert!(!fast && vtl0.contains(req.output_gpa, 8));
            assert_eq!((output.gpa(), output.len()), (req.output_gpa, 8));
        }
        Action::Relay(Relay {
            policy: entry,
            control,
            input_len,
            fast_as_memory,
            input,
        }) => {
            assert!(relayed(req.control.code()));
            assert_eq!(entry.code, req.control.code(), "the call's own entry");
            assert!(!control.nested());
            assert_eq!(control.reserved_bits(), 0);
            assert_eq!(control.with_fast(false), req.control.with_fast(false));
            assert_eq!(control.fast(), fast && !fast_as_memory);
            assert!(input_len <= HV_PAGE_SIZE as usize);
            if fast {
                assert!(input_len <= req.fast.len() * 8);
            } else {
                assert!(!fast_as_memory);
                assert!(vtl0.contains(req.input_gpa, input_len as u64));
                let named = input.map(|r| (r.gpa(), r.len()));
                assert_eq!(named, Some((req.input_gpa, input_len)), "the list it names");
            }
            if fast {
                assert_eq!(input, None, "a fast call has no list");
            }
        }
    }
}

fn x64_message(
    raw: &[u8],
    plausible: bool,
    control: u64,
    gpas: (u64, u64),
) -> HvX64HypercallInterceptMessage {
    let mut msg = HvX64HypercallInterceptMessage::read_from_bytes(raw).unwrap();
    if plausible {
        msg.header.execution_state = msg.header.execution_state.with_cpl(0).with_efer_lma(true);
        msg.header.cs_segment.attributes |= 1 << 13;
        (msg.rcx, msg.rdx, msg.r8) = (control, gpas.0, gpas.1);
    }
    msg
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn x64_decode_classify_never_misbehaves(
        raw in proptest::collection::vec(any::<u8>(), 0xD0),
        plausible in proptest::bool::weighted(0.9),
        control in control_strategy(),
        gpas in (gpa_strategy(), gpa_strategy()),
        xmm in any::<bool>(),
        vtl0 in memory_strategy(),
    ) {
        let msg = x64_message(&raw, plausible, control, gpas);
        let header = msg.header;
        let long_mode =
            header.execution_state.efer_lma() && header.cs_segment.attributes & 1 << 13 != 0;
        let kernel_64 = header.execution_state.cpl() == 0 && long_mode;
        match decode_x64(&msg, xmm, &mut [0; FAST_XMM_WORDS]) {
            Decoded::Hypercall(req) => {
                prop_assert!(kernel_64);
                check_action(&req, &vtl0, classify(&req, &vtl0, all()));
            }
            // Every other caller takes #UD; none is refused with a status.
            Decoded::Fault => prop_assert!(!kernel_64),
            Decoded::Refused { .. } => prop_assert!(false, "x64 refuses no caller"),
            Decoded::NotHypercall { .. } => prop_assert!(false, "x64 has no SMCCC"),
        }
    }

    #[test]
    fn arm64_decode_classify_never_misbehaves(
        raw in proptest::collection::vec(any::<u8>(), 0xB0),
        plausible in proptest::bool::weighted(0.9),
        smccc in any::<bool>(),
        control in control_strategy(),
        gpas in (gpa_strategy(), gpa_strategy()),
        vtl0 in memory_strategy(),
    ) {
        let mut msg = HvArm64HypercallInterceptMessage::read_from_bytes(&raw).unwrap();
        if plausible {
            msg.header.execution_state = msg.header.execution_state.with_cpl(1);
            let base = if smccc {
                msg.immediate = 0;
                msg.x[0] = u64::from(hvdef::aarch64::SMCCC_HV_FUNC_ID);
                1
            } else {
                msg.immediate = 1;
                0
            };
            (msg.x[base], msg.x[base + 1], msg.x[base + 2]) = (control, gpas.0, gpas.1);
        }
        let el0 = msg.header.execution_state.cpl() == 0;
        match decode_arm64(&msg) {
            Decoded::Hypercall(req) => {
                prop_assert!(!el0);
                check_action(&req, &vtl0, classify(&req, &vtl0, all()));
            }
            Decoded::Refused { status, .. } => {
                prop_assert_eq!(status, HvStatus::INVALID_HYPERCALL_CODE);
                prop_assert!(!el0 && msg.immediate > 3);
            }
            // EL0, or VTL call / return by immediate.
            Decoded::Fault => prop_assert!(el0 || matches!(msg.immediate, 2 | 3)),
            Decoded::NotHypercall { .. } => prop_assert_eq!(msg.immediate, 0),
        }
    }

    #[test]
    fn screening_never_panics_and_relays_only_mapped_ids(
        code in proptest::sample::select(TABLE.iter().map(|p| p.code).collect::<Vec<_>>()),
        mut input in proptest::collection::vec(any::<u8>(), 0..300),
        id in prop_oneof![Just(0x20u32), Just(0x21), any::<u32>()],
        device in prop_oneof![Just(0x30u64), Just(0x31), any::<u64>()],
    ) {
        let p = policy(code).unwrap();
        // Name the mapped ids (and, for devices, this partition) often enough for the
        // relaying branches to run.
        if p.rule == Rule::RelayDevice {
            if let Some(field) = input.get_mut(0..8) {
                field.copy_from_slice(&HV_PARTITION_ID_SELF.to_le_bytes());
            }
            if let Some(field) = input.get_mut(8..16) {
                field.copy_from_slice(&device.to_le_bytes());
            }
        } else if let Some(field) = input.get_mut(0..4) {
            field.copy_from_slice(&id.to_le_bytes());
        }
        let before = input.clone();
        match p.screen(&mut input, &relay()) {
            Ok(()) if p.rule == Rule::RelayConnection => {
                prop_assert_eq!(&before[..4], &0x20u32.to_le_bytes());
                prop_assert_eq!(&input[..4], &1u32.to_le_bytes());
                prop_assert_eq!(&input[4..], &before[4..]);
            }
            Ok(()) if p.rule == Rule::RelayDevice => {
                prop_assert_eq!(&before[8..16], &0x30u64.to_le_bytes());
                prop_assert_eq!(input, before);
            }
            Ok(()) => prop_assert_eq!(input, before),
            Err(status) => prop_assert!(allowed(status)),
        }
    }
}
