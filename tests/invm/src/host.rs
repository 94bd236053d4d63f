//! The host's life: set up EL2, build the model, enter the paravisor, then serve its exits.
#![expect(
    unsafe_code,
    reason = "the runner's pages and guest RAM are at raw addresses; the entry is asm"
)]

use crate::aarch64::{self as arch, Guest, Syndrome};
use crate::hv::{self, El1Regs, Frame, LowerNext, Next};
use crate::memory::PhysMemory;
use alloc::vec::Vec;
use core::ops::Range;
use hvdef::aarch64::HvArm64InitialVpContext;
use hvdef::{HvInterceptAccessType, HvMapGpaFlags, Vtl, HV_PAGE_SHIFT};
use hvmodel::{InitialVpContext, LowerExit, Model, StartVp};

macro_rules! println {
    ($($arg:tt)*) => {
        arch::print(format_args!("invm: {}\n", format_args!($($arg)*)))
    };
}

/// Where the paravisor ELF is loaded (QEMU's generic loader) and entered.
const GUEST_ENTRY: u64 = 0x4020_0000;
/// The host's own memory (see invm-aarch64.ld), outside stage 2: guest RAM is the machine's
/// RAM without it.
const HOST_RAM: Range<u64> = invm_abi::HOST_RAM_AARCH64;
/// QEMU virt places the device tree at the start of RAM for ELF images (X0 is 0 then).
const DEFAULT_DTB: u64 = 0x4000_0000;
/// Room for the device tree, up to the paravisor at 0x4020_0000: QEMU's is 1 MiB at most, and it
/// grows by 16 bytes per RAM range beyond the first.
const DTB_MAX: usize = 2 << 20;

/// What the host keeps per VP (one CPU each).
#[derive(Default)]
struct VpState {
    /// The EL1 registers of VTL0 (index 0) and VTL2 (index 1) while the other VTL runs.
    el1: [El1Regs; 2],
    /// VTL2's PC and PSTATE when it returned to VTL0 (past its `hvc`): where it resumes.
    vtl2_resume: Frame,
    /// The context HvCallStartVirtualProcessor gave it, until its CPU picks it up.
    start: Option<HvArm64InitialVpContext>,
    /// The GPA of a VTL0 access the host just let run again (see `vtl0_exit`).
    retried: Option<u64>,
    /// The host switched this VP to its live VTL0 (its exits are VTL0's). Not the model's
    /// active VTL: without VSM the paravisor itself runs in VTL0, and its exits are its own.
    in_vtl0: bool,
    /// Its VTL2 returned to a VTL0 nothing has started yet, and its CPU waits for a
    /// StartVirtualProcessor of that VTL0 (counted in `parked` meanwhile).
    waiting: bool,
    /// Counting (the runner's FLAG_COUNT_VTL2): the cycle counter when VTL2 was handed an
    /// intercept. It counts EL1 and EL0 only, and only VTL2 runs on this CPU until its
    /// VtlReturn, so the difference then is VTL2's work, the host's exits left out.
    vtl2_work_from: Option<u64>,
}

struct Host {
    model: Model,
    mem: PhysMemory,
    /// The guest's RAM: what stage 2 maps, the model's RAM.
    ram: invm_abi::Ram,
    exits: u64,
    vps: Vec<VpState>,
    /// VPs with nothing left to run (their CPUs wait in `arch::park`).
    parked: u32,
    /// VPs that halted in VTL2 (a `wfi` the host cannot wake), bit per VP.
    halted: u128,
    /// Some VP has entered VTL0 (the trace is written in batches from then on).
    vtl0_ran: bool,
    /// Count VTL2's instructions per intercept (the runner's FLAG_COUNT_VTL2).
    count_vtl2: bool,
    /// Where the model's trace goes (the runner asked for it; without, the model keeps none).
    trace: Option<arch::HostFile>,
}

/// Trace events kept in the host before they are written out, once VTL0 runs: bounds the heap a
/// long live run needs. Until then every exit's events are written at once: the paravisor's own
/// failure exit (semihosting, straight to QEMU) would lose what the host still holds, and a
/// boot's trace is what a failed boot is diagnosed by.
const TRACE_BATCH: usize = 256;

