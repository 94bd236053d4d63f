//! The hypercall ABI: call codes, the control (input) word and the result (output) word.

use crate::{HvResult, HvStatus};
use bitfield_struct::bitfield;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of a hypervisor page; hypercall input and output lists must not cross one.
pub const HV_PAGE_SIZE: u64 = 4096;
/// `log2(HV_PAGE_SIZE)`, for GPA <-> page number conversions.
pub const HV_PAGE_SHIFT: u32 = 12;
/// `HV_PARTITION_ID_SELF`: the caller's own partition.
pub const HV_PARTITION_ID_SELF: u64 = u64::MAX;
/// `HV_VP_INDEX_SELF`: the calling virtual processor.
pub const HV_VP_INDEX_SELF: u32 = 0xFFFF_FFFE;
/// `HV_ANY_VP`: any virtual processor (where a call allows it).
pub const HV_ANY_VP: u32 = 0xFFFF_FFFF;

open_enum! {
    /// A hypercall call code (bits 15:0 of the control word), named after `HvCall*`.
    pub struct HypercallCode(u16) {
        SWITCH_VIRTUAL_ADDRESS_SPACE = 0x0001,
        FLUSH_VIRTUAL_ADDRESS_SPACE = 0x0002,
        FLUSH_VIRTUAL_ADDRESS_LIST = 0x0003,
        NOTIFY_LONG_SPIN_WAIT = 0x0008,
        SEND_SYNTHETIC_CLUSTER_IPI = 0x000B,
        MODIFY_VTL_PROTECTION_MASK = 0x000C,
        ENABLE_PARTITION_VTL = 0x000D,
        /// Only in the v6.0b PDF.
        DISABLE_PARTITION_VTL = 0x000E,
        ENABLE_VP_VTL = 0x000F,
        /// Only in the v6.0b PDF.
        DISABLE_VP_VTL = 0x0010,
        VTL_CALL = 0x0011,
        VTL_RETURN = 0x0012,
        FLUSH_VIRTUAL_ADDRESS_SPACE_EX = 0x0013,
        FLUSH_VIRTUAL_ADDRESS_LIST_EX = 0x0014,
        SEND_SYNTHETIC_CLUSTER_IPI_EX = 0x0015,
        INSTALL_INTERCEPT = 0x004D,
        GET_VP_REGISTERS = 0x0050,
        SET_VP_REGISTERS = 0x0051,
        TRANSLATE_VIRTUAL_ADDRESS = 0x0052,
        POST_MESSAGE = 0x005C,
        SIGNAL_EVENT = 0x005D,
        RETARGET_DEVICE_INTERRUPT = 0x007E,
        START_VIRTUAL_PROCESSOR = 0x0099,
        GET_VP_INDEX_FROM_APIC_ID = 0x009A,
        FLUSH_GUEST_PHYSICAL_ADDRESS_SPACE = 0x00AF,
        FLUSH_GUEST_PHYSICAL_ADDRESS_LIST = 0x00B0,
        /// ARM64 only.
        INSTALL_INTERCEPT_EX = 0x0110,
        EXT_QUERY_CAPABILITIES = 0x8001,
        EXT_GET_BOOT_ZEROED_MEMORY = 0x8002,
        EXT_MEMORY_HEAT_HINT = 0x8003,
        EXT_EPF_SETUP = 0x8004,
        EXT_SCHEDULER_ASSIST_SETUP = 0x8005,
        EXT_MEMORY_HEAT_HINT_ASYNC = 0x8006,
    }
}

/// Whether a call processes a list of elements (TLFS "rep" call) or a single input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// Rep count and rep start index must be zero.
    Simple,
    /// Rep count must be non-zero and greater than the rep start index.
    Rep,
}

impl HypercallCode {
    /// The first extended call code. The TLFS says extended calls are "above 0x8000"; 0x8000 itself
    /// is no call, and Linux and KVM start the range at QueryCapabilities (0x8001).
    pub const FIRST_EXTENDED: Self = Self::EXT_QUERY_CAPABILITIES;

