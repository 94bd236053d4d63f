//! Virtual Trust Levels: the VTL number and the `HV_INPUT_VTL` byte of hypercall inputs.

use bitfield_struct::bitfield;
use core::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A Virtual Trust Level, 0..=15 (`HV_VTL`); only 0, 1 and 2 are in use.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Vtl(u8);

impl Vtl {
    pub const VTL0: Self = Self(0);
    pub const VTL1: Self = Self(1);
    pub const VTL2: Self = Self(2);
    /// The highest VTL the architecture allows.
    pub const MAX: Self = Self(15);

    /// The VTL numbered `vtl`, if it is in range.
    pub const fn new(vtl: u8) -> Option<Self> {
        if vtl <= Self::MAX.0 {
            Some(Self(vtl))
        } else {
            None
        }
    }

    pub const fn get(self) -> u8 {
        self.0
    }
}

impl From<Vtl> for u8 {
    fn from(vtl: Vtl) -> Self {
        vtl.0
    }
}

impl TryFrom<u8> for Vtl {
    type Error = ();

    fn try_from(vtl: u8) -> Result<Self, ()> {
        Self::new(vtl).ok_or(())
    }
}

impl fmt::Display for Vtl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VTL{}", self.0)
    }
}

/// `HV_INPUT_VTL`: which VTL's state a call targets.
#[bitfield(u8)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvInputVtl {
    #[bits(4)]
    pub target_vtl: u8,
    /// When clear, the call targets the caller's VTL (or all VTLs, depending on the call).
    pub use_target_vtl: bool,
    #[bits(3)]
    __: u8,
}

impl HvInputVtl {
    /// The caller's own VTL.
    pub const CURRENT: Self = Self::new();

    /// Explicitly `vtl`.
    pub const fn target(vtl: Vtl) -> Self {
        Self::new().with_target_vtl(vtl.0).with_use_target_vtl(true)
    }

    /// The explicit target, or `None` when the call targets the caller's VTL.
    pub const fn explicit_target(self) -> Option<Vtl> {
        if self.use_target_vtl() {
            Some(Vtl(self.target_vtl()))
        } else {
            None
        }
    }

    /// Bits 7:5, which must be zero.
    pub const fn reserved_bits(self) -> u8 {
        self.into_bits() & 0xE0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_vtl() {
        assert_eq!(HvInputVtl::CURRENT.into_bits(), 0);
        assert_eq!(HvInputVtl::target(Vtl::VTL2).into_bits(), 0x12);
        assert_eq!(
            HvInputVtl::from_bits(0x10).explicit_target(),
            Some(Vtl::VTL0)
        );
        assert_eq!(HvInputVtl::from_bits(0x01).explicit_target(), None);
        assert_eq!(HvInputVtl::from_bits(0x31).reserved_bits(), 0x20);
        assert_eq!(Vtl::new(16), None);
        assert_eq!(Vtl::new(15), Some(Vtl::MAX));
    }
}
