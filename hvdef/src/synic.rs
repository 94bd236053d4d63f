//! The synthetic interrupt controller (SynIC): messages, the message page, SINT registers and the
//! PostMessage/SignalEvent inputs.

use bitfield_struct::bitfield;
use core::mem::offset_of;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Number of synthetic interrupt sources (SINT0..SINT15) per VP.
pub const HV_SYNIC_SINT_COUNT: usize = 16;
/// Number of synthetic timers per VP.
pub const HV_SYNIC_STIMER_COUNT: usize = 4;
/// Value of the SVERSION register.
pub const HV_SYNIC_VERSION_1: u32 = 1;
/// Size of one message slot.
pub const HV_MESSAGE_SIZE: usize = 256;
/// Payload bytes in one message.
pub const HV_MESSAGE_PAYLOAD_SIZE: usize = 240;
/// Event flags per SINT in the SIEF page (256 bytes of flags).
pub const HV_EVENT_FLAGS_COUNT: usize = 2048;

open_enum! {
    /// `HV_MESSAGE_TYPE`. Types with bit 31 set are sent only by the hypervisor.
    pub struct HvMessageType(u32) {
        /// An empty slot.
        NONE = 0,
        UNMAPPED_GPA = 0x8000_0000,
        GPA_INTERCEPT = 0x8000_0001,
        TIMER_EXPIRED = 0x8000_0010,
        INVALID_VP_REGISTER_VALUE = 0x8000_0020,
        UNRECOVERABLE_EXCEPTION = 0x8000_0021,
        UNSUPPORTED_FEATURE = 0x8000_0022,
        TLB_PAGE_SIZE_MISMATCH = 0x8000_0023,
        OPAQUE_INTERCEPT = 0x8000_003F,
        EVENT_LOG_BUFFER_COMPLETE = 0x8000_0040,
        /// Payload: `x86_64::HvX64HypercallInterceptMessage` or
        /// `aarch64::HvArm64HypercallInterceptMessage`.
        HYPERCALL_INTERCEPT = 0x8000_0050,
        X64_IO_PORT_INTERCEPT = 0x8001_0000,
        X64_MSR_INTERCEPT = 0x8001_0001,
        X64_CPUID_INTERCEPT = 0x8001_0002,
        EXCEPTION_INTERCEPT = 0x8001_0003,
        X64_APIC_EOI = 0x8001_0004,
        X64_LEGACY_FP_ERROR = 0x8001_0005,
        REGISTER_INTERCEPT = 0x8001_0006,
        /// NON-TLFS (OpenVMM).
        X64_HALT = 0x8001_0007,
    }
}

/// Flags of the hypercall intercept message payload (both ISAs).
#[bitfield(u32)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvHypercallInterceptFlags {
    /// The intercepted VTL runs in a hardware-isolated (SNP/TDX/CCA) partition.
    pub is_isolated: bool,
    #[bits(31)]
    __: u32,
}

/// `HV_MESSAGE_FLAGS`.
#[bitfield(u8)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvMessageFlags {
    /// More messages are queued for this SINT: write EOM after emptying the slot.
    pub message_pending: bool,
    #[bits(7)]
    __: u8,
}

/// `HV_MESSAGE_HEADER`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvMessageHeader {
    pub message_type: HvMessageType,
    /// Payload bytes in use, not counting the header.
    pub payload_size: u8,
    pub message_flags: HvMessageFlags,
    pub reserved: u16,
    /// Sender, port id or partition id, depending on the message type.
    pub origination_id: u64,
}

/// `HV_MESSAGE`: one 256-byte SIM slot (and the VP assist page's intercept message).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvMessage {
    pub header: HvMessageHeader,
    pub payload: [u64; HV_MESSAGE_PAYLOAD_SIZE / 8],
}

impl HvMessage {
    pub fn payload_bytes(&self) -> &[u8] {
        self.payload.as_bytes()
    }

    pub fn payload_bytes_mut(&mut self) -> &mut [u8] {
        self.payload.as_mut_bytes()
    }
}

