//! Runs the real paravisor image in QEMU under the model: QEMU's gdbstub stops the guest at the
//! image's trap sites, the session hands each access to the [`Model`], writes the answer back
//! and resumes. The run ends when the firmware exits QEMU, the VTL0 script is finished, or the
//! timeout expires; the report carries QEMU's outcome and the model's trace.

use crate::gdb::{Gdb, StopKind};
use crate::image::{Image, Sites};
use crate::model::{
    Effects, Fault, GuestMemory, HypercallPageChange, InitialVpContext, MemoryError, Model,
    Scenario, StartVp, Trace, VmcallKind, Vtl0Call, X64HypercallRegs, ARM64_GPRS, X64_SHARED_GPRS,
};
use crate::qemu::{Outcome, Qemu, QemuConfig, RunResult};
use crate::{igvm_load, vcpu_start};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Which trap sites the session breaks on; leaving one out proves that a missed access fails
/// the run instead of producing a wrong answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skip {
    /// Do not intercept the x86 CPUID site or the arm64 SMCCC site.
    pub detection: bool,
}

pub struct SessionConfig {
    pub image: PathBuf,
    pub scenario: Scenario,
    pub append: Option<String>,
    pub timeout: Duration,
    /// Stream the console to stdout as it arrives.
    pub echo: bool,
    pub skip: Skip,
    pub extra_args: Vec<String>,
    /// Guest RAM in MiB (QEMU `-m`).
    pub memory_mb: u32,
    /// Hypercalls VTL0 makes, delivered to the paravisor as intercepts (see `Vtl0Call::on_vp`).
    pub vtl0: Vec<Vtl0Call>,
    /// Count the VTL2 instructions each delivered intercept costs: after a VtlReturn delivers
    /// one, the session single-steps that vCPU until its next VtlReturn instead of letting it
    /// run (slow: a few thousand steps per second). See [`Report::instructions_per_intercept`].
    pub count_instructions: bool,
    /// Boot from this IGVM file instead of QEMU's `-kernel` path: the session loads it into the
    /// halted machine as a VMM's IGVM loader would (`crate::igvm_load`) and starts the boot VP
    /// in its VTL2 context. `image` is still the ELF of the same build: it names the trap sites
    /// the mock intercepts, and the two must agree byte for byte. QEMU passes a command line
    /// only with `-kernel`, so an IGVM boot has none (`append` must be `None`).
    pub igvm: Option<PathBuf>,
}

impl SessionConfig {
    pub fn new(image: PathBuf, scenario: Scenario) -> SessionConfig {
        SessionConfig {
            image,
            scenario,
            append: None,
            timeout: Duration::from_secs(60),
            echo: false,
            skip: Skip::default(),
            extra_args: Vec::new(),
            memory_mb: crate::qemu::DEFAULT_MEMORY_MB,
            vtl0: Vec::new(),
            count_instructions: false,
            igvm: None,
        }
    }
}

/// How a session ended and what the model saw.
pub struct Report {
    pub run: RunResult,
    pub model: Model,
    /// Guest stops handled (one per intercepted access, plus step-overs).
    pub stops: u64,
    /// Every VP went back to VTL0 with nothing left in its script: the paravisor is proxying
    /// and idle. With an empty script, that is a successful boot.
    pub script_finished: bool,
    /// VPs that halted for good in VTL2 (reached `pv_halt_site`); the run ends when every
    /// started VP is halted or done, but it is then not `script_finished`.
    pub halted_vps: std::collections::BTreeSet<u32>,
    /// A fault the model raised, which the session cannot inject, ends the run here.
    pub unhandled_fault: Option<String>,
    /// With [`SessionConfig::count_instructions`]: what each delivered intercept cost VTL2, in
    /// delivery order.
    pub instructions_per_intercept: Vec<InterceptInstructions>,
}

/// VTL2's work for one delivered intercept, counted by single-stepping its vCPU from the
/// VtlReturn that delivered it (exclusive) to its next VtlReturn (inclusive): the trap site
/// whose service the model records as a VTL_RETURN on this VP (x64: the VtlReturn `vmcall` of the
/// hypercall page; arm64: `pv_hvc_vtl_return_site`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterceptInstructions {
    pub vp: u32,
    /// The nth intercept delivered on this VP (0-based), which is also the nth
    /// `Event::Intercept` of this VP in the trace.
    pub ordinal: usize,
    /// The scripted call it delivered (push order) and the attempt, as the model recorded the
    /// call's completion; `None` if the run ended before the paravisor returned.
    pub call: Option<(usize, u32)>,
    /// Instructions VTL2 retired: single steps that moved the IP, plus one per trap the model
    /// served (hypercall, MSR, CPUID), the closing VtlReturn included.
    pub instructions: u64,
    /// Single steps taken. Those that leave the IP in place are not counted as instructions:
    /// x86 string instructions with a REP prefix, which QEMU (like hardware) steps one iteration
    /// at a time, and the odd step QEMU ends before the instruction retires — so this figure
    /// may vary by one or two between identical runs; `instructions` does not.
    pub steps: u64,
    /// The traps among the instructions (hypercalls, MSR, CPUID).
    pub traps: u64,
    /// Wall time of the stepping, traps included: the mode's cost.
    pub elapsed: Duration,
}

