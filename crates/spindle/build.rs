// Shared with crates/spindle-model/build.rs: see build/libtorch.rs.
include!("../../build/libtorch.rs");
