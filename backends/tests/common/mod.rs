//! Helpers shared by the kernel tests: a network namespace per test thread, and `ip` runners.
#![allow(clippy::unwrap_used, dead_code)]

/// The rule for a missing requirement (fail under `CI=true`, `SKIPPED` elsewhere), shared by
/// every test crate.
pub use weft_testkit::need;

pub mod routes;

use std::future::Future;
use std::net::Ipv4Addr;
use std::process::Command;

use backends::{ExternalInterface, Peer};
use net_conf::{LeaseAttrs, SubnetKey};
use serde_json::Value;

/// Runs `f` in a new network namespace on a dedicated thread with a current-thread runtime.
pub fn in_netns<F, Fut>(name: &str, f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    if !need::root(name) {
        return;
    }
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            // A network namespace belongs to a thread: unshare here, then build the runtime (and
            // with it every netlink socket) on this same thread.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(f());
        })
        .expect("spawn test thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Runs `ip <args>` and returns stdout; panics with stderr on failure.
pub fn ip(args: &str) -> String {
    run("ip", args)
}

/// Runs `<tool> <args>` and returns stdout; panics with stderr on failure.
pub fn run(tool: &str, args: &str) -> String {
    let out = Command::new(tool)
        .args(args.split_whitespace())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "{tool} {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn ip_json(args: &str) -> Vec<Value> {
    let text = ip(&format!("-j {args}"));
    if text.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip -j {args}: {e}: {text}"))
}

/// Runs `<tool> -j <args>` (`bridge`, `ip`) and parses the JSON array it prints.
pub fn tool_json(tool: &str, args: &str) -> Vec<Value> {
    let out = Command::new(tool)
        .arg("-j")
        .args(args.split_whitespace())
        .output()
        .expect("run tool");
    assert!(
        out.status.success(),
        "{tool} -j {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    if text.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{tool} -j {args}: {e}: {text}"))
}

/// How weft writes its routes in a test: plain, or on nexthop objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `ip route replace <dst> via <gw> dev <dev> proto 87` (`--route-nexthops=false`).
    Plain,
    /// `ip nexthop add id N via <gw> dev <dev> proto 87` + `ip route replace <dst> nhid N proto 87`.
    Nexthop,
}

impl Mode {
    pub fn nexthops(self) -> bool {
        self == Mode::Nexthop
    }
}

/// Runs `f(mode)` in a fresh namespace for each mode.
pub fn in_netns_each_mode<F, Fut>(name: &str, f: F)
where
    F: Fn(Mode) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()>,
{
    for mode in [Mode::Plain, Mode::Nexthop] {
        let f = f.clone();
        in_netns(&format!("{name} ({mode:?})"), move || f(mode));
    }
}

/// A route with weft's protocol in table main, as the kernel shows it; gateway, device and
/// onlink are read from its nexthop object when it has one (not from the route, which carries
/// them only in `nexthop_compat_mode`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WeftRoute {
    pub dst: String,
    pub gateway: String,
    pub dev: String,
    pub onlink: bool,
    pub nhid: Option<u64>,
    /// The protocol of its nexthop (`87` when weft's), None for a plain route.
    pub nh_protocol: Option<String>,
}

