//! aarch64 exception vectors: every exception is fatal in the paravisor, so the handler prints
//! the syndrome, addresses and registers, then fails the run.
#![expect(unsafe_code, reason = "the exception vectors are global_asm!")]

use crate::ExitCode;
use aarch64_cpu::registers::{Readable, ESR_EL1, FAR_EL1};
use core::mem::{offset_of, size_of};

core::arch::global_asm!(
    include_str!("trap.S"),
    frame_size = const size_of::<TrapFrame>().next_multiple_of(16),
    frame_x0 = const offset_of!(TrapFrame, x),
    frame_x2 = const offset_of!(TrapFrame, x) + 16,
    frame_x4 = const offset_of!(TrapFrame, x) + 32,
    frame_x6 = const offset_of!(TrapFrame, x) + 48,
    frame_x8 = const offset_of!(TrapFrame, x) + 64,
    frame_x10 = const offset_of!(TrapFrame, x) + 80,
    frame_x12 = const offset_of!(TrapFrame, x) + 96,
    frame_x14 = const offset_of!(TrapFrame, x) + 112,
    frame_x16 = const offset_of!(TrapFrame, x) + 128,
    frame_x18 = const offset_of!(TrapFrame, x) + 144,
    frame_x20 = const offset_of!(TrapFrame, x) + 160,
    frame_x22 = const offset_of!(TrapFrame, x) + 176,
    frame_x24 = const offset_of!(TrapFrame, x) + 192,
    frame_x26 = const offset_of!(TrapFrame, x) + 208,
    frame_x28 = const offset_of!(TrapFrame, x) + 224,
    frame_x30 = const offset_of!(TrapFrame, x) + 240,
    frame_elr = const offset_of!(TrapFrame, elr),
    frame_spsr = const offset_of!(TrapFrame, spsr),
);

/// What `vector_common` stores on the stack, at the offsets the compiler gives it.
#[repr(C)]
struct TrapFrame {
    x: [u64; 31],
    elr: u64,
    spsr: u64,
}

// X0..X30, ELR and SPSR; the stack keeps its 16-byte alignment by rounding the frame up.
const _: () = assert!(size_of::<TrapFrame>() == 33 * 8);

const KINDS: [&str; 4] = ["synchronous", "IRQ", "FIQ", "SError"];
const SOURCES: [&str; 4] = [
    "EL1 SP_EL0",
    "EL1 SP_EL1",
    "lower EL AArch64",
    "lower EL AArch32",
];

#[unsafe(no_mangle)]
extern "C" fn boot_aarch64_trap(vector: u64, f: &TrapFrame) -> ! {
    let (source, kind) = (
        SOURCES[(vector as usize >> 2) & 3],
        KINDS[vector as usize & 3],
    );
    let esr = ESR_EL1.get();
    crate::console::write_fmt_emergency(format_args!(
        "\nFATAL: cpu {} {kind} exception from {source}: ESR {esr:#x} (class {:#x}) at ELR {:#018x}\n\
         FAR {:#018x} SPSR {:#x}\n",
        crate::cpu::index_for_report(),
        esr >> 26,
        f.elr,
        FAR_EL1.get(),
        f.spsr
    ));
    for (i, pair) in f.x.chunks(4).enumerate() {
        for (j, v) in pair.iter().enumerate() {
            crate::console::write_fmt_emergency(format_args!("x{:<2} {v:#018x}  ", i * 4 + j));
        }
        crate::console::write_fmt_emergency(format_args!("\n"));
    }
    super::exit(ExitCode::Failure)
}