    /// Whether this is an extended hypercall (`HvExtCall*`), which is never nested and needs the
    /// EnableExtendedHypercalls privilege.
    pub const fn is_extended(self) -> bool {
        self.0 >= Self::FIRST_EXTENDED.0
    }

    /// Simple or rep, per the TLFS call-code table. Codes this crate does not know report `Simple`;
    /// a dispatcher rejects them by code before this matters.
    pub const fn kind(self) -> CallKind {
        match self {
            Self::FLUSH_VIRTUAL_ADDRESS_LIST
            | Self::MODIFY_VTL_PROTECTION_MASK
            | Self::FLUSH_VIRTUAL_ADDRESS_LIST_EX
            | Self::GET_VP_REGISTERS
            | Self::SET_VP_REGISTERS
            | Self::GET_VP_INDEX_FROM_APIC_ID
            | Self::FLUSH_GUEST_PHYSICAL_ADDRESS_LIST
            | Self::INSTALL_INTERCEPT_EX => CallKind::Rep,
            _ => CallKind::Simple,
        }
    }

    /// Whether this is a rep call.
    pub const fn is_rep(self) -> bool {
        matches!(self.kind(), CallKind::Rep)
    }

    /// Whether the call is documented to take a variable-size header (the sparse VP sets of the
    /// `*Ex` calls); any other call with a non-zero variable header size is invalid input.
    pub const fn takes_variable_header(self) -> bool {
        matches!(
            self,
            Self::FLUSH_VIRTUAL_ADDRESS_SPACE_EX
                | Self::FLUSH_VIRTUAL_ADDRESS_LIST_EX
                | Self::SEND_SYNTHETIC_CLUSTER_IPI_EX
                // The banks of a sparse processor set (Linux `hv_irq_unmask`'s `var_size`).
                | Self::RETARGET_DEVICE_INTERRUPT
        )
    }
}

/// The register holding the caller's control word, where a call left for re-execution
/// (TIMEOUT) gets its new rep start: RCX on x64, X1 under SMCCC (`hvc #0`), X0 under `hvc #1`
/// (where it is also the result register).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlRegister {
    Rcx,
    X0,
    X1,
}

/// The hypercall input value ("control word"), in RCX on x64 and X1 (X0 for `HVC #1`) on ARM64.
///
/// Uses the TLFS markdown layout (variable header 26:17, nested bit 31); the v6.0b PDF's older
/// layout (nested at 26) was corrected in the documentation repository in 2022 and Linux agrees.
#[bitfield(u64)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Control {
    #[bits(16)]
    pub code: HypercallCode,
    /// Register-based (fast) call.
    pub fast: bool,
    /// Size of the variable header in 8-byte units.
    #[bits(10)]
    pub variable_header_size: u16,
    #[bits(4)]
    __: u8,
    /// Ask the L0 hypervisor, not the guest hypervisor, to handle the call.
    pub nested: bool,
    #[bits(12)]
    pub rep_count: u16,
    #[bits(4)]
    __: u8,
    #[bits(12)]
    pub rep_start: u16,
    #[bits(4)]
    __: u8,
}

impl Control {
    /// Bits 30:27, 47:44 and 63:60, which must be zero.
    pub const RESERVED_MASK: u64 = 0xF000_F000_7800_0000;

    /// The reserved bits that are set; non-zero means `HV_STATUS_INVALID_HYPERCALL_INPUT`.
    pub const fn reserved_bits(self) -> u64 {
        self.into_bits() & Self::RESERVED_MASK
    }
}

/// The hypercall result value, returned in RAX on x64 and X0 on ARM64.
#[bitfield(u64)]
#[must_use = "a hypercall's result says whether, and how far, the call got"]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HypercallOutput {
    #[bits(16)]
    pub status: HvStatus,
    #[bits(16)]
    __: u16,
    /// Absolute count of completed elements (not relative to the rep start index).
    #[bits(12)]
    pub reps_completed: u16,
    #[bits(20)]
    __: u32,
}

