//! The agent's flags: flanneld's, with flannel's names, defaults and environment variables, plus
//! weft's own few (marked "weft:" in their help). One field per flag; its doc comment is the
//! `--help` text, its attributes the name, default and `FLANNELD_<NAME>` variable. Values are
//! checked by the `parse_*` functions below, so a bad value is reported with the flag's name
//! before the agent starts.
//!
//! A few types are written as `::std::option::Option` / `::std::vec::Vec`: that tells clap's
//! derive to treat them as one plain value (an empty string parses to `None`, a comma-separated
//! list to one `Vec`) instead of "optional flag" / "repeated flag".
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use clap::{ArgAction, FromArgMatches as _};
use regex::Regex;

/// The `--peer-cache-file` of a daemon that was given none: [`DEFAULT_PEER_CACHE_FILE`] for
/// flannel's default `--etcd-prefix`; for another prefix (a second network on the host: flannel's
/// "multiple networks") a file of its own, `peers-<prefix with / as _>.json` beside it, so two
/// daemons never boot from each other's peers.
pub fn default_peer_cache_file(etcd_prefix: &str) -> PathBuf {
    let prefix = etcd_prefix.trim_matches('/');
    if prefix == "coreos.com/network" {
        return PathBuf::from(DEFAULT_PEER_CACHE_FILE);
    }
    let name: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    PathBuf::from(DEFAULT_PEER_CACHE_FILE).with_file_name(format!("peers-{name}.json"))
}

/// weft's default for `--peer-cache-file`: on disk, so it survives a reboot.
pub const DEFAULT_PEER_CACHE_FILE: &str = "/var/lib/weft/peers.json";

/// flannel's default for `--net-config-path` (used in kube mode).
pub const DEFAULT_NET_CONFIG_PATH: &str = "/etc/kube-flannel/net-conf.json";

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

/// `--log-color`: when log lines on stderr carry ANSI colour codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogColor {
    /// Colour only when stderr is a terminal and `NO_COLOR` is unset or empty.
    Auto,
    /// Always colour (an explicit request wins over `NO_COLOR`).
    Always,
    /// Never colour.
    Never,
}

impl LogColor {
    /// Whether to colour, given whether stderr is a terminal and the value of `NO_COLOR`.
    pub fn enabled(self, stderr_is_terminal: bool, no_color: Option<&str>) -> bool {
        match self {
            LogColor::Always => true,
            LogColor::Never => false,
            LogColor::Auto => stderr_is_terminal && no_color.is_none_or(str::is_empty),
        }
    }
}

