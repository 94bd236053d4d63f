//! The x86 host's life: the runner's configuration page read, SVM on, the paravisor's entry
//! (a PVH start info the host builds for its ELF, or an IGVM file's VTL2 context) and nested
//! tables set up, then VMRUN in a loop, every exit served by the model through `hv::x86_64`.
//! The model's trace goes to the debugcon port in `hvmodel`'s wire format when the runner asks
//! for it, in batches and before every end of the run.
#![expect(
    unsafe_code,
    reason = "VMRUN, the guest's entry state and its memory are raw"
)]

use crate::hv::x86_64::{Glue, LowerNext, LowerRegs, Vcpu, RAX, RBX, RCX, RDX};
use crate::hv::{self, Next};
use crate::memory::PhysMemory;
use crate::pvh;
use crate::x86_64::{self as arch, Cpu, ExceptionFrame, Exit, Guest};
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, Ordering};
use hvdef::x86_64::HvX64InitialVpContext;
use hvdef::{HvInterceptAccessType, HvMapGpaFlags, Vtl, HV_PAGE_SHIFT};
use hvmodel::{GuestMemory, InitialVpContext, LowerExit, Model, StartVp};
use zerocopy::FromBytes;

macro_rules! println {
    ($($arg:tt)*) => {
        arch::print(format_args!("invm: {}\n", format_args!($($arg)*)))
    };
}

/// The host's own memory (see invm-x86_64.ld), outside the nested tables: guest RAM is the
/// machine's RAM without it.
const HOST_RAM: Range<u64> = invm_abi::HOST_RAM_X86_64;
/// Where the paravisor's start info, memory map and command line are written: low RAM, below
/// QEMU's 0x9fc00 and clear of the paravisor's image at 1 MiB.
const START_INFO: u64 = 0x7000;
/// Where the ACPI tables the paravisor counts its VPs in go (`pvh::acpi_tables`): the page
/// after the start info's.
const ACPI: u64 = START_INFO + 0x1000;
/// Where the paravisor's PVH note is looked for: its image, loaded at 1 MiB.
const IMAGE: Range<u64> = 0x10_0000..0x110_0000;

unsafe extern "C" {
    static __host_start: u8;
    static __host_end: u8;
}

fn fail(args: core::fmt::Arguments<'_>) -> ! {
    println!("FAIL: {args}");
    arch::exit(arch::EXIT_FAIL)
}

/// Trace events kept in the host before they are written out, once VTL0 runs. Until then every
/// exit's events go out at once: the paravisor's own failure exit (isa-debug-exit, straight to
/// QEMU) would lose what the host still holds, and a boot's trace is what a failed boot is
/// diagnosed by.
const TRACE_BATCH: usize = 256;

/// The model's trace on its way out: whether the runner wants it (without, the model keeps
/// none).
struct Trace {
    wanted: bool,
}

impl Trace {
    /// Writes the trace so far to the trace port (if wanted) and forgets it.
    fn flush(&mut self, model: &mut Model) {
        let trace = model.take_trace();
        if !self.wanted {
            return;
        }
        let mut bytes = Vec::new();
        for event in trace.events() {
            event.encode(&mut bytes);
        }
        arch::trace_write(&bytes);
    }

    /// Hypercalls the model served so far.
    fn calls(&self, model: &Model) -> u64 {
        model.hypercalls_seen()
    }

    /// Ends the run: the trace is written out first, so the runner sees what led here.
    fn stop(&mut self, model: &mut Model, pass: bool, args: core::fmt::Arguments<'_>) -> ! {
        self.flush(model);
        if pass {
            println!("{args}");
            arch::exit(arch::EXIT_PASS)
        }
        fail(args)
    }
}

