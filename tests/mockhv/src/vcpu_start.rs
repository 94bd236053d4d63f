//! Really starting a vCPU for HvCallStartVirtualProcessor, with code the mock places in guest
//! memory the paravisor does not use.
//!
//! x86_64: the calling vCPU is briefly pointed at a stub that sends INIT and SIPI to the
//! target's local APIC; the target wakes in real mode in a trampoline that reads its APIC ID,
//! finds its slot of the initial context and loads CR4/CR3/EFER/CR0/GDTR/RSP/RIP from it.
//! aarch64: the calling vCPU single-steps a PSCI CPU_ON (QEMU's firmware answers `hvc #0` at
//! EL1) that starts the target in a trampoline loading the arm64 initial context.
//!
//! The machine code is hand-assembled here; each instruction's encoding is noted beside it.

use hvdef::aarch64::HvArm64InitialVpContext;
use hvdef::x86_64::HvX64InitialVpContext;
use zerocopy::IntoBytes;

/// x86: the calling vCPU's IPI stub (long mode, identity-mapped low memory).
pub const X86_STUB: u64 = 0x7000;
/// x86: the real-mode trampoline; its page number is the SIPI vector.
pub const X86_TRAMPOLINE: u64 = 0x8000;
/// x86: initial contexts, one 128-byte slot per APIC ID.
pub const X86_SLOTS: u64 = 0x9000;
const X86_SLOT_SIZE: u64 = 0x80;
const X86_PM32: u64 = X86_TRAMPOLINE + 0x40;
const X86_LM64: u64 = X86_TRAMPOLINE + 0xa0;
const X86_GDT_PTR: u64 = X86_TRAMPOLINE + 0xf0;
const X86_GDT: u64 = X86_TRAMPOLINE + 0x100;
const LOCAL_APIC: u64 = 0xfee0_0000;

/// arm64: between QEMU virt's device tree (1 MiB at 0x4000_0000) and the image (0x4020_0000).
pub const ARM64_TRAMPOLINE: u64 = 0x4018_0000;
/// arm64: initial contexts, one 128-byte slot per VP.
pub const ARM64_SLOTS: u64 = ARM64_TRAMPOLINE + 0x1000;
/// PSCI CPU_ON (SMC64).
pub const PSCI_CPU_ON: u64 = 0xc400_0003;

fn le32(v: u64) -> [u8; 4] {
    (v as u32).to_le_bytes()
}

