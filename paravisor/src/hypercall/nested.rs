//! Which call codes carry HV_HYPERCALL_NESTED (control bit 31): decided once at boot from what
//! the host reports (x86 CPUID 0x40000004 EAX bit 12, arm64 HvRegisterFeaturesInfo bit 4),
//! looked up by the one issue path, tested by no call site.

use hvdef::HypercallCode;

/// Call codes below the extended range; extended calls (0x8001 and up) are never nested.
const SIMPLE_CODES: usize = 0x8000;

/// The calls an L1 guest must route to the L0 hypervisor on a nested host: the SynIC message
/// and event calls that carry VMBus traffic to the real host (what Linux marks nested).
pub const L0_CALLS: [HypercallCode; 2] = [HypercallCode::POST_MESSAGE, HypercallCode::SIGNAL_EVENT];

/// A bitmap over the simple-call range.
#[derive(Clone, PartialEq, Eq)]
pub struct NestedTable {
    bits: [u64; SIMPLE_CODES / 64],
}

impl NestedTable {
    /// No call is nested: the table of a host that does not run us nested.
    pub const NONE: NestedTable = NestedTable {
        bits: [0; SIMPLE_CODES / 64],
    };

    /// The table for a host that does (`nested`) or does not run us nested.
    pub fn for_host(nested: bool) -> NestedTable {
        let mut table = NestedTable::NONE;
        if nested {
            for code in L0_CALLS {
                table.bits[code.0 as usize / 64] |= 1 << (code.0 % 64);
            }
        }
        table
    }

    /// Whether `code` must carry the nested bit.
    pub fn requires(&self, code: HypercallCode) -> bool {
        let code = code.0 as usize;
        code < SIMPLE_CODES && self.bits[code / 64] & (1 << (code % 64)) != 0
    }

    /// Number of codes marked nested (for the boot log).
    pub fn count(&self) -> u32 {
        self.bits.iter().map(|w| w.count_ones()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_bit_on_exactly_the_l0_calls_of_a_nested_host() {
        let nested = NestedTable::for_host(true);
        let flat = NestedTable::for_host(false);
        for code in 0..=u16::MAX {
            let code = HypercallCode(code);
            assert!(!flat.requires(code), "{code:?} nested on a flat host");
            assert_eq!(nested.requires(code), L0_CALLS.contains(&code), "{code:?}");
        }
        assert_eq!(nested.count(), 2);
        assert!(NestedTable::NONE == flat);
    }

    #[test]
    fn extended_calls_are_never_nested() {
        let nested = NestedTable::for_host(true);
        for code in 0x8000..=u16::MAX {
            assert!(!nested.requires(HypercallCode(code)));
        }
        assert!(!nested.requires(HypercallCode::EXT_QUERY_CAPABILITIES));
    }
}