impl Host {
    /// Writes the trace so far to the trace file (if any) and forgets it.
    fn flush(&mut self) -> Result<(), &'static str> {
        let trace = self.model.take_trace();
        let Some(file) = &mut self.trace else {
            return Ok(());
        };
        let mut bytes = Vec::new();
        for event in trace.events() {
            event.encode(&mut bytes);
        }
        file.write(&bytes)
    }

    /// Hypercalls the model served so far.
    fn calls(&self) -> u64 {
        self.model.hypercalls_seen()
    }

    /// `vp` has nothing left to run; the run is over (pass) when every started VP has not.
    /// A VP that halted in VTL2 also parks, but the run then fails (a halted VP is not a
    /// finished one).
    fn park(&mut self, vp: u32, why: core::fmt::Arguments<'_>) -> After {
        self.parked += 1;
        let started = (0..self.vps.len() as u32)
            .filter(|&v| self.model.vp_started(v))
            .count() as u32;
        if self.parked < started {
            // No line: the other VPs' own console output may be under way, and a host line in
            // the middle of theirs would garble both (each CPU writes the UART itself).
            let _ = (vp, why);
            return After::Park;
        }
        let (exits, calls) = (self.exits, self.calls());
        if self.halted != 0 {
            let halted = self.halted;
            println!("VP {vp} parked: {why}");
            stop(
                self,
                false,
                format_args!(
                    "every VP is parked and VPs {halted:#x} (bit per VP) halted in VTL2: done \
                     after {exits} exits ({calls} hypercalls)"
                ),
            )
        }
        stop(
            self,
            true,
            format_args!("{why}: done after {exits} exits ({calls} hypercalls)"),
        )
    }
}

/// What the CPU does once an exit is served.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    /// Back into its guest with the frame as the exit left it.
    Resume,
    /// Nothing more to run: it waits, without the host's lock.
    Park,
    /// Its VTL0 has not been started: it waits, without the host's lock, until it is; the
    /// frame is still VTL2's at its VtlReturn.
    WaitVtl0,
}

/// Per CPU (VP): its VTL0 was started while it waited for it (`After::WaitVtl0`).
static WAKE: [core::sync::atomic::AtomicBool; arch::MAX_CPUS as usize] =
    [const { core::sync::atomic::AtomicBool::new(false) }; arch::MAX_CPUS as usize];

impl Host {
    /// The VPs whose VTL0 was just started (HvCallStartVirtualProcessor, `Model::
    /// take_lower_starts`): a CPU waiting for it runs it now.
    fn wake_started_vtl0s(&mut self) {
        for vp in self.model.take_lower_starts() {
            if !self.model.vtl_started(vp, Vtl::VTL2) {
                let vps = self.vps.len();
                stop(
                    self,
                    false,
                    format_args!(
                        "VTL0 started VP {vp}, where VTL2 never ran: this host runs a VP's VTL0 \
                         only after its VTL2 returns to it (did the paravisor see {vps} VPs?)"
                    ),
                )
            }
            let Some(state) = self.vps.get_mut(vp as usize) else {
                continue;
            };
            if core::mem::take(&mut state.waiting) {
                self.parked -= 1;
                if let Some(wake) = WAKE.get(vp as usize) {
                    wake.store(true, core::sync::atomic::Ordering::Release);
                }
                arch::send_event();
            }
        }
    }
}

/// Ends the run from inside an exit: the trace is written out first, so the runner sees what
/// led here.
fn stop(host: &mut Host, pass: bool, args: core::fmt::Arguments<'_>) -> ! {
    let flushed = host.flush();
    if pass {
        println!("{args}");
    } else {
        println!("FAIL: {args}");
    }
    if let Err(why) = flushed {
        println!("FAIL: {why}");
        arch::exit(arch::EXIT_FAIL)
    }
    arch::exit(if pass {
        arch::EXIT_PASS
    } else {
        arch::EXIT_FAIL
    })
}

static HOST: spin::Mutex<Option<Host>> = spin::Mutex::new(None);

unsafe extern "C" {
    static __host_start: u8;
}

fn fail(args: core::fmt::Arguments<'_>) -> ! {
    println!("FAIL: {args}");
    arch::exit(arch::EXIT_FAIL)
}

