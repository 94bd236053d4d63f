//! Hypercall status codes (`HV_STATUS`) and the `HvError`/`HvResult` types built on them.

use core::fmt;
use core::num::NonZeroU16;

/// Declares every status once, producing both `HvStatus::X` and the matching `HvError::X`.
macro_rules! statuses {
    ($( $(#[$cattr:meta])* $konst:ident = $value:literal, )*) => {
        open_enum! {
            /// `HV_STATUS`: the 16-bit result of a hypercall.
            #[must_use = "a hypercall status says whether the call did anything"]
            pub struct HvStatus(u16) {
                SUCCESS = 0,
                $( $(#[$cattr])* $konst = $value, )*
            }
        }

        impl HvError {
            $(
                $(#[$cattr])*
                pub const $konst: Self = Self(NonZeroU16::new($value).unwrap());
            )*
        }
    };
}

// Values are the v6.0b TLFS PDF, Appendix B, except where marked NON-TLFS.
statuses! {
    INVALID_HYPERCALL_CODE = 0x0002,
    INVALID_HYPERCALL_INPUT = 0x0003,
    INVALID_ALIGNMENT = 0x0004,
    INVALID_PARAMETER = 0x0005,
    ACCESS_DENIED = 0x0006,
    INVALID_PARTITION_STATE = 0x0007,
    OPERATION_DENIED = 0x0008,
    UNKNOWN_PROPERTY = 0x0009,
    PROPERTY_VALUE_OUT_OF_RANGE = 0x000A,
    INSUFFICIENT_MEMORY = 0x000B,
    PARTITION_TOO_DEEP = 0x000C,
    INVALID_PARTITION_ID = 0x000D,
    INVALID_VP_INDEX = 0x000E,
    /// NON-TLFS (Linux); the TLFS lists 0x0010 as reserved.
    NOT_FOUND = 0x0010,
    INVALID_PORT_ID = 0x0011,
    INVALID_CONNECTION_ID = 0x0012,
    /// The v5.0C/v6.0b PDFs print 0x0033, colliding with `INSUFFICIENT_BUFFER`; the v2.0 PDF,
    /// Linux and OpenVMM all use 0x0013.
    INSUFFICIENT_BUFFERS = 0x0013,
    NOT_ACKNOWLEDGED = 0x0014,
    INVALID_VP_STATE = 0x0015,
    ACKNOWLEDGED = 0x0016,
    INVALID_SAVE_RESTORE_STATE = 0x0017,
    INVALID_SYNIC_STATE = 0x0018,
    OBJECT_IN_USE = 0x0019,
    INVALID_PROXIMITY_DOMAIN_INFO = 0x001A,
    NO_DATA = 0x001B,
    INACTIVE = 0x001C,
    NO_RESOURCES = 0x001D,
    FEATURE_UNAVAILABLE = 0x001E,
    PARTIAL_PACKET = 0x001F,
    PROCESSOR_FEATURE_NOT_SUPPORTED = 0x0020,
    PROCESSOR_CACHE_LINE_FLUSH_SIZE_INCOMPATIBLE = 0x0030,
    INSUFFICIENT_BUFFER = 0x0033,
    INCOMPATIBLE_PROCESSOR = 0x0037,
    INSUFFICIENT_DEVICE_DOMAINS = 0x0038,
    CPUID_FEATURE_VALIDATION_ERROR = 0x003C,
    CPUID_XSAVE_FEATURE_VALIDATION_ERROR = 0x003D,
    PROCESSOR_STARTUP_TIMEOUT = 0x003E,
    SMX_ENABLED = 0x003F,
    INVALID_LP_INDEX = 0x0041,
    INVALID_REGISTER_VALUE = 0x0050,
    /// Named by the TLFS without a value; NON-TLFS value from OpenVMM.
    INVALID_VTL_STATE = 0x0051,
    NX_NOT_DETECTED = 0x0055,
    INVALID_DEVICE_ID = 0x0057,
    INVALID_DEVICE_STATE = 0x0058,
    PENDING_PAGE_REQUESTS = 0x0059,
    PAGE_REQUEST_INVALID = 0x0060,
    /// NON-TLFS (OpenVMM).
    KEY_ALREADY_EXISTS = 0x0065,
    /// NON-TLFS (OpenVMM).
    DEVICE_ALREADY_IN_DOMAIN = 0x0066,
    /// NON-TLFS (OpenVMM).
    INVALID_CPU_GROUP_ID = 0x006F,
    /// NON-TLFS (OpenVMM).
    INVALID_CPU_GROUP_STATE = 0x0070,
    OPERATION_FAILED = 0x0071,
    NOT_ALLOWED_WITH_NESTED_VIRT_ACTIVE = 0x0072,
    /// NON-TLFS (OpenVMM).
    INSUFFICIENT_ROOT_MEMORY = 0x0073,
    /// NON-TLFS (OpenVMM).
    EVENT_BUFFER_ALREADY_FREED = 0x0074,
    /// NON-TLFS (Linux `TIME_OUT`, OpenVMM `Timeout`): a rep call ran out of time; the caller
    /// re-issues it from "reps completed".
    TIMEOUT = 0x0078,
    /// NON-TLFS (Linux).
    CALL_PENDING = 0x0079,
    /// NON-TLFS (Linux).
    VTL_ALREADY_ENABLED = 0x0086,
    /// NON-TLFS (OpenVMM).
    UNKNOWN_REGISTER_NAME = 0x0087,
}

/// A failed hypercall: any status but `SUCCESS`.
#[must_use]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HvError(NonZeroU16);

/// The result of a hypercall, with success kept out of the error type.
pub type HvResult<T> = Result<T, HvError>;

impl HvStatus {
    /// `Ok(())` for `SUCCESS`, otherwise the error.
    pub const fn result(self) -> HvResult<()> {
        match NonZeroU16::new(self.0) {
            None => Ok(()),
            Some(code) => Err(HvError(code)),
        }
    }

    /// The status that reports `result` back to a caller.
    pub const fn from_result(result: HvResult<()>) -> Self {
        match result {
            Ok(()) => Self::SUCCESS,
            Err(err) => err.status(),
        }
    }
}

impl HvError {
    /// The error for a non-success status.
    pub const fn new(status: HvStatus) -> Option<Self> {
        match status.result() {
            Ok(()) => None,
            Err(err) => Some(err),
        }
    }

    /// The status code of this error.
    pub const fn status(self) -> HvStatus {
        HvStatus(self.0.get())
    }
}

impl From<HvError> for HvStatus {
    fn from(err: HvError) -> Self {
        err.status()
    }
}

impl From<HvResult<()>> for HvStatus {
    fn from(result: HvResult<()>) -> Self {
        Self::from_result(result)
    }
}

impl TryFrom<HvStatus> for HvError {
    type Error = ();

    fn try_from(status: HvStatus) -> Result<Self, ()> {
        Self::new(status).ok_or(())
    }
}

impl fmt::Display for HvStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "HV_STATUS_{name}"),
            None => write!(f, "HV_STATUS_UNKNOWN({:#06x})", self.0),
        }
    }
}

impl fmt::Display for HvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.status(), f)
    }
}

