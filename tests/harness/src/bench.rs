//! `cargo xtask bench`: the project's performance and footprint figures, measured on this
//! machine under the in-VM mock Hyper-V with the VTL0 test kernel, printed as Markdown (also
//! written to `target/bench.md`):
//!
//! - proxied VTL0 calls per second through the whole stack (the kernel's repeat entry);
//! - boot to the proxy loop at 1, 4 and 16 VPs (wall time, hypercalls per VP, by code at 4);
//! - static memory (loadable + BSS) and the per-VP share of it, from the image's symbols;
//! - per proxied VTL0 call, by category: the host hypercalls the paravisor issues and the VTL
//!   transitions (from the host's trace), and the VTL2 instructions it runs (counted by the host
//!   under `-icount shift=0`, deterministic), against the interface's lower bound.

use crate::{live, workspace_root};
use anyhow::{bail, Context, Result};
use hvdef::{Control, HvStatus, HypercallCode};
use mockhv::model::{Event, Scenario};
use mockhv::qemu::Arch;
use object::{Object, ObjectSection};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

const BOOT_VPS: u32 = 4;

/// Hypercalls per VP during boot, by call code.
fn boot_calls(events: &[Event]) -> BTreeMap<u32, BTreeMap<String, u32>> {
    let mut per_vp: BTreeMap<u32, BTreeMap<String, u32>> = BTreeMap::new();
    for event in events {
        if let Event::Hypercall(h) = event {
            *per_vp
                .entry(h.vp)
                .or_default()
                .entry(format!("{:?}", h.code))
                .or_default() += 1;
        }
    }
    per_vp
}

/// (the image's loaded and reserved bytes, its writable static bytes: .data + .bss) from the
/// ELF's sections.
fn memory(elf: &Path) -> Result<(u64, u64)> {
    let bytes = std::fs::read(elf)?;
    let file = object::File::parse(&*bytes)?;
    let total: u64 = file
        .sections()
        .filter(|s| s.address() != 0)
        .map(|s| s.size())
        .sum();
    let writable: u64 = file
        .sections()
        .filter(|s| matches!(s.name(), Ok(".data" | ".bss")))
        .map(|s| s.size())
        .sum();
    if writable == 0 {
        bail!("no .data or .bss in {}", elf.display());
    }
    Ok((total, writable))
}

/// The paravisor's `VTL2 heap: N bytes used` line (after every VP came up).
fn heap_used(console: &str) -> Result<u64> {
    console
        .lines()
        .find_map(|l| {
            l.split_once("VTL2 heap: ")?
                .1
                .split_once(" bytes used")?
                .0
                .parse()
                .ok()
        })
        .context("no `VTL2 heap: N bytes used` line")
}

/// The deepest stack use the paravisor reported for `kind` ("boot" or "AP"), in bytes, and
/// the stack's size.
fn stack_high_water(console: &str, kind: &str) -> Option<(u64, u64)> {
    let tail = format!("-byte {kind} stack, the deepest {kind} stack so far");
    console
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("stack high-water: VP ")?.1;
            let (_, rest) = rest.split_once(" used ")?;
            let (used, rest) = rest.split_once(" of its ")?;
            let size = rest.strip_suffix(&tail)?;
            Some((used.parse().ok()?, size.parse().ok()?))
        })
        .max()
}

// ---- Per proxied call ------------------------------------------------------------------------

/// Sessions per arch with the same script; their counts must be identical.
const PROXY_RUNS: usize = 3;

/// What the paravisor does with a category, which fixes the interface's minimum.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Handling {
    Forwarded,
    Local,
    Refused,
    /// VTL0 takes a fault: its pending event is a register the register page does not carry,
    /// so one SetVpRegisters at least.
    Faulted,
}

struct Category {
    name: &'static str,
    call_name: &'static str,
    handling: Handling,
    /// What VTL0 gets: a status, or `None` for a fault (an exception pending, IP unmoved).
    status: Option<HvStatus>,
    /// The call as the VTL0 test kernel makes it.
    entry: Entry,
}

/// A category's call as a table entry of the VTL0 test kernel.
enum Entry {
    /// Input bytes on the input page (fast: in the fast registers), `output_len` bytes of
    /// output reported.
    Hypercall {
        control: Control,
        input: Vec<u8>,
        output_len: u32,
    },
    /// An 8-byte store of 0.
    Write { gpa: u64 },
}

impl Entry {
    fn add_to(&self, table: vtl0::Table) -> vtl0::Table {
        match self {
            Entry::Hypercall {
                control,
                input,
                output_len,
            } => table.hypercall(control.into_bits(), input, *output_len),
            Entry::Write { gpa } => table.write(*gpa, 8, 0),
        }
    }
}

fn hypercall(control: Control, input: Vec<u8>, output_len: u32) -> Entry {
    Entry::Hypercall {
        control,
        input,
        output_len,
    }
}

