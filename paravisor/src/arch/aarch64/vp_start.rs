//! aarch64 VP start: the initial context an AP gets at VTL2 (HvCallEnableVpVtl /
//! HvCallStartVirtualProcessor input).
#![forbid(unsafe_code)]

/// The input that starts `vp` at `vtl` in `boot`'s AP entry with this VP's translation and
/// vector setup, on `vp`'s boot stack.
pub fn vp_start_input(vp: u32, vtl: u8) -> hvdef::aarch64::HvArm64InputEnableVpVtl {
    use aarch64_cpu::registers::{
        Readable, MAIR_EL1, SCTLR_EL1, TCR_EL1, TTBR0_EL1, TTBR1_EL1, VBAR_EL1,
    };
    hvdef::aarch64::HvArm64InputEnableVpVtl {
        partition_id: hvdef::HV_PARTITION_ID_SELF,
        vp_index: vp,
        target_vtl: vtl,
        reserved: [0; 3],
        context: hvdef::aarch64::HvArm64InitialVpContext {
            pc: boot::arch::ap_entry(),
            sp_elh: boot::stacks::top(vp as usize),
            sctlr_el1: SCTLR_EL1.get(),
            mair_el1: MAIR_EL1.get(),
            tcr_el1: TCR_EL1.get(),
            vbar_el1: VBAR_EL1.get(),
            ttbr0_el1: TTBR0_EL1.get(),
            ttbr1_el1: TTBR1_EL1.get(),
            x18: 0,
        },
    }
}
