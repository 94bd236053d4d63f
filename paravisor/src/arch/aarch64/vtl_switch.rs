//! aarch64 VTL switch: VTL0's general-purpose registers, and the return to VTL0 with `hvc #3`
//! (TLFS vsm.md), which Hyper-V traps at EL2.
#![expect(unsafe_code, reason = "the `hvc #3` VTL switch")]

use core::mem::offset_of;
use hvdef::{HvRegisterVsmCodePageOffsets, HvVpAssistPage};

/// The offset of VTL0's X`n` in [`Vtl0Registers`].
const fn x(n: usize) -> usize {
    offset_of!(Vtl0Registers, x) + 8 * n
}

core::arch::global_asm!(
    include_str!("vtl_switch.S"),
    regs_x0 = const x(0),
    regs_x1 = const x(1),
    regs_x2 = const x(2),
    regs_x4 = const x(4),
    regs_x6 = const x(6),
    regs_x8 = const x(8),
    regs_x10 = const x(10),
    regs_x12 = const x(12),
    regs_x14 = const x(14),
    regs_x16 = const x(16),
    regs_x19 = const x(19),
    regs_x21 = const x(21),
    regs_x23 = const x(23),
    regs_x25 = const x(25),
    regs_x27 = const x(27),
    regs_x29 = const x(29),
);

unsafe extern "C" {
    fn pv_vtl_return(regs: *mut Vtl0Registers);
}

/// VTL return is `hvc #3`: nothing to look up in a hypercall page.
pub const VTL_RETURN_IN_HYPERCALL_PAGE: bool = false;

/// VTL0's general-purpose registers by number: what VTL0 gets on the next return, and on entry
/// what it had. X0-X17 and X19-X28 are shared between the VTLs (TLFS vsm.md "Shared State"), so
/// VTL0 resumes with whatever they hold at the `hvc #3`. X29/X30 are private per the TLFS, but
/// Linux and OpenHCL (`hv_vtl_return`) load and save them as VTL0 context around `hvc #3`; so
/// does the paravisor, which is right under either reading. `x[18]` is unused: X18 is private
/// and neither loaded nor stored.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Vtl0Registers {
    pub x: [u64; 31],
}

impl Vtl0Registers {
    /// The registers this struct carries (X0-X17, X19-X30; X18 is private and not carried):
    /// what the paravisor reads of VTL0 before its first return, so that VTL0 resumes with its
    /// own values.
    pub const NAMES: [hvdef::HvRegisterName; 30] = {
        let mut names = [hvdef::HvRegisterName(0); 30];
        let mut i = 0;
        while i < 30 {
            let n = if i < 18 { i } else { i + 1 };
            names[i] = hvdef::HvRegisterName(hvdef::aarch64::reg::X0.0 + n as u32);
            i += 1;
        }
        names
    };

    /// From the values of [`Vtl0Registers::NAMES`], in that order.
    pub fn from_values(values: &[hvdef::HvRegisterValue; 30]) -> Vtl0Registers {
        let mut regs = Vtl0Registers::default();
        for (i, value) in values.iter().enumerate() {
            regs.x[if i < 18 { i } else { i + 1 }] = value.as_u64();
        }
        regs
    }
}

/// One VP's way back to VTL0. `hvc #3` needs nothing of the VP: the assist page and the code
/// page offsets (x64's) are not used.
pub struct VtlSwitch;

impl VtlSwitch {
    /// The switch for this VP.
    ///
    /// # Safety
    /// None needed on arm64; the contract is x64's (`assist` is this VP's assist page and the
    /// switch stays on this VP).
    pub unsafe fn new(
        _assist: *mut HvVpAssistPage,
        _offsets: HvRegisterVsmCodePageOffsets,
    ) -> Self {
        VtlSwitch
    }

    /// Returns to VTL0 and comes back when VTL2 is entered again (intercept, interrupt, VTL
    /// call), with VTL0's registers in `regs`.
    #[inline(always)]
    pub fn vtl_return(&self, regs: &mut Vtl0Registers) {
        // SAFETY: `hvc #3` switches to VTL0 and comes back here with our stack intact (SP is
        // private to VTL2); the asm restores VTL2's callee-saved X19..X30 from that stack and
        // touches no memory but the stack and `regs`, at the offsets the compiler gave it. The
        // rest are caller-saved in AAPCS64 (X18 is not reserved on this target), so the call
        // may change them.
        unsafe { pv_vtl_return(regs) };
    }
}
