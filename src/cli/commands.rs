//! The one-shot commands' flags: `weft status`, `weft cleanup` (the agent's flags plus their
//! own, read through the Go-flag shim like the agent's) and `weft docker-opts` (getopts-style
//! short options, as flannel's `mk-docker-opts.sh` takes them; plain clap).
use std::path::PathBuf;

use clap::ArgAction;

use super::options::{Options, parse_bool};
use crate::commands::docker_opts;

/// `weft status`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Show this node's lease, its peers and how the kernel differs from what the leases \
             require (reads etcd and the kernel; needs no running agent)",
    after_help = "Takes the agent's flags and FLANNELD_* variables to find etcd, the config and \
                  the external interface.\n\
                  Exit codes: 0 in sync, 1 the kernel differs, 2 usage error, 3 etcd, the config \
                  or the kernel could not be read."
)]
pub struct StatusArgs {
    /// Print one JSON object (its schema is in the docs of weft::status)
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, default_value = "false",
          value_parser = parse_bool, help_heading = "Status flags")]
    pub json: bool,

    #[command(flatten)]
    pub opts: Options,
}

/// `weft cleanup`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Remove what weft (or flanneld) made on this node: flannel.* devices, routes and \
             nexthops with protocol 87, masquerade/forward rules (stop the agent first)",
    after_help = "Takes the agent's flags and FLANNELD_* variables. Idempotent: a second run \
                  finds nothing.\n\
                  Exit codes: 0 done (or nothing to do), 1 something could not be removed, \
                  2 usage error."
)]
pub struct CleanupArgs {
    /// Also delete this node's lease key in etcd and revoke its etcd lease
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, default_value = "false",
          value_parser = parse_bool, help_heading = "Cleanup flags")]
    pub release_lease: bool,

    /// Also delete the subnet file (--subnet-file)
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, default_value = "false",
          value_parser = parse_bool, help_heading = "Cleanup flags")]
    pub remove_subnet_env: bool,

    /// Clean up only this flannel network's objects (routes to destinations inside it, the
    /// devices and nexthops that are its, its masquerade and forward rules), for a host that
    /// runs several networks; without it, every network's
    #[arg(long, value_name = "CIDR", value_parser = parse_network, help_heading = "Cleanup flags")]
    pub network: Option<ipnet::Ipv4Net>,

    /// With --network, also that dual-stack network's IPv6Network (its IPv6 routes, entries and
    /// rules; without it, a dual-stack network's IPv6 objects stay); alone, an IPv6-only
    /// network's objects only
    #[arg(long, value_name = "CIDR", value_parser = parse_network6,
          help_heading = "Cleanup flags")]
    pub ipv6_network: Option<ipnet::Ipv6Net>,

    #[command(flatten)]
    pub opts: Options,
}

fn parse_network(s: &str) -> Result<ipnet::Ipv4Net, String> {
    let net: ipnet::Ipv4Net = s
        .parse()
        .map_err(|e| format!("{s:?} is not an IPv4 network such as 10.244.0.0/16: {e}"))?;
    if net.trunc() != net {
        return Err(format!(
            "{s:?} has host bits set: did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

fn parse_network6(s: &str) -> Result<ipnet::Ipv6Net, String> {
    let net: ipnet::Ipv6Net = s
        .parse()
        .map_err(|e| format!("{s:?} is not an IPv6 network such as fd00:10:244::/56: {e}"))?;
    if net.trunc() != net {
        return Err(format!(
            "{s:?} has host bits set: did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// `weft install-cni`: what kube-flannel.yml's init containers do (plain clap, long flags).
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Install the CNI plugin as <bin-dir>/flannel and <bin-dir>/weft-cni, and the CNI \
             config as <conf-dir>/10-flannel.conflist, each atomically (the DaemonSet's init \
             container)",
    after_help = "Exit codes: 0 installed, 1 failed (nothing half-written), 2 usage error."
)]
pub struct InstallCniArgs {
    /// The CNI plugin to install (in the image)
    #[arg(long, value_name = "PATH", default_value = "/opt/bin/weft-cni")]
    pub plugin: PathBuf,

    /// Where the plugin goes (the host's /opt/cni/bin, mounted)
    #[arg(long, value_name = "DIR", default_value = "/opt/cni/bin")]
    pub bin_dir: PathBuf,

    /// The CNI config to install (the ConfigMap's cni-conf.json, mounted)
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/kube-flannel/cni-conf.json"
    )]
    pub conf: PathBuf,

    /// Where the config goes (the host's /etc/cni/net.d, mounted)
    #[arg(long, value_name = "DIR", default_value = "/etc/cni/net.d")]
    pub conf_dir: PathBuf,

    /// The config's file name there
    #[arg(long, value_name = "NAME", default_value = "10-flannel.conflist")]
    pub conf_name: String,
}

/// `weft docker-opts`: the options of flannel's `mk-docker-opts.sh`, with its letters.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Write Docker daemon options from subnet.env, as flannel's mk-docker-opts.sh does",
    after_help = "Without -i and -c, both are written."
)]
pub struct DockerOptsArgs {
    /// Path to the flannel env file
    #[arg(short = 'f', value_name = "FLANNEL-ENV-FILE",
          default_value = docker_opts::DEFAULT_SUBNET_FILE, value_parser = parse_file)]
    pub subnet_file: PathBuf,

    /// Path to the Docker env file to write
    #[arg(short = 'd', value_name = "DOCKER-ENV-FILE",
          default_value = docker_opts::DEFAULT_OUT_FILE, value_parser = parse_file)]
    pub out_file: PathBuf,

    /// Output each Docker option as an individual variable, e.g. DOCKER_OPT_MTU=1500
    #[arg(short = 'i')]
    pub individual: bool,

    /// Output the combined Docker options into the DOCKER_OPTS variable (or -k's)
    #[arg(short = 'c')]
    pub combined: bool,

    /// Set the combined options variable's name
    #[arg(short = 'k', value_name = "COMBINED-KEY", default_value = docker_opts::DEFAULT_KEY,
          value_parser = parse_var_name)]
    pub key: String,

    /// Do not output --ip-masq (for older Docker versions)
    #[arg(short = 'm')]
    pub no_ip_masq: bool,
}

impl From<DockerOptsArgs> for docker_opts::Args {
    fn from(a: DockerOptsArgs) -> docker_opts::Args {
        // As the script: neither -i nor -c means both.
        let both = !a.individual && !a.combined;
        docker_opts::Args {
            subnet_file: a.subnet_file,
            out_file: a.out_file,
            key: a.key,
            individual: a.individual || both,
            combined: a.combined || both,
            ip_masq: !a.no_ip_masq,
        }
    }
}

fn parse_file(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        return Err("requires a non-empty argument".to_string());
    }
    Ok(PathBuf::from(v))
}

fn parse_var_name(v: &str) -> Result<String, String> {
    let mut chars = v.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(v.to_string())
    } else {
        Err("not a shell variable name".to_string())
    }
}
