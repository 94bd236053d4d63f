//! The per-VP run loop: return to VTL0, and serve each VTL0 hypercall the hypervisor reflects
//! as an intercept: decode, validate and classify it (the pure `proxy` module), then relay,
//! answer or refuse it and complete it in VTL0's registers, or make VTL0 take the
//! #UD / undefined-instruction exception the TLFS raises instead.
#![forbid(unsafe_code)]

use crate::hypercall::VpTarget;
use crate::intercept::{self, InterceptBuffer};
use crate::proxy::{self, Action, ControlRegister, Decoded, RelayTable, Request, Vtl0Memory};
use crate::{arch, percpu, synthetic};
use core::sync::atomic::{AtomicU64, Ordering};
use hvdef::{
    HvMessageType, HvRegisterName, HvRegisterValue, HvStatus, HvVtlEntryReason, HypercallOutput,
};
use spin::Once;

/// What every VP's loop needs to know, fixed by the boot VP before any VP enters its loop.
pub struct Config {
    pub vtl0: Vtl0Memory,
    /// The host offers XMM fast input (x64), so VTL0 may use it.
    pub xmm_fast_input: bool,
    /// Which VTL0 connections and devices are relayed to the host.
    pub relay: RelayTable,
    /// The partition's privileges: VTL0's, which the paravisor lends no more of.
    pub privileges: hvdef::HvPartitionPrivilegeMask,
    /// Map this VP's VTL register page (x64, not `pv.regpage=off`) and move VTL0's IP through
    /// it where the host offers one.
    pub register_page: bool,
}

static CONFIG: Once<Config> = Once::new();

pub fn configure(config: Config) {
    CONFIG.call_once(|| config);
}

/// Waits (an AP) until the boot VP has configured the run loop.
pub fn wait_configured() {
    while CONFIG.get().is_none() {
        core::hint::spin_loop();
    }
}

/// How a VTL0 hypercall ends, before it is written into VTL0's registers.
#[must_use]
struct Completion {
    /// The result word for RAX / X0 (or SMCCC's -1).
    result: u64,
    /// The IP moves past the instruction (false: TIMEOUT, VTL0 re-executes it).
    advance: bool,
    /// A new control word and where it goes (TIMEOUT: the rep start moved on).
    control: Option<(ControlRegister, u64)>,
}

impl Completion {
    fn status(status: HvStatus) -> Completion {
        Completion {
            result: u64::from(status.0),
            advance: true,
            control: None,
        }
    }
}

/// What becomes of VTL0's hypercall instruction.
#[must_use]
enum Outcome {
    Complete(Completion),
    /// It faults ([`Action::Fault`]): no result, see [`raise_undefined_instruction`].
    Fault,
}

impl From<Completion> for Outcome {
    fn from(completion: Completion) -> Outcome {
        Outcome::Complete(completion)
    }
}

/// VTL0 on this VP, as the target of the paravisor's own Get/SetVpRegisters: VTL0's private
/// registers are reached with the target VTL pinned to 0.
const VTL0: VpTarget = VpTarget::VTL0;

/// Runs VTL0 on this VP for ever. Intercepts arrive in the VP assist page (the boot VP refuses
/// to run without VsmCapabilities.intercept_page_available). `vtl0`: VTL0's entry registers if
/// already read (an AP's bring-up reads them), else they are read here.
pub fn run(vtl0: Option<arch::Vtl0Registers>) -> ! {
    let config = CONFIG.get().expect("configured by the boot VP");
    let assist = percpu::assist_page();
    let switch = synthetic::vtl_switch(&assist);
    let mut regs = vtl0.unwrap_or_else(vtl0_entry_registers);
    if boot::cpu::index() == 0 {
        report_stack(log::Level::Info);
    }
    let page = config.register_page.then(map_register_page).flatten();
    let vtl0 = Vtl0Ip(page.as_ref());
    // VTL0 calls on this VP that reached VTL2 and were not relayed (see `execute`).
    let mut unexpected = 0u64;
    let mut buffer = InterceptBuffer::new();
    loop {
        switch.vtl_return(&mut regs);
        match assist.entry_reason() {
            HvVtlEntryReason::INTERCEPT => serve(
                config,
                &assist,
                &mut buffer,
                &mut regs,
                vtl0,
                &mut unexpected,
            ),
            // A VTL0 VtlCall enters VTL2 without a message (TLFS: the next higher VTL); there is
            // no service behind it, so it returns at once with VTL0's registers as they were,
            // after reporting this VP's stack depth if it is a new deepest (`report_stack`).
            reason => {
                log::debug!(
                    "VP {} entered VTL2 for {reason:?} with no intercept; returning to VTL0",
                    boot::cpu::index()
                );
                report_stack(log::Level::Debug);
            }
        }
    }
}

