//! The x86_64 host: PVH entry, its own page tables, GDT and IDT, COM1 and the isa-debug-exit,
//! the CPU's own CPUID/MSRs, and AMD SVM (VMCB, nested paging, VMRUN). The list below is the
//! arch contract `host_x86.rs` composes.

mod console;
mod cpu;
mod entry;
mod svm;

pub use console::{exit, print, trace_write, EXIT_FAIL, EXIT_PASS};
pub use cpu::{cpuid, rdmsr, wrmsr};
pub use entry::{
    ap_started, install_idt, load_idt, map_high_ram, park, start_ap, ExceptionFrame, TRAMPOLINE,
};
pub use svm::{enable, Cpu, Exit, Guest, DEBUG_EXIT_PORT, MAX_VPS, MSR_EFER_NUMBER as MSR_EFER};

/// SVM exit codes the host serves or names (AMD APM vol. 2, appendix C).
pub const EXIT_CPUID: u64 = 0x72;
pub const EXIT_HLT: u64 = 0x78;
pub const EXIT_IOIO: u64 = 0x7b;
pub const EXIT_MSR: u64 = 0x7c;
pub const EXIT_SHUTDOWN: u64 = 0x7f;
pub const EXIT_VMMCALL: u64 = 0x81;
pub const EXIT_NPF: u64 = 0x400;
pub const EXIT_INVALID: u64 = u64::MAX;
