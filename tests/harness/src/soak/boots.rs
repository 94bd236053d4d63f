//! The soak's boots through the real VTL0: the VTL0 test kernel (`tests/vtl0`) runs the
//! generator's entries (`gen.rs`) as tables under the paravisor under the in-VM mock Hyper-V,
//! thousands per QEMU boot, and each boot is held to the invariants: 1 here (QEMU passed, the
//! kernel said `done` for every entry, no `PANIC` / `FATAL` line), 2 to 4 in `checks.rs`.
//!
//! The oracle (`oracle.rs`) predicts each status from the TLFS and the configuration. A third
//! of the calls run under IGVM boots, given no command line, so the relay table is empty
//! (no `pv.relay=`, no `pv.devices=`) and no connection or device is VTL0's; a third under ELF
//! boots with the former gdbstub soak's relay (VTL0's connections 0..8 to the host's 0x100.., which
//! the host's model knows), so a valid call to one of them must be relayed with its connection
//! rewritten and VTL0 gets the host's SUCCESS; a third under the former gdbstub soak's worst case, a
//! host that reflects every call VTL0 makes ([`Boot::ReflectAll`]: the proxy's table is the
//! defence), with VTL0's device 0x30 (`pv.devices=`), every other boot a nested host: its
//! well-formed calls (RetargetDeviceInterrupt relayed or refused, SynIC calls, the
//! hypervisor's GetVpRegisters refused with VTL0's output untouched, ExtQueryCapabilities
//! answered with its 8 zero bytes, the fast form INVALID_PARAMETER) and random control words
//! over the table's codes.

use super::checks::{check_record, check_trace, Stats};
use super::gen::{high_pages, Gen, HIGH_MEMORY_MB, REFLECTED_CODES};
use super::plan::boots;
use super::{arch_seed, oracle, Rng, KNOWN_CONNECTIONS, OWNED_DEVICE};
use crate::live::Images;
use anyhow::{bail, Context, Result};
use hvdef::{HypercallCode, Vtl};
use mockhv::model::Scenario;
use mockhv::qemu::Arch;
use std::collections::BTreeSet;
use std::ops::Range;
use std::time::{Duration, Instant};
use vtl0::Table;

/// How a boot's partition is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Boot {
    /// The IGVM file, given no command line: no relay table; Hyper-V's routing.
    Igvm,
    /// The ELF with the relay table; Hyper-V's routing.
    Relay,
    /// The ELF with the relay table and VTL0's device, under a host that reflects every
    /// hypercall VTL0 makes to VTL2 (the former gdbstub soak's worst case: the proxy's table is the
    /// defence), every other boot a nested host (the relays' HV_HYPERCALL_NESTED).
    ReflectAll,
}

