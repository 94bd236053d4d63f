//! The parser of the kernel's console lines into typed results, for host-side tests.

use crate::{Fault, FaultSite, RepeatStats, LINE_PREFIX};
use std::fmt;

/// A hypercall entry's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// No Hyper-V interface: not made.
    Skipped,
    /// Made: the result value (RAX / X0), the reported output bytes, and the registers whose
    /// canaries did not survive (empty: all did).
    Done {
        result: u64,
        out: Vec<u8>,
        bad_canaries: Vec<String>,
    },
    Fault(Fault),
}

/// One entry's result line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Hypercall {
        control: u64,
        outcome: CallOutcome,
    },
    Read {
        gpa: u64,
        width: u8,
        outcome: Result<u64, Fault>,
    },
    Write {
        gpa: u64,
        width: u8,
        value: u64,
        outcome: Result<(), Fault>,
    },
    Exec {
        gpa: u64,
        outcome: Result<(), Fault>,
    },
    /// A repeat entry's summary of the calls of the entry after it (whose own record is the
    /// last call's).
    Repeat(RepeatStats),
    /// An IDT entry's line, printed before it loads the IDT (x86_64).
    Idt {
        base: u64,
        limit: u16,
    },
    /// A place entry: `len` bytes stored at `gpa` (or the fault of the store that failed).
    Place {
        gpa: u64,
        len: usize,
        outcome: Result<(), Fault>,
    },
}

/// One `vtl0: ` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    Entry {
        index: u32,
        record: Record,
    },
    /// `vtl0: i fault-site ip=0x.. result=0x..` (see [`FaultSite`]).
    FaultSite {
        index: u32,
        site: FaultSite,
    },
    Done {
        count: u32,
    },
    /// `vtl0: no Hyper-V interface (reason)`.
    NoHyperV {
        reason: String,
    },
    /// `vtl0: Hyper-V interface guest_os_id=0x..`: set up, with this guest OS id registered.
    HyperV {
        guest_os_id: u64,
    },
    /// `vtl0: entry name=0x.. ...`: the registers at the kernel's entry point, in line order.
    EntryRegisters {
        registers: Vec<(String, u64)>,
    },
    /// `vtl0: bad table: reason`.
    BadTable {
        reason: String,
    },
    /// `vtl0: unexpected exception ...`: the rest of the line.
    Unexpected {
        text: String,
    },
    /// `vtl0: started vp N`: VP 0 started VP N's VTL0.
    Started {
        vp: u32,
    },
    /// `vtl0: vp N: <line>`: a line VP N (not 0) printed.
    OnVp {
        vp: u32,
        line: Box<Line>,
    },
    /// Any other `vtl0: ` line (start banner, interface setup): the text after the prefix.
    Info {
        text: String,
    },
}

/// A line that starts with `vtl0: ` but does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: String,
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot parse {:?}: {}", self.line, self.reason)
    }
}

impl std::error::Error for ParseError {}

fn hex(s: &str) -> Result<u64, String> {
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| format!("{s:?} is not 0x-hex"))?;
    u64::from_str_radix(digits, 16).map_err(|e| format!("{s:?}: {e}"))
}

fn field<'a>(token: Option<&'a str>, key: &str) -> Result<&'a str, String> {
    let token = token.ok_or_else(|| format!("missing {key}="))?;
    token
        .strip_prefix(key)
        .and_then(|t| t.strip_prefix('='))
        .ok_or_else(|| format!("expected {key}=, found {token:?}"))
}

fn hex_field<'a>(tokens: &mut impl Iterator<Item = &'a str>, key: &str) -> Result<u64, String> {
    hex(field(tokens.next(), key)?)
}

fn dec_field<'a>(tokens: &mut impl Iterator<Item = &'a str>, key: &str) -> Result<u64, String> {
    let v = field(tokens.next(), key)?;
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{key}={v:?} is not decimal"));
    }
    v.parse().map_err(|e| format!("{key}={v:?}: {e}"))
}

fn width_field<'a>(tokens: &mut impl Iterator<Item = &'a str>) -> Result<u8, String> {
    match field(tokens.next(), "width")? {
        "1" => Ok(1),
        "2" => Ok(2),
        "4" => Ok(4),
        "8" => Ok(8),
        w => Err(format!("bad width {w:?}")),
    }
}

