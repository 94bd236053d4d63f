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
//! ([`Boot::ReflectAll`](super::boots::Boot::ReflectAll)) also lists at 0, in the host's memory, on MMIO, far beyond RAM and at
//! the top of the address space, which the paravisor refuses (ACCESS_DENIED) without touching
//! them.
//!
//! The ELF boots run on a machine of 6 GiB + 3 MiB, and now and then a memory-based call's
//! input is placed (the kernel's place entry) on the first page above 4 GiB, the first of the
//! last 3 MiB or the last page of RAM instead of the kernel's input page: the paravisor must map
//! all of VTL0's RAM and read its bytes there (the relays check them byte for byte). The host's
//! own ports are its scenario's (`Scenario::for_arch`), which the generator avoids.

use super::plan::{Entry, Plan, Want};
use super::{oracle, Rng, KNOWN_CONNECTIONS, NAMES, OWNED_DEVICE};
use crate::live;
use e2e::post_message;
use hvdef::{
    Control, HvInputVtl, HvRegisterName, HvStatus, HypercallCode, Vtl, HV_PARTITION_ID_SELF,
    HV_VP_INDEX_SELF,
};
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
    /// The host reflects every hypercall to VTL2 (see [`Boot::ReflectAll`](super::boots::Boot::ReflectAll)).
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

/// The codes a [`Boot::ReflectAll`](super::boots::Boot::ReflectAll) host reflects and its random control words use: every
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
        let call = |control: Control, input: Vec<u8>, want, intercepted, host, what: String| Plan {
            entry: Entry::Hypercall {
                control: control.into_bits(),
                input,
                want,
                intercepted,
                gpas: None,
                host,
                output: Vec::new(),
            },
            what,
            follows: false,
        };
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
}

impl Gen {
    /// What VTL0 gets for a list on VTL2's image: the memory fault `fault` when the hypervisor
    /// reads or writes it (Hyper-V's routing); the paravisor's ACCESS_DENIED when the host
    /// reflects the call untouched ([`Boot::ReflectAll`](super::boots::Boot::ReflectAll): VTL0 may only name its own memory,
    /// and the paravisor never touches VTL2's for it).
    fn in_image(&self, fault: u128) -> Want {
        if self.reflect_all {
            Want::Exactly(vec![HvStatus::ACCESS_DENIED])
        } else {
            Want::Fault(fault)
        }
    }

