//! The three patch types the API server accepts on Nodes, applied to the stored JSON.
//!
//! JSON Patch (RFC 6902) and JSON merge patch (RFC 7386) come from the `json-patch` crate. No
//! maintained crate applies Kubernetes' strategic merge patch, so it is written here, for the
//! Node type only: maps merge recursively and `null` deletes a key, as in a merge patch; the
//! lists with a patch merge key in the Node schema (`status.conditions` and `status.addresses`
//! by `type`, `spec.taints` by `key`, `metadata.ownerReferences` by `uid`) merge item by item;
//! every other list is replaced. The directive `$patch` (`replace`, `merge`, `delete`) works on
//! maps and list items and `$setElementOrder/<list>` is accepted; any other `$` key is refused,
//! as the real server refuses what it does not know.
use serde_json::{Map, Value};

/// The media types of a PATCH request.
pub const JSON_PATCH: &str = "application/json-patch+json";
pub const MERGE_PATCH: &str = "application/merge-patch+json";
pub const STRATEGIC_MERGE_PATCH: &str = "application/strategic-merge-patch+json";
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// Why a patch was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchError {
    /// The Content-Type is not a patch type this server applies: 415.
    UnsupportedMediaType(String),
    /// The body does not parse as that patch type: 400.
    BadRequest(String),
    /// The patch parses but cannot be applied (a failed `test`, a path that is not there, a
    /// bad directive): 422.
    Invalid(String),
}

/// Applies `body` of media type `content_type` to `doc`.
pub fn apply(doc: &mut Value, content_type: &str, body: &[u8]) -> Result<(), PatchError> {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        JSON_PATCH => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| PatchError::BadRequest(format!("couldn't get patch: {e}")))?;
            json_patch::patch(doc, &patch).map_err(|e| PatchError::Invalid(e.to_string()))
        }
        MERGE_PATCH => {
            let patch = parse_object(body)?;
            json_patch::merge(doc, &patch);
            Ok(())
        }
        STRATEGIC_MERGE_PATCH => {
            let patch = parse_object(body)?;
            strategic_merge(doc, &patch, "")
        }
        APPLY_PATCH => Err(PatchError::UnsupportedMediaType(format!(
            "{APPLY_PATCH} (server-side apply) is not served by this test API server"
        ))),
        other => Err(PatchError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format ({other:?}) - accepted media \
             types include: {JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}, {STRATEGIC_MERGE_PATCH}"
        ))),
    }
}

fn parse_object(body: &[u8]) -> Result<Value, PatchError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| PatchError::BadRequest(format!("couldn't get patch: {e}")))?;
    if !v.is_object() {
        return Err(PatchError::BadRequest(
            "couldn't get patch: the patch is not a JSON object".to_string(),
        ));
    }
    Ok(v)
}

