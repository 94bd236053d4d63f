//! The one hypercall path. Every hypercall the paravisor makes is built in this VP's input
//! page, issued by `Hypercall::issue` (which alone decides the nested bit, from the boot-time
//! [`NestedTable`]) and read back from this VP's output page.
//!
//! The layer is generic over [`HypercallAbi`], the per-arch instruction, so it runs unchanged in
//! host tests against the mock hypervisor's TLFS model.
#![forbid(unsafe_code)]

mod nested;

pub use nested::{NestedTable, L0_CALLS};

use hvdef::{
    Control, HvError, HvInputGetVpRegisters, HvInputVtl, HvRegisterAssoc, HvRegisterName,
    HvRegisterValue, HvStatus, HypercallCode, HypercallOutput, HV_PARTITION_ID_SELF,
    HV_VP_INDEX_SELF,
};
use zerocopy::{FromZeros, IntoBytes};

pub const PAGE_SIZE: usize = 4096;
/// Most registers per GetVpRegisters: the output list (16 bytes each) must fit one page.
pub const GET_REGISTERS_PER_CALL: usize = PAGE_SIZE / size_of::<HvRegisterValue>();
/// Most registers per SetVpRegisters: header plus 32-byte elements must fit one page.
pub const SET_REGISTERS_PER_CALL: usize =
    (PAGE_SIZE - size_of::<HvInputGetVpRegisters>()) / size_of::<HvRegisterAssoc>();
/// How often in a row a rep call that timed out without progress is re-issued before giving up.
const MAX_STALLED_RETRIES: u32 = 16;
/// Page numbers one HvCallModifyVtlProtectionMask carries: a page minus the 16-byte header, in
/// 8-byte elements (510, OpenHCL's chunk too).
pub const PROTECT_PAGES_PER_CALL: usize =
    (PAGE_SIZE - size_of::<hvdef::HvInputModifyVtlProtectionMask>()) / 8;

/// A hypercall input or output page.
#[repr(C, align(4096))]
pub struct Page(pub [u8; PAGE_SIZE]);

impl Page {
    pub const fn zeroed() -> Page {
        Page([0; PAGE_SIZE])
    }

    /// The page's guest-physical address: the paravisor runs identity-mapped.
    pub fn gpa(&self) -> u64 {
        self as *const Page as u64
    }
}

/// The per-arch hypercall instruction.
pub trait HypercallAbi {
    /// A memory-based call: the hypervisor reads `input` and writes `output` by their GPAs.
    /// Returns the raw result word.
    fn call(&mut self, control: u64, input: &Page, output: &mut Page) -> u64;

    /// A register-based call whose input block is `regs` (fast output, if any, is written
    /// back). `None` if the block does not fit this ABI's registers.
    fn call_fast(&mut self, control: u64, regs: &mut [u64]) -> Option<u64>;

    /// Whether a 6-word fast block can fit this ABI at all (x64 without XMM: no), so that
    /// [`HypercallAbi::call_fast6`] is not even tried where it cannot be taken.
    const FAST6: bool = true;

    /// A register-based call with a 6-word input block and no output (a one-register
    /// SetVpRegisters); as [`HypercallAbi::call_fast`] unless the ABI has a leaner path.
    fn call_fast6(&mut self, control: u64, words: &[u64; 6]) -> Option<u64> {
        let mut regs = *words;
        self.call_fast(control, &mut regs)
    }
}

/// Why a call failed: the hypervisor's status, or a request refused before anything was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    Hv(HvError),
    /// The input or output would not fit one page; never sent.
    TooLarge {
        bytes: usize,
    },
    /// The host answered rep call `code` (reps `start..count` asked) with SUCCESS but reps
    /// completed `completed` not beyond `start` (no progress) or beyond `count`: a host that
    /// breaks the TLFS's "at least one rep" guarantee or its result format. Not re-issued.
    BadRepSuccess {
        code: HypercallCode,
        start: u16,
        completed: u16,
        count: u16,
    },
}

