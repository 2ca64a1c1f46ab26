//! Tests of the command line: every Go-flag rule of the shim, the environment, the values and
//! the subcommands' flags.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use super::go_flags::{FlagTable, Kind};
use super::options::{PARSE_ERROR, RANGE_ERROR, parse_go_int};
use super::*;
use regex::Regex;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// The agent's flags, from the clap command.
fn flags() -> FlagTable {
    FlagTable::of(&command())
}

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
            matches!(parse(&args(&[h]), &no_env), Ok(Command::Help(_))),
            "{h}"
        );
    }
    assert!(matches!(
        parse(&args(&["--ip-masq", "-h", "--bogus"]), &no_env),
        Ok(Command::Help(_))
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
    // The lab is the weft-lab binary now; `weft lab` says so.
    assert!(err(&["lab", "up", "--nodes=3", "-x"]).contains("weft-lab"));
    assert!(matches!(
        parse(&args(&["status"]), &no_env),
        Ok(Command::Status(_))
    ));
    assert!(matches!(
        parse(&args(&["cleanup"]), &no_env),
        Ok(Command::Cleanup(_))
    ));
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
    for f in &flags().0 {
        assert!(u.contains(&format!("--{}", f.name)), "{}", f.name);
        if f.name != "version" {
            assert!(u.contains(&env_var_name(&f.name)), "{}", f.name);
        }
    }
    assert!(!u.contains("FLANNELD_VERSION"));
    assert!(u.contains("[default: /run/flannel/subnet.env]"), "{u}");
    assert!(u.contains("[default: 127.0.0.1]"), "{u}");
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
    let names: Vec<String> = flags().0.into_iter().map(|f| f.name).collect();
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
                        s.push_str(&names[rng.usize(..names.len())]);
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

// ===== subcommands (moved from status.rs, cleanup.rs, docker_opts.rs) =====

/// `weft <sub> <rest...>` with `env`.
fn parse_sub(
    sub: &str,
    rest: &[&str],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Command, CliError> {
    let mut v = vec![sub];
    v.extend_from_slice(rest);
    parse(&args(&v), env)
}

#[test]
fn status_args_split_json_from_agent_flags() {
    let env = |_: &str| None;
    match parse_sub(
        "status",
        &[
            "--json",
            "--etcd-endpoints=http://x:1",
            "-public-ip",
            "198.18.0.1",
        ],
        &env,
    ) {
        Ok(Command::Status(StatusArgs { json, opts })) => {
            assert!(json);
            assert_eq!(opts.etcd_endpoints, ["http://x:1"]);
            assert_eq!(opts.public_ip, Some("198.18.0.1".parse().unwrap()));
        }
        other => panic!("{other:?}"),
    }
    match parse_sub("status", &[], &|k| {
        (k == "FLANNELD_ETCD_PREFIX").then(|| "/x".to_string())
    }) {
        Ok(Command::Status(StatusArgs { json, opts })) => {
            assert!(!json);
            assert_eq!(opts.etcd_prefix, "/x");
        }
        other => panic!("{other:?}"),
    }
    // Go spellings of --json, and FLANNELD_JSON is no flag of weft.
    for (spelling, want) in [("-json", true), ("--json=false", false), ("-json=1", true)] {
        match parse_sub("status", &[spelling], &|k| {
            (k == "FLANNELD_JSON").then(|| "true".into())
        }) {
            Ok(Command::Status(a)) => assert_eq!(a.json, want, "{spelling}"),
            other => panic!("{spelling}: {other:?}"),
        }
    }
    assert!(matches!(
        parse_sub("status", &["-h"], &env),
        Ok(Command::Help(_))
    ));
    let err = parse_sub("status", &["--no-such-flag"], &env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-flag"), "{err}");
    assert!(parse_sub("status", &["extra"], &env).is_err());
    assert!(parse_sub("status", &["--version"], &env).is_err());
}

#[test]
fn cleanup_args() {
    let env = |_: &str| None;
    match parse_sub(
        "cleanup",
        &[
            "--release-lease",
            "-remove-subnet-env",
            "--subnet-file=/tmp/x.env",
        ],
        &env,
    ) {
        Ok(Command::Cleanup(CleanupArgs {
            release_lease,
            remove_subnet_env,
            network,
            ipv6_network,
            opts,
        })) => {
            assert!(release_lease && remove_subnet_env);
            assert_eq!(network, None, "every network by default");
            assert_eq!(ipv6_network, None);
            assert_eq!(opts.subnet_file, std::path::Path::new("/tmp/x.env"));
        }
        other => panic!("{other:?}"),
    }
    match parse_sub("cleanup", &["--network", "10.245.0.0/16"], &env) {
        Ok(Command::Cleanup(CleanupArgs { network, .. })) => {
            assert_eq!(network, Some("10.245.0.0/16".parse().unwrap()));
        }
        other => panic!("{other:?}"),
    }
    let err = parse_sub("cleanup", &["--network=10.245.1.0/16"], &env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("did you mean 10.245.0.0/16"), "{err}");
    assert!(parse_sub("cleanup", &["--network=10.245.0.0"], &env).is_err());
    // A dual-stack network's IPv6 part comes with its IPv4 network.
    match parse_sub(
        "cleanup",
        &["--network=10.245.0.0/16", "--ipv6-network=fd00:10:245::/56"],
        &env,
    ) {
        Ok(Command::Cleanup(CleanupArgs { ipv6_network, .. })) => {
            assert_eq!(ipv6_network, Some("fd00:10:245::/56".parse().unwrap()));
        }
        other => panic!("{other:?}"),
    }
    // Alone: an IPv6-only network's objects.
    match parse_sub("cleanup", &["--ipv6-network=fd00:10:245::/56"], &env) {
        Ok(Command::Cleanup(CleanupArgs {
            network,
            ipv6_network,
            ..
        })) => {
            assert_eq!(network, None);
            assert_eq!(ipv6_network, Some("fd00:10:245::/56".parse().unwrap()));
        }
        other => panic!("{other:?}"),
    }
    let err = parse_sub(
        "cleanup",
        &[
            "--network=10.245.0.0/16",
            "--ipv6-network=fd00:10:245::1/56",
        ],
        &env,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("did you mean fd00:10:245::/56"), "{err}");
    match parse_sub("cleanup", &[], &env) {
        Ok(Command::Cleanup(CleanupArgs {
            release_lease,
            remove_subnet_env,
            ..
        })) => assert!(!release_lease && !remove_subnet_env),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse_sub("cleanup", &["--help"], &env),
        Ok(Command::Help(_))
    ));
    assert!(parse_sub("cleanup", &["--bogus"], &env).is_err());
}

#[test]
fn docker_opts_option_syntax() {
    use crate::commands::docker_opts::{Args, DEFAULT_OUT_FILE};
    use std::path::Path;
    let args = |l: &[&str]| match parse_sub("docker-opts", l, &no_env) {
        Ok(Command::DockerOpts(a)) => a,
        other => panic!("{l:?}: {other:?}"),
    };
    let a: Args = args(&["-f/tmp/s.env", "-d", "/tmp/o.env", "-ic"]);
    assert_eq!(a.subnet_file, Path::new("/tmp/s.env"));
    assert_eq!(a.out_file, Path::new("/tmp/o.env"));
    assert!(a.individual && a.combined && a.ip_masq);
    let d = args(&[]);
    assert_eq!(d.subnet_file, Path::new("/run/flannel/subnet.env"));
    assert_eq!(d.out_file, Path::new(DEFAULT_OUT_FILE));
    assert_eq!(d.key, "DOCKER_OPTS");
    assert!(d.individual && d.combined, "neither -i nor -c: both");
    let m = args(&["-m", "-c"]);
    assert!(!m.ip_masq && m.combined && !m.individual);
    let bad = |l: &[&str]| {
        parse_sub("docker-opts", l, &no_env)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(bad(&["-x"]), "illegal option -x");
    assert_eq!(bad(&["-f"]), "option -f requires an argument");
    assert!(bad(&["-k", "A B"]).contains("\"A B\""));
    assert!(bad(&["extra"]).contains("\"extra\""));
    assert!(matches!(
        parse_sub("docker-opts", &["-h"], &no_env),
        Ok(Command::Help(_))
    ));
}

// ===== new rules =====

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
fn help_of_every_subcommand_is_clap_generated() {
    for (sub, word) in [
        (None, "--etcd-endpoints"),
        (Some("status"), "--json"),
        (Some("cleanup"), "--release-lease"),
        (Some("docker-opts"), "-k <COMBINED-KEY>"),
    ] {
        let mut a: Vec<&str> = sub.into_iter().collect();
        a.push("--help");
        match parse(&args(&a), &no_env) {
            Ok(Command::Help(text)) => {
                assert!(text.contains(word), "{sub:?}: {text}");
                let usage = format!(
                    "Usage: weft{}",
                    sub.map(|s| format!(" {s}")).unwrap_or_default()
                );
                assert!(text.contains(&usage), "{sub:?}: {text}");
            }
            other => panic!("{sub:?}: {other:?}"),
        }
    }
    // Booleans show that a value goes after `=` only.
    assert!(usage().contains("--ip-masq[=<BOOL>]"), "{}", usage());
    // (That a set FLANNELD_ETCD_PASSWORD never shows in --help is checked on the binary, in
    // tests/cli.rs: a unit test cannot set the process environment.)
}

#[test]
fn clap_definitions_are_consistent() {
    command().debug_assert();
    // Every agent flag's variable is FLANNELD_<NAME>; --version has none.
    for f in &flags().0 {
        if f.name == "version" {
            assert_eq!(f.env, None);
        } else {
            assert_eq!(
                f.env.as_deref(),
                Some(env_var_name(&f.name).as_str()),
                "{}",
                f.name
            );
        }
    }
    // SUBCOMMANDS (the first-argument routing) names exactly clap's subcommands.
    let cmd = command();
    let names: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
    assert_eq!(names, SUBCOMMANDS);
    // Options::default() is what no flags and no environment give.
    let d = Options::default();
    let r = run(&[]);
    assert_eq!(format!("{d:?}"), format!("{r:?}"));
}

#[test]
fn help_wins_over_a_bad_value_and_version_over_the_environment() {
    assert!(matches!(
        parse(&args(&["--healthz-port=abc", "-h"]), &no_env),
        Ok(Command::Help(_))
    ));
    assert_eq!(
        err(&["--version=maybe"]),
        r#"invalid boolean value "maybe" for -version: parse error"#
    );
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
