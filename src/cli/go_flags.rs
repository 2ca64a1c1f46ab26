//! The shim between Go `flag` spellings and clap.
//!
//! flanneld users write Go's spellings: `-flag` (one dash, long name), `-flag=value`,
//! `-flag value`, `--flag=value`, a boolean as `-flag` or `-flag=false` and never `-flag false`,
//! and `FLANNELD_<NAME>` variables that fill in what the command line left out (flannel's
//! `SetFlagsFromEnv`). clap reads none of that natively: a single dash starts a *short* flag
//! cluster, a boolean flag takes no `=false`, and its `env` support cannot tell "given on the
//! command line" from "set by the environment" in an error message nor be fed a fake
//! environment in tests. So this small tokenizer, written by hand, reads the Go spellings and
//! hands clap one canonical `--name=value` per occurrence; clap does the rest (typed values,
//! defaults, `--help`).
//!
//! It takes its flag table from the clap command itself ([`FlagTable::of`]): names, which flags
//! are boolean (their value parser yields `bool`), which are repeatable, and their environment
//! variables. A flag is thus declared once, in the derive struct.
use std::any::TypeId;

use clap::ArgAction;

use super::CliError;
use super::options::go_bool;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Go bool: `-flag` means `true`; a value only as `-flag=value`.
    Bool,
    /// Takes a value; a later occurrence replaces an earlier one.
    Value,
    /// Takes a value; every occurrence is kept, in order.
    Repeat,
}

/// One flag of a clap command, as the shim needs it.
#[derive(Debug, Clone)]
pub(crate) struct Flag {
    pub name: String,
    pub kind: Kind,
    /// `FLANNELD_<NAME>`, when the environment may set it.
    pub env: Option<String>,
}

/// The long flags of one clap command (clap's own `--help` excluded).
#[derive(Debug, Clone)]
pub(crate) struct FlagTable(pub Vec<Flag>);

impl FlagTable {
    pub(crate) fn of(cmd: &clap::Command) -> FlagTable {
        let flags = cmd
            .get_arguments()
            .filter(|a| !matches!(a.get_action(), ArgAction::Help | ArgAction::HelpLong))
            .filter_map(|a| {
                let name = a.get_long()?.to_string();
                let kind = if a.get_value_parser().type_id() == TypeId::of::<bool>() {
                    Kind::Bool
                } else if matches!(a.get_action(), ArgAction::Append) {
                    Kind::Repeat
                } else {
                    Kind::Value
                };
                let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
                Some(Flag { name, kind, env })
            })
            .collect();
        FlagTable(flags)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Flag> {
        self.0.iter().find(|f| f.name == name)
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    CommandLine,
    /// The environment variable's name.
    Env(String),
}

/// One value of one flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Occurrence {
    pub name: String,
    pub value: String,
    pub source: Source,
}

impl Occurrence {
    /// The canonical spelling handed to clap. `=` keeps a value that starts with `-` a value.
    pub(crate) fn to_arg(&self) -> String {
        format!("--{}={}", self.name, self.value)
    }
}

/// What the command line says, read Go's way.
#[derive(Debug)]
pub(crate) enum Tokens {
    /// `-h`, `-help`, `--help` (with any value): Go's flag package stops there.
    Help,
    Flags(Vec<Occurrence>),
}

/// Reads `args` as Go's `flag.Parse` does: `-flag`, `--flag`, `-flag=value`, `-flag value`
/// (the next argument, whatever it looks like, unless the flag is boolean); `--` ends the
/// flags and nothing may follow (weft takes no positional arguments).
pub(crate) fn tokenize(args: &[String], table: &FlagTable) -> Result<Tokens, CliError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg.len() < 2 || !arg.starts_with('-') {
            return Err(CliError::UnexpectedArgument(arg.clone()));
        }
        let name_part = match arg.strip_prefix("--") {
            Some("") => {
                if let Some(extra) = args.get(i) {
                    return Err(CliError::UnexpectedArgument(extra.clone()));
                }
                break;
            }
            Some(rest) => rest,
            None => &arg[1..],
        };
        if name_part.starts_with('-') || name_part.starts_with('=') {
            return Err(CliError::BadSyntax(arg.clone()));
        }
        let (name, inline) = match name_part.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (name_part, None),
        };
        let Some(flag) = table.get(name) else {
            if name == "h" || name == "help" {
                return Ok(Tokens::Help);
            }
            return Err(CliError::Undefined(name.to_string()));
        };
        let value = match (flag.kind, inline) {
            (_, Some(v)) => v.to_string(),
            (Kind::Bool, None) => "true".to_string(),
            (_, None) => match args.get(i) {
                Some(next) => {
                    i += 1;
                    next.clone()
                }
                None => return Err(CliError::MissingValue(name.to_string())),
            },
        };
        out.push(Occurrence {
            name: flag.name.clone(),
            value,
            source: Source::CommandLine,
        });
    }
    Ok(Tokens::Flags(out))
}

