//! Decoding a hypercall intercept message into an ISA-neutral [`Request`]: which registers carry
//! the control word, the GPAs and the fast block, and which callers get an exception instead.

use super::{ControlRegister, Decoded, Isa, Request};
use hvdef::aarch64::{
    HvArm64HypercallInterceptMessage, HVC1_FAST_WORDS, HVC_IMM_HYPERCALL, HVC_IMM_SMCCC,
    HVC_IMM_VTL_CALL, HVC_IMM_VTL_RETURN, SMCCC_FAST_WORDS, SMCCC_HV_FUNC_ID,
};
use hvdef::x86_64::{HvX64HypercallInterceptMessage, FAST_GPR_WORDS, FAST_XMM_WORDS};
use hvdef::{Control, HvStatus};

/// CS.L (bit 13 of the hypervisor's segment attributes, the descriptor's "64-bit code" bit). An
/// x86 architectural bit rather than a TLFS number, so hvdef does not carry it.
const CS_ATTRIBUTES_LONG: u16 = 1 << 13;

/// Decodes an x64 intercept. `xmm_fast_input` is whether the host advertises XMM fast input
/// (CPUID 0x40000003 EDX bit 4), which VTL0 sees too: it widens the fast block to XMM0-5. A
/// fast call's block is assembled in `block` (RDX, R8, then XMM0-5's halves: in the message
/// they are not adjacent), which the request borrows.
///
/// [`Decoded::Fault`] (#UD in VTL0; the call never reaches the host) for:
/// - CPL != 0: the TLFS makes hypercalls legal only at CPL0. The hypervisor #UDs these before
///   intercepting, so one can only come from a hypervisor bug; faulting keeps a VTL0 user
///   process from ever reaching the host through us.
/// - Not 64-bit (EFER.LMA and CS.L not both set): real mode is #UD per the TLFS. The 32-bit
///   protected-mode convention (EDX:EAX, EBX:ECX, EDI:ESI) is legal per the TLFS, but the
///   paravisor serves only 64-bit VTL0 kernels: decoding RCX/RDX/R8 would misread such a call,
///   and a status written to RAX would reach a 32-bit caller as half of EDX:EAX. #UD is what it
///   gets from a hypervisor with no hypercall interface for it, unambiguous in any mode.
#[inline(always)]
pub fn decode_x64<'a>(
    msg: &'a HvX64HypercallInterceptMessage,
    xmm_fast_input: bool,
    block: &'a mut [u64; FAST_XMM_WORDS],
) -> Decoded<'a> {
    let header = &msg.header;
    let (ip, instruction_len) = (header.rip, header.instruction_length());
    let state = header.execution_state;
    let long_mode = state.efer_lma() && header.cs_segment.attributes & CS_ATTRIBUTES_LONG != 0;
    if state.cpl() != 0 || !long_mode {
        return Decoded::Fault;
    }
    let control = Control::from_bits(msg.rcx);
    let fast: &[u64] = if control.fast() {
        const _: () = assert!(FAST_GPR_WORDS == 2);
        block[0] = msg.rdx;
        block[1] = msg.r8;
        if xmm_fast_input {
            for (slots, xmm) in block[FAST_GPR_WORDS..]
                .chunks_exact_mut(2)
                .zip(&msg.xmm_registers)
            {
                slots.copy_from_slice(xmm);
            }
            block
        } else {
            &block[..FAST_GPR_WORDS]
        }
    } else {
        &[]
    };
    Decoded::Hypercall(Request {
        isa: Isa::X64,
        control,
        control_register: ControlRegister::Rcx,
        input_gpa: if control.fast() { 0 } else { msg.rdx },
        output_gpa: if control.fast() { 0 } else { msg.r8 },
        fast,
        ip,
        instruction_len,
    })
}

