//! Hypervisor detection: finding Hyper-V and what it grants us from the raw answers of the arch
//! probes, and the guest OS id the paravisor reports. Pure logic: `synthetic` feeds it the CPUID
//! leaves (x86) or the SMCCC UID words and register values (arm64).
#![forbid(unsafe_code)]

use core::fmt;
use hvdef::aarch64::HvArm64RegisterFeaturesInfo;
use hvdef::x86_64::cpuid as leaf;
use hvdef::{HvGuestOsIdOpenSource, HvPartitionPrivilegeMask, HvRegisterValue};

/// What the hypervisor reported at detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HvInfo {
    pub privileges: HvPartitionPrivilegeMask,
}

/// Why detection concluded there is no Hyper-V interface: what was found instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoHyperV {
    /// CPUID.1:ECX bit 31 is clear.
    NoHypervisorBit,
    /// Leaf 0x40000000 answered another vendor, or too few leaves.
    Vendor { vendor: [u8; 12], max_leaf: u32 },
    /// Leaf 0x40000001 is not "Hv#1".
    Interface { signature: u32 },
    /// The SMCCC vendor-hypervisor UID call answered another UID.
    Uid { words: [u32; 4] },
}

impl fmt::Display for NoHyperV {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoHyperV::NoHypervisorBit => write!(f, "CPUID.1:ECX[31] (hypervisor present) is clear"),
            NoHyperV::Vendor { vendor, max_leaf } => write!(
                f,
                "CPUID 0x40000000 vendor {:?}, max leaf {max_leaf:#x} (want \"Microsoft Hv\", >= {:#x})",
                core::str::from_utf8(vendor).unwrap_or("<not text>"),
                leaf::HV_CPUID_MIN_MAX_FUNCTION
            ),
            NoHyperV::Interface { signature } => write!(
                f,
                "CPUID 0x40000001 interface {signature:#x} (want \"Hv#1\" = {:#x})",
                leaf::HV_CPUID_INTERFACE_HV1
            ),
            NoHyperV::Uid { words } => {
                let want = hvdef::aarch64::HV_VENDOR_HYP_UID;
                write!(
                    f,
                    "SMCCC vendor UID {:#x} {:#x} {:#x} {:#x} (want {:#x} {:#x} {:#x} {:#x})",
                    words[0], words[1], words[2], words[3], want[0], want[1], want[2], want[3]
                )
            }
        }
    }
}

