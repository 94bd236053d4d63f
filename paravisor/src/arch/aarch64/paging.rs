//! aarch64's share of the identity map: the address width ID_AA64MMFR0_EL1 gives boot's table
//! builder.
#![forbid(unsafe_code)]

/// Identity-maps the reported RAM (boot's tables; see `boot::paging`) up to the physical
/// address width ID_AA64MMFR0_EL1.PARange gives.
pub fn map_ram(ram: &[core::ops::Range<u64>]) -> &'static boot::paging::MappedRam {
    use aarch64_cpu::registers::{Readable, ID_AA64MMFR0_EL1};
    boot::arch::map_ram(ram, boot::paging::aarch64_pa_bits(ID_AA64MMFR0_EL1.get()))
}
