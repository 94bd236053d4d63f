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

/// One line at a time, whichever VP prints it.
static LINE: crate::smp::Lock = crate::smp::Lock::new();

/// Prints one `vtl0: ` line (`vtl0: vp N: ` on a VP other than 0), never in the middle of
/// another VP's.
pub fn line(args: fmt::Arguments<'_>) {
    let vp = crate::smp::current();
    LINE.with(|| {
        // Console writes cannot fail.
        let _ = Console.write_str(vtl0::LINE_PREFIX);
        if vp != 0 {
            let _ = write!(Console, "vp {vp}: ");
        }
        let _ = Console.write_fmt(args);
        let _ = Console.write_str("\n");
    });
}

#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::console::line(format_args!($($arg)*)) };
}
