//! Facade over the active architecture's hypervisor interface: the exported instruction sites
//! the hypervisor (or the mock) sees, the hypercall ABI, synthetic-register access.
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