/// Rust entry from the PVH stub: long mode over the host's identity map, BSS zeroed.
#[unsafe(no_mangle)]
extern "C" fn invm_main(start_info: u32) -> ! {
    arch::install_idt();
    println!("in-VM mock Hyper-V (x86_64, AMD SVM), PVH start info {start_info:#x}");
    let (host_start, host_end) = (&raw const __host_start as u64, &raw const __host_end as u64);
    if host_start < HOST_RAM.start || host_end > HOST_RAM.end {
        fail(format_args!(
            "the host at {host_start:#x}..{host_end:#x} is not inside its own memory \
             {HOST_RAM:#x?}"
        ));
    }
    if host_end > invm_abi::SCENARIO_GPA_X86_64 {
        fail(format_args!(
            "the host at {host_start:#x}..{host_end:#x} covers the runner's scenario and \
             configuration page at {:#x}..",
            invm_abi::SCENARIO_GPA_X86_64
        ));
    }
    crate::heap::init();
    // SAFETY: the page lies in the host's own identity-mapped range above its image (checked
    // above against __host_end), outside the guest's nested tables; the loader wrote it.
    let config = unsafe { crate::runner::config(invm_abi::CONFIG_GPA_X86_64) };
    if config.unknown_flags() != 0 {
        fail(format_args!(
            "configuration flags {:#x} unknown to this host",
            config.unknown_flags()
        ));
    }
    let vp_count = config.vps();
    if vp_count > arch::MAX_VPS as u64 {
        fail(format_args!(
            "{vp_count} VPs asked for; this host runs at most {} (one QEMU CPU each)",
            arch::MAX_VPS
        ));
    }
    if let Err(why) = arch::enable(0) {
        fail(format_args!("{why}"));
    }
    // The guest's RAM: the machine's without the host's own 16 MiB and its AP trampoline's
    // page. Page 0 is the guest's, as on q35 (see `pvh_start`).
    let ram = match config
        .machine_ram(invm_abi::DEFAULT_RAM_X86_64)
        .and_then(|machine| machine.guest_x86_64())
    {
        Ok(ram) => ram,
        Err(e) => fail(format_args!("the runner's RAM layout: {e}")),
    };
    if let Err(why) = arch::map_high_ram(ram.ranges()) {
        fail(format_args!("{why}"));
    }
    // SAFETY: the guest's RAM is identity-mapped by the host's page tables (the static 4 GiB
    // and `map_high_ram`'s) and leaves out the host's own memory (`guest_x86_64`): it holds no
    // host data.
    let mem = unsafe { PhysMemory::new(ram.ranges()) };
    let mut cpu = Vcpu::default();
    let context = config
        .x64_context()
        .map(|bytes| HvX64InitialVpContext::read_from_bytes(bytes).expect("sized"));
    let entry = match &context {
        Some(ctx) => ctx.rip,
        None => {
            // SAFETY: the guest's RAM is identity-mapped and holds no host data: QEMU's start
            // info and its memory map are read here, before the guest runs.
            let mut boot_mem = unsafe { PhysMemory::new(ram.ranges()) };
            pvh_start(&mut boot_mem, start_info, vp_count as u8, &mut cpu, &ram)
        }
    };
    let guest = match Guest::new(ram.ranges()) {
        Ok(guest) => guest,
        Err(e) => fail(format_args!("nested page tables: {e}")),
    };
    let Some(mut vp0) = guest.cpu(0) else {
        fail(format_args!("no VMCB for VP 0"))
    };
    cpu.rip = entry;
    match &context {
        Some(ctx) => {
            vp0.load_context(ctx, &mut cpu);
            println!(
                "entering the paravisor with its IGVM VTL2 context: RIP {:#x}, CR0 {:#x}, CR3 \
                 {:#x}, CR4 {:#x}, EFER {:#x}, nested paging over {ram}",
                ctx.rip, ctx.cr0, ctx.cr3, ctx.cr4, ctx.efer
            );
        }
        None => {
            vp0.pvh_entry(entry);
            println!(
                "entering the paravisor in 32-bit protected mode at {entry:#x}, EBX \
                 {START_INFO:#x}, nested paging over {ram}"
            )
        }
    }
    let trace = Trace {
        wanted: config.trace_path().is_some(),
    };
    // SAFETY: the scenario's room lies between the host's image (checked above) and the
    // configuration page, outside the guest's nested tables.
    let scenario = match unsafe { crate::runner::scenario(&config, invm_abi::SCENARIO_GPA_X86_64) }
    {
        Ok(scenario) => scenario,
        Err(len) => fail(format_args!(
            "the runner's scenario is {len} bytes, more than the {} this host has room for",
            invm_abi::SCENARIO_MAX
        )),
    };
    if let Some(bytes) = scenario {
        println!("the runner's scenario ({} bytes)", bytes.len());
    }
    let mut model = hv::runner_partition(
        hvmodel::Arch::X86_64,
        ram.ranges(),
        vp_count as u32,
        scenario,
    )
    .unwrap_or_else(|why| fail(format_args!("{why}")));
    model.set_tracing(trace.wanted);
    let live = config.live_vtl0();
    if live {
        model.vtl0().set_live(true);
        if config.vtl0_pc != 0 {
            for (name, value) in hv::x86_64::protected_mode_entry(config.vtl0_pc) {
                model.set_vp_state(0, Vtl::VTL0, name, value);
            }
        }
        println!(
            "VTL0 runs for real after the paravisor's first VtlReturn (reset RIP {:#x})",
            config.vtl0_pc
        );
    }
    *HOST.lock() = Some(Host {
        model,
        mem,
        guest,
        glue: Glue::default(),
        trace,
        exits: 0,
        live,
        parked: 0,
        halted: 0,
        vtl0_ran: false,
        starts: (0..vp_count).map(|_| None).collect(),
        waiting: alloc::vec![false; vp_count as usize],
        count_vtl2: config.count_vtl2(),
    });
    run_vp(Vp {
        vp: 0,
        cpu: vp0,
        vtl2: cpu,
        vtl0: None,
        vtl0_entries: 0,
        vtl2_work: None,
    })
}

