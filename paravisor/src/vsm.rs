//! Where the paravisor runs: VSM must be available and this VP's active VTL must be 2. Read
//! through the shared register path like every other register.
#![forbid(unsafe_code)]

use crate::hypercall::{self, Hypercall, HypercallAbi, VpTarget};
use core::fmt;
use hvdef::{
    HvPartitionPrivilegeMask, HvRegisterName, HvRegisterValue, HvRegisterVsmCapabilities,
    HvRegisterVsmPartitionStatus, HvRegisterVsmVpStatus,
};

/// The VTL the paravisor must run at.
pub const PARAVISOR_VTL: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VsmError {
    /// The partition lacks the AccessVsm privilege: no VSM.
    NoAccessVsm,
    /// Reading HvRegisterVsmVpStatus and HvRegisterVpIndex failed.
    StatusUnreadable(hypercall::Error),
    /// VSM is there but this VP is not at VTL2.
    WrongVtl { status: HvRegisterVsmVpStatus },
}

impl fmt::Display for VsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VsmError::NoAccessVsm => {
                write!(
                    f,
                    "VSM is not available: the partition lacks the AccessVsm privilege"
                )
            }
            VsmError::StatusUnreadable(e) => {
                write!(
                    f,
                    "reading HvRegisterVsmVpStatus and HvRegisterVpIndex failed: {e}"
                )
            }
            VsmError::WrongVtl { status } => write!(
                f,
                "running at VTL{} (enabled VTL set {:#x}), not VTL{PARAVISOR_VTL}",
                status.active_vtl(),
                status.enabled_vtl_set()
            ),
        }
    }
}

/// What a VP learns about itself at bring-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VpSelf {
    pub status: HvRegisterVsmVpStatus,
    /// HvRegisterVpIndex: the hypervisor's index of this VP.
    pub vp_index: u64,
}

/// Most registers [`check_vp`] reads along with the VSM status and the VP index.
pub const CHECK_VP_EXTRA_MAX: usize = 32;

/// Checks that this VP runs at VTL2 and returns its VSM status and VP index, read in one
/// GetVpRegisters with the `extra` registers of `target` (into `extra_values`): everything a VP
/// reads at bring-up, through the shared register path. HvRegisterVsmVpStatus "is shared across
/// all VTLs" (TLFS vsm.md) and the VP index is the VP's whatever the VTL, so an AP reads both
/// with target VTL0 alongside VTL0's entry registers.
pub fn check_vp<A: HypercallAbi>(
    hv: &mut Hypercall<'_, A>,
    privileges: HvPartitionPrivilegeMask,
    target: VpTarget,
    extra: &[HvRegisterName],
    extra_values: &mut [HvRegisterValue],
) -> Result<VpSelf, VsmError> {
    assert!(
        extra.len() <= CHECK_VP_EXTRA_MAX && extra.len() == extra_values.len(),
        "at most {CHECK_VP_EXTRA_MAX} extra registers, one value each"
    );
    if !privileges.access_vsm() {
        return Err(VsmError::NoAccessVsm);
    }
    let n = 2 + extra.len();
    let mut names = [HvRegisterName(0); 2 + CHECK_VP_EXTRA_MAX];
    names[0] = HvRegisterName::VSM_VP_STATUS;
    names[1] = HvRegisterName::VP_INDEX;
    names[2..n].copy_from_slice(extra);
    let mut values = [HvRegisterValue::from(0u64); 2 + CHECK_VP_EXTRA_MAX];
    hv.get_vp_registers(target, &names[..n], &mut values[..n])
        .map_err(VsmError::StatusUnreadable)?;
    extra_values.copy_from_slice(&values[2..n]);
    let status = HvRegisterVsmVpStatus::from_bits(values[0].as_u64());
    if status.active_vtl() != PARAVISOR_VTL {
        return Err(VsmError::WrongVtl { status });
    }
    Ok(VpSelf {
        status,
        vp_index: values[1].as_u64(),
    })
}

/// Partition-wide VSM facts the paravisor needs later (intercept delivery, VTL layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VsmPartition {
    pub capabilities: HvRegisterVsmCapabilities,
    pub status: HvRegisterVsmPartitionStatus,
}

/// Reads the VSM capabilities and partition status, in one GetVpRegisters.
pub fn partition<A: HypercallAbi>(
    hv: &mut Hypercall<'_, A>,
) -> Result<VsmPartition, hypercall::Error> {
    let mut values = [HvRegisterValue::from(0u64); 2];
    hv.get_vp_registers(
        VpTarget::SELF,
        &[
            HvRegisterName::VSM_CAPABILITIES,
            HvRegisterName::VSM_PARTITION_STATUS,
        ],
        &mut values,
    )?;
    Ok(VsmPartition {
        capabilities: HvRegisterVsmCapabilities::from_bits(values[0].as_u64()),
        status: HvRegisterVsmPartitionStatus::from_bits(values[1].as_u64()),
    })
}
