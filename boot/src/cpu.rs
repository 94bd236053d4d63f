//! The per-CPU record every CPU reaches through its own base register (GS base on x86_64,
//! TPIDR_EL1 on aarch64): its VP index and a pointer the firmware hangs its per-CPU state on.
//! VP 0's record is static (it is needed before there is a heap); the others' are allocated at
//! boot for the VP count the loader reports (`alloc_records`).
//!
//! A trap or panic can come before [`init`] (or on a CPU whose base register holds anything at
//! all): the code that reports those uses [`try_index`], which checks the base register against
//! the records instead of following it. On the host the base register is a thread-local, so the
//! lookup is unit-tested there.
#![expect(unsafe_code, reason = "follows the base register to this CPU's record")]

use alloc::boxed::Box;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use spin::Once;

#[repr(C)]
pub struct CpuLocal {
    /// This record's own address, so x86 can find it with one `gs:` load.
    this: AtomicUsize,
    index: AtomicU32,
    data: AtomicPtr<()>,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: CpuLocal = CpuLocal {
    this: AtomicUsize::new(0),
    index: AtomicU32::new(0),
    data: AtomicPtr::new(core::ptr::null_mut()),
};
static BOOT_LOCAL: CpuLocal = EMPTY;
/// VP `i`'s record is `LOCALS[i - 1]`.
static LOCALS: Once<&'static [CpuLocal]> = Once::new();

/// Allocates the APs' records for `vp_count` VPs. Once, on the boot VP, before any AP starts.
#[cfg_attr(
    not(target_os = "none"),
    allow(dead_code, reason = "the host only tests it")
)]
pub(crate) fn alloc_records(vp_count: usize) {
    LOCALS.call_once(|| Box::leak((1..vp_count).map(|_| EMPTY).collect()));
}

/// Points this CPU's base register at record `index`. Called once per CPU, first thing.
pub fn init(index: usize) {
    let local = match index {
        0 => &BOOT_LOCAL,
        i => &LOCALS.get().expect("AP records allocated before any AP")[i - 1],
    };
    local
        .this
        .store(local as *const _ as usize, Ordering::Relaxed);
    local.index.store(index as u32, Ordering::Relaxed);
    base::set_cpu_base(local as *const _ as usize);
}

fn current() -> &'static CpuLocal {
    // SAFETY: init() pointed the base register at a 'static record before any caller runs.
    unsafe { &*(base::cpu_base() as *const CpuLocal) }
}

/// The record the base register points at, if it points at one: compared with the records'
/// addresses, never followed.
fn try_current() -> Option<&'static CpuLocal> {
    let base = base::cpu_base_register();
    if base == &BOOT_LOCAL as *const CpuLocal as usize {
        return Some(&BOOT_LOCAL);
    }
    let aps = LOCALS.get()?;
    let offset = base.checked_sub(aps.as_ptr() as usize)?;
    if offset % core::mem::size_of::<CpuLocal>() != 0 {
        return None;
    }
    aps.get(offset / core::mem::size_of::<CpuLocal>())
}

/// This CPU's VP index, or None before [`init`] ran on it: for the code that reports a trap or
/// panic, which can come that early. Slower than [`index`] (it reads the base register itself).
pub fn try_index() -> Option<u32> {
    try_current().map(|local| local.index.load(Ordering::Relaxed))
}

/// [`try_index`] for a fatal message: the index, or `?` before [`init`].
pub fn index_for_report() -> impl core::fmt::Display {
    struct Report(Option<u32>);
    impl core::fmt::Display for Report {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self.0 {
                Some(index) => write!(f, "{index}"),
                None => f.write_str("?"),
            }
        }
    }
    Report(try_index())
}

/// This CPU's VP index.
pub fn index() -> u32 {
    current().index.load(Ordering::Relaxed)
}

/// The firmware's per-CPU pointer for this CPU (null until set).
pub fn data() -> *mut () {
    current().data.load(Ordering::Relaxed)
}

/// Sets the firmware's per-CPU pointer for this CPU.
pub fn set_data(ptr: *mut ()) {
    current().data.store(ptr, Ordering::Relaxed);
}

#[cfg(target_os = "none")]
use crate::arch as base;

/// The host's stand-in for the base register: one per thread, as each CPU has its own.
#[cfg(not(target_os = "none"))]
mod base {
    use core::cell::Cell;

    std::thread_local! {
        static BASE: Cell<usize> = const { Cell::new(0) };
    }

    pub(super) fn set_cpu_base(addr: usize) {
        BASE.set(addr);
    }

    pub(super) fn cpu_base() -> usize {
        BASE.get()
    }

    pub(super) fn cpu_base_register() -> usize {
        BASE.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case in one test: the records are process-wide (allocated once), the base
    /// register is per thread.
    #[test]
    fn try_index_trusts_only_a_base_that_is_a_record() {
        assert_eq!(try_index(), None, "before init");
        assert_eq!(index_for_report().to_string(), "?");
        for garbage in [1, usize::MAX, &BOOT_LOCAL as *const CpuLocal as usize + 4] {
            base::set_cpu_base(garbage);
            assert_eq!(try_index(), None, "base {garbage:#x}");
        }
        init(0);
        assert_eq!((try_index(), index()), (Some(0), 0));
        assert_eq!(index_for_report().to_string(), "0");

        alloc_records(4);
        std::thread::spawn(|| {
            assert_eq!(try_index(), None, "a new CPU before its init");
            init(2);
            assert_eq!((try_index(), index()), (Some(2), 2));
            let aps = LOCALS.get().unwrap().as_ptr() as usize;
            for inside in [aps + 1, aps + 3 * core::mem::size_of::<CpuLocal>()] {
                base::set_cpu_base(inside);
                assert_eq!(try_index(), None, "base {inside:#x}");
            }
        })
        .join()
        .unwrap();
        assert_eq!(
            try_index(),
            Some(0),
            "another CPU's init leaves this one's alone"
        );
    }
}
