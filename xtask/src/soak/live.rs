//! The soak through the real VTL0: the VTL0 test kernel (`tests/vtl0`) runs the random calls
//! as table entries under the paravisor under the in-VM mock Hyper-V, thousands per QEMU boot.
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
//! takes the memory fault at the call); under the host that reflects everything (below) also
//! lists at 0, in the host's memory, on MMIO, far beyond RAM and at the top of the address
//! space, which the paravisor refuses (ACCESS_DENIED) without touching them.
//!
//! The ELF boots run on a machine of 6 GiB + 3 MiB, and now and then a memory-based call's
//! input is placed (the kernel's place entry) on the first page above 4 GiB, the first of the
//! last 3 MiB or the last page of RAM instead of the kernel's input page: the paravisor must map
//! all of VTL0's RAM and read its bytes there (the relays check them byte for byte).
//!
//! The oracle (`oracle.rs`) predicts each status from the TLFS and the configuration. A third
//! of the calls run under IGVM boots, given no command line, so the relay table is empty
//! (no `pv.relay=`, no `pv.devices=`) and no connection or device is VTL0's; a third under ELF
//! boots with the former gdbstub soak's relay (VTL0's connections 0..8 to the host's 0x100.., which
//! the host's model knows), so a valid call to one of them must be relayed with its connection
//! rewritten and VTL0 gets the host's SUCCESS; a third under the former gdbstub soak's worst case, a
//! host that reflects every call VTL0 makes ([`Boot::ReflectAll`]: the proxy's table is the
//! defence), with VTL0's device 0x30 (`pv.devices=`), every other boot a nested host: its
//! well-formed calls (RetargetDeviceInterrupt relayed or refused, SynIC calls, the
//! hypervisor's GetVpRegisters refused with VTL0's output untouched, ExtQueryCapabilities
//! answered with its 8 zero bytes, the fast form INVALID_PARAMETER) and random control words
//! over the table's codes. The host's own ports are its scenario's (`Scenario::for_arch`),
//! which the generator avoids. The checks, per boot:
//!
//! 1. QEMU passed, the kernel said `done` for every entry, no `PANIC` / `FATAL` line;
//! 2. every hypercall record: the whole result word is the oracle's status (random control
//!    words: a status the TLFS allows for a proxied call, `ALLOWED`), every canary intact; a
//!    list on VTL2's memory: the exact memory fault instead;
//! 3. every access record: a store, load or fetch touching VTL2's pages (the image,
//!    `__image_start..__image_end` from the ELF, and the heap after it, `e2e::vtl2_heap`;
//!    "the image" below is both) faulted with exactly the exception
//!    `e2e::memory_fault` gives (arm64 ESR, FAR 0; x64 #GP(0)); any other was carried out, a
//!    load giving what the store before it wrote, a fetch of the `ret` written there returning;
//! 4. the host's trace: one hypercall intercept per call the oracle says the host hands VTL2
//!    (at least; at most one per hypercall entry), one GPA intercept per faulted access or
//!    call, and
//!    after VTL0 started VTL2 made exactly one SetVpRegisters per intercept (VTL0's IP advance or
//!    pending event) and no other hypercall but the relays: in entry order, exactly the ones the
//!    oracle requires (code, control word with HV_HYPERCALL_NESTED as the host needs it, the
//!    input byte for byte), those it allows, no other; and every GPA VTL2 names to the host is
//!    on one of the pages it used at boot (its own hypercall pages).

use super::{arch_seed, oracle, Rng, ALLOWED, KNOWN_CONNECTIONS, NAMES, OWNED_DEVICE, RELAYED};
use crate::live::{self, Images};
use anyhow::{bail, Context, Result};
use e2e::post_message;
use hvdef::{
    Control, HvInputVtl, HvMessageType, HvRegisterName, HvStatus, HypercallCode, Vtl,
    HV_PARTITION_ID_SELF, HV_VP_INDEX_SELF,
};
use mockhv::model::{Event, Scenario, Vtl0Access};
use mockhv::qemu::Arch;
use oracle::Host;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::{Duration, Instant};
use vtl0::{CallOutcome, Fault, Record, Table, MAX_ENTRIES, TABLE_MAX};

