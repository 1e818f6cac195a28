//! Subcommand implementations, one module per subsystem.
pub mod log;
pub mod sim;
