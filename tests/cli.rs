//! The `weft` binary's command line and log output, run for real (no root, no etcd needed):
//! clap-generated `--help` for weft and each subcommand, exit 2 with one line on a bad flag
//! value (an etcd endpoint that is not a URL among them), and logs without ANSI colour codes
//! when stderr is not a terminal.
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn weft() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weft"));
    // The test's own environment must not set flags or colours.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FLANNELD_") {
            c.env_remove(k);
        }
    }
    c.env_remove("NO_COLOR").env_remove("RUST_LOG");
    c
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn help_of_weft_and_each_subcommand() {
    for (args, words) in [
        (
            &["--help"][..],
            &[
                "Usage: weft",
                "--etcd-endpoints",
                "FLANNELD_ETCD_ENDPOINTS",
                "status",
                "cleanup",
                "docker-opts",
            ][..],
        ),
        (&["-help"], &["--ip-masq[=<BOOL>]", "--log-color"]),
        (&["-h"], &["--subnet-file"]),
        (
            &["status", "--help"],
            &["Usage: weft status", "--json", "--etcd-prefix"],
        ),
        (
            &["cleanup", "-help"],
            &[
                "Usage: weft cleanup",
                "--release-lease",
                "--remove-subnet-env",
            ],
        ),
        (
            &["docker-opts", "-h"],
            &["Usage: weft docker-opts", "-f <FLANNEL-ENV-FILE>", "-m"],
        ),
    ] {
        // The help names the variables but never shows their values (one is a password).
        let out = weft()
            .args(args)
            .env("FLANNELD_ETCD_PASSWORD", "hunter2")
            .output()
            .expect("run weft");
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        for w in words {
            assert!(stdout.contains(w), "{args:?} lacks {w:?}: {}", text(&out));
        }
        assert!(!stdout.contains("hunter2"), "{args:?}: {}", text(&out));
    }
}

#[test]
fn an_endpoint_that_is_not_a_url_is_a_config_error_naming_it() {
    for args in [
        &["--etcd-endpoints=notaurl"][..],
        &["-etcd-endpoints", "notaurl"],
        &["status", "--etcd-endpoints=notaurl"],
    ] {
        let out = weft().args(args).output().expect("run weft");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {}", text(&out));
        assert!(stderr.contains("\"notaurl\""), "{}", text(&out));
        assert!(stderr.contains("etcd-endpoints"), "{}", text(&out));
    }
    let out = weft()
        .env("FLANNELD_ETCD_ENDPOINTS", "etcd:2379")
        .output()
        .expect("run weft");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("FLANNELD_ETCD_ENDPOINTS"),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    for args in [
        &["--foo"][..],
        &["--ip-masq", "false"],
        &["--healthz-port=abc"],
        &["status", "--no-such-flag"],
        &["docker-opts", "-z"],
    ] {
        let out = weft().args(args).output().expect("run weft");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).lines().count(),
            1,
            "{args:?}: {}",
            text(&out)
        );
    }
}

/// Kills the agent when the test ends, passed or not.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the agent against an etcd that is not there, with stderr to a pipe, and returns what
/// it logged up to its options line ("CLI flags config").
fn first_log_lines(extra: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port nothing listens on (bound then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut cmd = weft();
    cmd.arg(format!("--etcd-endpoints=http://127.0.0.1:{port}"))
        .arg(format!(
            "--subnet-file={}",
            dir.path().join("subnet.env").display()
        ))
        .arg("--peer-cache-file=")
        .args(extra)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut agent = Agent(cmd.spawn().expect("start weft"));
    let stderr = agent.0.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        log.push_str(&line);
        log.push('\n');
        if line.contains("CLI flags config") {
            return log;
        }
    }
    panic!("no options line from weft within 20 s; it logged:\n{log}");
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let plain = first_log_lines(&[], &[]);
    assert!(plain.contains("INFO"), "{plain}");
    assert!(
        !plain.contains("\x1b["),
        "colour codes in piped logs:\n{plain:?}"
    );
    // The check can see colour: asked for, it is there...
    let coloured = first_log_lines(&["--log-color=always"], &[]);
    assert!(coloured.contains("\x1b["), "{coloured:?}");
    // ...and NO_COLOR or --log-color=never keep it off.
    let no_color = first_log_lines(&[], &[("NO_COLOR", "1")]);
    assert!(!no_color.contains("\x1b["), "{no_color:?}");
    let never = first_log_lines(&[], &[("FLANNELD_LOG_COLOR", "never")]);
    assert!(!never.contains("\x1b["), "{never:?}");
}
