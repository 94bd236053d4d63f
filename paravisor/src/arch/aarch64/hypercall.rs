//! aarch64 hypercall ABI over SMCCC `hvc #0`, which Hyper-V traps at EL2: x0 = function id,
//! x1 = control, x2/x3 = input/output GPAs, or x2..x17 as the fast input block.
#![expect(unsafe_code, reason = "the `hvc` trampolines")]

use crate::hypercall::{HypercallAbi, Page};
use hvdef::aarch64::SMCCC_HV_FUNC_ID;

core::arch::global_asm!(include_str!("hypercall.S"));

/// The most fast-input words this ABI's call carries: SMCCC's X2..X17.
pub const FAST_WORDS: usize = hvdef::aarch64::SMCCC_FAST_WORDS;

unsafe extern "C" {
    fn pv_hvc_smccc(regs: *mut [u64; 18]);
    /// SMCCC `hvc #0` with X0 = `function`, X1 = `control`, X2..X7 = `words`; returns X0. The
    /// hypervisor may change X0-X17 (SMCCC), all caller-saved in AAPCS64.
    fn pv_hvc_fast6(function: u64, control: u64, words: *const [u64; 6]) -> u64;
}

/// An SMCCC call through the `hvc #0` site with x0..x17 = `regs`, returning x0..x17.
pub(super) fn smccc(mut regs: [u64; 18]) -> [u64; 18] {
    smccc_in_place(&mut regs);
    regs
}

/// [`smccc`] on the caller's array, without copying it in and out.
fn smccc_in_place(regs: &mut [u64; 18]) {
    // SAFETY: the site only loads and stores the 18 words of `regs` around the hvc.
    unsafe { pv_hvc_smccc(regs) };
}

/// arm64 has no hypercall page: once the guest OS id is set (`crate::synthetic`), hypercalls
/// work.
pub fn enable_hypercall_page() -> Result<(), &'static str> {
    Ok(())
}

/// The hypercall ABI over SMCCC.
pub struct Abi;

impl HypercallAbi for Abi {
    fn call(&mut self, control: u64, input: &Page, output: &mut Page) -> u64 {
        let mut regs = [0; 18];
        regs[..4].copy_from_slice(&[SMCCC_HV_FUNC_ID as u64, control, input.gpa(), output.gpa()]);
        smccc(regs)[0]
    }

    fn call_fast6(&mut self, control: u64, words: &[u64; 6]) -> Option<u64> {
        // SAFETY: the stub reads the 6 words and issues the hvc; it touches no other memory.
        Some(unsafe { pv_hvc_fast6(SMCCC_HV_FUNC_ID.into(), control, words) })
    }

    fn call_fast(&mut self, control: u64, block: &mut [u64]) -> Option<u64> {
        if block.len() > FAST_WORDS {
            return None;
        }
        // X0..X17 built word by word (a fixed count the compiler unrolls), never zeroed then
        // copied; the block's registers are copied back for a call with fast output.
        let mut regs: [u64; 18] = core::array::from_fn(|i| match i {
            0 => SMCCC_HV_FUNC_ID as u64,
            1 => control,
            i => block.get(i - 2).copied().unwrap_or(0),
        });
        smccc_in_place(&mut regs);
        for (word, reg) in block.iter_mut().zip(&regs[2..]) {
            *word = *reg;
        }
        Some(regs[0])
    }
}
