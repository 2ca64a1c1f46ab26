//! flanneld-compatible command line.
//!
//! Parsing follows Go's `flag` package, because that is what flanneld users type:
//! `-flag`, `--flag`, `-flag=value`, `--flag=value` and `-flag value`; a boolean flag never
//! consumes the next argument (`--ip-masq false` is an error: `false` is a stray argument);
//! `--` ends the flags; numbers accept Go's base prefixes (`0x1f`, `0o17`, `017`, `0b11`).
//! After the command line, `FLANNELD_<NAME>` environment variables (upper case, `-` → `_`) set
//! the flags that were *not* given on the command line, as flannel's `SetFlagsFromEnv` does.
//! `--version` is decided before the environment is read, so `FLANNELD_VERSION` has no effect.
//!
//! A first argument that is not a flag and names a subcommand (`lab`, `status`, `cleanup`)
//! selects that subcommand; its arguments are passed through untouched.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use regex::Regex;

/// The subcommands weft understands in first position.
pub const SUBCOMMANDS: &[&str] = &["lab", "status", "cleanup", "docker-opts"];

/// Prefix of the environment variables that set flags.
pub const ENV_PREFIX: &str = "FLANNELD";

/// weft's default for `--peer-cache-file`: on disk, so it survives a reboot.
pub const DEFAULT_PEER_CACHE_FILE: &str = "/var/lib/weft/peers.json";

/// flannel's default for `--net-config-path` (used in kube mode).
pub const DEFAULT_NET_CONFIG_PATH: &str = "/etc/kube-flannel/net-conf.json";

/// What the command line asks for.
#[derive(Debug)]
// Built once at startup; boxing `Options` would only make callers' matches noisier.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the agent with these options.
    Run(Options),
    /// `--version`: print the version and exit 0.
    Version,
    /// `-h` / `--help` / `-help`: print [`usage`] and exit 0.
    Help,
    /// A subcommand (`lab`, `status`, `cleanup`) with its arguments, untouched.
    Sub { name: String, args: Vec<String> },
}

/// A command-line or environment error. Its `Display` is one line naming the flag and the
/// value; the binary prints it and exits 2, as Go's flag package does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    #[error("flag provided but not defined: -{0}")]
    Undefined(String),
    #[error("bad flag syntax: {0}")]
    BadSyntax(String),
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    #[error("invalid boolean value {value:?} for -{flag}: parse error")]
    InvalidBool { flag: String, value: String },
    #[error("invalid value {value:?} for flag -{flag}: {reason}")]
    InvalidValue {
        flag: String,
        value: String,
        reason: String,
    },
    #[error("invalid value {value:?} for {var} (flag -{flag}): {reason}")]
    InvalidEnv {
        var: String,
        flag: String,
        value: String,
        reason: String,
    },
    #[error(
        "unexpected argument {0:?}: weft takes only flags, or a subcommand (lab, status, cleanup, docker-opts) as the first argument"
    )]
    UnexpectedArgument(String),
}

/// A secret string (the etcd password): never printed by `Debug`, so the options can be logged
/// whole at start (flannel logs `CLI flags config: {...}`) without leaking it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret text, for the one place that needs it (the etcd client).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Every flanneld flag, typed, with flannel's defaults (see [`Options::default`]); weft's
/// deviations are noted on the field.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--etcd-endpoints`: comma-separated; surrounding spaces and empty items are dropped.
    pub etcd_endpoints: Vec<String>,
    /// `--etcd-prefix`.
    pub etcd_prefix: String,
    /// `--etcd-keyfile` (TLS client key); empty = none.
    pub etcd_keyfile: Option<PathBuf>,
    /// `--etcd-certfile` (TLS client certificate); empty = none.
    pub etcd_certfile: Option<PathBuf>,
    /// `--etcd-cafile`; empty = none.
    pub etcd_cafile: Option<PathBuf>,
    /// `--etcd-username`; empty = none.
    pub etcd_username: Option<String>,
    /// `--etcd-password`; empty = none. Redacted in `Debug`.
    pub etcd_password: Option<Secret>,
    /// `--iface` (repeatable, in order): an IPv4 address or an interface name.
    pub iface: Vec<String>,
    /// `--iface-regex` (repeatable, in order), compiled. Rust `regex` syntax, which agrees with
    /// Go's RE2 syntax for the patterns people write for interface names and addresses.
    pub iface_regex: Vec<Regex>,
    /// `--iface-can-reach`: pick the interface the route to this address uses.
    pub iface_can_reach: Option<Ipv4Addr>,
    /// `--subnet-file`.
    pub subnet_file: PathBuf,
    /// `--public-ip`: the address other nodes reach this one at.
    pub public_ip: Option<Ipv4Addr>,
    /// `--public-ipv6`.
    pub public_ipv6: Option<Ipv6Addr>,
    /// `--subnet-lease-renew-margin`, minutes before expiry to renew; 1..=1439.
    pub subnet_lease_renew_margin: u32,
    /// `--ip-masq`.
    pub ip_masq: bool,
    /// `--ip-masq-fully-random-disable`.
    pub ip_masq_fully_random_disable: bool,
    /// `--kube-subnet-mgr`.
    pub kube_subnet_mgr: bool,
    /// `--kube-api-url`; empty = none.
    pub kube_api_url: Option<String>,
    /// `--kube-annotation-prefix`.
    pub kube_annotation_prefix: String,
    /// `--kubeconfig-file`; empty = none (in-cluster config).
    pub kubeconfig_file: Option<PathBuf>,
    /// `--healthz-ip`. **weft deviation:** the default is `127.0.0.1`, not flannel's `0.0.0.0`,
    /// so the health endpoints are not exposed on every interface unless asked for
    /// (targets R7). Pass `--healthz-ip=0.0.0.0` for flannel's behaviour.
    pub healthz_ip: IpAddr,
    /// `--healthz-port`; 0 = no health server (flannel's default). weft rejects values outside
    /// 0..=65535 at parse time, where flannel fails later when listening.
    pub healthz_port: u16,
    /// `--iptables-resync`, seconds; must be at least 1.
    pub iptables_resync: u32,
    /// `--iptables-forward-rules`.
    pub iptables_forward_rules: bool,
    /// `--ip-blackhole-route`.
    pub ip_blackhole_route: bool,
    /// `--net-config-path`: `Some` only when given (command line or environment); see
    /// [`Options::net_config_path_or_default`] for flannel's default.
    pub net_config_path: Option<PathBuf>,
    /// `--set-node-network-unavailable`.
    pub set_node_network_unavailable: bool,
    /// `--peer-cache-file` (weft only): None when given empty.
    pub peer_cache_file: Option<PathBuf>,
    /// `--route-nexthops` (weft only): write routes on kernel nexthop objects where the kernel
    /// has them (`false`: plain routes, as flanneld writes them).
    pub route_nexthops: bool,
    /// klog's `-v` verbosity; see [`Options::log_level`].
    pub v: u8,
    /// klog's `-vmodule` (accepted and syntax-checked; weft has no per-file verbosity).
    pub vmodule: Option<String>,
    /// klog's `-log_backtrace_at` (accepted and syntax-checked; weft does not use it).
    pub log_backtrace_at: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            etcd_endpoints: vec![
                "http://127.0.0.1:4001".to_string(),
                "http://127.0.0.1:2379".to_string(),
            ],
            etcd_prefix: "/coreos.com/network".to_string(),
            etcd_keyfile: None,
            etcd_certfile: None,
            etcd_cafile: None,
            etcd_username: None,
            etcd_password: None,
            iface: Vec::new(),
            iface_regex: Vec::new(),
            iface_can_reach: None,
            subnet_file: PathBuf::from("/run/flannel/subnet.env"),
            public_ip: None,
            public_ipv6: None,
            subnet_lease_renew_margin: 60,
            ip_masq: false,
            ip_masq_fully_random_disable: false,
            kube_subnet_mgr: false,
            kube_api_url: None,
            kube_annotation_prefix: "flannel.alpha.coreos.com".to_string(),
            kubeconfig_file: None,
            healthz_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            healthz_port: 0,
            iptables_resync: 5,
            iptables_forward_rules: true,
            ip_blackhole_route: false,
            net_config_path: None,
            set_node_network_unavailable: true,
            peer_cache_file: Some(PathBuf::from(DEFAULT_PEER_CACHE_FILE)),
            route_nexthops: true,
            v: 0,
            vmodule: None,
            log_backtrace_at: None,
        }
    }
}

