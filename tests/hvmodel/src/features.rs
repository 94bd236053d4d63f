//! The hypervisor's identity and feature words: the Hyper-V CPUID leaves on x64, which arm64
//! reads as the 128-bit information registers (HvRegisterHypervisorVersion and friends).

use hvdef::aarch64::HvArm64RegisterFeaturesInfo;
use hvdef::x86_64::cpuid;
use hvdef::HvPartitionPrivilegeMask;

use super::{Arch, Model};

/// The build the mock claims to be (Windows Server 2025's hypervisor, 10.0.26100): any value
/// works, the paravisor only logs it.
const BUILD_NUMBER: u32 = 26100;
const VERSION_MAJOR_MINOR: u32 = 10 << 16;
/// CPUID 0x40000004 EBX: never notify long spin waits.
const SPIN_RETRIES_NEVER: u32 = u32::MAX;

impl Model {
    /// CPUID 0x40000002 / HvRegisterHypervisorVersion.
    pub(crate) fn version_words(&self) -> [u32; 4] {
        [BUILD_NUMBER, VERSION_MAJOR_MINOR, 0, 0]
    }

    /// CPUID 0x40000003 / HvRegisterPrivilegesAndFeaturesInfo: privileges, then feature bits.
    pub(crate) fn privilege_words(&self) -> [u32; 4] {
        let p = self.scenario.privileges;
        [p.low(), p.high(), 0, self.feature_edx()]
    }

    fn feature_edx(&self) -> u32 {
        let xmm = if self.scenario.xmm_fast_hypercalls {
            cpuid::HV_FEATURES_EDX_XMM_FAST_INPUT | cpuid::HV_FEATURES_EDX_XMM_FAST_OUTPUT
        } else {
            0
        };
        xmm | cpuid::HV_FEATURES_EDX_HYPERCALL_MSR_LOCK
    }

    /// CPUID 0x40000004 (and x64's HvRegisterFeaturesInfo): recommendations, with EAX bit 12
    /// when this hypervisor is itself nested in Hyper-V.
    pub(crate) fn recommendation_words(&self) -> [u32; 4] {
        let eax = if self.nested() {
            cpuid::HV_ENLIGHTENMENT_EAX_NESTED
        } else {
            0
        };
        [eax, SPIN_RETRIES_NEVER, 0, 0]
    }

    /// HvRegisterFeaturesInfo: x64 packs the CPUID 0x40000004 words; arm64 has its own layout
    /// with the nested indicator at bit 4 and the spinlock retries in bits 63:32 (TLFS
    /// feature-discovery.md, "Implementation Recommendations - HvRegisterFeaturesInfo").
    pub(crate) fn features_info(&self) -> u128 {
        match self.scenario.arch {
            Arch::X86_64 => words_to_u128(self.recommendation_words()),
            Arch::Aarch64 => HvArm64RegisterFeaturesInfo::new()
                .with_nested(self.nested())
                .with_spinlock_retries(SPIN_RETRIES_NEVER)
                .into_bits(),
        }
    }

    /// CPUID 0x40000005 / HvRegisterImplementationLimitsInfo.
    pub(crate) fn limit_words(&self) -> [u32; 4] {
        [
            self.scenario.limits.max_vps,
            self.scenario.limits.max_lps,
            0,
            0,
        ]
    }

    /// CPUID 0x40000009: what the L0 hypervisor offers a nested hypervisor (its SynIC, VP index
    /// and hypercall MSRs, the `HV_X64_MSR_NESTED_*` set); nothing when not nested.
    pub(crate) fn nested_feature_words(&self) -> [u32; 4] {
        if !self.nested() {
            return [0; 4];
        }
        let eax = HvPartitionPrivilegeMask::new()
            .with_access_synic_regs(true)
            .with_access_intr_ctrl_regs(true)
            .with_access_hypercall_msrs(true)
            .with_access_vp_index(true)
            .low();
        [eax, 0, 0, self.feature_edx()]
    }
}

/// Packs EAX..EDX into the 128-bit register form (EAX in the lowest bits).
pub(crate) fn words_to_u128(words: [u32; 4]) -> u128 {
    words
        .iter()
        .rev()
        .fold(0u128, |acc, &w| (acc << 32) | u128::from(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing() {
        assert_eq!(
            words_to_u128([1, 2, 3, 4]),
            0x0000_0004_0000_0003_0000_0002_0000_0001
        );
    }
}