impl HypercallOutput {
    /// The status as a result.
    pub const fn result(self) -> HvResult<()> {
        self.status().result()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::HvError;
    use std::format;

    #[test]
    fn golden_control_words() {
        let c = Control::new()
            .with_code(HypercallCode::SET_VP_REGISTERS)
            .with_fast(true)
            .with_rep_count(1);
        assert_eq!(c.into_bits(), 0x1_0001_0051);
        assert_eq!(Control::new().with_nested(true).into_bits(), 1 << 31);
        assert_eq!(Control::new().with_fast(true).into_bits(), 1 << 16);
        assert_eq!(
            Control::new().with_variable_header_size(0x3FF).into_bits(),
            0x3FF << 17
        );
        assert_eq!(
            Control::new().with_rep_count(0xFFF).into_bits(),
            0xFFF << 32
        );
        assert_eq!(
            Control::new().with_rep_start(0xFFF).into_bits(),
            0xFFF << 48
        );
    }

    #[test]
    fn control_parse() {
        let c = Control::from_bits(0x0005_0019_0023_0014);
        assert_eq!(c.code(), HypercallCode::FLUSH_VIRTUAL_ADDRESS_LIST_EX);
        assert!(c.fast());
        assert_eq!(c.variable_header_size(), 0x11);
        assert!(!c.nested());
        assert_eq!(c.rep_count(), 0x19);
        assert_eq!(c.rep_start(), 5);
        assert_eq!(c.reserved_bits(), 0);
    }

    #[test]
    fn reserved_mask_is_complement_of_fields() {
        let all = Control::new()
            .with_code(HypercallCode(0xFFFF))
            .with_fast(true)
            .with_variable_header_size(0x3FF)
            .with_nested(true)
            .with_rep_count(0xFFF)
            .with_rep_start(0xFFF);
        assert_eq!(all.into_bits(), !Control::RESERVED_MASK);
        assert_eq!(all.reserved_bits(), 0);
        assert_eq!(Control::from_bits(1 << 27).reserved_bits(), 1 << 27);
        assert_eq!(Control::from_bits(1 << 63).reserved_bits(), 1 << 63);
        assert_eq!(Control::from_bits(1 << 44).reserved_bits(), 1 << 44);
    }

    #[test]
    fn output_parse() {
        let out = HypercallOutput::from_bits(0x0000_000A_FFFF_0078);
        assert_eq!(out.status(), HvStatus::TIMEOUT);
        assert_eq!(out.reps_completed(), 10);
        assert_eq!(out.result(), Err(HvError::TIMEOUT));
        assert_eq!(
            HypercallOutput::from_bits(0x0000_0003_0000_0000).result(),
            Ok(())
        );
    }

    #[test]
    fn extended_boundary() {
        assert!(!HypercallCode(0x8000).is_extended());
        assert!(HypercallCode::EXT_QUERY_CAPABILITIES.is_extended());
        assert!(HypercallCode(0xFFFF).is_extended());
        assert!(!HypercallCode::INSTALL_INTERCEPT_EX.is_extended());
    }

    #[test]
    fn call_kinds() {
        assert!(HypercallCode::GET_VP_REGISTERS.is_rep());
        assert!(HypercallCode::MODIFY_VTL_PROTECTION_MASK.is_rep());
        assert!(!HypercallCode::POST_MESSAGE.is_rep());
        assert!(!HypercallCode::EXT_QUERY_CAPABILITIES.is_rep());
        assert_eq!(HypercallCode::INSTALL_INTERCEPT_EX.kind(), CallKind::Rep);
        assert!(HypercallCode::SEND_SYNTHETIC_CLUSTER_IPI_EX.takes_variable_header());
        assert!(!HypercallCode::SEND_SYNTHETIC_CLUSTER_IPI.takes_variable_header());
    }

    #[test]
    fn names() {
        assert_eq!(HypercallCode(0x5C).name(), Some("POST_MESSAGE"));
        assert_eq!(HypercallCode(0xBEEF).name(), None);
        assert_eq!(
            format!("{:?}", HypercallCode(0x8006)),
            "EXT_MEMORY_HEAT_HINT_ASYNC"
        );
        assert_eq!(
            format!("{:?}", HypercallCode(0xBEEF)),
            "HypercallCode(0xbeef)"
        );
    }
}