/// A CPU the host started for HvCallStartVirtualProcessor (`arch::start_ap`): SVM on as on
/// the boot CPU, then the paravisor's VP at the context the model accepted.
#[unsafe(no_mangle)]
extern "C" fn invm_ap_main(vp: u64) -> ! {
    arch::ap_started();
    arch::load_idt();
    if let Err(why) = arch::enable(vp as usize) {
        fail(format_args!("VP {vp}: {why}"));
    }
    let mut guard = HOST.lock();
    let Some(host) = guard.as_mut() else {
        fail(format_args!("VP {vp} started before the host"))
    };
    let context = host.starts.get_mut(vp as usize).and_then(Option::take);
    let (Some(context), Some(mut cpu)) = (context, host.guest.cpu(vp as usize)) else {
        host.stop(
            false,
            format_args!("CPU {vp} started with no VP context (or VMCB) waiting for it"),
        )
    };
    drop(guard);
    let mut vtl2 = Vcpu::default();
    cpu.load_context(&context, &mut vtl2);
    run_vp(Vp {
        vp: vp as u32,
        cpu,
        vtl2,
        vtl0: None,
        vtl0_entries: 0,
        vtl2_work: None,
    })
}

/// Runs one VP on its CPU for good: the guest outside the host's lock, each exit inside it.
fn run_vp(mut me: Vp) -> ! {
    loop {
        let exit = match &mut me.vtl0 {
            None => me.cpu.run(&mut me.vtl2),
            Some(regs) => me.cpu.run_lower(regs),
        };
        let mut guard = HOST.lock();
        let Some(host) = guard.as_mut() else {
            fail(format_args!("VP {}: an exit before the host", me.vp))
        };
        host.exits += 1;
        if me.vtl0.is_none() {
            if let Some(work) = me.vtl2_work.as_mut() {
                *work += exit.instructions;
            }
        }
        let after = if me.vtl0.is_some() {
            host.vtl0_exit(&mut me, exit)
        } else {
            host.vtl2_exit(&mut me, exit)
        };
        if me.vtl0.is_some() {
            host.vtl0_ran = true;
        }
        host.wake_started_vtl0s();
        let held = host.model.trace().events().len();
        if held >= TRACE_BATCH || (held > 0 && !host.vtl0_ran) {
            host.trace.flush(&mut host.model);
        }
        drop(guard);
        match after {
            After::Resume => {}
            After::Park => arch::park(),
            After::WaitVtl0 => {
                // Until VTL0 on another VP starts this VP's VTL0 (`wake_started_vtl0s`).
                while !WAKE[me.vp as usize].swap(false, Ordering::Acquire) {
                    core::hint::spin_loop();
                }
                let mut guard = HOST.lock();
                let Some(host) = guard.as_mut() else {
                    fail(format_args!("VP {}: woken before the host", me.vp))
                };
                if host.run_lower(&mut me) != After::Resume {
                    host.stop(
                        false,
                        format_args!("VP {}: woken for a VTL0 that does not run", me.vp),
                    )
                }
            }
        }
    }
}

/// Per VP: its VTL0 was started while its CPU waited for it (`After::WaitVtl0`).
static WAKE: [AtomicBool; arch::MAX_VPS] = [const { AtomicBool::new(false) }; arch::MAX_VPS];

/// The partition, shared by the VPs' CPUs behind [`HOST`].
struct Host {
    model: Model,
    mem: PhysMemory,
    guest: Guest,
    glue: Glue,
    trace: Trace,
    exits: u64,
    /// VTL0 runs for real after the paravisor's first VtlReturn (the runner's configuration).
    live: bool,
    /// VPs with nothing left to run (their CPUs wait in `arch::park`).
    parked: u32,
    /// VPs that halted in VTL2 (a `hlt` the host cannot wake), bit per VP.
    halted: u128,
    /// Some VP has entered VTL0 (the trace goes out in batches from then on).
    vtl0_ran: bool,
    /// The context HvCallStartVirtualProcessor gave each VP, until its CPU picks it up.
    starts: Vec<Option<HvX64InitialVpContext>>,
    /// Per VP: its VTL2 returned to a VTL0 nothing has started yet, and its CPU waits for a
    /// StartVirtualProcessor of that VTL0 (counted in `parked` meanwhile).
    waiting: Vec<bool>,
    /// Count VTL2's instructions per intercept (the runner's FLAG_COUNT_VTL2).
    count_vtl2: bool,
}

