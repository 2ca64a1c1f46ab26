//! The flannel CNI plugin's network configuration and the delegate configuration it renders
//! from it and subnet.env (docs/flannel-compat.md §8). Pure: bytes and values in, values or
//! [`CniError`] out.
//!
//! Input (what a runtime passes on stdin, usually from a `.conflist` entry with `"type":
//! "flannel"`):
//!
//! ```json
//! {"cniVersion":"1.0.0","name":"cbr0","type":"flannel",
//!  "subnetFile":"/run/flannel/subnet.env","dataDir":"/var/lib/cni/flannel",
//!  "delegate":{"hairpinMode":true,"isDefaultGateway":true},
//!  "ipam":{"routes":[{"dst":"192.0.2.0/24"}]}}
//! ```
//!
//! Output for `FLANNEL_NETWORK=10.244.0.0/16 FLANNEL_SUBNET=10.244.76.1/24 FLANNEL_MTU=1450
//! FLANNEL_IPMASQ=true` (keys sorted, as Go's encoder writes a map):
//!
//! ```json
//! {"cniVersion":"1.0.0","hairpinMode":true,"ipMasq":false,
//!  "ipam":{"ranges":[[{"subnet":"10.244.76.0/24"}]],
//!          "routes":[{"dst":"192.0.2.0/24"},{"dst":"10.244.0.0/16"}],"type":"host-local"},
//!  "isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}
//! ```
use std::fmt;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use net_conf::{SubnetEnv, SubnetEnvError};
use serde_json::{Map, Value, json};

/// The CNI spec versions this plugin accepts (those the delegates Debian and upstream ship
/// understand; the result is the delegate's own, passed through).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"];
/// The version this plugin answers `VERSION` and errors with when the config has none.
pub const CURRENT_VERSION: &str = "1.0.0";
/// flannel's default `subnetFile`.
pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
/// flannel's default `dataDir` (one saved delegate config per container).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/flannel";
/// The delegate plugin when `delegate.type` is not given.
pub const DEFAULT_DELEGATE_TYPE: &str = "bridge";
/// The IPAM plugin when `ipam.type` is not given.
pub const DEFAULT_IPAM_TYPE: &str = "host-local";

/// Error codes of the CNI specification ("Error" section).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// What libcni's skeleton reports for any other plugin error (flannel's plugin included).
    pub const INTERNAL: u32 = 999;
}

/// A CNI error: printed on stdout as `{"cniVersion","code","msg","details"}` with a non-zero
/// exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// The error object of the CNI spec (`details` only when set), one line.
    pub fn to_json(&self, cni_version: &str) -> String {
        let mut obj = Map::new();
        obj.insert("cniVersion".into(), Value::from(cni_version));
        obj.insert("code".into(), Value::from(self.code));
        obj.insert("msg".into(), Value::from(self.msg.as_str()));
        if !self.details.is_empty() {
            obj.insert("details".into(), Value::from(self.details.as_str()));
        }
        Value::Object(obj).to_string()
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)
    }
}

impl std::error::Error for CniError {}

/// The plugin's netconf, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion` as given ("" when absent; then the delegate gets none either).
    pub cni_version: String,
    /// `name`: becomes the delegate's `name`.
    pub name: String,
    pub subnet_file: PathBuf,
    pub data_dir: PathBuf,
    /// `delegate` (without `name` and `ipam`, which the plugin sets).
    pub delegate: Map<String, Value>,
    /// `ipam`: merged into the delegate's IPAM section.
    pub ipam: Option<Map<String, Value>>,
    /// `runtimeConfig`: copied into the delegate.
    pub runtime_config: Option<Value>,
    /// `prevResult` (CHECK, chained DEL): handed to the delegate on CHECK.
    pub prev_result: Option<Value>,
}

impl NetConf {
    /// The version the config speaks: `cniVersion`, or 0.1.0 when absent (libcni's rule).
    pub fn effective_version(&self) -> &str {
        if self.cni_version.is_empty() {
            "0.1.0"
        } else {
            &self.cni_version
        }
    }
}

