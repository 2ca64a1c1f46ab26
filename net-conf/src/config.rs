//! net-conf.json / etcd `<prefix>/config`, parsed and validated as flannel does
//! (docs/flannel-compat.md §2).
//!
//! Keys are matched the way Go's `encoding/json` matches them (case-insensitively, the last of
//! several spellings wins), unknown keys are ignored with a warning, defaults and validation
//! messages are flannel's. The backend is read in two steps, as flannel does: first
//! `Backend.Type`, then that backend's own options.
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::ConfError;
use crate::json::{Fields, Json};

/// A validated network configuration with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    pub enable_ipv4: bool,
    pub enable_ipv6: bool,
    pub enable_nftables: bool,
    /// The cluster network, host bits masked (flannel parses with ParseCIDR).
    pub network: Option<Ipv4Net>,
    pub subnet_len: u8,
    pub subnet_min: Ipv4Addr,
    pub subnet_max: Ipv4Addr,
    pub ipv6_network: Option<Ipv6Net>,
    pub ipv6_subnet_len: u8,
    pub ipv6_subnet_min: Option<Ipv6Addr>,
    pub ipv6_subnet_max: Option<Ipv6Addr>,
    pub backend: BackendConf,
}

/// `Backend` of the config: the type and its own options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConf {
    Vxlan(VxlanConf),
    IpIp(IpIpConf),
    HostGw,
}

impl BackendConf {
    /// The `Backend.Type` string as flannel writes it into leases (`vxlan`, `ipip`, `host-gw`).
    pub fn type_name(&self) -> &'static str {
        match self {
            BackendConf::Vxlan(_) => "vxlan",
            BackendConf::IpIp(_) => "ipip",
            BackendConf::HostGw => "host-gw",
        }
    }
}

/// vxlan options (docs/flannel-compat.md §2.1); keys case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConf {
    /// `VNI`, default 1.
    pub vni: u32,
    /// `Port`, 0 = kernel default (8472).
    pub port: u16,
    pub gbp: bool,
    pub learning: bool,
    /// `MTU`: the underlay MTU to assume; None = the external interface's. (`"MTU": 0` is
    /// None too: flannel cannot tell 0 from absent.)
    pub mtu: Option<u32>,
    pub direct_routing: bool,
}

impl Default for VxlanConf {
    fn default() -> Self {
        VxlanConf {
            vni: 1,
            port: 0,
            gbp: false,
            learning: false,
            mtu: None,
            direct_routing: false,
        }
    }
}

/// flannel's log line text: `VNI=1 Port=0 GBP=false Learning=false DirectRouting=false`
/// (flannel logs `VXLAN config: ` followed by this), plus ` MTU=<n>` when set.
impl fmt::Display for VxlanConf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VNI={} Port={} GBP={} Learning={} DirectRouting={}",
            self.vni, self.port, self.gbp, self.learning, self.direct_routing
        )?;
        if let Some(mtu) = self.mtu {
            write!(f, " MTU={mtu}")?;
        }
        Ok(())
    }
}

/// ipip options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpIpConf {
    pub direct_routing: bool,
}

/// The result of parsing: the config and the warnings (unknown keys, defaulted backend) to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub conf: NetConf,
    pub warnings: Vec<String>,
}

/// Backend types flannel has but weft does not implement.
const UNSUPPORTED_BACKENDS: &[&str] = &[
    "udp",
    "wireguard",
    "ipsec",
    "alloc",
    "extension",
    "tencent-vpc",
];

const WEFT_BACKENDS: &str = "weft supports vxlan, host-gw, ipip";

const TOP_FIELDS: &[&str] = &[
    "EnableIPv4",
    "EnableIPv6",
    "EnableNFTables",
    "Network",
    "IPv6Network",
    "SubnetLen",
    "SubnetMin",
    "SubnetMax",
    "IPv6SubnetLen",
    "IPv6SubnetMin",
    "IPv6SubnetMax",
    "Backend",
];

const VXLAN_FIELDS: &[&str] = &[
    "Type",
    "VNI",
    "Port",
    "GBP",
    "Learning",
    "MTU",
    "DirectRouting",
];
const IPIP_FIELDS: &[&str] = &["Type", "DirectRouting"];
const HOSTGW_FIELDS: &[&str] = &["Type"];
const TYPE_FIELD: &[&str] = &["Type"];

