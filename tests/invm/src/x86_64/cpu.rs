//! The host CPU's own CPUID and MSRs: what a guest instruction the model does not own gets
//! (the CPU's answer, as if the hypervisor had not intercepted it).
#![expect(unsafe_code, reason = "CPUID and MSR instructions")]

pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only MSRs that exist on QEMU's CPU or that it answers with 0 (TCG never faults
    // an unknown MSR) are read: EFER here, and what the guest read itself.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    u64::from(hi) << 32 | u64::from(lo)
}

/// # Safety
///
/// Writing `msr` must not break the host: EFER.SVME, VM_HSAVE_PA, or an MSR outside the
/// ranges SVM's permission map covers that the guest wrote itself (TCG drops unknown ones).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller's contract.
    unsafe {
        core::arch::asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nomem, nostack)
        )
    };
}
