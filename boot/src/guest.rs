//! Memory another party writes behind the firmware's back: VTL0's RAM, and the pages the loader
//! filled before the image ran. One type owns it, as COCONUT-SVSM's `GuestPtr` does: the bounds
//! ([`GuestMemory`]), the checked range that is the only way in ([`GuestRange`]), and the
//! volatile copy in and out. Nothing else in the firmware dereferences such memory.
//!
//! The rule it enforces: copy in, validate the copy, act, copy out. No reference into the
//! memory is ever made (its owner may change it at any time), and a [`GuestRange`] copies only
//! bytes the firmware may touch: ones a [`GuestMemory`] made with the `unsafe`
//! [`GuestMemory::mapped`] holds, or a loader page of the image (`GuestRange::loader_page`).
//! A [`GuestMemory::new`] is bounds only (safe code can check ranges against it, never copy
//! through them), so no safe code can read or write memory nobody vouched for.
#![expect(
    unsafe_code,
    reason = "the one volatile copy in and out of guest memory"
)]

use core::ops::Range;
use zerocopy::FromBytes;

/// The most ranges a [`GuestMemory`] keeps.
pub const GUEST_RANGES_MAX: usize = 16;

/// Guest-physical ranges the firmware may copy from and to on another party's behalf: RAM its
/// page tables identity-map as Normal memory, minus its own memory. Anything else is refused
/// and never touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestMemory {
    ranges: [Range<u64>; GUEST_RANGES_MAX],
    count: usize,
    /// Made by [`GuestMemory::mapped`]: its ranges copy.
    mapped: bool,
}

impl GuestMemory {
    /// `ram` minus `exclude` (ranges beyond [`GUEST_RANGES_MAX`] are dropped: less memory,
    /// never more), as bounds only: its ranges check and compare, but their copies are
    /// refused ([`CopyError::NotMapped`]).
    pub fn new(ram: &[Range<u64>], exclude: Range<u64>) -> GuestMemory {
        let mut out = GuestMemory {
            ranges: core::array::from_fn(|_| 0..0),
            count: 0,
            mapped: false,
        };
        let mut push = |r: Range<u64>| {
            if r.start < r.end && out.count < GUEST_RANGES_MAX {
                out.ranges[out.count] = r;
                out.count += 1;
            }
        };
        for r in ram {
            push(r.start..r.end.min(exclude.start));
            push(r.start.max(exclude.end)..r.end);
        }
        out
    }

    /// As [`GuestMemory::new`], and its ranges copy. The firmware passes the RAM its page
    /// tables map (`paging::MappedRam::mapped`) and its own memory as `exclude`.
    ///
    /// # Safety
    /// Every byte of `ram` outside `exclude` must be memory this code may read and write at
    /// its address (identity-mapped Normal memory, on the target) that no Rust reference
    /// aliases, for as long as this value and the ranges made from it are used.
    pub unsafe fn mapped(ram: &[Range<u64>], exclude: Range<u64>) -> GuestMemory {
        GuestMemory {
            mapped: true,
            ..GuestMemory::new(ram, exclude)
        }
    }

    /// Whether `[gpa, gpa + len)` lies entirely inside one range. `len` 0 is always inside.
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        len == 0 || self.range(gpa, len).is_some()
    }

    /// `[gpa, gpa + len)` as a range the firmware may copy, if it lies entirely inside one of
    /// these ranges and is not empty.
    pub fn range(&self, gpa: u64, len: u64) -> Option<GuestRange> {
        let end = gpa.checked_add(len)?;
        let len = usize::try_from(len).ok().filter(|&len| len != 0)?;
        for r in self.ranges.get(..self.count).unwrap_or_default() {
            if r.start <= gpa && end <= r.end {
                return Some(GuestRange {
                    gpa,
                    len,
                    mapped: self.mapped,
                });
            }
        }
        None
    }

    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges[..self.count]
    }
}

/// A non-empty guest-physical range checked to lie inside a [`GuestMemory`] (made only by
/// [`GuestMemory::range`] and `GuestRange::loader_page`): its copies need no second check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestRange {
    gpa: u64,
    len: usize,
    /// From a [`GuestMemory::mapped`] (or a loader page): the copies may touch it.
    mapped: bool,
}

/// Why a copy through a [`GuestRange`] did nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyError {
    /// More bytes than the range holds.
    BeyondRange,
    /// The range is of a bounds-only [`GuestMemory::new`].
    NotMapped,
}

impl GuestRange {
    pub const fn gpa(&self) -> u64 {
        self.gpa
    }

    pub const fn len(&self) -> usize {
        self.len
    }

    /// Never true: a range holds at least one byte.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first `len` bytes, if the range holds them.
    pub fn prefix(&self, len: usize) -> Option<GuestRange> {
        (len != 0 && len <= self.len).then_some(GuestRange { len, ..*self })
    }