/// Connections the generator picks from (0..this, minus the host's own ports).
const CONNECTIONS: u64 = 64;

/// A table entry and what it must produce.
#[derive(Clone, Debug)]
enum Entry {
    Hypercall {
        control: u64,
        input: Vec<u8>,
        want: Want,
        /// The host must hand this call to VTL2 (an intercept), by the TLFS and the scenario:
        /// a well-formed call to a connection or device it does not know. It may hand on any
        /// other (a broken input may be refused before or after the lookup).
        intercepted: bool,
        /// The input and output GPAs the call names instead of the kernel's pages
        /// (`vtl0::FLAG_GPAS`; output length 0).
        gpas: Option<(u64, u64)>,
        /// What VTL2 must relay to the host for it (the oracle's; relay boots only).
        host: Host,
        /// The output bytes VTL0 must find (reported from its output page, which the kernel
        /// zeroes before the call); empty: none reported.
        output: Vec<u8>,
    },
    Write {
        gpa: u64,
        width: u32,
        value: u64,
        fault: Option<u128>,
    },
    Read {
        gpa: u64,
        width: u32,
        /// The value a store before it left (`None`: it faults).
        value: Option<u64>,
        fault: Option<u128>,
    },
    Exec {
        gpa: u64,
        fault: Option<u128>,
    },
    /// The kernel's place entry: `bytes` stored at `gpa` (a buffer for the next entry).
    Place {
        gpa: u64,
        bytes: Vec<u8>,
    },
}

/// Builds an access entry from (GPA, width, value, the fault it must take).
type MakeEntry = fn(u64, u32, u64, u128) -> Entry;

#[derive(Clone, Debug)]
enum Want {
    /// One of these statuses, no rep completed.
    Exactly(Vec<HvStatus>),
    /// Any status the TLFS allows for a proxied call.
    Allowed,
    /// No status: the call faults at the instruction with this pending event
    /// (`e2e::memory_fault`), its parameter list being on VTL2's memory (one GPA intercept).
    Fault(u128),
}

struct Plan {
    entry: Entry,
    what: String,
    /// The load or fetch of what the entry before it stored: the two run in the same boot.
    follows: bool,
}

impl Plan {
    /// Table bytes this entry takes (header, body, input padded to 8).
    fn size(&self) -> usize {
        match &self.entry {
            Entry::Hypercall { input, gpas, .. } => {
                // The output length lives in the body: no extra bytes.
                8 + 16 + 16 * usize::from(gpas.is_some()) + input.len().div_ceil(8) * 8
            }
            Entry::Write { .. } => 8 + 24,
            Entry::Read { .. } => 8 + 16,
            Entry::Exec { .. } => 8 + 8,
            Entry::Place { bytes, .. } => 8 + 16 + bytes.len().div_ceil(8) * 8,
        }
    }

    fn push(&self, t: Table) -> Table {
        match &self.entry {
            Entry::Hypercall {
                control,
                input,
                gpas: None,
                output,
                ..
            } => t.hypercall(*control, input, output.len() as u32),
            Entry::Hypercall {
                control,
                input,
                gpas: Some((i, o)),
                output,
                ..
            } => t.hypercall_at(*control, *i, *o, input, output.len() as u32),
            Entry::Write {
                gpa, width, value, ..
            } => t.write(*gpa, *width, *value),
            Entry::Read { gpa, width, .. } => t.read(*gpa, *width),
            Entry::Exec { gpa, .. } => t.exec(*gpa),
            Entry::Place { gpa, bytes } => t.place(*gpa, bytes),
        }
    }
}

