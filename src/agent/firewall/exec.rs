//! Running the firewall tools: the only place that starts `iptables*` and `nft`.
//!
//! Tools are found on `PATH` (so Debian's alternatives pick iptables-nft or -legacy for all
//! three iptables commands alike). Every run has a deadline and is killed past it, so a tool
//! stuck on the xtables lock cannot stall the agent's control loop forever.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;
use tracing::debug;

/// Where the tools are looked for when the agent has no PATH at all.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long one tool run may take.
const TOOL_DEADLINE: Duration = Duration::from_secs(30);

/// Why a tool run failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The program is not installed (not on PATH).
    #[error("`{cmd}`: {program} is not installed (not found on PATH)")]
    NotFound { cmd: String, program: String },
    /// It ran and exited non-zero.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// It could not be started, fed or waited for, or ran past its deadline.
    #[error("`{cmd}`: {reason}")]
    Io { cmd: String, reason: String },
}

impl ToolError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ToolError::NotFound { .. })
    }

    /// The tool's stderr when it exited non-zero.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            ToolError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

/// Runs `program args…`, feeding `stdin` (if any) and returning stdout.
pub async fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, ToolError> {
    let cmd = show(program, args);
    debug!("running {cmd}");
    let io = |reason: String| ToolError::Io {
        cmd: cmd.clone(),
        reason,
    };
    let mut command = Command::new(program);
    if std::env::var_os("PATH").is_none_or(|p| p.is_empty()) {
        // Started with an empty environment (`env -i`, some init systems): look where Debian
        // and every other distribution keep the tools, not only in libc's default /bin:/usr/bin.
        command.env("PATH", DEFAULT_PATH);
    }
    let mut child = command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ToolError::NotFound {
                    cmd: cmd.clone(),
                    program: program.to_owned(),
                }
            } else {
                io(format!("cannot start: {e}"))
            }
        })?;
    let pipe = child.stdin.take();
    let feed = async {
        if let (Some(text), Some(mut pipe)) = (stdin, pipe) {
            pipe.write_all(text.as_bytes()).await?;
            pipe.shutdown().await?;
        }
        Ok::<(), std::io::Error>(())
    };
    let run = async {
        // Feed and collect together: a large output must not block a tool still reading.
        let (fed, out) = tokio::join!(feed, child.wait_with_output());
        (fed, out)
    };
    let (fed, out) = tokio::time::timeout(TOOL_DEADLINE, run)
        .await
        .map_err(|_| io(format!("no answer within {TOOL_DEADLINE:?}; killed")))?;
    let out = out.map_err(|e| io(format!("waiting for it: {e}")))?;
    if !out.status.success() {
        return Err(ToolError::Failed {
            cmd,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    fed.map_err(|e| io(format!("writing its input: {e}")))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn show(program: &str, args: &[&str]) -> String {
    let mut s = program.to_owned();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stdin_stdout_and_errors() {
        assert_eq!(run("cat", &[], Some("a\nb\n")).await.unwrap(), "a\nb\n");
        let e = run("sh", &["-c", "echo oops >&2; exit 3"], None)
            .await
            .unwrap_err();
        assert_eq!(e.stderr(), Some("oops"));
        assert!(e.to_string().contains("sh -c"), "{e}");
        let e = run("weft-no-such-tool", &[], None).await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }
}