/// The real-mode to long-mode trampoline (placed at [`X86_TRAMPOLINE`]).
pub fn x86_trampoline() -> Vec<u8> {
    let mut page = vec![0xccu8; 0x200];
    let put = |page: &mut Vec<u8>, at: u64, bytes: &[u8]| {
        let off = (at - X86_TRAMPOLINE) as usize;
        page[off..off + bytes.len()].copy_from_slice(bytes);
    };
    let mut real = vec![
        0xfa, // cli
        0x31, 0xc0, // xor ax, ax
        0x8e, 0xd8, // mov ds, ax
        0x0f, 0x01, 0x16, // lgdt [disp16]
    ];
    real.extend((X86_GDT_PTR as u16).to_le_bytes());
    real.extend([
        0x0f, 0x20, 0xc0, // mov eax, cr0
        0x66, 0x83, 0xc8, 0x01, // or eax, 1
        0x0f, 0x22, 0xc0, // mov cr0, eax
        0x66, 0xea, // jmp far ptr16:32
    ]);
    real.extend(le32(X86_PM32));
    real.extend(0x08u16.to_le_bytes());
    put(&mut page, X86_TRAMPOLINE, &real);

    let mut pm32 = vec![
        0x66, 0xb8, 0x10, 0x00, // mov ax, 0x10
        0x8e, 0xd8, // mov ds, ax
        0x8e, 0xc0, // mov es, ax
        0x8e, 0xd0, // mov ss, ax
        0xa1, // mov eax, [APIC ID register]
    ];
    pm32.extend(le32(LOCAL_APIC + 0x20));
    pm32.extend([
        0xc1, 0xe8, 0x18, // shr eax, 24
        0xc1, 0xe0, 0x07, // shl eax, 7 (slot size)
        0x05, // add eax, imm32
    ]);
    pm32.extend(le32(X86_SLOTS));
    pm32.extend([
        0x89, 0xc6, // mov esi, eax
        0x8b, 0x46, 0x10, // mov eax, [esi + cr4]
        0x0f, 0x22, 0xe0, // mov cr4, eax
        0x8b, 0x46, 0x08, // mov eax, [esi + cr3]
        0x0f, 0x22, 0xd8, // mov cr3, eax
        0xb9, 0x80, 0x00, 0x00, 0xc0, // mov ecx, EFER
        0x8b, 0x46, 0x18, // mov eax, [esi + efer]
        0x8b, 0x56, 0x1c, // mov edx, [esi + efer + 4]
        0x0f, 0x30, // wrmsr
        0x8b, 0x06, // mov eax, [esi + cr0]
        0x0f, 0x22, 0xc0, // mov cr0, eax (paging on: long mode, compatibility)
        0xea, // jmp far ptr16:32
    ]);
    pm32.extend(le32(X86_LM64));
    pm32.extend(0x18u16.to_le_bytes());
    put(&mut page, X86_PM32, &pm32);

    let lm64 = [
        0x89, 0xf6, // mov esi, esi (zero the upper half)
        0x0f, 0x01, 0x56, 0x30, // lgdt [rsi + gdtr]
        0x48, 0x8b, 0x66, 0x20, // mov rsp, [rsi + rsp]
        0x48, 0x8b, 0x46, 0x28, // mov rax, [rsi + rip]
        0x0f, 0xb7, 0x4e, 0x40, // movzx ecx, word [rsi + cs]
        0x51, // push rcx
        0x50, // push rax
        0x48, 0xcb, // retfq
    ];
    put(&mut page, X86_LM64, &lm64);

    let mut gdt_ptr = 0x1fu16.to_le_bytes().to_vec();
    gdt_ptr.extend(le32(X86_GDT));
    put(&mut page, X86_GDT_PTR, &gdt_ptr);
    let gdt: [u64; 4] = [
        0,
        0x00cf_9a00_0000_ffff, // 0x08: 32-bit code
        0x00cf_9200_0000_ffff, // 0x10: data
        0x00af_9a00_0000_ffff, // 0x18: 64-bit code
    ];
    put(&mut page, X86_GDT, gdt.as_bytes());
    page
}

