//! weft's blackhole route (`--ip-blackhole-route`) in a network namespace: written beside the
//! bridge's connected route to the same subnet (which keeps serving the node's pods), dropping
//! the subnet's traffic once no device serves it; idempotent; repaired and removed by the same
//! diff as every other object; others' blackholes untouched. Skipped (with a message) when not
//! root.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use backends::reconcile::Reconciler;
use backends::{KernelState, Netlink, Ownership};
use futures::StreamExt;

use common::{in_netns, ip, ip_json};

/// (dst, protocol, metric) of each blackhole route in table main.
fn blackholes() -> Vec<(String, String, u64)> {
    ip_json("route show table main type blackhole")
        .iter()
        .map(|r| {
            (
                r["dst"].as_str().unwrap().to_string(),
                r["protocol"].as_str().unwrap_or("").to_string(),
                r["metric"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// `ip route get <ip>`: (type, dev).
fn route_get(addr: &str) -> (String, String) {
    let r = &ip_json(&format!("route get {addr}"))[0];
    (
        r["type"].as_str().unwrap_or("unicast").to_string(),
        r["dev"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn blackhole_sits_behind_the_bridge_route_and_follows_the_desired_state() {
    in_netns(
        "blackhole_sits_behind_the_bridge_route_and_follows_the_desired_state",
        || async {
            ip("link set lo up");
            ip("link add cni0 type bridge");
            ip("addr add 10.244.1.1/24 dev cni0");
            ip("link set cni0 up");
            // A default route out, which the subnet's traffic must not take.
            ip("link add eth0 type veth peer name peer0");
            ip("addr add 198.18.0.1/24 dev eth0");
            ip("link set eth0 up");
            ip("link set peer0 up");
            ip("route add default via 198.18.0.254 dev eth0");
            // Someone else's blackhole (as Calico writes for its blocks): never touched.
            ip("route add blackhole 10.244.200.0/26 proto static");

            let nl = Netlink::connect().unwrap();
            let mut events = backends::nl::subscribe().unwrap();
            let mut rec = Reconciler::new(nl.clone())
                .with_ownership(Ownership::network("10.244.0.0/16".parse().unwrap()));
            let mut want = KernelState::default();
            want.blackholes.insert("10.244.1.0/24".parse().unwrap());
            let report = rec.apply(&want).await;
            assert!(report.is_ok(), "{report:?}");
            assert_eq!(report.writes, 1);
            let ours = ("10.244.1.0/24".to_string(), "87".to_string(), 4096);
            let theirs = ("10.244.200.0/26".to_string(), "static".to_string(), 0);
            assert_eq!(blackholes(), [ours.clone(), theirs.clone()]);
            // The bridge's route still serves the pods.
            assert_eq!(route_get("10.244.1.5"), ("unicast".into(), "cni0".into()));
            let again = rec.apply(&want).await;
            assert!(again.is_ok() && again.writes == 0, "{again:?}");

            // Deleted out of band: the notification says so, the next apply restores it.
            ip("route del blackhole 10.244.1.0/24 proto 87 metric 4096");
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                assert!(Instant::now() < deadline, "no notification of the delete");
                let ev = tokio::time::timeout(Duration::from_millis(200), events.next()).await;
                if let Ok(Some(ev)) = ev {
                    if rec.observe(&ev) {
                        break;
                    }
                }
            }
            let report = rec.apply(&want).await;
            assert!(report.is_ok() && report.writes == 1, "{report:?}");
            assert_eq!(blackholes(), [ours.clone(), theirs.clone()]);

            // Without cni0, the subnet's traffic is dropped, not sent to the default route:
            // the kernel answers a lookup that hits a blackhole with EINVAL.
            ip("link del cni0");
            let out = std::process::Command::new("ip")
                .args(["route", "get", "10.244.1.5"])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && err.contains("Invalid argument"),
                "{}{err}",
                String::from_utf8_lossy(&out.stdout)
            );

            // A new reconciler (a restart without the flag) finds it and removes it; the other
            // blackhole stays.
            let mut fresh = Reconciler::new(nl)
                .with_ownership(Ownership::network("10.244.0.0/16".parse().unwrap()));
            let report = fresh.apply(&KernelState::default()).await;
            assert!(report.is_ok() && report.writes == 1, "{report:?}");
            assert_eq!(blackholes(), [theirs]);
        },
    );
}