    /// Whether a copy of `bytes` through the range may go ahead.
    fn check(&self, bytes: usize) -> Result<(), CopyError> {
        if !self.mapped {
            Err(CopyError::NotMapped)
        } else if bytes > self.len {
            Err(CopyError::BeyondRange)
        } else {
            Ok(())
        }
    }
}

impl GuestRange {
    /// A page of the image the loader fills before the image runs (the IGVM parameter pages,
    /// the VTL0 boot page: statics the compiler believes hold their zero initialisers).
    ///
    /// # Safety
    /// `page` must be a static of the image that no Rust reference is made into (an
    /// `UnsafeCell` only ever read through this range).
    #[cfg(target_os = "none")]
    pub unsafe fn loader_page<T>(page: &'static core::cell::UnsafeCell<T>) -> GuestRange {
        GuestRange {
            gpa: page.get() as u64,
            len: size_of::<T>(),
            mapped: true,
        }
    }

    /// Copies the range's first `buf.len()` bytes into `buf`: a word at a time where the range
    /// and `buf` are 8-byte aligned (every memory-based hypercall list is, and so are the
    /// firmware's pages; arm64's bare-metal target is strict-align, so a word into a
    /// misaligned buffer would be eight byte stores anyway), bytes otherwise. Volatile: the
    /// owner may change the memory concurrently, so the caller validates the copy, never the
    /// memory.
    pub fn read(&self, buf: &mut [u8]) -> Result<(), CopyError> {
        self.check(buf.len())?;
        let aligned = self.gpa.is_multiple_of(8) && buf.as_ptr().cast::<u64>().is_aligned();
        let words = if aligned { buf.len() / 8 } else { 0 };
        let (head, tail) = buf.split_at_mut(words * 8);
        match <[u64]>::mut_from_bytes(head) {
            Ok(head) => {
                let src = self.gpa as *const u64;
                for (i, word) in head.iter_mut().enumerate() {
                    // SAFETY: inside the range (`words * 8 <= buf.len() <= len`), and a
                    // mapped one (`check`): whoever made it vouched, in `GuestMemory::mapped`
                    // or `loader_page`, that it is memory this code may access at its address,
                    // never aliased by a Rust reference; an aligned word.
                    *word = unsafe { core::ptr::read_volatile(src.add(i)) };
                }
            }
            Err(_) => self.read_bytes(0, head),
        }
        self.read_bytes(words * 8, tail);
        Ok(())
    }

