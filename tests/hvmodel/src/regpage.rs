//! The x64 VTL register page (NON-TLFS: the TLFS does not describe it). Fact sheet, then the
//! model's implementation.
//!
//! # Fact sheet
//!
//! **What it is.** A page of VTL2's memory that the hypervisor overlays, per VP, with the
//! registers of the VTL VTL2 was entered from; what VTL2 writes there and marks dirty the
//! hypervisor loads into that VTL when VTL2 returns. It saves VTL2 the SetVpRegisters (target
//! VTL0) of a private register, most often RIP after it completed an intercepted instruction.
//!
//! **Enabling it.** VTL2 sets `HvX64RegisterName::RegisterPage` = 0x0009_001C (OpenVMM
//! `vm/hv1/hvdef/src/lib.rs`; Linux `include/hyperv/hvgdk_mini.h` `HV_X64_REGISTER_REG_PAGE`)
//! on its own VP with HvCallSetVpRegisters, input VTL "current" (Linux `drivers/hv/mshv_vtl_main.c`
//! `mshv_vtl_configure_reg_page`: `input_vtl_zero`; OpenHCL's sidecar
//! `openhcl/sidecar/src/arch/x86_64/vp.rs` `map_overlays`: `HvInputVtl::CURRENT_VTL`). The value
//! is an overlay-page register: bit 0 enabled, bits 63:12 the page's GPA page number (Linux
//! `union hv_synic_overlay_page_msr`; the sidecar builds it as `HvSynicSimpSiefp`). Writing 0
//! unmaps it (the sidecar, when a VP is removed). One page per VP.
//!
//! **Discovery.** No CPUID leaf or privilege bit names it: a paravisor tries the write. Linux
//! tries only when `HvRegisterVsmCapabilities.intercept_page_available` and only on x86_64; "the
//! older hypervisors might not support the register page" and answer
//! HV_STATUS_INVALID_PARAMETER; a hypervisor that has it but does not offer it answers
//! ACCESS_DENIED ("not available for use"); either means: no page, use hypercalls (Linux
//! `mshv_vtl_configure_reg_page`, which then reports `MSHV_CAP_REGISTER_PAGE` 0). The sidecar
//! logs a failure as "an expected condition". OpenHCL does not use it in hardware-isolated
//! (SNP, TDX) partitions (`openhcl/hcl/src/ioctl.rs`, `supports_register_page && !isolation.
//! is_hardware_isolated()`).
//!
//! **Layout** (`HvX64RegisterPage`, 4096 bytes; [`hvdef::x86_64::HvX64RegisterPage`]): `version`
//! u16 at 0, `is_valid` u8 at 2, `vtl` u8 at 3, `dirty` u32 at 4, `gp_registers` [u64; 16] at 8
//! (RAX RCX RDX RBX RSP RBP RSI RDI R8-R15), `rip` at 136, `rflags` at 144, a reserved u64,
//! `xmm` [u128; 6] at 160, `segment` [HvX64SegmentRegister; 6] at 256 (ES CS SS DS FS GS), then
//! `cr0` 352, `cr3`, `cr4`, `cr8`, `efer` 384, `dr7` 392, `pending_interruption` 400,
//! `interrupt_state` 408, `instruction_emulation_hints` 416, reserved to the end.
//!
//! **Dirty bits** (`HvX64RegisterPageDirtyFlags`): bit 0 general purpose, 1 instruction pointer,
//! 2 XMM, 3 segments, 4 flags. OpenHCL (`openhcl/hcl/src/ioctl/x64.rs` `try_set_reg`) writes
//! through the page RSP (setting general purpose), RIP (instruction pointer), RFLAGS (flags) and
//! ES-GS (segments); the other general-purpose and the XMM registers it keeps in its own CPU
//! context, which the VTL switch loads (they are shared). CR0/CR3/CR4/CR8/EFER/DR7 "cannot be set
//! via this interface": OpenHCL only compares them and otherwise falls back to the hypercall.
//! When OpenHCL stops using the page (`flush_register_page`) it clears `is_valid` and `dirty`
//! first, then sets the dirty registers by hypercall.
//!
//! **Validity.** `is_valid` is set while VTL2 handles an intercept: "if available, the register
//! page is only valid if VTL 2 is handling an intercept" (OpenHCL `reg_page_vtl`). OpenHCL reads
//! and writes through it only when `is_valid != 0` and `vtl` is the VTL it means, and takes the
//! intercepted VTL from `vtl` (`virt_mshv_vtl/src/processor/mshv/x64.rs`
//! `InterceptHandler::new`). The hypervisor does not touch it while the VP runs in VTL2.
//!
//! **arm64.** OpenVMM also defines `HvAarch64RegisterPage` (PC, CPSR, SCTLR_EL1, TCR_EL1) and
//! OpenHCL reads it when mapped, but Linux's `mshv_vtl` maps the page only under
//! `CONFIG_X86_64` (and its 2026 rework leaves arm64 a stub, "unsupported"): nothing maps one on
//! arm64, and the model has none there.
//!
//! # The model's choices (no source says)
//!
//! - `version` is written as 1; nothing reads it.
//! - A dirty general-purpose block loads RSP only: the other fifteen are shared, and VTL2 hands
//!   them over in the registers themselves (RAX/RCX through the assist page), which is what
//!   OpenHCL relies on when it marks the block dirty for RSP alone. Likewise a dirty XMM block
//!   loads nothing (XMM0-5 are shared).
//! - `dr7`, `pending_interruption`, `interrupt_state` and `instruction_emulation_hints` read 0
//!   (the model keeps none of them for a lower VTL).
//! - Every VtlReturn takes the dirty state and leaves the page invalid with nothing dirty, so
//!   any later entry to VTL2 that is not an intercept (a VTL call, an interrupt) finds it
//!   invalid.
//! - Only VTL2 has one (VTL2's own register, set by VTL2); any other VTL's write, or any write
//!   on a host without it, is INVALID_PARAMETER.

