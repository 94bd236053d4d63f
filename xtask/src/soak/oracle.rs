//! The soak's oracle: what VTL0 and the host must see for each generated call, written from the
//! TLFS, the scenario the soak boots (the mock's machine layout, its SynIC ports and devices),
//! the relay configuration it passes on the command line and the image's extent from the ELF.
//! Nothing here comes from the paravisor: not its memory map, its tables or its log.
//!
//! Where the TLFS fixes no order between two broken rules (a misaligned list and an unmapped
//! connection), the oracle accepts the status of either; where the platform firmware's memory
//! reservations are not part of the scenario (SeaBIOS's e820 holes), it accepts both outcomes.

use hvdef::{Control, HvStatus, HypercallCode, HV_PAGE_SIZE};
use mockhv::qemu::Arch;
use std::ops::Range;

const G: u64 = 1 << 30;

/// Whether VTL0 owns a byte range, as far as the scenario says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Vtl0,
    NotVtl0,
    /// Inside the machine's RAM but possibly reserved by the platform firmware (x86: the EBDA
    /// and BIOS area below 1 MiB, SeaBIOS's tables at the top of low RAM), which the loader then
    /// does not report as RAM: either outcome is right.
    Uncertain,
}

/// VTL0's memory as the scenario defines it.
pub struct Vtl0Map {
    /// Certainly VTL0's: the machine's RAM, minus the firmware band, inside what the boot page
    /// tables map as Normal memory, minus the image.
    pub certain: Vec<Range<u64>>,
    pub uncertain: Vec<Range<u64>>,
}

fn subtract(ranges: Vec<Range<u64>>, cut: &Range<u64>) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    for r in ranges {
        if cut.end <= r.start || r.end <= cut.start {
            out.push(r);
            continue;
        }
        if r.start < cut.start {
            out.push(r.start..cut.start);
        }
        if cut.end < r.end {
            out.push(cut.end..r.end);
        }
    }
    out
}

fn intersect(ranges: &[Range<u64>], with: &Range<u64>) -> Vec<Range<u64>> {
    ranges
        .iter()
        .filter_map(|r| {
            let (s, e) = (r.start.max(with.start), r.end.min(with.end));
            (s < e).then_some(s..e)
        })
        .collect()
}

impl Vtl0Map {
    /// `ram`: the mock machine's RAM ([`Arch::ram_ranges`]); `image`: `__image_start..
    /// __image_end`. What the boot page tables map (docs/ARCHITECTURE.md "Page tables"): x86
    /// 0x1000..4 GiB (page 0 is a null pointer), arm64 1..4 GiB (block 0 is Device memory);
    /// `above_4g` counts RAM above 4 GiB as mapped too (issue 9's page-table work).
    pub fn new(arch: Arch, ram: &[Range<u64>], image: &Range<u64>, above_4g: bool) -> Vtl0Map {
        let top = if above_4g { u64::MAX } else { 4 * G };
        let mapped = match arch {
            Arch::X86_64 => 0x1000..top,
            Arch::Aarch64 => G..top,
        };
        let mut band: Vec<Range<u64>> = Vec::new();
        if arch == Arch::X86_64 {
            // The EBDA, VGA window and BIOS area; and SeaBIOS's reservation at the top of low
            // RAM (tens of KiB; 1 MiB taken to be safe).
            band.push(0x9_F000..0x10_0000);
            if let Some(low) = ram.iter().find(|r| r.start == 0) {
                band.push(low.end.saturating_sub(1 << 20)..low.end);
            }
        }
        let mut certain = intersect(ram, &mapped);
        for cut in band.iter().chain([image]) {
            certain = subtract(certain, cut);
        }
        let mut uncertain = Vec::new();
        for b in &band {
            uncertain.extend(subtract(intersect(ram, b), image));
        }
        let uncertain = uncertain
            .iter()
            .flat_map(|r| intersect(std::slice::from_ref(r), &mapped))
            .collect();
        Vtl0Map { certain, uncertain }
    }

    pub fn owner(&self, gpa: u64, len: u64) -> Owner {
        let Some(end) = gpa.checked_add(len.max(1)) else {
            return Owner::NotVtl0;
        };
        let inside = |rs: &[Range<u64>]| rs.iter().any(|r| r.start <= gpa && end <= r.end);
        let touches = |rs: &[Range<u64>]| rs.iter().any(|r| r.start < end && gpa < r.end);
        if inside(&self.certain) {
            Owner::Vtl0
        } else if touches(&self.uncertain) {
            Owner::Uncertain
        } else {
            Owner::NotVtl0
        }
    }

