//! Subnet allocation policy (spec §3.4), pure.
