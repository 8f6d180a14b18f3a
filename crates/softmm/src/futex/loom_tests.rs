//! The loom model of wait vs COW vs wake (written next).
