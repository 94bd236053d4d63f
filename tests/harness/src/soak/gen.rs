//! The soak's call generator: from a seeded [`Rng`], the VTL0 test kernel's entries
//! ([`Plan`]s) and what each must produce, from the TLFS, the boot's configuration and the
//! ELF (the statuses and relays from `oracle.rs`), never from the paravisor's behaviour.
//!
//! What the kernel can express: a hypercall with given input bytes (memory-based: the kernel's
//! own, page-aligned input page; fast: its register pool) and its own loads, stores and
//! fetches. So the calls here are the ones the in-VM host hands the paravisor (Hyper-V's
//! UnknownSynicConnection and RetargetInterruptWithUnknownDeviceId intercepts: PostMessage and
//! SignalEvent to a connection the host does not know, RetargetDeviceInterrupt for a device it
//! does not know), plus random control words on
//! them, plus VTL0's accesses to its own page and to VTL2's image, plus hostile parameter
//! lists (`vtl0::FLAG_GPAS`: a misaligned or page-crossing input, an input or output on VTL2's
//! image), which the hypervisor answers (INVALID_ALIGNMENT) or stops (a GPA intercept, and VTL0
//! takes the memory fault at the call); under the host that reflects everything
//! ([`Boot::ReflectAll`]) also lists at 0, in the host's memory, on MMIO, far beyond RAM and at
//! the top of the address space, which the paravisor refuses (ACCESS_DENIED) without touching
//! them.
//!
//! The ELF boots run on a machine of 6 GiB + 3 MiB, and now and then a memory-based call's
//! input is placed (the kernel's place entry) on the first page above 4 GiB, the first of the
//! last 3 MiB or the last page of RAM instead of the kernel's input page: the paravisor must map
//! all of VTL0's RAM and read its bytes there (the relays check them byte for byte). The host's
//! own ports are its scenario's (`Scenario::for_arch`), which the generator avoids.
//!
//! Here the calls and accesses of every boot; `hostile.rs` the broken parameter lists,
//! `reflected.rs` the calls under the host that reflects everything.

mod hostile;
mod reflected;

#[cfg(doc)]
use super::boots::Boot;
use super::plan::{Entry, Plan, Want};
use super::{oracle, Rng};
use crate::live;
use e2e::post_message;
use hvdef::{Control, HvStatus, HypercallCode, HV_PARTITION_ID_SELF};
use mockhv::model::Vtl0Access;
use mockhv::qemu::Arch;
use oracle::Host;
use std::collections::BTreeSet;
use std::ops::Range;

/// Connections the generator picks from (0..this, minus the host's own ports).
const CONNECTIONS: u64 = 64;

/// Builds an access entry from (GPA, width, value, the fault it must take).
type MakeEntry = fn(u64, u32, u64, u128) -> Entry;

pub(super) struct Gen {
    pub(super) arch: Arch,
    pub(super) rng: Rng,
    pub(super) image: Range<u64>,
    /// The host's SynIC ports (it serves calls to them itself).
    pub(super) host_ports: BTreeSet<u32>,
    /// VTL0 connections below this are relayed (`pv.relay=`, an ELF boot; 0: an IGVM boot, no
    /// relay table).
    pub(super) relayed: u32,
    /// The host reflects every hypercall to VTL2 (see [`Boot::ReflectAll`]).
    pub(super) reflect_all: bool,
    /// Pages of VTL0 RAM above 4 GiB and at the very top of RAM (ELF boots on a machine of
    /// [`HIGH_MEMORY_MB`]; empty: the default machine) where a PostMessage's input is placed
    /// now and then: the paravisor must map them and read VTL0's bytes there.
    pub(super) high: Vec<u64>,
}

/// The relay boots' machine: 6 GiB + 3 MiB, so RAM runs past 4 GiB (q35: 2 GiB low and the rest
/// from 4 GiB; virt: from 1 GiB) and its top needs every page size (`kernel_memory`).
pub(super) const HIGH_MEMORY_MB: u32 = 6 * 1024 + 3;

/// The high pages of [`Gen::high`] for `arch`'s machine of [`HIGH_MEMORY_MB`] (QEMU's
/// documented layouts, `Arch::ram_ranges`): the first page above 4 GiB, the first of the last
/// 3 MiB, the last page.
pub(super) fn high_pages(arch: Arch) -> Vec<u64> {
    let ram = arch.ram_ranges(HIGH_MEMORY_MB);
    let top = ram.iter().map(|r| r.end).max().unwrap_or(0);
    vec![4 << 30, top - (3 << 20), top - 0x1000]
}

