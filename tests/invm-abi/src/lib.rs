//! The runner's side of the in-VM mock Hyper-V (`tests/invm`): a configuration page QEMU's
//! generic loader places at [`CONFIG_GPA_AARCH64`] / [`CONFIG_GPA_X86_64`] before the host starts
//! (`-device loader,file=CONFIG,addr=...,force-raw=on`). No page (all zero, no magic) is the
//! default: the paravisor's ELF entry, no VTL0, and the run ends at the paravisor's first
//! VtlReturn.
#![no_std]
#![forbid(unsafe_code)]

use core::ops::Range;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// The page's GPA on arm64: the last page of the host's own 16 MiB ([`HOST_RAM_AARCH64`],
/// never guest RAM; the host's image ends below it).
pub const CONFIG_GPA_AARCH64: u64 = 0x4fff_f000;

/// The host's own memory on arm64: the last 16 MiB of the first 256 MiB of QEMU virt's RAM
/// (which starts at 1 GiB), whatever the machine's size. Outside the guest's stage 2 and the
/// RAM the paravisor is told about; a machine with more RAM has guest RAM on both sides of it.
pub const HOST_RAM_AARCH64: Range<u64> = 0x4f00_0000..0x5000_0000;

/// The RAM of the default machine on arm64 (QEMU virt with 256 MiB), when the runner gives no
/// layout ([`HostConfig::ram_count`] 0).
pub const DEFAULT_RAM_AARCH64: Range<u64> = 0x4000_0000..0x5000_0000;

/// Where the runner places the scenario (`hvmodel::Scenario::encode`'s bytes) on arm64: below
/// the configuration page, in the host's own memory; [`HostConfig::scenario_len`] bytes.
pub const SCENARIO_GPA_AARCH64: u64 = 0x4ffe_0000;
/// Room for the scenario's bytes (up to the configuration page), on both arches.
pub const SCENARIO_MAX: u64 = CONFIG_GPA_AARCH64 - SCENARIO_GPA_AARCH64;

/// The page's GPA on x86_64: in the host's own 16 MiB ([`HOST_RAM_X86_64`], never guest RAM),
/// above the host's image (invm-x86_64.ld), below the last MiB of a 256 MiB q35 machine, where
/// SeaBIOS keeps its high tables then (the runner's loader writes the page at reset, before
/// SeaBIOS runs).
pub const CONFIG_GPA_X86_64: u64 = 0x0fef_f000;

/// Where the runner places the scenario on x86_64: right below the configuration page, above
/// the host's image (invm-x86_64.ld), [`SCENARIO_MAX`] bytes of room.
pub const SCENARIO_GPA_X86_64: u64 = CONFIG_GPA_X86_64 - SCENARIO_MAX;

/// The host's own memory on x86_64: 240..256 MiB, low RAM on every q35 machine of at least
/// 256 MiB. Outside the guest's nested tables and the RAM the paravisor is told about.
pub const HOST_RAM_X86_64: Range<u64> = 0x0f00_0000..0x1000_0000;

/// The RAM of the default machine on x86_64 (q35 with 256 MiB), when the runner gives no
/// layout.
pub const DEFAULT_RAM_X86_64: Range<u64> = 0..0x1000_0000;

/// x86_64: the page the host copies its real-mode AP trampoline to (SIPI vector 0x9e): low RAM
/// right below the EBDA (0x9fc00) that nothing else uses, the host's and not the guest's. Not
/// page 0: q35 reports page 0 as RAM, and VTL0 may use it as RAM (a hypercall input there
/// reaches the paravisor, which refuses it: it never maps page 0).
pub const AP_TRAMPOLINE_X86_64: u64 = 0x9_e000;

/// Most RAM ranges the runner describes (QEMU's machines have one or two).
pub const RAM_RANGES_MAX: usize = 8;

/// The I/O port the x86 host writes its trace to (QEMU's `-debugcon file:PATH`, which the
/// runner points at the trace file): x86 QEMU has no semihosting. The guest's own accesses to
/// it exit to the host (the I/O permission map), so only the host's bytes reach the file.
pub const TRACE_PORT_X86_64: u16 = 0xe9;

