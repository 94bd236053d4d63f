//! VTL memory protection: what VTL2 lets the lower VTLs do with each page
//! (HvCallModifyVtlProtectionMask), and what the hypervisor does when a lower VTL's access is
//! not allowed: the access is not carried out and VTL2, the VTL that set the protection, gets an
//! `HvMessageTypeGpaIntercept` (TLFS vsm.md "Memory Access Protections"; fact sheet §4).
//!
//! Sources for the handler: TLFS hypercalls/HvCallModifyVtlProtectionMask.md (only a lower VTL
//! can be protected; non-RAM is INVALID_PARAMETER) and OpenVMM's VTL2 emulation
//! (`vm/hv1/hv1_hypercall/src/imp.rs` decodes the target VTL before the handler;
//! `vmm_core/virt_whp/src/hypercalls.rs` `modify_vtl_protection_mask`), in its order: a target
//! VTL with reserved bits set or above 2 → INVALID_PARAMETER; partition other than self →
//! ACCESS_DENIED; a caller other than VTL2 → ACCESS_DENIED; VTL2's `enable_vtl_protection`
//! clear → ACCESS_DENIED; target VTL other than "current" or VTL2 → INVALID_PARAMETER; flags
//! outside the permission bits → INVALID_PARAMETER (OpenVMM accepts exactly none / read-only /
//! all; the model takes any combination of the four TLFS permission bits, the TLFS's reading);
//! the RsvdZ bytes are not checked (OpenVMM ignores them); a page no RAM backs →
//! INVALID_PARAMETER with reps completed = that page's index (the TLFS reading; OpenVMM reports
//! the start of the contiguous run that holds it).

use hvdef::aarch64::{
    reg as arm_reg, HvArm64InterceptMessageHeader, HvArm64MemoryInterceptMessage,
    HvArm64VpExecutionState,
};
use hvdef::x86_64::{
    reg as x64_reg, HvX64InterceptMessageHeader, HvX64MemoryInterceptMessage, HvX64SegmentRegister,
    HvX64VpExecutionState,
};
use hvdef::{
    HvError, HvInputModifyVtlProtectionMask, HvInterceptAccessType, HvMapGpaFlags,
    HvMemoryAccessInfo, HvMessage, HvMessageType, HvRegisterVsmPartitionConfig, HvResult, Vtl,
    HV_PAGE_SHIFT, HV_PAGE_SIZE, HV_PARTITION_ID_SELF,
};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use super::hypercall::{Call, Empty, RepCall};
use super::{Arch, GuestMemory, Model};

/// `HV_CACHE_TYPE` write-back, what OpenVMM's emulation reports in memory intercepts.
const CACHE_TYPE_WRITE_BACK: u32 = 6;

/// The permission bits of `HV_MAP_GPA_FLAGS` (readable, writable, kernel and user execute).
const PERMISSION_BITS: u32 = 0xF;

/// Whether `flags` allows `access` (execute: kernel execute, which governs both modes with MBEC
/// off; the model's lower VTLs run kernels).
pub(crate) fn allows(flags: HvMapGpaFlags, access: HvInterceptAccessType) -> bool {
    match access {
        HvInterceptAccessType::READ => flags.readable(),
        HvInterceptAccessType::WRITE => flags.writable(),
        _ => flags.kernel_executable(),
    }
}

impl Model {
    /// The access VTL2 leaves lower VTLs on the page holding `gpa` (all, unless it protected it).
    pub fn lower_vtl_access(&self, gpa: u64) -> HvMapGpaFlags {
        self.partition
            .protections
            .get(&(gpa >> HV_PAGE_SHIFT))
            .copied()
            .unwrap_or(HvMapGpaFlags::ALL_ACCESS)
    }

    /// The pages (by number) whose lower-VTL access changed since the last call, for a glue
    /// that keeps second-level tables in step with [`Model::lower_vtl_access`].
    pub fn take_protection_changes(&mut self) -> alloc::collections::BTreeSet<u64> {
        core::mem::take(&mut self.partition.protection_changes)
    }