/// The codes a [`Boot::ReflectAll`] host reflects and its random control words use: every
/// hypercall code the TLFS defines is below 0x200, every extended one in 0x8001..0x8100 (the
/// whole u16 space would not fit the in-VM host's scenario page).
pub(super) const REFLECTED_CODES: [Range<u16>; 2] = [0..0x200, 0x8000..0x8100];

fn code(c: HypercallCode) -> Control {
    Control::new().with_code(c)
}

impl Gen {
    fn connection(&mut self) -> u32 {
        loop {
            let c = self.rng.below(CONNECTIONS) as u32;
            if !self.host_ports.contains(&c) {
                return c;
            }
        }
    }

    /// `call`, a memory-based call whose input is `input`, now and then with its input placed
    /// on a high page ([`Gen::high`]) instead of the kernel's input page: the place entry, then
    /// the call naming that GPA.
    fn maybe_high(&mut self, mut call: Plan) -> Vec<Plan> {
        let Entry::Hypercall {
            control,
            input,
            gpas: gpas @ None,
            ..
        } = &mut call.entry
        else {
            return vec![call];
        };
        let fast = Control::from_bits(*control).fast();
        if fast || input.is_empty() || self.high.is_empty() || !self.rng.percent(15) {
            return vec![call];
        }
        let page = self.rng.pick(&self.high);
        let gpa = page + 8 * self.rng.below((0x1000 - input.len() as u64) / 8 + 1);
        let bytes = std::mem::take(input);
        *gpas = Some((gpa, live::proto(self.arch).output_page()));
        call.what = format!("{}, input at {gpa:#x}", call.what);
        call.follows = true;
        vec![
            Plan {
                entry: Entry::Place { gpa, bytes },
                what: format!("the input placed at {gpa:#x}"),
                follows: false,
            },
            call,
        ]
    }

    /// A connection neither the host nor the relay knows.
    fn unrelayed_connection(&mut self) -> u32 {
        loop {
            let c = self.connection();
            if c >= self.relayed {
                return c;
            }
        }
    }

    /// The arch's `ret` and its width.
    fn ret(&self) -> (u32, u64) {
        match self.arch {
            Arch::X86_64 => (1, 0xc3),
            Arch::Aarch64 => (4, 0xd65f_03c0),
        }
    }