    /// A call of a valid shape whose parameter list breaks a rule (`vtl0::FLAG_GPAS`), answered
    /// by the hypervisor before any intercept: an input or output list that is not 8-byte
    /// aligned or crosses a page is INVALID_ALIGNMENT (TLFS hypercall-interface.md, "Memory
    /// Parameters"); one on VTL2's memory is the hypervisor's access to a page VTL2 protected,
    /// a GPA intercept to VTL2, and VTL0 takes the memory fault at the call
    /// (`kernel_protection::vtl0_cannot_name_vtl2_memory_in_a_hypercall`).
    fn hostile(&mut self) -> Plan {
        let proto = live::proto(self.arch);
        let (input_page, output_page) = (proto.input_page(), proto.output_page());
        let connection = self.unrelayed_connection();
        let message = post_message(connection);
        let len = message.len() as u64;
        let post = code(HypercallCode::POST_MESSAGE).into_bits();
        let query = code(HypercallCode::EXT_QUERY_CAPABILITIES).into_bits();
        let image = self.image.clone();
        // An 8-aligned GPA in the image with `len` bytes from it inside one page.
        let in_image = |rng: &mut Rng, len: u64| {
            let page = image.start + 0x1000 * rng.below((image.end - image.start) / 0x1000);
            page + 8 * rng.below((0x1000 - len) / 8 + 1)
        };
        let cases = if self.reflect_all { 6 } else { 4 };
        let (control, input, gpas, want, what) = match self.rng.below(cases) {
            0 => {
                let gpa = input_page + 1 + self.rng.below(7);
                (
                    post,
                    message,
                    (gpa, output_page),
                    Want::Exactly(vec![HvStatus::INVALID_ALIGNMENT]),
                    format!(
                        "PostMessage to connection {connection}, input at {gpa:#x} (misaligned)"
                    ),
                )
            }
            1 => {
                let gpa = input_page + 0x1000 - 8 * (1 + self.rng.below(len / 8 - 1));
                (
                    post,
                    message,
                    (gpa, output_page),
                    Want::Exactly(vec![HvStatus::INVALID_ALIGNMENT]),
                    format!(
                        "PostMessage to connection {connection}, input at {gpa:#x} (crosses a page)"
                    ),
                )
            }
            2 => {
                let gpa = in_image(&mut self.rng, len);
                let fault = e2e::memory_fault(self.arch, &Vtl0Access::Read { gpa, len: 0 }, false);
                (
                    post,
                    message,
                    (gpa, output_page),
                    self.in_image(fault),
                    format!(
                        "PostMessage to connection {connection}, input at {gpa:#x} (VTL2's image)"
                    ),
                )
            }
            3 => {
                let gpa = in_image(&mut self.rng, 8);
                let access = Vtl0Access::Write {
                    gpa,
                    bytes: Vec::new(),
                };
                let fault = e2e::memory_fault(self.arch, &access, false);
                (
                    query,
                    Vec::new(),
                    (input_page, gpa),
                    self.in_image(fault),
                    format!("ExtQueryCapabilities, output at {gpa:#x} (VTL2's image)"),
                )
            }
            // Reflected untouched, so the paravisor is the first to look at the list: one in
            // no RAM of VTL0's is its ACCESS_DENIED, never a read or write of what is there.
            n => {
                let (gpa, place) = match self.rng.below(5) {
                    0 => (0, "at 0"),
                    1 => (
                        // The in-VM host's own memory (its configuration page), never the guest's.
                        match self.arch {
                            Arch::X86_64 => invm_abi::CONFIG_GPA_X86_64,
                            Arch::Aarch64 => invm_abi::CONFIG_GPA_AARCH64,
                        } + 8 * self.rng.below(0x100),
                        "in the host's memory",
                    ),
                    2 => (
                        // MMIO: QEMU's GIC (virt) / the local APIC (q35).
                        match self.arch {
                            Arch::X86_64 => 0xFEE0_0000,
                            Arch::Aarch64 => 0x0800_0000,
                        } + 8 * self.rng.below(0x100),
                        "on MMIO",
                    ),
                    3 => (1 << (40 + self.rng.below(23)), "far beyond RAM"),
                    _ => (
                        // The list ends at most at 2^64, inside the last page (a list crossing
                        // a page is INVALID_ALIGNMENT first).
                        0u64.wrapping_sub(if n == 4 { len } else { 8 }) - 8 * self.rng.below(16),
                        "at the top of the address space",
                    ),
                };
                let denied = Want::Exactly(vec![HvStatus::ACCESS_DENIED]);
                if n == 4 {
                    (
                        post,
                        message,
                        (gpa, output_page),
                        denied,
                        format!(
                            "PostMessage to connection {connection}, input at {gpa:#x} ({place})"
                        ),
                    )
                } else {
                    (
                        query,
                        Vec::new(),
                        (input_page, gpa),
                        denied,
                        format!("ExtQueryCapabilities, output at {gpa:#x} ({place})"),
                    )
                }
            }
        };
        Plan {
            entry: Entry::Hypercall {
                control,
                input,
                want,
                intercepted: false,
                gpas: Some(gpas),
                host: Host::None,
                output: Vec::new(),
            },
            what,
            follows: false,
        }
    }
}