/// Every flanneld flag weft accepts, typed, with flannel's defaults (see [`Options::default`]);
/// weft's deviations are noted in the help text and in README's flag table.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Agent flags (flanneld's; also -flag, -flag=value, FLANNELD_<NAME>)")]
pub struct Options {
    /// Comma-separated etcd endpoints, each http://host:port or https://host:port
    #[arg(long, env = "FLANNELD_ETCD_ENDPOINTS", value_name = "URLS",
          default_value = "http://127.0.0.1:4001,http://127.0.0.1:2379",
          value_parser = parse_endpoints)]
    pub etcd_endpoints: ::std::vec::Vec<String>,

    /// etcd prefix: the config is <prefix>/config, leases are under <prefix>/subnets/
    #[arg(
        long,
        env = "FLANNELD_ETCD_PREFIX",
        value_name = "PREFIX",
        default_value = "/coreos.com/network"
    )]
    pub etcd_prefix: String,

    /// SSL key file used to secure etcd communication
    #[arg(long, env = "FLANNELD_ETCD_KEYFILE", value_name = "PATH", default_value = "",
          hide_default_value = true, value_parser = parse_optional_path)]
    pub etcd_keyfile: ::std::option::Option<PathBuf>,

    /// SSL certification file used to secure etcd communication
    #[arg(long, env = "FLANNELD_ETCD_CERTFILE", value_name = "PATH", default_value = "",
          hide_default_value = true, value_parser = parse_optional_path)]
    pub etcd_certfile: ::std::option::Option<PathBuf>,

    /// SSL Certificate Authority file used to secure etcd communication
    #[arg(long, env = "FLANNELD_ETCD_CAFILE", value_name = "PATH", default_value = "",
          hide_default_value = true, value_parser = parse_optional_path)]
    pub etcd_cafile: ::std::option::Option<PathBuf>,

    /// Username for BasicAuth to etcd
    #[arg(long, env = "FLANNELD_ETCD_USERNAME", value_name = "NAME", default_value = "",
          hide_default_value = true, value_parser = parse_optional_string)]
    pub etcd_username: ::std::option::Option<String>,

    /// Password for BasicAuth to etcd (never logged)
    #[arg(long, env = "FLANNELD_ETCD_PASSWORD", value_name = "PASSWORD", default_value = "",
          hide_default_value = true, value_parser = parse_optional_secret)]
    pub etcd_password: ::std::option::Option<Secret>,

    /// Interface to use (IPv4 address or name) for inter-host communication; repeatable, tried
    /// in order (the environment variable gives one value)
    #[arg(long, env = "FLANNELD_IFACE", value_name = "IP|NAME", value_parser = parse_iface)]
    pub iface: Vec<String>,

    /// Regex matching the interface address, then name, to use for inter-host communication;
    /// repeatable, tried after every --iface (Rust regex syntax, which agrees with Go's RE2 for
    /// the usual patterns)
    #[arg(long, env = "FLANNELD_IFACE_REGEX", value_name = "REGEX",
          value_parser = parse_iface_regex)]
    pub iface_regex: Vec<Regex>,

    /// Use the interface (and source address) of the route to this IPv4 or IPv6 address
    #[arg(long, env = "FLANNELD_IFACE_CAN_REACH", value_name = "IP", default_value = "",
          hide_default_value = true, value_parser = parse_optional_ip)]
    pub iface_can_reach: ::std::option::Option<IpAddr>,

    /// File where the subnet, MTU, ... are written for the CNI plugin
    #[arg(long, env = "FLANNELD_SUBNET_FILE", value_name = "PATH",
          default_value = "/run/flannel/subnet.env", value_parser = parse_path)]
    pub subnet_file: PathBuf,

    /// IPv4 address accessible by other nodes for inter-host communication
    #[arg(long, env = "FLANNELD_PUBLIC_IP", value_name = "IP", default_value = "",
          hide_default_value = true, value_parser = parse_optional_ipv4)]
    pub public_ip: ::std::option::Option<Ipv4Addr>,

    /// IPv6 address accessible by other nodes for inter-host communication
    #[arg(long, env = "FLANNELD_PUBLIC_IPV6", value_name = "IP", default_value = "",
          hide_default_value = true, value_parser = parse_optional_ipv6)]
    pub public_ipv6: ::std::option::Option<Ipv6Addr>,

    /// Subnet lease renewal margin, in minutes before expiry (1..1439)
    #[arg(long, env = "FLANNELD_SUBNET_LEASE_RENEW_MARGIN", value_name = "MINUTES",
          default_value = "60", value_parser = parse_renew_margin)]
    pub subnet_lease_renew_margin: u32,

    /// Set up an IP masquerade rule for traffic leaving the overlay network
    #[arg(long, env = "FLANNELD_IP_MASQ", value_name = "BOOL", action = ArgAction::Set,
          default_value = "false", value_parser = parse_bool)]
    pub ip_masq: bool,

    /// Leave --random-fully out of the masquerade rules
    #[arg(long, env = "FLANNELD_IP_MASQ_FULLY_RANDOM_DISABLE", value_name = "BOOL",
          action = ArgAction::Set, default_value = "false", value_parser = parse_bool)]
    pub ip_masq_fully_random_disable: bool,

    /// Contact the Kubernetes API for subnet assignment instead of etcd
    #[arg(long, env = "FLANNELD_KUBE_SUBNET_MGR", value_name = "BOOL", action = ArgAction::Set,
          default_value = "false", value_parser = parse_bool)]
    pub kube_subnet_mgr: bool,

    /// Kubernetes API server URL; not needed in-cluster
    #[arg(long, env = "FLANNELD_KUBE_API_URL", value_name = "URL", default_value = "",
          hide_default_value = true, value_parser = parse_optional_string)]
    pub kube_api_url: ::std::option::Option<String>,

    /// Kubernetes annotation prefix
    #[arg(long, env = "FLANNELD_KUBE_ANNOTATION_PREFIX", value_name = "PREFIX",
          default_value = "flannel.alpha.coreos.com", value_parser = parse_annotation_prefix)]
    pub kube_annotation_prefix: String,

    /// kubeconfig file location; not needed in-cluster
    #[arg(long, env = "FLANNELD_KUBECONFIG_FILE", value_name = "PATH", default_value = "",
          hide_default_value = true, value_parser = parse_optional_path)]
    pub kubeconfig_file: ::std::option::Option<PathBuf>,

    // weft deviation: 127.0.0.1, not flannel's 0.0.0.0, so the health endpoints are not exposed
    // on every interface unless asked for (targets R7).
    /// IP address the health server listens on (weft: flannel's default is 0.0.0.0)
    #[arg(long, env = "FLANNELD_HEALTHZ_IP", value_name = "IP", default_value = "127.0.0.1",
          value_parser = parse_ip)]
    pub healthz_ip: IpAddr,

    // weft rejects values outside 0..=65535 at parse time, where flannel fails later when
    // listening.
    /// Port the health server listens on (0: no health server)
    #[arg(long, env = "FLANNELD_HEALTHZ_PORT", value_name = "PORT", default_value = "0",
          value_parser = parse_port)]
    pub healthz_port: u16,

    /// Resync period of the iptables rules, in seconds (at least 1)
    #[arg(long, env = "FLANNELD_IPTABLES_RESYNC", value_name = "SECONDS", default_value = "5",
          value_parser = parse_resync)]
    pub iptables_resync: u32,

    /// Add accept rules for the pod network to the FORWARD chain
    #[arg(long, env = "FLANNELD_IPTABLES_FORWARD_RULES", value_name = "BOOL",
          action = ArgAction::Set, default_value = "true", value_parser = parse_bool)]
    pub iptables_forward_rules: bool,

    /// Add a blackhole route covering this node's subnet
    #[arg(long, env = "FLANNELD_IP_BLACKHOLE_ROUTE", value_name = "BOOL",
          action = ArgAction::Set, default_value = "false", value_parser = parse_bool)]
    pub ip_blackhole_route: bool,

    /// Network configuration file [default: /etc/kube-flannel/net-conf.json]; weft: when given,
    /// the config is read from it (and watched) even in etcd mode
    // `Some` only when given (command line or environment); see
    // [`Options::net_config_path_or_default`] for flannel's default.
    #[arg(long, env = "FLANNELD_NET_CONFIG_PATH", value_name = "PATH", value_parser = parse_path)]
    pub net_config_path: Option<PathBuf>,

    /// Set the Node NetworkUnavailable condition (kube mode)
    #[arg(long, env = "FLANNELD_SET_NODE_NETWORK_UNAVAILABLE", value_name = "BOOL",
          action = ArgAction::Set, default_value = "true", value_parser = parse_bool)]
    pub set_node_network_unavailable: bool,

    /// weft: where the last known config, lease and peers are kept, to program them at boot
    /// while etcd is unreachable (empty: no cache)
    #[arg(long, env = "FLANNELD_PEER_CACHE_FILE", value_name = "PATH",
          default_value = DEFAULT_PEER_CACHE_FILE, value_parser = parse_optional_path)]
    pub peer_cache_file: ::std::option::Option<PathBuf>,

    /// weft: write peer routes on kernel nexthop objects (ip route ... nhid N) where the kernel
    /// has them; false: plain routes (ip route ... via GW), as flanneld writes them
    #[arg(long, env = "FLANNELD_ROUTE_NEXTHOPS", value_name = "BOOL", action = ArgAction::Set,
          default_value = "true", value_parser = parse_bool)]
    pub route_nexthops: bool,

    /// weft: ANSI colours in the logs: auto (only when stderr is a terminal and NO_COLOR is
    /// unset or empty), always or never
    #[arg(long, env = "FLANNELD_LOG_COLOR", value_name = "WHEN", default_value = "auto",
          value_parser = parse_log_color)]
    pub log_color: LogColor,

    /// klog's log verbosity: 0 info, 1-2 debug, 3+ trace (RUST_LOG, when set, wins)
    #[arg(long = "v", env = "FLANNELD_V", value_name = "LEVEL", default_value = "0",
          value_parser = parse_klog_level)]
    pub v: u8,

    /// Accepted for klog compatibility (comma-separated pattern=N); has no effect
    #[arg(long, env = "FLANNELD_VMODULE", value_name = "PATTERN=N,...", default_value = "",
          hide_default_value = true, value_parser = parse_vmodule)]
    pub vmodule: ::std::option::Option<String>,

    /// Accepted for klog compatibility (file.go:line); has no effect
    #[arg(long = "log_backtrace_at", env = "FLANNELD_LOG_BACKTRACE_AT",
          value_name = "FILE:LINE", default_value = "", hide_default_value = true,
          value_parser = parse_backtrace_at)]
    pub log_backtrace_at: ::std::option::Option<String>,
}

