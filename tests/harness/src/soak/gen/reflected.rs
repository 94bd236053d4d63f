//! The generator's calls under the host that reflects everything ([`Boot::ReflectAll`]): the
//! well-formed SynIC, retarget and register calls on the kernel's own pages, and random control
//! words over the proxy's table and every TLFS code, each with the oracle's verdict and the
//! relay it may cause.

use super::{code, Gen, REFLECTED_CODES};
use crate::live;
#[cfg(doc)]
use crate::soak::boots::Boot;
use crate::soak::plan::{Plan, Want};
use crate::soak::{oracle, KNOWN_CONNECTIONS, NAMES, OWNED_DEVICE};
use hvdef::{
    Control, HvInputVtl, HvRegisterName, HvStatus, HypercallCode, Vtl, HV_PARTITION_ID_SELF,
    HV_VP_INDEX_SELF,
};
use mockhv::qemu::Arch;
use oracle::Host;

impl Gen {
    /// A call under the host that reflects everything ([`Boot::ReflectAll`]), the former gdbstub
    /// soak's well-formed and random-control mix on the kernel's own pages, each with the
    /// oracle's verdict: what VTL0 gets, its output bytes, the relay the host gets.
    pub(super) fn reflected(&mut self) -> Plan {
        let known = KNOWN_CONNECTIONS;
        let plan = |control: Control,
                    input: Vec<u8>,
                    want: Want,
                    host: Host,
                    output: Vec<u8>,
                    intercepted: bool,
                    what: String| {
            Plan::hypercall(control, input, want, intercepted, host, what).with_output(output)
        };
        match self.rng.below(20) {
            0..=2 => {
                // Relayed when VTL0 owns the device (`pv.devices=`), INVALID_DEVICE_ID
                // otherwise; another partition's id is ACCESS_DENIED (VTL0 speaks for itself).
                let device = self.rng.pick(&[OWNED_DEVICE, OWNED_DEVICE + 1]);
                let own = self.rng.percent(90);
                let partition = if own {
                    HV_PARTITION_ID_SELF
                } else {
                    self.rng.next() >> 1
                };
                let fast = self.rng.percent(30);
                let room = live::proto(self.arch).fast_pool_bytes() as u64;
                let max_banks = if fast { (room - 64) / 8 } else { 8 };
                let (bytes, var) = self.retarget(partition, device, max_banks);
                let control = code(HypercallCode::RETARGET_DEVICE_INTERRUPT)
                    .with_variable_header_size(var)
                    .with_fast(fast);
                let (want, host) = match (own, device == OWNED_DEVICE) {
                    (true, true) => (
                        vec![HvStatus::SUCCESS],
                        Host::Required(oracle::HostCall {
                            code: HypercallCode::RETARGET_DEVICE_INTERRUPT,
                            // The paravisor is soft-float: x64 XMM input goes memory-based.
                            fast: fast && self.arch == Arch::Aarch64,
                            var,
                            input: bytes.clone(),
                        }),
                    ),
                    (false, true) => (vec![HvStatus::ACCESS_DENIED], Host::None),
                    (true, false) => (vec![HvStatus::INVALID_DEVICE_ID], Host::None),
                    (false, false) => (
                        vec![HvStatus::ACCESS_DENIED, HvStatus::INVALID_DEVICE_ID],
                        Host::None,
                    ),
                };
                plan(
                    control,
                    bytes,
                    Want::Exactly(want),
                    host,
                    Vec::new(),
                    true,
                    format!(
                        "RetargetDeviceInterrupt device {device:#x}, partition {partition:#x}, \
                         variable header {var}, fast {fast}"
                    ),
                )
            }
            3..=5 => {
                let connection = self.rng.below(2 * u64::from(known)) as u32;
                let (m, how, valid) = self.message(connection);
                let expect = oracle::synic(
                    HypercallCode::POST_MESSAGE,
                    false,
                    connection,
                    known,
                    valid,
                    &m,
                );
                plan(
                    code(HypercallCode::POST_MESSAGE),
                    m,
                    Want::Exactly(expect.statuses),
                    expect.host,
                    Vec::new(),
                    true,
                    format!("PostMessage to connection {connection}, {how}"),
                )
            }
            6..=8 => {
                let connection = self.rng.below(2 * u64::from(known));
                let (word, flag, reserved, valid) = self.signal_word(connection);
                let fast = self.rng.percent(60);
                let expect = oracle::synic(
                    HypercallCode::SIGNAL_EVENT,
                    fast,
                    connection as u32,
                    known,
                    valid,
                    &word.to_le_bytes(),
                );
                plan(
                    code(HypercallCode::SIGNAL_EVENT).with_fast(fast),
                    word.to_le_bytes().to_vec(),
                    Want::Exactly(expect.statuses),
                    expect.host,
                    Vec::new(),
                    true,
                    format!("SignalEvent (fast {fast}) connection {connection} flag {flag} rsvd {reserved:#x}"),
                )
            }
            9 | 10 => {
                // The hypervisor's own call: the paravisor has no entry for it (a host reflects
                // it only in this worst case), so INVALID_HYPERCALL_CODE and VTL0's output page
                // as the kernel left it (zero).
                let n = 1 + self.rng.below(8) as usize;
                let vtl = if self.rng.percent(50) {
                    HvInputVtl::CURRENT
                } else {
                    HvInputVtl::target(Vtl::VTL0)
                };
                let ip = match self.arch {
                    Arch::X86_64 => hvdef::x86_64::reg::RIP,
                    Arch::Aarch64 => hvdef::aarch64::reg::XPC,
                };
                let names: Vec<HvRegisterName> = (0..n)
                    .map(|_| match self.rng.below(10) {
                        0 => ip,
                        1 => HvRegisterName(self.rng.next() as u32),
                        _ => self.rng.pick(&NAMES),
                    })
                    .collect();
                plan(
                    code(HypercallCode::GET_VP_REGISTERS).with_rep_count(n as u16),
                    e2e::get_registers_input(vtl, &names),
                    Want::Exactly(vec![HvStatus::INVALID_HYPERCALL_CODE]),
                    Host::None,
                    vec![0; 16 * n],
                    true,
                    format!("GetVpRegisters of {n}"),
                )
            }
            11 | 12 => plan(
                // No extended call is relayed, so the capabilities VTL0 may use are none
                // (docs/ARCHITECTURE.md): SUCCESS and 8 zero bytes, the 8 after them untouched.
                code(HypercallCode::EXT_QUERY_CAPABILITIES),
                Vec::new(),
                Want::Exactly(vec![HvStatus::SUCCESS]),
                Host::None,
                vec![0; 16],
                true,
                "ExtQueryCapabilities".into(),
            ),
            13 => plan(
                // TLFS: extended calls are never fast.
                code(HypercallCode::EXT_QUERY_CAPABILITIES).with_fast(true),
                self.rng.bytes(16),
                Want::Exactly(vec![HvStatus::INVALID_PARAMETER]),
                Host::None,
                Vec::new(),
                true,
                "fast ExtQueryCapabilities".into(),
            ),
            _ => {
                let control = self.random_control();
                let input = if control.fast() {
                    let mut b = self.rng.bytes(live::proto(self.arch).fast_pool_bytes());
                    if self.rng.percent(30) {
                        b[..8].copy_from_slice(&HV_PARTITION_ID_SELF.to_le_bytes());
                    }
                    b
                } else {
                    let len = self.rng.below(321) as usize;
                    self.plausible_input(len)
                };
                let host = self.possible_relay(control, &input);
                plan(
                    control,
                    input,
                    Want::Allowed,
                    host,
                    Vec::new(),
                    false,
                    format!("random control word {:#x}", control.into_bits()),
                )
            }
        }
    }

