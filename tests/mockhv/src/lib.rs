//! Mock Hyper-V: QEMU runner, gdbstub client, TLFS model.

pub mod gdb;
pub mod igvm_load;
pub mod image;
pub mod model;
pub mod qemu;
pub mod session;
pub mod vcpu_start;
