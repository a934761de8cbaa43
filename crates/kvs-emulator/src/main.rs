//! kvs-emulator binary.
fn main() {}