struct Gen {
    arch: Arch,
    rng: Rng,
    image: Range<u64>,
    /// The host's SynIC ports (it serves calls to them itself).
    host_ports: BTreeSet<u32>,
    /// VTL0 connections below this are relayed (`pv.relay=`, an ELF boot; 0: an IGVM boot, no
    /// relay table).
    relayed: u32,
    /// The host reflects every hypercall to VTL2 (see [`Boot::ReflectAll`]).
    reflect_all: bool,
    /// Pages of VTL0 RAM above 4 GiB and at the very top of RAM (ELF boots on a machine of
    /// [`HIGH_MEMORY_MB`]; empty: the default machine) where a PostMessage's input is placed
    /// now and then: the paravisor must map them and read VTL0's bytes there.
    high: Vec<u64>,
}

/// The relay boots' machine: 6 GiB + 3 MiB, so RAM runs past 4 GiB (q35: 2 GiB low and the rest
/// from 4 GiB; virt: from 1 GiB) and its top needs every page size (`kernel_memory`).
const HIGH_MEMORY_MB: u32 = 6 * 1024 + 3;

/// The high pages of [`Gen::high`] for `arch`'s machine of [`HIGH_MEMORY_MB`] (QEMU's
/// documented layouts, `Arch::ram_ranges`): the first page above 4 GiB, the first of the last
/// 3 MiB, the last page.
fn high_pages(arch: Arch) -> Vec<u64> {
    let ram = arch.ram_ranges(HIGH_MEMORY_MB);
    let top = ram.iter().map(|r| r.end).max().unwrap_or(0);
    vec![4 << 30, top - (3 << 20), top - 0x1000]
}

/// The codes a [`Boot::ReflectAll`] host reflects and its random control words use: every
/// hypercall code the TLFS defines is below 0x200, every extended one in 0x8001..0x8100 (the
/// whole u16 space would not fit the in-VM host's scenario page).
const REFLECTED_CODES: [Range<u16>; 2] = [0..0x200, 0x8000..0x8100];