impl NetConf {
    /// Parses and validates a config text exactly as flannel accepts it.
    ///
    /// Errors come in flannel's order: JSON syntax and types, then `Backend.Type`, then the
    /// network checks (`CheckNetworkConfig`), then the backend's options. The first is returned;
    /// [`NetConf::parse_all`] returns all of them.
    pub fn parse(text: &str) -> Result<Parsed, ConfError> {
        Self::parse_all(text).map_err(|errors| {
            errors
                .into_iter()
                .next()
                .unwrap_or_else(|| syntax("config", "invalid network config"))
        })
    }

    /// Like [`NetConf::parse`], but reports every independent problem at once (in the same
    /// order; never an empty list). Checks that depend on a field that already failed are
    /// skipped, so one mistake gives one error.
    pub fn parse_all(text: &str) -> Result<Parsed, Vec<ConfError>> {
        let json = Json::parse(text).map_err(|e| vec![syntax("config", e.to_string())])?;
        let Json::Object(entries) = &json else {
            return Err(vec![syntax(
                "config",
                format!("expected a JSON object, found {}", json.describe()),
            )]);
        };
        let mut warnings = Vec::new();
        let mut errors = Errors::default();
        let fields = Fields::collect(entries, TOP_FIELDS);
        warn_keys(&fields, "config", &mut warnings);

        // Step 1: JSON types of every field (Go's Unmarshal fails on any of them). `None` =
        // the field failed and was reported.
        let enable_ipv4 = errors.take(get_bool(&fields, "EnableIPv4", "EnableIPv4"));
        let enable_ipv6 = errors.take(get_bool(&fields, "EnableIPv6", "EnableIPv6"));
        let enable_nftables = errors.take(get_bool(&fields, "EnableNFTables", "EnableNFTables"));
        let network = errors.take(
            get_str(&fields, "Network", "Network", false)
                .and_then(|s| s.map(|s| parse_v4_cidr("Network", s)).transpose()),
        );
        let ipv6_network = errors.take(
            get_str(&fields, "IPv6Network", "IPv6Network", false)
                .and_then(|s| s.map(|s| parse_v6_cidr("IPv6Network", s)).transpose()),
        );
        let subnet_len = errors.take(get_uint(&fields, "SubnetLen", "SubnetLen"));
        let ipv6_subnet_len = errors.take(get_uint(&fields, "IPv6SubnetLen", "IPv6SubnetLen"));
        let subnet_min = errors.take(
            get_str(&fields, "SubnetMin", "SubnetMin", false)
                .and_then(|s| s.map(|s| parse_v4_addr("SubnetMin", s)).transpose()),
        );
        let subnet_max = errors.take(
            get_str(&fields, "SubnetMax", "SubnetMax", false)
                .and_then(|s| s.map(|s| parse_v4_addr("SubnetMax", s)).transpose()),
        );
        // Pointers in flannel's struct: `null` leaves them unset.
        let ipv6_subnet_min = errors.take(
            get_str(&fields, "IPv6SubnetMin", "IPv6SubnetMin", true)
                .and_then(|s| s.map(|s| parse_v6_addr("IPv6SubnetMin", s)).transpose()),
        );
        let ipv6_subnet_max = errors.take(
            get_str(&fields, "IPv6SubnetMax", "IPv6SubnetMax", true)
                .and_then(|s| s.map(|s| parse_v6_addr("IPv6SubnetMax", s)).transpose()),
        );

        // Step 2: the backend type.
        let backend_json = fields.get("Backend");
        let backend_type = match backend_json {
            None => {
                warnings.push(
                    "no Backend in config: flanneld would silently use the udp backend here, \
                     weft uses vxlan (VNI 1); add \"Backend\": {\"Type\": \"vxlan\"} to make \
                     this explicit"
                        .to_string(),
                );
                None
            }
            Some(b) => errors.take(backend_type(b)),
        };

        // Step 3: the network (flannel's CheckNetworkConfig).
        let mut conf = NetConf {
            enable_ipv4: enable_ipv4.flatten().unwrap_or(true),
            enable_ipv6: enable_ipv6.flatten().unwrap_or(false),
            enable_nftables: enable_nftables.flatten().unwrap_or(false),
            network: None,
            subnet_len: 0,
            subnet_min: Ipv4Addr::UNSPECIFIED,
            subnet_max: Ipv4Addr::UNSPECIFIED,
            ipv6_network: None,
            ipv6_subnet_len: 0,
            ipv6_subnet_min: None,
            ipv6_subnet_max: None,
            backend: BackendConf::Vxlan(VxlanConf::default()),
        };
        if enable_ipv4.is_some() && enable_ipv6.is_some() && !conf.enable_ipv4 && !conf.enable_ipv6
        {
            errors.push(invalid(
                "EnableIPv4",
                "false",
                "at least one of EnableIPv4 and EnableIPv6 must be true",
            ));
        }
        if conf.enable_ipv4 && enable_ipv4.is_some() {
            if let (Some(network), Some(len), Some(min), Some(max)) =
                (network, subnet_len, subnet_min, subnet_max)
            {
                let checked = check_v4(network, len.unwrap_or(0), min, max, &mut warnings);
                if let Some(v4) = errors.take_all(checked) {
                    conf.network = Some(v4.network);
                    conf.subnet_len = v4.subnet_len;
                    conf.subnet_min = v4.min;
                    conf.subnet_max = v4.max;
                }
            }
        }
        if conf.enable_ipv6 && enable_ipv6.is_some() {
            if let (Some(network), Some(len), Some(min), Some(max)) = (
                ipv6_network,
                ipv6_subnet_len,
                ipv6_subnet_min,
                ipv6_subnet_max,
            ) {
                let checked = check_v6(network, len.unwrap_or(0), min, max, &mut warnings);
                if let Some(v6) = errors.take_all(checked) {
                    conf.ipv6_network = Some(v6.network);
                    conf.ipv6_subnet_len = v6.subnet_len;
                    conf.ipv6_subnet_min = Some(v6.min);
                    conf.ipv6_subnet_max = Some(v6.max);
                }
            }
        }

        // Step 4: the backend's options.
        if let (Some(b), Some(t)) = (backend_json, backend_type) {
            if let Some(backend) = errors.take_all(backend_options(b, t, &mut warnings)) {
                conf.backend = backend;
            }
        }
        if errors.0.is_empty() {
            Ok(Parsed { conf, warnings })
        } else {
            Err(errors.0)
        }
    }

