//! The `FLANNELD_*` variables: what they set, how they lose to the command line, their errors.
use super::*;
use std::net::Ipv4Addr;
use std::path::PathBuf;

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
