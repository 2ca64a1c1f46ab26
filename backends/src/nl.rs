//! Filled in by the backends work.
pub struct Netlink;
