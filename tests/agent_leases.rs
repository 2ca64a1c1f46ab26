//! The agent's lease decisions ([`weft::agent::leases::Leases`]) against the in-memory lease
//! source of `weft-testkit`: no root, no kernel, no etcd; tokio's clock is paused, so the
//! backoff of a call retried while the source is down takes no real time.
//!
//! Each test plays the rest of the cluster (other nodes' leases, a foreign writer, an outage,
//! an expiry) through the source's control methods and checks what the agent's lease half
//! hands to the data plane and what it writes back to the source.
use net_conf::alloc::Previous;
use std::net::Ipv4Addr;
use std::time::Duration;

use net_conf::{LeaseAttrs, NetConf};
use tokio_util::sync::CancellationToken;
use weft::agent::leases::{Effect, Leases, Update};
use weft::lease::LeaseSource;
use weft::lease::table::Change;
use weft_testkit::memory::{MemorySource, config_text, key};

const NETWORK: &str = "10.244.0.0/16";
/// How long a test waits (in paused time) for something that must happen.
const DEADLINE: Duration = Duration::from_secs(30);

fn conf(backend: &str) -> NetConf {
    NetConf::parse(&config_text(NETWORK, backend))
        .expect("config")
        .conf
}

fn attrs(last: u8) -> LeaseAttrs {
    LeaseAttrs::host_gw(Ipv4Addr::new(198, 18, 0, last))
}

/// This node (198.18.0.1) holds a lease on `source`; other nodes as the source has them.
async fn start(source: &MemorySource, shutdown: &CancellationToken) -> Leases<MemorySource> {
    let mut mine = source.clone();
    let conf = conf("host-gw");
    let (own, snapshot) = mine
        .acquire(&conf, &attrs(1), Previous::none(), None)
        .await
        .expect("acquire");
    Leases::start(mine, own, attrs(1), conf, &snapshot, None, shutdown.clone())
}