    /// One or more entries (a store and the load or fetch of what it stored come together).
    pub(super) fn next(&mut self) -> Vec<Plan> {
        let roll = self.rng.below(100);
        if self.reflect_all && roll < 75 {
            let plan = self.reflected();
            return self.maybe_high(plan);
        }
        let call = Plan::hypercall;
        if roll < 35 {
            // PostMessage to a connection the host does not know: intercepted; the paravisor
            // relays nothing (empty relay table), so INVALID_CONNECTION_ID, or
            // INVALID_PARAMETER for a broken message.
            let connection = self.connection();
            let (m, how, valid) = self.message(connection);
            let expect = oracle::synic(
                HypercallCode::POST_MESSAGE,
                false,
                connection,
                self.relayed,
                valid,
                &m,
            );
            let plan = call(
                code(HypercallCode::POST_MESSAGE),
                m,
                Want::Exactly(expect.statuses),
                valid,
                expect.host,
                format!("PostMessage to connection {connection}, {how}"),
            );
            return self.maybe_high(plan);
        }
        if roll < 55 {
            let connection = u64::from(self.connection());
            let (word, flag, reserved, valid) = self.signal_word(connection);
            let fast = self.rng.percent(60);
            let expect = oracle::synic(
                HypercallCode::SIGNAL_EVENT,
                fast,
                connection as u32,
                self.relayed,
                valid,
                &word.to_le_bytes(),
            );
            return vec![call(
                code(HypercallCode::SIGNAL_EVENT).with_fast(fast),
                word.to_le_bytes().to_vec(),
                Want::Exactly(expect.statuses),
                valid,
                expect.host,
                format!("SignalEvent (fast {fast}) connection {connection} flag {flag} rsvd {reserved:#x}"),
            )];
        }
        if roll < 65 {
            // RetargetDeviceInterrupt for a device nobody owns (no `pv.devices=`): the host does
            // not know it either, so it is intercepted and VTL0 gets INVALID_DEVICE_ID.
            let device = 0x30 + self.rng.below(0x1000);
            let vector = 0x20 + self.rng.below(0xD0) as u32;
            let mut b = Vec::with_capacity(56);
            b.extend(HV_PARTITION_ID_SELF.to_le_bytes());
            b.extend(device.to_le_bytes());
            b.extend(1u32.to_le_bytes()); // MSI
            b.extend(0u32.to_le_bytes());
            b.extend((0xFEE0_0000_0000_0041u64 | (self.rng.below(0x100) << 44)).to_le_bytes());
            b.extend(0u64.to_le_bytes());
            b.extend(vector.to_le_bytes());
            b.extend(0u32.to_le_bytes());
            b.extend((1 + self.rng.below(u64::MAX - 1)).to_le_bytes());
            let fast = self.rng.percent(30);
            return vec![call(
                code(HypercallCode::RETARGET_DEVICE_INTERRUPT).with_fast(fast),
                b,
                Want::Exactly(vec![HvStatus::INVALID_DEVICE_ID]),
                true,
                Host::None,
                format!("RetargetDeviceInterrupt device {device:#x} (fast {fast})"),
            )];
        }
        if roll < 75 {
            // A random control word around the SynIC codes (rep fields, variable header,
            // reserved bits), to an unknown connection: any status a proxied call may get.
            let c = self
                .rng
                .pick(&[HypercallCode::POST_MESSAGE, HypercallCode::SIGNAL_EVENT]);
            let random = self.rng.next() & !0xFFFF & !(1 << 16);
            let control = Control::from_bits(random).with_code(c);
            // A connection the relay does not map: whether a relay would happen depends on the
            // control word's checks, so none may.
            let input = if c == HypercallCode::POST_MESSAGE {
                post_message(self.unrelayed_connection())
            } else {
                u64::from(self.unrelayed_connection())
                    .to_le_bytes()
                    .to_vec()
            };
            return vec![Plan {
                entry: Entry::Hypercall {
                    control: control.into_bits(),
                    input,
                    want: Want::Allowed,
                    // Whether the host hands it on depends on its control-word checks.
                    intercepted: false,
                    gpas: None,
                    host: Host::None,
                    output: Vec::new(),
                },
                what: format!("{c:?} with control word {:#x}", control.into_bits()),
                follows: false,
            }];
        }
        if roll < 82 {
            return vec![self.hostile()];
        }
        // VTL0's own loads, stores and fetches.
        let scratch = live::proto(self.arch).scratch_page();
        let width = self.rng.pick(&[1u32, 2, 4, 8]);
        let image = self.image.clone();
        match self.rng.below(6) {
            0 | 1 => {
                let gpa = scratch + u64::from(width) * self.rng.below(4096 / u64::from(width));
                let value = self.rng.next();
                let mask = if width == 8 {
                    u64::MAX
                } else {
                    (1 << (8 * width)) - 1
                };
                vec![
                    Plan {
                        entry: Entry::Write {
                            gpa,
                            width,
                            value,
                            fault: None,
                        },
                        what: format!("store of {width} at {gpa:#x}, VTL0's page"),
                        follows: false,
                    },
                    Plan {
                        entry: Entry::Read {
                            gpa,
                            width,
                            value: Some(value & mask),
                            fault: None,
                        },
                        what: format!("load of {width} at {gpa:#x}, VTL0's page"),
                        follows: true,
                    },
                ]
            }
            2 => {
                let (w, ret) = self.ret();
                let gpa = scratch + 8 * self.rng.below(512);
                vec![
                    Plan {
                        entry: Entry::Write {
                            gpa,
                            width: w,
                            value: ret,
                            fault: None,
                        },
                        what: format!("store of a ret at {gpa:#x}"),
                        follows: false,
                    },
                    Plan {
                        entry: Entry::Exec { gpa, fault: None },
                        what: format!("fetch of the ret at {gpa:#x}"),
                        follows: true,
                    },
                ]
            }
            n => {
                let (gpa, place) = match self.rng.below(4) {
                    0 | 1 => (
                        image.start + 8 * self.rng.below((image.end - image.start - 8) / 8),
                        "the image",
                    ),
                    2 => (image.start - 4, "across the image's start"),
                    _ => (image.end - 4, "across the image's end"),
                };
                let width = if place == "the image" { width } else { 8 };
                let (access, entry): (Vtl0Access, MakeEntry) = match n {
                    3 => (
                        Vtl0Access::Write {
                            gpa,
                            bytes: vec![0; width as usize],
                        },
                        |gpa, width, value, f| Entry::Write {
                            gpa,
                            width,
                            value,
                            fault: Some(f),
                        },
                    ),
                    4 => (
                        Vtl0Access::Read {
                            gpa,
                            len: width as usize,
                        },
                        |gpa, width, _, f| Entry::Read {
                            gpa,
                            width,
                            value: None,
                            fault: Some(f),
                        },
                    ),
                    _ => (Vtl0Access::Execute { gpa }, |gpa, _, _, f| Entry::Exec {
                        gpa,
                        fault: Some(f),
                    }),
                };
                // A fetch is of one instruction: the image's first and last ones stand for the
                // edges (one just before the start would run VTL0's own bytes).
                let (gpa, access, place) = match (&access, place) {
                    (Vtl0Access::Execute { .. }, "across the image's start") => (
                        image.start,
                        Vtl0Access::Execute { gpa: image.start },
                        "the image's first instruction",
                    ),
                    (Vtl0Access::Execute { .. }, "across the image's end") => {
                        let at = image.end - 4;
                        (
                            at,
                            Vtl0Access::Execute { gpa: at },
                            "the image's last instruction",
                        )
                    }
                    _ => (gpa, access, place),
                };
                let fault = e2e::memory_fault(self.arch, &access, false);
                let value = self.rng.next();
                vec![Plan {
                    entry: entry(gpa, width, value, fault),
                    what: format!("{access:?}, {place}"),
                    follows: false,
                }]
            }
        }
    }

