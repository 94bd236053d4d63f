//! COM1 (shared with the guest, which drives the same UART through unintercepted port I/O; one
//! CPU, so their lines never interleave mid-exit) and QEMU's isa-debug-exit at port 0xf4.
#![expect(unsafe_code, reason = "port I/O: COM1 and isa-debug-exit")]

use core::fmt::{self, Write};

const COM1: u16 = 0x3f8;
const LSR: u16 = COM1 + 5;
const LSR_THR_EMPTY: u8 = 1 << 5;
const DEBUG_EXIT: u16 = 0xf4;

/// QEMU's exit codes: 33 pass, 35 fail (`mockhv::qemu::EXIT_PASS` / `EXIT_FAIL`); the device
/// exits with (v << 1) | 1 for a write of v.
pub const EXIT_PASS: u64 = 33;
pub const EXIT_FAIL: u64 = 35;

fn outb(port: u16, value: u8) {
    // SAFETY: COM1 and isa-debug-exit ports; port output touches no memory.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack))
    };
}

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: reading COM1's line status register has no side effect.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack))
    };
    value
}

fn put(byte: u8) {
    while inb(LSR) & LSR_THR_EMPTY == 0 {}
    outb(COM1, byte);
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

/// Ends the run with QEMU exit `code` (33 or 35), then halts for good: the device's exit is
/// asynchronous under TCG. Without the device QEMU runs on in the halt loop (its timeout
/// ends it), never into a pass.
pub fn exit(code: u64) -> ! {
    outb(DEBUG_EXIT, (code >> 1) as u8);
    loop {
        // SAFETY: masks interrupts and halts; touches no memory.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Writes `bytes` to the trace port (QEMU's debugcon, which the runner points at the trace
/// file with `-debugcon file:PATH`; without one QEMU drops them).
pub fn trace_write(bytes: &[u8]) {
    // SAFETY: `rep outsb` reads `bytes` (RSI, RCX bytes, forward: the ABI keeps DF clear) and
    // writes them to the debugcon port; it writes no memory.
    unsafe {
        core::arch::asm!(
            "rep outsb",
            in("dx") invm_abi::TRACE_PORT_X86_64,
            inout("rsi") bytes.as_ptr() => _,
            inout("rcx") bytes.len() => _,
            options(nostack, readonly)
        )
    };
}