fn bytes(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return Err(format!("odd or non-ASCII hex {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("out={s:?}: {e}")))
        .collect()
}

/// The tokens after `fault`.
fn fault<'a>(tokens: &mut impl Iterator<Item = &'a str>) -> Result<Fault, String> {
    let first = tokens.next().ok_or("fault without fields")?;
    let f = if first.starts_with("vector=") {
        let vector = hex(field(Some(first), "vector")?)?;
        let vector = u8::try_from(vector).map_err(|_| format!("vector {vector:#x}"))?;
        Fault::X86 {
            vector,
            code: hex_field(tokens, "code")?,
            cr2: hex_field(tokens, "cr2")?,
        }
    } else {
        Fault::Arm64 {
            esr: hex(field(Some(first), "esr")?)?,
            far: hex_field(tokens, "far")?,
        }
    };
    Ok(f)
}

/// `ok`/`returned`-style word or `fault ...`.
fn unit_or_fault<'a>(
    tokens: &mut impl Iterator<Item = &'a str>,
    word: &str,
) -> Result<Result<(), Fault>, String> {
    match tokens.next() {
        Some(w) if w == word => Ok(Ok(())),
        Some("fault") => Ok(Err(fault(tokens)?)),
        other => Err(format!("expected {word} or fault, found {other:?}")),
    }
}

fn record<'a>(kind: &str, tokens: &mut impl Iterator<Item = &'a str>) -> Result<Record, String> {
    let r = match kind {
        "hypercall" => {
            let control = hex_field(tokens, "control")?;
            let outcome = match tokens.next() {
                Some("skipped") => CallOutcome::Skipped,
                Some("fault") => CallOutcome::Fault(fault(tokens)?),
                Some(t) => {
                    let result = hex(field(Some(t), "result")?)?;
                    let out = bytes(field(tokens.next(), "out")?)?;
                    let bad_canaries = match field(tokens.next(), "canaries")? {
                        "ok" => Vec::new(),
                        c => {
                            let list = c
                                .strip_prefix("bad:")
                                .ok_or_else(|| format!("canaries={c:?}"))?;
                            if list.is_empty() || list.split(',').any(str::is_empty) {
                                return Err(format!("canaries={c:?}"));
                            }
                            list.split(',').map(String::from).collect()
                        }
                    };
                    CallOutcome::Done {
                        result,
                        out,
                        bad_canaries,
                    }
                }
                None => return Err("hypercall without outcome".into()),
            };
            Record::Hypercall { control, outcome }
        }
        "read" => {
            let gpa = hex_field(tokens, "gpa")?;
            let width = width_field(tokens)?;
            let outcome = match tokens.next() {
                Some("fault") => Err(fault(tokens)?),
                t => Ok(hex(field(t, "value")?)?),
            };
            Record::Read {
                gpa,
                width,
                outcome,
            }
        }
        "write" => Record::Write {
            gpa: hex_field(tokens, "gpa")?,
            width: width_field(tokens)?,
            value: hex_field(tokens, "value")?,
            outcome: unit_or_fault(tokens, "ok")?,
        },
        "exec" => Record::Exec {
            gpa: hex_field(tokens, "gpa")?,
            outcome: unit_or_fault(tokens, "returned")?,
        },
        "place" => Record::Place {
            gpa: hex_field(tokens, "gpa")?,
            len: dec_field(tokens, "len")? as usize,
            outcome: unit_or_fault(tokens, "ok")?,
        },
        "repeat" => {
            let dec = dec_field;
            let u32_of = |v: u64, key: &str| u32::try_from(v).map_err(|_| format!("{key}={v}"));
            let count = u32_of(dec(tokens, "count")?, "count")?;
            let calls = u32_of(dec(tokens, "calls")?, "calls")?;
            let first = hex_field(tokens, "first")?;
            let last = hex_field(tokens, "last")?;
            let differed = u32_of(dec(tokens, "differed")?, "differed")?;
            let canaries_bad = u32_of(dec(tokens, "canaries_bad")?, "canaries_bad")?;
            let ticks = dec(tokens, "ticks")?;
            let hz = dec(tokens, "hz")?;
            if calls > count || differed > calls || canaries_bad > calls {
                return Err(format!(
                    "calls={calls} of count={count}, differed={differed}, canaries_bad={canaries_bad}"
                ));
            }
            Record::Repeat(RepeatStats {
                count,
                calls,
                first,
                last,
                differed,
                canaries_bad,
                ticks,
                hz,
            })
        }
        "idt" => {
            let base = hex_field(tokens, "base")?;
            let limit = hex_field(tokens, "limit")?;
            let limit = u16::try_from(limit).map_err(|_| format!("limit={limit:#x}"))?;
            if (tokens.next(), tokens.next()) != (Some("raising"), Some("#UD")) {
                return Err("idt line without `raising #UD`".into());
            }
            Record::Idt { base, limit }
        }
        other => return Err(format!("unknown entry kind {other:?}")),
    };
    if let Some(extra) = tokens.next() {
        return Err(format!("trailing {extra:?}"));
    }
    Ok(r)
}