    /// A SignalEvent input word to `connection`: mostly a valid flag number, sometimes one past
    /// 2047 or a reserved field set (TLFS HvCallSignalEvent: flag numbers below 2048, RsvdZ
    /// zero); (word, flag, reserved, valid).
    fn signal_word(&mut self, connection: u64) -> (u64, u64, u64, bool) {
        let flag = if self.rng.percent(85) {
            self.rng.below(2048)
        } else {
            2048 + self.rng.below(0xF800)
        };
        let reserved = if self.rng.percent(90) {
            0
        } else {
            1 + self.rng.below(0xFFFF)
        };
        let valid = flag < 2048 && reserved == 0;
        (
            connection | flag << 32 | reserved << 48,
            flag,
            reserved,
            valid,
        )
    }

    /// A PostMessage to `connection`, valid or broken in one field the TLFS gives
    /// INVALID_PARAMETER for: (bytes, how, valid).
    fn message(&mut self, connection: u32) -> (Vec<u8>, &'static str, bool) {
        let mut m = post_message(connection);
        let valid = self.rng.percent(70);
        let how = if valid {
            "valid"
        } else {
            match self.rng.below(4) {
                0 => {
                    m[8..12].fill(0);
                    "message type 0"
                }
                1 => {
                    m[11] |= 0x80;
                    "hypervisor message type"
                }
                2 => {
                    let size = 241 + self.rng.below(1000) as u32;
                    m[12..16].copy_from_slice(&size.to_le_bytes());
                    "payload too large"
                }
                _ => {
                    m[4] = 1;
                    "reserved field set"
                }
            }
        };
        let payload = self.rng.bytes(240);
        m[16..].copy_from_slice(&payload);
        (m, how, valid)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(super) fn gen(seed: u64) -> Gen {
        Gen {
            arch: Arch::Aarch64,
            rng: Rng::new(seed),
            image: 0x4020_0000..0x4071_c000,
            host_ports: [1, 2].into(),
            relayed: 0,
            reflect_all: false,
            high: Vec::new(),
        }
    }

    pub(crate) fn plans(seed: u64, n: usize) -> Vec<Plan> {
        let mut g = gen(seed);
        let mut p = Vec::new();
        while p.len() < n {
            p.extend(g.next());
        }
        p
    }

    #[test]
    fn the_generator_replays_and_never_names_the_hosts_ports() {
        let a: Vec<String> = plans(3, 500).iter().map(|p| p.what.clone()).collect();
        let b: Vec<String> = plans(3, 500).iter().map(|p| p.what.clone()).collect();
        assert_eq!(a, b);
        for p in plans(3, 2000) {
            if let Entry::Hypercall { control, input, .. } = &p.entry {
                let c = Control::from_bits(*control).code();
                if c == HypercallCode::POST_MESSAGE || c == HypercallCode::SIGNAL_EVENT {
                    let connection = u32::from_le_bytes(input[..4].try_into().unwrap());
                    assert!(!(1..=2).contains(&connection), "{}", p.what);
                }
            }
        }
    }

    #[test]
    fn accesses_touching_the_image_must_fault_and_others_must_not() {
        let image = 0x4020_0000..0x4071_c000u64;
        let mut seen = 0;
        for p in plans(11, 5000) {
            let (gpa, span, fault) = match &p.entry {
                Entry::Write {
                    gpa, width, fault, ..
                }
                | Entry::Read {
                    gpa, width, fault, ..
                } => (*gpa, u64::from(*width), *fault),
                Entry::Exec { gpa, fault } => (*gpa, 4, *fault),
                Entry::Hypercall { .. } | Entry::Place { .. } => continue,
            };
            let touches = gpa < image.end && image.start < gpa + span;
            assert_eq!(fault.is_some(), touches, "{}", p.what);
            seen += usize::from(touches);
        }
        assert!(seen > 100);
    }
}
