//! Facade over the active architecture's hypervisor interface: detection, the hypercall ABI,
//! the VTL return, VTL0's registers and intercepts, synthetic-register writes.
#![expect(
    unsafe_code,
    reason = "the hypercall instruction, VTL switch, system registers: assembly"
)]

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(target_arch = "aarch64")]
pub use aarch64::*;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;
