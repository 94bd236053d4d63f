//! aarch64 exceptions the paravisor makes VTL0 take, as `HvRegisterPendingEvent0` values
//! (ESR_EL1 syndromes).
#![forbid(unsafe_code)]

/// The event that makes VTL0 take an undefined-instruction exception: an exception event whose
/// syndrome (ESR_EL1) has EC 0, "unknown reason", the class the Arm ARM reports undefined
/// instructions with, and IL (bit 25) set, which the Arm ARM requires for that class. No fault
/// address, so PendingEvent1 is not needed.
pub fn undefined_instruction_event() -> hvdef::HvRegisterValue {
    const ESR_EC_UNKNOWN: u64 = 0;
    const ESR_EC_SHIFT: u32 = 26;
    const ESR_IL: u64 = 1 << 25;
    let event = hvdef::aarch64::HvArm64PendingExceptionEvent::new()
        .with_event_pending(true)
        .with_event_type(hvdef::aarch64::HvArm64PendingEventType::EXCEPTION)
        .with_syndrome(ESR_EC_UNKNOWN << ESR_EC_SHIFT | ESR_IL);
    hvdef::HvRegisterValue::from(event.into_bits())
}

/// What VTL0 takes for an access the hypervisor stopped at a page VTL2 keeps (a GPA intercept):
/// a synchronous external abort, what the Arm ARM reports for an access the memory system
/// refuses.
pub const MEMORY_FAULT_NAME: &str = "a synchronous external abort";

/// The abort's `HvRegisterPendingEvent0` for an `access` from VTL0's kernel or (`user`) EL0:
/// ESR_EL1 with EC 0x25 data abort / 0x21 instruction abort taken without a change in exception
/// level (VTL0's kernel), 0x24 / 0x20 from EL0; IL; FnV (no fault address, so PendingEvent1 is
/// not needed); WnR for a store; fault status 0x10, synchronous external abort not on a table
/// walk.
pub fn memory_fault_event(
    access: hvdef::HvInterceptAccessType,
    user: bool,
) -> hvdef::HvRegisterValue {
    const ESR_EC_SHIFT: u32 = 26;
    const ESR_IL: u64 = 1 << 25;
    const ESR_FNV: u64 = 1 << 10;
    const ESR_WNR: u64 = 1 << 6;
    const FSC_SYNC_EXTERNAL: u64 = 0x10;
    let execute = access == hvdef::HvInterceptAccessType::EXECUTE;
    let class: u64 = match (execute, user) {
        (true, false) => 0x21,
        (true, true) => 0x20,
        (false, false) => 0x25,
        (false, true) => 0x24,
    };
    let wnr = if access == hvdef::HvInterceptAccessType::WRITE {
        ESR_WNR
    } else {
        0
    };
    let event = hvdef::aarch64::HvArm64PendingExceptionEvent::new()
        .with_event_pending(true)
        .with_event_type(hvdef::aarch64::HvArm64PendingEventType::EXCEPTION)
        .with_syndrome(class << ESR_EC_SHIFT | ESR_IL | ESR_FNV | wnr | FSC_SYNC_EXTERNAL);
    hvdef::HvRegisterValue::from(event.into_bits())
}
