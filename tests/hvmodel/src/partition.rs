//! The partition's state: per-VTL partition registers, the VPs, and each VP's per-VTL register
//! file and SynIC.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec;
use alloc::vec::Vec;

use hvdef::aarch64::reg as arm_reg;
use hvdef::x86_64::{reg as x64_reg, HvX64SegmentRegister};
use hvdef::{
    HvInputInstallIntercept, HvMessage, HvRegisterName, HvSynicSint, Vtl, HV_SYNIC_SINT_COUNT,
};
use zerocopy::IntoBytes;

use crate::Arch;

/// Every architecturally possible VTL gets a slot, so a VTL number from a guest indexes safely.
pub(crate) const VTL_COUNT: usize = 16;

/// Partition-wide state that each VTL has its own copy of (its own guest OS id, hypercall page,
/// and VSM configuration).
#[derive(Clone, Debug, Default)]
pub(crate) struct PartitionVtl {
    pub guest_os_id: u64,
    /// `HvX64HypercallMsr` bits.
    pub hypercall: u64,
    /// `HvRegisterVsmPartitionConfig` bits (VTL > 0 only).
    pub vsm_config: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct Partition {
    pub vtls: Vec<PartitionVtl>,
    /// GuestCrashP0..P4, GuestCrashCtl.
    pub crash: [u64; 6],
    pub reference_tsc: u64,
    /// TimeRefCount, in 100 ns units; advances on every read so time visibly passes.
    pub time_ref: u64,
    pub intercepts: Vec<HvInputInstallIntercept>,
    /// Page number -> the access VTL2 leaves the lower VTLs (HvCallModifyVtlProtectionMask);
    /// pages not listed are fully accessible.
    pub protections: BTreeMap<u64, hvdef::HvMapGpaFlags>,
    /// Pages whose protection changed since the glue last asked
    /// ([`crate::Model::take_protection_changes`]).
    pub protection_changes: alloc::collections::BTreeSet<u64>,
}

/// One SynIC: registers plus the per-SINT queues of messages waiting for an empty slot.
#[derive(Clone, Debug)]
pub(crate) struct Synic {
    pub scontrol: u64,
    pub siefp: u64,
    pub simp: u64,
    pub sint: [u64; HV_SYNIC_SINT_COUNT],
    pub queues: [VecDeque<HvMessage>; HV_SYNIC_SINT_COUNT],
}

impl Default for Synic {
    fn default() -> Self {
        Self {
            scontrol: 0,
            siefp: 0,
            simp: 0,
            // TLFS: SINTs reset to masked.
            sint: [HvSynicSint::new().with_masked(true).into_bits(); HV_SYNIC_SINT_COUNT],
            queues: Default::default(),
        }
    }
}

/// Register names 0x0002_0000.. (x64 RAX..R15, RIP, RFLAGS; arm64 X0..X30, SP, PC, CPSR):
/// the ones every VTL switch moves, kept in an array rather than the map.
const GPR_BASE: u32 = 0x0002_0000;
const GPR_SLOTS: usize = 64;

/// An architectural register file: zero until written. The general-purpose block lives in an
/// array (a live lower VTL moves it on every exit), the rest in a map.
#[derive(Clone, Debug)]
pub(crate) struct RegisterFile {
    gprs: [u128; GPR_SLOTS],
    /// Bit n: `gprs[n]` was written (so [`RegisterFile::to_map`] lists exactly what was).
    written: u64,
    others: BTreeMap<HvRegisterName, u128>,
}

impl Default for RegisterFile {
    fn default() -> Self {
        Self {
            gprs: [0; GPR_SLOTS],
            written: 0,
            others: BTreeMap::new(),
        }
    }
}

impl RegisterFile {
    fn slot(name: HvRegisterName) -> Option<usize> {
        let n = name.0.wrapping_sub(GPR_BASE) as usize;
        (n < GPR_SLOTS).then_some(n)
    }

    pub fn get(&self, name: HvRegisterName) -> u128 {
        match Self::slot(name) {
            Some(n) => self.gprs[n],
            None => self.others.get(&name).copied().unwrap_or(0),
        }
    }

    pub fn set(&mut self, name: HvRegisterName, value: u128) {
        match Self::slot(name) {
            Some(n) => {
                self.gprs[n] = value;
                self.written |= 1 << n;
            }
            None => {
                self.others.insert(name, value);
            }
        }
    }

    /// Every register written so far, by name.
    pub fn to_map(&self) -> BTreeMap<HvRegisterName, u128> {
        let mut map = self.others.clone();
        for n in 0..GPR_SLOTS {
            if self.written & (1 << n) != 0 {
                map.insert(HvRegisterName(GPR_BASE + n as u32), self.gprs[n]);
            }
        }
        map
    }
}

/// One VTL's private state on one VP.
#[derive(Clone, Debug, Default)]
pub(crate) struct VtlFile {
    /// Architectural registers (RAX.., X0.., RIP/PC, CRs, segments), zero until written.
    pub regs: RegisterFile,
    pub assist_page: u64,
    /// x64 VTL2: `HvX64RegisterName::RegisterPage` (see `crate::regpage`).
    pub register_page: u64,
    pub vina: u64,
    /// `HvRegisterVsmVpSecureConfigVtl<n>`, this VTL's view of lower VTL n.
    pub secure_config: [u64; VTL_COUNT],
    pub synic: Synic,
    /// Interrupt vectors raised for this VTL and not yet taken (a SINT's interrupt on message
    /// delivery). The mock cannot deliver an interrupt into the guest, so nothing takes them:
    /// a VTL that relies on one being taken never sees it, as on Hyper-V with interrupts off.
    pub pending_interrupts: BTreeSet<u8>,
}

impl VtlFile {
    pub fn reg(&self, name: HvRegisterName) -> u128 {
        self.regs.get(name)
    }

