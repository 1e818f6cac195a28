//! Subcommand implementations, one module per subsystem.
