//! Lease values (`LeaseAttrs`) as flannel stores them in etcd (docs/flannel-compat.md §3.2).
//!
//! Reading is lenient like Go's `encoding/json` (case-insensitive keys, unknown keys ignored);
//! writing gives flannel's bytes exactly:
//! `{"PublicIP":"10.0.0.5","PublicIPv6":null,"BackendType":"host-gw"}`.
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde_json::value::RawValue;

use crate::LeaseError;
use crate::json::{Fields, Json, RawObject, compact_go, write_go_string};

/// The JSON value of a `<prefix>/subnets/<key>` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAttrs {
    pub public_ip: Ipv4Addr,
    pub public_ipv6: Option<Ipv6Addr>,
    /// `BackendType`; empty when absent.
    pub backend_type: String,
    /// `BackendData`, kept as compact JSON text exactly as received; None when absent/null.
    pub backend_data: Option<String>,
    /// `BackendV6Data`, same rules.
    pub backend_v6_data: Option<String>,
}

/// vxlan's `BackendData`: `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanData {
    pub vni: u32,
    pub vtep_mac: [u8; 6],
}

const LEASE_FIELDS: &[&str] = &[
    "PublicIP",
    "PublicIPv6",
    "BackendType",
    "BackendData",
    "BackendV6Data",
];

const VXLAN_DATA_FIELDS: &[&str] = &["VNI", "VtepMAC"];

impl LeaseAttrs {
    /// A host-gw lease: `{"PublicIP":"…","PublicIPv6":null,"BackendType":"host-gw"}`.
    pub fn host_gw(public_ip: Ipv4Addr) -> Self {
        Self::plain(public_ip, "host-gw")
    }

    /// An ipip lease (no BackendData, as flannel writes it).
    pub fn ipip(public_ip: Ipv4Addr) -> Self {
        Self::plain(public_ip, "ipip")
    }

    /// A vxlan lease carrying the VTEP's VNI and MAC in `BackendData`.
    pub fn vxlan(public_ip: Ipv4Addr, data: VxlanData) -> Self {
        LeaseAttrs {
            backend_data: Some(data.to_json()),
            ..Self::plain(public_ip, "vxlan")
        }
    }

    fn plain(public_ip: Ipv4Addr, backend_type: &str) -> Self {
        LeaseAttrs {
            public_ip,
            public_ipv6: None,
            backend_type: backend_type.to_string(),
            backend_data: None,
            backend_v6_data: None,
        }
    }

    /// Parses a lease value leniently, as Go's encoding/json does (case-insensitive keys).
    pub fn parse(value: &[u8]) -> Result<Self, LeaseError> {
        let RawObject(entries) = RawObject::parse_bytes(value).map_err(|e| LeaseError::Value {
            reason: format!(
                "not a JSON object: {e} (value {:?})",
                crate::excerpt(&String::from_utf8_lossy(value), 200)
            ),
        })?;
        let fields = Fields::collect(&entries, LEASE_FIELDS);

        // flannel's IPv4 type parses whatever it is given, `null` included, so a missing
        // PublicIP is 0.0.0.0 but a `null` one is an error.
        let public_ip = match fields.get("PublicIP") {
            None => Ipv4Addr::UNSPECIFIED,
            Some(raw) => match decode(raw, "PublicIP")? {
                Json::String(s) => s
                    .parse()
                    .map_err(|_| value_error(format!("PublicIP {s:?} is not an IPv4 address")))?,
                other => {
                    return Err(value_error(format!(
                        "PublicIP must be an IPv4 address string, found {}",
                        other.describe()
                    )));
                }
            },
        };
        let public_ipv6 = match fields.get("PublicIPv6") {
            None => None,
            Some(raw) => match decode(raw, "PublicIPv6")? {
                Json::Null => None,
                Json::String(s) => Some(s.parse().map_err(|_| {
                    value_error(format!("PublicIPv6 {s:?} is not an IPv6 address"))
                })?),
                other => {
                    return Err(value_error(format!(
                        "PublicIPv6 must be an IPv6 address string or null, found {}",
                        other.describe()
                    )));
                }
            },
        };
        let backend_type = match fields.get("BackendType") {
            None => String::new(),
            Some(raw) => match decode(raw, "BackendType")? {
                Json::Null => String::new(),
                Json::String(s) => s,
                other => {
                    return Err(value_error(format!(
                        "BackendType must be a string, found {}",
                        other.describe()
                    )));
                }
            },
        };
        Ok(LeaseAttrs {
            public_ip,
            public_ipv6,
            backend_type,
            backend_data: raw_data(fields.get("BackendData").map(Box::as_ref)),
            backend_v6_data: raw_data(fields.get("BackendV6Data").map(Box::as_ref)),
        })
    }

