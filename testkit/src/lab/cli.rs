//! `weft-lab`: build a local cluster, show what weft did, ping across it, tear it down. Its
//! flags are a clap derive struct ([`CliArgs`]); plain clap, as the lab has no flanneld
//! spellings to keep.
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{CommandFactory as _, Parser as _};

use super::{DEFAULT_NETWORK, INTERRUPTED, Lab, LabSpec, MAX_NODES, check_interrupted, cleanup};

/// How long the agents get to write subnet.env.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long pods get to reach each other (peers appear a moment after the last lease).
const PING_DEADLINE: Duration = Duration::from_secs(20);

/// `weft-lab`'s flags.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
#[command(
    name = "weft-lab",
    about = "Builds a local weft cluster out of network namespaces (root only): etcd in an \
             underlay namespace, N nodes on bridge br0 (198.18.0.0/24), each running weft with \
             flanneld's flags and one pod behind cni0. Prints each node's subnet.env and routes \
             and a pod-to-pod ping matrix, then tears everything down (also on Ctrl-C).",
    disable_help_flag = true
)]
struct CliArgs {
    /// Number of nodes, 1..=253
    #[arg(long, value_name = "N", default_value = "3", value_parser = parse_nodes)]
    nodes: usize,
    /// Backend.Type written to <prefix>/config (host-gw, vxlan or ipip)
    #[arg(long, value_name = "TYPE", default_value = "host-gw")]
    backend: String,
    /// Network written to <prefix>/config
    #[arg(long, value_name = "CIDR", default_value = DEFAULT_NETWORK)]
    network: String,
    /// Dual-stack: EnableIPv6 with this IPv6Network; the underlay, nodes and pods get IPv6
    /// addresses too and the ping matrix runs over both families
    #[arg(long, value_name = "CIDR")]
    ipv6_network: Option<String>,
    /// IPv6-only (with --kube and --ipv6-network): EnableIPv4 false; Nodes get an IPv6
    /// podCIDR only and pods an IPv6 address only
    #[arg(long, requires_all = ["kube", "ipv6_network"])]
    ipv6_only: bool,
    /// Kube mode: a test Kubernetes API server instead of etcd, one Node per node with its
    /// podCIDR, agents with --kube-subnet-mgr and the config in net-conf.json
    #[arg(long)]
    kube: bool,
    /// Leave the lab running and print how to use and remove it (with --kube: until Ctrl-C,
    /// as the API server runs in weft-lab)
    #[arg(long)]
    keep: bool,
    /// The weft binary the nodes run [default: `weft` beside this binary]
    #[arg(long, value_name = "PATH")]
    weft: Option<PathBuf>,
    /// Remove a lab left running by --keep
    #[arg(long, value_name = "NAME")]
    cleanup: Option<String>,
    /// Print help
    #[arg(short = 'h', long)]
    help: bool,
}

impl Default for CliArgs {
    fn default() -> Self {
        CliArgs {
            nodes: 3,
            backend: "host-gw".to_owned(),
            network: DEFAULT_NETWORK.to_owned(),
            ipv6_network: None,
            ipv6_only: false,
            kube: false,
            keep: false,
            weft: None,
            cleanup: None,
            help: false,
        }
    }
}

fn parse_nodes(v: &str) -> Result<usize, String> {
    v.parse()
        .ok()
        .filter(|n| (1..=MAX_NODES).contains(n))
        .ok_or_else(|| format!("expected a number in 1..={MAX_NODES}"))
}

