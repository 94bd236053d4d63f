//! x86_64: PVH note and 32-bit entry (identity map of 4 GiB with 2 MiB pages and the place
//! window's page at 512 GiB, GDT, long mode,
//! IDT for vectors 0-31), COM1, isa-debug-exit, the Hyper-V MSR/hypercall-page setup, and the
//! probes' assembly with their recovery labels.
#![expect(
    unsafe_code,
    reason = "entry, page tables, vectors, port I/O and vmcall are assembly"
)]

use super::{canaried, CallDone, POOL_BYTES};
use crate::recovery::{Recovery, RECOVERY};
use crate::say;
use core::mem::offset_of;
use hvdef::x86_64::cpuid;
use hvdef::x86_64::HvX64Msr;
use vtl0::{is_fast, Arch, Fault, Mode, VtlEntry};

pub const ARCH: Arch = Arch::X86_64;

/// The place window's virtual address: PML4 entry 1 (512 GiB), far from the identity map, its
/// one page table entry the window (`vtl0_window_pt[0]`).
const WINDOW: u64 = 0x80_0000_0000;

unsafe extern "C" {
    static mut vtl0_window_pt: [u64; 512];
}

/// Maps the window onto the 4 KiB page at `page_gpa` (read/write) and returns its address.
pub fn open_window(page_gpa: u64) -> u64 {
    set_window(page_gpa | 0x3);
    WINDOW
}

/// Unmaps the window (a later access there is a #PF again).
pub fn close_window() {
    set_window(0);
}

fn set_window(entry: u64) {
    // SAFETY: the window's own page table entry, used by nothing but the window (one VP at a
    // time: `kernel::place` holds its lock); `invlpg` drops this CPU's old translation, and a
    // VP opening the window again drops its own.
    unsafe {
        (&raw mut vtl0_window_pt)
            .cast::<u64>()
            .write_volatile(entry);
        core::arch::asm!("invlpg [{}]", in(reg) WINDOW, options(nostack));
    }
}

const COM1: u16 = 0x3f8;
const DEBUG_EXIT: u16 = 0xf4;

/// GPRs in encoding order (their canary slots are these indices).
const GPRS: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];
const RAX: usize = 0;
const RCX: usize = 1;
const RDX: usize = 2;
const RBX: usize = 3;
const RSI: usize = 6;
const RDI: usize = 7;
const R8: usize = 8;

/// Everything the hypercall trampoline loads before the call and stores after it.
#[repr(C)]
struct HcRegs {
    /// GPRs in encoding order (RSP's slot unused on the way in).
    gpr_in: [u64; 16],
    /// XMM0-XMM15, low then high half each.
    xmm_in: [u64; 32],
    gpr_out: [u64; 16],
    xmm_out: [u64; 32],
    /// What the trampoline calls: the hypercall page.
    target: u64,
}

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a"
    .balign 4
    .long 4                      /* namesz */
    .long 8                      /* descsz: QEMU reads a quad for ELFCLASS64 */
    .long 18                     /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad vtl0_start32
    .balign 4

    .section .data.pagetables, "aw"
    .balign 4096
vtl0_pml4:
    .quad vtl0_pdpt + 0x3
    .quad vtl0_window_pdpt + 0x3 /* 512 GiB: the place window (`open_window`) */
    .fill 510, 8, 0
vtl0_pdpt:
    .quad vtl0_pd + 0x0003
    .quad vtl0_pd + 0x1003
    .quad vtl0_pd + 0x2003
    .quad vtl0_pd + 0x3003
    .fill 508, 8, 0
vtl0_pd:
    .set page, 0
    .rept 2048
    .quad (page << 21) | 0x83
    .set page, page + 1
    .endr
vtl0_window_pdpt:
    .quad vtl0_window_pd + 0x3
    .fill 511, 8, 0
vtl0_window_pd:
    .quad vtl0_window_pt + 0x3
    .fill 511, 8, 0
    .global vtl0_window_pt
vtl0_window_pt:
    .fill 512, 8, 0

    .section .rodata.vtl0_gdt, "a"
    .balign 16
vtl0_gdt:
    .quad 0
    .quad 0x00af9b000000ffff     /* 0x08: 64-bit code */
    .quad 0x00cf93000000ffff     /* 0x10: data */
    .quad 0x00cf9b000000ffff     /* 0x18: 32-bit code (a 32-bit call's compatibility mode) */
vtl0_gdt_end:
    .balign 8
vtl0_gdt_ptr:
    .word vtl0_gdt_end - vtl0_gdt - 1
    .quad vtl0_gdt
    .balign 8
vtl0_idt_ptr:
    .word 32 * 16 - 1
    .quad vtl0_idt
    .balign 8
vtl0_vector_stubs:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad vtl0_vec\n
    .endr

    /* The registers at the entry point (vtl0::Arch::entry_registers): in .data, not .bss,
       which is zeroed after they are stored. */
    .section .data.vtl0_entry, "aw"
    .balign 16
    .global vtl0_entry_regs
vtl0_entry_regs:
    .fill 16, 8, 0

    .section .bss.vtl0_stack, "aw", @nobits
    .balign 16
vtl0_stack:
    .skip 0x10000
vtl0_stack_top:
    .balign 16