/// "INVMCFG1".
pub const MAGIC: u64 = u64::from_le_bytes(*b"INVMCFG1");

/// [`HostConfig::flags`]: after the paravisor's first VtlReturn, VTL0 runs for real from the
/// state the model holds for it (the reset state below, or what the paravisor set), until it
/// powers off (PSCI SYSTEM_OFF).
pub const FLAG_LIVE_VTL0: u64 = 1 << 0;

/// [`HostConfig::flags`]: count the instructions VTL2 retires for each intercept it is handed,
/// from the delivery to its VtlReturn, under QEMU's `-icount shift=0` (arm64: the PMU cycle
/// counter, which counts EL1 only and then one per instruction; x86: the TSC, one per
/// instruction then, read around each VMRUN of VTL2), one console line each:
/// `invm: VTL2 work: vp N, M instructions`.
pub const FLAG_COUNT_VTL2: u64 = 1 << 1;

/// The console line prefix of a [`FLAG_COUNT_VTL2`] record.
pub const VTL2_WORK_LINE: &str = "invm: VTL2 work: vp ";

/// [`HostConfig::flags`], x86_64: enter the paravisor with [`HostConfig::vtl2_x64`] (an IGVM
/// file's VTL2 context) instead of a PVH start of its ELF.
pub const FLAG_X64_CONTEXT: u64 = 1 << 2;

/// The size of `HV_INITIAL_VP_CONTEXT` for x64 (`hvdef::x86_64::HvX64InitialVpContext`).
pub const X64_CONTEXT_SIZE: usize = 224;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HostConfig {
    pub magic: u64,
    pub flags: u64,
    /// VTL0's reset PC, as a VMM gives a VP its reset state (0: none; the paravisor may set
    /// one with SetVpRegisters either way, and its value wins).
    pub vtl0_pc: u64,
    /// Where the host enters the paravisor at EL1h (0: the ELF image's entry, 0x40200000),
    /// and its X0..X3 there (an IGVM file's VTL2 context).
    pub vtl2_pc: u64,
    pub vtl2_x: [u64; 4],
    /// VPs, one QEMU CPU each (`-smp`); 0 means 1.
    pub vp_count: u64,
    /// Length of the scenario at [`SCENARIO_GPA_AARCH64`] (0: the arch's default scenario).
    /// Its VP count and RAM are the host's: `vp_count` and the guest window.
    pub scenario_len: u64,
    /// Where the host writes the model's trace (`hvmodel`'s wire format), through QEMU's
    /// semihosting (a host-side path, NUL-terminated; empty: no trace file). On x86_64 the
    /// trace goes to [`TRACE_PORT_X86_64`] instead, and a path only says that it is wanted.
    pub trace_path: [u8; TRACE_PATH_MAX],
    /// x86_64, with [`FLAG_X64_CONTEXT`]: the paravisor's VTL2 context as
    /// `HvX64InitialVpContext` bytes.
    pub vtl2_x64: [u8; X64_CONTEXT_SIZE],
    /// How many of [`HostConfig::ram`] are the machine's RAM; 0: the default 256 MiB machine
    /// ([`DEFAULT_RAM_AARCH64`], [`DEFAULT_RAM_X86_64`]).
    pub ram_count: u64,
    /// The machine's RAM as QEMU lays it out for its `-m` (guest-physical start and end of
    /// each range, ascending, page aligned): everything the host maps for the guest except
    /// its own 16 MiB ([`HOST_RAM_AARCH64`], [`HOST_RAM_X86_64`]), which must lie inside.
    pub ram: [[u64; 2]; RAM_RANGES_MAX],
}

/// Room for the trace file's path, its NUL included.
pub const TRACE_PATH_MAX: usize = 256;

impl Default for HostConfig {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

impl HostConfig {
    pub fn new() -> Self {
        Self {
            magic: MAGIC,
            ..Self::default()
        }
    }