impl Gen {
    /// A call under the host that reflects everything ([`Boot::ReflectAll`](super::boots::Boot::ReflectAll)), the former gdbstub
    /// soak's well-formed and random-control mix on the kernel's own pages, each with the
    /// oracle's verdict: what VTL0 gets, its output bytes, the relay the host gets.
    fn reflected(&mut self) -> Plan {
        let known = KNOWN_CONNECTIONS;
        let plan = |control: Control,
                    input: Vec<u8>,
                    want: Want,
                    host: Host,
                    output: Vec<u8>,
                    intercepted: bool,
                    what: String| Plan {
            entry: Entry::Hypercall {
                control: control.into_bits(),
                input,
                want,
                intercepted,
                gpas: None,
                host,
                output,
            },
            what,
            follows: false,
        };
        match self.rng.below(20) {
            0..=2 => {
                // Relayed when VTL0 owns the device (`pv.devices=`), INVALID_DEVICE_ID
                // otherwise; another partition's id is ACCESS_DENIED (VTL0 speaks for itself).
                let device = self.rng.pick(&[OWNED_DEVICE, OWNED_DEVICE + 1]);
                let own = self.rng.percent(90);
                let partition = if own {
                    HV_PARTITION_ID_SELF
                } else {
                    self.rng.next() >> 1
                };
                let fast = self.rng.percent(30);
                let room = live::proto(self.arch).fast_pool_bytes() as u64;
                let max_banks = if fast { (room - 64) / 8 } else { 8 };
                let (bytes, var) = self.retarget(partition, device, max_banks);
                let control = code(HypercallCode::RETARGET_DEVICE_INTERRUPT)
                    .with_variable_header_size(var)
                    .with_fast(fast);
                let (want, host) = match (own, device == OWNED_DEVICE) {
                    (true, true) => (
                        vec![HvStatus::SUCCESS],
                        Host::Required(oracle::HostCall {
                            code: HypercallCode::RETARGET_DEVICE_INTERRUPT,
                            // The paravisor is soft-float: x64 XMM input goes memory-based.
                            fast: fast && self.arch == Arch::Aarch64,
                            var,
                            input: bytes.clone(),
                        }),
                    ),
                    (false, true) => (vec![HvStatus::ACCESS_DENIED], Host::None),
                    (true, false) => (vec![HvStatus::INVALID_DEVICE_ID], Host::None),
                    (false, false) => (
                        vec![HvStatus::ACCESS_DENIED, HvStatus::INVALID_DEVICE_ID],
                        Host::None,
                    ),
                };
                plan(
                    control,
                    bytes,
                    Want::Exactly(want),
                    host,
                    Vec::new(),
                    true,
                    format!(
                        "RetargetDeviceInterrupt device {device:#x}, partition {partition:#x}, \
                         variable header {var}, fast {fast}"
                    ),
                )
            }
            3..=5 => {
                let connection = self.rng.below(2 * u64::from(known)) as u32;
                let (m, how, valid) = self.message(connection);
                let expect = oracle::synic(
                    HypercallCode::POST_MESSAGE,
                    false,
                    connection,
                    known,
                    valid,
                    &m,
                );
                plan(
                    code(HypercallCode::POST_MESSAGE),
                    m,
                    Want::Exactly(expect.statuses),
                    expect.host,
                    Vec::new(),
                    true,
                    format!("PostMessage to connection {connection}, {how}"),
                )
            }
            6..=8 => {
                let connection = self.rng.below(2 * u64::from(known));
                let (word, flag, reserved, valid) = self.signal_word(connection);
                let fast = self.rng.percent(60);
                let expect = oracle::synic(
                    HypercallCode::SIGNAL_EVENT,
                    fast,
                    connection as u32,
                    known,
                    valid,
                    &word.to_le_bytes(),
                );
                plan(
                    code(HypercallCode::SIGNAL_EVENT).with_fast(fast),
                    word.to_le_bytes().to_vec(),
                    Want::Exactly(expect.statuses),
                    expect.host,
                    Vec::new(),
                    true,
                    format!("SignalEvent (fast {fast}) connection {connection} flag {flag} rsvd {reserved:#x}"),
                )
            }
            9 | 10 => {
                // The hypervisor's own call: the paravisor has no entry for it (a host reflects
                // it only in this worst case), so INVALID_HYPERCALL_CODE and VTL0's output page
                // as the kernel left it (zero).
                let n = 1 + self.rng.below(8) as usize;
                let vtl = if self.rng.percent(50) {
                    HvInputVtl::CURRENT
                } else {
                    HvInputVtl::target(Vtl::VTL0)
                };
                let ip = match self.arch {
                    Arch::X86_64 => hvdef::x86_64::reg::RIP,
                    Arch::Aarch64 => hvdef::aarch64::reg::XPC,
                };
                let names: Vec<HvRegisterName> = (0..n)
                    .map(|_| match self.rng.below(10) {
                        0 => ip,
                        1 => HvRegisterName(self.rng.next() as u32),
                        _ => self.rng.pick(&NAMES),
                    })
                    .collect();
                plan(
                    code(HypercallCode::GET_VP_REGISTERS).with_rep_count(n as u16),
                    e2e::get_registers_input(vtl, &names),
                    Want::Exactly(vec![HvStatus::INVALID_HYPERCALL_CODE]),
                    Host::None,
                    vec![0; 16 * n],
                    true,
                    format!("GetVpRegisters of {n}"),
                )
            }
            11 | 12 => plan(
                // No extended call is relayed, so the capabilities VTL0 may use are none
                // (docs/ARCHITECTURE.md): SUCCESS and 8 zero bytes, the 8 after them untouched.
                code(HypercallCode::EXT_QUERY_CAPABILITIES),
                Vec::new(),
                Want::Exactly(vec![HvStatus::SUCCESS]),
                Host::None,
                vec![0; 16],
                true,
                "ExtQueryCapabilities".into(),
            ),
            13 => plan(
                // TLFS: extended calls are never fast.
                code(HypercallCode::EXT_QUERY_CAPABILITIES).with_fast(true),
                self.rng.bytes(16),
                Want::Exactly(vec![HvStatus::INVALID_PARAMETER]),
                Host::None,
                Vec::new(),
                true,
                "fast ExtQueryCapabilities".into(),
            ),
            _ => {
                let control = self.random_control();
                let input = if control.fast() {
                    let mut b = self.rng.bytes(live::proto(self.arch).fast_pool_bytes());
                    if self.rng.percent(30) {
                        b[..8].copy_from_slice(&HV_PARTITION_ID_SELF.to_le_bytes());
                    }
                    b
                } else {
                    let len = self.rng.below(321) as usize;
                    self.plausible_input(len)
                };
                let host = self.possible_relay(control, &input);
                plan(
                    control,
                    input,
                    Want::Allowed,
                    host,
                    Vec::new(),
                    false,
                    format!("random control word {:#x}", control.into_bits()),
                )
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

    /// A RetargetDeviceInterrupt input (TLFS / hvdef layout, 56 bytes): the VP mask, or (half
    /// the time) a sparse VP set of 0 to `max_banks` banks in the variable header; returns
    /// (bytes, variable header size).
    fn retarget(&mut self, partition: u64, device: u64, max_banks: u64) -> (Vec<u8>, u16) {
        let data = 0xFEE0_0000_0000_0041 | (self.rng.below(0x100) << 44);
        let vector = 0x20 + self.rng.below(0xD0) as u32;
        let sparse = self.rng.percent(50);
        let mut b = Vec::with_capacity(56);
        b.extend(partition.to_le_bytes());
        b.extend(device.to_le_bytes());
        b.extend(1u32.to_le_bytes()); // MSI
        b.extend(0u32.to_le_bytes());
        b.extend(data.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(vector.to_le_bytes());
        if !sparse {
            b.extend(0u32.to_le_bytes());
            b.extend((1 + self.rng.below(u64::MAX - 1)).to_le_bytes());
            return (b, 0);
        }
        // HV_DEVICE_INTERRUPT_TARGET_PROCESSOR_SET, format HV_GENERIC_SET_SPARSE_4K (0).
        b.extend(hvdef::HV_DEVICE_INTERRUPT_TARGET_PROCESSOR_SET.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        let banks = self.rng.below(max_banks + 1);
        let mut mask = 0u64;
        while u64::from(mask.count_ones()) < banks {
            mask |= 1 << self.rng.below(64);
        }
        b.extend(mask.to_le_bytes());
        for _ in 0..banks {
            b.extend(self.rng.next().to_le_bytes());
        }
        (b, 1 + banks as u16)
    }

    /// Input bytes that get past the first checks often: this partition, then noise.
    fn plausible_input(&mut self, len: usize) -> Vec<u8> {
        let mut bytes = self.rng.bytes(len);
        if len >= 16 && self.rng.percent(50) {
            bytes[..8].copy_from_slice(&HV_PARTITION_ID_SELF.to_le_bytes());
            if self.rng.percent(50) {
                bytes[8..12].copy_from_slice(&HV_VP_INDEX_SELF.to_le_bytes());
            }
            bytes[12] = self.rng.pick(&[0x00, 0x10, 0x11, 0x12, 0x02, 0x20, 0xFF]);
            if self.rng.percent(70) {
                bytes[13..16].fill(0);
            }
        }
        bytes
    }

    /// The relay a random control word's call may cause: its bytes as the call reads them (the
    /// kernel zero-pads an input to its page or register pool, so a short or empty one names
    /// connection 0) may name a relayed connection, or this partition and VTL0's device, and
    /// whether the paravisor relays it then depends on its control-word checks. Optional, but
    /// if made it must be exactly this: the rewritten connection (SynIC) or the same partition
    /// and device (RetargetDeviceInterrupt), with the nested bit the host needs. Found by the
    /// million-call soak: an empty SignalEvent input under a random control word was relayed to
    /// the host's 0x100, which a plan expecting no relay counted against every later one.
    fn possible_relay(&self, control: Control, input: &[u8]) -> Host {
        let padded = |at: usize, n: usize| {
            let mut b = [0u8; 8];
            for (i, byte) in b.iter_mut().enumerate().take(n) {
                *byte = input.get(at + i).copied().unwrap_or(0);
            }
            u64::from_le_bytes(b)
        };
        let code = control.code();
        let fast = control.fast();
        match code {
            HypercallCode::POST_MESSAGE | HypercallCode::SIGNAL_EVENT => {
                let Some(host) = oracle::host_connection(padded(0, 4) as u32, self.relayed) else {
                    return Host::None;
                };
                // The fixed header VTL0's bytes give: SignalEvent's 8 bytes, PostMessage's 16
                // (connection, reserved, message type, payload size).
                let header = if code == HypercallCode::SIGNAL_EVENT {
                    8
                } else {
                    16
                };
                let mut bytes: Vec<u8> = (0..header).map(|i| padded(i, 1) as u8).collect();
                bytes[..4].copy_from_slice(&host.to_le_bytes());
                Host::Optional(oracle::HostCall {
                    code,
                    // x64 PostMessage's fast form is XMM input, which the soft-float paravisor
                    // relays memory-based.
                    fast: fast
                        && (code == HypercallCode::SIGNAL_EVENT || self.arch == Arch::Aarch64),
                    var: 0,
                    input: bytes,
                })
            }
            HypercallCode::RETARGET_DEVICE_INTERRUPT
                if padded(0, 8) == HV_PARTITION_ID_SELF && padded(8, 8) == OWNED_DEVICE =>
            {
                Host::Optional(oracle::HostCall {
                    code,
                    fast: fast && self.arch == Arch::Aarch64,
                    var: control.variable_header_size(),
                    input: (0..16).map(|i| padded(i, 1) as u8).collect(),
                })
            }
            _ => Host::None,
        }
    }

    /// A control word: a code from the proxy's table or any reflected one (VtlCall and VtlReturn aside:
    /// VTL switches, not calls), and random fast bit, reps, variable header, reserved bits
    /// and nested bit.
    fn random_control(&mut self) -> Control {
        let code = loop {
            let c = if self.rng.percent(80) {
                self.rng.pick(&paravisor::proxy::policy::TABLE).code
            } else {
                let r = &REFLECTED_CODES[self.rng.below(REFLECTED_CODES.len() as u64) as usize];
                HypercallCode(r.start + self.rng.below(u64::from(r.end - r.start)) as u16)
            };
            // arm64's reflecting host serves VTL0's SetVpRegisters itself (see `soak_arch`):
            // not a proxied call, and a random one may set VTL0's own registers.
            let served = self.arch == Arch::Aarch64 && c == HypercallCode::SET_VP_REGISTERS;
            if c != HypercallCode::VTL_CALL && c != HypercallCode::VTL_RETURN && !served {
                break c;
            }
        };
        let count = if self.rng.percent(80) {
            self.rng.below(5)
        } else {
            self.rng.below(0x1000)
        };
        let start = match self.rng.below(8) {
            0..=5 => 0,
            6 => self.rng.below(4),
            _ => self.rng.below(0x1000),
        };
        let var = match self.rng.below(8) {
            0..=5 => 0,
            6 => self.rng.below(4),
            _ => self.rng.below(0x400),
        };
        let mut bits = u64::from(code.0)
            | u64::from(self.rng.percent(50)) << 16
            | var << 17
            | count << 32
            | start << 48;
        if self.rng.percent(10) {
            bits |= self.rng.next() & Control::RESERVED_MASK;
        }
        if self.rng.percent(10) {
            bits |= 1 << 31;
        }
        Control::from_bits(bits)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn gen(seed: u64) -> Gen {
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
    fn a_random_words_zero_padded_input_may_be_relayed_exactly() {
        let g = Gen {
            relayed: KNOWN_CONNECTIONS,
            reflect_all: true,
            ..gen(1)
        };
        let signal = code(HypercallCode::SIGNAL_EVENT);
        // An empty input reads as connection 0, flag 0: relayed to the host's 0x100.
        assert_eq!(
            g.possible_relay(signal, &[]),
            Host::Optional(oracle::HostCall {
                code: HypercallCode::SIGNAL_EVENT,
                fast: false,
                var: 0,
                input: vec![0, 1, 0, 0, 0, 0, 0, 0],
            })
        );
        assert_eq!(
            g.possible_relay(signal, &KNOWN_CONNECTIONS.to_le_bytes()),
            Host::None
        );
        let retarget = code(HypercallCode::RETARGET_DEVICE_INTERRUPT).with_variable_header_size(2);
        let mut input = HV_PARTITION_ID_SELF.to_le_bytes().to_vec();
        input.push(OWNED_DEVICE as u8);
        assert_eq!(
            g.possible_relay(retarget, &input),
            Host::Optional(oracle::HostCall {
                code: HypercallCode::RETARGET_DEVICE_INTERRUPT,
                fast: false,
                var: 2,
                input: [input.clone(), vec![0; 7]].concat(),
            })
        );
        input[8] += 1;
        assert_eq!(g.possible_relay(retarget, &input), Host::None);
    }

    #[test]
    fn arm64_random_words_leave_out_the_call_its_host_serves() {
        let count = |arch| {
            let mut g = Gen {
                arch,
                reflect_all: true,
                ..gen(3)
            };
            (0..20_000)
                .filter(|_| g.random_control().code() == HypercallCode::SET_VP_REGISTERS)
                .count()
        };
        assert_eq!(count(Arch::Aarch64), 0);
        assert!(count(Arch::X86_64) > 0);
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