impl Default for Options {
    /// Every flag at its default, as `weft` with no flags and no environment gets them.
    fn default() -> Self {
        let cmd = <Options as clap::Args>::augment_args(clap::Command::new("weft"))
            .mut_args(|a| a.env(None));
        let matches = cmd
            .try_get_matches_from(["weft"])
            .expect("the default of every flag parses");
        Options::from_arg_matches(&matches).expect("the defaults make an Options")
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

    /// How to reach the Kubernetes API, from the `--kube*` flags (agent, `weft status`).
    pub fn kube_options(&self) -> crate::lease::kube::KubeOptions {
        crate::lease::kube::KubeOptions {
            kubeconfig: self.kubeconfig_file.clone(),
            api_url: self.kube_api_url.clone(),
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

// ===== value parsers: `Err` is the reason; the caller names the flag and the value =====

pub(super) const PARSE_ERROR: &str = "parse error";
pub(super) const RANGE_ERROR: &str = "value out of range";

/// Go's `strconv.ParseBool`.
pub(super) fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

pub(super) fn parse_bool(s: &str) -> Result<bool, String> {
    go_bool(s).ok_or_else(|| PARSE_ERROR.to_string())
}

/// Go's `strconv.ParseInt(s, 0, 64)`: optional sign, base prefixes `0x`/`0o`/`0b`, a leading
/// `0` for octal, underscores only between digits (or right after a base prefix).
pub(super) fn parse_go_int(s: &str) -> Result<i64, &'static str> {
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

fn go_int(v: &str) -> Result<i64, String> {
    parse_go_int(v).map_err(str::to_string)
}

/// `--etcd-endpoints`: comma-separated; surrounding spaces and empty items are dropped. Each
/// item must be `http://host:port` or `https://host:port` (an optional trailing `/`): anything
/// else would be tried as a host name forever.
fn parse_endpoints(v: &str) -> Result<Vec<String>, String> {
    let eps: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if eps.is_empty() {
        return Err("no etcd endpoint given".to_string());
    }
    for ep in &eps {
        check_endpoint(ep)
            .map_err(|why| format!("{ep:?} is not an http(s)://host:port URL: {why}"))?;
    }
    Ok(eps)
}

/// Checks one etcd endpoint: scheme `http` or `https`, a host (a name, an IPv4 address or an
/// IPv6 address in brackets), a port 1..=65535, nothing after but an optional `/`.
pub(super) fn check_endpoint(ep: &str) -> Result<(), &'static str> {
    let rest = ep
        .strip_prefix("http://")
        .or_else(|| ep.strip_prefix("https://"))
        .ok_or("the scheme must be http:// or https://")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (h, after) = bracketed.split_once(']').ok_or("unclosed [ in the host")?;
        h.parse::<Ipv6Addr>()
            .map_err(|_| "not an IPv6 address in [ ]")?;
        (h, after.strip_prefix(':').ok_or("no :port")?)
    } else {
        rest.rsplit_once(':').ok_or("no :port")?
    };
    if host.is_empty() {
        return Err("no host");
    }
    let host_ok = host.contains(':')
        || host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !host_ok {
        return Err("the host has characters a host name cannot have");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err("the port must be a number 1..65535"),
    }
}

fn parse_optional_path(v: &str) -> Result<Option<PathBuf>, String> {
    Ok((!v.is_empty()).then(|| PathBuf::from(v)))
}

fn parse_optional_string(v: &str) -> Result<Option<String>, String> {
    Ok((!v.is_empty()).then(|| v.to_string()))
}

fn parse_optional_secret(v: &str) -> Result<Option<Secret>, String> {
    Ok((!v.is_empty()).then(|| Secret::new(v)))
}

fn parse_path(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        return Err("empty path".to_string());
    }
    Ok(PathBuf::from(v))
}

fn parse_iface(v: &str) -> Result<String, String> {
    if v.is_empty() {
        return Err("empty interface name or address".to_string());
    }
    Ok(v.to_string())
}

fn parse_iface_regex(v: &str) -> Result<Regex, String> {
    if v.is_empty() {
        return Err("empty regular expression (it would match every interface)".to_string());
    }
    Regex::new(v).map_err(|e| one_line_regex_error(&e))
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

fn parse_ip(v: &str) -> Result<IpAddr, String> {
    v.parse::<IpAddr>()
        .map_err(|_| "not an IP address".to_string())
}

fn parse_optional_ipv4(v: &str) -> Result<Option<Ipv4Addr>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    match parse_ip(v)? {
        IpAddr::V4(a) => Ok(Some(a)),
        IpAddr::V6(_) => Err("not an IPv4 address".to_string()),
    }
}

fn parse_optional_ip(v: &str) -> Result<Option<IpAddr>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    parse_ip(v).map(Some)
}

