//! SVM's MSR permission map (8 KiB: two bits per MSR, read then write, for 0..0x1FFF at byte 0,
//! 0xC000_0000.. at 0x800, 0xC001_0000.. at 0x1000; MSRs outside the three ranges always
//! exit). Pure, so it is tested on the host; `x86_64::svm` applies it.

/// Size of the map in bytes.
pub const SIZE: usize = 0x2000;

/// The MSRs of SVM itself, which a guest must never reach: VM_CR and VM_HSAVE_PA (a guest write
/// of the latter would move the host's save area under QEMU). Their accesses exit and fail the
/// run.
pub const SVM_MSRS: [u32; 2] = [0xc001_0114, 0xc001_0117];

/// The byte and the two bits (read, write) of `msr`, if the map covers it.
pub fn bits(msr: u32) -> Option<(usize, u8)> {
    const RANGES: [(u32, usize); 3] = [(0, 0), (0xc000_0000, 0x800), (0xc001_0000, 0x1000)];
    RANGES.iter().find_map(|&(base, offset)| {
        let n = msr.checked_sub(base).filter(|n| *n < 0x2000)? as usize;
        Some((offset + n / 4, 0b11 << ((n % 4) * 2)))
    })
}

/// A map in which exactly `msrs` (reads and writes) exit, besides the uncovered ones.
pub fn intercepting(msrs: &[u32]) -> Option<[u8; SIZE]> {
    let mut map = [0; SIZE];
    for &msr in msrs {
        let (byte, bits) = bits(msr)?;
        map[byte] |= bits;
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_positions_follow_the_apm() {
        assert_eq!(bits(0), Some((0, 0b11)));
        assert_eq!(bits(0x1fff), Some((0x7ff, 0b1100_0000)));
        assert_eq!(bits(0xc000_0080), Some((0x800 + 0x20, 0b11)));
        // VM_HSAVE_PA: n = 0x117, byte 0x1000 + 0x45, bits 6-7.
        assert_eq!(bits(0xc001_0117), Some((0x1045, 0b1100_0000)));
        assert_eq!(bits(0x4000_0000), None, "the hypervisor's MSRs always exit");
        assert_eq!(bits(0xc000_2000), None);
    }

    #[test]
    fn the_map_intercepts_exactly_what_it_is_given() {
        let map = intercepting(&SVM_MSRS).expect("covered");
        // VM_CR (n = 0x114) and VM_HSAVE_PA (0x117) share byte 0x1045: bits 0-1 and 6-7.
        assert_eq!(map.iter().filter(|b| **b != 0).count(), 1);
        assert_eq!(map[0x1045], 0b1100_0011);
        assert_eq!(intercepting(&[0x4000_0000]), None);
    }
}
