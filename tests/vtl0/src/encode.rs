//! The table encoder host-side tests and runners use to build what the kernel reads.

use crate::{
    EntryHeader, ExecBody, GpasBody, HypercallBody, Mode, PlaceBody, ReadBody, RepeatBody,
    TableHeader, VpBody, WriteBody, FLAG_EL0, FLAG_FORCE, FLAG_GPAS, FLAG_VP, KIND_EXEC,
    KIND_HYPERCALL, KIND_PLACE, KIND_READ, KIND_REPEAT, KIND_WRITE, TABLE_MAGIC, TABLE_VERSION,
};
use zerocopy::{FromBytes, IntoBytes};

/// A test table under construction: `Table::new().hypercall(..).read(..).to_bytes()`.
#[derive(Clone, Debug, Default)]
pub struct Table {
    count: u32,
    entries: Vec<u8>,
    /// Where the last entry starts in `entries`.
    last: usize,
}

impl Table {
    pub fn new() -> Table {
        Table::default()
    }

    fn push(mut self, kind: u16, flags: u16, body: &[u8], tail: &[u8]) -> Table {
        let padded = tail.len().div_ceil(8) * 8;
        let size = size_of::<EntryHeader>() + body.len() + padded;
        let header = EntryHeader {
            kind,
            flags,
            size: size as u32,
        };
        self.last = self.entries.len();
        self.entries.extend_from_slice(header.as_bytes());
        self.entries.extend_from_slice(body);
        self.entries.extend_from_slice(tail);
        self.entries
            .resize(self.entries.len() + padded - tail.len(), 0);
        self.count += 1;
        self
    }

    /// A hypercall with `control` (fast when its bit 16 is set), `input` (the input page's
    /// first bytes, or the fast register pool's) and `output_len` bytes of output to report.
    pub fn hypercall(self, control: u64, input: &[u8], output_len: u32) -> Table {
        let body = HypercallBody {
            control,
            input_len: input.len() as u32,
            output_len,
        };
        self.push(KIND_HYPERCALL, 0, body.as_bytes(), input)
    }

    /// A memory-form hypercall naming `input_gpa` and `output_gpa` ([`FLAG_GPAS`]): `input` still
    /// goes to the input page (so a GPA inside it sees those bytes), and nothing is reported of
    /// the output unless `output_gpa` is the output page.
    pub fn hypercall_at(
        self,
        control: u64,
        input_gpa: u64,
        output_gpa: u64,
        input: &[u8],
        output_len: u32,
    ) -> Table {
        let body = HypercallBody {
            control,
            input_len: input.len() as u32,
            output_len,
        };
        let gpas = GpasBody {
            input_gpa,
            output_gpa,
        };
        let mut both = body.as_bytes().to_vec();
        both.extend_from_slice(gpas.as_bytes());
        self.push(KIND_HYPERCALL, FLAG_GPAS, &both, input)
    }

    /// As [`Table::hypercall`], but made even without a Hyper-V interface ([`FLAG_FORCE`]).
    pub fn forced_hypercall(self, control: u64, input: &[u8], output_len: u32) -> Table {
        let body = HypercallBody {
            control,
            input_len: input.len() as u32,
            output_len,
        };
        self.push(KIND_HYPERCALL, FLAG_FORCE, body.as_bytes(), input)
    }

    /// As [`Table::hypercall`], made in `mode` (its flags: [`Mode::flags`]).
    pub fn hypercall_in(self, mode: Mode, control: u64, input: &[u8], output_len: u32) -> Table {
        let body = HypercallBody {
            control,
            input_len: input.len() as u32,
            output_len,
        };
        self.push(KIND_HYPERCALL, mode.flags(), body.as_bytes(), input)
    }

    /// As [`Table::read`], from EL0 ([`FLAG_EL0`], aarch64).
    pub fn read_el0(self, gpa: u64, width: u32) -> Table {
        let body = ReadBody {
            gpa,
            width,
            reserved: 0,
        };
        self.push(KIND_READ, FLAG_EL0, body.as_bytes(), &[])
    }

    /// As [`Table::write`], from EL0 ([`FLAG_EL0`], aarch64).
    pub fn write_el0(self, gpa: u64, width: u32, value: u64) -> Table {
        let body = WriteBody {
            gpa,
            value,
            width,
            reserved: 0,
        };
        self.push(KIND_WRITE, FLAG_EL0, body.as_bytes(), &[])
    }

