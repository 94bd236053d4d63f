//! VTL switches and the scripted lower VTL: a test queues VTL0 hypercalls; on each VtlReturn the
//! model completes the previous one (reading back what the paravisor left in VTL0's registers and
//! memory, or letting VTL0 take the exception the paravisor left pending) and hands the next to
//! the paravisor as a hypercall intercept.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use core::mem::offset_of;

use hvdef::aarch64::{
    reg as arm_reg, HvArm64HypercallInterceptMessage, HvArm64InterceptMessageHeader,
    HvArm64VpExecutionState, HVC_IMM_SMCCC, HVC_IMM_VTL_CALL, HVC_IMM_VTL_RETURN, INSTRUCTION_LEN,
    SMCCC_HV_FUNC_ID,
};
use hvdef::x86_64::{
    reg as x64_reg, HvX64HypercallInterceptMessage, HvX64InterceptMessageHeader,
    HvX64SegmentRegister, HvX64VpExecutionState, VMCALL_LEN,
};
use hvdef::{
    Control, HvHypercallInterceptFlags, HvInterceptAccessType, HvMessage, HvMessageType,
    HvPageRegister, HvRegisterName, HvRegisterVsmPartitionConfig, HvStatus, HvVpAssistPage,
    HvVpVtlControl, HvVtlEntryReason, HypercallCode, HypercallOutput, Vtl, HV_PAGE_SHIFT,
};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use super::aarch64::{arm64_shared, ARM64_GPRS};
use super::memory::{read_obj, write_obj};
use super::partition::{x64_mode_registers, ARM64_CPSR_EL0T, ARM64_CPSR_EL1H};
use super::trace::{Abi, Delivery, Event, HypercallRecord, Outcome};
use super::{Arch, Effects, Fault, GuestMemory, Model, X64HypercallRegs, X64_SHARED_GPRS};

/// One scripted lower-VTL hypercall: the state VTL0 is in when it issues it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vtl0Call {
    pub vp: u32,
    /// Lower-VTL registers set before delivery: the IP of the hypercall instruction, the control
    /// word, GPAs and fast input.
    pub registers: Vec<(HvRegisterName, u128)>,
    /// Guest memory written before delivery (input lists; VTL0 memory is guest memory).
    pub memory: Vec<(u64, Vec<u8>)>,
    /// Memory read back as the call's output when it completes.
    pub output: Option<(u64, usize)>,
    /// arm64: the `hvc` immediate the intercept reports (0 SMCCC, 1 legacy).
    pub immediate: u16,
    /// Instead of a hypercall, VTL0 hits an unrecoverable exception (an x64 triple fault) at
    /// the IP: see [`Vtl0Call::unrecoverable_exception`].
    pub unrecoverable: bool,
    /// Instead of a hypercall, VTL0 accesses memory at the IP: see [`Vtl0Call::access`].
    pub access: Option<Vtl0Access>,
    /// The access is the CPU's own while it delivers an exception or interrupt to VTL0 (an IDT,
    /// GDT, stack or vector-table read): the intercept's execution state says
    /// `interruption_pending`. See [`Vtl0Call::delivering_event`].
    pub delivering_event: bool,
}

/// A lower-VTL memory access, as a scripted VTL0 kernel (identity-mapped, so the address it uses
/// is the GPA) would make it with one instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vtl0Access {
    /// A load of `len` bytes; the result's `output` holds the bytes VTL0 got (none if stopped).
    Read { gpa: u64, len: usize },
    /// A store of these bytes.
    Write { gpa: u64, bytes: Vec<u8> },
    /// An instruction fetch: VTL0 jumps to `gpa` (the call's IP is `gpa`).
    Execute { gpa: u64 },
}

impl Vtl0Access {
    fn span(&self) -> (u64, u64, HvInterceptAccessType) {
        match self {
            Vtl0Access::Read { gpa, len } => (*gpa, *len as u64, HvInterceptAccessType::READ),
            Vtl0Access::Write { gpa, bytes } => {
                (*gpa, bytes.len() as u64, HvInterceptAccessType::WRITE)
            }
            Vtl0Access::Execute { gpa } => (*gpa, 1, HvInterceptAccessType::EXECUTE),
        }
    }
}

impl Vtl0Call {
    /// An x64 `vmcall` at `rip` with the control word in RCX and GPAs or fast input in RDX/R8,
    /// from a 64-bit kernel (CS and EFER say so, whatever an earlier call left in them).
    pub fn x64(rip: u64, control: Control, rdx: u64, r8: u64) -> Self {
        let mut registers = vec![
            (x64_reg::RIP, rip.into()),
            (x64_reg::RCX, control.into_bits().into()),
            (x64_reg::RDX, rdx.into()),
            (x64_reg::R8, r8.into()),
        ];
        registers.extend(x64_mode_registers(true));
        Self {
            vp: 0,
            registers,
            memory: Vec::new(),
            output: None,
            immediate: 0,
            unrecoverable: false,
            access: None,
            delivering_event: false,
        }
    }

    /// An arm64 SMCCC `hvc #0` at `pc`: X0 the Hyper-V function id, X1 the control word, X2/X3
    /// the GPAs or the start of the fast input; from an EL1 kernel (CPSR says so, whatever an
    /// earlier call left in it).
    pub fn arm64(pc: u64, control: Control, x2: u64, x3: u64) -> Self {
        Self {
            vp: 0,
            registers: vec![
                (arm_reg::XPC, pc.into()),
                (arm_reg::CPSR, ARM64_CPSR_EL1H.into()),
                (arm_reg::X0, SMCCC_HV_FUNC_ID.into()),
                (arm_reg::X1, control.into_bits().into()),
                (arm_reg::X2, x2.into()),
                (arm_reg::X3, x3.into()),
            ],
            memory: Vec::new(),
            output: None,
            immediate: HVC_IMM_SMCCC,
            unrecoverable: false,
            access: None,
            delivering_event: false,
        }
    }

