//! Rampart sim subsystem (under construction).