/// A VP index as the kernel prints it: decimal, below [`crate::MAX_VPS`].
fn vp_index(s: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("vp {s:?} is not decimal"));
    }
    s.parse()
        .ok()
        .filter(|&vp| vp < crate::MAX_VPS)
        .ok_or_else(|| format!("vp {s:?} is not below {}", crate::MAX_VPS))
}

fn parse_body(text: &str) -> Result<Line, String> {
    if let Some(rest) = text.strip_prefix("vp ") {
        let (vp, line) = rest.split_once(": ").ok_or("vp N without `: `")?;
        let vp = vp_index(vp)?;
        if vp == 0 {
            return Err("VP 0's lines carry no vp".into());
        }
        let line = parse_body(line)?;
        if matches!(line, Line::OnVp { .. }) {
            return Err("a vp inside a vp line".into());
        }
        return Ok(Line::OnVp {
            vp,
            line: Box::new(line),
        });
    }
    if let Some(vp) = text.strip_prefix("started vp ") {
        return Ok(Line::Started { vp: vp_index(vp)? });
    }
    if let Some(rest) = text.strip_prefix("no Hyper-V interface") {
        let reason = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or("no Hyper-V interface without (reason)")?;
        return Ok(Line::NoHyperV {
            reason: reason.into(),
        });
    }
    if let Some(id) = text.strip_prefix("Hyper-V interface guest_os_id=") {
        return Ok(Line::HyperV {
            guest_os_id: hex(id)?,
        });
    }
    if let Some(rest) = text.strip_prefix("entry ") {
        let registers = rest
            .split(' ')
            .map(|token| {
                let (name, value) = token
                    .split_once('=')
                    .ok_or_else(|| format!("entry register {token:?} without ="))?;
                if name.is_empty() {
                    return Err(format!("entry register {token:?} without a name"));
                }
                Ok((name.to_string(), hex(value)?))
            })
            .collect::<Result<Vec<_>, String>>()?;
        return Ok(Line::EntryRegisters { registers });
    }
    if let Some(reason) = text.strip_prefix("bad table: ") {
        return Ok(Line::BadTable {
            reason: reason.into(),
        });
    }
    if let Some(rest) = text.strip_prefix("unexpected exception") {
        return Ok(Line::Unexpected {
            text: rest.trim().into(),
        });
    }
    if let Some(rest) = text.strip_prefix("done ") {
        let count = rest
            .strip_suffix(" entries")
            .and_then(|n| n.parse().ok())
            .ok_or("done line without a count")?;
        return Ok(Line::Done { count });
    }
    let mut tokens = text.split(' ');
    let first = tokens.next().unwrap_or_default();
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Line::Info { text: text.into() });
    }
    let index = first.parse().map_err(|e| format!("index {first:?}: {e}"))?;
    let kind = tokens.next().ok_or("entry without a kind")?;
    if kind == "fault-site" {
        let site = FaultSite {
            ip: hex_field(&mut tokens, "ip")?,
            result: hex_field(&mut tokens, "result")?,
        };
        if let Some(extra) = tokens.next() {
            return Err(format!("trailing {extra:?}"));
        }
        return Ok(Line::FaultSite { index, site });
    }
    Ok(Line::Entry {
        index,
        record: record(kind, &mut tokens)?,
    })
}