    /// The value flannel would write, byte for byte.
    ///
    /// `backend_data`/`backend_v6_data` must hold valid JSON (as [`LeaseAttrs::parse`] and the
    /// constructors guarantee); they are written compacted, as Go writes a `json.RawMessage`.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(128);
        out.push_str("{\"PublicIP\":\"");
        out.push_str(&self.public_ip.to_string());
        out.push_str("\",\"PublicIPv6\":");
        match self.public_ipv6 {
            Some(ip) => {
                out.push('"');
                out.push_str(&ip.to_string());
                out.push('"');
            }
            None => out.push_str("null"),
        }
        if !self.backend_type.is_empty() {
            out.push_str(",\"BackendType\":");
            write_go_string(&mut out, &self.backend_type);
        }
        for (name, data) in [
            ("BackendData", &self.backend_data),
            ("BackendV6Data", &self.backend_v6_data),
        ] {
            if let Some(data) = data.as_deref().filter(|d| !d.is_empty()) {
                out.push_str(",\"");
                out.push_str(name);
                out.push_str("\":");
                out.push_str(&compact_go(data));
            }
        }
        out.push('}');
        out
    }

    /// The vxlan `BackendData`, if there is one. A malformed one is an error naming the field.
    pub fn vxlan_data(&self) -> Result<Option<VxlanData>, LeaseError> {
        self.backend_data
            .as_deref()
            .map(|d| VxlanData::parse(d, "BackendData"))
            .transpose()
    }

    /// The vxlan `BackendV6Data` (the IPv6 VTEP of a dual-stack node), if there is one.
    pub fn vxlan_v6_data(&self) -> Result<Option<VxlanData>, LeaseError> {
        self.backend_v6_data
            .as_deref()
            .map(|d| VxlanData::parse(d, "BackendV6Data"))
            .transpose()
    }
}

impl VxlanData {
    /// `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}` (lower-case MAC), as flannel writes it.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"VNI\":{},\"VtepMAC\":\"{}\"}}",
            self.vni,
            format_mac(&self.vtep_mac)
        )
    }

    /// Parses a vxlan `BackendData` text (keys case-insensitive, MAC in any case, `:` or `-`
    /// separated or Cisco `aabb.ccdd.eeff` form, as Go's `net.ParseMAC`). `field` names the
    /// lease field in errors. A missing VNI is 0, as in Go; a missing VtepMAC is an error.
    pub fn parse(text: &str, field: &str) -> Result<VxlanData, LeaseError> {
        let RawObject(entries) = RawObject::parse(text)
            .map_err(|e| value_error(format!("{field} {text}: not a vxlan JSON object: {e}")))?;
        let fields = Fields::collect(&entries, VXLAN_DATA_FIELDS);
        let vni = match fields.get("VNI") {
            None => 0,
            Some(raw) => match decode(raw, field)? {
                Json::Null => 0,
                Json::Number(n) => n
                    .as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| value_error(format!("{field}.VNI {n} is not a valid VNI")))?,
                other => {
                    return Err(value_error(format!(
                        "{field}.VNI must be a number, found {}",
                        other.describe()
                    )));
                }
            },
        };
        let vtep_mac = match fields
            .get("VtepMAC")
            .map(|raw| decode(raw, field))
            .transpose()?
        {
            Some(Json::String(s)) => parse_mac(&s).ok_or_else(|| {
                value_error(format!("{field}.VtepMAC {s:?} is not a MAC address"))
            })?,
            None | Some(Json::Null) => {
                return Err(value_error(format!("{field}.VtepMAC is missing in {text}")));
            }
            Some(other) => {
                return Err(value_error(format!(
                    "{field}.VtepMAC must be a string, found {}",
                    other.describe()
                )));
            }
        };
        Ok(VxlanData { vni, vtep_mac })
    }

    /// The VTEP MAC as `aa:bb:cc:dd:ee:ff`.
    pub fn vtep_mac_string(&self) -> String {
        format_mac(&self.vtep_mac)
    }
}