/// Rust entry from `_start`: EL2, MMU on over the host's identity map, BSS zeroed.
#[unsafe(no_mangle)]
extern "C" fn invm_main(dtb: u64, el: u64) -> ! {
    println!("in-VM mock Hyper-V (aarch64), at EL{el}, device tree {dtb:#x}");
    if el != 2 {
        fail(format_args!(
            "entered at EL{el}, not EL2: run QEMU with -machine virt,virtualization=on"
        ));
    }
    let host_start = &raw const __host_start as u64;
    if host_start < HOST_RAM.start {
        fail(format_args!(
            "the host at {host_start:#x} starts below its own memory {HOST_RAM:#x?}"
        ));
    }
    crate::heap::init();
    // SAFETY: the configuration page lies in the host's own identity-mapped 16 MiB, above its
    // image (the linker script keeps it free); the runner's loader wrote it before reset.
    let config = unsafe { crate::runner::config(invm_abi::CONFIG_GPA_AARCH64) };
    if config.unknown_flags() != 0 {
        fail(format_args!(
            "configuration flags {:#x} unknown to this host",
            config.unknown_flags()
        ));
    }
    let ram = match config
        .machine_ram(invm_abi::DEFAULT_RAM_AARCH64)
        .and_then(|machine| machine.guest_aarch64())
    {
        Ok(ram) => ram,
        Err(e) => fail(format_args!("the runner's RAM layout: {e}")),
    };
    if let Err(why) = arch::map_high_ram(ram.ranges()) {
        fail(format_args!("{why}"));
    }
    if config.count_vtl2() {
        arch::start_cycle_counter();
    }
    if let Err(e) = arch::install_stage2(ram.ranges()) {
        fail(format_args!("stage 2: {e}"));
    }
    arch::configure_guest();
    set_device_tree_ram(if dtb == 0 { DEFAULT_DTB } else { dtb }, &ram);
    let trace = config
        .trace_path()
        .map(|path| match arch::HostFile::create(path) {
            Ok(file) => file,
            Err(why) => fail(format_args!("{why}")),
        });
    let vp_count = config.vps();
    if vp_count > u64::from(arch::MAX_CPUS) {
        fail(format_args!(
            "{vp_count} VPs asked for; this host runs at most {} (one QEMU CPU each)",
            arch::MAX_CPUS
        ));
    }
    // SAFETY: the scenario's room lies in the host's own memory below the configuration page,
    // above its image (the linker script keeps it free).
    let scenario = match unsafe { crate::runner::scenario(&config, invm_abi::SCENARIO_GPA_AARCH64) }
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
        hvmodel::Arch::Aarch64,
        ram.ranges(),
        vp_count as u32,
        scenario,
    )
    .unwrap_or_else(|why| fail(format_args!("{why}")));
    model.set_tracing(trace.is_some());
    let live = config.live_vtl0();
    if live {
        model.vtl0().set_live(true);
        model.set_vp_state(
            0,
            Vtl::VTL0,
            hvdef::aarch64::reg::XPC,
            config.vtl0_pc.into(),
        );
        match config.vtl0_pc {
            0 => println!(
                "VTL0 runs for real after the paravisor's first VtlReturn, from the state the \
                 paravisor gives it"
            ),
            pc => println!(
                "VTL0 runs for real after the paravisor's first VtlReturn (reset pc {pc:#x})"
            ),
        }
    }
    *HOST.lock() = Some(Host {
        model,
        // SAFETY: the guest's RAM is identity-mapped Normal memory in the host's stage 1
        // (blocks 1-3 and `map_high_ram`'s) and leaves out the host's own memory (`without`).
        mem: unsafe { PhysMemory::new(ram.ranges()) },
        ram: ram.clone(),
        exits: 0,
        vps: (0..vp_count).map(|_| VpState::default()).collect(),
        parked: 0,
        halted: 0,
        vtl0_ran: false,
        count_vtl2: config.count_vtl2(),
        trace,
    });
    let entry = if config.vtl2_pc != 0 {
        config.vtl2_pc
    } else {
        GUEST_ENTRY
    };
    let mut frame = Frame {
        elr: entry,
        spsr: arch::GUEST_SPSR,
        ..Frame::default()
    };
    // X0 = the device tree as QEMU gave it (0 for ELF boots: the paravisor then reads
    // 0x4000_0000 itself); X1 = 0, not the IGVM marker. An IGVM context gives X0..X3.
    frame.x[0] = dtb;
    if config.vtl2_pc != 0 {
        frame.x[..4].copy_from_slice(&config.vtl2_x);
    }
    println!("entering the paravisor at EL1h, pc {entry:#x}, stage 2 over {ram}");
    // SAFETY: stage 2, HCR_EL2 and the other controls are set for the guest; VBAR_EL2 was set
    // by _start.
    unsafe { arch::enter(&frame) }
}