/// The deepest VP 0 (boot) stack and AP stack reported so far, in bytes.
static STACK_DEEPEST: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// Reports this VP's stack high-water mark, at `level`, if it is the deepest of its kind (VP
/// 0's boot stack, or any AP's) so far. boot::stacks painted every stack, so the mark covers
/// everything since boot whenever it is read; it is read where no other VP's VTL0 can be
/// printing (every VP at the end of its bring-up, VP 0 again before it first returns to VTL0:
/// info lines) and on each VtlCall from VTL0 (which has no service behind it: a debug line, as
/// the UART is shared with the other VPs' VTL0), never on the proxy's paths, which pay nothing
/// for it. The lines are bounded: one only for a new deepest mark, partition-wide.
pub fn report_stack(level: log::Level) {
    let vp = boot::cpu::index() as usize;
    let (used, size) = boot::stacks::high_water(vp);
    let kind = usize::from(vp != 0);
    let before = STACK_DEEPEST[kind].fetch_max(used as u64, Ordering::Relaxed);
    if used as u64 > before {
        log::log!(
            level,
            "stack high-water: VP {vp} used {used} of its {size}-byte {kind} stack, the \
             deepest {kind} stack so far",
            kind = ["boot", "AP"][kind],
        );
    }
}

/// VTL0's shared registers as they are before this VP first returns to it: the VTL switch loads
/// VTL0's from `Vtl0Registers`, so starting from zeros would destroy VTL0's entry state (boot
/// arguments in registers). One GetVpRegisters, target VTL0.
fn vtl0_entry_registers() -> arch::Vtl0Registers {
    const N: usize = arch::Vtl0Registers::NAMES.len();
    let mut values = [HvRegisterValue::from(0u64); N];
    if let Err(e) =
        percpu::hypercall().get_vp_registers(VTL0, &arch::Vtl0Registers::NAMES, &mut values)
    {
        panic!("reading VTL0's entry registers failed: {e}");
    }
    arch::Vtl0Registers::from_values(&values)
}

/// Maps this VP's register page, once, before its first return to VTL0. A host without one
/// (`synthetic::map_register_page`) leaves the IP advance to SetVpRegisters; a line on VP 0 says
/// which it is.
fn map_register_page() -> Option<arch::RegisterPage> {
    let vp = boot::cpu::index();
    match synthetic::map_register_page() {
        Ok(page) => {
            if vp == 0 {
                log::info!(
                    "VTL register page mapped at {:#x}: VTL0's IP moves without a hypercall",
                    page.gpa()
                );
            }
            Some(page)
        }
        Err(e) => {
            if vp == 0 {
                log::info!(
                    "the host offers no VTL register page ({e}): VTL0's IP moves by \
                     SetVpRegisters"
                );
            }
            None
        }
    }
}

/// Where VTL0's IP advance goes: through this VP's register page if it has one and the page
/// holds VTL0's state, else SetVpRegisters.
#[derive(Clone, Copy)]
struct Vtl0Ip<'a>(Option<&'a arch::RegisterPage>);

