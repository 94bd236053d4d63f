//! VP register names and values read and written with HvCallGet/SetVpRegisters, and the bit
//! layouts of the ISA-independent registers (VSM, VP assist page, guest OS id).
//!
//! Arch register names (RAX, X0, ...) share number ranges across ISAs and live in
//! `x86_64::reg` and `aarch64::reg`.

use bitfield_struct::bitfield;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

open_enum! {
    /// `HV_REGISTER_NAME`: a VP register, as named in the TLFS (`HvRegisterVsmVpStatus` ->
    /// `VSM_VP_STATUS`).
    pub struct HvRegisterName(u32) {
        // Feature-information registers, the ARM64 replacement for the Hyper-V CPUID leaves.
        HYPERVISOR_VERSION = 0x0000_0100,
        PRIVILEGES_AND_FEATURES_INFO = 0x0000_0200,
        /// `HvRegisterFeaturesInfo`, the implementation recommendations (CPUID 0x40000004); on
        /// ARM64 laid out as [`crate::aarch64::HvArm64RegisterFeaturesInfo`] (nested = bit 4).
        FEATURES_INFO = 0x0000_0201,
        IMPLEMENTATION_LIMITS_INFO = 0x0000_0202,
        HARDWARE_FEATURES_INFO = 0x0000_0203,
        CPU_MANAGEMENT_FEATURES_INFO = 0x0000_0204,
        PASID_FEATURES_INFO = 0x0000_0205,
        SKIP_LEVEL_FEATURES_INFO = 0x0000_0206,
        NESTED_VIRT_FEATURES_INFO = 0x0000_0207,
        IPT_FEATURES_INFO = 0x0000_0208,
        ISOLATION_CONFIGURATION = 0x0000_0209,
        // Guest crash reporting; writable on ARM64 before the guest OS id is set.
        GUEST_CRASH_P0 = 0x0000_0210,
        GUEST_CRASH_P1 = 0x0000_0211,
        GUEST_CRASH_P2 = 0x0000_0212,
        GUEST_CRASH_P3 = 0x0000_0213,
        GUEST_CRASH_P4 = 0x0000_0214,
        GUEST_CRASH_CTL = 0x0000_0215,

        // NON-TLFS (OpenVMM `HvRegisterName`): an event the hypervisor delivers when the VP
        // next runs in that VTL. A higher VTL writes a lower VTL's to inject an exception; the
        // 32-byte event spans both registers, low half first, in the ISA's layout
        // (`x86_64::HvX64PendingExceptionEvent`, `aarch64::HvArm64PendingExceptionEvent`).
        PENDING_EVENT0 = 0x0001_0004,
        PENDING_EVENT1 = 0x0001_0005,

        VP_RUNTIME = 0x0009_0000,
        GUEST_OS_ID = 0x0009_0002,
        VP_INDEX = 0x0009_0003,
        TIME_REF_COUNT = 0x0009_0004,
        VP_ASSIST_PAGE = 0x0009_0013,
        REFERENCE_TSC = 0x0009_0017,

        SINT0 = 0x000A_0000,
        SINT1 = 0x000A_0001,
        SINT2 = 0x000A_0002,
        SINT3 = 0x000A_0003,
        SINT4 = 0x000A_0004,
        SINT5 = 0x000A_0005,
        SINT6 = 0x000A_0006,
        SINT7 = 0x000A_0007,
        SINT8 = 0x000A_0008,
        SINT9 = 0x000A_0009,
        SINT10 = 0x000A_000A,
        SINT11 = 0x000A_000B,
        SINT12 = 0x000A_000C,
        SINT13 = 0x000A_000D,
        SINT14 = 0x000A_000E,
        SINT15 = 0x000A_000F,
        SCONTROL = 0x000A_0010,
        SVERSION = 0x000A_0011,
        /// The SynIC event flags page (OpenVMM calls it `Sifp`).
        SIEFP = 0x000A_0012,
        /// The SynIC message page (OpenVMM calls it `Sipp`).
        SIMP = 0x000A_0013,
        EOM = 0x000A_0014,

        /// x64 only.
        VSM_CODE_PAGE_OFFSETS = 0x000D_0002,
        VSM_VP_STATUS = 0x000D_0003,
        VSM_PARTITION_STATUS = 0x000D_0004,
        VSM_VINA = 0x000D_0005,
        VSM_CAPABILITIES = 0x000D_0006,
        VSM_PARTITION_CONFIG = 0x000D_0007,
        /// The VTL's configuration of VTL0; see [`HvRegisterName::vsm_vp_secure_config`].
        VSM_VP_SECURE_CONFIG_VTL0 = 0x000D_0010,
        VSM_VP_SECURE_CONFIG_VTL1 = 0x000D_0011,
        VSM_VP_WAIT_FOR_TLB_LOCK = 0x000D_0020,
        ISOLATION_CAPABILITIES = 0x000D_0100,
    }
}

