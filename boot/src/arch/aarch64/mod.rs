//! aarch64 boot: EL1/EL2 entry, exception vectors, PL011 UART, semihosting exit, per-CPU
//! record, device tree.
#![expect(
    unsafe_code,
    reason = "UART MMIO, semihosting, TLB maintenance, the device tree blob"
)]

mod entry;
mod trap;

use crate::{fdt::Fdt, BootInfo, EntryMode, ExitCode};
use aarch64_cpu::registers::{Readable, Writeable, TPIDR_EL1};

const PL011_BASE: usize = 0x0900_0000;
const PL011_FR_TXFF: u32 = 1 << 5;
/// QEMU `virt` places the device tree at the start of RAM for ELF images (x0 is 0).
const DEFAULT_DTB: u64 = 0x4000_0000;
/// Largest device tree accepted; QEMU's is 1 MiB.
const DTB_MAX: usize = 2 << 20;

pub(crate) fn uart_write(byte: u8) {
    let dr = PL011_BASE as *mut u32;
    let fr = (PL011_BASE + 0x18) as *const u32;
    // SAFETY: the PL011's data and flag registers, mapped as device memory by the entry code.
    unsafe {
        while core::ptr::read_volatile(fr) & PL011_FR_TXFF != 0 {}
        core::ptr::write_volatile(dr, byte as u32);
    }
}

/// Ends the run: QEMU (with -semihosting) exits with [`ExitCode::qemu_code`]; elsewhere the
/// CPU halts.
pub fn exit(code: ExitCode) -> ! {
    const SYS_EXIT: u64 = 0x18;
    const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;
    let block: [u64; 2] = [ADP_STOPPED_APPLICATION_EXIT, code.qemu_code() as u64];
    // SAFETY: a semihosting call; QEMU reads the two-word block and exits.
    unsafe {
        core::arch::asm!("hlt #0xf000", in("x0") SYS_EXIT, in("x1") block.as_ptr(), options(nostack));
    }
    halt()
}

/// Stops this CPU for good: interrupts masked, `wfi` for ever (Hyper-V traps the WFI and
/// deschedules the VP until an interrupt it can take, which never comes).
pub fn halt() -> ! {
    // SAFETY: masking interrupts (DAIF) touches no memory.
    unsafe { core::arch::asm!("msr daifset, #0xf", options(nomem, nostack)) };
    loop {
        aarch64_cpu::asm::wfi();
    }
}

pub(crate) fn set_cpu_base(addr: usize) {
    TPIDR_EL1.set(addr as u64);
}

pub(crate) fn cpu_base() -> usize {
    TPIDR_EL1.get() as usize
}

/// The same register: reading it is always safe, what it holds is only trusted once checked.
pub(crate) fn cpu_base_register() -> usize {
    cpu_base()
}

unsafe extern "C" {
    fn boot_ap_start();
}

/// Where an AP's initial context must point: EL1, SP the top of its boot stack.
pub fn ap_entry() -> u64 {
    boot_ap_start as *const () as u64
}

/// Extends the identity map to the reported RAM above 4 GiB (see [`crate::paging`]) with 1 GiB
/// blocks in `boot_l1` (and level-2/3 tables for the edges), up to `pa_bits` (from
/// ID_AA64MMFR0_EL1.PARange) and the 39 bits T0SZ 25 translates. Call on the boot VP before
/// starting the others (their context carries the same TTBR0/TCR, and `boot_mmu_on` programs
/// them again); the first call's result is kept.
pub fn map_ram(ram: &[core::ops::Range<u64>], pa_bits: u32) -> &'static crate::paging::MappedRam {
    unsafe extern "C" {
        static boot_l1: [u64; 512];
    }
    crate::tables::map_ram(
        ram,
        crate::paging::Format::Aarch64,
        pa_bits,
        (&raw const boot_l1) as u64,
        flush_tlb,
    )
}

