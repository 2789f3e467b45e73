//! The command line: `presenced -c FILE...` runs the server, `presenced check-config -c
//! FILE...` validates a configuration and exits, `presenced register` creates a user on a
//! running server through the shared-secret registration API, `presenced routers check -c
//! FILE...` checks the configured presence routers' two methods against each other.
//!
//! Only runtime knobs live here (logging, shutdown grace, printing bound addresses);
//! everything about what the server does is in the configuration file.
//! Exit codes: 0 success, 1 invalid configuration, startup failure or refused registration,
//! 2 bad command line.

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum, error::ErrorKind};
use tracing_subscriber::EnvFilter;

mod register;
mod routers_check;

use crate::{
    cli::{register::RegisterArgs, routers_check::RoutersCheckArgs},
    config::{Config, ConfigError, LoadedConfig, parse_duration},
    server::{Server, ShutdownSignals},
};

/// The log filter when neither `--log-level` nor `RUST_LOG` is given.
const DEFAULT_LOG_FILTER: &str = "info";
/// The log filter of `check-config` when neither `--log-level` nor `RUST_LOG` is given.
const CHECK_CONFIG_LOG_FILTER: &str = "warn";
/// How long open requests may run after a shutdown signal, unless `--shutdown-timeout` says.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// The exit code for an invalid configuration or a failed start.
const EXIT_FAILURE: u8 = 1;
/// The exit code for a bad command line (clap's own).
const EXIT_USAGE: u8 = 2;

/// Presenced, a Matrix presence server.
#[derive(Debug, Parser)]
#[command(name = "presenced", version)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Options every command accepts.
#[derive(Debug, Args)]
struct GlobalArgs {
    /// Configuration file, or directory of .yaml files. Repeatable: later files replace the
    /// top-level keys of earlier ones.
    #[arg(short = 'c', long = "config-path", value_name = "FILE", global = true)]
    config_paths: Vec<PathBuf>,
    /// Log filter, e.g. `info` or `presenced=debug,tower_http=debug`. Overrides RUST_LOG.
    #[arg(long, value_name = "FILTER", global = true, value_parser = parse_filter)]
    log_level: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

/// Options of the server itself.
#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// Print `listening on ADDRESS` on stdout for each bound socket once all are bound
    /// (for scripts and tests that use port 0).
    #[arg(long)]
    print_listen_addrs: bool,
    /// How long open requests may run after SIGTERM/SIGINT before they are dropped
    /// [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    shutdown_timeout: Option<Duration>,
    /// Beside Synapse: start even when Synapse's database schema is outside the range
    /// Presenced is tested with.
    #[arg(long)]
    allow_untested_synapse: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Run(RunArgs),
    /// Validate the configuration, print problems and warnings, and exit.
    CheckConfig,
    /// Create a user on a running server with the shared secret, like the reference
    /// homeserver's `register_new_matrix_user`.
    Register(RegisterArgs),
    /// Tools for the configured presence routers.
    #[command(subcommand)]
    Routers(RoutersCommand),
}

#[derive(Debug, Subcommand)]
enum RoutersCommand {
    /// Load the configured routers as the server does and check, on generated (and
    /// optionally recorded) presence states, that each router's get_interested_users names
    /// exactly the users whose states its get_users_for_states sends to each user. Prints
    /// every disagreement as a minimal example; exits 1 if there is one.
    Check(RoutersCheckArgs),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn parse_filter(text: &str) -> Result<String, String> {
    EnvFilter::try_new(text)
        .map(|_| text.to_owned())
        .map_err(|e| e.to_string())
}

/// Parses the command line and runs it: the whole of the binary's `main`.
pub fn main() -> ExitCode {
    Cli::parse().run()
}

impl Cli {
    /// Rejects server options given together with a subcommand (they would be ignored).
    /// Clap's own `args_conflicts_with_subcommands` cannot be used: it would also reject
    /// the global `-c` before the subcommand.
    fn check_combinations(&self) -> Result<(), clap::Error> {
        let top_level_run_args = self.run.print_listen_addrs
            || self.run.shutdown_timeout.is_some()
            || self.run.allow_untested_synapse;
        if self.command.is_some() && top_level_run_args {
            return Err(Cli::command().error(
                ErrorKind::ArgumentConflict,
                "server options (--print-listen-addrs, --shutdown-timeout, \
                 --allow-untested-synapse) go after `run`, \
                 or without a subcommand",
            ));
        }
        Ok(())
    }

    /// Runs the parsed command.
    pub fn run(self) -> ExitCode {
        if let Err(e) = self.check_combinations() {
            // Printing can only fail if stderr is gone; the exit code still says it all.
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE);
        }
        match self.command {
            Some(Command::CheckConfig) => check_config(&self.global),
            Some(Command::Register(args)) => {
                match register::register(args, &self.global.config_paths) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("presenced: {e}");
                        ExitCode::from(EXIT_FAILURE)
                    }
                }
            }
            Some(Command::Routers(RoutersCommand::Check(args))) => {
                routers_check(&self.global, &args)
            }
            Some(Command::Run(run)) => run_server(&self.global, &run),
            None => run_server(&self.global, &self.run),
        }
    }
}

