//! Helpers shared by the kernel tests: a network namespace per test thread, and `ip` runners.
#![allow(clippy::unwrap_used, dead_code)]

use std::future::Future;
use std::process::Command;

use serde_json::Value;

/// Runs `f` in a new network namespace on a dedicated thread with a current-thread runtime.
pub fn in_netns<F, Fut>(name: &str, f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping {name}: needs root to create network namespaces");
        return;
    }
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            // A network namespace belongs to a thread: unshare here, then build the runtime (and
            // with it every netlink socket) on this same thread.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(f());
        })
        .expect("spawn test thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Runs `ip <args>` and returns stdout; panics with stderr on failure.
pub fn ip(args: &str) -> String {
    run("ip", args)
}

/// Runs `<tool> <args>` and returns stdout; panics with stderr on failure.
pub fn run(tool: &str, args: &str) -> String {
    let out = Command::new(tool)
        .args(args.split_whitespace())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "{tool} {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn ip_json(args: &str) -> Vec<Value> {
    let text = ip(&format!("-j {args}"));
    if text.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip -j {args}: {e}: {text}"))
}

/// Runs `<tool> -j <args>` (`bridge`, `ip`) and parses the JSON array it prints.
pub fn tool_json(tool: &str, args: &str) -> Vec<Value> {
    let out = Command::new(tool)
        .arg("-j")
        .args(args.split_whitespace())
        .output()
        .expect("run tool");
    assert!(
        out.status.success(),
        "{tool} -j {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    if text.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{tool} -j {args}: {e}: {text}"))
}