/// How a boot's partition is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Boot {
    /// The IGVM file, given no command line: no relay table; Hyper-V's routing.
    Igvm,
    /// The ELF with the relay table; Hyper-V's routing.
    Relay,
    /// The ELF with the relay table and VTL0's device, under a host that reflects every
    /// hypercall VTL0 makes to VTL2 (the former gdbstub soak's worst case: the proxy's table is the
    /// defence), every other boot a nested host (the relays' HV_HYPERCALL_NESTED).
    ReflectAll,
}

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
    fn next(&mut self) -> Vec<Plan> {
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
    /// reflects the call untouched ([`Boot::ReflectAll`]: VTL0 may only name its own memory,
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
    /// A call under the host that reflects everything ([`Boot::ReflectAll`]), the former gdbstub
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

/// Whether `got` is the fault `want` (a pending-event value from `e2e::memory_fault`) stands
/// for: arm64 the ESR with FAR 0 (the paravisor hands VTL0 no address); x64 the vector and
/// error code (CR2 is whatever an earlier page fault left).
fn is_fault(arch: Arch, got: &Fault, want: u128) -> bool {
    match (arch, got) {
        (Arch::Aarch64, Fault::Arm64 { esr, far }) => *esr == (want >> 64) as u64 && *far == 0,
        (Arch::X86_64, Fault::X86 { vector, code, .. }) => {
            u128::from(*vector) == (want >> 16) & 0xFF && *code == 0
        }
        _ => false,
    }
}

/// What the checks saw, to show they had something to check.
#[derive(Default)]
struct Stats {
    statuses: BTreeMap<String, usize>,
    exact: usize,
    allowed: usize,
    accesses: usize,
    faults: usize,
    /// Inputs placed on pages above 4 GiB / at the top of RAM.
    placed: usize,
}

fn check_record(
    arch: Arch,
    index: usize,
    plan: &Plan,
    record: &Record,
    stats: &mut Stats,
    out: &mut Vec<String>,
) {
    let name = arch.name();
    let fail = |why: String| format!("{name} entry #{index} ({}): {why}", plan.what);
    match (&plan.entry, record) {
        (
            Entry::Hypercall {
                control,
                want,
                output,
                ..
            },
            Record::Hypercall {
                control: c,
                outcome:
                    CallOutcome::Done {
                        result,
                        bad_canaries,
                        out: got,
                    },
            },
        ) if c == control => {
            if got != output {
                out.push(fail(format!(
                    "invariant 2: VTL0's output {got:02x?}, expected {output:02x?}"
                )));
            }
            let status = HvStatus(*result as u16);
            *stats.statuses.entry(format!("{status:?}")).or_default() += 1;
            if !bad_canaries.is_empty() {
                out.push(fail(format!("canaries broken: {bad_canaries:?}")));
            }
            let ok = match want {
                Want::Exactly(s) => {
                    stats.exact += 1;
                    s.iter().any(|s| u64::from(s.0) == *result)
                }
                Want::Allowed => {
                    stats.allowed += 1;
                    *result >> 16 == 0 && ALLOWED.contains(&status)
                }
                Want::Fault(_) => false,
            };
            if !ok {
                out.push(fail(format!(
                    "invariant 2: expected {want:?}, VTL0 got result {result:#x}"
                )));
            }
        }
        (
            Entry::Hypercall {
                control,
                want: Want::Fault(want),
                ..
            },
            Record::Hypercall {
                control: c,
                outcome: CallOutcome::Fault(f),
            },
        ) if c == control => {
            stats.faults += 1;
            if !is_fault(arch, f, *want) {
                out.push(fail(format!(
                    "invariant 2: expected the fault {want:#x}, VTL0 got {f}"
                )));
            }
        }
        (
            Entry::Write { gpa, fault, .. },
            Record::Write {
                gpa: g, outcome, ..
            },
        ) if g == gpa => {
            stats.accesses += 1;
            access_outcome(arch, *fault, outcome.as_ref().err(), stats, out, &fail);
        }
        (
            Entry::Read {
                gpa, value, fault, ..
            },
            Record::Read {
                gpa: g, outcome, ..
            },
        ) if g == gpa => {
            stats.accesses += 1;
            access_outcome(arch, *fault, outcome.as_ref().err(), stats, out, &fail);
            if let (Some(want), Ok(got)) = (value, outcome) {
                if want != got {
                    out.push(fail(format!(
                        "invariant 3: loaded {got:#x}, stored {want:#x}"
                    )));
                }
            }
        }
        (
            Entry::Place { gpa, bytes },
            Record::Place {
                gpa: g,
                len,
                outcome,
            },
        ) if g == gpa && *len == bytes.len() => {
            stats.placed += 1;
            if let Err(f) = outcome {
                out.push(fail(format!("placing VTL0's buffer faulted: {f}")));
            }
        }
        (Entry::Exec { gpa, fault }, Record::Exec { gpa: g, outcome }) if g == gpa => {
            stats.accesses += 1;
            access_outcome(arch, *fault, outcome.as_ref().err(), stats, out, &fail);
        }
        (_, r) => out.push(fail(format!("unexpected record {r:?}"))),
    }
}

fn access_outcome(
    arch: Arch,
    want: Option<u128>,
    got: Option<&Fault>,
    stats: &mut Stats,
    out: &mut Vec<String>,
    fail: &dyn Fn(String) -> String,
) {
    match (want, got) {
        (None, None) => {}
        (Some(w), Some(f)) if is_fault(arch, f, w) => stats.faults += 1,
        (w, g) => out.push(fail(format!(
            "invariant 3: expected {}, got {}",
            w.map_or("the access carried out".into(), |w| format!(
                "the fault {w:#x}"
            )),
            g.map_or("the access carried out".into(), |f| f.to_string())
        ))),
    }
}

/// Entries per boot: as many as the table window and the kernel's entry limit take.
fn boots(plans: &[Plan]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 16);
    for (i, p) in plans.iter().enumerate() {
        // A boot ends before a full table, never between a store and its load or fetch.
        let full = |i: usize, bytes: usize| {
            i - start >= MAX_ENTRIES as usize - 1 || bytes > TABLE_MAX - 512
        };
        if !p.follows && full(i, bytes + p.size()) {
            out.push(start..i);
            (start, bytes) = (i, 16);
        }
        bytes += p.size();
    }
    if start < plans.len() {
        out.push(start..plans.len());
    }
    out
}

