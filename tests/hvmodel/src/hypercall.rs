//! The hypercall dispatcher: TLFS validation of the control word and the parameter lists in one
//! fixed order, then one handler per implemented call.
//!
//! Validation order (the TLFS leaves it open but prefers ACCESS_DENIED; this follows KVM, with
//! OpenVMM's rep and size rules):
//! 1. arm64 before the guest OS id is set: anything but Get/SetVpRegisters → ACCESS_DENIED
//!    (the rule is TLFS hypercall-interface.md §"Reporting the Guest OS Identity"; the status is
//!    the model's choice); missing privilege → ACCESS_DENIED.
//! 2. reserved control bits, or the nested bit where it is not allowed → INVALID_HYPERCALL_INPUT.
//! 3. code neither implemented, nor on the host table, nor an advertised extended call →
//!    INVALID_HYPERCALL_CODE.
//! 4. rep count / rep start / variable header against the call's kind → INVALID_HYPERCALL_INPUT;
//!    an extended call with the fast bit → INVALID_PARAMETER (KVM).
//! 5. fast: input and output must fit the register block (INVALID_HYPERCALL_INPUT; on x64
//!    without XMM fast hypercalls, needing XMM is #UD per the TLFS). Memory: GPAs 8-byte aligned
//!    and inside the GPA space → INVALID_ALIGNMENT; a list crossing a page → the scenario's
//!    status (TLFS: INVALID_ALIGNMENT); overlapping lists → tolerated unless the scenario says
//!    otherwise; a list in memory the guest does not have → INVALID_HYPERCALL_INPUT (OpenVMM;
//!    see `memory_params`).
//! 6. nested: an L0 call without the nested bit reached the wrong hypervisor (its configured
//!    status, INVALID_CONNECTION_ID by default).
//! 7. injected faults, the rep budget, then the handler. A rep call stopped short of its count
//!    by the budget or a fault ends in TIMEOUT (IP left on the call) or, where the scenario
//!    says so, a short SUCCESS (TLFS hypercall-interface.md §"Simple and Rep hypercalls").

use alloc::vec;
use alloc::vec::Vec;
use core::marker::PhantomData;
use core::ops::Range;

use hvdef::aarch64::{HvArm64InputEnableVpVtl, HvArm64InputStartVirtualProcessor};
use hvdef::x86_64::{HvX64InputEnableVpVtl, HvX64InputStartVirtualProcessor};
use hvdef::{
    Control, HvError, HvExtendedCapabilities, HvInputGetVpRegisters, HvInputInstallIntercept,
    HvInputPostMessage, HvInputRetargetDeviceInterrupt, HvInputSignalEvent, HvInterceptAccessMask,
    HvInterceptAccessType, HvInterceptType, HvRegisterAssoc, HvRegisterName, HvRegisterValue,
    HvResult, HvStatus, HypercallCode, HypercallOutput, Vtl, HV_EVENT_FLAGS_COUNT,
    HV_MESSAGE_PAYLOAD_SIZE, HV_PAGE_SIZE, HV_PARTITION_ID_SELF, HV_VP_INDEX_SELF,
};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::protection::ModifyVtlProtectionMask;
use super::registers::{early_readable, early_writable};
use super::scenario::{BudgetEnd, FaultAction, HypercallIntercept, Overlap};
use super::trace::{Abi, Event, HypercallRecord, Outcome};
use super::{Arch, Effects, Fault, GuestMemory, InitialVpContext, Model, StartVp};

/// The fast register block, in 8-byte words: x64 RDX, R8, XMM0 low, XMM0 high, ... XMM5 high;
/// arm64 X2..X17 (SMCCC) or X1..X16 (`hvc #1`). Inputs and outputs are placed in 16-byte pairs,
/// the output starting at the first pair after the input (OpenVMM; Linux's arm64 fast
/// GetVpRegisters reads its value from X6/X7 accordingly).
pub(crate) struct FastBlock {
    pub words: Vec<u64>,
    /// x64 without XMM fast hypercalls: input beyond RDX/R8, or any output, is #UD.
    pub xmm_ud: bool,
}

pub(crate) struct Request {
    pub abi: Abi,
    pub control: u64,
    pub input_gpa: u64,
    pub output_gpa: u64,
    pub fast: FastBlock,
}

pub(crate) struct Reply {
    pub output: HypercallOutput,
    /// TIMEOUT: the instruction runs again with this control word (rep start = reps completed).
    pub retry: Option<u64>,
    pub effects: Effects,
}

/// Why a call ended before success: a status with the absolute reps completed, or a fault.
enum Stop {
    Status(HvError, u16),
    Fault(Fault),
    /// A lower VTL's parameter list lies on a page VTL2 protected: the call is not carried out
    /// and VTL2 gets a memory intercept for this GPA and access (TLFS hypercall-interface.md
    /// §"Alignment Requirements": a parameter page that is not accessible produces a memory
    /// intercept message).
    Protected(u64, HvInterceptAccessType),
}

impl From<HvError> for Stop {
    fn from(err: HvError) -> Self {
        Stop::Status(err, 0)
    }
}

/// Where a validated call stops: the rep index it completes up to, and how it reports ending
/// before the rep count.
struct RepEnd {
    end: u16,
    short: BudgetEnd,
}

impl RepEnd {
    /// Stops at `end` instead if that is not later; the earlier limit says how the call ends.
    fn cut(&mut self, end: u16, short: BudgetEnd) {
        if end <= self.end {
            self.end = end;
            self.short = short;
        }
    }
}

/// Where a call code is handled.
enum Target {
    Model(Spec),
    /// The host table or an advertised extended call: only the control word is checked.
    Host(HvResult<()>),
}

