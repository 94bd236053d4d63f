/* x86_64 hypercall sites (AT&T syntax): the call through the hypercall page, and the page. */

    .section .text.hvcall, "ax"
    .global pv_hypercall
pv_hypercall:                    /* (control, input, output) -> result, via the page */
    mov %rdi, %rcx
    mov %rdx, %r8
    mov %rsi, %rdx
    call pv_hypercall_page
    ret

    /* The page the hypervisor overlays with its hypercall code once HV_X64_MSR_HYPERCALL is
       enabled. Until then it holds int3s, so a call through a disabled page traps loudly. */
    .section .text.hvpage, "ax"
    .balign 4096
    .global pv_hypercall_page
pv_hypercall_page:
    .fill 4096, 1, 0xcc