impl From<HvError> for Error {
    fn from(e: HvError) -> Error {
        Error::Hv(e)
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Hv(e) => write!(f, "{e}"),
            Error::TooLarge { bytes } => write!(f, "{bytes} bytes do not fit a hypercall page"),
            Error::BadRepSuccess {
                code,
                start,
                completed,
                count,
            } => write!(
                f,
                "{code:?}: SUCCESS with reps completed {completed} for reps {start}..{count}"
            ),
        }
    }
}

pub type Result<T> = core::result::Result<T, Error>;

/// Which VP and VTL a register call addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VpTarget {
    pub vp_index: u32,
    pub vtl: HvInputVtl,
}

impl VpTarget {
    /// The calling VP, at the calling VTL.
    pub const SELF: VpTarget = VpTarget {
        vp_index: HV_VP_INDEX_SELF,
        vtl: HvInputVtl::CURRENT,
    };

    /// VTL0 on the calling VP: VTL0's private registers are reached with the target VTL pinned
    /// to 0.
    pub const VTL0: VpTarget = VpTarget {
        vp_index: HV_VP_INDEX_SELF,
        vtl: HvInputVtl::target(hvdef::Vtl::VTL0),
    };

    fn header(self) -> HvInputGetVpRegisters {
        HvInputGetVpRegisters {
            partition_id: HV_PARTITION_ID_SELF,
            vp_index: self.vp_index,
            target_vtl: self.vtl,
            reserved: [0; 3],
        }
    }
}

/// `pv.log=debug`: one line per hypercall the paravisor issues (code, control word, what the
/// hypervisor answered). `None` (a register block that does not fit the ABI) was not issued:
/// nothing to say, the caller falls back to the memory form, which is.
#[inline(always)]
fn log_call(control: Control, out: Option<HypercallOutput>) {
    // The level check inline, the line out of line: a hypercall pays one compare for it.
    if log::log_enabled!(log::Level::Debug) {
        log_call_line(control, out);
    }
}

#[cold]
#[inline(never)]
fn log_call_line(control: Control, out: Option<HypercallOutput>) {
    let Some(out) = out else { return };
    let code = control.code();
    log::debug!(
        "hypercall {} ({:#x}) control {:#x}{}: {}, {} rep(s) done",
        code.name().unwrap_or("?"),
        code.0,
        control.into_bits(),
        if control.fast() { " fast" } else { "" },
        out.status(),
        out.reps_completed()
    );
}

/// One VP's hypercall interface: its ABI, its two pages, the partition's nested table (`None`
/// only for the boot VP's calls that lead up to the table, see [`Self::before_nested_table`]).
pub struct Hypercall<'a, A: HypercallAbi> {
    abi: A,
    input: &'a mut Page,
    output: &'a mut Page,
    nested: Option<&'a NestedTable>,
}

impl<'a, A: HypercallAbi> Hypercall<'a, A> {
    pub fn new(abi: A, input: &'a mut Page, output: &'a mut Page, nested: &'a NestedTable) -> Self {
        Hypercall {
            abi,
            input,
            output,
            nested: Some(nested),
        }
    }

    /// The interface before the boot-time nested table is fixed, for the calls its input needs
    /// (arm64 sets the guest OS id, then reads HvRegisterFeaturesInfo). No table marks those;
    /// issuing a call a table could mark ([`L0_CALLS`]) before the table exists is a bug, and
    /// panics rather than leave without the bit.
    pub fn before_nested_table(abi: A, input: &'a mut Page, output: &'a mut Page) -> Self {
        Hypercall {
            abi,
            input,
            output,
            nested: None,
        }
    }

    /// Whether `code` carries the nested bit: the table's answer, looked up here alone.
    fn nested_bit(&self, code: HypercallCode) -> bool {
        match self.nested {
            Some(table) => table.requires(code),
            None => {
                assert!(
                    !L0_CALLS.contains(&code),
                    "call code {:#x} issued before the nested table was fixed",
                    code.0
                );
                false
            }
        }
    }

