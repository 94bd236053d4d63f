//! `cargo xtask soak`: replays many random VTL0 hypercalls through the real release image under
//! the mock hypervisor, a fresh QEMU session per batch, and checks after each batch the
//! invariants the proxy must keep whatever VTL0 does:
//!
//! 1. the session succeeded (no fault the mock could not inject, every VP back in its run loop
//!    with its script done) and the console has no "PANIC" or "FATAL";
//! 2. every call got a final result, and every status VTL0 saw is one the TLFS allows for a
//!    proxied call ([`ALLOWED`]);
//! 3. the IP moved past every call, except a TIMEOUT (x64) or a re-execution (arm64) left on it,
//!    or a #UD injected for VtlCall/VtlReturn (which then leaves it on the call);
//! 4. every hypercall the paravisor made at VTL2 after a VP's boot used that VP's own input and
//!    output pages (learnt from its boot VsmVpStatus read), never another VP's;
//! 5. a call the paravisor made carried the nested bit exactly when the host is nested (every
//!    other batch) and the call is one a nested host's L0 owns (PostMessage, SignalEvent);
//! 6. a call whose input or output list, as VTL0 gave it, touches the paravisor's image
//!    (`__image_start..__image_end`) never succeeded, and the paravisor never named a GPA in its
//!    image to the host other than its own hypercall pages;
//! 7. the oracle (`soak/oracle.rs`, written from the TLFS, the scenario, the relay configuration
//!    and the ELF, never from the paravisor): for every well-formed and hostile call it
//!    predicts, the status VTL0 gets (the whole result word), the bytes of its output range, and
//!    the relays the host gets for it (none, or exactly one with this control word and these
//!    input bytes); for random control words, the shape of any relay;
//! 8. VTL0's own loads, stores and fetches (a tenth of the calls; in its memory, inside the
//!    image, across either image edge): one touching the image's pages is stopped and VTL0 takes
//!    exactly the architecture's fault with the IP left on it and no byte loaded; any other is
//!    carried out, a load giving the bytes VTL0 wrote.
//!
//! VTL0's memory, for the generator and the oracle, is the mock machine's RAM
//! (`Arch::ram_ranges`) inside what the boot page tables map (docs/ARCHITECTURE.md) minus the
//! image; the firmware's own reservations in x86 low memory are accepted either way. The machine
//! has RAM above 4 GiB (mapped by the boot page tables since issue 9's page-table work), and the
//! generator names GPAs just above 4 GiB and at the top of RAM.
//!
//! The host reflects every VTL0 hypercall to VTL2 (`Scenario::reflected_codes` = all codes):
//! Hyper-V reflects only PostMessage / SignalEvent / RetargetDeviceInterrupt for ids it does not
//! know, so this is the worst case the proxy's table must survive. The relay maps VTL0's
//! connections 0..8 to the host's 0x100..0x108 and VTL0 owns device 0x30. The generator picks
//! codes from the proxy's table (`TABLE`), which only widens what it tries; no check uses it.
//!
//! The calls come from a seeded SplitMix64 generator, one stream per arch, so a seed replays the
//! same script (printed; `--seed` takes it back). The interleaving of VPs is QEMU's and is not
//! reproduced exactly; with `--vps 1` a run is reproducible call for call.

mod live;
mod oracle;

use crate::image;
use anyhow::{bail, Context, Result};
use e2e::{call, code, get_registers_input, layout, post_message};
use hvdef::{
    Control, HvInputVtl, HvRegisterName, HvStatus, HypercallCode, Vtl, HV_PAGE_SIZE,
    HV_PARTITION_ID_SELF, HV_VP_INDEX_SELF,
};
use mockhv::model::{Abi, Event, HypercallRecord, Scenario, Vtl0Access, Vtl0Call, Vtl0Result};
use mockhv::qemu::Arch;
use mockhv::session::{self, Report, SessionConfig};
use paravisor::proxy::policy::TABLE;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use oracle::{Expect, Host, HostCall, Owner, Vtl0Map};

pub const DEFAULT_SEED: u64 = 0x50a6_2025;
/// Calls per QEMU session: a fresh session per batch keeps a failure's blast radius small.
const BATCH: usize = 500;
/// Violations printed in full; the rest are counted.
const SHOWN: usize = 20;
/// Pages of scratch VTL0 memory per VP (from the layout's input address): inputs, outputs.
const SCRATCH_PAGES: u64 = 4;
const PAGE: u64 = HV_PAGE_SIZE;
/// SynIC connection ids the mock host accepts; the generator picks from twice as many.
const KNOWN_CONNECTIONS: u32 = 8;
/// The device VTL0 owns (`pv.devices`); the generator also names the one after it.
const OWNED_DEVICE: u64 = 0x30;

pub struct Options {
    pub calls: u32,
    pub seed: u64,
    pub vps: u32,
    /// Soak through the gdbstub mock with a scripted VTL0 even where the in-VM host runs the
    /// real VTL0 kernel (see `live`).
    pub gdbstub: bool,
    /// Only the soak through the real VTL0: an arch the in-VM host cannot run one on is
    /// skipped with a note instead of soaked through the gdbstub mock.
    pub live_only: bool,
}

/// The soak's guest RAM, so that some of it is above 4 GiB: x86 q35 then has 2 GiB below 4 GiB
/// and 1 GiB above it; arm64 virt 1..5 GiB. QEMU allocates it lazily, so it costs no time.
fn memory_mb(arch: Arch) -> u32 {
    match arch {
        Arch::X86_64 => 3072,
        Arch::Aarch64 => 4096,
    }
}

/// Statuses VTL0 may see from a proxied call. The paravisor's own answers (`classify`,
/// `validate`, `screen_input`, VTL0 memory access) use INVALID_HYPERCALL_CODE,
/// INVALID_HYPERCALL_INPUT, INVALID_ALIGNMENT, INVALID_PARAMETER, ACCESS_DENIED,
/// INVALID_CONNECTION_ID (a connection the relay does not map) and INVALID_DEVICE_ID (a device
/// VTL0 does not own). Relayed calls return what the mock's model returns for them: the same
/// control-word and list statuses, INVALID_PARAMETER for a bad message, INVALID_CONNECTION_ID /
/// INVALID_DEVICE_ID. The TLFS lists INVALID_PORT_ID and INSUFFICIENT_BUFFERS for the SynIC calls
/// a real host may return. Not allowed: OPERATION_DENIED (the relay reached a port VTL0 may not
/// use), INVALID_PARTITION_ID (the paravisor screens partition ids to ACCESS_DENIED), TIMEOUT (the
/// soak injects none and no rep call is relayed), VP-start and register statuses (nothing of
/// that kind is forwarded any more), and unknown values.
const ALLOWED: [HvStatus; 10] = [
    HvStatus::SUCCESS,
    HvStatus::INVALID_DEVICE_ID,
    HvStatus::INVALID_HYPERCALL_CODE,
    HvStatus::INVALID_HYPERCALL_INPUT,
    HvStatus::INVALID_ALIGNMENT,
    HvStatus::INVALID_PARAMETER,
    HvStatus::ACCESS_DENIED,
    HvStatus::INVALID_CONNECTION_ID,
    HvStatus::INVALID_PORT_ID,
    HvStatus::INSUFFICIENT_BUFFERS,
];

/// SplitMix64: small, seedable, good enough to pick test inputs.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// What the soak knows of one arch's memory: from the scenario (the mock machine's RAM) and the
/// ELF, never from the paravisor.
struct Memory {
    /// VTL0's memory by the oracle.
    map: Vtl0Map,
    /// The machine's RAM.
    ram: Vec<Range<u64>>,
    /// `__image_start..__image_end` from the ELF.
    image: Range<u64>,
    memory_mb: u32,
}

