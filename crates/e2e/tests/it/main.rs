//! The integration tests of chatao-e2e, one binary (one link on two cores): each
//! module is what was a file of its own under tests/.

mod common;

mod garbage;
mod groups;
mod persist;
mod trust;
