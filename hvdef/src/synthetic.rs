//! The arch-neutral names of the Hyper-V synthetic registers (Linux's `HV_MSR_*`).
//!
//! Shared code names a register here; `SyntheticRegister::msr` (in `x86_64`) resolves it to its
//! `HV_X64_MSR_*` MSR and `SyntheticRegister::vp_register` (in `aarch64`) to the VP register read
//! with HvCallGet/SetVpRegisters.

/// A synthetic register that exists on both ISAs (except where noted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyntheticRegister {
    GuestOsId,
    /// The hypercall page MSR: x64 only, ARM64 has no hypercall page.
    Hypercall,
    VpIndex,
    VpRuntime,
    TimeRefCount,
    ReferenceTsc,
    VpAssistPage,
    Scontrol,
    Sversion,
    Siefp,
    Simp,
    Eom,
    /// SINT0..SINT15; larger indices resolve to nothing.
    Sint(u8),
}
