//! The exit glue between a trapped guest and the TLFS model. Pure (no sysregs, no VMCB), so it
//! runs on the host against `hvmodel::TestMemory` as well as inside the VM. This file is the
//! arch-neutral part (what the host does next, the partition it runs); the
//! exits themselves are per ISA: `aarch64` (`hvc`) and `x86_64` (CPUID, RDMSR/WRMSR, VMMCALL).

use hvmodel::{Arch, Model, Scenario, StartVp};

#[cfg(any(test, target_arch = "aarch64"))]
mod aarch64;
#[cfg(any(test, target_arch = "x86_64"))]
pub mod x86_64;

#[cfg(all(target_os = "none", target_arch = "aarch64"))]
pub use aarch64::{
    enter_lower, hvc, initial_state, lower_exit, take_exception, El1Regs, Frame, LowerNext,
    ESR_UNDEFINED, HVC_LEN,
};

/// What the host does after an exit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    all(target_os = "none", target_arch = "x86_64"),
    expect(dead_code, reason = "Undefined is arm64's")
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
    /// Live mode: the paravisor returned to VTL0, which now runs for real (each ISA's
    /// `enter_lower`).
    RunLower,
    /// Something this slice cannot carry out; the run must fail with this reason.
    Unsupported(&'static str),
}

/// The boot VP.
#[cfg(test)]
pub const VP: u32 = 0;

/// The partition the runner asked for: its scenario (the bytes the configuration page says it
/// placed, `hvmodel::Scenario::encode`'s), with the host's VP count and guest RAM; without one,
/// [`partition`]. Every refusal is a sentence for the FAIL line.
pub fn runner_partition(
    arch: Arch,
    ram: &[core::ops::Range<u64>],
    vp_count: u32,
    scenario: Option<&[u8]>,
) -> Result<Model, alloc::string::String> {
    let Some(bytes) = scenario else {
        return Ok(partition(arch, ram, vp_count));
    };
    let (mut scenario, _) = Scenario::decode(bytes)
        .map_err(|e| alloc::format!("the runner's scenario ({} bytes): {e:?}", bytes.len()))?;
    if scenario.arch != arch {
        return Err(alloc::format!(
            "the runner's scenario is for {}, this host runs {}",
            scenario.arch.name(),
            arch.name()
        ));
    }
    scenario.vp_count = vp_count;
    scenario.ram = ram.to_vec();
    Ok(Model::new(scenario))
}

/// The partition the host runs: the default scenario of `arch` (VSM, VTL2 active, intercept
/// page available) with `vp_count` VPs and the guest's RAM.
pub fn partition(arch: Arch, ram: &[core::ops::Range<u64>], vp_count: u32) -> Model {
    let mut scenario = Scenario::for_arch(arch);
    scenario.vp_count = vp_count;
    scenario.ram = ram.to_vec();
    Model::new(scenario)
}

#[cfg(test)]
mod partition_tests {
    use super::*;

    #[test]
    fn the_runners_scenario_gets_the_hosts_vps_and_ram() {
        let mut scenario = Scenario::for_arch(Arch::Aarch64);
        scenario.nested = true;
        scenario.vp_count = 9;
        let mut bytes = alloc::vec::Vec::new();
        scenario.encode(&mut bytes);
        let model = runner_partition(
            Arch::Aarch64,
            &[0x4000_0000..0x4f00_0000, 0x5000_0000..0x1_0000_0000],
            3,
            Some(&bytes),
        )
        .expect("accepted");
        assert!(model.scenario().nested);
        assert_eq!(model.scenario().vp_count, 3);
        assert_eq!(
            model.scenario().ram,
            [0x4000_0000..0x4f00_0000, 0x5000_0000..0x1_0000_0000]
        );
        let wrong = runner_partition(
            Arch::X86_64,
            core::slice::from_ref(&(0..0x1000_0000)),
            1,
            Some(&bytes),
        );
        assert!(wrong.is_err_and(|e| e.contains("for aarch64, this host runs x86_64")));
        let cut = runner_partition(
            Arch::Aarch64,
            core::slice::from_ref(&(0..1)),
            1,
            Some(&bytes[..5]),
        );
        assert!(cut.is_err_and(|e| e.contains("Truncated")));
        let none = runner_partition(
            Arch::X86_64,
            core::slice::from_ref(&(0..0x1000_0000)),
            2,
            None,
        )
        .unwrap();
        assert_eq!(none.scenario().vp_count, 2);
    }
}
