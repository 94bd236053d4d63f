//! The arch-neutral part of the kernel: set up the hypercall interface, copy in and check the
//! table, run every entry and print its result line, power off.

use crate::arch::{self, ARCH};
use crate::{mem, say};
use vtl0::{
    is_fast, parse_table, table_size, Entry, EntryLine, Numbered, TableHeader, PAGE_SIZE, TABLE_MAX,
};

/// The table, copied in once before any entry runs (a write probe may change the original).
struct TableCopy([u8; TABLE_MAX]);

static mut TABLE_COPY: TableCopy = TableCopy([0; TABLE_MAX]);

/// Entered from the arch entry code with a stack, exception vectors and the identity map.
pub extern "C" fn main() -> ! {
    say!(
        "start arch={} load={:#x} table={:#x} scratch={:#x}",
        ARCH.name(),
        ARCH.load_gpa(),
        ARCH.table_gpa(),
        ARCH.scratch_page()
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
    // SAFETY: the only reference to TABLE_COPY, taken once on the kernel's only CPU.
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
    for (i, entry) in table.entries().enumerate() {
        let entry = match entry {
            Ok(e) => e,
            // parse_table walked every entry already.
            Err(e) => {
                say!("bad table: {e}");
                arch::power_off(false)
            }
        };
        run(i as u32, entry, hyperv);
    }
    say!("done {} entries", table.count());
    arch::power_off(true)
}

fn run(index: u32, entry: Entry<'_>, hyperv: bool) {
    let line = match entry {
        Entry::Hypercall {
            control,
            input,
            output_len,
            force,
        } => {
            if !hyperv && !force {
                say!(
                    "{}",
                    Numbered(index, EntryLine::HypercallSkipped { control })
                );
                return;
            }
            return hypercall(index, control, input, output_len);
        }
        Entry::Read { gpa, width } => EntryLine::Read {
            gpa,
            width,
            outcome: arch::probe_read(gpa, width),
        },
        Entry::Write { gpa, width, value } => EntryLine::Write {
            gpa,
            width,
            value,
            outcome: arch::probe_write(gpa, width, value),
        },
        Entry::Exec { gpa } => EntryLine::Exec {
            gpa,
            outcome: arch::probe_exec(gpa),
        },
    };
    say!("{}", Numbered(index, line));
}

fn hypercall(index: u32, control: u64, input: &[u8], output_len: usize) {
    let fast = is_fast(control);
    let mut pool = [0u8; arch::POOL_BYTES];
    if fast {
        // parse_table checked the input fits the pool.
        let n = input.len().min(pool.len());
        pool[..n].copy_from_slice(&input[..n]);
    } else {
        mem::write(
            ARCH,
            ARCH.input_page(),
            input,
            PAGE_SIZE.saturating_sub(input.len()),
        );
        mem::write(ARCH, ARCH.output_page(), &[], PAGE_SIZE);
    }
    let done = match arch::hypercall(control, &pool) {
        Err(fault) => {
            let line = EntryLine::HypercallFault { control, fault };
            say!("{}", Numbered(index, line));
            return;
        }
        Ok(done) => done,
    };
    // The output page's reported bytes, copied out (the stack has room for a page).
    let mut copy = [0u8; PAGE_SIZE];
    let out: &[u8] = if fast {
        let at = ARCH.fast_output_offset(input.len());
        done.pool.get(at..at + output_len).unwrap_or_default()
    } else {
        let n = output_len.min(PAGE_SIZE);
        mem::read(ARCH, ARCH.output_page(), &mut copy[..n]);
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
