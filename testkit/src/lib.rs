//! Test support for weft, in a crate of its own so that the agent binary contains none of it:
//!
//! - [`lab`]: a local multi-node cluster in network namespaces (a real etcd in an underlay
//!   namespace, the real `weft` binary per node, pods behind `cni0`), used by `scripts/lab.sh`
//!   through the `weft-lab` binary and by the end-to-end tests;
//! - [`etcd_server`]: a real etcd process on random ports (plain or TLS) for the etcd tests;
//! - [`kube_api`]: a Kubernetes API server for the kube-mode tests (Nodes and Pods over HTTPS
//!   with bearer tokens; docs/kube-test-server.md);
//! - [`memory`]: an in-memory lease source for tests of the agent's lease decisions without
//!   root, a kernel or etcd;
//! - [`need`]: the rule for a test whose requirement (root, a tool, a kernel feature) is missing:
//!   a failure under `CI=true`, `SKIPPED` elsewhere;
//! - [`prom`]: a strict parser of the Prometheus text format, for the `/metrics` tests.
pub mod delay_proxy;
pub mod etcd_cluster;
pub mod etcd_server;
pub mod kube_api;
pub mod lab;
pub mod memory;
pub mod need;
pub mod prom;
