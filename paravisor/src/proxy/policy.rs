//! The proxy's one table: for each VTL0 call code, its sizes and whether the paravisor forwards
//! it to the host, answers it, or refuses it; and [`classify`], which applies the table.
//!
//! Forwarded (sizes from the TLFS pages and hvdef's structs unless noted):
//!
//! | code | call | input (header + rep element) | output |
//! |---|---|---|---|
//! | 0x0002 | FlushVirtualAddressSpace | 24 | — |
//! | 0x0003 | FlushVirtualAddressList (rep) | 24 + 8 | — |
//! | 0x0008 | NotifyLongSpinWait | 8 | — |
//! | 0x000B | SendSyntheticClusterIpi | 16, HV_INPUT_VTL @4 pinned | — |
//! | 0x0013 | FlushVirtualAddressSpaceEx | 16 + variable header | — |
//! | 0x0014 | FlushVirtualAddressListEx (rep) | 16 + variable header + 8 | — |
//! | 0x0015 | SendSyntheticClusterIpiEx | 8 + variable header, HV_INPUT_VTL @4 pinned | — |
//! | 0x0050 | GetVpRegisters (rep) | 16 + 4, self partition, HV_INPUT_VTL @12 pinned | 16 per element |
//! | 0x0051 | SetVpRegisters (rep) | 16 + 32, self partition, HV_INPUT_VTL @12 pinned | — |
//! | 0x005C | PostMessage | 256 | — |
//! | 0x005D | SignalEvent | 8 | — |
//! | 0x0099 | StartVirtualProcessor | x64 240 / arm64 88, self partition, HV_VTL @12 = 0 | — |
//! | 0x009A | GetVpIndexFromApicId (rep) | 16 + 4, self partition, HV_VTL @8 = 0 | 4 per element |
//! | 0x00AF | FlushGuestPhysicalAddressSpace | 16 (NON-TLFS size: Linux) | — |
//! | 0x00B0 | FlushGuestPhysicalAddressList (rep) | 16 + 8 (NON-TLFS size: Linux) | — |
//! | 0x8002 | ExtGetBootZeroedMemory, if the host advertises it | — | 0xFF8 |
//!
//! Answered here: ExtQueryCapabilities (0x8001). Refused, and faulted (#UD): see [`TABLE`].
//! Every other code is HV_STATUS_INVALID_HYPERCALL_CODE, exactly as from a hypervisor that does
//! not implement it.

use super::validate::validate;
use super::{Action, Isa, Request, Vtl0Memory};
use core::mem::{offset_of, size_of};
use hvdef::aarch64::HvArm64InputStartVirtualProcessor;
use hvdef::x86_64::HvX64InputStartVirtualProcessor;
use hvdef::{
    Control, HvExtendedCapabilities, HvInputGetVpRegisters, HvInputPostMessage, HvInputSignalEvent,
    HvInputVtl, HvRegisterAssoc, HvRegisterName, HvRegisterValue, HvStatus, HypercallCode as C,
    HV_PARTITION_ID_SELF,
};

/// Sizes of a call's input and output lists, in bytes. Rep elements follow the whole header
/// (fixed plus variable), per the TLFS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub fixed_input: usize,
    pub input_element: usize,
    pub output_fixed: usize,
    pub output_element: usize,
}

impl Layout {
    /// No input, no output.
    pub const NONE: Layout = Layout {
        fixed_input: 0,
        input_element: 0,
        output_fixed: 0,
        output_element: 0,
    };

    const fn input(fixed_input: usize) -> Layout {
        Layout {
            fixed_input,
            ..Layout::NONE
        }
    }

    const fn output(output_fixed: usize) -> Layout {
        Layout {
            output_fixed,
            ..Layout::NONE
        }
    }

    const fn rep(fixed_input: usize, input_element: usize, output_element: usize) -> Layout {
        Layout {
            fixed_input,
            input_element,
            output_fixed: 0,
            output_element,
        }
    }

    /// Header, variable header, then all `rep_count` elements (the list always starts at element
    /// 0; the rep start index only says where the hypervisor resumes). At most ~140 KiB, so the
    /// sum cannot overflow.
    pub fn input_len(&self, control: Control) -> usize {
        self.fixed_input
            + usize::from(control.variable_header_size()) * 8
            + usize::from(control.rep_count()) * self.input_element
    }

    pub fn output_len(&self, control: Control) -> usize {
        self.output_fixed + usize::from(control.rep_count()) * self.output_element
    }
}

/// A VTL byte in a call's input that VTL0 fills in and the paravisor must keep at VTL0: the host
/// sees the paravisor (VTL2) as the caller, so "my VTL" or a higher VTL would reach VTL2 state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VtlField {
    /// An `HV_INPUT_VTL` at this offset. "Current VTL" (use_target_vtl clear) would mean VTL2
    /// once forwarded, so it is pinned to an explicit VTL0; an explicit VTL >= 1 is
    /// HV_STATUS_ACCESS_DENIED, not silently rewritten; reserved bits are
    /// HV_STATUS_INVALID_PARAMETER.
    Input(usize),
    /// A plain `HV_VTL` at this offset: must already be 0 (1..=15 is ACCESS_DENIED, anything else
    /// INVALID_PARAMETER). Never rewritten: VTL0 gets its own mistakes reported, not corrected.
    Plain(usize),
}