    /// As [`Table::exec`], from EL0 ([`FLAG_EL0`], aarch64).
    pub fn exec_el0(self, gpa: u64) -> Table {
        self.push(KIND_EXEC, FLAG_EL0, ExecBody { gpa }.as_bytes(), &[])
    }

    /// A `width`-byte load from `gpa`.
    pub fn read(self, gpa: u64, width: u32) -> Table {
        let body = ReadBody {
            gpa,
            width,
            reserved: 0,
        };
        self.push(KIND_READ, 0, body.as_bytes(), &[])
    }

    /// A `width`-byte store of `value`'s low bytes to `gpa`.
    pub fn write(self, gpa: u64, width: u32, value: u64) -> Table {
        let body = WriteBody {
            gpa,
            value,
            width,
            reserved: 0,
        };
        self.push(KIND_WRITE, 0, body.as_bytes(), &[])
    }

    /// A call to `gpa`, expected to return.
    pub fn exec(self, gpa: u64) -> Table {
        self.push(KIND_EXEC, 0, ExecBody { gpa }.as_bytes(), &[])
    }

    /// x86_64: load the IDT `base`/`limit` and raise #UD ([`crate::KIND_IDT`]).
    pub fn idt(self, base: u64, limit: u16) -> Table {
        let body = crate::IdtBody {
            base,
            limit: limit.into(),
            reserved: 0,
        };
        self.push(crate::KIND_IDT, 0, body.as_bytes(), &[])
    }

    /// Make the next entry (which must be a hypercall) `count` times, with one line for all of
    /// them (see the crate docs).
    pub fn repeat(self, count: u32) -> Table {
        let body = RepeatBody { count, reserved: 0 };
        self.push(KIND_REPEAT, 0, body.as_bytes(), &[])
    }

    /// The entry added last runs on VP `vp` ([`FLAG_VP`]: a [`VpBody`] after its header)
    /// instead of VP 0: `Table::new().hypercall(..).on_vp(2)`. Panics without an entry, or on
    /// one that already names its VP.
    pub fn on_vp(mut self, vp: u32) -> Table {
        assert!(self.count > 0, "on_vp without an entry");
        let at = self.last;
        let (mut header, _) =
            EntryHeader::read_from_prefix(&self.entries[at..]).expect("the last entry's header");
        assert!(
            header.flags & FLAG_VP == 0,
            "the entry already names its VP"
        );
        header.flags |= FLAG_VP;
        header.size += size_of::<VpBody>() as u32;
        self.entries[at..at + size_of::<EntryHeader>()].copy_from_slice(header.as_bytes());
        let body = VpBody { vp, reserved: 0 };
        let after = at + size_of::<EntryHeader>();
        self.entries
            .splice(after..after, body.as_bytes().iter().copied());
        self
    }

    /// Store `bytes` at `gpa` (inside one page), e.g. the input a [`Table::hypercall_at`]
    /// call then names.
    pub fn place(self, gpa: u64, bytes: &[u8]) -> Table {
        let body = PlaceBody {
            gpa,
            len: bytes.len() as u32,
            reserved: 0,
        };
        self.push(KIND_PLACE, 0, body.as_bytes(), bytes)
    }

