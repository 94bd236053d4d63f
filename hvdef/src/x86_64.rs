//! x64-specific definitions: synthetic MSRs, the hypercall page, Hyper-V CPUID leaves, x64 register
//! names, the initial VP context and the x64 hypercall intercept message.

use crate::{
    HvHypercallInterceptFlags, HvInterceptAccessType, SyntheticRegister, HV_SYNIC_SINT_COUNT,
};
use bitfield_struct::bitfield;
use core::mem::offset_of;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

open_enum! {
    /// A Hyper-V synthetic MSR; the constants keep the TLFS `HV_X64_MSR_` names.
    pub struct HvX64Msr(u32) {
        HV_X64_MSR_GUEST_OS_ID = 0x4000_0000,
        HV_X64_MSR_HYPERCALL = 0x4000_0001,
        HV_X64_MSR_VP_INDEX = 0x4000_0002,
        HV_X64_MSR_RESET = 0x4000_0003,
        HV_X64_MSR_VP_RUNTIME = 0x4000_0010,
        HV_X64_MSR_TIME_REF_COUNT = 0x4000_0020,
        HV_X64_MSR_REFERENCE_TSC = 0x4000_0021,
        HV_X64_MSR_TSC_FREQUENCY = 0x4000_0022,
        HV_X64_MSR_APIC_FREQUENCY = 0x4000_0023,
        HV_X64_MSR_EOI = 0x4000_0070,
        HV_X64_MSR_ICR = 0x4000_0071,
        HV_X64_MSR_TPR = 0x4000_0072,
        HV_X64_MSR_VP_ASSIST_PAGE = 0x4000_0073,
        HV_X64_MSR_SCONTROL = 0x4000_0080,
        HV_X64_MSR_SVERSION = 0x4000_0081,
        HV_X64_MSR_SIEFP = 0x4000_0082,
        HV_X64_MSR_SIMP = 0x4000_0083,
        HV_X64_MSR_EOM = 0x4000_0084,
        HV_X64_MSR_SINT0 = 0x4000_0090,
        HV_X64_MSR_SINT1 = 0x4000_0091,
        HV_X64_MSR_SINT2 = 0x4000_0092,
        HV_X64_MSR_SINT3 = 0x4000_0093,
        HV_X64_MSR_SINT4 = 0x4000_0094,
        HV_X64_MSR_SINT5 = 0x4000_0095,
        HV_X64_MSR_SINT6 = 0x4000_0096,
        HV_X64_MSR_SINT7 = 0x4000_0097,
        HV_X64_MSR_SINT8 = 0x4000_0098,
        HV_X64_MSR_SINT9 = 0x4000_0099,
        HV_X64_MSR_SINT10 = 0x4000_009A,
        HV_X64_MSR_SINT11 = 0x4000_009B,
        HV_X64_MSR_SINT12 = 0x4000_009C,
        HV_X64_MSR_SINT13 = 0x4000_009D,
        HV_X64_MSR_SINT14 = 0x4000_009E,
        HV_X64_MSR_SINT15 = 0x4000_009F,
        HV_X64_MSR_STIMER0_CONFIG = 0x4000_00B0,
        HV_X64_MSR_STIMER0_COUNT = 0x4000_00B1,
        HV_X64_MSR_STIMER1_CONFIG = 0x4000_00B2,
        HV_X64_MSR_STIMER1_COUNT = 0x4000_00B3,
        HV_X64_MSR_STIMER2_CONFIG = 0x4000_00B4,
        HV_X64_MSR_STIMER2_COUNT = 0x4000_00B5,
        HV_X64_MSR_STIMER3_CONFIG = 0x4000_00B6,
        HV_X64_MSR_STIMER3_COUNT = 0x4000_00B7,
        HV_X64_MSR_REENLIGHTENMENT_CONTROL = 0x4000_0106,
        HV_X64_MSR_TSC_EMULATION_CONTROL = 0x4000_0107,
        HV_X64_MSR_TSC_EMULATION_STATUS = 0x4000_0108,
        // The L0 hypervisor's SynIC as seen from a nested (L1) hypervisor.
        HV_X64_MSR_NESTED_VP_INDEX = 0x4000_1002,
        HV_X64_MSR_NESTED_SCONTROL = 0x4000_1080,
        HV_X64_MSR_NESTED_SVERSION = 0x4000_1081,
        HV_X64_MSR_NESTED_SIEFP = 0x4000_1082,
        HV_X64_MSR_NESTED_SIMP = 0x4000_1083,
        HV_X64_MSR_NESTED_EOM = 0x4000_1084,
        HV_X64_MSR_NESTED_SINT0 = 0x4000_1090,
        HV_X64_MSR_NESTED_SINT1 = 0x4000_1091,
        HV_X64_MSR_NESTED_SINT2 = 0x4000_1092,
        HV_X64_MSR_NESTED_SINT3 = 0x4000_1093,
        HV_X64_MSR_NESTED_SINT4 = 0x4000_1094,
        HV_X64_MSR_NESTED_SINT5 = 0x4000_1095,
        HV_X64_MSR_NESTED_SINT6 = 0x4000_1096,
        HV_X64_MSR_NESTED_SINT7 = 0x4000_1097,
        HV_X64_MSR_NESTED_SINT8 = 0x4000_1098,
        HV_X64_MSR_NESTED_SINT9 = 0x4000_1099,
        HV_X64_MSR_NESTED_SINT10 = 0x4000_109A,
        HV_X64_MSR_NESTED_SINT11 = 0x4000_109B,
        HV_X64_MSR_NESTED_SINT12 = 0x4000_109C,
        HV_X64_MSR_NESTED_SINT13 = 0x4000_109D,
        HV_X64_MSR_NESTED_SINT14 = 0x4000_109E,
        HV_X64_MSR_NESTED_SINT15 = 0x4000_109F,
    }
}

