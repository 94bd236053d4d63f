//! The host's entry: the PVH note QEMU's `-kernel` looks for, the 32-bit stub (paging off,
//! EBX = start info) that turns on long mode over the host's own identity map of the low
//! 4 GiB, and the IDT, so an exception in the host is one line and a failing exit instead of a
//! triple fault (which QEMU's -no-reboot turns into exit 0).
#![expect(
    unsafe_code,
    reason = "the PVH entry, page tables, GDT and IDT are global_asm!"
)]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a"
    .balign 4
    .long 4                      /* namesz */
    .long 8                      /* descsz: QEMU reads a quad for ELFCLASS64 */
    .long 18                     /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad invm_pvh_start32
    .balign 4

    .section .data.pagetables, "aw"
    /* Identity map of the first 4 GiB with 2 MiB pages: the host's image, the guest's RAM
       (the model reads and writes it) and nothing it needs beyond. The guest's RAM above
       4 GiB gets its entries at boot (`map_high_ram`). */
    .balign 4096
invm_pml4:
    .quad invm_pdpt + 0x3
    .fill 511, 8, 0
    .global invm_pdpt
invm_pdpt:
    .quad invm_pd + 0x0003
    .quad invm_pd + 0x1003
    .quad invm_pd + 0x2003
    .quad invm_pd + 0x3003
    .fill 508, 8, 0
invm_pd:
    .set invm_page, 0
    .rept 2048
    .quad (invm_page << 21) | 0x83
    .set invm_page, invm_page + 1
    .endr

    .section .rodata
    .balign 16
invm_gdt:
    .quad 0
    .quad 0x00af9b000000ffff     /* 0x08: 64-bit code */
    .quad 0x00cf93000000ffff     /* 0x10: data */
invm_gdt_end:
    .balign 8
invm_gdt_ptr:
    .word invm_gdt_end - invm_gdt - 1
    .quad invm_gdt

    .section .text.boot, "ax"
    .code32
    .global invm_pvh_start32
invm_pvh_start32:
    cli
    cld
    mov %ebx, %esi
    mov $invm_pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x220, %eax              /* PAE | OSFXSR (the host's XMM moves, svm.rs) */
    mov %eax, %cr4
    mov $0xc0000080, %ecx        /* EFER */
    rdmsr
    or $0x100, %eax              /* LME */
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax         /* PG | WP | PE */
    mov %eax, %cr0
    lgdt invm_gdt_ptr
    ljmp $0x08, $1f
    .code64
1:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    lea __bss_start(%rip), %rdi
    lea __bss_end(%rip), %rcx
    sub %rdi, %rcx
    xor %eax, %eax
    rep stosb
    lea __stack_top(%rip), %rsp
    xor %ebp, %ebp
    mov %esi, %edi               /* start info for invm_main */
    call invm_main
    ud2

    /* Exception stubs, 16 bytes apart: push a zero error code where the CPU pushes none, then
       the vector, so invm_exception sees one frame layout. */
    .macro invm_vector n
    .balign 16
    push $0
    push $\n
    jmp invm_exception_common
    .endm
    .macro invm_vector_error n
    .balign 16
    push $\n
    jmp invm_exception_common
    .endm

    .text
    .balign 16
    .global invm_vectors
invm_vectors:
    invm_vector 0
    invm_vector 1
    invm_vector 2
    invm_vector 3
    invm_vector 4
    invm_vector 5
    invm_vector 6
    invm_vector 7
    invm_vector_error 8
    invm_vector 9
    invm_vector_error 10
    invm_vector_error 11
    invm_vector_error 12
    invm_vector_error 13
    invm_vector_error 14
    invm_vector 15
    invm_vector 16
    invm_vector_error 17
    invm_vector 18
    invm_vector 19
    invm_vector 20
    invm_vector_error 21
    invm_vector 22
    invm_vector 23
    invm_vector 24
    invm_vector 25
    invm_vector 26
    invm_vector 27
    invm_vector 28
    invm_vector_error 29
    invm_vector_error 30
    invm_vector 31

invm_exception_common:
    mov %rsp, %rdi
    and $-16, %rsp
    call invm_exception
    ud2
"#,
    options(att_syntax)
);

/// What an exception stub leaves on the stack, lowest address first.
#[repr(C)]
pub struct ExceptionFrame {
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
}

const VECTORS: usize = 32;
const STUB_SIZE: u64 = 16;

#[repr(C, align(16))]
struct Idt(UnsafeCell<[u64; 2 * VECTORS]>);

// SAFETY: written once by `install_idt`, on the one CPU, before anything can raise an
// exception through it; read only by the CPU afterwards.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([0; 2 * VECTORS]));

unsafe extern "C" {
    static invm_vectors: u8;
}

