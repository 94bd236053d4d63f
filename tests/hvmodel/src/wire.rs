//! The trace as bytes, so a model running inside a VM (the in-VM mock) can hand its trace to
//! the runner, which rebuilds the same [`Event`]s the host-side suites query. A plain
//! little-endian format of this crate's own: a tag byte per event, then its fields in
//! declaration order (byte strings as a u32 length and the bytes, a message as its 256 bytes).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use hvdef::{
    HvError, HvExtendedCapabilities, HvInterceptAccessType, HvMessage, HvPartitionPrivilegeMask,
    HvRegisterName, HvRegisterVsmCapabilities, HvStatus, HypercallCode, HypercallOutput, Vtl,
};
use zerocopy::{FromBytes, IntoBytes};

use super::scenario::{
    BudgetEnd, FaultAction, FaultFilter, HypercallIntercept, InjectedFault, Limits, Overlap,
};
use super::trace::{Abi, Delivery, Event, HypercallRecord, Outcome};
use super::{Arch, Fault, Scenario};

/// Why bytes are not an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The bytes end inside an event.
    Truncated,
    /// A tag or a field value this format does not have, at this offset.
    Invalid(usize),
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    fn vtl(&mut self, v: Vtl) {
        self.u8(v.get());
    }
    fn bool(&mut self, v: bool) {
        self.u8(v.into());
    }
    fn error(&mut self, e: HvError) {
        self.u16(e.status().0);
    }
    fn len(&mut self, n: usize) {
        self.u32(n as u32);
    }
    fn fault(&mut self, f: Fault) {
        self.u8(match f {
            Fault::Gp => 0,
            Fault::Ud => 1,
        });
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], WireError> {
        let end = self.at.checked_add(n).ok_or(WireError::Truncated)?;
        let out = self.bytes.get(self.at..end).ok_or(WireError::Truncated)?;
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, WireError> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }
    fn invalid(&self) -> WireError {
        WireError::Invalid(self.at.saturating_sub(1))
    }
    fn vtl(&mut self) -> Result<Vtl, WireError> {
        let v = self.u8()?;
        Vtl::new(v).ok_or(self.invalid())
    }
    fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.invalid()),
        }
    }
    fn error(&mut self) -> Result<HvError, WireError> {
        let status = HvStatus(self.u16()?);
        HvError::new(status).ok_or(self.invalid())
    }
    /// A count of items each at least `min` bytes long: never more than the bytes left.
    fn len(&mut self, min: usize) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.bytes.len() - self.at {
            return Err(WireError::Truncated);
        }
        Ok(n)
    }
    fn fault(&mut self) -> Result<Fault, WireError> {
        match self.u8()? {
            0 => Ok(Fault::Gp),
            1 => Ok(Fault::Ud),
            _ => Err(self.invalid()),
        }
    }
}