    pub fn with_vp_count(mut self, vp_count: u32) -> Self {
        self.vp_count = vp_count.into();
        self
    }

    /// The VP count the runner gave (1 without one).
    pub fn vps(&self) -> u64 {
        self.vp_count.max(1)
    }

    pub fn with_live_vtl0(mut self, reset_pc: u64) -> Self {
        self.flags |= FLAG_LIVE_VTL0;
        self.vtl0_pc = reset_pc;
        self
    }

    /// The page as the host reads it: None without the magic (no page was loaded).
    pub fn parse(page: &[u8]) -> Option<Self> {
        let (config, _) = Self::read_from_prefix(page).ok()?;
        (config.magic == MAGIC).then_some(config)
    }

    /// Sets the trace file's path; false if it does not fit (or holds a NUL).
    pub fn with_trace_path(mut self, path: &[u8]) -> Option<Self> {
        if path.len() >= TRACE_PATH_MAX || path.contains(&0) {
            return None;
        }
        self.trace_path = [0; TRACE_PATH_MAX];
        self.trace_path[..path.len()].copy_from_slice(path);
        Some(self)
    }

    /// The trace file's path, without its NUL (None: no trace file, or no NUL in the field).
    pub fn trace_path(&self) -> Option<&[u8]> {
        let len = self.trace_path.iter().position(|&b| b == 0)?;
        (len > 0).then(|| &self.trace_path[..len])
    }

    /// x86_64: enter the paravisor with this `HvX64InitialVpContext` (its bytes).
    pub fn with_x64_context(mut self, context: &[u8; X64_CONTEXT_SIZE]) -> Self {
        self.flags |= FLAG_X64_CONTEXT;
        self.vtl2_x64 = *context;
        self
    }

    /// The x64 VTL2 context the runner gave, if any.
    pub fn x64_context(&self) -> Option<&[u8; X64_CONTEXT_SIZE]> {
        (self.flags & FLAG_X64_CONTEXT != 0).then_some(&self.vtl2_x64)
    }

    pub fn live_vtl0(&self) -> bool {
        self.flags & FLAG_LIVE_VTL0 != 0
    }

    pub fn count_vtl2(&self) -> bool {
        self.flags & FLAG_COUNT_VTL2 != 0
    }

    /// Describes the machine's RAM (see [`HostConfig::ram`]); None if there are more ranges
    /// than [`RAM_RANGES_MAX`].
    pub fn with_ram(mut self, ranges: &[Range<u64>]) -> Option<Self> {
        if ranges.len() > RAM_RANGES_MAX {
            return None;
        }
        self.ram = [[0; 2]; RAM_RANGES_MAX];
        for (slot, r) in self.ram.iter_mut().zip(ranges) {
            *slot = [r.start, r.end];
        }
        self.ram_count = ranges.len() as u64;
        Some(self)
    }

    /// The machine's RAM, checked (ascending, apart, page aligned, not empty); `default` (the
    /// arch's 256 MiB machine) when the runner gave none.
    pub fn machine_ram(&self, default: Range<u64>) -> Result<Ram, RamError> {
        if self.ram_count == 0 {
            return Ok(Ram::one(default));
        }
        let count = usize::try_from(self.ram_count)
            .ok()
            .filter(|&n| n <= RAM_RANGES_MAX)
            .ok_or(RamError::TooMany(self.ram_count))?;
        let mut ram = Ram::default();
        for &[start, end] in &self.ram[..count] {
            ram.push(start..end)?;
        }
        Ok(ram)
    }

    /// Flag bits this host does not know: the runner is newer than the host.
    pub fn unknown_flags(&self) -> u64 {
        self.flags & !(FLAG_LIVE_VTL0 | FLAG_COUNT_VTL2 | FLAG_X64_CONTEXT)
    }
}

/// Page-aligned, ascending, disjoint RAM ranges (at most [`RAM_RANGES_MAX`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ram {
    ranges: [Range<u64>; RAM_RANGES_MAX],
    count: usize,
}

