//! The arch contract: everything shared code may use of the active ISA's hypervisor interface,
//! as an explicit list. Each ISA folder has one file per job (the same names on both where the
//! job exists); the arch layer is a leaf: it states ISA facts (instructions, register and MSR
//! names, message layouts) and never calls into per-CPU state, the proxy or the run loop. What
//! composes those facts with hypercalls lives above: `crate::synthetic` (detection, enabling
//! hypercalls, features, synthetic registers, the VTL switch's and register page's set-up) and
//! `crate::intercept` (intercept messages into the proxy's types).

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
use aarch64 as isa;
#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
use x86_64 as isa;

// detect.rs: the probes detection reads, and the features no hypercall is needed for.

/// CPUID (x86_64): detection's leaves, the nested indicator and the privileges.
#[cfg(target_arch = "x86_64")]
pub use isa::detect::cpuid;
/// The SMCCC vendor-hypervisor UID (aarch64), which detection checks.
#[cfg(target_arch = "aarch64")]
pub use isa::detect::vendor_hyp_uid;
/// Where the nested-host indicator is (for the boot log); whether the host offers XMM fast
/// hypercall input (x86_64 CPUID; never on aarch64).
pub use isa::detect::{xmm_fast_input, NESTED_INDICATOR};

// msr.rs (x86_64 only: arm64's synthetic registers are VP registers, reached by hypercall).

/// Writes a synthetic MSR.
#[cfg(target_arch = "x86_64")]
pub use isa::msr::wrmsr;

// paging.rs

/// Extends boot's identity map to the reported RAM with what the CPU offers.
pub use isa::paging::map_ram;

// hypercall.rs: the hypercall instruction.

/// The [`crate::hypercall::HypercallAbi`] of this ISA; what makes it usable once the guest OS
/// id is set (x86_64: the hypercall page; aarch64: nothing); the most fast-input words its
/// call carries.
pub use isa::hypercall::{enable_hypercall_page, Abi, FAST_WORDS};

// vtl_switch.rs: the return to VTL0 and back.

/// VTL0's registers the switch carries; the switch, built per VP from its assist page and
/// (if [`VTL_RETURN_IN_HYPERCALL_PAGE`]) HvRegisterVsmCodePageOffsets.
pub use isa::vtl_switch::{Vtl0Registers, VtlSwitch, VTL_RETURN_IN_HYPERCALL_PAGE};

// vp_start.rs

/// The HvCallEnableVpVtl / HvCallStartVirtualProcessor input that starts an AP in boot's entry.
pub use isa::vp_start::vp_start_input;

// intercept.rs: the intercept messages' words, and completing a call in VTL0's registers.

/// Where a completed call's result (or new control word) goes; the IP register advanced past
/// it; VP register names for log lines.
pub use isa::intercept::{complete_intercept, register_name, IP_REGISTER};
/// This ISA's hvdef intercept messages and which of their payload words decoding reads (a
/// head always, a tail only for some calls); whether a memory access came from VTL0's user mode.
pub use isa::intercept::{
    hypercall_intercept_tail, intercepted_in_user_mode, HypercallInterceptMessage,
    MemoryInterceptMessage, HYPERCALL_INTERCEPT_HEAD, MEMORY_INTERCEPT_HEAD,
};

// exception.rs

/// The `HvRegisterPendingEvent0` values of the exceptions the paravisor makes VTL0 take, and
/// the memory fault's name for the log.
pub use isa::exception::{memory_fault_event, undefined_instruction_event, MEMORY_FAULT_NAME};

// register_page.rs

/// The VTL register page (x86_64; never on aarch64), mapped by `crate::synthetic`.
pub use isa::register_page::{RegisterPage, HAS_REGISTER_PAGE};
