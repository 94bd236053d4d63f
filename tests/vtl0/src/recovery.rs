//! The recovery point every probe sets, one per VP: the exception handlers (arch code) check
//! the running VP's, record the fault there and resume at the probe's recovery label instead
//! of the faulting instruction.

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
