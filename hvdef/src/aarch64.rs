//! ARM64-specific definitions: the SMCCC/`hvc` hypercall ABI, ARM64 register names, the initial
//! VP context and the ARM64 hypercall intercept message.

use crate::{HvHypercallInterceptFlags, HvInterceptAccessType, HvRegisterName, SyntheticRegister};
use bitfield_struct::bitfield;
use core::mem::offset_of;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// SMCCC function id of a Hyper-V hypercall via `HVC #0`: fast call bit clear, SMC64, owner 6
/// (vendor hypervisor), function 1. Control in X1, GPAs in X2/X3.
pub const SMCCC_HV_FUNC_ID: u32 = 0x4600_0001;
/// SMCCC "vendor hypervisor call UID" (fast, SMC32, owner 6, function 0xFF01). The TLFS prints
/// `0xC600FF0`; Linux and OpenVMM use this value.
pub const SMCCC_VENDOR_HYP_UID: u32 = 0x8600_FF01;
/// X0..X3 returned by `SMCCC_VENDOR_HYP_UID` under Hyper-V: GUID
/// 4d32ba58-cd24-4764-8eef-6c7516597024.
pub const HV_VENDOR_HYP_UID: [u32; 4] = [0x4d32_ba58, 0xcd24_4764, 0x8eef_6c75, 0x1659_7024];

/// `hvc` immediates.
pub const HVC_IMM_SMCCC: u16 = 0;
/// The legacy Hyper-V ABI: control in X0, GPAs in X1/X2.
pub const HVC_IMM_HYPERCALL: u16 = 1;
pub const HVC_IMM_VTL_CALL: u16 = 2;
pub const HVC_IMM_VTL_RETURN: u16 = 3;
/// NON-TLFS (OpenVMM): enter a lower VTL's VP.
pub const HVC_IMM_VP_LAUNCH: u16 = 4;

/// Length of `hvc`: how far PC advances when an intercepted hypercall completes.
pub const INSTRUCTION_LEN: u64 = 4;

/// Fast input words under SMCCC (`hvc #0`): X2..X17 (TLFS hypercall-interface.md, ARM64
/// calling conventions).
pub const SMCCC_FAST_WORDS: usize = 16;
/// Fast input words under the legacy `hvc #1` ABI: X1..X17.
pub const HVC1_FAST_WORDS: usize = 17;

impl SyntheticRegister {
    /// The VP register that holds this register on ARM64; `None` for the x64-only hypercall page.
    pub const fn vp_register(self) -> Option<HvRegisterName> {
        Some(match self {
            Self::GuestOsId => HvRegisterName::GUEST_OS_ID,
            Self::Hypercall => return None,
            Self::VpIndex => HvRegisterName::VP_INDEX,
            Self::VpRuntime => HvRegisterName::VP_RUNTIME,
            Self::TimeRefCount => HvRegisterName::TIME_REF_COUNT,
            Self::ReferenceTsc => HvRegisterName::REFERENCE_TSC,
            Self::VpAssistPage => HvRegisterName::VP_ASSIST_PAGE,
            Self::Scontrol => HvRegisterName::SCONTROL,
            Self::Sversion => HvRegisterName::SVERSION,
            Self::Siefp => HvRegisterName::SIEFP,
            Self::Simp => HvRegisterName::SIMP,
            Self::Eom => HvRegisterName::EOM,
            Self::Sint(n) => return HvRegisterName::sint(n),
        })
    }
}

/// ARM64 VP register names (`HvArm64Register*`), as [`HvRegisterName`] values.
pub mod reg {
    use crate::HvRegisterName;

