//! x86_64 MSR access: the synthetic MSRs (`HV_X64_MSR_*`) Hyper-V intercepts, and EFER.
#![expect(unsafe_code, reason = "rdmsr / wrmsr")]

use hvdef::x86_64::HvX64Msr;

/// Reads a synthetic MSR.
pub fn rdmsr(msr: HvX64Msr) -> u64 {
    rdmsr_raw(msr.0)
}

/// Any MSR by number (the architectural ones the paravisor reads: EFER).
fn rdmsr_raw(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the MSRs read here have no memory effects; a missing one faults, which is fatal.
    unsafe {
        core::arch::asm!(
            "rdmsr",
            in("ecx") msr,
            out("eax") lo,
            out("edx") hi,
            options(nostack, preserves_flags)
        )
    };
    u64::from(hi) << 32 | u64::from(lo)
}

/// Writes a synthetic MSR.
pub fn wrmsr(msr: HvX64Msr, value: u64) {
    // SAFETY: as for rdmsr; the MSRs written here only configure the hypervisor interface.
    unsafe {
        core::arch::asm!(
            "wrmsr",
            in("ecx") msr.0,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags)
        )
    };
}

/// EFER (architectural MSR 0xC000_0080).
pub fn read_efer() -> u64 {
    rdmsr_raw(0xC000_0080)
}