impl Options {
    /// How to reach etcd, from the `--etcd-*` flags (agent, `weft status`, `weft cleanup`).
    pub fn etcd_options(&self) -> crate::lease::etcd::registry::EtcdOptions {
        crate::lease::etcd::registry::EtcdOptions {
            endpoints: self.etcd_endpoints.clone(),
            prefix: self.etcd_prefix.clone(),
            cafile: self.etcd_cafile.clone(),
            certfile: self.etcd_certfile.clone(),
            keyfile: self.etcd_keyfile.clone(),
            username: self.etcd_username.clone(),
            password: self.etcd_password.as_ref().map(|p| p.expose().to_string()),
        }
    }

    /// `--net-config-path` if given, else flannel's default path.
    pub fn net_config_path_or_default(&self) -> PathBuf {
        self.net_config_path
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_NET_CONFIG_PATH))
    }

    /// The health server's address, or `None` when `--healthz-port` is 0 (disabled).
    pub fn healthz_addr(&self) -> Option<SocketAddr> {
        (self.healthz_port != 0).then(|| SocketAddr::new(self.healthz_ip, self.healthz_port))
    }

    /// klog's `-v` mapped to a tracing level: 0 → INFO, 1–2 → DEBUG (flannel's V(1) data-path
    /// and V(2) per-route messages), 3 and up → TRACE (V(4) netlink calls and beyond).
    pub fn log_level(&self) -> tracing::Level {
        match self.v {
            0 => tracing::Level::INFO,
            1 | 2 => tracing::Level::DEBUG,
            _ => tracing::Level::TRACE,
        }
    }
}

/// Identifies a flag; one per entry of [`FLAGS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Id {
    EtcdEndpoints,
    EtcdPrefix,
    EtcdKeyfile,
    EtcdCertfile,
    EtcdCafile,
    EtcdUsername,
    EtcdPassword,
    Iface,
    IfaceRegex,
    IfaceCanReach,
    SubnetFile,
    PublicIp,
    PublicIpv6,
    SubnetLeaseRenewMargin,
    IpMasq,
    IpMasqFullyRandomDisable,
    KubeSubnetMgr,
    KubeApiUrl,
    KubeAnnotationPrefix,
    KubeconfigFile,
    Version,
    HealthzIp,
    HealthzPort,
    IptablesResync,
    IptablesForwardRules,
    IpBlackholeRoute,
    NetConfigPath,
    SetNodeNetworkUnavailable,
    PeerCacheFile,
    RouteNexthops,
    V,
    Vmodule,
    LogBacktraceAt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    /// Takes a value; a later occurrence replaces an earlier one.
    Value,
    /// Takes a value; every occurrence is kept, in order.
    Repeat,
}

struct Spec {
    id: Id,
    name: &'static str,
    kind: Kind,
    /// Value-type word for the usage text (Go's `PrintDefaults` style).
    ty: &'static str,
    /// Default as shown in the usage text; empty = none shown.
    default: &'static str,
    /// Whether `FLANNELD_<NAME>` sets it (everything except `--version`).
    env: bool,
    help: &'static str,
}

const fn spec(
    id: Id,
    name: &'static str,
    kind: Kind,
    ty: &'static str,
    default: &'static str,
    help: &'static str,
) -> Spec {
    Spec {
        id,
        name,
        kind,
        ty,
        default,
        env: !matches!(id, Id::Version),
        help,
    }
}

