//! `cargo bench --bench agent -- [--quick | --smoke] [--sizes 100,1000 | --sizes none]
//! [--backends host-gw,vxlan] [--detail-at N] [--events N] [--idle SECS] [--iperf SECS]
//! [--iperf-rounds N] [--underlay-gro] [--no-kube] [--no-dual] [--weft PATH]`
//!
//! Kube mode (the test API server instead of etcd) runs beside etcd mode at the detail size
//! unless `--no-kube`.
//!
//! `--sizes none` skips the cold-start scenarios (and with them the detail ones): only the
//! pod-to-pod iperf3 (D1) runs.
//!
//! Runs as root (namespaces). `scripts/bench.sh` builds the release binary and runs this; see
//! BENCHMARKS.md for what each figure means and its target.
#![allow(clippy::print_stdout)]

mod bench;
mod dual;
mod kube;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bench::{Config, Kind};

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn real_main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut cfg = Config {
        weft_bin: root.join("target/release/weft"),
        backends: vec![Kind::HostGw, Kind::Vxlan],
        sizes: vec![100, 1000, 5000, 20000],
        detail_at: 5000,
        events: 100,
        idle: Duration::from_secs(60),
        iperf_secs: 5,
        iperf_rounds: 5,
        underlay_gro: false,
        kube: true,
        dual: true,
    };
    let mut args = std::env::args().skip(1);
    let mut detail_set = false;
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            // cargo bench passes --bench to harness=false targets.
            "--bench" => {}
            "--quick" => {
                cfg.sizes = vec![100, 5000];
                cfg.events = 30;
                cfg.idle = Duration::from_secs(10);
                cfg.iperf_secs = 3;
                cfg.iperf_rounds = 2;
            }
            "--smoke" => {
                cfg.sizes = vec![50];
                cfg.detail_at = 50;
                detail_set = true;
                cfg.events = 5;
                cfg.idle = Duration::from_secs(2);
                cfg.iperf_secs = 1;
                cfg.iperf_rounds = 1;
                cfg.underlay_gro = true;
            }
            "--sizes" => {
                let v = val("--sizes")?;
                if v == "none" {
                    cfg.sizes = Vec::new();
                    continue;
                }
                cfg.sizes = v
                    .split(',')
                    .map(|v| {
                        v.trim()
                            .parse::<usize>()
                            .with_context(|| format!("--sizes: {v:?} is not a number"))
                    })
                    .collect::<Result<_>>()?;
            }
            "--backends" => {
                cfg.backends = val("--backends")?
                    .split(',')
                    .map(|v| match v.trim() {
                        "host-gw" => Ok(Kind::HostGw),
                        "vxlan" => Ok(Kind::Vxlan),
                        other => bail!("--backends: {other:?} is not host-gw or vxlan"),
                    })
                    .collect::<Result<_>>()?;
            }
            "--detail-at" => {
                cfg.detail_at = val("--detail-at")?.parse().context("--detail-at")?;
                detail_set = true;
            }
            "--events" => cfg.events = val("--events")?.parse().context("--events")?,
            "--idle" => cfg.idle = Duration::from_secs(val("--idle")?.parse().context("--idle")?),
            "--iperf" => cfg.iperf_secs = val("--iperf")?.parse().context("--iperf")?,
            "--iperf-rounds" => {
                cfg.iperf_rounds = val("--iperf-rounds")?.parse().context("--iperf-rounds")?;
                if cfg.iperf_rounds == 0 {
                    bail!("--iperf-rounds must be at least 1 (--iperf 0 skips iperf3)");
                }
            }
            "--underlay-gro" => cfg.underlay_gro = true,
            "--no-kube" => cfg.kube = false,
            "--no-dual" => cfg.dual = false,
            "--weft" => cfg.weft_bin = PathBuf::from(val("--weft")?),
            other => bail!("unknown argument {other:?}"),
        }
    }
    if !detail_set && !cfg.sizes.contains(&cfg.detail_at) {
        cfg.detail_at = *cfg.sizes.iter().max().unwrap_or(&0);
    }
    let report = bench::run(&cfg)?;
    println!("\n{}", bench::markdown(&cfg, &report));
    Ok(())
}