    /// The last 8-aligned GPA with room for `len` bytes in the same page, at the top of the
    /// highest certain range.
    pub fn top(&self, len: u64) -> u64 {
        let end = self.certain.iter().map(|r| r.end).max().unwrap_or(0);
        (end - len.max(8)) & !7
    }
}

/// One relay the host must receive: code, fast bit and variable-header size of the control
/// word (the nested bit is the host's: see [`HostCall::control`]), and the input byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostCall {
    pub code: HypercallCode,
    pub fast: bool,
    pub var: u16,
    pub input: Vec<u8>,
}

impl HostCall {
    /// The whole control word: no rep fields, no reserved bits; HV_HYPERCALL_NESTED exactly
    /// for the SynIC calls a nested host's L0 owns (TLFS nested-virtualization.md).
    pub fn control(&self, nested: bool) -> u64 {
        let synic = matches!(
            self.code,
            HypercallCode::POST_MESSAGE | HypercallCode::SIGNAL_EVENT
        );
        Control::new()
            .with_code(self.code)
            .with_fast(self.fast)
            .with_variable_header_size(self.var)
            .with_nested(nested && synic)
            .into_bits()
    }
}

/// What the host must receive for one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// Nothing.
    None,
    /// Exactly this, once.
    Required(HostCall),
    /// This once, or nothing (the paravisor may screen what the host would refuse anyway).
    Optional(HostCall),
    /// Not predicted (random control words): only the shape of any relay is checked.
    Unchecked,
}

/// What one call must produce.
#[derive(Clone, Debug)]
pub struct Expect {
    /// The final status VTL0 may see (the whole result word: no reps completed); empty = any
    /// status the TLFS allows for a proxied call.
    pub statuses: Vec<HvStatus>,
    pub host: Host,
    /// The bytes VTL0 must find in the call's output range afterwards (see
    /// `Vtl0Call::with_output`).
    pub output: Option<Vec<u8>>,
}

impl Expect {
    pub fn unchecked() -> Expect {
        Expect {
            statuses: Vec::new(),
            host: Host::Unchecked,
            output: None,
        }
    }

    pub fn exactly(status: HvStatus, host: Host) -> Expect {
        Expect {
            statuses: vec![status],
            host,
            output: None,
        }
    }

    /// `self` for a call whose parameter lists are `lists` (GPA, length): a list that breaks a
    /// TLFS rule makes its status possible (and no relay happen); an uncertain one makes
    /// ACCESS_DENIED possible and the relay optional.
    pub fn with_lists(mut self, map: &Vtl0Map, lists: &[(u64, u64)]) -> Expect {
        let mut broken = Vec::new();
        let mut uncertain = false;
        for &(gpa, len) in lists.iter().filter(|l| l.1 != 0) {
            // TLFS hypercall-interface.md: lists are 8-byte aligned and within one page
            // (INVALID_ALIGNMENT); VTL0 may only name its own memory (the paravisor's
            // ACCESS_DENIED, as for VTL0 buffers it does not map).
            if gpa % 8 != 0 || gpa % HV_PAGE_SIZE + len > HV_PAGE_SIZE {
                broken.push(HvStatus::INVALID_ALIGNMENT);
            }
            match map.owner(gpa, len) {
                Owner::Vtl0 => {}
                Owner::NotVtl0 => broken.push(HvStatus::ACCESS_DENIED),
                Owner::Uncertain => uncertain = true,
            }
        }
        if !broken.is_empty() {
            broken.dedup();
            // A code the paravisor does not serve may be answered before its lists are looked
            // at.
            if self.statuses.contains(&HvStatus::INVALID_HYPERCALL_CODE)
                || self.statuses.contains(&HvStatus::ACCESS_DENIED)
            {
                broken.extend(self.statuses.iter().copied());
            }
            self.statuses = broken;
            self.host = Host::None;
            self.output = None;
        } else if uncertain {
            if !self.statuses.is_empty() && !self.statuses.contains(&HvStatus::ACCESS_DENIED) {
                self.statuses.push(HvStatus::ACCESS_DENIED);
            }
            if let Host::Required(h) = self.host {
                self.host = Host::Optional(h);
            }
            self.output = None;
        }
        self
    }
}