/// One VTL0 call per category, in script order. The relayed ones are what Hyper-V reflects;
/// the answered and refused-code ones reach VTL2 only from a host that reflects more (the
/// bench's scenario, see [`proxy_scenario`]).
fn categories(arch: Arch) -> Vec<Category> {
    use e2e::code;
    use hvdef::HypercallCode as C;
    let l = e2e::layout(arch);
    vec![
        Category {
            name: "relayed, memory-based",
            call_name: "PostMessage (relay-mapped connection)",
            handling: Handling::Forwarded,
            status: Some(HvStatus::SUCCESS),
            entry: hypercall(code(C::POST_MESSAGE), e2e::post_message(e2e::RELAYED), 0),
        },
        Category {
            name: "relayed, fast",
            call_name: "SignalEvent (relay-mapped connection, flag 0)",
            handling: Handling::Forwarded,
            status: Some(HvStatus::SUCCESS),
            entry: hypercall(
                code(C::SIGNAL_EVENT).with_fast(true),
                e2e::signal_event_input(e2e::RELAYED_EVENT, 0),
                0,
            ),
        },
        Category {
            name: "relayed, device",
            call_name: "RetargetDeviceInterrupt (owned device)",
            handling: Handling::Forwarded,
            status: Some(HvStatus::SUCCESS),
            entry: hypercall(
                code(C::RETARGET_DEVICE_INTERRUPT),
                e2e::retarget_input(hvdef::HV_PARTITION_ID_SELF, e2e::OWNED_DEVICE),
                0,
            ),
        },
        Category {
            name: "answered locally",
            call_name: "ExtQueryCapabilities (memory-based)",
            handling: Handling::Local,
            status: Some(HvStatus::SUCCESS),
            entry: hypercall(code(C::EXT_QUERY_CAPABILITIES), vec![], 8),
        },
        Category {
            name: "refused, unknown code",
            call_name: "code 0x0077",
            handling: Handling::Refused,
            status: Some(HvStatus::INVALID_HYPERCALL_CODE),
            entry: hypercall(code(C(0x0077)), vec![], 0),
        },
        Category {
            name: "refused, unmapped connection",
            call_name: "PostMessage (connection the relay does not map)",
            handling: Handling::Refused,
            status: Some(HvStatus::INVALID_CONNECTION_ID),
            entry: hypercall(code(C::POST_MESSAGE), e2e::post_message(e2e::UNMAPPED), 0),
        },
        Category {
            name: "faulted, VTL2 memory",
            call_name: "a VTL0 store into the paravisor's code (GPA intercept)",
            handling: Handling::Faulted,
            status: None,
            entry: Entry::Write { gpa: l.vtl2 + 0x40 },
        },
    ]
}

/// The default host, plus the owned device and a host that also reflects ExtQueryCapabilities
/// and code 0x77 (so the answered and refused categories reach the paravisor at all).
fn proxy_scenario(arch: Arch) -> Scenario {
    e2e::owned_device_scenario(Scenario {
        reflected_codes: [
            hvdef::HypercallCode::EXT_QUERY_CAPABILITIES,
            hvdef::HypercallCode(0x0077),
        ]
        .into(),
        ..Scenario::for_arch(arch)
    })
}

/// What one proxied call cost, from the host's trace and its instruction count.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CallCost {
    /// Host hypercalls VTL2 issued while serving the call (VtlReturn excluded), by code.
    host: BTreeMap<String, u32>,
    /// VTL2 accesses that are not hypercalls but also exit to the host (MSR, CPUID, SMCCC).
    other_exits: u32,
    /// VTL0 -> VTL2: intercepts delivered for the call.
    entries: u32,
    /// VTL2 -> VTL0 (VtlReturn) and VTL2 -> higher (VtlCall) switches while serving it.
    exits: u32,
    /// VTL2 instructions retired, as the in-VM host counts them.
    instructions: u64,
    /// VTL2's exits to the host meanwhile: hypercalls (the closing VtlReturn included), MSR,
    /// CPUID, SMCCC.
    traps: u64,
}

impl CallCost {
    fn host_calls(&self) -> u32 {
        self.host.values().sum()
    }
}

/// Host calls the interface needs at least: (with the VTL0 register page, TLFS-only).
fn minimum_host_calls(handling: Handling) -> (u32, u32) {
    if handling == Handling::Faulted {
        // The pending event, by SetVpRegisters either way.
        return (1, 1);
    }
    let forward = u32::from(handling == Handling::Forwarded);
    // TLFS-only, the IP advance is a SetVpRegisters(target VTL0).
    (forward, forward + 1)
}

/// Unexpected calls (code 0x77, refused) each run makes before the categories: the paravisor
/// prints a line for the first 64 such calls on a VP, then one in 65,536, so the categories
/// after them are measured as a VTL0 that makes them all the time pays for them.
const WARMUP: usize = 64;

fn warmup_entry() -> Entry {
    hypercall(e2e::code(HypercallCode(0x0077)), vec![], 0)
}

