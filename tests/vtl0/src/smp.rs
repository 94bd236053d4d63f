//! The kernel's other VPs: their stacks, which VP the running code is on, the locks that keep
//! their entries and lines apart, and the count of VPs done with their entries.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use vtl0::MAX_VPS;

/// Each started VP's stack (VP 0 runs on the boot stack).
pub const AP_STACK_SIZE: usize = 0x8000;

#[repr(C, align(16))]
struct ApStacks(UnsafeCell<[[u8; AP_STACK_SIZE]; MAX_VPS as usize - 1]>);

// SAFETY: each stack is used by one VP only (the one started on it); nothing else touches them.
unsafe impl Sync for ApStacks {}

static AP_STACKS: ApStacks = ApStacks(UnsafeCell::new([[0; AP_STACK_SIZE]; MAX_VPS as usize - 1]));

fn stacks() -> (usize, usize) {
    let base = AP_STACKS.0.get() as usize;
    (base, base + (MAX_VPS as usize - 1) * AP_STACK_SIZE)
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

/// One entry at a time across the VPs (with its line): the probes' recovery point is one.
pub static ENTRY: Lock = Lock::new();

/// The VPs other than 0 that have run all their entries.
pub static DONE: AtomicU32 = AtomicU32::new(0);
