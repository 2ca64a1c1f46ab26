//! Own-lease life cycle against a real etcd: acquire, reuse, previous subnet, races,
//! reservations, renewal without orphan leases, re-acquire after a delete.
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use common::*;
use net_conf::alloc::Previous;
use tokio_util::sync::CancellationToken;
use weft::lease::etcd::manager::{LeaseTiming, RenewalEnd};

#[tokio::test]
async fn acquire_creates_a_leased_key_in_flannel_format() {
    let etcd = start_etcd();
    let mut m = manager(&etcd.endpoint(), LeaseTiming::default()).await;
    let (own, snap) = m
        .acquire(&host_gw_conf(), &attrs(node_ip(1)), Previous::none())
        .await
        .expect("acquire");
    assert!(snap.leases.is_empty());
    assert!(snap.revision > 0);
    assert!(own.lease_id != 0);
    let net = own.key.v4.expect("an IPv4 subnet");
    assert_eq!(net.prefix_len(), 24);
    assert!(net.addr() >= node_ip(0).min("10.244.1.0".parse().expect("ip")));
    assert!(net.addr().octets()[..2] == [10, 244] && net.addr().octets()[2] >= 1);
    let expires = own.expires.expect("leased");
    let left = expires.duration_since(SystemTime::now()).expect("future");
    assert!(left > Duration::from_secs(86_000), "{left:?}");

    let path = format!("{PREFIX}/subnets/{}", own.key);
    let value = etcd
        .etcdctl(&["get", &path, "--print-value-only"])
        .expect("get");
    assert_eq!(
        value.trim(),
        r#"{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"host-gw"}"#
    );
    let reg = m.registry();
    let ttl = reg.lease_ttl(own.lease_id).await.expect("ttl");
    assert!(ttl > 86_000, "ttl {ttl}");
    assert_eq!(reg.lease_ids().await.expect("leases"), vec![own.lease_id]);
}

#[tokio::test]
async fn a_restarted_node_gets_its_subnet_back_on_the_same_etcd_lease() {
    let etcd = start_etcd();
    let conf = host_gw_conf();
    let mut a = manager(&etcd.endpoint(), LeaseTiming::default()).await;
    let (first, _) = a
        .acquire(&conf, &attrs(node_ip(1)), Previous::none())
        .await
        .expect("acquire");
    drop(a);
    let mut b = manager(&etcd.endpoint(), LeaseTiming::default()).await;
    let (second, snap) = b
        .acquire(&conf, &attrs(node_ip(1)), Previous::none())
        .await
        .expect("acquire again");
    assert_eq!(second.key, first.key);
    assert_eq!(
        second.lease_id, first.lease_id,
        "reuse must keep the etcd lease"
    );
    assert_eq!(snap.leases.len(), 1);
    assert_eq!(
        b.registry().lease_ids().await.expect("leases"),
        vec![first.lease_id]
    );

    // Changed attrs are written by CAS on the same lease.
    let mut vx = attrs(node_ip(1));
    vx.backend_type = "ipip".into();
    let (third, _) = b
        .acquire(&conf, &vx, Previous::none())
        .await
        .expect("acquire ipip");
    assert_eq!(third.key, first.key);
    let now = b.registry().list_leases().await.expect("list");
    assert_eq!(now.leases.len(), 1);
    assert_eq!(now.leases[0].attrs.backend_type, "ipip");
    assert_eq!(now.leases[0].lease_id, first.lease_id);
}

