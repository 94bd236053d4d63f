//! EL2 configuration for the guest: stage 2, the hypervisor controls, the virtual IDs and
//! timers, and the syndrome registers an exit reads.
#![expect(unsafe_code, reason = "EL2 system registers and TLB maintenance")]

use crate::hv::El1Regs;
use crate::{gpt, stage2};
use core::ops::Range;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
        // SAFETY: the registers written here (EL2's guest controls, the guest's EL1 state) only
        // configure how the guest runs; the host's own translation (SCTLR/TCR/TTBR0_EL2) is
        // never touched after entry.
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

/// VMIDs: VTL2's and VTL0's translations are separate guests to the TLB (0 is left for "no
/// guest").
const VMID_VTL2: u64 = 1;
const VMID_VTL0: u64 = 2;

/// The two VTLs' stage-2 roots (0 until `install_stage2`), VTL0's first: their tables live on
/// the host's heap ([`gpt::HeapTables`]) and are written by the host only, under its lock;
/// VTL0's changed entries are flushed from every CPU's TLB before any CPU runs VTL0 again
/// (`flush_vtl0_tlb`). A starting CPU reads a root while another may be changing the tables.
static ROOTS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// VTL0's tables changed since its TLB entries were last invalidated.
static VTL0_DIRTY: AtomicBool = AtomicBool::new(false);

/// Which VTL's translation the CPU uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guest {
    Vtl0 = 0,
    Vtl2 = 1,
}

fn vttbr(guest: Guest) -> u64 {
    let vmid = match guest {
        Guest::Vtl0 => VMID_VTL0,
        Guest::Vtl2 => VMID_VTL2,
    };
    ROOTS[guest as usize].load(Ordering::Acquire) | (vmid << 48)
}

/// Builds the identity stage 2 (devices, and `ram` only, every page size as it fits) for both
/// VTLs and turns on VTL2's on this CPU (the boot CPU, before any other runs).
pub fn install_stage2(ram: &[Range<u64>]) -> Result<(), alloc::string::String> {
    let parange = read_sysreg!("id_aa64mmfr0_el1") & 0xf;
    if !stage2::ipa_fits(parange) {
        return Err(alloc::format!(
            "the CPU's physical address size (PARange {parange}) is smaller than the 39-bit IPA \
             space of the guest's stage 2"
        ));
    }
    for guest in [Guest::Vtl0, Guest::Vtl2] {
        let root = stage2::root(&mut gpt::HeapTables, ram).map_err(|e| alloc::format!("{e}"))?;
        ROOTS[guest as usize].store(root, Ordering::Release);
    }
    // SAFETY: a barrier: the tables are written before any walker uses them.
    unsafe { core::arch::asm!("dsb ish", options(nostack)) };
    cpu_stage2();
    Ok(())
}

/// This CPU translates its guest through the shared tables, VTL2's first.
pub fn cpu_stage2() {
    write_sysreg!(
        "vtcr_el2",
        stage2::vtcr(read_sysreg!("id_aa64mmfr0_el1") & 0xf)
    );
    use_stage2(Guest::Vtl2);
}

/// The CPU translates for `guest` from here on (its VTTBR_EL2).
pub fn use_stage2(guest: Guest) {
    write_sysreg!("vttbr_el2", vttbr(guest));
    // SAFETY: a barrier; the next guest instruction sees the new translation.
    unsafe { core::arch::asm!("isb", options(nostack)) };
}

/// After VTL0's tables changed: every CPU's TLB entries for VTL0's VMID go (a broadcast
/// invalidation with VTL0's VTTBR loaded for the moment), so no CPU keeps an access VTL2 has
/// just taken away.
pub fn flush_vtl0_tlb() {
    if !VTL0_DIRTY.swap(false, Ordering::Relaxed) {
        return;
    }
    let current = read_sysreg!("vttbr_el2");
    write_sysreg!("vttbr_el2", vttbr(Guest::Vtl0));
    // SAFETY: barriers (the table writes are visible to every walker first), then a stage-1+2
    // invalidation for the VMID just loaded, inner shareable: every CPU.
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "isb",
            "tlbi vmalls12e1is",
            "dsb ish",
            "isb",
            options(nostack)
        )
    };
    write_sysreg!("vttbr_el2", current);
    // SAFETY: a barrier; the guest about to run sees its own translation again.
    unsafe { core::arch::asm!("isb", options(nostack)) };
}