impl Report {
    pub fn trace(&self) -> &Trace {
        self.model.trace()
    }

    /// The boot succeeded: the firmware exited with success, or every VP ended up in its VTL0
    /// run loop with nothing left to serve, and the mock saw nothing it could not handle.
    pub fn succeeded(&self) -> bool {
        self.unhandled_fault.is_none()
            && (self.run.outcome == Outcome::Pass || self.script_finished)
    }

    /// A short account of what the paravisor asked of the hypervisor, for people.
    pub fn trace_summary(&self) -> String {
        trace_summary(self.trace().events(), Some(self.stops))
    }

    /// One line for a failed assertion: outcome, fault, and the last console line.
    pub fn summary(&self) -> String {
        if self.script_finished && self.unhandled_fault.is_none() {
            return "every VP is proxying VTL0 and its script is done".into();
        }
        let mut s = self.run.summary();
        if let Some(fault) = &self.unhandled_fault {
            s.push_str(&format!("; mock: {fault}"));
        }
        if !self.halted_vps.is_empty() {
            s.push_str(&format!("; halted VPs {:?}", self.halted_vps));
        }
        let events = self.trace().events();
        let tail: Vec<String> = events[events.len().saturating_sub(3)..]
            .iter()
            .map(brief)
            .collect();
        if !tail.is_empty() {
            s.push_str(&format!("; last trace records: {}", tail.join(" | ")));
        }
        s
    }
}

/// One trace record in a few words, for failure summaries: who (VP, VTL), what, and how it
/// ended.
/// A short account of what the paravisor asked of the hypervisor, for people: event counts
/// (and the guest stops that served them, for a transport that has them), then each call code
/// with its statuses.
pub fn trace_summary(events: &[crate::model::Event], stops: Option<u64>) -> String {
    use crate::model::Event;
    use std::collections::BTreeMap;
    let (mut cpuid, mut rdmsr, mut wrmsr, mut smccc, mut intercepts) = (0, 0, 0, 0, 0);
    let mut calls: BTreeMap<String, (u32, BTreeMap<String, u32>)> = BTreeMap::new();
    for event in events {
        match event {
            Event::Cpuid { .. } => cpuid += 1,
            Event::Rdmsr { .. } => rdmsr += 1,
            Event::Wrmsr { .. } => wrmsr += 1,
            Event::Smccc { .. } => smccc += 1,
            Event::Intercept { .. } | Event::LowerVtlCall { .. } => intercepts += 1,
            Event::PendingInterrupt { .. }
            | Event::PartitionReset { .. }
            | Event::Vtl0Access { .. } => {}
            Event::Hypercall(h) => {
                let entry = calls.entry(format!("{:?}", h.code)).or_default();
                entry.0 += 1;
                let status = h.status().map_or("no status".into(), |s| format!("{s:?}"));
                *entry.1.entry(status).or_default() += 1;
            }
        }
    }
    let stops = stops.map_or(String::new(), |n| format!(", {n} guest stops"));
    let mut s = format!(
        "trace: {} events{stops}: {cpuid} cpuid, {rdmsr} rdmsr, {wrmsr} wrmsr, {smccc} other \
         SMCCC, {intercepts} intercepts delivered\n",
        events.len(),
    );
    for (code, (n, statuses)) in calls {
        let statuses: Vec<String> = statuses.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        s.push_str(&format!("  {code:<28} x{n:<4} {}\n", statuses.join(", ")));
    }
    s
}

/// One event, briefly, for a failure summary.
pub fn brief(event: &crate::model::Event) -> String {
    use crate::model::Event;
    match event {
        Event::Hypercall(h) => format!(
            "vp{} VTL{} {:?} control {:#x} -> {:?}",
            h.vp,
            h.vtl.get(),
            h.code,
            h.control,
            h.outcome
        ),
        Event::Intercept {
            vp, vtl, message, ..
        } => format!(
            "vp{vp} intercept {:?} of VTL{} delivered",
            message.header.message_type,
            vtl.get()
        ),
        Event::Vtl0Access {
            vp,
            gpa,
            access,
            allowed,
        } => format!(
            "vp{vp} VTL0 {access:?} at GPA {gpa:#x} {}",
            if *allowed { "carried out" } else { "stopped" }
        ),
        other => format!("{other:?}"),
    }
}

/// What a breakpoint address is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Site {
    Cpuid,
    Rdmsr,
    Wrmsr,
    Vmcall(VmcallKind),
    Hvc(u16),
    /// `pv_halt_site`: the VP halts for good (interrupts masked). Hyper-V intercepts HLT / WFI
    /// and deschedules the VP until an interrupt it can take, which never comes.
    Halt,
}

