//! The live page tables the boot code extends: [`paging::Tables`] over the static tables and a
//! statically reserved pool of table pages, and the one extension of the identity map.
#![expect(
    unsafe_code,
    reason = "writes live page-table entries through their physical addresses"
)]

use crate::paging::{self, Format, MappedRam, Tables, ENTRIES};
use core::cell::UnsafeCell;
use core::ops::Range;
use spin::Once;

/// Table pages reserved for the extension (256 KiB of BSS). The static tables already have
/// room for RAM up to 512 GiB with 1 GiB pages (x86 PDPT entries 4-511, arm64 level-1 entries
/// 4-511), so pool pages go to sub-1 GiB edges of ranges (a level-2 and a level-3 table per
/// edge at most), to x86 PDPTs above 512 GiB (one per 512 GiB), and on x86 CPUs without 1 GiB
/// pages to one page directory per GiB: 64 GiB of RAM above 4 GiB there.
pub const POOL_PAGES: usize = 64;

#[repr(C, align(4096))]
struct Pool(UnsafeCell<[[u64; ENTRIES]; POOL_PAGES]>);

// SAFETY: only the boot VP writes the pool, once, inside MAPPED's call_once (so never two at a
// time); afterwards only the MMU reads it.
unsafe impl Sync for Pool {}

/// Zero-initialised, so in BSS.
static POOL: Pool = Pool(UnsafeCell::new([[0; ENTRIES]; POOL_PAGES]));

static MAPPED: Once<MappedRam> = Once::new();

/// The identity-mapped tables, addressed by physical address.
struct LiveTables {
    next: usize,
}

impl Tables for LiveTables {
    fn read(&self, table: u64, index: usize) -> u64 {
        // SAFETY: `table` is the static root or an address this builder wrote into an entry: a
        // table page of the image (identity-mapped); index < ENTRIES.
        unsafe { core::ptr::read_volatile((table as *const u64).add(index)) }
    }

    fn write(&mut self, table: u64, index: usize, entry: u64) {
        // SAFETY: as in read; volatile because the MMU reads these words.
        unsafe { core::ptr::write_volatile((table as *mut u64).add(index), entry) }
    }

    fn alloc(&mut self) -> Option<u64> {
        (self.next < POOL_PAGES).then(|| {
            let page = POOL.0.get().cast::<[u64; ENTRIES]>();
            self.next += 1;
            // Zero already (BSS) and never handed out twice.
            page.wrapping_add(self.next - 1) as u64
        })
    }
}

/// Extends the tables rooted at `root` to `ram` (see [`paging::map_ram`]), then `flush`es the
/// TLB. The first call does the work, on the boot VP before any other VP runs; later calls
/// return its result.
pub(crate) fn map_ram(
    ram: &[Range<u64>],
    format: Format,
    pa_bits: u32,
    root: u64,
    flush: fn(),
) -> &'static MappedRam {
    MAPPED.call_once(|| {
        let mut tables = LiveTables { next: 0 };
        let mapped = paging::map_ram(
            ram,
            format,
            paging::limit(format, pa_bits),
            &mut tables,
            root,
        );
        flush();
        mapped
    })
}