/// Decodes an arm64 intercept. The fast block is borrowed in place from `msg`.
///
/// - `hvc #0` is SMCCC: X0 is the function id (only W0 counts, per SMCCC), X1 the control word,
///   X2/X3 the GPAs, fast block X2..X17. Any other function id is not a Hyper-V hypercall.
/// - `hvc #1` is the legacy Hyper-V ABI: X0 control, X1/X2 GPAs, fast block X1..X17.
/// - `hvc #2` / `hvc #3` are VtlCall / VtlReturn: [`Decoded::Fault`], as the same calls by code
///   get from the policy (VtlReturn from VTL0, the lowest VTL, is always undefined; VtlCall has no
///   higher VTL VTL0 may enter here).
/// - Any other immediate gets HV_STATUS_INVALID_HYPERCALL_CODE: #4 is VP launch (NON-TLFS), a
///   VTL switch rather than a hypercall; the rest carry no Hyper-V ABI.
/// - EL0: [`Decoded::Fault`] like x64 CPL3 (see [`decode_x64`]): `hvc` is undefined at EL0, so
///   such a message can only come from a hypervisor bug.
#[inline(always)]
pub fn decode_arm64(msg: &HvArm64HypercallInterceptMessage) -> Decoded<'_> {
    let (ip, instruction_len) = (msg.header.pc, msg.header.instruction_length);
    if msg.header.execution_state.cpl() == 0 {
        return Decoded::Fault;
    }
    let x = &msg.x;
    let (control, control_register, gpas, block) = match msg.immediate {
        HVC_IMM_SMCCC => {
            if x[0] as u32 != SMCCC_HV_FUNC_ID {
                return Decoded::NotHypercall {
                    ip,
                    instruction_len,
                };
            }
            (x[1], ControlRegister::X1, (x[2], x[3]), &x[2..])
        }
        HVC_IMM_HYPERCALL => (x[0], ControlRegister::X0, (x[1], x[2]), &x[1..]),
        HVC_IMM_VTL_CALL | HVC_IMM_VTL_RETURN => return Decoded::Fault,
        _ => {
            return Decoded::Refused {
                status: HvStatus::INVALID_HYPERCALL_CODE,
                ip,
                instruction_len,
            }
        }
    };
    const _: () = assert!(SMCCC_FAST_WORDS == 16 && HVC1_FAST_WORDS == 17);
    let control = Control::from_bits(control);
    // The GPAs mean something only for memory-based calls and the block only for fast ones;
    // the other is left out so nothing downstream can act on stale register contents.
    let ((input_gpa, output_gpa), fast) = if control.fast() {
        ((0, 0), block)
    } else {
        (gpas, &[][..])
    };
    Decoded::Hypercall(Request {
        isa: Isa::Arm64,
        control,
        control_register,
        input_gpa,
        output_gpa,
        fast,
        ip,
        instruction_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvdef::aarch64::{HVC_IMM_VP_LAUNCH, INSTRUCTION_LEN};
    use hvdef::x86_64::VMCALL_LEN;
    use hvdef::HypercallCode;
    use zerocopy::FromBytes;

    const RIP: u64 = 0xFFFF_F800_1234_0000;
    /// CS attributes of a 64-bit ring-0 code segment (P, S, type 0xB, L, G).
    const CS_LONG: u16 = 0xA09B;

    /// A golden x64 message built from raw bytes at the OpenVMM payload offsets.
    fn x64_bytes(control: Control, cpl: u8, efer_lma: bool, cs_attributes: u16) -> [u8; 0xD0] {
        let mut b = [0u8; 0xD0];
        let put =
            |b: &mut [u8; 0xD0], at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        b[4] = 0x53; // instruction length 3, CR8 5
        b[5] = 2; // execute
        let state = u16::from(cpl) | 1 << 2 | u16::from(efer_lma) << 4;
        b[6..8].copy_from_slice(&state.to_le_bytes());
        b[8 + 12..8 + 14].copy_from_slice(&0x10u16.to_le_bytes());
        b[8 + 14..8 + 16].copy_from_slice(&cs_attributes.to_le_bytes());
        put(&mut b, 0x18, RIP);
        put(&mut b, 0x28, 0xAAAA); // rax
        put(&mut b, 0x38, control.into_bits());
        put(&mut b, 0x40, 0x5000); // rdx
        put(&mut b, 0x48, 0x6000); // r8
        for n in 0..12 {
            put(&mut b, 0x60 + 8 * n, 0x100 + n as u64);
        }
        b
    }

    /// Decodes a golden message (leaked, as the request borrows it and the block).
    fn x64(control: Control, cpl: u8, efer_lma: bool, cs: u16, xmm: bool) -> Decoded<'static> {
        let bytes = x64_bytes(control, cpl, efer_lma, cs);
        let msg = HvX64HypercallInterceptMessage::read_from_bytes(&bytes).unwrap();
        decode_x64(
            Box::leak(Box::new(msg)),
            xmm,
            Box::leak(Box::new([0; FAST_XMM_WORDS])),
        )
    }

    fn hypercall(d: Decoded<'static>) -> Request<'static> {
        match d {
            Decoded::Hypercall(r) => r,
            other => panic!("not a hypercall: {other:?}"),
        }
    }

    #[test]
    fn x64_memory_based_golden() {
        let control = Control::new()
            .with_code(HypercallCode::GET_VP_REGISTERS)
            .with_rep_count(3);
        let r = hypercall(x64(control, 0, true, CS_LONG, true));
        assert_eq!(r.isa, Isa::X64);
        assert_eq!(r.control, control);
        assert_eq!((r.input_gpa, r.output_gpa), (0x5000, 0x6000));
        assert_eq!(r.fast, &[] as &[u64], "no block for a memory-based call");
        assert_eq!((r.ip, u64::from(r.instruction_len)), (RIP, VMCALL_LEN));
    }

    #[test]
    fn x64_fast_block_with_and_without_xmm() {
        let control = Control::new()
            .with_code(HypercallCode::SIGNAL_EVENT)
            .with_fast(true);
        let r = hypercall(x64(control, 0, true, CS_LONG, true));
        assert_eq!((r.input_gpa, r.output_gpa), (0, 0));
        assert_eq!(r.fast.len(), FAST_XMM_WORDS);
        assert_eq!(&r.fast[..4], &[0x5000, 0x6000, 0x100, 0x101]);
        assert_eq!(r.fast[13], 0x10B);

        let r = hypercall(x64(control, 0, true, CS_LONG, false));
        assert_eq!(r.fast, &[0x5000, 0x6000], "RDX and R8 only");
    }

    #[test]
    fn x64_non_64bit_or_user_callers_fault() {
        let control = Control::new().with_code(HypercallCode::POST_MESSAGE);
        // Compatibility mode (CS.L clear), legacy protected or real mode, CPL1, CPL3.
        assert_eq!(x64(control, 0, true, 0xC09B, false), Decoded::Fault);
        assert_eq!(x64(control, 0, false, CS_LONG, false), Decoded::Fault);
        assert_eq!(x64(control, 0, false, 0x009B, false), Decoded::Fault);
        assert_eq!(x64(control, 1, true, CS_LONG, false), Decoded::Fault);
        assert_eq!(x64(control, 3, true, CS_LONG, true), Decoded::Fault);
        assert!(matches!(
            x64(control, 0, true, CS_LONG, false),
            Decoded::Hypercall(_)
        ));
    }

    fn arm64(immediate: u16, el: u8, x: [u64; 18]) -> Decoded<'static> {
        let mut b = [0u8; 0xB0];
        b[4] = INSTRUCTION_LEN as u8;
        b[6..8].copy_from_slice(&u16::from(el).to_le_bytes());
        b[8..16].copy_from_slice(&0x4000_1000u64.to_le_bytes());
        b[0x18..0x1A].copy_from_slice(&immediate.to_le_bytes());
        for (n, v) in x.iter().enumerate() {
            b[0x20 + 8 * n..0x28 + 8 * n].copy_from_slice(&v.to_le_bytes());
        }
        let msg = HvArm64HypercallInterceptMessage::read_from_bytes(&b).unwrap();
        decode_arm64(Box::leak(Box::new(msg)))
    }

    fn regs(first: &[u64]) -> [u64; 18] {
        let mut x: [u64; 18] = core::array::from_fn(|n| 0x1000 + n as u64);
        x[..first.len()].copy_from_slice(first);
        x
    }

    #[test]
    fn arm64_smccc() {
        let memory = Control::new().with_code(HypercallCode::POST_MESSAGE);
        // Upper 32 bits of X0 do not count.
        let func = 0xDEAD_0000_0000_0000 | u64::from(SMCCC_HV_FUNC_ID);
        let r = hypercall(arm64(HVC_IMM_SMCCC, 1, regs(&[func, memory.into_bits()])));
        assert_eq!(r.isa, Isa::Arm64);
        assert_eq!(r.control, memory);
        assert_eq!((r.input_gpa, r.output_gpa), (0x1002, 0x1003));
        assert_eq!(r.fast, &[] as &[u64], "no block for a memory-based call");
        assert_eq!((r.ip, r.instruction_len), (0x4000_1000, 4));

        let fast = memory.with_fast(true);
        let r = hypercall(arm64(HVC_IMM_SMCCC, 1, regs(&[func, fast.into_bits()])));
        assert_eq!((r.input_gpa, r.output_gpa), (0, 0));
        assert_eq!(r.fast.len(), SMCCC_FAST_WORDS, "X2..X17");
        assert_eq!(r.fast[0], 0x1002);
        assert_eq!(r.fast[15], 0x1011);
    }

    #[test]
    fn arm64_other_smccc_function_is_not_a_hypercall() {
        // PSCI_VERSION.
        let d = arm64(HVC_IMM_SMCCC, 1, regs(&[0x8400_0000]));
        assert_eq!(
            d,
            Decoded::NotHypercall {
                ip: 0x4000_1000,
                instruction_len: 4
            }
        );
    }

    #[test]
    fn arm64_legacy_hvc1() {
        let fast = Control::new()
            .with_code(HypercallCode::SET_VP_REGISTERS)
            .with_fast(true)
            .with_rep_count(1);
        let r = hypercall(arm64(HVC_IMM_HYPERCALL, 1, regs(&[fast.into_bits()])));
        assert_eq!(r.control, fast);
        assert_eq!(r.fast.len(), HVC1_FAST_WORDS, "X1..X17");
        assert_eq!(r.fast[0], 0x1001);
        assert_eq!(r.fast[16], 0x1011);

        let memory = fast.with_fast(false);
        let r = hypercall(arm64(HVC_IMM_HYPERCALL, 1, regs(&[memory.into_bits()])));
        assert_eq!((r.input_gpa, r.output_gpa), (0x1001, 0x1002));
    }

    #[test]
    fn arm64_vtl_switches_and_el0_fault_other_immediates_refused() {
        let refused = Decoded::Refused {
            status: HvStatus::INVALID_HYPERCALL_CODE,
            ip: 0x4000_1000,
            instruction_len: 4,
        };
        for imm in [HVC_IMM_VP_LAUNCH, 5, 0xFFFF] {
            assert_eq!(arm64(imm, 1, regs(&[])), refused, "hvc #{imm}");
        }
        for imm in [HVC_IMM_VTL_CALL, HVC_IMM_VTL_RETURN] {
            assert_eq!(arm64(imm, 1, regs(&[])), Decoded::Fault, "hvc #{imm}");
        }
        // EL0 faults whatever it calls, a valid hypercall included.
        let func = u64::from(SMCCC_HV_FUNC_ID);
        let post = Control::new()
            .with_code(HypercallCode::POST_MESSAGE)
            .into_bits();
        assert_eq!(arm64(HVC_IMM_SMCCC, 0, regs(&[func, post])), Decoded::Fault);
        assert_eq!(arm64(HVC_IMM_HYPERCALL, 0, regs(&[post])), Decoded::Fault);
        assert_eq!(arm64(4, 0, regs(&[])), Decoded::Fault);
    }
}