/// Parses and checks the netconf from stdin. Errors name the field and the value.
pub fn parse_netconf(bytes: &[u8]) -> Result<NetConf, CniError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        CniError::new(
            code::DECODING_FAILURE,
            format!("failed to load netconf: {e}"),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(CniError::new(
            code::DECODING_FAILURE,
            format!("failed to load netconf: expected a JSON object, got {value}"),
        ));
    };
    let cni_version = opt_string(&obj, "cniVersion")?.unwrap_or_default();
    let name = opt_string(&obj, "name")?.unwrap_or_default();
    let subnet_file = opt_string(&obj, "subnetFile")?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_SUBNET_FILE.to_owned());
    let data_dir = opt_string(&obj, "dataDir")?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_DATA_DIR.to_owned());

    let delegate = match obj.get("delegate") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(d)) => d.clone(),
        Some(other) => {
            return Err(invalid(format!(
                "'delegate' must be a JSON object, got {other}"
            )));
        }
    };
    if let Some(t) = delegate.get("type") {
        if !t.is_string() {
            return Err(invalid(format!(
                "'delegate' dictionary, if present, must have (string) 'type' field, got {t}"
            )));
        }
    }
    if delegate.contains_key("name") {
        return Err(invalid(
            "'delegate' dictionary must not have 'name' field, it'll be set by flannel",
        ));
    }
    if delegate.contains_key("ipam") {
        return Err(invalid(
            "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel",
        ));
    }
    let ipam = match obj.get("ipam") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(other) => {
            return Err(invalid(format!(
                "'ipam' must be a JSON object, got {other}"
            )));
        }
    };
    let runtime_config = obj.get("runtimeConfig").filter(|v| !v.is_null()).cloned();
    let prev_result = obj.get("prevResult").filter(|v| !v.is_null()).cloned();
    Ok(NetConf {
        cni_version,
        name,
        subnet_file: PathBuf::from(subnet_file),
        data_dir: PathBuf::from(data_dir),
        delegate,
        ipam,
        runtime_config,
        prev_result,
    })
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_NETWORK_CONFIG, msg)
}

fn opt_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(format!("'{key}' must be a string, got {other}"))),
    }
}

/// Checks the config's version against [`SUPPORTED_VERSIONS`] (libcni's wording).
pub fn check_version(conf: &NetConf) -> Result<(), CniError> {
    let v = conf.effective_version();
    if SUPPORTED_VERSIONS.contains(&v) {
        Ok(())
    } else {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "incompatible CNI versions; config is \"{v}\", plugin supports [{}]",
                SUPPORTED_VERSIONS.join(" ")
            ),
        ))
    }
}

/// Whether `version` (`x.y.z`) is at least 0.4.0, the first version with CHECK. An empty or
/// unparsable version counts as older.
pub fn allows_check(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= (0, 4),
        _ => false,
    }
}

/// The `VERSION` answer.
pub fn version_json() -> String {
    json!({"cniVersion": CURRENT_VERSION, "supportedVersions": SUPPORTED_VERSIONS}).to_string()
}

/// Parses the text of `path` (or the error reading it) as the plugin does and wraps a failure
/// as flannel does: `failed to load flannel 'subnet.env' file: open /run/flannel/subnet.env: no
/// such file or directory. Check the flannel pod log for this node.`
pub fn load_subnet_env(path: &Path, read: std::io::Result<String>) -> Result<SubnetEnv, CniError> {
    let inner = match read {
        Err(e) => format!("open {}: {}", path.display(), io_error_text(&e)),
        Ok(text) => match SubnetEnv::parse(&text) {
            Ok(env) => return Ok(env),
            Err(SubnetEnvError::Missing { keys }) => {
                format!("{} is missing {}", path.display(), keys.join(", "))
            }
            Err(e @ SubnetEnvError::Value { .. }) => format!("{}: {e}", path.display()),
        },
    };
    Err(CniError::new(
        code::INTERNAL,
        format!(
            "failed to load flannel 'subnet.env' file: {inner}. Check the flannel pod log for this node."
        ),
    ))
}

