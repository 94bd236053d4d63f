//! SynIC message delivery: per-SINT queues drained into the SIM page's slots under the TLFS
//! protocol (write only into an empty slot; flag MessagePending on an occupied one; the guest's
//! EOM makes the hypervisor rescan).

use hvdef::{
    HvMessage, HvMessageHeader, HvMessageType, HvPageRegister, HvSynicScontrol, HvSynicSint, Vtl,
    HV_MESSAGE_SIZE, HV_PAGE_SHIFT, HV_SYNIC_SINT_COUNT,
};

use super::memory::{read_obj, write_obj};
use super::{Effects, GuestMemory, Model, SintInterrupt};

impl Model {
    /// Queues `message` for SINT `sint` of `vp`'s `vtl` and tries to deliver it.
    pub(crate) fn queue_message(
        &mut self,
        vp: u32,
        vtl: Vtl,
        sint: u8,
        message: HvMessage,
        mem: &mut dyn GuestMemory,
        effects: &mut Effects,
    ) {
        let Some(queue) = self
            .vp_mut(vp)
            .file_mut(vtl)
            .synic
            .queues
            .get_mut(sint as usize)
        else {
            return;
        };
        queue.push_back(message);
        self.deliver(vp, vtl, sint as usize, mem, effects);
    }

    /// Rescans every SINT (EOM, SynIC or SIM page enabled).
    pub(crate) fn scan_sints(
        &mut self,
        vp: u32,
        vtl: Vtl,
        mem: &mut dyn GuestMemory,
        effects: &mut Effects,
    ) {
        for sint in 0..HV_SYNIC_SINT_COUNT {
            self.deliver(vp, vtl, sint, mem, effects);
        }
    }

    /// Moves the head of SINT `sint`'s queue into its slot if the slot is empty. An occupied slot
    /// gets MessagePending so the guest knows to write EOM once it has emptied it.
    fn deliver(
        &mut self,
        vp: u32,
        vtl: Vtl,
        sint: usize,
        mem: &mut dyn GuestMemory,
        effects: &mut Effects,
    ) {
        if !self.overlay_in_memory(vtl, self.vp(vp).file(vtl).synic.simp) {
            return;
        }
        let synic = &mut self.vp_mut(vp).file_mut(vtl).synic;
        let simp = HvPageRegister::from_bits(synic.simp);
        if synic.queues[sint].is_empty()
            || !HvSynicScontrol::from_bits(synic.scontrol).enable()
            || !simp.enable()
        {
            return;
        }

        let slot = (simp.gpa_page_number() << HV_PAGE_SHIFT) + (sint * HV_MESSAGE_SIZE) as u64;
        let Ok(mut header) = read_obj::<HvMessageHeader>(mem, slot) else {
            return;
        };
        if header.message_type != HvMessageType::NONE {
            if !header.message_flags.message_pending() {
                header.message_flags.set_message_pending(true);
                let _ = write_obj(mem, slot, &header);
            }
            return;
        }
        let Some(mut message) = synic.queues[sint].pop_front() else {
            return;
        };
        message
            .header
            .message_flags
            .set_message_pending(!synic.queues[sint].is_empty());
        if write_obj(mem, slot, &message).is_err() {
            synic.queues[sint].push_front(message);
            return;
        }
        let sint_reg = HvSynicSint::from_bits(synic.sint[sint]);
        if !sint_reg.masked() {
            self.vp_mut(vp)
                .file_mut(vtl)
                .pending_interrupts
                .insert(sint_reg.vector());
            effects.interrupts.push(SintInterrupt {
                vp,
                vtl,
                sint: sint as u8,
                vector: sint_reg.vector(),
            });
        }
    }
}
