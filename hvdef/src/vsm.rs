//! Virtual Secure Mode: the VP assist page, through which the hypervisor tells a higher VTL why it
//! was entered and hands it intercept messages.

use crate::HvMessage;
use bitfield_struct::bitfield;
use core::mem::offset_of;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

open_enum! {
    /// `HV_VTL_ENTRY_REASON`: why the hypervisor switched to this VTL.
    pub struct HvVtlEntryReason(u32) {
        RESERVED = 0,
        /// A lower VTL issued HvCallVtlCall.
        VTL_CALL = 1,
        /// An interrupt targeted this VTL.
        INTERRUPT = 2,
        /// An intercept was delivered through the assist page's `intercept_message`.
        INTERCEPT = 3,
    }
}

/// `HV_VP_VTL_CONTROL`: the per-VTL part of the VP assist page (VTL > 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvVpVtlControl {
    pub entry_reason: HvVtlEntryReason,
    /// Bit 0: VINA asserted.
    pub vina_status: u8,
    pub reserved0: u8,
    pub reserved1: u16,
    /// Restored into the lower VTL's RAX on a non-fast VtlReturn (x86: EAX and ECX); reserved on
    /// ARM64.
    pub return_rax: u64,
    /// Restored into the lower VTL's RCX on a non-fast VtlReturn (x86: EDX); reserved on ARM64.
    pub return_rcx: u64,
}

/// `HV_NESTED_ENLIGHTENMENTS_CONTROL`.
#[bitfield(u64)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvNestedEnlightenmentsControl {
    pub direct_hypercall: bool,
    pub virtualization_exception: bool,
    #[bits(30)]
    __: u32,
    pub inter_partition_communication: bool,
    #[bits(31)]
    __: u32,
}

/// `HV_VP_ASSIST_PAGE`, placed by `HV_X64_MSR_VP_ASSIST_PAGE` / `HvRegisterVpAssistPage`.
///
/// The TLFS struct ends at `virtualization_fault_information`; the rest (40-byte fault
/// information, intercept message at 0x70, return actions at 0x170) is NON-TLFS, from Linux and
/// OpenVMM, which agree.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvVpAssistPage {
    pub apic_assist: u32,
    pub reserved0: u32,
    pub vtl_control: HvVpVtlControl,
    pub nested_control: HvNestedEnlightenmentsControl,
    pub enlighten_vm_entry: u8,
    pub reserved1: [u8; 7],
    pub current_nested_vmcs: u64,
    pub synthetic_time_unhalted_timer_expired: u8,
    pub reserved2: [u8; 7],
    pub virtualization_fault_information: [u8; 40],
    pub reserved3: u64,
    pub intercept_message: HvMessage,
    pub vtl_return_actions: [u8; 256],
}

const _: () = {
    assert!(size_of::<HvVpVtlControl>() == 24);
    assert!(offset_of!(HvVpVtlControl, entry_reason) == 0);
    assert!(offset_of!(HvVpVtlControl, vina_status) == 4);
    assert!(offset_of!(HvVpVtlControl, reserved0) == 5);
    assert!(offset_of!(HvVpVtlControl, reserved1) == 6);
    assert!(offset_of!(HvVpVtlControl, return_rax) == 8);
    assert!(offset_of!(HvVpVtlControl, return_rcx) == 16);

    assert!(size_of::<HvVpAssistPage>() == 0x270);
    assert!(offset_of!(HvVpAssistPage, apic_assist) == 0);
    assert!(offset_of!(HvVpAssistPage, reserved0) == 4);
    assert!(offset_of!(HvVpAssistPage, vtl_control) == 8);
    assert!(offset_of!(HvVpAssistPage, nested_control) == 0x20);
    assert!(offset_of!(HvVpAssistPage, enlighten_vm_entry) == 0x28);
    assert!(offset_of!(HvVpAssistPage, reserved1) == 0x29);
    assert!(offset_of!(HvVpAssistPage, current_nested_vmcs) == 0x30);
    assert!(offset_of!(HvVpAssistPage, synthetic_time_unhalted_timer_expired) == 0x38);
    assert!(offset_of!(HvVpAssistPage, reserved2) == 0x39);
    assert!(offset_of!(HvVpAssistPage, virtualization_fault_information) == 0x40);
    assert!(offset_of!(HvVpAssistPage, reserved3) == 0x68);
    assert!(offset_of!(HvVpAssistPage, intercept_message) == 0x70);
    assert!(offset_of!(HvVpAssistPage, vtl_return_actions) == 0x170);
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HvMessageType;

    #[test]
    fn assist_page_from_bytes() {
        let mut raw = [0u8; 0x270];
        raw[8] = 3;
        raw[0x10..0x18].copy_from_slice(&0x1234u64.to_le_bytes());
        raw[0x70..0x74].copy_from_slice(&0x8000_0050u32.to_le_bytes());
        let page = HvVpAssistPage::read_from_bytes(&raw).unwrap();
        assert_eq!(page.vtl_control.entry_reason, HvVtlEntryReason::INTERCEPT);
        assert_eq!(page.vtl_control.return_rax, 0x1234);
        assert_eq!(
            page.intercept_message.header.message_type,
            HvMessageType::HYPERCALL_INTERCEPT
        );
        assert_eq!(
            HvNestedEnlightenmentsControl::new()
                .with_inter_partition_communication(true)
                .into_bits(),
            1 << 32
        );
    }
}
