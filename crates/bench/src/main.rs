//! `chatao-bench`: load scenarios against a Chatao server (being written).
fn main() {}