    /// VTL0's kernel (x64 long mode at CPL0, arm64 EL1) makes one memory access with the
    /// instruction at `ip` (an instruction fetch is at its own address). The hypervisor carries
    /// it out unless VTL2 protected the page, and then VTL2 gets a GPA intercept and VTL0 waits
    /// for what the paravisor makes of it. A completed access moves the IP past an instruction
    /// of the ISA's hypercall-instruction length (3 / 4 bytes, e.g. `mov rax, [rcx]`).
    pub fn access(arch: Arch, ip: u64, access: Vtl0Access) -> Self {
        let ip = match access {
            Vtl0Access::Execute { gpa } => gpa,
            _ => ip,
        };
        let mut call = match arch {
            Arch::X86_64 => Self::x64(ip, Control::new(), 0, 0),
            Arch::Aarch64 => Self::arm64(ip, Control::new(), 0, 0),
        };
        call.access = Some(access);
        call
    }

    /// x64: the call comes from 32-bit protected mode (a 32-bit code segment, EFER.LMA clear)
    /// instead of long mode. The later registers win, so this overrides [`Vtl0Call::x64`]'s.
    pub fn in_32bit_mode(mut self) -> Self {
        self.registers.extend(x64_mode_registers(false));
        self
    }

    /// arm64: the call comes from EL0 instead of an EL1 kernel.
    pub fn at_el0(mut self) -> Self {
        self.registers.push((arm_reg::CPSR, ARM64_CPSR_EL0T.into()));
        self
    }

    /// arm64: the intercept reports `hvc #imm` (0 SMCCC, 1 legacy, 2 VTL call, 3 VTL return).
    pub fn with_immediate(mut self, imm: u16) -> Self {
        self.immediate = imm;
        self
    }

    /// VTL0 takes an exception it cannot deliver (a triple fault). With VTL2's VsmPartitionConfig
    /// `intercept_unrecoverable_exception` set the hypervisor hands VTL2 an
    /// `HvMessageTypeUnrecoverableException` intercept with the ISA's intercept header (OpenVMM
    /// hvdef; OpenHCL sets the bit for hypervisor-backed VMs); without it the partition would
    /// reset, which the model records as a `PartitionReset` event and ends the script.
    pub fn unrecoverable_exception(mut self) -> Self {
        self.unrecoverable = true;
        self
    }

    /// The access happens while VTL0 is taking an exception or interrupt (its IDT, stack or
    /// vector table lies on the page): a fault injected for it would fault the same way again.
    pub fn delivering_event(mut self) -> Self {
        self.delivering_event = true;
        self
    }

    pub fn on_vp(mut self, vp: u32) -> Self {
        self.vp = vp;
        self
    }

    pub fn with_register(mut self, name: HvRegisterName, value: u128) -> Self {
        self.registers.push((name, value));
        self
    }

    pub fn with_memory(mut self, gpa: u64, bytes: &[u8]) -> Self {
        self.memory.push((gpa, bytes.to_vec()));
        self
    }

    pub fn with_output(mut self, gpa: u64, len: usize) -> Self {
        self.output = Some((gpa, len));
        self
    }
}

/// What VTL0 saw when the paravisor returned to it after one delivery of a scripted call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vtl0Result {
    pub vp: u32,
    /// The call's position in push order.
    pub index: usize,
    /// 0 for the first delivery, n for the nth re-execution (IP left on the instruction).
    pub attempt: u32,
    pub vtl: Vtl,
    pub ip_before: u64,
    pub ip_after: u64,
    pub instruction_len: u64,
    /// RAX / X0: the hypercall result value.
    pub result: u64,
    /// The lower VTL's whole register file (live mode: only HvRegisterPendingEvent0/1, the
    /// rest is in the CPU).
    pub registers: BTreeMap<HvRegisterName, u128>,
    /// The `output` range of the call, read back from memory by the mock (whatever the VTL is
    /// allowed: tests use it to look at memory, VTL2's included, after the call); for a
    /// [`Vtl0Access::Read`], the bytes the load gave VTL0 (none if it was stopped).
    pub output: Vec<u8>,
    /// The hypervisor handed this delivery to VTL2 (a hypercall intercept, or a VTL call into
    /// it). False: the hypervisor served it for VTL0 itself and VTL2 never saw it.
    pub reached_vtl2: bool,
    /// The hypervisor itself raised this exception for the call (TLFS: a hypercall from CPL > 0
    /// or EL0, or VtlReturn from the lowest VTL, is #UD / an undefined-instruction exception).
    pub hypervisor_fault: Option<Fault>,
}

impl Vtl0Result {
    pub fn output_value(&self) -> HypercallOutput {
        HypercallOutput::from_bits(self.result)
    }

    pub fn status(&self) -> HvStatus {
        self.output_value().status()
    }

    /// Whether the paravisor moved the IP past the hypercall instruction (completed it) rather
    /// than leaving it for re-execution. Never with an exception pending: the call faulted.
    pub fn advanced(&self) -> bool {
        self.pending_event().is_none()
            && self.hypervisor_fault.is_none()
            && self.ip_after == self.ip_before.wrapping_add(self.instruction_len)
    }

    /// The HvRegisterPendingEvent0 value the paravisor left for VTL0 (an exception instead of a
    /// result), if its event_pending bit (bit 0 on both ISAs) is set. VTL0 took it instead of
    /// going on, so the call was not re-delivered.
    pub fn pending_event(&self) -> Option<u128> {
        let event = self.register(HvRegisterName::PENDING_EVENT0);
        (event & 1 != 0).then_some(event)
    }

    pub fn register(&self, name: HvRegisterName) -> u128 {
        self.registers.get(&name).copied().unwrap_or(0)
    }
}

#[derive(Clone, Debug)]
struct InFlight {
    index: usize,
    call: Vtl0Call,
    attempt: u32,
    ip: u64,
    vtl: Vtl,
    reached_vtl2: bool,
    hypervisor_fault: Option<Fault>,
    /// The bytes a scripted load got.
    loaded: Vec<u8>,
}

/// What the hypervisor did with the lower VTL's current call.
enum LowerCall {
    /// Served for the lower VTL (completed, faulted, or left on its instruction to run again)
    /// without entering VTL2.
    Served,
    /// Handed to VTL2 as an `HvMessageTypeHypercallIntercept`.
    Reflected,
    /// A VTL call: VTL2 is entered with entry reason VTL_CALL.
    VtlCall,
    /// An unrecoverable exception (see [`Vtl0Call::unrecoverable_exception`]).
    Unrecoverable,
    /// An access (direct, or by the hypervisor for a hypercall's parameters) to a page VTL2
    /// protected: not carried out, VTL2 gets a GPA intercept.
    Protected {
        gpa: u64,
        access: HvInterceptAccessType,
    },
}