impl Memory {
    fn in_vtl0(&self, gpa: u64, len: u64) -> bool {
        self.map.owner(gpa, len) == Owner::Vtl0
    }

    fn ram_end(&self) -> u64 {
        self.ram.iter().map(|r| r.end).max().unwrap_or(0)
    }
}

/// Which part of the mix a call comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    WellFormed,
    RandomControl,
    HostileGpa,
    /// A load, store or instruction fetch by VTL0 itself, in its memory, in the image or across
    /// the image's edges.
    Access,
}

/// One generated VTL0 call and what the checks need to know of it.
struct Planned {
    call: Vtl0Call,
    kind: Kind,
    control: Control,
    /// Memory-based calls: the GPAs VTL0 named (RDX/R8, X2/X3).
    gpas: Option<(u64, u64)>,
    what: String,
    /// The oracle's verdict.
    expect: Expect,
    /// [`Kind::Access`]: the exception VTL0 must take (its `HvRegisterPendingEvent0`), or
    /// `None` when the access must be carried out and the IP moved on.
    fault: Option<u128>,
}

impl Planned {
    fn describe(&self) -> String {
        let gpas = self
            .gpas
            .map_or("fast".to_string(), |(i, o)| format!("in {i:#x} out {o:#x}"));
        format!(
            "vp{}, {:?} control {:#x}, {gpas}; {:?}: {}",
            self.call.vp,
            self.control.code(),
            self.control.into_bits(),
            self.kind,
            self.what
        )
    }

    /// The input and output lists as VTL0 gave them, with their sizes from hvdef's input
    /// structs (not from the proxy's table, which is under test); a code without a known layout
    /// gets one byte at each GPA (any GPA in the image counts).
    fn ranges(&self) -> Vec<Range<u128>> {
        let Some((input, output)) = self.gpas else {
            return Vec::new();
        };
        let var = usize::from(self.control.variable_header_size()) * 8;
        let (in_len, out_len) = match self.control.code() {
            HypercallCode::POST_MESSAGE => (size_of::<hvdef::HvInputPostMessage>(), 0),
            HypercallCode::SIGNAL_EVENT => (size_of::<hvdef::HvInputSignalEvent>(), 0),
            HypercallCode::RETARGET_DEVICE_INTERRUPT => {
                (size_of::<hvdef::HvInputRetargetDeviceInterrupt>() + var, 0)
            }
            HypercallCode::EXT_QUERY_CAPABILITIES => (0, size_of::<u64>()),
            _ => (1, 1),
        };
        [(input, in_len), (output, out_len)]
            .into_iter()
            .filter(|&(_, len)| len != 0)
            .map(|(gpa, len)| u128::from(gpa)..u128::from(gpa) + len as u128)
            .collect()
    }
}

/// Register names VTL0 may read, valid on both arches (plus the IP and a GPR per arch).
const NAMES: [HvRegisterName; 10] = [
    HvRegisterName::VP_INDEX,
    HvRegisterName::TIME_REF_COUNT,
    HvRegisterName::VP_RUNTIME,
    HvRegisterName::GUEST_OS_ID,
    HvRegisterName::HYPERVISOR_VERSION,
    HvRegisterName::VSM_VP_STATUS,
    HvRegisterName::SCONTROL,
    HvRegisterName::SIMP,
    HvRegisterName::SINT0,
    HvRegisterName::VP_ASSIST_PAGE,
];

struct Generator<'a> {
    arch: Arch,
    rng: Rng,
    mem: &'a Memory,
    vps: u32,
}