/// Every flag, in flannel's order (klog's flags last).
const FLAGS: &[Spec] = &[
    spec(
        Id::EtcdEndpoints,
        "etcd-endpoints",
        Kind::Value,
        "string",
        "http://127.0.0.1:4001,http://127.0.0.1:2379",
        "a comma-delimited list of etcd endpoints",
    ),
    spec(
        Id::EtcdPrefix,
        "etcd-prefix",
        Kind::Value,
        "string",
        "/coreos.com/network",
        "etcd prefix",
    ),
    spec(
        Id::EtcdKeyfile,
        "etcd-keyfile",
        Kind::Value,
        "path",
        "",
        "SSL key file used to secure etcd communication",
    ),
    spec(
        Id::EtcdCertfile,
        "etcd-certfile",
        Kind::Value,
        "path",
        "",
        "SSL certification file used to secure etcd communication",
    ),
    spec(
        Id::EtcdCafile,
        "etcd-cafile",
        Kind::Value,
        "path",
        "",
        "SSL Certificate Authority file used to secure etcd communication",
    ),
    spec(
        Id::EtcdUsername,
        "etcd-username",
        Kind::Value,
        "string",
        "",
        "username for BasicAuth to etcd",
    ),
    spec(
        Id::EtcdPassword,
        "etcd-password",
        Kind::Value,
        "string",
        "",
        "password for BasicAuth to etcd",
    ),
    spec(
        Id::Iface,
        "iface",
        Kind::Repeat,
        "value",
        "",
        "interface to use (IP or name) for inter-host communication; may be repeated, tried in order",
    ),
    spec(
        Id::IfaceRegex,
        "iface-regex",
        Kind::Repeat,
        "value",
        "",
        "regex matching the interface address, then name, to use for inter-host communication; may be repeated, tried after all --iface",
    ),
    spec(
        Id::IfaceCanReach,
        "iface-can-reach",
        Kind::Value,
        "ip",
        "",
        "use the interface (and source address) of the route to this IPv4 address",
    ),
    spec(
        Id::SubnetFile,
        "subnet-file",
        Kind::Value,
        "path",
        "/run/flannel/subnet.env",
        "filename where env variables (subnet, MTU, ...) will be written to",
    ),
    spec(
        Id::PublicIp,
        "public-ip",
        Kind::Value,
        "ip",
        "",
        "IPv4 address accessible by other nodes for inter-host communication",
    ),
    spec(
        Id::PublicIpv6,
        "public-ipv6",
        Kind::Value,
        "ip",
        "",
        "IPv6 address accessible by other nodes for inter-host communication",
    ),
    spec(
        Id::SubnetLeaseRenewMargin,
        "subnet-lease-renew-margin",
        Kind::Value,
        "int",
        "60",
        "subnet lease renewal margin, in minutes (1..1439)",
    ),
    spec(
        Id::IpMasq,
        "ip-masq",
        Kind::Bool,
        "",
        "false",
        "setup IP masquerade rule for traffic destined outside of overlay network",
    ),
    spec(
        Id::IpMasqFullyRandomDisable,
        "ip-masq-fully-random-disable",
        Kind::Bool,
        "",
        "false",
        "do not use --random-fully in the masquerade rules",
    ),
    spec(
        Id::KubeSubnetMgr,
        "kube-subnet-mgr",
        Kind::Bool,
        "",
        "false",
        "contact the Kubernetes API for subnet assignment instead of etcd",
    ),
    spec(
        Id::KubeApiUrl,
        "kube-api-url",
        Kind::Value,
        "string",
        "",
        "Kubernetes API server URL; not needed if in-cluster",
    ),
    spec(
        Id::KubeAnnotationPrefix,
        "kube-annotation-prefix",
        Kind::Value,
        "string",
        "flannel.alpha.coreos.com",
        "Kubernetes annotation prefix",
    ),
    spec(
        Id::KubeconfigFile,
        "kubeconfig-file",
        Kind::Value,
        "path",
        "",
        "kubeconfig file location; not needed if in-cluster",
    ),
    spec(
        Id::Version,
        "version",
        Kind::Bool,
        "",
        "false",
        "print version and exit",
    ),
    spec(
        Id::HealthzIp,
        "healthz-ip",
        Kind::Value,
        "ip",
        "127.0.0.1",
        "the IP address for the healthz server to listen on (flannel's default is 0.0.0.0)",
    ),
    spec(
        Id::HealthzPort,
        "healthz-port",
        Kind::Value,
        "int",
        "0",
        "the port for the healthz server to listen on (0 to disable)",
    ),
    spec(
        Id::IptablesResync,
        "iptables-resync",
        Kind::Value,
        "int",
        "5",
        "resync period for iptables rules, in seconds",
    ),
    spec(
        Id::IptablesForwardRules,
        "iptables-forward-rules",
        Kind::Bool,
        "",
        "true",
        "add default accept rules to the FORWARD chain in iptables",
    ),
    spec(
        Id::IpBlackholeRoute,
        "ip-blackhole-route",
        Kind::Bool,
        "",
        "false",
        "add a blackhole route covering this node's subnet",
    ),
    spec(
        Id::NetConfigPath,
        "net-config-path",
        Kind::Value,
        "path",
        DEFAULT_NET_CONFIG_PATH,
        "path to the network configuration file",
    ),
    spec(
        Id::SetNodeNetworkUnavailable,
        "set-node-network-unavailable",
        Kind::Bool,
        "",
        "true",
        "set the Node NetworkUnavailable condition (kube mode)",
    ),
    spec(
        Id::PeerCacheFile,
        "peer-cache-file",
        Kind::Value,
        "path",
        DEFAULT_PEER_CACHE_FILE,
        "weft: where the last known config, lease and peers are kept, to program them at boot while etcd is unreachable (empty: no cache)",
    ),
    spec(
        Id::RouteNexthops,
        "route-nexthops",
        Kind::Bool,
        "",
        "true",
        "weft: write peer routes on kernel nexthop objects (ip route ... nhid N) where the kernel has them; false: plain routes (ip route ... via GW)",
    ),
    spec(
        Id::V,
        "v",
        Kind::Value,
        "level",
        "0",
        "log verbosity: 0 info, 1-2 debug, 3+ trace",
    ),
    spec(
        Id::Vmodule,
        "vmodule",
        Kind::Value,
        "pattern=N,...",
        "",
        "accepted for klog compatibility (comma-separated pattern=N); has no effect",
    ),
    spec(
        Id::LogBacktraceAt,
        "log_backtrace_at",
        Kind::Value,
        "file:line",
        "",
        "accepted for klog compatibility; has no effect",
    ),
];

fn lookup(name: &str) -> Option<&'static Spec> {
    FLAGS.iter().find(|s| s.name == name)
}

/// `FLANNELD_<NAME>` for a flag name.
pub fn env_var_name(flag: &str) -> String {
    format!(
        "{ENV_PREFIX}_{}",
        flag.to_ascii_uppercase().replace('-', "_")
    )
}