/// (calls, boots) for `arch`, violations appended to `violations`.
pub fn soak_arch(
    images: &Images,
    image: Range<u64>,
    opts: &super::Options,
    violations: &mut Vec<String>,
) -> Result<(usize, usize)> {
    let (calls, seed) = (opts.calls, opts.seed);
    let arch = images.arch;
    let scenario = Scenario::for_arch(arch);
    // Half the calls under an IGVM boot (given no command line: nothing relayed), half under an ELF
    // boot whose relay maps VTL0's connections 0..8 to the host's 0x100.., which the host
    // knows (the former gdbstub soak's relay): a relay without its rewrite, or one too many, is seen.
    let relay_scenario =
        Scenario {
            ports: scenario
                .ports
                .clone()
                .into_iter()
                .chain((0..KNOWN_CONNECTIONS).filter_map(|c| {
                    Some((oracle::host_connection(c, KNOWN_CONNECTIONS)?, Vtl::VTL0))
                }))
                .collect(),
            ..scenario.clone()
        };
    let relay: Vec<String> = (0..KNOWN_CONNECTIONS)
        .filter_map(|c| {
            Some(format!(
                "{c}:{:#x}",
                oracle::host_connection(c, KNOWN_CONNECTIONS)?
            ))
        })
        .collect();
    let append = format!("pv.relay={}", relay.join(","));
    let reflect_append = format!("{append} pv.devices={OWNED_DEVICE:#x}");
    let reflect_scenario = |nested: bool| Scenario {
        nested,
        // Every code the generator uses ([`REFLECTED_CODES`]; every TLFS call code and
        // extended code is in them), but on arm64 SetVpRegisters: the kernel registers its
        // guest OS id with it (x86 does so with an MSR), which the paravisor would refuse.
        reflected_codes: REFLECTED_CODES
            .into_iter()
            .flatten()
            .map(HypercallCode)
            .filter(|&c| arch == Arch::X86_64 || c != HypercallCode::SET_VP_REGISTERS)
            .collect(),
        devices: [(OWNED_DEVICE, Vtl::VTL2)].into(),
        ..relay_scenario.clone()
    };
    let host_ports: BTreeSet<u32> = scenario.ports.keys().copied().collect();
    // Boots of the stream so far (a boot's number), and the calls and boots actually run.
    let mut boots_run = 0;
    let (mut ran_calls, mut ran_boots) = (0, 0);
    let mut stats = Stats::default();
    for (part, kind) in [Boot::Igvm, Boot::Relay, Boot::ReflectAll]
        .into_iter()
        .enumerate()
    {
        let count = (calls as usize * (part + 1)) / 3 - (calls as usize * part) / 3;
        let relayed = if kind == Boot::Igvm {
            0
        } else {
            KNOWN_CONNECTIONS
        };
        let mut gen = Gen {
            arch,
            rng: Rng::new(arch_seed(seed, arch) ^ part as u64),
            image: image.clone(),
            host_ports: host_ports.clone(),
            relayed,
            reflect_all: kind == Boot::ReflectAll,
            high: if kind == Boot::Igvm {
                Vec::new()
            } else {
                high_pages(arch)
            },
        };
        let mut plans = Vec::new();
        while plans.len() < count {
            plans.extend(gen.next());
        }
        plans.truncate(count);
        // A store whose load was cut off is still a complete entry.
        let ranges = boots(&plans);
        println!(
            "soak {} (real VTL0, in-VM host): image {:#x}..{:#x}, {} entries in {} boot(s); {}, \
             host ports {:?}",
            arch.name(),
            image.start,
            image.end,
            plans.len(),
            ranges.len(),
            match kind {
                Boot::Igvm => "relay table empty (IGVM boot given no command line)".to_string(),
                Boot::Relay => format!("ELF boot with `{append}`"),
                Boot::ReflectAll => format!(
                    "ELF boot with `{reflect_append}`, a host that reflects every VTL0 call, \
                     nested every other boot"
                ),
            },
            gen.host_ports
        );
        for (k, range) in ranges.iter().enumerate() {
            let n = boots_run + k;
            if opts.boot.is_some_and(|b| b != n) {
                continue;
            }
            ran_calls += range.len();
            ran_boots += 1;
            let nested = kind == Boot::ReflectAll && k % 2 == 1;
            let t = Instant::now();
            let before = violations.len();
            let chunk = &plans[range.clone()];
            let table = chunk.iter().fold(Table::new(), |t, p| p.push(t));
            let timeout = Duration::from_secs(60 + chunk.len() as u64 / 20);
            let run = match kind {
                Boot::Igvm => images.run_table(&table, true, timeout),
                // x86: a host without the VTL register page here (the IP advance is then a
                // SetVpRegisters), with it in the other boots.
                Boot::Relay => images.run_table_elf_in(
                    &table,
                    &append,
                    Scenario {
                        register_page: false,
                        ..relay_scenario.clone()
                    },
                    false,
                    HIGH_MEMORY_MB,
                    timeout,
                ),
                Boot::ReflectAll => images.run_table_elf_in(
                    &table,
                    &reflect_append,
                    reflect_scenario(nested),
                    false,
                    HIGH_MEMORY_MB,
                    timeout,
                ),
            };
            let (run, results) = match run {
                Ok(r) => r,
                Err(e) => {
                    violations.push(format!(
                        "{} boot {n} (entries {}..{}): invariant 1: {e:#}",
                        arch.name(),
                        range.start,
                        range.end
                    ));
                    continue;
                }
            };
            for line in run.run.console.lines() {
                if line.contains("PANIC") || line.contains("FATAL") {
                    violations.push(format!(
                        "{} boot {n}: invariant 1: the console says {:?}",
                        arch.name(),
                        line.trim()
                    ));
                }
            }
            let records = results
                .records()
                .map_err(anyhow::Error::msg)
                .context("the kernel's entry lines")?;
            for (i, (plan, record)) in chunk.iter().zip(&records).enumerate() {
                check_record(arch, range.start + i, plan, record, &mut stats, violations);
            }
            let page = arch == Arch::X86_64 && kind != Boot::Relay;
            check_trace(arch, n, chunk, nested, page, &run.events, violations);
            println!(
                "soak {}: boot {n}: entries {}..{}, {} trace events, {} violations, {:.1}s",
                arch.name(),
                range.start,
                range.end,
                run.events.len(),
                violations.len() - before,
                t.elapsed().as_secs_f64()
            );
        }
        boots_run += ranges.len();
    }
    let statuses: Vec<String> = stats
        .statuses
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    println!(
        "soak {}: statuses {}; oracle: {} statuses predicted exactly, {} random control words \
         checked against the TLFS's list; {} accesses ({} faulted as predicted); {} inputs \
         above 4 GiB or at the top of RAM",
        arch.name(),
        statuses.join(", "),
        stats.exact,
        stats.allowed,
        stats.accesses,
        stats.faults,
        stats.placed
    );
    if let Some(b) = opts.boot.filter(|&b| b >= boots_run) {
        bail!(
            "{}: no boot {b}: {calls} calls with seed {seed} make boots 0..{boots_run}",
            arch.name()
        );
    }
    Ok((ran_calls, ran_boots))
}

/// Whether the live soak can run `arch`: `Err` with the host's refusal if not.
pub fn supported(images: &Images) -> Result<()> {
    match images.refusal() {
        None => Ok(()),
        Some(why) => bail!("{why}"),
    }
}
