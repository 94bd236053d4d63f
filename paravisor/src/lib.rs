//! The VTL2 paravisor. Its logic builds for the host (unit tests) and for the bare-metal targets;
//! only `arch/` and the firmware start-up below are bare-metal-only.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod detect;
pub mod hypercall;
pub mod options;
pub mod proxy;
pub mod vsm;
pub mod vtl0_boot;

#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod percpu;

#[cfg(target_os = "none")]
mod firmware;
#[cfg(target_os = "none")]
mod intercept;
#[cfg(target_os = "none")]
mod runloop;
#[cfg(target_os = "none")]
mod synthetic;
#[cfg(target_os = "none")]
pub use firmware::{panic, start, start_ap};
