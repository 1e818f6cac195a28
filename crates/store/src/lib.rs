//! Rampart cloud-of-clouds object store (under construction).
