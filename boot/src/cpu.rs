//! The per-CPU record every CPU reaches through its own base register (GS base on x86_64,
//! TPIDR_EL1 on aarch64): its VP index and a pointer the firmware hangs its per-CPU state on.
//! VP 0's record is static (it is needed before there is a heap); the others' are allocated at
//! boot for the VP count the loader reports ([`alloc_records`]).

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
    crate::arch::set_cpu_base(local as *const _ as usize);
}

fn current() -> &'static CpuLocal {
    // SAFETY: init() pointed the base register at a 'static record before any caller runs.
    unsafe { &*(crate::arch::cpu_base() as *const CpuLocal) }
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
