//! weft's command line: the flanneld-compatible agent flags and the subcommands.
//!
//! The flags are declared once, as clap derive structs: [`Options`] (the agent's, in
//! `options.rs`), [`StatusArgs`], [`CleanupArgs`], [`DockerOptsArgs`] (in `commands.rs`) and the
//! top level [`Cli`]. clap types the values, applies the defaults and writes `--help`.
//!
//! The agent's flags (also those of `status` and `cleanup`) are parsed the way Go's `flag`
//! package parses them, because that is what flanneld users type: `-flag`, `--flag`,
//! `-flag=value`, `--flag=value` and `-flag value`; a boolean flag never consumes the next
//! argument (`--ip-masq false` is an error: `false` is a stray argument) and takes a value only
//! as `-flag=false` (any spelling of Go's `strconv.ParseBool`); `--` ends the flags; numbers
//! accept Go's base prefixes (`0x1f`, `0o17`, `017`, `0b11`). After the command line,
//! `FLANNELD_<NAME>` environment variables (upper case, `-` → `_`) set the flags that were *not*
//! given on the command line, as flannel's `SetFlagsFromEnv` does; empty variables are ignored.
//! `--version` is decided before the environment is read, so `FLANNELD_VERSION` has no effect.
//! A bad flag or value is one line naming the flag (or the variable) and the value; the binary
//! prints it and exits 2, as Go's flag package does.
//!
//! **Why a hand-written shim** (`go_flags.rs`): clap does not accept Go's spellings natively.
//! To clap a single dash starts a cluster of *short* flags (`-ip-masq` would be `-i -p ...`), a
//! boolean flag takes no `=false`, a valued flag does not take a next argument that starts with
//! `-`, and its `env` support reads the process environment itself, so it can neither be given
//! a fake environment in tests nor tell in an error whether a bad value came from the command
//! line or from `FLANNELD_*`. The shim reads the Go spellings and the environment and hands
//! clap one canonical `--name=value` per value; its flag table comes from the clap command, so
//! nothing is declared twice. clap's own `env = "FLANNELD_*"` attributes are kept for `--help`,
//! and switched off for the actual parse.
//!
//! A first argument that is not a flag and names a subcommand (`status`, `cleanup`,
//! `docker-opts`) selects that subcommand. `docker-opts` takes `mk-docker-opts.sh`'s
//! getopts-style letters (`-f FILE`, `-fFILE`, `-ic`), parsed by clap alone.
mod commands;
mod go_flags;
mod options;
#[cfg(test)]
mod tests;

use clap::{ArgAction, CommandFactory as _, FromArgMatches as _};

pub use commands::{CleanupArgs, DockerOptsArgs, InstallCniArgs, StatusArgs};
pub use options::{DEFAULT_NET_CONFIG_PATH, DEFAULT_PEER_CACHE_FILE, LogColor, Options, Secret};

use crate::commands::docker_opts;
use go_flags::{FlagTable, Occurrence, Tokens};

/// The subcommands weft understands in first position.
pub const SUBCOMMANDS: &[&str] = &["status", "cleanup", "docker-opts", "install-cni"];

/// Prefix of the environment variables that set flags.
pub const ENV_PREFIX: &str = "FLANNELD";

/// The whole command line, as clap sees it (after the shim).
#[derive(Debug, clap::Parser)]
#[command(
    name = "weft",
    about = "A flanneld-compatible overlay network agent",
    disable_version_flag = true,
    disable_help_subcommand = true,
    args_override_self = true,
    subcommand_help_heading = "Subcommands (first argument only)",
    after_help = "Flags are also accepted as Go's flag package writes them: -flag, -flag=value, \
                  -flag value, and booleans as -flag or -flag=false (never -flag false).\n\
                  Every agent flag can be set by the environment variable shown; the command line \
                  wins. A bad flag or value exits 2."
)]
pub struct Cli {
    /// Print the version and exit (never set by the environment)
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, default_value = "false",
          value_parser = options::parse_bool)]
    pub version: bool,

    #[command(flatten)]
    pub opts: Options,

    #[command(subcommand)]
    pub command: Option<Sub>,
}

/// The subcommands, for clap's parse and `--help`.
#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    #[command(args_override_self = true)]
    Status(StatusArgs),
    #[command(args_override_self = true)]
    Cleanup(CleanupArgs),
    #[command(args_override_self = true)]
    DockerOpts(DockerOptsArgs),
    #[command(args_override_self = true)]
    InstallCni(InstallCniArgs),
}

/// What the command line asks for.
#[derive(Debug)]
// Built once at startup; boxing `Options` would only make callers' matches noisier.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the agent with these options.
    Run(Options),
    /// `--version`: print the version and exit 0.
    Version,
    /// `-h` / `--help` / `-help` (of weft or of a subcommand): print this text and exit 0.
    Help(String),
    /// `weft status`.
    Status(StatusArgs),
    /// `weft cleanup`.
    Cleanup(CleanupArgs),
    /// `weft docker-opts`.
    DockerOpts(docker_opts::Args),
    /// `weft install-cni`.
    InstallCni(InstallCniArgs),
}

