//! x86_64's share of the identity map: which page sizes and address width CPUID offers boot's
//! table builder.
#![forbid(unsafe_code)]

use super::detect::cpuid;

/// Architectural CPUID leaves for the identity map (read through the one CPUID site).
const CPUID_EXT_MAX: u32 = 0x8000_0000;
const CPUID_EXT_FEATURES: u32 = 0x8000_0001;
const CPUID_EXT_ADDRESS_SIZES: u32 = 0x8000_0008;
/// CPUID 0x80000001 EDX bit 26: 1 GiB pages.
const PAGE_1GB: u32 = 1 << 26;
/// The physical address width to assume without leaf 0x80000008 (Intel SDM: 36 bits).
const DEFAULT_PA_BITS: u32 = 36;

/// Identity-maps the reported RAM (boot's tables; see `boot::paging`) with 1 GiB pages if
/// CPUID 0x80000001 EDX bit 26 offers them, up to the CPUID 0x80000008 EAX bits 7:0 address width.
pub fn map_ram(ram: &[core::ops::Range<u64>]) -> &'static boot::paging::MappedRam {
    let max = cpuid(CPUID_EXT_MAX, 0)[0];
    let one_gib_pages =
        max >= CPUID_EXT_FEATURES && cpuid(CPUID_EXT_FEATURES, 0)[3] & PAGE_1GB != 0;
    let pa_bits = if max >= CPUID_EXT_ADDRESS_SIZES {
        cpuid(CPUID_EXT_ADDRESS_SIZES, 0)[0] & 0xff
    } else {
        DEFAULT_PA_BITS
    };
    boot::arch::map_ram(ram, pa_bits, one_gib_pages)
}
