//! Links the bare-metal paravisor with its per-arch linker script.
fn main() {
    linker::emit();
}