impl fmt::Debug for HvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.status(), f)
    }
}

impl core::error::Error for HvError {}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn values() {
        assert_eq!(HvStatus::INSUFFICIENT_BUFFERS.0, 0x13);
        assert_eq!(HvStatus::INSUFFICIENT_BUFFER.0, 0x33);
        assert_eq!(HvStatus::TIMEOUT.0, 0x78);
        assert_eq!(HvStatus::INVALID_VTL_STATE.0, 0x51);
        assert_eq!(HvError::ACCESS_DENIED.status(), HvStatus(6));
    }

    #[test]
    fn display() {
        assert_eq!(
            format!("{}", HvError::INVALID_PARAMETER),
            "HV_STATUS_INVALID_PARAMETER"
        );
        assert_eq!(format!("{}", HvStatus::SUCCESS), "HV_STATUS_SUCCESS");
        assert_eq!(format!("{}", HvStatus(0x1234)), "HV_STATUS_UNKNOWN(0x1234)");
        assert_eq!(format!("{:?}", HvStatus(0x13)), "INSUFFICIENT_BUFFERS");
        assert_eq!(format!("{:?}", HvStatus(0x1234)), "HvStatus(0x1234)");
    }

    #[test]
    fn result_round_trip() {
        assert_eq!(HvStatus::SUCCESS.result(), Ok(()));
        assert_eq!(
            HvStatus::INVALID_ALIGNMENT.result(),
            Err(HvError::INVALID_ALIGNMENT)
        );
        assert_eq!(HvError::new(HvStatus::SUCCESS), None);
        assert_eq!(HvStatus::from(Err(HvError::TIMEOUT)), HvStatus::TIMEOUT);
        assert_eq!(HvStatus::from(Ok(())), HvStatus::SUCCESS);
        assert_eq!(
            HvError::try_from(HvStatus(0x87)),
            Ok(HvError::UNKNOWN_REGISTER_NAME)
        );
    }
}
