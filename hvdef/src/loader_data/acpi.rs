//! The ACPI tables that lead to the CPU count (ACPI 6.x §5.2.5 RSDP, §5.2.6 system description
//! table header, §5.2.7/5.2.8 RSDT/XSDT, §5.2.12 MADT): `boot::acpi` reads them, the in-VM
//! mock writes them for a PVH boot. ACPI fields are unaligned, so multi-byte fields are
//! zerocopy's little-endian types (alignment 1): the structs have exactly the tables' sizes.

use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `RSDP.Signature`.
pub const RSDP_SIGNATURE: [u8; 8] = *b"RSD PTR ";
/// Signatures of the tables read.
pub const XSDT_SIGNATURE: [u8; 4] = *b"XSDT";
pub const RSDT_SIGNATURE: [u8; 4] = *b"RSDT";
pub const MADT_SIGNATURE: [u8; 4] = *b"APIC";

/// The ACPI 1.0 RSDP (revision 0), and the start of every later one: what its checksum covers.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
pub struct RsdpV1 {
    pub signature: [u8; 8],
    /// Makes these [`RSDP_V1_LEN`] bytes sum to 0.
    pub checksum: u8,
    pub oem_id: [u8; 6],
    pub revision: u8,
    pub rsdt_address: U32,
}

/// The size of [`RsdpV1`].
pub const RSDP_V1_LEN: usize = size_of::<RsdpV1>();

/// The RSDP, ACPI 2.0+ (revision 2).
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
pub struct Rsdp {
    pub v1: RsdpV1,
    /// The whole RSDP's length.
    pub length: U32,
    pub xsdt_address: U64,
    /// Makes all `length` bytes sum to 0.
    pub extended_checksum: u8,
    pub reserved: [u8; 3],
}

/// The header every system description table starts with.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
pub struct SdtHeader {
    pub signature: [u8; 4],
    /// The whole table's length, this header included.
    pub length: U32,
    pub revision: u8,
    /// Makes all `length` bytes sum to 0.
    pub checksum: u8,
    pub oem_id: [u8; 6],
    pub oem_table_id: [u8; 8],
    pub oem_revision: U32,
    pub creator_id: [u8; 4],
    pub creator_revision: U32,
}

/// The MADT's fixed part; interrupt controller structures ([`MadtEntryHeader`]) follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
pub struct Madt {
    pub header: SdtHeader,
    pub local_interrupt_controller_address: U32,
    /// Bit 0: PCAT_COMPAT.
    pub flags: U32,
}

/// What every MADT interrupt controller structure starts with.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
pub struct MadtEntryHeader {
    pub entry_type: u8,
    /// The whole structure's length, this header included.
    pub length: u8,
}

/// `MadtEntryHeader::entry_type` of [`MadtLocalApic`].
pub const MADT_LOCAL_APIC: u8 = 0;
/// `MadtEntryHeader::entry_type` of [`MadtLocalX2Apic`].
pub const MADT_LOCAL_X2APIC: u8 = 9;
/// Both processor structures' flags, bit 0: Enabled. (Bit 1 of a local APIC's, Online
/// Capable, marks a hot-pluggable processor that is not running.)
pub const MADT_ENABLED: u32 = 1;

/// Processor Local APIC structure (type 0, 8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
pub struct MadtLocalApic {
    pub header: MadtEntryHeader,
    pub processor_uid: u8,
    pub apic_id: u8,
    pub flags: U32,
}

/// Processor Local x2APIC structure (type 9, 16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
pub struct MadtLocalX2Apic {
    pub header: MadtEntryHeader,
    pub reserved: [u8; 2],
    pub x2apic_id: U32,
    pub flags: U32,
    pub processor_uid: U32,
}

const _: () = {
    assert!(size_of::<Rsdp>() == 36);
    assert!(RSDP_V1_LEN == 20);
    assert!(offset_of!(RsdpV1, revision) == 15);
    assert!(offset_of!(RsdpV1, rsdt_address) == 16);
    assert!(offset_of!(Rsdp, length) == 20);
    assert!(offset_of!(Rsdp, xsdt_address) == 24);
    assert!(offset_of!(Rsdp, extended_checksum) == 32);
    assert!(size_of::<SdtHeader>() == 36);
    assert!(offset_of!(SdtHeader, length) == 4);
    assert!(offset_of!(SdtHeader, checksum) == 9);
    assert!(size_of::<Madt>() == 44);
    assert!(size_of::<MadtEntryHeader>() == 2);
    assert!(size_of::<MadtLocalApic>() == 8);
    assert!(offset_of!(MadtLocalApic, flags) == 4);
    assert!(size_of::<MadtLocalX2Apic>() == 16);
    assert!(offset_of!(MadtLocalX2Apic, flags) == 8);
};
