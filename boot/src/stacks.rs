//! One stack per VP. The entry code runs VP 0 on the boot stack, reserved in BSS (it runs
//! before there is a heap). The APs' stacks are one heap block of `vp_count - 1` stacks,
//! allocated at boot (`init`); an AP is started with its stack's top in its initial context
//! and derives its VP index from it.
//!
//! Every stack is painted with [`PAINT`] before it is used (VP 0's below the frame that paints
//! it), so [`high_water`] can tell how deep it has ever been: the measurement the stack sizes
//! come from (docs/ARCHITECTURE.md, "Memory").
#![expect(
    unsafe_code,
    reason = "paints and measures the stacks through raw pointers"
)]

use crate::{AP_STACK_SIZE, BOOT_STACK_SIZE};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What an unused stack word holds.
pub const PAINT: u64 = 0x57ac_57ac_57ac_57ac;

#[repr(C, align(4096))]
pub struct BootStack(UnsafeCell<[u8; BOOT_STACK_SIZE]>);

// SAFETY: the boot stack is used by VP 0 alone; Rust code only reads and paints the part below
// the running frame, through raw pointers.
unsafe impl Sync for BootStack {}

/// VP 0's stack; the entry code points the stack pointer at its end.
pub static BOOT_STACK: BootStack = BootStack(UnsafeCell::new([0; BOOT_STACK_SIZE]));

/// The APs' stacks: VP `i` (1 ≤ i < count) owns `base + (i - 1) * AP_STACK_SIZE`, upwards.
static AP_BASE: AtomicU64 = AtomicU64::new(0);
static COUNT: AtomicUsize = AtomicUsize::new(1);

/// Allocates and paints the APs' stacks for `vp_count` VPs and paints what VP 0's stack has
/// not used yet. Once, on the boot VP, before any AP starts.
pub(crate) fn init(vp_count: usize) {
    paint_boot_stack();
    if vp_count > 1 {
        let size = (vp_count - 1) * AP_STACK_SIZE;
        let layout = core::alloc::Layout::from_size_align(size, 4096).expect("stack layout");
        // SAFETY: a non-zero size.
        let base = unsafe { alloc::alloc::alloc(layout) };
        if base.is_null() {
            alloc::alloc::handle_alloc_error(layout);
        }
        // SAFETY: the fresh allocation, `size` bytes, 8-aligned.
        unsafe { paint(base.cast(), size / 8) };
        AP_BASE.store(base as u64, Ordering::Relaxed);
    }
    COUNT.store(vp_count, Ordering::Release);
}

/// Fills `words` u64s from `at` with [`PAINT`].
///
/// # Safety
/// `at..at + words` is memory nobody else uses now.
unsafe fn paint(at: *mut u64, words: usize) {
    for i in 0..words {
        // SAFETY: in the caller's range; volatile, so the stores are never dropped as dead.
        unsafe { core::ptr::write_volatile(at.add(i), PAINT) };
    }
}

/// Paints VP 0's stack from its bottom to 1 KiB below this frame.
#[inline(never)]
fn paint_boot_stack() {
    let bottom = BOOT_STACK.0.get() as u64;
    let here = core::hint::black_box(&bottom) as *const u64 as u64;
    let below = here.saturating_sub(1024);
    if below > bottom {
        // SAFETY: the unused part of VP 0's own stack, below every live frame.
        unsafe { paint(bottom as *mut u64, ((below - bottom) / 8) as usize) };
    }
}

/// (bottom, size) of VP `index`'s stack.
fn stack(index: usize) -> (u64, usize) {
    assert!(
        index < COUNT.load(Ordering::Acquire),
        "VP index {index} has no stack"
    );
    match index {
        0 => (BOOT_STACK.0.get() as u64, BOOT_STACK_SIZE),
        i => (
            AP_BASE.load(Ordering::Relaxed) + ((i - 1) * AP_STACK_SIZE) as u64,
            AP_STACK_SIZE,
        ),
    }
}

/// The initial stack pointer for VP `index` (the top of its stack).
pub fn top(index: usize) -> u64 {
    let (bottom, size) = stack(index);
    bottom + size as u64
}

/// The VP index whose stack top is `top`, if it is one.
pub fn index_of_top(top: u64) -> Option<usize> {
    if top == BOOT_STACK.0.get() as u64 + BOOT_STACK_SIZE as u64 {
        return Some(0);
    }
    let offset = top.checked_sub(AP_BASE.load(Ordering::Relaxed))? as usize;
    let index = offset / AP_STACK_SIZE;
    (offset.is_multiple_of(AP_STACK_SIZE) && index >= 1 && index < COUNT.load(Ordering::Acquire))
        .then_some(index)
}

/// How deep VP `index`'s stack has ever been, in bytes (from its top down to the lowest word
/// that no longer holds [`PAINT`]), and its size. A depth equal to the size means the paint is
/// gone down to the bottom: the stack may have overflowed.
pub fn high_water(index: usize) -> (usize, usize) {
    let (bottom, size) = stack(index);
    let words = size / 8;
    let base = bottom as *const u64;
    let word = |i: usize| {
        // SAFETY: i < words, so in VP `index`'s stack; a volatile read of a word another CPU
        // may be writing (it is only compared with the paint).
        unsafe { core::ptr::read_volatile(base.add(i)) }
    };
    let untouched = (0..words).take_while(|&i| word(i) == PAINT).count();
    (size - untouched * 8, size)
}

/// The stack word `depth` bytes below VP `index`'s top (the bottom word for a depth at or past
/// the size): while it still holds [`PAINT`], the stack has not been deeper than `depth`.
pub fn word_at_depth(index: usize, depth: usize) -> *const u64 {
    let (bottom, size) = stack(index);
    let offset = size.saturating_sub(depth.max(8)) & !7;
    (bottom + offset as u64) as *const u64
}