static HOST: spin::Mutex<Option<Host>> = spin::Mutex::new(None);

/// One VP, owned by its CPU: its VMCBs, VTL2's registers (while VTL0 runs, as VTL2 left them
/// at its VtlReturn, RIP on it) and, while it runs, VTL0's whole state.
struct Vp {
    vp: u32,
    cpu: Cpu,
    vtl2: Vcpu,
    vtl0: Option<LowerRegs>,
    /// How often VTL2 returned into a live VTL0 (the first entry gets a console line).
    vtl0_entries: u64,
    /// Counting (the runner's FLAG_COUNT_VTL2): VTL2's instructions since it was handed an
    /// intercept, summed over its runs until its VtlReturn (the host's exits left out: each
    /// run's figure is the guest's alone, see `svm::Exit::instructions`).
    vtl2_work: Option<u64>,
}

/// What the CPU does once an exit is served.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    Resume,
    /// Nothing more to run: it waits, without the host's lock.
    Park,
    /// Its VTL0 has not been started: it waits, without the host's lock, until it is.
    WaitVtl0,
}

impl Host {
    fn stop(&mut self, pass: bool, args: core::fmt::Arguments<'_>) -> ! {
        self.trace.stop(&mut self.model, pass, args)
    }

    /// `vp` has nothing left to run; the run is over (pass) when every started VP has not.
    fn park(&mut self, vp: u32, why: core::fmt::Arguments<'_>) -> After {
        self.parked += 1;
        let started = (0..self.starts.len() as u32)
            .filter(|&v| self.model.vp_started(v))
            .count() as u32;
        if self.parked < started {
            // No line: the other VPs' own console output may be under way, and a host line in
            // the middle of theirs would garble both (each CPU writes the UART itself).
            let _ = (vp, why);
            return After::Park;
        }
        let (exits, calls) = (self.exits, self.trace.calls(&self.model));
        if self.halted != 0 {
            let halted = self.halted;
            self.stop(
                false,
                format_args!(
                    "every VP is parked and VPs {halted:#x} (bit per VP) halted in VTL2: done \
                     after {exits} exits ({calls} hypercalls)"
                ),
            )
        }
        self.stop(
            true,
            format_args!("{why}: done after {exits} exits ({calls} hypercalls)"),
        )
    }

    /// HvCallStartVirtualProcessor succeeded: the VP's own CPU starts and picks up its context.
    fn start_vp(&mut self, start: StartVp) {
        let InitialVpContext::X64(context) = start.context else {
            self.stop(
                false,
                format_args!("VP {}: an arm64 start context on x86", start.vp),
            )
        };
        let Some(slot) = self.starts.get_mut(start.vp as usize) else {
            self.stop(
                false,
                format_args!("VP {} started: the host has no CPU for it", start.vp),
            )
        };
        *slot = Some(context);
        println!("starting VP {} at RIP {:#x}", start.vp, context.rip);
        if !arch::start_ap(start.vp) {
            self.stop(
                false,
                format_args!(
                    "VP {}'s CPU did not start (INIT-SIPI-SIPI to APIC ID {}: is QEMU's -smp \
                     at least the VP count?)",
                    start.vp, start.vp
                ),
            )
        }
    }

    /// VTL2 returned to VTL0, which runs for real now from the state the model holds; on a VP
    /// whose VTL0 nothing has started yet (no entry point), the CPU waits for VTL0 on another
    /// VP to start it (HvCallStartVirtualProcessor: TLFS vsm.md, INIT/SIPI for a lower VTL are
    /// dropped once a higher VTL is enabled).
    fn run_lower(&mut self, me: &mut Vp) -> After {
        let vp = me.vp;
        match hv::x86_64::enter_lower(&mut self.model, vp) {
            Ok(regs) if regs.cpu.rip == 0 => {
                if vp == 0 {
                    self.stop(
                        false,
                        format_args!(
                            "VP 0: VTL0 has no entry point (RIP 0): the paravisor set none and \
                             the runner gave no reset RIP"
                        ),
                    )
                }
                if self.park(vp, format_args!("VTL0 never started on it")) == After::Park {
                    self.waiting[vp as usize] = true;
                    return After::WaitVtl0;
                }
                After::Park
            }
            Ok(regs) => {
                if let Some(work) = me.vtl2_work.take() {
                    arch::print(format_args!(
                        "{}{vp}, {work} instructions\n",
                        invm_abi::VTL2_WORK_LINE
                    ));
                }
                me.vtl0_entries += 1;
                // Only VP 0's first entry gets a line: VTL0 on another VP may be printing.
                if me.vtl0_entries == 1 && vp == 0 {
                    println!(
                        "VP {vp}: VTL0 runs from RIP {:#x}, CR0 {:#x}, EFER {:#x}",
                        regs.cpu.rip, regs.cr0, regs.efer
                    );
                }
                me.vtl0 = Some(regs);
                After::Resume
            }
            Err(why) => self.stop(false, format_args!("VP {vp}: entering VTL0: {why}")),
        }
    }