/// Parses one console line: `Ok(None)` for a line that is not the kernel's (no `vtl0: `
/// prefix), an error for a `vtl0: ` line that does not parse.
pub fn parse_line(line: &str) -> Result<Option<Line>, ParseError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let Some(text) = line.strip_prefix(LINE_PREFIX) else {
        return Ok(None);
    };
    parse_body(text).map(Some).map_err(|reason| ParseError {
        line: line.into(),
        reason,
    })
}

/// Everything a run printed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Results {
    /// Entry records in console order, each with its index.
    pub entries: Vec<(u32, Record)>,
    /// The VP that printed each of `entries` (same order).
    pub vps: Vec<u32>,
    /// The VPs VP 0 started (`started vp N`), in order.
    pub started: Vec<u32>,
    /// The count of the `done` line, if the run got there.
    pub done: Option<u32>,
    pub no_hyperv: Option<String>,
    /// The guest OS id of the `Hyper-V interface` line.
    pub hyperv: Option<u64>,
    pub bad_table: Option<String>,
    pub unexpected: Option<String>,
    /// The `entry` line's registers, in its order (empty without one).
    pub entry_registers: Vec<(String, u64)>,
    /// The `fault-site` lines, each with its entry's index.
    pub fault_sites: Vec<(u32, FaultSite)>,
}

impl Results {
    /// The records alone, checking that their indices run 0, 1, 2, ...
    pub fn records(&self) -> Result<Vec<Record>, String> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, (index, r))| {
                if *index as usize == i {
                    Ok(r.clone())
                } else {
                    Err(format!("entry {i} printed as {index}"))
                }
            })
            .collect()
    }

    /// The records by entry index, each with the VP that printed it, checking that every
    /// index 0, 1, 2, ... was printed exactly once (VPs print theirs in any interleaving).
    pub fn by_index(&self) -> Result<Vec<(u32, Record)>, String> {
        let mut slots: Vec<Option<(u32, Record)>> = vec![None; self.entries.len()];
        for ((index, record), &vp) in self.entries.iter().zip(&self.vps) {
            let slot = slots
                .get_mut(*index as usize)
                .ok_or_else(|| format!("entry {index} of {} printed", self.entries.len()))?;
            if slot.replace((vp, record.clone())).is_some() {
                return Err(format!("entry {index} printed twice"));
            }
        }
        Ok(slots.into_iter().flatten().collect())
    }
}

