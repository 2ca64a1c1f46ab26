//! Taking a lab down: on drop or [`Lab::teardown`] (agents, namespaces, etcd, files, every
//! failure reported), [`Lab::keep`] to leave it running, and [`cleanup`] of a kept lab by name.
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use nix::sys::signal::Signal;

use super::sys;
use super::{Lab, STOP_GRACE};

impl Lab {
    /// Leaves everything running when the lab is dropped (`weft-lab --keep`).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Tears everything down now and returns every failure in one error.
    pub fn teardown(mut self) -> Result<()> {
        let errors = self.teardown_inner();
        if errors.is_empty() {
            return Ok(());
        }
        bail!("lab teardown failed:\n- {}", errors.join("\n- "))
    }

    /// Stops agents (SIGTERM, SIGKILL after the grace), stops etcd, deletes every namespace
    /// (killing what still runs in it) and the lab directory. Keeps going after a failure
    /// and returns all of them.
    fn teardown_inner(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        if std::mem::replace(&mut self.torn_down, true) {
            return errors;
        }
        // SIGTERM to all first so they shut down in parallel, then collect.
        let until = Instant::now() + STOP_GRACE;
        for k in 1..=self.nodes.len() {
            if let Err(e) = self.signal_node(k, Signal::SIGTERM) {
                errors.push(format!("{e:#}"));
            }
        }
        for k in 1..=self.nodes.len() {
            if let Err(e) = self.reap_node(k, Signal::SIGTERM, until) {
                errors.push(format!("{e:#}"));
            }
        }
        // EtcdServer's Drop kills etcd and removes its files; the API server stops with its
        // runtime.
        self.etcd = None;
        self.kube = None;
        for node in &self.nodes {
            if let Some(pod) = &node.pod {
                if let Err(e) = sys::netns_purge(&pod.ns) {
                    errors.push(format!("{e:#}"));
                }
            }
            if let Err(e) = sys::netns_purge(&node.ns) {
                errors.push(format!("{e:#}"));
            }
        }
        if let Some(ext) = self.external.take() {
            if let Err(e) = sys::netns_purge(&ext) {
                errors.push(format!("{e:#}"));
            }
        }
        if let Err(e) = sys::netns_purge(&self.underlay) {
            errors.push(format!("{e:#}"));
        }
        self.nodes.clear();
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                errors.push(format!("removing {}: {e}", self.dir.display()));
            }
            _ => {}
        }
        errors
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.keep {
            // The etcd child must outlive us: forgetting it skips its Drop (kill + rm).
            if let Some(etcd) = self.etcd.take() {
                std::mem::forget(etcd);
            }
            return;
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
        for e in self.teardown_inner() {
            eprintln!("lab {} teardown: {e}", self.name);
        }
    }
}

/// Removes a kept lab by name: kills what runs in its namespaces, deletes them and its files.
/// Returns the namespaces it removed.
pub fn cleanup(name: &str) -> Result<Vec<String>> {
    if name.is_empty() || name.contains('/') {
        bail!("lab name {name:?} is not valid");
    }
    let prefix = format!("{name}-");
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    let mut list = sys::netns_list()?;
    // Pods and nodes before the underlay, as the lab itself does.
    list.sort_by_key(|ns| ns.ends_with("-u"));
    for ns in list.into_iter().filter(|ns| ns.starts_with(&prefix)) {
        match sys::netns_purge(&ns) {
            Ok(()) => removed.push(ns),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let dir = std::env::temp_dir().join(format!("weft-lab-{name}"));
    if let Ok(etcd_dir) = fs::read_to_string(dir.join("etcd-dir")) {
        let etcd_dir = PathBuf::from(etcd_dir.trim());
        if etcd_dir.starts_with(std::env::temp_dir()) {
            if let Err(e) = fs::remove_dir_all(&etcd_dir) {
                errors.push(format!("removing {}: {e}", etcd_dir.display()));
            }
        }
    }
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            errors.push(format!("removing {}: {e}", dir.display()));
        }
        _ => {}
    }
    if !errors.is_empty() {
        bail!("cleanup of lab {name} failed:\n- {}", errors.join("\n- "));
    }
    Ok(removed)
}
