//! The binary's half of the crate: flag parsing and one module per command. Only this folder and
//! `main.rs` print to the terminal.

pub mod cli;
pub mod data;
