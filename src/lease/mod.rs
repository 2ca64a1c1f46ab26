//! Lease sources: where the node's own subnet lease and every peer's lease come from (flannel
//! calls this the subnet manager), and the [`table::LeaseTable`] the agent keeps of the peers.
pub mod etcd;
pub mod table;