impl HvX64Msr {
    /// Distance from a SynIC MSR (or VP_INDEX) to its `HV_X64_MSR_NESTED_*` twin.
    pub const NESTED_OFFSET: u32 = 0x1000;
    /// The first MSR of the range the hypervisor owns (the same range as its CPUID leaves).
    pub const FIRST_SYNTHETIC: u32 = 0x4000_0000;
    /// The last MSR of the range the hypervisor owns.
    pub const LAST_SYNTHETIC: u32 = 0x4000_FFFF;

    /// Whether `msr` is in the hypervisor's range: RDMSR/WRMSR of it is the hypervisor's to answer
    /// (#GP when it implements no such MSR), everything else is the CPU's.
    pub const fn is_synthetic(msr: u32) -> bool {
        msr >= Self::FIRST_SYNTHETIC && msr <= Self::LAST_SYNTHETIC
    }

    /// `HV_X64_MSR_SINT<n>`, for n < 16.
    pub const fn sint(n: u8) -> Option<Self> {
        if (n as usize) < HV_SYNIC_SINT_COUNT {
            Some(Self(Self::HV_X64_MSR_SINT0.0 + n as u32))
        } else {
            None
        }
    }

    /// The `HV_X64_MSR_NESTED_*` twin that reaches the L0 hypervisor's SynIC, for the MSRs that
    /// have one (VP_INDEX, SCONTROL..EOM, SINT0..15).
    pub const fn nested(self) -> Option<Self> {
        match self.0 {
            0x4000_0002 | 0x4000_0080..=0x4000_0084 | 0x4000_0090..=0x4000_009F => {
                Some(Self(self.0 + Self::NESTED_OFFSET))
            }
            _ => None,
        }
    }
}

impl SyntheticRegister {
    /// The MSR that holds this register on x64.
    pub const fn msr(self) -> Option<HvX64Msr> {
        Some(match self {
            Self::GuestOsId => HvX64Msr::HV_X64_MSR_GUEST_OS_ID,
            Self::Hypercall => HvX64Msr::HV_X64_MSR_HYPERCALL,
            Self::VpIndex => HvX64Msr::HV_X64_MSR_VP_INDEX,
            Self::VpRuntime => HvX64Msr::HV_X64_MSR_VP_RUNTIME,
            Self::TimeRefCount => HvX64Msr::HV_X64_MSR_TIME_REF_COUNT,
            Self::ReferenceTsc => HvX64Msr::HV_X64_MSR_REFERENCE_TSC,
            Self::VpAssistPage => HvX64Msr::HV_X64_MSR_VP_ASSIST_PAGE,
            Self::Scontrol => HvX64Msr::HV_X64_MSR_SCONTROL,
            Self::Sversion => HvX64Msr::HV_X64_MSR_SVERSION,
            Self::Siefp => HvX64Msr::HV_X64_MSR_SIEFP,
            Self::Simp => HvX64Msr::HV_X64_MSR_SIMP,
            Self::Eom => HvX64Msr::HV_X64_MSR_EOM,
            Self::Sint(n) => return HvX64Msr::sint(n),
        })
    }

    /// The register an MSR holds: the inverse of [`SyntheticRegister::msr`], for a hypervisor (or
    /// mock) that decodes a guest's RDMSR/WRMSR.
    pub const fn from_msr(msr: HvX64Msr) -> Option<Self> {
        Some(match msr {
            HvX64Msr::HV_X64_MSR_GUEST_OS_ID => Self::GuestOsId,
            HvX64Msr::HV_X64_MSR_HYPERCALL => Self::Hypercall,
            HvX64Msr::HV_X64_MSR_VP_INDEX => Self::VpIndex,
            HvX64Msr::HV_X64_MSR_VP_RUNTIME => Self::VpRuntime,
            HvX64Msr::HV_X64_MSR_TIME_REF_COUNT => Self::TimeRefCount,
            HvX64Msr::HV_X64_MSR_REFERENCE_TSC => Self::ReferenceTsc,
            HvX64Msr::HV_X64_MSR_VP_ASSIST_PAGE => Self::VpAssistPage,
            HvX64Msr::HV_X64_MSR_SCONTROL => Self::Scontrol,
            HvX64Msr::HV_X64_MSR_SVERSION => Self::Sversion,
            HvX64Msr::HV_X64_MSR_SIEFP => Self::Siefp,
            HvX64Msr::HV_X64_MSR_SIMP => Self::Simp,
            HvX64Msr::HV_X64_MSR_EOM => Self::Eom,
            _ => {
                let first = HvX64Msr::HV_X64_MSR_SINT0.0;
                if msr.0 >= first && msr.0 < first + HV_SYNIC_SINT_COUNT as u32 {
                    return Some(Self::Sint((msr.0 - first) as u8));
                }
                return None;
            }
        })
    }
}