    named_consts!(HvRegisterName {
        X0 = 0x0002_0000,
        X1 = 0x0002_0001,
        X2 = 0x0002_0002,
        X3 = 0x0002_0003,
        X4 = 0x0002_0004,
        X5 = 0x0002_0005,
        X6 = 0x0002_0006,
        X7 = 0x0002_0007,
        X8 = 0x0002_0008,
        X9 = 0x0002_0009,
        X10 = 0x0002_000A,
        X11 = 0x0002_000B,
        X12 = 0x0002_000C,
        X13 = 0x0002_000D,
        X14 = 0x0002_000E,
        X15 = 0x0002_000F,
        X16 = 0x0002_0010,
        X17 = 0x0002_0011,
        X18 = 0x0002_0012,
        X19 = 0x0002_0013,
        X20 = 0x0002_0014,
        X21 = 0x0002_0015,
        X22 = 0x0002_0016,
        X23 = 0x0002_0017,
        X24 = 0x0002_0018,
        X25 = 0x0002_0019,
        X26 = 0x0002_001A,
        X27 = 0x0002_001B,
        X28 = 0x0002_001C,
        /// X29.
        XFP = 0x0002_001D,
        /// X30.
        XLR = 0x0002_001E,
        /// SP_EL0 or SP_ELx, depending on CPSR.SPSel.
        XSP = 0x0002_001F,
        XSP_EL0 = 0x0002_0020,
        XSP_ELX = 0x0002_0021,
        XPC = 0x0002_0022,
        CPSR = 0x0002_0023,
        SPSR_EL2 = 0x0002_1002,
        SCTLR_EL1 = 0x0004_0002,
        TTBR0_EL1 = 0x0004_0005,
        TTBR1_EL1 = 0x0004_0006,
        TCR_EL1 = 0x0004_0007,
        ESR_EL1 = 0x0004_0008,
        FAR_EL1 = 0x0004_0009,
        MAIR_EL1 = 0x0004_000B,
        VBAR_EL1 = 0x0004_000C,
        ELR_EL1 = 0x0004_0015,
    });

    pub const X29: HvRegisterName = XFP;
    pub const X30: HvRegisterName = XLR;
    pub const PC: HvRegisterName = XPC;
}

open_enum! {
    /// The kind of event in an ARM64 pending event register (NON-TLFS, OpenVMM
    /// `HvAarch64PendingEventType`): bits 3:1 of `HvRegisterPendingEvent0`.
    pub struct HvArm64PendingEventType(u8) {
        EXCEPTION = 0,
        SYNTHETIC_EXCEPTION = 1,
        HYPERCALL_OUTPUT = 2,
    }
}

/// `HvRegisterPendingEvent0` holding an exception (NON-TLFS layout, OpenVMM
/// `HvAarch64PendingExceptionEvent`: a header byte, 7 bytes of padding, the syndrome at byte 8,
/// the fault address at byte 16). The VP takes it when it next runs in that VTL, from the PC the
/// VTL has then. The fault address is the low quadword of `HvRegisterPendingEvent1`; an exception
/// without one (an undefined instruction) needs only this register.
#[bitfield(u128)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvArm64PendingExceptionEvent {
    pub event_pending: bool,
    /// [`HvArm64PendingEventType::EXCEPTION`] for this layout.
    #[bits(3)]
    pub event_type: HvArm64PendingEventType,
    #[bits(60)]
    __: u64,
    /// The ESR_ELx value the exception is taken with (EC bits 31:26, IL bit 25, ISS 24:0).
    pub syndrome: u64,
}

/// `HvRegisterFeaturesInfo` (0x00000201) on ARM64: the implementation recommendations, "equivalent
/// to x64 CPUID leaf 0x40000004" but with its own bit layout (TLFS feature-discovery.md,
/// "Implementation Recommendations - HvRegisterFeaturesInfo"). The x64 register form packs the
/// CPUID words instead, with the nested indicator at bit 12 (`cpuid::HV_ENLIGHTENMENT_EAX_NESTED`).
#[bitfield(u128)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvArm64RegisterFeaturesInfo {
    /// Always false on ARM64 (partitions use PSCI SYSTEM_RESET).
    pub use_hv_register_for_reset: bool,
    pub use_relaxed_timing: bool,
    pub use_synthetic_cluster_ipi: bool,
    pub use_ex_processor_masks: bool,
    /// Bit 4: "the hypervisor is nested within a Hyper-V partition", so the calls the L0
    /// hypervisor owns need the control word's nested bit.
    pub nested: bool,
    /// Consume the QueryPerformanceCounter bias the root partition provides.
    pub use_synced_timeline: bool,
    #[bits(15)]
    __: u16,
    pub use_hypercall_for_mmio_access: bool,
    pub use_gpa_pinning_hypercall: bool,
    pub wake_vps: bool,
    #[bits(2)]
    __: u8,
    pub map_partition_event_log_buffer: bool,
    #[bits(5)]
    __: u8,
    /// Spinlock failures to retry before notifying the hypervisor; `u32::MAX` never notifies.
    pub spinlock_retries: u32,
    __: u64,
}