#[tokio::test]
async fn previous_subnet_is_reused_when_free_and_not_when_taken() {
    let etcd = start_etcd();
    let conf = host_gw_conf();
    let mut a = manager(&etcd.endpoint(), LeaseTiming::default()).await;
    let (own, _) = a
        .acquire(
            &conf,
            &attrs(node_ip(1)),
            Previous {
                v4: Some(net("10.244.77.0/24")),
                v6: None,
            },
        )
        .await
        .expect("acquire");
    assert_eq!(own.key, key("10.244.77.0-24"));

    // Another node whose subnet.env names the same subnet must not get it.
    let mut b = manager(&etcd.endpoint(), LeaseTiming::default()).await;
    let (other, _) = b
        .acquire(
            &conf,
            &attrs(node_ip(2)),
            Previous {
                v4: Some(net("10.244.77.0/24")),
                v6: None,
            },
        )
        .await
        .expect("acquire");
    assert_ne!(other.key, own.key);
    let (ours_again, _) = a
        .acquire(
            &conf,
            &attrs(node_ip(1)),
            Previous {
                v4: Some(net("10.244.5.0/24")),
                v6: None,
            },
        )
        .await
        .expect("acquire");
    assert_eq!(
        ours_again.key, own.key,
        "reuse by IP comes before subnet.env"
    );
}

#[tokio::test]
async fn incompatible_own_lease_is_deleted_and_replaced() {
    let etcd = start_etcd();
    let old = format!("{PREFIX}/subnets/10.99.0.0-24");
    etcd.etcdctl(&[
        "put",
        &old,
        r#"{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"host-gw"}"#,
    ])
    .expect("put");
    let mut m = manager(&etcd.endpoint(), LeaseTiming::default()).await;
    let (own, _) = m
        .acquire(&host_gw_conf(), &attrs(node_ip(1)), Previous::none())
        .await
        .expect("acquire");
    assert_ne!(own.key, key("10.99.0.0-24"));
    assert!(etcd.etcdctl(&["get", &old]).expect("get").trim().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_nodes_at_once_get_fifty_distinct_subnets() {
    let etcd = start_etcd();
    // 63 subnets for 50 nodes (docs/targets.md R4): many lost races.
    const NODES: usize = 50;
    let conf = conf(r#"{"Network":"10.244.0.0/18","SubnetLen":24,"Backend":{"Type":"host-gw"}}"#);
    let mut managers = Vec::new();
    for _ in 0..NODES {
        managers.push(manager(&etcd.endpoint(), LeaseTiming::default()).await);
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(NODES));
    let mut tasks = Vec::new();
    for (i, mut m) in managers.into_iter().enumerate() {
        let conf = conf.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let ip = node_ip(u8::try_from(i + 1).expect("small"));
            m.acquire(&conf, &attrs(ip), Previous::none())
                .await
                .map(|(l, _)| (ip, l))
        }));
    }
    let mut keys = BTreeSet::new();
    let mut lease_ids = BTreeSet::new();
    for t in tasks {
        let (_, lease) = t.await.expect("join").expect("every node gets a lease");
        keys.insert(lease.key);
        lease_ids.insert(lease.lease_id);
    }
    assert_eq!(keys.len(), NODES, "subnets not distinct: {keys:?}");
    let reg = registry(&etcd.endpoint()).await;
    let snap = reg.list_leases().await.expect("list");
    assert_eq!(snap.leases.len(), NODES);
    let ips: BTreeSet<_> = snap.leases.iter().map(|l| l.attrs.public_ip).collect();
    assert_eq!(ips.len(), NODES, "a key was overwritten");
    // Lost races revoke their granted leases: exactly one etcd lease per node.
    let all: BTreeSet<i64> = reg.lease_ids().await.expect("leases").into_iter().collect();
    assert_eq!(all, lease_ids);
}

#[tokio::test]
async fn a_reservation_is_honoured_and_kept_without_ttl() {
    let etcd = start_etcd();
    let path = format!("{PREFIX}/subnets/10.244.42.0-24");
    etcd.etcdctl(&[
        "put",
        &path,
        r#"{"PublicIP":"198.18.0.9","PublicIPv6":null}"#,
    ])
    .expect("put reservation");
    let mut m = manager(&etcd.endpoint(), LeaseTiming::default()).await;
    let (own, _) = m
        .acquire(&host_gw_conf(), &attrs(node_ip(9)), Previous::none())
        .await
        .expect("acquire");
    assert_eq!(own.key, key("10.244.42.0-24"));
    assert_eq!(own.lease_id, 0);
    assert_eq!(own.expires, None);
    let snap = m.registry().list_leases().await.expect("list");
    assert_eq!(snap.leases.len(), 1);
    assert_eq!(snap.leases[0].lease_id, 0, "reservation got an etcd lease");
    assert_eq!(
        snap.leases[0].attrs.backend_type, "host-gw",
        "attrs updated"
    );
    assert!(m.registry().lease_ids().await.expect("leases").is_empty());

    // The renewal of a reservation does nothing until shutdown.
    let stop = CancellationToken::new();
    let task = tokio::spawn(m.renewal(own, stop.clone()));
    tokio::task::yield_now().await;
    stop.cancel();
    assert_eq!(task.await.expect("join"), RenewalEnd::Shutdown);
    assert!(m.registry().lease_ids().await.expect("leases").is_empty());
}

