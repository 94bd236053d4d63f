//! The kernel's other VPs: their stacks, which VP the running code is on, the lock that keeps
//! their lines apart, and the count of VPs done with their entries.
#![expect(
    unsafe_code,
    reason = "the AP stacks are a static the entry code finds by symbol name"
)]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use vtl0::MAX_VPS;

/// Each started VP's stack (VP 0 runs on the boot stack); a power of two (the exception
/// handlers shift by [`AP_STACK_SHIFT`]).
pub const AP_STACK_SHIFT: u32 = 15;
pub const AP_STACK_SIZE: usize = 1 << AP_STACK_SHIFT;
/// Bytes of all of them.
pub const AP_STACKS_LEN: usize = (MAX_VPS as usize - 1) * AP_STACK_SIZE;

#[repr(C, align(16))]
pub struct ApStacks(UnsafeCell<[[u8; AP_STACK_SIZE]; MAX_VPS as usize - 1]>);

// SAFETY: each stack is used by one VP only (the one started on it); nothing else touches them.
unsafe impl Sync for ApStacks {}

/// Exported for the exception handlers, which find the running VP from it as `current` does.
#[export_name = "vtl0_ap_stacks"]
pub static AP_STACKS: ApStacks =
    ApStacks(UnsafeCell::new([[0; AP_STACK_SIZE]; MAX_VPS as usize - 1]));

fn stacks() -> (usize, usize) {
    let base = AP_STACKS.0.get() as usize;
    (base, base + AP_STACKS_LEN)
}

/// The top of VP `vp`'s stack (1..MAX_VPS), where it starts.
pub fn stack_top(vp: u32) -> u64 {
    (stacks().0 + vp as usize * AP_STACK_SIZE) as u64
}

/// The VP the caller runs on: the one whose stack holds its stack pointer (VP 0 off them).
pub fn current() -> u32 {
    // One below: a stack pointer at a stack's very top is that stack's (nothing pushed yet).
    let sp = (crate::arch::stack_pointer() as usize).wrapping_sub(1);
    let (start, end) = stacks();
    if (start..end).contains(&sp) {
        ((sp - start) / AP_STACK_SIZE) as u32 + 1
    } else {
        0
    }
}

/// A spin lock in the kernel's memory (the VPs share it).
pub struct Lock(AtomicBool);

impl Lock {
    pub const fn new() -> Lock {
        Lock(AtomicBool::new(false))
    }

    /// Runs `f` holding the lock.
    pub fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        while self
            .0
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        let r = f();
        self.0.store(false, Ordering::Release);
        r
    }
}

/// The VPs other than 0 that have run all their entries.
pub static DONE: AtomicU32 = AtomicU32::new(0);