/// Makes the device tree's memory the guest's RAM (the machine's without the host's own), so
/// the paravisor never counts the host's pages as RAM; fails the run if it cannot. The tree
/// may grow up to [`DTB_MAX`] (the paravisor's ELF is loaded 2 MiB above it).
fn set_device_tree_ram(dtb: u64, ram: &invm_abi::Ram) {
    if !ram.contains(dtb, DTB_MAX as u64) {
        fail(format_args!(
            "device tree at {dtb:#x}: its {DTB_MAX:#x} bytes of room are not guest RAM"
        ));
    }
    // SAFETY: DTB_MAX bytes inside guest RAM (checked), identity-mapped Normal memory; the
    // guest has not run yet, so nothing else refers to it, and nothing is loaded there (QEMU's
    // tree at the start of RAM, the paravisor 2 MiB up).
    let blob = unsafe { core::slice::from_raw_parts_mut(dtb as *mut u8, DTB_MAX) };
    match crate::fdt::set_ram(blob, ram.ranges()) {
        Ok((base, size)) => {
            let mut parts = alloc::string::String::new();
            for (i, r) in ram.ranges().iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                parts.push_str(&alloc::format!(
                    "{sep}{:#x}+{:#x}",
                    r.start,
                    r.end - r.start
                ));
            }
            println!(
                "device tree: memory {base:#x}+{size:#x} cut to {parts} (the rest is the host's)"
            )
        }
        Err(e) => fail(format_args!("device tree at {dtb:#x}: memory node: {e:?}")),
    }
}

/// A CPU the host started for HvCallStartVirtualProcessor (`arch::cpu_on`): EL2 as on the
/// boot CPU, then the paravisor's VP at the context it asked for.
#[unsafe(no_mangle)]
extern "C" fn invm_secondary(vp: u64) -> ! {
    arch::configure_guest();
    arch::cpu_stage2();
    let context = HOST
        .lock()
        .as_mut()
        .and_then(|host| host.vps.get_mut(vp as usize)?.start.take());
    let Some(context) = context else {
        fail(format_args!(
            "CPU {vp} started with no VP context waiting for it"
        ))
    };
    let (frame, el1) = hv::initial_state(&context);
    arch::load_el1(&el1, &arch::save_el1());
    // SAFETY: this CPU's EL2 is set up (vectors, controls, stage 2) and its frame is the
    // context the model accepted.
    unsafe { arch::enter(&frame) }
}

/// Every exception taken to EL2, with the interrupted context in `frame` (X0..X30, ELR, SPSR).
/// Returning resumes it with whatever `frame` then holds: the same VTL, or the other one after
/// a VTL switch (its registers, EL1 state and stage 2 loaded here).
#[unsafe(no_mangle)]
extern "C" fn invm_trap(frame: &mut Frame, kind: u64) {
    let syn = Syndrome::read();
    if kind != arch::VECTOR_LOWER_SYNC {
        // Never touch HOST here: this may be a fault inside an exit that holds its lock.
        fatal(kind, &syn, frame);
    }
    let vp = arch::cpu();
    let mut guard = HOST.lock();
    let Some(host) = guard.as_mut() else {
        fatal(kind, &syn, frame)
    };
    host.exits += 1;
    let Some(state) = host.vps.get(vp as usize) else {
        stop(
            host,
            false,
            format_args!("an exit from CPU {vp}, which runs no VP"),
        )
    };
    let after = if state.in_vtl0 {
        vtl0_exit(host, vp, kind, &syn, frame)
    } else {
        vtl2_exit(host, vp, kind, &syn, frame)
    };
    if !arch::stack_intact() {
        stop(
            host,
            false,
            format_args!("VP {vp}: the host's EL2 stack overflowed its 64 KiB slot"),
        );
    }
    host.wake_started_vtl0s();
    let held = host.model.trace().events().len();
    if held >= TRACE_BATCH || (held > 0 && !host.vtl0_ran) {
        if let Err(why) = host.flush() {
            stop(host, false, format_args!("{why}"));
        }
    }
    match after {
        After::Resume => {}
        After::Park => {
            drop(guard);
            arch::park();
        }
        After::WaitVtl0 => {
            drop(guard);
            // Until VTL0 on another VP starts this VP's VTL0 (`wake_started_vtl0s`).
            let wake = &WAKE[vp as usize];
            while !wake.swap(false, core::sync::atomic::Ordering::Acquire) {
                arch::wait_for_event();
            }
            let mut guard = HOST.lock();
            let Some(host) = guard.as_mut() else {
                fatal(kind, &syn, frame)
            };
            if run_vtl0(host, vp, frame) != After::Resume {
                stop(
                    host,
                    false,
                    format_args!("VP {vp}: woken for a VTL0 that does not run"),
                )
            }
        }
    }
}