impl HvRegisterName {
    /// OpenVMM's name for [`Self::SIEFP`].
    pub const SIFP: Self = Self::SIEFP;
    /// OpenVMM's name for [`Self::SIMP`].
    pub const SIPP: Self = Self::SIMP;

    /// `HvRegisterSint<n>`, for n < 16.
    pub const fn sint(n: u8) -> Option<Self> {
        if (n as usize) < crate::HV_SYNIC_SINT_COUNT {
            Some(Self(Self::SINT0.0 + n as u32))
        } else {
            None
        }
    }

    /// `HvRegisterVsmVpSecureConfigVtl<n>`: a higher VTL's configuration of lower VTL `n` (0..=14).
    pub const fn vsm_vp_secure_config(vtl: crate::Vtl) -> Option<Self> {
        if vtl.get() < 15 {
            Some(Self(Self::VSM_VP_SECURE_CONFIG_VTL0.0 + vtl.get() as u32))
        } else {
            None
        }
    }
}

/// A 128-bit register value, low quadword first; narrower registers are zero-extended.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HvRegisterValue {
    pub low: u64,
    pub high: u64,
}

const _: () = assert!(size_of::<HvRegisterValue>() == 16);

impl HvRegisterValue {
    pub const fn as_u64(self) -> u64 {
        self.low
    }

    pub const fn as_u128(self) -> u128 {
        ((self.high as u128) << 64) | self.low as u128
    }
}

impl From<u64> for HvRegisterValue {
    fn from(low: u64) -> Self {
        Self { low, high: 0 }
    }
}

impl From<u128> for HvRegisterValue {
    fn from(value: u128) -> Self {
        Self {
            low: value as u64,
            high: (value >> 64) as u64,
        }
    }
}

impl From<HvRegisterValue> for u128 {
    fn from(value: HvRegisterValue) -> Self {
        value.as_u128()
    }
}

/// `HvRegisterVsmVpStatus` (0x000D0003): per VP, read-only, shared by all VTLs.
#[bitfield(u64)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvRegisterVsmVpStatus {
    #[bits(4)]
    pub active_vtl: u8,
    pub active_mbec_enabled: bool,
    #[bits(11)]
    __: u16,
    /// Bit n set: VTL n is enabled on this VP.
    pub enabled_vtl_set: u16,
    __: u32,
}

/// `HvRegisterVsmCodePageOffsets` (0x000D0002, x64 only): where in the hypercall page to CALL
/// to switch VTLs.
#[bitfield(u64)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvRegisterVsmCodePageOffsets {
    #[bits(12)]
    pub vtl_call_offset: u16,
    #[bits(12)]
    pub vtl_return_offset: u16,
    #[bits(40)]
    __: u64,
}

/// `HvRegisterVsmPartitionStatus` (0x000D0004): per partition, read-only.
#[bitfield(u64)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvRegisterVsmPartitionStatus {
    pub enabled_vtl_set: u16,
    #[bits(4)]
    pub maximum_vtl: u8,
    pub mbec_enabled_vtl_set: u16,
    #[bits(28)]
    __: u32,
}

/// `HvRegisterVsmVina` (0x000D0005): the virtual interrupt notification assist, per VP per VTL.
#[bitfield(u64)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvRegisterVsmVina {
    pub vector: u8,
    pub enabled: bool,
    pub auto_reset: bool,
    pub auto_eoi: bool,
    #[bits(53)]
    __: u64,
}

