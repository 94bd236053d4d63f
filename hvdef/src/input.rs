//! Wire layouts of hypercall inputs (register access, VTL enablement, VP start, protections,
//! intercepts), each checked at compile time against the TLFS offsets.

use crate::{HvInputVtl, HvRegisterName, HvRegisterValue};
use bitfield_struct::bitfield;
use core::mem::offset_of;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Header of HvCallGetVpRegisters (0x0050). The rep elements that follow are `HvRegisterName`s
/// (4 bytes each); the output elements are `HvRegisterValue`s.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvInputGetVpRegisters {
    pub partition_id: u64,
    pub vp_index: u32,
    pub target_vtl: HvInputVtl,
    pub reserved: [u8; 3],
}

/// Header of HvCallSetVpRegisters (0x0051): the same as Get; the rep elements are
/// [`HvRegisterAssoc`]s.
pub type HvInputSetVpRegisters = HvInputGetVpRegisters;

/// A name/value pair: the rep element of HvCallSetVpRegisters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvRegisterAssoc {
    pub name: HvRegisterName,
    pub reserved: [u32; 3],
    pub value: HvRegisterValue,
}

impl HvRegisterAssoc {
    pub const fn new(name: HvRegisterName, value: HvRegisterValue) -> Self {
        HvRegisterAssoc {
            name,
            reserved: [0; 3],
            value,
        }
    }
}

/// The rep element of HvCallSetVpRegisters, by its TLFS role.
pub type HvInputSetVpRegistersElement = HvRegisterAssoc;

/// Flags of HvCallEnablePartitionVtl.
#[bitfield(u8)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvEnablePartitionVtlFlags {
    pub enable_mbec: bool,
    #[bits(7)]
    __: u8,
}

/// Input of HvCallEnablePartitionVtl (0x000D).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvInputEnablePartitionVtl {
    pub partition_id: u64,
    /// A plain `HV_VTL`, not an `HV_INPUT_VTL`.
    pub target_vtl: u8,
    pub flags: HvEnablePartitionVtlFlags,
    pub reserved: [u8; 6],
}

/// `HV_MAP_GPA_FLAGS`: VTL protection bits. With MBEC off, kernel-execute governs both modes.
#[bitfield(u32)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvMapGpaFlags {
    pub readable: bool,
    pub writable: bool,
    pub kernel_executable: bool,
    pub user_executable: bool,
    #[bits(28)]
    __: u32,
}

impl HvMapGpaFlags {
    /// No access: the page is fully protected from lower VTLs.
    pub const NO_ACCESS: Self = Self::new();
    /// Read, write, kernel and user execute.
    pub const ALL_ACCESS: Self = Self::from_bits(0xF);
}

/// Header of HvCallModifyVtlProtectionMask (0x000C); the rep elements are u64 GPA page numbers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvInputModifyVtlProtectionMask {
    pub partition_id: u64,
    pub map_flags: HvMapGpaFlags,
    pub target_vtl: HvInputVtl,
    pub reserved: [u8; 3],
}

open_enum! {
    /// `HV_INTERCEPT_TYPE`.
    pub struct HvInterceptType(u32) {
        X64_IO_PORT = 0x0000_0000,
        X64_MSR = 0x0000_0001,
        X64_CPUID = 0x0000_0002,
        EXCEPTION = 0x0000_0003,
        X64_GLOBAL_CPUID = 0x0000_0006,
        X64_APIC_SMI = 0x0000_0007,
        HYPERCALL = 0x0000_0008,
        X64_APIC_INIT_SIPI = 0x0000_0009,
        X64_APIC_WRITE = 0x0000_000B,
        UNKNOWN_SYNIC_CONNECTION = 0x0000_000D,
        X64_APIC_EOI = 0x0000_000E,
        RETARGET_INTERRUPT_WITH_UNKNOWN_DEVICE_ID = 0x0000_000F,
        X64_EXCEPTION_TRAP = 0x0000_0010,
        X64_IO_PORT_RANGE = 0x0000_0011,
        /// ARM64.
        REGISTER = 0x0000_0012,
        /// ARM64.
        SYSTEM_RESET_EXTENDED = 0x0000_0013,
    }
}