/// The paravisor exited.
fn vtl2_exit(host: &mut Host, vp: u32, kind: u64, syn: &Syndrome, frame: &mut Frame) -> After {
    match syn.class() {
        arch::EC_HVC64 => {
            let imm = syn.esr as u16;
            let next = hv::hvc(&mut host.model, vp, imm, frame, &mut host.mem);
            if let Err(why) = sync_protections(&mut host.model) {
                stop(host, false, format_args!("{why}"));
            }
            match next {
                Next::Resume => {}
                Next::Start(start) => start_vp(host, *start),
                Next::Undefined => {
                    let now = arch::save_el1();
                    let mut el1 = now;
                    hv::take_exception(frame, &mut el1, hv::ESR_UNDEFINED, 0);
                    arch::load_el1(&el1, &now);
                }
                Next::Finished => {
                    return host.park(
                        vp,
                        format_args!("the paravisor returned to VTL0 with an empty VTL0 script"),
                    )
                }
                Next::RunLower => return run_vtl0(host, vp, frame),
                Next::Unsupported(why) => {
                    let pc = frame.elr - hv::HVC_LEN;
                    stop(
                        host,
                        false,
                        format_args!("VP {vp}: hvc #{imm:#x} at {pc:#x}: {why}"),
                    )
                }
            }
        }
        arch::EC_WFX => {
            // A VP that waits with interrupts masked (DAIF in SPSR) is stopped for good, as on
            // Hyper-V; one that could take an interrupt waits for one this host never sends.
            // Either way it is done: it parks as halted, and the run fails once all are parked.
            let masked = frame.spsr & 0x3c0 == 0x3c0;
            println!(
                "VP {vp} halted in VTL2 at {:#x} (wfi, {})",
                frame.elr,
                if masked {
                    "interrupts masked"
                } else {
                    "no interrupt will come"
                }
            );
            host.halted |= 1u128 << vp;
            return host.park(vp, format_args!("halted in VTL2"));
        }
        _ => unexpected(host, vp, kind, syn, frame),
    }
    After::Resume
}

/// HvCallStartVirtualProcessor succeeded: the VP's own CPU starts and picks up its context.
fn start_vp(host: &mut Host, start: StartVp) {
    let InitialVpContext::Aarch64(context) = start.context else {
        stop(
            host,
            false,
            format_args!("VP {}: an x64 start context on arm64", start.vp),
        )
    };
    let Some(state) = host.vps.get_mut(start.vp as usize) else {
        stop(
            host,
            false,
            format_args!("VP {} started: the host has no CPU for it", start.vp),
        )
    };
    state.start = Some(context);
    let status = arch::cpu_on(start.vp);
    if status != 0 {
        stop(
            host,
            false,
            format_args!("PSCI CPU_ON for VP {} failed: {status}", start.vp),
        );
    }
}

