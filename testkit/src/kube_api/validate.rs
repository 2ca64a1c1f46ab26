//! What the API server checks on a write to a Node, after a patch is applied: the rules of
//! the Node update strategies (the main resource keeps the old `status`, `nodes/status` keeps
//! the old `spec`), the object-meta rules (name, uid, resourceVersion preconditions,
//! annotation keys, values and size) and the podCIDR rule. Each refusal carries the HTTP code
//! and the message the real server gives.
use serde_json::Value;

/// A refused write: HTTP status, Status `reason` and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

fn invalid(name: &str, causes: &[String]) -> Refused {
    Refused {
        code: 422,
        reason: "Invalid",
        message: format!("Node {name:?} is invalid: {}", causes.join(", ")),
    }
}

/// Which resource a write came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Node,
    Status,
}

/// Checks `new` (the patched object) against `old` for a write through `target`, and applies
/// the strategy: returns the object to store.
pub fn update(old: &Value, mut new: Value, target: Target) -> Result<Value, Refused> {
    let name = old["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let new_name = new["metadata"]["name"].as_str().unwrap_or_default();
    if new_name != name {
        return Err(Refused {
            code: 400,
            reason: "BadRequest",
            message: format!(
                "the name of the object ({new_name}) does not match the name on the URL ({name})"
            ),
        });
    }
    // A resourceVersion in the request is a precondition.
    let old_rv = &old["metadata"]["resourceVersion"];
    let new_rv = &new["metadata"]["resourceVersion"];
    if !new_rv.is_null() && new_rv != old_rv {
        return Err(Refused {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on nodes \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again"
            ),
        });
    }
    match target {
        Target::Node => new["status"] = old["status"].clone(),
        Target::Status => new["spec"] = old["spec"].clone(),
    }
    let mut causes = Vec::new();
    if new["metadata"]["uid"] != old["metadata"]["uid"] {
        causes.push(format!(
            "metadata.uid: Invalid value: {}: field is immutable",
            new["metadata"]["uid"]
        ));
    }
    causes.extend(check_meta(&new["metadata"]));
    causes.extend(check_pod_cidrs(&old["spec"], &new["spec"]));
    if !causes.is_empty() {
        return Err(invalid(&name, &causes));
    }
    Ok(new)
}

/// Checks a Node to be created.
pub fn create(new: &Value) -> Result<(), Refused> {
    let name = new["metadata"]["name"].as_str().unwrap_or_default();
    let mut causes = check_meta(&new["metadata"]);
    if name.is_empty() {
        causes.push("metadata.name: Required value: name or generateName is required".into());
    } else if !is_dns_subdomain(name) {
        causes.push(format!(
            "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist \
             of lower case alphanumeric characters, '-' or '.', and must start and end with an \
             alphanumeric character"
        ));
    }
    causes.extend(check_pod_cidrs(&Value::Null, &new["spec"]));
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(name, &causes))
    }
}

const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

fn check_meta(meta: &Value) -> Vec<String> {
    let mut causes = Vec::new();
    match &meta["annotations"] {
        Value::Null => {}
        Value::Object(map) => {
            let mut total = 0;
            for (k, v) in map {
                total += k.len();
                match v {
                    Value::String(s) => total += s.len(),
                    other => causes.push(format!(
                        "metadata.annotations.{k}: Invalid value: {other}: must be a string"
                    )),
                }
                if !is_qualified_name(k) {
                    causes.push(format!(
                        "metadata.annotations: Invalid value: {k:?}: name part must consist of \
                         alphanumeric characters, '-', '_' or '.', and must start and end with \
                         an alphanumeric character"
                    ));
                }
            }
            if total > MAX_ANNOTATIONS_BYTES {
                causes.push(format!(
                    "metadata.annotations: Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes"
                ));
            }
        }
        other => causes.push(format!(
            "metadata.annotations: Invalid value: {other}: must be a map of strings"
        )),
    }
    causes
}