    /// The GPAs of this VP's input and output pages.
    pub fn page_gpas(&self) -> (u64, u64) {
        (self.input.gpa(), self.output.gpa())
    }

    /// The single issue path for memory-based calls.
    fn issue(&mut self, control: Control) -> HypercallOutput {
        let control = control.with_nested(self.nested_bit(control.code()));
        let out =
            HypercallOutput::from_bits(self.abi.call(control.into_bits(), self.input, self.output));
        log_call(control, Some(out));
        out
    }

    /// The issue path for a 6-word register block (arm64's short `hvc` stub); `None` where the
    /// ABI has none.
    fn issue_fast6(&mut self, control: Control, regs: &[u64; 6]) -> Option<HypercallOutput> {
        let control = control
            .with_fast(true)
            .with_nested(self.nested_bit(control.code()));
        self.abi.call_fast6(control.into_bits(), regs).map(|bits| {
            let out = HypercallOutput::from_bits(bits);
            log_call(control, Some(out));
            out
        })
    }

    /// The single issue path for register-based calls; `None` if `regs` does not fit the ABI.
    fn issue_fast(&mut self, control: Control, regs: &mut [u64]) -> Option<HypercallOutput> {
        let control = control
            .with_fast(true)
            .with_nested(self.nested_bit(control.code()));
        let out = self
            .abi
            .call_fast(control.into_bits(), regs)
            .map(HypercallOutput::from_bits);
        log_call(control, out);
        out
    }

    /// Issues `control` with this VP's input page filled by `fill`, for calls whose layout the
    /// caller owns (the VTL0 proxy's relays, which have no output). If `fill` fails nothing is
    /// issued. The nested bit is still decided by the issue path alone.
    pub fn relay<E>(
        &mut self,
        control: Control,
        fill: impl FnOnce(&mut [u8; PAGE_SIZE]) -> core::result::Result<(), E>,
    ) -> core::result::Result<HypercallOutput, E> {
        fill(&mut self.input.0)?;
        Ok(self.issue(control))
    }

    /// Issues a register-based `control` with `regs` as its block (the VTL0 proxy's fast
    /// relays); `None` if the block does not fit this ABI.
    pub fn relay_fast(&mut self, control: Control, regs: &mut [u64]) -> Option<HypercallOutput> {
        self.issue_fast(control, regs)
    }

    /// A simple memory-based call: `input` at the start of the input page, `output` copied
    /// from the start of the output page on success.
    pub fn call(&mut self, code: HypercallCode, input: &[u8], output: &mut [u8]) -> Result<()> {
        let len = input.len().max(output.len());
        if len > PAGE_SIZE {
            return Err(Error::TooLarge { bytes: len });
        }
        self.input.0[..input.len()].copy_from_slice(input);
        self.issue(Control::new().with_code(code)).result()?;
        output.copy_from_slice(&self.output.0[..output.len()]);
        Ok(())
    }

    /// A simple register-based call with up to the ABI's register budget of input.
    pub fn call_fast(&mut self, code: HypercallCode, regs: &mut [u64]) -> Result<()> {
        let out = self
            .issue_fast(Control::new().with_code(code), regs)
            .ok_or(Error::TooLarge {
                bytes: regs.len() * 8,
            })?;
        Ok(out.result()?)
    }

