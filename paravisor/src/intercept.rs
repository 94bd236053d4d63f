//! VTL0's intercept messages, from this VP's assist page to the proxy's types: the arch layer
//! says which payload words of its ISA's message decoding needs, they are copied from the
//! assist page (one volatile load each) into the run loop's buffer, and the proxy decodes the
//! message there, in place (`proxy::decode`).
#![forbid(unsafe_code)]

use crate::arch::{self, HypercallInterceptMessage, MemoryInterceptMessage};
use crate::percpu::AssistPage;
use crate::proxy::{Decoded, MemoryAccess};

/// Where this VP's run loop decodes intercepts: a copy of the hypercall intercept message (and,
/// on x64, the fast block assembled from it), made once (zeroed) before the loop, so that
/// decoding an intercept neither zeroes nor copies a buffer. A decode reads into it only the
/// words it uses (see [`hypercall`]), and the request it returns borrows from it: the words
/// another intercept left behind are never part of that request.
pub struct InterceptBuffer {
    words: [u64; size_of::<HypercallInterceptMessage>() / 8],
    /// RDX, R8 and XMM0-5's halves, which are not adjacent in the message.
    #[cfg(target_arch = "x86_64")]
    block: [u64; hvdef::x86_64::FAST_XMM_WORDS],
}

impl InterceptBuffer {
    pub const fn new() -> InterceptBuffer {
        InterceptBuffer {
            words: [0; size_of::<HypercallInterceptMessage>() / 8],
            #[cfg(target_arch = "x86_64")]
            block: [0; hvdef::x86_64::FAST_XMM_WORDS],
        }
    }
}

/// Decodes the hypercall intercept message in the assist page into `buf`, reading only the
/// words decoding uses: the arch layer's head, and its tail only in the one case the decoder
/// reads it (a fast call; on x64 only with XMM fast input). `xmm_fast_input`: the host offers
/// XMM fast input (x64), so the message's XMM registers are part of a fast call.
#[inline(always)]
pub fn hypercall<'a>(
    assist: &AssistPage,
    xmm_fast_input: bool,
    buf: &'a mut InterceptBuffer,
) -> Decoded<'a> {
    let words = &mut buf.words;
    assist.read_payload(0, &mut words[..arch::HYPERCALL_INTERCEPT_HEAD]);
    if let Some(tail) = arch::hypercall_intercept_tail(words, xmm_fast_input) {
        assist.read_payload(tail.start, &mut words[tail]);
    }
    let msg: &HypercallInterceptMessage = zerocopy::transmute_ref!(&buf.words);
    #[cfg(target_arch = "x86_64")]
    return crate::proxy::decode::decode_x64(msg, xmm_fast_input, &mut buf.block);
    #[cfg(target_arch = "aarch64")]
    crate::proxy::decode::decode_arm64(msg)
}

/// Decodes a memory intercept message (GPA intercept, unmapped GPA) in the assist page: its
/// header and the GPA.
pub fn memory_access(assist: &AssistPage) -> MemoryAccess {
    let mut words = [0u64; size_of::<MemoryInterceptMessage>() / 8];
    assist.read_payload(0, &mut words[..arch::MEMORY_INTERCEPT_HEAD]);
    let msg: &MemoryInterceptMessage = zerocopy::transmute_ref!(&words);
    MemoryAccess {
        gpa: msg.guest_physical_address,
        access: msg.header.intercept_access_type,
        user: arch::intercepted_in_user_mode(msg),
        delivering_event: msg.header.execution_state.interruption_pending(),
    }
}