#[tokio::test]
async fn renewal_refreshes_the_one_etcd_lease() {
    let etcd = start_etcd();
    let timing = LeaseTiming {
        ttl: Duration::from_secs(4),
        renew_margin: Duration::from_secs(2),
        renew_retry: Duration::from_millis(500),
    };
    let mut m = manager(&etcd.endpoint(), timing).await;
    let (own, _) = m
        .acquire(&host_gw_conf(), &attrs(node_ip(1)), Previous::none())
        .await
        .expect("acquire");
    let reg = m.registry().clone();
    let stop = CancellationToken::new();
    let task = tokio::spawn(m.renewal(own, stop.clone()));
    let started = std::time::Instant::now();
    // Watch the TTL fall to the margin and come back up, twice.
    let mut renewals = 0;
    let mut low_seen = false;
    let deadline = started + Duration::from_secs(20);
    while renewals < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no two renewals in 20 s"
        );
        let ttl = reg.lease_ttl(own.lease_id).await.expect("ttl");
        assert!(ttl > 0, "lease expired (ttl {ttl})");
        if ttl <= 2 {
            low_seen = true;
        } else if low_seen && ttl >= 3 {
            low_seen = false;
            renewals += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() > Duration::from_secs(4),
        "outlived one TTL"
    );
    assert_eq!(reg.lease_ids().await.expect("leases"), vec![own.lease_id]);
    let snap = reg.list_leases().await.expect("list");
    assert_eq!(snap.leases.len(), 1);
    assert_eq!(snap.leases[0].lease_id, own.lease_id);
    stop.cancel();
    assert_eq!(task.await.expect("join"), RenewalEnd::Shutdown);
}

#[tokio::test]
async fn renewal_reports_a_revoked_lease() {
    let etcd = start_etcd();
    let timing = LeaseTiming {
        ttl: Duration::from_secs(3),
        renew_margin: Duration::from_secs(2),
        renew_retry: Duration::from_millis(200),
    };
    let mut m = manager(&etcd.endpoint(), timing).await;
    let (own, _) = m
        .acquire(&host_gw_conf(), &attrs(node_ip(1)), Previous::none())
        .await
        .expect("acquire");
    m.registry().revoke(own.lease_id).await.expect("revoke");
    let end = tokio::time::timeout(
        Duration::from_secs(10),
        m.renewal(own, CancellationToken::new()),
    )
    .await
    .expect("renewal ends");
    assert_eq!(
        end,
        RenewalEnd::LeaseLost {
            lease_id: own.lease_id
        }
    );
}

