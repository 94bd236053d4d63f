//! aarch64 has no VTL register page (Linux's `mshv_vtl` maps one on x86_64 only; see the TLFS
//! model's fact sheet, `tests/hvmodel/src/regpage.rs`): VTL0's PC moves by SetVpRegisters.
#![forbid(unsafe_code)]

/// No register page on arm64: `crate::synthetic::map_register_page` is never asked.
pub const HAS_REGISTER_PAGE: bool = false;

/// Never constructed on arm64; the run loop's `Option<RegisterPage>` is always `None`.
pub struct RegisterPage(core::convert::Infallible);

impl RegisterPage {
    pub fn gpa(&self) -> u64 {
        match self.0 {}
    }

    pub fn set_vtl0_rip(&self, _pc: u64) -> bool {
        match self.0 {}
    }
}