/// `HV_INITIAL_VP_CONTEXT` for ARM64 (HvCallEnableVpVtl, HvCallStartVirtualProcessor).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HvArm64InitialVpContext {
    pub pc: u64,
    pub sp_elh: u64,
    pub sctlr_el1: u64,
    pub mair_el1: u64,
    pub tcr_el1: u64,
    pub vbar_el1: u64,
    pub ttbr0_el1: u64,
    pub ttbr1_el1: u64,
    pub x18: u64,
}

vp_context_input!(
    HvArm64InputEnableVpVtl,
    HvArm64InputStartVirtualProcessor,
    HvArm64InitialVpContext
);

/// `HV_ARM64_VP_EXECUTION_STATE` of an intercept message (NON-TLFS, OpenVMM).
#[bitfield(u16)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvArm64VpExecutionState {
    /// The exception level.
    #[bits(2)]
    pub cpl: u8,
    pub debug_active: bool,
    pub interruption_pending: bool,
    /// The VTL that was intercepted.
    #[bits(4)]
    pub vtl: u8,
    pub virtualization_fault_active: bool,
    #[bits(7)]
    __: u8,
}

/// The start of every ARM64 intercept payload (NON-TLFS, OpenVMM).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvArm64InterceptMessageHeader {
    pub vp_index: u32,
    pub instruction_length: u8,
    pub intercept_access_type: HvInterceptAccessType,
    pub execution_state: HvArm64VpExecutionState,
    pub pc: u64,
    pub cpsr: u64,
}

/// Payload of an ARM64 `HYPERCALL_INTERCEPT` message (NON-TLFS layout, from OpenVMM).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvArm64HypercallInterceptMessage {
    pub header: HvArm64InterceptMessageHeader,
    /// The `hvc` immediate: `HVC_IMM_SMCCC` (control in X1) or `HVC_IMM_HYPERCALL` (control in X0).
    pub immediate: u16,
    pub reserved: u16,
    pub flags: HvHypercallInterceptFlags,
    pub x: [u64; 18],
}

/// Payload of an ARM64 memory intercept message (`GPA_INTERCEPT`, `UNMAPPED_GPA`; OpenVMM hvdef
/// `HvArm64MemoryInterceptMessage`, 0x40 bytes). `syndrome` is the abort's ESR.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvArm64MemoryInterceptMessage {
    pub header: HvArm64InterceptMessageHeader,
    pub cache_type: u32,
    pub instruction_byte_count: u8,
    pub memory_access_info: crate::HvMemoryAccessInfo,
    pub reserved1: u16,
    pub instruction_bytes: [u8; 4],
    pub reserved2: u32,
    pub guest_virtual_address: u64,
    pub guest_physical_address: u64,
    pub syndrome: u64,
}

