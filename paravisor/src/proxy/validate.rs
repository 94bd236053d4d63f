//! Validating a VTL0 hypercall's control word and parameter lists as the TLFS (and KVM, in the
//! same order) does, plus the paravisor's own rule that VTL0 may only name VTL0 memory.

use super::policy::Layout;
use super::{GuestRange, Request, Vtl0Memory};
use hvdef::{HvStatus, HV_PAGE_SIZE};

/// Checks `req` against the call's `layout`; the first rule broken gives the status.
///
/// Control word (TLFS "hypercall input value", KVM's order), all HV_STATUS_INVALID_HYPERCALL_INPUT:
/// reserved bits; the nested bit (VTL0 never chooses nesting: the paravisor's issue path adds it
/// per its nested table); a simple call with a rep count or start; a rep call with count 0 or
/// start >= count; a variable header on a call that takes none. Then an extended call with the
/// fast bit is HV_STATUS_INVALID_PARAMETER (the TLFS is silent; KVM and its selftests say so).
///
/// Fast calls: the input must fit the register block (INVALID_HYPERCALL_INPUT); no GPA rules.
///
/// Memory-based calls, for each non-empty list (GPAs of empty lists are ignored, per the TLFS):
/// GPA not 8-byte aligned, list crossing a page, or input overlapping output is
/// HV_STATUS_INVALID_ALIGNMENT (the TLFS's "must not overlap and must not cross a page boundary"
/// is one rule, and INVALID_ALIGNMENT is its status; the overlap half is never reached today, as
/// no call the table relays or answers has both lists, and the mock tolerates overlap by
/// default as real hosts do); a byte outside VTL0 memory is
/// HV_STATUS_ACCESS_DENIED, so the paravisor never reads or writes its own memory for VTL0.
///
/// A valid call's lists come back as the ranges the run loop copies through (none for a fast
/// call or an empty list): inside VTL0 memory by construction, so no copy checks again.
#[inline(always)]
pub fn validate(req: &Request<'_>, vtl0: &Vtl0Memory, layout: &Layout) -> Result<Lists, HvStatus> {
    let control = req.control;
    let code = control.code();
    let (count, start) = (control.rep_count(), control.rep_start());
    let reps_valid = if code.is_rep() {
        count != 0 && start < count
    } else {
        count == 0 && start == 0
    };
    if control.reserved_bits() != 0
        || control.nested()
        || !reps_valid
        || (control.variable_header_size() != 0 && !code.takes_variable_header())
    {
        return Err(HvStatus::INVALID_HYPERCALL_INPUT);
    }
    if code.is_extended() && control.fast() {
        return Err(HvStatus::INVALID_PARAMETER);
    }

    let input_len = layout.input_len(control) as u64;
    let output_len = layout.output_len(control) as u64;
    if control.fast() {
        let block_bytes = req.fast.len() as u64 * 8;
        return if input_len > block_bytes {
            Err(HvStatus::INVALID_HYPERCALL_INPUT)
        } else {
            Ok(Lists::default())
        };
    }

    let (input, output) = ((req.input_gpa, input_len), (req.output_gpa, output_len));
    let misaligned = |(gpa, len): (u64, u64)| {
        len != 0 && (gpa % 8 != 0 || gpa % HV_PAGE_SIZE + len > HV_PAGE_SIZE)
    };
    if misaligned(input) || misaligned(output) {
        return Err(HvStatus::INVALID_ALIGNMENT);
    }
    if input_len != 0 && output_len != 0 && overlap(input, output) {
        return Err(HvStatus::INVALID_ALIGNMENT);
    }
    let range = |(gpa, len): (u64, u64)| match len {
        0 => Ok(None),
        _ => vtl0
            .range(gpa, len)
            .map(Some)
            .ok_or(HvStatus::ACCESS_DENIED),
    };
    Ok(Lists {
        input: range(input)?,
        output: range(output)?,
    })
}

/// A validated memory-based call's input and output lists (`None`: empty, or a fast call).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lists {
    pub input: Option<GuestRange>,
    pub output: Option<GuestRange>,
}