    pub fn reg64(&self, name: HvRegisterName) -> u64 {
        self.reg(name) as u64
    }

    pub fn set(&mut self, name: HvRegisterName, value: u128) {
        self.regs.set(name, value);
    }

    /// A 64-bit long-mode kernel (x64) or an EL1h kernel (arm64): the state a scripted lower
    /// VTL issues its hypercalls from.
    fn lower_vtl_defaults(arch: Arch) -> Self {
        let mut file = Self::default();
        match arch {
            Arch::X86_64 => {
                for (name, value) in x64_mode_registers(true) {
                    file.set(name, value);
                }
                file.set(x64_reg::RFLAGS, 0x2);
                // PE | ET | NE | PG.
                file.set(x64_reg::CR0, 0x8000_0031);
            }
            Arch::Aarch64 => file.set(arm_reg::CPSR, ARM64_CPSR_EL1H.into()),
        }
        file
    }
}

/// CPSR of a kernel: EL1h (M = 0b0101) with DAIF masked.
pub(crate) const ARM64_CPSR_EL1H: u64 = 0x3C5;
/// CPSR of user code: EL0t (M = 0) with DAIF masked.
pub(crate) const ARM64_CPSR_EL0T: u64 = 0x3C0;

/// The x64 registers that say which mode ring-0 code runs in: CS (selector 0x8, flat, DPL 0)
/// and EFER. Long mode: a 64-bit code segment (L = 1) and EFER.LME | LMA. Otherwise 32-bit
/// protected mode: a 32-bit code segment (D = 1) and EFER clear.
pub(crate) fn x64_mode_registers(long_mode: bool) -> [(HvRegisterName, u128); 2] {
    // Present, DPL 0, execute/read code, G = 1; then L (bit 13) or D (bit 14).
    let attributes = if long_mode { 0xA09B } else { 0xC09B };
    let cs = HvX64SegmentRegister {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector: 0x8,
        attributes,
    };
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(cs.as_bytes());
    let efer = if long_mode { 0x500 } else { 0 };
    [
        (x64_reg::CS, u128::from_le_bytes(bytes)),
        (x64_reg::EFER, efer),
    ]
}

#[derive(Clone, Debug)]
pub(crate) struct Vp {
    pub active_vtl: Vtl,
    pub enabled_vtls: u16,
    pub started: bool,
    /// The VTLs that have run on this VP, bit per VTL (the boot VP's enabled VTLs from the
    /// start): HvCallStartVirtualProcessor starts each at most once.
    pub started_vtls: u16,
    pub vtls: Vec<VtlFile>,
    /// The L0 hypervisor's SynIC registers, reached through `HV_X64_MSR_NESTED_*` when nested.
    pub nested_synic: Synic,
}

impl Vp {
    pub fn new(arch: Arch, active_vtl: Vtl, enabled_vtls: u16, started: bool) -> Self {
        let mut vtls = vec![VtlFile::default(); VTL_COUNT];
        for (n, file) in vtls.iter_mut().enumerate() {
            if n < active_vtl.get() as usize {
                *file = VtlFile::lower_vtl_defaults(arch);
            }
        }
        Self {
            active_vtl,
            enabled_vtls,
            started,
            started_vtls: if started { enabled_vtls } else { 0 },
            vtls,
            nested_synic: Synic::default(),
        }
    }

    pub fn vtl_enabled(&self, vtl: Vtl) -> bool {
        self.enabled_vtls & (1 << vtl.get()) != 0
    }

    pub fn file(&self, vtl: Vtl) -> &VtlFile {
        &self.vtls[vtl.get() as usize]
    }

    pub fn file_mut(&mut self, vtl: Vtl) -> &mut VtlFile {
        &mut self.vtls[vtl.get() as usize]
    }

    /// The highest enabled VTL below `vtl`: where a VtlReturn goes.
    pub fn lower_vtl(&self, vtl: Vtl) -> Option<Vtl> {
        (0..vtl.get())
            .rev()
            .filter_map(Vtl::new)
            .find(|&v| self.vtl_enabled(v))
    }

    /// The lowest enabled VTL above `vtl`: where a VtlCall goes.
    pub fn higher_vtl(&self, vtl: Vtl) -> Option<Vtl> {
        (vtl.get() + 1..=Vtl::MAX.get())
            .filter_map(Vtl::new)
            .find(|&v| self.vtl_enabled(v))
    }
}