    /// The first GPA of `gpa..gpa + len` that `vtl` may not access this way, if any. Only VTL2
    /// sets protections in the model, so they bind every VTL below it.
    pub(crate) fn denied(
        &self,
        vtl: Vtl,
        gpa: u64,
        len: u64,
        access: HvInterceptAccessType,
    ) -> Option<u64> {
        if vtl >= Vtl::VTL2 || len == 0 {
            return None;
        }
        let last = gpa.saturating_add(len - 1) >> HV_PAGE_SHIFT;
        (gpa >> HV_PAGE_SHIFT..=last)
            .find(|page| !allows(self.lower_vtl_access(page << HV_PAGE_SHIFT), access))
            .map(|page| (page << HV_PAGE_SHIFT).max(gpa))
    }

    /// `HvMessageTypeGpaIntercept` for `lower`'s `access` to `gpa`: header instruction length 0,
    /// no GVA/GPA translation and write-back as OpenVMM's emulation reports them
    /// (`vmm_core/virt_whp/src/vp.rs`); the instruction bytes, GVA and TPR, which OpenVMM passes
    /// through from WHP, are zero (the scripted VTL0 has no instruction stream); the header from
    /// the lower VTL's registers as they are (the IP of the faulting instruction).
    /// arm64's syndrome is the stage-2 abort's ESR_EL2 (Arm ARM): EC 0x24 data abort / 0x20
    /// instruction abort from a lower EL, IL, WnR for a write, fault status 0x0F (permission
    /// fault, level 3).
    pub(crate) fn memory_intercept_message(
        &self,
        vp: u32,
        lower: Vtl,
        gpa: u64,
        access: HvInterceptAccessType,
    ) -> HvMessage {
        let file = self.vp(vp).file(lower);
        let delivering = self
            .vtl0
            .in_flight(vp)
            .is_some_and(|call| call.delivering_event);
        let mut message = HvMessage::new_zeroed();
        message.header.message_type = HvMessageType::GPA_INTERCEPT;
        let payload = match self.scenario.arch {
            Arch::X86_64 => {
                let cs =
                    HvX64SegmentRegister::read_from_bytes(&file.reg(x64_reg::CS).to_le_bytes())
                        .unwrap_or_default();
                HvX64MemoryInterceptMessage {
                    header: HvX64InterceptMessageHeader {
                        vp_index: vp,
                        instruction_length_and_cr8: 0,
                        intercept_access_type: access,
                        // CR0.PE is bit 0, EFER.LMA bit 10.
                        execution_state: HvX64VpExecutionState::new()
                            .with_cpl((cs.selector & 3) as u8)
                            .with_cr0_pe(file.reg64(x64_reg::CR0) & 1 != 0)
                            .with_efer_lma(file.reg64(x64_reg::EFER) & (1 << 10) != 0)
                            .with_interruption_pending(delivering)
                            .with_vtl(lower.get()),
                        cs_segment: cs,
                        rip: file.reg64(x64_reg::RIP),
                        rflags: file.reg64(x64_reg::RFLAGS),
                    },
                    cache_type: CACHE_TYPE_WRITE_BACK,
                    instruction_byte_count: 0,
                    memory_access_info: HvMemoryAccessInfo::new(),
                    tpr_priority: 0,
                    reserved: 0,
                    guest_virtual_address: 0,
                    guest_physical_address: gpa,
                    instruction_bytes: [0; 16],
                }
                .as_bytes()
                .to_vec()
            }
            Arch::Aarch64 => {
                const IL: u64 = 1 << 25;
                const WNR: u64 = 1 << 6;
                const PERMISSION_FAULT_L3: u64 = 0x0F;
                let class: u64 = if access == HvInterceptAccessType::EXECUTE {
                    0x20
                } else {
                    0x24
                };
                let wnr = if access == HvInterceptAccessType::WRITE {
                    WNR
                } else {
                    0
                };
                let cpsr = file.reg64(arm_reg::CPSR);
                HvArm64MemoryInterceptMessage {
                    header: HvArm64InterceptMessageHeader {
                        vp_index: vp,
                        instruction_length: 0,
                        intercept_access_type: access,
                        // CPSR.M[3:2] is the exception level.
                        execution_state: HvArm64VpExecutionState::new()
                            .with_cpl(((cpsr >> 2) & 3) as u8)
                            .with_interruption_pending(delivering)
                            .with_vtl(lower.get()),
                        pc: file.reg64(arm_reg::XPC),
                        cpsr,
                    },
                    cache_type: CACHE_TYPE_WRITE_BACK,
                    instruction_byte_count: 0,
                    memory_access_info: HvMemoryAccessInfo::new(),
                    reserved1: 0,
                    instruction_bytes: [0; 4],
                    reserved2: 0,
                    guest_virtual_address: 0,
                    guest_physical_address: gpa,
                    syndrome: class << 26 | IL | wnr | PERMISSION_FAULT_L3,
                }
                .as_bytes()
                .to_vec()
            }
        };
        message.payload_bytes_mut()[..payload.len()].copy_from_slice(&payload);
        message.header.payload_size = payload.len() as u8;
        message
    }
}

