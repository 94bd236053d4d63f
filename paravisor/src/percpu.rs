//! Per-VP state, reached through the CPU's own per-CPU register (boot::cpu): this VP's
//! hypercall input and output pages, never shared with another VP and never used re-entrantly.

use crate::hypercall::{Hypercall, NestedTable, Page};
use boot::MAX_VPS;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};
use hvdef::{HvVpAssistPage, HvVtlEntryReason};
use spin::Once;

/// Words in an intercept message's payload.
const PAYLOAD_WORDS: usize = hvdef::HV_MESSAGE_PAYLOAD_SIZE / 8;

#[repr(C, align(4096))]
struct PerCpu {
    input: UnsafeCell<Page>,
    output: UnsafeCell<Page>,
    /// Handed to the hypervisor as this VP's VP assist page; only read through volatile
    /// copies, because the hypervisor writes it.
    assist: UnsafeCell<Page>,
}

// SAFETY: a VP only touches its own PerCpu (found through its own per-CPU register), and the
// busy flag turns any re-entrant use of the pages into a panic.
unsafe impl Sync for PerCpu {}

#[allow(clippy::declare_interior_mutable_const)]
const IDLE: PerCpu = PerCpu {
    input: UnsafeCell::new(Page::zeroed()),
    output: UnsafeCell::new(Page::zeroed()),
    assist: UnsafeCell::new(Page::zeroed()),
};
static PERCPU: [PerCpu; MAX_VPS] = [IDLE; MAX_VPS];
/// Whether a VP's hypercall pages are in use. Apart from the pages, so that a flag does not
/// round PerCpu up by a whole page.
#[allow(clippy::declare_interior_mutable_const)]
const FREE: AtomicBool = AtomicBool::new(false);
static BUSY: [AtomicBool; MAX_VPS] = [FREE; MAX_VPS];
static NESTED: Once<NestedTable> = Once::new();

/// Fixes the partition's nested table; once, on the boot VP, before any call a table could mark
/// (until then [`hypercall`] refuses those, see `Hypercall::before_nested_table`).
pub fn set_nested_table(table: NestedTable) -> &'static NestedTable {
    NESTED.call_once(|| table)
}

/// Hangs VP `index`'s state on this CPU.
pub fn init(index: u32) {
    boot::cpu::set_data(&PERCPU[index as usize] as *const PerCpu as *mut ());
}

fn current() -> &'static PerCpu {
    let data = boot::cpu::data() as *const PerCpu;
    assert!(
        !data.is_null(),
        "vp{}: per-CPU state used before init",
        boot::cpu::index()
    );
    // SAFETY: init() stored a pointer into the 'static PERCPU array.
    unsafe { &*data }
}

/// The GPA of this VP's VP assist page.
pub fn assist_page_gpa() -> u64 {
    current().assist.get() as u64
}

/// This VP's VP assist page. The hypervisor writes it behind our back, so it is only ever
/// accessed through volatile copies of whole fields, never through references.
pub struct AssistPage(*mut HvVpAssistPage);

impl AssistPage {
    /// Why VTL2 was entered.
    pub fn entry_reason(&self) -> HvVtlEntryReason {
        // SAFETY: the pointer is this VP's 'static assist page; a volatile copy of a u32.
        unsafe { core::ptr::read_volatile(&raw const (*self.0).vtl_control.entry_reason) }
    }

    /// The type of the intercept message the hypervisor left (entry reason INTERCEPT).
    pub fn message_type(&self) -> hvdef::HvMessageType {
        // SAFETY: as above; a volatile copy of a u32.
        unsafe {
            core::ptr::read_volatile(&raw const (*self.0).intercept_message.header.message_type)
        }
    }

    /// Copies payload words `first..first + out.len()` of the intercept message into `out`: one
    /// volatile load per word, and only the words a decoder needs (the message is 30 words).
    /// Words past the payload are left as they are.
    pub fn read_payload(&self, first: usize, out: &mut [u64]) {
        // SAFETY: as above; each load is a volatile read of one whole payload word.
        let payload = unsafe { &raw const (*self.0).intercept_message.payload };
        for (i, word) in out.iter_mut().enumerate() {
            let Some(at) = first.checked_add(i).filter(|&at| at < PAYLOAD_WORDS) else {
                return;
            };
            // SAFETY: `at` is inside the payload array.
            *word = unsafe { core::ptr::read_volatile(payload.cast::<u64>().add(at)) };
        }
    }

    /// What VTL0's RAX/RCX become on the next non-fast VTL return (x64 only: arm64's X
    /// registers are shared outright).
    #[cfg(target_arch = "x86_64")]
    pub fn set_return_registers(&self, rax: u64, rcx: u64) {
        // SAFETY: as above; volatile stores into fields the hypervisor reads at VTL return.
        unsafe {
            core::ptr::write_volatile(&raw mut (*self.0).vtl_control.return_rax, rax);
            core::ptr::write_volatile(&raw mut (*self.0).vtl_control.return_rcx, rcx);
        }
    }
}

/// This VP's assist page.
pub fn assist_page() -> AssistPage {
    AssistPage(current().assist.get().cast())
}

/// Exclusive use of this VP's hypercall pages until the guard drops.
pub struct HypercallGuard {
    busy: &'static AtomicBool,
    hv: Hypercall<'static, crate::arch::Abi>,
}

impl core::ops::Deref for HypercallGuard {
    type Target = Hypercall<'static, crate::arch::Abi>;
    fn deref(&self) -> &Self::Target {
        &self.hv
    }
}

impl core::ops::DerefMut for HypercallGuard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.hv
    }
}

impl Drop for HypercallGuard {
    fn drop(&mut self) {
        self.busy.store(false, Ordering::Release);
    }
}

/// This VP's hypercall interface. Panics (loudly, never silently sharing a page) if this VP's
/// pages are already in use or init() was not called; before the nested table is fixed, panics
/// on any call the table could mark.
pub fn hypercall() -> HypercallGuard {
    let cpu = current();
    let busy = &BUSY[boot::cpu::index() as usize];
    assert!(
        !busy.swap(true, Ordering::Acquire),
        "vp{}: hypercall pages re-entered",
        boot::cpu::index()
    );
    // SAFETY: the busy flag gives this guard the only references to this VP's pages.
    let (input, output) = unsafe { (&mut *cpu.input.get(), &mut *cpu.output.get()) };
    let hv = match NESTED.get() {
        Some(table) => Hypercall::new(crate::arch::Abi, input, output, table),
        None => Hypercall::before_nested_table(crate::arch::Abi, input, output),
    };
    HypercallGuard { busy, hv }
}
