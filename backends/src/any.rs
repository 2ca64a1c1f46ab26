//! [`AnyBackend`]: the built-in backends behind one type, so the agent can hold the backend the
//! config asks for next to the one it is switching away from (static dispatch, no boxing).
use net_conf::{BackendConf, LeaseAttrs, SubnetKey};

use crate::hostgw::HostGw;
use crate::ipip::IpIp;
use crate::nl::Netlink;
use crate::vxlan::Vxlan;
use crate::{Backend, BackendError, Desired, ExternalInterface, Peer};

/// One of weft's backends.
#[derive(Debug, Clone)]
pub enum AnyBackend {
    HostGw(HostGw),
    Vxlan(Vxlan),
    IpIp(IpIp),
}

impl AnyBackend {
    /// DirectRouting's answers (vxlan and ipip with `DirectRouting: true`), for the agent to
    /// fill by `ip route get` ([`crate::direct::look_up`]); None when the backend does not route
    /// directly.
    pub fn direct_paths_mut(&mut self) -> Option<&mut crate::direct::DirectPaths> {
        match self {
            AnyBackend::HostGw(_) => None,
            AnyBackend::Vxlan(b) => b.direct_paths_mut(),
            AnyBackend::IpIp(b) => b.direct_paths_mut(),
        }
    }

    /// The backend `Backend` of the config asks for.
    pub fn from_conf(conf: &BackendConf) -> Result<AnyBackend, BackendError> {
        match conf {
            BackendConf::HostGw => Ok(AnyBackend::HostGw(HostGw::new())),
            BackendConf::Vxlan(c) => Ok(AnyBackend::Vxlan(Vxlan::new(c.clone()))),
            BackendConf::IpIp(c) => Ok(AnyBackend::IpIp(IpIp::new(c.clone()))),
        }
    }
}

impl Backend for AnyBackend {
    fn type_name(&self) -> &'static str {
        match self {
            AnyBackend::HostGw(b) => b.type_name(),
            AnyBackend::Vxlan(b) => b.type_name(),
            AnyBackend::IpIp(b) => b.type_name(),
        }
    }

    async fn prepare(
        &mut self,
        nl: &Netlink,
        ext: &ExternalInterface,
    ) -> Result<LeaseAttrs, BackendError> {
        match self {
            AnyBackend::HostGw(b) => b.prepare(nl, ext).await,
            AnyBackend::Vxlan(b) => b.prepare(nl, ext).await,
            AnyBackend::IpIp(b) => b.prepare(nl, ext).await,
        }
    }

    fn configure(&mut self, ext: &ExternalInterface, own: &SubnetKey) -> Result<u32, BackendError> {
        match self {
            AnyBackend::HostGw(b) => b.configure(ext, own),
            AnyBackend::Vxlan(b) => b.configure(ext, own),
            AnyBackend::IpIp(b) => b.configure(ext, own),
        }
    }

    fn bind(&mut self, index_of: &dyn Fn(&str) -> Option<u32>) {
        match self {
            AnyBackend::HostGw(b) => b.bind(index_of),
            AnyBackend::Vxlan(b) => b.bind(index_of),
            AnyBackend::IpIp(b) => b.bind(index_of),
        }
    }

    fn wants_previous_lease(&self) -> bool {
        match self {
            AnyBackend::HostGw(b) => b.wants_previous_lease(),
            AnyBackend::Vxlan(b) => b.wants_previous_lease(),
            AnyBackend::IpIp(b) => b.wants_previous_lease(),
        }
    }

    fn adopt_previous(&mut self, previous: &LeaseAttrs) {
        match self {
            AnyBackend::HostGw(b) => b.adopt_previous(previous),
            AnyBackend::Vxlan(b) => b.adopt_previous(previous),
            AnyBackend::IpIp(b) => b.adopt_previous(previous),
        }
    }

    fn desired(&self, ext: &ExternalInterface, peers: &[Peer]) -> Desired {
        match self {
            AnyBackend::HostGw(b) => b.desired(ext, peers),
            AnyBackend::Vxlan(b) => b.desired(ext, peers),
            AnyBackend::IpIp(b) => b.desired(ext, peers),
        }
    }
}
