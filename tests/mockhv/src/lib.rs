//! Mock Hyper-V: QEMU runner, gdbstub client, TLFS model.

pub mod gdb;
pub mod igvm_load;
pub mod image;
pub mod invm;
/// The TLFS model, its own no_std crate (`hvmodel`) so it can also run inside the VM.
pub use hvmodel as model;
pub mod qemu;
pub mod session;
pub mod vcpu_start;
