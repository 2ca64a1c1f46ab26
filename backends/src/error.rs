//! Backend errors; netlink failures keep the errno and name the object.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BackendError {
    /// A netlink request failed: `op` reads like the `ip` command ("route replace 10.244.2.0/24
    /// via 198.18.0.2 dev eth0"), `errno` is the kernel's (positive) error number when known.
    #[error("{op}: {message}")]
    Netlink {
        op: String,
        errno: Option<i32>,
        message: String,
    },
    /// A precondition of the backend does not hold (NAT under host-gw, ...).
    #[error("{0}")]
    Unsupported(String),
}
