//! Property tests of the two parsers of outside input: the table (what the kernel reads) and
//! the result lines (what host tests read).

use crate::{
    parse_line, parse_table, Arch, CallOutcome, Entry, EntryLine, Fault, Line, Numbered, Record,
    RepeatStats, Table, LINE_PREFIX, MAX_REPEAT,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Call(u64, Vec<u8>, u32, bool),
    Read(u64, u32),
    Write(u64, u32, u64),
    Exec(u64),
    /// A repeat entry; the encoder always puts a hypercall after it (see `expand`).
    Repeat(u32),
}

/// The ops as entries: a `Repeat` is followed by a forced call made of its count.
fn expand(ops: &[Op]) -> Vec<Op> {
    ops.iter()
        .flat_map(|op| match op {
            Op::Repeat(n) => vec![
                op.clone(),
                Op::Call(0x5c, n.to_le_bytes().to_vec(), 0, true),
            ],
            other => vec![other.clone()],
        })
        .collect()
}

fn op() -> impl Strategy<Value = Op> {
    let width = prop::sample::select(vec![1u32, 2, 4, 8]);
    prop_oneof![
        (
            any::<u64>().prop_map(|c| c & !(1 << 16)),
            prop::collection::vec(any::<u8>(), 0..64),
            0u32..4096,
            any::<bool>()
        )
            .prop_map(|(c, i, o, f)| Op::Call(c, i, o, f)),
        (any::<u64>(), width.clone()).prop_map(|(g, w)| Op::Read(g, w)),
        (any::<u64>(), width, any::<u64>()).prop_map(|(g, w, v)| Op::Write(g, w, v)),
        any::<u64>().prop_map(Op::Exec),
        (1..=MAX_REPEAT).prop_map(Op::Repeat),
    ]
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        (any::<u8>(), any::<u64>(), any::<u64>()).prop_map(|(vector, code, cr2)| Fault::X86 {
            vector,
            code,
            cr2
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(esr, far)| Fault::Arm64 { esr, far }),
    ]
}

proptest! {
    #[test]
    fn encoded_tables_parse_back(ops in prop::collection::vec(op(), 0..20)) {
        let ops = expand(&ops);
        let mut t = Table::new();
        for op in &ops {
            t = match op.clone() {
                Op::Call(c, i, o, false) => t.hypercall(c, &i, o),
                Op::Call(c, i, o, true) => t.forced_hypercall(c, &i, o),
                Op::Read(g, w) => t.read(g, w),
                Op::Write(g, w, v) => t.write(g, w, v),
                Op::Exec(g) => t.exec(g),
                Op::Repeat(n) => t.repeat(n),
            };
        }
        let bytes = t.to_bytes();
        for arch in Arch::ALL {
            let parsed = parse_table(&bytes, arch).expect("an encoded table is valid");
            let entries: Vec<Entry<'_>> = parsed.entries().map(Result::unwrap).collect();
            prop_assert_eq!(entries.len(), ops.len());
            for (e, op) in entries.iter().zip(&ops) {
                let same = match (*e, op) {
                    (Entry::Hypercall { control, input, output_len, force, gpas: None, .. },
                     Op::Call(c, i, o, f)) => {
                        control == *c && input == &i[..] && output_len == *o as usize && force == *f
                    }
                    (Entry::Read { gpa, width, .. }, Op::Read(g, w)) => gpa == *g && u32::from(width) == *w,
                    (Entry::Write { gpa, width, value, .. }, Op::Write(g, w, v)) => {
                        gpa == *g && u32::from(width) == *w && value == *v
                    }
                    (Entry::Exec { gpa, .. }, Op::Exec(g)) => gpa == *g,
                    (Entry::Repeat { count }, Op::Repeat(n)) => count == *n,
                    _ => false,
                };
                prop_assert!(same, "{:?} vs {:?}", e, op);
            }
        }
    }

    #[test]
    fn arbitrary_tables_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..512),
                                    magic in any::<bool>()) {
        if magic && bytes.len() >= 16 {
            bytes[..8].copy_from_slice(&[b'V', b'T', b'L', b'0', 1, 0, 16, 0]);
            let len = bytes.len() as u32;
            bytes[12..16].copy_from_slice(&len.to_le_bytes());
        }
        for arch in Arch::ALL {
            if let Ok(t) = parse_table(&bytes, arch) {
                prop_assert!(t.entries().all(|e| e.is_ok()));
            }
        }
    }

    #[test]
    fn repeat_lines_parse_back(index in any::<u32>(), count in any::<u32>(), a in any::<u32>(),
                               b in any::<u32>(), c in any::<u32>(), first in any::<u64>(),
                               last in any::<u64>(), ticks in any::<u64>(), hz in any::<u64>()) {
        // What the kernel can print: calls <= count, each tally <= calls.
        let calls = a % count.saturating_add(1);
        let stats = RepeatStats {
            count,
            calls,
            first,
            last,
            differed: b % calls.saturating_add(1),
            canaries_bad: c % calls.saturating_add(1),
            ticks,
            hz,
        };
        let text = format!("{LINE_PREFIX}{}", Numbered(index, EntryLine::Repeat(stats)));
        prop_assert_eq!(
            parse_line(&text).unwrap(),
            Some(Line::Entry { index, record: Record::Repeat(stats) })
        );
    }

    #[test]
    fn arbitrary_lines_never_panic(s in "vtl0: [ -~]{0,80}") {
        let _ = parse_line(&s);
    }

    #[test]
    fn result_lines_parse_back(index in any::<u32>(), gpa in any::<u64>(), value in any::<u64>(),
                               f in fault(), out in prop::collection::vec(any::<u8>(), 0..32),
                               ok in any::<bool>()) {
        let cases = [
            (EntryLine::Read { gpa, width: 8, outcome: if ok { Ok(value) } else { Err(f) } },
             Record::Read { gpa, width: 8, outcome: if ok { Ok(value) } else { Err(f) } }),
            (EntryLine::Write { gpa, width: 1, value, outcome: if ok { Ok(()) } else { Err(f) } },
             Record::Write { gpa, width: 1, value, outcome: if ok { Ok(()) } else { Err(f) } }),
            (EntryLine::Exec { gpa, outcome: if ok { Ok(()) } else { Err(f) } },
             Record::Exec { gpa, outcome: if ok { Ok(()) } else { Err(f) } }),
            (EntryLine::Hypercall { control: gpa, result: value, out: &out,
                                    bad_canaries: if ok { &[] } else { &["x18", "x30"] } },
             Record::Hypercall { control: gpa, outcome: CallOutcome::Done {
                 result: value, out: out.clone(),
                 bad_canaries: if ok { vec![] } else { vec!["x18".into(), "x30".into()] } } }),
            (EntryLine::HypercallFault { control: gpa, fault: f },
             Record::Hypercall { control: gpa, outcome: CallOutcome::Fault(f) }),
        ];
        for (line, want) in cases {
            let text = format!("{LINE_PREFIX}{}", Numbered(index, line));
            prop_assert_eq!(parse_line(&text).unwrap(), Some(Line::Entry { index, record: want }));
        }
    }
}
