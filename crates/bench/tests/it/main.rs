//! The integration tests of chatao-bench, one binary (one link on two cores): each
//! module is what was a file of its own under tests/.

mod attack;
mod scenarios;
