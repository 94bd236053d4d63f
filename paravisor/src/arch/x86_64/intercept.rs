//! x86_64 intercepts: which payload words of the hypercall and memory intercept messages
//! (hvdef's layouts) decoding needs, for `crate::intercept` to copy from the assist page, and
//! where a completed call's result goes in VTL0's registers. Decoding the message is the
//! proxy's (`proxy::decode::decode_x64`).
#![forbid(unsafe_code)]

use super::vtl_switch::Vtl0Registers;
use core::mem::offset_of;
use core::ops::Range;
use hvdef::x86_64::{HvX64HypercallInterceptMessage, HvX64MemoryInterceptMessage};
use hvdef::ControlRegister;

/// This ISA's hypercall intercept message.
pub type HypercallInterceptMessage = HvX64HypercallInterceptMessage;
/// This ISA's memory intercept message (GPA intercept, unmapped GPA).
pub type MemoryInterceptMessage = HvX64MemoryInterceptMessage;

/// The payload words decoding always reads (`0..HYPERCALL_INTERCEPT_HEAD`): the header and
/// RAX..R8.
pub const HYPERCALL_INTERCEPT_HEAD: usize = offset_of!(HypercallInterceptMessage, rsi) / 8;

/// The further payload words decoding reads, given the head's words: XMM0-5 for a fast call on
/// a host with XMM fast input.
#[inline(always)]
pub fn hypercall_intercept_tail(head: &[u64], xmm_fast_input: bool) -> Option<Range<usize>> {
    const RCX: usize = offset_of!(HypercallInterceptMessage, rcx) / 8;
    const XMM: usize = offset_of!(HypercallInterceptMessage, xmm_registers) / 8;
    // XMM0-5 as low and high quadwords: the fast block past RDX and R8.
    const XMM_END: usize = XMM + hvdef::x86_64::FAST_XMM_WORDS - hvdef::x86_64::FAST_GPR_WORDS;
    (xmm_fast_input && hvdef::Control::from_bits(head[RCX]).fast()).then_some(XMM..XMM_END)
}

/// The payload words decoding reads of a memory intercept message (`0..MEMORY_INTERCEPT_HEAD`):
/// the header and the GPA.
pub const MEMORY_INTERCEPT_HEAD: usize = offset_of!(MemoryInterceptMessage, instruction_bytes) / 8;

/// Whether the intercepted access came from VTL0's user mode: CPL > 0.
pub fn intercepted_in_user_mode(msg: &MemoryInterceptMessage) -> bool {
    msg.header.execution_state.cpl() != 0
}

/// Puts a hypercall's result into VTL0's RAX, or, for a call VTL0 re-executes (TIMEOUT), the
/// new control word into RCX.
pub fn complete_intercept(
    regs: &mut Vtl0Registers,
    result: u64,
    control: Option<(ControlRegister, u64)>,
) {
    // A call left for re-execution (TLFS continuation) changes only the control register, as
    // OpenVMM's `hv1_hypercall` retry does; RAX keeps what VTL0 had.
    match control {
        Some((_, control)) => regs.rcx = control,
        None => regs.rax = result,
    }
}

/// VTL0's instruction pointer, advanced past a completed hypercall.
pub const IP_REGISTER: hvdef::HvRegisterName = hvdef::x86_64::reg::RIP;

/// A VP register's TLFS name (this ISA's names first), for log lines.
pub fn register_name(name: hvdef::HvRegisterName) -> Option<&'static str> {
    hvdef::x86_64::reg::name(name).or(name.name())
}
