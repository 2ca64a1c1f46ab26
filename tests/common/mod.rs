//! Helpers shared by the end-to-end tests (each test binary uses a subset).
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// True when running as root. Otherwise prints why the test is skipped and returns false.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root (network namespaces); run `sudo scripts/test.sh`");
    false
}

/// The weft binary under test: the one cargo built for this test run.
pub fn weft_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weft"))
}

/// Polls `check` every 50 ms until it returns `Ok`, or returns its last error at `deadline`.
pub fn wait_until<T>(
    deadline: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let until = Instant::now() + deadline;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > until => {
                return Err(format!("still failing after {deadline:?}: {e}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
