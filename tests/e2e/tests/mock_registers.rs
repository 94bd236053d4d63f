//! VTL0's registers across a proxied hypercall under the mock hypervisor. The registers the VTLs
//! share (TLFS vsm.md "Shared State": x64 every GPR but RSP, and CR2; arm64 X0-X17 and X19-X28)
//! hold, when VTL0 resumes, whatever the paravisor left in them at its VtlReturn: it must hand
//! back every one VTL0 had, the result register aside (TLFS: a hypercall preserves the GPRs other
//! than RAX / X0), and on a timeout the control register VTL0 re-issues with. arm64 X29/X30 are
//! private per the TLFS but carried as VTL0 context by Linux and OpenHCL, so they are checked
//! under both readings; X18 is private and must be VTL0's own.

use std::collections::BTreeMap;

use e2e::{boot_calls, call, code, layout, post_message};
use hvdef::aarch64::{reg as arm_reg, HVC_IMM_VTL_CALL};
use hvdef::x86_64::reg as x64_reg;
use hvdef::{HvRegisterName, HvStatus, HypercallCode, HypercallOutput};
use mockhv::model::{FaultAction, InjectedFault, Scenario, Vtl0Call, Vtl0Result};
use mockhv::qemu::Arch;

/// A value no code path would produce by accident, distinct per call and register.
fn marker(call: usize, name: HvRegisterName) -> u64 {
    0x5A5A_0000_0000_0000 | (call as u64) << 40 | u64::from(name.0) << 8 | 0xEF
}

/// What one delivery of a call leaves in VTL0, besides the registers it had.
#[derive(Clone, Copy, Debug)]
enum Seen {
    /// Completed: IP past the call, the result register holds this value.
    Completed(u64),
    /// A TLFS timeout: IP left on the call, only the control register changed (TLFS
    /// continuation; OpenVMM `hv1_hypercall` `retry` rewrites only it, fact sheet §3.1): VTL0
    /// re-issues the call with it.
    Timeout { control: u64 },
    /// An undefined-instruction exception: IP left on the call, nothing else changed, not even
    /// the result register.
    Ud,
}

fn result_register(arch: Arch) -> HvRegisterName {
    match arch {
        Arch::X86_64 => x64_reg::RAX,
        Arch::Aarch64 => arm_reg::X0,
    }
}

fn control_register(arch: Arch) -> HvRegisterName {
    match arch {
        Arch::X86_64 => x64_reg::RCX,
        Arch::Aarch64 => arm_reg::X1,
    }
}

fn x(n: u32) -> HvRegisterName {
    HvRegisterName(arm_reg::X0.0 + n)
}

/// Every register checked: x64 the 15 shared GPRs and CR2; arm64 X0..X30 (X18 is private, and
/// VTL0's own must come back as well).
fn checked(arch: Arch) -> Vec<HvRegisterName> {
    match arch {
        Arch::X86_64 => vec![
            x64_reg::RAX,
            x64_reg::RCX,
            x64_reg::RDX,
            x64_reg::RBX,
            x64_reg::RBP,
            x64_reg::RSI,
            x64_reg::RDI,
            x64_reg::R8,
            x64_reg::R9,
            x64_reg::R10,
            x64_reg::R11,
            x64_reg::R12,
            x64_reg::R13,
            x64_reg::R14,
            x64_reg::R15,
            x64_reg::CR2,
        ],
        Arch::Aarch64 => (0..=30).map(x).collect(),
    }
}

/// One output word: `status` with `reps` completed.
fn output(status: HvStatus, reps: u16) -> u64 {
    HypercallOutput::new()
        .with_status(status)
        .with_reps_completed(reps)
        .into_bits()
}

