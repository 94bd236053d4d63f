//! x86_64 exceptions the paravisor makes VTL0 take, as `HvRegisterPendingEvent0` values.
#![forbid(unsafe_code)]

/// The event that makes VTL0 take #UD: an exception event with vector 6 (#UD, an x86
/// architectural number) and no error code, as #UD pushes none.
pub fn undefined_instruction_event() -> hvdef::HvRegisterValue {
    const UD_VECTOR: u16 = 6;
    let event = hvdef::x86_64::HvX64PendingExceptionEvent::new()
        .with_event_pending(true)
        .with_event_type(hvdef::x86_64::HvX64PendingEventType::EXCEPTION)
        .with_vector(UD_VECTOR);
    hvdef::HvRegisterValue::from(event.into_bits())
}

/// What VTL0 takes for an access the hypervisor stopped at a page VTL2 keeps (a GPA intercept):
/// #GP with error code 0, the fault x86 raises for an access the platform refuses without a
/// page-table cause (vector 13, error code pushed).
pub const MEMORY_FAULT_NAME: &str = "#GP(0)";

/// [`MEMORY_FAULT_NAME`]'s event, whatever the access and mode.
pub fn memory_fault_event(
    _access: hvdef::HvInterceptAccessType,
    _user: bool,
) -> hvdef::HvRegisterValue {
    const GP_VECTOR: u16 = 13;
    let event = hvdef::x86_64::HvX64PendingExceptionEvent::new()
        .with_event_pending(true)
        .with_event_type(hvdef::x86_64::HvX64PendingEventType::EXCEPTION)
        .with_deliver_error_code(true)
        .with_vector(GP_VECTOR)
        .with_error_code(0);
    hvdef::HvRegisterValue::from(event.into_bits())
}
