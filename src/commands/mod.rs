//! One-shot commands of the `weft` binary, one file each.
pub mod cleanup;
pub mod docker_opts;
pub mod status;
pub mod status_leases;