    /// The entries added so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The table as the kernel reads it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = TableHeader {
            magic: TABLE_MAGIC,
            version: TABLE_VERSION,
            header_size: size_of::<TableHeader>() as u16,
            count: self.count,
            total_size: (size_of::<TableHeader>() + self.entries.len()) as u32,
        };
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(&self.entries);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_table, Arch, Entry, TableError, MAX_ENTRIES, MAX_VPS, TABLE_MAX};

    fn sample() -> Table {
        Table::new()
            .hypercall(0x0001_0008, &[1, 2, 3], 0)
            .forced_hypercall(0x46, &[0xAA; 24], 16)
            .write(0x1000, 4, 0xDEAD_BEEF)
            .read(0x1000, 4)
            .exec(0x2000)
    }

    #[test]
    fn round_trip() {
        let bytes = sample().to_bytes();
        assert_eq!(&bytes[..4], b"VTL0");
        assert_eq!(bytes.len() % 8, 0);
        for arch in Arch::ALL {
            let t = parse_table(&bytes, arch).expect("valid");
            assert_eq!(t.count(), 5);
            let e: Vec<Entry<'_>> = t.entries().map(|e| e.unwrap()).collect();
            assert_eq!(
                e,
                vec![
                    Entry::Hypercall {
                        control: 0x0001_0008,
                        input: &[1, 2, 3],
                        output_len: 0,
                        force: false,
                        gpas: None,
                        mode: Mode::default(),
                    },
                    Entry::Hypercall {
                        control: 0x46,
                        input: &[0xAA; 24],
                        output_len: 16,
                        force: true,
                        gpas: None,
                        mode: Mode::default(),
                    },
                    Entry::Write {
                        gpa: 0x1000,
                        width: 4,
                        value: 0xDEAD_BEEF,
                        el0: false,
                    },
                    Entry::Read {
                        gpa: 0x1000,
                        width: 4,
                        el0: false,
                    },
                    Entry::Exec {
                        gpa: 0x2000,
                        el0: false
                    },
                ]
            );
        }
    }

    /// A hypercall naming its GPAs: the GpasBody right after the body, then the input; refused
    /// on a fast call (no GPAs there) and with output to report from a GPA that is not the
    /// kernel's output page.
    #[test]
    fn a_hypercall_at_explicit_gpas() {
        let arch = Arch::Aarch64;
        let bytes = Table::new()
            .hypercall_at(0x5c, 0x4020_0000, 0x4020_1000, &[7; 3], 0)
            .hypercall_at(0x8001, 0, arch.output_page(), &[], 8)
            .to_bytes();
        #[rustfmt::skip]
        let first = [
            1, 0, 2, 0, 48, 0, 0, 0,
            0x5c, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0x20, 0x40, 0, 0, 0, 0, 0, 0x10, 0x20, 0x40, 0, 0, 0, 0,
            7, 7, 7, 0, 0, 0, 0, 0,
        ];
        assert_eq!(&bytes[16..16 + 48], &first[..]);
        let t = parse_table(&bytes, arch).unwrap();
        let e: Vec<Entry<'_>> = t.entries().map(|e| e.unwrap()).collect();
        assert_eq!(
            e[0],
            Entry::Hypercall {
                control: 0x5c,
                input: &[7; 3],
                output_len: 0,
                force: false,
                gpas: Some((0x4020_0000, 0x4020_1000)),
                mode: Mode::default(),
            }
        );
        assert_eq!(
            e[1],
            Entry::Hypercall {
                control: 0x8001,
                input: &[],
                output_len: 8,
                force: false,
                gpas: Some((0, arch.output_page())),
                mode: Mode::default(),
            }
        );
        let fast = Table::new().hypercall_at(0x1_005d, 0, 0, &[], 0).to_bytes();
        assert!(matches!(
            parse_table(&fast, arch),
            Err(TableError::BadFlags { index: 0, flags: 2 })
        ));
        let elsewhere = Table::new()
            .hypercall_at(0x8001, 0, 0x4020_0000, &[], 8)
            .to_bytes();
        assert!(matches!(
            parse_table(&elsewhere, arch),
            Err(TableError::BadLength { index: 0, .. })
        ));
    }

    /// `on_vp` puts a VpBody after the last entry's header (FLAG_VP, size + 8); the parsed table
    /// says which VP runs each entry and which VPs it names. A VP past MAX_VPS, a reserved
    /// field set, or a repeat whose hypercall is on another VP are bad tables.
    #[test]
    fn entries_on_vps() {
        let t = Table::new()
            .read(0x4800_3000, 8)
            .on_vp(3)
            .repeat(2)
            .on_vp(1)
            .hypercall(0x5c, &[], 0)
            .on_vp(1)
            .exec(0x2000);
        let bytes = t.to_bytes();
        #[rustfmt::skip]
        let first = [
            2, 0, 0x20, 0, 32, 0, 0, 0,
            3, 0, 0, 0, 0, 0, 0, 0,
            0, 0x30, 0, 0x48, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(&bytes[16..48], first);
        for arch in Arch::ALL {
            let parsed = parse_table(&bytes, arch).expect("valid");
            assert_eq!(parsed.vps(), 0b1011);
            let placed: Vec<(u32, Entry<'_>)> =
                parsed.placed_entries().map(|e| e.unwrap()).collect();
            let vps: Vec<u32> = placed.iter().map(|(vp, _)| *vp).collect();
            assert_eq!(vps, vec![3, 1, 1, 0]);
            assert_eq!(
                placed[0].1,
                Entry::Read {
                    gpa: 0x4800_3000,
                    width: 8,
                    el0: false,
                }
            );
            assert_eq!(placed[1].1, Entry::Repeat { count: 2 });
        }
        let far = Table::new().exec(0).on_vp(MAX_VPS).to_bytes();
        assert_eq!(err(&far), TableError::BadVp { index: 0, vp: 16 });
        let mut reserved = Table::new().exec(0).on_vp(1).to_bytes();
        reserved[16 + 12] = 1;
        assert_eq!(err(&reserved), TableError::BadVp { index: 0, vp: 1 });
        let split = Table::new()
            .exec(0)
            .repeat(2)
            .on_vp(2)
            .hypercall(0x5c, &[], 0)
            .to_bytes();
        assert_eq!(err(&split), TableError::RepeatOnOtherVp { index: 1 });
        let cut = Table::new().exec(0).on_vp(1).to_bytes();
        let mut short = cut.clone();
        short[16 + 4] = 16; // the entry's size without the exec body
        assert!(parse_table(&short, Arch::X86_64).is_err());
    }

    /// A mode and a VP are separate flag bits (EL0 2, 32-bit 3, VP 5, the VTL entry 12-13):
    /// an entry has both, whichever order the encoder adds them in, and each parses back.
    #[test]
    fn a_mode_on_another_vp() {
        use crate::VtlEntry;
        let el0_call = Mode {
            el0: true,
            vtl_entry: VtlEntry::VtlCall,
            ..Mode::default()
        };
        let compat32 = Mode {
            compat32: true,
            ..Mode::default()
        };
        let arm = Table::new()
            .hypercall_in(el0_call, 0x11, &[], 0)
            .on_vp(2)
            .read_el0(0x5000_0000, 4)
            .on_vp(3)
            .to_bytes();
        assert_eq!(u16::from_le_bytes([arm[18], arm[19]]), 0x2024);
        let parsed = parse_table(&arm, Arch::Aarch64).expect("valid");
        assert_eq!(parsed.vps(), 0b1100);
        let placed: Vec<(u32, Entry<'_>)> = parsed.placed_entries().map(|e| e.unwrap()).collect();
        assert!(matches!(
            placed[0],
            (2, Entry::Hypercall { mode, .. }) if mode == el0_call
        ));
        assert_eq!(
            placed[1],
            (
                3,
                Entry::Read {
                    gpa: 0x5000_0000,
                    width: 4,
                    el0: true
                }
            )
        );
        let x86 = Table::new()
            .hypercall_in(compat32, 0x5c, &[], 0)
            .on_vp(1)
            .to_bytes();
        assert_eq!(u16::from_le_bytes([x86[18], x86[19]]), 0x28);
        let parsed = parse_table(&x86, Arch::X86_64).expect("valid");
        assert!(matches!(
            parsed.placed_entries().next(),
            Some(Ok((1, Entry::Hypercall { mode, .. }))) if mode == compat32
        ));
        // The arch checks still hold with the VP flag: no EL0 on x86_64, no 32-bit on aarch64.
        assert_eq!(
            parse_table(&arm, Arch::X86_64).unwrap_err(),
            TableError::BadFlags {
                index: 0,
                flags: 0x2024
            }
        );
        assert_eq!(
            parse_table(&x86, Arch::Aarch64).unwrap_err(),
            TableError::BadFlags {
                index: 0,
                flags: 0x28
            }
        );
    }

    #[test]
    #[should_panic(expected = "already names its VP")]
    fn on_vp_twice_is_a_mistake() {
        let _ = Table::new().exec(0).on_vp(1).on_vp(2);
    }

    /// A hypercall's mode is its flags: EL0 bit 2, 32-bit bit 3, the VTL entry in bits 12-13;
    /// each parses back on the arch it exists on and is refused where it does not.
    #[test]
    fn modes_are_flags_and_each_belongs_to_its_arch() {
        use crate::VtlEntry;
        let el0 = Mode {
            el0: true,
            ..Mode::default()
        };
        let compat32 = Mode {
            compat32: true,
            ..Mode::default()
        };
        let entry = |vtl_entry| Mode {
            vtl_entry,
            ..Mode::default()
        };
        let flags = |m: Mode| {
            let b = Table::new().hypercall_in(m, 0x5c, &[], 0).to_bytes();
            u16::from_le_bytes([b[18], b[19]])
        };
        assert_eq!(flags(el0), 0x4);
        assert_eq!(flags(compat32), 0x8);
        assert_eq!(flags(entry(VtlEntry::VtlCall)), 0x2000);
        assert_eq!(flags(entry(VtlEntry::VtlReturn)), 0x3000);
        assert_eq!(flags(Mode::default()), 0);
        let parsed = |m: Mode, control: u64, arch: Arch| {
            let b = Table::new().hypercall_in(m, control, &[], 0).to_bytes();
            parse_table(&b, arch).map(|t| match t.entries().next() {
                Some(Ok(Entry::Hypercall { mode, .. })) => mode,
                other => panic!("{other:?}"),
            })
        };
        let both = |m: Mode, arch: Arch| parsed(m, 0x5c, arch);
        assert_eq!(both(el0, Arch::Aarch64), Ok(el0));
        assert_eq!(
            both(el0, Arch::X86_64),
            Err(TableError::BadFlags { index: 0, flags: 4 })
        );
        assert_eq!(both(compat32, Arch::X86_64), Ok(compat32));
        assert_eq!(
            both(compat32, Arch::Aarch64),
            Err(TableError::BadFlags { index: 0, flags: 8 })
        );
        for arch in Arch::ALL {
            for e in [VtlEntry::VtlCall, VtlEntry::VtlReturn] {
                assert_eq!(both(entry(e), arch), Ok(entry(e)));
            }
            // Entry value 1 is not one.
            let mut b = Table::new().hypercall(0x5c, &[], 0).to_bytes();
            b[19] = 0x10;
            assert_eq!(
                parse_table(&b, arch).unwrap_err(),
                TableError::BadFlags {
                    index: 0,
                    flags: 0x1000
                }
            );
        }
        // 32-bit: memory form, ordinary entry only.
        assert_eq!(
            parsed(compat32, 1 << 16 | 0x5c, Arch::X86_64),
            Err(TableError::BadFlags { index: 0, flags: 8 })
        );
        let vtl32 = Mode {
            compat32: true,
            vtl_entry: VtlEntry::VtlReturn,
            ..Mode::default()
        };
        assert_eq!(
            both(vtl32, Arch::X86_64),
            Err(TableError::BadFlags {
                index: 0,
                flags: 0x3008
            })
        );
        // A repeated call may have a mode.
        let rep = Table::new()
            .repeat(3)
            .hypercall_in(el0, 0x5c, &[], 0)
            .to_bytes();
        assert!(parse_table(&rep, Arch::Aarch64).is_ok());
    }

    /// An EL0 probe: aarch64 only, of RAM the kernel maps outside its image's 2 MiB block.
    #[test]
    fn an_el0_probe_names_ram_outside_the_kernels_block() {
        let arch = Arch::Aarch64;
        let ok = Table::new()
            .read_el0(0x4020_0040, 8)
            .write_el0(arch.scratch_page(), 4, 7)
            .exec_el0(0x7FFF_F000)
            .to_bytes();
        let t = parse_table(&ok, arch).unwrap();
        let e: Vec<Entry<'_>> = t.entries().map(|e| e.unwrap()).collect();
        assert_eq!(
            e,
            [
                Entry::Read {
                    gpa: 0x4020_0040,
                    width: 8,
                    el0: true
                },
                Entry::Write {
                    gpa: arch.scratch_page(),
                    width: 4,
                    value: 7,
                    el0: true
                },
                Entry::Exec {
                    gpa: 0x7FFF_F000,
                    el0: true
                },
            ]
        );
        for gpa in [
            arch.load_gpa(),
            arch.load_gpa() + 0x1F_FFF8,
            0x0900_0000,
            0x3FFF_FFF8,
            0x8000_0000,
        ] {
            let b = Table::new().read(0, 8).read_el0(gpa, 8).to_bytes();
            assert_eq!(
                parse_table(&b, arch).unwrap_err(),
                TableError::BadEl0Gpa { index: 1, gpa },
                "{gpa:#x}"
            );
        }
        let x86 = Table::new().exec_el0(0x4020_0000).to_bytes();
        assert_eq!(
            parse_table(&x86, Arch::X86_64).unwrap_err(),
            TableError::BadFlags { index: 0, flags: 4 }
        );
    }

    #[test]
    fn exact_bytes_of_a_read() {
        let bytes = Table::new().read(0x4800_3000, 8).to_bytes();
        #[rustfmt::skip]
        let want = [
            b'V', b'T', b'L', b'0', 1, 0, 16, 0, 1, 0, 0, 0, 40, 0, 0, 0,
            2, 0, 0, 0, 24, 0, 0, 0,
            0, 0x30, 0, 0x48, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(bytes, want);
    }

    #[test]
    fn exact_bytes_of_a_place_and_its_bounds() {
        let bytes = Table::new()
            .place(0x1_0000_0ff8, &[1, 2, 3, 4, 5, 6, 7, 8])
            .place(0x4800_3001, &[9, 10, 11])
            .to_bytes();
        #[rustfmt::skip]
        let want = [
            b'V', b'T', b'L', b'0', 1, 0, 16, 0, 2, 0, 0, 0, 80, 0, 0, 0,
            8, 0, 0, 0, 32, 0, 0, 0,
            0xf8, 0x0f, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0,
            1, 2, 3, 4, 5, 6, 7, 8,
            8, 0, 0, 0, 32, 0, 0, 0,
            0x01, 0x30, 0, 0x48, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0,
            9, 10, 11, 0, 0, 0, 0, 0,
        ];
        assert_eq!(bytes, want);
        let t = parse_table(&bytes, Arch::X86_64).unwrap();
        let e: Vec<Entry<'_>> = t.entries().map(|e| e.unwrap()).collect();
        assert_eq!(
            e,
            [
                Entry::Place {
                    gpa: 0x1_0000_0ff8,
                    bytes: &[1, 2, 3, 4, 5, 6, 7, 8]
                },
                Entry::Place {
                    gpa: 0x4800_3001,
                    bytes: &[9, 10, 11]
                }
            ]
        );
        for (gpa, len) in [(0x1_0000_0ff9, 8), (0x2000, 0), (0x2000, 4097)] {
            let bytes = Table::new().place(gpa, &vec![0; len]).to_bytes();
            assert_eq!(
                parse_table(&bytes, Arch::X86_64).unwrap_err(),
                TableError::BadPlace {
                    index: 0,
                    gpa,
                    len: len as u32
                },
                "{gpa:#x} + {len}"
            );
        }
        assert!(Table::new().place(0x2000, &[0; 4096]).to_bytes().len() > 4096);
        let whole = Table::new().place(0x2000, &[0; 4096]).to_bytes();
        assert!(parse_table(&whole, Arch::Aarch64).is_ok(), "a whole page");
        // A flag on a place entry is refused.
        let mut flagged = Table::new().place(0x2000, &[1]).to_bytes();
        flagged[18] = FLAG_GPAS as u8;
        assert_eq!(
            parse_table(&flagged, Arch::X86_64).unwrap_err(),
            TableError::BadFlags {
                index: 0,
                flags: FLAG_GPAS
            }
        );
    }

    #[test]
    fn exact_bytes_of_a_repeat() {
        let bytes = Table::new()
            .repeat(100_000)
            .hypercall(0x5c, &[], 0)
            .to_bytes();
        #[rustfmt::skip]
        let want = [
            b'V', b'T', b'L', b'0', 1, 0, 16, 0, 2, 0, 0, 0, 56, 0, 0, 0,
            5, 0, 0, 0, 16, 0, 0, 0,
            0xa0, 0x86, 0x01, 0, 0, 0, 0, 0,
            1, 0, 0, 0, 24, 0, 0, 0,
            0x5c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(bytes, want);
        let t = parse_table(&bytes, Arch::Aarch64).unwrap();
        let e: Vec<Entry<'_>> = t.entries().map(|e| e.unwrap()).collect();
        assert_eq!(
            e,
            [
                Entry::Repeat { count: 100_000 },
                Entry::Hypercall {
                    control: 0x5c,
                    input: &[],
                    output_len: 0,
                    force: false,
                    gpas: None,
                    mode: Mode::default(),
                }
            ]
        );
    }

    #[test]
    fn a_repeat_needs_a_count_and_a_hypercall_after_it() {
        use crate::MAX_REPEAT;
        let call = |t: Table| t.forced_hypercall(0x2, &[], 0);
        assert!(parse_table(&call(Table::new().repeat(1)).to_bytes(), Arch::X86_64).is_ok());
        assert!(parse_table(
            &call(Table::new().repeat(MAX_REPEAT)).to_bytes(),
            Arch::X86_64
        )
        .is_ok());
        assert_eq!(
            err(&call(Table::new().read(0, 1).repeat(0)).to_bytes()),
            TableError::BadRepeatCount { index: 1, count: 0 }
        );
        assert_eq!(
            err(&call(Table::new().repeat(MAX_REPEAT + 1)).to_bytes()),
            TableError::BadRepeatCount {
                index: 0,
                count: MAX_REPEAT + 1
            }
        );
        // Last entry, followed by a probe, followed by another repeat.
        assert_eq!(
            err(&Table::new().read(0, 1).repeat(5).to_bytes()),
            TableError::BadRepeatTarget { index: 1 }
        );
        assert_eq!(
            err(&Table::new().repeat(5).read(0, 1).to_bytes()),
            TableError::BadRepeatTarget { index: 0 }
        );
        assert_eq!(
            err(&call(Table::new().repeat(5).repeat(5)).to_bytes()),
            TableError::BadRepeatTarget { index: 0 }
        );
        // Two repeats, each of its own call; a call after a repeated one is a plain call.
        let two = call(call(call(Table::new().repeat(2)).repeat(3)));
        assert!(parse_table(&two.to_bytes(), Arch::Aarch64).is_ok());
        // A repeat's body is exactly 8 bytes.
        let mut b = call(Table::new().repeat(1)).to_bytes();
        b[20] = 8;
        assert!(matches!(err(&b), TableError::BadEntrySize { index: 0, .. }));
        // Flags are refused on a repeat.
        let mut b = call(Table::new().repeat(1)).to_bytes();
        b[18] = FLAG_FORCE as u8;
        assert_eq!(err(&b), TableError::BadFlags { index: 0, flags: 1 });
    }

    #[test]
    fn empty_table_is_valid() {
        let bytes = Table::new().to_bytes();
        assert_eq!(parse_table(&bytes, Arch::X86_64).unwrap().count(), 0);
    }

    fn err(bytes: &[u8]) -> TableError {
        parse_table(bytes, Arch::X86_64).unwrap_err()
    }

    #[test]
    fn malformed_headers() {
        let good = sample().to_bytes();
        assert_eq!(err(&good[..10]), TableError::TooShort { len: 10 });
        let mut b = good.clone();
        b[0] = b'X';
        assert!(matches!(err(&b), TableError::BadMagic { .. }));
        let mut b = good.clone();
        b[4] = 2;
        assert_eq!(err(&b), TableError::BadVersion { version: 2 });
        let mut b = good.clone();
        b[6] = 8;
        assert_eq!(err(&b), TableError::BadHeaderSize { size: 8 });
        let mut b = good.clone();
        b[12..16].copy_from_slice(&(TABLE_MAX as u32 + 8).to_le_bytes());
        assert!(matches!(err(&b), TableError::TooLarge { .. }));
        let mut b = good.clone();
        b[8..12].copy_from_slice(&(MAX_ENTRIES + 1).to_le_bytes());
        assert!(matches!(err(&b), TableError::TooManyEntries { .. }));
        // Count larger than the entries present: the walk runs past the end.
        let mut b = good.clone();
        b[8] = 6;
        assert_eq!(
            err(&b),
            TableError::EntryPastEnd {
                index: 5,
                offset: good.len()
            }
        );
        // Total size larger than the bytes given.
        let mut b = good.clone();
        b.truncate(good.len() - 8);
        assert!(matches!(err(&b), TableError::Truncated { .. }));
        // Total size smaller than the entries: the last one runs past the end.
        let mut b = good.clone();
        let short = (good.len() - 8) as u32;
        b[12..16].copy_from_slice(&short.to_le_bytes());
        assert!(matches!(err(&b), TableError::EntryPastEnd { index: 4, .. }));
        // Bytes after the entries.
        let mut b = good.clone();
        b.extend([0; 8]);
        let total = b.len() as u32;
        b[12..16].copy_from_slice(&total.to_le_bytes());
        assert!(matches!(err(&b), TableError::TrailingBytes { .. }));
    }

    /// An IDT entry is x86_64's: its base and limit come back as written; aarch64 refuses the
    /// kind; a limit over 16 bits or a nonzero reserved word is a bad table.
    #[test]
    fn idt_entries() {
        let t = Table::new().idt(0x80_1000, 0).to_bytes();
        let parsed = parse_table(&t, Arch::X86_64).unwrap();
        assert_eq!(
            parsed.entries().next(),
            Some(Ok(Entry::Idt {
                base: 0x80_1000,
                limit: 0
            }))
        );
        assert_eq!(
            parse_table(&t, Arch::Aarch64).unwrap_err(),
            TableError::NotOnThisArch { index: 0, kind: 6 }
        );
        let mut b = t.clone();
        b[32..36].copy_from_slice(&0x1_0000u32.to_le_bytes());
        assert_eq!(
            err(&b),
            TableError::BadIdt {
                index: 0,
                limit: 0x1_0000
            }
        );
        let mut b = t.clone();
        b[36] = 1;
        assert_eq!(err(&b), TableError::BadIdt { index: 0, limit: 0 });
        let mut b = t;
        b[20] = 16;
        b[12] = 32;
        assert!(matches!(err(&b), TableError::BadEntrySize { index: 0, .. }));
    }

    #[test]
    fn malformed_entries() {
        let read = Table::new().read(0, 4).to_bytes();
        let mut b = read.clone();
        b[16] = 9;
        assert_eq!(err(&b), TableError::UnknownKind { index: 0, kind: 9 });
        let mut b = read.clone();
        b[20] = 12;
        assert_eq!(err(&b), TableError::BadEntrySize { index: 0, size: 12 });
        let mut b = read.clone();
        b[20] = 0;
        assert_eq!(err(&b), TableError::BadEntrySize { index: 0, size: 0 });
        let mut b = read.clone();
        b[20] = 32;
        assert!(matches!(err(&b), TableError::EntryPastEnd { index: 0, .. }));
        let w = Table::new().read(0, 3).to_bytes();
        assert_eq!(err(&w), TableError::BadWidth { index: 0, width: 3 });
        let w = Table::new().write(0, 16, 0).to_bytes();
        assert_eq!(
            err(&w),
            TableError::BadWidth {
                index: 0,
                width: 16
            }
        );
        let mut b = read.clone();
        b[18] = FLAG_FORCE as u8;
        assert_eq!(err(&b), TableError::BadFlags { index: 0, flags: 1 });
        let mut b = Table::new().hypercall(0x2, &[], 0).to_bytes();
        b[18] = 4;
        assert_eq!(err(&b), TableError::BadFlags { index: 0, flags: 4 });
        // FLAG_GPAS promises a GpasBody the entry does not have.
        b[18] = FLAG_GPAS as u8;
        assert_eq!(err(&b), TableError::BadEntrySize { index: 0, size: 24 });
        // A huge size field must not overflow anything.
        let mut b = read.clone();
        b[20..24].copy_from_slice(&0xFFFF_FFF8u32.to_le_bytes());
        assert!(matches!(err(&b), TableError::EntryPastEnd { index: 0, .. }));
    }

    #[test]
    fn hypercall_bounds() {
        let page = Table::new().hypercall(0x2, &[0; 4096], 4096).to_bytes();
        assert!(parse_table(&page, Arch::X86_64).is_ok());
        let big = Table::new().hypercall(0x2, &[0; 4097], 0).to_bytes();
        assert!(matches!(err(&big), TableError::BadLength { .. }));
        let out = Table::new().hypercall(0x2, &[], 4097).to_bytes();
        assert!(matches!(err(&out), TableError::BadLength { .. }));
        // Fast: x86 has 112 pool bytes, output after the input's 16-byte units.
        let fast = 1 << 16;
        let ok = Table::new().hypercall(fast, &[0; 16], 96).to_bytes();
        assert!(parse_table(&ok, Arch::X86_64).is_ok());
        let over = Table::new().hypercall(fast, &[0; 17], 96).to_bytes();
        assert!(matches!(err(&over), TableError::BadLength { .. }));
        let over = Table::new().hypercall(fast, &[0; 113], 0).to_bytes();
        assert!(matches!(err(&over), TableError::BadLength { .. }));
        // aarch64 has 128 bytes in X2..X17.
        let arm = Table::new().hypercall(fast, &[0; 48], 80).to_bytes();
        assert!(parse_table(&arm, Arch::Aarch64).is_ok());
        let arm = Table::new().hypercall(fast, &[0; 48], 81).to_bytes();
        assert!(parse_table(&arm, Arch::Aarch64).is_err());
        // An input length that disagrees with the entry size.
        let mut b = Table::new().hypercall(0x2, &[0; 8], 0).to_bytes();
        b[32] = 16;
        assert!(matches!(err(&b), TableError::BadEntrySize { .. }));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let good = sample().to_bytes();
        for n in 0..good.len() {
            assert!(parse_table(&good[..n], Arch::Aarch64).is_err(), "{n}");
        }
        // Every single-byte corruption parses or fails, never panics.
        for i in 0..good.len() {
            for v in [0u8, 0xFF, 0x7F] {
                let mut b = good.clone();
                b[i] = v;
                if let Ok(t) = parse_table(&b, Arch::X86_64) {
                    assert!(t.entries().all(|e| e.is_ok()));
                }
            }
        }
    }
}