/// `HV_X64_MSR_HYPERCALL`.
#[bitfield(u64)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvX64HypercallMsr {
    /// Only sticks once the guest OS id is non-zero.
    pub enable: bool,
    /// Immutable until reset (CPUID 0x40000003 EDX bit 18).
    pub locked: bool,
    /// RsvdP: preserve on write.
    #[bits(10)]
    pub reserved: u16,
    #[bits(52)]
    pub gpn: u64,
}

/// `vmcall` (Intel), the instruction at the start of the hypercall page.
pub const VMCALL: [u8; 3] = [0x0F, 0x01, 0xC1];
/// `vmmcall` (AMD).
pub const VMMCALL: [u8; 3] = [0x0F, 0x01, 0xD9];
/// `ret`, which follows the call instruction: the page behaves like a near call target.
pub const RET: u8 = 0xC3;
/// Length of `vmcall`/`vmmcall`: how far RIP advances when an intercepted hypercall completes.
pub const VMCALL_LEN: u64 = 3;

/// Fast input words in general-purpose registers: RDX and R8 (TLFS hypercall-interface.md,
/// "Register mapping for hypercall inputs"). The whole block of a caller without XMM fast input.
pub const FAST_GPR_WORDS: usize = 2;
/// With XMM fast input: RDX, R8, then XMM0-XMM5 as low and high quadwords (TLFS "XMM Fast
/// Hypercalls": up to 112 bytes).
pub const FAST_XMM_WORDS: usize = FAST_GPR_WORDS + 12;

/// Hyper-V CPUID leaves and bits.
pub mod cpuid {
    /// CPUID.1:ECX bit 31: running under a hypervisor.
    pub const CPUID1_ECX_HYPERVISOR_PRESENT: u32 = 1 << 31;

    /// EAX = highest hypervisor leaf, EBX:ECX:EDX = vendor.
    pub const HV_CPUID_VENDOR_AND_MAX_FUNCTIONS: u32 = 0x4000_0000;
    pub const HV_CPUID_INTERFACE: u32 = 0x4000_0001;
    pub const HV_CPUID_VERSION: u32 = 0x4000_0002;
    /// EAX/EBX = partition privilege mask low/high, EDX = feature bits below.
    pub const HV_CPUID_FEATURES: u32 = 0x4000_0003;
    pub const HV_CPUID_ENLIGHTENMENT_INFO: u32 = 0x4000_0004;
    pub const HV_CPUID_IMPLEMENTATION_LIMITS: u32 = 0x4000_0005;
    pub const HV_CPUID_HARDWARE_FEATURES: u32 = 0x4000_0006;
    pub const HV_CPUID_NESTED_FEATURES: u32 = 0x4000_0009;
    pub const HV_CPUID_NESTED_VIRT_FEATURES: u32 = 0x4000_000A;

    /// "Micr"
    pub const HV_CPUID_VENDOR_EBX: u32 = 0x7263_694D;
    /// "osof"
    pub const HV_CPUID_VENDOR_ECX: u32 = 0x666F_736F;
    /// "t Hv"
    pub const HV_CPUID_VENDOR_EDX: u32 = 0x7648_2074;
    /// The highest leaf must be at least this for the Hyper-V interface to be usable...
    pub const HV_CPUID_MIN_MAX_FUNCTION: u32 = 0x4000_0005;
    /// ...and at most this.
    pub const HV_CPUID_MAX_MAX_FUNCTION: u32 = 0x4000_FFFF;
    /// "Hv#1" in EAX of `HV_CPUID_INTERFACE`.
    pub const HV_CPUID_INTERFACE_HV1: u32 = 0x3123_7648;

    /// `HV_CPUID_FEATURES` EDX bits.
    pub const HV_FEATURES_EDX_XMM_FAST_INPUT: u32 = 1 << 4;
    pub const HV_FEATURES_EDX_XMM_FAST_OUTPUT: u32 = 1 << 15;
    pub const HV_FEATURES_EDX_SINT_POLLING: u32 = 1 << 17;
    pub const HV_FEATURES_EDX_HYPERCALL_MSR_LOCK: u32 = 1 << 18;
    pub const HV_FEATURES_EDX_DIRECT_SYNTHETIC_TIMERS: u32 = 1 << 19;

    /// `HV_CPUID_ENLIGHTENMENT_INFO` EAX bit 12: this hypervisor is nested in a Hyper-V
    /// partition, so calls meant for L0 need the control word's nested bit.
    pub const HV_ENLIGHTENMENT_EAX_NESTED: u32 = 1 << 12;
    /// `HV_CPUID_ENLIGHTENMENT_INFO` EAX bit 14: use the enlightened VMCS.
    pub const HV_ENLIGHTENMENT_EAX_USE_EVMCS: u32 = 1 << 14;
}