/// (calls, boots) for `arch`, violations appended to `violations`.
pub fn soak_arch(
    images: &Images,
    image: Range<u64>,
    opts: &super::Options,
    violations: &mut Vec<String>,
) -> Result<(usize, usize)> {
    let (calls, seed) = (opts.calls, opts.seed);
    let arch = images.arch;
    let scenario = Scenario::for_arch(arch);
    // Half the calls under an IGVM boot (given no command line: nothing relayed), half under an ELF
    // boot whose relay maps VTL0's connections 0..8 to the host's 0x100.., which the host
    // knows (the former gdbstub soak's relay): a relay without its rewrite, or one too many, is seen.
    let relay_scenario =
        Scenario {
            ports: scenario
                .ports
                .clone()
                .into_iter()
                .chain((0..KNOWN_CONNECTIONS).filter_map(|c| {
                    Some((oracle::host_connection(c, KNOWN_CONNECTIONS)?, Vtl::VTL0))
                }))
                .collect(),
            ..scenario.clone()
        };
    let relay: Vec<String> = (0..KNOWN_CONNECTIONS)
        .filter_map(|c| {
            Some(format!(
                "{c}:{:#x}",
                oracle::host_connection(c, KNOWN_CONNECTIONS)?
            ))
        })
        .collect();
    let append = format!("pv.relay={}", relay.join(","));
    let reflect_append = format!("{append} pv.devices={OWNED_DEVICE:#x}");
    let reflect_scenario = |nested: bool| Scenario {
        nested,
        // Every code the generator uses ([`REFLECTED_CODES`]; every TLFS call code and
        // extended code is in them), but on arm64 SetVpRegisters: the kernel registers its
        // guest OS id with it (x86 does so with an MSR), which the paravisor would refuse.
        reflected_codes: REFLECTED_CODES
            .into_iter()
            .flatten()
            .map(HypercallCode)
            .filter(|&c| arch == Arch::X86_64 || c != HypercallCode::SET_VP_REGISTERS)
            .collect(),
        devices: [(OWNED_DEVICE, Vtl::VTL2)].into(),
        ..relay_scenario.clone()
    };
    let host_ports: BTreeSet<u32> = scenario.ports.keys().copied().collect();
    // Boots of the stream so far (a boot's number), and the calls and boots actually run.
    let mut boots_run = 0;
    let (mut ran_calls, mut ran_boots) = (0, 0);
    let mut stats = Stats::default();
    for (part, kind) in [Boot::Igvm, Boot::Relay, Boot::ReflectAll]
        .into_iter()
        .enumerate()
    {
        let count = (calls as usize * (part + 1)) / 3 - (calls as usize * part) / 3;
        let relayed = if kind == Boot::Igvm {
            0
        } else {
            KNOWN_CONNECTIONS
        };
        let mut gen = Gen {
            arch,
            rng: Rng::new(arch_seed(seed, arch) ^ part as u64),
            image: image.clone(),
            host_ports: host_ports.clone(),
            relayed,
            reflect_all: kind == Boot::ReflectAll,
            high: if kind == Boot::Igvm {
                Vec::new()
            } else {
                high_pages(arch)
            },
        };
        let mut plans = Vec::new();
        while plans.len() < count {
            plans.extend(gen.next());
        }
        plans.truncate(count);
        // A store whose load was cut off is still a complete entry.
        let ranges = boots(&plans);
        println!(
            "soak {} (real VTL0, in-VM host): image {:#x}..{:#x}, {} entries in {} boot(s); {}, \
             host ports {:?}",
            arch.name(),
            image.start,
            image.end,
            plans.len(),
            ranges.len(),
            match kind {
                Boot::Igvm => "relay table empty (IGVM boot given no command line)".to_string(),
                Boot::Relay => format!("ELF boot with `{append}`"),
                Boot::ReflectAll => format!(
                    "ELF boot with `{reflect_append}`, a host that reflects every VTL0 call, \
                     nested every other boot"
                ),
            },
            gen.host_ports
        );
        for (k, range) in ranges.iter().enumerate() {
            let n = boots_run + k;
            if opts.boot.is_some_and(|b| b != n) {
                continue;
            }
            ran_calls += range.len();
            ran_boots += 1;
            let nested = kind == Boot::ReflectAll && k % 2 == 1;
            let t = Instant::now();
            let before = violations.len();
            let chunk = &plans[range.clone()];
            let table = chunk.iter().fold(Table::new(), |t, p| p.push(t));
            let timeout = Duration::from_secs(60 + chunk.len() as u64 / 20);
            let run = match kind {
                Boot::Igvm => images.run_table(&table, true, timeout),
                // x86: a host without the VTL register page here (the IP advance is then a
                // SetVpRegisters), with it in the other boots.
                Boot::Relay => images.run_table_elf_in(
                    &table,
                    &append,
                    Scenario {
                        register_page: false,
                        ..relay_scenario.clone()
                    },
                    false,
                    HIGH_MEMORY_MB,
                    timeout,
                ),
                Boot::ReflectAll => images.run_table_elf_in(
                    &table,
                    &reflect_append,
                    reflect_scenario(nested),
                    false,
                    HIGH_MEMORY_MB,
                    timeout,
                ),
            };
            let (run, results) = match run {
                Ok(r) => r,
                Err(e) => {
                    violations.push(format!(
                        "{} boot {n} (entries {}..{}): invariant 1: {e:#}",
                        arch.name(),
                        range.start,
                        range.end
                    ));
                    continue;
                }
            };
            for line in run.run.console.lines() {
                if line.contains("PANIC") || line.contains("FATAL") {
                    violations.push(format!(
                        "{} boot {n}: invariant 1: the console says {:?}",
                        arch.name(),
                        line.trim()
                    ));
                }
            }
            let records = results
                .records()
                .map_err(anyhow::Error::msg)
                .context("the kernel's entry lines")?;
            for (i, (plan, record)) in chunk.iter().zip(&records).enumerate() {
                check_record(arch, range.start + i, plan, record, &mut stats, violations);
            }
            let page = arch == Arch::X86_64 && kind != Boot::Relay;
            check_trace(arch, n, chunk, nested, page, &run.events, violations);
            println!(
                "soak {}: boot {n}: entries {}..{}, {} trace events, {} violations, {:.1}s",
                arch.name(),
                range.start,
                range.end,
                run.events.len(),
                violations.len() - before,
                t.elapsed().as_secs_f64()
            );
        }
        boots_run += ranges.len();
    }
    let statuses: Vec<String> = stats
        .statuses
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    println!(
        "soak {}: statuses {}; oracle: {} statuses predicted exactly, {} random control words \
         checked against the TLFS's list; {} accesses ({} faulted as predicted); {} inputs \
         above 4 GiB or at the top of RAM",
        arch.name(),
        statuses.join(", "),
        stats.exact,
        stats.allowed,
        stats.accesses,
        stats.faults,
        stats.placed
    );
    if let Some(b) = opts.boot.filter(|&b| b >= boots_run) {
        bail!(
            "{}: no boot {b}: {calls} calls with seed {seed} make boots 0..{boots_run}",
            arch.name()
        );
    }
    Ok((ran_calls, ran_boots))
}