/// A handler gets the whole input and output lists and processes reps `start..end`; it returns
/// the absolute reps completed (0 for simple calls). Every handler is [`run_simple`] or
/// [`run_rep`] for one call's [`SimpleCall`] or [`RepCall`].
type Handler = fn(&mut Model, &mut Call<'_>, &[u8], &mut [u8]) -> (HvResult<()>, u16);

/// The input of a call that takes none, and the output of one that returns none.
pub(crate) type Empty = [u8; 0];

/// What is specific to a simple call the model implements: its input and output types and what
/// it does. [`run_simple`] is the rest: decoding the input, storing the output on success.
pub(crate) trait SimpleCall {
    type Input: FromBytes;
    type Output: IntoBytes + Immutable + KnownLayout;
    fn run(model: &mut Model, call: &mut Call<'_>, input: Self::Input) -> HvResult<Self::Output>;
}

/// What is specific to a rep call: its header, element and output element types, what the
/// header names (checked once, before any rep) and what one rep does. [`run_rep`] is the rest:
/// decoding the header and each element, the walk over `start..end`, where an error stops it
/// (a header error completes no rep, an element error completes the reps before it), storing
/// each rep's output.
pub(crate) trait RepCall {
    type Header: FromBytes;
    type Element: FromBytes;
    type Output: IntoBytes + Immutable + KnownLayout;
    /// What the header names (the target VP and VTL, or the header itself).
    type Target;
    fn target(model: &Model, call: &Call<'_>, header: Self::Header) -> HvResult<Self::Target>;
    fn rep(
        model: &mut Model,
        call: &mut Call<'_>,
        target: &Self::Target,
        element: Self::Element,
    ) -> HvResult<Self::Output>;
}

fn run_simple<C: SimpleCall>(
    model: &mut Model,
    call: &mut Call<'_>,
    input: &[u8],
    output: &mut [u8],
) -> (HvResult<()>, u16) {
    let result = parse::<C::Input>(input).and_then(|input| C::run(model, call, input));
    (result.map(|out| put(output, 0, &out)), 0)
}

fn run_rep<C: RepCall>(
    model: &mut Model,
    call: &mut Call<'_>,
    input: &[u8],
    output: &mut [u8],
) -> (HvResult<()>, u16) {
    let target = match parse::<C::Header>(input).and_then(|h| C::target(model, call, h)) {
        Ok(target) => target,
        Err(err) => return (Err(err), call.start),
    };
    // The elements follow the fixed header (a variable header, where a call has one, is not
    // read).
    let list = input.get(size_of::<C::Header>()..).unwrap_or_default();
    for i in call.start..call.end {
        let done = element::<C::Element>(list, i).and_then(|e| C::rep(model, call, &target, e));
        match done {
            Ok(out) => put(output, i, &out),
            Err(err) => return (Err(err), i),
        }
    }
    (Ok(()), call.end)
}

#[derive(Clone, Copy)]
struct Spec {
    header: usize,
    in_elem: usize,
    /// Output size of a simple call, or of one rep element.
    out: usize,
    rep: bool,
    handler: Handler,
}

impl Spec {
    fn simple<C: SimpleCall>() -> Self {
        Self {
            header: size_of::<C::Input>(),
            in_elem: 0,
            out: size_of::<C::Output>(),
            rep: false,
            handler: run_simple::<C>,
        }
    }

    fn rep<C: RepCall>() -> Self {
        Self {
            header: size_of::<C::Header>(),
            in_elem: size_of::<C::Element>(),
            out: size_of::<C::Output>(),
            rep: true,
            handler: run_rep::<C>,
        }
    }
}

pub(crate) struct Call<'a> {
    vp: u32,
    pub(crate) vtl: Vtl,
    pub(crate) start: u16,
    pub(crate) end: u16,
    pub(crate) mem: &'a mut dyn GuestMemory,
    effects: &'a mut Effects,
    /// A nested host's L0 call made by VTL0 without the nested bit: it reached the L1
    /// hypervisor, for which this is the answer (an unknown connection). The handler validates
    /// the input first and then treats it as its port lookup's result, so reflection follows
    /// the same rule as on a flat host.
    l1_route: Option<HvError>,
}

/// The parameter lists, copied in (and out again through `write_back`).
struct Params {
    input: Vec<u8>,
    output: Vec<u8>,
    /// Fast calls: the byte offset of the output in the register block.
    fast_output_at: Option<usize>,
}

impl Params {
    fn fast(block: &FastBlock, in_len: usize, out_len: usize) -> Result<Self, Stop> {
        let (in_pairs, out_pairs) = (in_len.div_ceil(16), out_len.div_ceil(16));
        if block.xmm_ud && (in_pairs > 1 || out_pairs > 0) {
            return Err(Stop::Fault(Fault::Ud));
        }
        if (in_pairs + out_pairs) * 2 > block.words.len() {
            return Err(HvError::INVALID_HYPERCALL_INPUT.into());
        }
        let bytes = block.words.as_bytes();
        let at = in_pairs * 16;
        Ok(Self {
            input: bytes[..in_len].to_vec(),
            // Starts as the registers' current bytes, so output bytes a call does not write keep
            // their value when written back.
            output: bytes[at..at + out_len].to_vec(),
            fast_output_at: Some(at),
        })
    }

    fn write_back(
        &self,
        range: Range<usize>,
        req: &mut Request,
        mem: &mut dyn GuestMemory,
    ) -> HvResult<()> {
        let data = &self.output[range.clone()];
        match self.fast_output_at {
            Some(at) => {
                let at = at + range.start;
                req.fast.words.as_mut_bytes()[at..at + data.len()].copy_from_slice(data);
                Ok(())
            }
            // OpenVMM hv1_hypercall support.rs: a failed output write is
            // `HypercallParseError::Access`, INVALID_HYPERCALL_INPUT.
            None => mem
                .write(req.output_gpa.wrapping_add(range.start as u64), data)
                .map_err(|_| HvError::INVALID_HYPERCALL_INPUT),
        }
    }
}

impl Model {
    /// Runs one hypercall for `vp` (in its active VTL) and records it in the trace.
    pub(crate) fn hypercall(
        &mut self,
        vp: u32,
        req: &mut Request,
        mem: &mut dyn GuestMemory,
    ) -> Result<Reply, Fault> {
        let vtl = self.vp(vp).active_vtl;
        let control = Control::from_bits(req.control);
        let mut record = HypercallRecord {
            vp,
            vtl,
            abi: req.abi,
            code: control.code(),
            control: req.control,
            input_gpa: req.input_gpa,
            output_gpa: req.output_gpa,
            input: Vec::new(),
            output: Vec::new(),
            outcome: Outcome::Fault(Fault::Ud), // replaced below on every path
        };
        let mut effects = Effects::default();
        let (status, reps) =
            match self.dispatch(vp, vtl, control, req, mem, &mut record, &mut effects) {
                Ok(reps) => (HvStatus::SUCCESS, reps),
                Err(Stop::Status(err, reps)) => (err.status(), reps),
                Err(Stop::Fault(fault)) => {
                    record.outcome = Outcome::Fault(fault);
                    self.trace.push(Event::Hypercall(record));
                    return Err(fault);
                }
                Err(Stop::Protected(gpa, access)) => {
                    record.outcome = Outcome::MemoryIntercept { gpa };
                    self.trace.push(Event::Hypercall(record));
                    effects.memory_intercept = Some((gpa, access));
                    return Ok(Reply {
                        output: HypercallOutput::new(),
                        retry: None,
                        effects,
                    });
                }
            };
        let output = HypercallOutput::new()
            .with_status(status)
            .with_reps_completed(reps);
        if effects.reflect {
            record.outcome = Outcome::Reflected;
            self.trace.push(Event::Hypercall(record));
            return Ok(Reply {
                output,
                retry: None,
                effects,
            });
        }
        record.outcome = Outcome::Status(output);
        self.trace.push(Event::Hypercall(record));
        let returned = core::mem::take(&mut self.timeout_returned);
        let retry = (status == HvStatus::TIMEOUT && !returned)
            .then(|| control.with_rep_start(reps).into_bits());
        effects.advance_ip = retry.is_none();
        Ok(Reply {
            output,
            retry,
            effects,
        })
    }

    #[expect(clippy::too_many_arguments)]
    fn dispatch(
        &mut self,
        vp: u32,
        vtl: Vtl,
        control: Control,
        req: &mut Request,
        mem: &mut dyn GuestMemory,
        record: &mut HypercallRecord,
        effects: &mut Effects,
    ) -> Result<u16, Stop> {
        let code = control.code();
        self.check_access(vtl, code)?;
        self.check_control_bits(control)?;
        let target = self.target(code).ok_or(HvError::INVALID_HYPERCALL_CODE)?;
        let rep = match &target {
            Target::Model(spec) => spec.rep,
            Target::Host(_) => code.is_rep(),
        };
        check_shape(control, rep, code.takes_variable_header())?;
        if code.is_extended() && control.fast() {
            return Err(HvError::INVALID_PARAMETER.into());
        }
        let (start, count) = if rep {
            (control.rep_start(), control.rep_count())
        } else {
            (0, 0)
        };

        let spec = match target {
            Target::Model(spec) => spec,
            Target::Host(result) => {
                self.check_route(control, start)?;
                let stop = self.count_call(code, vp, &[], start, count, rep)?;
                result.map_err(|err| Stop::Status(err, start))?;
                return Self::rep_result(stop.end, count, stop.short);
            }
        };

        let in_len = spec.header
            + usize::from(control.variable_header_size()) * 8
            + spec.in_elem * usize::from(count);
        let out_len = if rep {
            spec.out * usize::from(count)
        } else {
            spec.out
        };
        let mut params = if control.fast() {
            Params::fast(&req.fast, in_len, out_len)?
        } else {
            self.memory_params(vtl, req, in_len, out_len, mem)?
        };
        record.input.clone_from(&params.input);
        let synic = matches!(
            code,
            HypercallCode::POST_MESSAGE | HypercallCode::SIGNAL_EVENT
        );
        let l1_route = match self.check_route(control, start) {
            Ok(()) => None,
            // The L1 hypervisor runs this partition's VSM: VTL0's unmarked L0 call is a call
            // to a connection it does not know, which the handler may reflect like any other.
            Err(Stop::Status(err, _)) if vtl == Vtl::VTL0 && synic => Some(err),
            Err(stop) => return Err(stop),
        };
        let stop = self.count_call(code, vp, &params.input, start, count, rep)?;

        let mut call = Call {
            vp,
            vtl,
            start,
            end: stop.end,
            mem,
            effects,
            l1_route,
        };
        let (result, done) = (spec.handler)(self, &mut call, &params.input, &mut params.output);
        // Rep calls write back every completed element; simple calls only on success.
        let written = if rep {
            usize::from(start) * spec.out..usize::from(done) * spec.out
        } else if result.is_ok() {
            0..out_len
        } else {
            0..0
        };
        if !written.is_empty() {
            record.output = params.output[written.clone()].to_vec();
            params
                .write_back(written, req, call.mem)
                .map_err(|err| Stop::Status(err, done))?;
        }
        result.map_err(|err| Stop::Status(err, done))?;
        if rep {
            return Self::rep_result(done, count, stop.short);
        }
        Ok(done)
    }

    /// arm64's early-register rule, then the call's privilege.
    fn check_access(&self, vtl: Vtl, code: HypercallCode) -> HvResult<()> {
        let registers = matches!(
            code,
            HypercallCode::GET_VP_REGISTERS | HypercallCode::SET_VP_REGISTERS
        );
        if self.early_gate(vtl) && !registers {
            return Err(HvError::ACCESS_DENIED);
        }
        let p = self.scenario.privileges;
        let allowed = match code {
            HypercallCode::GET_VP_REGISTERS | HypercallCode::SET_VP_REGISTERS => {
                p.access_vp_registers()
            }
            // EnableVpVtl is VSM, which needs AccessVsm (TLFS vsm.md §"VSM Detection and
            // Status"). InstallIntercept: model's choice (its TLFS page names no privilege); a
            // VTL's intercepts on lower VTLs are VSM use.
            HypercallCode::ENABLE_VP_VTL | HypercallCode::INSTALL_INTERCEPT => p.access_vsm(),
            HypercallCode::START_VIRTUAL_PROCESSOR => p.start_virtual_processor(),
            HypercallCode::POST_MESSAGE => p.post_messages(),
            HypercallCode::SIGNAL_EVENT => p.signal_events(),
            code if code.is_extended() => p.enable_extended_hypercalls(),
            _ => true,
        };
        if allowed {
            Ok(())
        } else {
            Err(HvError::ACCESS_DENIED)
        }
    }

    /// arm64: until the caller's VTL has a guest OS id, only the early register list is usable
    /// (TLFS hypercall-interface.md §"Reporting the Guest OS Identity", HvCallGetVpRegisters
    /// §"Early Register List"). The status is the model's choice (no source names one):
    /// ACCESS_DENIED, the status of a call refused regardless of its input.
    fn early_gate(&self, vtl: Vtl) -> bool {
        self.scenario.arch == Arch::Aarch64
            && self.partition.vtls[vtl.get() as usize].guest_os_id == 0
    }

    fn early_check(
        &self,
        vtl: Vtl,
        name: HvRegisterName,
        allowed: fn(HvRegisterName) -> bool,
    ) -> HvResult<()> {
        if self.early_gate(vtl) && !allowed(name) {
            return Err(HvError::ACCESS_DENIED);
        }
        Ok(())
    }

    /// Reserved bits, and the nested bit: only a nested host has an L0 to route to, and only for
    /// the calls L0 owns; extended calls are never nested.
    fn check_control_bits(&self, control: Control) -> HvResult<()> {
        let code = control.code();
        let nested_ok =
            self.nested() && !code.is_extended() && self.scenario.l0_calls.contains_key(&code);
        if control.reserved_bits() != 0 || (control.nested() && !nested_ok) {
            return Err(HvError::INVALID_HYPERCALL_INPUT);
        }
        Ok(())
    }

    /// A nested host's L0 calls without the nested bit go to the L1 hypervisor, which does not
    /// know the L0 connection and fails them.
    fn check_route(&self, control: Control, start: u16) -> Result<(), Stop> {
        if self.nested() && !control.nested() {
            if let Some(&err) = self.scenario.l0_calls.get(&control.code()) {
                return Err(Stop::Status(err, start));
            }
        }
        Ok(())
    }

    fn target(&self, code: HypercallCode) -> Option<Target> {
        if let Some(spec) = self.spec(code) {
            return Some(Target::Model(spec));
        }
        if let Some(status) = self.scenario.host_calls.get(&code) {
            return Some(Target::Host(status.result()));
        }
        (code.is_extended() && self.scenario.extended_capabilities.supports(code))
            .then_some(Target::Host(Ok(())))
    }

    fn spec(&self, code: HypercallCode) -> Option<Spec> {
        let x64 = self.scenario.arch == Arch::X86_64;
        Some(match code {
            HypercallCode::GET_VP_REGISTERS => Spec::rep::<VpRegisters<HvRegisterName>>(),
            HypercallCode::SET_VP_REGISTERS => Spec::rep::<VpRegisters<HvRegisterAssoc>>(),
            HypercallCode::ENABLE_VP_VTL if x64 => {
                Spec::simple::<EnableVpVtl<HvX64InputEnableVpVtl>>()
            }
            HypercallCode::ENABLE_VP_VTL => Spec::simple::<EnableVpVtl<HvArm64InputEnableVpVtl>>(),
            HypercallCode::START_VIRTUAL_PROCESSOR if x64 => {
                Spec::simple::<StartVirtualProcessor<HvX64InputStartVirtualProcessor>>()
            }
            HypercallCode::START_VIRTUAL_PROCESSOR => {
                Spec::simple::<StartVirtualProcessor<HvArm64InputStartVirtualProcessor>>()
            }
            HypercallCode::INSTALL_INTERCEPT => Spec::simple::<InstallIntercept>(),
            HypercallCode::POST_MESSAGE => Spec::simple::<PostMessage>(),
            HypercallCode::SIGNAL_EVENT => Spec::simple::<SignalEvent>(),
            HypercallCode::RETARGET_DEVICE_INTERRUPT => Spec::simple::<RetargetDeviceInterrupt>(),
            HypercallCode::MODIFY_VTL_PROTECTION_MASK => Spec::rep::<ModifyVtlProtectionMask>(),
            HypercallCode::EXT_QUERY_CAPABILITIES => Spec::simple::<QueryCapabilities>(),
            _ => return None,
        })
    }

    /// TLFS alignment rules for memory-based lists (GPAs are ignored for empty lists). Each
    /// list in turn, input first, in OpenVMM's order (support.rs `check_buffer`): crossing a
    /// page → `Scenario::page_crossing_status`; a GPA not 8-byte aligned → INVALID_ALIGNMENT
    /// (TLFS and OpenVMM); a list beyond the GPA space → INVALID_ALIGNMENT (TLFS). Then
    /// overlapping lists as `Scenario::overlap` says. Memory the guest does not have is
    /// INVALID_HYPERCALL_INPUT: the TLFS (hypercall-interface.md §"Alignment Requirements") has
    /// the hypervisor send a memory intercept message to the host, which the model does not
    /// have; OpenVMM's emulator (hv1_hypercall support.rs, `HypercallParseError::Access`)
    /// answers INVALID_HYPERCALL_INPUT.
    fn memory_params(
        &self,
        vtl: Vtl,
        req: &Request,
        in_len: usize,
        out_len: usize,
        mem: &mut dyn GuestMemory,
    ) -> Result<Params, Stop> {
        let limit = 1u64 << self.scenario.limits.gpa_bits;
        let check = |gpa: u64, len: usize| -> HvResult<Range<u64>> {
            if len == 0 {
                return Ok(gpa..gpa);
            }
            if (gpa % HV_PAGE_SIZE) + len as u64 > HV_PAGE_SIZE {
                return Err(self.scenario.page_crossing_status);
            }
            let beyond_space = gpa.checked_add(len as u64).is_none_or(|end| end > limit);
            if !gpa.is_multiple_of(8) || beyond_space {
                return Err(HvError::INVALID_ALIGNMENT);
            }
            Ok(gpa..gpa + len as u64)
        };
        let input = check(req.input_gpa, in_len)?;
        let output = check(req.output_gpa, out_len)?;
        let overlap = !input.is_empty()
            && !output.is_empty()
            && input.start < output.end
            && output.start < input.end;
        if let (true, Overlap::Status(err)) = (overlap, self.scenario.overlap) {
            return Err(err.into());
        }
        // A lower VTL's lists must be readable (input) and writable (output) for it.
        for (gpa, len, access) in [
            (req.input_gpa, in_len, HvInterceptAccessType::READ),
            (req.output_gpa, out_len, HvInterceptAccessType::WRITE),
        ] {
            if let Some(at) = self.denied(vtl, gpa, len as u64, access) {
                return Err(Stop::Protected(at, access));
            }
        }
        // Both lists must be accessible before the call runs; reading the output range is how
        // the model asks whether it is there.
        let mut read = |gpa: u64, len: usize| {
            let mut bytes = vec![0; len];
            if len > 0 {
                mem.read(gpa, &mut bytes)
                    .map_err(|_| HvError::INVALID_HYPERCALL_INPUT)?;
            }
            Ok::<_, HvError>(bytes)
        };
        let input = read(req.input_gpa, in_len)?;
        let output = read(req.output_gpa, out_len)?;
        Ok(Params {
            input,
            output,
            fast_output_at: None,
        })
    }

    /// Counts a validated call and applies injected faults and the rep budget; returns the rep
    /// index to stop at and how stopping short of `count` is reported.
    fn count_call(
        &mut self,
        code: HypercallCode,
        vp: u32,
        input: &[u8],
        start: u16,
        count: u16,
        rep: bool,
    ) -> Result<RepEnd, Stop> {
        let budget = self.scenario.limits.max_reps_per_call;
        let mut stop = RepEnd {
            end: if rep && budget != 0 {
                count.min(start.saturating_add(budget))
            } else {
                count
            },
            short: self.scenario.limits.budget_end,
        };
        let mut fault = None;
        for (f, seen) in self.scenario.faults.iter().zip(&mut self.fault_counts) {
            if f.code == code && f.filter.matches(code, vp, input) {
                *seen = seen.saturating_add(1);
                if *seen == f.nth && fault.is_none() {
                    fault = Some(*f);
                }
            }
        }
        let fault = fault.as_ref();
        match fault.map(|f| f.action) {
            None => {}
            Some(FaultAction::Status(err)) => return Err(Stop::Status(err, start)),
            Some(FaultAction::Timeout { .. } | FaultAction::ReturnedTimeout { .. }) if !rep => {
                self.timeout_returned = matches!(
                    fault.map(|f| f.action),
                    Some(FaultAction::ReturnedTimeout { .. })
                );
                return Err(Stop::Status(HvError::TIMEOUT, 0));
            }
            Some(FaultAction::Timeout { reps }) => {
                stop.cut(start.saturating_add(reps), BudgetEnd::Timeout);
            }
            Some(FaultAction::ReturnedTimeout { reps }) => {
                self.timeout_returned = true;
                stop.cut(start.saturating_add(reps), BudgetEnd::Timeout);
            }
            Some(FaultAction::ShortSuccess { .. }) if !rep => {}
            Some(FaultAction::ShortSuccess { reps }) => {
                stop.cut(start.saturating_add(reps), BudgetEnd::ShortSuccess);
            }
        }
        Ok(stop)
    }

    /// The result of a rep call that completed `done` of `count` reps without an element
    /// error: SUCCESS when all are done, else what `short` says (TIMEOUT, or a short SUCCESS).
    fn rep_result(done: u16, count: u16, short: BudgetEnd) -> Result<u16, Stop> {
        match short {
            BudgetEnd::Timeout if done < count => Err(Stop::Status(HvError::TIMEOUT, done)),
            _ => Ok(done),
        }
    }

    // ---- What the handlers share ----------------------------------------------------------

    /// The Get/SetVpRegisters header: the partition must be "self", the VP self or in range,
    /// and an explicit target VTL no higher than the caller's and enabled on that VP.
    ///
    /// Sources: the TLFS v6.0b PDF lists ACCESS_DENIED, INVALID_PARTITION_ID, INVALID_VP_INDEX and
    /// INVALID_PARAMETER (bad register name) for both calls (OpenVMM's WHP backend, which
    /// supports only "self", answers INVALID_PARAMETER for a foreign partition or VP); reserved
    /// `HV_INPUT_VTL` bits are INVALID_PARAMETER (OpenVMM hvdef `HvInputVtl::target_vtl`); a
    /// target VTL above the caller's is ACCESS_DENIED (OpenVMM virt_whp `get_vp_registers`/
    /// `set_vp_registers`; OpenHCL `target_vtl_no_higher`). A target VTL not enabled on the VP is
    /// INVALID_VTL_STATE, OpenHCL's status when the VTL's register state is absent
    /// (virt_mshv_vtl hardware_cvm `get_vp_register`, CrIntercept registers). A non-zero RsvdZ
    /// header byte is INVALID_PARAMETER by the model's choice (OpenVMM ignores it), following
    /// OpenVMM's convention for RsvdZ input (hv1_hypercall imp.rs `HvSendSyntheticClusterIpi`).
    fn register_target(&self, call: &Call<'_>, hdr: HvInputGetVpRegisters) -> HvResult<(u32, Vtl)> {
        if hdr.partition_id != HV_PARTITION_ID_SELF {
            return Err(HvError::INVALID_PARTITION_ID);
        }
        if hdr.reserved != [0; 3] || hdr.target_vtl.reserved_bits() != 0 {
            return Err(HvError::INVALID_PARAMETER);
        }
        let vp = self.vp_index(call, hdr.vp_index)?;
        let vtl = hdr.target_vtl.explicit_target().unwrap_or(call.vtl);
        if vtl > call.vtl {
            return Err(HvError::ACCESS_DENIED);
        }
        if !self.vp(vp).vtl_enabled(vtl) {
            return Err(HvError::INVALID_VTL_STATE);
        }
        Ok((vp, vtl))
    }

    fn vp_index(&self, call: &Call<'_>, index: u32) -> HvResult<u32> {
        match index {
            HV_VP_INDEX_SELF => Ok(call.vp),
            index if self.valid_vp(index) => Ok(index),
            _ => Err(HvError::INVALID_VP_INDEX),
        }
    }

    /// The shared part of EnableVpVtl and StartVirtualProcessor: the target VP and VTL (enabled
    /// for the partition, no higher than the caller's) and the initial context. INVALID_PARTITION_ID
    /// and INVALID_VP_INDEX are TLFS HvCallStartVirtualProcessor's return values; non-zero RsvdZ
    /// is INVALID_PARAMETER as OpenVMM's `hv1_hypercall` (support.rs
    /// `x64_start_vp_validates_reserved_fields`). A VTL not enabled for the partition is
    /// INVALID_PARAMETER as OpenVMM virt_whp `enable_vp_vtl` (`vtl != Vtl2`, WHP's only higher
    /// VTL; OpenHCL's CVM emulation says INVALID_VTL_STATE instead). A VTL above the caller's is
    /// ACCESS_DENIED: TLFS HvCallEnableVpVtl "a VTL can only be enabled by a higher VTL" (its
    /// exception, the highest enabled VTL enabling a higher one, cannot pass the partition
    /// check); OpenVMM virt_whp `start_virtual_processor`, OpenHCL `target_vtl_no_higher`.
    fn vp_context_target(
        &self,
        call: &Call<'_>,
        input: impl VpContextInput,
    ) -> HvResult<(u32, Vtl, InitialVpContext)> {
        let VpContextFields {
            partition_id,
            vp_index,
            target_vtl,
            reserved,
            context,
        } = input.fields();
        if partition_id != HV_PARTITION_ID_SELF {
            return Err(HvError::INVALID_PARTITION_ID);
        }
        if reserved != [0; 3] {
            return Err(HvError::INVALID_PARAMETER);
        }
        let vp = self.vp_index(call, vp_index)?;
        let vtl = Vtl::new(target_vtl)
            .filter(|v| self.scenario.enabled_vtls & (1 << v.get()) != 0)
            .ok_or(HvError::INVALID_PARAMETER)?;
        if vtl > call.vtl {
            return Err(HvError::ACCESS_DENIED);
        }
        Ok((vp, vtl, context))
    }

    /// The intercept types OpenVMM's VTL2 emulation implements (`vmm_core/virt_whp/src/
    /// hypercalls.rs` `install_intercept`; fact sheet §2.1), the `X64*` ones on x64 only;
    /// HvInterceptTypeHypercall as the scenario says; anything else INVALID_PARAMETER. OpenVMM's
    /// emulation is x64-only, so Exception, UnknownSynicConnection and
    /// RetargetInterruptWithUnknownDeviceId on arm64 are the model's choice (the TLFS names no
    /// arch for them; OpenHCL's arm64 dispatcher serves the calls they reflect).
    fn intercept_type_supported(&self, i: HvInputInstallIntercept) -> bool {
        let x64 = self.scenario.arch == Arch::X86_64;
        match i.intercept_type {
            HvInterceptType::HYPERCALL => {
                self.scenario.hypercall_intercept == HypercallIntercept::Accepted
            }
            HvInterceptType::EXCEPTION
            | HvInterceptType::UNKNOWN_SYNIC_CONNECTION
            | HvInterceptType::RETARGET_INTERRUPT_WITH_UNKNOWN_DEVICE_ID => true,
            HvInterceptType::X64_IO_PORT
            | HvInterceptType::X64_MSR
            | HvInterceptType::X64_APIC_EOI
            | HvInterceptType::X64_IO_PORT_RANGE => x64,
            _ => false,
        }
    }

    /// Whether VTL2 installed an intercept of `kind`.
    fn intercept_installed(&self, kind: HvInterceptType) -> bool {
        self.partition
            .intercepts
            .iter()
            .any(|i| i.intercept_type == kind)
    }

    /// `result`, or TIMEOUT when the hypervisor hands VTL0's valid PostMessage / SignalEvent /
    /// RetargetDeviceInterrupt to VTL2 instead of answering `result` itself. OpenVMM's VTL2
    /// emulation (`vmm_core/virt_whp/src/hypercalls.rs` `post_message`, `signal_event`,
    /// `retarget_interrupt`) first tries the call with the caller's VTL and reflects it only
    /// when that fails with the error `unknown` names (an unknown connection or device), the
    /// matching intercept is installed and the caller is VTL0. With an accepted
    /// HvInterceptTypeHypercall installed every such call is reflected (see
    /// [`HypercallIntercept::Accepted`]).
    fn unless_reflected(
        &self,
        call: &mut Call<'_>,
        result: HvResult<()>,
        unknown: (HvError, HvInterceptType),
    ) -> HvResult<()> {
        let reflect = call.vtl == Vtl::VTL0
            && (self.intercept_installed(HvInterceptType::HYPERCALL)
                || (result == Err(unknown.0) && self.intercept_installed(unknown.1)));
        call.effects.reflect |= reflect;
        if reflect {
            return Err(HvError::TIMEOUT);
        }
        result
    }

    /// The port-map step shared by PostMessage and SignalEvent once their input is valid: an
    /// unknown connection id is INVALID_CONNECTION_ID (reflected to VTL2 when VTL2 asked for
    /// it), a caller below the port's minimum VTL OPERATION_DENIED (OpenVMM vmm_core/virt
    /// synic.rs `handle_post_message`/`handle_signal_event`), then the port's own check.
    fn synic_port_call(
        &mut self,
        call: &mut Call<'_>,
        id: u32,
        port_check: impl FnOnce(u32) -> HvResult<()>,
    ) -> HvResult<()> {
        let result = match (call.l1_route, self.scenario.ports.get(&id)) {
            (Some(l1_route), _) => Err(l1_route),
            (None, None) => Err(HvError::INVALID_CONNECTION_ID),
            (None, Some(&minimum)) if call.vtl < minimum => Err(HvError::OPERATION_DENIED),
            (None, Some(_)) => port_check(id),
        };
        let unknown = (
            HvError::INVALID_CONNECTION_ID,
            HvInterceptType::UNKNOWN_SYNIC_CONNECTION,
        );
        self.unless_reflected(call, result, unknown)
    }
}

// ---- The calls ----------------------------------------------------------------------------

/// HvCallGetVpRegisters (elements `HvRegisterName`) and HvCallSetVpRegisters (elements
/// `HvRegisterAssoc`): one header and target ([`Model::register_target`]), a rep per element.
struct VpRegisters<E>(PhantomData<E>);

/// A Get/SetVpRegisters rep element: what one rep does with it.
trait VpRegistersElement: FromBytes {
    type Output: IntoBytes + Immutable + KnownLayout;
    fn rep(
        self,
        model: &mut Model,
        call: &mut Call<'_>,
        vp: u32,
        vtl: Vtl,
    ) -> HvResult<Self::Output>;
}

impl<E: VpRegistersElement> RepCall for VpRegisters<E> {
    type Header = HvInputGetVpRegisters;
    type Element = E;
    type Output = E::Output;
    type Target = (u32, Vtl);

    fn target(model: &Model, call: &Call<'_>, header: Self::Header) -> HvResult<(u32, Vtl)> {
        model.register_target(call, header)
    }

    fn rep(
        model: &mut Model,
        call: &mut Call<'_>,
        &(vp, vtl): &(u32, Vtl),
        e: E,
    ) -> HvResult<E::Output> {
        e.rep(model, call, vp, vtl)
    }
}

/// GetVpRegisters: the register's value.
impl VpRegistersElement for HvRegisterName {
    type Output = HvRegisterValue;

    fn rep(
        self,
        model: &mut Model,
        call: &mut Call<'_>,
        vp: u32,
        vtl: Vtl,
    ) -> HvResult<HvRegisterValue> {
        model.early_check(call.vtl, self, early_readable)?;
        model.get_register(vp, vtl, self).map(HvRegisterValue::from)
    }
}

/// SetVpRegisters: no output.
impl VpRegistersElement for HvRegisterAssoc {
    type Output = Empty;

    fn rep(self, model: &mut Model, call: &mut Call<'_>, vp: u32, vtl: Vtl) -> HvResult<Empty> {
        // Model's choice, OpenVMM's convention for RsvdZ input (hv1_hypercall imp.rs
        // `HvSendSyntheticClusterIpi`); OpenVMM's SetVpRegisters ignores this field.
        if self.reserved != [0; 3] {
            return Err(HvError::INVALID_PARAMETER);
        }
        model.early_check(call.vtl, self.name, early_writable)?;
        let value = self.value.as_u128();
        model.set_register(vp, vtl, self.name, value, call.mem, call.effects)?;
        Ok([])
    }
}

/// The fields [`Model::vp_context_target`] judges, from either arch's input.
struct VpContextFields {
    partition_id: u64,
    vp_index: u32,
    target_vtl: u8,
    reserved: [u8; 3],
    context: InitialVpContext,
}

/// HvCallEnableVpVtl / HvCallStartVirtualProcessor input: one layout per arch, differing only
/// in the initial context.
trait VpContextInput: FromBytes {
    fn fields(self) -> VpContextFields;
}

impl VpContextInput for HvX64InputEnableVpVtl {
    fn fields(self) -> VpContextFields {
        VpContextFields {
            partition_id: self.partition_id,
            vp_index: self.vp_index,
            target_vtl: self.target_vtl,
            reserved: self.reserved,
            context: InitialVpContext::X64(self.context),
        }
    }
}

impl VpContextInput for HvArm64InputEnableVpVtl {
    fn fields(self) -> VpContextFields {
        VpContextFields {
            partition_id: self.partition_id,
            vp_index: self.vp_index,
            target_vtl: self.target_vtl,
            reserved: self.reserved,
            context: InitialVpContext::Aarch64(self.context),
        }
    }
}

/// Enabling a VTL twice is VTL_ALREADY_ENABLED (the TLFS says it fails without a status;
/// Linux expects 0x86; OpenVMM virt_whp `enable_vp_vtl` returns it). The VP does not run:
/// that is StartVirtualProcessor's job.
struct EnableVpVtl<I>(PhantomData<I>);

impl<I: VpContextInput> SimpleCall for EnableVpVtl<I> {
    type Input = I;
    type Output = Empty;

    fn run(model: &mut Model, call: &mut Call<'_>, input: I) -> HvResult<Empty> {
        let (vp, vtl, context) = model.vp_context_target(call, input)?;
        if model.vp(vp).vtl_enabled(vtl) {
            return Err(HvError::VTL_ALREADY_ENABLED);
        }
        model.vp_mut(vp).enabled_vtls |= 1 << vtl.get();
        call.effects.vp_vtl_enabled = Some(StartVp { vp, vtl, context });
        Ok([])
    }
}

/// The target VTL must be enabled on the target VP and not started there yet; either is
/// INVALID_VP_STATE, TLFS HvCallStartVirtualProcessor's status for a VP "not in the correct
/// state", and what OpenVMM virt_whp `start_virtual_processor` (VTL2 not enabled on the
/// target) and OpenHCL hardware_cvm `start_virtual_processor` (VTL1 not enabled; the
/// guest's VP already started) return. A VP not running at all starts in the target VTL.
/// On a VP where a higher VTL already runs (the paravisor started its VTL2), the call
/// starts the lower VTL as an INIT would (TLFS: "functionally equivalent to traditional
/// INIT-based methods"; vsm.md: INIT/SIPI for a lower VTL are dropped once a higher VTL is
/// enabled, and this call is the way): the context goes into that VTL's registers and the
/// VP keeps running the higher VTL until it returns to the lower one, as OpenVMM virt_whp
/// does (`start_virtual_processor` queues a per-VTL start request; `vp.rs` takes it only
/// while no higher VTL is runnable and installs it with `hv1_emulator`
/// `set_x86_vp_context`). OpenHCL hardware_cvm likewise starts a guest VP whose VTL2 (the
/// paravisor) is running.
struct StartVirtualProcessor<I>(PhantomData<I>);

impl<I: VpContextInput> SimpleCall for StartVirtualProcessor<I> {
    type Input = I;
    type Output = Empty;

    fn run(model: &mut Model, call: &mut Call<'_>, input: I) -> HvResult<Empty> {
        let (vp, vtl, context) = model.vp_context_target(call, input)?;
        let target = model.vp_mut(vp);
        let bit = 1 << vtl.get();
        if !target.vtl_enabled(vtl) || target.started_vtls & bit != 0 {
            return Err(HvError::INVALID_VP_STATE);
        }
        if !target.started {
            target.started = true;
            target.started_vtls |= bit;
            target.active_vtl = vtl;
            if target.enabled_vtls >> (vtl.get() + 1) != 0 {
                // A lower VTL started before the VP's higher one: the glue hears of it
                // (a live glue starts lower VTLs only where the higher one runs).
                model.lower_starts.push(vp);
            }
            call.effects.start_vp = Some(StartVp { vp, vtl, context });
            return Ok([]);
        }
        // Running: only a VTL below one that has run here can be started this way.
        if target.started_vtls >> (vtl.get() + 1) == 0 {
            return Err(HvError::INVALID_VP_STATE);
        }
        target.started_vtls |= bit;
        let file = target.file_mut(vtl);
        for (name, value) in initial_registers(&context) {
            file.set(name, value);
        }
        model.lower_starts.push(vp);
        Ok([])
    }
}

struct InstallIntercept;

impl SimpleCall for InstallIntercept {
    type Input = HvInputInstallIntercept;
    type Output = Empty;

    fn run(model: &mut Model, call: &mut Call<'_>, i: HvInputInstallIntercept) -> HvResult<Empty> {
        let known = HvInterceptAccessMask::new()
            .with_read(true)
            .with_write(true)
            .with_execute(true)
            .into_bits();
        // Intercepts go to the VTL that installs them; VTL0 has no lower VTL to watch (OpenVMM
        // emulates the call for VTL2 only).
        if call.vtl == Vtl::VTL0 {
            return Err(HvError::ACCESS_DENIED);
        }
        // OpenHCL hardware_cvm `install_intercept`: a partition other than "self" is
        // ACCESS_DENIED, access bits it does not know INVALID_PARAMETER.
        if i.partition_id != HV_PARTITION_ID_SELF {
            return Err(HvError::ACCESS_DENIED);
        }
        if i.access_type.into_bits() & !known != 0 || !model.intercept_type_supported(i) {
            return Err(HvError::INVALID_PARAMETER);
        }
        model.partition.intercepts.push(i);
        Ok([])
    }
}

/// The host accepts the message if it knows the connection (TLFS HvCallPostMessage rules).
struct PostMessage;

impl SimpleCall for PostMessage {
    type Input = HvInputPostMessage;
    type Output = Empty;

    fn run(model: &mut Model, call: &mut Call<'_>, m: HvInputPostMessage) -> HvResult<Empty> {
        // Types with the top bit set are the hypervisor's; zero is "no message"; TLFS
        // HvCallPostMessage lists both and the 240-byte limit as INVALID_PARAMETER. RsvdZ
        // non-zero is INVALID_PARAMETER by the model's choice (OpenVMM ignores the field).
        let hypervisor_type = m.message_type.0 >> 31 != 0;
        if m.reserved != 0
            || m.message_type.0 == 0
            || hypervisor_type
            || m.payload_size as usize > HV_MESSAGE_PAYLOAD_SIZE
        {
            return Err(HvError::INVALID_PARAMETER);
        }
        model.synic_port_call(call, m.connection_id, |_| Ok(()))?;
        Ok([])
    }
}

struct SignalEvent;

impl SimpleCall for SignalEvent {
    type Input = HvInputSignalEvent;
    type Output = Empty;

    fn run(model: &mut Model, call: &mut Call<'_>, e: HvInputSignalEvent) -> HvResult<Empty> {
        // RsvdZ non-zero: INVALID_PARAMETER by the model's choice (OpenVMM ignores the field).
        if e.reserved != 0 {
            return Err(HvError::INVALID_PARAMETER);
        }
        // TLFS HvCallSignalEvent: a flag number at or beyond "the port's flag count" is
        // INVALID_PARAMETER, so it is checked once the connection has named a port. The model's
        // ports have no flag count of their own: the limit is a SINT's share of the SIEF page.
        let flag_ok = |_: u32| {
            if usize::from(e.flag_number) >= HV_EVENT_FLAGS_COUNT {
                return Err(HvError::INVALID_PARAMETER);
            }
            Ok(())
        };
        model.synic_port_call(call, e.connection_id, flag_ok)?;
        Ok([])
    }
}

/// HvCallRetargetDeviceInterrupt: the partition must be "self" and the reserved words zero;
/// a device the host does not know is INVALID_DEVICE_ID, reflected to VTL2 when VTL2 asked
/// for it. The model keeps no interrupt routing: a known device's call succeeds.
struct RetargetDeviceInterrupt;

impl SimpleCall for RetargetDeviceInterrupt {
    type Input = HvInputRetargetDeviceInterrupt;
    type Output = Empty;

    fn run(
        model: &mut Model,
        call: &mut Call<'_>,
        r: HvInputRetargetDeviceInterrupt,
    ) -> HvResult<Empty> {
        if r.partition_id != HV_PARTITION_ID_SELF {
            return Err(HvError::INVALID_PARTITION_ID);
        }
        // RsvdZ fields (TLFS HvCallRetargetDeviceInterrupt); the interrupt source is MSI (1)
        // or I/O APIC (2) and the target flags are Multicast (1) and ProcessorSet (2)
        // (Linux `hv_interrupt_source`, `HV_DEVICE_INTERRUPT_TARGET_*`); anything else is
        // the model's INVALID_PARAMETER, the TLFS's status for a bad input value.
        let known_flags = hvdef::HV_DEVICE_INTERRUPT_TARGET_MULTICAST
            | hvdef::HV_DEVICE_INTERRUPT_TARGET_PROCESSOR_SET;
        if r.reserved1 != 0
            || r.reserved2 != 0
            || !matches!(r.interrupt_source, 1 | 2)
            || r.target_flags & !known_flags != 0
        {
            return Err(HvError::INVALID_PARAMETER);
        }
        let result = match model.scenario.devices.get(&r.device_id) {
            Some(&minimum) if call.vtl >= minimum => Ok(()),
            _ => Err(HvError::INVALID_DEVICE_ID),
        };
        let unknown = (
            HvError::INVALID_DEVICE_ID,
            HvInterceptType::RETARGET_INTERRUPT_WITH_UNKNOWN_DEVICE_ID,
        );
        model.unless_reflected(call, result, unknown)?;
        Ok([])
    }
}

struct QueryCapabilities;

impl SimpleCall for QueryCapabilities {
    type Input = Empty;
    type Output = HvExtendedCapabilities;

    fn run(model: &mut Model, _call: &mut Call<'_>, _: Empty) -> HvResult<HvExtendedCapabilities> {
        Ok(model.scenario.extended_capabilities)
    }
}

fn check_shape(control: Control, rep: bool, variable: bool) -> HvResult<()> {
    let (count, start) = (control.rep_count(), control.rep_start());
    let bad_reps = if rep {
        count == 0 || start >= count
    } else {
        count != 0 || start != 0
    };
    if bad_reps || (!variable && control.variable_header_size() != 0) {
        return Err(HvError::INVALID_HYPERCALL_INPUT);
    }
    Ok(())
}

fn parse<T: FromBytes>(input: &[u8]) -> HvResult<T> {
    T::read_from_prefix(input)
        .map(|(value, _)| value)
        .map_err(|_| HvError::INVALID_HYPERCALL_INPUT)
}

/// Rep element `index` of a list of `T`s.
fn element<T: FromBytes>(list: &[u8], index: u16) -> HvResult<T> {
    let size = size_of::<T>();
    let at = usize::from(index) * size;
    list.get(at..at + size)
        .and_then(|bytes| T::read_from_bytes(bytes).ok())
        .ok_or(HvError::INVALID_HYPERCALL_INPUT)
}

/// Stores output element `index`.
fn put<T: IntoBytes + Immutable + KnownLayout>(output: &mut [u8], index: u16, value: &T) {
    let bytes = value.as_bytes();
    let at = usize::from(index) * bytes.len();
    if let Some(slot) = output.get_mut(at..at + bytes.len()) {
        slot.copy_from_slice(bytes);
    }
}

/// The registers an initial VP context sets (TLFS HV_INITIAL_VP_CONTEXT), as OpenVMM's
/// `hv1_emulator::hypercall::set_x86_vp_context` applies it: RIP, RSP, RFLAGS, the segments
/// and descriptor tables, EFER, CR0/CR3/CR4 and PAT; the rest stays. arm64: PC, SP_EL1 (the
/// context's `sp_elh`: the VP starts in EL1h), the EL1 translation and vector registers and
/// X18, with PSTATE EL1h and D, A, I, F masked (Arm's reset PSTATE; the in-VM host's start of
/// a VTL2 VP uses the same, `hv::aarch64::initial_state`).
fn initial_registers(context: &InitialVpContext) -> Vec<(hvdef::HvRegisterName, u128)> {
    use hvdef::aarch64::reg as arm;
    use hvdef::x86_64::reg as x64;
    let wide = |bytes: &[u8]| {
        let mut b = [0u8; 16];
        b.copy_from_slice(bytes);
        u128::from_le_bytes(b)
    };
    match context {
        InitialVpContext::X64(c) => vec![
            (x64::RIP, c.rip.into()),
            (x64::RSP, c.rsp.into()),
            (x64::RFLAGS, c.rflags.into()),
            (x64::CS, wide(c.cs.as_bytes())),
            (x64::DS, wide(c.ds.as_bytes())),
            (x64::ES, wide(c.es.as_bytes())),
            (x64::FS, wide(c.fs.as_bytes())),
            (x64::GS, wide(c.gs.as_bytes())),
            (x64::SS, wide(c.ss.as_bytes())),
            (x64::TR, wide(c.tr.as_bytes())),
            (x64::LDTR, wide(c.ldtr.as_bytes())),
            (x64::IDTR, wide(c.idtr.as_bytes())),
            (x64::GDTR, wide(c.gdtr.as_bytes())),
            (x64::EFER, c.efer.into()),
            (x64::CR0, c.cr0.into()),
            (x64::CR3, c.cr3.into()),
            (x64::CR4, c.cr4.into()),
            (x64::PAT, c.msr_cr_pat.into()),
        ],
        InitialVpContext::Aarch64(c) => vec![
            (arm::XPC, c.pc.into()),
            (arm::CPSR, 0x3c5),
            (arm::XSP_ELX, c.sp_elh.into()),
            (arm::SCTLR_EL1, c.sctlr_el1.into()),
            (arm::MAIR_EL1, c.mair_el1.into()),
            (arm::TCR_EL1, c.tcr_el1.into()),
            (arm::VBAR_EL1, c.vbar_el1.into()),
            (arm::TTBR0_EL1, c.ttbr0_el1.into()),
            (arm::TTBR1_EL1, c.ttbr1_el1.into()),
            (arm::X18, c.x18.into()),
        ],
    }
}
