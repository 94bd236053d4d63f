//! The arch-neutral part of the kernel: set up the hypercall interface, copy in and check the
//! table, run every entry and print its result line, power off.
#![expect(
    unsafe_code,
    reason = "VP 0 copies the table into a static mut the other VPs then read"
)]

use crate::arch::{self, ARCH};
use crate::{mem, say, smp};
use arch::CallDone;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use vtl0::{
    is_fast, parse_table, table_size, Entry, EntryLine, Fault, Mode, Numbered, ParsedTable,
    RepeatStats, TableHeader, MAX_VPS, PAGE_SIZE, TABLE_MAX,
};

/// The table, copied in once before any entry runs (a write probe may change the original).
struct TableCopy([u8; TABLE_MAX]);

static mut TABLE_COPY: TableCopy = TableCopy([0; TABLE_MAX]);

/// The validated table's length in TABLE_COPY (0 until VP 0 has checked it), and whether the
/// Hyper-V interface is up: what a started VP reads before it runs its entries.
static TABLE_LEN: AtomicUsize = AtomicUsize::new(0);
static HYPERV: AtomicBool = AtomicBool::new(false);

/// The validated table, once VP 0 has checked it (it is not written after).
fn table() -> Option<ParsedTable<'static>> {
    let len = TABLE_LEN.load(Ordering::Acquire);
    if len == 0 {
        return None;
    }
    // SAFETY: VP 0 wrote TABLE_COPY before publishing its length and never writes it again;
    // from then on every VP only reads it.
    let copy: &'static [u8; TABLE_MAX] = unsafe { &(*core::ptr::addr_of!(TABLE_COPY)).0 };
    parse_table(&copy[..len], ARCH).ok()
}

/// Entered from the arch entry code with a stack, exception vectors and the identity map.
pub extern "C" fn main() -> ! {
    say!(
        "start arch={} load={:#x} table={:#x} scratch={:#x}",
        ARCH.name(),
        ARCH.load_gpa(),
        ARCH.table_gpa(),
        ARCH.scratch_page()
    );
    say!(
        "{}",
        vtl0::EntryRegisters {
            arch: ARCH,
            values: &arch::entry_registers(),
        }
    );
    let hyperv = match arch::hyperv_init() {
        Ok(()) => {
            say!("Hyper-V interface guest_os_id={:#x}", vtl0::GUEST_OS_ID);
            true
        }
        Err(reason) => {
            say!("no Hyper-V interface ({reason})");
            false
        }
    };
    // SAFETY: the only mutable reference to TABLE_COPY, taken once on VP 0 before any other
    // VP runs, and not used after the copy's length is published (`table()` from then on).
    let copy = unsafe { &mut (*core::ptr::addr_of_mut!(TABLE_COPY)).0 };
    let mut header = [0u8; size_of::<TableHeader>()];
    mem::read(ARCH, ARCH.table_gpa(), &mut header);
    let table = table_size(&header).and_then(|total| {
        mem::read(ARCH, ARCH.table_gpa(), &mut copy[..total]);
        parse_table(&copy[..total], ARCH)
    });
    let table = match table {
        Ok(t) => t,
        Err(e) => {
            say!("bad table: {e}");
            arch::power_off(false)
        }
    };
    HYPERV.store(hyperv, Ordering::Relaxed);
    TABLE_LEN.store(table.total_size(), Ordering::Release);
    // From here on every VP, this one too, reads the copy through `table()` only.
    let Some(table) = self::table() else {
        say!("bad table: the checked copy does not parse again");
        arch::power_off(false)
    };
    // The other VPs the table names: each started in VTL0 with its own stack.
    let others = table.vps() & !1;
    for vp in (1..MAX_VPS).filter(|vp| others & (1 << vp) != 0) {
        if !hyperv {
            say!("starting vp {vp} failed: no Hyper-V interface");
            arch::power_off(false)
        }
        match arch::start_vp(vp, smp::stack_top(vp)) {
            Ok(0) => say!("started vp {vp}"),
            Ok(result) => {
                say!("starting vp {vp} failed: result={result:#x}");
                arch::power_off(false)
            }
            Err(fault) => {
                say!("starting vp {vp} failed: {fault}");
                arch::power_off(false)
            }
        }
    }
    run_entries(&table, 0);
    while smp::DONE.load(Ordering::Acquire) != others.count_ones() {
        core::hint::spin_loop();
    }
    say!("done {} entries", table.count());
    arch::power_off(true)
}

/// A VP other than 0, started by VP 0 on the stack of `vp`: checks the hypervisor's index for
/// it, runs its entries, then waits (VP 0 powers off once every VP is done).
pub extern "C" fn ap_main() -> ! {
    let vp = smp::current();
    match arch::vp_index() {
        Ok(index) if index == vp => say!("up"),
        Ok(index) => {
            say!("the hypervisor says vp index {index}");
            arch::power_off(false)
        }
        Err(why) => {
            say!("reading the vp index failed: {why}");
            arch::power_off(false)
        }
    }
    let Some(table) = table() else {
        say!("started before the table was checked");
        arch::power_off(false)
    };
    run_entries(&table, vp);
    smp::DONE.fetch_add(1, Ordering::Release);
    arch::idle()
}

