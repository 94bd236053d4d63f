//! aarch64 probes: the SMCCC vendor-hypervisor UID call detection reads, and the features that
//! need no hypercall.
#![forbid(unsafe_code)]

use hvdef::aarch64::SMCCC_VENDOR_HYP_UID;

/// The four UID words the SMCCC vendor-hypervisor UID call answers (W0..W3).
pub fn vendor_hyp_uid() -> [u32; 4] {
    let mut regs = [0; 18];
    regs[0] = SMCCC_VENDOR_HYP_UID as u64;
    let out = super::hypercall::smccc(regs);
    [out[0] as u32, out[1] as u32, out[2] as u32, out[3] as u32]
}

/// Where the nested-host indicator is (`crate::synthetic::nested_host`), for the boot log.
pub const NESTED_INDICATOR: &str = "HvRegisterFeaturesInfo bit 4";

/// arm64 has no XMM registers.
pub fn xmm_fast_input() -> bool {
    false
}