/// flannel's `SetFlagsFromEnv`: each flag that has an environment variable and was not on the
/// command line takes the variable's value when it is set and not empty (one value, also for
/// the repeatable flags: a comma in it is not a separator).
pub(crate) fn from_env(
    table: &FlagTable,
    given: &[Occurrence],
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<Occurrence> {
    table
        .0
        .iter()
        .filter(|f| !given.iter().any(|o| o.name == f.name))
        .filter_map(|f| {
            let var = f.env.as_ref()?;
            let value = env(var).filter(|v| !v.is_empty())?;
            Some(Occurrence {
                name: f.name.clone(),
                value,
                source: Source::Env(var.clone()),
            })
        })
        .collect()
}

/// The last value of boolean flag `name` on the command line (Go: the last one wins), checked
/// with Go's `ParseBool`; `Ok(false)` when absent.
pub(crate) fn last_bool(occurrences: &[Occurrence], name: &str) -> Result<bool, CliError> {
    let mut value = false;
    for o in occurrences.iter().filter(|o| o.name == name) {
        value = go_bool(&o.value).ok_or_else(|| CliError::InvalidBool {
            flag: name.to_string(),
            value: o.value.clone(),
        })?;
    }
    Ok(value)
}

/// The flag name in clap's rendering of an argument (`--healthz-port <PORT>` → `healthz-port`).
fn flag_name_of(rendered: &str) -> Option<&str> {
    let rest = rendered.strip_prefix("--")?;
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Turns clap's error for the canonical arguments built from `occurrences` into weft's one-line
/// error naming the flag (or the environment variable) and the value.
pub(crate) fn map_error(
    err: &clap::Error,
    table: &FlagTable,
    occurrences: &[Occurrence],
) -> CliError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let context = |kind| match err.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    if err.kind() == ErrorKind::ValueValidation {
        let name = context(ContextKind::InvalidArg);
        let value = context(ContextKind::InvalidValue).unwrap_or_default();
        let reason = std::error::Error::source(err)
            .map(|s| s.to_string())
            .unwrap_or_else(|| "invalid".to_string());
        if let Some(flag) = name
            .as_deref()
            .and_then(flag_name_of)
            .and_then(|n| table.get(n))
        {
            let from_env = occurrences.iter().find_map(|o| match &o.source {
                Source::Env(var) if o.name == flag.name => Some(var.clone()),
                _ => None,
            });
            return match (from_env, flag.kind) {
                (Some(var), _) => CliError::InvalidEnv {
                    var,
                    flag: flag.name.clone(),
                    value,
                    reason,
                },
                (None, Kind::Bool) => CliError::InvalidBool {
                    flag: flag.name.clone(),
                    value,
                },
                (None, _) => CliError::InvalidValue {
                    flag: flag.name.clone(),
                    value,
                    reason,
                },
            };
        }
    }
    CliError::Other(first_line(err))
}

/// clap's message without its `error: ` prefix and the usage lines after it.
pub(crate) fn first_line(err: &clap::Error) -> String {
    let text = err.to_string();
    let line = text.lines().next().unwrap_or("invalid arguments");
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}