/// Guest-physical memory through the gdbstub (physical mode), limited to the machine's RAM: in
/// physical mode QEMU reports no error for a GPA without RAM, so the session says which GPAs
/// are backed, and anything else is a `MemoryError` (unbacked memory, as for the hypervisor).
struct GdbMemory<'a> {
    gdb: &'a mut Gdb,
    ram: &'a [std::ops::Range<u64>],
}

impl GdbMemory<'_> {
    fn check(&self, gpa: u64, len: usize) -> Result<(), MemoryError> {
        let end = gpa.checked_add(len as u64);
        let backed = end.is_some_and(|end| self.ram.iter().any(|r| r.start <= gpa && end <= r.end));
        if backed || len == 0 {
            Ok(())
        } else {
            Err(MemoryError { gpa, len })
        }
    }
}

impl GuestMemory for GdbMemory<'_> {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.check(gpa, buf.len())?;
        let err = MemoryError {
            gpa,
            len: buf.len(),
        };
        let bytes = self.gdb.read_mem(gpa, buf.len()).map_err(|_| err)?;
        buf.copy_from_slice(&bytes);
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.check(gpa, data.len())?;
        self.gdb.write_mem(gpa, data).map_err(|_| MemoryError {
            gpa,
            len: data.len(),
        })
    }
}

const X86_INSN_LEN: u64 = 2; // cpuid, rdmsr, wrmsr
const VMCALL_LEN: u64 = hvdef::x86_64::VMCALL_LEN;
const HVC_LEN: u64 = hvdef::aarch64::INSTRUCTION_LEN;

struct Session {
    gdb: Gdb,
    /// The machine's RAM (guest-physical ranges), see [`Arch::ram_ranges`].
    ram: Vec<std::ops::Range<u64>>,
    model: Model,
    sites: HashMap<u64, Site>,
    stops: u64,
    finished: bool,
    fault: Option<String>,
    trampoline_written: bool,
    vp_count: u32,
    /// VPs whose VTL0 script is done, or that halted: their vCPUs are no longer resumed.
    parked: std::collections::BTreeSet<u32>,
    /// VPs that reached `pv_halt_site`.
    halted: std::collections::BTreeSet<u32>,
    /// Single-step each delivered intercept ([`SessionConfig::count_instructions`]).
    count_instructions: bool,
    counted: Vec<InterceptInstructions>,
}

