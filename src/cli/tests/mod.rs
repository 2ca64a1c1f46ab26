//! Tests of the command line: every Go-flag rule of the shim, the environment, the values and
//! the subcommands' flags.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod agent_flags;
mod commands;
mod env;
mod go_syntax;
mod help;

use super::go_flags::FlagTable;
use super::*;
use std::collections::HashMap;

/// The agent's flags, from the clap command.
fn flags() -> FlagTable {
    FlagTable::of(&command())
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn run(a: &[&str]) -> Options {
    match parse(&args(a), &no_env) {
        Ok(Command::Run(o)) => o,
        other => panic!("expected Run for {a:?}, got {other:?}"),
    }
}

fn run_env(a: &[&str], env: &[(&str, &str)]) -> Result<Options, CliError> {
    let map: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |k: &str| map.get(k).cloned();
    match parse(&args(a), &lookup)? {
        Command::Run(o) => Ok(o),
        other => panic!("expected Run, got {other:?}"),
    }
}

fn err(a: &[&str]) -> String {
    match parse(&args(a), &no_env) {
        Err(e) => e.to_string(),
        Ok(c) => panic!("expected error for {a:?}, got {c:?}"),
    }
}