/// Runs `vp`'s entries in table order (the VPs' at the same time: each has its own pages,
/// stack and recovery record).
fn run_entries(table: &ParsedTable<'_>, vp: u32) {
    let hyperv = HYPERV.load(Ordering::Relaxed);
    let mut entries = table.placed_entries().enumerate();
    let mut next = || match entries.next() {
        Some((i, Ok(e))) => Some((i as u32, e)),
        // parse_table walked every entry already, and checked a repeat has a hypercall after it
        // on the same VP.
        Some((_, Err(e))) => {
            say!("bad table: {e}");
            arch::power_off(false)
        }
        None => None,
    };
    while let Some((i, (on, entry))) = next() {
        if on != vp {
            continue;
        }
        match entry {
            Entry::Repeat { count } => {
                let Some((_, (_, target))) = next() else {
                    say!("bad table: a repeat without a hypercall after it");
                    arch::power_off(false)
                };
                repeat(vp, i, count, target, hyperv);
            }
            entry => run(vp, i, entry, hyperv),
        }
    }
}

fn run(vp: u32, index: u32, entry: Entry<'_>, hyperv: bool) {
    let line = match entry {
        Entry::Hypercall {
            control,
            input,
            output_len,
            force,
            gpas,
            mode,
        } => {
            if !hyperv && !force {
                say!(
                    "{}",
                    Numbered(index, EntryLine::HypercallSkipped { control })
                );
                return;
            }
            return hypercall(vp, index, control, input, output_len, gpas, mode);
        }
        Entry::Read { gpa, width, el0 } => EntryLine::Read {
            gpa,
            width,
            outcome: if el0 {
                arch::probe_read_el0(gpa, width)
            } else {
                arch::probe_read(gpa, width)
            },
        },
        Entry::Write {
            gpa,
            width,
            value,
            el0,
        } => EntryLine::Write {
            gpa,
            width,
            value,
            outcome: if el0 {
                arch::probe_write_el0(gpa, width, value)
            } else {
                arch::probe_write(gpa, width, value)
            },
        },
        Entry::Exec { gpa, el0 } => EntryLine::Exec {
            gpa,
            outcome: if el0 {
                arch::probe_exec_el0(gpa)
            } else {
                arch::probe_exec(gpa)
            },
        },
        Entry::Idt { base, limit } => {
            say!("{}", Numbered(index, EntryLine::Idt { base, limit }));
            arch::idt_and_ud(base, limit)
        }
        Entry::Place { gpa, bytes } => EntryLine::Place {
            gpa,
            len: bytes.len(),
            outcome: place(gpa, bytes),
        },
        // main hands a repeat and its hypercall to `repeat`.
        Entry::Repeat { .. } => {
            say!("bad table: a repeat where an entry was expected");
            arch::power_off(false)
        }
    };
    say!("{}", Numbered(index, line));
}

/// Stores `bytes` at `gpa` (parse_table checked they stay in its page) through the arch's
/// window onto that page: any GPA, also one the identity map does not reach (x86_64 above
/// 4 GiB, aarch64 above 2 GiB). Each store is a write probe (8 bytes where aligned, else 1),
/// so a store the hypervisor or VTL2 refuses is a fault line, not the end of the kernel. The
/// window is one mapping in the page tables every VP shares: one VP at a time uses it.
fn place(gpa: u64, bytes: &[u8]) -> Result<(), vtl0::Fault> {
    static WINDOW: smp::Lock = smp::Lock::new();
    WINDOW.with(|| {
        let window = arch::open_window(gpa & !(PAGE_SIZE as u64 - 1));
        let mut at = (gpa % PAGE_SIZE as u64) as usize;
        let mut rest = bytes;
        let result = loop {
            let (width, value) = match rest {
                [] => break Ok(()),
                [a, b, c, d, e, f, g, h, ..] if at.is_multiple_of(8) => {
                    (8, u64::from_le_bytes([*a, *b, *c, *d, *e, *f, *g, *h]))
                }
                [a, ..] => (1, u64::from(*a)),
            };
            if let Err(fault) = arch::probe_write(window + at as u64, width, value) {
                break Err(fault);
            }
            at += usize::from(width);
            rest = &rest[usize::from(width)..];
        };
        arch::close_window();
        result
    })
}