impl Generator<'_> {
    /// VP `vp`'s scratch page `n` (0..SCRATCH_PAGES).
    fn scratch(&self, vp: u32, n: u64) -> u64 {
        layout(self.arch).input + (u64::from(vp) * SCRATCH_PAGES + n) * PAGE
    }

    /// An 8-byte aligned GPA in scratch page `n` with room for `len` bytes.
    fn scratch_at(&mut self, vp: u32, n: u64, len: u64) -> u64 {
        let room = (PAGE - len.min(PAGE)) / 8 + 1;
        self.scratch(vp, n) + 8 * self.rng.below(room)
    }

    fn names(&mut self, n: usize) -> Vec<HvRegisterName> {
        let ip = match self.arch {
            Arch::X86_64 => hvdef::x86_64::reg::RIP,
            Arch::Aarch64 => hvdef::aarch64::reg::XPC,
        };
        // Mostly real names; some from the whole 32-bit name space.
        (0..n)
            .map(|_| match self.rng.below(10) {
                0 => ip,
                1 => HvRegisterName(self.rng.next() as u32),
                _ => self.rng.pick(&NAMES),
            })
            .collect()
    }

    fn next_call(&mut self) -> Planned {
        let vp = self.rng.below(u64::from(self.vps)) as u32;
        let roll = self.rng.below(100);
        let mut planned = if roll < 40 {
            self.well_formed(vp)
        } else if roll < 65 {
            self.random_control(vp)
        } else if roll < 90 {
            self.hostile(vp)
        } else {
            self.access(vp)
        };
        planned.call = planned.call.on_vp(vp);
        planned
    }

    fn planned(
        &self,
        kind: Kind,
        control: Control,
        a: u64,
        b: u64,
        what: impl Into<String>,
    ) -> Planned {
        Planned {
            call: call(self.arch, control, a, b),
            kind,
            control,
            gpas: (!control.fast()).then_some((a, b)),
            what: what.into(),
            expect: Expect::unchecked(),
            fault: None,
        }
    }

    /// VTL0 touches memory itself: a load, store or fetch in its scratch page, inside the image
    /// or across either of the image's edges. The oracle: VTL2 protected exactly the image's
    /// pages (the ELF's `__image_start..__image_end`), so an access that touches one is stopped
    /// and VTL0 takes the architecture's fault (`e2e::memory_fault`: x64 #GP(0), arm64 a
    /// synchronous external abort from EL1);
    /// any other access is carried out (a load of bytes VTL0 wrote first gives those bytes).
    fn access(&mut self, vp: u32) -> Planned {
        let image = self.mem.image.clone();
        let len = 8 * (1 + self.rng.below(4));
        let (gpa, place) = match self.rng.below(5) {
            0 | 1 => (self.scratch_at(vp, 1, len), "VTL0's page"),
            2 => (
                image.start + 8 * self.rng.below((image.end - image.start - len) / 8),
                "the image",
            ),
            3 => (image.start - 4, "across the image's start"),
            _ => (image.end - 4, "across the image's end"),
        };
        let ip = layout(self.arch).ip;
        let (access, kind) = match self.rng.below(3) {
            0 => (
                Vtl0Access::Read {
                    gpa,
                    len: len as usize,
                },
                "load",
            ),
            1 => (
                Vtl0Access::Write {
                    gpa,
                    bytes: self.rng.bytes(len as usize),
                },
                "store",
            ),
            _ => (Vtl0Access::Execute { gpa }, "fetch"),
        };
        // A fetch is of the instruction's first byte (the model's span for it).
        let span = if matches!(access, Vtl0Access::Execute { .. }) {
            1
        } else {
            len
        };
        let protected = gpa < image.end && image.start < gpa + span;
        let fault = protected.then(|| e2e::memory_fault(self.arch, &access, false));
        let mut call = Vtl0Call::access(self.arch, ip, access.clone());
        let mut output = None;
        if let (Vtl0Access::Read { .. }, false) = (&access, protected) {
            let bytes = self.rng.bytes(len as usize);
            call = call.with_memory(gpa, &bytes);
            output = Some(bytes);
        }
        Planned {
            call,
            kind: Kind::Access,
            control: Control::new(),
            gpas: None,
            what: format!("{kind} of {len} bytes at {gpa:#x}, {place}"),
            expect: Expect {
                output,
                ..Expect::unchecked()
            },
            fault,
        }
    }

    /// A PostMessage input, valid or broken in one field: (bytes, how, connection, valid).
    fn message(&mut self) -> (Vec<u8>, &'static str, u32, bool) {
        let connection = self.rng.below(2 * u64::from(KNOWN_CONNECTIONS)) as u32;
        let mut m = post_message(connection);
        let valid = self.rng.percent(70);
        let broken = if valid {
            "valid message"
        } else {
            // TLFS HvCallPostMessage: INVALID_PARAMETER for a message type that is 0 or has
            // bit 31 (the hypervisor's), a payload over 240 bytes, or RsvdZ set.
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
        // Random payload bytes: VTL0 memory is VTL0's.
        let payload = self.rng.bytes(240);
        m[16..].copy_from_slice(&payload);
        (m, broken, connection, valid)
    }

    /// A GPA for `len` bytes of input: usually in scratch page `n`, sometimes at the very top of
    /// VTL0's RAM (with `--above-4g`, RAM above 4 GiB).
    fn input_at(&mut self, vp: u32, n: u64, len: u64) -> u64 {
        const FOUR_G: u64 = 4 << 30;
        // A page per VP, so that VPs running at once never share bytes; the last page of RAM
        // is left to the hostile GPAs that straddle its end.
        let own_page = PAGE * u64::from(vp);
        match self.rng.below(20) {
            0 => self.mem.map.top(len) - PAGE - own_page,
            // Just above 4 GiB (RAM there on both layouts, see `memory_mb`).
            1 if self.mem.ram_end() > FOUR_G + PAGE * u64::from(self.vps) => {
                FOUR_G + own_page + 8 * self.rng.below(8)
            }
            _ => self.scratch_at(vp, n, len),
        }
    }

    /// A RetargetDeviceInterrupt input: the VP mask, or (half the time) a sparse VP set of 0 to
    /// `max_banks` banks in the variable header; returns (bytes, variable header size).
    fn retarget(&mut self, partition: u64, device: u64, max_banks: u64) -> (Vec<u8>, u16) {
        // HvInputRetargetDeviceInterrupt, field by field (TLFS / hvdef layout, 56 bytes).
        let fixed = |flags: u32, mask_or_format: u64, data: u64, vector: u32| {
            let mut b = Vec::with_capacity(56);
            b.extend(partition.to_le_bytes());
            b.extend(device.to_le_bytes());
            b.extend(1u32.to_le_bytes()); // MSI
            b.extend(0u32.to_le_bytes());
            b.extend(data.to_le_bytes());
            b.extend(0u64.to_le_bytes());
            b.extend(vector.to_le_bytes());
            b.extend(flags.to_le_bytes());
            b.extend(mask_or_format.to_le_bytes());
            b
        };
        let data = 0xFEE0_0000_0000_0041 | (self.rng.below(0x100) << 44);
        let vector = 0x20 + self.rng.below(0xD0) as u32;
        if !self.rng.percent(50) {
            let mask = 1 + self.rng.below(u64::MAX - 1);
            return (fixed(0, mask, data, vector), 0);
        }
        // HV_DEVICE_INTERRUPT_TARGET_PROCESSOR_SET, format HV_GENERIC_SET_SPARSE_4K (0).
        let mut bytes = fixed(
            hvdef::HV_DEVICE_INTERRUPT_TARGET_PROCESSOR_SET,
            0,
            data,
            vector,
        );
        let banks = self.rng.below(max_banks + 1);
        let mut mask = 0u64;
        while u64::from(mask.count_ones()) < banks {
            mask |= 1 << self.rng.below(64);
        }
        bytes.extend(mask.to_le_bytes());
        for _ in 0..banks {
            bytes.extend(self.rng.next().to_le_bytes());
        }
        (bytes, 1 + banks as u16)
    }

    /// ~40%: calls the proxy serves, shaped as the TLFS says, each with the oracle's verdict.
    fn well_formed(&mut self, vp: u32) -> Planned {
        let k = Kind::WellFormed;
        let known = KNOWN_CONNECTIONS;
        match self.rng.below(12) {
            0 | 1 => {
                // Relayed when VTL0 owns the device, INVALID_DEVICE_ID otherwise; another
                // partition's id is ACCESS_DENIED (VTL0 speaks for itself only).
                let device = self.rng.pick(&[OWNED_DEVICE, OWNED_DEVICE + 1]);
                let partition = if self.rng.percent(90) {
                    HV_PARTITION_ID_SELF
                } else {
                    self.rng.next() >> 1
                };
                // Fast: x64 RDX, R8 and XMM0-5 (112 bytes), arm64 X2-X17 (128 bytes).
                let fast = self.rng.percent(30);
                let fast_room = match self.arch {
                    Arch::X86_64 => 112,
                    Arch::Aarch64 => 128,
                };
                let max_banks = if fast { (fast_room - 64) / 8 } else { 64 };
                let (bytes, var) = self.retarget(partition, device, max_banks);
                let control =
                    code(HypercallCode::RETARGET_DEVICE_INTERRUPT).with_variable_header_size(var);
                let mut expect = match (partition == HV_PARTITION_ID_SELF, device == OWNED_DEVICE) {
                    (true, true) => Expect::exactly(
                        HvStatus::SUCCESS,
                        Host::Required(HostCall {
                            code: HypercallCode::RETARGET_DEVICE_INTERRUPT,
                            // The paravisor is soft-float: x64 XMM input goes memory-based.
                            fast: fast && self.arch == Arch::Aarch64,
                            var,
                            input: bytes.clone(),
                        }),
                    ),
                    (false, true) => Expect::exactly(HvStatus::ACCESS_DENIED, Host::None),
                    (true, false) => Expect::exactly(HvStatus::INVALID_DEVICE_ID, Host::None),
                    (false, false) => Expect {
                        statuses: vec![HvStatus::ACCESS_DENIED, HvStatus::INVALID_DEVICE_ID],
                        host: Host::None,
                        output: None,
                    },
                };
                let what = format!("RetargetDeviceInterrupt, variable header {var}");
                if fast {
                    let mut p = self.planned(k, control.with_fast(true), 0, 0, what + ", fast");
                    p.call = e2e::fast_call(self.arch, control, &bytes).on_vp(vp);
                    p.expect = expect;
                    return p;
                }
                let input = self.input_at(vp, 0, bytes.len() as u64);
                expect = expect.with_lists(&self.mem.map, &[(input, bytes.len() as u64)]);
                let mut p = self.planned(k, control, input, 0, what);
                p.call = p.call.with_memory(input, &bytes);
                p.expect = expect;
                p
            }
            2 | 3 => {
                let (message, how, connection, valid) = self.message();
                let input = self.input_at(vp, 0, message.len() as u64);
                let output = if self.rng.percent(50) {
                    0
                } else {
                    self.rng.next() & !7
                };
                let control = code(HypercallCode::POST_MESSAGE);
                let mut p = self.planned(k, control, input, output, format!("PostMessage, {how}"));
                p.call = p.call.with_memory(input, &message);
                // PostMessage has no output list: its GPA is not looked at.
                p.expect = oracle::synic(
                    HypercallCode::POST_MESSAGE,
                    false,
                    connection,
                    known,
                    valid,
                    &message,
                )
                .with_lists(&self.mem.map, &[(input, message.len() as u64)]);
                p
            }
            4 | 5 => {
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
                let connection = self.rng.below(2 * u64::from(known));
                let word = connection | flag << 32 | reserved << 48;
                // TLFS HvCallSignalEvent: flag numbers below 2048 (HV_EVENT_FLAGS_COUNT),
                // RsvdZ zero; else INVALID_PARAMETER.
                let valid = flag < 2048 && reserved == 0;
                let bytes = word.to_le_bytes();
                if self.rng.percent(60) {
                    let control = code(HypercallCode::SIGNAL_EVENT).with_fast(true);
                    let b = self.rng.next();
                    let mut p = self.planned(k, control, word, b, "fast SignalEvent");
                    p.expect = oracle::synic(
                        HypercallCode::SIGNAL_EVENT,
                        true,
                        connection as u32,
                        known,
                        valid,
                        &bytes,
                    );
                    return p;
                }
                let input = self.input_at(vp, 0, 8);
                let control = code(HypercallCode::SIGNAL_EVENT);
                let mut p = self.planned(k, control, input, 0, "SignalEvent");
                p.call = p.call.with_memory(input, &bytes);
                p.expect = oracle::synic(
                    HypercallCode::SIGNAL_EVENT,
                    false,
                    connection as u32,
                    known,
                    valid,
                    &bytes,
                )
                .with_lists(&self.mem.map, &[(input, 8)]);
                p
            }
            6..=8 => {
                let n = 1 + self.rng.below(8) as usize;
                let vtl = if self.rng.percent(50) {
                    HvInputVtl::CURRENT
                } else {
                    HvInputVtl::target(Vtl::VTL0)
                };
                let names = self.names(n);
                let input_bytes = get_registers_input(vtl, &names);
                let input = self.scratch_at(vp, 1, input_bytes.len() as u64);
                let output = self.scratch_at(vp, 2, 16 * n as u64);
                let control = code(HypercallCode::GET_VP_REGISTERS).with_rep_count(n as u16);
                let mut p = self.planned(k, control, input, output, "GetVpRegisters");
                // The hypervisor's own call: the paravisor has no entry for it (the host
                // reflects it only in this worst-case scenario), so INVALID_HYPERCALL_CODE and
                // VTL0's output untouched.
                let noise = self.rng.bytes(16 * n);
                p.call = p
                    .call
                    .with_memory(input, &input_bytes)
                    .with_memory(output, &noise)
                    .with_output(output, 16 * n);
                p.expect = Expect {
                    output: Some(noise),
                    ..Expect::exactly(HvStatus::INVALID_HYPERCALL_CODE, Host::None)
                };
                p
            }
            9 | 10 => {
                // Room for 16 bytes: the 8 after the output list must stay as they were.
                let output = self.input_at(vp, 2, 16);
                let input = if self.rng.percent(50) {
                    0
                } else {
                    self.rng.next()
                };
                let control = code(HypercallCode::EXT_QUERY_CAPABILITIES);
                let mut p = self.planned(k, control, input, output, "QueryCapabilities");
                let noise = self.rng.bytes(16);
                p.call = p.call.with_memory(output, &noise).with_output(output, 16);
                // No extended call is relayed, so the capabilities VTL0 may use are none
                // (docs/ARCHITECTURE.md): SUCCESS and 8 zero bytes, nothing past them. No input
                // list.
                let mut want = vec![0; 8];
                want.extend(&noise[8..]);
                p.expect = Expect {
                    output: Some(want),
                    ..Expect::exactly(HvStatus::SUCCESS, Host::None)
                }
                .with_lists(&self.mem.map, &[(output, 8)]);
                if p.expect.statuses != [HvStatus::SUCCESS] {
                    p.call.output = None;
                }
                p
            }
            _ => {
                let control = code(HypercallCode::EXT_QUERY_CAPABILITIES).with_fast(true);
                let (a, b) = (self.rng.next(), self.rng.next());
                let mut p = self.planned(k, control, a, b, "fast QueryCapabilities");
                // TLFS: extended calls are never fast.
                p.expect = Expect::exactly(HvStatus::INVALID_PARAMETER, Host::None);
                p
            }
        }
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

    /// A control word: a code from the table or any u16, and random fast bit, reps, variable
    /// header, reserved bits and nested bit.
    fn control(&mut self) -> Control {
        let code = if self.rng.percent(80) {
            self.rng.pick(&TABLE).code
        } else {
            HypercallCode(self.rng.next() as u16)
        };
        let count = if self.rng.percent(80) {
            self.rng.below(5)
        } else {
            self.rng.below(0x1000)
        };
        // Rep start up to 4095 (the 12-bit field), variable-header sizes up to the 10-bit
        // field's maximum (1023 qwords, far past a page).
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

    /// ~30%: random control words, with plausible GPAs and random contents.
    fn random_control(&mut self, vp: u32) -> Planned {
        let control = self.control();
        let k = Kind::RandomControl;
        if control.fast() {
            let a = if self.rng.percent(30) {
                HV_PARTITION_ID_SELF
            } else {
                self.rng.next()
            };
            let b = self.rng.next();
            let mut p = self.planned(k, control, a, b, "random fast block");
            // The rest of the fast block: x64 XMM0-5, arm64 X4..X17.
            match self.arch {
                Arch::X86_64 => {
                    for n in 0..6 {
                        let value = u128::from(self.rng.next()) << 64 | u128::from(self.rng.next());
                        let name = HvRegisterName(hvdef::x86_64::reg::XMM0.0 + n);
                        p.call = p.call.with_register(name, value);
                    }
                }
                Arch::Aarch64 => {
                    for n in 4..18 {
                        let name = HvRegisterName(hvdef::aarch64::reg::X0.0 + n);
                        p.call = p.call.with_register(name, self.rng.next().into());
                    }
                }
            }
            return p;
        }
        let len = self.rng.below(321) as usize;
        let input = if self.rng.percent(70) {
            self.scratch(vp, 0)
        } else {
            self.scratch_at(vp, 0, len as u64)
        };
        let page = 2 + self.rng.below(2);
        let output = self.scratch_at(vp, page, 0);
        let bytes = self.plausible_input(len);
        let mut p = self.planned(
            k,
            control,
            input,
            output,
            format!("{len} random input bytes"),
        );
        p.call = p.call.with_memory(input, &bytes);
        p
    }

    /// A GPA that breaks a rule, and the rule's name.
    fn hostile_gpa(&mut self, vp: u32, len: u64, other: u64) -> (u64, &'static str) {
        let image = &self.mem.image;
        match self.rng.below(9) {
            0 => (
                self.scratch_at(vp, 1, len) + 1 + self.rng.below(7),
                "misaligned",
            ),
            1 => (
                self.scratch(vp, 1) + PAGE - 8 * (1 + self.rng.below(len.max(16) / 8 - 1)),
                "page-crossing",
            ),
            2 => (other + 8 * self.rng.below(len.max(8) / 8), "overlapping"),
            3 => {
                let pages = (image.end - image.start) / PAGE;
                let gpa = image.start + self.rng.below(pages) * PAGE;
                let gpa = if self.rng.percent(50) {
                    gpa
                } else {
                    gpa + 8 * self.rng.below(PAGE / 8)
                };
                (gpa, "inside the paravisor's image")
            }
            4 => {
                let gpa = if self.rng.percent(50) {
                    image.start - 8 * (1 + self.rng.below(len.max(8) / 8))
                } else {
                    image.end - 8 * (1 + self.rng.below(len.max(8) / 8))
                };
                (gpa, "straddling the image's edge")
            }
            5 => {
                let end = self.mem.ram_end();
                let gpa = match self.rng.below(4) {
                    0 => end + 8 * self.rng.below(0x10_0000),
                    1 => end - 8 * (1 + self.rng.below(len.max(8) / 8)),
                    2 => 1 << (40 + self.rng.below(24)),
                    _ => u64::MAX - 8 * self.rng.below(1024) - 7,
                };
                (gpa, "beyond RAM")
            }
            6 => (0, "zero"),
            7 => {
                // A GPA in no VTL0 range (a RAM hole or MMIO below RAM).
                let hole = match self.arch {
                    Arch::X86_64 => 0xA_0000 + 8 * self.rng.below(0x6000),
                    Arch::Aarch64 => 0x0800_0000 + 8 * self.rng.below(0x2_0000),
                };
                (hole, "outside VTL0 RAM")
            }
            _ => (self.rng.next() & !7, "random"),
        }
    }

    /// ~30%: memory-based calls of a valid shape whose GPAs break the rules.
    fn hostile(&mut self, vp: u32) -> Planned {
        let (control, input_bytes, out_len, what, expect) = match self.rng.below(4) {
            0 => {
                let (m, _, connection, valid) = self.message();
                let expect = oracle::synic(
                    HypercallCode::POST_MESSAGE,
                    false,
                    connection,
                    KNOWN_CONNECTIONS,
                    valid,
                    &m,
                );
                (
                    code(HypercallCode::POST_MESSAGE),
                    m,
                    0,
                    "PostMessage",
                    expect,
                )
            }
            1 => {
                let n = 1 + self.rng.below(8) as usize;
                let names = self.names(n);
                let control = code(HypercallCode::GET_VP_REGISTERS).with_rep_count(n as u16);
                let input = get_registers_input(HvInputVtl::CURRENT, &names);
                let expect = Expect::exactly(HvStatus::INVALID_HYPERCALL_CODE, Host::None);
                (control, input, 16 * n as u64, "GetVpRegisters", expect)
            }
            2 => (
                code(HypercallCode::EXT_QUERY_CAPABILITIES),
                Vec::new(),
                8,
                "QueryCapabilities",
                Expect::exactly(HvStatus::SUCCESS, Host::None),
            ),
            _ => {
                // Any table code with a valid shape: one rep, one variable-header word.
                let code = self.rng.pick(&TABLE).code;
                let control = Control::new()
                    .with_code(code)
                    .with_rep_count(u16::from(code.is_rep()))
                    .with_variable_header_size(u16::from(code.takes_variable_header()));
                let len = self.rng.below(257) as usize;
                let bytes = self.plausible_input(len);
                (control, bytes, 16, "table call", Expect::unchecked())
            }
        };
        let in_len = input_bytes.len() as u64;
        let mut input = self.scratch_at(vp, 0, in_len);
        let mut output = self.scratch_at(vp, 2, out_len);
        let broken = match self.rng.below(3) {
            0 => {
                let (gpa, rule) = self.hostile_gpa(vp, in_len, output);
                input = gpa;
                format!("input {rule}")
            }
            1 => {
                let (gpa, rule) = self.hostile_gpa(vp, out_len, input);
                output = gpa;
                format!("output {rule}")
            }
            _ => {
                let (gpa, in_rule) = self.hostile_gpa(vp, in_len, output);
                input = gpa;
                let (gpa, out_rule) = self.hostile_gpa(vp, out_len, input);
                output = gpa;
                format!("input {in_rule}, output {out_rule}")
            }
        };
        let what = format!("{what}, {broken}");
        let mut p = self.planned(Kind::HostileGpa, control, input, output, what);
        if !matches!(expect.host, Host::Unchecked) {
            p.expect = expect.with_lists(&self.mem.map, &[(input, in_len), (output, out_len)]);
        }
        // VTL0 memory at the GPAs that are VTL0's: the call's input, or noise.
        if !input_bytes.is_empty() && self.mem.in_vtl0(input, in_len) {
            let bytes = if self.rng.percent(70) {
                input_bytes
            } else {
                // Noise: the oracle's verdict was for the real input.
                if !matches!(p.expect.host, Host::Unchecked) {
                    p.expect = Expect::unchecked();
                }
                self.rng.bytes(input_bytes.len())
            };
            p.call = p.call.with_memory(input, &bytes);
        }
        if out_len != 0 && self.mem.in_vtl0(output, out_len) {
            let noise = self.rng.bytes(out_len as usize);
            // A call that fails leaves VTL0's output as it was; the answered query writes 0.
            if !matches!(p.expect.host, Host::Unchecked) {
                p.expect.output = match p.expect.statuses[..] {
                    [HvStatus::SUCCESS] => Some(vec![0; 8]),
                    _ if !p.expect.statuses.contains(&HvStatus::SUCCESS) => Some(noise.clone()),
                    _ => None,
                };
            }
            p.call = p
                .call
                .with_memory(output, &noise)
                .with_output(output, noise.len());
        }
        p
    }
}

/// The per-arch stream: the same seed gives the same calls with `--arch all` or one arch.
fn arch_seed(seed: u64, arch: Arch) -> u64 {
    let salt = match arch {
        Arch::X86_64 => 0x7836_3400,
        Arch::Aarch64 => 0xa653_4000,
    };
    let mut rng = Rng::new(seed ^ salt);
    rng.next()
}

/// One QEMU session of the soak's scenario: `nested` makes the host a nested one (its L0 owns
/// PostMessage and SignalEvent).
fn session(
    elf: &Path,
    arch: Arch,
    mem: &Memory,
    vps: u32,
    nested: bool,
    vtl0: Vec<Vtl0Call>,
) -> Result<Report> {
    // The worst case for the paravisor: a host that reflects every VTL0 hypercall to VTL2
    // (Hyper-V reflects only PostMessage/SignalEvent/RetargetDeviceInterrupt for ids it does not
    // know; the rest of the table is the proxy's defence against hosts that do more). The host
    // knows SynIC connections 0x100..0x108 only and the paravisor relays VTL0's ids 0..8 to them
    // (the generator uses 0..16), so a relay without its rewrite, and the relay's
    // INVALID_CONNECTION_ID, both reach the checks.
    let scenario = Scenario {
        vp_count: vps,
        nested,
        ports: (0..KNOWN_CONNECTIONS)
            .filter_map(|c| oracle::host_connection(c, KNOWN_CONNECTIONS))
            .map(|c| (c, Vtl::VTL0))
            .collect(),
        reflected_codes: (0..=u16::MAX).map(HypercallCode).collect(),
        // A device VTL2 manages for VTL0: the host knows it for VTL2's calls.
        devices: [(OWNED_DEVICE, Vtl::VTL2)].into(),
        ..Scenario::for_arch(arch)
    };
    let relay: Vec<String> = (0..KNOWN_CONNECTIONS)
        .filter_map(|c| {
            Some(format!(
                "{c}:{:#x}",
                oracle::host_connection(c, KNOWN_CONNECTIONS)?
            ))
        })
        .collect();
    let mut config = SessionConfig::new(elf.to_path_buf(), scenario);
    config.append = Some(format!(
        "pv.relay={} pv.devices={OWNED_DEVICE:#x}",
        relay.join(",")
    ));
    config.memory_mb = mem.memory_mb;
    config.timeout = Duration::from_secs(60 + vtl0.len() as u64 / 2);
    config.vtl0 = vtl0;
    session::run(config)
}

/// Who a VTL2 hypercall was made for: the boot, or the delivery of a scripted call.
fn attribution(deliveries: &BTreeMap<u32, Vec<(usize, u32)>>, vp: u32, seen: usize) -> String {
    match seen.checked_sub(1) {
        None => format!("vp{vp} during boot"),
        Some(k) => match deliveries.get(&vp).and_then(|d| d.get(k)) {
            Some(&(index, attempt)) => format!("call #{index} (attempt {attempt}, vp{vp})"),
            None => format!("vp{vp} after its script"),
        },
    }
}

struct Batch<'a> {
    arch: Arch,
    /// Global index of the batch's first call.
    first: usize,
    plans: &'a [Planned],
    mem: &'a Memory,
    vps: u32,
    /// The host is nested.
    nested: bool,
}

impl Batch<'_> {
    /// A VTL0 load, store or fetch: delivered once, faulted exactly as the oracle says with the
    /// IP on the instruction, or carried out with the IP moved on and a load's bytes VTL0's.
    fn check_access(
        &self,
        index: usize,
        plan: &Planned,
        attempts: &[Vtl0Result],
        stats: &mut Stats,
        out: &mut Vec<String>,
    ) {
        let arch = self.arch.name();
        let last = attempts.last().expect("at least one attempt");
        let outcome = if last.pending_event().is_some() {
            "access faulted"
        } else {
            "access carried out"
        };
        *stats.statuses.entry(outcome.to_string()).or_default() += 1;
        let ok = attempts.len() == 1
            && last.pending_event() == plan.fault
            && last.advanced() == plan.fault.is_none()
            && last.reached_vtl2 == plan.fault.is_some()
            && plan
                .expect
                .output
                .as_ref()
                .is_none_or(|want| &last.output == want)
            && (plan.fault.is_none() || last.output.is_empty());
        if !ok {
            out.push(format!(
                "{arch} call #{index} ({}): invariant 8: expected {}, but VTL0 has pending event \
                 {:?}, IP {:#x} (was {:#x}), {} attempt(s), reached VTL2 {}, loaded {:02x?}",
                plan.describe(),
                plan.fault
                    .map_or("the access carried out".to_string(), |e| format!(
                        "pending event {e:#x} with the IP left on the instruction"
                    )),
                last.pending_event(),
                last.ip_after,
                last.ip_before,
                attempts.len(),
                last.reached_vtl2,
                last.output
            ));
        }
    }

    fn check(&self, report: &mut Report, stats: &mut Stats, out: &mut Vec<String>) {
        let arch = self.arch.name();
        let g = |local: usize| self.first + local;
        let mut results: BTreeMap<usize, Vec<Vtl0Result>> = BTreeMap::new();
        // Per VP, the deliveries in order: (global index, attempt).
        let mut deliveries: BTreeMap<u32, Vec<(usize, u32)>> = BTreeMap::new();
        for r in report.model.vtl0().results() {
            results.entry(r.index).or_default().push(r.clone());
            deliveries
                .entry(r.vp)
                .or_default()
                .push((g(r.index), r.attempt));
        }
        let first_missing = (0..self.plans.len()).find(|i| !results.contains_key(i));

        // 1. The session itself.
        if !report.succeeded() {
            let at = first_missing.map_or("after the last call".into(), |i| {
                format!("at call #{} ({})", g(i), self.plans[i].describe())
            });
            out.push(format!(
                "{arch} {at}: invariant 1: expected the session to end with every VP proxying \
                 and its script done, but: {}",
                report.summary()
            ));
        }
        for line in report.run.console.lines() {
            if line.contains("PANIC") || line.contains("FATAL") {
                let at = first_missing.map_or("after the last call".into(), |i| {
                    format!("at or before call #{}", g(i))
                });
                out.push(format!(
                    "{arch} {at}: invariant 1: expected a clean console, but it says {:?}",
                    line.trim()
                ));
            }
        }

        // 2, 3 and 6 (statuses), per call.
        let image = &self.mem.image;
        let image128 = u128::from(image.start)..u128::from(image.end);
        for (i, plan) in self.plans.iter().enumerate() {
            let Some(attempts) = results.get_mut(&i) else {
                if report.succeeded() {
                    out.push(format!(
                        "{arch} call #{} ({}): invariant 2: expected a result, but VTL0 never \
                         got one",
                        g(i),
                        plan.describe()
                    ));
                }
                continue;
            };
            attempts.sort_by_key(|r| r.attempt);
            if plan.kind == Kind::Access {
                self.check_access(g(i), plan, attempts, stats, out);
                continue;
            }
            let reexecuted = |r: &Vtl0Result| {
                self.arch == Arch::Aarch64
                    && !r.advanced()
                    && r.result == u64::from(hvdef::aarch64::SMCCC_HV_FUNC_ID)
            };
            // An exception injected into VTL0 (#UD / undefined instruction): the IP stays on the
            // call and RAX/X0 hold whatever VTL0 had, not a status.
            let faulted = |r: &Vtl0Result| r.pending_event().is_some();
            for r in attempts.iter() {
                if !faulted(r) && !reexecuted(r) && !ALLOWED.contains(&r.status()) {
                    out.push(format!(
                        "{arch} call #{} attempt {} ({}): invariant 2: expected a TLFS status \
                         for a proxied call, but VTL0 got {:?} (result {:#x})",
                        g(i),
                        r.attempt,
                        plan.describe(),
                        r.status(),
                        r.result
                    ));
                }
            }
            let last = attempts.last().expect("at least one attempt");
            let outcome = if faulted(last) {
                "#UD injected".to_string()
            } else {
                format!("{:?}", last.status())
            };
            *stats.statuses.entry(outcome).or_default() += 1;
            // The TLFS says #UD for VtlCall/VtlReturn made as hypercalls from VTL0 (the soak
            // generates no 32-bit, CPL3 or EL0 callers): exactly those, and only those, fault.
            let must_fault =
                [HypercallCode::VTL_CALL, HypercallCode::VTL_RETURN].contains(&plan.control.code());
            if faulted(last) != must_fault || (faulted(last) && last.advanced()) {
                out.push(format!(
                    "{arch} call #{} ({}): invariant 3: expected {} but VTL0 has pending event \
                     {:?} and IP {:#x} (was {:#x})",
                    g(i),
                    plan.describe(),
                    if must_fault {
                        "#UD injected with the IP left on the call"
                    } else {
                        "no exception"
                    },
                    last.pending_event(),
                    last.ip_after,
                    last.ip_before
                ));
                continue;
            }
            if faulted(last) {
                continue;
            }
            let timeout = self.arch == Arch::X86_64 && last.status() == HvStatus::TIMEOUT;
            if !last.advanced() && !timeout && !reexecuted(last) {
                out.push(format!(
                    "{arch} call #{} ({}): invariant 3: expected the IP to move past the call \
                     ({:#x} -> {:#x}), but it is {:#x} with status {:?}",
                    g(i),
                    plan.describe(),
                    last.ip_before,
                    last.ip_before.wrapping_add(last.instruction_len),
                    last.ip_after,
                    last.status()
                ));
            }
            if last.advanced() && timeout {
                out.push(format!(
                    "{arch} call #{} ({}): invariant 3: expected a TIMEOUT to leave the IP on \
                     the call, but it moved to {:#x}",
                    g(i),
                    plan.describe(),
                    last.ip_after
                ));
            }
            let touches_image = plan
                .ranges()
                .iter()
                .any(|r| r.start < image128.end && image128.start < r.end);
            stats.touching_image += usize::from(touches_image);
            if touches_image && last.status() == HvStatus::SUCCESS && !reexecuted(last) {
                out.push(format!(
                    "{arch} call #{} ({}): invariant 6: expected a failure for lists touching \
                     the paravisor's image {:#x}..{:#x}, but VTL0 got SUCCESS",
                    g(i),
                    plan.describe(),
                    image.start,
                    image.end
                ));
            }
            // 7. The oracle, VTL0's side: the status (the whole result word: simple calls and
            // failed rep calls complete no reps) and the output bytes.
            let expect = &plan.expect;
            if !expect.statuses.is_empty() && !reexecuted(last) {
                stats.oracle_checked += 1;
                if !expect.statuses.contains(&last.status())
                    || last.result != u64::from(last.status().0)
                {
                    out.push(format!(
                        "{arch} call #{} ({}): invariant 7: expected {:?} (result word = status), \
                         but VTL0 got result {:#x}",
                        g(i),
                        plan.describe(),
                        expect.statuses,
                        last.result
                    ));
                }
            }
            if let Some(want) = &expect.output {
                if &last.output != want {
                    out.push(format!(
                        "{arch} call #{} ({}): invariant 7: expected VTL0's output {:02x?}, but \
                         it is {:02x?}",
                        g(i),
                        plan.describe(),
                        want,
                        last.output
                    ));
                }
            }
        }

        // 4, 5 and 6 (what the host was asked), over the trace.
        let is_status_read = |r: &HypercallRecord| {
            let first_name = r
                .input
                .get(16..20)
                .map(|b| u32::from_le_bytes(b.try_into().expect("four bytes")));
            r.vtl == Vtl::VTL2
                && r.code == HypercallCode::GET_VP_REGISTERS
                && first_name == Some(HvRegisterName::VSM_VP_STATUS.0)
        };
        // Each VP's pages, from its first VsmVpStatus read (at boot).
        let mut pages: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        for r in report.trace().hypercalls().filter(|r| is_status_read(r)) {
            pages.entry(r.vp).or_insert((r.input_gpa, r.output_gpa));
        }
        let owner = |gpa: u64| {
            pages.iter().find_map(|(vp, &(i, o))| {
                if gpa == i {
                    Some(format!("vp{vp}'s input page"))
                } else if gpa == o {
                    Some(format!("vp{vp}'s output page"))
                } else {
                    None
                }
            })
        };
        if report.succeeded() && pages.len() as u32 != self.vps {
            out.push(format!(
                "{arch} batch from call #{}: invariant 4: expected a boot VsmVpStatus read on \
                 each of the {} VPs, but found one on {} (the pages of the others are unknown)",
                self.first,
                self.vps,
                pages.len()
            ));
        }
        let own: BTreeSet<u64> = pages.values().flat_map(|&(i, o)| [i, o]).collect();
        // Per VP, the local index of each delivery, and the relays each call caused.
        let mut local: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for r in report
            .model
            .vtl0()
            .results()
            .iter()
            .filter(|r| r.reached_vtl2)
        {
            local.entry(r.vp).or_default().push(r.index);
        }
        let mut relays: BTreeMap<usize, Vec<&HypercallRecord>> = BTreeMap::new();
        let mut intercepts: BTreeMap<u32, usize> = BTreeMap::new();
        let mut learnt: BTreeSet<u32> = BTreeSet::new();
        for event in report.trace().events() {
            let r = match event {
                Event::Intercept { vp, .. } => {
                    *intercepts.entry(*vp).or_default() += 1;
                    continue;
                }
                Event::Hypercall(r) => r,
                _ => continue,
            };
            let switch = matches!(r.abi, Abi::Hvc(_))
                || matches!(r.code, HypercallCode::VTL_CALL | HypercallCode::VTL_RETURN);
            if r.vtl != Vtl::VTL2 || switch {
                continue;
            }
            let who = || {
                attribution(
                    &deliveries,
                    r.vp,
                    intercepts.get(&r.vp).copied().unwrap_or(0),
                )
            };
            let l0_owned = self.nested
                && matches!(
                    r.code,
                    HypercallCode::POST_MESSAGE | HypercallCode::SIGNAL_EVENT
                );
            if (r.control & (1 << 31) != 0) != l0_owned {
                out.push(format!(
                    "{arch} {}: invariant 5: expected the nested bit {} (nested host: {}), but \
                     the paravisor issued {:?} with control {:#x}",
                    who(),
                    if l0_owned { "set" } else { "clear" },
                    self.nested,
                    r.code,
                    r.control
                ));
            }
            if RELAYED.contains(&r.code) {
                let k = intercepts.get(&r.vp).copied().unwrap_or(0);
                match k.checked_sub(1).and_then(|k| local.get(&r.vp)?.get(k)) {
                    Some(&i) => relays.entry(i).or_default().push(r),
                    None => out.push(format!(
                        "{arch} {}: invariant 7: expected relays only while serving VTL0, but \
                         the paravisor issued {:?}",
                        who(),
                        r.code
                    )),
                }
            }
            if r.control & (1 << 16) != 0 {
                continue; // fast: RDX/R8 (X2/X3) are data, not pages
            }
            for (gpa, list) in [(r.input_gpa, "input"), (r.output_gpa, "output")] {
                if image.contains(&gpa) && !own.contains(&gpa) {
                    out.push(format!(
                        "{arch} {}: invariant 6: expected the paravisor to name no GPA in its \
                         image but its own pages, but {:?} named {gpa:#x} as its {list}",
                        who(),
                        r.code
                    ));
                }
            }
            if is_status_read(r) {
                learnt.insert(r.vp);
            }
            // Checked from the VP's VsmVpStatus read on: its pages are known from there. Both
            // GPAs of every memory-based call: the paravisor's one issue path always names its
            // pair, so even a GPA the host ignores (an empty list) must be the VP's own.
            let Some(&(input_page, output_page)) =
                pages.get(&r.vp).filter(|_| learnt.contains(&r.vp))
            else {
                continue;
            };
            stats.page_checked += 1;
            for (gpa, want, list) in [
                (r.input_gpa, input_page, "input"),
                (r.output_gpa, output_page, "output"),
            ] {
                if gpa != want {
                    let whose = owner(gpa).unwrap_or_else(|| "no VP's page".into());
                    out.push(format!(
                        "{arch} {}: invariant 4: expected {:?} to use the VP's own {list} page \
                         {want:#x}, but it named {gpa:#x} ({whose})",
                        who(),
                        r.code
                    ));
                }
            }
        }

        // 7. The oracle, the host's side: exactly the relays each call must cause, control
        // word and input byte for byte.
        for (i, plan) in self.plans.iter().enumerate() {
            if !results.contains_key(&i) {
                continue;
            }
            let sent = relays.remove(&i).unwrap_or_default();
            let got: Vec<(u64, &[u8])> = sent.iter().map(|r| (r.control, &r.input[..])).collect();
            let want = |h: &HostCall| (h.control(self.nested), h.input.clone());
            let ok = match &plan.expect.host {
                Host::None => got.is_empty(),
                Host::Required(h) => got.len() == 1 && (got[0].0, got[0].1.to_vec()) == want(h),
                Host::Optional(h) => {
                    got.is_empty() || (got.len() == 1 && (got[0].0, got[0].1.to_vec()) == want(h))
                }
                Host::Unchecked => sent.iter().all(|r| {
                    let c = Control::from_bits(r.control);
                    c.rep_count() == 0
                        && c.rep_start() == 0
                        && r.control & Control::RESERVED_MASK == 0
                }),
            };
            stats.host_checked += usize::from(!matches!(plan.expect.host, Host::Unchecked));
            stats.relays += sent.len();
            if !ok {
                out.push(format!(
                    "{arch} call #{} ({}): invariant 7: expected the host to get {:?} (nested \
                     host: {}), but it got {:x?}",
                    g(i),
                    plan.describe(),
                    plan.expect.host,
                    self.nested,
                    got
                ));
            }
        }
    }
}

