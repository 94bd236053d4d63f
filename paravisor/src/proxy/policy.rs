//! The proxy's one table: for each VTL0 call code that can reach VTL2, its sizes and whether the
//! paravisor relays it to the host, answers it, or refuses it; and [`classify`], which applies
//! the table.
//!
//! Hyper-V serves VTL0's hypercalls itself. It hands VTL2 (as an
//! `HvMessageTypeHypercallIntercept`) only the calls a VMM would get: PostMessage / SignalEvent
//! to a connection it does not know and RetargetDeviceInterrupt for a device it does not know,
//! when VTL2 installed the UnknownSynicConnection / RetargetInterruptWithUnknownDeviceId
//! intercepts (fact sheet §2; OpenVMM `vmm_core/virt_whp/src/hypercalls.rs`; OpenHCL installs
//! the same two). So the table is built around what can arrive:
//!
//! | code | call | input | what happens |
//! |---|---|---|---|
//! | 0x005C | PostMessage | 256 | relayed if the [`RelayTable`] maps its connection id (rewritten to the host's), else INVALID_CONNECTION_ID |
//! | 0x005D | SignalEvent | 8 | the same |
//! | 0x007E | RetargetDeviceInterrupt | 56 + variable header, self partition | relayed if VTL0 owns the device, else INVALID_DEVICE_ID |
//! | 0x8001 | ExtQueryCapabilities | output 8 | answered: no extended call is relayed, so the mask is 0 |
//!
//! Refused with ACCESS_DENIED, faulted (#UD): see [`TABLE`]. Every other code is
//! HV_STATUS_INVALID_HYPERCALL_CODE, what OpenHCL's dispatcher answers for codes it does not
//! handle (`hv1_hypercall` `unhandled`): nothing without an entry is ever forwarded. The run
//! loop logs each call that is not relayed (Hyper-V sends none of them), naming VP and code.

use super::relay::RelayTable;
use super::validate::validate;
use super::{Action, Isa, Relay, Request, Vtl0Memory};
use core::mem::{offset_of, size_of};
use hvdef::{
    Control, HvInputPostMessage, HvInputRetargetDeviceInterrupt, HvInputSignalEvent,
    HvPartitionPrivilegeMask, HvStatus, HypercallCode as C, HV_PARTITION_ID_SELF,
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

/// What the paravisor does with a call code.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// PostMessage / SignalEvent: validate, then relay to the host connection the relay table
    /// maps VTL0's connection id (at input offset 0) to; an unmapped id is
    /// INVALID_CONNECTION_ID, as from a hypervisor that does not know it.
    RelayConnection,
    /// RetargetDeviceInterrupt: validate, then relay if VTL0 owns the device (id at input
    /// offset 8); otherwise INVALID_DEVICE_ID.
    RelayDevice,
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
    pub layout: Layout,
    /// Offset of a partition id that must be HV_PARTITION_ID_SELF (else ACCESS_DENIED: VTL0
    /// holds no privilege over other partitions, and the paravisor lends it none).
    pub self_partition_at: Option<usize>,
}

/// Where PostMessage and SignalEvent carry their connection id.
const CONNECTION_ID: usize = offset_of!(HvInputPostMessage, connection_id);
const _: () = assert!(offset_of!(HvInputSignalEvent, connection_id) == CONNECTION_ID);
const DEVICE_ID: usize = offset_of!(HvInputRetargetDeviceInterrupt, device_id);
const PARTITION_ID: usize = offset_of!(HvInputRetargetDeviceInterrupt, partition_id);
// `Policy::screen_fast` reads these as words.
const _: () =
    assert!(CONNECTION_ID == 0 && DEVICE_ID.is_multiple_of(8) && PARTITION_ID.is_multiple_of(8));

impl Policy {
    const fn new(code: C, rule: Rule, layout: Layout) -> Policy {
        Policy {
            code,
            rule,
            layout,
            self_partition_at: None,
        }
    }

    const fn self_partition(mut self, at: usize) -> Policy {
        self.self_partition_at = Some(at);
        self
    }