/// Drives `leases` until `done` holds, collecting the updates; panics at [`DEADLINE`].
async fn drive_until(
    leases: &mut Leases<MemorySource>,
    what: &str,
    mut done: impl FnMut(&Leases<MemorySource>, &[Update]) -> bool,
) -> Vec<Update> {
    let until = tokio::time::Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while !done(leases, &got) {
        assert!(
            tokio::time::Instant::now() < until,
            "{what}: not after {DEADLINE:?}; updates: {got:?}"
        );
        tokio::select! {
            update = leases.next() => got.push(update.expect("no shutdown")),
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
    got
}

/// The next update (within [`DEADLINE`]).
async fn next(leases: &mut Leases<MemorySource>) -> Update {
    tokio::time::timeout(DEADLINE, leases.next())
        .await
        .expect("an update")
        .expect("no shutdown")
}

fn peers(update: &Update) -> &[Change] {
    match &update.effect {
        Effect::Peers(changes) => changes,
        other => panic!("expected peer changes, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn start_takes_the_listed_peers_and_a_free_subnet() {
    let source = MemorySource::new(Some(&config_text(NETWORK, "host-gw")));
    source.put_lease(key("10.244.1.0/24"), &attrs(2));
    source.put_lease(key("10.244.2.0/24"), &attrs(3));
    let shutdown = CancellationToken::new();
    let leases = start(&source, &shutdown).await;
    let own = leases.own().key;
    assert!(own != key("10.244.1.0/24") && own != key("10.244.2.0/24"));
    assert_eq!(leases.table().len(), 2, "both peers, not ourselves");
    assert_eq!(leases.table().get(&key("10.244.2.0/24")), Some(&attrs(3)));
    assert_eq!(source.value(own), Some(attrs(1).to_json()));
    assert_eq!(source.calls("acquire"), 1);
}

#[tokio::test(start_paused = true)]
async fn peer_add_move_and_remove_are_single_changes() {
    let source = MemorySource::new(Some(&config_text(NETWORK, "host-gw")));
    let shutdown = CancellationToken::new();
    let mut leases = start(&source, &shutdown).await;
    let peer = key("10.244.9.0/24");

    source.put_lease(peer, &attrs(2));
    let update = next(&mut leases).await;
    assert!(matches!(peers(&update), [Change::Added(p)] if p.key == peer));

    // The node behind the subnet moved to another address.
    source.put_lease(peer, &attrs(7));
    let update = next(&mut leases).await;
    match peers(&update) {
        [Change::Updated { old, new }] => {
            assert_eq!(old.attrs, attrs(2));
            assert_eq!(new.attrs, attrs(7));
        }
        other => panic!("expected an update, got {other:?}"),
    }

    assert!(source.delete_lease(peer));
    let update = next(&mut leases).await;
    assert!(matches!(peers(&update), [Change::Removed(p)] if p.key == peer));
    assert!(leases.table().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_malformed_peer_value_keeps_the_healthy_entry() {
    let source = MemorySource::new(Some(&config_text(NETWORK, "host-gw")));
    let peer = key("10.244.9.0/24");
    source.put_lease(peer, &attrs(2));
    let shutdown = CancellationToken::new();
    let mut leases = start(&source, &shutdown).await;
    source.put_raw(&peer.to_string(), "{not json");
    source.put_raw("not-a-subnet", "{}");
    // Neither event changes anything for the data plane; the next real change arrives alone.
    source.put_lease(key("10.244.10.0/24"), &attrs(3));
    let update = next(&mut leases).await;
    assert!(matches!(peers(&update), [Change::Added(p)] if p.key == key("10.244.10.0/24")));
    assert_eq!(leases.table().get(&peer), Some(&attrs(2)));
}

#[tokio::test(start_paused = true)]
async fn a_burst_is_one_update_and_a_large_burst_a_full_plan() {
    let source = MemorySource::new(Some(&config_text(NETWORK, "host-gw")));
    let shutdown = CancellationToken::new();
    let mut leases = start(&source, &shutdown).await;
    for i in 10..13 {
        source.put_lease(key(&format!("10.244.{i}.0/24")), &attrs(i));
    }
    let update = next(&mut leases).await;
    assert_eq!(peers(&update).len(), 3);
    for i in 20..120 {
        source.put_lease(key(&format!("10.244.{i}.0/24")), &attrs(i));
    }
    let update = next(&mut leases).await;
    assert_eq!(
        update.effect,
        Effect::Full,
        "over 64 changes: one full plan"
    );
    assert_eq!(leases.table().len(), 103);
}

#[tokio::test(start_paused = true)]
async fn own_lease_deleted_is_reacquired_on_the_same_subnet() {
    let source = MemorySource::new(Some(&config_text(NETWORK, "host-gw")));
    let shutdown = CancellationToken::new();
    let mut leases = start(&source, &shutdown).await;
    let own = leases.own().key;
    assert!(source.delete_lease(own));
    let update = next(&mut leases).await;
    assert_eq!(update.effect, Effect::Full);
    assert!(!update.moved, "same subnet: nothing to move");
    assert_eq!(leases.own().key, own);
    assert_eq!(source.value(own), Some(attrs(1).to_json()));
    assert_eq!(source.calls("reacquire"), 1);
}

#[tokio::test(start_paused = true)]
async fn own_subnet_taken_while_cut_off_moves_the_lease() {
    let source = MemorySource::new(Some(&config_text(NETWORK, "host-gw")));
    let shutdown = CancellationToken::new();
    let mut leases = start(&source, &shutdown).await;
    let own = leases.own().key;
    source.set_down(true);
    assert!(source.delete_lease(own));
    source.put_lease(own, &attrs(9));
    source.set_down(false);
    let got = drive_until(&mut leases, "the lease moved", |_, got| {
        got.iter().any(|u| u.moved)
    })
    .await;
    let moved = got.iter().find(|u| u.moved).expect("moved");
    assert_eq!(moved.effect, Effect::Full);
    assert_ne!(leases.own().key, own);
    assert_eq!(
        leases.table().get(&own),
        Some(&attrs(9)),
        "the old subnet is a peer now"
    );
    assert_eq!(source.value(leases.own().key), Some(attrs(1).to_json()));
}

#[tokio::test(start_paused = true)]
async fn own_lease_overwritten_or_malformed_is_written_back() {
    let source = MemorySource::new(Some(&config_text(NETWORK, "host-gw")));
    let shutdown = CancellationToken::new();
    let mut leases = start(&source, &shutdown).await;
    let own = leases.own().key;
    let ours = attrs(1).to_json();

    source.put_lease(own, &attrs(5));
    drive_until(&mut leases, "our value written back", |_, _| {
        source.value(own).as_deref() == Some(&ours)
    })
    .await;
    assert_eq!(source.calls("reassert"), 1);
    assert_eq!(
        source.lease_id(own),
        Some(leases.own().lease_id),
        "kept on our lease"
    );

    source.put_raw(&own.to_string(), "garbage");
    drive_until(
        &mut leases,
        "our value written back after garbage",
        |_, _| source.value(own).as_deref() == Some(&ours),
    )
    .await;
    assert_eq!(source.calls("reassert"), 2);
    assert_eq!(leases.own().key, own, "no re-acquire for a foreign write");
    assert_eq!(source.calls("reacquire"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_write_back_that_keeps_failing_is_retried_until_the_source_takes_it() {
    // E.g. kube mode while a rotated token is not read yet (kube-rs re-reads it within a
    // minute): the write-back fails for a while, and must not give up.
    let source = MemorySource::new(Some(&config_text(NETWORK, "host-gw")));
    let shutdown = CancellationToken::new();
    let mut leases = start(&source, &shutdown).await;
    let own = leases.own().key;
    let ours = attrs(1).to_json();
    source.set_writes_fail(true);
    source.put_lease(own, &attrs(5));
    drive_until(&mut leases, "a few failed write-backs", |_, _| {
        source.calls("reassert") >= 8
    })
    .await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    source.set_writes_fail(false);
    drive_until(
        &mut leases,
        "our value written back once writes work",
        |_, _| source.value(own).as_deref() == Some(&ours),
    )
    .await;
    assert_eq!(leases.own().key, own);
}

#[tokio::test(start_paused = true)]
async fn a_config_change_is_handed_to_the_agent() {
    let source = MemorySource::new(Some(&config_text(NETWORK, "host-gw")));
    let shutdown = CancellationToken::new();
    let mut leases = start(&source, &shutdown).await;
    let vxlan = config_text(NETWORK, "vxlan");
    source.set_config(Some(&vxlan));
    let update = next(&mut leases).await;
    assert_eq!(update.config, Some(Some(vxlan)));
    assert_eq!(update.effect, Effect::Nothing);
    source.set_config(None);
    assert_eq!(next(&mut leases).await.config, Some(None));
}

#[tokio::test(start_paused = true)]
async fn an_outage_removes_nothing_and_its_changes_arrive_after() {
    let source = MemorySource::new(Some(&config_text(NETWORK, "host-gw")));
    let a = key("10.244.1.0/24");
    let b = key("10.244.2.0/24");
    source.put_lease(a, &attrs(2));
    source.put_lease(b, &attrs(3));
    let shutdown = CancellationToken::new();
    let mut leases = start(&source, &shutdown).await;

    source.set_down(true);
    source.delete_lease(a);
    source.put_lease(key("10.244.30.0/24"), &attrs(4));
    // While down: no update at all, the table as it was.
    let quiet = tokio::time::timeout(Duration::from_secs(60), leases.next()).await;
    assert!(quiet.is_err(), "an outage is no update: {quiet:?}");
    assert_eq!(leases.table().len(), 2);

    source.set_down(false);
    let got = drive_until(&mut leases, "the outage's changes", |l, _| {
        l.table().len() == 2 && l.table().get(&a).is_none()
    })
    .await;
    let changes: Vec<&Change> = got
        .iter()
        .flat_map(|u| match &u.effect {
            Effect::Peers(c) => c.iter().collect(),
            _ => Vec::new(),
        })
        .collect();
    assert!(
        changes
            .iter()
            .all(|c| !matches!(c, Change::Removed(p) if p.key == b)),
        "the healthy peer was never removed: {changes:?}"
    );
    assert_eq!(leases.table().get(&b), Some(&attrs(3)));
}

#[tokio::test(start_paused = true)]
async fn a_compaction_while_cut_off_resyncs_the_table() {
    let source = MemorySource::new(Some(&config_text(NETWORK, "host-gw")));
    let a = key("10.244.1.0/24");
    source.put_lease(a, &attrs(2));
    let shutdown = CancellationToken::new();
    let mut leases = start(&source, &shutdown).await;
    source.set_down(true);
    source.delete_lease(a);
    source.put_lease(key("10.244.4.0/24"), &attrs(4));
    source.compact();
    source.set_down(false);
    let got = drive_until(&mut leases, "the resync", |l, _| {
        l.table().get(&a).is_none() && l.table().len() == 1
    })
    .await;
    assert!(got.iter().any(|u| u.effect == Effect::Full), "{got:?}");
    assert_eq!(source.value(leases.own().key), Some(attrs(1).to_json()));
}

#[tokio::test(start_paused = true)]
async fn a_lease_expired_during_an_outage_is_reacquired_when_the_source_returns() {
    let source = MemorySource::new(Some(&config_text(NETWORK, "host-gw")));
    let shutdown = CancellationToken::new();
    let mut leases = start(&source, &shutdown).await;
    let own = leases.own().key;
    source.set_down(true);
    source.expire(leases.own().lease_id);
    // The re-acquire retries while the source is down, without blocking the lease half.
    drive_until(&mut leases, "re-acquire attempts", |_, _| {
        source.calls("reacquire") >= 3
    })
    .await;
    assert!(leases.reacquiring());
    source.set_down(false);
    drive_until(&mut leases, "re-acquired", |l, _| !l.reacquiring()).await;
    assert_eq!(leases.own().key, own, "the same subnet, still free");
    assert_eq!(source.value(own), Some(attrs(1).to_json()));
    assert_eq!(source.lease_id(own), Some(leases.own().lease_id));
}

#[tokio::test(start_paused = true)]
async fn a_republish_waits_for_the_source_and_lands_on_the_same_subnet() {
    let source = MemorySource::new(Some(&config_text(NETWORK, "host-gw")));
    let shutdown = CancellationToken::new();
    let mut leases = start(&source, &shutdown).await;
    let own = leases.own().key;
    let switched = LeaseAttrs {
        backend_type: "vxlan".into(),
        ..attrs(1)
    };
    source.set_down(true);
    leases.republish(conf("vxlan"), switched.clone());
    assert_eq!(leases.attrs(), &switched, "what we publish from now on");
    drive_until(&mut leases, "re-publish attempts", |_, _| {
        source.calls("acquire") >= 3
    })
    .await;
    source.set_down(false);
    drive_until(&mut leases, "re-published", |l, _| !l.republishing()).await;
    assert_eq!(leases.own().key, own);
    assert_eq!(source.value(own), Some(switched.to_json()));
}

/// Shutdown ends `next` at once whatever the lease half waits for.
async fn shuts_down_promptly(leases: &mut Leases<MemorySource>, shutdown: &CancellationToken) {
    shutdown.cancel();
    let end = tokio::time::timeout(Duration::from_millis(100), leases.next()).await;
    assert_eq!(end.expect("next returns at once after shutdown"), None);
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_idle() {
    let source = MemorySource::new(Some(&config_text(NETWORK, "host-gw")));
    let shutdown = CancellationToken::new();
    let mut leases = start(&source, &shutdown).await;
    shuts_down_promptly(&mut leases, &shutdown).await;
    assert!(source.value(leases.own().key).is_some(), "the lease stays");
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_reacquiring_against_a_dead_source() {
    let source = MemorySource::new(Some(&config_text(NETWORK, "host-gw")));
    let shutdown = CancellationToken::new();
    let mut leases = start(&source, &shutdown).await;
    source.set_down(true);
    source.expire(leases.own().lease_id);
    drive_until(&mut leases, "re-acquiring", |l, _| l.reacquiring()).await;
    shuts_down_promptly(&mut leases, &shutdown).await;
    let calls = source.calls("reacquire");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        source.calls("reacquire"),
        calls,
        "no attempt after shutdown"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_writing_back_against_a_dead_source() {
    let source = MemorySource::new(Some(&config_text(NETWORK, "host-gw")));
    let shutdown = CancellationToken::new();
    let mut leases = start(&source, &shutdown).await;
    let own = leases.own().key;
    source.set_writes_fail(true);
    source.put_lease(own, &attrs(5));
    // The write-back fails while the source refuses writes.
    drive_until(&mut leases, "write-back attempts", |_, _| {
        source.calls("reassert") >= 2
    })
    .await;
    shuts_down_promptly(&mut leases, &shutdown).await;
    let calls = source.calls("reassert");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(source.calls("reassert"), calls, "no attempt after shutdown");
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_republishing_against_a_dead_source() {
    let source = MemorySource::new(Some(&config_text(NETWORK, "host-gw")));
    let shutdown = CancellationToken::new();
    let mut leases = start(&source, &shutdown).await;
    source.set_down(true);
    leases.republish(conf("vxlan"), attrs(1));
    drive_until(&mut leases, "re-publish attempts", |_, _| {
        source.calls("acquire") >= 3
    })
    .await;
    shuts_down_promptly(&mut leases, &shutdown).await;
    let calls = source.calls("acquire");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(source.calls("acquire"), calls, "no attempt after shutdown");
}
