//! The `Backend` object, read in flannel's two steps: first `Backend.Type`
//! ([`backend_type`]), then that backend's own options ([`backend_options`]), with flannel's
//! defaults and messages.
use super::fields::{get_bool, get_int, invalid, syntax, warn_keys};
use super::{BackendConf, Errors, IpIpConf, VxlanConf};
use crate::ConfError;
use crate::json::{Fields, Json};

/// Backend types flannel has but weft does not implement.
pub(super) const UNSUPPORTED_BACKENDS: &[&str] = &[
    "udp",
    "wireguard",
    "ipsec",
    "alloc",
    "extension",
    "tencent-vpc",
];

pub(super) const WEFT_BACKENDS: &str = "weft supports vxlan, host-gw, ipip";

pub(super) const VXLAN_FIELDS: &[&str] = &[
    "Type",
    "VNI",
    "Port",
    "GBP",
    "Learning",
    "MTU",
    "DirectRouting",
];
pub(super) const IPIP_FIELDS: &[&str] = &["Type", "DirectRouting"];
pub(super) const HOSTGW_FIELDS: &[&str] = &["Type"];
pub(super) const TYPE_FIELD: &[&str] = &["Type"];

/// `Backend.Type`, once recognised; its options are read in a second step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BackendType {
    Vxlan,
    IpIp,
    HostGw,
}

pub(super) fn backend_type(backend: &Json) -> Result<BackendType, ConfError> {
    let entries = match backend {
        Json::Object(entries) => entries.as_slice(),
        // `"Backend": null` reaches flannel as a backend without a Type.
        Json::Null => &[],
        other => {
            return Err(syntax(
                "Backend",
                format!(
                    "error decoding Backend property of config: expected a JSON object, found {}",
                    other.describe()
                ),
            ));
        }
    };
    let fields = Fields::collect(entries, TYPE_FIELD);
    let raw = match fields.get("Type") {
        None | Some(Json::Null) => "",
        Some(Json::String(s)) => s.as_str(),
        Some(other) => {
            return Err(syntax(
                "Backend.Type",
                format!(
                    "error decoding Backend property of config: expected a string, found {}",
                    other.describe()
                ),
            ));
        }
    };
    if raw.is_empty() {
        return Err(invalid(
            "Backend.Type",
            "",
            format!("Backend.Type is missing ({WEFT_BACKENDS})"),
        ));
    }
    let t = raw.to_lowercase();
    match t.as_str() {
        "vxlan" => Ok(BackendType::Vxlan),
        "ipip" => Ok(BackendType::IpIp),
        "host-gw" => Ok(BackendType::HostGw),
        t if UNSUPPORTED_BACKENDS.contains(&t) => Err(invalid(
            "Backend.Type",
            raw,
            format!("unsupported backend type: {t} ({WEFT_BACKENDS})"),
        )),
        t => Err(invalid(
            "Backend.Type",
            raw,
            format!("unknown backend type: {t}"),
        )),
    }
}

pub(super) fn backend_options(
    backend: &Json,
    t: BackendType,
    warnings: &mut Vec<String>,
) -> Result<BackendConf, Vec<ConfError>> {
    let entries = match backend {
        Json::Object(entries) => entries.as_slice(),
        _ => &[],
    };
    match t {
        BackendType::HostGw => {
            let fields = Fields::collect(entries, HOSTGW_FIELDS);
            warn_keys(&fields, "Backend", warnings);
            Ok(BackendConf::HostGw)
        }
        BackendType::IpIp => {
            let fields = Fields::collect(entries, IPIP_FIELDS);
            warn_keys(&fields, "Backend", warnings);
            let direct_routing = get_bool(&fields, "DirectRouting", "Backend.DirectRouting")
                .map_err(|e| vec![e])?
                .unwrap_or(false);
            Ok(BackendConf::IpIp(IpIpConf { direct_routing }))
        }
        BackendType::Vxlan => {
            let fields = Fields::collect(entries, VXLAN_FIELDS);
            warn_keys(&fields, "Backend", warnings);
            let mut errors = Errors::default();
            let vni = errors.take(get_int(&fields, "VNI", "Backend.VNI"));
            let port = errors.take(get_int(&fields, "Port", "Backend.Port"));
            let gbp = errors.take(get_bool(&fields, "GBP", "Backend.GBP"));
            let learning = errors.take(get_bool(&fields, "Learning", "Backend.Learning"));
            let mtu = errors.take(get_int(&fields, "MTU", "Backend.MTU"));
            let direct_routing =
                errors.take(get_bool(&fields, "DirectRouting", "Backend.DirectRouting"));

            let vni = match vni.flatten() {
                None => 1,
                Some(v) if (1..(1 << 24)).contains(&v) => v as u32,
                Some(v) => {
                    errors.push(invalid(
                        "Backend.VNI",
                        v.to_string(),
                        "VNI must be between 1 and 16777215",
                    ));
                    1
                }
            };
            let port = match port.flatten() {
                None => 0,
                Some(p) => errors
                    .take(u16::try_from(p).map_err(|_| {
                        invalid(
                            "Backend.Port",
                            p.to_string(),
                            "Port must be between 0 and 65535 (0 = the kernel default, 8472)",
                        )
                    }))
                    .unwrap_or(0),
            };
            let mtu = match mtu.flatten() {
                None | Some(0) => None,
                Some(m) if (68..=65535).contains(&m) => Some(m as u32),
                Some(m) => {
                    errors.push(invalid(
                        "Backend.MTU",
                        m.to_string(),
                        "MTU must be between 68 and 65535 (or 0 for the interface's MTU)",
                    ));
                    None
                }
            };
            if !errors.0.is_empty() {
                return Err(errors.0);
            }
            Ok(BackendConf::Vxlan(VxlanConf {
                vni,
                port,
                gbp: gbp.flatten().unwrap_or(false),
                learning: learning.flatten().unwrap_or(false),
                mtu,
                direct_routing: direct_routing.flatten().unwrap_or(false),
            }))
        }
    }
}