fn parse_optional_ipv6(v: &str) -> Result<Option<Ipv6Addr>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    match parse_ip(v)? {
        IpAddr::V6(a) => Ok(Some(a)),
        IpAddr::V4(_) => Err("not an IPv6 address".to_string()),
    }
}

fn parse_renew_margin(v: &str) -> Result<u32, String> {
    let n = go_int(v)?;
    // Go accepts any int here and flannel range-checks afterwards with this text.
    match u32::try_from(n) {
        Ok(m) if (1..=1439).contains(&m) => Ok(m),
        _ => Err(
            "Invalid subnet-lease-renew-margin option, out of acceptable \
                  range (must be 1..=1439 minutes)"
                .to_string(),
        ),
    }
}

fn parse_annotation_prefix(v: &str) -> Result<String, String> {
    if v.is_empty() {
        return Err("empty annotation prefix".to_string());
    }
    Ok(v.to_string())
}

fn parse_port(v: &str) -> Result<u16, String> {
    u16::try_from(go_int(v)?).map_err(|_| RANGE_ERROR.to_string())
}

fn parse_resync(v: &str) -> Result<u32, String> {
    let secs = u32::try_from(go_int(v)?).map_err(|_| RANGE_ERROR.to_string())?;
    if secs == 0 {
        return Err("must be at least 1 second".to_string());
    }
    Ok(secs)
}