/// The SynIC message page (SIMP): one slot per SINT.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvMessagePage {
    pub sint_message: [HvMessage; HV_SYNIC_SINT_COUNT],
}

/// `HV_SYNIC_SINT`: SINTx register (`HV_X64_MSR_SINTx`, `HvRegisterSintx`). Resets to masked.
#[bitfield(u64)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvSynicSint {
    /// 16..=255.
    pub vector: u8,
    #[bits(8)]
    __: u8,
    pub masked: bool,
    pub auto_eoi: bool,
    pub polling: bool,
    #[bits(45)]
    __: u64,
}

/// `HV_SYNIC_SCONTROL`.
#[bitfield(u64)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvSynicScontrol {
    pub enable: bool,
    #[bits(63)]
    __: u64,
}

/// The SIMP register.
pub type HvSynicSimp = crate::HvPageRegister;
/// The SIEFP register.
pub type HvSynicSiefp = crate::HvPageRegister;

/// Input of HvCallPostMessage (0x005C).
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvInputPostMessage {
    pub connection_id: u32,
    pub reserved: u32,
    pub message_type: HvMessageType,
    pub payload_size: u32,
    pub payload: [u8; HV_MESSAGE_PAYLOAD_SIZE],
}

/// Input of HvCallSignalEvent (0x005D); small enough for a fast call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvInputSignalEvent {
    pub connection_id: u32,
    pub flag_number: u16,
    pub reserved: u16,
}

const _: () = {
    assert!(size_of::<HvMessageHeader>() == 16);
    assert!(offset_of!(HvMessageHeader, message_type) == 0);
    assert!(offset_of!(HvMessageHeader, payload_size) == 4);
    assert!(offset_of!(HvMessageHeader, message_flags) == 5);
    assert!(offset_of!(HvMessageHeader, reserved) == 6);
    assert!(offset_of!(HvMessageHeader, origination_id) == 8);
    assert!(size_of::<HvMessage>() == HV_MESSAGE_SIZE);
    assert!(offset_of!(HvMessage, payload) == 16);
    assert!(size_of::<HvMessagePage>() == 4096);
    assert!(size_of::<HvInputPostMessage>() == 256);
    assert!(offset_of!(HvInputPostMessage, connection_id) == 0);
    assert!(offset_of!(HvInputPostMessage, reserved) == 4);
    assert!(offset_of!(HvInputPostMessage, message_type) == 8);
    assert!(offset_of!(HvInputPostMessage, payload_size) == 12);
    assert!(offset_of!(HvInputPostMessage, payload) == 16);
    assert!(size_of::<HvInputSignalEvent>() == 8);
    assert!(offset_of!(HvInputSignalEvent, connection_id) == 0);
    assert!(offset_of!(HvInputSignalEvent, flag_number) == 4);
    assert!(offset_of!(HvInputSignalEvent, reserved) == 6);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sint_bits() {
        let sint = HvSynicSint::new().with_vector(0x30).with_masked(true);
        assert_eq!(sint.into_bits(), 0x1_0030);
        let sint = HvSynicSint::from_bits(0x6_0040);
        assert_eq!(sint.vector(), 0x40);
        assert!(!sint.masked() && sint.auto_eoi() && sint.polling());
    }

    #[test]
    fn message_from_bytes() {
        let mut raw = [0u8; HV_MESSAGE_SIZE];
        raw[..4].copy_from_slice(&0x8000_0010u32.to_le_bytes());
        raw[4] = 24;
        raw[5] = 1;
        raw[8..16].copy_from_slice(&7u64.to_le_bytes());
        raw[16..24].copy_from_slice(&0xAABBu64.to_le_bytes());
        let msg = HvMessage::read_from_bytes(&raw).unwrap();
        assert_eq!(msg.header.message_type, HvMessageType::TIMER_EXPIRED);
        assert_eq!(msg.header.payload_size, 24);
        assert!(msg.header.message_flags.message_pending());
        assert_eq!(msg.header.origination_id, 7);
        assert_eq!(msg.payload[0], 0xAABB);
        assert_eq!(&msg.payload_bytes()[..2], &[0xBB, 0xAA]);
    }
}
