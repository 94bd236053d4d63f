//! The x86 host's life: the runner's configuration page read, SVM on, the paravisor's entry
//! (a PVH start info the host builds for its ELF, or an IGVM file's VTL2 context) and nested
//! tables set up, then VMRUN in a loop, every exit served by the model through `hv::x86_64`.
//! The model's trace goes to the debugcon port in `hvmodel`'s wire format when the runner asks
//! for it, in batches and before every end of the run.

use crate::hv::x86_64::{Glue, Vcpu, RBX, RCX};
use crate::hv::{self, Next};
use crate::memory::PhysMemory;
use crate::pvh;
use crate::x86_64::{self as arch, ExceptionFrame, Exit, Guest};
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;
use hvdef::x86_64::HvX64InitialVpContext;
use hvmodel::Model;
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
    if config.live_vtl0() {
        fail(format_args!("live VTL0 is not implemented on x86 yet"));
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
    let mut trace = Trace {
        wanted: config.trace_path().is_some(),
        flushed_calls: 0,
    };
    let mut model = hv::partition(hvmodel::Arch::X86_64, GUEST_RAM, 1);
    let mut glue = Glue::default();
    let mut exits: u64 = 0;
    loop {
        let exit = guest.run(&mut cpu);
        exits += 1;
        let rip = cpu.rip;
        let next = match exit.code {
            arch::EXIT_CPUID => glue.cpuid(&mut model, &mut cpu, arch::cpuid),
            arch::EXIT_MSR if crate::msrpm::SVM_MSRS.contains(&(cpu.gprs[RCX] as u32)) => trace
                .stop(
                    &mut model,
                    false,
                    format_args!(
                        "the guest {} SVM's MSR {:#x} at {rip:#x}",
                        if exit.info1 == 0 { "read" } else { "wrote" },
                        cpu.gprs[RCX] as u32
                    ),
                ),
            arch::EXIT_MSR if exit.info1 == 0 => glue.rdmsr(&mut model, &mut cpu, arch::rdmsr),
            arch::EXIT_MSR => glue.wrmsr(&mut model, &mut cpu, &mut mem, |msr, value| {
                // SAFETY: besides SVM's own MSRs (refused above) only MSRs outside the
                // permission map's ranges exit, and the model declined this one (not the
                // hypervisor's): the CPU's own, which TCG drops when it does not know it, as
                // it would for the guest natively.
                unsafe { arch::wrmsr(msr, value) }
            }),
            arch::EXIT_VMMCALL => glue.vmmcall(&mut model, &mut cpu, &mut mem),
            arch::EXIT_HLT => trace.stop(
                &mut model,
                false,
                format_args!("the guest halted (hlt) at {rip:#x}"),
            ),
            _ => {
                let why = unexpected(&guest, &exit, rip);
                trace.stop(&mut model, false, format_args!("{why}"))
            }
        };
        match next {
            Next::Resume => {}
            Next::Finished => {
                let calls = trace.calls(&model);
                trace.stop(
                    &mut model,
                    true,
                    format_args!(
                        "the paravisor returned to VTL0 with an empty VTL0 script: done after \
                         {exits} exits ({calls} hypercalls)"
                    ),
                )
            }
            Next::Unsupported(why) => trace.stop(
                &mut model,
                false,
                format_args!("exit {:#x} at {rip:#x}: {why}", exit.code),
            ),
            other => trace.stop(
                &mut model,
                false,
                format_args!(
                    "exit {:#x} at {rip:#x}: {other:?} is arm64-only so far",
                    exit.code
                ),
            ),
        }
        if model.trace().events().len() >= TRACE_BATCH {
            trace.flush(&mut model);
        }
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
