//! aarch64 intercepts: which payload words of the hypercall and memory intercept messages
//! (hvdef's layouts) decoding needs, for `crate::intercept` to copy from the assist page, and
//! where a completed call's result goes in VTL0's registers. Decoding the message is the
//! proxy's (`proxy::decode::decode_arm64`).
#![forbid(unsafe_code)]

use super::vtl_switch::Vtl0Registers;
use core::mem::offset_of;
use core::ops::Range;
use hvdef::aarch64::{HvArm64HypercallInterceptMessage, HvArm64MemoryInterceptMessage};
use hvdef::{ControlRegister, HvRegisterName};

/// This ISA's hypercall intercept message.
pub type HypercallInterceptMessage = HvArm64HypercallInterceptMessage;
/// This ISA's memory intercept message (GPA intercept, unmapped GPA).
pub type MemoryInterceptMessage = HvArm64MemoryInterceptMessage;

/// The payload words decoding always reads (`0..HYPERCALL_INTERCEPT_HEAD`): the header, the
/// immediate and X0-X3.
pub const HYPERCALL_INTERCEPT_HEAD: usize = offset_of!(HypercallInterceptMessage, x) / 8 + 4;

/// The further payload words decoding reads, given the head's words: X4-X17 for a fast call
/// (the control word is X1 under SMCCC, `hvc #0`, and X0 under `hvc #1`). arm64 has no XMM fast
/// input.
#[inline(always)]
pub fn hypercall_intercept_tail(head: &[u64], _xmm_fast_input: bool) -> Option<Range<usize>> {
    const X: usize = offset_of!(HypercallInterceptMessage, x) / 8;
    const IMMEDIATE: usize = offset_of!(HypercallInterceptMessage, immediate) / 8;
    const END: usize = size_of::<HypercallInterceptMessage>() / 8;
    let smccc = head[IMMEDIATE] as u16 == hvdef::aarch64::HVC_IMM_SMCCC;
    let control = head[X + usize::from(smccc)];
    hvdef::Control::from_bits(control)
        .fast()
        .then_some(HYPERCALL_INTERCEPT_HEAD..END)
}

/// The payload words decoding reads of a memory intercept message (`0..MEMORY_INTERCEPT_HEAD`):
/// the header and the GPA.
pub const MEMORY_INTERCEPT_HEAD: usize = offset_of!(MemoryInterceptMessage, syndrome) / 8;

/// Whether the intercepted access came from VTL0's user mode: `CPSR.M[3:2]` is the exception
/// level the access came from (architectural, unlike the execution state's `cpl`, whose arm64
/// meaning no source defines).
pub fn intercepted_in_user_mode(msg: &MemoryInterceptMessage) -> bool {
    (msg.header.cpsr >> 2) & 3 == 0
}

/// Puts a hypercall's result into VTL0's X registers. SMCCC (`hvc #0`): X0 = result, or on
/// TIMEOUT X0 keeps the function id and X1 gets the new control; `hvc #1`: X0 = result, or the
/// new control on TIMEOUT (it is re-executed).
pub fn complete_intercept(
    regs: &mut Vtl0Registers,
    result: u64,
    control: Option<(ControlRegister, u64)>,
) {
    match control {
        None => regs.x[0] = result,
        Some((ControlRegister::X1, control)) => regs.x[1] = control,
        // RCX is x64's; decode never names it for an arm64 call.
        Some((ControlRegister::X0 | ControlRegister::Rcx, control)) => regs.x[0] = control,
    }
}

/// VTL0's program counter, advanced past a completed hypercall.
pub const IP_REGISTER: HvRegisterName = hvdef::aarch64::reg::XPC;

/// A VP register's TLFS name (this ISA's names first), for log lines.
pub fn register_name(name: HvRegisterName) -> Option<&'static str> {
    hvdef::aarch64::reg::name(name).or(name.name())
}
