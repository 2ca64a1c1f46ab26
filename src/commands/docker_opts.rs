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

use anyhow::{Context as _, Result, bail};
use net_conf::SubnetEnv;

pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
pub const DEFAULT_OUT_FILE: &str = "/run/docker_opts.env";
pub const DEFAULT_KEY: &str = "DOCKER_OPTS";

/// What the command line asks for.
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

/// What [`parse_args`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Run(Args),
    Help,
}

pub fn usage() -> &'static str {
    "Usage: weft docker-opts [-f FLANNEL-ENV-FILE] [-d DOCKER-ENV-FILE] [-i] [-c] [-m] [-k COMBINED-KEY]\n\
     \n\
     Generate Docker daemon options based on flannel env file (like flannel's mk-docker-opts.sh)\n\
     OPTIONS:\n\
     \t-f\tPath to flannel env file. Defaults to /run/flannel/subnet.env\n\
     \t-d\tPath to Docker env file to write to. Defaults to /run/docker_opts.env\n\
     \t-i\tOutput each Docker option as individual var. e.g. DOCKER_OPT_MTU=1500\n\
     \t-c\tOutput combined Docker options into DOCKER_OPTS var\n\
     \t-k\tSet the combined options key to this value (default DOCKER_OPTS=)\n\
     \t-m\tDo not output --ip-masq (useful for older Docker version)\n\
     Without -i and -c, both are written.\n"
}

/// getopts-style parsing of `f:d:ick:m` (plus `-h`): `-f PATH`, `-fPATH`, grouped `-ic`,
/// `--` ends options. Errors name the option.
pub fn parse_args(args: &[String]) -> Result<Parsed> {
    let mut a = Args::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            if i < args.len() {
                bail!("unexpected argument {:?}", args[i]);
            }
            break;
        }
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            bail!("unexpected argument {arg:?}");
        };
        for (pos, c) in flags.char_indices() {
            match c {
                'i' => a.individual = true,
                'c' => a.combined = true,
                'm' => a.ip_masq = false,
                'h' => return Ok(Parsed::Help),
                'f' | 'd' | 'k' => {
                    let rest = &flags[pos + c.len_utf8()..];
                    let value = if !rest.is_empty() {
                        rest.to_owned()
                    } else if i < args.len() {
                        i += 1;
                        args[i - 1].clone()
                    } else {
                        bail!("option -{c} requires an argument");
                    };
                    if value.is_empty() {
                        bail!("option -{c} requires a non-empty argument");
                    }
                    match c {
                        'f' => a.subnet_file = PathBuf::from(value),
                        'd' => a.out_file = PathBuf::from(value),
                        _ => {
                            if !valid_var_name(&value) {
                                bail!("-k {value:?} is not a shell variable name");
                            }
                            a.key = value;
                        }
                    }
                    break;
                }
                other => bail!("illegal option -{other}"),
            }
        }
    }
    if !a.individual && !a.combined {
        a.individual = true;
        a.combined = true;
    }
    Ok(Parsed::Run(a))
}

fn valid_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
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

/// `weft docker-opts ARGS`: 0 on success, 1 on a failure, 2 on a usage error.
pub fn run_cli(args: &[String]) -> u8 {
    let parsed = match parse_args(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("weft docker-opts: {e:#}\n\n{}", usage());
            return 2;
        }
    };
    let args = match parsed {
        Parsed::Help => {
            print!("{}", usage());
            return 0;
        }
        Parsed::Run(a) => a,
    };
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
    use std::path::Path;

    const ENV: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.76.1/24\n\
                       FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

    fn args(list: &[&str]) -> Args {
        let v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        match parse_args(&v).unwrap() {
            Parsed::Run(a) => a,
            Parsed::Help => panic!("help"),
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
    fn option_syntax() {
        let a = args(&["-f/tmp/s.env", "-d", "/tmp/o.env", "-ic"]);
        assert_eq!(a.subnet_file, Path::new("/tmp/s.env"));
        assert_eq!(a.out_file, Path::new("/tmp/o.env"));
        assert!(a.individual && a.combined && a.ip_masq);
        let d = args(&[]);
        assert_eq!(d.subnet_file, Path::new("/run/flannel/subnet.env"));
        assert_eq!(d.out_file, Path::new(DEFAULT_OUT_FILE));
        assert_eq!(d.key, "DOCKER_OPTS");
        let bad = |l: &[&str]| {
            let v: Vec<String> = l.iter().map(|s| s.to_string()).collect();
            parse_args(&v).unwrap_err().to_string()
        };
        assert_eq!(bad(&["-x"]), "illegal option -x");
        assert_eq!(bad(&["-f"]), "option -f requires an argument");
        assert!(bad(&["-k", "A B"]).contains("\"A B\""));
        assert!(bad(&["extra"]).contains("\"extra\""));
        let h: Vec<String> = vec!["-h".into()];
        assert_eq!(parse_args(&h).unwrap(), Parsed::Help);
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