/// The script, one of each outcome the paravisor has, each call with a canary in every checked
/// register it does not use as input; and what each delivery must leave VTL0 with. The TIMEOUT
/// call comes first, so that the injected fault (`nth` past the boot's own GetVpRegisters)
/// lands on it.
fn script(arch: Arch) -> Vec<(&'static str, Vtl0Call, Vec<Seen>)> {
    let l = layout(arch);
    let post = code(HypercallCode::POST_MESSAGE);
    let relayed = || call(arch, post, l.input, 0).with_memory(l.input, &post_message(e2e::RELAYED));
    let ud = match arch {
        // VtlCall's code as an ordinary hypercall: #UD (TLFS: VtlCall with no higher VTL).
        Arch::X86_64 => call(arch, code(HypercallCode::VTL_CALL), 0, 0),
        Arch::Aarch64 => call(arch, post, l.input, 0).with_immediate(HVC_IMM_VTL_CALL),
    };
    let cases = vec![
        (
            "relayed, TIMEOUT handed back, then re-issued",
            relayed(),
            vec![
                Seen::Timeout {
                    control: post.into_bits(),
                },
                Seen::Completed(output(HvStatus::SUCCESS, 0)),
            ],
        ),
        (
            "relayed PostMessage",
            relayed(),
            vec![Seen::Completed(output(HvStatus::SUCCESS, 0))],
        ),
        (
            "answered ExtQueryCapabilities",
            call(
                arch,
                code(HypercallCode::EXT_QUERY_CAPABILITIES),
                0,
                l.output,
            )
            .with_output(l.output, 8),
            vec![Seen::Completed(output(HvStatus::SUCCESS, 0))],
        ),
        (
            "refused unknown code",
            call(arch, code(HypercallCode(0x0077)), 0x77, 0x78),
            vec![Seen::Completed(output(HvStatus::INVALID_HYPERCALL_CODE, 0))],
        ),
        (
            "refused VTL management",
            call(arch, code(HypercallCode::ENABLE_PARTITION_VTL), l.input, 0),
            vec![Seen::Completed(output(HvStatus::ACCESS_DENIED, 0))],
        ),
        ("#UD", ud, vec![Seen::Ud]),
    ];
    cases
        .into_iter()
        .enumerate()
        .map(|(i, (what, mut c, seen))| {
            let given: Vec<HvRegisterName> = c.registers.iter().map(|r| r.0).collect();
            for name in checked(arch) {
                if !given.contains(&name) {
                    c = c.with_register(name, marker(i, name).into());
                }
            }
            (what, c, seen)
        })
        .collect()
}

/// The checked registers VTL0 sets before it issues `c` (later settings win, as in delivery).
fn registers_before(arch: Arch, c: &Vtl0Call) -> BTreeMap<HvRegisterName, u128> {
    let checked = checked(arch);
    c.registers
        .iter()
        .filter(|(name, _)| checked.contains(name))
        .copied()
        .collect()
}

/// The undefined-instruction event the paravisor pends (see mock_ud.rs for its fields).
fn undefined_instruction(arch: Arch) -> u128 {
    match arch {
        Arch::X86_64 => 0x0006_0001,
        Arch::Aarch64 => 0x0200_0000 << 64 | 1,
    }
}

/// Runs the script and checks every delivery of every call: its outcome, and every checked
/// register exactly as VTL0 had it but for what the outcome changes.
fn check_every_outcome(arch: Arch, scenario: Scenario) {
    let reading = match arch {
        Arch::X86_64 => arch.name().to_string(),
        Arch::Aarch64 => format!("aarch64 (X29/X30 shared: {})", scenario.arm64_fp_lr_shared),
    };
    let script = script(arch);
    let boot = Scenario {
        vp_count: 1,
        ..scenario.clone()
    };
    // The hypervisor counts VTL0's own PostMessage (which it reflects) first, then the relay.
    let nth = boot_calls(boot.clone(), HypercallCode::POST_MESSAGE) + 2;
    let mut faulted = boot;
    faulted.faults.push(InjectedFault {
        code: HypercallCode::POST_MESSAGE,
        nth,
        action: FaultAction::ReturnedTimeout { reps: 0 },
        filter: Default::default(),
    });
    // Reflect the codes Hyper-V keeps to itself, so that every outcome of the paravisor's
    // table is exercised (see `Scenario::reflected_codes`).
    faulted.reflected_codes = [
        HypercallCode::EXT_QUERY_CAPABILITIES,
        HypercallCode(0x0077),
        HypercallCode::ENABLE_PARTITION_VTL,
        HypercallCode::VTL_CALL,
    ]
    .into();
    let calls = script.iter().map(|(_, c, _)| c.clone()).collect();
    let mut report = e2e::run_vtl0(faulted, calls);
    let mut results: Vec<Vtl0Result> = report.model.vtl0().results().to_vec();
    results.sort_by_key(|r| (r.index, r.attempt));
    let expected: usize = script.iter().map(|(_, _, seen)| seen.len()).sum();
    assert_eq!(results.len(), expected, "{reading}: deliveries");

    let mut results = results.iter();
    let (result_reg, control_reg) = (result_register(arch), control_register(arch));
    for (index, (what, c, seen)) in script.iter().enumerate() {
        let mut registers = registers_before(arch, c);
        for (attempt, seen) in seen.iter().enumerate() {
            let r = results.next().expect("counted above");
            let what = format!("{reading} {what} (call {index}, attempt {attempt}, {seen:x?})");
            assert_eq!((r.index, r.attempt), (index, attempt as u32), "{what}");
            match *seen {
                Seen::Completed(result) => {
                    assert_eq!(r.pending_event(), None, "{what}");
                    assert!(r.advanced(), "{what}: IP past the call");
                    registers.insert(result_reg, result.into());
                }
                Seen::Timeout { control } => {
                    assert_eq!(r.pending_event(), None, "{what}");
                    assert_eq!(r.ip_after, r.ip_before, "{what}: IP left on the call");
                    registers.insert(control_reg, control.into());
                }
                Seen::Ud => {
                    assert_eq!(
                        r.pending_event(),
                        Some(undefined_instruction(arch)),
                        "{what}"
                    );
                    assert_eq!(r.ip_after, r.ip_before, "{what}: IP left on the call");
                }
            }
            for (&name, &value) in &registers {
                assert_eq!(
                    r.register(name),
                    value,
                    "{what}: {name:?} is {value:#x}, got {:#x}",
                    r.register(name)
                );
            }
        }
    }
    // Both relays of the timed-out call, then the plain one, reached the host (VTL2) with the
    // host's connection id.
    let relays: Vec<_> = report
        .trace()
        .hypercalls_with_code(HypercallCode::POST_MESSAGE)
        .into_iter()
        .filter(|h| h.vtl == hvdef::Vtl::VTL2)
        .collect();
    assert_eq!(relays.len(), 3, "{reading}: relays");
    assert!(relays
        .iter()
        .all(|h| h.input[..4] == e2e::HOST_CONNECTION.to_le_bytes()));
}

