//! Host tests of the hypercall layer against the mock hypervisor model.
