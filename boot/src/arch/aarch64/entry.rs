//! aarch64 entry code: drop from EL2 when entered there, turn the MMU on over a static
//! identity map (RAM must be Normal memory: with the MMU off every access is Device memory and
//! unaligned or exclusive accesses fault), zero BSS, and call into Rust.
#![expect(
    unsafe_code,
    reason = "the EL2 drop, MMU enable and vectors are global_asm!"
)]

core::arch::global_asm!(
    r#"
    .section .data.pagetables, "aw"
    /* Level-1 table (the root: T0SZ = 25, a 512 GiB space): 1 GiB blocks. Block 0 (devices,
       UART) is Device-nGnRnE and never executable; blocks 1-3 (RAM) are Normal write-back.
       Entries 4-511 start invalid; boot::paging fills them for the reported RAM only. */
    .balign 4096
    .global boot_l1
boot_l1:
    .quad 0x0000000000000401 | (3 << 53)
    .quad 0x0000000040000705
    .quad 0x0000000080000705
    .quad 0x00000000c0000705
    .fill 508, 8, 0

    .section .text.boot, "ax"
    .global _start
_start:
    mov x20, x0                  /* device tree, or the IGVM parameters' offset (boot::igvm) */
    mrs x19, CurrentEL
    lsr x19, x19, #2
    cmp x19, #2
    b.ne 1f
    /* EL2: run EL1 in AArch64, let it use the timers, enter it with interrupts masked. Our
       own EL2 stays behind as "no hypervisor": an hvc from EL1 gets SMCCC NOT_SUPPORTED. */
    adr x1, boot_el2_vectors
    msr vbar_el2, x1
    mov x1, #(1 << 31)
    msr hcr_el2, x1
    mov x1, #3
    msr cnthctl_el2, x1
    msr cntvoff_el2, xzr
    mov x1, #0x3c5
    msr spsr_el2, x1
    adr x1, 1f
    msr elr_el2, x1
    eret
1:
    bl boot_mmu_on
    /* Where the loader put us, before anything reads a stored address (boot::reloc; uses
       x9-x13 only). */
    bl boot_relocate
    adrp x1, __bss_start
    add x1, x1, :lo12:__bss_start
    adrp x2, __bss_end
    add x2, x2, :lo12:__bss_end
2:  cmp x1, x2
    b.hs 3f
    str xzr, [x1], #8
    b 2b
3:
    adrp x1, {stacks}
    add x1, x1, :lo12:{stacks}
    ldr x2, ={stack_size}
    add sp, x1, x2
    bl boot_install_vectors
    mov x0, x20
    mov x1, x19
    bl boot_aarch64_main
    udf #0

    .global boot_ap_start
boot_ap_start:
    /* An AP at EL1, sp = the top of its boot stack (from its initial context). */
    bl boot_mmu_on
    bl boot_install_vectors
    mov x0, sp
    bl boot_ap_main
    udf #0

    /* EL2 vectors left behind when entered at EL2: every exception (only an hvc from EL1 can
       arrive) returns -1 in x0, what SMCCC firmware answers an unknown call with. */
    .balign 0x800
boot_el2_vectors:
    .rept 16
    .balign 0x80
    mov x0, #-1
    eret
    .endr

boot_mmu_on:
    ldr x1, =0xff00              /* attr0 Device-nGnRnE, attr1 Normal WB */
    msr mair_el1, x1
    /* T0SZ 25 (the walk starts at level 1, boot_l1), inner/outer WB WA, inner shareable, 4K
       granule, no TTBR1 walks; IPS = PARange, at most 48 bits (0b101: 52 needs FEAT_LPA2). */
    ldr x1, =(25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23))
    mrs x2, id_aa64mmfr0_el1
    and x2, x2, #0xf
    mov x3, #5
    cmp x2, x3
    csel x2, x2, x3, ls
    orr x1, x1, x2, lsl #32
    msr tcr_el1, x1
    adrp x1, boot_l1
    msr ttbr0_el1, x1
    dsb ish
    isb
    tlbi vmalle1
    dsb nsh
    isb
    ldr x1, =(0x30d00800 | (1 << 0) | (1 << 2) | (1 << 12))   /* RES1 bits, M, C, I */
    msr sctlr_el1, x1
    isb
    ret

boot_install_vectors:
    adrp x1, boot_vectors
    add x1, x1, :lo12:boot_vectors
    msr vbar_el1, x1
    isb
    ret
    "#,
    stacks = sym crate::stacks::BOOT_STACK,
    stack_size = const crate::BOOT_STACK_SIZE,
);

unsafe extern "C" {
    fn boot_install_vectors();
}

pub(super) fn install_vectors() {
    // SAFETY: only writes VBAR_EL1 with this image's vector table.
    unsafe { boot_install_vectors() }
}
