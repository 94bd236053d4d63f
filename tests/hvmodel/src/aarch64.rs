//! The arm64 face of the model: `hvc` by immediate — SMCCC (vendor UID and the Hyper-V
//! function), the legacy Hyper-V ABI, VTL call and VTL return.

use hvdef::aarch64::{
    HVC_IMM_HYPERCALL, HVC_IMM_SMCCC, HVC_IMM_VTL_CALL, HVC_IMM_VTL_RETURN, HV_VENDOR_HYP_UID,
    SMCCC_HV_FUNC_ID, SMCCC_VENDOR_HYP_UID,
};

use super::hypercall::{FastBlock, Request};
use super::trace::{Abi, Event};
use super::vtl::SwitchRegs;
use super::{Arch, Effects, Fault, GuestMemory, Model};

/// SMCCC NOT_SUPPORTED (-1) for function ids the model does not implement.
const SMCCC_NOT_SUPPORTED: u64 = u64::MAX;

/// Fast input and output registers per ABI: 16 words, 8 pairs: SMCCC's X2..X17, and for
/// `hvc #1` X1..X16, as OpenVMM's `fast_register_pair_count` (the TLFS text says X1..X17 but
/// "sixteen registers"; the paravisor accepts the 17th, hvdef `HVC1_FAST_WORDS`).
const FAST_WORDS: usize = hvdef::aarch64::SMCCC_FAST_WORDS;

/// The general-purpose registers an `hvc` sees, X0..X30 by number. An ordinary hypercall reads
/// and writes X0..X17 only; a VTL switch moves the shared ones (see [`arm64_shared`]).
pub const ARM64_GPRS: usize = 31;

/// Whether Xn is shared between the VTLs: X0-X17 and X19-X28 (TLFS vsm.md "Shared State"). X18,
/// X29 (FP) and X30 (LR) are private (vsm.md "Private State"): the hypervisor keeps one per VTL,
/// unless the scenario takes the other reading of X29/X30
/// ([`Scenario::arm64_fp_lr_shared`](super::Scenario::arm64_fp_lr_shared)).
pub fn arm64_shared(n: usize, fp_lr_shared: bool) -> bool {
    match n {
        0..=17 | 19..=28 => true,
        29 | 30 => fp_lr_shared,
        _ => false,
    }
}

impl Model {
    /// An `hvc #imm` with X0..X30 in `regs`; writes the results back into them. Hypercalls and
    /// SMCCC use X0..X17 only. VTL call and return carry no control word on arm64, so they
    /// cannot be invalid; a return moves the shared registers between the VTLs.
    pub fn hvc(
        &mut self,
        vp: u32,
        imm: u16,
        all: &mut [u64; ARM64_GPRS],
        mem: &mut dyn GuestMemory,
    ) -> Effects {
        if self.scenario.arch != Arch::Aarch64 || !self.valid_vp(vp) {
            return Effects::fault(Fault::Ud);
        }
        let regs: &mut [u64; 18] = (&mut all[..18]).try_into().expect("X0..X17");
        match imm {
            HVC_IMM_SMCCC if regs[0] as u32 == SMCCC_HV_FUNC_ID => {
                self.arm64_hypercall(vp, Abi::Smccc, 1, regs, mem)
            }
            HVC_IMM_SMCCC => self.smccc(vp, regs),
            HVC_IMM_HYPERCALL => self.arm64_hypercall(vp, Abi::Hvc(imm), 0, regs, mem),
            HVC_IMM_VTL_CALL => self.vtl_call(vp, Abi::Hvc(imm), 0, true),
            HVC_IMM_VTL_RETURN => {
                let regs = SwitchRegs::Aarch64(all);
                self.vtl_return(vp, Abi::Hvc(imm), 0, true, false, regs, mem)
            }
            _ => Effects::fault(Fault::Ud),
        }
    }

    /// SMCCC calls other than the hypercall: the vendor-hypervisor UID, else NOT_SUPPORTED. The
    /// function id is W0 (SMCCC), so only X0's low half counts.
    fn smccc(&mut self, vp: u32, regs: &mut [u64; 18]) -> Effects {
        let function = regs[0];
        if function as u32 == SMCCC_VENDOR_HYP_UID {
            for (reg, word) in regs.iter_mut().zip(HV_VENDOR_HYP_UID) {
                *reg = word.into();
            }
        } else {
            regs[0] = SMCCC_NOT_SUPPORTED;
        }
        self.trace.push(Event::Smccc {
            vp,
            function,
            result: [regs[0], regs[1], regs[2], regs[3]],
        });
        Effects::advance()
    }

    /// The control word is in X`control` (X1 for SMCCC, X0 for `hvc #1`), the GPAs and the fast
    /// block follow it. The result goes to X0; on TIMEOUT the control register gets the updated
    /// rep start (for `hvc #1` that is X0 itself) and, under SMCCC, X0 keeps the function id.
    fn arm64_hypercall(
        &mut self,
        vp: u32,
        abi: Abi,
        control: usize,
        regs: &mut [u64; 18],
        mem: &mut dyn GuestMemory,
    ) -> Effects {
        let first = control + 1;
        let mut req = Request {
            abi,
            control: regs[control],
            input_gpa: regs[first],
            output_gpa: regs[first + 1],
            fast: FastBlock {
                words: regs[first..first + FAST_WORDS].to_vec(),
                xmm_ud: false,
            },
        };
        match self.hypercall(vp, &mut req, mem) {
            Err(fault) => Effects::fault(fault),
            Ok(reply) => {
                regs[first..first + FAST_WORDS].copy_from_slice(&req.fast.words);
                // A call left to be re-executed (TIMEOUT) must still be a hypercall when it runs
                // again: under SMCCC X0 keeps the function id, only X1 moves on.
                if reply.retry.is_none() || control == 0 {
                    regs[0] = reply.output.into_bits();
                }
                if let Some(retry) = reply.retry {
                    regs[control] = retry;
                }
                reply.effects
            }
        }
    }
}