/// The paravisor returned to VTL0, which runs for real now: from the state the model holds,
/// with its own EL1 registers and stage 2.
fn run_vtl0(host: &mut Host, vp: u32, frame: &mut Frame) -> After {
    let pc = host
        .model
        .vp_state(vp, Vtl::VTL0, hvdef::aarch64::reg::XPC)
        .unwrap_or(0);
    if pc == 0 {
        if vp == 0 {
            stop(
                host,
                false,
                format_args!(
                    "VTL0 has no entry point (PC 0): the paravisor set none and the runner gave \
                     no reset PC"
                ),
            );
        }
        // VTL0 starts its own APs (HvCallStartVirtualProcessor: TLFS vsm.md, PSCI CPU_ON for a
        // lower VTL is blocked once a higher VTL is enabled); until it does, the CPU waits.
        if host.park(vp, format_args!("VTL0 never started on it")) == After::Park {
            host.vps[vp as usize].waiting = true;
            return After::WaitVtl0;
        }
        return After::Park;
    }
    host.vtl0_ran = true;
    let state = &mut host.vps[vp as usize];
    if let Some(from) = state.vtl2_work_from.take() {
        let work = arch::cycles().wrapping_sub(from);
        arch::print(format_args!(
            "{}{vp}, {work} instructions\n",
            invm_abi::VTL2_WORK_LINE
        ));
    }
    state.vtl2_resume = *frame;
    let now = arch::save_el1();
    state.el1[1] = now;
    if let Err(why) = hv::enter_lower(&mut host.model, vp, frame, &mut state.el1[0]) {
        stop(host, false, format_args!("VP {vp}: entering VTL0: {why}"));
    }
    arch::load_el1(&host.vps[vp as usize].el1[0], &now);
    arch::use_stage2(Guest::Vtl0);
    host.vps[vp as usize].in_vtl0 = true;
    After::Resume
}

/// VTL0 exited: a hypercall, an access stage 2 stopped, or its power-off.
fn vtl0_exit(host: &mut Host, vp: u32, kind: u64, syn: &Syndrome, frame: &mut Frame) -> After {
    let (exit, ip) = match syn.class() {
        arch::EC_HVC64 => {
            let immediate = syn.esr as u16;
            if immediate == 0 && frame.x[0] as u32 == arch::PSCI_SYSTEM_OFF {
                let (exits, calls) = (host.exits, host.calls());
                stop(
                    host,
                    true,
                    format_args!(
                        "VTL0 powered off (PSCI SYSTEM_OFF) on VP {vp}: done after {exits} exits \
                         ({calls} hypercalls)"
                    ),
                )
            }
            (LowerExit::Hypercall { immediate }, frame.elr - hv::HVC_LEN)
        }
        class @ (arch::EC_DABT_LOWER | arch::EC_IABT_LOWER) => {
            // ESR ISS: ISV (bit 24) with SAS (23:22) the access size; WnR (bit 6) a store.
            let (len, access) = if class == arch::EC_IABT_LOWER {
                (4, HvInterceptAccessType::EXECUTE)
            } else if syn.esr & (1 << 6) != 0 {
                (access_len(syn.esr), HvInterceptAccessType::WRITE)
            } else {
                (access_len(syn.esr), HvInterceptAccessType::READ)
            };
            let gpa = syn.fault_ipa();
            // Exception entry on arm64 reads no memory (the vector is VBAR_EL1 plus an
            // offset): a stage-2 abort is always the instruction's own access or the fetch of
            // the vector's first instruction, which ESR_EL2 reports as an ordinary
            // instruction abort. Nothing here says "during event delivery" (the intercept
            // header's `interruption_pending`; when Hyper-V sets it on arm64 is not
            // documented).
            let delivering_event = false;
            (
                LowerExit::Access {
                    gpa,
                    len,
                    access,
                    delivering_event,
                },
                frame.elr,
            )
        }
        arch::EC_WFX => stop(
            host,
            false,
            format_args!(
                "VP {vp}: VTL0 halted (wfi) at {:#x}: nothing can wake it in this host",
                frame.elr
            ),
        ),
        _ => unexpected(host, vp, kind, syn, frame),
    };
    if let LowerExit::Access { gpa, access, .. } = exit {
        // VTL2 on another VP may have lifted the protection between this fault and this exit
        // (it flushed every CPU's TLB under the lock this exit waited for): the access runs
        // again, as it would on Hyper-V. Outside guest RAM nothing lifts it: the model says
        // so below.
        let flags = host.model.lower_vtl_access(gpa);
        let allowed = match access {
            HvInterceptAccessType::READ => flags.readable(),
            HvInterceptAccessType::WRITE => flags.writable(),
            _ => flags.kernel_executable(),
        };
        let again = host.vps[vp as usize].retried.replace(gpa) == Some(gpa);
        if allowed && host.ram.contains(gpa, 1) && !again {
            return After::Resume;
        }
        // The same access stopped again right after its retry: stage 2 and the model disagree,
        // and the model's refusal below names it.
    }
    host.vps[vp as usize].retried = None;
    let now = arch::save_el1();
    let state = &mut host.vps[vp as usize];
    state.el1[0] = now;
    match hv::lower_exit(
        &mut host.model,
        vp,
        exit,
        ip,
        frame,
        &mut state.el1[0],
        &mut host.mem,
    ) {
        LowerNext::Resume => arch::load_el1(&state.el1[0], &now),
        LowerNext::Vtl2 => {
            state.in_vtl0 = false;
            frame.elr = state.vtl2_resume.elr;
            frame.spsr = state.vtl2_resume.spsr;
            arch::load_el1(&state.el1[1], &now);
            arch::use_stage2(Guest::Vtl2);
            if host.count_vtl2 {
                state.vtl2_work_from = Some(arch::cycles());
            }
        }
        LowerNext::Finished => stop(
            host,
            false,
            format_args!("the model reset the partition after VP {vp}'s VTL0 exit at {ip:#x}"),
        ),
        LowerNext::Unsupported(why) => stop(host, false, format_args!("VP {vp}: {why}")),
    }
    After::Resume
}

