//! The soak's entries: a table entry and what it must produce ([`Plan`]), as the generator
//! (`gen.rs`) makes them and the checks (`checks.rs`) hold the kernel's records against them,
//! and how a stream of them is cut into boots (one VTL0 kernel table each).

use super::oracle::Host;
use hvdef::HvStatus;
use std::ops::Range;
use vtl0::{Table, MAX_ENTRIES, TABLE_MAX};

/// A table entry and what it must produce.
#[derive(Clone, Debug)]
pub(super) enum Entry {
    Hypercall {
        control: u64,
        input: Vec<u8>,
        want: Want,
        /// The host must hand this call to VTL2 (an intercept), by the TLFS and the scenario:
        /// a well-formed call to a connection or device it does not know. It may hand on any
        /// other (a broken input may be refused before or after the lookup).
        intercepted: bool,
        /// The input and output GPAs the call names instead of the kernel's pages
        /// (`vtl0::FLAG_GPAS`; output length 0).
        gpas: Option<(u64, u64)>,
        /// What VTL2 must relay to the host for it (the oracle's; relay boots only).
        host: Host,
        /// The output bytes VTL0 must find (reported from its output page, which the kernel
        /// zeroes before the call); empty: none reported.
        output: Vec<u8>,
    },
    Write {
        gpa: u64,
        width: u32,
        value: u64,
        fault: Option<u128>,
    },
    Read {
        gpa: u64,
        width: u32,
        /// The value a store before it left (`None`: it faults).
        value: Option<u64>,
        fault: Option<u128>,
    },
    Exec {
        gpa: u64,
        fault: Option<u128>,
    },
    /// The kernel's place entry: `bytes` stored at `gpa` (a buffer for the next entry).
    Place {
        gpa: u64,
        bytes: Vec<u8>,
    },
}

#[derive(Clone, Debug)]
pub(super) enum Want {
    /// One of these statuses, no rep completed.
    Exactly(Vec<HvStatus>),
    /// Any status the TLFS allows for a proxied call.
    Allowed,
    /// No status: the call faults at the instruction with this pending event
    /// (`e2e::memory_fault`), its parameter list being on VTL2's memory (one GPA intercept).
    Fault(u128),
}

pub(super) struct Plan {
    pub(super) entry: Entry,
    pub(super) what: String,
    /// The load or fetch of what the entry before it stored: the two run in the same boot.
    pub(super) follows: bool,
}

impl Plan {
    /// A hypercall entry with no parameter-list placement (`gpas: None`), no expected output
    /// and no predecessor: the shape of every generated call.
    pub(super) fn hypercall(
        control: hvdef::Control,
        input: Vec<u8>,
        want: Want,
        intercepted: bool,
        host: Host,
        what: String,
    ) -> Plan {
        Plan {
            entry: Entry::Hypercall {
                control: control.into_bits(),
                input,
                want,
                intercepted,
                gpas: None,
                host,
                output: Vec::new(),
            },
            what,
            follows: false,
        }
    }

    /// The same entry expecting `bytes` of output.
    pub(super) fn with_output(mut self, bytes: Vec<u8>) -> Plan {
        if let Entry::Hypercall { output, .. } = &mut self.entry {
            *output = bytes;
        }
        self
    }

    /// Table bytes this entry takes (header, body, input padded to 8).
    pub(super) fn size(&self) -> usize {
        match &self.entry {
            Entry::Hypercall { input, gpas, .. } => {
                // The output length lives in the body: no extra bytes.
                8 + 16 + 16 * usize::from(gpas.is_some()) + input.len().div_ceil(8) * 8
            }
            Entry::Write { .. } => 8 + 24,
            Entry::Read { .. } => 8 + 16,
            Entry::Exec { .. } => 8 + 8,
            Entry::Place { bytes, .. } => 8 + 16 + bytes.len().div_ceil(8) * 8,
        }
    }

    pub(super) fn push(&self, t: Table) -> Table {
        match &self.entry {
            Entry::Hypercall {
                control,
                input,
                gpas: None,
                output,
                ..
            } => t.hypercall(*control, input, output.len() as u32),
            Entry::Hypercall {
                control,
                input,
                gpas: Some((i, o)),
                output,
                ..
            } => t.hypercall_at(*control, *i, *o, input, output.len() as u32),
            Entry::Write {
                gpa, width, value, ..
            } => t.write(*gpa, *width, *value),
            Entry::Read { gpa, width, .. } => t.read(*gpa, *width),
            Entry::Exec { gpa, .. } => t.exec(*gpa),
            Entry::Place { gpa, bytes } => t.place(*gpa, bytes),
        }
    }
}

/// Entries per boot: as many as the table window and the kernel's entry limit take.
pub(super) fn boots(plans: &[Plan]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 16);
    for (i, p) in plans.iter().enumerate() {
        // A boot ends before a full table, never between a store and its load or fetch.
        let full = |i: usize, bytes: usize| {
            i - start >= MAX_ENTRIES as usize - 1 || bytes > TABLE_MAX - 512
        };
        if !p.follows && full(i, bytes + p.size()) {
            out.push(start..i);
            (start, bytes) = (i, 16);
        }
        bytes += p.size();
    }
    if start < plans.len() {
        out.push(start..plans.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::gen::tests::plans;

    #[test]
    fn boots_respect_the_table_limits_and_keep_pairs_together() {
        let p = plans(7, 30_000);
        let b = boots(&p);
        assert_eq!(b.first().unwrap().start, 0);
        assert_eq!(b.last().unwrap().end, p.len());
        for w in b.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        for r in &b {
            assert!(r.len() <= MAX_ENTRIES as usize, "{r:?}");
            let table = p[r.clone()].iter().fold(Table::new(), |t, x| x.push(t));
            let bytes = table.to_bytes();
            assert!(bytes.len() <= TABLE_MAX);
            assert_eq!(
                bytes.len(),
                16 + p[r.clone()].iter().map(Plan::size).sum::<usize>()
            );
            assert!(vtl0::parse_table(&bytes, vtl0::Arch::Aarch64).is_ok());
            assert!(
                !p[r.start].follows,
                "a boot starts with a load of a store it lacks"
            );
        }
    }
}
