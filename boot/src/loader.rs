//! Where a loader pointer may point before the boot code dereferences it: the start of a PVH
//! start info, command line, memory map or ACPI table (x86), or of a device tree (arm64). A
//! pointer that is null, wraps, reaches into device memory, leaves what the boot page tables map
//! as ordinary memory, or (when the loader's memory map is known) lies outside every range it
//! describes is refused with a reason; the caller prints one line and uses its defaults.
//!
//! Pure logic, tested on the host for both arches' layouts; and `read_at`, the typed read the
//! parsers of copied loader data share.

use core::ops::Range;
use zerocopy::FromBytes;

/// The `T` at byte `at` of loader data already copied in, if all of it is there: how the
/// parsers of the copies (IGVM parameters, device tree) read a struct at an offset.
pub(crate) fn read_at<T: FromBytes>(bytes: &[u8], at: usize) -> Option<T> {
    T::read_from_prefix(bytes.get(at..)?).ok().map(|(v, _)| v)
}

/// Why a loader pointer is not followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// 0: a null pointer.
    Null,
    /// `addr + len` wraps around the address space.
    Wraps,
    /// Overlaps memory the boot page tables map as Device memory, or a platform MMIO window:
    /// reads there have side effects (a UART's data register) or fault (unaligned accesses).
    DeviceMemory,
    /// Not entirely inside what the static boot page tables map as ordinary memory (loader
    /// data is read before the map is extended to RAM above 4 GiB).
    NotMapped,
    /// Not entirely inside one range of the loader's own memory map.
    NotReported,
}

impl core::fmt::Display for Refused {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Refused::Null => "a null pointer",
            Refused::Wraps => "wraps around the address space",
            Refused::DeviceMemory => "device memory",
            Refused::NotMapped => "outside the boot identity map",
            Refused::NotReported => "outside the loader's memory map",
        })
    }
}

/// What one architecture's boot code may read loader data from.
#[derive(Clone, Debug)]
pub struct Readable<'a> {
    /// Mapped as ordinary (Normal, cacheable) memory by the boot page tables.
    pub mapped: Range<u64>,
    /// Device memory inside or next to `mapped`; checked first, so it is named as such.
    pub device: &'a [Range<u64>],
    /// The loader's memory map (every entry, whatever its type: ACPI tables live in reserved
    /// or ACPI-typed entries), once read; `None` before or without one.
    pub reported: Option<&'a [Range<u64>]>,
}

/// x86_64: the static identity map of the low 4 GiB (2 MiB write-back pages, page 0 included: QEMU's
/// PVH ROM puts the memory map at 0x5a8; only address 0 is a null pointer) and the PC
/// platform's MMIO windows inside it: the legacy VGA window and 0xFEC0_0000..4 GiB (I/O APIC,
/// HPET, local APIC, boot flash).
pub const X86_64: Readable<'static> = Readable {
    mapped: 0..crate::paging::STATIC_MAP_END,
    device: &[
        0xA_0000..0xC_0000,
        0xFEC0_0000..crate::paging::STATIC_MAP_END,
    ],
    reported: None,
};

/// arm64's one device range: 1 GiB block 0, Device-nGnRnE (QEMU virt puts its UART, GIC and
/// flash there).
const AARCH64_DEVICE: [Range<u64>; 1] = [Range {
    start: 0,
    end: 1 << 30,
}];

/// aarch64: 1 GiB blocks 1-3 are Normal memory; block 0 is Device memory.
pub const AARCH64: Readable<'static> = Readable {
    mapped: 1 << 30..crate::paging::STATIC_MAP_END,
    device: &AARCH64_DEVICE,
    reported: None,
};