/// The trace of a live run cut per intercept on `vp`: from the intercept (VTL0's exit the
/// hypervisor handed to VTL2) to VTL2's next VtlReturn (inclusive). Under the in-VM host the
/// model records the intercept when VTL0 exits, before VTL2 runs. One window per VtlReturn
/// that ends one, in order.
fn live_windows(events: &[Event], vp: u32) -> Vec<CallCost> {
    let mut windows = Vec::new();
    let mut open: Option<CallCost> = None;
    for event in events {
        match event {
            Event::Intercept { vp: v, .. } if *v == vp => {
                open.get_or_insert_with(|| CallCost {
                    host: BTreeMap::new(),
                    other_exits: 0,
                    entries: 0,
                    exits: 0,
                    instructions: 0,
                    traps: 0,
                })
                .entries += 1;
            }
            Event::Hypercall(h) if h.vp == vp && h.vtl.get() == 2 => match h.code {
                HypercallCode::VTL_RETURN => {
                    if let Some(mut w) = open.take() {
                        w.exits += 1;
                        windows.push(w);
                    }
                }
                HypercallCode::VTL_CALL => {
                    if let Some(w) = open.as_mut() {
                        w.exits += 1;
                    }
                }
                _ => {
                    if let Some(w) = open.as_mut() {
                        let name = h
                            .code
                            .name()
                            .map_or_else(|| format!("{:#06x}", h.code.0), |n| n.to_string());
                        *w.host.entry(name).or_default() += 1;
                    }
                }
            },
            Event::Cpuid { vp: v, .. }
            | Event::Rdmsr { vp: v, .. }
            | Event::Wrmsr { vp: v, .. }
            | Event::Smccc { vp: v, .. }
                if *v == vp =>
            {
                if let Some(w) = open.as_mut() {
                    w.other_exits += 1;
                }
            }
            _ => {}
        }
    }
    windows
}

/// One in-VM run with every category's call made by the VTL0 test kernel in `order`, VTL2's
/// instructions counted by the host; checks what VTL0 saw and returns each category's cost
/// (category order) and the run's wall time.
fn live_proxy_run(
    images: &live::Images,
    arch: Arch,
    cats: &[Category],
    order: &[usize],
) -> Result<(Vec<CallCost>, u64, Duration)> {
    let warmup = (0..WARMUP).fold(vtl0::Table::new(), |t, _| warmup_entry().add_to(t));
    let table = order.iter().fold(warmup, |t, &i| cats[i].entry.add_to(t));
    let (run, results) = images.run_table_counted(
        &table,
        e2e::RELAY,
        proxy_scenario(arch),
        Duration::from_secs(120),
    )?;
    let records = results.records().map_err(anyhow::Error::msg)?;
    let refused = u64::from(HvStatus::INVALID_HYPERCALL_CODE.0);
    for record in records.iter().take(WARMUP) {
        if !matches!(record, vtl0::Record::Hypercall {
            outcome: vtl0::CallOutcome::Done { result, .. }, ..
        } if *result == refused)
        {
            bail!("{} warm-up: VTL0 recorded {record:?}", arch.name());
        }
    }
    for (record, &i) in records.iter().skip(WARMUP).zip(order) {
        let cat = &cats[i];
        let seen = match (record, cat.status) {
            (
                vtl0::Record::Hypercall {
                    outcome:
                        vtl0::CallOutcome::Done {
                            result,
                            bad_canaries,
                            ..
                        },
                    ..
                },
                Some(status),
            ) => *result == u64::from(status.0) && bad_canaries.is_empty(),
            (
                vtl0::Record::Write {
                    outcome: Err(_), ..
                },
                None,
            ) => true,
            _ => false,
        };
        if !seen {
            bail!(
                "{} {}: VTL0 recorded {record:?}, expected {:?}",
                arch.name(),
                cat.name,
                cat.status
            );
        }
    }
    let windows = live_windows(&run.events, 0);
    let calls = WARMUP + order.len();
    if windows.len() != calls || run.vtl2_work.len() != calls {
        bail!(
            "{}: {calls} calls, {} trace windows, {} VTL2 counts",
            arch.name(),
            windows.len(),
            run.vtl2_work.len()
        );
    }
    let first_warmup = run.vtl2_work[0].1;
    let mut costs: Vec<Option<CallCost>> = vec![None; cats.len()];
    for ((mut window, &(_, instructions)), &i) in windows
        .into_iter()
        .zip(&run.vtl2_work)
        .skip(WARMUP)
        .zip(order)
    {
        window.instructions = instructions;
        window.traps = u64::from(window.host_calls() + window.other_exits + window.exits);
        costs[i] = Some(window);
    }
    let costs = costs
        .into_iter()
        .map(|c| c.context("a category was not measured"))
        .collect::<Result<Vec<_>>>()?;
    Ok((costs, first_warmup, run.run.elapsed))
}

