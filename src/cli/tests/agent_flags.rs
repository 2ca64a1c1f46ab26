//! The agent's flags: defaults, typed values and the rules on them.
use super::*;
use crate::cli::go_flags::Kind;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

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
    assert_eq!(o.iface_can_reach, Some(Ipv4Addr::new(198, 18, 0, 9).into()));
    // An IPv6 address is taken too (the route to it chooses the interface).
    let o6 = run(&["--iface-can-reach=fd00::9"]);
    assert_eq!(o6.iface_can_reach, Some("fd00::9".parse().unwrap()));
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
        e.starts_with(r#"invalid value "eth[0-" for flag -iface-regex: bad regular expression"#),
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
fn every_flag_is_accepted() {
    // Each flag parses with a plausible value, so the table and the value parsers agree.
    for f in &flags().0 {
        let value = match f.name.as_str() {
            "iface-can-reach" | "public-ip" | "healthz-ip" => "198.18.0.1",
            "public-ipv6" => "fd00::1",
            "subnet-lease-renew-margin" | "healthz-port" | "iptables-resync" | "v" => "1",
            "etcd-endpoints" => "http://x:1",
            "vmodule" => "x=1",
            "log_backtrace_at" => "x.go:1",
            "log-color" => "never",
            // --version=true asks for the version, not a run.
            "version" => "false",
            _ if f.kind == Kind::Bool => "true",
            _ => "x",
        };
        let r = parse(&args(&[&format!("--{}={value}", f.name)]), &no_env);
        assert!(matches!(r, Ok(Command::Run(_))), "{}: {r:?}", f.name);
    }
}

#[test]
fn etcd_endpoints_must_be_http_urls_with_a_port() {
    for good in [
        "http://127.0.0.1:2379",
        "https://etcd-0.etcd.kube-system.svc:2379/",
        "http://[fd00::1]:2379",
        "http://localhost:4001, https://198.18.0.2:2379",
    ] {
        assert!(
            matches!(
                parse(&args(&[&format!("--etcd-endpoints={good}")]), &no_env),
                Ok(Command::Run(_))
            ),
            "{good}"
        );
    }
    assert_eq!(
        err(&["--etcd-endpoints=notaurl"]),
        r#"invalid value "notaurl" for flag -etcd-endpoints: "notaurl" is not an http(s)://host:port URL: the scheme must be http:// or https://"#
    );
    for bad in [
        "http://127.0.0.1",
        "http://:2379",
        "unix:///run/etcd.sock",
        "127.0.0.1:2379",
        "http://127.0.0.1:0",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:2379/v3",
        "http://a b:2379",
        "http://[nope]:2379",
        "http://127.0.0.1:2379,etcd2",
    ] {
        let e = err(&[&format!("--etcd-endpoints={bad}")]);
        assert!(
            e.starts_with("invalid value") && e.contains("-etcd-endpoints"),
            "{bad}: {e}"
        );
        assert!(
            e.contains("is not an http(s)://host:port URL"),
            "{bad}: {e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
    // The environment too, naming the variable.
    let e = run_env(&[], &[("FLANNELD_ETCD_ENDPOINTS", "etcd:2379")]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(r#"invalid value "etcd:2379" for FLANNELD_ETCD_ENDPOINTS"#),
        "{e}"
    );
}

#[test]
fn log_color_flag_env_and_rules() {
    assert_eq!(run(&[]).log_color, LogColor::Auto);
    assert_eq!(run(&["--log-color=never"]).log_color, LogColor::Never);
    assert_eq!(run(&["-log-color", "always"]).log_color, LogColor::Always);
    let o = run_env(&[], &[("FLANNELD_LOG_COLOR", "never")]).unwrap();
    assert_eq!(o.log_color, LogColor::Never);
    assert_eq!(
        err(&["--log-color=sometimes"]),
        r#"invalid value "sometimes" for flag -log-color: must be auto, always or never"#
    );
    // auto: a terminal and no NO_COLOR (an empty NO_COLOR counts as unset).
    assert!(LogColor::Auto.enabled(true, None));
    assert!(LogColor::Auto.enabled(true, Some("")));
    assert!(!LogColor::Auto.enabled(true, Some("1")));
    assert!(!LogColor::Auto.enabled(false, None));
    assert!(LogColor::Always.enabled(false, Some("1")));
    assert!(!LogColor::Never.enabled(true, None));
}

#[test]
fn a_second_network_gets_a_peer_cache_of_its_own() {
    use std::path::Path;
    assert_eq!(
        run(&[]).peer_cache_file.as_deref(),
        Some(Path::new("/var/lib/weft/peers.json"))
    );
    assert_eq!(
        run(&["-etcd-prefix=/coreos.com/network/"])
            .peer_cache_file
            .as_deref(),
        Some(Path::new("/var/lib/weft/peers.json"))
    );
    assert_eq!(
        run(&["-etcd-prefix=/coreos.com/network2"])
            .peer_cache_file
            .as_deref(),
        Some(Path::new("/var/lib/weft/peers-coreos.com_network2.json"))
    );
    let o = run_env(&[], &[("FLANNELD_ETCD_PREFIX", "/blue net")]).unwrap();
    assert_eq!(
        o.peer_cache_file.as_deref(),
        Some(Path::new("/var/lib/weft/peers-blue_net.json"))
    );
    // Given, it wins; given empty, no cache.
    let o = run(&["-etcd-prefix=/two", "-peer-cache-file=/tmp/p.json"]);
    assert_eq!(o.peer_cache_file.as_deref(), Some(Path::new("/tmp/p.json")));
    assert_eq!(
        run(&["-etcd-prefix=/two", "-peer-cache-file="]).peer_cache_file,
        None
    );
}