#[tokio::test]
async fn deleted_own_key_is_reacquired_with_the_same_subnet() {
    let etcd = start_etcd();
    let mut m = manager(&etcd.endpoint(), LeaseTiming::default()).await;
    let (own, _) = m
        .acquire(&host_gw_conf(), &attrs(node_ip(1)), Previous::none())
        .await
        .expect("acquire");
    let path = format!("{PREFIX}/subnets/{}", own.key);
    etcd.etcdctl(&["del", &path]).expect("del");
    let again = m.reacquire(own.key).await.expect("reacquire");
    assert_eq!(again.lease.key, own.key);
    assert!(!again.subnet_changed);
    assert_ne!(again.lease.lease_id, own.lease_id);
    // The old etcd lease was revoked: still exactly one.
    assert_eq!(
        m.registry().lease_ids().await.expect("leases"),
        vec![again.lease.lease_id]
    );

    // Taken by another node meanwhile: a different subnet, reported as changed.
    etcd.etcdctl(&["del", &path]).expect("del");
    etcd.etcdctl(&[
        "put",
        &path,
        r#"{"PublicIP":"198.18.0.7","PublicIPv6":null,"BackendType":"host-gw"}"#,
    ])
    .expect("put");
    let moved = m.reacquire(own.key).await.expect("reacquire");
    assert!(moved.subnet_changed);
    assert_ne!(moved.lease.key, own.key);
    let snap = m.registry().list_leases().await.expect("list");
    let other = snap
        .leases
        .iter()
        .find(|l| l.key == own.key)
        .expect("other node's key kept");
    assert_eq!(other.attrs.public_ip, node_ip(7));
}

#[tokio::test]
async fn acquire_waits_for_an_unreachable_etcd() {
    let mut etcd = start_etcd();
    let endpoint = etcd.endpoint();
    etcd.stop();
    let mut m = manager(&endpoint, LeaseTiming::default()).await;
    let stop = CancellationToken::new();
    let conf = host_gw_conf();
    let task = tokio::spawn(async move {
        let res = m
            .acquire_retrying(&conf, &attrs(node_ip(1)), Previous::none(), &stop)
            .await;
        (m, res)
    });
    // Let it fail a few times, then bring etcd back.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!task.is_finished(), "acquire finished without etcd");
    let etcd = tokio::task::spawn_blocking(move || {
        etcd.restart().expect("restart");
        etcd
    })
    .await
    .expect("join");
    let (m, res) = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("acquire within 20 s of etcd's return")
        .expect("join");
    let (own, _) = res.expect("not shut down").expect("acquired");
    assert_eq!(
        m.registry().lease_ids().await.expect("leases"),
        vec![own.lease_id]
    );
    drop(etcd);
}

/// A dual-stack network: flannel's key `<v4>-<len>&<v6>-<len>` (Go's compressed IPv6 text) and
/// value with `PublicIPv6`; the previous IPv6 subnet from subnet.env is kept like the IPv4 one; a
/// v4-only lease of the node from before the network became dual-stack is replaced by a
/// dual-stack one on the same IPv4 subnet.
#[tokio::test]
async fn dual_stack_leases_have_flannels_key_and_value() {
    let etcd = start_etcd();
    let conf = conf(
        r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}"#,
    );
    let dual = |n: u8| net_conf::LeaseAttrs {
        public_ipv6: Some(format!("fd00:198:18::{n}").parse().expect("v6")),
        ..attrs(node_ip(n))
    };
    let mut a = manager(&etcd.endpoint(), LeaseTiming::default()).await;
    let (own, _) = a
        .acquire(&conf, &dual(1), Previous::none())
        .await
        .expect("acquire");
    let v6 = own.key.v6.expect("a dual-stack key");
    assert_eq!(v6.prefix_len(), 64);
    assert!(
        "fd00:10:244::/56"
            .parse::<ipnet::Ipv6Net>()
            .expect("net")
            .contains(&v6),
        "{v6}"
    );
    let text = own.key.to_string();
    assert!(
        text.contains('&') && text.ends_with("::-64") && !text.contains(":0:"),
        "Go's compressed text: {text}"
    );
    let value = etcd
        .etcdctl(&[
            "get",
            &format!("{PREFIX}/subnets/{text}"),
            "--print-value-only",
        ])
        .expect("get");
    assert_eq!(
        value.trim(),
        r#"{"PublicIP":"198.18.0.1","PublicIPv6":"fd00:198:18::1","BackendType":"host-gw"}"#
    );

    // Another node with both previous subnets from its subnet.env gets exactly them (beyond
    // the 100 candidates node 1 picked from, so they cannot be taken).
    let mut b = manager(&etcd.endpoint(), LeaseTiming::default()).await;
    let (second, _) = b
        .acquire(
            &conf,
            &dual(2),
            Previous {
                v4: Some(net("10.244.177.0/24")),
                v6: Some("fd00:10:244:b1::/64".parse().expect("v6")),
            },
        )
        .await
        .expect("acquire");
    assert_eq!(second.key, key("10.244.177.0-24&fd00:10:244:b1::-64"));

    // A v4-only lease of node 3 (written when the network was v4-only) is replaced: same IPv4
    // subnet (subnet.env), a new IPv6 one.
    etcd.etcdctl(&[
        "put",
        &format!("{PREFIX}/subnets/10.244.233.0-24"),
        r#"{"PublicIP":"198.18.0.3","PublicIPv6":null,"BackendType":"host-gw"}"#,
    ])
    .expect("put");
    let mut c = manager(&etcd.endpoint(), LeaseTiming::default()).await;
    let (third, snap) = c
        .acquire(
            &conf,
            &dual(3),
            Previous {
                v4: Some(net("10.244.233.0/24")),
                v6: None,
            },
        )
        .await
        .expect("acquire");
    assert_eq!(third.key.v4, Some(net("10.244.233.0/24")));
    assert!(third.key.v6.is_some());
    // The list the last decision was made on: the old key deleted, the two others.
    let keys: BTreeSet<String> = snap.leases.iter().map(|l| l.key.to_string()).collect();
    assert_eq!(
        keys,
        BTreeSet::from([own.key.to_string(), second.key.to_string()])
    );
    let stored = etcd
        .etcdctl(&[
            "get",
            &format!("{PREFIX}/subnets/"),
            "--prefix",
            "--keys-only",
        ])
        .expect("list");
    let stored: BTreeSet<&str> = stored.split_whitespace().collect();
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert!(
        stored.contains(format!("{PREFIX}/subnets/{}", third.key).as_str()),
        "{stored:?}"
    );
}