vtl0_idt:
    .skip 32 * 16

    .section .text.boot, "ax"
    .code32
    .global vtl0_start32
vtl0_start32:
    /* 32-bit protected mode, paging off, flat segments, interrupts off (PVH). Before
       anything else: the registers as the kernel found them (absolute stores touch none). */
    mov %eax, vtl0_entry_regs + 0
    mov %ecx, vtl0_entry_regs + 8
    mov %edx, vtl0_entry_regs + 16
    mov %ebx, vtl0_entry_regs + 24
    mov %esp, vtl0_entry_regs + 32
    mov %ebp, vtl0_entry_regs + 40
    mov %esi, vtl0_entry_regs + 48
    mov %edi, vtl0_entry_regs + 56
    cli
    cld
    mov $vtl0_pml4, %eax
    mov %eax, %cr3
    /* Known values, not what the loader left (so fault codes do not depend on it). */
    mov $0x620, %eax             /* PAE | OSFXSR | OSXMMEXCPT (the canaries use XMM) */
    mov %eax, %cr4
    mov $0xc0000080, %ecx        /* EFER = LME only (no NXE: no I/D bit in #PF codes) */
    mov $0x100, %eax
    xor %edx, %edx
    wrmsr
    mov $0x80010033, %eax        /* PG | WP | NE | ET | MP | PE (EM, CD, NW clear) */
    mov %eax, %cr0
    lgdt vtl0_gdt_ptr
    ljmp $0x08, $1f
    .code64
1:
    /* R8-R15 exist from here on; nothing before touched them. */
    mov %r8, vtl0_entry_regs + 64(%rip)
    mov %r9, vtl0_entry_regs + 72(%rip)
    mov %r10, vtl0_entry_regs + 80(%rip)
    mov %r11, vtl0_entry_regs + 88(%rip)
    mov %r12, vtl0_entry_regs + 96(%rip)
    mov %r13, vtl0_entry_regs + 104(%rip)
    mov %r14, vtl0_entry_regs + 112(%rip)
    mov %r15, vtl0_entry_regs + 120(%rip)
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    lgdt vtl0_gdt_ptr(%rip)
    /* Zero BSS (it holds the stack, so before the first push). */
    lea __bss_start(%rip), %rdi
    lea __bss_end(%rip), %rcx
    sub %rdi, %rcx
    xor %eax, %eax
    rep stosb
    lea vtl0_stack_top(%rip), %rsp
    /* IDT: 32 interrupt gates, selector 0x08, IST 0. */
    lea vtl0_vector_stubs(%rip), %rsi
    lea vtl0_idt(%rip), %rdi
    mov $32, %ecx
2:
    mov (%rsi), %rax
    mov %ax, (%rdi)
    movw $0x08, 2(%rdi)
    movw $0x8e00, 4(%rdi)
    shr $16, %rax
    mov %ax, 6(%rdi)
    shr $16, %rax
    mov %eax, 8(%rdi)
    movl $0, 12(%rdi)
    add $8, %rsi
    add $16, %rdi
    dec %ecx
    jnz 2b
    lidt vtl0_idt_ptr(%rip)
    xor %ebp, %ebp
    call {main}
    ud2

    /* Another VP, started by HvCallStartVirtualProcessor in long mode with the kernel's page
       tables, GDT, IDT and control registers and its own stack (`start_vp`). */
    .global vtl0_ap_start64
vtl0_ap_start64:
    cli
    cld
    xor %ebp, %ebp
    call {ap_main}
    ud2

    .section .text.vtl0_vectors, "ax"
    /* Vectors without an error code push 0 in its place. */
    .irp n, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
vtl0_vec\n:
    push $0
    push $\n
    jmp vtl0_exception
    .endr
    .irp n, 8,10,11,12,13,14,17,21,29,30
vtl0_vec\n:
    push $\n
    jmp vtl0_exception
    .endr

vtl0_exception:
    /* Stack: vector, error code, RIP, CS, RFLAGS, RSP, SS. The running VP's recovery record
       (VP n >= 1 runs on AP stack n - 1, VP 0 elsewhere: smp::current; a 32-bit call runs
       on its VP's stack too, below 4 GiB). A probe running on it (resume_pc set): record the
       fault, the faulting RIP and RAX/RDX (a call's result registers), and resume at its
       recovery label with its stack, in 64-bit mode (CS 0x08, SS 0x10: a 32-bit call faults
       in compatibility mode). The probe's own registers are abandoned; only RAX and RCX
       (saved) are used here, so the callee-saved ones survive. */
    push %rcx
    push %rax
    mov %rsp, %rax
    lea {stacks}(%rip), %rcx
    sub %rcx, %rax
    cmp ${stacks_len}, %rax
    jb 1f
    xor %eax, %eax
    jmp 2f
1:  shr ${stack_shift}, %rax
    inc %rax
