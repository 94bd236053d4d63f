//! The recovery point every probe sets: the exception handlers (arch code) check it, record
//! the fault here and resume at the probe's recovery label instead of the faulting instruction.

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
}

/// Exported under a fixed name so that a host test can find it in the ELF (and make an
/// exception unexpected on purpose).
#[export_name = "vtl0_recovery"]
pub static RECOVERY: Recovery = Recovery {
    resume_pc: AtomicU64::new(0),
    resume_sp: AtomicU64::new(0),
    faulted: AtomicU64::new(0),
    a: AtomicU64::new(0),
    b: AtomicU64::new(0),
    c: AtomicU64::new(0),
    ip: AtomicU64::new(0),
    result: AtomicU64::new(0),
    result_hi: AtomicU64::new(0),
};

/// Forgets any earlier fault (before a probe).
pub fn arm() {
    RECOVERY.faulted.store(0, Ordering::SeqCst);
}

/// The fault the last probe took, if any.
pub fn take() -> Option<Fault> {
    if RECOVERY.faulted.swap(0, Ordering::SeqCst) == 0 {
        return None;
    }
    let (a, b, c) = (
        RECOVERY.a.load(Ordering::SeqCst),
        RECOVERY.b.load(Ordering::SeqCst),
        RECOVERY.c.load(Ordering::SeqCst),
    );
    Some(crate::arch::fault(a, b, c))
}

/// Where the last fault was taken, for a call made in `mode` (see `vtl0::FaultSite`).
pub fn fault_site(mode: vtl0::Mode) -> vtl0::FaultSite {
    let ip = RECOVERY.ip.load(Ordering::SeqCst);
    let result = RECOVERY.result.load(Ordering::SeqCst);
    let result = if mode.compat32 {
        (RECOVERY.result_hi.load(Ordering::SeqCst) & 0xFFFF_FFFF) << 32 | (result & 0xFFFF_FFFF)
    } else {
        result
    };
    vtl0::FaultSite { ip, result }
}