/// Makes the table writes visible to the walker and drops this CPU's cached translations.
fn flush_tlb() {
    // SAFETY: barriers and a local TLB invalidation; no memory or register effects beyond them.
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "tlbi vmalle1",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

/// A monotonic tick count (the virtual counter), for coarse timeouts.
pub fn now_ticks() -> u64 {
    aarch64_cpu::registers::CNTVCT_EL0.get()
}

/// Ticks of [`now_ticks`] per second: CNTFRQ_EL0, the frequency the firmware (or the
/// hypervisor) programmed; unprogrammed (0), 1 GHz, the fastest the architecture allows
/// (Armv8.6 fixes it there), so a timeout is never shorter than asked.
pub fn ticks_per_second() -> u64 {
    match aarch64_cpu::registers::CNTFRQ_EL0.get() {
        0 => 1_000_000_000,
        hz => hz,
    }
}

/// Vectors are installed by the entry code; nothing to do per AP beyond that.
pub fn load_traps() {
    entry::install_vectors();
}

fn read_device_tree(addr: u64, info: &mut BootInfo) {
    let addr = if addr == 0 { DEFAULT_DTB } else { addr };
    // Never a read of Device memory (block 0: QEMU virt's UART, GIC, flash) or beyond the
    // Normal memory the boot tables map.
    if let Err(why) = crate::loader::AARCH64.check(addr, 8) {
        crate::println!("boot: device tree at {addr:#x} is {why}; ignoring it, using defaults");
        return;
    }
    // SAFETY: 8 bytes of Normal, identity-mapped memory (checked above); only read.
    let header = unsafe { core::slice::from_raw_parts(addr as *const u8, 8) };
    let size = match Fdt::total_size(header) {
        Ok(size) if size > DTB_MAX => {
            crate::println!("boot: device tree claims {size} bytes; ignoring it");
            return;
        }
        Ok(size) if crate::loader::AARCH64.check(addr, size as u64).is_err() => {
            crate::println!(
                "boot: device tree at {addr:#x} claims {size} bytes, past mapped memory; ignoring it"
            );
            return;
        }
        Ok(size) => size,
        Err(_) => {
            crate::println!("boot: no device tree at {addr:#x}; using defaults");
            return;
        }
    };
    // SAFETY: as above: `size` bytes of Normal, identity-mapped memory (checked above).
    let blob = unsafe { core::slice::from_raw_parts(addr as *const u8, size) };
    let fdt = match Fdt::new(blob) {
        Ok(fdt) => fdt,
        Err(e) => {
            crate::println!("boot: malformed device tree ({e:?}); using defaults");
            return;
        }
    };
    match fdt.property("/chosen", "bootargs") {
        Ok(Some(args)) => {
            let args = args.strip_suffix(&[0]).unwrap_or(args);
            if !info.set_cmdline(args) {
                crate::println!(
                    "boot: command line truncated to {} bytes",
                    info.cmdline().len()
                );
            }
        }
        Ok(None) => {}
        Err(e) => crate::println!("boot: unreadable /chosen/bootargs ({e:?})"),
    }
    let mut dropped = false;
    if let Err(e) = fdt.memory(|addr, size| dropped |= !info.add_ram(addr, size)) {
        crate::println!("boot: unreadable /memory ({e:?})");
    }
    if dropped {
        crate::println!("boot: some /memory ranges were dropped");
    }
    match fdt.cpu_count().map(|n| info.set_vp_count(n)) {
        Ok(crate::VpCount::Used | crate::VpCount::Ignored) => {}
        Ok(crate::VpCount::AboveLimit { listed }) => crate::println!(
            "{}",
            crate::AboveLimit {
                source: "the device tree",
                listed: listed as u64
            }
        ),
        Err(e) => crate::println!("boot: unreadable /cpus ({e:?})"),
    }
}

/// Called by the entry code on the boot stack with BSS zeroed and the MMU on. `x0` is X0 at
/// `_start`: a device tree address (0: QEMU's default place), or, from an IGVM VP context, the
/// parameter pages' offset from the image's base (boot::igvm).
#[unsafe(no_mangle)]
extern "C" fn boot_aarch64_main(x0: u64, entry_el: u64) -> ! {
    crate::cpu::init(0);
    let mut info = BootInfo::new(if entry_el == 2 {
        EntryMode::El2DroppedToEl1
    } else {
        EntryMode::El1
    });
    // An IGVM VP context says so in X0 (OpenHCL's convention): no probing of 0x4000_0000 for a
    // device tree under IGVM, which would read memory nobody described.
    if x0 == crate::igvm::params_offset() {
        crate::igvm::read_params(&mut info);
    } else {
        read_device_tree(x0, &mut info);
    }
    crate::call_firmware_main(&info)
}
