//! x86_64 VTL register page (NON-TLFS; the facts are in the TLFS model,
//! `tests/hvmodel/src/regpage.rs`): while VTL2 handles an intercept of VTL0 it holds VTL0's
//! registers, and a RIP written there with its dirty bit is loaded into VTL0 by the VtlReturn,
//! so the IP advance of a completed call costs no hypercall. The frame is part of the VP's
//! per-VP state (`percpu`); mapping it is a SetVpRegisters (`crate::synthetic`).
#![expect(unsafe_code, reason = "volatile accesses of the VTL register page")]

use hvdef::x86_64::HvX64RegisterPage;

/// x64 hosts may offer the register page.
pub const HAS_REGISTER_PAGE: bool = true;

/// This VP's VTL register page, mapped.
pub struct RegisterPage(*mut HvX64RegisterPage);

impl RegisterPage {
    /// The register and value that map the page frame at `gpa` as the calling VP's register
    /// page (SetVpRegisters on itself, as Linux's `mshv_vtl_configure_reg_page` and OpenHCL's
    /// sidecar do).
    pub fn mapping(gpa: u64) -> (hvdef::HvRegisterName, hvdef::HvRegisterValue) {
        let value = hvdef::HvPageRegister::new()
            .with_enable(true)
            .with_gpa_page_number(gpa >> 12);
        (hvdef::x86_64::reg::REGISTER_PAGE, value.into_bits().into())
    }

    /// The page at `frame`, once the hypervisor took its [`RegisterPage::mapping`].
    ///
    /// # Safety
    /// `frame` is this VP's register page frame, identity-mapped (address = GPA) and never
    /// freed, mapped by this VP, and the page is only used on this VP.
    pub unsafe fn mapped(frame: *mut HvX64RegisterPage) -> RegisterPage {
        RegisterPage(frame)
    }

    /// The page's GPA, for the log.
    pub fn gpa(&self) -> u64 {
        self.0 as u64
    }

    /// Writes VTL0's RIP through the page, if it holds VTL0's state now (`is_valid`, `vtl` 0:
    /// VTL2 is handling an intercept of VTL0). False otherwise: the caller falls back to
    /// SetVpRegisters.
    pub fn set_vtl0_rip(&self, rip: u64) -> bool {
        let page = self.0;
        // SAFETY: this VP's own page (`mapped`), in VTL2, so the hypervisor is not using it;
        // volatile accesses of single fields.
        unsafe {
            let valid = core::ptr::read_volatile(&raw const (*page).is_valid);
            let vtl = core::ptr::read_volatile(&raw const (*page).vtl);
            if valid == 0 || vtl != 0 {
                return false;
            }
            core::ptr::write_volatile(&raw mut (*page).rip, rip);
            let dirty = core::ptr::read_volatile(&raw const (*page).dirty);
            core::ptr::write_volatile(&raw mut (*page).dirty, dirty.with_instruction_pointer(true));
        }
        true
    }
}
