//! The record of everything the paravisor asked of the hypervisor, in order, for tests to query.

use alloc::vec::Vec;
use hvdef::{HvInterceptAccessType, HvMessage, HvStatus, HypercallCode, HypercallOutput, Vtl};

use super::Fault;

/// How a hypercall was issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abi {
    /// `vmcall` in the hypercall page: control in RCX.
    X64,
    /// arm64 `hvc #0` with the Hyper-V SMCCC function id: control in X1.
    Smccc,
    /// arm64 `hvc #1`, `#2` or `#3`: control in X0 (VTL switches carry none).
    Hvc(u16),
}

/// What became of a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Status(HypercallOutput),
    /// An exception instead of a result (#UD / undefined instruction, #GP).
    Fault(Fault),
    /// VtlCall or VtlReturn that switched, or returned straight back (see `Model::vmcall`).
    VtlSwitch {
        finished: bool,
    },
    /// A lower VTL's call the hypervisor handed to VTL2 as an intercept instead of completing.
    Reflected,
    /// A lower VTL's call whose parameter list lies on a page VTL2 protected: not carried out;
    /// VTL2 gets a GPA intercept for `gpa`.
    MemoryIntercept {
        gpa: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HypercallRecord {
    pub vp: u32,
    /// The caller's VTL.
    pub vtl: Vtl,
    pub abi: Abi,
    pub code: HypercallCode,
    /// The control word (for a VTL switch, the VTL control: RAX on x64, 0 on arm64).
    pub control: u64,
    pub input_gpa: u64,
    pub output_gpa: u64,
    /// Parameter bytes as read from memory or the fast registers (empty when rejected earlier).
    pub input: Vec<u8>,
    /// Output bytes written (from the rep start element for rep calls).
    pub output: Vec<u8>,
    pub outcome: Outcome,
}

impl HypercallRecord {
    pub fn status(&self) -> Option<HvStatus> {
        match self.outcome {
            Outcome::Status(out) => Some(out.status()),
            _ => None,
        }
    }
}

/// How an intercept reached the paravisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The VP assist page's `intercept_message`, entry reason INTERCEPT.
    AssistPage,
    /// The SINT0 slot of the SynIC message page.
    Sint0,
    /// Queued for SINT0: the slot was full or the SynIC not ready.
    Sint0Queued,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Hypercall(HypercallRecord),
    Cpuid {
        vp: u32,
        leaf: u32,
        subleaf: u32,
        result: [u32; 4],
    },
    Rdmsr {
        vp: u32,
        vtl: Vtl,
        msr: u32,
        result: Result<u64, Fault>,
    },
    Wrmsr {
        vp: u32,
        vtl: Vtl,
        msr: u32,
        value: u64,
        result: Result<(), Fault>,
    },
    /// An arm64 SMCCC call that is not a hypercall.
    Smccc {
        vp: u32,
        function: u64,
        result: [u64; 4],
    },
    /// A VtlReturn came straight back: `vector` was pending for `vtl` (entry reason INTERRUPT).
    PendingInterrupt {
        vp: u32,
        vtl: Vtl,
        vector: u8,
    },
    /// VTL0's unrecoverable exception with nobody intercepting it: the partition resets.
    PartitionReset {
        vp: u32,
    },
    /// A lower VTL's VTL call entered the paravisor (entry reason VTL_CALL).
    LowerVtlCall {
        vp: u32,
        /// The calling VTL.
        vtl: Vtl,
    },
    /// A scripted lower-VTL load, store or instruction fetch (`Vtl0Call::access`): whether it
    /// was carried out, or stopped by VTL2's protection of the page.
    Vtl0Access {
        vp: u32,
        gpa: u64,
        access: HvInterceptAccessType,
        allowed: bool,
    },
    /// A scripted lower-VTL hypercall handed to the paravisor.
    Intercept {
        vp: u32,
        /// The VTL whose hypercall was intercepted.
        vtl: Vtl,
        delivery: Delivery,
        message: HvMessage,
    },
}

#[derive(Clone, Debug)]
pub struct Trace {
    events: Vec<Event>,
    /// Off: nothing is recorded (a glue nobody asked for the trace, on a hot path).
    pub(crate) enabled: bool,
    /// Hypercalls seen since the model started, recorded or not.
    pub(crate) hypercalls_seen: u64,
}

impl Default for Trace {
    fn default() -> Self {
        Self {
            events: Vec::new(),
            enabled: true,
            hypercalls_seen: 0,
        }
    }
}

impl Trace {
    pub(crate) fn push(&mut self, event: Event) {
        if matches!(event, Event::Hypercall(_)) {
            self.hypercalls_seen += 1;
        }
        if self.enabled {
            self.events.push(event);
        }
    }

    pub(crate) fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    pub fn hypercalls(&self) -> impl Iterator<Item = &HypercallRecord> {
        self.events.iter().filter_map(|e| match e {
            Event::Hypercall(h) => Some(h),
            _ => None,
        })
    }

    pub fn hypercalls_with_code(&self, code: HypercallCode) -> Vec<&HypercallRecord> {
        self.hypercalls().filter(|h| h.code == code).collect()
    }

    pub fn last_hypercall(&self) -> Option<&HypercallRecord> {
        self.hypercalls().last()
    }

    /// Statuses of every call of `code`, in order.
    pub fn statuses(&self, code: HypercallCode) -> Vec<Option<HvStatus>> {
        self.hypercalls_with_code(code)
            .into_iter()
            .map(HypercallRecord::status)
            .collect()
    }

    /// Values of every successful write of `msr`, in order.
    pub fn msr_writes(&self, msr: u32) -> Vec<u64> {
        self.events
            .iter()
            .filter_map(|e| match *e {
                Event::Wrmsr {
                    msr: m,
                    value,
                    result: Ok(()),
                    ..
                } if m == msr => Some(value),
                _ => None,
            })
            .collect()
    }

    /// Every CPUID leaf the model answered, in order.
    pub fn cpuid_leaves(&self) -> Vec<u32> {
        self.events
            .iter()
            .filter_map(|e| match *e {
                Event::Cpuid { leaf, .. } => Some(leaf),
                _ => None,
            })
            .collect()
    }

    pub fn intercepts(&self) -> Vec<(Delivery, &HvMessage)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Intercept {
                    delivery, message, ..
                } => Some((*delivery, message)),
                _ => None,
            })
            .collect()
    }
}
