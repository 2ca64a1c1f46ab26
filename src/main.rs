//! `weft`: the agent (flanneld-style flags) and its one-shot commands (`status`, `cleanup`,
//! `docker-opts`, `install-cni`); the command line is parsed by `weft::cli`.
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use weft::cli::{self, Command};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = match cli::parse(&args, &|name| std::env::var(name).ok()) {
        Ok(cmd) => cmd,
        Err(e) => {
            // One line, as Go's flag package prints it; exit 2 for a usage error, 1 for a bad
            // configuration value.
            match args
                .first()
                .filter(|a| cli::SUBCOMMANDS.contains(&a.as_str()))
            {
                Some(sub) => eprintln!("weft {sub}: {e} (see weft {sub} --help)"),
                None => eprintln!("weft: {e} (see weft --help)"),
            }
            return ExitCode::from(e.exit_code());
        }
    };
    match cmd {
        Command::Version => {
            println!("weft {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Help(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Command::DockerOpts(args) => ExitCode::from(weft::commands::docker_opts::run_command(args)),
        Command::InstallCni(args) => ExitCode::from(weft::commands::install_cni::run_command(args)),
        Command::Status(args) => {
            // The report is the output; logs only for errors unless RUST_LOG says more.
            init_logging_default("error", args.opts.log_color);
            ExitCode::from(weft::commands::status::run_command(args))
        }
        Command::Cleanup(args) => {
            // Each removal is logged at info, like the `ip` command.
            init_logging_default("info", args.opts.log_color);
            ExitCode::from(weft::commands::cleanup::run_command(args))
        }
        Command::Run(opts) => run_agent(opts),
    }
}

fn run_agent(opts: cli::Options) -> ExitCode {
    init_logging(opts.log_level(), opts.log_color);
    info!("weft {} starting", env!("CARGO_PKG_VERSION"));
    info!("CLI flags config: {opts:?}");
    // One thread: the agent is I/O bound, and a current-thread runtime keeps memory and wakeups
    // down (targets P1, P2).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        match weft::agent::run(opts, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!("{e:#}");
                ExitCode::from(1)
            }
        }
    })
}

/// The first SIGTERM or SIGINT cancels the agent; lease and kernel state stay in place.
async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("received SIGTERM, shutting down (lease and routes stay in place)"),
        _ = int.recv() => info!("received SIGINT, shutting down (lease and routes stay in place)"),
    }
    shutdown.cancel();
}

fn init_logging(level: tracing::Level, color: cli::LogColor) {
    // RUST_LOG wins; else flannel's -v picks the level.
    init_logging_default(&level.as_str().to_ascii_lowercase(), color);
}

/// Logs to stderr with `RUST_LOG`, or `default` (an `EnvFilter` directive) when it is unset.
/// ANSI colours only as `--log-color` says: by default only on a terminal and without
/// `NO_COLOR`, so log files, journald and `kubectl logs` get plain text.
fn init_logging_default(default: &str, color: cli::LogColor) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let no_color = std::env::var("NO_COLOR").ok();
    let ansi = color.enabled(std::io::stderr().is_terminal(), no_color.as_deref());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}