/// The errno text in Go's lower-case style (`no such file or directory`), without Rust's
/// `(os error 2)` suffix.
fn io_error_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

/// Renders the delegate config exactly as flannel: `name` = the network name; `type` default
/// `bridge`; `ipMasq` default = NOT `FLANNEL_IPMASQ` (flanneld masquerades, or the bridge
/// does); `mtu` default `FLANNEL_MTU`; for `bridge`, `isGateway` default true; `cniVersion`
/// copied when set; `runtimeConfig` copied; `ipam` from [`build_ipam`].
pub fn build_delegate(conf: &NetConf, env: &SubnetEnv) -> Result<Map<String, Value>, CniError> {
    let mut d = conf.delegate.clone();
    d.insert("name".into(), Value::from(conf.name.as_str()));
    d.entry("type")
        .or_insert_with(|| Value::from(DEFAULT_DELEGATE_TYPE));
    d.entry("ipMasq").or_insert(Value::Bool(!env.ipmasq));
    d.entry("mtu").or_insert(Value::from(env.mtu));
    if d.get("type").and_then(Value::as_str) == Some("bridge") {
        d.entry("isGateway").or_insert(Value::Bool(true));
    }
    if !conf.cni_version.is_empty() {
        d.insert("cniVersion".into(), Value::from(conf.cni_version.as_str()));
    }
    if let Some(rc) = &conf.runtime_config {
        d.insert("runtimeConfig".into(), rc.clone());
    }
    d.insert("ipam".into(), Value::Object(build_ipam(conf, env)?));
    Ok(d)
}

/// The delegate's IPAM section: the user's `ipam` keys (e.g. `dataDir`), `type` default
/// `host-local`, `ranges` = one range set per family with the node's subnet (`[[{"subnet":
/// "10.244.76.0/24"}]]`), `routes` = the user's routes then one `{"dst": <network>}` per
/// flannel network.
pub fn build_ipam(conf: &NetConf, env: &SubnetEnv) -> Result<Map<String, Value>, CniError> {
    let mut ipam = conf.ipam.clone().unwrap_or_default();
    ipam.entry("type")
        .or_insert_with(|| Value::from(DEFAULT_IPAM_TYPE));

    let mut ranges = Vec::new();
    if let Some(s) = env.subnet {
        ranges.push(json!([{"subnet": s.to_string()}]));
    }
    if let Some(s) = env.ipv6_subnet {
        ranges.push(json!([{"subnet": s.to_string()}]));
    }
    ipam.insert("ranges".into(), Value::Array(ranges));

    let mut routes = user_routes(ipam.get("routes"))?;
    for n in env.network.iter().chain(&env.more_networks) {
        routes.push(json!({"dst": n.to_string()}));
    }
    for n in env.ipv6_network.iter().chain(&env.more_ipv6_networks) {
        routes.push(json!({"dst": n.to_string()}));
    }
    ipam.insert("routes".into(), Value::Array(routes));
    Ok(ipam)
}

/// The user's `ipam.routes`: an array of objects whose `dst` is a CIDR (and optional `gw`).
fn user_routes(routes: Option<&Value>) -> Result<Vec<Value>, CniError> {
    let list = match routes {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(invalid(format!(
                "failed to read ipam.routes: expected an array, got {other}"
            )));
        }
    };
    for (i, r) in list.iter().enumerate() {
        let dst = r.get("dst").and_then(Value::as_str);
        match dst.map(str::parse::<IpNet>) {
            Some(Ok(_)) => {}
            _ => {
                return Err(invalid(format!(
                    "failed to read ipam.routes[{i}]: 'dst' must be a CIDR string, got {r}"
                )));
            }
        }
    }
    Ok(list.clone())
}

