//! x86_64 entry code: the PVH note and 32-bit stub QEMU enters, the 64-bit entry an IGVM VP
//! context targets, the identity-mapping page tables both use, and the GDT.
#![expect(
    unsafe_code,
    reason = "the entry stubs, boot page tables and GDT are global_asm!"
)]

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a"
    .balign 4
    .long 4                      /* namesz */
    .long 8                      /* descsz: QEMU reads a quad for ELFCLASS64 */
    .long 18                     /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad pvh_start32
    .balign 4

    .section .boot_pagetables, "aw"
    /* Identity map of the first 4 GiB with 2 MiB pages, built by the assembler so that the
       loader's page data already contains it (an IGVM VP context points CR3 here). Once the
       memory map is known, boot::paging adds the RAM above 4 GiB: boot_pdpt entries 4-511,
       further PML4 entries, tables from a pool in BSS. The table pointers name the link-time
       (`_abs`, linker script) addresses: no relocation of their own, as the IGVM page-table
       relocation region requires; a relocating loader rebuilds them (boot::reloc). */
    .balign 4096
    .global boot_pml4
boot_pml4:
    .quad boot_pdpt_abs + 0x3
    .fill 511, 8, 0
    .global boot_pdpt
boot_pdpt:
    .quad boot_pd_abs + 0x0003
    .quad boot_pd_abs + 0x1003
    .quad boot_pd_abs + 0x2003
    .quad boot_pd_abs + 0x3003
    .fill 508, 8, 0
    .global boot_pd
boot_pd:
    .set page, 0
    .rept 2048
    .quad (page << 21) | 0x83
    .set page, page + 1
    .endr

    .section .rodata
    .balign 16
    .global boot_gdt
boot_gdt:
    .quad 0
    .quad 0x00af9b000000ffff     /* 0x08: 64-bit code */
    .quad 0x00cf93000000ffff     /* 0x10: data */
boot_gdt_end:
    .balign 8
    .global boot_gdt_ptr
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    /* 32-bit protected mode, paging off, ebx = hvm_start_info. QEMU loads the ELF at its link
       base, so the link-time (`_abs`) addresses are where things are. */
    cli
    cld
    mov %ebx, %esi
    mov $boot_pml4_abs, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax               /* PAE */
    mov %eax, %cr4
    mov $0xc0000080, %ecx        /* EFER */
    rdmsr
    or $0x100, %eax              /* LME */
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax         /* PG | WP | PE */
    mov %eax, %cr0
    lgdt boot_gdt_ptr_abs
    ljmp $0x08, $pvh_start64_abs
    .code64
    .global pvh_start64
pvh_start64:
    mov %esi, %edi               /* start info for boot_x86_64_main */
    jmp 2f

    .global _start64
_start64:
    /* Long mode with paging on (IGVM VP context): no start info (rdi = 0), so the VP count
       and memory map come from the IGVM parameter pages (boot::igvm). */
    cli
    cld
    /* The context's RSP is 0 (the entry sets its own stack): the call and the far return
       below need one first, or their pushes land at 0xffff_ffff_ffff_fff8, outside the
       identity map. The BSS zeroing after it clears only what they already popped. */
    lea {stacks}(%rip), %rsp
    add ${stack_size}, %rsp
    /* Where the loader put us, before anything reads a stored address (boot_gdt_ptr holds
       the link-time GDT address until then). */
    call boot_relocate
    lgdt boot_gdt_ptr(%rip)
    xor %edi, %edi
    push $0x08
    lea 2f(%rip), %rax
    push %rax
    lretq
2:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    /* Zero BSS (it holds the stacks, so before the first push). */
    mov %rdi, %rbx
    lea __bss_start(%rip), %rdi
    lea __bss_end(%rip), %rcx
    sub %rdi, %rcx
    xor %eax, %eax
    rep stosb
    mov %rbx, %rdi
    lea {stacks}(%rip), %rsp
    add ${stack_size}, %rsp
    xor %ebp, %ebp
    call boot_x86_64_main
    ud2

    .global boot_ap_start64
boot_ap_start64:
    /* An AP in long mode on the page tables above, rsp = the top of its boot stack. */
    cli
    cld
    lgdt boot_gdt_ptr(%rip)
    push $0x08
    lea 3f(%rip), %rax
    push %rax
    lretq
3:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov %rsp, %rdi
    xor %ebp, %ebp
    call boot_ap_main
    ud2
    "#,
    stacks = sym crate::stacks::BOOT_STACK,
    stack_size = const crate::BOOT_STACK_SIZE,
    options(att_syntax)
);
