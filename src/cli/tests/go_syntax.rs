//! Go's flag syntax as the shim reads it: spellings, bools, repeats, integers, syntax errors,
//! `--`, and arbitrary arguments.
use super::*;
use crate::cli::options::{PARSE_ERROR, RANGE_ERROR, parse_go_int};
use regex::Regex;

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
