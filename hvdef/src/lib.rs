//! Hyper-V Top Level Functional Specification definitions shared by the firmware and host tools.
//!
//! Numbers, bit layouts and wire structs only: no logic and no `unsafe`. ISA-independent
//! definitions are re-exported at the crate root; [`x86_64`] and [`aarch64`] hold the
//! ISA-specific ones and are always compiled, because host tools (the mock hypervisor) need both.
//! [`loader_data`] holds the layouts of what a loader hands the firmware (IGVM parameters,
//! PVH start info, ACPI, device tree header), shared the same way.
#![no_std]
#![forbid(unsafe_code)]

/// Declares an open enum: a transparent newtype over an integer with named constants, so a value
/// the crate does not know (from a guest or a newer hypervisor) is data rather than undefined
/// behaviour. Also provides `name()`, a `Debug` that prints the name, and the `from_bits`/
/// `into_bits` pair that lets the type be a `bitfield-struct` field.
macro_rules! open_enum {
    (
        $(#[$attr:meta])*
        pub struct $name:ident($int:ty) {
            $( $(#[$cattr:meta])* $konst:ident = $value:expr, )*
        }
    ) => {
        $(#[$attr])*
        #[repr(transparent)]
        #[derive(
            Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
            zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable, zerocopy::KnownLayout,
        )]
        pub struct $name(pub $int);

        impl $name {
            $( $(#[$cattr])* pub const $konst: Self = Self($value); )*

            /// The name of the constant with this value, if this crate defines one.
            pub const fn name(self) -> Option<&'static str> {
                match self {
                    $( Self::$konst => Some(stringify!($konst)), )*
                    _ => None,
                }
            }

            /// Conversion used by `bitfield-struct` fields of this type.
            pub const fn from_bits(bits: $int) -> Self {
                Self(bits)
            }

            /// Conversion used by `bitfield-struct` fields of this type.
            pub const fn into_bits(self) -> $int {
                self.0
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, "{}({:#x})", stringify!($name), self.0),
                }
            }
        }

        impl From<$int> for $name {
            fn from(value: $int) -> Self {
                Self(value)
            }
        }

        impl From<$name> for $int {
            fn from(value: $name) -> Self {
                value.0
            }
        }
    };
}

/// Declares constants of an existing open enum in a module (the arch register names, which share
/// number ranges across ISAs and so cannot live in one table), plus a `name()` lookup for them.
macro_rules! named_consts {
    ($ty:ty { $( $(#[$cattr:meta])* $konst:ident = $value:expr, )* }) => {
        $( $(#[$cattr])* pub const $konst: $ty = <$ty>::from_bits($value); )*

        /// The name of the constant in this module with this value, if there is one.
        pub const fn name(value: $ty) -> Option<&'static str> {
            match value {
                $( $konst => Some(stringify!($konst)), )*
                _ => None,
            }
        }
    };
}

/// Declares one ISA's HvCallEnableVpVtl input (0x000F) and its HvCallStartVirtualProcessor
/// (0x0099) alias; the two calls share a layout that differs between ISAs only in the initial
/// context at offset 16.
macro_rules! vp_context_input {
    ($enable:ident, $start:ident, $context:ty) => {
        #[doc = concat!("Input of HvCallEnableVpVtl (0x000F) with a [`", stringify!($context), "`].")]
        #[repr(C)]
        #[derive(
            Clone,
            Copy,
            Debug,
            PartialEq,
            Eq,
            zerocopy::FromBytes,
            zerocopy::IntoBytes,
            zerocopy::Immutable,
            zerocopy::KnownLayout,
        )]
        pub struct $enable {
            pub partition_id: u64,
            pub vp_index: u32,
            /// A plain `HV_VTL`, not an `HV_INPUT_VTL`.
            pub target_vtl: u8,
            pub reserved: [u8; 3],
            pub context: $context,
        }

        /// Input of HvCallStartVirtualProcessor (0x0099): the same layout as HvCallEnableVpVtl.
        pub type $start = $enable;

        const _: () = {
            assert!(size_of::<$enable>() == 16 + size_of::<$context>());
            assert!(core::mem::offset_of!($enable, partition_id) == 0);
            assert!(core::mem::offset_of!($enable, vp_index) == 8);
            assert!(core::mem::offset_of!($enable, target_vtl) == 12);
            assert!(core::mem::offset_of!($enable, reserved) == 13);
            assert!(core::mem::offset_of!($enable, context) == 16);
        };
    };
}

pub mod aarch64;
pub mod features;
pub mod heap;
pub mod hypercall;
pub mod input;
pub mod loader_data;
pub mod registers;
pub mod status;
pub mod synic;
pub mod synthetic;
pub mod vsm;
pub mod vtl;
pub mod x86_64;

pub use features::*;
pub use hypercall::*;
pub use input::*;
pub use registers::*;
pub use status::*;
pub use synic::*;
pub use synthetic::*;
pub use vsm::*;
pub use vtl::*;