/// Invariant 4, on the host's trace of one boot.
fn check_trace(
    arch: Arch,
    boot: usize,
    chunk: &[Plan],
    nested: bool,
    register_page: bool,
    events: &[Event],
    out: &mut Vec<String>,
) {
    let name = arch.name();
    let want_hc = chunk
        .iter()
        .filter(|p| {
            matches!(
                p.entry,
                Entry::Hypercall {
                    intercepted: true,
                    ..
                }
            )
        })
        .count();
    let may_hc = chunk
        .iter()
        .filter(|p| matches!(p.entry, Entry::Hypercall { .. }))
        .count();
    let want_gpa = chunk
        .iter()
        .filter(|p| match &p.entry {
            Entry::Write { fault, .. } | Entry::Read { fault, .. } | Entry::Exec { fault, .. } => {
                fault.is_some()
            }
            Entry::Hypercall { want, .. } => matches!(want, Want::Fault(_)),
            Entry::Place { .. } => false,
        })
        .count();
    let (mut hc, mut gpa) = (0, 0);
    // The relays VTL2 made, in order, against what each entry must (or may) have relayed.
    let mut relays: Vec<&mockhv::model::HypercallRecord> = Vec::new();
    // VTL2's own calls once VTL0 runs: with nothing to relay, only the completion of each
    // intercept, one SetVpRegisters of VTL0's IP or pending event (the VtlReturns are the
    // host's VTL switches, not in its trace as hypercalls); with the x86 register page the IP
    // moves without one, so only the pending events of the GPA intercepts remain.
    let mut sets = 0;
    let mut vtl0_started = false;
    // The GPAs VTL2 named to the host for its own calls during boot (its hypercall pages):
    // once VTL0 runs, a GPA VTL2 names must be one of them (TLFS: VTL2 owns its pages; a
    // relay that handed the host VTL0's buffer, or another page, is a leak either way).
    let mut own_pages: BTreeSet<u64> = BTreeSet::new();
    for e in events {
        if let Event::Hypercall(h) = e {
            if h.vtl == Vtl::VTL2 && !Control::from_bits(h.control).fast() {
                let mut gpas = [h.input_gpa, h.output_gpa].into_iter().filter(|&g| g != 0);
                if !vtl0_started {
                    own_pages.extend(gpas.map(|g| g & !0xFFF));
                } else if let Some(g) = gpas.find(|g| !own_pages.contains(&(g & !0xFFF))) {
                    out.push(format!(
                        "{name} boot {boot}: invariant 4: VTL2 named GPA {g:#x} to the host in \
                         {:?} (its own pages: {own_pages:#x?})",
                        h.code
                    ));
                }
            }
        }
        match e {
            Event::Intercept { vtl, message, .. } if *vtl == Vtl::VTL0 => {
                vtl0_started = true;
                match message.header.message_type {
                    HvMessageType::HYPERCALL_INTERCEPT => hc += 1,
                    HvMessageType::GPA_INTERCEPT => gpa += 1,
                    _ => {}
                }
            }
            Event::Hypercall(h) if h.vtl == Vtl::VTL0 => vtl0_started = true,
            Event::Hypercall(h) if vtl0_started && h.vtl == Vtl::VTL2 => match h.code {
                HypercallCode::SET_VP_REGISTERS => sets += 1,
                HypercallCode::VTL_RETURN => {}
                HypercallCode::POST_MESSAGE
                | HypercallCode::SIGNAL_EVENT
                | HypercallCode::RETARGET_DEVICE_INTERRUPT
                    if chunk.iter().any(|p| {
                        matches!(
                            &p.entry,
                            Entry::Hypercall {
                                host: Host::Required(_) | Host::Optional(_),
                                ..
                            }
                        )
                    }) =>
                {
                    relays.push(h)
                }
                code => out.push(format!(
                    "{name} boot {boot}: invariant 4: with VTL0 running and nothing to relay, \
                     the paravisor made {code:?} (control {:#x}){}",
                    h.control,
                    if RELAYED.contains(&code) {
                        ": a relay with an empty relay table"
                    } else {
                        ""
                    }
                )),
            },
            _ => {}
        }
    }
    // In order: each entry takes the next relay if it is its own. A required relay that is not
    // next but comes later means the ones before it were asked for by no entry: those are
    // reported once and skipped, so one stray relay does not count against every later entry.
    let unasked = |r: &mockhv::model::HypercallRecord| {
        format!(
            "{name} boot {boot}: invariant 4: a relay no entry asked for: {:?} control {:#x} \
             input {:02x?}",
            r.code, r.control, r.input
        )
    };
    let mut next = 0;
    for p in chunk {
        let Entry::Hypercall { host, .. } = &p.entry else {
            continue;
        };
        let (want, required) = match host {
            Host::Required(h) => (h, true),
            Host::Optional(h) => (h, false),
            _ => continue,
        };
        let matches = |r: &mockhv::model::HypercallRecord| {
            r.code == want.code
                && r.control == want.control(nested)
                && r.input.get(..want.input.len()) == Some(&want.input[..])
        };
        if relays.get(next).is_some_and(|r| matches(r)) {
            next += 1;
        } else if required {
            match relays[next..].iter().position(|r| matches(r)) {
                Some(skip) => {
                    out.extend(relays[next..next + skip].iter().map(|r| unasked(r)));
                    next += skip + 1;
                }
                None => out.push(format!(
                    "{name} boot {boot}: invariant 4: {} was not relayed as {want:?} (next \
                     relay: {:?})",
                    p.what,
                    relays.get(next).map(|r| (r.code, r.control, &r.input))
                )),
            }
        }
    }
    out.extend(relays[next..].iter().map(|r| unasked(r)));
    let want_sets = if register_page { gpa } else { hc + gpa };
    if sets != want_sets {
        out.push(format!(
            "{name} boot {boot}: invariant 4: {hc} hypercall and {gpa} GPA intercepts, but VTL2 \
             made {sets} SetVpRegisters after VTL0 started (want {want_sets}: one per {})",
            if register_page {
                "GPA intercept, the register page moving the IP"
            } else {
                "intercept"
            }
        ));
    }
    if !(want_hc..=may_hc).contains(&hc) || gpa != want_gpa {
        out.push(format!(
            "{name} boot {boot}: invariant 4: expected {want_hc}..={may_hc} hypercall intercepts \
             and {want_gpa} GPA intercepts, the host handed VTL2 {hc} and {gpa}"
        ));
    }
}