/// `HvRegisterVsmCapabilities` (0x000D0006), in the layout OpenVMM uses and current hypervisors
/// report. The TLFS markdown draws an older layout (Dr6Shared at bit 63, MbecVtlMask 62:47).
#[bitfield(u64)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvRegisterVsmCapabilities {
    pub dr6_shared: bool,
    pub mbec_vtl_mask: u16,
    pub deny_lower_vtl_startup: bool,
    pub supervisor_shadow_stack: bool,
    pub hardware_hvpt_available: bool,
    pub software_hvpt_available: bool,
    #[bits(6)]
    pub hardware_hvpt_range_bits: u8,
    /// Intercepts can be delivered through the VP assist page (entry reason `INTERCEPT`).
    pub intercept_page_available: bool,
    pub return_action_available: bool,
    pub vtl0_alias_map_available: bool,
    pub intercept_not_present_available: bool,
    pub install_intercept_ex: bool,
    pub intercept_system_reset_available: bool,
    #[bits(31)]
    __: u32,
}

/// `HvRegisterVsmPartitionConfig` (0x000D0007), one instance per VTL > 0, in OpenVMM's layout
/// (the TLFS markdown names only bits 0-6 and 9).
#[bitfield(u64)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvRegisterVsmPartitionConfig {
    /// Write-once.
    pub enable_vtl_protection: bool,
    /// An [`HvMapGpaFlags`](crate::HvMapGpaFlags) nibble: R, W, KX, UX.
    #[bits(4)]
    pub default_vtl_protection_mask: u8,
    pub zero_memory_on_reset: bool,
    pub deny_lower_vtl_startup: bool,
    pub intercept_acceptance: bool,
    pub intercept_enable_vtl_protection: bool,
    pub intercept_vp_startup: bool,
    pub intercept_cpuid_unimplemented: bool,
    pub intercept_unrecoverable_exception: bool,
    pub intercept_page: bool,
    /// x64: RestorePartitionTime is intercepted to this VTL (OpenVMM hvdef; TLFS RsvdZ).
    pub intercept_restore_partition_time: bool,
    /// Unmapped-GPA intercepts go to this VTL, not the host; needs
    /// `VsmCapabilities.intercept_not_present_available` (OpenVMM hvdef; TLFS RsvdZ).
    pub intercept_not_present: bool,
    /// System resets are intercepted; needs `intercept_system_reset_available`.
    pub intercept_system_reset: bool,
    #[bits(48)]
    __: u64,
}

/// `HvRegisterVsmVpSecureConfigVtl<n>` (0x000D0010 + n).
#[bitfield(u64)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvRegisterVsmVpSecureConfig {
    pub mbec_enabled: bool,
    /// Blocks the lower VTL's TLB flushes until the VP returns to it.
    pub tlb_locked: bool,
    #[bits(62)]
    __: u64,
}

/// A register that places an overlay page: the VP assist page (`HV_X64_MSR_VP_ASSIST_PAGE`,
/// `HvRegisterVpAssistPage`), and the SynIC SIMP and SIEFP.
#[bitfield(u64)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvPageRegister {
    pub enable: bool,
    /// RsvdP: preserve on write.
    #[bits(11)]
    pub reserved: u16,
    #[bits(52)]
    pub gpa_page_number: u64,
}

/// The VP assist page register.
pub type HvRegisterVpAssistPage = HvPageRegister;

/// `HV_GUEST_OS_ID` for an open-source OS (bit 63 set).
#[bitfield(u64)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvGuestOsIdOpenSource {
    pub build_number: u16,
    pub version: u32,
    pub os_id: u8,
    /// One of the `OS_TYPE_*` constants.
    #[bits(7)]
    pub os_type: u8,
    pub is_open_source: bool,
}

impl HvGuestOsIdOpenSource {
    pub const OS_TYPE_LINUX: u8 = 1;
    pub const OS_TYPE_FREEBSD: u8 = 2;
    pub const OS_TYPE_XEN: u8 = 3;
    pub const OS_TYPE_ILLUMOS: u8 = 4;
}

