//! `cargo xtask soak`: random VTL0 calls through the whole stack — the VTL0 test kernel runs
//! them as table entries under the release paravisor under the in-VM mock Hyper-V, thousands per
//! QEMU boot — each checked against invariants and an oracle written from the TLFS, the
//! configuration and the ELF, never from the paravisor (`gen`: the generator, by kind of call;
//! `plan`: its entries and how they make boots; `boots`: the boots; `checks`: the invariants on
//! what each boot saw; `oracle`: the statuses and relays it predicts). The calls come from a
//! seeded SplitMix64 generator, one stream per arch, so a seed replays the same calls call for
//! call (printed; `--seed` takes it back).

mod boots;
mod checks;
mod gen;
mod oracle;
mod plan;

use anyhow::{bail, Context, Result};
use hvdef::{HvRegisterName, HvStatus, HypercallCode};
use mockhv::qemu::Arch;
use std::time::{Duration, Instant};

/// Violations printed in full; the rest are counted.
const SHOWN: usize = 20;
/// SynIC connection ids the relay maps to the host; the generator picks from more.
const KNOWN_CONNECTIONS: u32 = 8;
/// The device VTL0 owns (`pv.devices`); the generator also names the one after it.
const OWNED_DEVICE: u64 = 0x30;

pub struct Options {
    pub calls: u32,
    pub seed: u64,
    /// Only this boot of each arch's stream (`--boot`).
    pub boot: Option<usize>,
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

/// The per-arch stream: the same seed gives the same calls with `--arch all` or one arch.
fn arch_seed(seed: u64, arch: Arch) -> u64 {
    let salt = match arch {
        Arch::X86_64 => 0x7836_3400,
        Arch::Aarch64 => 0xa653_4000,
    };
    let mut rng = Rng::new(seed ^ salt);
    rng.next()
}

/// The codes the proxy relays to the host.
const RELAYED: [HypercallCode; 3] = [
    HypercallCode::POST_MESSAGE,
    HypercallCode::SIGNAL_EVENT,
    HypercallCode::RETARGET_DEVICE_INTERRUPT,
];

/// Soaks `arches` on the release images xtask built (see [`crate::live::built`]).
pub fn run(arches: &[Arch], opts: &Options) -> Result<()> {
    let mut images = Vec::new();
    for &arch in arches {
        mockhv::qemu::ensure_qemu(arch)?;
        let built = crate::live::built(arch, true)?;
        boots::supported(&built)
            .with_context(|| format!("the in-VM host cannot run a live VTL0 on {}", arch.name()))?;
        images.push(built);
    }
    println!(
        "soak: seed {} ({} entries per arch through the real VTL0 kernel under the in-VM host, 1 \
         VP{}); replay with `cargo xtask soak --seed {} --calls {}` (one boot: add `--boot N`)",
        opts.seed,
        opts.calls,
        opts.boot
            .map(|b| format!(", boot {b} only"))
            .unwrap_or_default(),
        opts.seed,
        opts.calls
    );
    let mut violations = Vec::new();
    let (mut calls, mut sessions) = (0, 0);
    let mut elapsed = Duration::ZERO;
    for images in &images {
        let elf = &images.elf;
        let loaded = mockhv::image::Image::load(elf)?;
        // The paravisor's heap for the one VP the soak's boots have follows the image: VTL2's
        // memory, which VTL0's accesses and lists aim at, is both.
        let heap_end = e2e::vtl2_heap(&loaded, 1).end;
        let symbols = loaded.symbols;
        let sym = |name: &str| {
            symbols
                .get(name)
                .copied()
                .with_context(|| format!("{} has no `{name}` symbol", elf.display()))
        };
        let image_end = sym("__image_end")?;
        if heap_end <= image_end {
            bail!("the heap does not follow the image");
        }
        let image = sym("__image_start")?..heap_end;
        let started = Instant::now();
        let (c, s) = boots::soak_arch(images, image, opts, &mut violations)?;
        elapsed += started.elapsed();
        calls += c;
        sessions += s;
    }
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
