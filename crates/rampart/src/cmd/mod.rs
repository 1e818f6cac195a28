//! Subcommand implementations, one module per subsystem.
pub mod sim;
pub mod log;
pub mod bench;
pub mod demo;
pub mod store;