2:  imul ${rec_size}, %rax, %rax
    lea {rec}(%rip), %rcx
    add %rax, %rcx
    pop %rax
    cmpq $0, {pc}(%rcx)
    je 3f
    mov %rax, {result}(%rcx)
    mov %rdx, {result_hi}(%rcx)
    mov 24(%rsp), %rax
    mov %rax, {ip}(%rcx)
    movq $0x08, 32(%rsp)
    movq $0x10, 56(%rsp)
    mov 8(%rsp), %rax
    mov %rax, {a}(%rcx)
    mov 16(%rsp), %rax
    mov %rax, {b}(%rcx)
    mov %cr2, %rax
    mov %rax, {c}(%rcx)
    movq $1, {faulted}(%rcx)
    mov {pc}(%rcx), %rax
    mov %rax, 24(%rsp)
    movq $0, {pc}(%rcx)
    mov {sp}(%rcx), %rax
    mov %rax, 48(%rsp)
    pop %rcx
    add $16, %rsp
    iretq
3:
    pop %rcx
    mov (%rsp), %rdi
    mov 8(%rsp), %rsi
    mov 16(%rsp), %rdx
    mov %cr2, %rcx
    and $-16, %rsp
    call {unexpected}
    ud2

    .section .text.vtl0_probes, "ax"
    /* u64 vtl0_probe_read(u64 gpa, u32 width, struct Recovery *rec) */
    .global vtl0_probe_read
vtl0_probe_read:
    lea 9f(%rip), %rax
    mov %rax, {pc}(%rdx)
    mov %rsp, {sp}(%rdx)
    xor %eax, %eax
    cmp $1, %esi
    je 1f
    cmp $2, %esi
    je 2f
    cmp $4, %esi
    je 4f
    mov (%rdi), %rax
    jmp 5f
1:  movzbl (%rdi), %eax
    jmp 5f
2:  movzwl (%rdi), %eax
    jmp 5f
4:  mov (%rdi), %eax
5:  movq $0, {pc}(%rdx)
9:  ret

    /* void vtl0_probe_write(u64 gpa, u64 value, u32 width, struct Recovery *rec) */
    .global vtl0_probe_write
vtl0_probe_write:
    lea 9f(%rip), %rax
    mov %rax, {pc}(%rcx)
    mov %rsp, {sp}(%rcx)
    cmp $1, %edx
    je 1f
    cmp $2, %edx
    je 2f
    cmp $4, %edx
    je 4f
    mov %rsi, (%rdi)
    jmp 5f
1:  mov %sil, (%rdi)
    jmp 5f
2:  mov %si, (%rdi)
    jmp 5f
4:  mov %esi, (%rdi)
5:  movq $0, {pc}(%rcx)
9:  ret

    /* void vtl0_probe_exec(u64 gpa, struct Recovery *rec): calls it; it may clobber
       anything but RSP (`rec` waits on the stack). */
    .global vtl0_probe_exec
vtl0_probe_exec:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    push %rsi
    lea 9f(%rip), %rax
    mov %rax, {pc}(%rsi)
    mov %rsp, {sp}(%rsi)
    call *%rdi
    mov (%rsp), %rsi
    movq $0, {pc}(%rsi)
9:  add $8, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret

    /* void vtl0_hypercall(struct HcRegs *, struct Recovery *rec): loads every GPR but RSP
       and XMM0-15 from it, calls `target`, stores them all back (`rec` waits on the stack). */
    .global vtl0_hypercall
vtl0_hypercall:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    push %rdi
    push %rsi
    lea 9f(%rip), %rax
    mov %rax, {pc}(%rsi)
    mov %rsp, {sp}(%rsi)
    movdqu {xin}+0x00(%rdi), %xmm0
    movdqu {xin}+0x10(%rdi), %xmm1
    movdqu {xin}+0x20(%rdi), %xmm2
    movdqu {xin}+0x30(%rdi), %xmm3
    movdqu {xin}+0x40(%rdi), %xmm4
    movdqu {xin}+0x50(%rdi), %xmm5
    movdqu {xin}+0x60(%rdi), %xmm6
    movdqu {xin}+0x70(%rdi), %xmm7
    movdqu {xin}+0x80(%rdi), %xmm8
    movdqu {xin}+0x90(%rdi), %xmm9
    movdqu {xin}+0xa0(%rdi), %xmm10
    movdqu {xin}+0xb0(%rdi), %xmm11
    movdqu {xin}+0xc0(%rdi), %xmm12
    movdqu {xin}+0xd0(%rdi), %xmm13
    movdqu {xin}+0xe0(%rdi), %xmm14
    movdqu {xin}+0xf0(%rdi), %xmm15
    mov {gin}+8*1(%rdi), %rcx
    mov {gin}+8*2(%rdi), %rdx
    mov {gin}+8*3(%rdi), %rbx
    mov {gin}+8*5(%rdi), %rbp
    mov {gin}+8*6(%rdi), %rsi
    mov {gin}+8*8(%rdi), %r8
    mov {gin}+8*9(%rdi), %r9
    mov {gin}+8*10(%rdi), %r10
    mov {gin}+8*11(%rdi), %r11
    mov {gin}+8*12(%rdi), %r12
    mov {gin}+8*13(%rdi), %r13
    mov {gin}+8*14(%rdi), %r14
    mov {gin}+8*15(%rdi), %r15
    mov {target}(%rdi), %rax
    mov {gin}+8*7(%rdi), %rdi
    call *%rax
    xchg %rdi, 8(%rsp)
    mov %rax, {gout}+8*0(%rdi)
    mov %rcx, {gout}+8*1(%rdi)
    mov %rdx, {gout}+8*2(%rdi)
    mov %rbx, {gout}+8*3(%rdi)
    mov %rsp, {gout}+8*4(%rdi)
    mov %rbp, {gout}+8*5(%rdi)
    mov %rsi, {gout}+8*6(%rdi)
    mov %r8, {gout}+8*8(%rdi)
    mov %r9, {gout}+8*9(%rdi)
    mov %r10, {gout}+8*10(%rdi)
    mov %r11, {gout}+8*11(%rdi)
    mov %r12, {gout}+8*12(%rdi)
    mov %r13, {gout}+8*13(%rdi)
    mov %r14, {gout}+8*14(%rdi)
    mov %r15, {gout}+8*15(%rdi)
    movdqu %xmm0, {xout}+0x00(%rdi)
    movdqu %xmm1, {xout}+0x10(%rdi)
    movdqu %xmm2, {xout}+0x20(%rdi)
    movdqu %xmm3, {xout}+0x30(%rdi)
    movdqu %xmm4, {xout}+0x40(%rdi)
    movdqu %xmm5, {xout}+0x50(%rdi)
    movdqu %xmm6, {xout}+0x60(%rdi)
    movdqu %xmm7, {xout}+0x70(%rdi)
    movdqu %xmm8, {xout}+0x80(%rdi)
    movdqu %xmm9, {xout}+0x90(%rdi)
    movdqu %xmm10, {xout}+0xa0(%rdi)
    movdqu %xmm11, {xout}+0xb0(%rdi)
    movdqu %xmm12, {xout}+0xc0(%rdi)
    movdqu %xmm13, {xout}+0xd0(%rdi)
    movdqu %xmm14, {xout}+0xe0(%rdi)
    movdqu %xmm15, {xout}+0xf0(%rdi)
    mov 8(%rsp), %rax
    mov %rax, {gout}+8*7(%rdi)
    pop %rax
    movq $0, {pc}(%rax)
    add $8, %rsp
    jmp 8f
