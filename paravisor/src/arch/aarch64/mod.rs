//! aarch64's side of the hypervisor interface, one file per job; `arch/mod.rs` is the contract
//! shared code sees. Only ISA facts live here: instructions (`hvc` and its immediates, SMCCC),
//! register names and message layouts. Whatever needs per-CPU state or a hypercall is composed
//! above (`crate::synthetic`, `crate::intercept`).

pub mod detect;
pub mod exception;
pub mod hypercall;
pub mod intercept;
pub mod paging;
pub mod register_page;
pub mod vp_start;
pub mod vtl_switch;