/// What the paravisor does with a call code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Validate, screen the input, forward to the host. Extended calls only when the host's
    /// capability mask has their bit.
    Forward,
    /// HvExtCallQueryCapabilities: validate, then [`Action::AnswerExtCapabilities`].
    AnswerExtCapabilities,
    /// Refuse with this status before any validation, as a hypervisor refuses a call the caller
    /// lacks the privilege for (KVM checks privileges before the control word).
    Refuse(HvStatus),
    /// [`Action::Fault`] before any validation: the TLFS raises #UD for every form of the call
    /// VTL0 can make, whatever its control word or input.
    Fault,
}

/// One table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub code: C,
    pub rule: Rule,
    /// Sizes; the ISAs differ only in StartVirtualProcessor's initial context.
    pub x64: Layout,
    pub arm64: Layout,
    /// Offset of a partition id that must be HV_PARTITION_ID_SELF (else ACCESS_DENIED: VTL0
    /// holds no privilege over other partitions, and the paravisor lends it none).
    pub self_partition_at: Option<usize>,
    pub vtl: Option<VtlField>,
}

impl Policy {
    const fn new(code: C, rule: Rule, layout: Layout) -> Policy {
        Policy {
            code,
            rule,
            x64: layout,
            arm64: layout,
            self_partition_at: None,
            vtl: None,
        }
    }

    const fn self_partition(mut self, at: usize) -> Policy {
        self.self_partition_at = Some(at);
        self
    }

    const fn vtl(mut self, field: VtlField) -> Policy {
        self.vtl = Some(field);
        self
    }

    pub fn layout(&self, isa: Isa) -> Layout {
        match isa {
            Isa::X64 => self.x64,
            Isa::Arm64 => self.arm64,
        }
    }

    /// The `HV_INPUT_VTL` offset the firmware pins ([`Action::Forward`]'s `pin_vtl0_at`).
    pub fn pin_vtl0_at(&self) -> Option<usize> {
        match self.vtl {
            Some(VtlField::Input(at)) => Some(at),
            _ => None,
        }
    }

    /// Checks the VTL0-chosen fields of a forwarded call's input and pins its `HV_INPUT_VTL`.
    /// `input` is the exact bytes about to go to the host: the firmware's copy in its input page
    /// (never VTL0's memory, which VTL0 could change after the check), or the fast block.
    pub fn screen(&self, input: &mut [u8]) -> Result<(), HvStatus> {
        if let Some(at) = self.self_partition_at {
            let id = input
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or(HvStatus::INVALID_HYPERCALL_INPUT)?;
            if id != HV_PARTITION_ID_SELF {
                return Err(HvStatus::ACCESS_DENIED);
            }
        }
        let Some(field) = self.vtl else {
            return Ok(());
        };
        let (VtlField::Input(at) | VtlField::Plain(at)) = field;
        let byte = input.get_mut(at).ok_or(HvStatus::INVALID_HYPERCALL_INPUT)?;
        match field {
            VtlField::Input(_) => {
                let vtl = HvInputVtl::from_bits(*byte);
                if vtl.reserved_bits() != 0 {
                    return Err(HvStatus::INVALID_PARAMETER);
                }
                if vtl.explicit_target().is_some_and(|t| t.get() != 0) {
                    return Err(HvStatus::ACCESS_DENIED);
                }
                *byte = HvInputVtl::target(hvdef::Vtl::VTL0).into_bits();
            }
            VtlField::Plain(_) => match *byte {
                0 => {}
                1..=15 => return Err(HvStatus::ACCESS_DENIED),
                _ => return Err(HvStatus::INVALID_PARAMETER),
            },
        }
        Ok(())
    }

    /// [`Policy::screen`] over a fast register block (little-endian words, as the ABI lays the
    /// input out across registers).
    pub fn screen_fast(&self, block: &mut [u64]) -> Result<(), HvStatus> {
        let mut bytes = [0u8; super::FAST_WORDS_MAX * 8];
        let words = block.len().min(super::FAST_WORDS_MAX);
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(&block[..words]) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        self.screen(&mut bytes[..words * 8])?;
        for (word, chunk) in block.iter_mut().zip(bytes.chunks_exact(8)) {
            *word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        }
        Ok(())
    }
}

const fn forward(code: C, layout: Layout) -> Policy {
    Policy::new(code, Rule::Forward, layout)
}

const fn refuse(code: C, status: HvStatus) -> Policy {
    Policy::new(code, Rule::Refuse(status), Layout::NONE)
}

const fn fault(code: C) -> Policy {
    Policy::new(code, Rule::Fault, Layout::NONE)
}

const FLUSH_VA_SPACE: usize = 3 * size_of::<u64>(); // AddressSpace, Flags, ProcessorMask
const FLUSH_EX_HEADER: usize = 2 * size_of::<u64>(); // AddressSpace, Flags; VP set follows
const GPA_FLUSH_HEADER: usize = 2 * size_of::<u64>(); // AddressSpace, Flags (Linux)
const GVA_OR_GPA_RANGE: usize = size_of::<u64>();
/// HvCallSendSyntheticClusterIpi: Vector u32 @0, TargetVtl HV_INPUT_VTL @4, ProcessorMask @8.
const CLUSTER_IPI: usize = 16;
/// The *Ex form: Vector @0, TargetVtl @4, then the VP set in the variable header.
const CLUSTER_IPI_EX_HEADER: usize = 8;
const CLUSTER_IPI_TARGET_VTL: usize = 4;
/// HvCallGetVpIndexFromApicId: PartitionId @0, TargetVtl (a plain HV_VTL per the TLFS page) @8,
/// padding to 16; elements are u32 APIC ids in and u32 VP indexes out (as OpenVMM and Linux
/// use them; the TLFS page draws 4 bytes of padding after each, which no implementation uses).
const APIC_ID_HEADER: usize = 16;
const APIC_ID_TARGET_VTL: usize = 8;
/// HvExtCallGetBootZeroedMemory: RangeCount u64, then up to 255 16-byte ranges.
const BOOT_ZEROED_MEMORY_OUTPUT: usize = 0xFF8;
const PARTITION_ID: usize = offset_of!(HvInputGetVpRegisters, partition_id);

