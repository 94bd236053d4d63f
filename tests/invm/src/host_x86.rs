//! The x86 host's life: the runner's configuration page read, SVM on, the paravisor's entry
//! (a PVH start info the host builds for its ELF, or an IGVM file's VTL2 context) and nested
//! tables set up, then VMRUN in a loop, every exit served by the model through `hv::x86_64`.
//! The model's trace goes to the debugcon port in `hvmodel`'s wire format when the runner asks
//! for it, in batches and before every end of the run.

use crate::hv::x86_64::{Glue, LowerNext, LowerRegs, Vcpu, RAX, RBX, RCX, RDX};
use crate::hv::{self, Next};
use crate::memory::PhysMemory;
use crate::pvh;
use crate::x86_64::{self as arch, ExceptionFrame, Exit, Guest};
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;
use hvdef::x86_64::reg as x64_reg;
use hvdef::x86_64::HvX64InitialVpContext;
use hvdef::{HvInterceptAccessType, HvMapGpaFlags, Vtl, HV_PAGE_SHIFT};
use hvmodel::{LowerExit, Model};
use invm_abi::HostConfig;
use zerocopy::FromBytes;

macro_rules! println {
    ($($arg:tt)*) => {
        arch::print(format_args!("invm: {}\n", format_args!($($arg)*)))
    };
}

/// Guest RAM: QEMU's low RAM from 0 up to the host's image, which takes 0x0f000000.. of a
/// 256 MiB machine (see invm-x86_64.ld) and is outside the nested tables.
const GUEST_RAM: Range<u64> = invm_abi::GUEST_RAM_X86_64;
/// The end of RAM as QEMU's memory map gives it for 256 MiB: the host's range is
/// GUEST_RAM.end..HOST_RAM_END.
const HOST_RAM_END: u64 = 0x1000_0000;
/// Where the paravisor's start info, memory map and command line are written: low RAM, below
/// QEMU's 0x9fc00 and clear of the paravisor's image at 1 MiB.
const START_INFO: u64 = 0x7000;
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

/// Trace events kept in the host before they are written out.
const TRACE_BATCH: usize = 256;

/// The model's trace on its way out: whether the runner wants it, and the hypercalls written
/// so far.
struct Trace {
    wanted: bool,
    flushed_calls: u64,
}