    /// The number of IPv4 subnets between SubnetMin and SubnetMax (inclusive); 0 if IPv4 is
    /// disabled.
    pub fn subnet_count(&self) -> u64 {
        if self.network.is_none() || self.subnet_min > self.subnet_max {
            return 0;
        }
        let span = u64::from(u32::from(self.subnet_max) - u32::from(self.subnet_min));
        (span >> (32 - u32::from(self.subnet_len))) + 1
    }

    /// The size of one IPv4 subnet in addresses (`2^(32 - SubnetLen)`); 0 if IPv4 is disabled.
    pub fn subnet_size(&self) -> u64 {
        if self.network.is_none() {
            return 0;
        }
        1u64 << (32 - u32::from(self.subnet_len))
    }
}

/// `Backend.Type`, once recognised; its options are read in a second step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackendType {
    Vxlan,
    IpIp,
    HostGw,
}

fn backend_type(backend: &Json) -> Result<BackendType, ConfError> {
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

fn backend_options(
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

/// Errors collected while going on with independent checks.
#[derive(Default)]
struct Errors(Vec<ConfError>);

impl Errors {
    fn push(&mut self, e: ConfError) {
        self.0.push(e);
    }

    /// The value, or None after recording the error.
    fn take<T>(&mut self, r: Result<T, ConfError>) -> Option<T> {
        r.map_err(|e| self.0.push(e)).ok()
    }

    fn take_all<T>(&mut self, r: Result<T, Vec<ConfError>>) -> Option<T> {
        r.map_err(|e| self.0.extend(e)).ok()
    }
}

struct V4 {
    network: Ipv4Net,
    subnet_len: u8,
    min: Ipv4Addr,
    max: Ipv4Addr,
}

fn check_v4(
    network: Option<Ipv4Net>,
    subnet_len: u64,
    min: Option<Ipv4Addr>,
    max: Option<Ipv4Addr>,
    warnings: &mut Vec<String>,
) -> Result<V4, Vec<ConfError>> {
    let given = network.unwrap_or_default();
    if given.addr().is_unspecified() && given.prefix_len() == 0 {
        return Err(vec![invalid(
            "Network",
            network.map(|n| n.to_string()).unwrap_or_default(),
            "please define a correct Network parameter in the flannel config",
        )]);
    }
    let net = given.trunc();
    if net != given {
        warnings.push(format!(
            "Network {given} has host bits set; using {net} (as flannel does)"
        ));
    }
    let prefix = u64::from(net.prefix_len());
    let len = if subnet_len > 0 {
        if subnet_len > 30 {
            return Err(vec![invalid(
                "SubnetLen",
                subnet_len.to_string(),
                "SubnetLen must be less than /31",
            )]);
        }
        if subnet_len < prefix + 2 {
            return Err(vec![invalid(
                "SubnetLen",
                subnet_len.to_string(),
                "network must be able to accommodate at least four subnets",
            )]);
        }
        subnet_len
    } else if prefix > 28 {
        return Err(vec![invalid(
            "Network",
            net.to_string(),
            "network is too small. Minimum useful network prefix is /28",
        )]);
    } else if prefix <= 22 {
        24
    } else {
        prefix + 2
    };
    // 2 <= len <= 30 here, so the shifts below are in range.
    let sub_host: u32 = (1u32 << (32 - len)) - 1;
    let net_host: u32 = u32::MAX.checked_shr(net.prefix_len().into()).unwrap_or(0);
    let base = u32::from(net.network());

    let min = match min {
        Some(m) if !m.is_unspecified() => {
            check_in_range_v4("SubnetMin", m, &net, sub_host).map(|()| m)
        }
        _ => Ok(Ipv4Addr::from(base + sub_host + 1)),
    };
    let max = match max {
        Some(m) if !m.is_unspecified() => {
            check_in_range_v4("SubnetMax", m, &net, sub_host).map(|()| m)
        }
        _ => Ok(Ipv4Addr::from((base | net_host) & !sub_host)),
    };
    let (min, max) = match (min, max) {
        (Ok(min), Ok(max)) => (min, max),
        (min, max) => return Err([min.err(), max.err()].into_iter().flatten().collect()),
    };
    if min > max {
        // Not checked by flannel (it fails later with "out of subnets"); no lease could ever
        // be valid, so weft refuses the config up front.
        return Err(vec![invalid(
            "SubnetMin",
            min.to_string(),
            format!("SubnetMin is greater than SubnetMax ({max})"),
        )]);
    }
    Ok(V4 {
        network: net,
        subnet_len: len as u8,
        min,
        max,
    })
}

fn check_in_range_v4(
    field: &str,
    addr: Ipv4Addr,
    net: &Ipv4Net,
    sub_host: u32,
) -> Result<(), ConfError> {
    if !net.contains(&addr) {
        return Err(invalid(
            field,
            addr.to_string(),
            format!("{field} is not in the range of the Network"),
        ));
    }
    if u32::from(addr) & sub_host != 0 {
        return Err(invalid(
            field,
            addr.to_string(),
            format!("{field} is not on a SubnetLen boundary: {addr}"),
        ));
    }
    Ok(())
}

struct V6 {
    network: Ipv6Net,
    subnet_len: u8,
    min: Ipv6Addr,
    max: Ipv6Addr,
}

fn check_v6(
    network: Option<Ipv6Net>,
    subnet_len: u64,
    min: Option<Ipv6Addr>,
    max: Option<Ipv6Addr>,
    warnings: &mut Vec<String>,
) -> Result<V6, Vec<ConfError>> {
    let given = network.unwrap_or_default();
    if given.addr().is_unspecified() && given.prefix_len() == 0 {
        return Err(vec![invalid(
            "IPv6Network",
            network.map(|n| n.to_string()).unwrap_or_default(),
            "please define a correct IPv6Network parameter in the flannel config",
        )]);
    }
    let net = given.trunc();
    if net != given {
        warnings.push(format!(
            "IPv6Network {given} has host bits set; using {net} (as flannel does)"
        ));
    }
    let prefix = u64::from(net.prefix_len());
    let len = if subnet_len > 0 {
        if subnet_len > 126 {
            return Err(vec![invalid(
                "IPv6SubnetLen",
                subnet_len.to_string(),
                "SubnetLen must be less than /127",
            )]);
        }
        if subnet_len < prefix + 2 {
            return Err(vec![invalid(
                "IPv6SubnetLen",
                subnet_len.to_string(),
                "IPv6Network must be able to accommodate at least four subnets",
            )]);
        }
        subnet_len
    } else if prefix > 124 {
        return Err(vec![invalid(
            "IPv6Network",
            net.to_string(),
            "IPv6Network is too small. Minimum useful network prefix is /124",
        )]);
    } else if prefix <= 62 {
        64
    } else {
        prefix + 2
    };
    let sub_host: u128 = (1u128 << (128 - len)) - 1;
    let net_host: u128 = u128::MAX.checked_shr(net.prefix_len().into()).unwrap_or(0);
    let base = u128::from(net.network());

    let min = match min {
        Some(m) => check_in_range_v6("IPv6SubnetMin", m, &net, sub_host).map(|()| m),
        None => Ok(Ipv6Addr::from(base + sub_host + 1)),
    };
    let max = match max {
        Some(m) => check_in_range_v6("IPv6SubnetMax", m, &net, sub_host).map(|()| m),
        None => Ok(Ipv6Addr::from((base | net_host) & !sub_host)),
    };
    let (min, max) = match (min, max) {
        (Ok(min), Ok(max)) => (min, max),
        (min, max) => return Err([min.err(), max.err()].into_iter().flatten().collect()),
    };
    if min > max {
        return Err(vec![invalid(
            "IPv6SubnetMin",
            min.to_string(),
            format!("IPv6SubnetMin is greater than IPv6SubnetMax ({max})"),
        )]);
    }
    Ok(V6 {
        network: net,
        subnet_len: len as u8,
        min,
        max,
    })
}

fn check_in_range_v6(
    field: &str,
    addr: Ipv6Addr,
    net: &Ipv6Net,
    sub_host: u128,
) -> Result<(), ConfError> {
    if !net.contains(&addr) {
        return Err(invalid(
            field,
            addr.to_string(),
            format!("{field} is not in the range of the IPv6Network"),
        ));
    }
    if u128::from(addr) & sub_host != 0 {
        return Err(invalid(
            field,
            addr.to_string(),
            format!("{field} is not on a SubnetLen boundary: {addr}"),
        ));
    }
    Ok(())
}

fn syntax(field: &str, reason: impl Into<String>) -> ConfError {
    ConfError::Syntax {
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn invalid(field: &str, value: impl Into<String>, message: impl Into<String>) -> ConfError {
    ConfError::Invalid {
        field: field.to_string(),
        value: value.into(),
        message: message.into(),
    }
}

fn warn_keys(fields: &Fields<'_>, context: &str, warnings: &mut Vec<String>) {
    for key in &fields.unknown {
        warnings.push(format!("unknown key {key:?} in {context} ignored"));
    }
    for (name, spellings) in &fields.duplicates {
        let list: Vec<String> = spellings.iter().map(|s| format!("{s:?}")).collect();
        warnings.push(format!(
            "{context} sets {name} more than once ({}); the last one wins",
            list.join(", ")
        ));
    }
}

/// A JSON boolean (Go `bool`): `null` leaves the default.
fn get_bool(fields: &Fields<'_>, name: &str, path: &str) -> Result<Option<bool>, ConfError> {
    match fields.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(syntax(
            path,
            format!("expected true or false, found {}", other.describe()),
        )),
    }
}

/// A JSON integer ≥ 0 (Go `uint`): `null` leaves the default.
fn get_uint(fields: &Fields<'_>, name: &str, path: &str) -> Result<Option<u64>, ConfError> {
    match fields.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(other) => Err(syntax(
            path,
            format!(
                "expected a non-negative integer, found {}",
                other.describe()
            ),
        )),
    }
}

/// A JSON integer (Go `int`): `null` leaves the default.
fn get_int(fields: &Fields<'_>, name: &str, path: &str) -> Result<Option<i64>, ConfError> {
    match fields.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
        Some(other) => Err(syntax(
            path,
            format!("expected an integer, found {}", other.describe()),
        )),
    }
}

/// A JSON string. `null` is accepted (as unset) only where flannel's field is a pointer; for its
/// address types Go hands `null` to the address parser, which refuses it.
fn get_str<'a>(
    fields: &Fields<'a>,
    name: &str,
    path: &str,
    null_ok: bool,
) -> Result<Option<&'a str>, ConfError> {
    match fields.get(name) {
        None => Ok(None),
        Some(Json::Null) if null_ok => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(syntax(
            path,
            format!("expected a string, found {}", other.describe()),
        )),
    }
}

