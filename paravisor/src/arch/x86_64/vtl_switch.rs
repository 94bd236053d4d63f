//! x86_64 VTL switch: VTL0's shared registers, and the return to VTL0 through the hypercall
//! page's VTL-return code (TLFS vsm.md), at the offset HvRegisterVsmCodePageOffsets gives.
#![expect(unsafe_code, reason = "the hypercall page's VTL-return code")]

use core::mem::offset_of;
use hvdef::{HvRegisterVsmCodePageOffsets, HvVpAssistPage};

core::arch::global_asm!(
    include_str!("vtl_switch.S"),
    regs_rax = const offset_of!(Vtl0Registers, rax),
    regs_rcx = const offset_of!(Vtl0Registers, rcx),
    regs_rdx = const offset_of!(Vtl0Registers, rdx),
    regs_rbx = const offset_of!(Vtl0Registers, rbx),
    regs_rbp = const offset_of!(Vtl0Registers, rbp),
    regs_rsi = const offset_of!(Vtl0Registers, rsi),
    regs_rdi = const offset_of!(Vtl0Registers, rdi),
    regs_r8 = const offset_of!(Vtl0Registers, r8_r15),
    regs_r9 = const offset_of!(Vtl0Registers, r8_r15) + 8,
    regs_r10 = const offset_of!(Vtl0Registers, r8_r15) + 16,
    regs_r11 = const offset_of!(Vtl0Registers, r8_r15) + 24,
    regs_r12 = const offset_of!(Vtl0Registers, r8_r15) + 32,
    regs_r13 = const offset_of!(Vtl0Registers, r8_r15) + 40,
    regs_r14 = const offset_of!(Vtl0Registers, r8_r15) + 48,
    regs_r15 = const offset_of!(Vtl0Registers, r8_r15) + 56,
    options(att_syntax)
);

unsafe extern "C" {
    fn pv_vtl_return(stub: u64, regs: *mut Vtl0Registers);
}

/// The switch finds its code in the hypercall page, at the offset HvRegisterVsmCodePageOffsets
/// gives: read it before the first return.
pub const VTL_RETURN_IN_HYPERCALL_PAGE: bool = true;

/// VTL0's shared general-purpose registers (all but RSP).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Vtl0Registers {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8_r15: [u64; 8],
}

impl Vtl0Registers {
    /// The registers this struct carries, in field order: what the paravisor reads of VTL0
    /// before its first return, so that VTL0 resumes with its own values.
    pub const NAMES: [hvdef::HvRegisterName; 15] = {
        use hvdef::x86_64::reg::*;
        [
            RAX, RCX, RDX, RBX, RBP, RSI, RDI, R8, R9, R10, R11, R12, R13, R14, R15,
        ]
    };

    /// From the values of [`Vtl0Registers::NAMES`], in that order.
    pub fn from_values(values: &[hvdef::HvRegisterValue; 15]) -> Vtl0Registers {
        let v: [u64; 15] = core::array::from_fn(|i| values[i].as_u64());
        Vtl0Registers {
            rax: v[0],
            rcx: v[1],
            rdx: v[2],
            rbx: v[3],
            rbp: v[4],
            rsi: v[5],
            rdi: v[6],
            r8_r15: core::array::from_fn(|i| v[7 + i]),
        }
    }
}

/// One VP's way back to VTL0: the VTL-return code's address and the VP's assist page, whose
/// `vtl_control` carries VTL0's RAX/RCX across a non-fast return.
pub struct VtlSwitch {
    stub: u64,
    assist: *mut HvVpAssistPage,
}

impl VtlSwitch {
    /// The switch for this VP, from the hypervisor's `offsets`.
    ///
    /// # Safety
    /// `assist` is this VP's VP assist page, enabled, identity-mapped and never freed, and the
    /// switch is only used on this VP (a raw pointer keeps it from leaving the VP's thread).
    pub unsafe fn new(assist: *mut HvVpAssistPage, offsets: HvRegisterVsmCodePageOffsets) -> Self {
        VtlSwitch {
            stub: super::hypercall::hypercall_page() + u64::from(offsets.vtl_return_offset()),
            assist,
        }
    }

    /// Returns to VTL0 with `regs` in its shared registers and comes back when VTL2 is entered
    /// again (intercept, interrupt, VTL call), with VTL0's registers in `regs`.
    #[inline(always)]
    pub fn vtl_return(&self, regs: &mut Vtl0Registers) {
        let page = self.assist;
        // SAFETY: `page` is this VP's assist page (`new`); volatile stores of whole fields the
        // hypervisor reads at the VtlReturn, never through a reference.
        unsafe {
            core::ptr::write_volatile(&raw mut (*page).vtl_control.return_rax, regs.rax);
            core::ptr::write_volatile(&raw mut (*page).vtl_control.return_rcx, regs.rcx);
        }
        // SAFETY: the hypercall page's VTL-return code switches to VTL0 and comes back here
        // with our stack intact (RSP is private to VTL2); the asm keeps the callee-saved
        // registers and only touches `regs`, at the offsets the compiler gave it.
        unsafe { pv_vtl_return(self.stub, regs) };
    }
}