/// `HV_INTERCEPT_ACCESS_TYPE_MASK`: which accesses HvCallInstallIntercept intercepts.
#[bitfield(u32)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvInterceptAccessMask {
    pub read: bool,
    pub write: bool,
    pub execute: bool,
    #[bits(29)]
    __: u32,
}

open_enum! {
    /// `HV_INTERCEPT_ACCESS_TYPE`: the access that caused an intercept message (a value, unlike
    /// the install mask).
    pub struct HvInterceptAccessType(u8) {
        READ = 0,
        WRITE = 1,
        EXECUTE = 2,
    }
}

/// `HV_MEMORY_ACCESS_INFO` of a memory intercept message (OpenVMM hvdef `HvX64MemoryAccessInfo`
/// / `HvArm64MemoryAccessInfo`; the first three bits agree on both ISAs).
#[bitfield(u8)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvMemoryAccessInfo {
    /// `guest_virtual_address` holds the address the access used.
    pub gva_valid: bool,
    /// The hypervisor translated the GVA and holds the TLB lock for the exit.
    pub gva_gpa_valid: bool,
    /// The access is the hypervisor's own, writing a hypercall's output.
    pub hypercall_output_pending: bool,
    #[bits(5)]
    __: u8,
}

/// Input of HvCallInstallIntercept (0x004D).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvInputInstallIntercept {
    pub partition_id: u64,
    pub access_type: HvInterceptAccessMask,
    pub intercept_type: HvInterceptType,
    /// Type-specific: I/O port, MSR index, CPUID leaf, exception vector; 0 for HYPERCALL.
    pub intercept_parameter: u64,
}

/// `HV_DEVICE_INTERRUPT_TARGET.Flags`: the target is a sparse VP set (its banks follow in the
/// variable header) instead of the 64-VP mask.
pub const HV_DEVICE_INTERRUPT_TARGET_PROCESSOR_SET: u32 = 2;
/// `HV_DEVICE_INTERRUPT_TARGET.Flags`: multicast.
pub const HV_DEVICE_INTERRUPT_TARGET_MULTICAST: u32 = 1;

/// Fixed input of HvCallRetargetDeviceInterrupt (0x007E), as Linux's
/// `hv_retarget_device_interrupt` (include/hyperv/hvgdk_mini.h): the `HV_INTERRUPT_ENTRY`
/// (source, reserved, MSI address/data or I/O APIC RTE), a reserved word, then the
/// `HV_DEVICE_INTERRUPT_TARGET` (vector, flags, VP mask or the first word of a VP set). A sparse
/// VP set's valid-bank mask and banks are the variable header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvInputRetargetDeviceInterrupt {
    pub partition_id: u64,
    pub device_id: u64,
    pub interrupt_source: u32,
    pub reserved1: u32,
    pub interrupt_data: u64,
    pub reserved2: u64,
    pub vector: u32,
    pub target_flags: u32,
    /// The VP mask, or a VP set's format word with `HV_DEVICE_INTERRUPT_TARGET_PROCESSOR_SET`.
    pub vp_mask_or_format: u64,
}

