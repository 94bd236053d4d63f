//! x86_64 exception handling: every exception is fatal in the paravisor, so the handler prints
//! the vector, error code, registers and CR2, then fails the run.
#![expect(
    unsafe_code,
    reason = "the trap stubs are global_asm!; loading the IDT is lidt"
)]

use crate::ExitCode;
use core::mem::{offset_of, size_of};
use spin::Once;

const VECTORS: usize = 32;

core::arch::global_asm!(
    include_str!("trap.S"),
    frame_gprs = const offset_of!(TrapFrame, vector),
    frame_rax = const offset_of!(TrapFrame, rax),
    frame_rbx = const offset_of!(TrapFrame, rbx),
    frame_rcx = const offset_of!(TrapFrame, rcx),
    frame_rdx = const offset_of!(TrapFrame, rdx),
    frame_rsi = const offset_of!(TrapFrame, rsi),
    frame_rdi = const offset_of!(TrapFrame, rdi),
    frame_rbp = const offset_of!(TrapFrame, rbp),
    frame_r8 = const offset_of!(TrapFrame, r8),
    frame_r9 = const offset_of!(TrapFrame, r9),
    frame_r10 = const offset_of!(TrapFrame, r10),
    frame_r11 = const offset_of!(TrapFrame, r11),
    frame_r12 = const offset_of!(TrapFrame, r12),
    frame_r13 = const offset_of!(TrapFrame, r13),
    frame_r14 = const offset_of!(TrapFrame, r14),
    frame_r15 = const offset_of!(TrapFrame, r15),
    options(att_syntax)
);

unsafe extern "C" {
    static boot_trap_stubs: [u64; VECTORS];
}

/// The registers `trap_common` stores (at the offsets the compiler gives it), then what the stub
/// and the CPU pushed.
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

// The stub's vector and error code, then the CPU's frame (RIP, CS, RFLAGS, RSP, SS), follow the
// registers in the order they were pushed; nothing after SS.
const _: () = {
    let pushed = offset_of!(TrapFrame, vector);
    assert!(offset_of!(TrapFrame, error) == pushed + 8);
    assert!(offset_of!(TrapFrame, rip) == pushed + 16);
    assert!(offset_of!(TrapFrame, cs) == pushed + 24);
    assert!(offset_of!(TrapFrame, rflags) == pushed + 32);
    assert!(offset_of!(TrapFrame, rsp) == pushed + 40);
    assert!(offset_of!(TrapFrame, ss) == pushed + 48);
    assert!(size_of::<TrapFrame>() == 22 * 8);
};

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
