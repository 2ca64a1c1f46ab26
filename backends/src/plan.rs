//! The plan: kernel objects weft owns, and the operations that turn one state into another.
//! (Placeholder types; filled in by the backends work.)

/// A route weft owns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub dst: ipnet::Ipv4Net,
    pub gateway: std::net::Ipv4Addr,
    pub oif: u32,
    pub onlink: bool,
}

/// The kernel objects weft owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelState {
    pub routes: std::collections::BTreeMap<ipnet::Ipv4Net, Route>,
}

/// One kernel write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelOp {
    RouteReplace(Route),
    RouteDel(Route),
}