fn serve(
    config: &Config,
    assist: &percpu::AssistPage,
    buffer: &mut InterceptBuffer,
    regs: &mut arch::Vtl0Registers,
    vtl0: Vtl0Ip<'_>,
    unexpected: &mut u64,
) {
    match assist.message_type() {
        HvMessageType::HYPERCALL_INTERCEPT => {}
        HvMessageType::GPA_INTERCEPT | HvMessageType::UNMAPPED_GPA => {
            return refuse_memory_access(&intercept::memory_access(assist));
        }
        other => {
            log::warn!("ignoring intercept message {other:?}");
            return;
        }
    }
    let (ip, len, completion) = match intercept::hypercall(assist, config.xmm_fast_input, buffer) {
        Decoded::Hypercall(req) => match execute(config, &req, unexpected) {
            Outcome::Complete(completion) => (req.ip, req.instruction_len, completion),
            Outcome::Fault => return raise_undefined_instruction(),
        },
        Decoded::NotHypercall {
            ip,
            instruction_len,
        } => (
            ip,
            instruction_len,
            Completion {
                result: u64::MAX, // SMCCC NOT_SUPPORTED
                ..Completion::status(HvStatus::SUCCESS)
            },
        ),
        Decoded::Refused {
            status,
            ip,
            instruction_len,
        } => (ip, instruction_len, Completion::status(status)),
        Decoded::Fault => return raise_undefined_instruction(),
    };
    arch::complete_intercept(regs, completion.result, completion.control);
    if completion.advance {
        // Wrapping: VTL0 may sit at the top of the address space; the hypervisor decides what
        // an IP past it means, the paravisor must not fault (debug) or guess.
        advance_vtl0_ip(vtl0, ip.wrapping_add(u64::from(len)));
    }
}

/// Sets one of VTL0's private registers through the shared register path, target VTL pinned
/// to 0. A host that refuses it leaves this VP nothing sensible to do: returning without the IP
/// advance makes VTL0 re-execute a call the host already took (a relayed message sent twice),
/// returning without the #UD brings the same call straight back, for ever, and a retry of the
/// same call is as deterministic as the first. So this VP stops serving VTL0: one line, then it
/// halts for good with interrupts masked. Nothing shared is held (its pages are its own), so
/// the other VPs go on serving.
fn set_vtl0_register(name: HvRegisterName, value: HvRegisterValue, what: &str) {
    let refused = percpu::hypercall().set_vp_register(VTL0, name, value).err();
    if let Some(e) = refused {
        let vp = boot::cpu::index();
        log::error!(
            "VP {vp}: SetVpRegisters of VTL0's {} ({:#x}) refused with {e} ({what}); VP {vp} stops \
             serving VTL0 and halts, the other VPs go on",
            arch::register_name(name).unwrap_or("register"),
            name.0
        );
        boot::arch::halt();
    }
}

/// Moves VTL0's instruction pointer past the intercepted instruction.
fn advance_vtl0_ip(vtl0: Vtl0Ip<'_>, ip: u64) {
    if vtl0.0.is_some_and(|page| page.set_vtl0_rip(ip)) {
        return;
    }
    set_vtl0_register(
        arch::IP_REGISTER,
        HvRegisterValue::from(ip),
        "advancing VTL0's instruction pointer",
    );
}

/// Makes VTL0 take #UD (x64) / an undefined-instruction exception (arm64) on the hypercall
/// instruction, as OpenHCL injects exceptions: VTL0's pending-event register, a private register
/// of VTL0 set through the shared register path. The hypervisor delivers the event on the next
/// return to VTL0. It is a fault, so VTL0's IP is not advanced (the exception reports the
/// hypercall instruction), and no result is written: VTL0's registers go back as it left them.
fn raise_undefined_instruction() {
    set_vtl0_register(
        HvRegisterName::PENDING_EVENT0,
        arch::undefined_instruction_event(),
        "raising #UD in VTL0",
    );
}

