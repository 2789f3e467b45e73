//! `presenced routers check`: loads the configured presence routers as the server does and
//! checks that each one's `get_interested_users` and `get_users_for_states` agree (the rule
//! is spelled out in `presence_routers::consistency`), on seeded generated batches and,
//! optionally, on recorded states. Disagreements are printed as minimal examples on stdout;
//! the exit code is 1 when there is one (or a router call fails), 0 otherwise.

use std::{io::Write, path::PathBuf, process::ExitCode};

use clap::Args;
use presence_router::{ServerName, UserId};
use presence_routers::consistency::{self, Merged, Report};

use crate::config::Config;

/// The default number of generated batches.
const DEFAULT_CASES: usize = 500;
/// The default seed: runs are reproducible without one.
const DEFAULT_SEED: u64 = 1;
/// The default largest batch.
const DEFAULT_MAX_BATCH: u64 = 8;
/// Generated local users in the pool, besides the ones the configuration names.
const GENERATED_LOCALS: usize = 6;
/// Generated users on each remote server in the pool.
const GENERATED_REMOTES: usize = 2;

/// Options of `presenced routers check`.
#[derive(Debug, Clone, Args)]
pub(super) struct RoutersCheckArgs {
    /// How many generated batches of states to try.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CASES)]
    cases: usize,
    /// Seed of the generated batches: the same seed and configuration try the same cases.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// The largest number of states in one generated (or recorded) batch.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_BATCH,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_batch: u64,
    /// Also try recorded states: a JSON array or JSON lines of presence states
    /// (`{"user_id", "presence", "status_msg", "currently_active", "last_active_ts"}`) or of
    /// `m.presence` events (`{"sender", "content": {...}}`). Their users join the pool.
    #[arg(long, value_name = "FILE")]
    states: Option<PathBuf>,
    /// Extra users to probe (repeatable), besides the generated ones and those the
    /// configuration names.
    #[arg(long = "user", value_name = "USER_ID", value_parser = parse_user)]
    users: Vec<UserId>,
    /// How many disagreements to print in full; the rest are counted.
    #[arg(long, value_name = "N", default_value_t = consistency::DEFAULT_MAX_REPORTS)]
    max_reports: usize,
}

fn parse_user(text: &str) -> Result<UserId, String> {
    UserId::parse(text).map_err(|e| e.to_string())
}

/// Runs the check. Configuration or loading problems are reported like `check-config`'s.
pub(super) fn run(config: &Config, args: &RoutersCheckArgs) -> ExitCode {
    // At most 4096 (the parser's range), so the conversion cannot fail.
    let max_batch = usize::try_from(args.max_batch).unwrap_or(4096);
    let recorded = match &args.states {
        None => Vec::new(),
        Some(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) => return failure(&format!("cannot read {}: {e}", path.display())),
            };
            match consistency::parse_recorded_states(&text, max_batch) {
                Ok(batches) => batches,
                Err(e) => return failure(&format!("{}: {e}", path.display())),
            }
        }
    };
    let routers = match crate::routers::build_for_tool(config) {
        Ok(routers) => routers,
        Err(e) => return failure(&crate::error::chain(&e)),
    };
    let code = check_all(config, args, &routers, &recorded, max_batch);
    routers.python.shutdown_blocking();
    code
}

fn check_all(
    config: &Config,
    args: &RoutersCheckArgs,
    routers: &crate::routers::Routers,
    recorded: &[Vec<presence_router::UserPresenceState>],
    max_batch: usize,
) -> ExitCode {
    if routers.set.is_empty() {
        println!("No presence router is configured: nothing to check.");
        return ExitCode::SUCCESS;
    }
    let mut named_users: Vec<UserId> = args.users.clone();
    let mut named_servers: Vec<ServerName> = Vec::new();
    for (_, module) in config.module_entries() {
        let (users, servers) = consistency::names_in_config(&module.config);
        named_users.extend(users);
        named_servers.extend(servers);
    }
    for state in recorded.iter().flatten() {
        named_servers.push(state.user_id.server_name());
        named_users.push(state.user_id.clone());
    }
    let pool = consistency::user_pool(
        &config.server_name,
        named_users,
        named_servers,
        GENERATED_LOCALS,
        GENERATED_REMOTES,
    );
    let mut batches = consistency::generated_batches(&pool, args.seed, args.cases, max_batch);
    batches.extend(recorded.iter().cloned());

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return failure(&format!("cannot start the async runtime: {e}")),
    };
    let reports: Vec<(String, Report)> = runtime.block_on(async {
        let mut reports: Vec<(String, Report)> = Vec::new();
        for ((_, router), label) in routers.set.routers().zip(&routers.labels) {
            let report =
                consistency::check(label.as_str(), router, &pool, &batches, args.max_reports).await;
            reports.push((label.clone(), report));
        }
        if routers.labels.len() > 1 {
            let label = "all routers, merged".to_owned();
            let merged = Merged(&routers.set);
            let report =
                consistency::check(&label, &merged, &pool, &batches, args.max_reports).await;
            reports.push((label, report));
        }
        reports
    });

    let mut stdout = std::io::stdout().lock();
    let mut clean = true;
    // Printing fails only if stdout is gone; the exit code still tells the outcome.
    for (label, report) in &reports {
        for failure in &report.failures {
            let _ = writeln!(stdout, "{failure}");
        }
        for d in &report.disagreements {
            let _ = writeln!(stdout, "{d}");
        }
        let hidden = report.disagreements_found - report.disagreements.len();
        if hidden > 0 {
            let _ = writeln!(stdout, "({hidden} more disagreements in {label} not shown)");
        }
        let verdict = if report.is_clean() {
            "consistent".to_owned()
        } else {
            clean = false;
            format!(
                "{}, {}",
                count(report.disagreements_found, "disagreement"),
                count(report.failures.len(), "failed call")
            )
        };
        let _ = writeln!(
            stdout,
            "{label}: {verdict} ({} batches, {} user/state pairs)",
            report.batches, report.pairs
        );
    }
    let _ = writeln!(
        stdout,
        "Checked {} with {} users on {} generated and {} recorded batches (seed {}).",
        count(routers.labels.len(), "router"),
        pool.len(),
        args.cases,
        recorded.len(),
        args.seed
    );
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAILURE)
    }
}

/// `1 router`, `2 routers`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn failure(message: &str) -> ExitCode {
    eprintln!("presenced: {message}");
    ExitCode::from(super::EXIT_FAILURE)
}
