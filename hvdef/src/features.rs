//! Partition privileges (`HV_PARTITION_PRIVILEGE_MASK`) and extended-hypercall capabilities.

use crate::HypercallCode;
use bitfield_struct::bitfield;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `HV_PARTITION_PRIVILEGE_MASK`: CPUID 0x40000003 EAX (low half) and EBX (high half) on x64,
/// `HvRegisterPrivilegesAndFeaturesInfo` on ARM64. Bits the TLFS leaves reserved but Linux or
/// OpenVMM name are marked NON-TLFS.
#[bitfield(u64)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvPartitionPrivilegeMask {
    pub access_vp_runtime_reg: bool,
    pub access_partition_reference_counter: bool,
    pub access_synic_regs: bool,
    pub access_synthetic_timer_regs: bool,
    pub access_intr_ctrl_regs: bool,
    pub access_hypercall_msrs: bool,
    pub access_vp_index: bool,
    pub access_reset_reg: bool,
    pub access_stats_reg: bool,
    pub access_partition_reference_tsc: bool,
    pub access_guest_idle_reg: bool,
    pub access_frequency_regs: bool,
    /// Reserved in the markdown, AccessDebugRegs in the v6.0b PDF.
    pub access_debug_regs: bool,
    pub access_reenlightenment_controls: bool,
    /// NON-TLFS (OpenVMM).
    pub access_root_scheduler_msr: bool,
    /// NON-TLFS (OpenVMM, Linux).
    pub access_tsc_invariant_controls: bool,
    #[bits(16)]
    __: u16,

    pub create_partitions: bool,
    pub access_partition_id: bool,
    pub access_memory_pool: bool,
    /// NON-TLFS (OpenVMM, Linux).
    pub adjust_message_buffers: bool,
    pub post_messages: bool,
    pub signal_events: bool,
    pub create_port: bool,
    pub connect_port: bool,
    pub access_stats: bool,
    #[bits(2)]
    __: u8,
    pub debugging: bool,
    pub cpu_management: bool,
    /// NON-TLFS (OpenVMM).
    pub configure_profiler: bool,
    /// NON-TLFS (OpenVMM).
    pub access_vp_exit_tracing: bool,
    /// NON-TLFS (OpenVMM).
    pub enable_extended_gva_ranges_flush_va_list: bool,
    pub access_vsm: bool,
    pub access_vp_registers: bool,
    __: bool,
    /// NON-TLFS (OpenVMM).
    pub fast_hypercall_output: bool,
    pub enable_extended_hypercalls: bool,
    pub start_virtual_processor: bool,
    /// NON-TLFS (OpenVMM; Linux `HV_ISOLATION`, CPUID 0x40000003 EBX bit 22).
    pub isolation: bool,
    #[bits(9)]
    __: u16,
}

impl HvPartitionPrivilegeMask {
    /// From the two CPUID 0x40000003 words (EAX, EBX).
    pub const fn from_halves(low: u32, high: u32) -> Self {
        Self::from_bits(((high as u64) << 32) | low as u64)
    }

    /// Bits 31:0 (CPUID 0x40000003 EAX).
    pub const fn low(self) -> u32 {
        self.into_bits() as u32
    }

    /// Bits 63:32 (CPUID 0x40000003 EBX).
    pub const fn high(self) -> u32 {
        (self.into_bits() >> 32) as u32
    }
}

/// The capability mask returned by HvExtCallQueryCapabilities (0x8001). Bit n advertises the
/// extended call 0x8002 + n.
#[bitfield(u64)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvExtendedCapabilities {
    pub get_boot_zeroed_memory: bool,
    pub memory_heat_hint: bool,
    pub epf_setup: bool,
    pub scheduler_assist_setup: bool,
    pub memory_heat_hint_async: bool,
    #[bits(59)]
    __: u64,
}

impl HvExtendedCapabilities {
    /// The extended call whose availability capability bit `bit` (0..64) reports.
    pub const fn call_for_bit(bit: u32) -> Option<HypercallCode> {
        if bit < 64 {
            Some(HypercallCode(0x8002 + bit as u16))
        } else {
            None
        }
    }

    /// The capability bit reporting `code`; `None` for QueryCapabilities itself (always present
    /// when extended calls are) and for non-extended codes.
    pub const fn bit_for_call(code: HypercallCode) -> Option<u32> {
        match code.0 {
            0x8002..=0x8041 => Some((code.0 - 0x8002) as u32),
            _ => None,
        }
    }

    /// Whether the mask advertises `code`.
    pub const fn supports(self, code: HypercallCode) -> bool {
        match Self::bit_for_call(code) {
            Some(bit) => self.into_bits() & (1 << bit) != 0,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_bits() {
        let m = HvPartitionPrivilegeMask::new();
        assert_eq!(m.with_access_synic_regs(true).into_bits(), 1 << 2);
        assert_eq!(m.with_access_hypercall_msrs(true).into_bits(), 1 << 5);
        assert_eq!(m.with_access_vp_index(true).into_bits(), 1 << 6);
        assert_eq!(m.with_post_messages(true).into_bits(), 1 << 36);
        assert_eq!(m.with_signal_events(true).into_bits(), 1 << 37);
        assert_eq!(m.with_access_vsm(true).into_bits(), 1 << 48);
        assert_eq!(m.with_access_vp_registers(true).into_bits(), 1 << 49);
        assert_eq!(m.with_enable_extended_hypercalls(true).into_bits(), 1 << 52);
        assert_eq!(m.with_start_virtual_processor(true).into_bits(), 1 << 53);
        assert_eq!(m.with_isolation(true).into_bits(), 1 << 54);
        let m = HvPartitionPrivilegeMask::from_halves(0x2E7F, 0x0031_1000);
        assert!(m.access_vsm() && m.enable_extended_hypercalls() && m.access_synic_regs());
        assert_eq!((m.low(), m.high()), (0x2E7F, 0x0031_1000));
    }

    #[test]
    fn extended_capability_mapping() {
        assert_eq!(
            HvExtendedCapabilities::call_for_bit(0),
            Some(HypercallCode::EXT_GET_BOOT_ZEROED_MEMORY)
        );
        assert_eq!(
            HvExtendedCapabilities::call_for_bit(4),
            Some(HypercallCode::EXT_MEMORY_HEAT_HINT_ASYNC)
        );
        assert_eq!(HvExtendedCapabilities::call_for_bit(64), None);
        assert_eq!(
            HvExtendedCapabilities::bit_for_call(HypercallCode::EXT_SCHEDULER_ASSIST_SETUP),
            Some(3)
        );
        assert_eq!(
            HvExtendedCapabilities::bit_for_call(HypercallCode::EXT_QUERY_CAPABILITIES),
            None
        );
        assert_eq!(
            HvExtendedCapabilities::bit_for_call(HypercallCode(0x8042)),
            None
        );
        let caps = HvExtendedCapabilities::new().with_epf_setup(true);
        assert_eq!(caps.into_bits(), 1 << 2);
        assert!(caps.supports(HypercallCode::EXT_EPF_SETUP));
        assert!(!caps.supports(HypercallCode::EXT_MEMORY_HEAT_HINT));
    }
}