    /// A RetargetDeviceInterrupt input (TLFS / hvdef layout, 56 bytes): the VP mask, or (half
    /// the time) a sparse VP set of 0 to `max_banks` banks in the variable header; returns
    /// (bytes, variable header size).
    fn retarget(&mut self, partition: u64, device: u64, max_banks: u64) -> (Vec<u8>, u16) {
        let data = 0xFEE0_0000_0000_0041 | (self.rng.below(0x100) << 44);
        let vector = 0x20 + self.rng.below(0xD0) as u32;
        let sparse = self.rng.percent(50);
        let mut b = Vec::with_capacity(56);
        b.extend(partition.to_le_bytes());
        b.extend(device.to_le_bytes());
        b.extend(1u32.to_le_bytes()); // MSI
        b.extend(0u32.to_le_bytes());
        b.extend(data.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(vector.to_le_bytes());
        if !sparse {
            b.extend(0u32.to_le_bytes());
            b.extend((1 + self.rng.below(u64::MAX - 1)).to_le_bytes());
            return (b, 0);
        }
        // HV_DEVICE_INTERRUPT_TARGET_PROCESSOR_SET, format HV_GENERIC_SET_SPARSE_4K (0).
        b.extend(hvdef::HV_DEVICE_INTERRUPT_TARGET_PROCESSOR_SET.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        let banks = self.rng.below(max_banks + 1);
        let mut mask = 0u64;
        while u64::from(mask.count_ones()) < banks {
            mask |= 1 << self.rng.below(64);
        }
        b.extend(mask.to_le_bytes());
        for _ in 0..banks {
            b.extend(self.rng.next().to_le_bytes());
        }
        (b, 1 + banks as u16)
    }

    /// Input bytes that get past the first checks often: this partition, then noise.
    fn plausible_input(&mut self, len: usize) -> Vec<u8> {
        let mut bytes = self.rng.bytes(len);
        if len >= 16 && self.rng.percent(50) {
            bytes[..8].copy_from_slice(&HV_PARTITION_ID_SELF.to_le_bytes());
            if self.rng.percent(50) {
                bytes[8..12].copy_from_slice(&HV_VP_INDEX_SELF.to_le_bytes());
            }
            bytes[12] = self.rng.pick(&[0x00, 0x10, 0x11, 0x12, 0x02, 0x20, 0xFF]);
            if self.rng.percent(70) {
                bytes[13..16].fill(0);
            }
        }
        bytes
    }

    /// The relay a random control word's call may cause: its bytes as the call reads them (the
    /// kernel zero-pads an input to its page or register pool, so a short or empty one names
    /// connection 0) may name a relayed connection, or this partition and VTL0's device, and
    /// whether the paravisor relays it then depends on its control-word checks. Optional, but
    /// if made it must be exactly this: the rewritten connection (SynIC) or the same partition
    /// and device (RetargetDeviceInterrupt), with the nested bit the host needs. Found by the
    /// million-call soak: an empty SignalEvent input under a random control word was relayed to
    /// the host's 0x100, which a plan expecting no relay counted against every later one.
    fn possible_relay(&self, control: Control, input: &[u8]) -> Host {
        let padded = |at: usize, n: usize| {
            let mut b = [0u8; 8];
            for (i, byte) in b.iter_mut().enumerate().take(n) {
                *byte = input.get(at + i).copied().unwrap_or(0);
            }
            u64::from_le_bytes(b)
        };
        let code = control.code();
        let fast = control.fast();
        match code {
            HypercallCode::POST_MESSAGE | HypercallCode::SIGNAL_EVENT => {
                let Some(host) = oracle::host_connection(padded(0, 4) as u32, self.relayed) else {
                    return Host::None;
                };
                // The fixed header VTL0's bytes give: SignalEvent's 8 bytes, PostMessage's 16
                // (connection, reserved, message type, payload size).
                let header = if code == HypercallCode::SIGNAL_EVENT {
                    8
                } else {
                    16
                };
                let mut bytes: Vec<u8> = (0..header).map(|i| padded(i, 1) as u8).collect();
                bytes[..4].copy_from_slice(&host.to_le_bytes());
                Host::Optional(oracle::HostCall {
                    code,
                    // x64 PostMessage's fast form is XMM input, which the soft-float paravisor
                    // relays memory-based.
                    fast: fast
                        && (code == HypercallCode::SIGNAL_EVENT || self.arch == Arch::Aarch64),
                    var: 0,
                    input: bytes,
                })
            }
            HypercallCode::RETARGET_DEVICE_INTERRUPT
                if padded(0, 8) == HV_PARTITION_ID_SELF && padded(8, 8) == OWNED_DEVICE =>
            {
                Host::Optional(oracle::HostCall {
                    code,
                    fast: fast && self.arch == Arch::Aarch64,
                    var: control.variable_header_size(),
                    input: (0..16).map(|i| padded(i, 1) as u8).collect(),
                })
            }
            _ => Host::None,
        }
    }

    /// A control word: a code from the proxy's table or any reflected one (VtlCall and VtlReturn aside:
    /// VTL switches, not calls), and random fast bit, reps, variable header, reserved bits
    /// and nested bit.
    fn random_control(&mut self) -> Control {
        let code = loop {
            let c = if self.rng.percent(80) {
                self.rng.pick(&paravisor::proxy::policy::TABLE).code
            } else {
                let r = &REFLECTED_CODES[self.rng.below(REFLECTED_CODES.len() as u64) as usize];
                HypercallCode(r.start + self.rng.below(u64::from(r.end - r.start)) as u16)
            };
            // arm64's reflecting host serves VTL0's SetVpRegisters itself (see `soak_arch`):
            // not a proxied call, and a random one may set VTL0's own registers.
            let served = self.arch == Arch::Aarch64 && c == HypercallCode::SET_VP_REGISTERS;
            if c != HypercallCode::VTL_CALL && c != HypercallCode::VTL_RETURN && !served {
                break c;
            }
        };
        let count = if self.rng.percent(80) {
            self.rng.below(5)
        } else {
            self.rng.below(0x1000)
        };
        let start = match self.rng.below(8) {
            0..=5 => 0,
            6 => self.rng.below(4),
            _ => self.rng.below(0x1000),
        };
        let var = match self.rng.below(8) {
            0..=5 => 0,
            6 => self.rng.below(4),
            _ => self.rng.below(0x400),
        };
        let mut bits = u64::from(code.0)
            | u64::from(self.rng.percent(50)) << 16
            | var << 17
            | count << 32
            | start << 48;
        if self.rng.percent(10) {
            bits |= self.rng.next() & Control::RESERVED_MASK;
        }
        if self.rng.percent(10) {
            bits |= 1 << 31;
        }
        Control::from_bits(bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::gen::tests::gen;

    #[test]
    fn a_random_words_zero_padded_input_may_be_relayed_exactly() {
        let g = Gen {
            relayed: KNOWN_CONNECTIONS,
            reflect_all: true,
            ..gen(1)
        };
        let signal = code(HypercallCode::SIGNAL_EVENT);
        // An empty input reads as connection 0, flag 0: relayed to the host's 0x100.
        assert_eq!(
            g.possible_relay(signal, &[]),
            Host::Optional(oracle::HostCall {
                code: HypercallCode::SIGNAL_EVENT,
                fast: false,
                var: 0,
                input: vec![0, 1, 0, 0, 0, 0, 0, 0],
            })
        );
        assert_eq!(
            g.possible_relay(signal, &KNOWN_CONNECTIONS.to_le_bytes()),
            Host::None
        );
        let retarget = code(HypercallCode::RETARGET_DEVICE_INTERRUPT).with_variable_header_size(2);
        let mut input = HV_PARTITION_ID_SELF.to_le_bytes().to_vec();
        input.push(OWNED_DEVICE as u8);
        assert_eq!(
            g.possible_relay(retarget, &input),
            Host::Optional(oracle::HostCall {
                code: HypercallCode::RETARGET_DEVICE_INTERRUPT,
                fast: false,
                var: 2,
                input: [input.clone(), vec![0; 7]].concat(),
            })
        );
        input[8] += 1;
        assert_eq!(g.possible_relay(retarget, &input), Host::None);
    }

    #[test]
    fn arm64_random_words_leave_out_the_call_its_host_serves() {
        let count = |arch| {
            let mut g = Gen {
                arch,
                reflect_all: true,
                ..gen(3)
            };
            (0..20_000)
                .filter(|_| g.random_control().code() == HypercallCode::SET_VP_REGISTERS)
                .count()
        };
        assert_eq!(count(Arch::Aarch64), 0);
        assert!(count(Arch::X86_64) > 0);
    }
}
