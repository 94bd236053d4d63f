//! x86_64 hypercall ABI: calls through the hypercall page Hyper-V overlays on
//! `pv_hypercall_page` once HV_X64_MSR_HYPERCALL is enabled (TLFS hypercall-interface.md).
#![expect(unsafe_code, reason = "the hypercall-page trampoline")]

use super::msr::{rdmsr, wrmsr};
use crate::hypercall::{HypercallAbi, Page};
use hvdef::x86_64::{HvX64HypercallMsr, HvX64Msr};

core::arch::global_asm!(include_str!("hypercall.S"), options(att_syntax));

/// The most fast-input words this ABI's call carries: RDX and R8 (the firmware is
/// soft-float, so no XMM).
pub const FAST_WORDS: usize = hvdef::x86_64::FAST_GPR_WORDS;

unsafe extern "C" {
    fn pv_hypercall(control: u64, input: u64, output: u64) -> u64;
    static pv_hypercall_page: [u8; 4096];
}

/// The hypercall page's address (identity-mapped: its GPA), where the VTL-return code is too.
pub(super) fn hypercall_page() -> u64 {
    core::ptr::addr_of!(pv_hypercall_page) as u64
}

/// Enables the hypercall page through HV_X64_MSR_HYPERCALL and checks the hypervisor took it.
/// The TLFS wants the guest OS id set first (`crate::synthetic::enable_hypercalls`).
pub fn enable_hypercall_page() -> Result<(), &'static str> {
    let page = hypercall_page();
    let value = HvX64HypercallMsr::new()
        .with_enable(true)
        .with_gpn(page >> 12);
    wrmsr(HvX64Msr::HV_X64_MSR_HYPERCALL, value.into_bits());
    let read = HvX64HypercallMsr::from_bits(rdmsr(HvX64Msr::HV_X64_MSR_HYPERCALL));
    if !read.enable() || read.gpn() != page >> 12 {
        return Err("the hypervisor did not enable the hypercall page (HV_X64_MSR_HYPERCALL)");
    }
    Ok(())
}

/// The hypercall ABI through the hypercall page; input and output are identity-mapped pages.
pub struct Abi;

impl HypercallAbi for Abi {
    /// RDX and R8 carry 16 bytes: a one-register SetVpRegisters (48) goes memory-based.
    const FAST6: bool = false;

    fn call(&mut self, control: u64, input: &Page, output: &mut Page) -> u64 {
        // SAFETY: both pages are this CPU's, page-aligned and identity-mapped (GPA = address);
        // the hypervisor reads `input` and writes `output`, which we hold exclusively.
        unsafe { pv_hypercall(control, input.gpa(), output.gpa()) }
    }

    fn call_fast(&mut self, control: u64, regs: &mut [u64]) -> Option<u64> {
        // Without XMM fast input, x64 carries 16 bytes in RDX and R8.
        let (a, b) = match *regs {
            [] => (0, 0),
            [a] => (a, 0),
            [a, b] => (a, b),
            _ => return None,
        };
        // SAFETY: a register-only call; no memory is named.
        Some(unsafe { pv_hypercall(control, a, b) })
    }
}
