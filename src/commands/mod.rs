//! One-shot commands of the `weft` binary, one file each (`status/` a directory of its own).
pub mod cleanup;
pub mod cleanup_flanneld;
pub mod docker_opts;
pub mod install_cni;
pub mod status;
