//! The guest architecture the model serves, with the facts about it that need no host: its name,
//! the firmware's target triple and the RAM layout of the machine the mock emulates. The QEMU
//! side (binary, arguments, breakpoint kind) lives in `mockhv::qemu::QemuArch`.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;
use core::str::FromStr;

/// A guest architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    pub fn target_triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-none",
            Arch::Aarch64 => "aarch64-unknown-none-softfloat",
        }
    }

    /// The guest-physical RAM the machine has with `memory_mb` of memory: q35 puts at most 2 GiB
    /// below 4 GiB once RAM reaches 2.75 GiB (else all of it) and the rest from 4 GiB up; virt
    /// has one range from 1 GiB (QEMU `pc_q35_init`, `hw/arm/virt.c` memmap).
    pub fn ram_ranges(self, memory_mb: u32) -> Vec<Range<u64>> {
        const G: u64 = 1 << 30;
        let ram = u64::from(memory_mb) << 20;
        match self {
            Arch::X86_64 => {
                let low_limit = if ram >= 0xB000_0000 {
                    2 * G
                } else {
                    0xB000_0000
                };
                let low = ram.min(low_limit);
                let mut ranges = Vec::new();
                ranges.push(0..low);
                if ram > low {
                    ranges.push(4 * G..4 * G + (ram - low));
                }
                ranges
            }
            Arch::Aarch64 => core::iter::once(G..G + ram).collect(),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name [`Arch::from_str`] does not know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseArchError(pub String);

impl fmt::Display for ParseArchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown architecture {:?} (expected x86_64 or aarch64)",
            self.0
        )
    }
}

impl core::error::Error for ParseArchError {}

impl FromStr for Arch {
    type Err = ParseArchError;

    fn from_str(s: &str) -> Result<Self, ParseArchError> {
        match s {
            "x86_64" | "x86-64" | "x64" | "amd64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            _ => Err(ParseArchError(s.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ram_layouts() {
        const G: u64 = 1 << 30;
        assert_eq!(
            Arch::X86_64.ram_ranges(256),
            core::slice::from_ref(&(0..256 << 20))
        );
        assert_eq!(
            Arch::X86_64.ram_ranges(2048),
            core::slice::from_ref(&(0..2 * G))
        );
        assert_eq!(Arch::X86_64.ram_ranges(6144), [0..2 * G, 4 * G..8 * G]);
        assert_eq!(
            Arch::Aarch64.ram_ranges(6144),
            core::slice::from_ref(&(G..7 * G))
        );
    }

    #[test]
    fn arch_round_trips() {
        for arch in Arch::ALL {
            assert_eq!(arch.name().parse::<Arch>().unwrap(), arch);
        }
        assert_eq!(
            "riscv64".parse::<Arch>(),
            Err(ParseArchError("riscv64".into()))
        );
    }
}