/// x64 VP register names (`HvX64Register*`), as [`HvRegisterName`](crate::HvRegisterName) values.
pub mod reg {
    use crate::HvRegisterName;

    named_consts!(HvRegisterName {
        RAX = 0x0002_0000,
        RCX = 0x0002_0001,
        RDX = 0x0002_0002,
        RBX = 0x0002_0003,
        RSP = 0x0002_0004,
        RBP = 0x0002_0005,
        RSI = 0x0002_0006,
        RDI = 0x0002_0007,
        R8 = 0x0002_0008,
        R9 = 0x0002_0009,
        R10 = 0x0002_000A,
        R11 = 0x0002_000B,
        R12 = 0x0002_000C,
        R13 = 0x0002_000D,
        R14 = 0x0002_000E,
        R15 = 0x0002_000F,
        RIP = 0x0002_0010,
        RFLAGS = 0x0002_0011,
        XMM0 = 0x0003_0000,
        XMM1 = 0x0003_0001,
        XMM2 = 0x0003_0002,
        XMM3 = 0x0003_0003,
        XMM4 = 0x0003_0004,
        XMM5 = 0x0003_0005,
        CR0 = 0x0004_0000,
        CR2 = 0x0004_0001,
        CR3 = 0x0004_0002,
        CR4 = 0x0004_0003,
        CR8 = 0x0004_0004,
        ES = 0x0006_0000,
        CS = 0x0006_0001,
        SS = 0x0006_0002,
        DS = 0x0006_0003,
        FS = 0x0006_0004,
        GS = 0x0006_0005,
        LDTR = 0x0006_0006,
        TR = 0x0006_0007,
        IDTR = 0x0007_0000,
        GDTR = 0x0007_0001,
        TSC = 0x0008_0000,
        EFER = 0x0008_0001,
        KERNEL_GS_BASE = 0x0008_0002,
        APIC_BASE = 0x0008_0003,
        PAT = 0x0008_0004,
        /// The hypercall page register (`HvX64RegisterHypercall`).
        HYPERCALL = 0x0009_0001,
        /// The VTL register page (NON-TLFS; OpenVMM `HvX64RegisterName::RegisterPage`, Linux
        /// `HV_X64_REGISTER_REG_PAGE`): an overlay-page value ([`HvPageRegister`](crate::HvPageRegister)
        /// layout: bit 0 enable, bits 63:12 the GPA page number), set by VTL2 on itself. See
        /// [`HvX64RegisterPage`](super::HvX64RegisterPage).
        REGISTER_PAGE = 0x0009_001C,
    });
}

open_enum! {
    /// The kind of event in an x64 pending event register (NON-TLFS, OpenVMM
    /// `HV_X64_PENDING_EVENT_*`): bits 3:1 of `HvRegisterPendingEvent0`.
    pub struct HvX64PendingEventType(u8) {
        EXCEPTION = 0,
        MEMORY_INTERCEPT = 1,
        NESTED_MEMORY_INTERCEPT = 2,
        VIRTUALIZATION_FAULT = 3,
        HYPERCALL_OUTPUT = 4,
        EXT_INT = 5,
        SHADOW_IPT = 6,
    }
}

/// `HvRegisterPendingEvent0` holding an exception (NON-TLFS layout, OpenVMM
/// `HvX64PendingExceptionEvent`). The VP takes it when it next runs in that VTL, from the RIP the
/// VTL has then, so a fault is injected by leaving RIP on the faulting instruction.
/// `HvRegisterPendingEvent1` (the second half of the 32-byte event) is zero for an exception.
#[bitfield(u128)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvX64PendingExceptionEvent {
    pub event_pending: bool,
    /// [`HvX64PendingEventType::EXCEPTION`] for this layout.
    #[bits(3)]
    pub event_type: HvX64PendingEventType,
    #[bits(4)]
    __: u8,
    /// Push `error_code` (#DF, #TS, #NP, #SS, #GP, #PF, #AC); #UD has none.
    pub deliver_error_code: bool,
    #[bits(7)]
    __: u8,
    /// The IDT vector (#UD is 6, #GP 13).
    pub vector: u16,
    pub error_code: u32,
    /// What the exception reports besides the error code (#PF: the faulting address for CR2).
    pub exception_parameter: u64,
}

/// A segment register as the hypervisor passes it (register value, contexts, intercepts).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HvX64SegmentRegister {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    pub attributes: u16,
}

/// A descriptor-table register (IDTR, GDTR).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HvX64TableRegister {
    pub pad: [u16; 3],
    pub limit: u16,
    pub base: u64,
}

/// `HV_INITIAL_VP_CONTEXT` for x64 (HvCallEnableVpVtl, HvCallStartVirtualProcessor).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HvX64InitialVpContext {
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub cs: HvX64SegmentRegister,
    pub ds: HvX64SegmentRegister,
    pub es: HvX64SegmentRegister,
    pub fs: HvX64SegmentRegister,
    pub gs: HvX64SegmentRegister,
    pub ss: HvX64SegmentRegister,
    pub tr: HvX64SegmentRegister,
    pub ldtr: HvX64SegmentRegister,
    pub idtr: HvX64TableRegister,
    pub gdtr: HvX64TableRegister,
    pub efer: u64,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub msr_cr_pat: u64,
}