const REGISTERS_TARGET_VTL: usize = offset_of!(HvInputGetVpRegisters, target_vtl);
const START_VP_TARGET_VTL: usize = offset_of!(HvX64InputStartVirtualProcessor, target_vtl);
const _: () = {
    assert!(offset_of!(HvArm64InputStartVirtualProcessor, target_vtl) == START_VP_TARGET_VTL);
    assert!(offset_of!(HvX64InputStartVirtualProcessor, partition_id) == PARTITION_ID);
    assert!(offset_of!(HvArm64InputStartVirtualProcessor, partition_id) == PARTITION_ID);
};

/// The table. Refused, and why:
/// - ACCESS_DENIED for VTL management (EnablePartitionVtl, DisablePartitionVtl, EnableVpVtl,
///   DisableVpVtl), ModifyVtlProtectionMask, InstallIntercept/InstallInterceptEx and
///   TranslateVirtualAddress: VTLs, protections and intercepts belong to the paravisor, and
///   VBS/VTL1 under this paravisor is not supported; forwarded, each would act with VTL2's
///   authority (TranslateVirtualAddress would translate through VTL2's view and leak it).
///
/// Faulted (#UD / undefined instruction in VTL0), per the TLFS's VTL call and return rules:
/// - VtlReturn: VTL0 is the lowest VTL, and a return from the lowest VTL is always #UD (so is an
///   invalid control, which therefore needs no separate check).
/// - VtlCall: it goes only to the next higher enabled VTL, and #UD when there is none VTL0 may
///   enter (VTL1 is never enabled under this paravisor, see above, and VTL2 is entered only
///   through intercepts) or on an invalid control.
pub static TABLE: [Policy; 27] = [
    forward(
        C::FLUSH_VIRTUAL_ADDRESS_SPACE,
        Layout::input(FLUSH_VA_SPACE),
    ),
    forward(
        C::FLUSH_VIRTUAL_ADDRESS_LIST,
        Layout::rep(FLUSH_VA_SPACE, GVA_OR_GPA_RANGE, 0),
    ),
    forward(C::NOTIFY_LONG_SPIN_WAIT, Layout::input(size_of::<u64>())),
    forward(C::SEND_SYNTHETIC_CLUSTER_IPI, Layout::input(CLUSTER_IPI))
        .vtl(VtlField::Input(CLUSTER_IPI_TARGET_VTL)),
    forward(
        C::FLUSH_VIRTUAL_ADDRESS_SPACE_EX,
        Layout::input(FLUSH_EX_HEADER),
    ),
    forward(
        C::FLUSH_VIRTUAL_ADDRESS_LIST_EX,
        Layout::rep(FLUSH_EX_HEADER, GVA_OR_GPA_RANGE, 0),
    ),
    forward(
        C::SEND_SYNTHETIC_CLUSTER_IPI_EX,
        Layout::input(CLUSTER_IPI_EX_HEADER),
    )
    .vtl(VtlField::Input(CLUSTER_IPI_TARGET_VTL)),
    forward(
        C::GET_VP_REGISTERS,
        Layout::rep(
            size_of::<HvInputGetVpRegisters>(),
            size_of::<HvRegisterName>(),
            size_of::<HvRegisterValue>(),
        ),
    )
    .self_partition(PARTITION_ID)
    .vtl(VtlField::Input(REGISTERS_TARGET_VTL)),
    forward(
        C::SET_VP_REGISTERS,
        Layout::rep(
            size_of::<HvInputGetVpRegisters>(),
            size_of::<HvRegisterAssoc>(),
            0,
        ),
    )
    .self_partition(PARTITION_ID)
    .vtl(VtlField::Input(REGISTERS_TARGET_VTL)),
    forward(
        C::POST_MESSAGE,
        Layout::input(size_of::<HvInputPostMessage>()),
    ),
    forward(
        C::SIGNAL_EVENT,
        Layout::input(size_of::<HvInputSignalEvent>()),
    ),
    Policy {
        x64: Layout::input(size_of::<HvX64InputStartVirtualProcessor>()),
        arm64: Layout::input(size_of::<HvArm64InputStartVirtualProcessor>()),
        ..forward(C::START_VIRTUAL_PROCESSOR, Layout::NONE)
            .self_partition(PARTITION_ID)
            .vtl(VtlField::Plain(START_VP_TARGET_VTL))
    },
    forward(
        C::GET_VP_INDEX_FROM_APIC_ID,
        Layout::rep(APIC_ID_HEADER, size_of::<u32>(), size_of::<u32>()),
    )
    .self_partition(PARTITION_ID)
    .vtl(VtlField::Plain(APIC_ID_TARGET_VTL)),
    forward(
        C::FLUSH_GUEST_PHYSICAL_ADDRESS_SPACE,
        Layout::input(GPA_FLUSH_HEADER),
    ),
    forward(
        C::FLUSH_GUEST_PHYSICAL_ADDRESS_LIST,
        Layout::rep(GPA_FLUSH_HEADER, GVA_OR_GPA_RANGE, 0),
    ),
    forward(
        C::EXT_GET_BOOT_ZEROED_MEMORY,
        Layout::output(BOOT_ZEROED_MEMORY_OUTPUT),
    ),
    Policy::new(
        C::EXT_QUERY_CAPABILITIES,
        Rule::AnswerExtCapabilities,
        Layout::output(size_of::<u64>()),
    ),
    refuse(C::MODIFY_VTL_PROTECTION_MASK, HvStatus::ACCESS_DENIED),
    refuse(C::ENABLE_PARTITION_VTL, HvStatus::ACCESS_DENIED),
    refuse(C::DISABLE_PARTITION_VTL, HvStatus::ACCESS_DENIED),
    refuse(C::ENABLE_VP_VTL, HvStatus::ACCESS_DENIED),
    refuse(C::DISABLE_VP_VTL, HvStatus::ACCESS_DENIED),
    refuse(C::INSTALL_INTERCEPT, HvStatus::ACCESS_DENIED),
    refuse(C::INSTALL_INTERCEPT_EX, HvStatus::ACCESS_DENIED),
    refuse(C::TRANSLATE_VIRTUAL_ADDRESS, HvStatus::ACCESS_DENIED),
    fault(C::VTL_CALL),
    fault(C::VTL_RETURN),
];