/// Why a RAM layout was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RamError {
    /// More ranges than [`RAM_RANGES_MAX`].
    TooMany(u64),
    /// Empty, not page aligned, or not above the previous range.
    BadRange(Range<u64>),
    /// The host's own memory does not lie inside one RAM range.
    HostOutside(Range<u64>),
}

impl core::fmt::Display for RamError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RamError::TooMany(n) => write!(f, "{n} RAM ranges, more than {RAM_RANGES_MAX}"),
            RamError::BadRange(r) => write!(
                f,
                "RAM range {:#x}..{:#x} is empty, not page aligned or not above the one before",
                r.start, r.end
            ),
            RamError::HostOutside(r) => write!(
                f,
                "the host's own memory {:#x}..{:#x} is not inside the machine's RAM (too \
                 little -m?)",
                r.start, r.end
            ),
        }
    }
}

const PAGE: u64 = 4096;

/// `0x0..0xf000000, 0x10000000..0x80000000`.
impl core::fmt::Display for Ram {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, r) in self.ranges().iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{:#x}..{:#x}", r.start, r.end)?;
        }
        Ok(())
    }
}

impl Ram {
    fn one(r: Range<u64>) -> Self {
        let mut ram = Ram::default();
        ram.ranges[0] = r;
        ram.count = 1;
        ram
    }

    fn push(&mut self, r: Range<u64>) -> Result<(), RamError> {
        let after_last = self.ranges().last().is_none_or(|last| last.end <= r.start);
        if r.start >= r.end
            || !r.start.is_multiple_of(PAGE)
            || !r.end.is_multiple_of(PAGE)
            || !after_last
        {
            return Err(RamError::BadRange(r));
        }
        if self.count == RAM_RANGES_MAX {
            return Err(RamError::TooMany(self.count as u64 + 1));
        }
        self.ranges[self.count] = r;
        self.count += 1;
        Ok(())
    }

    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges[..self.count]
    }

    /// The RAM without `hole`, which must lie inside one range (the host's own memory): the
    /// guest's RAM. A range it splits becomes two (the parts that are not empty).
    pub fn without(&self, hole: &Range<u64>) -> Result<Ram, RamError> {
        if !self
            .ranges()
            .iter()
            .any(|r| r.start <= hole.start && hole.end <= r.end)
        {
            return Err(RamError::HostOutside(hole.clone()));
        }
        let mut out = Ram::default();
        for r in self.ranges() {
            for part in [r.start..r.end.min(hole.start), r.start.max(hole.end)..r.end] {
                if part.start < part.end {
                    out.push(part)?;
                }
            }
        }
        Ok(out)
    }

    /// arm64: the guest's RAM, the machine's without the host's own 16 MiB.
    pub fn guest_aarch64(&self) -> Result<Ram, RamError> {
        self.without(&HOST_RAM_AARCH64)
    }

    /// x86_64: the guest's RAM, the machine's without the host's own 16 MiB and its AP
    /// trampoline's page.
    pub fn guest_x86_64(&self) -> Result<Ram, RamError> {
        self.without(&HOST_RAM_X86_64)?
            .without(&(AP_TRAMPOLINE_X86_64..AP_TRAMPOLINE_X86_64 + PAGE))
    }

    /// Whether `gpa..gpa + len` lies inside one range (and does not wrap).
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        gpa.checked_add(len)
            .is_some_and(|end| self.ranges().iter().any(|r| r.start <= gpa && end <= r.end))
    }

    /// The first address past the last range (0 without any).
    pub fn end(&self) -> u64 {
        self.ranges().last().map_or(0, |r| r.end)
    }
}