/// Puts a call's input where the call reads it: the register pool it returns (fast), or VP
/// `vp`'s input page, with its output page zeroed.
fn prepare(vp: u32, control: u64, input: &[u8]) -> [u8; arch::POOL_BYTES] {
    let mut pool = [0u8; arch::POOL_BYTES];
    if is_fast(control) {
        // parse_table checked the input fits the pool.
        let n = input.len().min(pool.len());
        pool[..n].copy_from_slice(&input[..n]);
    } else {
        mem::write(
            ARCH,
            ARCH.vp_input_page(vp),
            input,
            PAGE_SIZE.saturating_sub(input.len()),
        );
        mem::write(ARCH, ARCH.vp_output_page(vp), &[], PAGE_SIZE);
    }
    pool
}

/// The GPAs a memory-based call of VP `vp` names: the entry's, or the VP's own pages.
fn call_gpas(vp: u32, gpas: Option<(u64, u64)>) -> Option<(u64, u64)> {
    Some(gpas.unwrap_or((ARCH.vp_input_page(vp), ARCH.vp_output_page(vp))))
}

fn hypercall(
    vp: u32,
    index: u32,
    control: u64,
    input: &[u8],
    output_len: usize,
    gpas: Option<(u64, u64)>,
    mode: Mode,
) {
    arch::prepare_mode(vp, mode);
    let pool = prepare(vp, control, input);
    let outcome = call_in(mode, control, &pool, call_gpas(vp, gpas));
    report(vp, index, control, input, output_len, mode, outcome);
}

/// A call in `mode`: the ordinary one, or the arch's own for a mode (see `vtl0::Mode`).
fn call_in(
    mode: Mode,
    control: u64,
    pool: &[u8; arch::POOL_BYTES],
    gpas: Option<(u64, u64)>,
) -> Result<CallDone, Fault> {
    if mode.is_special() {
        arch::hypercall_in(mode, control, pool, gpas)
    } else {
        arch::hypercall(control, pool, gpas)
    }
}

/// The line of a call made with `input` (its output page or pool as the call left it).
fn report(
    vp: u32,
    index: u32,
    control: u64,
    input: &[u8],
    output_len: usize,
    mode: Mode,
    outcome: Result<CallDone, Fault>,
) {
    let done = match outcome {
        Err(fault) => {
            let line = EntryLine::HypercallFault { control, fault };
            say!("{}", Numbered(index, line));
            if mode.is_special() {
                say!("{} {}", index, crate::recovery::fault_site(mode));
            }
            return;
        }
        Ok(done) => done,
    };
    // The output page's reported bytes, copied out (the stack has room for a page).
    let mut copy = [0u8; PAGE_SIZE];
    let out: &[u8] = if is_fast(control) {
        let at = ARCH.fast_output_offset(input.len());
        done.pool.get(at..at + output_len).unwrap_or_default()
    } else {
        let n = output_len.min(PAGE_SIZE);
        mem::read(ARCH, ARCH.vp_output_page(vp), &mut copy[..n]);
        &copy[..n]
    };
    let line = EntryLine::Hypercall {
        control,
        result: done.result,
        out,
        bad_canaries: done.bad_canaries(),
    };
    say!("{}", Numbered(index, line));
}

/// Repeat entry `index`: entry `index + 1`, a hypercall, made `count` times with its input set
/// up once; one summary line, then the entry's own line for the last call.
fn repeat(vp: u32, index: u32, count: u32, entry: Entry<'_>, hyperv: bool) {
    let Entry::Hypercall {
        control,
        input,
        output_len,
        force,
        gpas,
        mode,
    } = entry
    else {
        say!("bad table: repeat entry {index} is not followed by a hypercall");
        arch::power_off(false)
    };
    let mut stats = RepeatStats {
        count,
        hz: arch::counter_hz(),
        ..RepeatStats::default()
    };
    if !hyperv && !force {
        say!("{}", Numbered(index, EntryLine::Repeat(stats)));
        say!(
            "{}",
            Numbered(index + 1, EntryLine::HypercallSkipped { control })
        );
        return;
    }
    arch::prepare_mode(vp, mode);
    let pool = prepare(vp, control, input);
    let gpas = call_gpas(vp, gpas);
    let start = arch::counter();
    let mut last = call_in(mode, control, &pool, gpas);
    stats.calls = 1;
    if let Ok(done) = &last {
        stats.first = done.result;
        stats.last = done.result;
        stats.canaries_bad = u32::from(!done.bad_canaries().is_empty());
    }
    while last.is_ok() && stats.calls < count {
        last = call_in(mode, control, &pool, gpas);
        stats.calls += 1;
        if let Ok(done) = &last {
            stats.last = done.result;
            stats.differed += u32::from(done.result != stats.first);
            stats.canaries_bad += u32::from(!done.bad_canaries().is_empty());
        }
    }
    stats.ticks = arch::counter().wrapping_sub(start);
    say!("{}", Numbered(index, EntryLine::Repeat(stats)));
    report(vp, index + 1, control, input, output_len, mode, last);
}