    /// A rep call: `header` then `count` input elements of `elements.len() / count` bytes
    /// (none if empty), output elements of `out_size` bytes into `output`. Split into chunks
    /// that fit one page; each chunk is issued until complete (see [`RepProgress`]).
    fn rep_call(
        &mut self,
        code: HypercallCode,
        header: &[u8],
        elements: &[u8],
        count: usize,
        out_size: usize,
        output: &mut [u8],
    ) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        let in_size = elements.len() / count;
        let room = PAGE_SIZE - header.len();
        let per_call = [
            room.checked_div(in_size).unwrap_or(usize::MAX),
            PAGE_SIZE.checked_div(out_size).unwrap_or(usize::MAX),
            // The rep count field is 12 bits.
            0xfff,
        ]
        .into_iter()
        .min()
        .unwrap_or(0);
        if per_call == 0 {
            return Err(Error::TooLarge {
                bytes: header.len() + in_size,
            });
        }
        let mut done_total = 0;
        while done_total < count {
            let n = per_call.min(count - done_total);
            let chunk_in = &elements[done_total * in_size..(done_total + n) * in_size];
            self.input.0[..header.len()].copy_from_slice(header);
            self.input.0[header.len()..header.len() + chunk_in.len()].copy_from_slice(chunk_in);
            let chunk_out = &mut output[done_total * out_size..(done_total + n) * out_size];
            let mut rep = RepProgress::new(code, n as u16);
            while let Some(start) = rep.next_start() {
                let out = self.issue(rep.control(start));
                // The elements this issue completed (none if it went backwards or failed
                // before any); the hypervisor writes them from rep start on.
                let at = usize::from(start) * out_size;
                let completed = usize::from(out.reps_completed()).clamp(start.into(), n);
                chunk_out[at..completed * out_size]
                    .copy_from_slice(&self.output.0[at..completed * out_size]);
                rep.after(start, out)?;
            }
            done_total += n;
        }
        Ok(())
    }

    /// HvCallModifyVtlProtectionMask: the lower VTLs get `flags` on every page number in
    /// `pages`, as protections of the calling VTL (target VTL "current", what OpenHCL passes).
    /// One input page holds the header and [`PROTECT_PAGES_PER_CALL`] page numbers; each chunk
    /// is issued until complete (see `RepProgress`). On failure, the page the host stopped at.
    pub fn modify_vtl_protection_mask(
        &mut self,
        flags: hvdef::HvMapGpaFlags,
        pages: core::ops::Range<u64>,
    ) -> core::result::Result<(), (u64, Error)> {
        let header = hvdef::HvInputModifyVtlProtectionMask {
            partition_id: hvdef::HV_PARTITION_ID_SELF,
            map_flags: flags,
            target_vtl: HvInputVtl::CURRENT,
            reserved: [0; 3],
        };
        let at = size_of::<hvdef::HvInputModifyVtlProtectionMask>();
        let mut first = pages.start;
        while first < pages.end {
            let n = (pages.end - first).min(PROTECT_PAGES_PER_CALL as u64);
            self.input.0[..at].copy_from_slice(header.as_bytes());
            let list = &mut self.input.0[at..at + 8 * n as usize];
            for (slot, page) in list.chunks_exact_mut(8).zip(first..) {
                slot.copy_from_slice(&page.to_le_bytes());
            }
            let code = HypercallCode::MODIFY_VTL_PROTECTION_MASK;
            let mut rep = RepProgress::new(code, n as u16);
            while let Some(start) = rep.next_start() {
                let out = self.issue(rep.control(start));
                let stopped = first + u64::from(out.reps_completed().clamp(start, n as u16));
                rep.after(start, out).map_err(|e| (stopped, e))?;
            }
            first += n;
        }
        Ok(())
    }

    /// Reads any number of registers of `target` into `values` (same length as `names`).
    pub fn get_vp_registers(
        &mut self,
        target: VpTarget,
        names: &[HvRegisterName],
        values: &mut [HvRegisterValue],
    ) -> Result<()> {
        assert_eq!(names.len(), values.len(), "one value per register name");
        let header = target.header();
        for (names, values) in names
            .chunks(GET_REGISTERS_PER_CALL)
            .zip(values.chunks_mut(GET_REGISTERS_PER_CALL))
        {
            self.rep_call(
                HypercallCode::GET_VP_REGISTERS,
                header.as_bytes(),
                names.as_bytes(),
                names.len(),
                size_of::<HvRegisterValue>(),
                values.as_mut_bytes(),
            )?;
        }
        Ok(())
    }

    /// Reads one register of `target`.
    pub fn get_vp_register(
        &mut self,
        target: VpTarget,
        name: HvRegisterName,
    ) -> Result<HvRegisterValue> {
        let mut value = [HvRegisterValue::new_zeroed()];
        self.get_vp_registers(target, &[name], &mut value)?;
        Ok(value[0])
    }

    /// Writes any number of registers of `target`. When the whole call fits the ABI's fast
    /// register block it is made fast (on arm64 the guest OS id may only be set that way).
    pub fn set_vp_registers(&mut self, target: VpTarget, assocs: &[HvRegisterAssoc]) -> Result<()> {
        if assocs.is_empty() {
            // Nothing to write; a rep count of zero is invalid input to the hypervisor.
            return Ok(());
        }
        let header = target.header();
        let fast_words = (size_of::<HvInputGetVpRegisters>() + size_of_val(assocs)) / 8;
        if fast_words <= FAST_WORDS_MAX {
            let mut regs = [0u64; FAST_WORDS_MAX];
            let block = regs[..fast_words].as_mut_bytes();
            block[..16].copy_from_slice(header.as_bytes());
            block[16..].copy_from_slice(assocs.as_bytes());
            let mut rep = RepProgress::new(HypercallCode::SET_VP_REGISTERS, assocs.len() as u16);
            while let Some(start) = rep.next_start() {
                // SetVpRegisters has no output, so the block is the same for every issue and
                // only the first can find it too big for the ABI (then: memory-based below).
                let Some(out) = self.issue_fast(rep.control(start), &mut regs[..fast_words]) else {
                    break;
                };
                rep.after(start, out)?;
            }
            if rep.next_start().is_none() {
                return Ok(());
            }
        }
        for chunk in assocs.chunks(SET_REGISTERS_PER_CALL) {
            self.rep_call(
                HypercallCode::SET_VP_REGISTERS,
                header.as_bytes(),
                chunk.as_bytes(),
                chunk.len(),
                0,
                &mut [],
            )?;
        }
        Ok(())
    }

    /// Writes one register of `target`.
    pub fn set_vp_register(
        &mut self,
        target: VpTarget,
        name: HvRegisterName,
        value: HvRegisterValue,
    ) -> Result<()> {
        let assoc = HvRegisterAssoc::new(name, value);
        if !A::FAST6 {
            return self.set_vp_registers(target, &[assoc]);
        }
        // Fast where the ABI's block holds it (arm64: header and one element, 6 words), built
        // in place; otherwise the general path.
        const WORDS: usize =
            (size_of::<HvInputGetVpRegisters>() + size_of::<HvRegisterAssoc>()) / 8;
        let mut regs = [0u64; WORDS];
        let bytes = regs.as_mut_bytes();
        bytes[..16].copy_from_slice(target.header().as_bytes());
        bytes[16..].copy_from_slice(assoc.as_bytes());
        let mut rep = RepProgress::new(HypercallCode::SET_VP_REGISTERS, 1);
        let Some(out) = self.issue_fast6(rep.control(0), &regs) else {
            return self.set_vp_registers(target, &[assoc]);
        };
        // The one rep done is the common case (the run loop's IP advance on arm64), taken
        // without the continuation rules; any other answer goes through them.
        if out.status() == HvStatus::SUCCESS && out.reps_completed() == 1 {
            return Ok(());
        }
        rep.after(0, out)?;
        while let Some(start) = rep.next_start() {
            let Some(out) = self.issue_fast6(rep.control(start), &regs) else {
                return self.set_vp_registers(target, &[assoc]);
            };
            rep.after(start, out)?;
        }
        Ok(())
    }

    /// HvExtCallQueryCapabilities: the host's extended-call capability mask.
    pub fn query_extended_capabilities(&mut self) -> Result<u64> {
        let mut mask = [0u8; 8];
        self.call(HypercallCode::EXT_QUERY_CAPABILITIES, &[], &mut mask)?;
        Ok(u64::from_le_bytes(mask))
    }
}