    /// Checks the VTL0-chosen fields of a relayed call's input and rewrites its connection id to
    /// the host's. `input` is the exact bytes about to go to the host: the firmware's copy in its
    /// input page (never VTL0's memory, which VTL0 could change after the check), or the fast
    /// block.
    pub fn screen(&self, input: &mut [u8], relay: &RelayTable) -> Result<(), HvStatus> {
        if let Some(at) = self.self_partition_at {
            if read_u64(input, at)? != HV_PARTITION_ID_SELF {
                return Err(HvStatus::ACCESS_DENIED);
            }
        }
        match self.rule {
            Rule::RelayConnection => {
                let field = input
                    .get_mut(CONNECTION_ID..CONNECTION_ID + 4)
                    .ok_or(HvStatus::INVALID_HYPERCALL_INPUT)?;
                let id = u32::from_le_bytes([field[0], field[1], field[2], field[3]]);
                let host = relay
                    .host_connection(id)
                    .ok_or(HvStatus::INVALID_CONNECTION_ID)?;
                field.copy_from_slice(&host.to_le_bytes());
                Ok(())
            }
            Rule::RelayDevice if relay.owns_device(read_u64(input, DEVICE_ID)?) => Ok(()),
            Rule::RelayDevice => Err(HvStatus::INVALID_DEVICE_ID),
            _ => Ok(()),
        }
    }

    /// [`Policy::screen`] over a fast register block (little-endian words, as the ABI lays the
    /// input out across registers), in place: every field it reads sits at a word-aligned
    /// offset (checked at compile time), the connection id in the low half of word 0.
    pub fn screen_fast(&self, block: &mut [u64], relay: &RelayTable) -> Result<(), HvStatus> {
        let word = |block: &[u64], at: usize| {
            block
                .get(at / 8)
                .copied()
                .ok_or(HvStatus::INVALID_HYPERCALL_INPUT)
        };
        if let Some(at) = self.self_partition_at {
            if word(block, at)? != HV_PARTITION_ID_SELF {
                return Err(HvStatus::ACCESS_DENIED);
            }
        }
        match self.rule {
            Rule::RelayConnection => {
                let first = block.first_mut().ok_or(HvStatus::INVALID_HYPERCALL_INPUT)?;
                let host = relay
                    .host_connection(*first as u32)
                    .ok_or(HvStatus::INVALID_CONNECTION_ID)?;
                *first = (*first & !u64::from(u32::MAX)) | u64::from(host);
                Ok(())
            }
            Rule::RelayDevice if relay.owns_device(word(block, DEVICE_ID)?) => Ok(()),
            Rule::RelayDevice => Err(HvStatus::INVALID_DEVICE_ID),
            _ => Ok(()),
        }
    }
}

fn read_u64(input: &[u8], at: usize) -> Result<u64, HvStatus> {
    input
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or(HvStatus::INVALID_HYPERCALL_INPUT)
}

const fn refuse(code: C, status: HvStatus) -> Policy {
    Policy::new(code, Rule::Refuse(status), Layout::NONE)
}

const fn fault(code: C) -> Policy {
    Policy::new(code, Rule::Fault, Layout::NONE)
}