/// Whether two non-empty ranges share a byte. In u128: a list may end exactly at 2^64.
fn overlap((a, a_len): (u64, u64), (b, b_len): (u64, u64)) -> bool {
    let (a, b) = (u128::from(a), u128::from(b));
    a < b + u128::from(b_len) && b < a + u128::from(a_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::Isa;
    use hvdef::{Control, HypercallCode};

    const PAGE: u64 = HV_PAGE_SIZE;
    /// VTL0 RAM: [0, 1 MiB) and [2 MiB, 4 MiB), with VTL2 at [1 MiB, 2 MiB).
    const VTL2: core::ops::Range<u64> = 0x10_0000..0x20_0000;

    fn vtl0() -> Vtl0Memory {
        Vtl0Memory::new(core::slice::from_ref(&(0..0x40_0000)), VTL2)
    }

    /// A simple call with a 64-byte input and a 16-byte output.
    const SIMPLE: Layout = Layout {
        fixed_input: 64,
        input_element: 0,
        output_fixed: 16,
        output_element: 0,
    };
    /// A rep call: 16-byte header, 8-byte input and output elements.
    const REP: Layout = Layout {
        fixed_input: 16,
        input_element: 8,
        output_fixed: 0,
        output_element: 8,
    };

    fn req(control: Control, input_gpa: u64, output_gpa: u64) -> Request<'static> {
        Request {
            isa: Isa::X64,
            control,
            control_register: crate::proxy::ControlRegister::Rcx,
            input_gpa,
            output_gpa,
            fast: &[0; 2],
            ip: 0,
            instruction_len: 3,
        }
    }

    fn simple() -> Control {
        Control::new().with_code(HypercallCode::POST_MESSAGE)
    }

    fn rep(count: u16, start: u16) -> Control {
        Control::new()
            .with_code(HypercallCode::GET_VP_REGISTERS)
            .with_rep_count(count)
            .with_rep_start(start)
    }

    /// The status, and for a valid call that its lists are exactly the ranges it names.
    fn check(control: Control, input: u64, output: u64, layout: &Layout) -> Result<(), HvStatus> {
        let lists = validate(&req(control, input, output), &vtl0(), layout)?;
        let named = |gpa, len: usize| (len != 0 && !control.fast()).then_some((gpa, len));
        let got = |list: Option<GuestRange>| list.map(|r| (r.gpa(), r.len()));
        assert_eq!(got(lists.input), named(input, layout.input_len(control)));
        assert_eq!(got(lists.output), named(output, layout.output_len(control)));
        Ok(())
    }

    const OK_IN: u64 = 0x1000;
    const OK_OUT: u64 = 0x2000;

    #[test]
    fn baseline_passes() {
        assert_eq!(check(simple(), OK_IN, OK_OUT, &SIMPLE), Ok(()));
        assert_eq!(check(rep(4, 3), OK_IN, OK_OUT, &REP), Ok(()));
    }

    #[test]
    fn every_reserved_bit_is_invalid_input() {
        for bit in 0..64 {
            let mask = 1u64 << bit;
            if Control::RESERVED_MASK & mask == 0 {
                continue;
            }
            let control = Control::from_bits(simple().into_bits() | mask);
            assert_eq!(
                check(control, OK_IN, OK_OUT, &SIMPLE),
                Err(HvStatus::INVALID_HYPERCALL_INPUT),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn nested_bit_from_vtl0_is_invalid_input() {
        for control in [simple(), rep(1, 0)] {
            assert_eq!(
                check(control.with_nested(true), OK_IN, OK_OUT, &SIMPLE),
                Err(HvStatus::INVALID_HYPERCALL_INPUT)
            );
        }
    }

    #[test]
    fn rep_fields_on_simple_call_are_invalid_input() {
        for (count, start) in [(1, 0), (0, 1), (0xFFF, 0xFFF)] {
            let control = simple().with_rep_count(count).with_rep_start(start);
            assert_eq!(
                check(control, OK_IN, OK_OUT, &SIMPLE),
                Err(HvStatus::INVALID_HYPERCALL_INPUT)
            );
        }
    }

    #[test]
    fn rep_call_count_and_start_rules() {
        for count in 0..=20u16 {
            for start in 0..=20u16 {
                let want = if count != 0 && start < count {
                    Ok(())
                } else {
                    Err(HvStatus::INVALID_HYPERCALL_INPUT)
                };
                assert_eq!(check(rep(count, start), OK_IN, OK_OUT, &REP), want);
            }
        }
    }

    #[test]
    fn variable_header_only_where_documented() {
        let control = simple().with_variable_header_size(1);
        assert_eq!(
            check(control, OK_IN, OK_OUT, &SIMPLE),
            Err(HvStatus::INVALID_HYPERCALL_INPUT)
        );
        let ex = Control::new()
            .with_code(HypercallCode::SEND_SYNTHETIC_CLUSTER_IPI_EX)
            .with_variable_header_size(2);
        assert_eq!(check(ex, OK_IN, OK_OUT, &SIMPLE), Ok(()));
    }

    #[test]
    fn extended_fast_is_invalid_parameter() {
        let control = Control::new()
            .with_code(HypercallCode::EXT_QUERY_CAPABILITIES)
            .with_fast(true);
        assert_eq!(
            check(control, 0, 0, &Layout::NONE),
            Err(HvStatus::INVALID_PARAMETER)
        );
        assert_eq!(check(control.with_fast(false), 0, 0, &Layout::NONE), Ok(()));
    }

    #[test]
    fn fast_input_must_fit_the_block() {
        let fast = simple().with_fast(true);
        let layout = |n| Layout {
            fixed_input: n,
            ..Layout::NONE
        };
        let mut r = req(fast, 0, 0);
        let block = [0; crate::proxy::FAST_WORDS_MAX];
        for (words, fits) in [(2, 16), (14, 112), (16, 128), (17, 136)] {
            r.fast = &block[..words];
            assert_eq!(validate(&r, &vtl0(), &layout(fits)), Ok(Lists::default()));
            assert_eq!(
                validate(&r, &vtl0(), &layout(fits + 1)),
                Err(HvStatus::INVALID_HYPERCALL_INPUT)
            );
        }
        // Fast calls impose no GPA rules (the GPAs are not GPAs).
        let r = req(fast, 0x10_0001, 0x10_0001);
        assert_eq!(validate(&r, &vtl0(), &layout(16)), Ok(Lists::default()));
    }

    #[test]
    fn misaligned_gpa_is_invalid_alignment() {
        for off in 1..8 {
            assert_eq!(
                check(simple(), OK_IN + off, OK_OUT, &SIMPLE),
                Err(HvStatus::INVALID_ALIGNMENT)
            );
            assert_eq!(
                check(simple(), OK_IN, OK_OUT + off, &SIMPLE),
                Err(HvStatus::INVALID_ALIGNMENT)
            );
        }
    }

    #[test]
    fn page_crossing_is_invalid_alignment() {
        // Ends exactly at the page end: fine. One element more: crosses.
        let end_in = OK_IN + PAGE - 64;
        assert_eq!(check(simple(), end_in, OK_OUT, &SIMPLE), Ok(()));
        assert_eq!(
            check(simple(), end_in + 8, OK_OUT, &SIMPLE),
            Err(HvStatus::INVALID_ALIGNMENT)
        );
        let end_out = OK_OUT + PAGE - 16;
        assert_eq!(check(simple(), OK_IN, end_out, &SIMPLE), Ok(()));
        assert_eq!(
            check(simple(), OK_IN, end_out + 8, &SIMPLE),
            Err(HvStatus::INVALID_ALIGNMENT)
        );
        // A rep list that fills a page exactly, and one that does not fit any page.
        assert_eq!(check(rep(510, 0), OK_IN, OK_OUT, &REP), Ok(()));
        assert_eq!(
            check(rep(511, 0), OK_IN, OK_OUT, &REP),
            Err(HvStatus::INVALID_ALIGNMENT)
        );
    }

    #[test]
    fn overlap_is_invalid_alignment() {
        // Output inside, straddling the start of, or equal to the input.
        for out in [OK_IN, OK_IN + 8, OK_IN + 56] {
            assert_eq!(
                check(simple(), OK_IN, out, &SIMPLE),
                Err(HvStatus::INVALID_ALIGNMENT)
            );
        }
        assert_eq!(
            check(simple(), OK_IN + 8, OK_IN, &SIMPLE),
            Err(HvStatus::INVALID_ALIGNMENT)
        );
        // Adjacent either way round: fine.
        assert_eq!(check(simple(), OK_IN, OK_IN + 64, &SIMPLE), Ok(()));
        assert_eq!(check(simple(), OK_IN + 16, OK_IN, &SIMPLE), Ok(()));
    }

    #[test]
    fn memory_outside_vtl0_is_access_denied() {
        // VTL2 memory, either list, including its first and last bytes.
        for gpa in [VTL2.start, VTL2.start + PAGE, VTL2.end - 64] {
            assert_eq!(
                check(simple(), gpa, OK_OUT, &SIMPLE),
                Err(HvStatus::ACCESS_DENIED)
            );
            assert_eq!(
                check(simple(), OK_IN, gpa, &SIMPLE),
                Err(HvStatus::ACCESS_DENIED)
            );
        }
        // Beyond RAM, and at the very top of the address space (the end overflows u64).
        for gpa in [0x40_0000, u64::MAX - PAGE + 1] {
            assert_eq!(
                check(simple(), gpa, OK_OUT, &SIMPLE),
                Err(HvStatus::ACCESS_DENIED)
            );
        }
        // The first and last usable bytes of each VTL0 range.
        assert_eq!(check(simple(), 0, OK_OUT, &SIMPLE), Ok(()));
        assert_eq!(check(simple(), VTL2.start - 64, OK_OUT, &SIMPLE), Ok(()));
        assert_eq!(check(simple(), VTL2.end, OK_OUT, &SIMPLE), Ok(()));
        assert_eq!(check(simple(), OK_IN, 0x40_0000 - 16, &SIMPLE), Ok(()));
    }

    #[test]
    fn empty_lists_impose_no_gpa_rules() {
        // Misaligned, in VTL2, overlapping: all ignored when the lists are empty.
        let bad = VTL2.start + 1;
        assert_eq!(check(simple(), bad, bad, &Layout::NONE), Ok(()));
        let input_only = Layout {
            fixed_input: 8,
            ..Layout::NONE
        };
        assert_eq!(check(simple(), OK_IN, bad, &input_only), Ok(()));
        assert_eq!(
            check(simple(), bad, OK_OUT, &input_only),
            Err(HvStatus::INVALID_ALIGNMENT)
        );
    }

    #[test]
    fn overlap_helper_at_the_top_of_the_address_space() {
        let top = u64::MAX - 7;
        assert!(overlap((top, 8), (top, 8)));
        assert!(!overlap((top - 8, 8), (top, 8)));
    }
}