/// One rep call (up to one page of elements) issued until every rep is done.
///
/// The hypervisor may return before the end of the list in two ways, and both are continued
/// from "reps completed" (bits 43:32 of the result, absolute, not relative to the rep start):
/// - HV_STATUS_TIMEOUT: the TLFS continuation (hypercall-interface.md §"Hypercall
///   Continuation"). A host that re-executes the call never shows it; one that hands it back
///   (OpenHCL's `invoke_hvcall_ioctl` re-issues on it) gets the call re-issued here.
/// - SUCCESS with fewer reps completed than asked: the TLFS lets the hypervisor stop before the
///   end of the list (§"Simple and Rep hypercalls": it "is not required to process the entire
///   list"), and Linux `hv_do_rep_hypercall` continues such a SUCCESS from reps completed.
///   (OpenHCL asserts it never happens; OpenVMM's emulator never produces it.)
///
/// A continuation must make progress. TIMEOUT without progress is re-issued at most
/// [`MAX_STALLED_RETRIES`] times in a row, then is the call's error; progress by either kind of
/// return resets the count. A SUCCESS whose reps completed is not beyond the rep start (no
/// progress: the TLFS guarantees at least one rep) or beyond the rep count cannot be continued
/// from and is [`Error::BadRepSuccess`] at once. Any other status is the call's error.
struct RepProgress {
    code: HypercallCode,
    count: u16,
    /// The next rep start, or `None` when the call is complete.
    next: Option<u16>,
    /// TIMEOUTs in a row without progress.
    stalled: u32,
}