/// Two nodes that listed at the same moment can create dual-stack keys that differ but share
/// a subnet (the compare-and-swap guards one exact key). The later creator sees the earlier
/// lease when it checks after creating, gives its key up and picks again.
#[tokio::test]
async fn a_dual_stack_lease_overlapping_one_created_just_before_is_given_up() {
    let etcd = start_etcd();
    let conf = conf(
        r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}"#,
    );
    let mut m = manager(&etcd.endpoint(), LeaseTiming::default()).await;
    // The list this node decides on: before the other node's create.
    let stale = m.registry().list_leases().await.expect("list");
    etcd.etcdctl(&[
        "put",
        &format!("{PREFIX}/subnets/10.244.177.0-24&fd00:10:244:99::-64"),
        r#"{"PublicIP":"198.18.0.2","PublicIPv6":"fd00:198:18::2","BackendType":"host-gw"}"#,
    ])
    .expect("the other node's lease");
    let attrs = net_conf::LeaseAttrs {
        public_ipv6: Some("fd00:198:18::1".parse().expect("v6")),
        ..attrs(node_ip(1))
    };
    let (own, _) = m
        .acquire_from(
            &conf,
            &attrs,
            Previous {
                v4: Some(net("10.244.177.0/24")),
                v6: Some("fd00:10:244:b1::/64".parse().expect("v6")),
            },
            Some(stale),
        )
        .await
        .expect("acquire");
    assert_ne!(
        own.key.v4,
        Some(net("10.244.177.0/24")),
        "kept an overlapping subnet"
    );
    assert_eq!(
        own.key.v6,
        Some("fd00:10:244:b1::/64".parse().expect("v6")),
        "the IPv6 subnet did not collide and is kept"
    );
    let stored = etcd
        .etcdctl(&[
            "get",
            &format!("{PREFIX}/subnets/"),
            "--prefix",
            "--keys-only",
        ])
        .expect("list");
    let keys: Vec<&str> = stored.split_whitespace().collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(
        keys.iter()
            .filter(|k| k.contains("10.244.177.0-24"))
            .count(),
        1,
        "{keys:?}"
    );
}