/// `check-config`: problems on stderr and exit 1, or warnings on stderr and exit 0. The
/// presence routers are built as startup builds them (Python modules imported), so a router
/// the server would refuse fails here with the same message.
fn check_config(global: &GlobalArgs) -> ExitCode {
    let loaded = match Config::load(&global.config_paths) {
        Ok(loaded) => loaded,
        Err(e) => return config_failure(&e),
    };
    print_warnings(&loaded);
    // Warnings only by default: what loading the routers logs at info is startup chatter.
    init_logging(
        global.log_level.as_deref(),
        global.log_format,
        CHECK_CONFIG_LOG_FILTER,
    );
    if let Err(e) = crate::routers::check(&loaded.config) {
        eprintln!("presenced: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    println!("The configuration is valid.");
    ExitCode::SUCCESS
}

/// `routers check`: the configuration is loaded and its routers built as `check-config` does.
fn routers_check(global: &GlobalArgs, args: &RoutersCheckArgs) -> ExitCode {
    let loaded = match Config::load(&global.config_paths) {
        Ok(loaded) => loaded,
        Err(e) => return config_failure(&e),
    };
    init_logging(
        global.log_level.as_deref(),
        global.log_format,
        CHECK_CONFIG_LOG_FILTER,
    );
    routers_check::run(&loaded.config, args)
}

fn print_warnings(loaded: &LoadedConfig) {
    let mut stderr = std::io::stderr().lock();
    if !loaded.unknown_keys.is_empty() {
        // Best effort: nothing sensible to do if stderr is gone.
        let _ = writeln!(
            stderr,
            "warning: keys Presenced does not use (ignored): {}",
            loaded.unknown_keys.join(", ")
        );
    }
    for warning in &loaded.warnings {
        let _ = writeln!(stderr, "warning: {warning}");
    }
}

fn config_failure(error: &ConfigError) -> ExitCode {
    eprintln!("presenced: {error}");
    ExitCode::from(EXIT_FAILURE)
}

/// Runs the server until SIGTERM or SIGINT.
fn run_server(global: &GlobalArgs, run: &RunArgs) -> ExitCode {
    init_logging(
        global.log_level.as_deref(),
        global.log_format,
        DEFAULT_LOG_FILTER,
    );
    let loaded = match Config::load(&global.config_paths) {
        Ok(loaded) => loaded,
        Err(e) => return config_failure(&e),
    };
    loaded.log_warnings();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("presenced: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(serve_until_signal(loaded.config, run.clone()));
    match result {
        Ok(()) => {
            tracing::info!("Stopped.");
            ExitCode::SUCCESS
        }
        Err(message) => {
            tracing::error!(error = %message, "Presenced stopped with an error.");
            eprintln!("presenced: {message}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

async fn serve_until_signal(mut config: Config, run: RunArgs) -> Result<(), String> {
    if let Some(writer) = config.writer.as_mut() {
        writer.allow_untested_synapse = run.allow_untested_synapse;
    }
    let open_files = crate::server::raise_open_file_limit();
    tracing::debug!(?open_files, "Open-file limit.");
    let mut signals =
        ShutdownSignals::install().map_err(|e| format!("cannot catch shutdown signals: {e}"))?;
    let server = Server::start(config)
        .await
        .map_err(|e| crate::error::chain(&e))?;
    if run.print_listen_addrs {
        let mut stdout = std::io::stdout().lock();
        for addr in server.local_addrs() {
            writeln!(stdout, "listening on {addr}").map_err(|e| e.to_string())?;
        }
        stdout.flush().map_err(|e| e.to_string())?;
    }
    tracing::info!(server_name = %server.state().config().server_name, "Presenced is running.");

    let signal = signals.recv().await;
    tracing::info!(signal, "Shutting down: finishing open requests.");
    let shutdown = server.shutdown_handle();
    let second = tokio::spawn(async move {
        let second = signals.recv().await;
        // A second signal means "now": the open requests are dropped, the cleanup still runs.
        tracing::warn!(
            signal = second,
            "Second signal: dropping the open requests."
        );
        shutdown.hurry();
    });
    let result = server
        .stop(run.shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT))
        .await;
    second.abort();
    result.map_err(|e| e.to_string())
}

/// Installs the log subscriber: `--log-level`, else `RUST_LOG`, else `default`; to stderr.
fn init_logging(filter: Option<&str>, format: LogFormat, default: &str) {
    let filter = match filter {
        Some(text) => EnvFilter::try_new(text).unwrap_or_else(|_| EnvFilter::new(default)),
        None => match std::env::var(EnvFilter::DEFAULT_ENV) {
            Ok(text) => EnvFilter::try_new(&text).unwrap_or_else(|e| {
                eprintln!("presenced: ignoring invalid RUST_LOG ({e}); logging at {default}");
                EnvFilter::new(default)
            }),
            Err(_) => EnvFilter::new(default),
        },
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // `try_init` fails only if a subscriber is already installed (e.g. by an embedding
    // program); keeping that one is the right thing to do.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_paths_are_accepted_before_and_after_the_subcommand() {
        let cli =
            Cli::try_parse_from(["presenced", "-c", "a.yaml", "--config-path", "b.yaml"]).unwrap();
        assert_eq!(
            cli.global.config_paths,
            [PathBuf::from("a.yaml"), PathBuf::from("b.yaml")]
        );
        assert!(cli.command.is_none());
        assert_eq!(cli.run.shutdown_timeout, None);

        let cli =
            Cli::try_parse_from(["presenced", "check-config", "-c", "a.yaml", "-c", "b.yaml"])
                .unwrap();
        assert!(matches!(cli.command, Some(Command::CheckConfig)));
        assert_eq!(cli.global.config_paths.len(), 2);

        let cli = Cli::try_parse_from(["presenced", "-c", "a.yaml", "check-config"]).unwrap();
        assert!(matches!(cli.command, Some(Command::CheckConfig)));
        assert_eq!(cli.global.config_paths, [PathBuf::from("a.yaml")]);
    }

    #[test]
    fn register_options() {
        let cli = Cli::try_parse_from([
            "presenced",
            "-c",
            "a.yaml",
            "register",
            "-u",
            "alice",
            "-p",
            "pw",
            "-a",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Register(_))));
        assert_eq!(cli.global.config_paths, [PathBuf::from("a.yaml")]);
        let cli = Cli::try_parse_from([
            "presenced",
            "register",
            "--user",
            "bob",
            "--password-file",
            "-",
            "--no-admin",
            "-k",
            "secret",
            "https://matrix.example.org",
        ]);
        assert!(cli.is_ok());
        // -p and --password-file, --admin and --no-admin exclude each other; -u is required.
        for args in [
            &["register", "-u", "a", "-p", "pw", "--password-file", "f"][..],
            &["register", "-u", "a", "-p", "pw", "-a", "--no-admin"],
            &["register", "-p", "pw"],
        ] {
            let error =
                Cli::try_parse_from(std::iter::once("presenced").chain(args.iter().copied()))
                    .unwrap_err();
            assert_ne!(error.kind(), ErrorKind::DisplayHelp, "{args:?}");
        }
    }

    #[test]
    fn routers_check_options() {
        let cli = Cli::try_parse_from([
            "presenced",
            "-c",
            "a.yaml",
            "routers",
            "check",
            "--cases",
            "20",
            "--seed",
            "9",
            "--states",
            "s.jsonl",
            "--user",
            "@a:hs",
        ])
        .unwrap();
        let Some(Command::Routers(RoutersCommand::Check(_))) = cli.command else {
            panic!("not routers check: {:?}", cli.command);
        };
        assert_eq!(cli.global.config_paths, [PathBuf::from("a.yaml")]);
        for args in [
            &["routers", "check", "--user", "alice"][..],
            &["routers", "check", "--max-batch", "0"],
            &["routers", "check", "--cases", "many"],
        ] {
            assert!(
                Cli::try_parse_from(std::iter::once("presenced").chain(args.iter().copied()))
                    .is_err(),
                "{args:?}"
            );
        }
    }

    #[test]
    fn run_options() {
        let cli = Cli::try_parse_from([
            "presenced",
            "-c",
            "a.yaml",
            "--print-listen-addrs",
            "--shutdown-timeout",
            "500ms",
            "--log-level",
            "presenced=debug",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert!(cli.run.print_listen_addrs);
        assert_eq!(cli.run.shutdown_timeout, Some(Duration::from_millis(500)));
        assert_eq!(cli.global.log_level.as_deref(), Some("presenced=debug"));
        assert_eq!(cli.global.log_format, LogFormat::Json);
        assert!(Cli::try_parse_from(["presenced", "--shutdown-timeout", "soon"]).is_err());
        assert!(Cli::try_parse_from(["presenced", "--log-level", "presenced=loud"]).is_err());
        // Server options do not go with check-config.
        let cli =
            Cli::try_parse_from(["presenced", "--print-listen-addrs", "check-config"]).unwrap();
        assert_eq!(
            cli.check_combinations().unwrap_err().kind(),
            ErrorKind::ArgumentConflict
        );
        let cli = Cli::try_parse_from(["presenced", "-c", "a.yaml", "run", "--print-listen-addrs"])
            .unwrap();
        assert!(cli.check_combinations().is_ok());
        assert!(matches!(
            cli.command,
            Some(Command::Run(RunArgs {
                print_listen_addrs: true,
                ..
            }))
        ));
    }
}
