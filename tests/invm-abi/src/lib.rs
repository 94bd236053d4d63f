//! The runner's side of the in-VM mock Hyper-V (`tests/invm`): a configuration page QEMU's
//! generic loader places at [`CONFIG_GPA_AARCH64`] / [`CONFIG_GPA_X86_64`] before the host starts
//! (`-device loader,file=CONFIG,addr=...,force-raw=on`). No page (all zero, no magic) is the
//! default: the paravisor's ELF entry, no VTL0, and the run ends at the paravisor's first
//! VtlReturn.
#![no_std]
#![forbid(unsafe_code)]

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// The page's GPA on arm64: the last page of a 256 MiB QEMU virt machine, in the host's own
/// 16 MiB (never guest RAM; the host's image ends below it).
pub const CONFIG_GPA_AARCH64: u64 = 0x4fff_f000;

/// The guest's RAM on arm64 (QEMU virt, 256 MiB): everything below the host's 16 MiB. The
/// paravisor's device tree and IGVM memory map say exactly this much.
pub const GUEST_RAM_AARCH64: core::ops::Range<u64> = 0x4000_0000..0x4f00_0000;

/// Where the runner places the scenario (`hvmodel::Scenario::encode`'s bytes) on arm64: below
/// the configuration page, in the host's own memory; [`HostConfig::scenario_len`] bytes.
pub const SCENARIO_GPA_AARCH64: u64 = 0x4ffe_0000;
/// Room for the scenario's bytes (up to the configuration page), on both arches.
pub const SCENARIO_MAX: u64 = CONFIG_GPA_AARCH64 - SCENARIO_GPA_AARCH64;

/// The page's GPA on x86_64: in the host's own 16 MiB of a 256 MiB q35 machine (never guest
/// RAM), below the last MiB where SeaBIOS keeps its high tables (the runner's loader writes
/// the page at reset, before SeaBIOS runs), above the host's image (invm-x86_64.ld).
pub const CONFIG_GPA_X86_64: u64 = 0x0fef_f000;

/// Where the runner places the scenario on x86_64: right below the configuration page, above
/// the host's image (invm-x86_64.ld), [`SCENARIO_MAX`] bytes of room.
pub const SCENARIO_GPA_X86_64: u64 = CONFIG_GPA_X86_64 - SCENARIO_MAX;

/// The guest's RAM on x86_64 (q35, 256 MiB): everything below the host's 16 MiB, as the host's
/// nested tables map it. The IGVM memory map leaves out the legacy 0xA0000..0x100000 window.
pub const GUEST_RAM_X86_64: core::ops::Range<u64> = 0..0x0f00_0000;

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

    /// Flag bits this host does not know: the runner is newer than the host.
    pub fn unknown_flags(&self) -> u64 {
        self.flags & !(FLAG_LIVE_VTL0 | FLAG_COUNT_VTL2 | FLAG_X64_CONTEXT)
    }
}

#[cfg(test)]
mod tests {
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
}
