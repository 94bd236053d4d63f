/* aarch64 hypercall sites: SMCCC `hvc #0` (TLFS hypercall-interface.md, "Hypercall calling
   conventions" on ARM64). */

    /* X0..X17 from (\op ldp) or to (\op stp) the 18-word array at \base. */
    .macro x0_x17 op, base
    \op x0, x1, [\base, #0]
    \op x2, x3, [\base, #16]
    \op x4, x5, [\base, #32]
    \op x6, x7, [\base, #48]
    \op x8, x9, [\base, #64]
    \op x10, x11, [\base, #80]
    \op x12, x13, [\base, #96]
    \op x14, x15, [\base, #112]
    \op x16, x17, [\base, #128]
    .endm

    .section .text.hvcall, "ax"
    .global pv_hvc_fast6
pv_hvc_fast6:                    /* (function id, control, words: *const [u64; 6]) -> x0 */
    ldp x4, x5, [x2, #16]
    ldp x6, x7, [x2, #32]
    ldp x2, x3, [x2]
    hvc #0
    ret

    .global pv_hvc_smccc
pv_hvc_smccc:                    /* (regs: *mut [u64; 18]): x0..x17 in and out */
    stp x19, x30, [sp, #-16]!
    mov x19, x0
    x0_x17 ldp, x19
    hvc #0
    x0_x17 stp, x19
    ldp x19, x30, [sp], #16
    ret