vp_context_input!(
    HvX64InputEnableVpVtl,
    HvX64InputStartVirtualProcessor,
    HvX64InitialVpContext
);

/// `HV_X64_VP_EXECUTION_STATE` of an intercept message.
#[bitfield(u16)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvX64VpExecutionState {
    #[bits(2)]
    pub cpl: u8,
    pub cr0_pe: bool,
    pub cr0_am: bool,
    pub efer_lma: bool,
    pub debug_active: bool,
    pub interruption_pending: bool,
    /// The VTL that was intercepted.
    #[bits(4)]
    pub vtl: u8,
    __: bool,
    pub interrupt_shadow: bool,
    #[bits(3)]
    __: u8,
}

/// `HV_X64_INTERCEPT_MESSAGE_HEADER`, the start of every x64 intercept payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvX64InterceptMessageHeader {
    pub vp_index: u32,
    /// Instruction length in bits 3:0, CR8 in bits 7:4.
    pub instruction_length_and_cr8: u8,
    pub intercept_access_type: HvInterceptAccessType,
    pub execution_state: HvX64VpExecutionState,
    pub cs_segment: HvX64SegmentRegister,
    pub rip: u64,
    pub rflags: u64,
}

impl HvX64InterceptMessageHeader {
    pub const fn instruction_length(&self) -> u8 {
        self.instruction_length_and_cr8 & 0xF
    }

    pub const fn cr8(&self) -> u8 {
        self.instruction_length_and_cr8 >> 4
    }
}

/// Payload of an x64 memory intercept message (`GPA_INTERCEPT`, `UNMAPPED_GPA`; OpenVMM hvdef
/// `HvX64MemoryInterceptMessage`, 0x50 bytes): the access that a higher VTL's protection (or a
/// missing mapping) stopped.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvX64MemoryInterceptMessage {
    pub header: HvX64InterceptMessageHeader,
    /// `HV_CACHE_TYPE` of the page (6 write-back).
    pub cache_type: u32,
    pub instruction_byte_count: u8,
    pub memory_access_info: crate::HvMemoryAccessInfo,
    pub tpr_priority: u8,
    pub reserved: u8,
    pub guest_virtual_address: u64,
    pub guest_physical_address: u64,
    pub instruction_bytes: [u8; 16],
}

/// Payload of an x64 `HYPERCALL_INTERCEPT` message (NON-TLFS layout, from OpenVMM). RCX is the
/// control word, RDX/R8 the GPAs or fast input; the caller's 32-bit convention uses the others.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvX64HypercallInterceptMessage {
    pub header: HvX64InterceptMessageHeader,
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub r8: u64,
    pub rsi: u64,
    pub rdi: u64,
    /// XMM0..XMM5 as (low, high) quadwords, for XMM fast input.
    pub xmm_registers: [[u64; 2]; 6],
    pub flags: HvHypercallInterceptFlags,
    pub reserved: [u32; 3],
}

/// Which parts of an [`HvX64RegisterPage`] VTL2 changed, for the hypervisor to load into the
/// intercepted VTL at the next VtlReturn (NON-TLFS; OpenVMM `HvX64RegisterPageDirtyFlags`).
#[bitfield(u32)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvX64RegisterPageDirtyFlags {
    /// `gp_registers` (of which only RSP is private to the VTL; see the model's fact sheet).
    pub general_purpose: bool,
    /// `rip`.
    pub instruction_pointer: bool,
    /// `xmm`.
    pub xmm: bool,
    /// `segment` (ES, CS, SS, DS, FS, GS).
    pub segments: bool,
    /// `rflags`.
    pub flags: bool,
    #[bits(27)]
    __: u32,
}

/// The x64 VTL register page (NON-TLFS; OpenVMM `vm/hv1/hvdef` `HvX64RegisterPage`): while VTL2
/// handles an intercept (`is_valid` set), the intercepted VTL's registers; what VTL2 writes and
/// marks in `dirty` the hypervisor loads into that VTL at VtlReturn. The control registers are
/// read-only through it ("cannot be set via this interface").
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvX64RegisterPage {
    pub version: u16,
    /// Non-zero while the contents describe the intercepted VTL (VTL2 handling an intercept).
    pub is_valid: u8,
    /// The VTL whose registers these are.
    pub vtl: u8,
    pub dirty: HvX64RegisterPageDirtyFlags,
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8-R15 (the x86-64 encoding order).
    pub gp_registers: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    pub reserved: u64,
    /// XMM0-XMM5 as (low, high) quadwords (OpenVMM: `[u128; 6]`, at a 16-aligned offset).
    pub xmm: [[u64; 2]; 6],
    /// ES, CS, SS, DS, FS, GS.
    pub segment: [HvX64SegmentRegister; 6],
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub dr7: u64,
    pub pending_interruption: u64,
    pub interrupt_state: u64,
    pub instruction_emulation_hints: u64,
    pub reserved_end: [u8; 3672],
}

