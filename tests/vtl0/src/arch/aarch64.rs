//! aarch64: EL1 entry (own identity map with the MMU on: 0-1 GiB Device-nGnRnE, 1-2 GiB normal
//! write-back in 2 MiB blocks, the rest unmapped but for the place window's page at 3 GiB while
//! a place entry runs), VBAR_EL1 vectors, PL011, PSCI power-off, the SMCCC vendor UID check and
//! guest OS id registration, the probes' assembly with their recovery labels, and the EL0 and
//! `hvc #imm` stubs.
#![expect(
    unsafe_code,
    reason = "entry, page tables, vectors, MMIO and hvc are assembly"
)]

use super::{canaried, CallDone, POOL_BYTES};
use crate::recovery::{Recovery, RECOVERY};
use crate::say;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU32, Ordering};
use hvdef::aarch64::{HV_VENDOR_HYP_UID, SMCCC_HV_FUNC_ID, SMCCC_VENDOR_HYP_UID};
use hvdef::{Control, HvRegisterName, HypercallCode, HV_PARTITION_ID_SELF, HV_VP_INDEX_SELF};
use vtl0::{is_fast, Arch, Fault, Mode, VtlEntry, ARM64_BLOCK};

pub const ARCH: Arch = Arch::Aarch64;

/// The place window's virtual address: level-1 entry 3 (3 GiB), its one level-3 entry the
/// window (`vtl0_window_l3[0]`).
const WINDOW: u64 = 0xc000_0000;

unsafe extern "C" {
    static mut vtl0_window_l3: [u64; 512];
}

/// Maps the window onto the 4 KiB page at `page_gpa` (Normal write-back, AttrIndx 1, inner
/// shareable, AF, never executable) and returns its address.
pub fn open_window(page_gpa: u64) -> u64 {
    set_window(page_gpa | 0x0060_0000_0000_0707);
    WINDOW
}

/// Unmaps the window (a later access there is a level-3 translation fault).
pub fn close_window() {
    set_window(0);
}

fn set_window(entry: u64) {
    // SAFETY: the window's own level-3 entry, used by nothing but the window (one VP at a
    // time: `kernel::place` holds its lock); the barriers and the invalidation by VA (inner
    // shareable: every CPU's) drop the old translation.
    unsafe {
        (&raw mut vtl0_window_l3)
            .cast::<u64>()
            .write_volatile(entry);
        core::arch::asm!(
            "dsb ishst",
            "tlbi vaae1is, {va}",
            "dsb ish",
            "isb",
            va = in(reg) WINDOW >> 12,
            options(nostack)
        );
    }
}

const PL011: usize = 0x0900_0000;
const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
const PSCI_SYSTEM_RESET: u64 = 0x8400_0009;

/// Everything the hypercall trampoline loads before `hvc #0` and stores after it.
#[repr(C)]
struct HcRegs {
    x_in: [u64; 31],
    x_out: [u64; 31],
}