/// Points vectors 0-31 at the stubs (64-bit interrupt gates, selector 0x08) and loads the IDT.
pub fn install_idt() {
    let base = &raw const invm_vectors as u64;
    // SAFETY: see `Sync for Idt`: nothing else refers to the table yet.
    let idt = unsafe { &mut *IDT.0.get() };
    for (n, gate) in idt.chunks_exact_mut(2).enumerate() {
        let handler = base + n as u64 * STUB_SIZE;
        gate[0] =
            (handler & 0xffff) | (0x08 << 16) | (0x8e << 40) | ((handler >> 16) & 0xffff) << 48;
        gate[1] = handler >> 32;
    }
    let pointer: [u16; 5] = {
        let at = idt.as_ptr() as u64;
        let limit = (size_of::<[u64; 2 * VECTORS]>() - 1) as u16;
        [
            limit,
            at as u16,
            (at >> 16) as u16,
            (at >> 32) as u16,
            (at >> 48) as u16,
        ]
    };
    // SAFETY: the table above is complete and static; `lidt` reads the 10-byte pointer.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) pointer.as_ptr(), options(nostack)) };
}

/// Where the host copies its real-mode AP trampoline (SIPI vector TRAMPOLINE >> 12): the
/// host's page, not the guest's RAM (`invm_abi::Ram::guest_x86_64`): out of its memory maps,
/// its nested tables and the model's RAM.
pub const TRAMPOLINE: u64 = invm_abi::AP_TRAMPOLINE_X86_64;
const _: () = assert!(TRAMPOLINE.is_multiple_of(0x1000) && TRAMPOLINE < 0x10_0000);

core::arch::global_asm!(
    r#"
    .section .rodata.invm_trampoline, "a"
    /* Copied to TRAMPOLINE and started there by INIT-SIPI-SIPI in real mode, CS = TRAMPOLINE
       >> 4, IP 0: protected mode on its own GDT (its linear addresses are TRAMPOLINE plus the
       offset), then long mode over the host's identity map as the boot CPU's entry does,
       then invm_ap_start64 at the host's address. */
    .global invm_ap_trampoline
    .global invm_ap_trampoline_end
    .code16
invm_ap_trampoline:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (invm_tramp_gdt_ptr - invm_ap_trampoline)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $({tramp} + 1f - invm_ap_trampoline)
    .code32
1:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov $invm_pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x220, %eax              /* PAE | OSFXSR (the host's XMM moves, svm.rs) */
    mov %eax, %cr4
    mov $0xc0000080, %ecx        /* EFER */
    rdmsr
    or $0x100, %eax              /* LME */
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax         /* PG | WP | PE */
    mov %eax, %cr0
    lgdt invm_gdt_ptr
    ljmp $0x08, $invm_ap_start64
    .balign 8
invm_tramp_gdt:
    .quad 0
    .quad 0x00cf9b000000ffff     /* 0x08: 32-bit code */
    .quad 0x00cf93000000ffff     /* 0x10: data */
invm_tramp_gdt_ptr:
    .word 23
    .long {tramp} + invm_tramp_gdt - invm_ap_trampoline
invm_ap_trampoline_end:

    .text
    .code64
invm_ap_start64:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov INVM_AP_STACK(%rip), %rsp
    mov INVM_AP_VP(%rip), %rdi
    xor %ebp, %ebp
    call invm_ap_main
    ud2
"#,
    tramp = const TRAMPOLINE,
    options(att_syntax)
);

unsafe extern "C" {
    static invm_ap_trampoline: u8;
    static invm_ap_trampoline_end: u8;
}

/// The AP being started: its VP and stack top (read by `invm_ap_start64`), and whether it
/// has read them (so the next start may overwrite them).
#[unsafe(no_mangle)]
static INVM_AP_VP: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static INVM_AP_STACK: AtomicU64 = AtomicU64::new(0);
static AP_UP: AtomicBool = AtomicBool::new(false);

const AP_STACK_SIZE: usize = 0x8000;

#[repr(C, align(16))]
struct ApStacks(UnsafeCell<[[u8; AP_STACK_SIZE]; super::MAX_VPS]>);

// SAFETY: each stack is used by the one AP started with it, never by anything else.
unsafe impl Sync for ApStacks {}

static AP_STACKS: ApStacks = ApStacks(UnsafeCell::new([[0; AP_STACK_SIZE]; super::MAX_VPS]));

/// The AP's first act in Rust: it has its VP and stack, the next start may go on.
pub fn ap_started() {
    AP_UP.store(true, Ordering::Release);
}

const LAPIC: u64 = 0xfee0_0000;
const ICR_LOW: u64 = LAPIC + 0x300;
const ICR_HIGH: u64 = LAPIC + 0x310;
const ICR_BUSY: u32 = 1 << 12;

fn icr(apic_id: u32, low: u32) {
    // SAFETY: the xAPIC's ICR, identity-mapped by the host (the low 4 GiB); the guests' nested
    // tables do not map it, so only the host programs it.
    unsafe {
        core::ptr::write_volatile(ICR_HIGH as *mut u32, apic_id << 24);
        core::ptr::write_volatile(ICR_LOW as *mut u32, low);
        while core::ptr::read_volatile(ICR_LOW as *const u32) & ICR_BUSY != 0 {}
    }
}