/// Detection on x86 from CPUID (`cpuid(leaf, subleaf)` -> eax, ebx, ecx, edx).
pub fn detect_x86(cpuid: &mut dyn FnMut(u32, u32) -> [u32; 4]) -> Result<HvInfo, NoHyperV> {
    if cpuid(1, 0)[2] & leaf::CPUID1_ECX_HYPERVISOR_PRESENT == 0 {
        return Err(NoHyperV::NoHypervisorBit);
    }
    let [max_leaf, b, c, d] = cpuid(leaf::HV_CPUID_VENDOR_AND_MAX_FUNCTIONS, 0);
    let vendor_ok = [b, c, d]
        == [
            leaf::HV_CPUID_VENDOR_EBX,
            leaf::HV_CPUID_VENDOR_ECX,
            leaf::HV_CPUID_VENDOR_EDX,
        ];
    if !vendor_ok
        || !(leaf::HV_CPUID_MIN_MAX_FUNCTION..=leaf::HV_CPUID_MAX_MAX_FUNCTION).contains(&max_leaf)
    {
        let mut vendor = [0; 12];
        for (i, word) in [b, c, d].iter().enumerate() {
            vendor[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
        }
        return Err(NoHyperV::Vendor { vendor, max_leaf });
    }
    let signature = cpuid(leaf::HV_CPUID_INTERFACE, 0)[0];
    if signature != leaf::HV_CPUID_INTERFACE_HV1 {
        return Err(NoHyperV::Interface { signature });
    }
    let [priv_low, priv_high, _, _] = cpuid(leaf::HV_CPUID_FEATURES, 0);
    Ok(HvInfo {
        privileges: HvPartitionPrivilegeMask::from_halves(priv_low, priv_high),
    })
}

/// x86: whether the host runs us nested in a Hyper-V partition, from CPUID 0x40000004 EAX bit 12
/// (TLFS feature-discovery.md, "Implementation Recommendations - 0x40000004"). The input of the
/// boot-time nested table; read once.
pub fn nested_x86(cpuid: &mut dyn FnMut(u32, u32) -> [u32; 4]) -> bool {
    cpuid(leaf::HV_CPUID_ENLIGHTENMENT_INFO, 0)[0] & leaf::HV_ENLIGHTENMENT_EAX_NESTED != 0
}

/// arm64: the same indicator, bit 4 of HvRegisterFeaturesInfo (TLFS feature-discovery.md,
/// "Implementation Recommendations - HvRegisterFeaturesInfo"), which `synthetic::nested_host`
/// reads through the shared register path.
pub fn nested_arm64(features_info: HvRegisterValue) -> bool {
    HvArm64RegisterFeaturesInfo::from_bits(features_info.as_u128()).nested()
}

/// Checks the SMCCC vendor-hypervisor UID (arm64); privileges are read afterwards through the
/// register path.
pub fn check_uid(words: [u32; 4]) -> Result<(), NoHyperV> {
    if words == hvdef::aarch64::HV_VENDOR_HYP_UID {
        Ok(())
    } else {
        Err(NoHyperV::Uid { words })
    }
}

/// The guest OS id the paravisor reports: open source, OS type 0 (none of the registered
/// types, so the hypervisor applies no OS-specific behaviour), version = this crate's.
pub fn guest_os_id() -> u64 {
    let version = [
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
    ]
    .iter()
    .fold(0u32, |acc, part| {
        (acc << 8) | part.parse::<u32>().unwrap_or(0) & 0xff
    });
    HvGuestOsIdOpenSource::new()
        .with_is_open_source(true)
        .with_version(version)
        .into_bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hyperv_leaves(nested: bool) -> impl FnMut(u32, u32) -> [u32; 4] {
        move |l, _| match l {
            1 => [0, 0, leaf::CPUID1_ECX_HYPERVISOR_PRESENT, 0],
            leaf::HV_CPUID_VENDOR_AND_MAX_FUNCTIONS => [
                0x4000_000A,
                leaf::HV_CPUID_VENDOR_EBX,
                leaf::HV_CPUID_VENDOR_ECX,
                leaf::HV_CPUID_VENDOR_EDX,
            ],
            leaf::HV_CPUID_INTERFACE => [leaf::HV_CPUID_INTERFACE_HV1, 0, 0, 0],
            leaf::HV_CPUID_FEATURES => [0x2fff, 0x0033_3030, 0, 0],
            leaf::HV_CPUID_ENLIGHTENMENT_INFO => [if nested { 1 << 12 } else { 0 }, 0, 0, 0],
            _ => [0; 4],
        }
    }

    #[test]
    fn detects_hyperv_and_the_nested_hint() {
        let info = detect_x86(&mut hyperv_leaves(false)).unwrap();
        assert!(info.privileges.access_vsm());
        assert!(info.privileges.access_synic_regs());
        assert!(!nested_x86(&mut hyperv_leaves(false)));
        assert!(nested_x86(&mut hyperv_leaves(true)));
        // Only bit 12 counts: bit 14 (enlightened VMCS) alone is not nesting.
        assert!(!nested_x86(&mut |_, _| [1 << 14, u32::MAX, 0, 0]));
    }

    #[test]
    fn arm64_nested_is_features_info_bit_4() {
        // Spinlock retries all ones (bits 63:32), as a host that never wants notification.
        let flat = HvRegisterValue::from(0xFFFF_FFFF_0000_0000u128);
        assert!(!nested_arm64(flat));
        assert!(nested_arm64(HvRegisterValue::from(
            0xFFFF_FFFF_0000_0010u128
        )));
        // x64's bit 12 is reserved in the arm64 layout.
        assert!(!nested_arm64(HvRegisterValue::from(1u128 << 12)));
    }

    #[test]
    fn names_what_it_found_instead() {
        // QEMU TCG: hypervisor bit set, vendor "TCGTCGTCGTCG", max leaf 0x40000001.
        let mut tcg = |l, _| match l {
            1 => [0, 0, 1 << 31, 0],
            0x4000_0000 => {
                let w = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                [0x4000_0001, w(b"TCGT"), w(b"CGTC"), w(b"GTCG")]
            }
            _ => [0; 4],
        };
        let err = detect_x86(&mut tcg).unwrap_err();
        assert_eq!(
            err,
            NoHyperV::Vendor {
                vendor: *b"TCGTCGTCGTCG",
                max_leaf: 0x4000_0001
            }
        );
        assert!(format!("{err}").contains("\"TCGTCGTCGTCG\", max leaf 0x40000001"));
        assert_eq!(
            detect_x86(&mut |_, _| [0; 4]),
            Err(NoHyperV::NoHypervisorBit)
        );
        let mut wrong_interface = hyperv_leaves(false);
        let mut f = |l, s| {
            if l == 0x4000_0001 {
                [0x1234, 0, 0, 0]
            } else {
                wrong_interface(l, s)
            }
        };
        assert_eq!(
            detect_x86(&mut f),
            Err(NoHyperV::Interface { signature: 0x1234 })
        );
    }

    #[test]
    fn arm64_uid() {
        assert!(check_uid(hvdef::aarch64::HV_VENDOR_HYP_UID).is_ok());
        // QEMU's PSCI answers an unknown SMCCC call with -1 in x0.
        assert!(check_uid([u32::MAX, 0, 0, 0]).is_err());
    }

    #[test]
    fn guest_os_id_is_open_source_and_non_zero() {
        let id = guest_os_id();
        assert_ne!(id, 0);
        assert_eq!(id >> 63, 1);
        assert_eq!((id >> 16) & 0xffff_ffff, 0x00_01_00);
    }
}