impl Trace {
    /// Writes the trace so far to the trace port (if wanted) and forgets it.
    fn flush(&mut self, model: &mut Model) {
        let trace = model.take_trace();
        self.flushed_calls += trace.hypercalls().count() as u64;
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
        self.flushed_calls + model.trace().hypercalls().count() as u64
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

/// The runner's configuration page (all zero without one: a PVH start of the paravisor's
/// ELF, no VTL0, no trace).
fn read_config() -> HostConfig {
    // SAFETY: the page lies in the host's own identity-mapped range above its image (checked
    // by the caller against __host_end), outside the guest's nested tables; the runner's
    // loader wrote it before reset and nothing writes it since.
    let page =
        unsafe { core::slice::from_raw_parts(invm_abi::CONFIG_GPA_X86_64 as *const u8, 4096) };
    HostConfig::parse(page).unwrap_or_default()
}

/// Rust entry from the PVH stub: long mode over the host's identity map, BSS zeroed.
#[unsafe(no_mangle)]
extern "C" fn invm_main(start_info: u32) -> ! {
    arch::install_idt();
    println!("in-VM mock Hyper-V (x86_64, AMD SVM), PVH start info {start_info:#x}");
    let (host_start, host_end) = (&raw const __host_start as u64, &raw const __host_end as u64);
    if GUEST_RAM.end > host_start || host_end > HOST_RAM_END {
        fail(format_args!(
            "guest RAM {GUEST_RAM:#x?} and the host at {host_start:#x}..{host_end:#x} overlap \
             or leave RAM"
        ));
    }
    if host_end > invm_abi::CONFIG_GPA_X86_64 {
        fail(format_args!(
            "the host at {host_start:#x}..{host_end:#x} covers the configuration page at {:#x}",
            invm_abi::CONFIG_GPA_X86_64
        ));
    }
    crate::heap::init();
    let config = read_config();
    if config.unknown_flags() != 0 {
        fail(format_args!(
            "configuration flags {:#x} unknown to this host",
            config.unknown_flags()
        ));
    }
    if config.vps() != 1 {
        fail(format_args!(
            "{} VPs asked for; this x86 host runs 1",
            config.vps()
        ));
    }
    if let Err(why) = arch::enable() {
        fail(format_args!("{why}"));
    }
    // SAFETY: GUEST_RAM is identity-mapped by the host's page tables and lies below the
    // host's image (checked above): it holds no host data.
    let mut mem = unsafe { PhysMemory::new(GUEST_RAM) };
    let mut cpu = Vcpu::default();
    let context = config
        .x64_context()
        .map(|bytes| HvX64InitialVpContext::read_from_bytes(bytes).expect("sized"));
    let entry = match &context {
        Some(ctx) => ctx.rip,
        None => pvh_start(&mut mem, start_info, &mut cpu),
    };
    let mut guest = match Guest::new(&GUEST_RAM, entry) {
        Ok(guest) => guest,
        Err(e) => fail(format_args!("nested page tables: {e:?}")),
    };
    cpu.rip = entry;
    match &context {
        Some(ctx) => {
            guest.load_context(ctx, &mut cpu);
            println!(
                "entering the paravisor with its IGVM VTL2 context: RIP {:#x}, CR0 {:#x}, CR3 \
                 {:#x}, CR4 {:#x}, EFER {:#x}, nested paging over {GUEST_RAM:#x?}",
                ctx.rip, ctx.cr0, ctx.cr3, ctx.cr4, ctx.efer
            );
        }
        None => println!(
            "entering the paravisor in 32-bit protected mode at {entry:#x}, EBX {START_INFO:#x}, \
             nested paging over {GUEST_RAM:#x?}"
        ),
    }
    let trace = Trace {
        wanted: config.trace_path().is_some(),
        flushed_calls: 0,
    };
    let mut model = hv::partition(hvmodel::Arch::X86_64, GUEST_RAM, 1);
    let live = config.live_vtl0();
    if live {
        model.vtl0().set_live(true);
        if config.vtl0_pc != 0 {
            model.set_vp_state(VP, Vtl::VTL0, x64_reg::RIP, config.vtl0_pc.into());
        }
        println!(
            "VTL0 runs for real after the paravisor's first VtlReturn (reset RIP {:#x})",
            config.vtl0_pc
        );
    }
    let mut host = Host {
        model,
        mem,
        guest,
        glue: Glue::default(),
        trace,
        exits: 0,
        vtl2: cpu,
        vtl0: None,
        vtl0_entries: 0,
    };
    loop {
        match host.vtl0.take() {
            None => host.vtl2_exit(live),
            Some(regs) => host.vtl0_exit(regs),
        }
        if host.model.trace().events().len() >= TRACE_BATCH {
            host.trace.flush(&mut host.model);
        }
    }
}

/// The VP the x86 host runs.
const VP: u32 = hv::VP;

/// The one VP's state: its VTL2 (the VMCB plus `vtl2`) and, while it runs, its VTL0.
struct Host {
    model: Model,
    mem: PhysMemory,
    guest: Guest,
    glue: Glue,
    trace: Trace,
    exits: u64,
    /// VTL2's registers; while VTL0 runs, as VTL2 left them at its VtlReturn (RIP on it).
    vtl2: Vcpu,
    /// Some while VTL0 runs: its whole state.
    vtl0: Option<LowerRegs>,
    /// How often VTL2 returned into a live VTL0 (the first entry gets a console line).
    vtl0_entries: u64,
}

impl Host {
    fn stop(&mut self, pass: bool, args: core::fmt::Arguments<'_>) -> ! {
        self.trace.stop(&mut self.model, pass, args)
    }

    /// Runs VTL2 to its next exit and serves it.
    fn vtl2_exit(&mut self, live: bool) {
        let cpu = &mut self.vtl2;
        let exit = self.guest.run(cpu);
        self.exits += 1;
        let rip = cpu.rip;
        let (model, mem, glue) = (&mut self.model, &mut self.mem, &mut self.glue);
        let next = match exit.code {
            arch::EXIT_CPUID => glue.cpuid(model, cpu, arch::cpuid),
            arch::EXIT_MSR if crate::msrpm::SVM_MSRS.contains(&(cpu.gprs[RCX] as u32)) => {
                let why = alloc::format!(
                    "VP {VP} VTL2: the guest {} SVM's MSR {:#x} at {rip:#x}",
                    if exit.info1 == 0 { "read" } else { "wrote" },
                    cpu.gprs[RCX] as u32
                );
                self.stop(false, format_args!("{why}"))
            }
            arch::EXIT_MSR if exit.info1 == 0 => glue.rdmsr(model, cpu, arch::rdmsr),
            arch::EXIT_MSR => glue.wrmsr(model, cpu, mem, native_wrmsr),
            arch::EXIT_VMMCALL => glue.vmmcall(model, cpu, mem),
            arch::EXIT_HLT => self.stop(
                false,
                format_args!("VP {VP} VTL2: the guest halted (hlt) at {rip:#x}"),
            ),
            _ => {
                let why = unexpected(&self.guest, &exit, rip);
                self.stop(false, format_args!("VP {VP} VTL2: {why}"))
            }
        };
        if live {
            if let Err(why) = self.sync_protections() {
                self.stop(false, format_args!("VP {VP} VTL2: {why}"));
            }
        }
        match next {
            Next::Resume => {}
            Next::Finished => {
                let (exits, calls) = (self.exits, self.trace.calls(&self.model));
                self.stop(
                    true,
                    format_args!(
                        "the paravisor returned to VTL0 with an empty VTL0 script: done after \
                         {exits} exits ({calls} hypercalls)"
                    ),
                )
            }
            Next::RunLower => match hv::x86_64::enter_lower(&mut self.model, VP) {
                Ok(regs) if regs.cpu.rip == 0 => self.stop(
                    false,
                    format_args!(
                        "VP {VP}: VTL0 has no entry point (RIP 0): the paravisor set none and \
                         the runner gave no reset RIP"
                    ),
                ),
                Ok(regs) => {
                    self.vtl0_entries += 1;
                    if self.vtl0_entries == 1 {
                        println!(
                            "VP {VP}: VTL0 runs from RIP {:#x}, CR0 {:#x}, EFER {:#x}",
                            regs.cpu.rip, regs.cr0, regs.efer
                        );
                    }
                    self.vtl0 = Some(regs);
                }
                Err(why) => self.stop(false, format_args!("VP {VP}: entering VTL0: {why}")),
            },
            Next::Unsupported(why) => self.stop(
                false,
                format_args!("VP {VP} VTL2: exit {:#x} at {rip:#x}: {why}", exit.code),
            ),
            other => self.stop(
                false,
                format_args!(
                    "VP {VP} VTL2: exit {:#x} at {rip:#x}: {other:?} is arm64-only so far",
                    exit.code
                ),
            ),
        }
    }

    /// Runs VTL0 to its next exit and serves it: CPUID and MSRs as VTL2's (EFER is the
    /// host's to keep SVME in), a hypercall or an access its nested tables stopped through
    /// the model (which may hand it to VTL2), isa-debug-exit as the end of the run.
    fn vtl0_exit(&mut self, mut regs: LowerRegs) {
        let exit = self.guest.run_lower(&mut regs);
        self.exits += 1;
        let rip = regs.cpu.rip;
        let (model, mem, glue) = (&mut self.model, &mut self.mem, &mut self.glue);
        let cpu = &mut regs.cpu;
        let msr = cpu.gprs[RCX] as u32;
        let lower_exit = match exit.code {
            arch::EXIT_CPUID => {
                glue.cpuid(model, cpu, arch::cpuid);
                None
            }
            arch::EXIT_MSR if msr == arch::MSR_EFER => {
                if exit.info1 == 0 {
                    cpu.gprs[RAX] = regs.efer & 0xffff_ffff;
                    cpu.gprs[RDX] = regs.efer >> 32;
                } else {
                    regs.efer = (cpu.gprs[RAX] & 0xffff_ffff) | (cpu.gprs[RDX] << 32);
                }
                cpu.rip += hv::x86_64::MSR_LEN;
                None
            }
            arch::EXIT_MSR if crate::msrpm::SVM_MSRS.contains(&msr) => self.stop(
                false,
                format_args!("VP {VP} VTL0: SVM's MSR {msr:#x} accessed at RIP {rip:#x}"),
            ),
            arch::EXIT_MSR if exit.info1 == 0 => {
                glue.rdmsr(model, cpu, arch::rdmsr);
                None
            }
            arch::EXIT_MSR => {
                glue.wrmsr(model, cpu, mem, native_wrmsr);
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
                Some(LowerExit::Access {
                    gpa: exit.info2,
                    len: 1,
                    access,
                })
            }
            arch::EXIT_IOIO if exit.info1 >> 16 == u64::from(arch::DEBUG_EXIT_PORT) => {
                // `out` (type bit 0 clear) of AL: the kernel's verdict. The trace goes out
                // first, then the host makes the same write, so QEMU exits with its code.
                if exit.info1 & 1 != 0 {
                    self.stop(
                        false,
                        format_args!("VP {VP} VTL0: an `in` from isa-debug-exit at RIP {rip:#x}"),
                    )
                }
                let value = cpu.gprs[RAX] as u8;
                let (exits, calls) = (self.exits, self.trace.calls(&self.model));
                self.trace.flush(&mut self.model);
                println!(
                    "VTL0 wrote {value:#x} to isa-debug-exit on VP {VP}: done after {exits} \
                     exits ({calls} hypercalls)"
                );
                arch::exit(u64::from(value) << 1 | 1)
            }
            arch::EXIT_HLT => self.stop(
                false,
                format_args!(
                    "VP {VP} VTL0: halted (hlt) at RIP {rip:#x}: nothing can wake it in this host"
                ),
            ),
            _ => {
                let (cpl, rflags, cr0, cr3, int_info) = self.guest.lower_control();
                self.stop(
                    false,
                    format_args!(
                        "VP {VP} VTL0: unexpected exit {:#x}{} at RIP {rip:#x}: EXITINFO1 \
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
            self.vtl0 = Some(regs);
            return;
        };
        match hv::x86_64::lower_exit(model, VP, lower_exit, &mut regs, &mut self.vtl2, mem) {
            LowerNext::Resume(next) => self.vtl0 = Some(*next),
            LowerNext::Vtl2 => {}
            LowerNext::Finished => self.stop(
                false,
                format_args!("the model reset the partition after VP {VP}'s VTL0 exit at {rip:#x}"),
            ),
            LowerNext::Unsupported(why) => self.stop(
                false,
                format_args!("VP {VP} VTL0: exit {:#x}: {why}", exit.code),
            ),
        }
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
/// cut out of its memory map), at START_INFO with EBX pointing at it; the entry is the
/// paravisor's PVH note.
fn pvh_start(mem: &mut PhysMemory, start_info: u32, cpu: &mut Vcpu) -> u64 {
    let mut info = match pvh::read(mem, start_info.into()) {
        Ok(info) => info,
        Err(e) => fail(format_args!(
            "QEMU's PVH start info at {start_info:#x}: {e:?}"
        )),
    };
    let ram_before: u64 = ram_total(&info.memmap);
    info.memmap = pvh::limit_ram(
        &pvh::cut(&info.memmap, &(GUEST_RAM.end..HOST_RAM_END)),
        &GUEST_RAM,
    );
    println!(
        "PVH memory map: RAM {ram_before:#x} bytes cut to {:#x} (0x{:x}.. is the host's)",
        ram_total(&info.memmap),
        GUEST_RAM.end
    );
    if let Err(e) = pvh::write(mem, START_INFO, &info) {
        fail(format_args!("writing the paravisor's start info: {e:?}"));
    }
    cpu.gprs[RBX] = START_INFO;
    match pvh::find_entry(mem, IMAGE) {
        Ok(Some(entry)) if GUEST_RAM.contains(&entry) => entry,
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

/// An exit this slice does not serve: one line naming it.
fn unexpected(guest: &Guest, exit: &Exit, rip: u64) -> String {
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
