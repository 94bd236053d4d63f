//! The PL011 at 0x0900_0000 (shared with the guest, which writes it through its stage-2 device
//! block; one CPU, so their lines never interleave mid-exit) and the semihosting exit.
#![expect(unsafe_code, reason = "PL011 MMIO and semihosting")]

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

/// A semihosting call: operation `op`, parameter block `block`; QEMU's answer in X0.
fn semihost(op: u64, block: &[u64]) -> i64 {
    let ret: u64;
    // SAFETY: a semihosting call with `-semihosting`: QEMU reads the block (and the buffers it
    // points to, which the caller keeps alive) and answers in X0.
    unsafe {
        core::arch::asm!("hlt #0xf000", inout("x0") op => ret, in("x1") block.as_ptr(), options(nostack));
    }
    ret as i64
}

/// A file on QEMU's side, written through semihosting (SYS_OPEN mode "wb", SYS_WRITE).
pub struct HostFile(u64);

impl HostFile {
    pub fn create(path: &[u8]) -> Result<Self, &'static str> {
        const SYS_OPEN: u64 = 0x01;
        const MODE_WB: u64 = 5;
        let mut name = [0u8; 257];
        let Some(slot) = name.get_mut(..path.len()) else {
            return Err("the trace path is too long");
        };
        slot.copy_from_slice(path);
        let handle = semihost(
            SYS_OPEN,
            &[name.as_ptr() as u64, MODE_WB, path.len() as u64],
        );
        if handle < 0 {
            return Err("semihosting could not create the trace file");
        }
        Ok(Self(handle as u64))
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), &'static str> {
        const SYS_WRITE: u64 = 0x05;
        match semihost(
            SYS_WRITE,
            &[self.0, bytes.as_ptr() as u64, bytes.len() as u64],
        ) {
            0 => Ok(()),
            _ => Err("semihosting wrote the trace file short"),
        }
    }
}

/// Set by the first `exit`: a second one means the exit itself trapped back into the host.
static EXITING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Semihosting SYS_EXIT with ADP_Stopped_ApplicationExit: QEMU exits with `code`. Without
/// `-semihosting` the `hlt` is an undefined instruction at EL2, whose handler fails and comes
/// back here: the second entry skips semihosting and powers the machine off with PSCI
/// SYSTEM_OFF (SMC conduit with virtualization=on; QEMU then exits 0, which the runner never
/// counts as a pass), then waits for ever, so a missing option never loops printing.
pub fn exit(code: u64) -> ! {
    const SYS_EXIT: u64 = 0x18;
    const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;
    const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
    if !EXITING.swap(true, core::sync::atomic::Ordering::Relaxed) {
        let block: [u64; 2] = [ADP_STOPPED_APPLICATION_EXIT, code];
        // SAFETY: a semihosting call; QEMU reads the two-word block and exits.
        unsafe {
            core::arch::asm!("hlt #0xf000", in("x0") SYS_EXIT, in("x1") block.as_ptr(), options(nostack));
        }
    }
    // SAFETY: PSCI SYSTEM_OFF through the firmware's SMC conduit; it does not return when
    // implemented, and touches no memory of ours.
    unsafe {
        core::arch::asm!("smc #0", inout("x0") PSCI_SYSTEM_OFF => _, options(nomem, nostack))
    };
    loop {
        // SAFETY: waits for an interrupt; touches nothing.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}