    /// The VPs whose VTL0 was just started (HvCallStartVirtualProcessor, `Model::
    /// take_lower_starts`): a CPU waiting for it runs it now.
    fn wake_started_vtl0s(&mut self) {
        for vp in self.model.take_lower_starts() {
            if !self.model.vtl_started(vp, Vtl::VTL2) {
                self.stop(
                    false,
                    format_args!(
                        "VTL0 started VP {vp}, where VTL2 never ran: this host runs a VP's VTL0 \
                         only after its VTL2 returns to it (did the paravisor see {} VPs?)",
                        self.starts.len()
                    ),
                )
            }
            if let Some(waiting) = self.waiting.get_mut(vp as usize) {
                if core::mem::take(waiting) {
                    self.parked -= 1;
                    WAKE[vp as usize].store(true, Ordering::Release);
                }
            }
        }
    }

    /// VTL2 exited: served by the glue and the model.
    fn vtl2_exit(&mut self, me: &mut Vp, exit: Exit) -> After {
        let vp = me.vp;
        let cpu = &mut me.vtl2;
        let rip = cpu.rip;
        let (model, mem, glue) = (&mut self.model, &mut self.mem, &mut self.glue);
        let next = match exit.code {
            arch::EXIT_CPUID => glue.cpuid(model, vp, cpu, arch::cpuid),
            arch::EXIT_MSR if cpu.gprs[RCX] as u32 == arch::MSR_EFER => {
                // The host's, not the model's (EFER is architectural, not Hyper-V's).
                if exit.info1 == 0 {
                    let efer = me.cpu.efer();
                    cpu.gprs[RAX] = efer & 0xffff_ffff;
                    cpu.gprs[RDX] = efer >> 32;
                } else {
                    let new = (cpu.gprs[RAX] & 0xffff_ffff) | (cpu.gprs[RDX] << 32);
                    let (_, _, cr0, _) = me.cpu.control();
                    match hv::x86_64::efer_write(me.cpu.efer(), new, cr0) {
                        Some(efer) => me.cpu.set_efer(efer),
                        None => {
                            // A #GP, as the CPU raises it: RIP stays on the wrmsr.
                            cpu.inject = Some(hvmodel::Fault::Gp);
                            return After::Resume;
                        }
                    }
                }
                cpu.rip += hv::x86_64::MSR_LEN;
                Next::Resume
            }
            arch::EXIT_MSR if crate::msrpm::SVM_MSRS.contains(&(cpu.gprs[RCX] as u32)) => {
                let why = alloc::format!(
                    "VP {vp} VTL2: the guest {} SVM's MSR {:#x} at {rip:#x}",
                    if exit.info1 == 0 { "read" } else { "wrote" },
                    cpu.gprs[RCX] as u32
                );
                self.stop(false, format_args!("{why}"))
            }
            arch::EXIT_MSR if exit.info1 == 0 => glue.rdmsr(model, vp, cpu, arch::rdmsr),
            arch::EXIT_MSR => glue.wrmsr(model, vp, cpu, mem, native_wrmsr),
            arch::EXIT_VMMCALL => glue.vmmcall(model, vp, cpu, mem),
            arch::EXIT_HLT => {
                // A VP that halts with interrupts off (RFLAGS.IF clear) is stopped for good, as
                // on Hyper-V; one that could take an interrupt waits for one this host never
                // sends. Either way it is done: it parks as halted, and the run fails once all
                // are parked.
                let (_, rflags, _, _) = me.cpu.control();
                println!(
                    "VP {vp} halted in VTL2 at {rip:#x} (hlt, {})",
                    if rflags & (1 << 9) == 0 {
                        "interrupts masked"
                    } else {
                        "no interrupt will come"
                    }
                );
                self.halted |= 1u128 << vp;
                return self.park(vp, format_args!("halted in VTL2"));
            }
            _ => {
                let why = unexpected(&me.cpu, &exit, rip);
                self.stop(false, format_args!("VP {vp} VTL2: {why}"))
            }
        };
        if self.live {
            if let Err(why) = self.sync_protections() {
                self.stop(false, format_args!("VP {vp} VTL2: {why}"));
            }
        }
        match next {
            Next::Resume => {}
            Next::Start(start) => self.start_vp(*start),
            Next::Finished => {
                return self.park(
                    vp,
                    format_args!("the paravisor returned to VTL0 with an empty VTL0 script"),
                )
            }
            Next::RunLower => return self.run_lower(me),
            Next::Unsupported(why) => self.stop(
                false,
                format_args!("VP {vp} VTL2: exit {:#x} at {rip:#x}: {why}", exit.code),
            ),
            Next::Undefined => self.stop(
                false,
                format_args!(
                    "VP {vp} VTL2: exit {:#x} at {rip:#x}: an arm64 outcome",
                    exit.code
                ),
            ),
        }
        After::Resume
    }

