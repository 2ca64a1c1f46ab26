//! net-conf.json / etcd `<prefix>/config`, parsed and validated as flannel does
//! (docs/flannel-compat.md §2).
//!
//! Keys are matched the way Go's `encoding/json` matches them (case-insensitively, the last of
//! several spellings wins), unknown keys are ignored with a warning, defaults and validation
//! messages are flannel's. The backend is read in two steps, as flannel does: first
//! `Backend.Type`, then that backend's own options.
//!
//! This file holds the types and the order of the steps; `config/fields.rs` reads JSON fields,
//! `config/check.rs` holds the network checks, `config/backend.rs` reads the `Backend` object.
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::ConfError;
use crate::json::{Fields, Json};

mod backend;
mod check;
mod fields;

use backend::{backend_options, backend_type};
use check::{check_v4, check_v6};
use fields::{
    get_bool, get_str, get_uint, invalid, parse_v4_addr, parse_v4_cidr, parse_v6_addr,
    parse_v6_cidr, syntax, warn_keys,
};

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
