//! The arm64 host: EL2 entry and vectors, EL2 configuration and stage 2, console and exit.
//! The list below is the arch contract `main.rs` composes.

mod console;
mod el2;
mod entry;

pub use console::{exit, print, HostFile, EXIT_FAIL, EXIT_PASS};
pub use el2::{
    configure_guest, cpu_stage2, cycles, flush_vtl0_tlb, install_stage2, load_el1, save_el1,
    set_vtl0_access, start_cycle_counter, use_stage2, Guest, Syndrome,
};
pub use entry::{
    cpu, cpu_on, enter, map_high_ram, park, send_event, stack_intact, wait_for_event, MAX_CPUS,
};

/// SPSR_EL2 for the first entry: EL1h, D/A/I/F masked.
pub const GUEST_SPSR: u64 = 0x3c5;

/// ESR_EL2 exception classes an exit names.
pub const EC_WFX: u64 = 0x01;
pub const EC_HVC64: u64 = 0x16;
pub const EC_SMC64: u64 = 0x17;
pub const EC_IABT_LOWER: u64 = 0x20;
pub const EC_DABT_LOWER: u64 = 0x24;

/// PSCI SYSTEM_OFF (SMC32 function id): how VTL0 ends the run.
pub const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;

/// The vector that took an exception: 0-3 this EL on SP0, 4-7 this EL on SPx, 8-11 a lower EL
/// in AArch64, 12-15 in AArch32; within each group sync, IRQ, FIQ, SError.
pub const VECTOR_LOWER_SYNC: u64 = 8;

pub fn vector_name(kind: u64) -> &'static str {
    const NAMES: [&str; 16] = [
        "EL2t sync",
        "EL2t IRQ",
        "EL2t FIQ",
        "EL2t SError",
        "EL2h sync",
        "EL2h IRQ",
        "EL2h FIQ",
        "EL2h SError",
        "EL1 sync",
        "EL1 IRQ",
        "EL1 FIQ",
        "EL1 SError",
        "AArch32 sync",
        "AArch32 IRQ",
        "AArch32 FIQ",
        "AArch32 SError",
    ];
    NAMES.get(kind as usize).copied().unwrap_or("?")
}