    /// VTL0 exited: CPUID and MSRs as VTL2's (EFER is the host's to keep SVME in), a
    /// hypercall or an access its nested tables stopped through the model (which may hand it
    /// to VTL2), isa-debug-exit as the end of the run.
    fn vtl0_exit(&mut self, me: &mut Vp, exit: Exit) -> After {
        let vp = me.vp;
        let Some(mut regs) = me.vtl0.take() else {
            return After::Resume;
        };
        let rip = regs.cpu.rip;
        let (model, mem, glue) = (&mut self.model, &mut self.mem, &mut self.glue);
        let cpu = &mut regs.cpu;
        let msr = cpu.gprs[RCX] as u32;
        let lower_exit = match exit.code {
            arch::EXIT_CPUID => {
                glue.cpuid(model, vp, cpu, arch::cpuid);
                None
            }
            arch::EXIT_MSR if msr == arch::MSR_EFER => {
                if exit.info1 == 0 {
                    cpu.gprs[RAX] = regs.efer & 0xffff_ffff;
                    cpu.gprs[RDX] = regs.efer >> 32;
                    cpu.rip += hv::x86_64::MSR_LEN;
                } else {
                    let new = (cpu.gprs[RAX] & 0xffff_ffff) | (cpu.gprs[RDX] << 32);
                    match hv::x86_64::efer_write(regs.efer, new, regs.cr0) {
                        Some(efer) => {
                            regs.efer = efer;
                            cpu.rip += hv::x86_64::MSR_LEN;
                        }
                        // A #GP, as the CPU raises it: RIP stays on the wrmsr.
                        None => {
                            regs.exception = Some(hv::x86_64::X64Exception {
                                vector: 13,
                                error_code: Some(0),
                            })
                        }
                    }
                }
                None
            }
            arch::EXIT_MSR if crate::msrpm::SVM_MSRS.contains(&msr) => self.stop(
                false,
                format_args!("VP {vp} VTL0: SVM's MSR {msr:#x} accessed at RIP {rip:#x}"),
            ),
            arch::EXIT_MSR if exit.info1 == 0 => {
                glue.rdmsr(model, vp, cpu, arch::rdmsr);
                None
            }
            arch::EXIT_MSR => {
                glue.wrmsr(model, vp, cpu, mem, native_wrmsr);
                None
            }
            arch::EXIT_VMMCALL => Some(LowerExit::Hypercall { immediate: 0 }),
            arch::EXIT_NPF => {
                // EXITINFO1: bit 1 a write, bit 4 an instruction fetch. No decode assist: the
                // access's size is unknown, so one byte (the GPA is exact).
                let access = if exit.info1 & (1 << 4) != 0 {
                    HvInterceptAccessType::EXECUTE
                } else if exit.info1 & (1 << 1) != 0 {
                    HvInterceptAccessType::WRITE
                } else {
                    HvInterceptAccessType::READ
                };
                // EXITINTINFO valid (bit 31): the fault hit while the CPU delivered that event
                // (an IDT, GDT or stack access on the page: AMD APM vol. 2, 15.7.2).
                let (_, _, _, _, int_info) = me.cpu.lower_control();
                Some(LowerExit::Access {
                    gpa: exit.info2,
                    len: 1,
                    access,
                    delivering_event: int_info & (1 << 31) != 0,
                })
            }
            // A triple fault (AMD APM vol. 2, 8.2.9: an exception while delivering #DF).
            arch::EXIT_SHUTDOWN => Some(LowerExit::Unrecoverable),
            arch::EXIT_IOIO if exit.info1 >> 16 == u64::from(arch::DEBUG_EXIT_PORT) => {
                // `out` (type bit 0 clear) of AL: the kernel's verdict. The trace goes out
                // first, then the host makes the same write, so QEMU exits with its code.
                if exit.info1 & 1 != 0 {
                    self.stop(
                        false,
                        format_args!("VP {vp} VTL0: an `in` from isa-debug-exit at RIP {rip:#x}"),
                    )
                }
                let value = cpu.gprs[RAX] as u8;
                let (exits, calls) = (self.exits, self.trace.calls(&self.model));
                self.trace.flush(&mut self.model);
                println!(
                    "VTL0 wrote {value:#x} to isa-debug-exit on VP {vp}: done after {exits} \
                     exits ({calls} hypercalls)"
                );
                arch::exit(u64::from(value) << 1 | 1)
            }
            arch::EXIT_HLT => self.stop(
                false,
                format_args!(
                    "VP {vp} VTL0: halted (hlt) at RIP {rip:#x}: nothing can wake it in this host"
                ),
            ),
            _ => {
                let (cpl, rflags, cr0, cr3, int_info) = me.cpu.lower_control();
                self.stop(
                    false,
                    format_args!(
                        "VP {vp} VTL0: unexpected exit {:#x}{} at RIP {rip:#x}: EXITINFO1 \
                         {:#x}, EXITINFO2 {:#x}, EXITINTINFO {int_info:#x}, CPL {cpl}, RFLAGS \
                         {rflags:#x}, CR0 {cr0:#x}, CR3 {cr3:#x}",
                        exit.code,
                        exit_name(exit.code),
                        exit.info1,
                        exit.info2,
                    ),
                )
            }
        };
        let Some(lower_exit) = lower_exit else {
            me.vtl0 = Some(regs);
            return After::Resume;
        };
        match hv::x86_64::lower_exit(model, vp, lower_exit, &mut regs, &mut me.vtl2, mem) {
            LowerNext::Resume(next) => me.vtl0 = Some(*next),
            LowerNext::Vtl2 => {
                if self.count_vtl2 {
                    me.vtl2_work = Some(0);
                }
            }
            LowerNext::Finished if exit.code == arch::EXIT_SHUTDOWN => self.stop(
                false,
                format_args!(
                    "VP {vp}: VTL0 triple-faulted (shutdown) at RIP {rip:#x} and the partition \
                     reset (VTL2 does not intercept unrecoverable exceptions): a reset ends the \
                     run in this host"
                ),
            ),
            LowerNext::Finished => self.stop(
                false,
                format_args!("the model reset the partition after VP {vp}'s VTL0 exit at {rip:#x}"),
            ),
            LowerNext::Unsupported(why) => self.stop(
                false,
                format_args!("VP {vp} VTL0: exit {:#x}: {why}", exit.code),
            ),
        }
        After::Resume
    }