impl Event {
    /// Appends this event's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        match self {
            Event::Hypercall(r) => {
                w.u8(0);
                w.u32(r.vp);
                w.vtl(r.vtl);
                match r.abi {
                    Abi::X64 => w.u8(0),
                    Abi::Smccc => w.u8(1),
                    Abi::Hvc(imm) => {
                        w.u8(2);
                        w.u16(imm);
                    }
                }
                w.u16(r.code.0);
                w.u64(r.control);
                w.u64(r.input_gpa);
                w.u64(r.output_gpa);
                w.bytes(&r.input);
                w.bytes(&r.output);
                match r.outcome {
                    Outcome::Status(out) => {
                        w.u8(0);
                        w.u64(out.into_bits());
                    }
                    Outcome::Fault(f) => {
                        w.u8(1);
                        w.fault(f);
                    }
                    Outcome::VtlSwitch { finished } => {
                        w.u8(2);
                        w.u8(finished.into());
                    }
                    Outcome::Reflected => w.u8(3),
                    Outcome::MemoryIntercept { gpa } => {
                        w.u8(4);
                        w.u64(gpa);
                    }
                }
            }
            Event::Cpuid {
                vp,
                leaf,
                subleaf,
                result,
            } => {
                w.u8(1);
                w.u32(*vp);
                w.u32(*leaf);
                w.u32(*subleaf);
                result.iter().for_each(|r| w.u32(*r));
            }
            Event::Rdmsr {
                vp,
                vtl,
                msr,
                result,
            } => {
                w.u8(2);
                w.u32(*vp);
                w.vtl(*vtl);
                w.u32(*msr);
                match result {
                    Ok(v) => {
                        w.u8(0);
                        w.u64(*v);
                    }
                    Err(f) => {
                        w.u8(1);
                        w.fault(*f);
                    }
                }
            }
            Event::Wrmsr {
                vp,
                vtl,
                msr,
                value,
                result,
            } => {
                w.u8(3);
                w.u32(*vp);
                w.vtl(*vtl);
                w.u32(*msr);
                w.u64(*value);
                match result {
                    Ok(()) => w.u8(0),
                    Err(f) => {
                        w.u8(1);
                        w.fault(*f);
                    }
                }
            }
            Event::Smccc {
                vp,
                function,
                result,
            } => {
                w.u8(4);
                w.u32(*vp);
                w.u64(*function);
                result.iter().for_each(|r| w.u64(*r));
            }
            Event::PendingInterrupt { vp, vtl, vector } => {
                w.u8(5);
                w.u32(*vp);
                w.vtl(*vtl);
                w.u8(*vector);
            }
            Event::PartitionReset { vp } => {
                w.u8(6);
                w.u32(*vp);
            }
            Event::LowerVtlCall { vp, vtl } => {
                w.u8(7);
                w.u32(*vp);
                w.vtl(*vtl);
            }
            Event::Vtl0Access {
                vp,
                gpa,
                access,
                allowed,
            } => {
                w.u8(8);
                w.u32(*vp);
                w.u64(*gpa);
                w.u8(access.0);
                w.u8((*allowed).into());
            }
            Event::Intercept {
                vp,
                vtl,
                delivery,
                message,
            } => {
                w.u8(9);
                w.u32(*vp);
                w.vtl(*vtl);
                w.u8(match delivery {
                    Delivery::AssistPage => 0,
                    Delivery::Sint0 => 1,
                    Delivery::Sint0Queued => 2,
                });
                w.0.extend_from_slice(message.as_bytes());
            }
        }
    }

    /// The event at the start of `bytes`, and how many bytes it took.
    pub fn decode(bytes: &[u8]) -> Result<(Event, usize), WireError> {
        let mut r = Reader { bytes, at: 0 };
        let event = match r.u8()? {
            0 => {
                let vp = r.u32()?;
                let vtl = r.vtl()?;
                let abi = match r.u8()? {
                    0 => Abi::X64,
                    1 => Abi::Smccc,
                    2 => Abi::Hvc(r.u16()?),
                    _ => return Err(r.invalid()),
                };
                let code = HypercallCode(r.u16()?);
                let control = r.u64()?;
                let input_gpa = r.u64()?;
                let output_gpa = r.u64()?;
                let input = r.bytes()?;
                let output = r.bytes()?;
                let outcome = match r.u8()? {
                    0 => Outcome::Status(HypercallOutput::from_bits(r.u64()?)),
                    1 => Outcome::Fault(r.fault()?),
                    2 => Outcome::VtlSwitch {
                        finished: r.bool()?,
                    },
                    3 => Outcome::Reflected,
                    4 => Outcome::MemoryIntercept { gpa: r.u64()? },
                    _ => return Err(r.invalid()),
                };
                Event::Hypercall(HypercallRecord {
                    vp,
                    vtl,
                    abi,
                    code,
                    control,
                    input_gpa,
                    output_gpa,
                    input,
                    output,
                    outcome,
                })
            }
            1 => Event::Cpuid {
                vp: r.u32()?,
                leaf: r.u32()?,
                subleaf: r.u32()?,
                result: [r.u32()?, r.u32()?, r.u32()?, r.u32()?],
            },
            2 => Event::Rdmsr {
                vp: r.u32()?,
                vtl: r.vtl()?,
                msr: r.u32()?,
                result: match r.u8()? {
                    0 => Ok(r.u64()?),
                    1 => Err(r.fault()?),
                    _ => return Err(r.invalid()),
                },
            },
            3 => Event::Wrmsr {
                vp: r.u32()?,
                vtl: r.vtl()?,
                msr: r.u32()?,
                value: r.u64()?,
                result: match r.u8()? {
                    0 => Ok(()),
                    1 => Err(r.fault()?),
                    _ => return Err(r.invalid()),
                },
            },
            4 => Event::Smccc {
                vp: r.u32()?,
                function: r.u64()?,
                result: [r.u64()?, r.u64()?, r.u64()?, r.u64()?],
            },
            5 => Event::PendingInterrupt {
                vp: r.u32()?,
                vtl: r.vtl()?,
                vector: r.u8()?,
            },
            6 => Event::PartitionReset { vp: r.u32()? },
            7 => Event::LowerVtlCall {
                vp: r.u32()?,
                vtl: r.vtl()?,
            },
            8 => Event::Vtl0Access {
                vp: r.u32()?,
                gpa: r.u64()?,
                access: HvInterceptAccessType(r.u8()?),
                allowed: r.bool()?,
            },
            9 => {
                let vp = r.u32()?;
                let vtl = r.vtl()?;
                let delivery = match r.u8()? {
                    0 => Delivery::AssistPage,
                    1 => Delivery::Sint0,
                    2 => Delivery::Sint0Queued,
                    _ => return Err(r.invalid()),
                };
                let message = HvMessage::read_from_bytes(r.take(size_of::<HvMessage>())?)
                    .map_err(|_| WireError::Truncated)?;
                Event::Intercept {
                    vp,
                    vtl,
                    delivery,
                    message,
                }
            }
            _ => return Err(WireError::Invalid(0)),
        };
        Ok((event, r.at))
    }
}

