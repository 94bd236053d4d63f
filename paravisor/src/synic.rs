//! SynIC message slots and the TLFS end-of-message protocol, in shared code: copy the message
//! out, free the slot, and only then look at MessagePending and signal EOM, so that a message
//! queued meanwhile is neither lost nor delivered twice. Only the EOM signal itself is
//! arch-specific (an MSR on x86, a VP register on arm64), and it is passed in.

use core::sync::atomic::{fence, Ordering};
use hvdef::{HvMessage, HvMessageType};

/// One 256-byte slot of a SynIC message page. The hypervisor writes it, so it is only accessed
/// through volatile copies of whole fields.
pub struct MessageSlot(*mut HvMessage);

impl MessageSlot {
    /// # Safety
    /// `slot` points at a message slot of this VP's SIMP page for as long as the value lives.
    pub unsafe fn new(slot: *mut HvMessage) -> MessageSlot {
        MessageSlot(slot)
    }

    /// Takes the message out of the slot, if there is one, and runs `eom` when the hypervisor
    /// has more queued for this SINT.
    pub fn take(&self, eom: impl FnOnce()) -> Option<HvMessage> {
        // SAFETY: `new`'s contract; a volatile copy of the whole message.
        let message = unsafe { core::ptr::read_volatile(self.0) };
        if message.header.message_type == HvMessageType::NONE {
            return None;
        }
        // SAFETY: as above; freeing the slot is a volatile store of the type field.
        unsafe {
            core::ptr::write_volatile(&raw mut (*self.0).header.message_type, HvMessageType::NONE)
        };
        // The slot must be seen empty before MessagePending is read, or the hypervisor's next
        // message could be written and then clobbered by a late EOM.
        fence(Ordering::SeqCst);
        // SAFETY: as above; a volatile read of the flags byte.
        let flags = unsafe { core::ptr::read_volatile(&raw const (*self.0).header.message_flags) };
        if flags.message_pending() {
            eom();
        }
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvdef::HvMessageFlags;
    use zerocopy::FromZeros;

    fn slot_with(message_type: u32, pending: bool) -> Box<HvMessage> {
        let mut m = Box::new(HvMessage::new_zeroed());
        m.header.message_type = HvMessageType(message_type);
        m.header.message_flags = HvMessageFlags::new().with_message_pending(pending);
        m.payload[0] = 0x1234;
        m
    }

    #[test]
    fn empty_slot_gives_nothing_and_no_eom() {
        let mut m = slot_with(0, true);
        // SAFETY: the box outlives the slot.
        let slot = unsafe { MessageSlot::new(&mut *m) };
        let mut eoms = 0;
        assert!(slot.take(|| eoms += 1).is_none());
        assert_eq!(eoms, 0);
    }

    #[test]
    fn message_is_copied_then_the_slot_freed_then_eom_if_pending() {
        for pending in [false, true] {
            let mut m = slot_with(0x8000_0050, pending);
            let ptr: *mut HvMessage = &mut *m;
            // SAFETY: the box outlives the slot.
            let slot = unsafe { MessageSlot::new(ptr) };
            let mut seen_type_at_eom = None;
            let got = slot.take(|| {
                // SAFETY: reading the test's own box.
                seen_type_at_eom = Some(unsafe { (*ptr).header.message_type });
            });
            let got = got.expect("a message");
            assert_eq!(got.header.message_type, HvMessageType(0x8000_0050));
            assert_eq!(got.payload[0], 0x1234);
            assert_eq!(m.header.message_type, HvMessageType::NONE, "slot freed");
            // EOM only when more are pending, and only after the slot was freed.
            assert_eq!(seen_type_at_eom, pending.then_some(HvMessageType::NONE));
        }
    }
}
