//! Where the paravisor runs: VSM must be available and this VP's active VTL must be 2. Read
//! through the shared register path like every other register.

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

/// Checks that this VP runs at VTL2 and returns its VSM status and VP index, both read in one
/// GetVpRegisters (everything a VP reads about itself at bring-up, through the shared
/// register path).
pub fn check_vp<A: HypercallAbi>(
    hv: &mut Hypercall<'_, A>,
    privileges: HvPartitionPrivilegeMask,
) -> Result<VpSelf, VsmError> {
    if !privileges.access_vsm() {
        return Err(VsmError::NoAccessVsm);
    }
    let mut values = [HvRegisterValue::from(0u64); 2];
    hv.get_vp_registers(
        VpTarget::SELF,
        &[HvRegisterName::VSM_VP_STATUS, HvRegisterName::VP_INDEX],
        &mut values,
    )
    .map_err(VsmError::StatusUnreadable)?;
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
