//! The load generator (being written).
fn main() {}
