//! x86_64 boot: PVH and long-mode entries, traps, 16550 UART, QEMU exit, per-CPU record.
#![expect(
    unsafe_code,
    reason = "port I/O, the GS base, CR3 and linker-script symbols"
)]

mod entry;
mod pvh;
mod trap;

use crate::{BootInfo, EntryMode, ExitCode};
use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;
/// QEMU's isa-debug-exit device; writing v exits with (v << 1) | 1.
const DEBUG_EXIT_PORT: u16 = 0xf4;

pub(crate) fn uart_write(byte: u8) {
    // SAFETY: COM1 is the 16550 UART QEMU and Hyper-V provide; writing THR has no memory effects.
    unsafe {
        let mut lsr = Port::<u8>::new(COM1 + 5);
        while lsr.read() & 0x20 == 0 {}
        Port::<u8>::new(COM1).write(byte);
    }
}

fn uart_init() {
    let regs: [(u16, u8); 6] = [
        (1, 0x00), // no UART interrupts
        (3, 0x80), // DLAB on to set the divisor
        (0, 0x01), // 115200 baud
        (1, 0x00),
        (3, 0x03), // 8N1, DLAB off
        (2, 0xc7), // FIFO on and cleared
    ];
    for (reg, value) in regs {
        // SAFETY: programming the COM1 UART registers only affects the UART.
        unsafe { Port::<u8>::new(COM1 + reg).write(value) };
    }
}

/// Ends the run: QEMU exits with [`ExitCode::qemu_code`]; elsewhere the CPU halts.
pub fn exit(code: ExitCode) -> ! {
    let value: u32 = match code {
        ExitCode::Success => 0x10,
        ExitCode::Failure => 0x11,
    };
    // SAFETY: isa-debug-exit only exits QEMU; without the device the write is ignored.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(value) };
    halt()
}

/// Stops this CPU for good: interrupts off, `hlt` for ever (Hyper-V intercepts the HLT and
/// deschedules the VP until an interrupt it can take, which never comes).
pub fn halt() -> ! {
    x86_64::instructions::interrupts::disable();
    loop {
        x86_64::instructions::hlt();
    }
}

const IA32_GS_BASE: u32 = 0xc000_0101;

pub(crate) fn set_cpu_base(addr: usize) {
    // SAFETY: GS is not used for anything else; the record is 'static.
    unsafe {
        core::arch::asm!(
            "mov ecx, {msr}",
            "wrmsr",
            msr = const IA32_GS_BASE,
            in("eax") addr as u32,
            in("edx") (addr >> 32) as u32,
            out("ecx") _,
            options(nostack, preserves_flags)
        )
    };
}

pub(crate) fn cpu_base() -> usize {
    let base: usize;
    // SAFETY: GS base points at a CpuLocal whose first field is its own address.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) base, options(nostack, readonly, preserves_flags))
    };
    base
}

/// The GS base itself, read from its MSR rather than through it: safe to call before
/// [`set_cpu_base`] (a trap or panic that early), when following it would read garbage.
pub(crate) fn cpu_base_register() -> usize {
    x86_64::registers::model_specific::GsBase::read().as_u64() as usize
}

/// Called by the entry code on the boot stack with BSS zeroed. `start_info` is the PVH
/// `hvm_start_info` address, or 0 when entered through `_start64`, which only an IGVM VP
/// context targets (QEMU always enters through PVH).
#[unsafe(no_mangle)]
extern "C" fn boot_x86_64_main(start_info: u64) -> ! {
    crate::cpu::init(0);
    uart_init();
    trap::init();
    let mut info = BootInfo::new(if start_info == 0 {
        EntryMode::LongMode
    } else {
        EntryMode::Pvh
    });
    if start_info == 0 {
        // IGVM has no start info: the VP count and memory map are in the parameter pages.
        crate::igvm::read_params(&mut info);
    } else {
        pvh::read_start_info(start_info, &mut info);
    }
    crate::call_firmware_main(&info)
}

unsafe extern "C" {
    fn boot_ap_start64();
}

/// Where an AP's initial context must point: long mode, CR3/GDT as on the boot VP, RSP the top
/// of its boot stack.
pub fn ap_entry() -> u64 {
    boot_ap_start64 as *const () as u64
}

/// Extends the identity map to the reported RAM above 4 GiB (see [`crate::paging`]) with 1 GiB
/// pages when `one_gib_pages` (CPUID 0x80000001 EDX bit 26), else 2 MiB pages, up to `pa_bits`
/// (CPUID 0x80000008 EAX bits 7:0); the caller reads CPUID, which is the hypervisor's (the
/// firmware has the one CPUID site). Call on the boot VP before starting the others (they load
/// the same CR3); the first call's result is kept.
pub fn map_ram(
    ram: &[core::ops::Range<u64>],
    pa_bits: u32,
    one_gib_pages: bool,
) -> &'static crate::paging::MappedRam {
    unsafe extern "C" {
        static boot_pml4: [u64; 512];
    }
    crate::tables::map_ram(
        ram,
        crate::paging::Format::X86_64 { one_gib_pages },
        pa_bits,
        (&raw const boot_pml4) as u64,
        reload_cr3,
    )
}

/// Flushes this CPU's TLB (no global pages are used, so a CR3 reload drops every translation).
fn reload_cr3() {
    // SAFETY: writes CR3 with its own value: the same tables, only cached translations go.
    unsafe {
        core::arch::asm!(
            "mov {0}, cr3",
            "mov cr3, {0}",
            out(reg) _,
            options(nostack, preserves_flags)
        )
    };
}

/// A monotonic tick count (the TSC), for coarse timeouts.
pub fn now_ticks() -> u64 {
    // SAFETY: rdtsc has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// An upper bound of the TSC's ticks per second (8 GHz: no x86 CPU's TSC runs faster), so a
/// timeout counted in ticks is never shorter than asked (it may be longer on a slower TSC).
pub fn ticks_per_second() -> u64 {
    8_000_000_000
}

/// Loads this CPU's IDT (the table is shared); for APs.
pub fn load_traps() {
    trap::load();
}
