//! What a test needs from the machine it runs on, and the one rule for when that is missing.
//!
//! A test that cannot run here (not root, a tool or kernel feature missing) must not pass as if
//! it had checked something. Under CI (`CI` set to anything but empty, `0` or `false`; CI
//! systems set `CI=true`) it fails, naming what is missing and how to get it. Elsewhere it prints
//! `SKIPPED <test>: <what is missing>; <how to get it>` and returns without checking anything,
//! so a developer without root can still run the pure tests.
//!
//! Every test crate of the workspace uses this one rule: the end-to-end tests as `common::need`
//! (re-exported by `tests/common/lab.rs`), the backends' kernel tests through
//! `backends/tests/common`, the others and the unit tests under `src/` as `weft_testkit::need`.

use std::io::Write as _;

/// Whether the tests run under CI, where a missing requirement is a failure.
pub fn in_ci() -> bool {
    ci_value_is_set(std::env::var("CI").ok().as_deref())
}

/// The CI rule on the value of `CI`, apart from the environment (unit-tested).
fn ci_value_is_set(value: Option<&str>) -> bool {
    match value {
        None => false,
        Some(v) => {
            let v = v.trim();
            !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
        }
    }
}

/// `test` cannot run because `what` is missing; `how` says how to get it. Panics under CI,
/// otherwise prints `SKIPPED …`. The caller returns right after.
pub fn missing(test: &str, what: &str, how: &str) {
    if in_ci() {
        let ci = std::env::var("CI").unwrap_or_default();
        panic!("{test} cannot run: {what} is missing (CI={ci:?}: a failure, not a skip); {how}");
    }
    // Straight to the stderr handle: the test harness captures `eprintln!` of a passing test,
    // and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {what} is missing; {how} (under CI=true this fails)"
    );
}

/// `test` does not apply here by design, which is not a missing requirement: says so and never
/// fails. The one case: the VM (`WEFT_IN_VM=1`), whose kernel has on purpose what the host's
/// lacks, runs whole test files whose host-only tests are checked by the host run.
pub fn not_applicable(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "NOT APPLICABLE {test}: {why}");
}

/// How to run the tests as root, for the messages.
pub const AS_ROOT: &str = "run the tests as root: `scripts/test.sh [cargo test args]` \
                           (a normal user: `sudo scripts/test.sh …`)";

/// True when running as root; otherwise applies the rule (fail under CI, `SKIPPED` elsewhere)
/// and returns false. Root is what network namespaces, netlink writes and iptables need.
pub fn root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    missing(test, "root (network namespaces)", AS_ROOT);
    false
}

#[cfg(test)]
mod tests {
    use super::ci_value_is_set;

    #[test]
    fn ci_is_set_by_any_value_but_empty_zero_or_false() {
        for on in ["true", "1", "yes", "TRUE", "woodpecker"] {
            assert!(ci_value_is_set(Some(on)), "{on}");
        }
        for off in [
            None,
            Some(""),
            Some("0"),
            Some("false"),
            Some("False"),
            Some(" "),
        ] {
            assert!(!ci_value_is_set(off), "{off:?}");
        }
    }
}
