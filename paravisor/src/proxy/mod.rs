//! The VTL0 hypercall proxy's pure core: decode an intercepted VTL0 hypercall, validate it as the
//! TLFS does (plus the paravisor's own memory rule), and decide per call code whether to answer
//! it here, refuse it, relay it to the host (through the [`RelayTable`]), or raise the exception
//! the TLFS raises instead of a result. No hypercalls and no memory access happen here; the firmware's run loop
//! (`crate::runloop`) carries the [`Action`] out.
#![forbid(unsafe_code)]

pub mod decode;
pub mod policy;
pub mod relay;
pub mod validate;

use hvdef::{Control, HvStatus};

pub use relay::RelayTable;

/// Which instruction set VTL0 runs (the intercept message's layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    X64,
    Arm64,
}

/// The register holding VTL0's control word (hvdef's, so the arch layer can complete a call).
pub use hvdef::ControlRegister;

/// A decoded VTL0 hypercall, ISA-neutral. It borrows its fast register block from the
/// decoder's copy of the intercept message (nothing is copied or zeroed to build it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub isa: Isa,
    /// The control word exactly as VTL0 wrote it (validation checks it).
    pub control: Control,
    pub control_register: ControlRegister,
    /// Memory-based: the input and output GPAs. Fast: unused (0).
    pub input_gpa: u64,
    pub output_gpa: u64,
    /// Fast: the ABI's whole register block in order, its length the ABI's budget (x64: RDX,
    /// R8, then XMM0-5 as 12 halves with XMM fast input, [`hvdef::x86_64::FAST_GPR_WORDS`] /
    /// [`hvdef::x86_64::FAST_XMM_WORDS`]; arm64 SMCCC: X2..X17; arm64 `hvc #1`: X1..X17).
    /// Memory-based: empty, so nothing downstream can act on stale register contents.
    pub fast: &'a [u64],
    /// The intercepted instruction's address and length (RIP/PC advance on completion).
    pub ip: u64,
    pub instruction_len: u8,
}

/// The largest fast register block of any VTL0 ABI (arm64 `hvc #1`: X1..X17).
pub const FAST_WORDS_MAX: usize = hvdef::aarch64::HVC1_FAST_WORDS;
const _: () = assert!(
    FAST_WORDS_MAX >= hvdef::x86_64::FAST_XMM_WORDS
        && FAST_WORDS_MAX >= hvdef::aarch64::SMCCC_FAST_WORDS
);

/// What decoding an intercept found.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    Hypercall(Request<'a>),
    /// arm64 SMCCC call that is not a Hyper-V hypercall (X0 is another function id): answered
    /// with SMCCC NOT_SUPPORTED (-1) in X0 and the PC advanced.
    NotHypercall {
        ip: u64,
        instruction_len: u8,
    },
    /// Refused before validation, with this status (an arm64 `hvc` immediate with no Hyper-V
    /// ABI).
    Refused {
        status: HvStatus,
        ip: u64,
        instruction_len: u8,
    },
    /// A caller the TLFS answers with #UD (x64) or an undefined-instruction exception (arm64)
    /// rather than a result; see [`Action::Fault`].
    Fault,
}

/// The guest-physical ranges VTL0 may name in a hypercall: RAM the loader reported and boot's
/// tables map, minus the paravisor's own memory. Anything else gets HV_STATUS_ACCESS_DENIED and
/// is never touched; what is inside is reached only through the [`GuestRange`]s [`validate`]
/// hands out.
///
/// [`validate`]: validate::validate
pub type Vtl0Memory = boot::guest::GuestMemory;
pub use boot::guest::GuestRange;

/// A VTL0 memory access the hypervisor stopped (a GPA intercept), decoded from its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryAccess {
    pub gpa: u64,
    pub access: hvdef::HvInterceptAccessType,
    /// From VTL0's user mode (x64 CPL > 0, arm64 EL0) rather than its kernel.
    pub user: bool,
    /// The CPU made the access while delivering an exception or interrupt to VTL0 (the
    /// intercept's `interruption_pending`): a fault raised for it would be delivered the same
    /// way and fault again.
    pub delivering_event: bool,
}

impl MemoryAccess {
    /// "read", "write" or "execute", for the log line.
    pub fn kind(&self) -> &'static str {
        match self.access {
            hvdef::HvInterceptAccessType::READ => "read",
            hvdef::HvInterceptAccessType::WRITE => "write",
            _ => "execute",
        }
    }
}

