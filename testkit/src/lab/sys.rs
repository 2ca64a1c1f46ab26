//! Running `ip` and friends: every kernel change the lab makes goes through these helpers, so a
//! failure always says which command failed and what it printed.
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Runs `cmd` to completion (stdin closed) and returns its stdout; a non-zero exit is an error
/// that carries the command line and its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` to completion (stdin closed) and returns its output whatever the exit status.
pub(crate) fn output(cmd: &mut Command) -> Result<Output> {
    tracing::debug!("running {}", show(cmd));
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{}`", show(cmd)))
}

/// `ip [-n <ns>] <args…>`.
pub(crate) fn ip(ns: Option<&str>, args: &[&str]) -> Result<String> {
    run(&mut ip_cmd(ns, args))
}

pub(crate) fn ip_cmd(ns: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    cmd.args(args);
    cmd
}

/// `ip netns exec <ns> <program> <args…>`.
pub(crate) fn netns_exec(ns: &str, program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, program]).args(args);
    cmd
}

/// `ip netns add <ns>`. `Ok(false)` when a namespace of that name already exists.
pub(crate) fn netns_add(ns: &str) -> Result<bool> {
    let out = output(&mut ip_cmd(None, &["netns", "add", ns]))?;
    if out.status.success() {
        return Ok(true);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("File exists") {
        return Ok(false);
    }
    bail!(
        "`ip netns add {ns}` failed ({}): {}",
        out.status,
        err.trim()
    )
}

/// Kills (SIGKILL) every process still running in `ns`, then `ip netns del <ns>`. A namespace
/// that is already gone is not an error.
pub(crate) fn netns_purge(ns: &str) -> Result<()> {
    if !netns_exists(ns)? {
        return Ok(());
    }
    let pids = ip(None, &["netns", "pids", ns])?;
    for pid in pids.split_whitespace() {
        let pid: i32 = pid
            .parse()
            .with_context(|| format!("`ip netns pids {ns}` printed {pid:?}"))?;
        tracing::debug!("killing leftover process {pid} in {ns}");
        // ESRCH: it exited in the meantime.
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => bail!("kill -9 {pid} (in namespace {ns}): {e}"),
        }
    }
    let out = output(&mut ip_cmd(None, &["netns", "del", ns]))?;
    if !out.status.success() && netns_exists(ns)? {
        bail!(
            "`ip netns del {ns}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub(crate) fn netns_exists(ns: &str) -> Result<bool> {
    Ok(netns_list()?.iter().any(|n| n == ns))
}

/// Names from `ip netns list` (which prints `name` or `name (id: N)`).
pub(crate) fn netns_list() -> Result<Vec<String>> {
    let text = ip(None, &["netns", "list"])?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// The command line, for messages.
pub(crate) fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
