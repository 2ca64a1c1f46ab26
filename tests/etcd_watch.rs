//! Watching all leases against a real etcd: events, malformed entries, disconnect + resume,
//! compaction + resync, and the lease table following along.
mod common;

use common::*;
use net_conf::alloc::Previous;
use tokio_util::sync::CancellationToken;
use weft::lease::etcd::manager::{LeaseTiming, WatchEvent};
use weft::lease::table::{Change, LeaseTable};

fn value(ip: &str) -> String {
    format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"host-gw"}}"#)
}

#[tokio::test]
async fn watch_reports_puts_deletes_and_malformed_entries_without_removals() {
    let etcd = start_etcd();
    let mut m = manager(&etcd.endpoint(), LeaseTiming::default()).await;
    etcd.etcdctl(&[
        "put",
        &format!("{PREFIX}/subnets/10.244.2.0-24"),
        &value("198.18.0.2"),
    ])
    .expect("put");
    let (own, snap) = m
        .acquire(&host_gw_conf(), &attrs(node_ip(1)), Previous::none())
        .await
        .expect("acquire");
    let mut table = LeaseTable::new(Some(own.key));
    let initial = table.reset(&snap);
    assert_eq!(initial.len(), 1);
    let stop = CancellationToken::new();
    let mut rx = m.watch(snap.revision + 1, stop.clone());

    // Our own create comes first (the list was taken before it); the table ignores it.
    let ev = next_event(&mut rx, 5).await;
    assert!(
        matches!(&ev, WatchEvent::Put(e) if e.key == own.key),
        "{ev:?}"
    );
    assert_eq!(table.apply(&ev), None);

    etcd.etcdctl(&[
        "put",
        &format!("{PREFIX}/subnets/10.244.3.0-24"),
        &value("198.18.0.3"),
    ])
    .expect("put");
    let ev = next_event(&mut rx, 5).await;
    assert!(
        matches!(table.apply(&ev), Some(Change::Added(p)) if p.key == key("10.244.3.0-24")),
        "{ev:?}"
    );

    // A bad value on a peer's key: Malformed, the peer stays.
    etcd.etcdctl(&[
        "put",
        &format!("{PREFIX}/subnets/10.244.2.0-24"),
        "{not json",
    ])
    .expect("put");
    let ev = next_event(&mut rx, 5).await;
    match &ev {
        WatchEvent::Malformed { subnet, reason, .. } => {
            assert_eq!(*subnet, Some(key("10.244.2.0-24")));
            assert!(!reason.is_empty());
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    assert_eq!(table.apply(&ev), None);
    // A key under subnets/ that is not a subnet.
    etcd.etcdctl(&[
        "put",
        &format!("{PREFIX}/subnets/garbage"),
        &value("198.18.0.4"),
    ])
    .expect("put");
    let ev = next_event(&mut rx, 5).await;
    assert!(
        matches!(&ev, WatchEvent::Malformed { subnet: None, key, .. } if key.ends_with("/garbage")),
        "{ev:?}"
    );
    etcd.etcdctl(&["del", &format!("{PREFIX}/subnets/garbage")])
        .expect("del");
    let ev = next_event(&mut rx, 5).await;
    assert!(
        matches!(&ev, WatchEvent::Malformed { subnet: None, .. }),
        "{ev:?}"
    );
    assert_eq!(table.apply(&ev), None);
    assert_eq!(
        table.peers().iter().map(|p| p.key).collect::<Vec<_>>(),
        vec![key("10.244.2.0-24"), key("10.244.3.0-24")]
    );

    // A list with the malformed value keeps the peer too.
    let snap = m.registry().list_leases().await.expect("list");
    assert_eq!(snap.malformed.len(), 1);
    assert!(table.reset(&snap).is_empty());
    assert_eq!(table.len(), 2);

    etcd.etcdctl(&["del", &format!("{PREFIX}/subnets/10.244.3.0-24")])
        .expect("del");
    let ev = next_event(&mut rx, 5).await;
    assert!(
        matches!(table.apply(&ev), Some(Change::Removed(p)) if p.key == key("10.244.3.0-24")),
        "{ev:?}"
    );
    stop.cancel();
    // The task stops and drops its sender.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while rx.recv().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "watch task did not stop");
}

#[tokio::test]
async fn watch_resumes_after_etcd_restart_without_missing_events() {
    let mut etcd = start_etcd();
    let mut m = manager(&etcd.endpoint(), LeaseTiming::default()).await;
    let (own, snap) = m
        .acquire(&host_gw_conf(), &attrs(node_ip(1)), Previous::none())
        .await
        .expect("acquire");
    let stop = CancellationToken::new();
    let mut rx = m.watch(snap.revision + 1, stop.clone());
    let ev = next_event(&mut rx, 5).await;
    assert!(
        matches!(&ev, WatchEvent::Put(e) if e.key == own.key),
        "{ev:?}"
    );

    etcd.stop();
    let ev = next_event(&mut rx, 10).await;
    assert_eq!(ev, WatchEvent::Disconnected);
    etcd.restart().expect("restart");
    let seen = events_until(&mut rx, 15, |e| *e == WatchEvent::Reconnected).await;
    assert_eq!(seen, vec![WatchEvent::Reconnected]);
    etcd.etcdctl(&[
        "put",
        &format!("{PREFIX}/subnets/10.244.9.0-24"),
        &value("198.18.0.9"),
    ])
    .expect("put");
    let ev = next_event(&mut rx, 5).await;
    assert!(
        matches!(&ev, WatchEvent::Put(e) if e.key == key("10.244.9.0-24")),
        "{ev:?}"
    );
    stop.cancel();
}

#[tokio::test]
async fn changes_while_cut_off_arrive_on_reconnect() {
    let etcd = start_etcd();
    let proxy = Proxy::start(socket_addr(&etcd.endpoint())).await;
    let direct = registry(&etcd.endpoint()).await;
    let mut m = manager(&proxy.endpoint(), LeaseTiming::default()).await;
    let (_, snap) = m
        .acquire(&host_gw_conf(), &attrs(node_ip(1)), Previous::none())
        .await
        .expect("acquire");
    let stop = CancellationToken::new();
    let mut rx = m.watch(snap.revision + 1, stop.clone());
    next_event(&mut rx, 5).await; // own create

    proxy.pause();
    assert_eq!(next_event(&mut rx, 10).await, WatchEvent::Disconnected);
    let client = direct.client();
    let mut kv = client.kv_client();
    kv.put(
        format!("{PREFIX}/subnets/10.244.5.0-24"),
        value("198.18.0.5"),
        None,
    )
    .await
    .expect("put");
    kv.put(
        format!("{PREFIX}/subnets/10.244.6.0-24"),
        value("198.18.0.6"),
        None,
    )
    .await
    .expect("put");
    proxy.resume();
    let seen = events_until(
        &mut rx,
        15,
        |e| matches!(e, WatchEvent::Put(l) if l.key == key("10.244.6.0-24")),
    )
    .await;
    let puts: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Put(l) => Some(l.key),
            _ => None,
        })
        .collect();
    assert_eq!(puts, vec![key("10.244.5.0-24"), key("10.244.6.0-24")]);
    assert!(seen.contains(&WatchEvent::Reconnected), "{seen:?}");
    assert!(
        !seen.iter().any(|e| matches!(e, WatchEvent::Resync(_))),
        "{seen:?}"
    );
    stop.cancel();
}