impl<'a> Readable<'a> {
    /// The same, with the loader's memory map known.
    pub fn with_reported(self, reported: &'a [Range<u64>]) -> Readable<'a> {
        Readable {
            reported: Some(reported),
            ..self
        }
    }

    /// Whether `len` bytes at `addr` may be read (`len` 0 is checked as 1 byte).
    pub fn check(&self, addr: u64, len: u64) -> Result<(), Refused> {
        if addr == 0 {
            return Err(Refused::Null);
        }
        let end = addr.checked_add(len.max(1)).ok_or(Refused::Wraps)?;
        if self.device.iter().any(|d| addr < d.end && d.start < end) {
            return Err(Refused::DeviceMemory);
        }
        if !(self.mapped.start <= addr && end <= self.mapped.end) {
            return Err(Refused::NotMapped);
        }
        match self.reported {
            Some(ranges) if !ranges.iter().any(|r| r.start <= addr && end <= r.end) => {
                Err(Refused::NotReported)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_and_wrapping_pointers_are_refused() {
        for arch in [X86_64, AARCH64] {
            assert_eq!(arch.check(0, 8), Err(Refused::Null));
            assert_eq!(arch.check(u64::MAX - 3, 8), Err(Refused::Wraps));
        }
    }

    #[test]
    fn x86_mmio_windows_and_addresses_above_the_identity_map_are_refused() {
        let x = X86_64;
        assert_eq!(
            x.check(0xF_5A40, 36),
            Ok(()),
            "the BIOS area, where an RSDP lives"
        );
        assert_eq!(
            x.check(0x5A8, 0x60),
            Ok(()),
            "page 0: QEMU's PVH memory map"
        );
        assert_eq!(x.check(0xB_8000, 8), Err(Refused::DeviceMemory), "VGA");
        assert_eq!(
            x.check(0x9_FFFC, 8),
            Err(Refused::DeviceMemory),
            "runs into VGA"
        );
        assert_eq!(
            x.check(0xFEE0_0000, 4),
            Err(Refused::DeviceMemory),
            "local APIC"
        );
        assert_eq!(x.check(0xFEBF_FFF8, 8), Ok(()));
        assert_eq!(x.check(0xFEBF_FFFC, 8), Err(Refused::DeviceMemory));
        assert_eq!(x.check(1 << 32, 8), Err(Refused::NotMapped));
        assert_eq!(x.check(0x7FFF_FFFC, 8), Ok(()));
    }

    #[test]
    fn arm64_block_0_is_device_memory() {
        let a = AARCH64;
        // QEMU virt's PL011 data register: a read would consume console input.
        assert_eq!(a.check(0x0900_0000, 8), Err(Refused::DeviceMemory));
        assert_eq!(a.check(0x1000, 8), Err(Refused::DeviceMemory));
        assert_eq!(a.check(0x3FFF_FFFC, 8), Err(Refused::DeviceMemory));
        assert_eq!(a.check(0x4000_0000, 2 << 20), Ok(()), "QEMU's device tree");
        assert_eq!(a.check(0xFFFF_F000, 0x2000), Err(Refused::NotMapped));
        assert_eq!(a.check(1 << 32, 8), Err(Refused::NotMapped));
    }

    #[test]
    fn with_a_memory_map_only_reported_ranges_are_readable() {
        let map = [0x1000..0x9_F000, 0x10_0000..0x8000_0000];
        let x = X86_64.with_reported(&map);
        assert_eq!(x.check(0x10_0000, 8), Ok(()));
        assert_eq!(x.check(0x7FFF_FFF8, 8), Ok(()));
        // The PCI hole: mapped write-back by the boot tables, but no memory.
        assert_eq!(x.check(0x8000_0000, 8), Err(Refused::NotReported));
        assert_eq!(
            x.check(0x7FFF_FFFC, 8),
            Err(Refused::NotReported),
            "straddles the end"
        );
        assert_eq!(
            x.check(0xF_0000, 8),
            Err(Refused::NotReported),
            "a gap in the map"
        );
        // Device memory is named first even when a map lists it.
        let bad = [Range {
            start: 0x1000,
            end: 0x1_0000_0000,
        }];
        assert_eq!(
            X86_64.with_reported(&bad).check(0xFEE0_0000, 4),
            Err(Refused::DeviceMemory)
        );
    }
}
