//! `--help`, `--version` and the usage text; the clap definitions' consistency.
use super::*;

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
