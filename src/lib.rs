//! weft, the daemon and its one-shot commands.
//!
//! - [`cli`]: the command line (flanneld's flags and the subcommands);
//! - [`lease`]: lease sources (where the node's and its peers' subnets come from) and the
//!   lease table the agent keeps of them;
//! - [`agent`]: the daemon (start-up, control loop, data plane, own lease, config watch, peer
//!   cache, health and metrics, firewall rules);
//! - [`commands`]: one-shot commands (`status`, `cleanup`, `docker-opts`), one file each.
//!
//! The pure types live in the `net-conf` crate, the data plane (plan → diff → netlink) in
//! `backends`, the CNI plugin in `weft-cni` and test support in `weft-testkit`.

pub mod agent;
pub mod cli;
pub mod commands;
pub mod lease;
