//! Node objects as a kubelet and the controller manager leave them: labels, addresses,
//! capacity, conditions, node info, images and managed fields, so that a client sees a Node
//! of realistic size (several KiB) and shape, not a skeleton.
use std::net::Ipv4Addr;

use serde_json::{Value, json};

/// What a test says about a Node it creates.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    /// `spec.podCIDRs` (the first also as `spec.podCIDR`); empty: not assigned yet.
    pub pod_cidrs: Vec<String>,
    /// The InternalIP address.
    pub internal_ip: Option<Ipv4Addr>,
    /// Annotations set at creation (e.g. another node's flannel annotations).
    pub annotations: Vec<(String, String)>,
}

impl NodeSpec {
    pub fn new(name: &str) -> Self {
        NodeSpec {
            name: name.to_string(),
            pod_cidrs: Vec::new(),
            internal_ip: None,
            annotations: Vec::new(),
        }
    }

    pub fn pod_cidr(mut self, cidr: &str) -> Self {
        self.pod_cidrs.push(cidr.to_string());
        self
    }

    pub fn internal_ip(mut self, ip: Ipv4Addr) -> Self {
        self.internal_ip = Some(ip);
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.to_string(), value.to_string()));
        self
    }
}

const CREATED: &str = "2026-01-01T00:00:00Z";

/// The Node's JSON (without uid and resourceVersion, which the store sets).
pub fn node_json(spec: &NodeSpec) -> Value {
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        "node.alpha.kubernetes.io/ttl".into(),
        Value::String("0".into()),
    );
    annotations.insert(
        "volumes.kubernetes.io/controller-managed-attach-detach".into(),
        Value::String("true".into()),
    );
    for (k, v) in &spec.annotations {
        annotations.insert(k.clone(), Value::String(v.clone()));
    }
    let mut node_spec = serde_json::Map::new();
    if let Some(first) = spec.pod_cidrs.first() {
        node_spec.insert("podCIDR".into(), json!(first));
        node_spec.insert("podCIDRs".into(), json!(spec.pod_cidrs));
    }
    let mut addresses = vec![json!({"type": "Hostname", "address": spec.name})];
    if let Some(ip) = spec.internal_ip {
        addresses.insert(0, json!({"type": "InternalIP", "address": ip.to_string()}));
    }
    let images: Vec<Value> = (0..12)
        .map(|i| {
            json!({
                "names": [format!("registry.k8s.io/image-{i}@sha256:{:064x}", i),
                          format!("registry.k8s.io/image-{i}:v1.{i}.0")],
                "sizeBytes": 10_000_000 + i * 1_000
            })
        })
        .collect();
    let condition = |t: &str, status: &str, reason: &str, message: &str| {
        json!({"type": t, "status": status, "lastHeartbeatTime": CREATED,
               "lastTransitionTime": CREATED, "reason": reason, "message": message})
    };
    json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": spec.name,
            "creationTimestamp": CREATED,
            "labels": {
                "beta.kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": spec.name,
                "kubernetes.io/os": "linux"
            },
            "annotations": annotations,
            "managedFields": [{
                "manager": "kubelet",
                "operation": "Update",
                "apiVersion": "v1",
                "time": CREATED,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:annotations": {".": {},
                    "f:volumes.kubernetes.io/controller-managed-attach-detach": {}},
                    "f:labels": {".": {}, "f:kubernetes.io/hostname": {}}},
                    "f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {
                        ".": {}, "f:lastHeartbeatTime": {}, "f:status": {}, "f:type": {}}}}}
            }]
        },
        "spec": node_spec,
        "status": {
            "capacity": {"cpu": "2", "ephemeral-storage": "102350Mi", "hugepages-2Mi": "0",
                         "memory": "4015476Ki", "pods": "110"},
            "allocatable": {"cpu": "2", "ephemeral-storage": "94324035953", "hugepages-2Mi": "0",
                            "memory": "3913076Ki", "pods": "110"},
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory",
                          "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure",
                          "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID",
                          "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status")
            ],
            "addresses": addresses,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": format!("{:032x}", spec.name.len()),
                "systemUUID": "00000000-0000-0000-0000-000000000000",
                "bootID": "00000000-0000-0000-0000-000000000001",
                "kernelVersion": "6.1.0-28-amd64",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.7.24",
                "kubeletVersion": "v1.32.0",
                "kubeProxyVersion": "v1.32.0",
                "operatingSystem": "linux",
                "architecture": "amd64"
            },
            "images": images
        }
    })
}
