//! Filled in by the backends work.