/// Whether the live soak can run `arch`: `Err` with the host's refusal if not.
pub fn supported(images: &Images) -> Result<()> {
    match images.refusal() {
        None => Ok(()),
        Some(why) => bail!("{why}"),
    }
}

#[cfg(test)]
mod tests {
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

    fn plans(seed: u64, n: usize) -> Vec<Plan> {
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
    fn boots_respect_the_table_limits_and_keep_pairs_together() {
        let p = plans(7, 30_000);
        let b = boots(&p);
        assert_eq!(b.first().unwrap().start, 0);
        assert_eq!(b.last().unwrap().end, p.len());
        for w in b.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        for r in &b {
            assert!(r.len() <= MAX_ENTRIES as usize, "{r:?}");
            let table = p[r.clone()].iter().fold(Table::new(), |t, x| x.push(t));
            let bytes = table.to_bytes();
            assert!(bytes.len() <= TABLE_MAX);
            assert_eq!(
                bytes.len(),
                16 + p[r.clone()].iter().map(Plan::size).sum::<usize>()
            );
            assert!(vtl0::parse_table(&bytes, vtl0::Arch::Aarch64).is_ok());
            assert!(
                !p[r.start].follows,
                "a boot starts with a load of a store it lacks"
            );
        }
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

    #[test]
    fn faults_compare_as_each_arch_reports_them() {
        let load = Vtl0Access::Read { gpa: 0, len: 8 };
        let want = e2e::memory_fault(Arch::Aarch64, &load, false);
        let esr = (want >> 64) as u64;
        assert!(is_fault(Arch::Aarch64, &Fault::Arm64 { esr, far: 0 }, want));
        assert!(!is_fault(
            Arch::Aarch64,
            &Fault::Arm64 { esr, far: 8 },
            want
        ));
        assert!(!is_fault(
            Arch::Aarch64,
            &Fault::Arm64 {
                esr: esr ^ 1 << 6,
                far: 0
            },
            want
        ));
        let gp = e2e::memory_fault(Arch::X86_64, &load, false);
        let f = |vector, code| Fault::X86 {
            vector,
            code,
            cr2: 0x1234,
        };
        assert!(is_fault(Arch::X86_64, &f(13, 0), gp));
        assert!(!is_fault(Arch::X86_64, &f(14, 0), gp));
        assert!(!is_fault(Arch::X86_64, &f(13, 2), gp));
    }
}