/// The slot address and contents for `apic_id`'s initial context.
pub fn x86_slot(apic_id: u32, ctx: &HvX64InitialVpContext) -> (u64, Vec<u8>) {
    let mut slot = vec![0u8; X86_SLOT_SIZE as usize];
    for (off, v) in [
        (0x00, ctx.cr0),
        (0x08, ctx.cr3),
        (0x10, ctx.cr4),
        (0x18, ctx.efer),
        (0x20, ctx.rsp),
        (0x28, ctx.rip),
    ] {
        slot[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    slot[0x30..0x32].copy_from_slice(&ctx.gdtr.limit.to_le_bytes());
    slot[0x32..0x3a].copy_from_slice(&ctx.gdtr.base.to_le_bytes());
    slot[0x40..0x42].copy_from_slice(&ctx.cs.selector.to_le_bytes());
    (X86_SLOTS + apic_id as u64 * X86_SLOT_SIZE, slot)
}

/// The IPI stub: INIT then SIPI (twice, as the MP protocol does) to `apic_id`, then the
/// returned offset of its last instruction, where the mock breaks. Clobbers RDI only.
pub fn x86_ipi_stub(apic_id: u32) -> (Vec<u8>, u64) {
    let mut code = Vec::new();
    let mov_rdi = |code: &mut Vec<u8>, addr: u64| {
        code.extend([0x48, 0xbf]); // mov rdi, imm64 (a disp32 would sign-extend and fault)
        code.extend(addr.to_le_bytes());
    };
    let store = |code: &mut Vec<u8>, value: u32| {
        code.extend([0xc7, 0x07]); // mov dword [rdi], imm32
        code.extend(value.to_le_bytes());
    };
    mov_rdi(&mut code, LOCAL_APIC + 0x310);
    store(&mut code, apic_id << 24);
    mov_rdi(&mut code, LOCAL_APIC + 0x300);
    store(&mut code, 0x4500); // INIT, assert
    let sipi = 0x4600 | (X86_TRAMPOLINE >> 12) as u32;
    store(&mut code, sipi);
    store(&mut code, sipi);
    let end = code.len() as u64;
    code.push(0x90); // nop: the mock's breakpoint
    (code, end)
}

/// The arm64 trampoline: x0 points at an [`HvArm64InitialVpContext`], whose layout the loads
/// follow.
pub fn arm64_trampoline() -> Vec<u8> {
    let ldr_x1 = |off: u32| 0xf940_0001 | ((off / 8) << 10); // ldr x1, [x0, #off]
    let words: [u32; 25] = [
        ldr_x1(0x18),
        0xd518_a201, // msr mair_el1, x1
        ldr_x1(0x20),
        0xd518_2041, // msr tcr_el1, x1
        ldr_x1(0x30),
        0xd518_2001, // msr ttbr0_el1, x1
        ldr_x1(0x38),
        0xd518_2021, // msr ttbr1_el1, x1
        ldr_x1(0x28),
        0xd518_c001, // msr vbar_el1, x1
        0xd503_3b9f, // dsb ish
        0xd503_3fdf, // isb
        0xd508_871f, // tlbi vmalle1
        0xd503_379f, // dsb nsh
        0xd503_3fdf, // isb
        ldr_x1(0x10),
        0xd518_1001, // msr sctlr_el1, x1
        0xd503_3fdf, // isb
        ldr_x1(0x08),
        0x9100_003f,                      // mov sp, x1
        0xf940_0012 | ((0x40 / 8) << 10), // ldr x18, [x0, #0x40]
        ldr_x1(0x00),
        0xd61f_0020, // br x1
        0xd420_0000, // brk #0 (never reached)
        0xd420_0000,
    ];
    words.as_bytes().to_vec()
}

pub fn arm64_slot(vp: u32, ctx: &HvArm64InitialVpContext) -> (u64, Vec<u8>) {
    (ARM64_SLOTS + vp as u64 * 0x80, ctx.as_bytes().to_vec())
}

/// QEMU virt's MPIDR affinity for CPU `index` (clusters of 8).
pub fn arm64_mpidr(index: u32) -> u64 {
    (((index / 8) as u64) << 8) | (index % 8) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_trampoline_layout() {
        let t = x86_trampoline();
        // The 16-bit code ends with a far jump to the 32-bit part with selector 0x08.
        let pm32 = (X86_PM32 as u32).to_le_bytes();
        let pos = t.windows(4).position(|w| w == pm32).unwrap();
        assert_eq!(&t[pos + 4..pos + 6], &[0x08, 0x00]);
        assert_eq!(t[(X86_LM64 - X86_TRAMPOLINE) as usize], 0x89);
        // The GDT has a 64-bit code descriptor at 0x18.
        let gdt = (X86_GDT - X86_TRAMPOLINE) as usize;
        assert_eq!(
            &t[gdt + 0x18..gdt + 0x20],
            &0x00af_9a00_0000_ffffu64.to_le_bytes()
        );
    }

    #[test]
    fn x86_slots_follow_the_apic_id() {
        let ctx = HvX64InitialVpContext {
            rip: 0x1234,
            cr3: 0x5000,
            gdtr: hvdef::x86_64::HvX64TableRegister {
                pad: [0; 3],
                limit: 0x17,
                base: 0x10_4000,
            },
            cs: hvdef::x86_64::HvX64SegmentRegister {
                selector: 0x08,
                ..Default::default()
            },
            ..Default::default()
        };
        let (gpa, slot) = x86_slot(3, &ctx);
        assert_eq!(gpa, X86_SLOTS + 3 * 0x80);
        assert_eq!(
            u64::from_le_bytes(slot[0x28..0x30].try_into().unwrap()),
            0x1234
        );
        assert_eq!(
            u64::from_le_bytes(slot[0x08..0x10].try_into().unwrap()),
            0x5000
        );
        assert_eq!(&slot[0x30..0x32], &[0x17, 0]);
        assert_eq!(&slot[0x40..0x42], &[0x08, 0]);
    }

    #[test]
    fn ipi_stub_targets_the_apic() {
        let (code, end) = x86_ipi_stub(5);
        assert_eq!(code[end as usize], 0x90);
        assert!(code.windows(4).any(|w| w == (5u32 << 24).to_le_bytes()));
        assert!(code.windows(4).any(|w| w == 0x4608u32.to_le_bytes()));
    }

    #[test]
    fn arm64_encodings() {
        let t = arm64_trampoline();
        let word = |i: usize| u32::from_le_bytes(t[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(word(0), 0xf940_0c01); // ldr x1, [x0, #0x18]
        assert_eq!(word(20), 0xf940_2012); // ldr x18, [x0, #0x40]
        assert_eq!(arm64_mpidr(9), 0x101);
    }
}
