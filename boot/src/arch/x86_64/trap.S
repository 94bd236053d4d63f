/* x86_64 exception entry (AT&T syntax): one stub per vector pushes an error code where the CPU
   pushed none, then the vector; trap_common stores the registers below them into a TrapFrame,
   at the frame_* offsets the compiler gives it, and calls the Rust handler. */

    .section .text.trap, "ax"
    .macro trap_stub n, has_error
    .balign 16
trap_stub_\n:
    .if \has_error == 0
    push $0
    .endif
    push $\n
    jmp trap_common
    .endm

    .irp n, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
    trap_stub \n, 0
    .endr
    .irp n, 8,10,11,12,13,14,17,21,29,30
    trap_stub \n, 1
    .endr

trap_common:
    sub ${frame_gprs}, %rsp
    mov %rax, {frame_rax}(%rsp)
    mov %rbx, {frame_rbx}(%rsp)
    mov %rcx, {frame_rcx}(%rsp)
    mov %rdx, {frame_rdx}(%rsp)
    mov %rsi, {frame_rsi}(%rsp)
    mov %rdi, {frame_rdi}(%rsp)
    mov %rbp, {frame_rbp}(%rsp)
    mov %r8, {frame_r8}(%rsp)
    mov %r9, {frame_r9}(%rsp)
    mov %r10, {frame_r10}(%rsp)
    mov %r11, {frame_r11}(%rsp)
    mov %r12, {frame_r12}(%rsp)
    mov %r13, {frame_r13}(%rsp)
    mov %r14, {frame_r14}(%rsp)
    mov %r15, {frame_r15}(%rsp)
    mov %rsp, %rdi
    and $-16, %rsp
    call boot_x86_64_trap
    ud2

    .section .rodata
    .balign 8
    .global boot_trap_stubs
boot_trap_stubs:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad trap_stub_\n
    .endr
