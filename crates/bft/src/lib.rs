//! Rampart bft subsystem (under construction).
