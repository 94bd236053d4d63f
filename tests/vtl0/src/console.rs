//! The serial console: every line the kernel prints starts with `vtl0: `.

use core::fmt::{self, Write};

pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            crate::arch::putc(b);
        }
        Ok(())
    }
}

/// Prints one `vtl0: ` line.
pub fn line(args: fmt::Arguments<'_>) {
    // Console writes cannot fail.
    let _ = Console.write_str(vtl0::LINE_PREFIX);
    let _ = Console.write_fmt(args);
    let _ = Console.write_str("\n");
}

#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::console::line(format_args!($($arg)*)) };
}