impl Model {
    /// Whether RAM backs the page: `Scenario::ram` if given, else whether guest memory has it.
    fn is_ram(&self, mem: &mut dyn GuestMemory, page: u64) -> bool {
        let Some(gpa) = page.checked_mul(HV_PAGE_SIZE) else {
            return false;
        };
        if !self.scenario.ram.is_empty() {
            return self.scenario.ram.iter().any(|r| {
                r.start <= gpa && gpa.checked_add(HV_PAGE_SIZE).is_some_and(|e| e <= r.end)
            });
        }
        mem.read(gpa, &mut [0u8]).is_ok()
    }
}

/// HvCallModifyVtlProtectionMask (the module doc has the order of its checks).
pub(crate) struct ModifyVtlProtectionMask;

impl RepCall for ModifyVtlProtectionMask {
    type Header = HvInputModifyVtlProtectionMask;
    type Element = u64;
    type Output = Empty;
    type Target = HvInputModifyVtlProtectionMask;

    fn target(
        model: &Model,
        call: &Call<'_>,
        header: HvInputModifyVtlProtectionMask,
    ) -> HvResult<HvInputModifyVtlProtectionMask> {
        let config = HvRegisterVsmPartitionConfig::from_bits(
            model.partition.vtls[Vtl::VTL2.get() as usize].vsm_config,
        );
        let target = header.target_vtl;
        if target.reserved_bits() != 0
            || (target.use_target_vtl() && target.target_vtl() > Vtl::VTL2.get())
        {
            Err(HvError::INVALID_PARAMETER)
        } else if header.partition_id != HV_PARTITION_ID_SELF
            || call.vtl != Vtl::VTL2
            || !config.enable_vtl_protection()
        {
            Err(HvError::ACCESS_DENIED)
        } else if (target.use_target_vtl() && target.target_vtl() != Vtl::VTL2.get())
            || header.map_flags.into_bits() & !PERMISSION_BITS != 0
        {
            Err(HvError::INVALID_PARAMETER)
        } else {
            Ok(header)
        }
    }

    fn rep(
        model: &mut Model,
        call: &mut Call<'_>,
        header: &HvInputModifyVtlProtectionMask,
        page: u64,
    ) -> HvResult<Empty> {
        if !model.is_ram(call.mem, page) {
            return Err(HvError::INVALID_PARAMETER);
        }
        model.partition.protection_changes.insert(page);
        if header.map_flags == HvMapGpaFlags::ALL_ACCESS {
            model.partition.protections.remove(&page);
        } else {
            model.partition.protections.insert(page, header.map_flags);
        }
        Ok([])
    }
}
