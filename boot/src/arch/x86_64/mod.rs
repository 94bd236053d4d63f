//! x86_64 boot: PVH and long-mode entries, traps, 16550 UART, QEMU exit, per-CPU record.

mod entry;
mod trap;

use crate::{BootInfo, EntryMode, ExitCode};
use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;
/// QEMU's isa-debug-exit device; writing v exits with (v << 1) | 1.
const DEBUG_EXIT_PORT: u16 = 0xf4;
const PVH_START_INFO_MAGIC: u32 = 0x336e_c578;
/// The identity map covers the first 4 GiB; loader pointers above it are refused.
const IDENTITY_MAPPED: u64 = 1 << 32;

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

/// Stops this CPU for good.
pub fn halt() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

const IA32_GS_BASE: u32 = 0xc000_0101;

pub(crate) fn set_cpu_base(addr: usize) {
    // The MSR number is an immediate right before the wrmsr, so the mock's image audit can see
    // this is an architectural MSR and not a hypervisor access outside the exported sites.
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

/// Reads a NUL-terminated string the loader left in identity-mapped memory.
fn read_loader_cstr(paddr: u64, out: &mut [u8]) -> usize {
    if paddr == 0 || paddr >= IDENTITY_MAPPED - out.len() as u64 {
        return 0;
    }
    let mut len = 0;
    while len < out.len() {
        // SAFETY: the address is below 4 GiB (identity mapped); the loader owns the bytes and
        // nothing else writes them while we boot. Volatile: memory we do not own.
        let b = unsafe { core::ptr::read_volatile((paddr + len as u64) as *const u8) };
        if b == 0 {
            break;
        }
        out[len] = b;
        len += 1;
    }
    len
}

/// Called by the entry code on the boot stack with BSS zeroed. `start_info` is the PVH
/// `hvm_start_info` address, or 0 when entered through `_start64` (IGVM).
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
    if start_info != 0 && start_info < IDENTITY_MAPPED {
        // SAFETY: QEMU's PVH loader passes the identity-mapped address of hvm_start_info.
        let magic = unsafe { core::ptr::read_volatile(start_info as *const u32) };
        if magic == PVH_START_INFO_MAGIC {
            // SAFETY: as above; cmdline_paddr is at offset 24.
            let cmdline = unsafe { core::ptr::read_volatile((start_info + 24) as *const u64) };
            let mut buf = [0u8; crate::CMDLINE_MAX + 1];
            let len = read_loader_cstr(cmdline, &mut buf);
            if !info.set_cmdline(&buf[..len]) {
                crate::println!(
                    "boot: command line truncated to {} bytes",
                    info.cmdline().len()
                );
            }
            // The VP count comes from the ACPI MADT the loader built. rsdp_paddr (offset 32) is
            // in every hvm_start_info version (Xen's start_info.h: only the memory map needs
            // version 1), and 0 means "not present".
            // SAFETY: as above; rsdp_paddr is at offset 32, inside even a version 0 structure.
            let rsdp = unsafe { core::ptr::read_volatile((start_info + 32) as *const u64) };

            /// Loader memory read through the identity map of the first 4 GiB.
            struct IdentityMap;
            impl crate::acpi::PhysRead for IdentityMap {
                fn read(&self, paddr: u64, buf: &mut [u8]) -> bool {
                    // Ranges reaching past the identity map are not mapped; 0 is a null pointer.
                    match paddr.checked_add(buf.len() as u64) {
                        Some(end) if paddr != 0 && end <= IDENTITY_MAPPED => {}
                        _ => return false,
                    }
                    for (i, b) in buf.iter_mut().enumerate() {
                        // SAFETY: the whole range is non-null and below 4 GiB (identity mapped);
                        // the loader owns the bytes and nothing writes them while we boot.
                        // Volatile: memory we do not own.
                        *b = unsafe { core::ptr::read_volatile((paddr + i as u64) as *const u8) };
                    }
                    true
                }
            }
            if rsdp == 0 {
                crate::println!("boot: no ACPI tables in the PVH start info; assuming 1 VP");
            } else {
                match crate::acpi::cpu_count(&IdentityMap, rsdp) {
                    Ok(n) if n as usize > crate::MAX_VPS => {
                        crate::println!(
                            "boot: ACPI lists {n} VPs; using the first {}",
                            crate::MAX_VPS
                        );
                        info.vp_count = crate::MAX_VPS as u32;
                    }
                    Ok(n) => info.vp_count = n,
                    Err(e) => crate::println!(
                        "boot: cannot read ACPI tables at {rsdp:#x} ({e:?}); assuming 1 VP"
                    ),
                }
            }
        } else {
            crate::println!("boot: PVH start info has bad magic {magic:#x}; ignoring it");
        }
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

/// A monotonic tick count (the TSC), for coarse timeouts.
pub fn now_ticks() -> u64 {
    // SAFETY: rdtsc has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// A lower bound of ticks per second: the TSC runs at 1 GHz or faster on anything that runs
/// this firmware, so timeouts are "at least" their nominal length.
pub const TICKS_PER_SECOND: u64 = 1_000_000_000;

/// Loads this CPU's IDT (the table is shared); for APs.
pub fn load_traps() {
    trap::load();
}