/// The queue of scripted lower-VTL hypercalls (per VP) and their results.
#[derive(Clone, Debug, Default)]
pub struct Vtl0Script {
    queues: BTreeMap<u32, VecDeque<(usize, Vtl0Call)>>,
    pushed: usize,
    in_flight: BTreeMap<u32, InFlight>,
    results: Vec<Vtl0Result>,
    /// The lower VTL is real code run by the glue (see [`Vtl0Script::set_live`]).
    live: bool,
    /// Live mode: per VP, the result of its last exit, until the glue takes it.
    live_results: BTreeMap<u32, Vtl0Result>,
}

impl Vtl0Script {
    /// Queues a call for its VP; returns its index.
    pub fn push(&mut self, call: Vtl0Call) -> usize {
        let index = self.pushed;
        self.pushed += 1;
        self.queues
            .entry(call.vp)
            .or_default()
            .push_back((index, call));
        index
    }

    /// Calls not yet delivered on `vp`.
    pub fn pending(&self, vp: u32) -> usize {
        self.queues.get(&vp).map_or(0, VecDeque::len)
    }

    /// The call delivered on `vp` that the paravisor has not returned from yet.
    pub fn in_flight(&self, vp: u32) -> Option<&Vtl0Call> {
        self.in_flight.get(&vp).map(|f| &f.call)
    }

    pub fn results(&self) -> &[Vtl0Result] {
        &self.results
    }

    /// Live mode: the lower VTL is real code the glue runs (an in-VM host), not this script.
    /// A VtlReturn with nothing queued then lets it run (`Effects::lower_runs`) instead of
    /// finishing, each of its exits comes in through [`Model::lower_exit`], and a call it
    /// re-executes is its own doing (the model re-delivers nothing). Results are not kept in
    /// [`Vtl0Script::results`] (a live VTL0 makes calls without end) but one per VP, for
    /// [`Vtl0Script::take_live_result`].
    pub fn set_live(&mut self, live: bool) {
        self.live = live;
    }

    pub fn live(&self) -> bool {
        self.live
    }

    /// Live mode: what the hypervisor and VTL2 made of `vp`'s last exit: the glue delivers
    /// its `pending_event()` or `hypervisor_fault` to the lower VTL before resuming it.
    pub fn take_live_result(&mut self, vp: u32) -> Option<Vtl0Result> {
        self.live_results.remove(&vp)
    }
}

/// What a live lower VTL did that exited to the hypervisor (see [`Model::lower_exit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LowerExit {
    /// A hypercall instruction (x64 `vmcall`/`vmmcall`; arm64 `hvc #immediate`).
    Hypercall { immediate: u16 },
    /// A load, store or fetch of `len` bytes at `gpa` that the second-level tables stopped.
    Access {
        gpa: u64,
        len: u64,
        access: HvInterceptAccessType,
        /// The CPU made the access while it delivered an exception or interrupt to the lower
        /// VTL (its IDT, GDT or stack on the page; x64: EXITINTINFO valid on the nested page
        /// fault, AMD APM vol. 2 15.7.2): the intercept's execution state says
        /// `interruption_pending`, as for a scripted [`Vtl0Call::delivering_event`].
        delivering_event: bool,
    },
    /// An exception the lower VTL cannot deliver (x64: the shutdown exit of a triple fault):
    /// handled as a scripted [`Vtl0Call::unrecoverable_exception`], a partition reset unless
    /// VTL2's VsmPartitionConfig `intercept_unrecoverable_exception` hands it to VTL2.
    Unrecoverable,
}

/// Why [`Model::lower_exit`] could not take an exit: a glue bug, never guest behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveError {
    /// The script is not in live mode.
    NotLive,
    NoSuchVp(u32),
    /// The VP runs in this VTL, which has no higher VTL to hand anything to.
    NotInLowerVtl(Vtl),
    /// Scripted calls are queued or in flight on this VP.
    ScriptPending(u32),
    /// The model allows this access: the glue's second-level tables should not have stopped it.
    AccessAllowed {
        gpa: u64,
        access: HvInterceptAccessType,
    },
}

