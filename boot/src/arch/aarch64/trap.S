/* aarch64 exception vectors: each of the 16 makes room for a TrapFrame, saves X0/X1 and passes
   its number; vector_common stores the rest at the frame_* offsets the compiler gives it and
   calls the Rust handler. */

    .section .text.vectors, "ax"
    .balign 0x800
    .global boot_vectors
boot_vectors:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    .balign 0x80
    sub sp, sp, #{frame_size}
    stp x0, x1, [sp, #{frame_x0}]
    mov x0, #\n
    b vector_common
    .endr

vector_common:
    stp x2, x3, [sp, #{frame_x2}]
    stp x4, x5, [sp, #{frame_x4}]
    stp x6, x7, [sp, #{frame_x6}]
    stp x8, x9, [sp, #{frame_x8}]
    stp x10, x11, [sp, #{frame_x10}]
    stp x12, x13, [sp, #{frame_x12}]
    stp x14, x15, [sp, #{frame_x14}]
    stp x16, x17, [sp, #{frame_x16}]
    stp x18, x19, [sp, #{frame_x18}]
    stp x20, x21, [sp, #{frame_x20}]
    stp x22, x23, [sp, #{frame_x22}]
    stp x24, x25, [sp, #{frame_x24}]
    stp x26, x27, [sp, #{frame_x26}]
    stp x28, x29, [sp, #{frame_x28}]
    mrs x2, elr_el1
    mrs x3, spsr_el1
    str x30, [sp, #{frame_x30}]
    str x2, [sp, #{frame_elr}]
    str x3, [sp, #{frame_spsr}]
    mov x1, sp
    bl boot_aarch64_trap
    udf #0
