/* aarch64 VTL return, `hvc #3` (TLFS vsm.md): pv_vtl_return(regs: *mut Vtl0Registers). The
   regs_* operands are the offsets of VTL0's X registers in Vtl0Registers, from the compiler.

   VTL0 resumes with what X0-X17, X19-X28 (shared) and X29/X30 (carried, see Vtl0Registers)
   hold at the hvc, and VTL2 comes back with VTL0's in them. So: keep ours (the callee-saved
   X19..X30) on the private stack (SP is private), then the regs pointer below them, load
   VTL0's set with X0 as the base and X0 itself last. X18 is private. */

    /* VTL0's X2..X17 and X19..X30 as pairs, from / to the Vtl0Registers at \base. */
    .macro vtl0_pairs op, base
    \op x2, x3, [\base, #{regs_x2}]
    \op x4, x5, [\base, #{regs_x4}]
    \op x6, x7, [\base, #{regs_x6}]
    \op x8, x9, [\base, #{regs_x8}]
    \op x10, x11, [\base, #{regs_x10}]
    \op x12, x13, [\base, #{regs_x12}]
    \op x14, x15, [\base, #{regs_x14}]
    \op x16, x17, [\base, #{regs_x16}]
    \op x19, x20, [\base, #{regs_x19}]
    \op x21, x22, [\base, #{regs_x21}]
    \op x23, x24, [\base, #{regs_x23}]
    \op x25, x26, [\base, #{regs_x25}]
    \op x27, x28, [\base, #{regs_x27}]
    \op x29, x30, [\base, #{regs_x29}]
    .endm

    .section .text.hvcall, "ax"
    .global pv_vtl_return
pv_vtl_return:
    stp x29, x30, [sp, #-96]!
    stp x19, x20, [sp, #16]
    stp x21, x22, [sp, #32]
    stp x23, x24, [sp, #48]
    stp x25, x26, [sp, #64]
    stp x27, x28, [sp, #80]
    str x0, [sp, #-16]!          /* [sp] = regs; [sp, #8] is free until after the switch */
    ldr x1, [x0, #{regs_x1}]
    vtl0_pairs ldp, x0
    ldr x0, [x0, #{regs_x0}]
    hvc #3
    /* Every register but SP and X18 may hold VTL0's now: park VTL0's X0 in the free slot and
       make X0 the base again before any other is touched. */
    str x0, [sp, #8]
    ldr x0, [sp]
    str x1, [x0, #{regs_x1}]
    vtl0_pairs stp, x0
    ldr x1, [sp, #8]
    str x1, [x0, #{regs_x0}]
    add sp, sp, #16
    ldp x19, x20, [sp, #16]
    ldp x21, x22, [sp, #32]
    ldp x23, x24, [sp, #48]
    ldp x25, x26, [sp, #64]
    ldp x27, x28, [sp, #80]
    ldp x29, x30, [sp], #96
    ret