/// A command-line or environment error. Its `Display` is one line naming the flag and the
/// value; the binary prints it and exits 2, as Go's flag package does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    #[error("flag provided but not defined: -{0}")]
    Undefined(String),
    #[error("bad flag syntax: {0}")]
    BadSyntax(String),
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    #[error("invalid boolean value {value:?} for -{flag}: parse error")]
    InvalidBool { flag: String, value: String },
    #[error("invalid value {value:?} for flag -{flag}: {reason}")]
    InvalidValue {
        flag: String,
        value: String,
        reason: String,
    },
    #[error("invalid value {value:?} for {var} (flag -{flag}): {reason}")]
    InvalidEnv {
        var: String,
        flag: String,
        value: String,
        reason: String,
    },
    #[error(
        "unexpected argument {0:?}: weft takes only flags, or a subcommand (status, cleanup, docker-opts) as the first argument"
    )]
    UnexpectedArgument(String),
    /// getopts' wording, for `docker-opts`.
    #[error("illegal option {0}")]
    IllegalOption(String),
    /// getopts' wording, for `docker-opts`.
    #[error("option {0} requires an argument")]
    OptionNeedsArgument(String),
    /// Any other error clap reports (its first line).
    #[error("{0}")]
    Other(String),
}

/// Flags whose value is configuration rather than syntax: a bad one (an etcd endpoint that is
/// not an `http(s)://host:port` URL) is a config error, exit 1 like flanneld's config errors,
/// where a malformed command line exits 2 as Go's `flag` package does.
const CONFIG_FLAGS: &[&str] = &["etcd-endpoints"];

impl CliError {
    /// The process exit code for this error: 1 for a bad configuration value, 2 for a usage
    /// error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::InvalidValue { flag, .. } | CliError::InvalidEnv { flag, .. }
                if CONFIG_FLAGS.contains(&flag.as_str()) =>
            {
                1
            }
            _ => 2,
        }
    }
}

/// The clap command with every flag, as `--help` shows it (environment variable names shown,
/// their values never: one of them is the etcd password).
pub fn command() -> clap::Command {
    with_go_bools(Cli::command())
        .mut_args(|a| a.hide_env_values(true))
        .mut_subcommands(|s| s.mut_args(|a| a.hide_env_values(true)))
}

/// The clap command for parsing the shim's canonical arguments: clap's own environment reading
/// is off (the shim has applied the environment it was given).
fn parse_command() -> clap::Command {
    with_go_bools(Cli::command())
        .mut_args(|a| a.env(None))
        .mut_subcommands(|s| s.mut_args(|a| a.env(None)))
}

/// Gives every Go-style boolean flag (value parser [`options::parse_bool`]) clap's matching
/// shape: `--flag` alone means `true`, a value only after `=` (`--flag[=<BOOL>]` in `--help`).
/// The shim always passes `--flag=value`; this makes `--help` say how a boolean is written.
fn with_go_bools(cmd: clap::Command) -> clap::Command {
    fn shape(a: clap::Arg) -> clap::Arg {
        if a.get_value_parser().type_id() == std::any::TypeId::of::<bool>()
            && matches!(a.get_action(), ArgAction::Set)
        {
            a.num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
        } else {
            a
        }
    }
    cmd.mut_args(shape).mut_subcommands(|s| s.mut_args(shape))
}

/// `FLANNELD_<NAME>` for a flag name.
pub fn env_var_name(flag: &str) -> String {
    format!(
        "{ENV_PREFIX}_{}",
        flag.to_ascii_uppercase().replace('-', "_")
    )
}

/// The help text of weft (`sub` = `None`) or of a subcommand.
pub fn help(sub: Option<&str>) -> String {
    let mut argv = vec!["weft"];
    argv.extend(sub);
    argv.push("--help");
    match command().try_get_matches_from(argv) {
        Err(e) => e.to_string(),
        Ok(_) => String::new(),
    }
}

/// The usage text of weft itself (every agent flag with its environment variable and default).
pub fn usage() -> String {
    help(None)
}

/// Parse the command line (`args` excludes argv\[0\]) and the environment (`env` looks up a
/// variable; pass `&|k| std::env::var(k).ok()`).
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Command, CliError> {
    let (sub, rest) = match args.first() {
        Some(first) if !first.starts_with('-') && SUBCOMMANDS.contains(&first.as_str()) => {
            (Some(first.as_str()), &args[1..])
        }
        _ => (None, args),
    };
    if sub.is_none() && args.first().is_some_and(|a| a == "lab") {
        return Err(CliError::Other(
            "the lab is no longer part of weft: run weft-lab (crate weft-testkit)".to_string(),
        ));
    }
    match sub {
        Some("docker-opts") => parse_docker_opts(rest),
        Some("install-cni") => parse_install_cni(rest),
        _ => parse_go_style(sub, rest, env),
    }
}