/// `HV_GUEST_OS_ID` for a proprietary OS (bit 63 clear).
#[bitfield(u64)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvGuestOsIdProprietary {
    pub build_number: u16,
    pub service_version: u8,
    pub minor_version: u8,
    pub major_version: u8,
    /// 4 = Windows NT.
    pub os_id: u8,
    /// 1 = Microsoft.
    #[bits(15)]
    pub vendor_id: u16,
    pub is_open_source: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Vtl;

    #[test]
    fn vsm_vp_status() {
        // VTL2 active, VTL0 and VTL2 enabled.
        let s = HvRegisterVsmVpStatus::from_bits(0x0005_0002);
        assert_eq!(s.active_vtl(), 2);
        assert!(!s.active_mbec_enabled());
        assert_eq!(s.enabled_vtl_set(), 0b101);
        let s = HvRegisterVsmVpStatus::from_bits(0x0003_0011);
        assert_eq!(s.active_vtl(), 1);
        assert!(s.active_mbec_enabled());
        assert_eq!(s.enabled_vtl_set(), 0b11);
    }

    #[test]
    fn code_page_offsets() {
        // OpenVMM's emulated hypercall page publishes call 0x0f, return 0x26.
        let o = HvRegisterVsmCodePageOffsets::from_bits(0x0002_600F);
        assert_eq!(o.vtl_call_offset(), 0x0F);
        assert_eq!(o.vtl_return_offset(), 0x26);
    }

    #[test]
    fn vsm_bit_positions() {
        let caps = HvRegisterVsmCapabilities::new().with_intercept_page_available(true);
        assert_eq!(caps.into_bits(), 1 << 27);
        let caps = HvRegisterVsmCapabilities::new().with_install_intercept_ex(true);
        assert_eq!(caps.into_bits(), 1 << 31);
        let cfg = HvRegisterVsmPartitionConfig::new()
            .with_default_vtl_protection_mask(0xF)
            .with_intercept_page(true);
        assert_eq!(cfg.into_bits(), 0x1E | 1 << 12);
        let ps = HvRegisterVsmPartitionStatus::from_bits(0x0012_0005);
        assert_eq!(ps.enabled_vtl_set(), 5);
        assert_eq!(ps.maximum_vtl(), 2);
        assert_eq!(ps.mbec_enabled_vtl_set(), 1);
    }

    #[test]
    fn names_and_values() {
        assert_eq!(HvRegisterName::VSM_VP_STATUS.0, 0x000D_0003);
        assert_eq!(HvRegisterName::GUEST_CRASH_P0.0, 0x0000_0210);
        assert_eq!(HvRegisterName::GUEST_CRASH_CTL.0, 0x0000_0215);
        assert_eq!(HvRegisterName::PENDING_EVENT0.0, 0x0001_0004);
        assert_eq!(HvRegisterName::PENDING_EVENT1.0, 0x0001_0005);
        assert_eq!(HvRegisterName::sint(15), Some(HvRegisterName::SINT15));
        assert_eq!(HvRegisterName::sint(16), None);
        assert_eq!(
            HvRegisterName::vsm_vp_secure_config(Vtl::VTL1),
            Some(HvRegisterName::VSM_VP_SECURE_CONFIG_VTL1)
        );
        assert_eq!(HvRegisterName::vsm_vp_secure_config(Vtl::MAX), None);
        let v = HvRegisterValue::from(0x1122_3344_5566_7788_99AA_BBCC_DDEE_FF00u128);
        assert_eq!(v.low, 0x99AA_BBCC_DDEE_FF00);
        assert_eq!(v.high, 0x1122_3344_5566_7788);
        assert_eq!(zerocopy::IntoBytes::as_bytes(&v)[0], 0x00);
        assert_eq!(zerocopy::IntoBytes::as_bytes(&v)[8], 0x88);
    }

    #[test]
    fn page_register_and_guest_os_id() {
        let p = HvPageRegister::new()
            .with_enable(true)
            .with_gpa_page_number(0x12345);
        assert_eq!(p.into_bits(), 0x1234_5001);
        let id = HvGuestOsIdOpenSource::new()
            .with_is_open_source(true)
            .with_os_type(HvGuestOsIdOpenSource::OS_TYPE_LINUX)
            .with_version(0x0006_0900)
            .with_build_number(7);
        assert_eq!(id.into_bits(), 0x8100_0006_0900_0007);
        assert!(!HvGuestOsIdProprietary::from_bits(0x0001_0406_0000_23F0).is_open_source());
        assert_eq!(
            HvGuestOsIdProprietary::from_bits(0x0001_0406_0000_23F0).vendor_id(),
            1
        );
    }
}
