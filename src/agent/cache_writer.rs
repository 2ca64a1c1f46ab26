//! Writes the peer cache (`--peer-cache-file`) beside the control loop.
//!
//! Each write ends with two fsyncs (7–8 ms at 5,000 peers on a busy disk, more when the disk
//! stalls); on the control task that time would be added to the next lease change, and on a
//! runtime thread it would stall the health server. So a write runs on a thread of its own,
//! from a copy of the leases, at most every [`CACHE_WRITE`](super::CACHE_WRITE): a burst of
//! lease events costs one write. One write at a time: while one runs, the cache stays dirty
//! and the next tick tries again.
use std::path::{Path, PathBuf};

use net_conf::{LeaseAttrs, SubnetKey};
use tracing::{debug, warn};

use super::peer_cache::PeerCache;
use crate::lease::table::LeaseTable;

/// The peer cache's writer. Without a path it does nothing.
pub struct CacheWriter {
    path: Option<PathBuf>,
    /// The cache is behind the lease table.
    dirty: bool,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl CacheWriter {
    pub fn new(path: Option<PathBuf>) -> CacheWriter {
        CacheWriter {
            path,
            dirty: true,
            writer: None,
        }
    }

    /// The leases changed: write at the next tick.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty && self.path.is_some()
    }

    /// Starts a write of `config`, our lease and the table's peers on a thread of its own,
    /// unless one is still running.
    pub fn write(&mut self, config: &str, own: SubnetKey, attrs: &LeaseAttrs, table: &LeaseTable) {
        if self.writer.as_ref().is_some_and(|w| !w.is_finished()) {
            return;
        }
        if let Some(done) = self.writer.take()
            && done.join().is_err()
        {
            warn!("the previous peer-cache write panicked");
        }
        self.dirty = false;
        let Some(path) = self.path.clone() else {
            return;
        };
        let config = config.to_owned();
        let attrs = attrs.clone();
        let peers: Vec<(SubnetKey, LeaseAttrs)> = table
            .peer_entries()
            .map(|(key, attrs)| (key, attrs.clone()))
            .collect();
        let spawned = std::thread::Builder::new()
            .name("peer-cache".into())
            .spawn(move || {
                let entries = peers.iter().map(|(key, attrs)| (*key, attrs));
                write_peer_cache(&path, &config, own, &attrs, entries, peers.len());
            });
        match spawned {
            Ok(handle) => self.writer = Some(handle),
            Err(e) => {
                warn!("cannot start the peer-cache writer ({e}); trying again at the next tick");
                self.dirty = true;
            }
        }
    }

    /// Waits for a write in flight (shutdown: no temporary file left behind).
    pub fn finish(&mut self) {
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Writes the peer cache (streaming) and logs how long it took; a failure is a warning (the
/// cache is a hint for the next boot).
fn write_peer_cache<'a>(
    path: &Path,
    config: &str,
    own: SubnetKey,
    attrs: &LeaseAttrs,
    peers: impl Iterator<Item = (SubnetKey, &'a LeaseAttrs)>,
    count: usize,
) {
    let started = std::time::Instant::now();
    match PeerCache::write(path, config, own, attrs, peers) {
        Ok(()) => debug!(
            "wrote the peer cache {} ({count} peers) in {:?}",
            path.display(),
            started.elapsed()
        ),
        Err(e) => warn!("{e:#}"),
    }
}
