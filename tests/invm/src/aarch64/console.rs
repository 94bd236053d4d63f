//! The PL011 at 0x0900_0000 (shared with the guest, which writes it through its stage-2 device
//! block; one CPU, so their lines never interleave mid-exit) and the semihosting exit.

use core::fmt::{self, Write};

const PL011_BASE: usize = 0x0900_0000;
const PL011_FR: usize = 0x18;
const PL011_FR_TXFF: u32 = 1 << 5;

/// QEMU's exit codes: 33 pass, 35 fail (`mockhv::qemu::EXIT_PASS` / `EXIT_FAIL`).
pub const EXIT_PASS: u64 = 33;
pub const EXIT_FAIL: u64 = 35;

fn put(byte: u8) {
    // SAFETY: the PL011's flag and data registers, Device memory in the host's stage-1 map.
    unsafe {
        while core::ptr::read_volatile((PL011_BASE + PL011_FR) as *const u32) & PL011_FR_TXFF != 0 {
        }
        core::ptr::write_volatile(PL011_BASE as *mut u32, u32::from(byte));
    }
}

/// Unlocked, so the fatal paths (an exception inside the host) can always print.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                put(b'\r');
            }
            put(byte);
        }
        Ok(())
    }
}

pub fn print(args: fmt::Arguments<'_>) {
    let _ = Console.write_fmt(args);
}

/// Semihosting SYS_EXIT with ADP_Stopped_ApplicationExit: QEMU exits with `code`.
pub fn exit(code: u64) -> ! {
    const SYS_EXIT: u64 = 0x18;
    const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;
    let block: [u64; 2] = [ADP_STOPPED_APPLICATION_EXIT, code];
    // SAFETY: a semihosting call; QEMU reads the two-word block and exits.
    unsafe {
        core::arch::asm!("hlt #0xf000", in("x0") SYS_EXIT, in("x1") block.as_ptr(), options(nostack));
    }
    loop {
        // SAFETY: waits for an interrupt; touches nothing. Only reached without -semihosting.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}