/// VTL0's page at `gpa` (in RAM) gets `access`, the blocks above it split into pages first
/// (their tables from the heap; none left is an error naming the GPA). The 8 MiB heap holds a
/// level-3 table for every 2 MiB block of the 256 MiB machine's RAM (120, under 0.5 MiB) many
/// times over, so no protection pattern runs it out there; on a machine of several GiB, VTL2
/// protecting pages in more 2 MiB blocks than the heap has tables for fails the run by name.
pub fn set_vtl0_access(gpa: u64, access: stage2::Access) -> Result<(), gpt::MapError> {
    let root = ROOTS[Guest::Vtl0 as usize].load(Ordering::Relaxed);
    let page = gpa & !(gpt::PAGE - 1);
    gpt::set_page(
        &stage2::Stage2,
        &mut gpt::HeapTables,
        root,
        page,
        stage2::page(page, access),
    )?;
    VTL0_DIRTY.store(true, Ordering::Relaxed);
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

    /// The faulting IPA of a stage-2 abort (HPFAR_EL2.FIPA is `IPA[47:12]` at bit 4).
    pub fn fault_ipa(&self) -> u64 {
        (self.hpfar >> 4) << 12 | (self.far & 0xfff)
    }
}

/// The EL1 registers as the CPU holds them now (the running VTL's, or the one that just exited).
pub fn save_el1() -> El1Regs {
    El1Regs {
        sctlr: read_sysreg!("sctlr_el1"),
        ttbr0: read_sysreg!("ttbr0_el1"),
        ttbr1: read_sysreg!("ttbr1_el1"),
        tcr: read_sysreg!("tcr_el1"),
        mair: read_sysreg!("mair_el1"),
        vbar: read_sysreg!("vbar_el1"),
        elr: read_sysreg!("elr_el1"),
        esr: read_sysreg!("esr_el1"),
        far: read_sysreg!("far_el1"),
        sp_el0: read_sysreg!("sp_el0"),
        sp_el1: read_sysreg!("sp_el1"),
        spsr: read_sysreg!("spsr_el1"),
        tpidr_el1: read_sysreg!("tpidr_el1"),
        tpidr_el0: read_sysreg!("tpidr_el0"),
        tpidrro_el0: read_sysreg!("tpidrro_el0"),
        contextidr: read_sysreg!("contextidr_el1"),
        cpacr: read_sysreg!("cpacr_el1"),
        amair: read_sysreg!("amair_el1"),
        par: read_sysreg!("par_el1"),
        cntkctl: read_sysreg!("cntkctl_el1"),
        afsr0: read_sysreg!("afsr0_el1"),
        afsr1: read_sysreg!("afsr1_el1"),
    }
}

/// Loads `r` into the EL1 registers for the VTL about to run. Only the ones that differ from
/// `now` are written: under TCG a write to a translation register flushes QEMU's TLB.
pub fn load_el1(r: &El1Regs, now: &El1Regs) {
    macro_rules! load {
        ($($field:ident => $name:literal),* $(,)?) => {
            $(if r.$field != now.$field {
                write_sysreg!($name, r.$field);
            })*
        };
    }
    load!(
        sctlr => "sctlr_el1",
        ttbr0 => "ttbr0_el1",
        ttbr1 => "ttbr1_el1",
        tcr => "tcr_el1",
        mair => "mair_el1",
        vbar => "vbar_el1",
        elr => "elr_el1",
        esr => "esr_el1",
        far => "far_el1",
        sp_el0 => "sp_el0",
        sp_el1 => "sp_el1",
        spsr => "spsr_el1",
        tpidr_el1 => "tpidr_el1",
        tpidr_el0 => "tpidr_el0",
        tpidrro_el0 => "tpidrro_el0",
        contextidr => "contextidr_el1",
        cpacr => "cpacr_el1",
        amair => "amair_el1",
        par => "par_el1",
        cntkctl => "cntkctl_el1",
        afsr0 => "afsr0_el1",
        afsr1 => "afsr1_el1",
    );
    // SAFETY: synchronizes the writes before the guest runs.
    unsafe { core::arch::asm!("isb", options(nostack)) };
}

/// The PMU cycle counter runs (PMCR_EL0.E, 64-bit, PMCNTENSET_EL0.C) counting EL1 and EL0 only
/// (PMCCFILTR_EL0 = 0: NSH clear, so never at EL2): under `-icount shift=0` QEMU advances it by
/// one per instruction the guest retires.
pub fn start_cycle_counter() {
    write_sysreg!("pmccfiltr_el0", 0);
    write_sysreg!("pmcr_el0", (1 << 6) | (1 << 2) | 1);
    write_sysreg!("pmcntenset_el0", 1 << 31);
    // SAFETY: synchronizes the PMU writes.
    unsafe { core::arch::asm!("isb", options(nostack)) };
}

/// PMCCNTR_EL0.
pub fn cycles() -> u64 {
    read_sysreg!("pmccntr_el0")
}