/// The patch merge key of the list at `path` in a Node, if it has one.
fn merge_key(path: &str) -> Option<&'static str> {
    match path {
        "status.conditions" | "status.addresses" => Some("type"),
        "spec.taints" => Some("key"),
        "metadata.ownerReferences" => Some("uid"),
        _ => None,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Merges the map `patch` into `doc` (the Node, or a map inside it at `path`).
fn strategic_merge(doc: &mut Value, patch: &Value, path: &str) -> Result<(), PatchError> {
    let Some(patch) = patch.as_object() else {
        *doc = patch.clone();
        return Ok(());
    };
    match patch.get("$patch").map(|v| v.as_str()) {
        None | Some(Some("merge")) => {}
        Some(Some("replace")) => {
            let mut replaced = patch.clone();
            replaced.remove("$patch");
            *doc = Value::Object(replaced);
            return Ok(());
        }
        Some(Some("delete")) => {
            *doc = Value::Null;
            return Ok(());
        }
        Some(other) => {
            return Err(PatchError::Invalid(format!(
                "unknown patch type {other:?} in directive $patch at {path:?}"
            )));
        }
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Some(target) = doc.as_object_mut() else {
        return Ok(());
    };
    for (key, value) in patch {
        if key == "$patch" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if key.starts_with('$') {
            return Err(PatchError::Invalid(format!(
                "unknown or unsupported directive {key:?} at {path:?}"
            )));
        }
        let field = join(path, key);
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(_) => {
                let slot = target.entry(key.clone()).or_insert(Value::Null);
                strategic_merge(slot, value, &field)?;
                if slot.is_null() {
                    target.remove(key);
                }
            }
            Value::Array(items) => match merge_key(&field) {
                Some(mk) => {
                    let slot = target
                        .entry(key.clone())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    merge_list(slot, items, mk, &field)?;
                }
                None => {
                    target.insert(key.clone(), value.clone());
                }
            },
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(())
}

/// Merges the list `items` into the list `doc` by the merge key `mk`.
fn merge_list(doc: &mut Value, items: &[Value], mk: &str, path: &str) -> Result<(), PatchError> {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let kept = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        *doc = Value::Array(kept);
        return Ok(());
    }
    if !doc.is_array() {
        *doc = Value::Array(Vec::new());
    }
    let Some(list) = doc.as_array_mut() else {
        return Ok(());
    };
    for item in items {
        let Some(key) = item.get(mk).filter(|k| !k.is_null()) else {
            return Err(PatchError::Invalid(format!(
                "map: {item} does not contain declared merge key: {mk} (in {path})"
            )));
        };
        let pos = list.iter().position(|e| e.get(mk) == Some(key));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                list.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut list[i], item, path)?,
            (None, false) => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, item, path)?;
                list.push(fresh);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;
    use serde_json::json;

    fn node() -> Value {
        json!({
            "metadata": {"name": "n1", "annotations": {"a": "1", "b": "2"}},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
            "status": {"conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady"},
                {"type": "MemoryPressure", "status": "False"}
            ]}
        })
    }

    #[test]
    fn strategic_merge_merges_conditions_by_type_and_maps_by_key() {
        let mut n = node();
        let patch = json!({
            "metadata": {"annotations": {"b": null, "c": "3"}},
            "status": {"conditions": [
                {"type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp"},
                {"type": "Ready", "reason": "Again"}
            ]}
        });
        apply(&mut n, STRATEGIC_MERGE_PATCH, patch.to_string().as_bytes()).unwrap();
        assert_eq!(n["metadata"]["annotations"], json!({"a": "1", "c": "3"}));
        let conds = n["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 3);
        assert_eq!(conds[0]["reason"], "Again");
        assert_eq!(conds[0]["status"], "True");
        assert_eq!(conds[2]["reason"], "FlannelIsUp");
    }

    #[test]
    fn a_merge_patch_replaces_lists_and_a_list_item_without_its_merge_key_is_refused() {
        let mut n = node();
        let patch = json!({"status": {"conditions": [{"type": "X", "status": "True"}]}});
        apply(&mut n, MERGE_PATCH, patch.to_string().as_bytes()).unwrap();
        assert_eq!(n["status"]["conditions"].as_array().unwrap().len(), 1);

        let mut n = node();
        let bad = json!({"status": {"conditions": [{"status": "True"}]}});
        let err = apply(&mut n, STRATEGIC_MERGE_PATCH, bad.to_string().as_bytes()).unwrap_err();
        assert!(matches!(err, PatchError::Invalid(ref m) if m.contains("merge key: type")));
        let unknown = json!({"metadata": {"$retainKeys": ["a"]}});
        assert!(matches!(
            apply(
                &mut n,
                STRATEGIC_MERGE_PATCH,
                unknown.to_string().as_bytes()
            ),
            Err(PatchError::Invalid(_))
        ));
    }

    #[test]
    fn json_patch_test_failures_are_invalid_and_unknown_types_unsupported() {
        let mut n = node();
        let ok = json!([{"op": "replace", "path": "/metadata/annotations/a", "value": "9"}]);
        apply(&mut n, JSON_PATCH, ok.to_string().as_bytes()).unwrap();
        assert_eq!(n["metadata"]["annotations"]["a"], "9");
        let failing = json!([{"op": "test", "path": "/metadata/annotations/a", "value": "1"}]);
        assert!(matches!(
            apply(&mut n, JSON_PATCH, failing.to_string().as_bytes()),
            Err(PatchError::Invalid(_))
        ));
        assert!(matches!(
            apply(&mut n, "application/json", b"{}"),
            Err(PatchError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            apply(&mut n, MERGE_PATCH, b"{not json"),
            Err(PatchError::BadRequest(_))
        ));
    }

    #[test]
    fn patch_directives_replace_and_delete() {
        let mut n = node();
        let p = json!({"status": {"conditions": [
            {"type": "MemoryPressure", "$patch": "delete"}
        ]}, "metadata": {"annotations": {"$patch": "replace", "z": "1"}}});
        apply(&mut n, STRATEGIC_MERGE_PATCH, p.to_string().as_bytes()).unwrap();
        assert_eq!(n["status"]["conditions"].as_array().unwrap().len(), 1);
        assert_eq!(n["metadata"]["annotations"], json!({"z": "1"}));
    }
}