fn parse_v4_cidr(field: &str, s: &str) -> Result<Ipv4Net, ConfError> {
    s.parse::<Ipv4Net>().map_err(|_| {
        if s.parse::<Ipv6Net>().is_ok() {
            invalid(field, s, format!("{field} must be an IPv4 CIDR: {s}"))
        } else {
            invalid(field, s, format!("invalid CIDR address: {s}"))
        }
    })
}

fn parse_v6_cidr(field: &str, s: &str) -> Result<Ipv6Net, ConfError> {
    s.parse::<Ipv6Net>().map_err(|_| {
        if s.parse::<Ipv4Net>().is_ok() {
            invalid(field, s, format!("{field} must be an IPv6 CIDR: {s}"))
        } else {
            invalid(field, s, format!("invalid CIDR address: {s}"))
        }
    })
}

fn parse_v4_addr(field: &str, s: &str) -> Result<Ipv4Addr, ConfError> {
    s.parse::<Ipv4Addr>()
        .map_err(|_| invalid(field, s, format!("invalid IPv4 address: {s}")))
}

fn parse_v6_addr(field: &str, s: &str) -> Result<Ipv6Addr, ConfError> {
    s.parse::<Ipv6Addr>()
        .map_err(|_| invalid(field, s, format!("invalid IPv6 address: {s}")))
}
