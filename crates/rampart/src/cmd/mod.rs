//! Subcommand implementations, one module per subsystem.
pub mod bench;
pub mod cluster;
pub mod demo;
pub mod gateway;
pub mod log;
pub mod sim;
pub mod store;
pub mod tree;
