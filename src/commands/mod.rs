//! One-shot commands of the `weft` binary, one file each.
pub mod cleanup;
pub mod cleanup_flanneld;
pub mod docker_opts;
pub mod install_cni;
pub mod status;
pub mod status_leases;