const _: () = {
    assert!(size_of::<HvInputRetargetDeviceInterrupt>() == 56);
    assert!(offset_of!(HvInputRetargetDeviceInterrupt, device_id) == 8);
    assert!(offset_of!(HvInputRetargetDeviceInterrupt, interrupt_source) == 16);
    assert!(offset_of!(HvInputRetargetDeviceInterrupt, interrupt_data) == 24);
    assert!(offset_of!(HvInputRetargetDeviceInterrupt, reserved2) == 32);
    assert!(offset_of!(HvInputRetargetDeviceInterrupt, vector) == 40);
    assert!(offset_of!(HvInputRetargetDeviceInterrupt, target_flags) == 44);
    assert!(offset_of!(HvInputRetargetDeviceInterrupt, vp_mask_or_format) == 48);

    assert!(size_of::<HvInputGetVpRegisters>() == 16);
    assert!(offset_of!(HvInputGetVpRegisters, partition_id) == 0);
    assert!(offset_of!(HvInputGetVpRegisters, vp_index) == 8);
    assert!(offset_of!(HvInputGetVpRegisters, target_vtl) == 12);
    assert!(offset_of!(HvInputGetVpRegisters, reserved) == 13);

    assert!(size_of::<HvRegisterAssoc>() == 32);
    assert!(offset_of!(HvRegisterAssoc, name) == 0);
    assert!(offset_of!(HvRegisterAssoc, reserved) == 4);
    assert!(offset_of!(HvRegisterAssoc, value) == 16);

    assert!(size_of::<HvInputEnablePartitionVtl>() == 16);
    assert!(offset_of!(HvInputEnablePartitionVtl, partition_id) == 0);
    assert!(offset_of!(HvInputEnablePartitionVtl, target_vtl) == 8);
    assert!(offset_of!(HvInputEnablePartitionVtl, flags) == 9);
    assert!(offset_of!(HvInputEnablePartitionVtl, reserved) == 10);

    assert!(size_of::<HvInputModifyVtlProtectionMask>() == 16);
    assert!(offset_of!(HvInputModifyVtlProtectionMask, partition_id) == 0);
    assert!(offset_of!(HvInputModifyVtlProtectionMask, map_flags) == 8);
    assert!(offset_of!(HvInputModifyVtlProtectionMask, target_vtl) == 12);
    assert!(offset_of!(HvInputModifyVtlProtectionMask, reserved) == 13);

    assert!(size_of::<HvInputInstallIntercept>() == 24);
    assert!(offset_of!(HvInputInstallIntercept, partition_id) == 0);
    assert!(offset_of!(HvInputInstallIntercept, access_type) == 8);
    assert!(offset_of!(HvInputInstallIntercept, intercept_type) == 12);
    assert!(offset_of!(HvInputInstallIntercept, intercept_parameter) == 16);
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Vtl, HV_PARTITION_ID_SELF, HV_VP_INDEX_SELF};

    #[test]
    fn get_vp_registers_bytes() {
        let hdr = HvInputGetVpRegisters {
            partition_id: HV_PARTITION_ID_SELF,
            vp_index: HV_VP_INDEX_SELF,
            target_vtl: HvInputVtl::target(Vtl::VTL0),
            reserved: [0; 3],
        };
        assert_eq!(
            hdr.as_bytes(),
            &[
                0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0xFF, 0xFF, 0xFF, 0x10, 0, 0,
                0
            ]
        );
    }

    #[test]
    fn set_vp_registers_element_bytes() {
        let elem = HvRegisterAssoc {
            name: HvRegisterName::GUEST_OS_ID,
            reserved: [0; 3],
            value: 0x8100_0000_0000_0001u64.into(),
        };
        let bytes = elem.as_bytes();
        assert_eq!(&bytes[..4], &[0x02, 0x00, 0x09, 0x00]);
        assert_eq!(&bytes[16..24], &0x8100_0000_0000_0001u64.to_le_bytes());
        assert_eq!(&bytes[24..], &[0; 8]);
    }

    #[test]
    fn install_intercept_bytes() {
        let input = HvInputInstallIntercept {
            partition_id: HV_PARTITION_ID_SELF,
            access_type: HvInterceptAccessMask::new().with_execute(true),
            intercept_type: HvInterceptType::HYPERCALL,
            intercept_parameter: 0,
        };
        let bytes = input.as_bytes();
        assert_eq!(&bytes[8..16], &[4, 0, 0, 0, 8, 0, 0, 0]);
        assert!(HvMapGpaFlags::ALL_ACCESS.kernel_executable());
        assert_eq!(HvMapGpaFlags::new().with_writable(true).into_bits(), 2);
    }
}
