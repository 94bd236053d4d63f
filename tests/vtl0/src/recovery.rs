//! The recovery point every probe sets, one per VP: the exception handlers (arch code) check
//! the running VP's, record the fault there and resume at the probe's recovery label instead
//! of the faulting instruction.
#![expect(
    unsafe_code,
    reason = "the exception handlers find the recovery points by symbol name"
)]

use core::sync::atomic::{AtomicU64, Ordering};
use vtl0::Fault;

/// Written by the probes' assembly and the exception handlers (offsets via `offset_of!`).
#[repr(C)]
pub struct Recovery {
    /// Where the handler resumes; 0 = no probe running (an exception is unexpected).
    pub resume_pc: AtomicU64,
    /// The stack pointer at the recovery label.
    pub resume_sp: AtomicU64,
    /// Non-zero once the handler recorded a fault.
    pub faulted: AtomicU64,
    /// x86_64: vector, error code, CR2; aarch64: ESR_EL1, FAR_EL1, unused.
    pub a: AtomicU64,
    pub b: AtomicU64,
    pub c: AtomicU64,
    /// The faulting PC (x86_64 the stacked RIP, aarch64 ELR_EL1).
    pub ip: AtomicU64,
    /// The result register at the exception (x86_64 RAX, aarch64 X0), and x86_64's RDX (the
    /// high half of a 32-bit call's EDX:EAX).
    pub result: AtomicU64,
    pub result_hi: AtomicU64,
    /// aarch64: where an EL0 stub's `svc #0` resumes at EL1 (0: no EL0 entry running on this
    /// VP; see `vtl0_sync_lower`). Unused on x86_64.
    pub el0_return: AtomicU64,
}

/// One per VP (index = VP; the exception handlers find theirs from the stack pointer, as
/// `smp::current` does). Exported under a fixed name so that a host test can find it in the ELF
/// (and make an exception unexpected on purpose): VP 0's record comes first.
#[export_name = "vtl0_recovery"]
pub static RECOVERY: [Recovery; vtl0::MAX_VPS as usize] = [const {
    Recovery {
        resume_pc: AtomicU64::new(0),
        resume_sp: AtomicU64::new(0),
        faulted: AtomicU64::new(0),
        a: AtomicU64::new(0),
        b: AtomicU64::new(0),
        c: AtomicU64::new(0),
        ip: AtomicU64::new(0),
        result: AtomicU64::new(0),
        result_hi: AtomicU64::new(0),
        el0_return: AtomicU64::new(0),
    }
}; vtl0::MAX_VPS as usize];

/// The running VP's record, which its probes arm and its exception handler fills.
pub fn mine() -> &'static Recovery {
    &RECOVERY[crate::smp::current() as usize]
}

/// Forgets any earlier fault (before a probe) of the running VP.
pub fn arm() {
    mine().faulted.store(0, Ordering::SeqCst);
}

/// The fault the running VP's last probe took, if any.
pub fn take() -> Option<Fault> {
    let rec = mine();
    if rec.faulted.swap(0, Ordering::SeqCst) == 0 {
        return None;
    }
    let (a, b, c) = (
        rec.a.load(Ordering::SeqCst),
        rec.b.load(Ordering::SeqCst),
        rec.c.load(Ordering::SeqCst),
    );
    Some(crate::arch::fault(a, b, c))
}

/// Where the running VP's last fault was taken, for a call made in `mode` (see
/// `vtl0::FaultSite`).
pub fn fault_site(mode: vtl0::Mode) -> vtl0::FaultSite {
    let rec = mine();
    let ip = rec.ip.load(Ordering::SeqCst);
    let result = rec.result.load(Ordering::SeqCst);
    let result = if mode.compat32 {
        (rec.result_hi.load(Ordering::SeqCst) & 0xFFFF_FFFF) << 32 | (result & 0xFFFF_FFFF)
    } else {
        result
    };
    vtl0::FaultSite { ip, result }
}
