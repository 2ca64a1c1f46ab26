//! `weft-lab`: the local multi-node lab of `scripts/lab.sh` (see `weft_testkit::lab`).
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match weft_testkit::lab::run_cli(&args) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("weft-lab: {e:#}");
            ExitCode::from(1)
        }
    }
}