impl HvX64RegisterPage {
    /// `gp_registers` index of RSP.
    pub const RSP: usize = 4;
}

const _: () = {
    assert!(size_of::<HvX64RegisterPage>() == 4096);
    assert!(offset_of!(HvX64RegisterPage, is_valid) == 2);
    assert!(offset_of!(HvX64RegisterPage, vtl) == 3);
    assert!(offset_of!(HvX64RegisterPage, dirty) == 4);
    assert!(offset_of!(HvX64RegisterPage, gp_registers) == 8);
    assert!(offset_of!(HvX64RegisterPage, rip) == 136);
    assert!(offset_of!(HvX64RegisterPage, rflags) == 144);
    assert!(offset_of!(HvX64RegisterPage, xmm) == 160);
    assert!(offset_of!(HvX64RegisterPage, segment) == 256);
    assert!(offset_of!(HvX64RegisterPage, cr0) == 352);
    assert!(offset_of!(HvX64RegisterPage, dr7) == 392);
    assert!(offset_of!(HvX64RegisterPage, instruction_emulation_hints) == 416);
    assert!(offset_of!(HvX64RegisterPage, reserved_end) == 424);
};

const _: () = {
    assert!(size_of::<HvX64SegmentRegister>() == 16);
    assert!(offset_of!(HvX64SegmentRegister, base) == 0);
    assert!(offset_of!(HvX64SegmentRegister, limit) == 8);
    assert!(offset_of!(HvX64SegmentRegister, selector) == 12);
    assert!(offset_of!(HvX64SegmentRegister, attributes) == 14);

    assert!(size_of::<HvX64TableRegister>() == 16);
    assert!(offset_of!(HvX64TableRegister, limit) == 6);
    assert!(offset_of!(HvX64TableRegister, base) == 8);

    assert!(size_of::<HvX64InitialVpContext>() == 224);
    assert!(offset_of!(HvX64InitialVpContext, rip) == 0);
    assert!(offset_of!(HvX64InitialVpContext, rsp) == 8);
    assert!(offset_of!(HvX64InitialVpContext, rflags) == 16);
    assert!(offset_of!(HvX64InitialVpContext, cs) == 24);
    assert!(offset_of!(HvX64InitialVpContext, ldtr) == 24 + 7 * 16);
    assert!(offset_of!(HvX64InitialVpContext, idtr) == 152);
    assert!(offset_of!(HvX64InitialVpContext, gdtr) == 168);
    assert!(offset_of!(HvX64InitialVpContext, efer) == 184);
    assert!(offset_of!(HvX64InitialVpContext, cr0) == 192);
    assert!(offset_of!(HvX64InitialVpContext, cr3) == 200);
    assert!(offset_of!(HvX64InitialVpContext, cr4) == 208);
    assert!(offset_of!(HvX64InitialVpContext, msr_cr_pat) == 216);

    assert!(size_of::<HvX64InterceptMessageHeader>() == 0x28);
    assert!(offset_of!(HvX64InterceptMessageHeader, vp_index) == 0);
    assert!(offset_of!(HvX64InterceptMessageHeader, instruction_length_and_cr8) == 4);
    assert!(offset_of!(HvX64InterceptMessageHeader, intercept_access_type) == 5);
    assert!(offset_of!(HvX64InterceptMessageHeader, execution_state) == 6);
    assert!(offset_of!(HvX64InterceptMessageHeader, cs_segment) == 8);
    assert!(offset_of!(HvX64InterceptMessageHeader, rip) == 0x18);
    assert!(offset_of!(HvX64InterceptMessageHeader, rflags) == 0x20);

    assert!(size_of::<HvX64MemoryInterceptMessage>() == 0x50);
    assert!(offset_of!(HvX64MemoryInterceptMessage, cache_type) == 0x28);
    assert!(offset_of!(HvX64MemoryInterceptMessage, instruction_byte_count) == 0x2C);
    assert!(offset_of!(HvX64MemoryInterceptMessage, memory_access_info) == 0x2D);
    assert!(offset_of!(HvX64MemoryInterceptMessage, guest_virtual_address) == 0x30);
    assert!(offset_of!(HvX64MemoryInterceptMessage, guest_physical_address) == 0x38);
    assert!(offset_of!(HvX64MemoryInterceptMessage, instruction_bytes) == 0x40);

    assert!(size_of::<HvX64HypercallInterceptMessage>() == 0xD0);
    assert!(offset_of!(HvX64HypercallInterceptMessage, rax) == 0x28);
    assert!(offset_of!(HvX64HypercallInterceptMessage, rbx) == 0x30);
    assert!(offset_of!(HvX64HypercallInterceptMessage, rcx) == 0x38);
    assert!(offset_of!(HvX64HypercallInterceptMessage, rdx) == 0x40);
    assert!(offset_of!(HvX64HypercallInterceptMessage, r8) == 0x48);
    assert!(offset_of!(HvX64HypercallInterceptMessage, rsi) == 0x50);
    assert!(offset_of!(HvX64HypercallInterceptMessage, rdi) == 0x58);
    assert!(offset_of!(HvX64HypercallInterceptMessage, xmm_registers) == 0x60);
    assert!(offset_of!(HvX64HypercallInterceptMessage, flags) == 0xC0);
    assert!(offset_of!(HvX64HypercallInterceptMessage, reserved) == 0xC4);
    assert!(size_of::<HvX64HypercallInterceptMessage>() <= crate::HV_MESSAGE_PAYLOAD_SIZE);
};

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::{
        Control, HvMessageType, HvRegisterName, HvVpAssistPage, HvVtlEntryReason, HypercallCode,
    };
    use std::format;

    #[test]
    fn synthetic_register_msrs() {
        use SyntheticRegister as S;
        let expect = [
            (S::GuestOsId, 0x4000_0000),
            (S::Hypercall, 0x4000_0001),
            (S::VpIndex, 0x4000_0002),
            (S::VpRuntime, 0x4000_0010),
            (S::TimeRefCount, 0x4000_0020),
            (S::ReferenceTsc, 0x4000_0021),
            (S::VpAssistPage, 0x4000_0073),
            (S::Scontrol, 0x4000_0080),
            (S::Sversion, 0x4000_0081),
            (S::Siefp, 0x4000_0082),
            (S::Simp, 0x4000_0083),
            (S::Eom, 0x4000_0084),
        ];
        for (reg, msr) in expect {
            assert_eq!(reg.msr(), Some(HvX64Msr(msr)), "{reg:?}");
        }
        for n in 0..16u8 {
            assert_eq!(S::Sint(n).msr(), Some(HvX64Msr(0x4000_0090 + u32::from(n))));
        }
        assert_eq!(S::Sint(16).msr(), None);
    }

    #[test]
    fn synthetic_msr_range() {
        assert!(HvX64Msr::is_synthetic(0x4000_0000));
        assert!(HvX64Msr::is_synthetic(HvX64Msr::HV_X64_MSR_NESTED_SINT15.0));
        assert!(HvX64Msr::is_synthetic(0x4000_FFFF));
        assert!(!HvX64Msr::is_synthetic(0x3FFF_FFFF));
        assert!(!HvX64Msr::is_synthetic(0x4001_0000));
        assert!(!HvX64Msr::is_synthetic(0xC000_0080));
    }

    #[test]
    fn synthetic_register_from_msr_round_trips() {
        use SyntheticRegister as S;
        let all = [
            S::GuestOsId,
            S::Hypercall,
            S::VpIndex,
            S::VpRuntime,
            S::TimeRefCount,
            S::ReferenceTsc,
            S::VpAssistPage,
            S::Scontrol,
            S::Sversion,
            S::Siefp,
            S::Simp,
            S::Eom,
            S::Sint(0),
            S::Sint(15),
        ];
        for reg in all {
            assert_eq!(S::from_msr(reg.msr().unwrap()), Some(reg), "{reg:?}");
        }
        assert_eq!(S::from_msr(HvX64Msr(0x4000_009A)), Some(S::Sint(10)));
        assert_eq!(S::from_msr(HvX64Msr(0x4000_00A0)), None);
        assert_eq!(S::from_msr(HvX64Msr::HV_X64_MSR_NESTED_SIMP), None);
        assert_eq!(S::from_msr(HvX64Msr::HV_X64_MSR_EOI), None);
    }

    #[test]
    fn msr_names_and_nested() {
        assert_eq!(
            format!("{:?}", HvX64Msr(0x4000_0073)),
            "HV_X64_MSR_VP_ASSIST_PAGE"
        );
        assert_eq!(HvX64Msr::HV_X64_MSR_SINT15.0, 0x4000_009F);
        assert_eq!(HvX64Msr::HV_X64_MSR_STIMER3_COUNT.0, 0x4000_00B7);
        assert_eq!(
            HvX64Msr::HV_X64_MSR_SINT2.nested(),
            Some(HvX64Msr::HV_X64_MSR_NESTED_SINT2)
        );
        assert_eq!(
            HvX64Msr::HV_X64_MSR_VP_INDEX.nested(),
            Some(HvX64Msr::HV_X64_MSR_NESTED_VP_INDEX)
        );
        assert_eq!(
            HvX64Msr::HV_X64_MSR_EOM.nested(),
            Some(HvX64Msr::HV_X64_MSR_NESTED_EOM)
        );
        assert_eq!(HvX64Msr::HV_X64_MSR_HYPERCALL.nested(), None);
    }

    #[test]
    fn hypercall_msr_and_cpuid() {
        let msr = HvX64HypercallMsr::new().with_enable(true).with_gpn(0x7F);
        assert_eq!(msr.into_bits(), 0x7F001);
        assert!(HvX64HypercallMsr::from_bits(0x2).locked());
        let vendor = [
            cpuid::HV_CPUID_VENDOR_EBX.to_le_bytes(),
            cpuid::HV_CPUID_VENDOR_ECX.to_le_bytes(),
            cpuid::HV_CPUID_VENDOR_EDX.to_le_bytes(),
        ]
        .concat();
        assert_eq!(vendor, b"Microsoft Hv");
        assert_eq!(&cpuid::HV_CPUID_INTERFACE_HV1.to_le_bytes(), b"Hv#1");
    }

    #[test]
    fn register_names() {
        assert_eq!(reg::RAX, HvRegisterName(0x0002_0000));
        assert_eq!(reg::R15.0, 0x0002_000F);
        assert_eq!(reg::RFLAGS.0, 0x0002_0011);
        assert_eq!(reg::CR3.0, 0x0004_0002);
        assert_eq!(reg::EFER.0, 0x0008_0001);
        assert_eq!(reg::name(HvRegisterName(0x0002_0010)), Some("RIP"));
        assert_eq!(reg::name(HvRegisterName::VSM_VP_STATUS), None);
    }

    #[test]
    fn pending_exception_event() {
        assert_eq!(HvRegisterName::PENDING_EVENT0.0, 0x0001_0004);
        // #UD: pending, type exception (0), no error code, vector 6 in bits 31:16.
        let ud = HvX64PendingExceptionEvent::new()
            .with_event_pending(true)
            .with_event_type(HvX64PendingEventType::EXCEPTION)
            .with_vector(6);
        assert_eq!(ud.into_bits(), 0x0006_0001);
        // #GP(0x10): deliver_error_code is bit 8, the error code bits 63:32.
        let gp = HvX64PendingExceptionEvent::from_bits(0x0000_0010_000D_0101);
        assert!(gp.event_pending() && gp.deliver_error_code());
        assert_eq!((gp.vector(), gp.error_code()), (13, 0x10));
        assert_eq!(gp.event_type(), HvX64PendingEventType::EXCEPTION);
        // #PF(2) at 0xFFFF_8000_0000_1000: the parameter is the high quadword.
        let pf = HvX64PendingExceptionEvent::new()
            .with_event_pending(true)
            .with_deliver_error_code(true)
            .with_vector(14)
            .with_error_code(2)
            .with_exception_parameter(0xFFFF_8000_0000_1000);
        assert_eq!(
            pf.into_bits(),
            0xFFFF_8000_0000_1000 << 64 | 0x0000_0002_000E_0101
        );
        // The type is bits 3:1 (an ExtInt event, not pending).
        let ext_int = HvX64PendingExceptionEvent::from_bits(0b1010);
        assert_eq!(ext_int.event_type(), HvX64PendingEventType::EXT_INT);
        assert!(!ext_int.event_pending());
        assert_eq!(
            format!("{:?}", HvX64PendingEventType(4)),
            "HYPERCALL_OUTPUT"
        );
    }

    #[test]
    fn intercept_message_from_assist_page() {
        let mut page = [0u8; 0x270];
        page[8..12].copy_from_slice(&3u32.to_le_bytes());
        let msg = 0x70;
        page[msg..msg + 4].copy_from_slice(&0x8000_0050u32.to_le_bytes());
        page[msg + 4] = 0xD0;
        let p = msg + 16;
        page[p..p + 4].copy_from_slice(&1u32.to_le_bytes()); // vp_index
        page[p + 4] = 0x03; // instruction length 3, cr8 0
        page[p + 5] = 2; // execute
        page[p + 6..p + 8].copy_from_slice(&0x0015u16.to_le_bytes()); // cpl 1, cr0_pe, efer_lma, vtl 0
        page[p + 0x18..p + 0x20].copy_from_slice(&0xFFFF_F800_1234_0000u64.to_le_bytes());
        let control = Control::new()
            .with_code(HypercallCode::POST_MESSAGE)
            .into_bits();
        page[p + 0x38..p + 0x40].copy_from_slice(&control.to_le_bytes());
        page[p + 0x40..p + 0x48].copy_from_slice(&0x5000u64.to_le_bytes());
        page[p + 0xC0] = 1;

        let assist = HvVpAssistPage::read_from_bytes(&page).unwrap();
        assert_eq!(assist.vtl_control.entry_reason, HvVtlEntryReason::INTERCEPT);
        let message = &assist.intercept_message;
        assert_eq!(
            message.header.message_type,
            HvMessageType::HYPERCALL_INTERCEPT
        );
        let (hc, _) =
            HvX64HypercallInterceptMessage::read_from_prefix(message.payload_bytes()).unwrap();
        assert_eq!(hc.header.vp_index, 1);
        assert_eq!(hc.header.instruction_length(), 3);
        assert_eq!(
            hc.header.intercept_access_type,
            HvInterceptAccessType::EXECUTE
        );
        assert_eq!(hc.header.execution_state.cpl(), 1);
        assert!(hc.header.execution_state.cr0_pe() && hc.header.execution_state.efer_lma());
        assert_eq!(hc.header.execution_state.vtl(), 0);
        assert_eq!(hc.header.rip, 0xFFFF_F800_1234_0000);
        assert_eq!(
            Control::from_bits(hc.rcx).code(),
            HypercallCode::POST_MESSAGE
        );
        assert_eq!(hc.rdx, 0x5000);
        assert!(hc.flags.is_isolated());
    }
}
