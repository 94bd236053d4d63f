//! Self-relocation: the image is a static PIE (linker flags in `linker/src/lib.rs`) linked at
//! its script's base, and an IGVM loader may load it elsewhere (the file's relocation region,
//! `xtask/src/igvm.rs`). The entry code calls `boot_relocate` first, before anything reads a
//! stored address: it finds the load offset (where `__image_start` is, PC-relative, minus
//! where it was linked, `__image_start_abs`) and, when it is not 0, adds it to every word an
//! `R_X86_64_RELATIVE` / `R_AARCH64_RELATIVE` relocation names (`*(link_offset + delta) =
//! addend + delta`, the records between `__rela_start` and `__rela_end`); xtask refuses an
//! image with any other kind. Code is position independent by construction (RIP-relative
//! on x86, ADRP/ADR on arm64), so only data moves.
//!
//! x86 enters with paging on, on the image's boot page tables: the loader already rebuilt them
//! at the new base (the file's page-table relocation region; their entries name absolute
//! symbols, so no relocation touches them) and moved the identity map's 2 MiB pages of the old
//! place to the new one. `boot_relocate` then rewrites the four static PDs as the plain
//! identity map of the low 4 GiB (what they hold at the link base), so the old place is
//! ordinary, mapped VTL0 memory again, and reloads CR3. arm64 enters with the MMU off and
//! turns it on over `boot_l1`, whose block entries are constants: nothing to fix; it
//! invalidates the instruction cache after patching, in case a relocated word sits in code.
//!
//! A QEMU ELF boot (PVH, arm64 `-kernel`) runs at the link base: offset 0, nothing to do (the
//! file's words hold their link-base values: `--apply-dynamic-relocs`).
#![cfg_attr(
    target_os = "none",
    expect(
        unsafe_code,
        reason = "applies the image's own relocations before anything reads them"
    )
)]

/// The load offset `boot_relocate` found (0: running at the link base). In `.data`, not BSS:
/// it is written before the entry zeroes BSS.
#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
#[unsafe(link_section = ".data.boot_relocation_offset")]
#[allow(non_upper_case_globals)]
static mut boot_relocation_offset: u64 = 0;

/// How far the image was moved from its link base (0: not moved).
#[cfg(target_os = "none")]
pub fn offset() -> u64 {
    // SAFETY: written once by the boot VP's entry code before any Rust code runs.
    unsafe { core::ptr::read_volatile(&raw const boot_relocation_offset) }
}

/// The link base the image was built for.
#[cfg(target_os = "none")]
pub fn link_base() -> u64 {
    crate::image_range().start.wrapping_sub(offset())
}

#[cfg(all(target_os = "none", target_arch = "x86_64"))]
core::arch::global_asm!(
    r#"
    .section .text.boot_relocate, "ax"
    .global boot_relocate
boot_relocate:
    /* rax = delta; clobbers rcx, rdx, rsi, r8 (rdi, the start info, is kept). */
    lea __image_start(%rip), %rax
    movabs $__image_start_abs, %rdx
    sub %rdx, %rax
    jz 3f
    lea __rela_start(%rip), %rsi
    lea __rela_end(%rip), %rcx
1:  cmp %rcx, %rsi
    jae 2f
    cmpl $8, 8(%rsi)             /* r_info's type: R_X86_64_RELATIVE */
    jne 4f
    mov (%rsi), %rdx             /* r_offset: the word's link address */
    mov 16(%rsi), %r8            /* r_addend: the link-time value */
    add %rax, %r8
    mov %r8, (%rdx,%rax)
4:  add $24, %rsi
    jmp 1b
2:  /* The identity map of the low 4 GiB again, old place included. */
    lea boot_pd(%rip), %rsi
    xor %ecx, %ecx
5:  mov %rcx, %rdx
    shl $21, %rdx
    or $0x83, %rdx
    mov %rdx, (%rsi,%rcx,8)
    inc %rcx
    cmp $2048, %rcx
    jb 5b
    mov %cr3, %rdx
    mov %rdx, %cr3
3:  mov %rax, boot_relocation_offset(%rip)
    ret
    "#,
    options(att_syntax)
);

#[cfg(all(target_os = "none", target_arch = "aarch64"))]
core::arch::global_asm!(
    r#"
    .section .text.boot_relocate, "ax"
    .global boot_relocate
boot_relocate:
    /* x9 = delta; clobbers x10-x13. */
    adrp x9, __image_start
    add x9, x9, :lo12:__image_start
    ldr x10, =__image_start_abs
    sub x9, x9, x10
    cbz x9, 3f
    adrp x10, __rela_start
    add x10, x10, :lo12:__rela_start
    adrp x11, __rela_end
    add x11, x11, :lo12:__rela_end
1:  cmp x10, x11
    b.hs 2f
    ldr w12, [x10, #8]           /* r_info's type: R_AARCH64_RELATIVE */
    cmp w12, #1027
    b.ne 4f
    ldr x12, [x10]               /* r_offset: the word's link address */
    ldr x13, [x10, #16]          /* r_addend: the link-time value */
    add x13, x13, x9
    str x13, [x12, x9]
4:  add x10, x10, #24
    b 1b
2:  dsb ish
    ic iallu
    dsb ish
    isb
3:  adrp x10, boot_relocation_offset
    str x9, [x10, :lo12:boot_relocation_offset]
    ret
    .ltorg
    "#
);