core::arch::global_asm!(
    r#"
    .section .data.pagetables, "aw"
    .balign 4096
    /* Level-1 table (TCR T0SZ = 32: 4 GiB, the walk starts at level 1):
       0: a 1 GiB block, Device-nGnRnE (AttrIndx 0), AF, PXN | UXN  (the PL011 at 0x09000000)
       1: the level-2 table of RAM at 0x40000000
       2: invalid (a level-1 translation fault);
       3: a table for the place window at 0xc0000000 (`open_window`), its one page. */
vtl0_l1:
    .quad 0x0060000000000401
    .quad vtl0_l2 + 0x3
    .quad 0
    .quad vtl0_window_l2 + 0x3
    .fill 508, 8, 0
    /* Level 2: 2 MiB blocks of Normal WB (AttrIndx 1), inner shareable, AF, EL1 read-write
       (AP 00: no EL0 data access; EL0 may still fetch, UXN clear), for 0x40000000..0x80000000.
       An EL0 probe opens its block to EL0 data access for the probe (AP 01). */
    .global vtl0_l2
vtl0_l2:
    .set block, 0
    .rept 512
    .quad 0x40000000 + (block << 21) + 0x705
    .set block, block + 1
    .endr
vtl0_window_l2:
    .quad vtl0_window_l3 + 0x3
    .fill 511, 8, 0
    .global vtl0_window_l3
vtl0_window_l3:
    .fill 512, 8, 0

    /* The registers at the entry point (vtl0::Arch::entry_registers): in .data, not .bss,
       which is zeroed after they are stored. */
    .section .data.vtl0_entry, "aw"
    .balign 16
    .global vtl0_entry_regs
vtl0_entry_regs:
    .fill 32, 8, 0

    .section .bss.vtl0_stack, "aw", @nobits
    .balign 16
vtl0_stack:
    .skip 0x10000
vtl0_stack_top:

    .section .text.boot, "ax"
    .global vtl0_start
vtl0_start:
    /* Before anything else: the registers as the kernel found them. X0 waits in TPIDR_EL1
       (the kernel's own, unused) while it holds the slots' address. */
    msr tpidr_el1, x0
    adrp x0, vtl0_entry_regs
    add x0, x0, :lo12:vtl0_entry_regs
    str x1, [x0, #8]
    stp x2, x3, [x0, #16]
    stp x4, x5, [x0, #32]
    stp x6, x7, [x0, #48]
    stp x8, x9, [x0, #64]
    stp x10, x11, [x0, #80]
    stp x12, x13, [x0, #96]
    stp x14, x15, [x0, #112]
    stp x16, x17, [x0, #128]
    stp x18, x19, [x0, #144]
    stp x20, x21, [x0, #160]
    stp x22, x23, [x0, #176]
    stp x24, x25, [x0, #192]
    stp x26, x27, [x0, #208]
    stp x28, x29, [x0, #224]
    str x30, [x0, #240]
    mrs x1, tpidr_el1
    str x1, [x0]
    mov x1, sp
    str x1, [x0, #248]
    msr tpidr_el1, xzr
    /* EL1h, MMU off, DAIF masked (mask again: it costs nothing). */
    msr daifset, #0xf
    adrp x0, vtl0_stack_top
    add x0, x0, :lo12:vtl0_stack_top
    mov sp, x0
    adrp x0, vtl0_vectors
    add x0, x0, :lo12:vtl0_vectors
    msr vbar_el1, x0
    isb
    adrp x0, __bss_start
    add x0, x0, :lo12:__bss_start
    adrp x1, __bss_end
    add x1, x1, :lo12:__bss_end
1:  cmp x0, x1
    b.hs 2f
    str xzr, [x0], #8
    b 1b
2:
    /* MAIR: attr0 Device-nGnRnE, attr1 Normal WB RW-allocate. */
    mov x0, #0xff00
    msr mair_el1, x0
    /* TCR: T0SZ 32, IRGN0/ORGN0 WB, SH0 inner, TG0 4K, EPD1 (no TTBR1 walks), IPS 36 bits. */
    ldr x0, =0x100803520
    msr tcr_el1, x0
    adrp x0, vtl0_l1
    add x0, x0, :lo12:vtl0_l1
    msr ttbr0_el1, x0
    isb
    tlbi vmalle1
    dsb ish
    isb
    /* SCTLR: a known value, not what the loader left: the v8.0 RES1 bits (29, 28, 23, 22,
       20, 11) | I | C | M; little-endian, no alignment checks (A, SA off), no WXN. */
    ldr x0, =0x30d01805
    msr sctlr_el1, x0
    isb
    mov x29, #0
    mov x30, #0
    bl {main}
3:  wfi
    b 3b

    /* Another VP, started by HvCallStartVirtualProcessor at EL1h with the kernel's MMU
       settings, vectors and its own stack (`start_vp`). */
    .global vtl0_ap_start
vtl0_ap_start:
    msr daifset, #0xf
    isb
    mov x29, #0
    mov x30, #0
    bl {ap_main}
6:  wfi
    b 6b

    .section .text.vtl0_vectors, "ax"
    .macro vtl0_unexpected_vec n
    .balign 128
    mov x3, #\n
    b vtl0_unexpected
    .endm
    .balign 2048
vtl0_vectors:
    vtl0_unexpected_vec 0
    vtl0_unexpected_vec 1
    vtl0_unexpected_vec 2
    vtl0_unexpected_vec 3
    .balign 128
    b vtl0_sync
    vtl0_unexpected_vec 5
    vtl0_unexpected_vec 6
    vtl0_unexpected_vec 7
    .balign 128
    b vtl0_sync_lower
    vtl0_unexpected_vec 9
    vtl0_unexpected_vec 10
    vtl0_unexpected_vec 11
    vtl0_unexpected_vec 12
    vtl0_unexpected_vec 13
    vtl0_unexpected_vec 14
    vtl0_unexpected_vec 15

    /* \rd = the running VP's recovery record, found from SP as smp::current does (VP n >= 1
       runs on AP stack n - 1, VP 0 elsewhere); \rt is clobbered. */
    .macro vtl0_my_record rd, rt
    mov \rd, sp
    adrp \rt, {stacks}
    add \rt, \rt, :lo12:{stacks}
    sub \rd, \rd, \rt
    ldr \rt, ={stacks_len}
    cmp \rd, \rt
    b.lo 1f
    mov \rd, #0
    b 2f
1:  lsr \rd, \rd, #{stack_shift}
    add \rd, \rd, #1
2:  mov \rt, #{rec_size}
    mul \rd, \rd, \rt
    adrp \rt, {rec}
    add \rt, \rt, :lo12:{rec}
    add \rd, \rd, \rt
    .endm

vtl0_sync_lower:
    /* Synchronous exception from EL0 (an EL0 entry's stub), on SP_EL1 as the VP's EL0 entry
       left it (its own stack). Its `svc #0` (EC 0x15) with an EL0 entry running on this VP
       (its recovery record's el0_return set): back to EL1h at that continuation with every
       register as EL0 left it (x0 and x1 kept on the stack meanwhile). Anything else is the
       entry's fault, recorded as at EL1. */
    stp x0, x1, [sp, #-16]!
    mrs x0, esr_el1
    lsr x0, x0, #26
    cmp x0, #0x15
    b.ne 6f
    vtl0_my_record x0, x1
    ldr x0, [x0, #{el0_return}]
    cbz x0, 6f
    msr elr_el1, x0
    mov x0, #0x3c5
    msr spsr_el1, x0
    ldp x0, x1, [sp], #16
    eret
6:  ldp x0, x1, [sp], #16

vtl0_sync:
    /* Synchronous exception at EL1h (or from EL0, above), on the running VP's recovery record
       (VP n >= 1 runs on AP stack n - 1, VP 0 elsewhere: smp::current; from EL0 the
       exception's SP_EL1 is the one the VP's EL0 entry left, on its own stack). A probe
       running on it (resume_pc set): record ESR/FAR, the faulting PC and X0 (the call's
       result register), and resume at its recovery label, at EL1h with DAIF masked, on its
       stack. Only x0-x2 are used (x0 kept on the stack meanwhile), so the callee-saved
       registers and the probe's x30 survive. */
    str x0, [sp, #-16]!
    vtl0_my_record x0, x1
    ldr x1, [x0, #{pc}]
    cbz x1, 4f
    ldr x2, [sp], #16
    str x2, [x0, #{result}]
    mrs x2, elr_el1
    str x2, [x0, #{ip}]
    mrs x2, esr_el1
    str x2, [x0, #{a}]
    mrs x2, far_el1
    str x2, [x0, #{b}]
    mov x2, #1
    str x2, [x0, #{faulted}]
    str xzr, [x0, #{pc}]
    msr elr_el1, x1
    mov x2, #0x3c5
    msr spsr_el1, x2
    ldr x2, [x0, #{sp}]
    mov sp, x2
    eret
4:  add sp, sp, #16
    /* kind 4: from EL1h; 8: from EL0. */
    mrs x3, spsr_el1
    tst x3, #0xf
    mov x3, #4
    mov x4, #8
    csel x3, x4, x3, eq
vtl0_unexpected:
    mrs x0, esr_el1
    mrs x1, elr_el1
    mrs x2, far_el1
    bl {unexpected}
5:  wfi
    b 5b

    .section .text.vtl0_probes, "ax"
    /* u64 vtl0_probe_read(u64 gpa, u32 width, struct Recovery *rec) */
    .global vtl0_probe_read
vtl0_probe_read:
    mov x3, x2
    adr x2, 9f
    str x2, [x3, #{pc}]
    mov x2, sp
    str x2, [x3, #{sp}]
    cmp w1, #1
    b.eq 1f
    cmp w1, #2
    b.eq 2f
    cmp w1, #4
    b.eq 4f
    ldr x0, [x0]
    b 5f
1:  ldrb w0, [x0]
    b 5f
2:  ldrh w0, [x0]
    b 5f
4:  ldr w0, [x0]
5:  str xzr, [x3, #{pc}]
9:  ret

    /* void vtl0_probe_write(u64 gpa, u64 value, u32 width, struct Recovery *rec) */
    .global vtl0_probe_write
vtl0_probe_write:
    adr x4, 9f
    str x4, [x3, #{pc}]
    mov x4, sp
    str x4, [x3, #{sp}]
    cmp w2, #1
    b.eq 1f
    cmp w2, #2
    b.eq 2f
    cmp w2, #4
    b.eq 4f
    str x1, [x0]
    b 5f
1:  strb w1, [x0]
    b 5f
2:  strh w1, [x0]
    b 5f
4:  str w1, [x0]
5:  str xzr, [x3, #{pc}]
9:  ret

    /* void vtl0_probe_exec(u64 gpa, struct Recovery *rec): branches there with a link; it
       may clobber anything but SP (`rec` waits in the frame). The instruction cache is
       invalidated first (a write probe may have put the code). */
    .global vtl0_probe_exec
vtl0_probe_exec:
    stp x29, x30, [sp, #-112]!
    stp x19, x20, [sp, #16]
    stp x21, x22, [sp, #32]
    stp x23, x24, [sp, #48]
    stp x25, x26, [sp, #64]
    stp x27, x28, [sp, #80]
    str x1, [sp, #96]
    mov x3, x1
    adr x2, 9f
    str x2, [x3, #{pc}]
    mov x2, sp
    str x2, [x3, #{sp}]
    dsb ish
    ic iallu
    dsb ish
    isb
    blr x0
    ldr x3, [sp, #96]
    str xzr, [x3, #{pc}]
9:  ldp x19, x20, [sp, #16]
    ldp x21, x22, [sp, #32]
    ldp x23, x24, [sp, #48]
    ldp x25, x26, [sp, #64]
    ldp x27, x28, [sp, #80]
    ldp x29, x30, [sp], #112
    ret

    /* void vtl0_hypercall(struct HcRegs *, struct Recovery *rec): loads X0-X30 from it,
       `hvc #0`, stores them all back (`rec` waits on the stack). The frame pointer and link
       register are saved on the stack, so they carry canaries too. */
    .global vtl0_hypercall
vtl0_hypercall:
    stp x29, x30, [sp, #-96]!
    stp x19, x20, [sp, #16]
    stp x21, x22, [sp, #32]
    stp x23, x24, [sp, #48]
    stp x25, x26, [sp, #64]
    stp x27, x28, [sp, #80]
    stp x0, x1, [sp, #-16]!
    adr x2, vtl0_hypercall_recover
    str x2, [x1, #{pc}]
    mov x2, sp
    str x2, [x1, #{sp}]
    mov x30, x0
    ldp x0, x1, [x30, #{xin} + 8 * 0]
    ldp x2, x3, [x30, #{xin} + 8 * 2]
    ldp x4, x5, [x30, #{xin} + 8 * 4]
    ldp x6, x7, [x30, #{xin} + 8 * 6]
    ldp x8, x9, [x30, #{xin} + 8 * 8]
    ldp x10, x11, [x30, #{xin} + 8 * 10]
    ldp x12, x13, [x30, #{xin} + 8 * 12]
    ldp x14, x15, [x30, #{xin} + 8 * 14]
    ldp x16, x17, [x30, #{xin} + 8 * 16]
    ldp x18, x19, [x30, #{xin} + 8 * 18]
    ldp x20, x21, [x30, #{xin} + 8 * 20]
    ldp x22, x23, [x30, #{xin} + 8 * 22]
    ldp x24, x25, [x30, #{xin} + 8 * 24]
    ldp x26, x27, [x30, #{xin} + 8 * 26]
    ldp x28, x29, [x30, #{xin} + 8 * 28]
    ldr x30, [x30, #{xin} + 8 * 30]
    hvc #0
    /* The rest (storing X0-X30 back, the recovery point) is vtl0_hypercall_at's: the frames
       are the same. */
    b vtl0_hypercall_at_done

    /* void vtl0_hypercall_at(struct HcRegs *, u64 stub, u64 spsr, struct Recovery *rec): as
       vtl0_hypercall, but the `hvc` is a stub's, entered with `eret` in the mode `spsr` names
       (EL1h, or EL0t) once every register is loaded. An EL1 stub branches to
       vtl0_hypercall_at_done after its `hvc`; an EL0 stub's `svc #0` comes back there
       through vtl0_sync_lower (the record's el0_return; `rec` waits on the stack). */
    .global vtl0_hypercall_at
vtl0_hypercall_at:
    stp x29, x30, [sp, #-96]!
    stp x19, x20, [sp, #16]
    stp x21, x22, [sp, #32]
    stp x23, x24, [sp, #48]
    stp x25, x26, [sp, #64]
    stp x27, x28, [sp, #80]
    stp x0, x3, [sp, #-16]!
    adr x4, vtl0_hypercall_recover
    str x4, [x3, #{pc}]
    mov x4, sp
    str x4, [x3, #{sp}]
    adr x4, vtl0_hypercall_at_done
    str x4, [x3, #{el0_return}]
    msr elr_el1, x1
    msr spsr_el1, x2
    mov x30, x0
    ldp x0, x1, [x30, #{xin} + 8 * 0]
    ldp x2, x3, [x30, #{xin} + 8 * 2]
    ldp x4, x5, [x30, #{xin} + 8 * 4]
    ldp x6, x7, [x30, #{xin} + 8 * 6]
    ldp x8, x9, [x30, #{xin} + 8 * 8]
    ldp x10, x11, [x30, #{xin} + 8 * 10]
    ldp x12, x13, [x30, #{xin} + 8 * 12]
    ldp x14, x15, [x30, #{xin} + 8 * 14]
    ldp x16, x17, [x30, #{xin} + 8 * 16]
    ldp x18, x19, [x30, #{xin} + 8 * 18]
    ldp x20, x21, [x30, #{xin} + 8 * 20]
    ldp x22, x23, [x30, #{xin} + 8 * 22]
    ldp x24, x25, [x30, #{xin} + 8 * 24]
    ldp x26, x27, [x30, #{xin} + 8 * 26]
    ldp x28, x29, [x30, #{xin} + 8 * 28]
    ldr x30, [x30, #{xin} + 8 * 30]
    eret
    .global vtl0_hypercall_at_done
vtl0_hypercall_at_done:
    str x30, [sp, #-16]!
    ldr x30, [sp, #16]
    stp x0, x1, [x30, #{xout} + 8 * 0]
    stp x2, x3, [x30, #{xout} + 8 * 2]
    stp x4, x5, [x30, #{xout} + 8 * 4]
    stp x6, x7, [x30, #{xout} + 8 * 6]
    stp x8, x9, [x30, #{xout} + 8 * 8]
    stp x10, x11, [x30, #{xout} + 8 * 10]
    stp x12, x13, [x30, #{xout} + 8 * 12]
    stp x14, x15, [x30, #{xout} + 8 * 14]
    stp x16, x17, [x30, #{xout} + 8 * 16]
    stp x18, x19, [x30, #{xout} + 8 * 18]
    stp x20, x21, [x30, #{xout} + 8 * 20]
    stp x22, x23, [x30, #{xout} + 8 * 22]
    stp x24, x25, [x30, #{xout} + 8 * 24]
    stp x26, x27, [x30, #{xout} + 8 * 26]
    stp x28, x29, [x30, #{xout} + 8 * 28]
    ldr x0, [sp], #16
    str x0, [x30, #{xout} + 8 * 30]
    ldr x1, [sp, #8]
    str xzr, [x1, #{pc}]
    /* Where a fault during either call resumes (the recovery record's pc). */
vtl0_hypercall_recover:
    add sp, sp, #16
    ldp x19, x20, [sp, #16]
    ldp x21, x22, [sp, #32]
    ldp x23, x24, [sp, #48]
    ldp x25, x26, [sp, #64]
    ldp x27, x28, [sp, #80]
    ldp x29, x30, [sp], #96
    ret

    /* The `hvc` stubs by immediate: EL1 ones branch back, EL0 ones come back by `svc #0`
       (their page is EL0-executable: the RAM block is UXN-clear). */
    .balign 8
    .global vtl0_hvc_el1_0, vtl0_hvc_el1_2, vtl0_hvc_el1_3
vtl0_hvc_el1_0:
    hvc #0
    b vtl0_hypercall_at_done
vtl0_hvc_el1_2:
    hvc #2
    b vtl0_hypercall_at_done
vtl0_hvc_el1_3:
    hvc #3
    b vtl0_hypercall_at_done
    .global vtl0_hvc_el0_0, vtl0_hvc_el0_2, vtl0_hvc_el0_3
vtl0_hvc_el0_0:
    hvc #0
    svc #0
vtl0_hvc_el0_2:
    hvc #2
    svc #0
vtl0_hvc_el0_3:
    hvc #3
    svc #0

    /* u64 vtl0_probe_el0(u64 gpa, u64 value, u64 stub, struct Recovery *rec): runs an EL0
       probe stub in EL0t (DAIF masked) with x0 = gpa, x1 = value; its `svc #0` comes back
       (the record's el0_return) with x0 (a load's value). The callee-saved registers are
       saved around it (an exec target may clobber them; `rec` waits in the frame). */
    .global vtl0_probe_el0
vtl0_probe_el0:
    stp x29, x30, [sp, #-112]!
    stp x19, x20, [sp, #16]
    stp x21, x22, [sp, #32]
    stp x23, x24, [sp, #48]
    stp x25, x26, [sp, #64]
    stp x27, x28, [sp, #80]
    str x3, [sp, #96]
    adr x4, 9f
    str x4, [x3, #{pc}]
    mov x4, sp
    str x4, [x3, #{sp}]
    adr x4, 7f
    str x4, [x3, #{el0_return}]
    dsb ish
    ic iallu
    dsb ish
    isb
    msr elr_el1, x2
    mov x4, #0x3c0
    msr spsr_el1, x4
    eret
7:  ldr x3, [sp, #96]
    str xzr, [x3, #{pc}]
9:  ldp x19, x20, [sp, #16]
    ldp x21, x22, [sp, #32]
    ldp x23, x24, [sp, #48]
    ldp x25, x26, [sp, #64]
    ldp x27, x28, [sp, #80]
    ldp x29, x30, [sp], #112
    ret

    /* The EL0 probe stubs: one access, then `svc #0`. The exec stub calls the GPA with x30 on
       its own `svc #0`, so a `ret` there comes back too. */
    .balign 8
    .global vtl0_el0_read1, vtl0_el0_read2, vtl0_el0_read4, vtl0_el0_read8
vtl0_el0_read1:
    ldrb w0, [x0]
    svc #0
vtl0_el0_read2:
    ldrh w0, [x0]
    svc #0
vtl0_el0_read4:
    ldr w0, [x0]
    svc #0
vtl0_el0_read8:
    ldr x0, [x0]
    svc #0
    .global vtl0_el0_write1, vtl0_el0_write2, vtl0_el0_write4, vtl0_el0_write8
vtl0_el0_write1:
    strb w1, [x0]
    svc #0
vtl0_el0_write2:
    strh w1, [x0]
    svc #0
vtl0_el0_write4:
    str w1, [x0]
    svc #0
vtl0_el0_write8:
    str x1, [x0]
    svc #0
    .global vtl0_el0_exec
vtl0_el0_exec:
    blr x0
    svc #0
    "#,
    main = sym crate::kernel::main,
    ap_main = sym crate::kernel::ap_main,
    unexpected = sym unexpected_exception,
    rec = sym RECOVERY,
    stacks = sym crate::smp::AP_STACKS,
    stacks_len = const crate::smp::AP_STACKS_LEN,
    stack_shift = const crate::smp::AP_STACK_SHIFT,
    rec_size = const size_of::<Recovery>(),
    pc = const offset_of!(Recovery, resume_pc),
    sp = const offset_of!(Recovery, resume_sp),
    faulted = const offset_of!(Recovery, faulted),
    a = const offset_of!(Recovery, a),
    b = const offset_of!(Recovery, b),
    ip = const offset_of!(Recovery, ip),
    result = const offset_of!(Recovery, result),
    el0_return = const offset_of!(Recovery, el0_return),
    xin = const offset_of!(HcRegs, x_in),
    xout = const offset_of!(HcRegs, x_out),
);

unsafe extern "C" {
    static vtl0_entry_regs: [u64; 32];
    fn vtl0_ap_start();
    fn vtl0_probe_read(gpa: u64, width: u32, rec: &Recovery) -> u64;
    fn vtl0_probe_write(gpa: u64, value: u64, width: u32, rec: &Recovery);
    fn vtl0_probe_exec(gpa: u64, rec: &Recovery);
    fn vtl0_hypercall(regs: *mut HcRegs, rec: &Recovery);
    fn vtl0_hypercall_at(regs: *mut HcRegs, stub: u64, spsr: u64, rec: &Recovery);
    fn vtl0_probe_el0(gpa: u64, value: u64, stub: u64, rec: &Recovery) -> u64;
    fn vtl0_hvc_el1_0();
    fn vtl0_hvc_el1_2();
    fn vtl0_hvc_el1_3();
    fn vtl0_hvc_el0_0();
    fn vtl0_hvc_el0_2();
    fn vtl0_hvc_el0_3();
    fn vtl0_el0_read1();
    fn vtl0_el0_read2();
    fn vtl0_el0_read4();
    fn vtl0_el0_read8();
    fn vtl0_el0_write1();
    fn vtl0_el0_write2();
    fn vtl0_el0_write4();
    fn vtl0_el0_write8();
    fn vtl0_el0_exec();
    static mut vtl0_l2: [u64; 512];
}

/// The registers as the entry code stored them, in `Arch::entry_registers` order.
pub fn entry_registers() -> [u64; 32] {
    // SAFETY: written only by the entry code (MMU off, before any Rust runs); read by value.
    unsafe { core::ptr::addr_of!(vtl0_entry_regs).read_volatile() }
}

/// The IDT entry is x86_64's: `parse_table` refuses it here, so this is never reached.
pub fn idt_and_ud(_base: u64, _limit: u16) -> ! {
    say!("bad table: an IDT entry on aarch64");
    power_off(false)
}

/// SPSR of EL1h and of EL0t, DAIF masked.
const SPSR_EL1H: u64 = 0x3c5;
const SPSR_EL0T: u64 = 0x3c0;

/// An exception outside any probe (`kind`: the vector table slot, 4 = synchronous at EL1h):
/// one line, then a failing power-off.
extern "C" fn unexpected_exception(esr: u64, elr: u64, far: u64, kind: u64) -> ! {
    say!("unexpected exception kind={kind} esr={esr:#x} elr={elr:#x} far={far:#x}");
    power_off(false)
}

/// The fault a probe recorded: ESR_EL1, FAR_EL1.
pub fn fault(esr: u64, far: u64, _: u64) -> Fault {
    Fault::Arm64 { esr, far }
}

pub fn putc(b: u8) {
    let dr = PL011 as *mut u32;
    let fr = (PL011 + 0x18) as *const u32;
    // SAFETY: the PL011's data and flag registers, mapped Device-nGnRnE by the kernel's
    // tables; nothing else uses the UART.
    unsafe {
        while core::ptr::read_volatile(fr) & (1 << 5) != 0 {}
        core::ptr::write_volatile(dr, u32::from(b));
    }
}

/// SMCCC call through `hvc #0` with no canaries (power-off).
fn psci(function: u64) {
    // SAFETY: a PSCI call: SYSTEM_OFF / SYSTEM_RESET do not return on success; on failure
    // x0-x3 come back changed, which the operands declare.
    unsafe {
        core::arch::asm!(
            "hvc #0",
            inout("x0") function => _,
            out("x1") _, out("x2") _, out("x3") _,
            options(nostack)
        )
    };
}

/// PSCI SYSTEM_OFF (pass; standalone QEMU exits 0) or SYSTEM_RESET (fail; with `-no-reboot`
/// QEMU also exits 0, a hypervisor tells them apart; the console says `vtl0: done` only on
/// pass). Then wait forever.
pub fn power_off(pass: bool) -> ! {
    psci(if pass {
        PSCI_SYSTEM_OFF
    } else {
        PSCI_SYSTEM_RESET
    });
    loop {
        // SAFETY: waits for an interrupt that never comes (DAIF masked); touches no memory.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}

/// Why there is no Hyper-V interface.
pub enum NoHyperV {
    /// The SMCCC vendor UID query answered this (x0..x3).
    Uid([u64; 4]),
    Faulted(Fault),
    /// The fast HvCallSetVpRegisters of the guest OS id failed with this result.
    GuestOsId(u64),
}

impl core::fmt::Display for NoHyperV {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NoHyperV::Uid(x) => write!(
                f,
                "SMCCC vendor UID {:#x} {:#x} {:#x} {:#x}",
                x[0], x[1], x[2], x[3]
            ),
            NoHyperV::Faulted(fault) => write!(f, "SMCCC vendor UID query {fault}"),
            NoHyperV::GuestOsId(r) => {
                write!(f, "setting the guest OS id failed with result {r:#x}")
            }
        }
    }
}

fn raw_call(x: &[u64]) -> Result<[u64; 31], Fault> {
    let mut r = HcRegs {
        x_in: [0; 31],
        x_out: [0; 31],
    };
    r.x_in[..x.len()].copy_from_slice(x);
    crate::recovery::arm();
    // SAFETY: the trampoline saves and restores the callee-saved registers and reads and
    // writes only `r`; a fault resumes at its recovery label.
    unsafe { vtl0_hypercall(&mut r, crate::recovery::mine()) };
    crate::recovery::take().map_or(Ok(r.x_out), Err)
}

/// TLFS guest setup on arm64 (as Linux does): the SMCCC vendor UID must be Hyper-V's, then the
/// guest OS id goes in with a fast HvCallSetVpRegisters of HvRegisterGuestOsId.
pub fn hyperv_init() -> Result<(), NoHyperV> {
    let x = raw_call(&[SMCCC_VENDOR_HYP_UID.into()]).map_err(NoHyperV::Faulted)?;
    let uid = [x[0], x[1], x[2], x[3]];
    // An SMC32 call: the result is in W0..W3.
    if uid.map(|r| r as u32) != HV_VENDOR_HYP_UID {
        return Err(NoHyperV::Uid(uid));
    }
    let control = Control::new()
        .with_code(HypercallCode::SET_VP_REGISTERS)
        .with_fast(true)
        .with_rep_count(1);
    let x = raw_call(&[
        SMCCC_HV_FUNC_ID.into(),
        control.into_bits(),
        HV_PARTITION_ID_SELF,
        HV_VP_INDEX_SELF.into(),
        HvRegisterName::GUEST_OS_ID.0.into(),
        0,
        vtl0::GUEST_OS_ID,
        0,
    ])
    .map_err(|_| NoHyperV::GuestOsId(u64::MAX))?;
    if x[0] & 0xffff != 0 {
        return Err(NoHyperV::GuestOsId(x[0]));
    }
    Ok(())
}

fn x_index(name: &str) -> Option<usize> {
    name.strip_prefix('x')?.parse().ok()
}

/// One hypercall (`hvc #0`, x0 = SMCCC_HV_FUNC_ID, x1 = control, x2/x3 = input/output GPAs or
/// the fast pool in x2..x17) with canaries in every register the call does not use (see
/// `Arch::canaries`).
pub fn hypercall(
    control: u64,
    pool: &[u8; POOL_BYTES],
    gpas: Option<(u64, u64)>,
) -> Result<CallDone, Fault> {
    call_via(None, control, pool, gpas)
}

/// Nothing to set up for a mode on aarch64.
pub fn prepare_mode(_vp: u32, _: Mode) {}

/// A hypercall in `mode` (see `vtl0::Mode`): the same registers as [`hypercall`], made through
/// the `hvc #imm` stub of the VTL entry, at EL1 or EL0.
pub fn hypercall_in(
    mode: Mode,
    control: u64,
    pool: &[u8; POOL_BYTES],
    gpas: Option<(u64, u64)>,
) -> Result<CallDone, Fault> {
    let stubs: [unsafe extern "C" fn(); 3] = if mode.el0 {
        [vtl0_hvc_el0_0, vtl0_hvc_el0_2, vtl0_hvc_el0_3]
    } else {
        [vtl0_hvc_el1_0, vtl0_hvc_el1_2, vtl0_hvc_el1_3]
    };
    let stub = match mode.vtl_entry {
        VtlEntry::Hypercall => stubs[0],
        VtlEntry::VtlCall => stubs[1],
        VtlEntry::VtlReturn => stubs[2],
    };
    let spsr = if mode.el0 { SPSR_EL0T } else { SPSR_EL1H };
    call_via(Some((stub as usize as u64, spsr)), control, pool, gpas)
}

/// The call through `vtl0_hypercall`, or with `via` (stub, SPSR) through `vtl0_hypercall_at`.
fn call_via(
    via: Option<(u64, u64)>,
    control: u64,
    pool: &[u8; POOL_BYTES],
    gpas: Option<(u64, u64)>,
) -> Result<CallDone, Fault> {
    let fast = is_fast(control);
    let mut r = HcRegs {
        x_in: core::array::from_fn(|i| vtl0::canary(i as u32)),
        x_out: [0; 31],
    };
    r.x_in[0] = SMCCC_HV_FUNC_ID.into();
    r.x_in[1] = control;
    if fast {
        for i in 0..16 {
            let mut w = [0u8; 8];
            w.copy_from_slice(&pool[i * 8..i * 8 + 8]);
            r.x_in[2 + i] = u64::from_le_bytes(w);
        }
    } else {
        let (input, output) = gpas.unwrap_or((ARCH.input_page(), ARCH.output_page()));
        r.x_in[2] = input;
        r.x_in[3] = output;
    }
    crate::recovery::arm();
    let rec = crate::recovery::mine();
    match via {
        // SAFETY: as in raw_call.
        None => unsafe { vtl0_hypercall(&mut r, rec) },
        // SAFETY: as in raw_call; the stub is one of the kernel's own (an `hvc` and the way
        // back), and the SPSR names EL1h or EL0t with DAIF masked.
        Some((stub, spsr)) => unsafe { vtl0_hypercall_at(&mut r, stub, spsr, rec) },
    }
    rec.el0_return.store(0, Ordering::SeqCst);
    if let Some(f) = crate::recovery::take() {
        return Err(f);
    }
    let mut done = CallDone::new(r.x_out[0]);
    for i in 0..16 {
        done.pool[i * 8..i * 8 + 8].copy_from_slice(&r.x_out[2 + i].to_le_bytes());
    }
    for name in canaried(fast) {
        if !x_index(name).is_some_and(|x| x < 31 && r.x_out[x] == r.x_in[x]) {
            done.canary_broken(name);
        }
    }
    Ok(done)
}

/// The virtual counter (CNTVCT_EL0), read after the instructions before it (`isb`).
pub fn counter() -> u64 {
    let v: u64;
    // SAFETY: reads a system register EL1 may read; touches no memory.
    unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) v, options(nomem, nostack)) };
    v
}

/// The counter's frequency in Hz (CNTFRQ_EL0).
pub fn counter_hz() -> u64 {
    let v: u64;
    // SAFETY: reads a system register EL1 may read; touches no memory.
    unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) v, options(nomem, nostack)) };
    v
}

pub fn probe_read(gpa: u64, width: u8) -> Result<u64, Fault> {
    crate::recovery::arm();
    // SAFETY: the probe may touch any address: a fault resumes at its recovery label. The
    // table entry asked for this access; the kernel's own state lives outside the scratch
    // page, and a probe that breaks the kernel is the table's choice.
    let value = unsafe { vtl0_probe_read(gpa, width.into(), crate::recovery::mine()) };
    crate::recovery::take().map_or(Ok(value), Err)
}

pub fn probe_write(gpa: u64, width: u8, value: u64) -> Result<(), Fault> {
    crate::recovery::arm();
    // SAFETY: as in probe_read.
    unsafe { vtl0_probe_write(gpa, value, width.into(), crate::recovery::mine()) };
    crate::recovery::take().map_or(Ok(()), Err)
}

pub fn probe_exec(gpa: u64) -> Result<(), Fault> {
    crate::recovery::arm();
    // SAFETY: as in probe_read; the callee-saved registers are saved around the branch.
    unsafe { vtl0_probe_exec(gpa, crate::recovery::mine()) };
    crate::recovery::take().map_or(Ok(()), Err)
}

/// The stack pointer (which VP runs: `smp::current`).
pub fn stack_pointer() -> u64 {
    let sp: u64;
    // SAFETY: reads SP; touches no memory.
    unsafe { core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack)) };
    sp
}

/// A VP done with its entries waits here for VP 0's power-off (`wfe`, which the hypervisor
/// does not trap; `wfi` would be a halt nothing wakes).
pub fn idle() -> ! {
    loop {
        // SAFETY: waits for an event; touches no memory.
        unsafe { core::arch::asm!("wfe", options(nomem, nostack)) };
    }
}

macro_rules! sysreg {
    ($name:literal) => {{
        let v: u64;
        // SAFETY: reads an EL1 system register; touches no memory.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $name), out(reg) v, options(nomem, nostack)) };
        v
    }};
}

/// Starts VP `vp`'s VTL0 with HvCallStartVirtualProcessor (TLFS; PSCI CPU_ON for a lower VTL
/// is blocked once a higher VTL is enabled, vsm.md): this VP's SCTLR, MAIR, TCR, TTBR0/1 and
/// VBAR (the MMU on over the same identity map), SP `stack_top`, PC the AP entry. The call's
/// status (0: started).
pub fn start_vp(vp: u32, stack_top: u64) -> Result<u64, Fault> {
    use hvdef::aarch64::HvArm64InputStartVirtualProcessor;
    use zerocopy::{FromZeros, IntoBytes};
    let mut input = HvArm64InputStartVirtualProcessor::new_zeroed();
    input.partition_id = HV_PARTITION_ID_SELF;
    input.vp_index = vp;
    input.target_vtl = 0;
    let c = &mut input.context;
    c.pc = vtl0_ap_start as *const () as u64;
    c.sp_elh = stack_top;
    c.sctlr_el1 = sysreg!("sctlr_el1");
    c.mair_el1 = sysreg!("mair_el1");
    c.tcr_el1 = sysreg!("tcr_el1");
    c.vbar_el1 = sysreg!("vbar_el1");
    c.ttbr0_el1 = sysreg!("ttbr0_el1");
    c.ttbr1_el1 = sysreg!("ttbr1_el1");
    let bytes = input.as_bytes();
    crate::mem::write(
        ARCH,
        ARCH.input_page(),
        bytes,
        vtl0::PAGE_SIZE - bytes.len(),
    );
    let control = Control::new().with_code(HypercallCode::START_VIRTUAL_PROCESSOR);
    let pool = [0u8; POOL_BYTES];
    let gpas = Some((ARCH.input_page(), ARCH.output_page()));
    hypercall(control.into_bits(), &pool, gpas).map(|done| done.result & 0xffff)
}

/// This VP's index as the hypervisor numbers it: HvRegisterVpIndex with a fast
/// HvCallGetVpRegisters, its value in X6 (the first register pair after the 24 input bytes),
/// as Linux's `hv_get_vpreg_128` reads it.
pub fn vp_index() -> Result<u32, &'static str> {
    let control = Control::new()
        .with_code(HypercallCode::GET_VP_REGISTERS)
        .with_fast(true)
        .with_rep_count(1);
    let x = raw_call(&[
        SMCCC_HV_FUNC_ID.into(),
        control.into_bits(),
        HV_PARTITION_ID_SELF,
        HV_VP_INDEX_SELF.into(),
        HvRegisterName::VP_INDEX.0.into(),
    ])
    .map_err(|_| "HvCallGetVpRegisters faulted")?;
    if x[0] & 0xffff != 0 {
        return Err("HvCallGetVpRegisters failed");
    }
    u32::try_from(x[6]).map_err(|_| "the index is over 32 bits")
}

/// AP[2:1] = 01 in a block descriptor: EL1 and EL0 read-write.
const AP_EL0_RW: u64 = 1 << 6;

/// The level-2 table's blocks.
const L2_BLOCKS: usize = 512;

/// How many EL0 probes (of any VP) have each level-2 block open right now; changed under
/// [`EL0_BLOCKS`] only.
static EL0_OPEN: [AtomicU32; L2_BLOCKS] = [const { AtomicU32::new(0) }; L2_BLOCKS];
/// The VPs share the level-2 table: one of them at a time changes a block's EL0 access.
static EL0_BLOCKS: crate::smp::Lock = crate::smp::Lock::new();

/// Opens (or closes) `gpa`'s 2 MiB block of the level-2 table to EL0 data access (the parser
/// checked the GPA is in the RAM the table maps, outside the kernel's own block). The VPs share
/// the table, so a block stays open while any VP's EL0 probe needs it: the first opening sets
/// the descriptor's EL0 access, the last closing clears it, each followed by an invalidation
/// of every CPU's TLB (inner shareable).
fn el0_block(gpa: u64, open: bool) {
    let index = ((gpa - 0x4000_0000) / ARM64_BLOCK) as usize;
    EL0_BLOCKS.with(|| {
        let users = &EL0_OPEN[index];
        let before = users.load(Ordering::Relaxed);
        let after = if open {
            before + 1
        } else {
            before.saturating_sub(1)
        };
        users.store(after, Ordering::Relaxed);
        if (before == 0) == (after == 0) {
            return;
        }
        // SAFETY: the kernel's own level-2 table, used by the MMU only (and changed here only,
        // under the lock); the entry stays a valid block descriptor of the same output
        // address, and every CPU's TLB is invalidated after.
        unsafe {
            let entry = core::ptr::addr_of_mut!(vtl0_l2[index]);
            let old = core::ptr::read_volatile(entry);
            let new = if open {
                old | AP_EL0_RW
            } else {
                old & !AP_EL0_RW
            };
            core::ptr::write_volatile(entry, new);
            core::arch::asm!(
                "dsb ishst",
                "tlbi vmalle1is",
                "dsb ish",
                "isb",
                options(nostack)
            );
        }
    })
}

/// An EL0 probe: `stub` in EL0t with x0 = `gpa`, x1 = `value`; x0 when it comes back.
fn el0_probe(gpa: u64, value: u64, stub: unsafe extern "C" fn(), open: bool) -> Result<u64, Fault> {
    if open {
        el0_block(gpa, true);
    }
    crate::recovery::arm();
    let rec = crate::recovery::mine();
    // SAFETY: the stub is one of the kernel's (one access, then `svc #0`); a fault comes back
    // to the recovery label at EL1; the access was asked for by the table (see probe_read).
    let v = unsafe { vtl0_probe_el0(gpa, value, stub as usize as u64, rec) };
    rec.el0_return.store(0, Ordering::SeqCst);
    if open {
        el0_block(gpa, false);
    }
    crate::recovery::take().map_or(Ok(v), Err)
}

/// A `width`-byte load from EL0 (its block opened to EL0 for it).
pub fn probe_read_el0(gpa: u64, width: u8) -> Result<u64, Fault> {
    let stub: unsafe extern "C" fn() = match width {
        1 => vtl0_el0_read1,
        2 => vtl0_el0_read2,
        4 => vtl0_el0_read4,
        _ => vtl0_el0_read8,
    };
    el0_probe(gpa, 0, stub, true)
}

/// A `width`-byte store from EL0 (its block opened to EL0 for it).
pub fn probe_write_el0(gpa: u64, width: u8, value: u64) -> Result<(), Fault> {
    let stub: unsafe extern "C" fn() = match width {
        1 => vtl0_el0_write1,
        2 => vtl0_el0_write2,
        4 => vtl0_el0_write4,
        _ => vtl0_el0_write8,
    };
    el0_probe(gpa, value, stub, true).map(|_| ())
}

/// A call to `gpa` from EL0: EL0 may fetch from every RAM block (UXN clear), so nothing opens.
pub fn probe_exec_el0(gpa: u64) -> Result<(), Fault> {
    el0_probe(gpa, 0, vtl0_el0_exec, false).map(|_| ())
}
