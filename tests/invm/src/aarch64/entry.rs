//! EL2 entry, the host's own stage-1 identity map, the exception vectors and the guest entry.
//!
//! The MMU goes on before any Rust runs: with it off every access is Device memory, where
//! unaligned and exclusive accesses (atomics, the allocator's locks) fault.
#![expect(
    unsafe_code,
    reason = "EL2 entry, stage-1 map and vectors are global_asm!"
)]

use crate::hv::Frame;
use core::mem::{offset_of, size_of};

// The vector code stores X0..X30 at 0..248, ELR at 248 and SPSR at 256 with `stp` pairs.
const _: () = assert!(offset_of!(Frame, x) == 0);
const _: () = assert!(offset_of!(Frame, elr) == 248);
const _: () = assert!(offset_of!(Frame, spsr) == 256);
const _: () = assert!(size_of::<Frame>().is_multiple_of(16));

core::arch::global_asm!(
    r#"
    .section .data.pagetables, "aw"
    /* EL2 stage 1, level-1 root (TCR_EL2 T0SZ 25: 512 GiB, the walk starts at level 1): block 0
       Device-nGnRnE, never executable (XN, bit 54); blocks 1-3 Normal write-back, inner
       shareable, AF. AP 0b00: read/write at EL2. The guest's RAM above 4 GiB gets its blocks
       at boot (`map_high_ram`). */
    .balign 4096
    .global invm_el2_l1
invm_el2_l1:
    .quad 0x0000000000000401 | (1 << 54)
    .quad 0x0000000040000705
    .quad 0x0000000080000705
    .quad 0x00000000c0000705
    .fill 508, 8, 0

    .section .text.boot, "ax"
    .global _start
_start:
    mov x19, x0                  /* the device tree QEMU passed (0 for ELF boots) */
    mrs x20, CurrentEL
    lsr x20, x20, #2
    mov x21, #0                  /* CPU 0 */
    adrp x1, __stack_top
    add x1, x1, :lo12:__stack_top
    mov sp, x1
    cmp x20, #2
    b.ne 4f                      /* not at EL2: Rust says so and fails */
    bl invm_el2_mmu
    adrp x1, __bss_start
    add x1, x1, :lo12:__bss_start
    adrp x2, __bss_end
    add x2, x2, :lo12:__bss_end
2:  cmp x1, x2
    b.hs 4f
    str xzr, [x1], #8
    b 2b
4:
    mov x0, x19
    mov x1, x20
    bl invm_main
    udf #0

    /* A CPU the host started with PSCI CPU_ON: at EL2, MMU off, x0 = its CPU (VP) index. Its
       stack is slot x0 below __stack_top, {stack_size} bytes each. */
    .global invm_secondary_entry
invm_secondary_entry:
    mov x21, x0
    adrp x1, __stack_top
    add x1, x1, :lo12:__stack_top
    mov x2, #{stack_size}
    msub x1, x0, x2, x1
    mov sp, x1
    bl invm_el2_mmu
    mov x0, x21
    bl invm_secondary
    udf #0

    /* The host's EL2 translation and vectors, the same on every CPU; TPIDR_EL2 = x21, the
       CPU's index. Clobbers x1-x3. */
invm_el2_mmu:
    msr tpidr_el2, x21
    adr x1, invm_vectors
    msr vbar_el2, x1
    ldr x1, =0xff00              /* attr0 Device-nGnRnE, attr1 Normal WB */
    msr mair_el2, x1
    /* T0SZ 25, IRGN0/ORGN0 WB WA, SH0 inner, TG0 4K, RES1 bits 23 and 31; PS = PARange, at
       most 48 bits. */
    ldr x1, =(25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | (1 << 31))
    mrs x2, id_aa64mmfr0_el1
    and x2, x2, #0xf
    mov x3, #5
    cmp x2, x3
    csel x2, x2, x3, ls
    orr x1, x1, x2, lsl #16
    msr tcr_el2, x1
    adrp x1, invm_el2_l1
    msr ttbr0_el2, x1
    dsb ish
    isb
    tlbi alle2
    dsb nsh
    isb
    ldr x1, =(0x30c50830 | (1 << 0) | (1 << 2) | (1 << 12))  /* RES1 bits, M, C, I */
    msr sctlr_el2, x1
    isb
    ret

    /* Every vector saves the whole frame (X0..X30: the guest's callee-saved registers must
       survive a trip through Rust too), passes the vector number, and returns through the
       same restore path. */
    .macro invm_vector kind
    .balign 0x80
    sub sp, sp, #{frame_size}
    stp x0, x1, [sp, #0]
    mov x1, #\kind
    b invm_vector_common
    .endm

    .text
    .balign 0x800
invm_vectors:
    invm_vector 0
    invm_vector 1
    invm_vector 2
    invm_vector 3
    invm_vector 4
    invm_vector 5
    invm_vector 6
    invm_vector 7
    invm_vector 8
    invm_vector 9
    invm_vector 10
    invm_vector 11
    invm_vector 12
    invm_vector 13
    invm_vector 14
    invm_vector 15

invm_vector_common:
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
    mrs x2, elr_el2
    mrs x3, spsr_el2
    str x30, [sp, #240]
    stp x2, x3, [sp, #248]
    mov x0, sp
    bl invm_trap
    mov x0, sp
    b invm_restore

    /* invm_enter(frame, stack_top): the first entry into the guest. */
    .global invm_enter
invm_enter:
    mov sp, x1
    sub sp, sp, #{frame_size}
    mov x2, #0
1:  ldr x3, [x0, x2]
    str x3, [sp, x2]
    add x2, x2, #8
    cmp x2, #{frame_size}
    b.lo 1b
    mov x0, sp

    /* x0 = sp = the frame: load it and leave. */
invm_restore:
    ldp x2, x3, [x0, #248]
    msr elr_el2, x2
    msr spsr_el2, x3
    ldp x2, x3, [x0, #16]
    ldp x4, x5, [x0, #32]
    ldp x6, x7, [x0, #48]
    ldp x8, x9, [x0, #64]
    ldp x10, x11, [x0, #80]
    ldp x12, x13, [x0, #96]
    ldp x14, x15, [x0, #112]
    ldp x16, x17, [x0, #128]
    ldp x18, x19, [x0, #144]
    ldp x20, x21, [x0, #160]
    ldp x22, x23, [x0, #176]
    ldp x24, x25, [x0, #192]
    ldp x26, x27, [x0, #208]
    ldp x28, x29, [x0, #224]
    ldr x30, [x0, #240]
    ldp x0, x1, [x0, #0]
    add sp, sp, #{frame_size}
    eret
"#,
    frame_size = const size_of::<Frame>(),
    stack_size = const STACK_SIZE,
);

/// Each CPU's EL2 stack (the linker script reserves [`MAX_CPUS`] of them below __stack_top).
pub const STACK_SIZE: usize = 0x1_0000;
/// CPUs the host can run: QEMU virt with GICv3 puts 16 in a cluster (MPIDR Aff0 = index % 16,
/// Aff1 = index / 16) and its redistributor region holds 123; the linker script reserves a stack
/// for each of these.
pub const MAX_CPUS: u32 = 96;

unsafe extern "C" {
    static mut invm_el2_l1: [u64; 512];
    fn invm_enter(frame: *const Frame, stack_top: *const u8) -> !;
    static __stack_top: u8;
    fn invm_secondary_entry();
}

/// Gives the host's own EL2 map the RAM above 4 GiB (the static map covers the low 4 GiB): a
/// 1 GiB Normal block (as blocks 1-3) for every GiB that holds some of `ram`, so the model can
/// read and write the guest's RAM there. On the boot CPU, before any other CPU starts and
/// before anything touches that RAM; the blocks were invalid, so no TLB holds them.
pub fn map_high_ram(ram: &[core::ops::Range<u64>]) -> Result<(), &'static str> {
    const GIB: u64 = 1 << 30;
    let table = (&raw mut invm_el2_l1).cast::<u64>();
    for r in ram.iter().filter(|r| r.end > 4 * GIB) {
        if r.end > 512 * GIB {
            return Err("guest RAM beyond the host's 512 GiB address space");
        }
        for gib in (r.start / GIB).max(4)..r.end.div_ceil(GIB) {
            // SAFETY: an entry of the host's level-1 table (gib < 512), which only this CPU
            // uses so far; block `gib` was invalid, nothing refers to its memory.
            unsafe { table.add(gib as usize).write_volatile((gib * GIB) | 0x705) };
        }
    }
    // SAFETY: barriers: the new entries are visible to this CPU's walker (and later CPUs').
    unsafe { core::arch::asm!("dsb ish", "isb", options(nostack)) };
    Ok(())
}

/// This CPU's index (TPIDR_EL2, set at its entry): the VP it runs.
pub fn cpu() -> u32 {
    let cpu: u64;
    // SAFETY: reads the host's own per-CPU register.
    unsafe { core::arch::asm!("mrs {}, tpidr_el2", out(reg) cpu, options(nomem, nostack)) };
    cpu as u32
}

/// Starts CPU `index` at the host's secondary entry with PSCI CPU_ON (SMC conduit): it runs
/// `invm_secondary(index)` on its own stack. Returns the PSCI status (0: on its way).
pub fn cpu_on(index: u32) -> i64 {
    const CPU_ON_64: u64 = 0xC400_0003;
    // MPIDR of CPU `index` on QEMU virt with GICv3: Aff0 = index % 16, Aff1 = index / 16.
    let mpidr = u64::from(index % 16) | u64::from(index / 16) << 8;
    let entry = invm_secondary_entry as *const () as u64;
    let ret: u64;
    // SAFETY: PSCI CPU_ON to QEMU's firmware; the new CPU starts at the host's own entry with
    // a stack slot of its own (index < MAX_CPUS, checked by the caller).
    unsafe {
        core::arch::asm!("smc #0", inout("x0") CPU_ON_64 => ret, in("x1") mpidr, in("x2") entry,
            in("x3") u64::from(index), options(nomem, nostack));
    }
    ret as i64
}

/// Written at the bottom of each CPU's stack when it enters its guest; an exit that finds it
/// changed ran off the end of its stack (into the next CPU's).
const STACK_CANARY: u64 = 0x5354_4143_4b5f_454e;

/// The lowest word of CPU `cpu`'s stack slot.
fn stack_floor(cpu: u32) -> *mut u64 {
    (&raw const __stack_top)
        .wrapping_byte_sub((cpu as usize + 1) * STACK_SIZE)
        .cast::<u64>()
        .cast_mut()
}

/// Whether this CPU's stack has stayed within its slot so far (its canary is intact).
pub fn stack_intact() -> bool {
    // SAFETY: an aligned word of this CPU's own stack slot, written by `enter`.
    unsafe { stack_floor(cpu()).read_volatile() == STACK_CANARY }
}

/// A CPU with nothing more to run waits here for ever (the run ends from another CPU).
/// Waits for an event (`wfe`): another CPU's [`send_event`], or any other wake-up.
pub fn wait_for_event() {
    // SAFETY: waits for an event; touches nothing.
    unsafe { core::arch::asm!("wfe", options(nomem, nostack)) };
}

/// Wakes every CPU waiting in `wfe` (`dsb` first: the flag it waits for is visible).
pub fn send_event() {
    // SAFETY: a barrier and an event to every CPU; touches nothing.
    unsafe { core::arch::asm!("dsb ish", "sev", options(nostack)) };
}

pub fn park() -> ! {
    loop {
        // SAFETY: waits for an event; touches nothing.
        unsafe { core::arch::asm!("wfe", options(nomem, nostack)) };
    }
}

/// Enters the guest with `frame` (its X0..X30, ELR_EL2 = entry PC, SPSR_EL2 = its PSTATE).
/// The host's stack starts afresh: from here on the host runs only in exits, each on a frame
/// at the top of the stack.
///
/// # Safety
///
/// EL2 must be set up for the guest (HCR_EL2, stage 2, VBAR_EL2): after `eret` the host's state
/// is only what the vectors see.
pub unsafe fn enter(frame: &Frame) -> ! {
    let top = (&raw const __stack_top).wrapping_byte_sub(cpu() as usize * STACK_SIZE);
    // SAFETY: the lowest word of this CPU's own stack slot, far below anything in use now.
    unsafe { stack_floor(cpu()).write_volatile(STACK_CANARY) };
    // SAFETY: the caller set up EL2; `top` is the top of this CPU's own stack slot, and nothing
    // on the old stack is used again.
    unsafe { invm_enter(frame, top) }
}