/// Parse the command line (`args` excludes argv\[0\]) and the environment (`env` looks up a
/// variable; pass `&|k| std::env::var(k).ok()`).
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Command, CliError> {
    if let Some(first) = args.first() {
        if !first.starts_with('-') && SUBCOMMANDS.contains(&first.as_str()) {
            return Ok(Command::Sub {
                name: first.clone(),
                args: args[1..].to_vec(),
            });
        }
    }

    let mut opts = Options::default();
    let mut version = false;
    let mut given: Vec<Id> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg.len() < 2 || !arg.starts_with('-') {
            return Err(CliError::UnexpectedArgument(arg.clone()));
        }
        let name_part = if let Some(rest) = arg.strip_prefix("--") {
            if rest.is_empty() {
                // `--` ends the flags; weft takes no positional arguments after it.
                if let Some(extra) = args.get(i) {
                    return Err(CliError::UnexpectedArgument(extra.clone()));
                }
                break;
            }
            rest
        } else {
            &arg[1..]
        };
        if name_part.starts_with('-') || name_part.starts_with('=') {
            return Err(CliError::BadSyntax(arg.clone()));
        }
        let (name, inline) = match name_part.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (name_part, None),
        };
        let Some(spec) = lookup(name) else {
            if name == "h" || name == "help" {
                return Ok(Command::Help);
            }
            return Err(CliError::Undefined(name.to_string()));
        };
        let value = match (spec.kind, inline) {
            (Kind::Bool, Some(v)) => v.to_string(),
            (Kind::Bool, None) => "true".to_string(),
            (_, Some(v)) => v.to_string(),
            (_, None) => match args.get(i) {
                Some(next) => {
                    i += 1;
                    next.clone()
                }
                None => return Err(CliError::MissingValue(name.to_string())),
            },
        };
        if spec.id == Id::Version {
            version = parse_bool(&value).ok_or_else(|| CliError::InvalidBool {
                flag: spec.name.to_string(),
                value: value.clone(),
            })?;
        } else {
            set(&mut opts, spec, &value).map_err(|reason| match spec.kind {
                Kind::Bool => CliError::InvalidBool {
                    flag: spec.name.to_string(),
                    value: value.clone(),
                },
                _ => CliError::InvalidValue {
                    flag: spec.name.to_string(),
                    value: value.clone(),
                    reason,
                },
            })?;
        }
        given.push(spec.id);
    }

    // flannel checks --version before reading the environment.
    if version {
        return Ok(Command::Version);
    }

    for spec in FLAGS.iter().filter(|s| s.env && !given.contains(&s.id)) {
        let var = env_var_name(spec.name);
        // flannel ignores empty variables.
        let Some(value) = env(&var).filter(|v| !v.is_empty()) else {
            continue;
        };
        set(&mut opts, spec, &value).map_err(|reason| CliError::InvalidEnv {
            var,
            flag: spec.name.to_string(),
            value,
            reason,
        })?;
    }

    Ok(Command::Run(opts))
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

const PARSE_ERROR: &str = "parse error";
const RANGE_ERROR: &str = "value out of range";

/// Go's `strconv.ParseInt(s, 0, 64)`: optional sign, base prefixes `0x`/`0o`/`0b`, a leading
/// `0` for octal, underscores only between digits (or right after a base prefix).
fn parse_go_int(s: &str) -> Result<i64, &'static str> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits, after_prefix) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d, true)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d, true)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d, true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower.as_str(), false)
    } else {
        (10, lower.as_str(), false)
    };
    // Underscore placement (Go's underscoreOK).
    let bytes = digits.as_bytes();
    for (k, &b) in bytes.iter().enumerate() {
        if b == b'_' {
            let prev_ok = if k == 0 {
                after_prefix
            } else {
                bytes[k - 1] != b'_'
            };
            let next_ok = bytes.get(k + 1).is_some_and(|n| *n != b'_');
            if !prev_ok || !next_ok {
                return Err(PARSE_ERROR);
            }
        }
    }
    let cleaned: String = digits.chars().filter(|c| *c != '_').collect();
    if cleaned.is_empty() {
        return Err(PARSE_ERROR);
    }
    let magnitude = u64::from_str_radix(&cleaned, radix).map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow => RANGE_ERROR,
        _ => PARSE_ERROR,
    })?;
    if neg {
        if magnitude > i64::MAX as u64 + 1 {
            return Err(RANGE_ERROR);
        }
        Ok((magnitude as i128).wrapping_neg() as i64)
    } else {
        i64::try_from(magnitude).map_err(|_| RANGE_ERROR)
    }
}

fn non_empty_path(v: &str) -> Option<PathBuf> {
    (!v.is_empty()).then(|| PathBuf::from(v))
}

fn non_empty(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

/// Regex compile errors span several lines (pattern, caret, message); keep the message.
fn one_line_regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    if let Some(line) = text.lines().find_map(|l| l.trim().strip_prefix("error: ")) {
        return format!("bad regular expression: {line}");
    }
    let joined: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    format!("bad regular expression: {}", joined.join(" "))
}

/// klog's vmodule syntax: comma-separated `pattern=N`; empty is allowed.
fn check_vmodule(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    for item in v.split(',') {
        let ok = item
            .split_once('=')
            .is_some_and(|(pat, n)| !pat.is_empty() && n.parse::<i32>().is_ok());
        if !ok {
            return Err("syntax error: expect comma-separated list of filename=N".to_string());
        }
    }
    Ok(())
}

/// klog's log_backtrace_at syntax: `file.go:234`; empty is allowed.
fn check_backtrace_at(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    let ok = v
        .rsplit_once(':')
        .is_some_and(|(file, line)| !file.is_empty() && line.parse::<u32>().is_ok());
    if ok {
        Ok(())
    } else {
        Err("syntax error: expect file.go:234".to_string())
    }
}