/// The capability bits of the extended calls [`TABLE`] forwards; QueryCapabilities answers the
/// host's mask filtered by this, so VTL0 is never told of a call it would be refused.
pub const FORWARDED_EXT_MASK: u64 = HvExtendedCapabilities::new()
    .with_get_boot_zeroed_memory(true)
    .into_bits();

/// The table entry for `code`.
pub fn policy(code: C) -> Option<&'static Policy> {
    TABLE.iter().find(|p| p.code == code)
}

/// Screens `input` for `code` (see [`Policy::screen`]); codes without an entry pass unchanged.
pub fn screen_input(code: C, input: &mut [u8]) -> Result<(), HvStatus> {
    policy(code).map_or(Ok(()), |p| p.screen(input))
}

/// The most fast-input bytes the paravisor's own hypercall instruction carries: x64 RDX/R8 only
/// (it is soft-float, so no XMM), arm64 SMCCC X2..X17. Larger fast inputs go memory-based.
const fn issue_fast_bytes(isa: Isa) -> usize {
    match isa {
        Isa::X64 => 2 * 8,
        Isa::Arm64 => 16 * 8,
    }
}

/// Decides what to do with a decoded VTL0 call. `host_ext_mask` is the host's
/// HvExtCallQueryCapabilities answer (0 if it has no extended calls).
///
/// Order: unknown code → INVALID_HYPERCALL_CODE; a refusing rule → its status; a faulting rule →
/// [`Action::Fault`]; an extended call the host does not offer → INVALID_HYPERCALL_CODE;
/// [`validate`]; then per rule. A forwarded
/// fast call with output is INVALID_HYPERCALL_INPUT: the paravisor is soft-float and cannot
/// return XMM output, and [`Action`] has no way to return register output on either ISA. A
/// memory-based call's input is screened by the firmware after copy-in ([`screen_input`]);
/// a fast call's is screened here.
pub fn classify(req: &Request, vtl0: &Vtl0Memory, host_ext_mask: u64) -> Action {
    let control = req.control;
    let code = control.code();
    let Some(policy) = policy(code) else {
        return Action::Refuse(HvStatus::INVALID_HYPERCALL_CODE);
    };
    match policy.rule {
        Rule::Refuse(status) => return Action::Refuse(status),
        Rule::Fault => return Action::Fault,
        Rule::Forward | Rule::AnswerExtCapabilities => {}
    }
    let host = HvExtendedCapabilities::from_bits(host_ext_mask);
    if policy.rule == Rule::Forward && code.is_extended() && !host.supports(code) {
        return Action::Refuse(HvStatus::INVALID_HYPERCALL_CODE);
    }
    let layout = policy.layout(req.isa);
    if let Err(status) = validate(req, vtl0, &layout) {
        return Action::Refuse(status);
    }
    if policy.rule == Rule::AnswerExtCapabilities {
        return Action::AnswerExtCapabilities;
    }

    let input_len = layout.input_len(control);
    let output_len = layout.output_len(control);
    let mut fast_as_memory = false;
    if control.fast() {
        if output_len != 0 {
            return Action::Refuse(HvStatus::INVALID_HYPERCALL_INPUT);
        }
        let mut block = req.fast;
        if let Err(status) = policy.screen_fast(&mut block) {
            return Action::Refuse(status);
        }
        fast_as_memory = input_len > issue_fast_bytes(req.isa);
    }
    Action::Forward {
        control: control
            .with_nested(false)
            .with_fast(control.fast() && !fast_as_memory),
        input_len,
        output_len,
        output_element: if code.is_rep() {
            layout.output_element
        } else {
            0
        },
        pin_vtl0_at: policy.pin_vtl0_at(),
        fast_as_memory,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::decode::{decode_arm64, decode_x64};
    use crate::proxy::{Decoded, FAST_WORDS_MAX};
    use hvdef::aarch64::HvArm64HypercallInterceptMessage;
    use hvdef::x86_64::HvX64HypercallInterceptMessage;
    use hvdef::{Vtl, HV_PAGE_SIZE};
    use proptest::prelude::*;
    use zerocopy::FromBytes;

    const IN: u64 = 0x1000;
    const OUT: u64 = 0x2000;
    const VTL2: core::ops::Range<u64> = 0x10_0000..0x20_0000;
    const ALL_EXT: u64 = u64::MAX;

    fn vtl0() -> Vtl0Memory {
        Vtl0Memory::new(core::slice::from_ref(&(0..0x40_0000)), VTL2)
    }

    fn req(isa: Isa, control: Control) -> Request {
        Request {
            isa,
            control,
            control_register: match isa {
                Isa::X64 => crate::proxy::ControlRegister::Rcx,
                Isa::Arm64 => crate::proxy::ControlRegister::X1,
            },
            input_gpa: if control.fast() { 0 } else { IN },
            output_gpa: if control.fast() { 0 } else { OUT },
            fast: [0; FAST_WORDS_MAX],
            fast_words: match isa {
                Isa::X64 => 14,
                Isa::Arm64 => 16,
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

    /// The statuses a refusal may carry: the TLFS's common ones plus the two per-call ones the
    /// proxy uses. Never SUCCESS.
    fn allowed(status: HvStatus) -> bool {
        [
            HvStatus::INVALID_HYPERCALL_CODE,
            HvStatus::INVALID_HYPERCALL_INPUT,
            HvStatus::INVALID_ALIGNMENT,
            HvStatus::INVALID_PARAMETER,
            HvStatus::ACCESS_DENIED,
        ]
        .contains(&status)
    }

    #[derive(Debug, PartialEq)]
    enum Expect {
        Forward,
        Answer,
        Refuse(HvStatus),
        Fault,
    }

    /// The table as the design states it, checked against [`TABLE`] entry by entry.
    const EXPECTED: [(C, Expect); 27] = [
        (C::POST_MESSAGE, Expect::Forward),
        (C::SIGNAL_EVENT, Expect::Forward),
        (C::NOTIFY_LONG_SPIN_WAIT, Expect::Forward),
        (C::FLUSH_VIRTUAL_ADDRESS_SPACE, Expect::Forward),
        (C::FLUSH_VIRTUAL_ADDRESS_LIST, Expect::Forward),
        (C::FLUSH_VIRTUAL_ADDRESS_SPACE_EX, Expect::Forward),
        (C::FLUSH_VIRTUAL_ADDRESS_LIST_EX, Expect::Forward),
        (C::SEND_SYNTHETIC_CLUSTER_IPI, Expect::Forward),
        (C::SEND_SYNTHETIC_CLUSTER_IPI_EX, Expect::Forward),
        (C::GET_VP_INDEX_FROM_APIC_ID, Expect::Forward),
        (C::FLUSH_GUEST_PHYSICAL_ADDRESS_SPACE, Expect::Forward),
        (C::FLUSH_GUEST_PHYSICAL_ADDRESS_LIST, Expect::Forward),
        (C::START_VIRTUAL_PROCESSOR, Expect::Forward),
        (C::GET_VP_REGISTERS, Expect::Forward),
        (C::SET_VP_REGISTERS, Expect::Forward),
        (C::EXT_GET_BOOT_ZEROED_MEMORY, Expect::Forward),
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

    #[test]
    fn each_table_entry_acts_as_designed() {
        assert_eq!(TABLE.len(), EXPECTED.len());
        for (code, expect) in EXPECTED {
            let p = policy(code).unwrap_or_else(|| panic!("{code:?} missing"));
            for isa in [Isa::X64, Isa::Arm64] {
                let control = valid(code);
                let layout = p.layout(isa);
                let got = classify(&req(isa, control), &vtl0(), ALL_EXT);
                let want = match expect {
                    Expect::Forward => Action::Forward {
                        control,
                        input_len: layout.input_len(control),
                        output_len: layout.output_len(control),
                        output_element: if code.is_rep() {
                            layout.output_element
                        } else {
                            0
                        },
                        pin_vtl0_at: p.pin_vtl0_at(),
                        fast_as_memory: false,
                    },
                    Expect::Answer => Action::AnswerExtCapabilities,
                    Expect::Refuse(status) => Action::Refuse(status),
                    Expect::Fault => Action::Fault,
                };
                assert_eq!(got, want, "{code:?} on {isa:?}");
            }
        }
    }

    #[test]
    fn table_is_consistent() {
        for (i, p) in TABLE.iter().enumerate() {
            assert!(
                TABLE[..i].iter().all(|q| q.code != p.code),
                "{:?} twice",
                p.code
            );
            for layout in [p.x64, p.arm64] {
                let fixed = layout.fixed_input;
                if let Some(at) = p.self_partition_at {
                    assert!(at + 8 <= fixed, "{:?}", p.code);
                }
                if let Some(VtlField::Input(at) | VtlField::Plain(at)) = p.vtl {
                    assert!(at < fixed, "{:?}", p.code);
                }
                if p.rule == Rule::Forward && p.code.is_rep() {
                    assert!(layout.input_element + layout.output_element > 0);
                }
                if !p.code.is_rep() {
                    assert_eq!(layout.input_element + layout.output_element, 0);
                }
            }
        }
    }

    #[test]
    fn sizes_from_hvdef() {
        let start = policy(C::START_VIRTUAL_PROCESSOR).unwrap();
        assert_eq!((start.x64.fixed_input, start.arm64.fixed_input), (240, 88));
        let get = policy(C::GET_VP_REGISTERS).unwrap().x64;
        assert_eq!(
            (get.fixed_input, get.input_element, get.output_element),
            (16, 4, 16)
        );
        assert_eq!(policy(C::SET_VP_REGISTERS).unwrap().x64.input_element, 32);
        assert_eq!(policy(C::POST_MESSAGE).unwrap().x64.fixed_input, 256);
        let ex = Control::new()
            .with_code(C::FLUSH_VIRTUAL_ADDRESS_LIST_EX)
            .with_variable_header_size(3)
            .with_rep_count(5);
        let list_ex = policy(C::FLUSH_VIRTUAL_ADDRESS_LIST_EX).unwrap().x64;
        assert_eq!(list_ex.input_len(ex), 16 + 3 * 8 + 5 * 8);
        assert_eq!(list_ex.output_len(ex), 0);
    }

    #[test]
    fn every_code_classifies_and_unknown_codes_are_invalid_code() {
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
                    let action = classify(&req(isa, control), &mem, ALL_EXT);
                    if !known {
                        assert_eq!(
                            action,
                            Action::Refuse(HvStatus::INVALID_HYPERCALL_CODE),
                            "{code:?}"
                        );
                    }
                    match action {
                        Action::Refuse(status) => assert!(allowed(status), "{code:?}: {status:?}"),
                        Action::Fault => assert!(vtl_switch(code), "{code:?}"),
                        Action::Forward { .. } | Action::AnswerExtCapabilities => {}
                    }
                }
            }
        }
    }

    #[test]
    fn extended_calls() {
        let query = Control::new().with_code(C::EXT_QUERY_CAPABILITIES);
        let mut r = req(Isa::X64, query);
        assert_eq!(classify(&r, &vtl0(), 0), Action::AnswerExtCapabilities);
        r.output_gpa = VTL2.start;
        assert_eq!(
            classify(&r, &vtl0(), 0),
            Action::Refuse(HvStatus::ACCESS_DENIED)
        );
        for isa in [Isa::X64, Isa::Arm64] {
            assert_eq!(
                classify(&req(isa, query.with_fast(true)), &vtl0(), ALL_EXT),
                Action::Refuse(HvStatus::INVALID_PARAMETER)
            );
        }

        // GetBootZeroedMemory exists for VTL0 exactly when the host offers it.
        let zeroed = req(Isa::Arm64, valid(C::EXT_GET_BOOT_ZEROED_MEMORY));
        assert!(matches!(
            classify(&zeroed, &vtl0(), FORWARDED_EXT_MASK),
            Action::Forward {
                output_len: 0xFF8,
                ..
            }
        ));
        assert_eq!(
            classify(&zeroed, &vtl0(), ALL_EXT & !FORWARDED_EXT_MASK),
            Action::Refuse(HvStatus::INVALID_HYPERCALL_CODE)
        );
        // Extended calls the table does not forward, even when the host offers them.
        for code in 0x8003..=u16::MAX {
            assert_eq!(
                classify(&req(Isa::X64, valid(C(code))), &vtl0(), ALL_EXT),
                Action::Refuse(HvStatus::INVALID_HYPERCALL_CODE)
            );
        }
    }

    #[test]
    fn forwarded_ext_mask_matches_the_table() {
        for bit in 0..64 {
            let Some(code) = HvExtendedCapabilities::call_for_bit(bit) else {
                continue;
            };
            let forwarded = policy(code).is_some_and(|p| p.rule == Rule::Forward);
            assert_eq!(FORWARDED_EXT_MASK & (1 << bit) != 0, forwarded, "{code:?}");
        }
    }

    #[test]
    fn refusals_come_before_validation() {
        let garbage = Control::from_bits(u64::MAX).with_code(C::ENABLE_PARTITION_VTL);
        assert_eq!(
            classify(&req(Isa::X64, garbage), &vtl0(), 0),
            Action::Refuse(HvStatus::ACCESS_DENIED)
        );
        let mut r = req(Isa::Arm64, valid(C::ENABLE_PARTITION_VTL));
        r.input_gpa = VTL2.start + 1;
        assert_eq!(
            classify(&r, &vtl0(), 0),
            Action::Refuse(HvStatus::ACCESS_DENIED)
        );
    }

    /// VtlReturn from VTL0 is #UD however it is made; so is VtlCall (no VTL to call, and any
    /// control bit is invalid): the fault comes before validation, on both ISAs.
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
                    assert_eq!(classify(&r, &vtl0(), ALL_EXT), Action::Fault, "{control:?}");
                }
            }
        }
    }

    #[test]
    fn nested_bit_is_refused_and_never_forwarded() {
        let control = valid(C::POST_MESSAGE).with_nested(true);
        assert_eq!(
            classify(&req(Isa::X64, control), &vtl0(), 0),
            Action::Refuse(HvStatus::INVALID_HYPERCALL_INPUT)
        );
    }

    /// A Get/SetVpRegisters header with this partition and HV_INPUT_VTL byte.
    fn registers_header(partition: u64, vtl: u8) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[..8].copy_from_slice(&partition.to_le_bytes());
        h[8..12].copy_from_slice(&hvdef::HV_VP_INDEX_SELF.to_le_bytes());
        h[12] = vtl;
        h
    }

    #[test]
    fn vp_registers_memory_based_forward_with_pin_then_screen() {
        let vtl2 = HvInputVtl::target(Vtl::VTL2).into_bits();
        let vtl1 = HvInputVtl::target(Vtl::VTL1).into_bits();
        let vtl0 = HvInputVtl::target(Vtl::VTL0).into_bits();
        for code in [C::GET_VP_REGISTERS, C::SET_VP_REGISTERS] {
            let action = classify(&req(Isa::X64, valid(code)), &self::vtl0(), 0);
            assert!(
                matches!(
                    action,
                    Action::Forward {
                        pin_vtl0_at: Some(12),
                        ..
                    }
                ),
                "{action:?}"
            );
            for (partition, vtl, want) in [
                (HV_PARTITION_ID_SELF, vtl2, Err(HvStatus::ACCESS_DENIED)),
                (HV_PARTITION_ID_SELF, vtl1, Err(HvStatus::ACCESS_DENIED)),
                (HV_PARTITION_ID_SELF, 0x20, Err(HvStatus::INVALID_PARAMETER)),
                (7, 0, Err(HvStatus::ACCESS_DENIED)),
                (HV_PARTITION_ID_SELF, 0, Ok(())),
                (HV_PARTITION_ID_SELF, vtl0, Ok(())),
                // use_target_vtl clear: the target number is ignored, so this is "current".
                (HV_PARTITION_ID_SELF, 0x02, Ok(())),
            ] {
                let mut input = registers_header(partition, vtl);
                assert_eq!(
                    screen_input(code, &mut input),
                    want,
                    "{partition:#x} {vtl:#x}"
                );
                if want.is_ok() {
                    assert_eq!(input[12], vtl0, "pinned to explicit VTL0");
                    assert_eq!(input[..12], registers_header(partition, vtl)[..12]);
                }
            }
            // Too short to hold the header (cannot happen after validation): refused, no panic.
            assert_eq!(
                screen_input(code, &mut [0xFF; 12]),
                Err(HvStatus::INVALID_HYPERCALL_INPUT)
            );
        }
    }

    fn fast_block(bytes: &[u8]) -> [u64; FAST_WORDS_MAX] {
        let mut block = [0; FAST_WORDS_MAX];
        for (word, chunk) in block.iter_mut().zip(bytes.chunks(8)) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            *word = u64::from_le_bytes(w);
        }
        block
    }

    #[test]
    fn fast_set_vp_registers() {
        let control = valid(C::SET_VP_REGISTERS).with_fast(true);
        let fast = |isa, fast_words, vtl| {
            let mut r = req(isa, control);
            r.fast = fast_block(&registers_header(HV_PARTITION_ID_SELF, vtl));
            r.fast_words = fast_words;
            classify(&r, &vtl0(), 0)
        };
        let forward = |fast_as_memory: bool| Action::Forward {
            control: control.with_fast(!fast_as_memory),
            input_len: 48,
            output_len: 0,
            output_element: 0,
            pin_vtl0_at: Some(12),
            fast_as_memory,
        };
        // arm64: 48 bytes fit the paravisor's own SMCCC block; forwarded fast.
        assert_eq!(fast(Isa::Arm64, 16, 0), forward(false));
        assert_eq!(fast(Isa::Arm64, 17, 0), forward(false));
        // x64 XMM fast input: forwarded memory-based.
        assert_eq!(fast(Isa::X64, 14, 0), forward(true));
        // x64 without XMM fast input: 48 bytes do not fit RDX/R8.
        assert_eq!(
            fast(Isa::X64, 2, 0),
            Action::Refuse(HvStatus::INVALID_HYPERCALL_INPUT)
        );
        // The target VTL is checked in the fast block too.
        let vtl2 = HvInputVtl::target(Vtl::VTL2).into_bits();
        for (isa, words) in [(Isa::Arm64, 16), (Isa::X64, 14)] {
            assert_eq!(
                fast(isa, words, vtl2),
                Action::Refuse(HvStatus::ACCESS_DENIED)
            );
        }
    }

    #[test]
    fn fast_input_beyond_the_paravisors_own_block_goes_memory_based() {
        // arm64 `hvc #1` carries 17 words, the paravisor's SMCCC call 16.
        let ex = |var| {
            let control = valid(C::SEND_SYNTHETIC_CLUSTER_IPI_EX)
                .with_fast(true)
                .with_variable_header_size(var);
            let mut r = req(Isa::Arm64, control);
            r.fast_words = 17;
            classify(&r, &vtl0(), 0)
        };
        assert!(matches!(
            ex(15),
            Action::Forward { input_len: 128, fast_as_memory: false, control, .. } if control.fast()
        ));
        assert!(matches!(
            ex(16),
            Action::Forward { input_len: 136, fast_as_memory: true, control, .. } if !control.fast()
        ));
    }

    #[test]
    fn fast_output_is_refused() {
        let control = valid(C::GET_VP_REGISTERS).with_fast(true);
        for isa in [Isa::X64, Isa::Arm64] {
            let mut r = req(isa, control);
            r.fast = fast_block(&registers_header(HV_PARTITION_ID_SELF, 0));
            assert_eq!(
                classify(&r, &vtl0(), 0),
                Action::Refuse(HvStatus::INVALID_HYPERCALL_INPUT)
            );
        }
    }

    #[test]
    fn fast_cluster_ipi_pins_the_target_vtl() {
        let control = valid(C::SEND_SYNTHETIC_CLUSTER_IPI).with_fast(true);
        let p = policy(C::SEND_SYNTHETIC_CLUSTER_IPI).unwrap();
        let mut r = req(Isa::X64, control);
        r.fast_words = 2;
        r.fast[0] = 0x30; // vector 0x30, TargetVtl "current"
        r.fast[1] = 0b1011; // processor mask
        assert_eq!(
            classify(&r, &vtl0(), 0),
            Action::Forward {
                control,
                input_len: 16,
                output_len: 0,
                output_element: 0,
                pin_vtl0_at: Some(4),
                fast_as_memory: false,
            }
        );
        let mut block = r.fast;
        assert_eq!(p.screen_fast(&mut block[..2]), Ok(()));
        assert_eq!(block[..2], [0x10_0000_0030, 0b1011]);

        r.fast[0] = 0x30 | u64::from(HvInputVtl::target(Vtl::VTL2).into_bits()) << 32;
        assert_eq!(
            classify(&r, &vtl0(), 0),
            Action::Refuse(HvStatus::ACCESS_DENIED)
        );
    }

    #[test]
    fn plain_vtl_fields_must_be_vtl0() {
        for (code, at) in [
            (C::START_VIRTUAL_PROCESSOR, 12),
            (C::GET_VP_INDEX_FROM_APIC_ID, 8),
        ] {
            for (vtl, want) in [
                (0, Ok(())),
                (1, Err(HvStatus::ACCESS_DENIED)),
                (2, Err(HvStatus::ACCESS_DENIED)),
                (15, Err(HvStatus::ACCESS_DENIED)),
                (0x10, Err(HvStatus::INVALID_PARAMETER)),
                (0xFF, Err(HvStatus::INVALID_PARAMETER)),
            ] {
                let mut input = [0u8; 240];
                input[..8].copy_from_slice(&HV_PARTITION_ID_SELF.to_le_bytes());
                input[at] = vtl;
                assert_eq!(screen_input(code, &mut input), want, "{code:?} {vtl}");
                assert_eq!(input[at], vtl, "plain VTLs are never rewritten");
            }
            let mut other_partition = [0u8; 240];
            assert_eq!(
                screen_input(code, &mut other_partition),
                Err(HvStatus::ACCESS_DENIED)
            );
        }
        // Calls without VTL fields pass unchanged.
        let mut input = [0xAB; 256];
        assert_eq!(screen_input(C::POST_MESSAGE, &mut input), Ok(()));
        assert_eq!(screen_input(C(0xBEEF), &mut input), Ok(()));
        assert_eq!(input, [0xAB; 256]);
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

    fn check_action(req: &Request, vtl0: &Vtl0Memory, action: Action) {
        let fast = req.control.fast();
        match action {
            Action::Refuse(status) => assert!(allowed(status), "{status:?}"),
            Action::Fault => assert!(vtl_switch(req.control.code())),
            Action::AnswerExtCapabilities => {
                assert_eq!(req.control.code(), C::EXT_QUERY_CAPABILITIES);
                assert!(!fast && vtl0.contains(req.output_gpa, 8));
            }
            Action::Forward {
                control,
                input_len,
                output_len,
                fast_as_memory,
                ..
            } => {
                assert!(policy(req.control.code()).is_some_and(|p| p.rule == Rule::Forward));
                assert!(!control.nested());
                assert_eq!(control.reserved_bits(), 0);
                assert_eq!(control.with_fast(false), req.control.with_fast(false));
                assert_eq!(control.fast(), fast && !fast_as_memory);
                let page = HV_PAGE_SIZE as usize;
                assert!(input_len <= page && output_len <= page);
                if fast {
                    assert_eq!(output_len, 0);
                    assert!(input_len <= req.fast_words * 8);
                } else {
                    assert!(!fast_as_memory);
                    assert!(vtl0.contains(req.input_gpa, input_len as u64));
                    assert!(vtl0.contains(req.output_gpa, output_len as u64));
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
            host_ext_mask in any::<u64>(),
        ) {
            let msg = x64_message(&raw, plausible, control, gpas);
            let header = msg.header;
            let long_mode =
                header.execution_state.efer_lma() && header.cs_segment.attributes & 1 << 13 != 0;
            let kernel_64 = header.execution_state.cpl() == 0 && long_mode;
            match decode_x64(&msg, xmm) {
                Decoded::Hypercall(req) => {
                    prop_assert!(kernel_64);
                    check_action(&req, &vtl0, classify(&req, &vtl0, host_ext_mask));
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
            host_ext_mask in any::<u64>(),
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
                    check_action(&req, &vtl0, classify(&req, &vtl0, host_ext_mask));
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
        fn screening_never_panics_and_pins(
            code in proptest::sample::select(TABLE.iter().map(|p| p.code).collect::<Vec<_>>()),
            mut input in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let p = policy(code).unwrap();
            match p.screen(&mut input) {
                Ok(()) => {
                    if let Some(at) = p.pin_vtl0_at() {
                        prop_assert_eq!(input[at], HvInputVtl::target(Vtl::VTL0).into_bits());
                    }
                }
                Err(status) => prop_assert!(allowed(status)),
            }
        }
    }
}