9:  add $16, %rsp
8:  pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret

    /* void vtl0_hypercall32(struct HcRegs *, struct Recovery *rec): as vtl0_hypercall, but
       the call of `target` is made from 32-bit compatibility mode (CS 0x18, entered with
       `lretq` once every register is loaded; back with a far jump to CS 0x08), on the VP's
       own stack (below 4 GiB), where the target waits for its `call *(%esp)` (`rec` waits
       there too). */
    .global vtl0_hypercall32
vtl0_hypercall32:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    push %rdi
    push %rsi
    lea 9f(%rip), %rax
    mov %rax, {pc}(%rsi)
    mov %rsp, {sp}(%rsi)
    pushq {target}(%rdi)
    movdqu {xin}+0x60(%rdi), %xmm6
    movdqu {xin}+0x70(%rdi), %xmm7
    movdqu {xin}+0x80(%rdi), %xmm8
    movdqu {xin}+0x90(%rdi), %xmm9
    movdqu {xin}+0xa0(%rdi), %xmm10
    movdqu {xin}+0xb0(%rdi), %xmm11
    movdqu {xin}+0xc0(%rdi), %xmm12
    movdqu {xin}+0xd0(%rdi), %xmm13
    movdqu {xin}+0xe0(%rdi), %xmm14
    movdqu {xin}+0xf0(%rdi), %xmm15
    mov {gin}+8*0(%rdi), %rax
    mov {gin}+8*1(%rdi), %rcx
    mov {gin}+8*2(%rdi), %rdx
    mov {gin}+8*3(%rdi), %rbx
    mov {gin}+8*5(%rdi), %rbp
    mov {gin}+8*6(%rdi), %rsi
    mov {gin}+8*7(%rdi), %rdi
    pushq $0x18
    pushq $vtl0_compat32
    lretq
    .code32
vtl0_compat32:
    call *(%esp)
    ljmp $0x08, $vtl0_hc32_back
    .code64
vtl0_hc32_back:
    lea 8(%rsp), %rsp
    xchg %rdi, 8(%rsp)
    mov %rax, {gout}+8*0(%rdi)
    mov %rcx, {gout}+8*1(%rdi)
    mov %rdx, {gout}+8*2(%rdi)
    mov %rbx, {gout}+8*3(%rdi)
    mov %rbp, {gout}+8*5(%rdi)
    mov %rsi, {gout}+8*6(%rdi)
    movdqu %xmm6, {xout}+0x60(%rdi)
    movdqu %xmm7, {xout}+0x70(%rdi)
    movdqu %xmm8, {xout}+0x80(%rdi)
    movdqu %xmm9, {xout}+0x90(%rdi)
    movdqu %xmm10, {xout}+0xa0(%rdi)
    movdqu %xmm11, {xout}+0xb0(%rdi)
    movdqu %xmm12, {xout}+0xc0(%rdi)
    movdqu %xmm13, {xout}+0xd0(%rdi)
    movdqu %xmm14, {xout}+0xe0(%rdi)
    movdqu %xmm15, {xout}+0xf0(%rdi)
    mov 8(%rsp), %rax
    mov %rax, {gout}+8*7(%rdi)
    pop %rax
    movq $0, {pc}(%rax)
    add $8, %rsp
    jmp 8f