/// Parses the arguments after `lab` (`--flag value` and `--flag=value` both work); an error is
/// one line naming the flag and the value.
fn parse_args(args: &[String]) -> Result<CliArgs> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let argv = std::iter::once("weft-lab".to_string()).chain(args.iter().cloned());
    let err = match CliArgs::try_parse_from(argv) {
        Ok(a) => return Ok(a),
        Err(e) => e,
    };
    let context = |kind| match err.get(kind) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    // `--nodes <N>` → `--nodes`.
    let arg = context(ContextKind::InvalidArg);
    let flag = arg.split([' ', '=']).next().unwrap_or_default();
    let value = context(ContextKind::InvalidValue);
    match err.kind() {
        ErrorKind::ValueValidation => {
            let reason =
                std::error::Error::source(&err).map_or_else(String::new, |s| s.to_string());
            bail!("{flag}={value}: {reason}")
        }
        ErrorKind::InvalidValue if value.is_empty() => bail!("{flag} needs a value"),
        ErrorKind::UnknownArgument => {
            bail!("unknown argument {arg:?} for `weft-lab` (see `weft-lab --help`)")
        }
        _ => {
            let text = err.to_string();
            let line = text.lines().next().unwrap_or_default();
            bail!(
                "{} (see `weft-lab --help`)",
                line.strip_prefix("error: ").unwrap_or(line)
            )
        }
    }
}

/// `weft-lab [args]`: `args` are the arguments after the program name. Returns the process exit code:
/// 0 when every pod reached every other pod, 1 otherwise. Blocks; call it from `main` before
/// (or instead of) building a tokio runtime.
pub fn run_cli(args: &[String]) -> Result<i32> {
    let args = parse_args(args)?;
    if args.help {
        println!("{}", CliArgs::command().render_help());
        return Ok(0);
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "weft-lab creates network namespaces and must run as root (scripts/lab.sh as root, or sudo scripts/lab.sh)"
        );
    }
    if let Some(name) = &args.cleanup {
        let removed = cleanup(name)?;
        println!(
            "lab {name}: removed {} namespace(s){}{}",
            removed.len(),
            if removed.is_empty() { "" } else { ": " },
            removed.join(" ")
        );
        return Ok(0);
    }
    let weft = match &args.weft {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("finding the weft binary (pass --weft PATH)")?
            .with_file_name("weft"),
    };
    install_signal_handler()?;

    let mut spec = LabSpec::new(args.nodes, weft);
    spec.backend = args.backend.clone();
    spec.network = args.network.clone();
    spec.kube = args.kube;
    spec.ipv6_network = args.ipv6_network.clone();
    spec.ipv6_only = args.ipv6_only;
    eprintln!(
        "weft-lab: building {} node(s), backend {}, network {}{}{}",
        spec.nodes,
        spec.backend,
        spec.network,
        args.ipv6_network
            .as_deref()
            .map(|v6| format!(" and {v6}"))
            .unwrap_or_default(),
        match (args.kube, args.ipv6_only) {
            (true, true) => ", kube mode, IPv6 only",
            (true, false) => ", kube mode",
            _ => "",
        }
    );
    let mut lab = Lab::build(spec)?;
    eprintln!(
        "weft-lab: lab {} is up (files in {}); starting weft on every node",
        lab.name(),
        lab.dir().display()
    );
    if args.keep {
        lab.keep();
    }
    let result = exercise(&mut lab);
    let interrupted = INTERRUPTED.load(Ordering::SeqCst);
    if let Err(e) = &result {
        if !interrupted {
            eprintln!("weft-lab: {e:#}");
            lab.dump_logs();
        }
    }
    if args.keep && args.kube {
        print_keep_help(&lab)?;
        println!("The API server runs in weft-lab: press Ctrl-C to tear the lab down.");
        while !INTERRUPTED.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
        let name = lab.name().to_owned();
        lab.teardown()?;
        eprintln!("weft-lab: lab {name} torn down");
        return Ok(130);
    } else if args.keep {
        print_keep_help(&lab)?;
    } else {
        let name = lab.name().to_owned();
        lab.teardown()?;
        eprintln!("weft-lab: lab {name} torn down");
    }
    if interrupted {
        return Ok(130);
    }
    let all_ok = result?;
    Ok(if all_ok { 0 } else { 1 })
}

