//! The generator's hostile parameter lists: calls of a valid shape whose input or output list
//! breaks a rule (misaligned, page-crossing, on VTL2's memory; under the host that reflects
//! everything also at 0, in the host's memory, on MMIO, beyond RAM, at the top of the address
//! space), each with the answer the TLFS gives it.

use super::{code, Gen};
use crate::live;
#[cfg(doc)]
use crate::soak::boots::Boot;
use crate::soak::plan::{Entry, Plan, Want};
use crate::soak::{oracle::Host, Rng};
use e2e::post_message;
use hvdef::{HvStatus, HypercallCode};
use mockhv::model::Vtl0Access;
use mockhv::qemu::Arch;

impl Gen {
    /// What VTL0 gets for a list on VTL2's image: the memory fault `fault` when the hypervisor
    /// reads or writes it (Hyper-V's routing); the paravisor's ACCESS_DENIED when the host
    /// reflects the call untouched ([`Boot::ReflectAll`]: VTL0 may only name its own memory,
    /// and the paravisor never touches VTL2's for it).
    fn in_image(&self, fault: u128) -> Want {
        if self.reflect_all {
            Want::Exactly(vec![HvStatus::ACCESS_DENIED])
        } else {
            Want::Fault(fault)
        }
    }

    /// A call of a valid shape whose parameter list breaks a rule (`vtl0::FLAG_GPAS`), answered
    /// by the hypervisor before any intercept: an input or output list that is not 8-byte
    /// aligned or crosses a page is INVALID_ALIGNMENT (TLFS hypercall-interface.md, "Memory
    /// Parameters"); one on VTL2's memory is the hypervisor's access to a page VTL2 protected,
    /// a GPA intercept to VTL2, and VTL0 takes the memory fault at the call
    /// (`kernel_protection::vtl0_cannot_name_vtl2_memory_in_a_hypercall`).
    pub(super) fn hostile(&mut self) -> Plan {
        let proto = live::proto(self.arch);
        let (input_page, output_page) = (proto.input_page(), proto.output_page());
        let connection = self.unrelayed_connection();
        let message = post_message(connection);
        let len = message.len() as u64;
        let post = code(HypercallCode::POST_MESSAGE).into_bits();
        let query = code(HypercallCode::EXT_QUERY_CAPABILITIES).into_bits();
        let image = self.image.clone();
        // An 8-aligned GPA in the image with `len` bytes from it inside one page.
        let in_image = |rng: &mut Rng, len: u64| {
            let page = image.start + 0x1000 * rng.below((image.end - image.start) / 0x1000);
            page + 8 * rng.below((0x1000 - len) / 8 + 1)
        };
        let cases = if self.reflect_all { 6 } else { 4 };
        let (control, input, gpas, want, what) = match self.rng.below(cases) {
            0 => {
                let gpa = input_page + 1 + self.rng.below(7);
                (
                    post,
                    message,
                    (gpa, output_page),
                    Want::Exactly(vec![HvStatus::INVALID_ALIGNMENT]),
                    format!(
                        "PostMessage to connection {connection}, input at {gpa:#x} (misaligned)"
                    ),
                )
            }
            1 => {
                let gpa = input_page + 0x1000 - 8 * (1 + self.rng.below(len / 8 - 1));
                (
                    post,
                    message,
                    (gpa, output_page),
                    Want::Exactly(vec![HvStatus::INVALID_ALIGNMENT]),
                    format!(
                        "PostMessage to connection {connection}, input at {gpa:#x} (crosses a page)"
                    ),
                )
            }
            2 => {
                let gpa = in_image(&mut self.rng, len);
                let fault = e2e::memory_fault(self.arch, &Vtl0Access::Read { gpa, len: 0 }, false);
                (
                    post,
                    message,
                    (gpa, output_page),
                    self.in_image(fault),
                    format!(
                        "PostMessage to connection {connection}, input at {gpa:#x} (VTL2's image)"
                    ),
                )
            }
            3 => {
                let gpa = in_image(&mut self.rng, 8);
                let access = Vtl0Access::Write {
                    gpa,
                    bytes: Vec::new(),
                };
                let fault = e2e::memory_fault(self.arch, &access, false);
                (
                    query,
                    Vec::new(),
                    (input_page, gpa),
                    self.in_image(fault),
                    format!("ExtQueryCapabilities, output at {gpa:#x} (VTL2's image)"),
                )
            }
            // Reflected untouched, so the paravisor is the first to look at the list: one in
            // no RAM of VTL0's is its ACCESS_DENIED, never a read or write of what is there.
            n => {
                let (gpa, place) = match self.rng.below(5) {
                    0 => (0, "at 0"),
                    1 => (
                        // The in-VM host's own memory (its configuration page), never the guest's.
                        match self.arch {
                            Arch::X86_64 => invm_abi::CONFIG_GPA_X86_64,
                            Arch::Aarch64 => invm_abi::CONFIG_GPA_AARCH64,
                        } + 8 * self.rng.below(0x100),
                        "in the host's memory",
                    ),
                    2 => (
                        // MMIO: QEMU's GIC (virt) / the local APIC (q35).
                        match self.arch {
                            Arch::X86_64 => 0xFEE0_0000,
                            Arch::Aarch64 => 0x0800_0000,
                        } + 8 * self.rng.below(0x100),
                        "on MMIO",
                    ),
                    3 => (1 << (40 + self.rng.below(23)), "far beyond RAM"),
                    _ => (
                        // The list ends at most at 2^64, inside the last page (a list crossing
                        // a page is INVALID_ALIGNMENT first).
                        0u64.wrapping_sub(if n == 4 { len } else { 8 }) - 8 * self.rng.below(16),
                        "at the top of the address space",
                    ),
                };
                let denied = Want::Exactly(vec![HvStatus::ACCESS_DENIED]);
                if n == 4 {
                    (
                        post,
                        message,
                        (gpa, output_page),
                        denied,
                        format!(
                            "PostMessage to connection {connection}, input at {gpa:#x} ({place})"
                        ),
                    )
                } else {
                    (
                        query,
                        Vec::new(),
                        (input_page, gpa),
                        denied,
                        format!("ExtQueryCapabilities, output at {gpa:#x} ({place})"),
                    )
                }
            }
        };
        Plan {
            entry: Entry::Hypercall {
                control,
                input,
                want,
                intercepted: false,
                gpas: Some(gpas),
                host: Host::None,
                output: Vec::new(),
            },
            what,
            follows: false,
        }
    }
}
