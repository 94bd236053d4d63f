//! x86_64 exception handling: every exception is fatal in the paravisor, so the handler prints
//! the vector, error code, registers and CR2, then fails the run.
#![expect(
    unsafe_code,
    reason = "the trap stubs are global_asm!; loading the IDT is lidt"
)]

use crate::ExitCode;
use spin::Once;

const VECTORS: usize = 32;

core::arch::global_asm!(
    r#"
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
    push %r15
    push %r14
    push %r13
    push %r12
    push %r11
    push %r10
    push %r9
    push %r8
    push %rbp
    push %rdi
    push %rsi
    push %rdx
    push %rcx
    push %rbx
    push %rax
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
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static boot_trap_stubs: [u64; VECTORS];
}

/// The registers `trap_common` pushed, then what the stub and the CPU pushed.
#[repr(C)]
struct TrapFrame {
    rax: u64,
    rbx: u64,
    rcx: u64,
    rdx: u64,
    rsi: u64,
    rdi: u64,
    rbp: u64,
    r8: u64,
    r9: u64,
    r10: u64,
    r11: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
    vector: u64,
    error: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

#[repr(C, align(16))]
struct Idt([u128; VECTORS]);

static IDT: Once<Idt> = Once::new();

fn gate(handler: u64) -> u128 {
    let low = (handler & 0xffff) | (0x08 << 16) | (0x8e00 << 32) | ((handler >> 16) & 0xffff) << 48;
    (low as u128) | ((handler >> 32) as u128) << 64
}

pub(super) fn init() {
    IDT.call_once(|| {
        // SAFETY: boot_trap_stubs is an immutable table in .rodata built by the assembler.
        let stubs = unsafe { &boot_trap_stubs };
        Idt(core::array::from_fn(|i| gate(stubs[i])))
    });
    load();
}

pub(super) fn load() {
    let idt = IDT.get().expect("IDT initialised by the boot CPU");
    let ptr = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: x86_64::VirtAddr::new(idt as *const Idt as u64),
    };
    // SAFETY: the IDT is 'static and every gate points at a stub in this image.
    unsafe { x86_64::instructions::tables::lidt(&ptr) };
}

const NAMES: [&str; VECTORS] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved",
    "#MF x87 error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD error",
    "#VE virtualization exception",
    "#CP control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved",
];

#[unsafe(no_mangle)]
extern "C" fn boot_x86_64_trap(f: &TrapFrame) -> ! {
    let name = NAMES.get(f.vector as usize).copied().unwrap_or("unknown");
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    crate::console::write_fmt_emergency(format_args!(
        "\nFATAL: cpu {} exception {} ({name}) error {:#x} at rip {:#018x}\n\
         cs {:#x} rflags {:#x} rsp {:#018x} ss {:#x} cr2 {cr2:#018x}\n\
         rax {:#018x} rbx {:#018x} rcx {:#018x} rdx {:#018x}\n\
         rsi {:#018x} rdi {:#018x} rbp {:#018x} r8  {:#018x}\n\
         r9  {:#018x} r10 {:#018x} r11 {:#018x} r12 {:#018x}\n\
         r13 {:#018x} r14 {:#018x} r15 {:#018x}\n",
        crate::cpu::index_for_report(),
        f.vector,
        f.error,
        f.rip,
        f.cs,
        f.rflags,
        f.rsp,
        f.ss,
        f.rax,
        f.rbx,
        f.rcx,
        f.rdx,
        f.rsi,
        f.rdi,
        f.rbp,
        f.r8,
        f.r9,
        f.r10,
        f.r11,
        f.r12,
        f.r13,
        f.r14,
        f.r15
    ));
    super::exit(ExitCode::Failure)
}
