//! Layouts of the data a loader hands the firmware at boot: the IGVM parameter area, QEMU's PVH
//! start info, the ACPI tables that carry the CPU count, the device tree header, and the VTL0
//! boot page the IGVM file carries VTL0's initial context in.
//!
//! Not TLFS, but shared the same way: the firmware (`boot`) reads these, the host tools
//! (xtask, the in-VM mock) write them, and both take the layout from here instead of repeating
//! byte offsets. Each struct is `#[repr(C)]` with zerocopy derives and a compile-time size (and,
//! where a reader uses one field alone, offset) assertion. Formats with unaligned fields (ACPI)
//! or big-endian ones (the device tree) use zerocopy's byte-order types, so the Rust layout is
//! the wire layout on every host. Readers copy them out of loader memory with
//! `FromBytes::read_from_prefix` and friends: a short buffer is an error, never a panic.

pub mod acpi;
pub mod fdt;
pub mod igvm;
pub mod pvh;
pub mod vtl0_boot;