9:  add $16, %rsp
8:  pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret
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
    c = const offset_of!(Recovery, c),
    ip = const offset_of!(Recovery, ip),
    result = const offset_of!(Recovery, result),
    result_hi = const offset_of!(Recovery, result_hi),
    gin = const offset_of!(HcRegs, gpr_in),
    xin = const offset_of!(HcRegs, xmm_in),
    gout = const offset_of!(HcRegs, gpr_out),
    xout = const offset_of!(HcRegs, xmm_out),
    target = const offset_of!(HcRegs, target),
    options(att_syntax)
);

unsafe extern "C" {
    static vtl0_entry_regs: [u64; 16];
    fn vtl0_ap_start64();
    fn vtl0_probe_read(gpa: u64, width: u32, rec: &Recovery) -> u64;
    fn vtl0_probe_write(gpa: u64, value: u64, width: u32, rec: &Recovery);
    fn vtl0_probe_exec(gpa: u64, rec: &Recovery);
    fn vtl0_hypercall(regs: *mut HcRegs, rec: &Recovery);
    fn vtl0_hypercall32(regs: *mut HcRegs, rec: &Recovery);
}

/// The registers as the entry code stored them, in `Arch::entry_registers` order.
pub fn entry_registers() -> [u64; 16] {
    // SAFETY: written only by the entry code, before any Rust runs; read here by value.
    unsafe { core::ptr::addr_of!(vtl0_entry_regs).read_volatile() }
}

/// The IDT entry: loads IDTR with `base`/`limit` and raises #UD. Nothing the CPU makes of that
/// returns here (see `vtl0::KIND_IDT`).
pub fn idt_and_ud(base: u64, limit: u16) -> ! {
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let idtr = Idtr { limit, base };
    // SAFETY: replaces the kernel's IDT on purpose; the #UD that follows goes wherever the
    // table entry says, and the kernel does not expect to come back.
    unsafe {
        core::arch::asm!(
            "lidt [{0}]",
            "ud2",
            in(reg) &idtr,
            options(noreturn, nostack, readonly)
        )
    }
}

/// An exception outside any probe: one line, then a failing power-off.
extern "C" fn unexpected_exception(vector: u64, code: u64, rip: u64, cr2: u64) -> ! {
    say!("unexpected exception vector={vector:#x} code={code:#x} rip={rip:#x} cr2={cr2:#x}");
    power_off(false)
}

/// The fault a probe recorded: vector, error code, CR2.
pub fn fault(vector: u64, code: u64, cr2: u64) -> Fault {
    Fault::X86 {
        vector: vector as u8,
        code,
        cr2,
    }
}

fn outb(port: u16, value: u8) {
    // SAFETY: port I/O to COM1 or isa-debug-exit; touches no memory.
    unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nostack)) };
}

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: reads COM1's line status register; touches no memory.
    unsafe { core::arch::asm!("in al, dx", in("dx") port, out("al") value, options(nostack)) };
    value
}

pub fn putc(b: u8) {
    // Wait for the transmit holding register to empty (LSR bit 5).
    while inb(COM1 + 5) & 0x20 == 0 {}
    outb(COM1, b);
}