/// Starts CPU `vp` (APIC ID `vp`, as QEMU numbers them) at the trampoline with INIT-SIPI-SIPI:
/// it runs `invm_ap_main(vp)` on its own stack. Waits until it has picked both up; false if
/// it never does (no such CPU: fewer `-smp` CPUs than VPs).
pub fn start_ap(vp: u32) -> bool {
    let (start, end) = (
        &raw const invm_ap_trampoline as usize,
        &raw const invm_ap_trampoline_end as usize,
    );
    // SAFETY: the trampoline's bytes in the host's rodata; TRAMPOLINE is the host's own page
    // (out of the guests' maps and nested tables), identity-mapped, and no other CPU runs
    // it now (starts are one at a time: the caller holds the host's lock and waits below).
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rsi") start => _,
            inout("rdi") TRAMPOLINE => _,
            inout("rcx") end - start => _,
            options(nostack)
        );
    }
    // SAFETY: `vp` < MAX_VPS (the caller's check); the address of its stack, no reference.
    let stack = unsafe { (AP_STACKS.0.get() as *mut [u8; AP_STACK_SIZE]).add(vp as usize) };
    INVM_AP_STACK.store(stack as u64 + AP_STACK_SIZE as u64, Ordering::Relaxed);
    INVM_AP_VP.store(vp.into(), Ordering::Relaxed);
    AP_UP.store(false, Ordering::Release);
    icr(vp, 0x4500); // INIT, assert
    let vector = (TRAMPOLINE >> 12) as u32;
    icr(vp, 0x4600 | vector); // SIPI
    icr(vp, 0x4600 | vector);
    // An AP is up within microseconds of its own time; but under TCG with many vCPU threads
    // on few host cores its thread may not run for a while: give it about 20 s of TSC (QEMU's
    // runs at the host's rate, GHz).
    // SAFETY: reads the time-stamp counter; no side effect.
    let start = unsafe { core::arch::x86_64::_rdtsc() };
    while !AP_UP.load(Ordering::Acquire) {
        // SAFETY: as above.
        if unsafe { core::arch::x86_64::_rdtsc() }.wrapping_sub(start) > 40_000_000_000 {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// Loads the IDT `install_idt` built (on an AP).
pub fn load_idt() {
    // SAFETY: see `Sync for Idt`: read-only from here on.
    let idt = unsafe { &*IDT.0.get() };
    let at = idt.as_ptr() as u64;
    let limit = (size_of::<[u64; 2 * VECTORS]>() - 1) as u16;
    let pointer: [u16; 5] = [
        limit,
        at as u16,
        (at >> 16) as u16,
        (at >> 32) as u16,
        (at >> 48) as u16,
    ];
    // SAFETY: the table is complete and static; `lidt` reads the 10-byte pointer.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) pointer.as_ptr(), options(nostack)) };
}

/// A CPU with nothing left to run waits here for good.
pub fn park() -> ! {
    loop {
        // SAFETY: masks interrupts and halts; touches no memory.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

unsafe extern "C" {
    static mut invm_pdpt: [u64; 512];
}

/// Gives the host's own identity map the RAM above 4 GiB (the static map covers the low
/// 4 GiB): every GiB that holds some of `ram` is mapped, with a 1 GiB page where the CPU has
/// them, else a page directory of 2 MiB pages from the heap, so the model can read and write
/// the guest's RAM there. On the boot CPU before any other starts (they load the same CR3)
/// and before anything touches that RAM; CR3 is reloaded after.
pub fn map_high_ram(ram: &[core::ops::Range<u64>]) -> Result<(), &'static str> {
    use crate::gpt::Tables;
    const GIB: u64 = 1 << 30;
    let gib_pages = super::svm::gib_pages();
    let pdpt = (&raw mut invm_pdpt).cast::<u64>();
    for r in ram.iter().filter(|r| r.end > 4 * GIB) {
        if r.end > 512 * GIB {
            return Err("guest RAM beyond the host's 512 GiB identity map");
        }
        for gib in (r.start / GIB).max(4)..r.end.div_ceil(GIB) {
            let entry = if gib_pages {
                (gib * GIB) | 0x83
            } else {
                let mut tables = crate::gpt::HeapTables;
                let pd = tables
                    .alloc()
                    .ok_or("no heap left for the host's page directories")?;
                for i in 0..512 {
                    tables.write(pd, i, (gib * GIB + (i as u64) * (2 << 20)) | 0x83);
                }
                pd | 0x3
            };
            // SAFETY: an entry of the host's PDPT (gib < 512) that was not present; nothing
            // refers to its memory yet.
            unsafe { pdpt.add(gib as usize).write_volatile(entry) };
        }
    }
    // SAFETY: reloading CR3 with its own value flushes the TLB; the map only grew.
    unsafe { core::arch::asm!("mov {t}, cr3", "mov cr3, {t}", t = out(reg) _, options(nostack)) };
    Ok(())
}
