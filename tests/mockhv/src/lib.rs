//! Mock Hyper-V: QEMU runner, gdbstub client, TLFS model.

pub mod gdb;
pub mod model;
pub mod image;
pub mod qemu;
pub mod session;
