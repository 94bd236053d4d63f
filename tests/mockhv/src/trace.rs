//! The model's trace for people: a summary of a run, one event in a few words.

/// A short account of what the paravisor asked of the hypervisor, for people: event counts,
/// then each call code with its statuses.
pub fn trace_summary(events: &[crate::model::Event]) -> String {
    use crate::model::Event;
    use std::collections::BTreeMap;
    let (mut cpuid, mut rdmsr, mut wrmsr, mut smccc, mut intercepts) = (0, 0, 0, 0, 0);
    let mut calls: BTreeMap<String, (u32, BTreeMap<String, u32>)> = BTreeMap::new();
    for event in events {
        match event {
            Event::Cpuid { .. } => cpuid += 1,
            Event::Rdmsr { .. } => rdmsr += 1,
            Event::Wrmsr { .. } => wrmsr += 1,
            Event::Smccc { .. } => smccc += 1,
            Event::Intercept { .. } | Event::LowerVtlCall { .. } => intercepts += 1,
            Event::PendingInterrupt { .. }
            | Event::PartitionReset { .. }
            | Event::Vtl0Access { .. } => {}
            Event::Hypercall(h) => {
                let entry = calls.entry(format!("{:?}", h.code)).or_default();
                entry.0 += 1;
                let status = h.status().map_or("no status".into(), |s| format!("{s:?}"));
                *entry.1.entry(status).or_default() += 1;
            }
        }
    }
    let mut s = format!(
        "trace: {} events: {cpuid} cpuid, {rdmsr} rdmsr, {wrmsr} wrmsr, {smccc} other \
         SMCCC, {intercepts} intercepts delivered\n",
        events.len(),
    );
    for (code, (n, statuses)) in calls {
        let statuses: Vec<String> = statuses.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        s.push_str(&format!("  {code:<28} x{n:<4} {}\n", statuses.join(", ")));
    }
    s
}

/// One event, briefly, for a failure summary.
pub fn brief(event: &crate::model::Event) -> String {
    use crate::model::Event;
    match event {
        Event::Hypercall(h) => format!(
            "vp{} VTL{} {:?} control {:#x} -> {:?}",
            h.vp,
            h.vtl.get(),
            h.code,
            h.control,
            h.outcome
        ),
        Event::Intercept {
            vp, vtl, message, ..
        } => format!(
            "vp{vp} intercept {:?} of VTL{} delivered",
            message.header.message_type,
            vtl.get()
        ),
        Event::Vtl0Access {
            vp,
            gpa,
            access,
            allowed,
        } => format!(
            "vp{vp} VTL0 {access:?} at GPA {gpa:#x} {}",
            if *allowed { "carried out" } else { "stopped" }
        ),
        other => format!("{other:?}"),
    }
}
