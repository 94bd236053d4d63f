//! EL2 configuration for the guest: stage 2, the hypervisor controls, the virtual IDs and
//! timers, and the syndrome registers an exit reads.

use crate::stage2;
use core::cell::UnsafeCell;
use core::ops::Range;

macro_rules! read_sysreg {
    ($name:literal) => {{
        let value: u64;
        // SAFETY: reading a system register has no side effect at EL2.
        unsafe {
            core::arch::asm!(concat!("mrs {}, ", $name), out(reg) value, options(nomem, nostack))
        };
        value
    }};
}

macro_rules! write_sysreg {
    ($name:literal, $value:expr) => {{
        let value: u64 = $value;
        // SAFETY: the EL2 registers written here only configure how the guest runs; the host's
        // own translation (SCTLR/TCR/TTBR0_EL2) is never touched after entry.
        unsafe {
            core::arch::asm!(concat!("msr ", $name, ", {}"), in(reg) value, options(nomem, nostack))
        };
    }};
}

/// HCR_EL2: VM (stage 2 on), TWI (a guest `wfi`, i.e. the paravisor halting, exits), TSC
/// (`smc` exits: nothing may reach QEMU's PSCI behind the model's back), RW (EL1 is AArch64).
/// No IMO/FMO/AMO: this slice delivers no interrupts.
const HCR_VM: u64 = 1 << 0;
const HCR_TWI: u64 = 1 << 13;
const HCR_TSC: u64 = 1 << 19;
const HCR_RW: u64 = 1 << 31;
pub const HCR: u64 = HCR_VM | HCR_TWI | HCR_TSC | HCR_RW;

/// VMID of the guest (0 is left for "no guest").
const VMID: u64 = 1;

#[repr(C, align(4096))]
struct Table([u64; stage2::ENTRIES]);

/// The stage-2 tables: written once before the guest first runs, read only by the MMU after.
struct Stage2Tables(UnsafeCell<[Table; 2]>);

// SAFETY: one CPU, and the tables are written only by `install_stage2` before the guest runs.
unsafe impl Sync for Stage2Tables {}

static STAGE2: Stage2Tables = Stage2Tables(UnsafeCell::new([
    Table([0; stage2::ENTRIES]),
    Table([0; stage2::ENTRIES]),
]));

/// Builds the identity stage 2 (devices, and `ram` only) and turns it on for VMID 1.
pub fn install_stage2(ram: &Range<u64>) -> Result<(), stage2::LayoutError> {
    let tables = STAGE2.0.get();
    // SAFETY: the guest has not run yet and nothing else refers to the tables (see Sync).
    let [l1, l2] = unsafe { &mut *tables };
    let l2_pa = l2.0.as_ptr() as u64;
    l2.0 = stage2::ram_level2(ram)?;
    l1.0 = stage2::level1(l2_pa);
    write_sysreg!(
        "vtcr_el2",
        stage2::vtcr(read_sysreg!("id_aa64mmfr0_el1") & 0xf)
    );
    write_sysreg!("vttbr_el2", l1.0.as_ptr() as u64 | (VMID << 48));
    // SAFETY: barriers and a stage-1+2 TLB flush for this VMID (VTTBR_EL2 is loaded).
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "isb",
            "tlbi vmalls12e1",
            "dsb nsh",
            "isb",
            options(nostack)
        )
    };
    Ok(())
}

/// Everything else EL1 needs from EL2 before its first instruction.
pub fn configure_guest() {
    // EL1 sees this CPU's own MIDR/MPIDR (their reset values at EL2 are UNKNOWN).
    write_sysreg!("vpidr_el2", read_sysreg!("midr_el1"));
    write_sysreg!("vmpidr_el2", read_sysreg!("mpidr_el1"));
    // EL1 may use the physical counter and timer; no virtual offset.
    write_sysreg!("cnthctl_el2", 3);
    write_sysreg!("cntvoff_el2", 0);
    // FP/SIMD not trapped; bits 8 (TZ) and 12 (TSM) set, so SVE and SME instructions trap to
    // the host, which fails the run loudly (the softfloat paravisor uses neither); no debug
    // traps.
    write_sysreg!("cptr_el2", 0x33ff);
    write_sysreg!("mdcr_el2", 0);
    write_sysreg!("hstr_el2", 0);
    write_sysreg!("hcr_el2", HCR);
    // SAFETY: synchronizes the context changes above.
    unsafe { core::arch::asm!("isb", options(nostack)) };
}

/// The syndrome of the exception being handled.
pub struct Syndrome {
    pub esr: u64,
    pub far: u64,
    pub hpfar: u64,
}

impl Syndrome {
    pub fn read() -> Self {
        Self {
            esr: read_sysreg!("esr_el2"),
            far: read_sysreg!("far_el2"),
            hpfar: read_sysreg!("hpfar_el2"),
        }
    }

    pub fn class(&self) -> u64 {
        self.esr >> 26 & 0x3f
    }

    /// The faulting IPA of a stage-2 abort (HPFAR_EL2.FIPA is IPA[47:12] at bit 4).
    pub fn fault_ipa(&self) -> u64 {
        (self.hpfar >> 4) << 12 | (self.far & 0xfff)
    }
}
