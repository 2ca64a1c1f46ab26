//! vxlan's lease data: `BackendData` / `BackendV6Data` (`{"VNI":<n>,"VtepMAC":"<mac>"}`, the
//! same shape for both families) and the VTEP MACs in it.
use serde_json::Value;

use crate::plan::{Mac, fmt_mac};

/// A random locally administered unicast MAC (what flannel does in etcd mode).
pub(crate) fn random_mac() -> Mac {
    let mut mac = [0u8; 6];
    for b in &mut mac {
        *b = fastrand::u8(..);
    }
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// `BackendData` as flannel writes it: `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`.
pub fn backend_data(vni: u32, mac: &Mac) -> String {
    format!("{{\"VNI\":{vni},\"VtepMAC\":\"{}\"}}", fmt_mac(mac))
}

/// Reads a peer's vxlan `BackendData` (keys case-insensitive, as Go's encoding/json accepts).
pub fn parse_backend_data(text: &str) -> Result<(u32, Mac), String> {
    // Every reconcile reads every vxlan peer's BackendData: the exact text flannel and weft
    // write is read without building a JSON tree (5,000 peers: ~4 ms less per lease change).
    if let Some(parsed) = parse_canonical(text) {
        return Ok(parsed);
    }
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("BackendData {text:?} is not JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| format!("BackendData {text:?} is not an object"))?;
    let get = |key: &str| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    };
    let vni = get("VNI")
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| format!("BackendData.VNI missing or not a number in {text}"))?;
    let mac_text = get("VtepMAC")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("BackendData.VtepMAC missing or not a string in {text}"))?;
    let mac = parse_mac(mac_text)
        .ok_or_else(|| format!("BackendData.VtepMAC {mac_text:?} is not a MAC address"))?;
    Ok((vni, mac))
}

/// `{"VNI":<n>,"VtepMAC":"<mac>"}` exactly as [`backend_data`] writes it; None for any other
/// spelling (which the JSON path then reads).
pub(super) fn parse_canonical(text: &str) -> Option<(u32, Mac)> {
    let rest = text.strip_prefix("{\"VNI\":")?;
    let (vni, rest) = rest.split_once(",\"VtepMAC\":\"")?;
    let mac = rest.strip_suffix("\"}")?;
    // A JSON number without sign, fraction or leading zero.
    if vni.is_empty()
        || !vni.bytes().all(|b| b.is_ascii_digit())
        || (vni.len() > 1 && vni.starts_with('0'))
    {
        return None;
    }
    Some((vni.parse().ok()?, parse_mac(mac)?))
}

fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(mac)
}