/// Parses a whole console capture (other lines, e.g. firmware's, are ignored).
pub fn parse_results(console: &str) -> Result<Results, ParseError> {
    let mut results = Results::default();
    for line in console.lines() {
        let (vp, line) = match parse_line(line)? {
            Some(Line::OnVp { vp, line }) => (vp, Some(*line)),
            line => (0, line),
        };
        match line {
            None | Some(Line::Info { .. }) | Some(Line::OnVp { .. }) => {}
            Some(Line::Started { vp }) => results.started.push(vp),
            Some(Line::Entry { index, record }) => {
                results.entries.push((index, record));
                results.vps.push(vp);
            }
            Some(Line::FaultSite { index, site }) => results.fault_sites.push((index, site)),
            Some(Line::Done { count }) => results.done = Some(count),
            Some(Line::NoHyperV { reason }) => results.no_hyperv = Some(reason),
            Some(Line::HyperV { guest_os_id }) => results.hyperv = Some(guest_os_id),
            Some(Line::BadTable { reason }) => results.bad_table = Some(reason),
            Some(Line::Unexpected { text }) => results.unexpected = Some(text),
            Some(Line::EntryRegisters { registers }) => results.entry_registers = registers,
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EntryLine, Numbered};

    fn line(n: u32, e: EntryLine<'_>) -> String {
        format!("{LINE_PREFIX}{}", Numbered(n, e))
    }

    fn parsed(s: &str) -> Record {
        match parse_line(s).unwrap().unwrap() {
            Line::Entry { record, .. } => record,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn round_trip_every_line_kind() {
        let pf = Fault::X86 {
            vector: 0xe,
            code: 0x2,
            cr2: 0x1_0000_0000,
        };
        let da = Fault::Arm64 {
            esr: 0x9600_0005,
            far: 0x8000_0000,
        };
        let cases: Vec<(EntryLine<'_>, Record)> = vec![
            (
                EntryLine::HypercallSkipped { control: 0x10008 },
                Record::Hypercall {
                    control: 0x10008,
                    outcome: CallOutcome::Skipped,
                },
            ),
            (
                EntryLine::Hypercall {
                    control: 0x2,
                    result: 0x1_0000,
                    out: &[0, 0xab, 0x10],
                    bad_canaries: &[],
                },
                Record::Hypercall {
                    control: 0x2,
                    outcome: CallOutcome::Done {
                        result: 0x1_0000,
                        out: vec![0, 0xab, 0x10],
                        bad_canaries: vec![],
                    },
                },
            ),
            (
                EntryLine::Hypercall {
                    control: 0x2,
                    result: 0,
                    out: &[],
                    bad_canaries: &["rbx", "xmm7"],
                },
                Record::Hypercall {
                    control: 0x2,
                    outcome: CallOutcome::Done {
                        result: 0,
                        out: vec![],
                        bad_canaries: vec!["rbx".into(), "xmm7".into()],
                    },
                },
            ),
            (
                EntryLine::HypercallFault {
                    control: 0x2,
                    fault: Fault::X86 {
                        vector: 6,
                        code: 0,
                        cr2: 0,
                    },
                },
                Record::Hypercall {
                    control: 0x2,
                    outcome: CallOutcome::Fault(Fault::X86 {
                        vector: 6,
                        code: 0,
                        cr2: 0,
                    }),
                },
            ),
            (
                EntryLine::Read {
                    gpa: 0x4200,
                    width: 8,
                    outcome: Ok(u64::MAX),
                },
                Record::Read {
                    gpa: 0x4200,
                    width: 8,
                    outcome: Ok(u64::MAX),
                },
            ),
            (
                EntryLine::Read {
                    gpa: 0x8000_0000,
                    width: 1,
                    outcome: Err(da),
                },
                Record::Read {
                    gpa: 0x8000_0000,
                    width: 1,
                    outcome: Err(da),
                },
            ),
            (
                EntryLine::Write {
                    gpa: 0x10,
                    width: 2,
                    value: 0xbeef,
                    outcome: Ok(()),
                },
                Record::Write {
                    gpa: 0x10,
                    width: 2,
                    value: 0xbeef,
                    outcome: Ok(()),
                },
            ),
            (
                EntryLine::Write {
                    gpa: 0x1_0000_0000,
                    width: 4,
                    value: 1,
                    outcome: Err(pf),
                },
                Record::Write {
                    gpa: 0x1_0000_0000,
                    width: 4,
                    value: 1,
                    outcome: Err(pf),
                },
            ),
            (
                EntryLine::Exec {
                    gpa: 0x3000,
                    outcome: Ok(()),
                },
                Record::Exec {
                    gpa: 0x3000,
                    outcome: Ok(()),
                },
            ),
            (
                EntryLine::Exec {
                    gpa: 0x3000,
                    outcome: Err(pf),
                },
                Record::Exec {
                    gpa: 0x3000,
                    outcome: Err(pf),
                },
            ),
            (
                EntryLine::Repeat(RepeatStats {
                    count: 10_000_000,
                    calls: 9_999_999,
                    first: 0x5,
                    last: u64::MAX,
                    differed: 3,
                    canaries_bad: 2,
                    ticks: u64::MAX,
                    hz: 62_500_000,
                }),
                Record::Repeat(RepeatStats {
                    count: 10_000_000,
                    calls: 9_999_999,
                    first: 0x5,
                    last: u64::MAX,
                    differed: 3,
                    canaries_bad: 2,
                    ticks: u64::MAX,
                    hz: 62_500_000,
                }),
            ),
        ];
        for (i, (out, want)) in cases.into_iter().enumerate() {
            let text = line(i as u32, out);
            assert_eq!(
                parse_line(&text).unwrap(),
                Some(Line::Entry {
                    index: i as u32,
                    record: want
                }),
                "{text}"
            );
        }
    }

    #[test]
    fn place_lines() {
        assert_eq!(
            parsed("vtl0: 0 place gpa=0x100000000 len=48 ok"),
            Record::Place {
                gpa: 0x1_0000_0000,
                len: 48,
                outcome: Ok(())
            }
        );
        assert_eq!(
            parsed("vtl0: 2 place gpa=0x1000 len=1 fault esr=0x96000047 far=0xc0000000"),
            Record::Place {
                gpa: 0x1000,
                len: 1,
                outcome: Err(Fault::Arm64 {
                    esr: 0x9600_0047,
                    far: 0xc000_0000
                })
            }
        );
        let line = EntryLine::Place {
            gpa: 0x1_c02f_f000,
            len: 4096,
            outcome: Ok(()),
        };
        assert_eq!(
            format!("{}", Numbered(7, line)),
            "7 place gpa=0x1c02ff000 len=4096 ok"
        );
        assert!(parse_line("vtl0: 0 place gpa=0x1000 len=x ok").is_err());
    }

    #[test]
    fn the_documented_examples() {
        assert_eq!(
            parsed("vtl0: 3 hypercall control=0x10008 result=0x0 out=0102 canaries=ok"),
            Record::Hypercall {
                control: 0x10008,
                outcome: CallOutcome::Done {
                    result: 0,
                    out: vec![1, 2],
                    bad_canaries: vec![]
                }
            }
        );
        assert_eq!(
            parsed("vtl0: 4 write gpa=0x5 width=1 value=0x0 fault vector=0xd code=0x0 cr2=0x0\r"),
            Record::Write {
                gpa: 5,
                width: 1,
                value: 0,
                outcome: Err(Fault::X86 {
                    vector: 0xd,
                    code: 0,
                    cr2: 0
                })
            }
        );
    }

    #[test]
    fn other_lines() {
        assert_eq!(parse_line("paravisor: hello").unwrap(), None);
        assert_eq!(
            parse_line("vtl0: done 12 entries").unwrap(),
            Some(Line::Done { count: 12 })
        );
        assert_eq!(
            parse_line("vtl0: no Hyper-V interface (cpuid vendor \"TCGTCGTCGTCG\")").unwrap(),
            Some(Line::NoHyperV {
                reason: "cpuid vendor \"TCGTCGTCGTCG\"".into()
            })
        );
        assert_eq!(
            parse_line("vtl0: bad table: magic 0x0").unwrap(),
            Some(Line::BadTable {
                reason: "magic 0x0".into()
            })
        );
        assert_eq!(
            parse_line("vtl0: Hyper-V interface guest_os_id=0x8000000000010000").unwrap(),
            Some(Line::HyperV {
                guest_os_id: crate::GUEST_OS_ID
            })
        );
        assert!(parse_line("vtl0: Hyper-V interface guest_os_id=12").is_err());
        assert!(matches!(
            parse_line("vtl0: start arch=x86_64").unwrap(),
            Some(Line::Info { .. })
        ));
    }

    #[test]
    fn the_documented_repeat_line() {
        let stats = RepeatStats {
            count: 20000,
            calls: 20000,
            first: 0x1c,
            last: 0x1c,
            differed: 0,
            canaries_bad: 0,
            ticks: 125_000_000,
            hz: 62_500_000,
        };
        assert_eq!(
            parsed(
                "vtl0: 0 repeat count=20000 calls=20000 first=0x1c last=0x1c differed=0 \
                 canaries_bad=0 ticks=125000000 hz=62500000"
            ),
            Record::Repeat(stats)
        );
        assert_eq!(stats.calls_per_second(), Some(10_000.0));
        let unknown = RepeatStats { hz: 0, ..stats };
        assert_eq!(unknown.calls_per_second(), None);
    }

    #[test]
    fn malformed_lines() {
        for bad in [
            "vtl0: 1 hypercall",
            "vtl0: 1 hypercall control=12 skipped",
            "vtl0: 1 hypercall control=0x1 result=0x0 out=abc canaries=ok",
            "vtl0: 1 hypercall control=0x1 result=0x0 out=zz canaries=ok",
            "vtl0: 1 hypercall control=0x1 result=0x0 out= canaries=bad:",
            "vtl0: 1 hypercall control=0x1 result=0x0 out= canaries=bad:rbx,,rcx",
            "vtl0: 1 hypercall control=0x1 result=0x0 out= canaries=maybe",
            "vtl0: 1 hypercall control=0x1 result=0x0 out=",
            "vtl0: 1 read gpa=0x0 width=3 value=0x0",
            "vtl0: 1 read gpa=0x0 width=4",
            "vtl0: 1 read gpa=0x0 width=4 value=0x0 extra",
            "vtl0: 1 read gpa=0x0 width=4 fault vector=0x100 code=0x0 cr2=0x0",
            "vtl0: 1 read gpa=0x0 width=4 fault esr=0x1",
            "vtl0: 1 read gpa=0x0 width=4 fault",
            "vtl0: 1 write gpa=0x0 width=4 value=0x1 maybe",
            "vtl0: 1 exec gpa=0x0",
            "vtl0: 1 jump gpa=0x0",
            "vtl0: 99999999999 read gpa=0x0 width=4 value=0x0",
            "vtl0: 1 read gpa=0x10000000000000000 width=4 value=0x0",
            "vtl0: done many entries",
            "vtl0: no Hyper-V interface",
            "vtl0: 0 repeat count=2 calls=2 first=0x0 last=0x0 differed=0 canaries_bad=0 ticks=1",
            "vtl0: 0 repeat count=2 calls=3 first=0x0 last=0x0 differed=0 canaries_bad=0 ticks=1 hz=0",
            "vtl0: 0 repeat count=2 calls=2 first=0x0 last=0x0 differed=3 canaries_bad=0 ticks=1 hz=0",
            "vtl0: 0 repeat count=2 calls=2 first=0x0 last=0x0 differed=0 canaries_bad=3 ticks=1 hz=0",
            "vtl0: 0 repeat count=0x2 calls=2 first=0x0 last=0x0 differed=0 canaries_bad=0 ticks=1 hz=0",
            "vtl0: 0 repeat count=2 calls=+2 first=0x0 last=0x0 differed=0 canaries_bad=0 ticks=1 hz=0",
            "vtl0: 0 repeat count=5000000000 calls=2 first=0x0 last=0x0 differed=0 canaries_bad=0 ticks=1 hz=0",
            "vtl0: 0 repeat count=2 calls=2 first=0 last=0x0 differed=0 canaries_bad=0 ticks=1 hz=0",
            "vtl0: 0 repeat count=2 calls=2 first=0x0 last=0x0 differed=0 canaries_bad=0 ticks=1 hz=0 x",
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
    }

    /// The fault-site line: what the kernel prints (`FaultSite`'s Display) parses back, goes to
    /// `Results::fault_sites` (not `entries`), and a malformed one is an error.
    #[test]
    fn the_fault_site_line() {
        let site = FaultSite {
            ip: 0x4800_1234,
            result: 0xc600_0002,
        };
        let text = format!("{LINE_PREFIX}3 {site}");
        assert_eq!(text, "vtl0: 3 fault-site ip=0x48001234 result=0xc6000002");
        assert_eq!(
            parse_line(&text).unwrap(),
            Some(Line::FaultSite { index: 3, site })
        );
        let console = "vtl0: 0 hypercall control=0x5c fault esr=0x2000000 far=0x0\n\
                       vtl0: 0 fault-site ip=0x48001234 result=0xc6000002\n";
        let r = parse_results(console).unwrap();
        assert_eq!(r.records().unwrap().len(), 1);
        assert_eq!(r.fault_sites, [(0, site)]);
        for bad in [
            "vtl0: 0 fault-site",
            "vtl0: 0 fault-site ip=0x1",
            "vtl0: 0 fault-site ip=1 result=0x0",
            "vtl0: 0 fault-site result=0x0 ip=0x1",
            "vtl0: 0 fault-site ip=0x1 result=0x0 more",
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn whole_console() {
        let console = "junk\nvtl0: start\nvtl0: no Hyper-V interface (x)\n\
                       vtl0: 0 read gpa=0x1 width=1 value=0x2\n\
                       vtl0: 1 exec gpa=0x1 returned\nvtl0: done 2 entries\n";
        let r = parse_results(console).unwrap();
        assert_eq!(r.done, Some(2));
        assert_eq!(r.no_hyperv.as_deref(), Some("x"));
        assert_eq!(r.records().unwrap().len(), 2);
        let r = parse_results("vtl0: 1 exec gpa=0x1 returned\n").unwrap();
        assert!(r.records().is_err(), "index 1 first");
        assert!(parse_results("vtl0: 0 exec\n").is_err());
    }

    /// A VP other than 0 prefixes its lines with `vp N: `; the records keep console order and
    /// say which VP printed each, and `by_index` puts them in table order, each index once.
    #[test]
    fn lines_of_other_vps() {
        let console = "vtl0: start\nvtl0: started vp 1\nvtl0: started vp 3\n\
                       vtl0: vp 3: up\n\
                       vtl0: vp 3: 1 exec gpa=0x1 returned\n\
                       vtl0: 0 read gpa=0x1 width=1 value=0x2\n\
                       vtl0: vp 1: 2 write gpa=0x8 width=8 value=0x3 ok\n\
                       vtl0: done 3 entries\n";
        let r = parse_results(console).unwrap();
        assert_eq!(r.started, vec![1, 3]);
        assert_eq!(r.vps, vec![3, 0, 1]);
        assert_eq!(r.done, Some(3));
        assert!(r.records().is_err(), "console order is not table order");
        let by_index = r.by_index().unwrap();
        let vps: Vec<u32> = by_index.iter().map(|(vp, _)| *vp).collect();
        assert_eq!(vps, vec![0, 3, 1]);
        assert_eq!(
            by_index[1].1,
            Record::Exec {
                gpa: 1,
                outcome: Ok(())
            }
        );
        assert_eq!(
            parse_line("vtl0: vp 15: up").unwrap(),
            Some(Line::OnVp {
                vp: 15,
                line: Box::new(Line::Info { text: "up".into() })
            })
        );
        for bad in [
            "vtl0: vp 0: up",
            "vtl0: vp 16: up",
            "vtl0: vp x: up",
            "vtl0: vp 1 up",
            "vtl0: vp 1: vp 2: up",
            "vtl0: vp 1: 0 exec",
            "vtl0: started vp 16",
            "vtl0: started vp +1",
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
        let twice = "vtl0: 0 exec gpa=0x1 returned\nvtl0: vp 1: 0 exec gpa=0x1 returned\n";
        assert!(parse_results(twice).unwrap().by_index().is_err());
        let gap = "vtl0: 1 exec gpa=0x1 returned\n";
        assert!(parse_results(gap).unwrap().by_index().is_err());
    }

    /// The entry line as the kernel prints it (`EntryRegisters`) parses back to the same names
    /// and values, in order; the IDT entry's line likewise.
    #[test]
    fn the_entry_registers_and_idt_lines_round_trip() {
        for arch in crate::Arch::ALL {
            let values: Vec<u64> = (0..arch.entry_registers().len() as u64)
                .map(|i| i.wrapping_mul(0x0123_4567_89ab_cdef))
                .collect();
            let text = format!(
                "{LINE_PREFIX}{}",
                crate::EntryRegisters {
                    arch,
                    values: &values
                }
            );
            let want: Vec<(String, u64)> = arch
                .entry_registers()
                .iter()
                .map(|n| n.to_string())
                .zip(values.iter().copied())
                .collect();
            assert_eq!(
                parse_line(&text).unwrap(),
                Some(Line::EntryRegisters {
                    registers: want.clone()
                }),
                "{text}"
            );
            assert_eq!(parse_results(&text).unwrap().entry_registers, want);
        }
        let text = line(
            2,
            EntryLine::Idt {
                base: 0x80_1000,
                limit: 0xfff,
            },
        );
        assert_eq!(text, "vtl0: 2 idt base=0x801000 limit=0xfff raising #UD");
        assert_eq!(
            parsed(&text),
            Record::Idt {
                base: 0x80_1000,
                limit: 0xfff
            }
        );
        for bad in [
            "vtl0: entry eax",
            "vtl0: entry =0x1",
            "vtl0: entry eax=1",
            "vtl0: 2 idt base=0x0 limit=0x10000 raising #UD",
            "vtl0: 2 idt base=0x0 limit=0x0",
            "vtl0: 2 idt base=0x0 limit=0x0 raising #GP",
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
    }
}
