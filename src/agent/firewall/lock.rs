//! One writer at a time: every read-modify-write of the shared chains and tables (read with
//! `iptables-save` / `nft -j list table`, written with `iptables-restore --noflush` / `nft -f`)
//! holds an exclusive `flock` on [`LOCK_PATH`] from before the read until after the write.
//!
//! Why: several weft processes write the same chains on one host — one daemon per flannel
//! network, and `weft cleanup --network` beside them. Each rewrite flushes the chain
//! (`:FLANNEL-FWD - [0:0]`, `flush chain`) and writes back this network's rules plus the other
//! networks' lines *as it read them*. The tools apply one batch atomically, but nothing ties
//! the batch to the read it was made from: two writers that read before either writes each
//! write back a chain without the other's change. Seen in the two-network end-to-end test: two
//! daemons starting together both read "chain missing", and the second one's batch flushed the
//! first one's forward rules (and appended a second jump); `weft cleanup --network` later
//! found only its own network's lines and removed the chain. The same goes for a daemon's
//! repair racing a cleanup (the cleanup's lines come back, or the daemon's go), and for the
//! nftables table `ip flannel-ipv4`. With the lock, the second reader sees the first writer's
//! result.
//!
//! The lock is weft's own file, not `/run/xtables.lock`: `iptables-restore --wait` takes that
//! one itself while we hold ours (holding it here would deadlock), and iptables-nft or `nft`
//! do not take it at all. It lives in `/run/flannel`, the directory flanneld's and weft's
//! manifests mount from the host (for `subnet.env`), so daemons in separate containers of
//! one node share it. It is host-wide, like the xtables lock, not per network namespace:
//! writers in different namespaces wait for each other for the few milliseconds of a batch.
//!
//! Waiting is bounded ([`WAIT`]: longer than the two tool deadlines of a holder's read and
//! write); past it the write fails and is retried at the next check. A lock file that cannot be
//! opened or locked (a read-only `/run`) leaves weft as it was before the lock: writing
//! unserialised, with a warning once.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::exec::ToolError;

/// The lock file: created (with `/run/flannel`) when missing, never removed.
pub const LOCK_PATH: &str = "/run/flannel/weft-firewall.lock";

/// How long a writer waits for the lock: more than a holder's `iptables-save` and
/// `iptables-restore` together may take (30 s each, [`super::exec`]).
pub const WAIT: Duration = Duration::from_secs(75);

/// Polling steps while another process holds the lock (a batch takes a few milliseconds).
const FIRST_PAUSE: Duration = Duration::from_millis(2);
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// Held: the lock is released when this is dropped (and by the kernel if the process dies).
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub(crate) struct Guard {
    _lock: Option<Flock<File>>,
}

impl Guard {
    /// Whether the lock is really held (false: the file could not be locked; see the module doc).
    #[cfg(test)]
    pub(crate) fn is_held(&self) -> bool {
        self._lock.is_some()
    }
}

/// Takes the lock on [`LOCK_PATH`] (see the module doc), waiting up to [`WAIT`].
pub(crate) async fn exclusive() -> Result<Guard, ToolError> {
    exclusive_at(Path::new(LOCK_PATH), WAIT).await
}

/// Takes an exclusive `flock` on `path`, polling while another open file holds it (another
/// process, or another task of this one), for at most `wait`. Cancel-safe: nothing is held
/// until it returns.
pub(crate) async fn exclusive_at(path: &Path, wait: Duration) -> Result<Guard, ToolError> {
    let mut file = match open(path) {
        Ok(f) => f,
        Err(e) => return Ok(unlocked(path, &e.to_string())),
    };
    let since = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Guard { _lock: Some(lock) }),
            Err((f, Errno::EWOULDBLOCK | Errno::EINTR)) => file = f,
            Err((_, e)) => return Ok(unlocked(path, &e.to_string())),
        }
        if since.elapsed() >= wait {
            return Err(ToolError::Io {
                cmd: format!("flock {}", path.display()),
                reason: format!(
                    "held by another process for more than {} s (another weft writing the \
                     firewall rules?)",
                    wait.as_secs()
                ),
            });
        }
        if pause == FIRST_PAUSE {
            debug!("waiting for {} (another weft is writing)", path.display());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// No lock to be had: go on without it, as weft did before the lock; say so once.
fn unlocked(path: &Path, why: &str) -> Guard {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        warn!(
            "cannot lock {} ({why}); writing the firewall rules without it: another weft process \
             on this host writing the same chains at the same moment may undo this one's change",
            path.display()
        );
    } else {
        debug!("cannot lock {} ({why})", path.display());
    }
    Guard { _lock: None }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_and_a_bounded_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/weft-firewall.lock");
        let first = exclusive_at(&path, WAIT).await.unwrap();
        assert!(first.is_held() && path.exists());
        // Another open file of the same path (as another process's) cannot have it meanwhile.
        let e = exclusive_at(&path, Duration::from_millis(30))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("held by another process"), "{e}");
        // Released on drop: a waiter gets it as soon as the holder is done.
        let waiter = tokio::spawn({
            let path = path.clone();
            async move { exclusive_at(&path, WAIT).await.map(|g| g.is_held()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(first);
        assert!(waiter.await.unwrap().unwrap());
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_opened_is_no_lock_and_no_error() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the directory should be.
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, "").unwrap();
        let guard = exclusive_at(&blocker.join("weft-firewall.lock"), WAIT)
            .await
            .unwrap();
        assert!(!guard.is_held());
    }
}