impl RepProgress {
    fn new(code: HypercallCode, count: u16) -> Self {
        RepProgress {
            code,
            count,
            next: Some(0),
            stalled: 0,
        }
    }

    /// Where the next issue starts, or `None` when every rep is done.
    fn next_start(&self) -> Option<u16> {
        self.next
    }

    /// The control word of an issue from rep `start`.
    fn control(&self, start: u16) -> Control {
        Control::new()
            .with_code(self.code)
            .with_rep_count(self.count)
            .with_rep_start(start)
    }

    /// Takes the result of the issue from `start`.
    fn after(&mut self, start: u16, out: HypercallOutput) -> Result<()> {
        let (count, completed) = (self.count, out.reps_completed());
        self.next = match out.status() {
            HvStatus::SUCCESS if completed == count => None,
            HvStatus::SUCCESS if completed > start && completed < count => {
                self.stalled = 0;
                Some(completed)
            }
            HvStatus::SUCCESS => {
                return Err(Error::BadRepSuccess {
                    code: self.code,
                    start,
                    completed,
                    count,
                })
            }
            HvStatus::TIMEOUT => {
                let completed = completed.clamp(start, count);
                self.stalled = if completed == start {
                    self.stalled + 1
                } else {
                    0
                };
                if self.stalled > MAX_STALLED_RETRIES {
                    return Err(HvError::TIMEOUT.into());
                }
                Some(completed)
            }
            status => return Err(status.result().err().unwrap_or(HvError::TIMEOUT).into()),
        };
        Ok(())
    }
}

/// The largest fast input block the paravisor's own call instruction carries on any ABI
/// (arm64 SMCCC: X2..X17; x64 RDX/R8, as the firmware is soft-float), in 64-bit words.
const FAST_WORDS_MAX: usize = hvdef::aarch64::SMCCC_FAST_WORDS;
const _: () = assert!(FAST_WORDS_MAX >= hvdef::x86_64::FAST_GPR_WORDS);

#[cfg(test)]
mod tests;