#[cfg(test)]
// One RAM range is a slice of one range here, not a mistaken `start..end` list.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn round_trip_and_no_page() {
        let config = HostConfig::new().with_live_vtl0(0x4800_0000);
        let bytes = config.as_bytes();
        assert_eq!(&bytes[..8], b"INVMCFG1");
        assert_eq!(HostConfig::parse(bytes), Some(config));
        assert!(config.live_vtl0());
        assert_eq!(HostConfig::parse(&[0; 4096]), None);
        assert_eq!(HostConfig::parse(&bytes[..8]), None, "short");
        let odd = HostConfig {
            flags: 0b1011,
            ..HostConfig::new()
        };
        assert_eq!(odd.unknown_flags(), 0b1000);
        assert!(odd.count_vtl2());
        assert_eq!(HostConfig::new().x64_context(), None);
        let ctx = [0x5a; X64_CONTEXT_SIZE];
        let x64 = HostConfig::new().with_x64_context(&ctx);
        assert_eq!(x64.x64_context(), Some(&ctx));
        assert_eq!(HostConfig::parse(x64.as_bytes()), Some(x64));
        assert!(size_of::<HostConfig>() <= 4096);
        let traced = HostConfig::new().with_trace_path(b"/tmp/t.bin").unwrap();
        assert_eq!(traced.trace_path(), Some(&b"/tmp/t.bin"[..]));
        assert_eq!(HostConfig::new().trace_path(), None);
        assert_eq!(HostConfig::new().with_trace_path(&[b'a'; 256]), None);
        let mut unterminated = HostConfig::new();
        unterminated.trace_path = [b'a'; TRACE_PATH_MAX];
        assert_eq!(unterminated.trace_path(), None);
    }

    #[test]
    fn the_machines_ram_and_the_guests() {
        const G: u64 = 1 << 30;
        let default = HostConfig::new().machine_ram(DEFAULT_RAM_AARCH64).unwrap();
        assert_eq!(default.ranges(), [DEFAULT_RAM_AARCH64]);
        let guest = default.guest_aarch64().unwrap();
        assert_eq!(guest.ranges(), [0x4000_0000..0x4f00_0000]);
        let big = HostConfig::new()
            .with_ram(&[0..2 * G, 4 * G..8 * G + (3 << 20)])
            .unwrap();
        assert_eq!(HostConfig::parse(big.as_bytes()), Some(big));
        let guest = big
            .machine_ram(DEFAULT_RAM_X86_64)
            .unwrap()
            .guest_x86_64()
            .unwrap();
        assert_eq!(
            guest.ranges(),
            [
                0..0x9_e000,
                0x9_f000..0x0f00_0000,
                0x1000_0000..2 * G,
                4 * G..8 * G + (3 << 20)
            ]
        );
        assert!(guest.contains(8 * G + (3 << 20) - 4096, 4096));
        assert!(!guest.contains(0x0eff_f000, 0x2000), "into the host's");
        assert!(!guest.contains(u64::MAX, 2));
        assert_eq!(guest.end(), 8 * G + (3 << 20));
        assert_eq!(
            std::format!("{guest}"),
            "0x0..0x9e000, 0x9f000..0xf000000, 0x10000000..0x80000000, 0x100000000..0x200300000"
        );
        let small = HostConfig::new().with_ram(&[G..G + (128 << 20)]).unwrap();
        let e = small
            .machine_ram(DEFAULT_RAM_AARCH64)
            .unwrap()
            .guest_aarch64()
            .unwrap_err();
        assert_eq!(e, RamError::HostOutside(HOST_RAM_AARCH64));
        for bad in [[0x1000, 0x1000], [0x1000, 0x1800], [0x2000, 0x3000]] {
            let mut c = HostConfig::new().with_ram(&[0x1000..0x3000]).unwrap();
            c.ram[1] = bad;
            c.ram_count = 2;
            assert_eq!(
                c.machine_ram(0..0),
                Err(RamError::BadRange(bad[0]..bad[1])),
                "{bad:x?}"
            );
        }
        let mut many = HostConfig::new();
        many.ram_count = RAM_RANGES_MAX as u64 + 1;
        assert_eq!(many.machine_ram(0..0), Err(RamError::TooMany(9)));
        let nine: [Range<u64>; 9] =
            core::array::from_fn(|i| i as u64 * 4096..(i as u64 + 1) * 4096);
        assert!(HostConfig::new().with_ram(&nine).is_none());
    }
}
