//! aarch64 exception vectors: every exception is fatal in the paravisor, so the handler prints
//! the syndrome, addresses and registers, then fails the run.
#![expect(unsafe_code, reason = "the exception vectors are global_asm!")]

use crate::ExitCode;
use aarch64_cpu::registers::{Readable, ESR_EL1, FAR_EL1};

core::arch::global_asm!(
    r#"
    .section .text.vectors, "ax"
    .balign 0x800
    .global boot_vectors
boot_vectors:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    .balign 0x80
    sub sp, sp, #(34 * 8)
    stp x0, x1, [sp, #0]
    mov x0, #\n
    b vector_common
    .endr

vector_common:
    stp x2, x3, [sp, #16]
    stp x4, x5, [sp, #32]
    stp x6, x7, [sp, #48]
    stp x8, x9, [sp, #64]
    stp x10, x11, [sp, #80]
    stp x12, x13, [sp, #96]
    stp x14, x15, [sp, #112]
    stp x16, x17, [sp, #128]
    stp x18, x19, [sp, #144]
    stp x20, x21, [sp, #160]
    stp x22, x23, [sp, #176]
    stp x24, x25, [sp, #192]
    stp x26, x27, [sp, #208]
    stp x28, x29, [sp, #224]
    mrs x2, elr_el1
    mrs x3, spsr_el1
    stp x30, x2, [sp, #240]
    str x3, [sp, #256]
    mov x1, sp
    bl boot_aarch64_trap
    udf #0
    "#
);

#[repr(C)]
struct TrapFrame {
    x: [u64; 31],
    elr: u64,
    spsr: u64,
}

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
