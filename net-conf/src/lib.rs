//! Pure types of weft: the network configuration (net-conf.json / etcd `<prefix>/config`),
//! lease values and subnet keys as flannel writes them to etcd, the subnet.env text, and the
//! subnet allocation policy. No async, no I/O: everything here is a function of its inputs.

pub mod alloc;
pub mod config;
pub mod error;
mod json;
pub mod lease;
pub mod subnet_env;
pub mod subnet_key;

pub use alloc::{AllocError, Choice, ExistingLease};
pub use config::{BackendConf, IpIpConf, NetConf, Parsed, VxlanConf};
pub use error::{ConfError, LeaseError, excerpt};
pub use lease::{LeaseAttrs, VxlanData};
pub use subnet_env::{SubnetEnv, SubnetEnvError, previous_subnet};
pub use subnet_key::SubnetKey;
