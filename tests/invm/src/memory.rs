//! Guest memory as the in-VM host sees it: the guest's RAM, identity-mapped by the host's own
//! EL2 stage-1 tables and by the guest's stage-2 tables, so a GPA is a host pointer. One type
//! owns the bounds check and the copy.

use core::ops::Range;
use hvmodel::{GuestMemory, MemoryError};

/// Whether `gpa..gpa + len` lies inside `ram` (and does not wrap).
pub fn within(ram: &Range<u64>, gpa: u64, len: usize) -> bool {
    match gpa.checked_add(len as u64) {
        Some(end) => gpa >= ram.start && end <= ram.end,
        None => false,
    }
}

/// The guest's RAM: exactly what stage 2 maps for it, never the host's own pages.
pub struct PhysMemory {
    ram: Range<u64>,
}

impl PhysMemory {
    /// # Safety
    ///
    /// `ram` must be identity-mapped, readable and writable at EL2, and hold no host data
    /// (the model writes wherever the guest asks inside it).
    #[cfg(target_os = "none")]
    pub unsafe fn new(ram: Range<u64>) -> Self {
        Self { ram }
    }

    fn check(&self, gpa: u64, len: usize) -> Result<(), MemoryError> {
        if within(&self.ram, gpa, len) {
            Ok(())
        } else {
            Err(MemoryError { gpa, len })
        }
    }
}

impl GuestMemory for PhysMemory {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.check(gpa, buf.len())?;
        for (i, byte) in buf.iter_mut().enumerate() {
            // SAFETY: inside the guest's RAM (checked above), which `new`'s contract says is
            // mapped at EL2 and owned by the guest. Volatile: the guest may change it at will
            // between exits, so nothing is cached or assumed.
            *byte = unsafe { core::ptr::read_volatile((gpa as usize + i) as *const u8) };
        }
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.check(gpa, data.len())?;
        for (i, &byte) in data.iter().enumerate() {
            // SAFETY: as in `read`; the guest is stopped in this exit while the host writes.
            unsafe { core::ptr::write_volatile((gpa as usize + i) as *mut u8, byte) };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ram: 0x1000..0x2000,
        };
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