const _: () = {
    assert!(size_of::<HvArm64InitialVpContext>() == 72);
    assert!(offset_of!(HvArm64InitialVpContext, pc) == 0);
    assert!(offset_of!(HvArm64InitialVpContext, sp_elh) == 8);
    assert!(offset_of!(HvArm64InitialVpContext, sctlr_el1) == 16);
    assert!(offset_of!(HvArm64InitialVpContext, mair_el1) == 24);
    assert!(offset_of!(HvArm64InitialVpContext, tcr_el1) == 32);
    assert!(offset_of!(HvArm64InitialVpContext, vbar_el1) == 40);
    assert!(offset_of!(HvArm64InitialVpContext, ttbr0_el1) == 48);
    assert!(offset_of!(HvArm64InitialVpContext, ttbr1_el1) == 56);
    assert!(offset_of!(HvArm64InitialVpContext, x18) == 64);

    assert!(size_of::<HvArm64InterceptMessageHeader>() == 0x18);
    assert!(offset_of!(HvArm64InterceptMessageHeader, vp_index) == 0);
    assert!(offset_of!(HvArm64InterceptMessageHeader, instruction_length) == 4);
    assert!(offset_of!(HvArm64InterceptMessageHeader, intercept_access_type) == 5);
    assert!(offset_of!(HvArm64InterceptMessageHeader, execution_state) == 6);
    assert!(offset_of!(HvArm64InterceptMessageHeader, pc) == 8);
    assert!(offset_of!(HvArm64InterceptMessageHeader, cpsr) == 0x10);

    assert!(size_of::<HvArm64MemoryInterceptMessage>() == 0x40);
    assert!(offset_of!(HvArm64MemoryInterceptMessage, cache_type) == 0x18);
    assert!(offset_of!(HvArm64MemoryInterceptMessage, memory_access_info) == 0x1D);
    assert!(offset_of!(HvArm64MemoryInterceptMessage, instruction_bytes) == 0x20);
    assert!(offset_of!(HvArm64MemoryInterceptMessage, guest_virtual_address) == 0x28);
    assert!(offset_of!(HvArm64MemoryInterceptMessage, guest_physical_address) == 0x30);
    assert!(offset_of!(HvArm64MemoryInterceptMessage, syndrome) == 0x38);

    assert!(size_of::<HvArm64HypercallInterceptMessage>() == 0xB0);
    assert!(offset_of!(HvArm64HypercallInterceptMessage, immediate) == 0x18);
    assert!(offset_of!(HvArm64HypercallInterceptMessage, reserved) == 0x1A);
    assert!(offset_of!(HvArm64HypercallInterceptMessage, flags) == 0x1C);
    assert!(offset_of!(HvArm64HypercallInterceptMessage, x) == 0x20);
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HvMessage, HvMessageType};

    #[test]
    fn features_info_bits() {
        let f = HvArm64RegisterFeaturesInfo::new;
        assert_eq!(f().with_use_hv_register_for_reset(true).into_bits(), 1);
        assert_eq!(f().with_use_synthetic_cluster_ipi(true).into_bits(), 1 << 2);
        assert_eq!(f().with_use_ex_processor_masks(true).into_bits(), 1 << 3);
        assert_eq!(f().with_nested(true).into_bits(), 1 << 4);
        assert_eq!(f().with_use_synced_timeline(true).into_bits(), 1 << 5);
        assert_eq!(
            f().with_use_hypercall_for_mmio_access(true).into_bits(),
            1 << 21
        );
        assert_eq!(f().with_wake_vps(true).into_bits(), 1 << 23);
        assert_eq!(
            f().with_map_partition_event_log_buffer(true).into_bits(),
            1 << 26
        );
        // A nested host that never wants spinlock notifications.
        let nested = f().with_nested(true).with_spinlock_retries(u32::MAX);
        assert_eq!(nested.into_bits(), 0xFFFF_FFFF_0000_0010);
        assert!(HvArm64RegisterFeaturesInfo::from_bits(0xFFFF_FFFF_0000_0010).nested());
        // x64's nested position (CPUID 0x40000004 EAX bit 12) is reserved here.
        assert!(!HvArm64RegisterFeaturesInfo::from_bits(1 << 12).nested());
    }

    #[test]
    fn synthetic_register_vp_registers() {
        use SyntheticRegister as S;
        let expect = [
            (S::GuestOsId, 0x0009_0002),
            (S::VpIndex, 0x0009_0003),
            (S::VpRuntime, 0x0009_0000),
            (S::TimeRefCount, 0x0009_0004),
            (S::ReferenceTsc, 0x0009_0017),
            (S::VpAssistPage, 0x0009_0013),
            (S::Scontrol, 0x000A_0010),
            (S::Sversion, 0x000A_0011),
            (S::Siefp, 0x000A_0012),
            (S::Simp, 0x000A_0013),
            (S::Eom, 0x000A_0014),
        ];
        for (reg, name) in expect {
            assert_eq!(reg.vp_register(), Some(HvRegisterName(name)), "{reg:?}");
        }
        for n in 0..16u8 {
            assert_eq!(
                S::Sint(n).vp_register(),
                Some(HvRegisterName(0x000A_0000 + u32::from(n)))
            );
        }
        assert_eq!(S::Sint(16).vp_register(), None);
        assert_eq!(S::Hypercall.vp_register(), None);
    }

    #[test]
    fn abi_constants() {
        // bit 30 = SMC64, bits 29:24 = owner 6, bits 15:0 = function 1.
        assert_eq!(SMCCC_HV_FUNC_ID, (1 << 30) | (6 << 24) | 1);
        assert_eq!(SMCCC_VENDOR_HYP_UID, (1 << 31) | (6 << 24) | 0xFF01);
        assert_eq!(reg::X28.0, 0x0002_001C);
        assert_eq!(reg::X30, reg::XLR);
        assert_eq!(reg::name(reg::PC), Some("XPC"));
        assert_eq!(reg::CPSR.0, 0x0002_0023);
    }

    #[test]
    fn pending_exception_event() {
        assert_eq!(HvRegisterName::PENDING_EVENT0.0, 0x0001_0004);
        // An undefined instruction: pending, type exception (0), ESR with EC 0 and IL (bit 25).
        let undef = HvArm64PendingExceptionEvent::new()
            .with_event_pending(true)
            .with_event_type(HvArm64PendingEventType::EXCEPTION)
            .with_syndrome(1 << 25);
        assert_eq!(undef.into_bits(), 0x0200_0000 << 64 | 1);
        // OpenVMM's byte layout: the header byte at 0, the syndrome at byte 8.
        let mut bytes = [0u8; 16];
        bytes[0] = 1 | 2 << 1; // pending, HYPERCALL_OUTPUT
        bytes[8..].copy_from_slice(&0x9200_0046u64.to_le_bytes());
        let event = HvArm64PendingExceptionEvent::read_from_bytes(&bytes).unwrap();
        assert!(event.event_pending());
        assert_eq!(
            event.event_type(),
            HvArm64PendingEventType::HYPERCALL_OUTPUT
        );
        assert_eq!(event.syndrome(), 0x9200_0046);
        assert_eq!(zerocopy::IntoBytes::as_bytes(&event), bytes);
    }

    #[test]
    fn intercept_message_from_bytes() {
        let mut raw = [0u8; 256];
        raw[..4].copy_from_slice(&0x8000_0050u32.to_le_bytes());
        let p = 16;
        raw[p..p + 4].copy_from_slice(&3u32.to_le_bytes());
        raw[p + 4] = 4;
        raw[p + 6..p + 8].copy_from_slice(&0x0011u16.to_le_bytes()); // EL1, vtl 1
        raw[p + 8..p + 16].copy_from_slice(&0x4000_1000u64.to_le_bytes());
        raw[p + 0x18] = 1; // hvc #1
        raw[p + 0x20..p + 0x28].copy_from_slice(&0x1_0001_0051u64.to_le_bytes());
        raw[p + 0x28..p + 0x30].copy_from_slice(&0xAAu64.to_le_bytes());
        raw[p + 0xA8..p + 0xB0].copy_from_slice(&0x17u64.to_le_bytes());

        let msg = HvMessage::read_from_bytes(&raw).unwrap();
        assert_eq!(msg.header.message_type, HvMessageType::HYPERCALL_INTERCEPT);
        let (hc, _) =
            HvArm64HypercallInterceptMessage::read_from_prefix(msg.payload_bytes()).unwrap();
        assert_eq!(hc.header.vp_index, 3);
        assert_eq!(u64::from(hc.header.instruction_length), INSTRUCTION_LEN);
        assert_eq!(hc.header.execution_state.cpl(), 1);
        assert_eq!(hc.header.execution_state.vtl(), 1);
        assert_eq!(hc.header.pc, 0x4000_1000);
        assert_eq!(hc.immediate, HVC_IMM_HYPERCALL);
        assert_eq!(hc.x[0], 0x1_0001_0051);
        assert_eq!(hc.x[1], 0xAA);
        assert_eq!(hc.x[17], 0x17);
        assert!(!hc.flags.is_isolated());
    }
}
