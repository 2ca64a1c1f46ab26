//! `weft cleanup`'s step for flanneld's own leftovers: its host-gw (and DirectRouting) routes,
//! which carry no route protocol of weft's (`proto boot`, as netlink writes a route by default)
//! and so are not in weft's desired-state reconcile. Its tunnel devices go with weft's (by
//! name) and its rules with weft's (by chain and table name).
//!
//! The rule ([`flanneld_routes`], pure; the network from the config file, else subnet.env, else
//! etcd): a route of table main, metric 0, protocol `boot` or
//! unspecified, through a gateway, not on a nexthop object, whose destination is a subnet of the
//! network config (inside `Network`, prefix length `SubnetLen`) — the shape of every peer route
//! flanneld writes. An operator's route outside the network, a route of another protocol
//! (`static`, a routing daemon's), a route without a gateway (the node's own subnet on `cni0`)
//! or of another length stays.
use backends::nl::RouteEvent;
use backends::plan::Route;
use ipnet::Ipv4Net;

use super::cleanup::Outcome;
use crate::cli::Options;
use crate::lease::etcd::registry::Registry;

/// `proto boot`: what `ip route add` and netlink clients (flanneld) write by default.
pub const RTPROT_BOOT: u8 = 3;
const RTPROT_UNSPEC: u8 = 0;
const MAIN: u32 = 254;

/// The peer routes flanneld wrote for `network` / `subnet_len` among `routes`. Pure.
pub fn flanneld_routes(
    network: Ipv4Net,
    subnet_len: u8,
    routes: &[RouteEvent],
) -> Vec<(Route, u8)> {
    routes
        .iter()
        .filter(|ev| {
            ev.table == MAIN
                && ev.priority == 0
                && matches!(ev.protocol, RTPROT_BOOT | RTPROT_UNSPEC)
                && ev.nhid.is_none()
                && !ev.route.gateway.is_unspecified()
                && ev.route.dst.prefix_len() == subnet_len
                && matches!(ev.route.dst, ipnet::IpNet::V4(dst) if network.contains(&dst))
        })
        .map(|ev| (ev.route.clone(), ev.protocol))
        .collect()
}

/// The network and subnet length to recognise flanneld's routes by: the `--net-config-path`
/// file (kube mode: its default path); else the subnet file's `FLANNEL_NETWORK` and the length
/// of its `FLANNEL_SUBNET` (local, so a node whose etcd is gone can still be cleaned); else
/// etcd's `<prefix>/config`.
async fn network_config(opts: &Options) -> anyhow::Result<(Ipv4Net, u8)> {
    use anyhow::Context as _;
    if opts.net_config_path.is_none() && !opts.kube_subnet_mgr {
        let env = crate::agent::subnet_file::read_previous(&opts.subnet_file);
        let network = env
            .as_deref()
            .and_then(net_conf::subnet_env::previous_network);
        let subnet = env
            .as_deref()
            .and_then(net_conf::subnet_env::previous_subnet);
        if let (Some(network), Some(subnet)) = (network, subnet) {
            return Ok((network, subnet.prefix_len()));
        }
    }
    let text = match (&opts.net_config_path, opts.kube_subnet_mgr) {
        (None, false) => Registry::connect(&opts.etcd_options())
            .await
            .context("etcd client")?
            .get_config()
            .await
            .context("read the network config from etcd")?,
        _ => {
            let path = opts.net_config_path_or_default();
            std::fs::read_to_string(&path)
                .with_context(|| format!("read network config {}", path.display()))?
        }
    };
    let conf = net_conf::NetConf::parse(&text)
        .map_err(|e| anyhow::anyhow!("network config: {e}"))?
        .conf;
    let network = conf.network.context("network config: no IPv4 Network")?;
    Ok((network, conf.subnet_len))
}

/// Removes flanneld's peer routes (see the module doc), each logged as the `ip` command.
/// With `only` (`--network`), the network config must be that network's.
pub async fn remove(
    nl: &backends::Netlink,
    opts: &Options,
    only: Option<Ipv4Net>,
    out: &mut Outcome,
) {
    let (network, subnet_len) = match network_config(opts).await {
        Ok((network, _)) if only.is_some_and(|n| n != network) => {
            out.failed(format!(
                "flanneld's routes of --network {} not looked for: the network config read is \
                 {network}'s; give that network's --subnet-file, --etcd-prefix or \
                 --net-config-path",
                only.unwrap_or(network)
            ));
            return;
        }
        Ok(c) => c,
        Err(e) => {
            out.failed(format!(
                "flanneld's routes (no protocol) cannot be told from others without the network \
                 config: {e:#}"
            ));
            return;
        }
    };
    let routes = match nl
        .dump_routes_where("ip route show table main", |ev| ev.table == MAIN)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            out.failed(format!("list the routes: {e}"));
            return;
        }
    };
    let names: std::collections::HashMap<u32, String> = match nl.links().await {
        Ok(links) => links.into_iter().map(|l| (l.index, l.name)).collect(),
        Err(_) => Default::default(),
    };
    for (route, protocol) in flanneld_routes(network, subnet_len, &routes) {
        let shown = route.display_with(names.get(&route.oif).map(String::as_str));
        match nl.route_del_with_protocol(&route, protocol).await {
            Ok(()) => out.done(format!("ip route del {shown} (flanneld's)")),
            Err(e) => out.failed(e.to_string()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;

    fn ev(dst: &str, gw: &str, protocol: u8, table: u32, nhid: Option<u32>) -> RouteEvent {
        RouteEvent {
            route: Route {
                dst: dst.parse().unwrap(),
                gateway: gw.parse().unwrap(),
                oif: 2,
                onlink: false,
            },
            nhid,
            protocol,
            table,
            priority: 0,
            blackhole: false,
        }
    }

    #[test]
    fn only_flanneld_shaped_peer_routes_of_the_network_are_picked() {
        let net: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        let routes = [
            ev("10.244.7.0/24", "198.18.0.2", RTPROT_BOOT, MAIN, None), // flanneld's host-gw
            ev("10.244.8.0/24", "198.18.0.3", RTPROT_UNSPEC, MAIN, None), // flanneld's too
            ev("10.99.0.0/24", "198.18.0.2", RTPROT_BOOT, MAIN, None),  // operator, outside
            ev("10.244.9.0/24", "198.18.0.2", 4, MAIN, None),           // proto static
            ev("10.244.10.0/24", "198.18.0.2", 87, MAIN, None),         // weft's own
            ev("10.244.11.0/24", "0.0.0.0", RTPROT_BOOT, MAIN, None),   // no gateway
            ev("10.244.12.0/25", "198.18.0.2", RTPROT_BOOT, MAIN, None), // another length
            ev("10.244.13.0/24", "198.18.0.2", RTPROT_BOOT, 100, None), // another table
            ev("10.244.14.0/24", "198.18.0.2", RTPROT_BOOT, MAIN, Some(5)), // on a nexthop
        ];
        let picked: Vec<String> = flanneld_routes(net, 24, &routes)
            .iter()
            .map(|(r, _)| r.dst.to_string())
            .collect();
        assert_eq!(picked, ["10.244.7.0/24", "10.244.8.0/24"]);
    }
}