fn has_flag(v: &Value, flag: &str) -> bool {
    v["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == flag))
}

/// `ip -j nexthop show` (every owner), by id; empty where the kernel has no nexthop objects.
pub fn nexthops() -> std::collections::BTreeMap<u64, Value> {
    let out = Command::new("ip")
        .args(["-j", "nexthop", "show"])
        .output()
        .expect("run ip");
    let text = String::from_utf8(out.stdout).unwrap();
    if !out.status.success() || text.trim().is_empty() {
        return Default::default();
    }
    let list: Vec<Value> = serde_json::from_str(&text).unwrap();
    list.into_iter()
        .map(|n| (n["id"].as_u64().unwrap(), n))
        .collect()
}

/// The ids of weft's nexthop objects (protocol 87).
pub fn weft_nexthop_ids() -> std::collections::BTreeSet<u64> {
    nexthops()
        .into_iter()
        .filter(|(_, n)| n["protocol"] == "87")
        .map(|(id, _)| id)
        .collect()
}

/// Table main's routes with protocol 87 (`ip route show proto 87` omits the protocol from its
/// output, so the filter is here), resolved through their nexthops. Panics if a route uses a
/// nexthop that does not exist.
pub fn weft_route_list() -> Vec<WeftRoute> {
    let nhs = nexthops();
    ip_json("route show table main")
        .iter()
        .filter(|r| r["protocol"] == "87")
        .map(|r| {
            let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
            let dst = s(r, "dst");
            match r["nhid"].as_u64() {
                Some(id) => {
                    let n = nhs
                        .get(&id)
                        .unwrap_or_else(|| panic!("route {dst} uses a missing nexthop {id}"));
                    WeftRoute {
                        dst,
                        gateway: s(n, "gateway"),
                        dev: s(n, "dev"),
                        onlink: has_flag(n, "onlink"),
                        nhid: Some(id),
                        nh_protocol: Some(s(n, "protocol")),
                    }
                }
                None => WeftRoute {
                    dst,
                    gateway: s(r, "gateway"),
                    dev: s(r, "dev"),
                    onlink: has_flag(r, "onlink"),
                    nhid: None,
                    nh_protocol: None,
                },
            }
        })
        .collect()
}

/// Checks that weft's routes are written the `mode` way: every one on a nexthop of weft's and
/// no nexthop of weft's unused, or every one plain and no nexthop of weft's left.
pub fn assert_written(mode: Mode) {
    let routes = weft_route_list();
    let ids = weft_nexthop_ids();
    match mode {
        Mode::Plain => {
            assert!(
                routes.iter().all(|r| r.nhid.is_none()),
                "plain routes expected: {routes:?}"
            );
            assert!(ids.is_empty(), "weft nexthops left in plain mode: {ids:?}");
        }
        Mode::Nexthop => {
            assert!(
                routes
                    .iter()
                    .all(|r| r.nhid.is_some() && r.nh_protocol.as_deref() == Some("87")),
                "routes on weft's nexthops expected: {routes:?}"
            );
            let used: std::collections::BTreeSet<u64> =
                routes.iter().filter_map(|r| r.nhid).collect();
            assert_eq!(ids, used, "weft nexthops no route uses: {routes:?}");
        }
    }
}

/// `eth0` (198.18.0.1/24, up) with its veth peer `peer0` (up) as the underlay; returns eth0's
/// index.
pub fn underlay() -> u32 {
    ip("link add eth0 type veth peer name peer0");
    ip("addr add 198.18.0.1/24 dev eth0");
    ip("link set eth0 up");
    ip("link set peer0 up");
    ip_json("link show dev eth0")[0]["ifindex"]
        .as_u64()
        .unwrap() as u32
}

/// The IPv6 side of the dual-stack underlay: eth0's address and prefix.
pub const V6_ADDR: &str = "fd00:18::1";
pub const V6_PREFIX: &str = "fd00:18::/64";

/// [`underlay`] with an IPv6 prefix beside the IPv4 one: `fd00:18::1/64` on eth0, `nodad` so
/// the address (and the gateways in its prefix) are usable at once. Waits (with a deadline)
/// until the kernel has the prefix route; returns eth0's index.
pub fn underlay_dual() -> u32 {
    let index = underlay();
    ip(&format!("-6 addr add {V6_ADDR}/64 dev eth0 nodad"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while ip_json(&format!("-6 route show {V6_PREFIX} dev eth0")).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no IPv6 prefix route on eth0"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    index
}

/// The external interface [`underlay_dual`] makes (IPv4 and IPv6), at ifindex `index`.
pub fn ext_dual(index: u32) -> ExternalInterface {
    ExternalInterface {
        v6: Some(backends::ExternalV6 {
            iface_addr: V6_ADDR.parse().unwrap(),
            ext_addr: V6_ADDR.parse().unwrap(),
            prefixes: vec![V6_PREFIX.parse().unwrap()],
        }),
        ..ext(index)
    }
}

/// The external interface [`underlay`] makes, at ifindex `index`.
pub fn ext(index: u32) -> ExternalInterface {
    ExternalInterface {
        name: "eth0".into(),
        index,
        iface_addr: Ipv4Addr::new(198, 18, 0, 1),
        ext_addr: Ipv4Addr::new(198, 18, 0, 1),
        mtu: 1500,
        prefixes: vec!["198.18.0.0/24".parse().unwrap()],
        v6: None,
    }
}

/// A vxlan peer (VNI 1) with lease subnet `subnet`, PublicIP `public_ip`, VTEP MAC `mac`.
pub fn vxlan_peer(subnet: &str, public_ip: &str, mac: &str) -> Peer {
    Peer {
        key: SubnetKey::new(subnet.parse().unwrap()),
        attrs: LeaseAttrs {
            public_ip: public_ip.parse().unwrap(),
            public_ipv6: None,
            backend_type: "vxlan".into(),
            backend_data: Some(format!(r#"{{"VNI":1,"VtepMAC":"{mac}"}}"#)),
            backend_v6_data: None,
        },
    }
}

/// Feeds kernel events to the reconciler and re-applies like the daemon does (re-apply when
/// `observe` says so; retry failed operations on the next event or after 100 ms) until `done`
/// holds or the deadline passes.
pub async fn drive_until(
    rec: &mut backends::Reconciler,
    events: &mut (impl futures::Stream<Item = backends::KernelEvent> + Unpin),
    want: &backends::KernelState,
    what: &str,
    done: impl Fn(&backends::Reconciler) -> bool,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut retry = false;
    while !done(rec) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        let ev = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            futures::StreamExt::next(events),
        )
        .await;
        let changed = match ev {
            Ok(Some(ev)) => rec.observe(&ev),
            Ok(None) => panic!("notification stream ended"),
            Err(_) => false,
        };
        if changed || retry {
            let report = rec.apply(want).await;
            retry = !report.is_ok();
        }
    }
}

/// Reads the notifications of weft's own writes for 300 ms: none may count as drift.
pub async fn own_writes_are_quiet(
    rec: &mut backends::Reconciler,
    events: &mut (impl futures::Stream<Item = backends::KernelEvent> + Unpin),
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
    while let Ok(Some(ev)) =
        tokio::time::timeout_at(deadline.into(), futures::StreamExt::next(events)).await
    {
        assert!(!rec.observe(&ev), "own write reported as drift: {ev:?}");
    }
}