/// The table. Refused, and why:
/// - ACCESS_DENIED for VTL management (EnablePartitionVtl, DisablePartitionVtl, EnableVpVtl,
///   DisableVpVtl), ModifyVtlProtectionMask, InstallIntercept/InstallInterceptEx and
///   TranslateVirtualAddress: the status the hypervisor gives VTL0 for them (they need a higher
///   VTL), and whatever the paravisor did with them would act with VTL2's authority.
///
/// Faulted (#UD / undefined instruction in VTL0), per the TLFS's VTL call and return rules:
/// - VtlReturn: VTL0 is the lowest VTL, and a return from the lowest VTL is always #UD (so is an
///   invalid control, which therefore needs no separate check).
/// - VtlCall: made as an ordinary hypercall it is no VTL call; the hypervisor enters VTL2 for a
///   real one with entry reason VTL_CALL, never as an intercept.
///
/// None of these reach VTL2 on Hyper-V; they are here so that a host that did reflect them still
/// gets the answer VTL0 would have had without a paravisor.
pub static TABLE: [Policy; 14] = [
    Policy::new(
        C::POST_MESSAGE,
        Rule::RelayConnection,
        Layout::input(size_of::<HvInputPostMessage>()),
    ),
    Policy::new(
        C::SIGNAL_EVENT,
        Rule::RelayConnection,
        Layout::input(size_of::<HvInputSignalEvent>()),
    ),
    Policy::new(
        C::RETARGET_DEVICE_INTERRUPT,
        Rule::RelayDevice,
        Layout::input(size_of::<HvInputRetargetDeviceInterrupt>()),
    )
    .self_partition(PARTITION_ID),
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

/// The capability bits of the extended calls the paravisor relays: none. QueryCapabilities
/// answers exactly this (the host's mask filtered by what is relayed), so VTL0 is never told of
/// a call it would be refused.
pub const RELAYED_EXT_MASK: u64 = 0;

/// The table entry for `code`: one jump on the code, not a search (a unit test checks it
/// against every entry and every other code).
pub fn policy(code: C) -> Option<&'static Policy> {
    let i = match code {
        C::POST_MESSAGE => 0,
        C::SIGNAL_EVENT => 1,
        C::RETARGET_DEVICE_INTERRUPT => 2,
        C::EXT_QUERY_CAPABILITIES => 3,
        C::MODIFY_VTL_PROTECTION_MASK => 4,
        C::ENABLE_PARTITION_VTL => 5,
        C::DISABLE_PARTITION_VTL => 6,
        C::ENABLE_VP_VTL => 7,
        C::DISABLE_VP_VTL => 8,
        C::INSTALL_INTERCEPT => 9,
        C::INSTALL_INTERCEPT_EX => 10,
        C::TRANSLATE_VIRTUAL_ADDRESS => 11,
        C::VTL_CALL => 12,
        C::VTL_RETURN => 13,
        _ => return None,
    };
    TABLE.get(i)
}

/// The most fast-input bytes the paravisor's own hypercall instruction carries: x64 RDX/R8 only
/// (it is soft-float, so no XMM), arm64 SMCCC X2..X17. Larger fast inputs go memory-based.
const fn issue_fast_bytes(isa: Isa) -> usize {
    8 * match isa {
        Isa::X64 => hvdef::x86_64::FAST_GPR_WORDS,
        Isa::Arm64 => hvdef::aarch64::SMCCC_FAST_WORDS,
    }
}

/// Decides what to do with a decoded VTL0 call.
///
/// Order: an extended call without the partition's EnableExtendedHypercalls privilege →
/// ACCESS_DENIED (the privilege check comes first, as in the hypervisor: KVM's hyperv_features
/// selftest, the mock's model; VTL0 holds the partition's privileges and the paravisor lends it
/// none); unknown code → [`Action::Unhandled`]; a refusing rule → its status; a faulting rule
/// → [`Action::Fault`]; [`validate`]; then per rule. The relay table is not consulted here: the
/// run loop applies it once, on the exact bytes it sends, through the entry [`Action::Relay`]
/// hands it ([`Policy::screen`], [`Policy::screen_fast`]).
#[inline(always)]
pub fn classify(
    req: &Request<'_>,
    vtl0: &Vtl0Memory,
    privileges: HvPartitionPrivilegeMask,
) -> Action {
    let control = req.control;
    if control.code().is_extended() && !privileges.enable_extended_hypercalls() {
        return Action::Refuse(HvStatus::ACCESS_DENIED);
    }
    let Some(policy) = policy(control.code()) else {
        return Action::Unhandled;
    };
    match policy.rule {
        Rule::Refuse(status) => return Action::Refuse(status),
        Rule::Fault => return Action::Fault,
        Rule::RelayConnection | Rule::RelayDevice | Rule::AnswerExtCapabilities => {}
    }
    let layout = policy.layout;
    let lists = match validate(req, vtl0, &layout) {
        Ok(lists) => lists,
        Err(status) => return Action::Refuse(status),
    };
    if policy.rule == Rule::AnswerExtCapabilities {
        // Fast is INVALID_PARAMETER and the output list is 8 bytes, so it is there.
        return match lists.output {
            Some(output) => Action::AnswerExtCapabilities { output },
            None => Action::Refuse(HvStatus::INVALID_PARAMETER),
        };
    }
    let input_len = layout.input_len(control);
    let fast_as_memory = control.fast() && input_len > issue_fast_bytes(req.isa);
    Action::Relay(Relay {
        policy,
        control: control
            .with_nested(false)
            .with_fast(control.fast() && !fast_as_memory),
        input_len,
        fast_as_memory,
        input: lists.input,
    })
}

#[cfg(test)]
mod tests;