/// Apply one occurrence of a flag. `Err` is the reason (the caller names flag and value).
fn set(o: &mut Options, spec: &Spec, v: &str) -> Result<(), String> {
    let bool_value = || parse_bool(v).ok_or_else(|| PARSE_ERROR.to_string());
    let int_value = || parse_go_int(v).map_err(str::to_string);
    match spec.id {
        Id::EtcdEndpoints => {
            let eps: Vec<String> = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            if eps.is_empty() {
                return Err("no etcd endpoint given".to_string());
            }
            o.etcd_endpoints = eps;
        }
        Id::EtcdPrefix => o.etcd_prefix = v.to_string(),
        Id::EtcdKeyfile => o.etcd_keyfile = non_empty_path(v),
        Id::EtcdCertfile => o.etcd_certfile = non_empty_path(v),
        Id::EtcdCafile => o.etcd_cafile = non_empty_path(v),
        Id::EtcdUsername => o.etcd_username = non_empty(v),
        Id::EtcdPassword => o.etcd_password = non_empty(v).map(Secret),
        Id::Iface => {
            if v.is_empty() {
                return Err("empty interface name or address".to_string());
            }
            o.iface.push(v.to_string());
        }
        Id::IfaceRegex => {
            if v.is_empty() {
                return Err("empty regular expression (it would match every interface)".to_string());
            }
            let re = Regex::new(v).map_err(|e| one_line_regex_error(&e))?;
            o.iface_regex.push(re);
        }
        Id::IfaceCanReach => {
            o.iface_can_reach = if v.is_empty() {
                None
            } else {
                Some(parse_ipv4(v)?)
            }
        }
        Id::SubnetFile => {
            if v.is_empty() {
                return Err("empty path".to_string());
            }
            o.subnet_file = PathBuf::from(v);
        }
        Id::PublicIp => {
            o.public_ip = if v.is_empty() {
                None
            } else {
                Some(parse_ipv4(v)?)
            }
        }
        Id::PublicIpv6 => {
            o.public_ipv6 = if v.is_empty() {
                None
            } else {
                Some(parse_ipv6(v)?)
            }
        }
        Id::SubnetLeaseRenewMargin => {
            let n = int_value()?;
            // Go accepts any int here and flannel range-checks afterwards with this text.
            match u32::try_from(n) {
                Ok(m) if (1..=1439).contains(&m) => o.subnet_lease_renew_margin = m,
                _ => {
                    return Err(
                        "Invalid subnet-lease-renew-margin option, out of acceptable \
                         range (must be 1..=1439 minutes)"
                            .to_string(),
                    );
                }
            }
        }
        Id::IpMasq => o.ip_masq = bool_value()?,
        Id::IpMasqFullyRandomDisable => o.ip_masq_fully_random_disable = bool_value()?,
        Id::KubeSubnetMgr => o.kube_subnet_mgr = bool_value()?,
        Id::KubeApiUrl => o.kube_api_url = non_empty(v),
        Id::KubeAnnotationPrefix => {
            if v.is_empty() {
                return Err("empty annotation prefix".to_string());
            }
            o.kube_annotation_prefix = v.to_string();
        }
        Id::KubeconfigFile => o.kubeconfig_file = non_empty_path(v),
        Id::Version => {} // handled by `parse`, never set from the environment
        Id::HealthzIp => {
            o.healthz_ip = v
                .parse::<IpAddr>()
                .map_err(|_| "not an IP address".to_string())?;
        }
        Id::HealthzPort => {
            let n = int_value()?;
            o.healthz_port = u16::try_from(n).map_err(|_| RANGE_ERROR.to_string())?;
        }
        Id::IptablesResync => {
            let n = int_value()?;
            let secs = u32::try_from(n).map_err(|_| RANGE_ERROR.to_string())?;
            if secs == 0 {
                return Err("must be at least 1 second".to_string());
            }
            o.iptables_resync = secs;
        }
        Id::IptablesForwardRules => o.iptables_forward_rules = bool_value()?,
        Id::IpBlackholeRoute => o.ip_blackhole_route = bool_value()?,
        Id::NetConfigPath => {
            if v.is_empty() {
                return Err("empty path".to_string());
            }
            o.net_config_path = Some(PathBuf::from(v));
        }
        Id::SetNodeNetworkUnavailable => o.set_node_network_unavailable = bool_value()?,
        Id::PeerCacheFile => o.peer_cache_file = non_empty_path(v),
        Id::RouteNexthops => o.route_nexthops = bool_value()?,
        Id::V => {
            // klog parses the level as a base-10 int32.
            let n: i64 = v.parse().map_err(|_| PARSE_ERROR.to_string())?;
            o.v = u8::try_from(n).map_err(|_| RANGE_ERROR.to_string())?;
        }
        Id::Vmodule => {
            check_vmodule(v)?;
            o.vmodule = non_empty(v);
        }
        Id::LogBacktraceAt => {
            check_backtrace_at(v)?;
            o.log_backtrace_at = non_empty(v);
        }
    }
    Ok(())
}

fn parse_ipv4(v: &str) -> Result<Ipv4Addr, String> {
    match v.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => Ok(a),
        Ok(IpAddr::V6(_)) => Err("not an IPv4 address".to_string()),
        Err(_) => Err("not an IP address".to_string()),
    }
}

fn parse_ipv6(v: &str) -> Result<Ipv6Addr, String> {
    match v.parse::<IpAddr>() {
        Ok(IpAddr::V6(a)) => Ok(a),
        Ok(IpAddr::V4(_)) => Err("not an IPv6 address".to_string()),
        Err(_) => Err("not an IP address".to_string()),
    }
}