/// The codes the proxy relays to the host.
const RELAYED: [HypercallCode; 3] = [
    HypercallCode::POST_MESSAGE,
    HypercallCode::SIGNAL_EVENT,
    HypercallCode::RETARGET_DEVICE_INTERRUPT,
];

/// What the checks saw, to show they had something to check.
#[derive(Default)]
struct Stats {
    /// Final statuses VTL0 saw.
    statuses: BTreeMap<String, usize>,
    /// Calls whose lists, as VTL0 gave them, touch the paravisor's image.
    touching_image: usize,
    /// Memory-based VTL2 hypercalls checked against their VP's pages.
    page_checked: usize,
    /// Calls whose status the oracle predicted and checked.
    oracle_checked: usize,
    /// Calls whose relays (or their absence) the oracle predicted and checked.
    host_checked: usize,
    /// Relays the host received.
    relays: usize,
}

/// Outcome of one arch's soak.
struct ArchRun {
    calls: usize,
    sessions: usize,
}

fn soak_arch(
    arch: Arch,
    elf: &Path,
    opts: &Options,
    violations: &mut Vec<String>,
) -> Result<ArchRun> {
    let symbols = mockhv::image::Image::load(elf)?.symbols;
    let sym = |name: &str| {
        symbols
            .get(name)
            .copied()
            .with_context(|| format!("{} has no `{name}` symbol", elf.display()))
    };
    let image = sym("__image_start")?..sym("__image_end")?;
    let memory_mb = memory_mb(arch);
    let ram = arch.ram_ranges(memory_mb);
    let map = Vtl0Map::new(arch, &ram, &image, true);
    let mem = Memory {
        map,
        ram,
        image,
        memory_mb,
    };
    let l = layout(arch);
    let scratch_len = u64::from(opts.vps) * SCRATCH_PAGES * PAGE;
    if !mem.in_vtl0(l.input, scratch_len) {
        bail!(
            "{}: the scratch area {:#x}+{scratch_len:#x} for {} VPs is not VTL0 RAM",
            arch.name(),
            l.input,
            opts.vps
        );
    }
    let mut gen = Generator {
        arch,
        rng: Rng::new(arch_seed(opts.seed, arch)),
        mem: &mem,
        vps: opts.vps,
    };
    let plans: Vec<Planned> = (0..opts.calls).map(|_| gen.next_call()).collect();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for p in &plans {
        *kinds.entry(format!("{:?}", p.kind)).or_default() += 1;
    }
    println!(
        "soak {}: image {:#x}..{:#x}, VTL0 RAM {}, {} calls ({})",
        arch.name(),
        mem.image.start,
        mem.image.end,
        mem.map
            .certain
            .iter()
            .map(|r| format!("{:#x}..{:#x}", r.start, r.end))
            .collect::<Vec<_>>()
            .join(", "),
        plans.len(),
        kinds
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut sessions = 0;
    let mut stats = Stats::default();
    for (n, chunk) in plans.chunks(BATCH).enumerate() {
        let t = Instant::now();
        let before = violations.len();
        let calls: Vec<Vtl0Call> = chunk.iter().map(|p| p.call.clone()).collect();
        // Every other batch runs on a nested host.
        let nested = n % 2 == 1;
        let mut report = session(elf, arch, &mem, opts.vps, nested, calls)?;
        sessions += 1;
        let batch = Batch {
            arch,
            first: n * BATCH,
            plans: chunk,
            mem: &mem,
            vps: opts.vps,
            nested,
        };
        batch.check(&mut report, &mut stats, violations);
        println!(
            "soak {}: batch {n}: calls {}..{}, {} guest stops, {} violations, {:.1}s",
            arch.name(),
            n * BATCH,
            n * BATCH + chunk.len(),
            report.stops,
            violations.len() - before,
            t.elapsed().as_secs_f64()
        );
    }
    let statuses: Vec<String> = stats
        .statuses
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    println!(
        "soak {}: final statuses: {}; {} calls named lists touching the image; {} VTL2 \
         hypercalls checked against their VP's pages; oracle: {} statuses and {} host sides \
         predicted exactly, {} relays",
        arch.name(),
        statuses.join(", "),
        stats.touching_image,
        stats.page_checked,
        stats.oracle_checked,
        stats.host_checked,
        stats.relays
    );
    Ok(ArchRun {
        calls: plans.len(),
        sessions,
    })
}

pub fn run(arches: &[Arch], opts: &Options) -> Result<()> {
    let mut live_arches = Vec::new();
    let mut gdb_arches = Vec::new();
    for &arch in arches {
        mockhv::qemu::ensure_qemu(arch)?;
        if opts.gdbstub {
            gdb_arches.push(arch);
            continue;
        }
        let images = crate::live::build(arch)?;
        match live::supported(&images) {
            Ok(()) => live_arches.push(images),
            Err(why) if opts.live_only => println!(
                "soak {}: skipped, the in-VM host cannot run a live VTL0 on {} yet ({why:#})",
                arch.name(),
                arch.name()
            ),
            Err(why) => {
                println!(
                    "soak {}: the in-VM host cannot run a live VTL0 on {} yet ({why:#}); \
                     soaking through the gdbstub mock with a scripted VTL0 instead",
                    arch.name(),
                    arch.name()
                );
                gdb_arches.push(arch);
            }
        }
    }
    let mut violations = Vec::new();
    let (mut calls, mut sessions) = (0, 0);
    let mut elapsed = Duration::ZERO;
    if !live_arches.is_empty() {
        println!(
            "soak: seed {} ({} entries per arch through the real VTL0 kernel under the in-VM \
             host, 1 VP); replay with `cargo xtask soak --seed {} --calls {}`",
            opts.seed, opts.calls, opts.seed, opts.calls
        );
    }
    for images in &live_arches {
        let elf = image::elf_path(images.arch, true);
        let symbols = mockhv::image::Image::load(&elf)?.symbols;
        let sym = |name: &str| {
            symbols
                .get(name)
                .copied()
                .with_context(|| format!("{} has no `{name}` symbol", elf.display()))
        };
        let image = sym("__image_start")?..sym("__image_end")?;
        let started = Instant::now();
        let (c, s) = live::soak_arch(images, image, opts.calls, opts.seed, &mut violations)?;
        elapsed += started.elapsed();
        calls += c;
        sessions += s;
    }
    if !gdb_arches.is_empty() {
        println!(
            "soak: seed {} ({} calls per arch, {} VPs, batches of {BATCH}, gdbstub mock); replay \
             with `cargo xtask soak --gdbstub --seed {} --calls {} --vps {}`",
            opts.seed, opts.calls, opts.vps, opts.seed, opts.calls, opts.vps
        );
    }
    let mut elves = Vec::new();
    for &arch in &gdb_arches {
        elves.push((arch, image::build(arch, true)?.elf));
    }
    // Timed from after the image builds: the figure is the soak's, not the compiler's.
    let started = Instant::now();
    for (arch, elf) in &elves {
        let run = soak_arch(*arch, elf, opts, &mut violations)?;
        calls += run.calls;
        sessions += run.sessions;
    }
    elapsed += started.elapsed();
    for v in violations.iter().take(SHOWN) {
        println!("violation: {v}");
    }
    if violations.len() > SHOWN {
        println!("... and {} more", violations.len() - SHOWN);
    }
    let secs = elapsed.as_secs_f64();
    println!(
        "soak: {calls} calls, {sessions} sessions, {} violations in {secs:.1}s ({:.0} calls/s)",
        violations.len(),
        calls as f64 / secs.max(f64::EPSILON)
    );
    if !violations.is_empty() {
        bail!(
            "{} invariant violations (seed {})",
            violations.len(),
            opts.seed
        );
    }
    Ok(())
}
