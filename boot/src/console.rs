//! The early serial console, shared by every CPU.

use core::fmt::{self, Write};
use spin::Mutex;

static LOCK: Mutex<()> = Mutex::new(());

struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                crate::arch::uart_write(b'\r');
            }
            crate::arch::uart_write(b);
        }
        Ok(())
    }
}

/// Writes formatted text, one caller at a time so lines from different CPUs do not interleave.
pub fn write_fmt(args: fmt::Arguments<'_>) {
    let _guard = LOCK.lock();
    let _ = Uart.write_fmt(args);
}

/// Writes without waiting for the lock: for panics and traps, where the lock holder may be the
/// CPU that is failing. Output from two CPUs may interleave; it is still better than silence.
pub fn write_fmt_emergency(args: fmt::Arguments<'_>) {
    let _ = Uart.write_fmt(args);
}

/// `println!` for the firmware.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}