/// A VTL0 access the hypervisor stopped: VTL2's own pages (protected before VTL0 first ran), or
/// anything else the hypervisor hands VTL2 as a GPA intercept. The paravisor emulates no memory
/// and lends none: the access is not carried out, a line says what VTL0 tried, and VTL0 takes
/// the fault the ISA has for memory that refuses the access (`arch::memory_fault_event`) on the
/// faulting instruction, as any other exception the paravisor raises.
///
/// Unless the CPU made the access while delivering an event to VTL0 (its IDT, GDT, stack or
/// vector table on VTL2's page): the fault would be delivered through the same page and fault
/// again, for ever (hardware would escalate to a double and a triple fault; OpenVMM's emulator
/// "gives up" rather than inject in that state, `virt_support_x86emu` emulate.rs). VTL0 cannot
/// go on on this VP, so the VP stops as for a triple fault: one line, then it halts, and the
/// other VPs go on.
///
/// VTL0 chooses how often this happens, so the lines are bounded: the first
/// [`MEMORY_LINES_PER_VP`] refusals on a VP each get one, then one every
/// [`MEMORY_LINE_INTERVAL`] with the count.
fn refuse_memory_access(access: &proxy::MemoryAccess) {
    let vp = boot::cpu::index();
    let whose = if boot::vtl2_memory().contains(&access.gpa) {
        "VTL2 memory"
    } else {
        "not VTL0's to access"
    };
    if access.delivering_event {
        log::error!(
            "VP {vp}: VTL0 {} at GPA {:#x} refused ({whose}) while VTL0 was taking an exception \
             or interrupt: a fault would fault again; VP {vp} stops serving VTL0 and halts, the \
             other VPs go on",
            access.kind(),
            access.gpa,
        );
        boot::arch::halt();
    }
    let n = percpu::this_vp()
        .memory_refusals
        .fetch_add(1, Ordering::Relaxed)
        + 1;
    if n <= MEMORY_LINES_PER_VP || n.is_multiple_of(MEMORY_LINE_INTERVAL) {
        log::warn!(
            "VP {vp}: VTL0 {} at GPA {:#x} refused ({whose}): VTL0 takes {}{}",
            access.kind(),
            access.gpa,
            arch::MEMORY_FAULT_NAME,
            Bounded("refusal", n)
        );
    }
    set_vtl0_register(
        HvRegisterName::PENDING_EVENT0,
        arch::memory_fault_event(access.access, access.user),
        "raising a memory fault in VTL0",
    );
}

/// How many refused VTL0 memory accesses per VP get a line (see `refuse_memory_access`; the
/// count is `percpu::VpFlags::memory_refusals`).
const MEMORY_LINES_PER_VP: u64 = 64;
const MEMORY_LINE_INTERVAL: u64 = 65536;

/// The tail of a bounded line: nothing for the first ones, then what the bound means.
struct Bounded(&'static str, u64);

impl core::fmt::Display for Bounded {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let what = self.0;
        match self.1 {
            n if n < MEMORY_LINES_PER_VP => Ok(()),
            MEMORY_LINES_PER_VP => write!(
                f,
                " ({what} {MEMORY_LINES_PER_VP} on this VP: from now on one line in \
                 {MEMORY_LINE_INTERVAL})"
            ),
            n => write!(f, " ({what} {n} on this VP)"),
        }
    }
}

/// Carries out a classified call. Hyper-V reflects only the relayed codes (proxy::policy), so
/// anything else reaching VTL2 is worth a line; VTL0 chooses how often, so the lines are
/// bounded as for memory refusals: the first [`MEMORY_LINES_PER_VP`] such calls on a VP
/// (`unexpected` counts them) each get one, then one every [`MEMORY_LINE_INTERVAL`].
fn execute(config: &Config, req: &Request<'_>, unexpected: &mut u64) -> Outcome {
    let code = req.control.code();
    let action = proxy::policy::classify(req, &config.vtl0, config.privileges);
    if !matches!(action, Action::Relay(_)) {
        *unexpected += 1;
        let n = *unexpected;
        if n <= MEMORY_LINES_PER_VP || n.is_multiple_of(MEMORY_LINE_INTERVAL) {
            log::warn!(
                "VTL0 hypercall {:#06x} ({code:?}) on VP {} reached VTL2: {action:?}{}",
                code.0,
                boot::cpu::index(),
                Bounded("unexpected call", n)
            );
        }
    }
    match action {
        Action::Refuse(status) => Completion::status(status).into(),
        Action::Unhandled => Completion::status(HvStatus::INVALID_HYPERCALL_CODE).into(),
        Action::Fault => Outcome::Fault,
        Action::AnswerExtCapabilities { output } => {
            let mask = proxy::policy::RELAYED_EXT_MASK;
            // A list `validate` handed over is inside VTL0's memory and mapped, so the copy
            // cannot fail; if it did, VTL0 gets what memory it may not touch gets.
            Completion::status(match output.write(&mask.to_le_bytes()) {
                Ok(()) => HvStatus::SUCCESS,
                Err(_) => HvStatus::ACCESS_DENIED,
            })
            .into()
        }
        Action::Relay(relayed) => relay(config, req, &relayed).into(),
    }
}