/// The caller's registers at a VTL switch.
pub enum SwitchRegs<'a> {
    X64(&'a mut X64HypercallRegs),
    /// X0..X30 by number; which are shared is [`arm64_shared`].
    Aarch64(&'a mut [u64; ARM64_GPRS]),
}

fn xmm(n: u32) -> HvRegisterName {
    HvRegisterName(x64_reg::XMM0.0 + n)
}

fn x(n: usize) -> HvRegisterName {
    HvRegisterName(arm_reg::X0.0 + n as u32)
}

impl Model {
    /// HvCallVtlCall: to the next higher enabled VTL; none (the paravisor's VTL2 is the top) or
    /// an invalid control is #UD. The model runs no VTL above the paravisor, so a call into one
    /// returns at once.
    pub(crate) fn vtl_call(&mut self, vp: u32, abi: Abi, control: u64, valid: bool) -> Effects {
        let vtl = self.vp(vp).active_vtl;
        let switch = valid && self.vp(vp).higher_vtl(vtl).is_some();
        let (effects, outcome) = if switch {
            (Effects::advance(), Outcome::VtlSwitch { finished: false })
        } else {
            (Effects::fault(Fault::Ud), Outcome::Fault(Fault::Ud))
        };
        self.trace_switch(vp, vtl, abi, HypercallCode::VTL_CALL, control, outcome);
        effects
    }

    /// HvCallVtlReturn to the highest enabled lower VTL (#UD from the lowest one or with an
    /// invalid control). Applies the return state, completes the call VTL0 was in, and delivers
    /// the next scripted call as an intercept so that the return "returns" into the paravisor;
    /// with the script empty the run is finished.
    #[expect(clippy::too_many_arguments)]
    pub(crate) fn vtl_return(
        &mut self,
        vp: u32,
        abi: Abi,
        control: u64,
        valid: bool,
        fast: bool,
        mut regs: SwitchRegs<'_>,
        mem: &mut dyn GuestMemory,
    ) -> Effects {
        let vtl = self.vp(vp).active_vtl;
        let Some(lower) = self.vp(vp).lower_vtl(vtl).filter(|_| valid) else {
            let outcome = Outcome::Fault(Fault::Ud);
            self.trace_switch(vp, vtl, abi, HypercallCode::VTL_RETURN, control, outcome);
            return Effects::fault(Fault::Ud);
        };
        self.apply_return_state(vp, vtl, lower, fast, &regs, mem);
        if self.scenario.arch == Arch::X86_64 {
            self.take_register_page(vp, vtl, lower, mem);
        }
        let mut effects = Effects::default();
        // TLFS vsm.md "Interrupt Masking and VTL Switches": returning to a lower VTL with
        // interrupts pending for the higher one calls straight back into it (entry reason
        // INTERRUPT); the lower VTL does not run. The model takes VTL2's TPR / priority mask as 0.
        if let Some(&vector) = self.vp(vp).file(vtl).pending_interrupts.first() {
            self.write_entry_reason(vp, vtl, HvVtlEntryReason::INTERRUPT, mem);
            self.trace.push(Event::PendingInterrupt { vp, vtl, vector });
            self.resume(vp, vtl, lower, &mut regs);
            effects.advance_ip = true;
            let outcome = Outcome::VtlSwitch { finished: false };
            self.trace_switch(vp, vtl, abi, HypercallCode::VTL_RETURN, control, outcome);
            return effects;
        }
        self.run_lower(vp, vtl, lower, &mut regs, mem, &mut effects);
        let outcome = Outcome::VtlSwitch {
            finished: effects.finished,
        };
        self.trace_switch(vp, vtl, abi, HypercallCode::VTL_RETURN, control, outcome);
        effects
    }

    /// A live lower VTL (see [`Vtl0Script::set_live`]) exited to the hypervisor on `vp`: the
    /// glue has written its registers into the model ([`Model::set_vp_state`]; the IP at the
    /// instruction that exited). The model serves the exit as it serves a scripted call: for
    /// the lower VTL itself (then `lower_runs`: the glue resumes it from the model's registers,
    /// taking [`Vtl0Script::take_live_result`] for an exception to deliver first), or by
    /// entering VTL2 (an intercept, a VTL call), whose registers `regs` then hold. No trace
    /// record of its own: the calls it makes are traced as they are served.
    pub fn lower_exit(
        &mut self,
        vp: u32,
        exit: LowerExit,
        mut regs: SwitchRegs<'_>,
        mem: &mut dyn GuestMemory,
    ) -> Result<Effects, LiveError> {
        if !self.vtl0.live {
            return Err(LiveError::NotLive);
        }
        if !self.valid_vp(vp) {
            return Err(LiveError::NoSuchVp(vp));
        }
        let lower = self.vp(vp).active_vtl;
        let Some(vtl) = self.vp(vp).higher_vtl(lower) else {
            return Err(LiveError::NotInLowerVtl(lower));
        };
        if self.vtl0.pending(vp) != 0 || self.vtl0.in_flight.contains_key(&vp) {
            return Err(LiveError::ScriptPending(vp));
        }
        let (immediate, access, delivering_event, unrecoverable) = match exit {
            LowerExit::Hypercall { immediate } => (immediate, None, false, false),
            LowerExit::Unrecoverable => (0, None, false, true),
            LowerExit::Access {
                gpa,
                len,
                access,
                delivering_event,
            } => {
                // Only what VTL2 forbade reaches the hypervisor: the glue's tables let the rest
                // through, so an allowed access here means they disagree with the model.
                if self.denied(lower, gpa, len.max(1), access).is_none() {
                    return Err(LiveError::AccessAllowed { gpa, access });
                }
                let access = match access {
                    HvInterceptAccessType::READ => Vtl0Access::Read {
                        gpa,
                        len: len as usize,
                    },
                    HvInterceptAccessType::WRITE => Vtl0Access::Write {
                        gpa,
                        bytes: vec![0; len as usize],
                    },
                    _ => Vtl0Access::Execute { gpa },
                };
                (0, Some(access), delivering_event, false)
            }
        };
        let call = Vtl0Call {
            vp,
            registers: Vec::new(),
            memory: Vec::new(),
            output: None,
            immediate,
            unrecoverable,
            access,
            delivering_event,
        };
        self.vtl0.push(call);
        self.vp_mut(vp).active_vtl = vtl;
        let mut effects = Effects::default();
        self.run_lower(vp, vtl, lower, &mut regs, mem, &mut effects);
        Ok(effects)
    }

    /// The lower VTL runs (its script, or for real when live) until the hypervisor hands
    /// something to `vtl`, which then resumes with `regs`; or until the script is done.
    fn run_lower(
        &mut self,
        vp: u32,
        vtl: Vtl,
        lower: Vtl,
        regs: &mut SwitchRegs<'_>,
        mem: &mut dyn GuestMemory,
        effects: &mut Effects,
    ) {
        // The lower VTL runs its script; each call is the hypervisor's to serve unless it is one
        // Hyper-V hands to VTL2. The loop ends: every call is served a bounded number of times
        // (`vtl0_retries`) and the script is finite.
        loop {
            if !self.next_lower_call(vp, lower, mem) {
                if self.vtl0.live {
                    // The real lower VTL runs on from where the model left it.
                    self.vp_mut(vp).active_vtl = lower;
                    effects.lower_runs = true;
                } else {
                    effects.finished = true;
                }
                break;
            }
            match self.run_lower_call(vp, vtl, lower, mem) {
                LowerCall::Served => continue,
                LowerCall::Reflected => self.deliver_intercept(vp, vtl, lower, mem, effects),
                LowerCall::VtlCall => self.deliver_vtl_call(vp, vtl, lower, mem),
                LowerCall::Protected { gpa, access } => {
                    let message = self.memory_intercept_message(vp, lower, gpa, access);
                    self.deliver_message(vp, vtl, lower, message, mem, effects);
                }
                LowerCall::Unrecoverable => {
                    let config = HvRegisterVsmPartitionConfig::from_bits(
                        self.partition.vtls[vtl.get() as usize].vsm_config,
                    );
                    if !config.intercept_unrecoverable_exception() {
                        self.trace.push(Event::PartitionReset { vp });
                        // A live lower VTL's partition stays live: its glue ends the run.
                        let live = self.vtl0.live;
                        self.vtl0 = Vtl0Script::default();
                        self.vtl0.live = live;
                        effects.finished = true;
                        break;
                    }
                    let mut message = self.intercept_message(vp, lower);
                    message.header.message_type = HvMessageType::UNRECOVERABLE_EXCEPTION;
                    // The common intercept header only (x64 0x28, arm64 0x18 bytes).
                    let header = match self.scenario.arch {
                        Arch::X86_64 => size_of::<HvX64InterceptMessageHeader>(),
                        Arch::Aarch64 => size_of::<HvArm64InterceptMessageHeader>(),
                    };
                    message.payload_bytes_mut()[header..].fill(0);
                    message.header.payload_size = header as u8;
                    self.deliver_message(vp, vtl, lower, message, mem, effects);
                }
            }
            if let Some(f) = self.vtl0.in_flight.get_mut(&vp) {
                f.reached_vtl2 = true;
            }
            self.resume(vp, vtl, lower, regs);
            effects.advance_ip = true;
            break;
        }
    }

    /// A VTL call or return of `vp`'s `caller` VTL (the VP may be in another one by now).
    fn trace_switch(
        &mut self,
        vp: u32,
        caller: Vtl,
        abi: Abi,
        code: HypercallCode,
        control: u64,
        outcome: Outcome,
    ) {
        self.trace.push(Event::Hypercall(HypercallRecord {
            vp,
            vtl: caller,
            abi,
            code,
            control,
            input_gpa: 0,
            output_gpa: 0,
            input: Vec::new(),
            output: Vec::new(),
            outcome,
        }));
    }

    /// The shared registers (TLFS vsm.md "Shared State"; x64 every GPR but RSP, and CR2; arm64
    /// X0-X17 and X19-X28) hold what the caller left in them, so the lower VTL gets the caller's.
    /// x64: except RAX/RCX, which the stubs clobber: on a non-fast return they come from the
    /// assist page's `vtl_control`; on a fast one the model leaves the lower VTL's as they were.
    /// arm64: the private X18, X29 and X30 are the caller's own, kept in its file and handed back
    /// at [`Model::resume`]; VTL0's stay as they were.
    fn apply_return_state(
        &mut self,
        vp: u32,
        vtl: Vtl,
        lower: Vtl,
        fast: bool,
        regs: &SwitchRegs<'_>,
        mem: &mut dyn GuestMemory,
    ) {
        match regs {
            SwitchRegs::X64(r) => {
                let file = self.vp_mut(vp).file_mut(lower);
                for ((_, name), value) in X64_SHARED_GPRS.iter().zip(r.gprs()) {
                    if ![x64_reg::RAX, x64_reg::RCX].contains(name) {
                        file.set(*name, value.into());
                    }
                }
                file.set(x64_reg::CR2, r.cr2.into());
                if fast {
                    return;
                }
                let page = HvPageRegister::from_bits(self.vp(vp).file(vtl).assist_page);
                if !page.enable() {
                    return;
                }
                let gpa = (page.gpa_page_number() << HV_PAGE_SHIFT)
                    + offset_of!(HvVpAssistPage, vtl_control) as u64;
                if let Ok(control) = read_obj::<HvVpVtlControl>(mem, gpa) {
                    let file = self.vp_mut(vp).file_mut(lower);
                    file.set(x64_reg::RAX, control.return_rax.into());
                    file.set(x64_reg::RCX, control.return_rcx.into());
                }
            }
            SwitchRegs::Aarch64(x) => {
                let fp_lr_shared = self.scenario.arm64_fp_lr_shared;
                for (n, value) in x.iter().enumerate() {
                    let owner = if arm64_shared(n, fp_lr_shared) {
                        lower
                    } else {
                        vtl
                    };
                    self.vp_mut(vp)
                        .file_mut(owner)
                        .set(self::x(n), (*value).into());
                }
            }
        }
    }

    fn ip_register(&self) -> (HvRegisterName, u64) {
        match self.scenario.arch {
            Arch::X86_64 => (x64_reg::RIP, VMCALL_LEN),
            Arch::Aarch64 => (arm_reg::XPC, INSTRUCTION_LEN),
        }
    }

    /// Completes the in-flight call (recording a result) and makes the next one current: the
    /// same call again if the paravisor left the IP on it without an exception pending, else
    /// the next queued. False when there is nothing left to run.
    ///
    /// A pending event means the paravisor raised an exception (a fault: the IP stays on the
    /// call): VTL0 takes it, which consumes the event, and the scripted VTL0 moves on rather
    /// than re-executing the call.
    fn next_lower_call(&mut self, vp: u32, lower: Vtl, mem: &mut dyn GuestMemory) -> bool {
        let (ip_name, instruction_len) = self.ip_register();
        let result_name = match self.scenario.arch {
            Arch::X86_64 => x64_reg::RAX,
            Arch::Aarch64 => arm_reg::X0,
        };
        if let Some(done) = self.vtl0.in_flight.remove(&vp) {
            let file = self.vp(vp).file(done.vtl);
            let ip_after = file.reg64(ip_name);
            let output = if done.call.access.is_some() {
                done.loaded.clone()
            } else {
                done.call.output.map_or_else(Vec::new, |(gpa, len)| {
                    let mut bytes = vec![0; len];
                    mem.read(gpa, &mut bytes)
                        .map_or_else(|_| Vec::new(), |()| bytes)
                })
            };
            let result = Vtl0Result {
                vp,
                index: done.index,
                attempt: done.attempt,
                vtl: done.vtl,
                ip_before: done.ip,
                ip_after,
                instruction_len,
                result: file.reg64(result_name),
                // A live lower VTL's registers are the CPU's: its result needs only the
                // pending event (a copy of the whole file per call is what a live run would
                // spend its time on).
                registers: if self.vtl0.live {
                    [
                        HvRegisterName::PENDING_EVENT0,
                        HvRegisterName::PENDING_EVENT1,
                    ]
                    .into_iter()
                    .map(|name| (name, file.reg(name)))
                    .collect()
                } else {
                    file.regs.to_map()
                },
                output,
                reached_vtl2: done.reached_vtl2,
                hypervisor_fault: done.hypervisor_fault,
            };
            let faulted = result.pending_event().is_some() || done.hypervisor_fault.is_some();
            if self.vtl0.live {
                self.vtl0.live_results.insert(vp, result);
            } else {
                self.vtl0.results.push(result);
            }
            if faulted {
                let file = self.vp_mut(vp).file_mut(done.vtl);
                file.set(HvRegisterName::PENDING_EVENT0, 0);
                file.set(HvRegisterName::PENDING_EVENT1, 0);
            } else if !self.vtl0.live
                && ip_after == done.ip
                && done.attempt < self.scenario.limits.vtl0_retries
            {
                self.vtl0.in_flight.insert(
                    vp,
                    InFlight {
                        attempt: done.attempt + 1,
                        reached_vtl2: false,
                        hypervisor_fault: None,
                        loaded: Vec::new(),
                        ..done
                    },
                );
                return true;
            }
        }
        let Some((index, call)) = self.vtl0.queues.get_mut(&vp).and_then(VecDeque::pop_front)
        else {
            return false;
        };
        let file = self.vp_mut(vp).file_mut(lower);
        for &(name, value) in &call.registers {
            file.set(name, value);
        }
        let ip = file.reg64(ip_name);
        for (gpa, bytes) in &call.memory {
            // VTL0 writes its inputs like any store: never onto a page VTL2 protected.
            if let Some(at) = self.denied(
                lower,
                *gpa,
                bytes.len() as u64,
                HvInterceptAccessType::WRITE,
            ) {
                self.trace.push(Event::Vtl0Access {
                    vp,
                    gpa: at,
                    access: HvInterceptAccessType::WRITE,
                    allowed: false,
                });
                continue;
            }
            // Unbacked script memory shows up as the paravisor failing to read it.
            let _ = mem.write(*gpa, bytes);
        }
        self.vtl0.in_flight.insert(
            vp,
            InFlight {
                index,
                call,
                attempt: 0,
                ip,
                vtl: lower,
                reached_vtl2: false,
                hypervisor_fault: None,
                loaded: Vec::new(),
            },
        );
        true
    }

    /// The lower VTL executes its current call's instruction; the hypervisor either serves it
    /// (writing the result into the lower VTL's registers as it would for any guest) or hands it
    /// to VTL2. Which calls reach VTL2 (fact sheet §2): VtlCall enters the next higher VTL; a
    /// PostMessage/SignalEvent to an unknown connection or a RetargetDeviceInterrupt for an
    /// unknown device is reflected when VTL2 installed the matching intercept (the handlers
    /// decide, see `reflect_to_vtl2`); codes in `Scenario::reflected_codes` always are. The
    /// rest runs through the same dispatcher as VTL2's calls, with VTL0 as the caller.
    fn run_lower_call(
        &mut self,
        vp: u32,
        vtl: Vtl,
        lower: Vtl,
        mem: &mut dyn GuestMemory,
    ) -> LowerCall {
        let immediate = self.vtl0.in_flight.get(&vp).map_or(0, |f| f.call.immediate);
        if self
            .vtl0
            .in_flight
            .get(&vp)
            .is_some_and(|f| f.call.unrecoverable)
        {
            return LowerCall::Unrecoverable;
        }
        if let Some(access) = self
            .vtl0
            .in_flight
            .get(&vp)
            .and_then(|f| f.call.access.clone())
        {
            return self.lower_access(vp, lower, &access, mem);
        }
        let file = self.vp(vp).file(lower);
        let (ip_name, len) = self.ip_register();
        // TLFS hypercall-interface.md: hypercalls are legal only at CPL0 in protected or long
        // mode (x64) and at EL1 (arm64); otherwise #UD / an undefined-instruction exception.
        let (legal, code, long_mode) = match self.scenario.arch {
            Arch::X86_64 => {
                let cs =
                    HvX64SegmentRegister::read_from_bytes(&file.reg(x64_reg::CS).to_le_bytes())
                        .unwrap_or_default();
                // CS.L is attribute bit 13, EFER.LMA bit 10, CR0.PE bit 0.
                let long =
                    cs.attributes & (1 << 13) != 0 && file.reg64(x64_reg::EFER) & (1 << 10) != 0;
                let protected = file.reg64(x64_reg::CR0) & 1 != 0;
                let control = if long {
                    file.reg64(x64_reg::RCX)
                } else {
                    file.reg64(x64_reg::RAX)
                };
                (cs.selector & 3 == 0 && protected, control as u16, long)
            }
            Arch::Aarch64 => {
                let el = (file.reg64(arm_reg::CPSR) >> 2) & 3;
                let code = match immediate {
                    HVC_IMM_SMCCC => file.reg64(arm_reg::X1) as u16,
                    HVC_IMM_VTL_CALL => HypercallCode::VTL_CALL.0,
                    HVC_IMM_VTL_RETURN => HypercallCode::VTL_RETURN.0,
                    _ => file.reg64(arm_reg::X0) as u16,
                };
                (el == 1, code, true)
            }
        };
        let code = HypercallCode(code);
        let smccc_other = self.scenario.arch == Arch::Aarch64
            && immediate == HVC_IMM_SMCCC
            && file.reg64(arm_reg::X0) as u32 != SMCCC_HV_FUNC_ID;
        if !legal {
            self.hypervisor_fault(vp, Fault::Ud);
            return LowerCall::Served;
        }
        if !smccc_other && self.scenario.reflected_codes.contains(&code) {
            return LowerCall::Reflected;
        }
        // The VTL call entry: x64 the VtlCall code in the control register; arm64 `hvc #2`
        // only (TLFS vsm.md: arm64 switches VTLs by immediate; the VtlCall code through SMCCC
        // is a code like any other, which the hypervisor does not implement).
        let vtl_call = match self.scenario.arch {
            Arch::X86_64 => code == HypercallCode::VTL_CALL,
            Arch::Aarch64 => immediate == HVC_IMM_VTL_CALL,
        };
        if vtl_call && long_mode && self.scenario.arch == Arch::X86_64 {
            // As for VTL2's own VtlCall (`Model::vmcall`): RCX exactly the code and RAX (the
            // VTL control) 0, else #UD, raised before any VTL is entered.
            let (rcx, rax) = (file.reg64(x64_reg::RCX), file.reg64(x64_reg::RAX));
            if rcx != u64::from(HypercallCode::VTL_CALL.0) || rax != 0 {
                self.vp_mut(vp).active_vtl = lower;
                let effects = self.vtl_call(vp, Abi::X64, rax, false);
                self.vp_mut(vp).active_vtl = vtl;
                if let Some(fault) = effects.fault {
                    self.hypervisor_fault(vp, fault);
                }
                return LowerCall::Served;
            }
        }
        if vtl_call {
            // Into the next higher enabled VTL; it returns to the instruction after the call.
            let ip = file.reg64(ip_name);
            self.vp_mut(vp)
                .file_mut(lower)
                .set(ip_name, ip.wrapping_add(len).into());
            return LowerCall::VtlCall;
        }
        self.vp_mut(vp).active_vtl = lower;
        let effects = match self.scenario.arch {
            Arch::X86_64 if long_mode => {
                let mut regs = X64HypercallRegs::default();
                let file = self.vp(vp).file(lower);
                for ((_, name), value) in X64_SHARED_GPRS.iter().zip(regs.gprs_mut()) {
                    *value = file.reg64(*name);
                }
                for (n, value) in regs.xmm.iter_mut().enumerate() {
                    *value = file.reg(xmm(n as u32));
                }
                let effects = self.vmcall(vp, &mut regs, mem);
                if !effects.reflect && effects.memory_intercept.is_none() {
                    let file = self.vp_mut(vp).file_mut(lower);
                    for ((_, name), value) in X64_SHARED_GPRS.iter().zip(regs.gprs()) {
                        file.set(*name, value.into());
                    }
                    for (n, value) in regs.xmm.iter().enumerate() {
                        file.set(xmm(n as u32), *value);
                    }
                }
                effects
            }
            Arch::X86_64 => self.vmcall32(vp, lower, mem),
            Arch::Aarch64 => {
                let file = self.vp(vp).file(lower);
                let mut x: [u64; ARM64_GPRS] = core::array::from_fn(|n| file.reg64(self::x(n)));
                let effects = self.hvc(vp, immediate, &mut x, mem);
                if !effects.reflect && effects.memory_intercept.is_none() {
                    let file = self.vp_mut(vp).file_mut(lower);
                    for (n, value) in x.iter().enumerate() {
                        file.set(self::x(n), (*value).into());
                    }
                }
                effects
            }
        };
        self.vp_mut(vp).active_vtl = vtl;
        if effects.reflect {
            return LowerCall::Reflected;
        }
        if let Some((gpa, access)) = effects.memory_intercept {
            return LowerCall::Protected { gpa, access };
        }
        if let Some(fault) = effects.fault {
            self.hypervisor_fault(vp, fault);
        } else if effects.advance_ip {
            let file = self.vp_mut(vp).file_mut(lower);
            let ip = file.reg64(ip_name);
            file.set(ip_name, ip.wrapping_add(len).into());
        }
        LowerCall::Served
    }

    /// A scripted load, store or fetch: stopped if VTL2 protected the page, else carried out on
    /// guest memory with the IP moved past the instruction.
    fn lower_access(
        &mut self,
        vp: u32,
        lower: Vtl,
        access: &Vtl0Access,
        mem: &mut dyn GuestMemory,
    ) -> LowerCall {
        let (gpa, len, kind) = access.span();
        if let Some(at) = self.denied(lower, gpa, len, kind) {
            self.trace.push(Event::Vtl0Access {
                vp,
                gpa: at,
                access: kind,
                allowed: false,
            });
            return LowerCall::Protected {
                gpa: at,
                access: kind,
            };
        }
        match access {
            Vtl0Access::Read { len, .. } => {
                let mut bytes = vec![0; *len];
                // Unbacked memory reads as nothing, like a script's unbacked output.
                let loaded = mem
                    .read(gpa, &mut bytes)
                    .map_or_else(|_| Vec::new(), |()| bytes);
                if let Some(f) = self.vtl0.in_flight.get_mut(&vp) {
                    f.loaded = loaded;
                }
            }
            Vtl0Access::Write { bytes, .. } => {
                let _ = mem.write(gpa, bytes);
            }
            Vtl0Access::Execute { .. } => {}
        }
        self.trace.push(Event::Vtl0Access {
            vp,
            gpa,
            access: kind,
            allowed: true,
        });
        let (ip_name, len) = self.ip_register();
        let file = self.vp_mut(vp).file_mut(lower);
        let ip = file.reg64(ip_name);
        file.set(ip_name, ip.wrapping_add(len).into());
        LowerCall::Served
    }

    fn hypervisor_fault(&mut self, vp: u32, fault: Fault) {
        if let Some(f) = self.vtl0.in_flight.get_mut(&vp) {
            f.hypervisor_fault = Some(fault);
        }
    }

    /// A lower VTL's VTL call: VTL2 runs with entry reason VTL_CALL and no message.
    fn deliver_vtl_call(&mut self, vp: u32, vtl: Vtl, lower: Vtl, mem: &mut dyn GuestMemory) {
        self.write_entry_reason(vp, vtl, HvVtlEntryReason::VTL_CALL, mem);
        self.trace.push(Event::LowerVtlCall { vp, vtl: lower });
    }

    /// `vtl`'s VP assist page `vtl_control.entry_reason`, if it has the page.
    fn write_entry_reason(
        &mut self,
        vp: u32,
        vtl: Vtl,
        reason: HvVtlEntryReason,
        mem: &mut dyn GuestMemory,
    ) {
        let page = HvPageRegister::from_bits(self.vp(vp).file(vtl).assist_page);
        if page.enable() {
            let gpa = (page.gpa_page_number() << HV_PAGE_SHIFT)
                + (offset_of!(HvVpAssistPage, vtl_control)
                    + offset_of!(HvVpVtlControl, entry_reason)) as u64;
            let _ = write_obj(mem, gpa, &reason);
        }
    }

    /// Through the assist page (entry reason INTERCEPT) when the paravisor turned on the
    /// intercept page and has an assist page, else into its SINT0 slot, which enters it through
    /// an interrupt (entry reason INTERRUPT).
    fn deliver_intercept(
        &mut self,
        vp: u32,
        vtl: Vtl,
        lower: Vtl,
        mem: &mut dyn GuestMemory,
        effects: &mut Effects,
    ) {
        let message = self.intercept_message(vp, lower);
        self.deliver_message(vp, vtl, lower, message, mem, effects);
    }

    /// Hands `message` (an intercept of `lower`) to `vtl` the way `deliver_intercept` says.
    fn deliver_message(
        &mut self,
        vp: u32,
        vtl: Vtl,
        lower: Vtl,
        message: HvMessage,
        mem: &mut dyn GuestMemory,
        effects: &mut Effects,
    ) {
        let page = HvPageRegister::from_bits(self.vp(vp).file(vtl).assist_page);
        let config = HvRegisterVsmPartitionConfig::from_bits(
            self.partition.vtls[vtl.get() as usize].vsm_config,
        );
        let base = page.gpa_page_number() << HV_PAGE_SHIFT;
        let reason_gpa = base
            + (offset_of!(HvVpAssistPage, vtl_control) + offset_of!(HvVpVtlControl, entry_reason))
                as u64;
        let via_page = config.intercept_page()
            && page.enable()
            && self.scenario.vsm_capabilities.intercept_page_available();
        if self.scenario.arch == Arch::X86_64 {
            self.fill_register_page(vp, vtl, lower, mem);
        }
        let delivery = if via_page {
            let at = base + offset_of!(HvVpAssistPage, intercept_message) as u64;
            let _ = write_obj(mem, at, &message);
            let _ = write_obj(mem, reason_gpa, &HvVtlEntryReason::INTERCEPT);
            Delivery::AssistPage
        } else {
            if page.enable() {
                let _ = write_obj(mem, reason_gpa, &HvVtlEntryReason::INTERRUPT);
            }
            self.queue_message(vp, vtl, 0, message, mem, effects);
            let queued = self.vp(vp).file(vtl).synic.queues[0].back() == Some(&message);
            if queued {
                Delivery::Sint0Queued
            } else {
                Delivery::Sint0
            }
        };
        self.trace.push(Event::Intercept {
            vp,
            vtl: lower,
            delivery,
            message,
        });
    }

    /// `HvMessageTypeHypercallIntercept` with the ISA's payload, built from the lower VTL's
    /// registers as they are now.
    fn intercept_message(&self, vp: u32, lower: Vtl) -> HvMessage {
        let file = self.vp(vp).file(lower);
        let mut message = HvMessage::new_zeroed();
        message.header.message_type = HvMessageType::HYPERCALL_INTERCEPT;
        let payload = match self.scenario.arch {
            Arch::X86_64 => {
                let cs =
                    HvX64SegmentRegister::read_from_bytes(&file.reg(x64_reg::CS).to_le_bytes())
                        .unwrap_or_default();
                // CR0.PE is bit 0, EFER.LMA bit 10.
                let state = HvX64VpExecutionState::new()
                    .with_cpl((cs.selector & 3) as u8)
                    .with_cr0_pe(file.reg64(x64_reg::CR0) & 1 != 0)
                    .with_efer_lma(file.reg64(x64_reg::EFER) & (1 << 10) != 0)
                    .with_vtl(lower.get());
                let xmm_pair = |n| {
                    let v = file.reg(xmm(n));
                    [v as u64, (v >> 64) as u64]
                };
                HvX64HypercallInterceptMessage {
                    header: HvX64InterceptMessageHeader {
                        vp_index: vp,
                        instruction_length_and_cr8: VMCALL_LEN as u8,
                        intercept_access_type: HvInterceptAccessType::EXECUTE,
                        execution_state: state,
                        cs_segment: cs,
                        rip: file.reg64(x64_reg::RIP),
                        rflags: file.reg64(x64_reg::RFLAGS),
                    },
                    rax: file.reg64(x64_reg::RAX),
                    rbx: file.reg64(x64_reg::RBX),
                    rcx: file.reg64(x64_reg::RCX),
                    rdx: file.reg64(x64_reg::RDX),
                    r8: file.reg64(x64_reg::R8),
                    rsi: file.reg64(x64_reg::RSI),
                    rdi: file.reg64(x64_reg::RDI),
                    xmm_registers: [0, 1, 2, 3, 4, 5].map(xmm_pair),
                    flags: HvHypercallInterceptFlags::new(),
                    reserved: [0; 3],
                }
                .as_bytes()
                .to_vec()
            }
            Arch::Aarch64 => {
                let cpsr = file.reg64(arm_reg::CPSR);
                let immediate = self.vtl0.in_flight.get(&vp).map_or(0, |f| f.call.immediate);
                HvArm64HypercallInterceptMessage {
                    header: HvArm64InterceptMessageHeader {
                        vp_index: vp,
                        instruction_length: INSTRUCTION_LEN as u8,
                        intercept_access_type: HvInterceptAccessType::EXECUTE,
                        // CPSR.M[3:2] is the exception level.
                        execution_state: HvArm64VpExecutionState::new()
                            .with_cpl(((cpsr >> 2) & 3) as u8)
                            .with_vtl(lower.get()),
                        pc: file.reg64(arm_reg::XPC),
                        cpsr,
                    },
                    immediate,
                    reserved: 0,
                    flags: HvHypercallInterceptFlags::new(),
                    x: core::array::from_fn(|n| file.reg64(x(n))),
                }
                .as_bytes()
                .to_vec()
            }
        };
        message.payload_bytes_mut()[..payload.len()].copy_from_slice(&payload);
        message.header.payload_size = payload.len() as u8;
        message
    }

    /// Back in the paravisor after the intercept: the registers the VTLs share hold the lower
    /// VTL's values, as on Hyper-V (x64 all GPRs but RSP, CR2 and XMM0-5; arm64 X0-X17 and
    /// X19-X28), and the private ones the paravisor's own (arm64 X18, X29, X30).
    fn resume(&self, vp: u32, vtl: Vtl, lower: Vtl, regs: &mut SwitchRegs<'_>) {
        let file = self.vp(vp).file(lower);
        match regs {
            SwitchRegs::X64(r) => {
                for ((_, name), value) in X64_SHARED_GPRS.iter().zip(r.gprs_mut()) {
                    *value = file.reg64(*name);
                }
                r.cr2 = file.reg64(x64_reg::CR2);
                for (n, value) in r.xmm.iter_mut().enumerate() {
                    *value = file.reg(xmm(n as u32));
                }
            }
            SwitchRegs::Aarch64(x) => {
                let fp_lr_shared = self.scenario.arm64_fp_lr_shared;
                for (n, value) in x.iter_mut().enumerate() {
                    let owner = if arm64_shared(n, fp_lr_shared) {
                        lower
                    } else {
                        vtl
                    };
                    *value = self.vp(vp).file(owner).reg64(self::x(n));
                }
            }
        }
    }
}
