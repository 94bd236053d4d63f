//! The soak's oracle: what VTL0 and the host must see for a SynIC call, written from the TLFS,
//! the scenario the soak boots (its SynIC ports) and the relay configuration it passes on the
//! command line. Nothing here comes from the paravisor: not its tables or its log.

use hvdef::{Control, HvStatus, HypercallCode};

/// One relay the host must receive: code, fast bit and variable-header size of the control
/// word (the nested bit is the host's: see [`HostCall::control`]), and the input byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostCall {
    pub code: HypercallCode,
    pub fast: bool,
    pub var: u16,
    pub input: Vec<u8>,
}

impl HostCall {
    /// The whole control word: no rep fields, no reserved bits; HV_HYPERCALL_NESTED exactly
    /// for the SynIC calls a nested host's L0 owns (TLFS nested-virtualization.md).
    pub fn control(&self, nested: bool) -> u64 {
        let synic = matches!(
            self.code,
            HypercallCode::POST_MESSAGE | HypercallCode::SIGNAL_EVENT
        );
        Control::new()
            .with_code(self.code)
            .with_fast(self.fast)
            .with_variable_header_size(self.var)
            .with_nested(nested && synic)
            .into_bits()
    }
}

/// What the host must receive for one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// Nothing.
    None,
    /// Exactly this, once.
    Required(HostCall),
    /// This once, or nothing (the paravisor may screen what the host would refuse anyway).
    Optional(HostCall),
}

/// What one call must produce.
#[derive(Clone, Debug)]
pub struct Expect {
    /// The final status VTL0 may see (the whole result word: no reps completed).
    pub statuses: Vec<HvStatus>,
    pub host: Host,
}

impl Expect {
    pub fn exactly(status: HvStatus, host: Host) -> Expect {
        Expect {
            statuses: vec![status],
            host,
        }
    }
}

/// The relay the soak configures (`pv.relay`): VTL0's connection c (0..8) is the host's
/// 0x100 + c, so a relay that skips the rewrite is seen.
pub fn host_connection(vtl0: u32, known: u32) -> Option<u32> {
    (vtl0 < known).then(|| 0x100 + vtl0)
}

/// A SynIC call (PostMessage / SignalEvent) to VTL0 connection `connection` whose input is
/// otherwise valid (`valid`) or broken in a field the TLFS gives INVALID_PARAMETER for: `input`
/// is VTL0's, the host's is the same with the connection id rewritten.
pub fn synic(
    code: HypercallCode,
    fast: bool,
    connection: u32,
    known: u32,
    valid: bool,
    input: &[u8],
) -> Expect {
    let relayed = host_connection(connection, known).map(|host| {
        let mut bytes = input.to_vec();
        bytes[..4].copy_from_slice(&host.to_le_bytes());
        HostCall {
            code,
            fast,
            var: 0,
            input: bytes,
        }
    });
    match (relayed, valid) {
        (Some(h), true) => Expect::exactly(HvStatus::SUCCESS, Host::Required(h)),
        (Some(h), false) => Expect::exactly(HvStatus::INVALID_PARAMETER, Host::Optional(h)),
        (None, true) => Expect::exactly(HvStatus::INVALID_CONNECTION_ID, Host::None),
        (None, false) => Expect {
            statuses: vec![HvStatus::INVALID_CONNECTION_ID, HvStatus::INVALID_PARAMETER],
            host: Host::None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relayed_connection_is_rewritten_and_an_unknown_one_refused() {
        let m = |c: u32| {
            let mut b = vec![0u8; 16];
            b[..4].copy_from_slice(&c.to_le_bytes());
            b
        };
        let relayed = synic(HypercallCode::POST_MESSAGE, false, 3, 8, true, &m(3));
        assert_eq!(relayed.statuses, [HvStatus::SUCCESS]);
        assert_eq!(
            relayed.host,
            Host::Required(HostCall {
                code: HypercallCode::POST_MESSAGE,
                fast: false,
                var: 0,
                input: m(0x103),
            })
        );
        let unknown = synic(HypercallCode::POST_MESSAGE, false, 9, 8, true, &m(9));
        assert_eq!(unknown.statuses, [HvStatus::INVALID_CONNECTION_ID]);
        assert_eq!(unknown.host, Host::None);
        let broken = synic(HypercallCode::SIGNAL_EVENT, true, 1, 8, false, &m(1));
        assert_eq!(broken.statuses, [HvStatus::INVALID_PARAMETER]);
        assert!(matches!(broken.host, Host::Optional(_)));
    }

    #[test]
    fn the_nested_bit_is_set_for_synic_relays_only() {
        let call = |code| HostCall {
            code,
            fast: false,
            var: 0,
            input: vec![],
        };
        let nested = Control::from_bits(call(HypercallCode::POST_MESSAGE).control(true));
        assert!(nested.nested());
        let retarget = call(HypercallCode::RETARGET_DEVICE_INTERRUPT).control(true);
        assert!(!Control::from_bits(retarget).nested());
        assert!(!Control::from_bits(call(HypercallCode::SIGNAL_EVENT).control(false)).nested());
    }
}
