//! Mock Hyper-V, host side: the QEMU runner, the in-VM mock's runner (`invm`: the host image,
//! the paravisor, VTL0 and the scenario in; the console, the model's trace and the figures
//! out), the IGVM loader it uses, and the TLFS model.
#![forbid(unsafe_code)]

pub mod igvm_load;
pub mod image;
pub mod invm;
pub mod progress;
/// The TLFS model, its own no_std crate (`hvmodel`) so it can also run inside the VM.
pub use hvmodel as model;
pub mod qemu;
pub mod trace;
