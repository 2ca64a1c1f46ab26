//! Fault scenarios (targets R1–R7, S1) against real weft nodes: `weft_testkit::lab` clusters of
//! network namespaces, the real binary, a real etcd, pods pinging each other at 10/s.
//!
//! Every scenario asserts behaviour only (no lost ping, same subnet, stale state removed only
//! after etcd answered, ...) and reports its timings as figures: they are printed as
//! `FIGURE|<target>|<what>|<value>|<goal>` lines and, when `WEFT_FAULTS_REPORT` names a file,
//! appended there (`scripts/faults.sh` turns them into a table). Time limits in assertions are
//! generous "it happened at all" bounds, so a slow machine never fails a run.
//!
//! Durations: CI-sized by default (etcd outage 10 s); `WEFT_FAULTS_OUTAGE_SECS`,
//! `WEFT_FAULTS_DOWN_SECS`, `WEFT_FAULTS_STORM` and `WEFT_FAULTS_NODES` scale them up
//! (`scripts/faults.sh` without `--quick` runs the full sizes).
//!
//! This file holds the time limits, the knobs and the figures; the shared helpers are in
//! `helpers.rs` (lab, routes, etcd), `agents.rs` (processes), `ping.rs` and `underlay.rs`
//! (firewall cut, HTTP from a namespace); each target group has its own file (`r1_outage.rs` …
//! `s1_storm.rs`), so a test's full name is `<file>::<test>` (`r1_outage::r1_etcd_outage_…`).
mod agents;
mod churn_soak;
#[path = "../common/lab.rs"]
mod common;
mod etcd_members;
mod helpers;
mod least_privilege;
mod ping;
mod r1_outage;
mod r2_restarts;
mod r3_boot;
mod r4_scale;
mod r5_drift;
mod r6_stale;
mod r7_health;
mod s1_storm;
mod slow_etcd;
mod underlay;

use std::collections::BTreeSet;
use std::fmt::Display;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use agents::*;
use helpers::*;
use ping::*;
use underlay::*;

use common::{RouteWatch, free_subnets, hostgw_routes_ok, routes_in, wait_until};
use weft_testkit::lab::{Lab, LabSpec, Signal};

/// Agents are debug builds on a shared 2-core machine: generous, still bounded.
pub(crate) const READY: Duration = Duration::from_secs(60);
pub(crate) const CONVERGE: Duration = Duration::from_secs(30);
/// How long "eventually" may take in an assertion (figures are what gets compared to goals).
pub(crate) const EVENTUALLY: Duration = Duration::from_secs(30);
pub(crate) const PREFIX: &str = "/coreos.com/network";

// ===== knobs and figures =====

pub(crate) fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Prints one figure and appends it to `$WEFT_FAULTS_REPORT` when set.
pub(crate) fn figure(target: &str, what: &str, value: impl Display, goal: &str) {
    let line = format!("FIGURE|{target}|{what}|{value}|{goal}");
    println!("{line}");
    if let Some(path) = std::env::var_os("WEFT_FAULTS_REPORT").filter(|p| !p.is_empty()) {
        let res = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = res {
            eprintln!("writing {}: {e}", PathBuf::from(path).display());
        }
    }
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}