/// The access size of a data abort with a valid syndrome (ISV), else 1 byte.
fn access_len(esr: u64) -> u64 {
    if esr & (1 << 24) != 0 {
        1 << (esr >> 22 & 3)
    } else {
        1
    }
}

/// VTL0's stage 2 follows every protection change VTL2 made (HvCallModifyVtlProtectionMask).
fn sync_protections(model: &mut Model) -> Result<(), alloc::string::String> {
    for page in model.take_protection_changes() {
        let gpa = page << HV_PAGE_SHIFT;
        let flags: HvMapGpaFlags = model.lower_vtl_access(gpa);
        let access = crate::stage2::Access {
            read: flags.readable(),
            write: flags.writable(),
            execute: flags.kernel_executable(),
        };
        arch::set_vtl0_access(gpa, access)
            .map_err(|why| alloc::format!("VTL0's stage 2 for GPA {gpa:#x}: {why}"))?;
    }
    arch::flush_vtl0_tlb();
    Ok(())
}

/// One line naming the exception, then a failing exit. Allocates nothing and takes no lock:
/// the exception may have come from inside the allocator or an exit.
fn fatal(kind: u64, syn: &Syndrome, frame: &Frame) -> ! {
    fail(format_args!("{}", Unexpected(kind, syn, frame)))
}

/// An exit of a guest the host cannot serve, from inside the exit (the host held): the trace
/// is written out first, as for every other end of the run.
fn unexpected(host: &mut Host, vp: u32, kind: u64, syn: &Syndrome, frame: &Frame) -> ! {
    stop(
        host,
        false,
        format_args!("VP {vp}: {}", Unexpected(kind, syn, frame)),
    )
}

/// The line naming an exception the host did not expect.
struct Unexpected<'a>(u64, &'a Syndrome, &'a Frame);

impl core::fmt::Display for Unexpected<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Unexpected(kind, syn, frame) = *self;
        let what = match syn.class() {
            arch::EC_SMC64 => " (smc)",
            arch::EC_IABT_LOWER => " (stage-2 instruction abort)",
            arch::EC_DABT_LOWER => " (stage-2 data abort)",
            _ => "",
        };
        write!(
            f,
            "unexpected {} exception: EC {:#x}{what}, ESR {:#x}, ELR {:#x}, SPSR {:#x}, FAR \
             {:#x}, HPFAR {:#x} (IPA {:#x})",
            arch::vector_name(kind),
            syn.class(),
            syn.esr,
            frame.elr,
            frame.spsr,
            syn.far,
            syn.hpfar,
            syn.fault_ipa(),
        )
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fail(format_args!("host panic: {info}"))
}