    /// Bytes `at..at + buf.len()` of the range (inside it: the callers checked), one by one.
    fn read_bytes(&self, at: usize, buf: &mut [u8]) {
        let src = (self.gpa + at as u64) as *const u8;
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: as in `read`, one byte inside the range.
            *b = unsafe { core::ptr::read_volatile(src.add(i)) };
        }
    }

    /// Writes `data` to the range's first `data.len()` bytes, copied as [`GuestRange::read`]
    /// copies.
    pub fn write(&self, data: &[u8]) -> Result<(), CopyError> {
        self.check(data.len())?;
        let aligned = self.gpa.is_multiple_of(8) && data.as_ptr().cast::<u64>().is_aligned();
        let words = if aligned { data.len() / 8 } else { 0 };
        let (head, tail) = data.split_at(words * 8);
        match <[u64]>::ref_from_bytes(head) {
            Ok(head) => {
                let dst = self.gpa as *mut u64;
                for (i, word) in head.iter().enumerate() {
                    // SAFETY: as in `read`.
                    unsafe { core::ptr::write_volatile(dst.add(i), *word) };
                }
            }
            Err(_) => self.write_bytes(0, head),
        }
        self.write_bytes(words * 8, tail);
        Ok(())
    }

    /// [`GuestRange::read_bytes`]'s counterpart.
    fn write_bytes(&self, at: usize, data: &[u8]) {
        let dst = (self.gpa + at as u64) as *mut u8;
        for (i, b) in data.iter().enumerate() {
            // SAFETY: as in `read`, one byte inside the range.
            unsafe { core::ptr::write_volatile(dst.add(i), *b) };
        }
    }

    /// The little-endian u32 at the start of the range, in one volatile load: `None` if the
    /// range is shorter, not 4-byte aligned, or not to be copied.
    pub fn read_u32(&self) -> Option<u32> {
        if self.check(4).is_err() || !self.gpa.is_multiple_of(4) {
            return None;
        }
        // SAFETY: as in `read`; an aligned u32 inside the range.
        Some(unsafe { core::ptr::read_volatile(self.gpa as *const u32) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn guest_memory_is_ram_minus_the_excluded_range() {
        const G: u64 = 1 << 30;
        let ram = [0x1000..2 * G, 4 * G..8 * G];
        let m = GuestMemory::new(&ram, 0x10_0000..0x20_0000);
        assert_eq!(
            m.ranges(),
            &[0x1000..0x10_0000, 0x20_0000..2 * G, 4 * G..8 * G]
        );
        assert!(m.contains(8 * G - 0x1000, 0x1000), "the last page of RAM");
        assert!(!m.contains(8 * G - 0x1000, 0x1001), "past the end of RAM");
        assert!(!m.contains(2 * G, 1), "the hole");
        assert!(!m.contains(0x10_0000, 1), "excluded");
        assert!(!m.contains(0, 1), "page 0 when not passed");
        assert!(m.contains(0x10_0000, 0), "nothing is always inside");
        assert_eq!(
            GuestMemory::new(&ram, 0..0).ranges(),
            &ram,
            "nothing clipped but the excluded range"
        );
    }

    /// The copies, over real memory: a buffer of this test vouched for as `mapped`.
    #[test]
    fn copies_go_through_mapped_ranges_only_and_never_past_them() {
        let mut backing = vec![0u64; 8];
        let base = backing.as_mut_ptr() as u64;
        // SAFETY: `backing` is this test's, and only touched through the ranges below while
        // they are used.
        let m = unsafe { GuestMemory::mapped(core::slice::from_ref(&(base..base + 64)), 0..0) };
        let words = m.range(base, 64).unwrap();
        let data: Vec<u8> = (1..=64).collect();
        assert_eq!(words.write(&data), Ok(()));
        let mut back = [0u64; 8];
        assert_eq!(
            words.read(back.as_mut_bytes()),
            Ok(()),
            "aligned: word copies"
        );
        assert_eq!(back.as_bytes(), &data[..]);
        // Aligned with a tail: a word, then five bytes from offset 8.
        let mut head_tail = [0u64; 2];
        let head_tail = &mut head_tail.as_mut_bytes()[..13];
        assert_eq!(m.range(base + 8, 13).unwrap().read(head_tail), Ok(()));
        assert_eq!(head_tail[..], data[8..21]);
        let fives = [u64::from_le_bytes([0x55; 8]); 2];
        let fives = &fives.as_bytes()[..13];
        assert_eq!(m.range(base + 8, 13).unwrap().write(fives), Ok(()));
        let mut around = [0u8; 32];
        assert_eq!(words.read(&mut around), Ok(()));
        assert_eq!(&around[..8], &data[..8]);
        assert_eq!(&around[8..21], &[0x55; 13]);
        assert_eq!(&around[21..], &data[21..32]);
        assert_eq!(words.write(&data), Ok(()), "as before");
        // Misaligned on either side: byte copies, the same bytes.
        let odd = m.range(base + 3, 13).unwrap();
        let mut out = [0u8; 14];
        assert_eq!(odd.read(&mut out[1..]), Ok(()));
        assert_eq!(&out[1..], &data[3..16]);
        assert_eq!(odd.write(&[0xEE; 13]), Ok(()));
        let mut all = [0u8; 64];
        assert_eq!(words.read(&mut all), Ok(()));
        assert_eq!(&all[..3], &data[..3], "before the range untouched");
        assert_eq!(&all[3..16], &[0xEE; 13]);
        assert_eq!(&all[16..], &data[16..], "after the range untouched");
        let first = m.range(base + 3, 4).unwrap();
        assert_eq!(first.read_u32(), None, "not 4-byte aligned");
        assert_eq!(words.read_u32(), Some(u32::from_le_bytes([1, 2, 3, 0xEE])));
        assert_eq!(m.range(base, 3).unwrap().read_u32(), None, "shorter than 4");
        // Never past the range: nothing copied.
        let short = words.prefix(8).unwrap();
        let mut nine = [0xAAu8; 9];
        assert_eq!(short.read(&mut nine), Err(CopyError::BeyondRange));
        assert_eq!(nine, [0xAA; 9]);
        assert_eq!(short.write(&[0; 9]), Err(CopyError::BeyondRange));
        assert_eq!(
            words.read(&mut [0u8; 64][..8]),
            Ok(()),
            "the prefix's bytes are intact"
        );
        // Bounds only: the same range of a `new` copies nothing.
        let bounds = GuestMemory::new(core::slice::from_ref(&(base..base + 64)), 0..0);
        let unmapped = bounds.range(base, 64).unwrap();
        assert_eq!(unmapped.write(&data), Err(CopyError::NotMapped));
        assert_eq!(unmapped.read(&mut [0; 8]), Err(CopyError::NotMapped));
        assert_eq!(unmapped.read_u32(), None);
        assert!(!unmapped.is_empty());
    }

    #[test]
    fn ranges_are_made_only_inside_and_never_empty() {
        let m = GuestMemory::new(core::slice::from_ref(&(0x1000..0x3000)), 0..0);
        let r = m.range(0x1ff8, 16).expect("inside");
        assert_eq!((r.gpa(), r.len()), (0x1ff8, 16));
        assert_eq!(m.range(0x2ff8, 16), None, "crosses the end");
        assert_eq!(m.range(0x0ff8, 16), None, "crosses the start");
        assert_eq!(m.range(0x1000, 0), None, "empty");
        assert_eq!(m.range(u64::MAX - 3, 8), None, "wraps");
        assert_eq!(r.prefix(8).map(|p| p.len()), Some(8));
        assert_eq!(r.prefix(17), None, "longer than the range");
        assert_eq!(r.prefix(0), None, "empty");
    }
}