/// The stack high-water marks after every category's call, made by the VTL0 test kernel on
/// VP 1 of 2 (so that the AP stack's mark is the proxy's paths, and VP 0's boot stack's the
/// boot's, from its line before its first return to VTL0), then a VtlCall on VP 1, on which the
/// paravisor reports its stack in a debug line if it is the deepest of its kind so far
/// (`runloop::report_stack`). Nothing runs on VP 0 meanwhile: the VPs share the UART, and a
/// VP 0 line could land inside one of VP 1's debug lines.
fn stack_marks(images: &live::Images, arch: Arch) -> Result<BTreeMap<&'static str, (u64, u64)>> {
    let cats = categories(arch);
    let vtl_call = vtl0::Mode {
        vtl_entry: vtl0::VtlEntry::VtlCall,
        ..vtl0::Mode::default()
    };
    let table = cats
        .iter()
        .fold(vtl0::Table::new(), |t, c| c.entry.add_to(t).on_vp(1))
        .hypercall_in(vtl_call, 0, &[], 0)
        .on_vp(1);
    // The VtlCall's report is a debug line.
    let (run, _) = images.run_table_on_vps(
        &table,
        &format!("{} pv.log=debug", e2e::RELAY),
        proxy_scenario(arch),
        2,
        Duration::from_secs(120),
    )?;
    let console = &run.run.console;
    let mut marks = BTreeMap::new();
    for kind in ["boot", "AP"] {
        let mark = stack_high_water(console, kind).with_context(|| {
            format!(
                "{}: no {kind} stack high-water line:\n{console}",
                arch.name()
            )
        })?;
        marks.insert(kind, mark);
    }
    Ok(marks)
}

/// One image set's per-call figures: `PROXY_RUNS` identical runs (which must agree) and one in
/// reverse order; (costs, the first warm-up call's instructions, reversed costs, wall time).
fn measure_per_call(
    images: &live::Images,
    arch: Arch,
    cats: &[Category],
) -> Result<(Vec<CallCost>, u64, Vec<CallCost>, Duration)> {
    let forward: Vec<usize> = (0..cats.len()).collect();
    let mut runs = Vec::new();
    let mut wall = Duration::ZERO;
    let mut first = 0;
    for _ in 0..PROXY_RUNS {
        let (costs, warm, elapsed) = live_proxy_run(images, arch, cats, &forward)?;
        runs.push(costs);
        first = warm;
        wall += elapsed;
    }
    let reversed: Vec<usize> = forward.iter().rev().copied().collect();
    let (reversed_costs, _, elapsed) = live_proxy_run(images, arch, cats, &reversed)?;
    wall += elapsed;
    let costs = runs[0].clone();
    if !runs.iter().all(|r| *r == costs) {
        for (i, r) in runs.iter().enumerate() {
            eprintln!("{} run {i}: {:?}", arch.name(), r);
        }
        bail!(
            "{}: per-call counts differ between identical in-VM runs ({})",
            arch.name(),
            images.elf.display()
        );
    }
    Ok((costs, first, reversed_costs, wall))
}

/// The per-call figures: each category's call made by the VTL0 test kernel, VTL2's instructions
/// counted by the in-VM host; with `before`, the same for another tree's images in the same
/// run, side by side.
fn live_per_call_section(
    out: &mut String,
    images: &live::Images,
    before: Option<&live::Images>,
    arch: Arch,
) -> Result<()> {
    let cats = categories(arch);
    let (costs, first_warmup, reversed_costs, mut wall) = measure_per_call(images, arch, &cats)?;
    writeln!(
        out,
        "### Per proxied VTL0 call ({}, 1 VP, default scenario; in-VM host, the VTL0 test kernel)\n",
        arch.name()
    )?;
    write_per_call_table(out, &cats, &costs)?;
    writeln!(
        out,
        "- deterministic: {PROXY_RUNS} identical runs gave identical host calls, transitions and \
         instruction counts per call; a run with the calls in reverse order gave {}",
        if reversed_costs == costs {
            "the same figures".to_string()
        } else {
            let diff: Vec<String> = cats
                .iter()
                .zip(costs.iter().zip(&reversed_costs))
                .filter(|(_, (a, b))| a != b)
                .map(|(c, (a, b))| format!("{}: {} vs {}", c.name, a.instructions, b.instructions))
                .collect();
            format!("different instruction counts ({})", diff.join("; "))
        }
    )?;
    writeln!(
        out,
        "- each run first makes {WARMUP} calls of code 0x77 (refused): the paravisor prints a \
         line for the first {WARMUP} unexpected calls on a VP, then one in 65,536, so the \
         answered and refused rows are what a VTL0 making them all the time pays; the first \
         of those calls, line included, cost {first_warmup} VTL2 instructions"
    )?;
    writeln!(
        out,
        "- VTL2 instructions: counted by the in-VM host under `-icount shift=0` from the \
         intercept's delivery to VTL2's VtlReturn (arm64: the PMU cycle counter, EL1 only; \
         x86: the TSC around each VMRUN of VTL2, the host's own instructions in that window \
         taken off, and a REP string instruction counting once per iteration); \
         in parentheses VTL2's exits to the host in that span (its hypercalls, the VtlReturn \
         included, and MSR/CPUID/SMCCC accesses)"
    )?;
    if let Some(before) = before {
        let (old, old_first, _, old_wall) = measure_per_call(before, arch, &cats)?;
        wall += old_wall;
        writeln!(
            out,
            "\n#### Before and after, measured in this run ({})\n\n\
             Before: the paravisor and VTL0 kernel ELFs in `{}`, under this tree's in-VM host \
             (the same model, which offers the x86 register page; a paravisor that does not \
             map it moves the IP by SetVpRegisters).\n\n\
             | category | host calls before / after (VtlReturn aside) | VTL2 instructions before / after |\n\
             |---|---|---|",
            arch.name(),
            before.elf.parent().map_or_else(String::new, |d| d.display().to_string())
        )?;
        for ((cat, b), a) in cats.iter().zip(&old).zip(&costs) {
            let list = |c: &CallCost| {
                let l: Vec<String> = c.host.iter().map(|(n, k)| format!("{n} {k}")).collect();
                if l.is_empty() {
                    "none".to_string()
                } else {
                    l.join(", ")
                }
            };
            writeln!(
                out,
                "| {} | {} ({}) / {} ({}) | {} / {} |",
                cat.name,
                b.host_calls(),
                list(b),
                a.host_calls(),
                list(a),
                b.instructions,
                a.instructions
            )?;
        }
        writeln!(
            out,
            "| first unexpected call on a VP (code 0x77, its line included) | — | {old_first} / \
             {first_warmup} |\n"
        )?;
    }
    writeln!(
        out,
        "- cost of counting: {} runs in {:.1} s of QEMU wall time\n",
        (PROXY_RUNS + 1) * (1 + usize::from(before.is_some())),
        wall.as_secs_f64()
    )?;
    Ok(())
}

