//! placeholder replaced by issue 6
fn main() {}