/// What a relayed call needs, handed whole from `classify` to the run loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relay {
    /// The call's table entry, which screens the bytes that go to the host.
    pub policy: &'static policy::Policy,
    pub control: Control,
    pub input_len: usize,
    /// Relay a fast call memory-based (x64 XMM fast input).
    pub fast_as_memory: bool,
    /// A memory-based call's input list (`input_len` bytes), validated.
    pub input: Option<GuestRange>,
}

/// What to do with a validated request.
#[must_use = "the run loop must carry the action out"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Relay to the host: copy `input_len` bytes from VTL0's input GPA (memory-based) into this
    /// VP's input page, or take the register block (fast), run the relay table over exactly
    /// those bytes ([`policy::Policy::screen`] / `Policy::screen_fast`: it rewrites the connection
    /// id to the host's, or refuses an id or device the table does not name), and issue
    /// `control` (already sanitised: VTL0's nested bit never passes; the issue path adds it per
    /// the nested table). Relayed calls have no output.
    Relay(Relay),
    /// HvExtCallQueryCapabilities: write [`policy::RELAYED_EXT_MASK`] (8 bytes) to the output
    /// list, validated.
    AnswerExtCapabilities { output: GuestRange },
    /// Complete with this status and nothing else.
    Refuse(HvStatus),
    /// A code with no table entry: complete with HV_STATUS_INVALID_HYPERCALL_CODE (what a
    /// hypervisor that does not implement it says), and log it: Hyper-V never sends one.
    Unhandled,
    /// Do not complete the call: make VTL0 take #UD (x64) / an undefined-instruction exception
    /// (arm64) on the hypercall instruction, as the hypervisor itself would. A fault, so VTL0's
    /// IP stays on the instruction and its result registers keep what VTL0 had in them.
    Fault,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tables in memory for boot's builder: page `i` at address `(i + 1) << 12`.
    struct HostTables(Vec<[u64; 512]>);

    impl boot::paging::Tables for HostTables {
        fn read(&self, table: u64, index: usize) -> u64 {
            self.0[(table >> 12) as usize - 1][index]
        }
        fn write(&mut self, table: u64, index: usize, entry: u64) {
            self.0[(table >> 12) as usize - 1][index] = entry;
        }
        fn alloc(&mut self) -> Option<u64> {
            (self.0.len() < 3).then(|| {
                self.0.push([0; 512]);
                (self.0.len() as u64) << 12
            })
        }
    }

    #[test]
    fn ram_the_tables_cannot_map_is_never_vtl0_memory() {
        use boot::paging::{self, Format, Unmapped};
        const G: u64 = 1 << 30;
        // x86 without 1 GiB pages, a 36-bit address width and a pool of 2 pages (the root is
        // the first): the PDPT for 0..512 GiB and one page directory fit, so 4..5 GiB is mapped,
        // the rest of the pool's ranges is not, and 64..68 GiB are above the width.
        let format = Format::X86_64 {
            one_gib_pages: false,
        };
        let mut tables = HostTables(vec![[0; 512]]);
        let ram = [0..2 * G, 4 * G..8 * G, 60 * G..68 * G];
        let mapped = paging::map_ram(&ram, format, paging::limit(format, 36), &mut tables, 0x1000);
        assert_eq!(
            mapped.unmapped(),
            [
                (0..0x1000, Unmapped::PageZero),
                (5 * G..8 * G, Unmapped::TableCapacity),
                (60 * G..64 * G, Unmapped::TableCapacity),
                (64 * G..68 * G, Unmapped::AboveAddressWidth),
            ],
            "the PDPT for 0..512 GiB takes the first pool page"
        );
        let m = Vtl0Memory::new(mapped.mapped(), 0x10_0000..0x20_0000);
        assert_eq!(
            m.ranges(),
            [0x1000..0x10_0000, 0x20_0000..2 * G, 4 * G..5 * G]
        );
        for (range, why) in mapped.unmapped() {
            assert!(!m.contains(range.start, 8), "{range:x?} ({why})");
            assert!(!m.contains(range.end - 8, 8), "{range:x?} ({why})");
        }
        assert!(m.contains(5 * G - 0x1000, 0x1000), "the last mapped page");
        assert!(!m.contains(5 * G - 0x1000, 0x1001), "one byte past it");
    }

    /// The log line's word for each access type the intercept header can carry (READ 0,
    /// WRITE 1, EXECUTE 2; anything else is reported as an execute).
    #[test]
    fn memory_access_kinds_name_the_access() {
        let kind = |access| {
            MemoryAccess {
                gpa: 0,
                access: hvdef::HvInterceptAccessType(access),
                user: false,
                delivering_event: false,
            }
            .kind()
        };
        assert_eq!([kind(0), kind(1), kind(2)], ["read", "write", "execute"]);
    }
}