/// Whether a container ID is safe as a file name and matches libcni's rule
/// (`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`).
pub fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Whether an interface name is acceptable (libcni: 1..=15 bytes, not `.`/`..`, no `/`, `:`
/// or whitespace).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// A delegate plugin type is a bare executable name found in `CNI_PATH`.
pub fn valid_plugin_type(t: &str) -> bool {
    !t.is_empty() && t != "." && t != ".." && !t.contains('/')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;

    fn env(text: &str) -> SubnetEnv {
        SubnetEnv::parse(text).unwrap()
    }

    fn v4_env(ipmasq: bool) -> SubnetEnv {
        env(&format!(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.76.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ={ipmasq}\n"
        ))
    }

    fn conf(text: &str) -> NetConf {
        parse_netconf(text.as_bytes()).unwrap()
    }

    #[test]
    fn defaults_of_the_netconf() {
        let c = conf(r#"{"name":"cbr0","type":"flannel"}"#);
        assert_eq!(c.subnet_file, Path::new("/run/flannel/subnet.env"));
        assert_eq!(c.data_dir, Path::new("/var/lib/cni/flannel"));
        assert_eq!(c.cni_version, "");
        assert_eq!(c.effective_version(), "0.1.0");
        assert!(c.delegate.is_empty());
        assert!(c.ipam.is_none());
    }

    #[test]
    fn kube_flannel_conflist_entry_renders_flannels_delegate() {
        let c = conf(
            r#"{"cniVersion":"0.3.1","name":"cbr0","type":"flannel",
                "delegate":{"hairpinMode":true,"isDefaultGateway":true}}"#,
        );
        let d = build_delegate(&c, &v4_env(true)).unwrap();
        assert_eq!(
            Value::Object(d.clone()),
            json!({
                "cniVersion": "0.3.1",
                "hairpinMode": true,
                "ipMasq": false,
                "ipam": {
                    "ranges": [[{"subnet": "10.244.76.0/24"}]],
                    "routes": [{"dst": "10.244.0.0/16"}],
                    "type": "host-local"
                },
                "isDefaultGateway": true,
                "isGateway": true,
                "mtu": 1450,
                "name": "cbr0",
                "type": "bridge"
            })
        );
        // Keys come out sorted, as Go's encoder writes a map.
        let text = Value::Object(d).to_string();
        assert!(
            text.starts_with(
                r#"{"cniVersion":"0.3.1","hairpinMode":true,"ipMasq":false,"ipam":{"ranges""#
            ),
            "{text}"
        );
    }

    #[test]
    fn ip_masq_default_is_the_opposite_of_flanneld() {
        let c = conf(r#"{"name":"n"}"#);
        assert_eq!(build_delegate(&c, &v4_env(true)).unwrap()["ipMasq"], false);
        assert_eq!(build_delegate(&c, &v4_env(false)).unwrap()["ipMasq"], true);
    }

    #[test]
    fn user_values_win_over_defaults() {
        let c = conf(
            r#"{"name":"n","delegate":{"type":"bridge","bridge":"kbr0","ipMasq":false,
                "mtu":1400,"isGateway":false}}"#,
        );
        let d = build_delegate(&c, &v4_env(false)).unwrap();
        assert_eq!(d["ipMasq"], false);
        assert_eq!(d["mtu"], 1400);
        assert_eq!(d["isGateway"], false);
        assert_eq!(d["bridge"], "kbr0");
    }

    #[test]
    fn is_gateway_only_for_bridge() {
        let c = conf(r#"{"name":"n","delegate":{"type":"ipvlan","master":"eth0"}}"#);
        let d = build_delegate(&c, &v4_env(true)).unwrap();
        assert_eq!(d["type"], "ipvlan");
        assert!(!d.contains_key("isGateway"), "{d:?}");
        assert_eq!(d["mtu"], 1450);
    }

    #[test]
    fn no_cni_version_means_none_in_the_delegate() {
        let d = build_delegate(&conf(r#"{"name":"n"}"#), &v4_env(true)).unwrap();
        assert!(!d.contains_key("cniVersion"));
    }

    #[test]
    fn user_ipam_is_merged_and_routes_come_first() {
        let c = conf(
            r#"{"cniVersion":"1.0.0","name":"n","ipam":{"dataDir":"/tmp/x",
                "routes":[{"dst":"192.0.2.0/24","gw":"10.244.76.254"}],
                "ranges":[[{"subnet":"172.16.0.0/24"}]]}}"#,
        );
        let d = build_delegate(&c, &v4_env(true)).unwrap();
        assert_eq!(
            d["ipam"],
            json!({
                "dataDir": "/tmp/x",
                "ranges": [[{"subnet": "10.244.76.0/24"}]],
                "routes": [
                    {"dst": "192.0.2.0/24", "gw": "10.244.76.254"},
                    {"dst": "10.244.0.0/16"}
                ],
                "type": "host-local"
            })
        );
    }

    #[test]
    fn user_ipam_type_is_kept() {
        let c = conf(r#"{"name":"n","ipam":{"type":"static"}}"#);
        let d = build_delegate(&c, &v4_env(true)).unwrap();
        assert_eq!(d["ipam"]["type"], "static");
    }

    #[test]
    fn ipv6_only_gets_one_ipv6_range_set_and_network() {
        let e = env(
            "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64\n\
             FLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n",
        );
        let d = build_delegate(&conf(r#"{"name":"n"}"#), &e).unwrap();
        assert_eq!(
            d["ipam"]["ranges"],
            json!([[{"subnet": "fd00:10:244:3::/64"}]])
        );
        assert_eq!(d["ipam"]["routes"], json!([{"dst": "fd00:10:244::/56"}]));
        assert_eq!(d["mtu"], 1430);
    }

    #[test]
    fn dual_stack_gets_two_range_sets_and_both_networks() {
        let e = env(
            "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\n\
             FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42::1/64\n\
             FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        );
        let d = build_delegate(&conf(r#"{"name":"n"}"#), &e).unwrap();
        assert_eq!(
            d["ipam"]["ranges"],
            json!([[{"subnet": "10.42.0.0/24"}], [{"subnet": "2001:cafe:42::/64"}]])
        );
        assert_eq!(
            d["ipam"]["routes"],
            json!([{"dst": "10.42.0.0/16"}, {"dst": "2001:cafe:42::/56"}])
        );
    }

    #[test]
    fn several_networks_in_flannel_network_each_get_a_route() {
        // As flannel's plugin reads FLANNEL_NETWORK: a comma-separated list.
        let e = env(
            "FLANNEL_NETWORK=10.42.0.0/16,10.43.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\n\
             FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        );
        let d = build_delegate(&conf(r#"{"name":"n"}"#), &e).unwrap();
        assert_eq!(
            d["ipam"]["routes"],
            json!([{"dst": "10.42.0.0/16"}, {"dst": "10.43.0.0/16"}])
        );
        let bad = SubnetEnv::parse(
            "FLANNEL_NETWORK=10.42.0.0/16,nonsense\nFLANNEL_SUBNET=10.42.0.1/24\n\
             FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("\"nonsense\" is not an IPv4 CIDR"), "{bad}");
    }

    #[test]
    fn runtime_config_goes_to_the_delegate() {
        let c = conf(
            r#"{"name":"n","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}}"#,
        );
        let d = build_delegate(&c, &v4_env(true)).unwrap();
        assert_eq!(d["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
    }

    #[test]
    fn delegate_may_not_set_name_or_ipam() {
        let e = parse_netconf(br#"{"name":"n","delegate":{"name":"x"}}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_NETWORK_CONFIG);
        assert!(e.msg.contains("must not have 'name' field"), "{e}");
        let e = parse_netconf(br#"{"name":"n","delegate":{"ipam":{}}}"#).unwrap_err();
        assert!(e.msg.contains("must not have 'ipam' field"), "{e}");
        let e = parse_netconf(br#"{"name":"n","delegate":{"type":7}}"#).unwrap_err();
        assert!(e.msg.contains("(string) 'type'"), "{e}");
    }

    #[test]
    fn bad_fields_are_named() {
        let e = parse_netconf(br#"{"name":"n","subnetFile":3}"#).unwrap_err();
        assert_eq!(e.msg, "'subnetFile' must be a string, got 3");
        let e = parse_netconf(br#"{"name":"n","ipam":[]}"#).unwrap_err();
        assert!(e.msg.contains("'ipam' must be a JSON object"), "{e}");
        let e = parse_netconf(b"{nope").unwrap_err();
        assert_eq!(e.code, code::DECODING_FAILURE);
        let c = conf(r#"{"name":"n","ipam":{"routes":[{"dst":"banana"}]}}"#);
        let e = build_delegate(&c, &v4_env(true)).unwrap_err();
        assert!(
            e.msg.contains("ipam.routes[0]") && e.msg.contains("banana"),
            "{e}"
        );
        let c = conf(r#"{"name":"n","ipam":{"routes":{"dst":"10.0.0.0/8"}}}"#);
        assert!(build_delegate(&c, &v4_env(true)).is_err());
    }

    #[test]
    fn missing_subnet_env_is_flannels_famous_message() {
        let path = Path::new("/run/flannel/subnet.env");
        let e = load_subnet_env(
            path,
            Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        )
        .unwrap_err();
        assert_eq!(
            e.msg,
            "failed to load flannel 'subnet.env' file: open /run/flannel/subnet.env: no such \
             file or directory. Check the flannel pod log for this node."
        );
    }

    #[test]
    fn incomplete_subnet_env_names_the_file_and_the_keys() {
        let path = Path::new("/tmp/s.env");
        let e = load_subnet_env(path, Ok("FLANNEL_NETWORK=10.244.0.0/16\n".into())).unwrap_err();
        assert_eq!(
            e.msg,
            "failed to load flannel 'subnet.env' file: /tmp/s.env is missing FLANNEL_SUBNET or \
             FLANNEL_IPV6_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ. Check the flannel pod log for \
             this node."
        );
        let e = load_subnet_env(path, Ok("FLANNEL_MTU=big\n".into())).unwrap_err();
        assert!(
            e.msg.contains("/tmp/s.env") && e.msg.contains("FLANNEL_MTU"),
            "{e}"
        );
    }

    #[test]
    fn versions() {
        assert!(check_version(&conf(r#"{"cniVersion":"0.3.1"}"#)).is_ok());
        assert!(check_version(&conf(r#"{}"#)).is_ok());
        let e = check_version(&conf(r#"{"cniVersion":"9.9.9"}"#)).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        assert!(e.msg.contains("\"9.9.9\""), "{e}");
        assert!(allows_check("0.4.0") && allows_check("1.0.0"));
        assert!(!allows_check("0.3.1") && !allows_check("") && !allows_check("x"));
        let v: Value = serde_json::from_str(&version_json()).unwrap();
        assert_eq!(v["supportedVersions"][5], "1.0.0");
    }

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = CniError::new(7, "bad");
        assert_eq!(
            e.to_json("1.0.0"),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"bad"}"#
        );
    }

    #[test]
    fn names_that_become_files_are_checked() {
        assert!(valid_container_id("abc-1_2.3"));
        assert!(!valid_container_id("../etc"));
        assert!(!valid_container_id(".hidden"));
        assert!(!valid_container_id("a/b"));
        assert!(!valid_container_id(""));
        assert!(valid_ifname("eth0"));
        assert!(!valid_ifname("a/b") && !valid_ifname("0123456789abcdef") && !valid_ifname(".."));
        assert!(valid_plugin_type("bridge"));
        assert!(!valid_plugin_type("../bin/sh") && !valid_plugin_type(""));
    }
}