impl fmt::Display for VxlanData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vni {} vtep {}", self.vni, format_mac(&self.vtep_mac))
    }
}

impl FromStr for VxlanData {
    type Err = LeaseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VxlanData::parse(s, "BackendData")
    }
}

fn value_error(reason: String) -> LeaseError {
    LeaseError::Value {
        reason: crate::excerpt(&reason, 300),
    }
}

fn decode(raw: &RawValue, field: &str) -> Result<Json, LeaseError> {
    Json::parse(raw.get()).map_err(|e| value_error(format!("{field}: {e}")))
}

fn raw_data(raw: Option<&RawValue>) -> Option<String> {
    let raw = raw?.get();
    if raw == "null" {
        None
    } else {
        Some(compact_go(raw))
    }
}

/// `aa:bb:cc:dd:ee:ff`, lower case.
pub fn format_mac(mac: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

/// A 6-byte MAC in the forms Go's `net.ParseMAC` accepts: `aa:bb:cc:dd:ee:ff`,
/// `aa-bb-cc-dd-ee-ff`, `aabb.ccdd.eeff` (hex digits of either case).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let hex_byte = |h: &str| -> Option<u8> {
        if h.len() == 2 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
            u8::from_str_radix(h, 16).ok()
        } else {
            None
        }
    };
    let mut mac = [0u8; 6];
    if s.len() == 17 {
        let sep = s.as_bytes()[2];
        if sep != b':' && sep != b'-' {
            return None;
        }
        let parts: Vec<&str> = s.split(sep as char).collect();
        if parts.len() != 6 {
            return None;
        }
        for (byte, part) in mac.iter_mut().zip(parts) {
            *byte = hex_byte(part)?;
        }
        Some(mac)
    } else if s.len() == 14 {
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() != 3 {
            return None;
        }
        for (i, part) in parts.iter().enumerate() {
            if part.len() != 4 {
                return None;
            }
            mac[2 * i] = hex_byte(part.get(..2)?)?;
            mac[2 * i + 1] = hex_byte(part.get(2..)?)?;
        }
        Some(mac)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_forms() {
        let m = [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f];
        assert_eq!(parse_mac("aa:bb:cc:dd:ee:0f"), Some(m));
        assert_eq!(parse_mac("AA:BB:CC:DD:EE:0F"), Some(m));
        assert_eq!(parse_mac("aa-bb-cc-dd-ee-0f"), Some(m));
        assert_eq!(parse_mac("aabb.ccdd.ee0f"), Some(m));
        assert_eq!(parse_mac("aa:bb:cc:dd:ee"), None);
        assert_eq!(parse_mac("aa:bb:cc:dd:ee:0g"), None);
        assert_eq!(parse_mac("aa:bb-cc:dd:ee:0f"), None);
        assert_eq!(parse_mac("aa:bb:cc:dd:ee:+f"), None);
        assert_eq!(format_mac(&m), "aa:bb:cc:dd:ee:0f");
    }
}
