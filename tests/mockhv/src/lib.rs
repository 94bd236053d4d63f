//! Mock Hyper-V: QEMU runner, gdbstub client, TLFS model.

pub mod gdb;
pub mod qemu;