#[tokio::test]
async fn compaction_while_cut_off_gives_a_resync_and_the_table_converges() {
    let etcd = start_etcd();
    let proxy = Proxy::start(socket_addr(&etcd.endpoint())).await;
    let direct = registry(&etcd.endpoint()).await;
    let client = direct.client();
    let mut kv = client.kv_client();
    for (k, ip) in [
        ("10.244.2.0-24", "198.18.0.2"),
        ("10.244.3.0-24", "198.18.0.3"),
    ] {
        kv.put(format!("{PREFIX}/subnets/{k}"), value(ip), None)
            .await
            .expect("put");
    }
    let mut m = manager(&proxy.endpoint(), LeaseTiming::default()).await;
    let (own, snap) = m
        .acquire(&host_gw_conf(), &attrs(node_ip(1)), Previous::none())
        .await
        .expect("acquire");
    let mut table = LeaseTable::new(Some(own.key));
    table.reset(&snap);
    assert_eq!(table.len(), 2);
    let stop = CancellationToken::new();
    let mut rx = m.watch(snap.revision + 1, stop.clone());
    let ev = next_event(&mut rx, 5).await;
    table.apply(&ev);

    proxy.pause();
    assert_eq!(next_event(&mut rx, 10).await, WatchEvent::Disconnected);
    // While cut off: one peer goes, one comes, one changes; then compact past it all.
    kv.delete(format!("{PREFIX}/subnets/10.244.2.0-24"), None)
        .await
        .expect("delete");
    kv.put(
        format!("{PREFIX}/subnets/10.244.4.0-24"),
        value("198.18.0.4"),
        None,
    )
    .await
    .expect("put");
    let resp = kv
        .put(
            format!("{PREFIX}/subnets/10.244.3.0-24"),
            value("198.18.0.33"),
            None,
        )
        .await
        .expect("put");
    let rev = resp.header().expect("header").revision();
    kv.compact(rev, None).await.expect("compact");
    proxy.resume();

    let seen = events_until(&mut rx, 15, |e| matches!(e, WatchEvent::Resync(_))).await;
    let Some(WatchEvent::Resync(snapshot)) = seen.last() else {
        unreachable!()
    };
    assert!(snapshot.revision >= rev);
    let mut changes = table.reset(snapshot);
    changes.sort_by_key(Change::key);
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert!(matches!(&changes[0], Change::Removed(p) if p.key == key("10.244.2.0-24")));
    assert!(
        matches!(&changes[1], Change::Updated { new, .. } if new.key == key("10.244.3.0-24")
            && new.attrs.public_ip == "198.18.0.33".parse::<std::net::Ipv4Addr>().expect("ip"))
    );
    assert!(matches!(&changes[2], Change::Added(p) if p.key == key("10.244.4.0-24")));
    assert_eq!(
        table.peers().iter().map(|p| p.key).collect::<Vec<_>>(),
        vec![key("10.244.3.0-24"), key("10.244.4.0-24")]
    );

    // The watch goes on after the resync.
    kv.put(
        format!("{PREFIX}/subnets/10.244.8.0-24"),
        value("198.18.0.8"),
        None,
    )
    .await
    .expect("put");
    let seen = events_until(&mut rx, 10, |e| matches!(e, WatchEvent::Put(_))).await;
    assert!(
        matches!(seen.last(), Some(WatchEvent::Put(l)) if l.key == key("10.244.8.0-24")),
        "{seen:?}"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_resyncs() {
    let etcd = start_etcd();
    let reg = registry(&etcd.endpoint()).await;
    let client = reg.client();
    let mut kv = client.kv_client();
    kv.put(
        format!("{PREFIX}/subnets/10.244.2.0-24"),
        value("198.18.0.2"),
        None,
    )
    .await
    .expect("put");
    let resp = kv
        .put(
            format!("{PREFIX}/subnets/10.244.3.0-24"),
            value("198.18.0.3"),
            None,
        )
        .await
        .expect("put");
    let rev = resp.header().expect("header").revision();
    kv.compact(rev, None).await.expect("compact");
    let m = weft::lease::etcd::manager::SubnetManager::new(reg, LeaseTiming::default());
    let stop = CancellationToken::new();
    let mut rx = m.watch(1, stop.clone());
    match next_event(&mut rx, 5).await {
        WatchEvent::Resync(s) => {
            assert_eq!(s.leases.len(), 2);
            assert_eq!(s.revision, rev);
        }
        other => panic!("expected Resync, got {other:?}"),
    }
    stop.cancel();
}
