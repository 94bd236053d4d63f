//! One boot stack per VP, reserved in BSS. The entry code runs VP 0 on stack 0; an AP is
//! started with its stack's top in its initial context and derives its VP index from it.

use crate::{MAX_VPS, STACK_SIZE};
use core::cell::UnsafeCell;

#[repr(C, align(4096))]
pub struct Stacks(UnsafeCell<[[u8; STACK_SIZE]; MAX_VPS]>);

// SAFETY: each stack is used by exactly one CPU, chosen by index; Rust code never reads or
// writes the array through this static.
unsafe impl Sync for Stacks {}

pub static STACKS: Stacks = Stacks(UnsafeCell::new([[0; STACK_SIZE]; MAX_VPS]));

/// The initial stack pointer for VP `index` (the top of its stack).
pub fn top(index: usize) -> u64 {
    assert!(index < MAX_VPS, "VP index {index} has no boot stack");
    STACKS.0.get() as u64 + ((index + 1) * STACK_SIZE) as u64
}

/// The VP index whose stack top is `top`, if it is one.
pub fn index_of_top(top: u64) -> Option<usize> {
    let offset = top.checked_sub(STACKS.0.get() as u64)? as usize;
    let index = (offset / STACK_SIZE).checked_sub(1)?;
    (offset.is_multiple_of(STACK_SIZE) && index < MAX_VPS).then_some(index)
}