/// Boots `config.image` under the model and returns when the run ends.
pub fn run(config: SessionConfig) -> Result<Report> {
    let image = Image::load(&config.image)?;
    let stray = image.audit();
    if !stray.is_empty() {
        bail!(
            "{} has hypervisor-facing instructions outside its exported sites (they would run \
             un-intercepted): {}",
            config.image.display(),
            stray.join(", ")
        );
    }
    if image.arch != config.scenario.arch {
        bail!(
            "scenario is for {} but the image is {}",
            config.scenario.arch.name(),
            image.arch.name()
        );
    }
    let socket = std::env::temp_dir().join(format!(
        "mockhv-{}-{}.sock",
        std::process::id(),
        SOCKET_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let igvm = match &config.igvm {
        None => None,
        Some(path) => {
            if config.append.is_some() {
                bail!(
                    "an IGVM boot has no command line: QEMU passes -append only with -kernel and \
                     the IGVM file carries no command-line parameter"
                );
            }
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let ram = igvm_memory_map(image.arch, config.memory_mb);
            let loaded = igvm_load::load(&bytes, image.arch, config.scenario.vp_count, &ram)
                .with_context(|| format!("loading {}", path.display()))?;
            check_same_build(&config.image, &loaded)?;
            Some(loaded)
        }
    };
    let kernel = igvm.is_none().then(|| config.image.clone());
    let mut qemu_config = QemuConfig::new(image.arch, kernel);
    qemu_config.smp = config.scenario.vp_count;
    qemu_config.append = config.append.clone();
    qemu_config.gdb_socket = Some(socket.clone());
    qemu_config.timeout = config.timeout;
    qemu_config.echo = config.echo;
    qemu_config.extra_args = config.extra_args.clone();
    qemu_config.memory_mb = config.memory_mb;
    let mut qemu = Qemu::spawn(&qemu_config)?;
    let mut gdb =
        Gdb::connect(&socket, Duration::from_secs(10)).context("connecting to QEMU's gdbstub")?;
    // The hypervisor reads and writes guest-physical memory (hypercall lists, overlay pages,
    // VTL0's buffers), whatever the vCPU's page tables map.
    gdb.set_physical_memory_mode(true)
        .context("switching the gdbstub to physical addresses")?;
    let mut trampoline_written = false;
    if let Some(loaded) = &igvm {
        load_into(&mut gdb, loaded).context("loading the IGVM file into the guest")?;
        // x86's boot VP went through the AP trampoline, which is now in place.
        trampoline_written = loaded.arch == crate::qemu::Arch::X86_64;
    }

    let mut sites = HashMap::new();
    if let Some(addr) = image.halt {
        sites.insert(addr, Site::Halt);
    }
    match image.sites {
        Sites::X86_64 {
            cpuid,
            rdmsr,
            wrmsr,
        } => {
            if !config.skip.detection {
                sites.insert(cpuid, Site::Cpuid);
            }
            sites.insert(rdmsr, Site::Rdmsr);
            sites.insert(wrmsr, Site::Wrmsr);
        }
        Sites::Aarch64 { smccc, vtl_return } => {
            if !config.skip.detection {
                sites.insert(smccc, Site::Hvc(hvdef::aarch64::HVC_IMM_SMCCC));
            }
            if let Some(addr) = vtl_return {
                sites.insert(addr, Site::Hvc(hvdef::aarch64::HVC_IMM_VTL_RETURN));
            }
        }
    }
    let mut session = Session {
        gdb,
        ram: image.arch.ram_ranges(config.memory_mb),
        model: {
            let mut scenario = config.scenario.clone();
            if scenario.ram.is_empty() {
                scenario.ram = image.arch.ram_ranges(config.memory_mb);
            }
            let mut model = Model::new(scenario);
            for call in config.vtl0 {
                model.vtl0().push(call);
            }
            model
        },
        sites,
        stops: 0,
        finished: false,
        fault: None,
        trampoline_written,
        vp_count: config.scenario.vp_count,
        parked: Default::default(),
        halted: Default::default(),
        count_instructions: config.count_instructions,
        counted: Vec::new(),
    };
    let deadline = Instant::now() + config.timeout;
    session.drive(deadline)?;
    if session.finished || session.fault.is_some() {
        // The mock ended the run; the firmware would otherwise wait in VTL2 for ever.
        qemu.kill()?;
    }
    let run = qemu.wait()?;
    Ok(Report {
        run,
        model: session.model,
        stops: session.stops,
        script_finished: session.finished && session.halted.is_empty(),
        halted_vps: session.halted,
        unhandled_fault: session.fault,
        instructions_per_intercept: session.counted,
    })
}

/// The RAM a VMM reports in the IGVM memory map: the machine's RAM, on x86 without the legacy
/// 0xA0000..0x100000 window (VGA memory and the BIOS ROM shadow, which no VMM hands a guest as
/// RAM).
fn igvm_memory_map(arch: crate::qemu::Arch, memory_mb: u32) -> Vec<std::ops::Range<u64>> {
    const LEGACY: std::ops::Range<u64> = 0xA_0000..0x10_0000;
    let mut out = Vec::new();
    for r in arch.ram_ranges(memory_mb) {
        if arch != crate::qemu::Arch::X86_64 || r.end <= LEGACY.start || r.start >= LEGACY.end {
            out.push(r);
            continue;
        }
        if r.start < LEGACY.start {
            out.push(r.start..LEGACY.start);
        }
        if r.end > LEGACY.end {
            out.push(LEGACY.end..r.end);
        }
    }
    out
}

/// The IGVM file's page data must be the ELF's loadable bytes at the same addresses: the ELF
/// names the sites the mock breakpoints, so a file from another build would be intercepted at
/// the wrong places.
fn check_same_build(elf: &std::path::Path, loaded: &igvm_load::LoadedIgvm) -> Result<()> {
    use object::{Object, ObjectSegment};
    let bytes = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    let file = object::File::parse(&*bytes)?;
    let mut checked = 0;
    for segment in file.segments() {
        let data = segment.data()?;
        let start = segment.address();
        for (gpa, page) in &loaded.pages {
            if *gpa < start || *gpa >= start + data.len() as u64 {
                continue;
            }
            let at = (*gpa - start) as usize;
            let n = (data.len() - at).min(page.len());
            if data[at..at + n] != page[..n] {
                bail!(
                    "the IGVM file's page at {gpa:#x} differs from {}: not the same build",
                    elf.display()
                );
            }
            checked += 1;
        }
    }
    if checked == 0 {
        bail!(
            "the IGVM file places no page inside {}'s segments: not the same image",
            elf.display()
        );
    }
    Ok(())
}

/// Writes the loaded file into the halted machine and points the boot VP at its VTL2 context.
/// x86: the machine is at its reset vector in real mode, so the boot VP goes through the same
/// real-mode-to-long-mode trampoline the mock starts APs with, which loads the context's CR4,
/// CR3, EFER, CR0, GDTR, RSP and CS:RIP (RDI stays 0, which tells the paravisor's `_start64` to
/// read the IGVM parameters). arm64: the CPU is at EL1 with the MMU off, which is the context's
/// state, so PC, CPSR and X0-X3 are set directly.
fn load_into(gdb: &mut Gdb, loaded: &igvm_load::LoadedIgvm) -> Result<()> {
    for (gpa, data) in loaded.pages.iter().chain(&loaded.parameters) {
        gdb.write_mem(*gpa, data)?;
    }
    match loaded.context {
        igvm_load::VpContext::X64(mut ctx) => {
            // The trampoline's far return needs 16 bytes of stack; a context without one (the
            // paravisor's: its entry sets its own) gets the free top of the IPI stub's page.
            if ctx.rsp == 0 {
                ctx.rsp = vcpu_start::X86_TRAMPOLINE - 0x10;
            }
            gdb.write_mem(vcpu_start::X86_TRAMPOLINE, &vcpu_start::x86_trampoline())?;
            let (slot_gpa, slot) = vcpu_start::x86_slot(0, &ctx);
            gdb.write_mem(slot_gpa, &slot)?;
            gdb.write_regs(&[("cs", 0), ("rdi", 0)])?;
            gdb.write_pc(vcpu_start::X86_TRAMPOLINE)?;
        }
        igvm_load::VpContext::Aarch64 { pc, cpsr, x } => {
            gdb.write_regs(&[
                ("x0", x[0]),
                ("x1", x[1]),
                ("x2", x[2]),
                ("x3", x[3]),
                ("cpsr", cpsr),
            ])?;
            gdb.write_pc(pc)?;
        }
    }
    Ok(())
}

/// How often one hypercall instruction may be re-executed (TIMEOUT with the IP left in place)
/// before the session calls the guest stuck.
const MAX_REEXECUTIONS: u32 = 1024;

/// Most single steps counting mode spends on one intercept before calling VTL2 stuck.
const MAX_STEPS_PER_INTERCEPT: u64 = 1_000_000;

/// Runs a hypercall and, while the model leaves the IP on the instruction (a TIMEOUT with the
/// rep start updated in the registers), runs it again at once: that is what the guest would do
/// next, and QEMU does not re-trap a breakpoint at the PC it resumes from.
fn reexecute(stops: &mut u64, mut call: impl FnMut() -> Effects) -> Result<Effects> {
    for _ in 0..MAX_REEXECUTIONS {
        let effects = call();
        if effects.advance_ip || effects.fault.is_some() || effects.finished {
            return Ok(effects);
        }
        *stops += 1;
    }
    bail!("a hypercall was re-executed {MAX_REEXECUTIONS} times without completing")
}

static SOCKET_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Session {
    fn drive(&mut self, deadline: Instant) -> Result<()> {
        let addrs: Vec<u64> = self.sites.keys().copied().collect();
        for addr in addrs {
            self.gdb.set_breakpoint(addr)?;
        }
        loop {
            if self.parked.is_empty() {
                self.gdb.cont()?;
            } else {
                let running: Vec<u32> = (0..self.vp_count)
                    .filter(|vp| !self.parked.contains(vp))
                    .map(|vp| vp + 1)
                    .collect();
                self.gdb.cont_threads(&running)?;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let stop = match self.gdb.wait_stop(remaining) {
                Ok(stop) => stop,
                // QEMU exited (the firmware ended the run) or the run timed out: QEMU's own
                // result says which.
                Err(crate::gdb::Error::Closed) => return Ok(()),
                Err(e) if e.is_timeout() => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            if stop.kind != StopKind::Signal {
                return Ok(());
            }
            self.stops += 1;
            let vp = stop.thread.unwrap_or(1).saturating_sub(1);
            let pc = self.gdb.read_pc()?;
            let Some(&site) = self.sites.get(&pc) else {
                bail!(
                    "guest stopped at {pc:#x} on vp{vp}, which is no trap site (signal {})",
                    stop.signal
                );
            };
            if !self.handle_counting(vp, pc, site, deadline)? {
                return Ok(());
            }
        }
    }

    /// [`Session::handle`], then, in counting mode, if that delivered an intercept to `vp`,
    /// single-steps `vp` through the paravisor's handling of it (and of every intercept its
    /// closing VtlReturn delivers). False ends the run.
    fn handle_counting(&mut self, vp: u32, pc: u64, site: Site, deadline: Instant) -> Result<bool> {
        let mark = self.model.trace().events().len();
        if !self.handle(vp, pc, site)? {
            return Ok(false);
        }
        if !self.count_instructions || !self.delivered_since(mark, vp) {
            return Ok(true);
        }
        loop {
            let (count, mark, go_on) = self.count_one_intercept(vp, deadline)?;
            self.counted.push(count);
            if !go_on {
                return Ok(false);
            }
            if !self.delivered_since(mark, vp) {
                // Parked (script done) with other VPs still running.
                return Ok(true);
            }
        }
    }

    /// Whether the trace gained an intercept for `vp` after its first `mark` events.
    fn delivered_since(&self, mark: usize, vp: u32) -> bool {
        self.model.trace().events()[mark..]
            .iter()
            .any(|e| matches!(e, crate::model::Event::Intercept { vp: v, .. } if *v == vp))
    }

    /// Single-steps `vp`, which a VtlReturn just entered with an intercept, up to and through
    /// its next VtlReturn; every trap on the way is served as the normal loop serves it. Returns
    /// the count, the trace length before the closing VtlReturn was served, and false if the run
    /// ended there.
    fn count_one_intercept(
        &mut self,
        vp: u32,
        deadline: Instant,
    ) -> Result<(InterceptInstructions, usize, bool)> {
        let ordinal = self.counted.iter().filter(|c| c.vp == vp).count();
        let start = Instant::now();
        let thread = vp + 1;
        let (mut instructions, mut steps, mut traps) = (0u64, 0u64, 0u64);
        let mut pc = self.gdb.read_pc()?;
        let (mark, go_on, returned) = loop {
            if steps >= MAX_STEPS_PER_INTERCEPT {
                bail!(
                    "vp{vp}: intercept {ordinal} took more than {MAX_STEPS_PER_INTERCEPT} single \
                     steps without reaching a VtlReturn (at {pc:#x})"
                );
            }
            if Instant::now() >= deadline {
                bail!("vp{vp}: the session timed out counting intercept {ordinal} at {pc:#x}");
            }
            let stop = self.gdb.step_thread(thread)?;
            steps += 1;
            if !stop.is_trap() || stop.thread.is_some_and(|t| t != thread) {
                bail!(
                    "single-stepping vp{vp} at {pc:#x} stopped with {:?} signal {} on thread {:?}",
                    stop.kind,
                    stop.signal,
                    stop.thread
                );
            }
            let next = self.gdb.read_pc()?;
            if next != pc {
                instructions += 1;
            }
            pc = next;
            let Some(&site) = self.sites.get(&pc) else {
                continue;
            };
            // A trap: served by the model, one instruction.
            self.stops += 1;
            instructions += 1;
            traps += 1;
            let mark = self.model.trace().events().len();
            let go_on = self.handle(vp, pc, site)?;
            let returned = self.model.trace().events()[mark..].iter().any(|e| {
                matches!(e, crate::model::Event::Hypercall(h)
                    if h.vp == vp && h.code == hvdef::HypercallCode::VTL_RETURN)
            });
            if !go_on || returned {
                break (mark, go_on, returned);
            }
            pc = self.gdb.read_pc()?;
        };
        let call = self
            .model
            .vtl0()
            .results()
            .iter()
            .rev()
            .find(|r| r.vp == vp && returned)
            .map(|r| (r.index, r.attempt));
        let count = InterceptInstructions {
            vp,
            ordinal,
            call,
            instructions,
            steps,
            traps,
            elapsed: start.elapsed(),
        };
        Ok((count, mark, go_on))
    }

    /// Handles one trap; false ends the run.
    fn handle(&mut self, vp: u32, pc: u64, site: Site) -> Result<bool> {
        match site {
            Site::Halt => {
                self.halted.insert(vp);
                return Ok(self.park(vp));
            }
            Site::Cpuid => {
                let r = self.gdb.read_regs(&["rax", "rcx"])?;
                match self.model.cpuid(vp, r[0] as u32, r[1] as u32) {
                    Some([a, b, c, d]) => self.gdb.write_regs(&[
                        ("rax", a.into()),
                        ("rbx", b.into()),
                        ("rcx", c.into()),
                        ("rdx", d.into()),
                        ("rip", pc + X86_INSN_LEN),
                    ])?,
                    None => self.step_over(vp, pc)?,
                }
            }
            Site::Rdmsr => {
                let msr = self.gdb.read_reg("rcx")? as u32;
                match self.model.rdmsr(vp, msr) {
                    Some(Ok(v)) => self.gdb.write_regs(&[
                        ("rax", v & 0xffff_ffff),
                        ("rdx", v >> 32),
                        ("rip", pc + X86_INSN_LEN),
                    ])?,
                    Some(Err(fault)) => {
                        return Ok(self.unhandled(vp, format!("rdmsr {msr:#x}"), fault))
                    }
                    None => self.step_over(vp, pc)?,
                }
            }
            Site::Wrmsr => {
                let r = self.gdb.read_regs(&["rcx", "rax", "rdx"])?;
                let (msr, value) = (r[0] as u32, (r[1] & 0xffff_ffff) | (r[2] << 32));
                let mut mem = GdbMemory {
                    gdb: &mut self.gdb,
                    ram: &self.ram,
                };
                match self.model.wrmsr(vp, msr, value, &mut mem) {
                    Some(Ok(effects)) => {
                        self.gdb.write_pc(pc + X86_INSN_LEN)?;
                        return self.apply(vp, effects);
                    }
                    Some(Err(fault)) => {
                        return Ok(self.unhandled(vp, format!("wrmsr {msr:#x}"), fault))
                    }
                    None => self.step_over(vp, pc)?,
                }
            }
            Site::Vmcall(kind) => {
                // An ordinary hypercall uses RAX/RCX/RDX/R8 only; a VTL switch moves every
                // shared GPR (all but RSP) between the vCPU and the VTLs.
                const HYPERCALL_GPRS: [&str; 4] = ["rax", "rcx", "rdx", "r8"];
                let all = kind != VmcallKind::Hypercall;
                let moved: Vec<(usize, &str)> = X64_SHARED_GPRS
                    .iter()
                    .enumerate()
                    .filter(|(_, (name, _))| all || HYPERCALL_GPRS.contains(name))
                    .map(|(n, &(name, _))| (n, name))
                    .collect();
                let mut names: Vec<&str> = moved.iter().map(|&(_, name)| name).collect();
                if all {
                    // CR2 is shared too (TLFS vsm.md "Shared State").
                    names.push("cr2");
                }
                let values = self.gdb.read_regs(&names)?;
                // The firmware is soft-float and never uses XMM fast input, nor touches XMM.
                let mut regs = X64HypercallRegs::default();
                if all {
                    regs.cr2 = values[moved.len()];
                }
                let gprs = regs.gprs_mut();
                for (&(n, _), value) in moved.iter().zip(values) {
                    *gprs[n] = value;
                }
                let mut mem = GdbMemory {
                    gdb: &mut self.gdb,
                    ram: &self.ram,
                };
                let model = &mut self.model;
                let effects = reexecute(&mut self.stops, || model.vmcall(vp, &mut regs, &mut mem))?;
                let gprs = regs.gprs();
                let mut writes: Vec<(&str, u64)> =
                    moved.iter().map(|&(n, name)| (name, gprs[n])).collect();
                if all {
                    writes.push(("cr2", regs.cr2));
                }
                if effects.advance_ip {
                    writes.push(("rip", pc + VMCALL_LEN));
                }
                self.gdb.write_regs(&writes)?;
                return self.apply(vp, effects);
            }
            Site::Hvc(imm) => {
                const NAMES: [&str; ARM64_GPRS] = [
                    "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11",
                    "x12", "x13", "x14", "x15", "x16", "x17", "x18", "x19", "x20", "x21", "x22",
                    "x23", "x24", "x25", "x26", "x27", "x28", "x29", "x30",
                ];
                // An ordinary `hvc` uses X0..X17; the VTL return moves X0..X30, the shared ones
                // between the VTLs and the private ones (X18, X29, X30) kept for VTL2.
                let moved = if imm == hvdef::aarch64::HVC_IMM_VTL_RETURN {
                    &NAMES[..]
                } else {
                    &NAMES[..18]
                };
                let values = self.gdb.read_regs(moved)?;
                let mut regs = [0u64; ARM64_GPRS];
                regs[..moved.len()].copy_from_slice(&values);
                let mut mem = GdbMemory {
                    gdb: &mut self.gdb,
                    ram: &self.ram,
                };
                let model = &mut self.model;
                let effects =
                    reexecute(&mut self.stops, || model.hvc(vp, imm, &mut regs, &mut mem))?;
                let mut writes: Vec<(&str, u64)> = moved.iter().copied().zip(regs).collect();
                if effects.advance_ip {
                    writes.push(("pc", pc + HVC_LEN));
                }
                self.gdb.write_regs(&writes)?;
                return self.apply(vp, effects);
            }
        }
        Ok(true)
    }

    /// Runs the instruction at `pc` natively on `vp` alone (not the hypervisor's: a native
    /// CPUID leaf or MSR), then re-arms its trap.
    fn step_over(&mut self, vp: u32, pc: u64) -> Result<()> {
        self.gdb.remove_breakpoint(pc)?;
        let stop = self.gdb.step_thread(vp + 1)?;
        self.stops += 1;
        self.gdb.set_breakpoint(pc)?;
        if stop.thread.is_some_and(|t| t != vp + 1) {
            bail!(
                "stepping vp{vp} over {pc:#x} stopped vCPU thread {:?}",
                stop.thread
            );
        }
        Ok(())
    }

    /// A fault the model wants raised: the session cannot inject exceptions, so the run ends
    /// with the reason recorded (the firmware would have died of it anyway).
    fn unhandled(&mut self, vp: u32, what: String, fault: Fault) -> bool {
        self.fault = Some(format!(
            "vp{vp}: {what} raised {fault:?}, which the mock cannot inject"
        ));
        false
    }

    /// Carries out what the model asked for; false ends the run.
    fn apply(&mut self, vp: u32, effects: Effects) -> Result<bool> {
        if let Some(fault) = effects.fault {
            return Ok(self.unhandled(vp, "a hypercall".into(), fault));
        }
        match effects.hypercall_page {
            Some(HypercallPageChange::Enabled { gpa, vmcall_sites }) => {
                for (offset, kind) in vmcall_sites {
                    let addr = gpa + offset;
                    self.sites.insert(addr, Site::Vmcall(kind));
                    self.gdb.set_breakpoint(addr)?;
                }
            }
            Some(HypercallPageChange::Disabled { gpa }) => {
                let gone: Vec<u64> = self
                    .sites
                    .iter()
                    .filter(|(a, s)| matches!(s, Site::Vmcall(_)) && (gpa..gpa + 4096).contains(*a))
                    .map(|(a, _)| *a)
                    .collect();
                for addr in gone {
                    self.sites.remove(&addr);
                    self.gdb.remove_breakpoint(addr)?;
                }
            }
            None => {}
        }
        if let Some(start) = effects.start_vp {
            self.start_vcpu(vp, start)?;
        }
        if effects.finished {
            // This VP's VTL0 has nothing left to run: park its vCPU.
            return Ok(self.park(vp));
        }
        Ok(true)
    }

    /// Stops resuming `vp`. The run is over (false) when every started VP is parked.
    fn park(&mut self, vp: u32) -> bool {
        self.parked.insert(vp);
        let started = (0..self.vp_count)
            .filter(|&v| self.model.vp_started(v))
            .count();
        if self.parked.len() >= started {
            self.finished = true;
            return false;
        }
        true
    }

    /// Really starts `start.vp`'s vCPU, borrowing the calling vCPU (stopped after its
    /// hypercall completed) and restoring it afterwards. Only the caller runs meanwhile.
    fn start_vcpu(&mut self, caller: u32, start: StartVp) -> Result<()> {
        let thread = caller + 1;
        match start.context {
            InitialVpContext::X64(ctx) => {
                if !self.trampoline_written {
                    self.gdb
                        .write_mem(vcpu_start::X86_TRAMPOLINE, &vcpu_start::x86_trampoline())?;
                    self.trampoline_written = true;
                }
                let (slot_gpa, slot) = vcpu_start::x86_slot(start.vp, &ctx);
                self.gdb.write_mem(slot_gpa, &slot)?;
                let saved = self.gdb.read_regs(&["rip", "rdi"])?;
                let (stub, end) = vcpu_start::x86_ipi_stub(start.vp);
                let end = vcpu_start::X86_STUB + end;
                self.gdb.write_mem(vcpu_start::X86_STUB, &stub)?;
                self.gdb.write_pc(vcpu_start::X86_STUB)?;
                self.gdb.set_breakpoint(end)?;
                self.gdb.cont_thread(thread)?;
                let stop = self.gdb.wait_stop(Duration::from_secs(10))?;
                self.stops += 1;
                self.gdb.remove_breakpoint(end)?;
                let pc = self.gdb.read_pc()?;
                if stop.thread != Some(thread) || pc != end {
                    bail!(
                        "the IPI stub on vp{caller} stopped at {pc:#x} on thread {:?}",
                        stop.thread
                    );
                }
                self.gdb
                    .write_regs(&[("rip", saved[0]), ("rdi", saved[1])])?;
            }
            InitialVpContext::Aarch64(ctx) => {
                if !self.trampoline_written {
                    self.gdb.write_mem(
                        vcpu_start::ARM64_TRAMPOLINE,
                        &vcpu_start::arm64_trampoline(),
                    )?;
                    self.trampoline_written = true;
                }
                let (slot_gpa, slot) = vcpu_start::arm64_slot(start.vp, &ctx);
                self.gdb.write_mem(slot_gpa, &slot)?;
                const SAVED: [&str; 5] = ["x0", "x1", "x2", "x3", "pc"];
                let saved = self.gdb.read_regs(&SAVED)?;
                // The hvc the caller just completed: run it again as PSCI CPU_ON, natively.
                let site = saved[4] - HVC_LEN;
                self.gdb.write_regs(&[
                    ("x0", vcpu_start::PSCI_CPU_ON),
                    ("x1", vcpu_start::arm64_mpidr(start.vp)),
                    ("x2", vcpu_start::ARM64_TRAMPOLINE),
                    ("x3", slot_gpa),
                    ("pc", site),
                ])?;
                self.gdb.remove_breakpoint(site)?;
                let stop = self.gdb.step_thread(thread)?;
                self.stops += 1;
                self.gdb.set_breakpoint(site)?;
                let result = self.gdb.read_reg("x0")?;
                let restore: Vec<(&str, u64)> =
                    SAVED.iter().copied().zip(saved.iter().copied()).collect();
                self.gdb.write_regs(&restore)?;
                if stop.thread != Some(thread) || result != 0 {
                    bail!(
                        "PSCI CPU_ON for vp{} from vp{caller} returned {result:#x} (stop on thread {:?})",
                        start.vp,
                        stop.thread
                    );
                }
            }
        }
        Ok(())
    }
}
