//! The one-shot commands' flags (status, cleanup, docker-opts).
use super::*;

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