use core::mem::offset_of;

use hvdef::x86_64::{reg as x64_reg, HvX64RegisterPage, HvX64RegisterPageDirtyFlags};
use hvdef::{HvPageRegister, Vtl, HV_PAGE_SHIFT};
use zerocopy::{FromBytes, FromZeros};

use super::memory::{read_obj, write_obj};
use super::{GuestMemory, Model};

/// The segment registers in the page's order.
const SEGMENTS: [hvdef::HvRegisterName; 6] = [
    x64_reg::ES,
    x64_reg::CS,
    x64_reg::SS,
    x64_reg::DS,
    x64_reg::FS,
    x64_reg::GS,
];

/// The page's `version` (the model's choice; nothing reads it).
const VERSION: u16 = 1;

/// The page's first 8 bytes: version, is_valid, vtl, dirty.
#[derive(Clone, Copy, FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)]
#[repr(C)]
struct Header {
    version: u16,
    is_valid: u8,
    vtl: u8,
    dirty: u32,
}

impl Model {
    /// The GPA of `vtl`'s register page on `vp`, if it mapped one.
    fn register_page_gpa(&self, vp: u32, vtl: Vtl) -> Option<u64> {
        let page = HvPageRegister::from_bits(self.vp(vp).file(vtl).register_page);
        page.enable()
            .then(|| page.gpa_page_number() << HV_PAGE_SHIFT)
    }