/// isa-debug-exit: 0x10 → QEMU exit code 33 (pass), 0x11 → 35 (fail); then halt.
pub fn power_off(pass: bool) -> ! {
    outb(DEBUG_EXIT, if pass { 0x10 } else { 0x11 });
    loop {
        // SAFETY: halts with interrupts off; the exit above is asynchronous under TCG.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

fn cpuid(leaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid(leaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

fn wrmsr(msr: HvX64Msr, value: u64) {
    // SAFETY: writes a Hyper-V synthetic MSR (guest OS id, hypercall page) whose effect is the
    // hypercall interface the kernel is setting up; the hypercall page is the kernel's own.
    unsafe {
        core::arch::asm!(
            "wrmsr",
            in("ecx") msr.0,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack)
        )
    };
}

/// Why there is no Hyper-V interface.
pub enum NoHyperV {
    NoHypervisorBit,
    Vendor([u8; 12]),
    Interface(u32),
}

impl core::fmt::Display for NoHyperV {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NoHyperV::NoHypervisorBit => f.write_str("cpuid 0x1 ecx bit 31 clear"),
            NoHyperV::Vendor(v) => {
                f.write_str("cpuid 0x40000000 vendor \"")?;
                for &b in v {
                    let c = if b.is_ascii_graphic() || b == b' ' {
                        b as char
                    } else {
                        '.'
                    };
                    write!(f, "{c}")?;
                }
                f.write_str("\"")
            }
            NoHyperV::Interface(i) => write!(f, "cpuid 0x40000001 eax {i:#x}, not Hv#1"),
        }
    }
}

/// TLFS guest setup: Hyper-V's CPUID leaves, then the guest OS id and the hypercall page.
pub fn hyperv_init() -> Result<(), NoHyperV> {
    if cpuid(1)[2] & cpuid::CPUID1_ECX_HYPERVISOR_PRESENT == 0 {
        return Err(NoHyperV::NoHypervisorBit);
    }
    let [max, ebx, ecx, edx] = cpuid(cpuid::HV_CPUID_VENDOR_AND_MAX_FUNCTIONS);
    if [ebx, ecx, edx]
        != [
            cpuid::HV_CPUID_VENDOR_EBX,
            cpuid::HV_CPUID_VENDOR_ECX,
            cpuid::HV_CPUID_VENDOR_EDX,
        ]
    {
        let mut v = [0u8; 12];
        for (i, r) in [ebx, ecx, edx].into_iter().enumerate() {
            v[i * 4..i * 4 + 4].copy_from_slice(&r.to_le_bytes());
        }
        return Err(NoHyperV::Vendor(v));
    }
    let interface = if max >= cpuid::HV_CPUID_INTERFACE {
        cpuid(cpuid::HV_CPUID_INTERFACE)[0]
    } else {
        0
    };
    if interface != cpuid::HV_CPUID_INTERFACE_HV1 {
        return Err(NoHyperV::Interface(interface));
    }
    wrmsr(HvX64Msr::HV_X64_MSR_GUEST_OS_ID, vtl0::GUEST_OS_ID);
    wrmsr(HvX64Msr::HV_X64_MSR_HYPERCALL, ARCH.hypercall_page() | 1);
    Ok(())
}

fn xmm_index(name: &str) -> Option<usize> {
    name.strip_prefix("xmm")?.parse().ok()
}

/// One hypercall through the hypercall page with canaries in every register the call does not
/// use (see `Arch::canaries`).
pub fn hypercall(
    control: u64,
    pool: &[u8; POOL_BYTES],
    gpas: Option<(u64, u64)>,
) -> Result<CallDone, Fault> {
    call_at(ARCH.hypercall_page(), control, pool, gpas)
}

/// The hypercall page's 64-bit VTL call and return offsets (HvRegisterVsmCodePageOffsets),
/// once read; u64::MAX before.
static VSM_OFFSETS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(u64::MAX);

/// A call through a VTL entry needs the hypercall page's VTL stub offsets (TLFS vsm.md
/// "Hypercall Page Assist": read from HvRegisterVsmCodePageOffsets): a memory-form
/// HvCallGetVpRegisters of it on VP `vp`'s own input and output pages, the first time any VP
/// needs them (two VPs at once both read the same value). Without them the run cannot go on:
/// one line and a failing power-off.
pub fn prepare_mode(vp: u32, mode: Mode) {
    use core::sync::atomic::Ordering;
    use hvdef::{Control, HvRegisterName, HypercallCode, HV_PARTITION_ID_SELF, HV_VP_INDEX_SELF};
    if mode.vtl_entry == VtlEntry::Hypercall || VSM_OFFSETS.load(Ordering::SeqCst) != u64::MAX {
        return;
    }
    let mut input = [0u8; 20];
    input[..8].copy_from_slice(&HV_PARTITION_ID_SELF.to_le_bytes());
    input[8..12].copy_from_slice(&HV_VP_INDEX_SELF.to_le_bytes());
    // Byte 12: the target VTL, 0 (the caller's own); 13..16 reserved.
    input[16..20].copy_from_slice(&HvRegisterName::VSM_CODE_PAGE_OFFSETS.0.to_le_bytes());
    let (input_page, output_page) = (ARCH.vp_input_page(vp), ARCH.vp_output_page(vp));
    crate::mem::write(ARCH, input_page, &input, 0);
    crate::mem::write(ARCH, output_page, &[], 16);
    let control = Control::new()
        .with_code(HypercallCode::GET_VP_REGISTERS)
        .with_rep_count(1)
        .into_bits();
    let gpas = Some((input_page, output_page));
    let result = hypercall(control, &[0; POOL_BYTES], gpas).map(|d| d.result);
    let mut value = [0u8; 8];
    crate::mem::read(ARCH, output_page, &mut value);
    match result {
        Ok(r) if r & 0xffff == 0 && r >> 32 == 1 => {
            VSM_OFFSETS.store(u64::from_le_bytes(value), Ordering::SeqCst)
        }
        other => {
            match other {
                Ok(r) => say!("VsmCodePageOffsets unreadable: result {r:#x}"),
                Err(f) => say!("VsmCodePageOffsets unreadable: {f}"),
            }
            power_off(false)
        }
    }
}

/// A hypercall in `mode` (see `vtl0::Mode`): through the hypercall page's VTL stub of its VTL
/// entry (control in RCX, the stub's VTL control), or from 32-bit compatibility mode.
pub fn hypercall_in(
    mode: Mode,
    control: u64,
    pool: &[u8; POOL_BYTES],
    gpas: Option<(u64, u64)>,
) -> Result<CallDone, Fault> {
    if mode.compat32 {
        return call32(control, gpas);
    }
    let offsets = hvdef::HvRegisterVsmCodePageOffsets::from_bits(
        VSM_OFFSETS.load(core::sync::atomic::Ordering::SeqCst),
    );
    let offset = match mode.vtl_entry {
        VtlEntry::Hypercall => 0,
        VtlEntry::VtlCall => offsets.vtl_call_offset(),
        VtlEntry::VtlReturn => offsets.vtl_return_offset(),
    };
    call_at(
        ARCH.hypercall_page() + u64::from(offset),
        control,
        pool,
        gpas,
    )
}

/// A memory-form call from 32-bit compatibility mode (TLFS 32-bit convention: control EDX:EAX,
/// input GPA EBX:ECX, output GPA EDI:ESI, result EDX:EAX); canaries in XMM6-XMM15 only.
fn call32(control: u64, gpas: Option<(u64, u64)>) -> Result<CallDone, Fault> {
    let mut r = HcRegs {
        gpr_in: core::array::from_fn(|i| vtl0::canary(i as u32)),
        xmm_in: core::array::from_fn(|i| vtl0::canary(16 + i as u32)),
        gpr_out: [0; 16],
        xmm_out: [0; 32],
        target: ARCH.hypercall_page(),
    };
    let (input, output) = gpas.unwrap_or((ARCH.input_page(), ARCH.output_page()));
    let lo = |v: u64| v & 0xFFFF_FFFF;
    r.gpr_in[RAX] = lo(control);
    r.gpr_in[RDX] = control >> 32;
    r.gpr_in[RCX] = lo(input);
    r.gpr_in[RBX] = input >> 32;
    r.gpr_in[RSI] = lo(output);
    r.gpr_in[RDI] = output >> 32;
    crate::recovery::arm();
    // SAFETY: as in call_at; the trampoline also enters and leaves compatibility mode through
    // the kernel's own GDT (CS 0x18, back to 0x08), on the VP's own stack below 4 GiB.
    unsafe { vtl0_hypercall32(&mut r, crate::recovery::mine()) };
    if let Some(f) = crate::recovery::take() {
        return Err(f);
    }
    let mut done = CallDone::new(lo(r.gpr_out[RDX]) << 32 | lo(r.gpr_out[RAX]));
    for (x, name) in XMM_NAMES.iter().enumerate().skip(6) {
        if r.xmm_out[2 * x] != r.xmm_in[2 * x] || r.xmm_out[2 * x + 1] != r.xmm_in[2 * x + 1] {
            done.canary_broken(name);
        }
    }
    Ok(done)
}

const XMM_NAMES: [&str; 16] = [
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
    "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
];

/// One call of `target` (the hypercall page or a stub in it).
fn call_at(
    target: u64,
    control: u64,
    pool: &[u8; POOL_BYTES],
    gpas: Option<(u64, u64)>,
) -> Result<CallDone, Fault> {
    let fast = is_fast(control);
    let mut r = HcRegs {
        gpr_in: core::array::from_fn(|i| vtl0::canary(i as u32)),
        xmm_in: core::array::from_fn(|i| vtl0::canary(16 + i as u32)),
        gpr_out: [0; 16],
        xmm_out: [0; 32],
        target,
    };
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&pool[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    r.gpr_in[RCX] = control;
    if fast {
        r.gpr_in[RDX] = word(0);
        r.gpr_in[R8] = word(1);
        for i in 0..12 {
            r.xmm_in[i] = word(2 + i);
        }
    } else {
        let (input, output) = gpas.unwrap_or((ARCH.input_page(), ARCH.output_page()));
        r.gpr_in[RDX] = input;
        r.gpr_in[R8] = output;
    }
    crate::recovery::arm();
    // SAFETY: the trampoline saves and restores the callee-saved registers, reads and writes
    // only `r`, and calls the hypercall page the hypervisor provides (hyperv_init set it up);
    // a fault resumes at its recovery label.
    unsafe { vtl0_hypercall(&mut r, crate::recovery::mine()) };
    if let Some(f) = crate::recovery::take() {
        return Err(f);
    }
    let mut done = CallDone::new(r.gpr_out[RAX]);
    let out_words = [r.gpr_out[RDX], r.gpr_out[R8]]
        .into_iter()
        .chain(r.xmm_out[..12].iter().copied());
    for (i, w) in out_words.enumerate() {
        done.pool[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    for name in canaried(fast) {
        let ok = if let Some(x) = xmm_index(name) {
            r.xmm_out[2 * x] == r.xmm_in[2 * x] && r.xmm_out[2 * x + 1] == r.xmm_in[2 * x + 1]
        } else {
            GPRS.iter()
                .position(|g| *g == name)
                .is_some_and(|g| r.gpr_out[g] == r.gpr_in[g])
        };
        if !ok {
            done.canary_broken(name);
        }
    }
    Ok(done)
}

/// The time-stamp counter (`rdtsc`, after the instructions before it: `lfence`).
pub fn counter() -> u64 {
    // SAFETY: lfence and rdtsc touch no memory (CR4.TSD is clear in the kernel's own setup).
    unsafe {
        core::arch::x86_64::_mm_lfence();
        core::arch::x86_64::_rdtsc()
    }
}

/// The TSC's frequency: not known without CPUID leaf 0x15 or a hypervisor MSR the kernel does
/// not read (either is an exit of its own), so 0 ("unknown").
pub fn counter_hz() -> u64 {
    0
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
    // SAFETY: as in probe_read; the callee-saved registers are saved around the call.
    unsafe { vtl0_probe_exec(gpa, crate::recovery::mine()) };
    crate::recovery::take().map_or(Ok(()), Err)
}

/// The stack pointer (which VP runs: `smp::current`).
pub fn stack_pointer() -> u64 {
    let sp: u64;
    // SAFETY: reads RSP; touches no memory.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack)) };
    sp
}

/// A VP done with its entries waits here for VP 0's power-off (no `hlt`: nothing would wake
/// it, and the hypervisor ends a run whose VTL0 halts for good).
pub fn idle() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

fn control_registers() -> (u64, u64, u64) {
    let (cr0, cr3, cr4): (u64, u64, u64);
    // SAFETY: reads CR0, CR3 and CR4 at CPL0; touches no memory.
    unsafe {
        core::arch::asm!(
            "mov {}, cr0", "mov {}, cr3", "mov {}, cr4",
            out(reg) cr0, out(reg) cr3, out(reg) cr4,
            options(nomem, nostack)
        )
    };
    (cr0, cr3, cr4)
}

/// The GDTR and IDTR (`sgdt`, `sidt`).
fn descriptor_tables() -> (
    hvdef::x86_64::HvX64TableRegister,
    hvdef::x86_64::HvX64TableRegister,
) {
    let mut gdt = [0u8; 10];
    let mut idt = [0u8; 10];
    // SAFETY: `sgdt`/`sidt` store 10 bytes each into the buffers.
    unsafe {
        core::arch::asm!(
            "sgdt [{}]", "sidt [{}]",
            in(reg) gdt.as_mut_ptr(), in(reg) idt.as_mut_ptr(),
            options(nostack)
        )
    };
    let table = |b: [u8; 10]| hvdef::x86_64::HvX64TableRegister {
        pad: [0; 3],
        limit: u16::from_le_bytes([b[0], b[1]]),
        base: u64::from_le_bytes(b[2..].try_into().expect("8 bytes")),
    };
    (table(gdt), table(idt))
}

/// Starts VP `vp`'s VTL0 with HvCallStartVirtualProcessor (TLFS; the way to start a VP whose
/// higher VTL is enabled, vsm.md): long mode on this VP's page tables, GDT, IDT, CR0/CR3/CR4
/// and EFER (LME | LMA), CS the 64-bit code segment (0x08), the data segments 0x10, RSP
/// `stack_top`, RIP the AP entry. The call's status (0: started).
pub fn start_vp(vp: u32, stack_top: u64) -> Result<u64, Fault> {
    use hvdef::x86_64::{HvX64InputStartVirtualProcessor, HvX64SegmentRegister};
    use hvdef::{Control, HypercallCode, HV_PARTITION_ID_SELF};
    use zerocopy::{FromZeros, IntoBytes};
    let seg = |selector: u16, limit: u32, attributes: u16| HvX64SegmentRegister {
        base: 0,
        limit,
        selector,
        attributes,
    };
    let (cr0, cr3, cr4) = control_registers();
    let (gdtr, idtr) = descriptor_tables();
    let mut input = HvX64InputStartVirtualProcessor::new_zeroed();
    input.partition_id = HV_PARTITION_ID_SELF;
    input.vp_index = vp;
    input.target_vtl = 0;
    let c = &mut input.context;
    c.rip = vtl0_ap_start64 as *const () as u64;
    c.rsp = stack_top;
    c.rflags = 0x2;
    // G | L | P | S | execute/read, accessed; data: G | D/B | P | S | read/write, accessed.
    c.cs = seg(0x08, 0xFFFF_FFFF, 0xA09B);
    let data = seg(0x10, 0xFFFF_FFFF, 0xC093);
    (c.ds, c.es, c.fs, c.gs, c.ss) = (data, data, data, data, data);
    c.tr = seg(0, 0xFFFF, 0x8B);
    c.ldtr = seg(0, 0xFFFF, 0x82);
    c.gdtr = gdtr;
    c.idtr = idtr;
    c.efer = 0x500;
    c.cr0 = cr0;
    c.cr3 = cr3;
    c.cr4 = cr4;
    c.msr_cr_pat = 0x0007_0406_0007_0406;
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

/// This VP's index as the hypervisor numbers it (`HV_X64_MSR_VP_INDEX`, as Linux's
/// `hv_common_cpu_init` reads it).
pub fn vp_index() -> Result<u32, &'static str> {
    let (lo, hi): (u32, u32);
    // SAFETY: reads a Hyper-V synthetic MSR (hyperv_init on VP 0 checked the interface).
    unsafe {
        core::arch::asm!(
            "rdmsr",
            in("ecx") HvX64Msr::HV_X64_MSR_VP_INDEX.0,
            out("eax") lo, out("edx") hi,
            options(nomem, nostack)
        )
    };
    u32::try_from(u64::from(hi) << 32 | u64::from(lo)).map_err(|_| "the index is over 32 bits")
}

/// EL0 probes are aarch64's: the parser refuses the flag here, so these never run.
fn no_el0() -> ! {
    say!("bad table: an EL0 probe on x86_64");
    power_off(false)
}

pub fn probe_read_el0(_: u64, _: u8) -> Result<u64, Fault> {
    no_el0()
}

pub fn probe_write_el0(_: u64, _: u8, _: u64) -> Result<(), Fault> {
    no_el0()
}

pub fn probe_exec_el0(_: u64) -> Result<(), Fault> {
    no_el0()
}
