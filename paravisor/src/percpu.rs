//! Per-VP state, reached through the CPU's own per-CPU register (boot::cpu): this VP's
//! hypercall input and output pages, never shared with another VP and never used re-entrantly.
//! Allocated on the heap at boot ([`alloc()`]) for the VP count the loader reported.
#![expect(
    unsafe_code,
    reason = "this VP's pages, shared with the hypervisor, behind raw pointers"
)]

use crate::hypercall::{Hypercall, NestedTable, Page};
use alloc::boxed::Box;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// x64: the frame the hypervisor overlays with this VP's VTL register page once the VP maps
    /// it (`arch::RegisterPage`); only accessed through volatile field accesses.
    #[cfg(target_arch = "x86_64")]
    register_page: UnsafeCell<Page>,
}

// SAFETY: a VP only touches its own PerCpu (found through its own per-CPU register), and the
// busy flag turns any re-entrant use of the pages into a panic.
unsafe impl Sync for PerCpu {}

/// The small per-VP flags and counters, apart from the pages so that they do not round
/// PerCpu up by a whole page; the CPU's per-CPU pointer points here, and this to the pages.
pub struct VpFlags {
    /// This VP's pages.
    pages: *const PerCpu,
    /// Whether the VP's hypercall pages are in use.
    busy: AtomicBool,
    /// Whether the VP finished its bring-up.
    pub online: AtomicBool,
    /// VTL0 memory accesses refused on this VP (`runloop::refuse_memory_access`).
    pub memory_refusals: AtomicU64,
}

// SAFETY: `pages` is only read (set once in `alloc`, before any other CPU sees the flags); the
// rest are atomics.
unsafe impl Sync for VpFlags {}

struct Tables {
    flags: &'static [VpFlags],
}

static TABLES: Once<Tables> = Once::new();
static NESTED: Once<NestedTable> = Once::new();

/// Fixes the partition's nested table; once, on the boot VP, before any call a table could mark
/// (until then [`hypercall`] refuses those, see `Hypercall::before_nested_table`).
pub fn set_nested_table(table: NestedTable) -> &'static NestedTable {
    NESTED.call_once(|| table)
}

/// Allocates every VP's state for `vp_count` VPs: zeroed pages. Once, on the boot VP, before
/// any [`init`].
pub fn alloc(vp_count: u32) {
    TABLES.call_once(|| {
        let n = vp_count as usize;
        // SAFETY: all-zero bytes are a valid PerCpu (pages of bytes) and VpFlags (atomics and
        // a null pointer, set below).
        let (percpu, mut flags) = unsafe {
            (
                Box::<[PerCpu]>::new_zeroed_slice(n).assume_init(),
                Box::<[VpFlags]>::new_zeroed_slice(n).assume_init(),
            )
        };
        let percpu: &'static [PerCpu] = Box::leak(percpu);
        for (f, p) in flags.iter_mut().zip(percpu) {
            f.pages = p;
        }
        Tables {
            flags: Box::leak(flags),
        }
    });
}

fn tables() -> &'static Tables {
    TABLES.get().expect("per-VP state allocated at boot")
}

/// VP `index`'s flags and counters (None past the VP count).
pub fn flags(index: u32) -> Option<&'static VpFlags> {
    tables().flags.get(index as usize)
}

/// Hangs VP `index`'s state on this CPU.
pub fn init(index: u32) {
    boot::cpu::set_data(&tables().flags[index as usize] as *const VpFlags as *mut ());
}

/// The bytes of per-VP state the firmware allocates for each VP.
pub const BYTES_PER_VP: usize = core::mem::size_of::<PerCpu>() + core::mem::size_of::<VpFlags>();

// A VP's share of the heap holds its AP stack, its per-CPU record and this state, with room
// for the allocator's headers and alignment.
const _: () = assert!(
    boot::AP_STACK_SIZE + BYTES_PER_VP + 64 <= boot::heap::HEAP_PER_VP as usize,
    "the per-VP state outgrew boot::heap::HEAP_PER_VP"
);

/// This VP's flags and counters.
pub fn this_vp() -> &'static VpFlags {
    let data = boot::cpu::data() as *const VpFlags;
    assert!(
        !data.is_null(),
        "vp{}: per-CPU state used before init",
        boot::cpu::index()
    );
    // SAFETY: init() stored a pointer into the leaked (so 'static) VpFlags table.
    unsafe { &*data }
}

fn current() -> &'static PerCpu {
    // SAFETY: alloc() pointed every VP's flags at its own pages in the leaked PerCpu table.
    unsafe { &*this_vp().pages }
}

/// The GPA of this VP's VP assist page.
pub fn assist_page_gpa() -> u64 {
    current().assist.get() as u64
}

/// This VP's register page frame (x64), identity-mapped: its address is its GPA.
#[cfg(target_arch = "x86_64")]
pub fn register_page_frame() -> *mut Page {
    current().register_page.get()
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
        let payload = unsafe { &raw const (*self.0).intercept_message.payload }.cast::<u64>();
        let n = PAYLOAD_WORDS.saturating_sub(first).min(out.len());
        for (i, word) in out[..n].iter_mut().enumerate() {
            // SAFETY: `first + i < PAYLOAD_WORDS` (`n`), so the word is inside the payload.
            *word = unsafe { core::ptr::read_volatile(payload.add(first + i)) };
        }
    }

    /// The page itself, for the VTL switch (`arch::VtlSwitch`, which stores VTL0's RAX/RCX
    /// into its `vtl_control` on x64).
    pub fn as_ptr(&self) -> *mut HvVpAssistPage {
        self.0
    }
}

/// This VP's assist page.
pub fn assist_page() -> AssistPage {
    AssistPage(current().assist.get().cast())
}

/// Exclusive use of this VP's hypercall pages until the guard drops.
#[must_use = "dropping the guard releases the pages at once"]
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
    let vp = this_vp();
    // SAFETY: as in current().
    let cpu = unsafe { &*vp.pages };
    let busy = &vp.busy;
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
