//! The soak's invariants 2 to 4, per boot, on the VTL0 kernel's records and the host's trace
//! against the [`Plan`]s (invariant 1, the boot itself, is `boots.rs`'s):
//!
//! 2. every hypercall record: the whole result word is the oracle's status (random control
//!    words: a status the TLFS allows for a proxied call, `ALLOWED`), every canary intact; a
//!    list on VTL2's memory: the exact memory fault instead;
//! 3. every access record: a store, load or fetch touching VTL2's pages (the image,
//!    `__image_start..__image_end` from the ELF, and the heap after it, `e2e::vtl2_heap`;
//!    "the image" below is both) faulted with exactly the exception
//!    `e2e::memory_fault` gives (arm64 ESR, FAR 0; x64 #GP(0)); any other was carried out, a
//!    load giving what the store before it wrote, a fetch of the `ret` written there returning;
//! 4. the host's trace: one hypercall intercept per call the oracle says the host hands VTL2
//!    (at least; at most one per hypercall entry), one GPA intercept per faulted access or
//!    call, and
//!    after VTL0 started VTL2 made exactly one SetVpRegisters per intercept (VTL0's IP advance or
//!    pending event) and no other hypercall but the relays: in entry order, exactly the ones the
//!    oracle requires (code, control word with HV_HYPERCALL_NESTED as the host needs it, the
//!    input byte for byte), those it allows, no other; and every GPA VTL2 names to the host is
//!    on one of the pages it used at boot (its own hypercall pages).

use super::oracle::Host;
use super::plan::{Entry, Plan, Want};
use super::{ALLOWED, RELAYED};
use hvdef::{Control, HvMessageType, HvStatus, HypercallCode, Vtl};
use mockhv::model::Event;
use mockhv::qemu::Arch;
use std::collections::{BTreeMap, BTreeSet};
use vtl0::{CallOutcome, Fault, Record};

/// Whether `got` is the fault `want` (a pending-event value from `e2e::memory_fault`) stands
/// for: arm64 the ESR with FAR 0 (the paravisor hands VTL0 no address); x64 the vector and
/// error code (CR2 is whatever an earlier page fault left).
fn is_fault(arch: Arch, got: &Fault, want: u128) -> bool {
    match (arch, got) {
        (Arch::Aarch64, Fault::Arm64 { esr, far }) => *esr == (want >> 64) as u64 && *far == 0,
        (Arch::X86_64, Fault::X86 { vector, code, .. }) => {
            u128::from(*vector) == (want >> 16) & 0xFF && *code == 0
        }
        _ => false,
    }
}

/// What the checks saw, to show they had something to check.
#[derive(Default)]
pub(super) struct Stats {
    pub(super) statuses: BTreeMap<String, usize>,
    pub(super) exact: usize,
    pub(super) allowed: usize,
    pub(super) accesses: usize,
    pub(super) faults: usize,
    /// Inputs placed on pages above 4 GiB / at the top of RAM.
    pub(super) placed: usize,
}

pub(super) fn check_record(
    arch: Arch,
    index: usize,
    plan: &Plan,
    record: &Record,
    stats: &mut Stats,
    out: &mut Vec<String>,
) {
    let name = arch.name();
    let fail = |why: String| format!("{name} entry #{index} ({}): {why}", plan.what);
    match (&plan.entry, record) {
        (
            Entry::Hypercall {
                control,
                want,
                output,
                ..
            },
            Record::Hypercall {
                control: c,
                outcome:
                    CallOutcome::Done {
                        result,
                        bad_canaries,
                        out: got,
                    },
            },
        ) if c == control => {
            if got != output {
                out.push(fail(format!(
                    "invariant 2: VTL0's output {got:02x?}, expected {output:02x?}"
                )));
            }
            let status = HvStatus(*result as u16);
            *stats.statuses.entry(format!("{status:?}")).or_default() += 1;
            if !bad_canaries.is_empty() {
                out.push(fail(format!("canaries broken: {bad_canaries:?}")));
            }
            let ok = match want {
                Want::Exactly(s) => {
                    stats.exact += 1;
                    s.iter().any(|s| u64::from(s.0) == *result)
                }
                Want::Allowed => {
                    stats.allowed += 1;
                    *result >> 16 == 0 && ALLOWED.contains(&status)
                }
                Want::Fault(_) => false,
            };
            if !ok {
                out.push(fail(format!(
                    "invariant 2: expected {want:?}, VTL0 got result {result:#x}"
                )));
            }
        }
        (
            Entry::Hypercall {
                control,
                want: Want::Fault(want),
                ..
            },
            Record::Hypercall {
                control: c,
                outcome: CallOutcome::Fault(f),
            },
        ) if c == control => {
            stats.faults += 1;
            if !is_fault(arch, f, *want) {
                out.push(fail(format!(
                    "invariant 2: expected the fault {want:#x}, VTL0 got {f}"
                )));
            }
        }
        (
            Entry::Write { gpa, fault, .. },
            Record::Write {
                gpa: g, outcome, ..
            },
        ) if g == gpa => {
            stats.accesses += 1;
            access_outcome(arch, *fault, outcome.as_ref().err(), stats, out, &fail);
        }
        (
            Entry::Read {
                gpa, value, fault, ..
            },
            Record::Read {
                gpa: g, outcome, ..
            },
        ) if g == gpa => {
            stats.accesses += 1;
            access_outcome(arch, *fault, outcome.as_ref().err(), stats, out, &fail);
            if let (Some(want), Ok(got)) = (value, outcome) {
                if want != got {
                    out.push(fail(format!(
                        "invariant 3: loaded {got:#x}, stored {want:#x}"
                    )));
                }
            }
        }
        (
            Entry::Place { gpa, bytes },
            Record::Place {
                gpa: g,
                len,
                outcome,
            },
        ) if g == gpa && *len == bytes.len() => {
            stats.placed += 1;
            if let Err(f) = outcome {
                out.push(fail(format!("placing VTL0's buffer faulted: {f}")));
            }
        }
        (Entry::Exec { gpa, fault }, Record::Exec { gpa: g, outcome }) if g == gpa => {
            stats.accesses += 1;
            access_outcome(arch, *fault, outcome.as_ref().err(), stats, out, &fail);
        }
        (_, r) => out.push(fail(format!("unexpected record {r:?}"))),
    }
}

