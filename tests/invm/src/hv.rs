//! The exit glue between a trapped guest and the TLFS model. Pure (no sysregs, no VMCB), so it
//! runs on the host against `hvmodel::TestMemory` as well as inside the VM. This file is the
//! arch-neutral part (what the host does next, the partition it runs, the trace line); the
//! exits themselves are per ISA: `aarch64` (`hvc`) and `x86_64` (CPUID, RDMSR/WRMSR, VMMCALL).

#[cfg(any(test, target_arch = "x86_64"))]
use core::fmt;
use hvmodel::{Arch, Model, Scenario, StartVp};
#[cfg(any(test, target_arch = "x86_64"))]
use hvmodel::{Event, Outcome};

#[cfg(any(test, target_arch = "aarch64"))]
mod aarch64;
#[cfg(any(test, target_arch = "x86_64"))]
pub mod x86_64;

#[cfg(all(target_os = "none", target_arch = "aarch64"))]
pub use aarch64::{
    enter_lower, hvc, initial_state, lower_exit, model, take_exception, El1Regs, Frame, LowerNext,
    ESR_UNDEFINED, HVC_LEN,
};

/// What the host does after an exit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    all(target_os = "none", target_arch = "x86_64"),
    expect(
        dead_code,
        reason = "arm64-only until the x86 host runs VTL0 and more VPs"
    )
)]
pub enum Next {
    /// Return to the guest with the (updated) frame.
    Resume,
    /// Return to the guest, and start this VP on its own CPU (HvCallStartVirtualProcessor).
    Start(alloc::boxed::Box<StartVp>),
    /// The `hvc` is an undefined instruction for this caller (TLFS): it takes the exception
    /// at its own address (`frame.elr` now points at the `hvc`).
    Undefined,
    /// The VTL0 script is done: the paravisor reached its proxy loop and returned to VTL0.
    Finished,
    /// Live mode: the paravisor returned to VTL0, which now runs for real ([`enter_lower`]).
    RunLower,
    /// Something this slice cannot carry out; the run must fail with this reason.
    Unsupported(&'static str),
}

/// The VP the x86 host runs (it runs one so far).
#[cfg(any(test, target_arch = "x86_64"))]
pub const VP: u32 = 0;

/// The partition the host runs: the default scenario of `arch` (VSM, VTL2 active, intercept
/// page available) with `vp_count` VPs and the guest's RAM.
pub fn partition(arch: Arch, ram: core::ops::Range<u64>, vp_count: u32) -> Model {
    let mut scenario = Scenario::for_arch(arch);
    scenario.vp_count = vp_count;
    scenario.ram = alloc::vec![ram];
    Model::new(scenario)
}

/// FNV-1a, 64-bit: a short fingerprint of a parameter block for the trace line.
#[cfg(any(test, target_arch = "x86_64"))]
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The model's trace as one space-separated token per event, for the console: a hypercall is
/// `code/control/input GPA/output GPA/fnv(input)/fnv(output)/outcome` (outcome `s<status>`,
/// `vtl` for a VTL switch, `fault`, `other`), an SMCCC call `smccc/function/x0`, an x64 CPUID
/// `cpuid/leaf/subleaf/eax/ebx/ecx/edx`, RDMSR `rdmsr/msr/value` (or `fault`), WRMSR
/// `wrmsr/msr/value/ok` (or `fault`), anything else `event`. The e2e suites rebuild the same
/// tokens from the gdbstub mock's trace of the same boot and compare them (all hex, no prefixes).
#[cfg(any(test, target_arch = "x86_64"))]
pub struct TraceLine<'a>(pub &'a [Event]);

#[cfg(any(test, target_arch = "x86_64"))]
impl fmt::Display for TraceLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, event) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            match event {
                Event::Hypercall(r) => {
                    write!(
                        f,
                        "{:x}/{:x}/{:x}/{:x}/{:x}/{:x}/",
                        r.code.0,
                        r.control,
                        r.input_gpa,
                        r.output_gpa,
                        fnv1a(&r.input),
                        fnv1a(&r.output)
                    )?;
                    match r.outcome {
                        Outcome::Status(out) => write!(f, "s{:x}", out.status().0)?,
                        Outcome::VtlSwitch { .. } => f.write_str("vtl")?,
                        Outcome::Fault(_) => f.write_str("fault")?,
                        _ => f.write_str("other")?,
                    }
                }
                Event::Smccc {
                    function, result, ..
                } => write!(f, "smccc/{function:x}/{:x}", result[0])?,
                Event::Cpuid {
                    leaf,
                    subleaf,
                    result: [a, b, c, d],
                    ..
                } => write!(f, "cpuid/{leaf:x}/{subleaf:x}/{a:x}/{b:x}/{c:x}/{d:x}")?,
                Event::Rdmsr { msr, result, .. } => match result {
                    Ok(value) => write!(f, "rdmsr/{msr:x}/{value:x}")?,
                    Err(_) => write!(f, "rdmsr/{msr:x}/fault")?,
                },
                Event::Wrmsr {
                    msr, value, result, ..
                } => write!(
                    f,
                    "wrmsr/{msr:x}/{value:x}/{}",
                    if result.is_ok() { "ok" } else { "fault" }
                )?,
                _ => f.write_str("event")?,
            }
        }
        Ok(())
    }
}