/// The help text: every flag with its type, default and environment variable.
pub fn usage() -> String {
    let mut out = String::new();
    out.push_str(
        "Usage: weft [flags]\n       weft lab|status|cleanup|docker-opts [args...]\n\n\
         A flanneld-compatible overlay network agent. Flags may be written -flag or --flag,\n\
         with the value as -flag=value or -flag value (booleans only as -flag or -flag=false).\n\
         Each flag except -version can also be set by the environment variable shown;\n\
         a flag given on the command line wins over the environment.\n\nFlags:\n",
    );
    for s in FLAGS {
        out.push_str("  -");
        out.push_str(s.name);
        if !s.ty.is_empty() {
            out.push(' ');
            out.push_str(s.ty);
        }
        out.push_str("\n    \t");
        out.push_str(s.help);
        let hide_default = s.default.is_empty() || (s.kind == Kind::Bool && s.default == "false");
        if !hide_default {
            // Go quotes string defaults only.
            if matches!(s.ty, "int" | "level" | "") {
                out.push_str(&format!(" (default {})", s.default));
            } else {
                out.push_str(&format!(" (default {:?})", s.default));
            }
        }
        if s.kind == Kind::Repeat {
            out.push_str(" (repeatable; the environment variable gives one value)");
        }
        if s.env {
            out.push_str(&format!(" [env {}]", env_var_name(s.name)));
        }
        out.push('\n');
    }
    out.push_str("  -h, -help\n    \tshow this help\n");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn run(a: &[&str]) -> Options {
        match parse(&args(a), &no_env) {
            Ok(Command::Run(o)) => o,
            other => panic!("expected Run for {a:?}, got {other:?}"),
        }
    }

    fn run_env(a: &[&str], env: &[(&str, &str)]) -> Result<Options, CliError> {
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| map.get(k).cloned();
        match parse(&args(a), &lookup)? {
            Command::Run(o) => Ok(o),
            other => panic!("expected Run, got {other:?}"),
        }
    }

    fn err(a: &[&str]) -> String {
        match parse(&args(a), &no_env) {
            Err(e) => e.to_string(),
            Ok(c) => panic!("expected error for {a:?}, got {c:?}"),
        }
    }

    #[test]
    fn defaults_match_flannel_except_healthz_ip() {
        let o = run(&[]);
        assert_eq!(
            o.etcd_endpoints,
            vec!["http://127.0.0.1:4001", "http://127.0.0.1:2379"]
        );
        assert_eq!(o.etcd_prefix, "/coreos.com/network");
        assert_eq!(o.subnet_file, PathBuf::from("/run/flannel/subnet.env"));
        assert_eq!(o.subnet_lease_renew_margin, 60);
        assert!(!o.ip_masq);
        assert!(o.iptables_forward_rules);
        assert!(o.set_node_network_unavailable);
        assert_eq!(o.kube_annotation_prefix, "flannel.alpha.coreos.com");
        assert_eq!(o.healthz_ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(o.healthz_port, 0);
        assert_eq!(o.healthz_addr(), None);
        assert_eq!(o.iptables_resync, 5);
        assert_eq!(o.net_config_path, None);
        assert_eq!(
            o.net_config_path_or_default(),
            PathBuf::from(DEFAULT_NET_CONFIG_PATH)
        );
        assert_eq!(o.v, 0);
        assert_eq!(o.log_level(), tracing::Level::INFO);
        assert!(o.iface.is_empty() && o.iface_regex.is_empty());
        assert_eq!(o.public_ip, None);
        assert!(
            o.route_nexthops,
            "weft's own flag: nexthop objects on by default"
        );
    }

    #[test]
    fn route_nexthops_flag_and_env() {
        assert!(!run(&["--route-nexthops=false"]).route_nexthops);
        assert!(run(&["--route-nexthops"]).route_nexthops);
        let o = run_env(&[], &[("FLANNELD_ROUTE_NEXTHOPS", "false")]).unwrap();
        assert!(!o.route_nexthops);
        let o = run_env(
            &["--route-nexthops"],
            &[("FLANNELD_ROUTE_NEXTHOPS", "false")],
        )
        .unwrap();
        assert!(o.route_nexthops, "command line wins");
    }

    #[test]
    fn all_four_spellings() {
        for a in [
            &["--etcd-prefix=/x"][..],
            &["--etcd-prefix", "/x"],
            &["-etcd-prefix=/x"],
            &["-etcd-prefix", "/x"],
        ] {
            assert_eq!(run(a).etcd_prefix, "/x", "{a:?}");
        }
    }

    #[test]
    fn value_may_contain_equals_and_look_like_a_flag() {
        assert_eq!(run(&["--etcd-prefix=/a=b"]).etcd_prefix, "/a=b");
        // Go: a non-bool flag takes the next argument whatever it looks like.
        assert_eq!(run(&["--etcd-prefix", "--foo"]).etcd_prefix, "--foo");
    }

    #[test]
    fn bools_follow_go() {
        assert!(run(&["--ip-masq"]).ip_masq);
        assert!(run(&["-ip-masq"]).ip_masq);
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert!(run(&[&format!("--ip-masq={t}")]).ip_masq, "{t}");
        }
        for f in ["0", "f", "F", "false", "FALSE", "False"] {
            assert!(
                !run(&[&format!("--iptables-forward-rules={f}")]).iptables_forward_rules,
                "{f}"
            );
        }
        assert_eq!(
            err(&["--ip-masq=yes"]),
            r#"invalid boolean value "yes" for -ip-masq: parse error"#
        );
        assert_eq!(
            err(&["--ip-masq="]),
            r#"invalid boolean value "" for -ip-masq: parse error"#
        );
        // A bool never consumes the next argument.
        assert!(err(&["--ip-masq", "false"]).starts_with(r#"unexpected argument "false""#));
        let o = run(&["--ip-masq", "--etcd-prefix", "/p"]);
        assert!(o.ip_masq);
        assert_eq!(o.etcd_prefix, "/p");
    }

    #[test]
    fn repeatables_keep_order() {
        let o = run(&[
            "--iface",
            "eth0",
            "-iface=198.18.0.1",
            "--iface-regex",
            "^en",
            "--iface-regex=^198\\.18\\.",
        ]);
        assert_eq!(o.iface, vec!["eth0", "198.18.0.1"]);
        let pats: Vec<&str> = o.iface_regex.iter().map(Regex::as_str).collect();
        assert_eq!(pats, vec!["^en", "^198\\.18\\."]);
    }

    #[test]
    fn later_value_replaces_earlier() {
        assert_eq!(
            run(&["--etcd-prefix=/a", "--etcd-prefix=/b"]).etcd_prefix,
            "/b"
        );
    }

    #[test]
    fn typed_values() {
        let o = run(&[
            "--etcd-endpoints=https://198.18.0.1:2379, https://198.18.0.2:2379,",
            "--public-ip=198.18.0.5",
            "--public-ipv6=fd00::5",
            "--iface-can-reach=198.18.0.9",
            "--healthz-ip=0.0.0.0",
            "--healthz-port=0x1f90",
            "--subnet-lease-renew-margin=1439",
            "--iptables-resync=10",
            "--etcd-keyfile=/k",
            "--etcd-certfile=/c",
            "--etcd-cafile=/ca",
            "--etcd-username=u",
            "--etcd-password=p",
            "--net-config-path=/n.json",
            "--kube-api-url=https://k",
            "--kubeconfig-file=/kc",
            "-v=3",
            "-vmodule=foo=2,bar*=1",
            "-log_backtrace_at=main.go:12",
        ]);
        assert_eq!(
            o.etcd_endpoints,
            vec!["https://198.18.0.1:2379", "https://198.18.0.2:2379"]
        );
        assert_eq!(o.public_ip, Some(Ipv4Addr::new(198, 18, 0, 5)));
        assert_eq!(o.public_ipv6, Some("fd00::5".parse().unwrap()));
        assert_eq!(o.iface_can_reach, Some(Ipv4Addr::new(198, 18, 0, 9)));
        assert_eq!(o.healthz_addr(), Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(o.subnet_lease_renew_margin, 1439);
        assert_eq!(o.iptables_resync, 10);
        assert_eq!(o.etcd_keyfile, Some(PathBuf::from("/k")));
        assert_eq!(o.etcd_certfile, Some(PathBuf::from("/c")));
        assert_eq!(o.etcd_cafile, Some(PathBuf::from("/ca")));
        assert_eq!(o.etcd_username.as_deref(), Some("u"));
        assert_eq!(o.etcd_password.as_ref().map(Secret::expose), Some("p"));
        assert_eq!(o.net_config_path, Some(PathBuf::from("/n.json")));
        assert_eq!(o.kube_api_url.as_deref(), Some("https://k"));
        assert_eq!(o.kubeconfig_file, Some(PathBuf::from("/kc")));
        assert_eq!(o.v, 3);
        assert_eq!(o.log_level(), tracing::Level::TRACE);
        assert_eq!(o.vmodule.as_deref(), Some("foo=2,bar*=1"));
        assert_eq!(o.log_backtrace_at.as_deref(), Some("main.go:12"));
    }

    #[test]
    fn password_is_redacted_in_debug() {
        let o = run(&["--etcd-password=hunter2"]);
        let dbg = format!("{o:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn empty_optional_values_mean_unset() {
        let o = run(&["--public-ip=", "--etcd-keyfile=", "--etcd-username="]);
        assert_eq!(o.public_ip, None);
        assert_eq!(o.etcd_keyfile, None);
        assert_eq!(o.etcd_username, None);
    }

    #[test]
    fn go_integer_syntax() {
        assert_eq!(parse_go_int("8080"), Ok(8080));
        assert_eq!(parse_go_int("+5"), Ok(5));
        assert_eq!(parse_go_int("-5"), Ok(-5));
        assert_eq!(parse_go_int("0x1F"), Ok(31));
        assert_eq!(parse_go_int("0o17"), Ok(15));
        assert_eq!(parse_go_int("017"), Ok(15));
        assert_eq!(parse_go_int("0b101"), Ok(5));
        assert_eq!(parse_go_int("1_000"), Ok(1000));
        assert_eq!(parse_go_int("0x_1f"), Ok(31));
        assert_eq!(parse_go_int("0"), Ok(0));
        assert_eq!(parse_go_int("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(parse_go_int("9223372036854775808"), Err(RANGE_ERROR));
        for bad in [
            "", "abc", "1__0", "_1", "1_", "0x", "08", "1.5", " 1", "--1",
        ] {
            assert_eq!(parse_go_int(bad), Err(PARSE_ERROR), "{bad:?}");
        }
    }

    #[test]
    fn value_errors_name_flag_and_value() {
        assert_eq!(
            err(&["--healthz-port=abc"]),
            r#"invalid value "abc" for flag -healthz-port: parse error"#
        );
        assert_eq!(
            err(&["--healthz-port", "70000"]),
            r#"invalid value "70000" for flag -healthz-port: value out of range"#
        );
        assert_eq!(
            err(&["--public-ip=fd00::1"]),
            r#"invalid value "fd00::1" for flag -public-ip: not an IPv4 address"#
        );
        assert_eq!(
            err(&["--public-ipv6=198.18.0.1"]),
            r#"invalid value "198.18.0.1" for flag -public-ipv6: not an IPv6 address"#
        );
        assert_eq!(
            err(&["--iface-can-reach=nope"]),
            r#"invalid value "nope" for flag -iface-can-reach: not an IP address"#
        );
        assert_eq!(
            err(&["--iptables-resync=0"]),
            r#"invalid value "0" for flag -iptables-resync: must be at least 1 second"#
        );
        assert_eq!(
            err(&["--etcd-endpoints=,"]),
            r#"invalid value "," for flag -etcd-endpoints: no etcd endpoint given"#
        );
        assert_eq!(
            err(&["-v=-1"]),
            r#"invalid value "-1" for flag -v: value out of range"#
        );
        assert!(err(&["-vmodule=foo"]).starts_with(r#"invalid value "foo" for flag -vmodule"#));
        assert!(
            err(&["-log_backtrace_at=x"])
                .starts_with(r#"invalid value "x" for flag -log_backtrace_at"#)
        );
        assert!(err(&["--iface="]).starts_with(r#"invalid value "" for flag -iface"#));
    }

    #[test]
    fn bad_regex_is_one_line_naming_flag_and_value() {
        let e = err(&["--iface-regex=eth[0-"]);
        assert!(
            e.starts_with(
                r#"invalid value "eth[0-" for flag -iface-regex: bad regular expression"#
            ),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let e = err(&["--iface-regex="]);
        assert!(
            e.starts_with(r#"invalid value "" for flag -iface-regex"#),
            "{e}"
        );
    }

    #[test]
    fn renew_margin_range() {
        assert_eq!(
            run(&["--subnet-lease-renew-margin=1"]).subnet_lease_renew_margin,
            1
        );
        for bad in ["0", "1440", "-5"] {
            let e = err(&[&format!("--subnet-lease-renew-margin={bad}")]);
            assert!(
                e.contains("Invalid subnet-lease-renew-margin option, out of acceptable range"),
                "{e}"
            );
            assert!(e.contains(&format!("{bad:?}")), "{e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(err(&["--foo"]), "flag provided but not defined: -foo");
        assert_eq!(err(&["-foo=1"]), "flag provided but not defined: -foo");
        // There is no --ifaceregex spelling.
        assert_eq!(
            err(&["--ifaceregex=x"]),
            "flag provided but not defined: -ifaceregex"
        );
        assert_eq!(err(&["---iface=x"]), "bad flag syntax: ---iface=x");
        assert_eq!(err(&["-=x"]), "bad flag syntax: -=x");
        assert_eq!(
            err(&["--etcd-prefix"]),
            "flag needs an argument: -etcd-prefix"
        );
        assert!(err(&["stray"]).starts_with(r#"unexpected argument "stray""#));
        assert!(err(&["-"]).starts_with(r#"unexpected argument "-""#));
        assert!(err(&["--ip-masq", "lab"]).starts_with(r#"unexpected argument "lab""#));
    }

    #[test]
    fn double_dash_ends_flags() {
        assert!(run(&["--ip-masq", "--"]).ip_masq);
        assert!(err(&["--", "--ip-masq"]).starts_with(r#"unexpected argument "--ip-masq""#));
    }

    #[test]
    fn help_and_version() {
        for h in ["-h", "--help", "-help", "--h", "-help=1"] {
            assert!(
                matches!(parse(&args(&[h]), &no_env), Ok(Command::Help)),
                "{h}"
            );
        }
        assert!(matches!(
            parse(&args(&["--ip-masq", "-h", "--bogus"]), &no_env),
            Ok(Command::Help)
        ));
        for v in [
            &["--version"][..],
            &["-version"],
            &["--ip-masq", "--version=true"],
        ] {
            assert!(
                matches!(parse(&args(v), &no_env), Ok(Command::Version)),
                "{v:?}"
            );
        }
        assert!(matches!(
            parse(&args(&["--version=false"]), &no_env),
            Ok(Command::Run(_))
        ));
        // --version is decided before the environment, so a bad env value does not stop it...
        let bad_env = |k: &str| (k == "FLANNELD_HEALTHZ_PORT").then(|| "x".to_string());
        assert!(matches!(
            parse(&args(&["--version"]), &bad_env),
            Ok(Command::Version)
        ));
        // ...and FLANNELD_VERSION does nothing.
        let ver_env = |k: &str| (k == "FLANNELD_VERSION").then(|| "true".to_string());
        assert!(matches!(parse(&args(&[]), &ver_env), Ok(Command::Run(_))));
    }

    #[test]
    fn subcommands_pass_args_through() {
        match parse(&args(&["lab", "up", "--nodes=3", "-x"]), &no_env) {
            Ok(Command::Sub { name, args: a }) => {
                assert_eq!(name, "lab");
                assert_eq!(a, vec!["up", "--nodes=3", "-x"]);
            }
            other => panic!("{other:?}"),
        }
        for s in ["status", "cleanup"] {
            assert!(matches!(
                parse(&args(&[s]), &no_env),
                Ok(Command::Sub { ref name, ref args }) if name == s && args.is_empty()
            ));
        }
        assert!(err(&["labs"]).starts_with(r#"unexpected argument "labs""#));
    }

    #[test]
    fn env_sets_flags_not_on_command_line() {
        let o = run_env(
            &["--etcd-prefix=/cli"],
            &[
                ("FLANNELD_ETCD_PREFIX", "/env"),
                ("FLANNELD_IP_MASQ", "true"),
                ("FLANNELD_HEALTHZ_PORT", "8471"),
                ("FLANNELD_SUBNET_LEASE_RENEW_MARGIN", "30"),
                ("FLANNELD_PUBLIC_IP", "198.18.0.7"),
                ("FLANNELD_LOG_BACKTRACE_AT", "a.go:1"),
                ("FLANNELD_V", "2"),
                (
                    "FLANNELD_ETCD_ENDPOINTS",
                    "http://198.18.0.1:2379,http://198.18.0.2:2379",
                ),
            ],
        )
        .unwrap();
        assert_eq!(o.etcd_prefix, "/cli", "command line wins");
        assert!(o.ip_masq);
        assert_eq!(o.healthz_port, 8471);
        assert_eq!(o.subnet_lease_renew_margin, 30);
        assert_eq!(o.public_ip, Some(Ipv4Addr::new(198, 18, 0, 7)));
        assert_eq!(o.log_backtrace_at.as_deref(), Some("a.go:1"));
        assert_eq!(o.v, 2);
        assert_eq!(o.etcd_endpoints.len(), 2);
    }

    #[test]
    fn env_bool_false_and_cli_bool_wins() {
        let o = run_env(&[], &[("FLANNELD_IPTABLES_FORWARD_RULES", "false")]).unwrap();
        assert!(!o.iptables_forward_rules);
        let o = run_env(
            &["--iptables-forward-rules"],
            &[("FLANNELD_IPTABLES_FORWARD_RULES", "false")],
        )
        .unwrap();
        assert!(o.iptables_forward_rules);
    }

    #[test]
    fn env_empty_is_ignored() {
        let o = run_env(&[], &[("FLANNELD_ETCD_PREFIX", "")]).unwrap();
        assert_eq!(o.etcd_prefix, "/coreos.com/network");
    }

    #[test]
    fn env_repeatables_give_one_value_and_lose_to_cli() {
        let o = run_env(
            &[],
            &[
                ("FLANNELD_IFACE", "eth0,eth1"),
                ("FLANNELD_IFACE_REGEX", "^e.*"),
            ],
        )
        .unwrap();
        assert_eq!(o.iface, vec!["eth0,eth1"]);
        assert_eq!(o.iface_regex.len(), 1);
        let o = run_env(&["--iface=eth9"], &[("FLANNELD_IFACE", "eth0")]).unwrap();
        assert_eq!(o.iface, vec!["eth9"]);
    }

    #[test]
    fn env_net_config_path_counts_as_given() {
        let o = run_env(&[], &[("FLANNELD_NET_CONFIG_PATH", "/etc/weft/net.json")]).unwrap();
        assert_eq!(o.net_config_path, Some(PathBuf::from("/etc/weft/net.json")));
    }

    #[test]
    fn env_errors_name_variable_flag_and_value() {
        let e = run_env(&[], &[("FLANNELD_HEALTHZ_PORT", "abc")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid value "abc" for FLANNELD_HEALTHZ_PORT (flag -healthz-port): parse error"#
        );
        let e = run_env(&[], &[("FLANNELD_IP_MASQ", "yes")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid value "yes" for FLANNELD_IP_MASQ (flag -ip-masq): parse error"#
        );
        let e = run_env(&[], &[("FLANNELD_SUBNET_LEASE_RENEW_MARGIN", "0")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("Invalid subnet-lease-renew-margin option, out of acceptable range")
        );
        // A bad env value for a flag that the command line set is never read.
        assert!(run_env(&["--healthz-port=1"], &[("FLANNELD_HEALTHZ_PORT", "abc")]).is_ok());
    }

    #[test]
    fn env_var_names() {
        assert_eq!(env_var_name("etcd-endpoints"), "FLANNELD_ETCD_ENDPOINTS");
        assert_eq!(
            env_var_name("log_backtrace_at"),
            "FLANNELD_LOG_BACKTRACE_AT"
        );
        assert_eq!(env_var_name("v"), "FLANNELD_V");
    }

    #[test]
    fn usage_lists_every_flag_with_env_and_default() {
        let u = usage();
        for s in FLAGS {
            assert!(u.contains(&format!("  -{}", s.name)), "{}", s.name);
            if s.env {
                assert!(u.contains(&env_var_name(s.name)), "{}", s.name);
            }
        }
        assert!(!u.contains("FLANNELD_VERSION"));
        assert!(u.contains(r#"(default "/run/flannel/subnet.env")"#));
        assert!(u.contains(r#"(default "127.0.0.1")"#));
    }

    #[test]
    fn random_arguments_never_panic() {
        // Arguments built from flag names, odd prefixes and odd values: parse must answer Ok
        // or a one-line error, never panic.
        let pieces = [
            "-",
            "--",
            "---",
            "=",
            "-=",
            "--=",
            "h",
            "help",
            "lab",
            "x",
            "",
            "é",
            "0x",
            "-1",
            "1_",
            "true",
            "=false",
            "9999999999999999999999",
            "::1",
            "[",
            ",",
            " ",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..5000 {
            let n = rng.usize(0..5);
            let a: Vec<String> = (0..n)
                .map(|_| {
                    let mut s = String::new();
                    for _ in 0..rng.usize(1..4) {
                        if rng.bool() {
                            s.push_str(pieces[rng.usize(..pieces.len())]);
                        } else {
                            s.push_str(FLAGS[rng.usize(..FLAGS.len())].name);
                        }
                    }
                    s
                })
                .collect();
            if let Err(e) = parse(&a, &no_env) {
                assert!(!e.to_string().contains('\n'), "{a:?}: {e}");
            }
        }
    }

    #[test]
    fn every_flag_is_accepted() {
        // Each flag parses with a plausible value, so the table and `set` agree.
        for s in FLAGS {
            let value = match s.id {
                Id::IfaceCanReach | Id::PublicIp | Id::HealthzIp => "198.18.0.1",
                Id::PublicIpv6 => "fd00::1",
                Id::SubnetLeaseRenewMargin | Id::HealthzPort | Id::IptablesResync | Id::V => "1",
                Id::Vmodule => "x=1",
                Id::LogBacktraceAt => "x.go:1",
                _ if s.kind == Kind::Bool => "true",
                _ => "x",
            };
            let r = parse(&args(&[&format!("--{}={value}", s.name)]), &no_env);
            assert!(r.is_ok(), "{}: {r:?}", s.name);
        }
    }
}
