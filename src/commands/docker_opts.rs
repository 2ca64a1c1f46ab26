//! `weft docker-opts`: Docker daemon options from subnet.env, as flannel's
//! `mk-docker-opts.sh` makes them, so a Docker host gets its `docker0` inside the node's
//! subnet with the overlay's MTU.
//!
//! ```text
//! weft docker-opts [-f subnet.env] [-d out-file] [-i] [-c] [-m] [-k KEY]
//! ```
//!
//! With `FLANNEL_SUBNET=10.244.76.1/24`, `FLANNEL_MTU=1450`, `FLANNEL_IPMASQ=true` the file is
//!
//! ```text
//! DOCKER_OPT_BIP="--bip=10.244.76.1/24"
//! DOCKER_OPT_IPMASQ="--ip-masq=false"
//! DOCKER_OPT_MTU="--mtu=1450"
//! DOCKER_OPTS=" --bip=10.244.76.1/24 --ip-masq=false --mtu=1450"
//! ```
//!
//! `--ip-masq` is the opposite of `FLANNEL_IPMASQ`: whoever does not masquerade (the agent or
//! Docker) leaves it to the other. As in the script, the combined variable starts with the
//! current value of the environment variable of the same name (empty when unset). Unlike the
//! script, a missing or incomplete subnet.env is an error (exit 1) instead of an empty file, and
//! the file is replaced atomically.
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use net_conf::SubnetEnv;

pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
pub const DEFAULT_OUT_FILE: &str = "/run/docker_opts.env";
pub const DEFAULT_KEY: &str = "DOCKER_OPTS";

/// What `weft docker-opts` is asked to do (parsed from its letters by `crate::cli`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// `-f`: the subnet.env to read.
    pub subnet_file: PathBuf,
    /// `-d`: the file to write.
    pub out_file: PathBuf,
    /// `-k`: name of the combined variable.
    pub key: String,
    /// `-i`: one variable per option.
    pub individual: bool,
    /// `-c`: the combined variable.
    pub combined: bool,
    /// Not `-m`: include `--ip-masq`.
    pub ip_masq: bool,
}

impl Default for Args {
    fn default() -> Args {
        Args {
            subnet_file: PathBuf::from(DEFAULT_SUBNET_FILE),
            out_file: PathBuf::from(DEFAULT_OUT_FILE),
            key: DEFAULT_KEY.to_owned(),
            individual: false,
            combined: false,
            ip_masq: true,
        }
    }
}

/// The options file text for a subnet.env text. `existing` is the current value of the
/// environment variable named `args.key` (the script starts the combined value with it).
/// Options come in the script's (alphabetical) order: BIP, IPMASQ, MTU.
pub fn render(args: &Args, subnet_env: &str, existing: Option<&str>) -> Result<String> {
    let env = SubnetEnv::parse(subnet_env)?;
    let mut opts: Vec<(&str, String)> = Vec::new();
    // The value as written (flanneld writes <network+1>/<len>), like the script's `source`.
    if let Some(subnet) = raw_value(subnet_env, "FLANNEL_SUBNET") {
        opts.push(("DOCKER_OPT_BIP", format!("--bip={subnet}")));
    }
    if args.ip_masq {
        opts.push(("DOCKER_OPT_IPMASQ", format!("--ip-masq={}", !env.ipmasq)));
    }
    opts.push(("DOCKER_OPT_MTU", format!("--mtu={}", env.mtu)));

    let mut out = String::new();
    let mut combined = existing.unwrap_or("").to_owned();
    for (name, value) in &opts {
        if args.individual {
            out.push_str(&format!("{name}=\"{value}\"\n"));
        }
        combined.push(' ');
        combined.push_str(value);
    }
    if args.combined {
        out.push_str(&format!("{}=\"{combined}\"\n", args.key));
    }
    Ok(out)
}

/// The last value of `key` in a `KEY=VALUE` text (trimmed; comments and blank lines skipped).
fn raw_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .rev()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .find(|v| !v.is_empty())
}