/// The relay the soak configures (`pv.relay`): VTL0's connection c (0..8) is the host's
/// 0x100 + c, so a relay that skips the rewrite is seen.
pub fn host_connection(vtl0: u32, known: u32) -> Option<u32> {
    (vtl0 < known).then_some(0x100 + vtl0)
}

/// A SynIC call (PostMessage / SignalEvent) to VTL0 connection `connection` whose input is
/// otherwise valid (`valid`) or broken in a field the TLFS gives INVALID_PARAMETER for: `input`
/// is VTL0's, the host's is the same with the connection id rewritten.
pub fn synic(
    code: HypercallCode,
    fast: bool,
    connection: u32,
    known: u32,
    valid: bool,
    input: &[u8],
) -> Expect {
    let relayed = host_connection(connection, known).map(|host| {
        let mut bytes = input.to_vec();
        bytes[..4].copy_from_slice(&host.to_le_bytes());
        HostCall {
            code,
            fast,
            var: 0,
            input: bytes,
        }
    });
    match (relayed, valid) {
        (Some(h), true) => Expect::exactly(HvStatus::SUCCESS, Host::Required(h)),
        (Some(h), false) => Expect::exactly(HvStatus::INVALID_PARAMETER, Host::Optional(h)),
        (None, true) => Expect::exactly(HvStatus::INVALID_CONNECTION_ID, Host::None),
        (None, false) => Expect {
            statuses: vec![HvStatus::INVALID_CONNECTION_ID, HvStatus::INVALID_PARAMETER],
            host: Host::None,
            output: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_is_ram_inside_the_mapping_minus_the_image_and_the_firmware_band() {
        let image = 0x10_0000..0x20_0000;
        let ram = Arch::X86_64.ram_ranges(256);
        let m = Vtl0Map::new(Arch::X86_64, &ram, &image, false);
        assert_eq!(m.certain, [0x1000..0x9_F000, 0x20_0000..0x0FF0_0000]);
        assert_eq!(m.owner(0x800, 8), Owner::NotVtl0, "page 0");
        assert_eq!(
            m.owner(0x1F_FFF8, 16),
            Owner::NotVtl0,
            "straddles the image"
        );
        assert_eq!(m.owner(0xA_0000, 8), Owner::Uncertain);
        assert_eq!(m.owner(0x0FFF_FFF8, 8), Owner::Uncertain);
        assert_eq!(m.owner(0x1000_0000, 8), Owner::NotVtl0);
        let arm = Vtl0Map::new(
            Arch::Aarch64,
            &Arch::Aarch64.ram_ranges(4096),
            &image,
            false,
        );
        assert_eq!(
            arm.certain,
            vec![Range {
                start: G,
                end: 4 * G
            }]
        );
        let above = Vtl0Map::new(Arch::Aarch64, &Arch::Aarch64.ram_ranges(4096), &image, true);
        assert_eq!(
            above.certain,
            vec![Range {
                start: G,
                end: 5 * G
            }]
        );
    }

    #[test]
    fn broken_lists_replace_the_outcome() {
        let image = 0x10_0000..0x20_0000;
        let m = Vtl0Map::new(Arch::X86_64, &Arch::X86_64.ram_ranges(256), &image, false);
        let ok = || Expect::exactly(HvStatus::SUCCESS, Host::None);
        assert_eq!(
            ok().with_lists(&m, &[(0x30_0000, 16)]).statuses,
            [HvStatus::SUCCESS]
        );
        assert_eq!(
            ok().with_lists(&m, &[(0x30_0004, 16)]).statuses,
            [HvStatus::INVALID_ALIGNMENT]
        );
        assert_eq!(
            ok().with_lists(&m, &[(0x30_0FF8, 16)]).statuses,
            [HvStatus::INVALID_ALIGNMENT]
        );
        assert_eq!(
            ok().with_lists(&m, &[(0x10_0000, 16)]).statuses,
            [HvStatus::ACCESS_DENIED]
        );
        assert_eq!(ok().with_lists(&m, &[(0, 0)]).statuses, [HvStatus::SUCCESS]);
    }
}