    /// An intercept of `lower` is about to reach `vtl`: the page shows `lower`'s registers.
    pub(crate) fn fill_register_page(
        &self,
        vp: u32,
        vtl: Vtl,
        lower: Vtl,
        mem: &mut dyn GuestMemory,
    ) {
        let Some(gpa) = self.register_page_gpa(vp, vtl) else {
            return;
        };
        let file = self.vp(vp).file(lower);
        let mut page = HvX64RegisterPage::new_zeroed();
        page.version = VERSION;
        page.is_valid = 1;
        page.vtl = lower.get();
        for (n, r) in page.gp_registers.iter_mut().enumerate() {
            *r = file.reg64(hvdef::HvRegisterName(x64_reg::RAX.0 + n as u32));
        }
        page.rip = file.reg64(x64_reg::RIP);
        page.rflags = file.reg64(x64_reg::RFLAGS);
        for (n, x) in page.xmm.iter_mut().enumerate() {
            let v = file.reg(hvdef::HvRegisterName(x64_reg::XMM0.0 + n as u32));
            *x = [v as u64, (v >> 64) as u64];
        }
        for (s, name) in page.segment.iter_mut().zip(SEGMENTS) {
            *s =
                hvdef::x86_64::HvX64SegmentRegister::read_from_bytes(&file.reg(name).to_le_bytes())
                    .unwrap_or_default();
        }
        page.cr0 = file.reg64(x64_reg::CR0);
        page.cr3 = file.reg64(x64_reg::CR3);
        page.cr4 = file.reg64(x64_reg::CR4);
        page.cr8 = file.reg64(x64_reg::CR8);
        page.efer = file.reg64(x64_reg::EFER);
        // Only the part before the reserved tail: the rest stays as VTL2 left it.
        let used = offset_of!(HvX64RegisterPage, reserved_end);
        let _ = mem.write(gpa, &zerocopy::IntoBytes::as_bytes(&page)[..used]);
    }

    /// `vtl` returns to `lower`: what it marked dirty (and the model honours, see the module's
    /// choices) goes into `lower`'s registers; the page is left invalid with nothing dirty.
    pub(crate) fn take_register_page(
        &mut self,
        vp: u32,
        vtl: Vtl,
        lower: Vtl,
        mem: &mut dyn GuestMemory,
    ) {
        let Some(gpa) = self.register_page_gpa(vp, vtl) else {
            return;
        };
        let Ok(header) = read_obj::<Header>(mem, gpa) else {
            return;
        };
        if header.is_valid == 0 {
            return;
        }
        let dirty = HvX64RegisterPageDirtyFlags::from_bits(header.dirty);
        if header.vtl == lower.get() && dirty.into_bits() != 0 {
            let at = |field: usize| gpa + field as u64;
            let word = |mem: &mut dyn GuestMemory, field: usize| read_obj::<u64>(mem, at(field));
            let file_updates = {
                let mut updates = alloc::vec::Vec::new();
                if dirty.instruction_pointer() {
                    if let Ok(rip) = word(mem, offset_of!(HvX64RegisterPage, rip)) {
                        updates.push((x64_reg::RIP, u128::from(rip)));
                    }
                }
                if dirty.flags() {
                    if let Ok(rflags) = word(mem, offset_of!(HvX64RegisterPage, rflags)) {
                        updates.push((x64_reg::RFLAGS, u128::from(rflags)));
                    }
                }
                if dirty.general_purpose() {
                    let rsp =
                        offset_of!(HvX64RegisterPage, gp_registers) + 8 * HvX64RegisterPage::RSP;
                    if let Ok(value) = word(mem, rsp) {
                        updates.push((x64_reg::RSP, u128::from(value)));
                    }
                }
                if dirty.segments() {
                    for (n, name) in SEGMENTS.into_iter().enumerate() {
                        let field = offset_of!(HvX64RegisterPage, segment) + 16 * n;
                        if let Ok(value) = read_obj::<u128>(mem, at(field)) {
                            updates.push((name, value));
                        }
                    }
                }
                updates
            };
            let file = self.vp_mut(vp).file_mut(lower);
            for (name, value) in file_updates {
                file.set(name, value);
            }
        }
        let cleared = Header {
            is_valid: 0,
            dirty: 0,
            ..header
        };
        let _ = write_obj(mem, gpa, &cleared);
    }
}