/// `spec.podCIDR(s)` may be set once (from empty to a valid value), never changed.
fn check_pod_cidrs(old: &Value, new: &Value) -> Vec<String> {
    let mut causes = Vec::new();
    let cidrs: Vec<&str> = new["podCIDRs"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for c in &cidrs {
        if c.parse::<ipnet::IpNet>().is_err() {
            causes.push(format!(
                "spec.podCIDRs: Invalid value: {c:?}: must be a valid CIDR"
            ));
        }
    }
    if let (Some(first), Some(single)) = (cidrs.first(), new["podCIDR"].as_str())
        && *first != single
    {
        causes.push(format!(
            "spec.podCIDRs: Invalid value: {cidrs:?}: first entry must match spec.podCIDR"
        ));
    }
    if cidrs.len() > 2 {
        causes.push("spec.podCIDRs: Too many: must have at most 2 items".into());
    }
    let old_cidrs = &old["podCIDRs"];
    let old_set = old_cidrs.as_array().is_some_and(|a| !a.is_empty());
    if old_set && old_cidrs != &new["podCIDRs"] {
        causes.push(
            "spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to \
             valid"
                .to_string(),
        );
    }
    causes
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A qualified name: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of alphanumerics, `-`, `_`, `.` that starts and ends alphanumeric.
fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if prefix.is_some_and(|p| !is_dns_subdomain(p)) {
        return false;
    }
    let bytes = name.as_bytes();
    !name.is_empty()
        && name.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;
    use serde_json::json;

    fn old() -> Value {
        json!({"metadata": {"name": "n1", "uid": "u1", "resourceVersion": "5",
                            "annotations": {"flannel.alpha.coreos.com/public-ip": "198.18.0.1"}},
               "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
               "status": {"conditions": []}})
    }

    #[test]
    fn the_main_resource_keeps_status_and_the_status_subresource_keeps_spec() {
        let mut new = old();
        new["status"]["conditions"] = json!([{"type": "X"}]);
        new["metadata"]["annotations"]["k"] = json!("v");
        let stored = update(&old(), new.clone(), Target::Node).unwrap();
        assert_eq!(stored["status"], old()["status"]);
        assert_eq!(stored["metadata"]["annotations"]["k"], "v");
        let stored = update(&old(), new, Target::Status).unwrap();
        assert_eq!(stored["status"]["conditions"][0]["type"], "X");
    }

    #[test]
    fn stale_resource_version_conflicts_and_bad_annotations_are_invalid() {
        let mut new = old();
        new["metadata"]["resourceVersion"] = json!("4");
        assert_eq!(update(&old(), new, Target::Node).unwrap_err().code, 409);
        let mut new = old();
        new["metadata"]["annotations"]["n"] = json!(1);
        let err = update(&old(), new, Target::Status).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message.contains("metadata.annotations.n"),
            "{}",
            err.message
        );
        let mut new = old();
        new["metadata"]["annotations"]["-bad-"] = json!("x");
        assert_eq!(update(&old(), new, Target::Status).unwrap_err().code, 422);
        let mut new = old();
        new["metadata"]["name"] = json!("other");
        assert_eq!(update(&old(), new, Target::Status).unwrap_err().code, 400);
    }

    #[test]
    fn pod_cidrs_are_set_once() {
        let mut new = old();
        new["spec"] = json!({"podCIDR": "10.244.9.0/24", "podCIDRs": ["10.244.9.0/24"]});
        let err = update(&old(), new, Target::Node).unwrap_err();
        assert!(
            err.message.contains("may not change podCIDR"),
            "{}",
            err.message
        );
        let mut fresh = old();
        fresh["spec"] = json!({});
        let mut new = fresh.clone();
        new["spec"] = json!({"podCIDR": "10.244.9.0/24", "podCIDRs": ["10.244.9.0/24"]});
        update(&fresh, new, Target::Node).unwrap();
        assert!(create(&json!({"metadata": {"name": "Bad_Name"}})).is_err());
        assert!(create(&json!({"metadata": {"name": "node-1.example"}})).is_ok());
    }
}