fn parse_log_color(v: &str) -> Result<LogColor, String> {
    match v {
        "auto" => Ok(LogColor::Auto),
        "always" => Ok(LogColor::Always),
        "never" => Ok(LogColor::Never),
        _ => Err("must be auto, always or never".to_string()),
    }
}

fn parse_klog_level(v: &str) -> Result<u8, String> {
    // klog parses the level as a base-10 int32.
    let n: i64 = v.parse().map_err(|_| PARSE_ERROR.to_string())?;
    u8::try_from(n).map_err(|_| RANGE_ERROR.to_string())
}

/// klog's vmodule syntax: comma-separated `pattern=N`; empty is allowed.
fn parse_vmodule(v: &str) -> Result<Option<String>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    for item in v.split(',') {
        let ok = item
            .split_once('=')
            .is_some_and(|(pat, n)| !pat.is_empty() && n.parse::<i32>().is_ok());
        if !ok {
            return Err("syntax error: expect comma-separated list of filename=N".to_string());
        }
    }
    Ok(Some(v.to_string()))
}

/// klog's log_backtrace_at syntax: `file.go:234`; empty is allowed.
fn parse_backtrace_at(v: &str) -> Result<Option<String>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    let ok = v
        .rsplit_once(':')
        .is_some_and(|(file, line)| !file.is_empty() && line.parse::<u32>().is_ok());
    if ok {
        Ok(Some(v.to_string()))
    } else {
        Err("syntax error: expect file.go:234".to_string())
    }
}