/// Relays a classified call: the relay table is applied exactly once, on the bytes that go to
/// the host (this VP's input page, or the register block), never on VTL0 memory VTL0 could still
/// change. A connection or device the table does not name is refused here without a line: it is
/// ordinary traffic (VTL0 naming ids the host does not know), not an anomaly.
fn relay(config: &Config, req: &Request<'_>, relayed: &proxy::Relay) -> Completion {
    let proxy::Relay {
        policy,
        control,
        input_len,
        fast_as_memory,
        input,
    } = *relayed;
    let out = if req.control.fast() && !fast_as_memory {
        // The block that goes to the host: a copy of the input's words (`classify` checked
        // they are inside VTL0's block and within what the paravisor's own call carries,
        // `arch::FAST_WORDS`), screened in place.
        // Built word by word (a fixed count the compiler unrolls), never zeroed then copied.
        let mut words: [u64; arch::FAST_WORDS] =
            core::array::from_fn(|i| req.fast.get(i).copied().unwrap_or(0));
        let Some(block) = words.get_mut(..input_len.div_ceil(8)) else {
            return Completion::status(HvStatus::INVALID_HYPERCALL_INPUT);
        };
        if let Err(status) = policy.screen_fast(block, &config.relay) {
            return Completion::status(status);
        }
        match percpu::hypercall().relay_fast(control, block) {
            Some(out) => out,
            None => return Completion::status(HvStatus::INVALID_HYPERCALL_INPUT),
        }
    } else {
        // A connection the relay does not map is refused from one volatile read of its id,
        // before anything is copied: VTL0 changing it concurrently changes only whether its own
        // call is refused. A mapped one is checked again on the copy that is sent.
        if let Some(status) = input.and_then(|input| unmapped_connection(config, policy, input)) {
            return Completion::status(status);
        }
        // `classify` already cleared the fast bit of a call relayed memory-based.
        let input_list = input;
        let sent = percpu::hypercall().relay(control, |page| {
            let input = &mut page[..input_len];
            if req.control.fast() {
                // XMM fast input relayed memory-based: the register block is the input.
                for (chunk, word) in input.chunks_mut(8).zip(req.fast) {
                    chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
                }
            } else if let Some(vtl0) = input_list {
                vtl0.read(input).map_err(|_| HvStatus::ACCESS_DENIED)?;
            }
            policy.screen(input, &config.relay)
        });
        match sent {
            Ok(out) => out,
            Err(status) => return Completion::status(status),
        }
    };
    completion_of(req, out)
}

/// INVALID_CONNECTION_ID for a memory-based PostMessage / SignalEvent whose connection id (at
/// input offset 0 of its validated list) the relay does not map.
fn unmapped_connection(
    config: &Config,
    policy: &proxy::policy::Policy,
    input: proxy::GuestRange,
) -> Option<HvStatus> {
    if policy.rule != proxy::policy::Rule::RelayConnection {
        return None;
    }
    let id = input.read_u32()?;
    config
        .relay
        .host_connection(id)
        .is_none()
        .then_some(HvStatus::INVALID_CONNECTION_ID)
}

fn completion_of(req: &Request<'_>, out: HypercallOutput) -> Completion {
    if out.status() == HvStatus::TIMEOUT {
        // VTL0 sees a TLFS timeout: IP left on the call, rep start moved on. The control word
        // is VTL0's own (the relayed one may differ: an XMM-fast call goes memory-based), so
        // the re-executed call is the one VTL0 made.
        return Completion {
            result: out.into_bits(),
            advance: false,
            control: Some((
                req.control_register,
                req.control.with_rep_start(out.reps_completed()).into_bits(),
            )),
        };
    }
    Completion {
        result: out.into_bits(),
        advance: true,
        control: None,
    }
}