/// The per-call table and how it compares with the interface's minimum.
fn write_per_call_table(out: &mut String, cats: &[Category], costs: &[CallCost]) -> Result<()> {
    writeln!(
        out,
        "| category | VTL0 call | VTL0 sees | host hypercalls issued (VtlReturn aside) | \
         host calls: issued / minimum | VTL transitions: 0→2 + 2→0 / minimum | \
         VTL2 instructions (traps) |\n\
         |---|---|---|---|---|---|---|"
    )?;
    let mut over = Vec::new();
    for (cat, cost) in cats.iter().zip(costs) {
        let mut host: Vec<String> = cost.host.iter().map(|(c, n)| format!("{c} {n}")).collect();
        if cost.other_exits > 0 {
            host.push(format!("+ {} MSR/CPUID/SMCCC exits", cost.other_exits));
        }
        if host.is_empty() {
            host.push("none".into());
        }
        let (min, tlfs_min) = minimum_host_calls(cat.handling);
        let issued = cost.host_calls() + cost.other_exits;
        over.push((
            i64::from(issued) - i64::from(min),
            i64::from(issued) - i64::from(tlfs_min),
            cost.entries + cost.exits,
        ));
        writeln!(
            out,
            "| {} | {} | {} | {} | {issued} / {min} (TLFS-only {tlfs_min}) | {} + {} / 2 | {} ({}) |",
            cat.name,
            cat.call_name,
            cat.status.map_or_else(|| "fault".to_string(), |s| format!("{s:?}")),
            host.join(", "),
            cost.entries,
            cost.exits,
            cost.instructions,
            cost.traps,
        )?;
    }
    writeln!(out)?;
    let set_vp_registers: Vec<u32> = costs
        .iter()
        .map(|c| c.host.get("SET_VP_REGISTERS").copied().unwrap_or(0))
        .collect();
    if over.iter().all(|o| *o == (1, 0, 2)) && set_vp_registers.iter().all(|&n| n == 1) {
        writeln!(
            out,
            "- against the minimum: every category issues exactly one host call over it, the \
             SetVpRegisters that advances VTL0's IP, and so meets the TLFS-only minimum; VTL \
             transitions are at the minimum (2 per call)"
        )?;
    } else {
        let list: Vec<String> = cats
            .iter()
            .zip(&over)
            .map(|(c, (o, t, x))| {
                format!(
                    "{}: {o:+} host calls ({t:+} TLFS-only), {x} transitions",
                    c.name
                )
            })
            .collect();
        writeln!(out, "- against the minimum: {}", list.join("; "))?;
    }
    Ok(())
}

/// The lower bound the interface allows, once for both arches.
const LOWER_BOUND: &str = "\
### Lower bound per proxied call

- Every call costs 2 VTL transitions, the intercept (VTL0→VTL2) and the VtlReturn (VTL2→VTL0);
  the paravisor adds none.
- A relayed call needs the relay itself: 1 host hypercall (relayed calls are simple calls; one
  issue unless the host times out). Answering locally or refusing needs none.
