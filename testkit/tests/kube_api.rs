//! The test API server on its own, through kube-rs (a real client that holds it to the wire
//! format) on 127.0.0.1: authentication and RBAC answers, consistent paged lists, watches from a
//! resourceVersion with bookmarks and 410 after compaction, the patch types and their
//! refusals, stop and restart. No root needed.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use weft_testkit::kube_api::{FLANNEL_GRANTS, KubeApi, NodeSpec, Options};

fn server(opts: Options) -> KubeApi {
    KubeApi::start(opts).expect("start the test API server")
}

async fn client(api: &KubeApi, token: &str) -> kube::Client {
    let kc = Kubeconfig::from_yaml(&api.kubeconfig(token)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn code(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.message),
        other => panic!("not an API error: {other:?}"),
    }
}

fn nodes(api: &KubeApi, n: usize) {
    for i in 1..=n {
        api.create_node(&NodeSpec::new(&format!("node{i}")).pod_cidr(&format!("10.244.{i}.0/24")))
            .unwrap();
    }
}

#[tokio::test]
async fn tokens_and_rbac_are_answered_as_the_real_server_does() {
    let api = server(Options::default());
    nodes(&api, 1);
    let flannel = api.add_token("system:serviceaccount:kube-flannel:flannel", FLANNEL_GRANTS);
    let nodes_api: Api<Node> = Api::all(client(&api, &flannel).await);
    assert_eq!(
        nodes_api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // The main resource is not granted, nodes/status is.
    let patch = Patch::Strategic(json!({"metadata": {"annotations": {"a": "b"}}}));
    let (c, m) = code(
        nodes_api
            .patch("node1", &PatchParams::default(), &patch)
            .await
            .unwrap_err(),
    );
    assert_eq!(c, 403);
    assert_eq!(
        m,
        "nodes \"node1\" is forbidden: User \"system:serviceaccount:kube-flannel:flannel\" cannot \
         patch resource \"nodes\" in API group \"\" at the cluster scope"
    );
    nodes_api
        .patch_status("node1", &PatchParams::default(), &patch)
        .await
        .unwrap();
    assert_eq!(
        api.node("node1").unwrap()["metadata"]["annotations"]["a"],
        "b"
    );

    let bad: Api<Node> = Api::all(client(&api, "not-a-token").await);
    assert_eq!(
        code(bad.list(&ListParams::default()).await.unwrap_err()).0,
        401
    );
    api.remove_token(&flannel);
    assert_eq!(code(nodes_api.get("node1").await.unwrap_err()).0, 401);
}

#[tokio::test]
async fn paged_lists_are_consistent_and_expire_after_compaction() {
    let api = server(Options::default());
    nodes(&api, 5);
    let nodes_api: Api<Node> = Api::all(client(&api, api.admin_token()).await);
    let first = nodes_api
        .list(&ListParams::default().limit(2))
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    let rv = first.metadata.resource_version.clone().unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    // Written between pages: not in this list, which is a snapshot.
    api.create_node(&NodeSpec::new("node9").pod_cidr("10.244.9.0/24"))
        .unwrap();
    api.delete_node("node5").unwrap();
    let mut names: Vec<String> = first
        .items
        .iter()
        .map(|n| n.metadata.name.clone().unwrap())
        .collect();
    let mut cont = Some(token);
    while let Some(c) = cont {
        let page = nodes_api
            .list(&ListParams::default().limit(2).continue_token(&c))
            .await
            .unwrap();
        assert_eq!(page.metadata.resource_version.as_deref(), Some(rv.as_str()));
        names.extend(page.items.iter().map(|n| n.metadata.name.clone().unwrap()));
        cont = page.metadata.continue_.filter(|c| !c.is_empty());
    }
    assert_eq!(names, ["node1", "node2", "node3", "node4", "node5"]);

    let again = nodes_api
        .list(&ListParams::default().limit(2))
        .await
        .unwrap();
    // A write after the list's resourceVersion, then a compaction up to it: the list's
    // snapshot is gone (one at the current resourceVersion would still be there, as in etcd).
    api.create_node(&NodeSpec::new("node8").pod_cidr("10.244.8.0/24"))
        .unwrap();
    api.compact();
    let token = again.metadata.continue_.unwrap();
    let (c, _) = code(
        nodes_api
            .list(&ListParams::default().limit(2).continue_token(&token))
            .await
            .unwrap_err(),
    );
    assert_eq!(c, 410);
    // A name field selector, and a label selector this server does not serve.
    let one = nodes_api
        .list(&ListParams::default().fields("metadata.name=node9"))
        .await
        .unwrap();
    assert_eq!(one.items.len(), 1);
    assert_eq!(
        code(
            nodes_api
                .list(&ListParams::default().labels("a=b"))
                .await
                .unwrap_err()
        )
        .0,
        400
    );
}

#[tokio::test]
async fn watches_resume_from_a_resource_version_send_bookmarks_and_expire() {
    let api = server(Options {
        bookmark_interval: Duration::from_millis(200),
        ..Options::default()
    });
    nodes(&api, 2);
    let nodes_api: Api<Node> = Api::all(client(&api, api.admin_token()).await);
    let listed = nodes_api.list(&ListParams::default()).await.unwrap();
    let rv = listed.metadata.resource_version.unwrap();
    api.create_node(&NodeSpec::new("node3").pod_cidr("10.244.3.0/24"))
        .unwrap();
    api.delete_node("node1").unwrap();
    let mut stream = nodes_api
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    let next = async |s: &mut _| -> WatchEvent<Node> {
        let s: &mut futures::stream::BoxStream<'_, kube::Result<WatchEvent<Node>>> = s;
        tokio::time::timeout(Duration::from_secs(10), s.try_next())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream goes on")
    };
    assert!(
        matches!(next(&mut stream).await, WatchEvent::Added(n) if n.metadata.name.as_deref() == Some("node3"))
    );
    assert!(
        matches!(next(&mut stream).await, WatchEvent::Deleted(n) if n.metadata.name.as_deref() == Some("node1"))
    );
    api.modify_node("node2", |n| n["metadata"]["annotations"]["x"] = json!("y"))
        .unwrap();
    let modified = next(&mut stream).await;
    assert!(
        matches!(&modified, WatchEvent::Modified(n) if n.metadata.name.as_deref() == Some("node2"))
    );
    let current = api.resource_version().to_string();
    loop {
        if let WatchEvent::Bookmark(b) = next(&mut stream).await {
            assert_eq!(b.metadata.resource_version, current);
            break;
        }
    }
    // From a compacted resourceVersion: an ERROR event with 410 Expired, then the end.
    api.create_node(&NodeSpec::new("node4").pod_cidr("10.244.4.0/24"))
        .unwrap();
    api.compact();
    let mut old = nodes_api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match next(&mut old).await {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn patch_types_no_op_patches_and_preconditions() {
    let api = server(Options::default());
    nodes(&api, 1);
    let nodes_api: Api<Node> = Api::all(client(&api, api.admin_token()).await);
    let cond = json!({"status": {"conditions": [{"type": "NetworkUnavailable", "status": "False",
        "reason": "FlannelIsUp", "message": "Flannel is running on this node"}]}});
    let after = nodes_api
        .patch_status(
            "node1",
            &PatchParams::default(),
            &Patch::Strategic(cond.clone()),
        )
        .await
        .unwrap();
    let conds = after.status.unwrap().conditions.unwrap();
    assert_eq!(conds.len(), 5, "merged by type into the kubelet's four");
    let rv = api.resource_version();
    nodes_api
        .patch_status("node1", &PatchParams::default(), &Patch::Strategic(cond))
        .await
        .unwrap();
    assert_eq!(
        api.resource_version(),
        rv,
        "a patch that changes nothing writes nothing"
    );

    let merge = Patch::Merge(json!({"metadata": {"annotations": {"k": "v"}}}));
    nodes_api
        .patch_status("node1", &PatchParams::default(), &merge)
        .await
        .unwrap();
    let stale =
        Patch::Merge(json!({"metadata": {"resourceVersion": "1", "annotations": {"k": "w"}}}));
    assert_eq!(
        code(
            nodes_api
                .patch("node1", &PatchParams::default(), &stale)
                .await
                .unwrap_err()
        )
        .0,
        409
    );
    let bad = Patch::Merge(json!({"metadata": {"annotations": {"k": 1}}}));
    let (c, m) = code(
        nodes_api
            .patch("node1", &PatchParams::default(), &bad)
            .await
            .unwrap_err(),
    );
    assert_eq!(c, 422, "{m}");
    let apply =
        Patch::Apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1"}}));
    assert_eq!(
        code(
            nodes_api
                .patch("node1", &PatchParams::apply("t"), &apply)
                .await
                .unwrap_err()
        )
        .0,
        415
    );
    // Spec through nodes/status is ignored, as the status strategy does.
    let spec = Patch::Merge(json!({"spec": {"unschedulable": true}}));
    let n = nodes_api
        .patch_status("node1", &PatchParams::default(), &spec)
        .await
        .unwrap();
    assert_eq!(n.spec.unwrap().unschedulable, None);
    assert_eq!(code(nodes_api.get("nope").await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn a_stopped_server_ends_watches_and_a_restarted_one_keeps_its_objects() {
    let mut api = server(Options::default());
    nodes(&api, 2);
    let nodes_api: Api<Node> = Api::all(client(&api, api.admin_token()).await);
    let rv = api.resource_version().to_string();
    let mut stream = nodes_api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    api.stop();
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the watch ends");
    assert!(!matches!(end, Some(Ok(_))), "no event after stop: {end:?}");
    assert!(nodes_api.list(&ListParams::default()).await.is_err());
    api.restart().unwrap();
    assert_eq!(
        nodes_api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
}