/// Reads `args.subnet_file`, writes `args.out_file` (atomically, 0644).
pub fn write(args: &Args, existing: Option<&str>) -> Result<String> {
    let text = std::fs::read_to_string(&args.subnet_file)
        .with_context(|| format!("reading {}", args.subnet_file.display()))?;
    let out = render(args, &text, existing)
        .with_context(|| format!("{} cannot be used", args.subnet_file.display()))?;
    crate::agent::subnet_file::write_atomic(&args.out_file, &out)
        .with_context(|| format!("writing {}", args.out_file.display()))?;
    Ok(out)
}

/// `weft docker-opts` with its parsed options: 0 on success, 1 on a failure.
pub fn run_command(args: Args) -> u8 {
    let existing = std::env::var(&args.key).ok();
    match write(&args, existing.as_deref()) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("weft docker-opts: {e:#}");
            1
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;

    const ENV: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.76.1/24\n\
                       FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

    /// The options `weft docker-opts <list>` parses to.
    fn args(list: &[&str]) -> Args {
        let v: Vec<String> = std::iter::once("docker-opts")
            .chain(list.iter().copied())
            .map(str::to_string)
            .collect();
        match crate::cli::parse(&v, &|_| None).unwrap() {
            crate::cli::Command::DockerOpts(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn default_writes_individual_and_combined() {
        assert_eq!(
            render(&args(&[]), ENV, None).unwrap(),
            "DOCKER_OPT_BIP=\"--bip=10.244.76.1/24\"\n\
             DOCKER_OPT_IPMASQ=\"--ip-masq=false\"\n\
             DOCKER_OPT_MTU=\"--mtu=1450\"\n\
             DOCKER_OPTS=\" --bip=10.244.76.1/24 --ip-masq=false --mtu=1450\"\n"
        );
    }

    #[test]
    fn docker_masquerades_when_the_agent_does_not() {
        let env = ENV.replace("FLANNEL_IPMASQ=true", "FLANNEL_IPMASQ=false");
        let out = render(&args(&["-c"]), &env, None).unwrap();
        assert_eq!(
            out,
            "DOCKER_OPTS=\" --bip=10.244.76.1/24 --ip-masq=true --mtu=1450\"\n"
        );
    }

    #[test]
    fn key_individual_and_no_masq() {
        let out = render(&args(&["-k", "DOCKER_NETWORK_OPTIONS", "-m"]), ENV, None).unwrap();
        assert_eq!(
            out,
            "DOCKER_OPT_BIP=\"--bip=10.244.76.1/24\"\n\
             DOCKER_OPT_MTU=\"--mtu=1450\"\n\
             DOCKER_NETWORK_OPTIONS=\" --bip=10.244.76.1/24 --mtu=1450\"\n"
        );
        let out = render(&args(&["-i"]), ENV, None).unwrap();
        assert!(!out.contains("DOCKER_OPTS="), "{out}");
        assert_eq!(out.lines().count(), 3);
    }

    #[test]
    fn combined_starts_with_the_existing_value() {
        let out = render(&args(&["-c"]), ENV, Some("--debug")).unwrap();
        assert_eq!(
            out,
            "DOCKER_OPTS=\"--debug --bip=10.244.76.1/24 --ip-masq=false --mtu=1450\"\n"
        );
    }

    #[test]
    fn incomplete_subnet_env_is_an_error() {
        let e = render(&args(&[]), "FLANNEL_NETWORK=10.244.0.0/16\n", None).unwrap_err();
        assert!(e.to_string().contains("FLANNEL_MTU"), "{e}");
    }

    #[test]
    fn ipv6_only_has_no_bip() {
        let env = "FLANNEL_IPV6_NETWORK=2001:db8::/56\nFLANNEL_IPV6_SUBNET=2001:db8::1/64\n\
                   FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n";
        assert_eq!(
            render(&args(&["-c"]), env, None).unwrap(),
            "DOCKER_OPTS=\" --ip-masq=true --mtu=1450\"\n"
        );
    }

    #[test]
    fn writes_the_file_and_names_a_missing_input() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(&[]);
        a.subnet_file = dir.path().join("subnet.env");
        a.out_file = dir.path().join("docker_opts.env");
        let e = write(&a, None).unwrap_err();
        assert!(format!("{e:#}").contains("subnet.env"), "{e:#}");
        std::fs::write(&a.subnet_file, ENV).unwrap();
        let text = write(&a, None).unwrap();
        assert_eq!(std::fs::read_to_string(&a.out_file).unwrap(), text);
    }
}
