//! The arch contract: what the shared kernel (`kernel.rs`) uses from the active ISA. Each ISA
//! file holds its entry code, page tables, exception vectors, console, power-off, hypercall
//! interface setup and the probes' assembly.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(target_arch = "aarch64")]
use aarch64 as active;
#[cfg(target_arch = "x86_64")]
use x86_64 as active;

pub use active::{
    close_window, counter, counter_hz, entry_registers, fault, hypercall, hypercall_in,
    hyperv_init, idle, idt_and_ud, open_window, power_off, prepare_mode, probe_exec,
    probe_exec_el0, probe_read, probe_read_el0, probe_write, probe_write_el0, putc, stack_pointer,
    start_vp, vp_index, ARCH,
};

/// Bytes of the fast-register pool buffer (at least either arch's pool).
pub const POOL_BYTES: usize = 128;
const _: () = assert!(
    POOL_BYTES >= vtl0::Arch::X86_64.fast_pool_bytes()
        && POOL_BYTES >= vtl0::Arch::Aarch64.fast_pool_bytes()
);

/// Most canaried registers either arch has.
const MAX_CANARIES: usize = 40;

/// A completed hypercall.
pub struct CallDone {
    /// RAX / X0.
    pub result: u64,
    /// The fast-register pool after the call (little-endian, in pool order).
    pub pool: [u8; POOL_BYTES],
    bad: [&'static str; MAX_CANARIES],
    n_bad: usize,
}

impl CallDone {
    fn new(result: u64) -> CallDone {
        CallDone {
            result,
            pool: [0; POOL_BYTES],
            bad: [""; MAX_CANARIES],
            n_bad: 0,
        }
    }

    fn canary_broken(&mut self, name: &'static str) {
        if let Some(slot) = self.bad.get_mut(self.n_bad) {
            *slot = name;
            self.n_bad += 1;
        }
    }

    /// The registers whose canaries did not survive, in the order of `Arch::canaries`.
    pub fn bad_canaries(&self) -> &[&'static str] {
        &self.bad[..self.n_bad]
    }
}

/// The canaried registers of a call: always `Arch::canaries`, and `Arch::slow_only_canaries`
/// when it is not fast.
fn canaried(fast: bool) -> impl Iterator<Item = &'static str> {
    let slow: &'static [&'static str] = if fast { &[] } else { ARCH.slow_only_canaries() };
    ARCH.canaries().iter().chain(slow).copied()
}