/// Every event in `bytes` (a concatenation of [`Event::encode`]s), or where it stops making
/// sense.
pub fn decode_all(mut bytes: &[u8]) -> Result<Vec<Event>, (usize, WireError)> {
    let mut events = Vec::new();
    let mut offset = 0;
    while !bytes.is_empty() {
        let (event, len) = Event::decode(bytes).map_err(|e| (offset, e))?;
        events.push(event);
        bytes = &bytes[len..];
        offset += len;
    }
    Ok(events)
}

impl Scenario {
    /// This scenario as bytes, for a model running elsewhere (the in-VM host) to run the same
    /// partition. Every field, in declaration order.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        w.u8(match self.arch {
            Arch::X86_64 => 0,
            Arch::Aarch64 => 1,
        });
        w.u32(self.vp_count);
        w.bool(self.vsm);
        w.vtl(self.active_vtl);
        w.u16(self.enabled_vtls);
        w.bool(self.ap_vtls_enabled);
        w.bool(self.nested);
        w.len(self.l0_calls.len());
        for (code, err) in &self.l0_calls {
            w.u16(code.0);
            w.error(*err);
        }
        w.u64(self.privileges.into_bits());
        w.u64(self.extended_capabilities.into_bits());
        w.u64(self.vsm_capabilities.into_bits());
        w.bool(self.xmm_fast_hypercalls);
        w.bool(self.register_page);
        w.bool(self.arm64_fp_lr_shared);
        w.len(self.host_calls.len());
        for (code, status) in &self.host_calls {
            w.u16(code.0);
            w.u16(status.0);
        }
        w.len(self.ports.len());
        for (id, vtl) in &self.ports {
            w.u32(*id);
            w.vtl(*vtl);
        }
        w.len(self.devices.len());
        for (id, vtl) in &self.devices {
            w.u64(*id);
            w.vtl(*vtl);
        }
        w.bool(self.hypercall_intercept == HypercallIntercept::Accepted);
        w.len(self.reflected_codes.len());
        for code in &self.reflected_codes {
            w.u16(code.0);
        }
        w.len(self.vtl0_registers.len());
        for (name, value) in &self.vtl0_registers {
            w.u32(name.0);
            w.u64(*value as u64);
            w.u64((*value >> 64) as u64);
        }
        w.u64(self.vtl0_guest_os_id);
        w.len(self.faults.len());
        for f in &self.faults {
            w.u16(f.code.0);
            w.u32(f.nth);
            match f.action {
                FaultAction::Status(e) => {
                    w.u8(0);
                    w.error(e);
                }
                FaultAction::Timeout { reps } => {
                    w.u8(1);
                    w.u16(reps);
                }
                FaultAction::ReturnedTimeout { reps } => {
                    w.u8(2);
                    w.u16(reps);
                }
                FaultAction::ShortSuccess { reps } => {
                    w.u8(3);
                    w.u16(reps);
                }
            }
            match f.filter.vp {
                None => w.u8(0),
                Some(vp) => {
                    w.u8(1);
                    w.u32(vp);
                }
            }
            match f.filter.register {
                None => w.u8(0),
                Some(name) => {
                    w.u8(1);
                    w.u32(name.0);
                }
            }
        }
        let l = &self.limits;
        w.u32(l.max_vps);
        w.u32(l.max_lps);
        w.u16(l.max_reps_per_call);
        w.bool(l.budget_end == BudgetEnd::ShortSuccess);
        w.u8(l.gpa_bits);
        w.u32(l.vtl0_retries);
        w.error(self.page_crossing_status);
        match self.overlap {
            Overlap::Tolerated => w.u8(0),
            Overlap::Status(e) => {
                w.u8(1);
                w.error(e);
            }
        }
        w.len(self.ram.len());
        for r in &self.ram {
            w.u64(r.start);
            w.u64(r.end);
        }
    }

    /// The scenario [`Scenario::encode`] wrote, and how many bytes it took.
    pub fn decode(bytes: &[u8]) -> Result<(Scenario, usize), WireError> {
        let mut r = Reader { bytes, at: 0 };
        let arch = match r.u8()? {
            0 => Arch::X86_64,
            1 => Arch::Aarch64,
            _ => return Err(r.invalid()),
        };
        let vp_count = r.u32()?;
        let vsm = r.bool()?;
        let active_vtl = r.vtl()?;
        let enabled_vtls = r.u16()?;
        let ap_vtls_enabled = r.bool()?;
        let nested = r.bool()?;
        let mut l0_calls = BTreeMap::new();
        for _ in 0..r.len(4)? {
            l0_calls.insert(HypercallCode(r.u16()?), r.error()?);
        }
        let privileges = HvPartitionPrivilegeMask::from_bits(r.u64()?);
        let extended_capabilities = HvExtendedCapabilities::from_bits(r.u64()?);
        let vsm_capabilities = HvRegisterVsmCapabilities::from_bits(r.u64()?);
        let xmm_fast_hypercalls = r.bool()?;
        let register_page = r.bool()?;
        let arm64_fp_lr_shared = r.bool()?;
        let mut host_calls = BTreeMap::new();
        for _ in 0..r.len(4)? {
            host_calls.insert(HypercallCode(r.u16()?), HvStatus(r.u16()?));
        }
        let mut ports = BTreeMap::new();
        for _ in 0..r.len(5)? {
            ports.insert(r.u32()?, r.vtl()?);
        }
        let mut devices = BTreeMap::new();
        for _ in 0..r.len(9)? {
            devices.insert(r.u64()?, r.vtl()?);
        }
        let hypercall_intercept = if r.bool()? {
            HypercallIntercept::Accepted
        } else {
            HypercallIntercept::Rejected
        };
        let mut reflected_codes = BTreeSet::new();
        for _ in 0..r.len(2)? {
            reflected_codes.insert(HypercallCode(r.u16()?));
        }
        let mut vtl0_registers = Vec::new();
        for _ in 0..r.len(20)? {
            let name = HvRegisterName(r.u32()?);
            let low = r.u64()?;
            let high = r.u64()?;
            vtl0_registers.push((name, u128::from(low) | u128::from(high) << 64));
        }
        let vtl0_guest_os_id = r.u64()?;
        let mut faults = Vec::new();
        for _ in 0..r.len(9)? {
            let code = HypercallCode(r.u16()?);
            let nth = r.u32()?;
            let action = match r.u8()? {
                0 => FaultAction::Status(r.error()?),
                1 => FaultAction::Timeout { reps: r.u16()? },
                2 => FaultAction::ReturnedTimeout { reps: r.u16()? },
                3 => FaultAction::ShortSuccess { reps: r.u16()? },
                _ => return Err(r.invalid()),
            };
            let vp = match r.u8()? {
                0 => None,
                1 => Some(r.u32()?),
                _ => return Err(r.invalid()),
            };
            let register = match r.u8()? {
                0 => None,
                1 => Some(HvRegisterName(r.u32()?)),
                _ => return Err(r.invalid()),
            };
            faults.push(InjectedFault {
                code,
                nth,
                action,
                filter: FaultFilter { vp, register },
            });
        }
        let limits = Limits {
            max_vps: r.u32()?,
            max_lps: r.u32()?,
            max_reps_per_call: r.u16()?,
            budget_end: if r.bool()? {
                BudgetEnd::ShortSuccess
            } else {
                BudgetEnd::Timeout
            },
            gpa_bits: r.u8()?,
            vtl0_retries: r.u32()?,
        };
        let page_crossing_status = r.error()?;
        let overlap = match r.u8()? {
            0 => Overlap::Tolerated,
            1 => Overlap::Status(r.error()?),
            _ => return Err(r.invalid()),
        };
        let mut ram = Vec::new();
        for _ in 0..r.len(16)? {
            ram.push(r.u64()?..r.u64()?);
        }
        let scenario = Scenario {
            arch,
            vp_count,
            vsm,
            active_vtl,
            enabled_vtls,
            ap_vtls_enabled,
            nested,
            l0_calls,
            privileges,
            extended_capabilities,
            vsm_capabilities,
            xmm_fast_hypercalls,
            register_page,
            arm64_fp_lr_shared,
            host_calls,
            ports,
            devices,
            hypercall_intercept,
            reflected_codes,
            vtl0_registers,
            vtl0_guest_os_id,
            faults,
            limits,
            page_crossing_status,
            overlap,
            ram,
        };
        Ok((scenario, r.at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvdef::{HvMessageType, HvStatus};
    use zerocopy::FromZeros;

    fn samples() -> Vec<Event> {
        let mut message = HvMessage::new_zeroed();
        message.header.message_type = HvMessageType::HYPERCALL_INTERCEPT;
        message.payload_bytes_mut()[0] = 0xab;
        let record = |abi, outcome| {
            Event::Hypercall(HypercallRecord {
                vp: 3,
                vtl: Vtl::VTL2,
                abi,
                code: HypercallCode::POST_MESSAGE,
                control: 0x1_005c,
                input_gpa: 0x4020_1000,
                output_gpa: 0,
                input: alloc::vec![1, 2, 3],
                output: alloc::vec![],
                outcome,
            })
        };
        alloc::vec![
            record(
                Abi::X64,
                Outcome::Status(HypercallOutput::new().with_status(HvStatus::ACCESS_DENIED))
            ),
            record(Abi::Smccc, Outcome::Fault(Fault::Ud)),
            record(Abi::Hvc(3), Outcome::VtlSwitch { finished: true }),
            record(Abi::Hvc(1), Outcome::Reflected),
            record(Abi::Smccc, Outcome::MemoryIntercept { gpa: 0x5000 }),
            Event::Cpuid {
                vp: 0,
                leaf: 0x4000_0000,
                subleaf: 0,
                result: [1, 2, 3, 4],
            },
            Event::Rdmsr {
                vp: 1,
                vtl: Vtl::VTL0,
                msr: 0x4000_0001,
                result: Err(Fault::Gp),
            },
            Event::Rdmsr {
                vp: 1,
                vtl: Vtl::VTL2,
                msr: 0x4000_0001,
                result: Ok(7),
            },
            Event::Wrmsr {
                vp: 1,
                vtl: Vtl::VTL2,
                msr: 0x4000_0000,
                value: 9,
                result: Ok(()),
            },
            Event::Smccc {
                vp: 0,
                function: 0x8600_ff01,
                result: [5, 6, 7, 8],
            },
            Event::PendingInterrupt {
                vp: 0,
                vtl: Vtl::VTL2,
                vector: 0x30,
            },
            Event::PartitionReset { vp: 2 },
            Event::LowerVtlCall {
                vp: 0,
                vtl: Vtl::VTL0,
            },
            Event::Vtl0Access {
                vp: 0,
                gpa: 0x4020_0000,
                access: HvInterceptAccessType::WRITE,
                allowed: false,
            },
            Event::Intercept {
                vp: 0,
                vtl: Vtl::VTL0,
                delivery: Delivery::Sint0Queued,
                message,
            },
        ]
    }

    /// Every field off its default, so a field the encoder forgets fails the comparison.
    fn odd_scenario() -> Scenario {
        let mut s = Scenario::for_arch(Arch::Aarch64);
        s.vp_count = 7;
        s.vsm = false;
        s.active_vtl = Vtl::VTL1;
        s.enabled_vtls = 0b11;
        s.ap_vtls_enabled = !s.ap_vtls_enabled;
        s.nested = true;
        s.l0_calls
            .insert(HypercallCode::POST_MESSAGE, HvError::INVALID_PARAMETER);
        s.privileges = HvPartitionPrivilegeMask::from_bits(0x1234_5678);
        s.extended_capabilities = HvExtendedCapabilities::from_bits(0x5);
        s.vsm_capabilities = HvRegisterVsmCapabilities::from_bits(0x77);
        s.xmm_fast_hypercalls = !s.xmm_fast_hypercalls;
        s.register_page = !s.register_page;
        s.arm64_fp_lr_shared = true;
        s.host_calls
            .insert(HypercallCode::SIGNAL_EVENT, HvStatus::ACCESS_DENIED);
        s.ports.insert(9, Vtl::VTL2);
        s.devices.insert(0xdead_beef_0000, Vtl::VTL0);
        s.hypercall_intercept = HypercallIntercept::Accepted;
        s.reflected_codes.insert(HypercallCode::SET_VP_REGISTERS);
        s.vtl0_registers
            .push((HvRegisterName(0x2_0001), u128::MAX - 5));
        s.vtl0_guest_os_id = 42;
        s.faults.push(InjectedFault {
            code: HypercallCode::GET_VP_REGISTERS,
            nth: 3,
            action: FaultAction::ReturnedTimeout { reps: 2 },
            filter: FaultFilter {
                vp: Some(1),
                register: Some(HvRegisterName(0xd0003)),
            },
        });
        s.faults.push(InjectedFault {
            code: HypercallCode::POST_MESSAGE,
            nth: 0,
            action: FaultAction::Status(HvError::TIMEOUT),
            filter: FaultFilter::ANY,
        });
        s.limits = Limits {
            max_vps: 5,
            max_lps: 6,
            max_reps_per_call: 7,
            budget_end: BudgetEnd::ShortSuccess,
            gpa_bits: 40,
            vtl0_retries: 2,
        };
        s.page_crossing_status = HvError::INVALID_PARAMETER;
        s.overlap = Overlap::Status(HvError::INVALID_ALIGNMENT);
        s.ram = alloc::vec![0x4000_0000..0x4f00_0000, 0x1_0000_0000..0x1_4000_0000];
        s
    }

    #[test]
    fn a_scenario_round_trips_field_for_field() {
        for scenario in [Scenario::for_arch(Arch::X86_64), odd_scenario()] {
            let mut bytes = Vec::new();
            scenario.encode(&mut bytes);
            let (back, len) = Scenario::decode(&bytes).expect("decodes");
            assert_eq!(len, bytes.len());
            // Debug shows every field; Scenario has no PartialEq of its own.
            assert_eq!(alloc::format!("{back:?}"), alloc::format!("{scenario:?}"));
            for cut in 0..bytes.len() {
                assert!(Scenario::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn every_event_round_trips() {
        let events = samples();
        let mut bytes = Vec::new();
        for e in &events {
            e.encode(&mut bytes);
        }
        assert_eq!(decode_all(&bytes), Ok(events));
    }

    #[test]
    fn cut_or_corrupt_bytes_are_errors_not_events() {
        let mut bytes = Vec::new();
        for e in samples() {
            e.encode(&mut bytes);
        }
        for cut in 1..bytes.len() {
            // Any prefix either decodes into whole events or fails; it never panics.
            let _ = decode_all(&bytes[..cut]);
        }
        let (_, first) = Event::decode(&bytes).unwrap();
        assert_eq!(
            decode_all(&bytes[..first - 1]),
            Err((0, WireError::Truncated))
        );
        assert_eq!(decode_all(&[0xff]), Err((0, WireError::Invalid(0))));
        let mut bad_vtl = bytes[..first].to_vec();
        bad_vtl[5] = 16;
        assert_eq!(decode_all(&bad_vtl), Err((0, WireError::Invalid(5))));
    }
}
