//! Guest memory as the in-VM host sees it: the guest's RAM, identity-mapped by the host's own
//! tables and by the guest's second-level tables, so a GPA is a host pointer. One type owns
//! the bounds check and the copy.
#![expect(
    unsafe_code,
    reason = "guest RAM is reached through host pointers (the one copy)"
)]

use alloc::vec::Vec;
use core::ops::Range;
use hvmodel::{GuestMemory, MemoryError};

/// Whether `gpa..gpa + len` lies inside `ram` (and does not wrap).
pub fn within(ram: &Range<u64>, gpa: u64, len: usize) -> bool {
    match gpa.checked_add(len as u64) {
        Some(end) => gpa >= ram.start && end <= ram.end,
        None => false,
    }
}

/// The guest's RAM: exactly what its second-level tables map for it, never the host's own
/// pages. An access must lie inside one range.
pub struct PhysMemory {
    ram: Vec<Range<u64>>,
}

impl PhysMemory {
    /// # Safety
    ///
    /// Every range of `ram` must be identity-mapped, readable and writable by the host, and
    /// hold no host data (the model writes wherever the guest asks inside it).
    #[cfg(target_os = "none")]
    pub unsafe fn new(ram: &[Range<u64>]) -> Self {
        Self { ram: ram.to_vec() }
    }

    fn check(&self, gpa: u64, len: usize) -> Result<(), MemoryError> {
        if self.ram.iter().any(|r| within(r, gpa, len)) {
            Ok(())
        } else {
            Err(MemoryError { gpa, len })
        }
    }
}

impl GuestMemory for PhysMemory {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.check(gpa, buf.len())?;
        let mut i = 0;
        while i < buf.len() {
            let at = gpa as usize + i;
            if at.is_multiple_of(8) && buf.len() - i >= 8 {
                // SAFETY: an aligned word inside the guest's RAM (checked above), which `new`'s
                // contract says is mapped at EL2 and owned by the guest. Volatile: the guest may
                // change it at will between exits, so nothing is cached or assumed.
                let word = unsafe { core::ptr::read_volatile(at as *const u64) };
                buf[i..i + 8].copy_from_slice(&word.to_le_bytes());
                i += 8;
            } else {
                // SAFETY: as above, one byte.
                buf[i] = unsafe { core::ptr::read_volatile(at as *const u8) };
                i += 1;
            }
        }
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.check(gpa, data.len())?;
        let mut i = 0;
        while i < data.len() {
            let at = gpa as usize + i;
            if at.is_multiple_of(8) && data.len() - i >= 8 {
                let word = u64::from_le_bytes(data[i..i + 8].try_into().expect("8 bytes"));
                // SAFETY: as in `read`, an aligned word; the guest is stopped in this exit
                // while the host writes.
                unsafe { core::ptr::write_volatile(at as *mut u64, word) };
                i += 8;
            } else {
                // SAFETY: as above, one byte.
                unsafe { core::ptr::write_volatile(at as *mut u8, data[i]) };
                i += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Word-sized where aligned, bytes elsewhere: every offset and length round-trips exactly
    /// and touches nothing outside its span.
    #[test]
    fn copies_are_exact_at_every_alignment() {
        let mut backing = alloc::vec![0u8; 96];
        let base = backing.as_mut_ptr() as u64;
        let mut mem = PhysMemory {
            ram: alloc::vec![base..base + 96],
        };
        for offset in 0..20u64 {
            for len in 0..40usize {
                let data: alloc::vec::Vec<u8> = (0..len)
                    .map(|i| (i as u8).wrapping_mul(7) ^ offset as u8 | 1)
                    .collect();
                mem.write(base, &[0; 96]).unwrap();
                mem.write(base + offset, &data).unwrap();
                let mut all = [0u8; 96];
                mem.read(base, &mut all).unwrap();
                let o = offset as usize;
                assert_eq!(&all[o..o + len], &data[..], "offset {offset} len {len}");
                assert!(all[..o].iter().chain(&all[o + len..]).all(|&b| b == 0));
                let mut back = alloc::vec![0u8; len];
                mem.read(base + offset, &mut back).unwrap();
                assert_eq!(back, data);
            }
        }
        drop(backing);
    }

    #[test]
    fn bounds() {
        let ram = 0x4000_0000..0x4f00_0000;
        assert!(within(&ram, 0x4000_0000, 0x1000));
        assert!(within(&ram, 0x4eff_f000, 0x1000));
        assert!(within(&ram, 0x4f00_0000, 0));
        assert!(!within(&ram, 0x4eff_f001, 0x1000));
        assert!(!within(&ram, 0x3fff_ffff, 1));
        assert!(!within(&ram, 0x4f00_0000, 1));
        assert!(!within(&ram, u64::MAX, 2));
        let mut mem = PhysMemory {
            ram: alloc::vec![0x1000..0x2000, 0x3000..0x4000],
        };
        assert_eq!(
            mem.read(0x1ffc, &mut [0; 8]),
            Err(MemoryError {
                gpa: 0x1ffc,
                len: 8
            }),
            "into the gap"
        );
        let mut buf = [0u8; 4];
        assert_eq!(
            mem.read(0x1ffe, &mut buf),
            Err(MemoryError {
                gpa: 0x1ffe,
                len: 4
            })
        );
        assert_eq!(
            mem.write(0xfff, &buf),
            Err(MemoryError { gpa: 0xfff, len: 4 })
        );
    }
}
