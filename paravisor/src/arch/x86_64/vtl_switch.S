/* x86_64 VTL return (AT&T syntax): pv_vtl_return(stub, regs: *mut Vtl0Registers). The
   regs_* operands are the fields' offsets in Vtl0Registers, from the compiler.

   GPRs (all but RSP) are shared with VTL0: VTL0 resumes with whatever they hold at the switch,
   and VTL2 comes back with VTL0's. So: keep ours on the private stack, load VTL0's (RAX/RCX
   travel through vtl_control), switch, and save VTL0's before touching any. The rest of the
   TLFS shared set stays VTL0's untouched: CR2 (VTL2 takes no page fault, a trap is fatal, and
   never writes it), x87/XMM/AVX (the firmware is soft-float), DR0-DR3. */

    .section .text.hvcall, "ax"
    .global pv_vtl_return
pv_vtl_return:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    push %rsi
    push %rdi
    mov {regs_rdx}(%rsi), %rdx
    mov {regs_rbx}(%rsi), %rbx
    mov {regs_rbp}(%rsi), %rbp
    mov {regs_rdi}(%rsi), %rdi
    mov {regs_r8}(%rsi), %r8
    mov {regs_r9}(%rsi), %r9
    mov {regs_r10}(%rsi), %r10
    mov {regs_r11}(%rsi), %r11
    mov {regs_r12}(%rsi), %r12
    mov {regs_r13}(%rsi), %r13
    mov {regs_r14}(%rsi), %r14
    mov {regs_r15}(%rsi), %r15
    mov {regs_rsi}(%rsi), %rsi
    xor %ecx, %ecx               /* control: not fast, so VTL0's RAX/RCX come from vtl_control */
    call *(%rsp)
    xchg %rsi, 8(%rsp)           /* rsi = regs, the slot = VTL0's RSI */
    mov %rax, {regs_rax}(%rsi)
    mov %rcx, {regs_rcx}(%rsi)
    mov %rdx, {regs_rdx}(%rsi)
    mov %rbx, {regs_rbx}(%rsi)
    mov %rbp, {regs_rbp}(%rsi)
    mov %rdi, {regs_rdi}(%rsi)
    mov %r8, {regs_r8}(%rsi)
    mov %r9, {regs_r9}(%rsi)
    mov %r10, {regs_r10}(%rsi)
    mov %r11, {regs_r11}(%rsi)
    mov %r12, {regs_r12}(%rsi)
    mov %r13, {regs_r13}(%rsi)
    mov %r14, {regs_r14}(%rsi)
    mov %r15, {regs_r15}(%rsi)
    mov 8(%rsp), %rax
    mov %rax, {regs_rsi}(%rsi)
    add $16, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret
