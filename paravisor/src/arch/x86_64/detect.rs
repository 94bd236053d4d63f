//! x86_64 probes: CPUID, the one instruction detection and the feature checks read (Hyper-V
//! intercepts it and answers its leaves 0x40000000..).
#![forbid(unsafe_code)]

/// CPUID `leaf`/`subleaf` -> EAX, EBX, ECX, EDX.
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Where the nested-host indicator is (`crate::synthetic::nested_host`), for the boot log.
pub const NESTED_INDICATOR: &str = "CPUID 0x40000004 EAX bit 12";

/// Whether the host offers XMM fast hypercall input (CPUID 0x40000003 EDX bit 4).
pub fn xmm_fast_input() -> bool {
    cpuid(hvdef::x86_64::cpuid::HV_CPUID_FEATURES, 0)[3]
        & hvdef::x86_64::cpuid::HV_FEATURES_EDX_XMM_FAST_INPUT
        != 0
}
