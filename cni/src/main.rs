//! `weft-cni`: the flannel CNI plugin. Install it as `/opt/cni/bin/flannel` (drop-in for
//! flannel's plugin, `"type": "flannel"`) or as `weft-cni`. See the `weft_cni` library.
use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let outcome = weft_cni::run(&mut std::io::stdin().lock(), &|name| {
        std::env::var(name).ok()
    });
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(&outcome.stdout).and_then(|()| out.flush()) {
        eprintln!("weft-cni: writing the result to stdout: {e}");
        return ExitCode::from(1);
    }
    ExitCode::from(outcome.exit_code)
}
