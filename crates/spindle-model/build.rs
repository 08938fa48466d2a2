// Shared with crates/spindle/build.rs: see build/libtorch.rs.
include!("../../build/libtorch.rs");