    /// VTL0's nested tables follow every protection change VTL2 made
    /// (HvCallModifyVtlProtectionMask).
    fn sync_protections(&mut self) -> Result<(), String> {
        for page in self.model.take_protection_changes() {
            let gpa = page << HV_PAGE_SHIFT;
            let flags: HvMapGpaFlags = self.model.lower_vtl_access(gpa);
            let access = crate::npt::Access {
                read: flags.readable(),
                write: flags.writable(),
                execute: flags.kernel_executable(),
            };
            self.guest
                .set_vtl0_access(gpa, access)
                .map_err(|why| alloc::format!("VTL0's nested tables for GPA {gpa:#x}: {why}"))?;
        }
        Ok(())
    }
}

/// WRMSR of an MSR the model declined.
fn native_wrmsr(msr: u32, value: u64) {
    // SAFETY: besides SVM's own MSRs (refused by the caller) and EFER (the host's for VTL0)
    // only MSRs outside the permission map's ranges exit, and the model declined this one
    // (not the hypervisor's): the CPU's own, which TCG drops when it does not know it, as it
    // would for the guest natively.
    unsafe { arch::wrmsr(msr, value) }
}

fn exit_name(code: u64) -> &'static str {
    match code {
        arch::EXIT_SHUTDOWN => " (shutdown: the guest triple-faulted)",
        arch::EXIT_NPF => " (nested page fault: EXITINFO2 is the GPA)",
        arch::EXIT_INVALID => " (VMRUN refused the guest state)",
        _ => "",
    }
}