fn access_outcome(
    arch: Arch,
    want: Option<u128>,
    got: Option<&Fault>,
    stats: &mut Stats,
    out: &mut Vec<String>,
    fail: &dyn Fn(String) -> String,
) {
    match (want, got) {
        (None, None) => {}
        (Some(w), Some(f)) if is_fault(arch, f, w) => stats.faults += 1,
        (w, g) => out.push(fail(format!(
            "invariant 3: expected {}, got {}",
            w.map_or("the access carried out".into(), |w| format!(
                "the fault {w:#x}"
            )),
            g.map_or("the access carried out".into(), |f| f.to_string())
        ))),
    }
}

/// Invariant 4, on the host's trace of one boot.
pub(super) fn check_trace(
    arch: Arch,
    boot: usize,
    chunk: &[Plan],
    nested: bool,
    register_page: bool,
    events: &[Event],
    out: &mut Vec<String>,
) {
    let name = arch.name();
    let want_hc = chunk
        .iter()
        .filter(|p| {
            matches!(
                p.entry,
                Entry::Hypercall {
                    intercepted: true,
                    ..
                }
            )
        })
        .count();
    let may_hc = chunk
        .iter()
        .filter(|p| matches!(p.entry, Entry::Hypercall { .. }))
        .count();
    let want_gpa = chunk
        .iter()
        .filter(|p| match &p.entry {
            Entry::Write { fault, .. } | Entry::Read { fault, .. } | Entry::Exec { fault, .. } => {
                fault.is_some()
            }
            Entry::Hypercall { want, .. } => matches!(want, Want::Fault(_)),
            Entry::Place { .. } => false,
        })
        .count();
    let (mut hc, mut gpa) = (0, 0);
    // The relays VTL2 made, in order, against what each entry must (or may) have relayed.
    let mut relays: Vec<&mockhv::model::HypercallRecord> = Vec::new();
    // VTL2's own calls once VTL0 runs: with nothing to relay, only the completion of each
    // intercept, one SetVpRegisters of VTL0's IP or pending event (the VtlReturns are the
    // host's VTL switches, not in its trace as hypercalls); with the x86 register page the IP
    // moves without one, so only the pending events of the GPA intercepts remain.
    let mut sets = 0;
    let mut vtl0_started = false;
    // The GPAs VTL2 named to the host for its own calls during boot (its hypercall pages):
    // once VTL0 runs, a GPA VTL2 names must be one of them (TLFS: VTL2 owns its pages; a
    // relay that handed the host VTL0's buffer, or another page, is a leak either way).
    let mut own_pages: BTreeSet<u64> = BTreeSet::new();
    for e in events {
        if let Event::Hypercall(h) = e {
            if h.vtl == Vtl::VTL2 && !Control::from_bits(h.control).fast() {
                let mut gpas = [h.input_gpa, h.output_gpa].into_iter().filter(|&g| g != 0);
                if !vtl0_started {
                    own_pages.extend(gpas.map(|g| g & !0xFFF));
                } else if let Some(g) = gpas.find(|g| !own_pages.contains(&(g & !0xFFF))) {
                    out.push(format!(
                        "{name} boot {boot}: invariant 4: VTL2 named GPA {g:#x} to the host in \
                         {:?} (its own pages: {own_pages:#x?})",
                        h.code
                    ));
                }
            }
        }
        match e {
            Event::Intercept { vtl, message, .. } if *vtl == Vtl::VTL0 => {
                vtl0_started = true;
                match message.header.message_type {
                    HvMessageType::HYPERCALL_INTERCEPT => hc += 1,
                    HvMessageType::GPA_INTERCEPT => gpa += 1,
                    _ => {}
                }
            }
            Event::Hypercall(h) if h.vtl == Vtl::VTL0 => vtl0_started = true,
            Event::Hypercall(h) if vtl0_started && h.vtl == Vtl::VTL2 => match h.code {
                HypercallCode::SET_VP_REGISTERS => sets += 1,
                HypercallCode::VTL_RETURN => {}
                HypercallCode::POST_MESSAGE
                | HypercallCode::SIGNAL_EVENT
                | HypercallCode::RETARGET_DEVICE_INTERRUPT
                    if chunk.iter().any(|p| {
                        matches!(
                            &p.entry,
                            Entry::Hypercall {
                                host: Host::Required(_) | Host::Optional(_),
                                ..
                            }
                        )
                    }) =>
                {
                    relays.push(h)
                }
                code => out.push(format!(
                    "{name} boot {boot}: invariant 4: with VTL0 running and nothing to relay, \
                     the paravisor made {code:?} (control {:#x}){}",
                    h.control,
                    if RELAYED.contains(&code) {
                        ": a relay with an empty relay table"
                    } else {
                        ""
                    }
                )),
            },
            _ => {}
        }
    }
    // In order: each entry takes the next relay if it is its own. A required relay that is not
    // next but comes later means the ones before it were asked for by no entry: those are
    // reported once and skipped, so one stray relay does not count against every later entry.
    let unasked = |r: &mockhv::model::HypercallRecord| {
        format!(
            "{name} boot {boot}: invariant 4: a relay no entry asked for: {:?} control {:#x} \
             input {:02x?}",
            r.code, r.control, r.input
        )
    };
    let mut next = 0;
    for p in chunk {
        let Entry::Hypercall { host, .. } = &p.entry else {
            continue;
        };
        let (want, required) = match host {
            Host::Required(h) => (h, true),
            Host::Optional(h) => (h, false),
            _ => continue,
        };
        let matches = |r: &mockhv::model::HypercallRecord| {
            r.code == want.code
                && r.control == want.control(nested)
                && r.input.get(..want.input.len()) == Some(&want.input[..])
        };
        if relays.get(next).is_some_and(|r| matches(r)) {
            next += 1;
        } else if required {
            match relays[next..].iter().position(|r| matches(r)) {
                Some(skip) => {
                    out.extend(relays[next..next + skip].iter().map(|r| unasked(r)));
                    next += skip + 1;
                }
                None => out.push(format!(
                    "{name} boot {boot}: invariant 4: {} was not relayed as {want:?} (next \
                     relay: {:?})",
                    p.what,
                    relays.get(next).map(|r| (r.code, r.control, &r.input))
                )),
            }
        }
    }
    out.extend(relays[next..].iter().map(|r| unasked(r)));
    let want_sets = if register_page { gpa } else { hc + gpa };
    if sets != want_sets {
        out.push(format!(
            "{name} boot {boot}: invariant 4: {hc} hypercall and {gpa} GPA intercepts, but VTL2 \
             made {sets} SetVpRegisters after VTL0 started (want {want_sets}: one per {})",
            if register_page {
                "GPA intercept, the register page moving the IP"
            } else {
                "intercept"
            }
        ));
    }
    if !(want_hc..=may_hc).contains(&hc) || gpa != want_gpa {
        out.push(format!(
            "{name} boot {boot}: invariant 4: expected {want_hc}..={may_hc} hypercall intercepts \
             and {want_gpa} GPA intercepts, the host handed VTL2 {hc} and {gpa}"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mockhv::model::Vtl0Access;

    #[test]
    fn faults_compare_as_each_arch_reports_them() {
        let load = Vtl0Access::Read { gpa: 0, len: 8 };
        let want = e2e::memory_fault(Arch::Aarch64, &load, false);
        let esr = (want >> 64) as u64;
        assert!(is_fault(Arch::Aarch64, &Fault::Arm64 { esr, far: 0 }, want));
        assert!(!is_fault(
            Arch::Aarch64,
            &Fault::Arm64 { esr, far: 8 },
            want
        ));
        assert!(!is_fault(
            Arch::Aarch64,
            &Fault::Arm64 {
                esr: esr ^ 1 << 6,
                far: 0
            },
            want
        ));
        let gp = e2e::memory_fault(Arch::X86_64, &load, false);
        let f = |vector, code| Fault::X86 {
            vector,
            code,
            cr2: 0x1234,
        };
        assert!(is_fault(Arch::X86_64, &f(13, 0), gp));
        assert!(!is_fault(Arch::X86_64, &f(14, 0), gp));
        assert!(!is_fault(Arch::X86_64, &f(13, 2), gp));
    }
}
