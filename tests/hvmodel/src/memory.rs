//! Guest-physical memory as the model sees it: the trait the QEMU glue implements over gdb, and a
//! flat in-process memory for tests.

use alloc::vec;
use alloc::vec::Vec;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// A guest-physical range the backing store could not read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryError {
    pub gpa: u64,
    pub len: usize,
}

impl core::fmt::Display for MemoryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "guest memory {:#x}+{:#x} is not accessible",
            self.gpa, self.len
        )
    }
}

impl core::error::Error for MemoryError {}

/// Guest-physical memory. Both ISAs run identity-mapped, so a GPA is what the glue reads.
pub trait GuestMemory {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError>;
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError>;
}

/// Reads a wire struct from guest memory.
pub fn read_obj<T: FromBytes + IntoBytes>(
    mem: &mut dyn GuestMemory,
    gpa: u64,
) -> Result<T, MemoryError> {
    let mut value = T::new_zeroed();
    mem.read(gpa, value.as_mut_bytes())?;
    Ok(value)
}

/// Writes a wire struct to guest memory.
pub(crate) fn write_obj<T: IntoBytes + Immutable>(
    mem: &mut dyn GuestMemory,
    gpa: u64,
    value: &T,
) -> Result<(), MemoryError> {
    mem.write(gpa, value.as_bytes())
}

/// Flat memory covering GPAs `0..size`; anything beyond is an error, like a GPA no RAM backs.
#[derive(Clone, Debug)]
pub struct TestMemory {
    bytes: Vec<u8>,
}

impl TestMemory {
    pub fn new(size: usize) -> Self {
        Self {
            bytes: vec![0; size],
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes at `gpa..gpa + len`; panics when out of range (test helper).
    pub fn slice(&self, gpa: u64, len: usize) -> &[u8] {
        &self.bytes[gpa as usize..gpa as usize + len]
    }

    pub fn read_u64(&self, gpa: u64) -> u64 {
        u64::from_le_bytes(self.slice(gpa, 8).try_into().unwrap())
    }

    fn range(&self, gpa: u64, len: usize) -> Result<core::ops::Range<usize>, MemoryError> {
        let err = MemoryError { gpa, len };
        let start = usize::try_from(gpa).map_err(|_| err)?;
        let end = start.checked_add(len).ok_or(err)?;
        if end > self.bytes.len() {
            return Err(err);
        }
        Ok(start..end)
    }
}

impl GuestMemory for TestMemory {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let range = self.range(gpa, buf.len())?;
        buf.copy_from_slice(&self.bytes[range]);
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        let range = self.range(gpa, data.len())?;
        self.bytes[range].copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        let mut mem = TestMemory::new(0x2000);
        mem.write(0x1FF8, &7u64.to_le_bytes()).unwrap();
        assert_eq!(mem.read_u64(0x1FF8), 7);
        assert_eq!(
            mem.write(0x1FFC, &[0; 8]),
            Err(MemoryError {
                gpa: 0x1FFC,
                len: 8
            })
        );
        let mut buf = [0u8; 4];
        assert!(mem.read(u64::MAX - 1, &mut buf).is_err());
        let v: u64 = read_obj(&mut mem, 0x1FF8).unwrap();
        assert_eq!(v, 7);
    }
}