/// Starts the agents, adds pods, prints subnet.env, routes and the ping matrix. Returns
/// whether every pair of pods replied.
fn exercise(lab: &mut Lab) -> Result<bool> {
    let started = Instant::now();
    lab.start_all()?;
    for k in 1..=lab.nodes() {
        lab.wait_subnet_env(k, READY_DEADLINE)?;
    }
    eprintln!(
        "weft-lab: every node wrote subnet.env after {:.2}s; adding pods",
        started.elapsed().as_secs_f64()
    );
    lab.add_pods()?;

    let dual = lab.spec().ipv6_network.is_some();
    let v4 = !lab.spec().ipv6_only;
    let until = Instant::now() + PING_DEADLINE;
    let (matrix, matrix6) = loop {
        let matrix = if v4 { lab.ping_matrix()? } else { Vec::new() };
        let matrix6 = if dual {
            lab.ping6_matrix()?
        } else {
            Vec::new()
        };
        let all_ok = matrix.iter().chain(&matrix6).all(|&(_, _, ok)| ok);
        if all_ok || Instant::now() > until {
            break (matrix, matrix6);
        }
        check_interrupted()?;
    };

    for k in 1..=lab.nodes() {
        let path = lab.subnet_file(k)?;
        let env = lab.subnet_env_text(k)?;
        println!(
            "== node {k}: namespace {}, eth0 {}, pod {} in {}",
            lab.node_ns(k)?,
            lab.node_ip(k)?,
            if v4 {
                lab.pod_ip(k)?.to_string()
            } else {
                lab.pod_ip6(k)?.to_string()
            },
            lab.pod_ns(k)?
        );
        println!("-- {}", path.display());
        print!("{env}");
        if v4 {
            println!("-- ip route");
            print!("{}", lab.routes_text(k)?);
        }
        if dual {
            println!("-- ip -6 route");
            print!("{}", lab.routes6_text(k)?);
        }
        println!();
    }
    let mut failed = 0;
    for (family, m) in [("", &matrix), ("IPv6 ", &matrix6)] {
        if m.is_empty() {
            continue;
        }
        print!("{family}{}", format_matrix(lab.nodes(), m));
        let bad = m.iter().filter(|&&(_, _, ok)| !ok).count();
        if bad == 0 {
            println!("all {} pod pairs reply over {family}ping", m.len());
        } else {
            println!(
                "{bad} of {} pod pairs do NOT reply over {family}ping",
                m.len()
            );
        }
        failed += bad;
    }
    Ok(failed == 0)
}

/// The ping matrix as a table: rows are the pinging pod, columns the pinged one.
fn format_matrix(nodes: usize, matrix: &[(usize, usize, bool)]) -> String {
    let mut s = String::from("ping matrix (row pings column):\n      ");
    for j in 1..=nodes {
        let _ = write!(s, "{:>6}", format!("p{j}"));
    }
    s.push('\n');
    for i in 1..=nodes {
        let _ = write!(s, "{:>6}", format!("p{i}"));
        for j in 1..=nodes {
            let cell = if i == j {
                "-"
            } else {
                match matrix.iter().find(|&&(a, b, _)| a == i && b == j) {
                    Some((_, _, true)) => "ok",
                    Some((_, _, false)) => "FAIL",
                    None => "?",
                }
            };
            let _ = write!(s, "{cell:>6}");
        }
        s.push('\n');
    }
    s
}

