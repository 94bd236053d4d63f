//! x86_64 VP start: the initial context an AP gets at VTL2 (HvCallEnableVpVtl /
//! HvCallStartVirtualProcessor input).
#![forbid(unsafe_code)]

/// The input that starts `vp` at `vtl` in `boot`'s AP entry: long mode on this VP's page tables
/// and GDT, on `vp`'s boot stack.
pub fn vp_start_input(vp: u32, vtl: u8) -> hvdef::x86_64::HvX64InputEnableVpVtl {
    use hvdef::x86_64::{HvX64InitialVpContext, HvX64SegmentRegister, HvX64TableRegister};
    use x86_64::registers::control::{Cr0, Cr3, Cr4};
    let segment = |selector, attributes| HvX64SegmentRegister {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        attributes,
    };
    let gdt = x86_64::instructions::tables::sgdt();
    let (code, data) = (segment(0x08, 0xa09b), segment(0x10, 0xc093));
    hvdef::x86_64::HvX64InputEnableVpVtl {
        partition_id: hvdef::HV_PARTITION_ID_SELF,
        vp_index: vp,
        target_vtl: vtl,
        reserved: [0; 3],
        context: HvX64InitialVpContext {
            rip: boot::arch::ap_entry(),
            rsp: boot::stacks::top(vp as usize),
            rflags: 0x2,
            cs: code,
            ds: data,
            es: data,
            fs: data,
            gs: data,
            ss: data,
            // A busy 64-bit TSS type: hypervisors reject a null TR in long mode.
            tr: HvX64SegmentRegister {
                base: 0,
                limit: 0xffff,
                selector: 0,
                attributes: 0x8b,
            },
            ldtr: HvX64SegmentRegister::default(),
            idtr: HvX64TableRegister::default(),
            gdtr: HvX64TableRegister {
                pad: [0; 3],
                limit: gdt.limit,
                base: gdt.base.as_u64(),
            },
            efer: super::msr::read_efer(),
            cr0: Cr0::read_raw(),
            cr3: Cr3::read_raw().0.start_address().as_u64(),
            cr4: Cr4::read_raw(),
            msr_cr_pat: 0x0007_0406_0007_0406,
        },
    }
}