/// The agent, `status` and `cleanup`: Go spellings through the shim, then clap.
fn parse_go_style(
    sub: Option<&str>,
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Command, CliError> {
    let full = command();
    let target = match sub {
        Some(s) => full
            .find_subcommand(s)
            .ok_or_else(|| CliError::Other(format!("no subcommand {s}")))?,
        None => &full,
    };
    let table = FlagTable::of(target);
    let mut occurrences = match go_flags::tokenize(args, &table)? {
        Tokens::Help => return Ok(Command::Help(help(sub))),
        Tokens::Flags(v) => v,
    };
    // flannel checks --version before reading the environment.
    if sub.is_none() && go_flags::last_bool(&occurrences, "version")? {
        return Ok(Command::Version);
    }
    occurrences.extend(go_flags::from_env(&table, &occurrences, env));

    let mut argv: Vec<String> = vec!["weft".to_string()];
    argv.extend(sub.map(str::to_string));
    argv.extend(occurrences.iter().map(Occurrence::to_arg));
    let cli = parse_command()
        .try_get_matches_from(argv)
        .and_then(|m| Cli::from_arg_matches(&m))
        .map_err(|e| go_flags::map_error(&e, &table, &occurrences))?;
    let mut cli = cli;
    let cache_given = occurrences.iter().any(|o| o.name == "peer-cache-file");
    if !cache_given {
        let opts = match &mut cli.command {
            Some(Sub::Cleanup(a)) => &mut a.opts,
            Some(Sub::Status(a)) => &mut a.opts,
            _ => &mut cli.opts,
        };
        opts.peer_cache_file = Some(options::default_peer_cache_file(&opts.etcd_prefix));
    }
    Ok(match cli.command {
        None => Command::Run(cli.opts),
        Some(Sub::Status(a)) => Command::Status(a),
        Some(Sub::Cleanup(a)) => Command::Cleanup(a),
        Some(other) => return Err(CliError::Other(format!("unexpected subcommand {other:?}"))),
    })
}

/// Subcommand `sub` with `args` through clap alone (no Go-flag shim, no environment): what clap
/// parsed, or its error for the caller to word.
fn parse_clap_only(sub: &str, args: &[String]) -> Result<Option<Sub>, clap::Error> {
    let argv = ["weft", sub]
        .into_iter()
        .map(str::to_string)
        .chain(args.iter().cloned());
    let m = parse_command().try_get_matches_from(argv)?;
    Ok(Cli::from_arg_matches(&m)?.command)
}

/// `weft install-cni`: clap alone (no agent flags, no environment).
fn parse_install_cni(args: &[String]) -> Result<Command, CliError> {
    let err = match parse_clap_only("install-cni", args) {
        Ok(Some(Sub::InstallCni(a))) => return Ok(Command::InstallCni(a)),
        Ok(other) => return Err(CliError::Other(format!("unexpected parse {other:?}"))),
        Err(e) => e,
    };
    if err.kind() == clap::error::ErrorKind::DisplayHelp {
        return Ok(Command::Help(err.to_string()));
    }
    let text = err.to_string();
    let line = text.lines().next().unwrap_or_default();
    Err(CliError::Other(
        line.strip_prefix("error: ").unwrap_or(line).to_string(),
    ))
}

/// `weft docker-opts`: getopts-style letters, clap alone; errors in getopts' words.
fn parse_docker_opts(args: &[String]) -> Result<Command, CliError> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let err = match parse_clap_only("docker-opts", args) {
        Ok(Some(Sub::DockerOpts(a))) => return Ok(Command::DockerOpts(a.into())),
        Ok(other) => return Err(CliError::Other(format!("unexpected parse {other:?}"))),
        Err(e) => e,
    };
    let context = |kind| match err.get(kind) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    // `-f <FLANNEL-ENV-FILE>` → `-f`.
    let arg = context(ContextKind::InvalidArg);
    let flag = arg.split([' ', '=']).next().unwrap_or_default().to_string();
    Err(match err.kind() {
        ErrorKind::DisplayHelp => return Ok(Command::Help(err.to_string())),
        ErrorKind::UnknownArgument if arg.starts_with('-') => CliError::IllegalOption(arg),
        ErrorKind::UnknownArgument => CliError::UnexpectedArgument(arg),
        ErrorKind::InvalidValue if context(ContextKind::InvalidValue).is_empty() => {
            CliError::OptionNeedsArgument(flag)
        }
        ErrorKind::ValueValidation => CliError::Other(format!(
            "invalid value {:?} for {flag}: {}",
            context(ContextKind::InvalidValue),
            std::error::Error::source(&err).map_or_else(String::new, |s| s.to_string())
        )),
        _ => CliError::Other(go_flags::first_line(&err)),
    })
}