#[test]
fn x64_vtl0_keeps_every_shared_register_after_every_outcome() {
    check_every_outcome(Arch::X86_64, Scenario::for_arch(Arch::X86_64));
}

#[test]
fn arm64_vtl0_keeps_every_shared_register_after_every_outcome() {
    check_every_outcome(Arch::Aarch64, Scenario::for_arch(Arch::Aarch64));
}

/// The other reading of arm64 X29/X30 (shared, as Linux and OpenHCL treat them): the paravisor
/// carries them for VTL0, so VTL0 keeps them either way.
#[test]
fn arm64_vtl0_keeps_x29_x30_when_they_are_shared() {
    let scenario = Scenario {
        arm64_fp_lr_shared: true,
        ..Scenario::for_arch(Arch::Aarch64)
    };
    check_every_outcome(Arch::Aarch64, scenario);
}

/// VTL0's entry state survives the paravisor's first return to it: every shared register the
/// first call does not set itself holds what VTL0 had before VTL2 ever returned (x64 Linux takes
/// boot_params in RSI, arm64 Linux the device tree in X0; `Scenario::vtl0_registers`).
#[test]
fn vtl0_keeps_its_entry_registers_across_the_first_return() {
    for arch in Arch::ALL {
        let initial: Vec<(HvRegisterName, u128)> = checked(arch)
            .into_iter()
            // X18 is private. CR2 is shared hardware state VTL2 never writes: the model takes
            // it from the vCPU at the switch, so it has no separate entry value to keep.
            .filter(|&n| (n != x(18) || arch == Arch::X86_64) && n != x64_reg::CR2)
            .map(|n| (n, u128::from(marker(99, n))))
            .collect();
        let scenario = Scenario {
            vp_count: 1,
            vtl0_registers: initial.clone(),
            ..Scenario::for_arch(arch)
        };
        let l = layout(arch);
        let first = call(arch, code(HypercallCode::POST_MESSAGE), l.input, 0)
            .with_memory(l.input, &post_message(e2e::RELAYED));
        let set: Vec<HvRegisterName> = first.registers.iter().map(|r| r.0).collect();
        let mut report = e2e::run_vtl0(scenario, vec![first]);
        let r = &e2e::results(&mut report)[0];
        assert_eq!(r.status(), HvStatus::SUCCESS, "{arch:?}");
        for (name, value) in initial {
            if set.contains(&name) || name == result_register(arch) {
                continue;
            }
            assert_eq!(
                r.register(name),
                value,
                "{arch:?}: {name:?} is VTL0's entry value {value:#x}, got {:#x}",
                r.register(name)
            );
        }
    }
}