/// The ELF boot: QEMU's PVH start info for the host becomes the paravisor's (the host's range
/// cut out of its memory map, its RAM entries limited to the guest's RAM), at START_INFO with
/// EBX pointing at it, with ACPI tables listing the VPs at ACPI (as a VMM gives a PVH guest its
/// MADT); the entry is the paravisor's PVH note.
///
/// Page 0 stays RAM in that map, as q35 reports it (and as the IGVM memory map the runner
/// fills says), and it is the guest's RAM: both VTLs' nested tables map it and the model
/// serves it, so a VTL0 hypercall input there reaches the paravisor as on Hyper-V, and the
/// paravisor, which never maps page 0 (a null pointer), reports it unmapped and refuses such
/// buffers (ACCESS_DENIED). The host's AP trampoline therefore lives in another low page
/// (`invm_abi::AP_TRAMPOLINE_X86_64`), cut from the map like the host's 16 MiB.
fn pvh_start(
    mem: &mut PhysMemory,
    start_info: u32,
    vp_count: u8,
    cpu: &mut Vcpu,
    ram: &invm_abi::Ram,
) -> u64 {
    let mut info = match pvh::read(mem, start_info.into()) {
        Ok(info) => info,
        Err(e) => fail(format_args!(
            "QEMU's PVH start info at {start_info:#x}: {e:?}"
        )),
    };
    let ram_before: u64 = ram_total(&info.memmap);
    let trampoline = arch::TRAMPOLINE..arch::TRAMPOLINE + 0x1000;
    info.memmap = pvh::limit_ram(
        &pvh::cut(&pvh::cut(&info.memmap, &HOST_RAM), &trampoline),
        ram.ranges(),
    );
    println!(
        "PVH memory map: RAM {ram_before:#x} bytes cut to {:#x} ({:#x}..{:#x} and the AP \
         trampoline's {:#x}..{:#x} are the host's)",
        ram_total(&info.memmap),
        HOST_RAM.start,
        HOST_RAM.end,
        trampoline.start,
        trampoline.end
    );
    if let Err(e) = mem.write(ACPI, &pvh::acpi_tables(ACPI, vp_count)) {
        fail(format_args!("writing the paravisor's ACPI tables: {e:?}"));
    }
    info.rsdp = ACPI;
    if let Err(e) = pvh::write(mem, START_INFO, &info) {
        fail(format_args!("writing the paravisor's start info: {e:?}"));
    }
    cpu.gprs[RBX] = START_INFO;
    match pvh::find_entry(mem, IMAGE) {
        Ok(Some(entry)) if ram.contains(entry, 1) => entry,
        other => fail(format_args!(
            "no PVH entry note in {IMAGE:#x?} (is the paravisor loaded with -device \
             loader,file=paravisor-x86_64.elf?): {other:?}"
        )),
    }
}

fn ram_total(memmap: &[pvh::MemoryEntry]) -> u64 {
    memmap
        .iter()
        .filter(|e| e.kind == pvh::RAM)
        .map(|e| e.size)
        .sum()
}

/// An exit of VTL2's this host does not serve: one line naming it.
fn unexpected(guest: &Cpu, exit: &Exit, rip: u64) -> String {
    if exit.code == arch::EXIT_IOIO {
        return alloc::format!(
            "the guest accessed I/O port {:#x} (the host's trace port) at RIP {rip:#x}",
            exit.info1 >> 16
        );
    }
    let what = match exit.code {
        arch::EXIT_SHUTDOWN => " (shutdown: the guest triple-faulted)",
        arch::EXIT_NPF => " (nested page fault: EXITINFO2 is the GPA)",
        arch::EXIT_INVALID => " (VMRUN refused the guest state)",
        _ => "",
    };
    let (cpl, rflags, cr0, cr3) = guest.control();
    alloc::format!(
        "unexpected exit {:#x}{what} at RIP {rip:#x}: EXITINFO1 {:#x}, EXITINFO2 {:#x}, \
         EXITINTINFO {:#x}, CPL {cpl}, RFLAGS {rflags:#x}, CR0 {cr0:#x}, CR3 {cr3:#x}",
        exit.code,
        exit.info1,
        exit.info2,
        guest.exit_int_info(),
    )
}

/// Every exception in the host itself (the guest's go to its own IDT): one line, then a
/// failing exit. Allocates nothing and takes no lock.
#[unsafe(no_mangle)]
extern "C" fn invm_exception(frame: &ExceptionFrame) -> ! {
    let cr2: u64;
    // SAFETY: reading CR2 has no side effect.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
    fail(format_args!(
        "host exception {} (error {:#x}) at RIP {:#x}, CS {:#x}, RFLAGS {:#x}, RSP {:#x}, CR2 \
         {cr2:#x}",
        frame.vector, frame.error, frame.rip, frame.cs, frame.rflags, frame.rsp
    ))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fail(format_args!("host panic: {info}"))
}
