//! Rampart log subsystem (under construction).