- Completing the call: the result goes to VTL0 for free (x64: the VP assist page's
  `vtl_control.return_rax`/`return_rcx`, applied by the VtlReturn; arm64: X0-X17 are shared
  between the VTLs). Moving VTL0's IP past the instruction: VTL0's RIP/PC is private, so
  TLFS-only it is a `SetVpRegisters` (target VTL0) per completed call. The hypervisor's VTL
  register page (NON-TLFS; fact sheet in `tests/hvmodel/src/regpage.rs`) removes it on x86:
  VTL2 writes VTL0's RIP there with a dirty bit the VtlReturn applies. This paravisor uses it
  where the host offers it (the in-VM host's model does, by default); arm64 has none (Linux's
  `mshv_vtl` maps it on x86_64 only), so there every completed call costs that one call.
- VTL-return actions (`HvRegisterVsmCapabilities.return_action_available`, the assist page's
  `vtl_return_actions`) do not remove it: the only action defined (OpenVMM's
  `HvVpAssistPageActionSignalEvent`) is a SignalEvent performed on the return, which cannot set a
  register (and a forwarded SignalEvent cannot ride on it either: VTL0 needs its status).
- A fault VTL0 takes (#UD, a memory fault) is its pending event, a register the page does not
  carry: one SetVpRegisters at least, with or without the page.
- Hence \"issued / minimum\": the minimum counts the IP advance as free (register page);
  TLFS-only (no register page) it is one host call higher.
";

pub fn run(arches: &[Arch], before: Option<&Path>, per_call_only: bool) -> Result<()> {
    // From xtask's start: the wall time counts the image builds, as it says.
    let started = crate::progress_clock_starts();
    let mut out = String::new();
    writeln!(out, "# Benchmark figures\n")?;
    writeln!(
        out,
        "Measured by `cargo xtask bench` (release images, QEMU TCG under the in-VM mock \
         hypervisor, the VTL0 test kernel making the calls).\n"
    )?;
    for &arch in arches {
        mockhv::qemu::ensure_qemu(arch)?;
        live_section(&mut out, arch, before, per_call_only)?;
    }
    writeln!(out, "{LOWER_BOUND}")?;
    writeln!(
        out,
        "Bench wall time (all of the above, image builds included): {:.1} s",
        started.elapsed().as_secs_f64()
    )?;
    print!("{out}");
    let path = workspace_root().join("target").join("bench.md");
    std::fs::write(&path, &out)?;
    println!("(written to {})", path.display());
    Ok(())
}

// ---- Under the in-VM host, with a real VTL0 -------------------------------------------------

/// Calls in the throughput runs' repeat entry.
const LIVE_CALLS: u32 = 50_000;
/// Runs per throughput figure (the median is reported).
const LIVE_RUNS: usize = 3;
/// VP counts of the boot-to-proxy-loop figure.
const LIVE_BOOT_VPS: [u32; 4] = [1, 4, 16, 64];
/// The VTL0 connection the relayed runs' command line maps to the in-VM host's port 1 (its
/// scenario's VTL0 port); the host does not know connection 5, so VTL2 gets the call.
const RELAYED_CONNECTION: u32 = 5;
/// Calls of the relayed check run, whose trace is read.
const RELAY_CHECK_CALLS: u32 = 100;

/// One throughput workload: a call VTL0 repeats and what each repetition must return.
struct Workload {
    name: &'static str,
    control: u64,
    input: Vec<u8>,
    status: HvStatus,
    /// The paravisor's command line: `None` boots its IGVM file with none, `Some`
    /// boots its ELF with it.
    append: Option<String>,
}

fn workloads() -> Vec<Workload> {
    let post = u64::from(HypercallCode::POST_MESSAGE.0);
    let signal = Control::new()
        .with_code(HypercallCode::SIGNAL_EVENT)
        .with_fast(true)
        .into_bits();
    let connection = u64::from(RELAYED_CONNECTION).to_le_bytes().to_vec();
    vec![
        Workload {
            name: "refused in VTL2: PostMessage (memory-based, 256-byte input) to an unknown \
                   connection, INVALID_CONNECTION_ID; IGVM boot",
            control: post,
            input: e2e::post_message(0x77),
            status: HvStatus::INVALID_CONNECTION_ID,
            append: None,
        },
        Workload {
            name: "refused in VTL2: fast SignalEvent to an unknown connection, \
                   INVALID_CONNECTION_ID; IGVM boot",
            control: signal,
            input: connection.clone(),
            status: HvStatus::INVALID_CONNECTION_ID,
            append: None,
        },
        Workload {
            name: "relayed: fast SignalEvent to VTL0's connection 5, relayed to the host's port \
                   1, SUCCESS; ELF boot with `pv.relay=5:0x1`",
            control: signal,
            input: connection,
            status: HvStatus::SUCCESS,
            append: Some(format!("pv.relay={RELAYED_CONNECTION}:0x1")),
        },
    ]
}

/// `calls` repetitions of `w`: every one must have returned `w.status` with its canaries
/// intact, and so must the last call's own line. (kernel-counted calls per second, if the
/// counter's frequency is known; the run's wall time; the host's trace if `trace`)
fn repeat_run(
    images: &live::Images,
    w: &Workload,
    calls: u32,
    trace: bool,
) -> Result<(Option<f64>, Duration, Vec<Event>)> {
    let table = vtl0::Table::new()
        .repeat(calls)
        .hypercall(w.control, &w.input, 0);
    let timeout = Duration::from_secs(600);
    let (run, results) = match &w.append {
        None => images.run_table(&table, trace, timeout)?,
        Some(append) => images.run_table_elf(&table, append, trace, timeout)?,
    };
    let records = results.records().map_err(anyhow::Error::msg)?;
    let want = u64::from(w.status.0);
    let want_last = vtl0::Record::Hypercall {
        control: w.control,
        outcome: vtl0::CallOutcome::Done {
            result: want,
            out: vec![],
            bad_canaries: vec![],
        },
    };
    let vtl0::Record::Repeat(stats) = &records[0] else {
        bail!("unexpected records {records:?}");
    };
    let got = (
        stats.calls,
        stats.first,
        stats.last,
        stats.differed,
        stats.canaries_bad,
    );
    if got != (calls, want, want, 0, 0) || records[1] != want_last {
        bail!(
            "{}: the repeated call did not return {:?} every time: {stats:?}, last {:?}",
            w.name,
            w.status,
            records[1]
        );
    }
    Ok((stats.calls_per_second(), run.run.elapsed, run.events))
}

/// The relay really happened: the host's trace of a short run has exactly one SignalEvent from
/// VTL2 to its port 1 per VTL0 call.
fn check_relayed(images: &live::Images, w: &Workload) -> Result<()> {
    let (_, _, events) = repeat_run(images, w, RELAY_CHECK_CALLS, true)?;
    let relayed = events
        .iter()
        .filter(|e| {
            matches!(e, Event::Hypercall(h) if h.vtl == hvdef::Vtl::VTL2
                && h.code == HypercallCode::SIGNAL_EVENT
                && h.input.get(..4) == Some(&1u32.to_le_bytes()[..]))
        })
        .count();
    if relayed != RELAY_CHECK_CALLS as usize {
        bail!(
            "{}: {RELAY_CHECK_CALLS} VTL0 calls but {relayed} relays to the host's port 1",
            w.name
        );
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Proxied VTL0 calls per second through the whole stack, and the boot to the proxy loop at
/// 1, 4 and 16 VPs, under the in-VM host.
fn live_section(
    out: &mut String,
    arch: Arch,
    before: Option<&Path>,
    per_call_only: bool,
) -> Result<()> {
    let name = arch.name();
    // xtask built them (and said so).
    let images = live::built(arch, true)?;
    let before = before
        .map(|dir| live::from_dir(arch, dir, &images.host))
        .transpose()?;
    writeln!(out, "## {} under the in-VM host\n", arch.name())?;
    if let Some(why) = images.refusal() {
        writeln!(
            out,
            "- skipped: the in-VM host refuses {} with a live VTL0 ({why})\n",
            arch.name()
        )?;
        return Ok(());
    }
    if per_call_only {
        return live_per_call_section(out, &images, before.as_ref(), arch);
    }
    writeln!(
        out,
        "Proxied VTL0 calls per second through the whole stack (the VTL0 test kernel's repeat \
         entry, {LIVE_CALLS} calls in a row, every result checked; median of {LIVE_RUNS}): by \
         VTL0's own counter over the repeat, and by QEMU's wall time (a {LIVE_CALLS}-call run \
         minus a 1-call run).\n\n| workload | by VTL0's counter | by wall time |\n|---|---|---|"
    )?;
    // With `before`, the other tree's images run the same workloads, interleaved with this
    // tree's run by run (so both see the same machine), in a table of their own below.
    let mut compared = Vec::new();
    for w in workloads() {
        crate::progress(format_args!(
            "bench {name}: {}: {LIVE_RUNS} runs of {LIVE_CALLS} calls and of 1",
            w.name
        ));
        if w.append.is_some() {
            check_relayed(&images, &w)?;
        }
        let mut sets: Vec<&live::Images> = vec![&images];
        // The other tree's images may not boot under this tree's host (an IGVM file its loader
        // refuses): then that workload has no "before", and says why.
        let mut refused_before = None;
        if let Some(b) = before.as_ref() {
            match repeat_run(b, &w, 1, false) {
                Ok(_) => sets.push(b),
                Err(e) => refused_before = Some(format!("{e:#}")),
            }
        }
        let mut counted = vec![Vec::new(); sets.len()];
        let mut wall = vec![Vec::new(); sets.len()];
        for _ in 0..LIVE_RUNS {
            for (k, set) in sets.iter().enumerate() {
                let (rate, long, _) = repeat_run(set, &w, LIVE_CALLS, false)?;
                let (_, short, _) = repeat_run(set, &w, 1, false)?;
                counted[k].extend(rate);
                let extra = long.saturating_sub(short).as_secs_f64();
                wall[k].push(if extra > 0.0 {
                    f64::from(LIVE_CALLS - 1) / extra
                } else {
                    f64::INFINITY
                });
            }
        }
        let figures: Vec<(String, f64)> = counted
            .into_iter()
            .zip(wall)
            .map(|(c, w)| {
                let by_counter = if c.len() == LIVE_RUNS {
                    format!("{:.0} /s", median(c))
                } else {
                    "unknown (no counter frequency)".into()
                };
                (by_counter, median(w))
            })
            .collect();
        writeln!(
            out,
            "| {} | {} | {:.0} /s |",
            w.name, figures[0].0, figures[0].1
        )?;
        if figures.len() > 1 {
            compared.push((w.name, Ok(figures)));
        } else if let Some(why) = refused_before {
            compared.push((w.name, Err(why)));
        }
    }
    if !compared.is_empty() {
        writeln!(
            out,
            "\nThe same workloads, before (the images in `--before`, under this tree's host) and \
             after, run by run in turn in this session:\n\n\
             | workload | before: counter / wall | after: counter / wall |\n|---|---|---|"
        )?;
        for (name, f) in compared {
            match f {
                Ok(f) => writeln!(
                    out,
                    "| {name} | {} / {:.0} /s | {} / {:.0} /s |",
                    f[1].0, f[1].1, f[0].0, f[0].1
                )?,
                Err(why) => writeln!(out, "| {name} | not measured: {why} | — |")?,
            }
        }
    }
    writeln!(
        out,
        "\n| VPs | boot to the proxy loop (wall) | trace events | hypercalls per VP (VP 0; the others) | VTL2 heap used |\n|---|---|---|---|---|"
    )?;
    let mut by_code = None;
    let mut heap = BTreeMap::new();
    let mut stacks: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for vps in LIVE_BOOT_VPS {
        crate::progress(format_args!(
            "bench {name}: boot to the proxy loop at {vps} VP(s)"
        ));
        let run = images.boot_to_proxy_loop(vps)?;
        if vps == BOOT_VPS {
            by_code = Some(boot_calls(&run.events));
        }
        let used = heap_used(&run.run.console)?;
        heap.insert(vps, used);
        for kind in ["boot", "AP"] {
            if let Some(mark) = stack_high_water(&run.run.console, kind) {
                let deepest = stacks.entry(kind).or_insert(mark);
                *deepest = (*deepest).max(mark);
            }
        }
        let mut per_vp: BTreeMap<u32, u32> = BTreeMap::new();
        for event in &run.events {
            if let Event::Hypercall(h) = event {
                *per_vp.entry(h.vp).or_default() += 1;
            }
        }
        let others: Vec<u32> = (1..vps)
            .map(|vp| per_vp.get(&vp).copied().unwrap_or(0))
            .collect();
        let others = match (others.iter().min(), others.iter().max()) {
            (None, _) => "—".to_string(),
            (Some(lo), Some(hi)) if lo == hi => format!("{lo} each"),
            (Some(lo), Some(hi)) => format!("{lo}..{hi}"),
            _ => unreachable!(),
        };
        writeln!(
            out,
            "| {vps} | {:.2} s | {} | {}; {others} | {used} bytes |",
            run.run.elapsed.as_secs_f64(),
            run.events.len(),
            per_vp.get(&0).copied().unwrap_or(0),
        )?;
    }
    writeln!(out)?;
    if let Some(by_code) = by_code {
        writeln!(
            out,
            "| VP | hypercalls during a {BOOT_VPS}-VP boot (IGVM file), by code |\n|---|---|"
        )?;
        for (vp, calls) in by_code {
            let list: Vec<String> = calls.iter().map(|(c, n)| format!("{c} {n}")).collect();
            writeln!(out, "| {vp} | {} |", list.join(", "))?;
        }
        writeln!(out)?;
    }
    let (total, writable) = memory(&images.elf)?;
    writeln!(
        out,
        "- static memory: {writable} bytes of .data + .bss ({total} bytes loaded and reserved \
         in all)"
    )?;
    let (lo, hi) = (LIVE_BOOT_VPS[0], LIVE_BOOT_VPS[LIVE_BOOT_VPS.len() - 1]);
    let per_vp = (heap[&hi] - heap[&lo]) / u64::from(hi - lo);
    writeln!(
        out,
        "- per VP: {per_vp} bytes of VTL2 heap (heap used at {hi} VPs minus at {lo}, over {})",
        hi - lo
    )?;
    let mut marks = stack_marks(&images, arch)?;
    for (kind, mark) in stacks {
        let deepest = marks.entry(kind).or_insert(mark);
        *deepest = (*deepest).max(mark);
    }
    for (kind, (used, size)) in marks {
        writeln!(
            out,
            "- {kind} stack high-water: {used} of {size} bytes (boots above and every proxied \
             call category below)"
        )?;
    }
    writeln!(out)?;
    crate::progress(format_args!(
        "bench {name}: per proxied call: host calls, VTL transitions, VTL2 instructions"
    ));
    live_per_call_section(out, &images, before.as_ref(), arch)?;
    Ok(())
}