fn print_keep_help(lab: &Lab) -> Result<()> {
    let me = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "weft-lab".to_owned());
    println!();
    println!("lab {} is still running (--keep).", lab.name());
    println!("Enter a node or a pod:");
    for k in 1..=lab.nodes() {
        let pod = lab.pod_ns(k).unwrap_or("(no pod)");
        println!(
            "  ip netns exec {} bash    # node {k}; its pod: ip netns exec {pod} bash",
            lab.node_ns(k)?
        );
    }
    if lab.spec().kube {
        let ca = lab.dir().join("ca.pem");
        println!("The Nodes (the test API server, docs/kube-test-server.md):");
        println!(
            "  ip netns exec {} curl -s --cacert {} -H \"Authorization: Bearer $(cat {}/token)\" https://{}:{}/api/v1/nodes",
            lab.underlay_ns(),
            ca.display(),
            lab.dir().display(),
            super::UNDERLAY_GATEWAY,
            super::KUBE_API_PORT
        );
    } else {
        println!("etcd:");
        println!(
            "  ip netns exec {} env ETCDCTL_API=3 etcdctl --endpoints={} get --prefix {}",
            lab.underlay_ns(),
            lab.etcd_endpoint()?,
            lab.spec().etcd_prefix
        );
    }
    println!("Logs: {}/n<k>/weft.log", lab.dir().display());
    println!("Remove it: {me} --cleanup {}", lab.name());
    Ok(())
}

/// SIGINT/SIGTERM set [`INTERRUPTED`] (the lab's waits then stop and the lab is torn down);
/// a second signal exits at once.
fn install_signal_handler() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the signal runtime")?;
    // Registered here, before the lab exists, so no signal is missed.
    let (mut int, mut term) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })
        .context("installing SIGINT/SIGTERM handlers")?;
    std::thread::Builder::new()
        .name("lab-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                INTERRUPTED.store(true, Ordering::SeqCst);
                eprintln!("\nweft-lab: interrupted, tearing down (signal again to exit at once)");
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                eprintln!(
                    "weft-lab: exiting without cleanup; remove it with `weft-lab --cleanup <name>`"
                );
                std::process::exit(130);
            })
        })
        .context("starting the signal thread")?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults() {
        assert_eq!(parse_args(&[]).unwrap(), CliArgs::default());
        assert_eq!(CliArgs::default().nodes, 3);
        assert_eq!(CliArgs::default().backend, "host-gw");
    }

    #[test]
    fn both_flag_spellings() {
        let a = parse_args(&args(&[
            "--nodes",
            "5",
            "--backend=vxlan",
            "--keep",
            "--weft",
            "/x/weft",
            "--network=10.1.0.0/16",
            "--kube",
        ]))
        .unwrap();
        assert!(a.kube);
        assert_eq!(a.nodes, 5);
        assert_eq!(a.backend, "vxlan");
        assert!(a.keep);
        assert_eq!(a.weft, Some(PathBuf::from("/x/weft")));
        assert_eq!(a.network, "10.1.0.0/16");
        assert_eq!(
            parse_args(&args(&["--cleanup", "wl1x0"]))
                .unwrap()
                .cleanup
                .as_deref(),
            Some("wl1x0")
        );
    }

    #[test]
    fn bad_arguments_are_named() {
        let e = parse_args(&args(&["--nodes", "0"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--nodes=0"), "{e}");
        let e = parse_args(&args(&["--nodes=abc"])).unwrap_err().to_string();
        assert!(e.contains("--nodes=abc"), "{e}");
        let e = parse_args(&args(&["--backend"])).unwrap_err().to_string();
        assert!(e.contains("--backend needs a value"), "{e}");
        let e = parse_args(&args(&["--frobnicate"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--frobnicate"), "{e}");
        assert!(parse_args(&args(&["--keep=yes"])).is_err());
    }

    #[test]
    fn matrix_table() {
        let m = [(1, 2, true), (2, 1, false)];
        let t = format_matrix(2, &m);
        let rows: Vec<&str> = t.lines().collect();
        assert_eq!(rows[1].split_whitespace().collect::<Vec<_>>(), ["p1", "p2"]);
        assert_eq!(
            rows[2].split_whitespace().collect::<Vec<_>>(),
            ["p1", "-", "ok"]
        );
        assert_eq!(
            rows[3].split_whitespace().collect::<Vec<_>>(),
            ["p2", "FAIL", "-"]
        );
    }
}
