//! The per-CPU record every CPU reaches through its own base register (GS base on x86_64,
//! TPIDR_EL1 on aarch64): its VP index and a pointer the firmware hangs its per-CPU state on.

use crate::MAX_VPS;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

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
static LOCALS: [CpuLocal; MAX_VPS] = [EMPTY; MAX_VPS];

/// Points this CPU's base register at record `index`. Called once per CPU, first thing.
pub fn init(index: usize) {
    let local = &LOCALS[index];
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
